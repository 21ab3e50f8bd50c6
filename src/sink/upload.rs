//! Sealing and sending part 0: the workers take copied chunks from the walker's
//! queue, find or seal each, and append it to the window being filled; whichever
//! worker fills a window uploads it, and every acknowledged window and appended
//! chunk is journaled. The keep-alive thread touches the pending blob while the walk
//! writes nothing (see the `sink` module docs).
//!
//! Memory: the window being filled and at most one full window in flight (an
//! append that would complete another waits until it is sent), in two buffers
//! reused for the whole run (the one sent fills next), the chunk buffers
//! (the queue's, each worker's, the walker's) sized exactly to their chunks, and
//! at most [`STORED_CAP`] records of the chunks stored.

use super::*;
use crate::cache::Place;
use crate::compress::Mode;
use crate::protocol::{MAX_WINDOW, MIN_WINDOW};
use crate::runchunks::RunChunks;

/// How often a walking sink touches its pending blob: far below any sensible prune
/// grace period (default 24h), and one small request a minute is nothing.
pub const KEEPALIVE: Duration = Duration::from_secs(60);

/// The next run's window size from this run's timing: aim at about two seconds a
/// window, doubling or halving at most once a run.
pub fn next_window(window: u64, mean_secs: Option<f64>) -> u64 {
    let w = match mean_secs {
        Some(t) if t < 0.5 => window * 2,
        Some(t) if t > 4.0 => window / 2,
        _ => window,
    };
    w.clamp(MIN_WINDOW, MAX_WINDOW)
}

/// Records of the chunks this run stored kept in memory before they spill to a
/// sorted run (see [`crate::runchunks`]): ~70 KiB, reached after ~1,000 chunks
/// (~256 MB of small files' packs), so a sink's memory is the same at 200,000
/// files as at 1,000,000. The set's default cap (32,768 records, ~2 MiB) was
/// reached only past 4,000,000 small files, and 4,096 (~280 KiB) past ~1 GB, so
/// the sink's peak grew with the files up to there (by 430 and then 170 KiB at
/// 1,000,000: heaptrack). Spills cost little: a few more runs to merge, each
/// record rewritten a few more times (48 bytes), and a few more Bloom filters to
/// probe per lookup (one per doubling: 11 at 1,000,000 chunks, ~1 TB).
pub(super) const STORED_CAP: usize = 1 << 10;

/// One chunk for the workers: its plaintext already copied out of the source (the
/// walker copies it once; the id and the seal both come from that copy).
pub(super) struct Job {
    pub(super) to: To,
    pub(super) chunk: ChunkBuf,
}

/// Whose a chunk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum To {
    /// Chunk `n` of the entry numbered `file` in the walk (see `stream`).
    File { file: u64, n: u32 },
    /// Pack number `n`: small files' bytes, each file a slice (see `packer`).
    Pack(u64),
}

/// What a worker did with a chunk: where it is, or `None` when the sink is
/// stopping (the chunk was not stored).
pub(super) struct Done {
    pub(super) to: To,
    pub(super) r: Option<ChunkRef>,
}

/// This run's part 0 as it is uploaded: the window being filled, the chunks this run
/// stored (in bounded memory, spilled to the cache directory: see
/// [`crate::runchunks`]), and the SHA-256 and storage-challenge answers of every
/// window acknowledged.
pub(super) struct Upload {
    pub(super) window: u64,
    pub(super) buf: Vec<u8>,
    pub(super) next: u64,
    /// Each chunk stored, at its offset in part 0 (`blob` 0), and its length.
    pub(super) stored: RunChunks,
    pub(super) hashes: Vec<Option<[u8; 32]>>,
    /// [`format::CHALLENGES`] answers per window, from the bytes sent.
    pub(super) answers: Vec<format::Answers>,
    pub(super) new_bytes: u64,
    /// A window was handed to the remote (set under this lock before it leaves):
    /// from then on the blob may hold a window this run has not yet seen
    /// acknowledged, so the keep-alive must not re-create it blind (see
    /// [`keep_alive`]).
    pub(super) sending: bool,
    /// Full windows taken out of `buf` and not yet sent (or failed): while
    /// `most_flying` are, no append completes another (see [`Shared::append`]).
    pub(super) flying: u32,
    /// How many full windows may be in flight at once: the remote's
    /// [`Remote::windows_in_flight`], 1 unless set.
    pub(super) most_flying: u32,
    /// Windows sent, emptied (at most `most_flying`): the buffers the next ones
    /// fill. `most_flying + 1` window buffers serve the whole run, their pages
    /// mapped once, not once a window (see [`put`]).
    pub(super) spares: Vec<Vec<u8>>,
}

impl Upload {
    /// Records window `n`'s SHA-256 and answers; windows before it not yet
    /// recorded stay `None` until theirs come.
    fn sent(&mut self, n: u64, hash: [u8; 32], answers: format::Answers) {
        let n = n as usize;
        if self.hashes.len() <= n {
            self.hashes.resize(n + 1, None);
            self.answers.resize(n + 1, Default::default());
        }
        self.hashes[n] = Some(hash);
        self.answers[n] = answers;
    }

    /// A part 0 with nothing sent yet, in windows of `window` bytes.
    pub(super) fn new(window: u64, stored: RunChunks) -> Upload {
        Upload {
            window,
            buf: Vec::new(),
            next: 0,
            stored,
            hashes: Vec::new(),
            answers: Vec::new(),
            new_bytes: 0,
            sending: false,
            flying: 0,
            most_flying: 1,
            spares: Vec::new(),
        }
    }
}

pub(super) struct Shared<'a> {
    pub(super) keys: &'a Keys,
    /// Whether chunks are compressed before sealing.
    pub(super) compression: Mode,
    pub(super) remote: &'a dyn Remote,
    pub(super) blob: BlobId,
    pub(super) upload: Mutex<Upload>,
    /// Signalled when a full window has been sent (`Upload::flying` fell).
    pub(super) landed: Condvar,
    pub(super) cache: &'a ChunkIndex,
    /// Cache blob index → manifest blob index, filled as chunks are found.
    pub(super) blobs: Mutex<(Blobs, HashMap<u32, u32>)>,
    pub(super) journal: Option<Journal>,
    pub(super) failed: Mutex<Option<Error>>,
    pub(super) stop: AtomicBool,
    pub(super) sent: AtomicU64,
    pub(super) reused: AtomicU64,
    /// Full windows uploaded and the microseconds they took, for sizing the next run's.
    pub(super) timed: Mutex<(u64, u64)>,
}

impl Shared<'_> {
    pub(super) fn fail(&self, e: Error) {
        let mut f = self.failed.lock().expect("poisoned");
        if f.is_none() {
            *f = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Where the remote already holds a chunk: stored by this run, or by a
    /// committed snapshot according to the chunk index.
    pub(super) fn known(&self, id: &ChunkId) -> Result<Option<ChunkRef>> {
        let p = self.upload.lock().expect("poisoned");
        if let Some(place) = p.stored.get(id).map_err(runs_failed)? {
            return Ok(Some(ChunkRef::whole_raw(
                *id,
                0,
                place.offset,
                place.len,
                place.raw,
            )));
        }
        drop(p);
        let Some(place) = self
            .cache
            .get(id)
            .map_err(|e| Error::Io("cannot read the chunk cache".into(), e))?
        else {
            return Ok(None);
        };
        let mut b = self.blobs.lock().expect("poisoned");
        let (table, map) = &mut *b;
        let blob = match map.get(&place.blob) {
            Some(&i) => i,
            None => {
                let name = &self.cache.blobs[place.blob as usize];
                let i = table.index(name);
                map.insert(place.blob, i);
                i
            }
        };
        let r = ChunkRef::whole_raw(*id, blob, place.offset, place.len, place.raw);
        self.reused.fetch_add(r.plain_len(), Ordering::Relaxed);
        Ok(Some(r))
    }

    /// Appends sealed bytes to part 0; uploads every window this completes.
    /// Returns where the bytes start. With `id`, a chunk another worker stored
    /// meanwhile is not stored twice; `raw` is its [`ChunkRef::raw`].
    ///
    /// Memory: bytes that would complete a window wait while
    /// [`Upload::most_flying`] full windows are in flight, so at most the window
    /// being filled and that many full ones are held however long the run. One
    /// for a local store: its write is local work, and two workers sending at
    /// once held three buffers for no gain in time, a peak a long run met more
    /// often than a short one. Two over HTTP, where each window waits on a round
    /// trip to the server (see [`Remote::windows_in_flight`]).
    pub(super) fn append(&self, id: Option<ChunkId>, raw: u32, sealed: &[u8]) -> Result<u64> {
        let mut full = Vec::new();
        let offset = {
            let mut p = self.upload.lock().expect("poisoned");
            loop {
                if let Some(id) = id {
                    if let Some(place) = p.stored.get(&id).map_err(runs_failed)? {
                        return Ok(place.offset);
                    }
                }
                if !completes(&p, sealed.len()) {
                    break;
                }
                // Waited: another worker may have stored this chunk meanwhile.
                p = self.landed.wait(p).expect("poisoned");
            }
            let offset = p.next * p.window + p.buf.len() as u64;
            if let Some(id) = id {
                let len = sealed.len() as u32;
                let place = Place {
                    blob: 0,
                    offset,
                    len,
                    raw,
                };
                p.stored.insert(id, place).map_err(runs_failed)?;
                p.new_bytes += sealed.len() as u64;
                if let Some(j) = &self.journal {
                    j.chunk(&id, &place);
                }
            }
            put(&mut p, sealed, &mut full);
            offset
        };
        self.send_full(full)?;
        Ok(offset)
    }

    /// Appends, back to back under one hold of the lock, every object `f` hands
    /// the `put` it is given (which returns where each starts), then uploads the
    /// windows they completed. No chunk lands between them: the manifest's nodes
    /// go this way, so a reader fetches many in one read (see `stream`). Waits as
    /// [`Self::append`] does, but only until the run completes a window itself
    /// (which it sends only once the lock is released).
    pub(super) fn append_run<T>(
        &self,
        f: impl FnOnce(&mut dyn FnMut(&[u8]) -> u64) -> T,
    ) -> Result<T> {
        let mut full = Vec::new();
        let r = {
            let mut held = Some(self.upload.lock().expect("poisoned"));
            f(&mut |sealed: &[u8]| {
                let mut p = held.take().expect("held between calls");
                if full.is_empty() {
                    p = self
                        .landed
                        .wait_while(p, |p| completes(p, sealed.len()))
                        .expect("poisoned");
                }
                let offset = p.next * p.window + p.buf.len() as u64;
                put(&mut p, sealed, &mut full);
                held = Some(p);
                offset
            })
        };
        self.send_full(full)?;
        Ok(r)
    }

    /// Sends the full windows an append took out of the buffer, in order; each,
    /// sent or failed, leaves the count in flight and wakes the appends waiting.
    fn send_full(&self, full: Vec<(u64, Vec<u8>)>) -> Result<()> {
        let mut r = Ok(());
        for (n, mut data) in full {
            if r.is_ok() {
                r = self.send_window(n, &data).map(|_| ());
            }
            data.clear();
            let mut p = self.upload.lock().expect("poisoned");
            p.flying -= 1;
            if p.spares.len() < p.most_flying as usize && data.capacity() == p.window as usize {
                p.spares.push(data);
            }
            drop(p);
            self.landed.notify_all();
        }
        r
    }

    /// Sends window `n`; returns the SHA-256 the store acknowledged it with.
    pub(super) fn send_window(&self, n: u64, data: &[u8]) -> Result<[u8; 32]> {
        let window = {
            let mut p = self.upload.lock().expect("poisoned");
            p.sending = true;
            p.window
        };
        // From the bytes in hand, before they leave: the store must keep them to
        // answer these later.
        let answers: format::Answers =
            format::window_answers(self.keys, &self.blob.path(), n as u32, data);
        let started = Instant::now();
        let hash = self
            .remote
            .put_window(&self.blob, window, n, data)
            .map_err(|e| checked_lost(self.remote, &self.blob, e))?;
        if data.len() as u64 == window {
            let mut t = self.timed.lock().expect("poisoned");
            t.0 += 1;
            t.1 += started.elapsed().as_micros() as u64;
        }
        self.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        if let (Some(j), true) = (&self.journal, data.len() as u64 == window) {
            j.window(n, &hash, &answers);
        }
        self.upload.lock().expect("poisoned").sent(n, hash, answers);
        Ok(hash)
    }

    /// Takes the last, short window out of the buffer, unsent: returns its number,
    /// its bytes (empty if part 0 ends on a window boundary) and part 0's size.
    /// Its SHA-256 and answers are recorded from the bytes in hand, so the final
    /// index can be sealed and journaled before the window leaves (see
    /// [`crate::cache`]).
    pub(super) fn take_tail(&self) -> (u64, Vec<u8>, u64) {
        let mut p = self.upload.lock().expect("poisoned");
        let size = p.next * p.window + p.buf.len() as u64;
        let (n, data) = (p.next, std::mem::take(&mut p.buf));
        p.spares = Vec::new();
        if !data.is_empty() {
            let answers = format::window_answers(self.keys, &self.blob.path(), n as u32, &data);
            p.sent(n, crate::crypto::sha256(&data), answers);
        }
        (n, data, size)
    }

    /// Sends the tail [`Self::take_tail`] took; the store must acknowledge the very
    /// bytes whose SHA-256 the sealed header already holds.
    pub(super) fn send_tail(&self, n: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let want = crate::crypto::sha256(data);
        let got = self.send_window(n, data)?;
        if got != want {
            return Err(Error::Failed(format!(
                "{} acknowledged window {n} of {} with another SHA-256 than the bytes sent; nothing was committed",
                self.remote.describe(),
                self.blob.path()
            )));
        }
        Ok(())
    }
}

/// Whether appending `len` bytes would complete a window while as many full
/// windows as may be are still in flight.
fn completes(p: &Upload, len: usize) -> bool {
    p.flying >= p.most_flying && p.buf.len() as u64 + len as u64 >= p.window
}

/// Adds `sealed` to the window being filled; a window it fills goes to `full`
/// (number, bytes), to be sent once the lock is released, and one sent before
/// (`spares`) takes its place. So the run's window memory is at most
/// `most_flying + 1` buffers, reused whatever its length: a run that met a slow
/// write while the next window filled held them all full then anyway, and one
/// that did not mapped (and the kernel zeroed) a fresh 2 MiB for every window.
fn put(p: &mut Upload, sealed: &[u8], full: &mut Vec<(u64, Vec<u8>)>) {
    let mut src = sealed;
    while !src.is_empty() {
        let room = p.window as usize - p.buf.len();
        let take = room.min(src.len());
        p.buf.extend_from_slice(&src[..take]);
        src = &src[take..];
        if p.buf.len() as u64 == p.window {
            let n = p.next;
            p.next += 1;
            let cap = p.window as usize;
            p.flying += 1;
            let next = p.spares.pop().unwrap_or_else(|| Vec::with_capacity(cap));
            full.push((n, std::mem::replace(&mut p.buf, next)));
        }
    }
}

/// The error of a sink that cannot keep its list of the chunks it stored.
pub(super) fn runs_failed(e: std::io::Error) -> Error {
    Error::Io(
        "cannot keep this sink's list of chunks stored in the cache directory".into(),
        e,
    )
}

/// Touches the pending blob every `period` until `stop` closes (see "Kept alive" in
/// the module docs). A touch that fails is tried again at the next tick; a blob
/// found gone fails the sink.
pub(super) fn keep_alive(shared: &Shared, index: &Index, period: Duration, stop: Receiver<()>) {
    let mut warned = false;
    while stop.recv_timeout(period) == Err(RecvTimeoutError::Timeout) {
        let p = shared.upload.lock().expect("poisoned");
        let window = p.window;
        let first = p
            .hashes
            .iter()
            .enumerate()
            .find_map(|(n, h)| h.map(|h| (window, n as u64, h)));
        let touched = match first {
            Some(_) => {
                drop(p);
                touch(shared.remote, &shared.blob, index, first)
            }
            // A window left and is not acknowledged yet: the store may hold it
            // already (its writer stopped, say, between the store's answer and its
            // record here), and a blob a prune deleted meanwhile must not come back
            // without it. Its write keeps the blob alive; the next tick checks it.
            None if p.sending => continue,
            // Nothing sent: re-creating a deleted blob loses nothing, and no window
            // leaves while the lock is held (`send_window` takes it first).
            None => {
                let r = touch(shared.remote, &shared.blob, index, None);
                drop(p);
                r
            }
        };
        match touched {
            Ok(true) => {}
            Ok(false) => {
                shared.fail(lost(shared.remote, &shared.blob));
                return;
            }
            Err(e) if !warned => {
                warned = true;
                eprintln!("chute sink: warning: cannot keep the upload alive, will retry: {e}");
            }
            Err(_) => {}
        }
    }
}

/// One touch of the pending `blob`: re-POSTs its pending `index`, once `first`, a
/// window acknowledged earlier (window size, number, SHA-256), is confirmed still
/// there. Returns false if that window (so the blob) is gone: before the re-POST,
/// touching nothing; after it (a prune deleted the blob between the check and the
/// re-POST, which brought back its directory without its windows), removing what
/// the re-POST brought back, where the remote lets it. With no window sent yet
/// (the caller makes sure none leaves meanwhile), re-creating a deleted blob loses
/// nothing.
pub(super) fn touch(
    remote: &dyn Remote,
    blob: &BlobId,
    index: &Index,
    first: Option<(u64, u64, [u8; 32])>,
) -> remote::Result<bool> {
    let there = |(window, n, hash): (u64, u64, [u8; 32])| match remote.window_hash(blob, window, n)
    {
        Ok(Some(h)) => Ok(h == hash),
        Ok(None) => Ok(false),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    if let Some(first) = first {
        if !there(first)? {
            return Ok(false);
        }
    }
    remote.create(index)?;
    if let Some(first) = first {
        if !there(first)? {
            // Revived empty by this touch: nothing of this run's upload is in it.
            let _ = remote.delete(blob);
            return Ok(false);
        }
    }
    Ok(true)
}

/// The error of a sink whose pending blob was deleted under it.
pub(super) fn lost(remote: &dyn Remote, blob: &BlobId) -> Error {
    Error::Failed(format!(
        "upload {} is gone from {}: a prune deleted it after this sink wrote nothing for a whole grace period (was the sink stopped or suspended?); nothing was committed, run the sink again",
        blob.path(),
        remote.describe()
    ))
}

/// `e`, a failed write or commit of `blob`, as [`lost`] if the remote no longer
/// holds the blob at all (pending, committed or forgotten): a bare "not found" (or,
/// from a local store, a window that could not be renamed into a vanished
/// directory) would not say why.
pub(super) fn checked_lost(remote: &dyn Remote, blob: &BlobId, e: remote::Error) -> Error {
    if e.kind == ErrorKind::Unavailable {
        return e.into();
    }
    let gone = remote
        .list_uncommitted(&blob.domain, &blob.node)
        .is_ok_and(|l| {
            !l.iter()
                .any(|u| u.id == *blob && u.state != BlobState::Orphan)
        })
        && remote
            .index(blob)
            .is_err_and(|e| e.kind == ErrorKind::NotFound);
    if gone { lost(remote, blob) } else { e.into() }
}

pub(super) fn worker(
    shared: &Shared,
    jobs: &Mutex<Receiver<Job>>,
    spare: &Sender<Vec<u8>>,
    results: &Sender<Done>,
) {
    // This worker's compression buffer, reused for every chunk it seals.
    let mut scratch = Vec::new();
    loop {
        let job = match jobs.lock().expect("poisoned").recv() {
            Ok(j) => j,
            Err(_) => break,
        };
        let Job { to, mut chunk } = job;
        // Stopping, only drain the queue, so the walker never blocks; `None`
        // still wakes a walker waiting for results.
        let mut r = None;
        if !shared.stop.load(Ordering::Relaxed) {
            match store_chunk(shared, &mut chunk, &mut scratch) {
                Ok(c) => r = Some(c),
                Err(e) => shared.fail(e),
            }
        }
        let _ = spare.send(chunk.into_vec());
        // The walker is gone only once the sink failed.
        let _ = results.send(Done { to, r });
    }
}

/// Where the remote holds the chunk in `chunk`: where it already was, or where it
/// is appended now, sealed from the very copy its id was computed from.
pub(super) fn store_chunk(
    shared: &Shared,
    chunk: &mut ChunkBuf,
    scratch: &mut Vec<u8>,
) -> Result<ChunkRef> {
    let id = shared.keys.chunk_buf_id(chunk);
    testhooks::rewrite_source();
    if let Some(r) = shared.known(&id)? {
        return Ok(r);
    }
    let (sealed, raw) = shared.keys.seal_chunk(chunk, shared.compression, scratch);
    let offset = shared.append(Some(id), raw, sealed)?;
    Ok(ChunkRef::whole_raw(id, 0, offset, sealed.len() as u32, raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::Uncommitted;

    #[test]
    fn windows_follow_the_link() {
        assert_eq!(next_window(2 << 20, Some(0.1)), 4 << 20);
        assert_eq!(next_window(4 << 20, Some(0.1)), 4 << 20);
        assert_eq!(next_window(4 << 20, Some(9.0)), 2 << 20);
        assert_eq!(next_window(1 << 20, Some(9.0)), 1 << 20);
        assert_eq!(next_window(4 << 20, Some(2.0)), 4 << 20);
        assert_eq!(next_window(4 << 20, None), 4 << 20);
    }

    // Two window buffers serve a whole run: the one sent comes back as the next
    // one filled, its pages already mapped.
    #[test]
    fn a_sent_window_buffer_fills_the_next_window() {
        let (dir, _) = crate::remote::LocalRemote::fresh("spare-window");
        let mut p = Upload::new(8, RunChunks::new(&dir.join("runs"), 4, true));
        p.buf = Vec::with_capacity(8);
        let mut full = Vec::new();
        put(&mut p, b"0123456789", &mut full);
        assert_eq!(full.len(), 1);
        assert_eq!((full[0].0, &full[0].1[..]), (0, &b"01234567"[..]));
        assert_eq!((p.next, p.flying, &p.buf[..]), (1, 1, &b"89"[..]));
        // Sent: emptied and kept, as `send_full` does.
        let (_, mut sent) = full.pop().unwrap();
        let pages = sent.as_ptr();
        sent.clear();
        p.flying -= 1;
        p.spares.push(sent);
        put(&mut p, b"abcdefghij", &mut full);
        assert_eq!(&full[0].1[..], b"89abcdef");
        assert_eq!(
            p.buf.as_ptr(),
            pages,
            "the sent window's buffer is filled again"
        );
        assert_eq!((&p.buf[..], p.buf.capacity()), (&b"ghij"[..], 8));
        assert!(p.spares.is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    // Over HTTP two full windows may be in flight: a third waits, and both
    // buffers come back to be filled again.
    #[test]
    fn windows_wait_only_while_as_many_as_may_be_are_in_flight() {
        let (dir, _) = crate::remote::LocalRemote::fresh("two-flying");
        let mut p = Upload::new(4, RunChunks::new(&dir.join("runs"), 4, true));
        let mut full = Vec::new();
        put(&mut p, b"0123", &mut full);
        assert!(completes(&p, 4), "one in flight: a local store's most");
        p.most_flying = 2;
        assert!(!completes(&p, 4), "one in flight of two");
        put(&mut p, b"4567", &mut full);
        assert!(completes(&p, 4), "two in flight: the next window waits");
        assert!(!completes(&p, 3), "bytes that complete none never wait");
        for (_, mut sent) in full.drain(..) {
            sent.clear();
            p.flying -= 1;
            if p.spares.len() < p.most_flying as usize {
                p.spares.push(sent);
            }
        }
        assert_eq!(p.spares.len(), 2, "both sent buffers kept");
        put(&mut p, b"89ab", &mut full);
        assert_eq!((p.spares.len(), &full[0].1[..]), (1, &b"89ab"[..]));
        fs::remove_dir_all(dir).unwrap();
    }

    // A sink that wrote no window for a grace period lost its pending blob to a
    // concurrent prune; the touch restarts the store's idle time, and must never
    // bring back (windowless) a blob that was deleted.
    #[test]
    fn a_touch_keeps_a_pending_blob_alive_and_never_revives_a_deleted_one() {
        let (dir, remote) = crate::remote::LocalRemote::fresh("touch");
        let mut index = Index {
            version: u32::from(format::VERSION),
            domain: "d.org".into(),
            node: "pi".into(),
            mount: "m1".into(),
            timestamp: "t1".into(),
            parent: None,
            size: None,
            sealed: None,
        };
        let blob = remote.create(&index).unwrap();
        let hash = remote.put_window(&blob, 64, 0, b"window zero").unwrap();
        let first = Some((64, 0, hash));
        let idle = || remote.list_uncommitted("d.org", "pi").unwrap()[0].idle;
        // Age the blob by an hour, as a sink slow between windows would.
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let blob_dir = dir.join(blob.path());
        for d in [blob_dir.clone(), blob_dir.join("0")] {
            for e in fs::read_dir(&d).unwrap() {
                let f = File::open(e.unwrap().path()).unwrap();
                f.set_modified(hour_ago).unwrap();
            }
        }
        assert!(idle() >= 3600, "{}", idle());
        assert!(touch(&remote, &blob, &index, first).unwrap());
        assert!(idle() < 60, "{}", idle());

        remote.delete(&blob).unwrap();
        assert!(!touch(&remote, &blob, &index, first).unwrap());
        assert!(remote.list_uncommitted("d.org", "pi").unwrap().is_empty());
        let e = remote.put_window(&blob, 64, 1, b"window one").unwrap_err();
        let msg = checked_lost(&remote, &blob, e).to_string();
        assert!(msg.contains("upload d.org/pi/m1/t1 is gone"), "{msg}");
        // Other failures keep their own message.
        let e = remote::Error::new(ErrorKind::Unavailable, "link down");
        assert_eq!(checked_lost(&remote, &blob, e).to_string(), "link down");

        // A committed blob is never touched: the re-POST is refused.
        let blob = remote.create(&index).unwrap();
        remote.put_window(&blob, 64, 0, b"window zero").unwrap();
        index.size = Some(11);
        remote.commit(&blob, &index).unwrap();
        index.size = None;
        assert!(touch(&remote, &blob, &index, first).is_err());
        assert_eq!(remote.index(&blob).unwrap().size, Some(11));
        // Nor is a refusal about a blob that is still there called a loss.
        let e = remote.put_window(&blob, 64, 1, b"window one").unwrap_err();
        let msg = checked_lost(&remote, &blob, e).to_string();
        assert!(msg.contains("committed"), "{msg}");
        fs::remove_dir_all(dir).unwrap();
    }

    /// A local store whose `put_window` stores the window, then waits on `go`
    /// before it answers: a sink stopped between the store's acknowledgement and
    /// its own record of it.
    struct Held {
        inner: crate::remote::LocalRemote,
        stored: Mutex<Option<Sender<()>>>,
        go: Mutex<Receiver<()>>,
    }

    impl Remote for Held {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn create(&self, index: &Index) -> remote::Result<BlobId> {
            self.inner.create(index)
        }
        fn put_window(&self, id: &BlobId, w: u64, n: u64, data: &[u8]) -> remote::Result<[u8; 32]> {
            let r = self.inner.put_window(id, w, n, data);
            if let Some(stored) = self.stored.lock().unwrap().take() {
                stored.send(()).unwrap();
                self.go.lock().unwrap().recv().unwrap();
            }
            r
        }
        fn window_hash(&self, id: &BlobId, w: u64, n: u64) -> remote::Result<Option<[u8; 32]>> {
            self.inner.window_hash(id, w, n)
        }
        fn challenge(
            &self,
            id: &BlobId,
            w: u64,
            n: u64,
            nonce: &crate::crypto::ChallengeNonce,
        ) -> remote::Result<Option<[u8; 16]>> {
            self.inner.challenge(id, w, n, nonce)
        }
        fn read(&self, id: &BlobId, offset: u64, len: u64) -> remote::Result<Vec<u8>> {
            self.inner.read(id, offset, len)
        }
        fn commit(&self, id: &BlobId, index: &Index) -> remote::Result<()> {
            self.inner.commit(id, index)
        }
        fn index(&self, id: &BlobId) -> remote::Result<Index> {
            self.inner.index(id)
        }
        fn list(&self, domain: &str, node: &str) -> remote::Result<Vec<BlobId>> {
            self.inner.list(domain, node)
        }
        fn delete(&self, id: &BlobId) -> remote::Result<()> {
            self.inner.delete(id)
        }
        fn forget(&self, id: &BlobId) -> remote::Result<()> {
            self.inner.forget(id)
        }
        fn forgotten_index(&self, id: &BlobId) -> remote::Result<Index> {
            self.inner.forgotten_index(id)
        }
        fn trim(&self, id: &BlobId, w: u64, n: u64) -> remote::Result<()> {
            self.inner.trim(id, w, n)
        }
        fn list_uncommitted(&self, domain: &str, node: &str) -> remote::Result<Vec<Uncommitted>> {
            self.inner.list_uncommitted(domain, node)
        }
    }

    // Flaky in maintenance::a_stopped_sink_loses_its_upload_and_says_so under load:
    // a sink stopped after the store took its first window but before it recorded
    // the acknowledgement had, to its keep-alive, "no window yet", so on SIGCONT
    // the keep-alive re-created the blob a prune had deleted meanwhile (directory
    // and pending index, no windows); the sink then sent its tail into it and
    // failed at the commit with "part 0 is written without gaps up to byte 0",
    // not with the line saying its upload was pruned.
    #[test]
    fn a_touch_never_revives_a_blob_whose_first_window_is_unacknowledged() {
        let (dir, inner) = crate::remote::LocalRemote::fresh("held");
        let (stored_tx, stored) = channel();
        let (go, go_rx) = channel();
        let remote = Held {
            inner,
            stored: Mutex::new(Some(stored_tx)),
            go: Mutex::new(go_rx),
        };
        let index = Index {
            version: u32::from(format::VERSION),
            domain: "d.org".into(),
            node: "pi".into(),
            mount: "m1".into(),
            timestamp: "t1".into(),
            parent: None,
            size: None,
            sealed: None,
        };
        let blob = remote.create(&index).unwrap();
        let keys = Keys::from_key_bytes(b"a test key");
        let cache = ChunkIndex::open(&dir.join("no-cache"));
        let blobs = Blobs::default();
        let shared = Shared {
            keys: &keys,
            compression: Mode::Auto,
            remote: &remote,
            blob: blob.clone(),
            upload: Mutex::new(Upload::new(
                64,
                RunChunks::new(&dir.join("runs-m"), 4, true),
            )),
            landed: Condvar::new(),
            cache: &cache,
            blobs: Mutex::new((blobs, HashMap::new())),
            journal: None,
            failed: Mutex::new(None),
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            timed: Mutex::new((0, 0)),
        };
        let pending = || remote.list_uncommitted("d.org", "pi").unwrap();
        let revived = std::thread::scope(|s| {
            let sender = s.spawn(|| shared.send_window(0, &[7u8; 64]));
            // The store holds window 0; the sink has not seen its answer. A prune
            // deletes the blob.
            stored.recv().unwrap();
            remote.delete(&blob).unwrap();
            // Many keep-alive periods pass before the sink goes on.
            let (alive, stop) = channel::<()>();
            let toucher = s.spawn(|| keep_alive(&shared, &index, Duration::from_millis(1), stop));
            std::thread::sleep(Duration::from_millis(300));
            let revived = !pending().is_empty();
            go.send(()).unwrap();
            let sent = sender.join().unwrap();
            // Now acknowledged, the window is found gone: the sink fails, saying why.
            let until = Instant::now() + Duration::from_secs(10);
            while !shared.stop.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(alive);
            toucher.join().unwrap();
            assert!(sent.is_ok(), "{:?}", sent.err());
            revived
        });
        assert!(!revived, "a touch revived the deleted blob");
        assert!(pending().is_empty(), "a touch revived the deleted blob");
        let e = shared
            .failed
            .lock()
            .unwrap()
            .take()
            .expect("the sink failed");
        assert!(
            e.to_string().contains("upload d.org/pi/m1/t1 is gone"),
            "{e}"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
