//! chute: zero-knowledge backups between small ARM boards.
//!
//! A node seals its files on the node ([`crypto`], [`format`](mod@format),
//! [`chunker`]) and sends only ciphertext to a [`remote`]: a local [`store`]
//! directory or a peer's [`server`]. [`sink`] and [`restore`] are the two
//! pipelines ([`browse`] reads snapshots without restoring them); [`verify`],
//! [`forget`] and [`prune`] (with [`pack`]) keep a store healthy; [`cli`] wires them to the command line; [`ui`] is the server's
//! management page. [`s3`] is a client for
//! S3-compatible object stores (Garage, MinIO, a cloud bucket), a leaf the S3
//! store will sit on. Names both sides share are
//! leaves ([`blob`], [`protocol`], [`units`], [`fsutil`]): the client never imports
//! the server, the core never imports the store. See README.md ("Where the code
//! lives") for the tour and the module docs for the contracts (the REST protocol in
//! [`protocol`], every stored byte in [`format`](mod@format)).
#![deny(unsafe_code)]

// The lib's own tests share the integration tests' S3 servers (tests/util/s3.rs,
// see store/contract.rs), whose paths name the crate.
#[cfg(test)]
extern crate self as chute;

pub mod auth;
pub mod blob;
pub mod browse;
pub mod cache;
pub mod chain;
pub mod chunker;
pub mod cli;
pub mod compress;
pub mod crypto;
pub mod forget;
pub mod format;
pub mod fssnap;
pub mod fsutil;
pub mod glob;
pub mod hex;
pub mod pack;
pub mod progress;
pub mod protocol;
pub mod prune;
pub mod reads;
pub mod recovery;
pub mod remote;
pub mod restore;
pub mod runchunks;
pub mod runlog;
pub mod s3;
pub mod scrub;
pub mod server;
pub mod sink;
pub mod snapshot;
pub mod sort;
pub mod spent;
pub mod store;
pub mod sys;
pub mod testhooks;
pub mod throttle;
pub mod ui;
pub mod units;
#[cfg(test)]
mod vectors;
pub mod verify;

use std::fmt;

pub use cli::run;

/// Everything a command can fail with, each a one-line message.
#[derive(Debug)]
pub enum Error {
    /// Bad arguments or configuration: exit status 2.
    Usage(String),
    /// The key file is missing or unreadable.
    Key(crypto::KeyError),
    /// The remote failed or refused.
    Remote(remote::Error),
    /// The store directory failed (serve, scrub).
    Store(store::Error),
    /// Stored data did not authenticate or decode.
    Damaged(String),
    /// A local file operation failed: what was being done, and why.
    Io(String, std::io::Error),
    /// Anything else, said in one line.
    Failed(String),
    /// The job was done, but not all of it (a snapshot saved without some
    /// files): exit status 3.
    Incomplete(String),
    /// An error with a hint of its own (from what the command was given), in
    /// place of the one its kind would give.
    Hinted(Box<Error>, String),
}

impl Error {
    /// The process exit status for this error (see README, "Exit status").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Store(store::Error::NoStore { .. }) => 2,
            Error::Incomplete(_) => 3,
            Error::Hinted(e, _) => e.exit_code(),
            _ => 1,
        }
    }

    /// An optional second line telling the user what to do.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Hinted(_, h) => Some(h.clone()),
            Error::Key(crypto::KeyError::Missing(_)) => {
                Some("run `chute init` to create a key, or pass --key-file".into())
            }
            Error::Remote(e) if e.hint.is_some() => e.hint.as_deref().cloned(),
            Error::Store(store::Error::Backend(e)) => e.hint.as_deref().cloned(),
            Error::Remote(e) if e.kind == remote::ErrorKind::Auth => Some(
                "run `chute key auth` here and admit the line it prints with `chute serve --allow` on the peer".into(),
            ),
            Error::Store(store::Error::NoStore { root, exists }) => {
                let empty = *exists
                    && std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_none());
                if !exists {
                    Some(format!(
                        "{} does not exist: if the store is on a disk, is the disk mounted?",
                        root.display()
                    ))
                } else if empty {
                    Some(format!(
                        "{} is empty: if the store is on a disk, is the disk mounted there?",
                        root.display()
                    ))
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(s) | Error::Damaged(s) | Error::Failed(s) | Error::Incomplete(s) => {
                f.write_str(s)
            }
            Error::Key(e) => e.fmt(f),
            Error::Hinted(e, _) => e.fmt(f),
            Error::Remote(e) => e.fmt(f),
            Error::Store(e) => e.fmt(f),
            Error::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Key(e) => Some(e),
            Error::Remote(e) => Some(e),
            Error::Store(e) => Some(e),
            Error::Io(_, e) => Some(e),
            Error::Hinted(e, _) => Some(e),
            _ => None,
        }
    }
}

impl From<crypto::KeyError> for Error {
    fn from(e: crypto::KeyError) -> Error {
        Error::Key(e)
    }
}

impl From<remote::Error> for Error {
    fn from(e: remote::Error) -> Error {
        Error::Remote(e)
    }
}

impl From<blob::BadName> for Error {
    fn from(e: blob::BadName) -> Error {
        Error::Store(store::Error::Bad(e.0))
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Error {
        Error::Store(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
