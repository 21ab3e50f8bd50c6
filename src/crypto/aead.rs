//! XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha, over RFC 8439's AEAD), composed
//! from RustCrypto's `chacha20` and `poly1305` so that Poly1305 sees the sealed
//! bytes four blocks at a time.
//!
//! Why not `chacha20poly1305` itself: it feeds the associated data to Poly1305
//! first, and when that is not a multiple of 64 bytes (chute's is 6 header bytes
//! plus a context, e.g. 38 for a chunk) `universal-hash` 0.6 never realigns, so
//! poly1305's AVX2 backend takes every following block one at a time: a seal of
//! 1 MiB cost 1.03 s/GiB against 0.80 once aligned (a 2 vCPU AMD EPYC). Here the
//! first ciphertext blocks top the associated data up to a multiple of four, and
//! the rest goes in one aligned run. Poly1305 is the same function however its
//! input is split into calls, so the bytes and tags are the crate's: the tests
//! below check that against `chacha20poly1305` on every length around the
//! boundaries, and `crate::vectors` opens the pinned vectors with the crate.

use chacha20::XChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use poly1305::universal_hash::{KeyInit, UniversalHash};
use poly1305::{Block, Poly1305};

/// Poly1305's tag length.
pub const TAG_LEN: usize = 16;

/// One 32-byte XChaCha20-Poly1305 key.
#[derive(Clone)]
pub struct Aead {
    key: [u8; 32],
}

/// The tag did not authenticate the bytes (damage, or another key, nonce or
/// associated data).
#[derive(Debug)]
pub struct Forged;

impl Aead {
    pub fn new(key: [u8; 32]) -> Aead {
        Aead { key }
    }

    /// Encrypts `buf` in place; returns its tag.
    pub fn seal(&self, nonce: &[u8; 24], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let (mut cipher, mac) = self.start(nonce);
        cipher.apply_keystream(buf);
        tag(mac, aad, buf).into()
    }

    /// Checks `tag` over `aad` and the ciphertext in `buf` (in constant time),
    /// then decrypts `buf` in place; a forged or damaged `buf` is left as it was.
    pub fn open(
        &self,
        nonce: &[u8; 24],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Forged> {
        let (mut cipher, mac) = self.start(nonce);
        let expected = Block::from(*tag);
        authenticated(mac, aad, buf)
            .verify(&expected)
            .map_err(|_| Forged)?;
        cipher.apply_keystream(buf);
        Ok(())
    }

    /// The cipher at block 1 and the MAC keyed with block 0's first 32 bytes.
    fn start(&self, nonce: &[u8; 24]) -> (XChaCha20, Poly1305) {
        let mut cipher = XChaCha20::new(&self.key.into(), nonce.into());
        let mut block0 = [0u8; 64];
        cipher.apply_keystream(&mut block0);
        let mac_key: [u8; 32] = block0[..32].try_into().expect("32 of 64 bytes");
        block0.fill(0);
        cipher.seek(64u64);
        (cipher, Poly1305::new(&mac_key.into()))
    }
}

/// RFC 8439's tag: Poly1305 over the associated data and the ciphertext, each
/// zero-padded to 16 bytes, then both lengths as little-endian u64s.
fn tag(mac: Poly1305, aad: &[u8], ciphertext: &[u8]) -> Block {
    authenticated(mac, aad, ciphertext).finalize()
}

fn authenticated(mut mac: Poly1305, aad: &[u8], ciphertext: &[u8]) -> Poly1305 {
    let (aad_blocks, aad_tail) = Block::slice_as_chunks(aad);
    mac.update(aad_blocks);
    let mut fed = aad_blocks.len();
    if !aad_tail.is_empty() {
        mac.update(&[padded(aad_tail)]);
        fed += 1;
    }
    let (blocks, tail) = Block::slice_as_chunks(ciphertext);
    // Enough ciphertext blocks to make what was fed a multiple of four: the
    // rest then goes through the backend's four-block path.
    let top_up = ((4 - fed % 4) % 4).min(blocks.len());
    mac.update(&blocks[..top_up]);
    mac.update(&blocks[top_up..]);
    if !tail.is_empty() {
        mac.update(&[padded(tail)]);
    }
    let mut lengths = Block::default();
    lengths[..8].copy_from_slice(&(aad.len() as u64).to_le_bytes());
    lengths[8..].copy_from_slice(&(ciphertext.len() as u64).to_le_bytes());
    mac.update(&[lengths]);
    mac
}

fn padded(bytes: &[u8]) -> Block {
    let mut b = Block::default();
    b[..bytes.len()].copy_from_slice(bytes);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::AeadInOut;
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};

    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        crate::vectors::xorshift(seed, len)
    }

    #[test]
    fn seals_and_opens_as_the_chacha20poly1305_crate_does() {
        let key: [u8; 32] = bytes(1, 32).try_into().unwrap();
        let ours = Aead::new(key);
        let theirs = XChaCha20Poly1305::new(&key.into());
        let lens = (0..=200).chain([255, 256, 257, 1 << 12, (1 << 16) + 3]);
        for (i, len) in lens.enumerate() {
            // Associated data of every length mod 64, so each top-up is met.
            let aad = bytes(i as u64 + 2, (i * 7) % 130);
            let nonce: [u8; 24] = bytes(i as u64 + 3, 24).try_into().unwrap();
            let plain = bytes(i as u64 + 4, len);
            let mut a = plain.clone();
            let tag = ours.seal(&nonce, &aad, &mut a);
            let mut b = plain.clone();
            let expected = theirs
                .encrypt_inout_detached(&XNonce::from(nonce), &aad, (&mut b[..]).into())
                .unwrap();
            assert_eq!((&a, &tag[..]), (&b, &expected[..]), "len {len}");
            ours.open(&nonce, &aad, &mut a, &tag).unwrap();
            assert_eq!(a, plain, "len {len}");
        }
    }

    #[test]
    fn the_drafts_test_vector() {
        // draft-irtf-cfrg-xchacha-03, A.3.1.
        let key: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
        let nonce: [u8; 24] = std::array::from_fn(|i| 0x40 + i as u8);
        let aad = crate::hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let mut buf = plain.to_vec();
        let tag = Aead::new(key).seal(&nonce, &aad, &mut buf);
        assert_eq!(
            crate::hex::encode(&buf),
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb\
             731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452\
             2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9\
             21f9664c97637da9768812f615c68b13b52e"
        );
        assert_eq!(crate::hex::encode(&tag), "c0875924c1c7987947deafd8780acf49");
    }

    #[test]
    fn a_changed_byte_anywhere_fails_to_open_and_leaves_the_bytes() {
        let aead = Aead::new([9; 32]);
        let (nonce, aad) = ([5u8; 24], b"CHUT\x01\x01context".to_vec());
        let mut sealed = bytes(7, 100);
        let tag = aead.seal(&nonce, &aad, &mut sealed);
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            let kept = bad.clone();
            assert!(aead.open(&nonce, &aad, &mut bad, &tag).is_err());
            assert_eq!(bad, kept);
        }
        let mut bad_tag = tag;
        bad_tag[15] ^= 0x80;
        assert!(
            aead.open(&nonce, &aad, &mut sealed.clone(), &bad_tag)
                .is_err()
        );
        let mut other_nonce = nonce;
        other_nonce[23] ^= 1;
        assert!(
            aead.open(&other_nonce, &aad, &mut sealed.clone(), &tag)
                .is_err()
        );
        assert!(
            aead.open(&nonce, b"CHUT", &mut sealed.clone(), &tag)
                .is_err()
        );
        assert!(
            Aead::new([8; 32])
                .open(&nonce, &aad, &mut sealed.clone(), &tag)
                .is_err()
        );
        aead.open(&nonce, &aad, &mut sealed, &tag).unwrap();
        assert_eq!(sealed, bytes(7, 100));
    }
}
