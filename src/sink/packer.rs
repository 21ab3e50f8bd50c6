//! Small files packed into shared chunks (manifest version 3; not prune's packs
//! of [`crate::pack`]): a file smaller than [`chunker::MIN`] is not a chunk of its
//! own (46 bytes of seal and a 32-byte id for a 2 KiB file is ~4%, and a chunk
//! reference per file as much again) but a slice of a *pack*, one ordinary chunk
//! (kind 1, id the keyed hash of its plaintext, deduplicated like any other).
//!
//! Rules, in walk order:
//! - a file that would take the open pack past [`chunker::MAX`] cuts it first;
//! - the file's bytes are appended; its entry gets one reference `skip/take`
//!   into the pack and the tag `chunk_id(content)[..8]` (see [`crate::format`]);
//! - the pack is cut after the file when it holds at least [`chunker::MIN`]
//!   bytes and the keyed cut hash of the file's name (its path's last
//!   component; [`crate::crypto::Keys::cut_hash`]) is 0 modulo [`CUT_EVERY`];
//! - and at the end of the walk, or when the walker must wait for the workers
//!   while the entry they wait for is a file of the open pack (the stream's
//!   queue is full and its head is that file: it cannot complete otherwise).
//!
//! Apart from that last cut (made only when the open pack's files and the
//! entries queued behind them fill the queue, as over long runs of unchanged
//! files between changed small ones; its place can depend on how fast the
//! workers are, and it moves the pack's cut, so such a run deduplicates its
//! packs less), the cuts depend on
//! the names, the sizes, the walk order and the key only, so
//! an unchanged tree packs into the same chunks run after run, and a sink that
//! lost its cache (or a resumed one, which reads every changed file again) finds
//! them in the chunk index instead of storing them again. Names rather than
//! whole paths, so that a tree renamed or moved as a whole (no parent snapshot
//! then) still packs the same and deduplicates. A file changed in the middle moves the
//! cuts of its pack only: the next path hash past [`chunker::MIN`] resynchronises.
//!
//! Memory: the open pack's bytes (at most [`chunker::MAX`]), in a buffer that
//! leaves as the pack's chunk when it is cut (a spare one, back from the
//! workers, takes its place): never a second copy of a pack. Which entries a
//! pack completes is the stream's ([`super::stream::Order`]).
//!
//! Pure: bytes and numbers in, cut decisions out.

use crate::chunker;
use crate::crypto::ChunkBuf;

/// One path in this many ends a pack (once it holds [`chunker::MIN`] bytes):
/// packs of about MIN + 8 small files.
pub(super) const CUT_EVERY: u32 = 8;

/// The open pack.
#[derive(Default)]
pub(super) struct Packer {
    /// Room for the chunk's header ([`ChunkBuf::PREFIX`], once the first file
    /// is added), then the files' bytes: the pack leaves as this very buffer.
    buf: Vec<u8>,
    /// The open pack's number (the stream keys its members by it).
    number: u64,
}

/// Where a file's bytes are: `take` bytes from `skip` of pack `pack`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slice {
    pub(super) pack: u64,
    pub(super) skip: u32,
    pub(super) take: u32,
}

impl Packer {
    /// Whether `len` more bytes keep the open pack within [`chunker::MAX`]; if
    /// not, [`Packer::cut`] first.
    pub(super) fn fits(&self, len: usize) -> bool {
        self.len().saturating_add(len) <= chunker::MAX
    }

    /// Whether the open pack holds no file.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open pack's bytes.
    fn len(&self) -> usize {
        self.buf.len().saturating_sub(ChunkBuf::PREFIX)
    }

    /// Appends a file's bytes (the caller checked [`Packer::fits`]).
    pub(super) fn add(&mut self, bytes: &[u8]) -> Slice {
        debug_assert!(self.fits(bytes.len()) && bytes.len() < chunker::MIN);
        if self.buf.is_empty() {
            self.buf.resize(ChunkBuf::PREFIX, 0);
        }
        let skip = self.len() as u32;
        self.buf.extend_from_slice(bytes);
        Slice {
            pack: self.number,
            skip,
            take: bytes.len() as u32,
        }
    }

    /// The open pack's number (its files' [`Slice::pack`]).
    pub(super) fn number(&self) -> u64 {
        self.number
    }

    /// Whether the pack ends after the file whose path has cut hash `hash`.
    pub(super) fn ends_after(&self, hash: u32) -> bool {
        self.len() >= chunker::MIN && hash % CUT_EVERY == 0
    }

    /// Closes the open pack: its number and its bytes, its buffer handed over
    /// as a chunk for the workers, not copied (`None` if empty); the next file
    /// opens a new one in `spare`.
    pub(super) fn cut(&mut self, mut spare: Vec<u8>) -> Option<(u64, ChunkBuf)> {
        if self.is_empty() {
            return None;
        }
        // Every pack reaches MIN; past that a reused buffer gives its pages
        // back, rather than keep those of the largest pack so far (see
        // `crypto::fit`).
        crate::crypto::fit(&mut spare, ChunkBuf::PREFIX + chunker::MIN);
        let chunk = ChunkBuf::prefixed(std::mem::replace(&mut self.buf, spare));
        let number = self.number;
        self.number += 1;
        Some((number, chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs `sizes` with cut hashes `hashes`, cutting as the walker does; returns
    /// each pack's length and the slices.
    fn pack(sizes: &[usize], hashes: &[u32]) -> (Vec<usize>, Vec<Slice>) {
        let mut p = Packer::default();
        let (mut packs, mut slices) = (Vec::new(), Vec::new());
        for (i, (&n, &h)) in sizes.iter().zip(hashes).enumerate() {
            let bytes = vec![i as u8; n];
            if !p.fits(n) {
                packs.push(p.cut(Vec::new()).unwrap().1.plain_len());
            }
            slices.push(p.add(&bytes));
            if p.ends_after(h) {
                packs.push(p.cut(Vec::new()).unwrap().1.plain_len());
            }
        }
        if let Some((_, b)) = p.cut(Vec::new()) {
            packs.push(b.plain_len());
        }
        (packs, slices)
    }

    // The cut rules: never before MIN bytes, after MIN only at a path whose hash
    // is 0 mod 8, before a file that would pass MAX, and at the end; slices are
    // back to back within their pack.
    #[test]
    fn cuts_follow_size_and_path_hash() {
        // 200 files of 2 KiB: 400 KiB, none of the hashes cut: one pack.
        let (packs, slices) = pack(&[2048; 200], &[1; 200]);
        assert_eq!(packs, [200 * 2048]);
        assert_eq!(
            slices[3],
            Slice {
                pack: 0,
                skip: 3 * 2048,
                take: 2048
            }
        );

        // A cutting hash before MIN does nothing; the first at or past MIN cuts.
        let mut hashes = vec![1u32; 300];
        hashes[10] = 8;
        hashes[140] = 16; // 141 files = 282 KiB >= 256 KiB
        let (packs, slices) = pack(&[2048; 300], &hashes);
        assert_eq!(packs, [141 * 2048, 159 * 2048]);
        assert_eq!(slices[140].pack, 0);
        assert_eq!(
            slices[141],
            Slice {
                pack: 1,
                skip: 0,
                take: 2048
            }
        );

        // Files of MIN - 1 bytes and no cutting hash: cut before passing MAX
        // (8 of them fit in 2 MiB).
        let big = chunker::MIN - 1;
        let (packs, _) = pack(&[big; 20], &[3; 20]);
        assert_eq!(packs, [8 * big, 8 * big, 4 * big]);
        assert!(packs.iter().all(|&n| n <= chunker::MAX));

        // Nothing to pack: no pack.
        assert_eq!(pack(&[], &[]).0, Vec::<usize>::new());
    }

    // Content-defined on paths: the same sequence cuts the same way wherever it
    // starts in the walk, after the first cut it shares with the other run.
    #[test]
    fn an_unchanged_tail_packs_identically_after_a_change() {
        let keys = crate::crypto::Keys::from_key_bytes(b"k");
        let paths: Vec<Vec<u8>> = (0..2000)
            .map(|i| format!("/d/f{i:05}").into_bytes())
            .collect();
        let hashes: Vec<u32> = paths.iter().map(|p| keys.cut_hash(p)).collect();
        let sizes: Vec<usize> = (0..2000).map(|i| 1024 + (i * 37) % 2048).collect();
        let (a, _) = pack(&sizes, &hashes);
        // A file near the start grows by 1 KiB.
        let mut changed = sizes.clone();
        changed[5] += 1024;
        let (b, _) = pack(&changed, &hashes);
        // The change moves the cuts of its pack and maybe the next; the rest
        // is packed exactly as before.
        let same = a.len().min(b.len()) - 2;
        assert!(same > 5, "{a:?}");
        assert_eq!(a[a.len() - same..], b[b.len() - same..]);
        assert_eq!(a.iter().sum::<usize>() + 1024, b.iter().sum::<usize>());
        assert!(
            a.iter()
                .all(|&n| n >= chunker::MIN || n == *a.last().unwrap())
        );
        // The cut hash is keyed.
        let other = crate::crypto::Keys::from_key_bytes(b"other");
        assert_ne!(
            (0..8).map(|i| keys.cut_hash(&paths[i])).collect::<Vec<_>>(),
            (0..8)
                .map(|i| other.cut_hash(&paths[i]))
                .collect::<Vec<_>>()
        );
    }
}
