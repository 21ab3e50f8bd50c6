//! [`Remote`] over a [`Store`] in this process: a directory (the embedded default
//! and any `--remote DIR`), or any other backend of the store ([`LocalRemote::over`]).
//! On a directory, window writes and reads are paced by [`crate::throttle`]'s
//! limits, as a peer's are (a bucket's client paces its own requests).

use super::{Error, ErrorKind, Remote, Result, parse_index};
use crate::blob::{BlobId, Uncommitted};
use crate::format::Index;
use crate::store::Store;
use std::path::Path;

/// A store opened in this process.
pub struct LocalRemote {
    store: Store,
    /// The upload and download limits, on a directory (an S3 backend's client
    /// paces its own requests).
    limits: [Option<&'static crate::throttle::Limit>; 2],
}

#[cfg(test)]
impl LocalRemote {
    /// A new, empty store in a fresh directory under the system's temp dir
    /// (`chute-TAG-RANDOM`), for unit tests; the caller removes the directory.
    pub(crate) fn fresh(tag: &str) -> (std::path::PathBuf, LocalRemote) {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let dir = std::env::temp_dir().join(format!("chute-{tag}-{}", crate::hex::encode(&b)));
        crate::store::Store::init(&dir).unwrap();
        let remote = LocalRemote::open(&dir).unwrap();
        (dir, remote)
    }
}

impl LocalRemote {
    /// Opens the store at `dir`, which must exist (see [`Store::open`]).
    pub fn open(dir: &Path) -> crate::Result<LocalRemote> {
        Ok(LocalRemote::over(Store::open(dir)?))
    }

    /// A remote over `store`, whatever its backend.
    pub fn over(store: Store) -> LocalRemote {
        use crate::throttle::{down, up};
        let dir = store.backend().local_dir().is_some();
        LocalRemote {
            limits: if dir { [up(), down()] } else { [None; 2] },
            store,
        }
    }
}

impl Remote for LocalRemote {
    fn nodes(&self, domain: &str) -> Vec<String> {
        self.store.nodes(domain).unwrap_or_default()
    }

    fn describe(&self) -> String {
        self.store.describe()
    }

    fn create(&self, index: &Index) -> Result<BlobId> {
        Ok(self.store.create(index.to_json().as_bytes())?)
    }

    fn put_window(&self, id: &BlobId, window: u64, n: u64, data: &[u8]) -> Result<[u8; 32]> {
        let offset = n
            .checked_mul(window)
            .ok_or_else(|| Error::new(ErrorKind::Refused, "window offset overflows"))?;
        let mut paced = crate::throttle::Paced {
            inner: data,
            limit: self.limits[0],
        };
        Ok(self
            .store
            .write(id, offset, data.len() as u64, &mut paced, None)?)
    }

    fn window_hash(&self, id: &BlobId, window: u64, n: u64) -> Result<Option<[u8; 32]>> {
        let Some(offset) = n.checked_mul(window) else {
            return Ok(None);
        };
        match self.store.window_at(id, offset)? {
            Some(w) if w.len <= window => Ok(Some(self.store.hash(id, w.offset, w.len)?)),
            _ => Ok(None),
        }
    }

    fn challenge(
        &self,
        id: &BlobId,
        window: u64,
        n: u64,
        nonce: &crate::crypto::ChallengeNonce,
    ) -> Result<Option<[u8; 16]>> {
        let Some(offset) = n.checked_mul(window) else {
            return Ok(None);
        };
        match self.store.window_at(id, offset)? {
            Some(w) if w.len <= window => Ok(Some(self.store.window_challenge(id, &w, nonce)?)),
            _ => Ok(None),
        }
    }

    fn read(&self, id: &BlobId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let out = self.store.read(id, offset, len)?;
        crate::throttle::spend(self.limits[1], out.len());
        Ok(out)
    }

    fn commit(&self, id: &BlobId, index: &Index) -> Result<()> {
        Ok(self.store.commit(id, index.to_json().as_bytes())?)
    }

    fn index(&self, id: &BlobId) -> Result<Index> {
        parse_index(self.store.index(id)?, id)
    }

    fn list(&self, domain: &str, node: &str) -> Result<Vec<BlobId>> {
        Ok(self.store.list(domain, node)?)
    }

    fn delete(&self, id: &BlobId) -> Result<()> {
        self.store.delete(id)?;
        Ok(())
    }

    fn forget(&self, id: &BlobId) -> Result<()> {
        Ok(self.store.forget(id)?)
    }

    fn forgotten_index(&self, id: &BlobId) -> Result<Index> {
        parse_index(self.store.forgotten_index(id)?, id)
    }

    fn trim(&self, id: &BlobId, window: u64, n: u64) -> Result<()> {
        let offset = n
            .checked_mul(window)
            .ok_or_else(|| Error::new(ErrorKind::Refused, "window offset overflows"))?;
        self.store.trim(id, offset)?;
        Ok(())
    }

    fn list_uncommitted(&self, domain: &str, node: &str) -> Result<Vec<Uncommitted>> {
        Ok(self.store.list_uncommitted(domain, node)?)
    }

    fn sweep_temporaries(
        &self,
        domain: &str,
        node: &str,
        min_age: std::time::Duration,
    ) -> Result<Option<crate::store::Temps>> {
        Ok(Some(
            self.store
                .sweep_temporaries(Some((domain, node)), min_age)?,
        ))
    }
}
