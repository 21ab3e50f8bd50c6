//! `chute sink`: walk the sources, cut files into chunks, seal them, upload part 0
//! in windows, then commit the index that makes the snapshot visible.
//!
//! Threads: the calling thread walks the tree and chunks each file through a
//! bounded memory map ([`MAP_WINDOW`] bytes at a time, so peak RSS does not grow with
//! file size); `threads` workers take chunks from a bounded queue, compute the keyed
//! chunk id, seal, and append to the shared window buffer; whichever worker fills a
//! window uploads it.
//!
//! Incremental: a file whose size, mtime, ctime, device and inode match the
//! previous snapshot of the same paths (the parent) is not read at all; its chunk
//! list is reused. Every other chunk is looked up by its keyed id, first among this
//! run's chunks, then in the local chunk index ([`crate::cache`]) of everything the
//! remote's committed snapshots hold; only unknown chunks are sealed and sent. The
//! index is rebuilt from the remote's sealed manifests when it is missing or stale.
//!
//! Resumable: every acknowledged window and every appended chunk is journaled. A
//! sink killed at any point, run again, re-checks the journaled windows with the
//! remote's window hashes, keeps the longest verified prefix of part 0 and the chunks
//! inside it, and continues the same blob from there. One sink of a set of paths runs
//! at a time (a lock in the cache directory).
//!
//! Nothing is visible until the final index is committed, after every window was
//! acknowledged (and, for a local store, fsynced): an interrupted sink leaves an
//! uncommitted blob that no `list` or `restore` ever shows.
//!
//! Kept alive: `chute prune` deletes a pending blob the store has seen idle (no
//! write) for its grace period, and a sink may write no window for that long (a
//! slow walk over a huge unchanged tree, a read stuck on a failing disk). So while
//! it walks, a keep-alive thread re-POSTs the blob's pending index every
//! [`KEEPALIVE`]: the same request that created it, idempotent for a pending blob
//! (the store rewrites `index.pending.json`, which restarts its idle time), refused
//! for a committed one, not a delete (append-only peers accept it), and signed like
//! every request. The thread dies with the process and stops with the walk (what
//! follows, the manifest and the last windows, writes anyway), so an abandoned
//! upload is still reclaimed. Before each touch it checks that the first window
//! acknowledged is still there, since re-creating a blob a prune deleted would bring
//! back its directory but not its windows. A sink stopped for longer than the grace
//! period (SIGSTOP, a suspended laptop) can still lose its blob: its next window,
//! touch or commit then fails with one line saying so, and nothing is committed.

use crate::blob::{BlobId, BlobState};
use crate::cache::{ChunkIndex, Journal};
use crate::chunker::{self, Chunker};
use crate::crypto::{ChunkBuf, ChunkId, Keys, OVERHEAD};
use crate::format::{self, ChunkRef, Entry, EntryKind, Header, Index, Manifest};
use crate::remote::{self, ErrorKind, Remote};
use crate::snapshot::{self, Snapshot};
use crate::testhooks;
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, channel, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes of a source file mapped at once (two of the largest chunks).
pub const MAP_WINDOW: usize = 2 * chunker::MAX;
/// Files smaller than this are read, not mapped: a map costs more syscalls.
const READ_BELOW: u64 = 256 << 10;
/// Default upload window.
pub const DEFAULT_WINDOW: u64 = 2 << 20;
/// Bounds for the window size a remote is given: small enough that a failed window
/// costs little to resend on a slow uplink, large enough that requests stay few; the
/// top also bounds memory (each worker may hold a full window).
pub const MIN_WINDOW: u64 = 1 << 20;
pub const MAX_WINDOW: u64 = 4 << 20;
/// How often a walking sink touches its pending blob: far below any sensible prune
/// grace period (default 24h), and one small request a minute is nothing.
pub const KEEPALIVE: Duration = Duration::from_secs(60);

/// The next run's window size from this run's timing: aim at about two seconds a
/// window, doubling or halving at most once a run.
pub fn next_window(window: u64, mean_secs: Option<f64>) -> u64 {
    let w = match mean_secs {
        Some(t) if t < 0.5 => window * 2,
        Some(t) if t > 4.0 => window / 2,
        _ => window,
    };
    w.clamp(MIN_WINDOW, MAX_WINDOW)
}

/// What to back up and where.
pub struct Options {
    pub roots: Vec<PathBuf>,
    pub excludes: Vec<String>,
    pub domain: String,
    pub node: String,
    pub host: String,
    pub threads: usize,
    pub window: u64,
    pub progress: bool,
    /// Where the chunk index, journal and lock live.
    pub cache_dir: PathBuf,
}

/// What a sink did.
#[derive(Debug, Default)]
pub struct Report {
    pub short_id: String,
    pub blob: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_bytes: u64,
    /// Files whose chunk lists came from the parent without reading them.
    pub unchanged_files: u64,
    pub unchanged_bytes: u64,
    /// Plaintext bytes of chunks the remote already held.
    pub reused_bytes: u64,
    pub sent: u64,
    /// Bytes of part 0 a resumed sink found already uploaded.
    pub resumed: u64,
    /// The window size used, and the mean seconds one full window took to upload.
    pub window: u64,
    pub window_secs: Option<f64>,
    pub skipped: Vec<String>,
    /// Files that kept changing while they were read (see [`READ_TRIES`]): saved
    /// as last read, which may mix versions.
    pub changed: Vec<String>,
    pub secs: f64,
}

/// One chunk for the workers: its plaintext already copied out of the source (the
/// walker copies it once; the id and the seal both come from that copy).
struct Job {
    file: u32,
    n: u32,
    chunk: ChunkBuf,
}

/// The window being filled, the chunks this run stored, and the upload record.
struct Pack {
    window: u64,
    buf: Vec<u8>,
    next: u64,
    stored: HashMap<ChunkId, (u64, u32)>,
    hashes: Vec<Option<[u8; 32]>>,
    new_bytes: u64,
}

/// The manifest's blob table: index 0 is this snapshot's own blob.
struct Blobs {
    names: Vec<String>,
    at: HashMap<String, u32>,
}

impl Blobs {
    fn index(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.at.get(name) {
            return i;
        }
        self.names.push(name.to_string());
        let i = (self.names.len() - 1) as u32;
        self.at.insert(name.to_string(), i);
        i
    }
}

struct Shared<'a> {
    keys: &'a Keys,
    remote: &'a dyn Remote,
    blob: BlobId,
    pack: Mutex<Pack>,
    cache: &'a ChunkIndex,
    /// Cache blob index → manifest blob index, filled as chunks are found.
    blobs: Mutex<(Blobs, HashMap<u32, u32>)>,
    journal: Option<Journal>,
    failed: Mutex<Option<Error>>,
    stop: AtomicBool,
    sent: AtomicU64,
    reused: AtomicU64,
    /// Full windows uploaded and the microseconds they took, for sizing the next run's.
    timed: Mutex<(u64, u64)>,
}

impl Shared<'_> {
    fn fail(&self, e: Error) {
        let mut f = self.failed.lock().expect("poisoned");
        if f.is_none() {
            *f = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Where the remote already holds a chunk: stored by this run, or by a
    /// committed snapshot according to the chunk index.
    fn known(&self, id: &ChunkId) -> Result<Option<ChunkRef>> {
        let p = self.pack.lock().expect("poisoned");
        if let Some(&(offset, len)) = p.stored.get(id) {
            return Ok(Some(ChunkRef {
                id: *id,
                blob: 0,
                offset,
                len,
            }));
        }
        drop(p);
        let Some(place) = self
            .cache
            .get(id)
            .map_err(|e| Error::Io("cannot read the chunk cache".into(), e))?
        else {
            return Ok(None);
        };
        let mut b = self.blobs.lock().expect("poisoned");
        let (table, map) = &mut *b;
        let blob = match map.get(&place.blob) {
            Some(&i) => i,
            None => {
                let name = &self.cache.blobs[place.blob as usize];
                let i = table.index(name);
                map.insert(place.blob, i);
                i
            }
        };
        self.reused
            .fetch_add(place.len as u64 - OVERHEAD as u64, Ordering::Relaxed);
        Ok(Some(ChunkRef {
            id: *id,
            blob,
            offset: place.offset,
            len: place.len,
        }))
    }

    /// Appends sealed bytes to part 0; uploads every window this completes.
    /// Returns where the bytes start. With `id`, a chunk another worker stored
    /// meanwhile is not stored twice.
    fn append(&self, id: Option<ChunkId>, sealed: &[u8]) -> Result<u64> {
        let mut full = Vec::new();
        let offset = {
            let mut p = self.pack.lock().expect("poisoned");
            if let Some(id) = id {
                if let Some(&(offset, _)) = p.stored.get(&id) {
                    return Ok(offset);
                }
            }
            let offset = p.next * p.window + p.buf.len() as u64;
            if let Some(id) = id {
                p.stored.insert(id, (offset, sealed.len() as u32));
                p.new_bytes += sealed.len() as u64;
                if let Some(j) = &self.journal {
                    j.chunk(&id, offset, sealed.len() as u32);
                }
            }
            let mut src = sealed;
            while !src.is_empty() {
                let room = p.window as usize - p.buf.len();
                let take = room.min(src.len());
                p.buf.extend_from_slice(&src[..take]);
                src = &src[take..];
                if p.buf.len() as u64 == p.window {
                    let n = p.next;
                    p.next += 1;
                    let cap = p.window as usize;
                    full.push((n, std::mem::replace(&mut p.buf, Vec::with_capacity(cap))));
                }
            }
            offset
        };
        for (n, data) in full {
            self.upload(n, &data)?;
        }
        Ok(offset)
    }

    fn upload(&self, n: u64, data: &[u8]) -> Result<()> {
        let window = self.pack.lock().expect("poisoned").window;
        let started = Instant::now();
        let hash = self
            .remote
            .put_window(&self.blob, window, n, data)
            .map_err(|e| checked_lost(self.remote, &self.blob, e))?;
        if data.len() as u64 == window {
            let mut t = self.timed.lock().expect("poisoned");
            t.0 += 1;
            t.1 += started.elapsed().as_micros() as u64;
        }
        self.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        if let (Some(j), true) = (&self.journal, data.len() as u64 == window) {
            j.window(n, &hash);
        }
        let mut p = self.pack.lock().expect("poisoned");
        let n = n as usize;
        if p.hashes.len() <= n {
            p.hashes.resize(n + 1, None);
        }
        p.hashes[n] = Some(hash);
        Ok(())
    }

    /// Uploads the last, partial window.
    fn flush(&self) -> Result<u64> {
        let (n, data, size) = {
            let mut p = self.pack.lock().expect("poisoned");
            let size = p.next * p.window + p.buf.len() as u64;
            (p.next, std::mem::take(&mut p.buf), size)
        };
        if let Some(j) = &self.journal {
            // A short window may now exist: a resumed run could not extend it.
            j.finishing();
        }
        if !data.is_empty() {
            self.upload(n, &data)?;
        }
        Ok(size)
    }
}

/// Touches the pending blob every `period` until `stop` closes (see "Kept alive" in
/// the module docs). A touch that fails is tried again at the next tick; a blob
/// found gone fails the sink.
fn keep_alive(shared: &Shared, index: &Index, period: Duration, stop: Receiver<()>) {
    let mut warned = false;
    while stop.recv_timeout(period) == Err(RecvTimeoutError::Timeout) {
        let first = {
            let p = shared.pack.lock().expect("poisoned");
            let window = p.window;
            p.hashes
                .iter()
                .enumerate()
                .find_map(|(n, h)| h.map(|h| (window, n as u64, h)))
        };
        match touch(shared.remote, &shared.blob, index, first) {
            Ok(true) => {}
            Ok(false) => {
                shared.fail(lost(shared.remote, &shared.blob));
                return;
            }
            Err(e) if !warned => {
                warned = true;
                eprintln!("chute sink: warning: cannot keep the upload alive, will retry: {e}");
            }
            Err(_) => {}
        }
    }
}

/// One touch of the pending `blob`: re-POSTs its pending `index`, once `first`, a
/// window acknowledged earlier (window size, number, SHA-256), is confirmed still
/// there. Returns false, touching nothing, if that window (so the blob) is gone.
/// With no window acknowledged yet, re-creating a deleted blob loses nothing.
fn touch(
    remote: &dyn Remote,
    blob: &BlobId,
    index: &Index,
    first: Option<(u64, u64, [u8; 32])>,
) -> remote::Result<bool> {
    if let Some((window, n, hash)) = first {
        match remote.window_hash(blob, window, n) {
            Ok(Some(h)) if h == hash => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    remote.create(index)?;
    Ok(true)
}

/// The error of a sink whose pending blob was deleted under it.
fn lost(remote: &dyn Remote, blob: &BlobId) -> Error {
    Error::Failed(format!(
        "upload {} is gone from {}: a prune deleted it after this sink wrote nothing for a whole grace period (was the sink stopped or suspended?); nothing was committed, run the sink again",
        blob.path(),
        remote.describe()
    ))
}

/// `e`, a failed write or commit of `blob`, as [`lost`] if the remote no longer
/// holds the blob at all (pending, committed or forgotten): a bare "not found" (or,
/// from a local store, a window that could not be renamed into a vanished
/// directory) would not say why.
fn checked_lost(remote: &dyn Remote, blob: &BlobId, e: remote::Error) -> Error {
    if e.kind == ErrorKind::Unavailable {
        return e.into();
    }
    let gone = remote
        .list_uncommitted(&blob.domain, &blob.node)
        .is_ok_and(|l| {
            !l.iter()
                .any(|u| u.id == *blob && u.state != BlobState::Orphan)
        })
        && remote
            .index(blob)
            .is_err_and(|e| e.kind == ErrorKind::NotFound);
    if gone { lost(remote, blob) } else { e.into() }
}

/// Fails if a chunk this snapshot reuses from another blob can no longer be read:
/// no pack holds it and its blob is gone, or the window of a forgotten blob it lies
/// in was trimmed (a prune did that: this sink ran for longer than the prune's
/// grace period, see [`crate::prune`]). Committing would make a snapshot that
/// restores only in part; failing costs one more run, whose chunk index no longer
/// knows the deleted blob. A prune deleting or trimming such data between this
/// check and the commit needs it to have been marked a grace period before.
///
/// Every reference was readable when the sink started (`ran` ago: it takes them
/// from snapshots committed then), so the windows of a forgotten blob are asked
/// for only if the store saw its directory change since (a trim does): a nightly
/// run asks for none.
fn reused_still_there(
    keys: &Keys,
    remote: &dyn Remote,
    m: &Manifest,
    own: &BlobId,
    ran: Duration,
) -> Result<()> {
    if m.blobs.len() < 2 {
        return Ok(());
    }
    let listed = remote.list(&own.domain, &own.node)?;
    let committed: HashSet<String> = listed.iter().map(BlobId::path).collect();
    let uncommitted = remote.list_uncommitted(&own.domain, &own.node)?;
    let forgotten: HashSet<String> = uncommitted
        .iter()
        .filter(|u| u.state == BlobState::Forgotten)
        .map(|u| u.id.path())
        .collect();
    // Unchanged since before the sink started, with a second for rounding.
    let untouched: HashSet<String> = uncommitted
        .iter()
        .filter(|u| u.state == BlobState::Forgotten && u.idle > ran.as_secs() + 1)
        .map(|u| u.id.path())
        .collect();
    // Blob 0 is this upload, pending: in neither list.
    if m.blobs.iter().skip(1).all(|b| committed.contains(b)) {
        return Ok(());
    }
    let packs = crate::pack::Resolver::load(keys, remote, &listed)?;
    let mut lost = 0usize;
    // Chunks (offset, sealed length) in each forgotten blob, by blob number.
    let mut in_forgotten: Vec<Vec<(u64, u64)>> = vec![Vec::new(); m.blobs.len()];
    for c in m.entries.iter().flat_map(|e| e.chunks.iter()) {
        let b = &m.blobs[c.blob as usize];
        if c.blob == 0 || committed.contains(b) || packs.holds(&c.id) {
            continue;
        }
        if untouched.contains(b) {
            continue;
        }
        if forgotten.contains(b) {
            in_forgotten[c.blob as usize].push((c.offset, u64::from(c.len)));
        } else {
            lost += 1;
        }
    }
    for (b, chunks) in in_forgotten.iter().enumerate() {
        if chunks.is_empty() {
            continue;
        }
        let id = BlobId::parse(&m.blobs[b])?;
        let index = match remote::retry(|| remote.forgotten_index(&id)) {
            Ok(i) => i,
            // Deleted since the listing.
            Err(e) if e.kind == ErrorKind::NotFound => {
                lost += chunks.len();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let header = crate::format::open_header(keys, &index)
            .map_err(|e| Error::Failed(format!("{}: {e}", id.path())))?;
        let w = u64::from(header.window.max(1));
        let mut present: HashMap<u64, bool> = HashMap::new();
        for &(offset, len) in chunks {
            let mut whole = true;
            for n in offset / w..=(offset + len.max(1) - 1) / w {
                let here = match present.get(&n) {
                    Some(&p) => p,
                    None => {
                        let p = remote::retry(|| remote.window_hash(&id, w, n))?.is_some();
                        present.insert(n, p);
                        p
                    }
                };
                whole &= here;
            }
            lost += usize::from(!whole);
        }
    }
    if lost == 0 {
        return Ok(());
    }
    Err(Error::Failed(format!(
        "{lost} chunk{} this snapshot reuses were pruned while the sink ran (it ran longer than the prune's grace period); nothing was committed, run the sink again",
        if lost == 1 { "" } else { "s" }
    )))
}

fn worker(
    shared: &Shared,
    jobs: &Mutex<Receiver<Job>>,
    spare: &Sender<Vec<u8>>,
    results: &Mutex<Vec<(u32, u32, ChunkRef)>>,
) {
    let mut mine = Vec::new();
    loop {
        let job = match jobs.lock().expect("poisoned").recv() {
            Ok(j) => j,
            Err(_) => break,
        };
        let Job { file, n, mut chunk } = job;
        if !shared.stop.load(Ordering::Relaxed) {
            // Otherwise only drain the queue, so the walker never blocks.
            match store_chunk(shared, &mut chunk) {
                Ok(r) => mine.push((file, n, r)),
                Err(e) => shared.fail(e),
            }
        }
        let _ = spare.send(chunk.into_vec());
    }
    results.lock().expect("poisoned").append(&mut mine);
}

/// Where the remote holds the chunk in `chunk`: where it already was, or where it
/// is appended now, sealed from the very copy its id was computed from.
fn store_chunk(shared: &Shared, chunk: &mut ChunkBuf) -> Result<ChunkRef> {
    let id = shared.keys.chunk_buf_id(chunk);
    testhooks::rewrite_source();
    if let Some(r) = shared.known(&id)? {
        return Ok(r);
    }
    let sealed = shared.keys.seal_chunk(chunk);
    let offset = shared.append(Some(id), sealed)?;
    Ok(ChunkRef {
        id,
        blob: 0,
        offset,
        len: sealed.len() as u32,
    })
}

/// Simple globs for excludes: `*` any run of characters but `/`, `?` one; a pattern
/// without `/` matches a name, one with `/` the whole path.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], text)
                || (!text.is_empty() && text[0] != b'/' && glob_match(pattern, &text[1..]))
        }
        (Some(b'?'), Some(&c)) if c != b'/' => glob_match(&pattern[1..], &text[1..]),
        (Some(p), Some(c)) if p == c => glob_match(&pattern[1..], &text[1..]),
        _ => false,
    }
}

fn excluded(excludes: &[String], path: &Path) -> bool {
    let full = path.as_os_str().as_bytes();
    let name = path.file_name().map_or(full, |n| n.as_bytes());
    excludes.iter().any(|p| {
        let p = p.as_bytes();
        if p.contains(&b'/') {
            glob_match(p, full)
        } else {
            glob_match(p, name)
        }
    })
}

fn entry_from(kind: EntryKind, path: &Path, md: &fs::Metadata) -> Entry {
    let mut e = Entry::new(kind, path.as_os_str().as_bytes().to_vec());
    e.mode = md.mode() & 0o7777;
    e.uid = md.uid();
    e.gid = md.gid();
    e.mtime = md.mtime();
    e.mtime_ns = md.mtime_nsec() as u32;
    e.dev = md.dev();
    e.inode = md.ino();
    e.ctime = md.ctime();
    e.ctime_ns = md.ctime_nsec() as u32;
    e
}

/// Makes each root absolute (without resolving symlinks), checks it exists, and
/// drops roots inside other roots.
pub fn normalize_roots(roots: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    for r in roots {
        let abs = std::path::absolute(r)
            .map_err(|e| Error::Io(format!("cannot read {}", r.display()), e))?;
        // Normalise `.` and `..` lexically so the same tree has the same mount id.
        let mut clean = PathBuf::new();
        for c in abs.components() {
            match c {
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                std::path::Component::CurDir => {}
                c => clean.push(c),
            }
        }
        fs::symlink_metadata(&clean)
            .map_err(|e| Error::Io(format!("cannot read {}", clean.display()), e))?;
        out.push(clean);
    }
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|r| !all.iter().any(|o| o != r && r.starts_with(o)));
    Ok(out)
}

/// The previous snapshot of the same paths, read entry by entry beside the walk:
/// both are in walk order (see [`walk_order`]), so a merge finds each path's old
/// entry without holding the parent manifest in memory.
struct Parent<'a> {
    stream: format::ManifestStream<Box<dyn std::io::Read + 'a>>,
    /// Parent blob index → this run's blob table index.
    map: Vec<u32>,
    peek: Option<Entry>,
    /// Whether `peek` uses a chunk the cache knows is damaged (not reusable).
    peek_damaged: bool,
    short_id: String,
}

impl Parent<'_> {
    /// The parent's entry for `path`, if it had one, and whether its chunks may be
    /// reused (none is a copy the cache knows is damaged); entries before it are
    /// skipped.
    fn find(&mut self, path: &[u8], cache: &ChunkIndex) -> Result<Option<(&Entry, bool)>> {
        loop {
            if self.peek.is_none() {
                self.peek = self.stream.next_entry().map_err(|e| {
                    Error::Damaged(format!(
                        "snapshot {}: manifest is damaged: {}",
                        self.short_id,
                        format::opened(e)
                    ))
                })?;
                if let Some(e) = &mut self.peek {
                    let blobs = &self.stream.blobs;
                    self.peek_damaged = e.chunks.iter().any(|c| {
                        let blob = blobs.get(c.blob as usize).map_or("", String::as_str);
                        !cache.reusable(&c.id, blob, c.offset)
                    });
                    for c in &mut e.chunks {
                        c.blob = *self.map.get(c.blob as usize).unwrap_or(&0);
                    }
                }
            }
            match &self.peek {
                None => return Ok(None),
                Some(e) => match walk_order(&e.path, path) {
                    std::cmp::Ordering::Less => self.peek = None,
                    std::cmp::Ordering::Equal => {
                        return Ok(self.peek.as_ref().map(|e| (e, !self.peek_damaged)));
                    }
                    std::cmp::Ordering::Greater => return Ok(None),
                },
            }
        }
    }
}

/// The order the walker visits paths in: component by component, each compared as
/// bytes (a depth-first walk over sorted names visits paths in exactly this order).
pub fn walk_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// Brings the chunk index up to date with the remote's committed snapshots.
/// Snapshots the index knows but the remote lost mean the index is stale: rebuilt.
fn sync_cache(
    keys: &Keys,
    remote: &dyn Remote,
    cache: ChunkIndex,
    snaps: &[Snapshot],
) -> Result<ChunkIndex> {
    let mut cache = cache;
    let on_remote: std::collections::HashSet<String> =
        snaps.iter().map(|s| s.blob.path()).collect();
    let io = |e| Error::Io("cannot update the chunk cache".into(), e);
    if cache.snapshots.iter().any(|s| !on_remote.contains(s)) {
        cache.clear().map_err(io)?;
    }
    let known: std::collections::HashSet<&String> = cache.snapshots.iter().collect();
    let missing: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| !known.contains(&s.blob.path()))
        .collect();
    for s in missing {
        let m = crate::snapshot::manifest(keys, remote, s)?;
        let mut recs =
            crate::cache::records_of(m.entries.iter().flat_map(|e| e.chunks.iter().copied()));
        cache = cache
            .merge(&[s.blob.path()], &m.blobs, &mut recs)
            .map_err(io)?;
    }
    Ok(cache)
}

/// Commits the snapshot of a sink killed after its last window, if every window
/// it recorded is still there as sealed and every chunk it reuses from other blobs
/// is one a committed snapshot still uses (it is in `cache`, freshly synced), so
/// it can be read (prune keeps every such chunk, in its blob or in a pack): a
/// prune since the kill may have deleted a forgotten blob the killed run's chunk
/// index still knew. Returns whether it did.
fn complete_killed(keys: &Keys, remote: &dyn Remote, journal: &Path, cache: &ChunkIndex) -> bool {
    let Some(json) = Journal::read(journal).and_then(|st| st.final_index) else {
        return false;
    };
    let Ok(index) = Index::parse(json.as_bytes()) else {
        return false;
    };
    let Ok(header) = format::open_header(keys, &index) else {
        return false;
    };
    let Ok(blob) = BlobId::parse(&index.blob_path()) else {
        return false;
    };
    let intact = header.window_hashes.iter().enumerate().all(|(n, h)| {
        matches!(remote.window_hash(&blob, u64::from(header.window), n as u64), Ok(Some(r)) if r == *h)
    });
    if !intact {
        return false;
    }
    let fetch = |off: u64, len: u64| {
        remote
            .read(&blob, header.manifest_offset + off, len)
            .map_err(std::io::Error::other)
    };
    let stream = format::ManifestReader::new(
        keys,
        &blob.path(),
        header.manifest_len,
        header.segments,
        fetch,
    )
    .and_then(format::ManifestStream::new);
    let Ok(mut stream) = stream else { return false };
    loop {
        match stream.next_entry() {
            Ok(Some(e)) => {
                // The very place a committed snapshot uses, not just the id.
                for c in e.chunks.iter().filter(|c| c.blob != 0) {
                    let known = match cache.get(&c.id) {
                        Ok(Some(p)) => {
                            p.offset == c.offset
                                && cache.blobs.get(p.blob as usize)
                                    == stream.blobs.get(c.blob as usize)
                        }
                        _ => false,
                    };
                    if !known {
                        return false;
                    }
                }
            }
            Ok(None) => break,
            Err(_) => return false,
        }
    }
    remote.commit(&blob, &index).is_ok()
}

/// Tries to continue a killed sink's blob; returns it with the verified prefix
/// (window count) and the chunks inside that prefix.
struct Resumed {
    blob: BlobId,
    window: u64,
    hashes: Vec<[u8; 32]>,
    chunks: Vec<(ChunkId, u64, u32)>,
}

fn resume(remote: &dyn Remote, journal: &Path, index: &Index) -> Option<Resumed> {
    let st = Journal::read(journal)?;
    let old = BlobId::parse(&st.blob).ok()?;
    if st.finishing
        || old.domain != index.domain
        || old.node != index.node
        || old.mount != index.mount
    {
        return None;
    }
    let mut idx = index.clone();
    idx.timestamp = old.timestamp.clone();
    // Re-creating is a no-op for a pending blob and refused for a committed one.
    let blob = remote.create(&idx).ok()?;
    let mut hashes = Vec::new();
    while let Some(h) = st.windows.get(&(hashes.len() as u64)) {
        match remote.window_hash(&blob, st.window, hashes.len() as u64) {
            Ok(Some(r)) if r == *h => hashes.push(r),
            _ => break,
        }
    }
    let end = hashes.len() as u64 * st.window;
    let chunks = st
        .chunks
        .into_iter()
        .filter(|&(_, off, len)| off + u64::from(len) <= end)
        .collect();
    Some(Resumed {
        blob,
        window: st.window,
        hashes,
        chunks,
    })
}

/// Keeps only the blobs some chunk reference uses (blob 0, this snapshot's own,
/// always stays first), renumbering the references: a parent's table is copied
/// whole at the start, and without this every manifest would list every ancestor.
fn compact_blobs(names: Vec<String>, mut entries: Vec<Entry>) -> (Vec<String>, Vec<Entry>) {
    let mut used = vec![false; names.len()];
    used[0] = true;
    for c in entries.iter().flat_map(|e| &e.chunks) {
        used[c.blob as usize] = true;
    }
    let mut map = vec![0u32; names.len()];
    let mut kept = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        if used[i] {
            map[i] = kept.len() as u32;
            kept.push(name);
        }
    }
    for c in entries.iter_mut().flat_map(|e| e.chunks.iter_mut()) {
        c.blob = map[c.blob as usize];
    }
    (kept, entries)
}

/// Runs a sink and commits the snapshot.
pub fn run(keys: &Keys, remote: &dyn Remote, opts: &Options) -> Result<Report> {
    let started = Instant::now();
    if opts.roots.is_empty() {
        return Err(Error::Usage(
            "nothing to back up: give a PATH (or set CHUTE_PATHS)".into(),
        ));
    }
    let roots = normalize_roots(&opts.roots)?;
    let root_bytes: Vec<Vec<u8>> = roots
        .iter()
        .map(|r| r.as_os_str().as_bytes().to_vec())
        .collect();
    let mount = keys.mount_id(&root_bytes);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ts = snapshot::timestamp(now.as_secs() as i64, now.subsec_nanos());
    let fresh = BlobId::new(&opts.domain, &opts.node, &mount, &ts)
        .map_err(|e| Error::Usage(e.to_string()))?;

    // One sink of these paths at a time.
    fs::create_dir_all(&opts.cache_dir)
        .map_err(|e| Error::Io(format!("cannot create {}", opts.cache_dir.display()), e))?;
    let lock_path = opts.cache_dir.join(format!("lock-{mount}"));
    let lock = File::create(&lock_path)
        .map_err(|e| Error::Io(format!("cannot create {}", lock_path.display()), e))?;
    if !crate::sys::try_lock(&lock)
        .map_err(|e| Error::Io(format!("cannot lock {}", lock_path.display()), e))?
    {
        return Err(Error::Failed(format!(
            "another chute sink of these paths is still running (lock {})",
            lock_path.display()
        )));
    }

    let journal_path = opts.cache_dir.join(format!("journal-{mount}"));
    let mut completed = None;
    let mut snaps = snapshot::all(keys, remote, &opts.domain, &opts.node)?;
    let chunks_path = opts.cache_dir.join("chunks");
    let mut cache = sync_cache(keys, remote, ChunkIndex::open(&chunks_path), &snaps)?;
    if complete_killed(keys, remote, &journal_path, &cache) {
        completed = Journal::read(&journal_path)
            .and_then(|st| BlobId::parse(&st.blob).ok())
            .map(|b| snapshot::short_id(&b));
        let _ = fs::remove_file(&journal_path);
        // The completed snapshot is now the parent, and its chunks are known.
        snaps = snapshot::all(keys, remote, &opts.domain, &opts.node)?;
        cache = sync_cache(keys, remote, cache, &snaps)?;
    }
    let parent_snap = snaps.iter().rev().find(|s| s.blob.mount == mount);

    let mut index = Index {
        version: u32::from(format::VERSION),
        domain: fresh.domain.clone(),
        node: fresh.node.clone(),
        mount: fresh.mount.clone(),
        timestamp: fresh.timestamp.clone(),
        parent: parent_snap.map(|p| format!("/chute/blob/{}/", p.blob.path())),
        size: None,
        sealed: None,
    };
    let mut window = opts
        .window
        .clamp(64 << 10, crate::store::DEFAULT_MAX_WINDOW);
    let mut pack = Pack {
        window,
        buf: Vec::new(),
        next: 0,
        stored: HashMap::new(),
        hashes: Vec::new(),
        new_bytes: 0,
    };
    let mut report = Report::default();
    let (blob, journal) = match resume(remote, &journal_path, &index) {
        Some(r) => {
            window = r.window;
            pack.window = r.window;
            pack.next = r.hashes.len() as u64;
            pack.stored = r
                .chunks
                .into_iter()
                .map(|(id, o, l)| (id, (o, l)))
                .collect();
            report.resumed = pack.next * r.window;
            pack.hashes = r.hashes.into_iter().map(Some).collect();
            let blob = r.blob;
            let j = Journal::append_to(&journal_path)
                .map_err(|e| Error::Io("cannot reopen the sink journal".into(), e))?;
            (blob, j)
        }
        None => {
            let blob = remote.create(&index)?;
            let j = Journal::create(&journal_path, &blob.path(), window)
                .map_err(|e| Error::Io("cannot write the sink journal".into(), e))?;
            (blob, j)
        }
    };
    index.timestamp = blob.timestamp.clone();
    pack.buf = Vec::with_capacity(window as usize);

    let mut blobs = Blobs {
        names: vec![blob.path()],
        at: HashMap::new(),
    };
    blobs.at.insert(blob.path(), 0);
    let mut parent = match parent_snap {
        Some(p) => {
            let h = &p.header;
            let fetch = move |off: u64, len: u64| {
                remote
                    .read(&p.blob, h.manifest_offset + off, len)
                    .map_err(std::io::Error::other)
            };
            let damaged = |e| {
                Error::Damaged(format!(
                    "snapshot {}: manifest is damaged: {}",
                    p.short_id(),
                    format::opened(e)
                ))
            };
            let reader = format::ManifestReader::new(
                keys,
                &p.blob.path(),
                h.manifest_len,
                h.segments,
                fetch,
            )
            .map_err(damaged)?;
            let stream = format::ManifestStream::new(Box::new(reader) as Box<dyn std::io::Read>)
                .map_err(damaged)?;
            let map = stream.blobs.iter().map(|b| blobs.index(b)).collect();
            Some(Parent {
                stream,
                map,
                peek: None,
                peek_damaged: false,
                short_id: p.short_id(),
            })
        }
        None => None,
    };

    let shared = Shared {
        keys,
        remote,
        blob: blob.clone(),
        pack: Mutex::new(pack),
        cache: &cache,
        blobs: Mutex::new((blobs, HashMap::new())),
        journal: Some(journal),
        failed: Mutex::new(None),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        reused: AtomicU64::new(0),
        timed: Mutex::new((0, 0)),
    };
    let chunker = Chunker::new(keys.gear_seed());
    let threads = opts.threads.max(1);
    let (tx, rx) = sync_channel::<Job>(threads);
    let rx = Mutex::new(rx);
    // Chunk buffers go back to the walker for reuse: at most the queue's, the
    // workers' and the walker's own are ever allocated.
    let (spare_tx, spare) = channel::<Vec<u8>>();
    let results = Mutex::new(Vec::new());
    let mut entries = Vec::new();
    let mut dropped = Vec::new();
    let (alive, stop_touching) = std::sync::mpsc::channel::<()>();
    let (touching, pending) = (&shared, &index);
    let period = testhooks::keepalive(KEEPALIVE);
    let walk_result = std::thread::scope(|s| {
        for _ in 0..threads {
            let spare_tx = spare_tx.clone();
            let (shared, rx, results) = (&shared, &rx, &results);
            s.spawn(move || worker(shared, rx, &spare_tx, results));
        }
        drop(spare_tx);
        s.spawn(move || keep_alive(touching, pending, period, stop_touching));
        let mut walker = Walker {
            opts,
            chunker: &chunker,
            tx,
            spare,
            small: Vec::new(),
            cache: &cache,
            parent: parent.take(),
            entries: &mut entries,
            dropped: &mut dropped,
            report: &mut report,
            stop: &shared.stop,
            progress: Progress::new(opts.progress),
        };
        let r = roots.iter().try_for_each(|root| walker.walk(root));
        walker.progress.done();
        drop(alive);
        r
        // Dropping the walker closes the queue; the scope joins the workers and the
        // keep-alive thread.
    });
    walk_result?;
    if let Some(e) = shared.failed.lock().expect("poisoned").take() {
        return Err(e);
    }
    let mut refs = results.into_inner().expect("poisoned");
    refs.sort_unstable_by_key(|&(f, n, _)| (f, n));
    for (f, n, r) in refs {
        let chunks = &mut entries[f as usize].chunks;
        if chunks.len() == n as usize {
            chunks.push(r);
        }
    }
    if !dropped.is_empty() {
        // Pushed in walk order, so sorted.
        let mut i = 0u32;
        entries.retain(|_| {
            i += 1;
            dropped.binary_search(&(i - 1)).is_err()
        });
    }
    let (table, _) = std::mem::replace(
        &mut *shared.blobs.lock().expect("poisoned"),
        (
            Blobs {
                names: Vec::new(),
                at: HashMap::new(),
            },
            HashMap::new(),
        ),
    );
    let (blobs, entries) = compact_blobs(table.names, entries);
    let manifest = Manifest { blobs, entries };
    reused_still_there(keys, remote, &manifest, &blob, started.elapsed())?;
    let mut manifest_offset = None;
    let (manifest_len, segments) =
        format::seal_manifest_to(keys, &blob.path(), &manifest, |sealed| {
            let at = shared.append(None, sealed)?;
            manifest_offset.get_or_insert(at);
            Ok::<(), Error>(())
        })?;
    let manifest_offset = manifest_offset.expect("a manifest has at least one segment");
    let part_size = shared.flush()?;
    let sent = shared.sent.load(Ordering::Relaxed);
    let (timed_n, timed_us) = *shared.timed.lock().expect("poisoned");
    let reused = shared.reused.load(Ordering::Relaxed);
    let journal_done = shared.journal;
    let pack = shared.pack.into_inner().expect("poisoned");
    let window_hashes: Vec<[u8; 32]> = pack
        .hashes
        .iter()
        .map(|h| h.ok_or_else(|| Error::Failed("a window was never acknowledged".into())))
        .collect::<Result<_>>()?;
    let header = Header {
        time: now.as_secs() as i64,
        time_ns: now.subsec_nanos(),
        host: opts.host.clone(),
        roots: root_bytes,
        files: report.files,
        dirs: report.dirs,
        symlinks: report.symlinks,
        bytes: report.bytes,
        manifest_offset,
        manifest_len,
        segments,
        part_size,
        window: window as u32,
        window_hashes,
        pack: false,
    };
    index.size = Some(part_size);
    index.sealed = Some(format::seal_header(keys, &blob.path(), &header));
    if let Some(j) = &journal_done {
        j.final_index(&index.to_json());
    }
    testhooks::failpoint("before-commit");
    remote
        .commit(&blob, &index)
        .map_err(|e| checked_lost(remote, &blob, e))?;
    testhooks::failpoint("after-commit");
    // The snapshot is safe; what follows only speeds up the next run.
    let mut recs: Vec<(ChunkId, crate::cache::Place)> = pack
        .stored
        .iter()
        .map(|(id, &(offset, len))| {
            (
                *id,
                crate::cache::Place {
                    blob: 0,
                    offset,
                    len,
                },
            )
        })
        .collect();
    match cache.merge(&[blob.path()], &[blob.path()], &mut recs) {
        Ok(mut merged) => {
            let stored = pack.stored.iter().map(|(id, &(offset, _))| (id, offset));
            if let Err(e) = merged.healed(&blob.path(), stored) {
                eprintln!("chute sink: warning: cannot update the damaged-chunk list: {e}");
            }
        }
        Err(e) => eprintln!("chute sink: warning: cannot update the chunk cache: {e}"),
    }
    let _ = fs::remove_file(&journal_path);
    if let Some(c) = completed {
        eprintln!("chute sink: committed snapshot {c} left by an interrupted sink");
    }
    report.short_id = snapshot::short_id(&blob);
    report.blob = blob.path();
    report.new_chunks = pack.stored.len() as u64;
    report.new_bytes = pack.new_bytes;
    report.reused_bytes = reused;
    report.sent = sent;
    report.window = window;
    report.window_secs = (timed_n > 0).then(|| timed_us as f64 / timed_n as f64 / 1e6);
    report.chunks = manifest.entries.iter().map(|e| e.chunks.len() as u64).sum();
    report.secs = started.elapsed().as_secs_f64();
    drop(lock);
    Ok(report)
}

struct Walker<'a> {
    opts: &'a Options,
    chunker: &'a Chunker,
    tx: SyncSender<Job>,
    /// Chunk buffers the workers are done with.
    spare: Receiver<Vec<u8>>,
    /// A small file's bytes, read whole.
    small: Vec<u8>,
    cache: &'a ChunkIndex,
    parent: Option<Parent<'a>>,
    entries: &'a mut Vec<Entry>,
    dropped: &'a mut Vec<u32>,
    report: &'a mut Report,
    stop: &'a AtomicBool,
    progress: Progress,
}

impl Walker<'_> {
    fn skip(&mut self, path: &Path, e: impl std::fmt::Display) {
        let line = format!("{}: {e}", path.display());
        self.progress.clear();
        eprintln!("chute sink: skipping {line}");
        self.report.skipped.push(line);
    }

    fn walk(&mut self, root: &Path) -> Result<()> {
        let mut stack = vec![root.to_path_buf()];
        while let Some(path) = stack.pop() {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if path != root && excluded(&self.opts.excludes, &path) {
                continue;
            }
            let md = match fs::symlink_metadata(&path) {
                Ok(md) => md,
                Err(e) => {
                    self.skip(&path, e);
                    continue;
                }
            };
            let ft = md.file_type();
            if ft.is_dir() {
                let names = match fs::read_dir(&path).and_then(|rd| {
                    rd.map(|e| e.map(|e| e.file_name()))
                        .collect::<std::io::Result<Vec<_>>>()
                }) {
                    Ok(n) => n,
                    Err(e) => {
                        self.skip(&path, e);
                        continue;
                    }
                };
                self.entries.push(entry_from(EntryKind::Dir, &path, &md));
                self.report.dirs += 1;
                let mut names = names;
                names.sort();
                // Reverse, so the stack pops them in order.
                stack.extend(names.iter().rev().map(|n| path.join(n)));
            } else if ft.is_symlink() {
                match fs::read_link(&path) {
                    Ok(t) => {
                        let mut e = entry_from(EntryKind::Symlink, &path, &md);
                        e.target = t.as_os_str().as_bytes().to_vec();
                        self.entries.push(e);
                        self.report.symlinks += 1;
                    }
                    Err(e) => self.skip(&path, e),
                }
            } else if ft.is_file() {
                if self.unchanged(&path, &md)? {
                    continue;
                }
                if let Err(e) = self.file(&path) {
                    self.skip(&path, e);
                }
                testhooks::stall();
            } else {
                // Sockets, FIFOs and devices are runtime objects, not data: noted, not
                // counted as failures (a nightly sink of / would otherwise never pass).
                self.progress.clear();
                eprintln!(
                    "chute sink: not backing up {} (socket, FIFO or device)",
                    path.display()
                );
            }
            self.progress.tick(self.report.files, self.report.bytes);
        }
        Ok(())
    }

    /// Reuses the parent's entry for a file that has not changed since.
    fn unchanged(&mut self, path: &Path, md: &fs::Metadata) -> Result<bool> {
        let Some(parent) = self.parent.as_mut() else {
            return Ok(false);
        };
        let Some((old, reusable)) = parent.find(path.as_os_str().as_bytes(), self.cache)? else {
            return Ok(false);
        };
        let same = old.kind == EntryKind::File
            && old.size == md.len()
            && old.mtime == md.mtime()
            && old.mtime_ns == md.mtime_nsec() as u32
            && old.ctime == md.ctime()
            && old.ctime_ns == md.ctime_nsec() as u32
            && old.inode == md.ino()
            && old.dev == md.dev()
            // A chunk found damaged is sealed afresh: read the file again.
            && reusable;
        if !same {
            return Ok(false);
        }
        let mut e = entry_from(EntryKind::File, path, md);
        e.size = md.len();
        e.chunks = old.chunks.clone();
        self.entries.push(e);
        self.report.files += 1;
        self.report.bytes += md.len();
        self.report.unchanged_files += 1;
        self.report.unchanged_bytes += md.len();
        self.progress.tick(self.report.files, self.report.bytes);
        Ok(true)
    }

    /// Records one file and queues its chunks, read as one version: its stat
    /// (size, times, inode) is taken before and after the read, and a file that
    /// changed in between is read again, up to [`READ_TRIES`] times, then kept as
    /// last read and reported. A read that fails or is read again leaves its queued
    /// chunks in part 0, unreferenced (its entry is dropped).
    fn file(&mut self, path: &Path) -> std::io::Result<()> {
        let f = File::open(path)?;
        for tries in 1.. {
            let idx = self.entries.len() as u32;
            self.entries.push(Entry::new(
                EntryKind::File,
                path.as_os_str().as_bytes().to_vec(),
            ));
            let before = f.metadata()?;
            let read = self.read(&f, idx, before.len());
            testhooks::change_during_read(path, tries);
            let after = f.metadata();
            let (size, after) = match (read, after) {
                (Ok(size), Ok(after)) => (size, after),
                (Err(e), _) | (_, Err(e)) => {
                    self.dropped.push(idx);
                    return Err(e);
                }
            };
            let same = size == before.len() && same_version(&before, &after);
            if !same && tries < READ_TRIES {
                self.dropped.push(idx);
                continue;
            }
            let mut entry = entry_from(EntryKind::File, path, &before);
            entry.size = size;
            self.entries[idx as usize] = entry;
            self.report.files += 1;
            self.report.bytes += size;
            if !same {
                self.progress.clear();
                eprintln!(
                    "chute sink: warning: {} changed while being read ({READ_TRIES} tries); saved as last read, which may mix versions",
                    path.display()
                );
                self.report.changed.push(path.display().to_string());
            }
            break;
        }
        Ok(())
    }

    /// Copies `size` bytes of `f` chunk by chunk into the queue as chunks `0..` of
    /// entry `idx`; returns the bytes queued (fewer if a small file shrank).
    fn read(&mut self, f: &File, idx: u32, size: u64) -> std::io::Result<u64> {
        let mut n = 0u32;
        let mut send = |w: &mut Self, plain: &[u8]| -> std::io::Result<()> {
            let buf = w.spare.try_recv().unwrap_or_default();
            let chunk = ChunkBuf::copy_of(plain, buf);
            w.tx.send(Job {
                file: idx,
                n,
                chunk,
            })
            .map_err(|_| std::io::Error::other("the sealing workers stopped"))?;
            n += 1;
            Ok(())
        };
        if size < READ_BELOW {
            let mut small = std::mem::take(&mut self.small);
            small.clear();
            let read = f.take(size).read_to_end(&mut small);
            let mut pos = 0;
            let sent = read.and_then(|_| {
                let chunker = self.chunker;
                for len in chunker.lengths(&small) {
                    send(self, &small[pos..pos + len])?;
                    pos += len;
                }
                Ok(small.len() as u64)
            });
            self.small = small;
            return sent;
        }
        let mut pos = 0u64;
        while pos < size {
            let len = (size - pos).min(MAP_WINDOW as u64) as usize;
            let map = crate::sys::map(f, pos, len)?;
            let at_end = pos + len as u64 == size;
            let mut local = 0usize;
            while local < len {
                let rest = &map[local..];
                if !at_end && rest.len() < chunker::MAX {
                    break;
                }
                let cut = self.chunker.cut(rest);
                send(self, &rest[..cut])?;
                local += cut;
            }
            pos += local as u64;
            self.progress
                .tick(self.report.files, self.report.bytes + pos);
        }
        Ok(size)
    }
}

/// Reads of a file that keeps changing while it is read, before it is kept as
/// last read and reported.
pub const READ_TRIES: u32 = 3;

/// Whether two stats of one open file show the same version of it. Timestamps
/// are only as fine as the kernel's clock tick, so a write within the tick of the
/// first stat can pass unseen: the id and seal of every chunk still match (each
/// comes from one copy), only the file may mix versions.
fn same_version(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
        && a.ino() == b.ino()
        && a.dev() == b.dev()
}

/// A live progress line on stderr, only when stderr is a terminal.
struct Progress {
    on: bool,
    last: Instant,
    shown: bool,
}

impl Progress {
    fn new(wanted: bool) -> Progress {
        Progress {
            on: wanted && std::io::stderr().is_terminal(),
            last: Instant::now(),
            shown: false,
        }
    }

    fn tick(&mut self, files: u64, bytes: u64) {
        if self.on && self.last.elapsed() > Duration::from_millis(250) {
            self.last = Instant::now();
            self.shown = true;
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\r\x1b[K{files} files, {}",
                crate::units::human_bytes(bytes)
            );
            let _ = e.flush();
        }
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
            self.shown = false;
        }
    }

    fn done(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.tmp", b"a.tmp"));
        assert!(!glob_match(b"*.tmp", b"a.tmpx"));
        assert!(glob_match(b"/home/*/cache", b"/home/pi/cache"));
        assert!(!glob_match(b"/home/*/cache", b"/home/pi/x/cache"));
        assert!(glob_match(b"?at", b"cat"));
        assert!(excluded(
            &["node_modules".into()],
            Path::new("/a/node_modules")
        ));
        assert!(!excluded(
            &["node_modules".into()],
            Path::new("/a/node_modules2")
        ));
    }

    #[test]
    fn walk_order_is_component_order() {
        use std::cmp::Ordering::*;
        // The walker visits /a, /a/x, then /a-b: "a-b" sorts after "a" as a name,
        // although '-' < '/' as a byte.
        assert_eq!(walk_order(b"/a/x", b"/a-b"), Less);
        assert_eq!(walk_order(b"/a", b"/a/x"), Less);
        assert_eq!(walk_order(b"/a/x", b"/a/x"), Equal);
        assert_eq!(walk_order(b"/b", b"/a/z"), Greater);
    }

    #[test]
    fn blob_tables_list_only_blobs_in_use() {
        let chunk = |blob| ChunkRef {
            id: [0; 32],
            blob,
            offset: 0,
            len: 100,
        };
        let mut e = Entry::new(EntryKind::File, b"/f".to_vec());
        e.chunks = vec![chunk(3), chunk(1), chunk(3)];
        let names = ["own", "a", "unused", "b"].map(String::from).to_vec();
        let (kept, entries) = compact_blobs(names, vec![e]);
        assert_eq!(kept, ["own", "a", "b"]);
        let blobs: Vec<u32> = entries[0].chunks.iter().map(|c| c.blob).collect();
        assert_eq!(blobs, [2, 1, 2]);
    }

    #[test]
    fn windows_follow_the_link() {
        assert_eq!(next_window(2 << 20, Some(0.1)), 4 << 20);
        assert_eq!(next_window(4 << 20, Some(0.1)), 4 << 20);
        assert_eq!(next_window(4 << 20, Some(9.0)), 2 << 20);
        assert_eq!(next_window(1 << 20, Some(9.0)), 1 << 20);
        assert_eq!(next_window(4 << 20, Some(2.0)), 4 << 20);
        assert_eq!(next_window(4 << 20, None), 4 << 20);
    }

    // A sink that wrote no window for a grace period lost its pending blob to a
    // concurrent prune; the touch restarts the store's idle time, and must never
    // bring back (windowless) a blob that was deleted.
    #[test]
    fn a_touch_keeps_a_pending_blob_alive_and_never_revives_a_deleted_one() {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let dir = std::env::temp_dir().join(format!("chute-touch-{}", crate::hex::encode(&b)));
        let remote = crate::remote::LocalRemote::open(&dir).unwrap();
        let mut index = Index {
            version: u32::from(format::VERSION),
            domain: "d.org".into(),
            node: "pi".into(),
            mount: "m1".into(),
            timestamp: "t1".into(),
            parent: None,
            size: None,
            sealed: None,
        };
        let blob = remote.create(&index).unwrap();
        let hash = remote.put_window(&blob, 64, 0, b"window zero").unwrap();
        let first = Some((64, 0, hash));
        let idle = || remote.list_uncommitted("d.org", "pi").unwrap()[0].idle;
        // Age the blob by an hour, as a sink slow between windows would.
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let blob_dir = dir.join(blob.path());
        for d in [blob_dir.clone(), blob_dir.join("0")] {
            for e in fs::read_dir(&d).unwrap() {
                let f = File::open(e.unwrap().path()).unwrap();
                f.set_modified(hour_ago).unwrap();
            }
        }
        assert!(idle() >= 3600, "{}", idle());
        assert!(touch(&remote, &blob, &index, first).unwrap());
        assert!(idle() < 60, "{}", idle());

        remote.delete(&blob).unwrap();
        assert!(!touch(&remote, &blob, &index, first).unwrap());
        assert!(remote.list_uncommitted("d.org", "pi").unwrap().is_empty());
        let e = remote.put_window(&blob, 64, 1, b"window one").unwrap_err();
        let msg = checked_lost(&remote, &blob, e).to_string();
        assert!(msg.contains("upload d.org/pi/m1/t1 is gone"), "{msg}");
        // Other failures keep their own message.
        let e = remote::Error::new(ErrorKind::Unavailable, "link down");
        assert_eq!(checked_lost(&remote, &blob, e).to_string(), "link down");

        // A committed blob is never touched: the re-POST is refused.
        let blob = remote.create(&index).unwrap();
        remote.put_window(&blob, 64, 0, b"window zero").unwrap();
        index.size = Some(11);
        remote.commit(&blob, &index).unwrap();
        index.size = None;
        assert!(touch(&remote, &blob, &index, first).is_err());
        assert_eq!(remote.index(&blob).unwrap().size, Some(11));
        // Nor is a refusal about a blob that is still there called a loss.
        let e = remote.put_window(&blob, 64, 1, b"window one").unwrap_err();
        let msg = checked_lost(&remote, &blob, e).to_string();
        assert!(msg.contains("committed"), "{msg}");
        fs::remove_dir_all(dir).unwrap();
    }
}
