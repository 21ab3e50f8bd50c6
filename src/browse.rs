//! Reading snapshots without restoring them: `chute ls`, `find`, `diff` and
//! `stats`.
//!
//! Memory is flat in the number of files, as for restore: every manifest is
//! streamed ([`format::Entries`]) and each entry dropped once printed; nothing
//! here collects a snapshot's entries. What it owns:
//! - [`Filter`]: the PATHs a command was given, matched as restore matches them
//!   (the path itself and everything below it, whole components). Since the paths
//!   within one PATH are one run of the stream, a listing stops once past them all.
//! - [`diff`]: two manifests merge-joined. A manifest's entries are in walk order
//!   ([`crate::sink::walk_order`]: byte order of the paths' components), a total order on
//!   paths: a sink sorts its roots the same way and drops roots inside others, so
//!   the runs of its roots follow one another in that order. The merge checks the
//!   order as it goes (one comparison with the entry before) and fails as damage
//!   rather than report a wrong difference.
//! - the line and JSON formats, written into a reused buffer (no `format!` per
//!   entry): `ls` lines, `ls --long`, one JSON object per entry (JSON Lines).
//!
//! - [`Distinct`]: `chute stats`' set of the chunks some snapshots reference,
//!   counted once. It is the one thing there that grows with the data (a chunk
//!   is at least 256 KiB but for a file's last one and the walk's last pack:
//!   about 8 million at 1 TiB, 300 MB as a hash set), so it is a
//!   [`RunChunks`]: [`crate::runchunks::CAP`] records in memory, the rest in
//!   sorted runs on disk, merged as they are read back once.
//!
//! Content is compared by chunk ids (keyed hashes of the plaintext), not by
//! mtime: a file whose bytes are the same but whose mtime moved is a metadata
//! change only, and one rewritten within the same second is still found.

use crate::format::{self, Entry, EntryKind};
use crate::runchunks::RunChunks;
use crate::{Error, Result};
use std::cmp::Ordering;
use std::io::Write as _;

/// The paths a command was given (absolute, as bytes): an entry is selected if
/// it is one of them or below one; none selects everything.
pub struct Filter {
    paths: Vec<Vec<u8>>,
    matched: Vec<bool>,
}

impl Filter {
    pub fn new(paths: Vec<Vec<u8>>) -> Filter {
        let matched = vec![false; paths.len()];
        Filter { paths, matched }
    }

    /// Whether `path` is selected; remembers which PATHs matched something.
    pub fn selects(&mut self, path: &[u8]) -> bool {
        let mut any = self.paths.is_empty();
        for (m, f) in self.matched.iter_mut().zip(&self.paths) {
            if crate::restore::within(path, f) {
                *m = true;
                any = true;
            }
        }
        any
    }

    /// Whether no entry after `path` (in walk order) can be selected: `path` lies
    /// after every PATH and outside it, and each PATH's entries are one run that
    /// starts at the PATH itself.
    pub fn past(&self, path: &[u8]) -> bool {
        !self.paths.is_empty()
            && self.paths.iter().all(|f| {
                let f = f.strip_suffix(b"/").unwrap_or(f);
                walk_order(path, f) == Ordering::Greater && !crate::restore::within(path, f)
            })
    }

    /// The first PATH nothing matched.
    pub fn unmatched(&self) -> Option<&[u8]> {
        self.paths
            .iter()
            .zip(&self.matched)
            .find(|(_, m)| !**m)
            .map(|(p, _)| &p[..])
    }

    /// Whether lost segment `l` may hold selected entries.
    pub fn may_hold(&self, l: &format::Lost) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|f| crate::restore::may_hold(l, f))
    }
}

/// What `chute stats` counts over some snapshots: the bytes of their files,
/// and of the distinct chunks those files use (each once, a pack of small files
/// whole), as plaintext and as stored (sealed; file data only, manifests aside).
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    pub snapshots: u64,
    pub files: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub unique_bytes: u64,
    pub stored_bytes: u64,
}

impl Tally {
    /// Bytes per unique byte (1 with nothing stored).
    pub fn dedup(&self) -> f64 {
        if self.unique_bytes == 0 {
            1.0
        } else {
            self.bytes as f64 / self.unique_bytes as f64
        }
    }
}

/// The distinct chunks of some snapshots, in bounded memory (see the module docs).
pub struct Distinct(RunChunks);

impl Distinct {
    /// An empty set whose runs are the files `<prefix>.<n>` (removing what a
    /// killed run left there).
    pub fn new(prefix: &std::path::Path) -> Distinct {
        let cap = crate::testhooks::chunk_cap(crate::runchunks::CAP);
        Distinct(RunChunks::new(prefix, cap, false))
    }

    pub fn insert(&mut self, c: &format::ChunkRef) -> std::io::Result<()> {
        let place = crate::cache::Place {
            blob: 0,
            offset: 0,
            len: c.len,
            raw: c.raw,
        };
        self.0.insert(c.id, place)
    }

    /// Adds each distinct chunk once to `t`'s chunks, unique and stored bytes.
    pub fn count(&self, t: &mut Tally) -> std::io::Result<()> {
        for r in self.0.iter()? {
            let p = r?.1;
            let c = format::ChunkRef::whole_raw([0; 32], 0, 0, p.len, p.raw);
            t.chunks += 1;
            // Stored: what the store holds (compressed); unique: the content.
            t.stored_bytes += u64::from(p.len);
            t.unique_bytes += c.plain_len();
        }
        Ok(())
    }
}

/// [`crate::sink::walk_order`], called rather than inlined at each use (the
/// armv7 binary's budget).
#[inline(never)]
fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    crate::sink::walk_order(a, b)
}

// ---- formats ---------------------------------------------------------------

/// The name of a kind in JSON.
pub fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Fifo => "fifo",
    }
}

/// The size `ls` shows: a file's bytes, a symlink's target length (as `ls -l`),
/// a directory's 0.
pub fn size(e: &Entry) -> u64 {
    match e.kind {
        EntryKind::File => e.size,
        EntryKind::Symlink => e.target.len() as u64,
        EntryKind::Dir | EntryKind::Fifo => 0,
    }
}

pub fn push_num(out: &mut Vec<u8>, n: u64) {
    // Into the buffer through core's formatter: no allocation, and no second
    // number printer in the binary.
    let _ = write!(out, "{n}");
}

/// `n` right-aligned in `width` columns.
fn push_num_right(out: &mut Vec<u8>, n: u64, width: usize) {
    let _ = write!(out, "{n:>width$}");
}

/// A time in UTC: `YYYY-MM-DD HH:MM:SS` as `chute list` shows it, or RFC 3339
/// (`YYYY-MM-DDTHH:MM:SSZ`, with nanoseconds when there are some) for JSON.
pub fn push_time(out: &mut Vec<u8>, secs: i64, nanos: u32, rfc3339: bool) {
    let (y, mo, d, h, mi, s) = crate::snapshot::split(secs);
    let t = if rfc3339 { 'T' } else { ' ' };
    let _ = write!(out, "{y:04}-{mo:02}-{d:02}{t}{h:02}:{mi:02}:{s:02}");
    if rfc3339 {
        if nanos > 0 {
            let _ = write!(out, ".{:09}", nanos.min(999_999_999));
        }
        out.push(b'Z');
    }
}

/// `drwxr-xr-x`, as `ls -l` shows a mode (setuid, setgid and sticky as `s`/`S`,
/// `t`/`T`).
pub fn push_mode(out: &mut Vec<u8>, kind: EntryKind, mode: u32) {
    out.push(match kind {
        EntryKind::File => b'-',
        EntryKind::Dir => b'd',
        EntryKind::Symlink => b'l',
        EntryKind::Fifo => b'p',
    });
    for (shift, special, (on, off)) in [
        (6, 0o4000, (b's', b'S')),
        (3, 0o2000, (b's', b'S')),
        (0, 0o1000, (b't', b'T')),
    ] {
        let bits = mode >> shift;
        out.push(if bits & 4 != 0 { b'r' } else { b'-' });
        out.push(if bits & 2 != 0 { b'w' } else { b'-' });
        out.push(match (mode & special != 0, bits & 1 != 0) {
            (true, true) => on,
            (true, false) => off,
            (false, true) => b'x',
            (false, false) => b'-',
        });
    }
}

/// A JSON string of `b` (a path or a symlink target: raw bytes, shown as UTF-8,
/// a byte that is not replaced by U+FFFD as everywhere else chute prints paths).
pub fn push_json_str(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    for c in String::from_utf8_lossy(b).bytes() {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 15)]);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// `ls --long`: mode, uid:gid, size, mtime, path (and `-> target`), one line.
pub fn long_line(out: &mut Vec<u8>, e: &Entry) {
    push_mode(out, e.kind, e.mode);
    out.push(b' ');
    let at = out.len();
    let _ = write!(out, "{}:{}", e.uid, e.gid);
    out.resize(out.len().max(at + 11), b' ');
    out.push(b' ');
    push_num_right(out, size(e), 12);
    out.push(b' ');
    push_time(out, e.mtime, e.mtime_ns, false);
    out.push(b' ');
    out.extend_from_slice(&e.path);
    if e.kind == EntryKind::Symlink {
        out.extend_from_slice(b" -> ");
        out.extend_from_slice(&e.target);
    }
    out.push(b'\n');
}

/// `ls --json`: one object, one line.
pub fn json_line(out: &mut Vec<u8>, e: &Entry) {
    out.extend_from_slice(b"{\"path\":");
    json_line_after_path(out, e);
}

/// The rest of a JSON line whose object is open up to `"path":` (`find`'s
/// starts with the snapshot).
pub fn json_line_after_path(out: &mut Vec<u8>, e: &Entry) {
    push_json_str(out, &e.path);
    json_fields(out, e);
    out.extend_from_slice(b"}\n");
}

/// The end of a `find` line (after the snapshot's id and time): size, mtime, path.
pub fn find_line(out: &mut Vec<u8>, e: &Entry) {
    push_num_right(out, size(e), 12);
    out.extend_from_slice(b"  ");
    push_time(out, e.mtime, e.mtime_ns, false);
    out.extend_from_slice(b"  ");
    out.extend_from_slice(&e.path);
    out.push(b'\n');
}

/// Every field of `e` but the path, each after a comma.
fn json_fields(out: &mut Vec<u8>, e: &Entry) {
    let _ = write!(
        out,
        ",\"type\":\"{}\",\"mode\":{},\"uid\":{},\"gid\":{},\"size\":{},\"mtime\":\"",
        kind_name(e.kind),
        e.mode,
        e.uid,
        e.gid,
        size(e)
    );
    push_time(out, e.mtime, e.mtime_ns, true);
    out.push(b'"');
    if e.kind == EntryKind::Symlink {
        out.extend_from_slice(b",\"target\":");
        push_json_str(out, &e.target);
    }
}

// ---- diff ------------------------------------------------------------------

/// How an entry differs between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Only in the newer.
    Added,
    /// Only in the older.
    Removed,
    /// Another content: a file's bytes (by chunk ids) or a symlink's target.
    Modified,
    /// Another kind (a file became a directory, ...).
    Type,
    /// The same content, another mode, owner, mtime or extended attributes.
    Meta,
}

impl Change {
    /// The letter a diff line starts with.
    pub fn code(self) -> u8 {
        match self {
            Change::Added => b'+',
            Change::Removed => b'-',
            Change::Modified => b'M',
            Change::Type => b'T',
            Change::Meta => b'U',
        }
    }

    /// Its name in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Modified => "modified",
            Change::Type => "type",
            Change::Meta => "metadata",
        }
    }
}

/// What a diff found, counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub added: u64,
    /// Bytes of the files added.
    pub added_bytes: u64,
    pub removed: u64,
    pub removed_bytes: u64,
    pub modified: u64,
    /// Bytes of the modified files, as they are now.
    pub modified_bytes: u64,
    pub types: u64,
    pub meta: u64,
}

impl Summary {
    fn count(&mut self, c: Change, old: Option<&Entry>, new: Option<&Entry>) {
        let bytes = |e: Option<&Entry>| e.filter(|e| e.kind == EntryKind::File).map_or(0, size);
        let (n, b) = match c {
            Change::Added => (&mut self.added, bytes(new)),
            Change::Removed => (&mut self.removed, bytes(old)),
            Change::Modified => (&mut self.modified, bytes(new)),
            Change::Type => (&mut self.types, 0),
            Change::Meta => (&mut self.meta, 0),
        };
        *n += 1;
        match c {
            Change::Added => self.added_bytes += b,
            Change::Removed => self.removed_bytes += b,
            Change::Modified => self.modified_bytes += b,
            Change::Type | Change::Meta => {}
        }
    }
}

/// Whether two files hold the same bytes, by their chunks' keyed ids: a packed
/// file's tag is the start of its whole content's id, which is also the id of
/// the one whole chunk a file of its own that size would have.
pub fn same_content(a: &Entry, b: &Entry) -> bool {
    let whole = |e: &Entry| match (e.tag, &e.chunks[..]) {
        (Some(t), _) => Some(t),
        (None, [c]) if c.is_whole() => c.id[..8].try_into().ok(),
        _ => None,
    };
    if a.size != b.size {
        return false;
    }
    if let (Some(x), Some(y)) = (whole(a), whole(b)) {
        return x == y;
    }
    a.chunks.len() == b.chunks.len()
        && a.chunks
            .iter()
            .zip(&b.chunks)
            .all(|(x, y)| (x.id, x.skip, x.take) == (y.id, y.skip, y.take))
}

/// Which metadata of two entries of one path differ: mode, owner, mtime,
/// extended attributes (ACLs included).
pub fn meta_changes(a: &Entry, b: &Entry) -> [bool; 4] {
    [
        a.mode != b.mode,
        (a.uid, a.gid) != (b.uid, b.gid),
        (a.mtime, a.mtime_ns) != (b.mtime, b.mtime_ns),
        a.xattrs != b.xattrs,
    ]
}

/// The names [`meta_changes`] reports.
pub const META_NAMES: [&str; 4] = ["mode", "owner", "mtime", "xattrs"];

/// How the entry of one path changed, if it did.
pub fn compare(a: &Entry, b: &Entry) -> Option<Change> {
    if a.kind != b.kind {
        return Some(Change::Type);
    }
    let content = match a.kind {
        EntryKind::File => same_content(a, b),
        EntryKind::Symlink => a.target == b.target,
        EntryKind::Dir | EntryKind::Fifo => true,
    };
    if !content {
        Some(Change::Modified)
    } else if meta_changes(a, b).contains(&true) {
        Some(Change::Meta)
    } else {
        None
    }
}

/// A stream of entries for [`diff`].
pub type Next<'a> = &'a mut dyn FnMut() -> Result<Option<Entry>>;

/// What [`diff`] calls for each difference: the change, the older entry, the newer.
pub type Emit<'a> = &'a mut dyn FnMut(Change, Option<&Entry>, Option<&Entry>) -> Result<()>;

/// One side of the merge: its current entry, checked to come after the one
/// before it.
struct Side<'a> {
    next: Next<'a>,
    name: &'a str,
    cur: Option<Entry>,
}

impl Side<'_> {
    fn advance(&mut self) -> Result<()> {
        let n = (self.next)()?;
        if let (Some(prev), Some(n)) = (&self.cur, &n) {
            if walk_order(&prev.path, &n.path) != Ordering::Less {
                return Err(out_of_order(self.name, &n.path));
            }
        }
        self.cur = n;
        Ok(())
    }
}

#[cold]
#[inline(never)]
fn out_of_order(snap: &str, path: &[u8]) -> Error {
    Error::Damaged(format!(
        "snapshot {snap}: manifest entries out of order at {}",
        String::from_utf8_lossy(path)
    ))
}

/// Merge-joins the entries of an older and a newer snapshot (each in walk
/// order, named `names` in errors), calling `out` for every difference in walk
/// order, with the older and newer entry of the path; returns the counts.
pub fn diff(old: Next<'_>, new: Next<'_>, names: [&str; 2], out: Emit<'_>) -> Result<Summary> {
    let mut a = Side {
        next: old,
        name: names[0],
        cur: None,
    };
    let mut b = Side {
        next: new,
        name: names[1],
        cur: None,
    };
    a.advance()?;
    b.advance()?;
    let mut sum = Summary::default();
    let mut emit = |c: Change, x: Option<&Entry>, y: Option<&Entry>| {
        sum.count(c, x, y);
        out(c, x, y)
    };
    loop {
        let order = match (&a.cur, &b.cur) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => walk_order(&x.path, &y.path),
        };
        match order {
            Ordering::Less => {
                emit(Change::Removed, a.cur.as_ref(), None)?;
                a.advance()?;
            }
            Ordering::Greater => {
                emit(Change::Added, None, b.cur.as_ref())?;
                b.advance()?;
            }
            Ordering::Equal => {
                let (x, y) = (a.cur.as_ref(), b.cur.as_ref());
                if let Some(c) = compare(x.expect("some"), y.expect("some")) {
                    emit(c, x, y)?;
                }
                a.advance()?;
                b.advance()?;
            }
        }
    }
    Ok(sum)
}

/// The metadata that differ between `o` and `n`, named, each after `sep` but
/// the first, each in `quote`s.
fn push_what(out: &mut Vec<u8>, o: &Entry, n: &Entry, sep: &[u8], quote: &[u8]) {
    let mut first = true;
    for (changed, name) in meta_changes(o, n).into_iter().zip(META_NAMES) {
        if changed {
            if !first {
                out.extend_from_slice(sep);
            }
            out.extend_from_slice(quote);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(quote);
            first = false;
        }
    }
}

/// A diff line: `M         1234 /path`; a modified or retyped entry adds what
/// it was, a metadata change what changed.
pub fn diff_line(out: &mut Vec<u8>, c: Change, old: Option<&Entry>, new: Option<&Entry>) {
    let e = new.or(old).expect("an entry");
    let _ = write!(out, "{} {:>12} ", c.code() as char, size(e));
    out.extend_from_slice(&e.path);
    if let (Some(o), Some(n)) = (old, new) {
        match c {
            Change::Modified => {
                let _ = write!(out, " (was {} bytes)", size(o));
            }
            Change::Type => {
                let _ = write!(out, " (was {})", kind_name(o.kind));
            }
            Change::Meta => {
                out.extend_from_slice(b" (");
                push_what(out, o, n, b", ", b"");
                out.push(b')');
            }
            Change::Added | Change::Removed => {}
        }
    }
    out.push(b'\n');
}

/// A diff change as JSON: the change, the path and the newer entry's fields
/// (the older's for a removal), then `old_type` and `old_size` when both
/// exist, and for a metadata change `what` changed.
pub fn diff_json(out: &mut Vec<u8>, c: Change, old: Option<&Entry>, new: Option<&Entry>) {
    let e = new.or(old).expect("an entry");
    let _ = write!(out, "{{\"change\":\"{}\",\"path\":", c.name());
    push_json_str(out, &e.path);
    json_fields(out, e);
    if let (Some(o), Some(n)) = (old, new) {
        let _ = write!(
            out,
            ",\"old_type\":\"{}\",\"old_size\":{}",
            kind_name(o.kind),
            size(o)
        );
        if c == Change::Meta {
            out.extend_from_slice(b",\"what\":[");
            push_what(out, o, n, b",", b"\"");
            out.push(b']');
        }
    }
    out.extend_from_slice(b"}\n");
}

/// The summary as the last JSON line of a diff.
pub fn summary_json(out: &mut Vec<u8>, s: &Summary) {
    let _ = writeln!(
        out,
        "{{\"change\":\"summary\",\"added\":{},\"added_bytes\":{},\"removed\":{},\"removed_bytes\":{},\"modified\":{},\"modified_bytes\":{},\"type_changed\":{},\"metadata\":{}}}",
        s.added,
        s.added_bytes,
        s.removed,
        s.removed_bytes,
        s.modified,
        s.modified_bytes,
        s.types,
        s.meta
    );
}

/// The summary for people, one line.
pub fn summary_line(s: &Summary) -> String {
    use crate::units::human_bytes as h;
    format!(
        "{} added ({}), {} removed ({}), {} modified ({} now), {} type changed, {} metadata only",
        s.added,
        h(s.added_bytes),
        s.removed,
        h(s.removed_bytes),
        s.modified,
        h(s.modified_bytes),
        s.types,
        s.meta
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ChunkRef;

    fn file(path: &str, chunk: u8, size: u32) -> Entry {
        let mut e = Entry::new(EntryKind::File, path.into());
        e.size = size.into();
        e.mode = 0o644;
        e.chunks = vec![ChunkRef {
            id: [chunk; 32],
            blob: 0,
            offset: 0,
            len: size + crate::crypto::OVERHEAD as u32,
            raw: 0,
            skip: 0,
            take: size,
        }];
        e
    }

    fn dir(path: &str) -> Entry {
        let mut e = Entry::new(EntryKind::Dir, path.into());
        e.mode = 0o755;
        e
    }

    /// Runs [`diff`] over two lists; returns the text lines and the summary.
    fn run(old: Vec<Entry>, new: Vec<Entry>) -> Result<(String, Summary)> {
        let (mut old, mut new) = (old.into_iter(), new.into_iter());
        let mut text = Vec::new();
        let s = diff(
            &mut || Ok(old.next()),
            &mut || Ok(new.next()),
            ["a", "b"],
            &mut |c, o, n| {
                diff_line(&mut text, c, o, n);
                Ok(())
            },
        )?;
        Ok((String::from_utf8(text).unwrap(), s))
    }

    #[test]
    fn a_merge_finds_every_kind_of_change_in_walk_order() {
        let mut touched = file("/r/keep", 1, 10);
        touched.mtime = 5;
        let mut link = Entry::new(EntryKind::Symlink, "/r/link".into());
        link.target = b"x".to_vec();
        let mut relinked = link.clone();
        relinked.target = b"yy".to_vec();
        let old = vec![
            dir("/r"),
            file("/r/a", 1, 10),
            file("/r/a-b", 2, 20),
            file("/r/gone", 3, 30),
            file("/r/keep", 1, 10),
            link,
            file("/r/same", 4, 40),
            file("/r/x", 5, 50),
        ];
        let new = vec![
            dir("/r"),
            dir("/r/a"),
            // "/r/a/new" sorts before "/r/a-b" in walk order (component order).
            file("/r/a/new", 6, 60),
            file("/r/a-b", 7, 25),
            touched,
            relinked,
            file("/r/same", 4, 40),
            file("/r/x", 5, 50),
            file("/r/z", 8, 80),
        ];
        let (text, s) = run(old, new).unwrap();
        assert_eq!(
            text,
            "T            0 /r/a (was file)\n\
             +           60 /r/a/new\n\
             M           25 /r/a-b (was 20 bytes)\n\
             -           30 /r/gone\n\
             U           10 /r/keep (mtime)\n\
             M            2 /r/link (was 1 bytes)\n\
             +           80 /r/z\n"
        );
        assert_eq!(
            s,
            Summary {
                added: 2,
                added_bytes: 140,
                removed: 1,
                removed_bytes: 30,
                modified: 2,
                modified_bytes: 25,
                types: 1,
                meta: 1,
            }
        );
    }

    #[test]
    fn one_side_empty() {
        let (text, s) = run(vec![], vec![dir("/a"), file("/a/f", 1, 3)]).unwrap();
        assert_eq!(text, "+            0 /a\n+            3 /a/f\n");
        assert_eq!((s.added, s.added_bytes), (2, 3));
        let (text, s) = run(vec![file("/f", 1, 3)], vec![]).unwrap();
        assert_eq!(text, "-            3 /f\n");
        assert_eq!((s.removed, s.removed_bytes), (1, 3));
        assert_eq!(run(vec![], vec![]).unwrap().1, Summary::default());
    }

    /// A stream out of walk order would make the merge report wrong changes:
    /// it fails instead, naming the snapshot.
    #[test]
    fn entries_out_of_order_are_damage() {
        let e = run(vec![file("/b", 1, 1), file("/a", 1, 1)], vec![]).unwrap_err();
        assert!(e.to_string().contains("snapshot a"), "{e}");
        assert!(e.to_string().contains("out of order at /a"), "{e}");
        assert!(run(vec![], vec![file("/a", 1, 1), file("/a", 1, 1)]).is_err());
        // "/a-b" after "/a/x" is walk order, though '-' < '/' as bytes.
        assert!(run(vec![file("/a/x", 1, 1), file("/a-b", 1, 1)], vec![]).is_ok());
    }

    #[test]
    fn content_is_compared_by_chunk_ids_and_tags() {
        let a = file("/f", 1, 10);
        assert!(same_content(&a, &a.clone()));
        // Same size, another chunk: changed even with the same mtime.
        assert!(!same_content(&a, &file("/f", 2, 10)));
        // Packed (a slice of a shared chunk, with the tag) vs a chunk of its own:
        // the tag is the start of the whole content's id.
        let mut packed = file("/f", 9, 10);
        packed.chunks[0].skip = 100;
        packed.chunks[0].len += 200;
        packed.tag = Some([1; 8]);
        assert!(same_content(&a, &packed));
        packed.tag = Some([3; 8]);
        assert!(!same_content(&a, &packed));
        let empty = Entry::new(EntryKind::File, b"/e".to_vec());
        assert!(same_content(&empty, &empty.clone()));
        assert_eq!(compare(&a, &file("/f", 2, 10)), Some(Change::Modified));
        let mut chmod = a.clone();
        chmod.mode = 0o600;
        chmod.uid = 7;
        assert_eq!(compare(&a, &chmod), Some(Change::Meta));
        assert_eq!(meta_changes(&a, &chmod), [true, true, false, false]);
        let mut acl = a.clone();
        acl.xattrs = vec![(b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0])];
        assert_eq!(compare(&a, &acl), Some(Change::Meta));
        assert_eq!(meta_changes(&a, &acl), [false, false, false, true]);
        assert_eq!(compare(&a, &a.clone()), None);
    }

    #[test]
    fn filters_select_runs_and_know_when_they_are_past() {
        let mut f = Filter::new(vec![b"/r/a".to_vec(), b"/r/c/".to_vec()]);
        assert!(!f.selects(b"/r"));
        assert!(f.selects(b"/r/a"));
        assert!(f.selects(b"/r/a/x"));
        assert!(!f.selects(b"/r/a-b"));
        assert!(!f.past(b"/r/a-b"));
        assert_eq!(f.unmatched(), Some(&b"/r/c/"[..]));
        assert!(f.selects(b"/r/c/d"));
        assert!(!f.past(b"/r/c/d"));
        assert!(f.past(b"/r/d"));
        assert_eq!(f.unmatched(), None);
        let mut all = Filter::new(Vec::new());
        assert!(all.selects(b"/anything") && !all.past(b"/z"));
    }

    #[test]
    fn long_and_json_lines() {
        let mut e = file("/r/a \"b\"", 1, 1234);
        e.mode = 0o4755;
        e.uid = 1000;
        e.gid = 100;
        e.mtime = 1_764_669_600; // 2025-12-02 10:00:00 UTC
        let mut out = Vec::new();
        long_line(&mut out, &e);
        json_line(&mut out, &e);
        let mut l = Entry::new(EntryKind::Symlink, b"/r/l".to_vec());
        l.mode = 0o777;
        l.target = b"a\nb".to_vec();
        l.mtime_ns = 5;
        long_line(&mut out, &l);
        json_line(&mut out, &l);
        let mut d = dir("/r");
        d.mode = 0o1777;
        long_line(&mut out, &d);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-rwsr-xr-x 1000:100            1234 2025-12-02 10:00:00 /r/a \"b\"\n\
             {\"path\":\"/r/a \\\"b\\\"\",\"type\":\"file\",\"mode\":2541,\"uid\":1000,\"gid\":100,\"size\":1234,\"mtime\":\"2025-12-02T10:00:00Z\"}\n\
             lrwxrwxrwx 0:0                    3 1970-01-01 00:00:00 /r/l -> a\nb\n\
             {\"path\":\"/r/l\",\"type\":\"symlink\",\"mode\":511,\"uid\":0,\"gid\":0,\"size\":3,\"mtime\":\"1970-01-01T00:00:00.000000005Z\",\"target\":\"a\\nb\"}\n\
             drwxrwxrwt 0:0                    0 1970-01-01 00:00:00 /r\n"
        );
    }

    #[test]
    fn diff_json_and_summary() {
        let mut out = Vec::new();
        let a = file("/f", 1, 10);
        let mut b = a.clone();
        b.mode = 0o600;
        diff_json(&mut out, Change::Meta, Some(&a), Some(&b));
        diff_json(&mut out, Change::Removed, Some(&a), None);
        summary_json(
            &mut out,
            &Summary {
                added: 1,
                added_bytes: 2,
                ..Summary::default()
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"change\":\"metadata\",\"path\":\"/f\",\"type\":\"file\",\"mode\":384,\"uid\":0,\"gid\":0,\"size\":10,\"mtime\":\"1970-01-01T00:00:00Z\",\"old_type\":\"file\",\"old_size\":10,\"what\":[\"mode\"]}\n\
             {\"change\":\"removed\",\"path\":\"/f\",\"type\":\"file\",\"mode\":420,\"uid\":0,\"gid\":0,\"size\":10,\"mtime\":\"1970-01-01T00:00:00Z\"}\n\
             {\"change\":\"summary\",\"added\":1,\"added_bytes\":2,\"removed\":0,\"removed_bytes\":0,\"modified\":0,\"modified_bytes\":0,\"type_changed\":0,\"metadata\":0}\n"
        );
        assert_eq!(
            summary_line(&Summary::default()),
            "0 added (0 B), 0 removed (0 B), 0 modified (0 B now), 0 type changed, 0 metadata only"
        );
    }

    /// Chunks inserted again (other files of a pack, later snapshots) count
    /// once, also once spilled to runs on disk.
    #[test]
    fn distinct_chunks_count_once_across_spilled_runs() {
        let dir = std::env::temp_dir().join(format!("chute-distinct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Distinct(RunChunks::new(&dir.join("d"), 3, false));
        let over = crate::crypto::OVERHEAD as u32;
        for round in 0..3u8 {
            for i in 0..10u8 {
                let mut c = file("/f", i, 100 + u32::from(i)).chunks[0];
                c.skip = u32::from(round);
                d.insert(&c).unwrap();
            }
        }
        assert!(d.0.runs() > 0);
        let mut t = Tally::default();
        d.count(&mut t).unwrap();
        let unique: u64 = (0..10).map(|i| 100 + i).sum();
        assert_eq!((t.chunks, t.unique_bytes), (10, unique));
        assert_eq!(t.stored_bytes, unique + 10 * u64::from(over));
        t.bytes = 3 * unique;
        assert_eq!(t.dedup(), 3.0);
        assert_eq!(Tally::default().dedup(), 1.0);
        drop(d);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn times() {
        let mut out = Vec::new();
        push_time(&mut out, 0, 0, false);
        out.push(b'|');
        push_time(&mut out, 951_782_400, 120_000_000, true); // 2000-02-29
        assert_eq!(out, b"1970-01-01 00:00:00|2000-02-29T00:00:00.120000000Z");
    }
}
