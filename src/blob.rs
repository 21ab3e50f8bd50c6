//! The names a node, a store and a peer all use for a blob: its place
//! `<domain>/<node>/<mount>/<timestamp>` ([`BlobId`], each component checked by
//! [`valid_component`] before it touches a file system or a URL), and what a blob
//! that is not a committed snapshot is ([`BlobState`], [`Uncommitted`]). A leaf:
//! the store, the server, the remotes and the pipelines import it; it imports
//! nothing of theirs.

use std::fmt;

/// A blob name (or a component of one) that is not valid, said in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName(pub String);

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadName {}

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
    pub fn new(domain: &str, node: &str, mount: &str, timestamp: &str) -> Result<BlobId, BadName> {
        for (what, c) in [
            ("domain", domain),
            ("node", node),
            ("mount", mount),
            ("timestamp", timestamp),
        ] {
            if !valid_component(c) {
                return Err(BadName(format!(
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
    pub fn parse(s: &str) -> Result<BlobId, BadName> {
        let s = s.strip_suffix('/').unwrap_or(s);
        let parts: Vec<&str> = s.split('/').collect();
        match parts[..] {
            [d, n, m, t] => BlobId::new(d, n, m, t),
            _ => Err(BadName(format!("not a blob path: {s:?}"))),
        }
    }
}

/// What a blob that is not a committed snapshot is (see `Store::list_uncommitted`).
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

/// Blob paths numbered in the order first met: a sink's manifest table (its own
/// blob first), a verify run's table of every blob its snapshots use.
#[derive(Default)]
pub struct Table {
    pub names: Vec<String>,
    at: std::collections::HashMap<String, u32>,
}

impl Table {
    /// `name`'s number, given it if it is new.
    pub fn index(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.at.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.at.insert(name.to_string(), i);
        i
    }
}
