//! `chute restore`: fetch a snapshot's manifest, then its chunks, and rebuild files.
//!
//! Memory is flat in the number of files (issue 17): the manifest is streamed
//! ([`format::Entries`]) twice, never held. Pass 1 checks every entry asked for
//! against what its destination holds, keeping only counters, the first conflict,
//! which filters matched, a stack of the directories it is in (to sweep stale
//! temporaries once it leaves one) and one bit per entry: whether it is a file
//! found in place (read and hashed, so pass 2 does not read it again). Pass 2,
//! if nothing refuses, reads the manifest again and writes it in batches of at
//! most [`BATCH_FILES`] files, symlinks and directories left (or
//! [`BATCH_CHUNKS`] chunks): each batch's reads are planned together, then its
//! files written, its symlinks made, and the metadata of the directories the
//! stream has left set, deepest first (a stack of open directories, as deep as
//! the tree); a directory left while the batch is empty (nothing below it waits:
//! a re-run with everything in place) gets its metadata at once. Pass 2 looks at each destination again (its stat; the content
//! only where pass 1 did not find the file in place) and fails, without
//! overwriting, if something appeared there since pass 1; a segment that opened
//! in pass 1 but not in pass 2 fails the restore as damage (pass 1's decisions
//! and bits hold only for the entries it read). A signal between batches stops
//! pass 2 at once.
//!
//! Besides files, directories and symlinks: FIFOs are made (`mkfifo`), empty;
//! the files a sink marked `linked` (other hard links) with the same device
//! and inode are hard-linked to the first of them restored or found in place
//! ([`Links`], bounded), the others being made after their batch's files like
//! symlinks, at a temporary name renamed into place; and whole 4 KiB blocks of
//! zeros are left as holes ([`write_sparse`]), so a sparse file stays sparse.
//!
//! The PATHs asked for are paths or globs ([`Sel`]); each selects what it names
//! and everything below, and one that selects nothing fails the restore before
//! anything is written.
//!
//! Invariants:
//! - Nothing existing is overwritten unless `force`: every target is checked before
//!   the first byte is written, and the restore refuses as a whole. A target that
//!   already holds the entry is skipped, not refused, so an interrupted restore
//!   resumes by running it again: a file with the entry's size and mtime (within 2 s) whose
//!   content is the entry's (each of its chunks, read at the manifest's offsets,
//!   has the keyed chunk id the manifest records; for a packed file, a slice of
//!   a chunk it shares, the keyed id of its whole content starts with the
//!   entry's tag), or a symlink to the same target.
//!   `force` replaces only what differs.
//! - A file appears under its real name only complete and authenticated: its bytes
//!   go to a private temporary name (`.chute-restore-` and 16 hex digits, mode
//!   0600) beside it, and it is renamed into place after its last chunk opened and
//!   its mode and times were set. The temporaries that exist at any time are
//!   those of one batch. No temporary outlives the process:
//!   - on a failure they are removed before the error is returned;
//!   - on SIGINT or SIGTERM a watcher thread stops the restore at once, even with a
//!     read stalled on the network: workers create, write and rename temporaries
//!     only while holding a shared gate; the watcher takes the gate exclusively (so
//!     no temporary can appear or be renamed any more), removes them all, says how
//!     far the restore got and exits with status 1. The handler itself only sets a
//!     flag ([`crate::sys::catch_termination`]);
//!   - ones a killed process (SIGKILL, power loss) or an older chute left in the
//!     directories a restore writes to are removed by the next restore of them,
//!     which says so, even one that then refuses to overwrite (without `--force`).
//! - Every chunk is checked to be the content its id names, not only to
//!   authenticate ([`Keys::open_chunk`]); one that is not fails the restore as
//!   damage naming the file and the chunk, and is recorded in the node's cache
//!   ([`crate::cache`]) so the next sink stores that content afresh.
//! - A manifest segment that does not open (version 2 manifests, see
//!   [`crate::format`]) loses only its entries: the rest restores, and the report
//!   lists the lost ranges that touch the paths asked for ([`Report::lost`]); the
//!   command then exits 3. A path asked for that is not among the entries read but
//!   may lie in a lost range fails as damage, not as "not in the snapshot".
//! - Reads are ranged: neighbouring chunks of part 0 are fetched together, up to
//!   [`MAX_READ`] bytes, so one file restores without downloading the snapshot;
//!   within a batch, in the order of the blobs' bytes. A chunk several files of a
//!   batch share (a pack of small files, each file `take` bytes of its plaintext
//!   from `skip`) is read and opened once for them all. A chunk prune moved is read
//!   from its pack, resolved per reference ([`crate::pack::Resolver::moved`]).

use crate::blob::BlobId;
use crate::crypto::{ChunkId, Keys, OpenError};
use crate::format::{self, ChunkRef, Entry, EntryKind};
use crate::reads::{Run, coalesce, each_parallel};
use crate::remote::Remote;
use crate::snapshot::Snapshot;
use crate::{Error, Result};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Instant;

/// The most bytes fetched in one read. Each worker holds one read while it opens
/// the chunks in place, so this bounds restore's buffers (8 MiB reads cost 16 MiB
/// of RSS on two cores; 2 MiB still makes 50 requests of a 100 MB run of small files).
pub const MAX_READ: u64 = 2 << 20;

/// What to restore and where.
pub struct Options {
    pub to: Option<PathBuf>,
    pub paths: Vec<PathBuf>,
    pub force: bool,
    pub threads: usize,
    /// This node's cache for the remote: a chunk found holding other bytes than its
    /// id names is recorded there, so the next sink stores that content afresh.
    pub cache_dir: Option<PathBuf>,
    /// Print each file and symlink to be written, as it is queued, on stdout.
    pub verbose: bool,
    /// Leave out notes that are not failures (temporaries removed).
    pub quiet: bool,
    /// Files and bytes written of the total, on stderr (see [`crate::progress`]).
    pub progress: crate::progress::Show,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct Report {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub fifos: u64,
    pub bytes: u64,
    pub secs: f64,
    /// Files and symlinks already in place, complete and identical: skipped.
    pub already: u64,
    /// Temporaries an interrupted restore had left behind, removed.
    pub stale_removed: u64,
    /// Damaged manifest segments whose entries may lie under the paths asked for:
    /// not restored.
    pub lost: Vec<crate::format::Lost>,
}

/// Whether lost segment `l` may hold entries within `filter` (an empty filter is
/// the whole snapshot): its entries lie strictly between `before` and `after` in
/// walk order, and the paths within a filter are one run in that order, starting
/// at the filter itself.
pub(crate) fn may_hold(l: &crate::format::Lost, filter: &[u8]) -> bool {
    use std::cmp::Ordering::Less;
    let order = crate::sink::walk_order;
    let f = filter.strip_suffix(b"/").unwrap_or(filter);
    if f.is_empty() {
        return true;
    }
    let after_start = l.before.as_ref().is_none_or(|b| order(b, f) == Less);
    let before_end = l.after.as_ref().is_none_or(|a| order(f, a) == Less);
    (after_start && before_end)
        || l.before.as_ref().is_some_and(|b| within(b, f))
        || l.after.as_ref().is_some_and(|a| within(a, f))
}

/// A PATH restore was given: a path (absolute, from the working directory) or a
/// glob ([`crate::glob`], as `find` and `--exclude` match): one holding `*`, `?`
/// or a `[...]` class that closes. A glob with a `/` is matched against whole
/// paths from the root (`home/*/config.yaml` is `/home/*/config.yaml`: paths in
/// a snapshot are absolute), one without against every name. Either selects
/// what it names and everything below it; a glob also selects a path equal to
/// it literally (a file named `a[1]`).
pub(crate) struct Sel {
    path: Vec<u8>,
    pub glob: bool,
    /// The PATH as a plain path, made absolute as a plain PATH is: a name with
    /// brackets (`report[1].pdf`) still selects itself.
    literal: Vec<u8>,
}

impl Sel {
    pub fn new(p: &Path) -> std::io::Result<Sel> {
        let b = p.as_os_str().as_bytes();
        let literal = std::path::absolute(p)?.as_os_str().as_bytes().to_vec();
        if is_glob(b) {
            let mut path = Vec::with_capacity(b.len() + 1);
            if b.contains(&b'/') && b[0] != b'/' {
                path.push(b'/');
            }
            path.extend_from_slice(b);
            return Ok(Sel {
                path,
                glob: true,
                literal,
            });
        }
        Ok(Sel {
            path: literal.clone(),
            glob: false,
            literal,
        })
    }

    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// Whether `path` is selected: it, or a directory above it, is named.
    pub fn selects(&self, path: &[u8]) -> bool {
        let f = &self.path[..];
        if within(path, f) || within(path, &self.literal) {
            return true;
        }
        if !self.glob {
            return false;
        }
        if !f.contains(&b'/') {
            return path
                .split(|&c| c == b'/')
                .any(|n| crate::glob::matches(f, n));
        }
        // A pattern of n components can match only the path's first n.
        let n = f.split(|&c| c == b'/').count();
        let mut ends = (path.iter().enumerate())
            .filter_map(|(i, &c)| (c == b'/').then_some(i))
            .chain(std::iter::once(path.len()));
        ends.nth(n - 1)
            .is_some_and(|end| crate::glob::matches(f, &path[..end]))
    }
}

/// Whether a PATH is a glob (see [`Sel`]).
pub(crate) fn is_glob(p: &[u8]) -> bool {
    p.iter().any(|c| matches!(c, b'*' | b'?' | b'['))
        && std::str::from_utf8(p).is_ok_and(|s| crate::glob::check(s).is_ok())
}

/// Whether `path` is `filter` or inside it.
pub(crate) fn within(path: &[u8], filter: &[u8]) -> bool {
    let filter = filter.strip_suffix(b"/").unwrap_or(filter);
    path == filter
        || (path.starts_with(filter)
            && (filter.is_empty() || path.get(filter.len()) == Some(&b'/')))
}

/// Where an entry goes.
fn destination(to: Option<&Path>, path: &[u8]) -> PathBuf {
    let p = Path::new(OsStr::from_bytes(path));
    match to {
        Some(t) => t.join(p.strip_prefix("/").unwrap_or(p)),
        None => p.to_path_buf(),
    }
}

struct Task {
    /// Its chunk references point into pass 2's blob table ([`Blobs`]).
    entry: Entry,
    dest: PathBuf,
    tmp: PathBuf,
    remaining: AtomicUsize,
    /// Renamed into place.
    placed: AtomicBool,
    /// The inode of its temporary, from the piece that created it (0: none yet).
    /// Each piece reopens the temporary by name, so a piece that finds another
    /// inode knows the file was removed behind its back (another restore's cleanup
    /// into the same directory) and fails, instead of filling a new one with holes.
    inode: AtomicU64,
}

struct Piece {
    task: usize,
    at: u64,
    chunk: ChunkRef,
}

type Group = Run<Piece>;

const TEMP_PREFIX: &str = ".chute-restore-";

fn temp_name(dest: &Path) -> PathBuf {
    dest.with_file_name(format!("{TEMP_PREFIX}{}", crate::fsutil::random_suffix()))
}

/// Whether a file name is one [`temp_name`] makes.
fn is_temp_name(name: &[u8]) -> bool {
    name.strip_prefix(TEMP_PREFIX.as_bytes())
        .is_some_and(|s| s.len() == 16 && s.iter().all(u8::is_ascii_hexdigit))
}

/// What a destination holds, compared with the entry to restore there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existing {
    Nothing,
    Dir,
    /// A regular file of the entry's size and mtime (within 2 s): identical if its content is.
    SameStat,
    Identical,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Write,
    Skip,
    Refuse,
}

/// What to do with an entry given what its destination holds.
fn decide(kind: EntryKind, found: Existing, force: bool) -> Action {
    match (kind, found) {
        (_, Existing::Nothing) | (EntryKind::Dir, Existing::Dir) => Action::Write,
        (EntryKind::Dir, _) | (_, Existing::Dir) => Action::Refuse,
        (_, Existing::Identical) => Action::Skip,
        (_, Existing::SameStat | Existing::Other) if force => Action::Write,
        (_, Existing::SameStat | Existing::Other) => Action::Refuse,
    }
}

/// Looks at a destination without reading file contents.
fn existing(e: &Entry, dest: &Path) -> Existing {
    let Ok(md) = fs::symlink_metadata(dest) else {
        return Existing::Nothing;
    };
    if md.is_dir() {
        return Existing::Dir;
    }
    match e.kind {
        // Within 2 s: a FAT or exFAT disk (a USB stick) keeps coarser times than
        // the snapshot's, and the content is compared anyway.
        EntryKind::File
            if md.is_file() && md.len() == e.size && md.mtime().abs_diff(e.mtime) <= 2 =>
        {
            Existing::SameStat
        }
        EntryKind::Fifo if md.file_type().is_fifo() => Existing::Identical,
        EntryKind::Symlink
            if md.is_symlink()
                && fs::read_link(dest).is_ok_and(|t| t.as_os_str().as_bytes() == e.target) =>
        {
            Existing::Identical
        }
        _ => Existing::Other,
    }
}

/// Whether the file at `path` holds exactly the entry's content: a file with a
/// tag (its chunks shared with other files, see [`crate::format`]) is hashed
/// whole and compared with the tag; any other, each chunk read at its place has
/// the keyed id the manifest records. Any doubt (an unreadable file, a chunk
/// larger than the chunker makes, a slice without a tag) is `false`.
fn same_content(keys: &Keys, path: &Path, e: &Entry) -> bool {
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let mut buf = Vec::new();
    if let Some(tag) = e.tag {
        // Tagged files are packed ones, under chunker::MIN: read whole.
        if e.size > crate::chunker::MAX as u64 {
            return false;
        }
        buf.resize(e.size as usize, 0);
        let at_end = f.read_at(&mut [0u8], e.size).is_ok_and(|n| n == 0);
        return f.read_exact_at(&mut buf, 0).is_ok() && at_end && keys.chunk_id(&buf)[..8] == tag;
    }
    let mut at = 0u64;
    for c in &e.chunks {
        let n = c.plain_len();
        if n > crate::chunker::MAX as u64 || !c.is_whole() {
            return false;
        }
        buf.resize(n as usize, 0);
        if f.read_exact_at(&mut buf, at).is_err() || keys.chunk_id(&buf) != c.id {
            return false;
        }
        at += n;
    }
    at == e.size
}

fn io(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", p.display());
    move |e| Error::Io(what, e)
}

/// Sets the entry's extended attributes (and so its ACLs) on `path`. One the
/// target refuses (a file system without them, a `trusted.` name without root)
/// is a warning, once per restore, not a failure.
fn set_xattrs(path: &Path, e: &Entry) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    for (name, value) in &e.xattrs {
        if let Err(err) = crate::sys::set_xattr(path, name, value) {
            if !WARNED.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "chute restore: warning: cannot set extended attribute {} of {}: {err} (not kept there; later ones not reported)",
                    String::from_utf8_lossy(name),
                    path.display()
                );
            }
        }
    }
}

/// Sets mode, owner (as root), extended attributes (before the mode: an ACL
/// sets group bits) and mtime; `symlink` skips the mode and attributes.
fn set_meta(path: &Path, e: &Entry, symlink: bool) -> Result<()> {
    if crate::sys::is_root() {
        crate::sys::lchown(path, e.uid, e.gid).map_err(io("cannot set owner of", path))?;
    }
    if !symlink {
        set_xattrs(path, e);
        fs::set_permissions(path, fs::Permissions::from_mode(e.mode))
            .map_err(io("cannot set mode of", path))?;
    }
    crate::sys::set_mtime_nofollow(path, e.mtime, e.mtime_ns.min(999_999_999))
        .map_err(io("cannot set time of", path))
}

/// Removes the temporaries (see [`is_temp_name`]) found in directory `dir`, except
/// the names in `keep` (entries of the snapshot that happen to have such a name).
/// Returns how many were removed and the first.
fn remove_stale(dir: &Path, keep: &[Vec<u8>]) -> (u64, Option<PathBuf>) {
    let (mut n, mut first) = (0, None);
    let Ok(rd) = fs::read_dir(dir) else {
        return (0, None);
    };
    for d in rd.flatten() {
        let name = d.file_name();
        if !is_temp_name(name.as_bytes())
            || keep.iter().any(|k| k == name.as_bytes())
            || d.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let p = d.path();
        if fs::remove_file(&p).is_ok() {
            n += 1;
            first.get_or_insert(p);
        }
    }
    (n, first)
}

/// A directory that pass 1 sweeps of stale temporaries once the manifest's stream
/// has left it (its entries are one run in walk order, subdirectories within).
struct Sweep {
    /// Its path in the snapshot.
    path: Vec<u8>,
    dest: PathBuf,
    /// Names of the entries restored into it that have a temporary's shape.
    keep: Vec<Vec<u8>>,
}

/// The parent directory of a snapshot path (`""` for the root's children).
fn parent_of(path: &[u8]) -> &[u8] {
    path.iter()
        .rposition(|&b| b == b'/')
        .map_or(&[][..], |i| &path[..i])
}

/// What pass 1 found.
#[derive(Default)]
struct Checked {
    refused: u64,
    first_refused: Option<PathBuf>,
    /// Files pass 2 will write, and their bytes.
    to_write: u64,
    to_write_bytes: u64,
    stale: u64,
    first_stale: Option<PathBuf>,
}

impl Checked {
    fn sweep(&mut self, s: Sweep) {
        let (n, first) = remove_stale(&s.dest, &s.keep);
        self.stale += n;
        if self.first_stale.is_none() {
            self.first_stale = first;
        }
    }
}

/// What a destination holds, with the content compared when the size and mtime
/// match. Hashed one by one: a re-run reads what is in place at disk speed, and
/// one more thread pool here cost the armv7 binary more than its 2 MiB budget had.
fn found(keys: &Keys, e: &Entry, dest: &Path) -> Existing {
    match existing(e, dest) {
        Existing::SameStat if same_content(keys, dest, e) => Existing::Identical,
        f => f,
    }
}

/// Opens the snapshot's manifest as a stream of entries (see [`format::Entries`]).
pub(crate) fn open_entries<'a>(
    keys: &'a Keys,
    remote: &'a dyn Remote,
    resolver: &'a crate::pack::Resolver,
    snap: &'a Snapshot,
) -> Result<format::Entries<'a, impl format::SpanFetch + 'a>> {
    let h = &snap.open(keys, remote)?;
    let fetch = crate::snapshot::manifest_fetch(remote, resolver);
    format::Entries::open(keys, &snap.blob.path(), h, fetch)
        .map(format::Entries::without_nodes)
        .map_err(|e| damaged_manifest(snap, e))
}

pub(crate) fn damaged_manifest(snap: &Snapshot, e: format::Error) -> Error {
    Error::Damaged(format!(
        "snapshot {}: manifest in {} is damaged: {e}",
        snap.short_id(),
        snap.blob.path()
    ))
}

/// The blobs pass 2 reads: the manifest's table as its stream reveals it, and the
/// packs its references are moved to ([`crate::pack::Resolver`]); a handful per
/// snapshot, not per file.
struct Blobs<'r> {
    resolver: &'r crate::pack::Resolver,
    ids: Vec<BlobId>,
    /// Manifest blob number → (number in `ids`, whether references into it stay).
    manifest: Vec<(usize, bool)>,
    /// Pack number → number in `ids`.
    packs: Vec<Option<usize>>,
}

impl Blobs<'_> {
    /// Points `c` at the blob and offset it is read from, numbered in `ids`.
    fn place(&mut self, names: &[String], c: &mut ChunkRef, snap: &Snapshot) -> Result<()> {
        let bad = |e: String| Error::Damaged(format!("snapshot {}: {e}", snap.short_id()));
        for name in &names[self.manifest.len().min(names.len())..] {
            self.ids
                .push(BlobId::parse(name).map_err(|e| bad(e.to_string()))?);
            self.manifest
                .push((self.ids.len() - 1, self.resolver.stays(name)));
        }
        let Some(&(mut slot, stays)) = self.manifest.get(c.blob as usize) else {
            return Err(bad(format!(
                "a chunk names blob {} of {}",
                c.blob,
                names.len()
            )));
        };
        if let Some((p, offset)) = (!stays).then(|| self.resolver.moved(c)).flatten() {
            if self.packs.len() <= p {
                self.packs.resize(p + 1, None);
            }
            slot = *self.packs[p].get_or_insert_with(|| {
                self.ids.push(self.resolver.packs()[p].clone());
                self.ids.len() - 1
            });
            c.offset = offset;
        }
        c.blob = slot as u32;
        Ok(())
    }
}

/// The most files, and chunks, one batch of pass 2 holds (see the module doc):
/// about 2 MiB of tasks, and reads of a few MiB each coalesced within it.
const BATCH_FILES: usize = 4096;
const BATCH_CHUNKS: usize = 16_384;

/// What pass 2 writes next: files, then symlinks, then the metadata of the
/// directories the stream has left.
#[derive(Default)]
struct Batch {
    tasks: Vec<Task>,
    chunks: usize,
    /// Symlinks, FIFOs and hard links, made after the files.
    symlinks: Vec<(PathBuf, Entry, Special)>,
    dirs: Vec<(PathBuf, Entry)>,
}

/// What a batch's non-file entry is made as.
enum Special {
    Symlink,
    Fifo,
    /// A hard link to the restored path of the snapshot's first entry with the
    /// same device and inode (see [`Links`]).
    Link(PathBuf),
}

/// Where the first restored (or found in place) file of each hard-linked inode
/// of the snapshot went, keyed by its device and inode: entries flagged
/// `linked` only, and at most [`LINKS_MAX`] of them, so memory stays flat in
/// the number of files; past that, links restore as separate copies (with a
/// warning).
#[derive(Default)]
struct Links {
    first: std::collections::HashMap<(u64, u64), PathBuf>,
    warned: bool,
}

/// Most hard-linked inodes a restore links (~10 MiB of paths at most).
const LINKS_MAX: usize = 65_536;

impl Links {
    /// The path to link `e` (restored at `dest`) to, or `None` if it is the
    /// first of its inode, which is noted.
    fn to(&mut self, e: &Entry, dest: &Path) -> Option<PathBuf> {
        if !e.linked {
            return None;
        }
        let key = (e.dev, e.inode);
        if let Some(first) = self.first.get(&key) {
            return Some(first.clone());
        }
        if self.first.len() < LINKS_MAX {
            self.first.insert(key, dest.to_path_buf());
        } else if !self.warned {
            self.warned = true;
            eprintln!(
                "chute restore: warning: more than {LINKS_MAX} hard-linked files; the rest restore as copies"
            );
        }
        None
    }
}

impl Batch {
    /// Whether the batch holds `limit` files, symlinks and directories left
    /// (directories count: a re-run with everything in place writes no file,
    /// and their list must not grow with the tree), or [`BATCH_CHUNKS`] chunks.
    fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.symlinks.is_empty() && self.dirs.is_empty()
    }

    fn is_full(&self, limit: usize) -> bool {
        self.tasks.len() + self.symlinks.len() + self.dirs.len() >= limit
            || self.chunks >= BATCH_CHUNKS
    }
}

/// Restores (part of) a snapshot.
pub fn run(keys: &Keys, remote: &dyn Remote, snap: &Snapshot, opts: &Options) -> Result<Report> {
    let started = Instant::now();
    // Chunks prune moved out of forgotten blobs are read from their packs.
    let resolver =
        crate::pack::Resolver::for_node(keys, remote, &snap.blob.domain, &snap.blob.node)?;
    let filters: Vec<Sel> = opts
        .paths
        .iter()
        .map(|p| Sel::new(p).map_err(io("cannot resolve", p)))
        .collect::<Result<_>>()?;
    let selects = |path: &[u8]| filters.is_empty() || filters.iter().any(|f| f.selects(path));
    let to = opts.to.as_deref();

    // Pass 1: refuse before writing anything; sweep stale temporaries.
    let mut stream = open_entries(keys, remote, &resolver, snap)?;
    let mut matched = vec![false; filters.len()];
    let mut checked = Checked::default();
    let mut sweeps: Vec<Sweep> = Vec::new();
    // Which selected entries are files found in place (read and hashed), so
    // pass 2 need not read them again: one bit each.
    let mut identical = Bits::default();
    while let Some(e) = stream.next_entry().map_err(|e| damaged_manifest(snap, e))? {
        for (m, f) in matched.iter_mut().zip(&filters) {
            *m |= f.selects(&e.path);
        }
        if !selects(&e.path) {
            continue;
        }
        let dest = destination(to, &e.path);
        let f = found(keys, &e, &dest);
        identical.push(f == Existing::Identical && e.kind == EntryKind::File);
        match decide(e.kind, f, opts.force) {
            Action::Refuse => {
                checked.refused += 1;
                checked.first_refused.get_or_insert_with(|| dest.clone());
            }
            Action::Write if e.kind == EntryKind::File => {
                checked.to_write += 1;
                checked.to_write_bytes += e.size;
            }
            _ => {}
        }
        if e.kind == EntryKind::Dir {
            continue;
        }
        // Temporaries an interrupted run left where this one writes: garbage
        // whether or not this run goes on, so removed before it may refuse.
        let Some(dir) = dest.parent() else { continue };
        let parent = parent_of(&e.path);
        while sweeps.last().is_some_and(|s| !within(parent, &s.path)) {
            checked.sweep(sweeps.pop().expect("last"));
        }
        if sweeps.last().is_none_or(|s| s.path != parent) {
            sweeps.push(Sweep {
                path: parent.to_vec(),
                dest: dir.to_path_buf(),
                keep: Vec::new(),
            });
        }
        let name = dest.file_name().map_or(&[][..], |n| n.as_bytes());
        if is_temp_name(name) {
            sweeps.last_mut().expect("pushed").keep.push(name.to_vec());
        }
    }
    while let Some(s) = sweeps.pop() {
        checked.sweep(s);
    }
    let lost_segments = stream.lost.len();
    let lost: Vec<crate::format::Lost> = std::mem::take(&mut stream.lost)
        .into_iter()
        .filter(|l| filters.is_empty() || filters.iter().any(|f| f.glob || may_hold(l, f.path())))
        .collect();
    drop(stream);
    if let Some((f, _)) = filters.iter().zip(&matched).find(|(_, m)| !**m) {
        let name = String::from_utf8_lossy(f.path());
        if let Some(l) = lost.first() {
            return Err(Error::Damaged(format!(
                "{name} may be in a damaged part of snapshot {}: {l} are lost",
                snap.short_id()
            )));
        }
        return Err(Error::Usage(if f.glob {
            format!("no path in snapshot {} matches {name}", snap.short_id())
        } else {
            format!("{name} is not in snapshot {}", snap.short_id())
        }));
    }
    if let (Some(first), false) = (&checked.first_stale, opts.quiet) {
        eprintln!(
            "chute restore: removed {} temporary file{} an interrupted restore left behind (first: {})",
            checked.stale,
            if checked.stale == 1 { "" } else { "s" },
            first.display()
        );
    }
    if let Some(first) = &checked.first_refused {
        let n = checked.refused;
        return Err(Error::Failed(format!(
            "refusing to overwrite {n} existing path{} (first: {}); use --force to replace files, or --to DIR",
            if n == 1 { "" } else { "s" },
            first.display()
        )));
    }

    let mut links = Links::default();
    let mut report = Report {
        stale_removed: checked.stale,
        lost,
        ..Report::default()
    };
    // From here on temporaries exist: a signal stops the restore through the
    // watcher (see the module doc) instead of killing it.
    crate::sys::catch_termination();

    // Pass 2: the same stream again, written batch by batch.
    let mut stream = open_entries(keys, remote, &resolver, snap)?;
    let mut blobs = Blobs {
        resolver: &resolver,
        ids: Vec::new(),
        manifest: Vec::new(),
        packs: Vec::new(),
    };
    let limit = crate::testhooks::restore_batch(BATCH_FILES);
    let mut writer = Writer {
        keys,
        remote,
        snap,
        opts,
        written: 0,
        to_write: checked.to_write,
        copied_links: false,
        progress: crate::progress::Progress::new("restore", opts.progress),
    };
    writer
        .progress
        .total(checked.to_write, checked.to_write_bytes, true);
    let mut batch = Batch::default();
    // Directories restored whose entries the stream is still in, outermost first.
    let mut open: Vec<(Vec<u8>, PathBuf, Entry)> = Vec::new();
    let mut made: Option<PathBuf> = None;
    let mut selected = 0usize;
    while let Some(mut e) = stream.next_entry().map_err(|e| damaged_manifest(snap, e))? {
        if crate::sys::signalled() {
            // No temporary exists between batches.
            return Err(interrupted());
        }
        // Pass 1's bits and decisions hold only for the entries it read.
        if stream.lost.len() > lost_segments {
            return Err(Error::Damaged(format!(
                "snapshot {}: {} did not open on the second read; run the restore again",
                snap.short_id(),
                stream.lost[lost_segments]
            )));
        }
        while open
            .last()
            .is_some_and(|(p, _, _)| !(within(&e.path, p) && e.path != *p))
        {
            let (_, dest, d) = open.pop().expect("last");
            // Nothing below it waits in the batch (a re-run with everything in
            // place): set now, not held.
            if batch.is_empty() {
                set_meta(&dest, &d, false)?;
            } else {
                batch.dirs.push((dest, d));
            }
        }
        // Here, before any `continue`: a re-run with everything in place skips
        // every file, and the directories it leaves must still be flushed.
        if batch.is_full(limit) {
            writer.write(&mut batch, &blobs.ids)?;
        }
        if !selects(&e.path) {
            continue;
        }
        let dest = destination(to, &e.path);
        let was_identical = identical.get(selected);
        selected += 1;
        let f = match existing(&e, &dest) {
            Existing::SameStat if was_identical => Existing::Identical,
            Existing::SameStat => found(keys, &e, &dest),
            f => f,
        };
        match decide(e.kind, f, opts.force) {
            Action::Skip => {
                report.already += 1;
                links.to(&e, &dest);
                continue;
            }
            // Pass 1 saw nothing to refuse here: something appeared since.
            Action::Refuse => {
                writer.write(&mut batch, &blobs.ids)?;
                return Err(Error::Failed(format!(
                    "{} appeared while the restore ran: not overwritten; run the restore again",
                    dest.display()
                )));
            }
            Action::Write => {}
        }
        if opts.verbose && e.kind != EntryKind::Dir {
            println!("{}", dest.display());
        }
        if let Some(first) = links.to(&e, &dest) {
            report.files += 1;
            batch.symlinks.push((dest, e, Special::Link(first)));
            continue;
        }
        match e.kind {
            EntryKind::Dir => {
                fs::create_dir_all(&dest).map_err(io("cannot create", &dest))?;
                report.dirs += 1;
                open.push((e.path.clone(), dest, e));
            }
            EntryKind::Fifo => {
                report.fifos += 1;
                batch.symlinks.push((dest, e, Special::Fifo));
            }
            EntryKind::File => {
                if let Some(parent) = dest.parent() {
                    // Files of one directory come together: create it once.
                    if made.as_deref() != Some(parent) {
                        fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
                        made = Some(parent.to_path_buf());
                    }
                }
                for c in &mut e.chunks {
                    blobs.place(&stream.blobs, c, snap)?;
                }
                report.files += 1;
                report.bytes += e.size;
                batch.chunks += e.chunks.len();
                batch.tasks.push(Task {
                    tmp: temp_name(&dest),
                    dest,
                    remaining: AtomicUsize::new(e.chunks.len()),
                    placed: AtomicBool::new(false),
                    inode: AtomicU64::new(0),
                    entry: e,
                });
            }
            EntryKind::Symlink => {
                report.symlinks += 1;
                batch.symlinks.push((dest, e, Special::Symlink));
            }
        }
    }
    // Deepest first, so restoring their contents does not disturb their times and
    // a read-only directory is filled before it closes.
    while let Some((_, dest, d)) = open.pop() {
        batch.dirs.push((dest, d));
    }
    writer.write(&mut batch, &blobs.ids)?;
    report.secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One bit per selected entry, in stream order.
#[derive(Default)]
struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn push(&mut self, bit: bool) {
        if self.len % 64 == 0 {
            self.words.push(0);
        }
        if bit {
            self.words[self.len / 64] |= 1 << (self.len % 64);
        }
        self.len += 1;
    }

    fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] & (1 << (i % 64)) != 0
    }
}

/// Writes pass 2's batches.
struct Writer<'a> {
    keys: &'a Keys,
    remote: &'a dyn Remote,
    snap: &'a Snapshot,
    opts: &'a Options,
    /// Files placed by earlier batches, of `to_write`.
    written: u64,
    to_write: u64,
    /// A hard link failed and was restored as a copy (warned once).
    copied_links: bool,
    progress: crate::progress::Progress,
}

impl Writer<'_> {
    /// Writes a batch's files (their reads planned together), then its symlinks,
    /// FIFOs and hard links (to files of this batch or earlier ones), then its
    /// directories' metadata, and empties it.
    fn write(&mut self, batch: &mut Batch, blobs: &[BlobId]) -> Result<()> {
        if crate::sys::signalled() {
            return Err(interrupted());
        }
        let tasks = std::mem::take(&mut batch.tasks);
        batch.chunks = 0;
        let groups = plan(&tasks);
        let progress = (self.written, self.to_write);
        let result = fetch_all(
            self.keys,
            self.remote,
            blobs,
            &tasks,
            &groups,
            self.opts.threads,
            self.snap,
            progress,
            &self.progress,
        );
        if let Err(e) = result {
            for t in &tasks {
                let _ = fs::remove_file(&t.tmp);
            }
            if let (Some(found), Some(dir)) = (e.wrong_content, &self.opts.cache_dir) {
                if let Err(e) = crate::cache::record_damaged(dir, &[found]) {
                    eprintln!("chute restore: warning: cannot record the damaged chunk: {e}");
                }
            }
            return Err(e.error);
        }
        self.written += tasks.len() as u64;
        drop(groups);
        drop(tasks);
        for (dest, e, what) in batch.symlinks.drain(..) {
            if crate::sys::signalled() {
                return Err(interrupted());
            }
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
            }
            let tmp = temp_name(&dest);
            let made = match &what {
                Special::Symlink => std::os::unix::fs::symlink(OsStr::from_bytes(&e.target), &tmp)
                    .map_err(io("cannot create symlink", &dest))
                    .and_then(|_| set_meta(&tmp, &e, true)),
                Special::Fifo => crate::sys::mkfifo(&tmp)
                    .map_err(io("cannot create FIFO", &dest))
                    .and_then(|_| set_meta(&tmp, &e, false)),
                // Its inode has the first's metadata already.
                Special::Link(first) => fs::hard_link(first, &tmp).or_else(|err| {
                    // A target without hard links (FAT), or too many: a copy.
                    if !self.copied_links {
                        self.copied_links = true;
                        eprintln!(
                            "chute restore: warning: cannot hard-link {} to {} ({err}): restoring hard links as copies",
                            dest.display(),
                            first.display()
                        );
                    }
                    let _ = fs::remove_file(&tmp);
                    fs::copy(first, &tmp)
                        .map_err(io("cannot copy", first))
                        .and_then(|_| set_meta(&tmp, &e, false))
                }),
            };
            let placed =
                made.and_then(|_| fs::rename(&tmp, &dest).map_err(io("cannot create", &dest)));
            if let Err(err) = placed {
                let _ = fs::remove_file(&tmp);
                return Err(err);
            }
        }
        for (dest, e) in batch.dirs.drain(..) {
            if crate::sys::signalled() {
                return Err(interrupted());
            }
            set_meta(&dest, &e, false)?;
        }
        Ok(())
    }
}

fn interrupted() -> Error {
    Error::Failed(
        "interrupted; run the same restore again to resume (what is in place is skipped)".into(),
    )
}

/// Groups every chunk to fetch into ranged reads of neighbouring bytes, in the
/// order of the blobs' bytes: a sink's workers append chunks in the order they
/// finish, not in the manifest's, so neighbours in the manifest are often apart in
/// the blob (a restore of 200,000 small files through `chute serve` made 27,736
/// ranged reads in manifest order, ~170 in this one).
fn plan(tasks: &[Task]) -> Vec<Group> {
    let mut pieces: Vec<_> = tasks
        .iter()
        .enumerate()
        .flat_map(|(t, task)| {
            let mut at = 0u64;
            task.entry.chunks.iter().map(move |c| {
                let piece = Piece {
                    task: t,
                    at,
                    chunk: *c,
                };
                at += u64::from(c.take);
                (c.blob as usize, c.offset, u64::from(c.len), piece)
            })
        })
        .collect();
    crate::sort::by_key(&mut pieces, |p| (p.0, p.1));
    coalesce(pieces, MAX_READ)
}

/// Why fetching failed; with the chunk's id when it opened but held other bytes
/// than its id names (to be recorded as damaged).
struct FetchError {
    error: Error,
    /// (id, blob, offset)
    wrong_content: Option<(ChunkId, String, u64)>,
}

impl From<Error> for FetchError {
    fn from(error: Error) -> FetchError {
        FetchError {
            error,
            wrong_content: None,
        }
    }
}

#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
fn fetch_all(
    keys: &Keys,
    remote: &dyn Remote,
    blobs: &[BlobId],
    tasks: &[Task],
    groups: &[Group],
    threads: usize,
    snap: &Snapshot,
    progress: (u64, u64),
    shown: &crate::progress::Progress,
) -> std::result::Result<(), FetchError> {
    let gate = RwLock::new(());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| watch(&gate, &done, tasks, progress, shown));
        let result = (|| {
            // Empty files have no chunk to complete them.
            for t in tasks
                .iter()
                .filter(|t| t.remaining.load(Ordering::SeqCst) == 0)
            {
                let _open = gate.read().unwrap_or_else(PoisonError::into_inner);
                create_tmp(&t.tmp).and_then(|_| finish(t, None))?;
                shown.add(1, 0);
            }
            each_parallel(groups, threads, |g| {
                fetch_group(keys, remote, blobs, tasks, g, snap, &gate, shown)
            })
        })();
        done.store(true, Ordering::SeqCst);
        watcher.thread().unpark();
        result
    })
}

/// Stops the restore when SIGINT or SIGTERM arrives (see the module doc): takes the
/// gate for good, removes every temporary and exits; returns once `done`. Ticks the
/// progress line every 50 ms meanwhile.
/// `progress`: files placed by earlier batches, and how many the restore writes.
fn watch(
    gate: &RwLock<()>,
    done: &AtomicBool,
    tasks: &[Task],
    progress: (u64, u64),
    shown: &crate::progress::Progress,
) {
    while !done.load(Ordering::SeqCst) {
        if crate::sys::signalled() {
            // Held until the process ends: no worker creates or renames a
            // temporary any more.
            let _closed = gate.write().unwrap_or_else(PoisonError::into_inner);
            for t in tasks {
                let _ = fs::remove_file(&t.tmp);
            }
            let placed = tasks
                .iter()
                .filter(|t| t.placed.load(Ordering::SeqCst))
                .count() as u64;
            shown.clear();
            eprintln!(
                "chute restore: interrupted after writing {} of {} files; run the same restore again to resume (what is in place is skipped)",
                progress.0 + placed,
                progress.1
            );
            std::process::exit(1);
        }
        // Redrawn from here too, not only as chunks land: a download that stalls
        // or trickles still shows a live line whose rate falls.
        shown.tick();
        std::thread::park_timeout(std::time::Duration::from_millis(50));
    }
}

fn create_tmp(tmp: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map(drop)
        .map_err(io("cannot create", tmp))
}

#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
fn fetch_group(
    keys: &Keys,
    remote: &dyn Remote,
    blobs: &[BlobId],
    tasks: &[Task],
    g: &Group,
    snap: &Snapshot,
    gate: &RwLock<()>,
    shown: &crate::progress::Progress,
) -> std::result::Result<(), FetchError> {
    let blob = &blobs[g.blob];
    let mut data =
        crate::remote::retry(|| remote.read(blob, g.start, g.end - g.start)).map_err(|e| {
            let t = &tasks[g.items[0].task];
            Error::Damaged(format!(
                "snapshot {}: cannot read data of {} (bytes {}-{} of {}): {e}",
                snap.short_id(),
                String::from_utf8_lossy(&t.entry.path),
                g.start,
                g.end - 1,
                blob.path()
            ))
        })?;
    // A chunk restored into several files is opened once (it is opened in place):
    // its pieces are next to each other, the plan being in the blob's order.
    // Keyed by place and id: a chunk's plaintext is never written for another id.
    let mut shared: Option<((u64, ChunkId), Vec<u8>)> = None;
    // A compressed chunk's plaintext, decompressed here (reused).
    let mut unpacked = Vec::new();
    for (k, p) in g.items.iter().enumerate() {
        let t = &tasks[p.task];
        let key = (p.chunk.offset, p.chunk.id);
        let again = g
            .items
            .get(k + 1)
            .is_some_and(|n| (n.chunk.offset, n.chunk.id) == key);
        let plain: &[u8] = match &shared {
            Some((at, plain)) if *at == key => plain,
            _ => {
                let from = (p.chunk.offset - g.start) as usize;
                let sealed = &mut data[from..from + p.chunk.len as usize];
                let plain = open_piece(keys, blob, t, p, snap, sealed, &mut unpacked)?;
                if again {
                    &shared.insert((key, plain.to_vec())).1
                } else {
                    plain
                }
            }
        };
        // Shared while this temporary may be created, written or renamed.
        let _open = gate.read().unwrap_or_else(PoisonError::into_inner);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&t.tmp)
            .map_err(io("cannot write", &t.dest))?;
        same_temporary(t, &f)?;
        let bytes = slice(plain, &p.chunk, t, snap)?;
        write_sparse(&f, bytes, p.at, t.entry.size).map_err(io("cannot write", &t.dest))?;
        let placed = t.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        if placed {
            finish(t, Some(&f))?;
        }
        shown.add(u64::from(placed), bytes.len() as u64);
    }
    Ok(())
}

/// Holes are made of whole blocks of this many bytes, at offsets that are
/// multiples of it (a file system's block size; larger ones still get holes for
/// the runs of zeros that cover their blocks).
const HOLE_BLOCK: u64 = 4096;

/// The ranges of `data`, to be written at file offset `at` of a file of `size`
/// bytes, that must be written: all but the [`HOLE_BLOCK`]-aligned blocks that
/// hold only zeros, which are left as holes (the file was created empty). The
/// block holding the file's last byte is always written, so the file ends at
/// its size without a `set_len`; a file system without holes fills the gaps
/// with zeros itself. Adjacent ranges are merged: one write each.
fn data_ranges(data: &[u8], at: u64, size: u64) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let off = at + i as u64;
        let next = (off / HOLE_BLOCK + 1) * HOLE_BLOCK;
        let end = data.len().min((next - at) as usize);
        let block = &data[i..end];
        // Only a whole aligned block can be a hole, and never the last one.
        let whole = off % HOLE_BLOCK == 0 && block.len() as u64 == HOLE_BLOCK;
        let hole = whole && next < size && block.iter().all(|&b| b == 0);
        if !hole {
            match out.last_mut() {
                Some(r) if r.end == i => r.end = end,
                _ => out.push(i..end),
            }
        }
        i = end;
    }
    out
}

/// Writes `data` at `at` of a file of `size` bytes, leaving [`data_ranges`]'
/// holes: a sparse file (a disk image, a database's preallocated space)
/// restores sparse, and zeros cost no writes to an SD card.
fn write_sparse(f: &fs::File, data: &[u8], at: u64, size: u64) -> std::io::Result<()> {
    for r in data_ranges(data, at, size) {
        f.write_all_at(&data[r.clone()], at + r.start as u64)?;
    }
    Ok(())
}

/// The file's bytes of an opened chunk, `take` from `skip`: a slice the chunk
/// does not hold is damage (the manifest authenticated, so a writer's bug).
fn slice<'a>(plain: &'a [u8], c: &ChunkRef, t: &Task, snap: &Snapshot) -> Result<&'a [u8]> {
    let (skip, take) = (c.skip as usize, c.take as usize);
    plain.get(skip..skip.saturating_add(take)).ok_or_else(|| {
        Error::Damaged(format!(
            "snapshot {}: {} names bytes {skip}+{take} of a chunk of {} bytes",
            snap.short_id(),
            String::from_utf8_lossy(&t.entry.path),
            plain.len()
        ))
    })
}

/// Opens one piece's sealed chunk in place (a compressed one into `out`); a
/// failure names the file and the chunk.
fn open_piece<'a>(
    keys: &Keys,
    blob: &BlobId,
    t: &Task,
    p: &Piece,
    snap: &Snapshot,
    sealed: &'a mut [u8],
    out: &'a mut Vec<u8>,
) -> std::result::Result<&'a [u8], FetchError> {
    keys.open_chunk(&p.chunk.id, p.chunk.raw, sealed, out)
        .map(|plain| &*plain)
        .map_err(|e| FetchError {
            wrong_content: (e == OpenError::WrongContent)
                .then(|| (p.chunk.id, blob.path(), p.chunk.offset)),
            error: Error::Damaged(format!(
                "snapshot {}: chunk at byte {} of {} ({}) is damaged: {e}",
                snap.short_id(),
                p.chunk.offset,
                blob.path(),
                String::from_utf8_lossy(&t.entry.path),
            )),
        })
}

/// Fails unless `f` is the temporary the task's first piece created (see
/// [`Task::inode`]).
fn same_temporary(t: &Task, f: &fs::File) -> Result<()> {
    let ino = f.metadata().map_err(io("cannot write", &t.dest))?.ino();
    match t
        .inode
        .compare_exchange(0, ino, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => Ok(()),
        Err(first) if first == ino => Ok(()),
        Err(_) => Err(Error::Failed(format!(
            "the temporary of {} was removed while it was written (another restore into the same directory?): run the restore again",
            t.dest.display()
        ))),
    }
}

/// Gives a complete file its metadata and its real name; through its open
/// descriptor when there is one (no path lookups: 50,000 small files add up).
/// A file whose temporary does not hold exactly its size is never placed.
fn finish(t: &Task, open: Option<&fs::File>) -> Result<()> {
    let e = &t.entry;
    match open {
        Some(f) => {
            let len = f.metadata().map_err(io("cannot write", &t.dest))?.len();
            if len != e.size {
                return Err(Error::Failed(format!(
                    "the temporary of {} holds {len} bytes, not {}: not placed; run the restore again",
                    t.dest.display(),
                    e.size
                )));
            }
            if crate::sys::is_root() {
                std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid))
                    .map_err(io("cannot set owner of", &t.dest))?;
            }
            set_xattrs(&t.tmp, e);
            f.set_permissions(fs::Permissions::from_mode(e.mode))
                .map_err(io("cannot set mode of", &t.dest))?;
            f.set_modified(mtime(e))
                .map_err(io("cannot set time of", &t.dest))?;
        }
        None => set_meta(&t.tmp, e, false)?,
    }
    fs::rename(&t.tmp, &t.dest).map_err(io("cannot place", &t.dest))?;
    t.placed.store(true, Ordering::SeqCst);
    Ok(())
}

fn mtime(e: &Entry) -> std::time::SystemTime {
    let ns = e.mtime_ns.min(999_999_999);
    if e.mtime >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::new(e.mtime as u64, ns)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::new(e.mtime.unsigned_abs(), 0)
            + std::time::Duration::new(0, ns)
    }
}

#[cfg(test)]
mod tests {
    // A lost segment touches a path asked for only if its entries may lie under
    // it: walk order puts a path's entries in one run, starting at the path.
    #[test]
    fn a_lost_range_touches_only_paths_it_may_hold() {
        let l = crate::format::Lost {
            segment: 3,
            segments: 1,
            entries: 10,
            before: Some(b"/d/b/x".to_vec()),
            after: Some(b"/d/c/a".to_vec()),
        };
        for (f, want) in [
            (&b"/d"[..], true),
            (b"/d/b", true),
            (b"/d/b/", true),
            (b"/d/c", true),
            (b"/d/b/w", false),
            (b"/d/bb", true),
            (b"/d/a", false),
            (b"/d/d", false),
            (b"/e", false),
            (b"", true),
        ] {
            assert_eq!(
                super::may_hold(&l, f),
                want,
                "{}",
                String::from_utf8_lossy(f)
            );
        }
        let open = crate::format::Lost {
            before: None,
            after: None,
            ..l
        };
        assert!(super::may_hold(&open, b"/anything"));
    }

    use super::*;

    #[test]
    fn globs_select_what_they_match_and_everything_below() {
        let sel = |p: &str| Sel::new(Path::new(p)).unwrap();
        let g = sel("home/*/config.yaml");
        assert!(g.glob && g.path() == b"/home/*/config.yaml");
        assert!(g.selects(b"/home/pi/config.yaml"));
        assert!(g.selects(b"/home/pi/config.yaml/x"));
        assert!(!g.selects(b"/home/pi"));
        assert!(!g.selects(b"/home/pi/sub/config.yaml"));
        assert!(!g.selects(b"/home/pi/config.yaml.bak"));
        let d = sel("/etc/ssh*");
        assert!(d.selects(b"/etc/ssh/sshd_config") && d.selects(b"/etc/ssh"));
        assert!(!d.selects(b"/etc") && !d.selects(b"/etcssh"));
        // Without '/': any name, at any depth.
        let n = sel("*.odt");
        assert!(n.selects(b"/a/b/x.odt") && n.selects(b"/a/x.odt/inside"));
        assert!(!n.selects(b"/a/b/x.odt.txt"));
        // A class that never closes is a literal path; one that closes also
        // selects its literal name.
        assert!(!sel("/a[b").glob);
        let c = sel("/a[1]");
        assert!(c.glob && c.selects(b"/a1") && c.selects(b"/a[1]"));
        // Relative: the literal name from the working directory, as a plain PATH.
        let here = std::env::current_dir().unwrap().join("report[1].pdf");
        assert!(sel("report[1].pdf").selects(here.as_os_str().as_bytes()));
        assert!(!sel("/plain/path").glob);
    }

    #[test]
    fn filters_match_whole_components() {
        assert!(within(b"/a/b", b"/a"));
        assert!(within(b"/a/b", b"/a/"));
        assert!(within(b"/a", b"/a"));
        assert!(!within(b"/ab", b"/a"));
        assert!(within(b"/x", b"/"));
    }

    #[test]
    fn what_is_in_place_is_skipped_and_only_force_replaces_what_differs() {
        use Action::*;
        use EntryKind::{Dir, File, Symlink};
        let cases = [
            (File, Existing::Nothing, false, Write),
            (File, Existing::Identical, false, Skip),
            (File, Existing::Identical, true, Skip),
            // Same size and mtime is not enough: the content decides.
            (File, Existing::SameStat, false, Refuse),
            (File, Existing::Other, false, Refuse),
            (File, Existing::Other, true, Write),
            (File, Existing::Dir, true, Refuse),
            (Symlink, Existing::Identical, false, Skip),
            (Symlink, Existing::Other, true, Write),
            (Dir, Existing::Dir, false, Write),
            (Dir, Existing::Other, true, Refuse),
        ];
        for (kind, found, force, want) in cases {
            assert_eq!(
                decide(kind, found, force),
                want,
                "{kind:?} {found:?} {force}"
            );
        }
    }

    #[test]
    fn temporaries_are_recognised_by_their_exact_shape() {
        let t = temp_name(Path::new("/x/f"));
        assert!(is_temp_name(t.file_name().unwrap().as_bytes()));
        assert!(!is_temp_name(b".chute-restore-"));
        assert!(!is_temp_name(b".chute-restore-0123456789abcdeg"));
        assert!(!is_temp_name(b".chute-restore-0123456789abcdef0"));
    }

    // A temporary removed while it is written (another restore's cleanup) is never
    // refilled with holes and placed: the next piece sees a new inode and fails.
    #[test]
    fn a_temporary_replaced_behind_the_restores_back_fails_it() {
        let dir = std::env::temp_dir().join(format!(
            "chute-restore-ino-{}",
            crate::fsutil::random_suffix()
        ));
        fs::create_dir_all(&dir).unwrap();
        let t = Task {
            entry: Entry::new(EntryKind::File, b"/f".to_vec()),
            dest: dir.join("f"),
            tmp: dir.join(".chute-restore-0123456789abcdef"),
            remaining: AtomicUsize::new(2),
            placed: AtomicBool::new(false),
            inode: AtomicU64::new(0),
        };
        let open = || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&t.tmp)
                .unwrap()
        };
        let first = open();
        same_temporary(&t, &first).unwrap();
        same_temporary(&t, &open()).unwrap();
        // Keep the first inode alive so the new file cannot reuse its number.
        fs::remove_file(&t.tmp).unwrap();
        let again = open();
        assert!(same_temporary(&t, &again).is_err());
        drop(first);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn content_is_compared_chunk_by_chunk_with_the_keyed_ids() {
        let keys = Keys::from_key_bytes(b"restore test key");
        let dir = std::env::temp_dir().join(format!(
            "chute-restore-same-{}",
            crate::fsutil::random_suffix()
        ));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data = b"first part|second part".to_vec();
        let mut e = Entry::new(EntryKind::File, b"/f".to_vec());
        e.size = data.len() as u64;
        for part in [&data[..11], &data[11..]] {
            e.chunks.push(ChunkRef::whole(
                keys.chunk_id(part),
                0,
                0,
                (part.len() + crate::crypto::OVERHEAD) as u32,
            ));
        }
        fs::write(&path, &data).unwrap();
        assert!(same_content(&keys, &path, &e));
        fs::write(&path, b"first part|second pArt").unwrap();
        assert!(!same_content(&keys, &path, &e));
        fs::write(&path, &data[..20]).unwrap();
        assert!(!same_content(&keys, &path, &e));
        assert!(!same_content(&keys, &dir.join("absent"), &e));

        // A packed file: one slice of a shared chunk, compared by its tag (the
        // chunk's id says nothing of the file alone).
        let pack = b"other file|first part|second part|more".to_vec();
        let mut p = Entry::new(EntryKind::File, b"/p".to_vec());
        p.size = data.len() as u64;
        p.chunks.push(ChunkRef {
            skip: 11,
            take: data.len() as u32,
            ..ChunkRef::whole(keys.chunk_id(&pack), 0, 0, (pack.len() + 46) as u32)
        });
        fs::write(&path, &data).unwrap();
        assert!(!same_content(&keys, &path, &p), "a slice without a tag");
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&keys.chunk_id(&data)[..8]);
        p.tag = Some(tag);
        assert!(same_content(&keys, &path, &p));
        fs::write(&path, b"first part|second pArt").unwrap();
        assert!(!same_content(&keys, &path, &p));
        fs::write(&path, [&data[..], b"+"].concat()).unwrap();
        assert!(!same_content(&keys, &path, &p));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zero_blocks_become_holes_except_the_last() {
        let b = HOLE_BLOCK as usize;
        let mut d = vec![0u8; 4 * b];
        d[b + 7] = 1;
        // Blocks 0, 2 and 3 are zeros; 3 holds the file's last byte.
        assert_eq!(
            data_ranges(&d, 0, 4 * b as u64),
            vec![b..2 * b, 3 * b..4 * b]
        );
        // A longer file: block 3 is a hole too.
        assert_eq!(data_ranges(&d, 0, 8 * b as u64), vec![b..2 * b]);
        // Unaligned: the partial blocks at either end are written, whole zero
        // blocks between are not.
        assert_eq!(
            data_ranges(&d, 100, 1 << 20),
            vec![0..2 * b - 100, 4 * b - 100..4 * b]
        );
        // No zeros: one write. Empty: none.
        assert_eq!(data_ranges(&[1; 10], 0, 10), vec![0..10]);
        assert_eq!(data_ranges(&[], 0, 0), Vec::<std::ops::Range<usize>>::new());
    }

    #[test]
    fn destinations() {
        assert_eq!(
            destination(Some(Path::new("/t")), b"/a/b"),
            PathBuf::from("/t/a/b")
        );
        assert_eq!(destination(None, b"/a/b"), PathBuf::from("/a/b"));
    }
}
