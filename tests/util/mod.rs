//! Test helpers: run the real `chute` binary as a user would.
//!
//! `CHUTE_TEST_BIN` replaces the binary under test (e.g. the ARM build) and
//! `CHUTE_TEST_RUNNER` puts a prefix such as `qemu-arm-static -cpu cortex-a7` in
//! front of it, so the same tests serve both builds.
#![allow(dead_code)] // Each test file uses its own subset of these helpers.

pub mod proxy;
pub mod s3;

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A temporary world: its own HOME (so key, store and cache are private), removed on drop.
pub struct Env {
    pub dir: PathBuf,
    /// Variables every command of this world gets (an S3 store's credentials).
    vars: Vec<(String, String)>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Env {
    pub fn new(name: &str) -> Env {
        let dir = std::env::temp_dir().join(format!(
            "chute-it-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("home")).unwrap();
        Env {
            dir,
            vars: Vec::new(),
        }
    }

    /// Gives every later command of this world `name=value`.
    pub fn set(&mut self, name: &str, value: &str) {
        self.vars.push((name.into(), value.into()));
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// The default local store of this world.
    pub fn store(&self) -> PathBuf {
        self.home().join(".local/share/chute/store")
    }

    /// A new local store at `rel` under this world, made as a user must make one:
    /// `chute init --remote DIR` (which creates the key too if there is none).
    pub fn new_store(&self, rel: &str) -> PathBuf {
        let dir = self.path(rel);
        self.ok(["init", "--remote", dir.to_str().unwrap()]);
        dir
    }

    /// Drops the node's chain records (src/chain.rs), as a chute older than the
    /// chain kept none: for tests that re-seal a header as an old chute would,
    /// which a record rightly calls a replaced snapshot.
    pub fn drop_chain_records(&self) {
        for p in walk(&self.home().join(".cache")) {
            if p.file_name() == Some("chain".as_ref()) {
                std::fs::remove_file(p).unwrap();
            }
        }
    }

    /// A `chute` command with this world's HOME and no ambient CHUTE_* settings.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = base_command();
        c.args(args);
        c.env("HOME", self.home())
            .env("CHUTE_CONFIG", "/dev/null")
            .env("CHUTE_DOMAIN", "test.example")
            .env("CHUTE_NODE", "node1")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("CHUTE_REMOTE")
            .env_remove("CHUTE_KEY_FILE")
            .env_remove("CHUTE_PATHS")
            .env_remove("CHUTE_EXCLUDE")
            .env_remove("CHUTE_EXCLUDE_FILE")
            .env_remove("CHUTE_PATHS_FILE")
            .env_remove("CHUTE_EXCLUDE_CACHES")
            .env_remove("CHUTE_ONE_FILE_SYSTEM")
            .env_remove("CHUTE_TAG")
            .env_remove("CHUTE_S3_CREDENTIALS_FILE")
            .env_remove("CHUTE_S3_VIRTUAL_HOST")
            .env_remove("CHUTE_LIMIT_UPLOAD")
            .env_remove("CHUTE_LIMIT_DOWNLOAD")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_REGION")
            // Tests that are not about admission run an --open server (see
            // `serve_env`), whose answers carry no MAC: the node takes them only
            // when told (hostile_answers removes this to show the refusal).
            .env("CHUTE_OPEN_PEER", "1")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    /// Runs chute and returns its output, whatever the status.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.cmd(&args).output().expect("spawn chute");
        if std::env::var_os("CHUTE_TEST_VERBOSE").is_some() {
            eprintln!(
                "$ chute {args:?}\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        out
    }

    /// Runs chute and insists it succeeds; returns stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.run(&args);
        if !out.status.success() {
            panic!(
                "chute {:?} failed ({})\nstdout:\n{}\nstderr:\n{}\nfiles:\n{}",
                args,
                out.status,
                text(&out.stdout),
                text(&out.stderr),
                listing(&self.dir)
            );
        }
        text(&out.stdout)
    }

    /// Runs chute and insists it fails with `code`; returns stderr.
    pub fn fails<I, S>(&self, code: i32, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.run(&args);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "chute {args:?}: expected exit {code}\nstdout:\n{}\nstderr:\n{err}",
            text(&out.stdout)
        );
        assert!(!err.contains("panicked"), "chute panicked: {err}");
        assert!(!err.contains("RUST_BACKTRACE"), "backtrace hint: {err}");
        err
    }

    /// Starts `chute serve` on a free loopback port (127.0.0.1 only): `--open`
    /// unless `extra` admits nodes (`--allow...`) or says `--closed`.
    pub fn serve(&self, store: &Path, extra: &[&str]) -> Server {
        self.serve_env(store, extra, &[])
    }

    /// [`Env::serve`] with extra environment variables for the server (test hooks).
    pub fn serve_env(&self, store: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            store.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        // Tests that are not about admission run an open server.
        if !extra
            .iter()
            .any(|a| a.starts_with("--allow") || *a == "--closed")
        {
            args.push("--open".into());
        }
        args.retain(|a| a != "--closed");
        let mut cmd = self.cmd(&args);
        cmd.envs(env.iter().copied());
        Server::spawn(cmd)
    }
}

impl Server {
    /// Starts a `chute serve` command and waits for the address it listens on.
    pub fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chute serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        break rest.split('/').next().unwrap().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!("chute serve did not start:\n{seen}");
                }
            }
        };
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Server { child, addr, log }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = make_writable(&self.dir);
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn make_writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in walk(dir) {
        if let Ok(md) = fs::symlink_metadata(&e) {
            if md.is_dir() {
                let _ = fs::set_permissions(&e, fs::Permissions::from_mode(0o755));
            }
        }
    }
    Ok(())
}

/// A running `chute serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's log once it holds `want` after byte `from` (polled, at most
    /// `secs` seconds, then a failed assert showing the log): never a fixed sleep
    /// before reading a log.
    pub fn await_log(&self, from: usize, want: &str, secs: u64) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let log = self.log.lock().unwrap().clone();
            if log.get(from..).is_some_and(|l| l.contains(want)) {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {want:?} in the server's log within {secs} s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chute command, with the runner prefix if one is set.
/// How many times longer a timing bound may take here: 1 for the native build, 6
/// under `CHUTE_TEST_RUNNER` (qemu-user runs the ARM build several times slower,
/// most of all where a server starts a thread per connection). Only bounds that
/// measure the machine scale; the properties they guard are the same.
pub fn slack() -> u32 {
    match std::env::var("CHUTE_TEST_RUNNER") {
        Ok(r) if !r.trim().is_empty() => 6,
        _ => 1,
    }
}

pub fn base_command() -> Command {
    let bin = std::env::var_os("CHUTE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_chute")));
    match std::env::var("CHUTE_TEST_RUNNER")
        .ok()
        .filter(|r| !r.trim().is_empty())
    {
        Some(runner) => {
            let mut parts = runner.split_whitespace();
            let mut c = Command::new(parts.next().unwrap());
            c.args(parts).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every path below `dir`, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p.clone());
                }
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The files in blobs' part-0 directories (`…/0/NAME`) anywhere under a store
/// whose names pass `keep`.
pub fn part0_files(store: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    walk(store)
        .into_iter()
        .filter(|p| {
            p.parent().and_then(|d| d.file_name()) == Some("0".as_ref())
                && p.file_name().and_then(|n| n.to_str()).is_some_and(&keep)
        })
        .collect()
}

/// A store's window files, pending or committed (not temporaries).
pub fn window_files(store: &Path) -> Vec<PathBuf> {
    part0_files(store, |n| !n.starts_with('.'))
}

/// Bytes in the regular files under `dir` (a store's size on disk, say).
pub fn bytes_under(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .filter_map(|p| fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// A directory listing for failure messages.
pub fn listing(dir: &Path) -> String {
    walk(dir)
        .iter()
        .take(200)
        .map(|p| {
            let size = fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0);
            format!("  {} ({size} B)\n", p.display())
        })
        .collect()
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Asserts two trees are identical: names, kinds, contents, symlink targets, modes
/// and mtimes (of files and symlinks; directories' modes and mtimes too).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let rel = |root: &Path| -> Vec<PathBuf> {
        walk(root)
            .into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect()
    };
    let (ra, rb) = (rel(a), rel(b));
    assert_eq!(
        ra,
        rb,
        "trees differ in names:\n{}\nvs\n{}",
        listing(a),
        listing(b)
    );
    for r in std::iter::once(PathBuf::new()).chain(ra) {
        let (pa, pb) = (a.join(&r), b.join(&r));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", r.display());
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&pa).unwrap(),
                fs::read_link(&pb).unwrap(),
                "{}",
                r.display()
            );
        } else {
            assert_eq!(ma.mode(), mb.mode(), "mode of {}", r.display());
        }
        if ma.is_file() {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "content of {}",
                r.display()
            );
        }
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {}",
            r.display()
        );
    }
}

/// Runs a prepared chute command and insists it succeeds; returns stdout.
pub fn ok_cmd(mut c: Command) -> String {
    let out = c.output().expect("spawn chute");
    check_ok(&c, &out)
}

/// Insists a finished command succeeded, showing its output if not; returns stdout.
pub fn check_ok(c: &Command, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{c:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The value of header `name` in a response head from [`raw_http`] (its status
/// line first), case-insensitive.
pub fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Sends one raw HTTP/1.1 request and returns (status, headers, body).
pub fn raw_http(addr: &str, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A server may answer and close before it has read a body it refuses.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", text(&buf)));
    let head = text(&buf[..split]);
    let body = buf[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, head, body)
}

/// A request with `Connection: close` and an optional body (`Host: test` unless
/// `headers` give one: a signer's, which its signature covers).
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("Host")) {
        r.push_str("Host: test\r\n");
    }
    r.push_str("Connection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut out = r.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Field `k` of a JSON object (`--json` output), or a test failure naming it.
pub fn field<'a>(v: &'a miniserde::json::Value, k: &str) -> &'a miniserde::json::Value {
    match v {
        miniserde::json::Value::Object(o) => o.get(k).unwrap_or_else(|| panic!("no {k} in {v:?}")),
        _ => panic!("not an object: {v:?}"),
    }
}

/// Field `k` of a JSON object as a whole number.
pub fn num(v: &miniserde::json::Value, k: &str) -> u64 {
    match field(v, k) {
        miniserde::json::Value::Number(miniserde::json::Number::U64(n)) => *n,
        x => panic!("{k} is not a whole number: {x:?}"),
    }
}

/// Field `k` of a JSON object as a string.
pub fn string(v: &miniserde::json::Value, k: &str) -> String {
    match field(v, k) {
        miniserde::json::Value::String(s) => s.clone(),
        x => panic!("{k} is not a string: {x:?}"),
    }
}
