//! `chute verify` from the command line: settings in, the report printed.

use super::args::*;
use super::{NodeContext, Settings, open_node};
use crate::blob::BlobId;
use crate::runlog;
use crate::units::human_bytes;
use crate::verify::{Mode, run};
use crate::{Error, Result, snapshot};

/// `chute verify` from the command line.
pub(super) fn cmd(s: &Settings, c: VerifyCmd) -> Result<()> {
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
    let outcome = verify_opened(&node, &c, mode, threads);
    let record = runlog::Record::ended(&what, started, outcome.as_ref().map(String::as_str));
    runlog::save(&node.cache_dir, runlog::VERIFY, &record);
    outcome.map(drop)
}

/// Runs the verify `c` asks for on the opened node and prints its report;
/// returns its summary line.
fn verify_opened(node: &NodeContext, c: &VerifyCmd, mode: Mode, threads: usize) -> Result<String> {
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
    let show = crate::progress::Show::Terminal;
    let r = run(
        keys, remote, &snaps, &broken, mode, threads, &mut spent, show,
    )?;
    for note in &r.notes {
        eprintln!("chute verify: {note}");
    }
    for line in &r.damage {
        println!("damaged: {line}");
    }
    for (path, ids) in &r.files {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        println!(
            "damaged file: {} (snapshot{} {})",
            String::from_utf8_lossy(path),
            if ids.len() == 1 { "" } else { "s" },
            ids.join(", ")
        );
    }
    if r.files_more > 0 {
        println!(
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
        let summary = format!(
            "verified {snaps_word}: {checked} in {:.1} s: all intact",
            started.elapsed().as_secs_f64()
        );
        println!("{summary}");
        return Ok(summary);
    }
    println!("checked {snaps_word}: {checked}");
    if !r.wrong_content.is_empty() {
        let n = r.wrong_content.len();
        let ids: Vec<_> = r.wrong_content.iter().cloned().collect();
        if let Err(e) = crate::cache::record_damaged(&node.cache_dir, &ids) {
            eprintln!("chute verify: warning: cannot record the damaged chunks: {e}");
        }
        println!(
            "{n} chunk{} opened but {} other bytes than {} id{} name{} (sealed by an older chute while a file changed): the files above restore wrong from the snapshots named; the next sink stores this content afresh, so snapshots from then on are whole",
            if n == 1 { "" } else { "s" },
            if n == 1 { "holds" } else { "hold" },
            if n == 1 { "its" } else { "their" },
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
        );
    }
    let files = r.files.len() as u64 + r.files_more;
    Err(Error::Damaged(format!(
        "{files} damaged file{} and {} damaged object{} (see above)",
        if files == 1 { "" } else { "s" },
        r.damage.len(),
        if r.damage.len() == 1 { "" } else { "s" },
    )))
}
