//! How the pipelines that read chunks (restore, verify) batch and spread their
//! work: neighbouring chunks of one blob are coalesced into one ranged read of at
//! most a given size ([`coalesce`]), and a fixed number of threads take items from
//! a shared list in order ([`each_parallel`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One ranged read: bytes `start..end` of blob number `blob`, holding `items`.
#[derive(Debug, PartialEq, Eq)]
pub struct Run<T> {
    pub blob: usize,
    pub start: u64,
    pub end: u64,
    pub items: Vec<T>,
}

/// Bytes between two items a run reads through rather than split in two: a
/// sink appends manifest nodes between its chunks, and the small files' packs a
/// restore wants lie either side of them.
pub const GAP: u64 = 64 << 10;

/// Groups `(blob, offset, len, item)`, in the order given (callers sort by blob and
/// offset), into runs of nearby bytes of one blob (apart by at most [`GAP`]), each at most `max` bytes
/// long (a longer item has a run of its own). An item within bytes the run holds
/// already (the same chunk restored into two files) joins it, even a run longer
/// than `max`.
pub fn coalesce<T>(
    pieces: impl IntoIterator<Item = (usize, u64, u64, T)>,
    max: u64,
) -> Vec<Run<T>> {
    let mut runs: Vec<Run<T>> = Vec::new();
    for (blob, offset, len, item) in pieces {
        let end = offset + len;
        if let Some(r) = runs.last_mut() {
            let joins = r.blob == blob && r.start <= offset && offset <= r.end.saturating_add(GAP);
            // Bytes the run holds already join it whatever its length: a chunk
            // larger than `max` shared by many files (a pack) is read once.
            if joins && (end <= r.end || end - r.start <= max) {
                r.end = r.end.max(end);
                r.items.push(item);
                continue;
            }
        }
        runs.push(Run {
            blob,
            start: offset,
            end,
            items: vec![item],
        });
    }
    runs
}

/// Calls `f` on every item on `threads` threads (at least one), items taken in
/// order. The first error stops the threads from taking more and is returned;
/// results of the others are the callers' to collect (through `f`).
pub fn each_parallel<T: Sync, E: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failed: Mutex<Option<E>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    if let Err(e) = f(item) {
                        failed.lock().expect("poisoned").get_or_insert(e);
                        stop.store(true, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    match failed.into_inner().expect("poisoned") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_of_one_blob_share_a_read_up_to_the_cap() {
        let runs = coalesce(
            [
                (0, 0, 10, 'a'),
                (0, 10, 10, 'b'),
                (0, 30, 10, 'c'), // past a gap and the cap
                (1, 40, 10, 'd'), // another blob
                (1, 50, 25, 'e'), // over the cap of 30
                (1, 50, 25, 'f'), // the same chunk again
                (1, 60, 5, 'g'),  // within it
                (1, 80, 40, 'h'), // alone over the cap
                (1, 80, 40, 'i'), // the same chunk again: read once
                (1, 90, 5, 'j'),
            ],
            30,
        );
        // Items apart by at most GAP share a read (the bytes between are read
        // through), further apart they do not.
        let near = coalesce(
            [
                (0, 0, 10, 'a'),
                (0, 10 + GAP, 10, 'b'),
                (0, 21 + 2 * GAP, 10, 'c'),
            ],
            4 * GAP,
        );
        let near: Vec<(u64, u64, String)> = near
            .into_iter()
            .map(|r| (r.start, r.end, r.items.into_iter().collect()))
            .collect();
        assert_eq!(
            near,
            [
                (0, 20 + GAP, "ab".into()),
                (21 + 2 * GAP, 31 + 2 * GAP, "c".into())
            ]
        );
        let got: Vec<(usize, u64, u64, String)> = runs
            .into_iter()
            .map(|r| (r.blob, r.start, r.end, r.items.into_iter().collect()))
            .collect();
        assert_eq!(
            got,
            [
                (0, 0, 20, "ab".into()),
                (0, 30, 40, "c".into()),
                (1, 40, 50, "d".into()),
                (1, 50, 75, "efg".into()),
                (1, 80, 120, "hij".into())
            ]
        );
    }

    #[test]
    fn every_item_is_seen_once_and_the_first_error_stops_the_rest() {
        let seen = Mutex::new(Vec::new());
        let items: Vec<u32> = (0..1000).collect();
        each_parallel(&items, 4, |&i| {
            seen.lock().unwrap().push(i);
            Ok::<(), ()>(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, items);

        // Items past the failing one wait for it and then take 10 ms each: the
        // other thread cannot run through the rest before the failure stops it,
        // however the threads are scheduled (it did once, under qemu arm1176,
        // when they ran at full speed).
        let calls = AtomicUsize::new(0);
        let failing = AtomicBool::new(false);
        let r = each_parallel(&items, 2, |&i| {
            calls.fetch_add(1, Ordering::SeqCst);
            if i == 3 {
                failing.store(true, Ordering::SeqCst);
                return Err(i);
            }
            if i > 3 {
                while !failing.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(())
        });
        assert_eq!(r, Err(3));
        assert!(calls.load(Ordering::SeqCst) < 1000);
    }
}
