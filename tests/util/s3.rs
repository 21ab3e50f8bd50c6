//! Real S3 servers on 127.0.0.1 for the tests: a 3-node Garage 2.5.0 cluster
//! and a single `rclone serve s3`, installed once by `make test-deps`
//! (tests/test-deps.sh) under `~/.cache/chute-test` (`CHUTE_TEST_DEPS`).
//!
//! Each server lives in a temporary directory of its own, on free loopback
//! ports, and is stopped on drop (SIGKILL, then waited for: no stray process,
//! and the directory removed). A missing binary panics with a message naming
//! `make test-deps`: the tests fail, never skip. Start-up is bounded
//! ([`START_LIMIT`]); so is every `garage` admin command ([`CLI_LIMIT`]).
//!
//! Garage: `replication_factor = 3`, `consistency_mode = "consistent"`, lmdb,
//! region `garage`; the layout is applied, bucket [`BUCKET`] created and the key
//! pair [`KEY_ID`]/[`SECRET`] imported and allowed on it. All three nodes serve
//! S3 ([`Garage::endpoint`]); [`Garage::kill`] and [`Garage::restart`] stop and
//! bring back one node, and a restarted node is dialled by the others at once
//! (they would otherwise wait up to 30 s). Garage runs with the TCP_NODELAY shim
//! of tests/util/nodelay.c preloaded (`CHUTE_TEST_GARAGE_NODELAY=0`: without).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "chute-test";
/// Garage wants `GK` and 24 hex digits; rclone takes any.
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RPC_SECRET: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
/// Versions `make test-deps` installs (tests/test-deps.sh names the same).
pub const GARAGE_VERSION: &str = "2.5.0";
pub const RCLONE_VERSION: &str = "1.75.2";
/// Most a server may take to start, every node seeing the others (Garage needs
/// 1-2 s on loopback; this is a bound for a loaded machine, not an expectation).
pub const START_LIMIT: Duration = Duration::from_secs(90);
/// Most one `garage` admin command may take.
pub const CLI_LIMIT: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Where `make test-deps` installs: `CHUTE_TEST_DEPS` or `~/.cache/chute-test`.
pub fn deps_dir() -> PathBuf {
    match std::env::var_os("CHUTE_TEST_DEPS") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/chute-test")
        }
    }
}

fn installed(rel: &str, what: &str) -> PathBuf {
    let bin = deps_dir().join(rel);
    assert!(
        bin.is_file(),
        "{what} is not installed at {}: run `make test-deps` (tests/test-deps.sh) first",
        bin.display()
    );
    bin
}

pub fn garage_bin() -> PathBuf {
    installed(&format!("garage-{GARAGE_VERSION}/bin/garage"), "garage")
}

/// The TCP_NODELAY shim preloaded into Garage (tests/util/nodelay.c), or `None`
/// with `CHUTE_TEST_GARAGE_NODELAY=0` (stock Garage).
pub fn nodelay_shim() -> Option<PathBuf> {
    if std::env::var("CHUTE_TEST_GARAGE_NODELAY").is_ok_and(|v| v == "0") {
        return None;
    }
    Some(installed("nodelay-1.so", "the TCP_NODELAY shim for Garage"))
}

pub fn rclone_bin() -> PathBuf {
    installed(&format!("rclone-{RCLONE_VERSION}/bin/rclone"), "rclone")
}

/// A port nothing listens on now (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port nothing listens on now, below the kernel's range of ephemeral ports,
/// for a Garage node that is killed and started again on it: in that range, an
/// outgoing connection (the other nodes', a client's) could be given the port
/// while the node is down, and its restart failed with "Address already in use"
/// (once, in the armv6 CI run at 60e8d12).
fn restartable_port() -> u16 {
    let ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(12_000);
    loop {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).unwrap();
        let port = 10_000 + u16::from_le_bytes(b) % (ephemeral - 10_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "chute-s3-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `cmd` to its end within `limit`, or kills it and panics.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let deadline = Instant::now() + limit;
    // The commands run here print a few lines: the pipes never fill.
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Polls `ready` every 50 ms until it holds or `deadline` passes (then panics
/// with `what` and `log`'s contents).
fn wait_until(deadline: Instant, what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    while !ready() {
        if Instant::now() > deadline {
            panic!(
                "{what} within {START_LIMIT:?}; log {}:\n{}",
                log.display(),
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The client environment for a server: what `chute::s3::Config::from_env` reads.
pub fn client_env(region: &str) -> impl Fn(&str) -> Option<String> {
    let region = region.to_string();
    move |k: &str| match k {
        "AWS_ACCESS_KEY_ID" => Some(KEY_ID.into()),
        "AWS_SECRET_ACCESS_KEY" => Some(SECRET.into()),
        "AWS_DEFAULT_REGION" => Some(region.clone()),
        _ => None,
    }
}

struct Node {
    dir: PathBuf,
    s3_port: u16,
    child: Option<Child>,
}

impl Node {
    fn config(&self) -> PathBuf {
        self.dir.join("garage.toml")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }
}

/// A 3-node Garage cluster (see the module docs), stopped on drop.
pub struct Garage {
    dir: PathBuf,
    nodes: Vec<Node>,
    bin: PathBuf,
    preload: Option<PathBuf>,
    /// How long the cluster took to start, every node seeing the others.
    pub started_in: Duration,
}

impl Garage {
    /// Starts the cluster; a start that fails (a port our probe found free taken
    /// before a node bound it, by another test's connection) is tried again with
    /// fresh ports, three times at most. A failed attempt's nodes are killed as
    /// its `Garage` unwinds.
    pub fn start() -> Garage {
        for _ in 0..2 {
            if let Ok(g) = std::panic::catch_unwind(Garage::start_once) {
                return g;
            }
        }
        Garage::start_once()
    }

    fn start_once() -> Garage {
        let bin = garage_bin();
        let dir = temp_dir("garage");
        let begin = Instant::now();
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let nd = dir.join(format!("n{i}"));
            fs::create_dir_all(nd.join("meta")).unwrap();
            fs::create_dir_all(nd.join("data")).unwrap();
            let (s3_port, rpc_port) = (restartable_port(), restartable_port());
            let config = format!(
                "metadata_dir = \"{meta}\"\n\
                 data_dir = \"{data}\"\n\
                 db_engine = \"lmdb\"\n\
                 replication_factor = 3\n\
                 consistency_mode = \"consistent\"\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_secret = \"{RPC_SECRET}\"\n\
                 \n\
                 [s3_api]\n\
                 s3_region = \"garage\"\n\
                 api_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                meta = nd.join("meta").display(),
                data = nd.join("data").display(),
            );
            fs::write(nd.join("garage.toml"), config).unwrap();
            // Garage refuses a config file others may read (it holds the RPC secret).
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(nd.join("garage.toml"), fs::Permissions::from_mode(0o600)).unwrap();
            nodes.push(Node {
                dir: nd,
                s3_port,
                child: None,
            });
        }
        let mut g = Garage {
            dir,
            nodes,
            bin,
            preload: nodelay_shim(),
            started_in: Duration::ZERO,
        };
        for i in 0..3 {
            g.spawn(i);
        }
        let deadline = begin + START_LIMIT;
        let ids: Vec<String> = (0..3).map(|i| g.node_id(i, deadline)).collect();
        for id in &ids[1..] {
            g.cli(0, &["node", "connect", id]);
        }
        for (i, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap();
            g.cli(
                0,
                &[
                    "layout",
                    "assign",
                    "-z",
                    &format!("z{}", i + 1),
                    "-c",
                    "1G",
                    short,
                ],
            );
        }
        g.cli(0, &["layout", "apply", "--version", "1"]);
        g.cli(0, &["bucket", "create", BUCKET]);
        g.cli(
            0,
            &["key", "import", "--yes", "-n", "chute", KEY_ID, SECRET],
        );
        g.cli(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "chute",
            ],
        );
        g.wait_all_up(deadline);
        g.wait_s3_ready(deadline);
        g.started_in = begin.elapsed();
        g
    }

    /// Until every running node's S3 API answers a signed HEAD of a missing key
    /// with 404: `health` can say all nodes are up before a node has the new
    /// layout, bucket or key, and answers 503 or 403 until then.
    fn wait_s3_ready(&mut self, deadline: Instant) {
        for i in (0..3).filter(|&i| self.nodes[i].child.is_some()) {
            let spec = self.spec(i, "");
            let client = chute::s3::Client::new(
                chute::s3::Config::from_env(&spec, &client_env("garage")).unwrap(),
            );
            let log = self.nodes[i].log();
            wait_until(
                deadline,
                "garage's S3 API did not answer 404",
                &log,
                || matches!(client.head("readiness-probe"), Err(e) if e.kind == chute::remote::ErrorKind::NotFound),
            );
        }
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log())
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        if let Some(so) = &self.preload {
            cmd.env("LD_PRELOAD", so);
        }
        let child = cmd
            .arg("-c")
            .arg(node.config())
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        node.child = Some(child);
    }

    /// Runs `garage -c <node i's config> ARGS` and returns its stdout; panics
    /// (with stderr) if it fails.
    fn cli(&self, i: usize, args: &[&str]) -> String {
        let out = self.try_cli(i, args);
        assert!(
            out.status.success(),
            "garage {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn try_cli(&self, i: usize, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(self.nodes[i].config()).args(args);
        run_bounded(cmd, CLI_LIMIT)
    }

    /// Node `i`'s full id (`<hex>@127.0.0.1:PORT`), once it answers on RPC.
    fn node_id(&mut self, i: usize, deadline: Instant) -> String {
        let mut id = String::new();
        let log = self.nodes[i].log();
        wait_until(
            deadline,
            &format!("garage node {} did not answer", i + 1),
            &log,
            || {
                self.check_alive(i);
                let out = self.try_cli(i, &["node", "id", "-q"]);
                id = String::from_utf8_lossy(&out.stdout).trim().to_string();
                out.status.success() && id.contains('@')
            },
        );
        id
    }

    /// Panics, with its log, if node `i` exited (a port taken, a bad config).
    fn check_alive(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!(
                "garage node {} exited ({status}):\n{}",
                i + 1,
                fs::read_to_string(node.log()).unwrap_or_default()
            );
        }
    }

    /// Until every running node sees every running node up.
    fn wait_all_up(&mut self, deadline: Instant) {
        let running: Vec<usize> = (0..3).filter(|&i| self.nodes[i].child.is_some()).collect();
        let want = format!("Storage nodes up: {}", running.len());
        let log = self.nodes[running[0]].log();
        wait_until(
            deadline,
            "garage nodes did not all see each other",
            &log,
            || {
                running.iter().all(|&i| {
                    self.check_alive(i);
                    let out = self.try_cli(i, &["status"]);
                    let health = self.try_cli(i, &["health"]);
                    out.status.success()
                        && String::from_utf8_lossy(&health.stdout)
                            .lines()
                            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == want)
                })
            },
        );
    }

    /// `127.0.0.1:PORT` of node `i`'s S3 API (0, 1 or 2).
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// `s3:http://` spec of the bucket (and `prefix`, if any) through node `i`.
    pub fn spec(&self, i: usize, prefix: &str) -> String {
        let mut s = format!("s3:http://{}/{BUCKET}", self.endpoint(i));
        if !prefix.is_empty() {
            s.push('/');
            s.push_str(prefix);
        }
        s
    }

    pub fn env(&self) -> impl Fn(&str) -> Option<String> + use<> {
        client_env("garage")
    }

    /// Kills node `i` (SIGKILL, as a crash or a pulled plug) and waits for it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again, makes the others dial it, and waits until every
    /// node sees all three and node `i` answers S3 requests.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {} is running", i + 1);
        self.spawn(i);
        let deadline = Instant::now() + START_LIMIT;
        let id = self.node_id(i, deadline);
        // A dial made before the node listens fails and is retried only 30 s
        // later: dial again on every poll until all see all.
        let others: Vec<usize> = (0..3)
            .filter(|&j| j != i && self.nodes[j].child.is_some())
            .collect();
        let want = format!("Storage nodes up: {}", others.len() + 1);
        let log = self.nodes[i].log();
        wait_until(
            deadline,
            "garage nodes did not see the restarted one",
            &log,
            || {
                for &j in &others {
                    let _ = self.try_cli(j, &["node", "connect", &id]);
                }
                self.check_alive(i);
                others.iter().chain([&i]).all(|&j| {
                    let health = self.try_cli(j, &["health"]);
                    health.status.success()
                        && String::from_utf8_lossy(&health.stdout)
                            .lines()
                            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == want)
                })
            },
        );
        self.wait_s3_ready(deadline);
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// One `rclone serve s3` on a directory (any region), stopped on drop.
pub struct Rclone {
    dir: PathBuf,
    child: Child,
    port: u16,
    pub started_in: Duration,
}

impl Rclone {
    pub fn start() -> Rclone {
        let bin = rclone_bin();
        let dir = temp_dir("rclone");
        // Each top-level directory is a bucket.
        fs::create_dir_all(dir.join("data").join(BUCKET)).unwrap();
        let begin = Instant::now();
        let deadline = begin + START_LIMIT;
        let log = dir.join("server.log");
        // A port taken between our probe and rclone's bind makes it exit: try
        // another, three times at most.
        for _ in 0..3 {
            let port = free_port();
            let out = fs::File::create(&log).unwrap();
            let mut child = Command::new(&bin)
                .args(["serve", "s3", "--addr", &format!("127.0.0.1:{port}")])
                .args(["--auth-key", &format!("{KEY_ID},{SECRET}")])
                .args(["--config", "/dev/null"])
                .arg(dir.join("data"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut exited = false;
            wait_until(deadline, "rclone serve s3 did not listen", &log, || {
                if child.try_wait().unwrap().is_some() {
                    exited = true;
                    return true;
                }
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if !exited {
                return Rclone {
                    dir,
                    child,
                    port,
                    started_in: begin.elapsed(),
                };
            }
        }
        panic!(
            "rclone serve s3 exited three times:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn spec(&self, prefix: &str) -> String {
        let mut s = format!("s3:http://{}/{BUCKET}", self.endpoint());
        if !prefix.is_empty() {
            s.push('/');
            s.push_str(prefix);
        }
        s
    }

    pub fn env(&self) -> impl Fn(&str) -> Option<String> + use<> {
        client_env("us-east-1")
    }
}

impl Drop for Rclone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
