//! The command line: settings and dispatch here; every command's arguments in
//! `args`, and each command's glue (settings in, its report printed) in a file of
//! its own, so the pipelines never import the command line. `argv` stands on
//! either side of argh: `--opt=value` and `-h` before it, its errors rewritten as
//! `chute <command>: ...` with a did-you-mean and that command's usage after it
//! (exit status 2). `--version` (or `version`) is answered before either.
//!
//! Every setting is looked up in this order: the flag, the environment variable
//! (`CHUTE_*`), the config file (`CHUTE_CONFIG`, default `/etc/chute/chute.conf`,
//! `KEY=value` lines with the same names as the environment variables), then the
//! built-in default.

mod args;
mod argv;
mod backup;
mod forget_cmd;
mod keys;
mod prune_cmd;
mod scrub_cmd;
mod serve_cmd;
mod verify_cmd;

pub use args::*;

use crate::crypto::{self, Keys};
use crate::remote::{LocalRemote, Remote};
use crate::{Error, Result, restore, sink, snapshot, units};
use argh::FromArgs;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
        if spec.starts_with("http://") {
            let open = self
                .get(None, "CHUTE_OPEN_PEER")
                .is_some_and(|v| matches!(v.as_str(), "1" | "yes" | "true"));
            let http = crate::remote::HttpRemote::new(&spec, Some(signer))?;
            return Ok(Box::new(http.allowing_open(open)));
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

/// `chute 0.1.0 (3d121ea, armv7-unknown-linux-gnueabihf)`: the version, the git
/// commit and the target triple this binary was built from (see src/build.rs).
pub fn version() -> String {
    format!(
        "chute {} ({}, {})",
        env!("CARGO_PKG_VERSION"),
        env!("CHUTE_COMMIT"),
        env!("CHUTE_TARGET")
    )
}

/// Parses arguments, runs the command, prints errors; returns the exit status.
/// Usage errors are one line naming the command, then its usage (see `argv`).
pub fn main_with_args(args: Vec<String>) -> i32 {
    crate::sys::default_sigpipe();
    let (cmd_name, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("chute", &[][..]),
    };
    let cmd_name = Path::new(cmd_name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("chute");
    let refused = |r: argv::Refusal| {
        eprintln!("{}", r.line);
        eprint!("\n{}", r.usage);
        2
    };
    // Needs no settings: it answers even with a broken config file.
    if let [only] = rest {
        if matches!(only.as_str(), "--version" | "-V" | "version") {
            println!("{}", version());
            return 0;
        }
    }
    let rest = match argv::normalize(rest) {
        Ok(r) => r,
        Err(r) => return refused(r),
    };
    let strs: Vec<&str> = rest.iter().map(String::as_str).collect();
    let cli = match Cli::from_args(&[cmd_name], &strs) {
        Ok(c) => c,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    print!("{}", early.output);
                    0
                }
                Err(()) => refused(argv::rewrite(&rest, &early.output)),
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
        Command::Init(c) => keys::init(&settings, c),
        Command::Sink(c) => backup::sink_cmd(&settings, c),
        Command::List(c) => backup::list(&settings, c),
        Command::Restore(c) => backup::restore_cmd(&settings, c),
        Command::Serve(c) => serve_cmd::serve_cmd(&settings, c),
        Command::Key(c) => keys::key(&settings, c),
        Command::Verify(c) => verify_cmd::cmd(&settings, c),
        Command::Forget(c) => forget_cmd::cmd(&settings, c),
        Command::Prune(c) => prune_cmd::cmd(&settings, c),
        Command::Scrub(c) => scrub_cmd::cmd(&settings, c),
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
