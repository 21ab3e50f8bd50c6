//! `chute verify` from the command line: settings in, the report printed.
//!
//! `--json` prints one object, intact or not (damage also exits 3):
//! `{"snapshots", "mode", "sample_percent", "blobs", "windows", "window_bytes",
//! "challenged_windows", "chunks_read", "bytes_read", "seconds", "intact",
//! "damaged", "damaged_files", "damaged_files_more", "wrong_content_chunks"}`.
//! `mode` is `"hashes"` (the default check) or `"read"` (`--read-data`,
//! `--read-data-subset`: `sample_percent` of the chunks; 0 for hashes);
//! `damaged` lists the damaged objects as the text report names them;
//! `damaged_files` is `[{"path", "snapshots": [full ids]}]`, at most
//! [`crate::verify::MAX_NAMED`], `damaged_files_more` the count beyond.
//! `--quiet` prints nothing but the failure.

use super::args::*;
use super::{NodeContext, Settings, Show, open_node};
use crate::blob::BlobId;
use crate::runlog;
use crate::units::human_bytes;
use crate::verify::{Mode, run};
use crate::{Error, Result, snapshot};
use std::fmt::Write;

/// `chute verify` from the command line.
pub(super) fn cmd(s: &Settings, c: VerifyCmd) -> Result<()> {
    let show = Show::of(c.json, c.quiet, false)?;
    if c.all && c.snapshot.is_some() {
        return Err(Error::Usage("give a SNAPSHOT or --all, not both".into()));
    }
    let mode = match (&c.read_data_subset, c.read_data) {
        (Some(_), true) => {
            return Err(Error::Usage(
                "give --read-data or --read-data-subset, not both".into(),
            ));
        }
        (Some(p), false) => Mode::Read(
            crate::units::parse_percent(p)
                .map_err(|e| Error::Usage(format!("--read-data-subset {p:?}: {e}")))?,
        ),
        (None, true) => Mode::Read(1.0),
        (None, false) => Mode::Hashes,
    };
    let threads = c
        .threads
        .filter(|&t| t > 0)
        .unwrap_or_else(crate::sys::cores);
    let node = open_node(
        s,
        c.key_file.clone(),
        c.remote.clone(),
        c.domain.clone(),
        c.node.clone(),
        None,
    )?;
    let mut what = String::from("verify");
    match (&c.snapshot, c.all) {
        (Some(snap), _) => what = format!("{what} {snap}"),
        (None, true) => what.push_str(" --all"),
        (None, false) => {}
    }
    match (&c.read_data_subset, c.read_data) {
        (Some(p), _) => what = format!("{what} --read-data-subset {p}"),
        (None, true) => what.push_str(" --read-data"),
        (None, false) => {}
    }
    let started = crate::snapshot::unix_now();
    let outcome = verify_opened(&node, &c, mode, threads, show);
    let record = runlog::Record::ended(&what, started, outcome.as_ref().map(String::as_str));
    runlog::save(&node.cache_dir, runlog::VERIFY, &record);
    outcome.map(drop)
}

/// `chute verify --json`'s object (see the module doc).
#[derive(miniserde::Serialize)]
struct VerifyJson {
    snapshots: u64,
    mode: &'static str,
    sample_percent: f64,
    blobs: u64,
    windows: u64,
    window_bytes: u64,
    challenged_windows: u64,
    chunks_read: u64,
    bytes_read: u64,
    seconds: f64,
    intact: bool,
    damaged: Vec<String>,
    damaged_files: Vec<DamagedFile>,
    damaged_files_more: u64,
    wrong_content_chunks: u64,
}

#[derive(miniserde::Serialize)]
struct DamagedFile {
    path: String,
    snapshots: Vec<String>,
}

/// Runs the verify `c` asks for on the opened node and prints its report;
/// returns its summary line.
fn verify_opened(
    node: &NodeContext,
    c: &VerifyCmd,
    mode: Mode,
    threads: usize,
    show: Show,
) -> Result<String> {
    let (keys, remote) = (&node.keys, node.remote.as_ref());
    let started = std::time::Instant::now();
    let guard = |snaps: &[snapshot::Snapshot]| {
        crate::chain::guard(
            keys,
            remote,
            &node.domain,
            &node.node,
            &node.cache_dir,
            snaps,
            "verify",
            crate::chain::Strict::Fail,
            c.accept_rollback,
        )
    };
    let (snaps, broken) = if c.all {
        // One listing: a snapshot forgotten meanwhile is simply not in it.
        let l = snapshot::listing(keys, remote, &node.domain, &node.node)?;
        guard(&l.snapshots)?;
        let set = crate::sink::normalize_roots(&c.path)?;
        let snaps = snapshot::with_paths(l.snapshots, &set)?;
        let broken: Vec<BlobId> = l.failed.into_iter().map(|(b, _)| b).collect();
        (snaps, broken)
    } else {
        let name = c.snapshot.as_deref().unwrap_or("latest");
        let all = snapshot::all(keys, remote, &node.domain, &node.node)?;
        guard(&all)?;
        let all = match name {
            "latest" => snapshot::with_paths(all, &crate::sink::normalize_roots(&c.path)?)?,
            _ => all,
        };
        let snap = snapshot::find_in(all, remote, &node.domain, &node.node, name, &[])?;
        (vec![snap], Vec::new())
    };
    let mut spent = crate::spent::Spent::load(&node.cache_dir);
    let r = run(
        keys,
        remote,
        &snaps,
        &broken,
        mode,
        threads,
        &mut spent,
        show.progress(),
    )?;
    if show != Show::Quiet {
        for note in &r.notes {
            eprintln!("chute verify: {note}");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    show.json(&VerifyJson {
        snapshots: r.snapshots as u64,
        mode: if matches!(mode, Mode::Hashes) {
            "hashes"
        } else {
            "read"
        },
        sample_percent: match mode {
            Mode::Hashes => 0.0,
            Mode::Read(f) => f * 100.0,
        },
        blobs: r.blobs as u64,
        windows: r.windows,
        window_bytes: r.window_bytes,
        challenged_windows: r.challenged,
        chunks_read: r.chunks_read,
        bytes_read: r.bytes_read,
        seconds,
        intact: r.intact(),
        damaged: r.damage.clone(),
        damaged_files: (r.files.iter())
            .map(|(path, ids)| DamagedFile {
                path: String::from_utf8_lossy(path).into_owned(),
                snapshots: (ids.iter())
                    .map(|short| {
                        let full = snaps.iter().find(|s| s.short_id() == *short);
                        full.map_or_else(|| short.clone(), |s| s.id())
                    })
                    .collect(),
            })
            .collect(),
        damaged_files_more: r.files_more,
        wrong_content_chunks: r.wrong_content.len() as u64,
    });
    // The report for people, printed at the end unless --json or --quiet.
    let mut out = String::new();
    for line in &r.damage {
        let _ = writeln!(out, "damaged: {line}");
    }
    for (path, ids) in &r.files {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "damaged file: {} (snapshot{} {})",
            String::from_utf8_lossy(path),
            if ids.len() == 1 { "" } else { "s" },
            ids.join(", ")
        );
    }
    if r.files_more > 0 {
        let _ = writeln!(
            out,
            "damaged files: {} more, not named (the list stops at {} files; a file is counted once per snapshot it is damaged in)",
            r.files_more,
            crate::verify::MAX_NAMED
        );
    }
    // Only chunks in blobs whose index is gone are read by the hash check.
    let downloaded = match r.chunks_read {
        0 => "no file data downloaded".to_string(),
        n => format!(
            "{n} chunks ({}) downloaded and authenticated where a blob's index is gone",
            human_bytes(r.bytes_read)
        ),
    };
    let checked = match mode {
        Mode::Hashes if r.challenged == r.windows => format!(
            "{} windows ({}) in {} blobs by storage challenges (the store read them), {downloaded}",
            r.windows,
            human_bytes(r.window_bytes),
            r.blobs
        ),
        Mode::Hashes => format!(
            "{} windows ({}) in {} blobs, {} by storage challenges (the store read them) and {} by the store's SHA-256 only, {downloaded}",
            r.windows,
            human_bytes(r.window_bytes),
            r.blobs,
            r.challenged,
            r.windows - r.challenged
        ),
        Mode::Read(f) => format!(
            "{} chunks ({}{}) in {} blobs downloaded and authenticated",
            r.chunks_read,
            human_bytes(r.bytes_read),
            if f < 1.0 {
                format!(", a random {}% sample", f * 100.0)
            } else {
                String::new()
            },
            r.blobs
        ),
    };
    let n = r.snapshots;
    let snaps_word = format!("{n} snapshot{}", if n == 1 { "" } else { "s" });
    if r.intact() {
        let summary = format!("verified {snaps_word}: {checked} in {seconds:.1} s: all intact");
        if show.text() {
            println!("{summary}");
        }
        return Ok(summary);
    }
    let _ = writeln!(out, "checked {snaps_word}: {checked}");
    if !r.wrong_content.is_empty() {
        let n = r.wrong_content.len();
        let ids: Vec<_> = r.wrong_content.iter().cloned().collect();
        if let Err(e) = crate::cache::record_damaged(&node.cache_dir, &ids) {
            eprintln!("chute verify: warning: cannot record the damaged chunks: {e}");
        }
        let _ = writeln!(
            out,
            "{n} chunk{} opened but {} other bytes than {} id{} name{} (sealed by an older chute while a file changed): the files above restore wrong from the snapshots named; the next sink stores this content afresh, so snapshots from then on are whole",
            if n == 1 { "" } else { "s" },
            if n == 1 { "holds" } else { "hold" },
            if n == 1 { "its" } else { "their" },
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
        );
    }
    if show.text() {
        print!("{out}");
    }
    let files = r.files.len() as u64 + r.files_more;
    Err(Error::Damaged(format!(
        "{files} damaged file{} and {} damaged object{} (see above)",
        if files == 1 { "" } else { "s" },
        r.damage.len(),
        if r.damage.len() == 1 { "" } else { "s" },
    )))
}
