//! Walking the sources: every path in walk order, unchanged files taken from the
//! parent snapshot without reading them (a merge of two sorted streams), every
//! other file read as one version (stat before and after) and queued chunk by chunk
//! as private copies for the workers.

use super::*;

/// Bytes of a source file mapped at once (two of the largest chunks).
pub const MAP_WINDOW: usize = 2 * chunker::MAX;
/// Files smaller than this are read, not mapped: a map costs more syscalls.
pub(super) const READ_BELOW: u64 = 256 << 10;
/// Simple globs for excludes: `*` any run of characters but `/`, `?` one; a pattern
/// without `/` matches a name, one with `/` the whole path.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], text)
                || (!text.is_empty() && text[0] != b'/' && glob_match(pattern, &text[1..]))
        }
        (Some(b'?'), Some(&c)) if c != b'/' => glob_match(&pattern[1..], &text[1..]),
        (Some(p), Some(c)) if p == c => glob_match(&pattern[1..], &text[1..]),
        _ => false,
    }
}

pub(super) fn excluded(excludes: &[String], path: &Path) -> bool {
    let full = path.as_os_str().as_bytes();
    let name = path.file_name().map_or(full, |n| n.as_bytes());
    excludes.iter().any(|p| {
        let p = p.as_bytes();
        if p.contains(&b'/') {
            glob_match(p, full)
        } else {
            glob_match(p, name)
        }
    })
}

pub(super) fn entry_from(kind: EntryKind, path: &Path, md: &fs::Metadata) -> Entry {
    let mut e = Entry::new(kind, path.as_os_str().as_bytes().to_vec());
    e.mode = md.mode() & 0o7777;
    e.uid = md.uid();
    e.gid = md.gid();
    e.mtime = md.mtime();
    e.mtime_ns = md.mtime_nsec() as u32;
    e.dev = md.dev();
    e.inode = md.ino();
    e.ctime = md.ctime();
    e.ctime_ns = md.ctime_nsec() as u32;
    e
}

/// Makes each root absolute (without resolving symlinks), checks it exists, and
/// drops roots inside other roots.
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
        fs::symlink_metadata(&clean)
            .map_err(|e| Error::Io(format!("cannot read {}", clean.display()), e))?;
        out.push(clean);
    }
    crate::sort::sort(&mut out);
    out.dedup();
    let all = out.clone();
    out.retain(|r| !all.iter().any(|o| o != r && r.starts_with(o)));
    Ok(out)
}

/// The previous snapshot of the same paths, read entry by entry beside the walk:
/// both are in walk order (see [`walk_order`]), so a merge finds each path's old
/// entry without holding the parent manifest in memory.
pub(super) struct Parent<'a> {
    pub(super) stream: format::ManifestStream<Box<dyn std::io::Read + 'a>>,
    /// Parent blob index → this run's blob table index.
    pub(super) map: Vec<u32>,
    pub(super) peek: Option<Entry>,
    /// Whether `peek` uses a chunk the cache knows is damaged (not reusable).
    pub(super) peek_damaged: bool,
    pub(super) short_id: String,
}

impl<'a> Parent<'a> {
    /// Opens the manifest of `p` as a stream, adding its blobs to this run's table.
    pub(super) fn open(
        keys: &'a Keys,
        remote: &'a dyn Remote,
        p: &'a Snapshot,
        blobs: &mut Blobs,
    ) -> Result<Parent<'a>> {
        let h = &p.header;
        let fetch = move |off: u64, len: u64| {
            remote
                .read(&p.blob, h.manifest_offset + off, len)
                .map_err(std::io::Error::other)
        };
        let damaged = |e| {
            Error::Damaged(format!(
                "snapshot {}: manifest is damaged: {}",
                p.short_id(),
                format::opened(e)
            ))
        };
        let reader =
            format::ManifestReader::new(keys, &p.blob.path(), h.manifest_len, h.segments, fetch)
                .map_err(damaged)?;
        let stream = format::ManifestStream::new(Box::new(reader) as Box<dyn std::io::Read + 'a>)
            .map_err(damaged)?;
        let map = stream.blobs.iter().map(|b| blobs.index(b)).collect();
        Ok(Parent {
            stream,
            map,
            peek: None,
            peek_damaged: false,
            short_id: p.short_id(),
        })
    }
}

impl Parent<'_> {
    /// The parent's entry for `path`, if it had one, and whether its chunks may be
    /// reused (none is a copy the cache knows is damaged); entries before it are
    /// skipped.
    pub(super) fn find(
        &mut self,
        path: &[u8],
        cache: &ChunkIndex,
    ) -> Result<Option<(&Entry, bool)>> {
        loop {
            if self.peek.is_none() {
                self.peek = self.stream.next_entry().map_err(|e| {
                    Error::Damaged(format!(
                        "snapshot {}: manifest is damaged: {}",
                        self.short_id,
                        format::opened(e)
                    ))
                })?;
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

pub(super) struct Walker<'a> {
    pub(super) opts: &'a Options,
    pub(super) chunker: &'a Chunker,
    pub(super) tx: SyncSender<Job>,
    /// Chunk buffers the workers are done with.
    pub(super) spare: Receiver<Vec<u8>>,
    /// A small file's bytes, read whole.
    pub(super) small: Vec<u8>,
    pub(super) cache: &'a ChunkIndex,
    pub(super) parent: Option<Parent<'a>>,
    pub(super) entries: &'a mut Vec<Entry>,
    pub(super) dropped: &'a mut Vec<u32>,
    pub(super) report: &'a mut Report,
    pub(super) stop: &'a AtomicBool,
    pub(super) progress: Progress,
}

impl Walker<'_> {
    pub(super) fn skip(&mut self, path: &Path, e: impl std::fmt::Display) {
        let line = format!("{}: {e}", path.display());
        self.progress.clear();
        eprintln!("chute sink: skipping {line}");
        self.report.skipped.push(line);
    }

    pub(super) fn walk(&mut self, root: &Path) -> Result<()> {
        let mut stack = vec![root.to_path_buf()];
        while let Some(path) = stack.pop() {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if path != root && excluded(&self.opts.excludes, &path) {
                continue;
            }
            let md = match fs::symlink_metadata(&path) {
                Ok(md) => md,
                Err(e) => {
                    self.skip(&path, e);
                    continue;
                }
            };
            let ft = md.file_type();
            if ft.is_dir() {
                let names = match fs::read_dir(&path).and_then(|rd| {
                    rd.map(|e| e.map(|e| e.file_name()))
                        .collect::<std::io::Result<Vec<_>>>()
                }) {
                    Ok(n) => n,
                    Err(e) => {
                        self.skip(&path, e);
                        continue;
                    }
                };
                self.entries.push(entry_from(EntryKind::Dir, &path, &md));
                self.report.dirs += 1;
                let mut names = names;
                crate::sort::sort(&mut names);
                // Reverse, so the stack pops them in order.
                stack.extend(names.iter().rev().map(|n| path.join(n)));
            } else if ft.is_symlink() {
                match fs::read_link(&path) {
                    Ok(t) => {
                        let mut e = entry_from(EntryKind::Symlink, &path, &md);
                        e.target = t.as_os_str().as_bytes().to_vec();
                        self.entries.push(e);
                        self.report.symlinks += 1;
                    }
                    Err(e) => self.skip(&path, e),
                }
            } else if ft.is_file() {
                if self.unchanged(&path, &md)? {
                    continue;
                }
                if let Err(e) = self.file(&path) {
                    self.skip(&path, e);
                }
                testhooks::stall();
            } else {
                // Sockets, FIFOs and devices are runtime objects, not data: noted, not
                // counted as failures (a nightly sink of / would otherwise never pass).
                self.progress.clear();
                eprintln!(
                    "chute sink: not backing up {} (socket, FIFO or device)",
                    path.display()
                );
            }
            self.progress.tick(self.report.files, self.report.bytes);
        }
        Ok(())
    }

    /// Reuses the parent's entry for a file that has not changed since.
    pub(super) fn unchanged(&mut self, path: &Path, md: &fs::Metadata) -> Result<bool> {
        let Some(parent) = self.parent.as_mut() else {
            return Ok(false);
        };
        let Some((old, reusable)) = parent.find(path.as_os_str().as_bytes(), self.cache)? else {
            return Ok(false);
        };
        let same = old.kind == EntryKind::File
            && old.size == md.len()
            && old.mtime == md.mtime()
            && old.mtime_ns == md.mtime_nsec() as u32
            && old.ctime == md.ctime()
            && old.ctime_ns == md.ctime_nsec() as u32
            && old.inode == md.ino()
            && old.dev == md.dev()
            // A chunk found damaged is sealed afresh: read the file again.
            && reusable;
        if !same {
            return Ok(false);
        }
        let mut e = entry_from(EntryKind::File, path, md);
        e.size = md.len();
        e.chunks = old.chunks.clone();
        self.entries.push(e);
        self.report.files += 1;
        self.report.bytes += md.len();
        self.report.unchanged_files += 1;
        self.report.unchanged_bytes += md.len();
        self.progress.tick(self.report.files, self.report.bytes);
        Ok(true)
    }

    /// Records one file and queues its chunks, read as one version: its stat
    /// (size, times, inode) is taken before and after the read, and a file that
    /// changed in between is read again, up to [`READ_TRIES`] times, then kept as
    /// last read and reported. A read that fails or is read again leaves its queued
    /// chunks in part 0, unreferenced (its entry is dropped).
    pub(super) fn file(&mut self, path: &Path) -> std::io::Result<()> {
        let f = File::open(path)?;
        for tries in 1.. {
            let idx = self.entries.len() as u32;
            self.entries.push(Entry::new(
                EntryKind::File,
                path.as_os_str().as_bytes().to_vec(),
            ));
            let before = f.metadata()?;
            let read = self.read(&f, idx, before.len());
            testhooks::change_during_read(path, tries);
            let after = f.metadata();
            let (size, after) = match (read, after) {
                (Ok(size), Ok(after)) => (size, after),
                (Err(e), _) | (_, Err(e)) => {
                    self.dropped.push(idx);
                    return Err(e);
                }
            };
            let same = size == before.len() && same_version(&before, &after);
            if !same && tries < READ_TRIES {
                self.dropped.push(idx);
                continue;
            }
            let mut entry = entry_from(EntryKind::File, path, &before);
            entry.size = size;
            self.entries[idx as usize] = entry;
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

    /// Copies `size` bytes of `f` chunk by chunk into the queue as chunks `0..` of
    /// entry `idx`; returns the bytes queued (fewer if a small file shrank).
    fn read(&mut self, f: &File, idx: u32, size: u64) -> std::io::Result<u64> {
        let mut n = 0u32;
        let mut send = |w: &mut Self, plain: &[u8]| -> std::io::Result<()> {
            let buf = w.spare.try_recv().unwrap_or_default();
            let chunk = ChunkBuf::copy_of(plain, buf);
            w.tx.send(Job {
                file: idx,
                n,
                chunk,
            })
            .map_err(|_| std::io::Error::other("the sealing workers stopped"))?;
            n += 1;
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
                    send(self, &small[pos..pos + len])?;
                    pos += len;
                }
                Ok(small.len() as u64)
            });
            self.small = small;
            return sent;
        }
        let mut pos = 0u64;
        while pos < size {
            let len = (size - pos).min(MAP_WINDOW as u64) as usize;
            let map = crate::sys::map(f, pos, len)?;
            let at_end = pos + len as u64 == size;
            let mut local = 0usize;
            while local < len {
                let rest = &map[local..];
                if !at_end && rest.len() < chunker::MAX {
                    break;
                }
                let cut = self.chunker.cut(rest);
                send(self, &rest[..cut])?;
                local += cut;
            }
            pos += local as u64;
            self.progress
                .tick(self.report.files, self.report.bytes + pos);
        }
        Ok(size)
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

/// A live progress line on stderr, only when stderr is a terminal.
pub(super) struct Progress {
    pub(super) on: bool,
    pub(super) last: Instant,
    pub(super) shown: bool,
}

impl Progress {
    pub(super) fn new(wanted: bool) -> Progress {
        Progress {
            on: wanted && std::io::stderr().is_terminal(),
            last: Instant::now(),
            shown: false,
        }
    }

    pub(super) fn tick(&mut self, files: u64, bytes: u64) {
        if self.on && self.last.elapsed() > Duration::from_millis(250) {
            self.last = Instant::now();
            self.shown = true;
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\r\x1b[K{files} files, {}",
                crate::units::human_bytes(bytes)
            );
            let _ = e.flush();
        }
    }

    pub(super) fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
            self.shown = false;
        }
    }

    pub(super) fn done(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.tmp", b"a.tmp"));
        assert!(!glob_match(b"*.tmp", b"a.tmpx"));
        assert!(glob_match(b"/home/*/cache", b"/home/pi/cache"));
        assert!(!glob_match(b"/home/*/cache", b"/home/pi/x/cache"));
        assert!(glob_match(b"?at", b"cat"));
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
