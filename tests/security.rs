//! The security issue's rules, each against the real server: signed requests,
//! node namespaces, secure defaults, append-only, quotas, hostile input.
use crate::util::*;
use chute::auth::Signer;
use chute::crypto::{Keys, sha256};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// An initialised world and the `--allow` line for its node ("node1").
fn node(name: &str) -> (Env, String) {
    let env = Env::new(name);
    env.ok(["init"]);
    let line = env.ok(["key", "auth"]).trim().to_string();
    assert!(line.starts_with("node1=") && line.len() == 6 + 64, "{line}");
    (env, line)
}

fn keys(env: &Env) -> Keys {
    Keys::load(&env.home().join(".config/chute/key")).unwrap()
}

fn small_tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/a.txt"), b"signed and sealed").unwrap();
    fs::write(src.join("b.bin"), noise(3 << 20, 11)).unwrap();
    src
}

/// A raw request signed by `signer` (body hash included).
fn signed(signer: &Signer, method: &str, path: &str, body: &[u8], at: Option<u64>) -> Vec<u8> {
    let digest = sha256(body);
    let hs = match at {
        Some(t) => signer.headers_at(method, path, &[], &digest, t),
        None => signer.headers(method, path, &[], &digest),
    };
    let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    request(method, path, &hs, body)
}

/// A raw request with `extra` headers, signed by `signer` (they are covered).
fn signed_with(
    signer: &Signer,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let hs = signer.headers(method, path, extra, &sha256(body));
    let mut all: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    request(method, path, &all, body)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn index_json(node: &str, ts: &str) -> String {
    format!(
        r#"{{"version":1,"domain":"test.example","node":"{node}","mount":"m1","timestamp":"{ts}","parent":null}}"#
    )
}

#[test]
fn secure_by_default_every_request_is_refused() {
    let (env, _) = node("closed");
    let src = small_tree(&env);
    let server = env.serve(&env.path("srv"), &["--closed"]);
    let err = env.fails(
        1,
        ["sink", "--remote", &server.url(), src.to_str().unwrap()],
    );
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("hint: run `chute key auth`"), "{err}");
    server.await_log(0, "401", 10);
    let (status, _, _) = raw_http(
        &server.addr,
        &request("GET", "/chute/blob/test.example/node1/", &[], b""),
    );
    assert_eq!(status, 401);
    assert_eq!(
        walk(&env.path("srv")).len(),
        2,
        "only the layout marker and the cache tag: {}",
        listing(&env.path("srv"))
    );
}

#[test]
fn an_admitted_node_sinks_lists_and_restores() {
    let (env, line) = node("admitted");
    let src = small_tree(&env);
    let server = env.serve(&env.path("srv"), &["--allow", &line]);
    let url = server.url();
    env.ok(["sink", "--remote", &url, src.to_str().unwrap()]);
    assert!(env.ok(["list", "--remote", &url]).contains("1 snapshot"));
    let out = env.path("out");
    env.ok([
        "restore",
        "latest",
        "--remote",
        &url,
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
    // The same node, with only its key file, on a "new machine" (fresh HOME): works.
    let fresh = Env::new("admitted-fresh");
    fs::create_dir_all(fresh.home().join(".config/chute")).unwrap();
    fs::copy(
        env.home().join(".config/chute/key"),
        fresh.home().join(".config/chute/key"),
    )
    .unwrap();
    assert_eq!(fresh.ok(["key", "auth"]).trim(), line);
    let out2 = fresh.path("out");
    fresh.ok([
        "restore",
        "latest",
        "--remote",
        &url,
        "--to",
        out2.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &out2.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn missing_wrong_stale_and_replayed_signatures_get_401() {
    let (env, line) = node("sigs");
    let server = env.serve(&env.path("srv"), &["--allow", &line]);
    let me = Signer::new(&keys(&env), "node1").for_peer(&server.addr);
    let list = "/chute/blob/test.example/node1/";
    let (status, _, body) = raw_http(&server.addr, &signed(&me, "GET", list, b"", None));
    assert_eq!(status, 200, "{}", text(&body));
    // Missing.
    assert_eq!(
        raw_http(&server.addr, &request("GET", list, &[], b"")).0,
        401
    );
    // Wrong key for the node.
    let impostor =
        Signer::new(&Keys::from_key_bytes(b"not the key"), "node1").for_peer(&server.addr);
    let (status, _, body) = raw_http(&server.addr, &signed(&impostor, "GET", list, b"", None));
    assert_eq!(status, 401, "{}", text(&body));
    assert!(text(&body).contains("bad signature"), "{}", text(&body));
    // Stale, either way.
    for t in [now() - 1000, now() + 1000] {
        let (status, _, body) = raw_http(&server.addr, &signed(&me, "GET", list, b"", Some(t)));
        assert_eq!(status, 401);
        assert!(text(&body).contains("clock"), "{}", text(&body));
    }
    // Replayed.
    let once = signed(&me, "GET", list, b"", None);
    assert_eq!(raw_http(&server.addr, &once).0, 200);
    let (status, _, body) = raw_http(&server.addr, &once);
    assert_eq!(status, 401);
    assert!(text(&body).contains("replayed"), "{}", text(&body));
    // A signature for one path does not open another, nor another method.
    let mut moved = signed(&me, "GET", list, b"", None);
    let s = String::from_utf8(moved.clone()).unwrap().replacen(
        list,
        "/chute/blob/test.example/node1/x/y/index.json",
        1,
    );
    moved = s.into_bytes();
    assert_eq!(raw_http(&server.addr, &moved).0, 401);
    // A signed body that does not match its hash.
    let idx = index_json("node1", "t1");
    let mut req = signed(&me, "POST", "/chute/blob/", idx.as_bytes(), None);
    let n = req.len();
    req[n - 3] = b'X';
    assert_ne!(raw_http(&server.addr, &req).0, 201);
    // An unknown node.
    let stranger = Signer::new(&keys(&env), "node9").for_peer(&server.addr);
    assert_eq!(
        raw_http(
            &server.addr,
            &signed(
                &stranger,
                "GET",
                "/chute/blob/test.example/node9/",
                b"",
                None
            )
        )
        .0,
        401
    );
}

#[test]
fn another_nodes_space_gets_403() {
    let (env, line) = node("space");
    let other = Env::new("space-other");
    other.ok(["init"]);
    let other_line = other
        .cmd(["key", "auth"])
        .env("CHUTE_NODE", "node2")
        .output()
        .unwrap();
    let other_line = text(&other_line.stdout).trim().to_string();
    let server = env.serve(
        &env.path("srv"),
        &["--allow", &line, "--allow", &other_line],
    );
    let me = Signer::new(&keys(&env), "node1").for_peer(&server.addr);
    for (method, path, body) in [
        ("GET", "/chute/blob/test.example/node2/", String::new()),
        (
            "GET",
            "/chute/blob/test.example/node2/m/t/index.json",
            String::new(),
        ),
        (
            "PUT",
            "/chute/blob/test.example/node2/m/t/0/4/0",
            "abcd".into(),
        ),
        (
            "DELETE",
            "/chute/blob/test.example/node2/m/t/",
            String::new(),
        ),
        ("POST", "/chute/blob/", index_json("node2", "t1")),
    ] {
        let (status, _, resp) = raw_http(
            &server.addr,
            &signed(&me, method, path, body.as_bytes(), None),
        );
        assert_eq!(status, 403, "{method} {path}: {}", text(&resp));
    }
    // Its own space works.
    let (status, _, resp) = raw_http(
        &server.addr,
        &signed(
            &me,
            "POST",
            "/chute/blob/",
            index_json("node1", "t1").as_bytes(),
            None,
        ),
    );
    assert_eq!(status, 201, "{}", text(&resp));
}

#[test]
fn append_only_refuses_delete_and_overwrite_but_takes_new_snapshots() {
    let (env, line) = node("append");
    let src = small_tree(&env);
    let server = env.serve(&env.path("srv"), &["--allow", &line, "--append-only"]);
    let url = server.url();
    env.ok(["sink", "--remote", &url, src.to_str().unwrap()]);
    fs::write(src.join("new"), b"more").unwrap();
    env.ok(["sink", "--remote", &url, src.to_str().unwrap()]);
    let me = Signer::new(&keys(&env), "node1").for_peer(&server.addr);
    let (_, _, body) = raw_http(
        &server.addr,
        &signed(&me, "GET", "/chute/blob/test.example/node1/", b"", None),
    );
    let uris: Vec<String> = miniserde::json::from_str(&text(&body)).unwrap();
    assert_eq!(uris.len(), 2);
    let blob = uris[0].trim_end_matches("index.json");
    let (status, _, resp) = raw_http(&server.addr, &signed(&me, "DELETE", blob, b"", None));
    assert_eq!(status, 403, "{}", text(&resp));
    assert!(text(&resp).contains("append-only"));
    let w = format!("{blob}0/4194304/0");
    let (status, _, _) = raw_http(&server.addr, &signed(&me, "PUT", &w, b"evil", None));
    assert_eq!(status, 409, "a committed window cannot be overwritten");
    let idx = format!("{blob}index.json");
    let (status, _, _) = raw_http(&server.addr, &signed(&me, "PUT", &idx, b"{}", None));
    assert!(status == 409 || status == 400, "{status}");
    assert!(env.ok(["list", "--remote", &url]).contains("2 snapshots"));
}

#[test]
fn over_quota_gets_507_and_no_snapshot() {
    let (env, line) = node("quota");
    let src = small_tree(&env);
    let server = env.serve(&env.path("srv"), &["--allow", &line, "--quota", "node1=1M"]);
    let url = server.url();
    let err = env.fails(1, ["sink", "--remote", &url, src.to_str().unwrap()]);
    assert!(err.contains("507") && err.contains("quota"), "{err}");
    let stored: u64 = walk(&env.path("srv"))
        .iter()
        .filter(|p| p.is_file())
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        stored <= (1 << 20) + 4096,
        "{stored} bytes stored past a 1 MiB quota"
    );
    assert!(env.ok(["list", "--remote", &url]).contains("0 snapshots"));
    // Quotas also come from the allow file.
    let allow = env.path("allow");
    fs::write(&allow, format!("# nodes\n{line} quota=100M\n")).unwrap();
    let server2 = env.serve(
        &env.path("srv2"),
        &["--allow-file", allow.to_str().unwrap()],
    );
    env.ok(["sink", "--remote", &server2.url(), src.to_str().unwrap()]);
}

/// Opens a connection that sends half a request line and then nothing.
fn slow_loris(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"PUT /chute/blob/test.example/node1/m/t/0 HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    s
}

#[test]
fn hostile_input_gets_4xx_while_an_honest_sink_completes() {
    let (env, line) = node("hostile");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        fs::write(src.join(format!("f{i}")), noise(12 << 20, 100 + i)).unwrap();
    }
    let store = env.path("srv");
    let server = env.serve(
        &store,
        &["--allow", &line, "--timeout", "2", "--threads", "4"],
    );
    let addr = server.addr.clone();
    let honest = env
        .cmd(["sink", "--remote", &server.url(), src.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let me = Signer::new(&keys(&env), "node1").for_peer(&server.addr);
    // A blob of our own to aim at.
    let (status, _, _) = raw_http(
        &addr,
        &signed(
            &me,
            "POST",
            "/chute/blob/",
            index_json("node1", "h1").as_bytes(),
            None,
        ),
    );
    assert_eq!(status, 201);
    let blob = "/chute/blob/test.example/node1/m1/h1";

    // Slow-loris: connections that never finish their headers are dropped.
    let loris: Vec<TcpStream> = (0..50).map(|_| slow_loris(&addr)).collect();
    // Many connections at once, opened and dropped.
    for _ in 0..1000 {
        drop(TcpStream::connect(&addr).unwrap());
    }
    // Traversal in several encodings.
    for p in [
        "/chute/blob/../../etc/passwd",
        "/chute/blob/%2e%2e/x/y/z/0",
        "/chute/blob/a/..%2f..%2fetc/x/y/0",
        "/chute/blob/a/b/c/d/../../0",
    ] {
        let (status, _, _) = raw_http(&addr, &request("GET", p, &[], b""));
        assert!((400..500).contains(&status), "{p}: {status}");
    }
    // Non-UTF-8 path bytes.
    let mut req =
        b"GET /chute/blob/\xff\xfe/x/y/z/0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_vec();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(&req);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || text(&answer).starts_with("HTTP/1.1 4"),
        "{}",
        text(&answer)
    );
    req.clear();
    // A huge Content-Length: refused before any body is read.
    let w = format!("{blob}/0/4096/0");
    let mut huge = signed(&me, "PUT", &w, b"", None);
    let head = String::from_utf8(huge.clone())
        .unwrap()
        .replace("Content-Length: 0", "Content-Length: 999999999999");
    huge = head.into_bytes();
    let (status, _, _) = raw_http(&addr, &huge);
    assert!(status == 400 || status == 413, "{status}");
    // A body that stops halfway (the client closes early): nothing kept.
    let body = noise(8192, 3);
    let full = signed(&me, "PUT", &format!("{blob}/0/8192/0"), &body, None);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&full[..full.len() - 4000]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    // Content-Range past the end and overlapping.
    let ok = signed(&me, "PUT", &format!("{blob}/0/100/0"), &[7u8; 100], None);
    assert_eq!(raw_http(&addr, &ok).0, 201);
    let path0 = format!("{blob}/0");
    let overlap = signed_with(
        &me,
        "PUT",
        &path0,
        &[("Content-Range", "bytes 95-104/*")],
        &[1u8; 10],
    );
    assert_eq!(raw_http(&addr, &overlap).0, 416);
    let lying = signed_with(
        &me,
        "PUT",
        &path0,
        &[("Content-Range", "bytes 200-300/250")],
        &[1u8; 10],
    );
    assert_eq!(raw_http(&addr, &lying).0, 400);
    // Malformed JSON and malformed headers.
    let (status, _, _) = raw_http(
        &addr,
        &signed(&me, "POST", "/chute/blob/", b"{not json", None),
    );
    assert_eq!(status, 400);
    let (status, _, _) = raw_http(
        &addr,
        &request(
            "GET",
            "/chute/blob/",
            &[("X-Chute-Node", "node1"), ("X-Chute-Time", "soon")],
            b"",
        ),
    );
    assert_eq!(status, 401);
    let (status, _, _) = raw_http(
        &addr,
        &signed(&me, "GET", &format!("{blob}/0"), b"", None)
            .into_iter()
            .collect::<Vec<u8>>(),
    );
    assert!(status == 409 || status == 200 || status == 416, "{status}");

    // The slow connections were dropped by the server's timeout (2 s).
    let started = Instant::now();
    for mut l in loris {
        l.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let _ = l.read(&mut buf);
    }
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "slow clients were not dropped"
    );

    let out = honest.wait_with_output().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log.lock().unwrap().clone();
    let tail: String = log.lines().rev().take(15).collect::<Vec<_>>().join("\n");
    assert!(
        out.status.success(),
        "honest sink failed: {}\nserver log tail:\n{tail}",
        text(&out.stderr)
    );
    eprintln!("server log tail:\n{tail}");
    let restored = env.path("out");
    env.ok([
        "restore",
        "latest",
        "--remote",
        &server.url(),
        "--to",
        restored.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &restored.join(src.strip_prefix("/").unwrap()));
    // Nothing outside the store was touched.
    for p in walk(&env.dir) {
        assert!(
            p.starts_with(&store)
                || p.starts_with(env.home())
                || p.starts_with(&src)
                || p.starts_with(&restored),
            "unexpected file {}",
            p.display()
        );
    }
    let _: &Path = &store;
}

#[test]
fn on_an_append_only_peer_forget_and_prune_need_the_admin_key() {
    let (env, line) = node("admin");
    let src = small_tree(&env);
    let admin = env.path("admin.key");
    fs::write(&admin, noise(32, 77)).unwrap();
    let server = env.serve(
        &env.path("srv"),
        &[
            "--allow",
            &line,
            "--append-only",
            "--admin-key-file",
            admin.to_str().unwrap(),
        ],
    );
    let url = server.url();
    env.ok(["sink", "--remote", &url, src.to_str().unwrap()]);
    // A second snapshot sharing nothing with the first, so prune has work to do.
    fs::remove_dir_all(&src).unwrap();
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("new.bin"), noise(1 << 20, 79)).unwrap();
    env.ok(["sink", "--remote", &url, src.to_str().unwrap()]);
    let store_before = listing(&env.path("srv"));
    // The nightly job's credentials are not enough: nothing changes.
    let err = env.fails(1, ["forget", "--keep-last", "1", "--remote", &url]);
    assert!(
        err.contains("append-only") && err.contains("admin"),
        "{err}"
    );
    assert!(
        !err.contains("chute key auth"),
        "a 403 is not a missing key: {err}"
    );
    assert_eq!(listing(&env.path("srv")), store_before);
    // A wrong admin key is refused too.
    let wrong = env.path("wrong.key");
    fs::write(&wrong, noise(32, 78)).unwrap();
    let w = wrong.to_str().unwrap();
    env.fails(
        1,
        [
            "forget",
            "--keep-last",
            "1",
            "--remote",
            &url,
            "--admin-key-file",
            w,
        ],
    );
    assert!(env.ok(["list", "--remote", &url]).contains("2 snapshots"));
    // The owner, holding the admin key, can.
    let a = admin.to_str().unwrap();
    env.ok([
        "forget",
        "--keep-last",
        "1",
        "--remote",
        &url,
        "--admin-key-file",
        a,
    ]);
    // Prune has something to delete now; without the admin key it may not.
    let before_prune = listing(&env.path("srv"));
    let err = env.fails(1, ["prune", "--grace", "0", "--remote", &url]);
    assert!(err.contains("append-only"), "{err}");
    assert_eq!(listing(&env.path("srv")), before_prune);
    env.ok([
        "prune",
        "--grace",
        "0",
        "--remote",
        &url,
        "--admin-key-file",
        a,
    ]);
    assert_ne!(
        listing(&env.path("srv")),
        before_prune,
        "prune deleted nothing"
    );
    assert!(env.ok(["list", "--remote", &url]).contains("1 snapshot"));
    let out = env.path("out");
    env.ok([
        "restore",
        "latest",
        "--remote",
        &url,
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
}
