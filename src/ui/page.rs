//! The management page's HTML, rendered from a [`Status`]: one small document,
//! inline `<style>`, no script, no image, no external asset, readable from a
//! 360-px phone to a desktop window. Pure: [`page`] takes the time to measure
//! ages against, so it is tested on a hand-made `Status`. Everything that comes
//! from outside (node names, blob names, the store's name, errors) goes through
//! [`escape`].

use super::status::{Node, OwnView, Status};
use crate::runlog::Record;
use crate::snapshot::rfc3339;
use crate::units::{human_age, human_bytes};
use std::fmt::Write;

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:.5em;max-width:70em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.4em}\
.w{overflow-x:auto}table{border-collapse:collapse;width:100%}\
td,th{text-align:left;padding:.3em .5em;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f3f3f3}.n{text-align:right;white-space:nowrap}\
.bar{background:#e4e4e4;height:.5em;min-width:4em;border-radius:.25em}\
.bar div{background:#3a7;height:100%;border-radius:.25em}.full div{background:#c33}\
.stale,.bad{color:#b00;font-weight:bold}.m{color:#666}form{display:inline}";

/// A sentence of the time `t` and how long before `now` it was.
fn when(t: u64, now: u64) -> String {
    format!(
        "<time datetime=\"{0}\">{0}</time> ({1} ago)",
        rfc3339(t as i64),
        human_age(now.saturating_sub(t))
    )
}

fn node_row(out: &mut String, n: &Node, now: u64) {
    let name = escape(&n.name);
    let who = if n.admitted {
        ""
    } else {
        " <span class=m>(not admitted)</span>"
    };
    let _ = write!(
        out,
        "<tr><td>{name}{who}</td><td class=n>{}",
        human_bytes(n.used_bytes)
    );
    match n.quota_bytes {
        Some(q) => {
            let pct = n
                .used_bytes
                .saturating_mul(100)
                .checked_div(q)
                .map_or(100, |p| p.min(100));
            let full = if pct >= 90 { " full" } else { "" };
            let _ = write!(
                out,
                "</td><td class=n>{} ({pct}%)<div class=\"bar{full}\"><div style=\"width:{pct}%\"></div></div>",
                human_bytes(q)
            );
        }
        None => out.push_str("</td><td class=n>none"),
    }
    let _ = write!(out, "</td><td class=n>{}</td><td", n.snapshots);
    match n.last_commit_unix {
        Some(t) => {
            let class = if n.stale { " class=stale" } else { "" };
            let _ = write!(out, "{class}>{}", when(t, now));
            if let Some(b) = n.last_snapshot_bytes {
                let _ = write!(out, ", {}", human_bytes(b));
            }
        }
        None => out.push_str(">never"),
    }
    let abandoned = n.pending.iter().filter(|u| u.abandoned).count();
    let _ = write!(out, "</td><td class=n>{}", n.pending.len());
    if abandoned > 0 {
        let _ = write!(out, " <span class=bad>({abandoned} abandoned)</span>");
    }
    out.push_str("</td></tr>");
    if let Some(e) = &n.error {
        let _ = write!(
            out,
            "<tr><td></td><td colspan=5 class=bad>{}</td></tr>",
            escape(e)
        );
    }
}

fn own_view(out: &mut String, own: &OwnView, csrf: &str, now: u64, stale_after: u64) {
    let _ = write!(
        out,
        "<h2>This node: {}</h2><p>Backs up {}. ",
        escape(&own.node),
        escape(&own.paths.join(", "))
    );
    match own.snapshots.first() {
        Some(n) => {
            let _ = write!(
                out,
                "Newest snapshot: {} UTC ({}). ",
                escape(&table_time(&n.time)),
                escape(short(&n.id))
            );
        }
        None if own.listed_unix.is_some() => out.push_str("No snapshot yet. "),
        None => {}
    }
    match &own.next_sink {
        Some(n) => {
            let _ = write!(out, "Next sink: {}.", escape(n));
        }
        None => out.push_str(
            "No nightly sink is scheduled here (neither chute-sink.timer nor /etc/cron.d/chute).",
        ),
    }
    out.push_str("</p>");
    last_run(out, "sink", own.last_sink.as_ref(), now, Some(stale_after));
    last_run(out, "verify", own.last_verify.as_ref(), now, None);
    if let Some(e) = &own.list_error {
        let _ = write!(out, "<p class=bad>{}</p>", escape(e));
    }
    if own.listing && own.listed_unix.is_none() {
        out.push_str("<p class=m>Reading the snapshot list&hellip; (reload in a moment)</p>");
    }
    match &own.sink {
        Some(r) if r.running => {
            let _ = write!(
                out,
                "<p>A sink started from this page is running ({}): <a href=\"/sink\">its progress</a>.</p>",
                human_age(r.secs)
            );
        }
        Some(r) => {
            let class = if r.exit_code == Some(0) {
                ""
            } else {
                " class=bad"
            };
            let _ = write!(
                out,
                "<p{class}>The last sink from this page ended with status {} after {}{}: <a href=\"/sink\">its output</a>.</p>",
                r.exit_code.unwrap_or(-1),
                human_age(r.secs),
                r.summary
                    .as_deref()
                    .map_or(String::new(), |s| format!(" ({})", escape(s)))
            );
        }
        None => {}
    }
    let _ = write!(
        out,
        "<form method=post action=\"/sink\">{csrf}<button>Take new snapshot</button></form>"
    );
    if own.snapshots.is_empty() {
        return;
    }
    out.push_str("<div class=w><table><tr><th>snapshot</th><th>time (UTC)</th><th>paths</th><th>files</th><th>size</th></tr>");
    for s in &own.snapshots {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            escape(short(&s.id)),
            escape(&table_time(&s.time)),
            escape(&s.paths.join(", ")),
            s.files,
            human_bytes(s.bytes)
        );
    }
    out.push_str("</table></div>");
    let older = own
        .snapshots_total
        .saturating_sub(own.snapshots.len() as u64);
    if older > 0 {
        let _ = write!(
            out,
            "<p class=m>and {older} older (<code>chute list</code> shows them all)</p>"
        );
    }
}

/// A paragraph on how the last `what` on this machine ended; marked when it
/// did not end well, or ended longer than `stale_after` ago.
fn last_run(out: &mut String, what: &str, r: Option<&Record>, now: u64, stale_after: Option<u64>) {
    let Some(r) = r else {
        let _ = write!(
            out,
            "<p class=m>No {what} has recorded its end on this machine (<code>chute status</code>).</p>"
        );
        return;
    };
    let stale = stale_after.is_some_and(|s| now.saturating_sub(r.ended_unix) > s);
    let class = if r.ok() && !stale { "" } else { " class=bad" };
    let _ = write!(
        out,
        "<p{class}>Last {what} ({}): {}, ended {} after {}: {}</p>",
        escape(&r.what),
        escape(&r.result),
        when(r.ended_unix, now),
        human_age(r.ended_unix.saturating_sub(r.started_unix)),
        escape(&r.line)
    );
}

/// The progress page of the sink started from the page: refreshes itself while
/// it runs.
pub fn sink_page(own: Option<&OwnView>) -> String {
    let run = own.and_then(|o| o.sink.as_ref());
    let refresh = if run.is_some_and(|r| r.running) {
        "<meta http-equiv=refresh content=2>"
    } else {
        ""
    };
    let mut out = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>{refresh}\
<meta name=viewport content=\"width=device-width,initial-scale=1\">\
<title>chute serve: new snapshot</title><style>{STYLE}</style></head><body>\
<h1>chute serve: new snapshot</h1>"
    );
    match (own, run) {
        (None, _) => out.push_str(
            "<p>This server runs without its node's key and paths, so it has nothing to back up.</p>",
        ),
        (Some(_), None) => {
            out.push_str("<p>No sink has been started from the page since the server started.</p>")
        }
        (Some(_), Some(r)) => {
            if r.running {
                let _ = write!(
                    out,
                    "<p>Running since <time datetime=\"{0}\">{0}</time> ({1}){2}. This page refreshes itself.</p>",
                    escape(&r.started),
                    human_age(r.secs),
                    r.progress
                        .as_deref()
                        .map_or(String::new(), |p| format!(": {}", escape(p)))
                );
            } else {
                let code = r.exit_code.unwrap_or(-1);
                let class = if code == 0 { "" } else { " class=bad" };
                let _ = write!(
                    out,
                    "<p{class}>Ended with status {code} after {}.</p>",
                    human_age(r.secs)
                );
                if let Some(s) = &r.summary {
                    let _ = write!(out, "<p><b>{}</b></p>", escape(s));
                }
            }
            if !r.output.is_empty() {
                out.push_str("<pre>");
                for l in &r.output {
                    let _ = writeln!(out, "{}", escape(l));
                }
                out.push_str("</pre>");
            }
        }
    }
    out.push_str("<p><a href=\"/\">back to the page</a></p></body></html>\n");
    out
}

/// The page. `csrf`: the session's hidden CSRF field for its forms (see
/// [`super::hidden_csrf`]); `logged_in`: a login cookie let it in, so it gets
/// a logout button.
pub fn page(s: &Status, now: u64, csrf: &str, logged_in: bool) -> String {
    let mut out = String::with_capacity(4096 + s.nodes.len() * 600);
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\">\
<title>chute serve</title><style>{STYLE}</style></head><body><h1>chute serve</h1>\
<p class=m>version {} &middot; up {} since {} &middot; store {} &middot; free {}{}</p>",
        escape(&s.version),
        human_age(s.uptime_secs),
        rfc3339(s.started_unix as i64),
        escape(&s.store),
        s.free_bytes.map_or("unknown".into(), human_bytes),
        if s.append_only {
            " &middot; <b>append-only</b>"
        } else {
            ""
        }
    );
    if let Some(own) = &s.own {
        own_view(&mut out, own, csrf, now, s.stale_after_secs);
    }
    let _ = write!(
        out,
        "<h2>Nodes</h2><div class=w><table><tr><th>node</th><th>used</th><th>quota</th>\
<th>snapshots</th><th>last commit (stale after {})</th><th>pending</th></tr>",
        human_age(s.stale_after_secs)
    );
    for n in &s.nodes {
        node_row(&mut out, n, now);
    }
    if s.nodes.is_empty() {
        out.push_str("<tr><td colspan=6>no node is admitted or stored here</td></tr>");
    }
    out.push_str("</table></div>");
    if s.nodes.iter().any(|n| !n.pending.is_empty()) {
        let _ = write!(
            out,
            "<h2>Uploads not committed</h2><p class=m>abandoned: idle over {} \
(what <code>chute prune</code> deletes by default)</p><div class=w><table>\
<tr><th>node</th><th>blob</th><th>size</th><th>idle</th></tr>",
            human_age(s.abandon_after_secs)
        );
        for n in &s.nodes {
            for u in &n.pending {
                let class = if u.abandoned { " class=bad" } else { "" };
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td{class}>{}{}</td></tr>",
                    escape(&n.name),
                    escape(&u.blob),
                    human_bytes(u.bytes),
                    human_age(u.idle_secs),
                    if u.abandoned { " (abandoned)" } else { "" }
                );
            }
        }
        out.push_str("</table></div>");
    }
    out.push_str("<h2>Background scrub</h2><p>");
    match &s.scrub {
        None => out.push_str("off (<code>--scrub-every 30d</code> turns it on)"),
        Some(sc) => {
            let _ = write!(
                out,
                "a pass every {}; last pass: ",
                human_age(sc.every_secs)
            );
            match sc.last_pass_unix {
                Some(t) => out.push_str(&when(t, now)),
                None => out.push_str("none yet"),
            }
            match sc.damaged_windows {
                Some(0) => out.push_str(", all intact"),
                Some(d) => {
                    let _ = write!(out, ", <span class=bad>{d} damaged windows</span>");
                }
                None => {}
            }
            if let Some(t) = sc.running_since_unix {
                let _ = write!(
                    out,
                    "; a pass is running since {} ({} damaged so far)",
                    when(t, now),
                    sc.damaged_so_far
                );
            }
        }
    }
    let l = &s.limits;
    let _ = write!(
        out,
        "</p><h2>Limits</h2><p>{} threads, {} connections ({} per address), windows up to {}, \
{} requests/s per node (bursts of {})</p><p class=m><a href=\"/chute/status\">status JSON</a> \
&middot; <a href=\"/metrics\">metrics</a> &middot; {}",
        l.threads,
        l.max_connections,
        l.max_per_address,
        human_bytes(l.max_window),
        l.rate_per_sec,
        l.rate_burst,
        rfc3339(now as i64)
    );
    if logged_in {
        let _ = write!(
            out,
            " &middot; <form method=post action=\"/logout\">{csrf}<button>log out</button></form>"
        );
    }
    out.push_str("</p></body></html>\n");
    out
}

/// The login form, with a line saying why it is shown.
pub fn login(why: &str) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\">\
<title>chute serve: log in</title><style>{STYLE}</style></head><body><h1>chute serve</h1>\
<p>{}</p><form method=post action=\"/login\"><label>Token <input type=password name=token \
autocomplete=current-password required></label> <button>log in</button></form></body></html>\n",
        escape(why)
    )
}

/// The page a client not let in gets: how to get in.
pub fn denied() -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\">\
<title>chute serve: forbidden</title><style>{STYLE}</style></head><body><h1>chute serve</h1>\
<p>This page answers only to this machine (loopback), to addresses given with \
<code>--ui-allow</code>, and to holders of the <code>--ui-token-file</code> token: \
<a href=\"/login\">log in</a>. Let in by address, it must be reached by an IP address, \
<code>localhost</code>, a one-label or a <code>.local</code> name (a public name could \
point anywhere).</p></body></html>\n"
    )
}

/// A snapshot's id as tables show it: the full id's first 8 digits.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// An RFC 3339 UTC time as tables show it: `2027-01-15 07:00:00`.
fn table_time(t: &str) -> String {
    t.trim_end_matches('Z').replace('T', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_makes_text_and_attributes_safe() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain-node_1.x"), "plain-node_1.x");
        assert_eq!(escape(""), "");
        assert_eq!(escape("é<"), "é&lt;");
    }

    #[test]
    fn the_page_shows_every_node_its_sizes_and_ages() {
        let s = super::super::status::tests::sample();
        let html = page(&s, s.now_unix, "", false);
        for want in [
            "<meta name=viewport",
            "<td>pi</td>",
            "150.0 MiB",
            "1.0 GiB (14%)",
            "width:14%",
            "(2h 0m ago), 3.0 MiB",
            "143.0 MiB",
            "1d 1h (abandoned)",
            "(1 abandoned)",
            "<td class=stale>",
            "(3d 0h ago)",
            "old&lt;b&gt;&amp;&quot; <span class=m>(not admitted)</span>",
            "free 5.0 GiB",
            "append-only",
            "2 damaged windows",
            "4 threads, 256 connections (64 per address), windows up to 64.0 MiB",
            "500 requests/s",
        ] {
            assert!(html.contains(want), "no {want:?} in\n{html}");
        }
        assert!(!html.contains("old<b>"), "a node name went out unescaped");
        assert!(!html.contains("<script"), "no script");
        assert!(!html.contains("log out"), "no logout without a session");
        // Only the stale node is highlighted.
        assert_eq!(html.matches("class=stale").count(), 1, "{html}");
        assert!(html.len() < 8192, "{} bytes", html.len());
        let logged_in = page(
            &s,
            s.now_unix,
            "<input type=hidden name=csrf value=ab>",
            true,
        );
        assert!(logged_in.contains("name=csrf value=ab><button>log out"));
    }

    #[test]
    fn the_own_view_shows_when_there_is_one() {
        use super::super::status::{OwnSnapshot, SinkRun};
        let mut s = super::super::status::tests::sample();
        let csrf = "<input type=hidden name=csrf value=cd>";
        assert!(!page(&s, s.now_unix, csrf, false).contains("This node"));
        s.own = Some(OwnView {
            node: "me<".into(),
            paths: vec!["/etc".into(), "/home".into()],
            snapshots: vec![OwnSnapshot {
                id: "1a2b3c".into(),
                time: "2027-01-15T07:00:00Z".into(),
                paths: vec!["/home".into()],
                files: 10,
                bytes: 2048,
            }],
            snapshots_total: 31,
            listed_unix: Some(s.now_unix),
            next_sink: Some("cron: 17 3 * * *".into()),
            sink: Some(SinkRun {
                running: true,
                secs: 12,
                ..SinkRun::default()
            }),
            last_sink: Some(Record::ended(
                "sink",
                s.now_unix - 7300,
                Ok("snapshot 1a2b saved: 10 files"),
            )),
            ..OwnView::default()
        });
        // The record ended 2 h ago, after 60 s.
        let sink = s.own.as_mut().unwrap().last_sink.as_mut().unwrap();
        sink.ended_unix = s.now_unix - 7240;
        let html = page(&s, s.now_unix, csrf, false);
        for want in [
            "This node: me&lt;",
            "Backs up /etc, /home.",
            "Newest snapshot: 2027-01-15 07:00:00 UTC (1a2b3c).",
            "Next sink: cron: 17 3 * * *.",
            "<td>1a2b3c</td>",
            "running (12s)",
            "<form method=post action=\"/sink\"><input type=hidden name=csrf value=cd><button>Take new snapshot</button></form>",
            "and 30 older",
            "<p>Last sink (sink): ok, ended <time",
            "(2h 0m ago) after 1m 0s: snapshot 1a2b saved: 10 files</p>",
            "<p class=m>No verify has recorded its end on this machine",
        ] {
            assert!(html.contains(want), "no {want:?} in\n{html}");
        }
        // A failed run, and a good one too old, are marked.
        let own = s.own.as_mut().unwrap();
        own.last_verify = Some(Record::ended(
            "verify --all",
            s.now_unix - 10,
            Err(&crate::Error::Damaged("1 damaged file".into())),
        ));
        own.last_sink.as_mut().unwrap().ended_unix = s.now_unix - s.stale_after_secs - 1;
        let html = page(&s, s.now_unix, csrf, false);
        for want in [
            "<p class=bad>Last sink (sink): ok, ended",
            "<p class=bad>Last verify (verify --all): damaged, ended",
            ": 1 damaged file</p>",
        ] {
            assert!(html.contains(want), "no {want:?} in\n{html}");
        }
    }

    #[test]
    fn the_sink_page_refreshes_while_it_runs() {
        use super::super::status::SinkRun;
        assert!(sink_page(None).contains("nothing to back up"));
        let mut own = OwnView::default();
        assert!(sink_page(Some(&own)).contains("No sink has been started"));
        own.sink = Some(SinkRun {
            running: true,
            started: "2027-01-15T08:00:00Z".into(),
            secs: 3,
            progress: Some("12 files, 1.0 MiB".into()),
            output: vec!["warning: <x>".into()],
            ..SinkRun::default()
        });
        let html = sink_page(Some(&own));
        assert!(
            html.contains("<meta http-equiv=refresh content=2>"),
            "{html}"
        );
        assert!(html.contains("(3s): 12 files, 1.0 MiB."), "{html}");
        assert!(html.contains("<pre>warning: &lt;x&gt;\n</pre>"), "{html}");
        own.sink = Some(SinkRun {
            running: false,
            secs: 4,
            exit_code: Some(0),
            summary: Some("snapshot 1a2b saved: 3 files".into()),
            ..SinkRun::default()
        });
        let html = sink_page(Some(&own));
        assert!(!html.contains("refresh"), "{html}");
        assert!(html.contains("Ended with status 0 after 4s."), "{html}");
        assert!(
            html.contains("<b>snapshot 1a2b saved: 3 files</b>"),
            "{html}"
        );
    }
}
