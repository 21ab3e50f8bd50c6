//! The client side of a store: one interface, two transports.
//!
//! [`Remote`] is what sink, list and restore talk to. [`LocalRemote`] drives a
//! [`Store`] directory in-process (the embedded default, and any `--remote DIR`);
//! [`HttpRemote`] speaks the REST protocol of [`crate::protocol`] to a
//! peer. Both move only sealed bytes: nothing that crosses this interface is
//! readable without the key.

mod http;
mod local;

pub use http::HttpRemote;
pub use local::LocalRemote;

use crate::blob::{BlobId, Uncommitted};
use crate::format::Index;
use crate::store;
use std::fmt;

/// What failed, sorted by what a caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist (or a range was never written).
    NotFound,
    /// The remote refused: committed blob, overlap, bad request.
    Refused,
    /// The remote's disk or quota is full.
    Full,
    /// The remote wants credentials we do not have, or rejected ours.
    Auth,
    /// The network or the remote failed; retrying later may work.
    Unavailable,
}

/// A remote failure: its kind and one line saying what happened.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Error {
        let kind = match &e {
            store::Error::NotFound(_) | store::Error::Range(_) => ErrorKind::NotFound,
            store::Error::Full => ErrorKind::Full,
            _ => ErrorKind::Refused,
        };
        Error::new(kind, e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A place that keeps blobs. Every method is safe to call from several threads.
pub trait Remote: Send + Sync {
    /// Where this is, for messages.
    fn describe(&self) -> String;
    /// Creates a blob from its first (pending) index.
    fn create(&self, index: &Index) -> Result<BlobId>;
    /// Writes window `n` (of `window` bytes each) of part 0; returns its SHA-256.
    fn put_window(&self, id: &BlobId, window: u64, n: u64, data: &[u8]) -> Result<[u8; 32]>;
    /// SHA-256 of window `n` as the remote holds it, or `None` if never written.
    fn window_hash(&self, id: &BlobId, window: u64, n: u64) -> Result<Option<[u8; 32]>>;
    /// Reads `len` bytes of part 0 at `offset`.
    fn read(&self, id: &BlobId, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Commits the final index; the snapshot becomes visible.
    fn commit(&self, id: &BlobId, index: &Index) -> Result<()>;
    /// The committed index of a blob.
    fn index(&self, id: &BlobId) -> Result<Index>;
    /// Every committed blob of a node.
    fn list(&self, domain: &str, node: &str) -> Result<Vec<BlobId>>;
    /// Deletes a blob.
    fn delete(&self, id: &BlobId) -> Result<()>;
    /// Forgets a committed snapshot: it leaves `list`, its data stays readable
    /// (see [`Store::forget`]).
    fn forget(&self, id: &BlobId) -> Result<()>;
    /// The index of a forgotten snapshot, for checking data later ones still share.
    fn forgotten_index(&self, id: &BlobId) -> Result<Index>;
    /// Deletes window `n` (of `window` bytes each) of a forgotten snapshot.
    fn trim(&self, id: &BlobId, window: u64, n: u64) -> Result<()>;
    /// A node's blobs that are not committed snapshots: forgotten, pending, orphaned.
    fn list_uncommitted(&self, domain: &str, node: &str) -> Result<Vec<Uncommitted>>;
}

pub(crate) fn parse_index(bytes: &[u8], id: &BlobId) -> Result<Index> {
    let idx = Index::parse(bytes)
        .map_err(|e| Error::new(ErrorKind::Refused, format!("index of {}: {e}", id.path())))?;
    if idx.blob_path() != id.path() {
        return Err(Error::new(
            ErrorKind::Refused,
            format!("index of {} names another blob", id.path()),
        ));
    }
    Ok(idx)
}

/// Retries transient failures with backoff (network blips on a home link):
/// 0.2, 0.6, 1.8 and 5.4 s, then gives up.
pub fn retry<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut delay = std::time::Duration::from_millis(200);
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if e.kind == ErrorKind::Unavailable && tries < 4 => {
                tries += 1;
                std::thread::sleep(delay);
                delay *= 3;
            }
            r => return r,
        }
    }
}
