//! `chute ls`, `find` and `diff` from the command line: snapshots picked as
//! restore picks them ([`super::backup::pick`]), each manifest streamed through
//! [`crate::browse`] and printed a line at a time to a buffered stdout. A damaged
//! part of a manifest is named on stderr (`lost: ...`) and the command exits 3
//! after printing the rest, as restore does.

use super::args::*;
use super::backup::pick;
use super::{NodeContext, Settings, open_node};
use crate::browse::{self, Filter};
use crate::format::{Entry, Lost};
use crate::pack::Resolver;
use crate::snapshot::Snapshot;
use crate::{Error, Result, restore};
use std::cell::RefCell;
use std::io::{BufWriter, StdoutLock, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Lines built in one buffer and written to a buffered stdout.
struct Out {
    w: BufWriter<StdoutLock<'static>>,
    line: Vec<u8>,
}

impl Out {
    fn new() -> Out {
        Out {
            w: BufWriter::with_capacity(64 << 10, std::io::stdout().lock()),
            line: Vec::new(),
        }
    }

    /// Writes the line built so far.
    fn put(&mut self) -> Result<()> {
        self.w.write_all(&self.line).map_err(stdout)?;
        self.line.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.w.flush().map_err(stdout)
    }
}

fn stdout(e: std::io::Error) -> Error {
    Error::Io("cannot write to stdout".into(), e)
}

/// The PATHs as restore takes them: absolute, not resolved.
fn absolute(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect()
}

fn filter(paths: &[PathBuf]) -> Filter {
    Filter::new(
        paths
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect(),
    )
}

fn resolver(node: &NodeContext) -> Result<Resolver> {
    Resolver::for_node(&node.keys, node.remote.as_ref(), &node.domain, &node.node)
}

/// Names each lost range on stderr; returns how many entries they held.
fn warn_lost(cmd: &str, snap: &Snapshot, lost: &[&Lost]) -> u64 {
    for l in lost {
        eprintln!(
            "chute {cmd}: lost: {l}: that part of snapshot {}'s manifest is damaged",
            snap.short_id()
        );
    }
    lost.iter().map(|l| u64::from(l.entries)).sum()
}

fn incomplete(what: &str, entries: u64) -> Result<()> {
    if entries == 0 {
        return Ok(());
    }
    Err(Error::Incomplete(format!(
        "{what}, but {entries} entr{} of damaged manifest segments could not be read (see above)",
        if entries == 1 { "y" } else { "ies" }
    )))
}

/// A PATH nothing matched: not there, or perhaps in a damaged part.
fn unmatched(f: &[u8], lost: Option<&Lost>, snaps: &str) -> Error {
    let f = String::from_utf8_lossy(f);
    match lost {
        Some(l) => Error::Damaged(format!(
            "{f} may be in a damaged part of {snaps}: {l} are lost"
        )),
        None => Error::Usage(format!("{f} is not in {snaps}")),
    }
}

pub(super) fn ls(s: &Settings, c: LsCmd) -> Result<()> {
    if c.long && c.json {
        return Err(Error::Usage("give --long or --json, not both".into()));
    }
    let node = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    let paths = absolute(&c.paths);
    let snap = pick(&node, &[&c.snapshot], &paths, "ls", c.accept_rollback)?
        .pop()
        .expect("one name");
    let resolver = resolver(&node)?;
    let mut stream = restore::open_entries(&node.keys, node.remote.as_ref(), &resolver, &snap)?;
    let mut filter = filter(&paths);
    let mut out = Out::new();
    while let Some(e) = stream
        .next_entry()
        .map_err(|e| restore::damaged_manifest(&snap, e))?
    {
        if filter.past(&e.path) {
            break;
        }
        if !filter.selects(&e.path) {
            continue;
        }
        if c.json {
            browse::json_line(&mut out.line, &e);
        } else if c.long {
            browse::long_line(&mut out.line, &e);
        } else {
            out.line.extend_from_slice(&e.path);
            out.line.push(b'\n');
        }
        out.put()?;
    }
    out.finish()?;
    let lost: Vec<&Lost> = stream.lost.iter().filter(|l| filter.may_hold(l)).collect();
    if let Some(f) = filter.unmatched() {
        let name = format!("snapshot {}", snap.short_id());
        return Err(unmatched(f, lost.first().copied(), &name));
    }
    let n = warn_lost("ls", &snap, &lost);
    incomplete(&format!("snapshot {} listed", snap.short_id()), n)
}

pub(super) fn find(s: &Settings, c: FindCmd) -> Result<()> {
    if c.patterns.is_empty() {
        return Err(Error::Usage("give a PATTERN to look for".into()));
    }
    for p in &c.patterns {
        crate::glob::check(p).map_err(Error::Usage)?;
    }
    let node = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    let names: Vec<&str> = c.snapshot.iter().map(String::as_str).collect();
    let snaps = pick(&node, &names, &[], "find", c.accept_rollback)?;
    let resolver = resolver(&node)?;
    let mut out = Out::new();
    let (mut found, mut lost) = (0u64, 0u64);
    // What every line of one snapshot starts with.
    let mut head = Vec::new();
    for snap in &snaps {
        head.clear();
        if c.json {
            head.extend_from_slice(b"{\"snapshot\":");
            browse::push_json_str(&mut head, snap.short_id().as_bytes());
            head.extend_from_slice(b",\"timestamp\":");
            browse::push_json_str(&mut head, snap.blob.timestamp.as_bytes());
            head.extend_from_slice(b",\"time\":\"");
            browse::push_time(&mut head, snap.header.time, 0, true);
            head.extend_from_slice(b"\",\"path\":");
        } else {
            head.extend_from_slice(snap.short_id().as_bytes());
            head.extend_from_slice(b"  ");
            browse::push_time(&mut head, snap.header.time, 0, false);
            head.extend_from_slice(b"  ");
        }
        let mut stream = restore::open_entries(&node.keys, node.remote.as_ref(), &resolver, snap)?;
        while let Some(e) = stream
            .next_entry()
            .map_err(|e| restore::damaged_manifest(snap, e))?
        {
            if !c
                .patterns
                .iter()
                .any(|p| crate::glob::matches_path(p.as_bytes(), &e.path))
            {
                continue;
            }
            found += 1;
            out.line.extend_from_slice(&head);
            if c.json {
                browse::json_line_after_path(&mut out.line, &e);
            } else {
                browse::find_line(&mut out.line, &e);
            }
            out.put()?;
        }
        let held: Vec<&Lost> = stream.lost.iter().collect();
        lost += warn_lost("find", snap, &held);
    }
    out.finish()?;
    if found == 0 {
        eprintln!(
            "chute find: no path matches in {} snapshot{}",
            snaps.len(),
            if snaps.len() == 1 { "" } else { "s" }
        );
    }
    incomplete(&format!("{found} paths found"), lost)
}

pub(super) fn diff(s: &Settings, c: DiffCmd) -> Result<()> {
    let node = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    let paths = absolute(&c.paths);
    let snaps = pick(&node, &[&c.a, &c.b], &paths, "diff", c.accept_rollback)?;
    let (old, new) = (&snaps[0], &snaps[1]);
    let resolver = resolver(&node)?;
    let (keys, remote) = (&node.keys, node.remote.as_ref());
    let mut streams = [
        restore::open_entries(keys, remote, &resolver, old)?,
        restore::open_entries(keys, remote, &resolver, new)?,
    ];
    let filter = RefCell::new(filter(&paths));
    let [sa, sb] = &mut streams;
    // The selected entries of one side, ending once past every PATH.
    let side = |st: &mut crate::format::Entries<'_, _>, snap: &Snapshot| -> Result<Option<Entry>> {
        while let Some(e) = st
            .next_entry()
            .map_err(|e| restore::damaged_manifest(snap, e))?
        {
            let mut f = filter.borrow_mut();
            if f.past(&e.path) {
                return Ok(None);
            }
            if f.selects(&e.path) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    };
    let mut out = Out::new();
    let (ida, idb) = (old.short_id(), new.short_id());
    let summary = browse::diff(
        &mut || side(sa, old),
        &mut || side(sb, new),
        [&ida, &idb],
        &mut |ch, o, n| {
            if c.json {
                browse::diff_json(&mut out.line, ch, o, n);
            } else {
                browse::diff_line(&mut out.line, ch, o, n);
            }
            out.put()
        },
    )?;
    if c.json {
        browse::summary_json(&mut out.line, &summary);
    } else {
        out.line
            .extend_from_slice(browse::summary_line(&summary).as_bytes());
        out.line.push(b'\n');
    }
    out.put()?;
    out.finish()?;
    let filter = filter.into_inner();
    let lost: Vec<Vec<&Lost>> = streams
        .iter()
        .map(|st| st.lost.iter().filter(|l| filter.may_hold(l)).collect())
        .collect();
    if let Some(f) = filter.unmatched() {
        let both = format!("snapshots {ida} and {idb}");
        let first = lost.iter().find_map(|l| l.first().copied());
        return Err(unmatched(f, first, &both));
    }
    let n = warn_lost("diff", old, &lost[0]) + warn_lost("diff", new, &lost[1]);
    incomplete(
        "compared (an entry in a damaged part shows as added or removed)",
        n,
    )
}
