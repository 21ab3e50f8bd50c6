//! Keys and sealed objects.
//!
//! The master key is the SHA-256 of the key file's bytes, as in the Parachute
//! prototype, so any file of random bytes (a LUKS key file, say) can serve. The
//! master key itself never encrypts anything: every purpose gets its own 32-byte
//! subkey, `HKDF-SHA256(salt = "chute-v1", ikm = master, info = <label>)`, with the
//! labels below. The byte layout of a sealed object is documented, with the rest of
//! the formats, in [`crate::format`].
//!
//! Invariants kept here:
//! - every seal draws a fresh 24-byte random nonce (XChaCha20-Poly1305 makes random
//!   nonces safe); only the crate's own test vectors can inject one;
//! - the associated data is the object's 6-byte header followed by a caller-given
//!   context that names what the object is and where it belongs, so a swapped,
//!   replayed or relabelled object fails to open;
//! - opening reports one opaque error for any damage or wrong key;
//! - a chunk's id and its ciphertext come from one private copy of its plaintext
//!   ([`ChunkBuf`]), never from two reads of a source that may change in between;
//!   opening a chunk ([`Keys::open_chunk`]) recomputes the id from the decrypted
//!   bytes, so a chunk whose content is not the one its id names is never taken as
//!   whole (an older build could seal one from a file rewritten while it was read).

mod aead;

use crate::compress::Mode;
use aead::Aead;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

/// Magic bytes at the head of every sealed object.
pub const MAGIC: [u8; 4] = *b"CHUT";
/// The sealed-object format this build writes and reads.
pub const VERSION: u8 = 1;
/// Header length: magic, version, kind.
pub const HEADER_LEN: usize = 6;
/// XChaCha20 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// HKDF salt: names the scheme, so keys never collide with another use of the file.
const HKDF_SALT: &[u8] = b"chute-v1";
/// HKDF labels, one per purpose.
const LABEL_CHUNK_SEAL: &[u8] = b"chute chunk seal";
const LABEL_CHUNK_ID: &[u8] = b"chute chunk id";
const LABEL_META_SEAL: &[u8] = b"chute manifest seal";
const LABEL_MOUNT_ID: &[u8] = b"chute mount id";
const LABEL_GEAR: &[u8] = b"chute chunker gear";
const LABEL_AUTH: &[u8] = b"chute request auth";
const LABEL_CHALLENGE: &[u8] = b"chute storage challenge";
const LABEL_NODE_ID: &[u8] = b"chute manifest node id";
const LABEL_CUT: &[u8] = b"chute manifest cut";

/// What a sealed object is; the byte sits in the header and so in the AAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A chunk of file content; context: the chunk id.
    Chunk = 1,
    /// A segment of a snapshot manifest; context: snapshot path, index, last flag.
    Manifest = 2,
    /// The snapshot header kept in index.json; context: snapshot path.
    Header = 3,
    /// A pack's header kept in its index.json; context: pack path.
    PackHeader = 4,
    /// A segment of a pack's chunk map; context: pack path, index, last flag.
    PackMap = 5,
    /// A node of a version 3 manifest (segment or table); context: its node id,
    /// `HMAC-SHA256(node-id key, plaintext)`.
    Node = 6,
    /// A compressed chunk ([`crate::compress`]): its plaintext is a codec byte and
    /// the compressed content; context: the chunk id of the *uncompressed* content.
    /// A kind of its own, so a store cannot make a reader take one for the other.
    Packed = 7,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Chunk),
            2 => Some(Kind::Manifest),
            3 => Some(Kind::Header),
            4 => Some(Kind::PackHeader),
            5 => Some(Kind::PackMap),
            6 => Some(Kind::Node),
            7 => Some(Kind::Packed),
            _ => None,
        }
    }
}

/// Why a sealed object did not open.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Damaged, truncated, swapped, or sealed under another key: deliberately one case.
    Corrupt,
    /// A format version this build does not read.
    NewerVersion(u8),
    /// A chunk that authenticates, but whose plaintext is not the content its id
    /// names: sealed by the key's owner (an older chute) from a source that changed
    /// between computing the id and sealing.
    WrongContent,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Corrupt => f.write_str("corrupt or wrong key"),
            OpenError::NewerVersion(v) => write!(
                f,
                "written by a newer chute (format {v}, this build reads {VERSION})"
            ),
            OpenError::WrongContent => f.write_str(
                "its bytes are not the content its id names (sealed while its file changed)",
            ),
        }
    }
}

impl std::error::Error for OpenError {}

/// A 32-byte chunk identity: HMAC-SHA256 of the plaintext under the id subkey.
pub type ChunkId = [u8; 32];

/// All subkeys of one master key. Cheap to share between threads by reference.
#[derive(Clone)]
pub struct Keys {
    chunk_seal: Aead,
    meta_seal: Aead,
    chunk_id: Hmac<Sha256>,
    mount_id: Hmac<Sha256>,
    gear: [u8; 32],
    auth: [u8; 32],
    challenge: Hmac<Sha256>,
    node_id: Hmac<Sha256>,
    cut: Hmac<Sha256>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// Errors reading or creating a key file.
#[derive(Debug)]
pub enum KeyError {
    Missing(std::path::PathBuf),
    Read(std::path::PathBuf, std::io::Error),
    Empty(std::path::PathBuf),
    Exists(std::path::PathBuf),
    Create(std::path::PathBuf, std::io::Error),
    Random,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Missing(p) => write!(f, "no key file at {}", p.display()),
            KeyError::Read(p, e) => write!(f, "cannot read key file {}: {e}", p.display()),
            KeyError::Empty(p) => write!(f, "key file {} is empty", p.display()),
            KeyError::Exists(p) => write!(f, "a key already exists at {}", p.display()),
            KeyError::Create(p, e) => write!(f, "cannot create key file {}: {e}", p.display()),
            KeyError::Random => f.write_str("the system random generator failed"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A storage challenge's nonce: the one-time Poly1305 key of its answer.
pub type ChallengeNonce = [u8; 32];

/// The answer to a storage challenge, computed as the window's bytes stream by:
/// Poly1305 with the nonce as its one-time key over the bytes (unpadded, as in
/// RFC 8439). Keyless on the store's side: the nonce is all it needs, and it
/// cannot answer without every byte.
pub struct ChallengeMac {
    mac: poly1305::Poly1305,
    tail: Vec<u8>,
}

impl ChallengeMac {
    pub fn new(nonce: &ChallengeNonce) -> ChallengeMac {
        use poly1305::universal_hash::KeyInit;
        ChallengeMac {
            mac: poly1305::Poly1305::new(nonce.into()),
            tail: Vec::with_capacity(16),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        use poly1305::universal_hash::UniversalHash;
        if !self.tail.is_empty() {
            let take = (16 - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() < 16 {
                return;
            }
            self.mac.update_padded(&self.tail);
            self.tail.clear();
        }
        let whole = data.len() / 16 * 16;
        // Whole blocks only: update_padded pads nothing then.
        self.mac.update_padded(&data[..whole]);
        self.tail.extend_from_slice(&data[whole..]);
    }

    pub fn finalize(self) -> [u8; 16] {
        self.mac.compute_unpadded(&self.tail).into()
    }
}

fn subkey(hk: &Hkdf<Sha256>, label: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    hk.expand(label, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

impl Keys {
    /// Derives every subkey from the key file's bytes.
    pub fn from_key_bytes(key_file: &[u8]) -> Keys {
        let master: [u8; 32] = Sha256::digest(key_file).into();
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &master);
        let aead = |label| Aead::new(subkey(&hk, label));
        let mac = |label| {
            <Hmac<Sha256> as KeyInit>::new_from_slice(&subkey(&hk, label))
                .expect("HMAC takes any key length")
        };
        Keys {
            chunk_seal: aead(LABEL_CHUNK_SEAL),
            meta_seal: aead(LABEL_META_SEAL),
            chunk_id: mac(LABEL_CHUNK_ID),
            mount_id: mac(LABEL_MOUNT_ID),
            gear: subkey(&hk, LABEL_GEAR),
            auth: subkey(&hk, LABEL_AUTH),
            challenge: mac(LABEL_CHALLENGE),
            node_id: mac(LABEL_NODE_ID),
            cut: mac(LABEL_CUT),
        }
    }

    /// Reads a key file and derives the keys.
    pub fn load(path: &Path) -> Result<Keys, KeyError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing(path.to_path_buf()));
            }
            Err(e) => return Err(KeyError::Read(path.to_path_buf(), e)),
        };
        if bytes.is_empty() {
            return Err(KeyError::Empty(path.to_path_buf()));
        }
        Ok(Keys::from_key_bytes(&bytes))
    }

    /// The keyed identity of a chunk's plaintext.
    pub fn chunk_id(&self, plain: &[u8]) -> ChunkId {
        let mut mac = self.chunk_id.clone();
        mac.update(plain);
        mac.finalize().into_bytes().into()
    }

    /// The opaque id of a set of backed-up roots (the store's `<mount>`).
    pub fn mount_id(&self, roots: &[Vec<u8>]) -> String {
        let mut mac = self.mount_id.clone();
        for r in roots {
            mac.update(&(r.len() as u64).to_be_bytes());
            mac.update(r);
        }
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        crate::hex::encode(&tag[..16])
    }

    /// Seed for the chunker's gear table.
    pub fn gear_seed(&self) -> &[u8; 32] {
        &self.gear
    }

    /// Request-signing key: the only key material a server ever holds for a node.
    pub fn auth_key(&self) -> &[u8; 32] {
        &self.auth
    }

    /// The nonce of storage challenge `j` of window `w` of the blob at `blob`
    /// (see [`crate::format`]'s "Storage challenges"): secret until spent.
    pub fn challenge_nonce(&self, blob: &str, w: u32, j: u8) -> ChallengeNonce {
        let mut mac = self.challenge.clone();
        mac.update(blob.as_bytes());
        mac.update(&w.to_be_bytes());
        mac.update(&[j]);
        mac.finalize().into_bytes().into()
    }

    /// The keyed identity of a version 3 manifest node's plaintext (its seal's
    /// context, and how unchanged nodes are found again across snapshots).
    pub fn node_id(&self, plain: &[u8]) -> ChunkId {
        let mut mac = self.node_id.clone();
        mac.update(plain);
        mac.finalize().into_bytes().into()
    }

    /// The content-defined cut hash of a version 3 manifest: the first 4 bytes
    /// (big-endian) of `HMAC-SHA256(cut key, bytes)`. Keyed, so cut points say
    /// nothing about the paths to whoever sees node sizes.
    pub fn cut_hash(&self, bytes: &[u8]) -> u32 {
        let mut mac = self.cut.clone();
        mac.update(bytes);
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]])
    }

    /// Seals a manifest node in its own buffer: `buf` holds [`ChunkBuf::PREFIX`]
    /// bytes of room (their contents do not matter), then the plaintext; it ends
    /// as the sealed object. Returns the id. The writer needs no second buffer
    /// for the sealed copy.
    pub fn seal_node_in_place(&self, buf: &mut Vec<u8>) -> ChunkId {
        assert!(buf.len() >= ChunkBuf::PREFIX, "no room for the header");
        let id = self.node_id(&buf[ChunkBuf::PREFIX..]);
        self.seal_in_place(Kind::Node, &id, &fresh_nonce(), buf, 0);
        id
    }

    /// Opens a sealed manifest node in its own buffer and checks that its
    /// plaintext hashes to `id` (as [`Keys::open_chunk`]).
    pub fn open_node<'a>(
        &self,
        id: &ChunkId,
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], OpenError> {
        let plain = self.open_in_place(Kind::Node, id, sealed)?;
        if self.node_id(plain) != *id {
            return Err(OpenError::WrongContent);
        }
        Ok(plain)
    }

    fn aead(&self, kind: Kind) -> &Aead {
        match kind {
            Kind::Chunk | Kind::Packed => &self.chunk_seal,
            Kind::Manifest | Kind::Header | Kind::PackHeader | Kind::PackMap | Kind::Node => {
                &self.meta_seal
            }
        }
    }

    /// Seals `plain` as an object of `kind`, appending it to `out`.
    pub fn seal_into(&self, kind: Kind, context: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        self.seal_with_nonce(kind, context, plain, &fresh_nonce(), out);
    }

    /// Seals `plain`, returning the sealed object.
    pub fn seal(&self, kind: Kind, context: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        self.seal_into(kind, context, plain, &mut out);
        out
    }

    pub(crate) fn seal_with_nonce(
        &self,
        kind: Kind,
        context: &[u8],
        plain: &[u8],
        nonce: &[u8; NONCE_LEN],
        out: &mut Vec<u8>,
    ) {
        let start = out.len();
        out.reserve(plain.len() + OVERHEAD);
        out.resize(start + HEADER_LEN + NONCE_LEN, 0);
        out.extend_from_slice(plain);
        self.seal_in_place(kind, context, nonce, out, start);
    }

    /// Seals the plaintext that follows `HEADER_LEN + NONCE_LEN` reserved bytes at
    /// `out[start..]`: writes the header and nonce there, encrypts the rest in place
    /// and appends the tag.
    fn seal_in_place(
        &self,
        kind: Kind,
        context: &[u8],
        nonce: &[u8; NONCE_LEN],
        out: &mut Vec<u8>,
        start: usize,
    ) {
        let body = start + HEADER_LEN + NONCE_LEN;
        out[start..start + 4].copy_from_slice(&MAGIC);
        out[start + 4] = VERSION;
        out[start + 5] = kind as u8;
        out[start + HEADER_LEN..body].copy_from_slice(nonce);
        let aad = aad(&out[start..start + HEADER_LEN], context);
        let tag = self.aead(kind).seal(nonce, &aad, &mut out[body..]);
        out.extend_from_slice(&tag);
    }

    /// The id of the chunk in `c`, computed from its copy.
    pub fn chunk_buf_id(&self, c: &mut ChunkBuf) -> ChunkId {
        match c.state {
            ChunkState::Plain(None) => {
                let id = self.chunk_id(&c.buf[HEADER_LEN + NONCE_LEN..]);
                c.state = ChunkState::Plain(Some(id));
                id
            }
            ChunkState::Plain(Some(id)) | ChunkState::Sealed(id, _) => id,
        }
    }

    /// Seals the chunk in `c` in place under its id (computed from the same copy
    /// if it was not yet) and returns the sealed object. With [`Mode::Auto`] the
    /// content is compressed first (through `scratch`, whose allocation is
    /// reused) and sealed as [`Kind::Packed`] when that saves an eighth; the
    /// second value is then its uncompressed length, else 0 (as
    /// [`ChunkBuf::raw_len`]).
    pub fn seal_chunk<'a>(
        &self,
        c: &'a mut ChunkBuf,
        mode: Mode,
        scratch: &mut Vec<u8>,
    ) -> (&'a [u8], u32) {
        let id = self.chunk_buf_id(c);
        if let ChunkState::Plain(_) = c.state {
            let body = HEADER_LEN + NONCE_LEN;
            let (mut kind, mut raw) = (Kind::Chunk, 0);
            if mode == Mode::Auto && crate::compress::pack(&c.buf[body..], scratch) {
                // The id above is over the uncompressed copy, taken before.
                raw = (c.buf.len() - body) as u32;
                kind = Kind::Packed;
                c.buf.truncate(body);
                c.buf.extend_from_slice(scratch);
            }
            self.seal_in_place(kind, &id, &fresh_nonce(), &mut c.buf, 0);
            c.state = ChunkState::Sealed(id, raw);
        }
        (&c.buf, c.raw_len())
    }

    /// Opens a sealed chunk in its own buffer and checks that its plaintext is the
    /// content `id` names; returns the plaintext, within `sealed` for a chunk
    /// stored as it is (`raw` 0), else decompressed into `out` (reused), which
    /// must come to exactly `raw` bytes (the manifest's length) or the chunk is
    /// corrupt. The kind must match: `raw` 0 opens only [`Kind::Chunk`], any
    /// other only [`Kind::Packed`].
    pub fn open_chunk<'a>(
        &self,
        id: &ChunkId,
        raw: u32,
        sealed: &'a mut [u8],
        out: &'a mut Vec<u8>,
    ) -> Result<&'a mut [u8], OpenError> {
        let plain = if raw == 0 {
            self.open_in_place(Kind::Chunk, id, sealed)?
        } else {
            let packed = self.open_in_place(Kind::Packed, id, sealed)?;
            crate::compress::unpack(packed, raw as usize, out).map_err(|_| OpenError::Corrupt)?;
            &mut out[..]
        };
        if self.chunk_id(plain) != *id {
            return Err(OpenError::WrongContent);
        }
        Ok(plain)
    }

    /// Opens a sealed object of `kind`, returning its plaintext.
    pub fn open(&self, kind: Kind, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buf = sealed.to_vec();
        let len = self.open_in_place(kind, context, &mut buf)?.len();
        buf.drain(..HEADER_LEN + NONCE_LEN);
        buf.truncate(len);
        Ok(buf)
    }

    /// Opens a sealed object in its own buffer; returns the plaintext slice within it.
    pub fn open_in_place<'a>(
        &self,
        kind: Kind,
        context: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], OpenError> {
        if sealed.len() >= 5 && sealed[..4] == MAGIC && sealed[4] > VERSION {
            return Err(OpenError::NewerVersion(sealed[4]));
        }
        if sealed.len() < OVERHEAD
            || sealed[..4] != MAGIC
            || Kind::from_byte(sealed[5]) != Some(kind)
        {
            return Err(OpenError::Corrupt);
        }
        let aad = aad(&sealed[..HEADER_LEN], context);
        let (rest, tag) = sealed.split_at_mut(sealed.len() - TAG_LEN);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| OpenError::Corrupt)?;
        let (head, body) = rest.split_at_mut(HEADER_LEN + NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = head[HEADER_LEN..]
            .try_into()
            .map_err(|_| OpenError::Corrupt)?;
        self.aead(kind)
            .open(nonce, &aad, body, tag)
            .map_err(|_| OpenError::Corrupt)?;
        Ok(body)
    }
}

fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

/// Creates a new random 32-byte key file (mode 0600), never replacing one.
pub fn create_key_file(path: &Path) -> Result<(), KeyError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|_| KeyError::Random)?;
    write_key_file(path, &key)
}

/// Writes `key` as a new key file at `path`, readable by its owner only, and
/// syncs it; never replaces a file that exists.
pub fn write_key_file(path: &Path, key: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| KeyError::Create(path.to_path_buf(), e))?;
    }
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(KeyError::Exists(path.to_path_buf()));
        }
        Err(e) => return Err(KeyError::Create(path.to_path_buf(), e)),
    };
    f.write_all(key)
        .and_then(|_| f.sync_all())
        .map_err(|e| KeyError::Create(path.to_path_buf(), e))?;
    crate::fsutil::sync_parent(path).map_err(|e| KeyError::Create(path.to_path_buf(), e))?;
    Ok(())
}

/// A random nonce for one seal. A failing system RNG must never degrade into a
/// repeated nonce: it stops the process instead.
fn fresh_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the system random generator failed");
    nonce
}

/// One chunk on its way to a store: its plaintext copied once out of its source,
/// with room to be sealed in place. The id ([`Keys::chunk_buf_id`]) and the
/// ciphertext ([`Keys::seal_chunk`]) are both computed from this copy and nothing
/// else, so a source rewritten meanwhile (a mapped file another process writes)
/// can never give a chunk the id of one content and the seal of another.
pub struct ChunkBuf {
    /// `HEADER_LEN + NONCE_LEN` reserved bytes, then the plaintext; once sealed,
    /// the whole sealed object.
    buf: Vec<u8>,
    state: ChunkState,
}

#[derive(Clone, Copy)]
enum ChunkState {
    Plain(Option<ChunkId>),
    /// Sealed, with its uncompressed length if it was compressed (else 0).
    Sealed(ChunkId, u32),
}

/// Empties `buf` and makes its allocation exactly `len` bytes: grown if short,
/// cut if longer. A buffer reused from chunk to chunk otherwise keeps the room
/// (and, its pages once written, the memory) of the largest chunk it ever held,
/// so a long run's few buffers creep toward their maximum: the sink's peak RSS
/// rose over the first ~15 s of a 1,000,000-file run, and with it the run's
/// length. Buffers this size come from `mmap` (see `sys::fix_mmap_threshold`),
/// so the cut is an `mremap` that returns the tail's pages, not a copy.
pub fn fit(buf: &mut Vec<u8>, len: usize) {
    buf.clear();
    buf.shrink_to(len);
    buf.reserve_exact(len);
}

impl ChunkBuf {
    /// Copies `plain` into `buf` (whose allocation is reused). Exactly the room
    /// needed: `reserve` would double a reused buffer a few bytes short, and the
    /// sink's few chunk buffers then held twice their chunks' bytes. A reused
    /// buffer larger than that is first cut to it ([`fit`]).
    pub fn copy_of(plain: &[u8], mut buf: Vec<u8>) -> ChunkBuf {
        fit(&mut buf, plain.len() + OVERHEAD);
        buf.resize(HEADER_LEN + NONCE_LEN, 0);
        buf.extend_from_slice(plain);
        ChunkBuf {
            buf,
            state: ChunkState::Plain(None),
        }
    }

    /// The room [`ChunkBuf::prefixed`] wants before the plaintext.
    pub const PREFIX: usize = HEADER_LEN + NONCE_LEN;

    /// Takes `buf`, whose first [`ChunkBuf::PREFIX`] bytes are room for the
    /// header and nonce (their contents do not matter) and the rest the
    /// plaintext, as a chunk without copying it.
    pub fn prefixed(mut buf: Vec<u8>) -> ChunkBuf {
        assert!(buf.len() >= Self::PREFIX, "no room for the header");
        // Sealing in place appends the tag.
        buf.reserve_exact(TAG_LEN);
        ChunkBuf {
            buf,
            state: ChunkState::Plain(None),
        }
    }

    /// Plaintext bytes in the chunk.
    pub fn plain_len(&self) -> usize {
        match self.state {
            ChunkState::Plain(_) => self.buf.len() - HEADER_LEN - NONCE_LEN,
            ChunkState::Sealed(_, 0) => self.buf.len() - OVERHEAD,
            ChunkState::Sealed(_, raw) => raw as usize,
        }
    }

    /// Once sealed: the uncompressed length if the chunk was stored compressed,
    /// else 0 (as [`crate::format::ChunkRef::raw`]).
    pub fn raw_len(&self) -> u32 {
        match self.state {
            ChunkState::Sealed(_, raw) => raw,
            ChunkState::Plain(_) => 0,
        }
    }

    /// The allocation back, for the next chunk.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// SHA-256 helper used across the crate.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Incremental SHA-256, re-exported so callers need not name the crate.
pub type Sha256State = Sha256;

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_key_bytes(b"test key file")
    }

    #[test]
    fn seal_open_round_trip() {
        let k = keys();
        let s = k.seal(Kind::Chunk, b"ctx", b"hello");
        assert_eq!(s.len(), 5 + OVERHEAD);
        assert_eq!(k.open(Kind::Chunk, b"ctx", &s).unwrap(), b"hello");
    }

    #[test]
    fn nonces_differ_between_seals() {
        let k = keys();
        let a = k.seal(Kind::Chunk, b"", b"same");
        let b = k.seal(Kind::Chunk, b"", b"same");
        assert_ne!(
            a[HEADER_LEN..HEADER_LEN + NONCE_LEN],
            b[HEADER_LEN..HEADER_LEN + NONCE_LEN]
        );
    }

    #[test]
    fn context_kind_and_key_are_bound() {
        let k = keys();
        let s = k.seal(Kind::Manifest, b"a", b"x");
        assert_eq!(k.open(Kind::Manifest, b"b", &s), Err(OpenError::Corrupt));
        assert_eq!(k.open(Kind::Header, b"a", &s), Err(OpenError::Corrupt));
        let other = Keys::from_key_bytes(b"other");
        assert_eq!(
            other.open(Kind::Manifest, b"a", &s),
            Err(OpenError::Corrupt)
        );
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let k = keys();
        let s = k.seal(Kind::Chunk, b"c", b"some plaintext");
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x01;
            assert!(k.open(Kind::Chunk, b"c", &t).is_err(), "byte {i}");
        }
        assert!(k.open(Kind::Chunk, b"c", &s[..s.len() - 1]).is_err());
    }

    #[test]
    fn newer_version_is_named() {
        let k = keys();
        let mut s = k.seal(Kind::Chunk, b"", b"x");
        s[4] = 9;
        assert_eq!(
            k.open(Kind::Chunk, b"", &s),
            Err(OpenError::NewerVersion(9))
        );
    }

    #[test]
    fn a_chunk_is_sealed_from_its_one_copy_and_opens_only_as_its_id_says() {
        let k = keys();
        let mut source = b"version A of the bytes".to_vec();
        let mut c = ChunkBuf::copy_of(&source, Vec::new());
        let id = k.chunk_buf_id(&mut c);
        // The source changes between the id and the seal: the copy does not.
        source.copy_from_slice(b"version B of the bytes");
        let mut sealed = k.seal_chunk(&mut c, Mode::Off, &mut Vec::new()).0.to_vec();
        assert_eq!(k.chunk_buf_id(&mut c), id);
        assert_eq!(c.plain_len(), source.len());
        assert_eq!(id, k.chunk_id(b"version A of the bytes"));
        assert_eq!(
            k.open_chunk(&id, 0, &mut sealed, &mut Vec::new()).unwrap(),
            b"version A of the bytes"
        );
        // What an older build could write: A's id over B's bytes. It authenticates,
        // and is still refused.
        let mut mixed = k.seal(Kind::Chunk, &id, &source);
        assert!(
            k.open_in_place(Kind::Chunk, &id, &mut mixed.clone())
                .is_ok()
        );
        assert_eq!(
            k.open_chunk(&id, 0, &mut mixed, &mut Vec::new()),
            Err(OpenError::WrongContent)
        );
    }

    #[test]
    fn a_compressed_chunk_opens_only_at_its_length_and_kind() {
        let k = keys();
        let plain: Vec<u8> = b"log line 42\n"
            .iter()
            .cycle()
            .take(100_000)
            .copied()
            .collect();
        let mut c = ChunkBuf::copy_of(&plain, Vec::new());
        let mut scratch = Vec::new();
        let sealed = k.seal_chunk(&mut c, Mode::Auto, &mut scratch).0.to_vec();
        let id = k.chunk_id(&plain);
        assert_eq!(k.chunk_buf_id(&mut c), id);
        assert_eq!((c.raw_len(), c.plain_len()), (100_000, 100_000));
        assert_eq!(sealed[5], Kind::Packed as u8);
        assert!(sealed.len() < 100_000 / 8);
        let mut out = Vec::new();
        let mut copy = sealed.clone();
        let opened = k.open_chunk(&id, 100_000, &mut copy, &mut out);
        assert_eq!(opened.map(|p| p.to_vec()), Ok(plain.clone()));
        // The manifest's length disagrees, or says "stored as it is": corrupt.
        for raw in [0, 99_999, 100_001] {
            assert_eq!(
                k.open_chunk(&id, raw, &mut sealed.clone(), &mut out),
                Err(OpenError::Corrupt),
                "{raw}"
            );
        }
        // A chunk stored as it is, named compressed by a manifest: corrupt.
        let mut c = ChunkBuf::copy_of(&plain, Vec::new());
        let mut stored = k.seal_chunk(&mut c, Mode::Off, &mut scratch).0.to_vec();
        assert_eq!((stored[5], c.raw_len()), (Kind::Chunk as u8, 0));
        assert_eq!(
            k.open_chunk(&id, 100_000, &mut stored, &mut out),
            Err(OpenError::Corrupt)
        );
        // Incompressible content is sealed as it is even in auto mode.
        let mut noise = vec![0u8; 4096];
        getrandom::fill(&mut noise).expect("rng");
        let mut c = ChunkBuf::copy_of(&noise, Vec::new());
        let n = k.seal_chunk(&mut c, Mode::Auto, &mut scratch).0.len();
        assert_eq!((n, c.raw_len()), (4096 + OVERHEAD, 0));
    }

    // A buffer handed over with room for the header seals and opens as a copy
    // does, whatever the room held, in both modes.
    #[test]
    fn a_prefixed_buffer_is_the_chunk_of_what_follows_its_room() {
        let k = keys();
        let plain: Vec<u8> = (0..50_000u32).map(|i| (i % 7) as u8).collect();
        let mut scratch = Vec::new();
        for mode in [Mode::Auto, Mode::Off] {
            let mut buf = vec![0xAA; ChunkBuf::PREFIX];
            buf.extend_from_slice(&plain);
            let mut c = ChunkBuf::prefixed(buf);
            assert_eq!(c.plain_len(), plain.len());
            let (sealed, raw) = k.seal_chunk(&mut c, mode, &mut scratch);
            let (mut sealed, raw) = (sealed.to_vec(), raw);
            let id = k.chunk_id(&plain);
            assert_eq!(k.chunk_buf_id(&mut c), id);
            let mut out = Vec::new();
            let opened = k.open_chunk(&id, raw, &mut sealed, &mut out);
            assert_eq!(opened.map(|p| p.to_vec()), Ok(plain.clone()), "{mode:?}");
        }
    }

    #[test]
    fn subkeys_are_distinct_and_not_the_master() {
        let k = keys();
        let master = sha256(b"test key file");
        assert_ne!(k.gear, k.auth);
        assert_ne!(k.gear, master);
        assert_ne!(k.auth, master);
    }

    /// The streaming challenge MAC cuts its input anywhere and still gives the
    /// one-shot Poly1305 tag of the whole (RFC 8439's unpadded message).
    #[test]
    fn challenge_mac_streams_in_any_pieces() {
        use poly1305::universal_hash::KeyInit as _;
        let nonce: ChallengeNonce = core::array::from_fn(|i| i as u8 ^ 0x5a);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in [0, 1, 15, 16, 17, 999, 1000] {
            let whole: [u8; 16] = poly1305::Poly1305::new(&nonce.into())
                .compute_unpadded(&data[..len])
                .into();
            for cut in [1, 3, 15, 16, 17, 64, 1000] {
                let mut m = ChallengeMac::new(&nonce);
                for piece in data[..len].chunks(cut) {
                    m.update(piece);
                }
                assert_eq!(m.finalize(), whole, "{len} bytes in pieces of {cut}");
            }
        }
    }
}
