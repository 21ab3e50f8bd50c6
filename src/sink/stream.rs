//! The manifest as the walk makes it, in memory that does not grow with the
//! number of files: entries leave in walk order as soon as their chunks are back.
//!
//! The walker numbers every entry it makes (a file read again or that failed to
//! read gets a new number, the old one is dropped) and queues it in [`Order`]; the
//! workers send each chunk's reference back keyed by entry number and chunk
//! number, in whatever order they finish. An entry is complete once every chunk
//! its read queued is back; complete entries at the head of the queue, dropped
//! ones skipped, go to the [`format::ManifestWriter`], which cuts them into
//! version 3 manifest nodes (segments and the tables above them, see
//! [`crate::format`]) and hands each finished node to [`Stream`]'s `store`:
//! - a node whose id is among the parent snapshot's nodes near the walk's
//!   position ([`NodePlaces`], filled by the parent's reader in `walk`) is not
//!   stored again: its place is the parent's (the parent's blob, or the older blob
//!   a node the parent itself reused lives in). A node's id is the keyed hash of
//!   its plaintext, which holds its chunks' places, so the same id is the same
//!   entries. This is why a snapshot of unchanged files stores almost no manifest;
//! - any other is appended to part 0 exactly as a chunk is, and written at the same
//!   offset into a sparse spill file in the cache directory (`manifest-<mount>`,
//!   created fresh by every run and removed when it ends), from which the check
//!   before the commit reads this run's nodes back ([`Written::each_ref`], see
//!   `guard`) without the store.
//!
//! Complete entries go to the writer [`BURST`] at a time, under one hold of the
//! upload lock ([`Shared::append_run`]), so the nodes they make lie back to back
//! in part 0 between the chunks (the header's root list and the tables say where
//! each is): a reader fetches thousands of entries' nodes in one read, not one
//! read per node between its files' chunks. Nodes are not journaled like chunks
//! (they are not in the chunk index either): a resumed sink writes its manifest
//! again from the walk, and nodes a killed run left in the prefix it keeps are
//! unreferenced bytes, like the chunks of a dropped entry.
//!
//! Memory: one segment and one table node in the writer, the queue of at most
//! [`QUEUE`] entries (past that the walker waits for results, so a fast walk over
//! unchanged files cannot outrun the workers), at most [`BURST`] complete entries,
//! and at most [`NODES`] parent node places (about 100 bytes each). The parent's
//! reader runs at the walk's position and the writer at most [`QUEUE`] +
//! [`BURST`] entries and one table behind it, so a node of the parent that
//! matches is still held when its copy is written. (The parent's reader moves
//! only when a file is looked up: over a long run of directories or symlinks,
//! or at the walk's end, it lags, and nodes there may be stored again.)

use super::*;
use crate::format::{ManifestWriter, NodeRef, Root, Span};
use packer::Slice;
use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::FileExt;
use upload::{Done, To};

/// Entries held before the walker waits for the workers: ~200 KiB. Small files
/// in flight are the open pack's, the queued one's and the workers' (about 4
/// packs of ~100 files), so this is twice what they need; 4,096 let a long run
/// fill the queue now and then, and the peak RSS at 1,000,000 files was 1.5 MiB
/// above that at 50,000 (heaptrack: entries, their references, the queue).
pub(super) const QUEUE: usize = 1024;

/// Complete entries written to the manifest at once, their new nodes appended
/// back to back ([`Shared::append_run`]): a reader then fetches the nodes of
/// thousands of entries in one read, instead of one read per node between the
/// chunks of its files.
pub(super) const BURST: usize = 4096;

/// Parent node places kept for deduplication, oldest dropped first: more than
/// the writer lags behind the parent's reader (a table of at most 1,024
/// segments, and [`QUEUE`] + [`BURST`] entries, about 270 segments of ~30; in
/// all about 1,300 at worst, about 400 with tables of a typical size). About
/// 66 bytes a place (48 in the ring, the rest the B-tree): 135 KiB once a long
/// walk has filled it, so the sink's memory stays flat from 50,000 to 1,000,000
/// files (4,096 places in a B-tree keyed by the whole id, with a queue of ids,
/// took 435 KiB at 1,000,000 files: heaptrack).
pub(super) const NODES: usize = 2048;
const _: () = assert!(NODES <= 1 << 16, "slots are u16");

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

    /// Whether the entry at the head is a file of pack `pack`: the only entry
    /// that completes when that pack's reference comes back.
    pub(super) fn head_in(&self, pack: u64) -> bool {
        self.packs
            .get(&pack)
            .is_some_and(|m| m.first() == Some(&self.head))
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

/// The parent snapshot's nodes near the walk's position: id → place, at most
/// [`NODES`], the oldest dropped first. Filled from the parent's reader
/// ([`format::Entries::take_nodes`]) as the walk's merge reads it.
///
/// The places lie in a ring, found through a B-tree of their slots keyed by 8
/// bytes of the id. A B-tree, not a hash map: it holds what it holds. A `HashMap` that always
/// drops one id for the next leaves a tombstone per removal, and it cleans them
/// by growing: past the first 4,096 nodes it settled at 16,384 buckets (~800 KB,
/// and the old table beside it while it grew), so the sink held 1 MB more at
/// 1,000,000 files than at 50,000, whose manifest never fills it.
#[derive(Default)]
pub(super) struct NodePlaces {
    names: Blobs,
    /// At most [`NODES`] places; once full, `next` is the oldest one's slot.
    ring: Vec<Place>,
    next: usize,
    /// Slots by the first 8 bytes of the id. Ids are keyed hashes, so two ids
    /// sharing them are rare, and harmless: the later one takes the key, the
    /// earlier is not found, and its node is stored again.
    slots: BTreeMap<u64, u16>,
}

struct Place {
    id: ChunkId,
    offset: u64,
    blob: u32,
    len: u32,
}

fn id_key(id: &ChunkId) -> u64 {
    let mut k = [0; 8];
    k.copy_from_slice(&id[..8]);
    u64::from_le_bytes(k)
}

impl NodePlaces {
    /// Adds nodes the parent's reader read. The caller passes only those of a
    /// read that lost nothing: a lost node's copy does not open, and reusing it
    /// would lose the entries of every later snapshot that names it.
    pub(super) fn add(&mut self, nodes: Vec<(String, NodeRef)>) {
        for (path, n) in nodes {
            if self.find(&n.id).is_some() {
                continue;
            }
            let place = Place {
                id: n.id,
                offset: n.offset,
                blob: self.names.index(&path),
                len: n.len,
            };
            let slot = if self.ring.len() < NODES {
                self.ring.push(place);
                self.ring.len() - 1
            } else {
                let slot = self.next;
                let old = id_key(&self.ring[slot].id);
                if self.slots.get(&old) == Some(&(slot as u16)) {
                    self.slots.remove(&old);
                }
                self.ring[slot] = place;
                self.next = (slot + 1) % NODES;
                slot
            };
            self.slots.insert(id_key(&n.id), slot as u16);
        }
    }

    fn find(&self, id: &ChunkId) -> Option<&Place> {
        let &slot = self.slots.get(&id_key(id))?;
        let p = &self.ring[usize::from(slot)];
        (p.id == *id).then_some(p)
    }

    /// Where the parent keeps node `id` of `len` sealed bytes: (blob path, offset).
    fn get(&self, id: &ChunkId, len: usize) -> Option<(&str, u64)> {
        let p = self.find(id)?;
        (p.len as usize == len).then(|| (self.names.names[p.blob as usize].as_str(), p.offset))
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// Removes the spill file when the sink ends, however it ends.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Where the writer's nodes go (see the module docs).
struct Nodes<'a> {
    shared: &'a Shared<'a>,
    own: String,
    parent: &'a Mutex<NodePlaces>,
    spill: File,
    /// The blobs other than `own` that reused nodes live in.
    reused: HashSet<String>,
    /// Where the first node this run stored starts and the last ends.
    first: Option<u64>,
    end: u64,
}

impl Nodes<'_> {
    /// Where node `id` is: the parent's copy, or appended now by `put`.
    fn store(
        &mut self,
        id: &ChunkId,
        sealed: &[u8],
        put: &mut dyn FnMut(&[u8]) -> u64,
    ) -> Result<(String, u64)> {
        if let Some((path, offset)) = self.parent.lock().expect("poisoned").get(id, sealed.len()) {
            if path != self.own && !self.reused.contains(path) {
                self.reused.insert(path.to_string());
            }
            return Ok((path.to_string(), offset));
        }
        let offset = put(sealed);
        self.spill
            .write_all_at(sealed, offset)
            .map_err(|e| Error::Io("cannot write the manifest spill file".into(), e))?;
        self.first.get_or_insert(offset);
        self.end = offset + sealed.len() as u64;
        Ok((self.own.clone(), offset))
    }
}

/// The walk's side of the stream: the queue, the workers' results and the
/// manifest writer.
pub(super) struct Stream<'a> {
    pub(super) order: Order,
    results: Receiver<Done>,
    writer: ManifestWriter<'a>,
    nodes: Nodes<'a>,
    /// Complete entries not yet written (at most [`BURST`]).
    ready: Vec<Entry>,
    remove: Remove,
    blobs: &'a Mutex<(Blobs, HashMap<u32, u32>)>,
    /// Blob table indexes the written entries use.
    used: HashSet<u32>,
    chunks: u64,
    stop: &'a AtomicBool,
    error: Option<Error>,
}

impl<'a> Stream<'a> {
    /// Starts the manifest of `shared`'s blob, its own nodes spilled to
    /// `manifest-<mount>` in `cache_dir` (whatever an earlier run left there is
    /// replaced); `parent` holds the parent's nodes as its reader finds them.
    pub(super) fn new(
        shared: &'a Shared<'a>,
        cache_dir: &Path,
        mount: &str,
        parent: &'a Mutex<NodePlaces>,
        results: Receiver<Done>,
    ) -> Result<Stream<'a>> {
        let path = cache_dir.join(format!("manifest-{mount}"));
        let spill = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::Io(format!("cannot create {}", path.display()), e))?;
        Ok(Stream {
            order: Order::default(),
            results,
            writer: ManifestWriter::new(shared.keys),
            nodes: Nodes {
                shared,
                own: shared.blob.path(),
                parent,
                spill,
                reused: HashSet::new(),
                first: None,
                end: 0,
            },
            ready: Vec::new(),
            remove: Remove(path),
            blobs: &shared.blobs,
            used: HashSet::new(),
            chunks: 0,
            stop: &shared.stop,
            error: None,
        })
    }

    /// Whether adding an entry would wait for a file of pack `open` (the open
    /// one, which then never completes): the walker first sends that pack. Only
    /// the head can hold the queue up, and results taken in hand first may
    /// complete the entries before it.
    pub(super) fn waits_on(&mut self, open: u64) -> bool {
        if self.order.len() < QUEUE {
            return false;
        }
        self.take();
        self.order.len() >= QUEUE && self.order.head_in(open)
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
            if self.error.is_some() {
                continue;
            }
            if !e.consistent() {
                let path = String::from_utf8_lossy(&e.path).into_owned();
                self.fail(Error::Failed(format!(
                    "internal error: the chunks of {path} do not add up to its size"
                )));
                continue;
            }
            self.chunks += e.chunks.len() as u64;
            self.used.extend(e.chunks.iter().map(|c| c.blob));
            self.ready.push(e);
            if self.ready.len() >= BURST {
                self.write();
            }
        }
    }

    /// Writes the entries ready, storing their new nodes back to back.
    fn write(&mut self) {
        if self.error.is_some() || self.ready.is_empty() {
            return;
        }
        let mut ready = std::mem::take(&mut self.ready);
        let blobs = self.blobs;
        let name = |b: u32| blobs.lock().expect("poisoned").0.names[b as usize].clone();
        let (writer, nodes) = (&mut self.writer, &mut self.nodes);
        let shared = nodes.shared;
        let r = shared.append_run(|put| {
            ready.iter().try_for_each(|e| {
                writer.push(e, name, &mut |id, sealed| nodes.store(id, sealed, put))
            })
        });
        if let Err(e) = r.and_then(|r| r) {
            self.fail(e);
        }
        ready.clear();
        self.ready = ready;
    }

    fn fail(&mut self, e: Error) {
        self.error = Some(e);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Once the walk is over and the jobs' queue closed: waits for the workers'
    /// last results, writes the last entries and the last nodes.
    pub(super) fn finish(mut self) -> Result<Written> {
        while let Ok(d) = self.results.recv() {
            self.order.done(d);
            self.write_ready();
        }
        if self.order.len() > 0 && self.error.is_none() {
            self.error = Some(Error::Failed(
                "the sink stopped before every chunk was stored".into(),
            ));
        }
        self.write();
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let nodes = &mut self.nodes;
        let shared = nodes.shared;
        let writer = self.writer;
        let root = shared
            .append_run(|put| writer.finish(&mut |id, sealed| nodes.store(id, sealed, put)))??;
        let names = &self.blobs.lock().expect("poisoned").0.names;
        let mut used: Vec<String> = self
            .used
            .iter()
            .filter(|&&b| b != 0)
            .map(|&b| names[b as usize].clone())
            .chain(self.nodes.reused.iter().cloned())
            .collect();
        crate::sort::sort(&mut used);
        used.dedup();
        Ok(Written {
            spill: self.nodes.spill,
            _remove: self.remove,
            root,
            range: self
                .nodes
                .first
                .map_or((0, 0), |first| (first, self.nodes.end - first)),
            used,
            chunks: self.chunks,
        })
    }
}

/// The manifest, written: its root list, and this run's own nodes in the spill
/// file.
pub(super) struct Written {
    spill: File,
    _remove: Remove,
    pub(super) root: Root,
    /// The range of part 0 holding the nodes this run stored (offset, length;
    /// chunks lie between them), (0, 0) for none: what a version 4 header's
    /// `manifest_offset` and `manifest_len` say.
    range: (u64, u64),
    /// The blobs other than this snapshot's own that its chunk references and
    /// reused nodes use.
    pub(super) used: Vec<String>,
    /// Chunk references in all.
    pub(super) chunks: u64,
}

impl Written {
    /// The range of part 0 holding the nodes this run stored (see the field).
    pub(super) fn range(&self) -> (u64, u64) {
        self.range
    }

    /// Calls `f` with every chunk reference of the manifest and its blob's path,
    /// and with every node it reuses from another blob (as a whole reference of
    /// the node's id, place and sealed length), reading this run's nodes back from
    /// the spill file and the reused ones where they are (as any reader would,
    /// through `resolver`).
    pub(super) fn each_ref(
        &self,
        keys: &Keys,
        remote: &dyn Remote,
        resolver: &crate::pack::Resolver,
        blob: &BlobId,
        f: &mut dyn FnMut(&str, &ChunkRef),
    ) -> Result<()> {
        let mut h = Header::default();
        self.root.set_in(&mut h);
        let own = blob.path();
        let damaged = |e| Error::Failed(format!("cannot read back the manifest: {e}"));
        let fetch = |s: &Span| -> std::io::Result<Vec<u8>> {
            if s.blob != own {
                return crate::snapshot::read_span(remote, resolver, s);
            }
            let len = usize::try_from(s.len).map_err(std::io::Error::other)?;
            let mut buf = vec![0; len];
            self.spill.read_exact_at(&mut buf, s.offset)?;
            Ok(buf)
        };
        let mut entries = format::Entries::open(keys, &own, &h, fetch).map_err(damaged)?;
        loop {
            let e = entries.next_entry().map_err(damaged)?;
            for (path, n) in entries.take_nodes() {
                if path != own {
                    f(&path, &ChunkRef::whole(n.id, 0, n.offset, n.len));
                }
            }
            let Some(e) = e else { break };
            for c in &e.chunks {
                f(&entries.blobs[c.blob as usize], c);
            }
        }
        if !entries.lost.is_empty() {
            return Err(Error::Failed(format!(
                "cannot read back the manifest: {} (a node it reuses was pruned while the sink ran?)",
                entries.lost[0]
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // The head (/d/a) is a file of the first pack, not of the open one.
        assert!(order.head_in(first) && !order.head_in(second) && !order.head_in(packer.number()));
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
    // (a file's chunks too), dropped ones left out; written as version 3 nodes
    // they read back as the same entries, and written again with the first
    // copy's node places at hand (as a sink with its parent) they store nothing
    // and make the same root list: a no-change snapshot's manifest is its
    // parent's.
    #[test]
    fn streamed_entries_read_back_and_dedup_against_the_parent() {
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

        // Written as version 3 nodes to one blob, and read back.
        let keys = Keys::from_key_bytes(b"k");
        let name = |b: u32| names[b as usize].clone();
        let mut part: Vec<u8> = Vec::new();
        let root = {
            let mut store = |_: &ChunkId, sealed: &[u8]| {
                let at = part.len() as u64;
                part.extend_from_slice(sealed);
                Ok::<_, ()>(("d/n/m/t1".to_string(), at))
            };
            let mut w = ManifestWriter::new(&keys);
            for e in &out {
                w.push(e, name, &mut store).unwrap();
            }
            w.finish(&mut store).unwrap()
        };
        assert!(root.segments > 20, "{}", root.segments);
        let mut h = Header::default();
        root.set_in(&mut h);
        let fetch = |s: &Span| {
            assert_eq!(s.blob, "d/n/m/t1");
            Ok(part[s.offset as usize..(s.offset + s.len) as usize].to_vec())
        };
        let mut back = format::Entries::open(&keys, "d/n/m/t2", &h, fetch).unwrap();
        let mut places = NodePlaces::default();
        let mut n = 0;
        while let Some(e) = back.next_entry().unwrap() {
            places.add(back.take_nodes());
            let want = &out[n];
            assert_eq!(
                (&e.path, e.size, e.chunks.len()),
                (&want.path, want.size, want.chunks.len())
            );
            for (x, y) in e.chunks.iter().zip(&want.chunks) {
                assert_eq!(back.blobs[x.blob as usize], names[y.blob as usize]);
                assert_eq!((x.id, x.offset, x.len), (y.id, y.offset, y.len));
            }
            n += 1;
        }
        places.add(back.take_nodes());
        assert_eq!(n, out.len());
        assert!(back.lost.is_empty());
        assert_eq!(places.len() as u64, root.segments + root.nodes.len() as u64);

        // Again, with those places at hand: every node is found, none stored.
        let mut again = |id: &ChunkId, sealed: &[u8]| {
            let (b, o) = places.get(id, sealed.len()).ok_or(())?;
            Ok::<_, ()>((b.to_string(), o))
        };
        let mut w = ManifestWriter::new(&keys);
        for e in &out {
            w.push(e, name, &mut again).unwrap();
        }
        assert_eq!(w.finish(&mut again).unwrap(), root);
    }

    // The parent's places are bounded: past NODES the oldest go first.
    #[test]
    fn node_places_keep_the_newest() {
        let node = |i: u32| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let n = NodeRef {
                id,
                blob: 0,
                offset: u64::from(i) * 100,
                len: 100,
                entries: 1,
            };
            ("d/n/m/t1".to_string(), n)
        };
        let mut p = NodePlaces::default();
        p.add((0..NODES as u32 + 10).map(node).collect());
        assert_eq!(p.len(), NODES);
        assert!(p.get(&node(9).1.id, 100).is_none());
        assert_eq!(p.get(&node(10).1.id, 100), Some(("d/n/m/t1", 1000)));
        assert!(p.get(&node(10).1.id, 99).is_none(), "another length");
        let last = NODES as u32 + 9;
        assert_eq!(
            p.get(&node(last).1.id, 100).unwrap().1,
            u64::from(last) * 100
        );

        // Two ids alike in their first 8 bytes: the later is found, the earlier
        // is not (its node would be stored again), and when the earlier's slot
        // is reused the later stays.
        let twin = |i: u32, last: u8| {
            let (path, mut n) = node(i);
            n.id[31] = last;
            (path, n)
        };
        let mut p = NodePlaces::default();
        p.add(vec![twin(1, 1), twin(1, 2)]);
        assert!(p.get(&twin(1, 1).1.id, 100).is_none());
        assert!(p.get(&twin(1, 2).1.id, 100).is_some());
        p.add((2..NODES as u32 + 1).map(node).collect());
        assert!(
            p.get(&twin(1, 2).1.id, 100).is_some(),
            "slot 0 went, slot 1 stays"
        );
        p.add(vec![node(NODES as u32 + 1)]);
        assert!(p.get(&twin(1, 2).1.id, 100).is_none());
        assert_eq!(p.len(), NODES);
    }
}
