//! Each blob's list of windows, kept in memory so that writing or reading a window
//! does not list and parse part 0's directory (which costs as much as the blob has
//! windows: a 4 GiB blob's every write listed ~2,000 names three times).
//!
//! A list is trusted only while the blob's change mark is the one it was made
//! under. The mark is 8 random bytes (never all zero) at the head of the blob's
//! `.lock`, zeroed before every change to its window files (a window placed or
//! replaced, trimmed) and rewritten after it, under the blob's lock, by any
//! process; a list is read after the mark, so a
//! change that lands while a list is being made leaves a list whose mark is already
//! stale. A process's own changes update its list in place (see
//! `DirStore::place`), so a sink or a server writing a blob lists its
//! directory once. A blob whose lock holds no mark (never changed by a chute that
//! keeps one) is listed every time. Windows an older chute wrote at the same time,
//! which changes no mark, can be missed by a list: the reads and the commit re-list
//! before they refuse anything a list says is missing, so they cost a listing, never
//! a wrong answer; the overlap check of a write is the one blind spot, as it was for
//! two writers racing before windows were checked under the lock.
//!
//! At most [`LISTED_BLOBS`] blobs are kept (least recently used go first).

use super::*;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;

/// Blobs whose window lists a store keeps in memory (a server's workers share them).
pub(super) const LISTED_BLOBS: usize = 64;

/// The windows of part 0, by offset; `extra` holds the rare second file of a range
/// a crash left while it was rewritten (same offset and length, another hash).
///
/// A sorted list, not a B-tree: 48 bytes a window against 82, which a sink, a
/// verify or a server holds for each blob it works on (a 2 GB blob has ~1,000
/// windows). Windows are placed in offset order, mostly, so an insert is a push.
#[derive(Clone, Debug, Default)]
pub struct WindowList {
    /// One window per offset, sorted by offset.
    windows: Vec<Window>,
    pub(super) extra: Vec<Window>,
}

impl WindowList {
    /// Lists part 0's directory (none if it does not exist), counted in `listings`.
    pub(super) fn read(part: &Path, listings: &Listings) -> Result<WindowList> {
        listings
            .listed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(WindowList::of(part_windows(part)?))
    }

    /// A list of `windows` (a backend's listing).
    pub(super) fn of(windows: impl IntoIterator<Item = Window>) -> WindowList {
        let mut windows: Vec<Window> = windows.into_iter().collect();
        // Stable: of two files at one offset, the later listed is kept, as
        // inserting them one by one did. In the listing's own vector: a second
        // one, grown as the first, doubled the memory and left the holes of
        // both in the arena of the thread that listed.
        windows.sort_by_key(|w| w.offset);
        let mut extra = Vec::new();
        // `later` goes; the one kept takes its value and it the kept one's.
        windows.dedup_by(|later, kept| {
            let same = later.offset == kept.offset;
            if same {
                std::mem::swap(later, kept);
                if later != kept {
                    extra.push(*later);
                }
            }
            same
        });
        windows.shrink_to_fit();
        WindowList { windows, extra }
    }

    /// Where the window at `offset` is or would go.
    fn find(&self, offset: u64) -> std::result::Result<usize, usize> {
        self.windows.binary_search_by_key(&offset, |w| w.offset)
    }

    /// Puts `w` in its offset's place; returns the window it replaced there.
    fn insert(&mut self, w: Window) -> Option<Window> {
        match self.windows.last() {
            Some(last) if last.offset < w.offset => {
                self.windows.push(w);
                return None;
            }
            None => {
                self.windows.push(w);
                return None;
            }
            _ => {}
        }
        match self.find(w.offset) {
            Ok(i) => Some(std::mem::replace(&mut self.windows[i], w)),
            Err(i) => {
                self.windows.insert(i, w);
                None
            }
        }
    }

    /// The window at exactly `offset`.
    pub(super) fn at(&self, offset: u64) -> Option<&Window> {
        self.find(offset).ok().map(|i| &self.windows[i])
    }

    /// One window per range, in offset order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Window> {
        self.windows.iter()
    }

    /// The end of the last window: how long part 0 is as written.
    pub(super) fn end(&self) -> u64 {
        self.windows.last().map_or(0, |w| w.end())
    }

    /// Where part 0 stops being written without gaps from byte 0.
    pub(super) fn written_to(&self) -> u64 {
        let mut pos = 0;
        for w in &self.windows {
            if w.offset != pos {
                break;
            }
            pos = w.end();
        }
        pos
    }

    /// The windows with a byte in `[start, end)`, in order.
    pub(super) fn touching(&self, start: u64, end: u64) -> impl Iterator<Item = &Window> {
        // The first window starting at or after `start`, and the one before it
        // if it reaches past `start`.
        let from = self.windows.partition_point(|w| w.offset < start);
        let from = match from.checked_sub(1) {
            Some(i) if self.windows[i].end() > start => i,
            _ => from,
        };
        let to = self.windows.partition_point(|w| w.offset < end.max(start));
        self.windows[from..to.max(from)].iter()
    }

    /// Every window file at exactly `[offset, offset+len)`.
    pub(super) fn same_range(&self, offset: u64, len: u64) -> Vec<Window> {
        let hit = |w: &&Window| w.offset == offset && w.len == len;
        self.at(offset)
            .filter(hit)
            .into_iter()
            .chain(self.extra.iter().filter(hit))
            .copied()
            .collect()
    }

    /// One window per range, sorted by offset.
    pub(super) fn to_vec(&self) -> Vec<Window> {
        self.windows.clone()
    }

    /// `w` was placed and the files in `removed` are gone.
    pub(super) fn placed(&mut self, w: Window, removed: &[Window]) {
        self.extra.retain(|e| !removed.contains(e));
        if let Some(old) = self.insert(w) {
            if old != w && !removed.contains(&old) {
                self.extra.push(old);
            }
        }
    }
}

struct Listed {
    mark: u64,
    list: Arc<WindowList>,
    used: u64,
}

/// The window lists of recently used blobs, by blob directory, shared by a store's
/// clones.
#[derive(Default)]
pub(super) struct Listings {
    cache: Mutex<(HashMap<PathBuf, Listed>, u64)>,
    /// Directories listed (what the cache saves), for the tests.
    pub(super) listed: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Listings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Listings({} blobs)", self.lock().0.len())
    }
}

impl Listings {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<PathBuf, Listed>, u64)> {
        // Every entry is checked against its blob's mark before use.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The list of `dir`'s windows if one was made under `mark`.
    pub(super) fn get(&self, dir: &Path, mark: u64) -> Option<Arc<WindowList>> {
        let mut c = self.lock();
        c.1 += 1;
        let clock = c.1;
        let l = c.0.get_mut(dir).filter(|l| l.mark == mark)?;
        l.used = clock;
        Some(l.list.clone())
    }

    /// [`Listings::get`], taking the list out: the caller changes it and puts it back.
    pub(super) fn take(&self, dir: &Path, mark: u64) -> Option<Arc<WindowList>> {
        let mut c = self.lock();
        match c.0.remove(dir) {
            Some(l) if l.mark == mark => Some(l.list),
            _ => None,
        }
    }

    /// Keeps `list` as `dir`'s windows under `mark`.
    pub(super) fn put(&self, dir: &Path, mark: u64, list: Arc<WindowList>) {
        let mut c = self.lock();
        c.1 += 1;
        let used = c.1;
        c.0.insert(dir.to_path_buf(), Listed { mark, list, used });
        while c.0.len() > LISTED_BLOBS {
            let oldest =
                c.0.iter()
                    .min_by_key(|(_, l)| l.used)
                    .map(|(d, _)| d.clone());
            match oldest {
                Some(d) => c.0.remove(&d),
                None => break,
            };
        }
    }

    pub(super) fn forget(&self, dir: &Path) {
        self.lock().0.remove(dir);
    }
}

/// The change mark in a blob's lock file, if it holds one: 8 bytes, none if the
/// file is shorter or they are all zero ([`clear_mark`]).
pub(super) fn read_mark(lock: &File) -> Option<u64> {
    let mut b = [0u8; 8];
    lock.read_exact_at(&mut b, 0).ok()?;
    Some(u64::from_le_bytes(b)).filter(|&m| m != NO_MARK)
}

/// The change mark of the blob in `dir`, read without its lock.
pub(super) fn mark_of(dir: &Path) -> Option<u64> {
    read_mark(&File::open(dir.join(LOCK)).ok()?)
}

/// What a lock file holds while its blob's windows change: no mark, so no
/// process trusts a list of them.
const NO_MARK: u64 = 0;

/// Removes a blob's change mark (its lock held) before its windows change.
/// Written over in place, not truncated: a truncation frees the file's block,
/// which the next mark allocates again, and on a file system mounted with
/// `discard` the free waits for the device to discard it (1.1 s of a 1 GiB
/// local sink's 5.4 on the build VM, a quarter of a worker's time). Truncated
/// only when the bytes cannot be written (a full disk, before the first mark).
pub(super) fn clear_mark(lock: &File) -> io::Result<()> {
    match lock.write_all_at(&NO_MARK.to_le_bytes(), 0) {
        Ok(()) => Ok(()),
        Err(_) => lock.set_len(0),
    }
}

/// Writes a new change mark into a blob's lock file (held): its windows changed.
/// If it cannot be written (a full disk) the mark is removed instead, so no
/// process trusts a list of the blob (`None`); an error if neither can be done.
pub(super) fn new_mark(lock: &File) -> io::Result<Option<u64>> {
    let mark = u64::from_le_bytes(fsutil::random_bytes()).max(1);
    match lock.write_all_at(&mark.to_le_bytes(), 0) {
        Ok(()) => Ok(Some(mark)),
        Err(_) => lock.set_len(0).map(|()| None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(offset: u64, len: u64, h: u8) -> Window {
        Window {
            offset,
            len,
            sha256: [h; 32],
        }
    }

    #[test]
    fn marks_are_cleared_in_place_and_never_zero() {
        let path = std::env::temp_dir().join(format!("chute-mark-{}", fsutil::random_suffix()));
        let lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        // Empty before the first window: no mark.
        assert_eq!(read_mark(&lock), None);
        let m = new_mark(&lock).unwrap().unwrap();
        assert_ne!(m, NO_MARK);
        assert_eq!(read_mark(&lock), Some(m));
        // Cleared by writing zeros over it: no mark, and the file keeps its bytes
        // (a truncation frees its block, which the next mark allocates again).
        clear_mark(&lock).unwrap();
        assert_eq!(read_mark(&lock), None);
        assert_eq!(lock.metadata().unwrap().len(), 8);
        let n = new_mark(&lock).unwrap().unwrap();
        assert_eq!(read_mark(&lock), Some(n));
        fs::remove_file(path).unwrap();
    }

    #[test]
    fn ranges_and_rewrites() {
        // Listed out of order; a crash-interrupted rewrite left two files of one
        // range: the later listed is the list's, the other an extra.
        let mut l = WindowList::of([w(10, 2, 3), w(4, 4, 2), w(0, 4, 1), w(4, 4, 9)]);
        assert_eq!(l.end(), 12);
        assert_eq!(l.written_to(), 8);
        let touching =
            |l: &WindowList, a, b| l.touching(a, b).map(|w| w.offset).collect::<Vec<_>>();
        assert_eq!(touching(&l, 3, 11), [0, 4, 10]);
        assert_eq!(touching(&l, 0, 4), [0]);
        assert_eq!(touching(&l, 4, 5), [4]);
        assert_eq!(touching(&l, 11, 99), [10]);
        assert!(touching(&l, 8, 10).is_empty());
        assert!(touching(&l, 12, 20).is_empty());
        assert_eq!(l.at(4), Some(&w(4, 4, 9)));
        assert_eq!(l.at(5), None);
        assert_eq!(l.same_range(4, 4).len(), 2);
        assert_eq!(l.to_vec(), [w(0, 4, 1), w(4, 4, 9), w(10, 2, 3)]);
        l.placed(w(4, 4, 7), &[w(4, 4, 2), w(4, 4, 9)]);
        assert_eq!(l.same_range(4, 4), [w(4, 4, 7)]);
        assert!(l.extra.is_empty());
        // Placed before the end (a gap filled), and past it.
        l.placed(w(8, 2, 4), &[]);
        l.placed(w(12, 4, 5), &[]);
        let offsets: Vec<u64> = l.iter().map(|w| w.offset).collect();
        assert_eq!(offsets, [0, 4, 8, 10, 12]);
        assert_eq!(l.written_to(), 16);
    }
}
