//! `chute ls`, `find`, `diff` and `stats` from the command line: snapshots picked as
//! restore picks them ([`super::backup::pick`]), each manifest streamed through
//! [`crate::browse`] and printed a line at a time into a buffer written to
//! stdout in large pieces. A damaged part of a manifest is named on stderr
//! (`lost: ...`) and the command exits 3 after printing the rest, as restore
//! does.
//!
//! `--json` (see [`super::Show`]): `ls` one object an entry, a line each,
//! `{"path", "type", "mode", "uid", "gid", "size", "mtime"}` and `"target"` for a
//! symlink; `find` the same after `{"snapshot" (full id), "timestamp", "time"}`;
//! `diff` `{"change", ...the entry's fields, "old_type", "old_size", "what"}` a
//! line each and last `{"change": "summary", ...}` (see [`crate::browse`]);
//! `stats` one object `{"total", "path_sets"}`, each `{"paths", "snapshots",
//! "files", "bytes", "unique_bytes", "stored_bytes", "chunks", "dedup"}`.
//!
//! The armv7 binary's budget shapes this file: the three commands share one
//! setup ([`start`]) and `ls` and `find` one listing loop ([`print`]), and the
//! manifest reader is called through one non-inlined function.

use super::args::*;
use super::backup::pick;
use super::{NodeContext, Settings, open_node};
use crate::browse::{self, Filter};
use crate::format::{self, Entry};
use crate::pack::Resolver;
use crate::snapshot::Snapshot;
use crate::{Error, Result, restore};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Output lines gathered in one buffer, written to stdout once it holds
/// [`Out::FLUSH`] bytes (a write per line would be a system call per file).
struct Out {
    line: Vec<u8>,
}

impl Out {
    const FLUSH: usize = 32 << 10;

    fn put(&mut self) -> Result<()> {
        if self.line.len() >= Out::FLUSH {
            self.finish()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let mut w = std::io::stdout().lock();
        w.write_all(&self.line)
            .and_then(|()| w.flush())
            .map_err(|e| Error::Io("cannot write to stdout".into(), e))?;
        self.line.clear();
        Ok(())
    }
}

/// What every browsing command starts from (with a [`Filter`] of the PATHs
/// given, absolute as restore takes them).
struct Ctx {
    node: NodeContext,
    resolver: Resolver,
    /// The snapshots picked, in the order named (none named: all, oldest first).
    snaps: Vec<Snapshot>,
}

/// The options every browsing command shares.
struct Common {
    remote: Option<String>,
    key_file: Option<PathBuf>,
    domain: Option<String>,
    node: Option<String>,
    accept_rollback: bool,
    /// `--path`: which snapshot `latest` is (see [`pick`]).
    set: Vec<PathBuf>,
}

/// The [`Common`] options of a browsing command's arguments (argh has no
/// flattening: each command's struct repeats them).
macro_rules! common {
    ($c:expr) => {
        Common {
            remote: $c.remote,
            key_file: $c.key_file,
            domain: $c.domain,
            node: $c.node,
            accept_rollback: $c.accept_rollback,
            set: $c.path,
        }
    };
}

#[inline(never)]
fn start(
    s: &Settings,
    c: Common,
    cmd: &'static str,
    names: &[&str],
    paths: &[PathBuf],
) -> Result<(Ctx, Filter)> {
    let node = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    let paths: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let snaps = pick(&node, names, &paths, &c.set, cmd, c.accept_rollback)?;
    let resolver = Resolver::for_node(&node.keys, node.remote.as_ref(), &node.domain, &node.node)?;
    let filter = Filter::new(
        paths
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect(),
    );
    let ctx = Ctx {
        node,
        resolver,
        snaps,
    };
    Ok((ctx, filter))
}

/// A snapshot's manifest as a stream of entries, its errors naming the snapshot.
struct Stream<'a, F> {
    entries: format::Entries<'a, F>,
    snap: &'a Snapshot,
}

#[inline(never)]
fn open<'a>(ctx: &'a Ctx, snap: &'a Snapshot) -> Result<Stream<'a, impl format::SpanFetch + 'a>> {
    let remote = ctx.node.remote.as_ref();
    let entries = restore::open_entries(&ctx.node.keys, remote, &ctx.resolver, snap)?;
    Ok(Stream { entries, snap })
}

impl<F: format::SpanFetch> Stream<'_, F> {
    #[inline(never)]
    fn next(&mut self) -> Result<Option<Entry>> {
        let snap = self.snap;
        self.entries
            .next_entry()
            .map_err(|e| restore::damaged_manifest(snap, e))
    }

    /// Names on stderr the lost ranges that may hold what `filter` selects;
    /// returns their entries and the first.
    fn warn_lost(&self, cmd: &str, filter: &Filter) -> (u64, Option<String>) {
        let (mut n, mut first) = (0, None);
        for l in self.entries.lost.iter().filter(|l| filter.may_hold(l)) {
            eprintln!(
                "chute {cmd}: lost: {l}: that part of snapshot {}'s manifest is damaged",
                self.snap.short_id()
            );
            n += u64::from(l.entries);
            first.get_or_insert_with(|| l.to_string());
        }
        (n, first)
    }
}

/// What [`print`] asks of each entry's path.
enum Select {
    Yes,
    No,
    /// Nothing after it can be selected.
    Stop,
}

/// What [`print`] found.
#[derive(Default)]
struct Printed {
    lines: u64,
    lost: u64,
    first_lost: Option<String>,
}

/// Prints, for each snapshot of `ctx`, `head` then `line` of every entry
/// `select` takes.
#[inline(never)]
fn print(
    ctx: &Ctx,
    filter: &mut Filter,
    cmd: &str,
    select: &mut dyn FnMut(&mut Filter, &[u8]) -> Select,
    head: &dyn Fn(&mut Vec<u8>, &Snapshot),
    line: fn(&mut Vec<u8>, &Entry),
) -> Result<Printed> {
    let mut out = Out { line: Vec::new() };
    let mut p = Printed::default();
    let mut start = Vec::new();
    for snap in &ctx.snaps {
        start.clear();
        head(&mut start, snap);
        let mut stream = open(ctx, snap)?;
        while let Some(e) = stream.next()? {
            match select(filter, &e.path) {
                Select::Yes => {}
                Select::No => continue,
                Select::Stop => break,
            }
            p.lines += 1;
            out.line.extend_from_slice(&start);
            line(&mut out.line, &e);
            out.put()?;
        }
        let (n, first) = stream.warn_lost(cmd, filter);
        p.lost += n;
        p.first_lost = p.first_lost.or(first);
    }
    out.finish()?;
    Ok(p)
}

/// Exit 3 when damaged parts were left out.
fn incomplete(what: &str, entries: u64) -> Result<()> {
    if entries == 0 {
        return Ok(());
    }
    Err(Error::Incomplete(format!(
        "{what}, but {entries} entr{} of damaged manifest segments could not be read (see above)",
        if entries == 1 { "y" } else { "ies" }
    )))
}

/// A PATH nothing matched: not there (a usage error, as for restore), or
/// perhaps in a damaged part.
fn unmatched(filter: &Filter, lost: Option<String>, snaps: &str) -> Result<()> {
    let Some(f) = filter.unmatched() else {
        return Ok(());
    };
    let f = String::from_utf8_lossy(f);
    Err(match lost {
        Some(l) => Error::Damaged(format!(
            "{f} may be in a damaged part of {snaps}: {l} are lost"
        )),
        None => Error::Usage(format!("{f} is not in {snaps}")),
    })
}

fn plain_line(out: &mut Vec<u8>, e: &Entry) {
    out.extend_from_slice(&e.path);
    out.push(b'\n');
}

pub(super) fn ls(s: &Settings, c: LsCmd) -> Result<()> {
    if c.long && c.json {
        return Err(Error::Usage("give --long or --json, not both".into()));
    }
    let common = common!(c);
    let (ctx, mut filter) = start(s, common, "ls", &[&c.snapshot], &c.paths)?;
    let line = match (c.json, c.long) {
        (true, _) => browse::json_line,
        (_, true) => browse::long_line,
        _ => plain_line,
    };
    let p = print(
        &ctx,
        &mut filter,
        "ls",
        &mut |f, path| {
            if f.past(path) {
                Select::Stop
            } else if f.selects(path) {
                Select::Yes
            } else {
                Select::No
            }
        },
        &|_, _| {},
        line,
    )?;
    let name = format!("snapshot {}", ctx.snaps[0].short_id());
    unmatched(&filter, p.first_lost, &name)?;
    incomplete(&format!("{name} listed"), p.lost)
}

pub(super) fn find(s: &Settings, c: FindCmd) -> Result<()> {
    if c.patterns.is_empty() {
        return Err(Error::Usage("give a PATTERN to look for".into()));
    }
    for p in &c.patterns {
        crate::glob::check(p).map_err(Error::Usage)?;
    }
    let names: Vec<&str> = c.snapshot.iter().map(String::as_str).collect();
    let common = common!(c);
    let (ctx, mut filter) = start(s, common, "find", &names, &[])?;
    let json = c.json;
    let p = print(
        &ctx,
        &mut filter,
        "find",
        &mut |_, path| {
            let hit = (c.patterns.iter()).any(|p| crate::glob::matches_path(p.as_bytes(), path));
            if hit { Select::Yes } else { Select::No }
        },
        &|head, snap| {
            if json {
                head.extend_from_slice(b"{\"snapshot\":");
                browse::push_json_str(head, snap.id().as_bytes());
                head.extend_from_slice(b",\"timestamp\":");
                browse::push_json_str(head, snap.blob.timestamp.as_bytes());
                head.extend_from_slice(b",\"time\":\"");
                browse::push_time(head, snap.header.time, 0, true);
                head.extend_from_slice(b"\",\"path\":");
            } else {
                head.extend_from_slice(snap.short_id().as_bytes());
                head.extend_from_slice(b"  ");
                browse::push_time(head, snap.header.time, 0, false);
                head.extend_from_slice(b"  ");
            }
        },
        if json {
            browse::json_line_after_path
        } else {
            browse::find_line
        },
    )?;
    let n = ctx.snaps.len();
    if p.lines == 0 {
        eprintln!(
            "chute find: no path matches in {n} snapshot{}",
            if n == 1 { "" } else { "s" }
        );
    }
    incomplete(&format!("{} paths found", p.lines), p.lost)
}

pub(super) fn diff(s: &Settings, c: DiffCmd) -> Result<()> {
    let common = common!(c);
    let (ctx, filter) = start(s, common, "diff", &[&c.a, &c.b], &[])?;
    let (old, new) = (&ctx.snaps[0], &ctx.snaps[1]);
    let mut sa = open(&ctx, old)?;
    let mut sb = open(&ctx, new)?;
    let mut out = Out { line: Vec::new() };
    let (ida, idb) = (old.short_id(), new.short_id());
    let emit = if c.json {
        browse::diff_json
    } else {
        browse::diff_line
    };
    let summary = browse::diff(
        &mut || sa.next(),
        &mut || sb.next(),
        [&ida, &idb],
        &mut |ch, o, n| {
            emit(&mut out.line, ch, o, n);
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
    out.finish()?;
    let (na, _) = sa.warn_lost("diff", &filter);
    let (nb, _) = sb.warn_lost("diff", &filter);
    incomplete(
        "compared (an entry in a damaged part shows as added or removed)",
        na + nb,
    )
}

/// One line of `chute stats`: a set of source paths (none: the total).
#[derive(miniserde::Serialize)]
struct StatsLine {
    paths: Vec<String>,
    snapshots: u64,
    files: u64,
    bytes: u64,
    unique_bytes: u64,
    stored_bytes: u64,
    chunks: u64,
    dedup: f64,
}

#[derive(miniserde::Serialize)]
struct StatsJson {
    total: StatsLine,
    path_sets: Vec<StatsLine>,
}

fn stats_line(roots: &[Vec<u8>], t: &browse::Tally) -> StatsLine {
    StatsLine {
        paths: (roots.iter())
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect(),
        snapshots: t.snapshots,
        files: t.files,
        bytes: t.bytes,
        unique_bytes: t.unique_bytes,
        stored_bytes: t.stored_bytes,
        chunks: t.chunks,
        dedup: (t.dedup() * 100.0).round() / 100.0,
    }
}

/// `chute stats`: the snapshots' manifests streamed a set of source paths at a
/// time, every chunk reference into that set's [`browse::Distinct`] and the
/// total's; the headers give files and bytes. The sets' runs live in the
/// node's cache directory under a lock, so two stats never share them.
pub(super) fn stats(s: &Settings, c: StatsCmd) -> Result<()> {
    let names: Vec<&str> = c.snapshots.iter().map(String::as_str).collect();
    let json = c.json;
    let (mut ctx, filter) = start(s, common!(c), "stats", &names, &[])?;
    let dir = ctx.node.cache_dir.clone();
    let io = |e| Error::Io(format!("cannot keep chunk runs in {}", dir.display()), e);
    crate::cache::create_dir(&dir).map_err(io)?;
    let lock = std::fs::File::create(dir.join("lock-stats")).map_err(io)?;
    crate::sys::lock(&lock).map_err(io)?;
    // One set of paths after another; a snapshot named twice counts once.
    crate::sort::by(&mut ctx.snaps, |a, b| {
        (&a.header.roots, &a.blob).cmp(&(&b.header.roots, &b.blob))
    });
    ctx.snaps.dedup_by(|a, b| a.blob == b.blob);
    let mut all = browse::Distinct::new(&dir.join("stats-all"));
    let (mut total, mut lines, mut lost) = (browse::Tally::default(), Vec::new(), 0);
    for group in ctx.snaps.chunk_by(|a, b| a.header.roots == b.header.roots) {
        let mut set = browse::Distinct::new(&dir.join("stats-set"));
        let mut t = browse::Tally::default();
        for snap in group {
            t.snapshots += 1;
            t.files += snap.header.files;
            t.bytes += snap.header.bytes;
            let mut stream = open(&ctx, snap)?;
            while let Some(e) = stream.next()? {
                for ch in &e.chunks {
                    set.insert(ch).map_err(io)?;
                    all.insert(ch).map_err(io)?;
                }
            }
            lost += stream.warn_lost("stats", &filter).0;
        }
        set.count(&mut t).map_err(io)?;
        total.snapshots += t.snapshots;
        total.files += t.files;
        total.bytes += t.bytes;
        lines.push(stats_line(&group[0].header.roots, &t));
    }
    all.count(&mut total).map_err(io)?;
    let total = stats_line(&[], &total);
    let mut out = Out { line: Vec::new() };
    if json {
        let j = StatsJson {
            total,
            path_sets: lines,
        };
        out.line = miniserde::json::to_string(&j).into_bytes();
        out.line.push(b'\n');
    } else {
        use crate::units::human_bytes as h;
        out.line.extend_from_slice(
            b"SNAPSHOTS      FILES        SIZE      UNIQUE      STORED   DEDUP  PATHS\n",
        );
        let mut total = total;
        total.paths = vec!["(total)".into()];
        for l in lines.iter().chain([&total]) {
            let _ = writeln!(
                out.line,
                "{:>9}  {:>9}  {:>10}  {:>10}  {:>10}  {:>5.2}x  {}",
                l.snapshots,
                l.files,
                h(l.bytes),
                h(l.unique_bytes),
                h(l.stored_bytes),
                l.dedup,
                l.paths.join(" ")
            );
        }
    }
    out.finish()?;
    incomplete("counted (without the chunks of the lost entries)", lost)
}
