//! The management side of `chute serve` (issue 19): the page, `/chute/status`,
//! `/metrics`, who may see them, the login and its cookie, the Origin and CSRF
//! checks, and the server's log lines; against the real binary on loopback.
use crate::util::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A node's sink of `src` to `remote`.
fn sink(env: &Env, node: &str, remote: &str, src: &Path) {
    let mut c = env.cmd(["sink", "--remote", remote, src.to_str().unwrap()]);
    c.env("CHUTE_NODE", node);
    ok_cmd(c);
}

/// The `--allow` line of `node` (every node of a world shares its key file).
fn allow_line(env: &Env, node: &str) -> String {
    env.ok(["key", "auth", "--node", node]).trim().to_string()
}

/// A world with a key, a source tree, and a store holding a snapshot of node
/// `charlie`, who is not admitted to the server the tests start on it.
fn world(name: &str) -> (Env, PathBuf, PathBuf) {
    let env = Env::new(name);
    env.ok(["init"]);
    let store = env.new_store("srv");
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/a.txt"), b"the management page").unwrap();
    fs::write(src.join("b.bin"), noise(300 << 10, 7)).unwrap();
    sink(&env, "charlie", store.to_str().unwrap(), &src);
    (env, store, src)
}

/// One answer.
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        header_of(&self.head, name)
    }

    fn expect(self, status: u16, what: &str) -> Resp {
        assert_eq!(
            self.status, status,
            "{what}: expected {status}\n{}\n\n{}",
            self.head, self.body
        );
        self
    }
}

fn call(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut hs: Vec<(&str, &str)> = headers.to_vec();
    if !hs.iter().any(|(k, _)| k.eq_ignore_ascii_case("Host")) {
        hs.push(("Host", addr));
    }
    let (status, head, body) = raw_http(addr, &request(method, path, &hs, body));
    Resp {
        status,
        head,
        body: text(&body),
    }
}

fn get(addr: &str, path: &str) -> Resp {
    call(addr, "GET", path, &[], b"")
}

#[derive(miniserde::Deserialize, Debug)]
struct Status {
    version: String,
    now_unix: u64,
    now: String,
    uptime_secs: u64,
    free_bytes: Option<u64>,
    stale_after_secs: u64,
    limits: Limits,
    nodes: Vec<Node>,
    scrub: Option<Scrub>,
    requests: Vec<Requests>,
}

#[derive(miniserde::Deserialize, Debug)]
struct Limits {
    threads: u64,
    max_window: u64,
}

#[derive(miniserde::Deserialize, Debug)]
struct Node {
    name: String,
    admitted: bool,
    used_bytes: u64,
    quota_bytes: Option<u64>,
    snapshots: u64,
    last_commit: Option<String>,
    last_commit_unix: Option<u64>,
    last_snapshot_bytes: Option<u64>,
    stale: bool,
    pending: Vec<Upload>,
    error: Option<String>,
}

#[derive(miniserde::Deserialize, Debug)]
struct Upload {
    bytes: u64,
}

#[derive(miniserde::Deserialize, Debug)]
struct Scrub {
    every_secs: u64,
}

#[derive(miniserde::Deserialize, Debug)]
struct Requests {
    kind: String,
    code: u64,
    count: u64,
}

/// Issue 19: `GET /` was a JSON 404; a peer's owner could not see what it keeps.
#[test]
fn the_page_status_and_metrics_show_every_node() {
    let (env, store, src) = world("ui-page");
    let (alpha, bravo) = (allow_line(&env, "alpha"), allow_line(&env, "bravo"));
    let server = env.serve_env(
        &store,
        &[
            "--allow",
            &alpha,
            "--allow",
            &bravo,
            "--quota",
            "alpha=1G",
            "--scrub-every",
            "30d",
        ],
        // Not the journal's stream: lines are stamped.
        &[("JOURNAL_STREAM", "0:0")],
    );
    let url = server.url();
    sink(&env, "alpha", &url, &src);
    fs::write(src.join("d/a.txt"), b"changed").unwrap();
    sink(&env, "alpha", &url, &src);
    sink(&env, "bravo", &url, &src);

    let page = get(&server.addr, "/").expect(200, "GET /");
    assert_eq!(
        page.header("Content-Type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    for want in [
        "<td>alpha</td>",
        "<td>bravo</td>",
        "<td>charlie <span class=m>(not admitted)</span></td>",
        "1.0 GiB (0%)",
        "KiB",
        "s ago)",
        "<meta name=viewport",
        "a pass every 30d",
    ] {
        assert!(page.body.contains(want), "no {want:?} in\n{}", page.body);
    }
    assert!(!page.body.contains("<script"), "{}", page.body);
    let head = call(&server.addr, "HEAD", "/", &[], b"").expect(200, "HEAD /");
    assert!(head.body.is_empty(), "{}", head.body);
    let post = call(&server.addr, "POST", "/", &[], b"").expect(405, "POST /");
    assert_eq!(post.header("Allow").as_deref(), Some("GET, HEAD"));
    let other = get(&server.addr, "/favicon.ico").expect(404, "another path");
    assert!(other.body.contains("\"error\""), "{}", other.body);

    let json = get(&server.addr, "/chute/status").expect(200, "GET /chute/status");
    assert_eq!(
        json.header("Content-Type").as_deref(),
        Some("application/json")
    );
    let s: Status = miniserde::json::from_str(&json.body)
        .unwrap_or_else(|e| panic!("{e}: not the documented JSON: {}", json.body));
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    assert!(s.now.ends_with('Z') && s.now.len() == 20, "{}", s.now);
    assert!(s.uptime_secs < 600 && s.now_unix > 1_700_000_000);
    assert!(s.free_bytes.is_some_and(|f| f > 0), "{s:?}");
    assert_eq!(s.stale_after_secs, 36 * 3600);
    assert!(s.limits.threads > 0 && s.limits.max_window > 0);
    assert_eq!(s.scrub.as_ref().map(|s| s.every_secs), Some(30 * 86_400));
    let names: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["alpha", "bravo", "charlie"]);
    for (n, snaps, admitted) in [(0, 2, true), (1, 1, true), (2, 1, false)] {
        let node = &s.nodes[n];
        assert_eq!(
            (node.snapshots, node.admitted),
            (snaps, admitted),
            "{node:?}"
        );
        assert!(node.used_bytes > 300 << 10, "{node:?}");
        assert!(node.last_snapshot_bytes.is_some_and(|b| b > 0), "{node:?}");
        let t = node.last_commit_unix.expect("a last commit");
        assert!(s.now_unix - t < 600, "{node:?}");
        assert!(
            node.last_commit
                .as_deref()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert!(!node.stale && node.error.is_none(), "{node:?}");
        assert!(node.pending.iter().all(|u| u.bytes < u64::MAX));
    }
    assert_eq!(s.nodes[0].quota_bytes, Some(1 << 30));
    assert_eq!(s.nodes[1].quota_bytes, None);
    assert!(
        s.requests
            .iter()
            .any(|r| r.kind == "blob" && r.code == 201 && r.count > 0),
        "{:?}",
        s.requests
    );

    let m = get(&server.addr, "/metrics").expect(200, "GET /metrics");
    assert_eq!(
        m.header("Content-Type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for want in [
        "chute_node_snapshots{node=\"alpha\"} 2\n",
        "chute_node_snapshots{node=\"bravo\"} 1\n",
        "chute_node_snapshots{node=\"charlie\"} 1\n",
        "chute_node_quota_bytes{node=\"alpha\"} 1073741824\n",
        "chute_node_bytes{node=\"bravo\"} ",
        "chute_node_last_commit_timestamp_seconds{node=\"charlie\"} ",
        "chute_node_abandoned_uploads{node=\"alpha\"} 0\n",
        "chute_requests_total{kind=\"blob\",code=\"201\"} ",
        "chute_uptime_seconds ",
        "chute_scrub_damaged_windows",
    ] {
        assert!(m.body.contains(want), "no {want:?} in\n{}", m.body);
    }

    // The log: a line per commit, none per request, each stamped.
    let log = server.await_log(0, "node bravo committed snapshot", 10);
    assert_eq!(
        log.matches("chute serve: node alpha committed snapshot")
            .count(),
        2,
        "{log}"
    );
    assert!(!log.contains("\" 201 "), "a per-request line:\n{log}");
    assert!(!log.contains("\"GET /chute/status\""), "{log}");
    for line in log.lines() {
        let stamp = line.split(' ').next().unwrap();
        assert!(
            stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "not stamped: {line}"
        );
    }
    // A refusal gets its line, naming what the request claims to be.
    let refused = call(
        &server.addr,
        "GET",
        "/chute/blob/test.example/alpha/",
        &[("X-Chute-Node", "mallory")],
        b"",
    );
    assert_eq!(refused.status, 401, "{}", refused.body);
    let log = server.await_log(0, "refused", 10);
    assert!(
        log.contains("node mallory \"GET /chute/blob/test.example/alpha/\" 401 (0 B)"),
        "{log}"
    ); // A forget gets its line too.
    let mut list = env.cmd(["list", "--remote", &url]);
    list.env("CHUTE_NODE", "alpha");
    let id = ok_cmd(list)
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let mut forget = env.cmd(["forget", "--remote", &url, &id]);
    forget.env("CHUTE_NODE", "alpha");
    ok_cmd(forget);
    server.await_log(0, "chute serve: node alpha forgot snapshot", 10);
}

/// With `--log-requests`, a line per request, as before issue 19.
#[test]
fn log_requests_logs_each_request() {
    let (env, store, _src) = world("ui-logreq");
    let server = env.serve(&store, &["--log-requests"]);
    get(&server.addr, "/metrics").expect(200, "metrics");
    server.await_log(0, "\"GET /metrics\" 200 ", 10);
}

/// Issue 19 point 4: by default only loopback clients; `--ui-allow` and the
/// token let others in; POSTs need Origin, and logout a CSRF token too. The
/// test hook makes this loopback client count as any other address.
#[test]
fn a_client_that_is_not_let_in_gets_403_until_allowed_or_logged_in() {
    let (env, store, _src) = world("ui-access");
    let token = "correct horse battery staple";
    let token_file = env.path("ui-token");
    fs::write(&token_file, format!("  {token}\n")).unwrap();
    let hook = [("CHUTE_TEST_UI_NOT_LOOPBACK", "1")];
    let server = env.serve_env(
        &store,
        &[
            "--ui-token-file",
            token_file.to_str().unwrap(),
            "--ui-allow",
            "10.9.8.7",
            "--ui-allow",
            "fd00::/8",
        ],
        &hook,
    );
    let addr = server.addr.as_str();
    let denied = get(addr, "/").expect(403, "page, not let in");
    assert!(denied.body.contains("href=\"/login\""), "{}", denied.body);
    assert!(!denied.body.contains("charlie"), "{}", denied.body);
    let denied = get(addr, "/chute/status").expect(403, "status, not let in");
    assert!(denied.body.starts_with("{\"error\":"), "{}", denied.body);
    assert!(!denied.body.contains("charlie"));
    let denied = get(addr, "/metrics").expect(403, "metrics, not let in");
    assert_eq!(denied.body.lines().count(), 1, "{}", denied.body);
    assert!(!denied.body.contains("chute_node"));

    // The token as a bearer header.
    let bearer = format!("Bearer {token}");
    call(addr, "GET", "/metrics", &[("Authorization", &bearer)], b"").expect(200, "bearer");
    let page = call(addr, "GET", "/", &[("Authorization", &bearer)], b"").expect(200, "bearer");
    assert!(page.body.contains("charlie"), "{}", page.body);
    let wrong = format!("Bearer {token}!");
    call(addr, "GET", "/", &[("Authorization", &wrong)], b"").expect(403, "wrong bearer");

    // The login form and its cookie.
    let form = get(addr, "/login").expect(200, "login form");
    assert!(form.body.contains("name=token"), "{}", form.body);
    let origin = format!("http://{addr}");
    let ctype = ("Content-Type", "application/x-www-form-urlencoded");
    let body = b"token=correct+horse+battery+staple";
    call(addr, "POST", "/login", &[ctype], body).expect(403, "login without Origin");
    call(
        addr,
        "POST",
        "/login",
        &[ctype, ("Origin", "http://evil.example")],
        body,
    )
    .expect(403, "login from another origin");
    let bad = call(
        addr,
        "POST",
        "/login",
        &[ctype, ("Origin", &origin)],
        b"token=correct+horse+battery+stapler",
    )
    .expect(403, "wrong token");
    assert!(
        bad.body.contains("name=token"),
        "the form again: {}",
        bad.body
    );
    assert!(bad.header("Set-Cookie").is_none());
    let ok = call(addr, "POST", "/login", &[ctype, ("Origin", &origin)], body)
        .expect(303, "right token");
    assert_eq!(ok.header("Location").as_deref(), Some("/"));
    let set = ok.header("Set-Cookie").expect("a cookie");
    assert!(
        set.ends_with("; HttpOnly; SameSite=Strict; Path=/"),
        "{set}"
    );
    assert!(!set.contains("horse"), "the token itself went out: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let (name, value) = cookie.split_once('=').unwrap();
    assert_eq!(name, "chute_ui");
    assert!(
        value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()),
        "{value}"
    );
    let page = call(addr, "GET", "/", &[("Cookie", &cookie)], b"").expect(200, "cookie");
    assert!(page.body.contains("charlie"), "{}", page.body);
    let csrf = page
        .body
        .split("name=csrf value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF field on the page: {}", page.body))
        .to_string();
    call(
        addr,
        "GET",
        "/",
        &[("Cookie", &format!("chute_ui={}", "0".repeat(64)))],
        b"",
    )
    .expect(403, "a made-up cookie");

    // Logout: Origin and CSRF both needed.
    let good = format!("csrf={csrf}");
    let with = |hs: &[(&str, &str)], body: &str| {
        let mut all = vec![ctype, ("Cookie", cookie.as_str())];
        all.extend_from_slice(hs);
        call(addr, "POST", "/logout", &all, body.as_bytes())
    };
    with(&[], &good).expect(403, "logout without Origin");
    with(&[("Origin", "http://evil.example")], &good).expect(403, "logout, wrong Origin");
    with(&[("Origin", &origin)], "").expect(403, "logout without CSRF");
    with(&[("Origin", &origin)], &format!("csrf={}", "0".repeat(64)))
        .expect(403, "logout, wrong CSRF");
    let out = with(&[("Origin", &origin)], &good).expect(303, "logout");
    assert!(
        out.header("Set-Cookie")
            .is_some_and(|c| c.starts_with("chute_ui=;") && c.contains("Max-Age=0")),
        "{}",
        out.head
    );
    drop(server);

    // `--ui-allow` of this client's address lets it in; the log shows no page
    // request without --log-requests.
    let server = env.serve_env(&store, &["--ui-allow", "127.0.0.1/32"], &hook);
    get(&server.addr, "/").expect(200, "allowed address");
    get(&server.addr, "/chute/status").expect(200, "allowed address");
    let log = server.log.lock().unwrap().clone();
    assert!(!log.contains("\"GET /"), "{log}");
}

/// DNS rebinding: a page on a public domain, resolved to this server, reaches it
/// from the browser's own (loopback) address but names its domain as `Host`;
/// only the token gets it in. And the login form stops checking tokens after
/// [`chute::ui::LOGIN_FAILURES`] wrong ones, while the bearer header still works.
#[test]
fn a_public_host_name_needs_the_token_and_wrong_tokens_shut_the_form() {
    let (env, store, _src) = world("ui-rebind");
    let token = "0123456789abcdef-rebind";
    let token_file = env.path("ui-token");
    fs::write(&token_file, token).unwrap();
    let server = env.serve(&store, &["--ui-token-file", token_file.to_str().unwrap()]);
    let addr = server.addr.as_str();
    let port = addr.rsplit_once(':').unwrap().1;
    get(addr, "/").expect(200, "loopback by address");
    let evil = format!("evil.example:{port}");
    for path in ["/", "/chute/status", "/metrics"] {
        call(addr, "GET", path, &[("Host", &evil)], b"").expect(403, "a public Host");
    }
    let local = format!("localhost:{port}");
    call(addr, "GET", "/", &[("Host", &local)], b"").expect(200, "localhost");
    let bearer = format!("Bearer {token}");
    let page = call(
        addr,
        "GET",
        "/",
        &[("Host", &evil), ("Authorization", &bearer)],
        b"",
    )
    .expect(200, "a public Host with the token");
    assert!(page.body.contains("charlie"), "{}", page.body);

    let origin = format!("http://{addr}");
    let ctype = ("Content-Type", "application/x-www-form-urlencoded");
    for i in 0..chute::ui::LOGIN_FAILURES {
        call(
            addr,
            "POST",
            "/login",
            &[ctype, ("Origin", &origin)],
            b"token=wrong",
        )
        .expect(403, &format!("wrong token {i}"));
    }
    let shut = call(
        addr,
        "POST",
        "/login",
        &[ctype, ("Origin", &origin)],
        format!("token={token}").as_bytes(),
    )
    .expect(429, "the form after too many wrong tokens");
    assert_eq!(shut.header("Retry-After").as_deref(), Some("60"));
    assert!(shut.header("Set-Cookie").is_none(), "{}", shut.head);
    call(
        addr,
        "GET",
        "/",
        &[("Host", &evil), ("Authorization", &bearer)],
        b"",
    )
    .expect(200, "the bearer header while the form is shut");
}

/// GET `path` until its body holds `want` (at most `secs` seconds, scaled by
/// [`slack`]); the last body otherwise, in a failed assert.
fn await_body(addr: &str, path: &str, want: &str, secs: u64) -> String {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_secs(secs * slack() as u64);
    loop {
        let body = get(addr, path).expect(200, path).body;
        if body.contains(want) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {want:?} in {path} within {secs} s:\n{body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The hidden CSRF value of a page's forms.
fn csrf_of(page: &str) -> String {
    page.split("name=csrf value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF field on the page: {page}"))
        .to_string()
}

/// Issue 19, point 2: a server run with its node's key, remote and paths shows
/// that node's snapshots (listed by a `chute list` it runs), and its "Take new
/// snapshot" button starts a sink whose progress page ends with the summary
/// line; the new snapshot is in `chute list`, on the page, in the JSON and in
/// the metrics. A server without the node's paths has no button.
#[test]
fn the_own_view_lists_this_node_and_its_button_takes_a_snapshot() {
    let (env, store, src) = world("ui-own");
    let node = [
        ("CHUTE_NODE", "charlie"),
        ("CHUTE_REMOTE", store.to_str().unwrap()),
        ("CHUTE_PATHS", src.to_str().unwrap()),
    ];
    let server = env.serve_env(&store, &[], &node);
    let addr = server.addr.as_str();
    server.await_log(0, "\"Take new snapshot\" button", 10);
    let first = env.ok([
        "list",
        "--json",
        "--remote",
        store.to_str().unwrap(),
        "--node",
        "charlie",
    ]);
    let id = first
        .split("\"id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    // The list is read in the background: the page shows it once read.
    let page = await_body(addr, "/", &format!("<td>{}</td>", &id[..8]), 30);
    for want in [
        "This node: charlie",
        &format!("Backs up {}.", src.display()),
        "Take new snapshot",
        // The world's sink, from the command line as cron runs it.
        "<p>Last sink (sink): ok, ended <time",
        "No verify has recorded its end on this machine",
    ] {
        assert!(page.contains(want), "no {want:?} in {page}");
    }

    let origin = format!("http://{addr}");
    let ctype = ("Content-Type", "application/x-www-form-urlencoded");
    let csrf = format!("csrf={}", csrf_of(&page));
    call(addr, "POST", "/sink", &[ctype], csrf.as_bytes()).expect(403, "no Origin");
    call(
        addr,
        "POST",
        "/sink",
        &[ctype, ("Origin", &origin)],
        b"csrf=00",
    )
    .expect(403, "wrong CSRF");
    call(addr, "GET", "/sink", &[], b"").expect(200, "the progress page before any sink");
    fs::write(src.join("new.txt"), b"taken from the page").unwrap();
    let go = call(
        addr,
        "POST",
        "/sink",
        &[ctype, ("Origin", &origin)],
        csrf.as_bytes(),
    )
    .expect(303, "the button");
    assert_eq!(go.header("Location").as_deref(), Some("/sink"));
    let done = await_body(addr, "/sink", "Ended with status", 120);
    assert!(done.contains("Ended with status 0"), "{done}");
    assert!(!done.contains("http-equiv=refresh"), "{done}");
    assert!(done.contains("<b>snapshot "), "{done}");
    server.await_log(0, "a sink was started from the management page", 10);

    let listed = env.ok([
        "list",
        "--remote",
        store.to_str().unwrap(),
        "--node",
        "charlie",
    ]);
    assert!(listed.contains("2 snapshots"), "{listed}");
    // The list is read again after the sink: the page, JSON and metrics see it.
    let json = await_body(addr, "/chute/status", "\"snapshots_total\":2", 30);
    assert!(json.contains("\"sinks_ok\":1"), "{json}");
    assert!(json.contains("\"exit_code\":0"), "{json}");
    let page = get(addr, "/").expect(200, "page").body;
    assert!(page.contains("Newest snapshot:"), "{page}");
    assert!(page.contains("ended with status 0"), "{page}");
    let metrics = get(addr, "/metrics").expect(200, "metrics").body;
    assert!(
        metrics.contains("chute_sink_runs_total{result=\"ok\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("chute_own_snapshots 2\n"), "{metrics}");
    assert!(
        metrics.contains("chute_own_last_run_success{command=\"sink\"} 1\n"),
        "{metrics}"
    );
    // The page's sink is the last one recorded.
    let summary = done
        .split("<b>")
        .nth(1)
        .unwrap()
        .split("</b>")
        .next()
        .unwrap();
    let status = env.ok([
        "status",
        "--json",
        "--remote",
        store.to_str().unwrap(),
        "--node",
        "charlie",
    ]);
    assert!(
        status.contains(&format!("\"result\":\"ok\",\"line\":\"{summary}\"")),
        "{summary} in {status}"
    );
    assert!(json.contains(&format!("\"line\":\"{summary}\"")), "{json}");
    drop(server);

    // Without the node's paths: no own view, and the button's POST is refused.
    let server = env.serve_env(&store, &[], &node[..2]);
    let addr = server.addr.as_str();
    let page = get(addr, "/").expect(200, "page").body;
    assert!(!page.contains("This node"), "{page}");
    assert!(!page.contains("Take new snapshot"), "{page}");
    let origin = format!("http://{addr}");
    call(
        addr,
        "POST",
        "/sink",
        &[ctype, ("Origin", &origin)],
        b"csrf=00",
    )
    .expect(409, "no paths, no sink");
}

/// `chute status` says how the last sink and verify on this machine ended,
/// cron's included: nothing yet, a sink saved, one saved without a path it
/// was given (exit status 3), a verify; as text and as JSON.
#[test]
fn status_says_how_the_last_sink_and_verify_ended() {
    let env = Env::new("status");
    env.ok(["init"]);
    let none = env.ok(["status"]);
    assert!(
        none.contains("last sink: none recorded on this machine\nlast verify: none recorded"),
        "{none}"
    );
    let json = env.ok(["status", "--json"]);
    assert!(
        json.contains("\"last_sink\":null,\"last_verify\":null"),
        "{json}"
    );

    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"status").unwrap();
    let saved = env.ok(["sink", src.to_str().unwrap()]);
    let summary = saved.lines().find(|l| l.starts_with("snapshot ")).unwrap();
    let text = env.ok(["status"]);
    assert!(
        text.contains("last sink: ok, ended ") && text.contains(&format!(": {summary} (sink)\n")),
        "{text}"
    );

    let gone = env.path("gone");
    env.fails(3, ["sink", src.to_str().unwrap(), gone.to_str().unwrap()]);
    let json = env.ok(["status", "--json"]);
    assert!(json.contains("\"result\":\"incomplete\""), "{json}");
    assert!(json.contains("missing or unreadable"), "{json}");

    env.ok(["verify", "--all"]);
    let text = env.ok(["status"]);
    assert!(text.contains("last sink: incomplete, ended "), "{text}");
    assert!(text.contains("last verify: ok, ended "), "{text}");
    assert!(text.contains(": verified 2 snapshots: "), "{text}");
    assert!(text.contains("all intact (verify --all)\n"), "{text}");
}

/// Issue 19 in a real browser: Debian's headless chromium (tests/browser.py,
/// through chromium-driver and python3-selenium, which `make test-deps`
/// installs) is turned away by a server that lets no address in, logs in with
/// the token, sees three nodes with their sizes and ages, takes a screenshot,
/// clicks "Take new snapshot", follows the progress page and finds the new
/// snapshot listed. A missing browser fails this test.
#[test]
fn the_page_works_in_a_real_browser() {
    let (env, store, src) = world("ui-browser");
    let remote = store.to_str().unwrap();
    sink(&env, "alpha", remote, &src);
    sink(&env, "bravo", remote, &src);
    let token = "0123456789abcdef-browser";
    let token_file = env.path("ui-token");
    fs::write(&token_file, token).unwrap();
    let server = env.serve_env(
        &store,
        &["--ui-token-file", token_file.to_str().unwrap()],
        &[
            // The browser runs here: it must be let in by the token alone.
            ("CHUTE_TEST_UI_NOT_LOOPBACK", "1"),
            ("CHUTE_NODE", "charlie"),
            ("CHUTE_REMOTE", remote),
            ("CHUTE_PATHS", src.to_str().unwrap()),
        ],
    );
    let shot = env.path("page.png");
    // Debian's python3, whose python3-selenium test-deps installs.
    let out = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser.py"))
        .args([
            &server.url(),
            token,
            shot.to_str().unwrap(),
            "alpha,bravo",
            "charlie",
        ])
        .output()
        .expect("run /usr/bin/python3");
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{}{}\nserver log:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        server.log.lock().unwrap()
    );
    let png = fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n") && png.len() > 4096,
        "{} bytes",
        png.len()
    );
    let listed = env.ok(["list", "--remote", remote, "--node", "charlie"]);
    assert!(listed.contains("2 snapshots"), "{listed}");
}

/// The page's cost for `make bench` (tests/bench-server.sh): a server holding
/// 10 admitted nodes with 1,000 snapshots each (one real snapshot per node,
/// copied 999 times under new timestamps, data files hard-linked), whose page,
/// status and metrics are each loaded 8 times, each time gathered afresh.
/// Prints `SERVER_RSS ui-page-10x1000 KiB (...)` for the bench's table.
#[test]
#[ignore]
fn bench_page_rss() {
    let env = Env::new("ui-bench");
    let store = env.new_store("store");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"one small file").unwrap();
    let nodes: Vec<String> = (0..10).map(|i| format!("node{i}")).collect();
    let mut allow = Vec::new();
    for n in &nodes {
        sink(&env, n, store.to_str().unwrap(), &src);
        allow.push("--allow".to_string());
        allow.push(allow_line(&env, n));
    }
    // <store>/<domain>/<node>/<mount>/<timestamp>/: copy each node's one blob.
    let mut copies = 0;
    for n in &nodes {
        let node_dir = store.join("test.example").join(n);
        let mount = fs::read_dir(&node_dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let blob = fs::read_dir(&mount)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let ts = blob.file_name().unwrap().to_str().unwrap().to_string();
        // YYYYMMDDTHHMMSS.ffffffZ: new microseconds, same second.
        let (stem, _) = ts.split_at(ts.len() - 7);
        for i in 1..1000 {
            let to = mount.join(format!("{stem}{i:06}Z"));
            copy_tree(&blob, &to);
            copies += 1;
        }
    }
    assert_eq!(copies, 9990);
    let args: Vec<&str> = allow.iter().map(String::as_str).collect();
    let server = env.serve(&store, &args);
    let mut page_bytes = 0;
    for round in 0..8 {
        if round > 0 {
            // Past the status cache: every round gathers again.
            std::thread::sleep(chute::ui::CACHE_FOR + std::time::Duration::from_millis(100));
        }
        let page = get(&server.addr, "/").expect(200, "page").body;
        assert!(page.contains("<td>node9</td>"), "{page}");
        page_bytes = page.len();
        get(&server.addr, "/chute/status").expect(200, "status");
        get(&server.addr, "/metrics").expect(200, "metrics");
    }
    let json = get(&server.addr, "/chute/status").body;
    assert!(json.contains("\"snapshots\":1000"), "{json}");
    let status = fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM");
    println!(
        "SERVER_RSS ui-page-10x1000 {hwm} (page {page_bytes} bytes; 10 nodes x 1,000 snapshots, page, status and metrics gathered 8 times)"
    );
}

/// Copies a blob directory: data files hard-linked, the rest copied.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else if from.file_name() == Some("0".as_ref()) {
            fs::hard_link(e.path(), &dest).unwrap();
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// `chute ARGS`'s stderr once it exits with status 2; a server that starts
/// instead (the setting was taken) is killed and the test fails, never hangs.
fn fails_soon(env: &Env, args: &[&str]) -> String {
    let mut child = env
        .cmd(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn chute");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20) * slack();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "chute {args:?} is still running (the setting was taken):\n{}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "chute {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_ui_settings_are_one_line_usage_errors() {
    let env = Env::new("ui-usage");
    let store = env.path("srv");
    let short = env.path("short");
    fs::write(&short, "too short\n").unwrap();
    let base = ["serve", "--listen", "127.0.0.1:0", "--store"];
    for (extra, want) in [
        (
            vec!["--ui-token-file", short.to_str().unwrap()],
            "at least 16 bytes",
        ),
        (
            vec!["--ui-token-file", "/nonexistent/token"],
            "cannot read --ui-token-file",
        ),
        (vec!["--ui-allow", "10.0.0.0/33"], "--ui-allow"),
        (vec!["--ui-allow", "lan"], "--ui-allow"),
        (vec!["--ui-stale", "soon"], "--ui-stale"),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.push(store.to_str().unwrap());
        args.extend(extra);
        let err = fails_soon(&env, &args);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!store.exists(), "a bad setting created the store");
    }
    let help = env.ok(["serve", "--help"]);
    for flag in [
        "--ui-allow",
        "--ui-token-file",
        "--ui-stale",
        "--log-requests",
    ] {
        assert!(help.contains(flag), "no {flag} in\n{help}");
    }
}
