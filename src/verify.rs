//! `chute verify`: are a node's snapshots intact on the remote, and which files are not.
//!
//! Default, without downloading any file data: for each snapshot checked, its
//! manifest is read and opened entry by entry ([`format::Entries`]; this is the
//! only download), its chunk references resolved as a restore would
//! ([`crate::pack::Resolver`]), and for every blob it
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
//! every file with a chunk overlapping it. The first read of a manifest only marks
//! the windows its chunks lie in; the files are named by a second read, made only
//! when a window the snapshot needs is damaged (in this run, for it or an earlier
//! snapshot) or a blob it uses is lost or gone. A blob other than the snapshot's own
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
//! data is caught over time. Chunks are read in batches as the manifest's entries
//! come (at most 16,384 references or 4 MiB of paths held), and each chunk is read
//! once however many files and snapshots share it (the small files packed into
//! one chunk, each a slice of it, too; a bad one names them all): what was checked (or left out of
//! the sample, which depends only on the chunk's place) is kept per blob as byte
//! ranges, merged as they meet. A snapshot's chunks lie back to back in its blob
//! and later snapshots reference earlier chunks, so a few ranges per blob cover
//! any number of chunks; a blob referenced in scattered pieces (a repacked or
//! mostly forgotten one) could need more: past 65,536 ranges a blob's are
//! forgotten and its chunks may be read again (more reads, never fewer). We chose
//! this over a spill-sorted list of every reference (exact whatever the layout):
//! it needs no disk, and reads as the manifest streams. A chunk that fails is
//! remembered (the first 65,536) to name every file sharing it, in this snapshot
//! and later ones. A manifest that fails midway (a version 1 manifest's damage, or
//! a store that stops answering) is reported after the entries before it were
//! checked.
//!
//! Memory, flat in the number of files: one manifest entry (and read-ahead of 1
//! MiB of sealed manifest) at a time, per blob the window bitmap, window hashes
//! and challenge answers (which grow with its bytes, not its files) and the
//! checked ranges, the batch (windows are asked about 256 at a time), and at most
//! four reads of 2 MiB in flight. The listing keeps a summary of each snapshot's
//! header ([`crate::snapshot::Summary`]); the whole header (its manifest's root
//! list grows with its files) is read again for the snapshot being checked only.
//! Measured under 21 MiB peak RSS for `verify --all --read-data` of 200,000 files.
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
//! the snapshots it is damaged in): the first [`MAX_NAMED`] files (and 4 MiB of
//! paths); the rest are counted, once per snapshot each is damaged in. Exit status 0 only if everything checked is
//! intact; damage is [`Error::Damaged`] (1).

use crate::Result;
use crate::blob::BlobId;
use crate::crypto::{ChunkId, Keys};
use crate::format::{self, Entry, EntryKind, Header};
use crate::pack::Resolver;
use crate::remote::{ErrorKind, Remote};
use crate::snapshot::{self, Snapshot};
use crate::spent::Spent;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

/// Most damaged files the report names, and most bytes of their paths; the rest
/// are counted ([`Report::files_more`]).
pub const MAX_NAMED: usize = 10_000;
const MAX_NAMED_BYTES: usize = 4 << 20;

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
    /// The storage-challenge answers sealed at upload, `k` per window (the header's
    /// other parts, its segment table above all, are not kept).
    answers: Vec<[u8; format::ANSWER_LEN]>,
    k: u8,
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

impl BlobCheck {
    /// The challenge this run spends on window `n` and its sealed answer, if the
    /// header records one (else the window is checked by its hash).
    fn answer(&self, n: u64) -> Option<(u8, &[u8; format::ANSWER_LEN])> {
        let j = self.challenge.filter(|&j| j < self.k)?;
        let at = (n as usize)
            .checked_mul(usize::from(self.k))?
            .checked_add(usize::from(j))?;
        Some((j, self.answers.get(at)?))
    }
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
    /// Damaged file path → short ids of the snapshots it is damaged in: the first
    /// [`MAX_NAMED`] files found.
    pub files: BTreeMap<Vec<u8>, BTreeSet<String>>,
    /// Damaged files beyond those `files` names, counted once per snapshot each is
    /// damaged in.
    pub files_more: u64,
    /// Bytes of the paths in `files`.
    named_bytes: usize,
    /// Chunks (id, blob, offset) that opened but hold other bytes than their ids name.
    pub wrong_content: BTreeSet<(crate::crypto::ChunkId, String, u64)>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.damage.is_empty() && self.files.is_empty() && self.files_more == 0
    }

    /// Records that file `path` is damaged in snapshot `snap`: named while the list
    /// has room, counted after.
    fn name_file(&mut self, path: &[u8], snap: &str) {
        if let Some(ids) = self.files.get_mut(path) {
            ids.insert(snap.to_string());
            return;
        }
        if self.files.len() >= MAX_NAMED || self.named_bytes + path.len() > MAX_NAMED_BYTES {
            self.files_more += 1;
            return;
        }
        self.named_bytes += path.len();
        self.files
            .insert(path.to_vec(), BTreeSet::from([snap.to_string()]));
    }
}

/// Which chunks to download: none (window hashes only), or a fraction of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Hashes,
    Read(f64),
}

/// Verifies `snaps`; `broken` are listed snapshots whose index did not open.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
pub fn run(
    keys: &Keys,
    remote: &dyn Remote,
    snaps: &[Snapshot],
    broken: &[BlobId],
    mode: Mode,
    threads: usize,
    spent: &mut Spent,
    show: crate::progress::Show,
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
    let seed = {
        let mut s = [0u8; 32];
        getrandom::fill(&mut s).expect("the system random generator failed");
        s
    };
    let resolver = match snaps.first() {
        Some(s) => Resolver::for_node(keys, remote, &s.blob.domain, &s.blob.node)?,
        None => Resolver::default(),
    };
    let fraction = match mode {
        Mode::Hashes => 1.0,
        Mode::Read(f) => f,
    };
    let mut v = Verify {
        keys,
        remote,
        resolver: std::rc::Rc::new(resolver),
        threads,
        names: Names::default(),
        blobs: HashMap::new(),
        seen: HashSet::new(),
        reader: Reader::new(fraction, seed),
        report,
        progress: crate::progress::Progress::new(
            "verify",
            match mode {
                Mode::Hashes => crate::progress::Show::Off,
                Mode::Read(_) => show,
            },
        ),
    };
    // Files and bytes are counted as the manifests pass, their reads in batches
    // right behind: the headers' totals are exact.
    v.progress.total(
        snaps.iter().map(|s| s.header.files).sum(),
        snaps.iter().map(|s| s.header.bytes).sum(),
        true,
    );
    for snap in snaps {
        match mode {
            Mode::Hashes => v.check_windows(snap, spent)?,
            Mode::Read(_) => v.read_snapshot(snap),
        }
    }
    v.report.blobs = match mode {
        Mode::Hashes => v.blobs.len(),
        Mode::Read(_) => v.reader.read_from.len(),
    };
    Ok(v.report)
}

/// The blobs a run meets, numbered in the order met: chunk references carry these
/// numbers instead of each manifest's own.
type Names = crate::blob::Table;

type Fetch<'a> = Box<dyn FnMut(&format::Span) -> std::io::Result<Vec<u8>> + 'a>;

/// One read of a snapshot's manifest, entry by entry ([`format::Entries`]).
struct Stream<'a> {
    entries: format::Entries<'a, Fetch<'a>>,
    /// The manifest's blob numbers in the run's [`Names`], and whether the
    /// resolver reads each where it was written ([`Resolver::stays`]).
    map: Vec<(u32, bool)>,
    snap: &'a Snapshot,
}

/// The damage line of a manifest that does not open or read.
fn manifest_damaged(snap: &Snapshot, e: &format::Error) -> String {
    format!(
        "snapshot {}: manifest in {} is damaged: {e}",
        snap.short_id(),
        snap.blob.path()
    )
}

impl<'a> Stream<'a> {
    fn open(
        keys: &'a Keys,
        remote: &'a dyn Remote,
        resolver: &std::rc::Rc<Resolver>,
        snap: &'a Snapshot,
        header: Option<&Header>,
    ) -> std::result::Result<Stream<'a>, String> {
        let opened;
        let h = match header {
            Some(h) => h,
            None => {
                opened = snap.open(keys, remote).map_err(|e| e.to_string())?;
                &opened
            }
        };
        let fetch: Fetch<'a> = Box::new(snapshot::manifest_fetch(remote, resolver.clone()));
        let entries = format::Entries::open(keys, &snap.blob.path(), h, fetch)
            .map_err(|e| manifest_damaged(snap, &e))?
            .without_nodes();
        Ok(Stream {
            entries,
            map: Vec::new(),
            snap,
        })
    }

    /// The next entry, its chunk references numbered in `names` and resolved as a
    /// restore would (moved chunks in their packs).
    fn next(
        &mut self,
        resolver: &Resolver,
        names: &mut Names,
    ) -> std::result::Result<Option<Entry>, String> {
        let Some(mut e) = self
            .entries
            .next_entry()
            .map_err(|e| manifest_damaged(self.snap, &e))?
        else {
            return Ok(None);
        };
        let known = self.map.len();
        for b in &self.entries.blobs[known..] {
            self.map
                .push((names.index(b), resolver.is_empty() || resolver.stays(b)));
        }
        for c in &mut e.chunks {
            let (blob, stays) = self.map[c.blob as usize];
            c.blob = blob;
            // Per reference, as a restore resolves them (see `pack`).
            if let Some((p, offset)) = (!stays).then(|| resolver.moved(c)).flatten() {
                c.blob = names.index(&resolver.packs()[p].path());
                c.offset = offset;
            }
        }
        Ok(Some(e))
    }
}

/// Something said of a blob when its header is first looked up.
enum Line {
    Note(String),
    Damage(String),
}

/// One run's state: what is known of each blob met, and the chunk reader.
struct Verify<'a> {
    keys: &'a Keys,
    remote: &'a dyn Remote,
    resolver: std::rc::Rc<Resolver>,
    threads: usize,
    names: Names,
    blobs: HashMap<u32, BlobCheck>,
    /// `--read-data`: blobs other than a snapshot's own asked about for [`gone_note`].
    seen: HashSet<u32>,
    reader: Reader,
    report: Report,
    /// `--read-data`: files and bytes of the manifests passed, of the headers'.
    progress: crate::progress::Progress,
}

impl Verify<'_> {
    /// Looks up the header of blob `b`, met first in a snapshot whose own blob it is
    /// (`own`) or not; what is to be said of it goes to `lines`. A header opened
    /// already is `given` (its window hashes and answers are taken).
    fn register(
        &mut self,
        b: u32,
        own: bool,
        spent: &Spent,
        lines: &mut Vec<(u32, Line)>,
        given: Option<&mut Header>,
    ) {
        let name = &self.names.names[b as usize];
        let mut check = BlobCheck {
            id: None,
            window: 1,
            part_size: 0,
            hashes: Vec::new(),
            answers: Vec::new(),
            k: 0,
            challenge: None,
            spent: false,
            checked: Vec::new(),
            bad: BTreeMap::new(),
            lost: None,
            gone: false,
        };
        let mut fetched = Header::default();
        let header = match (BlobId::parse(name), given) {
            (Err(e), _) => Err(NoHeader::Other(e.to_string())),
            (Ok(id), Some(h)) => Ok((id, h)),
            (Ok(id), None) => blob_header(self.keys, self.remote, &id).map(|h| {
                fetched = h;
                (id, &mut fetched)
            }),
        };
        match header {
            Ok((id, h)) => {
                let j = spent.count(name);
                check.challenge = (j < h.challenges).then_some(j);
                if check.challenge.is_none() {
                    let kind = if h.pack { "pack" } else { "snapshot" };
                    let what = format!("{kind} {}", snapshot::short_id(&id));
                    lines.push((b, Line::Note(hashes_only(&what, h.challenges))));
                }
                check.id = Some(id);
                check.window = u64::from(h.window.max(1));
                check.part_size = h.part_size;
                check.checked = vec![false; h.window_hashes.len()];
                check.k = h.challenges;
                check.hashes = std::mem::take(&mut h.window_hashes);
                check.answers = std::mem::take(&mut h.answers);
            }
            Err(NoHeader::Gone) if !own => {
                lines.push((b, Line::Note(gone_note(name))));
                check.gone = true;
            }
            Err(no) => {
                let why = match no {
                    NoHeader::Gone => {
                        "the blob is missing (no index, committed or forgotten)".into()
                    }
                    NoHeader::Other(why) => why,
                };
                lines.push((b, Line::Damage(format!("blob {name}: {why}"))));
                check.lost = Some(why);
            }
        }
        self.blobs.insert(b, check);
    }

    /// The default check of one snapshot: every window it needs that this run has
    /// not checked yet, by one streaming read of its manifest; then, only if a
    /// window it needs is damaged or a blob it uses lost or gone, a second read that
    /// names its damaged files and reads its chunks in gone blobs.
    fn check_windows(&mut self, snap: &Snapshot, spent: &mut Spent) -> Result<()> {
        let own = self.names.index(&snap.blob.path());
        let mut lines = Vec::new();
        let mut fresh = Vec::new();
        // The listing keeps only a summary of each header: the whole one is read
        // again, once, for the windows and the manifest's root list.
        let mut header = snap.open(self.keys, self.remote);
        if !self.blobs.contains_key(&own) {
            self.register(own, true, spent, &mut lines, header.as_mut().ok());
            fresh.push(own);
        }
        // Per blob, the windows this snapshot's chunks lie in (all of its own).
        let mut need: BTreeMap<u32, Vec<bool>> = BTreeMap::new();
        let needed = match header {
            Ok(h) => self.windows_needed(snap, &h, &mut need, spent, &mut lines, &mut fresh),
            Err(e) => Err(e.to_string()),
        };
        let listed = match needed {
            Ok(lost) => {
                // A damaged segment loses its entries; the rest are still checked.
                for l in lost {
                    self.report.damage.push(format!(
                        "snapshot {}: manifest in {} is damaged: {l} are lost",
                        snap.short_id(),
                        snap.blob.path()
                    ));
                }
                true
            }
            Err(e) => {
                // Still say which windows of its own blob are bad, and nothing of
                // the blobs met in the part of the manifest that was read.
                self.report
                    .damage
                    .push(format!("{e}; its files cannot be listed"));
                for b in fresh.iter().filter(|&&b| b != own) {
                    self.blobs.remove(b);
                }
                lines.retain(|(b, _)| *b == own);
                need.clear();
                false
            }
        };
        for (_, line) in lines {
            match line {
                Line::Note(s) => self.report.notes.push(s),
                Line::Damage(s) => self.report.damage.push(s),
            }
        }
        let windows = self.blobs[&own].checked.len();
        need.insert(own, vec![true; windows]);
        let order = std::iter::once(own).chain(need.keys().copied().filter(|&b| b != own));
        let mut want = Vec::new();
        for b in order {
            let check = self.blobs.get_mut(&b).expect("registered");
            for (n, _) in need[&b].iter().enumerate().filter(|(_, w)| **w) {
                if !check.checked[n] {
                    check.checked[n] = true;
                    want.push((b, n as u64));
                }
            }
        }
        self.ask(want, spent)?;
        let damaged = need.iter().any(|(b, wanted)| {
            let c = &self.blobs[b];
            c.lost.is_some()
                || c.gone
                || c.bad.keys().any(|&n| wanted.get(n as usize) == Some(&true))
        });
        if listed && damaged {
            self.name_damaged(snap);
        }
        Ok(())
    }

    /// Reads `snap`'s manifest once, looking up the headers of blobs not met before
    /// and marking in `need` the windows its chunks lie in (not those of its own
    /// blob: all of them are checked). Returns its lost segments.
    fn windows_needed(
        &mut self,
        snap: &Snapshot,
        header: &Header,
        need: &mut BTreeMap<u32, Vec<bool>>,
        spent: &Spent,
        lines: &mut Vec<(u32, Line)>,
        fresh: &mut Vec<u32>,
    ) -> std::result::Result<Vec<format::Lost>, String> {
        let own = self.names.index(&snap.blob.path());
        let mut stream = Stream::open(self.keys, self.remote, &self.resolver, snap, Some(header))?;
        while let Some(e) = stream.next(&self.resolver, &mut self.names)? {
            for c in e.chunks.iter().filter(|c| c.blob != own) {
                if !self.blobs.contains_key(&c.blob) {
                    self.register(c.blob, false, spent, lines, None);
                    fresh.push(c.blob);
                }
                let check = &self.blobs[&c.blob];
                let wanted = need
                    .entry(c.blob)
                    .or_insert_with(|| vec![false; check.checked.len()]);
                let (first, last) = windows_of(c, check.window);
                for n in first..(wanted.len() as u64).min(last.saturating_add(1)) {
                    wanted[n as usize] = true;
                }
            }
        }
        Ok(std::mem::take(&mut stream.entries.lost))
    }

    /// Asks about windows `want` (blob, window number): by the blob's next storage
    /// challenge (`spent.count(blob)`, counted in `spent` before it is sent), or,
    /// with none left, by its sealed SHA-256. In batches of [`ASK_BATCH`], so what
    /// is held per window asked stays flat however many a snapshot has.
    fn ask(&mut self, want: Vec<(u32, u64)>, spent: &mut Spent) -> Result<()> {
        let spending: BTreeMap<&str, u32> = want
            .iter()
            .filter(|&&(b, n)| {
                let c = &self.blobs[&b];
                c.id.is_some() && !c.spent && c.answer(n).is_some()
            })
            .map(|&(b, _)| (self.names.names[b as usize].as_str(), b))
            .collect();
        // Counted before sent: a run killed midway wastes these, never reuses them.
        if !spending.is_empty() {
            spent.spend(spending.keys().copied()).map_err(|e| {
                crate::Error::Io(
                    "cannot record the storage challenges spent (in the cache dir)".into(),
                    e,
                )
            })?;
            let spending: Vec<u32> = spending.into_values().collect();
            for b in spending {
                if let Some(c) = self.blobs.get_mut(&b) {
                    c.spent = true;
                }
            }
        }
        for batch in want.chunks(ASK_BATCH) {
            let mut work: Vec<Ask> = Vec::with_capacity(batch.len());
            for &(b, n) in batch {
                let name = self.names.names[b as usize].as_str();
                let check = &self.blobs[&b];
                let Some(id) = &check.id else { continue };
                let len = check
                    .window
                    .min(check.part_size.saturating_sub(n * check.window));
                let expect = match check.answer(n) {
                    Some((j, answer)) => Expect::Answer {
                        nonce: self.keys.challenge_nonce(name, n as u32, j),
                        answer: *answer,
                    },
                    None => Expect::Hash(check.hashes[n as usize]),
                };
                work.push(Ask {
                    blob: b,
                    name,
                    id,
                    window: check.window,
                    n,
                    len,
                    expect,
                });
            }
            let found: Vec<(u32, u64, Fault)> =
                ask_windows(self.remote, &work, self.threads, &mut self.report)
                    .into_iter()
                    .map(|(i, fault)| (work[i].blob, work[i].n, fault))
                    .collect();
            for (b, n, fault) in found {
                if let Some(c) = self.blobs.get_mut(&b) {
                    c.bad.insert(n, fault);
                }
            }
        }
        Ok(())
    }

    /// The second read of `snap`'s manifest, when something it needs is damaged:
    /// names every file with a chunk in a damaged window or lost blob, and reads the
    /// chunks it uses in gone blobs.
    fn name_damaged(&mut self, snap: &Snapshot) {
        let short = snap.short_id();
        let mut stream = match Stream::open(self.keys, self.remote, &self.resolver, snap, None) {
            Ok(s) => s,
            Err(e) => {
                self.report
                    .damage
                    .push(format!("{e}; its damaged files cannot be named"));
                return;
            }
        };
        loop {
            let e = match stream.next(&self.resolver, &mut self.names) {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    self.report
                        .damage
                        .push(format!("{e}; its damaged files cannot all be named"));
                    break;
                }
            };
            let blobs = &self.blobs;
            let bad = |c: &format::ChunkRef| match blobs.get(&c.blob) {
                None => true,
                Some(b) if b.lost.is_some() => true,
                Some(b) => {
                    let (first, last) = windows_of(c, b.window);
                    b.bad.range(first..=last).next().is_some()
                }
            };
            if e.kind == EntryKind::File && e.chunks.iter().any(bad) {
                self.report.name_file(&e.path, &short);
            }
            let gone = |b: u32| blobs.get(&b).is_some_and(|c| c.gone);
            self.reader.add(&e, gone, &self.names);
            if self.reader.full() {
                self.flush_reads(&short);
            }
        }
        self.flush_reads(&short);
    }

    /// Reads the chunks gathered so far (see `Reader`), for snapshot `short`.
    fn flush_reads(&mut self, short: &str) {
        self.reader.flush(
            self.keys,
            self.remote,
            &self.names,
            self.threads,
            short,
            &mut self.report,
        );
    }

    /// `--read-data` of one snapshot: its manifest read once, its (sampled) chunks
    /// read in batches as they come, each once a run.
    fn read_snapshot(&mut self, snap: &Snapshot) {
        let own = self.names.index(&snap.blob.path());
        let short = snap.short_id();
        let mut stream = match Stream::open(self.keys, self.remote, &self.resolver, snap, None) {
            Ok(s) => s,
            Err(e) => {
                self.report
                    .damage
                    .push(format!("{e}; its files cannot be listed"));
                return;
            }
        };
        let failed = loop {
            let e = match stream.next(&self.resolver, &mut self.names) {
                Ok(Some(e)) => e,
                Ok(None) => break None,
                Err(e) => break Some(e),
            };
            for c in &e.chunks {
                if c.blob != own && self.seen.insert(c.blob) {
                    self.note_if_gone(c.blob);
                }
            }
            self.reader.add(&e, |_| true, &self.names);
            if e.kind == format::EntryKind::File {
                self.progress.add(1, e.size);
            }
            if self.reader.full() {
                self.flush_reads(&short);
            }
        };
        self.flush_reads(&short);
        for l in std::mem::take(&mut stream.entries.lost) {
            self.report.damage.push(format!(
                "snapshot {short}: manifest in {} is damaged: {l} are lost",
                snap.blob.path()
            ));
        }
        if let Some(e) = failed {
            self.report
                .damage
                .push(format!("{e}; its files cannot be listed"));
        }
    }

    /// What the hash check says of a blob whose index is gone ([`gone_note`]), said by
    /// `--read-data` too, once a run for each blob other than a snapshot's own.
    fn note_if_gone(&mut self, b: u32) {
        let name = &self.names.names[b as usize];
        let missing = |r: crate::remote::Result<crate::format::Index>| matches!(r, Err(e) if e.kind == ErrorKind::NotFound);
        let gone = BlobId::parse(name).is_ok_and(|id| {
            missing(self.remote.index(&id)) && missing(self.remote.forgotten_index(&id))
        });
        if gone {
            self.report.notes.push(gone_note(name));
        }
    }
}

/// The first and last window (of `window` bytes) chunk `c` lies in.
fn windows_of(c: &format::ChunkRef, window: u64) -> (u64, u64) {
    let end = c.offset.saturating_add(u64::from(c.len).max(1) - 1);
    (c.offset / window, end / window)
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
    let (mut index, blob_path) = (index, blob.path());
    format::take_sealed(&mut index)
        .and_then(|sealed| format::open_sealed_header(keys, &blob_path, sealed))
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

/// Windows asked about at once: enough to keep every thread busy, few enough
/// that the batch's memory does not grow with the snapshot.
const ASK_BATCH: usize = 256;

/// One window to ask the remote about.
struct Ask<'a> {
    blob: u32,
    name: &'a str,
    id: &'a BlobId,
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

/// Asks the remote about every window of `work`, `threads` at a time, and reports
/// those that cannot be checked and those damaged; returns the damaged ones (index
/// in `work`, how).
fn ask_windows(
    remote: &dyn Remote,
    work: &[Ask],
    threads: usize,
    report: &mut Report,
) -> Vec<(usize, Fault)> {
    let found: Mutex<Vec<(usize, Fault)>> = Mutex::new(Vec::new());
    let failed: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let numbered: Vec<usize> = (0..work.len()).collect();
    let asked = crate::reads::each_parallel(&numbered, threads.min(16), |&i| {
        let a = &work[i];
        let got = match &a.expect {
            Expect::Hash(want) => remote
                .window_hash(a.id, a.window, a.n)
                .map(|h| h.map(|h| h == *want)),
            Expect::Answer { nonce, answer } => {
                match remote.challenge(a.id, a.window, a.n, nonce) {
                    // Not found: gone, or a store that does not know the route (a
                    // chute serve older than challenges). Not a reason to trust its
                    // hashes instead: either way the window is not proven held.
                    Ok(None) => match remote.window_hash(a.id, a.window, a.n) {
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
    for (i, fault) in &found {
        let Ask {
            name,
            window,
            n,
            len,
            expect,
            ..
        } = &work[*i];
        let start = n * window;
        let what = match (fault, expect) {
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
    }
    report.windows += work.len() as u64;
    report.challenged += work
        .iter()
        .filter(|a| matches!(a.expect, Expect::Answer { .. }))
        .count() as u64;
    report.window_bytes += work.iter().map(|a| a.len).sum::<u64>();
    found
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

/// A chunk read: (blob number, offset, sealed length, whether it opened).
type Checked = (usize, u64, u32, std::result::Result<(), Bad>);

/// A ranged read of chunks (offset, sealed length, chunk id).
/// Per chunk: offset, sealed length, id, [`format::ChunkRef::raw`].
type Group = crate::reads::Run<(u64, u32, crate::crypto::ChunkId, u32)>;

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

/// Chunk references a batch holds before it is read, and files it holds to name.
const BATCH: usize = 16_384;
/// Most bytes of file paths and references a batch holds.
const BATCH_BYTES: usize = 4 << 20;
/// Most separate byte ranges [`Reader`] remembers as checked; past it, a blob's
/// are forgotten (its chunks may then be read again: more reads, never fewer).
const MAX_RANGES: usize = 1 << 16;
/// Most damaged chunks remembered to name the files that share them.
const MAX_BAD: usize = 1 << 16;

/// Chunks by (blob, offset).
type ChunkPlaces = Vec<(u32, u64)>;

/// Downloads and opens chunks in batches, each chunk once a run: it remembers, per
/// blob, the byte ranges whose chunks it checked or left out of the sample, merged
/// (a snapshot's chunks lie back to back in its blob, so a few ranges cover a
/// blob whatever its number of chunks), and the chunks that failed.
struct Reader {
    fraction: f64,
    seed: [u8; 32],
    covered: HashMap<u32, BTreeMap<u64, u64>>,
    ranges: usize,
    bad: HashSet<(u32, u64)>,
    /// Blobs a chunk was read from.
    read_from: HashSet<u32>,
    /// Chunks to read: (blob, offset, sealed length, id).
    todo: Vec<(u32, u64, u32, ChunkId, u32)>,
    /// Files of the batch, with their chunks (blob, offset), to name if one is bad.
    files: Vec<(Vec<u8>, ChunkPlaces)>,
    held: usize,
}

impl Reader {
    fn new(fraction: f64, seed: [u8; 32]) -> Reader {
        Reader {
            fraction,
            seed,
            covered: HashMap::new(),
            ranges: 0,
            bad: HashSet::new(),
            read_from: HashSet::new(),
            todo: Vec::new(),
            files: Vec::new(),
            held: 0,
        }
    }

    /// Whether bytes `offset..offset + len` of blob `b` were checked (or left out).
    fn covers(&self, b: u32, offset: u64, len: u32) -> bool {
        self.covered
            .get(&b)
            .and_then(|m| m.range(..=offset).next_back())
            .is_some_and(|(_, &end)| end >= offset.saturating_add(u64::from(len)))
    }

    /// Remembers bytes `offset..offset + len` of blob `b` as checked.
    fn cover(&mut self, b: u32, offset: u64, len: u32) {
        let m = self.covered.entry(b).or_default();
        let (mut start, mut end) = (offset, offset.saturating_add(u64::from(len)));
        if let Some((&s, &e)) = m.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                m.remove(&s);
                self.ranges -= 1;
            }
        }
        while let Some((&s, &e)) = m.range(start..).next() {
            if s > end {
                break;
            }
            end = end.max(e);
            m.remove(&s);
            self.ranges -= 1;
        }
        m.insert(start, end);
        self.ranges += 1;
        if self.ranges > MAX_RANGES {
            self.ranges -= m.len();
            m.clear();
        }
    }

    /// Takes entry `e`'s chunks in blobs `pick` chooses: those not checked yet and
    /// in the sample are to be read, and `e`, if a file, named if one is bad.
    fn add(&mut self, e: &Entry, pick: impl Fn(u32) -> bool, names: &Names) {
        let mut refs = Vec::new();
        for c in e.chunks.iter().filter(|c| pick(c.blob)) {
            refs.push((c.blob, c.offset));
            if self.covers(c.blob, c.offset, c.len) {
                continue;
            }
            if !sampled(
                &self.seed,
                &names.names[c.blob as usize],
                c.offset,
                self.fraction,
            ) {
                // The sample is a function of the place: out of it every time.
                self.cover(c.blob, c.offset, c.len);
                continue;
            }
            // The files of a pack follow each other and share its one chunk.
            if self
                .todo
                .last()
                .is_some_and(|t| (t.0, t.1) == (c.blob, c.offset))
            {
                continue;
            }
            self.todo.push((c.blob, c.offset, c.len, c.id, c.raw));
        }
        if e.kind == EntryKind::File && !refs.is_empty() {
            self.held += e.path.len() + refs.len() * 16;
            self.files.push((e.path.clone(), refs));
        }
    }

    /// Whether the batch is to be read now.
    fn full(&self) -> bool {
        self.todo.len() >= BATCH || self.files.len() >= BATCH || self.held >= BATCH_BYTES
    }

    /// Reads the batch's chunks, neighbours in one ranged read, and names the
    /// batch's files (of snapshot `snap`) that have a bad chunk.
    fn flush(
        &mut self,
        keys: &Keys,
        remote: &dyn Remote,
        names: &Names,
        threads: usize,
        snap: &str,
        report: &mut Report,
    ) {
        let mut todo = std::mem::take(&mut self.todo);
        crate::sort::by_key(&mut todo, |c| (c.0, c.1));
        todo.dedup_by_key(|c| (c.0, c.1));
        let groups: Vec<Group> = crate::reads::coalesce(
            todo.into_iter().map(|(blob, offset, len, id, raw)| {
                (
                    blob as usize,
                    offset,
                    u64::from(len),
                    (offset, len, id, raw),
                )
            }),
            READ_GROUP,
        );
        let ids: HashMap<usize, std::result::Result<BlobId, String>> = groups
            .iter()
            .map(|g| {
                let id = BlobId::parse(&names.names[g.blob]).map_err(|e| e.to_string());
                (g.blob, id)
            })
            .collect();
        let results: Mutex<Vec<Checked>> = Mutex::new(Vec::new());
        let read = |blob: &BlobId, start: u64, len: u64| {
            crate::remote::retry(|| remote.read(blob, start, len)).map_err(|e| e.to_string())
        };
        let checked = crate::reads::each_parallel(&groups, threads.min(READ_THREADS), |g| {
            let mut mine = Vec::new();
            let mut unpacked = Vec::new();
            match &ids[&g.blob] {
                Err(e) => {
                    for &(offset, len, _, _) in &g.items {
                        mine.push((g.blob, offset, len, Err(Bad::Read(e.clone()))));
                    }
                }
                Ok(blob) => match read(blob, g.start, g.end - g.start) {
                    Ok(mut data) => {
                        for &(offset, len, id, raw) in &g.items {
                            let from = (offset - g.start) as usize;
                            let sealed = &mut data[from..from + len as usize];
                            let r = keys
                                .open_chunk(&id, raw, sealed, &mut unpacked)
                                .map(drop)
                                .map_err(|e| Bad::opened(e, id));
                            mine.push((g.blob, offset, len, r));
                        }
                    }
                    // Pinpoint: one chunk at a time.
                    Err(_) => {
                        for &(offset, len, id, raw) in &g.items {
                            let r = read(blob, offset, u64::from(len))
                                .map_err(Bad::Read)
                                .and_then(|mut d| {
                                    keys.open_chunk(&id, raw, &mut d, &mut unpacked)
                                        .map(drop)
                                        .map_err(|e| Bad::opened(e, id))
                                });
                            mine.push((g.blob, offset, len, r));
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
        for (blob, offset, len, r) in results {
            let b = blob as u32;
            let name = &names.names[blob];
            report.chunks_read += 1;
            report.bytes_read += u64::from(len);
            self.read_from.insert(b);
            self.cover(b, offset, len);
            if let Err(e) = &r {
                report.damage.push(format!(
                    "chunk at bytes {offset}-{} of {name}: {e}",
                    offset + u64::from(len).max(1) - 1
                ));
                if let Bad::WrongContent(id) = e {
                    report.wrong_content.insert((*id, name.clone(), offset));
                }
                if self.bad.len() < MAX_BAD {
                    self.bad.insert((b, offset));
                } else if self.bad.len() == MAX_BAD {
                    // Once: the set stays full, and this marks it said.
                    self.bad.insert((u32::MAX, u64::MAX));
                    report.notes.push(format!(
                        "more than {MAX_BAD} chunks are damaged: the files named are those sharing the first {MAX_BAD}"
                    ));
                }
            }
        }
        let files = std::mem::take(&mut self.files);
        self.held = 0;
        if self.bad.is_empty() {
            return;
        }
        for (path, refs) in files {
            if refs.iter().any(|r| self.bad.contains(r)) {
                report.name_file(&path, snap);
            }
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

    #[test]
    fn checked_ranges_merge_and_cover_only_what_was_checked() {
        let mut r = Reader::new(1.0, [0; 32]);
        r.cover(1, 100, 50);
        r.cover(1, 200, 50);
        assert!(r.covers(1, 100, 50) && r.covers(1, 210, 40));
        assert!(!r.covers(1, 140, 20), "a gap is not checked");
        assert!(!r.covers(2, 100, 50), "nor another blob");
        assert_eq!(r.ranges, 2);
        // The gap filled: one range.
        r.cover(1, 150, 50);
        assert_eq!(r.ranges, 1);
        assert!(r.covers(1, 100, 150) && !r.covers(1, 100, 151));
        // Back to back chunks checked out of order still make one range.
        for o in (0..1000u64).rev() {
            r.cover(3, o * 10, 10);
        }
        assert_eq!(r.covered[&3].len(), 1);
    }

    // Small files packed into one chunk (manifest v3): the chunk is read once for
    // all of them, and a bad one names every file holding a slice of it.
    #[test]
    fn a_chunk_shared_by_packed_files_is_read_once_and_names_them_all() {
        let mut names = Names::default();
        let b = names.index("d/n/m/t");
        let mut r = Reader::new(1.0, [0; 32]);
        let pack = format::ChunkRef::whole([9; 32], b, 4096, 300_046);
        for (i, skip) in [0u32, 1000, 3000].into_iter().enumerate() {
            let mut e = Entry::new(EntryKind::File, format!("/f{i}").into_bytes());
            e.chunks = vec![format::ChunkRef {
                skip,
                take: 1000,
                ..pack
            }];
            r.add(&e, |_| true, &names);
        }
        assert_eq!(r.todo, [(b, 4096, 300_046, [9; 32], 0)]);
        assert_eq!(r.files.len(), 3);
        // Its bytes read and found bad: the three are named.
        r.bad.insert((b, 4096));
        let mut report = Report::default();
        for (path, refs) in std::mem::take(&mut r.files) {
            if refs.iter().any(|x| r.bad.contains(x)) {
                report.name_file(&path, "aaaa");
            }
        }
        assert_eq!(report.files.len(), 3);
    }

    #[test]
    fn the_report_names_the_first_files_and_counts_the_rest() {
        let mut r = Report::default();
        for i in 0..MAX_NAMED + 5 {
            r.name_file(format!("/f{i}").as_bytes(), "aaaa");
        }
        // Files already named still gain snapshots; others are counted.
        r.name_file(b"/f0", "bbbb");
        r.name_file(format!("/f{}", MAX_NAMED + 1).as_bytes(), "bbbb");
        assert_eq!(r.files.len(), MAX_NAMED);
        assert_eq!(r.files[&b"/f0"[..]].len(), 2);
        assert_eq!(r.files_more, 6);
        assert!(!r.intact());
    }
}
