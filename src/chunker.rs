//! Content-defined chunking: FastCDC with normalized chunking and a keyed gear table.
//!
//! A cut point is where a rolling gear hash of the last 64 bytes has its top bits
//! clear. The 256-entry gear table is derived from the key: block `b` (0..64) is
//! `SHA-256(seed || b as u32 big-endian)` and `gear[4b + k]` is its bytes
//! `8k..8k+8` read as a little-endian u64 (see [`Chunker::new`]), so chunk
//! boundaries, and with them chunk sizes, say nothing about content to anyone
//! without the key.
//!
//! Sizes (see also [`crate::format`]): more than [`MIN`] (256 KiB), about [`AVG`]
//! (1 MiB), at most [`MAX`] (2 MiB). Why these on a Pi: every chunk costs one
//! 46-byte seal, one 48-byte manifest reference and, on restore, at most one ranged
//! read, so 1 MiB keeps a 1 GiB file at ~1,000 references; a 1 MiB edit touches two
//! or three chunks; and the largest chunk bounds the per-worker buffers (a sealed
//! chunk is held once per worker), which keeps sink under its RSS budget on a
//! 512 MiB board. Files of at most `MIN` bytes are one chunk each; a file's last
//! chunk may be shorter than `MIN`.
//!
//! Pure: works on byte slices, never on files.

use sha2::{Digest, Sha256};

/// Smallest chunk (except a file's last).
pub const MIN: usize = 256 << 10;
/// Target average chunk.
pub const AVG: usize = 1 << 20;
/// Largest chunk.
pub const MAX: usize = 2 << 20;

/// Harder mask before the average size (log2(AVG) + 2 top bits), easier after it.
const MASK_SMALL: u64 = !0u64 << (64 - 22);
const MASK_LARGE: u64 = !0u64 << (64 - 18);

/// A chunker keyed by a 32-byte seed.
#[derive(Clone)]
pub struct Chunker {
    gear: Box<[u64; 256]>,
}

impl Chunker {
    /// Builds the gear table from the key's chunker seed.
    pub fn new(seed: &[u8; 32]) -> Chunker {
        let mut gear = Box::new([0u64; 256]);
        for (block, g) in gear.chunks_mut(4).enumerate() {
            let mut h = Sha256::new();
            h.update(seed);
            h.update((block as u32).to_be_bytes());
            let d = h.finalize();
            for (i, v) in g.iter_mut().enumerate() {
                *v = u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            }
        }
        Chunker { gear }
    }

    /// Length of the chunk that starts at `data[0]`. `data` must hold at least
    /// [`MAX`] bytes or run to the end of the file.
    pub fn cut(&self, data: &[u8]) -> usize {
        let n = data.len().min(MAX);
        if n <= MIN {
            return n;
        }
        let normal = AVG.min(n);
        let mut h: u64 = 0;
        let mut i = MIN;
        while i < normal {
            h = (h << 1).wrapping_add(self.gear[data[i] as usize]);
            if h & MASK_SMALL == 0 {
                return i + 1;
            }
            i += 1;
        }
        while i < n {
            h = (h << 1).wrapping_add(self.gear[data[i] as usize]);
            if h & MASK_LARGE == 0 {
                return i + 1;
            }
            i += 1;
        }
        n
    }

    /// Every chunk length of a whole in-memory buffer.
    pub fn lengths(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = self.cut(data);
            out.push(n);
            data = &data[n..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator tests/vectors/chunker.txt pins the chunker's input with.
    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        crate::vectors::xorshift(seed, len)
    }

    #[test]
    fn sizes_stay_in_bounds_and_cover_everything() {
        let c = Chunker::new(&[7; 32]);
        let data = pseudo_random(24 << 20, 1);
        let lens = c.lengths(&data);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        for &l in &lens[..lens.len() - 1] {
            assert!((MIN..=MAX).contains(&l), "{l}");
        }
        let avg = data.len() / lens.len();
        assert!((AVG / 2..AVG * 2).contains(&avg), "average {avg}");
    }

    #[test]
    fn boundaries_resynchronise_after_an_insert() {
        let c = Chunker::new(&[7; 32]);
        let data = pseudo_random(16 << 20, 2);
        let mut edited = data.clone();
        edited.splice(5 << 20..5 << 20, [1u8, 2, 3]);
        let cuts = |d: &[u8]| {
            let mut pos = 0;
            c.lengths(d)
                .into_iter()
                .map(|l| {
                    pos += l;
                    pos
                })
                .collect::<Vec<_>>()
        };
        let a = cuts(&data);
        let b: Vec<usize> = cuts(&edited).into_iter().map(|p| p - 3).collect();
        let shared = a.iter().filter(|p| b.contains(p)).count();
        assert!(
            shared + 3 >= a.len(),
            "{shared} of {} cuts survive",
            a.len()
        );
    }

    #[test]
    fn the_key_moves_the_boundaries() {
        let data = pseudo_random(8 << 20, 3);
        let a = Chunker::new(&[1; 32]).lengths(&data);
        let b = Chunker::new(&[2; 32]).lengths(&data);
        assert_ne!(a, b);
    }

    #[test]
    fn small_inputs_are_one_chunk() {
        let c = Chunker::new(&[0; 32]);
        assert_eq!(c.lengths(b"tiny"), vec![4]);
        assert!(c.lengths(b"").is_empty());
    }
}
