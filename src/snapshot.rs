//! Finding and naming snapshots: a node's committed blobs, opened with its key.
//!
//! A snapshot's id is the SHA-256 of its blob path in hex (64 digits, what the
//! `--json` outputs give), its short id the first 8 of them (what tables show); the
//! user names one by any prefix of its id, by its timestamp, or says `latest`. Its tags (sealed in
//! its header) select it for `list --tag` and `forget --tag/--keep-tag`
//! ([`tags_match`]).

use crate::blob::BlobId;
use crate::crypto::Keys;
use crate::format::{self, ChunkRef, Header, Manifest};
use crate::pack::Resolver;
use crate::remote::Remote;
use crate::{Error, Result};
use std::os::unix::ffi::OsStrExt;

/// A committed snapshot (or pack) whose header opened: what a listing keeps of it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub blob: BlobId,
    pub header: Summary,
    /// Its chain id ([`format::chain_id`]): the SHA-256 of its sealed header.
    pub chain: Option<[u8; 32]>,
}

/// What a listing keeps of a snapshot's header: all of it but the parts that grow
/// with the snapshot's files and bytes (its manifest's root list and segment
/// table, its window hashes and challenge answers; about 120 KB for 1,000,000
/// files in 2 GB), which [`Snapshot::open`] reads afresh for the snapshots a
/// command reads. So a listing's memory is flat in the files of each snapshot,
/// however many snapshots a node has. Neither is the index kept (its sealed
/// field is twice the header's size in hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub time: i64,
    pub time_ns: u32,
    pub host: String,
    pub roots: Vec<Vec<u8>>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub part_size: u64,
    pub window: u32,
    /// Windows of part 0 (the header's window hashes).
    pub windows: u64,
    pub seq: u64,
    pub parent: [u8; 32],
    pub challenges: u8,
    pub pack: bool,
    pub tags: Vec<String>,
    pub version: u8,
}

impl Summary {
    /// The light parts of `h`.
    pub fn of(h: &Header) -> Summary {
        Summary {
            windows: h.window_hashes.len() as u64,
            time: h.time,
            time_ns: h.time_ns,
            host: h.host.clone(),
            roots: h.roots.clone(),
            files: h.files,
            dirs: h.dirs,
            symlinks: h.symlinks,
            bytes: h.bytes,
            part_size: h.part_size,
            window: h.window,
            seq: h.seq,
            parent: h.parent,
            challenges: h.challenges,
            pack: h.pack,
            tags: h.tags.clone(),
            version: h.version,
        }
    }
}

impl Snapshot {
    /// The 8-hex-digit id users type.
    pub fn short_id(&self) -> String {
        short_id(&self.blob)
    }

    /// The full id (64 hex digits), as JSON gives it.
    pub fn id(&self) -> String {
        id(&self.blob.path())
    }

    /// Its whole header, read and opened again: the one listed, or an error. The
    /// index is the committed one, or the forgotten one if it was forgotten since
    /// (a run still reads what it listed); its sealed header must be the listed
    /// one byte for byte (the same chain id), so a store cannot serve another
    /// between the listing and the read.
    pub fn open(&self, keys: &Keys, remote: &dyn Remote) -> Result<Header> {
        use crate::remote::ErrorKind::NotFound;
        let mut index = match remote.index(&self.blob) {
            Err(e) if e.kind == NotFound => remote.forgotten_index(&self.blob),
            r => r,
        }
        .map_err(|e| match e.kind {
            NotFound => Error::Damaged(format!(
                "snapshot {}: its index is gone since it was listed",
                self.short_id()
            )),
            _ => e.into(),
        })?;
        let blob_path = index.blob_path();
        // Decoded once, in the hex's buffer: its hash is the chain id.
        let sealed = format::take_sealed(&mut index);
        if sealed.as_deref().ok().map(crate::crypto::sha256) != self.chain {
            return Err(Error::Damaged(format!(
                "snapshot {}: the store now serves another index than the one listed",
                self.short_id()
            )));
        }
        sealed
            .and_then(|sealed| format::open_sealed_header(keys, &blob_path, sealed))
            .map_err(|e| {
                Error::Damaged(format!(
                    "snapshot {}: its header does not open: {e}",
                    self.short_id()
                ))
            })
    }
}

/// The short id of a blob.
pub fn short_id(blob: &BlobId) -> String {
    crate::hex::encode(&crate::crypto::sha256(blob.path().as_bytes())[..4])
}

/// The full id of the blob at `path` (its [`BlobId::path`]).
pub fn id(path: &str) -> String {
    crate::hex::encode(&crate::crypto::sha256(path.as_bytes()))
}

/// Whether a snapshot carrying `tags` passes a tag filter (restic's rule): an
/// empty filter passes every snapshot; otherwise one of its entries must, an
/// entry being a comma-separated list of tags the snapshot must all carry. So
/// `--tag a,b` asks for both, `--tag a --tag b` for either.
pub fn tags_match(filter: &[String], tags: &[String]) -> bool {
    filter.is_empty()
        || filter
            .iter()
            .any(|f| f.split(',').all(|t| tags.iter().any(|x| x == t)))
}

/// Keeps the snapshots that pass a tag filter ([`tags_match`]).
pub fn keep_tagged(snaps: &mut Vec<Snapshot>, filter: &[String]) {
    snaps.retain(|s| tags_match(filter, &s.header.tags));
}

/// What a node's committed blobs are, opened with a key.
#[derive(Debug, Default)]
pub struct Listing {
    /// Snapshots whose header opened, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// Packs written by prune (see [`crate::pack`]), whose header opened, oldest first.
    pub packs: Vec<Snapshot>,
    /// Committed blobs whose header did not open, and why.
    pub failed: Vec<(BlobId, format::Error)>,
}

/// Lists and opens every committed blob of a node. Fails only if the remote does,
/// or for a blob written by a newer chute; blobs that do not open are `failed`.
pub fn listing(keys: &Keys, remote: &dyn Remote, domain: &str, node: &str) -> Result<Listing> {
    let pack_mount = crate::pack::mount(keys);
    let mut out = Listing::default();
    for blob in remote.list(domain, node)? {
        let index = match remote.index(&blob) {
            Ok(i) => i,
            // Forgotten between the list and now: no longer a committed blob.
            Err(e) if e.kind == crate::remote::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        match format::open_header(keys, &index) {
            // A pack's header under a snapshot's mount, or the reverse, is forged.
            Ok(header) if header.pack != (blob.mount == pack_mount) => out
                .failed
                .push((blob, format::Error::Malformed("header (pack or snapshot)"))),
            Ok(header) => {
                let list = if header.pack {
                    &mut out.packs
                } else {
                    &mut out.snapshots
                };
                list.push(Snapshot {
                    chain: format::chain_id(&index),
                    blob,
                    header: Summary::of(&header),
                });
            }
            Err(format::Error::Newer(v, reads)) => {
                return Err(Error::Failed(format!(
                    "snapshot {} was written by a newer chute (format {v}, this build reads up to {reads})",
                    short_id(&blob)
                )));
            }
            Err(e) => out.failed.push((blob, e)),
        }
    }
    for list in [&mut out.snapshots, &mut out.packs] {
        crate::sort::by(list, |a, b| {
            (a.header.time, a.header.time_ns, &a.blob).cmp(&(
                b.header.time,
                b.header.time_ns,
                &b.blob,
            ))
        });
    }
    Ok(out)
}

/// Every snapshot of a node that opens with `keys`, oldest first. Fails if there
/// are snapshots but none opens: that is a wrong key, or damage to all of them.
pub fn all(keys: &Keys, remote: &dyn Remote, domain: &str, node: &str) -> Result<Vec<Snapshot>> {
    let Listing {
        snapshots,
        packs,
        failed,
    } = listing(keys, remote, domain, node)?;
    if snapshots.is_empty() && packs.is_empty() && !failed.is_empty() {
        return Err(Error::Damaged(format!(
            "wrong key: none of the {} snapshots of {domain}/{node} on {} opens with this key ({})",
            failed.len(),
            remote.describe(),
            failed[0].1
        )));
    }
    for (blob, e) in &failed {
        eprintln!(
            "chute: warning: snapshot {} ({}) does not open: {e}",
            short_id(blob),
            blob.path()
        );
    }
    Ok(snapshots)
}

/// Picks a snapshot by `latest`, short id (or a unique prefix of it), or timestamp.
/// `latest` with `paths` means the newest snapshot whose roots hold all of them.
pub fn find(
    keys: &Keys,
    remote: &dyn Remote,
    domain: &str,
    node: &str,
    name: &str,
    paths: &[std::path::PathBuf],
) -> Result<Snapshot> {
    let all = all(keys, remote, domain, node)?;
    find_in(all, remote, domain, node, name, paths)
}

/// [`find`] among snapshots already listed (`all`, oldest first).
pub fn find_in(
    mut all: Vec<Snapshot>,
    remote: &dyn Remote,
    domain: &str,
    node: &str,
    name: &str,
    paths: &[std::path::PathBuf],
) -> Result<Snapshot> {
    if name == "latest" && !paths.is_empty() {
        all.retain(|s| {
            paths.iter().all(|p| {
                s.header
                    .roots
                    .iter()
                    .any(|r| p.starts_with(std::path::Path::new(std::ffi::OsStr::from_bytes(r))))
            })
        });
        if all.is_empty() {
            return Err(Error::Usage(format!(
                "{} is not in any snapshot of {domain}/{node}",
                paths[0].display()
            )));
        }
    }
    if all.is_empty() {
        return Err(Error::Failed(format!(
            "no snapshots of {domain}/{node} on {}",
            remote.describe()
        )));
    }
    if name == "latest" {
        return Ok(all.into_iter().last().expect("not empty"));
    }
    let hits: Vec<Snapshot> = all
        .into_iter()
        .filter(|s| s.blob.timestamp == name || (!name.is_empty() && s.id().starts_with(name)))
        .collect();
    match hits.len() {
        1 => Ok(hits.into_iter().next().expect("one")),
        0 => Err(Error::Usage(format!(
            "no snapshot {name:?} (see `chute list`)"
        ))),
        n => Err(Error::Usage(format!(
            "{name:?} names {n} snapshots; give more of the id"
        ))),
    }
}

/// Whether every path of `set` (normalised as [`crate::sink::normalize_roots`]
/// does) is one of the snapshot's source paths, exactly: restic's `--path`.
pub fn has_paths(s: &Snapshot, set: &[std::path::PathBuf]) -> bool {
    set.iter().all(|p| {
        (s.header.roots.iter()).any(|r| std::path::Path::new(std::ffi::OsStr::from_bytes(r)) == p)
    })
}

/// The snapshots of `all` that [`has_paths`] `set` (all of them if `set` is
/// empty); none is a usage error.
pub fn with_paths(mut all: Vec<Snapshot>, set: &[std::path::PathBuf]) -> Result<Vec<Snapshot>> {
    if set.is_empty() {
        return Ok(all);
    }
    all.retain(|s| has_paths(s, set));
    if all.is_empty() {
        let set: Vec<_> = set.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::Usage(format!(
            "no snapshot has the paths {} (see `chute list`)",
            set.join(" ")
        )));
    }
    Ok(all)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub(crate) fn split(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400) as u32;
    (y, mo, d, s / 3600, s / 60 % 60, s % 60)
}

/// The blob timestamp: UTC `YYYYMMDDTHHMMSS.ffffffZ`.
pub fn timestamp(secs: i64, nanos: u32) -> String {
    let (y, mo, d, h, mi, s) = split(secs);
    format!(
        "{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{:06}Z",
        nanos / 1000
    )
}

/// A time for people: `YYYY-MM-DD HH:MM:SS` UTC.
pub fn display_time(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = split(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// RFC 3339 UTC to the second: `YYYY-MM-DDTHH:MM:SSZ` (logs, the status JSON).
/// Seconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A blob's timestamp (`20261126T153312.123456Z`) in RFC 3339 to the second
/// (`2026-11-26T15:33:12Z`); anything else as it is.
pub fn timestamp_rfc3339(ts: &str) -> String {
    match (ts.get(..8), ts.get(8..9), ts.get(9..15), ts.ends_with('Z')) {
        (Some(d), Some("T"), Some(t), true) if ts.is_ascii() => format!(
            "{}-{}-{}T{}:{}:{}Z",
            &d[..4],
            &d[4..6],
            &d[6..],
            &t[..2],
            &t[2..4],
            &t[4..]
        ),
        _ => ts.to_string(),
    }
}

pub fn rfc3339(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = split(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Reads and opens a snapshot's manifest whole, with every version 3 node it
/// read (blob path as written, [`format::NodeRef`]): any lost segment or node is
/// an error (what prune needs: it must know every chunk and node a snapshot
/// uses).
pub fn manifest_nodes(
    keys: &Keys,
    remote: &dyn Remote,
    resolver: &Resolver,
    snap: &Snapshot,
) -> Result<(Manifest, Vec<(String, format::NodeRef)>)> {
    manifest_nodes_of(keys, remote, resolver, snap, &snap.open(keys, remote)?)
}

/// [`manifest_nodes`] with the snapshot's whole header opened already.
pub fn manifest_nodes_of(
    keys: &Keys,
    remote: &dyn Remote,
    resolver: &Resolver,
    snap: &Snapshot,
    header: &Header,
) -> Result<(Manifest, Vec<(String, format::NodeRef)>)> {
    let damaged = |e| damaged(snap, e);
    let fetch = manifest_fetch(remote, resolver);
    let mut r = format::Entries::open(keys, &snap.blob.path(), header, fetch).map_err(damaged)?;
    let (mut entries, mut nodes) = (Vec::new(), Vec::new());
    while let Some(e) = r.next_entry().map_err(damaged)? {
        entries.push(e);
        nodes.extend(r.take_nodes());
    }
    nodes.extend(r.take_nodes());
    match r.lost.first() {
        None => Ok((
            Manifest {
                blobs: r.blobs,
                entries,
            },
            nodes,
        )),
        Some(l) => Err(Error::Damaged(format!(
            "snapshot {}: manifest in {} is damaged: {l} are lost{}",
            snap.short_id(),
            snap.blob.path(),
            match r.lost.len() {
                1 => String::new(),
                n => format!(", and {} more segments", n - 1),
            }
        ))),
    }
}

fn damaged(snap: &Snapshot, e: format::Error) -> Error {
    Error::Damaged(format!(
        "snapshot {}: manifest in {} is damaged: {e}",
        snap.short_id(),
        snap.blob.path()
    ))
}

/// The `fetch` of [`format::Entries`] for a snapshot's manifest: every span read
/// by [`read_span`], so nodes a prune moved into a pack are found there.
pub fn manifest_fetch<'a, R>(
    remote: &'a dyn Remote,
    resolver: R,
) -> impl FnMut(&format::Span) -> std::io::Result<Vec<u8>> + 'a
where
    R: std::ops::Deref<Target = Resolver> + 'a,
{
    move |s: &format::Span| read_span(remote, &resolver, s)
}

/// Reads a span of sealed manifest bytes ([`format::Span`]) where the store
/// holds them: in the span's blob, or, for version 3 nodes in a blob that is not
/// a committed snapshot (forgotten, perhaps repacked by prune), each node where
/// the pack rule puts it ([`Resolver::stays`], then [`Resolver::moved`] by id,
/// as for a chunk: a node's seal binds its id, not its place), neighbours in one
/// read. The one place every reader of manifests resolves nodes (restore,
/// verify, the sink's parent, the chunk-index sync, prune). Bytes the store says
/// it does not hold (a window missing or cut short, a blob deleted) come back
/// as [`std::io::ErrorKind::InvalidData`], damage that loses only the nodes or
/// segments in them; any other failure stays an error of the whole read.
pub fn read_span(
    remote: &dyn Remote,
    resolver: &Resolver,
    s: &format::Span,
) -> std::io::Result<Vec<u8>> {
    let blob = BlobId::parse(s.blob).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a manifest names a malformed blob path",
        )
    })?;
    let moved: Vec<Option<(usize, u64)>> =
        if s.nodes.is_empty() || resolver.is_empty() || resolver.stays(s.blob) {
            Vec::new()
        } else {
            let whole = |n: &format::NodeRef| ChunkRef::whole(n.id, 0, n.offset, n.len);
            s.nodes.iter().map(|n| resolver.moved(&whole(n))).collect()
        };
    if moved.iter().all(Option::is_none) {
        return read_part0(remote, &blob, s.offset, s.len);
    }
    // Where each node is: (pack number or none, offset); runs of neighbours in
    // the same blob are read at once.
    let place = |i: usize| match moved[i] {
        Some((p, offset)) => (Some(p), offset),
        None => (None, s.nodes[i].offset),
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.nodes.len() {
        let (from, start) = place(i);
        let mut end = start + u64::from(s.nodes[i].len);
        let mut j = i + 1;
        while j < s.nodes.len() && place(j) == (from, end) {
            end += u64::from(s.nodes[j].len);
            j += 1;
        }
        let at = from.map_or(&blob, |p| &resolver.packs()[p]);
        out.extend_from_slice(&read_part0(remote, at, start, end - start)?);
        i = j;
    }
    Ok(out)
}

/// `len` bytes at `offset` of `blob`'s part 0; what the store does not hold is
/// [`std::io::ErrorKind::InvalidData`] (see [`read_span`]).
fn read_part0(
    remote: &dyn Remote,
    blob: &BlobId,
    offset: u64,
    len: u64,
) -> std::io::Result<Vec<u8>> {
    remote.read(blob, offset, len).map_err(|e| {
        let kind = match e.kind {
            crate::remote::ErrorKind::NotFound => std::io::ErrorKind::InvalidData,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    })
}

/// Reads a snapshot's manifest: the entries of every segment that opens, and the
/// segments that do not (a version 2 or 3 manifest loses only those; a version
/// 1 manifest with any bad segment is an error).
pub fn salvage(
    keys: &Keys,
    remote: &dyn Remote,
    resolver: &Resolver,
    snap: &Snapshot,
) -> Result<(Manifest, Vec<format::Lost>)> {
    let header = snap.open(keys, remote)?;
    let fetch = manifest_fetch(remote, resolver);
    format::read_manifest(keys, &snap.blob.path(), &header, fetch).map_err(|e| damaged(snap, e))
}

#[cfg(test)]
mod tests {
    use super::tags_match;
    use crate::blob::BlobId;

    /// The listing keeps a summary; `open` reads the whole header again, and only
    /// the one listed: another valid index under the same blob, or none, is refused.
    #[test]
    fn open_reads_the_listed_header_again_and_only_that_one() {
        use crate::crypto::Keys;
        use crate::remote::{LocalRemote, Remote};
        let (dir, remote) = LocalRemote::fresh("snap");
        let keys = Keys::from_key_bytes(b"snapshot test key");
        let p = b"one chunk".to_vec();
        let id = keys.chunk_id(&p);
        let sealed = keys.seal(crate::crypto::Kind::Chunk, &id, &p);
        let mut w =
            crate::pack::Writer::create(&keys, &remote, "d", "n", (1_800_000_000, 5)).unwrap();
        w.add(&id, &sealed).unwrap();
        let blob = w.finish().unwrap();

        let listed = super::listing(&keys, &remote, "d", "n").unwrap();
        let [snap] = &listed.packs[..] else {
            panic!("one pack listed: {listed:?}")
        };
        let whole = snap.open(&keys, &remote).unwrap();
        assert_eq!(super::Summary::of(&whole), snap.header);
        assert!(!whole.window_hashes.is_empty());
        assert_eq!(snap.header.windows, whole.window_hashes.len() as u64);

        // The same blob, a header sealed afresh with the key (what a store could
        // keep from an earlier run, say): valid, but not the one listed.
        let mut index = remote.index(&blob).unwrap();
        let mut other = whole.clone();
        other.files += 1;
        index.sealed = Some(crate::format::seal_header(&keys, &blob.path(), &other));
        let file = dir.join(blob.path()).join("index.json");
        assert!(file.exists(), "{}", file.display());
        std::fs::write(&file, index.to_json()).unwrap();
        let e = snap.open(&keys, &remote).unwrap_err().to_string();
        assert!(e.contains("another index than the one listed"), "{e}");

        std::fs::remove_file(&file).unwrap();
        let e = snap.open(&keys, &remote).unwrap_err().to_string();
        assert!(e.contains("gone since it was listed"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tag_filters() {
        let v = |s: &[&str]| s.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let tags = v(&["nightly", "pre upgrade"]);
        assert!(tags_match(&[], &tags));
        assert!(tags_match(&[], &[]));
        assert!(tags_match(&v(&["nightly"]), &tags));
        assert!(tags_match(&v(&["nightly,pre upgrade"]), &tags));
        assert!(!tags_match(&v(&["nightly,weekly"]), &tags));
        assert!(tags_match(&v(&["weekly", "pre upgrade"]), &tags));
        assert!(!tags_match(&v(&["weekly", "night"]), &tags));
        assert!(!tags_match(&v(&["nightly"]), &[]));
    }

    #[test]
    fn times_format() {
        assert_eq!(super::timestamp(0, 0), "19700101T000000.000000Z");
        assert_eq!(
            super::timestamp(1_795_707_192, 123_456_789),
            "20261126T153312.123456Z"
        );
        assert_eq!(super::display_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::rfc3339(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(
            super::timestamp_rfc3339("20261126T153312.123456Z"),
            "2026-11-26T15:33:12Z"
        );
        assert_eq!(super::timestamp_rfc3339("odd"), "odd");
    }

    /// The table's short id is the start of the JSON's full id, so either names
    /// the snapshot (find_in matches a prefix of the full id).
    #[test]
    fn short_id_starts_the_full_id() {
        let b = BlobId::new("d", "n", "m", "20261126T153312.123456Z").unwrap();
        let full = super::id(&b.path());
        assert_eq!(full.len(), 64);
        assert!(full.starts_with(&super::short_id(&b)), "{full}");
    }
}
