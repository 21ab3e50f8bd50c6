//! Prune's decisions, as a pure function of what a run read and the clock: for
//! every candidate blob, whether it is deleted, kept (and why, until when), trimmed
//! window by window, or repacked, and which marks the run records. The rules:
//!
//! - An unreferenced blob is deleted once it has been marked for the grace period
//!   on this node's clock *and* the store has seen it idle that long (a pending
//!   upload's last write, a forgotten snapshot's forget): a client clock that is
//!   behind cannot shorten the grace. A committed pack has no idle time on the
//!   store; its mark alone counts.
//! - A referenced blob whose unused share (after trimming) is at least `repack` is
//!   repacked; otherwise each of its unused windows is trimmed once marked for the
//!   grace period and the blob idle that long.
//! - A forgotten blob marked (or with a window marked) afresh is "touched": the
//!   caller forgets it again, which restarts its idle time on the store.
//!
//! `mod.rs` gathers the facts (listings, manifests, marks) and acts on the plan.

#[cfg(test)]
use super::CandidateKind;
use super::{Candidate, Fate, Marks, Outcome, Used};
use crate::blob::BlobState;

/// What a run read about its candidates, index by index.
pub(super) struct Facts<'a> {
    /// Committed snapshots that use each candidate.
    pub users: &'a [usize],
    /// The chunks of each candidate that committed snapshots use.
    pub live: &'a [Vec<Used>],
    /// Windows (number, bytes) of each forgotten candidate that nothing uses and
    /// no earlier run trimmed.
    pub dead: &'a [Vec<(u64, u64)>],
    /// Whether each candidate's marks start afresh (something began using it since).
    pub fresh: &'a [bool],
    /// The previous run's marks.
    pub old: &'a Marks,
}

/// What to do.
#[derive(Debug)]
pub(super) struct Plan {
    /// Every candidate, in order, with its fate (not yet repacked or trimmed).
    pub outcomes: Vec<Outcome>,
    /// Candidates to repack.
    pub jobs: Vec<usize>,
    /// Windows to trim: (candidate, window number).
    pub trims: Vec<(usize, u64)>,
    /// Forgotten candidates marked afresh, to touch on the store.
    pub touch: Vec<usize>,
    /// Marks to record: blob path, or `path#window`, and since when.
    pub since: Vec<(String, i64)>,
}

/// Decides every candidate's fate at `now` with a grace period of `grace` seconds
/// and the repack threshold `repack` (see the module docs).
pub(super) fn plan(
    candidates: Vec<Candidate>,
    f: &Facts,
    now: i64,
    grace: u64,
    repack: f64,
) -> Plan {
    let mut outcomes = Vec::with_capacity(candidates.len());
    let mut since_out = Vec::new();
    let grace_secs = grace;
    let grace = grace as i64;
    let mut jobs = Vec::new();
    let mut trims: Vec<(usize, u64)> = Vec::new();
    // Forgotten blobs marked (or with a window marked) afresh by this run.
    let mut touch: Vec<usize> = Vec::new();
    for (i, blob) in candidates.into_iter().enumerate() {
        let forgotten = blob.state() == Some(BlobState::Forgotten);
        let path = blob.id.path();
        let (mut trimmed, mut trim_later) = (0, 0);
        let fate = if f.users[i] > 0 {
            let used: u64 = f.live[i].iter().map(|r| u64::from(r.1)).sum();
            // What trimming will not return.
            let trimmable: u64 = f.dead[i].iter().map(|d| d.1).sum();
            let left = blob.bytes.saturating_sub(trimmable);
            let unused = left.saturating_sub(used);
            // Only forgotten snapshots and packs: a pending upload is never used.
            let movable = matches!(blob.state(), None | Some(BlobState::Forgotten));
            if movable && unused > 0 && unused as f64 >= repack * left as f64 {
                jobs.push(i);
            } else {
                for &(n, len) in &f.dead[i] {
                    let key = format!("{path}#{n}");
                    let since = f.old.since_of(&key, now, f.fresh[i]);
                    since_out.push((key, since));
                    if now - since >= grace && blob.idle >= grace_secs {
                        trims.push((i, n));
                        trimmed += len;
                    } else {
                        trim_later += len;
                        if since == now && forgotten && touch.last() != Some(&i) {
                            touch.push(i);
                        }
                    }
                }
            }
            Fate::Referenced {
                by: f.users[i],
                live: used,
            }
        } else {
            let since = f.old.since_of(&path, now, f.fresh[i]);
            since_out.push((path, since));
            // Idle is measured by the store: since the forget for a forgotten blob,
            // since the last write for a pending one. Requiring it too means a
            // client clock that is off (a Pi before NTP) cannot shorten the grace.
            // A committed pack stays committed while marked (forgetting it changes
            // what references resolve to at once, like a delete): the store has no
            // idle time for it, so its mark alone counts.
            let idle = blob.state().map_or(grace_secs, |_| blob.idle);
            if now - since >= grace && idle >= grace_secs {
                Fate::Deleted
            } else {
                if since == now && forgotten {
                    touch.push(i);
                }
                let due = (since + grace).max(now + grace - idle.min(grace_secs) as i64);
                Fate::Marked { since, due }
            }
        };
        outcomes.push(Outcome {
            blob,
            fate,
            repacked: false,
            trimmed,
            trim_later,
        });
    }
    Plan {
        outcomes,
        jobs,
        trims,
        touch,
        since: since_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobId;

    const NOW: i64 = 1_000_000;
    const GRACE: u64 = 86_400;

    fn cand(name: &str, state: Option<BlobState>, bytes: u64, idle: u64) -> Candidate {
        Candidate {
            id: BlobId::new("d", "n", "m", name).unwrap(),
            kind: state.map_or(CandidateKind::Pack, CandidateKind::Snapshot),
            bytes,
            idle,
        }
    }

    fn marks(entries: &[(&str, i64)]) -> Marks {
        Marks {
            since: entries.iter().map(|(k, t)| (k.to_string(), *t)).collect(),
            ..Marks::default()
        }
    }

    /// Plans one candidate at `NOW` with a grace period of `GRACE`.
    fn one(c: Candidate, f: &Facts, repack: f64) -> Plan {
        plan(vec![c], f, NOW, GRACE, repack)
    }

    /// Plans one candidate that nothing uses.
    fn unused(c: Candidate, old: &Marks) -> Plan {
        plan(
            vec![c],
            &Facts {
                users: &[0],
                live: &[Vec::new()],
                dead: &[Vec::new()],
                fresh: &[false],
                old,
            },
            NOW,
            GRACE,
            0.25,
        )
    }

    #[test]
    fn an_unused_blob_is_marked_first_and_deleted_a_grace_period_later() {
        let forgotten = Some(BlobState::Forgotten);
        let p = unused(cand("t1", forgotten, 100, GRACE), &Marks::default());
        let due = NOW + GRACE as i64;
        assert_eq!(p.outcomes[0].fate, Fate::Marked { since: NOW, due });
        assert_eq!(p.since, vec![("d/n/m/t1".to_string(), NOW)]);
        assert_eq!(
            p.touch,
            vec![0],
            "a fresh mark restarts the store's idle time"
        );

        let old = marks(&[("d/n/m/t1", NOW - GRACE as i64)]);
        let p = unused(cand("t1", forgotten, 100, GRACE), &old);
        assert_eq!(p.outcomes[0].fate, Fate::Deleted);
        assert!(p.touch.is_empty());
        // A mark never moves: not even back to a `now` earlier than itself.
        let later = marks(&[("d/n/m/t1", NOW + 50)]);
        let p = unused(cand("t1", forgotten, 100, GRACE), &later);
        assert_eq!(p.since, vec![("d/n/m/t1".to_string(), NOW + 50)]);
    }

    #[test]
    fn the_stores_idle_time_must_agree_so_a_clock_behind_cannot_shorten_the_grace() {
        // Marked two grace periods ago by this node's clock, but the store saw
        // the upload written an hour ago.
        let old = marks(&[("d/n/m/t1", NOW - 2 * GRACE as i64)]);
        let p = unused(cand("t1", Some(BlobState::Pending), 100, 3600), &old);
        let due = NOW + GRACE as i64 - 3600;
        assert!(
            matches!(p.outcomes[0].fate, Fate::Marked { due: d, .. } if d == due),
            "{:?}",
            p.outcomes[0].fate
        );
        assert!(p.touch.is_empty(), "a pending upload is never forgotten");
        // A committed pack has no idle time on the store: its mark alone counts.
        let old = marks(&[("d/n/m/p1", NOW - GRACE as i64)]);
        let p = unused(cand("p1", None, 100, 0), &old);
        assert_eq!(p.outcomes[0].fate, Fate::Deleted);
    }

    #[test]
    fn a_used_blob_is_repacked_past_the_threshold_else_trimmed_window_by_window() {
        let forgotten = Some(BlobState::Forgotten);
        let id = [0u8; 32];
        // 1000 bytes, 100 used, no dead window: 90% unused, over 25%: repack.
        let p = one(
            cand("t1", forgotten, 1000, GRACE),
            &Facts {
                users: &[1],
                live: &[vec![(0, 100, id)]],
                dead: &[Vec::new()],
                fresh: &[false],
                old: &Marks::default(),
            },
            0.25,
        );
        assert_eq!(p.jobs, vec![0]);
        assert_eq!(p.outcomes[0].fate, Fate::Referenced { by: 1, live: 100 });

        // 1000 bytes, 800 used, two dead windows of 100: what trimming leaves is
        // all used, so no repack; window 1's mark is due, window 2's is new.
        let old = marks(&[("d/n/m/t1#1", NOW - GRACE as i64)]);
        let facts = Facts {
            users: &[2],
            live: &[vec![(0, 800, id)]],
            dead: &[vec![(1, 100), (2, 100)]],
            fresh: &[false],
            old: &old,
        };
        let p = one(cand("t1", forgotten, 1000, GRACE), &facts, 0.25);
        assert!(p.jobs.is_empty());
        assert_eq!(p.trims, vec![(0, 1)]);
        assert_eq!(
            (p.outcomes[0].trimmed, p.outcomes[0].trim_later),
            (100, 100)
        );
        assert_eq!(p.touch, vec![0]);

        // Used again since (fresh): every mark starts over, nothing is trimmed.
        let facts = Facts {
            fresh: &[true],
            ..facts
        };
        let p = one(cand("t1", forgotten, 1000, GRACE), &facts, 0.25);
        assert!(p.trims.is_empty());
        assert!(p.since.iter().all(|(_, t)| *t == NOW));
    }

    #[test]
    fn a_pending_upload_in_use_is_never_repacked() {
        let p = one(
            cand("t1", Some(BlobState::Pending), 1000, 0),
            &Facts {
                users: &[1],
                live: &[vec![(0, 10, [0; 32])]],
                dead: &[Vec::new()],
                fresh: &[false],
                old: &Marks::default(),
            },
            0.0,
        );
        assert!(p.jobs.is_empty());
    }
}
