//! `chute verify`: are a node's snapshots intact on the remote, and which files are not.
//!
//! Default, without downloading any file data: for each snapshot checked, its
//! manifest is read and opened (this is the only download), its chunk references
//! resolved as a restore would ([`crate::pack::Resolver`]), and for every blob it
//! uses (its own, earlier ones it shares chunks with, committed or forgotten, and
//! packs) the sealed header in that blob's index gives the window size, the
//! SHA-256 of every window and its storage-challenge answers (see
//! [`crate::format`]'s "Storage challenges"). The windows checked are those the
//! snapshot needs: every window of its own blob, and in other blobs the windows its
//! chunks lie in (prune may have trimmed the others of a forgotten blob); each once
//! a run however many snapshots share it.
//!
//! Each is checked by a storage challenge: the run spends challenge `j` of the
//! blob, `j` being how many runs of this node spent one of its challenges before
//! ([`crate::spent`], in the node's cache dir, counted before the challenges are
//! sent), asks the remote for `HMAC-SHA256(nonce j, the window's bytes)`
//! ([`Remote::challenge`]) and compares its first 8 bytes with the answer sealed
//! at upload. The store computes it by reading the window, so this catches a store
//! that kept the hashes but not the data, as well as accidental damage. A blob
//! records K = [`format::CHALLENGES`] (4) challenges, so its windows are proven
//! held for 4 runs that check it. After that, and for a header written before
//! challenges (version 1, K = 0), its windows are compared with their sealed
//! SHA-256s as the store answers them, from its record of the hashes it verified
//! (re-reading any window whose stat changed), and verify says once per run that a
//! store that kept hashes but not data passes that check: `--read-data` (or
//! `--read-data-subset`, over time) is then the proof. Spent challenges are never
//! reset (the store has seen their answers). Left for later: after a clean
//! `--read-data` pass, seal a fresh epoch of challenges for the blob (answers the
//! pass computed from the bytes it checked, kept in a sealed side object, with
//! nonces derived from the epoch number), so proofs need not end after K runs.
//!
//! A store that answers a window's hash but not its challenge (a `chute serve`
//! older than challenges) has that window reported as not checkable (exit 1), never
//! checked by its hash instead: a store could otherwise decline every challenge.
//!
//! A window whose answer or hash differs, or which is gone, is damaged, and so is
//! every file with a chunk overlapping it. A blob other than the snapshot's own
//! whose index is gone (neither committed nor forgotten: an older snapshot deleted
//! or lost on the store) has no sealed header to check its windows against: the
//! chunks the snapshot uses from it are downloaded and opened instead, as
//! `--read-data` would, and the blob is named once as gone (a note, not damage:
//! the snapshots verified are whole). `--read-data` names it the same way. The cost is the store's: a challenge
//! reads every byte checked (see README's Performance section).
//!
//! `--read-data` downloads every chunk the snapshots reference, neighbours in one
//! ranged read, and authenticates and decrypts each; `--read-data-subset N%` does so
//! for a random N% of the chunks, chosen afresh each run, so that a peer that dropped
//! data is caught over time. Each chunk is read once however many files and
//! snapshots share it. Memory: one manifest at a time, the set of chunks already
//! checked (a blob path and offset each), and at most four reads of 2 MiB in flight.
//!
//! A manifest segment that does not open (version 2 manifests, see
//! [`crate::format`]) is damage, named by the entries it loses ("N entries between
//! /a and /b"), and both modes still check every entry of the other segments.
//!
//! Every chunk read is checked to be the content its id names, not only to
//! authenticate ([`Keys::open_chunk`]): one that is not (an older chute could seal
//! such a chunk from a file rewritten while it was read) is damage, and is
//! recorded in the node's cache ([`crate::cache`]) so the next sink stores that
//! content afresh instead of reusing it.
//!
//! The report names each damaged window or chunk and each damaged file once (with
//! the snapshots it is damaged in). Exit status 0 only if everything checked is
//! intact; damage is [`Error::Damaged`] (1).

use crate::Result;
use crate::blob::BlobId;
use crate::crypto::Keys;
use crate::format::{self, EntryKind, Header, Manifest};
use crate::remote::{ErrorKind, Remote};
use crate::snapshot::{self, Snapshot};
use crate::spent::Spent;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// How a checked piece failed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fault {
    Missing,
    Changed,
}

/// What is known about one blob a manifest references.
struct BlobCheck {
    id: Option<BlobId>,
    window: u64,
    part_size: u64,
    /// The SHA-256 of each window, sealed at upload.
    hashes: Vec<[u8; 32]>,
    /// Its header, for the storage-challenge answers sealed at upload.
    header: Option<Header>,
    /// The challenge this run spends on its windows (`None`: all spent, or none
    /// recorded: the store's hashes only).
    challenge: Option<u8>,
    /// Whether that challenge is counted in the record yet.
    spent: bool,
    /// Windows already asked about (or queued).
    checked: Vec<bool>,
    /// Damaged windows by number (only filled in the hash check).
    bad: BTreeMap<u64, Fault>,
    /// Why the whole blob is unusable, if it is.
    lost: Option<String>,
    /// Its index is gone, but later snapshots use its chunks: those are read.
    gone: bool,
}

/// What a verify found.
#[derive(Debug, Default)]
pub struct Report {
    pub snapshots: usize,
    pub blobs: usize,
    pub windows: u64,
    pub window_bytes: u64,
    /// Of `windows`, those checked by a storage challenge (the rest by hash).
    pub challenged: u64,
    /// Things to say once on stderr (blobs whose challenges are used up).
    pub notes: Vec<String>,
    pub chunks_read: u64,
    pub bytes_read: u64,
    /// Lines naming damaged windows, chunks, manifests and indexes, in order found.
    pub damage: Vec<String>,
    /// Damaged file path → short ids of the snapshots it is damaged in.
    pub files: BTreeMap<Vec<u8>, BTreeSet<String>>,
    /// Chunks (id, blob, offset) that opened but hold other bytes than their ids name.
    pub wrong_content: BTreeSet<(crate::crypto::ChunkId, String, u64)>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.damage.is_empty() && self.files.is_empty()
    }
}

/// Which chunks to download: none (window hashes only), or a fraction of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Hashes,
    Read(f64),
}

/// Verifies `snaps`; `broken` are listed snapshots whose index did not open.
pub fn run(
    keys: &Keys,
    remote: &dyn Remote,
    snaps: &[Snapshot],
    broken: &[BlobId],
    mode: Mode,
    threads: usize,
    spent: &mut Spent,
) -> Result<Report> {
    let mut report = Report {
        snapshots: snaps.len() + broken.len(),
        ..Report::default()
    };
    for b in broken {
        report.damage.push(format!(
            "snapshot {} ({}): its index does not open: damaged, or written with another key",
            snapshot::short_id(b),
            b.path()
        ));
    }
    let mut blobs: HashMap<String, BlobCheck> = HashMap::new();
    let seed = {
        let mut s = [0u8; 32];
        getrandom::fill(&mut s).expect("the system random generator failed");
        s
    };
    let mut chunks_done: HashMap<(String, u64), bool> = HashMap::new();
    // Blobs other than a snapshot's own that `--read-data` found present (true) or gone.
    let mut blobs_seen: HashMap<String, bool> = HashMap::new();
    let resolver = match snaps.first() {
        Some(s) => crate::pack::Resolver::for_node(keys, remote, &s.blob.domain, &s.blob.node)?,
        None => crate::pack::Resolver::default(),
    };
    for snap in snaps {
        let m = match crate::snapshot::salvage(keys, remote, snap) {
            Ok((mut m, lost)) => {
                // A damaged segment loses its entries; the rest are still checked.
                for l in lost {
                    report.damage.push(format!(
                        "snapshot {}: manifest in {} is damaged: {l} are lost",
                        snap.short_id(),
                        snap.blob.path()
                    ));
                }
                // Checked where a restore would read: moved chunks in their packs.
                resolver.resolve(&mut m);
                m
            }
            Err(e) => {
                report
                    .damage
                    .push(format!("{e}; its files cannot be listed"));
                if mode == Mode::Hashes {
                    // Still say which windows of its own blob are bad.
                    let own = Manifest {
                        blobs: vec![snap.blob.path()],
                        entries: Vec::new(),
                    };
                    check_blobs(keys, remote, &own, &mut blobs, &mut report, threads, spent)?;
                }
                continue;
            }
        };
        match mode {
            Mode::Hashes => {
                check_blobs(keys, remote, &m, &mut blobs, &mut report, threads, spent)?;
                files_in_bad_windows(snap, &m, &blobs, &mut report);
                let gone = chunks_in(&m, |b| blobs.get(b).is_some_and(|c| c.gone));
                if !gone.entries.is_empty() {
                    read_chunks(
                        keys,
                        remote,
                        snap,
                        &gone,
                        1.0,
                        &seed,
                        &mut chunks_done,
                        &mut report,
                        threads,
                    );
                }
            }
            Mode::Read(fraction) => {
                note_gone_blobs(remote, &m, &mut blobs_seen, &mut report);
                read_chunks(
                    keys,
                    remote,
                    snap,
                    &m,
                    fraction,
                    &seed,
                    &mut chunks_done,
                    &mut report,
                    threads,
                );
            }
        }
    }
    report.blobs = match mode {
        Mode::Hashes => blobs.len(),
        Mode::Read(_) => chunks_done
            .keys()
            .map(|(b, _)| b.as_str())
            .collect::<BTreeSet<_>>()
            .len(),
    };
    Ok(report)
}

/// Why a referenced blob's header could not be had.
enum NoHeader {
    /// Neither a committed nor a forgotten index: the blob's snapshot was deleted or
    /// lost on the store, though its windows may still hold chunks later snapshots use.
    Gone,
    Other(String),
}

/// The sealed header of a blob a manifest references, committed or forgotten.
fn blob_header(
    keys: &Keys,
    remote: &dyn Remote,
    blob: &BlobId,
) -> std::result::Result<Header, NoHeader> {
    let index = match remote.index(blob) {
        Ok(i) => i,
        Err(e) if e.kind == ErrorKind::NotFound => match remote.forgotten_index(blob) {
            Ok(i) => i,
            Err(e) if e.kind == ErrorKind::NotFound => return Err(NoHeader::Gone),
            Err(e) => return Err(NoHeader::Other(e.to_string())),
        },
        Err(e) => return Err(NoHeader::Other(e.to_string())),
    };
    format::open_header(keys, &index)
        .map_err(|e| NoHeader::Other(format!("its index does not open: {e}")))
}

/// The note for a blob whose index is gone while a later snapshot still uses its
/// chunks, which are then read and opened instead of checked by window.
fn gone_note(name: &str) -> String {
    format!(
        "blob {name}: its index is gone (its snapshot was deleted or lost on the store); the chunks later snapshots use from it are read and checked instead"
    )
}

/// What a window is checked against.
enum Expect {
    /// Its SHA-256, which the store answers (from its record, when it has one).
    Hash([u8; 32]),
    /// The answer sealed at upload to a storage challenge, which the store can
    /// give only by reading the window.
    Answer {
        nonce: crate::crypto::ChallengeNonce,
        answer: [u8; format::ANSWER_LEN],
    },
}

/// One window to ask the remote about.
struct Ask {
    name: String,
    id: BlobId,
    window: u64,
    n: u64,
    len: u64,
    expect: Expect,
}

/// What is said once per run about a blob whose windows only the store's hashes
/// check (see [`crate::format`]'s "Storage challenges").
fn hashes_only(what: &str, k: u8) -> String {
    let why = if k == 0 {
        "it records no storage challenges (written by an older chute)".to_string()
    } else {
        format!("its {k} storage challenges are used up")
    };
    format!(
        "{what}: {why}; its windows are checked by the store's hashes only (a store that kept hashes but not data passes): run verify --read-data to check the data itself"
    )
}

/// Checks every window `m` needs that was not checked yet: all of the snapshot's
/// own blob (blob 0: its chunks and manifest), and of other blobs the windows its
/// chunks lie in. Only those: prune may have trimmed the rest of a forgotten
/// snapshot's blob. A blob with an unspent storage challenge has its windows
/// challenged (challenge `spent.count(blob)`, counted in `spent` before it is
/// sent); one without is compared with its sealed SHA-256s.
fn check_blobs(
    keys: &Keys,
    remote: &dyn Remote,
    m: &Manifest,
    blobs: &mut HashMap<String, BlobCheck>,
    report: &mut Report,
    threads: usize,
    spent: &mut Spent,
) -> Result<()> {
    // The headers of blobs not seen before.
    let mut used = vec![false; m.blobs.len()];
    if let Some(own) = used.first_mut() {
        *own = true;
    }
    for c in m.entries.iter().flat_map(|e| e.chunks.iter()) {
        used[c.blob as usize] = true;
    }
    for (name, _) in m.blobs.iter().zip(&used).filter(|(_, u)| **u) {
        if blobs.contains_key(name) {
            continue;
        }
        let mut check = BlobCheck {
            id: None,
            window: 1,
            part_size: 0,
            hashes: Vec::new(),
            header: None,
            challenge: None,
            spent: false,
            checked: Vec::new(),
            bad: BTreeMap::new(),
            lost: None,
            gone: false,
        };
        let header = BlobId::parse(name)
            .map_err(|e| NoHeader::Other(e.to_string()))
            .and_then(|id| blob_header(keys, remote, &id).map(|h| (id, h)));
        match header {
            Ok((id, mut h)) => {
                let j = spent.count(name);
                check.challenge = (j < h.challenges).then_some(j);
                if check.challenge.is_none() {
                    let kind = if h.pack { "pack" } else { "snapshot" };
                    let what = format!("{kind} {}", snapshot::short_id(&id));
                    report.notes.push(hashes_only(&what, h.challenges));
                }
                check.id = Some(id);
                check.window = u64::from(h.window.max(1));
                check.part_size = h.part_size;
                check.checked = vec![false; h.window_hashes.len()];
                check.hashes = std::mem::take(&mut h.window_hashes);
                check.header = Some(h);
            }
            Err(NoHeader::Gone) if *name != m.blobs[0] => {
                report.notes.push(gone_note(name));
                check.gone = true;
            }
            Err(no) => {
                let why = match no {
                    NoHeader::Gone => {
                        "the blob is missing (no index, committed or forgotten)".into()
                    }
                    NoHeader::Other(why) => why,
                };
                report.damage.push(format!("blob {name}: {why}"));
                check.lost = Some(why);
            }
        }
        blobs.insert(name.clone(), check);
    }
    // The windows needed, not yet checked.
    let mut want: Vec<(usize, u64)> = Vec::new();
    let mut need = |b: usize, first: u64, last: u64, blobs: &mut HashMap<String, BlobCheck>| {
        let Some(check) = blobs.get_mut(&m.blobs[b]) else {
            return;
        };
        let count = check.checked.len() as u64;
        for n in first..count.min(last.saturating_add(1)) {
            let seen = &mut check.checked[n as usize];
            if !*seen {
                *seen = true;
                want.push((b, n));
            }
        }
    };
    if !m.blobs.is_empty() {
        need(0, 0, u64::MAX, blobs);
    }
    for c in m.entries.iter().flat_map(|e| e.chunks.iter()) {
        let b = c.blob as usize;
        if b == 0 {
            continue;
        }
        let w = blobs.get(&m.blobs[b]).map_or(1, |x| x.window);
        let last = (c.offset + u64::from(c.len).max(1) - 1) / w;
        need(b, c.offset / w, last, blobs);
    }
    let mut work: Vec<Ask> = Vec::new();
    let mut spending: BTreeSet<String> = BTreeSet::new();
    for (b, n) in want {
        let name = &m.blobs[b];
        let check = &blobs[name];
        let Some(id) = &check.id else { continue };
        let len = check
            .window
            .min(check.part_size.saturating_sub(n * check.window));
        let answer = check
            .challenge
            .and_then(|j| Some((j, check.header.as_ref()?.answer(n as usize, j)?)));
        let expect = match answer {
            Some((j, answer)) => {
                if !check.spent {
                    spending.insert(name.clone());
                }
                Expect::Answer {
                    nonce: keys.challenge_nonce(name, n as u32, j),
                    answer: *answer,
                }
            }
            None => Expect::Hash(check.hashes[n as usize]),
        };
        work.push(Ask {
            name: name.clone(),
            id: id.clone(),
            window: check.window,
            n,
            len,
            expect,
        });
    }
    // Counted before sent: a run killed midway wastes these, never reuses them.
    if !spending.is_empty() {
        spent
            .spend(spending.iter().map(String::as_str))
            .map_err(|e| {
                crate::Error::Io(
                    "cannot record the storage challenges spent (in the cache dir)".into(),
                    e,
                )
            })?;
        for name in &spending {
            if let Some(b) = blobs.get_mut(name) {
                b.spent = true;
            }
        }
    }
    let found: Mutex<Vec<(usize, Fault)>> = Mutex::new(Vec::new());
    let failed: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let numbered: Vec<usize> = (0..work.len()).collect();
    let asked = crate::reads::each_parallel(&numbered, threads.min(16), |&i| {
        let a = &work[i];
        let got = match &a.expect {
            Expect::Hash(want) => remote
                .window_hash(&a.id, a.window, a.n)
                .map(|h| h.map(|h| h == *want)),
            Expect::Answer { nonce, answer } => {
                match remote.challenge(&a.id, a.window, a.n, nonce) {
                    // Not found: gone, or a store that does not know the route (a
                    // chute serve older than challenges). Not a reason to trust its
                    // hashes instead: either way the window is not proven held.
                    Ok(None) => match remote.window_hash(&a.id, a.window, a.n) {
                        Ok(Some(_)) => Err(crate::remote::Error::new(
                            ErrorKind::Refused,
                            "the store answers its hash but not its storage challenge (a chute serve older than this chute? upgrade it; verify --read-data checks the data meanwhile)",
                        )),
                        _ => Ok(None),
                    },
                    r => r.map(|h| h.map(|h| h[..format::ANSWER_LEN] == answer[..])),
                }
            }
        };
        match got {
            Ok(Some(true)) => {}
            Ok(Some(false)) => found.lock().expect("poisoned").push((i, Fault::Changed)),
            Ok(None) => found.lock().expect("poisoned").push((i, Fault::Missing)),
            Err(e) => failed.lock().expect("poisoned").push((i, e.to_string())),
        }
        Ok::<(), std::convert::Infallible>(())
    });
    let Ok(()) = asked;
    // A remote that cannot answer is not damage we can name, but it is not intact.
    let mut failed = failed.into_inner().expect("poisoned");
    crate::sort::sort(&mut failed);
    for (i, e) in failed {
        let Ask { name, n, .. } = &work[i];
        report
            .damage
            .push(format!("window {n} of {name}: cannot be checked: {e}"));
    }
    let mut found = found.into_inner().expect("poisoned");
    crate::sort::by_key(&mut found, |(i, _)| *i);
    for (i, fault) in found {
        let Ask {
            name,
            window,
            n,
            len,
            expect,
            ..
        } = &work[i];
        let start = n * window;
        let what = match (&fault, expect) {
            (Fault::Missing, _) => "missing",
            (Fault::Changed, Expect::Hash(_)) => {
                "changed (its SHA-256 is not the one sealed at upload)"
            }
            (Fault::Changed, Expect::Answer { .. }) => {
                "changed or not held (the store's answer to its storage challenge is not the one sealed at upload)"
            }
        };
        report.damage.push(format!(
            "window {n} of {name} (bytes {start}-{}): {what}",
            start + (*len).max(1) - 1
        ));
        if let Some(b) = blobs.get_mut(name) {
            b.bad.insert(*n, fault);
        }
    }
    report.windows += work.len() as u64;
    report.challenged += work
        .iter()
        .filter(|a| matches!(a.expect, Expect::Answer { .. }))
        .count() as u64;
    report.window_bytes += work.iter().map(|a| a.len).sum::<u64>();
    Ok(())
}

/// The entries of `m` cut to their chunks in blobs `pick` chooses (by name).
fn chunks_in(m: &Manifest, pick: impl Fn(&str) -> bool) -> Manifest {
    let picked: Vec<bool> = m.blobs.iter().map(|b| pick(b)).collect();
    let entries = m
        .entries
        .iter()
        .filter(|e| e.chunks.iter().any(|c| picked[c.blob as usize]))
        .map(|e| {
            let mut e = e.clone();
            e.chunks.retain(|c| picked[c.blob as usize]);
            e
        })
        .collect();
    Manifest {
        blobs: m.blobs.clone(),
        entries,
    }
}

/// What the hash check says of a blob whose index is gone ([`gone_note`]), said by
/// `--read-data` too: it asks for the index of each blob other than the snapshot's
/// own that `m` has chunks in, once per run.
fn note_gone_blobs(
    remote: &dyn Remote,
    m: &Manifest,
    seen: &mut HashMap<String, bool>,
    report: &mut Report,
) {
    let mut used = vec![false; m.blobs.len()];
    for c in m.entries.iter().flat_map(|e| e.chunks.iter()) {
        used[c.blob as usize] = true;
    }
    for (name, _) in m.blobs.iter().zip(used).skip(1).filter(|(_, u)| *u) {
        if seen.contains_key(name) {
            continue;
        }
        let missing = |r: crate::remote::Result<crate::format::Index>| matches!(r, Err(e) if e.kind == ErrorKind::NotFound);
        let gone = BlobId::parse(name)
            .is_ok_and(|id| missing(remote.index(&id)) && missing(remote.forgotten_index(&id)));
        if gone {
            report.notes.push(gone_note(name));
        }
        seen.insert(name.clone(), !gone);
    }
}

/// Names every file of `snap` that has a chunk in a damaged window or lost blob.
fn files_in_bad_windows(
    snap: &Snapshot,
    m: &Manifest,
    blobs: &HashMap<String, BlobCheck>,
    report: &mut Report,
) {
    for e in m.entries.iter().filter(|e| e.kind == EntryKind::File) {
        let damaged = e.chunks.iter().any(|c| {
            let Some(b) = blobs.get(&m.blobs[c.blob as usize]) else {
                return true;
            };
            if b.lost.is_some() {
                return true;
            }
            let first = c.offset / b.window;
            let last = (c.offset + u64::from(c.len) - 1) / b.window;
            b.bad.range(first..=last).next().is_some()
        });
        if damaged {
            report
                .files
                .entry(e.path.clone())
                .or_default()
                .insert(snap.short_id());
        }
    }
}

/// Whether the chunk at (blob, offset) is in this run's sample.
fn sampled(seed: &[u8; 32], blob: &str, offset: u64, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    let mut b = seed.to_vec();
    b.extend_from_slice(blob.as_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    let h = crate::crypto::sha256(&b);
    let x = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    (x as f64) < fraction * (u64::MAX as f64)
}

/// Most bytes one ranged read fetches (a larger chunk is read alone). Smaller than
/// restore's reads: each thread holds one in memory, and verify keeps to the client's
/// 32 MiB with four threads.
const READ_GROUP: u64 = 2 << 20;
/// Most threads reading data at once, for the same reason.
const READ_THREADS: usize = 4;

/// A chunk read: (blob table index, offset, whether it opened).
type Checked = (usize, u64, std::result::Result<(), Bad>);

/// A ranged read of neighbouring chunks of one blob.
/// A ranged read of chunks (offset, sealed length, chunk id).
type Group = crate::reads::Run<(u64, u32, crate::crypto::ChunkId)>;

/// Why a chunk failed the read check.
#[derive(Debug)]
enum Bad {
    /// It could not be read.
    Read(String),
    /// It did not open: damaged, or sealed under another key.
    Open(crate::crypto::OpenError),
    /// It opened, but its bytes are not the content its id names.
    WrongContent(crate::crypto::ChunkId),
}

impl Bad {
    fn opened(e: crate::crypto::OpenError, id: crate::crypto::ChunkId) -> Bad {
        match e {
            crate::crypto::OpenError::WrongContent => Bad::WrongContent(id),
            e => Bad::Open(e),
        }
    }
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Read(e) => f.write_str(e),
            Bad::Open(e) => e.fmt(f),
            Bad::WrongContent(_) => crate::crypto::OpenError::WrongContent.fmt(f),
        }
    }
}

/// Downloads and opens the (sampled, not yet checked) chunks of one snapshot.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
fn read_chunks(
    keys: &Keys,
    remote: &dyn Remote,
    snap: &Snapshot,
    m: &Manifest,
    fraction: f64,
    seed: &[u8; 32],
    done: &mut HashMap<(String, u64), bool>,
    report: &mut Report,
    threads: usize,
) {
    let ids: Vec<std::result::Result<BlobId, String>> = m
        .blobs
        .iter()
        .map(|b| BlobId::parse(b).map_err(|e| e.to_string()))
        .collect();
    let mut todo: Vec<(usize, u64, u32, crate::crypto::ChunkId)> = m
        .entries
        .iter()
        .flat_map(|e| e.chunks.iter())
        .filter(|c| {
            let name = &m.blobs[c.blob as usize];
            !done.contains_key(&(name.clone(), c.offset)) && sampled(seed, name, c.offset, fraction)
        })
        .map(|c| (c.blob as usize, c.offset, c.len, c.id))
        .collect();
    crate::sort::by_key(&mut todo, |c| (c.0, c.1));
    todo.dedup_by_key(|c| (c.0, c.1));
    let groups: Vec<Group> = crate::reads::coalesce(
        todo.into_iter()
            .map(|(blob, offset, len, id)| (blob, offset, u64::from(len), (offset, len, id))),
        READ_GROUP,
    );
    let results: Mutex<Vec<Checked>> = Mutex::new(Vec::new());
    let read = |blob: &BlobId, start: u64, len: u64| {
        crate::remote::retry(|| remote.read(blob, start, len)).map_err(|e| e.to_string())
    };
    let checked = crate::reads::each_parallel(&groups, threads.min(READ_THREADS), |g| {
        let mut mine = Vec::new();
        match &ids[g.blob] {
            Err(e) => {
                for c in &g.items {
                    mine.push((g.blob, c.0, Err(Bad::Read(e.clone()))));
                }
            }
            Ok(blob) => match read(blob, g.start, g.end - g.start) {
                Ok(mut data) => {
                    for &(offset, len, id) in &g.items {
                        let from = (offset - g.start) as usize;
                        let sealed = &mut data[from..from + len as usize];
                        let r = keys
                            .open_chunk(&id, sealed)
                            .map(drop)
                            .map_err(|e| Bad::opened(e, id));
                        mine.push((g.blob, offset, r));
                    }
                }
                // Pinpoint: one chunk at a time.
                Err(_) => {
                    for &(offset, len, id) in &g.items {
                        let r = read(blob, offset, u64::from(len))
                            .map_err(Bad::Read)
                            .and_then(|mut d| {
                                keys.open_chunk(&id, &mut d)
                                    .map(drop)
                                    .map_err(|e| Bad::opened(e, id))
                            });
                        mine.push((g.blob, offset, r));
                    }
                }
            },
        }
        results.lock().expect("poisoned").append(&mut mine);
        Ok::<(), std::convert::Infallible>(())
    });
    let Ok(()) = checked;
    let mut results = results.into_inner().expect("poisoned");
    crate::sort::by_key(&mut results, |r| (r.0, r.1));
    let lens: HashMap<(usize, u64), u32> = groups
        .iter()
        .flat_map(|g| g.items.iter().map(move |c| ((g.blob, c.0), c.1)))
        .collect();
    for (blob, offset, r) in results {
        let name = &m.blobs[blob];
        let len = lens.get(&(blob, offset)).copied().unwrap_or(0);
        report.chunks_read += 1;
        report.bytes_read += u64::from(len);
        if let Err(e) = &r {
            report.damage.push(format!(
                "chunk at bytes {offset}-{} of {name}: {e}",
                offset + u64::from(len).max(1) - 1
            ));
            if let Bad::WrongContent(id) = e {
                report.wrong_content.insert((*id, name.clone(), offset));
            }
        }
        done.insert((name.clone(), offset), r.is_ok());
    }
    for e in m.entries.iter().filter(|e| e.kind == EntryKind::File) {
        let bad = e
            .chunks
            .iter()
            .any(|c| done.get(&(m.blobs[c.blob as usize].clone(), c.offset)) == Some(&false));
        if bad {
            report
                .files
                .entry(e.path.clone())
                .or_default()
                .insert(snap.short_id());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_about_the_fraction_and_differ_by_seed() {
        let count = |seed: &[u8; 32]| {
            (0..10_000u64)
                .filter(|&o| sampled(seed, "d/n/m/t", o * 1000, 0.1))
                .count()
        };
        let (a, b) = (count(&[1; 32]), count(&[2; 32]));
        assert!((800..1200).contains(&a), "{a}");
        assert!((800..1200).contains(&b), "{b}");
        let same = (0..10_000u64)
            .filter(|&o| sampled(&[1; 32], "x", o, 0.1) && sampled(&[2; 32], "x", o, 0.1))
            .count();
        assert!(same < 300, "two seeds picked {same} of the same chunks");
    }
}
