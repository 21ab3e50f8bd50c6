//! Packs: where a chunk lives after `chute prune` moved it out of a mostly unused blob.
//!
//! Snapshots never change once committed, and their manifests name each chunk by id
//! *and* by place (blob, offset). A blob whose snapshot was forgotten but whose
//! chunks later snapshots still share cannot be deleted, and most of it may be
//! unused. Prune repacks such a blob: it copies the chunks still needed, sealed as
//! they are (a chunk's seal binds its id, not its place), into a new *pack* blob with
//! a sealed map id → place (byte layout in [`crate::format`]), commits the pack, and
//! deletes the old blob after the grace period like any unreferenced one.
//!
//! [`Resolver`] applies the one rule every reader follows (restore, verify, prune):
//! a chunk referenced in a committed snapshot's blob is read there; any other
//! reference is read from the newest committed pack that lists the chunk's id, or,
//! if none does, from the referenced blob itself (forgotten, not yet pruned). The
//! rule is what prune keeps true: it deletes a blob only once every reference into
//! it that a committed snapshot holds resolves elsewhere.
//!
//! The rule applies per reference ([`Resolver::stays`], [`Resolver::moved`]), so a
//! reader streaming a manifest needs no whole [`Manifest`]; [`Resolver::resolve`]
//! applies it to a whole one. Version 3 manifest nodes follow it too, as whole
//! references of their id, place and sealed length (a node's seal also binds its
//! id, not its place): prune copies the used ones into packs, and every reader
//! finds them through [`crate::snapshot::read_span`].
//!
//! Memory: the resolver holds one entry per packed chunk (about 80 bytes), so the
//! chunks of 10 GiB of repacked data (10,000 chunks of 1 MiB) cost under 1 MiB.

use crate::blob::BlobId;
use crate::crypto::{ChunkId, Keys};
use crate::format::{self, ChunkRef, Header, Index, Manifest, Packed};
use crate::remote::Remote;
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};

/// The mount id under which a node's packs live: that of the empty root list,
/// which no snapshot has.
pub fn mount(keys: &Keys) -> String {
    keys.mount_id(&[])
}

/// Reads and opens a pack's map.
pub fn read_map(
    keys: &Keys,
    remote: &dyn Remote,
    blob: &BlobId,
    h: &Header,
) -> Result<Vec<Packed>> {
    let fetch = |off: u64, len: u64| {
        remote
            .read(blob, h.manifest_offset + off, len)
            .map_err(std::io::Error::other)
    };
    format::ManifestReader::new(keys, &blob.path(), h.manifest_len, h.segments, fetch)
        .map(format::ManifestReader::pack_map)
        .and_then(|r| format::decode_pack_map(r, h.manifest_offset))
        .map_err(|e| {
            Error::Damaged(format!(
                "pack {}: its map is damaged: {}",
                blob.path(),
                format::opened(e)
            ))
        })
}

/// Resolves chunk references to where the chunks are now.
#[derive(Debug, Default)]
pub struct Resolver {
    /// Paths of committed snapshots: references into them stay.
    committed: HashSet<String>,
    /// Committed packs, oldest first.
    packs: Vec<BlobId>,
    /// Chunk id → (pack, offset, sealed length) in the newest pack holding it.
    by_id: HashMap<ChunkId, (u32, u64, u32)>,
}

impl Resolver {
    /// Builds the resolver of a node from its committed blobs (`listed`, as
    /// [`Remote::list`] gives them): reads the index and map of each pack.
    pub fn load(keys: &Keys, remote: &dyn Remote, listed: &[BlobId]) -> Result<Resolver> {
        let pack_mount = mount(keys);
        let mut packs = Vec::new();
        let mut r = Resolver::default();
        for b in listed {
            if b.mount != pack_mount {
                r.committed.insert(b.path());
                continue;
            }
            let index = remote.index(b)?;
            let h = format::open_header(keys, &index)
                .ok()
                .filter(|h| h.pack)
                .ok_or_else(|| {
                    Error::Damaged(format!("pack {}: its index does not open", b.path()))
                })?;
            packs.push((h.time, h.time_ns, b.clone(), h));
        }
        crate::sort::by(&mut packs, |a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
        for (_, _, blob, h) in packs {
            let n = r.packs.len() as u32;
            for c in read_map(keys, remote, &blob, &h)? {
                // Newest last: a later pack's copy wins.
                r.by_id.insert(c.id, (n, c.offset, c.len));
            }
            r.packs.push(blob);
        }
        Ok(r)
    }

    /// A resolver of the committed snapshots at paths `committed` and the packs
    /// given with their maps, oldest first: what
    /// [`Resolver::load`] builds from a store, for the planners' unit tests.
    #[cfg(test)]
    pub(crate) fn with_packs(committed: &[&str], packs: Vec<(BlobId, Vec<Packed>)>) -> Resolver {
        let mut r = Resolver {
            committed: committed.iter().map(|s| s.to_string()).collect(),
            ..Resolver::default()
        };
        for (blob, map) in packs {
            let n = r.packs.len() as u32;
            for c in map {
                r.by_id.insert(c.id, (n, c.offset, c.len));
            }
            r.packs.push(blob);
        }
        r
    }

    /// Lists the node's committed blobs, then [`Resolver::load`].
    pub fn for_node(
        keys: &Keys,
        remote: &dyn Remote,
        domain: &str,
        node: &str,
    ) -> Result<Resolver> {
        let listed = remote.list(domain, node)?;
        Resolver::load(keys, remote, &listed)
    }

    /// The committed packs, oldest first.
    pub fn packs(&self) -> &[BlobId] {
        &self.packs
    }

    /// Whether some committed pack holds chunk `id`.
    pub fn holds(&self, id: &ChunkId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Whether no pack exists (every reference stays as written).
    pub fn is_empty(&self) -> bool {
        self.packs.is_empty()
    }

    /// Whether references into the blob at `path` stay where they are (it is a
    /// committed snapshot).
    pub fn stays(&self, path: &str) -> bool {
        self.committed.contains(path)
    }

    /// Where the rule moves one reference `c` into a blob that does not stay (see
    /// [`Resolver::stays`]): the pack's number in [`Resolver::packs`] and the
    /// offset there, or `None` if no pack holds it (it is read where it was written).
    /// Per reference, so a reader streaming a manifest needs no whole [`Manifest`].
    pub fn moved(&self, c: &ChunkRef) -> Option<(usize, u64)> {
        let &(p, offset, len) = self.by_id.get(&c.id)?;
        // Same id, same plaintext, same sealed length: anything else is not it.
        (len == c.len).then_some((p as usize, offset))
    }

    /// Points every chunk reference of `m` that the rule moves at its pack, adding
    /// the packs to the blob table. Returns how many references moved.
    pub fn resolve(&self, m: &mut Manifest) -> usize {
        if self.packs.is_empty() {
            return 0;
        }
        let stays: Vec<bool> = m.blobs.iter().map(|b| self.stays(b)).collect();
        let mut slot: HashMap<usize, u32> = HashMap::new();
        let mut moved = 0;
        for c in m.entries.iter_mut().flat_map(|e| e.chunks.iter_mut()) {
            if stays.get(c.blob as usize).copied().unwrap_or(false) {
                continue;
            }
            let Some((p, offset)) = self.moved(c) else {
                continue;
            };
            c.blob = *slot.entry(p).or_insert_with(|| {
                m.blobs.push(self.packs[p].path());
                (m.blobs.len() - 1) as u32
            });
            c.offset = offset;
            moved += 1;
        }
        moved
    }
}

/// Writes one pack: sealed chunks appended in order, uploaded window by window,
/// then the sealed map and the committing index.
pub struct Writer<'a> {
    keys: &'a Keys,
    remote: &'a dyn Remote,
    blob: BlobId,
    index: Index,
    window: u64,
    /// Bytes not yet uploaded; they start at window `hashes.len()`.
    buf: Vec<u8>,
    hashes: Vec<[u8; 32]>,
    /// [`format::CHALLENGES`] storage-challenge answers per window uploaded.
    answers: Vec<format::Answers>,
    chunks: Vec<Packed>,
    ids: HashSet<ChunkId>,
    time: (i64, u32),
}

impl<'a> Writer<'a> {
    /// Creates the (pending) pack blob on the remote.
    pub fn create(
        keys: &'a Keys,
        remote: &'a dyn Remote,
        domain: &str,
        node: &str,
        time: (i64, u32),
    ) -> Result<Writer<'a>> {
        let mut index = Index {
            version: u32::from(format::VERSION),
            domain: domain.to_string(),
            node: node.to_string(),
            mount: mount(keys),
            timestamp: crate::snapshot::timestamp(time.0, time.1),
            parent: None,
            size: None,
            sealed: None,
        };
        let blob = remote.create(&index)?;
        index.timestamp = blob.timestamp.clone();
        let window = crate::protocol::DEFAULT_WINDOW;
        Ok(Writer {
            keys,
            remote,
            blob,
            index,
            window,
            buf: Vec::with_capacity(window as usize),
            hashes: Vec::new(),
            answers: Vec::new(),
            chunks: Vec::new(),
            ids: HashSet::new(),
            time,
        })
    }

    /// The pack being written.
    pub fn blob(&self) -> &BlobId {
        &self.blob
    }

    /// Bytes appended so far.
    fn len(&self) -> u64 {
        self.hashes.len() as u64 * self.window + self.buf.len() as u64
    }

    /// Appends one sealed chunk (already authenticated by the caller) unless the
    /// pack holds it already.
    pub fn add(&mut self, id: &ChunkId, sealed: &[u8]) -> Result<()> {
        if !self.ids.insert(*id) {
            return Ok(());
        }
        self.chunks.push(Packed {
            id: *id,
            offset: self.len(),
            len: sealed.len() as u32,
        });
        self.append(sealed)
    }

    fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let take = (self.window as usize - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == self.window as usize {
                self.upload()?;
            }
        }
        Ok(())
    }

    fn upload(&mut self) -> Result<()> {
        let n = self.hashes.len() as u64;
        let want = crate::crypto::sha256(&self.buf);
        let got = self
            .remote
            .put_window(&self.blob, self.window, n, &self.buf)?;
        if got != want {
            return Err(Error::Failed(format!(
                "the remote stored window {n} of pack {} as other bytes than were sent",
                self.blob.path()
            )));
        }
        self.hashes.push(want);
        self.answers.push(format::window_answers(
            self.keys,
            &self.blob.path(),
            n as u32,
            &self.buf,
        ));
        self.buf.clear();
        Ok(())
    }

    /// How many chunks the pack holds so far.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Seals and appends the map, uploads the last window and commits the pack.
    pub fn finish(mut self) -> Result<BlobId> {
        let data = self.len();
        let bytes: u64 = self.chunks.iter().map(|c| u64::from(c.len)).sum();
        let (map, segments) = format::seal_pack_map(
            self.keys,
            &self.blob.path(),
            &format::encode_pack_map(&self.chunks),
        );
        self.append(&map)?;
        if !self.buf.is_empty() {
            self.upload()?;
        }
        let part_size = data + map.len() as u64;
        let mut header = Header {
            time: self.time.0,
            time_ns: self.time.1,
            files: self.chunks.len() as u64,
            bytes,
            manifest_offset: data,
            manifest_len: map.len() as u64,
            segments,
            part_size,
            window: self.window as u32,
            window_hashes: std::mem::take(&mut self.hashes),
            pack: true,
            ..Header::default()
        };
        self.index.size = Some(part_size);
        format::seal_fitting(
            self.keys,
            &self.blob.path(),
            &mut header,
            &mut self.index,
            &self.answers,
            crate::store::MAX_INDEX,
        );
        self.remote.commit(&self.blob, &self.index)?;
        Ok(self.blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Entry, EntryKind};
    use crate::remote::LocalRemote;

    #[test]
    fn a_pack_round_trips_and_moves_only_references_outside_committed_snapshots() {
        let (dir, remote) = LocalRemote::fresh("pack");
        let keys = Keys::from_key_bytes(b"pack test key");
        let plain: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i; 700_000 + usize::from(i)])
            .collect();
        let ids: Vec<ChunkId> = plain.iter().map(|p| keys.chunk_id(p)).collect();
        let sealed: Vec<Vec<u8>> = plain
            .iter()
            .zip(&ids)
            .map(|(p, id)| keys.seal(crate::crypto::Kind::Chunk, id, p))
            .collect();
        let mut w = Writer::create(&keys, &remote, "d", "n", (1_800_000_000, 5)).unwrap();
        for (id, s) in ids.iter().zip(&sealed).take(4) {
            w.add(id, s).unwrap();
        }
        w.add(&ids[0], &sealed[0]).unwrap();
        assert_eq!(w.chunk_count(), 4, "a chunk is packed once");
        let pack = w.finish().unwrap();
        assert_eq!(pack.mount, mount(&keys));

        let listed = remote.list("d", "n").unwrap();
        assert_eq!(listed, vec![pack.clone()]);
        let r = Resolver::load(&keys, &remote, &listed).unwrap();
        assert_eq!(r.packs(), std::slice::from_ref(&pack));

        // Blob "gone" (never committed: forgotten or deleted) and blob "kept" (a
        // committed snapshot, as far as the resolver knows: listed).
        let mut r = r;
        r.committed.insert("d/n/m/kept".into());
        let mut m = Manifest {
            blobs: vec!["d/n/m/kept".into(), "d/n/m/gone".into()],
            entries: vec![Entry::new(EntryKind::File, b"/f".to_vec())],
        };
        let at = |i: usize, blob: u32| ChunkRef::whole(ids[i], blob, 999, sealed[i].len() as u32);
        m.entries[0].chunks = vec![at(0, 0), at(1, 1), at(4, 1), at(2, 1)];
        assert_eq!(r.resolve(&mut m), 2);
        assert_eq!(m.blobs.len(), 3);
        assert_eq!(m.blobs[2], pack.path());
        let c = &m.entries[0].chunks;
        assert_eq!((c[0].blob, c[0].offset), (0, 999), "committed stays");
        assert_eq!(c[2].blob, 1, "not packed stays");
        for i in [1, 3] {
            assert_eq!(c[i].blob, 2);
            let got = remote
                .read(&pack, c[i].offset, u64::from(c[i].len))
                .unwrap();
            let mut got = got;
            let id = c[i].id;
            let opened = keys
                .open_in_place(crate::crypto::Kind::Chunk, &id, &mut got)
                .unwrap();
            assert_eq!(opened, &plain[if i == 1 { 1 } else { 2 }][..]);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_newer_pack_wins() {
        let (dir, remote) = LocalRemote::fresh("pack");
        let keys = Keys::from_key_bytes(b"pack test key");
        let p = b"one chunk".to_vec();
        let id = keys.chunk_id(&p);
        let s = keys.seal(crate::crypto::Kind::Chunk, &id, &p);
        let mut packs = Vec::new();
        for t in [2_000_000_000, 1_900_000_000] {
            let mut w = Writer::create(&keys, &remote, "d", "n", (t, 0)).unwrap();
            w.add(&id, &s).unwrap();
            packs.push(w.finish().unwrap());
        }
        let r = Resolver::for_node(&keys, &remote, "d", "n").unwrap();
        let mut m = Manifest {
            blobs: vec!["d/n/m/gone".into()],
            entries: vec![Entry::new(EntryKind::File, b"/f".to_vec())],
        };
        m.entries[0].chunks = vec![ChunkRef::whole(id, 0, 0, s.len() as u32)];
        assert_eq!(r.resolve(&mut m), 1);
        assert_eq!(m.blobs[1], packs[0].path(), "the pack of the later time");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
