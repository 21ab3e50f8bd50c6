//! Issue 14: answers the node can trust. An on-path attacker (a response-editing
//! proxy, tests/util/proxy.rs) between a node and its peer could answer a sink's
//! uploads itself, hide snapshots from a list or turn an answer into a 404; and a
//! malicious peer could replay a node's signed request to another peer that
//! admits the same node. Every answer now carries a MAC under the node's auth key
//! over its request's nonce, and every signature names the peer it was made for.
use crate::util::proxy::{Proxy, Req, Resp};
use crate::util::*;
use chute::auth::{self, Signer};
use chute::crypto::{Keys, sha256};
use std::fs;

/// An initialised world and the `--allow` line for its node ("node1").
fn node(name: &str) -> (Env, String) {
    let env = Env::new(name);
    env.ok(["init"]);
    let line = env.ok(["key", "auth"]).trim().to_string();
    (env, line)
}

fn keys(env: &Env) -> Keys {
    Keys::load(&env.home().join(".config/chute/key")).unwrap()
}

fn tree(env: &Env, seed: u64) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), format!("answers {seed}")).unwrap();
    fs::write(src.join("b.bin"), noise(1 << 20, seed)).unwrap();
    src
}

/// A server admitting `line` that also answers to the proxy's address (the name
/// the node uses), and the proxy in front of it.
fn proxied(
    env: &Env,
    line: &str,
    fake: impl Fn(&Req) -> Option<Resp> + Send + Sync + 'static,
    edit: impl Fn(&Req, &mut Resp) -> bool + Send + Sync + 'static,
) -> (Server, Proxy) {
    let bound = Proxy::bind();
    let server = env.serve(&env.path("srv"), &["--allow", line, "--name", &bound.addr]);
    let proxy = bound.start(&server.addr, fake, edit);
    (server, proxy)
}

fn committed(store: &std::path::Path) -> Vec<std::path::PathBuf> {
    walk(store)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "index.json"))
        .collect()
}

/// Sends a captured request byte for byte (it may ask for keep-alive: half-close
/// so the server closes after its answer) and reads the answer.
fn replay(addr: &str, raw: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s.write_all(raw).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let status = text(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text(&buf))
}

/// The one line of a failed command that names the peer and the forgery.
fn assert_unauthenticated(err: &str, peer: &str) {
    let line = err
        .lines()
        .find(|l| l.contains("is not authenticated"))
        .unwrap_or_else(|| panic!("no unauthenticated-answer error:\n{err}"));
    assert!(line.contains(&format!("answer from {peer}")), "{line}");
    assert!(line.contains("node node1"), "{line}");
}

/// Faked 201 acks: the attacker answers every upload and commit itself with
/// success; the old sink reported a snapshot while the peer stored nothing.
#[test]
fn faked_acks_fail_the_sink_and_commit_nothing() {
    let (env, line) = node("answers-acks");
    let src = tree(&env, 1);
    let (_server, proxy) = proxied(
        &env,
        &line,
        |r| {
            #[derive(miniserde::Deserialize)]
            struct Place {
                domain: String,
                node: String,
                mount: String,
                timestamp: String,
            }
            match r.method.as_str() {
                // The URI the real peer would answer: the index's own place.
                "POST" => {
                    let p: Place = miniserde::json::from_str(&text(&r.body)).ok()?;
                    let uri = format!(
                        "\"/chute/blob/{}/{}/{}/{}/\"",
                        p.domain, p.node, p.mount, p.timestamp
                    );
                    Some(Resp::json(201, &uri))
                }
                "PUT" => Some(Resp::json(201, "true")),
                _ => None,
            }
        },
        |_, _| true,
    );
    let out = env.run(["sink", "--remote", &proxy.url(), src.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "the sink succeeded:\n{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        !text(&out.stdout).contains("snapshot"),
        "{}",
        text(&out.stdout)
    );
    assert_unauthenticated(&err, &proxy.url());
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        committed(&env.path("srv")).is_empty(),
        "{}",
        listing(&env.path("srv"))
    );
}

/// An edited list (a snapshot removed) and an edited 404 (an index hidden): the
/// old client believed both, so a snapshot silently vanished from `list`.
#[test]
fn edited_lists_and_404s_are_refused() {
    let (env, line) = node("answers-edit");
    let src = tree(&env, 2);
    let hide_list = |r: &Req, a: &mut Resp| {
        if r.method == "GET" && r.path.ends_with("/node1/") && a.status == 200 {
            // Drop the first entry of the JSON array.
            let body = text(&a.body);
            if let Some(cut) = body.find(",") {
                a.body = format!("[{}", &body[cut + 1..]).into_bytes();
            }
        }
        true
    };
    let (server, proxy) = proxied(&env, &line, |_| None, hide_list);
    // Two snapshots, straight to the server.
    env.ok(["sink", "--remote", &server.url(), src.to_str().unwrap()]);
    fs::write(src.join("c.txt"), b"second").unwrap();
    env.ok(["sink", "--remote", &server.url(), src.to_str().unwrap()]);
    assert!(
        env.ok(["list", "--remote", &server.url()])
            .contains("2 snapshots")
    );
    let err = env.fails(1, ["list", "--remote", &proxy.url()]);
    assert_unauthenticated(&err, &proxy.url());
    drop(proxy);

    // The committed index of the newest snapshot turned into a 404.
    let bound = Proxy::bind();
    let hidden = env.serve(&env.path("srv"), &["--allow", &line, "--name", &bound.addr]);
    let proxy = bound.start(
        &hidden.addr,
        |_| None,
        |r, a| {
            if r.method == "GET" && r.path.ends_with("/index.json") {
                *a = Resp::json(404, r#"{"error":"no committed blob"}"#);
            }
            true
        },
    );
    let err = env.fails(1, ["list", "--remote", &proxy.url()]);
    assert_unauthenticated(&err, &proxy.url());
    let to = env.path("out");
    let err = env.fails(
        1,
        [
            "restore",
            "latest",
            "--remote",
            &proxy.url(),
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert_unauthenticated(&err, &proxy.url());
}

/// The issue's headline attack: sink S1, sink S2 unchanged (it reuses S1's blob),
/// forget S1, then prune through a proxy that removes S2 from the node's list.
/// The old prune deleted S1's blob with valid signed DELETEs and S2 no longer
/// restored; now prune refuses the edited list before any delete.
#[test]
fn prune_on_an_edited_list_deletes_nothing() {
    let (env, line) = node("answers-prune");
    let src = tree(&env, 4);
    let (server, proxy) = proxied(
        &env,
        &line,
        |_| None,
        |r, a| {
            if r.method == "GET" && r.path.ends_with("/node1/") && a.status == 200 {
                a.body = b"[]".to_vec();
            }
            true
        },
    );
    let direct = server.url();
    env.ok(["sink", "--remote", &direct, src.to_str().unwrap()]);
    env.ok(["sink", "--remote", &direct, src.to_str().unwrap()]);
    env.ok(["forget", "--keep-last", "1", "--remote", &direct]);
    let before = listing(&env.path("srv"));
    let err = env.fails(1, ["prune", "--grace", "0", "--remote", &proxy.url()]);
    assert_unauthenticated(&err, &proxy.url());
    assert_eq!(listing(&env.path("srv")), before, "prune changed the store");
    let to = env.path("out");
    env.ok([
        "restore",
        "latest",
        "--remote",
        &direct,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read(to.join(src.strip_prefix("/").unwrap()).join("b.bin")).unwrap(),
        noise(1 << 20, 4)
    );
    env.ok(["verify", "--all", "--remote", &direct]);
}

/// Cross-peer replay: a request captured on its way to peer A was accepted by
/// peer B, which admits the same node, within 300 s. The signature now names A.
#[test]
fn a_request_signed_for_one_peer_is_refused_by_another() {
    let (env, line) = node("answers-replay");
    let (a, proxy) = proxied(&env, &line, |_| None, |_, _| true);
    let b = env.serve(
        &env.path("srv-b"),
        &["--allow", &line, "--name", "peer.test"],
    );
    env.ok(["list", "--remote", &proxy.url()]);
    let captured = proxy
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.method == "GET" && r.path.ends_with("/node1/"))
        .expect("a signed list request")
        .raw
        .clone();
    let (status, msg) = replay(&b.addr, &captured);
    assert_eq!(status, 401, "replayed to B: {msg}");
    assert!(
        msg.contains(&format!("request signed for peer \\\"{}\\\"", proxy.addr)),
        "{msg}"
    );
    assert!(msg.contains("--name"), "{msg}");
    // The same bytes to A, which answered them already: a replay.
    let (status, msg) = replay(&a.addr, &captured);
    assert_eq!(status, 401, "replayed to A: {msg}");
    assert!(msg.contains("replayed"), "{msg}");

    // B answers to the name it was given, on its own port; not on another.
    let port = b.addr.rsplit_once(':').unwrap().1;
    let path = "/chute/blob/test.example/node1/";
    for (host, want) in [
        (format!("peer.test:{port}"), 200),
        (format!("PEER.test:{port}"), 200),
        ("peer.test:1".to_string(), 401),
        (format!("localhost:{port}"), 200),
    ] {
        let me = Signer::new(&keys(&env), "node1").for_peer(&host);
        let hs = me.headers("GET", path, &[], &sha256(b""));
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, head, body) = raw_http(&b.addr, &request("GET", path, &hs, b""));
        assert_eq!(status, want, "{host}: {}", text(&body));
        if want == 200 {
            // And its answer is authenticated for our nonce.
            let get = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                    .unwrap_or_default()
            };
            let nonce = &hs.iter().find(|(k, _)| *k == auth::NONCE).unwrap().1;
            let covered = auth::ANSWER_COVERED.map(get);
            let covered = covered.each_ref().map(String::as_str);
            let digest = sha256(&body);
            let body = auth::AnswerBody::Sha256(&digest);
            let tag = get(auth::ANSWER);
            let key = auth::node_key(&keys(&env), "node1");
            assert!(
                auth::answer_ok(&key, nonce, 200, body, &covered, &tag),
                "{head}"
            );
        }
    }
}

/// An --open server knows no node's key: the node says so, once, and carries on.
#[test]
fn an_open_server_is_named_once_as_unauthenticated() {
    let (env, _) = node("answers-open");
    let src = tree(&env, 3);
    let server = env.serve(&env.path("srv"), &[]);
    // Not told that the peer is --open: the `open` mark could be anyone's on the
    // path, written over a real peer's answers to switch the MAC check off.
    let out = env
        .cmd(["sink", "--remote", &server.url(), src.to_str().unwrap()])
        .env_remove("CHUTE_OPEN_PEER")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("set CHUTE_OPEN_PEER=1"), "{err}");
    assert!(!text(&out.stdout).contains("snapshot"));
    let out = env.run(["sink", "--remote", &server.url(), src.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warning = format!(
        "chute: warning: {} is an --open server: its answers cannot be authenticated (anyone on the path can edit them)",
        server.url()
    );
    assert_eq!(err.matches(&warning).count(), 1, "{err}");
}

/// Item 5: a pending blob's index.json was a 404; the prototype answers it.
#[test]
fn a_pending_index_is_readable_and_marked_pending() {
    let (env, line) = node("answers-pending");
    let server = env.serve(&env.path("srv"), &["--allow", &line]);
    let me = Signer::new(&keys(&env), "node1").for_peer(&server.addr);
    let send = |method: &str, path: &str, body: &[u8]| {
        let hs = me.headers(method, path, &[], &sha256(body));
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        raw_http(&server.addr, &request(method, path, &hs, body))
    };
    let idx = r#"{"version":1,"domain":"test.example","node":"node1","mount":"m1","timestamp":"p1","parent":null}"#;
    assert_eq!(send("POST", "/chute/blob/", idx.as_bytes()).0, 201);
    let (status, head, body) = send(
        "GET",
        "/chute/blob/test.example/node1/m1/p1/index.json",
        b"",
    );
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(text(&body), idx);
    assert!(head.contains("X-Chute-State: pending"), "{head}");
    assert!(head.contains("ETag: "), "{head}");
    // The node listing stays committed-only.
    let (status, _, body) = send("GET", "/chute/blob/test.example/node1/", b"");
    assert_eq!((status, text(&body).as_str()), (200, "[]"));
}
