//! The last check before a commit: every chunk and manifest node this snapshot
//! reuses from another blob is still readable (a prune may have deleted or trimmed
//! it while the sink ran).

use super::*;

/// Fails if a chunk this snapshot reuses from another blob can no longer be read:
/// no pack holds it and its blob is gone, or the window of a forgotten blob it lies
/// in was trimmed (a prune did that: this sink ran for longer than the prune's
/// grace period, see [`crate::prune`]). Committing would make a snapshot that
/// restores only in part; failing costs one more run, whose chunk index no longer
/// knows the deleted blob. A prune deleting or trimming such data between this
/// check and the commit needs it to have been marked a grace period before.
///
/// Every reference was readable when the sink started (`ran` ago: it takes them
/// from snapshots committed then), so the windows of a forgotten blob are asked
/// for only if the store saw its directory change since (a trim does): a nightly
/// run asks for none.
///
/// The manifest is not in memory: `used` names the blobs other than `own` its
/// chunk references and reused manifest nodes use, and `refs` calls its argument
/// with every chunk reference and its blob's path, and every reused node as a
/// whole reference (id, place, sealed length: a pack holds a node by id like a
/// chunk). It reads the manifest back, so it is called only when some blob in
/// `used` is not a committed snapshot; a reused node it cannot read fails it.
pub(super) fn reused_still_there(
    keys: &Keys,
    remote: &dyn Remote,
    used: &[String],
    refs: impl FnOnce(&mut dyn FnMut(&str, &ChunkRef)) -> Result<()>,
    own: &BlobId,
    ran: Duration,
) -> Result<()> {
    if used.is_empty() {
        return Ok(());
    }
    let listed = remote.list(&own.domain, &own.node)?;
    let committed: HashSet<String> = listed.iter().map(BlobId::path).collect();
    let uncommitted = remote.list_uncommitted(&own.domain, &own.node)?;
    let forgotten: HashSet<String> = uncommitted
        .iter()
        .filter(|u| u.state == BlobState::Forgotten)
        .map(|u| u.id.path())
        .collect();
    // Unchanged since before the sink started, with a second for rounding.
    let untouched: HashSet<String> = uncommitted
        .iter()
        .filter(|u| u.state == BlobState::Forgotten && u.idle > ran.as_secs() + 1)
        .map(|u| u.id.path())
        .collect();
    // This upload, pending, is in neither list (and not in `used`).
    if used.iter().all(|b| committed.contains(b)) {
        return Ok(());
    }
    let packs = crate::pack::Resolver::load(keys, remote, &listed)?;
    let own = own.path();
    let mut lost = 0usize;
    // Chunks (offset, sealed length) in each forgotten blob, by blob path.
    let mut in_forgotten: std::collections::BTreeMap<String, Vec<(u64, u64)>> = Default::default();
    refs(&mut |b: &str, c: &ChunkRef| {
        if b == own || committed.contains(b) || packs.holds(&c.id) || untouched.contains(b) {
            return;
        }
        if forgotten.contains(b) {
            let chunks = match in_forgotten.get_mut(b) {
                Some(v) => v,
                None => in_forgotten.entry(b.to_string()).or_default(),
            };
            chunks.push((c.offset, u64::from(c.len)));
        } else {
            lost += 1;
        }
    })?;
    for (b, chunks) in &in_forgotten {
        let id = BlobId::parse(b)?;
        let index = match remote::retry(|| remote.forgotten_index(&id)) {
            Ok(i) => i,
            // Deleted since the listing.
            Err(e) if e.kind == ErrorKind::NotFound => {
                lost += chunks.len();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let header = crate::format::open_header(keys, &index)
            .map_err(|e| Error::Failed(format!("{}: {e}", id.path())))?;
        let w = u64::from(header.window.max(1));
        let mut present: HashMap<u64, bool> = HashMap::new();
        for &(offset, len) in chunks {
            let mut whole = true;
            for n in offset / w..=(offset + len.max(1) - 1) / w {
                let here = match present.get(&n) {
                    Some(&p) => p,
                    None => {
                        let p = remote::retry(|| remote.window_hash(&id, w, n))?.is_some();
                        present.insert(n, p);
                        p
                    }
                };
                whole &= here;
            }
            lost += usize::from(!whole);
        }
    }
    if lost == 0 {
        return Ok(());
    }
    Err(Error::Failed(format!(
        "{lost} chunk{} this snapshot reuses were pruned while the sink ran (it ran longer than the prune's grace period); nothing was committed, run the sink again",
        if lost == 1 { "" } else { "s" }
    )))
}
