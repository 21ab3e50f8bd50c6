//! The blob store on disk, shared by `chute serve` and by local-directory remotes.
//!
//! The store holds opaque bytes and never needs a key. Its layout follows the
//! prototype's URI form:
//!
//! ```text
//! <root>/chute-store                      "chute-store 1\n": what makes a directory a
//!                                         store (magic and layout version); only
//!                                         `chute init` (and `chute serve` on its own
//!                                         store) writes it, and every other command
//!                                         refuses a directory without it. A store an
//!                                         older chute made without one (a `.lock`d or
//!                                         indexed blob directory, or `.scrub-state`,
//!                                         found) is adopted: the marker is written
//! <root>/CACHEDIR.TAG                     a cache directory tag, so backup tools (and
//!                                         chute's walk) skip the store
//! <root>/.scrub-state                     progress of `chute serve`'s background scrub
//!                                         (see [`crate::scrub`])
//! <root>/<domain>/<node>/<mount>/<timestamp>/
//!     index.pending.json                  the index as first POSTed (blob created)
//!     index.json                          the final index; present = snapshot visible
//!     index.forgotten.json                what index.json became when forgotten
//!     .lock                               flock'd by create, a window's rename, commit,
//!                                         delete, trim, record updates; holds the blob's
//!                                         change mark (8 random bytes, renewed after
//!                                         every change to its window files; see
//!                                         `listing.rs`), empty before the first window
//!     .verified                           the verified-hash record (`record.rs`); a cache
//!     .verified.tmp-<random>              a record being rewritten (never read)
//!     .tmp-<random>                       an index being written (never read)
//!     0/<offset:016x>-<len:016x>-<sha256>  data part 0, one file per written window,
//!                                         named with the SHA-256 it arrived with
//!     0/.tmp-<random>                     a window being received (never read),
//!                                         flock'd by its writer while it lives
//! ```
//!
//! Durability: durable is a promise of the commit, not of each window.
//! - A window is acknowledged once its bytes are in a file atomically renamed into
//!   place, without an fsync (its write-back is started): a half-received window is
//!   never seen, but an acknowledged one may be lost in a power cut (or kept under its
//!   name with other bytes) until its blob is committed.
//! - Commit, under the blob's lock, fdatasyncs every window file of part 0, then
//!   the part directory, then writes the index atomically (temporary file fsynced,
//!   renamed, blob directory fsynced): a committed snapshot survives a power cut
//!   whole, as before. `chute serve`'s commit route is this same call.
//! - So nothing vouches for a pending blob's windows without reading them: the
//!   verified record is trusted only for committed and forgotten blobs, and a
//!   resumed sink, which asks for the hash of every window it journaled, gets
//!   the hash of the bytes the file holds now.
//!
//! Invariants:
//! - Windows never overlap; rewriting a window with exactly the same offset and length
//!   replaces it atomically. A window whose body does not match its announced
//!   SHA-256 or length is dropped whole.
//! - A blob becomes visible to `list` only when `index.json` is committed, and commit
//!   checks that part 0 is written without gaps up to the index's `size`. A
//!   committed (or forgotten) blob is immutable: no more windows, no second commit
//!   with other bytes. A window is received without the blob's lock, but the check
//!   that its blob is still pending and its rename into place hold it, as commit
//!   does: a window whose upload began before the commit and ended after it is
//!   dropped (conflict), never renamed into the committed blob.
//! - A window may not start more than [`MAX_AHEAD_WINDOWS`] largest windows past
//!   the end of what part 0 holds (range error).
//! - A pending index is at most [`INDEX_CAP`] bytes, a committed one [`MAX_INDEX`]
//!   (its sealed header lists every window); with [`Store::with_max_pending`], a node
//!   has at most that many pending blobs (quota error).
//! - Temporaries a killed writer (a `kill -9`'d sink or server) left are removed
//!   ("swept", see `temps.rs` for exactly when and why that is safe): every blob's
//!   when `chute serve` starts (before it counts usage), a blob's when it is
//!   committed (it takes no more windows), every blob's a scrub reads (which
//!   reports them: swept, or in use by a live writer), and a node's by a prune on a
//!   local store (a pending blob's once unchanged for the grace period). A sweep
//!   holds the blob's lock, and removes a window's temporary only if it can take
//!   that file's own `flock`, which its writer holds from creation to rename and
//!   the kernel drops only when the writer dies: no live writer, running, stopped
//!   or stalled, ever loses a temporary it will rename into place.
//! - Quotas: each window, index and temporary (`.tmp-*`) file is [`charge`]d its
//!   bytes plus [`FILE_CHARGE`]: a server killed during many PUTs leaves no free
//!   disk (its next start counts or sweeps them); in a running server a window
//!   being received is counted by its reservation. Every change reports what it added and freed ([`Change`], or
//!   the freed charge of a delete or trim), counted under the blob's lock from the
//!   files it wrote, replaced or removed, so a count kept from these reports equals
//!   [`Store::node_usage`], counted from the disk. A window sent again over itself
//!   frees what it replaces: retries cost nothing.
//! - Reads of a byte range fail unless every byte of it has been written.
//! - A forgotten snapshot's window may be deleted alone ([`Store::trim`], for prune:
//!   no remaining snapshot has a chunk in it); a committed or pending blob's never.
//! - No path outside the root is reachable: every name component is checked by
//!   [`valid_component`] before it touches the file system.
//! - The verified record never vouches for bytes a scrub found damaged, and a
//!   lost or damaged record only costs re-reading.
//! - A storage challenge ([`Store::window_challenge`]) reads the window's file
//!   every time, whatever the record says: its answer proves the bytes are there.

mod listing;
mod record;
mod scrub;
mod temps;
mod window;

use listing::*;
use record::*;
pub use scrub::{Damage, ScrubEvent, ScrubReport};
pub use temps::Temps;
use temps::*;
use window::*;
pub use window::{RangeReader, Window};

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

/// The file that makes a directory a store (see the layout above).
pub const MARKER: &str = "chute-store";
const LAYOUT_VERSION: u32 = 1;
/// A cache directory tag (<https://bford.info/cachedir/>): backup tools, chute's
/// own walk included, skip a directory that holds one.
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
const CACHEDIR_TAG_TEXT: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file marks a chute store: sealed backup data, which backing up again\n\
# would only copy (it never deduplicates). See https://bford.info/cachedir/\n";
const PART: &str = "0";
const INDEX: &str = "index.json";
const PENDING: &str = "index.pending.json";
const FORGOTTEN: &str = "index.forgotten.json";
const LOCK: &str = ".lock";

/// Largest window accepted in one write.
pub const DEFAULT_MAX_WINDOW: u64 = 64 << 20;
/// Largest index.json a reader accepts.
pub const MAX_INDEX: u64 = 1 << 20;
/// Largest index the store accepts to create a blob with (a pending one). Chute's
/// own are about 200 bytes and at most about 1 KiB (five names of at most 128
/// bytes): the final index's sealed header, which grows with the snapshot's
/// windows, comes with the commit, under [`MAX_INDEX`].
pub const INDEX_CAP: u64 = 8 << 10;
/// What each stored file costs against a quota on top of its bytes: about one
/// disk block and an inode, so a flood of tiny windows or indexes is paid for.
pub const FILE_CHARGE: u64 = 4096;
/// How far past the end of part 0 (as written so far) a window may start, in
/// largest windows: a sink's workers upload a few windows out of order, never
/// dozens of windows ahead.
pub const MAX_AHEAD_WINDOWS: u64 = 64;

/// What a stored file of `len` bytes counts against its node's quota.
pub fn charge(len: u64) -> u64 {
    len.saturating_add(FILE_CHARGE)
}

/// How a write changed the bytes a node is charged for (see [`charge`]): counted
/// under the blob's lock from the files it added and the files it replaced, so
/// a quota can follow the disk exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: u64,
    pub freed: u64,
}

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
    /// A node's limit reached, such as its pending blobs (507).
    Quota(String),
    /// The disk is full (507).
    Full,
    /// The body's SHA-256 differs from the one announced (400).
    Digest,
    /// The store was laid out by a newer chute.
    Newer(String),
    /// No store here (no marker, not an older chute's layout); `exists` says
    /// whether the directory does (a usage error: exit 2).
    NoStore { root: PathBuf, exists: bool },
    /// Any other I/O failure, with what was being done.
    Io(String, io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bad(s) | Error::NotFound(s) | Error::Conflict(s) | Error::Range(s) => {
                f.write_str(s)
            }
            Error::TooLarge(s) | Error::Quota(s) => f.write_str(s),
            Error::Full => f.write_str("store is full (no space left on device)"),
            Error::Digest => f.write_str("body does not match its announced SHA-256"),
            Error::Newer(s) => f.write_str(s),
            Error::NoStore { root, .. } => write!(
                f,
                "{} is not a chute store: create one with `chute init --remote {}`",
                root.display(),
                root.display()
            ),
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

/// A store rooted at a directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    max_window: u64,
    /// Parsed verified-hash records, shared by every clone (the server's workers).
    records: Arc<Records>,
    /// Blobs' window lists, shared by every clone (see `listing.rs`).
    listings: Arc<Listings>,
    /// Most pending blobs a node may have at once; `None`: no limit.
    max_pending: Option<usize>,
    /// Held while a blob is created, so a node's pending blobs are counted and
    /// added to one at a time.
    creating: Arc<Mutex<()>>,
}

impl Store {
    /// Opens an existing store: a directory holding the [`MARKER`] file (every
    /// chute has written it since the first store). Anything else is
    /// [`Error::NoStore`]: only [`Store::init`] creates a store, so a mistyped path
    /// or an unmounted disk's empty mount point is never filled by accident, and no
    /// directory that merely looks like a store is taken for one.
    pub fn open(root: &Path) -> Result<Store> {
        if !check_marker(root)? {
            return Err(Error::NoStore {
                root: root.to_path_buf(),
                exists: root.is_dir(),
            });
        }
        // Stores made before the tag was written get one too; best effort (a
        // read-only store still opens).
        if !root.join(CACHEDIR_TAG).exists() {
            let _ = write_atomic(&root.join(CACHEDIR_TAG), CACHEDIR_TAG_TEXT.as_bytes());
        }
        Ok(Store::at(root))
    }

    /// Creates a store at `root` (mode 0700; missing parents with the default
    /// mode) or opens the one there; returns it and whether it was created. An
    /// existing directory becomes a store only if it is empty (and is then made
    /// 0700): a directory of other files is refused.
    pub fn init(root: &Path) -> Result<(Store, bool)> {
        if check_marker(root)? {
            return Ok((Store::open(root)?, false));
        }
        let cannot = || io_err(format!("cannot create store {}", root.display()));
        match fs::read_dir(root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::Bad(format!(
                        "{} is not empty and not a chute store: give a new or empty directory",
                        root.display()
                    )));
                }
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(cannot())?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt;
                if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent).map_err(cannot())?;
                }
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(root)
                    .map_err(cannot())?;
            }
            Err(e) => return Err(cannot()(e)),
        }
        write_atomic(&root.join(CACHEDIR_TAG), CACHEDIR_TAG_TEXT.as_bytes())?;
        // Last: a store with its marker is a whole one.
        write_atomic(&root.join(MARKER), marker_text().as_bytes())?;
        Ok((Store::at(root), true))
    }

    fn at(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
            max_window: DEFAULT_MAX_WINDOW,
            records: Arc::default(),
            listings: Arc::default(),
            max_pending: None,
            creating: Arc::default(),
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The nodes with a directory in `domain`, sorted.
    pub fn nodes(&self, domain: &str) -> Result<Vec<String>> {
        if !valid_component(domain) {
            return Err(Error::Bad(format!("bad domain {domain:?}")));
        }
        read_names(&self.root.join(domain))
    }

    /// Sets the largest window one write may carry.
    pub fn with_max_window(mut self, max: u64) -> Store {
        self.max_window = max;
        self
    }

    /// Limits the pending (created, not yet committed) blobs of each node.
    pub fn with_max_pending(mut self, max: usize) -> Store {
        self.max_pending = Some(max);
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
        Ok(self.create_charged(index)?.0)
    }

    /// [`Store::create`], saying what it changed in its node's charge: the new
    /// pending index, and the one it replaced if the blob was pending already.
    pub fn create_charged(&self, index: &[u8]) -> Result<(BlobId, Change)> {
        check_index_len(index, INDEX_CAP)?;
        let (id, _) = index_place(index)?;
        let dir = self.dir(&id);
        let _creating = self.creating.lock().expect("poisoned");
        if let Some(max) = self.max_pending {
            if !dir.join(PENDING).exists() && self.pending_blobs(&id.node)? >= max {
                return Err(Error::Quota(format!(
                    "node {} has {max} pending blobs, the most a node may have: commit or delete some",
                    id.node
                )));
            }
        }
        fs::create_dir_all(dir.join(PART))
            .map_err(io_err(format!("cannot create blob {}", id.path())))?;
        let _lock = lock_blob(&dir)?;
        if dir.join(INDEX).exists() || dir.join(FORGOTTEN).exists() {
            return Err(Error::Conflict(format!(
                "blob {} is already committed",
                id.path()
            )));
        }
        let freed = fs::metadata(dir.join(PENDING)).map_or(0, |m| charge(m.len()));
        write_atomic(&dir.join(PENDING), index)?;
        let added = charge(index.len() as u64);
        Ok((id, Change { added, freed }))
    }

    /// How many blobs of a node, under every domain, are pending: created, neither
    /// committed nor forgotten.
    fn pending_blobs(&self, node: &str) -> Result<usize> {
        let mut n = 0;
        self.each_blob_dir(node, &mut |dir| {
            if dir.join(PENDING).exists()
                && !dir.join(INDEX).exists()
                && !dir.join(FORGOTTEN).exists()
            {
                n += 1;
            }
            Ok(())
        })?;
        Ok(n)
    }

    /// Calls `f` with every blob directory of a node, under every domain.
    fn each_blob_dir(&self, node: &str, f: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
        if !valid_component(node) {
            return Ok(());
        }
        for domain in read_names(&self.root)? {
            let base = self.root.join(&domain).join(node);
            for mount in read_names(&base)? {
                for ts in read_names(&base.join(&mount))? {
                    let dir = base.join(&mount).join(&ts);
                    if dir.is_dir() {
                        f(&dir)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// What the files of `[offset, offset+len)`, exactly that window, count against
    /// the node's quota now: what writing that window again replaces.
    pub fn held(&self, id: &BlobId, offset: u64, len: u64) -> u64 {
        self.listing(&self.dir(id)).map_or(0, |l| {
            l.same_range(offset, len)
                .iter()
                .map(|w| charge(w.len))
                .sum()
        })
    }

    /// The windows written so far, sorted by offset (one per range: a window
    /// replaced by a crash-interrupted rewrite may exist twice).
    pub fn windows(&self, id: &BlobId) -> Result<Vec<Window>> {
        Ok(self.listing(&self.existing_dir(id)?)?.to_vec())
    }

    /// The windows of the blob in `dir`: kept in memory while its change mark stays
    /// the same (see `listing.rs`), listed from the directory otherwise.
    fn listing(&self, dir: &Path) -> Result<Arc<WindowList>> {
        let mark = mark_of(dir);
        if let Some(l) = mark.and_then(|m| self.listings.get(dir, m)) {
            return Ok(l);
        }
        let list = Arc::new(WindowList::read(&dir.join(PART), &self.listings)?);
        if let Some(m) = mark {
            self.listings.put(dir, m, list.clone());
        }
        Ok(list)
    }

    /// The windows of the blob in `dir` as listed now, for a caller about to refuse
    /// something a kept list says (another process may have changed them unseen).
    fn relisting(&self, dir: &Path) -> Result<Arc<WindowList>> {
        self.listings.forget(dir);
        self.listing(dir)
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
        Ok(self.write_charged(id, offset, len, body, expect)?.0)
    }

    /// [`Store::write`], saying what it changed in its node's charge: the window
    /// added and the files of the same range it replaced. The body is received
    /// without the blob's lock; the checks that the blob is still pending and that
    /// no window overlaps, and the rename into place, hold it (commit, delete and
    /// trim take it too), so no window lands on a committed or forgotten blob.
    pub fn write_charged(
        &self,
        id: &BlobId,
        offset: u64,
        len: u64,
        body: &mut dyn Read,
        expect: Option<[u8; 32]>,
    ) -> Result<([u8; 32], Change)> {
        let dir = self.existing_dir(id)?;
        check_pending(&dir, id)?;
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
        let ahead = self.max_window.saturating_mul(MAX_AHEAD_WINDOWS);
        let list = self.listing(&dir)?;
        let end = list.end();
        if offset > end.saturating_add(ahead) {
            return Err(Error::Range(format!(
                "window at byte {offset} starts more than {ahead} bytes past the end of part 0 ({end} bytes)"
            )));
        }
        let mut win = Window {
            offset,
            len,
            sha256: [0; 32],
        };
        check_overlap(&list, win)?;
        drop(list);
        let part = dir.join(PART);
        // Locked until `file` is dropped, after the rename: a sweep keeps it.
        let (tmp, file) = new_window_temp(&part)?;
        let placed = receive(file, len, body, expect).and_then(|(digest, file)| {
            win.sha256 = digest;
            crate::testhooks::hold_window();
            self.place(id, &dir, &tmp, &win).map(|freed| (file, freed))
        });
        let (file, freed) = match placed {
            Ok(p) => p,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // The bytes were hashed as they were written through `file`: what it holds
        // now is verified, so the record vouches for it (a cache: failure costs time).
        if let Ok(m) = file.metadata() {
            let _ = self.record_append(&dir, &win, &Stamp::of(&m));
        }
        let added = charge(len);
        Ok((win.sha256, Change { added, freed }))
    }

    /// Renames a received window into place under the blob's lock, if the blob is
    /// still pending and no other window overlaps it; returns what the files it
    /// replaced (the same range) were charged. Neither the file nor the directory
    /// is fsynced: the commit makes every window durable (see the module docs). The
    /// blob's change mark is renewed and this process's list of its windows
    /// updated in place.
    fn place(&self, id: &BlobId, dir: &Path, tmp: &Path, win: &Window) -> Result<u64> {
        let lock = lock_blob(dir)?;
        check_pending(dir, id)?;
        // Under the lock the mark is exact: taken out of the cache, the list is
        // this thread's to change (a reader holding it costs a copy).
        let mark = read_mark(&lock);
        let mut list = match mark.and_then(|m| self.listings.take(dir, m)) {
            Some(l) => l,
            None => Arc::new(WindowList::read(&dir.join(PART), &self.listings)?),
        };
        // Another writer may have placed an overlapping window meanwhile.
        if let Err(e) = check_overlap(&list, *win) {
            if let Some(m) = mark {
                self.listings.put(dir, m, list);
            }
            return Err(e);
        }
        let part = dir.join(PART);
        let replaced = list.same_range(win.offset, win.len);
        // No mark while the windows change: if the new one cannot be written after
        // the rename, every process lists the blob rather than trust an old list.
        lock.set_len(0)
            .map_err(io_err(format!("cannot write {}", dir.join(LOCK).display())))?;
        fs::rename(tmp, part.join(win.file_name()))
            .map_err(io_err(format!("cannot store window of {}", id.path())))?;
        let mut freed = 0;
        let mut removed = Vec::new();
        for old in replaced {
            // A file of the same name was replaced by the rename itself.
            if old.sha256 == win.sha256 || fs::remove_file(part.join(old.file_name())).is_ok() {
                freed += charge(old.len);
                removed.push(old);
            }
        }
        Arc::make_mut(&mut list).placed(*win, &removed);
        // The window is in place whatever happens to the mark: without one, every
        // process lists the blob until one is written.
        if let Ok(Some(mark)) = new_mark(&lock) {
            self.listings.put(dir, mark, list);
        }
        Ok(freed)
    }

    /// Length of part 0 as written: the end of its last window.
    pub fn part_len(&self, id: &BlobId) -> Result<u64> {
        Ok(self.listing(&self.existing_dir(id)?)?.end())
    }

    /// Opens a reader over `[offset, offset+len)` of part 0; every byte must be written.
    pub fn read_range(&self, id: &BlobId, offset: u64, len: u64) -> Result<RangeReader> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::Range("range past the end".into()))?;
        let dir = self.existing_dir(id)?;
        match self.pieces(id, &dir, &*self.listing(&dir)?, offset, end) {
            // What a kept list says is missing is looked for on disk before it is
            // refused: another process may have changed the windows unseen.
            Err(Error::Range(_)) => self.pieces(id, &dir, &*self.relisting(&dir)?, offset, end),
            r => r,
        }
    }

    /// A reader over `[offset, end)` from the windows in `list`.
    fn pieces(
        &self,
        id: &BlobId,
        dir: &Path,
        list: &WindowList,
        offset: u64,
        end: u64,
    ) -> Result<RangeReader> {
        let mut pieces = Vec::new();
        let mut pos = offset;
        for w in list.touching(offset, end) {
            if w.offset > pos {
                break;
            }
            let take_end = w.end().min(end);
            pieces.push((*w, pos - w.offset, take_end - pos));
            pos = take_end;
        }
        if pos < end {
            return Err(Error::Range(format!(
                "bytes {offset}-{} of {} are not all written (part holds {} bytes)",
                end.saturating_sub(1),
                id.path(),
                list.end()
            )));
        }
        // A window file cut short behind the store's back is damage, said before the
        // first byte: a server must never promise bytes it then cannot send.
        let part = dir.join(PART);
        for (w, _, _) in &pieces {
            let file = part.join(w.file_name());
            let held = match fs::metadata(&file) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(io_err(format!("cannot read {}", file.display()))(e)),
            };
            if held < w.len {
                return Err(Error::Range(format!(
                    "bytes {offset}-{} of {}: its window at byte {} holds {held} of its {} bytes (damaged on the store; chute scrub names it)",
                    end.saturating_sub(1),
                    id.path(),
                    w.offset,
                    w.len
                )));
            }
        }
        Ok(RangeReader {
            part,
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
                short_window(),
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
        let found = self
            .listing(&self.existing_dir(id)?)?
            .by_offset
            .get(&offset)
            .copied();
        if let Some(w) = found.filter(exact) {
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
                short_window(),
            ));
        }
        Ok(h.finalize().into())
    }

    /// The SHA-256 of window `w` of blob `id` as its file holds it now (of its first
    /// `w.len` bytes; a shorter file is an error). Answered from the blob's verified
    /// record, without reading, when a fresh stat of the file equals the one recorded
    /// when its bytes were last found to match its name and the blob is committed or
    /// forgotten; otherwise the file is re-read and, if it matches and did not change
    /// meanwhile, recorded again. A pending blob's windows are always re-read: their
    /// bytes are not durable before the commit, and after a power cut a file may keep
    /// its recorded stat but not its bytes (what a resumed sink asks about).
    pub fn window_hash(&self, id: &BlobId, w: &Window) -> Result<[u8; 32]> {
        let dir = self.existing_dir(id)?;
        let path = dir.join(PART).join(w.file_name());
        let cannot = || io_err(format!("cannot read {}", id.path()));
        let now = Stamp::of(&fs::metadata(&path).map_err(cannot())?);
        let durable = dir.join(INDEX).exists() || dir.join(FORGOTTEN).exists();
        if durable && now.size == w.len && self.recorded(&dir, w) == Some(now) {
            return Ok(w.sha256);
        }
        let mut buf = vec![0u8; 256 << 10];
        let r = reread(&path, w.len, &mut buf).map_err(cannot())?;
        if r.len < w.len {
            return Err(Error::Io(
                format!("cannot read {}", id.path()),
                short_window(),
            ));
        }
        if let (true, Some(s)) = (r.len == w.len && r.digest == w.sha256, r.settled) {
            let _ = self.record_append(&dir, w, &s);
        }
        Ok(r.digest)
    }

    /// The answer to a storage challenge: the Poly1305 tag, keyed by the nonce, of
    /// the bytes of window `w` as its file holds them now, read from disk every time in
    /// 256 KiB pieces (never from the record, which holds hashes, not bytes). A file
    /// shorter than the window is an I/O error, like [`Store::window_hash`]'s.
    pub fn window_challenge(
        &self,
        id: &BlobId,
        w: &Window,
        nonce: &crate::crypto::ChallengeNonce,
    ) -> Result<[u8; 16]> {
        let dir = self.existing_dir(id)?;
        let path = dir.join(PART).join(w.file_name());
        let cannot = || io_err(format!("cannot read {}", id.path()));
        let f = File::open(&path).map_err(cannot())?;
        let mut mac = crate::crypto::ChallengeMac::new(nonce);
        let mut buf = vec![0u8; (256 << 10).min(w.len as usize).max(1)];
        let mut r = f.take(w.len);
        let mut got = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(cannot()(e)),
            };
            mac.update(&buf[..n]);
            got += n as u64;
        }
        if got < w.len {
            return Err(Error::Io(
                format!("cannot read {}", id.path()),
                short_window(),
            ));
        }
        Ok(mac.finalize())
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
        if let Some(w) = self.listing(&dir)?.by_offset.get(&offset) {
            return Ok(Some(*w));
        }
        // Not in a kept list: another process may have written it unseen.
        Ok(self.relisting(&dir)?.by_offset.get(&offset).copied())
    }

    /// Commits the final index: the blob becomes a visible snapshot.
    pub fn commit(&self, id: &BlobId, index: &[u8]) -> Result<()> {
        self.commit_charged(id, index).map(|_| ())
    }

    /// [`Store::commit`], saying what it changed in its node's charge: the final
    /// index, or nothing when the same index was committed already.
    pub fn commit_charged(&self, id: &BlobId, index: &[u8]) -> Result<Change> {
        check_index_len(index, MAX_INDEX)?;
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
        let lock = lock_blob(&dir)?;
        if dir.join(FORGOTTEN).exists() {
            return Err(Error::Conflict(format!(
                "blob {} was forgotten; it cannot be committed again",
                id.path()
            )));
        }
        if let Ok(old) = fs::read(dir.join(INDEX)) {
            return if old == index {
                Ok(Change::default())
            } else {
                Err(Error::Conflict(format!(
                    "blob {} is already committed",
                    id.path()
                )))
            };
        }
        let size = size.ok_or_else(|| Error::Bad("final index has no size".into()))?;
        let kept = read_mark(&lock).and_then(|m| self.listings.get(&dir, m));
        let mut list = match kept {
            Some(l) => l,
            None => self.relisting(&dir)?,
        };
        if list.written_to() != size {
            // Looked for on disk before it is refused (see `listing.rs`).
            list = self.relisting(&dir)?;
        }
        let pos = list.written_to();
        if pos != size {
            return Err(Error::Conflict(format!(
                "cannot commit {}: part 0 is written without gaps up to byte {pos}, the index says {size}",
                id.path()
            )));
        }
        // The promise of an acknowledged window ends here: every window file's
        // bytes, then the names in part 0, are durable before the index exists.
        let part = dir.join(PART);
        let cannot = || io_err(format!("cannot sync the windows of {}", id.path()));
        for w in list.by_offset.values() {
            File::open(part.join(w.file_name()))
                .and_then(|f| f.sync_data())
                .map_err(cannot())?;
        }
        sync_dir(&part)?;
        write_atomic(&dir.join(INDEX), index)?;
        // Committed, the blob takes no more windows: what a killed writer left in
        // it is garbage now (a live writer's is kept; it drops it itself). A sweep
        // that fails costs only the space, never the commit.
        let swept = sweep_locked(&dir, Duration::ZERO, SystemTime::now()).unwrap_or_default();
        Ok(Change {
            added: charge(index.len() as u64),
            freed: swept.freed,
        })
    }

    /// The committed index of a blob.
    pub fn index(&self, id: &BlobId) -> Result<Vec<u8>> {
        self.read_index(id, INDEX, "committed")
    }

    /// The committed index of a blob, or a pending one's as it was created (`true`
    /// with it). A forgotten blob keeps its creating index: it is neither. A
    /// commit between the reads is found by the last.
    pub fn index_or_pending(&self, id: &BlobId) -> Result<(Vec<u8>, bool)> {
        let missing = |e: &Error| matches!(e, Error::NotFound(_));
        match self.index(id) {
            Err(e) if missing(&e) => {}
            r => return r.map(|b| (b, false)),
        }
        if self.dir(id).join(FORGOTTEN).exists() {
            return Err(Error::NotFound(format!(
                "no committed or pending blob {}",
                id.path()
            )));
        }
        match self.read_index(id, PENDING, "committed or pending") {
            Err(e) if missing(&e) => {}
            r => return r.map(|b| (b, true)),
        }
        self.read_index(id, INDEX, "committed or pending")
            .map(|b| (b, false))
    }

    /// One of a blob's index files; a missing one is "no `what` blob".
    fn read_index(&self, id: &BlobId, name: &str, what: &str) -> Result<Vec<u8>> {
        match fs::read(self.dir(id).join(name)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("no {what} blob {}", id.path())))
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
        crate::sort::sort(&mut out);
        Ok(out)
    }

    /// What a node's files count against its quota, under every domain: each
    /// window, index and temporary (`.tmp-*`, a window or index being written, or
    /// one a killed writer left) its bytes plus [`FILE_CHARGE`] (see [`charge`]).
    /// Locks and verified records are not counted.
    pub fn node_usage(&self, node: &str) -> Result<u64> {
        let mut total = 0u64;
        self.each_blob_dir(node, &mut |dir| {
            total = total.saturating_add(blob_charge(dir)?);
            total = total.saturating_add(temps_charge(dir, false)?);
            Ok(())
        })?;
        Ok(total)
    }

    /// Removes a blob that is not a committed snapshot (a forgotten, pending or
    /// orphaned one): its index first, then its data. A committed snapshot must be
    /// forgotten first (409), so a prune that raced a commit cannot destroy it: the
    /// check and the removal hold the blob's lock, which commit takes too.
    /// Returns what the blob's files were charged (see [`charge`]), counted under
    /// that lock.
    pub fn delete(&self, id: &BlobId) -> Result<u64> {
        let dir = self.dir(id);
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("no blob {}", id.path())));
        }
        let _lock = lock_blob(&dir)?;
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("no blob {}", id.path())));
        }
        if dir.join(INDEX).exists() {
            return Err(Error::Conflict(format!(
                "blob {} is a committed snapshot: forget it first",
                id.path()
            )));
        }
        // A live writer's temporary goes too, but its bytes are that writer's
        // reservation, which it gives back when its rename fails.
        let freed = blob_charge(&dir)?.saturating_add(temps_charge(&dir, true)?);
        self.listings.forget(&dir);
        for name in [INDEX, FORGOTTEN, PENDING] {
            match fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("cannot delete {}", id.path()))(e)),
            }
        }
        sync_dir(&dir)?;
        fs::remove_dir_all(&dir).map_err(io_err(format!("cannot delete {}", id.path())))?;
        Ok(freed)
    }

    /// Deletes the window at `offset` of a forgotten snapshot (prune trims windows
    /// no remaining snapshot uses); returns what its files were charged (see
    /// [`charge`]), counted under the blob's lock. Refused (conflict) for a
    /// committed or pending blob, under the lock commit and delete take.
    pub fn trim(&self, id: &BlobId, offset: u64) -> Result<u64> {
        let dir = self.existing_dir(id)?;
        let lock = lock_blob(&dir)?;
        if dir.join(INDEX).exists() || !dir.join(FORGOTTEN).exists() {
            return Err(Error::Conflict(format!(
                "blob {} is not a forgotten snapshot: only a forgotten snapshot's windows can be trimmed",
                id.path()
            )));
        }
        let part = dir.join(PART);
        let cannot = || io_err(format!("cannot trim {}", id.path()));
        let mut freed = None;
        // No mark while the windows change (see `place`).
        lock.set_len(0).map_err(cannot())?;
        // Every file of that window (a crash-interrupted rewrite may have left two).
        for e in fs::read_dir(&part).map_err(cannot())? {
            let e = e.map_err(cannot())?;
            let w = e.file_name().to_str().and_then(Window::from_file_name);
            if let Some(w) = w.filter(|w| w.offset == offset) {
                fs::remove_file(e.path()).map_err(cannot())?;
                freed = Some(freed.unwrap_or(0) + charge(w.len));
            }
        }
        let freed = freed.ok_or_else(|| {
            Error::NotFound(format!("no window at byte {offset} of {}", id.path()))
        })?;
        self.listings.forget(&dir);
        let _ = new_mark(&lock);
        sync_dir(&part)?;
        Ok(freed)
    }

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
        self.read_index(id, FORGOTTEN, "forgotten")
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
        crate::sort::by(&mut out, |a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// Holds a blob directory's lock (`.lock`, which no listing shows) until dropped.
fn lock_blob(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| match e.kind() {
            // The blob was deleted meanwhile.
            io::ErrorKind::NotFound => Error::NotFound(format!("no blob {}", dir.display())),
            _ => io_err(format!("cannot open {}", path.display()))(e),
        })?;
    crate::sys::lock(&f).map_err(io_err(format!("cannot lock {}", path.display())))?;
    Ok(f)
}

/// Refuses an index larger than the store keeps.
fn check_index_len(index: &[u8], cap: u64) -> Result<()> {
    if index.len() as u64 > cap {
        return Err(Error::TooLarge(format!(
            "index of {} bytes is larger than the limit of {cap}",
            index.len()
        )));
    }
    Ok(())
}

/// Refuses a change to a blob that is not pending: committed or forgotten (409:
/// a committed blob is immutable) or deleted (404). Callers that act on the answer
/// hold the blob's lock.
fn check_pending(dir: &Path, id: &BlobId) -> Result<()> {
    if dir.join(INDEX).exists() || dir.join(FORGOTTEN).exists() {
        return Err(Error::Conflict(format!(
            "blob {} is committed; it cannot change",
            id.path()
        )));
    }
    if !dir.join(PENDING).exists() {
        return Err(Error::NotFound(format!("no blob {}", id.path())));
    }
    Ok(())
}

/// Refuses `win` if it overlaps a window of `list` other than one of its exact range.
fn check_overlap(list: &WindowList, win: Window) -> Result<()> {
    for w in list.touching(win.offset, win.end()) {
        if !w.same_range(&win) {
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

/// What a blob directory's files count against its node's quota: its index files
/// and every window file (both of a pair a crash left), each [`charge`]d.
fn blob_charge(dir: &Path) -> Result<u64> {
    let mut total = 0u64;
    for name in [PENDING, INDEX, FORGOTTEN] {
        match fs::metadata(dir.join(name)) {
            Ok(m) => total = total.saturating_add(charge(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("cannot read {}", dir.display()))(e)),
        }
    }
    for w in part_windows(&dir.join(PART))? {
        total = total.saturating_add(charge(w.len));
    }
    Ok(total)
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
    crate::sort::sort(&mut out);
    Ok(out)
}

fn marker_text() -> String {
    format!("{MARKER} {LAYOUT_VERSION}\n")
}

/// Whether `root` holds a store marker of this layout version: `false` if it has
/// none; an error if it has one of a newer chute, or a damaged one.
fn check_marker(root: &Path) -> Result<bool> {
    let marker = root.join(MARKER);
    let s = match fs::read_to_string(&marker) {
        Ok(s) => s,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(io_err(format!("cannot read {}", marker.display()))(e)),
    };
    let v = s
        .trim()
        .strip_prefix("chute-store ")
        .and_then(|v| v.parse::<u32>().ok());
    match v {
        Some(LAYOUT_VERSION) => Ok(true),
        Some(v) if v > LAYOUT_VERSION => Err(Error::Newer(format!(
            "store {} was written by a newer chute (format {v}, this build reads {LAYOUT_VERSION})",
            root.display()
        ))),
        _ => Err(Error::Bad(format!(
            "{} is not a chute store (bad {MARKER} file)",
            root.display()
        ))),
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

/// Every window file in a part directory (none if it does not exist), unsorted.
fn part_windows(part: &Path) -> Result<Vec<Window>> {
    let cannot = || io_err(format!("cannot list {}", part.display()));
    let entries = match fs::read_dir(part) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(cannot()(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(cannot())?;
        if let Some(w) = e.file_name().to_str().and_then(Window::from_file_name) {
            out.push(w);
        }
    }
    Ok(out)
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
        let s = Store::init(&root).unwrap().0;
        let id = s.create(&index(None)).unwrap();
        assert!(
            s.list("d.org", "pi").unwrap().is_empty(),
            "uncommitted blob is invisible"
        );
        // Issue 14: its index is readable as created, marked pending.
        assert!(matches!(s.index(&id), Err(Error::NotFound(_))));
        assert_eq!(s.index_or_pending(&id).unwrap(), (index(None), true));
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
        // The final index carries a header listing every window: a snapshot of
        // 16 GiB in 2 MiB windows has one of ~700 KiB. Over MAX_INDEX: refused.
        let committed = |pad: u64| {
            let mut ix = index(Some(7));
            ix.pop();
            let sealed = format!(",\"sealed\":\"{}\"}}", "ab".repeat(pad as usize / 2));
            ix.extend_from_slice(sealed.as_bytes());
            ix
        };
        assert!(matches!(
            s.commit(&id, &committed(MAX_INDEX)),
            Err(Error::TooLarge(_))
        ));
        s.commit(&id, &committed(700 << 10)).unwrap();
        assert_eq!(s.list("d.org", "pi").unwrap(), vec![id.clone()]);
        assert_eq!(
            s.index_or_pending(&id).unwrap(),
            (committed(700 << 10), false)
        );
        assert!(matches!(
            s.write(&id, 7, 1, &mut &b"h"[..], None),
            Err(Error::Conflict(_))
        ));
        // A committed snapshot is forgotten before it can be deleted.
        assert!(matches!(s.delete(&id), Err(Error::Conflict(_))));
        s.forget(&id).unwrap();
        assert!(s.list("d.org", "pi").unwrap().is_empty());
        // Forgotten is neither committed nor pending, though its creating index stays.
        assert!(matches!(s.index_or_pending(&id), Err(Error::NotFound(_))));
        s.delete(&id).unwrap();
        assert!(!root.join("d.org/pi/m1/t1").exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn bad_windows_keep_nothing() {
        let root = tmpdir("bad");
        let s = Store::init(&root).unwrap().0;
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
        let s = Store::init(&root).unwrap().0;
        assert_eq!(s.node_usage("pi").unwrap(), 0);
        let id = s.create(&index(None)).unwrap();
        s.write(&id, 0, 3, &mut &b"abc"[..], None).unwrap();
        let ix = index(None).len() as u64;
        assert_eq!(s.node_usage("pi").unwrap(), charge(ix) + charge(3));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn changes_follow_the_files_exactly() {
        let root = tmpdir("charges");
        let s = Store::init(&root).unwrap().0.with_max_pending(2);
        let usage = || s.node_usage("pi").unwrap();
        let mut used = 0u64;
        let mut apply = |c: Change| {
            used = used + c.added - c.freed;
            used
        };
        let (id, c) = s.create_charged(&index(None)).unwrap();
        assert_eq!(apply(c), usage());
        // Created again while pending: the index is replaced, not added.
        let (_, c) = s.create_charged(&index(None)).unwrap();
        assert_eq!(
            (c.added, c.freed),
            (c.freed, charge(index(None).len() as u64))
        );
        assert_eq!(apply(c), usage());
        let (_, c) = s.write_charged(&id, 0, 4, &mut &b"abcd"[..], None).unwrap();
        assert_eq!((c.added, c.freed), (charge(4), 0));
        assert_eq!(apply(c), usage());
        // Sent again, same bytes or other: charged the difference, nothing.
        for body in [&b"abcd"[..], b"wxyz"] {
            let (_, c) = s.write_charged(&id, 0, 4, &mut &body[..], None).unwrap();
            assert_eq!((c.added, c.freed), (charge(4), charge(4)), "a retry");
            assert_eq!(apply(c), usage());
        }
        assert_eq!(s.held(&id, 0, 4), charge(4));
        assert_eq!(s.held(&id, 0, 3), 0);
        let (_, c) = s.write_charged(&id, 4, 2, &mut &b"ef"[..], None).unwrap();
        assert_eq!(apply(c), usage());
        // Windows may not start far past the end of what was written.
        let far = DEFAULT_MAX_WINDOW * MAX_AHEAD_WINDOWS + 7;
        assert!(matches!(
            s.write(&id, far, 1, &mut &b"x"[..], None),
            Err(Error::Range(_))
        ));
        let c = s.commit_charged(&id, &index(Some(6))).unwrap();
        assert_eq!(apply(c), usage());
        assert_eq!(
            s.commit_charged(&id, &index(Some(6))).unwrap(),
            Change::default()
        );
        // Committed: immutable, even for a window that was already there.
        assert!(matches!(
            s.write(&id, 0, 4, &mut &b"wxyz"[..], None),
            Err(Error::Conflict(_))
        ));
        s.forget(&id).unwrap();
        used -= s.trim(&id, 4).unwrap();
        assert_eq!(used, usage());
        used -= s.delete(&id).unwrap();
        assert_eq!((used, usage()), (0, 0));
        // Pending blobs are capped per node; re-creating one that is pending is not new.
        for t in ["t2", "t3"] {
            let ix = String::from_utf8(index(None)).unwrap().replace("t1", t);
            s.create(ix.as_bytes()).unwrap();
        }
        let ix = String::from_utf8(index(None)).unwrap().replace("t1", "t4");
        assert!(matches!(s.create(ix.as_bytes()), Err(Error::Quota(_))));
        let ix = String::from_utf8(index(None)).unwrap().replace("t1", "t3");
        s.create(ix.as_bytes()).unwrap();
        let big = vec![b' '; INDEX_CAP as usize + 1];
        assert!(matches!(s.create(&big), Err(Error::TooLarge(_))));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn forget_list_uncommitted_scrub_and_orphans() {
        let root = tmpdir("forget");
        let s = Store::init(&root).unwrap().0;
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

    // Issue 17.3: every window written listed part 0 three times and every range
    // read once, so a blob's cost per GiB grew with its size. The list is kept per
    // blob; another store on the same directory (another process: a local sink
    // beside `chute serve`) writing at the same time must still be seen.
    #[test]
    fn window_lists_are_kept_and_see_another_writer() {
        use std::sync::atomic::Ordering::Relaxed;
        let root = tmpdir("listing");
        let a = Store::init(&root).unwrap().0;
        let b = Store::open(&root).unwrap();
        let id = a.create(&index(None)).unwrap();
        let body = |n: u64| vec![n as u8; 4];
        // The two write alternate windows at once, each checking overlaps and the
        // end of part 0 against its own list.
        std::thread::scope(|s| {
            for (st, first) in [(&a, 0u64), (&b, 1)] {
                let id = &id;
                s.spawn(move || {
                    for n in (first..200).step_by(2) {
                        st.write(id, n * 4, 4, &mut &body(n)[..], None).unwrap();
                        assert_eq!(st.read(id, n * 4, 4).unwrap(), body(n));
                    }
                });
            }
        });
        let listed = a.listings.listed.load(Relaxed) + b.listings.listed.load(Relaxed);
        for st in [&a, &b] {
            assert_eq!(st.part_len(&id).unwrap(), 800);
            assert_eq!(st.windows(&id).unwrap().len(), 200);
            // An overlap with the other's last window is refused by both.
            assert!(matches!(
                st.write(&id, 797, 4, &mut &b"xxxx"[..], None),
                Err(Error::Range(_))
            ));
        }
        // Listed when the other had written, not three times a window.
        assert!(listed < 600, "{listed} listings for 200 windows");
        let before = a.listings.listed.load(Relaxed);
        for n in 0..200 {
            assert_eq!(a.read(&id, n * 4, 4).unwrap(), body(n));
        }
        a.commit(&id, &index(Some(800))).unwrap();
        assert_eq!(a.read(&id, 0, 800).unwrap().len(), 800);
        assert!(
            a.listings.listed.load(Relaxed) - before <= 1,
            "reads listed"
        );
        // Trimmed by the other store: seen at once.
        b.forget(&id).unwrap();
        b.trim(&id, 4).unwrap();
        assert!(matches!(a.read(&id, 4, 4), Err(Error::Range(_))));
        assert_eq!(a.windows(&id).unwrap().len(), 199);
        fs::remove_dir_all(root).unwrap();
    }

    // Issue 16: temporaries a killed writer left were never removed nor counted.
    #[test]
    fn temporaries_are_counted_and_swept_but_never_a_live_writers() {
        let root = tmpdir("temps");
        let s = Store::init(&root).unwrap().0;
        let id = s.create(&index(None)).unwrap();
        s.write(&id, 0, 4, &mut &b"abcd"[..], None).unwrap();
        let dir = root.join("d.org/pi/m1/t1");
        let part = dir.join(PART);
        let before = s.node_usage("pi").unwrap();
        // A dead writer's (no lock), a live one's (locked), an index temporary.
        fs::write(part.join(".tmp-dead"), b"12345").unwrap();
        let (live, held) = new_window_temp(&part).unwrap();
        (&held).write_all(b"123").unwrap();
        fs::write(dir.join(".tmp-index"), b"{}").unwrap();
        fs::write(dir.join(".verified.tmp-x"), b"r").unwrap();
        assert_eq!(
            s.node_usage("pi").unwrap(),
            before + charge(5) + charge(3) + charge(2)
        );
        // Pending: the unlocked window temporary is young under a long age.
        let t = s
            .sweep_temporaries(None, Duration::from_secs(3600))
            .unwrap();
        assert_eq!((t.swept, t.in_use, t.young), (2, 1, 1), "{t:?}");
        assert_eq!((t.young_bytes, t.in_use_bytes), (5, 3));
        assert!(part.join(".tmp-dead").exists() && live.exists());
        assert!(!dir.join(".tmp-index").exists() && !dir.join(".verified.tmp-x").exists());
        // Committed: the dead one goes at once, and the commit says what it freed.
        let c = s.commit_charged(&id, &index(Some(4))).unwrap();
        assert_eq!(c.freed, charge(5));
        assert!(!part.join(".tmp-dead").exists());
        assert!(live.exists(), "a live writer's temporary is kept");
        let r = s.scrub().unwrap();
        assert_eq!((r.temps.swept, r.temps.in_use), (0, 1));
        drop(held);
        let r = s.scrub().unwrap();
        assert_eq!((r.temps.swept, r.temps.swept_bytes), (1, 3));
        assert!(!live.exists());
        assert_eq!(
            s.node_usage("pi").unwrap(),
            before + charge(index(Some(4)).len() as u64)
        );
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
        let s = Store::init(&root).unwrap().0;
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
        let s = Store::init(&root).unwrap().0;
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
    fn scrub_names_a_committed_blobs_missing_window_and_a_bad_index() {
        let root = tmpdir("scrub-gap");
        let s = Store::init(&root).unwrap().0;
        let id = s.create(&index(None)).unwrap();
        s.write(&id, 0, 4, &mut &b"abcd"[..], None).unwrap();
        s.write(&id, 4, 4, &mut &b"efgh"[..], None).unwrap();
        s.commit(&id, &index(Some(8))).unwrap();
        assert!(s.scrub().unwrap().damaged.is_empty());
        let dir = root.join("d.org/pi/m1/t1");
        let second = s.window_at(&id, 4).unwrap().unwrap();
        fs::remove_file(dir.join(PART).join(second.file_name())).unwrap();
        let r = s.scrub().unwrap();
        assert_eq!(r.damaged.len(), 1, "{r:?}");
        assert_eq!((r.damaged[0].offset, r.damaged[0].len), (4, 4));
        assert!(r.damaged[0].why.contains("no window file"), "{r:?}");
        fs::write(dir.join(INDEX), b"{not json").unwrap();
        let r = s.scrub().unwrap();
        assert!(
            r.damaged[0].why.contains("index.json is unreadable"),
            "{r:?}"
        );
        // Forgotten, a blob's windows may be trimmed: not damage.
        fs::rename(dir.join(INDEX), dir.join(FORGOTTEN)).unwrap();
        assert!(s.scrub().unwrap().damaged.is_empty());
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
        // Trusted only once committed: before, the bytes need not be durable.
        assert_eq!(s.window_hash(&id, &w).unwrap(), sha256(b"abcXefgh"));
        s.commit(&id, &index(Some(8))).unwrap();
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

    // A store that kept a window's hash but not its bytes (here: garbage of the
    // same length, with a record line that vouches for the new file) answers the
    // hash route from its record, but a challenge reads the bytes and cannot.
    #[test]
    fn a_challenge_reads_the_bytes_whatever_the_record_says() {
        let (root, s, id, dir, w) = one_window("challenge");
        s.commit(&id, &index(Some(8))).unwrap();
        let nonce = [7u8; 32];
        let answer = crate::format::challenge_answer(&nonce, b"abcdefgh");
        assert_eq!(s.window_challenge(&id, &w, &nonce).unwrap(), answer);
        assert_ne!(s.window_challenge(&id, &w, &[8u8; 32]).unwrap(), answer);
        let file = dir.join(PART).join(w.file_name());
        fs::write(&file, b"XXXXXXXX").unwrap();
        s.record_append(&dir, &w, &stamp(&dir, &w)).unwrap();
        assert_eq!(
            s.window_hash(&id, &w).unwrap(),
            sha256(b"abcdefgh"),
            "fooled"
        );
        assert_eq!(
            s.window_challenge(&id, &w, &nonce).unwrap(),
            crate::format::challenge_answer(&nonce, b"XXXXXXXX")
        );
        // Shorter than written: an error, not an answer over fewer bytes.
        fs::write(&file, b"abc").unwrap();
        assert!(matches!(
            s.window_challenge(&id, &w, &nonce),
            Err(Error::Io(..))
        ));
        fs::remove_file(&file).unwrap();
        assert!(s.window_challenge(&id, &w, &nonce).is_err());
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
