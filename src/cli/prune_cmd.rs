//! `chute prune` from the command line: settings in, the report printed.
//!
//! `--json` prints one object: `{"dry_run", "snapshots", "blobs", "pack",
//! "packed_bytes", "reclaimed_bytes", "deleted_blobs", "deleted_bytes",
//! "trimmed_bytes", "repackable_bytes", "dangling_refs"}`; `blobs` lists every
//! blob looked at as `{"blob", "fate", "repacked", "bytes", "live_bytes",
//! "trimmed_bytes", "due"}`, `fate` one of `"deleted"` (in a dry run: would be),
//! `"kept"` (snapshots use `live_bytes` of it), `"marked"` (unreferenced; `due`
//! is when a prune may delete it, else null) or `"committed"` (meanwhile);
//! `pack` is the blob path of the pack written, else null. `--quiet` prints
//! nothing but errors and warnings of damage.

use super::args::*;
use super::{Settings, Show, open_node};
use crate::prune::*;
use crate::snapshot;
use crate::units::{human_bytes, parse_duration};
use crate::{Error, Result};

/// `chute prune` from the command line.
pub(super) fn cmd(s: &Settings, c: PruneCmd) -> Result<()> {
    let show = Show::of(c.json, c.quiet, false)?;
    // The report for people, unless --json or --quiet.
    macro_rules! say {
        ($($t:tt)*) => {
            if show.text() {
                println!($($t)*)
            }
        };
    }
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
        progress: show.progress(),
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
                say!("{repacked}{would} {what}");
            }
            Fate::Referenced { by, live } if o.repacked => {
                say!(
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
                say!(
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
            Fate::Marked { since, due } => say!(
                "{repacked}marked {what}: unreferenced since {} UTC; a prune from {} UTC deletes it",
                snapshot::display_time(*since),
                snapshot::display_time(*due)
            ),
            Fate::Committed => say!("kept {}: it was committed meanwhile", o.blob.id.path()),
        }
    }
    if let Some((pack, bytes)) = &r.pack {
        match pack {
            Some(p) => say!(
                "repacked {} from {moved} blob{} into pack {}",
                human_bytes(*bytes),
                if moved == 1 { "" } else { "s" },
                p.path()
            ),
            None => say!(
                "would repack {} from {moved} blob{} into a new pack",
                human_bytes(*bytes),
                if moved == 1 { "" } else { "s" }
            ),
        }
    }
    if let Some(t) = r.temps.filter(|t| t.any()) {
        say!("temporary files: {}", t.describe());
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
    show.json(&PruneJson {
        dry_run: c.dry_run,
        snapshots: r.snapshots as u64,
        blobs: r.outcomes.iter().map(blob_json).collect(),
        pack: r.pack.as_ref().and_then(|p| p.0.as_ref()).map(|b| b.path()),
        packed_bytes: copied,
        reclaimed_bytes: r.reclaimed().saturating_sub(copied),
        deleted_blobs: deleted,
        deleted_bytes: r.reclaimed() - trimmed,
        trimmed_bytes: trimmed,
        repackable_bytes: r.repackable(),
        dangling_refs: r.dangling,
    });
    say!(
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

/// `chute prune --json`'s object (see the module doc).
#[derive(miniserde::Serialize)]
struct PruneJson {
    dry_run: bool,
    snapshots: u64,
    blobs: Vec<BlobJson>,
    pack: Option<String>,
    packed_bytes: u64,
    reclaimed_bytes: u64,
    deleted_blobs: u64,
    deleted_bytes: u64,
    trimmed_bytes: u64,
    repackable_bytes: u64,
    dangling_refs: u64,
}

#[derive(miniserde::Serialize)]
struct BlobJson {
    blob: String,
    fate: &'static str,
    repacked: bool,
    bytes: u64,
    live_bytes: u64,
    trimmed_bytes: u64,
    due: Option<String>,
}

fn blob_json(o: &Outcome) -> BlobJson {
    let (fate, live, due) = match &o.fate {
        Fate::Deleted => ("deleted", 0, None),
        Fate::Referenced { live, .. } => ("kept", *live, None),
        Fate::Marked { due, .. } => ("marked", 0, Some(snapshot::rfc3339(*due))),
        Fate::Committed => ("committed", 0, None),
    };
    BlobJson {
        blob: o.blob.id.path(),
        fate,
        repacked: o.repacked,
        bytes: o.blob.bytes,
        live_bytes: live,
        trimmed_bytes: o.trimmed,
        due,
    }
}
