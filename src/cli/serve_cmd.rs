//! `chute serve` from the command line: settings in, a running server.

use super::Settings;
use super::args::*;
use crate::auth;
use crate::server::*;
use crate::store::{self, Store};
use std::collections::HashMap;
use std::time::Duration;

/// `chute serve` from the command line.
pub(super) fn serve_cmd(s: &Settings, c: ServeCmd) -> crate::Result<()> {
    let listen = s
        .get(c.listen, "CHUTE_LISTEN")
        .unwrap_or_else(|| "0.0.0.0:2002".into());
    let root = s.store_spec(c.store)?;
    // Settings first: a typo must not leave a new empty store behind.
    let scrub_every = match s.get(c.scrub_every, "CHUTE_SCRUB_EVERY") {
        Some(d) => crate::units::parse_duration(&d).ok_or_else(|| {
            crate::Error::Usage(format!(
                "--scrub-every {d:?}: expected 0 or a number with s, m, h or d (e.g. 30d)"
            ))
        })?,
        None => 0,
    };
    if scrub_every > 0 && root.starts_with("s3:") {
        return Err(crate::Error::Usage(format!(
            "--scrub-every: a bucket has no background scrub (it keeps no progress file); run `chute scrub --store {root}` from cron instead"
        )));
    }
    let scrub_rate = match s.get(c.scrub_rate, "CHUTE_SCRUB_RATE") {
        Some(r) => crate::units::parse_bytes(&r)
            .map_err(|e| crate::Error::Usage(format!("--scrub-rate: {e}")))?,
        None => crate::scrub::DEFAULT_RATE,
    };
    let count = |flag: Option<String>, env: &str, name: &str, default: usize| match s.get(flag, env)
    {
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                crate::Error::Usage(format!("--{name} {v:?}: expected a count above 0"))
            }),
        None => Ok(default),
    };
    let max_connections = count(
        c.max_connections,
        "CHUTE_MAX_CONNECTIONS",
        "max-connections",
        crate::server::DEFAULT_MAX_CONNECTIONS,
    )?;
    let max_per_address = count(
        c.max_per_address,
        "CHUTE_MAX_PER_ADDRESS",
        "max-per-address",
        crate::server::DEFAULT_MAX_PER_ADDRESS,
    )?;
    let count = |flag: &str, v: Option<String>, default: u32| match v {
        Some(v) => v
            .trim()
            .parse::<u32>()
            .map_err(|_| crate::Error::Usage(format!("{flag} {v:?}: expected a whole number"))),
        None => Ok(default),
    };
    let rate = auth::RateLimit {
        per_sec: count(
            "--rate-limit",
            s.get(c.rate_limit, "CHUTE_RATE_LIMIT"),
            auth::DEFAULT_RATE,
        )?,
        burst: count(
            "--rate-burst",
            s.get(c.rate_burst, "CHUTE_RATE_BURST"),
            auth::DEFAULT_BURST,
        )?,
    };
    let threads = c
        .threads
        .filter(|&t| t > 0)
        .unwrap_or_else(crate::sys::cores);
    let mut allow = HashMap::new();
    let mut lines: Vec<(String, String)> = c
        .allow
        .iter()
        .map(|l| ("--allow".to_string(), l.clone()))
        .collect();
    if let Some(file) = s.get(
        c.allow_file.map(|p| p.to_string_lossy().into_owned()),
        "CHUTE_ALLOW_FILE",
    ) {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| crate::Error::Usage(format!("cannot read allow file {file}: {e}")))?;
        for (n, l) in text.lines().enumerate() {
            let l = l.trim();
            if !l.is_empty() && !l.starts_with('#') {
                lines.push((format!("{file}:{}", n + 1), l.to_string()));
            }
        }
    }
    for (whence, line) in lines {
        let (node, admitted) =
            auth::parse_allow(&line).map_err(|e| crate::Error::Usage(format!("{whence}: {e}")))?;
        allow.insert(node, admitted);
    }
    for q in &c.quota {
        let (node, bytes) = q
            .split_once('=')
            .ok_or_else(|| crate::Error::Usage(format!("--quota {q:?}: expected NODE=BYTES")))?;
        let bytes = crate::units::parse_bytes(bytes)
            .map_err(|e| crate::Error::Usage(format!("--quota: {e}")))?;
        allow
            .get_mut(node)
            .ok_or_else(|| {
                crate::Error::Usage(format!("--quota {node}: that node is not allowed"))
            })?
            .quota = Some(bytes);
    }
    let admin = match s.get(
        c.admin_key_file.map(|p| p.to_string_lossy().into_owned()),
        "CHUTE_ADMIN_KEY_FILE",
    ) {
        Some(f) => Some(crate::crypto::sha256(&std::fs::read(&f).map_err(|e| {
            crate::Error::Usage(format!("cannot read admin key file {f}: {e}"))
        })?)),
        None => None,
    };
    let max_window = match c.max_window.as_deref() {
        Some(m) => crate::units::parse_bytes(m)
            .map_err(|e| crate::Error::Usage(format!("--max-window: {e}")))?,
        // A bucket's windows are held in memory until their PUT: a server's
        // threads hold at most a client's largest window each.
        None if root.starts_with("s3:") => crate::protocol::MAX_WINDOW,
        None => store::DEFAULT_MAX_WINDOW,
    };
    let mut names = c.name;
    if names.is_empty() {
        if let Some(v) = s.get(None, "CHUTE_NAME") {
            names.extend(v.split(',').map(|n| n.trim().to_string()));
        }
    }
    names.retain(|n| !n.is_empty());
    for n in &names {
        if n.contains('/') || n.contains(char::is_whitespace) {
            return Err(crate::Error::Usage(format!(
                "--name {n:?}: expected a host name as nodes give it in --remote http://NAME[:PORT]"
            )));
        }
    }
    let ui = ui_settings(s, &c.ui_allow, c.ui_token_file, c.ui_stale)?;
    // After the bind (see `serve`): the served store may be created here, 0700.
    let open = || -> crate::Result<Store> {
        let (store, created) = s.open_store(&root, true)?;
        if created {
            crate::server::log(&format!("chute serve: created store {root}"));
        }
        Ok(store)
    };
    serve(
        open,
        &Config {
            listen,
            threads,
            max_window,
            allow,
            open: c.open,
            append_only: c.append_only,
            admin,
            timeout: Duration::from_secs(c.timeout.unwrap_or(30).max(1)),
            max_connections,
            max_per_address,
            scrub: (scrub_every > 0).then_some(crate::scrub::Background {
                every: scrub_every,
                rate: scrub_rate,
            }),
            rate,
            names,
            ui,
            log_requests: c.log_requests,
        },
    )
}

/// `--ui-allow`, `--ui-token-file` and `--ui-stale`, checked.
fn ui_settings(
    s: &Settings,
    allow: &[String],
    token_file: Option<std::path::PathBuf>,
    stale: Option<String>,
) -> crate::Result<crate::ui::Settings> {
    use crate::ui::access::{Cidr, MIN_TOKEN, Rules};
    let allow = allow
        .iter()
        .map(|a| Cidr::parse(a).map_err(|e| crate::Error::Usage(format!("--ui-allow {e}"))))
        .collect::<crate::Result<Vec<_>>>()?;
    let token = match s.get(
        token_file.map(|p| p.to_string_lossy().into_owned()),
        "CHUTE_UI_TOKEN_FILE",
    ) {
        Some(f) => {
            let text = std::fs::read_to_string(&f).map_err(|e| {
                crate::Error::Usage(format!("cannot read --ui-token-file {f}: {e}"))
            })?;
            let t = text.trim();
            if t.len() < MIN_TOKEN {
                return Err(crate::Error::Usage(format!(
                    "--ui-token-file {f}: the token must be at least {MIN_TOKEN} bytes (e.g. head -c 24 /dev/urandom | base64 > {f})"
                )));
            }
            Some(t.to_string())
        }
        None => None,
    };
    let stale = match stale {
        Some(d) => crate::units::parse_duration(&d)
            .filter(|&d| d > 0)
            .ok_or_else(|| {
                crate::Error::Usage(format!(
                    "--ui-stale {d:?}: expected a number with s, m, h or d (e.g. 36h)"
                ))
            })?,
        None => crate::ui::DEFAULT_STALE,
    };
    Ok(crate::ui::Settings {
        rules: Rules {
            allow,
            token,
            no_loopback: crate::testhooks::ui_not_loopback(),
        },
        stale,
        own: own_settings(s),
    })
}

/// The own view's settings, when this machine is also a node that backs up:
/// a key file this process can open and paths to back up (see
/// [`crate::ui::own`]). Anything missing leaves the view off, silently: a
/// store-only peer is the common case.
fn own_settings(s: &Settings) -> Option<crate::ui::own::OwnSettings> {
    let key = s.key_file(None).ok()?;
    std::fs::File::open(&key).ok()?;
    let mut paths = s.list("CHUTE_PATHS").ok()?;
    if let Some(f) = s.get(None, "CHUTE_PATHS_FILE") {
        paths.push(format!("the paths in {f}"));
    }
    if paths.is_empty() {
        return None;
    }
    Some(crate::ui::own::OwnSettings {
        exe: std::env::current_exe().ok()?,
        node: s.node(None),
        paths,
    })
}
