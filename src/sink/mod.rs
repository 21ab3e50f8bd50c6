//! `chute sink`: walk the sources, cut files into chunks, seal them, upload part 0
//! in windows, then commit the index that makes the snapshot visible.
//!
//! Threads: the calling thread walks the tree and chunks each file through a
//! bounded memory map ([`walk::MAP_WINDOW`] bytes at a time, so peak RSS does not grow with
//! file size); `threads` workers take chunks from a bounded queue, compute the keyed
//! chunk id, seal, and append to the shared window buffer; whichever worker fills a
//! window uploads it.
//!
//! Incremental: a file whose size, mtime, ctime, device and inode match the
//! previous snapshot of the same paths (the parent) is not read at all; its chunk
//! list is reused. Every other chunk is looked up by its keyed id, first among this
//! run's chunks, then in the local chunk index ([`crate::cache`]) of everything the
//! remote's committed snapshots hold; only unknown chunks are sealed and sent. The
//! index is rebuilt from the remote's sealed manifests when it is missing or stale.
//!
//! Resumable: every acknowledged window and every appended chunk is journaled, and
//! once every full window is acknowledged, the final index (sealed, with the last
//! window's hash computed from the bytes in hand) and those bytes, the short last
//! window, are journaled and fsynced *before* that window is sent (see
//! [`crate::cache`]). So a sink killed at any point from its first window to its
//! commit, run again, either completes the killed snapshot (every window the
//! sealed header names is on the remote with its hash, the last one sent from the
//! journal if it is not, and every chunk reused from other blobs still used by a
//! committed snapshot: then the index is committed, nothing else resent) or
//! continues the same blob (the journaled windows re-checked with the remote's
//! window hashes, the longest verified prefix of part 0 and the chunks inside it
//! kept, the rest sent). Neither trusts the journal over the remote, and no
//! snapshot is committed before every window it names is acknowledged with the
//! hash its header holds. Only when neither holds (the store lost windows, a prune
//! took a reused chunk, the cache was lost) is a new blob started. One sink of a
//! set of paths runs at a time (a lock in the cache directory).
//!
//! Interrupted: from the lock on until the commit, SIGINT or SIGTERM ends the sink
//! at once from a watcher thread ([`Interrupt`]), as a kill would (what the journal
//! holds is kept), saying on stderr that nothing was committed and that the same
//! sink run again resumes, with exit status 1. The commit itself and what follows
//! it get the signals' default action back.
//!
//! Nothing is visible until the final index is committed, after every window was
//! acknowledged; the commit makes them all durable first (see [`crate::store`]): an
//! interrupted sink leaves an uncommitted blob that no `list` or `restore` ever shows.
//!
//! Kept alive: `chute prune` deletes a pending blob the store has seen idle (no
//! write) for its grace period, and a sink may write no window for that long (a
//! slow walk over a huge unchanged tree, a read stuck on a failing disk). So while
//! it walks, a keep-alive thread re-POSTs the blob's pending index every
//! [`upload::KEEPALIVE`]: the same request that created it, idempotent for a pending blob
//! (the store rewrites `index.pending.json`, which restarts its idle time), refused
//! for a committed one, not a delete (append-only peers accept it), and signed like
//! every request. The thread dies with the process and stops with the walk (what
//! follows, the manifest and the last windows, writes anyway), so an abandoned
//! upload is still reclaimed. Before each touch it checks that the first window
//! acknowledged is still there, since re-creating a blob a prune deleted would bring
//! back its directory but not its windows. A sink stopped for longer than the grace
//! period (SIGSTOP, a suspended laptop) can still lose its blob: its next window,
//! touch or commit then fails with one line saying so, and nothing is committed.
//!
//! Memory does not grow with the number of files: the walker hands every entry
//! to `stream`, a bounded queue the workers' chunk references complete (out of
//! order), whose head leaves in walk order into the version 3 manifest: its
//! nodes are appended to part 0 between the chunks as they are cut, except
//! those the parent snapshot already holds, which are referred to where they
//! are (a snapshot of unchanged files stores almost no manifest). The header's
//! root list says where the manifest's table nodes are.
//!
//! Small files (under [`chunker::MIN`]) share chunks, *packs*, once the manifest
//! written holds slices of chunks (version 3): each such file is one slice of a
//! pack, which the workers store like any chunk; one reference back completes
//! every file in it (see `packer`).
//!
//! Layout: this file holds [`run`], the pipeline in named steps; `walk` reads the
//! tree and queues chunks (with the parent merge), `packer` cuts small files'
//! bytes into packs, `upload` seals them and sends
//! part 0 in windows (with the keep-alive), `stream` turns the entries into the
//! manifest as they complete, `resume` continues or completes a killed sink, and
//! `guard` refuses to commit a snapshot whose reused chunks were pruned meanwhile.

mod guard;
mod packer;
mod resume;
mod stream;
mod upload;
mod walk;

pub use crate::progress::{LINE_EVERY, Show as ShowProgress};
use guard::reused_still_there;
use resume::{complete_killed, resume, sync_cache};
use stream::{NodePlaces, Stream};
use upload::{Done, Job, Shared, To, Upload, checked_lost, keep_alive, worker};
pub use upload::{KEEPALIVE, next_window};
pub use walk::{MAP_WINDOW, READ_TRIES, normalize_roots, walk_order};
use walk::{Parent, Walker};

use crate::blob::{BlobId, BlobState, Table as Blobs};
use crate::cache::{ChunkIndex, Journal};
use crate::chunker::{self, Chunker};
use crate::crypto::{ChunkBuf, ChunkId, Keys};
use crate::format::{self, ChunkRef, Entry, EntryKind, Header, Index};
use crate::pack::Resolver;
use crate::remote::{self, ErrorKind, Remote};
use crate::snapshot::{self, Snapshot};
use crate::testhooks;
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, channel, sync_channel};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What to back up and where.
pub struct Options {
    pub roots: Vec<PathBuf>,
    pub excludes: Vec<String>,
    pub domain: String,
    pub node: String,
    pub host: String,
    pub threads: usize,
    pub window: u64,
    pub progress: ShowProgress,
    /// Print each file read (new or changed since the parent) on stdout.
    pub verbose: bool,
    /// Say nothing on stderr that is not a failure (paths left out on purpose).
    pub quiet: bool,
    /// Where the chunk index, journal and lock live.
    pub cache_dir: PathBuf,
    /// Take the store's view of the chain even if it rolled back (see [`crate::chain`]).
    pub accept_rollback: bool,
    /// Leave out directories tagged with a `CACHEDIR.TAG` (see `walk`).
    pub exclude_caches: bool,
    /// Stay on each root's file system (see `walk`).
    pub one_file_system: bool,
    /// This backup's own files, each with the reason it is never backed up (a
    /// local store, the cache root, the key file); matched by device and inode
    /// once the cache directory exists, absent ones ignored.
    pub own: Vec<(PathBuf, &'static str)>,
    /// Tags sealed in the snapshot's header (checked by the caller, see
    /// [`format::check_tag`]).
    pub tags: Vec<String>,
    /// Whether chunks are compressed before sealing ([`crate::compress`]).
    pub compression: crate::compress::Mode,
    /// Whether roots are read from a file system snapshot ([`crate::fssnap`]).
    pub fs_snapshot: crate::fssnap::Mode,
}

/// What a sink did.
#[derive(Debug, Default)]
pub struct Report {
    pub short_id: String,
    pub blob: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_bytes: u64,
    /// Files whose chunk lists came from the parent without reading them.
    pub unchanged_files: u64,
    pub unchanged_bytes: u64,
    /// Plaintext bytes of chunks the remote already held.
    pub reused_bytes: u64,
    pub sent: u64,
    /// Bytes of part 0 a resumed sink found already uploaded.
    pub resumed: u64,
    /// The window size used, and the mean seconds one full window took to upload.
    pub window: u64,
    pub window_secs: Option<f64>,
    pub skipped: Vec<String>,
    /// Roots that were missing or could not be read (said on stderr, with why):
    /// the snapshot holds the others.
    pub missing: Vec<String>,
    /// Files that kept changing while they were read (see [`READ_TRIES`]): saved
    /// as last read, which may mix versions.
    pub changed: Vec<String>,
    pub secs: f64,
}

/// Runs a sink and commits the snapshot.
pub fn run(keys: &Keys, remote: &dyn Remote, opts: &Options) -> Result<Report> {
    let started = Instant::now();
    if opts.roots.is_empty() {
        return Err(Error::Usage(
            "nothing to back up: give a PATH (or set CHUTE_PATHS)".into(),
        ));
    }
    let roots = normalize_roots(&opts.roots)?;
    let unreadable: Vec<String> = roots
        .iter()
        .filter_map(|r| walk::unreadable(r).map(|e| format!("{}: {e}", r.display())))
        .collect();
    if unreadable.len() == roots.len() {
        return Err(Error::Failed(format!(
            "cannot read {}; no snapshot made",
            unreadable.join(", nor ")
        )));
    }
    let root_bytes: Vec<Vec<u8>> = roots
        .iter()
        .map(|r| r.as_os_str().as_bytes().to_vec())
        .collect();
    let mount = keys.mount_id(&root_bytes);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ts = snapshot::timestamp(now.as_secs() as i64, now.subsec_nanos());
    let fresh = BlobId::new(&opts.domain, &opts.node, &mount, &ts)
        .map_err(|e| Error::Usage(e.to_string()))?;

    let lock = lock_paths(&opts.cache_dir, &mount)?;
    // A killed sink's snapshots go first: they hold disk space.
    crate::fssnap::sweep(&opts.cache_dir, &mount);
    let interrupt = Interrupt::arm();
    let own = opts
        .own
        .iter()
        .filter_map(|(p, why)| fs::metadata(p).ok().map(|m| (m.dev(), m.ino(), *why)))
        .collect();
    let journal_path = opts.cache_dir.join(format!("journal-{mount}"));
    let (snaps, cache, completed, resolver) = catch_up(keys, remote, opts, &journal_path)?;
    let parent_snap = snaps.iter().rev().find(|s| s.blob.mount == mount);
    let (links, record) = crate::chain::guard(
        keys,
        remote,
        &opts.domain,
        &opts.node,
        &opts.cache_dir,
        &snaps,
        "sink",
        crate::chain::Strict::Fail,
        opts.accept_rollback,
    )?;
    let (seq, chain_parent) = crate::chain::next(&record, &links, &mount);

    let mut index = Index {
        version: u32::from(format::VERSION),
        domain: fresh.domain.clone(),
        node: fresh.node.clone(),
        mount: fresh.mount.clone(),
        timestamp: fresh.timestamp.clone(),
        parent: parent_snap.map(|p| format!("/chute/blob/{}/", p.blob.path())),
        size: None,
        sealed: None,
    };
    let mut report = Report::default();
    let (blob, journal, upload) = start_upload(remote, &journal_path, &index, opts.window)?;
    let window = upload.window;
    report.resumed = upload.next * window;
    index.timestamp = blob.timestamp.clone();

    // Index 0 is this snapshot's own blob.
    let mut blobs = Blobs::default();
    blobs.index(&blob.path());
    let node_places = Mutex::new(NodePlaces::default());
    let mut parent = match parent_snap {
        Some(p) => Some(Parent::open(
            keys,
            remote,
            &resolver,
            p,
            &mut blobs,
            &node_places,
        )?),
        None => None,
    };

    let shared = Shared {
        keys,
        compression: opts.compression,
        remote,
        blob: blob.clone(),
        upload: Mutex::new(upload),
        landed: Condvar::new(),
        cache: &cache,
        blobs: Mutex::new((blobs, HashMap::new())),
        journal: Some(journal),
        failed: Mutex::new(None),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        reused: AtomicU64::new(0),
        timed: Mutex::new((0, 0)),
    };
    let chunker = Chunker::new(keys.gear_seed());
    let threads = opts.threads.max(1);
    // One job waiting: a job holds a chunk or a pack of small files (up to ~2 MiB),
    // so a deeper queue holds more bytes without keeping the workers busier (a
    // queue of `threads` cost 2.5 MiB more peak RSS for the same wall time).
    let (tx, rx) = sync_channel::<Job>(1);
    let rx = Mutex::new(rx);
    // Chunk buffers go back to the walker for reuse: at most the queue's, the
    // workers' and the walker's own are ever allocated (see `walk::Spares`).
    let (spare_tx, spare) = channel::<Vec<u8>>();
    // Chunk references go back to the walker, which streams the manifest.
    let (done_tx, results) = channel::<Done>();
    let out = Stream::new(&shared, &opts.cache_dir, &mount, &node_places, results)?;
    let (alive, stop_touching) = std::sync::mpsc::channel::<()>();
    let (touching, pending) = (&shared, &index);
    let period = testhooks::keepalive(KEEPALIVE);
    let progress = crate::progress::Progress::new("sink", opts.progress);
    let counted = AtomicBool::new(false);
    // Taken last, just before the walk, so each lives as short as it can.
    let frozen = crate::fssnap::take(
        opts.fs_snapshot,
        &roots,
        &opts.cache_dir,
        &mount,
        opts.quiet,
    )?;
    let walk_result = std::thread::scope(|s| {
        if progress.on() {
            let (progress, counted, roots) = (&progress, &counted, &roots);
            let excluded = |p: &Path| walk::excluded(&opts.excludes, p);
            s.spawn(move || {
                crate::progress::count(roots, &excluded, counted, &|f, b, done| {
                    progress.total(f, b, done)
                })
            });
        }
        for _ in 0..threads {
            let (spare_tx, done_tx) = (spare_tx.clone(), done_tx.clone());
            let (shared, rx) = (&shared, &rx);
            s.spawn(move || worker(shared, rx, &spare_tx, &done_tx));
        }
        drop((spare_tx, done_tx));
        s.spawn(move || keep_alive(touching, pending, period, stop_touching));
        let mut walker = Walker {
            opts,
            keys,
            chunker: &chunker,
            packer: packer::Packer::default(),
            tx,
            spare: walk::Spares::new(spare, threads),
            small: Vec::new(),
            cache: &cache,
            parent: parent.take(),
            blobs: &shared.blobs,
            out,
            report: &mut report,
            stop: &shared.stop,
            progress: &progress,
            own,
            snapshots: &frozen.sources,
            from: None,
        };
        let r = roots.iter().try_for_each(|root| walker.walk(root));
        walker.cut_pack();
        progress.clear();
        // A count still going when the walk ends is of no use any more.
        counted.store(true, Ordering::Relaxed);
        drop(alive);
        // Closing the jobs' queue lets the workers finish; the stream takes
        // their last results. The scope joins them and the keep-alive thread.
        let Walker { tx, out, .. } = walker;
        drop(tx);
        r.and_then(|()| out.finish())
    });
    // Everything is read: the snapshots go.
    drop(frozen);
    // A worker's failure first: it stopped the walk, and left entries unfinished.
    if let Some(e) = shared.failed.lock().expect("poisoned").take() {
        return Err(e);
    }
    let manifest = walk_result?;
    let refs =
        |f: &mut dyn FnMut(&str, &ChunkRef)| manifest.each_ref(keys, remote, &resolver, &blob, f);
    reused_still_there(keys, remote, &manifest.used, refs, &blob, started.elapsed())?;
    let (manifest_offset, manifest_len) = manifest.range();
    let root = manifest.root.clone();
    report.chunks = manifest.chunks;
    drop(manifest);
    let (tail_n, tail, part_size) = shared.take_tail();
    let (window_hashes, answers) = {
        let p = shared.upload.lock().expect("poisoned");
        let hashes = p
            .hashes
            .iter()
            .map(|h| h.ok_or_else(|| Error::Failed("a window was never acknowledged".into())))
            .collect::<Result<Vec<[u8; 32]>>>()?;
        (hashes, p.answers.clone())
    };
    let mut header = Header {
        time: now.as_secs() as i64,
        time_ns: now.subsec_nanos(),
        host: opts.host.clone(),
        roots: root_bytes,
        files: report.files,
        dirs: report.dirs,
        symlinks: report.symlinks,
        bytes: report.bytes,
        manifest_offset,
        manifest_len,
        part_size,
        window: window as u32,
        window_hashes,
        seq,
        parent: chain_parent,
        tags: opts.tags.clone(),
        ..Header::default()
    };
    root.set_in(&mut header);
    index.size = Some(part_size);
    let k = format::seal_fitting(
        keys,
        &blob.path(),
        &mut header,
        &mut index,
        &answers,
        crate::store::MAX_INDEX,
    );
    // A snapshot that stored nothing (no change: its manifest is its parent's)
    // has no window to challenge.
    if k < format::CHALLENGES && !answers.is_empty() {
        eprintln!(
            "chute sink: warning: this snapshot's {} windows leave room in its index for {k} storage challenges each, not {}: `chute verify` can prove its data held for {k} runs",
            answers.len(),
            format::CHALLENGES
        );
    }
    // The final index and the tail's bytes are on disk before the tail leaves:
    // once the short window is on the store, the blob can only be completed.
    if let Some(j) = &shared.journal {
        j.final_index(&index.to_json(), &tail)
            .map_err(|e| Error::Io("cannot write the sink journal".into(), e))?;
    }
    testhooks::failpoint("before-last-window");
    shared.send_tail(tail_n, &tail)?;
    drop(tail);
    testhooks::failpoint("before-commit");
    interrupt.disarm();
    remote
        .commit(&blob, &index)
        .map_err(|e| checked_lost(remote, &blob, e))?;
    testhooks::failpoint("after-commit");
    let sent = shared.sent.load(Ordering::Relaxed);
    let (timed_n, timed_us) = *shared.timed.lock().expect("poisoned");
    let reused = shared.reused.load(Ordering::Relaxed);
    let upload = shared.upload.into_inner().expect("poisoned");
    if let Some(id) = format::chain_id(&index) {
        crate::chain::change(&opts.cache_dir, "sink", |r| {
            crate::chain::committed(r, &mount, seq, id)
        });
    }
    // The snapshot is safe; what follows only speeds up the next run.
    remember(&cache, &blob, &upload);
    Journal::remove(&journal_path);
    if let Some(c) = completed {
        eprintln!("chute sink: committed snapshot {c} left by an interrupted sink");
    }
    report.short_id = snapshot::short_id(&blob);
    report.blob = blob.path();
    report.new_chunks = upload.stored.len();
    report.new_bytes = upload.new_bytes;
    report.reused_bytes = reused;
    report.sent = sent;
    report.window = window;
    report.window_secs = (timed_n > 0).then(|| timed_us as f64 / timed_n as f64 / 1e6);
    report.secs = started.elapsed().as_secs_f64();
    drop(lock);
    Ok(report)
}

/// Takes the lock that lets one sink of these paths (`mount`) run at a time; held
/// while the returned file is open.
fn lock_paths(cache_dir: &Path, mount: &str) -> Result<File> {
    crate::cache::create_dir(cache_dir)
        .map_err(|e| Error::Io(format!("cannot create {}", cache_dir.display()), e))?;
    let lock_path = cache_dir.join(format!("lock-{mount}"));
    let lock = File::create(&lock_path)
        .map_err(|e| Error::Io(format!("cannot create {}", lock_path.display()), e))?;
    if !crate::sys::try_lock(&lock)
        .map_err(|e| Error::Io(format!("cannot lock {}", lock_path.display()), e))?
    {
        return Err(Error::Failed(format!(
            "another chute sink of these paths is still running (lock {})",
            lock_path.display()
        )));
    }
    Ok(lock)
}

/// The node's committed snapshots, an up-to-date chunk index and the resolver of
/// the node's packs (manifests are read through it), after committing the
/// snapshot a sink killed after journaling its final index left (its short id,
/// if so).
fn catch_up(
    keys: &Keys,
    remote: &dyn Remote,
    opts: &Options,
    journal_path: &Path,
) -> Result<(Vec<Snapshot>, ChunkIndex, Option<String>, Resolver)> {
    let mut snaps = snapshot::all(keys, remote, &opts.domain, &opts.node)?;
    let resolver = Resolver::for_node(keys, remote, &opts.domain, &opts.node)?;
    let chunks_path = opts.cache_dir.join("chunks");
    let sort = crate::cache::runs_prefix(journal_path, "sort");
    let r = &resolver;
    let mut cache = sync_cache(
        keys,
        remote,
        r,
        ChunkIndex::open(&chunks_path),
        &snaps,
        &sort,
    )?;
    let mut completed = None;
    if complete_killed(keys, remote, r, journal_path, &cache, &snaps) {
        completed = Journal::read(journal_path)
            .and_then(|st| BlobId::parse(&st.blob).ok())
            .map(|b| snapshot::short_id(&b));
        Journal::remove(journal_path);
        // The completed snapshot is now the parent, and its chunks are known.
        snaps = snapshot::all(keys, remote, &opts.domain, &opts.node)?;
        cache = sync_cache(keys, remote, r, cache, &snaps, &sort)?;
    }
    Ok((snaps, cache, completed, resolver))
}

/// The blob this run uploads, its journal and the upload state: a killed sink's
/// blob continued from its verified prefix, or a new one created with `index`.
fn start_upload(
    remote: &dyn Remote,
    journal_path: &Path,
    index: &Index,
    window: u64,
) -> Result<(BlobId, Journal, Upload)> {
    let window = window.clamp(64 << 10, crate::store::DEFAULT_MAX_WINDOW);
    let runs = crate::cache::runs_prefix(journal_path, "runs");
    let cap = testhooks::chunk_cap(upload::STORED_CAP);
    let mut upload = Upload::new(window, crate::runchunks::RunChunks::new(&runs, cap, true));
    upload.most_flying = remote.windows_in_flight().max(1);
    let (blob, journal) = match resume(remote, journal_path, index) {
        Some(r) => {
            // The chunks inside the verified prefix, streamed from the journal.
            let end = r.hashes.len() as u64 * r.window;
            for (id, place) in Journal::chunks(journal_path) {
                if place.offset.saturating_add(u64::from(place.len)) <= end {
                    upload
                        .stored
                        .insert(id, place)
                        .map_err(upload::runs_failed)?;
                }
            }
            // Only what was kept, and no `final`: that index is not this run's.
            let kept: Vec<_> = r
                .hashes
                .iter()
                .copied()
                .zip(r.answers.iter().copied())
                .collect();
            let chunks = upload.stored.iter().map_err(upload::runs_failed)?;
            let j = Journal::restart(journal_path, &r.blob.path(), r.window, &kept, chunks)
                .map_err(|e| Error::Io("cannot write the sink journal".into(), e))?;
            upload.window = r.window;
            upload.next = r.hashes.len() as u64;
            upload.hashes = r.hashes.into_iter().map(Some).collect();
            upload.answers = r.answers;
            (r.blob, j)
        }
        None => {
            let blob = remote.create(index)?;
            let j = Journal::create(journal_path, &blob.path(), window)
                .map_err(|e| Error::Io("cannot write the sink journal".into(), e))?;
            (blob, j)
        }
    };
    upload.buf = Vec::with_capacity(upload.window as usize);
    Ok((blob, journal, upload))
}

/// Adds the chunks this run stored to the chunk index (and marks the damaged ones
/// it stored afresh as healed), for the next run. Best effort: a failure only
/// costs that run time.
fn remember(cache: &ChunkIndex, blob: &BlobId, upload: &Upload) {
    let merged =
        (upload.stored.iter()).and_then(|recs| cache.merge(&[blob.path()], &[blob.path()], recs));
    match merged {
        Ok(mut merged) => {
            let stored = |id: &ChunkId| Ok(upload.stored.get(id)?.map(|p| p.offset));
            if let Err(e) = merged.healed(&blob.path(), stored) {
                eprintln!("chute sink: warning: cannot update the damaged-chunk list: {e}");
            }
        }
        Err(e) => eprintln!("chute sink: warning: cannot update the chunk cache: {e}"),
    }
}

/// Ends a sink on SIGINT or SIGTERM until [`Interrupt::disarm`] (see the module
/// doc): a watcher thread polls [`crate::sys::signalled`], since a handler may
/// only set a flag.
struct Interrupt {
    armed: std::sync::Arc<Mutex<bool>>,
}

impl Interrupt {
    fn arm() -> Interrupt {
        crate::sys::catch_termination();
        let armed = std::sync::Arc::new(Mutex::new(true));
        let watched = armed.clone();
        std::thread::spawn(move || {
            loop {
                {
                    let armed = watched.lock().unwrap_or_else(|p| p.into_inner());
                    if !*armed {
                        return;
                    }
                    if crate::sys::signalled() {
                        interrupted();
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Interrupt { armed }
    }

    /// From here on a signal ends the process by its default action; one that
    /// arrived before still ends the sink as interrupted.
    fn disarm(&self) {
        let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        *armed = false;
        crate::sys::default_termination();
        if crate::sys::signalled() {
            interrupted();
        }
    }
}

impl Drop for Interrupt {
    /// A sink that returns (an error, or `run` called in a longer-lived process)
    /// stops its watcher and gives the signals back.
    fn drop(&mut self) {
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = false;
        crate::sys::default_termination();
    }
}

/// Says that the next run resumes and exits with status 1, as a kill would leave
/// the sink (the journal is written for that).
fn interrupted() -> ! {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("\r\x1b[K");
    }
    crate::fssnap::release();
    eprintln!(
        "chute sink: interrupted; no snapshot committed; run the same sink again to resume (what was sent is kept)"
    );
    std::process::exit(1);
}
