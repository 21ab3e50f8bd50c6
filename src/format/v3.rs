//! Manifest version 3: a deduplicated tree of compact, content-defined segments.
//!
//! The byte layout is documented with the other formats in [`crate::format`]
//! ("Manifest version 3"); this module holds its one writer ([`ManifestWriter`])
//! and the decoders the reader ([`super::Entries`]) uses. Invariants kept here:
//! - a node's bytes depend only on the entries (and the places of the nodes below
//!   it), never on what came before it in the walk beyond the cut rule, so an
//!   unchanged run of entries gives the same node id again and the sink can refer
//!   to the parent snapshot's copy instead of storing a new one;
//! - every decoder checks indexes, lengths and counts before it allocates and
//!   refuses trailing bytes: a bad node is lost, never a panic.

use super::{ChunkRef, Entry, EntryKind, Error, Lost, MAX_BLOBS, MAX_CHUNKS, MAX_PATH, Result};
use super::{MAX_XATTR_VALUE, MAX_XATTRS};
use super::{READ_AHEAD, SEGMENT_TARGET, Span};
use crate::crypto::{ChunkBuf, ChunkId, Keys, OVERHEAD};
use std::collections::HashMap;
use std::io;

/// Format version of version 3 manifest nodes (the first plaintext byte).
pub const MANIFEST_V3: u8 = 3;
/// Node type byte of a segment (entries).
pub const NODE_SEGMENT: u8 = 1;
/// Node type byte of a table (child segments).
pub const NODE_TABLE: u8 = 2;
/// Node type byte of a segment some of whose chunks are stored compressed: a
/// segment with the compressed rows' table after its chunk rows.
pub const NODE_SEGMENT_PACKED: u8 = 3;
/// A segment is cut after an entry only once its plaintext holds this many bytes.
pub const SEGMENT_MIN: usize = 512;
/// ... and then after an entry whose path's [`Keys::cut_hash`] is 0 modulo this.
pub const SEGMENT_CUT: u32 = 16;
/// A table is cut after a child only once it holds this many children ...
pub const TABLE_MIN: usize = 16;
/// ... and then after a child whose id's cut hash is 0 modulo this ...
pub const TABLE_CUT: u32 = 64;
/// ... and always at this many.
pub const TABLE_MAX: usize = 1024;
/// Flags in a v3 entry's kind byte (kind in the low 3 bits): an 8-byte content
/// tag follows the refs; uid and gid are the previous entry's; mode is the
/// previous entry's; (a file) dev is the previous file's.
const TAG_FLAG: u8 = 0x80;
/// The kind (low 4 bits) of a file with other hard links, encoded as a file.
const KIND_LINKED: u8 = 5;
/// In a kind byte (version 6 headers): extended attributes follow the entry.
const XATTR_FLAG: u8 = 0x08;
const SAME_OWNER: u8 = 0x40;
const SAME_MODE: u8 = 0x20;
const SAME_DEV: u8 = 0x10;
/// Nanoseconds a second.
const NS: i128 = 1_000_000_000;
/// Smallest sealed node: the seal's overhead and the version and type bytes.
const MIN_NODE: u32 = OVERHEAD as u32 + 2;

/// Where a version 3 manifest node lives: a table node in a header's root list,
/// a segment in a table. `blob` indexes the list's own blob table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeRef {
    pub id: ChunkId,
    pub blob: u32,
    /// Absolute offset in that blob's part 0.
    pub offset: u64,
    /// Sealed length.
    pub len: u32,
    /// Entries the node holds (a table: the sum over its children).
    pub entries: u64,
}

/// What [`ManifestWriter::finish`] returns: the header's root list and counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Root {
    /// The root list's blob table (`NodeRef::blob` indexes it).
    pub blobs: Vec<String>,
    /// The table nodes, in walk order.
    pub nodes: Vec<NodeRef>,
    pub entries: u64,
    pub segments: u64,
    /// Some entry is of a kind only version 6 headers announce (a FIFO, a
    /// hard-linked file, extended attributes, a compressed chunk).
    pub v6: bool,
}

impl Root {
    /// Puts the root list into `h` and makes it a version 4 header (its
    /// `manifest_offset`/`manifest_len` stay the caller's: see the format docs).
    pub fn set_in(&self, h: &mut super::Header) {
        h.node_blobs = self.blobs.clone();
        h.nodes = self.nodes.clone();
        h.segments = u32::try_from(self.segments).unwrap_or(u32::MAX);
        h.table.clear();
        h.version = match self.v6 {
            true => super::HEADER_V6,
            false => super::HEADER_V4,
        };
    }
}

// ---- varints --------------------------------------------------------------

pub(super) fn put_var(out: &mut Vec<u8>, v: u64) {
    put_var128(out, u128::from(v));
}

fn put_var128(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A time as nanoseconds since the epoch (a nanosecond field of 10^9 or more,
/// which no file system gives, is stored as 999,999,999).
fn ns(secs: i64, nanos: u32) -> i128 {
    i128::from(secs) * NS + i128::from(nanos.min(999_999_999))
}

fn zz128(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

fn unzz128(u: u128) -> i128 {
    ((u >> 1) as i128) ^ -((u & 1) as i128)
}

/// Seconds and nanoseconds of a time in nanoseconds, if the seconds fit.
fn split_ns(t: i128) -> Option<(i64, u32)> {
    Some((
        i64::try_from(t.div_euclid(NS)).ok()?,
        t.rem_euclid(NS) as u32,
    ))
}

pub(super) fn var_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzz(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// A cursor over a node's plaintext.
struct Cur<'a> {
    b: &'a [u8],
}

impl<'a> Cur<'a> {
    fn u8(&mut self) -> Result<u8> {
        let (&x, rest) = self.b.split_first().ok_or(trunc())?;
        self.b = rest;
        Ok(x)
    }
    fn var(&mut self) -> Result<u64> {
        u64::try_from(self.var128()?).map_err(|_| Error::Malformed("varint"))
    }
    fn var128(&mut self) -> Result<u128> {
        let mut v = 0u128;
        for i in 0..19 {
            let x = self.u8()?;
            if i == 18 && x > 3 {
                return Err(Error::Malformed("varint"));
            }
            v |= u128::from(x & 0x7f) << (7 * i);
            if x < 0x80 {
                return Ok(v);
            }
        }
        Err(Error::Malformed("varint"))
    }
    fn var32(&mut self, what: &'static str) -> Result<u32> {
        u32::try_from(self.var()?).map_err(|_| Error::Malformed(what))
    }
    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        if n > self.b.len() as u64 {
            return Err(trunc());
        }
        let (x, rest) = self.b.split_at(n as usize);
        self.b = rest;
        Ok(x)
    }
    fn id(&mut self) -> Result<ChunkId> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }
    /// A count of items each at least `min` bytes long: refused unless that many
    /// could still follow, so no count allocates beyond the node's own size.
    fn count(&mut self, min: u64, what: &'static str) -> Result<u64> {
        let n = self.var()?;
        if n.saturating_mul(min) > self.b.len() as u64 {
            return Err(Error::Malformed(what));
        }
        Ok(n)
    }
    fn blobs(&mut self) -> Result<Vec<String>> {
        let n = self.count(1, "node blob table")?;
        if n > u64::from(MAX_BLOBS) {
            return Err(Error::Malformed("node blob table"));
        }
        let mut names = Vec::new();
        for _ in 0..n {
            let len = self.var()?;
            if len > u64::from(u16::MAX) {
                return Err(Error::Malformed("blob path"));
            }
            let s =
                std::str::from_utf8(self.take(len)?).map_err(|_| Error::Malformed("blob path"))?;
            names.push(s.to_string());
        }
        Ok(names)
    }
    fn head(&mut self, kind: u8) -> Result<()> {
        match self.head_any()? {
            k if k == kind => Ok(()),
            _ => Err(Error::Malformed("manifest node type")),
        }
    }
    /// The version check of [`Cur::head`]; returns the node type.
    fn head_any(&mut self) -> Result<u8> {
        match self.u8()? {
            MANIFEST_V3 => {}
            v if v > MANIFEST_V3 => return Err(Error::Newer(v, MANIFEST_V3)),
            _ => return Err(Error::Malformed("manifest node version")),
        }
        self.u8()
    }
}

fn trunc() -> Error {
    Error::Malformed("manifest node (truncated)")
}

fn put_name(out: &mut Vec<u8>, s: &str) {
    put_var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

// ---- entries --------------------------------------------------------------

/// What an entry's encoding is relative to: the one before it in its segment.
#[derive(Default)]
struct Prev {
    path: Vec<u8>,
    /// Nanoseconds.
    mtime: i128,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Of the previous file.
    inode: u64,
    dev: u64,
}

impl Prev {
    fn after(&mut self, e: &Entry) {
        self.path.clear();
        self.path.extend_from_slice(&e.path);
        self.mtime = ns(e.mtime, e.mtime_ns);
        self.mode = e.mode;
        self.uid = e.uid;
        self.gid = e.gid;
        if e.kind == EntryKind::File {
            self.inode = e.inode;
            self.dev = e.dev;
        }
    }
}

/// Encodes `e` after `prev`, its refs as indexes `chunk(i)` of the segment's
/// chunk table.
fn encode_entry(e: &Entry, prev: &Prev, out: &mut Vec<u8>, mut chunk: impl FnMut(usize) -> u32) {
    let file = e.kind == EntryKind::File;
    let kind = match e.kind {
        EntryKind::File if e.linked => KIND_LINKED,
        k => k as u8,
    } | if e.xattrs.is_empty() { 0 } else { XATTR_FLAG };
    let owner = e.uid == prev.uid && e.gid == prev.gid;
    let mode = e.mode == prev.mode;
    let dev = file && e.dev == prev.dev;
    let flags = [
        (file && e.tag.is_some(), TAG_FLAG),
        (owner, SAME_OWNER),
        (mode, SAME_MODE),
        (dev, SAME_DEV),
    ];
    out.push(
        flags
            .iter()
            .fold(kind, |k, &(on, f)| if on { k | f } else { k }),
    );
    let shared = prev
        .path
        .iter()
        .zip(&e.path)
        .take_while(|(a, b)| a == b)
        .count();
    put_var(out, shared as u64);
    put_var(out, (e.path.len() - shared) as u64);
    out.extend_from_slice(&e.path[shared..]);
    if !mode {
        put_var(out, u64::from(e.mode));
    }
    if !owner {
        put_var(out, u64::from(e.uid));
        put_var(out, u64::from(e.gid));
    }
    let mtime = ns(e.mtime, e.mtime_ns);
    put_var128(out, zz128(mtime - prev.mtime));
    match e.kind {
        EntryKind::File => {
            put_var(out, e.size);
            if !dev {
                put_var(out, e.dev);
            }
            put_var(out, zz(e.inode.wrapping_sub(prev.inode) as i64));
            put_var128(out, zz128(ns(e.ctime, e.ctime_ns) - mtime));
            put_var(out, e.chunks.len() as u64);
            for (i, c) in e.chunks.iter().enumerate() {
                put_var(out, u64::from(chunk(i)));
                put_var(out, u64::from(c.skip));
                put_var(out, u64::from(c.take));
            }
            if let Some(t) = &e.tag {
                out.extend_from_slice(t);
            }
        }
        EntryKind::Dir | EntryKind::Fifo => {}
        EntryKind::Symlink => {
            put_var(out, e.target.len() as u64);
            out.extend_from_slice(&e.target);
        }
    }
    if !e.xattrs.is_empty() {
        put_var(out, e.xattrs.len() as u64);
        for (name, value) in &e.xattrs {
            put_var(out, name.len() as u64);
            out.extend_from_slice(name);
            put_var(out, value.len() as u64);
            out.extend_from_slice(value);
        }
    }
}

/// One row of a segment's chunk table.
#[derive(Clone, Copy)]
struct Row {
    id: ChunkId,
    blob: u32,
    offset: u64,
    len: u32,
    /// 0, or the uncompressed length of a chunk stored compressed.
    raw: u32,
}

fn decode_entry(c: &mut Cur, prev: &mut Prev, rows: &[Row], v6: bool) -> Result<Entry> {
    let k = c.u8()?;
    // FIFOs, linked files and extended attributes are announced by a version 6
    // header: under an older one they are damage, not something to guess at.
    if !v6 && (matches!(k & 0x07, 4 | KIND_LINKED) || k & XATTR_FLAG != 0) {
        return Err(Error::Malformed(
            "manifest entry kind (newer than its header)",
        ));
    }
    let kind = match k & 0x07 {
        1 => EntryKind::File,
        2 => EntryKind::Dir,
        3 => EntryKind::Symlink,
        4 => EntryKind::Fifo,
        KIND_LINKED => EntryKind::File,
        _ => return Err(Error::Malformed("manifest entry kind")),
    };
    let linked = k & 0x07 == KIND_LINKED;
    let tagged = k & TAG_FLAG != 0;
    if (tagged || k & SAME_DEV != 0) && kind != EntryKind::File {
        return Err(Error::Malformed("manifest entry kind"));
    }
    let shared = c.var()?;
    let suffix = c.var()?;
    if shared > prev.path.len() as u64 || suffix > u64::from(MAX_PATH) - shared {
        return Err(Error::Malformed("path"));
    }
    let mut path = prev.path[..shared as usize].to_vec();
    path.extend_from_slice(c.take(suffix)?);
    let mut e = Entry::new(kind, path);
    e.linked = linked;
    e.mode = match k & SAME_MODE {
        0 => c.var32("mode")?,
        _ => prev.mode,
    };
    (e.uid, e.gid) = match k & SAME_OWNER {
        0 => (c.var32("uid")?, c.var32("gid")?),
        _ => (prev.uid, prev.gid),
    };
    let mtime = prev
        .mtime
        .checked_add(unzz128(c.var128()?))
        .ok_or(Error::Malformed("mtime"))?;
    (e.mtime, e.mtime_ns) = split_ns(mtime).ok_or(Error::Malformed("mtime"))?;
    match kind {
        EntryKind::File => {
            e.size = c.var()?;
            e.dev = match k & SAME_DEV {
                0 => c.var()?,
                _ => prev.dev,
            };
            e.inode = prev.inode.wrapping_add(unzz(c.var()?) as u64);
            let ctime = mtime
                .checked_add(unzz128(c.var128()?))
                .ok_or(Error::Malformed("ctime"))?;
            (e.ctime, e.ctime_ns) = split_ns(ctime).ok_or(Error::Malformed("ctime"))?;
            // Each ref takes at least 3 bytes.
            let n = c.count(3, "chunk count")?;
            if n > u64::from(MAX_CHUNKS) {
                return Err(Error::Malformed("chunk count"));
            }
            let mut total = 0u64;
            for _ in 0..n {
                let row = usize::try_from(c.var()?)
                    .ok()
                    .and_then(|i| rows.get(i))
                    .ok_or(Error::Malformed("chunk reference"))?;
                let skip = c.var32("chunk reference")?;
                let take = c.var32("chunk reference")?;
                let r = ChunkRef {
                    id: row.id,
                    blob: row.blob,
                    offset: row.offset,
                    len: row.len,
                    raw: row.raw,
                    skip,
                    take,
                };
                if u64::from(skip) + u64::from(take) > r.plain_len() {
                    return Err(Error::Malformed("chunk reference"));
                }
                total += u64::from(take);
                e.chunks.push(r);
            }
            if total != e.size {
                return Err(Error::Malformed("file size"));
            }
            if tagged {
                e.tag = Some(c.take(8)?.try_into().expect("8 bytes"));
            }
        }
        EntryKind::Dir | EntryKind::Fifo => {}
        EntryKind::Symlink => {
            let n = c.var()?;
            if n > u64::from(MAX_PATH) {
                return Err(Error::Malformed("symlink target"));
            }
            e.target = c.take(n)?.to_vec();
        }
    }
    if k & XATTR_FLAG != 0 {
        let n = c.var()?;
        if n == 0 || n > MAX_XATTRS as u64 {
            return Err(Error::Malformed("extended attributes"));
        }
        for _ in 0..n {
            let len = c.var()?;
            if len == 0 || len > 255 {
                return Err(Error::Malformed("extended attribute name"));
            }
            let name = c.take(len)?.to_vec();
            let len = c.var()?;
            if len > MAX_XATTR_VALUE as u64 {
                return Err(Error::Malformed("extended attribute value"));
            }
            e.xattrs.push((name, c.take(len)?.to_vec()));
        }
    }
    prev.after(&e);
    Ok(e)
}

/// Decodes a segment's plaintext holding `expect` entries, adding the blobs of
/// its table to `blobs` (whose `at` maps names to indexes) and returning its
/// entries with their chunks' blob indexes in that table. `v6`: the header is
/// version 6 or later, the only ones whose segments may hold compressed rows,
/// FIFOs, linked files and extended attributes.
pub(crate) fn decode_segment(
    plain: &[u8],
    expect: u64,
    v6: bool,
    blobs: &mut Vec<String>,
    at: &mut HashMap<String, u32>,
) -> Result<Vec<Entry>> {
    let mut c = Cur { b: plain };
    let packed = match c.head_any()? {
        NODE_SEGMENT => false,
        NODE_SEGMENT_PACKED if v6 => true,
        _ => return Err(Error::Malformed("manifest node type")),
    };
    let names = c.blobs()?;
    // A row: 32-byte id and three varints.
    let n = c.count(35, "chunk table")?;
    let mut rows = Vec::new();
    for _ in 0..n {
        let r = Row {
            id: c.id()?,
            blob: c.var32("chunk table")?,
            offset: c.var()?,
            len: c.var32("chunk table")?,
            raw: 0,
        };
        if r.blob as usize >= names.len()
            || r.len < OVERHEAD as u32
            || r.offset.checked_add(u64::from(r.len)).is_none()
        {
            return Err(Error::Malformed("chunk table"));
        }
        rows.push(r);
    }
    if packed {
        // Compressed rows: at least one, ascending, each within a chunk's
        // largest size and larger than what it is stored in.
        let n = c.count(2, "compressed rows")?;
        let mut next = 0u64;
        if n == 0 {
            return Err(Error::Malformed("compressed rows"));
        }
        for _ in 0..n {
            let i = c.var()?;
            let raw = c.var32("compressed rows")?;
            let row = usize::try_from(i)
                .ok()
                .filter(|_| i >= next)
                .and_then(|i| rows.get_mut(i))
                .ok_or(Error::Malformed("compressed rows"))?;
            if raw as usize > crate::chunker::MAX
                || u64::from(raw) + OVERHEAD as u64 <= u64::from(row.len)
            {
                return Err(Error::Malformed("compressed rows"));
            }
            row.raw = raw;
            next = i + 1;
        }
    }
    // An entry takes at least 4 bytes (kind, shared, suffix length, mtime: a
    // directory like the one before it).
    let count = c.count(4, "manifest segment (entry count)")?;
    if count != expect {
        return Err(Error::Malformed("manifest segment (entry count)"));
    }
    let mut prev = Prev::default();
    let mut entries = Vec::new();
    for _ in 0..count {
        entries.push(decode_entry(&mut c, &mut prev, &rows, v6)?);
    }
    if !c.b.is_empty() {
        return Err(Error::Malformed("manifest segment (trailing bytes)"));
    }
    if blobs.len() as u64 + names.len() as u64 > u64::from(MAX_BLOBS) {
        return Err(Error::Malformed("blob table"));
    }
    let map: Vec<u32> = names
        .into_iter()
        .map(|name| {
            *at.entry(name.clone()).or_insert_with(|| {
                blobs.push(name);
                (blobs.len() - 1) as u32
            })
        })
        .collect();
    for r in entries.iter_mut().flat_map(|e| e.chunks.iter_mut()) {
        r.blob = map[r.blob as usize];
    }
    Ok(entries)
}

/// Decodes a table node's plaintext: its blob table and children, checking that
/// the children hold `expect` entries in all.
pub(crate) fn decode_table(plain: &[u8], expect: u64) -> Result<(Vec<String>, Vec<NodeRef>)> {
    let mut c = Cur { b: plain };
    c.head(NODE_TABLE)?;
    let names = c.blobs()?;
    // A child: 32-byte id and four varints.
    let n = c.count(36, "manifest table")?;
    if n == 0 || n > TABLE_MAX as u64 {
        return Err(Error::Malformed("manifest table"));
    }
    let mut kids = Vec::new();
    let mut sum = 0u64;
    for _ in 0..n {
        let k = NodeRef {
            id: c.id()?,
            blob: c.var32("manifest table")?,
            offset: c.var()?,
            len: c.var32("manifest table")?,
            entries: c.var()?,
        };
        if k.blob as usize >= names.len()
            || k.len < MIN_NODE
            || k.offset.checked_add(u64::from(k.len)).is_none()
        {
            return Err(Error::Malformed("manifest table"));
        }
        sum = sum
            .checked_add(k.entries)
            .ok_or(Error::Malformed("manifest table"))?;
        kids.push(k);
    }
    if !c.b.is_empty() {
        return Err(Error::Malformed("manifest table (trailing bytes)"));
    }
    if sum != expect {
        return Err(Error::Malformed("manifest table (entry count)"));
    }
    Ok((names, kids))
}

// ---- writing --------------------------------------------------------------

/// A chunk reference's place, what a segment's chunk table holds once.
type Place = (ChunkId, u32, u64, u32, u32);

fn place(c: &ChunkRef) -> Place {
    (c.id, c.blob, c.offset, c.len, c.raw)
}

/// The node blob table of a table or of the root list.
#[derive(Default)]
struct Names {
    names: Vec<String>,
    at: HashMap<String, u32>,
}

impl Names {
    fn index(&mut self, name: String) -> u32 {
        let n = self.names.len() as u32;
        *self.at.entry(name).or_insert_with_key(|k| {
            self.names.push(k.clone());
            n
        })
    }
    fn clear(&mut self) {
        self.names.clear();
        self.at.clear();
    }
}

/// Writes a v3 manifest as the walk goes, in memory bounded by one segment + one
/// table node: a finished node is sealed and handed to the caller's `store` at
/// once, which says where it is (and may answer with a place where the same id
/// already is, storing nothing).
pub struct ManifestWriter<'k> {
    keys: &'k Keys,
    // The segment being filled.
    seg_local: HashMap<u32, u32>,
    seg_names: Vec<String>,
    seg_names_len: usize,
    rows_at: HashMap<Place, u32>,
    rows: Vec<u8>,
    nrows: u32,
    /// The compressed rows' table (type 3 segments), encoded, and its length.
    packed: Vec<u8>,
    npacked: u64,
    body: Vec<u8>,
    count: u64,
    prev: Prev,
    // Staging of one entry.
    e: Vec<u8>,
    new_names: Vec<(u32, String)>,
    new_rows: Vec<(Place, u32)>,
    new_at: HashMap<Place, u32>,
    // The table being filled.
    kids: Vec<NodeRef>,
    kid_names: Names,
    kid_entries: u64,
    // The root list.
    root: Root,
    root_names: Names,
    /// The node being sealed: room for the header, then its plaintext, sealed
    /// in place ([`Keys::seal_node_in_place`]).
    node: Vec<u8>,
}

/// Where `store` put a node.
type Store<'a, E> = dyn FnMut(&ChunkId, &[u8]) -> std::result::Result<(String, u64), E> + 'a;

impl<'k> ManifestWriter<'k> {
    pub fn new(keys: &'k Keys) -> ManifestWriter<'k> {
        ManifestWriter {
            keys,
            seg_local: HashMap::new(),
            seg_names: Vec::new(),
            seg_names_len: 0,
            rows_at: HashMap::new(),
            rows: Vec::new(),
            nrows: 0,
            packed: Vec::new(),
            npacked: 0,
            body: Vec::new(),
            count: 0,
            prev: Prev::default(),
            e: Vec::new(),
            new_names: Vec::new(),
            new_rows: Vec::new(),
            new_at: HashMap::new(),
            kids: Vec::new(),
            kid_names: Names::default(),
            kid_entries: 0,
            root: Root::default(),
            root_names: Names::default(),
            node: Vec::new(),
        }
    }

    /// Adds `e` (the next entry in walk order). `blob(i)` names blob index i of
    /// the entry's refs (the caller's table), asked only for blobs new to the
    /// segment; `store(id, sealed)` puts a finished node somewhere and says where:
    /// (blob path, absolute offset in its part 0).
    pub fn push<E>(
        &mut self,
        e: &Entry,
        mut blob: impl FnMut(u32) -> String,
        store: &mut Store<'_, E>,
    ) -> std::result::Result<(), E> {
        let mut size = self.stage(e, &mut blob);
        if self.count > 0 && size > SEGMENT_TARGET {
            self.flush_segment(store)?;
            size = self.stage(e, &mut blob);
        }
        // Commit the staged entry.
        for (b, name) in self.new_names.drain(..) {
            self.seg_local.insert(b, self.seg_names.len() as u32);
            self.seg_names_len += var_len(name.len() as u64) + name.len();
            self.seg_names.push(name);
        }
        for (p, local) in self.new_rows.drain(..) {
            self.rows.extend_from_slice(&p.0);
            put_var(&mut self.rows, u64::from(local));
            put_var(&mut self.rows, p.2);
            put_var(&mut self.rows, u64::from(p.3));
            if p.4 != 0 {
                put_var(&mut self.packed, u64::from(self.nrows));
                put_var(&mut self.packed, u64::from(p.4));
                self.npacked += 1;
            }
            self.rows_at.insert(p, self.nrows);
            self.nrows += 1;
        }
        self.new_at.clear();
        self.body.extend_from_slice(&self.e);
        self.count += 1;
        self.root.entries += 1;
        self.root.v6 |= e.kind == EntryKind::Fifo
            || e.linked
            || !e.xattrs.is_empty()
            || e.chunks.iter().any(|c| c.raw != 0);
        self.prev.after(e);
        if size >= SEGMENT_MIN && self.keys.cut_hash(&e.path) % SEGMENT_CUT == 0 {
            self.flush_segment(store)?;
        }
        Ok(())
    }

    /// Seals what is left (a manifest of no entries is one empty segment in one
    /// table) and returns the root list.
    pub fn finish<E>(mut self, store: &mut Store<'_, E>) -> std::result::Result<Root, E> {
        if self.count > 0 || self.root.segments == 0 {
            self.flush_segment(store)?;
        }
        if !self.kids.is_empty() {
            self.flush_table(store)?;
        }
        Ok(self.root)
    }

    /// Encodes `e` into `self.e` against the segment as it is, noting the blobs
    /// and chunk rows it would add; returns the segment's plaintext size with it.
    fn stage(&mut self, e: &Entry, blob: &mut impl FnMut(u32) -> String) -> usize {
        self.new_names.clear();
        self.new_rows.clear();
        self.new_at.clear();
        let mut extra = 0usize;
        let mut packed = self.npacked;
        let mut idx = Vec::with_capacity(e.chunks.len());
        for c in &e.chunks {
            let p = place(c);
            if let Some(&i) = self.rows_at.get(&p).or_else(|| self.new_at.get(&p)) {
                idx.push(i);
                continue;
            }
            let local = match self.seg_local.get(&c.blob) {
                Some(&l) => l,
                None => match self.new_names.iter().position(|(b, _)| *b == c.blob) {
                    Some(k) => (self.seg_names.len() + k) as u32,
                    None => {
                        let name = blob(c.blob);
                        extra += var_len(name.len() as u64) + name.len();
                        self.new_names.push((c.blob, name));
                        (self.seg_names.len() + self.new_names.len() - 1) as u32
                    }
                },
            };
            let i = self.nrows + self.new_rows.len() as u32;
            extra += 32 + var_len(u64::from(local)) + var_len(p.2) + var_len(u64::from(p.3));
            if p.4 != 0 {
                extra += var_len(u64::from(i)) + var_len(u64::from(p.4));
                packed += 1;
            }
            self.new_rows.push((p, local));
            self.new_at.insert(p, i);
            idx.push(i);
        }
        self.e.clear();
        encode_entry(e, &self.prev, &mut self.e, |i| idx[i]);
        let names = self.seg_names.len() + self.new_names.len();
        let rows = self.nrows as usize + self.new_rows.len();
        2 + var_len(names as u64)
            + self.seg_names_len
            + var_len(rows as u64)
            + self.rows.len()
            + if packed > 0 {
                var_len(packed) + self.packed.len()
            } else {
                0
            }
            + extra
            + var_len(self.count + 1)
            + self.body.len()
            + self.e.len()
    }

    fn flush_segment<E>(&mut self, store: &mut Store<'_, E>) -> std::result::Result<(), E> {
        let p = &mut self.node;
        p.clear();
        p.resize(ChunkBuf::PREFIX, 0);
        // Type 1 unless a chunk is stored compressed: a segment without one is
        // byte for byte what chutes before compression wrote (and deduplicates
        // against their nodes).
        let kind = match self.npacked {
            0 => NODE_SEGMENT,
            _ => NODE_SEGMENT_PACKED,
        };
        p.extend_from_slice(&[MANIFEST_V3, kind]);
        put_var(p, self.seg_names.len() as u64);
        for n in &self.seg_names {
            put_name(p, n);
        }
        put_var(p, u64::from(self.nrows));
        p.extend_from_slice(&self.rows);
        if self.npacked > 0 {
            put_var(p, self.npacked);
            p.extend_from_slice(&self.packed);
        }
        put_var(p, self.count);
        p.extend_from_slice(&self.body);
        let id = self.keys.seal_node_in_place(&mut self.node);
        let (path, offset) = store(&id, &self.node)?;
        self.kids.push(NodeRef {
            id,
            blob: self.kid_names.index(path),
            offset,
            len: self.node.len() as u32,
            entries: self.count,
        });
        self.kid_entries += self.count;
        self.root.segments += 1;
        self.seg_local.clear();
        self.seg_names.clear();
        self.seg_names_len = 0;
        self.rows_at.clear();
        self.rows.clear();
        self.nrows = 0;
        self.packed.clear();
        self.npacked = 0;
        self.body.clear();
        self.count = 0;
        self.prev = Prev::default();
        let n = self.kids.len();
        if (n >= TABLE_MIN && self.keys.cut_hash(&id) % TABLE_CUT == 0) || n >= TABLE_MAX {
            self.flush_table(store)?;
        }
        Ok(())
    }

    fn flush_table<E>(&mut self, store: &mut Store<'_, E>) -> std::result::Result<(), E> {
        let p = &mut self.node;
        p.clear();
        p.resize(ChunkBuf::PREFIX, 0);
        p.extend_from_slice(&[MANIFEST_V3, NODE_TABLE]);
        put_var(p, self.kid_names.names.len() as u64);
        for n in &self.kid_names.names {
            put_name(p, n);
        }
        put_var(p, self.kids.len() as u64);
        for k in &self.kids {
            p.extend_from_slice(&k.id);
            put_var(p, u64::from(k.blob));
            put_var(p, k.offset);
            put_var(p, u64::from(k.len));
            put_var(p, k.entries);
        }
        let id = self.keys.seal_node_in_place(&mut self.node);
        let (path, offset) = store(&id, &self.node)?;
        self.root.nodes.push(NodeRef {
            id,
            blob: self.root_names.index(path),
            offset,
            len: self.node.len() as u32,
            entries: self.kid_entries,
        });
        self.root.blobs.clone_from(&self.root_names.names);
        self.kids.clear();
        self.kid_names.clear();
        self.kid_entries = 0;
        Ok(())
    }
}

// ---- reading --------------------------------------------------------------

/// The reader's fetch-ahead buffer: sealed bytes of `blob` from `at`.
#[derive(Default)]
struct Ahead {
    blob: String,
    at: u64,
    bytes: Vec<u8>,
}

/// A version 3 manifest read in walk order: one table's children and one
/// read-ahead span at a time.
pub(super) struct Reader<'k, F> {
    keys: &'k Keys,
    pub(super) fetch: F,
    roots: Vec<NodeRef>,
    root_blobs: Vec<String>,
    next_root: usize,
    kids: Vec<NodeRef>,
    kid_blobs: Vec<String>,
    next_kid: usize,
    cur: std::vec::IntoIter<Entry>,
    ahead: Ahead,
    /// Segment nodes read or lost so far (a lost table counts as one): the
    /// index [`Lost::segment`] names.
    index: u32,
    pub(super) taken: Vec<(String, NodeRef)>,
    /// Whether nodes read go to `taken` (off for readers that never take them,
    /// whose memory would otherwise grow with the manifest).
    pub(super) collect: bool,
    /// The header is version 6 or later (see [`decode_segment`]).
    v6: bool,
}

impl<'k, F> Reader<'k, F>
where
    F: FnMut(&Span) -> io::Result<Vec<u8>>,
{
    pub(super) fn new(keys: &'k Keys, h: &super::Header, fetch: F) -> Reader<'k, F> {
        Reader {
            keys,
            fetch,
            v6: h.version >= super::HEADER_V6,
            roots: h.nodes.clone(),
            root_blobs: h.node_blobs.clone(),
            next_root: 0,
            kids: Vec::new(),
            kid_blobs: Vec::new(),
            next_kid: 0,
            cur: Vec::new().into_iter(),
            ahead: Ahead::default(),
            index: 0,
            taken: Vec::new(),
            collect: true,
        }
    }

    /// The next entry that can be read; lost nodes go to `lost`.
    pub(super) fn next(
        &mut self,
        blobs: &mut Vec<String>,
        at: &mut HashMap<String, u32>,
        lost: &mut Vec<Lost>,
        last: &Option<Vec<u8>>,
    ) -> Result<Option<Entry>> {
        loop {
            if let Some(e) = self.cur.next() {
                return Ok(Some(e));
            }
            if self.next_kid < self.kids.len() {
                let i = self.next_kid;
                self.next_kid += 1;
                let k = self.kids[i];
                let name = self.kid_blobs[k.blob as usize].clone();
                let got = read_node(
                    &mut self.fetch,
                    &mut self.ahead,
                    &self.kids,
                    &self.kid_blobs,
                    i,
                );
                let opened = got.and_then(|mut sealed| {
                    let plain = self.keys.open_node(&k.id, &mut sealed)?;
                    decode_segment(plain, k.entries, self.v6, blobs, at)
                });
                if self.collect {
                    self.taken.push((name, k));
                }
                match opened {
                    Ok(entries) => self.cur = entries.into_iter(),
                    Err(Error::Io(e)) => return Err(Error::Io(e)),
                    Err(_) => super::lose(lost, self.index, k.entries, last),
                }
                self.index += 1;
                continue;
            }
            let Some(&t) = self.roots.get(self.next_root) else {
                return Ok(None);
            };
            let i = self.next_root;
            self.next_root += 1;
            self.next_kid = 0;
            self.kids.clear();
            let name = self.root_blobs[t.blob as usize].clone();
            let got = read_node(
                &mut self.fetch,
                &mut self.ahead,
                &self.roots,
                &self.root_blobs,
                i,
            );
            let opened = got.and_then(|mut sealed| {
                let plain = self.keys.open_node(&t.id, &mut sealed)?;
                decode_table(plain, t.entries)
            });
            if self.collect {
                self.taken.push((name, t));
            }
            match opened {
                Ok((names, kids)) => {
                    self.kid_blobs = names;
                    self.kids = kids;
                }
                Err(Error::Io(e)) => return Err(Error::Io(e)),
                Err(_) => {
                    super::lose(lost, self.index, t.entries, last);
                    self.index += 1;
                }
            }
        }
    }
}

/// The sealed bytes of node `i` of `list` (whose blob indexes name `names`),
/// from the read-ahead or by a read of it and the nodes after it that follow it
/// in the same blob, up to [`READ_AHEAD`] bytes. Bytes the store does not hold
/// (fetch's InvalidData) cost only the nodes in them: after a failed span, this
/// node alone.
fn read_node<F>(
    fetch: &mut F,
    ahead: &mut Ahead,
    list: &[NodeRef],
    names: &[String],
    i: usize,
) -> Result<Vec<u8>>
where
    F: FnMut(&Span) -> io::Result<Vec<u8>>,
{
    let n = list[i];
    let blob = &names[n.blob as usize];
    let len = u64::from(n.len);
    let end = n.offset + len;
    let held =
        ahead.blob == *blob && n.offset >= ahead.at && end <= ahead.at + ahead.bytes.len() as u64;
    if !held {
        let mut j = i + 1;
        let mut span = len;
        while let Some(m) = list.get(j) {
            if m.blob != n.blob
                || m.offset != n.offset + span
                || span + u64::from(m.len) > READ_AHEAD
            {
                break;
            }
            span += u64::from(m.len);
            j += 1;
        }
        // The span held is done with: freed before the next is read, so the two
        // are never held at once (and the next can take its place).
        ahead.bytes = Vec::new();
        let mut get = |span: u64, to: usize| {
            fetch(&Span {
                blob,
                offset: n.offset,
                len: span,
                nodes: &list[i..to],
            })
        };
        let got = match get(span, j) {
            Err(e) if e.kind() == io::ErrorKind::InvalidData && j > i + 1 => get(len, i + 1),
            got => got,
        };
        ahead.blob.clone_from(blob);
        ahead.at = n.offset;
        match got {
            Ok(b) if b.len() as u64 >= len => ahead.bytes = b,
            Ok(_) => {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "short manifest read",
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(Error::Malformed("manifest node the store cannot read"));
            }
            Err(e) => return Err(Error::Io(e)),
        }
    }
    let from = (n.offset - ahead.at) as usize;
    Ok(ahead.bytes[from..from + len as usize].to_vec())
}

#[cfg(test)]
mod tests {
    use super::super::{Header, decode_header, encode_header};
    use super::*;
    use crate::format::Entries;

    /// A store in memory: nodes appended to one blob per snapshot, found again by
    /// id (what a sink does against its parent's nodes).
    #[derive(Default)]
    struct Mem {
        blobs: HashMap<String, Vec<u8>>,
        known: HashMap<ChunkId, (String, u64)>,
        /// Sealed bytes stored by the last snapshot.
        stored: u64,
    }

    impl Mem {
        fn write(&mut self, blob: &str, m: &[Entry], names: &[String]) -> Root {
            self.write_all(blob, m.iter().cloned(), names)
        }

        fn write_all(
            &mut self,
            blob: &str,
            m: impl Iterator<Item = Entry>,
            names: &[String],
        ) -> Root {
            self.stored = 0;
            let mut w = ManifestWriter::new(keys());
            let mut store = |id: &ChunkId, sealed: &[u8]| -> std::result::Result<_, ()> {
                if let Some(p) = self.known.get(id) {
                    return Ok(p.clone());
                }
                let b = self.blobs.entry(blob.to_string()).or_default();
                let at = (blob.to_string(), b.len() as u64);
                b.extend_from_slice(sealed);
                self.stored += sealed.len() as u64;
                self.known.insert(*id, at.clone());
                Ok(at)
            };
            for e in m {
                w.push(&e, |b| names[b as usize].clone(), &mut store)
                    .unwrap();
            }
            w.finish(&mut store).unwrap()
        }

        fn fetch(&self) -> impl FnMut(&Span) -> io::Result<Vec<u8>> + '_ {
            |s: &Span| {
                let b = &self.blobs[s.blob];
                Ok(b[s.offset as usize..(s.offset + s.len) as usize].to_vec())
            }
        }
    }

    fn keys() -> &'static Keys {
        static K: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
        K.get_or_init(|| Keys::from_key_bytes(b"v3 tests"))
    }

    fn header(root: &Root) -> Header {
        let mut h = Header::default();
        root.set_in(&mut h);
        let back = decode_header(&encode_header(&h)).unwrap();
        assert_eq!(back, h);
        back
    }

    /// Entries with their chunks' blob names.
    type Named = Vec<(Entry, Vec<String>)>;

    /// Reads a manifest back: entries with their blobs by name, losses, nodes.
    fn read(mem: &Mem, h: &Header) -> (Named, Vec<Lost>, Vec<(String, NodeRef)>) {
        let mut r = Entries::open(keys(), "d/n/m/t9", h, mem.fetch()).unwrap();
        let mut out = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            let names = e
                .chunks
                .iter()
                .map(|c| r.blobs[c.blob as usize].clone())
                .collect();
            out.push((e, names));
        }
        let nodes = r.take_nodes();
        (out, r.lost, nodes)
    }

    fn by_name(m: &[Entry], names: &[String]) -> Vec<(Entry, Vec<String>)> {
        m.iter()
            .map(|e| {
                let n = e
                    .chunks
                    .iter()
                    .map(|c| names[c.blob as usize].clone())
                    .collect();
                (e.clone(), n)
            })
            .collect()
    }

    fn strip(v: Vec<(Entry, Vec<String>)>) -> Vec<(Entry, Vec<String>)> {
        v.into_iter()
            .map(|(mut e, n)| {
                e.chunks.iter_mut().for_each(|c| c.blob = 0);
                (e, n)
            })
            .collect()
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The bench tree: `/d/123/45/f0001234` files of 1-3 KiB, each one slice of a
    /// shared chunk of ~300 files, under their directories.
    fn bench_tree(n: usize, seed: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        bench_entries(n, seed, |e| out.push(e));
        out
    }

    /// [`bench_tree`] one entry at a time.
    fn bench_entries(n: usize, seed: u64, mut emit: impl FnMut(Entry)) {
        let mut rng = Rng(seed | 1);
        let (mut chunk, mut skip, mut left) = (0u64, 0u32, 0u32);
        let mut last_dir = String::new();
        for i in 0..n {
            let dir = format!("/d/{:03}/{:02}", i / 1000, (i / 100) % 10);
            if dir != last_dir {
                if i % 1000 == 0 {
                    let mut d =
                        Entry::new(EntryKind::Dir, format!("/d/{:03}", i / 1000).into_bytes());
                    d.mode = 0o755;
                    emit(d);
                }
                let mut d = Entry::new(EntryKind::Dir, dir.clone().into_bytes());
                d.mode = 0o755;
                d.uid = 1000;
                d.gid = 1000;
                d.mtime = 1_764_000_000 + (i / 10) as i64;
                emit(d);
                last_dir = dir.clone();
            }
            let size = 1024 + rng.below(2048) as u32;
            if left < size {
                chunk += 1;
                skip = 0;
                left = 600 << 10;
            }
            let mut f = Entry::new(EntryKind::File, format!("{dir}/f{i:07}").into_bytes());
            f.mode = 0o644;
            f.uid = 1000;
            f.gid = 1000;
            f.mtime = 1_764_000_000 + (i / 10) as i64;
            f.mtime_ns = rng.below(1_000_000_000) as u32;
            f.ctime = f.mtime;
            f.ctime_ns = f.mtime_ns;
            f.dev = 2049;
            f.inode = 1_000_000 + i as u64 * 2;
            f.size = u64::from(size);
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&chunk.to_be_bytes());
            f.chunks.push(ChunkRef {
                id,
                blob: 0,
                offset: chunk * ((600 << 10) + 46),
                len: (600 << 10) + 46,
                raw: 0,
                skip,
                take: size,
            });
            f.tag = Some(rng.next().to_be_bytes());
            skip += size;
            left -= size;
            emit(f);
        }
    }

    // A random manifest (every kind, tags, several blobs, a file larger than a
    // segment) comes back as written through ManifestWriter and Entries.
    #[test]
    fn random_manifest_round_trips() {
        let mut rng = Rng(77);
        let names: Vec<String> = (0..7).map(|b| format!("d/n/m/t{b}")).collect();
        let mut m = Vec::new();
        for i in 0..20_000u64 {
            let kind = [
                EntryKind::File,
                EntryKind::File,
                EntryKind::Dir,
                EntryKind::Symlink,
                EntryKind::Fifo,
            ][rng.below(5) as usize];
            let mut e = Entry::new(kind, format!("/r/{}/x{i}", rng.below(50)).into_bytes());
            e.mode = rng.below(0o7777) as u32;
            e.uid = rng.next() as u32;
            e.gid = rng.below(3) as u32;
            e.mtime = rng.next() as i64;
            e.mtime_ns = rng.below(1_000_000_000) as u32;
            match kind {
                EntryKind::File => {
                    e.dev = rng.next();
                    e.inode = rng.next();
                    e.ctime = rng.next() as i64;
                    e.ctime_ns = rng.below(1_000_000_000) as u32;
                    let n = if i == 7777 { 5000 } else { rng.below(4) };
                    for _ in 0..n {
                        let len = 46 + rng.below(1 << 20) as u32;
                        let skip = rng.below(u64::from(len - 46) + 1) as u32;
                        let take = rng.below(u64::from(len - 46 - skip) + 1) as u32;
                        e.chunks.push(ChunkRef {
                            id: [rng.below(40) as u8; 32],
                            blob: rng.below(7) as u32,
                            offset: rng.next() >> 2,
                            len,
                            // A third stored compressed (type 3 segments).
                            raw: match rng.below(3) {
                                0 => len - 46 + 1 + rng.below(1000) as u32,
                                _ => 0,
                            },
                            skip,
                            take,
                        });
                    }
                    e.size = e.chunks.iter().map(|c| u64::from(c.take)).sum();
                    if rng.below(2) == 0 {
                        e.tag = Some(rng.next().to_be_bytes());
                    }
                    e.linked = rng.below(5) == 0;
                }
                EntryKind::Symlink => e.target = format!("t{}", rng.next()).into_bytes(),
                EntryKind::Dir | EntryKind::Fifo => {}
            }
            if kind != EntryKind::Symlink && rng.below(7) == 0 {
                let n = 1 + rng.below(3);
                e.xattrs = (0..n)
                    .map(|k| {
                        let v = vec![k as u8; rng.below(300) as usize];
                        (format!("user.a{k}").into_bytes(), v)
                    })
                    .collect();
            }
            m.push(e);
        }
        // Directories like the one before them take 5 bytes: many in a segment.
        for i in 0..3000 {
            let mut d = Entry::new(EntryKind::Dir, format!("/s/{i:05}").into_bytes());
            d.mode = 0o755;
            m.push(d);
        }
        let mut mem = Mem::default();
        let root = mem.write("d/n/m/t9", &m, &names);
        assert_eq!(root.entries, m.len() as u64);
        assert!(root.v6, "FIFOs and hard links make a version 6 header");
        let h = header(&root);
        let (back, lost, nodes) = read(&mem, &h);
        assert!(lost.is_empty());
        assert_eq!(strip(back), strip(by_name(&m, &names)));
        assert_eq!(nodes.len() as u64, root.segments + root.nodes.len() as u64);
        // Empty: one empty segment in one table.
        let mut mem = Mem::default();
        let root = mem.write("d/n/m/t9", &[], &names);
        assert_eq!((root.segments, root.nodes.len(), root.entries), (1, 1, 0));
        assert!(read(&mem, &header(&root)).0.is_empty());
    }

    fn segment_ids(mem: &Mem, h: &Header) -> Vec<ChunkId> {
        let (_, _, nodes) = read(mem, h);
        let tables: std::collections::HashSet<_> = h.nodes.iter().map(|n| n.id).collect();
        nodes
            .into_iter()
            .map(|(_, n)| n.id)
            .filter(|id| !tables.contains(id))
            .collect()
    }

    // The cuts are content-defined: an identical manifest gives identical nodes
    // (stored again: nothing), and changing every 100th file leaves most segments
    // as they were. Also the issue-17 figure: full + no-change + 1%-change
    // snapshots of the 50,000-file bench set against the data.
    #[test]
    fn cuts_resync_after_changes() {
        let names = vec!["d/n/m/t0".to_string(), "d/n/m/t2".to_string()];
        let m = bench_tree(50_000, 5);
        let data: u64 = m.iter().map(|e| e.size).sum();
        let mut mem = Mem::default();
        let full = mem.write("d/n/m/t0", &m, &names);
        let first = mem.stored;
        let h0 = header(&full);
        let again = mem.write("d/n/m/t1", &m, &names);
        let second = mem.stored;
        assert_eq!(again, full);
        assert_eq!(second, 0);
        let mut changed = m.clone();
        let mut n = 0;
        for e in changed.iter_mut().filter(|e| e.kind == EntryKind::File) {
            n += 1;
            if n % 100 == 0 {
                e.mtime += 3600;
                e.chunks[0].blob = 1;
                e.chunks[0].id[31] = 1;
            }
        }
        let third_root = mem.write("d/n/m/t2", &changed, &names);
        let third = mem.stored;
        let h2 = header(&third_root);
        let a = segment_ids(&mem, &h0);
        let b: std::collections::HashSet<_> = segment_ids(&mem, &h2).into_iter().collect();
        let kept = a.iter().filter(|id| b.contains(*id)).count();
        let share = kept as f64 / a.len() as f64;
        let header_bytes = |h: &Header| encode_header(h).len() as u64;
        let total = first + second + third + header_bytes(&h0) * 2 + header_bytes(&h2);
        eprintln!(
            "50,000 files, {} entries, {data} data bytes: {} segments, {} tables; \
             full {first} B, no-change {second} B, 1% change {third} B; \
             segments kept {kept}/{} ({:.1}%); manifests+headers / data = {:.4}",
            m.len(),
            full.segments,
            full.nodes.len(),
            a.len(),
            share * 100.0,
            total as f64 / data as f64
        );
        assert!(share >= 0.6, "{share}");
        assert!(
            (data + total) as f64 <= 1.05 * data as f64,
            "{total} bytes of manifests for {data} of data"
        );
    }

    // Issue 17's aim for large trees: a no-change snapshot of 1,000,000 files
    // stores no node and adds only its header's root list (< 1 MiB, in index.json
    // as hex).
    #[test]
    fn no_change_snapshot_of_a_million_files() {
        let n = 1_000_000;
        let names = vec!["d/n/m/t0".to_string()];
        let mut mem = Mem::default();
        let write = |mem: &mut Mem, blob: &str| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1024);
            let walk = std::thread::spawn(move || bench_entries(n, 11, |e| tx.send(e).unwrap()));
            let root = mem.write_all(blob, rx.into_iter(), &names);
            walk.join().unwrap();
            root
        };
        let full = write(&mut mem, "d/n/m/t0");
        let first = mem.stored;
        let again = write(&mut mem, "d/n/m/t1");
        assert_eq!((again.clone(), mem.stored), (full.clone(), 0));
        let root_list = encode_header(&header(&again)).len();
        eprintln!(
            "1,000,000 files ({} entries): full stores {first} node bytes in {} segments \
             and {} tables; no change stores 0, its header's root list is {root_list} bytes \
             ({} hex in index.json)",
            full.entries,
            full.segments,
            full.nodes.len(),
            2 * (root_list + OVERHEAD)
        );
        assert!(2 * (root_list + OVERHEAD) < 1 << 20);
    }

    // Issue 17's per-entry aim: a typical bench entry (one slice ref, a tag)
    // costs at most 40 bytes of segment plaintext, tables included.
    #[test]
    fn entry_size_figure() {
        let m = bench_tree(50_000, 9);
        let names = vec!["d/n/m/t0".to_string()];
        let mut mem = Mem::default();
        let root = mem.write("d/n/m/t0", &m, &names);
        let sealed: u64 = mem.blobs.values().map(|b| b.len() as u64).sum();
        let plain = sealed - (root.segments + root.nodes.len() as u64) * OVERHEAD as u64;
        let per = plain as f64 / m.len() as f64;
        eprintln!(
            "bench tree: {} entries, {plain} plaintext bytes ({per:.1} per entry), \
             {sealed} sealed ({:.1} per entry), {} segments, {} tables",
            m.len(),
            sealed as f64 / m.len() as f64,
            root.segments,
            root.nodes.len()
        );
        assert!(per <= 40.0, "{per}");
    }

    // A damaged segment loses its entries only; a damaged table loses the
    // entries of all its segments as one range; bytes the store does not hold
    // (InvalidData for a span) cost only the nodes in them.
    #[test]
    fn losing_a_node_loses_only_its_entries() {
        let m = bench_tree(20_000, 3);
        let names = vec!["d/n/m/t9".to_string()];
        let mut mem = Mem::default();
        let root = mem.write("d/n/m/t9", &m, &names);
        let h = header(&root);
        let (all, _, nodes) = read(&mem, &h);
        assert_eq!(all.len(), m.len());
        let tables: Vec<NodeRef> = h.nodes.clone();
        let segs: Vec<NodeRef> = nodes
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| !tables.contains(n))
            .collect();
        // One segment.
        let s = segs[segs.len() / 2];
        let mut bad = Mem {
            blobs: mem.blobs.clone(),
            ..Mem::default()
        };
        bad.blobs.get_mut("d/n/m/t9").unwrap()[s.offset as usize + 60] ^= 1;
        let (back, lost, _) = read(&bad, &h);
        assert_eq!(back.len() as u64, m.len() as u64 - s.entries);
        assert_eq!(lost.len(), 1);
        assert_eq!(u64::from(lost[0].entries), s.entries);
        // One table.
        let t = tables[tables.len() / 2];
        let mut bad = Mem {
            blobs: mem.blobs.clone(),
            ..Mem::default()
        };
        bad.blobs.get_mut("d/n/m/t9").unwrap()[t.offset as usize + 60] ^= 1;
        let (back, lost, _) = read(&bad, &h);
        assert_eq!(back.len() as u64, m.len() as u64 - t.entries);
        assert_eq!(lost.len(), 1);
        assert_eq!(u64::from(lost[0].entries), t.entries);
        // The store does not hold one segment's bytes: spans over it fail whole,
        // node by node only that one.
        let (from, to) = (s.offset, s.offset + u64::from(s.len));
        let mut spans = 0;
        let fetch = |sp: &Span| {
            spans += 1;
            if sp.offset < to && from < sp.offset + sp.len {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "gone"));
            }
            assert_eq!(
                sp.len,
                sp.nodes.iter().map(|n| u64::from(n.len)).sum::<u64>()
            );
            let b = &mem.blobs[sp.blob];
            Ok(b[sp.offset as usize..(sp.offset + sp.len) as usize].to_vec())
        };
        let mut r = Entries::open(keys(), "d/n/m/t9", &h, fetch).unwrap();
        let mut n = 0u64;
        while r.next_entry().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, m.len() as u64 - s.entries);
        assert_eq!(r.lost.len(), 1);
        drop(r);
        assert!(
            spans < segs.len() / 4,
            "{spans} reads for {} segments",
            segs.len()
        );
    }

    /// A segment of type 3: files of the bench tree whose shared chunks were
    /// stored compressed (raw 4000 bytes each in 1000 sealed), its plaintext, and
    /// where its compressed rows start and end in it.
    fn packed_segment() -> (Vec<u8>, u64, std::ops::Range<usize>) {
        let mut m = bench_tree(10, 5);
        for c in m.iter_mut().flat_map(|e| e.chunks.iter_mut()) {
            c.raw = 4000;
            c.len = 1000 + OVERHEAD as u32;
        }
        for (i, e) in m.iter_mut().filter(|e| !e.chunks.is_empty()).enumerate() {
            e.chunks.truncate(1);
            e.chunks[0].id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            e.chunks[0].skip = 0;
            e.chunks[0].take = 100;
            e.size = 100;
        }
        let mut mem = Mem::default();
        let root = mem.write("d/n/m/t9", &m, &["d/n/m/t9".to_string()]);
        assert!(root.v6, "compressed chunks make a version 6 header");
        let (got, lost, nodes) = read(&mem, &header(&root));
        assert!(lost.is_empty());
        assert_eq!(strip(got), strip(by_name(&m, &["d/n/m/t9".to_string()])));
        let (_, seg) = nodes[1];
        let mut sealed = mem.blobs["d/n/m/t9"][seg.offset as usize..][..seg.len as usize].to_vec();
        let plain = keys().open_node(&seg.id, &mut sealed).unwrap().to_vec();
        assert_eq!(plain[1], NODE_SEGMENT_PACKED);
        // Walk to the compressed rows as the decoder does.
        let mut c = Cur { b: &plain };
        c.head_any().unwrap();
        c.blobs().unwrap();
        // A row: id, blob, offset, length; a compressed row: index, raw length.
        for _ in 0..c.var().unwrap() {
            c.id().unwrap();
            let _ = [c.var(), c.var(), c.var()].map(Result::unwrap);
        }
        let start = plain.len() - c.b.len();
        for _ in 0..c.var().unwrap() {
            let _ = [c.var(), c.var()].map(Result::unwrap);
        }
        (plain.clone(), seg.entries, start..plain.len() - c.b.len())
    }

    // A type 3 segment decodes only under a version 6 header, and its compressed
    // rows are checked: present, ascending, naming a row, within a chunk's
    // largest size and larger than what they are stored in.
    #[test]
    fn packed_segment_checks() {
        let (plain, n, rows) = packed_segment();
        let dec = |p: &[u8], v6| decode_segment(p, n, v6, &mut Vec::new(), &mut HashMap::new());
        assert!(dec(&plain, true).is_ok());
        assert!(
            dec(&plain, false).is_err(),
            "type 3 under a version 4 header"
        );
        let with = |pairs: &[(u64, u64)]| {
            let mut p = plain[..rows.start].to_vec();
            put_var(&mut p, pairs.len() as u64);
            for &(i, raw) in pairs {
                put_var(&mut p, i);
                put_var(&mut p, raw);
            }
            p.extend_from_slice(&plain[rows.end..]);
            dec(&p, true)
        };
        let chunks = {
            let mut c = Cur {
                b: &plain[rows.clone()],
            };
            c.var().unwrap()
        };
        let all: Vec<(u64, u64)> = (0..chunks).map(|i| (i, 4000)).collect();
        assert!(with(&all).is_ok(), "the same rows, re-encoded");
        assert!(with(&[]).is_err(), "no compressed rows");
        assert!(chunks >= 2, "one chunk a file");
        let mut swapped = all.clone();
        swapped.swap(0, 1);
        assert!(with(&swapped).is_err(), "rows not ascending");
        assert!(with(&all[1..]).is_ok(), "a row stored raw");
        let mut twice = all.clone();
        twice.insert(1, all[0]);
        assert!(with(&twice).is_err(), "a row twice");
        let mut past = all.clone();
        past.push((chunks, 4000));
        assert!(with(&past).is_err(), "a row past the table");
        for raw in [
            0,
            1000,
            crate::chunker::MAX as u64 + 1,
            u64::from(u32::MAX) + 1,
        ] {
            let mut bad = all.clone();
            bad[0].1 = raw;
            assert!(with(&bad).is_err(), "raw length {raw}");
        }
        // Any raw length above the stored one decodes: the chunk's open checks it
        // against what was sealed.
        let mut small = all.clone();
        small[0].1 = 1001;
        assert!(with(&small).is_ok());
        for cut in rows.start..rows.end {
            let mut p = plain[..cut].to_vec();
            p.extend_from_slice(&plain[rows.end..]);
            let _ = dec(&p, true);
        }
    }

    // Kinds and flags only a version 6 header announces are damage under an
    // older one.
    #[test]
    fn v6_entries_need_a_v6_header() {
        for (what, change) in [
            (
                "fifo",
                (|e: &mut Entry| *e = Entry::new(EntryKind::Fifo, e.path.clone()))
                    as fn(&mut Entry),
            ),
            ("linked", |e: &mut Entry| {
                e.linked = e.kind == EntryKind::File
            }),
            ("xattrs", |e: &mut Entry| {
                e.xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())]
            }),
        ] {
            let mut m = bench_tree(10, 7);
            let i = m.iter().position(|e| e.kind == EntryKind::File).unwrap();
            change(&mut m[i]);
            let mut mem = Mem::default();
            let root = mem.write("d/n/m/t9", &m, &["d/n/m/t9".to_string()]);
            assert!(root.v6, "{what}");
            let mut h = header(&root);
            assert!(read(&mem, &h).1.is_empty(), "{what}");
            h.version = crate::format::HEADER_V4;
            let (_, lost, _) = read(&mem, &h);
            assert!(!lost.is_empty(), "{what}: read under a version 4 header");
        }
    }

    // Bad plaintexts are refused as malformed, never a panic.
    #[test]
    fn decode_checks() {
        let m = bench_tree(10, 3);
        let mut mem = Mem::default();
        let root = mem.write("d/n/m/t9", &m, &["d/n/m/t9".to_string()]);
        let h = header(&root);
        let (_, _, nodes) = read(&mem, &h);
        let (_, seg) = nodes[1];
        let mut sealed = mem.blobs["d/n/m/t9"][seg.offset as usize..][..seg.len as usize].to_vec();
        let plain = keys().open_node(&seg.id, &mut sealed).unwrap().to_vec();
        let dec = |p: &[u8], n| decode_segment(p, n, true, &mut Vec::new(), &mut HashMap::new());
        assert!(dec(&plain, seg.entries).is_ok());
        assert!(dec(&plain, seg.entries + 1).is_err());
        for cut in 0..plain.len() {
            assert!(dec(&plain[..cut], seg.entries).is_err(), "{cut}");
        }
        let mut more = plain.clone();
        more.push(0);
        assert!(dec(&more, seg.entries).is_err());
        for i in 0..plain.len() {
            for x in [1u8, 0x80, 0xff] {
                let mut p = plain.clone();
                p[i] ^= x;
                let _ = dec(&p, seg.entries);
            }
        }
    }
}
