//! The store's contract tests: the invariants of [`crate::store`]'s docs, written
//! once against [`Store`] and run for every backend by [`contract_tests!`] (the
//! directory's below; an S3 backend adds one line naming how to make an empty
//! store). Each check takes an empty store and uses only [`Store`] and the
//! [`Backend`] calls, so a backend that keeps the guarantees of `backend.rs`
//! passes them all and one that does not fails by name.

use super::*;
use crate::format::challenge_answer;

/// The index a sink would create for blob `d.org/pi/m1/<ts>` (final with `size`).
pub(crate) fn index(ts: &str, size: Option<u64>) -> Vec<u8> {
    let size = size.map_or(String::new(), |s| format!(",\"size\":{s}"));
    format!(
        r#"{{"version":1,"domain":"d.org","node":"pi","mount":"m1","timestamp":"{ts}","parent":null{size}}}"#
    )
    .into_bytes()
}

/// Writes `data` as one window at `offset`; its change.
fn put(s: &Store, id: &BlobId, offset: u64, data: &[u8]) -> Result<Change> {
    s.write_charged(id, offset, data.len() as u64, &mut &data[..], None)
        .map(|(_, c)| c)
}

/// A quota kept from the changes the store reports, as `chute serve` keeps one.
#[derive(Default)]
struct Ledger(u64);

impl Ledger {
    fn add(&mut self, c: Change) {
        self.0 = self.0 + c.added - c.freed;
    }
    fn free(&mut self, freed: u64) {
        self.0 -= freed;
    }
    /// The count kept equals the one the store counts from its objects.
    fn check(&self, s: &Store, when: &str) {
        assert_eq!(self.0, s.node_usage("pi").unwrap(), "charges after {when}");
    }
}

/// Defines one `#[test]` per contract check for a backend: `$new` makes an
/// empty store (and whatever must outlive it, dropped after the check).
#[macro_export]
#[doc(hidden)]
macro_rules! contract_tests {
    ($backend:ident, $new:expr) => {
        mod $backend {
            use $crate::store::contract as c;
            $crate::contract_tests!(@each $new;
                windows_never_overlap, a_bad_body_keeps_nothing, commit_checks_gaps_to_size,
                committed_blobs_are_immutable, a_window_landing_after_the_commit_is_dropped,
                an_overlap_placed_meanwhile_is_refused, forget_hides_and_keeps_the_bytes,
                a_forget_cut_short_is_a_forget, only_forgotten_windows_are_trimmed,
                pending_blobs_are_capped, charges_follow_the_objects, indexes_are_capped,
                names_are_checked, windows_are_bounded, reads_hashes_and_challenges,
                uncommitted_blobs_are_listed);
        }
    };
    (@each $new:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                let (store, _keep) = $new;
                c::$check(&store);
            }
        )*
    };
}

pub(crate) fn windows_never_overlap(s: &Store) {
    let id = s.create(&index("t1", None)).unwrap();
    put(s, &id, 0, b"abcd").unwrap();
    put(s, &id, 4, b"efgh").unwrap();
    for (offset, data) in [(2u64, &b"xxxx"[..]), (0, b"xxxxxx"), (6, b"xx"), (3, b"x")] {
        assert!(
            matches!(put(s, &id, offset, data), Err(Error::Range(_))),
            "{offset}+{}",
            data.len()
        );
    }
    // Exactly the same range replaces the window.
    put(s, &id, 4, b"EFGH").unwrap();
    assert_eq!(s.read(&id, 0, 8).unwrap(), b"abcdEFGH");
    assert_eq!(s.windows(&id).unwrap().len(), 2);
}

pub(crate) fn a_bad_body_keeps_nothing(s: &Store) {
    let id = s.create(&index("t1", None)).unwrap();
    let wrong = Some(digest(b"else"));
    assert!(matches!(
        s.write(&id, 0, 4, &mut &b"abcd"[..], wrong),
        Err(Error::Digest)
    ));
    assert!(matches!(
        s.write(&id, 0, 4, &mut &b"abc"[..], None),
        Err(Error::Bad(_))
    ));
    assert!(matches!(
        s.write(&id, 0, 4, &mut &b"abcde"[..], None),
        Err(Error::Bad(_))
    ));
    assert!(s.windows(&id).unwrap().is_empty());
    assert_eq!(
        s.node_usage("pi").unwrap(),
        charge(index("t1", None).len() as u64)
    );
    let h = s
        .write(&id, 0, 4, &mut &b"abcd"[..], Some(digest(b"abcd")))
        .unwrap();
    assert_eq!(h, digest(b"abcd"));
}

pub(crate) fn commit_checks_gaps_to_size(s: &Store) {
    let id = s.create(&index("t1", None)).unwrap();
    put(s, &id, 0, b"abcd").unwrap();
    put(s, &id, 8, b"ijkl").unwrap();
    assert!(
        s.list("d.org", "pi").unwrap().is_empty(),
        "pending is not listed"
    );
    for size in [12, 6, 2] {
        assert!(
            matches!(
                s.commit(&id, &index("t1", Some(size))),
                Err(Error::Conflict(_))
            ),
            "size {size}"
        );
    }
    assert!(matches!(
        s.commit(&id, &index("t1", None)),
        Err(Error::Bad(_))
    ));
    put(s, &id, 4, b"efgh").unwrap();
    s.commit(&id, &index("t1", Some(12))).unwrap();
    assert_eq!(s.list("d.org", "pi").unwrap(), std::slice::from_ref(&id));
    assert!(s.is_committed(&id));
    assert_eq!(s.index(&id).unwrap(), index("t1", Some(12)));
    assert_eq!(s.read(&id, 0, 12).unwrap(), b"abcdefghijkl");
}

pub(crate) fn committed_blobs_are_immutable(s: &Store) {
    let id = s.create(&index("t1", None)).unwrap();
    put(s, &id, 0, b"abcd").unwrap();
    let c = s.commit_charged(&id, &index("t1", Some(4))).unwrap();
    assert_eq!(c.added, charge(index("t1", Some(4)).len() as u64));
    // The same commit again changes nothing; another one is refused.
    assert_eq!(
        s.commit_charged(&id, &index("t1", Some(4))).unwrap(),
        Change::default()
    );
    let other = String::from_utf8(index("t1", Some(4)))
        .unwrap()
        .replace("null", "\"p\"");
    assert!(matches!(
        s.commit(&id, other.as_bytes()),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(put(s, &id, 4, b"efgh"), Err(Error::Conflict(_))));
    assert!(matches!(put(s, &id, 0, b"ABCD"), Err(Error::Conflict(_))));
    assert!(matches!(
        s.create(&index("t1", None)),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(s.delete(&id), Err(Error::Conflict(_))));
    assert!(matches!(s.trim(&id, 0), Err(Error::Conflict(_))));
    assert_eq!(s.read(&id, 0, 4).unwrap(), b"abcd");
    assert_eq!(s.index(&id).unwrap(), index("t1", Some(4)));
}

/// A body that runs `then` once its last byte has been read: what another
/// request does while this window is being received.
struct Then<'a> {
    data: &'a [u8],
    then: Option<Box<dyn FnOnce() + 'a>>,
}

impl Read for Then<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read(buf)?;
        if self.data.is_empty() {
            if let Some(f) = self.then.take() {
                f();
            }
        }
        Ok(n)
    }
}

pub(crate) fn a_window_landing_after_the_commit_is_dropped(s: &Store) {
    let id = s.create(&index("t1", None)).unwrap();
    put(s, &id, 0, b"abcd").unwrap();
    let mut late = Then {
        data: b"efgh",
        then: Some(Box::new(|| s.commit(&id, &index("t1", Some(4))).unwrap())),
    };
    assert!(matches!(
        s.write(&id, 4, 4, &mut late, None),
        Err(Error::Conflict(_))
    ));
    assert_eq!(s.windows(&id).unwrap().len(), 1);
    assert!(matches!(s.read(&id, 4, 4), Err(Error::Range(_))));
    let usage = charge(4) + charge(index("t1", None).len() as u64);
    assert_eq!(
        s.node_usage("pi").unwrap(),
        usage + charge(index("t1", Some(4)).len() as u64),
        "nothing of the late window is kept"
    );
}

pub(crate) fn an_overlap_placed_meanwhile_is_refused(s: &Store) {
    let id = s.create(&index("t1", None)).unwrap();
    let mut slow = Then {
        data: b"abcdefgh",
        then: Some(Box::new(|| {
            put(s, &id, 4, b"EFGH").unwrap();
        })),
    };
    assert!(matches!(
        s.write(&id, 0, 8, &mut slow, None),
        Err(Error::Range(_))
    ));
    assert_eq!(s.windows(&id).unwrap().len(), 1);
    assert_eq!(s.read(&id, 4, 4).unwrap(), b"EFGH");
}

pub(crate) fn forget_hides_and_keeps_the_bytes(s: &Store) {
    let id = s.create(&index("t1", None)).unwrap();
    put(s, &id, 0, b"abcd").unwrap();
    assert!(matches!(s.forget(&id), Err(Error::NotFound(_))), "pending");
    s.commit(&id, &index("t1", Some(4))).unwrap();
    s.forget(&id).unwrap();
    assert!(s.list("d.org", "pi").unwrap().is_empty());
    assert!(!s.is_committed(&id));
    assert!(matches!(s.index(&id), Err(Error::NotFound(_))));
    assert!(matches!(s.index_or_pending(&id), Err(Error::NotFound(_))));
    assert_eq!(s.forgotten_index(&id).unwrap(), index("t1", Some(4)));
    // Never written or committed again; still read and hashed for the
    // snapshots that share its chunks.
    assert!(matches!(
        s.commit(&id, &index("t1", Some(4))),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(put(s, &id, 4, b"efgh"), Err(Error::Conflict(_))));
    assert!(matches!(
        s.create(&index("t1", None)),
        Err(Error::Conflict(_))
    ));
    assert_eq!(s.read(&id, 0, 4).unwrap(), b"abcd");
    assert_eq!(s.hash(&id, 0, 4).unwrap(), digest(b"abcd"));
    // Again: only its idle time changes.
    s.forget(&id).unwrap();
    assert_eq!(s.forgotten_index(&id).unwrap(), index("t1", Some(4)));
    let missing = BlobId::new("d.org", "pi", "m1", "t9").unwrap();
    assert!(matches!(s.forget(&missing), Err(Error::NotFound(_))));
    s.delete(&id).unwrap();
    assert!(matches!(s.read(&id, 0, 4), Err(Error::NotFound(_))));
    assert!(matches!(s.delete(&id), Err(Error::NotFound(_))));
}

/// An object store forgets by a copy then a delete: cut between them, the blob
/// has both indexes, and it is forgotten (see `backend.rs`).
pub(crate) fn a_forget_cut_short_is_a_forget(s: &Store) {
    let id = s.create(&index("t1", None)).unwrap();
    put(s, &id, 0, b"abcd").unwrap();
    s.commit(&id, &index("t1", Some(4))).unwrap();
    s.forget(&id).unwrap();
    {
        let b = s.backend();
        let hold = b.hold(&id, false).unwrap();
        b.put_index(&hold, &id, Slot::Committed, &index("t1", Some(4)))
            .unwrap();
    }
    let ix = s.backend().indexes(&id).unwrap();
    assert!(ix.committed.is_some() && ix.forgotten());
    assert!(s.list("d.org", "pi").unwrap().is_empty());
    assert!(matches!(s.index(&id), Err(Error::NotFound(_))));
    assert!(matches!(put(s, &id, 4, b"efgh"), Err(Error::Conflict(_))));
    assert!(matches!(
        s.commit(&id, &index("t1", Some(4))),
        Err(Error::Conflict(_))
    ));
    assert_eq!(s.trim(&id, 0).unwrap(), charge(4));
    let u = s.list_uncommitted("d.org", "pi").unwrap();
    assert_eq!((u.len(), u[0].state), (1, BlobState::Forgotten));
    // The next forget finishes it.
    s.forget(&id).unwrap();
    assert_eq!(s.backend().indexes(&id).unwrap().committed, None);
    s.delete(&id).unwrap();
    assert_eq!(s.node_usage("pi").unwrap(), 0);
}

pub(crate) fn only_forgotten_windows_are_trimmed(s: &Store) {
    let id = s.create(&index("t1", None)).unwrap();
    put(s, &id, 0, b"abcd").unwrap();
    put(s, &id, 4, b"efgh").unwrap();
    assert!(matches!(s.trim(&id, 0), Err(Error::Conflict(_))), "pending");
    s.commit(&id, &index("t1", Some(8))).unwrap();
    assert!(
        matches!(s.trim(&id, 0), Err(Error::Conflict(_))),
        "committed"
    );
    s.forget(&id).unwrap();
    assert_eq!(s.trim(&id, 4).unwrap(), charge(4));
    assert!(matches!(s.trim(&id, 4), Err(Error::NotFound(_))));
    assert!(matches!(s.trim(&id, 2), Err(Error::NotFound(_))));
    assert!(matches!(s.read(&id, 4, 4), Err(Error::Range(_))));
    assert_eq!(s.read(&id, 0, 4).unwrap(), b"abcd");
}

pub(crate) fn pending_blobs_are_capped(s: &Store) {
    let s = s.clone().with_max_pending(2);
    let a = s.create(&index("t1", None)).unwrap();
    s.create(&index("t2", None)).unwrap();
    assert!(matches!(s.create(&index("t3", None)), Err(Error::Quota(_))));
    // Creating a pending blob again is not one more.
    s.create(&index("t2", None)).unwrap();
    put(&s, &a, 0, b"abcd").unwrap();
    s.commit(&a, &index("t1", Some(4))).unwrap();
    s.create(&index("t3", None)).unwrap();
    // Another node has its own count.
    let other = String::from_utf8(index("t1", None))
        .unwrap()
        .replace("\"pi\"", "\"pj\"");
    s.create(other.as_bytes()).unwrap();
}

pub(crate) fn charges_follow_the_objects(s: &Store) {
    let mut q = Ledger::default();
    q.check(s, "nothing");
    let (id, c) = s.create_charged(&index("t1", None)).unwrap();
    q.add(c);
    q.check(s, "create");
    // Created again: the new pending index replaces the old.
    let (_, c) = s.create_charged(&index("t1", None)).unwrap();
    assert_eq!(c.freed, c.added);
    q.add(c);
    q.check(s, "create again");
    for (offset, data) in [(0u64, &b"abcd"[..]), (4, b"efghij"), (10, b"kl")] {
        let c = put(s, &id, offset, data).unwrap();
        assert_eq!(
            c,
            Change {
                added: charge(data.len() as u64),
                freed: 0
            }
        );
        q.add(c);
        q.check(s, "a window");
    }
    // A retry frees what it replaces: it costs nothing.
    let c = put(s, &id, 4, b"EFGHIJ").unwrap();
    assert_eq!(c.added, c.freed);
    q.add(c);
    q.check(s, "a rewrite");
    assert_eq!(s.held(&id, 4, 6), charge(6));
    assert_eq!(s.held(&id, 4, 5), 0);
    q.add(s.commit_charged(&id, &index("t1", Some(12))).unwrap());
    q.check(s, "commit");
    s.forget(&id).unwrap();
    q.check(s, "forget");
    q.free(s.trim(&id, 10).unwrap());
    q.check(s, "trim");
    // A second blob, deleted while pending.
    let (p, c) = s.create_charged(&index("t2", None)).unwrap();
    q.add(c);
    q.add(put(s, &p, 0, b"xyz").unwrap());
    q.check(s, "a second blob");
    q.free(s.delete(&p).unwrap());
    q.free(s.delete(&id).unwrap());
    q.check(s, "delete");
    assert_eq!(q.0, 0);
}

pub(crate) fn indexes_are_capped(s: &Store) {
    let pad = |size: Option<u64>, n: usize| {
        let ix = String::from_utf8(index("t1", size)).unwrap();
        ix.replace("null", &format!("\"{}\"", "x".repeat(n)))
            .into_bytes()
    };
    assert!(matches!(
        s.create(&pad(None, INDEX_CAP as usize)),
        Err(Error::TooLarge(_))
    ));
    let id = s.create(&pad(None, 100)).unwrap();
    put(s, &id, 0, b"abcd").unwrap();
    assert!(matches!(
        s.commit(&id, &pad(Some(4), MAX_INDEX as usize)),
        Err(Error::TooLarge(_))
    ));
    // A final index past the pending cap (the sealed header grows) is fine.
    let big = pad(Some(4), 2 * INDEX_CAP as usize);
    assert!(big.len() as u64 > INDEX_CAP);
    // Sent to another blob: refused.
    let t2 = s.create(&index("t2", None)).unwrap();
    assert!(matches!(s.commit(&t2, &big), Err(Error::Bad(_))));
    s.commit(&id, &big).unwrap();
    assert_eq!(s.index(&id).unwrap(), big);
}

pub(crate) fn names_are_checked(s: &Store) {
    for (field, bad) in [
        ("\"d.org\"", "\"..\""),
        ("\"pi\"", "\"a/b\""),
        ("\"m1\"", "\".\""),
        ("\"t1\"", "\"\""),
    ] {
        let ix = String::from_utf8(index("t1", None))
            .unwrap()
            .replacen(field, bad, 1);
        assert!(
            matches!(s.create(ix.as_bytes()), Err(Error::Bad(_))),
            "{ix}"
        );
    }
    for junk in [&b"not json"[..], b"{\"domain\":1}", b"\xff"] {
        assert!(matches!(s.create(junk), Err(Error::Bad(_))));
    }
    assert!(matches!(s.list("..", "pi"), Err(Error::Bad(_))));
    assert!(matches!(s.list("d.org", "a/b"), Err(Error::Bad(_))));
    assert!(matches!(s.nodes(".."), Err(Error::Bad(_))));
    assert!(matches!(
        s.list_uncommitted("d.org", ".."),
        Err(Error::Bad(_))
    ));
    assert_eq!(s.node_usage("..").unwrap(), 0);
    assert!(s.nodes("d.org").unwrap().is_empty());
    s.create(&index("t1", None)).unwrap();
    assert_eq!(s.nodes("d.org").unwrap(), ["pi"]);
}

pub(crate) fn windows_are_bounded(s: &Store) {
    let s = s.clone().with_max_window(8);
    let id = s.create(&index("t1", None)).unwrap();
    assert!(matches!(put(&s, &id, 0, b""), Err(Error::Bad(_))));
    assert!(matches!(
        put(&s, &id, 0, b"123456789"),
        Err(Error::TooLarge(_))
    ));
    assert!(matches!(
        s.write(&id, u64::MAX - 2, 4, &mut &b"abcd"[..], None),
        Err(Error::Range(_))
    ));
    // At most MAX_AHEAD_WINDOWS largest windows past the end of what is written.
    let ahead = 8 * MAX_AHEAD_WINDOWS;
    assert!(matches!(
        put(&s, &id, ahead + 1, b"ab"),
        Err(Error::Range(_))
    ));
    put(&s, &id, ahead, b"ab").unwrap();
    let missing = BlobId::new("d.org", "pi", "m1", "t9").unwrap();
    assert!(matches!(
        put(&s, &missing, 0, b"ab"),
        Err(Error::NotFound(_))
    ));
}

pub(crate) fn reads_hashes_and_challenges(s: &Store) {
    let id = s.create(&index("t1", None)).unwrap();
    put(s, &id, 0, b"abcd").unwrap();
    put(s, &id, 4, b"efgh").unwrap();
    put(s, &id, 12, b"mnop").unwrap();
    assert_eq!(s.part_len(&id).unwrap(), 16);
    assert_eq!(s.read(&id, 2, 4).unwrap(), b"cdef");
    assert!(matches!(s.read(&id, 6, 4), Err(Error::Range(_))));
    assert!(matches!(s.read(&id, 14, 4), Err(Error::Range(_))));
    assert!(matches!(s.read(&id, u64::MAX, 2), Err(Error::Range(_))));
    assert_eq!(s.hash(&id, 0, 8).unwrap(), digest(b"abcdefgh"));
    assert_eq!(s.hash(&id, 4, 4).unwrap(), digest(b"efgh"));
    let w = s.window_at(&id, 4).unwrap().unwrap();
    assert_eq!((w.offset, w.len, w.sha256), (4, 4, digest(b"efgh")));
    assert_eq!(s.window_at(&id, 2).unwrap(), None);
    assert_eq!(s.window_hash(&id, &w).unwrap(), digest(b"efgh"));
    let nonce = [7u8; 32];
    assert_eq!(
        s.window_challenge(&id, &w, &nonce).unwrap(),
        challenge_answer(&nonce, b"efgh")
    );
    // A window the store never had has no answer.
    let never = Window {
        offset: 8,
        len: 4,
        sha256: digest(b"ijkl"),
    };
    assert!(s.window_challenge(&id, &never, &nonce).is_err());
    let missing = BlobId::new("d.org", "pi", "m1", "t9").unwrap();
    assert!(matches!(s.read(&missing, 0, 1), Err(Error::NotFound(_))));
    assert!(matches!(s.index(&missing), Err(Error::NotFound(_))));
    assert_eq!(s.index_or_pending(&id).unwrap(), (index("t1", None), true));
}

pub(crate) fn uncommitted_blobs_are_listed(s: &Store) {
    let p = s.create(&index("t1", None)).unwrap();
    put(s, &p, 0, b"abcdef").unwrap();
    let f = s.create(&index("t2", None)).unwrap();
    put(s, &f, 0, b"ab").unwrap();
    s.commit(&f, &index("t2", Some(2))).unwrap();
    let c = s.create(&index("t3", None)).unwrap();
    put(s, &c, 0, b"xy").unwrap();
    s.commit(&c, &index("t3", Some(2))).unwrap();
    s.forget(&f).unwrap();
    let u = s.list_uncommitted("d.org", "pi").unwrap();
    let seen: Vec<_> = u.iter().map(|u| (u.id.clone(), u.state, u.bytes)).collect();
    assert_eq!(
        seen,
        [(p, BlobState::Pending, 6), (f, BlobState::Forgotten, 2)]
    );
    assert!(u.iter().all(|u| u.idle < 3600));
    assert_eq!(s.list("d.org", "pi").unwrap(), [c]);
}

#[cfg(test)]
mod dir {
    /// An empty directory store, removed after the check.
    pub(super) fn new() -> (super::Store, TempRoot) {
        let root =
            std::env::temp_dir().join(format!("chute-contract-{}", crate::fsutil::random_suffix()));
        let (s, created) = super::Store::init(&root).unwrap();
        assert!(created);
        (s, TempRoot(root))
    }

    pub(super) struct TempRoot(std::path::PathBuf);

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

crate::contract_tests!(dir_store, super::dir::new());

/// The real S3 servers of the integration tests (`tests/util/s3.rs`, one file
/// for both: it names the crate `chute`, which `lib.rs` lets the lib's own tests
/// say too). Not every helper there is used here.
#[allow(dead_code)]
#[path = "../../tests/util/s3.rs"]
mod servers;

/// S3 stores for the contract, each under a prefix of its own in a bucket of a
/// server shared by the checks that run at the same time (started by the first,
/// stopped when the last one ends: no server outlives the test process).
mod s3 {
    use super::servers::{Garage, Rclone};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex, Weak};

    static GARAGE: Mutex<Weak<Garage>> = Mutex::new(Weak::new());
    static RCLONE: Mutex<Weak<Rclone>> = Mutex::new(Weak::new());
    static NEXT: AtomicU32 = AtomicU32::new(0);

    fn shared<T>(slot: &Mutex<Weak<T>>, start: fn() -> T) -> Arc<T> {
        let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = s.upgrade() {
            return t;
        }
        let t = Arc::new(start());
        *s = Arc::downgrade(&t);
        t
    }

    fn prefix() -> String {
        format!(
            "contract-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn store(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> super::Store {
        let config = crate::s3::Config::from_env(spec, env).unwrap();
        super::Store::over(Arc::new(super::S3Store::new(config)))
    }

    /// An empty store on the 3-node Garage cluster.
    pub(super) fn garage() -> (super::Store, Arc<Garage>) {
        let g = shared(&GARAGE, Garage::start);
        (store(&g.spec(0, &prefix()), &g.env()), g)
    }

    /// An empty store on `rclone serve s3`.
    pub(super) fn rclone() -> (super::Store, Arc<Rclone>) {
        let r = shared(&RCLONE, Rclone::start);
        (store(&r.spec(&prefix()), &r.env()), r)
    }

    /// A blob's windows are listed once while it is written, not once a write:
    /// a sink of n windows costs one LIST, and what it wrote reads back.
    #[test]
    fn a_blob_being_written_is_listed_once() {
        use super::{index, put};
        use std::sync::atomic::Ordering;
        let r = shared(&RCLONE, Rclone::start);
        let config = crate::s3::Config::from_env(&r.spec(&prefix()), &r.env()).unwrap();
        let backend = Arc::new(super::S3Store::new(config));
        let s = super::Store::over(backend.clone());
        let id = s.create(&index("t1", None)).unwrap();
        for n in 0..40u64 {
            put(&s, &id, n * 4, format!("{n:04}").as_bytes()).unwrap();
        }
        s.commit(&id, &index("t1", Some(160))).unwrap();
        assert_eq!(&s.read(&id, 36, 8).unwrap(), b"00090010");
        assert_eq!(backend.listings.listed.load(Ordering::Relaxed), 1);
    }

    /// The S3 scrub re-reads each window against its name: a window overwritten
    /// in the bucket behind the store's back is named, and a pass resumed after a
    /// blob skips it and every blob before it (by component: `m1.x` is after `m1`).
    #[test]
    fn the_s3_scrub_finds_damage_and_resumes() {
        use super::{ScrubEvent, index, put};
        let r = shared(&RCLONE, Rclone::start);
        let spec = r.spec(&prefix());
        let s = store(&spec, &r.env());
        let id = s.create(&index("t1", None)).unwrap();
        put(&s, &id, 0, b"abcd").unwrap();
        put(&s, &id, 4, b"efgh").unwrap();
        s.commit(&id, &index("t1", Some(8))).unwrap();
        let other = crate::blob::BlobId::new("d.org", "pi", "m1.x", "t1").unwrap();
        {
            let b = s.backend();
            let h = b.hold(&other, true).unwrap();
            b.put_index(&h, &other, super::Slot::Pending, b"{}")
                .unwrap();
        }
        assert_eq!(s.scrub().unwrap().damaged, []);
        // Same length, other bytes, under the name of the window at 4.
        let w = s.windows(&id).unwrap()[1];
        let client = crate::s3::Client::new(crate::s3::Config::from_env(&spec, &r.env()).unwrap());
        let bad = b"EFGH";
        client
            .put(
                &super::S3Store::window_key(&id, &w),
                bad,
                &crate::crypto::sha256(bad),
            )
            .unwrap();
        let mut done = Vec::new();
        let report = s
            .scrub_paced(None, &mut |e| {
                if let ScrubEvent::BlobDone(b) = e {
                    done.push(b.to_string());
                }
                true
            })
            .unwrap();
        assert_eq!(done, ["d.org/pi/m1/t1", "d.org/pi/m1.x/t1"]);
        assert_eq!((report.blobs, report.windows, report.bytes), (2, 2, 8));
        assert_eq!(report.damaged.len(), 1);
        assert_eq!((report.damaged[0].offset, report.damaged[0].len), (4, 4));
        assert_eq!(report.damaged[0].blob, "d.org/pi/m1/t1");
        let resumed = s
            .scrub_paced(Some("d.org/pi/m1/t1"), &mut |_| true)
            .unwrap();
        assert_eq!((resumed.blobs, resumed.damaged.len()), (1, 0));
    }
}

crate::contract_tests!(s3_garage, super::s3::garage());
crate::contract_tests!(s3_rclone, super::s3::rclone());
