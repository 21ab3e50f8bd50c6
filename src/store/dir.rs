//! The directory backend ([`DirStore`]): a store's objects as files under a root,
//! shared by `chute serve` and by local-directory remotes.
//!
//! Layout (the object names are the same for every backend, see [`crate::store`]):
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
//!     .lock                               flock'd by every hold (create, a window's
//!                                         rename, commit, forget, delete, trim,
//!                                         record updates); holds the blob's change
//!                                         mark (8 random bytes, renewed after every
//!                                         change to its window files, zeros during
//!                                         one; see `listing.rs`), empty before the
//!                                         first window
//!     .verified                           the verified-hash record (`record.rs`); a cache
//!     .verified.tmp-<random>              a record being rewritten (never read)
//!     .tmp-<random>                       an index being written (never read)
//!     0/<offset:016x>-<len:016x>-<sha256>  data part 0, one file per written window,
//!                                         named with the SHA-256 it arrived with
//!     0/.tmp-<random>                     a window being received (never read),
//!                                         flock'd by its writer while it lives
//! ```
//!
//! How it keeps the backend contract ([`super::backend`]):
//! - A hold is the blob's `.lock` `flock`ed: exclusive across processes (taken
//!   again if the file was replaced while it waited, see [`lock_blob`]).
//! - A window is received into a locked temporary and renamed into place under
//!   the hold, without an fsync (its write-back is started): a half-received
//!   window is never seen, but an acknowledged one may be lost in a power cut (or
//!   kept under its name with other bytes) until its blob is committed.
//! - Commit, under the hold, fdatasyncs every window file of part 0, then the part
//!   directory, then writes the index atomically (temporary file fsynced, renamed,
//!   blob directory fsynced), then fsyncs the directories above the blob up to
//!   the root (their entries were made when the blob was created): a committed
//!   snapshot survives a power cut whole.
//! - So nothing vouches for a pending blob's windows without reading them: the
//!   verified record is trusted only for committed and forgotten blobs, and a
//!   resumed sink, which asks for the hash of every window it journaled, gets the
//!   hash of the bytes the file holds now.
//! - Forget renames `index.json` to `index.forgotten.json` (atomic, never both)
//!   and sets its mtime to now: prune's grace period runs on the store's clock.
//!
//! What only a directory has:
//! - Temporaries a killed writer (a `kill -9`'d sink or server) left are removed
//!   ("swept", see `temps.rs` for exactly when and why that is safe): every blob's
//!   when `chute serve` starts (before it counts usage), a blob's when it is
//!   committed (it takes no more windows), every blob's a scrub reads (which
//!   reports them: swept, or in use by a live writer), and a node's by a prune on a
//!   local store (a pending blob's once unchanged for the grace period). A sweep
//!   holds the blob's lock, and removes a window's temporary only if it can take
//!   that file's own `flock`, which its writer holds from creation to rename and
//!   the kernel drops only when the writer dies: no live writer, running, stopped
//!   or stalled, ever loses a temporary it will rename into place. Temporaries
//!   (`.tmp-*`) are [`charge`]d like any file: a server killed during many PUTs
//!   leaves no free disk (its next start counts or sweeps them).
//! - The verified record (`record.rs`) never vouches for bytes a scrub found
//!   damaged, and a lost or damaged record only costs re-reading; a storage
//!   challenge reads the window's file every time, whatever the record says.
//! - Window lists are kept in memory under the change mark (`listing.rs`).
//! - The scrub (`scrub.rs`) re-hashes every window file against its name.

use super::*;

/// A store rooted at a directory.
#[derive(Debug)]
pub struct DirStore {
    pub(super) root: PathBuf,
    /// Parsed verified-hash records, shared by every thread (the server's workers).
    pub(super) records: Records,
    /// Blobs' window lists, shared by every thread (see `listing.rs`).
    pub(super) listings: Listings,
}

/// The directory backend's window being received: a temporary file, locked while
/// it is open, removed if it is dropped before its rename.
struct DirTemp {
    path: PathBuf,
    file: Option<File>,
    placed: bool,
}

impl Drop for DirTemp {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl DirStore {
    /// Opens an existing store: a directory holding the [`MARKER`] file (every
    /// chute has written it since the first store). Anything else is
    /// [`Error::NoStore`]: only [`DirStore::init`] creates a store, so a mistyped
    /// path or an unmounted disk's empty mount point is never filled by accident,
    /// and no directory that merely looks like a store is taken for one.
    pub fn open(root: &Path) -> Result<DirStore> {
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
        Ok(DirStore::at(root))
    }

    /// Creates a store at `root` (mode 0700; missing parents with the default
    /// mode) or opens the one there; returns it and whether it was created. An
    /// existing directory becomes a store only if it is empty (and is then made
    /// 0700): a directory of other files is refused.
    pub fn init(root: &Path) -> Result<(DirStore, bool)> {
        if check_marker(root)? {
            return Ok((DirStore::open(root)?, false));
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
                fsutil::sync_parent(root).map_err(cannot())?;
            }
            Err(e) => return Err(cannot()(e)),
        }
        write_atomic(&root.join(CACHEDIR_TAG), CACHEDIR_TAG_TEXT.as_bytes())?;
        // Last: a store with its marker is a whole one.
        write_atomic(&root.join(MARKER), marker_text().as_bytes())?;
        Ok((DirStore::at(root), true))
    }

    fn at(root: &Path) -> DirStore {
        DirStore {
            root: root.to_path_buf(),
            records: Records::default(),
            listings: Listings::default(),
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn dir(&self, id: &BlobId) -> PathBuf {
        self.root
            .join(&id.domain)
            .join(&id.node)
            .join(&id.mount)
            .join(&id.timestamp)
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
}

/// The lock file a [`Hold`] of this backend holds.
fn lock_of(hold: &Hold) -> Result<&File> {
    hold.0.downcast_ref::<File>().ok_or_else(|| {
        Error::Io(
            "a hold of another store".into(),
            io::Error::other("not a directory store's"),
        )
    })
}

impl Backend for DirStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn domains(&self) -> Result<Vec<String>> {
        read_names(&self.root)
    }

    fn nodes(&self, domain: &str) -> Result<Vec<String>> {
        read_names(&self.root.join(domain))
    }

    fn blobs(&self, domain: Option<&str>, node: &str) -> Result<Vec<BlobId>> {
        let domains = match domain {
            Some(d) => vec![d.to_string()],
            None => read_names(&self.root)?,
        };
        let mut out = Vec::new();
        for domain in domains {
            let base = self.root.join(&domain).join(node);
            for mount in read_names(&base)? {
                for ts in read_names(&base.join(&mount))? {
                    if base.join(&mount).join(&ts).is_dir() {
                        out.push(BlobId::new(&domain, node, &mount, &ts)?);
                    }
                }
            }
        }
        Ok(out)
    }

    fn indexes(&self, id: &BlobId) -> Result<Indexes> {
        let dir = self.dir(id);
        // Absent is only NotFound: an unreadable index must not pass for none.
        let len = |slot: Slot| match fs::metadata(dir.join(slot.name())) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("cannot read the indexes of {}", id.path()))(
                e,
            )),
        };
        Ok(Indexes {
            pending: len(Slot::Pending)?,
            committed: len(Slot::Committed)?,
            forgotten: len(Slot::Forgotten)?,
        })
    }

    fn read_index(&self, id: &BlobId, slot: Slot) -> Result<Option<Vec<u8>>> {
        match fs::read(self.dir(id).join(slot.name())) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("cannot read index of {}", id.path()))(e)),
        }
    }

    fn hold(&self, id: &BlobId, create: bool) -> Result<Hold> {
        let dir = self.dir(id);
        if create {
            fs::create_dir_all(dir.join(PART))
                .map_err(io_err(format!("cannot create blob {}", id.path())))?;
        } else if !dir.is_dir() {
            return Err(Error::NotFound(format!("no blob {}", id.path())));
        }
        let lock = lock_blob(&dir)?;
        // Deleted while we waited for the lock.
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("no blob {}", id.path())));
        }
        Ok(Hold(Box::new(lock)))
    }

    fn put_index(&self, _hold: &Hold, id: &BlobId, slot: Slot, index: &[u8]) -> Result<()> {
        write_atomic(&self.dir(id).join(slot.name()), index)
    }

    fn forget(&self, _hold: &Hold, id: &BlobId) -> Result<()> {
        let dir = self.dir(id);
        fs::rename(dir.join(INDEX), dir.join(FORGOTTEN))
            .map_err(io_err(format!("cannot forget {}", id.path())))?;
        touch(&dir.join(FORGOTTEN));
        sync_dir(&dir)
    }

    fn forget_again(&self, _hold: &Hold, id: &BlobId) -> Result<()> {
        let dir = self.dir(id);
        match fs::remove_file(dir.join(INDEX)) {
            Ok(()) => sync_dir(&dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("cannot forget {}", id.path()))(e)),
        }
        touch(&dir.join(FORGOTTEN));
        Ok(())
    }

    fn windows(&self, id: &BlobId, fresh: bool) -> Result<Arc<WindowList>> {
        let dir = self.dir(id);
        if fresh {
            self.listings.forget(&dir);
        }
        self.listing(&dir)
    }

    /// Names the window at an offset without listing the directory (which costs
    /// as much as the blob has windows): from a list kept under the blob's
    /// current mark, else from the verified record if the window's file is there.
    /// The kept list comes first: a verify lists a blob to read its manifest
    /// before it challenges the blob's windows, and the record would be a second
    /// copy of the same list in memory (~100 bytes a window).
    fn window_hint(&self, id: &BlobId, offset: u64) -> Option<Window> {
        let dir = self.dir(id);
        let kept = mark_of(&dir).and_then(|m| self.listings.get(&dir, m));
        if let Some(w) = kept.as_ref().and_then(|l| l.at(offset)) {
            return Some(*w);
        }
        let (w, _) = self.recorded_at(&dir, offset)?;
        dir.join(PART).join(w.file_name()).is_file().then_some(w)
    }

    fn receive(
        &self,
        id: &BlobId,
        len: u64,
        body: &mut dyn Read,
        expect: Option<[u8; 32]>,
    ) -> Result<Staged> {
        // Locked until the file is dropped, after the rename: a sweep keeps it.
        let (path, file) = new_window_temp(&self.dir(id).join(PART))?;
        let mut temp = DirTemp {
            path,
            file: None,
            placed: false,
        };
        let (digest, file) = receive(file, len, body, expect)?;
        temp.file = Some(file);
        Ok(Staged {
            digest,
            inner: Box::new(temp),
        })
    }

    /// Renames a received window into place under the blob's lock. Neither the
    /// file nor the directory is fsynced: the commit makes every window durable.
    /// The blob's change mark is renewed and this process's list of its windows
    /// updated in place; the verified record vouches for the bytes (hashed as they
    /// were written through the file).
    fn place(
        &self,
        hold: &Hold,
        id: &BlobId,
        staged: Staged,
        win: &Window,
        replaced: &[Window],
    ) -> Result<Vec<Window>> {
        let lock = lock_of(hold)?;
        let mut temp = staged.inner.downcast::<DirTemp>().map_err(|_| {
            Error::Io(
                "a window of another store".into(),
                io::Error::other("not a directory store's"),
            )
        })?;
        let dir = self.dir(id);
        let part = dir.join(PART);
        // Under the lock the mark is exact: taken out of the cache, the list is
        // this thread's to change (a reader holding it costs a copy).
        let mark = read_mark(lock);
        let mut list = match mark.and_then(|m| self.listings.take(&dir, m)) {
            Some(l) => l,
            None => Arc::new(WindowList::read(&part, &self.listings)?),
        };
        // No mark while the windows change: if the new one cannot be written after
        // the rename, every process lists the blob rather than trust an old list.
        clear_mark(lock).map_err(io_err(format!("cannot write {}", dir.join(LOCK).display())))?;
        fs::rename(&temp.path, part.join(win.file_name()))
            .map_err(io_err(format!("cannot store window of {}", id.path())))?;
        temp.placed = true;
        let mut removed = Vec::new();
        for old in replaced {
            // A file of the same name was replaced by the rename itself.
            if old.sha256 == win.sha256 || fs::remove_file(part.join(old.file_name())).is_ok() {
                removed.push(*old);
            }
        }
        Arc::make_mut(&mut list).placed(*win, &removed);
        // The window is in place whatever happens to the mark: without one, every
        // process lists the blob until one is written.
        if let Ok(Some(mark)) = new_mark(lock) {
            self.listings.put(&dir, mark, list);
        }
        // A cache: failure costs time.
        if let Some(Ok(m)) = temp.file.as_ref().map(|f| f.metadata()) {
            let _ = self.record_append_held(&dir, win, &Stamp::of(&m));
        }
        Ok(removed)
    }

    fn open_range(&self, id: &BlobId, pieces: Vec<(Window, u64, u64)>) -> Result<RangeReader> {
        // A window file cut short behind the store's back is damage, said before the
        // first byte: a server must never promise bytes it then cannot send.
        let part = self.dir(id).join(PART);
        for (w, _, _) in &pieces {
            let file = part.join(w.file_name());
            let held = match fs::metadata(&file) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(io_err(format!("cannot read {}", file.display()))(e)),
            };
            if held < w.len {
                return Err(Error::Range(format!(
                    "its window at byte {} holds {held} of its {} bytes (damaged on the store; chute scrub names it)",
                    w.offset, w.len
                )));
            }
        }
        Ok(RangeReader(Box::new(FileRange {
            part,
            pieces,
            current: None,
        })))
    }

    fn open_window(&self, id: &BlobId, w: &Window) -> Result<Box<dyn Read + Send>> {
        let path = self.dir(id).join(PART).join(w.file_name());
        let f = File::open(&path).map_err(io_err(format!("cannot read {}", id.path())))?;
        Ok(Box::new(f.take(w.len)))
    }

    /// Answered from the blob's verified record, without reading, when a fresh stat
    /// of the file equals the one recorded when its bytes were last found to match
    /// its name and the blob is `durable`; otherwise the file is re-read and, if it
    /// matches and did not change meanwhile, recorded again. A pending blob's
    /// windows are always re-read: after a power cut a file may keep its recorded
    /// stat but not its bytes (what a resumed sink asks about).
    fn window_hash(&self, id: &BlobId, w: &Window, durable: bool) -> Result<[u8; 32]> {
        let dir = self.dir(id);
        let path = dir.join(PART).join(w.file_name());
        let cannot = || io_err(format!("cannot read {}", id.path()));
        let now = Stamp::of(&fs::metadata(&path).map_err(cannot())?);
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

    fn commit(&self, _hold: &Hold, id: &BlobId, list: &WindowList, index: &[u8]) -> Result<u64> {
        let dir = self.dir(id);
        // The promise of an acknowledged window ends here: every window file's
        // bytes, then the names in part 0, are durable before the index exists.
        let part = dir.join(PART);
        let cannot = || io_err(format!("cannot sync the windows of {}", id.path()));
        for w in list.iter() {
            File::open(part.join(w.file_name()))
                .and_then(|f| f.sync_data())
                .map_err(cannot())?;
        }
        sync_dir(&part)?;
        write_atomic(&dir.join(INDEX), index)?;
        // The blob's own name, and its mount's, node's and domain's, were made by
        // `create_dir_all` and never synced: without them a power cut on a file
        // system that does not order directory updates (XFS, btrfs) could lose
        // the whole committed blob. Innermost first, up to the store's root.
        let mut up = dir.parent();
        while let Some(d) = up.filter(|d| d.starts_with(&self.root)) {
            // A root given as "" is the working directory.
            sync_dir(if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            })?;
            if d == self.root {
                break;
            }
            up = d.parent();
        }
        // Committed, the blob takes no more windows: what a killed writer left in
        // it is garbage now (a live writer's is kept; it drops it itself). A sweep
        // that fails costs only the space, never the commit.
        let swept = sweep_locked(&dir, Duration::ZERO, SystemTime::now()).unwrap_or_default();
        Ok(swept.freed)
    }

    fn remove_windows_at(&self, hold: &Hold, id: &BlobId, offset: u64) -> Result<Vec<Window>> {
        let lock = lock_of(hold)?;
        let dir = self.dir(id);
        let part = dir.join(PART);
        let cannot = || io_err(format!("cannot trim {}", id.path()));
        // No mark while the windows change (see `place`).
        clear_mark(lock).map_err(cannot())?;
        let mut removed = Vec::new();
        for e in fs::read_dir(&part).map_err(cannot())? {
            let e = e.map_err(cannot())?;
            let w = e.file_name().to_str().and_then(Window::from_file_name);
            if let Some(w) = w.filter(|w| w.offset == offset) {
                fs::remove_file(e.path()).map_err(cannot())?;
                removed.push(w);
            }
        }
        self.listings.forget(&dir);
        let _ = new_mark(lock);
        if !removed.is_empty() {
            sync_dir(&part)?;
        }
        Ok(removed)
    }

    fn remove_blob(&self, hold: Hold, id: &BlobId) -> Result<()> {
        let dir = self.dir(id);
        self.listings.forget(&dir);
        // Pending first, forgotten last: a delete cut between two unlinks leaves a
        // blob that is still forgotten (or committed), or one with no index at all
        // (an orphan prune deletes), never one that reads as pending again.
        for name in [PENDING, INDEX, FORGOTTEN] {
            match fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("cannot delete {}", id.path()))(e)),
            }
        }
        sync_dir(&dir)?;
        fs::remove_dir_all(&dir).map_err(io_err(format!("cannot delete {}", id.path())))?;
        drop(hold);
        Ok(())
    }

    /// Each window, index and temporary (`.tmp-*`, a window or index being
    /// written, or one a killed writer left) its bytes plus [`FILE_CHARGE`]; a
    /// live writer's temporary not with `only_dead`. Locks and verified records
    /// are not counted.
    fn charged(&self, id: &BlobId, only_dead: bool) -> Result<u64> {
        let dir = self.dir(id);
        Ok(blob_charge(&dir)?.saturating_add(temps_charge(&dir, only_dead)?))
    }

    /// The newest change time of anything in the blob directory, temporaries
    /// included (a window being received is activity), except the verified record
    /// and the lock (a verify or a scrub, which may create them, is not activity).
    fn activity(&self, id: &BlobId) -> Result<(u64, u64)> {
        let (windows, newest) = blob_files(&self.dir(id))?;
        let idle = newest
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map_or(0, |d| d.as_secs());
        Ok((windows.iter().map(|w| w.len).sum(), idle))
    }

    fn sweep_temporaries(&self, only: Option<(&str, &str)>, min_age: Duration) -> Result<Temps> {
        DirStore::sweep_temporaries(self, only, min_age)
    }

    fn scrub_paced(
        &self,
        after: Option<&str>,
        on: &mut dyn FnMut(ScrubEvent<'_>) -> bool,
    ) -> Result<ScrubReport> {
        DirStore::scrub_paced(self, after, on)
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Sets a file's mtime to now, on this (the store's) clock: prune measures a
/// forgotten blob's grace period from it, so a client whose clock is off cannot
/// shorten it.
fn touch(path: &Path) {
    let _ = File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
}

/// Holds a blob directory's lock (`.lock`, which no listing shows) until dropped.
///
/// The lock is the file the path names once it is held: a blob deleted while
/// this waited, and made again (a sink's keep-alive re-creates a pending blob)
/// before it woke, has a new `.lock`, and holding the old, unlinked one would let
/// two holders in at once. So the lock taken is checked against the path's
/// inode and taken again on the new file, a few times before giving up.
pub(super) fn lock_blob(dir: &Path) -> Result<File> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(LOCK);
    let gone = || Error::NotFound(format!("no blob {}", dir.display()));
    for _ in 0..8 {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                // The blob was deleted meanwhile.
                io::ErrorKind::NotFound => gone(),
                _ => io_err(format!("cannot open {}", path.display()))(e),
            })?;
        crate::sys::lock(&f).map_err(io_err(format!("cannot lock {}", path.display())))?;
        let held = f
            .metadata()
            .map_err(io_err(format!("cannot read {}", path.display())))?;
        match fs::metadata(&path) {
            Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => return Ok(f),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone()),
            Err(e) => return Err(io_err(format!("cannot read {}", path.display()))(e)),
        }
    }
    Err(Error::Conflict(format!(
        "{} was deleted and made again eight times while waiting for its lock",
        dir.display()
    )))
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
pub(super) fn read_names(dir: &Path) -> Result<Vec<String>> {
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

pub(super) fn marker_text() -> String {
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
    parse_marker(s.as_bytes(), &root.display().to_string()).map(|()| true)
}

/// Checks a marker's text: this layout version, or an error naming `root`.
pub(super) fn parse_marker(text: &[u8], root: &str) -> Result<()> {
    let v = std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.trim().strip_prefix("chute-store "))
        .and_then(|v| v.parse::<u32>().ok());
    match v {
        Some(LAYOUT_VERSION) => Ok(()),
        Some(v) if v > LAYOUT_VERSION => Err(Error::Newer(format!(
            "store {root} was written by a newer chute (format {v}, this build reads {LAYOUT_VERSION})"
        ))),
        _ => Err(Error::Bad(format!(
            "{root} is not a chute store (bad {MARKER} file)"
        ))),
    }
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    fsutil::sync_dir(dir).map_err(io_err(format!("cannot sync {}", dir.display())))
}

/// Every window file in a part directory (none if it does not exist), unsorted.
pub(super) fn part_windows(part: &Path) -> Result<Vec<Window>> {
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
