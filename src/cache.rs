//! What this node knows about its remote, kept under `$XDG_CACHE_HOME/chute/<id>/`:
//! the chunk index (which chunks the remote already holds, and where) and the journal
//! of a sink in progress (so a killed sink resumes). Both are only hints: losing them
//! costs time, never data. The index is rebuilt from the remote's sealed manifests;
//! every journal claim is re-checked against the remote's window hashes.
//!
//! The cache root `$XDG_CACHE_HOME/chute/` holds one such directory per remote
//! (see [`create_dir`]) and a `CACHEDIR.TAG` (<https://bford.info/cachedir/>), so
//! chute's own walk (`--exclude-caches`, on by default), tar, restic and borg leave
//! it out of backups.
//!
//! # Chunk index file `chunks`, version 2
//! ```text
//! "CHIX" u8 version=2
//! u32 snapshot count, then str16 blob paths   (the snapshots whose chunks are in)
//! u32 blob count, then str16 blob paths       (where the chunks live)
//! u64 record count, then records sorted by id, 52 bytes each:
//!     32 chunk id, u32 blob (index above), u64 offset, u32 sealed length,
//!     u32 uncompressed length of a chunk stored compressed, else 0
//! ```
//! Version 1 (before compression) had 48-byte records without the last field:
//! it is not read, and so rebuilt from the manifests like a lost index.
//! Lookups binary-search a sparse in-memory index (one id per 128 records, 32 bytes
//! each) and read one 6 KiB block with `pread`: memory stays ~0.3% of the file and
//! does not grow with each lookup the way a map's resident pages would. An update
//! merges this run's new records, a stream sorted by id, into a new file (streamed,
//! renamed into place): neither side is ever held whole. Where both hold a chunk,
//! the newer record wins (a rebuild merges snapshots oldest first, so it ends on
//! the newest place, the one a healed chunk was stored at); where one snapshot
//! names a chunk twice, the first place it names.
//!
//! # Sorted runs `runs-<mount>.<n>`, `sort-<mount>.<n>`
//! Temporaries of [`crate::runchunks`]: records as above, sorted, nothing else.
//! `runs-` hold the chunks a sink of `<mount>` stored beyond its in-memory cap,
//! `sort-` one snapshot's records while the index is rebuilt. Removed when no
//! longer needed, and by the next sink of that mount if one was killed.
//!
//! # Manifest spill `manifest-<mount>`
//! A copy of the manifest nodes a sink stored itself, each written at its own
//! offset in part 0 (a sparse file: the chunks between them are holes), so the
//! check before the commit reads them back without the store (see
//! `sink::stream`): at most as large as part 0, holding about 30 bytes a file
//! whose entry changed. Truncated at the start of each sink of `<mount>` and
//! removed at its end; one a killed sink left stays until then.
//!
//! # Merge lock `chunks.lock`
//! Held (`flock`) by [`ChunkIndex::merge`] while it writes `chunks.tmp` and
//! `chunks.body` and renames the new index in: sinks of other paths share the
//! directory. Empty; never removed.
//!
//! # Damaged chunks file `damaged`, text
//! `chute-damaged 1`, then a line per chunk id that `verify --read-data` or
//! `restore` opened and found holding bytes other than the content the id names
//! (an older chute could seal such a chunk from a file rewritten while it was
//! read): `<id>` while no good copy is known, `<id> <blob> <offset>` once a sink
//! stored the content afresh there. Only that fresh copy is ever offered for reuse
//! (by [`ChunkIndex::get`], and to keep an unchanged file's chunk list,
//! [`ChunkIndex::reusable`]), so the next sink after the damage was found re-reads
//! the files that use the id and seals the content anew; the snapshots that hold
//! the bad copy stay damaged until forgotten, and finding that copy again changes
//! nothing. Losing the file loses only this: the next `verify --read-data` finds
//! the damage again.
//!
//! # Last runs `last-sink`, `last-verify`, text
//! How this node's last sink and verify ended, for `chute status` and the
//! management page: see [`crate::runlog`].
//!
//! # Journal file `journal-<mount>`, text, one record a line, version 2
//! `chute-journal 2`, `blob <path>`, `window <bytes>`, then `w <n> <sha256> <answers>`
//! for every acknowledged full window (`<answers>`: the hex of its storage-challenge
//! answers, 8 bytes each, see [`crate::format`]; a line without them, from an older
//! chute, ends what a resumed sink keeps), `c <id> <offset> <len>` for every chunk
//! appended, and `final <index.json>` once every full window is acknowledged,
//! *before* the last, short window is sent: the sealed index whose header holds
//! every window's SHA-256 and answers, the last window's computed here from the
//! bytes about to be sent. A torn last line is ignored.
//!
//! Those bytes (the end of the sealed manifest, sealed with fresh random nonces, so
//! no later run could make them again) are kept beside the journal in `tail-<mount>`,
//! exactly as sent (at most one window), written and fsynced before the `final`
//! line, which is fsynced before the window leaves. So a sink killed anywhere
//! between its first window and its commit leaves one of: no `final` (the short
//! window was never sent: the blob is continued from its verified prefix), or a
//! `final` and its tail (the blob is completed: the tail is sent if the store lacks
//! it, then the index committed). The tail is trusted only when its length and
//! SHA-256 are those the sealed header gives the last window. A resumed sink
//! rewrites the journal with what it kept, without `final`, and both files go
//! once the snapshot is committed. The chunk lines are only ever streamed
//! ([`Journal::chunks`], [`Journal::restart`]): a resumed sink may have millions.
//!
//! Version 1 (older chutes) wrote `finishing` before the last window and `final`
//! only once every window was acknowledged, and no tail: its `final` is completed
//! as before, and a `finishing` without it starts a new blob (the short window may
//! be on the store, and a store never lets a longer window overlap it). An older
//! chute reads a version 2 journal as none, and starts a new blob.

use crate::crypto::ChunkId;
use crate::format::ChunkRef;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"CHIX";
const VERSION: u8 = 2;
/// Bytes of one record (also of a [`crate::runchunks`] run's).
pub(crate) const RECORD: usize = 52;
/// Records per sparse-index entry.
pub(crate) const BLOCK: usize = 128;
const DAMAGED_HEAD: &str = "chute-damaged 1";

/// The name of a cache directory tag, and the bytes every valid one starts with.
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
pub const CACHEDIR_SIGNATURE: &[u8; 43] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Creates this node's cache directory for one remote, `dir` (a child of the cache
/// root), and tags the root as a cache directory if it is not yet.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let Some(root) = dir.parent() else {
        return Ok(());
    };
    let tag = root.join(CACHEDIR_TAG);
    if !is_cache_tag(&tag) {
        let text = [
            &CACHEDIR_SIGNATURE[..],
            b"\n# This file is a cache directory tag created by chute.\n",
            b"# For information about cache directory tags, see https://bford.info/cachedir/\n",
        ]
        .concat();
        crate::fsutil::write_atomic(&tag, &text)?;
    }
    Ok(())
}

/// Whether `path` is a valid cache directory tag: a regular file (not a symlink)
/// that starts with [`CACHEDIR_SIGNATURE`].
pub fn is_cache_tag(path: &Path) -> bool {
    let mut head = [0u8; 43];
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        && File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
        && &head == CACHEDIR_SIGNATURE
}

/// A chunk's place: blob path index into [`ChunkIndex::blobs`], offset, sealed length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub blob: u32,
    pub offset: u64,
    pub len: u32,
    /// As [`ChunkRef::raw`]: 0, or the uncompressed length of a compressed chunk.
    pub raw: u32,
}

/// The on-disk sorted chunk index.
pub struct ChunkIndex {
    path: PathBuf,
    file: Option<File>,
    pub snapshots: Vec<String>,
    pub blobs: Vec<String>,
    count: u64,
    records_at: u64,
    sparse: Vec<ChunkId>,
    /// Chunks found holding other bytes than their ids name, with the place a
    /// sink stored the content afresh at, once one did (see the module docs).
    damaged: Damaged,
}

fn rd_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}
fn rd_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}
fn rd_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}
fn rd_strs(r: &mut impl Read, len: &mut u64) -> io::Result<Vec<String>> {
    let n = rd_u32(r)?;
    *len += 4;
    let mut out = Vec::new();
    for _ in 0..n {
        let l = rd_u16(r)?;
        let mut b = vec![0; l as usize];
        r.read_exact(&mut b)?;
        *len += 2 + u64::from(l);
        out.push(String::from_utf8(b).map_err(|_| bad("blob path"))?);
    }
    Ok(out)
}
fn wr_strs(w: &mut impl Write, v: &[String]) -> io::Result<()> {
    w.write_all(&(v.len() as u32).to_be_bytes())?;
    for s in v {
        w.write_all(&(s.len() as u16).to_be_bytes())?;
        w.write_all(s.as_bytes())?;
    }
    Ok(())
}
fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("chunk index: bad {what}"),
    )
}

pub(crate) fn decode_record(b: &[u8]) -> (ChunkId, Place) {
    let id: ChunkId = b[..32].try_into().expect("32");
    let place = Place {
        blob: u32::from_be_bytes(b[32..36].try_into().expect("4")),
        offset: u64::from_be_bytes(b[36..44].try_into().expect("8")),
        len: u32::from_be_bytes(b[44..48].try_into().expect("4")),
        raw: u32::from_be_bytes(b[48..52].try_into().expect("4")),
    };
    (id, place)
}

pub(crate) fn encode_record(id: &ChunkId, p: Place) -> [u8; RECORD] {
    let mut b = [0u8; RECORD];
    b[..32].copy_from_slice(id);
    b[32..36].copy_from_slice(&p.blob.to_be_bytes());
    b[36..44].copy_from_slice(&p.offset.to_be_bytes());
    b[44..48].copy_from_slice(&p.len.to_be_bytes());
    b[48..52].copy_from_slice(&p.raw.to_be_bytes());
    b
}

/// Finds `id` among `count` sorted records at `records_at` in `file`, through
/// `sparse`, the id of every [`BLOCK`]th record: one `pread` of one block.
pub(crate) fn find_record(
    file: &File,
    records_at: u64,
    count: u64,
    sparse: &[ChunkId],
    id: &ChunkId,
) -> io::Result<Option<Place>> {
    let block = match sparse.binary_search(id) {
        Ok(b) => b,
        Err(0) => return Ok(None),
        Err(b) => b - 1,
    };
    let first = block as u64 * BLOCK as u64;
    let n = count.saturating_sub(first).min(BLOCK as u64) as usize;
    let mut buf = vec![0u8; n * RECORD];
    file.read_exact_at(&mut buf, records_at + first * RECORD as u64)?;
    let recs: Vec<&[u8]> = buf.chunks(RECORD).collect();
    Ok(recs
        .binary_search_by(|r| r[..32].cmp(&id[..]))
        .ok()
        .map(|i| decode_record(recs[i]).1))
}

impl ChunkIndex {
    /// Opens the index at `path`; a missing or unreadable one is an empty index.
    pub fn open(path: &Path) -> ChunkIndex {
        match ChunkIndex::load(path) {
            Ok(i) => i,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    eprintln!(
                        "chute: warning: ignoring the chunk cache {}: {e}",
                        path.display()
                    );
                }
                ChunkIndex::empty(path)
            }
        }
    }

    fn empty(path: &Path) -> ChunkIndex {
        ChunkIndex {
            path: path.to_path_buf(),
            file: None,
            snapshots: Vec::new(),
            blobs: Vec::new(),
            count: 0,
            records_at: 0,
            sparse: Vec::new(),
            damaged: read_damaged(&damaged_path(path)),
        }
    }

    fn load(path: &Path) -> io::Result<ChunkIndex> {
        let file = File::open(path)?;
        let total = file.metadata()?.len();
        let mut r = BufReader::new(&file);
        let mut head = [0u8; 5];
        r.read_exact(&mut head)?;
        if &head[..4] != MAGIC || head[4] != VERSION {
            return Err(bad("header or version"));
        }
        let mut at = 5;
        let snapshots = rd_strs(&mut r, &mut at)?;
        let blobs = rd_strs(&mut r, &mut at)?;
        let count = rd_u64(&mut r)?;
        at += 8;
        if count
            .checked_mul(RECORD as u64)
            .and_then(|n| n.checked_add(at))
            != Some(total)
        {
            return Err(bad("length"));
        }
        let mut sparse = Vec::with_capacity((count as usize).div_ceil(BLOCK));
        let mut rec = [0u8; RECORD];
        for i in 0..count {
            r.read_exact(&mut rec)?;
            if i as usize % BLOCK == 0 {
                sparse.push(rec[..32].try_into().expect("32"));
            }
        }
        Ok(ChunkIndex {
            path: path.to_path_buf(),
            file: Some(file),
            snapshots,
            blobs,
            count,
            records_at: at,
            sparse,
            damaged: read_damaged(&damaged_path(path)),
        })
    }

    /// Number of chunks known.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether no chunk is known.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the chunk `id` at `offset` of `blob` may be reused: it is not a
    /// copy found holding other bytes than its id names (see the module docs).
    pub fn reusable(&self, id: &ChunkId, blob: &str, offset: u64) -> bool {
        match self.damaged.get(id) {
            None => true,
            Some(None) => false,
            Some(Some((b, o))) => b == blob && *o == offset,
        }
    }

    /// Where the remote holds chunk `id`, if a committed snapshot stored it (and it
    /// is [reusable](Self::reusable)).
    pub fn get(&self, id: &ChunkId) -> io::Result<Option<Place>> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        if self.damaged.contains_key(id) {
            return Ok(self
                .find(file, id)?
                .filter(|p| self.reusable(id, &self.blobs[p.blob as usize], p.offset)));
        }
        self.find(file, id)
    }

    fn find(&self, file: &File, id: &ChunkId) -> io::Result<Option<Place>> {
        find_record(file, self.records_at, self.count, &self.sparse, id)
    }

    /// Writes a new index: this one's records plus `new` (chunks of the snapshots
    /// `added`, living in the blobs named by `new_blobs`), streamed and renamed in.
    /// `new` comes sorted by id (a [`crate::runchunks::RunChunks`] gives it so), and
    /// is read once: neither it nor the index is ever held whole. Where `new` names
    /// an id twice its first record is kept; where it and this index both do, its.
    pub fn merge(
        &self,
        added: &[String],
        new_blobs: &[String],
        new: impl IntoIterator<Item = io::Result<(ChunkId, Place)>>,
    ) -> io::Result<ChunkIndex> {
        let mut blobs = self.blobs.clone();
        let mut at: HashMap<String, u32> = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| (b.clone(), i as u32))
            .collect();
        // `new_blobs` index → this table's, filled as records use them, so only
        // blobs some record names are added.
        let mut map: Vec<Option<u32>> = vec![None; new_blobs.len()];
        let mut new = new.into_iter();
        let mut prev: Option<ChunkId> = None;
        let mut next_new = || -> io::Result<Option<(ChunkId, Place)>> {
            let Some((id, mut p)) = new.next().transpose()? else {
                return Ok(None);
            };
            if prev.is_some_and(|q| id < q) {
                return Err(bad("order of the records to merge"));
            }
            prev = Some(id);
            let i = p.blob as usize;
            let slot = map.get_mut(i).ok_or_else(|| bad("blob of a record"))?;
            p.blob = *slot.get_or_insert_with(|| {
                let name = &new_blobs[i];
                *at.entry(name.clone()).or_insert_with(|| {
                    blobs.push(name.clone());
                    (blobs.len() - 1) as u32
                })
            });
            Ok(Some((id, p)))
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        // Sinks of other paths share this directory and may merge at once: the
        // lock keeps them from writing one temporary file together (a garbled
        // index of the right length would point ids at other chunks' places).
        // A lost update only costs time: the next sink finds the snapshot
        // missing from `snapshots` and adds it.
        let lock = File::create(self.path.with_extension("lock"))?;
        crate::sys::lock(&lock)?;
        let tmp = self.path.with_extension("tmp");
        // Records go to a side file first: the count and the blob table precede
        // them, and both are known only at the end (duplicates between old and
        // new are kept once; blobs are added as records name them).
        let mut old = self.records()?;
        let mut count = 0u64;
        let body = tmp.with_extension("body");
        {
            let mut bw = BufWriter::new(File::create(&body)?);
            let mut next_old = old.next().transpose()?;
            let mut next = next_new()?;
            // Both inputs are sorted, so duplicates meet here; on a tie the new
            // record comes first and wins.
            let mut last: Option<ChunkId> = None;
            loop {
                let take_new = match (&next_old, &next) {
                    (None, None) => break,
                    (Some(_), None) => false,
                    (None, Some(_)) => true,
                    (Some(o), Some(n)) => n.0 <= o.0,
                };
                let (id, p) = if take_new {
                    let r = next.take().expect("some");
                    next = next_new()?;
                    r
                } else {
                    let r = next_old.take().expect("some");
                    next_old = old.next().transpose()?;
                    r
                };
                if last == Some(id) {
                    continue;
                }
                last = Some(id);
                bw.write_all(&encode_record(&id, p))?;
                count += 1;
            }
            bw.flush()?;
        }
        let mut snapshots = self.snapshots.clone();
        snapshots.extend(added.iter().cloned());
        let mut w = BufWriter::new(File::create(&tmp)?);
        w.write_all(MAGIC)?;
        w.write_all(&[VERSION])?;
        wr_strs(&mut w, &snapshots)?;
        wr_strs(&mut w, &blobs)?;
        w.write_all(&count.to_be_bytes())?;
        io::copy(&mut File::open(&body)?, &mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        fs::remove_file(&body)?;
        fs::rename(&tmp, &self.path)?;
        ChunkIndex::load(&self.path)
    }

    /// Every record, in id order.
    fn records(&self) -> io::Result<impl Iterator<Item = io::Result<(ChunkId, Place)>> + '_> {
        let mut r = match &self.file {
            Some(f) => {
                let mut f = f.try_clone()?;
                std::io::Seek::seek(&mut f, io::SeekFrom::Start(self.records_at))?;
                Some(BufReader::new(f))
            }
            None => None,
        };
        let mut left = self.count;
        Ok(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let mut rec = [0u8; RECORD];
            let r = r.as_mut()?;
            Some(r.read_exact(&mut rec).map(|_| decode_record(&rec)))
        }))
    }

    /// Records where damaged chunks were stored afresh: `stored` says where in
    /// `blob` this sink stored a chunk, if it did, and its records (newer)
    /// replaced the damaged ones in the index. Asked once per damaged id (a
    /// short list), so this sink's chunks need not be listed.
    pub fn healed(
        &mut self,
        blob: &str,
        stored: impl Fn(&ChunkId) -> io::Result<Option<u64>>,
    ) -> io::Result<()> {
        let mut changed = false;
        for (id, place) in self.damaged.iter_mut() {
            if let Some(offset) = stored(id)? {
                *place = Some((blob.to_string(), offset));
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        write_damaged(&damaged_path(&self.path), &self.damaged)
    }

    /// Forgets everything (the remote lost snapshots this index relied on).
    pub fn clear(&mut self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        *self = ChunkIndex::empty(&self.path);
        Ok(())
    }
}

fn damaged_path(index: &Path) -> PathBuf {
    index.with_file_name("damaged")
}

/// Damaged chunk ids, each with the place its content was stored afresh at.
type Damaged = HashMap<ChunkId, Option<(String, u64)>>;

fn read_damaged(path: &Path) -> Damaged {
    let Ok(text) = fs::read_to_string(path) else {
        return Damaged::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some(DAMAGED_HEAD) {
        return Damaged::new();
    }
    let mut out = Damaged::new();
    for line in lines {
        let mut w = line.split(' ');
        match (w.next().and_then(crate::hex::decode32), w.next(), w.next()) {
            (Some(id), None, None) => {
                out.insert(id, None);
            }
            (Some(id), Some(blob), Some(offset)) => {
                if let Ok(offset) = offset.parse() {
                    out.insert(id, Some((blob.to_string(), offset)));
                }
            }
            _ => {} // a torn line
        }
    }
    out
}

/// Writes the damaged list (atomically).
fn write_damaged(path: &Path, damaged: &Damaged) -> io::Result<()> {
    let mut text = format!("{DAMAGED_HEAD}\n");
    for (id, healed) in damaged {
        text.push_str(&crate::hex::encode(id));
        if let Some((blob, offset)) = healed {
            text.push_str(&format!(" {blob} {offset}"));
        }
        text.push('\n');
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
}

/// Adds chunks found damaged, each `(id, blob, offset)` where it was read, to the
/// damaged list of the cache in `dir` (see the module docs). A copy other than
/// the fresh one of a healed id changes nothing.
pub fn record_damaged(dir: &Path, found: &[(ChunkId, String, u64)]) -> io::Result<()> {
    if found.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let path = dir.join("damaged");
    let mut all = read_damaged(&path);
    for (id, blob, offset) in found {
        let healed_here = matches!(all.get(id), Some(Some((b, o))) if b == blob && o == offset);
        if healed_here || !all.contains_key(id) {
            all.insert(*id, None);
        }
    }
    write_damaged(&path, &all)
}

/// A manifest's chunk reference as an index record for [`ChunkIndex::merge`].
pub fn record_of(c: &ChunkRef) -> (ChunkId, Place) {
    (
        c.id,
        Place {
            blob: c.blob,
            offset: c.offset,
            len: c.len,
            raw: c.raw,
        },
    )
}

/// The journal's current version (see the module docs).
const JOURNAL_VERSION: u32 = 3;

/// Where the tail of the journal at `journal` is kept: `tail-<mount>` beside
/// `journal-<mount>`.
pub fn tail_path(journal: &Path) -> PathBuf {
    beside(journal, "tail")
}

/// `<what>-<mount>` beside `journal-<mount>`: a file of this mount's sink.
fn beside(journal: &Path, what: &str) -> PathBuf {
    let name = journal.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name.strip_prefix("journal-") {
        Some(mount) => journal.with_file_name(format!("{what}-{mount}")),
        None => journal.with_extension(what),
    }
}

/// The prefix of the sorted runs of the sink whose journal is `journal`: `runs`
/// for the chunks it stores, `sort` for a manifest's records while the chunk
/// index is rebuilt (see the module docs).
pub fn runs_prefix(journal: &Path, what: &str) -> PathBuf {
    beside(journal, what)
}

/// A sink in progress, written as it goes.
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Chunk lines not yet written: they matter only once a window holding them is
    /// acknowledged, so they go out with the next window line, not one syscall each.
    pending: std::sync::Mutex<Vec<u8>>,
}

/// What a journal says a killed sink achieved.
#[derive(Debug, Default)]
pub struct JournalState {
    /// 1 or 2 (see the module docs).
    pub version: u32,
    pub blob: String,
    pub window: u64,
    pub windows: HashMap<u64, [u8; 32]>,
    /// The storage-challenge answers recorded with each window.
    pub answers: HashMap<u64, Vec<[u8; crate::format::ANSWER_LEN]>>,
    /// Version 1 only: the last, short window may have been sent.
    pub finishing: bool,
    pub final_index: Option<String>,
}

impl Journal {
    /// Starts a journal for `blob` (replacing any old one and its tail).
    pub fn create(path: &Path, blob: &str, window: u64) -> io::Result<Journal> {
        Journal::restart(path, blob, window, &[], std::iter::empty())
    }

    /// Starts the journal at `path` anew for `blob`, holding only `windows` (each
    /// window's SHA-256 and answers, from window 0 on) and `chunks`, what a resumed
    /// sink kept: written whole (streamed: `chunks` may be many) and renamed into
    /// place, so a kill leaves the old journal or the new one. Any tail goes.
    pub fn restart(
        path: &Path,
        blob: &str,
        window: u64,
        windows: &[([u8; 32], crate::format::Answers)],
        chunks: impl IntoIterator<Item = io::Result<(ChunkId, Place)>>,
    ) -> io::Result<Journal> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        remove_if_there(&tail_path(path))?;
        crate::fsutil::write_atomic_with(path, |w| {
            let mut w = BufWriter::new(w);
            write!(
                w,
                "chute-journal {JOURNAL_VERSION}\nblob {blob}\nwindow {window}\n"
            )?;
            for c in chunks {
                let (id, p) = c?;
                writeln!(w, "{}", chunk_text(&id, &p))?;
            }
            for (n, (hash, answers)) in windows.iter().enumerate() {
                writeln!(
                    w,
                    "w {n} {} {}",
                    crate::hex::encode(hash),
                    crate::hex::encode(answers.as_flattened())
                )?;
            }
            w.flush()
        })?;
        Ok(Journal {
            file: OpenOptions::new().append(true).open(path)?,
            path: path.to_path_buf(),
            pending: Default::default(),
        })
    }

    /// Removes the journal at `path` and its tail (the snapshot is committed).
    pub fn remove(path: &Path) {
        let _ = fs::remove_file(tail_path(path));
        let _ = fs::remove_file(path);
    }

    fn line(&self, s: String) {
        // Pending chunk lines first, then this line, in one write; a failure only
        // costs resumability.
        let mut p = self.pending.lock().expect("poisoned");
        p.extend_from_slice(s.as_bytes());
        let _ = (&self.file).write_all(&p);
        p.clear();
    }

    /// Window `n` was acknowledged with this SHA-256; `answers` are its
    /// storage-challenge answers.
    pub fn window(&self, n: u64, hash: &[u8; 32], answers: &[[u8; crate::format::ANSWER_LEN]]) {
        self.line(format!(
            "w {n} {} {}\n",
            crate::hex::encode(hash),
            crate::hex::encode(answers.as_flattened())
        ));
    }

    /// A chunk was appended at `offset`.
    pub fn chunk(&self, id: &ChunkId, place: &Place) {
        let mut p = self.pending.lock().expect("poisoned");
        let _ = writeln!(p, "{}", chunk_text(id, place));
    }

    /// Every full window is acknowledged and `tail`, the last, short window (empty
    /// if there is none), is about to be sent; `json` is the final index, awaiting
    /// only that window and the commit. Both are on disk (fsynced) when this
    /// returns, so a kill from here on completes the snapshot. Unlike the other
    /// lines this one must not be lost: once the short window is on the store the
    /// blob cannot be continued, so a sink that cannot write it must not send it.
    pub fn final_index(&self, json: &str, tail: &[u8]) -> io::Result<()> {
        let tail_at = tail_path(&self.path);
        if tail.is_empty() {
            remove_if_there(&tail_at)?;
        } else {
            crate::fsutil::write_atomic(&tail_at, tail)?;
        }
        crate::testhooks::failpoint("tail-saved");
        let mut p = self.pending.lock().expect("poisoned");
        // After a newline of its own: a line torn by an earlier failed write must
        // not swallow this one.
        p.extend_from_slice(format!("\nfinal {json}\n").as_bytes());
        (&self.file).write_all(&p)?;
        p.clear();
        self.file.sync_data()
    }

    /// The tail kept beside the journal at `path`, if it is there and no longer
    /// than `window` (it is checked against the sealed header before any use).
    pub fn tail(path: &Path, window: u64) -> Option<Vec<u8>> {
        let f = File::open(tail_path(path)).ok()?;
        if f.metadata().ok()?.len() > window {
            return None;
        }
        let mut out = Vec::new();
        f.take(window).read_to_end(&mut out).ok()?;
        Some(out)
    }

    /// The chunks the journal at `path` lists (`c` lines), read as they are
    /// needed: a resumed sink's may be millions. A read error ends them, as it
    /// ends [`Journal::read`].
    pub fn chunks(path: &Path) -> impl Iterator<Item = (ChunkId, Place)> {
        let lines = File::open(path).map(|f| BufReader::new(f).lines());
        lines
            .into_iter()
            .flatten()
            .map_while(Result::ok)
            .filter_map(|l| chunk_line(&l))
    }

    /// Reads a journal; `None` if absent, not a journal, or of a version this
    /// chute does not know.
    pub fn read(path: &Path) -> Option<JournalState> {
        let f = File::open(path).ok()?;
        let mut lines = BufReader::new(f).lines();
        let version = match lines.next()?.ok()?.as_str() {
            "chute-journal 1" => 1,
            "chute-journal 2" => 2,
            "chute-journal 3" => 3,
            _ => return None,
        };
        let mut st = JournalState {
            version,
            ..JournalState::default()
        };
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(json) = line.strip_prefix("final ") {
                st.final_index = Some(json.to_string());
                continue;
            }
            let mut w = line.split(' ');
            match (w.next(), w.next(), w.next(), w.next()) {
                (Some("blob"), Some(b), None, None) => st.blob = b.to_string(),
                (Some("window"), Some(n), None, None) => st.window = n.parse().ok()?,
                (Some("w"), Some(n), Some(h), a) => {
                    if let (Ok(n), Some(h)) = (n.parse(), crate::hex::decode32(h)) {
                        st.windows.insert(n, h);
                        let len = crate::format::ANSWER_LEN;
                        match a.and_then(crate::hex::decode) {
                            Some(a) if a.len() % len == 0 => {
                                let a = a.chunks(len).map(|c| c.try_into().expect("8"));
                                st.answers.insert(n, a.collect());
                            }
                            _ => {
                                st.answers.remove(&n);
                            }
                        }
                    }
                }
                // Chunk lines: `Journal::chunks` streams them.
                (Some("finishing"), None, None, None) => st.finishing = version == 1,
                _ => {} // a torn last line
            }
        }
        (!st.blob.is_empty() && st.window > 0).then_some(st)
    }
}

/// A `c <id> <offset> <len>` line's chunk.
/// A chunk line: `c <id> <offset> <sealed length>`, then ` <uncompressed length>`
/// for a chunk stored compressed (version 3).
fn chunk_text(id: &ChunkId, p: &Place) -> String {
    let (id, offset, len) = (crate::hex::encode(id), p.offset, p.len);
    match p.raw {
        0 => format!("c {id} {offset} {len}"),
        raw => format!("c {id} {offset} {len} {raw}"),
    }
}

fn chunk_line(line: &str) -> Option<(ChunkId, Place)> {
    let mut w = line.split(' ');
    let (id, offset, len, raw) = match (w.next(), w.next(), w.next(), w.next(), w.next()) {
        (Some("c"), Some(id), Some(o), Some(l), raw) => (id, o, l, raw),
        _ => return None,
    };
    let raw = match raw {
        Some(r) => r.parse().ok().filter(|&r| r != 0)?,
        None => 0,
    };
    let place = Place {
        blob: 0,
        offset: offset.parse().ok()?,
        len: len.parse().ok()?,
        raw,
    };
    (w.next().is_none()).then_some((crate::hex::decode32(id)?, place))
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        std::env::temp_dir().join(format!("chute-cache-{name}-{}", crate::hex::encode(&b)))
    }

    fn id(i: u32) -> ChunkId {
        crate::crypto::sha256(&i.to_be_bytes())
    }

    fn sorted(
        recs: &mut [(ChunkId, Place)],
    ) -> impl Iterator<Item = io::Result<(ChunkId, Place)>> + '_ {
        crate::sort::by_key(recs, |r| r.0);
        recs.iter().map(|r| Ok(*r))
    }

    #[test]
    fn index_merges_and_finds() {
        let dir = tmp("idx");
        let path = dir.join("chunks");
        let idx = ChunkIndex::open(&path);
        assert!(idx.is_empty());
        let mut recs: Vec<(ChunkId, Place)> = (0..1000)
            .map(|i| {
                (
                    id(i),
                    Place {
                        blob: 0,
                        offset: u64::from(i) * 100,
                        len: 100,
                        raw: 0,
                    },
                )
            })
            .collect();
        let idx = idx
            .merge(&["s1".into()], &["b1".into()], sorted(&mut recs))
            .unwrap();
        assert_eq!(idx.len(), 1000);
        let mut more: Vec<(ChunkId, Place)> = (500..1500)
            .map(|i| {
                (
                    id(i),
                    Place {
                        blob: 0,
                        offset: 7,
                        len: 50,
                        raw: 0,
                    },
                )
            })
            .collect();
        let idx = idx
            .merge(&["s2".into()], &["b2".into()], sorted(&mut more))
            .unwrap();
        assert_eq!(idx.len(), 1500, "duplicates are kept once");
        let idx = ChunkIndex::open(&path);
        assert_eq!(idx.snapshots, vec!["s1".to_string(), "s2".into()]);
        assert_eq!(
            idx.get(&id(3)).unwrap(),
            Some(Place {
                blob: 0,
                offset: 300,
                len: 100,
                raw: 0
            })
        );
        let p = idx.get(&id(700)).unwrap().unwrap();
        assert_eq!(
            (idx.blobs[p.blob as usize].as_str(), p.offset),
            ("b2", 7),
            "the newer record wins"
        );
        let p = idx.get(&id(1400)).unwrap().unwrap();
        assert_eq!(idx.blobs[p.blob as usize], "b2");
        assert_eq!(idx.get(&id(5000)).unwrap(), None);

        // A chunk found holding other bytes than its id names is never offered,
        // until a sink stored it afresh.
        let b1 = |i: u32| (id(i), "b1".to_string(), u64::from(i) * 100);
        record_damaged(&dir, &[b1(3), b1(4)]).unwrap();
        record_damaged(&dir, &[b1(4)]).unwrap();
        let idx = ChunkIndex::open(&path);
        assert!(!idx.reusable(&id(3), "b1", 300) && !idx.reusable(&id(4), "b1", 400));
        assert_eq!(idx.get(&id(3)).unwrap(), None);
        assert!(idx.get(&id(5)).unwrap().is_some());
        // A sink stored 3 afresh (its record replaced the damaged one).
        let mut fresh = vec![(
            id(3),
            Place {
                blob: 0,
                offset: 9,
                len: 50,
                raw: 0,
            },
        )];
        let mut idx = idx
            .merge(&["s3".into()], &["b3".into()], sorted(&mut fresh))
            .unwrap();
        idx.healed("b3", |i| Ok((*i == id(3)).then_some(9)))
            .unwrap();
        let idx = ChunkIndex::open(&path);
        assert_eq!(idx.get(&id(3)).unwrap().map(|p| p.offset), Some(9));
        assert!(idx.reusable(&id(3), "b3", 9) && !idx.reusable(&id(3), "b1", 300));
        assert!(!idx.reusable(&id(4), "b1", 400));
        // Finding the old copy again changes nothing; finding the fresh one does.
        record_damaged(&dir, &[b1(3)]).unwrap();
        assert!(ChunkIndex::open(&path).get(&id(3)).unwrap().is_some());
        record_damaged(&dir, &[(id(3), "b3".into(), 9)]).unwrap();
        assert_eq!(ChunkIndex::open(&path).get(&id(3)).unwrap(), None);
        fs::remove_dir_all(dir).unwrap();
    }

    // Issue 17: the records to merge come as a sorted stream (a spilled sorter's
    // here, built in bounded memory) and are read once; the result is the same
    // as from one sorted list: the stream's first record of an id wins within it,
    // its records win over the index's, only blobs some record names are added,
    // and a stream out of order is refused rather than written unsorted.
    // Sinks of two mounts share the cache dir: merging at once, each may lose
    // the other's update (a hint), never garble the file (ids pointing at other
    // chunks' places). Without the merge lock they wrote one `chunks.tmp`.
    #[test]
    fn concurrent_merges_never_garble_the_index() {
        let dir = tmp("concurrent");
        let path = dir.join("chunks");
        std::thread::scope(|s| {
            for t in 0..2u32 {
                let path = &path;
                s.spawn(move || {
                    for round in 0..20u32 {
                        let mut recs: Vec<_> = (0..2000)
                            .map(|i| {
                                let n = (t << 24) | (round << 12) | i;
                                let p = Place {
                                    blob: 0,
                                    offset: u64::from(n),
                                    len: 100,
                                    raw: 0,
                                };
                                (id(n), p)
                            })
                            .collect();
                        let blob = format!("b{t}");
                        ChunkIndex::open(path)
                            .merge(&[], &[blob], sorted(&mut recs))
                            .unwrap();
                    }
                });
            }
        });
        let idx = ChunkIndex::load(&path).unwrap();
        assert!(idx.len() >= 2000);
        for rec in idx.records().unwrap() {
            let (got, p) = rec.unwrap();
            let n = u32::try_from(p.offset).unwrap();
            assert_eq!(got, id(n), "a record holds another chunk's place");
            assert_eq!(idx.blobs[p.blob as usize], format!("b{}", n >> 24));
        }
    }

    #[test]
    fn a_merge_takes_a_sorted_stream() {
        let dir = tmp("stream");
        let path = dir.join("chunks");
        let at = |blob, offset| Place {
            blob,
            offset,
            len: 10,
            raw: 0,
        };
        let mut old: Vec<_> = (0..300).map(|i| (id(i), at(0, 1))).collect();
        let idx = ChunkIndex::open(&path)
            .merge(&["s1".into()], &["b0".into()], sorted(&mut old))
            .unwrap();
        let mut sorter = crate::runchunks::RunChunks::new(&dir.join("sort-m"), 7, false);
        // In manifest order: ids 200..1000 in blob 2, then 200..250 again in blob 1.
        for i in 200..1000 {
            sorter.insert(id(i), at(2, u64::from(i))).unwrap();
        }
        for i in 200..250 {
            sorter.insert(id(i), at(1, 0)).unwrap();
        }
        assert!(sorter.runs() > 1);
        let blobs = ["unused", "b1", "b2"].map(String::from);
        let idx = idx
            .merge(&["s2".into()], &blobs, sorter.iter().unwrap())
            .unwrap();
        assert_eq!(idx.len(), 1000);
        assert_eq!(idx.blobs, ["b0", "b2"], "only blobs records name");
        let idx = ChunkIndex::open(&path);
        for i in 0..1000 {
            let p = idx.get(&id(i)).unwrap().unwrap();
            let want = if i < 200 {
                ("b0", 1)
            } else {
                ("b2", u64::from(i))
            };
            assert_eq!((idx.blobs[p.blob as usize].as_str(), p.offset), want, "{i}");
        }
        let (lo, hi) = (id(1).min(id(2)), id(1).max(id(2)));
        let backwards = [Ok((hi, at(0, 0))), Ok((lo, at(0, 0)))];
        let e = idx.merge(&[], &["b".into()], backwards).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let e = idx.merge(&[], &[], [Ok((id(1), at(5, 0)))]).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "a blob out of range");
        assert_eq!(
            ChunkIndex::open(&path).len(),
            1000,
            "a refused merge changes nothing"
        );
        drop(sorter);
        fs::remove_dir_all(dir).unwrap();
    }

    fn at(offset: u64, len: u32, raw: u32) -> Place {
        Place {
            blob: 0,
            offset,
            len,
            raw,
        }
    }

    #[test]
    fn journal_survives_a_torn_line() {
        let dir = tmp("journal");
        let path = dir.join("journal-m");
        let j = Journal::create(&path, "d/n/m/t", 4096).unwrap();
        j.chunk(&[2; 32], &at(10, 99, 0));
        j.window(0, &[1; 32], &[[5; 8], [6; 8]]);
        j.chunk(&[3; 32], &at(5000, 99, 0));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"w 1 abc").unwrap();
        let st = Journal::read(&path).unwrap();
        assert_eq!(st.blob, "d/n/m/t");
        assert_eq!(st.window, 4096);
        assert_eq!(st.windows.len(), 1);
        assert_eq!(st.answers[&0], vec![[5; 8], [6; 8]]);
        let chunks: Vec<_> = Journal::chunks(&path).collect();
        assert_eq!(chunks, vec![([2; 32], at(10, 99, 0))]);
        fs::remove_dir_all(dir).unwrap();
    }

    // Issue 16.1: the final index and the last window's bytes are journaled before
    // that window is sent, so a sink killed in between completes; a resumed sink's
    // journal keeps what it kept and drops both.
    #[test]
    fn a_journal_keeps_its_final_index_and_tail_until_restarted() {
        let dir = tmp("final");
        let path = dir.join("journal-m");
        assert_eq!(tail_path(&path), dir.join("tail-m"));
        let j = Journal::create(&path, "d/n/m/t", 4096).unwrap();
        j.chunk(&[2; 32], &at(10, 99, 0));
        j.window(0, &[1; 32], &[[5; 8]]);
        j.chunk(&[3; 32], &at(4100, 99, 1000));
        j.final_index("{\"version\":1}", b"tail bytes").unwrap();
        // The bytes of version 3, pinned (a compressed chunk's line ends in its
        // uncompressed length).
        let c = |b: u8| crate::hex::encode(&[b; 32]);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!(
                "chute-journal 3\nblob d/n/m/t\nwindow 4096\nc {} 10 99\nw 0 {} 0505050505050505\nc {} 4100 99 1000\n\nfinal {{\"version\":1}}\n",
                c(2),
                c(1),
                c(3)
            )
        );
        assert_eq!(fs::read(dir.join("tail-m")).unwrap(), b"tail bytes");
        let st = Journal::read(&path).unwrap();
        assert_eq!(st.version, 3);
        assert_eq!(st.final_index.as_deref(), Some("{\"version\":1}"));
        assert_eq!(
            Journal::chunks(&path).count(),
            2,
            "chunk lines go out with the final line"
        );
        assert_eq!(Journal::tail(&path, 4096).unwrap(), b"tail bytes");
        assert_eq!(Journal::tail(&path, 4), None, "a tail longer than a window");

        let kept = [([1; 32], [[5; 8], [6; 8], [7; 8], [8; 8]])];
        let kept_chunks = [Ok(([2; 32], at(10, 99, 0)))];
        drop(Journal::restart(&path, "d/n/m/t", 4096, &kept, kept_chunks).unwrap());
        let st = Journal::read(&path).unwrap();
        assert_eq!(st.final_index, None);
        assert_eq!(st.windows[&0], [1; 32]);
        assert_eq!(st.answers[&0], kept[0].1);
        let chunks: Vec<_> = Journal::chunks(&path).collect();
        assert_eq!(chunks, vec![([2; 32], at(10, 99, 0))]);
        assert_eq!(Journal::tail(&path, 4096), None);

        // A version 1 journal: `finishing` counts; a newer version is none.
        fs::write(
            &path,
            "chute-journal 1\nblob d/n/m/t\nwindow 4096\nfinishing\n",
        )
        .unwrap();
        let st = Journal::read(&path).unwrap();
        assert!(st.version == 1 && st.finishing);
        fs::write(
            &path,
            "chute-journal 2\nblob d/n/m/t\nwindow 4096\nfinishing\n",
        )
        .unwrap();
        assert!(!Journal::read(&path).unwrap().finishing);
        fs::write(&path, "chute-journal 4\nblob d/n/m/t\nwindow 4096\n").unwrap();
        assert!(Journal::read(&path).is_none());
        Journal::remove(&path);
        assert!(!path.exists());
        fs::remove_dir_all(dir).unwrap();
    }
}
