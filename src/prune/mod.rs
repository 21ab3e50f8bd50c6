//! `chute prune`: delete the blobs no remaining snapshot needs, without a lock, trim
//! the windows of forgotten blobs none needs, and repack the blobs remaining
//! snapshots need only a little of.
//!
//! # What is deleted
//! A candidate is a blob of this node that is not a committed snapshot: a forgotten
//! snapshot, a pending upload that was never committed, an orphan (a directory
//! whose delete was interrupted), all listed by [`Remote::list_uncommitted`], and a
//! pack ([`crate::pack`]). Every committed snapshot's manifest is read, one at a
//! time, and its chunk references resolved as a restore would ([`Resolver`]): what
//! it uses of each candidate is the chunks (place, length, id) it resolves to
//! there. Memory is one manifest, the packs' maps and the chunks still used in
//! candidates, never a set of every chunk. Only chunk references count: a
//! manifest's blob table may name blobs none of its chunks use. A committed
//! snapshot whose manifest cannot be read whole (one damaged segment of a version
//! 2 manifest is enough: its chunks could be anyone's) stops the prune before it
//! changes anything, as a wholly unreadable one does.
//!
//! A version 3 manifest is a tree of nodes that may live in other blobs than
//! its snapshot's (a sink reuses its parent's unchanged nodes where they are, see
//! [`crate::format`]). Every node a committed snapshot's manifest reads (the table
//! nodes of its header's root list and the segments under them,
//! [`crate::format::Entries::take_nodes`]) is used like a chunk: resolved by the
//! same rule ([`Resolver`]: a node's seal binds its id, not its place), it keeps
//! the blob and the windows it lies in, and a repack copies it into the pack
//! (authenticated as a node), whose map lists its id. So forgetting the snapshot
//! that first stored a manifest never loses a later snapshot's entries.
//!
//! A candidate nothing uses is *marked*: its path and the time it was first found
//! unused go to the state file `prune-marks` in this node's cache directory
//! (`$XDG_CACHE_HOME/chute/<id>/`). A later prune deletes it once it has been marked
//! for at least the grace period (`--grace`, default 24h) and is still unused, and
//! the store has seen it idle for the grace period too, by its own clock: a
//! forgotten blob since it was last forgotten (prune forgets it again, which only
//! restarts that time, whenever it marks it or a window of it afresh), a pending
//! or orphaned one since its last write (so an upload in progress, or one being
//! resumed, is left alone). A mark never
//! moves back: a later run whose clock is behind cannot make it older. A pack
//! nothing uses stays committed while it is marked, since forgetting it would
//! change at once what references resolve to (a delete without a grace period,
//! for a sink that took a reference from a snapshot forgotten since); when due it
//! is forgotten and deleted in one run, on its mark alone (the store keeps no idle
//! time for a committed blob). `--grace 0` deletes at once.
//!
//! On a local store, prune also removes the temporary files (`.tmp-*`) that killed
//! writers left in this node's blobs: in a committed or forgotten blob at once, in
//! a pending one once unchanged for the grace period, never one a live writer
//! holds (see [`crate::store`]). A peer sweeps its own store (at start, on each
//! commit and in its scrub).
//!
//! # Trimming
//! A forgotten snapshot's blob that snapshots still use in part often holds whole
//! windows none of them uses (files deleted since, or changed wholesale). Those
//! windows are marked like blobs (`path#n` in the marks) and deleted one by one a
//! grace period later (`DELETE …/0/<W>/<N>`, which the store refuses for any blob
//! but a forgotten snapshot); nothing is copied. The marks file remembers trimmed
//! windows (`trimmed path n`) so they are not asked for again. `chute verify`
//! checks, in blobs other than a snapshot's own, only the windows its chunks lie in,
//! so a trimmed window is not missed. The store learns which windows of a forgotten
//! blob no longer matter: no more than a restore of every remaining snapshot shows.
//!
//! # Repacking
//! A forgotten snapshot's blob or a pack that snapshots still use in part is
//! repacked when at least `--repack-threshold` of what trimming leaves of it
//! (default 25%) is unused; its windows are then not trimmed, since the whole blob
//! goes once the pack holds what is used: the chunks still used are read (neighbours together, at most
//! [`crate::restore::MAX_READ`] at a time), each authenticated with the chunk key,
//! and copied as they are into one new pack for the whole run. Once the pack is
//! committed every use of them resolves to it (it is the newest pack listing their
//! ids), so the old blob is unused: it is marked from now and deleted a grace
//! period later, like any other. A chunk that does not authenticate stops the prune
//! before anything is deleted (run `chute verify`): a damaged chunk is never copied
//! as if whole. The threshold trades copying against space: at 25% a repack moves at
//! most three bytes per byte it frees. The store sees a new blob of opaque windows
//! and ranged reads of chunks, as in a restore: nothing it did not see before.
//!
//! # Why no lock is needed
//! `chute sink` reuses chunks the remote already holds: from its parent snapshot and
//! from its chunk index, which it syncs at start from the snapshots committed then
//! (and clears if a snapshot it knew is gone). So a sink refers only to chunks that
//! some snapshot used *when the sink started*. A blob that is unused now can be
//! used again only by a sink that started before it became unused, hence before it
//! was marked. Such a sink commits within the grace period if it runs for less than
//! the grace period; then the run that would delete the blob (at least `grace` after
//! the mark, reading the committed snapshots after taking its clock) sees the new
//! snapshot, finds the blob used (a chunk it refers to that no pack holds resolves
//! to the blob) and keeps it, and clears the mark. A repacked blob is the same case:
//! what a new snapshot uses of it is either in the pack already or keeps it. One
//! more case: a snapshot committed *and* forgotten between two prunes may have fed
//! the chunk index of a sink that started meanwhile, after the mark; so each run
//! records the blobs it saw committed or forgotten, and reads the manifest of a
//! forgotten snapshot it never saw so (one it saw pending may have been committed
//! since): whatever that snapshot used is marked afresh. Forgotten blobs can never be
//! committed again, so they do not change under prune; a pending blob is re-checked
//! just before it is deleted. The cost of this is the grace period: space comes
//! back one period after the forget. With `--grace 0` a sink, restore or verify that
//! runs at the same time as prune may find a blob gone; use it only when none runs.
//!
//! A sink's own pending blob is never used by a committed snapshot, so it is always
//! a candidate; what keeps it is the idle condition. While a sink walks it touches
//! the blob every [`crate::sink::KEEPALIVE`] (a minute) by re-POSTing its pending
//! index, and after the walk it writes windows, so the store never sees a live
//! sink's blob idle for longer than that, however slow its walk. A sink that is
//! dead or stopped (SIGSTOP, a suspended laptop) does not touch: its blob is
//! reclaimed one grace period after its last write, and a stopped sink that
//! continues fails saying its upload is gone and commits nothing. So a grace period
//! under a minute is as unsafe as `--grace 0` with a sink running. The keep-alive
//! protects only the sink's own blob: for the chunks it reuses, the argument above
//! still needs the sink to run for less than the grace period. A sink that runs
//! longer checks, just before its commit, that every chunk it reuses is still
//! readable (its blob still listed or a pack holding it, and in a forgotten blob
//! the windows it lies in still there), and fails rather than commit a snapshot
//! that restores only in part.
//!
//! The grace period is measured on two clocks: the client's (the marks) and the
//! store's (idle time, restarted by each new mark on a forgotten blob). A client
//! clock that is off, say a Pi before NTP, so cannot shorten it. A committed pack
//! has no idle time on the store: its mark alone times it.
//!
//! # Crash safety
//! The marks are written (atomically) before anything is copied or deleted. A pack
//! is visible only once committed, after all its windows: a prune killed while
//! copying leaves a pending pack, which the next prune deletes like any abandoned
//! upload. Deleting a blob is one [`Remote::delete`], which removes its index files
//! first, so a prune killed at any point leaves whole snapshots or none; a
//! directory left half-deleted has no index, is listed as an orphan, and the next
//! prune deletes it. The node's chunk index never leads a sink to a chunk that is
//! gone: every chunk a committed snapshot uses stays readable, in its blob or in a
//! pack, and a sink whose index knew a forgotten snapshot finds it gone from the
//! list and rebuilds the index from the remaining manifests.
//!
//! [`Resolver`]: crate::pack::Resolver

mod plan;

use crate::blob::{BlobId, BlobState, Uncommitted};
use crate::crypto::{ChunkId, Keys, Kind};
use crate::remote::{ErrorKind, Remote};
use crate::snapshot::{self, Snapshot};
use crate::units::human_bytes;
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Default grace period.
pub const DEFAULT_GRACE: u64 = 24 * 3600;

/// What to do.
pub struct Options {
    pub grace: u64,
    pub dry_run: bool,
    /// The state file of marks.
    pub marks: PathBuf,
    /// Unix seconds now (injectable for tests).
    pub now: i64,
    /// Repack a partly used blob once at least this share of it is unused (0 to
    /// 1; above 1 never).
    pub repack: f64,
    /// The node's cache directory, whose chain record the listing is checked
    /// against ([`crate::chain`]); `None` skips the check (unit tests).
    pub chain: Option<PathBuf>,
    /// Take the store's view of the chain even if it rolled back.
    pub accept_rollback: bool,
    /// Blobs and bytes repacked of the plan's, on stderr (see [`crate::progress`]).
    pub progress: crate::progress::Show,
}

/// Default share of a blob that must be unused before it is repacked.
pub const DEFAULT_REPACK: f64 = 0.25;

/// A blob prune may delete: one that is not a committed snapshot.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: BlobId,
    pub kind: CandidateKind,
    /// Bytes of its part 0.
    pub bytes: u64,
    /// Seconds the store has seen it unchanged (0 for a committed pack).
    pub idle: u64,
}

/// What a candidate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidateKind {
    /// A snapshot's blob that is not a committed snapshot (pending, forgotten or an
    /// orphan).
    Snapshot(BlobState),
    /// A pack that is not committed (an interrupted repack, or a retired pack).
    UncommittedPack(BlobState),
    /// A committed pack (see [`crate::pack`]): the store keeps no idle time for it.
    Pack,
}

impl Candidate {
    fn from_uncommitted(u: Uncommitted, pack_mount: &str) -> Candidate {
        Candidate {
            kind: if u.id.mount == pack_mount {
                CandidateKind::UncommittedPack(u.state)
            } else {
                CandidateKind::Snapshot(u.state)
            },
            id: u.id,
            bytes: u.bytes,
            idle: u.idle,
        }
    }

    /// Its state on the store; `None` for a committed pack.
    pub fn state(&self) -> Option<BlobState> {
        match self.kind {
            CandidateKind::Snapshot(s) | CandidateKind::UncommittedPack(s) => Some(s),
            CandidateKind::Pack => None,
        }
    }

    /// Whether it is a pack, committed or not.
    pub fn is_pack(&self) -> bool {
        !matches!(self.kind, CandidateKind::Snapshot(_))
    }
}

/// One candidate and what became of it.
#[derive(Debug)]
pub struct Outcome {
    pub blob: Candidate,
    pub fate: Fate,
    /// Its used chunks were copied into this run's pack (before the fate).
    pub repacked: bool,
    /// Windows of it nothing uses: bytes trimmed now (or, in a dry run, that would
    /// be), and bytes marked for a later run.
    pub trimmed: u64,
    pub trim_later: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// Deleted (or, in a dry run, would be).
    Deleted,
    /// Referenced by `by` committed snapshots, which use `live` of its bytes.
    Referenced { by: usize, live: u64 },
    /// Unreferenced since `since`; deletable from `due` on.
    Marked { since: i64, due: i64 },
    /// Was committed meanwhile (a resumed upload finished): left alone.
    Committed,
}

/// What a prune did.
#[derive(Debug, Default)]
pub struct Report {
    pub snapshots: usize,
    pub outcomes: Vec<Outcome>,
    /// The pack this run wrote (or, in a dry run, would write), and its bytes.
    pub pack: Option<(Option<BlobId>, u64)>,
    /// Chunk references of committed snapshots into blobs that are gone.
    pub dangling: u64,
    /// Why the repack could not be written (the peer's quota is full).
    pub repack_failed: Option<String>,
    /// The temporaries killed writers left in this node's blobs, swept (a local
    /// store only: a peer sweeps its own).
    pub temps: Option<crate::store::Temps>,
}

impl Report {
    pub fn reclaimed(&self) -> u64 {
        self.sum(|f| matches!(f, Fate::Deleted))
            + self.outcomes.iter().map(|o| o.trimmed).sum::<u64>()
    }

    fn sum(&self, pick: impl Fn(&Fate) -> bool) -> u64 {
        self.outcomes
            .iter()
            .filter(|o| pick(&o.fate))
            .map(|o| o.blob.bytes)
            .sum()
    }

    /// Bytes of kept blobs that no snapshot uses and no trim returns: what a
    /// repack would.
    pub fn repackable(&self) -> u64 {
        self.outcomes
            .iter()
            .map(|o| match o.fate {
                Fate::Referenced { live, .. } => {
                    o.blob.bytes.saturating_sub(live + o.trimmed + o.trim_later)
                }
                _ => 0,
            })
            .sum()
    }
}

const MARKS_HEADER: &str = "chute-prune-marks 2";

/// The state one prune leaves for the next.
#[derive(Debug, Default, PartialEq, Eq)]
struct Marks {
    /// Blob path → Unix seconds first found unreferenced.
    since: HashMap<String, i64>,
    /// Every blob of the node the run saw committed or forgotten (not one it saw
    /// pending: that may be committed, used and forgotten before the next run).
    seen: HashSet<String>,
    /// `path n`: window `n` of forgotten blob `path` was trimmed.
    trimmed: HashSet<String>,
}

impl Marks {
    /// When `key`, unused at `now`, counts as marked since: its old mark as it
    /// stands, even if `now` is earlier (a clock that went back must not age it),
    /// or `now` if it has none or is to be marked afresh.
    fn since_of(&self, key: &str, now: i64, fresh: bool) -> i64 {
        match self.since.get(key) {
            Some(&t) if !fresh => t,
            _ => now,
        }
    }
}

/// Reads the marks. A missing or unreadable file is no marks (deletion is then
/// only delayed).
fn load_marks(path: &Path) -> Marks {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Marks::default();
    };
    let mut lines = text.lines();
    // Version 1 had no `seen` lines: read as version 2 with none.
    if !matches!(lines.next(), Some(MARKS_HEADER | "chute-prune-marks 1")) {
        return Marks::default();
    }
    let mut m = Marks::default();
    for l in lines {
        match l.split_once(' ') {
            Some(("seen", p)) => {
                m.seen.insert(p.to_string());
            }
            Some(("trimmed", w)) => {
                m.trimmed.insert(w.to_string());
            }
            Some((t, p)) => {
                if let Ok(t) = t.parse() {
                    m.since.insert(p.to_string(), t);
                }
            }
            None => {}
        }
    }
    m
}

fn save_marks(path: &Path, marks: &Marks) -> Result<()> {
    let mut since: Vec<(&String, &i64)> = marks.since.iter().collect();
    crate::sort::sort(&mut since);
    let mut seen: Vec<&String> = marks.seen.iter().collect();
    crate::sort::sort(&mut seen);
    let mut text = format!("{MARKS_HEADER}\n");
    for (p, t) in since {
        text.push_str(&format!("{t} {p}\n"));
    }
    for p in seen {
        text.push_str(&format!("seen {p}\n"));
    }
    let mut trimmed: Vec<&String> = marks.trimmed.iter().collect();
    crate::sort::sort(&mut trimmed);
    for w in trimmed {
        text.push_str(&format!("trimmed {w}\n"));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Io(format!("cannot create {}", dir.display()), e))?;
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|e| Error::Io(format!("cannot write {}", path.display()), e))
}

/// A chunk a candidate holds that a committed snapshot uses.
type Used = (u64, u32, ChunkId);

/// Sorts and merges uses, so the same chunk used by many snapshots counts once.
fn compact(used: &mut Vec<Used>) {
    crate::sort::by_key(used, |u| u.0);
    used.dedup_by_key(|u| u.0);
}

/// The chunk references of a snapshot manifest, resolved, and the places of its
/// version 3 nodes (`nodes`, resolved alike: see [`node_places`]), per candidate.
fn uses(
    m: &crate::format::Manifest,
    nodes: &[(String, u64, u32, ChunkId)],
    at: &HashMap<String, usize>,
    live: &mut [Vec<Used>],
    users: &mut [usize],
) {
    let table: Vec<Option<usize>> = m.blobs.iter().map(|b| at.get(b).copied()).collect();
    let mut grown = Vec::new();
    for (blob, offset, len, id) in nodes {
        if let Some(&i) = at.get(blob) {
            live[i].push((*offset, *len, *id));
            grown.push(i);
        }
    }
    if grown.is_empty() && table.iter().all(Option::is_none) {
        return;
    }
    for c in m.entries.iter().flat_map(|e| e.chunks.iter()) {
        if let Some(i) = table[c.blob as usize] {
            live[i].push((c.offset, c.len, c.id));
            grown.push(i);
        }
    }
    crate::sort::sort(&mut grown);
    grown.dedup();
    for i in grown {
        users[i] += 1;
        compact(&mut live[i]);
    }
}

/// Runs a prune of one node.
pub fn run(
    keys: &Keys,
    remote: &dyn Remote,
    domain: &str,
    node: &str,
    opts: &Options,
) -> Result<Report> {
    // The clock first, the lists after: a snapshot committed before `now` is seen.
    let now = opts.now;
    let pack_mount = crate::pack::mount(keys);
    // Committed first: a snapshot forgotten between the two listings is then in
    // both (read as committed, and new to the marks), never in neither.
    let listing = snapshot::listing(keys, remote, domain, node)?;
    // Only this node's own blobs, whatever a remote answers.
    let mut candidates: Vec<Candidate> = remote
        .list_uncommitted(domain, node)?
        .into_iter()
        .filter(|c| c.id.domain == domain && c.id.node == node)
        .map(|c| Candidate::from_uncommitted(c, &pack_mount))
        .collect();
    if let Some((blob, e)) = listing.failed.first() {
        return Err(Error::Failed(format!(
            "{} of the committed blobs of {domain}/{node} do not open with this key (first: {}: {e}), so what they use is unknown; nothing was deleted",
            listing.failed.len(),
            blob.path()
        )));
    }
    let snaps = listing.snapshots;
    if let Some(dir) = &opts.chain {
        crate::chain::guard(
            keys,
            remote,
            domain,
            node,
            dir,
            &snaps,
            "prune",
            crate::chain::Strict::Fail,
            opts.accept_rollback,
        )
        .map_err(|e| Error::Failed(format!("{e}; nothing was deleted")))?;
    }
    let listed: Vec<BlobId> = snaps
        .iter()
        .chain(&listing.packs)
        .map(|s| s.blob.clone())
        .collect();
    let resolver = crate::pack::Resolver::load(keys, remote, &listed)?;
    for p in &listing.packs {
        candidates.push(Candidate {
            id: p.blob.clone(),
            kind: CandidateKind::Pack,
            bytes: p.header.part_size,
            idle: 0,
        });
    }
    let at: HashMap<String, usize> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.path(), i))
        .collect();
    let committed: HashSet<String> = snaps.iter().map(|s| s.blob.path()).collect();
    let damaged = |e: Error| {
        Error::Damaged(format!(
            "{e}; prune cannot know what it uses, so nothing was deleted"
        ))
    };
    let mut users = vec![0usize; candidates.len()];
    let mut live: Vec<Vec<Used>> = vec![Vec::new(); candidates.len()];
    let mut report = Report {
        snapshots: snaps.len(),
        ..Report::default()
    };
    for snap in &snaps {
        let (mut m, nodes) =
            crate::snapshot::manifest_nodes(keys, remote, &resolver, snap).map_err(damaged)?;
        let nodes = node_places(&resolver, &nodes);
        resolver.resolve(&mut m);
        report.dangling += m
            .entries
            .iter()
            .flat_map(|e| e.chunks.iter())
            .filter(|c| {
                let b = &m.blobs[c.blob as usize];
                !committed.contains(b) && !at.contains_key(b)
            })
            .count() as u64;
        uses(&m, &nodes, &at, &mut live, &mut users);
    }

    let old = load_marks(&opts.marks);
    let fresh = renewed(keys, remote, &candidates, &at, &resolver, &old)?;

    let mut marks = Marks {
        seen: candidates
            .iter()
            .filter(|c| c.kind == CandidateKind::Snapshot(BlobState::Forgotten))
            .map(|c| c.id.path())
            .chain(committed.iter().cloned())
            .collect(),
        ..Marks::default()
    };
    // Windows of forgotten snapshots that no committed snapshot uses any more.
    let mut dead: Vec<Vec<(u64, u64)>> = vec![Vec::new(); candidates.len()];
    let mut window_of = vec![1u64; candidates.len()];
    for (i, c) in candidates.iter().enumerate() {
        if users[i] == 0 || c.kind != CandidateKind::Snapshot(BlobState::Forgotten) {
            continue;
        }
        let index = match remote.forgotten_index(&c.id) {
            Ok(i) => i,
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let h = crate::format::open_header(keys, &index)
            .map_err(|e| damaged(Error::Damaged(format!("{}: {e}", c.id.path()))))?;
        let (w, path) = (u64::from(h.window.max(1)), c.id.path());
        window_of[i] = w;
        dead[i] = unused_windows(&live[i], w, h.window_hashes.len() as u64, h.part_size)
            .into_iter()
            .filter(|(n, _)| !old.trimmed.contains(&format!("{path} {n}")))
            .collect();
        marks.trimmed.extend(
            (0..h.window_hashes.len())
                .map(|n| format!("{path} {n}"))
                .filter(|k| old.trimmed.contains(k)),
        );
    }
    let grace = opts.grace as i64;
    let plan = plan::plan(
        candidates,
        &plan::Facts {
            users: &users,
            live: &live,
            dead: &dead,
            fresh: &fresh,
            old: &old,
        },
        now,
        opts.grace,
        opts.repack,
    );
    marks.since.extend(plan.since);
    report.outcomes = plan.outcomes;
    let (jobs, trims, touch) = (plan.jobs, plan.trims, plan.touch);
    if !jobs.is_empty() {
        let bytes = jobs
            .iter()
            .flat_map(|&i| live[i].iter())
            .map(|u| u64::from(u.1))
            .sum();
        report.pack = Some((None, bytes));
    }
    if opts.dry_run {
        for &i in &jobs {
            report.outcomes[i].repacked = true;
        }
        return Ok(report);
    }
    crate::testhooks::prune_pause();
    still_listed(remote, domain, node, &snaps, "nothing was deleted")?;
    // A new mark starts the store's idle clock too (forgetting a forgotten blob
    // again restarts it): the delete then waits for both clocks, so a client clock
    // that is behind cannot make a mark look older than it is.
    for &i in &touch {
        forget(remote, &report.outcomes[i].blob.id)?;
    }
    save_marks(&opts.marks, &marks)?;
    crate::testhooks::failpoint("prune-marked");
    // What is due goes first: it needs no space, and an append-only peer refuses
    // here, before a repack adds anything.
    let all: Vec<usize> = (0..report.outcomes.len()).collect();
    let mut deleted_one = false;
    retire(remote, &mut report, &all, &mut marks, &mut deleted_one)?;
    // A window's temporary is a pending upload's for as long as its blob would
    // be: kept until it has been idle for the grace period (and never while its
    // writer lives; in a committed blob, swept at once).
    report.temps =
        remote.sweep_temporaries(domain, node, std::time::Duration::from_secs(opts.grace))?;
    for (i, n) in trims {
        let id = &report.outcomes[i].blob.id;
        match remote.trim(id, window_of[i], n) {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        marks.since.remove(&format!("{}#{n}", id.path()));
        marks.trimmed.insert(format!("{} {n}", id.path()));
    }
    save_marks(&opts.marks, &marks)?;
    if jobs.is_empty() {
        return Ok(report);
    }
    let shown = crate::progress::Progress::new("prune", opts.progress).counting("blobs");
    if let Some((_, bytes)) = report.pack {
        shown.total(jobs.len() as u64, bytes, true);
    }
    let pack = match repack(
        keys,
        remote,
        domain,
        node,
        now,
        &report.outcomes,
        &live,
        &jobs,
        &shown,
    ) {
        Ok(p) => p,
        // A full quota must not stop the deletes above; the pack waits for space.
        Err(Error::Remote(e)) if e.kind == ErrorKind::Full => {
            report.pack = None;
            report.repack_failed = Some(e.to_string());
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    crate::testhooks::failpoint("prune-repacked");
    if let Some((p, _)) = &mut report.pack {
        *p = Some(pack);
    }
    // Everything they held that is used now resolves to the new pack.
    for &i in &jobs {
        let o = &mut report.outcomes[i];
        o.repacked = true;
        marks.since.insert(o.blob.id.path(), now);
        if grace != 0 && o.blob.state() == Some(BlobState::Forgotten) {
            forget(remote, &o.blob.id)?;
        }
        o.fate = if grace == 0 {
            Fate::Deleted
        } else {
            Fate::Marked {
                since: now,
                due: now + grace,
            }
        };
    }
    save_marks(&opts.marks, &marks)?;
    still_listed(
        remote,
        domain,
        node,
        &snaps,
        "the blobs the new pack replaces were not deleted",
    )?;
    retire(remote, &mut report, &jobs, &mut marks, &mut deleted_one)?;
    save_marks(&opts.marks, &marks)?;
    Ok(report)
}

/// Fails unless every snapshot the run read is still listed: a snapshot that
/// left the listing during the run was forgotten elsewhere (then the next run
/// sees it so) or hidden by the store, and a prune acting on a view that changed
/// under it could delete what a hidden snapshot needs. New snapshots are fine
/// (see "Why no lock is needed").
fn still_listed(
    remote: &dyn Remote,
    domain: &str,
    node: &str,
    snaps: &[Snapshot],
    done: &str,
) -> Result<()> {
    let now: HashSet<String> = remote
        .list(domain, node)?
        .into_iter()
        .map(|b| b.path())
        .collect();
    match snaps.iter().find(|s| !now.contains(&s.blob.path())) {
        None => Ok(()),
        Some(gone) => Err(Error::Failed(format!(
            "snapshot {} left the listing of {} during this prune (forgotten elsewhere, or hidden by the store): the view it acted on changed, so it stopped; {done}",
            gone.short_id(),
            remote.describe()
        ))),
    }
}

/// Which candidates to mark afresh. A snapshot committed and forgotten since the
/// last prune (forgotten now, never seen committed or forgotten by that run) may
/// have handed its references to sinks that started meanwhile: what it used, as
/// written and as resolved through the packs, is marked afresh. Only an old mark can
/// be acted on, so with none this reads nothing (marks of version 1 recorded
/// nothing seen, so every forgotten snapshot is new to them: deletion waits one
/// more grace period, once). A new forgotten snapshot whose manifest cannot be read
/// (deleted since the listing, or its windows trimmed by a prune run elsewhere)
/// used something unknown: then every mark is renewed.
fn renewed(
    keys: &Keys,
    remote: &dyn Remote,
    candidates: &[Candidate],
    at: &HashMap<String, usize>,
    resolver: &crate::pack::Resolver,
    old: &Marks,
) -> Result<Vec<bool>> {
    let mut fresh = vec![false; candidates.len()];
    if old.since.is_empty() {
        return Ok(fresh);
    }
    for c in candidates {
        let new_forgotten = c.kind == CandidateKind::Snapshot(BlobState::Forgotten)
            && !old.seen.contains(&c.id.path());
        if !new_forgotten {
            continue;
        }
        let index = match remote.forgotten_index(&c.id) {
            Ok(i) => i,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(vec![true; candidates.len()]),
            Err(e) => return Err(e.into()),
        };
        let read = crate::format::open_header(keys, &index)
            .map_err(|e| Error::Damaged(format!("{}: {e}", c.id.path())))
            .and_then(|header| {
                let snap = Snapshot {
                    blob: c.id.clone(),
                    header: crate::snapshot::Summary::of(&header),
                    chain: crate::format::chain_id(&index),
                };
                crate::snapshot::manifest_nodes_of(keys, remote, resolver, &snap, &header)
            });
        let (mut m, nodes) = match read {
            Ok(m) => m,
            Err(Error::Remote(e)) if e.kind != ErrorKind::NotFound => return Err(e.into()),
            Err(_) => return Ok(vec![true; candidates.len()]),
        };
        let mut mark = |m: &crate::format::Manifest| {
            for c in m.entries.iter().flat_map(|e| e.chunks.iter()) {
                if let Some(&i) = at.get(&m.blobs[c.blob as usize]) {
                    fresh[i] = true;
                }
            }
        };
        mark(&m);
        resolver.resolve(&mut m);
        mark(&m);
        // Its nodes, as written and as resolved.
        for (blob, _) in &nodes {
            if let Some(&i) = at.get(blob) {
                fresh[i] = true;
            }
        }
        for (blob, ..) in node_places(resolver, &nodes) {
            if let Some(&i) = at.get(&blob) {
                fresh[i] = true;
            }
        }
    }
    Ok(fresh)
}

/// Where a manifest's version 3 nodes (blob path as written, [`NodeRef`]) are
/// read from, by the rule chunks follow ([`crate::pack::Resolver`]): (blob path,
/// offset, sealed length, id). A node's seal binds its id, not its place, so it
/// moves into a pack like a chunk.
///
/// [`NodeRef`]: crate::format::NodeRef
fn node_places(
    resolver: &crate::pack::Resolver,
    nodes: &[(String, crate::format::NodeRef)],
) -> Vec<(String, u64, u32, ChunkId)> {
    nodes
        .iter()
        .map(|(blob, n)| {
            let c = crate::format::ChunkRef::whole(n.id, 0, n.offset, n.len);
            match (!resolver.stays(blob))
                .then(|| resolver.moved(&c))
                .flatten()
            {
                Some((p, offset)) => (resolver.packs()[p].path(), offset, n.len, n.id),
                None => (blob.clone(), n.offset, n.len, n.id),
            }
        })
        .collect()
}

/// Forgets `id` (a committed pack before its delete), or restarts the store's
/// idle time of a forgotten blob; one deleted meanwhile is no error.
fn forget(remote: &dyn Remote, id: &BlobId) -> Result<()> {
    match remote.forget(id) {
        Ok(()) => Ok(()),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The windows (number, length) of a part of `part_size` bytes in windows of
/// `window` bytes that no chunk of `used` (sorted by offset) overlaps.
fn unused_windows(used: &[Used], window: u64, count: u64, part_size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut k = 0;
    for n in 0..count {
        let start = n * window;
        let end = (start + window).min(part_size);
        while k < used.len() && used[k].0 + u64::from(used[k].1) <= start {
            k += 1;
        }
        if !(k < used.len() && used[k].0 < end) && end > start {
            out.push((n, end - start));
        }
    }
    out
}

/// Carries out the fates of outcomes `which`: what is due is deleted, a committed
/// pack forgotten first (the store deletes only what is not committed).
fn retire(
    remote: &dyn Remote,
    report: &mut Report,
    which: &[usize],
    marks: &mut Marks,
    deleted_one: &mut bool,
) -> Result<()> {
    for &i in which {
        let o = &mut report.outcomes[i];
        if o.blob.kind == CandidateKind::Pack && o.fate == Fate::Deleted {
            forget(remote, &o.blob.id)?;
        }
        if o.fate != Fate::Deleted {
            continue;
        }
        if matches!(o.blob.state(), Some(BlobState::Pending | BlobState::Orphan)) {
            // A pending upload may have been resumed and committed since the listing.
            match remote.index(&o.blob.id) {
                Ok(_) => {
                    o.fate = Fate::Committed;
                    marks.since.remove(&o.blob.id.path());
                    continue;
                }
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        match remote.delete(&o.blob.id) {
            Ok(()) => {}
            // Another prune got there first.
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        marks.since.remove(&o.blob.id.path());
        if !*deleted_one {
            *deleted_one = true;
            crate::testhooks::failpoint("prune-deleted-one");
        }
    }
    Ok(())
}

/// Copies the used chunks of the candidates `jobs` into one new pack, reading
/// neighbours together and authenticating every chunk before it is copied.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
fn repack(
    keys: &Keys,
    remote: &dyn Remote,
    domain: &str,
    node: &str,
    now: i64,
    outcomes: &[Outcome],
    live: &[Vec<Used>],
    jobs: &[usize],
    shown: &crate::progress::Progress,
) -> Result<BlobId> {
    // The nanoseconds keep two prunes in one second from naming the same pack.
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let mut w = crate::pack::Writer::create(keys, remote, domain, node, (now, ns))?;
    for &i in jobs {
        let blob = &outcomes[i].blob.id;
        let used = &live[i];
        let mut k = 0;
        while k < used.len() {
            // A run of neighbouring chunks, at most MAX_READ bytes.
            let start = used[k].0;
            let mut end = start + u64::from(used[k].1);
            let mut j = k + 1;
            while j < used.len()
                && used[j].0 == end
                && end + u64::from(used[j].1) - start <= crate::restore::MAX_READ
            {
                end += u64::from(used[j].1);
                j += 1;
            }
            let data = crate::remote::retry(|| remote.read(blob, start, end - start))?;
            for &(offset, len, id) in &used[k..j] {
                let from = (offset - start) as usize;
                let sealed = &data[from..from + len as usize];
                let mut copy = sealed.to_vec();
                // A manifest node (kind 6) or a chunk, compressed (kind 7) or
                // not: each opens only as what it says it is, under its id (the
                // kind is in the associated data).
                let node = sealed.get(5) == Some(&(Kind::Node as u8));
                let kind = match sealed.get(5) {
                    Some(&k) if k == Kind::Packed as u8 => Kind::Packed,
                    _ => Kind::Chunk,
                };
                let opens = if node {
                    keys.open_node(&id, &mut copy).is_ok()
                } else {
                    keys.open_in_place(kind, &id, &mut copy).is_ok()
                };
                if !opens {
                    return Err(Error::Damaged(format!(
                        "{} at byte {offset} of {} is damaged, so nothing was repacked (run `chute verify --all`)",
                        if node { "manifest node" } else { "chunk" },
                        blob.path()
                    )));
                }
                w.add(&id, sealed)?;
                shown.add(0, u64::from(len));
            }
            if k == 0 {
                crate::testhooks::failpoint("prune-repacking");
            }
            k = j;
        }
        shown.add(1, 0);
    }
    shown.clear();
    w.finish()
}

pub(crate) fn what(b: &Candidate) -> String {
    use CandidateKind::{Pack, Snapshot, UncommittedPack};
    let kind = match b.kind {
        Pack => "pack".into(),
        UncommittedPack(BlobState::Forgotten) => "retired pack".into(),
        Snapshot(BlobState::Forgotten) => {
            format!("forgotten snapshot {}", snapshot::short_id(&b.id))
        }
        UncommittedPack(BlobState::Pending) => "pack never committed".into(),
        Snapshot(BlobState::Pending) => "upload never committed".into(),
        Snapshot(BlobState::Orphan) | UncommittedPack(BlobState::Orphan) => {
            "left by an interrupted delete".into()
        }
    };
    format!("{} ({kind}, {})", b.id.path(), human_bytes(b.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip() {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let dir = std::env::temp_dir().join(format!("chute-marks-{}", crate::hex::encode(&b)));
        let path = dir.join("prune-marks");
        assert_eq!(load_marks(&path), Marks::default());
        let marks = Marks {
            since: [("d/n/m/t1".to_string(), 5), ("d/n/m/t2".into(), 7)]
                .into_iter()
                .collect(),
            seen: ["d/n/m/t1".to_string(), "d/n/m/t3".into()]
                .into_iter()
                .collect(),
            trimmed: ["d/n/m/t1 7".to_string()].into_iter().collect(),
        };
        save_marks(&path, &marks).unwrap();
        assert_eq!(load_marks(&path), marks);
        std::fs::write(&path, "chute-prune-marks 1\n5 d/n/m/t1\n").unwrap();
        assert_eq!(load_marks(&path).since.get("d/n/m/t1"), Some(&5));
        std::fs::write(&path, "garbage\n1 x\n").unwrap();
        assert_eq!(load_marks(&path), Marks::default());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_mark_never_moves_back() {
        let marks = Marks {
            since: [("d/n/m/t1".to_string(), 1000)].into_iter().collect(),
            ..Marks::default()
        };
        assert_eq!(marks.since_of("d/n/m/t1", 2000, false), 1000);
        // A run whose clock is behind the mark leaves it as it was.
        assert_eq!(marks.since_of("d/n/m/t1", 500, false), 1000);
        assert_eq!(marks.since_of("d/n/m/t1", 2000, true), 2000);
        assert_eq!(marks.since_of("d/n/m/t2", 2000, false), 2000);
    }

    #[test]
    fn unused_windows_are_those_no_chunk_overlaps() {
        // Windows of 10 bytes over a part of 45: chunks at 0..5, 12..25 and 41..43.
        let used = [(0, 5, [0; 32]), (12, 13, [1; 32]), (41, 2, [2; 32])];
        assert_eq!(unused_windows(&used, 10, 5, 45), vec![(3, 10)]);
        let all = vec![(0, 10), (1, 10), (2, 10), (3, 10), (4, 5)];
        assert_eq!(unused_windows(&[], 10, 5, 45), all);
        // A chunk that ends exactly where a window starts does not use it.
        assert_eq!(
            unused_windows(&[(0, 10, [0; 32])], 10, 2, 20),
            vec![(1, 10)]
        );
    }

    // Issue 17.2: a kept snapshot's version 3 manifest nodes may live in a
    // forgotten snapshot's blob (its parent's, reused): they are used bytes of
    // that blob exactly like chunks. Counting only chunk references would delete
    // or trim the blob under a kept manifest; once a repack copied them, they
    // resolve to the pack (by id, like chunks) and the blob is free.
    #[test]
    fn nodes_a_kept_snapshot_reuses_are_used_until_a_pack_holds_them() {
        use crate::blob::BlobId;
        use crate::format::{ChunkRef, Entry, EntryKind, Manifest, NodeRef};
        const NOW: i64 = 1_000_000;
        const GRACE: u64 = 86_400;
        let t1 = BlobId::new("d", "n", "m", "t1").unwrap();
        let candidates = vec![Candidate {
            id: t1.clone(),
            kind: CandidateKind::Snapshot(BlobState::Forgotten),
            bytes: 10_000,
            idle: GRACE,
        }];
        let at: HashMap<String, usize> = [(t1.path(), 0)].into_iter().collect();
        // Snapshot t2's one file uses a chunk of its own blob; two of its nodes
        // are t1's, one its own.
        let mut file = Entry::new(EntryKind::File, b"/f".to_vec());
        file.chunks = vec![ChunkRef::whole([9; 32], 0, 0, 146)];
        file.size = 100;
        let m = Manifest {
            blobs: vec!["d/n/m/t2".into()],
            entries: vec![file],
        };
        let node = |i: u8, offset: u64| NodeRef {
            id: [i; 32],
            blob: 0,
            offset,
            len: 500,
            entries: 1,
        };
        let nodes = vec![
            (t1.path(), node(1, 0)),
            (t1.path(), node(2, 500)),
            ("d/n/m/t2".to_string(), node(3, 146)),
        ];
        let facts = |resolver: &crate::pack::Resolver| {
            let mut live = vec![Vec::new()];
            let mut users = vec![0];
            uses(
                &m,
                &node_places(resolver, &nodes),
                &at,
                &mut live,
                &mut users,
            );
            (live, users)
        };
        let (live, users) = facts(&crate::pack::Resolver::default());
        assert_eq!(users, vec![1]);
        assert_eq!(live[0], vec![(0, 500, [1; 32]), (500, 500, [2; 32])]);
        // The windows holding them are not trimmed (windows of 400: 0, 1, 2).
        let dead = unused_windows(&live[0], 400, 25, 10_000);
        assert_eq!(dead.len(), 22);
        assert!(dead.iter().all(|&(n, _)| n >= 3), "{dead:?}");
        let plan_at = |live: &[Vec<Used>], users: &[usize], repack: f64| {
            plan::plan(
                candidates.clone(),
                &plan::Facts {
                    users,
                    live,
                    dead: &[Vec::new()],
                    fresh: &[false],
                    old: &Marks::default(),
                },
                NOW,
                GRACE,
                repack,
            )
        };
        // Kept (not deleted, not marked), and repacked with the nodes' bytes.
        let p = plan_at(&live, &users, 1.5);
        assert_eq!(p.outcomes[0].fate, Fate::Referenced { by: 1, live: 1000 });
        assert!(p.jobs.is_empty() && p.since.is_empty());
        let p = plan_at(&live, &users, 0.25);
        assert_eq!(p.jobs, vec![0]);

        // A pack holds them now: they resolve there, t1 is unused and marked.
        let pack = BlobId::new("d", "n", "pm", "p1").unwrap();
        let resolver = crate::pack::Resolver::with_packs(
            &["d/n/m/t2"],
            vec![(
                pack.clone(),
                vec![
                    crate::format::Packed {
                        id: [1; 32],
                        offset: 0,
                        len: 500,
                    },
                    crate::format::Packed {
                        id: [2; 32],
                        offset: 500,
                        len: 500,
                    },
                ],
            )],
        );
        let places = node_places(&resolver, &nodes);
        assert_eq!(places[1], (pack.path(), 500, 500, [2; 32]));
        assert_eq!(places[2].0, "d/n/m/t2", "a committed snapshot's stay");
        let (live, users) = facts(&resolver);
        assert_eq!(users, vec![0]);
        let p = plan_at(&live, &users, 0.25);
        assert!(matches!(p.outcomes[0].fate, Fate::Marked { .. }));
    }

    #[test]
    fn ranges_count_once() {
        let mut r = vec![
            (10, 5, [1; 32]),
            (0, 5, [0; 32]),
            (10, 5, [1; 32]),
            (20, 3, [2; 32]),
        ];
        compact(&mut r);
        assert_eq!(r, vec![(0, 5, [0; 32]), (10, 5, [1; 32]), (20, 3, [2; 32])]);
    }
}
