//! Test vectors: the byte contract of [`crate::format`] pinned as files under
//! `tests/vectors/`, so that changing any stored byte fails a test by name.
//!
//! `all_vectors` walks the folder and checks every file against the code *and*
//! against a small reference written from the `//!` docs alone (subkeys from the
//! HKDF labels, AAD = header || context, the chunk-id HMAC, the gear table), so the
//! docs and the code cannot drift apart silently. `regenerate` rewrites the files
//! from the code with fixed nonces:
//! `cargo test --lib vectors::regenerate -- --ignored`. A diff in tests/vectors is a
//! format change: bump the version or revert.
//!
//! # Vector files
//! UTF-8 text, one `name = value` field per line; blank lines and lines starting
//! with `#` are comments. Every file has a `kind`; a field that kind does not know,
//! a missing field or a repeated field fails the test. Byte strings are lowercase
//! hex (possibly empty), numbers are decimal, lists are comma-separated.
//!
//! `kind = chunk | manifest | header | pack_header | pack_map | node`: one sealed
//! object.
//! - `key`: key-file bytes of the opener; `context`: the context it passes (the
//!   AAD after the 6-byte object header); `plaintext`; `sealed`: the stored bytes.
//! - `nonce`: the 24 bytes injected when sealing.
//! - `expect`: `ok`, `corrupt`, `newer:<N>`, (chunks and nodes) `wrong_content`
//!   or (nodes) `malformed`: what opening `sealed` must give. `wrong_content`
//!   opens (the AEAD accepts it) but fails the check that `HMAC-SHA256(chunk-id
//!   key, plaintext)` is the `chunk_id` asked for (for a node: the node-id key and
//!   `node_id`): what a restore or verify must refuse as damage. `malformed`
//!   opens and hashes to its id but does not decode.
//! - Only in negative vectors, naming the one fault (at least one is required):
//!   `seal_key` / `seal_context` when the sealer's differ from the opener's, and
//!   `damage` done to the object after sealing: `xor:<offset>:<byte>`,
//!   `set:<offset>:<byte>` or `truncate:<length>`; for a chunk, `id_of`: the bytes
//!   whose id the sealer used as context instead of the plaintext's (an older
//!   chute, whose source changed between the id and the seal); for a node,
//!   `id_of` likewise and `malformed`: words of the decoding error it must give.
//! - chunk: `chunk_id`, the id the opener asks for (must equal `context`). The seal
//!   context is always `HMAC-SHA256(chunk-id key of the sealer, id_of or plaintext)`.
//! - manifest: `blob`, `segment`, `last` (0 or 1); `context` must be
//!   `blob || u32 segment || u8 last`. An `ok` manifest vector is a whole manifest
//!   in one segment: version 1 (`manifest_ok`, read only: no chute writes it any
//!   more) also goes through `format::open_manifest`, version 2 (`manifest_v2_ok`)
//!   through `format::read_manifest` with a one-segment table of 4 entries.
//! - header: `blob`; `context` must be its bytes. Also opened by `format::open_header`.
//!   `header_ok` is the version written (3, with the segment table of
//!   `manifest_v2_ok`); `header_v2_ok` and `header_v1_ok` are read-only cases
//!   describing `manifest_ok`.
//! - pack_header: as header, for a pack's blob path; `format::open_header` must give
//!   a header with `pack` set.
//! - pack_map: as manifest (`blob`, `segment`, `last`); an `ok` one is a whole pack
//!   map in one segment and also goes through `format::decode_pack_map`.
//! - node (version 3 manifest node): `node_id` (must equal `context`; the seal
//!   context is `HMAC-SHA256(node-id key of the sealer, id_of or plaintext)`),
//!   `node_type` (1 segment, 2 table) and `entries` (the count its parent gives).
//!   Opened with `Keys::open_node`, then decoded: `manifest_v3_ok` (a segment:
//!   the entries of `manifest_ok` plus a slice of a shared chunk with its tag) and
//!   `manifest_v3_table_ok` (the table listing it) must decode to the sample and
//!   the sample must encode (through `format::ManifestWriter`) to `plaintext`:
//!   checked both ways. `header_v4_ok` is a header whose root list names that
//!   table; `header_v5_ok` the same with two tags (version 5), `header_v6_ok`
//!   with none (version 6); `manifest_v6_ok` a segment that only a version 6
//!   header may name (a FIFO, hard-linked files; no table vector). Negative: `node_bad_id`, `node_bad_size` (size is not the sum of the
//!   takes), `node_bad_index` (a chunk row out of range).
//!
//! Re-sealing `plaintext` under the seal key and context with `nonce`, then applying
//! `damage`, must reproduce `sealed` exactly; so each negative vector is a genuine
//! object with exactly its named fault, and fails for that reason.
//!
//! `kind = packed_chunk`: a compressed chunk (kind 7), fields as a chunk's, plus
//! `content`, the uncompressed bytes: `plaintext` is the codec byte 1 and the
//! LZ4 block of `content` that `compress::pack` makes (checked both ways, and
//! decompressed again), and `chunk_id` (= `context`) is the chunk id of
//! `content`. Opened with `Keys::open_chunk` at the length `content` has, or at
//! `wrong_raw` (a fault: a manifest naming another uncompressed length, which
//! must give `corrupt`). Faults: `damage`, `wrong_raw`.
//!
//! `kind = keys`: `key`, `master` (SHA-256 of the key file), one
//! `subkey_<label>` per HKDF label (spaces after "chute " become `_`), `roots` and
//! their `mount_id`, a storage challenge, and `cut_hash` (decimal) of
//! `cut_input`: the first 4 bytes, big-endian, of `HMAC-SHA256(manifest cut key,
//! cut_input)`.
//!
//! `kind = chunker`: `key`, `gear_seed`, `gear_head` (the first 8 gear entries as
//! u64 in hex), a pseudo-random input (`input_seed`, `input_len`, and `input_head`,
//! its first 16 bytes: xorshift64 from `x = seed | 1`, per byte `x ^= x << 13;
//! x ^= x >> 7; x ^= x << 17`, emit the low byte of `x`) with its `cuts` (end
//! offset of each chunk), and `zeros_len` zero bytes with their `zeros_cuts`.

use crate::chunker::{self, Chunker};
use crate::crypto::{self, Keys, Kind, NONCE_LEN, OVERHEAD, OpenError};
use crate::format::{self, ChunkRef, Entry, EntryKind, Header, Index, Manifest};
use crate::hex;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The key file every vector opens with (32 bytes, as `chute init` writes).
const KEY: &[u8] = b"chute test vectors: not a secret";
/// The key that sealed `wrong_key`.
const OTHER_KEY: &[u8] = b"another key file, still no secret";

/// Files that must be present, so deleting one cannot make the walk pass.
const REQUIRED: &[&str] = &[
    "keys",
    "chunker",
    "chunk_ok",
    "packed_chunk_ok",
    "packed_bad_length",
    "packed_bad_tag",
    "manifest_ok",
    "manifest_v2_ok",
    "header_ok",
    "header_v2_ok",
    "header_v1_ok",
    "bad_tag",
    "truncated",
    "swapped_chunks",
    "unknown_version",
    "wrong_key",
    "manifest_reordered",
    "pack_header_ok",
    "pack_map_ok",
    "wrong_content",
    "manifest_v3_ok",
    "manifest_v3_table_ok",
    "header_v4_ok",
    "header_v5_ok",
    "manifest_v6_ok",
    "header_v6_ok",
    "node_bad_id",
    "node_bad_size",
    "node_bad_index",
];

/// The HKDF labels of the format docs, with the field name each gets in keys.txt.
const LABELS: &[(&str, &str)] = &[
    ("subkey_chunk_seal", "chute chunk seal"),
    ("subkey_chunk_id", "chute chunk id"),
    ("subkey_manifest_seal", "chute manifest seal"),
    ("subkey_mount_id", "chute mount id"),
    ("subkey_chunker_gear", "chute chunker gear"),
    ("subkey_request_auth", "chute request auth"),
    ("subkey_storage_challenge", "chute storage challenge"),
    ("subkey_manifest_node_id", "chute manifest node id"),
    ("subkey_manifest_cut", "chute manifest cut"),
];

/// The bytes whose manifest cut hash keys.txt pins.
const CUT_INPUT: &[u8] = b"/data/a.txt";

/// The cut hash per the docs: the first 4 bytes, big-endian, of the HMAC.
fn doc_cut_hash(key_file: &[u8], bytes: &[u8]) -> u32 {
    let h = doc_hmac(&doc_subkey(key_file, "chute manifest cut"), &[bytes]);
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// The storage challenge keys.txt pins: challenge 1 of window 2 of [`blob`], over
/// these bytes.
const CHALLENGE_DATA: &[u8] = b"the bytes of window 2, 37 bytes long.";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

// ---- the reference: written from the format docs, not from crypto.rs ----------

fn doc_subkey(key_file: &[u8], label: &str) -> [u8; 32] {
    let master = Sha256::digest(key_file);
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"chute-v1"), &master)
        .expand(label.as_bytes(), &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

fn doc_hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Storage challenge `j` of window `w` of `blob` over `data`, per the docs: the
/// nonce and the full answer (the Poly1305 tag, computed in one call).
fn doc_challenge(key_file: &[u8], blob: &str, w: u32, j: u8, data: &[u8]) -> ([u8; 32], [u8; 16]) {
    use poly1305::universal_hash::KeyInit as _;
    let key = doc_subkey(key_file, "chute storage challenge");
    let nonce = doc_hmac(&key, &[blob.as_bytes(), &w.to_be_bytes(), &[j]]);
    let tag = poly1305::Poly1305::new(&nonce.into()).compute_unpadded(data);
    (nonce, tag.into())
}

fn doc_mount_id(key_file: &[u8], roots: &[Vec<u8>]) -> String {
    let key = doc_subkey(key_file, "chute mount id");
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for r in roots {
        parts.push((r.len() as u64).to_be_bytes().to_vec());
        parts.push(r.clone());
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    hex::encode(&doc_hmac(&key, &refs)[..16])
}

/// `gear[i]`: u64 (little-endian) number `i % 4` of `SHA-256(seed || u32 BE i / 4)`.
fn doc_gear(seed: &[u8; 32], i: usize) -> u64 {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(((i / 4) as u32).to_be_bytes());
    let d = h.finalize();
    let at = (i % 4) * 8;
    u64::from_le_bytes(d[at..at + 8].try_into().expect("8 bytes"))
}

/// Opens a sealed object exactly as the layout table in `format` describes it.
fn doc_open(key_file: &[u8], kind: Kind, context: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 4 + 1 + 1 + 24 + 16
        || sealed[..4] != *b"CHUT"
        || sealed[4] != 1
        || sealed[5] != kind as u8
    {
        return None;
    }
    let label = match kind {
        Kind::Chunk | Kind::Packed => "chute chunk seal",
        Kind::Manifest | Kind::Header | Kind::PackHeader | Kind::PackMap | Kind::Node => {
            "chute manifest seal"
        }
    };
    let cipher = XChaCha20Poly1305::new(&doc_subkey(key_file, label).into());
    let mut aad = sealed[..6].to_vec();
    aad.extend_from_slice(context);
    let nonce = XNonce::try_from(&sealed[6..30]).ok()?;
    let (body, tag) = sealed[30..].split_at(sealed.len() - 30 - 16);
    let tag = Tag::try_from(tag).ok()?;
    let mut buf = body.to_vec();
    cipher
        .decrypt_inout_detached(&nonce, &aad, buf.as_mut_slice().into(), &tag)
        .ok()?;
    Some(buf)
}

pub(crate) fn xorshift(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn cut_offsets(c: &Chunker, data: &[u8]) -> Vec<usize> {
    let mut pos = 0;
    c.lengths(data)
        .into_iter()
        .map(|l| {
            pos += l;
            pos
        })
        .collect()
}

// ---- small shared vocabulary ---------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Ok,
    Corrupt,
    Newer(u8),
    WrongContent,
    /// (Nodes only) opens, but its plaintext does not decode.
    Malformed,
}

impl Expect {
    fn parse(s: &str) -> Option<Expect> {
        match s {
            "ok" => Some(Expect::Ok),
            "corrupt" => Some(Expect::Corrupt),
            "wrong_content" => Some(Expect::WrongContent),
            "malformed" => Some(Expect::Malformed),
            _ => s.strip_prefix("newer:")?.parse().ok().map(Expect::Newer),
        }
    }

    fn text(self) -> String {
        match self {
            Expect::Ok => "ok".into(),
            Expect::Corrupt => "corrupt".into(),
            Expect::Newer(n) => format!("newer:{n}"),
            Expect::WrongContent => "wrong_content".into(),
            Expect::Malformed => "malformed".into(),
        }
    }

    fn of<T>(r: &Result<T, OpenError>) -> Expect {
        match r {
            Ok(_) => Expect::Ok,
            Err(OpenError::Corrupt) => Expect::Corrupt,
            Err(OpenError::NewerVersion(n)) => Expect::Newer(*n),
            Err(OpenError::WrongContent) => Expect::WrongContent,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Xor(usize, u8),
    Set(usize, u8),
    Truncate(usize),
}

impl Damage {
    fn parse(s: &str) -> Option<Damage> {
        let mut it = s.split(':');
        let d = match (it.next()?, it.next()?, it.next()) {
            ("xor", at, Some(b)) => Damage::Xor(at.parse().ok()?, u8::from_str_radix(b, 16).ok()?),
            ("set", at, Some(b)) => Damage::Set(at.parse().ok()?, u8::from_str_radix(b, 16).ok()?),
            ("truncate", len, None) => Damage::Truncate(len.parse().ok()?),
            _ => return None,
        };
        it.next().is_none().then_some(d)
    }

    fn text(self) -> String {
        match self {
            Damage::Xor(at, b) => format!("xor:{at}:{b:02x}"),
            Damage::Set(at, b) => format!("set:{at}:{b:02x}"),
            Damage::Truncate(len) => format!("truncate:{len}"),
        }
    }

    fn apply(self, sealed: &mut Vec<u8>) {
        match self {
            Damage::Xor(at, b) => sealed[at] ^= b,
            Damage::Set(at, b) => sealed[at] = b,
            Damage::Truncate(len) => sealed.truncate(len),
        }
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Chunk => "chunk",
        Kind::Manifest => "manifest",
        Kind::Header => "header",
        Kind::PackHeader => "pack_header",
        Kind::PackMap => "pack_map",
        Kind::Node => "node",
        Kind::Packed => "packed_chunk",
    }
}

fn segment_context(blob: &str, segment: u32, last: bool) -> Vec<u8> {
    let mut c = blob.as_bytes().to_vec();
    c.extend_from_slice(&segment.to_be_bytes());
    c.push(u8::from(last));
    c
}

/// `domain/node/mount/timestamp` back into an index, as a store would hold it.
fn index_for(blob: &str, sealed: &[u8]) -> Index {
    let p: Vec<&str> = blob.split('/').collect();
    assert_eq!(
        p.len(),
        4,
        "blob path {blob:?} is not domain/node/mount/timestamp"
    );
    Index {
        version: 1,
        domain: p[0].into(),
        node: p[1].into(),
        mount: p[2].into(),
        timestamp: p[3].into(),
        parent: None,
        size: Some(0),
        sealed: Some(hex::encode(sealed)),
    }
}

// ---- the samples the positive vectors encode ------------------------------------

const CHUNK_A: &[u8] = b"chute test vector: the first chunk of /data/a.txt\n";
const CHUNK_B: &[u8] = b"another chunk, whose id a store might hand back instead";
const HOST: &str = "pi-kitchen";
const TIMESTAMP: &str = "20240102T030405.678901Z";

fn roots() -> Vec<Vec<u8>> {
    vec![b"/data".to_vec(), b"/home/pi".to_vec()]
}

fn blob(keys: &Keys) -> String {
    format!("home/{HOST}/{}/{TIMESTAMP}", keys.mount_id(&roots()))
}

fn sample_manifest(keys: &Keys) -> Manifest {
    let parent = format!(
        "home/{HOST}/{}/20240101T000000.000000Z",
        keys.mount_id(&roots())
    );
    let mut dir = Entry::new(EntryKind::Dir, b"/data".to_vec());
    dir.mode = 0o755;
    dir.uid = 1000;
    dir.gid = 1000;
    dir.mtime = 1_700_000_000;
    dir.mtime_ns = 5;
    let mut file = Entry::new(EntryKind::File, b"/data/a.txt".to_vec());
    file.mode = 0o4644;
    file.uid = 1000;
    file.gid = 100;
    file.mtime = 1_704_164_645;
    file.mtime_ns = 123_456_789;
    file.dev = 0xb301;
    file.inode = 0x1_0000_0002;
    file.ctime = 1_704_164_646;
    file.ctime_ns = 999_999_999;
    file.chunks = vec![
        ChunkRef::whole(
            keys.chunk_id(CHUNK_A),
            0,
            0,
            (CHUNK_A.len() + OVERHEAD) as u32,
        ),
        ChunkRef::whole(
            keys.chunk_id(CHUNK_B),
            1,
            0x1_0000_0000,
            (CHUNK_B.len() + OVERHEAD) as u32,
        ),
    ];
    file.size = file.chunks.iter().map(ChunkRef::plain_len).sum();
    // Raw OS bytes, not UTF-8: paths are stored as the kernel gives them.
    let mut empty = Entry::new(EntryKind::File, b"/data/caf\xe9".to_vec());
    empty.mode = 0o600;
    empty.mtime = -86_400;
    let mut link = Entry::new(EntryKind::Symlink, b"/data/link".to_vec());
    link.mode = 0o777;
    link.mtime = 1_600_000_000;
    link.target = b"a.txt".to_vec();
    Manifest {
        blobs: vec![blob(keys), parent],
        entries: vec![dir, file, empty, link],
    }
}

/// The one version 2 segment of [`sample_manifest`]: plaintext and entry count.
fn sample_segment(keys: &Keys) -> (Vec<u8>, u32) {
    let mut out = None;
    format::manifest_segments(&sample_manifest(keys), |plain, n, last| {
        assert!(last && out.is_none(), "the sample is one segment");
        out = Some((plain.to_vec(), n));
        Ok::<(), ()>(())
    })
    .expect("no error");
    out.expect("one segment")
}

/// The header written today (version 3), describing [`sample_segment`].
fn sample_header(keys: &Keys) -> Header {
    let chunk = (CHUNK_A.len() + OVERHEAD) as u64;
    let (plain, entries) = sample_segment(keys);
    let manifest = (plain.len() + OVERHEAD) as u64;
    Header {
        manifest_len: manifest,
        table: vec![format::SegmentInfo {
            sealed: manifest as u32,
            entries,
        }],
        part_size: chunk + manifest,
        version: format::HEADER_VERSION,
        ..sample_header_v2(keys)
    }
}

/// A version 2 header (chain and challenges, no segment table), describing the
/// version 1 manifest of `manifest_ok`.
fn sample_header_v2(keys: &Keys) -> Header {
    let chunk = (CHUNK_A.len() + OVERHEAD) as u64;
    let manifest = (format::encode_manifest(&sample_manifest(keys)).len() + OVERHEAD) as u64;
    Header {
        time: 1_704_164_645,
        time_ns: 678_901_000,
        host: HOST.into(),
        roots: roots(),
        files: 2,
        dirs: 1,
        symlinks: 1,
        bytes: (CHUNK_A.len() + CHUNK_B.len()) as u64,
        manifest_offset: chunk,
        manifest_len: manifest,
        segments: 1,
        table: Vec::new(),
        node_blobs: Vec::new(),
        nodes: Vec::new(),
        part_size: chunk + manifest,
        window: 8 << 20,
        window_hashes: vec![crypto::sha256(b"part 0, window 0")],
        seq: 3,
        parent: crypto::sha256(b"the sealed header of snapshot 2"),
        challenges: 2,
        answers: format::window_answers::<2>(keys, &blob(keys), 0, b"part 0, window 0").to_vec(),
        pack: false,
        tags: Vec::new(),
        version: 2,
    }
}

/// [`sample_header_v2`] as a version 1 header: no chain, no challenges.
fn sample_header_v1(keys: &Keys) -> Header {
    Header {
        seq: 0,
        parent: [0; 32],
        challenges: 0,
        answers: Vec::new(),
        version: 1,
        ..sample_header_v2(keys)
    }
}

/// A version 2 header's plaintext: version 3's (with an empty segment table)
/// with the version byte 2 and without the table's count.
fn encode_header_v2(h: &Header) -> Vec<u8> {
    let mut b = format::encode_header(&Header {
        table: Vec::new(),
        ..h.clone()
    });
    b[0] = 2;
    let at = b.len() - 1 - h.answers.len() * format::ANSWER_LEN - 4;
    b.drain(at..at + 4);
    b
}

/// A version 1 header's plaintext: version 2's with the version byte 1 and
/// without the fields version 2 appended.
fn encode_header_v1(h: &Header) -> Vec<u8> {
    let mut b = encode_header_v2(&Header {
        challenges: 0,
        answers: Vec::new(),
        ..h.clone()
    });
    b[0] = 1;
    b.truncate(b.len() - 8 - 32 - 1);
    b
}

/// A pack's blob path: the mount id of the empty root list.
fn pack_blob(keys: &Keys) -> String {
    format!("home/{HOST}/{}/20240301T000000.000000Z", keys.mount_id(&[]))
}

/// Two chunks copied into a pack: A at 0, B right after it.
fn sample_pack_map() -> Vec<format::Packed> {
    let keys = Keys::from_key_bytes(KEY);
    let a = (CHUNK_A.len() + OVERHEAD) as u32;
    vec![
        format::Packed {
            id: keys.chunk_id(CHUNK_A),
            offset: 0,
            len: a,
        },
        format::Packed {
            id: keys.chunk_id(CHUNK_B),
            offset: u64::from(a),
            len: (CHUNK_B.len() + OVERHEAD) as u32,
        },
    ]
}

fn sample_pack_header() -> Header {
    let data: u64 = sample_pack_map().iter().map(|c| u64::from(c.len)).sum();
    let map = (format::encode_pack_map(&sample_pack_map()).len() + OVERHEAD) as u64;
    Header {
        time: 1_709_251_200,
        files: 2,
        bytes: data,
        manifest_offset: data,
        manifest_len: map,
        segments: 1,
        part_size: data + map,
        window: 2 << 20,
        window_hashes: vec![crypto::sha256(b"pack part 0, window 0")],
        pack: true,
        version: format::HEADER_VERSION,
        ..Header::default()
    }
}

/// [`sample_manifest`] with what version 3 adds: a small file that is a slice of
/// a shared chunk, with its content tag.
fn sample_manifest_v3(keys: &Keys) -> Manifest {
    let mut m = sample_manifest(keys);
    let mut small = Entry::new(EntryKind::File, b"/data/small".to_vec());
    small.mode = 0o644;
    small.uid = 1000;
    small.gid = 100;
    small.mtime = 1_704_164_645;
    small.mtime_ns = 500;
    small.ctime = 1_704_164_645;
    small.ctime_ns = 500;
    small.dev = 0xb301;
    small.inode = 0x1_0000_0001;
    small.chunks = vec![ChunkRef {
        skip: 6,
        take: 10,
        ..ChunkRef::whole(
            keys.chunk_id(CHUNK_A),
            0,
            0,
            (CHUNK_A.len() + OVERHEAD) as u32,
        )
    }];
    small.size = 10;
    small.tag = Some(*b"tag of 8");
    m.entries.push(small);
    m
}

/// [`sample_manifest_v3`] with what only a version 6 header announces: the
/// small file's hard-linked twin `/data/small-link` (same device and inode)
/// and a FIFO `/data/z.fifo` with an extended attribute.
fn sample_manifest_v6(keys: &Keys) -> Manifest {
    let mut m = sample_manifest_v3(keys);
    let small = m.entries.last_mut().expect("the small file");
    small.linked = true;
    let mut twin = small.clone();
    twin.path = b"/data/small-link".to_vec();
    let mut fifo = Entry::new(EntryKind::Fifo, b"/data/z.fifo".to_vec());
    fifo.mode = 0o600;
    fifo.mtime = 1_704_164_646;
    fifo.xattrs = vec![(b"user.why".to_vec(), b"a pipe".to_vec())];
    m.entries.push(twin);
    m.entries.push(fifo);
    m
}

/// Writes `m` as version 3, nodes placed in the snapshot's blob from `at` on:
/// the nodes' plaintexts in the order they were stored, and the root list.
fn write_v3(keys: &Keys, m: &Manifest, mut at: u64) -> (Vec<Vec<u8>>, format::Root) {
    let blob = blob(keys);
    let mut plains = Vec::new();
    let mut store = |id: &crypto::ChunkId, sealed: &[u8]| {
        let mut buf = sealed.to_vec();
        plains.push(keys.open_node(id, &mut buf).expect("opens").to_vec());
        at += sealed.len() as u64;
        Ok::<_, ()>((blob.clone(), at - sealed.len() as u64))
    };
    let mut w = format::ManifestWriter::new(keys);
    for e in &m.entries {
        w.push(e, |b| m.blobs[b as usize].clone(), &mut store)
            .expect("no error");
    }
    let root = w.finish(&mut store).expect("no error");
    (plains, root)
}

/// [`sample_manifest_v3`] written as version 3 (nodes in the snapshot's blob
/// after chunk A): the segment's and the table's plaintexts, and the root list.
fn sample_v3(keys: &Keys) -> (Vec<u8>, Vec<u8>, format::Root) {
    let (mut plains, root) = write_v3(
        keys,
        &sample_manifest_v3(keys),
        (CHUNK_A.len() + OVERHEAD) as u64,
    );
    assert_eq!(plains.len(), 2, "the sample is one segment in one table");
    let table = plains.pop().expect("two");
    (plains.pop().expect("two"), table, root)
}

/// [`sample_manifest_v6`]'s one segment, as version 3 writes it.
fn sample_v6_segment(keys: &Keys) -> Vec<u8> {
    let (mut plains, root) = write_v3(keys, &sample_manifest_v6(keys), 0);
    assert!(root.v6, "a FIFO and hard links make a version 6 header");
    assert_eq!(plains.len(), 2, "one segment in one table");
    plains.swap_remove(0)
}

/// A version 4 header: [`sample_header`] with the root list of [`sample_v3`].
fn sample_header_v4(keys: &Keys) -> Header {
    let chunk = (CHUNK_A.len() + OVERHEAD) as u64;
    let (segment, table, root) = sample_v3(keys);
    let manifest = (segment.len() + table.len() + 2 * OVERHEAD) as u64;
    let mut h = Header {
        manifest_len: manifest,
        part_size: chunk + manifest,
        ..sample_header(keys)
    };
    root.set_in(&mut h);
    h
}

/// A version 5 header: [`sample_header_v4`] with two tags.
fn sample_header_v5(keys: &Keys) -> Header {
    Header {
        tags: vec!["nightly".into(), "vor dem Update".into()],
        version: format::HEADER_V5,
        ..sample_header_v4(keys)
    }
}

/// A version 6 header: [`sample_header_v4`]'s, no tags.
fn sample_header_v6(keys: &Keys) -> Header {
    Header {
        version: format::HEADER_V6,
        ..sample_header_v4(keys)
    }
}

/// A manifest node: opens as its id says, then decodes (as its type, with its
/// entry count) to the sample and encodes back; or fails as `expect` (and
/// `malformed`) say.
fn check_node(
    v: &Vector,
    keys: &Keys,
    context: &[u8],
    sealed: &[u8],
    plaintext: &[u8],
    expect: Expect,
) {
    let f = &v.file;
    let id: crypto::ChunkId = context.try_into().expect("32-byte node_id");
    let entries: u64 = v.str("entries").parse().expect("a number");
    let mut buf = sealed.to_vec();
    let opened = keys.open_node(&id, &mut buf).map(|p| p.to_vec());
    let decoded = opened.map(|plain| match v.str("node_type") {
        "1" => {
            let mut blobs = vec![blob(keys)];
            let mut at = [(blob(keys), 0)].into_iter().collect();
            let v6 = f.starts_with("manifest_v6");
            if v6 {
                // What only a version 6 header announces is damage under an older one.
                let older = format::decode_segment_v3(
                    &plain,
                    entries,
                    false,
                    &mut Vec::new(),
                    &mut Default::default(),
                );
                assert!(older.is_err(), "{f}: decoded under a version 4 header");
            }
            format::decode_segment_v3(&plain, entries, v6, &mut blobs, &mut at).map(|es| {
                let m = Manifest { blobs, entries: es };
                let (sample, plain) = match f.starts_with("manifest_v6") {
                    true => (sample_manifest_v6(keys), sample_v6_segment(keys)),
                    false => (sample_manifest_v3(keys), sample_v3(keys).0),
                };
                assert_eq!(m, sample, "{f}: not the sample");
                assert_eq!(plaintext, plain, "{f}: encoding");
            })
        }
        "2" => format::decode_table(&plain, entries).map(|(names, kids)| {
            let (segment, table, _) = sample_v3(keys);
            let want = format::NodeRef {
                id: keys.node_id(&segment),
                blob: 0,
                offset: (CHUNK_A.len() + OVERHEAD) as u64,
                len: (segment.len() + OVERHEAD) as u32,
                entries,
            };
            assert_eq!((names, kids), (vec![blob(keys)], vec![want]), "{f}");
            assert_eq!(plaintext, table, "{f}: encoding");
        }),
        t => panic!("{f}: node_type {t} is 1 or 2"),
    });
    let got = match decoded {
        Ok(Ok(())) => Expect::Ok,
        Ok(Err(format::Error::Malformed(what))) => {
            let named = v
                .opt("malformed")
                .unwrap_or_else(|| panic!("{f}: malformed {what}"));
            assert!(what.contains(named), "{f}: malformed {what}, not {named}");
            Expect::Malformed
        }
        Ok(Err(e)) => panic!("{f}: {e}"),
        Err(e) => Expect::of(&Err::<(), _>(e)),
    };
    assert_eq!(got, expect, "{f}: Keys::open_node and decoding");
}

// ---- writing ---------------------------------------------------------------

#[derive(Default)]
struct Out(String);

impl Out {
    fn comment(&mut self, text: &str) -> &mut Self {
        for line in text.lines() {
            let _ = writeln!(self.0, "# {line}");
        }
        self
    }
    fn field(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        let _ = writeln!(self.0, "{name} = {value}");
        self
    }
    fn hex(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        self.field(name, hex::encode(bytes))
    }
}

/// One sealed-object vector, before it is written.
struct Sealed<'a> {
    about: &'a str,
    kind: Kind,
    seal_key: Option<&'a [u8]>,
    context: Vec<u8>,
    seal_context: Option<Vec<u8>>,
    nonce: u8,
    plaintext: Vec<u8>,
    damage: Option<Damage>,
    expect: Expect,
    /// Kind-specific fields, written between `kind` and `key`.
    extra: Vec<(&'static str, String)>,
}

impl<'a> Sealed<'a> {
    fn new(
        about: &'a str,
        kind: Kind,
        nonce: u8,
        plaintext: &[u8],
        context: Vec<u8>,
    ) -> Sealed<'a> {
        Sealed {
            about,
            kind,
            seal_key: None,
            context,
            seal_context: None,
            nonce,
            plaintext: plaintext.to_vec(),
            damage: None,
            expect: Expect::Ok,
            extra: Vec::new(),
        }
    }

    fn write(&self) -> String {
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| self.nonce.wrapping_add(i as u8));
        let sealer = Keys::from_key_bytes(self.seal_key.unwrap_or(KEY));
        let mut sealed = Vec::new();
        let ctx = self.seal_context.as_ref().unwrap_or(&self.context);
        sealer.seal_with_nonce(self.kind, ctx, &self.plaintext, &nonce, &mut sealed);
        if let Some(d) = self.damage {
            d.apply(&mut sealed);
        }
        let mut o = Out::default();
        o.comment(self.about).field("kind", kind_name(self.kind));
        for (name, value) in &self.extra {
            o.field(name, value);
        }
        o.hex("key", KEY);
        if let Some(k) = self.seal_key {
            o.hex("seal_key", k);
        }
        o.hex("context", &self.context);
        if let Some(c) = &self.seal_context {
            o.hex("seal_context", c);
        }
        o.hex("nonce", &nonce)
            .hex("plaintext", &self.plaintext)
            .hex("sealed", &sealed);
        if let Some(d) = self.damage {
            o.field("damage", d.text());
        }
        o.field("expect", self.expect.text());
        o.0
    }
}

/// The content of the compressed chunk vectors: compresses to under an eighth.
const PACKED: &[u8] = b"2026-12-02T18:10:06 pi-kitchen sshd[812]: Accepted publickey for pi\n\
    2026-12-02T18:10:06 pi-kitchen sshd[812]: Accepted publickey for pi\n\
    2026-12-02T18:10:07 pi-kitchen sshd[812]: Accepted publickey for pi\n\
    2026-12-02T18:10:07 pi-kitchen sshd[812]: Accepted publickey for pi\n\
    2026-12-02T18:10:08 pi-kitchen sshd[812]: Accepted publickey for pi\n";

/// The plaintext of a compressed chunk of [`PACKED`].
fn format_packed() -> Vec<u8> {
    let mut z = Vec::new();
    assert!(crate::compress::pack(PACKED, &mut z), "PACKED compresses");
    z
}

fn packed_vector<'a>(about: &'a str, nonce: u8, keys: &Keys) -> Sealed<'a> {
    let id = keys.chunk_id(PACKED);
    let mut v = Sealed::new(about, Kind::Packed, nonce, &format_packed(), id.to_vec());
    v.extra.push(("chunk_id", hex::encode(&id)));
    v.extra.push(("content", hex::encode(PACKED)));
    v
}

/// Checks a `packed_chunk` vector (see the module docs).
fn check_packed(v: &Vector) {
    let f = &v.file;
    let required = [
        "kind",
        "key",
        "context",
        "nonce",
        "plaintext",
        "sealed",
        "expect",
        "chunk_id",
        "content",
    ];
    let faults = ["damage", "wrong_raw"];
    v.allow(&required, &faults);
    let expect = Expect::parse(v.str("expect")).unwrap_or_else(|| panic!("{f}: bad `expect`"));
    let named = faults.iter().filter(|n| v.opt(n).is_some()).count();
    assert_eq!(
        named > 0,
        expect != Expect::Ok,
        "{f}: faults and `expect` disagree"
    );
    let key = v.bytes("key");
    let keys = Keys::from_key_bytes(&key);
    let (context, plaintext, sealed, content) = (
        v.bytes("context"),
        v.bytes("plaintext"),
        v.bytes("sealed"),
        v.bytes("content"),
    );
    let nonce: [u8; NONCE_LEN] = v.bytes("nonce").try_into().expect("24-byte nonce");
    let mut again = Vec::new();
    keys.seal_with_nonce(Kind::Packed, &context, &plaintext, &nonce, &mut again);
    if let Some(d) = v.opt("damage") {
        Damage::parse(d).expect("damage").apply(&mut again);
    }
    assert_eq!(hex::encode(&again), hex::encode(&sealed), "{f}: `sealed`");
    // The id is over the uncompressed content, per the docs and the code.
    let id_key = doc_subkey(&key, "chute chunk id");
    assert_eq!(context, v.bytes("chunk_id"), "{f}: context is not chunk_id");
    assert_eq!(
        context,
        doc_hmac(&id_key, &[&content]),
        "{f}: id per the docs"
    );
    // The codec: what the code writes, and what decompresses to the content.
    let mut z = Vec::new();
    assert!(
        crate::compress::pack(&content, &mut z),
        "{f}: content compresses"
    );
    assert_eq!(z, plaintext, "{f}: compress::pack");
    assert_eq!(plaintext[0], crate::compress::CODEC_LZ4, "{f}: codec byte");
    let mut out = Vec::new();
    crate::compress::unpack(&plaintext, content.len(), &mut out).expect("unpacks");
    assert_eq!(out, content, "{f}: compress::unpack");
    let by_docs = doc_open(&key, Kind::Packed, &context, &sealed);
    let raw = v
        .opt("wrong_raw")
        .map_or(content.len(), |r| r.parse().expect("wrong_raw"));
    let id: crate::crypto::ChunkId = context.clone().try_into().expect("32");
    let mut buf = sealed.clone();
    let opened = keys.open_chunk(&id, raw as u32, &mut buf, &mut out);
    assert_eq!(Expect::of(&opened), expect, "{f}: Keys::open_chunk");
    if expect == Expect::Ok {
        assert_eq!(opened.map(|p| p.to_vec()), Ok(content), "{f}: content");
        assert_eq!(by_docs, Some(plaintext), "{f}: open per the docs");
    }
}

fn chunk_vector<'a>(about: &'a str, nonce: u8, keys: &Keys) -> Sealed<'a> {
    let id = keys.chunk_id(CHUNK_A);
    let mut v = Sealed::new(about, Kind::Chunk, nonce, CHUNK_A, id.to_vec());
    v.extra.push(("chunk_id", hex::encode(&id)));
    v
}

/// Every vector file, as the current code writes it.
fn generate() -> Vec<(&'static str, String)> {
    let keys = Keys::from_key_bytes(KEY);
    let blob = blob(&keys);
    let mut files = Vec::new();

    let mut o = Out::default();
    o.comment(
        "Key derivation: master = SHA-256(key file); subkeys = HKDF-SHA256(salt \"chute-v1\",\n\
         ikm master, info label, 32 bytes); mount id = first 16 bytes of\n\
         HMAC-SHA256(mount-id subkey, for each root: u64 BE length, bytes), in hex.",
    )
    .field("kind", "keys")
    .hex("key", KEY)
    .hex("master", &crypto::sha256(KEY));
    for (field, label) in LABELS {
        o.hex(field, &doc_subkey(KEY, label));
    }
    let roots_hex: Vec<String> = roots().iter().map(|r| hex::encode(r)).collect();
    o.field("roots", roots_hex.join(","))
        .field("mount_id", keys.mount_id(&roots()));
    let (nonce, answer) = doc_challenge(KEY, &blob, 2, 1, CHALLENGE_DATA);
    o.field("challenge_blob", &blob)
        .field("challenge_window", "2")
        .field("challenge_j", "1")
        .hex("challenge_data", CHALLENGE_DATA)
        .hex("challenge_nonce", &nonce)
        .hex("challenge_answer", &answer)
        .hex("cut_input", CUT_INPUT)
        .field("cut_hash", doc_cut_hash(KEY, CUT_INPUT));
    files.push(("keys", o.0));

    let chunker = Chunker::new(keys.gear_seed());
    let (seed, len) = (1u64, 32 << 20);
    let input = xorshift(seed, len);
    let zeros_len = chunker::MAX * 2 + 12_345;
    let gear: Vec<String> = (0..8)
        .map(|i| format!("{:016x}", doc_gear(keys.gear_seed(), i)))
        .collect();
    let join = |v: Vec<usize>| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let mut o = Out::default();
    o.comment(
        "Chunk boundaries: gear table from the key's gear subkey, then FastCDC cuts of\n\
         a pseudo-random input and of an all-zero input (which runs to the maximum).",
    )
    .field("kind", "chunker")
    .hex("key", KEY)
    .hex("gear_seed", keys.gear_seed())
    .field("gear_head", gear.join(","))
    .field("input_seed", seed)
    .field("input_len", len)
    .hex("input_head", &input[..16])
    .field("cuts", join(cut_offsets(&chunker, &input)))
    .field("zeros_len", zeros_len)
    .field(
        "zeros_cuts",
        join(cut_offsets(&chunker, &vec![0; zeros_len])),
    );
    files.push(("chunker", o.0));

    files.push((
        "chunk_ok",
        chunk_vector(
            "A chunk sealed under the chunk key, bound to its id.",
            0x10,
            &keys,
        )
        .write(),
    ));

    let plain = format::encode_manifest(&sample_manifest(&keys));
    let mut v = Sealed::new(
        "A small manifest (directory, file of two chunks in two blobs, empty file with\n\
         a non-UTF-8 name, symlink) as one segment, the last.",
        Kind::Manifest,
        0x30,
        &plain,
        segment_context(&blob, 0, true),
    );
    v.extra = vec![
        ("blob", blob.clone()),
        ("segment", "0".into()),
        ("last", "1".into()),
    ];
    files.push(("manifest_ok", v.write()));

    let (segment, _) = sample_segment(&keys);
    let mut v = Sealed::new(
        "The same manifest in version 2, as written today: one self-contained segment\n\
         (its own blob table, its entry count), the last.",
        Kind::Manifest,
        0x34,
        &segment,
        segment_context(&blob, 0, true),
    );
    v.extra = vec![
        ("blob", blob.clone()),
        ("segment", "0".into()),
        ("last", "1".into()),
    ];
    files.push(("manifest_v2_ok", v.write()));

    let mut v = Sealed::new(
        "A snapshot header, sealed under the manifest key, bound to its blob path.",
        Kind::Header,
        0x54,
        &encode_header_v2(&sample_header_v2(&keys)),
        blob.as_bytes().to_vec(),
    );
    v.extra = vec![("blob", blob.clone())];
    files.push(("header_v2_ok", v.write()));

    let header = format::encode_header(&sample_header(&keys));
    let mut v = Sealed::new(
        "A version 3 snapshot header (as written today: with the segment table of\n\
         manifest_v2_ok), sealed under the manifest key, bound to its blob path.",
        Kind::Header,
        0x56,
        &header,
        blob.as_bytes().to_vec(),
    );
    v.extra = vec![("blob", blob.clone())];
    files.push(("header_ok", v.write()));

    let mut v = Sealed::new(
        "A version 1 snapshot header (before the chain and the storage challenges):\n\
         still read, as sequence 0 with no parent and no challenges.",
        Kind::Header,
        0x50,
        &encode_header_v1(&sample_header_v1(&keys)),
        blob.as_bytes().to_vec(),
    );
    v.extra = vec![("blob", blob.clone())];
    files.push(("header_v1_ok", v.write()));

    let pack = pack_blob(&keys);
    let mut v = Sealed::new(
        "A pack's header (kind 4): a snapshot header's layout with no host and no roots,\n\
         sealed under the manifest key, bound to the pack's blob path.",
        Kind::PackHeader,
        0x58,
        &format::encode_header(&sample_pack_header()),
        pack.as_bytes().to_vec(),
    );
    v.extra = vec![("blob", pack.clone())];
    files.push(("pack_header_ok", v.write()));

    let mut v = Sealed::new(
        "A pack map (kind 5) of two chunks as one segment, the last.",
        Kind::PackMap,
        0x60,
        &format::encode_pack_map(&sample_pack_map()),
        segment_context(&pack, 0, true),
    );
    v.extra = vec![
        ("blob", pack.clone()),
        ("segment", "0".into()),
        ("last", "1".into()),
    ];
    files.push(("pack_map_ok", v.write()));

    let sealed_len = CHUNK_A.len() + OVERHEAD;
    let mut v = chunk_vector("chunk_ok with the first tag byte flipped.", 0x10, &keys);
    v.damage = Some(Damage::Xor(sealed_len - 16, 0x01));
    v.expect = Expect::Corrupt;
    files.push(("bad_tag", v.write()));

    let mut v = chunk_vector("chunk_ok missing its last byte.", 0x10, &keys);
    v.damage = Some(Damage::Truncate(sealed_len - 1));
    v.expect = Expect::Corrupt;
    files.push(("truncated", v.write()));

    let mut v = chunk_vector(
        "A store hands back chunk A when asked for chunk B: sealed under A's id,\n\
         opened with B's.",
        0x70,
        &keys,
    );
    let b = keys.chunk_id(CHUNK_B);
    v.seal_context = Some(std::mem::replace(&mut v.context, b.to_vec()));
    v.extra = vec![("chunk_id", hex::encode(&b))];
    v.expect = Expect::Corrupt;
    files.push(("swapped_chunks", v.write()));

    let mut v = chunk_vector(
        "chunk_ok with its version byte set to 2: named as newer, not as damage.",
        0x10,
        &keys,
    );
    v.damage = Some(Damage::Set(4, 2));
    v.expect = Expect::Newer(2);
    files.push(("unknown_version", v.write()));

    let mut v = chunk_vector(
        "An older chute computed chunk A's id, then sealed the bytes of B under it (its\n\
         source was rewritten in between). It authenticates; its content is not A.",
        0x90,
        &keys,
    );
    v.plaintext = CHUNK_B.to_vec();
    v.extra.push(("id_of", hex::encode(CHUNK_A)));
    v.expect = Expect::WrongContent;
    files.push(("wrong_content", v.write()));

    let mut v = packed_vector(
        "A compressed chunk (kind 7) of a repetitive text.",
        0x90,
        &keys,
    );
    files.push(("packed_chunk_ok", v.write()));
    v.about = "packed_chunk_ok opened at one byte less than its content: a manifest\n\
               naming another uncompressed length is damage, not a shorter file.";
    v.extra.push(("wrong_raw", (PACKED.len() - 1).to_string()));
    v.expect = Expect::Corrupt;
    files.push(("packed_bad_length", v.write()));
    let mut v = packed_vector(
        "packed_chunk_ok with its first tag byte flipped.",
        0x90,
        &keys,
    );
    let n = format_packed().len() + OVERHEAD;
    v.damage = Some(Damage::Xor(n - 16, 0x01));
    v.expect = Expect::Corrupt;
    files.push(("packed_bad_tag", v.write()));

    let mut v = Sealed::new(
        "header_ok's plaintext sealed under another key file.",
        Kind::Header,
        0x90,
        &header,
        blob.as_bytes().to_vec(),
    );
    v.extra = vec![("blob", blob.clone())];
    v.seal_key = Some(OTHER_KEY);
    v.expect = Expect::Corrupt;
    files.push(("wrong_key", v.write()));

    let mut v = Sealed::new(
        "The last segment of a two-segment manifest moved to the front: sealed as\n\
         segment 1 (last), presented as segment 0 (last) of a one-segment manifest.",
        Kind::Manifest,
        0xb0,
        &plain[plain.len() / 2..],
        segment_context(&blob, 0, true),
    );
    v.seal_context = Some(segment_context(&blob, 1, true));
    v.extra = vec![
        ("blob", blob.clone()),
        ("segment", "0".into()),
        ("last", "1".into()),
    ];
    v.expect = Expect::Corrupt;
    files.push(("manifest_reordered", v.write()));

    let (segment, table, root) = sample_v3(&keys);
    let node = |about, nonce, plain: &[u8], ty: &str, entries: u64, id_of: Option<&[u8]>| {
        let id = keys.node_id(id_of.unwrap_or(plain));
        let mut v = Sealed::new(about, Kind::Node, nonce, plain, id.to_vec());
        v.extra = vec![
            ("node_id", hex::encode(&id)),
            ("node_type", ty.into()),
            ("entries", entries.to_string()),
        ];
        v
    };
    files.push((
        "manifest_v3_ok",
        node(
            "A version 3 manifest segment (kind 6): the entries of manifest_ok and a\n\
             small file sliced out of a shared chunk, with its tag; sealed under its\n\
             node id.",
            0xc0,
            &segment,
            "1",
            root.entries,
            None,
        )
        .write(),
    ));
    files.push((
        "manifest_v3_table_ok",
        node(
            "The version 3 table node listing manifest_v3_ok's segment (kept in the\n\
             snapshot's blob right after chunk A).",
            0xc4,
            &table,
            "2",
            root.entries,
            None,
        )
        .write(),
    ));
    let v6 = sample_v6_segment(&keys);
    files.push((
        "manifest_v6_ok",
        node(
            "A version 3 manifest segment under a version 6 header: manifest_v3_ok's\n\
             entries, its small file hard-linked (kind 5) to a twin /data/small-link\n\
             (same device and inode), and a FIFO /data/z.fifo (kind 4) with the\n\
             extended attribute user.why = \"a pipe\".",
            0xc2,
            &v6,
            "1",
            sample_manifest_v6(&keys).entries.len() as u64,
            None,
        )
        .write(),
    ));
    let mut v = node(
        "manifest_v3_ok's plaintext sealed under the table's node id: it\n\
         authenticates, but its content is not the node its id names.",
        0xc8,
        &segment,
        "1",
        root.entries,
        Some(&table),
    );
    v.extra.push(("id_of", hex::encode(&table)));
    v.expect = Expect::WrongContent;
    files.push(("node_bad_id", v.write()));

    let mut bad = sample_manifest(&keys);
    bad.entries[1].size += 1;
    let (plains, _) = write_v3(&keys, &bad, 0);
    let mut v = node(
        "A segment of manifest_ok's entries whose file of two chunks says it holds\n\
         one byte more than its slices.",
        0xcc,
        &plains[0],
        "1",
        4,
        None,
    );
    v.extra.push(("malformed", "file size".into()));
    v.expect = Expect::Malformed;
    files.push(("node_bad_size", v.write()));

    let mut one = sample_manifest_v3(&keys);
    one.entries.drain(..4);
    one.entries[0].tag = None;
    let (mut plains, _) = write_v3(&keys, &one, 0);
    let bad_index = &mut plains[0];
    // Without a tag the entry ends with its one ref: row, skip, take (a byte each).
    let at = bad_index.len() - 3;
    assert_eq!(bad_index[at..], [0, 6, 10]);
    bad_index[at] = 1;
    let mut v = node(
        "A segment of one file whose ref names chunk row 1 of a table of one row.",
        0xd0,
        bad_index,
        "1",
        1,
        None,
    );
    v.extra.push(("malformed", "chunk reference".into()));
    v.expect = Expect::Malformed;
    files.push(("node_bad_index", v.write()));

    let mut v = Sealed::new(
        "A version 4 snapshot header: the root list of manifest_v3_table_ok in place\n\
         of the segment table.",
        Kind::Header,
        0xd4,
        &format::encode_header(&sample_header_v4(&keys)),
        blob.as_bytes().to_vec(),
    );
    v.extra = vec![("blob", blob.clone())];
    files.push(("header_v4_ok", v.write()));

    let mut v = Sealed::new(
        "A version 5 snapshot header: header_v4_ok's, with the tags \"nightly\" and\n\
         \"vor dem Update\" after the root list.",
        Kind::Header,
        0xd5,
        &format::encode_header(&sample_header_v5(&keys)),
        blob.as_bytes().to_vec(),
    );
    v.extra = vec![("blob", blob.clone())];
    files.push(("header_v5_ok", v.write()));

    let mut v = Sealed::new(
        "A version 6 snapshot header: header_v4_ok's, with an empty tag list after\n\
         the root list (its manifest may hold FIFOs and hard-linked files).",
        Kind::Header,
        0xd6,
        &format::encode_header(&sample_header_v6(&keys)),
        blob.as_bytes().to_vec(),
    );
    v.extra = vec![("blob", blob.clone())];
    files.push(("header_v6_ok", v.write()));

    files
}

// ---- reading and checking --------------------------------------------------

struct Vector {
    file: String,
    fields: BTreeMap<String, String>,
}

impl Vector {
    fn parse(file: &str, text: &str) -> Vector {
        let mut fields = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                panic!("{file}:{}: not `name = value`: {line:?}", n + 1);
            };
            let (name, value) = (name.trim().to_string(), value.trim().to_string());
            if fields.insert(name.clone(), value).is_some() {
                panic!("{file}:{}: field `{name}` repeated", n + 1);
            }
        }
        Vector {
            file: file.into(),
            fields,
        }
    }

    /// Refuses missing and unknown fields, so a typo cannot skip a check.
    fn allow(&self, required: &[&str], optional: &[&str]) {
        for r in required {
            assert!(self.fields.contains_key(*r), "{}: missing `{r}`", self.file);
        }
        for name in self.fields.keys() {
            assert!(
                required.contains(&name.as_str()) || optional.contains(&name.as_str()),
                "{}: unknown field `{name}`",
                self.file
            );
        }
    }

    fn opt(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
    fn str(&self, name: &str) -> &str {
        self.opt(name)
            .unwrap_or_else(|| panic!("{}: missing `{name}`", self.file))
    }
    fn bytes(&self, name: &str) -> Vec<u8> {
        hex::decode(self.str(name)).unwrap_or_else(|| panic!("{}: `{name}` is not hex", self.file))
    }
    fn opt_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.opt(name).map(|_| self.bytes(name))
    }
    fn num<T: std::str::FromStr>(&self, name: &str) -> T {
        self.str(name)
            .parse()
            .unwrap_or_else(|_| panic!("{}: `{name}` is not a number", self.file))
    }
    fn list(&self, name: &str) -> Vec<&str> {
        let s = self.str(name);
        if s.is_empty() {
            Vec::new()
        } else {
            s.split(',').map(str::trim).collect()
        }
    }
}

fn check(file: &str, text: &str) {
    let v = Vector::parse(file, text);
    match v.str("kind") {
        "keys" => check_keys(&v),
        "chunker" => check_chunker(&v),
        "chunk" => check_sealed(&v, Kind::Chunk),
        "manifest" => check_sealed(&v, Kind::Manifest),
        "header" => check_sealed(&v, Kind::Header),
        "pack_header" => check_sealed(&v, Kind::PackHeader),
        "pack_map" => check_sealed(&v, Kind::PackMap),
        "node" => check_sealed(&v, Kind::Node),
        "packed_chunk" => check_packed(&v),
        other => panic!("{file}: unknown kind {other:?}"),
    }
}

fn check_keys(v: &Vector) {
    let mut required = vec![
        "kind",
        "key",
        "master",
        "roots",
        "mount_id",
        "challenge_blob",
        "challenge_window",
        "challenge_j",
        "challenge_data",
        "challenge_nonce",
        "challenge_answer",
        "cut_input",
        "cut_hash",
    ];
    required.extend(LABELS.iter().map(|(f, _)| *f));
    v.allow(&required, &[]);
    let f = &v.file;
    let key = v.bytes("key");
    let keys = Keys::from_key_bytes(&key);
    assert_eq!(v.bytes("master"), crypto::sha256(&key), "{f}: master");
    for (field, label) in LABELS {
        assert_eq!(v.bytes(field), doc_subkey(&key, label), "{f}: {field}");
    }
    assert_eq!(
        v.bytes("subkey_chunker_gear"),
        keys.gear_seed(),
        "{f}: Keys::gear_seed"
    );
    assert_eq!(
        v.bytes("subkey_request_auth"),
        keys.auth_key(),
        "{f}: Keys::auth_key"
    );
    let roots: Vec<Vec<u8>> = v
        .list("roots")
        .iter()
        .map(|r| hex::decode(r).unwrap_or_else(|| panic!("{f}: a root is not hex")))
        .collect();
    assert_eq!(
        v.str("mount_id"),
        keys.mount_id(&roots),
        "{f}: Keys::mount_id"
    );
    assert_eq!(
        v.str("mount_id"),
        doc_mount_id(&key, &roots),
        "{f}: mount id per the docs"
    );
    let blob = v.str("challenge_blob");
    let w: u32 = v.str("challenge_window").parse().expect("a number");
    let j: u8 = v.str("challenge_j").parse().expect("a number");
    let data = v.bytes("challenge_data");
    let (nonce, answer) = doc_challenge(&key, blob, w, j, &data);
    assert_eq!(
        v.bytes("challenge_nonce"),
        nonce,
        "{f}: challenge nonce per the docs"
    );
    assert_eq!(
        v.bytes("challenge_answer"),
        answer,
        "{f}: challenge answer per the docs"
    );
    assert_eq!(
        keys.challenge_nonce(blob, w, j),
        nonce,
        "{f}: Keys::challenge_nonce"
    );
    assert_eq!(
        format::challenge_answer(&nonce, &data),
        answer,
        "{f}: format::challenge_answer"
    );
    let cut_input = v.bytes("cut_input");
    let cut: u32 = v.str("cut_hash").parse().expect("a number");
    assert_eq!(
        cut,
        doc_cut_hash(&key, &cut_input),
        "{f}: cut hash per the docs"
    );
    assert_eq!(cut, keys.cut_hash(&cut_input), "{f}: Keys::cut_hash");
}

fn check_chunker(v: &Vector) {
    v.allow(
        &[
            "kind",
            "key",
            "gear_seed",
            "gear_head",
            "input_seed",
            "input_len",
            "input_head",
            "cuts",
            "zeros_len",
            "zeros_cuts",
        ],
        &[],
    );
    let f = &v.file;
    let keys = Keys::from_key_bytes(&v.bytes("key"));
    let seed = *keys.gear_seed();
    assert_eq!(v.bytes("gear_seed"), seed, "{f}: gear_seed");
    let head = v.list("gear_head");
    assert!(!head.is_empty(), "{f}: gear_head is empty");
    for (i, g) in head.iter().enumerate() {
        let g = u64::from_str_radix(g, 16).unwrap_or_else(|_| panic!("{f}: gear_head[{i}]"));
        assert_eq!(g, doc_gear(&seed, i), "{f}: gear[{i}] per the docs");
    }
    let cuts = |name: &str| -> Vec<usize> {
        v.list(name)
            .iter()
            .map(|c| c.parse().unwrap_or_else(|_| panic!("{f}: {name}")))
            .collect()
    };
    let chunker = Chunker::new(&seed);
    let input = xorshift(v.num("input_seed"), v.num("input_len"));
    let head = v.bytes("input_head");
    assert!(
        head.len() >= 8,
        "{f}: input_head too short to pin the generator"
    );
    assert_eq!(input.get(..head.len()), Some(&head[..]), "{f}: input_head");
    let want = cuts("cuts");
    assert!(want.len() > 2, "{f}: too few cuts to pin anything");
    assert_eq!(cut_offsets(&chunker, &input), want, "{f}: cuts");
    let zeros = vec![0u8; v.num("zeros_len")];
    assert_eq!(
        cut_offsets(&chunker, &zeros),
        cuts("zeros_cuts"),
        "{f}: zeros_cuts"
    );
}

fn check_sealed(v: &Vector, kind: Kind) {
    let f = &v.file;
    let mut required = vec![
        "kind",
        "key",
        "context",
        "nonce",
        "plaintext",
        "sealed",
        "expect",
    ];
    required.extend_from_slice(match kind {
        Kind::Chunk => &["chunk_id"][..],
        Kind::Manifest | Kind::PackMap => &["blob", "segment", "last"],
        Kind::Header | Kind::PackHeader => &["blob"],
        Kind::Node => &["node_id", "node_type", "entries"],
        Kind::Packed => unreachable!("{f}: compressed chunks have check_packed"),
    });
    let faults = ["seal_key", "seal_context", "damage", "id_of", "malformed"];
    v.allow(&required, &faults);
    let expect = Expect::parse(v.str("expect")).unwrap_or_else(|| panic!("{f}: bad `expect`"));
    let named = faults.iter().filter(|n| v.opt(n).is_some()).count();
    match expect {
        Expect::Ok => assert_eq!(named, 0, "{f}: a positive vector names a fault"),
        _ => assert!(named > 0, "{f}: a negative vector must name its fault"),
    }

    let key = v.bytes("key");
    let keys = Keys::from_key_bytes(&key);
    let seal_key = v.opt_bytes("seal_key").unwrap_or_else(|| key.clone());
    let context = v.bytes("context");
    let seal_context = v
        .opt_bytes("seal_context")
        .unwrap_or_else(|| context.clone());
    let plaintext = v.bytes("plaintext");
    let sealed = v.bytes("sealed");
    let nonce: [u8; NONCE_LEN] = v
        .bytes("nonce")
        .try_into()
        .unwrap_or_else(|_| panic!("{f}: nonce is not {NONCE_LEN} bytes"));

    // The code reproduces the stored bytes, fault included.
    let mut again = Vec::new();
    Keys::from_key_bytes(&seal_key).seal_with_nonce(
        kind,
        &seal_context,
        &plaintext,
        &nonce,
        &mut again,
    );
    if let Some(d) = v.opt("damage") {
        Damage::parse(d)
            .unwrap_or_else(|| panic!("{f}: bad `damage`"))
            .apply(&mut again);
    }
    assert_eq!(
        hex::encode(&again),
        hex::encode(&sealed),
        "{f}: sealing `plaintext` with `nonce` does not give `sealed`"
    );

    // The contexts are what the docs say they are.
    match kind {
        Kind::Packed => unreachable!("{f}: compressed chunks have check_packed"),
        Kind::Chunk => {
            assert_eq!(v.bytes("chunk_id"), context, "{f}: context is not chunk_id");
            let id_key = doc_subkey(&seal_key, "chute chunk id");
            let id_of = v.opt_bytes("id_of").unwrap_or_else(|| plaintext.clone());
            assert_eq!(
                seal_context,
                doc_hmac(&id_key, &[&id_of]),
                "{f}: the seal context is not the chunk id per the docs"
            );
            assert_eq!(
                seal_context,
                Keys::from_key_bytes(&seal_key).chunk_id(&id_of),
                "{f}: Keys::chunk_id"
            );
        }
        Kind::Manifest | Kind::PackMap => {
            let last = match v.str("last") {
                "0" => false,
                "1" => true,
                _ => panic!("{f}: `last` is 0 or 1"),
            };
            let want = segment_context(v.str("blob"), v.num("segment"), last);
            assert_eq!(context, want, "{f}: context is not blob || segment || last");
        }
        Kind::Header | Kind::PackHeader => {
            assert_eq!(context, v.str("blob").as_bytes(), "{f}: context")
        }
        Kind::Node => {
            assert_eq!(v.bytes("node_id"), context, "{f}: context is not node_id");
            let id_key = doc_subkey(&seal_key, "chute manifest node id");
            let id_of = v.opt_bytes("id_of").unwrap_or_else(|| plaintext.clone());
            assert_eq!(
                seal_context,
                doc_hmac(&id_key, &[&id_of]),
                "{f}: the seal context is not the node id per the docs"
            );
            assert_eq!(
                seal_context,
                Keys::from_key_bytes(&seal_key).node_id(&id_of),
                "{f}: Keys::node_id"
            );
        }
    }

    // Opening gives exactly the expected outcome, by every road; a chunk with the
    // wrong content still opens as a sealed object, and fails only as a chunk.
    let sealed_expect = match expect {
        Expect::WrongContent | Expect::Malformed => Expect::Ok,
        e => e,
    };
    let opened = keys.open(kind, &context, &sealed);
    assert_eq!(Expect::of(&opened), sealed_expect, "{f}: Keys::open");
    if let Ok(p) = &opened {
        assert_eq!(*p, plaintext, "{f}: Keys::open plaintext");
    }
    let mut buf = sealed.clone();
    let in_place = keys
        .open_in_place(kind, &context, &mut buf)
        .map(|p| p.to_vec());
    assert_eq!(in_place, opened, "{f}: Keys::open_in_place");
    let by_docs = doc_open(&key, kind, &context, &sealed);
    match sealed_expect {
        Expect::Ok => assert_eq!(by_docs.as_ref(), Some(&plaintext), "{f}: open per the docs"),
        _ => assert_eq!(by_docs, None, "{f}: opens per the docs"),
    }
    let from_format = |e: format::Error| match e {
        format::Error::Open(o) => o,
        other => panic!("{f}: format error {other} instead of an open error"),
    };
    match kind {
        Kind::Packed => unreachable!("{f}: compressed chunks have check_packed"),
        Kind::Chunk => {
            let mut buf = sealed.clone();
            let mut out = Vec::new();
            let chunk = keys.open_chunk(
                &context.clone().try_into().expect("32"),
                0,
                &mut buf,
                &mut out,
            );
            assert_eq!(Expect::of(&chunk), expect, "{f}: Keys::open_chunk");
            if let Some(p) = by_docs {
                let id_key = doc_subkey(&key, "chute chunk id");
                let whole = doc_hmac(&id_key, &[&p]).as_slice() == context.as_slice();
                assert_eq!(whole, expect == Expect::Ok, "{f}: id check per the docs");
            }
        }
        Kind::Manifest => {
            if v.str("segment") != "0" || v.str("last") != "1" {
                return;
            }
            let fetch = |o: u64, l: u64| Ok(sealed[o as usize..(o + l) as usize].to_vec());
            let v2 = plaintext.first() == Some(&format::MANIFEST_VERSION);
            let m = if v2 {
                let h = Header {
                    manifest_len: sealed.len() as u64,
                    segments: 1,
                    table: vec![format::SegmentInfo {
                        sealed: sealed.len() as u32,
                        entries: 4,
                    }],
                    ..Header::default()
                };
                // A segment that does not open is lost, not an error.
                let fetch = |s: &format::Span| {
                    Ok(sealed[s.offset as usize..(s.offset + s.len) as usize].to_vec())
                };
                format::read_manifest(&keys, v.str("blob"), &h, fetch)
                    .map_err(from_format)
                    .and_then(|(m, lost)| match lost.is_empty() {
                        true => Ok(m),
                        false => Err(OpenError::Corrupt),
                    })
            } else {
                format::open_manifest(&keys, v.str("blob"), sealed.len() as u64, 1, fetch)
                    .map_err(from_format)
            };
            assert_eq!(Expect::of(&m), expect, "{f}: format::open_manifest");
            if let Ok(m) = m {
                let sample = sample_manifest(&keys);
                assert_eq!(m, sample, "{f}: decodes to something else than the sample");
                let encoded = match v2 {
                    true => sample_segment(&keys).0,
                    false => format::encode_manifest(&sample),
                };
                assert_eq!(encoded, plaintext, "{f}: encoding");
            }
        }
        Kind::Header | Kind::PackHeader => {
            let h =
                format::open_header(&keys, &index_for(v.str("blob"), &sealed)).map_err(from_format);
            assert_eq!(Expect::of(&h), expect, "{f}: format::open_header");
            if let Ok(h) = h {
                let sample = if kind == Kind::PackHeader {
                    sample_pack_header()
                } else if h.version == 6 {
                    sample_header_v6(&keys)
                } else if h.version == 5 {
                    sample_header_v5(&keys)
                } else if h.version == 4 {
                    sample_header_v4(&keys)
                } else if h.version == 1 {
                    sample_header_v1(&keys)
                } else if h.version == 2 {
                    sample_header_v2(&keys)
                } else {
                    sample_header(&keys)
                };
                assert_eq!(h, sample, "{f}: decodes to something else than the sample");
                let encoded = match h.version {
                    1 => encode_header_v1(&sample),
                    2 => encode_header_v2(&sample),
                    _ => format::encode_header(&sample),
                };
                assert_eq!(encoded, plaintext, "{f}: encoding");
            }
        }
        Kind::Node => check_node(v, &keys, &context, &sealed, &plaintext, expect),
        Kind::PackMap => {
            if v.str("segment") != "0" || v.str("last") != "1" {
                return;
            }
            let fetch = |o: u64, l: u64| Ok(sealed[o as usize..(o + l) as usize].to_vec());
            let map =
                format::ManifestReader::new(&keys, v.str("blob"), sealed.len() as u64, 1, fetch)
                    .map(format::ManifestReader::pack_map)
                    .and_then(|r| format::decode_pack_map(r, sample_pack_header().manifest_offset))
                    .map_err(|e| from_format(format::opened(e)));
            assert_eq!(Expect::of(&map), expect, "{f}: format::decode_pack_map");
            if let Ok(map) = map {
                assert_eq!(
                    map,
                    sample_pack_map(),
                    "{f}: decodes to something else than the sample"
                );
                assert_eq!(format::encode_pack_map(&map), plaintext, "{f}: encoding");
            }
        }
    }
}

#[test]
#[ignore = "rewrites tests/vectors; run by hand after a deliberate format change"]
fn regenerate() {
    let dir = dir();
    std::fs::create_dir_all(&dir).expect("create tests/vectors");
    for (name, text) in generate() {
        let path = dir.join(format!("{name}.txt"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn all_vectors() {
    let dir = dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut seen = Vec::new();
    for entry in entries {
        let path = entry.expect("read tests/vectors").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let Some(stem) = name.strip_suffix(".txt") else {
            panic!("{}: not a vector file (*.txt)", path.display());
        };
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check(&name, &text);
        seen.push(stem.to_string());
    }
    assert!(!seen.is_empty(), "no vectors in {}", dir.display());
    for r in REQUIRED {
        assert!(
            seen.iter().any(|s| s == r),
            "tests/vectors/{r}.txt is missing"
        );
    }
}

/// The files on disk are what `regenerate` would write: no stale or hand-edited vector.
#[test]
fn files_match_the_generator() {
    for (name, text) in generate() {
        let path = dir().join(format!("{name}.txt"));
        let on_disk =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            on_disk == text,
            "{name}.txt differs from the generator: run vectors::regenerate and review"
        );
    }
}

fn chunk_ok() -> String {
    std::fs::read_to_string(dir().join("chunk_ok.txt")).expect("tests/vectors/chunk_ok.txt")
}

#[test]
#[should_panic(expected = "unknown field `sealed_typo`")]
fn an_unknown_field_fails() {
    let mut text = chunk_ok();
    text.push_str("sealed_typo = 00\n");
    check("chunk_ok.txt", &text);
}

#[test]
#[should_panic(expected = "does not give `sealed`")]
fn an_edited_vector_fails() {
    // One ciphertext byte changed in `sealed` while the rest still claims `ok`.
    let text = chunk_ok();
    let at = text.find("sealed = ").expect("sealed field") + "sealed = ".len() + 2 * 40;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    check("chunk_ok.txt", &String::from_utf8(bytes).expect("ascii"));
}
