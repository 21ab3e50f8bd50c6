//! The command line: argh definitions, settings, and what each command prints.
//!
//! Every setting is looked up in this order: the flag, the environment variable
//! (`CHUTE_*`), the config file (`CHUTE_CONFIG`, default `/etc/chute/chute.conf`,
//! `KEY=value` lines with the same names as the environment variables), then the
//! built-in default.

use crate::crypto::{self, Keys};
use crate::remote::{LocalRemote, Remote};
use crate::{Error, Result, restore, sink, snapshot, units};
use argh::FromArgs;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// chute: zero-knowledge backups between small boards.
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Init(InitCmd),
    Sink(SinkCmd),
    List(ListCmd),
    Restore(RestoreCmd),
    Serve(ServeCmd),
    Key(KeyCmd),
    Verify(crate::verify::VerifyCmd),
    Forget(crate::forget::ForgetCmd),
    Prune(crate::prune::PruneCmd),
    Scrub(crate::scrub::ScrubCmd),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Init(_) => "init",
            Command::Sink(_) => "sink",
            Command::List(_) => "list",
            Command::Restore(_) => "restore",
            Command::Serve(_) => "serve",
            Command::Key(_) => "key",
            Command::Verify(_) => "verify",
            Command::Forget(_) => "forget",
            Command::Prune(_) => "prune",
            Command::Scrub(_) => "scrub",
        }
    }
}

/// Create a new random key file (never replaces one).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "init")]
pub struct InitCmd {
    /// key file (CHUTE_KEY_FILE; default $XDG_CONFIG_HOME/chute/key)
    #[argh(option)]
    pub key_file: Option<PathBuf>,
}

/// Back up PATHs (default: CHUTE_PATHS) as a new snapshot.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "sink")]
pub struct SinkCmd {
    /// files and directories to back up
    #[argh(positional)]
    pub paths: Vec<PathBuf>,
    /// skip names (or, with a '/', whole paths) matching this glob; repeatable (CHUTE_EXCLUDE)
    #[argh(option)]
    pub exclude: Vec<String>,
    /// where snapshots go: a store directory or http://HOST:PORT (CHUTE_REMOTE)
    #[argh(option)]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option)]
    pub key_file: Option<PathBuf>,
    /// domain part of the store path (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node name (CHUTE_NODE; default the host name)
    #[argh(option)]
    pub node: Option<String>,
    /// sealing and upload threads (default: the number of cores)
    #[argh(option)]
    pub threads: Option<usize>,
}

/// List snapshots, oldest first.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListCmd {
    /// print JSON
    #[argh(switch)]
    pub json: bool,
    /// a store directory or http://HOST:PORT (CHUTE_REMOTE)
    #[argh(option)]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option)]
    pub key_file: Option<PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option)]
    pub node: Option<String>,
}

/// Restore a snapshot (an id, a timestamp, or "latest"), or some PATHs of it.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "restore")]
pub struct RestoreCmd {
    /// snapshot id, timestamp, or latest
    #[argh(positional)]
    pub snapshot: String,
    /// only these files or directories (as they were backed up)
    #[argh(positional)]
    pub paths: Vec<PathBuf>,
    /// restore under this directory instead of to the original paths
    #[argh(option)]
    pub to: Option<PathBuf>,
    /// replace existing files
    #[argh(switch)]
    pub force: bool,
    /// a store directory or http://HOST:PORT (CHUTE_REMOTE)
    #[argh(option)]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option)]
    pub key_file: Option<PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option)]
    pub node: Option<String>,
    /// download and write threads (default: the number of cores)
    #[argh(option)]
    pub threads: Option<usize>,
}

/// Serve a store to peers over HTTP.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct ServeCmd {
    /// address to listen on (CHUTE_LISTEN; default 0.0.0.0:2002)
    #[argh(option)]
    pub listen: Option<String>,
    /// store directory (CHUTE_STORE; default /var/lib/chute as root)
    #[argh(option)]
    pub store: Option<PathBuf>,
    /// worker threads (default: the number of cores)
    #[argh(option)]
    pub threads: Option<usize>,
    /// admit a node: NODE=KEY as `chute key auth` prints it on that node; repeatable
    #[argh(option)]
    pub allow: Vec<String>,
    /// file of NODE=KEY [quota=BYTES] lines (CHUTE_ALLOW_FILE)
    #[argh(option)]
    pub allow_file: Option<PathBuf>,
    /// accept unsigned requests from anyone (tests, trusted LANs only)
    #[argh(switch)]
    pub open: bool,
    /// refuse every delete, so a compromised node cannot destroy its history
    #[argh(switch)]
    pub append_only: bool,
    /// with --append-only: allow deletes that prove this key (any file of random
    /// bytes, kept off the nodes' cron jobs) (CHUTE_ADMIN_KEY_FILE)
    #[argh(option)]
    pub admin_key_file: Option<PathBuf>,
    /// cap a node's stored bytes: NODE=BYTES (e.g. pi=20G); repeatable
    #[argh(option)]
    pub quota: Vec<String>,
    /// largest window one PUT may carry (default 64M)
    #[argh(option)]
    pub max_window: Option<String>,
    /// seconds a connection may stay silent before it is dropped (default 30)
    #[argh(option)]
    pub timeout: Option<u64>,
    /// re-hash every stored window in the background, a pass every DURATION (e.g.
    /// 30d; s, m, h, d) (CHUTE_SCRUB_EVERY; default 0: off)
    #[argh(option)]
    pub scrub_every: Option<String>,
    /// most bytes a second the background scrub reads, 0 for no limit (e.g. 20M)
    /// (CHUTE_SCRUB_RATE; default 10M)
    #[argh(option)]
    pub scrub_rate: Option<String>,
}

/// Key utilities.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "key")]
pub struct KeyCmd {
    /// auth: the NODE=KEY line a peer needs to admit this node (it cannot
    /// decrypt anything); path: where the key file is
    #[argh(positional)]
    pub what: String,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option)]
    pub key_file: Option<PathBuf>,
    /// node (CHUTE_NODE; default the host name)
    #[argh(option)]
    pub node: Option<String>,
}

/// Settings from the environment and the config file.
pub struct Settings {
    file: HashMap<String, String>,
}

impl Settings {
    /// Reads the config file named by `CHUTE_CONFIG` (which must exist) or the
    /// default `/etc/chute/chute.conf` (if it exists).
    pub fn load() -> Result<Settings> {
        let (path, required) = match std::env::var_os("CHUTE_CONFIG") {
            Some(p) => (PathBuf::from(p), true),
            None => (PathBuf::from("/etc/chute/chute.conf"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(Error::Usage(format!(
                    "cannot read config {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(Settings {
            file: parse_config(&text).map_err(|(n, l)| {
                Error::Usage(format!(
                    "{}:{n}: expected KEY=value, found {l:?}",
                    path.display()
                ))
            })?,
        })
    }

    /// flag, then environment, then config file.
    pub fn get(&self, flag: Option<String>, name: &str) -> Option<String> {
        flag.or_else(|| std::env::var(name).ok().filter(|v| !v.is_empty()))
            .or_else(|| self.file.get(name).cloned().filter(|v| !v.is_empty()))
    }

    fn path(&self, flag: Option<PathBuf>, name: &str) -> Option<PathBuf> {
        flag.or_else(|| self.get(None, name).map(PathBuf::from))
    }

    fn key_file(&self, flag: Option<PathBuf>) -> Result<PathBuf> {
        match self.path(flag, "CHUTE_KEY_FILE") {
            Some(p) => Ok(p),
            None => Ok(xdg_dir("XDG_CONFIG_HOME", ".config")?.join("chute/key")),
        }
    }

    fn keys(&self, flag: Option<PathBuf>) -> Result<Keys> {
        Ok(Keys::load(&self.key_file(flag)?)?)
    }

    /// The remote, signing requests as `node` when it is a peer.
    fn remote(
        &self,
        flag: Option<String>,
        keys: &Keys,
        node: &str,
        admin: Option<PathBuf>,
    ) -> Result<Box<dyn Remote>> {
        let spec = match self.get(flag, "CHUTE_REMOTE") {
            Some(s) => s,
            None => data_dir()?
                .join("chute/store")
                .to_string_lossy()
                .into_owned(),
        };
        let mut signer = crate::auth::Signer::new(keys, node);
        if let Some(f) = admin {
            let bytes = std::fs::read(&f).map_err(|e| {
                Error::Usage(format!("cannot read admin key file {}: {e}", f.display()))
            })?;
            signer = signer.with_admin(crypto::sha256(&bytes));
        }
        open_remote(&spec, Some(signer))
    }

    fn domain(&self, flag: Option<String>) -> String {
        self.get(flag, "CHUTE_DOMAIN")
            .or_else(blimp_domain)
            .unwrap_or_else(|| "local".into())
    }

    fn node(&self, flag: Option<String>) -> String {
        self.get(flag, "CHUTE_NODE").unwrap_or_else(hostname)
    }
}

/// Opens a remote from `http://HOST:PORT` or a directory path.
pub fn open_remote(spec: &str, signer: Option<crate::auth::Signer>) -> Result<Box<dyn Remote>> {
    if spec.starts_with("http://") || spec.starts_with("https://") {
        Ok(Box::new(crate::remote::HttpRemote::new(spec, signer)?))
    } else if spec.contains("://") {
        Err(Error::Usage(format!(
            "unsupported remote {spec:?}: use a directory or http://HOST:PORT"
        )))
    } else {
        Ok(Box::new(LocalRemote::open(Path::new(spec))?))
    }
}

/// The window size the last sink to this remote settled on, or the default.
fn remembered_window(cache_dir: &Path) -> u64 {
    std::fs::read_to_string(cache_dir.join("window"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map_or(crate::protocol::DEFAULT_WINDOW, |w: u64| {
            w.clamp(crate::protocol::MIN_WINDOW, crate::protocol::MAX_WINDOW)
        })
}

/// `KEY=value` lines; `#` comments and blank lines ignored; optional quotes.
fn parse_config(text: &str) -> std::result::Result<HashMap<String, String>, (usize, String)> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err((n + 1, line.to_string()));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

fn xdg_dir(var: &str, fallback: &str) -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(var).filter(|d| Path::new(d).is_absolute()) {
        return Ok(PathBuf::from(d));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(fallback)),
        None => Err(Error::Usage(format!("neither {var} nor HOME is set"))),
    }
}

/// `$XDG_DATA_HOME`, or `~/.local/share`.
pub fn data_dir() -> Result<PathBuf> {
    xdg_dir("XDG_DATA_HOME", ".local/share")
}

/// `$XDG_CACHE_HOME`, or `~/.cache`.
pub fn cache_dir() -> Result<PathBuf> {
    xdg_dir("XDG_CACHE_HOME", ".cache")
}

/// The prototype's domain source: run bash on blimp-vars.sh and read `DOMAIN`.
fn blimp_domain() -> Option<String> {
    const VARS: &str = "/opt/cloudfleet/data/config/blimp-vars.sh";
    if !Path::new(VARS).exists() {
        return None;
    }
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(". {VARS} >/dev/null 2>&1; printf %s \"$DOMAIN\""))
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let d = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!d.is_empty()).then_some(d)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn threads(flag: Option<usize>) -> usize {
    flag.filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Parses arguments, runs the command, prints errors; returns the exit status.
pub fn main_with_args(args: Vec<String>) -> i32 {
    crate::sys::default_sigpipe();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (cmd_name, rest) = match strs.split_first() {
        Some((c, r)) => (*c, r),
        None => ("chute", &[][..]),
    };
    let cmd_name = Path::new(cmd_name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("chute");
    let cli = match Cli::from_args(&[cmd_name], rest) {
        Ok(c) => c,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    0
                }
                Err(()) => {
                    eprint!("{}", early.output);
                    eprintln!("Run chute --help for usage.");
                    2
                }
            };
        }
    };
    let name = cli.command.name();
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("chute {name}: {e}");
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            e.exit_code()
        }
    }
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> Result<()> {
    let settings = Settings::load()?;
    match cli.command {
        Command::Init(c) => init(&settings, c),
        Command::Sink(c) => sink_cmd(&settings, c),
        Command::List(c) => list(&settings, c),
        Command::Restore(c) => restore_cmd(&settings, c),
        Command::Serve(c) => crate::server::serve_cmd(&settings, c),
        Command::Key(c) => key(&settings, c),
        Command::Verify(c) => crate::verify::cmd(&settings, c),
        Command::Forget(c) => crate::forget::cmd(&settings, c),
        Command::Prune(c) => crate::prune::cmd(&settings, c),
        Command::Scrub(c) => crate::scrub::cmd(&settings, c),
    }
}

fn init(s: &Settings, c: InitCmd) -> Result<()> {
    let path = s.key_file(c.key_file)?;
    match crypto::create_key_file(&path) {
        Ok(()) => {
            println!("created key {}", path.display());
            println!(
                "keep a copy of it somewhere safe, off this machine: without it no backup can be read"
            );
            Ok(())
        }
        Err(crypto::KeyError::Exists(_)) => {
            println!("a key already exists at {}; left as it is", path.display());
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn sink_cmd(s: &Settings, c: SinkCmd) -> Result<()> {
    let mut roots = c.paths;
    if roots.is_empty() {
        if let Some(p) = s.get(None, "CHUTE_PATHS") {
            roots = p.split_whitespace().map(PathBuf::from).collect();
        }
    }
    let mut excludes = c.exclude;
    if let Some(x) = s.get(None, "CHUTE_EXCLUDE") {
        excludes.extend(x.split_whitespace().map(String::from));
    }
    let NodeContext {
        keys,
        remote,
        domain,
        node,
        cache_dir,
    } = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    // Window sizes adapt to a network link; a local store gains nothing from
    // bigger ones but memory.
    let network = remote.describe().starts_with("http://");
    let window = if network {
        remembered_window(&cache_dir)
    } else {
        crate::protocol::DEFAULT_WINDOW
    };
    let opts = sink::Options {
        roots,
        excludes,
        domain,
        node,
        cache_dir,
        host: hostname(),
        threads: threads(c.threads),
        window,
        progress: true,
    };
    let r = sink::run(&keys, remote.as_ref(), &opts)?;
    // Size the next run's windows from how long this run's took (best effort).
    let next = sink::next_window(r.window, r.window_secs);
    if network {
        let _ = std::fs::write(opts.cache_dir.join("window"), format!("{next}\n"));
    }
    let resumed = if r.resumed > 0 {
        format!(", resumed after {}", units::human_bytes(r.resumed))
    } else {
        String::new()
    };
    println!(
        "snapshot {} saved: {} files ({} unchanged), {} dirs, {} in {:.1} s; new data {} in {} chunks, {} already stored; sent {} to {}{resumed}",
        r.short_id,
        r.files,
        r.unchanged_files,
        r.dirs,
        units::human_bytes(r.bytes),
        r.secs,
        units::human_bytes(r.new_bytes),
        r.new_chunks,
        units::human_bytes(r.unchanged_bytes + r.reused_bytes),
        units::human_bytes(r.sent),
        remote.describe()
    );
    let mut missed = Vec::new();
    if !r.skipped.is_empty() {
        missed.push(format!(
            "{} path{} could not be read and {} not in it",
            r.skipped.len(),
            if r.skipped.len() == 1 { "" } else { "s" },
            if r.skipped.len() == 1 { "is" } else { "are" }
        ));
    }
    if !r.changed.is_empty() {
        missed.push(format!(
            "{} file{} changed while being read and may mix versions",
            r.changed.len(),
            if r.changed.len() == 1 { "" } else { "s" }
        ));
    }
    if !missed.is_empty() {
        return Err(Error::Incomplete(format!(
            "snapshot {} saved, but {} (see above)",
            r.short_id,
            missed.join("; ")
        )));
    }
    Ok(())
}

/// One snapshot as `chute list --json` prints it.
#[derive(miniserde::Serialize)]
struct ListItem {
    id: String,
    time: String,
    timestamp: String,
    host: String,
    paths: Vec<String>,
    files: u64,
    dirs: u64,
    bytes: u64,
    blob: String,
}

fn list(s: &Settings, c: ListCmd) -> Result<()> {
    let keys = s.keys(c.key_file)?;
    let (domain, node) = (s.domain(c.domain), s.node(c.node));
    let remote = s.remote(c.remote, &keys, &node, None)?;
    let snaps = snapshot::all(&keys, remote.as_ref(), &domain, &node)?;
    let items: Vec<ListItem> = snaps
        .iter()
        .map(|sn| ListItem {
            id: sn.short_id(),
            time: snapshot::display_time(sn.header.time),
            timestamp: sn.blob.timestamp.clone(),
            host: sn.header.host.clone(),
            paths: sn
                .header
                .roots
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect(),
            files: sn.header.files,
            dirs: sn.header.dirs,
            bytes: sn.header.bytes,
            blob: sn.blob.path(),
        })
        .collect();
    if c.json {
        println!("{}", miniserde::json::to_string(&items));
        return Ok(());
    }
    println!(
        "{:<8}  {:<19}  {:>8}  {:>10}  PATHS",
        "ID", "TIME (UTC)", "FILES", "SIZE"
    );
    for i in &items {
        println!(
            "{:<8}  {:<19}  {:>8}  {:>10}  {}",
            i.id,
            i.time,
            i.files,
            units::human_bytes(i.bytes),
            i.paths.join(" ")
        );
    }
    println!(
        "{} snapshot{}",
        items.len(),
        if items.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

fn restore_cmd(s: &Settings, c: RestoreCmd) -> Result<()> {
    let node = open_node(s, c.key_file, c.remote, c.domain, c.node, None)?;
    let (keys, remote) = (&node.keys, node.remote.as_ref());
    let paths: Vec<PathBuf> = c
        .paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let snap = snapshot::find(keys, remote, &node.domain, &node.node, &c.snapshot, &paths)?;
    let opts = restore::Options {
        to: c.to.clone(),
        paths: c.paths,
        force: c.force,
        threads: threads(c.threads),
        cache_dir: Some(node.cache_dir.clone()),
    };
    let r = restore::run(keys, remote, &snap, &opts)?;
    println!(
        "restored snapshot {}: {} files, {} dirs, {} symlinks, {} in {:.1} s to {}",
        snap.short_id(),
        r.files,
        r.dirs,
        r.symlinks,
        units::human_bytes(r.bytes),
        r.secs,
        c.to.as_deref()
            .map_or("the original paths".into(), |t| t.display().to_string())
    );
    Ok(())
}

fn key(s: &Settings, c: KeyCmd) -> Result<()> {
    match c.what.as_str() {
        "path" => {
            println!("{}", s.key_file(c.key_file)?.display());
            Ok(())
        }
        "auth" => {
            let keys = s.keys(c.key_file)?;
            let node = s.node(c.node);
            let key = crate::auth::node_key(&keys, &node);
            println!("{node}={}", crate::hex::encode(&key));
            Ok(())
        }
        other => Err(Error::Usage(format!(
            "unknown key command {other:?} (try: auth, path)"
        ))),
    }
}

/// What sink, verify, forget and prune work on: the key, the remote, the node's place in
/// it, and this node's cache directory for that remote (the one sink uses).
pub(crate) struct NodeContext {
    pub keys: Keys,
    pub remote: Box<dyn Remote>,
    pub domain: String,
    pub node: String,
    pub cache_dir: PathBuf,
}

/// Resolves the options sink, verify, forget and prune share.
pub(crate) fn open_node(
    s: &Settings,
    key_file: Option<PathBuf>,
    remote: Option<String>,
    domain: Option<String>,
    node: Option<String>,
    admin_key_file: Option<PathBuf>,
) -> Result<NodeContext> {
    let keys = s.keys(key_file)?;
    let (domain, node) = (s.domain(domain), s.node(node));
    let remote = s.remote(remote, &keys, &node, admin_key_file)?;
    let place = format!("{}|{domain}|{node}", remote.describe());
    let cache_dir = cache_dir()?
        .join("chute")
        .join(crate::hex::encode(&crypto::sha256(place.as_bytes())[..8]));
    Ok(NodeContext {
        keys,
        remote,
        domain,
        node,
        cache_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines() {
        let c = parse_config("# c\n\nCHUTE_NODE=pi\nexport CHUTE_DOMAIN=\"a.org\"\n").unwrap();
        assert_eq!(c["CHUTE_NODE"], "pi");
        assert_eq!(c["CHUTE_DOMAIN"], "a.org");
        assert_eq!(parse_config("oops\n"), Err((1, "oops".to_string())));
    }
}
