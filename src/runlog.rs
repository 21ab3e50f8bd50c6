//! What this node's last sink and last verify did, kept in its cache directory
//! for the remote (see [`crate::cache`]) so that `chute status` and the
//! management page can say whether last night's cron run worked: its outcome is
//! otherwise only in a mail or the journal.
//!
//! # Files `last-sink`, `last-verify`, text, version 1
//! ```text
//! chute-run 1
//! what <the command: "sink", "verify", "verify --all --read-data", …>
//! started <Unix seconds>
//! ended <Unix seconds>
//! result ok|incomplete|damaged|failed
//! line <the summary line it printed, or its error>
//! ```
//! Written whole (a temporary file renamed into place) when the command ends,
//! whatever the end but a signal: a run killed leaves the previous record. The
//! line is one line (newlines become spaces), cut at [`LINE_CAP`] bytes. A
//! reader ignores keys it does not know; a file whose first line is not the
//! header above, or that lacks a key it needs, is no record.

use crate::Error;
use crate::snapshot::{rfc3339, unix_now};
use miniserde::{Deserialize, Serialize};
use std::path::Path;

/// The file a command's record is kept in, in the cache directory.
pub const SINK: &str = "last-sink";
pub const VERIFY: &str = "last-verify";
const HEAD: &str = "chute-run 1";
/// Longest line kept.
pub const LINE_CAP: usize = 1000;

/// One command's last run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub what: String,
    pub started: String,
    pub started_unix: u64,
    pub ended: String,
    pub ended_unix: u64,
    /// `ok`, `incomplete` (done, but not all of it: exit status 3),
    /// `damaged` (stored data did not authenticate) or `failed`.
    pub result: String,
    pub line: String,
}

impl Record {
    /// A run that ended now, `Ok` with its summary line or with its error.
    pub fn ended(what: &str, started_unix: u64, outcome: Result<&str, &Error>) -> Record {
        let (result, line) = match outcome {
            Ok(summary) => ("ok", summary.to_string()),
            Err(e) => (result_of(e), e.to_string()),
        };
        let ended_unix = unix_now().max(started_unix);
        let mut line = line.replace(['\n', '\r'], " ");
        if line.len() > LINE_CAP {
            let mut cut = LINE_CAP;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        Record {
            what: what.replace(['\n', '\r'], " "),
            started: rfc3339(started_unix as i64),
            started_unix,
            ended: rfc3339(ended_unix as i64),
            ended_unix,
            result: result.into(),
            line,
        }
    }

    pub fn ok(&self) -> bool {
        self.result == "ok"
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        format!(
            "{HEAD}\nwhat {}\nstarted {}\nended {}\nresult {}\nline {}\n",
            self.what, self.started_unix, self.ended_unix, self.result, self.line
        )
    }

    /// Reads a file's text; `None` unless it is a whole version 1 record.
    pub fn parse(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        if lines.next()? != HEAD {
            return None;
        }
        let (mut what, mut started, mut ended, mut result, mut line) =
            (None, None, None, None, None);
        for l in lines {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            match k {
                "what" => what = Some(v),
                "started" => started = v.parse::<u64>().ok(),
                "ended" => ended = v.parse::<u64>().ok(),
                "result" => result = Some(v),
                "line" => line = Some(v),
                _ => {}
            }
        }
        let (started_unix, ended_unix) = (started?, ended?);
        let result = result?;
        if !matches!(result, "ok" | "incomplete" | "damaged" | "failed") {
            return None;
        }
        Some(Record {
            what: what?.to_string(),
            started: rfc3339(started_unix as i64),
            started_unix,
            ended: rfc3339(ended_unix as i64),
            ended_unix,
            result: result.to_string(),
            line: line?.to_string(),
        })
    }
}

/// `chute status --json`'s object: the node, its remote, and its records.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct StatusOut {
    pub node: String,
    pub remote: String,
    pub last_sink: Option<Record>,
    pub last_verify: Option<Record>,
}

/// The record's `result` word for an error.
fn result_of(e: &Error) -> &'static str {
    match e {
        Error::Hinted(inner, _) => result_of(inner),
        Error::Incomplete(_) => "incomplete",
        Error::Damaged(_) => "damaged",
        _ => "failed",
    }
}

/// Keeps `record` as `cache_dir/file`; a failure to is a warning on stderr,
/// never the command's error.
pub fn save(cache_dir: &Path, file: &str, record: &Record) {
    let saved = crate::cache::create_dir(cache_dir).and_then(|()| {
        crate::fsutil::write_atomic(&cache_dir.join(file), record.to_text().as_bytes())
    });
    if let Err(e) = saved {
        eprintln!(
            "chute: warning: cannot record this run in {}: {e}",
            cache_dir.join(file).display()
        );
    }
}

/// The record in `cache_dir/file`, if there is a whole one.
pub fn load(cache_dir: &Path, file: &str) -> Option<Record> {
    let text = std::fs::read(cache_dir.join(file)).ok()?;
    Record::parse(std::str::from_utf8(&text).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version 1 file, byte for byte: a change to it is a format change.
    #[test]
    fn the_file_is_pinned() {
        let r = Record {
            what: "verify --all".into(),
            started: rfc3339(1_764_645_425),
            started_unix: 1_764_645_425,
            ended: rfc3339(1_764_645_437),
            ended_unix: 1_764_645_437,
            result: "ok".into(),
            line: "verified 3 snapshots: all intact".into(),
        };
        let text = "chute-run 1\nwhat verify --all\nstarted 1764645425\nended 1764645437\nresult ok\nline verified 3 snapshots: all intact\n";
        assert_eq!(r.to_text(), text);
        assert_eq!(Record::parse(text), Some(r.clone()));
        assert_eq!(r.started, "2025-12-02T03:17:05Z");
        // Unknown keys are skipped; a missing key, an unknown result or another
        // version is no record.
        let more = text.replace("result ok\n", "result ok\nnew thing\n");
        assert_eq!(Record::parse(&more), Some(r));
        assert_eq!(Record::parse(&text.replace("line ", "lime ")), None);
        assert_eq!(Record::parse(&text.replace("ok", "fine")), None);
        assert_eq!(Record::parse(&text.replace("run 1", "run 2")), None);
        assert_eq!(Record::parse(&text.replace("ended 1", "ended x")), None);
        assert_eq!(Record::parse(""), None);
    }

    #[test]
    fn errors_are_one_cut_line_with_their_kind() {
        let e = Error::Incomplete("snapshot 1a saved, but\n2 paths are missing".into());
        let r = Record::ended("sink", 5, Err(&e));
        assert_eq!(r.result, "incomplete");
        assert_eq!(r.line, "snapshot 1a saved, but 2 paths are missing");
        assert!(Record::parse(&r.to_text()).is_some_and(|p| p == r));
        let hinted = Error::Hinted(Box::new(Error::Damaged("bad".into())), "run x".into());
        assert_eq!(Record::ended("verify", 5, Err(&hinted)).result, "damaged");
        let long = Error::Failed("é".repeat(LINE_CAP));
        let r = Record::ended("sink", 5, Err(&long));
        assert!(r.line.len() <= LINE_CAP && r.line.len() > LINE_CAP - 2);
        assert_eq!(r.result, "failed");
        let ok = Record::ended("sink", u64::MAX / 2, Ok("snapshot 1a saved"));
        assert!(ok.ok() && ok.ended_unix >= ok.started_unix);
    }

    #[test]
    fn records_are_saved_and_loaded_whole() {
        let dir = std::env::temp_dir().join(format!("chute-runlog-{}", std::process::id()));
        let cache = dir.join("chute").join("0123");
        assert_eq!(load(&cache, SINK), None);
        let r = Record::ended("sink", 7, Ok("snapshot 1a saved"));
        save(&cache, SINK, &r);
        assert_eq!(load(&cache, SINK), Some(r));
        assert_eq!(load(&cache, VERIFY), None);
        assert!(crate::cache::is_cache_tag(
            &dir.join("chute").join("CACHEDIR.TAG")
        ));
        std::fs::write(cache.join(VERIFY), "chute-run 1\nwhat verify\n").unwrap();
        assert_eq!(load(&cache, VERIFY), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
