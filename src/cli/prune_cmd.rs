//! `chute prune` from the command line: settings in, the report printed.

use super::args::*;
use super::{Settings, open_node};
use crate::prune::*;
use crate::snapshot;
use crate::units::{human_bytes, parse_duration};
use crate::{Error, Result};

/// `chute prune` from the command line.
pub(super) fn cmd(s: &Settings, c: PruneCmd) -> Result<()> {
    let grace = match c.grace.as_deref() {
        None => DEFAULT_GRACE,
        Some(g) => parse_duration(g).ok_or_else(|| {
            Error::Usage(format!(
                "--grace {g:?}: expected 0 or a number with s, m, h or d (e.g. 24h)"
            ))
        })?,
    };
    let repack = match c.repack_threshold.as_deref() {
        None => DEFAULT_REPACK,
        Some(p) => crate::units::parse_percent(p)
            .map_err(|_| {
                Error::Usage(format!(
                    "--repack-threshold {p:?}: expected a percentage from 0% to 100%"
                ))
            })
            // 100%: only a wholly unused blob, which is deleted, not repacked.
            .map(|f| if f >= 1.0 { f64::INFINITY } else { f })?,
    };
    let node = open_node(s, c.key_file, c.remote, c.domain, c.node, c.admin_key_file)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let opts = Options {
        grace,
        dry_run: c.dry_run,
        marks: node.cache_dir.join("prune-marks"),
        now,
        repack,
        chain: Some(node.cache_dir.clone()),
        accept_rollback: c.accept_rollback,
        progress: crate::progress::Show::Terminal,
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
    let moved = r.outcomes.iter().filter(|o| o.repacked).count();
    for o in &r.outcomes {
        let what = what(&o.blob);
        let repacked = match (o.repacked, c.dry_run) {
            (false, _) => "",
            (true, false) => "repacked, then ",
            (true, true) => "would repack, then ",
        };
        match &o.fate {
            Fate::Deleted => {
                deleted += 1;
                println!("{repacked}{would} {what}");
            }
            Fate::Referenced { by, live } if o.repacked => {
                println!(
                    "would repack {what}: the {} that {by} snapshot{} use go to a new pack, and the {} unused go after the grace period",
                    human_bytes(*live),
                    if *by == 1 { "" } else { "s" },
                    human_bytes(o.blob.bytes.saturating_sub(*live))
                );
            }
            Fate::Referenced { by, live } => {
                let mut trim = String::new();
                if o.trimmed > 0 {
                    let verb = if c.dry_run { "would trim" } else { "trimmed" };
                    trim += &format!(
                        "; {verb} {} of windows nothing uses",
                        human_bytes(o.trimmed)
                    );
                }
                if o.trim_later > 0 {
                    trim += &format!(
                        "; {} of windows nothing uses are marked, trimmed after the grace period",
                        human_bytes(o.trim_later)
                    );
                }
                println!(
                    "kept {what}: still referenced by {by} snapshot{}, which use {} of it ({} unused, under the repack threshold){trim}",
                    if *by == 1 { "" } else { "s" },
                    human_bytes(*live),
                    human_bytes(
                        o.blob
                            .bytes
                            .saturating_sub(*live + o.trimmed + o.trim_later)
                    )
                )
            }
            Fate::Marked { since, due } => println!(
                "{repacked}marked {what}: unreferenced since {} UTC; a prune from {} UTC deletes it",
                snapshot::display_time(*since),
                snapshot::display_time(*due)
            ),
            Fate::Committed => println!("kept {}: it was committed meanwhile", o.blob.id.path()),
        }
    }
    if let Some((pack, bytes)) = &r.pack {
        match pack {
            Some(p) => println!(
                "repacked {} from {moved} blob{} into pack {}",
                human_bytes(*bytes),
                if moved == 1 { "" } else { "s" },
                p.path()
            ),
            None => println!(
                "would repack {} from {moved} blob{} into a new pack",
                human_bytes(*bytes),
                if moved == 1 { "" } else { "s" }
            ),
        }
    }
    if let Some(t) = r.temps.filter(|t| t.any()) {
        println!("temporary files: {}", t.describe());
    }
    if let Some(why) = &r.repack_failed {
        eprintln!("chute: warning: nothing was repacked: {why}");
    }
    if r.dangling > 0 {
        eprintln!(
            "chute: warning: {} chunk reference{} of committed snapshots point into blobs that are gone; run `chute verify --all`",
            r.dangling,
            if r.dangling == 1 { "" } else { "s" }
        );
    }
    let copied = r.pack.as_ref().map_or(0, |p| p.1);
    let trimmed: u64 = r.outcomes.iter().map(|o| o.trimmed).sum();
    println!(
        "{} {} (deleted: {deleted} blob{}, {}; trimmed: {}; copied into a pack: {}); {} snapshot{} in use; {} unused in blobs still in use, under the repack threshold",
        if c.dry_run {
            "would reclaim"
        } else {
            "reclaimed"
        },
        human_bytes(r.reclaimed().saturating_sub(copied)),
        if deleted == 1 { "" } else { "s" },
        human_bytes(r.reclaimed() - trimmed),
        human_bytes(trimmed),
        human_bytes(copied),
        r.snapshots,
        if r.snapshots == 1 { "" } else { "s" },
        human_bytes(r.repackable())
    );
    Ok(())
}
