//! Before a sink starts: bring the chunk index up to date, complete the snapshot a
//! sink killed after journaling its final index (sending its last window from the
//! journal's tail if the store lacks it; if all it uses is still there), or
//! continue the blob a sink killed earlier was uploading.

use super::*;

/// Brings the chunk index up to date with the remote's committed snapshots.
/// Snapshots the index knows but the remote lost mean the index is stale: rebuilt.
/// Each snapshot's manifest is streamed, its records sorted in bounded memory
/// (runs under `sort`, see [`crate::runchunks`]) and merged in; its nodes are
/// read where `resolver` puts them.
pub(super) fn sync_cache(
    keys: &Keys,
    remote: &dyn Remote,
    resolver: &Resolver,
    cache: ChunkIndex,
    snaps: &[Snapshot],
    sort: &Path,
) -> Result<ChunkIndex> {
    let mut cache = cache;
    let on_remote: std::collections::HashSet<String> =
        snaps.iter().map(|s| s.blob.path()).collect();
    let io = |e| Error::Io("cannot update the chunk cache".into(), e);
    if cache.snapshots.iter().any(|s| !on_remote.contains(s)) {
        cache.clear().map_err(io)?;
    }
    let known: std::collections::HashSet<&String> = cache.snapshots.iter().collect();
    let missing: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| !known.contains(&s.blob.path()))
        .collect();
    let cap = testhooks::chunk_cap(crate::runchunks::CAP);
    for s in missing {
        // A damaged segment only costs the deduplication of the chunks it named;
        // any other damage (or a failed read) fails the sink, as a whole read
        // (`snapshot::salvage`) would.
        let damaged = |e: format::Error| {
            Error::Damaged(format!(
                "snapshot {}: manifest in {} is damaged: {e}",
                s.short_id(),
                s.blob.path()
            ))
        };
        let h = &s.open(keys, remote)?;
        let fetch = crate::snapshot::manifest_fetch(remote, resolver);
        let mut stream = format::Entries::open(keys, &s.blob.path(), h, fetch)
            .map_err(damaged)?
            .without_nodes();
        let mut recs = crate::runchunks::RunChunks::new(sort, cap, false);
        while let Some(e) = stream.next_entry().map_err(damaged)? {
            for c in &e.chunks {
                let (id, place) = crate::cache::record_of(c);
                recs.insert(id, place).map_err(io)?;
            }
        }
        // Chunk references index the blob table as it stood when read; it only grows.
        let sorted = recs.iter().map_err(io)?;
        cache = cache
            .merge(&[s.blob.path()], &stream.blobs, sorted)
            .map_err(io)?;
    }
    Ok(cache)
}

/// Commits the snapshot of a sink killed after journaling its final index, if
/// every window its sealed header records is on the remote as sealed (the last,
/// short one may instead be the journal's tail, with the length and SHA-256 the
/// header gives it: then it is sent first) and every chunk it reuses from other
/// blobs is one a committed snapshot still uses (it is in `cache`, freshly synced),
/// so it can be read (prune keeps every such chunk, in its blob or in a pack): a
/// prune since the kill may have deleted a forgotten blob the killed run's chunk
/// index still knew. Likewise every manifest node it reuses from another blob
/// (its parent's) must be in the blob of a committed snapshot (`snaps`) or in a
/// pack (`resolver`); a node only a forgotten blob holds may be gone soon, so
/// then the blob is continued instead. Nothing is sent unless all of this holds.
/// Returns whether it committed.
pub(super) fn complete_killed(
    keys: &Keys,
    remote: &dyn Remote,
    resolver: &Resolver,
    journal: &Path,
    cache: &ChunkIndex,
    snaps: &[Snapshot],
) -> bool {
    let Some(st) = Journal::read(journal) else {
        return false;
    };
    let Some(json) = st.final_index else {
        return false;
    };
    let Ok(index) = Index::parse(json.as_bytes()) else {
        return false;
    };
    let Ok(header) = format::open_header(keys, &index) else {
        return false;
    };
    let Ok(blob) = BlobId::parse(&index.blob_path()) else {
        return false;
    };
    let window = u64::from(header.window);
    let last = header.window_hashes.len().saturating_sub(1);
    let mut tail: Option<(u64, Vec<u8>)> = None;
    for (n, h) in header.window_hashes.iter().enumerate() {
        match remote.window_hash(&blob, window, n as u64) {
            Ok(Some(r)) if r == *h => {}
            // Only a version 2 journal's last window may be missing: it was
            // journaled before it was sent (see the `cache` module docs).
            Ok(None) if n == last && st.version >= 2 => {
                let start = n as u64 * window;
                match Journal::tail(journal, window) {
                    Some(t)
                        if !t.is_empty()
                            && start + t.len() as u64 == header.part_size
                            && crate::crypto::sha256(&t) == *h =>
                    {
                        tail = Some((start, t));
                    }
                    _ => return false,
                }
            }
            _ => return false,
        }
    }
    // The manifest ends in the tail: read that part from the journal's copy.
    let own = blob.path();
    let committed: HashSet<String> = snaps.iter().map(|s| s.blob.path()).collect();
    let fetch = |s: &format::Span| -> std::io::Result<Vec<u8>> {
        let (at, len) = (s.offset, s.len);
        let end = at + len;
        if s.blob != own {
            // A version 3 node kept in another blob: the journal holds none.
            return crate::snapshot::read_span(remote, resolver, s);
        }
        let Some((start, t)) = &tail else {
            return remote.read(&blob, at, len).map_err(std::io::Error::other);
        };
        let mut out = if at < *start {
            remote
                .read(&blob, at, end.min(*start) - at)
                .map_err(std::io::Error::other)?
        } else {
            Vec::new()
        };
        if end > *start {
            let from = (at.max(*start) - start) as usize;
            let to = (end - start) as usize;
            let piece = t.get(from..to).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the tail")
            })?;
            out.extend_from_slice(piece);
        }
        Ok(out)
    };
    let Ok(mut stream) = format::Entries::open(keys, &blob.path(), &header, fetch) else {
        return false;
    };
    loop {
        let next = stream.next_entry();
        for (path, n) in stream.take_nodes() {
            if path != own && !committed.contains(&path) && !resolver.holds(&n.id) {
                return false;
            }
        }
        match next {
            Ok(Some(e)) => {
                // The very place a committed snapshot uses, not just the id.
                for c in e.chunks.iter().filter(|c| c.blob != 0) {
                    let known = match cache.get(&c.id) {
                        Ok(Some(p)) => {
                            p.offset == c.offset
                                && cache.blobs.get(p.blob as usize)
                                    == stream.blobs.get(c.blob as usize)
                        }
                        _ => false,
                    };
                    if !known {
                        return false;
                    }
                }
            }
            // Committed only whole.
            Ok(None) if stream.lost.is_empty() => break,
            Ok(None) | Err(_) => return false,
        }
    }
    if let Some((start, t)) = &tail {
        let n = start / window;
        match remote.put_window(&blob, window, n, t) {
            Ok(h) if h == header.window_hashes[last] => {}
            _ => return false,
        }
    }
    remote.commit(&blob, &index).is_ok()
}

/// Tries to continue a killed sink's blob; returns it with the verified prefix
/// (window count); the journal's chunks inside that prefix are the caller's to
/// stream ([`Journal::chunks`]).
pub(super) struct Resumed {
    pub(super) blob: BlobId,
    pub(super) window: u64,
    pub(super) hashes: Vec<[u8; 32]>,
    /// Each window's storage-challenge answers, as journaled when it was sent.
    pub(super) answers: Vec<format::Answers>,
}

/// A journal without a final index (or whose final index could not be completed)
/// is continued from the longest prefix of full windows the remote holds as
/// journaled; a version 1 journal that reached `finishing` is not.
pub(super) fn resume(remote: &dyn Remote, journal: &Path, index: &Index) -> Option<Resumed> {
    let st = Journal::read(journal)?;
    let old = BlobId::parse(&st.blob).ok()?;
    if st.finishing
        || old.domain != index.domain
        || old.node != index.node
        || old.mount != index.mount
    {
        return None;
    }
    let mut idx = index.clone();
    idx.timestamp = old.timestamp.clone();
    // Re-creating is a no-op for a pending blob and refused for a committed one.
    let blob = remote.create(&idx).ok()?;
    let mut hashes = Vec::new();
    let mut answers = Vec::new();
    // A window kept needs its challenge answers too (an older chute's journal has
    // none): the header must record them, and only the bytes sent could give them.
    while let (Some(h), Some(a)) = (
        st.windows.get(&(hashes.len() as u64)),
        st.answers.get(&(hashes.len() as u64)),
    ) {
        let Ok(a) = format::Answers::try_from(a.as_slice()) else {
            break;
        };
        match remote.window_hash(&blob, st.window, hashes.len() as u64) {
            Ok(Some(r)) if r == *h => {
                hashes.push(r);
                answers.push(a);
            }
            _ => break,
        }
    }
    // A final index means the last, short window may have been sent; a store lets
    // no full window overlap it, so the blob is continued only if it is not there.
    // It lies where the final index's size ends, which may be past the prefix kept:
    // a power cut can lose an acknowledged full window and keep the tail.
    if let Some(json) = &st.final_index {
        let size = Index::parse(json.as_bytes()).ok()?.size?;
        let last = size.checked_sub(1)? / st.window.max(1);
        if !matches!(remote.window_hash(&blob, st.window, last), Ok(None)) {
            return None;
        }
    }
    Some(Resumed {
        blob,
        window: st.window,
        hashes,
        answers,
    })
}
