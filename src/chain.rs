//! The snapshot chain and the node's local record of it: how a node notices that a
//! store rolled back, hides snapshots, or shows a truncated list.
//!
//! # The chain
//! Every snapshot header (version 2, see [`crate::format`], "The chain") seals its
//! place in its mount's chain: a sequence number `seq` and the chain id of its
//! parent (the snapshot of the same mount that was the newest one listed when it
//! was sunk). Sink picks `seq` = one more than the highest of: the parent's, the
//! record's newest for the mount, and any snapshot of the mount the store shows,
//! forgotten ones included. Version 1 headers (`seq` 0) and packs are outside every
//! chain and never checked.
//!
//! # What a view is checked for ([`check`])
//! A *view* is what the store shows of a node: its committed snapshots and its
//! forgotten ones (still on the store as `index.forgotten.json` until a prune
//! deletes them; their sealed headers open, so they are real links). Per mount,
//! ordered by `seq`:
//! - **rollback**: every seq above the newest committed one, up to the newest the
//!   record holds, must be one this node forgot (or saw forgotten); and a snapshot
//!   shown at the record's newest seq must have the recorded chain id.
//! - **gaps**: a snapshot whose parent is not shown must sit above seqs that are
//!   all explained: by the record (forgotten by this node, seen forgotten, or
//!   below its floor). Between two snapshots with consecutive seqs the later one's
//!   parent must be the earlier one (else a fork: two writers of one node, or a
//!   replaced snapshot). Seqs below the oldest snapshot shown must be explained by
//!   the record too (a store hiding the oldest snapshots).
//!
//! A mount the record holds: every problem is an error. A mount it does not hold (a
//! new machine rebuilt from the key alone, or a record lost): there is nothing to
//! compare the newest with, and gaps are printed as warnings, since they are
//! indistinguishable from snapshots forgotten and pruned before; the view is then
//! trusted once and recorded (its gaps as explained). So on a new machine a store
//! can hide what it hid before the first command, not afterwards.
//!
//! # Where it runs
//! `chute list`, `restore latest`, `verify`, `prune`, `forget` and `sink` check the
//! view they act on and fail (exit 1, one line per problem) on an error.
//! `restore` of a snapshot named by id or timestamp only warns. `prune` also
//! refuses to change anything when a snapshot listed at its start is no longer
//! listed just before its first forget or delete (the view changed under it).
//! `--accept-rollback` (list, restore, verify, prune, sink) takes the store's view
//! after a real disaster (the peer restored from an old disk): it says so on
//! stderr, one line per problem accepted, and records the view: the record's
//! newest is lowered to what the store shows and its gaps become explained.
//!
//! # The record
//! One small file per remote, domain and node, in the node's cache directory
//! (`$XDG_CACHE_HOME/chute/<id>/chain`), replaced atomically (temporary file,
//! fsync, rename) under a lock (`chain.lock`), written after each successful
//! check and after each commit or forget of this node. Text:
//! ```text
//! chute chain record 1
//! <mount> <newest seq> <newest chain id, hex> <floor> <gone>
//! ```
//! one line per mount. `gone` is `-` or comma-separated seqs and ranges
//! (`4,7-9`) of snapshots this node forgot or saw forgotten; `floor` is the lowest
//! seq that still needs explaining (all below it are gone). Ranges are merged and
//! the floor raised over the gone seqs at its bottom, so a line holds about one
//! range per snapshot the store still has (at most [`MAX_GONE`]; past that the
//! oldest are dropped by raising the floor). A record that does not parse (or a
//! newer version) is reported loudly on stderr and rebuilt from the store's view,
//! as on a new machine: refusing every command forever would leave the node no way
//! back but deleting the file, which is what this does, said aloud.
//!
//! Limits: a forgotten snapshot the store shows explains a gap, so a store can pass
//! off a live snapshot in the middle of a chain as forgotten (it could as well
//! delete its data); the newest one the record holds it cannot. A forget or prune
//! run from another machine with the same key and node name looks like hiding to
//! this one (`--accept-rollback` once).

use crate::crypto::Keys;
use crate::remote::{ErrorKind, Remote};
use crate::snapshot::Snapshot;
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// First line of the record file.
const MAGIC: &str = "chute chain record";
/// Version of the record file this build writes.
const RECORD_VERSION: u32 = 1;
/// Largest record file read (bytes): about a thousand mounts at their bound.
const MAX_RECORD: u64 = 4 << 20;
/// Most gone ranges kept per mount.
pub const MAX_GONE: usize = 4096;

/// One snapshot of the view, as the chain sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub mount: String,
    pub seq: u64,
    pub parent: [u8; 32],
    pub id: [u8; 32],
    /// Forgotten (still on the store until pruned), not committed.
    pub forgotten: bool,
    /// Its short id, for messages.
    pub name: String,
}

/// What the record holds of one mount.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Mount {
    /// The newest seq this node committed or saw, and its chain id.
    pub newest: u64,
    pub newest_id: [u8; 32],
    /// Seqs below this need no explanation.
    pub floor: u64,
    /// Inclusive ranges of seqs gone with an explanation, sorted, disjoint, all at
    /// or above `floor + 1`.
    pub gone: Vec<(u64, u64)>,
}

impl Mount {
    fn explained(&self, seq: u64) -> bool {
        seq < self.floor || self.gone.iter().any(|&(a, b)| a <= seq && seq <= b)
    }

    /// The subranges of `lo..=hi` not explained.
    fn missing(&self, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut s = lo;
        while s <= hi {
            if self.explained(s) {
                // Skip to the end of the explaining range.
                let end = match self.gone.iter().find(|&&(a, b)| a <= s && s <= b) {
                    Some(&(_, b)) => b,
                    None => self.floor.saturating_sub(1),
                };
                if end >= hi || end == u64::MAX {
                    break;
                }
                s = end.max(s) + 1;
                continue;
            }
            let next = self
                .gone
                .iter()
                .map(|&(a, _)| a)
                .filter(|&a| a > s)
                .min()
                .map_or(hi, |a| (a - 1).min(hi));
            out.push((s, next));
            s = next.saturating_add(1);
            if next == u64::MAX {
                break;
            }
        }
        out
    }

    fn add_gone(&mut self, lo: u64, hi: u64) {
        if lo <= hi {
            self.gone.push((lo, hi));
        }
    }

    /// Merges ranges, raises the floor over the gone seqs at its bottom, bounds
    /// the list.
    fn compact(&mut self) {
        crate::sort::sort(&mut self.gone);
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for &(a, b) in &self.gone {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let mut out = Vec::new();
        for (a, b) in merged {
            if b < self.floor {
                continue;
            }
            if a <= self.floor {
                self.floor = b.saturating_add(1);
                continue;
            }
            out.push((a, b));
        }
        while out.len() > MAX_GONE {
            let (_, b) = out.remove(0);
            self.floor = b.saturating_add(1);
        }
        self.gone = out;
    }
}

/// The node's record: per mount id.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    pub mounts: BTreeMap<String, Mount>,
}

/// Something wrong with a view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The store's newest committed seq (0: none) is below the record's newest.
    Rollback {
        mount: String,
        listed: u64,
        recorded: u64,
    },
    /// The store shows another snapshot at the record's newest seq.
    Replaced {
        mount: String,
        seq: u64,
        name: String,
    },
    /// Seqs `from..=to` are missing, before the snapshot `before` (after `after`,
    /// or below the oldest one shown).
    Gap {
        mount: String,
        from: u64,
        to: u64,
        after: Option<String>,
        before: String,
    },
    /// `name` (seq `seq`) does not follow `prev`: a fork or a replaced snapshot.
    Fork {
        mount: String,
        seq: u64,
        name: String,
        prev: String,
    },
}

impl Problem {
    pub fn mount(&self) -> &str {
        match self {
            Problem::Rollback { mount, .. }
            | Problem::Replaced { mount, .. }
            | Problem::Gap { mount, .. }
            | Problem::Fork { mount, .. } => mount,
        }
    }

    /// One line, naming the store and the mount by its paths; `held`: the record
    /// holds the mount (else nothing tells a hidden snapshot from a pruned one).
    pub fn describe(&self, store: &str, paths: &str, held: bool) -> String {
        let range = |a: u64, b: u64| {
            if a == b {
                format!("seq {a}")
            } else {
                format!("seqs {a} to {b}")
            }
        };
        match self {
            Problem::Rollback {
                listed, recorded, ..
            } => format!(
                "store {store} shows snapshot seq {listed} of {paths} as newest, this node committed or saw seq {recorded}: the store was rolled back or hides snapshots (--accept-rollback takes the store's view)"
            ),
            Problem::Replaced { seq, name, .. } => format!(
                "store {store} shows snapshot {name} as seq {seq} of {paths}, but this node recorded another one there: the store was rolled back or replaced it (--accept-rollback takes the store's view)"
            ),
            Problem::Gap {
                from,
                to,
                after,
                before,
                ..
            } => format!(
                "the chain of {paths} on store {store} has a gap: {} missing {}before snapshot {before}, {}",
                range(*from, *to),
                after
                    .as_ref()
                    .map_or(String::new(), |a| format!("after snapshot {a} and ")),
                if held {
                    "not forgotten by this node: the store hides or lost them (--accept-rollback takes the store's view)"
                } else {
                    "forgotten and pruned, or hidden by the store (this node has no record of the chain yet to tell; it keeps one from now on)"
                }
            ),
            Problem::Fork {
                seq, name, prev, ..
            } => format!(
                "the chain of {paths} on store {store} forks: snapshot {name} (seq {seq}) does not follow snapshot {prev}: two writers under one node name, or a replaced snapshot"
            ),
        }
    }
}

/// Checks a view against the record (see the module docs). `links` may hold
/// several mounts, in any order; only seqs above 0 count.
pub fn check(links: &[Link], record: &Record) -> Vec<Problem> {
    let mut by_mount: BTreeMap<&str, Vec<&Link>> = BTreeMap::new();
    for l in links.iter().filter(|l| l.seq > 0) {
        by_mount.entry(&l.mount).or_default().push(l);
    }
    for m in record.mounts.keys() {
        by_mount.entry(m).or_default();
    }
    let empty = Mount::default();
    let mut problems = Vec::new();
    for (mount, mut known) in by_mount {
        crate::sort::by_key(&mut known, |a| (a.seq, a.forgotten, a.id));
        let rec = record.mounts.get(mount);
        let explain = rec.unwrap_or(&empty);
        let mount = mount.to_string();
        if let Some(rec) = rec {
            let top = known.iter().filter(|l| !l.forgotten).map(|l| l.seq).max();
            let top = top.unwrap_or(0);
            if rec.newest > top && !rec.missing(top + 1, rec.newest).is_empty() {
                problems.push(Problem::Rollback {
                    mount: mount.clone(),
                    listed: top,
                    recorded: rec.newest,
                });
            }
            if rec.newest_id != [0; 32] {
                if let Some(l) = known
                    .iter()
                    .find(|l| l.seq == rec.newest && l.id != rec.newest_id)
                {
                    problems.push(Problem::Replaced {
                        mount: mount.clone(),
                        seq: l.seq,
                        name: l.name.clone(),
                    });
                }
            }
            if let Some(first) = known.first() {
                if first.seq > rec.floor.max(1) {
                    for (from, to) in rec.missing(rec.floor.max(1), first.seq - 1) {
                        problems.push(Problem::Gap {
                            mount: mount.clone(),
                            from,
                            to,
                            after: None,
                            before: first.name.clone(),
                        });
                    }
                }
            }
        }
        let ids: HashMap<[u8; 32], u64> = known.iter().map(|l| (l.id, l.seq)).collect();
        for pair in known.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.seq == b.seq {
                problems.push(Problem::Fork {
                    mount: mount.clone(),
                    seq: b.seq,
                    name: b.name.clone(),
                    prev: a.name.clone(),
                });
                continue;
            }
            if ids.get(&b.parent).is_some_and(|&s| s < b.seq) {
                continue;
            }
            if b.seq == a.seq + 1 {
                problems.push(Problem::Fork {
                    mount: mount.clone(),
                    seq: b.seq,
                    name: b.name.clone(),
                    prev: a.name.clone(),
                });
                continue;
            }
            for (from, to) in explain.missing(a.seq + 1, b.seq - 1) {
                problems.push(Problem::Gap {
                    mount: mount.clone(),
                    from,
                    to,
                    after: Some(a.name.clone()),
                    before: b.name.clone(),
                });
            }
        }
    }
    problems
}

/// Takes a checked view into the record: forgotten snapshots and the gaps in
/// `problems` become explained, the newest rises (with `accept`, it becomes the
/// store's newest, even if lower). A mount new to the record starts at its oldest
/// snapshot shown.
pub fn update(record: &mut Record, links: &[Link], problems: &[Problem], accept: bool) {
    let mut mounts: Vec<&str> = links
        .iter()
        .filter(|l| l.seq > 0)
        .map(|l| l.mount.as_str())
        .collect();
    crate::sort::sort(&mut mounts);
    mounts.dedup();
    for mount in &mounts {
        let mine = || links.iter().filter(|l| l.seq > 0 && l.mount == *mount);
        let oldest = mine().map(|l| l.seq).min().unwrap_or(1);
        let m = record
            .mounts
            .entry(mount.to_string())
            .or_insert_with(|| Mount {
                floor: oldest,
                ..Mount::default()
            });
        for l in mine().filter(|l| l.forgotten) {
            m.add_gone(l.seq, l.seq);
        }
        for p in problems.iter().filter(|p| p.mount() == *mount) {
            if let Problem::Gap { from, to, .. } = p {
                m.add_gone(*from, *to);
            }
        }
        let top = mine()
            .filter(|l| !l.forgotten)
            .max_by_key(|l| (l.seq, l.id));
        match top {
            Some(t)
                if t.seq > m.newest || accept || (t.seq == m.newest && m.newest_id == [0; 32]) =>
            {
                m.newest = t.seq;
                m.newest_id = t.id;
            }
            None if accept => {
                m.newest = 0;
                m.newest_id = [0; 32];
            }
            _ => {}
        }
        m.compact();
    }
    if accept {
        // A mount the store shows nothing of: its record goes with the view.
        record.mounts.retain(|k, _| {
            mounts.contains(&k.as_str()) || !problems.iter().any(|p| p.mount() == k)
        });
    }
}

/// Records a snapshot this node committed.
pub fn committed(record: &mut Record, mount: &str, seq: u64, id: [u8; 32]) {
    let m = record
        .mounts
        .entry(mount.to_string())
        .or_insert_with(|| Mount {
            floor: seq,
            ..Mount::default()
        });
    if seq > m.newest {
        m.newest = seq;
        m.newest_id = id;
    }
    m.compact();
}

/// Records a snapshot this node forgot.
pub fn forgot(record: &mut Record, mount: &str, seq: u64) {
    if seq == 0 {
        return;
    }
    if let Some(m) = record.mounts.get_mut(mount) {
        m.add_gone(seq, seq);
        m.compact();
    }
}

/// The seq and parent of the next snapshot of `mount`: one past the highest of the
/// view's (forgotten ones too) and the record's; the parent is the newest
/// committed snapshot of the view.
pub fn next(record: &Record, links: &[Link], mount: &str) -> (u64, [u8; 32]) {
    let mine = || links.iter().filter(|l| l.seq > 0 && l.mount == mount);
    let shown = mine().map(|l| l.seq).max().unwrap_or(0);
    let recorded = record.mounts.get(mount).map_or(0, |m| m.newest);
    let parent = mine()
        .filter(|l| !l.forgotten)
        .max_by_key(|l| (l.seq, l.id))
        .map_or([0; 32], |l| l.id);
    (shown.max(recorded).saturating_add(1), parent)
}

// ---- the record file ------------------------------------------------------

/// Why a record file was not read.
#[derive(Debug)]
pub struct Damaged(pub String);

/// Encodes the record file.
pub fn encode(record: &Record) -> String {
    let mut out = format!("{MAGIC} {RECORD_VERSION}\n");
    for (mount, m) in &record.mounts {
        let gone: Vec<String> = m
            .gone
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        out += &format!(
            "{mount} {} {} {} {}\n",
            m.newest,
            crate::hex::encode(&m.newest_id),
            m.floor,
            if gone.is_empty() {
                "-".into()
            } else {
                gone.join(",")
            }
        );
    }
    out
}

/// Decodes a record file.
pub fn decode(text: &str) -> std::result::Result<Record, Damaged> {
    let bad = |n: usize, what: &str| Damaged(format!("line {n}: {what}"));
    let mut lines = text.lines();
    let head = lines.next().ok_or_else(|| bad(1, "empty"))?;
    let version = head
        .strip_prefix(MAGIC)
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or_else(|| bad(1, "not a chain record"))?;
    if version != RECORD_VERSION {
        return Err(Damaged(format!(
            "written by a newer chute (format {version}, this build reads {RECORD_VERSION})"
        )));
    }
    let mut record = Record::default();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let f: Vec<&str> = line.split(' ').collect();
        let [mount, newest, id, floor, gone] = f[..] else {
            return Err(bad(n, "expected 5 fields"));
        };
        if mount.is_empty() || !mount.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(n, "bad mount id"));
        }
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad(n, "bad number"));
        let newest_id: [u8; 32] = crate::hex::decode(id)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad(n, "bad chain id"))?;
        let mut m = Mount {
            newest: num(newest)?,
            newest_id,
            floor: num(floor)?,
            gone: Vec::new(),
        };
        if gone != "-" {
            for r in gone.split(',') {
                let (a, b) = match r.split_once('-') {
                    Some((a, b)) => (num(a)?, num(b)?),
                    None => (num(r)?, num(r)?),
                };
                if a > b || m.gone.len() >= MAX_GONE {
                    return Err(bad(n, "bad gone range"));
                }
                m.gone.push((a, b));
            }
        }
        m.compact();
        if record.mounts.insert(mount.to_string(), m).is_some() {
            return Err(bad(n, "mount listed twice"));
        }
    }
    Ok(record)
}

/// The record file in a node's cache directory.
pub fn record_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("chain")
}

/// Whether the record file exists (a node that has one checks strictly).
fn load(path: &Path) -> std::result::Result<Option<Record>, Damaged> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Damaged(e.to_string())),
    };
    let mut text = String::new();
    f.take(MAX_RECORD + 1)
        .read_to_string(&mut text)
        .map_err(|e| Damaged(e.to_string()))?;
    if text.len() as u64 > MAX_RECORD {
        return Err(Damaged(format!("larger than {MAX_RECORD} bytes")));
    }
    decode(&text).map(Some)
}

/// Reads the record, saying loudly (once, on stderr) when it is damaged: it is
/// then rebuilt from the store's view.
pub fn read(cache_dir: &Path, command: &str) -> Record {
    let path = record_path(cache_dir);
    match load(&path) {
        Ok(r) => r.unwrap_or_default(),
        Err(Damaged(why)) => {
            eprintln!(
                "chute {command}: warning: the chain record {} is damaged ({why}): rebuilding it from what the store shows now, trusted as on a new machine",
                path.display()
            );
            Record::default()
        }
    }
}

/// Changes the record under its lock: reads it afresh, applies `f`, writes it
/// atomically. Failing to write only warns: the record guards later runs, and
/// this run's result stands.
pub fn change(cache_dir: &Path, command: &str, f: impl FnOnce(&mut Record)) {
    let res = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(cache_dir)?;
        let lock = std::fs::File::create(cache_dir.join("chain.lock"))?;
        crate::sys::lock(&lock)?;
        let path = record_path(cache_dir);
        // A damaged record was reported when it was read; it is replaced here.
        let mut record = load(&path).ok().flatten().unwrap_or_default();
        f(&mut record);
        crate::fsutil::write_atomic(&path, encode(&record).as_bytes())
    })();
    if let Err(e) = res {
        eprintln!(
            "chute {command}: warning: cannot update the chain record in {}: {e}",
            cache_dir.display()
        );
    }
}

// ---- the view and the check, against a remote ------------------------------

/// The chain links of a node's view: its committed snapshots (`snaps`) and the
/// forgotten ones the store still holds whose headers open.
pub fn links(
    keys: &Keys,
    remote: &dyn Remote,
    domain: &str,
    node: &str,
    snaps: &[Snapshot],
) -> Result<Vec<Link>> {
    let mut out: Vec<Link> = snaps
        .iter()
        .filter(|s| s.header.seq > 0 && !s.header.pack)
        .filter_map(|s| {
            Some(Link {
                mount: s.blob.mount.clone(),
                seq: s.header.seq,
                parent: s.header.parent,
                id: s.chain?,
                forgotten: false,
                name: s.short_id(),
            })
        })
        .collect();
    let pack_mount = crate::pack::mount(keys);
    for u in remote.list_uncommitted(domain, node)? {
        if u.state != crate::blob::BlobState::Forgotten
            || u.id.domain != domain
            || u.id.node != node
            || u.id.mount == pack_mount
        {
            continue;
        }
        let index = match remote.forgotten_index(&u.id) {
            Ok(i) => i,
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        // A forgotten index that does not open explains nothing.
        let Ok(h) = crate::format::open_header(keys, &index) else {
            continue;
        };
        if h.seq == 0 || h.pack {
            continue;
        }
        if let Some(id) = crate::format::chain_id(&index) {
            out.push(Link {
                mount: u.id.mount.clone(),
                seq: h.seq,
                parent: h.parent,
                id,
                forgotten: true,
                name: crate::snapshot::short_id(&u.id),
            });
        }
    }
    Ok(out)
}

/// How strictly [`guard`] treats problems on mounts the record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strict {
    /// Errors (list, restore latest, verify, prune, forget, sink).
    Fail,
    /// Warnings only, and the record is left as it was (restore by id).
    Warn,
}

/// Checks a node's view (`snaps` and the forgotten snapshots the store holds)
/// against the record in `cache_dir`; prints warnings; fails with one line per
/// problem on stderr (the last one the error) unless `accept`, which takes the
/// view and says so. On success the record takes the view. Returns the view's
/// links and the record as it now is.
#[allow(clippy::too_many_arguments)] // The node's place, its view and two switches.
pub fn guard(
    keys: &Keys,
    remote: &dyn Remote,
    domain: &str,
    node: &str,
    cache_dir: &Path,
    snaps: &[Snapshot],
    command: &str,
    strict: Strict,
    accept: bool,
) -> Result<(Vec<Link>, Record)> {
    let mut shown = links(keys, remote, domain, node, snaps)?;
    let mut record = read(cache_dir, command);
    let mut problems = check(&shown, &record);
    if problems
        .iter()
        .any(|p| record.mounts.contains_key(p.mount()))
    {
        // The caller listed before the record was read: a sink of another path set
        // of this node that committed in between has raised the record past that
        // listing. Look once more, now that the record is read; what a concurrent
        // run committed is there now, and a real rollback or hiding still is not.
        let again = crate::snapshot::listing(keys, remote, domain, node)?.snapshots;
        shown = links(keys, remote, domain, node, &again)?;
        problems = check(&shown, &record);
    }
    let links = shown;
    let paths = |mount: &str| {
        snaps
            .iter()
            .find(|s| s.blob.mount == mount)
            .map(|s| {
                s.header
                    .roots
                    .iter()
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| format!("mount {mount}"))
    };
    let store = remote.describe();
    let mut errors = Vec::new();
    for p in &problems {
        let held = record.mounts.contains_key(p.mount());
        let line = p.describe(&store, &paths(p.mount()), held);
        if !held || strict == Strict::Warn {
            eprintln!("chute {command}: warning: {line}");
        } else if accept {
            eprintln!("chute {command}: --accept-rollback: taking the store's view: {line}");
        } else {
            errors.push(line);
        }
    }
    if let Some(last) = errors.pop() {
        for line in &errors {
            eprintln!("chute {command}: {line}");
        }
        return Err(Error::Failed(last));
    }
    if strict == Strict::Warn
        && problems
            .iter()
            .any(|p| record.mounts.contains_key(p.mount()))
    {
        return Ok((links, record));
    }
    change(cache_dir, command, |r| update(r, &links, &problems, accept));
    update(&mut record, &links, &problems, accept);
    Ok((links, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> [u8; 32] {
        [n; 32]
    }

    /// A chain of mount "m": seq `s` has id `s`, parent `s - 1` (or `parent`).
    fn link(seq: u64, parent: u64, forgotten: bool) -> Link {
        Link {
            mount: "aa".into(),
            seq,
            parent: if parent == 0 {
                [0; 32]
            } else {
                id(parent as u8)
            },
            id: id(seq as u8),
            forgotten,
            name: format!("s{seq}"),
        }
    }

    fn chain(seqs: &[u64]) -> Vec<Link> {
        seqs.iter().map(|&s| link(s, s - 1, false)).collect()
    }

    fn recorded(newest: u64, gone: &[(u64, u64)]) -> Record {
        let mut r = Record::default();
        r.mounts.insert(
            "aa".into(),
            Mount {
                newest,
                newest_id: id(newest as u8),
                floor: 1,
                gone: gone.to_vec(),
            },
        );
        r
    }

    #[test]
    fn a_whole_chain_passes() {
        assert!(check(&chain(&[1, 2, 3]), &recorded(3, &[])).is_empty());
        assert!(check(&chain(&[1, 2, 3]), &Record::default()).is_empty());
        // The store ahead of the record (another run's sink): fine.
        assert!(check(&chain(&[1, 2, 3]), &recorded(2, &[])).is_empty());
    }

    #[test]
    fn rollback_is_caught() {
        let p = check(&chain(&[1, 2]), &recorded(3, &[]));
        assert_eq!(
            p,
            [Problem::Rollback {
                mount: "aa".into(),
                listed: 2,
                recorded: 3
            }]
        );
        // Nothing shown at all.
        assert_eq!(check(&[], &recorded(3, &[])).len(), 1);
        // The same seq, another snapshot.
        let mut other = chain(&[1, 2, 3]);
        other[2].id = id(9);
        assert!(matches!(
            check(&other, &recorded(3, &[]))[..],
            [Problem::Replaced { seq: 3, .. }]
        ));
        // The newest shown as forgotten, which this node did not do.
        let mut v = chain(&[1, 2]);
        v.push(link(3, 2, true));
        assert!(matches!(
            check(&v, &recorded(3, &[]))[..],
            [Problem::Rollback { listed: 2, .. }]
        ));
    }

    #[test]
    fn forgetting_the_newest_is_no_rollback() {
        assert!(check(&chain(&[1, 2]), &recorded(3, &[(3, 3)])).is_empty());
        // Then the next sink's snapshot follows seq 2, at seq 4.
        let mut v = chain(&[1, 2]);
        v.push(link(4, 2, false));
        assert!(check(&v, &recorded(4, &[(3, 3)])).is_empty());
        assert!(check(&v, &Record::default()).is_empty());
    }

    #[test]
    fn gaps_are_found_and_explained() {
        let v = vec![link(1, 0, false), link(3, 2, false)];
        let gap = Problem::Gap {
            mount: "aa".into(),
            from: 2,
            to: 2,
            after: Some("s1".into()),
            before: "s3".into(),
        };
        assert_eq!(check(&v, &recorded(3, &[])), std::slice::from_ref(&gap));
        // No record (a new machine): the same gap, for a warning.
        assert_eq!(check(&v, &Record::default()), [gap]);
        // Forgotten by this node, and pruned.
        assert!(check(&v, &recorded(3, &[(2, 2)])).is_empty());
        // Forgotten, still on the store.
        let mut w = v.clone();
        w.push(link(2, 1, true));
        assert!(check(&w, &recorded(3, &[])).is_empty());
        // A hidden oldest one, below what is shown.
        let p = check(&chain(&[2, 3]), &recorded(3, &[]));
        assert!(matches!(
            &p[..],
            [Problem::Gap {
                from: 1,
                to: 1,
                after: None,
                ..
            }]
        ));
        // ... which a new machine cannot tell from a pruned one.
        assert!(check(&chain(&[2, 3]), &Record::default()).is_empty());
    }

    #[test]
    fn forks_are_found() {
        let v = vec![link(1, 0, false), link(2, 0, false)];
        assert!(matches!(
            check(&v, &Record::default())[..],
            [Problem::Fork { seq: 2, .. }]
        ));
        let mut twins = chain(&[1, 2]);
        let mut t = link(2, 1, false);
        t.id = id(7);
        twins.push(t);
        assert!(matches!(
            check(&twins, &Record::default())[..],
            [Problem::Fork { seq: 2, .. }]
        ));
    }

    #[test]
    fn mounts_are_separate_chains() {
        let mut v = chain(&[1, 2]);
        v.extend(chain(&[1, 2, 3]).into_iter().map(|mut l| {
            l.mount = "bb".into();
            l
        }));
        let mut r = recorded(2, &[]);
        r.mounts.insert(
            "bb".into(),
            Mount {
                newest: 3,
                newest_id: id(3),
                floor: 1,
                gone: Vec::new(),
            },
        );
        assert!(check(&v, &r).is_empty());
        assert_eq!(next(&r, &v, "aa"), (3, id(2)));
        assert_eq!(next(&r, &v, "bb"), (4, id(3)));
        assert_eq!(next(&r, &v, "cc"), (1, [0; 32]));
    }

    #[test]
    fn update_takes_the_view() {
        // A new machine: the view's gap is trusted and recorded.
        let v = vec![link(2, 1, false), link(4, 3, false)];
        let mut r = Record::default();
        let p = check(&v, &r);
        update(&mut r, &v, &p, false);
        let m = &r.mounts["aa"];
        assert_eq!((m.newest, m.floor, m.gone.clone()), (4, 2, vec![(3, 3)]));
        assert!(m.explained(3) && m.explained(1));
        assert!(check(&v, &r).is_empty());
        // The store's newest is hidden now.
        let p = check(&v[..1], &r);
        assert_eq!(p.len(), 1);
        // Accepted: the record goes down to the store's view.
        update(&mut r, &v[..1], &p, true);
        assert_eq!(r.mounts["aa"].newest, 2);
        assert!(check(&v[..1], &r).is_empty());
        // Forgotten ones become explained; a commit raises the newest.
        let mut r = recorded(2, &[]);
        let w = vec![link(1, 0, true), link(2, 1, false)];
        update(&mut r, &w, &[], false);
        assert_eq!(r.mounts["aa"].floor, 2);
        committed(&mut r, "aa", 3, id(3));
        forgot(&mut r, "aa", 3);
        assert_eq!(r.mounts["aa"].newest, 3);
        assert!(check(&w[1..], &r).is_empty());
    }

    #[test]
    fn ranges_compact_and_stay_bounded() {
        let mut m = Mount {
            floor: 1,
            gone: vec![(5, 6), (1, 2), (3, 3), (9, 9), (8, 8)],
            ..Mount::default()
        };
        m.compact();
        assert_eq!((m.floor, m.gone.clone()), (4, vec![(5, 6), (8, 9)]));
        assert_eq!(m.missing(1, 10), [(4, 4), (7, 7), (10, 10)]);
        let mut big = Mount {
            floor: 1,
            gone: (0..MAX_GONE as u64 + 10)
                .map(|i| (2 * i + 2, 2 * i + 2))
                .collect(),
            ..Mount::default()
        };
        big.compact();
        assert_eq!(big.gone.len(), MAX_GONE);
        assert!(big.floor > 1);
    }

    #[test]
    fn the_record_file_round_trips_and_refuses_damage() {
        let mut r = recorded(7, &[(3, 4), (6, 6)]);
        r.mounts.get_mut("aa").unwrap().compact();
        r.mounts.insert("bb".into(), Mount::default());
        let text = encode(&r);
        assert!(text.starts_with("chute chain record 1\n"));
        assert_eq!(decode(&text).unwrap(), r);
        for bad in [
            "",
            "garbage\n",
            "chute chain record 2\n",
            "chute chain record 1\naa 1 00 1 -\n",
            "chute chain record 1\naa x 0000000000000000000000000000000000000000000000000000000000000000 1 -\n",
            "chute chain record 1\nzz 1 0000000000000000000000000000000000000000000000000000000000000000 1 -\n",
            "chute chain record 1\naa 1 0000000000000000000000000000000000000000000000000000000000000000 1 5-3\n",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert!(
            decode(&text.replace("chute chain record 1", "chute chain record 2"))
                .unwrap_err()
                .0
                .contains("newer")
        );
    }
}
