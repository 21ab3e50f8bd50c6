//! `chute status`: how this node's last sink and last verify on this machine
//! ended, from their records in the cache directory (see [`crate::runlog`]).

use super::args::StatusCmd;
use super::{Settings, open_node};
use crate::Result;
use crate::runlog::{self, Record, StatusOut};
use crate::snapshot::unix_now;
use crate::units::human_age;

pub(super) fn cmd(s: &Settings, c: StatusCmd) -> Result<()> {
    let node = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    let out = StatusOut {
        node: node.node.clone(),
        remote: node.remote.describe(),
        last_sink: runlog::load(&node.cache_dir, runlog::SINK),
        last_verify: runlog::load(&node.cache_dir, runlog::VERIFY),
    };
    if c.json {
        println!("{}", miniserde::json::to_string(&out));
    } else {
        print!("{}", text(&out, unix_now()));
    }
    Ok(())
}

/// The table `chute status` prints.
fn text(out: &StatusOut, now: u64) -> String {
    let line = |name: &str, r: &Option<Record>| match r {
        Some(r) => format!(
            "last {name}: {}, ended {} ({} ago) after {}: {} ({})\n",
            r.result,
            r.ended,
            human_age(now.saturating_sub(r.ended_unix)),
            human_age(r.ended_unix.saturating_sub(r.started_unix)),
            r.line,
            r.what
        ),
        None => format!("last {name}: none recorded on this machine\n"),
    };
    format!(
        "node {} on {}\n{}{}",
        out.node,
        out.remote,
        line("sink", &out.last_sink),
        line("verify", &out.last_verify)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_each_run_and_its_age() {
        let mut out = StatusOut {
            node: "pi".into(),
            remote: "/srv/store".into(),
            ..<StatusOut as Default>::default()
        };
        out.last_sink = Some(Record::ended("sink", 100, Ok("snapshot 1a saved")));
        let mut r = out.last_sink.clone().unwrap();
        r.ended_unix = 112;
        r.ended = crate::snapshot::rfc3339(112);
        out.last_sink = Some(r);
        let t = text(&out, 112 + 7260);
        assert_eq!(
            t,
            "node pi on /srv/store\n\
             last sink: ok, ended 1970-01-01T00:01:52Z (2h 1m ago) after 12s: snapshot 1a saved (sink)\n\
             last verify: none recorded on this machine\n"
        );
        let json = miniserde::json::to_string(&out);
        let back: StatusOut = miniserde::json::from_str(&json).unwrap();
        assert_eq!(back.last_sink, out.last_sink);
        assert!(json.contains("\"last_verify\":null"), "{json}");
    }
}
