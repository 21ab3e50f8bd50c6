//! Chunk compression: the codec and the rule for when a chunk is stored compressed.
//!
//! A chunk is compressed before it is sealed, and stored compressed only when that
//! saves at least an eighth of it ([`pack`]); otherwise it is sealed as it is. A
//! chunk is first judged on a sample of it, so incompressible data pays an
//! attempt on 3% of its bytes (see [`pack`]). The codec is the LZ4 *block* format
//! (lz4_flex, safe code only); the sealed object's layout, and how a manifest
//! records a compressed chunk's length, are in [`crate::format`].
//!
//! Invariants kept here:
//! - the chunk id is always over the uncompressed bytes (callers hash before
//!   calling [`pack`]), so deduplication and the id check on opening do not
//!   depend on the codec;
//! - [`unpack`] writes at most the length the manifest expects (never what the
//!   compressed bytes claim) and refuses anything that does not decompress to
//!   exactly that length;
//! - pure: no I/O; buffers are the caller's, reused from chunk to chunk.

/// The codec byte at the head of a compressed chunk's plaintext: LZ4 block.
pub const CODEC_LZ4: u8 = 1;

/// Whether chunks are compressed before sealing (`chute sink --compression`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Store every chunk as it is (the format of chutes before compression).
    Off,
    /// Compress a chunk when that saves at least an eighth of it.
    Auto,
}

impl Mode {
    /// Parses `off` or `auto`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "off" => Some(Mode::Off),
            "auto" => Some(Mode::Auto),
            _ => None,
        }
    }
}

/// The most a compressed chunk's body may take to be worth storing: at most
/// seven eighths of the raw length, codec byte included.
pub fn budget(raw: usize) -> usize {
    (raw - raw / 8).saturating_sub(1)
}

/// Compresses `plain` into `out` (cleared first; its allocation is reused) as the
/// codec byte then an LZ4 block, when the result is at most [`budget`] bytes
/// and a sample of `plain` compresses ([`sample_compresses`]); returns whether
/// it is. On `false`, `out` holds nothing useful.
pub fn pack(plain: &[u8], out: &mut Vec<u8>) -> bool {
    let room = budget(plain.len());
    // Chunks under 64 bytes cannot save enough to pay for the codec byte.
    if plain.len() < 64 {
        return false;
    }
    if !sample_compresses(plain, out) {
        return false;
    }
    // lz4_flex wants room for the worst case (~110%) before it starts. Exactly
    // that: a plain `resize` doubles a reused buffer a few bytes short, and a
    // larger one would keep the pages of the largest chunk it held.
    let room_needed = 1 + lz4_flex::block::get_maximum_output_size(plain.len());
    crate::crypto::fit(out, room_needed);
    out.resize(room_needed, 0);
    out[0] = CODEC_LZ4;
    match lz4_flex::block::compress_into(plain, &mut out[1..]) {
        Ok(n) if n <= room => {
            out.truncate(1 + n);
            true
        }
        _ => false,
    }
}

/// Pieces of a chunk compressed to judge it before the whole is ([`sample_compresses`]).
const SAMPLE_PIECES: usize = 8;
/// Bytes of each piece.
const SAMPLE_PIECE: usize = 4 << 10;

/// Whether `plain` looks worth compressing, judged on [`SAMPLE_PIECES`] pieces
/// spread evenly over it (32 KiB of a 1 MiB chunk): they must save a sixteenth
/// together, compressed one by one into `out` (its allocation reused). A chunk
/// under eight samples' length is always tried whole. Incompressible data, most
/// of a backup's bytes by volume (media, archives, ciphertext), then costs the
/// attempt on 3% of a chunk instead of all of it, and the worst-case room its
/// whole attempt wanted zeroed: ~0.27 CPU-s/GiB, 4% of a local sink's CPU on
/// the build VM. A chunk whose pieces miss a compressible part is stored raw: a
/// few bytes lost, never a wrong one; a chunk that passes is still judged whole
/// by the eighth rule ([`budget`]).
fn sample_compresses(plain: &[u8], out: &mut Vec<u8>) -> bool {
    let sample = SAMPLE_PIECES * SAMPLE_PIECE;
    if plain.len() < 8 * sample {
        return true;
    }
    // Not `fit`: the room a compressible chunk's whole attempt made stays for
    // the next.
    let room = lz4_flex::block::get_maximum_output_size(SAMPLE_PIECE);
    out.clear();
    out.resize(room, 0);
    let step = plain.len() / SAMPLE_PIECES;
    let mut packed = 0;
    for k in 0..SAMPLE_PIECES {
        let piece = &plain[k * step..k * step + SAMPLE_PIECE];
        packed += lz4_flex::block::compress_into(piece, out).unwrap_or(SAMPLE_PIECE);
    }
    packed <= sample - sample / 16
}

/// A compressed chunk that does not decompress to the length its manifest names.
#[derive(Debug, PartialEq, Eq)]
pub struct Damaged;

/// Decompresses a compressed chunk's plaintext (codec byte, block) into `out`
/// (cleared first, reused), which must come to exactly `raw` bytes: output is
/// bounded by `raw`, whatever the block claims.
pub fn unpack(packed: &[u8], raw: usize, out: &mut Vec<u8>) -> Result<(), Damaged> {
    let (&codec, block) = packed.split_first().ok_or(Damaged)?;
    if codec != CODEC_LZ4 {
        return Err(Damaged);
    }
    out.clear();
    out.resize(raw, 0);
    match lz4_flex::block::decompress_into(block, out) {
        Ok(n) if n == raw => Ok(()),
        _ => Err(Damaged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let line = b"2026-12-02T18:10:06 pi-kitchen sshd[812]: Accepted publickey for pi\n";
        line.iter().cycle().take(n).copied().collect()
    }

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        getrandom::fill(&mut v).expect("rng");
        v
    }

    #[test]
    fn round_trip() {
        let plain = text(1 << 20);
        let mut z = Vec::new();
        assert!(pack(&plain, &mut z));
        assert!(z.len() < plain.len() / 8, "{}", z.len());
        let mut back = Vec::new();
        unpack(&z, plain.len(), &mut back).expect("unpacks");
        assert_eq!(back, plain);
    }

    #[test]
    fn random_data_is_stored_raw() {
        let mut z = Vec::new();
        assert!(!pack(&random(1 << 20), &mut z));
        assert!(!pack(&random(100), &mut z));
        assert!(!pack(b"tiny", &mut z));
    }

    #[test]
    fn an_eighth_or_nothing() {
        // Half random, half repetitive: saves about half, so it is compressed;
        // seven eighths random saves under an eighth, so it is not.
        let mut z = Vec::new();
        let mut half = random(1 << 19);
        half.extend(text(1 << 19));
        assert!(pack(&half, &mut z));
        assert!(z.len() <= budget(half.len()) + 1);
        let mut most = random(7 << 17);
        most.extend(text(1 << 17));
        assert!(!pack(&most, &mut z));
        assert_eq!(budget(800), 699);
    }

    #[test]
    fn incompressible_chunks_are_judged_on_a_sample() {
        let mut z = Vec::new();
        // Compressible in every piece; random in every piece.
        assert!(sample_compresses(&text(1 << 20), &mut z));
        assert!(!sample_compresses(&random(1 << 20), &mut z));
        // Random at the head, compressible after: the pieces see both.
        let mut half = random(1 << 19);
        half.extend(text(1 << 19));
        assert!(sample_compresses(&half, &mut z));
        // Too short to sample: always tried whole.
        assert!(sample_compresses(&random(255 << 10), &mut z));
        // Random except between the pieces: judged raw, and stored so.
        let mut gaps = text(1 << 20);
        let step = (1 << 20) / SAMPLE_PIECES;
        for k in 0..SAMPLE_PIECES {
            gaps[k * step..k * step + SAMPLE_PIECE].copy_from_slice(&random(SAMPLE_PIECE));
        }
        assert!(!pack(&gaps, &mut z));
    }

    #[test]
    fn decompression_is_bounded_by_the_expected_length() {
        let plain = text(100_000);
        let mut z = Vec::new();
        assert!(pack(&plain, &mut z));
        let mut out = Vec::new();
        // Shorter or longer than the manifest says: damage, and never more
        // than the expected length is written.
        assert_eq!(unpack(&z, plain.len() - 1, &mut out), Err(Damaged));
        assert!(out.len() < plain.len());
        assert_eq!(unpack(&z, plain.len() + 1, &mut out), Err(Damaged));
        // An unknown codec, an empty body, a cut block.
        let mut other = z.clone();
        other[0] = 2;
        assert_eq!(unpack(&other, plain.len(), &mut out), Err(Damaged));
        assert_eq!(unpack(&[], 0, &mut out), Err(Damaged));
        assert_eq!(
            unpack(&z[..z.len() / 2], plain.len(), &mut out),
            Err(Damaged)
        );
        // A block claiming a huge run decompresses into no more than asked.
        let bomb = [
            CODEC_LZ4, 0x1f, b'a', 0xff, 0xff, 0xff, 0xff, 0x01, 0x00, 0xff,
        ];
        assert_eq!(unpack(&bomb, 16, &mut out), Err(Damaged));
        assert!(out.len() <= 16);
    }
}
