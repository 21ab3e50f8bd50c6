//! The seam between the store's rules ([`Store`], written once) and
//! where its objects live ([`Backend`]: a directory, `dir.rs`, or an S3 bucket, `s3.rs`).
//!
//! A backend keeps, for each blob, three index objects ([`Slot`]) and the window
//! objects of part 0, named as in the directory layout; it knows nothing of quotas,
//! overlaps, gaps or pending caps, which the store decides from what the backend
//! reports. Every method takes a [`BlobId`] whose components were checked, so a
//! backend never sees a name that could escape its root or prefix.
//!
//! What a backend must guarantee (the S3 backend's way in parentheses):
//! - [`Backend::hold`] excludes every other hold of the same blob, in every
//!   process using the store, until dropped; the store checks a blob's state and
//!   changes it only under one. (S3 has no lock across processes: its hold is a
//!   lock within the process. A bucket is then written by one `chute serve`, or by
//!   one client at a time per node, as a sink already is; two writers of one blob
//!   are the sink's own bug, and prune only deletes or trims a blob forgotten or
//!   idle for its grace period, so it never races a live writer.)
//! - [`Backend::put_index`] replaces one index object whole: a reader sees the
//!   old bytes or the new ones, never a mix; a [`Slot::Committed`] index is durable
//!   when it returns, and so is every window it covers (see [`Backend::commit`]).
//!   (S3: one PUT, acknowledged after the store confirmed it.)
//! - [`Backend::receive`] keeps nothing visible of a window until
//!   [`Backend::place`] puts it under its name, under the blob's hold, and only
//!   after the store checked there that the blob is still pending and that no
//!   other window overlaps it: a window received for a blob committed meanwhile is
//!   dropped, never placed, and a range holds one window. (S3: no rename, and a PUT
//!   under the final name outside the hold could land a second window of a range
//!   in a committed blob: `receive` PUTs the body to a staging object
//!   `0/.tmp-<random>` (SigV4 signs the SHA-256 the sink announces, so the bucket
//!   verifies it), `place` copies it to its name under the hold (CopyObject, no
//!   bytes through chute) and deletes the staging object; staging objects a killed
//!   writer left are swept by their `LastModified` age, as a directory's
//!   temporaries are. A window small enough may instead be kept in memory by
//!   `receive` and PUT once by `place`: bounded by the largest window times the
//!   server's threads. `s3.rs` does this for every window: the client's PUT
//!   takes the body in memory anyway.)
//! - [`Backend::commit`] makes every window of the list durable *before* the
//!   committed index exists. (S3: each window was confirmed by its PUT; commit is
//!   the final PUT of `index.json`.)
//! - [`Backend::forget`] leaves the blob forgotten, never committed again: its
//!   committed index becomes the forgotten one, whose time is now. (S3 has no
//!   rename: copy `index.json` to `index.forgotten.json` (the copy's LastModified
//!   is now), then delete `index.json`. Between the two, or if the delete failed,
//!   both exist: [`Indexes::committed`] says a blob with a forgotten index is not
//!   committed whatever else it has, and the next forget
//!   ([`Backend::forget_again`]) deletes the leftover; it renews the time by
//!   copying `index.forgotten.json` onto itself.)
//! - [`Backend::remove_blob`] removes the index objects before the windows: cut
//!   short, what is left is an orphan (no index), which prune lists and deletes.
//! - Listing ([`Backend::blobs`], [`Backend::windows`]) may be stale only in the
//!   direction the store tolerates: `windows(id, true)` shows every window placed
//!   before the call, so the store re-lists before it refuses anything a list
//!   says is missing. (S3: ListObjectsV2 in pages, strongly consistent on Garage and
//!   on AWS; memory bounded per page.)
//! - Nothing relies on a conditional create: two creates of one pending blob are
//!   the same blob (idempotent), and the store refuses them once committed.
//! - Idle times ([`Backend::activity`]) are measured on the store's clock: the
//!   directory's mtimes, the bucket's `LastModified`.

use super::*;
use std::any::Any;

/// A blob's index objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `index.pending.json`: the index as first created.
    Pending,
    /// `index.json`: the final index; present (and no forgotten one) = visible.
    Committed,
    /// `index.forgotten.json`: what `index.json` became when forgotten.
    Forgotten,
}

impl Slot {
    /// Its object name in the blob (the directory layout's file name).
    pub fn name(self) -> &'static str {
        match self {
            Slot::Pending => PENDING,
            Slot::Committed => INDEX,
            Slot::Forgotten => FORGOTTEN,
        }
    }
}

/// Which index objects a blob has, with their lengths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Indexes {
    pub pending: Option<u64>,
    pub committed: Option<u64>,
    pub forgotten: Option<u64>,
}

impl Indexes {
    /// Any index: the blob exists.
    pub fn exists(&self) -> bool {
        self.pending.is_some() || self.committed.is_some() || self.forgotten.is_some()
    }
    /// A visible snapshot: committed and not forgotten (a forgotten index wins: a
    /// forget cut between its copy and its delete is a forget).
    pub fn committed(&self) -> bool {
        self.committed.is_some() && self.forgotten.is_none()
    }
    /// Forgotten: it never takes a window or a commit again.
    pub fn forgotten(&self) -> bool {
        self.forgotten.is_some()
    }
    /// Created, neither committed nor forgotten: the only state that takes windows.
    pub fn pending(&self) -> bool {
        self.pending.is_some() && self.committed.is_none() && self.forgotten.is_none()
    }
}

/// A backend's exclusive hold on one blob ([`Backend::hold`]); released on drop.
pub struct Hold(pub Box<dyn Any + Send>);

/// A window received whole and checked against its announced length and SHA-256,
/// not yet under its name ([`Backend::place`]). Dropped without being placed, it
/// leaves nothing behind.
pub struct Staged {
    /// SHA-256 of the bytes received.
    pub digest: [u8; 32],
    /// The backend's own state for it (the directory's locked temporary file).
    pub inner: Box<dyn Any + Send>,
}

/// Where a store's objects live. See the module docs for what each method must
/// guarantee; the store calls the changing ones under [`Backend::hold`].
pub trait Backend: Send + Sync + fmt::Debug {
    /// What to call this store in messages (a directory, a bucket URL).
    fn describe(&self) -> String;
    /// The domains with any object, sorted (names that are not directories or
    /// prefixes may be among them: they hold no nodes).
    fn domains(&self) -> Result<Vec<String>>;
    /// The nodes with any object in `domain` (checked), sorted.
    fn nodes(&self, domain: &str) -> Result<Vec<String>>;
    /// Every blob of `node` with any object, in `domain` or in every domain,
    /// sorted by domain, mount, timestamp.
    fn blobs(&self, domain: Option<&str>, node: &str) -> Result<Vec<BlobId>>;
    /// Which index objects the blob has.
    fn indexes(&self, id: &BlobId) -> Result<Indexes>;
    /// One index object, `None` if it does not exist.
    fn read_index(&self, id: &BlobId, slot: Slot) -> Result<Option<Vec<u8>>>;
    /// Holds the blob until dropped; `create` makes room for a new blob, otherwise
    /// a blob with no objects at all is [`Error::NotFound`].
    fn hold(&self, id: &BlobId, create: bool) -> Result<Hold>;
    /// Writes one index object whole (see the module docs).
    fn put_index(&self, hold: &Hold, id: &BlobId, slot: Slot, index: &[u8]) -> Result<()>;
    /// The committed index becomes the forgotten one, its time now.
    fn forget(&self, hold: &Hold, id: &BlobId) -> Result<()>;
    /// Restarts a forgotten blob's idle time; removes a committed index left
    /// beside the forgotten one (a forget cut short).
    fn forget_again(&self, hold: &Hold, id: &BlobId) -> Result<()>;
    /// The windows of part 0; `fresh` lists them anew (no cache).
    fn windows(&self, id: &BlobId, fresh: bool) -> Result<Arc<WindowList>>;
    /// A window the backend can name without a listing (a hint; the store falls
    /// back to [`Backend::windows`]).
    fn window_hint(&self, _id: &BlobId, _offset: u64) -> Option<Window> {
        None
    }
    /// Receives exactly `len` bytes of `body`, refusing a body that is shorter,
    /// longer, or (with `expect`) of another SHA-256. Not under the hold.
    fn receive(
        &self,
        id: &BlobId,
        len: u64,
        body: &mut dyn Read,
        expect: Option<[u8; 32]>,
    ) -> Result<Staged>;
    /// Puts a received window under its name, removing the files of `replaced`
    /// (the same range); returns the ones it removed.
    fn place(
        &self,
        hold: &Hold,
        id: &BlobId,
        staged: Staged,
        win: &Window,
        replaced: &[Window],
    ) -> Result<Vec<Window>>;
    /// A reader over pieces `(window, skip, take)` of part 0, in order; a window
    /// that holds fewer bytes than its name says is [`Error::Range`] before any
    /// byte is read (a server never promises bytes it cannot send).
    fn open_range(&self, id: &BlobId, pieces: Vec<(Window, u64, u64)>) -> Result<RangeReader>;
    /// The window's first `w.len` bytes as stored now (an error if fewer), read
    /// every time (challenges prove the bytes are there).
    fn open_window(&self, id: &BlobId, w: &Window) -> Result<Box<dyn Read + Send>>;
    /// The SHA-256 of the window's bytes as stored now; `durable` (the blob is
    /// committed or forgotten) allows a cache that vouches for them.
    fn window_hash(&self, id: &BlobId, w: &Window, durable: bool) -> Result<[u8; 32]>;
    /// Makes every window of `list` durable, then writes the committed index;
    /// returns the charge of anything it cleaned up.
    fn commit(&self, hold: &Hold, id: &BlobId, list: &WindowList, index: &[u8]) -> Result<u64>;
    /// Removes every window object at `offset` (a crash may have left two of one
    /// range); returns them (empty: none there).
    fn remove_windows_at(&self, hold: &Hold, id: &BlobId, offset: u64) -> Result<Vec<Window>>;
    /// Removes the blob: its index objects first, then the rest.
    fn remove_blob(&self, hold: Hold, id: &BlobId) -> Result<()>;
    /// What the blob's objects count against its node's quota ([`charge`] each);
    /// `only_dead` leaves out what live writers hold (a running server counts it
    /// by their reservations).
    fn charged(&self, id: &BlobId, only_dead: bool) -> Result<u64>;
    /// The bytes of the blob's windows and how many seconds nothing in it changed.
    fn activity(&self, id: &BlobId) -> Result<(u64, u64)>;
    /// Removes what killed writers left, of one node in one domain or everywhere
    /// (see `temps.rs`); nothing to do for a backend without temporaries.
    fn sweep_temporaries(&self, _only: Option<(&str, &str)>, _min_age: Duration) -> Result<Temps> {
        Ok(Temps::default())
    }
    /// Re-reads every window against its name (see `scrub.rs`).
    fn scrub_paced(
        &self,
        after: Option<&str>,
        on: &mut dyn FnMut(ScrubEvent<'_>) -> bool,
    ) -> Result<ScrubReport>;
    /// A local directory for the store's own files (the scrub's progress), if any.
    fn local_dir(&self) -> Option<&Path> {
        None
    }
    /// For tests and backend-specific callers.
    fn as_any(&self) -> &dyn Any;
}
