//! The manifest as the walk makes it, in memory that does not grow with the
//! number of files: entries leave in walk order as soon as their chunks are back.
//!
//! The walker numbers every entry it makes (a file read again or that failed to
//! read gets a new number, the old one is dropped) and queues it in [`Order`]; the
//! workers send each chunk's reference back keyed by entry number and chunk
//! number, in whatever order they finish. An entry is complete once every chunk
//! its read queued is back; complete entries at the head of the queue, dropped
//! ones skipped, go to the [`format::ManifestSealer`], which cuts and seals
//! version 2 segments exactly as a whole manifest is (same plaintext, same cuts),
//! each into a spill file in the cache directory (`manifest-<mount>`, created
//! fresh by every run and removed when it ends). Only the segment table (8 bytes a
//! segment) and the blobs the entries use stay in memory. The queue holds at most
//! [`QUEUE`] entries: past that the walker waits for results, so a fast walk over
//! unchanged files cannot outrun the workers.
//!
//! After the walk the spill file's bytes are appended to part 0 in pieces, after
//! the chunks, like the whole manifest was; [`Spilled::entries`] reads the
//! entries back from it for the check before the commit (see `guard`).

use super::*;
use crate::format::{ManifestSealer, SegmentInfo};
use packer::Slice;
use std::collections::VecDeque;
use std::io::BufWriter;
use std::os::unix::fs::FileExt;
use upload::{Done, To};

/// Entries held before the walker waits for the workers: a few hundred KiB.
pub(super) const QUEUE: usize = 4096;

/// Whether the manifest this stream writes holds slices of chunks (version 3):
/// only then may the walker pack small files (see `packer`). The sealer writes
/// version 2, whole chunks only.
pub(super) const HOLDS_SLICES: bool = false;

/// Bytes of the spill file appended to part 0 at once.
const PIECE: usize = 256 << 10;

struct Pending {
    entry: Entry,
    /// Chunk numbers and references back from the workers, in any order.
    refs: Vec<(u32, ChunkRef)>,
    /// Chunks queued for the entry, once its read is over (`None` while reading).
    queued: Option<u32>,
    dropped: bool,
    /// A packed file's slice of its pack (`skip`, `take`).
    slice: Option<(u32, u32)>,
}

/// Entries in walk order, their chunk references coming back out of order: the
/// pure part of the stream.
#[derive(Default)]
pub(super) struct Order {
    queue: VecDeque<Pending>,
    /// The number of the entry at the head of the queue.
    head: u64,
    /// The entries (by number) each pack not yet back holds: the open one and
    /// those with the workers, so at most the queue's entries.
    packs: HashMap<u64, Vec<u64>>,
}

impl Order {
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    fn add(&mut self, entry: Entry, queued: Option<u32>) -> u64 {
        self.queue.push_back(Pending {
            entry,
            refs: Vec::new(),
            queued,
            dropped: false,
            slice: None,
        });
        self.head + self.queue.len() as u64 - 1
    }

    /// Adds an entry whose chunk list is already whole (a directory, a symlink,
    /// a file taken from the parent); returns its number.
    pub(super) fn push(&mut self, entry: Entry) -> u64 {
        self.add(entry, Some(0))
    }

    /// Adds an entry whose chunks are being read; returns its number, which the
    /// read's jobs carry. [`Order::close`] or [`Order::drop_entry`] follows.
    pub(super) fn open(&mut self, entry: Entry) -> u64 {
        self.add(entry, None)
    }

    fn get(&mut self, seq: u64) -> Option<&mut Pending> {
        let i = seq.checked_sub(self.head)?;
        self.queue.get_mut(usize::try_from(i).ok()?)
    }

    /// The read of entry `seq` is over: `entry` is what it read, with `n`
    /// chunks queued.
    pub(super) fn close(&mut self, seq: u64, entry: Entry, n: u32) {
        if let Some(p) = self.get(seq) {
            p.entry = entry;
            p.queued = Some(n);
        }
    }

    /// The read of entry `seq` is over and its bytes are `slice` of a pack:
    /// `entry` is what it read; it is complete when the pack's reference is back
    /// (one result completes every file of the pack).
    pub(super) fn close_packed(&mut self, seq: u64, entry: Entry, slice: Slice) {
        if let Some(p) = self.get(seq) {
            p.entry = entry;
            p.queued = Some(1);
            p.slice = Some((slice.skip, slice.take));
            self.packs.entry(slice.pack).or_default().push(seq);
        }
    }

    /// Leaves entry `seq` out (read again, or its read failed): its chunks stay
    /// in part 0, unreferenced.
    pub(super) fn drop_entry(&mut self, seq: u64) {
        if let Some(p) = self.get(seq) {
            p.dropped = true;
            p.queued = Some(0);
        }
    }

    /// Records a worker's result; one for an entry already gone (dropped) or not
    /// stored (the sink is stopping) changes nothing.
    pub(super) fn done(&mut self, d: Done) {
        match d.to {
            To::File { file, n } => {
                if let (Some(r), Some(p)) = (d.r, self.get(file)) {
                    if !p.dropped {
                        p.refs.push((n, r));
                    }
                }
            }
            // Without a reference its files stay incomplete: the sink is stopping.
            To::Pack(pack) => {
                let (Some(members), Some(r)) = (self.packs.remove(&pack), d.r) else {
                    return;
                };
                for seq in members {
                    if let Some(p) = self.get(seq) {
                        if let (false, Some((skip, take))) = (p.dropped, p.slice) {
                            p.refs.push((0, ChunkRef { skip, take, ..r }));
                        }
                    }
                }
            }
        }
    }

    /// The entry at the head, if it is complete, with its chunks in order.
    pub(super) fn pop(&mut self) -> Option<Entry> {
        loop {
            let p = self.queue.front()?;
            if !p.dropped && p.queued != Some(p.refs.len() as u32) {
                return None;
            }
            let mut p = self.queue.pop_front().expect("a head");
            self.head += 1;
            if p.dropped {
                continue;
            }
            if !p.refs.is_empty() {
                crate::sort::by_key(&mut p.refs, |&(n, _)| n);
                p.entry.chunks = p.refs.into_iter().map(|(_, r)| r).collect();
            }
            return Some(p.entry);
        }
    }
}

/// Removes the spill file when the sink ends, however it ends.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The walk's side of the stream: the queue, the workers' results and the
/// sealer writing to the spill file.
pub(super) struct Stream<'a> {
    pub(super) order: Order,
    results: Receiver<Done>,
    sealer: ManifestSealer<'a>,
    spill: BufWriter<File>,
    remove: Remove,
    blobs: &'a Mutex<(Blobs, HashMap<u32, u32>)>,
    /// Blob table indexes the written entries use.
    used: HashSet<u32>,
    chunks: u64,
    stop: &'a AtomicBool,
    error: Option<Error>,
}

impl<'a> Stream<'a> {
    /// Starts the manifest of `blob`, spilled to `manifest-<mount>` in
    /// `cache_dir` (whatever an earlier run left there is replaced).
    pub(super) fn new(
        keys: &'a Keys,
        blob: &BlobId,
        cache_dir: &Path,
        mount: &str,
        blobs: &'a Mutex<(Blobs, HashMap<u32, u32>)>,
        stop: &'a AtomicBool,
        results: Receiver<Done>,
    ) -> Result<Stream<'a>> {
        let path = cache_dir.join(format!("manifest-{mount}"));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::Io(format!("cannot create {}", path.display()), e))?;
        Ok(Stream {
            order: Order::default(),
            results,
            sealer: ManifestSealer::new(keys, &blob.path()),
            spill: BufWriter::new(file),
            remove: Remove(path),
            blobs,
            used: HashSet::new(),
            chunks: 0,
            stop,
            error: None,
        })
    }

    /// Whether adding an entry would wait for the workers' results: the walker
    /// first sends the open pack, whose files may be the ones waited for.
    pub(super) fn full(&self) -> bool {
        self.order.len() >= QUEUE
    }

    /// Adds a whole entry (see [`Order::push`]).
    pub(super) fn push(&mut self, entry: Entry) {
        self.room();
        self.order.push(entry);
        self.take();
    }

    /// Adds an entry about to be read (see [`Order::open`]).
    pub(super) fn open(&mut self, entry: Entry) -> u64 {
        self.room();
        self.order.open(entry)
    }

    /// Takes the results in hand and writes the complete entries, without
    /// waiting.
    pub(super) fn take(&mut self) {
        while let Ok(d) = self.results.try_recv() {
            self.order.done(d);
        }
        self.write_ready();
    }

    /// Waits for results while the queue is full. Called only between reads:
    /// every chunk of every entry queued is then with the workers, who answer
    /// each (with `None` once the sink stops).
    fn room(&mut self) {
        self.take();
        while self.order.len() >= QUEUE && !self.stop.load(Ordering::Relaxed) {
            match self.results.recv() {
                Ok(d) => self.order.done(d),
                Err(_) => return,
            }
            self.write_ready();
        }
    }

    fn write_ready(&mut self) {
        while let Some(e) = self.order.pop() {
            self.write(&e);
        }
    }

    fn write(&mut self, e: &Entry) {
        if self.error.is_some() {
            return;
        }
        self.chunks += e.chunks.len() as u64;
        self.used.extend(e.chunks.iter().map(|c| c.blob));
        let blobs = self.blobs;
        let name = |b: u32| blobs.lock().expect("poisoned").0.names[b as usize].clone();
        let spill = &mut self.spill;
        if let Err(e) = self.sealer.push(e, name, |sealed| spill.write_all(sealed)) {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        let path = self.remove.0.display();
        self.error = Some(Error::Io(format!("cannot write {path}"), e));
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Once the walk is over and the jobs' queue closed: waits for the workers'
    /// last results, writes the last entries and seals the last segment.
    pub(super) fn finish(mut self) -> Result<Spilled> {
        while let Ok(d) = self.results.recv() {
            self.order.done(d);
            self.write_ready();
        }
        if self.order.len() > 0 && self.error.is_none() {
            self.error = Some(Error::Failed(
                "the sink stopped before every chunk was stored".into(),
            ));
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        let spill = &mut self.spill;
        let (len, table) = self
            .sealer
            .finish(|sealed| spill.write_all(sealed))
            .and_then(|t| spill.flush().map(|()| t))
            .map_err(|e| Error::Io(format!("cannot write {}", self.remove.0.display()), e))?;
        let file = self
            .spill
            .into_inner()
            .map_err(|e| Error::Io("cannot write the manifest".into(), e.into_error()))?;
        let names = &self.blobs.lock().expect("poisoned").0.names;
        let mut used: Vec<String> = self
            .used
            .iter()
            .filter(|&&b| b != 0)
            .map(|&b| names[b as usize].clone())
            .collect();
        crate::sort::sort(&mut used);
        Ok(Spilled {
            file,
            _remove: self.remove,
            len,
            table,
            used,
            chunks: self.chunks,
        })
    }
}

/// The sealed manifest, whole in the spill file.
pub(super) struct Spilled {
    file: File,
    _remove: Remove,
    /// Sealed length and segment table, for the header.
    pub(super) len: u64,
    pub(super) table: Vec<SegmentInfo>,
    /// The blobs other than this snapshot's own that its chunk references use.
    pub(super) used: Vec<String>,
    /// Chunk references in all.
    pub(super) chunks: u64,
}

impl Spilled {
    fn read(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0; usize::try_from(len).map_err(std::io::Error::other)?];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Calls `f` with every chunk reference of the manifest and its blob's path,
    /// read back from the spill file entry by entry.
    pub(super) fn each_ref(
        &self,
        keys: &Keys,
        blob: &BlobId,
        f: &mut dyn FnMut(&str, &ChunkRef),
    ) -> Result<()> {
        let h = Header {
            manifest_len: self.len,
            segments: self.table.len() as u32,
            table: self.table.clone(),
            ..Header::default()
        };
        let damaged = |e| Error::Failed(format!("cannot read back the manifest: {e}"));
        // The spill holds the manifest from offset 0 (the header says so).
        let fetch = |s: &format::Span| self.read(s.offset, s.len);
        let mut entries = format::Entries::open(keys, &blob.path(), &h, fetch).map_err(damaged)?;
        while let Some(e) = entries.next_entry().map_err(damaged)? {
            for c in &e.chunks {
                f(&entries.blobs[c.blob as usize], c);
            }
        }
        if !entries.lost.is_empty() {
            return Err(damaged(format::Error::Malformed("a segment does not open")));
        }
        Ok(())
    }

    /// Appends the sealed manifest to part 0 after the chunks, a piece at a
    /// time; returns where it starts.
    pub(super) fn append(&self, shared: &Shared) -> Result<u64> {
        let mut offset = None;
        let mut at = 0u64;
        // A manifest has at least one segment, so at least one piece.
        while at < self.len || offset.is_none() {
            let n = (self.len - at).min(PIECE as u64);
            let piece = self
                .read(at, n)
                .map_err(|e| Error::Io("cannot read back the manifest".into(), e))?;
            let o = shared.append(None, &piece)?;
            offset.get_or_insert(o);
            at += n;
        }
        Ok(offset.expect("one piece"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SEGMENT_TARGET;

    fn chunk(i: u32, blob: u32) -> ChunkRef {
        ChunkRef::whole([i as u8; 32], blob, u64::from(i) << 20, 1000 + i)
    }

    // A pack's one reference completes every file in it, each with its own
    // slice, in walk order with the entries between them; a pack not back holds
    // its files (and all after them) in the queue.
    #[test]
    fn one_pack_reference_completes_every_file_of_the_pack() {
        let mut order = Order::default();
        let mut packer = packer::Packer::default();
        let packed = |order: &mut Order, packer: &mut packer::Packer, name: &str, n: usize| {
            let seq = order.open(Entry::new(EntryKind::File, name.into()));
            let slice = packer.add(&vec![1u8; n]);
            let mut e = Entry::new(EntryKind::File, name.into());
            e.size = n as u64;
            e.tag = Some([n as u8; 8]);
            order.close_packed(seq, e, slice);
        };
        order.push(Entry::new(EntryKind::Dir, b"/d".to_vec()));
        packed(&mut order, &mut packer, "/d/a", 100);
        let big = order.open(Entry::new(EntryKind::File, b"/d/b".to_vec()));
        let mut b = Entry::new(EntryKind::File, b"/d/b".to_vec());
        b.size = chunk(7, 0).plain_len();
        order.close(big, b, 1);
        packed(&mut order, &mut packer, "/d/c", 50);
        let (first, _) = packer.cut(Vec::new()).unwrap();
        packed(&mut order, &mut packer, "/d/e", 30);
        let (second, _) = packer.cut(Vec::new()).unwrap();
        // A file read again: dropped, its pack slice never taken (the walker packs
        // only a kept read), so nothing of it shows.
        let again = order.open(Entry::new(EntryKind::File, b"/d/f".to_vec()));
        order.drop_entry(again);
        assert_eq!(order.pop().unwrap().path, b"/d");
        assert!(order.pop().is_none());
        let pack = |i: u32| ChunkRef::whole([i as u8; 32], 1, 4096 * u64::from(i), 1000);
        // The second pack and the big file answer first: nothing leaves yet.
        order.done(Done {
            to: To::Pack(second),
            r: Some(pack(2)),
        });
        order.done(Done {
            to: To::File { file: big, n: 0 },
            r: Some(chunk(7, 0)),
        });
        assert!(order.pop().is_none());
        order.done(Done {
            to: To::Pack(first),
            r: Some(pack(1)),
        });
        let out: Vec<Entry> = std::iter::from_fn(|| order.pop()).collect();
        // Path, then each reference's (first id byte, skip, take).
        type Refs<'a> = (&'a [u8], Vec<(u8, u32, u32)>);
        let got: Vec<Refs> = out
            .iter()
            .map(|e| {
                let refs = e.chunks.iter().map(|c| (c.id[0], c.skip, c.take)).collect();
                (e.path.as_slice(), refs)
            })
            .collect();
        assert_eq!(
            got,
            [
                (&b"/d/a"[..], vec![(1, 0, 100)]),
                (b"/d/b", vec![(7, 0, chunk(7, 0).plain_len() as u32)]),
                (b"/d/c", vec![(1, 100, 50)]),
                (b"/d/e", vec![(2, 0, 30)]),
            ]
        );
        assert_eq!(out[2].tag, Some([50; 8]));
        assert_eq!(out[2].chunks[0].offset, 4096);
        assert_eq!(order.len(), 0);
        assert!(order.packs.is_empty());
    }

    // Entries leave the queue in walk order whatever order the workers answer in
    // (a file's chunks too), dropped ones left out, and are cut into exactly the
    // segments a whole manifest of the same entries makes: the streaming path
    // must not change a byte of the format.
    #[test]
    fn streamed_segments_are_the_whole_manifests() {
        let names: Vec<String> = ["own", "parent", "older"].map(String::from).to_vec();
        let mut expected = Vec::new();
        let mut order = Order::default();
        let mut jobs: Vec<Done> = Vec::new();
        let mut out: Vec<Entry> = Vec::new();
        let mut k = 0u32;
        for i in 0..3000u32 {
            let path = format!("/d/{i:05}").into_bytes();
            match i % 5 {
                // A directory: whole at once.
                0 => {
                    let e = Entry::new(EntryKind::Dir, path);
                    order.push(e.clone());
                    expected.push(e);
                }
                // Unchanged, taken from the parent.
                1 => {
                    let mut e = Entry::new(EntryKind::File, path);
                    e.chunks = vec![chunk(i, 1 + i % 2)];
                    e.size = e.chunks[0].plain_len();
                    order.push(e.clone());
                    expected.push(e);
                }
                // Read once, then again (changed while read): the first dropped.
                2 => {
                    let first = order.open(Entry::new(EntryKind::File, path.clone()));
                    jobs.push(Done {
                        to: To::File { file: first, n: 0 },
                        r: Some(chunk(9, 0)),
                    });
                    order.drop_entry(first);
                    let seq = order.open(Entry::new(EntryKind::File, path.clone()));
                    let mut e = Entry::new(EntryKind::File, path);
                    e.mode = 0o644;
                    e.chunks = vec![chunk(k, 0)];
                    e.size = e.chunks[0].plain_len();
                    jobs.push(Done {
                        to: To::File { file: seq, n: 0 },
                        r: Some(chunk(k, 0)),
                    });
                    k += 1;
                    let mut whole = e.clone();
                    whole.chunks.clear();
                    order.close(seq, whole, 1);
                    expected.push(e);
                }
                // Many chunks, some reused from older blobs: every few hundred
                // entries one larger than a segment.
                _ => {
                    let seq = order.open(Entry::new(EntryKind::File, path.clone()));
                    let n = if i % 500 == 3 { 1500 } else { 3 };
                    let mut e = Entry::new(EntryKind::File, path);
                    for c in 0..n {
                        let r = chunk(k, [0, 2, 0][c as usize % 3]);
                        k += 1;
                        e.chunks.push(r);
                        jobs.push(Done {
                            to: To::File { file: seq, n: c },
                            r: Some(r),
                        });
                    }
                    e.size = e.chunks.iter().map(ChunkRef::plain_len).sum();
                    let mut whole = e.clone();
                    whole.chunks.clear();
                    order.close(seq, whole, n);
                    expected.push(e);
                }
            }
            // The workers answer in a scrambled order, a batch at a time.
            if jobs.len() > 40 || i == 2999 {
                let mut batch = std::mem::take(&mut jobs);
                let len = batch.len();
                for j in 0..len {
                    batch.swap(j, (j * 7919 + 13) % len);
                }
                for d in batch.into_iter().rev() {
                    order.done(d);
                    while let Some(e) = order.pop() {
                        out.push(e);
                    }
                }
            }
        }
        assert_eq!(order.len(), 0);
        assert_eq!(out.len(), expected.len());
        let wrong = out.iter().zip(&expected).position(|(a, b)| a != b);
        assert!(wrong.is_none(), "entry {wrong:?} out of order or wrong");

        // Segments, streamed and whole: the same plaintexts.
        let whole = format::Manifest {
            blobs: names.clone(),
            entries: expected,
        };
        let mut want = Vec::new();
        format::manifest_segments(&whole, |p, n, last| {
            want.push((p.to_vec(), n, last));
            Ok::<(), ()>(())
        })
        .unwrap();
        let mut got = Vec::new();
        let mut w = format::SegmentWriter::default();
        for e in &out {
            w.push(
                e,
                |b| names[b as usize].clone(),
                |p, n, last| {
                    got.push((p.to_vec(), n, last));
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
        }
        w.finish(|p, n, last| {
            got.push((p.to_vec(), n, last));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(want.len() > 3);
        assert!(
            want.iter()
                .any(|(p, n, _)| p.len() > SEGMENT_TARGET && *n == 1)
        );
        assert!(
            got == want,
            "streamed segments differ from the whole manifest's"
        );

        // Sealed through the sink's sealer, it reads back as the same entries.
        let keys = Keys::from_key_bytes(b"k");
        let mut sealer = format::ManifestSealer::new(&keys, "d/n/m/t0");
        let mut sealed = Vec::new();
        for e in &out {
            sealer
                .push(
                    e,
                    |b| names[b as usize].clone(),
                    |s| {
                        sealed.extend_from_slice(s);
                        Ok::<(), ()>(())
                    },
                )
                .unwrap();
        }
        let (len, table) = sealer
            .finish(|s| {
                sealed.extend_from_slice(s);
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(len, sealed.len() as u64);
        assert_eq!(table.len(), want.len());
        let h = Header {
            manifest_len: len,
            segments: table.len() as u32,
            table,
            ..Header::default()
        };
        let fetch =
            |s: &format::Span| Ok(sealed[s.offset as usize..(s.offset + s.len) as usize].to_vec());
        let (back, lost) = format::read_manifest(&keys, "d/n/m/t0", &h, fetch).unwrap();
        assert!(lost.is_empty());
        assert_eq!(back.entries.len(), whole.entries.len());
        for (a, b) in back.entries.iter().zip(&whole.entries) {
            assert_eq!((&a.path, a.chunks.len()), (&b.path, b.chunks.len()));
            for (x, y) in a.chunks.iter().zip(&b.chunks) {
                let (xb, yb) = (&back.blobs[x.blob as usize], &names[y.blob as usize]);
                let own = xb == "d/n/m/t0" && yb == "own";
                assert!(own || xb == yb, "{xb} {yb}");
                assert_eq!((x.id, x.offset, x.len), (y.id, y.offset, y.len));
            }
        }
    }
}
