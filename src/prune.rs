//! `chute prune`: delete the blobs no remaining snapshot needs, without a lock.
//!
//! # What is deleted
//! A candidate is a blob of this node that is not a committed snapshot (listed by
//! [`Remote::list_uncommitted`]): a forgotten snapshot, a pending upload that was
//! never committed, or an orphan (a directory whose delete was interrupted). The
//! live references are read from every committed snapshot's manifest, one manifest
//! at a time: the byte ranges its chunks use in candidates, and nothing else (so
//! memory is one manifest plus the ranges still used in forgotten blobs, never a set
//! of every chunk). Only chunk references count: a manifest's blob table may name
//! blobs none of its chunks use (sinks before the table was compacted copied their
//! parent's whole). A
//! candidate that any committed snapshot has a chunk in is kept, whole. A candidate nothing references is
//! *marked*: its path and the time it was first found unreferenced go to the state
//! file `prune-marks` in this node's cache directory (`$XDG_CACHE_HOME/chute/<id>/`).
//! A later prune deletes it once it has been marked for at least the grace period
//! (`--grace`, default 24h) and is still unreferenced, and the store has seen it
//! idle for the grace period too, by its own clock: a forgotten blob since its
//! forget, a pending or orphaned one since its last write (so an upload in progress,
//! or one being resumed, is left alone, and a client clock that is off cannot
//! shorten the period). `--grace 0` deletes at once.
//!
//! # Why no lock is needed
//! `chute sink` reuses chunks the remote already holds: from its parent snapshot and
//! from its chunk index, which it syncs at start from the snapshots committed then
//! (and clears if a snapshot it knew is gone). So a sink refers only to blobs that
//! some snapshot referenced *when the sink started*. A blob that is unreferenced now
//! can be referenced again only by a sink that started before it became
//! unreferenced, hence before it was marked. Such a sink commits within the grace
//! period if it runs for less than the grace period; then the run that would delete
//! the blob (at least `grace` after the mark, reading the committed snapshots after
//! taking its clock) sees the new snapshot, finds the blob referenced and keeps it,
//! and clears the mark. Forgotten blobs can never be committed again, so they do not
//! change under prune; a pending blob is re-checked just before it is deleted. The
//! cost of this is the grace period: space comes back one period after the forget.
//! With `--grace 0` a sink that runs at the same time as prune may commit a snapshot
//! that refers to a blob prune just deleted; use it only when no sink runs.
//!
//! # Crash safety
//! The marks are written (atomically) before anything is deleted. Deleting a blob is
//! one [`Remote::delete`], which removes its index files first, so a prune killed at
//! any point leaves whole snapshots or none; a directory left half-deleted has no
//! index, is listed as an orphan, and the next prune deletes it. The node's chunk
//! index never points into a deleted blob: only blobs no committed snapshot
//! references are deleted, and a sink whose index knew a forgotten snapshot finds
//! it gone from the list and rebuilds the index from the remaining manifests.
//!
//! # Not done: repacking
//! A forgotten snapshot's blob that a remaining snapshot still uses in part is kept
//! whole; the unused bytes in it (reported as "reclaimable by repacking") stay until
//! every snapshot using it is forgotten too. Copying the live chunks out into a new
//! blob would need a rewrite of the referring manifests and is not implemented.

use crate::cli::Settings;
use crate::crypto::Keys;
use crate::remote::{ErrorKind, Remote};
use crate::sink::human_bytes;
use crate::snapshot;
use crate::store::{BlobState, Uncommitted};
use crate::{Error, Result};
use argh::FromArgs;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Delete data no remaining snapshot references (after a grace period).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "prune")]
pub struct PruneCmd {
    /// how long a blob must stay unreferenced before it is deleted: 0, 30m, 24h (the
    /// default), 7d; 0 is only safe when no sink runs meanwhile
    #[argh(option)]
    pub grace: Option<String>,
    /// print what would be marked and deleted, change nothing
    #[argh(switch)]
    pub dry_run: bool,
    /// a store directory or http://HOST:PORT (CHUTE_REMOTE)
    #[argh(option)]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option)]
    pub key_file: Option<PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option)]
    pub node: Option<String>,
    /// proves the peer's admin key, which an --append-only peer asks of every
    /// delete; keep it off the nightly cron job
    #[argh(option)]
    pub admin_key_file: Option<std::path::PathBuf>,
}

/// Default grace period.
pub const DEFAULT_GRACE: u64 = 24 * 3600;

/// `0`, or a number with `s`, `m`, `h` or `d` → seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// What to do.
pub struct Options {
    pub grace: u64,
    pub dry_run: bool,
    /// The state file of marks.
    pub marks: PathBuf,
    /// Unix seconds now (injectable for tests).
    pub now: i64,
}

/// One candidate and what became of it.
#[derive(Debug)]
pub struct Outcome {
    pub blob: Uncommitted,
    pub fate: Fate,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// Deleted (or, in a dry run, would be).
    Deleted,
    /// Referenced by `by` committed snapshots, which use `live` of its bytes.
    Referenced { by: usize, live: u64 },
    /// Unreferenced since `since`; deletable from `due` on.
    Marked { since: i64, due: i64 },
    /// Was committed meanwhile (a resumed upload finished): left alone.
    Committed,
}

/// What a prune did.
#[derive(Debug, Default)]
pub struct Report {
    pub snapshots: usize,
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn reclaimed(&self) -> u64 {
        self.sum(|f| matches!(f, Fate::Deleted))
    }

    fn sum(&self, pick: impl Fn(&Fate) -> bool) -> u64 {
        self.outcomes
            .iter()
            .filter(|o| pick(&o.fate))
            .map(|o| o.blob.bytes)
            .sum()
    }

    /// Bytes of kept blobs that no snapshot uses: what repacking would return.
    pub fn repackable(&self) -> u64 {
        self.outcomes
            .iter()
            .map(|o| match o.fate {
                Fate::Referenced { live, .. } => o.blob.bytes.saturating_sub(live),
                _ => 0,
            })
            .sum()
    }
}

/// Dies like `kill -9` at a named point when `CHUTE_FAILPOINT` names it (tests).
fn failpoint(name: &str) {
    if std::env::var_os("CHUTE_FAILPOINT").is_some_and(|v| v == name) {
        std::process::abort();
    }
}

const MARKS_HEADER: &str = "chute-prune-marks 1";

/// Reads the marks: blob path → Unix seconds first found unreferenced. A missing
/// or unreadable file is no marks (deletion is then only delayed).
fn load_marks(path: &Path) -> HashMap<String, i64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some(MARKS_HEADER) {
        return HashMap::new();
    }
    lines
        .filter_map(|l| {
            let (t, p) = l.split_once(' ')?;
            Some((p.to_string(), t.parse().ok()?))
        })
        .collect()
}

fn save_marks(path: &Path, marks: &HashMap<String, i64>) -> Result<()> {
    let mut sorted: Vec<(&String, &i64)> = marks.iter().collect();
    sorted.sort();
    let mut text = format!("{MARKS_HEADER}\n");
    for (p, t) in sorted {
        text.push_str(&format!("{t} {p}\n"));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Io(format!("cannot create {}", dir.display()), e))?;
    }
    crate::store::write_atomic(path, text.as_bytes()).map_err(Error::from)
}

/// Sorts and merges ranges, so the same chunk used by many snapshots counts once.
fn compact(ranges: &mut Vec<(u64, u32)>) {
    ranges.sort_unstable();
    ranges.dedup_by_key(|r| r.0);
}

/// Runs a prune of one node.
pub fn run(
    keys: &Keys,
    remote: &dyn Remote,
    domain: &str,
    node: &str,
    opts: &Options,
) -> Result<Report> {
    // The clock first, the lists after: a snapshot committed before `now` is seen.
    let now = opts.now;
    // Only this node's own blobs, whatever a remote answers.
    let candidates: Vec<_> = remote
        .list_uncommitted(domain, node)?
        .into_iter()
        .filter(|c| c.id.domain == domain && c.id.node == node)
        .collect();
    let listed = remote.list(domain, node)?;
    let snaps = snapshot::all(keys, remote, domain, node)?;
    // By identity, not by count: a snapshot committed between the two listings
    // must not hide one that did not open.
    let unopened = listed
        .iter()
        .filter(|b| !snaps.iter().any(|s| &s.blob == *b))
        .count();
    if unopened > 0 {
        return Err(Error::Failed(format!(
            "{unopened} of the {} snapshots of {domain}/{node} do not open with this key (or changed meanwhile), so what they use is unknown; nothing was deleted",
            listed.len()
        )));
    }
    let at: HashMap<String, usize> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.path(), i))
        .collect();
    let mut users = vec![0usize; candidates.len()];
    let mut live: Vec<Vec<(u64, u32)>> = vec![Vec::new(); candidates.len()];
    for snap in &snaps {
        let m = crate::restore::manifest(keys, remote, snap).map_err(|e| {
            Error::Damaged(format!(
                "{e}; prune cannot know what it uses, so nothing was deleted"
            ))
        })?;
        let table: Vec<Option<usize>> = m.blobs.iter().map(|b| at.get(b).copied()).collect();
        if table.iter().all(Option::is_none) {
            continue;
        }
        let mut grown = Vec::new();
        for c in m.entries.iter().flat_map(|e| e.chunks.iter()) {
            if let Some(i) = table[c.blob as usize] {
                live[i].push((c.offset, c.len));
                grown.push(i);
            }
        }
        grown.sort_unstable();
        grown.dedup();
        for i in grown {
            users[i] += 1;
            compact(&mut live[i]);
        }
    }

    let old = load_marks(&opts.marks);
    let mut marks = HashMap::new();
    let mut report = Report {
        snapshots: snaps.len(),
        outcomes: Vec::new(),
    };
    let mut doomed = Vec::new();
    for (i, blob) in candidates.into_iter().enumerate() {
        let path = blob.id.path();
        let fate = if users[i] > 0 {
            Fate::Referenced {
                by: users[i],
                live: live[i].iter().map(|r| u64::from(r.1)).sum(),
            }
        } else {
            let since = old.get(&path).copied().unwrap_or(now).min(now);
            marks.insert(path, since);
            let grace = opts.grace as i64;
            // Idle is measured by the store: since the forget for a forgotten blob,
            // since the last write for a pending one. Requiring it too means a
            // client clock that is off (a Pi before NTP) cannot shorten the grace.
            let idle_enough = blob.idle >= opts.grace;
            if now - since >= grace && idle_enough {
                doomed.push(report.outcomes.len());
                Fate::Deleted
            } else {
                let due = (since + grace).max(now + grace - blob.idle.min(opts.grace) as i64);
                Fate::Marked { since, due }
            }
        };
        report.outcomes.push(Outcome { blob, fate });
    }
    if opts.dry_run {
        return Ok(report);
    }
    save_marks(&opts.marks, &marks)?;
    failpoint("prune-marked");
    for (n, &i) in doomed.iter().enumerate() {
        let o = &mut report.outcomes[i];
        if o.blob.state != BlobState::Forgotten {
            // A pending upload may have been resumed and committed since the listing.
            match remote.index(&o.blob.id) {
                Ok(_) => {
                    o.fate = Fate::Committed;
                    marks.remove(&o.blob.id.path());
                    continue;
                }
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        match remote.delete(&o.blob.id) {
            Ok(()) => {}
            // Another prune got there first.
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        marks.remove(&o.blob.id.path());
        if n == 0 {
            failpoint("prune-deleted-one");
        }
    }
    save_marks(&opts.marks, &marks)?;
    Ok(report)
}

fn what(b: &Uncommitted) -> String {
    let kind = match b.state {
        BlobState::Forgotten => format!("forgotten snapshot {}", snapshot::short_id(&b.id)),
        BlobState::Pending => "upload never committed".into(),
        BlobState::Orphan => "left by an interrupted delete".into(),
    };
    format!("{} ({kind}, {})", b.id.path(), human_bytes(b.bytes))
}

/// `chute prune` from the command line.
pub fn cmd(s: &Settings, c: PruneCmd) -> Result<()> {
    let grace = match c.grace.as_deref() {
        None => DEFAULT_GRACE,
        Some(g) => parse_duration(g).ok_or_else(|| {
            Error::Usage(format!(
                "--grace {g:?}: expected 0 or a number with s, m, h or d (e.g. 24h)"
            ))
        })?,
    };
    let node = crate::cli::open_node(s, c.key_file, c.remote, c.domain, c.node, c.admin_key_file)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let opts = Options {
        grace,
        dry_run: c.dry_run,
        marks: node.cache_dir.join("prune-marks"),
        now,
    };
    let r = run(
        &node.keys,
        node.remote.as_ref(),
        &node.domain,
        &node.node,
        &opts,
    )?;
    let would = if c.dry_run { "would delete" } else { "deleted" };
    let mut deleted = 0;
    for o in &r.outcomes {
        match &o.fate {
            Fate::Deleted => {
                deleted += 1;
                println!("{would} {}", what(&o.blob));
            }
            Fate::Referenced { by, live } => println!(
                "kept {}: still referenced by {by} snapshot{}, which use {} of it; {} reclaimable only by repacking, which chute does not do",
                what(&o.blob),
                if *by == 1 { "" } else { "s" },
                human_bytes(*live),
                human_bytes(o.blob.bytes.saturating_sub(*live))
            ),
            Fate::Marked { since, due } => println!(
                "marked {}: unreferenced since {} UTC; a prune from {} UTC deletes it",
                what(&o.blob),
                snapshot::display_time(*since),
                snapshot::display_time(*due)
            ),
            Fate::Committed => println!("kept {}: it was committed meanwhile", o.blob.id.path()),
        }
    }
    println!(
        "{} {} in {} blob{}; {} snapshot{} in use; {} kept in forgotten blobs still in use could be reclaimed only by repacking (not implemented)",
        if c.dry_run {
            "would reclaim"
        } else {
            "reclaimed"
        },
        human_bytes(r.reclaimed()),
        deleted,
        if deleted == 1 { "" } else { "s" },
        r.snapshots,
        if r.snapshots == 1 { "" } else { "s" },
        human_bytes(r.repackable())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("24h"), Some(86_400));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("5s"), Some(5));
        for bad in ["", "h", "5", "5w", "-1h", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn marks_round_trip() {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let dir = std::env::temp_dir().join(format!("chute-marks-{}", crate::hex::encode(&b)));
        let path = dir.join("prune-marks");
        assert!(load_marks(&path).is_empty());
        let marks: HashMap<String, i64> = [("d/n/m/t1".to_string(), 5), ("d/n/m/t2".into(), 7)]
            .into_iter()
            .collect();
        save_marks(&path, &marks).unwrap();
        assert_eq!(load_marks(&path), marks);
        std::fs::write(&path, "garbage\n1 x\n").unwrap();
        assert!(load_marks(&path).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ranges_count_once() {
        let mut r = vec![(10, 5), (0, 5), (10, 5), (20, 3)];
        compact(&mut r);
        assert_eq!(r, vec![(0, 5), (10, 5), (20, 3)]);
    }
}
