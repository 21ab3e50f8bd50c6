//! The management side of `chute serve`: what a peer's owner sees of the store it
//! keeps for others. The server hands every path outside `/chute/blob/` here
//! ([`handle`]); the blob API and its node signatures are untouched.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the page ([`page`]): every node with its bytes, quota, snapshots, last commit, uploads; the disk's free space, the scrub, uptime, version, limits |
//! | `GET /chute/status` | the same as JSON (schema in [`status`]) |
//! | `GET /metrics` | Prometheus text format 0.0.4, `chute_` names (see [`status::metrics`]) |
//! | `GET /login` | the token form |
//! | `POST /login` | form field `token`: right, `303` to `/` with the session cookie; wrong, `403` and the form again; after [`LOGIN_FAILURES`] wrong ones in [`LOGIN_WINDOW`], `429` until the window ends |
//! | `POST /logout` | `303` to `/login`, the cookie cleared |
//! | `POST /sink` | the "Take new snapshot" button ([`own`]): starts a sink unless one from the page runs; `303` to `/sink`; `409` when the server runs without its node's key and paths |
//! | `GET /sink` | that sink's progress page: refreshes itself every 2 s while it runs, then shows how it ended and its summary line |
//!
//! `HEAD` is answered wherever `GET` is; other methods get `405` with `Allow`.
//! Any other path outside `/chute/blob/` stays a JSON `404`.
//!
//! Access ([`access`]): the page, status and metrics answer loopback clients,
//! `--ui-allow` networks, and holders of the `--ui-token-file` token (bearer
//! header or the login form's cookie); anyone else gets `403` (the page: a short
//! HTML page saying how to get in; status: a JSON error; metrics: one line of
//! text; `/sink`: the page). Every POST checks `Origin`, and all but the login a CSRF field
//! ([`csrf_ok`], [`hidden_csrf`]).
//!
//! A gathered [`Status`] is kept for [`CACHE_FOR`]: a page refreshed in a loop
//! cannot make the server list the store in a loop.

pub mod access;
pub mod own;
pub mod page;
pub mod status;

pub use status::Status;

use crate::snapshot::unix_now;
use access::{Access, Rules};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tiny_http::{Method, Request};

/// How long a gathered status is served again.
pub const CACHE_FOR: Duration = Duration::from_secs(2);
/// `--ui-stale` unless given: a node whose last commit is older is highlighted.
pub const DEFAULT_STALE: u64 = 36 * 3600;
/// Largest login form body read.
const FORM_CAP: u64 = 4096;
/// Wrong tokens the login form takes per [`LOGIN_WINDOW`], from everyone
/// together; more are refused unchecked. One counter, not one per address: an
/// address table is a table a client can fill. Bearer headers and addresses
/// still get in while the form is shut.
pub const LOGIN_FAILURES: u32 = 10;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// The management side's settings (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    pub rules: Rules,
    /// Seconds after which a last commit is stale.
    pub stale: u64,
    /// This node's own view, when the server runs with its key and paths.
    pub own: Option<own::OwnSettings>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            rules: Rules::default(),
            stale: DEFAULT_STALE,
            own: None,
        }
    }
}

/// The management side's state in a running server.
pub struct Ui {
    pub settings: Settings,
    pub own: Option<own::Own>,
    /// Per process: CSRF tokens die with it.
    secret: [u8; 32],
    cache: Mutex<Option<(Instant, Arc<Status>)>>,
    /// Answers by route kind and status code (a few dozen entries at most).
    counts: Mutex<Vec<(&'static str, u16, u64)>>,
    /// Wrong login tokens: when the current window's first came, and how many.
    failures: Mutex<Option<(Instant, u32)>>,
}

/// An answer for the server to send.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The page needs nothing but its own inline style and forms.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

impl Answer {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Answer {
        let mut headers = vec![
            ("Cache-Control", "no-store".to_string()),
            ("X-Content-Type-Options", "nosniff".to_string()),
        ];
        if content_type == HTML {
            headers.push(("Content-Security-Policy", CSP.to_string()));
        }
        Answer {
            status,
            content_type,
            body: body.into(),
            headers,
        }
    }

    fn with(mut self, name: &'static str, value: String) -> Answer {
        self.headers.push((name, value));
        self
    }

    fn json_error(status: u16, msg: &str) -> Answer {
        #[derive(miniserde::Serialize)]
        struct E<'a> {
            error: &'a str,
        }
        Answer::new(status, JSON, miniserde::json::to_string(&E { error: msg }))
    }
}

/// What a request is, for the request counters.
pub fn kind(url: &str) -> &'static str {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    match path {
        p if p.starts_with("/chute/blob") => "blob",
        "/" => "page",
        "/chute/status" => "status",
        "/metrics" => "metrics",
        "/login" | "/logout" => "login",
        "/sink" => "sink",
        _ => "other",
    }
}

impl Ui {
    pub fn new(settings: Settings) -> Ui {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the system random generator failed");
        Ui {
            own: settings.own.clone().map(own::Own::new),
            settings,
            secret,
            cache: Mutex::new(None),
            counts: Mutex::new(Vec::new()),
            failures: Mutex::new(None),
        }
    }

    /// Whether the login form may check one more token now.
    fn login_open(&self) -> bool {
        match *self.failures.lock().expect("poisoned") {
            Some((first, n)) if first.elapsed() < LOGIN_WINDOW => n < LOGIN_FAILURES,
            _ => true,
        }
    }

    /// Counts a wrong token; the window starts at the first of a series.
    fn login_failed(&self) {
        let mut f = self.failures.lock().expect("poisoned");
        *f = match *f {
            Some((first, n)) if first.elapsed() < LOGIN_WINDOW => {
                Some((first, n.saturating_add(1)))
            }
            _ => Some((Instant::now(), 1)),
        };
    }

    /// Counts one answer.
    pub fn count(&self, url: &str, status: u16) {
        let kind = kind(url);
        let mut counts = self.counts.lock().expect("poisoned");
        match counts
            .iter_mut()
            .find(|(k, s, _)| *k == kind && *s == status)
        {
            Some((_, _, n)) => *n += 1,
            None => counts.push((kind, status, 1)),
        }
    }

    /// The answers counted so far.
    pub fn counts(&self) -> Vec<status::Requests> {
        let mut out: Vec<status::Requests> = self
            .counts
            .lock()
            .expect("poisoned")
            .iter()
            .map(|&(kind, code, count)| status::Requests {
                kind: kind.into(),
                code: code.into(),
                count,
            })
            .collect();
        crate::sort::by(&mut out, |a, b| (&a.kind, a.code).cmp(&(&b.kind, b.code)));
        out
    }

    /// The status, gathered at most once per [`CACHE_FOR`]; requests that come
    /// while it is gathered wait for it rather than gather again.
    fn status(&self, gather: &dyn Fn() -> Status) -> Arc<Status> {
        let mut cache = self.cache.lock().expect("poisoned");
        if let Some((at, s)) = cache.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return s.clone();
            }
        }
        let s = Arc::new(gather());
        *cache = Some((Instant::now(), s.clone()));
        s
    }

    fn access(&self, req: &Request) -> Access {
        self.settings.rules.decide(
            req.remote_addr().map(|a| a.ip()),
            header(req, "Host"),
            header(req, "Authorization"),
            header(req, "Cookie"),
        )
    }
}

/// The hidden form field that carries a session's CSRF token.
pub fn hidden_csrf(ui: &Ui, session: &str) -> String {
    format!(
        "<input type=hidden name=csrf value=\"{}\">",
        access::csrf_token(&ui.secret, session)
    )
}

/// Whether a form POST may act: `Origin` is this server as its `Host` names
/// it, and the form's `csrf` field is the session's token.
pub fn csrf_ok(ui: &Ui, req: &Request, session: &str, form: &[(String, String)]) -> bool {
    access::origin_ok(header(req, "Origin"), header(req, "Host"))
        && access::csrf_ok(&ui.secret, session, field(form, "csrf"))
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `application/x-www-form-urlencoded` pairs; `None` if malformed.
pub fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let decode = |s: &str| -> Option<String> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let h = b.get(i + 1..i + 3)?;
                    out.push(crate::hex::decode(std::str::from_utf8(h).ok()?)?[0]);
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn read_form(req: &mut Request) -> Option<Vec<(String, String)>> {
    if req.body_length().is_none_or(|l| l as u64 > FORM_CAP) {
        return None;
    }
    let mut body = Vec::new();
    req.as_reader().take(FORM_CAP).read_to_end(&mut body).ok()?;
    parse_form(&body)
}

fn wrong_method(method: &Method, allow: &str) -> Answer {
    Answer::json_error(405, &format!("{method} is not allowed here"))
        .with("Allow", allow.to_string())
}

/// Answers a request outside `/chute/blob/`, or `None` for a path that is not
/// the management side's (the server's 404). `gather` reads a fresh status.
pub fn handle(req: &mut Request, ui: &Ui, gather: &dyn Fn() -> Status) -> Option<Answer> {
    let url = req.url().to_string();
    let path = url.split_once('?').map_or(url.as_str(), |(p, _)| p);
    let method = req.method().clone();
    let get = matches!(method, Method::Get | Method::Head);
    let answer = match path {
        "/" | "/chute/status" | "/metrics" => {
            if !get {
                return Some(wrong_method(&method, "GET, HEAD"));
            }
            let session = match ui.access(req) {
                Access::Granted(s) => s,
                Access::Denied => {
                    let why = "this page answers only to loopback, --ui-allow addresses and the --ui-token-file token";
                    return Some(match path {
                        "/" => Answer::new(403, HTML, page::denied()),
                        "/metrics" => Answer::new(403, TEXT, format!("forbidden: {why}\n")),
                        _ => Answer::json_error(403, &format!("forbidden: {why}")),
                    });
                }
            };
            let s = ui.status(gather);
            match path {
                "/" => {
                    let logged_in =
                        ui.settings.rules.session_cookie().as_deref() == Some(session.as_str());
                    let csrf = hidden_csrf(ui, &session);
                    Answer::new(200, HTML, page::page(&s, unix_now(), &csrf, logged_in))
                }
                "/metrics" => Answer::new(200, METRICS, status::metrics(&s)),
                _ => Answer::new(200, JSON, status::json(&s)),
            }
        }
        "/login" => match method {
            Method::Get | Method::Head => Answer::new(200, HTML, page::login(&login_hint(ui))),
            Method::Post => login(req, ui),
            _ => wrong_method(&method, "GET, HEAD, POST"),
        },
        "/logout" => match method {
            Method::Post => logout(req, ui),
            _ => wrong_method(&method, "POST"),
        },
        "/sink" => match method {
            Method::Get | Method::Head => match ui.access(req) {
                Access::Granted(_) => {
                    let own = ui.own.as_ref().map(|o| o.view(unix_now()));
                    Answer::new(200, HTML, page::sink_page(own.as_ref()))
                }
                Access::Denied => Answer::new(403, HTML, page::denied()),
            },
            Method::Post => sink(req, ui),
            _ => wrong_method(&method, "GET, HEAD, POST"),
        },
        _ => return None,
    };
    Some(answer)
}

fn login_hint(ui: &Ui) -> String {
    if ui.settings.rules.token.is_some() {
        "Enter the token of this server's --ui-token-file.".into()
    } else {
        "This server has no --ui-token-file: its page answers only to loopback and --ui-allow addresses.".into()
    }
}

fn login(req: &mut Request, ui: &Ui) -> Answer {
    let again = |why: &str| Answer::new(403, HTML, page::login(why));
    if !access::origin_ok(header(req, "Origin"), header(req, "Host")) {
        return again("Refused: the form was not sent from this server's own page (Origin).");
    }
    if ui.settings.rules.token.is_some() && !ui.login_open() {
        return Answer::new(
            429,
            HTML,
            page::login("Too many wrong tokens: the form takes no more for a minute."),
        )
        .with("Retry-After", LOGIN_WINDOW.as_secs().to_string());
    }
    let token = read_form(req).and_then(|f| field(&f, "token").map(str::to_string));
    match (token, ui.settings.rules.session_cookie()) {
        (Some(t), Some(cookie)) if ui.settings.rules.token_ok(t.trim()) => {
            Answer::new(303, TEXT, "logged in\n")
                .with("Location", "/".into())
                .with(
                    "Set-Cookie",
                    format!(
                        "{}={cookie}; HttpOnly; SameSite=Strict; Path=/",
                        access::COOKIE
                    ),
                )
        }
        _ if ui.settings.rules.token.is_none() => again(&login_hint(ui)),
        _ => {
            ui.login_failed();
            again("Wrong token.")
        }
    }
}

/// The checks every form POST but the login passes: let in, `Origin` this
/// server, and the session's CSRF field; the refusal to send otherwise.
fn checked_post(req: &mut Request, ui: &Ui) -> Result<(), Answer> {
    let Access::Granted(session) = ui.access(req) else {
        return Err(Answer::new(403, TEXT, "forbidden\n"));
    };
    let form = read_form(req).unwrap_or_default();
    if !csrf_ok(ui, req, &session, &form) {
        return Err(Answer::new(
            403,
            TEXT,
            "forbidden: missing or wrong Origin or CSRF token\n",
        ));
    }
    Ok(())
}

fn logout(req: &mut Request, ui: &Ui) -> Answer {
    if let Err(refused) = checked_post(req, ui) {
        return refused;
    }
    Answer::new(303, TEXT, "logged out\n")
        .with("Location", "/login".into())
        .with(
            "Set-Cookie",
            format!(
                "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                access::COOKIE
            ),
        )
}

/// The "Take new snapshot" button: starts a sink of this node's paths (unless
/// one from the page runs) and sends the browser to its progress page.
fn sink(req: &mut Request, ui: &Ui) -> Answer {
    if ui.access(req) == Access::Denied {
        return Answer::new(403, HTML, page::denied());
    }
    let Some(own) = &ui.own else {
        return Answer::new(
            409,
            TEXT,
            "this server runs without its node's key and paths, so it has nothing to back up (see chute serve's start-up log)\n",
        );
    };
    if let Err(refused) = checked_post(req, ui) {
        return refused;
    }
    match own.start_sink() {
        Ok(started) => {
            if started {
                crate::server::log("chute serve: a sink was started from the management page");
            }
            Answer::new(303, TEXT, "see /sink\n").with("Location", "/sink".into())
        }
        Err(e) => Answer::new(500, TEXT, format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let f = parse_form(b"token=a%2Bb+c&csrf=00ff&empty=&flag").unwrap();
        assert_eq!(field(&f, "token"), Some("a+b c"));
        assert_eq!(field(&f, "csrf"), Some("00ff"));
        assert_eq!(field(&f, "empty"), Some(""));
        assert_eq!(field(&f, "flag"), Some(""));
        assert_eq!(field(&f, "none"), None);
        assert!(parse_form(b"token=%zz").is_none());
        assert!(parse_form(b"token=%4").is_none());
        assert!(parse_form(b"token=%ff").is_none(), "not UTF-8");
        assert_eq!(parse_form(b"").unwrap(), vec![]);
    }

    #[test]
    fn kinds() {
        assert_eq!(kind("/chute/blob/d/n/"), "blob");
        assert_eq!(kind("/?x"), "page");
        assert_eq!(kind("/metrics"), "metrics");
        assert_eq!(kind("/chute/status"), "status");
        assert_eq!(kind("/logout"), "login");
        assert_eq!(kind("/sink"), "sink");
        assert_eq!(kind("/favicon.ico"), "other");
    }
}
