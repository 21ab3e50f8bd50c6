//! The blob store on disk, shared by `chute serve` and by local-directory remotes.
//!
//! The store holds opaque bytes and never needs a key. Its layout follows the
//! prototype's URI form:
//!
//! ```text
//! <root>/chute-store                      "chute-store 1\n": layout version
//! <root>/<domain>/<node>/<mount>/<timestamp>/
//!     index.pending.json                  the index as first POSTed (blob created)
//!     index.json                          the final index; present = snapshot visible
//!     0/<offset:016x>-<len:016x>-<sha256>  data part 0, one file per written window,
//!                                         named with the SHA-256 it arrived with
//!     0/.tmp-<random>                     a window being received (never read)
//! ```
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
//! - No path outside the root is reachable: every name component is checked by
//!   [`valid_component`] before it touches the file system.

use crate::crypto::{Sha256State, sha256};
use sha2::Digest;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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

/// A name component of a blob path: 1 to 128 of `[A-Za-z0-9._-]`, not starting with
/// a dot (so no `.`, `..` or hidden names), never a separator, NUL or non-ASCII.
pub fn valid_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Where a blob lives: `<domain>/<node>/<mount>/<timestamp>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId {
    pub domain: String,
    pub node: String,
    pub mount: String,
    pub timestamp: String,
}

impl BlobId {
    /// Builds an id, checking every component.
    pub fn new(domain: &str, node: &str, mount: &str, timestamp: &str) -> Result<BlobId> {
        for (what, c) in [
            ("domain", domain),
            ("node", node),
            ("mount", mount),
            ("timestamp", timestamp),
        ] {
            if !valid_component(c) {
                return Err(Error::Bad(format!(
                    "invalid {what} {c:?} (allowed: 1-128 of A-Z a-z 0-9 . _ -, not starting with '.')"
                )));
            }
        }
        Ok(BlobId {
            domain: domain.into(),
            node: node.into(),
            mount: mount.into(),
            timestamp: timestamp.into(),
        })
    }

    /// `domain/node/mount/timestamp`, the blob's URI path below `/chute/blob/`.
    pub fn path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.domain, self.node, self.mount, self.timestamp
        )
    }

    /// Parses `domain/node/mount/timestamp` (a trailing slash is allowed).
    pub fn parse(s: &str) -> Result<BlobId> {
        let s = s.strip_suffix('/').unwrap_or(s);
        let parts: Vec<&str> = s.split('/').collect();
        match parts[..] {
            [d, n, m, t] => BlobId::new(d, n, m, t),
            _ => Err(Error::Bad(format!("not a blob path: {s:?}"))),
        }
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        let tmp = part.join(format!(".tmp-{}", random_suffix()));
        let result = receive(&tmp, len, body, expect);
        let digest = match result {
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

    /// SHA-256 of `[offset, offset+len)` of part 0, re-read from disk.
    pub fn hash(&self, id: &BlobId, offset: u64, len: u64) -> Result<[u8; 32]> {
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

    /// The window that starts at `offset`, if one was written there.
    pub fn window_at(&self, id: &BlobId, offset: u64) -> Result<Option<Window>> {
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
}

/// What a blob that is not a committed snapshot is (see [`Store::list_uncommitted`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobState {
    /// Created but not committed: an upload in progress, or one abandoned.
    Pending,
    /// Committed, then forgotten: gone from `list`, its part still readable.
    Forgotten,
    /// A directory without any index, left by a delete that was interrupted.
    Orphan,
}

impl BlobState {
    /// The word the REST listing uses.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobState::Pending => "pending",
            BlobState::Forgotten => "forgotten",
            BlobState::Orphan => "orphan",
        }
    }

    pub fn parse(s: &str) -> Option<BlobState> {
        match s {
            "pending" => Some(BlobState::Pending),
            "forgotten" => Some(BlobState::Forgotten),
            "orphan" => Some(BlobState::Orphan),
            _ => None,
        }
    }
}

/// A blob that is not a committed snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uncommitted {
    pub id: BlobId,
    pub state: BlobState,
    /// Bytes of its window files.
    pub bytes: u64,
    /// Seconds since anything in its directory last changed.
    pub idle: u64,
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
    pub blobs: u64,
    pub windows: u64,
    pub bytes: u64,
    pub damaged: Vec<Damage>,
}

impl Store {
    /// Forgets a committed snapshot: `index.json` is renamed to
    /// `index.forgotten.json` (atomically, the directory fsynced). `list` no longer
    /// shows it, it can never be written or committed again, and its part stays
    /// readable and hashable for the snapshots that share its chunks, until a prune
    /// deletes it. Forgetting a forgotten blob again is a no-op.
    pub fn forget(&self, id: &BlobId) -> Result<()> {
        let dir = self.dir(id);
        match fs::rename(dir.join(INDEX), dir.join(FORGOTTEN)) {
            Ok(()) => {
                // Its mtime becomes the time of the forget, on this (the store's)
                // clock: prune measures its grace period from it, so a client
                // whose clock is off cannot shorten it.
                let _ = File::options()
                    .write(true)
                    .open(dir.join(FORGOTTEN))
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                sync_dir(&dir)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if dir.join(FORGOTTEN).exists() {
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
        self.scrub_paced(&mut |_| {})
    }

    /// [`Store::scrub`], calling `pace` with each window's length after reading it,
    /// so a background pass can sleep to stay under a read rate.
    pub fn scrub_paced(&self, pace: &mut dyn FnMut(u64)) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let mut buf = vec![0u8; 256 << 10];
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
                        let blob = format!("{domain}/{node}/{mount}/{ts}");
                        let (windows, _) = blob_files(&m.join(&ts))?;
                        report.blobs += 1;
                        for w in windows {
                            let path = m.join(&ts).join(PART).join(w.file_name());
                            let why = match rehash(&path, &mut buf) {
                                Ok((len, _)) if len != w.len => Some(format!(
                                    "the file holds {len} bytes, its name says {}",
                                    w.len
                                )),
                                Ok((_, sha)) if sha != w.sha256 => Some(
                                    "its bytes no longer match the SHA-256 they arrived with"
                                        .to_string(),
                                ),
                                Ok(_) => None,
                                Err(e) => Some(format!("unreadable: {e}")),
                            };
                            report.windows += 1;
                            report.bytes += w.len;
                            if let Some(why) = why {
                                report.damaged.push(Damage {
                                    blob: blob.clone(),
                                    offset: w.offset,
                                    len: w.len,
                                    why,
                                });
                            }
                            pace(w.len);
                        }
                    }
                }
            }
        }
        Ok(report)
    }
}

/// The windows in a blob directory (however incomplete) and the newest change time
/// of anything in it, temporaries included (a window being received is activity).
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

/// Length and SHA-256 of a file, read in pieces.
fn rehash(path: &Path, buf: &mut [u8]) -> io::Result<(u64, [u8; 32])> {
    let mut f = File::open(path)?;
    let mut h = Sha256State::new();
    let mut len = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, h.finalize().into()))
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
) -> Result<[u8; 32]> {
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
    Ok(digest)
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

/// Writes a whole file atomically: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}", random_suffix()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(format!("cannot write {}", path.display()))(e));
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("cannot sync {}", dir.display())))
}

/// Fsyncs the directory holding `path`, so a rename or create in it is durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

fn random_suffix() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the system random generator failed");
    crate::hex::encode(&b)
}

/// SHA-256 of an in-memory buffer, for callers that announce a window's digest.
pub fn digest(data: &[u8]) -> [u8; 32] {
    sha256(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("chute-store-{name}-{}", random_suffix()));
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
        s.forget(&id).unwrap();
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
}
