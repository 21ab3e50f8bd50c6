//! Every byte chute stores. This text is the contract; tests/vectors pins it.
//!
//! All integers are big-endian. `str16`/`bytes32` are a u16/u32 length followed by
//! that many bytes. Sizes and offsets are u64 everywhere (a Pi's `usize` is 32 bits)
//! and every length is checked against a cap before anything is allocated.
//!
//! # Keys
//! `master = SHA-256(key file bytes)`; subkeys are
//! `HKDF-SHA256(salt = "chute-v1", ikm = master, info = label, L = 32)` with labels
//! `"chute chunk seal"`, `"chute chunk id"`, `"chute manifest seal"`,
//! `"chute mount id"`, `"chute chunker gear"`, `"chute request auth"`,
//! `"chute storage challenge"`, `"chute manifest node id"`, `"chute manifest cut"`.
//!
//! # Sealed object (chunks, manifest segments, snapshot headers)
//! ```text
//! 0   4  magic "CHUT"
//! 4   1  version = 1
//! 5   1  kind: 1 chunk, 2 manifest segment, 3 snapshot header, 4 pack header,
//!          5 pack map segment, 6 manifest node (version 3), 7 compressed chunk
//! 6   24 nonce, fresh from the OS RNG for every seal
//! 30  n  XChaCha20 ciphertext of the n plaintext bytes
//! 30+n 16 Poly1305 tag
//! ```
//! Associated data = bytes 0..6 followed by the kind's context:
//! - chunk: its 32-byte chunk id, `HMAC-SHA256(chunk-id key, plaintext)`; sealed under
//!   the chunk key. Binding the id means a store cannot hand back another chunk.
//! - compressed chunk (kind 7, see [`crate::compress`]): as a chunk, but its
//!   plaintext is `u8 codec = 1` (LZ4 block format) then the LZ4 block of the
//!   chunk's content, and the id bound is that of the *uncompressed* content. A
//!   sink writes one only when it is at most 7/8 of the content (codec byte
//!   included); the manifest gives the content's length (below), and a reader
//!   decompresses into at most that many bytes and refuses, as corrupt, a chunk
//!   that does not come to exactly that length (or is opened as the other kind)
//!   before checking the id. Chunks of version 1 and 2 manifests are never
//!   compressed.
//! - manifest segment: the blob path (`domain/node/mount/timestamp`, UTF-8), the
//!   segment's index as u32, and 1 if it is the last segment else 0; sealed under the
//!   manifest key. Reordered, dropped, truncated or transplanted segments fail.
//! - snapshot header: the blob path; sealed under the manifest key.
//! - pack header and pack map segment: as snapshot header and manifest segment, with
//!   the pack's blob path.
//! - manifest node (version 3): its 32-byte node id, `HMAC-SHA256(node-id key,
//!   plaintext)`; sealed under the manifest key. As for a chunk, binding the id
//!   (and checking it on opening, [`Keys::open_node`]) means a store cannot hand
//!   back another node, and a node opens wherever it is kept.
//!
//! # Data part `0` of a snapshot blob
//! The sealed chunks that snapshot added (in any order, back to back, no framing),
//! then the sealed manifest segments (versions 1 and 2); a version 3 manifest's
//! nodes that the snapshot stored itself lie between the chunks instead, in runs
//! (a sink writes thousands of entries' nodes at once), found through the
//! header's root list and the tables. Nothing in part 0 says where one object ends:
//! the store sees one opaque run of bytes. Part 0 is uploaded in fixed windows of
//! `window` bytes (the last one shorter), whose SHA-256s the header records.
//!
//! # Manifest version 2 (read only: written from issue 16 to issue 17)
//! A list of entries in walk order (each directory before what it holds, names
//! sorted within a directory), cut into *segments* only at entry boundaries: a
//! segment ends at the last entry that keeps its plaintext within
//! [`SEGMENT_TARGET`] (64 KiB); an entry larger than that has a segment of its
//! own. The cut needs no look-ahead (a segment is known not to be the last when
//! the next entry does not fit in it), so a writer holds one segment
//! ([`SegmentWriter`], sealed by [`ManifestSealer`]) and a sink streams its
//! manifest. Every segment decodes on its own; its plaintext is
//! ```text
//! u8  version = 2
//! u32 blob count, then that many str16 blob paths: only the blobs this segment's
//!     chunk references use, indexed from 0 within the segment
//! u32 entry count, then the entries:
//!   u8  kind: 1 file, 2 directory, 3 symlink
//!   bytes32 path: absolute, raw bytes of the OS path (at most 64 KiB)
//!   u32 mode (permission bits, st_mode & 0o7777), u32 uid, u32 gid
//!   i64 mtime seconds, u32 mtime nanoseconds
//!   file:    u64 size, u64 device, u64 inode, i64 ctime s, u32 ctime ns,
//!            u32 chunk count, then per chunk:
//!            32 chunk id, u32 blob (index in this segment's table), u64 offset in
//!            that blob's part 0, u32 sealed length (plaintext length + 46)
//!   symlink: bytes32 target
//! ```
//! Each is sealed as a manifest segment (AD: blob path, u32 index, last flag),
//! back to back in part 0; the snapshot header's *segment table* (version 3) gives
//! each one's sealed length and entry count, so every segment is found and opened
//! without the others. A segment that does not open (or does not decode) loses its
//! entries only: readers ([`Entries`], [`read_manifest`]) return the rest and the
//! lost segments, named by the last path read before and the first after. A
//! reader rejects, as a lost segment, a file whose size is not the sum of its
//! chunks' plaintext lengths, a blob index not below the segment's blob count, a
//! sealed length under 46, an entry count other than the table's, and trailing
//! bytes. Chunk references may point into other snapshots' blobs (deduplication):
//! the blob tables name them. In memory ([`Manifest`]) the segments' tables are
//! merged into one, the snapshot's own blob first.
//!
//! Where the table lives, and why it is the manifest's second copy: the aim is
//! that damage to part 0's windows cannot take more than the segments it hits.
//! The table is sealed in the header, which is index.json's `sealed` field: a file
//! of its own, apart from every window, checked by the store like the windows and
//! already the snapshot's root (it holds the window hashes, the manifest's place
//! and the chain: if it does not open nothing of the snapshot can be read, so the
//! table adds no new point of failure). Cost, measured by the unit test
//! `segment_table_cost_per_100k_files`: 100,000 files of one chunk make 233
//! segments, 1,868 sealed bytes and 3,736 hex bytes of index.json, 0.4% of
//! `store::MAX_INDEX` (which [`seal_fitting`] guards by keeping fewer challenge
//! answers). Left for later: segments deduplicated across snapshots like chunks,
//! which self-contained segments allow.
//!
//! # Manifest version 1 (read only: written before issue 16)
//! One plaintext, cut into segments of [`SEGMENT`] bytes regardless of entries (the
//! last one at most that, never empty), sealed as above; a header of version 1 or
//! 2 (no segment table) describes it, and any bad segment fails it whole:
//! ```text
//! u8  version = 1
//! u32 blob count, then that many str16 blob paths  (blob 0 is the snapshot's own)
//! u64 entry count, then the entries as in version 2, blob indexes in this table
//! ```
//!
//! # Manifest version 3 (written since issue 17, see [`ManifestWriter`])
//! Every version 2 snapshot stores its whole manifest again (~170 B a file). A
//! version 3 manifest is a tree of sealed *nodes* (kind 6) that deduplicate like
//! chunks: a node's id is the keyed hash of its plaintext, nodes live in part 0 of
//! any blob (absolute offsets, like chunks), and a sink that finds a node's id
//! among its parent snapshot's nodes refers to that copy instead of storing it.
//! Cuts are content-defined, so an unchanged run of entries makes the same nodes
//! again even after changes before it. Two levels: *segments* hold entries,
//! *tables* list segments, and the header's root list (version 4) lists tables.
//!
//! Integers in nodes are LEB128 varints (`var`: 7 bits a byte, low first; a
//! writer uses the fewest bytes, a reader takes up to 19 for any field and
//! refuses a value too large for it); `zz(x)` is the zigzag map
//! (`(x << 1) ^ (x >> 127)` for i128, `>> 63` for i64) of a signed delta; a
//! `name` is `var` length then UTF-8 bytes (at most 65,535). Every node's
//! plaintext starts `u8 version = 3, u8 type`.
//!
//! Segment (type 1), self-contained (it decodes with nothing but itself):
//! ```text
//! u8 3, u8 1
//! var blob count, then names: the blobs this segment's chunk rows use
//! var chunk count, then rows: 32 chunk id, var blob (index in the segment's
//!     blob table), var offset in that blob's part 0, var sealed length (>= 46)
//!     (a row is one place: each (id, blob, offset, length) once per segment)
//! var entry count, then the entries, each relative to the one before it in
//! this segment (for the first: empty path, all zero):
//!   u8  kind | flags: kind 1 file, 2 directory, 3 symlink, 4 FIFO, 5 file
//!       with other hard links (st_nlink > 1; encoded as a file; restore links
//!       the kind 5 entries of one snapshot with the same device and inode) in
//!       the low 3 bits (4 and 5 written only under a version 6 header;
//!       under an older one they, the 0x08 flag and type 3 segments are
//!       damage: the segment is lost, never guessed at);
//!       0x08 extended attributes follow (written only under version 6);
//!       0x80 tag follows (files only), 0x40 uid and gid are the previous
//!       entry's, 0x20 mode is the previous entry's, 0x10 device is the
//!       previous file's (files only); other bits zero
//!   var shared (bytes of the previous path it starts with), var suffix
//!       length, suffix bytes (the path at most 64 KiB)
//!   var mode (unless 0x20), var uid, var gid (unless 0x40)
//!   var zz(mtime - previous entry's mtime), both in nanoseconds since the
//!       epoch as i128 (a nanosecond field of 10^9 or more is stored as
//!       999,999,999)
//!   file:    var size, var device (unless 0x10),
//!            var zz(inode - previous file's inode) (u64 wrapping, as i64),
//!            var zz(ctime - its mtime) in nanoseconds,
//!            var ref count, then per ref: var chunk row, var skip, var take
//!            (the file's bytes are `take` plaintext bytes of the chunk from
//!            `skip`); then the 8-byte tag if flagged
//!   symlink: var target length, target bytes (at most 64 KiB)
//!   FIFO:    nothing more (as a directory)
//!   then, if the kind's 0x08 bit is set (version 6 headers only): var count
//!   (1..=256) of extended attributes in name order, each var name length
//!   (1..=255), name, var value length (at most 64 KiB), value
//! ```
//! Segment with compressed chunks (type 3, written since compression, under a
//! version 6 header only; a segment
//! without one is still type 1, byte for byte): as type 1, with after the chunk
//! rows
//! ```text
//! var n (>= 1), then n pairs: var row (ascending), var content length
//! ```
//! naming the rows whose chunks are compressed (kind 7) and their uncompressed
//! length (at most `chunker::MAX`, and more than sealed length - 46); a row's
//! plaintext length below is then that length.
//!
//! Table (type 2):
//! ```text
//! u8 3, u8 2
//! var blob count, then names
//! var child count (1..=1024), then per child segment in walk order: 32 node id,
//!     var blob (index in the table's blob table), var offset, var sealed
//!     length, var entry count
//! ```
//! Cuts. A segment ends after an entry when its plaintext is at least
//! [`SEGMENT_MIN`] (512) bytes and `cut_hash(path) % 16 == 0`, where
//! `cut_hash(b)` is the first 4 bytes (big-endian) of `HMAC-SHA256(cut key, b)`
//! ([`Keys::cut_hash`], computed only past the minimum); and before an entry that
//! would take it past [`SEGMENT_TARGET`] (64 KiB): an entry larger than that has a
//! segment of its own. A table ends after a child when it holds at least 16
//! children and `cut_hash(child id) % 64 == 0`, or at 1024 children. A manifest
//! of no entries is one empty segment in one table. Typical sizes (unit tests
//! `entry_size_figure`, `cuts_resync_after_changes`): a bench entry
//! (`/d/123/45/f0001234`, 1–3 KiB, one slice of a shared chunk, a tag) takes 32
//! bytes of plaintext, segments ~1 KiB (~30 entries), tables ~80 children.
//! Measured: the 50,000-file bench set (1–3 KiB files, 100 MB) stores 1.7 MB of
//! nodes in its first snapshot, none in a no-change one, and 0.7 MB when every
//! 100th file changed (69% of segments kept): manifests are 2.4% of the data. A
//! no-change snapshot of 1,000,000 files stores no node; its root list (397
//! tables over 32,619 segments) is 22 KB of header, 45 KB of index.json
//! (`no_change_snapshot_of_a_million_files`).
//!
//! Readers check, a failure losing the node (its entries, or for a table all its
//! segments' entries, as one range in [`Entries::lost`]): the id (the plaintext
//! hashes to it), version and type, every index in range, skip + take within the
//! chunk's plaintext (sealed length - 46, or a compressed row's length), size = the sum of the takes, sealed
//! lengths of at least 46 (nodes: 48), counts against the bytes left before
//! allocating, no trailing bytes, a segment's entry count equal to its table's
//! and a table's children's counts summing to its root list entry's. Reads are
//! spans ([`Span`]): nodes that follow one another in one blob are read together,
//! up to 1 MiB; bytes a store does not hold cost only the nodes in them.
//!
//! # Snapshot header (plaintext of the sealed `sealed` field of index.json)
//! ```text
//! u8  version = 3 or 4 (1, 2: written before; read, see below)
//! i64 time seconds (UTC), u32 nanoseconds
//! str16 host name
//! u32 root count, then that many bytes32 roots (absolute paths backed up)
//! u64 files, u64 directories, u64 symlinks, u64 file bytes
//! u64 manifest offset in part 0, u64 manifest length (sealed), u32 segment count
//! u64 part 0 size
//! u32 window size, u32 window count, then that many 32-byte SHA-256s
//! -- versions 2 and 3:
//! u64 sequence number in the mount's chain (1 = its first snapshot on this
//!     remote; 0 in a pack's header)
//! 32  parent: chain id of the previous snapshot of the chain, zeros for none
//! -- version 3 only:
//! u32 table length: the segment count for a snapshot, 0 in a pack's header (pack
//!     maps keep version 1's segments), then per manifest segment in order:
//!     u32 sealed length, u32 entry count (the sealed lengths sum to the manifest
//!     length)
//! -- version 4 only, instead (a version 3 manifest's root list):
//! u32 blob count, then that many str16 blob paths
//! u32 table count (at least 1), then per table node in walk order: 32 node id,
//!     u32 blob (index in that list), u64 offset in its part 0, u32 sealed
//!     length, u64 entry count
//! -- version 5 only (a version 4 header with tags; written only when the
//!    snapshot has tags, so an untagged one stays version 4), after the root list:
//! u8  tag count (1..=MAX_TAGS = 32), then that many str16 tags (each 1..=64
//!     bytes of UTF-8, no comma, no control character; see [`check_tag`])
//! -- version 6, the same, but the tag count may be 0 (a version 6 header's
//!    manifest may hold FIFOs, hard-linked files, extended attributes and
//!    compressed chunks (type 3 segments), which version 5 readers do not
//!    know; written only then)
//! -- versions 2 to 6:
//! u8  challenges per window K (at most MAX_CHALLENGES = 8), then for every window
//!     in order K answers of 8 bytes (see "Storage challenges")
//! ```
//! A version 1 header reads as sequence 0, no parent and no challenges: it is
//! outside every chain (see [`crate::chain`]) and verify checks its windows by
//! download or by the store's hashes only. A version 1 or 2 header describes a
//! version 1 manifest, a version 3 header a version 2 one, a version 4 or 5
//! header a version 3 one (a version 6 header, one that may use kinds 4 and 5). Tags (`chute sink --tag`) live only here, sealed: the
//! store never sees them. In a version 4 or 5 header `manifest offset` and `manifest length`
//! are the range of part 0 holding the nodes the snapshot stored itself (0 and 0
//! if it stored none: every node was its parent's), which readers do not use, and
//! `segment count` is the number of segment nodes of the manifest.
//!
//! # The chain
//! A snapshot's *chain id* is the SHA-256 of its sealed header's bytes (the
//! `sealed` field of index.json, hex-decoded): unique (the seal has a random
//! nonce) and, sealed, bound to the blob path. Snapshots of one mount (one set of
//! roots, so two path sets sunk at once never race) on one remote form a chain:
//! each seals its predecessor's chain id and a sequence number one higher. The
//! predecessor is the newest snapshot of the mount the store listed at the sink;
//! the number is one past the highest the node knows of (its record, and every
//! snapshot of the mount the store shows, forgotten ones too), so after a forget
//! of the newest it skips one, and a skip whose sealed parent is shown is no gap.
//! Only the sealed parent counts: index.json's `parent` is the store's to read
//! and unauthenticated. [`crate::chain`] holds the checks and the node's record.
//!
//! # Storage challenges
//! For challenge `j` (`0..K`) of window `w` of the blob at path `P`, the nonce is
//! the 32 bytes of `HMAC-SHA256(challenge key, P || u32 w || u8 j)`, the
//! challenge key being the `"chute storage challenge"` subkey; the answer is the
//! 16-byte Poly1305 tag (RFC 8439, unpadded message) of the window's bytes with the
//! nonce as its one-time key, of which the header keeps the first 8 bytes. A store
//! answers only by reading every byte of the window; the node learns a nonce's
//! answer only by spending it, so each works once (a one-time key, as Poly1305
//! needs). Poly1305 rather than HMAC-SHA256: a sink computes K of them over every
//! byte it sends, and on a board without SHA instructions that is the difference
//! between a few percent and doubling the sink's CPU.
//!
//! A sink and a pack record K = [`CHALLENGES`] (4) answers per window, computed
//! from the bytes as they are sent (a resumed sink takes those of the windows an
//! interrupted run sent from its journal). A snapshot too large for 4 per window
//! in `store::MAX_INDEX` keeps fewer (see [`seal_fitting`]). `chute verify`
//! without download spends challenge `j` of a blob on its `j+1`-th run that checks
//! the blob (the node counts in its cache dir, see [`crate::verify`]): a
//! snapshot's windows are proven held by the store for K runs. After that, and for
//! a version 1 header (K = 0), verify checks them by the store's hashes only and
//! says so; only `--read-data` (or `--read-data-subset`, over time) then checks
//! the data itself. A spent nonce is never reused (the store has seen its answer).
//!
//! # Packs (written by `chute prune` when it repacks)
//! A pack is a blob of the node like a snapshot's, under the mount id of the empty
//! root list (`mount_id([])`, which no snapshot has: a sink has at least one root).
//! Its part 0 holds sealed chunks copied byte for byte out of blobs that are mostly
//! unused (a chunk's seal binds its id, not its place, so a copy still opens), then
//! the pack map, sealed in segments exactly like a version 1 manifest but as kind 5. The
//! sealed field of its index.json is a pack header (kind 4) whose plaintext is laid
//! out as a snapshot header's, with host empty, no roots, files = the chunk count,
//! directories = symlinks = 0, file bytes = the chunks' sealed bytes, and the
//! manifest fields describing the pack map. Pack map plaintext:
//! ```text
//! u8  version = 1
//! u64 chunk count, then per chunk in part 0 order (offsets ascending, no overlap,
//!     all before the map): 32 chunk id, u64 offset in part 0, u32 sealed length
//! ```
//! A reader resolves a chunk reference `(id, blob, offset)` of a manifest: a blob
//! that is a committed snapshot holds it where the reference says; otherwise the
//! newest committed pack whose map lists the id holds it; otherwise the referenced
//! blob (forgotten, not yet pruned) still does.
//!
//! # index.json (what the store reads; the prototype's fields)
//! `{"version":1,"domain":D,"node":N,"mount":M,"timestamp":T,"parent":P|null,
//! "size":S,"sealed":HEX}`. `mount` is the hex of the first 16 bytes of
//! `HMAC-SHA256(mount key, for each root: u64 length, bytes)`: never the path.
//! `parent` is the URI path of the previous snapshot of the same mount, or null.
//! `timestamp` is UTC `YYYYMMDDTHHMMSS.ffffffZ`. `size` is the length of part 0;
//! `sealed` is the hex of the sealed snapshot header. The index first POSTed to
//! create the blob has neither `size` nor `sealed`.

use crate::crypto::{ChallengeMac, ChallengeNonce, ChunkId, Keys, Kind, OVERHEAD, OpenError};
use std::fmt;
use std::io::{self, Read};

mod v3;
pub use v3::{
    MANIFEST_V3, ManifestWriter, NODE_SEGMENT, NODE_TABLE, NodeRef, Root, SEGMENT_CUT, SEGMENT_MIN,
    TABLE_CUT, TABLE_MAX, TABLE_MIN,
};
#[cfg(test)] // the vectors decode nodes by type
pub(crate) use v3::{decode_segment as decode_segment_v3, decode_table};

/// Format version of pack maps, index.json and version 1 manifests.
pub const VERSION: u8 = 1;
/// Format version of the last segment-only manifests (2: self-contained
/// segments cut at entry boundaries; 1, one plaintext cut every [`SEGMENT`]
/// bytes); both are still read. Sinks write version 3 ([`MANIFEST_V3`]).
pub const MANIFEST_VERSION: u8 = 2;
/// Format version of snapshot and pack headers (2 added the chain and challenges,
/// 3 the manifest's segment table).
pub const HEADER_VERSION: u8 = 3;
/// Header version 4: as 3, the segment table replaced by a version 3 manifest's
/// root list. Read by this build; written by [`encode_header`] for a header that
/// has a root list ([`Header::nodes`], set by [`Root::set_in`]).
pub const HEADER_V4: u8 = 4;
/// Header version 5: as 4, with the snapshot's tags after the root list.
/// Written by [`encode_header`] only for a header that has tags.
pub const HEADER_V5: u8 = 5;
/// Header version 6: as 5, the tag count may be 0, and the manifest may hold
/// entries version 5 cannot read (FIFOs, hard-linked files, extended
/// attributes, compressed chunks: see "Manifest version 3"). Written by [`encode_header`] for a header whose manifest holds
/// one ([`Header::version`] set to it by [`Root::set_in`]), so an older chute
/// says it is too old instead of losing those entries' segments.
pub const HEADER_V6: u8 = 6;
/// Most tags a header holds.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 64;

/// Why `t` cannot be a tag (empty, longer than [`MAX_TAG_LEN`] bytes, a comma
/// or a control character), or `None` if it can.
pub fn check_tag(t: &str) -> Option<&'static str> {
    if t.is_empty() {
        Some("is empty")
    } else if t.len() > MAX_TAG_LEN {
        Some("is longer than 64 bytes")
    } else if t.contains(',') {
        Some("holds a comma")
    } else if t.chars().any(char::is_control) {
        Some("holds a control character")
    } else {
        None
    }
}

/// Most storage challenges a header keeps per window.
pub const MAX_CHALLENGES: u8 = 8;
/// Bytes of a challenge answer a header keeps.
pub const ANSWER_LEN: usize = 8;
/// Storage challenges a sink or a pack records per window (K): `chute verify`
/// spends one per run, so a snapshot's windows can be proven held this many runs.
/// Cost: K × [`ANSWER_LEN`] = 32 bytes per window in the sealed header, 64 in
/// index.json (hex), as much again as the window's SHA-256: a committed index
/// (at most `store::MAX_INDEX` = 1 MiB) holds about 8,000 windows instead of about
/// 16,000, so 16 GiB of new data a snapshot in 2 MiB windows (32 GiB in 4 MiB
/// ones). A larger snapshot keeps fewer answers per window, down to none, rather
/// than fail ([`seal_fitting`]). CPU: K HMAC-SHA256 passes over every byte sent.
pub const CHALLENGES: u8 = 4;
/// Plaintext bytes per pack map segment and per version 1 manifest segment.
pub const SEGMENT: usize = 1 << 20;
/// Plaintext bytes a version 2 manifest segment is cut at (it ends at the first
/// entry boundary at or before this; an entry larger than it has a segment of its own).
pub const SEGMENT_TARGET: usize = 64 << 10;
/// Longest path or symlink target accepted.
const MAX_PATH: u32 = 64 << 10;
/// Most chunks one file may have (4 TiB of 256 KiB chunks).
const MAX_CHUNKS: u32 = 1 << 24;
/// Most blobs one manifest may reference.
const MAX_BLOBS: u32 = 1 << 20;
/// Most roots or windows a header may list.
const MAX_LIST: u32 = 1 << 24;

/// A decoding failure.
#[derive(Debug)]
pub enum Error {
    /// The plaintext is not well-formed (only possible with a bug or a forged key).
    Malformed(&'static str),
    /// Written by a newer chute: the version found, and the newest this build reads.
    Newer(u8, u8),
    /// A sealed piece did not open.
    Open(OpenError),
    /// Reading failed.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed(what) => write!(f, "malformed {what}"),
            Error::Newer(v, reads) => write!(
                f,
                "written by a newer chute (format {v}, this build reads up to {reads})"
            ),
            Error::Open(e) => e.fmt(f),
            Error::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::Malformed("object (truncated)")
        } else {
            Error::Io(e)
        }
    }
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Error {
        Error::Open(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    /// A named pipe (manifest version 3, header version 6): recreated empty.
    Fifo = 4,
}

/// Where a sealed chunk lives, and which of its plaintext bytes are the file's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    /// Index into the manifest's blob table.
    pub blob: u32,
    pub offset: u64,
    /// Sealed length: plaintext + [`OVERHEAD`] (for a compressed chunk, the
    /// compressed plaintext's).
    pub len: u32,
    /// 0 for a chunk stored as it is; else it is stored compressed (a sealed
    /// object of kind 7) and this is its uncompressed length.
    pub raw: u32,
    /// The file's bytes are `take` plaintext bytes from `skip`: the whole chunk
    /// (0, plain length) unless small files share it (manifest version 3).
    pub skip: u32,
    pub take: u32,
}

impl ChunkRef {
    /// A reference to the whole chunk.
    pub fn whole(id: ChunkId, blob: u32, offset: u64, len: u32) -> ChunkRef {
        let take = len.saturating_sub(OVERHEAD as u32);
        ChunkRef {
            id,
            blob,
            offset,
            len,
            raw: 0,
            skip: 0,
            take,
        }
    }

    /// A reference to the whole chunk, stored compressed if `raw` is not 0.
    pub fn whole_raw(id: ChunkId, blob: u32, offset: u64, len: u32, raw: u32) -> ChunkRef {
        match raw {
            0 => ChunkRef::whole(id, blob, offset, len),
            _ => ChunkRef {
                raw,
                take: raw,
                ..ChunkRef::whole(id, blob, offset, len)
            },
        }
    }

    /// Whether the file's bytes are the whole chunk.
    pub fn is_whole(&self) -> bool {
        self.skip == 0 && u64::from(self.take) == self.plain_len()
    }

    /// Plaintext length of the chunk (uncompressed).
    pub fn plain_len(&self) -> u64 {
        match self.raw {
            0 => u64::from(self.len).saturating_sub(OVERHEAD as u64),
            raw => u64::from(raw),
        }
    }
}

/// One file, directory or symlink of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub path: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_ns: u32,
    pub size: u64,
    pub dev: u64,
    pub inode: u64,
    pub ctime: i64,
    pub ctime_ns: u32,
    pub chunks: Vec<ChunkRef>,
    pub target: Vec<u8>,
    /// A file some of whose chunks it shares with other files (manifest version
    /// 3): the first 8 bytes of the keyed chunk id of its whole content, so that
    /// restore can tell the file is already in place without the shared chunks.
    pub tag: Option<[u8; 8]>,
    /// A file with other hard links (`st_nlink > 1` when read; manifest version
    /// 3, header version 6): restore links the entries of one snapshot that
    /// share its device and inode instead of writing each.
    pub linked: bool,
    /// Extended attributes (names sorted; POSIX ACLs among them), version 3
    /// manifests under a version 6 header: at most [`MAX_XATTRS`], each name at
    /// most 255 bytes and value at most [`MAX_XATTR_VALUE`].
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Most extended attributes an entry keeps.
pub const MAX_XATTRS: usize = 256;
/// Longest extended attribute value an entry keeps (Linux's own limit).
pub const MAX_XATTR_VALUE: usize = 64 * 1024;

impl Entry {
    /// Whether a reader will take the entry's chunk references: each slice
    /// within its chunk's plaintext and, for a file, the slices adding up to
    /// its size (a writer checks, since one bad entry loses its whole segment).
    pub fn consistent(&self) -> bool {
        let fits = |c: &ChunkRef| {
            c.len as usize >= OVERHEAD && u64::from(c.skip) + u64::from(c.take) <= c.plain_len()
        };
        let total: u64 = self.chunks.iter().map(|c| u64::from(c.take)).sum();
        self.chunks.iter().all(fits) && (self.kind != EntryKind::File || total == self.size)
    }

    /// An entry with every field but kind and path zero.
    pub fn new(kind: EntryKind, path: Vec<u8>) -> Entry {
        Entry {
            kind,
            path,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_ns: 0,
            size: 0,
            dev: 0,
            inode: 0,
            ctime: 0,
            ctime_ns: 0,
            chunks: Vec::new(),
            target: Vec::new(),
            tag: None,
            linked: false,
            xattrs: Vec::new(),
        }
    }
}

/// A decoded manifest.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest {
    pub blobs: Vec<String>,
    pub entries: Vec<Entry>,
}

/// One segment of a version 2 manifest, as the header's segment table lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SegmentInfo {
    /// Sealed length in part 0.
    pub sealed: u32,
    /// Entries it holds.
    pub entries: u32,
}

/// The decoded snapshot header.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Header {
    pub time: i64,
    pub time_ns: u32,
    pub host: String,
    pub roots: Vec<Vec<u8>>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub manifest_offset: u64,
    pub manifest_len: u64,
    pub segments: u32,
    /// The manifest's segment table (version 3 header of a snapshot): one per
    /// segment. Empty for a version 1 manifest (an older header) and in a pack's.
    pub table: Vec<SegmentInfo>,
    /// A version 3 manifest's root list (version 4 header): the blob table its
    /// nodes' `blob` indexes ...
    pub node_blobs: Vec<String>,
    /// ... and its table nodes in walk order. Empty in older headers.
    pub nodes: Vec<NodeRef>,
    pub part_size: u64,
    pub window: u32,
    pub window_hashes: Vec<[u8; 32]>,
    /// Place in the mount's chain: 1 for its first snapshot, 0 outside any chain
    /// (a version 1 header, a pack).
    pub seq: u64,
    /// The chain id ([`chain_id`]) of the previous snapshot of the chain; zeros for
    /// none.
    pub parent: [u8; 32],
    /// Challenges kept per window (K).
    pub challenges: u8,
    /// `K` answers of [`ANSWER_LEN`] bytes per window, window after window.
    pub answers: Vec<[u8; ANSWER_LEN]>,
    /// A pack's header (sealed as kind 4), not a snapshot's.
    pub pack: bool,
    /// The snapshot's tags, in the order given (version 5 header; empty before).
    pub tags: Vec<String>,
    /// The version it was written in (what [`encode_header`] writes is always
    /// [`HEADER_VERSION`]).
    pub version: u8,
}

impl Header {
    /// The recorded answer to challenge `j` of window `w`, if the header has one.
    pub fn answer(&self, w: usize, j: u8) -> Option<&[u8; ANSWER_LEN]> {
        if j >= self.challenges {
            return None;
        }
        self.answers
            .get(w * usize::from(self.challenges) + usize::from(j))
    }
}

/// A snapshot's chain id: the SHA-256 of its sealed header (the `sealed` field of
/// its index.json, hex-decoded). `None` for an index without a valid one.
pub fn chain_id(index: &Index) -> Option<[u8; 32]> {
    let sealed = crate::hex::decode(index.sealed.as_deref()?)?;
    Some(crate::crypto::sha256(&sealed))
}

/// The answer to a storage challenge (see "Storage challenges").
pub fn challenge_answer(nonce: &ChallengeNonce, window: &[u8]) -> [u8; 16] {
    let mut m = ChallengeMac::new(nonce);
    m.update(window);
    m.finalize()
}

/// The `K` answers a header records for one window (each the first
/// [`ANSWER_LEN`] bytes of [`challenge_answer`]). The K MACs run side by side over
/// 64 KiB pieces, so the window is read from memory once, not K times.
pub fn window_answers<const K: usize>(
    keys: &Keys,
    blob: &str,
    w: u32,
    window: &[u8],
) -> [[u8; ANSWER_LEN]; K] {
    let mut macs: [ChallengeMac; K] =
        std::array::from_fn(|j| ChallengeMac::new(&keys.challenge_nonce(blob, w, j as u8)));
    for piece in window.chunks(64 << 10) {
        for m in &mut macs {
            m.update(piece);
        }
    }
    macs.map(|m| m.finalize()[..ANSWER_LEN].try_into().expect("prefix"))
}

/// The [`CHALLENGES`] answers a sink or a pack records for each window, held
/// flat: one array a window, no allocation of its own.
pub type Answers = [[u8; ANSWER_LEN]; CHALLENGES as usize];

/// Seals `h` into `index` with as many of each window's recorded answers
/// (`answers[w]`) as let index.json stay within `max_index` bytes: all
/// [`CHALLENGES`] of them unless the snapshot is very large (see [`CHALLENGES`]),
/// then fewer, then none. Returns how many per window were kept.
pub fn seal_fitting(
    keys: &Keys,
    blob: &str,
    h: &mut Header,
    index: &mut Index,
    answers: &[Answers],
    max_index: u64,
) -> u8 {
    let most = if answers.is_empty() { 0 } else { CHALLENGES };
    for k in (0..=most).rev() {
        h.challenges = k;
        h.answers = answers
            .iter()
            .flat_map(|a| a[..usize::from(k)].iter().copied())
            .collect();
        index.sealed = Some(seal_header(keys, blob, h));
        if k == 0 || index.to_json().len() as u64 <= max_index {
            return k;
        }
    }
    0
}

/// Where chute's own index.json holds the sealed header: last, as
/// `,"sealed":"<hex digits>"}` and then only white space. Returns where that
/// comma is and where the digits are. Digits hold no quote or backslash, so the
/// value is exactly them; and the text is that object once the text before the
/// comma, closed with `}`, is one (the caller parses it): the comma is then
/// outside any string at the object's own level, unless it follows `{` (no
/// member before it), which JSON does not allow.
fn split_sealed(text: &str) -> Option<(usize, std::ops::Range<usize>)> {
    const KEY: &str = ",\"sealed\":\"";
    let json_space = [' ', '\t', '\n', '\r'];
    let body = text.trim_end_matches(json_space).strip_suffix("\"}")?;
    let at = body.rfind(KEY)?;
    let start = at + KEY.len();
    if !body[start..].bytes().all(|c| c.is_ascii_hexdigit())
        || text[..at].trim_end_matches(json_space).ends_with('{')
    {
        return None;
    }
    Some((at, start..body.len()))
}

/// The JSON index the store sees.
#[derive(miniserde::Serialize, miniserde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Index {
    pub version: u32,
    pub domain: String,
    pub node: String,
    pub mount: String,
    pub timestamp: String,
    pub parent: Option<String>,
    pub size: Option<u64>,
    pub sealed: Option<String>,
}

impl Index {
    /// Parses an index.json, refusing versions this build does not know.
    pub fn parse(bytes: &[u8]) -> Result<Index> {
        Index::from_vec(bytes.to_vec())
    }

    /// As [`Index::parse`], in the memory of `bytes`. The sealed header's hex is
    /// an index's bulk (~236 KB at 1,000,000 files; the rest is ~200 bytes), and
    /// when the text ends with it as chute writes it (`,"sealed":"<hex>"}`) it
    /// stays where it is, moved to the front of the text's own buffer, and the
    /// JSON parser reads only the rest. Parsed whole, the value was built in the
    /// parser's buffer (grown by doubling, on the heap) and copied out: three
    /// copies at once, a third of a MB held for a moment by every command that
    /// opened a large snapshot. Any other text (another order, spaces, escapes, the
    /// field twice) is parsed whole, to the same result.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Index> {
        let malformed = || Error::Malformed("index.json");
        let mut text = String::from_utf8(bytes).map_err(|_| malformed())?;
        let head = split_sealed(&text).and_then(|(at, hex)| {
            let head: Index = miniserde::json::from_str(&format!("{}}}", &text[..at])).ok()?;
            head.sealed.is_none().then_some((head, hex))
        });
        let idx = match head {
            Some((mut idx, hex)) => {
                text.truncate(hex.end);
                text.drain(..hex.start);
                text.shrink_to_fit();
                idx.sealed = Some(text);
                idx
            }
            None => miniserde::json::from_str(&text).map_err(|_| malformed())?,
        };
        if idx.version > u32::from(VERSION) {
            return Err(Error::Newer(idx.version.min(255) as u8, VERSION));
        }
        Ok(idx)
    }

    /// Serialises to JSON.
    pub fn to_json(&self) -> String {
        miniserde::json::to_string(self)
    }

    /// `domain/node/mount/timestamp`.
    pub fn blob_path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.domain, self.node, self.mount, self.timestamp
        )
    }
}

// ---- encoding -------------------------------------------------------------

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}
fn put_str16(out: &mut Vec<u8>, s: &str) {
    put_u16(out, s.len() as u16);
    out.extend_from_slice(s.as_bytes());
}

/// Encodes one entry.
pub fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    encode_entry_with(e, out, |b| b);
}

/// Encodes one entry, its chunks' blob indexes passed through `blob`.
fn encode_entry_with(e: &Entry, out: &mut Vec<u8>, mut blob: impl FnMut(u32) -> u32) {
    debug_assert!(
        e.tag.is_none() && e.chunks.iter().all(ChunkRef::is_whole),
        "versions 1 and 2 hold whole chunks only"
    );
    out.push(e.kind as u8);
    put_bytes32(out, &e.path);
    put_u32(out, e.mode);
    put_u32(out, e.uid);
    put_u32(out, e.gid);
    put_i64(out, e.mtime);
    put_u32(out, e.mtime_ns);
    match e.kind {
        EntryKind::File => {
            put_u64(out, e.size);
            put_u64(out, e.dev);
            put_u64(out, e.inode);
            put_i64(out, e.ctime);
            put_u32(out, e.ctime_ns);
            put_u32(out, e.chunks.len() as u32);
            for c in &e.chunks {
                out.extend_from_slice(&c.id);
                put_u32(out, blob(c.blob));
                put_u64(out, c.offset);
                put_u32(out, c.len);
            }
        }
        EntryKind::Dir => {}
        EntryKind::Symlink => put_bytes32(out, &e.target),
        // Version 2 has no FIFOs: sinks write version 3 (the decoder refuses kind 4).
        EntryKind::Fifo => {}
    }
}

/// Encodes a whole manifest's plaintext in version 1 (one plaintext, cut into
/// segments by [`seal_manifest`]): what older chutes wrote, kept for the vectors
/// and tests of the version 1 reader.
pub fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let mut out = vec![VERSION];
    put_u32(&mut out, m.blobs.len() as u32);
    for b in &m.blobs {
        put_str16(&mut out, b);
    }
    put_u64(&mut out, m.entries.len() as u64);
    for e in &m.entries {
        encode_entry(e, &mut out);
    }
    out
}

/// Encodes a snapshot header's plaintext.
pub fn encode_header(h: &Header) -> Vec<u8> {
    // Tags are written after the version 4 layout's root list: tags imply it.
    let v4 = h.version >= HEADER_V4 || !h.nodes.is_empty() || !h.tags.is_empty();
    let mut out = vec![match (v4, h.tags.is_empty()) {
        _ if h.version >= HEADER_V6 => HEADER_V6,
        (_, false) => HEADER_V5,
        (true, true) => HEADER_V4,
        (false, true) => HEADER_VERSION,
    }];
    put_i64(&mut out, h.time);
    put_u32(&mut out, h.time_ns);
    put_str16(&mut out, &h.host);
    put_u32(&mut out, h.roots.len() as u32);
    for r in &h.roots {
        put_bytes32(&mut out, r);
    }
    for v in [
        h.files,
        h.dirs,
        h.symlinks,
        h.bytes,
        h.manifest_offset,
        h.manifest_len,
    ] {
        put_u64(&mut out, v);
    }
    put_u32(&mut out, h.segments);
    put_u64(&mut out, h.part_size);
    put_u32(&mut out, h.window);
    put_u32(&mut out, h.window_hashes.len() as u32);
    for w in &h.window_hashes {
        out.extend_from_slice(w);
    }
    put_u64(&mut out, h.seq);
    out.extend_from_slice(&h.parent);
    if v4 {
        put_u32(&mut out, h.node_blobs.len() as u32);
        for b in &h.node_blobs {
            put_str16(&mut out, b);
        }
        put_u32(&mut out, h.nodes.len() as u32);
        for n in &h.nodes {
            out.extend_from_slice(&n.id);
            put_u32(&mut out, n.blob);
            put_u64(&mut out, n.offset);
            put_u32(&mut out, n.len);
            put_u64(&mut out, n.entries);
        }
        if !h.tags.is_empty() || h.version >= HEADER_V6 {
            debug_assert!(h.tags.len() <= MAX_TAGS, "checked by check_tags");
            out.push(h.tags.len() as u8);
            for t in &h.tags {
                put_str16(&mut out, t);
            }
        }
    } else {
        put_u32(&mut out, h.table.len() as u32);
        for t in &h.table {
            put_u32(&mut out, t.sealed);
            put_u32(&mut out, t.entries);
        }
    }
    out.push(h.challenges);
    for a in &h.answers {
        out.extend_from_slice(a);
    }
    out
}

// ---- decoding -------------------------------------------------------------

struct Dec<R> {
    r: R,
}

impl<R: Read> Dec<R> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn capped(&mut self, len: u32, cap: u32, what: &'static str) -> Result<Vec<u8>> {
        if len > cap {
            return Err(Error::Malformed(what));
        }
        let mut b = vec![0u8; len as usize];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }
    fn bytes32(&mut self, what: &'static str) -> Result<Vec<u8>> {
        let len = self.u32()?;
        self.capped(len, MAX_PATH, what)
    }
    fn str16(&mut self, what: &'static str) -> Result<String> {
        let len = self.u16()?;
        String::from_utf8(self.capped(u32::from(len), u32::from(u16::MAX), what)?)
            .map_err(|_| Error::Malformed(what))
    }
    fn version(&mut self) -> Result<()> {
        match self.u8()? {
            VERSION => Ok(()),
            v if v > VERSION => Err(Error::Newer(v, VERSION)),
            _ => Err(Error::Malformed("version")),
        }
    }
}

/// Decodes one manifest entry.
fn decode_entry<R: Read>(d: &mut Dec<R>, blobs: u32) -> Result<Entry> {
    let kind = match d.u8()? {
        1 => EntryKind::File,
        2 => EntryKind::Dir,
        3 => EntryKind::Symlink,
        _ => return Err(Error::Malformed("manifest entry kind")),
    };
    let mut e = Entry::new(kind, d.bytes32("path")?);
    e.mode = d.u32()?;
    e.uid = d.u32()?;
    e.gid = d.u32()?;
    e.mtime = d.i64()?;
    e.mtime_ns = d.u32()?;
    match kind {
        EntryKind::File => {
            e.size = d.u64()?;
            e.dev = d.u64()?;
            e.inode = d.u64()?;
            e.ctime = d.i64()?;
            e.ctime_ns = d.u32()?;
            let n = d.u32()?;
            if n > MAX_CHUNKS {
                return Err(Error::Malformed("chunk count"));
            }
            // Grow as chunks arrive rather than trusting the count for an allocation.
            for _ in 0..n {
                let c = ChunkRef::whole(d.array()?, d.u32()?, d.u64()?, d.u32()?);
                if c.blob >= blobs
                    || (c.len as usize) < OVERHEAD
                    || c.offset.checked_add(u64::from(c.len)).is_none()
                {
                    return Err(Error::Malformed("chunk reference"));
                }
                e.chunks.push(c);
            }
            let total: u64 = e.chunks.iter().map(|c| u64::from(c.take)).sum();
            if total != e.size {
                return Err(Error::Malformed("file size"));
            }
        }
        EntryKind::Dir | EntryKind::Fifo => {}
        EntryKind::Symlink => e.target = d.bytes32("symlink target")?,
    }
    Ok(e)
}

/// Reads a manifest one entry at a time, blob table first, so a caller can walk it
/// beside something else (sink walks the parent snapshot beside the disk) in
/// bounded memory.
pub struct ManifestStream<R> {
    d: Dec<R>,
    /// The blob table.
    pub blobs: Vec<String>,
    left: u64,
}

impl<R: Read> ManifestStream<R> {
    /// Reads the version and the blob table.
    pub fn new(r: R) -> Result<Self> {
        let mut d = Dec { r };
        d.version()?;
        let nblobs = d.u32()?;
        if nblobs > MAX_BLOBS {
            return Err(Error::Malformed("blob table"));
        }
        let mut blobs = Vec::new();
        for _ in 0..nblobs {
            blobs.push(d.str16("blob path")?);
        }
        let left = d.u64()?;
        Ok(ManifestStream { d, blobs, left })
    }

    /// The next entry, or `None` after the last (checking nothing follows it).
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.left == 0 {
            let mut rest = [0u8; 1];
            if self.d.r.read(&mut rest)? != 0 {
                return Err(Error::Malformed("manifest (trailing bytes)"));
            }
            return Ok(None);
        }
        self.left -= 1;
        decode_entry(&mut self.d, self.blobs.len() as u32).map(Some)
    }
}

/// Decodes a manifest from its plaintext stream.
pub fn decode_manifest<R: Read>(r: R) -> Result<Manifest> {
    let mut st = ManifestStream::new(r)?;
    let mut entries = Vec::new();
    while let Some(e) = st.next_entry()? {
        entries.push(e);
    }
    Ok(Manifest {
        blobs: st.blobs,
        entries,
    })
}

/// Decodes one version 2 segment's plaintext holding `expect` entries, adding the
/// blobs of its table to `blobs` (whose `at` maps names to indexes) and returning
/// its entries with their chunks' blob indexes in that table.
fn decode_segment(
    plain: &[u8],
    expect: u32,
    blobs: &mut Vec<String>,
    at: &mut std::collections::HashMap<String, u32>,
) -> Result<Vec<Entry>> {
    let mut d = Dec { r: plain };
    match d.u8()? {
        MANIFEST_VERSION => {}
        v if v > MANIFEST_VERSION => return Err(Error::Newer(v, MANIFEST_VERSION)),
        _ => return Err(Error::Malformed("manifest segment version")),
    }
    let n = d.u32()?;
    // Each name takes at least its 2-byte length.
    if u64::from(n) * 2 > d.r.len() as u64 {
        return Err(Error::Malformed("blob table"));
    }
    let mut names = Vec::new();
    for _ in 0..n {
        names.push(d.str16("blob path")?);
    }
    let count = d.u32()?;
    if count != expect {
        return Err(Error::Malformed("manifest segment (entry count)"));
    }
    let mut entries = Vec::new();
    for _ in 0..count {
        entries.push(decode_entry(&mut d, n)?);
    }
    if !d.r.is_empty() {
        return Err(Error::Malformed("manifest segment (trailing bytes)"));
    }
    if blobs.len() as u64 + u64::from(n) > u64::from(MAX_BLOBS) {
        return Err(Error::Malformed("blob table"));
    }
    let map: Vec<u32> = names
        .into_iter()
        .map(|name| {
            *at.entry(name.clone()).or_insert_with(|| {
                blobs.push(name);
                (blobs.len() - 1) as u32
            })
        })
        .collect();
    for c in entries.iter_mut().flat_map(|e| e.chunks.iter_mut()) {
        c.blob = map[c.blob as usize];
    }
    Ok(entries)
}

/// A manifest segment that did not open: its entries are lost, the rest are not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    /// The first segment's index (version 3: segment nodes in walk order, a lost
    /// table counting as one).
    pub segment: u32,
    /// How many segments in a row were lost (at least 1): one missing window can
    /// hold many.
    pub segments: u32,
    /// Entries they held (from the header's segment table; version 3: from the
    /// parent table or root list).
    pub entries: u32,
    /// The last path before it that was read, and the first after it: its
    /// entries lay between the two in walk order.
    pub before: Option<Vec<u8>>,
    pub after: Option<Vec<u8>>,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |p: &Option<Vec<u8>>, end: &'static str| match p {
            Some(p) => String::from_utf8_lossy(p).into_owned(),
            None => end.to_string(),
        };
        write!(
            f,
            "{} entr{} between {} and {} (manifest segment{} {})",
            self.entries,
            if self.entries == 1 { "y" } else { "ies" },
            name(&self.before, "the start"),
            name(&self.after, "the end"),
            if self.segments > 1 { "s" } else { "" },
            match self.segments {
                0 | 1 => self.segment.to_string(),
                n => format!("{}-{}", self.segment, self.segment + n - 1),
            }
        )
    }
}

/// Sealed manifest bytes a reader asks for: `len` bytes at absolute offset
/// `offset` of the part 0 of the blob at path `blob`. `nodes` are the version 3
/// nodes exactly covering the span, in order (empty for versions 1 and 2, whose
/// spans are always in the snapshot's own blob).
#[derive(Clone, Copy, Debug)]
pub struct Span<'a> {
    pub blob: &'a str,
    pub offset: u64,
    pub len: u64,
    pub nodes: &'a [NodeRef],
}

/// A manifest reader's source of sealed bytes ([`Entries::open`]): what the
/// store holds at a [`Span`]; bytes it does not hold are
/// [`io::ErrorKind::InvalidData`] (they lose only the segments in them).
pub trait SpanFetch: FnMut(&Span) -> io::Result<Vec<u8>> {}
impl<F: FnMut(&Span) -> io::Result<Vec<u8>>> SpanFetch for F {}

/// Records `entries` lost at segment `index`: one range with a loss right
/// before it.
fn lose(lost: &mut Vec<Lost>, index: u32, entries: u64, last: &Option<Vec<u8>>) {
    let entries = u32::try_from(entries).unwrap_or(u32::MAX);
    match lost.last_mut() {
        Some(l) if l.after.is_none() && l.segment + l.segments == index => {
            l.segments += 1;
            l.entries = l.entries.saturating_add(entries);
        }
        _ => lost.push(Lost {
            segment: index,
            segments: 1,
            entries,
            before: last.clone(),
            after: None,
        }),
    }
}

enum Source<'k, F> {
    V1(ManifestStream<SpanReader<'k, F>>),
    V3(Box<v3::Reader<'k, F>>),
    V2 {
        keys: &'k Keys,
        blob: String,
        base: u64,
        fetch: F,
        table: Vec<SegmentInfo>,
        next: usize,
        pos: u64,
        cur: std::vec::IntoIter<Entry>,
        /// Sealed segments fetched ahead, starting at manifest offset `ahead_at`.
        ahead: Vec<u8>,
        ahead_at: u64,
    },
}

/// Sealed manifest bytes a version 2 reader fetches at once: many small segments
/// in one ranged read, not one request each.
const READ_AHEAD: u64 = 1 << 20;

/// A snapshot's manifest read entry by entry in walk order, in bounded memory,
/// whichever its version. Chunk references index [`Entries::blobs`], which grows
/// as segments are read (blob 0 is the snapshot's own). A version 2 or 3 segment
/// (or version 3 table) that does not open (or does not decode) is skipped and
/// recorded in [`Entries::lost`]; in a version 1 manifest any bad segment is an
/// error.
pub struct Entries<'k, F> {
    src: Source<'k, F>,
    pub blobs: Vec<String>,
    at: std::collections::HashMap<String, u32>,
    pub lost: Vec<Lost>,
    last: Option<Vec<u8>>,
}

impl<'k, F> Entries<'k, F>
where
    F: FnMut(&Span) -> io::Result<Vec<u8>>,
{
    /// Opens the manifest `h` describes in the blob at path `blob`; `fetch`
    /// returns the sealed bytes of a [`Span`] (for versions 1 and 2: in `blob`,
    /// from `h.manifest_offset` on).
    pub fn open(keys: &'k Keys, blob: &str, h: &Header, fetch: F) -> Result<Self> {
        let (src, blobs) = if h.version >= HEADER_V4 || !h.nodes.is_empty() {
            // A decoded header has these checked; one built by hand may not.
            let len = h.node_blobs.len() as u64;
            if h.nodes.iter().any(|n| u64::from(n.blob) >= len) {
                return Err(Error::Malformed("root list"));
            }
            let src = Source::V3(Box::new(v3::Reader::new(keys, h, fetch)));
            (src, vec![blob.to_string()])
        } else if h.table.is_empty() {
            let cur = SegCursor::new(keys, blob, h.manifest_len, h.segments)?;
            let r = SpanReader {
                cur,
                blob: blob.to_string(),
                base: h.manifest_offset,
                fetch,
            };
            let st = ManifestStream::new(r).map_err(opened)?;
            let blobs = st.blobs.clone();
            (Source::V1(st), blobs)
        } else {
            let src = Source::V2 {
                keys,
                blob: blob.to_string(),
                base: h.manifest_offset,
                fetch,
                table: h.table.clone(),
                next: 0,
                pos: 0,
                cur: Vec::new().into_iter(),
                ahead: Vec::new(),
                ahead_at: 0,
            };
            (src, vec![blob.to_string()])
        };
        let at = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| (b.clone(), i as u32))
            .collect();
        Ok(Entries {
            src,
            blobs,
            at,
            lost: Vec::new(),
            last: None,
        })
    }

    /// Stops recording the nodes read, for a reader that never calls
    /// [`Entries::take_nodes`] (restore, verify): their list would grow with
    /// the manifest.
    pub fn without_nodes(mut self) -> Self {
        if let Source::V3(r) = &mut self.src {
            r.collect = false;
        }
        self
    }

    /// Every version 3 node (table or segment, opened or lost) read since the
    /// last call, with the path of the blob it was read from, in reading order:
    /// what a sink dedups new nodes against and prune marks used. Always empty
    /// for versions 1 and 2.
    pub fn take_nodes(&mut self) -> Vec<(String, NodeRef)> {
        match &mut self.src {
            Source::V3(r) => std::mem::take(&mut r.taken),
            _ => Vec::new(),
        }
    }

    /// The next entry that can be read, or `None` after the last. Errors are
    /// those of `fetch`, and any damage to a version 1 manifest.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        let e = match &mut self.src {
            Source::V1(st) => st.next_entry().map_err(opened)?,
            Source::V3(r) => r.next(&mut self.blobs, &mut self.at, &mut self.lost, &self.last)?,
            Source::V2 {
                keys,
                blob,
                base,
                fetch,
                table,
                next,
                pos,
                cur,
                ahead,
                ahead_at,
            } => loop {
                if let Some(e) = cur.next() {
                    break Some(e);
                }
                let Some(info) = table.get(*next).copied() else {
                    break None;
                };
                let len = u64::from(info.sealed);
                let held = if *pos >= *ahead_at && *pos + len <= *ahead_at + ahead.len() as u64 {
                    Ok(())
                } else {
                    let mut span = len;
                    for s in &table[*next + 1..] {
                        if span + u64::from(s.sealed) > READ_AHEAD {
                            break;
                        }
                        span += u64::from(s.sealed);
                    }
                    // Bytes the store does not hold (fetch's InvalidData) cost only
                    // the segments in them: after a failed span, this one alone.
                    let mut get = |len| {
                        fetch(&Span {
                            blob,
                            offset: *base + *pos,
                            len,
                            nodes: &[],
                        })
                    };
                    let got = match get(span) {
                        Err(e) if e.kind() == io::ErrorKind::InvalidData && span > len => get(len),
                        got => got,
                    };
                    *ahead_at = *pos;
                    match got {
                        Ok(b) if b.len() as u64 >= len => {
                            *ahead = b;
                            Ok(())
                        }
                        Ok(_) => {
                            return Err(Error::Io(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "short manifest read",
                            )));
                        }
                        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                            ahead.clear();
                            Err(Error::Malformed("manifest segment the store cannot read"))
                        }
                        Err(e) => return Err(Error::Io(e)),
                    }
                };
                let ctx = segment_context(blob, *next as u32, *next + 1 == table.len());
                let opened = held.and_then(|()| {
                    let from = (*pos - *ahead_at) as usize;
                    let mut sealed = ahead[from..from + len as usize].to_vec();
                    keys.open_in_place(Kind::Manifest, &ctx, &mut sealed)
                        .map_err(Error::Open)
                        .and_then(|plain| {
                            decode_segment(plain, info.entries, &mut self.blobs, &mut self.at)
                        })
                });
                match opened {
                    Ok(entries) => *cur = entries.into_iter(),
                    Err(Error::Io(e)) => return Err(Error::Io(e)),
                    // Right after another lost one: one range.
                    Err(_) => lose(
                        &mut self.lost,
                        *next as u32,
                        u64::from(info.entries),
                        &self.last,
                    ),
                }
                *pos += u64::from(info.sealed);
                *next += 1;
            },
        };
        if let Some(e) = &e {
            for l in self.lost.iter_mut().rev() {
                if l.after.is_some() {
                    break;
                }
                l.after = Some(e.path.clone());
            }
            self.last = Some(e.path.clone());
        }
        Ok(e)
    }
}

/// Reads a whole manifest: the entries of every segment that opens, and the
/// segments that do not (always none for a version 1 manifest, which fails whole).
pub fn read_manifest<F>(
    keys: &Keys,
    blob: &str,
    h: &Header,
    fetch: F,
) -> Result<(Manifest, Vec<Lost>)>
where
    F: FnMut(&Span) -> io::Result<Vec<u8>>,
{
    let mut r = Entries::open(keys, blob, h, fetch)?;
    let mut entries = Vec::new();
    while let Some(e) = r.next_entry()? {
        entries.push(e);
    }
    Ok((
        Manifest {
            blobs: r.blobs,
            entries,
        },
        r.lost,
    ))
}

/// Decodes a snapshot header's plaintext.
pub fn decode_header(b: &[u8]) -> Result<Header> {
    let mut d = Dec { r: b };
    let version = match d.u8()? {
        v @ 1..=HEADER_V6 => v,
        v if v > HEADER_V6 => return Err(Error::Newer(v, HEADER_V6)),
        _ => return Err(Error::Malformed("version")),
    };
    let mut h = Header {
        version,
        time: d.i64()?,
        time_ns: d.u32()?,
        host: d.str16("host")?,
        ..Header::default()
    };
    let n = d.u32()?;
    if n > MAX_LIST {
        return Err(Error::Malformed("roots"));
    }
    for _ in 0..n {
        h.roots.push(d.bytes32("root")?);
    }
    h.files = d.u64()?;
    h.dirs = d.u64()?;
    h.symlinks = d.u64()?;
    h.bytes = d.u64()?;
    h.manifest_offset = d.u64()?;
    h.manifest_len = d.u64()?;
    h.segments = d.u32()?;
    h.part_size = d.u64()?;
    h.window = d.u32()?;
    let n = d.u32()?;
    if n > MAX_LIST || u64::from(n) * 32 > d.r.len() as u64 {
        return Err(Error::Malformed("window list"));
    }
    h.window_hashes.reserve_exact(n as usize);
    for _ in 0..n {
        h.window_hashes.push(d.array()?);
    }
    if version >= 2 {
        h.seq = d.u64()?;
        h.parent = d.array()?;
        if version >= HEADER_V4 {
            let n = d.u32()?;
            // Each name takes at least its 2-byte length.
            if n > MAX_BLOBS || u64::from(n) * 2 > d.r.len() as u64 {
                return Err(Error::Malformed("root list"));
            }
            for _ in 0..n {
                h.node_blobs.push(d.str16("blob path")?);
            }
            let m = d.u32()?;
            if m == 0 || u64::from(m) * 56 > d.r.len() as u64 {
                return Err(Error::Malformed("root list"));
            }
            let mut sum = 0u64;
            for _ in 0..m {
                let r = NodeRef {
                    id: d.array()?,
                    blob: d.u32()?,
                    offset: d.u64()?,
                    len: d.u32()?,
                    entries: d.u64()?,
                };
                sum = sum
                    .checked_add(r.entries)
                    .ok_or(Error::Malformed("root list"))?;
                if r.blob >= n
                    || (r.len as usize) < OVERHEAD + 2
                    || r.offset.checked_add(u64::from(r.len)).is_none()
                {
                    return Err(Error::Malformed("root list"));
                }
                h.nodes.push(r);
            }
            if version >= HEADER_V5 {
                let tags = d.u8()?;
                if (tags == 0 && version == HEADER_V5) || usize::from(tags) > MAX_TAGS {
                    return Err(Error::Malformed("tags"));
                }
                for _ in 0..tags {
                    let t = d.str16("tag")?;
                    if check_tag(&t).is_some() {
                        return Err(Error::Malformed("tag"));
                    }
                    h.tags.push(t);
                }
            }
        } else if version >= 3 {
            let n = d.u32()?;
            if u64::from(n) * 8 > d.r.len() as u64 {
                return Err(Error::Malformed("segment table"));
            }
            for _ in 0..n {
                h.table.push(SegmentInfo {
                    sealed: d.u32()?,
                    entries: d.u32()?,
                });
            }
            let sum: u64 = h.table.iter().map(|t| u64::from(t.sealed)).sum();
            let fits = h.table.is_empty()
                || (n == h.segments
                    && sum == h.manifest_len
                    && h.table.iter().all(|t| t.sealed as usize >= OVERHEAD + 9));
            if !fits {
                return Err(Error::Malformed("segment table"));
            }
        }
        h.challenges = d.u8()?;
        if h.challenges > MAX_CHALLENGES {
            return Err(Error::Malformed("challenge count"));
        }
        let answers = u64::from(n) * u64::from(h.challenges);
        if answers * ANSWER_LEN as u64 != d.r.len() as u64 {
            return Err(Error::Malformed("challenge answers"));
        }
        h.answers.reserve_exact(answers as usize);
        for _ in 0..answers {
            h.answers.push(d.array()?);
        }
    }
    if !d.r.is_empty() {
        return Err(Error::Malformed("header (trailing bytes)"));
    }
    Ok(h)
}

// ---- sealing the pieces ---------------------------------------------------

fn segment_context(blob: &str, index: u32, last: bool) -> Vec<u8> {
    let mut c = blob.as_bytes().to_vec();
    c.extend_from_slice(&index.to_be_bytes());
    c.push(u8::from(last));
    c
}

/// Seals a manifest's plaintext into back-to-back segments. Returns the bytes and
/// the segment count.
pub fn seal_manifest(keys: &Keys, blob: &str, plain: &[u8]) -> (Vec<u8>, u32) {
    seal_segments(keys, Kind::Manifest, blob, plain)
}

/// Seals a pack map's plaintext into back-to-back segments, as [`seal_manifest`].
pub fn seal_pack_map(keys: &Keys, blob: &str, plain: &[u8]) -> (Vec<u8>, u32) {
    seal_segments(keys, Kind::PackMap, blob, plain)
}

fn seal_segments(keys: &Keys, kind: Kind, blob: &str, plain: &[u8]) -> (Vec<u8>, u32) {
    let count = plain.len().div_ceil(SEGMENT).max(1);
    let mut out = Vec::with_capacity(plain.len() + count * OVERHEAD);
    for i in 0..count {
        let piece = &plain[i * SEGMENT..((i + 1) * SEGMENT).min(plain.len())];
        let ctx = segment_context(blob, i as u32, i + 1 == count);
        keys.seal_into(kind, &ctx, piece, &mut out);
    }
    (out, count as u32)
}

/// The plaintexts of a version 2 manifest's segments, in order, each with its
/// entry count and whether it is the last, handed to `emit` one at a time (at
/// most one segment is held): cut at the entry boundary at or before
/// [`SEGMENT_TARGET`] bytes, each with the blob table of the blobs its entries use.
pub fn manifest_segments<E>(
    m: &Manifest,
    mut emit: impl FnMut(&[u8], u32, bool) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let mut w = SegmentWriter::default();
    for entry in &m.entries {
        w.push(entry, |b| m.blobs[b as usize].clone(), &mut emit)?;
    }
    w.finish(emit)
}

/// A version 2 manifest's plaintext cut into segments as entries are pushed in
/// walk order: the one implementation of the cut rule and the segment encoding
/// ([`manifest_segments`] and [`ManifestSealer`] use it). It holds one segment:
/// a segment is handed out when the next entry does not fit (so it is not the
/// last) or at [`SegmentWriter::finish`] (the last, possibly empty).
#[derive(Default)]
pub struct SegmentWriter {
    /// The caller's blob index -> index in this segment's table.
    local: std::collections::HashMap<u32, u32>,
    names: Vec<String>,
    names_len: usize,
    body: Vec<u8>,
    count: u32,
    e: Vec<u8>,
    plain: Vec<u8>,
}

impl SegmentWriter {
    /// Adds `entry`, whose chunk references index the caller's blob table
    /// (`name` gives a blob's path, asked only for blobs new to the segment);
    /// hands the finished segment to `emit` (plaintext, entry count, last = false)
    /// if the entry starts a new one.
    pub fn push<E>(
        &mut self,
        entry: &Entry,
        mut name: impl FnMut(u32) -> String,
        emit: impl FnOnce(&[u8], u32, bool) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut new: Vec<u32> = Vec::new();
        for c in &entry.chunks {
            if !self.local.contains_key(&c.blob) && !new.contains(&c.blob) {
                new.push(c.blob);
            }
        }
        let mut new_names: Vec<(u32, String)> = new.iter().map(|&b| (b, name(b))).collect();
        let extra: usize = new_names.iter().map(|(_, n)| 2 + n.len()).sum();
        self.e.clear();
        encode_entry(entry, &mut self.e);
        if self.count > 0
            && 9 + self.names_len + self.body.len() + extra + self.e.len() > SEGMENT_TARGET
        {
            self.flush(false, emit)?;
            new_names.clear();
        }
        for c in &entry.chunks {
            if let std::collections::hash_map::Entry::Vacant(v) = self.local.entry(c.blob) {
                v.insert(self.names.len() as u32);
                let n = match new_names.iter().position(|(b, _)| *b == c.blob) {
                    Some(i) => new_names.swap_remove(i).1,
                    None => name(c.blob),
                };
                self.names_len += 2 + n.len();
                self.names.push(n);
            }
        }
        let local = &self.local;
        encode_entry_with(entry, &mut self.body, |b| local[&b]);
        self.count += 1;
        Ok(())
    }

    /// Hands the last segment to `emit` (a manifest of no entries is one empty
    /// segment).
    pub fn finish<E>(
        mut self,
        emit: impl FnOnce(&[u8], u32, bool) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.flush(true, emit)
    }

    fn flush<E>(
        &mut self,
        last: bool,
        emit: impl FnOnce(&[u8], u32, bool) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let plain = &mut self.plain;
        plain.clear();
        plain.push(MANIFEST_VERSION);
        put_u32(plain, self.names.len() as u32);
        for b in &self.names {
            put_str16(plain, b);
        }
        put_u32(plain, self.count);
        plain.extend_from_slice(&self.body);
        emit(plain, self.count, last)?;
        self.local.clear();
        self.names.clear();
        self.names_len = 0;
        self.body.clear();
        self.count = 0;
        Ok(())
    }
}

/// A version 2 manifest sealed as its entries are pushed (see [`SegmentWriter`]):
/// each sealed segment goes to `emit` as soon as it is cut, and only the segment
/// table is kept. [`seal_manifest_to`] is this over a whole [`Manifest`].
pub struct ManifestSealer<'k> {
    keys: &'k Keys,
    blob: String,
    writer: SegmentWriter,
    sealed: Vec<u8>,
    table: Vec<SegmentInfo>,
    total: u64,
}

impl<'k> ManifestSealer<'k> {
    /// A manifest for the blob at path `blob`.
    pub fn new(keys: &'k Keys, blob: &str) -> Self {
        ManifestSealer {
            keys,
            blob: blob.to_string(),
            writer: SegmentWriter::default(),
            sealed: Vec::new(),
            table: Vec::new(),
            total: 0,
        }
    }

    /// Adds `entry` (see [`SegmentWriter::push`]); a segment it completes is
    /// sealed and handed to `emit`.
    pub fn push<E>(
        &mut self,
        entry: &Entry,
        name: impl FnMut(u32) -> String,
        emit: impl FnOnce(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let Self {
            keys,
            blob,
            writer,
            sealed,
            table,
            total,
        } = self;
        writer.push(entry, name, |plain, entries, last| {
            seal_segment(keys, blob, sealed, table, total, plain, entries, last);
            emit(sealed)
        })
    }

    /// Seals the last segment and hands it to `emit`; returns the sealed length
    /// and the segment table for the header.
    pub fn finish<E>(
        self,
        emit: impl FnOnce(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(u64, Vec<SegmentInfo>), E> {
        let Self {
            keys,
            blob,
            writer,
            mut sealed,
            mut table,
            mut total,
        } = self;
        writer.finish(|plain, entries, last| {
            seal_segment(
                keys,
                &blob,
                &mut sealed,
                &mut table,
                &mut total,
                plain,
                entries,
                last,
            );
            emit(&sealed)
        })?;
        Ok((total, table))
    }
}

#[allow(clippy::too_many_arguments)] // the sealer's fields, borrowed apart
fn seal_segment(
    keys: &Keys,
    blob: &str,
    sealed: &mut Vec<u8>,
    table: &mut Vec<SegmentInfo>,
    total: &mut u64,
    plain: &[u8],
    entries: u32,
    last: bool,
) {
    sealed.clear();
    let ctx = segment_context(blob, table.len() as u32, last);
    keys.seal_into(Kind::Manifest, &ctx, plain, sealed);
    table.push(SegmentInfo {
        sealed: sealed.len() as u32,
        entries,
    });
    *total += sealed.len() as u64;
}

/// Seals a version 2 manifest as it is encoded, handing each sealed segment to
/// `emit` (see [`ManifestSealer`]). Returns the sealed length and the segment
/// table for the header.
pub fn seal_manifest_to<E>(
    keys: &Keys,
    blob: &str,
    m: &Manifest,
    mut emit: impl FnMut(&[u8]) -> std::result::Result<(), E>,
) -> std::result::Result<(u64, Vec<SegmentInfo>), E> {
    let mut s = ManifestSealer::new(keys, blob);
    for entry in &m.entries {
        s.push(entry, |b| m.blobs[b as usize].clone(), &mut emit)?;
    }
    s.finish(emit)
}

/// Sealed length of segment `i` of `count` for a manifest of `total` sealed bytes.
fn segment_len(i: u32, count: u32, total: u64) -> u64 {
    let full = (SEGMENT + OVERHEAD) as u64;
    if i + 1 < count {
        full
    } else {
        total - full * u64::from(count - 1)
    }
}

/// Where a reader of version 1 segments (or pack map segments) is.
struct SegCursor<'k> {
    keys: &'k Keys,
    kind: Kind,
    blob: String,
    count: u32,
    total: u64,
    next: u32,
    pos: u64,
    buf: Vec<u8>,
    at: usize,
}

impl<'k> SegCursor<'k> {
    fn new(keys: &'k Keys, blob: &str, total: u64, count: u32) -> Result<Self> {
        let full = (SEGMENT + OVERHEAD) as u64;
        let valid = count > 0
            && total > full * u64::from(count - 1)
            && total <= full * u64::from(count)
            && total >= (OVERHEAD as u64) * u64::from(count);
        if !valid {
            return Err(Error::Malformed("manifest length"));
        }
        Ok(SegCursor {
            keys,
            kind: Kind::Manifest,
            blob: blob.to_string(),
            count,
            total,
            next: 0,
            pos: 0,
            buf: Vec::new(),
            at: 0,
        })
    }

    /// `Read::read`, with `fetch(offset, len)` relative to the manifest's start.
    fn read(
        &mut self,
        out: &mut [u8],
        fetch: &mut dyn FnMut(u64, u64) -> io::Result<Vec<u8>>,
    ) -> io::Result<usize> {
        while self.at == self.buf.len() {
            if self.next == self.count {
                return Ok(0);
            }
            let len = segment_len(self.next, self.count, self.total);
            let mut sealed = fetch(self.pos, len)?;
            let ctx = segment_context(&self.blob, self.next, self.next + 1 == self.count);
            let plain_len = self
                .keys
                .open_in_place(self.kind, &ctx, &mut sealed)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                .len();
            sealed.drain(..crate::crypto::HEADER_LEN + crate::crypto::NONCE_LEN);
            sealed.truncate(plain_len);
            self.buf = sealed;
            self.at = 0;
            self.pos += len;
            self.next += 1;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads a sealed manifest through a source of sealed bytes, opening segment by
/// segment, so a manifest of any size decodes in bounded memory.
pub struct ManifestReader<'k, F> {
    cur: SegCursor<'k>,
    fetch: F,
}

impl<'k, F> ManifestReader<'k, F>
where
    F: FnMut(u64, u64) -> io::Result<Vec<u8>>,
{
    /// `fetch(offset, len)` returns sealed bytes relative to the manifest's start.
    pub fn new(keys: &'k Keys, blob: &str, total: u64, count: u32, fetch: F) -> Result<Self> {
        Ok(ManifestReader {
            cur: SegCursor::new(keys, blob, total, count)?,
            fetch,
        })
    }
}

impl<F> ManifestReader<'_, F> {
    /// Reads a pack map (kind 5 segments) instead of a manifest.
    pub fn pack_map(mut self) -> Self {
        self.cur.kind = Kind::PackMap;
        self
    }
}

impl<F> Read for ManifestReader<'_, F>
where
    F: FnMut(u64, u64) -> io::Result<Vec<u8>>,
{
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.cur.read(out, &mut self.fetch)
    }
}

/// A version 1 manifest read through a [`SpanFetch`].
struct SpanReader<'k, F> {
    cur: SegCursor<'k>,
    blob: String,
    base: u64,
    fetch: F,
}

impl<F> Read for SpanReader<'_, F>
where
    F: FnMut(&Span) -> io::Result<Vec<u8>>,
{
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Self {
            cur,
            blob,
            base,
            fetch,
        } = self;
        cur.read(out, &mut |offset, len| {
            fetch(&Span {
                blob,
                offset: *base + offset,
                len,
                nodes: &[],
            })
        })
    }
}

/// Decodes a sealed manifest, mapping a failed segment to [`Error::Open`].
pub fn open_manifest<F>(
    keys: &Keys,
    blob: &str,
    total: u64,
    count: u32,
    fetch: F,
) -> Result<Manifest>
where
    F: FnMut(u64, u64) -> io::Result<Vec<u8>>,
{
    let r = ManifestReader::new(keys, blob, total, count, fetch)?;
    decode_manifest(r).map_err(opened)
}

/// Turns a segment that failed to open, surfacing as an I/O error from
/// [`ManifestReader`], back into [`Error::Open`].
pub fn opened(e: Error) -> Error {
    match e {
        Error::Io(io) if io.kind() == io::ErrorKind::InvalidData => {
            match io.into_inner().and_then(|i| i.downcast::<OpenError>().ok()) {
                Some(o) => Error::Open(*o),
                None => Error::Open(OpenError::Corrupt),
            }
        }
        other => other,
    }
}

/// Seals a header (a pack's if `h.pack`) into the hex string stored in index.json.
pub fn seal_header(keys: &Keys, blob: &str, h: &Header) -> String {
    let kind = if h.pack {
        Kind::PackHeader
    } else {
        Kind::Header
    };
    crate::hex::encode(&keys.seal(kind, blob.as_bytes(), &encode_header(h)))
}

/// Opens the header of a committed index: a snapshot's, or a pack's (`pack` set).
pub fn open_header(keys: &Keys, idx: &Index) -> Result<Header> {
    let hex = idx
        .sealed
        .as_deref()
        .ok_or(Error::Malformed("index (not final)"))?;
    let sealed = crate::hex::decode(hex).ok_or(Error::Malformed("index (sealed field)"))?;
    open_sealed_header(keys, &idx.blob_path(), sealed)
}

/// The sealed header of a committed index, taken out of it and decoded from
/// its hex in the hex's own buffer (see [`Index::from_vec`]): for a command that
/// has the index to itself, so that a large header is held once.
pub fn take_sealed(idx: &mut Index) -> Result<Vec<u8>> {
    let hex = idx
        .sealed
        .take()
        .ok_or(Error::Malformed("index (not final)"))?;
    crate::hex::decode_vec(hex.into_bytes()).ok_or(Error::Malformed("index (sealed field)"))
}

/// Opens the sealed header of blob `blob_path` in its own buffer.
pub fn open_sealed_header(keys: &Keys, blob_path: &str, mut sealed: Vec<u8>) -> Result<Header> {
    // The kind byte is authenticated with the rest: a store cannot switch it.
    let pack = sealed.get(5) == Some(&(Kind::PackHeader as u8));
    let kind = if pack { Kind::PackHeader } else { Kind::Header };
    let plain = keys.open_in_place(kind, blob_path.as_bytes(), &mut sealed)?;
    let mut h = decode_header(plain)?;
    h.pack = pack;
    if pack && (!h.roots.is_empty() || !h.host.is_empty()) {
        return Err(Error::Malformed("pack header"));
    }
    Ok(h)
}

/// One chunk a pack holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packed {
    pub id: ChunkId,
    pub offset: u64,
    /// Sealed length.
    pub len: u32,
}

/// Encodes a pack map's plaintext.
pub fn encode_pack_map(chunks: &[Packed]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + chunks.len() * 44);
    out.push(VERSION);
    put_u64(&mut out, chunks.len() as u64);
    for c in chunks {
        out.extend_from_slice(&c.id);
        put_u64(&mut out, c.offset);
        put_u32(&mut out, c.len);
    }
    out
}

/// Decodes a pack map, checking that its chunks lie in order, without overlap,
/// before `data_end` (where the map starts).
pub fn decode_pack_map<R: Read>(r: R, data_end: u64) -> Result<Vec<Packed>> {
    let mut d = Dec { r };
    d.version()?;
    let n = d.u64()?;
    // Each chunk takes at least OVERHEAD bytes of part 0: no allocation beyond that.
    if n > data_end / OVERHEAD as u64 {
        return Err(Error::Malformed("pack map (chunk count)"));
    }
    let mut out = Vec::with_capacity(n as usize);
    let mut end = 0u64;
    for _ in 0..n {
        let c = Packed {
            id: d.array()?,
            offset: d.u64()?,
            len: d.u32()?,
        };
        let last = c.offset.checked_add(u64::from(c.len));
        if c.offset < end || (c.len as usize) < OVERHEAD || last.is_none_or(|l| l > data_end) {
            return Err(Error::Malformed("pack map (chunk place)"));
        }
        end = c.offset + u64::from(c.len);
        out.push(c);
    }
    let mut rest = [0u8; 1];
    if d.r.read(&mut rest)? != 0 {
        return Err(Error::Malformed("pack map (trailing bytes)"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_manifest() -> Manifest {
        let mut f = Entry::new(EntryKind::File, b"/data/a.txt".to_vec());
        f.mode = 0o644;
        f.size = 10;
        f.mtime = 1_700_000_000;
        f.chunks
            .push(ChunkRef::whole([9; 32], 0, 0, 10 + OVERHEAD as u32));
        let mut s = Entry::new(EntryKind::Symlink, b"/data/l".to_vec());
        s.target = b"a.txt".to_vec();
        Manifest {
            blobs: vec!["d/n/m/t".into()],
            entries: vec![Entry::new(EntryKind::Dir, b"/data".to_vec()), f, s],
        }
    }

    // Version 1 (one plaintext cut every SEGMENT bytes) is still read.
    #[test]
    fn v1_manifest_round_trips_through_segments() {
        let keys = Keys::from_key_bytes(b"k");
        let mut m = sample_manifest();
        // Enough entries to need several segments.
        for i in 0..40_000 {
            m.entries.push(Entry::new(
                EntryKind::Dir,
                format!("/data/dir-{i:08}").into_bytes(),
            ));
        }
        let plain = encode_manifest(&m);
        let (sealed, count) = seal_manifest(&keys, "d/n/m/t", &plain);
        assert!(count > 1);
        let fetch = |o: u64, l: u64| Ok(sealed[o as usize..(o + l) as usize].to_vec());
        let back = open_manifest(&keys, "d/n/m/t", sealed.len() as u64, count, fetch).unwrap();
        assert_eq!(back, m);
        let h = Header {
            manifest_len: sealed.len() as u64,
            segments: count,
            ..Header::default()
        };
        let fetch = |s: &Span| Ok(sealed[s.offset as usize..(s.offset + s.len) as usize].to_vec());
        assert_eq!(
            read_manifest(&keys, "d/n/m/t", &h, fetch).unwrap(),
            (m, vec![])
        );
        // Dropping the last segment is caught (the new last one is not marked last).
        let cut = (SEGMENT + OVERHEAD) as u64 * u64::from(count - 1);
        let fetch = |o: u64, l: u64| Ok(sealed[o as usize..(o + l) as usize].to_vec());
        assert!(open_manifest(&keys, "d/n/m/t", cut, count - 1, fetch).is_err());
        // A damaged segment of a version 1 manifest fails it whole.
        let mut bad = sealed.clone();
        bad[100] ^= 1;
        let fetch = |s: &Span| Ok(bad[s.offset as usize..(s.offset + s.len) as usize].to_vec());
        assert!(read_manifest(&keys, "d/n/m/t", &h, fetch).is_err());
    }

    /// Entries with their chunks' blobs by name: blob tables of equal manifests may
    /// be numbered differently.
    fn by_name(m: &Manifest) -> Vec<(Entry, Vec<String>)> {
        m.entries
            .iter()
            .map(|e| {
                let names = e.chunks.iter().map(|c| m.blobs[c.blob as usize].clone());
                let mut e = e.clone();
                e.chunks.iter_mut().for_each(|c| c.blob = 0);
                (e, names.collect())
            })
            .collect()
    }

    /// A manifest of `n` files, each of one chunk in one of 5 blobs, and one file
    /// larger than a segment in the middle.
    fn many_files(n: usize) -> Manifest {
        let mut m = Manifest {
            blobs: (0..5).map(|b| format!("d/n/m/t{b}")).collect(),
            entries: vec![Entry::new(EntryKind::Dir, b"/data".to_vec())],
        };
        for i in 0..n {
            let mut f = Entry::new(EntryKind::File, format!("/data/f-{i:06}").into_bytes());
            let chunks = if i == n / 3 { 3000 } else { 1 };
            for k in 0..chunks {
                f.chunks.push(ChunkRef::whole(
                    [(i % 251) as u8; 32],
                    ((i + k) % 5) as u32,
                    (i * 100 + k) as u64,
                    100,
                ));
            }
            f.size = f.chunks.iter().map(ChunkRef::plain_len).sum();
            m.entries.push(f);
        }
        m
    }

    fn sealed_v2(keys: &Keys, m: &Manifest) -> (Vec<u8>, Header) {
        let mut sealed = Vec::new();
        let (total, table) = seal_manifest_to(keys, "d/n/m/t0", m, |s| {
            sealed.extend_from_slice(s);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(total, sealed.len() as u64);
        let h = Header {
            manifest_len: total,
            segments: table.len() as u32,
            table,
            ..Header::default()
        };
        (sealed, h)
    }

    // Version 2: segments cut at entry boundaries, each with its own blob table,
    // found by the header's table; what comes back is the manifest written.
    #[test]
    fn v2_manifest_segments_stand_alone() {
        let keys = Keys::from_key_bytes(b"k");
        let m = many_files(5000);
        let mut sizes = Vec::new();
        manifest_segments(&m, |plain, n, last| {
            sizes.push((plain.len(), n, last));
            // Each decodes with nothing but itself.
            let got = decode_segment(plain, n, &mut Vec::new(), &mut Default::default());
            assert_eq!(got.unwrap().len(), n as usize);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(sizes.len() > 3, "{sizes:?}");
        assert!(
            sizes
                .iter()
                .all(|&(len, n, _)| len <= SEGMENT_TARGET || n == 1)
        );
        assert!(
            sizes
                .iter()
                .any(|&(len, n, _)| len > SEGMENT_TARGET && n == 1)
        );
        let lasts: Vec<bool> = sizes.iter().map(|s| s.2).collect();
        assert!(lasts[..lasts.len() - 1].iter().all(|l| !l) && lasts[lasts.len() - 1]);
        let (sealed, h) = sealed_v2(&keys, &m);
        let fetch = |s: &Span| Ok(sealed[s.offset as usize..(s.offset + s.len) as usize].to_vec());
        let (back, lost) = read_manifest(&keys, "d/n/m/t0", &h, fetch).unwrap();
        assert!(lost.is_empty());
        assert_eq!(back.blobs[0], "d/n/m/t0");
        assert_eq!(by_name(&back), by_name(&m));
        // Empty: one segment of no entries.
        let (sealed, h) = sealed_v2(&keys, &Manifest::default());
        assert_eq!((h.segments, h.table[0].entries), (1, 0));
        let fetch = |s: &Span| Ok(sealed[s.offset as usize..(s.offset + s.len) as usize].to_vec());
        assert!(
            read_manifest(&keys, "d/n/m/t0", &h, fetch)
                .unwrap()
                .0
                .entries
                .is_empty()
        );
        // The header carries the table, and a table that does not add up is refused.
        let full = Header {
            version: HEADER_VERSION,
            ..h.clone()
        };
        assert_eq!(decode_header(&encode_header(&full)).unwrap(), full);
        let mut wrong = full.clone();
        wrong.manifest_len += 1;
        assert!(decode_header(&encode_header(&wrong)).is_err());
    }

    // One bad byte in a segment loses only that segment's entries, named by the
    // paths around them; a dropped last segment is a loss too, not a silent end.
    #[test]
    fn a_damaged_v2_segment_loses_only_its_entries() {
        let keys = Keys::from_key_bytes(b"k");
        let m = many_files(5000);
        let (sealed, h) = sealed_v2(&keys, &m);
        let k = 2;
        let start: u64 = h.table[..k].iter().map(|t| u64::from(t.sealed)).sum();
        let mut bad = sealed.clone();
        bad[start as usize + 500] ^= 0x20;
        let fetch = |s: &Span| Ok(bad[s.offset as usize..(s.offset + s.len) as usize].to_vec());
        let (back, lost) = read_manifest(&keys, "d/n/m/t0", &h, fetch).unwrap();
        let skip: usize = h.table[..k].iter().map(|t| t.entries as usize).sum();
        let n = h.table[k].entries as usize;
        let mut want = m.clone();
        want.entries.drain(skip..skip + n);
        assert_eq!(by_name(&back), by_name(&want));
        assert_eq!(
            lost,
            vec![Lost {
                segment: k as u32,
                segments: 1,
                entries: n as u32,
                before: Some(m.entries[skip - 1].path.clone()),
                after: Some(m.entries[skip + n].path.clone()),
            }]
        );
        assert!(
            lost[0]
                .to_string()
                .starts_with(&format!("{n} entries between /data/f-"))
        );
        // The last segment swapped for a non-last one: that segment is lost.
        let c = h.table.len();
        let mut short = h.clone();
        short.table.truncate(c - 1);
        short.segments -= 1;
        short.manifest_len -= u64::from(h.table[c - 1].sealed);
        let fetch = |s: &Span| Ok(sealed[s.offset as usize..(s.offset + s.len) as usize].to_vec());
        let (_, lost) = read_manifest(&keys, "d/n/m/t0", &short, fetch).unwrap();
        assert_eq!(lost.len(), 1);
        assert_eq!(
            (lost[0].segment, lost[0].after.as_ref()),
            (c as u32 - 2, None)
        );
    }

    // The segment table lives in the sealed header, inside index.json (at most
    // store::MAX_INDEX = 1 MiB): 100,000 files of one chunk each must cost it
    // little. Measured: see the module doc.
    #[test]
    fn segment_table_cost_per_100k_files() {
        let mut m = Manifest {
            blobs: vec!["home/pi/0123456789abcdef0123456789abcdef/20260101T000000.000000Z".into()],
            ..Manifest::default()
        };
        for i in 0..100_000u32 {
            let path = format!("/home/pi/photos/{:04}/IMG_{i:06}.jpg", i / 1000);
            let mut f = Entry::new(EntryKind::File, path.into_bytes());
            f.chunks
                .push(ChunkRef::whole([1; 32], 0, u64::from(i) << 20, 100_046));
            f.size = 100_000;
            m.entries.push(f);
        }
        let (mut segments, mut plain) = (0usize, 0usize);
        manifest_segments(&m, |p, _, _| {
            segments += 1;
            plain += p.len();
            Ok::<(), ()>(())
        })
        .unwrap();
        let hex = 2 * (4 + 8 * segments);
        eprintln!(
            "100,000 files: {plain} plaintext bytes, {segments} segments, {hex} hex bytes of index.json"
        );
        assert!(hex < 8 << 10, "{hex}");
    }

    // The answers of a window computed side by side are those of one MAC each, and
    // a snapshot too large for all of them keeps fewer rather than fail its commit.
    #[test]
    fn answers_fit_the_index() {
        let keys = Keys::from_key_bytes(b"k");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let a: Answers = window_answers(&keys, "d/n/m/t", 3, &data);
        for (j, a) in a.iter().enumerate() {
            let full = challenge_answer(&keys.challenge_nonce("d/n/m/t", 3, j as u8), &data);
            assert_eq!(a[..], full[..ANSWER_LEN]);
        }
        let mut idx = Index {
            version: 1,
            domain: "d".into(),
            node: "n".into(),
            mount: "m".into(),
            timestamp: "t".into(),
            parent: None,
            size: Some(0),
            sealed: None,
        };
        let windows = 100;
        let answers = vec![a; windows];
        let mut h = Header {
            window: 4096,
            window_hashes: vec![[1; 32]; windows],
            ..Header::default()
        };
        let whole = |h: &mut Header, idx: &mut Index, max| {
            let k = seal_fitting(&keys, &idx.blob_path(), h, idx, &answers, max);
            let opened = open_header(&keys, idx).unwrap();
            assert_eq!(
                (opened.challenges, opened.answers.len()),
                (k, windows * usize::from(k))
            );
            assert!(k == 0 || idx.to_json().len() as u64 <= max);
            k
        };
        assert_eq!(whole(&mut h, &mut idx, 1 << 20), CHALLENGES);
        // Hashes alone take 64 hex digits a window, each answer 16 more.
        let room = |k: u64| 600 + windows as u64 * (64 + 16 * k) + 2 * 200;
        assert_eq!(whole(&mut h, &mut idx, room(2)), 2);
        assert_eq!(whole(&mut h, &mut idx, 100), 0);
    }

    #[test]
    fn header_round_trip_and_binding() {
        let keys = Keys::from_key_bytes(b"k");
        let h = Header {
            time: 5,
            host: "pi".into(),
            roots: vec![b"/data".to_vec()],
            window: 4096,
            window_hashes: vec![[1; 32], [2; 32]],
            version: HEADER_VERSION,
            ..Header::default()
        };
        let mut idx = Index {
            version: 1,
            domain: "d".into(),
            node: "n".into(),
            mount: "m".into(),
            timestamp: "t".into(),
            parent: None,
            size: Some(0),
            sealed: None,
        };
        idx.sealed = Some(seal_header(&keys, &idx.blob_path(), &h));
        assert_eq!(open_header(&keys, &idx).unwrap(), h);
        let json = idx.to_json();
        assert_eq!(Index::parse(json.as_bytes()).unwrap(), idx);
        idx.timestamp = "t2".into();
        assert!(matches!(open_header(&keys, &idx), Err(Error::Open(_))));
    }

    // An index parsed with its sealed hex kept in the text's buffer is the index
    // the JSON parser gives for the whole text, whatever the text.
    #[test]
    fn an_index_parses_as_a_whole_however_its_sealed_field_is_kept() {
        let whole = |t: &str| {
            miniserde::json::from_str::<Index>(t)
                .ok()
                .filter(|i| i.version <= u32::from(VERSION))
        };
        let canonical = Index {
            version: 1,
            domain: "d.org".into(),
            node: "pi".into(),
            mount: "m".into(),
            timestamp: "t".into(),
            parent: Some("p".into()),
            size: Some(7),
            sealed: Some("00ff".repeat(1000)),
        }
        .to_json();
        assert!(canonical.ends_with(&format!(",\"sealed\":\"{}\"}}", "00ff".repeat(1000))));
        let head = r#"{"version":1,"domain":"d","node":"n","mount":"m","timestamp":"t","parent":null,"size":null"#;
        let texts = [
            canonical.clone(),
            format!("{canonical}\n"),
            format!("{canonical} \r\n\t"),
            format!("{head},\"sealed\":\"abCD\"}}"),
            format!("{head},\"sealed\":\"\"}}"),
            format!("{head},\"sealed\":\"zz\"}}"),
            format!("{head},\"sealed\":\"ab\\u0030\"}}"),
            format!("{head},\"sealed\":null}}"),
            format!("{head},\"sealed\" : \"ab\"}}"),
            format!("{head},\"sealed\":\"cd\",\"sealed\":\"ab\"}}"),
            format!("{head},,\"sealed\":\"ab\"}}"),
            format!("{head} ,\"sealed\":\"ab\"}}"),
            format!("{head},\"sealed\":\"ab\"}}\u{2028}"),
            format!("{head},\"sealed\":\"ab\"}} x"),
            format!("{head}}}"),
            r#"{"version":1,"domain":"d","node":"n,\"sealed\":\"ab","mount":"m","timestamp":"t","parent":null,"size":null}"#.into(),
            r#"{"mount":"x","sealed":"ab"}"#.into(),
            r#"{,"sealed":"ab"}"#.into(),
            r#"[1,"sealed":"ab"}"#.into(),
            format!("{}\"}}", head.replace("\"size\":null", "\"size\":\"x,\"sealed\":\"ab")),
            canonical.replace("\"version\":1", "\"version\":99"),
            String::new(),
        ];
        let mut fast = 0;
        for t in &texts {
            let got = Index::from_vec(t.clone().into_bytes()).ok();
            assert_eq!(got, whole(t), "{t:.120}");
            fast += usize::from(split_sealed(t).is_some() && got.is_some());
        }
        assert!(fast >= 5, "{fast}");
    }

    // Version 4 headers carry the root list and nothing of the segment table; a
    // root list that does not hold together is refused, whole or cut anywhere.
    #[test]
    fn header_v4_root_list() {
        let node = |blob, entries| NodeRef {
            id: [7; 32],
            blob,
            offset: 1 << 40,
            len: 100,
            entries,
        };
        let h = Header {
            host: "pi".into(),
            window: 4096,
            window_hashes: vec![[1; 32]],
            challenges: 1,
            answers: vec![[3; ANSWER_LEN]],
            node_blobs: vec!["d/n/m/t0".into(), "d/n/m/t1".into()],
            nodes: vec![node(0, 5), node(1, 0)],
            segments: 9,
            version: HEADER_V4,
            ..Header::default()
        };
        let plain = encode_header(&h);
        assert_eq!(plain[0], HEADER_V4);
        assert_eq!(decode_header(&plain).unwrap(), h);
        for cut in 0..plain.len() {
            assert!(decode_header(&plain[..cut]).is_err(), "{cut}");
        }
        let bad = |f: &dyn Fn(&mut Header)| {
            let mut b = h.clone();
            f(&mut b);
            decode_header(&encode_header(&b)).is_err()
        };
        assert!(bad(&|b| b.nodes[1].blob = 2));
        assert!(bad(&|b| b.nodes[0].len = 47));
        assert!(bad(&|b| b.nodes[0].offset = u64::MAX - 10));
        assert!(bad(&|b| b.nodes[1].entries = u64::MAX));
        assert!(bad(&|b| {
            b.nodes.clear();
            b.version = HEADER_V4;
        }));
        let mut newer = plain.clone();
        newer[0] = HEADER_V6 + 1;
        assert!(matches!(
            decode_header(&newer),
            Err(Error::Newer(7, HEADER_V6))
        ));
        // A root list naming a blob it does not have is refused before any read.
        let mut hand = h.clone();
        hand.node_blobs.pop();
        let fetch = |_: &Span| -> io::Result<Vec<u8>> { unreachable!() };
        let keys = Keys::from_key_bytes(b"k");
        assert!(Entries::open(&keys, "d/n/m/t0", &hand, fetch).is_err());
    }

    // Tags make a version 5 header: the version 4 bytes, then the tags before
    // the challenges; without tags the header stays version 4, byte for byte.
    // A tag a sink could not have written is refused, and so is one cut short.
    #[test]
    fn header_v5_tags() {
        let v4 = Header {
            host: "pi".into(),
            window: 4096,
            window_hashes: vec![[1; 32]],
            challenges: 1,
            answers: vec![[3; ANSWER_LEN]],
            node_blobs: vec!["d/n/m/t0".into()],
            nodes: vec![NodeRef {
                id: [7; 32],
                blob: 0,
                offset: 0,
                len: 100,
                entries: 5,
            }],
            version: HEADER_V4,
            ..Header::default()
        };
        let h = Header {
            tags: vec!["nightly".into(), "pre upgrade".into()],
            version: HEADER_V5,
            ..v4.clone()
        };
        let (plain4, plain) = (encode_header(&v4), encode_header(&h));
        assert_eq!(plain4[0], HEADER_V4);
        assert_eq!(plain[0], HEADER_V5);
        assert_eq!(decode_header(&plain).unwrap(), h);
        // Version 6 (a manifest with FIFOs or hard links): version 5's bytes,
        // with or without tags; a version 5 header with no tags is refused.
        for tags in [vec![], h.tags.clone()] {
            let h6 = Header {
                tags,
                version: HEADER_V6,
                ..v4.clone()
            };
            let plain6 = encode_header(&h6);
            assert_eq!(plain6[0], HEADER_V6);
            assert_eq!(decode_header(&plain6).unwrap(), h6);
            if h6.tags.is_empty() {
                assert_eq!(plain6.len(), plain4.len() + 1);
                let mut v5 = plain6.clone();
                v5[0] = HEADER_V5;
                assert!(decode_header(&v5).is_err());
            } else {
                assert_eq!(plain6[1..], plain[1..]);
            }
        }
        // Version byte, the tags (1 + 2+7 + 2+11 bytes) before K and its answer.
        let at = plain4.len() - 1 - ANSWER_LEN;
        assert_eq!(plain[1..at], plain4[1..at]);
        assert_eq!(plain[at..at + 3], [2, 0, 7]);
        assert_eq!(plain.len(), plain4.len() + 23);
        for cut in at..plain.len() {
            assert!(decode_header(&plain[..cut]).is_err(), "{cut}");
        }
        for t in ["a,b", "tab\there", "", &"x".repeat(65)] {
            let b = Header {
                tags: vec![t.into()],
                ..h.clone()
            };
            assert!(check_tag(t).is_some(), "{t:?}");
            assert!(
                matches!(decode_header(&encode_header(&b)), Err(Error::Malformed(_))),
                "{t:?}"
            );
        }
        assert_eq!(check_tag(&"é".repeat(32)), None);
        let mut none = plain.clone();
        none[at] = 0;
        assert!(decode_header(&none).is_err());
    }

    #[test]
    fn lying_lengths_do_not_allocate() {
        // A path length of 4 GiB must be refused before any allocation.
        let mut b = vec![VERSION, 0, 0, 0, 0];
        b.extend_from_slice(&1u64.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode_manifest(&b[..]), Err(Error::Malformed(_))));
        assert!(matches!(
            decode_manifest(&[9u8][..]),
            Err(Error::Newer(9, VERSION))
        ));
    }
}
