//! Temporaries in blob directories: how a window's temporary shows it is alive,
//! and the sweep that removes the ones a killed writer left.
//!
//! A blob directory holds three kinds of temporary (see the layout in
//! `dir.rs`):
//! - `0/.tmp-<random>`, a window being received. Written *without* the blob's
//!   lock; its writer holds an exclusive `flock` on it from just after it creates
//!   it until after it renamed or removed it ([`new_window_temp`]). The kernel
//!   drops that lock when the writer's process dies, `kill -9` and a crash
//!   included, and never while it lives, even stopped (SIGSTOP) or stalled.
//! - `.tmp-<random>`, an index being written (create, commit), and
//!   `.verified.tmp-<random>`, a verified record being rewritten. Both are
//!   written, renamed or removed only under the blob's lock.
//!
//! A sweep of a blob ([`sweep_locked`]) holds the blob's lock and removes:
//! - every `.tmp-*` and `.verified.tmp-*` of the blob directory: whoever wrote
//!   them held the lock the sweep holds now, so their writer is gone;
//! - a `0/.tmp-*` whose `flock` it can take (its writer is gone), if the blob is
//!   committed or forgotten (no window can be renamed into it any more, whoever
//!   holds what), or else if it last changed at least `min_age` ago (prune passes
//!   its grace period; serve's start, commit and scrub pass 0). It removes the
//!   file while holding the file's lock, and only if the name still names the file
//!   it locked; a writer that created a temporary and lost this race finds its name
//!   gone once it has the lock and takes another ([`new_window_temp`]), so no sweep
//!   can remove a temporary a live writer will rename into place.
//!
//! A temporary whose lock is held is *in use* and kept, whatever its age or its
//! blob's state: its writer removes it itself (a window that arrives for a
//! committed blob is refused under the blob's lock and its temporary dropped).
//! A chute older than this one did not lock its window temporaries: one of its
//! writers in the same store (a local sink of an older build) may see its rename
//! fail (an I/O error for that window, never a wrong byte stored).

use super::*;
use std::os::unix::fs::MetadataExt;

/// The prefix of every temporary name in a blob directory and its part.
pub(super) const TMP_PREFIX: &str = ".tmp-";

/// What a sweep found: temporaries removed, in use (a live writer holds them),
/// and young (unlocked, in a pending blob, changed less than the age asked ago).
/// Bytes are the files' lengths; `freed` is what the removed ones were charged
/// against their node's quota (see [`charge`]; record temporaries are not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Temps {
    pub swept: u64,
    pub swept_bytes: u64,
    pub in_use: u64,
    pub in_use_bytes: u64,
    pub young: u64,
    pub young_bytes: u64,
    pub freed: u64,
}

impl Temps {
    pub fn add(&mut self, o: &Temps) {
        self.swept += o.swept;
        self.swept_bytes += o.swept_bytes;
        self.in_use += o.in_use;
        self.in_use_bytes += o.in_use_bytes;
        self.young += o.young;
        self.young_bytes += o.young_bytes;
        self.freed = self.freed.saturating_add(o.freed);
    }

    /// Whether any temporary was found.
    pub fn any(&self) -> bool {
        self.swept + self.in_use + self.young > 0
    }

    /// One line for a report: "2 swept (1.0 MiB), 1 in use (4.0 KiB)".
    pub fn describe(&self) -> String {
        let mut parts = vec![format!(
            "{} swept ({})",
            self.swept,
            crate::units::human_bytes(self.swept_bytes)
        )];
        if self.in_use > 0 {
            parts.push(format!(
                "{} in use by a live writer ({})",
                self.in_use,
                crate::units::human_bytes(self.in_use_bytes)
            ));
        }
        if self.young > 0 {
            parts.push(format!(
                "{} younger than the grace period, kept ({})",
                self.young,
                crate::units::human_bytes(self.young_bytes)
            ));
        }
        parts.join(", ")
    }
}

/// Whether `name` is a temporary's in a blob directory (`in_part`: in its `0/`).
pub(super) fn is_temp(name: &str, in_part: bool) -> bool {
    name.starts_with(TMP_PREFIX) || (!in_part && name.starts_with(&format!("{RECORD}{TMP_PREFIX}")))
}

/// Whether `path` still names the file `f` has open.
fn names(path: &Path, f: &File) -> bool {
    match (fs::symlink_metadata(path), f.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Creates a window's temporary in `part`, locked (`flock`) for as long as the
/// returned file stays open: what tells a sweep its writer is alive.
pub(super) fn new_window_temp(part: &Path) -> Result<(PathBuf, File)> {
    let cannot = || io_err("cannot create window file");
    for _ in 0..8 {
        let tmp = part.join(format!("{TMP_PREFIX}{}", fsutil::random_suffix()));
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(cannot())?;
        crate::sys::lock(&f).map_err(cannot())?;
        // A sweep took the lock between the create and ours and removed the
        // name: take another.
        if names(&tmp, &f) {
            return Ok((tmp, f));
        }
    }
    Err(Error::Io(
        "cannot create window file".into(),
        io::Error::other("its temporary was removed 8 times in a row"),
    ))
}

/// Sweeps a blob directory whose lock the caller holds (see the module docs);
/// `now` is the store's clock.
pub(super) fn sweep_locked(dir: &Path, min_age: Duration, now: SystemTime) -> Result<Temps> {
    let mut t = Temps::default();
    let pending = !dir.join(INDEX).exists() && !dir.join(FORGOTTEN).exists();
    for (path, in_part) in temp_names(dir)? {
        let charged = is_charged(&path);
        let remove = |t: &mut Temps, len: u64| {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err(format!("cannot remove {}", path.display()))(e)),
            }
            t.swept += 1;
            t.swept_bytes += len;
            if charged {
                t.freed = t.freed.saturating_add(charge(len));
            }
            Ok(())
        };
        if !in_part {
            // Written only under the lock we hold: its writer is gone.
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => remove(&mut t, m.len())?,
                _ => {}
            }
            continue;
        }
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(format!("cannot open {}", path.display()))(e)),
        };
        let m = f
            .metadata()
            .map_err(io_err(format!("cannot read {}", path.display())))?;
        if !m.is_file() {
            continue;
        }
        let locked =
            crate::sys::try_lock(&f).map_err(io_err(format!("cannot lock {}", path.display())))?;
        if !locked {
            t.in_use += 1;
            t.in_use_bytes += m.len();
            continue;
        }
        let age = m
            .modified()
            .ok()
            .and_then(|at| now.duration_since(at).ok())
            .unwrap_or_default();
        if pending && age < min_age {
            t.young += 1;
            t.young_bytes += m.len();
            continue;
        }
        // Removed while we hold its lock, and only if its name is still ours.
        if names(&path, &f) {
            remove(&mut t, m.len())?;
        }
    }
    // No fsync of the directories: an unlink a power cut undoes leaves garbage
    // the next sweep removes, and 5,000 blobs' fsyncs held a server's start for
    // most of a minute.
    Ok(t)
}

/// Whether a blob directory or its part holds any temporary's name (a directory
/// that cannot be listed: yes, so the sweep under the lock says why).
fn has_temps(dir: &Path) -> bool {
    temp_names(dir).map_or(true, |names| !names.is_empty())
}

/// The temporaries in a blob directory and in its part, each with whether it lies
/// in the part; a directory that does not exist holds none.
fn temp_names(dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for (d, in_part) in [(dir.to_path_buf(), false), (dir.join(PART), true)] {
        let cannot = || io_err(format!("cannot list {}", d.display()));
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(cannot()(e)),
        };
        for e in entries {
            let e = e.map_err(cannot())?;
            if e.file_name().to_str().is_some_and(|n| is_temp(n, in_part)) {
                out.push((e.path(), in_part));
            }
        }
    }
    Ok(out)
}

/// Whether a temporary counts against its node's quota: a `.tmp-*` file (a
/// window's or an index's), not a record being rewritten.
fn is_charged(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(TMP_PREFIX))
}

/// What the temporaries of a blob directory count against its node's quota:
/// each `.tmp-*` file its bytes plus [`FILE_CHARGE`]; with `only_dead`, only those
/// no live writer holds (a live writer's bytes are its own reservation).
pub(super) fn temps_charge(dir: &Path, only_dead: bool) -> Result<u64> {
    let mut total = 0u64;
    for (path, _) in temp_names(dir)? {
        if !is_charged(&path) {
            continue;
        }
        let Ok(f) = File::open(&path) else {
            continue;
        };
        let Ok(m) = f.metadata() else { continue };
        if !m.is_file() || (only_dead && !crate::sys::try_lock(&f).unwrap_or(true)) {
            continue;
        }
        total = total.saturating_add(charge(m.len()));
    }
    Ok(total)
}

impl DirStore {
    /// Sweeps one blob directory under its lock (see the module docs).
    pub(super) fn sweep_blob(&self, dir: &Path, min_age: Duration) -> Result<Temps> {
        // Most blobs hold none: no lock taken (nor `.lock` made) for them.
        if !has_temps(dir) {
            return Ok(Temps::default());
        }
        let _lock = match lock_blob(dir) {
            Err(Error::NotFound(_)) => return Ok(Temps::default()),
            r => r?,
        };
        if !dir.is_dir() {
            return Ok(Temps::default());
        }
        sweep_locked(dir, min_age, SystemTime::now())
    }

    /// Sweeps the temporaries of every blob in the store (`chute serve` at start),
    /// or of one node in one domain (prune), keeping those of pending blobs that
    /// changed less than `min_age` ago (see the module docs).
    pub fn sweep_temporaries(
        &self,
        only: Option<(&str, &str)>,
        min_age: Duration,
    ) -> Result<Temps> {
        let mut t = Temps::default();
        let subdirs = |p: &Path| -> Result<Vec<PathBuf>> {
            Ok(read_names(p)?
                .into_iter()
                .map(|n| p.join(n))
                .filter(|p| p.is_dir())
                .collect())
        };
        let nodes = match only {
            Some((domain, node)) => {
                if !valid_component(domain) || !valid_component(node) {
                    return Err(Error::Bad("invalid domain or node".into()));
                }
                vec![self.root.join(domain).join(node)]
            }
            None => {
                let mut v = Vec::new();
                for d in subdirs(&self.root)? {
                    v.extend(subdirs(&d)?);
                }
                v
            }
        };
        for n in nodes {
            for m in subdirs(&n)? {
                for dir in subdirs(&m)? {
                    t.add(&self.sweep_blob(&dir, min_age)?);
                }
            }
        }
        Ok(t)
    }
}
