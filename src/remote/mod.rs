//! The client side of a store: one interface, two transports.
//!
//! [`Remote`] is what sink, list and restore talk to. [`LocalRemote`] drives a
//! [`Store`] directory in-process (the embedded default, and any `--remote DIR`);
//! [`HttpRemote`] speaks the REST protocol of [`crate::protocol`] to a
//! peer. Both move only sealed bytes: nothing that crosses this interface is
//! readable without the key.

mod answer;
mod http;
mod local;

pub use http::HttpRemote;
pub use local::LocalRemote;

use crate::blob::{BlobId, Uncommitted};
use crate::format::Index;
use crate::store;
use std::fmt;
use std::time::Duration;

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
    /// How long the remote asked us to wait before trying again (a 429's
    /// `Retry-After`, already capped); [`retry`] waits at least this.
    pub retry_after: Option<Duration>,
    /// What the user might do about it, when the transport can tell (a refused
    /// connection, an answer from something that is not chute).
    /// Boxed: errors travel in `Result`s of hot paths, and most have none.
    pub hint: Option<Box<String>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            retry_after: None,
            hint: None,
        }
    }

    /// This error with a hint for the user.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(Box::new(hint.into()));
        self
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
        if let store::Error::Backend(b) = e {
            return *b;
        }
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
    /// Windows may be written in any order, and several at once.
    fn put_window(&self, id: &BlobId, window: u64, n: u64, data: &[u8]) -> Result<[u8; 32]>;
    /// How many full windows a sink keeps in flight to this remote at once, each
    /// a window buffer held: one where a write is local work, more where each
    /// waits on a round trip.
    fn windows_in_flight(&self) -> u32 {
        1
    }
    /// SHA-256 of window `n` as the remote holds it, or `None` if never written.
    fn window_hash(&self, id: &BlobId, window: u64, n: u64) -> Result<Option<[u8; 32]>>;
    /// The answer to a storage challenge on window `n` (the Poly1305 tag of the
    /// window's bytes under the nonce, see [`crate::format`]), which the remote
    /// computes by reading them; `None` if the window was never written.
    fn challenge(
        &self,
        id: &BlobId,
        window: u64,
        n: u64,
        nonce: &crate::crypto::ChallengeNonce,
    ) -> Result<Option<[u8; 16]>>;
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
    /// The nodes that have a place in `domain`, where the remote can say (a local
    /// store; a peer shows a node only its own): for "pass --node OLDNAME" hints.
    fn nodes(&self, _domain: &str) -> Vec<String> {
        Vec::new()
    }
    /// Removes the temporaries killed writers left in a node's blobs, keeping those
    /// of pending blobs changed less than `min_age` ago (see [`crate::store::DirStore`]), where
    /// the remote can (a local store); `None` where it cannot (a peer sweeps its own
    /// at start, on commit and in its scrub).
    fn sweep_temporaries(
        &self,
        _domain: &str,
        _node: &str,
        _min_age: std::time::Duration,
    ) -> Result<Option<crate::store::Temps>> {
        Ok(None)
    }
}

pub(crate) fn parse_index(bytes: Vec<u8>, id: &BlobId) -> Result<Index> {
    let idx = Index::from_vec(bytes)
        .map_err(|e| Error::new(ErrorKind::Refused, format!("index of {}: {e}", id.path())))?;
    if idx.blob_path() != id.path() {
        return Err(Error::new(
            ErrorKind::Refused,
            format!("index of {} names another blob", id.path()),
        ));
    }
    Ok(idx)
}

/// A remote's text fit for one line of our output: at most 200 characters, control
/// characters (newlines, terminal escapes) shown escaped. What a peer or an object
/// store says goes into our one-line errors only through this.
pub(crate) fn one_line(s: &str) -> String {
    let mut out: String = s.chars().take(200).flat_map(char::escape_default).collect();
    if s.chars().nth(200).is_some() {
        out.push_str("...");
    }
    out
}

/// Most time [`retry`] spends waiting, whatever the remote's `Retry-After` says.
pub const RETRY_BUDGET: Duration = Duration::from_secs(90);

/// Retries transient failures with backoff (network blips on a home link):
/// 0.2, 0.6, 1.8 and 5.4 s, then gives up. A rate-limited remote's `Retry-After`
/// lengthens a wait; all waits together stay within [`RETRY_BUDGET`].
pub fn retry<T>(f: impl FnMut() -> Result<T>) -> Result<T> {
    retry_with(f, std::thread::sleep)
}

/// [`retry`] with the sleep injected, for the tests.
fn retry_with<T>(mut f: impl FnMut() -> Result<T>, mut sleep: impl FnMut(Duration)) -> Result<T> {
    let mut delay = Duration::from_millis(200);
    let mut waited = Duration::ZERO;
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if e.kind == ErrorKind::Unavailable && tries < 4 => {
                let wait = e.retry_after.map_or(delay, |after| after.max(delay));
                if waited + wait > RETRY_BUDGET {
                    return Err(e);
                }
                tries += 1;
                sleep(wait);
                waited += wait;
                delay *= 3;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `retry` over `answers` (then successes); returns the result and the waits.
    fn run(answers: Vec<Error>) -> (Result<u32>, Vec<Duration>) {
        let mut answers = answers.into_iter();
        let mut waits = Vec::new();
        let r = retry_with(|| answers.next().map_or(Ok(7), Err), |d| waits.push(d));
        (r, waits)
    }

    fn busy(after: Option<u64>) -> Error {
        let mut e = Error::new(ErrorKind::Unavailable, "busy");
        e.retry_after = after.map(Duration::from_secs);
        e
    }

    #[test]
    fn backoff_then_give_up() {
        let ms = Duration::from_millis;
        let (r, waits) = run((0..5).map(|_| busy(None)).collect());
        assert!(r.is_err());
        assert_eq!(waits, [ms(200), ms(600), ms(1800), ms(5400)]);
        let (r, waits) = run(vec![Error::new(ErrorKind::Refused, "no")]);
        assert!(r.is_err() && waits.is_empty());
    }

    #[test]
    fn retry_after_is_obeyed_within_the_budget() {
        let s = Duration::from_secs;
        let (r, waits) = run(vec![busy(Some(1)), busy(Some(2))]);
        assert_eq!(r.unwrap(), 7);
        assert_eq!(waits, [s(1), s(2)]);
        // Three 60 s waits would pass the budget: the third is not waited for.
        let (r, waits) = run((0..3).map(|_| busy(Some(60))).collect());
        assert!(r.is_err());
        assert_eq!(waits, [s(60)]);
        assert!(waits.iter().sum::<Duration>() <= RETRY_BUDGET);
    }
}
