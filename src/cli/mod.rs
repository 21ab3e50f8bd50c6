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
//! built-in default. Every key the file may hold is in [`SETTINGS`]; any other is
//! an error naming the file and line, so a misspelt key cannot pass unnoticed.
//!
//! A value in the file is taken as the shell would take `KEY=value`'s when it is
//! one quoted string (`"..."` or `'...'`: the quotes are removed), else as written.
//! List settings (`CHUTE_PATHS`, `CHUTE_EXCLUDE`) are then split into words as the
//! shell splits a command line, the same way whether they come from the file or the
//! environment: blanks separate words, `"..."` and `'...'` group (a path with a
//! space), a backslash escapes the next character (in `"..."` only `"`, `\`, `$`
//! and `` ` ``). So `CHUTE_PATHS=/etc "/srv/my files"` is two paths, and so is
//! `CHUTE_PATHS="/etc /home"`; one path with a space on its own needs quotes of its
//! own inside, as in the environment: `CHUTE_PATHS="'/srv/my files'"`.
//!
//! How much a command prints ([`Show`]): the commands that report a result take
//! `--json` (stdout holds JSON only: one object, or for the streamed listings `ls`,
//! `find` and `diff` one object a line; each command's schema is in the `//!` doc
//! of its file here). In every schema field names are snake_case, sizes are bytes
//! as integers, times RFC 3339 UTC (`2026-12-02T17:57:10Z`) and snapshot ids full
//! (64 hex digits; tables show the first 8, and any prefix names a snapshot).
//! Warnings and errors stay on stderr, and the exit status means what it always
//! does. sink, restore, verify, forget, prune and scrub also take `--quiet` (`-q`:
//! nothing on stdout, no progress, only failures on stderr); sink and restore take
//! `--verbose` (`-v`: a line per file written). `--quiet` with `--json` or
//! `--verbose`, or `--json` with `--verbose`, is refused (exit 2): one output each.

mod args;
mod argv;
mod backup;
mod browse_cmd;
mod forget_cmd;
mod generate;
mod keys;
mod prune_cmd;
mod scrub_cmd;
mod serve_cmd;
mod status_cmd;
mod verify_cmd;

pub use args::*;

use crate::crypto::{self, Keys};
use crate::remote::{LocalRemote, Remote};
use crate::{Error, Result, restore, sink, snapshot, units};
use argh::FromArgs;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Every setting chute reads through [`Settings`], i.e. every key the config file
/// may hold (the environment's `CHUTE_TEST_*` hooks are not settings).
pub const SETTINGS: &[&str] = &[
    "CHUTE_ADMIN_KEY_FILE",
    "CHUTE_ALLOW_FILE",
    "CHUTE_COMPRESSION",
    "CHUTE_DOMAIN",
    "CHUTE_EXCLUDE",
    "CHUTE_EXCLUDE_CACHES",
    "CHUTE_EXCLUDE_FILE",
    "CHUTE_FS_SNAPSHOT",
    "CHUTE_KEY_FILE",
    "CHUTE_LIMIT_DOWNLOAD",
    "CHUTE_LIMIT_UPLOAD",
    "CHUTE_LISTEN",
    "CHUTE_MAX_CONNECTIONS",
    "CHUTE_MAX_PER_ADDRESS",
    "CHUTE_NAME",
    "CHUTE_NODE",
    "CHUTE_ONE_FILE_SYSTEM",
    "CHUTE_OPEN_PEER",
    "CHUTE_PATHS",
    "CHUTE_PATHS_FILE",
    "CHUTE_RATE_BURST",
    "CHUTE_RATE_LIMIT",
    "CHUTE_REMOTE",
    "CHUTE_S3_CREDENTIALS_FILE",
    "CHUTE_S3_REGION",
    "CHUTE_S3_VIRTUAL_HOST",
    "CHUTE_SCRUB_EVERY",
    "CHUTE_SCRUB_RATE",
    "CHUTE_STORE",
    "CHUTE_TAG",
    "CHUTE_UI_TOKEN_FILE",
];

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
            file: parse_config(&text)
                .map_err(|(n, why)| Error::Usage(format!("{}:{n}: {why}", path.display())))?,
        })
    }

    /// flag, then environment, then config file.
    pub fn get(&self, flag: Option<String>, name: &str) -> Option<String> {
        debug_assert!(SETTINGS.contains(&name), "{name} missing from SETTINGS");
        flag.or_else(|| std::env::var(name).ok().filter(|v| !v.is_empty()))
            .or_else(|| self.file.get(name).cloned().filter(|v| !v.is_empty()))
    }

    /// A list setting (environment, then config file), split into words as the
    /// shell does (see the module doc); empty if unset.
    pub fn list(&self, name: &str) -> Result<Vec<String>> {
        match self.get(None, name) {
            Some(v) => split_words(&v).map_err(|e| Error::Usage(format!("{name}: {e}"))),
            None => Ok(Vec::new()),
        }
    }

    /// Where the remote is: `--remote`, CHUTE_REMOTE, or the default local store.
    fn remote_spec(&self, flag: Option<String>) -> Result<String> {
        match self.get(flag, "CHUTE_REMOTE") {
            Some(s) => Ok(s),
            None => Ok(data_dir()?
                .join("chute/store")
                .to_string_lossy()
                .into_owned()),
        }
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
        // Where a missing file was named, so the hint does not say to pass what was.
        let given = if flag.is_some() {
            Some("--key-file")
        } else if std::env::var("CHUTE_KEY_FILE").is_ok_and(|v| !v.is_empty()) {
            Some("CHUTE_KEY_FILE")
        } else if self
            .file
            .get("CHUTE_KEY_FILE")
            .is_some_and(|v| !v.is_empty())
        {
            Some("CHUTE_KEY_FILE in the config file")
        } else {
            None
        };
        let path = self.key_file(flag)?;
        Keys::load(&path).map_err(|e| match (e, given) {
            (e @ crypto::KeyError::Missing(_), Some(whence)) => Error::Hinted(
                Box::new(e.into()),
                format!(
                    "{whence} names {}, which does not exist: check the path (a new key from `chute init` cannot read backups sealed with another)",
                    path.display()
                ),
            ),
            (e, _) => e.into(),
        })
    }

    /// The remote, signing requests as `node` when it is a peer.
    fn remote(
        &self,
        flag: Option<String>,
        keys: &Keys,
        node: &str,
        admin: Option<PathBuf>,
    ) -> Result<Box<dyn Remote>> {
        let spec = self.remote_spec(flag)?;
        let mut signer = crate::auth::Signer::new(keys, node);
        if let Some(f) = admin {
            let bytes = std::fs::read(&f).map_err(|e| {
                Error::Usage(format!("cannot read admin key file {}: {e}", f.display()))
            })?;
            signer = signer.with_admin(crypto::sha256(&bytes));
        }
        if spec.starts_with("http://") {
            let open = self.yes("CHUTE_OPEN_PEER")?;
            let http = crate::remote::HttpRemote::new(&spec, Some(signer))?;
            return Ok(Box::new(http.allowing_open(open)));
        }
        open_remote(self, &spec, Some(signer))
    }

    /// The store `spec` names, opened in this process: a bucket's prefix
    /// (`s3:http://HOST[:PORT]/BUCKET[/PREFIX]`; the bucket must exist) or a
    /// directory, created when `create` says so (serve, init; else it must be a
    /// store already, its marker there). Says whether it was created.
    pub fn open_store(&self, spec: &str, create: bool) -> Result<(crate::store::Store, bool)> {
        if spec.starts_with("s3:") {
            let env = |k: &str| {
                if k.starts_with("CHUTE_") {
                    self.get(None, k)
                } else {
                    std::env::var(k).ok()
                }
            };
            let mut config = crate::s3::Config::from_env(spec, &env)?;
            let virtual_host = self.yes("CHUTE_S3_VIRTUAL_HOST")?;
            config.spec = config.spec.virtual_host(virtual_host);
            if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!("chute: {}", crate::s3::PLAIN_HTTP_WARNING);
            }
            let (backend, created) = if create {
                crate::store::S3Store::init(config)?
            } else {
                (crate::store::S3Store::open(config)?, false)
            };
            let store = crate::store::Store::over(std::sync::Arc::new(backend));
            return Ok((store, created));
        }
        let root = Path::new(spec);
        if create {
            Ok(crate::store::Store::init(root)?)
        } else {
            Ok((crate::store::Store::open(root)?, false))
        }
    }

    /// A bandwidth limit in bytes a second (`2M`, `500K`), if one is set; 0 and
    /// anything that is not a size are refused.
    fn rate(&self, flag: Option<String>, name: &str, opt: &str) -> Result<Option<u64>> {
        let Some(v) = self.get(flag, name) else {
            return Ok(None);
        };
        match units::parse_bytes(v.trim()) {
            Ok(0) => Err(Error::Usage(format!(
                "{opt} {v:?}: a limit must be above 0 bytes a second (unset it for none)"
            ))),
            Ok(r) if r < crate::throttle::MIN_UPLOAD && opt == "--limit-upload" => {
                Err(Error::Usage(format!(
                    "{opt} {v:?}: at least 32K (a peer drops a request body slower than 16 KiB/s)"
                )))
            }
            Ok(r) => Ok(Some(r)),
            Err(e) => Err(Error::Usage(format!("{opt}: {e}"))),
        }
    }

    /// A yes/no setting: `1`, `yes`, `true` or `0`, `no`, `false`; unset is no.
    fn yes(&self, name: &str) -> Result<bool> {
        match self.get(None, name).as_deref() {
            None | Some("0" | "no" | "false") => Ok(false),
            Some("1" | "yes" | "true") => Ok(true),
            Some(v) => Err(Error::Usage(format!(
                "{name}={v:?}: expected 1, yes, true, 0, no or false"
            ))),
        }
    }

    /// The store `chute serve` and `chute scrub` work on: `--store`,
    /// CHUTE_STORE, /var/lib/chute for root, else the user's data directory.
    fn store_spec(&self, flag: Option<PathBuf>) -> Result<String> {
        Ok(
            match self.get(
                flag.map(|p| p.to_string_lossy().into_owned()),
                "CHUTE_STORE",
            ) {
                Some(p) => p,
                None if crate::sys::is_root() => "/var/lib/chute".into(),
                None => data_dir()?
                    .join("chute/store")
                    .to_string_lossy()
                    .into_owned(),
            },
        )
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

/// How much a command prints (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Show {
    Quiet,
    Normal,
    Verbose,
    Json,
}

impl Show {
    /// The mode a command's `--json`, `--quiet` and `--verbose` ask for; two of
    /// them at once is a usage error.
    pub(crate) fn of(json: bool, quiet: bool, verbose: bool) -> Result<Show> {
        match (json, quiet, verbose) {
            (false, false, false) => Ok(Show::Normal),
            (true, false, false) => Ok(Show::Json),
            (false, true, false) => Ok(Show::Quiet),
            (false, false, true) => Ok(Show::Verbose),
            _ => Err(Error::Usage(
                "give one of --json, --quiet and --verbose".into(),
            )),
        }
    }

    /// The progress line on a terminal: none with `--quiet` or `--json`.
    pub(crate) fn progress(self) -> crate::progress::Show {
        match self {
            Show::Quiet | Show::Json => crate::progress::Show::Off,
            Show::Normal | Show::Verbose => crate::progress::Show::Terminal,
        }
    }

    /// Whether the report for people is printed.
    pub(crate) fn text(self) -> bool {
        matches!(self, Show::Normal | Show::Verbose)
    }

    /// Prints `v` as one line of JSON when that is the mode.
    pub(crate) fn json<T: miniserde::Serialize>(self, v: &T) {
        if self == Show::Json {
            println!("{}", miniserde::json::to_string(v));
        }
    }
}

/// Opens a remote: a peer (`http://HOST:PORT`), a bucket (`s3:http://…`) or the
/// directory of an existing store.
pub fn open_remote(
    s: &Settings,
    spec: &str,
    signer: Option<crate::auth::Signer>,
) -> Result<Box<dyn Remote>> {
    if spec.starts_with("http://") || spec.starts_with("https://") {
        Ok(Box::new(crate::remote::HttpRemote::new(spec, signer)?))
    } else {
        if !spec.starts_with("s3:") {
            check_local_spec(spec)?;
        }
        Ok(Box::new(LocalRemote::over(s.open_store(spec, false)?.0)))
    }
}

/// Refuses a remote that is neither http:// nor plausibly a directory: another
/// scheme, or a `HOST:PORT` without one (which would otherwise name a local
/// folder `peer:2002`), unless a directory of that name exists.
fn check_local_spec(spec: &str) -> Result<()> {
    if spec.is_empty() {
        // Not the working directory by accident (an unset shell variable).
        return Err(Error::Usage(
            "an empty remote: give a store directory (\".\" for this one), http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX]".into(),
        ));
    }
    if spec.contains("://") {
        return Err(Error::Usage(format!(
            "unsupported remote {spec:?}: use a directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX]"
        )));
    }
    if looks_like_host_port(spec) && !Path::new(spec).is_dir() {
        let authority = spec.split('/').next().unwrap_or(spec);
        return Err(Error::Usage(format!(
            "remote {spec:?} is neither http:// nor a store directory: did you mean http://{authority}? (a directory named so: ./{spec})"
        )));
    }
    Ok(())
}

/// `HOST:PORT` or `HOST:PORT/...` (`peer:2002`, `192.168.1.20:2002`, `[::1]:2002`).
fn looks_like_host_port(spec: &str) -> bool {
    let authority = spec.split('/').next().unwrap_or("");
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    host_ok && !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// Splits a list setting into words as the shell does (see the module doc).
pub fn split_words(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(format!("unterminated ' in {s:?}")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(format!("unterminated \" in {s:?}")),
                        },
                        Some(c) => w.push(c),
                        None => return Err(format!("unterminated \" in {s:?}")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("a lone \\ at the end of {s:?}")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
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

/// `KEY=value` lines of known [`SETTINGS`]; `#` comments and blank lines ignored;
/// a value that is one quoted string is unquoted. An error is its line number and
/// what is wrong.
fn parse_config(text: &str) -> std::result::Result<HashMap<String, String>, (usize, String)> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err((n + 1, format!("expected KEY=value, found {line:?}")));
        };
        let k = k.trim();
        if !SETTINGS.contains(&k) {
            let near = SETTINGS
                .iter()
                .map(|s| (edit_distance(&k.to_ascii_uppercase(), s), s))
                .min()
                .filter(|(d, _)| *d <= 3)
                .map_or(String::new(), |(_, s)| format!(" (did you mean {s}?)"));
            return Err((n + 1, format!("unknown setting {k}{near}")));
        }
        out.insert(
            k.to_string(),
            unquote_whole(strip_comment(v).trim()).to_string(),
        );
    }
    Ok(out)
}

/// `v` (what follows `KEY=`) up to a `#` that starts an unquoted word: a comment,
/// as in the shell (`KEY=#x` is the value `#x`, `KEY=a #x` the value `a`).
fn strip_comment(v: &str) -> &str {
    let (mut quote, mut escaped, mut word_start) = (None, false, false);
    for (i, c) in v.char_indices() {
        let was_escaped = std::mem::take(&mut escaped);
        match (quote, c) {
            _ if was_escaped => {}
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => escaped = true,
            (Some(_), _) => {}
            (None, '#') if word_start => return &v[..i],
            (None, '"' | '\'') => quote = Some(c),
            _ => {}
        }
        word_start = quote.is_none() && !was_escaped && c.is_whitespace();
    }
    v
}

/// `v` without the quotes around it if it is one quoted string (`"a b"`, not
/// `"a" "b"`), as the shell would read it after `KEY=`.
fn unquote_whole(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            if !inner.contains(q) {
                return inner;
            }
        }
    }
    v
}

/// Levenshtein distance, for did-you-mean (short names only).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
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
    flag.filter(|&t| t > 0).unwrap_or_else(crate::sys::cores)
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
    crate::sys::fix_mmap_threshold();
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

/// Set by a command's `--quiet` before it opens anything: notes printed where
/// the command's mode is not at hand (the plain-HTTP S3 warning) are left out.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs one parsed command.
pub fn run(cli: Cli) -> Result<()> {
    let quiet = match &cli.command {
        Command::Sink(c) => c.quiet,
        Command::Restore(c) => c.quiet,
        Command::Verify(c) => c.quiet,
        Command::Forget(c) => c.quiet,
        Command::Prune(c) => c.quiet,
        Command::Scrub(c) => c.quiet,
        _ => false,
    };
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
    let settings = Settings::load()?;
    // Before any remote is opened: its clients size their timeouts by them.
    let limits = match &cli.command {
        Command::Sink(c) => Some((c.limit_upload.clone(), c.limit_download.clone())),
        Command::Prune(c) => Some((c.limit_upload.clone(), c.limit_download.clone())),
        Command::Restore(c) => Some((None, c.limit_download.clone())),
        Command::Verify(c) => Some((None, c.limit_download.clone())),
        Command::Ls(c) => Some((None, c.limit_download.clone())),
        Command::Stats(c) => Some((None, c.limit_download.clone())),
        Command::Find(c) => Some((None, c.limit_download.clone())),
        Command::Diff(c) => Some((None, c.limit_download.clone())),
        _ => None,
    };
    if let Some((up, down)) = limits {
        crate::throttle::set(
            settings.rate(up, "CHUTE_LIMIT_UPLOAD", "--limit-upload")?,
            settings.rate(down, "CHUTE_LIMIT_DOWNLOAD", "--limit-download")?,
        );
    }
    match cli.command {
        Command::Init(c) => keys::init(&settings, c),
        Command::Sink(c) => backup::sink_cmd(&settings, c),
        Command::List(c) => backup::list(&settings, c),
        Command::Status(c) => status_cmd::cmd(&settings, c),
        Command::Restore(c) => backup::restore_cmd(&settings, c),
        Command::Ls(c) => browse_cmd::ls(&settings, c),
        Command::Find(c) => browse_cmd::find(&settings, c),
        Command::Diff(c) => browse_cmd::diff(&settings, c),
        Command::Stats(c) => browse_cmd::stats(&settings, c),
        Command::Serve(c) => serve_cmd::serve_cmd(&settings, c),
        Command::Key(c) => keys::key(&settings, c),
        Command::Verify(c) => verify_cmd::cmd(&settings, c),
        Command::Forget(c) => forget_cmd::cmd(&settings, c),
        Command::Prune(c) => prune_cmd::cmd(&settings, c),
        Command::Scrub(c) => scrub_cmd::cmd(&settings, c),
        Command::Generate(c) => generate::cmd(c),
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
    fn one_output_mode_at_a_time() {
        assert_eq!(Show::of(false, false, false).unwrap(), Show::Normal);
        assert_eq!(Show::of(true, false, false).unwrap(), Show::Json);
        assert_eq!(Show::of(false, true, false).unwrap(), Show::Quiet);
        assert_eq!(Show::of(false, false, true).unwrap(), Show::Verbose);
        for (j, q, v) in [
            (true, true, false),
            (true, false, true),
            (false, true, true),
        ] {
            assert!(matches!(Show::of(j, q, v), Err(Error::Usage(_))));
        }
        assert!(Show::Verbose.text() && !Show::Quiet.text() && !Show::Json.text());
    }

    #[test]
    fn a_comment_after_a_value_is_not_part_of_it() {
        let c = parse_config(
            "CHUTE_PATHS=/data   # my data\nCHUTE_EXCLUDE=#*# \"a #b\" c\\ #d # e\nCHUTE_NODE= # none\n",
        )
        .unwrap();
        assert_eq!(c["CHUTE_PATHS"], "/data");
        assert_eq!(
            split_words(&c["CHUTE_EXCLUDE"]).unwrap(),
            ["#*#", "a #b", "c #d"]
        );
        assert_eq!(c["CHUTE_NODE"], "");
        let typo = parse_config("chute_paths=/x\n").unwrap_err();
        assert!(typo.1.contains("did you mean CHUTE_PATHS?"), "{typo:?}");
    }

    #[test]
    fn config_lines() {
        let c = parse_config("# c\n\nCHUTE_NODE=pi\nexport CHUTE_DOMAIN=\"a.org\"\n").unwrap();
        assert_eq!(c["CHUTE_NODE"], "pi");
        assert_eq!(c["CHUTE_DOMAIN"], "a.org");
        assert!(parse_config("oops\n").is_err_and(|(n, _)| n == 1));
        let (n, why) = parse_config("# c\nCHUTE_NODE=pi\nCHUTE_REMTOE=/x\n").unwrap_err();
        assert_eq!(n, 3);
        assert_eq!(
            why,
            "unknown setting CHUTE_REMTOE (did you mean CHUTE_REMOTE?)"
        );
        assert!(parse_config("HOME=/x\n").is_err_and(|(_, w)| !w.contains("mean")));
        // A list keeps its inner quotes for the word split.
        let c = parse_config("CHUTE_PATHS=\"/a dir/x\" '/b c'\nCHUTE_EXCLUDE='*.tmp'\n").unwrap();
        assert_eq!(c["CHUTE_PATHS"], "\"/a dir/x\" '/b c'");
        assert_eq!(c["CHUTE_EXCLUDE"], "*.tmp");
    }

    #[test]
    fn words_split_as_the_shell_does() {
        let w = |s: &str| split_words(s).unwrap();
        assert_eq!(w("/etc  /home\t/root "), ["/etc", "/home", "/root"]);
        assert_eq!(w("\"/a dir/x\" '/b c'"), ["/a dir/x", "/b c"]);
        assert_eq!(w(r"/a\ b x'y z'w"), ["/a b", "xy zw"]);
        assert_eq!(w(r#""a\"b\n" '\'"#), ["a\"b\\n", "\\"]);
        assert_eq!(w("'' x"), ["", "x"]);
        assert!(w("").is_empty());
        assert!(split_words("'open").is_err());
        assert!(split_words("\"open").is_err());
        assert!(split_words("end\\").is_err());
    }

    /// The examples setup/chute.conf gives for the quoting rule.
    #[test]
    fn documented_quoting_examples() {
        let paths = |line: &str| split_words(&parse_config(line).unwrap()["CHUTE_PATHS"]).unwrap();
        assert_eq!(
            paths(r#"CHUTE_PATHS=/etc "/srv/my files" '/home/pi/old photos'"#),
            ["/etc", "/srv/my files", "/home/pi/old photos"]
        );
        assert_eq!(paths(r#"CHUTE_PATHS="/etc /home""#), ["/etc", "/home"]);
        assert_eq!(paths(r#"CHUTE_PATHS="'/srv/my files'""#), ["/srv/my files"]);
        assert_eq!(paths(r"CHUTE_PATHS=/srv/my\ files"), ["/srv/my files"]);
        assert_eq!(paths(r#"CHUTE_PATHS="/a b" "/c d""#), ["/a b", "/c d"]);
    }

    #[test]
    fn host_port_is_not_a_directory() {
        for s in [
            "peer:2002",
            "localhost:2002",
            "192.168.1.20:2002",
            "[::1]:2002",
            "pi.lan:2002/x",
        ] {
            assert!(looks_like_host_port(s), "{s}");
        }
        for s in [
            "/mnt/backup",
            "store",
            "a:b",
            "./peer:2002",
            "/x/peer:2002",
            "c:",
        ] {
            assert!(!looks_like_host_port(s), "{s}");
        }
    }
}
