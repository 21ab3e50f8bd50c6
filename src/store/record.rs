//! The verified-hash record lets the hash of a window be answered without reading
//! it. Each line says "the file of this window, with this stat, held bytes whose
//! SHA-256 is the one in its name":
//!
//! ```text
//! chute-verified 1 <generation:016x>                    header: magic, version,
//!                                                       random id of this file
//! <window file name> <ino> <size> <mtime s.ns> <ctime s.ns> <check>
//! ```
//!
//! `<check>` is the first 8 bytes (hex) of the SHA-256 of the line before it. A line
//! is added right after a window is renamed into place (the store hashed its bytes
//! as it wrote them), and when a re-read finds a window equal to its name
//! and unchanged by the read (same stat before and after, ctime at least 2 s old).
//! A scrub re-reads every window whatever the record says and rewrites it: fresh
//! lines for intact windows, none for damaged or vanished ones. The last valid line
//! for a window counts; `DirStore::window_hash` trusts it only if a fresh stat of the
//! file equals it exactly, and only once the blob is committed (a pending blob's
//! bytes are not durable yet: a power cut can keep a stat and lose the bytes).
//! Every write through the file system changes ctime (no call can set it back),
//! so an edited, truncated or replaced window is re-read;
//! bit rot under an unchanged stat (and an edit within the same tick of a coarse
//! ctime clock as the recorded stat, which the 2 s rule keeps re-reads out of) is
//! what the scrub is for.
//!
//! The record is only a cache, so its failures cost time, never a wrong answer:
//! lines are appended under the blob's lock and whole rewrites go through a
//! temporary file and a rename (fsynced when they drop an entry, so a dropped
//! entry stays dropped after a crash); a torn or corrupt line fails its check and
//! is ignored; a file with another magic or version is ignored (and replaced on the
//! next write); a missing one means "re-read everything". Parsed records are kept
//! in memory, 96 bytes an entry (sorted by offset), for at most 32,768 entries over all blobs
//! (least recently used blobs go first; the blob in use stays whole) and
//! revalidated on every use: same generation, and only grown since. The record
//! also names the window at an offset without listing `0/` (the file must exist).
//!

use super::*;

// The verified-hash record (`<blob>/.verified`, see the module docs).

/// The record's name in a blob directory; its temporaries add `.tmp-<random>`.
pub(super) const RECORD: &str = ".verified";
pub(super) const RECORD_MAGIC: &str = "chute-verified";
pub(super) const RECORD_VERSION: u32 = 1;
/// Longest record line read (a valid one is about 170 bytes).
pub(super) const RECORD_LINE_MAX: u64 = 512;
/// Largest record appended to (about 5,000 entries; see `record_append`).
pub(super) const RECORD_MAX_BYTES: u64 = 1 << 20;
/// Entries the in-memory cache of records keeps over all blobs (~100 bytes each).
pub(super) const RECORD_CACHE_ENTRIES: usize = 1 << 15;
/// A re-read file is recorded only if it last changed at least this long before:
/// two changes within one tick of a coarse file-system clock (FAT's is 2 s) could
/// leave its ctime as it was.
pub(super) const SETTLED: Duration = Duration::from_secs(2);

/// What a stat of a window file shows. Every write, truncation, rename or `touch`
/// through the file system sets ctime to the current time, and no call sets it
/// back, so an equal stamp means the file was not changed through the file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) ino: u64,
    pub(super) size: u64,
    pub(super) mtime: (i64, i64),
    pub(super) ctime: (i64, i64),
}

impl Stamp {
    pub(super) fn of(m: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Whether the file's last change is at least [`SETTLED`] old.
    pub(super) fn settled(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        let changed = self.ctime.0 as i128 * 1_000_000_000 + self.ctime.1 as i128;
        now - changed >= SETTLED.as_nanos() as i128
    }
}

pub(super) fn record_header(generation: u64) -> String {
    format!("{RECORD_MAGIC} {RECORD_VERSION} {generation:016x}\n")
}

/// One record line: the window file's name, its stamp, and a check of both.
pub(super) fn record_line(w: &Window, s: &Stamp) -> String {
    let body = format!(
        "{} {} {} {}.{:09} {}.{:09}",
        w.file_name(),
        s.ino,
        s.size,
        s.mtime.0,
        s.mtime.1,
        s.ctime.0,
        s.ctime.1
    );
    let check = crate::hex::encode(&sha256(body.as_bytes())[..8]);
    format!("{body} {check}\n")
}

/// A record line without its newline; `None` if malformed or its check fails.
pub(super) fn parse_record_line(line: &[u8]) -> Option<(Window, Stamp)> {
    let line = std::str::from_utf8(line).ok()?;
    let (body, check) = line.rsplit_once(' ')?;
    if crate::hex::encode(&sha256(body.as_bytes())[..8]) != check {
        return None;
    }
    let time = |s: &str| -> Option<(i64, i64)> {
        let (a, b) = s.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let mut f = body.split(' ');
    let w = Window::from_file_name(f.next()?)?;
    let s = Stamp {
        ino: f.next()?.parse().ok()?,
        size: f.next()?.parse().ok()?,
        mtime: time(f.next()?)?,
        ctime: time(f.next()?)?,
    };
    f.next().is_none().then_some((w, s))
}

/// The generation in a record's header and where its lines start; `None` if the
/// file is not a record this build reads (empty, damaged, another version).
pub(super) fn read_record_header(f: &mut File) -> io::Result<Option<(u64, u64)>> {
    let mut head = [0u8; 64];
    f.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let Some(end) = head[..n].iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let parsed = std::str::from_utf8(&head[..end]).ok().and_then(|l| {
        let mut f = l.split(' ');
        let (magic, version, generation) = (f.next()?, f.next()?, f.next()?);
        let ok = magic == RECORD_MAGIC
            && version == RECORD_VERSION.to_string()
            && generation.len() == 16
            && f.next().is_none();
        ok.then(|| u64::from_str_radix(generation, 16).ok())?
    });
    Ok(parsed.map(|g| (g, end as u64 + 1)))
}

/// Calls `each` with every complete line of `f` in `[from, to)` (without its
/// newline; an overlong one is skipped) and returns where the last complete line
/// ends: a line still being appended, or torn by a crash, is left for later.
pub(super) fn scan_record(
    f: &mut File,
    from: u64,
    to: u64,
    each: &mut dyn FnMut(&[u8]),
) -> io::Result<u64> {
    use std::io::BufRead;
    f.seek(SeekFrom::Start(from))?;
    let mut r = io::BufReader::with_capacity(64 << 10, f.take(to.saturating_sub(from)));
    let (mut pos, mut pending, mut overlong) = (from, 0u64, false);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = (&mut r)
            .take(RECORD_LINE_MAX + 1)
            .read_until(b'\n', &mut line)? as u64;
        if n == 0 {
            break;
        }
        pending += n;
        if line.last() != Some(&b'\n') {
            if n > RECORD_LINE_MAX {
                overlong = true;
                continue;
            }
            break;
        }
        if !overlong {
            each(&line[..line.len() - 1]);
        }
        overlong = false;
        pos += pending;
        pending = 0;
    }
    Ok(pos)
}

/// A blob's record as last read: valid while the file has the same generation and
/// has only grown (appends) since.
pub(super) struct CachedRecord {
    pub(super) generation: u64,
    /// Bytes of the file parsed so far.
    pub(super) len: u64,
    /// The last valid entry for each offset.
    pub(super) entries: Entries,
    /// When it was last used, for eviction.
    pub(super) used: u64,
}

/// A record's entries, the last valid one for each offset, sorted by offset: 96
/// bytes each (a hash map of them took 216, in buckets half empty).
#[derive(Default)]
pub(super) struct Entries(pub(super) Vec<(Window, Stamp)>);

impl Entries {
    /// Sorts the entries pushed since there were `from`, keeping the last (in file
    /// order) at an offset. Lines appended in offset order past the last one (a
    /// sink's windows, mostly) cost only that check: no sort, no copy.
    fn settle(&mut self, from: usize) {
        let tail = &self.0[from.saturating_sub(1)..];
        if tail.windows(2).all(|p| p[0].0.offset < p[1].0.offset) {
            return;
        }
        // Stable, so entries at one offset stay in file order.
        self.0.sort_by_key(|(w, _)| w.offset);
        // `later` is dropped, its value moved into the entry kept.
        self.0.dedup_by(|later, kept| {
            let same = later.0.offset == kept.0.offset;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        self.0.shrink_to_fit();
    }

    fn get(&self, offset: u64) -> Option<(Window, Stamp)> {
        let i = self
            .0
            .binary_search_by_key(&offset, |(w, _)| w.offset)
            .ok()?;
        Some(self.0[i])
    }
}

/// The parsed records of recently used blobs, shared by a store's clones.
#[derive(Default)]
pub(super) struct Records {
    pub(super) cache: Mutex<RecordCache>,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Records({} blobs cached)", self.lock().blobs.len())
    }
}

#[derive(Default)]
pub(super) struct RecordCache {
    pub(super) blobs: std::collections::HashMap<PathBuf, CachedRecord>,
    pub(super) clock: u64,
}

impl Records {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, RecordCache> {
        // A panic elsewhere cannot leave the cache inconsistent in a way that
        // matters: every entry is revalidated against the file before use.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn forget(&self, dir: &Path) {
        self.lock().blobs.remove(dir);
    }
}

impl DirStore {
    /// The stamp the record of blob directory `dir` holds for window `w`, if any.
    pub(super) fn recorded(&self, dir: &Path, w: &Window) -> Option<Stamp> {
        self.recorded_at(dir, w.offset)
            .filter(|(r, _)| r == w)
            .map(|(_, s)| s)
    }

    /// The last window the record of blob directory `dir` holds at `offset`, with
    /// its stamp. Reads the header (and any lines appended since) on every call, so
    /// a record rewritten or removed by another process is never trusted from memory.
    pub(super) fn recorded_at(&self, dir: &Path, offset: u64) -> Option<(Window, Stamp)> {
        let opened = File::open(dir.join(RECORD)).and_then(|mut f| {
            let len = f.metadata()?.len();
            Ok(read_record_header(&mut f)?.map(|h| (f, len, h)))
        });
        let Ok(Some((mut f, len, (generation, start)))) = opened else {
            self.records.forget(dir);
            return None;
        };
        let mut cache = self.records.lock();
        cache.clock += 1;
        let clock = cache.clock;
        let fresh = |c: &CachedRecord| c.generation == generation && c.len <= len;
        if !cache.blobs.get(dir).is_some_and(fresh) {
            cache.blobs.insert(
                dir.to_path_buf(),
                CachedRecord {
                    generation,
                    len: start,
                    entries: Default::default(),
                    used: 0,
                },
            );
        }
        let c = cache.blobs.get_mut(dir).expect("just inserted");
        c.used = clock;
        if c.len < len {
            let from = c.entries.0.len();
            let entries = &mut c.entries.0;
            // A whole record read: room for every line at once (a valid one is
            // about 170 bytes), cut to what was found below. Grown by doubling,
            // a 1,000-window record left ~100 KB of holes in the arena of the
            // thread that read it. Lines appended since (a sink's) are pushed.
            let whole = from == 0;
            if whole {
                entries.reserve(((len - c.len) / 150) as usize);
            }
            let scanned = scan_record(&mut f, c.len, len, &mut |line| {
                if let Some(e) = parse_record_line(line) {
                    entries.push(e);
                }
            });
            c.entries.settle(from);
            if whole {
                c.entries.0.shrink_to_fit();
            }
            match scanned {
                Ok(end) => c.len = end,
                Err(_) => {
                    cache.blobs.remove(dir);
                    return None;
                }
            }
        }
        let found = c.entries.get(offset);
        // Keep memory bounded: drop the least recently used blobs. The one in use
        // stays whatever its size: re-reading its record for every window would
        // make a verify quadratic in the blob's windows.
        while cache
            .blobs
            .values()
            .map(|c| c.entries.0.len())
            .sum::<usize>()
            > RECORD_CACHE_ENTRIES
        {
            let oldest = cache
                .blobs
                .iter()
                .filter(|(d, _)| d.as_path() != dir)
                .min_by_key(|(_, c)| c.used)
                .map(|(d, _)| d.clone());
            match oldest {
                Some(d) => cache.blobs.remove(&d),
                None => break,
            };
        }
        found
    }

    /// Appends an entry to a blob's record (creating it), under the blob's lock.
    pub(super) fn record_append(&self, dir: &Path, w: &Window, s: &Stamp) -> Result<()> {
        let _lock = lock_blob(dir)?;
        self.record_append_held(dir, w, s)
    }

    /// [`DirStore::record_append`] for a caller that holds the blob's lock (a
    /// second `flock` of it from this process would wait for itself).
    pub(super) fn record_append_held(&self, dir: &Path, w: &Window, s: &Stamp) -> Result<()> {
        let path = dir.join(RECORD);
        // The record is a cache of verdicts, not data, and is not charged to the
        // node's quota; a window sent again appends a line each time. Past
        // RECORD_MAX_BYTES new windows go unrecorded (verify re-reads them) until a
        // scrub compacts the record: a node cannot grow it without bound.
        if fs::metadata(&path).is_ok_and(|m| m.len() > RECORD_MAX_BYTES) {
            return Ok(());
        }
        let line = record_line(w, s);
        let res = (|| -> io::Result<bool> {
            let mut f = fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)?;
            if f.metadata()?.len() == 0 {
                let generation = u64::from_le_bytes(fsutil::random_bytes());
                f.write_all(format!("{}{line}", record_header(generation)).as_bytes())?;
                return Ok(true);
            }
            if read_record_header(&mut f)?.is_none() {
                return Ok(false);
            }
            // A line torn by a crash would swallow this one.
            let mut last = [0u8; 1];
            f.seek(SeekFrom::End(-1))?;
            f.read_exact(&mut last)?;
            let sep = if last[0] == b'\n' { "" } else { "\n" };
            f.write_all(format!("{sep}{line}").as_bytes())?;
            Ok(true)
        })();
        match res {
            Ok(true) => Ok(()),
            // Not a record this build reads: start a new one.
            Ok(false) => write_record(dir, [(w, s)].into_iter(), false),
            Err(e) => Err(io_err(format!("cannot write {}", path.display()))(e)),
        }
    }

    /// Brings a blob's record in line with what a scrub found: `Some` stamps are
    /// fresh "intact" verdicts, `None` windows must no longer be vouched for. With
    /// `complete` (the whole blob was read) entries of window files that are gone are
    /// dropped as well. The file is rewritten only if that changes anything, and
    /// durably if an entry is dropped; if it cannot be rewritten then, it is removed.
    pub(super) fn record_merge(
        &self,
        dir: &Path,
        found: &[(Window, Option<Stamp>)],
        complete: bool,
    ) -> Result<()> {
        if found.is_empty() && !complete {
            return Ok(());
        }
        let _lock = lock_blob(dir)?;
        let path = dir.join(RECORD);
        let mut entries = std::collections::HashMap::new();
        let mut lines = 0usize;
        let mut rewrite = match File::open(&path) {
            Ok(mut f) => match read_record_header(&mut f) {
                Ok(Some((_, start))) => {
                    let len = f.metadata().map_or(0, |m| m.len());
                    let end = scan_record(&mut f, start, len, &mut |line| {
                        lines += 1;
                        if let Some((w, s)) = parse_record_line(line) {
                            entries.insert(w, s);
                        }
                    });
                    // Bytes after the last complete line, or lines that failed their
                    // check or repeat a window: worth compacting.
                    !matches!(end, Ok(e) if e == len)
                }
                _ => true,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(_) => true,
        };
        rewrite |= lines != entries.len();
        let mut dropped = false;
        for (w, s) in found {
            match s {
                Some(s) => rewrite |= entries.insert(*w, *s) != Some(*s),
                None => dropped |= entries.remove(w).is_some(),
            }
        }
        if complete {
            let part = dir.join(PART);
            let before = entries.len();
            entries.retain(|w, _| part.join(w.file_name()).exists());
            rewrite |= entries.len() != before;
        }
        self.records.forget(dir);
        if !(rewrite || dropped) {
            return Ok(());
        }
        let written = write_record(dir, entries.iter(), dropped);
        match (written, dropped) {
            (Ok(()), _) => Ok(()),
            (Err(e), false) => Err(e),
            // The record might still vouch for a damaged window: it must go.
            (Err(_), true) => match fs::remove_file(&path) {
                Ok(()) => sync_dir(dir),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(format!("cannot remove {}", path.display()))(e)),
            },
        }
    }
}

/// Writes a blob's record afresh under a new generation: temporary file, rename;
/// fsynced only if `durable` (otherwise a crash may leave a short or empty record,
/// which costs re-hashing, nothing else).
pub(super) fn write_record<'a>(
    dir: &Path,
    entries: impl Iterator<Item = (&'a Window, &'a Stamp)>,
    durable: bool,
) -> Result<()> {
    let path = dir.join(RECORD);
    let tmp = dir.join(format!("{RECORD}.tmp-{}", fsutil::random_suffix()));
    let res = (|| {
        let mut f = io::BufWriter::new(File::create(&tmp)?);
        f.write_all(record_header(u64::from_le_bytes(fsutil::random_bytes())).as_bytes())?;
        for (w, s) in entries {
            f.write_all(record_line(w, s).as_bytes())?;
        }
        let f = f.into_inner().map_err(|e| e.into_error())?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(format!("cannot write {}", path.display()))(e));
    }
    if durable { sync_dir(dir) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_entries_keep_the_last_line_for_each_offset_in_offset_order() {
        let w = |offset: u64, b: u8| Window {
            offset,
            len: 10,
            sha256: [b; 32],
        };
        let s = |ino: u64| Stamp {
            ino,
            size: 10,
            mtime: (1, 0),
            ctime: (1, 0),
        };
        let mut e = Entries::default();
        // File order: 20, 0, 10, 0 again (a re-read), 10 twice more.
        for (o, b) in [(20, 1), (0, 2), (10, 3), (0, 4), (10, 5), (10, 6)] {
            e.0.push((w(o, b), s(u64::from(b))));
        }
        e.settle(0);
        let got: Vec<(u64, u8)> = e.0.iter().map(|(w, _)| (w.offset, w.sha256[0])).collect();
        assert_eq!(got, [(0, 4), (10, 6), (20, 1)]);
        assert_eq!(e.get(10).map(|(_, s)| s.ino), Some(6));
        assert_eq!(e.get(5), None);
        // Lines appended later win over those settled before.
        e.0.push((w(0, 7), s(7)));
        e.0.push((w(30, 8), s(8)));
        e.settle(3);
        assert_eq!(e.get(0).map(|(w, _)| w.sha256[0]), Some(7));
        assert_eq!(e.0.len(), 4);
        // Appended in order past the last: kept as they are.
        e.0.push((w(40, 9), s(9)));
        e.0.push((w(50, 10), s(10)));
        e.settle(4);
        let offsets: Vec<u64> = e.0.iter().map(|(w, _)| w.offset).collect();
        assert_eq!(offsets, [0, 10, 20, 30, 40, 50]);
        assert_eq!(e.get(50).map(|(_, s)| s.ino), Some(10));
    }
}
