//! The store's scrub: re-hash every window file against the SHA-256 in its name,
//! and check that each committed blob's index parses and its window files cover
//! `[0, size)` of it, needing no key. It also sweeps each blob's temporaries
//! whose writer is gone and counts those in use ([`super::temps`]) (the background pass and `chute scrub` are in
//! [`crate::scrub`]).

use super::*;

/// A window file whose bytes no longer match what its name says they were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// `domain/node/mount/timestamp`.
    pub blob: String,
    pub offset: u64,
    pub len: u64,
    pub why: String,
}

/// What [`DirStore::scrub`] checked and found.
#[derive(Debug, Default)]
pub struct ScrubReport {
    /// Blobs checked whole.
    pub blobs: u64,
    pub windows: u64,
    pub bytes: u64,
    pub damaged: Vec<Damage>,
    /// Temporaries found in the blobs checked: swept (their writer was gone) or in
    /// use (see [`super::temps`]).
    pub temps: Temps,
    /// The pass was told to stop before the end.
    pub stopped: bool,
}

/// What a scrub pass tells its caller as it goes (see [`DirStore::scrub_paced`]).
#[derive(Debug)]
pub enum ScrubEvent<'a> {
    /// A window of this many bytes was read.
    Read(u64),
    /// A window is damaged (also in the final report).
    Damaged(&'a Damage),
    /// Every window of this blob (`domain/node/mount/timestamp`) was checked.
    BlobDone(&'a str),
}

impl DirStore {
    /// Re-hashes every window file in the store and compares it with the length and
    /// SHA-256 in its name, which the store verified when the bytes arrived. Needs
    /// no key and reads one window at a time.
    pub fn scrub(&self) -> Result<ScrubReport> {
        self.scrub_paced(None, &mut |_| true)
    }

    /// [`DirStore::scrub`] as a background pass runs it: blobs in a fixed order
    /// (domain, node, mount, timestamp), starting after the blob `after` (a
    /// `domain/node/mount/timestamp` a stopped pass reached), telling `on` of each
    /// window read (so it can sleep to stay under a read rate), each damaged window
    /// as it is found, and each blob finished. When `on` returns false the pass stops
    /// (the report says so).
    ///
    /// Every window is re-read whatever the verified record says, and the record is
    /// brought in line: a damaged window's entry is dropped at once (durably: it must
    /// never vouch for those bytes again), intact ones are recorded afresh.
    pub fn scrub_paced(
        &self,
        after: Option<&str>,
        on: &mut dyn FnMut(ScrubEvent<'_>) -> bool,
    ) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let mut buf = vec![0u8; 256 << 10];
        let after: Option<Vec<&str>> = after.map(|a| a.split('/').collect());
        let dirs = |p: &Path| -> Result<Vec<String>> {
            Ok(read_names(p)?
                .into_iter()
                .filter(|n| p.join(n).is_dir())
                .collect())
        };
        for domain in dirs(&self.root)? {
            let d = self.root.join(&domain);
            for node in dirs(&d)? {
                let n = d.join(&node);
                for mount in dirs(&n)? {
                    let m = n.join(&mount);
                    for ts in dirs(&m)? {
                        let key = [domain.as_str(), &node, &mount, &ts];
                        if after.as_deref().is_some_and(|a| key.as_slice() <= a) {
                            continue;
                        }
                        let blob = key.join("/");
                        let dir = m.join(&ts);
                        if !self.scrub_blob(&blob, &dir, &mut buf, &mut report, on)? {
                            report.stopped = true;
                            return Ok(report);
                        }
                        report.blobs += 1;
                        if !on(ScrubEvent::BlobDone(&blob)) {
                            report.stopped = true;
                            return Ok(report);
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Scrubs one blob directory; false if `on` asked to stop.
    pub(super) fn scrub_blob(
        &self,
        blob: &str,
        dir: &Path,
        buf: &mut [u8],
        report: &mut ScrubReport,
        on: &mut dyn FnMut(ScrubEvent<'_>) -> bool,
    ) -> Result<bool> {
        // What killed writers left is swept, what live ones hold is counted. A
        // store this scrub cannot lock or change (read-only) is still scrubbed.
        if let Ok(t) = self.sweep_blob(dir, Duration::ZERO) {
            report.temps.add(&t);
        }
        let (windows, _) = blob_files(dir)?;
        // Fresh verdicts, merged into the record every so often (memory stays
        // bounded however many windows a blob has) and when the blob is done.
        let mut found: Vec<(Window, Option<Stamp>)> = Vec::new();
        for &w in &windows {
            let path = dir.join(PART).join(w.file_name());
            let (why, stamp) = match reread(&path, w.len, buf) {
                // Deleted since the listing (a prune, a rewritten window): not damage.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => (Some(format!("unreadable: {e}")), None),
                Ok(r) if r.len != w.len => (
                    Some(format!(
                        "the file holds {} bytes, its name says {}",
                        r.len, w.len
                    )),
                    None,
                ),
                Ok(r) if r.digest != w.sha256 => (
                    Some("its bytes no longer match the SHA-256 they arrived with".to_string()),
                    None,
                ),
                Ok(r) => (None, r.settled),
            };
            report.windows += 1;
            report.bytes += w.len;
            let mut go = on(ScrubEvent::Read(w.len));
            if let Some(why) = why {
                self.record_merge(dir, &[(w, None)], false)?;
                let damage = Damage {
                    blob: blob.to_string(),
                    offset: w.offset,
                    len: w.len,
                    why,
                };
                go &= on(ScrubEvent::Damaged(&damage));
                report.damaged.push(damage);
            } else if let Some(s) = stamp {
                found.push((w, Some(s)));
            }
            if found.len() >= 1024 || !go {
                let _ = self.record_merge(dir, &found, false);
                found.clear();
            }
            if !go {
                return Ok(false);
            }
        }
        let _ = self.record_merge(dir, &found, true);
        for damage in committed_gaps(dir, blob)? {
            let go = on(ScrubEvent::Damaged(&damage));
            report.damaged.push(damage);
            if !go {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// What a committed blob lacks: an index that does not parse, or bytes of
/// `[0, size)` no window file covers (a deleted window, which re-hashing what
/// exists cannot see). The windows are listed after the index is read (a blob
/// committed while it was scrubbed has them all by then; a committed blob gains
/// and loses none), and a blob forgotten meanwhile (whose windows prune may trim)
/// or not committed lacks nothing.
fn committed_gaps(dir: &Path, blob: &str) -> Result<Vec<Damage>> {
    let index = match fs::read(dir.join(INDEX)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("cannot read {}", dir.join(INDEX).display()))(e)),
    };
    let damage = |offset: u64, len: u64, why: String| Damage {
        blob: blob.to_string(),
        offset,
        len,
        why,
    };
    let size = match index_place(&index) {
        Ok((_, Some(size))) => size,
        Ok((_, None)) => return Ok(vec![damage(0, 0, "its index.json has no size".into())]),
        Err(e) => {
            return Ok(vec![damage(
                0,
                0,
                format!("its index.json is unreadable: {e}"),
            )]);
        }
    };
    let (windows, _) = blob_files(dir)?;
    let mut gaps = Vec::new();
    let mut pos = 0;
    for w in windows.iter().chain(std::iter::once(&Window {
        offset: size,
        len: 0,
        sha256: [0; 32],
    })) {
        if w.offset > pos {
            let end = w.offset.min(size);
            gaps.push(damage(
                pos,
                end - pos,
                format!("no window file holds bytes {pos}..{end} of its {size}"),
            ));
        }
        pos = pos.max(w.end());
        if pos >= size {
            break;
        }
    }
    // Forgotten meanwhile (its windows may be trimmed on purpose): not damage.
    Ok(if dir.join(INDEX).exists() {
        gaps
    } else {
        Vec::new()
    })
}
