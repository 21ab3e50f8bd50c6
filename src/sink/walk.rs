//! Walking the sources: every path in walk order, unchanged files taken from the
//! parent snapshot without reading them (a merge of two sorted streams), every
//! other file read as one version (stat before and after) and queued chunk by chunk
//! as private copies for the workers.
//!
//! What the walk leaves out, each said in one line on stderr and none counted as a
//! failure:
//! - this backup's own files, matched by device and inode (not by path, so a
//!   symlink or a second name cannot sneak them in): a local store it writes to,
//!   the cache root (`$XDG_CACHE_HOME/chute/`) and the key file. Backing up the
//!   store grows it by its own size every night (sealed bytes never dedupe).
//! - with `exclude_caches` (the default), a directory below a root holding a valid
//!   `CACHEDIR.TAG` (<https://bford.info/cachedir/>): the whole directory, tag
//!   included, as `tar --exclude-caches-all` and borg do.
//! - a directory below a root on another device than its parent (a mount point):
//!   with `one_file_system`, any on another device than its root; and always, one
//!   holding a pseudo file system ([`pseudo_fs`]: proc, sysfs, devtmpfs, tmpfs...),
//!   whose files are the kernel's state, not data. The directory itself is kept
//!   (empty), so a restored system has its mount points. Only mount points cost a
//!   `statfs`.
//!
//! A root itself is never left out for a tag or its file system: naming it asks
//! for it. A root that is missing or cannot be read is reported (the snapshot holds
//! the other roots, [`Report::missing`]).

use super::*;

/// Bytes of a source file mapped at once (two of the largest chunks).
pub const MAP_WINDOW: usize = 2 * chunker::MAX;
/// Bytes of a mapped file asked for ahead of its map (two maps): read-ahead the
/// kernel starts while the walker cuts the current map. Its own sequential
/// read-ahead reaches as far only after the map's pages fault, one map at a
/// time, so a cold file's walker waited at each map's first pages (0.45 s in
/// D state of a 1 GiB sink on the build VM).
const READ_AHEAD: u64 = 2 * MAP_WINDOW as u64;
/// Files smaller than this are read, not mapped: a map costs more syscalls.
pub(super) const READ_BELOW: u64 = 256 << 10;
pub(super) fn excluded(excludes: &[String], path: &Path) -> bool {
    let full = path.as_os_str().as_bytes();
    excludes
        .iter()
        .any(|p| crate::glob::matches_path(p.as_bytes(), full))
}

/// The entry for `path`, read at `src` (the same path, or its copy in a
/// file system snapshot, see [`crate::fssnap`]), recorded on device `dev`.
pub(super) fn entry_from(
    kind: EntryKind,
    path: &Path,
    src: &Path,
    md: &fs::Metadata,
    dev: u64,
) -> Entry {
    let mut e = Entry::new(kind, path.as_os_str().as_bytes().to_vec());
    e.mode = md.mode() & 0o7777;
    e.uid = md.uid();
    e.gid = md.gid();
    e.mtime = md.mtime();
    e.mtime_ns = md.mtime_nsec() as u32;
    e.dev = dev;
    e.inode = md.ino();
    e.ctime = md.ctime();
    e.ctime_ns = md.ctime_nsec() as u32;
    e.linked = kind == EntryKind::File && md.nlink() > 1;
    if kind != EntryKind::Symlink {
        e.xattrs = kept_xattrs(path, crate::sys::xattrs(src));
    }
    e
}

/// The extended attributes of `path` a manifest can hold, saying in one line on
/// stderr what is left out: all of them when they cannot be read (the file is
/// still backed up), or those beyond the format's limits.
fn kept_xattrs(
    path: &Path,
    read: std::io::Result<Vec<(Vec<u8>, Vec<u8>)>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut x = match read {
        Ok(x) => x,
        Err(e) => {
            eprintln!(
                "chute sink: warning: {}: extended attributes not kept: {e}",
                path.display()
            );
            return Vec::new();
        }
    };
    let all = x.len();
    x.retain(|(n, v)| n.len() <= 255 && v.len() <= format::MAX_XATTR_VALUE);
    x.truncate(format::MAX_XATTRS);
    if x.len() < all {
        eprintln!(
            "chute sink: warning: {}: {} of its {all} extended attributes not kept (more than {} or over {} bytes)",
            path.display(),
            all - x.len(),
            format::MAX_XATTRS,
            format::MAX_XATTR_VALUE
        );
    }
    x
}

/// Makes each root absolute (without resolving symlinks) and drops roots inside
/// other roots. A root need not exist: it stays part of the path set (and so of
/// the mount id) on a night it is missing.
pub fn normalize_roots(roots: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    for r in roots {
        let abs = std::path::absolute(r)
            .map_err(|e| Error::Io(format!("cannot read {}", r.display()), e))?;
        // Normalise `.` and `..` lexically so the same tree has the same mount id.
        let mut clean = PathBuf::new();
        for c in abs.components() {
            match c {
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                std::path::Component::CurDir => {}
                c => clean.push(c),
            }
        }
        out.push(clean);
    }
    crate::sort::sort(&mut out);
    out.dedup();
    let all = out.clone();
    out.retain(|r| !all.iter().any(|o| o != r && r.starts_with(o)));
    Ok(out)
}

/// Why a root cannot be backed up at all, if it cannot: missing, or a directory
/// or file that cannot be opened.
pub(super) fn unreadable(root: &Path) -> Option<std::io::Error> {
    let md = match fs::symlink_metadata(root) {
        Ok(md) => md,
        Err(e) => return Some(e),
    };
    let opened = if md.is_dir() {
        fs::read_dir(root).map(drop)
    } else if md.is_file() {
        File::open(root).map(drop)
    } else {
        Ok(())
    };
    opened.err()
}

/// What the walk does at a directory on device `dev` below a root on `root_dev`,
/// whose parent is on `parent_dev`; `fs_type` gives the directory's file system
/// type (asked only at a mount point).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Crossing {
    Enter,
    /// Another file system, and the walk stays on its root's (`one_file_system`).
    OtherFs,
    /// A pseudo file system, by name.
    Pseudo(&'static str),
}

pub(super) fn crossing(
    one_file_system: bool,
    root_dev: u64,
    parent_dev: u64,
    dev: u64,
    fs_type: impl FnOnce() -> Option<u32>,
) -> Crossing {
    if dev == parent_dev {
        return Crossing::Enter;
    }
    if one_file_system && dev != root_dev {
        return Crossing::OtherFs;
    }
    match fs_type().and_then(pseudo_fs) {
        Some(name) => Crossing::Pseudo(name),
        None => Crossing::Enter,
    }
}

/// The name of a pseudo file system (its files are the kernel's state, not data)
/// by its `statfs` magic number (linux/magic.h); devtmpfs reports tmpfs's or
/// ramfs's.
pub fn pseudo_fs(magic: u32) -> Option<&'static str> {
    Some(match magic {
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        0x1cd1 => "devpts",
        0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        0x7363_6673 => "securityfs",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0x6165_676c => "pstore",
        0xcafe_4a11 => "bpf",
        0x1980_0202 => "mqueue",
        0x9584_58f6 => "hugetlbfs",
        0x6265_6570 => "configfs",
        0x6573_5543 => "fusectl",
        0x0187 => "autofs",
        0x4249_4e4d => "binfmt_misc",
        _ => return None,
    })
}

/// The previous snapshot of the same paths, read entry by entry beside the walk:
/// both are in walk order (see [`walk_order`]), so a merge finds each path's old
/// entry without holding the parent manifest in memory.
pub(super) struct Parent<'a> {
    #[allow(clippy::type_complexity)] // one reader, named once
    pub(super) stream:
        format::Entries<'a, Box<dyn FnMut(&format::Span) -> std::io::Result<Vec<u8>> + 'a>>,
    /// Parent blob index → this run's blob table index (grows with the parent's
    /// table as its segments are read).
    pub(super) map: Vec<u32>,
    pub(super) peek: Option<Entry>,
    /// Whether `peek` uses a chunk the cache knows is damaged (not reusable).
    pub(super) peek_damaged: bool,
    pub(super) short_id: String,
    /// Lost segments of the parent already reported.
    pub(super) told: usize,
    /// The parent's nodes as they are read, for the manifest writer to reuse
    /// (see `stream`).
    pub(super) nodes: &'a Mutex<NodePlaces>,
    /// [`lost_so_far`] of the parent when its nodes were last taken.
    pub(super) lost: (usize, u64, u64),
}

/// What a reader has lost so far, to tell whether a read lost more: a loss right
/// after another extends it rather than adding one.
fn lost_so_far(lost: &[format::Lost]) -> (usize, u64, u64) {
    let segments = lost.iter().map(|l| u64::from(l.segments)).sum();
    let entries = lost.iter().map(|l| u64::from(l.entries)).sum();
    (lost.len(), segments, entries)
}

impl<'a> Parent<'a> {
    /// Opens the manifest of `p` as a stream (its nodes read where `resolver`
    /// puts them), adding its blobs to this run's table; its nodes go to `nodes`
    /// as they are read.
    pub(super) fn open(
        keys: &'a Keys,
        remote: &'a dyn Remote,
        resolver: &'a crate::pack::Resolver,
        p: &'a Snapshot,
        blobs: &mut Blobs,
        nodes: &'a Mutex<NodePlaces>,
    ) -> Result<Parent<'a>> {
        let h = &p.open(keys, remote)?;
        let fetch = crate::snapshot::manifest_fetch(remote, resolver);
        let stream = format::Entries::open(keys, &p.blob.path(), h, Box::new(fetch) as Box<_>)
            .map_err(|e| {
                Error::Damaged(format!(
                    "snapshot {}: manifest is damaged: {e}",
                    p.short_id()
                ))
            })?;
        let map = stream.blobs.iter().map(|b| blobs.index(b)).collect();
        Ok(Parent {
            stream,
            map,
            peek: None,
            peek_damaged: false,
            short_id: p.short_id(),
            told: 0,
            nodes,
            lost: (0, 0, 0),
        })
    }
}

impl Parent<'_> {
    /// The parent's entry for `path`, if it had one, and whether its chunks may be
    /// reused (none is a copy the cache knows is damaged); entries before it are
    /// skipped. A parent segment that does not open only means its files are read
    /// again. `blobs` is this run's table, for blobs the parent names later on.
    pub(super) fn find(
        &mut self,
        path: &[u8],
        cache: &ChunkIndex,
        blobs: &std::sync::Mutex<(Blobs, HashMap<u32, u32>)>,
    ) -> Result<Option<(&Entry, bool)>> {
        loop {
            if self.peek.is_none() {
                self.peek = self.stream.next_entry().map_err(|e| {
                    Error::Damaged(format!(
                        "snapshot {}: manifest is damaged: {e}",
                        self.short_id
                    ))
                })?;
                for l in &self.stream.lost[self.told..] {
                    eprintln!(
                        "chute sink: warning: snapshot {}: {l} do not open; those files are read again",
                        self.short_id
                    );
                }
                // Nodes read with a loss may be the lost ones, which must not be
                // reused: their copies do not open. So none of them is.
                let nodes = self.stream.take_nodes();
                let lost = lost_so_far(&self.stream.lost);
                if lost == self.lost {
                    self.nodes.lock().expect("poisoned").add(nodes);
                }
                self.lost = lost;
                self.told = self.stream.lost.len();
                if self.map.len() < self.stream.blobs.len() {
                    let mut run = blobs.lock().expect("poisoned");
                    for b in &self.stream.blobs[self.map.len()..] {
                        self.map.push(run.0.index(b));
                    }
                }
                if let Some(e) = &mut self.peek {
                    let blobs = &self.stream.blobs;
                    self.peek_damaged = e.chunks.iter().any(|c| {
                        let blob = blobs.get(c.blob as usize).map_or("", String::as_str);
                        !cache.reusable(&c.id, blob, c.offset)
                    });
                    for c in &mut e.chunks {
                        c.blob = *self.map.get(c.blob as usize).unwrap_or(&0);
                    }
                }
            }
            match &self.peek {
                None => return Ok(None),
                Some(e) => match walk_order(&e.path, path) {
                    std::cmp::Ordering::Less => self.peek = None,
                    std::cmp::Ordering::Equal => {
                        return Ok(self.peek.as_ref().map(|e| (e, !self.peek_damaged)));
                    }
                    std::cmp::Ordering::Greater => return Ok(None),
                },
            }
        }
    }
}

/// The order the walker visits paths in: component by component, each compared as
/// bytes (a depth-first walk over sorted names visits paths in exactly this order).
pub fn walk_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// The paths the walk has still to visit, in walk order: the root, then per
/// directory entered its names, sorted, in one buffer. A name waiting costs its
/// bytes and 4 more; a path of its own cost the whole path, a vector and an
/// allocation (~70 bytes): the 1,000 directories at the top of a large tree
/// took ~70 KB, and a directory of 1,000,000 files ~90 MB, now ~8 KB and ~16 MB
/// (names of 12 bytes). Listing a directory holds its names twice for a
/// moment, plus 24 bytes each (their spans and the sort's scratch).
#[derive(Default)]
pub(super) struct Todo {
    /// Directories entered whose names are not all visited, innermost last.
    frames: Vec<Frame>,
}

/// One directory's names, sorted, and how far the walk is through them.
#[derive(Default)]
pub(super) struct Frame {
    dir: PathBuf,
    /// The directory's device, handed down to each name (none for the root).
    dev: Option<u64>,
    names: Vec<u8>,
    /// Where each name ends in `names`.
    ends: Vec<u32>,
    next: usize,
}

impl Frame {
    /// The names of the directory `src`, to be visited as `dir`'s, in byte order.
    /// A directory whose names exceed 4 GiB in all is an error.
    pub(super) fn list(dir: PathBuf, src: &Path, dev: Option<u64>) -> std::io::Result<Frame> {
        let mut all = Vec::new();
        let mut spans = Vec::new();
        let at = |all: &[u8]| {
            u32::try_from(all.len())
                .map_err(|_| std::io::Error::other("its names take more than 4 GiB"))
        };
        for e in fs::read_dir(src)? {
            let start = at(&all)?;
            all.extend_from_slice(e?.file_name().as_bytes());
            spans.push((start, at(&all)?));
        }
        let name = |&(a, b): &(u32, u32)| &all[a as usize..b as usize];
        crate::sort::by(&mut spans, |x, y| name(x).cmp(name(y)));
        let mut f = Frame {
            dir,
            dev,
            ..Frame::default()
        };
        f.names.reserve_exact(all.len());
        f.ends.reserve_exact(spans.len());
        for s in &spans {
            f.push(name(s));
        }
        Ok(f)
    }

    fn push(&mut self, name: &[u8]) {
        self.names.extend_from_slice(name);
        self.ends.push(self.names.len() as u32);
    }

    fn name(&self, k: usize) -> &[u8] {
        let start = k.checked_sub(1).map_or(0, |j| self.ends[j] as usize);
        &self.names[start..self.ends[k] as usize]
    }

    /// Whether the directory holds `name`.
    pub(super) fn has(&self, name: &str) -> bool {
        (0..self.ends.len()).any(|k| self.name(k) == name.as_bytes())
    }
}

impl Todo {
    /// The walk of `root`, to start with it.
    pub(super) fn root(root: &Path) -> Todo {
        let mut f = Frame::default();
        f.push(root.as_os_str().as_bytes());
        Todo { frames: vec![f] }
    }

    /// Visits `f`'s names next, before anything entered earlier.
    pub(super) fn enter(&mut self, f: Frame) {
        if !f.ends.is_empty() {
            self.frames.push(f);
        }
    }

    /// The next path with its parent directory's device.
    pub(super) fn next(&mut self) -> Option<(PathBuf, Option<u64>)> {
        loop {
            let f = self.frames.last_mut()?;
            if f.next == f.ends.len() {
                self.frames.pop();
                continue;
            }
            f.next += 1;
            let name = std::ffi::OsStr::from_bytes(f.name(f.next - 1));
            return Some((f.dir.join(name), f.dev));
        }
    }
}

/// The chunk buffers of a run: at most [`Spares::MOST`] plus one per worker are
/// ever made (the packer's first buffer among them); past that the walker waits
/// for one a worker is done with. That is one for each worker, the one queued
/// and the open pack: the walker, cutting a pack while all are out, would only
/// have waited at the queue instead, for the same worker. Made on demand, it
/// reached two more on a long run (~270 KiB each with packs of small files),
/// whenever a slow window write held both workers while the walker cut.
pub(super) struct Spares {
    back: Receiver<Vec<u8>>,
    made: usize,
    most: usize,
}

impl Spares {
    /// Buffers beyond one per worker: the one queued and the open pack.
    pub(super) const MOST: usize = 2;

    /// The buffers `back` from `threads` workers; the packer holds the first.
    pub(super) fn new(back: Receiver<Vec<u8>>, threads: usize) -> Spares {
        Spares {
            back,
            made: 1,
            most: threads + Spares::MOST,
        }
    }

    /// A buffer done with, a new one while fewer than the most were made, or
    /// the next one back. An empty one once the workers are gone (the sink
    /// failed; what it is for is never sent).
    pub(super) fn take(&mut self) -> Vec<u8> {
        if let Ok(b) = self.back.try_recv() {
            return b;
        }
        if self.made < self.most {
            self.made += 1;
            return Vec::new();
        }
        self.back.recv().unwrap_or_default()
    }
}

pub(super) struct Walker<'a> {
    pub(super) opts: &'a Options,
    pub(super) keys: &'a Keys,
    pub(super) chunker: &'a Chunker,
    /// The open pack of small files (see `packer`).
    pub(super) packer: packer::Packer,
    pub(super) tx: SyncSender<Job>,
    /// Chunk buffers the workers are done with.
    pub(super) spare: Spares,
    /// A small file's bytes, read whole.
    pub(super) small: Vec<u8>,
    pub(super) cache: &'a ChunkIndex,
    pub(super) parent: Option<Parent<'a>>,
    /// This run's blob table (the workers add to it too).
    pub(super) blobs: &'a std::sync::Mutex<(Blobs, HashMap<u32, u32>)>,
    /// Where entries go, in walk order (see `stream`).
    pub(super) out: Stream<'a>,
    pub(super) report: &'a mut Report,
    pub(super) stop: &'a AtomicBool,
    pub(super) progress: &'a crate::progress::Progress,
    /// This backup's own files (device, inode, why), never backed up.
    pub(super) own: Vec<(u64, u64, &'static str)>,
    /// Roots read from a file system snapshot (see [`crate::fssnap`]).
    pub(super) snapshots: &'a [crate::fssnap::Source],
    /// While walking such a root: it, where it is read, and the snapshot's
    /// device with the original's, recorded in its place.
    pub(super) from: Option<(PathBuf, PathBuf, u64, u64)>,
}

impl Walker<'_> {
    /// Where `path` (as recorded) is read: in the root's snapshot, if it has one.
    fn src<'p>(&self, path: &'p Path) -> std::borrow::Cow<'p, Path> {
        match &self.from {
            None => path.into(),
            from => read_at(from, path).into(),
        }
    }

    /// The device `md` is recorded on: the original's for the snapshot's, so an
    /// unchanged file stays unchanged from one snapshot to the next.
    fn dev(&self, md: &fs::Metadata) -> u64 {
        match self.from {
            Some((_, _, snap, live)) if md.dev() == snap => live,
            _ => md.dev(),
        }
    }

    fn entry(&self, kind: EntryKind, path: &Path, md: &fs::Metadata) -> Entry {
        entry_from(kind, path, &self.src(path), md, self.dev(md))
    }

    pub(super) fn skip(&mut self, path: &Path, e: impl std::fmt::Display) {
        let line = format!("{}: {e}", path.display());
        self.progress.clear();
        eprintln!("chute sink: skipping {line}");
        self.report.skipped.push(line);
    }

    /// Says why `path` is left out on purpose (not a failure).
    fn leave_out(&mut self, path: &Path, why: impl std::fmt::Display) {
        if self.opts.quiet {
            return;
        }
        self.progress.clear();
        eprintln!("chute sink: skipping {}: {why}", path.display());
    }

    /// A root that cannot be read: the snapshot holds the other roots.
    fn missing(&mut self, root: &Path, e: std::io::Error) {
        self.progress.clear();
        eprintln!(
            "chute sink: warning: cannot read {}: {e}; the snapshot holds the other paths",
            root.display()
        );
        self.report.missing.push(root.display().to_string());
    }

    /// Adds a whole entry to the stream.
    fn push(&mut self, e: Entry) {
        self.room();
        self.out.push(e);
    }

    /// Before the stream waits for the workers (its queue full) on a file of the
    /// open pack: the pack goes to them, or that file would never complete. A
    /// queue held up by an earlier entry waits without a cut, so packs stay
    /// where the names put them however slow the upload is.
    fn room(&mut self) {
        if self.out.waits_on(self.packer.number()) {
            self.cut_pack();
        }
    }

    /// Sends the open pack to the workers, if it holds anything.
    pub(super) fn cut_pack(&mut self) {
        if self.packer.is_empty() {
            return;
        }
        let spare = self.spare.take();
        if let Some((pack, chunk)) = self.packer.cut(spare) {
            // Fails only once the workers stopped, which failed the sink: its
            // files then stay incomplete and the stream says so.
            let _ = self.tx.send(Job {
                to: To::Pack(pack),
                chunk,
            });
        }
    }

    pub(super) fn walk(&mut self, root: &Path) -> Result<()> {
        self.from = self
            .snapshots
            .iter()
            .find(|s| s.root == root)
            .and_then(|s| {
                let snap = fs::symlink_metadata(&s.read).ok()?.dev();
                let live = fs::symlink_metadata(&s.root).ok()?.dev();
                Some((s.root.clone(), s.read.clone(), snap, live))
            });
        // Each path with its parent directory's device (none for the root).
        let mut todo = Todo::root(root);
        let mut root_dev = None;
        while let Some((path, parent_dev)) = todo.next() {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if path != root && excluded(&self.opts.excludes, &path) {
                continue;
            }
            let src = self.src(&path).into_owned();
            let md = match fs::symlink_metadata(&src) {
                Ok(md) => md,
                Err(e) if path == root => {
                    self.missing(&path, e);
                    continue;
                }
                Err(e) => {
                    self.skip(&path, e);
                    continue;
                }
            };
            if let Some(&(_, _, why)) = self
                .own
                .iter()
                .find(|(dev, ino, _)| (*dev, *ino) == (self.dev(&md), md.ino()))
            {
                self.leave_out(&path, why);
                continue;
            }
            let root_dev = *root_dev.get_or_insert(self.dev(&md));
            let ft = md.file_type();
            if ft.is_dir() {
                if let Some(parent_dev) = parent_dev {
                    let fs_type = || crate::sys::fs_type(&src).ok();
                    let ours = path
                        .file_name()
                        .is_some_and(|n| crate::fssnap::is_ours(n.as_bytes()));
                    let why = match crossing(
                        self.opts.one_file_system,
                        root_dev,
                        parent_dev,
                        self.dev(&md),
                        fs_type,
                    ) {
                        // Another sink's snapshot, or a snapshot's empty
                        // stand-in for one: a copy, not data.
                        _ if ours && md.ino() <= 256 => {
                            self.leave_out(&path, "it is a chute file system snapshot");
                            continue;
                        }
                        // btrfs's stand-in for a subvolume below the snapshotted
                        // one (inode 2, empty): kept empty, as a mount point is.
                        _ if self.from.is_some() && md.ino() == 2 => Some(
                            "a nested subvolume, empty in the file system snapshot (name it as a PATH to back it up)".to_string(),
                        ),
                        Crossing::Enter => None,
                        Crossing::OtherFs => {
                            Some("another file system (--one-file-system)".to_string())
                        }
                        Crossing::Pseudo(name) => Some(format!(
                            "a {name} file system (name it as a PATH to back it up)"
                        )),
                    };
                    if let Some(why) = why {
                        // The mount point stays, empty.
                        self.progress.clear();
                        eprintln!("chute sink: not entering {}: {why}", path.display());
                        self.push(self.entry(EntryKind::Dir, &path, &md));
                        self.report.dirs += 1;
                        continue;
                    }
                }
                let dev = Some(self.dev(&md));
                let names = match Frame::list(path.clone(), &src, dev) {
                    Ok(n) => n,
                    Err(e) if path == root => {
                        self.missing(&path, e);
                        continue;
                    }
                    Err(e) => {
                        self.skip(&path, e);
                        continue;
                    }
                };
                if self.opts.exclude_caches
                    && path != root
                    && names.has(crate::cache::CACHEDIR_TAG)
                    && crate::cache::is_cache_tag(&src.join(crate::cache::CACHEDIR_TAG))
                {
                    self.leave_out(
                        &path,
                        "it is tagged as a cache (CACHEDIR.TAG; --no-exclude-caches keeps it)",
                    );
                    continue;
                }
                self.push(self.entry(EntryKind::Dir, &path, &md));
                self.report.dirs += 1;
                todo.enter(names);
            } else if ft.is_symlink() {
                match fs::read_link(&src) {
                    Ok(t) => {
                        let mut e = self.entry(EntryKind::Symlink, &path, &md);
                        e.target = t.as_os_str().as_bytes().to_vec();
                        self.push(e);
                        self.report.symlinks += 1;
                    }
                    Err(e) => self.skip(&path, e),
                }
            } else if ft.is_file() {
                if self.unchanged(&path, &md)? {
                    continue;
                }
                match self.file(&path) {
                    Err(e) => self.skip(&path, e),
                    Ok(()) if self.opts.verbose => {
                        self.progress.clear();
                        println!("{}", path.display());
                    }
                    Ok(()) => {}
                }
                testhooks::stall();
            } else if ft.is_fifo() {
                // Recorded and recreated empty: what flows through one is not data.
                self.push(self.entry(EntryKind::Fifo, &path, &md));
            } else if !self.opts.quiet {
                // Sockets and devices are runtime objects, not data: noted, not
                // counted as failures (a nightly sink of / would otherwise never pass).
                self.progress.clear();
                eprintln!(
                    "chute sink: not backing up {} (socket or device)",
                    path.display()
                );
            }
            self.progress.set(self.report.files, self.report.bytes);
        }
        Ok(())
    }

    /// Reuses the parent's entry for a file that has not changed since.
    pub(super) fn unchanged(&mut self, path: &Path, md: &fs::Metadata) -> Result<bool> {
        let dev = self.dev(md);
        let Some(parent) = self.parent.as_mut() else {
            return Ok(false);
        };
        let Some((old, reusable)) =
            parent.find(path.as_os_str().as_bytes(), self.cache, self.blobs)?
        else {
            return Ok(false);
        };
        let same = old.kind == EntryKind::File
            && old.size == md.len()
            && old.mtime == md.mtime()
            && old.mtime_ns == md.mtime_nsec() as u32
            && old.ctime == md.ctime()
            && old.ctime_ns == md.ctime_nsec() as u32
            && old.inode == md.ino()
            && old.dev == dev
            // A chunk found damaged is sealed afresh: read the file again.
            && reusable;
        if !same {
            return Ok(false);
        }
        let src = read_at(&self.from, path);
        let mut e = entry_from(EntryKind::File, path, &src, md, dev);
        e.size = md.len();
        e.chunks = old.chunks.clone();
        e.tag = old.tag;
        self.push(e);
        self.report.files += 1;
        self.report.bytes += md.len();
        self.report.unchanged_files += 1;
        self.report.unchanged_bytes += md.len();
        self.progress.set(self.report.files, self.report.bytes);
        Ok(true)
    }

    /// Records one file and queues its chunks, read as one version: its stat
    /// (size, times, inode) is taken before and after the read, and a file that
    /// changed in between is read again, up to [`READ_TRIES`] times, then kept as
    /// last read and reported. A read that fails or is read again leaves its queued
    /// chunks in part 0, unreferenced (its entry is dropped). Every entry opened
    /// here is closed or dropped before it returns: the stream waits for it.
    pub(super) fn file(&mut self, path: &Path) -> std::io::Result<()> {
        let f = File::open(self.src(path))?;
        for tries in 1.. {
            // Small files are read, not mapped: from the start on every try.
            std::io::Seek::seek(&mut &f, std::io::SeekFrom::Start(0))?;
            let before = f.metadata()?;
            self.room();
            let idx = self.out.open(Entry::new(
                EntryKind::File,
                path.as_os_str().as_bytes().to_vec(),
            ));
            // A small file is read whole and packed once its read is kept.
            let packed = before.len() > 0 && before.len() < chunker::MIN as u64;
            let read = if packed {
                self.read_whole(&f, before.len()).map(|size| (size, 0))
            } else {
                self.read(&f, idx, before.len())
            };
            testhooks::change_during_read(path, tries);
            let after = f.metadata();
            let ((size, n), after) = match (read, after) {
                (Ok(read), Ok(after)) => (read, after),
                (Err(e), _) | (_, Err(e)) => {
                    self.out.order.drop_entry(idx);
                    return Err(e);
                }
            };
            let same = size == before.len() && same_version(&before, &after);
            if !same && tries < READ_TRIES {
                self.out.order.drop_entry(idx);
                continue;
            }
            let mut entry = self.entry(EntryKind::File, path, &before);
            entry.size = size;
            if packed {
                self.pack(idx, path, entry);
            } else {
                self.out.order.close(idx, entry, n);
            }
            self.out.take();
            self.report.files += 1;
            self.report.bytes += size;
            if !same {
                self.progress.clear();
                eprintln!(
                    "chute sink: warning: {} changed while being read ({READ_TRIES} tries); saved as last read, which may mix versions",
                    path.display()
                );
                self.report.changed.push(path.display().to_string());
            }
            break;
        }
        Ok(())
    }

    /// Reads the first `size` bytes of `f` (fewer if it shrank) into `small`;
    /// returns how many.
    fn read_whole(&mut self, f: &File, size: u64) -> std::io::Result<u64> {
        self.small.clear();
        f.take(size).read_to_end(&mut self.small)?;
        Ok(self.small.len() as u64)
    }

    /// Puts the small file just read (in `small`) into the open pack as entry
    /// `idx`, with its content tag; cuts the pack before it if it would not fit
    /// and after it where its path says (see `packer`).
    fn pack(&mut self, idx: u64, path: &Path, mut entry: Entry) {
        if self.small.is_empty() {
            // Shrank to nothing while read, kept as last read: no bytes to pack.
            self.out.order.close(idx, entry, 0);
            return;
        }
        let id = self.keys.chunk_id(&self.small);
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&id[..8]);
        entry.tag = Some(tag);
        if !self.packer.fits(self.small.len()) {
            self.cut_pack();
        }
        let slice = self.packer.add(&self.small);
        self.out.order.close_packed(idx, entry, slice);
        // The name, not the whole path: a tree moved or renamed as a whole (or
        // sunk under another root) packs the same and deduplicates.
        let name = path.file_name().map_or(path.as_os_str(), |n| n);
        if self.packer.ends_after(self.keys.cut_hash(name.as_bytes())) {
            self.cut_pack();
        }
    }

    /// Copies `size` bytes of `f` chunk by chunk into the queue as chunks `0..` of
    /// entry `idx`; returns the bytes queued (fewer if a small file shrank) and
    /// the number of chunks.
    fn read(&mut self, f: &File, idx: u64, size: u64) -> std::io::Result<(u64, u32)> {
        let mut n = 0u32;
        let send = |w: &mut Self, n: &mut u32, plain: &[u8]| -> std::io::Result<()> {
            let buf = w.spare.take();
            let chunk = ChunkBuf::copy_of(plain, buf);
            w.tx.send(Job {
                to: To::File { file: idx, n: *n },
                chunk,
            })
            .map_err(|_| std::io::Error::other("the sealing workers stopped"))?;
            *n += 1;
            Ok(())
        };
        if size < READ_BELOW {
            let mut small = std::mem::take(&mut self.small);
            small.clear();
            let read = f.take(size).read_to_end(&mut small);
            let mut pos = 0;
            let sent = read.and_then(|_| {
                let chunker = self.chunker;
                for len in chunker.lengths(&small) {
                    send(self, &mut n, &small[pos..pos + len])?;
                    pos += len;
                }
                Ok((small.len() as u64, n))
            });
            self.small = small;
            return sent;
        }
        let mut pos = 0u64;
        while pos < size {
            let len = (size - pos).min(MAP_WINDOW as u64) as usize;
            let map = crate::sys::map(f, pos, len)?;
            let at_end = pos + len as u64 == size;
            if !at_end {
                // The next map's bytes come in while this one is cut and copied:
                // a cold file's reads then wait less at each map's first faults.
                crate::sys::read_ahead(f, pos + len as u64, READ_AHEAD);
            }
            let mut local = 0usize;
            while local < len {
                let rest = &map[local..];
                if !at_end && rest.len() < chunker::MAX {
                    break;
                }
                let cut = self.chunker.cut(rest);
                send(self, &mut n, &rest[..cut])?;
                local += cut;
            }
            pos += local as u64;
            self.progress
                .set(self.report.files, self.report.bytes + pos);
        }
        Ok((size, n))
    }
}

/// Where `path` is read, given the root being walked from a snapshot and
/// where it is read (see [`Walker::from`]).
fn read_at(from: &Option<(PathBuf, PathBuf, u64, u64)>, path: &Path) -> PathBuf {
    let Some((root, read, _, _)) = from else {
        return path.to_path_buf();
    };
    match path.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => read.clone(),
        Ok(rel) => read.join(rel),
        Err(_) => path.to_path_buf(),
    }
}

/// Reads of a file that keeps changing while it is read, before it is kept as
/// last read and reported.
pub const READ_TRIES: u32 = 3;

/// Whether two stats of one open file show the same version of it. Timestamps
/// are only as fine as the kernel's clock tick, so a write within the tick of the
/// first stat can pass unseen: the id and seal of every chunk still match (each
/// comes from one copy), only the file may mix versions.
pub(super) fn same_version(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
        && a.ino() == b.ino()
        && a.dev() == b.dev()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A run makes no more chunk buffers than its workers, the queue and the open
    // pack can hold; past that the walker waits for one to come back.
    #[test]
    fn chunk_buffers_are_made_up_to_the_most_then_waited_for() {
        let (back, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let mut spares = Spares::new(rx, 1);
        // The packer holds the first; two more are made.
        let made: Vec<Vec<u8>> = (0..2).map(|_| spares.take()).collect();
        assert!(made.iter().all(|b| b.capacity() == 0));
        let returned = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            back.send(Vec::with_capacity(12345)).unwrap();
            back
        });
        assert_eq!(spares.take().capacity(), 12345, "waited for the one back");
        let back = returned.join().unwrap();
        back.send(Vec::with_capacity(7)).unwrap();
        assert_eq!(spares.take().capacity(), 7);
        drop(back);
        assert_eq!(spares.take().capacity(), 0, "the workers are gone");
    }

    // The paths still to visit come out depth first, each directory's names in
    // byte order, a directory entered meanwhile visited before its parent's next
    // name; each carries its directory's device, the root none.
    #[test]
    fn the_walk_visits_depth_first_from_compact_names() {
        let src =
            std::env::temp_dir().join(format!("chute-todo-{}", crate::fsutil::random_suffix()));
        for d in ["a/y/z", "b", "c", "a/x", "a/\u{e9}", "a/B"] {
            fs::create_dir_all(src.join(d)).unwrap();
        }
        let mut t = Todo::root(Path::new("/r"));
        let mut seen = Vec::new();
        while let Some((path, dev)) = t.next() {
            seen.push((path.display().to_string(), dev));
            let at = src.join(path.strip_prefix("/r").unwrap());
            let f = Frame::list(path, &at, Some(seen.len() as u64)).unwrap();
            t.enter(f);
        }
        let want = [
            ("/r", None),
            ("/r/a", Some(1)),
            ("/r/a/B", Some(2)),
            ("/r/a/x", Some(2)),
            ("/r/a/y", Some(2)),
            ("/r/a/y/z", Some(5)),
            ("/r/a/\u{e9}", Some(2)),
            ("/r/b", Some(1)),
            ("/r/c", Some(1)),
        ];
        let want: Vec<_> = want.iter().map(|&(p, d)| (p.to_string(), d)).collect();
        assert_eq!(seen, want);
        assert!(t.frames.is_empty());
        let top = Frame::list(PathBuf::from("/r"), &src, None).unwrap();
        assert!(top.has("b") && !top.has("d") && !top.has("ab"));
        fs::remove_dir_all(src).unwrap();
    }

    // What a manifest cannot hold is left out (with a warning), never the file.
    #[test]
    fn xattrs_within_the_format() {
        let p = Path::new("/f");
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(kept_xattrs(p, Err(denied)).is_empty());
        let a = |n: usize, v: usize| (vec![b'n'; n], vec![0u8; v]);
        let big = format::MAX_XATTR_VALUE;
        let got = kept_xattrs(p, Ok(vec![a(3, 1), a(256, 1), a(4, big + 1), a(5, big)]));
        assert_eq!(got, vec![a(3, 1), a(5, big)]);
        let many: Vec<_> = (0..format::MAX_XATTRS + 3)
            .map(|i| (i.to_string().into_bytes(), vec![]))
            .collect();
        assert_eq!(kept_xattrs(p, Ok(many.clone())), many[..format::MAX_XATTRS]);
    }

    #[test]
    fn excludes() {
        assert!(excluded(
            &["node_modules".into()],
            Path::new("/a/node_modules")
        ));
        assert!(!excluded(
            &["node_modules".into()],
            Path::new("/a/node_modules2")
        ));
    }

    #[test]
    fn mount_points() {
        use Crossing::*;
        let never = || -> Option<u32> { panic!("statfs called off a mount point") };
        // Same device as the parent: entered, without a statfs.
        assert_eq!(crossing(true, 1, 1, 1, never), Enter);
        assert_eq!(crossing(false, 1, 2, 2, never), Enter);
        // Another ordinary file system: entered unless -x.
        let ext4 = || Some(0xef53);
        assert_eq!(crossing(false, 1, 1, 2, ext4), Enter);
        assert_eq!(crossing(true, 1, 1, 2, ext4), OtherFs);
        // Back on the root's device below another one: entered with -x too.
        assert_eq!(crossing(true, 1, 2, 1, ext4), Enter);
        // Pseudo file systems: skipped with or without -x.
        assert_eq!(crossing(false, 1, 1, 3, || Some(0x9fa0)), Pseudo("proc"));
        assert_eq!(
            crossing(false, 1, 1, 3, || Some(0x0102_1994)),
            Pseudo("tmpfs")
        );
        assert_eq!(crossing(true, 1, 1, 3, || Some(0x6265_6572)), OtherFs);
        // A negative f_type from 32-bit ARM's i32, cast: still bpf.
        assert_eq!(pseudo_fs(0xcafe_4a11_u32 as i32 as u32), Some("bpf"));
        // statfs failed: entered.
        assert_eq!(crossing(false, 1, 1, 3, || None), Enter);
    }

    #[test]
    fn snapshot_paths() {
        let from = Some(("/v/data".into(), "/v/data/.chute-fssnap-x/sub".into(), 1, 2));
        assert_eq!(
            read_at(&from, Path::new("/v/data")),
            Path::new("/v/data/.chute-fssnap-x/sub")
        );
        assert_eq!(
            read_at(&from, Path::new("/v/data/a/b")),
            Path::new("/v/data/.chute-fssnap-x/sub/a/b")
        );
        // Not below the root: read where it is.
        assert_eq!(
            read_at(&from, Path::new("/v/database")),
            Path::new("/v/database")
        );
        assert_eq!(
            read_at(&None, Path::new("/v/data/a")),
            Path::new("/v/data/a")
        );
    }

    #[test]
    fn walk_order_is_component_order() {
        use std::cmp::Ordering::*;
        // The walker visits /a, /a/x, then /a-b: "a-b" sorts after "a" as a name,
        // although '-' < '/' as a byte.
        assert_eq!(walk_order(b"/a/x", b"/a-b"), Less);
        assert_eq!(walk_order(b"/a", b"/a/x"), Less);
        assert_eq!(walk_order(b"/a/x", b"/a/x"), Equal);
        assert_eq!(walk_order(b"/b", b"/a/z"), Greater);
    }
}
