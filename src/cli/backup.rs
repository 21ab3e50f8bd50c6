//! `chute sink`, `list` and `restore` from the command line: settings in, one
//! summary out.
//!
//! `--json` (see [`super::Show`] for the rules all commands share) prints one
//! object, also when the command then fails (a sink missing paths, a restore with
//! damaged manifest parts: the exit status and stderr say so):
//!
//! - sink: `{"id", "time", "blob", "files", "unchanged_files", "changed_files",
//!   "dirs", "symlinks", "bytes", "new_bytes", "new_chunks", "stored_bytes",
//!   "sent_bytes", "resumed_bytes", "seconds", "remote", "missing", "skipped"}`:
//!   `stored_bytes` is the data the store already held, `changed_files` the count
//!   of files that changed while read, `missing` the PATHs given that could not
//!   be read, `skipped` how many paths below them could not be; `seconds` is a
//!   number with a fraction.
//! - restore: `{"id", "time", "files", "dirs", "symlinks", "bytes",
//!   "already_restored", "lost_entries", "seconds", "to"}`: `to` is null for the
//!   original paths.
//! - list: an array of `{"id", "time", "timestamp", "host", "paths", "files",
//!   "dirs", "bytes", "blob", "seq", "tags"}`, oldest first; `timestamp` is the
//!   store's name for the snapshot.
//!
//! `sink --quiet` turns the progress display off (as `--json` does unless
//! `--progress` asks for its lines) and leaves out the notes on paths left out on
//! purpose, `restore --quiet` the note on temporaries it removed (warnings of
//! the chain check stay: they are about the store's honesty); `sink -v` prints each file it reads (new or changed), `restore -v`
//! each file and symlink it writes, a path a line.

use super::args::*;
use super::*;
use crate::runlog;

/// What to back up: the command line's PATHs and `--files-from` files; only when
/// it names none, `CHUTE_PATHS_FILE`'s paths and `CHUTE_PATHS`, both.
fn sink_roots(s: &Settings, paths: Vec<PathBuf>, files_from: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut roots = paths;
    for f in files_from {
        roots.extend(list_file(f, "--files-from")?.into_iter().map(PathBuf::from));
    }
    if roots.is_empty() && files_from.is_empty() {
        if let Some(f) = s.get(None, "CHUTE_PATHS_FILE") {
            let lines = list_file(Path::new(&f), "CHUTE_PATHS_FILE")?;
            roots.extend(lines.into_iter().map(PathBuf::from));
        }
        roots.extend(s.list("CHUTE_PATHS")?.into_iter().map(PathBuf::from));
    }
    Ok(roots)
}

/// The lines of a paths or patterns file: every byte but the newline counts (a
/// path may hold spaces); empty lines and lines starting with `#` are skipped.
/// A file that cannot be read is a usage error.
fn list_file(path: &Path, what: &str) -> Result<Vec<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStringExt;
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Usage(format!("cannot read {what} {}: {e}", path.display())))?;
    Ok(bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .map(|l| std::ffi::OsString::from_vec(l.to_vec()))
        .collect())
}

/// A yes/no setting (`1`, `yes`, `true`, `on` or `0`, `no`, `false`, `off`).
fn yes_no(s: &Settings, name: &str, default: bool) -> Result<bool> {
    match s.get(None, name).as_deref() {
        None => Ok(default),
        Some("1" | "yes" | "true" | "on") => Ok(true),
        Some("0" | "no" | "false" | "off") => Ok(false),
        Some(v) => Err(Error::Usage(format!(
            "{name}={v:?}: expected 1 or 0 (yes or no)"
        ))),
    }
}

/// Checks `flag`'s values: each one tag or, with `lists`, a comma-separated list
/// of tags (a filter, see [`snapshot::tags_match`]).
pub(super) fn tags(flag: &str, values: Vec<String>, lists: bool) -> Result<Vec<String>> {
    for v in &values {
        let bad = match lists {
            true => v.split(',').find_map(crate::format::check_tag),
            false => crate::format::check_tag(v),
        };
        if let Some(why) = bad {
            return Err(Error::Usage(format!("{flag} {v:?}: a tag {why}")));
        }
    }
    Ok(values)
}

/// The snapshot's tags: `--tag`s, or if none CHUTE_TAG's words; once each.
fn sink_tags(s: &Settings, flags: Vec<String>) -> Result<Vec<String>> {
    let given = if flags.is_empty() {
        tags("CHUTE_TAG", s.list("CHUTE_TAG")?, false)?
    } else {
        tags("--tag", flags, false)?
    };
    let mut out: Vec<String> = Vec::new();
    for t in given {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.len() > crate::format::MAX_TAGS {
        return Err(Error::Usage(format!(
            "{} tags given; a snapshot holds at most {}",
            out.len(),
            crate::format::MAX_TAGS
        )));
    }
    Ok(out)
}

/// `--compression`, else CHUTE_COMPRESSION, else auto.
fn sink_compression(s: &Settings, flag: Option<String>) -> Result<crate::compress::Mode> {
    let from = if flag.is_some() {
        "--compression"
    } else {
        "CHUTE_COMPRESSION"
    };
    match s.get(flag, "CHUTE_COMPRESSION") {
        None => Ok(crate::compress::Mode::Auto),
        Some(v) => crate::compress::Mode::parse(&v)
            .ok_or_else(|| Error::Usage(format!("{from} {v:?}: expected off or auto"))),
    }
}

/// `--fs-snapshot`, else CHUTE_FS_SNAPSHOT, else off.
fn sink_fs_snapshot(s: &Settings, flag: Option<String>) -> Result<crate::fssnap::Mode> {
    let from = if flag.is_some() {
        "--fs-snapshot"
    } else {
        "CHUTE_FS_SNAPSHOT"
    };
    match s.get(flag, "CHUTE_FS_SNAPSHOT") {
        None => Ok(crate::fssnap::Mode::Off),
        Some(v) => crate::fssnap::Mode::parse(&v).ok_or_else(|| {
            Error::Usage(format!(
                "{from} {v:?}: expected auto, btrfs, lvm, zfs or off"
            ))
        }),
    }
}

pub(super) fn sink_cmd(s: &Settings, c: SinkCmd) -> Result<()> {
    let show = Show::of(c.json, c.quiet, c.verbose)?;
    let compression = sink_compression(s, c.compression)?;
    let fs_snapshot = sink_fs_snapshot(s, c.fs_snapshot)?;
    let roots = sink_roots(s, c.paths, &c.files_from)?;
    let tags = sink_tags(s, c.tag)?;
    let mut excludes = c.exclude;
    excludes.extend(s.list("CHUTE_EXCLUDE")?);
    let mut exclude_files = c.exclude_file;
    if let Some(f) = s.get(None, "CHUTE_EXCLUDE_FILE") {
        exclude_files.push(PathBuf::from(f));
    }
    for f in &exclude_files {
        // Patterns are trimmed: a pattern file's trailing blanks are invisible.
        let lines = list_file(f, "--exclude-file")?;
        excludes.extend(lines.iter().filter_map(|l| {
            let l = l.to_string_lossy();
            let l = l.trim();
            (!l.is_empty()).then(|| l.to_string())
        }));
    }
    let exclude_caches = match (c.exclude_caches, c.no_exclude_caches) {
        (true, true) => {
            return Err(Error::Usage(
                "--exclude-caches and --no-exclude-caches contradict each other".into(),
            ));
        }
        (true, false) => true,
        (false, true) => false,
        (false, false) => yes_no(s, "CHUTE_EXCLUDE_CACHES", true)?,
    };
    let one_file_system = c.one_file_system || yes_no(s, "CHUTE_ONE_FILE_SYSTEM", false)?;
    let key_file = s.key_file(c.key_file.clone())?;
    let NodeContext {
        keys,
        remote,
        domain,
        node,
        cache_dir,
    } = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    // Window sizes adapt to a network link; a local store gains nothing from
    // bigger ones but memory.
    let network = remote.describe().starts_with("http://");
    let window = if network {
        remembered_window(&cache_dir)
    } else {
        crate::protocol::DEFAULT_WINDOW
    };
    let mut own = vec![(key_file, "it is the key file")];
    if let Some(root) = cache_dir.parent() {
        own.push((root.to_path_buf(), "it is this node's chute cache"));
    }
    if !network {
        own.push((
            PathBuf::from(remote.describe()),
            "it is this backup's own store",
        ));
    }
    let opts = sink::Options {
        roots,
        excludes,
        exclude_caches,
        one_file_system,
        own,
        domain,
        node,
        cache_dir,
        host: hostname(),
        threads: threads(c.threads),
        window,
        progress: match (show, c.progress) {
            (Show::Quiet, _) | (Show::Json, false) => sink::ShowProgress::Off,
            (_, true) => sink::ShowProgress::Lines,
            (_, false) => sink::ShowProgress::Terminal,
        },
        verbose: show == Show::Verbose,
        quiet: show == Show::Quiet,
        accept_rollback: c.accept_rollback,
        tags,
        compression,
        fs_snapshot,
    };
    let started = crate::snapshot::unix_now();
    let outcome = sink_opened(&keys, remote.as_ref(), &opts, network, show);
    let record = runlog::Record::ended("sink", started, outcome.as_ref().map(String::as_str));
    runlog::save(&opts.cache_dir, runlog::SINK, &record);
    outcome.map(drop)
}

/// Runs the sink `opts` describe and prints its summary; returns the summary.
fn sink_opened(
    keys: &Keys,
    remote: &dyn Remote,
    opts: &sink::Options,
    network: bool,
    show: Show,
) -> Result<String> {
    let r = sink::run(keys, remote, opts)?;
    // Size the next run's windows from how long this run's took (best effort).
    let next = sink::next_window(r.window, r.window_secs);
    if network {
        let _ = std::fs::write(opts.cache_dir.join("window"), format!("{next}\n"));
    }
    let resumed = if r.resumed > 0 {
        format!(", resumed after {}", units::human_bytes(r.resumed))
    } else {
        String::new()
    };
    let changed = if r.changed.is_empty() {
        String::new()
    } else {
        format!(", {} changed while read", r.changed.len())
    };
    let summary = format!(
        "snapshot {} saved: {} files ({} unchanged{changed}), {} dirs, {} in {:.1} s; new data {} in {} chunks, {} already stored; sent {} to {}{resumed}",
        r.short_id,
        r.files,
        r.unchanged_files,
        r.dirs,
        units::human_bytes(r.bytes),
        r.secs,
        units::human_bytes(r.new_bytes),
        r.new_chunks,
        units::human_bytes(r.unchanged_bytes + r.reused_bytes),
        units::human_bytes(r.sent),
        remote.describe()
    );
    if show.text() {
        println!("{summary}");
    }
    show.json(&SinkJson {
        id: snapshot::id(&r.blob),
        time: snapshot::timestamp_rfc3339(r.blob.rsplit('/').next().unwrap_or("")),
        blob: r.blob.clone(),
        files: r.files,
        unchanged_files: r.unchanged_files,
        changed_files: r.changed.len() as u64,
        dirs: r.dirs,
        symlinks: r.symlinks,
        bytes: r.bytes,
        new_bytes: r.new_bytes,
        new_chunks: r.new_chunks,
        stored_bytes: r.unchanged_bytes + r.reused_bytes,
        sent_bytes: r.sent,
        resumed_bytes: r.resumed,
        seconds: r.secs,
        remote: remote.describe(),
        missing: r.missing.clone(),
        skipped: r.skipped.len() as u64,
    });
    let mut missed = Vec::new();
    if !r.missing.is_empty() {
        let n = r.missing.len();
        missed.push(format!(
            "{n} path{} given {} missing or unreadable and not in it: {}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "is" } else { "are" },
            r.missing.join(", ")
        ));
    }
    if !r.skipped.is_empty() {
        missed.push(format!(
            "{} path{} could not be read and {} not in it",
            r.skipped.len(),
            if r.skipped.len() == 1 { "" } else { "s" },
            if r.skipped.len() == 1 { "is" } else { "are" }
        ));
    }
    if !r.changed.is_empty() {
        missed.push(format!(
            "{} file{} changed while being read and may mix versions",
            r.changed.len(),
            if r.changed.len() == 1 { "" } else { "s" }
        ));
    }
    if !missed.is_empty() {
        return Err(Error::Incomplete(format!(
            "snapshot {} saved, but {} (see above)",
            r.short_id,
            missed.join("; ")
        )));
    }
    Ok(summary)
}

/// `chute sink --json`'s object (see the module doc).
#[derive(miniserde::Serialize)]
struct SinkJson {
    id: String,
    time: String,
    blob: String,
    files: u64,
    unchanged_files: u64,
    changed_files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
    new_bytes: u64,
    new_chunks: u64,
    stored_bytes: u64,
    sent_bytes: u64,
    resumed_bytes: u64,
    seconds: f64,
    remote: String,
    missing: Vec<String>,
    skipped: u64,
}

/// `chute restore --json`'s object (see the module doc).
#[derive(miniserde::Serialize)]
struct RestoreJson {
    id: String,
    time: String,
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
    already_restored: u64,
    lost_entries: u64,
    seconds: f64,
    to: Option<String>,
}

/// One snapshot as `chute list --json` prints it.
#[derive(miniserde::Serialize)]
struct ListItem {
    id: String,
    time: String,
    timestamp: String,
    host: String,
    paths: Vec<String>,
    files: u64,
    dirs: u64,
    bytes: u64,
    blob: String,
    /// Place in its chain (0: outside any, see [`crate::chain`]).
    seq: u64,
    tags: Vec<String>,
}

pub(super) fn list(s: &Settings, c: ListCmd) -> Result<()> {
    let filter = tags("--tag", c.tag, true)?;
    let NodeContext {
        keys,
        remote,
        domain,
        node,
        cache_dir,
    } = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    let mut snaps = snapshot::all(&keys, remote.as_ref(), &domain, &node)?;
    crate::chain::guard(
        &keys,
        remote.as_ref(),
        &domain,
        &node,
        &cache_dir,
        &snaps,
        "list",
        crate::chain::Strict::Fail,
        c.accept_rollback,
    )?;
    let set = crate::sink::normalize_roots(&c.path)?;
    snaps.retain(|sn| snapshot::has_paths(sn, &set));
    if snaps.is_empty() && set.is_empty() {
        if let Some(h) = other_nodes_hint(remote.as_ref(), &domain, &node) {
            eprintln!("hint: {h}");
        }
    }
    snapshot::keep_tagged(&mut snaps, &filter);
    let items: Vec<ListItem> = snaps
        .iter()
        .map(|sn| ListItem {
            id: sn.id(),
            time: snapshot::rfc3339(sn.header.time),
            timestamp: sn.blob.timestamp.clone(),
            host: sn.header.host.clone(),
            paths: sn
                .header
                .roots
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect(),
            files: sn.header.files,
            dirs: sn.header.dirs,
            bytes: sn.header.bytes,
            blob: sn.blob.path(),
            seq: sn.header.seq,
            tags: sn.header.tags.clone(),
        })
        .collect();
    if c.json {
        println!("{}", miniserde::json::to_string(&items));
        return Ok(());
    }
    // A TAGS column only when a listed snapshot has tags, as wide as they are.
    let width = items.iter().map(|i| i.tags.join(",").len()).max();
    let col = |t: &[String]| match width {
        Some(w) if w > 0 => format!("{:<1$}  ", t.join(","), w.max(4)),
        _ => String::new(),
    };
    println!(
        "{:<8}  {:<19}  {:>8}  {:>10}  {}PATHS",
        "ID",
        "TIME (UTC)",
        "FILES",
        "SIZE",
        col(&["TAGS".into()])
    );
    for i in &items {
        println!(
            "{:<8}  {:<19}  {:>8}  {:>10}  {}{}",
            &i.id[..8],
            i.time.replace('T', " ").trim_end_matches('Z'),
            i.files,
            units::human_bytes(i.bytes),
            col(&i.tags),
            i.paths.join(" ")
        );
    }
    println!(
        "{} snapshot{}",
        items.len(),
        if items.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// When `node` has no snapshots but other nodes of `domain` do (a new machine
/// restoring the one it replaces, under another host name): say which.
fn other_nodes_hint(
    remote: &dyn crate::remote::Remote,
    domain: &str,
    node: &str,
) -> Option<String> {
    let others: Vec<String> = remote
        .nodes(domain)
        .into_iter()
        .filter(|n| n != node)
        .collect();
    if others.is_empty() {
        return None;
    }
    Some(format!(
        "node {node:?} has no snapshots here, but this store holds backups of {}: to read another machine's, pass --node OLDNAME",
        others.join(", ")
    ))
}

/// The snapshots `names` name (each an id, a timestamp or `latest`, see
/// [`snapshot::find_in`]; `latest` with `paths`: the newest that holds them), in
/// that order, as restore and the browsing commands pick them; no names: every
/// snapshot, oldest first (with `set`, those that include it). `latest` with `set` (`--path`) is the newest snapshot
/// whose source paths include every path of `set` ([`snapshot::has_paths`]); an
/// id or timestamp names its snapshot whatever its paths. No snapshots at all is an error with a hint when other
/// nodes have some, and the chain is checked (see [`crate::chain::guard`])
/// strictly when `latest` or every snapshot is asked for, else it only warns,
/// since a snapshot named by id is what it is.
pub(super) fn pick(
    node: &NodeContext,
    names: &[&str],
    paths: &[PathBuf],
    set: &[PathBuf],
    cmd: &'static str,
    accept_rollback: bool,
) -> Result<Vec<snapshot::Snapshot>> {
    let (keys, remote) = (&node.keys, node.remote.as_ref());
    let all = snapshot::all(keys, remote, &node.domain, &node.node)?;
    if all.is_empty() {
        let e = Error::Failed(format!(
            "no snapshots of {}/{} on {}",
            node.domain,
            node.node,
            remote.describe()
        ));
        return Err(match other_nodes_hint(remote, &node.domain, &node.node) {
            Some(h) => Error::Hinted(Box::new(e), h),
            None => e,
        });
    }
    let strict = if names.is_empty() || names.contains(&"latest") {
        crate::chain::Strict::Fail
    } else {
        crate::chain::Strict::Warn
    };
    crate::chain::guard(
        keys,
        remote,
        &node.domain,
        &node.node,
        &node.cache_dir,
        &all,
        cmd,
        strict,
        accept_rollback,
    )?;
    let set = crate::sink::normalize_roots(set)?;
    if names.is_empty() {
        return snapshot::with_paths(all, &set);
    }
    let mut picked = Vec::with_capacity(names.len());
    for name in names {
        let pool = if *name == "latest" {
            snapshot::with_paths(all.clone(), &set)?
        } else {
            all.clone()
        };
        let snap = snapshot::find_in(pool, remote, &node.domain, &node.node, name, paths)?;
        picked.push(snap);
    }
    Ok(picked)
}

pub(super) fn restore_cmd(s: &Settings, c: RestoreCmd) -> Result<()> {
    let show = Show::of(c.json, c.quiet, c.verbose)?;
    let node = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    let (keys, remote) = (&node.keys, node.remote.as_ref());
    // `latest` with PATHs: the newest snapshot holding them (globs aside).
    let paths: Vec<PathBuf> = (c.paths.iter())
        .filter(|p| !restore::is_glob(p.as_os_str().as_encoded_bytes()))
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let snap = pick(
        &node,
        &[&c.snapshot],
        &paths,
        &c.path,
        "restore",
        c.accept_rollback,
    )?
    .pop()
    .expect("one name");
    let opts = restore::Options {
        to: c.to.clone(),
        paths: c.paths,
        force: c.force,
        threads: threads(c.threads),
        cache_dir: Some(node.cache_dir.clone()),
        verbose: show == Show::Verbose,
        quiet: show == Show::Quiet,
        progress: show.progress(),
    };
    let r = restore::run(keys, remote, &snap, &opts)?;
    let already = if r.already > 0 {
        format!(
            "; {} file{} already restored",
            r.already,
            if r.already == 1 { "" } else { "s" }
        )
    } else {
        String::new()
    };
    let lost: u64 = r.lost.iter().map(|l| u64::from(l.entries)).sum();
    show.json(&RestoreJson {
        id: snap.id(),
        time: snapshot::rfc3339(snap.header.time),
        files: r.files,
        dirs: r.dirs,
        symlinks: r.symlinks,
        bytes: r.bytes,
        already_restored: r.already,
        lost_entries: lost,
        seconds: r.secs,
        to: c.to.as_ref().map(|t| t.display().to_string()),
    });
    if show.text() {
        println!(
            "restored snapshot {}: {} files, {} dirs, {} symlinks, {} in {:.1} s to {}{already}",
            snap.short_id(),
            r.files,
            r.dirs,
            r.symlinks,
            units::human_bytes(r.bytes),
            r.secs,
            c.to.as_deref()
                .map_or("the original paths".into(), |t| t.display().to_string())
        );
    }
    if !r.lost.is_empty() {
        for l in &r.lost {
            eprintln!(
                "chute restore: lost: {l}: that part of the manifest is damaged, not restored"
            );
        }
        let n = lost;
        return Err(Error::Incomplete(format!(
            "snapshot {} restored, but {n} entr{} in {} damaged manifest segment{} could not be (see above)",
            snap.short_id(),
            if n == 1 { "y" } else { "ies" },
            r.lost.len(),
            if r.lost.len() == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}
