//! What the management page, `/chute/status` and `/metrics` show: a [`Status`],
//! plain data gathered from the store and the server's counters ([`gather`]),
//! rendered as JSON ([`json`]) and as Prometheus text ([`metrics`]).
//!
//! `GET /chute/status` answers this JSON object (times are RFC 3339 UTC strings,
//! each with a `_unix` twin in Unix seconds; sizes are bytes, as integers; absent
//! values are `null`):
//!
//! ```text
//! version               chute's version
//! now, now_unix         when this was gathered
//! started, started_unix when the server started; uptime_secs
//! store                 the store (a directory, a bucket URL)
//! free_bytes            free space of the store's file system (null for a bucket)
//! append_only           deletes need the admin key
//! stale_after_secs      --ui-stale: a last commit older than this is stale
//! abandon_after_secs    a pending upload idle this long is abandoned (prune's
//!                       default grace period deletes it)
//! limits                {threads, max_connections, max_per_address, max_window,
//!                        rate_per_sec, rate_burst}
//! nodes                 [{name, admitted, used_bytes, quota_bytes, snapshots,
//!                         last_commit, last_commit_unix, last_snapshot_bytes,
//!                         stale, pending: [{blob, bytes, idle_secs, abandoned}],
//!                         error}]  every admitted node and every node found in
//!                        the store, by name; `blob` is DOMAIN/MOUNT/TIMESTAMP
//! scrub                 null when off, else {every_secs, last_pass,
//!                        last_pass_unix, damaged_windows (of the last pass this
//!                        server ran, else null), running_since,
//!                        running_since_unix, damaged_so_far}
//! requests              [{kind, code, count}] answers since start; kind is blob,
//!                        page, status, metrics, login, sink or other
//! own                   null unless this server runs with its node's key and
//!                        paths (see [`super::own`]), else {node, paths,
//!                        snapshots: [{id, time, paths, files, bytes}] (newest
//!                        first, at most 30; time as `chute list` shows it, UTC),
//!                        snapshots_total, listed, listed_unix, listing,
//!                        list_error, next_sink (a sentence: systemd's next time
//!                        or the cron schedule), sink: null or the latest sink
//!                        started from the page {running, started,
//!                        started_unix, secs, progress, output: [lines],
//!                        exit_code, summary}, sinks_ok, sinks_failed,
//!                        last_sink, last_verify: null or how the last one on
//!                        this machine ended, whoever started it (`chute
//!                        status`): {what, started, started_unix, ended,
//!                        ended_unix, result (ok, incomplete, damaged or
//!                        failed), line (its summary or error)}}
//! ```
//!
//! Cost: per node, one listing of its committed blobs (counted, only the newest
//! kept), one of its uncommitted ones, and the newest snapshot's files; the caller
//! caches the result (see [`super`]).

use crate::snapshot::rfc3339;
use crate::store::Store;
use miniserde::Serialize;
use std::fmt::Write;

#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Status {
    pub version: String,
    pub now: String,
    pub now_unix: u64,
    pub started: String,
    pub started_unix: u64,
    pub uptime_secs: u64,
    pub store: String,
    pub free_bytes: Option<u64>,
    pub append_only: bool,
    pub stale_after_secs: u64,
    pub abandon_after_secs: u64,
    pub limits: Limits,
    pub nodes: Vec<Node>,
    pub scrub: Option<Scrub>,
    pub requests: Vec<Requests>,
    /// This node's own view, when the server runs with its key and paths.
    pub own: Option<OwnView>,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Limits {
    pub threads: u64,
    pub max_connections: u64,
    pub max_per_address: u64,
    pub max_window: u64,
    pub rate_per_sec: u64,
    pub rate_burst: u64,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Node {
    pub name: String,
    /// Admitted with `--allow` (else only found in the store).
    pub admitted: bool,
    pub used_bytes: u64,
    pub quota_bytes: Option<u64>,
    pub snapshots: u64,
    pub last_commit: Option<String>,
    pub last_commit_unix: Option<u64>,
    pub last_snapshot_bytes: Option<u64>,
    pub stale: bool,
    pub pending: Vec<Upload>,
    /// What went wrong reading this node's blobs, if anything.
    pub error: Option<String>,
}

/// A pending (created, not committed) blob.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Upload {
    pub blob: String,
    pub bytes: u64,
    pub idle_secs: u64,
    pub abandoned: bool,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Scrub {
    pub every_secs: u64,
    pub last_pass: Option<String>,
    pub last_pass_unix: Option<u64>,
    pub damaged_windows: Option<u64>,
    pub running_since: Option<String>,
    pub running_since_unix: Option<u64>,
    pub damaged_so_far: u64,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Requests {
    pub kind: String,
    pub code: u64,
    pub count: u64,
}

/// This node's own view (see [`super::own`]).
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct OwnView {
    pub node: String,
    pub paths: Vec<String>,
    /// Newest first, at most [`super::own::SHOW`].
    pub snapshots: Vec<OwnSnapshot>,
    pub snapshots_total: u64,
    pub listed: Option<String>,
    pub listed_unix: Option<u64>,
    /// A list is being read now.
    pub listing: bool,
    pub list_error: Option<String>,
    pub next_sink: Option<String>,
    /// How the last sink and verify on this machine ended (`chute status`),
    /// whoever started them.
    pub last_sink: Option<crate::runlog::Record>,
    pub last_verify: Option<crate::runlog::Record>,
    /// The latest sink started from the page.
    pub sink: Option<SinkRun>,
    pub sinks_ok: u64,
    pub sinks_failed: u64,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct OwnSnapshot {
    /// Full, as `chute list --json` gives it (the page shows the first 8 digits).
    pub id: String,
    /// RFC 3339 UTC, as `chute list --json` gives it.
    pub time: String,
    pub paths: Vec<String>,
    pub files: u64,
    pub bytes: u64,
}

/// A sink started from the page.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct SinkRun {
    pub running: bool,
    pub started: String,
    pub started_unix: u64,
    /// Seconds it ran, or has run so far.
    pub secs: u64,
    /// Its latest progress line.
    pub progress: Option<String>,
    /// Its last lines of output.
    pub output: Vec<String>,
    /// Once it ended: its exit status (`-1`: killed by a signal).
    pub exit_code: Option<i64>,
    /// Its summary line (`snapshot … saved: …`), once printed.
    pub summary: Option<String>,
}

/// An admitted node as the server counts it.
pub struct Admitted {
    pub name: String,
    pub quota: Option<u64>,
    /// Its charge now, from the server's usage count.
    pub used: u64,
}

/// What [`gather`] reads besides the store.
pub struct Sources {
    pub admitted: Vec<Admitted>,
    pub append_only: bool,
    pub limits: Limits,
    pub started_unix: u64,
    pub now_unix: u64,
    pub stale_after: u64,
    pub abandon_after: u64,
    /// `--scrub-every` and what the background scrub last did.
    pub scrub: Option<(u64, crate::scrub::Summary)>,
    pub requests: Vec<Requests>,
    pub own: Option<OwnView>,
}

fn time_pair(t: Option<u64>) -> (Option<String>, Option<u64>) {
    (t.map(|t| rfc3339(t as i64)), t)
}

/// Reads the store for every node admitted or found there.
pub fn gather(store: &Store, src: Sources) -> Status {
    let now = src.now_unix;
    // (node, domain) for each domain a node has blobs in. Vectors and the
    // crate's one sort, not maps: this runs every few seconds at most, for a few
    // nodes, and each map type would cost the armv7 binary kilobytes.
    let mut found: Vec<(String, String)> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    match store.domains() {
        Ok(domains) => {
            for d in domains {
                match store.nodes(&d) {
                    Ok(nodes) => {
                        for n in nodes {
                            found.push((n, d.clone()));
                        }
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    let mut names: Vec<String> = found
        .iter()
        .map(|(n, _)| n.clone())
        .chain(src.admitted.iter().map(|a| a.name.clone()))
        .collect();
    crate::sort::sort(&mut names);
    names.dedup();
    let mut nodes = Vec::with_capacity(names.len());
    for name in names {
        let domains: Vec<String> = found
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, d)| d.clone())
            .collect();
        let a = src.admitted.iter().find(|a| a.name == name);
        let mut node = node_status(store, &name, &domains, now, src.abandon_after);
        match a {
            Some(a) => {
                node.admitted = true;
                node.used_bytes = a.used;
                node.quota_bytes = a.quota;
            }
            None => match store.node_usage(&name) {
                Ok(u) => node.used_bytes = u,
                Err(e) => node.error = Some(e.to_string()),
            },
        }
        node.stale = node
            .last_commit_unix
            .is_some_and(|t| now.saturating_sub(t) > src.stale_after);
        nodes.push(node);
    }
    if let (Some(e), Some(first)) = (errors.first(), nodes.first_mut()) {
        first.error.get_or_insert_with(|| e.clone());
    }
    let free_bytes = store
        .local_dir()
        .and_then(|d| crate::sys::free_space(d).ok());
    let scrub = src.scrub.map(|(every, s)| {
        let (last_pass, last_pass_unix) = time_pair(s.last_pass);
        let (running_since, running_since_unix) = time_pair(s.running);
        Scrub {
            every_secs: every,
            last_pass,
            last_pass_unix,
            damaged_windows: s.damaged,
            running_since,
            running_since_unix,
            damaged_so_far: s.damaged_now,
        }
    });
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        now: rfc3339(now as i64),
        now_unix: now,
        started: rfc3339(src.started_unix as i64),
        started_unix: src.started_unix,
        uptime_secs: now.saturating_sub(src.started_unix),
        store: store.describe(),
        free_bytes,
        append_only: src.append_only,
        stale_after_secs: src.stale_after,
        abandon_after_secs: src.abandon_after,
        limits: src.limits,
        nodes,
        scrub,
        requests: src.requests,
        own: src.own,
    }
}

/// One node's snapshots and uploads, over the domains it has blobs in.
fn node_status(store: &Store, name: &str, domains: &[String], now: u64, abandon: u64) -> Node {
    let mut node = Node {
        name: name.into(),
        ..Node::default()
    };
    let mut newest: Option<crate::blob::BlobId> = None;
    let fail = |node: &mut Node, e: crate::store::Error| {
        node.error.get_or_insert_with(|| e.to_string());
    };
    for d in domains {
        match store.list(d, name) {
            Ok(list) => {
                node.snapshots += list.len() as u64;
                // Timestamps have one fixed width, so the largest is the newest.
                if let Some(last) = list
                    .into_iter()
                    .max_by(|a, b| a.timestamp.cmp(&b.timestamp))
                {
                    if newest.as_ref().is_none_or(|n| n.timestamp < last.timestamp) {
                        newest = Some(last);
                    }
                }
            }
            Err(e) => fail(&mut node, e),
        }
        match store.list_uncommitted(d, name) {
            Ok(list) => node.pending.extend(
                list.into_iter()
                    .filter(|u| u.state == crate::blob::BlobState::Pending)
                    .map(|u| Upload {
                        blob: format!("{}/{}/{}", u.id.domain, u.id.mount, u.id.timestamp),
                        bytes: u.bytes,
                        idle_secs: u.idle,
                        abandoned: u.idle >= abandon,
                    }),
            ),
            Err(e) => fail(&mut node, e),
        }
    }
    if let Some(id) = newest {
        // The store's clock: when the newest snapshot's files last changed, its
        // commit (the node's timestamp is the node's clock, and when it started).
        match store.backend().activity(&id) {
            Ok((bytes, idle)) => {
                let t = now.saturating_sub(idle);
                node.last_commit = Some(rfc3339(t as i64));
                node.last_commit_unix = Some(t);
                node.last_snapshot_bytes = Some(bytes);
            }
            Err(e) => fail(&mut node, e),
        }
    }
    node
}

/// The `/chute/status` body.
pub fn json(s: &Status) -> String {
    miniserde::json::to_string(s)
}

/// A Prometheus label value, escaped (text format 0.0.4).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The `/metrics` body: Prometheus text format 0.0.4.
pub fn metrics(s: &Status) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(
            out,
            "# HELP chute_{name} {help}\n# TYPE chute_{name} {kind}"
        );
        for (labels, v) in rows {
            let _ = writeln!(out, "chute_{name}{labels} {v}");
        }
    };
    let per_node = |f: &dyn Fn(&Node) -> Option<u64>| -> Vec<(String, u64)> {
        s.nodes
            .iter()
            .filter_map(|n| f(n).map(|v| (format!("{{node=\"{}\"}}", label(&n.name)), v)))
            .collect()
    };
    family(
        "build_info",
        "gauge",
        "The running chute's version.",
        vec![(format!("{{version=\"{}\"}}", label(&s.version)), 1)],
    );
    family(
        "uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        vec![(String::new(), s.uptime_secs)],
    );
    if let Some(f) = s.free_bytes {
        family(
            "store_free_bytes",
            "gauge",
            "Free space of the store's file system.",
            vec![(String::new(), f)],
        );
    }
    family(
        "node_bytes",
        "gauge",
        "Bytes a node's blobs are charged (each file its bytes plus 4 KiB).",
        per_node(&|n| Some(n.used_bytes)),
    );
    family(
        "node_quota_bytes",
        "gauge",
        "A node's quota, where it has one.",
        per_node(&|n| n.quota_bytes),
    );
    family(
        "node_snapshots",
        "gauge",
        "Committed snapshots a node has here.",
        per_node(&|n| Some(n.snapshots)),
    );
    family(
        "node_last_commit_timestamp_seconds",
        "gauge",
        "Unix time of a node's newest snapshot's commit.",
        per_node(&|n| n.last_commit_unix),
    );
    family(
        "node_pending_uploads",
        "gauge",
        "A node's pending (created, not committed) uploads.",
        per_node(&|n| Some(n.pending.len() as u64)),
    );
    family(
        "node_pending_bytes",
        "gauge",
        "Bytes in a node's pending uploads.",
        per_node(&|n| Some(n.pending.iter().map(|u| u.bytes).sum())),
    );
    family(
        "node_abandoned_uploads",
        "gauge",
        "A node's pending uploads idle longer than prune's grace period.",
        per_node(&|n| Some(n.pending.iter().filter(|u| u.abandoned).count() as u64)),
    );
    family(
        "requests_total",
        "counter",
        "Answers since the server started, by route kind and status code.",
        s.requests
            .iter()
            .map(|r| {
                (
                    format!("{{kind=\"{}\",code=\"{}\"}}", label(&r.kind), r.code),
                    r.count,
                )
            })
            .collect(),
    );
    if let Some(own) = &s.own {
        family(
            "sink_runs_total",
            "counter",
            "Sinks started from the page that ended, by result.",
            vec![
                ("{result=\"ok\"}".into(), own.sinks_ok),
                ("{result=\"failed\"}".into(), own.sinks_failed),
            ],
        );
        let runs = [("sink", &own.last_sink), ("verify", &own.last_verify)];
        let rows = |f: &dyn Fn(&crate::runlog::Record) -> u64| -> Vec<(String, u64)> {
            runs.iter()
                .filter_map(|(what, r)| {
                    r.as_ref()
                        .map(|r| (format!("{{command=\"{what}\"}}"), f(r)))
                })
                .collect()
        };
        family(
            "own_last_run_timestamp_seconds",
            "gauge",
            "When this node's last sink and verify on this machine ended (chute status).",
            rows(&|r| r.ended_unix),
        );
        family(
            "own_last_run_success",
            "gauge",
            "Whether this node's last sink and verify on this machine ended well (1) or not (0).",
            rows(&|r| u64::from(r.ok())),
        );
        family(
            "own_snapshots",
            "gauge",
            "This node's snapshots, as its last list read them.",
            vec![(String::new(), own.snapshots_total)],
        );
    }
    if let Some(sc) = &s.scrub {
        let mut rows = Vec::new();
        if let Some(t) = sc.last_pass_unix {
            rows.push((String::new(), t));
        }
        family(
            "scrub_last_pass_timestamp_seconds",
            "gauge",
            "Unix time the last completed background scrub pass started.",
            rows,
        );
        family(
            "scrub_damaged_windows",
            "gauge",
            "Damaged windows the last background scrub pass this server ran found.",
            sc.damaged_windows
                .map(|d| (String::new(), d))
                .into_iter()
                .collect(),
        );
        family(
            "scrub_running",
            "gauge",
            "1 while a background scrub pass runs.",
            vec![(String::new(), u64::from(sc.running_since.is_some()))],
        );
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn sample() -> Status {
        Status {
            version: "0.1.0".into(),
            now: rfc3339(1_800_000_000),
            now_unix: 1_800_000_000,
            started: rfc3339(1_799_996_400),
            started_unix: 1_799_996_400,
            uptime_secs: 3600,
            store: "/srv/chute".into(),
            free_bytes: Some(5 << 30),
            append_only: true,
            stale_after_secs: 36 * 3600,
            abandon_after_secs: 86_400,
            limits: Limits {
                threads: 4,
                max_connections: 256,
                max_per_address: 64,
                max_window: 64 << 20,
                rate_per_sec: 500,
                rate_burst: 1000,
            },
            nodes: vec![
                Node {
                    name: "pi".into(),
                    admitted: true,
                    used_bytes: 150 << 20,
                    quota_bytes: Some(1 << 30),
                    snapshots: 12,
                    last_commit: Some(rfc3339(1_800_000_000 - 7200)),
                    last_commit_unix: Some(1_800_000_000 - 7200),
                    last_snapshot_bytes: Some(3 << 20),
                    stale: false,
                    pending: vec![Upload {
                        blob: "d.org/m1/20270115T080000.000000Z".into(),
                        bytes: 143 << 20,
                        idle_secs: 90_000,
                        abandoned: true,
                    }],
                    error: None,
                },
                Node {
                    name: "old<b>&\"".into(),
                    admitted: false,
                    used_bytes: 2048,
                    snapshots: 1,
                    last_commit: Some(rfc3339(1_800_000_000 - 3 * 86_400)),
                    last_commit_unix: Some(1_800_000_000 - 3 * 86_400),
                    stale: true,
                    ..Node::default()
                },
            ],
            scrub: Some(Scrub {
                every_secs: 30 * 86_400,
                last_pass: Some(rfc3339(1_799_000_000)),
                last_pass_unix: Some(1_799_000_000),
                damaged_windows: Some(2),
                ..Scrub::default()
            }),
            requests: vec![Requests {
                kind: "blob".into(),
                code: 201,
                count: 77,
            }],
            own: None,
        }
    }

    #[test]
    fn metrics_have_a_series_per_node() {
        let m = metrics(&sample());
        for want in [
            "# TYPE chute_node_bytes gauge\n",
            "chute_node_bytes{node=\"pi\"} 157286400\n",
            "chute_node_quota_bytes{node=\"pi\"} 1073741824\n",
            "chute_node_snapshots{node=\"pi\"} 12\n",
            "chute_node_last_commit_timestamp_seconds{node=\"pi\"} 1799992800\n",
            "chute_node_abandoned_uploads{node=\"pi\"} 1\n",
            "chute_node_pending_bytes{node=\"pi\"} 149946368\n",
            "chute_node_snapshots{node=\"old<b>&\\\"\"} 1\n",
            "# TYPE chute_requests_total counter\n",
            "chute_requests_total{kind=\"blob\",code=\"201\"} 77\n",
            "chute_scrub_last_pass_timestamp_seconds 1799000000\n",
            "chute_scrub_damaged_windows 2\n",
            "chute_uptime_seconds 3600\n",
            "chute_store_free_bytes 5368709120\n",
            "chute_build_info{version=\"0.1.0\"} 1\n",
        ] {
            assert!(m.contains(want), "no {want:?} in\n{m}");
        }
        assert!(
            !m.contains("chute_node_quota_bytes{node=\"old"),
            "no quota, no series"
        );
        // Every sample line is NAME[{LABELS}] VALUE.
        for l in m.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.rsplit_once(' ').unwrap();
            assert!(v.parse::<u64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn the_own_view_adds_its_sink_runs_and_snapshots() {
        let mut s = sample();
        assert!(!metrics(&s).contains("chute_sink_runs_total"));
        s.own = Some(OwnView {
            snapshots_total: 7,
            sinks_ok: 2,
            sinks_failed: 1,
            last_verify: Some(crate::runlog::Record::ended(
                "verify",
                40,
                Err(&crate::Error::Failed("no".into())),
            )),
            ..OwnView::default()
        });
        s.own
            .as_mut()
            .unwrap()
            .last_verify
            .as_mut()
            .unwrap()
            .ended_unix = 50;
        let m = metrics(&s);
        for want in [
            "# TYPE chute_sink_runs_total counter\n",
            "chute_sink_runs_total{result=\"ok\"} 2\n",
            "chute_sink_runs_total{result=\"failed\"} 1\n",
            "chute_own_snapshots 7\n",
            "chute_own_last_run_timestamp_seconds{command=\"verify\"} 50\n",
            "chute_own_last_run_success{command=\"verify\"} 0\n",
        ] {
            assert!(m.contains(want), "no {want:?} in\n{m}");
        }
        let j = json(&s);
        assert!(j.contains("\"snapshots_total\":7"), "{j}");
        assert!(j.contains("\"sink\":null"), "{j}");
    }

    #[test]
    fn the_json_has_the_documented_fields() {
        let j = json(&sample());
        for want in [
            "\"now\":\"2027-01-15T08:00:00Z\"",
            "\"now_unix\":1800000000",
            "\"free_bytes\":5368709120",
            "\"last_commit_unix\":1799992800",
            "\"abandoned\":true",
            "\"own\":null",
            "\"name\":\"old<b>&\\\"\"",
        ] {
            assert!(j.contains(want), "no {want} in {j}");
        }
    }
}
