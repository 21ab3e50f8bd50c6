//! Issue 13, items 4 and 7, as an attacker would try them against the real server:
//! an admitted node with a quota that tries to store past it (pending indexes,
//! sparse windows and their refunds, retried windows), and a window that races
//! the commit of its blob. Each test failed on the main before the fix.
use crate::util::*;
use chute::auth::Signer;
use chute::crypto::{Keys, sha256};
use chute::store::FILE_CHARGE;
use std::fs;
use std::time::{Duration, Instant};

const BLOB: &str = "/chute/blob/test.example/node1/m1";

/// An initialised world, its signer and the `--allow` line for its node ("node1").
fn node(name: &str) -> (Env, Signer, String) {
    let env = Env::new(name);
    env.ok(["init"]);
    let line = env.ok(["key", "auth"]).trim().to_string();
    let keys = Keys::load(&env.home().join(".config/chute/key")).unwrap();
    (env, Signer::new(&keys, "node1"), line)
}

/// Sends one request signed by `me`, with extra headers; returns status and body.
fn send(
    server: &Server,
    me: &Signer,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let hs = me
        .clone()
        .for_peer(&server.addr)
        .headers(method, path, extra, &sha256(body));
    let mut hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    hs.extend_from_slice(extra);
    let (status, _, answer) = raw_http(&server.addr, &request(method, path, &hs, body));
    (status, text(&answer))
}

fn index(ts: &str, size: Option<u64>, pad: usize) -> Vec<u8> {
    let size = size.map_or(String::new(), |s| format!(r#","size":{s}"#));
    format!(
        r#"{{"version":1,"domain":"test.example","node":"node1","mount":"m1","timestamp":"{ts}","parent":null{size},"pad":"{}"}}"#,
        "x".repeat(pad)
    )
    .into_bytes()
}

fn create(server: &Server, me: &Signer, index: &[u8]) -> u16 {
    send(server, me, "POST", "/chute/blob/", &[], index).0
}

/// PUTs `body` as window `n` of size `w` of blob `ts`.
fn put(server: &Server, me: &Signer, ts: &str, w: u64, n: u64, body: &[u8]) -> (u16, String) {
    send(
        server,
        me,
        "PUT",
        &format!("{BLOB}/{ts}/0/{w}/{n}"),
        &[],
        body,
    )
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    walk(dir)
        .iter()
        .filter_map(|p| fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

// 4a: pending indexes were not counted and not capped: 30 POSTs of 1 MiB indexes
// put 30 MiB on disk under a 10 MiB quota (on --append-only too).
#[test]
fn pending_indexes_are_capped_and_counted() {
    let (env, me, line) = node("hostile-index");
    let srv = env.path("srv");
    let server = env.serve(
        &srv,
        &["--allow", &line, "--quota", "node1=10M", "--append-only"],
    );
    for i in 0..30 {
        let status = create(
            &server,
            &me,
            &index(&format!("big{i}"), None, (1 << 20) - 300),
        );
        assert_eq!(status, 413, "a 1 MiB pending index");
    }
    assert!(disk_bytes(&srv) < 1 << 20, "{}", listing(&srv));
    // A real index is about 200 bytes; an 8 KiB one is still fine.
    assert_eq!(create(&server, &me, &index("t0", None, 7000)), 201);
    // Pending blobs are capped per node, and each costs its index and a file.
    let mut created = 1;
    let status = loop {
        let status = create(&server, &me, &index(&format!("t{created}"), None, 0));
        if status != 201 || created > 200 {
            break status;
        }
        created += 1;
    };
    let log = server.log.lock().unwrap().clone();
    assert_eq!((status, created), (507, 64), "{log}");
    drop(server);
    // Under a small quota, indexes alone fill it.
    let small = env.path("small");
    let server = env.serve(&small, &["--allow", &line, "--quota", "node1=40K"]);
    let accepted = (0..20)
        .take_while(|i| create(&server, &me, &index(&format!("s{i}"), None, 0)) == 201)
        .count() as u64;
    let per = FILE_CHARGE + index("s0", None, 0).len() as u64;
    let log = server.log.lock().unwrap().clone();
    assert_eq!(accepted, (40 << 10) / per, "{log}");
}

// 4b: deleting a blob refunded its end offset, not its bytes: a 1-byte window far
// out refunded ~1 TiB, after which the node stored without limit.
#[test]
fn deletes_refund_exactly_what_they_remove() {
    let (env, me, line) = node("hostile-refund");
    let server = env.serve(&env.path("srv"), &["--allow", &line, "--quota", "node1=4M"]);
    let mib = 1u64 << 20;
    // Near the quota: 24 KiB left after this window, its file and its index.
    let size = 4 * mib - (32 << 10);
    assert_eq!(create(&server, &me, &index("keep", None, 0)), 201);
    let (status, why) = put(&server, &me, "keep", 4 * mib, 0, &noise(size as usize, 1));
    assert_eq!(status, 201, "{why}");
    // A window that starts far past the blob's end is refused.
    assert_eq!(create(&server, &me, &index("far", None, 0)), 201);
    let (status, why) = put(&server, &me, "far", mib, mib, b"x");
    assert_eq!(status, 416, "a 1-byte window at 2^40: {why}");
    // A sparse one within reach is stored, and its delete refunds its byte only.
    assert_eq!(put(&server, &me, "far", mib, 1024, b"x").0, 201);
    let (status, why) = send(&server, &me, "DELETE", &format!("{BLOB}/far/"), &[], b"");
    assert_eq!(status, 200, "{why}");
    // Small refused bodies: a server may close without reading what it refused.
    let (status, why) = put(&server, &me, "keep", 4 * mib, 1, &noise(24 << 10, 2));
    assert_eq!(status, 507, "24 KiB more with less than that left: {why}");
    // Trimming a forgotten snapshot's window refunds that window.
    let commit = index("keep", Some(size), 0);
    let path = format!("{BLOB}/keep/index.json");
    assert_eq!(send(&server, &me, "PUT", &path, &[], &commit).0, 201);
    assert_eq!(send(&server, &me, "DELETE", &path, &[], b"").0, 200);
    let trim = format!("{BLOB}/keep/0/{size}/0");
    assert_eq!(send(&server, &me, "DELETE", &trim, &[], b"").0, 200);
    assert_eq!(create(&server, &me, &index("next", None, 0)), 201);
    assert_eq!(
        put(&server, &me, "next", 3 * mib, 0, &noise(3 << 20, 3)).0,
        201
    );
}

// 4c: a window sent again (a retry) was charged again: 10 retries of 1 MiB filled
// a 10 MiB quota.
#[test]
fn a_resent_window_is_charged_once() {
    let (env, me, line) = node("hostile-retry");
    let server = env.serve(
        &env.path("srv"),
        &["--allow", &line, "--quota", "node1=10M"],
    );
    let mib = 1u64 << 20;
    assert_eq!(create(&server, &me, &index("t1", None, 0)), 201);
    let body = noise(1 << 20, 4);
    for i in 0..10 {
        let (status, why) = put(&server, &me, "t1", mib, 0, &body);
        assert_eq!(status, 201, "retry {i}: {why}");
    }
    // Another content for the same window replaces it, at no extra charge either.
    assert_eq!(put(&server, &me, "t1", mib, 0, &noise(1 << 20, 5)).0, 201);
    // What is left is 10 MiB less one window, its file and the index.
    let (status, why) = put(&server, &me, "t1", 8 * mib, 1, &noise(8 << 20, 6));
    assert_eq!(status, 201, "8 MiB more: {why}");
}

// 7: a window PUT that began while its blob was pending was renamed into place
// after the commit, changing a committed snapshot on an append-only server.
#[test]
fn a_window_cannot_land_after_its_blob_is_committed() {
    let (env, me, line) = node("hostile-race");
    let hold = env.path("hold");
    fs::create_dir_all(&hold).unwrap();
    let server = env.serve_env(
        &env.path("srv"),
        &["--allow", &line, "--append-only", "--threads", "4"],
        &[("CHUTE_TEST_HOLD_WINDOW", hold.to_str().unwrap())],
    );
    assert_eq!(create(&server, &me, &index("t1", None, 0)), 201);
    let late = std::thread::scope(|s| {
        // The first window received is held between its last byte and its rename.
        let late = s.spawn(|| put(&server, &me, "t1", 4096, 0, &[b'B'; 4096]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !hold.join("held").exists() {
            assert!(Instant::now() < deadline, "the window was never held");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(put(&server, &me, "t1", 4096, 0, &[b'A'; 4096]).0, 201);
        let commit = index("t1", Some(4096), 0);
        let path = format!("{BLOB}/t1/index.json");
        assert_eq!(send(&server, &me, "PUT", &path, &[], &commit).0, 201);
        fs::write(hold.join("go"), b"").unwrap();
        late.join().unwrap()
    });
    assert_eq!(late.0, 409, "the held window after the commit: {}", late.1);
    let (status, hash) = send(&server, &me, "GET", &format!("{BLOB}/t1/0"), &[], b"");
    assert_eq!(status, 200);
    assert!(
        hash.contains(&chute::hex::encode(&sha256(&[b'A'; 4096]))),
        "committed bytes changed: {hash}"
    );
}

// Quotas must follow the disk: what a restarted server counts from the store
// equals what the running one counted through creates, windows, retries,
// replaced windows, commits, forgets, trims and deletes.
#[test]
fn usage_after_a_restart_equals_the_running_count() {
    let (env, me, line) = node("hostile-count");
    let srv = env.path("srv");
    let quota: u64 = 3 << 20;
    let q = format!("node1={quota}");
    let server = env.serve(&srv, &["--allow", &line, "--quota", &q]);
    let charge = |len: usize| len as u64 + FILE_CHARGE;
    let mut used = 0;
    for ts in ["a", "b", "c"] {
        let ix = index(ts, None, 10);
        assert_eq!(create(&server, &me, &ix), 201);
        used += charge(ix.len());
        assert_eq!(put(&server, &me, ts, 1000, 0, &noise(1000, 7)).0, 201);
        assert_eq!(put(&server, &me, ts, 1000, 1, &noise(500, 8)).0, 201);
        used += charge(1000) + charge(500);
    }
    // Re-created with a shorter index, retried, and replaced with other bytes.
    let ix = index("a", None, 0);
    assert_eq!(create(&server, &me, &ix), 201);
    used = used - charge(index("a", None, 10).len()) + charge(ix.len());
    assert_eq!(put(&server, &me, "a", 1000, 0, &noise(1000, 7)).0, 201);
    assert_eq!(put(&server, &me, "a", 1000, 0, &noise(1000, 9)).0, 201);
    // b committed (twice), forgotten and trimmed; c deleted.
    let commit = index("b", Some(1500), 0);
    let path = format!("{BLOB}/b/index.json");
    for _ in 0..2 {
        assert_eq!(send(&server, &me, "PUT", &path, &[], &commit).0, 201);
    }
    used += charge(commit.len());
    assert_eq!(send(&server, &me, "DELETE", &path, &[], b"").0, 200);
    let trim = format!("{BLOB}/b/0/1000/0");
    assert_eq!(send(&server, &me, "DELETE", &trim, &[], b"").0, 200);
    used -= charge(1000);
    let c = format!("{BLOB}/c/");
    assert_eq!(send(&server, &me, "DELETE", &c, &[], b"").0, 200);
    used -= charge(index("c", None, 10).len()) + charge(1000) + charge(500);
    // Filling exactly what is left is allowed; one byte more is not.
    let fill = (quota - used - FILE_CHARGE) as usize;
    assert_eq!(put(&server, &me, "a", 4 << 20, 1, &noise(fill, 10)).0, 201);
    let (status, why) = put(&server, &me, "a", 4 << 20, 2, b"x");
    assert_eq!(status, 507, "{why}");
    assert!(
        why.contains(&format!("({quota} of {quota} bytes used)")),
        "{why}"
    );
    drop(server);
    let server = env.serve(&srv, &["--allow", &line, "--quota", &q]);
    server.await_log(
        0,
        &format!("node node1 uses {quota} of its {quota} bytes"),
        10,
    );
}

// The same under concurrent requests: retries of one window racing each other,
// windows of one blob landing at once, blobs created and deleted meanwhile.
#[test]
fn concurrent_writes_are_counted_exactly() {
    let (env, me, line) = node("hostile-concurrent");
    let srv = env.path("srv");
    let quota: u64 = 8 << 20;
    let q = format!("node1={quota}");
    let server = env.serve(&srv, &["--allow", &line, "--quota", &q, "--threads", "4"]);
    let w = 256u64 << 10;
    let ix = index("t", None, 0);
    assert_eq!(create(&server, &me, &ix), 201);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (server, me) = (&server, &me);
            s.spawn(move || {
                for i in 0..4 {
                    let (status, why) = put(server, me, "t", w, 0, &noise(w as usize, i % 2));
                    assert_eq!(status, 201, "{why}");
                }
                let (status, why) = put(server, me, "t", w, 1 + t, &noise(w as usize, 10 + t));
                assert_eq!(status, 201, "{why}");
                let other = format!("x{t}");
                assert_eq!(create(server, me, &index(&other, None, 0)), 201);
                assert_eq!(put(server, me, &other, w, 0, &noise(1000, t)).0, 201);
                let path = format!("{BLOB}/{other}/");
                assert_eq!(send(server, me, "DELETE", &path, &[], b"").0, 200);
            });
        }
    });
    let used = (ix.len() as u64 + FILE_CHARGE) + 9 * (w + FILE_CHARGE);
    let fill = (quota - used - FILE_CHARGE) as usize;
    assert_eq!(put(&server, &me, "t", 8 << 20, 1, &noise(fill, 3)).0, 201);
    let (status, why) = put(&server, &me, "t", 8 << 20, 2, b"x");
    assert_eq!(status, 507, "{why}");
    assert!(
        why.contains(&format!("({quota} of {quota} bytes used)")),
        "{why}"
    );
    drop(server);
    let server = env.serve(&srv, &["--allow", &line, "--quota", &q]);
    server.await_log(
        0,
        &format!("node node1 uses {quota} of its {quota} bytes"),
        10,
    );
}

/// A chunked body's size lines were read by the decoder without a cap (an endless
/// line of hex digits grew the server's memory). A body without Content-Length is
/// refused (411) before any of it is read.
#[test]
fn a_chunked_index_is_refused_unread() {
    let (env, me, line) = node("hostile-chunked");
    let server = env.serve(&env.path("srv"), &["--allow", &line]);
    let body = index("chunked", None, 0);
    let me = me.for_peer(&server.addr);
    let hs = me.headers("POST", "/chute/blob/", &[], &sha256(&body));
    let mut req = String::from("POST /chute/blob/ HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in &hs {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Transfer-Encoding: chunked\r\n\r\n");
    req.push_str(&format!("{:x}\r\n", body.len()));
    let mut raw = req.into_bytes();
    raw.extend_from_slice(&body);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    let (status, _, answer) = raw_http(&server.addr, &raw);
    assert_eq!(status, 411, "{}", text(&answer));
    assert!(!env.path("srv/test.example/node1/m1").exists());
}

// Issue 16: a window's temporary was not counted, so a server killed during many
// PUTs came back with their bytes free. One a live writer holds (here another
// server's, holding its window) is counted when a server starts, and never swept:
// the held window still lands.
#[test]
fn a_live_writers_temporary_is_counted_and_kept_at_start() {
    let (env, me, line) = node("hostile-temps");
    let srv = env.path("srv");
    let hold = env.path("hold");
    fs::create_dir_all(&hold).unwrap();
    let a = env.serve_env(
        &srv,
        &["--allow", &line],
        &[("CHUTE_TEST_HOLD_WINDOW", hold.to_str().unwrap())],
    );
    let ix = index("t1", None, 0);
    assert_eq!(create(&a, &me, &ix), 201);
    std::thread::scope(|s| {
        let late = s.spawn(|| put(&a, &me, "t1", 100_000, 0, &noise(100_000, 3)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !hold.join("held").exists() {
            assert!(Instant::now() < deadline, "the window was never held");
            std::thread::sleep(Duration::from_millis(10));
        }
        let b = env.serve(&srv, &["--allow", &line, "--quota", "node1=10M"]);
        let used = ix.len() as u64 + FILE_CHARGE + 100_000 + FILE_CHARGE;
        b.await_log(0, &format!("node node1 uses {used} of its"), 10);
        drop(b);
        fs::write(hold.join("go"), b"").unwrap();
        let (status, why) = late.join().unwrap();
        assert_eq!(status, 201, "the held window: {why}");
    });
}
