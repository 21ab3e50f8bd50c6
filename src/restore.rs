//! `chute restore`: fetch a snapshot's manifest, then its chunks, and rebuild files.
//!
//! Invariants:
//! - Nothing existing is overwritten unless `force`: every target is checked before
//!   the first byte is written, and the restore refuses as a whole.
//! - A file appears under its real name only complete and authenticated: its bytes
//!   go to a private temporary name (mode 0600) beside it, and it is renamed into
//!   place after its last chunk opened and its mode and times were set. On any
//!   failure the temporaries are removed.
//! - Every chunk is checked to be the content its id names, not only to
//!   authenticate ([`Keys::open_chunk`]); one that is not fails the restore as
//!   damage naming the file and the chunk, and is recorded in the node's cache
//!   ([`crate::cache`]) so the next sink stores that content afresh.
//! - Reads are ranged: neighbouring chunks of part 0 are fetched together, up to
//!   [`MAX_READ`] bytes, so one file restores without downloading the snapshot.

use crate::blob::BlobId;
use crate::crypto::{ChunkId, Keys, OpenError};
use crate::format::{ChunkRef, Entry, EntryKind, Manifest};
use crate::reads::{Run, coalesce, each_parallel};
use crate::remote::Remote;
use crate::snapshot::Snapshot;
use crate::{Error, Result};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
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
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct Report {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub secs: f64,
}

/// Whether `path` is `filter` or inside it.
fn within(path: &[u8], filter: &[u8]) -> bool {
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
    entry: usize,
    dest: PathBuf,
    tmp: PathBuf,
    remaining: AtomicUsize,
}

struct Piece {
    task: usize,
    at: u64,
    chunk: ChunkRef,
}

type Group = Run<Piece>;

fn temp_name(dest: &Path) -> PathBuf {
    dest.with_file_name(format!(".chute-restore-{}", crate::fsutil::random_suffix()))
}

fn io(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", p.display());
    move |e| Error::Io(what, e)
}

/// Sets mode, owner (as root) and mtime; `symlink` skips the mode.
fn set_meta(path: &Path, e: &Entry, symlink: bool) -> Result<()> {
    if crate::sys::is_root() {
        crate::sys::lchown(path, e.uid, e.gid).map_err(io("cannot set owner of", path))?;
    }
    if !symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(e.mode))
            .map_err(io("cannot set mode of", path))?;
    }
    crate::sys::set_mtime_nofollow(path, e.mtime, e.mtime_ns.min(999_999_999))
        .map_err(io("cannot set time of", path))
}

/// Restores (part of) a snapshot.
pub fn run(keys: &Keys, remote: &dyn Remote, snap: &Snapshot, opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let mut m = crate::snapshot::manifest(keys, remote, snap)?;
    // Chunks prune moved out of forgotten blobs are read from their packs.
    crate::pack::Resolver::for_node(keys, remote, &snap.blob.domain, &snap.blob.node)?
        .resolve(&mut m);
    let blobs: Vec<BlobId> = m
        .blobs
        .iter()
        .map(|b| BlobId::parse(b))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Damaged(format!("snapshot {}: {e}", snap.short_id())))?;
    let filters: Vec<Vec<u8>> = opts
        .paths
        .iter()
        .map(|p| {
            std::path::absolute(p)
                .map(|a| a.as_os_str().as_bytes().to_vec())
                .map_err(io("cannot resolve", p))
        })
        .collect::<Result<_>>()?;
    for f in &filters {
        if !m.entries.iter().any(|e| within(&e.path, f)) {
            return Err(Error::Usage(format!(
                "{} is not in snapshot {}",
                String::from_utf8_lossy(f),
                snap.short_id()
            )));
        }
    }
    let selected: Vec<usize> = (0..m.entries.len())
        .filter(|&i| filters.is_empty() || filters.iter().any(|f| within(&m.entries[i].path, f)))
        .collect();
    let to = opts.to.as_deref();

    // Refuse before writing anything.
    let mut conflicts = Vec::new();
    for &i in &selected {
        let e = &m.entries[i];
        let dest = destination(to, &e.path);
        if let Ok(md) = fs::symlink_metadata(&dest) {
            let clash = match e.kind {
                EntryKind::Dir => !md.is_dir(),
                _ => !opts.force || md.is_dir(),
            };
            if clash {
                conflicts.push(dest);
            }
        }
    }
    if let Some(first) = conflicts.first() {
        return Err(Error::Failed(format!(
            "refusing to overwrite {} existing path{} (first: {}); use --force to replace files, or --to DIR",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" },
            first.display()
        )));
    }

    let mut report = Report::default();
    let mut tasks = Vec::new();
    let mut made: Option<PathBuf> = None;
    for &i in &selected {
        let e = &m.entries[i];
        let dest = destination(to, &e.path);
        match e.kind {
            EntryKind::Dir => {
                fs::create_dir_all(&dest).map_err(io("cannot create", &dest))?;
                report.dirs += 1;
            }
            EntryKind::File => {
                if let Some(parent) = dest.parent() {
                    // Files of one directory come together: create it once.
                    if made.as_deref() != Some(parent) {
                        fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
                        made = Some(parent.to_path_buf());
                    }
                }
                tasks.push(Task {
                    entry: i,
                    tmp: temp_name(&dest),
                    dest,
                    remaining: AtomicUsize::new(e.chunks.len()),
                });
                report.files += 1;
                report.bytes += e.size;
            }
            EntryKind::Symlink => report.symlinks += 1,
        }
    }

    let groups = plan(&m, &tasks);
    let result = fetch_all(
        keys,
        remote,
        &m,
        &blobs,
        &tasks,
        &groups,
        opts.threads,
        snap,
    );
    if let Err(e) = result {
        for t in &tasks {
            let _ = fs::remove_file(&t.tmp);
        }
        if let (Some(found), Some(dir)) = (e.wrong_content, &opts.cache_dir) {
            if let Err(e) = crate::cache::record_damaged(dir, &[found]) {
                eprintln!("chute restore: warning: cannot record the damaged chunk: {e}");
            }
        }
        return Err(e.error);
    }

    for &i in &selected {
        let e = &m.entries[i];
        if e.kind == EntryKind::Symlink {
            let dest = destination(to, &e.path);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
            }
            let tmp = temp_name(&dest);
            std::os::unix::fs::symlink(OsStr::from_bytes(&e.target), &tmp)
                .map_err(io("cannot create symlink", &dest))?;
            let placed = set_meta(&tmp, e, true)
                .and_then(|_| fs::rename(&tmp, &dest).map_err(io("cannot create symlink", &dest)));
            if let Err(err) = placed {
                let _ = fs::remove_file(&tmp);
                return Err(err);
            }
        }
    }
    // Directories last and deepest first, so restoring their contents does not
    // disturb their times and a read-only directory is filled before it closes.
    for &i in selected.iter().rev() {
        let e = &m.entries[i];
        if e.kind == EntryKind::Dir {
            set_meta(&destination(to, &e.path), e, false)?;
        }
    }
    report.secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Groups every chunk to fetch into ranged reads of neighbouring bytes.
fn plan(m: &Manifest, tasks: &[Task]) -> Vec<Group> {
    let pieces = tasks.iter().enumerate().flat_map(|(t, task)| {
        let mut at = 0u64;
        m.entries[task.entry].chunks.iter().map(move |c| {
            let piece = Piece {
                task: t,
                at,
                chunk: *c,
            };
            at += c.plain_len();
            (c.blob as usize, c.offset, u64::from(c.len), piece)
        })
    });
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
    m: &Manifest,
    blobs: &[BlobId],
    tasks: &[Task],
    groups: &[Group],
    threads: usize,
    snap: &Snapshot,
) -> std::result::Result<(), FetchError> {
    // Empty files have no chunk to complete them.
    for t in tasks
        .iter()
        .filter(|t| t.remaining.load(Ordering::SeqCst) == 0)
    {
        create_tmp(&t.tmp).and_then(|_| finish(t, &m.entries[t.entry], None))?;
    }
    each_parallel(groups, threads, |g| {
        fetch_group(keys, remote, m, blobs, tasks, g, snap)
    })
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

fn fetch_group(
    keys: &Keys,
    remote: &dyn Remote,
    m: &Manifest,
    blobs: &[BlobId],
    tasks: &[Task],
    g: &Group,
    snap: &Snapshot,
) -> std::result::Result<(), FetchError> {
    let blob = &blobs[g.blob];
    let mut data =
        crate::remote::retry(|| remote.read(blob, g.start, g.end - g.start)).map_err(|e| {
            let t = &tasks[g.items[0].task];
            Error::Damaged(format!(
                "snapshot {}: cannot read data of {} (bytes {}-{} of {}): {e}",
                snap.short_id(),
                String::from_utf8_lossy(&m.entries[t.entry].path),
                g.start,
                g.end - 1,
                blob.path()
            ))
        })?;
    for p in &g.items {
        let t = &tasks[p.task];
        let from = (p.chunk.offset - g.start) as usize;
        let sealed = &mut data[from..from + p.chunk.len as usize];
        let plain = keys
            .open_chunk(&p.chunk.id, sealed)
            .map_err(|e| FetchError {
                wrong_content: (e == OpenError::WrongContent)
                    .then(|| (p.chunk.id, blob.path(), p.chunk.offset)),
                error: Error::Damaged(format!(
                    "snapshot {}: chunk at byte {} of {} ({}) is damaged: {e}",
                    snap.short_id(),
                    p.chunk.offset,
                    blob.path(),
                    String::from_utf8_lossy(&m.entries[t.entry].path),
                )),
            })?;
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&t.tmp)
            .map_err(io("cannot write", &t.dest))?;
        f.write_all_at(plain, p.at)
            .map_err(io("cannot write", &t.dest))?;
        if t.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            finish(t, &m.entries[t.entry], Some(&f))?;
        }
    }
    Ok(())
}

/// Gives a complete file its metadata and its real name; through its open
/// descriptor when there is one (no path lookups: 50,000 small files add up).
fn finish(t: &Task, e: &Entry, open: Option<&fs::File>) -> Result<()> {
    match open {
        Some(f) => {
            if crate::sys::is_root() {
                std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid))
                    .map_err(io("cannot set owner of", &t.dest))?;
            }
            f.set_permissions(fs::Permissions::from_mode(e.mode))
                .map_err(io("cannot set mode of", &t.dest))?;
            f.set_modified(mtime(e))
                .map_err(io("cannot set time of", &t.dest))?;
        }
        None => set_meta(&t.tmp, e, false)?,
    }
    fs::rename(&t.tmp, &t.dest).map_err(io("cannot place", &t.dest))
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
    use super::*;

    #[test]
    fn filters_match_whole_components() {
        assert!(within(b"/a/b", b"/a"));
        assert!(within(b"/a/b", b"/a/"));
        assert!(within(b"/a", b"/a"));
        assert!(!within(b"/ab", b"/a"));
        assert!(within(b"/x", b"/"));
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
