//! The S3 backend ([`S3Store`]): a store's objects in a bucket, under the
//! client's prefix, with the same names as the directory layout (see
//! [`crate::store`]): `<domain>/<node>/<mount>/<timestamp>/index*.json` and
//! `.../0/<offset:016x>-<len:016x>-<sha256>`, and the store's marker
//! [`MARKER`] at the prefix, which [`S3Store::init`] writes (`chute init`,
//! `chute serve`) and [`S3Store::open`] requires, so a mistyped prefix is
//! refused rather than filled. Nothing else is written: no lock object, no
//! record, no temporary.
//!
//! How it keeps the backend contract ([`super::backend`]):
//! - A hold is a lock within this process, one per blob ([`Locks`]): S3 has no
//!   lock across processes, so a bucket is written by one `chute serve`, or by
//!   one client at a time per node (see `backend.rs` for why that suffices).
//! - A window is received into memory, checked against its length and SHA-256,
//!   and PUT under its name by [`Backend::place`], under the hold, signed with
//!   that SHA-256 (the bucket checks the body against it). Nothing of a window is
//!   visible before, so a window whose blob was committed meanwhile is dropped
//!   unsent. Memory: at most the largest window ([`Store::with_max_window`]) per
//!   window being received at once (a server's threads). The client's PUT takes a
//!   slice, so a staging object would need the same buffer; one PUT is cheaper
//!   than a PUT, a copy and a delete.
//! - Commit is the PUT of `index.json`: every window it covers was acknowledged
//!   by its own PUT, which S3 answers once the object is durable.
//! - Forget copies `index.json` to `index.forgotten.json` (the copy's
//!   `LastModified` is now), then deletes `index.json`; a forget cut between the
//!   two is still a forget ([`Indexes::committed`]) and the next one deletes the
//!   leftover. Renewing a forgotten blob's time PUTs its index again (a copy of an
//!   object onto itself is refused by AWS without a metadata change).
//! - Listings are ListObjectsV2 pages, consumed as they come: charges and
//!   activity cost memory in one page, not in the bucket. A blob's window list is
//!   made once and then kept up to date by this process's own writes (at most
//!   [`super::listing::LISTED_BLOBS`] blobs, as the directory store), so writing a
//!   blob of n windows costs one LIST, not n. That trusts the rule above: a blob
//!   is written by one process. Reads and the commit list again (`fresh`) before
//!   they refuse anything a kept list lacks, so a list another process made stale
//!   costs a LIST, never a wrong answer.
//! - Idle times are now minus the newest `LastModified` in the blob, on this
//!   process's clock against the bucket's (a skew between the two shortens or
//!   lengthens prune's grace period by as much).
//! - Every request is retried with [`crate::remote::retry`] when the bucket was
//!   unavailable; a listing is retried whole.
//! - Scrub re-reads every window against its name; it has no record to trust and
//!   no temporaries to sweep.

use super::*;
use crate::remote::{self, ErrorKind};
use crate::s3::list::{MAX_PAGE_KEYS, Page};
use crate::s3::{Client, Config};
use std::collections::HashSet;
use std::sync::Condvar;

/// How much of a window one ranged GET reads (the reader's buffer).
const READ_PIECE: u64 = 1 << 20;

/// A store in an S3 bucket.
pub struct S3Store {
    client: Arc<Client>,
    locks: Arc<Locks>,
    /// Blobs' window lists (see [`S3Store::windows`]), keyed by blob path.
    pub(super) listings: Listings,
    /// The window lists being made now; a change to their blob meanwhile marks
    /// them stale, and a stale one is not kept. Held while a list is put in the
    /// cache or changed there (before [`Listings`]' own lock); as long as the
    /// threads listing at once.
    making: Mutex<Vec<Making>>,
    next_making: std::sync::atomic::AtomicU64,
}

/// A window list being made (see [`S3Store::windows`]).
struct Making {
    blob: PathBuf,
    id: u64,
    stale: bool,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Store({})", self.client.describe())
    }
}

/// The blobs held in this process, by path; a hold waits until its blob is free.
#[derive(Default)]
struct Locks {
    held: Mutex<HashSet<String>>,
    freed: Condvar,
}

/// An [`S3Store`]'s hold: frees its blob when dropped.
struct S3Hold {
    locks: Arc<Locks>,
    path: String,
}

impl Drop for S3Hold {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.path);
        self.locks.freed.notify_all();
    }
}

/// A window received whole into memory, PUT by `place`.
struct S3Staged(Vec<u8>);

/// A remote failure as a store error: a full bucket is [`Error::Full`], a
/// missing object [`Error::NotFound`], anything else the bucket's own error
/// (its kind kept: a busy bucket is retried by a node, a refusal is not), with
/// a hint where the user has something to check.
fn s3_err(e: remote::Error) -> Error {
    match e.kind {
        ErrorKind::Full => Error::Full,
        ErrorKind::NotFound => Error::NotFound(e.message),
        ErrorKind::Auth if e.hint.is_none() => Error::Backend(Box::new(e.with_hint(AUTH_HINT))),
        _ => Error::Backend(Box::new(e)),
    }
}

/// What to check when the bucket refuses our signature.
const AUTH_HINT: &str = "check the key pair in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the file CHUTE_S3_CREDENTIALS_FILE names) and the region in AWS_DEFAULT_REGION (Garage's is usually `garage`)";

fn retry<T>(f: impl FnMut() -> remote::Result<T>) -> Result<T> {
    remote::retry(f).map_err(s3_err)
}

impl S3Store {
    pub fn new(config: Config) -> S3Store {
        S3Store {
            client: Arc::new(Client::new(config)),
            locks: Arc::default(),
            listings: Listings::default(),
            making: Mutex::default(),
            next_making: Default::default(),
        }
    }

    /// Opens the store in the bucket under the spec's prefix, which must hold
    /// the [`MARKER`] object `chute init` writes (as a directory store must
    /// hold its marker file): a mistyped prefix is refused, not filled.
    pub fn open(config: Config) -> Result<S3Store> {
        let store = S3Store::new(config);
        if !store.check_marker()? {
            return Err(Error::NoStore {
                root: PathBuf::from(store.client.describe()),
                exists: true,
            });
        }
        Ok(store)
    }

    /// Opens the store under the spec's prefix, writing its marker first if it
    /// has none; says whether it did. The bucket must exist.
    pub fn init(config: Config) -> Result<(S3Store, bool)> {
        let store = S3Store::new(config);
        if store.check_marker()? {
            return Ok((store, false));
        }
        let text = super::dir::marker_text();
        let sum = sha256(text.as_bytes());
        retry(|| store.client.put(MARKER, text.as_bytes(), &sum))?;
        Ok((store, true))
    }

    /// Whether the marker is there: `false` if not; an error if it is a newer
    /// chute's or not a marker.
    fn check_marker(&self) -> Result<bool> {
        match retry(|| self.client.get(MARKER, 64)) {
            Ok(text) => super::dir::parse_marker(&text, &self.client.describe()).map(|()| true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn key(id: &BlobId, name: &str) -> String {
        format!("{}/{name}", id.path())
    }

    pub(super) fn window_key(id: &BlobId, w: &Window) -> String {
        format!("{}/{PART}/{}", id.path(), w.file_name())
    }

    /// Folds every page under `prefix` into a fresh `init()`, retried whole.
    fn fold<T>(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        init: impl Fn() -> T,
        mut f: impl FnMut(&mut T, Page),
    ) -> Result<T> {
        retry(|| {
            let mut acc = init();
            for page in self.client.list_with(prefix, delimiter, MAX_PAGE_KEYS) {
                f(&mut acc, page?);
            }
            Ok(acc)
        })
    }

    /// The valid components just below `prefix` (which ends in `/`), sorted.
    fn names(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = self.fold(prefix, Some("/"), Vec::new, |acc, page| {
            for p in page.prefixes {
                let name = p
                    .strip_prefix(prefix)
                    .and_then(|n| n.strip_suffix('/'))
                    .filter(|n| valid_component(n));
                if let Some(n) = name {
                    acc.push(n.to_string());
                }
            }
        })?;
        crate::sort::sort(&mut out);
        out.dedup();
        Ok(out)
    }

    /// Whether any object is under the blob.
    fn exists(&self, id: &BlobId) -> Result<bool> {
        let prefix = format!("{}/", id.path());
        retry(|| match self.client.list_with(&prefix, None, 1).next() {
            Some(page) => Ok(!page?.objects.is_empty()),
            None => Ok(false),
        })
    }

    /// The windows under `0/` whose names start with `start`.
    fn windows_under(&self, id: &BlobId, start: &str) -> Result<Vec<Window>> {
        let prefix = format!("{}/{PART}/{start}", id.path());
        let base = format!("{}/{PART}/", id.path());
        self.fold(&prefix, None, Vec::new, |acc, page| {
            for o in page.objects {
                let w = o.key.strip_prefix(&base).and_then(Window::from_file_name);
                if let Some(w) = w {
                    acc.push(w);
                }
            }
        })
    }

    /// Counts a change to `id`'s windows: its kept list is updated by `update`,
    /// or dropped (a blob's windows removed: listed again when next asked).
    fn changed(&self, id: &BlobId, update: Option<&dyn Fn(&mut WindowList)>) {
        let key = PathBuf::from(id.path());
        let mut making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        for m in making.iter_mut().filter(|m| m.blob == key) {
            m.stale = true;
        }
        if let (Some(mut list), Some(update)) = (self.listings.take(&key, 0), update) {
            update(Arc::make_mut(&mut list));
            self.listings.put(&key, 0, list);
        }
    }

    /// Hashes the first `w.len` bytes of the window as stored now; a window
    /// shorter than that (or gone) is [`Error::NotFound`].
    fn hash_window(&self, id: &BlobId, w: &Window) -> Result<[u8; 32]> {
        let mut h = Sha256State::new();
        let mut r = self.open_window(id, w)?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = r.read(&mut buf).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::NotFound(format!("{} window at byte {}: {e}", id.path(), w.offset))
                } else {
                    io_err(format!("cannot read {}", id.path()))(e)
                }
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finalize().into())
    }

    fn scrub_blob(
        &self,
        id: &BlobId,
        report: &mut ScrubReport,
        on: &mut dyn FnMut(ScrubEvent<'_>) -> bool,
    ) -> Result<bool> {
        let blob = id.path();
        for w in self.windows(id, true)?.to_vec() {
            let why = match self.hash_window(id, &w) {
                Ok(h) if h == w.sha256 => None,
                Ok(_) => Some("its bytes differ from the SHA-256 in its name".to_string()),
                // Short, or removed since the listing (a prune meanwhile): only
                // a window still there is damaged.
                Err(Error::NotFound(_)) => {
                    match retry(|| self.client.head(&Self::window_key(id, &w))) {
                        Ok(_) => Some("it holds fewer bytes than its name says".into()),
                        Err(Error::NotFound(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            report.windows += 1;
            report.bytes += w.len;
            if !on(ScrubEvent::Read(w.len)) {
                return Ok(false);
            }
            if let Some(why) = why {
                let d = Damage {
                    blob: blob.clone(),
                    offset: w.offset,
                    len: w.len,
                    why,
                };
                let go = on(ScrubEvent::Damaged(&d));
                report.damaged.push(d);
                if !go {
                    return Ok(false);
                }
            }
        }
        report.blobs += 1;
        Ok(on(ScrubEvent::BlobDone(&blob)))
    }
}

/// Reads pieces `(window, skip, take)` of part 0 with ranged GETs of at most
/// [`READ_PIECE`] bytes: memory is one piece whatever the range.
struct S3Range {
    client: Arc<Client>,
    blob: String,
    pieces: std::collections::VecDeque<(Window, u64, u64)>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for S3Range {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some((w, skip, take)) = self.pieces.front_mut() else {
                return Ok(0);
            };
            if *take == 0 {
                self.pieces.pop_front();
                continue;
            }
            let n = (*take).min(READ_PIECE);
            let key = format!("{}/{PART}/{}", self.blob, w.file_name());
            let (at, client) = (*skip, &self.client);
            self.buf = remote::retry(|| client.get_range(&key, at, n)).map_err(|e| {
                if e.kind == ErrorKind::NotFound {
                    short_window()
                } else {
                    io::Error::other(e.message)
                }
            })?;
            self.pos = 0;
            *skip += n;
            *take -= n;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Backend for S3Store {
    fn describe(&self) -> String {
        self.client.describe()
    }

    fn domains(&self) -> Result<Vec<String>> {
        self.names("")
    }

    fn nodes(&self, domain: &str) -> Result<Vec<String>> {
        self.names(&format!("{domain}/"))
    }

    fn blobs(&self, domain: Option<&str>, node: &str) -> Result<Vec<BlobId>> {
        let domains = match domain {
            Some(d) => vec![d.to_string()],
            None => self.names("")?,
        };
        let mut out = Vec::new();
        for domain in domains {
            for mount in self.names(&format!("{domain}/{node}/"))? {
                for ts in self.names(&format!("{domain}/{node}/{mount}/"))? {
                    out.push(BlobId::new(&domain, node, &mount, &ts)?);
                }
            }
        }
        Ok(out)
    }

    /// One listing of `<blob>/index.`: the three names and their sizes.
    fn indexes(&self, id: &BlobId) -> Result<Indexes> {
        let base = format!("{}/", id.path());
        self.fold(
            &format!("{base}index."),
            None,
            Indexes::default,
            |acc, page| {
                for o in page.objects {
                    match o.key.strip_prefix(&base) {
                        Some(PENDING) => acc.pending = Some(o.size),
                        Some(INDEX) => acc.committed = Some(o.size),
                        Some(FORGOTTEN) => acc.forgotten = Some(o.size),
                        _ => {}
                    }
                }
            },
        )
    }

    fn read_index(&self, id: &BlobId, slot: Slot) -> Result<Option<Vec<u8>>> {
        let key = S3Store::key(id, slot.name());
        match retry(|| self.client.get(&key, MAX_INDEX)) {
            Ok(b) => Ok(Some(b)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn hold(&self, id: &BlobId, create: bool) -> Result<Hold> {
        let path = id.path();
        {
            let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
            while held.contains(&path) {
                held = self
                    .locks
                    .freed
                    .wait(held)
                    .unwrap_or_else(|e| e.into_inner());
            }
            held.insert(path.clone());
        }
        let hold = S3Hold {
            locks: self.locks.clone(),
            path,
        };
        // Checked under the hold: a blob deleted while we waited is gone.
        if !create && !self.exists(id)? {
            return Err(Error::NotFound(format!("no blob {}", id.path())));
        }
        Ok(Hold(Box::new(hold)))
    }

    fn put_index(&self, _hold: &Hold, id: &BlobId, slot: Slot, index: &[u8]) -> Result<()> {
        let key = S3Store::key(id, slot.name());
        let sum = sha256(index);
        retry(|| self.client.put(&key, index, &sum))
    }

    fn forget(&self, _hold: &Hold, id: &BlobId) -> Result<()> {
        let (from, to) = (S3Store::key(id, INDEX), S3Store::key(id, FORGOTTEN));
        retry(|| self.client.copy(&from, &to))?;
        retry(|| self.client.delete(&from))
    }

    fn forget_again(&self, _hold: &Hold, id: &BlobId) -> Result<()> {
        let committed = S3Store::key(id, INDEX);
        retry(|| self.client.delete(&committed))?;
        let key = S3Store::key(id, FORGOTTEN);
        let index = retry(|| self.client.get(&key, MAX_INDEX))?;
        let sum = sha256(&index);
        retry(|| self.client.put(&key, &index, &sum))
    }

    /// Listed once, then kept up to date by this process's own writes (a sink's
    /// or a server's blob is written by it alone; see the module docs), so a
    /// write costs no LIST of the windows before it. A list is kept only if no
    /// window changed anywhere while it was made.
    fn windows(&self, id: &BlobId, fresh: bool) -> Result<Arc<WindowList>> {
        let key = PathBuf::from(id.path());
        if fresh {
            self.listings.forget(&key);
        } else if let Some(list) = self.listings.get(&key, 0) {
            return Ok(list);
        }
        let me = self
            .next_making
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let lock = || self.making.lock().unwrap_or_else(|e| e.into_inner());
        lock().push(Making {
            blob: key.clone(),
            id: me,
            stale: false,
        });
        self.listings
            .listed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let listed = self.windows_under(id, "");
        let mut making = lock();
        let stale = match making.iter().position(|m| m.id == me) {
            Some(i) => making.swap_remove(i).stale,
            None => true,
        };
        let list = Arc::new(WindowList::of(listed?));
        if !stale {
            self.listings.put(&key, 0, list.clone());
        }
        Ok(list)
    }

    fn receive(
        &self,
        _id: &BlobId,
        len: u64,
        body: &mut dyn Read,
        expect: Option<[u8; 32]>,
    ) -> Result<Staged> {
        // `len` was checked against the store's largest window: taken at once,
        // exactly (growing by doubling would hold up to twice as much).
        let mut buf = Vec::with_capacity(len as usize);
        let digest = receive_into(&mut buf, len, body, expect)?;
        Ok(Staged {
            digest,
            inner: Box::new(S3Staged(buf)),
        })
    }

    /// One PUT under the hold, then the replaced windows of other hashes deleted
    /// (one of the same hash was overwritten by the PUT itself).
    fn place(
        &self,
        _hold: &Hold,
        id: &BlobId,
        staged: Staged,
        win: &Window,
        replaced: &[Window],
    ) -> Result<Vec<Window>> {
        let body = staged.inner.downcast::<S3Staged>().map_err(|_| {
            Error::Io(
                "a window of another store".into(),
                io::Error::other("not an S3 store's"),
            )
        })?;
        let key = S3Store::window_key(id, win);
        retry(|| self.client.put(&key, &body.0, &staged.digest))?;
        let mut removed = Vec::new();
        for old in replaced {
            let gone = old.sha256 == win.sha256 || {
                let k = S3Store::window_key(id, old);
                retry(|| self.client.delete(&k)).is_ok()
            };
            if gone {
                removed.push(*old);
            }
        }
        self.changed(
            id,
            Some(&|list: &mut WindowList| list.placed(*win, &removed)),
        );
        Ok(removed)
    }

    /// Each window is HEADed first: one shorter than its name is refused before
    /// any byte is read.
    fn open_range(&self, id: &BlobId, pieces: Vec<(Window, u64, u64)>) -> Result<RangeReader> {
        for (w, _, _) in &pieces {
            let key = S3Store::window_key(id, w);
            let held = match retry(|| self.client.head(&key)) {
                Ok(h) => h.size,
                Err(Error::NotFound(_)) => 0,
                Err(e) => return Err(e),
            };
            if held < w.len {
                return Err(Error::Range(format!(
                    "its window at byte {} holds {held} of its {} bytes (damaged on the store; chute scrub names it)",
                    w.offset, w.len
                )));
            }
        }
        Ok(RangeReader(Box::new(S3Range {
            client: self.client.clone(),
            blob: id.path(),
            pieces: pieces.into(),
            buf: Vec::new(),
            pos: 0,
        })))
    }

    fn open_window(&self, id: &BlobId, w: &Window) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(S3Range {
            client: self.client.clone(),
            blob: id.path(),
            pieces: vec![(*w, 0, w.len)].into(),
            buf: Vec::new(),
            pos: 0,
        }))
    }

    /// Always re-read: nothing here vouches for bytes without reading them.
    fn window_hash(&self, id: &BlobId, w: &Window, _durable: bool) -> Result<[u8; 32]> {
        self.hash_window(id, w)
    }

    /// Every window was acknowledged by its PUT: the index is the last write.
    fn commit(&self, hold: &Hold, id: &BlobId, _list: &WindowList, index: &[u8]) -> Result<u64> {
        self.put_index(hold, id, Slot::Committed, index)?;
        Ok(0)
    }

    fn remove_windows_at(&self, _hold: &Hold, id: &BlobId, offset: u64) -> Result<Vec<Window>> {
        // Counted before and after, whatever happens between: a list made
        // meanwhile may hold what is deleted now.
        self.changed(id, None);
        let removed = (|| {
            let found = self.windows_under(id, &format!("{offset:016x}-"))?;
            let mut removed = Vec::new();
            for w in found.into_iter().filter(|w| w.offset == offset) {
                let key = S3Store::window_key(id, &w);
                retry(|| self.client.delete(&key))?;
                removed.push(w);
            }
            Ok(removed)
        })();
        self.changed(id, None);
        removed
    }

    /// The index objects first, then everything else under the blob, a page at a
    /// time (deleted keys do not come back: the listing restarts from the top).
    fn remove_blob(&self, hold: Hold, id: &BlobId) -> Result<()> {
        self.changed(id, None);
        let done = (|| {
            for name in [INDEX, FORGOTTEN, PENDING] {
                let key = S3Store::key(id, name);
                retry(|| self.client.delete(&key))?;
            }
            let prefix = format!("{}/", id.path());
            let (mut last_first, mut repeats): (Option<String>, u32) = (None, 0);
            loop {
                let keys: Vec<String> = retry(|| match self.client.list(&prefix).next() {
                    Some(page) => Ok(page?.objects.into_iter().map(|o| o.key).collect()),
                    None => Ok(Vec::new()),
                })?;
                let Some(first) = keys.first() else {
                    break;
                };
                // A listing may lag a DELETE for a moment (Garage's does); a
                // bucket that goes on listing what it said it deleted would hold
                // this thread and the blob for ever: a few waits, then an error.
                if last_first.as_ref() == Some(first) {
                    repeats += 1;
                    if repeats > 6 {
                        return Err(Error::Backend(Box::new(remote::Error::new(
                            ErrorKind::Unavailable,
                            format!("s3: {first} is still listed after its DELETE was answered"),
                        ))));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50 << repeats));
                } else {
                    repeats = 0;
                }
                last_first = Some(first.clone());
                for key in keys {
                    retry(|| self.client.delete(&key))?;
                }
            }
            Ok(())
        })();
        self.changed(id, None);
        drop(hold);
        done
    }

    /// Each index and window object [`charge`]d; nothing else is written here, so
    /// `only_dead` changes nothing.
    fn charged(&self, id: &BlobId, _only_dead: bool) -> Result<u64> {
        let base = format!("{}/", id.path());
        let part = format!("{base}{PART}/");
        self.fold(
            &base,
            None,
            || 0u64,
            |acc, page| {
                for o in page.objects {
                    let counted = match o.key.strip_prefix(&part) {
                        Some(name) => Window::from_file_name(name).is_some(),
                        None => {
                            matches!(o.key.strip_prefix(&base), Some(INDEX | PENDING | FORGOTTEN))
                        }
                    };
                    if counted {
                        *acc = acc.saturating_add(charge(o.size));
                    }
                }
            },
        )
    }

    fn activity(&self, id: &BlobId) -> Result<(u64, u64)> {
        let base = format!("{}/", id.path());
        let part = format!("{base}{PART}/");
        let (bytes, newest) = self.fold(
            &base,
            None,
            || (0u64, 0u64),
            |acc, page| {
                for o in page.objects {
                    let w = o.key.strip_prefix(&part).and_then(Window::from_file_name);
                    if let Some(w) = w {
                        acc.0 = acc.0.saturating_add(w.len);
                    }
                    acc.1 = acc.1.max(o.last_modified);
                }
            },
        )?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok((bytes, now.saturating_sub(newest)))
    }

    fn scrub_paced(
        &self,
        after: Option<&str>,
        on: &mut dyn FnMut(ScrubEvent<'_>) -> bool,
    ) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        // Compared by component, as the directory's scrub orders them ("a.b" sorts
        // before "a" followed by "/" as a string, after it as a component).
        let after: Option<Vec<&str>> = after.map(|a| a.split('/').collect());
        for domain in self.names("")? {
            for node in self.nodes(&domain)? {
                for id in self.blobs(Some(&domain), &node)? {
                    let key = [id.domain.as_str(), &id.node, &id.mount, &id.timestamp];
                    if after.as_deref().is_some_and(|a| key.as_slice() <= a) {
                        continue;
                    }
                    if !self.scrub_blob(&id, &mut report, on)? {
                        report.stopped = true;
                        return Ok(report);
                    }
                }
            }
        }
        Ok(report)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A store whose bucket is never asked: a hold with `create` needs no request.
    fn offline() -> S3Store {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("id".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".to_string()),
            _ => None,
        };
        S3Store::new(Config::from_env("s3:http://127.0.0.1:9/bucket", &env).unwrap())
    }

    /// A second hold of a blob waits for the first to be dropped; other blobs'
    /// do not (the only exclusion S3 has, see the module docs).
    #[test]
    fn a_hold_excludes_the_same_blob_in_the_process() {
        let s = Arc::new(offline());
        let a = BlobId::new("d.org", "pi", "m1", "t1").unwrap();
        let b = BlobId::new("d.org", "pi", "m1", "t2").unwrap();
        let first = s.hold(&a, true).unwrap();
        // Another blob is free meanwhile.
        drop(s.hold(&b, true).unwrap());
        let order = Arc::new(Mutex::new(Vec::new()));
        let (started, wait) = mpsc::channel();
        let t = {
            let (s, a, order) = (s.clone(), a.clone(), order.clone());
            std::thread::spawn(move || {
                started.send(()).unwrap();
                let _h = s.hold(&a, true).unwrap();
                order.lock().unwrap().push("second");
            })
        };
        wait.recv().unwrap();
        // Gives a broken lock the time to let the second hold in first; a working
        // one passes however long this takes.
        std::thread::sleep(Duration::from_millis(50));
        order.lock().unwrap().push("first");
        drop(first);
        t.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["first", "second"]);
    }
}
