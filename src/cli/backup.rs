//! `chute sink`, `list` and `restore` from the command line: settings in, one
//! summary out.

use super::args::*;
use super::*;

pub(super) fn sink_cmd(s: &Settings, c: SinkCmd) -> Result<()> {
    let mut roots = c.paths;
    if roots.is_empty() {
        if let Some(p) = s.get(None, "CHUTE_PATHS") {
            roots = p.split_whitespace().map(PathBuf::from).collect();
        }
    }
    let mut excludes = c.exclude;
    if let Some(x) = s.get(None, "CHUTE_EXCLUDE") {
        excludes.extend(x.split_whitespace().map(String::from));
    }
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
    let opts = sink::Options {
        roots,
        excludes,
        domain,
        node,
        cache_dir,
        host: hostname(),
        threads: threads(c.threads),
        window,
        progress: true,
        accept_rollback: c.accept_rollback,
    };
    let r = sink::run(&keys, remote.as_ref(), &opts)?;
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
    println!(
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
    let mut missed = Vec::new();
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
    Ok(())
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
}

pub(super) fn list(s: &Settings, c: ListCmd) -> Result<()> {
    let NodeContext {
        keys,
        remote,
        domain,
        node,
        cache_dir,
    } = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    let snaps = snapshot::all(&keys, remote.as_ref(), &domain, &node)?;
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
    let items: Vec<ListItem> = snaps
        .iter()
        .map(|sn| ListItem {
            id: sn.short_id(),
            time: snapshot::display_time(sn.header.time),
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
        })
        .collect();
    if c.json {
        println!("{}", miniserde::json::to_string(&items));
        return Ok(());
    }
    println!(
        "{:<8}  {:<19}  {:>8}  {:>10}  PATHS",
        "ID", "TIME (UTC)", "FILES", "SIZE"
    );
    for i in &items {
        println!(
            "{:<8}  {:<19}  {:>8}  {:>10}  {}",
            i.id,
            i.time,
            i.files,
            units::human_bytes(i.bytes),
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

pub(super) fn restore_cmd(s: &Settings, c: RestoreCmd) -> Result<()> {
    let node = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    let (keys, remote) = (&node.keys, node.remote.as_ref());
    let paths: Vec<PathBuf> = c
        .paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let all = snapshot::all(keys, remote, &node.domain, &node.node)?;
    // Only `latest` depends on the store showing the newest; a snapshot named by id
    // is what it is, so a bad chain only warns.
    let strict = if c.snapshot == "latest" {
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
        "restore",
        strict,
        c.accept_rollback,
    )?;
    let snap = snapshot::find_in(all, remote, &node.domain, &node.node, &c.snapshot, &paths)?;
    let opts = restore::Options {
        to: c.to.clone(),
        paths: c.paths,
        force: c.force,
        threads: threads(c.threads),
        cache_dir: Some(node.cache_dir.clone()),
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
    Ok(())
}
