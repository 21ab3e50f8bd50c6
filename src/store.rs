//! The blob store on disk, shared by `chute serve` and by local-directory remotes.
//!
//! The store holds opaque bytes and never needs a key. Its layout follows the
//! prototype's URI form:
//!
//! ```text
//! <root>/chute-store                      "chute-store 1\n": layout version
//! <root>/.scrub-state                     progress of `chute serve`'s background scrub
//!                                         (see [`crate::scrub`])
//! <root>/<domain>/<node>/<mount>/<timestamp>/
//!     index.pending.json                  the index as first POSTed (blob created)
//!     index.json                          the final index; present = snapshot visible
//!     index.forgotten.json                what index.json became when forgotten
//!     .lock                               flock'd by commit, delete, record updates
//!     .verified                           the verified-hash record (below); a cache
//!     .verified.tmp-<random>              a record being rewritten (never read)
//!     0/<offset:016x>-<len:016x>-<sha256>  data part 0, one file per written window,
//!                                         named with the SHA-256 it arrived with
//!     0/.tmp-<random>                     a window being received (never read)
//! ```
//!
//! The verified-hash record lets the hash of a window be answered without reading
//! it. Each line says "the file of this window, with this stat, held bytes whose
//! SHA-256 is the one in its name":
//!
//! ```text
//! chute-verified 1 <generation:016x>                    header: magic, version,
//!                                                       random id of this file
//! <window file name> <ino> <size> <mtime s.ns> <ctime s.ns> <check>
//! ```
//!
//! `<check>` is the first 8 bytes (hex) of the SHA-256 of the line before it. A line
//! is added right after a window is fsynced and renamed into place (the store hashed
//! its bytes as it wrote them), and when a re-read finds a window equal to its name
//! and unchanged by the read (same stat before and after, ctime at least 2 s old).
//! A scrub re-reads every window whatever the record says and rewrites it: fresh
//! lines for intact windows, none for damaged or vanished ones. The last valid line
//! for a window counts; [`Store::window_hash`] trusts it only if a fresh stat of the
//! file equals it exactly. Every write through the file system changes ctime (no
//! call can set it back), so an edited, truncated or replaced window is re-read;
//! bit rot under an unchanged stat (and an edit within the same tick of a coarse
//! ctime clock as the recorded stat, which the 2 s rule keeps re-reads out of) is
//! what the scrub is for.
//!
//! The record is only a cache, so its failures cost time, never a wrong answer:
//! lines are appended under the blob's lock and whole rewrites go through a
//! temporary file and a rename (fsynced when they drop an entry, so a dropped
//! entry stays dropped after a crash); a torn or corrupt line fails its check and
//! is ignored; a file with another magic or version is ignored (and replaced on the
//! next write); a missing one means "re-read everything". Parsed records are kept
//! in memory, about 120 bytes an entry, for at most 32,768 entries over all blobs
//! (least recently used blobs go first; the blob in use stays whole) and
//! revalidated on every use: same generation, and only grown since. The record
//! also names the window at an offset without listing `0/` (the file must exist).
//!
//! Invariants:
//! - A write is acknowledged only after its bytes are in a file that has been
//!   fsynced and atomically renamed into place (and the directory fsynced), so an
//!   acknowledged window survives a power cut and a half-received one is never seen.
//! - Windows never overlap; rewriting a window with exactly the same offset and length
//!   replaces it atomically. A window whose body does not match its announced
//!   SHA-256 or length is dropped whole.
//! - A blob becomes visible to `list` only when `index.json` is committed, and commit
//!   checks that part 0 is written without gaps up to the index's `size`. A
//!   committed blob is immutable: no more windows, no second commit with other bytes.
//! - Reads of a byte range fail unless every byte of it has been written.
//! - A forgotten snapshot's window may be deleted alone ([`Store::trim`], for prune:
//!   no remaining snapshot has a chunk in it); a committed or pending blob's never.
//! - No path outside the root is reachable: every name component is checked by
//!   [`valid_component`] before it touches the file system.
//! - The verified record never vouches for bytes a scrub found damaged, and a
//!   lost or damaged record only costs re-reading.

use crate::blob::{BlobId, BlobState, Uncommitted, valid_component};
use crate::crypto::{Sha256State, sha256};
use crate::fsutil;
use sha2::Digest;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const MARKER: &str = "chute-store";
const LAYOUT_VERSION: u32 = 1;
const PART: &str = "0";
const INDEX: &str = "index.json";
const PENDING: &str = "index.pending.json";
const FORGOTTEN: &str = "index.forgotten.json";

/// Largest window accepted in one write.
pub const DEFAULT_MAX_WINDOW: u64 = 64 << 20;
/// Largest index.json accepted.
pub const MAX_INDEX: u64 = 1 << 20;

/// What went wrong, in terms a transport can map to a status.
#[derive(Debug)]
pub enum Error {
    /// Malformed request: a name, an index, a length (HTTP 400).
    Bad(String),
    /// No such blob, window or range (404).
    NotFound(String),
    /// The blob is committed, or a window overlaps another (409).
    Conflict(String),
    /// A range outside what was written, or overlapping windows (416).
    Range(String),
    /// Body larger than allowed (413).
    TooLarge(String),
    /// The disk is full (507).
    Full,
    /// The body's SHA-256 differs from the one announced (400).
    Digest,
    /// The store was laid out by a newer chute.
    Newer(String),
    /// Any other I/O failure, with what was being done.
    Io(String, io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bad(s) | Error::NotFound(s) | Error::Conflict(s) | Error::Range(s) => {
                f.write_str(s)
            }
            Error::TooLarge(s) => f.write_str(s),
            Error::Full => f.write_str("store is full (no space left on device)"),
            Error::Digest => f.write_str("body does not match its announced SHA-256"),
            Error::Newer(s) => f.write_str(s),
            Error::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |e| {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            Error::Full
        } else {
            Error::Io(what, e)
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<crate::blob::BadName> for Error {
    fn from(e: crate::blob::BadName) -> Error {
        Error::Bad(e.0)
    }
}

/// The fields of an index.json the store reads; everything else is opaque to it.
#[derive(miniserde::Deserialize)]
struct Place {
    domain: String,
    node: String,
    mount: String,
    timestamp: String,
    size: Option<u64>,
}

/// Reads where an index.json says its blob goes.
pub fn index_place(index: &[u8]) -> Result<(BlobId, Option<u64>)> {
    let text = std::str::from_utf8(index).map_err(|_| Error::Bad("index is not UTF-8".into()))?;
    let p: Place = miniserde::json::from_str(text).map_err(|_| {
        Error::Bad("index is not JSON with string fields domain, node, mount, timestamp".into())
    })?;
    Ok((
        BlobId::new(&p.domain, &p.node, &p.mount, &p.timestamp)?,
        p.size,
    ))
}

/// A written window of part 0, with the SHA-256 its bytes had when they arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub offset: u64,
    pub len: u64,
    pub sha256: [u8; 32],
}

impl Window {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
    fn same_range(&self, other: &Window) -> bool {
        self.offset == other.offset && self.len == other.len
    }
    fn file_name(&self) -> String {
        format!(
            "{:016x}-{:016x}-{}",
            self.offset,
            self.len,
            crate::hex::encode(&self.sha256)
        )
    }
    fn from_file_name(name: &str) -> Option<Window> {
        let mut parts = name.split('-');
        let (a, b, h) = (parts.next()?, parts.next()?, parts.next()?);
        if a.len() != 16 || b.len() != 16 || parts.next().is_some() {
            return None;
        }
        let w = Window {
            offset: u64::from_str_radix(a, 16).ok()?,
            len: u64::from_str_radix(b, 16).ok()?,
            sha256: crate::hex::decode32(h)?,
        };
        (w.len > 0 && w.offset.checked_add(w.len).is_some()).then_some(w)
    }
}

/// A store rooted at a directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    max_window: u64,
    /// Parsed verified-hash records, shared by every clone (the server's workers).
    records: Arc<Records>,
}

impl Store {
    /// Opens (creating if needed) a store directory.
    pub fn open(root: &Path) -> Result<Store> {
        fs::create_dir_all(root)
            .map_err(io_err(format!("cannot create store {}", root.display())))?;
        let marker = root.join(MARKER);
        match fs::read_to_string(&marker) {
            Ok(s) => {
                let v = s
                    .trim()
                    .strip_prefix("chute-store ")
                    .and_then(|v| v.parse::<u32>().ok());
                match v {
                    Some(LAYOUT_VERSION) => {}
                    Some(v) if v > LAYOUT_VERSION => {
                        return Err(Error::Newer(format!(
                            "store {} was written by a newer chute (format {v}, this build reads {LAYOUT_VERSION})",
                            root.display()
                        )));
                    }
                    _ => {
                        return Err(Error::Bad(format!(
                            "{} is not a chute store (bad {MARKER} file)",
                            root.display()
                        )));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_atomic(&marker, format!("{MARKER} {LAYOUT_VERSION}\n").as_bytes())?;
            }
            Err(e) => return Err(io_err(format!("cannot read {}", marker.display()))(e)),
        }
        Ok(Store {
            root: root.to_path_buf(),
            max_window: DEFAULT_MAX_WINDOW,
            records: Arc::default(),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Sets the largest window one write may carry.
    pub fn with_max_window(mut self, max: u64) -> Store {
        self.max_window = max;
        self
    }

    fn dir(&self, id: &BlobId) -> PathBuf {
        self.root
            .join(&id.domain)
            .join(&id.node)
            .join(&id.mount)
            .join(&id.timestamp)
    }

    fn existing_dir(&self, id: &BlobId) -> Result<PathBuf> {
        let dir = self.dir(id);
        if dir.join(PENDING).exists() || dir.join(INDEX).exists() || dir.join(FORGOTTEN).exists() {
            Ok(dir)
        } else {
            Err(Error::NotFound(format!("no blob {}", id.path())))
        }
    }

    /// Whether the blob's final index is committed.
    pub fn is_committed(&self, id: &BlobId) -> bool {
        self.dir(id).join(INDEX).exists()
    }

    /// Creates a blob from its first index (idempotent while uncommitted).
    pub fn create(&self, index: &[u8]) -> Result<BlobId> {
        if index.len() as u64 > MAX_INDEX {
            return Err(Error::TooLarge("index larger than 1 MiB".into()));
        }
        let (id, _) = index_place(index)?;
        let dir = self.dir(&id);
        if dir.join(INDEX).exists() || dir.join(FORGOTTEN).exists() {
            return Err(Error::Conflict(format!(
                "blob {} is already committed",
                id.path()
            )));
        }
        fs::create_dir_all(dir.join(PART))
            .map_err(io_err(format!("cannot create blob {}", id.path())))?;
        write_atomic(&dir.join(PENDING), index)?;
        Ok(id)
    }

    /// The windows written so far, sorted by offset.
    pub fn windows(&self, id: &BlobId) -> Result<Vec<Window>> {
        let part = self.existing_dir(id)?.join(PART);
        let mut out = Vec::new();
        let entries = match fs::read_dir(&part) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(format!("cannot list {}", part.display()))(e)),
        };
        for e in entries {
            let e = e.map_err(io_err(format!("cannot list {}", part.display())))?;
            if let Some(w) = e.file_name().to_str().and_then(Window::from_file_name) {
                out.push(w);
            }
        }
        out.sort_by_key(|w| w.offset);
        // A window replaced by a crash-interrupted rewrite may exist twice: keep one.
        out.dedup_by(|a, b| a.same_range(b));
        Ok(out)
    }

    /// Writes `len` bytes read from `body` at `offset` of part 0, as one window.
    /// Returns the window's SHA-256. With `expect`, a mismatch keeps nothing.
    pub fn write(
        &self,
        id: &BlobId,
        offset: u64,
        len: u64,
        body: &mut dyn Read,
        expect: Option<[u8; 32]>,
    ) -> Result<[u8; 32]> {
        let dir = self.existing_dir(id)?;
        if dir.join(INDEX).exists() || dir.join(FORGOTTEN).exists() {
            return Err(Error::Conflict(format!(
                "blob {} is committed; it cannot change",
                id.path()
            )));
        }
        if len == 0 {
            return Err(Error::Bad("empty window".into()));
        }
        if len > self.max_window {
            return Err(Error::TooLarge(format!(
                "window of {len} bytes is larger than the limit of {}",
                self.max_window
            )));
        }
        if offset.checked_add(len).is_none() {
            return Err(Error::Range("window past the end of any part".into()));
        }
        let mut win = Window {
            offset,
            len,
            sha256: [0; 32],
        };
        self.check_overlap(id, win)?;
        let part = dir.join(PART);
        let tmp = part.join(format!(".tmp-{}", fsutil::random_suffix()));
        let result = receive(&tmp, len, body, expect);
        let (digest, file) = match result {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // Re-check: another writer may have placed an overlapping window meanwhile.
        if let Err(e) = self.check_overlap(id, win) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        win.sha256 = digest;
        let replaced: Vec<Window> = self
            .windows(id)?
            .into_iter()
            .filter(|w| w.same_range(&win) && w.sha256 != digest)
            .collect();
        fs::rename(&tmp, part.join(win.file_name()))
            .map_err(io_err(format!("cannot store window of {}", id.path())))?;
        for old in replaced {
            let _ = fs::remove_file(part.join(old.file_name()));
        }
        sync_dir(&part)?;
        // The bytes were hashed as they were written through `file`: what it holds
        // now is verified, so the record vouches for it (a cache: failure costs time).
        if let Ok(m) = file.metadata() {
            let _ = self.record_append(&dir, &win, &Stamp::of(&m));
        }
        Ok(digest)
    }

    fn check_overlap(&self, id: &BlobId, win: Window) -> Result<()> {
        for w in self.windows(id)? {
            if w.same_range(&win) {
                continue;
            }
            if w.offset < win.end() && win.offset < w.end() {
                return Err(Error::Range(format!(
                    "window {}-{} overlaps the written window {}-{}",
                    win.offset,
                    win.end() - 1,
                    w.offset,
                    w.end() - 1
                )));
            }
        }
        Ok(())
    }

    /// Length of part 0 as written: the end of its last window.
    pub fn part_len(&self, id: &BlobId) -> Result<u64> {
        Ok(self.windows(id)?.last().map_or(0, |w| w.end()))
    }

    /// Opens a reader over `[offset, offset+len)` of part 0; every byte must be written.
    pub fn read_range(&self, id: &BlobId, offset: u64, len: u64) -> Result<RangeReader> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::Range("range past the end".into()))?;
        let windows = self.windows(id)?;
        let mut pieces = Vec::new();
        let mut pos = offset;
        for w in windows
            .iter()
            .filter(|w| w.end() > offset && w.offset < end)
        {
            if w.offset > pos {
                break;
            }
            let take_end = w.end().min(end);
            pieces.push((*w, pos - w.offset, take_end - pos));
            pos = take_end;
        }
        if pos < end {
            let part_len = windows.last().map_or(0, |w| w.end());
            return Err(Error::Range(format!(
                "bytes {offset}-{} of {} are not all written (part holds {part_len} bytes)",
                end.saturating_sub(1),
                id.path()
            )));
        }
        Ok(RangeReader {
            part: self.dir(id).join(PART),
            pieces,
            current: None,
        })
    }

    /// Reads a whole range into memory (callers cap `len`).
    pub fn read(&self, id: &BlobId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut r = self.read_range(id, offset, len)?;
        let mut out = Vec::with_capacity(len as usize);
        r.read_to_end(&mut out)
            .map_err(io_err(format!("cannot read {}", id.path())))?;
        if out.len() as u64 != len {
            return Err(Error::Io(
                format!("cannot read {}", id.path()),
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "window file shorter than its name says",
                ),
            ));
        }
        Ok(out)
    }

    /// SHA-256 of `[offset, offset+len)` of part 0. A range that is exactly one
    /// window is [`Store::window_hash`]; any other is re-read from disk.
    pub fn hash(&self, id: &BlobId, offset: u64, len: u64) -> Result<[u8; 32]> {
        let exact = |w: &Window| w.offset == offset && w.len == len;
        let recorded = self.recorded_at(&self.existing_dir(id)?, offset);
        if let Some((w, _)) = recorded.filter(|(w, _)| exact(w)) {
            if let Ok(h) = self.window_hash(id, &w) {
                return Ok(h);
            }
        }
        if let Some(w) = self.windows(id)?.into_iter().find(exact) {
            return self.window_hash(id, &w);
        }
        let mut r = self.read_range(id, offset, len)?;
        let mut h = Sha256State::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            let n = r
                .read(&mut buf)
                .map_err(io_err(format!("cannot read {}", id.path())))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            h.update(&buf[..n]);
        }
        if total != len {
            return Err(Error::Io(
                format!("cannot read {}", id.path()),
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "window file shorter than its name says",
                ),
            ));
        }
        Ok(h.finalize().into())
    }

    /// The SHA-256 of window `w` of blob `id` as its file holds it now (of its first
    /// `w.len` bytes; a shorter file is an error). Answered from the blob's verified
    /// record, without reading, when a fresh stat of the file equals the one recorded
    /// when its bytes were last found to match its name; otherwise the file is re-read
    /// and, if it matches and did not change meanwhile, recorded again.
    pub fn window_hash(&self, id: &BlobId, w: &Window) -> Result<[u8; 32]> {
        let dir = self.existing_dir(id)?;
        let path = dir.join(PART).join(w.file_name());
        let cannot = || io_err(format!("cannot read {}", id.path()));
        let now = Stamp::of(&fs::metadata(&path).map_err(cannot())?);
        if now.size == w.len && self.recorded(&dir, w) == Some(now) {
            return Ok(w.sha256);
        }
        let mut buf = vec![0u8; 256 << 10];
        let r = reread(&path, w.len, &mut buf).map_err(cannot())?;
        if r.len < w.len {
            return Err(Error::Io(
                format!("cannot read {}", id.path()),
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "window file shorter than its name says",
                ),
            ));
        }
        if let (true, Some(s)) = (r.len == w.len && r.digest == w.sha256, r.settled) {
            let _ = self.record_append(&dir, w, &s);
        }
        Ok(r.digest)
    }

    /// The window that starts at `offset`, if one was written there. The verified
    /// record names it without listing the directory (which costs as much as the
    /// blob has windows) when its file is there.
    pub fn window_at(&self, id: &BlobId, offset: u64) -> Result<Option<Window>> {
        let dir = self.existing_dir(id)?;
        if let Some((w, _)) = self.recorded_at(&dir, offset) {
            if dir.join(PART).join(w.file_name()).is_file() {
                return Ok(Some(w));
            }
        }
        Ok(self.windows(id)?.into_iter().find(|w| w.offset == offset))
    }

    /// Commits the final index: the blob becomes a visible snapshot.
    pub fn commit(&self, id: &BlobId, index: &[u8]) -> Result<()> {
        if index.len() as u64 > MAX_INDEX {
            return Err(Error::TooLarge("index larger than 1 MiB".into()));
        }
        let (place, size) = index_place(index)?;
        if &place != id {
            return Err(Error::Bad(format!(
                "index names {} but was sent to {}",
                place.path(),
                id.path()
            )));
        }
        let dir = self.existing_dir(id)?;
        // Serialised with delete: a blob is either deleted or committed, never both.
        let _lock = lock_blob(&dir)?;
        if dir.join(FORGOTTEN).exists() {
            return Err(Error::Conflict(format!(
                "blob {} was forgotten; it cannot be committed again",
                id.path()
            )));
        }
        if let Ok(old) = fs::read(dir.join(INDEX)) {
            return if old == index {
                Ok(())
            } else {
                Err(Error::Conflict(format!(
                    "blob {} is already committed",
                    id.path()
                )))
            };
        }
        let size = size.ok_or_else(|| Error::Bad("final index has no size".into()))?;
        let mut pos = 0;
        for w in self.windows(id)? {
            if w.offset != pos {
                break;
            }
            pos = w.end();
        }
        if pos != size {
            return Err(Error::Conflict(format!(
                "cannot commit {}: part 0 is written without gaps up to byte {pos}, the index says {size}",
                id.path()
            )));
        }
        write_atomic(&dir.join(INDEX), index)
    }

    /// The committed index of a blob.
    pub fn index(&self, id: &BlobId) -> Result<Vec<u8>> {
        match fs::read(self.dir(id).join(INDEX)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("no committed blob {}", id.path())))
            }
            Err(e) => Err(io_err(format!("cannot read index of {}", id.path()))(e)),
        }
    }

    /// Every committed blob of a node, sorted by mount then timestamp.
    pub fn list(&self, domain: &str, node: &str) -> Result<Vec<BlobId>> {
        if !valid_component(domain) || !valid_component(node) {
            return Err(Error::Bad("invalid domain or node".into()));
        }
        let base = self.root.join(domain).join(node);
        let mut out = Vec::new();
        for mount in read_names(&base)? {
            for ts in read_names(&base.join(&mount))? {
                let id = BlobId::new(domain, node, &mount, &ts)?;
                if self.is_committed(&id) {
                    out.push(id);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Bytes of window files a node stores, under every domain (for quotas).
    pub fn node_usage(&self, node: &str) -> Result<u64> {
        let mut total = 0;
        for domain in read_names(&self.root)? {
            let base = self.root.join(&domain).join(node);
            for mount in read_names(&base)? {
                for ts in read_names(&base.join(&mount))? {
                    let Ok(id) = BlobId::new(&domain, node, &mount, &ts) else {
                        continue;
                    };
                    total += self
                        .windows(&id)
                        .map_or(0, |w| w.iter().map(|w| w.len).sum());
                }
            }
        }
        Ok(total)
    }

    /// Removes a blob that is not a committed snapshot (a forgotten, pending or
    /// orphaned one): its index first, then its data. A committed snapshot must be
    /// forgotten first (409), so a prune that raced a commit cannot destroy it: the
    /// check and the removal hold the blob's lock, which commit takes too.
    pub fn delete(&self, id: &BlobId) -> Result<()> {
        let dir = self.dir(id);
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("no blob {}", id.path())));
        }
        let _lock = lock_blob(&dir)?;
        if dir.join(INDEX).exists() {
            return Err(Error::Conflict(format!(
                "blob {} is a committed snapshot: forget it first",
                id.path()
            )));
        }
        for name in [INDEX, FORGOTTEN, PENDING] {
            match fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("cannot delete {}", id.path()))(e)),
            }
        }
        sync_dir(&dir)?;
        fs::remove_dir_all(&dir).map_err(io_err(format!("cannot delete {}", id.path())))
    }

    /// Deletes the window at `offset` of a forgotten snapshot (prune trims windows
    /// no remaining snapshot uses); returns the bytes freed. Refused (conflict) for a
    /// committed or pending blob, under the lock commit and delete take.
    pub fn trim(&self, id: &BlobId, offset: u64) -> Result<u64> {
        let dir = self.existing_dir(id)?;
        let _lock = lock_blob(&dir)?;
        if dir.join(INDEX).exists() || !dir.join(FORGOTTEN).exists() {
            return Err(Error::Conflict(format!(
                "blob {} is not a forgotten snapshot: only a forgotten snapshot's windows can be trimmed",
                id.path()
            )));
        }
        let part = dir.join(PART);
        let cannot = || io_err(format!("cannot trim {}", id.path()));
        let mut freed = None;
        // Every file of that window (a crash-interrupted rewrite may have left two).
        for e in fs::read_dir(&part).map_err(cannot())? {
            let e = e.map_err(cannot())?;
            let w = e.file_name().to_str().and_then(Window::from_file_name);
            if let Some(w) = w.filter(|w| w.offset == offset) {
                fs::remove_file(e.path()).map_err(cannot())?;
                freed = Some(freed.unwrap_or(0).max(w.len));
            }
        }
        let freed = freed.ok_or_else(|| {
            Error::NotFound(format!("no window at byte {offset} of {}", id.path()))
        })?;
        sync_dir(&part)?;
        Ok(freed)
    }
}

/// A window file whose bytes no longer match what its name says they were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// `domain/node/mount/timestamp`.
    pub blob: String,
    pub offset: u64,
    pub len: u64,
    pub why: String,
}

/// What [`Store::scrub`] checked and found.
#[derive(Debug, Default)]
pub struct ScrubReport {
    /// Blobs checked whole.
    pub blobs: u64,
    pub windows: u64,
    pub bytes: u64,
    pub damaged: Vec<Damage>,
    /// The pass was told to stop before the end.
    pub stopped: bool,
}

impl Store {
    /// Forgets a committed snapshot: `index.json` is renamed to
    /// `index.forgotten.json` (atomically, the directory fsynced). `list` no longer
    /// shows it, it can never be written or committed again, and its part stays
    /// readable and hashable for the snapshots that share its chunks, until a prune
    /// deletes it. Forgetting a forgotten blob again changes nothing but its idle
    /// time, which restarts: prune does that when it marks the blob (or a window of
    /// it), so its grace period is also counted on this, the store's, clock.
    pub fn forget(&self, id: &BlobId) -> Result<()> {
        let dir = self.dir(id);
        // The index's mtime becomes now, on this (the store's) clock: prune
        // measures its grace period from it, so a client whose clock is off cannot
        // shorten it.
        let touch = || {
            let _ = File::options()
                .write(true)
                .open(dir.join(FORGOTTEN))
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        };
        match fs::rename(dir.join(INDEX), dir.join(FORGOTTEN)) {
            Ok(()) => {
                touch();
                sync_dir(&dir)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if dir.join(FORGOTTEN).exists() {
                    touch();
                    Ok(())
                } else {
                    Err(Error::NotFound(format!("no committed blob {}", id.path())))
                }
            }
            Err(e) => Err(io_err(format!("cannot forget {}", id.path()))(e)),
        }
    }

    /// The index of a forgotten blob (what `index.json` held before the forget).
    pub fn forgotten_index(&self, id: &BlobId) -> Result<Vec<u8>> {
        match fs::read(self.dir(id).join(FORGOTTEN)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("no forgotten blob {}", id.path())))
            }
            Err(e) => Err(io_err(format!("cannot read index of {}", id.path()))(e)),
        }
    }

    /// Every blob of a node that is not a committed snapshot, sorted: forgotten
    /// snapshots, pending uploads and orphaned directories, with their window bytes
    /// and how long nothing in them changed (what a prune needs to decide).
    pub fn list_uncommitted(&self, domain: &str, node: &str) -> Result<Vec<Uncommitted>> {
        if !valid_component(domain) || !valid_component(node) {
            return Err(Error::Bad("invalid domain or node".into()));
        }
        let now = std::time::SystemTime::now();
        let base = self.root.join(domain).join(node);
        let mut out = Vec::new();
        for mount in read_names(&base)? {
            if !base.join(&mount).is_dir() {
                continue;
            }
            for ts in read_names(&base.join(&mount))? {
                let id = BlobId::new(domain, node, &mount, &ts)?;
                let dir = self.dir(&id);
                if !dir.is_dir() || dir.join(INDEX).exists() {
                    continue;
                }
                let state = if dir.join(FORGOTTEN).exists() {
                    BlobState::Forgotten
                } else if dir.join(PENDING).exists() {
                    BlobState::Pending
                } else {
                    BlobState::Orphan
                };
                let (windows, newest) = blob_files(&dir)?;
                let idle = newest
                    .and_then(|t| now.duration_since(t).ok())
                    .map_or(0, |d| d.as_secs());
                out.push(Uncommitted {
                    id,
                    state,
                    bytes: windows.iter().map(|w| w.len).sum(),
                    idle,
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Re-hashes every window file in the store and compares it with the length and
    /// SHA-256 in its name, which the store verified when the bytes arrived. Needs
    /// no key and reads one window at a time.
    pub fn scrub(&self) -> Result<ScrubReport> {
        self.scrub_paced(None, &mut |_| true)
    }

    /// [`Store::scrub`] as a background pass runs it: blobs in a fixed order
    /// (domain, node, mount, timestamp), starting after the blob `after` (a
    /// `domain/node/mount/timestamp` a stopped pass reached), telling `on` of each
    /// window read (so it can sleep to stay under a read rate), each damaged window
    /// as it is found, and each blob finished. When `on` returns false the pass stops
    /// (the report says so).
    ///
    /// Every window is re-read whatever the verified record says, and the record is
    /// brought in line: a damaged window's entry is dropped at once (durably: it must
    /// never vouch for those bytes again), intact ones are recorded afresh.
    pub fn scrub_paced(
        &self,
        after: Option<&str>,
        on: &mut dyn FnMut(ScrubEvent<'_>) -> bool,
    ) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let mut buf = vec![0u8; 256 << 10];
        let after: Option<Vec<&str>> = after.map(|a| a.split('/').collect());
        let dirs = |p: &Path| -> Result<Vec<String>> {
            Ok(read_names(p)?
                .into_iter()
                .filter(|n| p.join(n).is_dir())
                .collect())
        };
        for domain in dirs(&self.root)? {
            let d = self.root.join(&domain);
            for node in dirs(&d)? {
                let n = d.join(&node);
                for mount in dirs(&n)? {
                    let m = n.join(&mount);
                    for ts in dirs(&m)? {
                        let key = [domain.as_str(), &node, &mount, &ts];
                        if after.as_deref().is_some_and(|a| key.as_slice() <= a) {
                            continue;
                        }
                        let blob = key.join("/");
                        let dir = m.join(&ts);
                        if !self.scrub_blob(&blob, &dir, &mut buf, &mut report, on)? {
                            report.stopped = true;
                            return Ok(report);
                        }
                        report.blobs += 1;
                        if !on(ScrubEvent::BlobDone(&blob)) {
                            report.stopped = true;
                            return Ok(report);
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Scrubs one blob directory; false if `on` asked to stop.
    fn scrub_blob(
        &self,
        blob: &str,
        dir: &Path,
        buf: &mut [u8],
        report: &mut ScrubReport,
        on: &mut dyn FnMut(ScrubEvent<'_>) -> bool,
    ) -> Result<bool> {
        let (windows, _) = blob_files(dir)?;
        // Fresh verdicts, merged into the record every so often (memory stays
        // bounded however many windows a blob has) and when the blob is done.
        let mut found: Vec<(Window, Option<Stamp>)> = Vec::new();
        for w in windows {
            let path = dir.join(PART).join(w.file_name());
            let (why, stamp) = match reread(&path, w.len, buf) {
                // Deleted since the listing (a prune, a rewritten window): not damage.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => (Some(format!("unreadable: {e}")), None),
                Ok(r) if r.len != w.len => (
                    Some(format!(
                        "the file holds {} bytes, its name says {}",
                        r.len, w.len
                    )),
                    None,
                ),
                Ok(r) if r.digest != w.sha256 => (
                    Some("its bytes no longer match the SHA-256 they arrived with".to_string()),
                    None,
                ),
                Ok(r) => (None, r.settled),
            };
            report.windows += 1;
            report.bytes += w.len;
            let mut go = on(ScrubEvent::Read(w.len));
            if let Some(why) = why {
                self.record_merge(dir, &[(w, None)], false)?;
                let damage = Damage {
                    blob: blob.to_string(),
                    offset: w.offset,
                    len: w.len,
                    why,
                };
                go &= on(ScrubEvent::Damaged(&damage));
                report.damaged.push(damage);
            } else if let Some(s) = stamp {
                found.push((w, Some(s)));
            }
            if found.len() >= 1024 || !go {
                let _ = self.record_merge(dir, &found, false);
                found.clear();
            }
            if !go {
                return Ok(false);
            }
        }
        let _ = self.record_merge(dir, &found, true);
        Ok(true)
    }
}

/// What a scrub pass tells its caller as it goes (see [`Store::scrub_paced`]).
#[derive(Debug)]
pub enum ScrubEvent<'a> {
    /// A window of this many bytes was read.
    Read(u64),
    /// A window is damaged (also in the final report).
    Damaged(&'a Damage),
    /// Every window of this blob (`domain/node/mount/timestamp`) was checked.
    BlobDone(&'a str),
}

/// The windows in a blob directory (however incomplete) and the newest change time
/// of anything in it, temporaries included (a window being received is activity),
/// except the verified record and the lock (a verify or a scrub, which may create
/// them, is not activity).
fn blob_files(dir: &Path) -> Result<(Vec<Window>, Option<std::time::SystemTime>)> {
    let mut windows = Vec::new();
    let mut newest = None;
    for d in [dir.to_path_buf(), dir.join(PART)] {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(format!("cannot list {}", d.display()))(e)),
        };
        for e in entries {
            let e = e.map_err(io_err(format!("cannot list {}", d.display())))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if d == dir && (name.starts_with(RECORD) || name == ".lock") {
                continue;
            }
            if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                newest = newest.max(Some(t));
            }
            if d != dir {
                if let Some(w) = e.file_name().to_str().and_then(Window::from_file_name) {
                    windows.push(w);
                }
            }
        }
    }
    windows.sort_by_key(|w| w.offset);
    Ok((windows, newest))
}

/// What re-reading a window file found.
struct Reread {
    /// The file's length.
    len: u64,
    /// SHA-256 of its first `want` bytes (all of them if it is shorter).
    digest: [u8; 32],
    /// Its stamp, if it did not change while read and had settled before.
    settled: Option<Stamp>,
}

/// Re-reads the first `want` bytes of a window file, in pieces, with a stat before
/// and after.
fn reread(path: &Path, want: u64, buf: &mut [u8]) -> io::Result<Reread> {
    let mut f = File::open(path)?;
    let before = Stamp::of(&f.metadata()?);
    let mut h = Sha256State::new();
    let mut got = 0u64;
    let mut r = (&mut f).take(want);
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        got += n as u64;
    }
    let after = Stamp::of(&f.metadata()?);
    Ok(Reread {
        len: if got < want {
            got
        } else {
            after.size.max(want)
        },
        digest: h.finalize().into(),
        settled: (before == after && after.settled()).then_some(after),
    })
}

// The verified-hash record (`<blob>/.verified`, see the module docs).

/// The record's name in a blob directory; its temporaries add `.tmp-<random>`.
const RECORD: &str = ".verified";
const RECORD_MAGIC: &str = "chute-verified";
const RECORD_VERSION: u32 = 1;
/// Longest record line read (a valid one is about 170 bytes).
const RECORD_LINE_MAX: u64 = 512;
/// Entries the in-memory cache of records keeps over all blobs (~100 bytes each).
const RECORD_CACHE_ENTRIES: usize = 1 << 15;
/// A re-read file is recorded only if it last changed at least this long before:
/// two changes within one tick of a coarse file-system clock (FAT's is 2 s) could
/// leave its ctime as it was.
const SETTLED: Duration = Duration::from_secs(2);

/// What a stat of a window file shows. Every write, truncation, rename or `touch`
/// through the file system sets ctime to the current time, and no call sets it
/// back, so an equal stamp means the file was not changed through the file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Whether the file's last change is at least [`SETTLED`] old.
    fn settled(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        let changed = self.ctime.0 as i128 * 1_000_000_000 + self.ctime.1 as i128;
        now - changed >= SETTLED.as_nanos() as i128
    }
}

fn record_header(generation: u64) -> String {
    format!("{RECORD_MAGIC} {RECORD_VERSION} {generation:016x}\n")
}

/// One record line: the window file's name, its stamp, and a check of both.
fn record_line(w: &Window, s: &Stamp) -> String {
    let body = format!(
        "{} {} {} {}.{:09} {}.{:09}",
        w.file_name(),
        s.ino,
        s.size,
        s.mtime.0,
        s.mtime.1,
        s.ctime.0,
        s.ctime.1
    );
    let check = crate::hex::encode(&sha256(body.as_bytes())[..8]);
    format!("{body} {check}\n")
}

/// A record line without its newline; `None` if malformed or its check fails.
fn parse_record_line(line: &[u8]) -> Option<(Window, Stamp)> {
    let line = std::str::from_utf8(line).ok()?;
    let (body, check) = line.rsplit_once(' ')?;
    if crate::hex::encode(&sha256(body.as_bytes())[..8]) != check {
        return None;
    }
    let time = |s: &str| -> Option<(i64, i64)> {
        let (a, b) = s.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let mut f = body.split(' ');
    let w = Window::from_file_name(f.next()?)?;
    let s = Stamp {
        ino: f.next()?.parse().ok()?,
        size: f.next()?.parse().ok()?,
        mtime: time(f.next()?)?,
        ctime: time(f.next()?)?,
    };
    f.next().is_none().then_some((w, s))
}

/// The generation in a record's header and where its lines start; `None` if the
/// file is not a record this build reads (empty, damaged, another version).
fn read_record_header(f: &mut File) -> io::Result<Option<(u64, u64)>> {
    let mut head = [0u8; 64];
    f.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let Some(end) = head[..n].iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let parsed = std::str::from_utf8(&head[..end]).ok().and_then(|l| {
        let mut f = l.split(' ');
        let (magic, version, generation) = (f.next()?, f.next()?, f.next()?);
        let ok = magic == RECORD_MAGIC
            && version == RECORD_VERSION.to_string()
            && generation.len() == 16
            && f.next().is_none();
        ok.then(|| u64::from_str_radix(generation, 16).ok())?
    });
    Ok(parsed.map(|g| (g, end as u64 + 1)))
}

/// Calls `each` with every complete line of `f` in `[from, to)` (without its
/// newline; an overlong one is skipped) and returns where the last complete line
/// ends: a line still being appended, or torn by a crash, is left for later.
fn scan_record(f: &mut File, from: u64, to: u64, each: &mut dyn FnMut(&[u8])) -> io::Result<u64> {
    use std::io::BufRead;
    f.seek(SeekFrom::Start(from))?;
    let mut r = io::BufReader::with_capacity(64 << 10, f.take(to.saturating_sub(from)));
    let (mut pos, mut pending, mut overlong) = (from, 0u64, false);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = (&mut r)
            .take(RECORD_LINE_MAX + 1)
            .read_until(b'\n', &mut line)? as u64;
        if n == 0 {
            break;
        }
        pending += n;
        if line.last() != Some(&b'\n') {
            if n > RECORD_LINE_MAX {
                overlong = true;
                continue;
            }
            break;
        }
        if !overlong {
            each(&line[..line.len() - 1]);
        }
        overlong = false;
        pos += pending;
        pending = 0;
    }
    Ok(pos)
}

/// A blob's record as last read: valid while the file has the same generation and
/// has only grown (appends) since.
struct CachedRecord {
    generation: u64,
    /// Bytes of the file parsed so far.
    len: u64,
    /// The last valid entry for each offset.
    entries: std::collections::HashMap<u64, (Window, Stamp)>,
    /// When it was last used, for eviction.
    used: u64,
}

/// The parsed records of recently used blobs, shared by a store's clones.
#[derive(Default)]
struct Records {
    cache: Mutex<RecordCache>,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Records({} blobs cached)", self.lock().blobs.len())
    }
}

#[derive(Default)]
struct RecordCache {
    blobs: std::collections::HashMap<PathBuf, CachedRecord>,
    clock: u64,
}

impl Records {
    fn lock(&self) -> std::sync::MutexGuard<'_, RecordCache> {
        // A panic elsewhere cannot leave the cache inconsistent in a way that
        // matters: every entry is revalidated against the file before use.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, dir: &Path) {
        self.lock().blobs.remove(dir);
    }
}

impl Store {
    /// The stamp the record of blob directory `dir` holds for window `w`, if any.
    fn recorded(&self, dir: &Path, w: &Window) -> Option<Stamp> {
        self.recorded_at(dir, w.offset)
            .filter(|(r, _)| r == w)
            .map(|(_, s)| s)
    }

    /// The last window the record of blob directory `dir` holds at `offset`, with
    /// its stamp. Reads the header (and any lines appended since) on every call, so
    /// a record rewritten or removed by another process is never trusted from memory.
    fn recorded_at(&self, dir: &Path, offset: u64) -> Option<(Window, Stamp)> {
        let opened = File::open(dir.join(RECORD)).and_then(|mut f| {
            let len = f.metadata()?.len();
            Ok(read_record_header(&mut f)?.map(|h| (f, len, h)))
        });
        let Ok(Some((mut f, len, (generation, start)))) = opened else {
            self.records.forget(dir);
            return None;
        };
        let mut cache = self.records.lock();
        cache.clock += 1;
        let clock = cache.clock;
        let fresh = |c: &CachedRecord| c.generation == generation && c.len <= len;
        if !cache.blobs.get(dir).is_some_and(fresh) {
            cache.blobs.insert(
                dir.to_path_buf(),
                CachedRecord {
                    generation,
                    len: start,
                    entries: Default::default(),
                    used: 0,
                },
            );
        }
        let c = cache.blobs.get_mut(dir).expect("just inserted");
        c.used = clock;
        if c.len < len {
            let entries = &mut c.entries;
            match scan_record(&mut f, c.len, len, &mut |line| {
                if let Some((w, s)) = parse_record_line(line) {
                    entries.insert(w.offset, (w, s));
                }
            }) {
                Ok(end) => c.len = end,
                Err(_) => {
                    cache.blobs.remove(dir);
                    return None;
                }
            }
        }
        let found = c.entries.get(&offset).copied();
        // Keep memory bounded: drop the least recently used blobs. The one in use
        // stays whatever its size: re-reading its record for every window would
        // make a verify quadratic in the blob's windows.
        while cache.blobs.values().map(|c| c.entries.len()).sum::<usize>() > RECORD_CACHE_ENTRIES {
            let oldest = cache
                .blobs
                .iter()
                .filter(|(d, _)| d.as_path() != dir)
                .min_by_key(|(_, c)| c.used)
                .map(|(d, _)| d.clone());
            match oldest {
                Some(d) => cache.blobs.remove(&d),
                None => break,
            };
        }
        found
    }

    /// Appends an entry to a blob's record (creating it), under the blob's lock.
    fn record_append(&self, dir: &Path, w: &Window, s: &Stamp) -> Result<()> {
        let _lock = lock_blob(dir)?;
        let path = dir.join(RECORD);
        let line = record_line(w, s);
        let res = (|| -> io::Result<bool> {
            let mut f = fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)?;
            if f.metadata()?.len() == 0 {
                let generation = u64::from_le_bytes(fsutil::random_bytes());
                f.write_all(format!("{}{line}", record_header(generation)).as_bytes())?;
                return Ok(true);
            }
            if read_record_header(&mut f)?.is_none() {
                return Ok(false);
            }
            // A line torn by a crash would swallow this one.
            let mut last = [0u8; 1];
            f.seek(SeekFrom::End(-1))?;
            f.read_exact(&mut last)?;
            let sep = if last[0] == b'\n' { "" } else { "\n" };
            f.write_all(format!("{sep}{line}").as_bytes())?;
            Ok(true)
        })();
        match res {
            Ok(true) => Ok(()),
            // Not a record this build reads: start a new one.
            Ok(false) => write_record(dir, [(w, s)].into_iter(), false),
            Err(e) => Err(io_err(format!("cannot write {}", path.display()))(e)),
        }
    }

    /// Brings a blob's record in line with what a scrub found: `Some` stamps are
    /// fresh "intact" verdicts, `None` windows must no longer be vouched for. With
    /// `complete` (the whole blob was read) entries of window files that are gone are
    /// dropped as well. The file is rewritten only if that changes anything, and
    /// durably if an entry is dropped; if it cannot be rewritten then, it is removed.
    fn record_merge(
        &self,
        dir: &Path,
        found: &[(Window, Option<Stamp>)],
        complete: bool,
    ) -> Result<()> {
        if found.is_empty() && !complete {
            return Ok(());
        }
        let _lock = lock_blob(dir)?;
        let path = dir.join(RECORD);
        let mut entries = std::collections::HashMap::new();
        let mut lines = 0usize;
        let mut rewrite = match File::open(&path) {
            Ok(mut f) => match read_record_header(&mut f) {
                Ok(Some((_, start))) => {
                    let len = f.metadata().map_or(0, |m| m.len());
                    let end = scan_record(&mut f, start, len, &mut |line| {
                        lines += 1;
                        if let Some((w, s)) = parse_record_line(line) {
                            entries.insert(w, s);
                        }
                    });
                    // Bytes after the last complete line, or lines that failed their
                    // check or repeat a window: worth compacting.
                    !matches!(end, Ok(e) if e == len)
                }
                _ => true,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(_) => true,
        };
        rewrite |= lines != entries.len();
        let mut dropped = false;
        for (w, s) in found {
            match s {
                Some(s) => rewrite |= entries.insert(*w, *s) != Some(*s),
                None => dropped |= entries.remove(w).is_some(),
            }
        }
        if complete {
            let part = dir.join(PART);
            let before = entries.len();
            entries.retain(|w, _| part.join(w.file_name()).exists());
            rewrite |= entries.len() != before;
        }
        self.records.forget(dir);
        if !(rewrite || dropped) {
            return Ok(());
        }
        let written = write_record(dir, entries.iter(), dropped);
        match (written, dropped) {
            (Ok(()), _) => Ok(()),
            (Err(e), false) => Err(e),
            // The record might still vouch for a damaged window: it must go.
            (Err(_), true) => match fs::remove_file(&path) {
                Ok(()) => sync_dir(dir),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(format!("cannot remove {}", path.display()))(e)),
            },
        }
    }
}

/// Writes a blob's record afresh under a new generation: temporary file, rename;
/// fsynced only if `durable` (otherwise a crash may leave a short or empty record,
/// which costs re-hashing, nothing else).
fn write_record<'a>(
    dir: &Path,
    entries: impl Iterator<Item = (&'a Window, &'a Stamp)>,
    durable: bool,
) -> Result<()> {
    let path = dir.join(RECORD);
    let tmp = dir.join(format!("{RECORD}.tmp-{}", fsutil::random_suffix()));
    let res = (|| {
        let mut f = io::BufWriter::new(File::create(&tmp)?);
        f.write_all(record_header(u64::from_le_bytes(fsutil::random_bytes())).as_bytes())?;
        for (w, s) in entries {
            f.write_all(record_line(w, s).as_bytes())?;
        }
        let f = f.into_inner().map_err(|e| e.into_error())?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(format!("cannot write {}", path.display()))(e));
    }
    if durable { sync_dir(dir) } else { Ok(()) }
}

/// Holds a blob directory's lock (`.lock`, which no listing shows) until dropped.
fn lock_blob(dir: &Path) -> Result<File> {
    let path = dir.join(".lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    crate::sys::lock(&f).map_err(io_err(format!("cannot lock {}", path.display())))?;
    Ok(f)
}

/// Names in a directory that are valid components (others are ignored).
fn read_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        // A file where a directory could be (the `chute-store` marker read as a
        // domain) holds no names either.
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(io_err(format!("cannot list {}", dir.display()))(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io_err(format!("cannot list {}", dir.display())))?;
        if let Some(n) = e.file_name().to_str() {
            if valid_component(n) {
                out.push(n.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Streams exactly `len` bytes of `body` into a new file at `tmp`, fsynced.
fn receive(
    tmp: &Path,
    len: u64,
    body: &mut dyn Read,
    expect: Option<[u8; 32]>,
) -> Result<([u8; 32], File)> {
    let mut f = File::create(tmp).map_err(io_err("cannot create window file"))?;
    let mut h = Sha256State::new();
    let mut buf = vec![0u8; (256 << 10).min(len as usize)];
    let mut got = 0u64;
    while got < len {
        let want = buf.len().min((len - got) as usize);
        let n = match body.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(Error::Bad(format!("body ended after {got} of {len} bytes")));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Bad(format!(
                    "body ended after {got} of {len} bytes: {e}"
                )));
            }
        };
        h.update(&buf[..n]);
        f.write_all(&buf[..n])
            .map_err(io_err("cannot write window"))?;
        got += n as u64;
    }
    // One byte more than announced means the sender lied about the length.
    let mut extra = [0u8; 1];
    if matches!(body.read(&mut extra), Ok(n) if n > 0) {
        return Err(Error::Bad(format!("body is longer than {len} bytes")));
    }
    let digest: [u8; 32] = h.finalize().into();
    if expect.is_some_and(|e| e != digest) {
        return Err(Error::Digest);
    }
    f.sync_all().map_err(io_err("cannot sync window"))?;
    Ok((digest, f))
}

/// Reads a byte range that may span several window files.
pub struct RangeReader {
    part: PathBuf,
    /// (window, offset within it, bytes to take), in order.
    pieces: Vec<(Window, u64, u64)>,
    current: Option<io::Take<File>>,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(cur) = &mut self.current {
                let n = cur.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                if cur.limit() > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "window file shorter than its name says",
                    ));
                }
                self.current = None;
            }
            if self.pieces.is_empty() {
                return Ok(0);
            }
            let (w, skip, take) = self.pieces.remove(0);
            let mut f = File::open(self.part.join(w.file_name()))?;
            f.seek(SeekFrom::Start(skip))?;
            self.current = Some(f.take(take));
        }
    }
}

/// [`fsutil::write_atomic`], failing as the store does (a full disk is [`Error::Full`]).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    fsutil::write_atomic(path, data).map_err(io_err(format!("cannot write {}", path.display())))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fsutil::sync_dir(dir).map_err(io_err(format!("cannot sync {}", dir.display())))
}

/// SHA-256 of an in-memory buffer, for callers that announce a window's digest.
pub fn digest(data: &[u8]) -> [u8; 32] {
    sha256(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn tmpdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("chute-store-{name}-{}", fsutil::random_suffix()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn index(size: Option<u64>) -> Vec<u8> {
        let size = size.map_or(String::new(), |s| format!(",\"size\":{s}"));
        format!(r#"{{"version":1,"domain":"d.org","node":"pi","mount":"m1","timestamp":"t1","parent":null{size}}}"#)
            .into_bytes()
    }

    #[test]
    fn windows_commit_list_read() {
        let root = tmpdir("basic");
        let s = Store::open(&root).unwrap();
        let id = s.create(&index(None)).unwrap();
        assert!(
            s.list("d.org", "pi").unwrap().is_empty(),
            "uncommitted blob is invisible"
        );
        s.write(&id, 0, 3, &mut &b"abc"[..], None).unwrap();
        // A gap: commit must refuse.
        s.write(&id, 5, 2, &mut &b"fg"[..], None).unwrap();
        assert!(matches!(
            s.commit(&id, &index(Some(7))),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(s.read(&id, 2, 3), Err(Error::Range(_))));
        s.write(&id, 3, 2, &mut &b"de"[..], Some(sha256(b"de")))
            .unwrap();
        assert_eq!(s.read(&id, 1, 5).unwrap(), b"bcdef");
        assert_eq!(s.hash(&id, 0, 7).unwrap(), sha256(b"abcdefg"));
        s.commit(&id, &index(Some(7))).unwrap();
        assert_eq!(s.list("d.org", "pi").unwrap(), vec![id.clone()]);
        assert!(matches!(
            s.write(&id, 7, 1, &mut &b"h"[..], None),
            Err(Error::Conflict(_))
        ));
        // A committed snapshot is forgotten before it can be deleted.
        assert!(matches!(s.delete(&id), Err(Error::Conflict(_))));
        s.forget(&id).unwrap();
        assert!(s.list("d.org", "pi").unwrap().is_empty());
        s.delete(&id).unwrap();
        assert!(!root.join("d.org/pi/m1/t1").exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn bad_windows_keep_nothing() {
        let root = tmpdir("bad");
        let s = Store::open(&root).unwrap();
        let id = s.create(&index(None)).unwrap();
        assert!(matches!(
            s.write(&id, 0, 3, &mut &b"abc"[..], Some([0; 32])),
            Err(Error::Digest)
        ));
        assert!(matches!(
            s.write(&id, 0, 4, &mut &b"abc"[..], None),
            Err(Error::Bad(_))
        ));
        assert!(matches!(
            s.write(&id, 0, 2, &mut &b"abc"[..], None),
            Err(Error::Bad(_))
        ));
        assert!(s.windows(&id).unwrap().is_empty());
        assert_eq!(
            fs::read_dir(root.join("d.org/pi/m1/t1/0")).unwrap().count(),
            0
        );
        s.write(&id, 0, 4, &mut &b"abcd"[..], None).unwrap();
        assert!(matches!(
            s.write(&id, 2, 4, &mut &b"cdef"[..], None),
            Err(Error::Range(_))
        ));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn names_cannot_escape() {
        for bad in [
            "..",
            ".",
            "",
            "a/b",
            "a\0b",
            ".hidden",
            "é",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(!valid_component(bad), "{bad:?}");
        }
        assert!(BlobId::parse("a/b/c/d").is_ok());
        assert!(BlobId::parse("a/b/../d").is_err());
        assert!(BlobId::parse("a/b/c").is_err());
    }

    #[test]
    fn usage_skips_the_marker_file() {
        // node_usage read `<root>/chute-store/<node>` as a directory and failed with
        // ENOTDIR, so `chute serve --allow` could not start on any store.
        let root = tmpdir("usage");
        let s = Store::open(&root).unwrap();
        assert_eq!(s.node_usage("pi").unwrap(), 0);
        let id = s.create(&index(None)).unwrap();
        s.write(&id, 0, 3, &mut &b"abc"[..], None).unwrap();
        assert_eq!(s.node_usage("pi").unwrap(), 3);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn forget_list_uncommitted_scrub_and_orphans() {
        let root = tmpdir("forget");
        let s = Store::open(&root).unwrap();
        let id = s.create(&index(None)).unwrap();
        s.write(&id, 0, 4, &mut &b"abcd"[..], None).unwrap();
        let listed = s.list_uncommitted("d.org", "pi").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].state, listed[0].bytes), (BlobState::Pending, 4));
        assert!(matches!(s.forget(&id), Err(Error::NotFound(_))));
        s.commit(&id, &index(Some(4))).unwrap();
        assert!(s.list_uncommitted("d.org", "pi").unwrap().is_empty());
        s.forget(&id).unwrap();
        // Forgetting again restarts its idle time (prune's mark, on this clock).
        let dir = s.dir(&id);
        let hour_ago = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - 3600;
        for d in [dir.join(PART), dir.clone()] {
            for e in fs::read_dir(&d).unwrap() {
                crate::sys::set_mtime_nofollow(&e.unwrap().path(), hour_ago, 0).unwrap();
            }
        }
        assert!(s.list_uncommitted("d.org", "pi").unwrap()[0].idle >= 3599);
        s.forget(&id).unwrap();
        assert!(s.list_uncommitted("d.org", "pi").unwrap()[0].idle < 60);
        assert!(s.list("d.org", "pi").unwrap().is_empty());
        assert!(matches!(s.index(&id), Err(Error::NotFound(_))));
        assert_eq!(s.forgotten_index(&id).unwrap(), index(Some(4)));
        assert_eq!(s.read(&id, 1, 2).unwrap(), b"bc");
        assert_eq!(s.hash(&id, 0, 4).unwrap(), sha256(b"abcd"));
        // Forgotten is final: no writes, no commit, no re-create.
        assert!(matches!(
            s.write(&id, 4, 1, &mut &b"e"[..], None),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            s.commit(&id, &index(Some(4))),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(s.create(&index(None)), Err(Error::Conflict(_))));
        assert_eq!(
            s.list_uncommitted("d.org", "pi").unwrap()[0].state,
            BlobState::Forgotten
        );
        // The keyless scrub finds a changed byte.
        assert!(s.scrub().unwrap().damaged.is_empty());
        let win = root.join("d.org/pi/m1/t1/0").join(
            Window {
                offset: 0,
                len: 4,
                sha256: sha256(b"abcd"),
            }
            .file_name(),
        );
        fs::write(&win, b"abce").unwrap();
        let r = s.scrub().unwrap();
        assert_eq!((r.blobs, r.windows, r.bytes), (1, 1, 4));
        assert_eq!(r.damaged.len(), 1);
        assert_eq!(r.damaged[0].blob, "d.org/pi/m1/t1");
        // A delete interrupted after its index files went leaves an orphan that a
        // second delete removes.
        fs::remove_file(root.join("d.org/pi/m1/t1").join(FORGOTTEN)).unwrap();
        fs::remove_file(root.join("d.org/pi/m1/t1").join(PENDING)).unwrap();
        assert_eq!(
            s.list_uncommitted("d.org", "pi").unwrap()[0].state,
            BlobState::Orphan
        );
        s.delete(&id).unwrap();
        assert!(s.list_uncommitted("d.org", "pi").unwrap().is_empty());
        assert!(matches!(s.delete(&id), Err(Error::NotFound(_))));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn newer_layout_is_refused() {
        let root = tmpdir("newer");
        fs::write(root.join(MARKER), "chute-store 9\n").unwrap();
        assert!(matches!(Store::open(&root), Err(Error::Newer(_))));
        fs::remove_dir_all(root).unwrap();
    }

    /// A store with one blob of one window ("abcdefgh" at 0), its directory and window.
    fn one_window(name: &str) -> (PathBuf, Store, BlobId, PathBuf, Window) {
        let root = tmpdir(name);
        let s = Store::open(&root).unwrap();
        let id = s.create(&index(None)).unwrap();
        s.write(&id, 0, 8, &mut &b"abcdefgh"[..], None).unwrap();
        let w = s.window_at(&id, 0).unwrap().unwrap();
        (root.clone(), s, id, root.join("d.org/pi/m1/t1"), w)
    }

    fn stamp(dir: &Path, w: &Window) -> Stamp {
        Stamp::of(&fs::metadata(dir.join(PART).join(w.file_name())).unwrap())
    }

    /// Flips a byte in place (same inode, same size) and sets mtime back, as a
    /// careless edit or `touch -r` would.
    fn flip_keeping_mtime(path: &Path) {
        let m = fs::metadata(path).unwrap();
        let mtime = m.modified().unwrap();
        // A change within one tick of a coarse ctime clock is the documented blind
        // spot; wait one out so the test is about the record, not the clock.
        std::thread::sleep(Duration::from_millis(50));
        let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(3)).unwrap();
        f.write_all(b"X").unwrap();
        drop(f);
        let d = mtime.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        crate::sys::set_mtime_nofollow(path, d.as_secs() as i64, d.subsec_nanos()).unwrap();
        assert_eq!(fs::metadata(path).unwrap().modified().unwrap(), mtime);
    }

    #[test]
    fn a_scrub_resumes_after_the_blob_it_reached() {
        let root = tmpdir("resume");
        let s = Store::open(&root).unwrap();
        for t in ["t1", "t2", "t3"] {
            let ix = String::from_utf8(index(None)).unwrap().replace("t1", t);
            let id = s.create(ix.as_bytes()).unwrap();
            s.write(&id, 0, 2, &mut &b"ab"[..], None).unwrap();
        }
        let mut done = Vec::new();
        let r = s
            .scrub_paced(Some("d.org/pi/m1/t1"), &mut |e| {
                if let ScrubEvent::BlobDone(b) = e {
                    done.push(b.to_string());
                }
                done.is_empty()
            })
            .unwrap();
        assert_eq!(done, ["d.org/pi/m1/t2"]);
        assert!(r.stopped);
        let r = s
            .scrub_paced(Some("d.org/pi/m1/t2"), &mut |_| true)
            .unwrap();
        assert_eq!((r.blobs, r.windows, r.stopped), (1, 1, false));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn record_answers_for_an_unchanged_window() {
        let (root, s, id, dir, w) = one_window("rec-hit");
        // Recorded on arrival, with the stat the file has now.
        assert_eq!(s.recorded(&dir, &w), Some(stamp(&dir, &w)));
        assert_eq!(s.window_hash(&id, &w).unwrap(), sha256(b"abcdefgh"));
        assert_eq!(s.hash(&id, 0, 8).unwrap(), sha256(b"abcdefgh"));
        // A second store (another process) reads the same record.
        let other = Store::open(&root).unwrap();
        assert_eq!(other.recorded(&dir, &w), Some(stamp(&dir, &w)));
        // Rewriting the record (here: a scrub compacting a junk line) is not
        // activity: the blob's idle time, prune's clock, goes on.
        let hour_ago = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 3600;
        for p in [
            dir.join(PENDING),
            dir.join(PART),
            dir.join(PART).join(w.file_name()),
        ] {
            crate::sys::set_mtime_nofollow(&p, hour_ago as i64, 0).unwrap();
        }
        let rec = dir.join(RECORD);
        fs::OpenOptions::new()
            .append(true)
            .open(&rec)
            .unwrap()
            .write_all(b"junk\n")
            .unwrap();
        let before = fs::metadata(&rec).unwrap().ino();
        assert!(s.scrub().unwrap().damaged.is_empty());
        assert_ne!(fs::metadata(&rec).unwrap().ino(), before, "rewritten");
        assert!(s.list_uncommitted("d.org", "pi").unwrap()[0].idle >= 3599);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn record_misses_after_an_edit_in_place_with_mtime_restored() {
        let (root, s, id, dir, w) = one_window("rec-flip");
        let path = dir.join(PART).join(w.file_name());
        let before = stamp(&dir, &w);
        flip_keeping_mtime(&path);
        let after = stamp(&dir, &w);
        assert_eq!(
            (after.ino, after.size, after.mtime),
            (before.ino, before.size, before.mtime)
        );
        assert_ne!(after.ctime, before.ctime, "a write changes ctime");
        assert_eq!(s.window_hash(&id, &w).unwrap(), sha256(b"abcXefgh"));
        // The mismatch was not recorded; the scrub finds it too.
        assert_eq!(s.recorded(&dir, &w), Some(before));
        assert_eq!(s.scrub().unwrap().damaged.len(), 1);
        assert_eq!(s.recorded(&dir, &w), None);
        // A truncated window is an error, not a hash of what is left.
        fs::write(&path, b"abc").unwrap();
        assert!(matches!(s.window_hash(&id, &w), Err(Error::Io(..))));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn scrub_drops_what_the_record_wrongly_vouches_for() {
        let (root, s, id, dir, w) = one_window("rec-rot");
        let path = dir.join(PART).join(w.file_name());
        flip_keeping_mtime(&path);
        // Bit rot under an unchanged stat, which no stat can show: forge the entry
        // a lucky stat would leave.
        s.record_append(&dir, &w, &stamp(&dir, &w)).unwrap();
        let server = Store::open(&root).unwrap();
        assert_eq!(
            server.window_hash(&id, &w).unwrap(),
            w.sha256,
            "trusted, as designed"
        );
        // Another process's scrub re-reads it anyway and drops the entry; the first
        // store's cached copy is not trusted after that.
        let r = s.scrub().unwrap();
        assert_eq!(r.damaged.len(), 1, "{r:?}");
        assert_eq!(server.recorded(&dir, &w), None);
        assert_eq!(server.window_hash(&id, &w).unwrap(), sha256(b"abcXefgh"));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_damaged_record_only_costs_a_rehash() {
        let (root, s, id, dir, w) = one_window("rec-bad");
        let rec = dir.join(RECORD);
        let good = fs::read_to_string(&rec).unwrap();
        let now = stamp(&dir, &w);
        let (header, line) = good.trim_end().split_once('\n').unwrap();
        // A line that fails its check, one cut short by a crash, garbage, another
        // version, an empty file: none of them vouches for anything.
        let mut bad_check = line.to_string();
        bad_check.replace_range(bad_check.len() - 2.., "00");
        let forged = record_line(
            &w,
            &Stamp {
                ino: now.ino + 1,
                ..now
            },
        );
        let cases = [
            format!("{header}\n{bad_check}\n"),
            format!("{header}\n{}", &line[..line.len() - 5]),
            format!("{header}\n{forged}"),
            "\0\0\0garbage\n\n".to_string(),
            good.replace("chute-verified 1 ", "chute-verified 2 "),
            String::new(),
        ];
        // A re-read records a window only once it has not changed for 2 s.
        fs::write(&rec, "").unwrap();
        assert_eq!(s.window_hash(&id, &w).unwrap(), sha256(b"abcdefgh"));
        assert_eq!(s.recorded(&dir, &w), None, "recorded while unsettled");
        std::thread::sleep(SETTLED + Duration::from_millis(100));
        for case in &cases {
            fs::write(&rec, case).unwrap();
            assert_ne!(s.recorded(&dir, &w), Some(now), "{case:?}");
            // Still the right answer, by re-reading; and the entry is back.
            assert_eq!(s.window_hash(&id, &w).unwrap(), sha256(b"abcdefgh"));
            assert_eq!(s.recorded(&dir, &w), Some(now), "{case:?}");
        }
        fs::remove_file(&rec).unwrap();
        assert_eq!(s.recorded(&dir, &w), None);
        assert_eq!(s.window_hash(&id, &w).unwrap(), sha256(b"abcdefgh"));
        // Record lines round-trip; a scrub compacts repeated ones.
        assert_eq!(
            parse_record_line(record_line(&w, &now).trim_end().as_bytes()),
            Some((w, now))
        );
        for _ in 0..3 {
            s.record_append(&dir, &w, &now).unwrap();
        }
        s.scrub().unwrap();
        assert_eq!(fs::read_to_string(&rec).unwrap().lines().count(), 2);
        fs::remove_dir_all(root).unwrap();
    }
}
