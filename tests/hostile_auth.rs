//! Issue 13, the request-authentication side: each test replays an attack that
//! worked against the server before (items 5, 6, 8, 9) and shows it refused,
//! against a real `chute serve` on loopback.
use crate::util::*;
use chute::auth::Signer;
use chute::crypto::{Keys, sha256};
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// An initialised world, its keys, and the `--allow` lines of "node1" and "node2"
/// (two nodes of the same master key).
fn two_nodes(name: &str) -> (Env, Keys, String, String) {
    let env = Env::new(name);
    env.ok(["init"]);
    let line = |node: &str| {
        let out = env.cmd(["key", "auth"]).env("CHUTE_NODE", node).output();
        text(&out.unwrap().stdout).trim().to_string()
    };
    let (one, two) = (line("node1"), line("node2"));
    assert!(
        one.starts_with("node1=") && two.starts_with("node2="),
        "{one}"
    );
    let keys = Keys::load(&env.home().join(".config/chute/key")).unwrap();
    (env, keys, one, two)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The signature headers for a request with `extra` headers, signed at `at`.
fn sign(
    s: &Signer,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    at: u64,
) -> Vec<(&'static str, String)> {
    s.headers_at(method, path, extra, &sha256(body), at)
}

/// A raw request (`Connection: close`) with `extra` headers, signed by `s` at `at`.
fn signed_at(
    s: &Signer,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    at: u64,
) -> Vec<u8> {
    let hs = sign(s, method, path, extra, body, at);
    let mut all: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    request(method, path, &all, body)
}

fn signed(s: &Signer, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    signed_at(s, method, path, extra, body, now())
}

fn index_json(node: &str, ts: &str) -> String {
    format!(
        r#"{{"version":1,"domain":"test.example","node":"{node}","mount":"m1","timestamp":"{ts}","parent":null}}"#
    )
}

/// Replaces the first `from` in a raw request by `to`: what an on-path attacker does.
fn edit(req: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = String::from_utf8(req.to_vec()).unwrap();
    assert!(s.contains(from), "{from:?} not in the request");
    s.replacen(from, to, 1).into_bytes()
}

/// Sends up to `n` signed GETs of `path` as fast as the server takes them,
/// pipelined on `conns` keep-alive connections, stopping early once a 429 came
/// back if `until_429`; returns how many of each status came back.
fn flood(
    addr: &str,
    s: &Signer,
    path: &str,
    n: usize,
    conns: usize,
    until_429: bool,
) -> HashMap<u16, usize> {
    let throttled = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let (addr, s, path) = (addr.to_string(), s.clone(), path.to_string());
            let count = n / conns + usize::from(c < n % conns);
            let throttled = throttled.clone();
            std::thread::spawn(move || {
                let conn = TcpStream::connect(&addr).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(25)))
                    .unwrap();
                let mut w = conn.try_clone().unwrap();
                let stop = throttled.clone();
                // Written on its own thread, so that answers never back up into a
                // deadlock with requests not yet sent.
                let writer = std::thread::spawn(move || {
                    let mut batch = Vec::new();
                    for i in 0..count {
                        let last = i + 1 == count || (until_429 && stop.load(Ordering::Relaxed));
                        let mut r = format!("GET {path} HTTP/1.1\r\nContent-Length: 0\r\n");
                        if last {
                            r.push_str("Connection: close\r\n");
                        }
                        for (k, v) in sign(&s, "GET", &path, &[], b"", now()) {
                            r.push_str(&format!("{k}: {v}\r\n"));
                        }
                        r.push_str("\r\n");
                        batch.extend_from_slice(r.as_bytes());
                        if batch.len() > 64 << 10 || last {
                            if w.write_all(&batch).is_err() {
                                return;
                            }
                            batch.clear();
                        }
                        if last {
                            return;
                        }
                    }
                });
                let mut answers = Vec::new();
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match (&conn).read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            let from = answers.len().saturating_sub(12);
                            answers.extend_from_slice(&buf[..k]);
                            if answers[from..].windows(12).any(|w| w == b"HTTP/1.1 429") {
                                throttled.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
                let _ = writer.join();
                let mut counts = HashMap::new();
                for w in answers.windows(12) {
                    if w.starts_with(b"HTTP/1.1 ") {
                        if let Some(code) = std::str::from_utf8(&w[9..12])
                            .ok()
                            .and_then(|c| c.parse::<u16>().ok())
                        {
                            *counts.entry(code).or_insert(0) += 1;
                        }
                    }
                }
                counts
            })
        })
        .collect();
    let mut total = HashMap::new();
    for t in threads {
        for (k, v) in t.join().unwrap() {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}

/// Item 5: the replay table was global and capped at 200,000 nonces, so one
/// admitted node that sent that many requests within the window had every other
/// node refused (401) (~40 s of flooding). Now each node has its own rate and its
/// own nonce table (whose cap the unit tests fill): the flooder is answered 429
/// after its burst and stops; the other node is served.
#[test]
fn a_flooding_node_does_not_lock_out_another() {
    let (env, keys, one, two) = two_nodes("flood");
    let server = env.serve(
        &env.path("srv"),
        &["--allow", &one, "--allow", &two, "--threads", "2"],
    );
    let (a, b) = (
        Signer::new(&keys, "node1").for_peer(&server.addr),
        Signer::new(&keys, "node2").for_peer(&server.addr),
    );
    let started = Instant::now();
    // The cheapest request that takes a nonce: authenticated, then 405.
    let counts = flood(&server.addr, &a, "/chute/blob/", 205_000, 4, true);
    eprintln!("flood: {counts:?} in {:?}", started.elapsed());
    let list_b = "/chute/blob/test.example/node2/";
    let (status, head, body) = raw_http(&server.addr, &signed(&b, "GET", list_b, &[], b""));
    assert_eq!(
        status,
        200,
        "the other node was locked out: {head}\n{}",
        text(&body)
    );
    assert!(
        counts.get(&429).copied().unwrap_or(0) > 0,
        "the flooder was not throttled: {counts:?}"
    );
}

/// Item 5: a node past its rate is answered 429 with `Retry-After` and a JSON
/// error, and served again once that time has passed; other nodes are not slowed.
#[test]
fn past_its_rate_a_node_gets_429_with_retry_after() {
    let (env, keys, one, two) = two_nodes("rate");
    let server = env.serve_env(
        &env.path("srv"),
        &["--allow", &one, "--allow", &two],
        &[("CHUTE_RATE_LIMIT", "1"), ("CHUTE_RATE_BURST", "10")],
    );
    let (a, b) = (
        Signer::new(&keys, "node1").for_peer(&server.addr),
        Signer::new(&keys, "node2").for_peer(&server.addr),
    );
    let (list_a, list_b) = (
        "/chute/blob/test.example/node1/",
        "/chute/blob/test.example/node2/",
    );
    // At 1 a second with a burst of 10, a flood that lasts t seconds gets at most
    // 10 + t + 1 answers; the rest are 429. Counted from the time it took, so a
    // slow (emulated) server that refills the bucket meanwhile does not fail it.
    let started = Instant::now();
    let counts = flood(&server.addr, &a, list_a, 60, 1, false);
    let most_served = 11 + started.elapsed().as_secs_f64().ceil() as usize;
    let refused = counts.get(&429).copied().unwrap_or(0);
    assert!(
        refused > 0 && refused + most_served >= 60,
        "{counts:?} in {:?}",
        started.elapsed()
    );
    // The bucket may have refilled a token since: the first refusal is the one.
    let (status, head, body) = (0..40)
        .map(|_| raw_http(&server.addr, &signed(&a, "GET", list_a, &[], b"")))
        .find(|(status, _, _)| *status == 429)
        .expect("no 429 in 40 requests at once past the rate");
    assert_eq!(status, 429, "{head}");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {head}"));
    assert!((1..=2).contains(&retry), "{head}");
    #[derive(miniserde::Deserialize)]
    struct E {
        error: String,
    }
    let e: E = miniserde::json::from_str(&text(&body)).unwrap();
    assert!(e.error.contains("too many requests"), "{}", e.error);
    // Another node is served meanwhile.
    let (status, _, _) = raw_http(&server.addr, &signed(&b, "GET", list_b, &[], b""));
    assert_eq!(status, 200);
    // And this one again after Retry-After.
    let deadline = Instant::now() + Duration::from_secs(retry + 3);
    std::thread::sleep(Duration::from_secs(retry));
    loop {
        let (status, _, _) = raw_http(&server.addr, &signed(&a, "GET", list_a, &[], b""));
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after Retry-After"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 6: the nonces lived only in memory, so a captured signed DELETE was
/// accepted again by a server restarted within the 300 s window.
#[test]
fn a_captured_delete_is_refused_after_a_restart() {
    let (env, keys, one, _) = two_nodes("restart");
    let store = env.path("srv");
    let me = Signer::new(&keys, "node1");
    let idx = index_json("node1", "r1");
    let blob = "/chute/blob/test.example/node1/m1/r1/";
    let captured;
    {
        let server = env.serve(&store, &["--allow", &one]);
        let me = me.clone().for_peer(&server.addr);
        let post = signed(&me, "POST", "/chute/blob/", &[], idx.as_bytes());
        assert_eq!(raw_http(&server.addr, &post).0, 201);
        let signed_at = now();
        captured = signed(&me, "DELETE", blob, &[], b"");
        let (status, _, body) = raw_http(&server.addr, &captured);
        assert_eq!(status, 200, "{}", text(&body));
        // A restart takes at least until the next second (polled, < 1 s).
        while now() == signed_at {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let server = env.serve(&store, &["--allow", &one]);
    let me = me.for_peer(&server.addr);
    let post = signed(&me, "POST", "/chute/blob/", &[], idx.as_bytes());
    assert_eq!(raw_http(&server.addr, &post).0, 201);
    let (status, _, body) = raw_http(&server.addr, &captured);
    assert_eq!(status, 401, "replayed after a restart: {}", text(&body));
    assert!(
        text(&body).contains("before this server started"),
        "{}",
        text(&body)
    );
    // The blob is still there: deleting it afresh works.
    let fresh = signed(&me, "DELETE", blob, &[], b"");
    assert_eq!(raw_http(&server.addr, &fresh).0, 200);
}

/// Item 8: on `--open --append-only`, a DELETE carrying the admin proof from a
/// caller the server does not know was checked for the proof only, not for its
/// time and nonce, so a recorded one could be replayed forever.
#[test]
fn an_admin_delete_replayed_on_open_append_only_is_refused() {
    let (env, keys, _, _) = two_nodes("openadmin");
    let admin = env.path("admin.key");
    fs::write(&admin, noise(32, 5)).unwrap();
    let server = env.serve(
        &env.path("srv"),
        &["--append-only", "--admin-key-file", admin.to_str().unwrap()],
    );
    // Any node not admitted here (this open server admits none): served as anyone.
    let owner = Signer::new(&keys, "node1")
        .with_admin(sha256(&fs::read(&admin).unwrap()))
        .for_peer(&server.addr);
    let idx = index_json("node1", "o1");
    let blob = "/chute/blob/test.example/node1/m1/o1/";
    let post = request("POST", "/chute/blob/", &[], idx.as_bytes());
    assert_eq!(raw_http(&server.addr, &post).0, 201);
    let recorded = signed(&owner, "DELETE", blob, &[], b"");
    assert_eq!(raw_http(&server.addr, &recorded).0, 200);
    // The blob is back; the recorded delete must not remove it again.
    assert_eq!(raw_http(&server.addr, &post).0, 201);
    let (status, _, body) = raw_http(&server.addr, &recorded);
    assert_eq!(status, 401, "replayed admin delete: {}", text(&body));
    assert!(text(&body).contains("replayed"), "{}", text(&body));
    // One recorded long ago is stale.
    let old = signed_at(&owner, "DELETE", blob, &[], b"", now() - 1000);
    let (status, _, body) = raw_http(&server.addr, &old);
    assert_eq!(status, 401, "stale admin delete: {}", text(&body));
    // A fresh one still works.
    let fresh = signed(&owner, "DELETE", blob, &[], b"");
    assert_eq!(raw_http(&server.addr, &fresh).0, 200);
}

/// Item 9: `Content-Range` was not signed, so an on-path attacker moved a signed
/// window to another offset (201); `Range` and `If-None-Match` neither. Every
/// header the server acts on is signed now: an edited one is refused.
#[test]
fn a_signed_window_with_its_content_range_or_range_edited_is_refused() {
    let (env, keys, one, _) = two_nodes("covered");
    let server = env.serve(&env.path("srv"), &["--allow", &one]);
    let me = Signer::new(&keys, "node1").for_peer(&server.addr);
    let idx = index_json("node1", "c1");
    let post = signed(&me, "POST", "/chute/blob/", &[], idx.as_bytes());
    assert_eq!(raw_http(&server.addr, &post).0, 201);
    let part = "/chute/blob/test.example/node1/m1/c1/0";
    let window = signed(
        &me,
        "PUT",
        part,
        &[("Content-Range", "bytes 0-3/*")],
        b"abcd",
    );
    let moved = edit(&window, "bytes 0-3/*", "bytes 8-11/*");
    let (status, _, body) = raw_http(&server.addr, &moved);
    assert_eq!(status, 401, "a moved window was taken: {}", text(&body));
    assert!(text(&body).contains("bad signature"), "{}", text(&body));
    let (status, _, body) = raw_http(&server.addr, &window);
    assert_eq!(status, 201, "{}", text(&body));
    // Nothing landed at 8.
    let at8 = signed(&me, "GET", part, &[("Range", "bytes=8-11")], b"");
    assert_eq!(raw_http(&server.addr, &at8).0, 416);
    // A signed read whose Range is edited, or gains an If-None-Match, is refused.
    let read = signed(&me, "GET", part, &[("Range", "bytes=0-3")], b"");
    let (status, _, _) = raw_http(&server.addr, &edit(&read, "bytes=0-3", "bytes=2-3"));
    assert_eq!(status, 401, "an edited Range was served");
    let (status, _, _) = raw_http(
        &server.addr,
        &edit(
            &read,
            "Range: bytes=0-3",
            "Range: bytes=0-3\r\nIf-None-Match: \"x\"",
        ),
    );
    assert_eq!(status, 401, "an added If-None-Match was accepted");
    let (status, _, body) = raw_http(&server.addr, &read);
    assert_eq!((status, body), (206, b"abcd".to_vec()));
}
