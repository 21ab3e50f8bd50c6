//! Chunk records in bounded memory: this sink's set of the chunks it stored (in-run
//! deduplication, the resume list), and the sorted records of one snapshot's
//! manifest while the chunk index is rebuilt. Either would otherwise hold every
//! record of a run in memory, ~100 bytes each: 100 MB for a million small files.
//!
//! Up to a fixed number of records (the cap) are kept in memory, sorted; then they
//! are written out as a sorted *run*, the file `<prefix>.<n>` in the cache
//! directory: the chunk index's 48-byte records (see [`crate::cache`]) and nothing
//! else. Whenever the newest run holds at least as many records as the one before,
//! the two are merged into one, so runs double in size and there are never more
//! than about log2(records / cap) + 1 of them (6 at a million records and the
//! default cap), and each record is rewritten that many times at most.
//!
//! A lookup ([`RunChunks::get`]) searches memory, then each run: through the run's
//! Bloom filter (8 bits a record, 5 probes: about 2% false positives), so a miss,
//! the common case, costs no read, and a maybe through a sparse index of one id per
//! [`crate::cache::BLOCK`] records and one `pread` of that block. Memory: the cap's
//! records, plus 1.25 bytes a spilled record (filter and sparse index) when lookups
//! are wanted, nothing more without (a sorter only iterates).
//!
//! Exact, not approximate: a record inserted is found until the set is dropped.
//! Where one id is inserted twice, the first record wins, in lookups, in
//! [`RunChunks::iter`] and when runs merge.
//!
//! The files are temporaries: a run's file is removed when the run is merged or
//! the set dropped, and [`RunChunks::new`] removes what a killed process left
//! under the same prefix (one sink of a set of paths runs at a time, so the
//! prefix, named after the paths' mount id, is this process's alone).

use crate::cache::{BLOCK, Place, RECORD, decode_record, encode_record, find_record};
use crate::crypto::ChunkId;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Records kept in memory before they are written out as a run: ~2 MiB of
/// `BTreeMap` nodes, and 1.5 MiB written a spill.
pub const CAP: usize = 32 << 10;

/// Bloom filter bits a record, and probes a lookup.
const BLOOM_BITS: u64 = 8;
const BLOOM_PROBES: u64 = 5;

/// Chunk records, sorted by id, in bounded memory (see the module docs).
pub struct RunChunks {
    prefix: PathBuf,
    cap: usize,
    lookups: bool,
    mem: BTreeMap<ChunkId, Place>,
    /// Oldest first.
    runs: Vec<Run>,
    /// Run files made so far, for the next one's name.
    made: u64,
    len: u64,
}

/// One sorted run on disk.
struct Run {
    path: PathBuf,
    file: File,
    count: u64,
    sparse: Vec<ChunkId>,
    bloom: Option<Bloom>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl RunChunks {
    /// An empty set whose runs are the files `<prefix>.<n>`, holding `cap` records
    /// in memory; `lookups` if [`Self::get`] will be used (it builds the filters
    /// and sparse indexes). Removes the runs a killed process left under `prefix`.
    pub fn new(prefix: &Path, cap: usize, lookups: bool) -> RunChunks {
        remove_runs(prefix);
        RunChunks {
            prefix: prefix.to_path_buf(),
            cap: cap.max(1),
            lookups,
            mem: BTreeMap::new(),
            runs: Vec::new(),
            made: 0,
            len: 0,
        }
    }

    /// Records inserted (an id inserted again while its first record was still
    /// in memory is not counted twice).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Runs on disk now.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Adds a record; writes the records in memory out as a run once there are
    /// `cap` of them. An id already in memory keeps its first record.
    pub fn insert(&mut self, id: ChunkId, place: Place) -> io::Result<()> {
        if let std::collections::btree_map::Entry::Vacant(v) = self.mem.entry(id) {
            v.insert(place);
            self.len += 1;
        }
        if self.mem.len() >= self.cap {
            self.spill()?;
        }
        Ok(())
    }

    /// The first record inserted for `id`, if any.
    pub fn get(&self, id: &ChunkId) -> io::Result<Option<Place>> {
        debug_assert!(self.lookups, "a set built without lookups");
        for run in &self.runs {
            if run.bloom.as_ref().is_none_or(|b| b.may_hold(id)) {
                if let Some(p) = find_record(&run.file, 0, run.count, &run.sparse, id)? {
                    return Ok(Some(p));
                }
            }
        }
        Ok(self.mem.get(id).copied())
    }

    /// Every record, in id order, each id once (its first record), streamed from
    /// the runs and memory.
    pub fn iter(&self) -> io::Result<Sorted<'_>> {
        let mut srcs = Vec::with_capacity(self.runs.len() + 1);
        for run in &self.runs {
            let mut f = run.file.try_clone()?;
            f.rewind()?;
            srcs.push(Src::File(BufReader::new(f), run.count));
        }
        srcs.push(Src::Mem(self.mem.iter()));
        Ok(Sorted::new(srcs))
    }

    fn spill(&mut self) -> io::Result<()> {
        let mem = std::mem::take(&mut self.mem);
        let count = mem.len() as u64;
        let recs = mem.into_iter().map(Ok);
        let run = self.write_run(count, recs)?;
        self.runs.push(run);
        while let [.., older, newer] = &self.runs[..] {
            if older.count > newer.count {
                break;
            }
            let (newer, older) = (self.runs.pop().expect("2"), self.runs.pop().expect("2"));
            let merged = {
                let srcs = [&older, &newer]
                    .into_iter()
                    .map(|r| {
                        let mut f = r.file.try_clone()?;
                        f.rewind()?;
                        Ok(Src::File(BufReader::new(f), r.count))
                    })
                    .collect::<io::Result<Vec<_>>>()?;
                self.write_run(older.count + newer.count, Sorted::new(srcs))?
            };
            // Dropping the two removes their files.
            self.runs.push(merged);
        }
        Ok(())
    }

    /// Writes sorted records (at most `most`) as the next run.
    fn write_run(
        &mut self,
        most: u64,
        recs: impl Iterator<Item = io::Result<(ChunkId, Place)>>,
    ) -> io::Result<Run> {
        let mut path = self.prefix.clone().into_os_string();
        path.push(format!(".{}", self.made));
        let path = PathBuf::from(path);
        self.made += 1;
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let mut run = Run {
            path,
            file,
            count: 0,
            sparse: Vec::new(),
            bloom: self.lookups.then(|| Bloom::new(most)),
        };
        let mut w = BufWriter::with_capacity(64 << 10, &run.file);
        for r in recs {
            let (id, place) = r?;
            if self.lookups {
                if run.count % BLOCK as u64 == 0 {
                    run.sparse.push(id);
                }
                if let Some(b) = &mut run.bloom {
                    b.add(&id);
                }
            }
            w.write_all(&encode_record(&id, place))?;
            run.count += 1;
        }
        w.flush()?;
        drop(w);
        Ok(run)
    }
}

/// The file name of `prefix`'s runs, `<name>.`.
fn run_stem(prefix: &Path) -> Option<String> {
    Some(format!("{}.", prefix.file_name()?.to_str()?))
}

/// Removes every run file under `prefix`.
fn remove_runs(prefix: &Path) {
    let (Some(dir), Some(stem)) = (prefix.parent(), run_stem(prefix)) else {
        return;
    };
    let Ok(list) = fs::read_dir(dir) else {
        return;
    };
    for e in list.flatten() {
        let name = e.file_name();
        let is_run = name
            .to_str()
            .and_then(|n| n.strip_prefix(&stem))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_run {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// One source of a merge: a run's file (with its records left), or memory.
enum Src<'a> {
    File(BufReader<File>, u64),
    Mem(std::collections::btree_map::Iter<'a, ChunkId, Place>),
}

impl Src<'_> {
    fn next(&mut self) -> io::Result<Option<(ChunkId, Place)>> {
        match self {
            Src::File(r, left) => {
                if *left == 0 {
                    return Ok(None);
                }
                *left -= 1;
                let mut rec = [0u8; RECORD];
                r.read_exact(&mut rec)?;
                Ok(Some(decode_record(&rec)))
            }
            Src::Mem(it) => Ok(it.next().map(|(id, p)| (*id, *p))),
        }
    }
}

/// Sorted sources merged into one sorted stream, each id once: on a tie the
/// earliest source's record (the first inserted) wins.
pub struct Sorted<'a> {
    srcs: Vec<Src<'a>>,
    heads: Vec<Option<(ChunkId, Place)>>,
    last: Option<ChunkId>,
    started: bool,
    done: bool,
}

impl<'a> Sorted<'a> {
    fn new(srcs: Vec<Src<'a>>) -> Sorted<'a> {
        Sorted {
            heads: vec![None; srcs.len()],
            srcs,
            last: None,
            started: false,
            done: false,
        }
    }

    fn fill(&mut self, i: usize) -> io::Result<()> {
        self.heads[i] = self.srcs[i].next()?;
        Ok(())
    }
}

impl Iterator for Sorted<'_> {
    type Item = io::Result<(ChunkId, Place)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            for i in 0..self.srcs.len() {
                if let Err(e) = self.fill(i) {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        loop {
            // A handful of sources: a scan beats a heap.
            let mut best: Option<(usize, &ChunkId)> = None;
            for (i, h) in self.heads.iter().enumerate() {
                if let Some((id, _)) = h {
                    if best.is_none_or(|(_, b)| id < b) {
                        best = Some((i, id));
                    }
                }
            }
            let Some((i, _)) = best else {
                self.done = true;
                return None;
            };
            let rec = self.heads[i].take().expect("a head");
            if let Err(e) = self.fill(i) {
                self.done = true;
                return Some(Err(e));
            }
            if self.last == Some(rec.0) {
                continue;
            }
            self.last = Some(rec.0);
            return Some(Ok(rec));
        }
    }
}

/// A Bloom filter over chunk ids. Ids are keyed hashes, so their bytes are
/// already uniform: the probes come from them directly.
struct Bloom {
    bits: Vec<u64>,
    m: u64,
}

impl Bloom {
    fn new(records: u64) -> Bloom {
        let m = (records.saturating_mul(BLOOM_BITS)).max(64);
        Bloom {
            bits: vec![0; m.div_ceil(64) as usize],
            m,
        }
    }

    fn probes(&self, id: &ChunkId) -> impl Iterator<Item = u64> + use<> {
        let h1 = u64::from_le_bytes(id[..8].try_into().expect("8"));
        let h2 = u64::from_le_bytes(id[8..16].try_into().expect("8")) | 1;
        let m = self.m;
        (0..BLOOM_PROBES).map(move |i| {
            let h = h1.wrapping_add(i.wrapping_mul(h2));
            ((u128::from(h) * u128::from(m)) >> 64) as u64
        })
    }

    fn add(&mut self, id: &ChunkId) {
        for p in self.probes(id) {
            self.bits[(p / 64) as usize] |= 1 << (p % 64);
        }
    }

    fn may_hold(&self, id: &ChunkId) -> bool {
        self.probes(id)
            .all(|p| self.bits[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "chute-runs-{name}-{}",
            crate::fsutil::random_suffix()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn id(i: u32) -> ChunkId {
        crate::crypto::sha256(&i.to_be_bytes())
    }

    fn place(i: u32) -> Place {
        Place {
            blob: i % 3,
            offset: u64::from(i) * 1000,
            len: i + 1,
            raw: 0,
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    // The set must find every record it was given, in memory and in runs spilled
    // and merged, and nothing else; iterate them sorted, each once; and keep only a
    // few runs and no file once dropped.
    #[test]
    fn a_set_finds_exactly_what_it_holds_across_spills() {
        let dir = tmp("exact");
        let prefix = dir.join("runs-m");
        let mut set = RunChunks::new(&prefix, 16, true);
        let mut most = 0;
        for i in 0..1000 {
            set.insert(id(i), place(i)).unwrap();
            most = most.max(set.runs());
            // Every record so far is found as it was inserted, wherever it is.
            if i % 97 == 0 {
                for j in (0..=i).step_by(7) {
                    assert_eq!(set.get(&id(j)).unwrap(), Some(place(j)), "{j} after {i}");
                }
            }
        }
        assert_eq!(set.len(), 1000);
        assert!(set.runs() >= 2, "spilled: {} runs", set.runs());
        assert!(most <= 7, "{most} runs at once");
        for i in 0..1000 {
            assert_eq!(set.get(&id(i)).unwrap(), Some(place(i)));
        }
        for i in 1000..3000 {
            assert_eq!(set.get(&id(i)).unwrap(), None);
        }
        let all: Vec<_> = set.iter().unwrap().map(Result::unwrap).collect();
        let mut want: Vec<_> = (0..1000).map(|i| (id(i), place(i))).collect();
        want.sort_by_key(|r| r.0);
        assert_eq!(all, want);
        assert!(!files(&dir).is_empty());
        drop(set);
        assert_eq!(
            files(&dir),
            Vec::<String>::new(),
            "the runs go with the set"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    // An id inserted again, in memory or after its first record was spilled,
    // keeps its first record everywhere (the chunk index rebuild relies on it:
    // the first place a manifest names wins, as its stable sort did).
    #[test]
    fn duplicates_keep_their_first_record() {
        let dir = tmp("dups");
        let mut set = RunChunks::new(&dir.join("sort-m"), 8, true);
        for round in 0..3u32 {
            for i in 0..50 {
                let p = Place {
                    blob: round,
                    offset: u64::from(i),
                    len: 1,
                    raw: 0,
                };
                set.insert(id(i), p).unwrap();
            }
        }
        for i in 0..50 {
            assert_eq!(set.get(&id(i)).unwrap().unwrap().blob, 0, "{i}");
        }
        let all: Vec<_> = set.iter().unwrap().map(Result::unwrap).collect();
        assert_eq!(all.len(), 50);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(all.iter().all(|(_, p)| p.blob == 0));
        // Without lookups the stream is the same.
        let mut sorter = RunChunks::new(&dir.join("sort-n"), 8, false);
        for round in 0..3u32 {
            for i in (0..50).rev() {
                let p = Place {
                    blob: round,
                    offset: u64::from(i),
                    len: 1,
                    raw: 0,
                };
                sorter.insert(id(i), p).unwrap();
            }
        }
        let again: Vec<_> = sorter.iter().unwrap().map(Result::unwrap).collect();
        assert_eq!(again, all);
        drop((set, sorter));
        fs::remove_dir_all(dir).unwrap();
    }

    // A killed sink leaves its runs behind: the next set under the same prefix
    // removes them, and no other prefix's (another mount's sink may be running).
    #[test]
    fn a_new_set_removes_what_a_killed_one_left() {
        let dir = tmp("left");
        let mut set = RunChunks::new(&dir.join("runs-m"), 4, true);
        for i in 0..40 {
            set.insert(id(i), place(i)).unwrap();
        }
        let mut other = RunChunks::new(&dir.join("runs-mm"), 4, true);
        for i in 0..8 {
            other.insert(id(i), place(i)).unwrap();
        }
        fs::write(dir.join("runs-m.keep"), b"not a run").unwrap();
        std::mem::forget(set); // as a kill would
        let theirs = files(&dir);
        assert!(theirs.iter().any(|f| f.starts_with("runs-m.")));
        let set = RunChunks::new(&dir.join("runs-m"), 4, true);
        assert!(set.is_empty() && set.get(&id(1)).unwrap().is_none());
        let left = files(&dir);
        assert!(
            left.iter()
                .all(|f| f == "runs-m.keep" || f.starts_with("runs-mm.")),
            "{left:?}"
        );
        assert!(left.iter().any(|f| f.starts_with("runs-mm.")), "{left:?}");
        drop((set, other));
        assert_eq!(files(&dir), ["runs-m.keep"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bloom_filter_has_no_false_negatives_and_few_false_positives() {
        let mut b = Bloom::new(10_000);
        for i in 0..10_000 {
            b.add(&id(i));
        }
        assert!((0..10_000).all(|i| b.may_hold(&id(i))));
        let false_pos = (10_000..60_000).filter(|&i| b.may_hold(&id(i))).count();
        assert!(false_pos < 50_000 / 25, "{false_pos} of 50000");
    }
}
