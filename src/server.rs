//! `chute serve`: the Parachute prototype's REST blob API over a [`Store`].
//!
//! The server keeps other nodes' snapshots as opaque bytes; it never holds a key.
//! The routes and the wire types are [`crate::protocol`]'s (the REST contract,
//! shared with the HTTP client); this module authenticates, authorizes and acts.
//!
//! Threads: tiny_http accepts and parses connections; a fixed pool of `--threads`
//! workers takes requests from it, so at most that many requests touch the disk at
//! once. Bodies stream in and out in 256 KiB pieces; nothing buffers a whole blob.
//! With `--scrub-every`, one more thread re-reads the store in the background at
//! the lowest priority (see [`crate::scrub`]).
//! SIGINT/SIGTERM stop taking new requests; requests in flight finish first, and a
//! background scrub stops after the window it is reading.
//! At start, before counting each node's usage, it sweeps the temporaries killed
//! writers left in the store (a server killed during a PUT, a killed local sink;
//! see [`crate::store`]) and logs what it removed and what live writers hold;
//! the temporaries it could not remove count against their node's quota.
//!
//! Every other path is the management side's ([`crate::ui`]: the page, status
//! JSON, metrics, login), which never bypasses the blob API's signatures.
//!
//! Log: one line per commit, forget and blob deletion, and per refusal (a 4xx or
//! 507 answer to a blob request), each naming the node (as the request claims it)
//! and the size; one line per request only with `--log-requests`. Every line
//! goes through [`log`], which puts an RFC 3339 UTC time in front unless stderr
//! is the systemd journal (which stamps lines itself):
//!
//! ```text
//! 2026-12-02T03:15:07Z chute serve: node n1 committed snapshot 20261202T031500.000000Z of mount 3f2a… (143.2 MiB)
//! 2026-12-02T03:16:00Z chute serve: refused 192.168.1.7:50412 node n2 "PUT /chute/blob/d/n2/m/t/0/2097152/3" 507 (2.0 MiB): quota of node n2 exceeded (…)
//! ```

use crate::auth::{self, Admitted, Refusal, Verifier};
use crate::blob::BlobId;
use crate::protocol::{
    ListedBlob, PREFIX, Route, RouteError, parse_content_range, parse_range, parse_route, query_has,
};
use crate::store::{self, Store};
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tiny_http::{Header, Method, Request, Response, StatusCode};

/// Connections open at once by default: a few hundred threads of 128 KiB stack
/// and three descriptors each fit a Raspberry Pi.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Connections open at once from one IP address by default.
pub const DEFAULT_MAX_PER_ADDRESS: usize = 64;
/// Descriptors one connection holds (its socket, tiny_http's read/write clone and
/// the connection table's handle), for the open-files limit `serve` asks for.
const FDS_PER_CONNECTION: u64 = 3;

/// Longest range one GET may ask for.
const MAX_RANGE: u64 = 1 << 30;
/// Most pending (created, uncommitted) blobs a node may have: a sink keeps one per
/// mount it is sending, a prune one per pack it is writing, and a resumed sink
/// reuses its own.
pub const MAX_PENDING: usize = 64;

/// Server settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: String,
    pub threads: usize,
    pub max_window: u64,
    /// Nodes admitted, with their auth keys and quotas.
    pub allow: HashMap<String, Admitted>,
    /// Accept unsigned requests from anyone, anywhere in the store.
    pub open: bool,
    /// Refuse every delete (committed blobs are immutable anyway)...
    pub append_only: bool,
    /// ...unless it proves this key (SHA-256 of the admin key file).
    pub admin: Option<[u8; 32]>,
    /// Idle time after which a connection's read or write gives up.
    pub timeout: Duration,
    /// Connections open at once (all clients, and per IP address); when full, the
    /// oldest idle connection is closed to admit a new one.
    pub max_connections: usize,
    pub max_per_address: usize,
    /// The background scrub, if any.
    pub scrub: Option<crate::scrub::Background>,
    /// Each admitted node's request rate.
    pub rate: auth::RateLimit,
    /// The names this server answers to besides its own address (`--name`): a
    /// request signed for another peer's is refused.
    pub names: Vec<String>,
    /// Who may see the management page, and when a node is stale there.
    pub ui: crate::ui::Settings,
    /// One log line per request (`--log-requests`).
    pub log_requests: bool,
}

/// Everything a handler may consult.
pub struct State {
    pub store: Store,
    verifier: Verifier,
    open: bool,
    append_only: bool,
    admin: Option<[u8; 32]>,
    /// `--name`s, lowercased.
    names: Vec<String>,
    /// What each admitted node's files are charged ([`store::charge`]), for
    /// quotas: counted at start, kept up to date from what each write, commit,
    /// delete and trim reports it changed under the blob's lock.
    usage: Mutex<HashMap<String, u64>>,
    /// The management side: its access rules, status cache and request counts.
    pub ui: crate::ui::Ui,
    log_requests: bool,
    started: u64,
    limits: crate::ui::status::Limits,
    /// `--scrub-every` and what the background scrub last did.
    pub scrub: Option<(u64, Mutex<crate::scrub::Summary>)>,
}

impl State {
    /// `started`: Unix seconds taken before the listener was bound; requests signed
    /// earlier are refused (see [`crate::auth`]).
    pub fn new(store: Store, cfg: &Config, started: i64) -> crate::Result<State> {
        let mut usage = HashMap::new();
        let mut nodes: Vec<_> = cfg.allow.iter().collect();
        crate::sort::by_key(&mut nodes, |(n, _)| n.as_str());
        for (node, admitted) in nodes {
            let used = store.node_usage(node)?;
            if let Some(q) = admitted.quota {
                log(&format!(
                    "chute serve: node {node} uses {used} of its {q} bytes of quota"
                ));
            }
            usage.insert(node.clone(), used);
        }
        Ok(State {
            store,
            // Requests signed before now may have been answered by an earlier run,
            // whose nonces are gone: refused (see auth's docs on replay).
            verifier: Verifier::new(cfg.allow.clone(), started, cfg.rate),
            open: cfg.open,
            append_only: cfg.append_only,
            admin: cfg.admin,
            names: cfg.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            usage: Mutex::new(usage),
            ui: crate::ui::Ui::new(cfg.ui.clone()),
            log_requests: cfg.log_requests,
            started: started.max(0) as u64,
            limits: crate::ui::status::Limits {
                threads: cfg.threads.max(1) as u64,
                max_connections: cfg.max_connections as u64,
                max_per_address: cfg.max_per_address as u64,
                max_window: cfg.max_window,
                rate_per_sec: cfg.rate.per_sec.into(),
                rate_burst: cfg.rate.burst.into(),
            },
            scrub: cfg
                .scrub
                .map(|bg| (bg.every, Mutex::new(crate::scrub::Summary::default()))),
        })
    }

    /// What the management page shows, read now (see [`crate::ui::status`]).
    fn gather(&self) -> crate::ui::Status {
        use crate::ui::status;
        let admitted = {
            let usage = self.usage.lock().expect("poisoned");
            self.verifier
                .nodes
                .iter()
                .map(|(name, a)| status::Admitted {
                    name: name.clone(),
                    quota: a.quota,
                    used: usage.get(name).copied().unwrap_or(0),
                })
                .collect()
        };
        let now = unix_now().as_secs();
        status::gather(
            &self.store,
            status::Sources {
                admitted,
                append_only: self.append_only,
                limits: self.limits.clone(),
                started_unix: self.started,
                now_unix: now,
                stale_after: self.ui.settings.stale,
                abandon_after: crate::prune::DEFAULT_GRACE,
                scrub: self
                    .scrub
                    .as_ref()
                    .map(|(every, s)| (*every, *s.lock().expect("poisoned"))),
                requests: self.ui.counts(),
                own: self.ui.own.as_ref().map(|o| o.view(now)),
            },
        )
    }

    /// Counts `len` more bytes against `node`'s quota, or refuses (507) if they do
    /// not fit: reserved before a write, so concurrent windows cannot overshoot.
    /// Nodes not admitted (an `--open` server's anyone) are not counted.
    fn reserve(&self, node: &str, len: u64) -> Result<(), Fail> {
        let quota = self.verifier.nodes.get(node).and_then(|a| a.quota);
        let mut usage = self.usage.lock().expect("poisoned");
        let Some(used) = usage.get_mut(node) else {
            return Ok(());
        };
        if let Some(q) = quota {
            if used.saturating_add(len) > q {
                return Err(Fail(
                    507,
                    format!(
                        "quota of node {node} exceeded ({} of {q} bytes used)",
                        *used
                    ),
                    None,
                ));
            }
        }
        *used += len;
        Ok(())
    }

    /// Gives back `bytes` of `node`'s quota: a write that failed, a delete, a trim.
    fn release(&self, node: &str, bytes: u64) {
        if let Some(u) = self.usage.lock().expect("poisoned").get_mut(node) {
            *u = u.saturating_sub(bytes);
        }
    }

    /// Replaces a reservation by what the store reports it changed: the charge
    /// follows the files on disk exactly, whatever was reserved.
    fn settle(&self, node: &str, reserved: u64, change: store::Change) {
        if let Some(u) = self.usage.lock().expect("poisoned").get_mut(node) {
            *u = u
                .saturating_sub(reserved)
                .saturating_add(change.added)
                .saturating_sub(change.freed);
        }
    }

    /// Reserves `need`, runs a store change, then settles on what it reports (or
    /// gives the reservation back if it failed).
    fn charged<T>(
        &self,
        node: &str,
        need: u64,
        act: impl FnOnce() -> store::Result<(T, store::Change)>,
    ) -> Result<T, Fail> {
        self.reserve(node, need)?;
        match act() {
            Ok((t, change)) => {
                self.settle(node, need, change);
                Ok(t)
            }
            Err(e) => {
                self.release(node, need);
                Err(e.into())
            }
        }
    }
}

/// Who sent a request: a verified node, or anyone (only on an `--open` server).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Caller {
    Node(String),
    Anyone,
}

fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// 401, or 429 with `Retry-After` for a node over its rate.
fn refused(r: Refusal) -> Fail {
    match r.retry_after() {
        Some(s) => Fail(429, r.to_string(), Some(("Retry-After", s.to_string()))),
        None => Fail(401, r.to_string(), None),
    }
}

fn authenticate(req: &Request, state: &State, now: Duration) -> Result<Caller, Fail> {
    let Some(node) = header(req, auth::NODE) else {
        return if state.open {
            Ok(Caller::Anyone)
        } else {
            Err(refused(Refusal::Unsigned))
        };
    };
    let get = |name: &'static str| header(req, name).ok_or(Refusal::Malformed(name));
    let signed = (|| {
        Ok::<_, Refusal>(auth::Signed {
            node,
            time: get(auth::TIME)?,
            nonce: get(auth::NONCE)?,
            body: get(auth::BODY)?,
            signature: get(auth::SIGNATURE)?,
            covered: auth::COVERED.map(|name| header(req, name).unwrap_or("")),
            host: header(req, "Host").unwrap_or(""),
        })
    })()
    .map_err(refused)?;
    let method = req.method().as_str().to_string();
    match state.verifier.check(&method, req.url(), &signed, now) {
        // The signature covers the Host it was sent with: one of ours, or the
        // request was meant for another peer that admits the same node.
        Ok(n) => match own_name(signed.host, &state.names, req.local_addr().copied()) {
            Ok(()) => Ok(Caller::Node(n)),
            Err(this) => Err(refused(Refusal::WrongPeer(signed.host.to_string(), this))),
        },
        // An open server serves nodes it does not know as anyone.
        Err(Refusal::UnknownNode(_)) if state.open => Ok(Caller::Anyone),
        // An open server still refuses a signature that does not verify.
        Err(e) => Err(refused(e)),
    }
}

/// Whether `host` (a request's `Host`) names this server: one of `names` with the
/// connection's local port (or the port a name gives), the local address as a
/// literal (`127.0.0.1:PORT`, `[::1]:PORT`), or `localhost:PORT` on a loopback
/// address. The machine's host name is not a name by default: every Raspberry Pi
/// is called raspberrypi. Else the name to tell the client this peer has.
fn own_name(
    host: &str,
    names: &[String],
    local: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    let host = host.trim().to_ascii_lowercase();
    let port = local.map(|a| a.port());
    // A Host without a port is port 80's.
    let with_port = if host.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
    }) {
        host.clone()
    } else {
        format!("{host}:80")
    };
    let has_port = |n: &str| {
        n.rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut mine: Vec<String> = Vec::new();
    for n in names {
        if has_port(n) {
            mine.push(n.clone());
        } else if let Some(p) = port {
            mine.push(format!("{n}:{p}"));
        }
    }
    if let Some(a) = local {
        mine.push(a.to_string());
        if let std::net::IpAddr::V6(v6) = a.ip() {
            // A dual-stack listener sees IPv4 clients on a mapped address.
            if let Some(v4) = v6.to_ipv4_mapped() {
                mine.push(format!("{v4}:{}", a.port()));
            }
        }
        let loopback = match a.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
            ip => ip.is_loopback(),
        };
        if loopback {
            mine.push(format!("localhost:{}", a.port()));
        }
    }
    if mine.iter().any(|m| *m == host || *m == with_port) {
        return Ok(());
    }
    Err(mine.into_iter().next().unwrap_or_else(|| "unknown".into()))
}

/// A node may touch only `<domain>/<node>/...` of its own name.
fn authorize(caller: &Caller, node: &str) -> Result<(), Fail> {
    match caller {
        Caller::Node(n) if n != node => Err(Fail(
            403,
            format!("node {n:?} may not touch node {node:?}'s space"),
            None,
        )),
        _ => Ok(()),
    }
}

/// Deletes (forget, prune) on an append-only server need the admin key's proof,
/// bound to this request's time and nonce.
fn may_delete(req: &Request, state: &State, caller: &Caller, now: Duration) -> Result<(), Fail> {
    if !state.append_only {
        return Ok(());
    }
    let time = header(req, auth::TIME).unwrap_or("");
    let nonce = header(req, auth::NONCE).unwrap_or("");
    let proven = match (&state.admin, header(req, auth::ADMIN)) {
        (Some(key), Some(proof)) => {
            auth::admin_ok(key, req.method().as_str(), req.url(), time, nonce, proof)
        }
        _ => false,
    };
    if !proven {
        return Err(Fail(
            403,
            "this server is append-only: deleting needs its admin key (chute forget/prune --admin-key-file)"
                .into(),
            None,
        ));
    }
    // A node's signature had its time and nonce checked already. Without one (an
    // anonymous caller on an --open server) the proof alone binds them: check them
    // here, or a recorded delete could be replayed forever.
    if *caller == Caller::Anyone {
        state
            .verifier
            .check_admin(time, nonce, now)
            .map_err(refused)?;
    }
    Ok(())
}

/// What a handler answers.
enum Reply {
    Json(u16, String),
    /// Bytes the node sealed (a window, a range of part 0), streamed from disk:
    /// their answer MAC says `sealed` instead of hashing them.
    Bytes(u16, Box<dyn Read + Send>, u64, Vec<Header>),
    /// A small body held in memory (an index), with its headers.
    Small(u16, Vec<u8>, Vec<Header>),
    NotModified(String),
    /// 201 with a JSON body, and a `Location` for a new blob.
    Created {
        json: String,
        location: Option<String>,
    },
}

fn created() -> Reply {
    Reply::Created {
        json: "true".into(),
        location: None,
    }
}

/// An error with its status, mapped in one place, and a header to send with it
/// (`Allow` for a 405, `Retry-After` for a 429).
struct Fail(u16, String, Option<(&'static str, String)>);

impl From<store::Error> for Fail {
    fn from(e: store::Error) -> Fail {
        let status = match &e {
            store::Error::Bad(_) | store::Error::Digest => 400,
            store::Error::NotFound(_) => 404,
            store::Error::Conflict(_) => 409,
            store::Error::TooLarge(_) => 413,
            store::Error::Range(_) => 416,
            store::Error::Full | store::Error::Quota(_) => 507,
            store::Error::Newer(_) | store::Error::NoStore { .. } | store::Error::Io(..) => 500,
            // The object store behind: busy (the node retries), or broken.
            store::Error::Backend(b) if b.kind == crate::remote::ErrorKind::Unavailable => 503,
            store::Error::Backend(_) => 502,
        };
        Fail(status, e.to_string(), None)
    }
}

fn bad(msg: impl Into<String>) -> Fail {
    Fail(400, msg.into(), None)
}

fn json_string(s: &str) -> String {
    miniserde::json::to_string(&s.to_string())
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn h(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

/// Reads a small body (an index), refusing more than `cap` bytes.
fn small_body(req: &mut Request, cap: u64) -> Result<Vec<u8>, Fail> {
    // A chunked body's size lines are read without a cap by the decoder: refuse it.
    content_length(req)?;
    if req.body_length().is_some_and(|l| l as u64 > cap) {
        return Err(Fail(413, format!("body larger than {cap} bytes"), None));
    }
    let mut body = Vec::new();
    req.as_reader()
        .take(cap + 1)
        .read_to_end(&mut body)
        .map_err(|e| bad(format!("cannot read body: {e}")))?;
    if body.len() as u64 > cap {
        return Err(Fail(413, format!("body larger than {cap} bytes"), None));
    }
    Ok(body)
}

/// An index body; when signed, it must match the signed SHA-256.
fn signed_body(req: &mut Request, caller: &Caller, cap: u64) -> Result<Vec<u8>, Fail> {
    let expect = expected_digest(req)?;
    let body = small_body(req, cap)?;
    if let (Caller::Node(_), Some(e)) = (caller, expect) {
        if crate::crypto::sha256(&body) != e {
            return Err(bad("body does not match its announced SHA-256"));
        }
    } else if matches!(caller, Caller::Node(_)) {
        return Err(Fail(
            401,
            format!("a signed request needs {}", auth::BODY),
            None,
        ));
    }
    Ok(body)
}

fn expected_digest(req: &Request) -> Result<Option<[u8; 32]>, Fail> {
    match header(req, "X-Chute-SHA256") {
        None => Ok(None),
        Some(v) => crate::hex::decode32(v.trim())
            .map(Some)
            .ok_or_else(|| bad("X-Chute-SHA256 is not 64 hex digits")),
    }
}

/// Every PUT must announce its length: tiny_http reports none for a chunked body.
fn content_length(req: &Request) -> Result<u64, Fail> {
    match req.body_length() {
        Some(l) => Ok(l as u64),
        // tiny_http keeps lengths in a usize: on a 32-bit board a huge one does not
        // parse and arrives as "no length". Too large, not missing.
        None if header(req, "Content-Length").is_some() => {
            Err(Fail(413, "Content-Length is too large".into(), None))
        }
        None => Err(Fail(
            411,
            "a request with a body needs Content-Length (chunked bodies are refused)".into(),
            None,
        )),
    }
}

fn put_window(
    req: &mut Request,
    state: &State,
    id: &BlobId,
    offset: u64,
    max: Option<u64>,
) -> Result<Reply, Fail> {
    let store = &state.store;
    let len = content_length(req)?;
    if let Some(max) = max {
        if len > max {
            return Err(bad(format!(
                "window body of {len} bytes is larger than its window size {max}"
            )));
        }
    }
    let expect = expected_digest(req)?;
    // Reserve the bytes before writing so concurrent windows cannot overshoot; a
    // window sent again over itself (a retry) needs only what it adds to the files
    // it replaces.
    let need = store::charge(len).saturating_sub(store.held(id, offset, len));
    state.charged(&id.node, need, || {
        store.write_charged(id, offset, len, req.as_reader(), expect)
    })?;
    Ok(created())
}

/// Window `n` of size `size` of a blob, as written; 404 if it never was.
fn written_window(store: &Store, id: &BlobId, size: u64, n: u64) -> Result<store::Window, Fail> {
    let offset = n
        .checked_mul(size)
        .filter(|_| size > 0)
        .ok_or_else(|| bad("window offset out of range"))?;
    match store.window_at(id, offset)? {
        Some(w) if w.len <= size => Ok(w),
        _ => Err(Fail(
            404,
            format!("window {n} of {size} bytes was never written"),
            None,
        )),
    }
}

fn stream(
    store: &Store,
    id: &BlobId,
    offset: u64,
    len: u64,
    status: u16,
    headers: Vec<Header>,
) -> Result<Reply, Fail> {
    let r = store.read_range(id, offset, len)?;
    Ok(Reply::Bytes(status, Box::new(r), len, headers))
}

/// How an answer is authenticated to the caller (see [`crate::auth`]).
enum Seal {
    /// The request failed before its node was verified: no MAC can be made.
    None,
    /// An `--open` server's anonymous caller: `X-Chute-Answer: open`.
    Open,
    /// A verified node's request: a MAC under its key over the request's nonce.
    Node { key: [u8; 32], nonce: String },
}

/// One request: authenticated, then handled; says how to seal the answer.
fn handle(req: &mut Request, state: &State) -> (Seal, Result<Reply, Fail>) {
    if !req.url().starts_with("/chute/blob") {
        if let Some(a) = crate::ui::handle(req, &state.ui, &|| state.gather()) {
            let mut headers = vec![h("Content-Type", a.content_type)];
            headers.extend(a.headers.iter().map(|(k, v)| h(k, v)));
            return (Seal::None, Ok(Reply::Small(a.status, a.body, headers)));
        }
    }
    let route = match parse_route(req.url()) {
        Ok(r) => r,
        Err(RouteError::NotFound) => {
            let e = Fail(404, format!("no such resource {}", req.url()), None);
            return (Seal::None, Err(e));
        }
        Err(RouteError::Bad(m)) => return (Seal::None, Err(bad(m))),
    };
    let now = unix_now();
    let caller = match authenticate(req, state, now) {
        Ok(c) => c,
        Err(e) => return (Seal::None, Err(e)),
    };
    let seal = match &caller {
        Caller::Node(n) => match (state.verifier.nodes.get(n), header(req, auth::NONCE)) {
            (Some(a), Some(nonce)) => Seal::Node {
                key: a.key,
                nonce: nonce.to_string(),
            },
            _ => Seal::None,
        },
        Caller::Anyone => Seal::Open,
    };
    (seal, act(req, state, route, caller, now))
}

/// What a request asks, once authenticated: a plain function of the request and
/// the server's state.
fn act(
    req: &mut Request,
    state: &State,
    route: Route,
    caller: Caller,
    now: Duration,
) -> Result<Reply, Fail> {
    let store = &state.store;
    match &route {
        Route::Root => {}
        Route::Node { node, .. } => authorize(&caller, node)?,
        Route::Blob(id) | Route::Index(id) | Route::Part(id) => authorize(&caller, &id.node)?,
        Route::Forgotten(id) => authorize(&caller, &id.node)?,
        Route::Window { id, .. } | Route::WindowHash { id, .. } => authorize(&caller, &id.node)?,
        Route::WindowChallenge { id, .. } => authorize(&caller, &id.node)?,
    }
    let method = req.method().clone();
    let wrong = |allow: &str| {
        Fail(
            405,
            format!("{method} is not allowed here"),
            Some(("Allow", allow.to_string())),
        )
    };
    match route {
        Route::Root => match method {
            Method::Post => {
                let body = signed_body(req, &caller, store::INDEX_CAP)?;
                let node = store::index_place(&body)?.0.node;
                authorize(&caller, &node)?;
                let need = store::charge(body.len() as u64);
                let id = state.charged(&node, need, || store.create_charged(&body))?;
                let path = format!("{PREFIX}{}/", id.path());
                Ok(Reply::Created {
                    json: json_string(&path),
                    location: Some(path),
                })
            }
            _ => Err(wrong("POST")),
        },
        Route::Node { domain, node } => match method {
            Method::Get if query_has(req.url(), "uncommitted") => {
                let list: Vec<ListedBlob> = store
                    .list_uncommitted(&domain, &node)?
                    .into_iter()
                    .map(|u| ListedBlob {
                        uri: format!("{PREFIX}{}/", u.id.path()),
                        state: u.state.as_str().into(),
                        bytes: u.bytes,
                        idle: u.idle,
                    })
                    .collect();
                Ok(Reply::Json(200, miniserde::json::to_string(&list)))
            }
            Method::Get => {
                let list: Vec<String> = store
                    .list(&domain, &node)?
                    .iter()
                    .map(|id| format!("{PREFIX}{}/index.json", id.path()))
                    .collect();
                Ok(Reply::Json(200, miniserde::json::to_string(&list)))
            }
            _ => Err(wrong("GET")),
        },
        Route::Blob(id) => match method {
            Method::Delete => {
                may_delete(req, state, &caller, now)?;
                let freed = store.delete(&id)?;
                state.release(&id.node, freed);
                log_blob(&id, "deleted blob", Some(freed));
                Ok(Reply::Json(200, "true".into()))
            }
            _ => Err(wrong("DELETE")),
        },
        Route::Index(id) => match method {
            Method::Get => {
                let (body, pending) = store.index_or_pending(&id)?;
                let etag = format!("\"{}\"", crate::hex::encode(&crate::crypto::sha256(&body)));
                if header(req, "If-None-Match")
                    .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
                {
                    return Ok(Reply::NotModified(etag));
                }
                let mut headers = vec![h("ETag", &etag), h("Content-Type", "application/json")];
                if pending {
                    headers.push(h(auth::STATE, "pending"));
                }
                Ok(Reply::Small(200, body, headers))
            }
            Method::Put => {
                content_length(req)?;
                let body = signed_body(req, &caller, store::MAX_INDEX)?;
                let need = store::charge(body.len() as u64);
                let fresh = state.charged(&id.node, need, || {
                    store
                        .commit_charged(&id, &body)
                        .map(|c| (c != store::Change::default(), c))
                })?;
                if fresh {
                    let size = store::index_place(&body).ok().and_then(|(_, s)| s);
                    log_blob(&id, "committed snapshot", size);
                }
                Ok(created())
            }
            Method::Delete => {
                may_delete(req, state, &caller, now)?;
                let again = !store.is_committed(&id);
                store.forget(&id)?;
                if !again {
                    let size = store
                        .forgotten_index(&id)
                        .ok()
                        .and_then(|b| store::index_place(&b).ok())
                        .and_then(|(_, s)| s);
                    log_blob(&id, "forgot snapshot", size);
                }
                Ok(Reply::Json(200, "true".into()))
            }
            _ => Err(wrong("GET, PUT, DELETE")),
        },
        Route::Forgotten(id) => match method {
            Method::Get => {
                let body = store.forgotten_index(&id)?;
                Ok(Reply::Small(
                    200,
                    body,
                    vec![h("Content-Type", "application/json")],
                ))
            }
            _ => Err(wrong("GET")),
        },
        Route::Part(id) => match method {
            Method::Put => {
                let len = content_length(req)?;
                let offset = match header(req, "Content-Range") {
                    None => 0,
                    Some(v) => {
                        let (a, b, _) = parse_content_range(v)
                            .ok_or_else(|| bad(format!("bad Content-Range {v:?}")))?;
                        if b.checked_sub(a).and_then(|d| d.checked_add(1)) != Some(len) {
                            return Err(bad("Content-Range does not match Content-Length"));
                        }
                        a
                    }
                };
                put_window(req, state, &id, offset, None)
            }
            Method::Get => {
                let len = store.part_len(&id)?;
                match header(req, "Range") {
                    Some(v) => {
                        let (off, n) = parse_range(v, len).map_err(|_| {
                            Fail(
                                416,
                                format!("range {v:?} not satisfiable for a part of {len} bytes"),
                                None,
                            )
                        })?;
                        if n > MAX_RANGE {
                            return Err(Fail(
                                413,
                                format!("ranges are limited to {MAX_RANGE} bytes"),
                                None,
                            ));
                        }
                        let cr = format!("bytes {off}-{}/{len}", off + n - 1);
                        stream(store, &id, off, n, 206, vec![h("Content-Range", &cr)])
                    }
                    None => {
                        let digest = store.hash(&id, 0, len).map_err(|e| match e {
                            store::Error::Range(m) => {
                                Fail(409, format!("part 0 has gaps: {m}"), None)
                            }
                            e => e.into(),
                        })?;
                        Ok(Reply::Json(200, json_string(&crate::hex::encode(&digest))))
                    }
                }
            }
            _ => Err(wrong("GET, PUT")),
        },
        Route::Window { id, size, n } => {
            let offset = n
                .checked_mul(size)
                .filter(|_| size > 0)
                .ok_or_else(|| bad("window offset out of range"))?;
            match method {
                Method::Put => put_window(req, state, &id, offset, Some(size)),
                Method::Delete => {
                    may_delete(req, state, &caller, now)?;
                    let freed = store.trim(&id, offset)?;
                    state.release(&id.node, freed);
                    Ok(Reply::Json(200, "true".into()))
                }
                Method::Get => match store.window_at(&id, offset)? {
                    Some(w) if w.len <= size => {
                        stream(store, &id, w.offset, w.len, 200, Vec::new())
                    }
                    _ => Err(Fail(
                        404,
                        format!("window {n} of {size} bytes was never written"),
                        None,
                    )),
                },
                _ => Err(wrong("GET, PUT, DELETE")),
            }
        }
        Route::WindowHash { id, size, n } => {
            if method != Method::Get {
                return Err(wrong("GET"));
            }
            let w = written_window(store, &id, size, n)?;
            let d = store.window_hash(&id, &w)?;
            Ok(Reply::Json(200, json_string(&crate::hex::encode(&d))))
        }
        Route::WindowChallenge { id, size, n, nonce } => {
            if method != Method::Get {
                return Err(wrong("GET"));
            }
            let w = written_window(store, &id, size, n)?;
            let a = store.window_challenge(&id, &w, &nonce)?;
            Ok(Reply::Json(200, json_string(&crate::hex::encode(&a))))
        }
    }
}

/// An answer ready to send: its body is hashed for the answer MAC unless sealed.
struct Out {
    status: u16,
    headers: Vec<Header>,
    body: Box<dyn Read + Send>,
    len: u64,
    /// The body's SHA-256; `None` for bytes the node sealed itself.
    digest: Option<[u8; 32]>,
}

impl Out {
    fn memory(status: u16, body: Vec<u8>, headers: Vec<Header>) -> Out {
        Out {
            status,
            digest: Some(crate::crypto::sha256(&body)),
            len: body.len() as u64,
            body: Box::new(std::io::Cursor::new(body)),
            headers,
        }
    }
}

/// The `X-Chute-Answer` of an answer (see [`crate::auth`]): every answer to a
/// verified node's request gets it here, whatever route made it.
fn answer_header(seal: &Seal, out: &Out) -> Option<Header> {
    let tag = match seal {
        Seal::None => return None,
        Seal::Open => auth::ANSWER_OPEN.to_string(),
        Seal::Node { key, nonce } => {
            let len = out.len.to_string();
            let covered = auth::ANSWER_COVERED.map(|name| {
                if name == "Content-Length" {
                    return len.as_str();
                }
                out.headers
                    .iter()
                    .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                    .map_or("", |h| h.value.as_str())
            });
            let body = match &out.digest {
                Some(d) => auth::AnswerBody::Sha256(d),
                None => auth::AnswerBody::Sealed,
            };
            auth::answer_tag(key, nonce, out.status, body, &covered)
        }
    };
    Some(h(auth::ANSWER, &tag))
}

fn respond(req: Request, state: &State, seal: Seal, reply: Result<Reply, Fail>, started: Instant) {
    let method = req.method().clone();
    let url = req.url().to_string();
    let peer = req.remote_addr().map_or("-".into(), |a| a.to_string());
    // For a refusal's line: who the request says it is, and what it carried.
    let claimed = header(&req, auth::NODE).map(|n| {
        let n: String = n.chars().take(128).filter(|c| !c.is_control()).collect();
        format!(" node {n}")
    });
    let sent = req.body_length().unwrap_or(0) as u64;
    let json = || h("Content-Type", "application/json");
    let mut why = String::new();
    let out = match reply {
        Ok(Reply::Json(status, body)) => Out::memory(status, body.into_bytes(), vec![json()]),
        Ok(Reply::Small(status, body, headers)) => Out::memory(status, body, headers),
        Ok(Reply::Created {
            json: body,
            location,
        }) => {
            let mut headers = vec![json()];
            if let Some(l) = location {
                headers.push(h("Location", &l));
            }
            Out::memory(201, body.into_bytes(), headers)
        }
        Ok(Reply::NotModified(etag)) => Out::memory(304, Vec::new(), vec![h("ETag", &etag)]),
        Ok(Reply::Bytes(status, body, len, mut headers)) => {
            if !headers.iter().any(|h| h.field.equiv("Content-Type")) {
                headers.push(h("Content-Type", "application/octet-stream"));
            }
            Out {
                status,
                headers,
                body,
                len,
                digest: None,
            }
        }
        Err(Fail(status, msg, extra)) => {
            why = format!(" ({msg})");
            #[derive(miniserde::Serialize)]
            struct E {
                error: String,
            }
            let body = miniserde::json::to_string(&E { error: msg });
            let mut headers = vec![json()];
            if let Some((name, value)) = extra {
                headers.push(h(name, &value));
            }
            Out::memory(status, body.into_bytes(), headers)
        }
    };
    let mut headers = out.headers.clone();
    headers.extend(answer_header(&seal, &out));
    let (status, len) = (out.status, out.len);
    // Always `Content-Length`, never chunked: the answer MAC covers the length the
    // client sees.
    let r = Response::new(
        StatusCode(status),
        headers,
        out.body,
        Some(len as usize),
        None,
    )
    .with_chunked_threshold(usize::MAX);
    let result = req.respond(r);
    let note = match result {
        Ok(()) => String::new(),
        Err(e) => format!(" (response not delivered: {e})"),
    };
    state.ui.count(&url, status);
    if state.log_requests {
        log(&format!(
            "{peer} \"{method} {url}\" {status} {len} {}ms{why}{note}",
            started.elapsed().as_millis()
        ));
    } else if crate::ui::kind(&url) == "blob" && ((400..500).contains(&status) || status == 507) {
        log(&format!(
            "chute serve: refused {peer}{} \"{method} {url}\" {status} ({}){why}{note}",
            claimed.unwrap_or_default(),
            crate::units::human_bytes(sent)
        ));
    }
}

/// Who the startup log says may see the management page.
fn ui_audience(rules: &crate::ui::access::Rules) -> String {
    let mut who = vec!["loopback clients".to_string()];
    if !rules.allow.is_empty() {
        who.push(format!("{} --ui-allow networks", rules.allow.len()));
    }
    if rules.token.is_some() {
        who.push("holders of the --ui-token-file token".into());
    }
    who.join(", ")
}

/// The one line a commit, forget or delete of a blob gets.
fn log_blob(id: &BlobId, what: &str, size: Option<u64>) {
    let mount: String = id.mount.chars().take(8).collect();
    let more = if id.mount.len() > 8 { "…" } else { "" };
    log(&format!(
        "chute serve: node {} {what} {} of mount {mount}{more} ({})",
        id.node,
        id.timestamp,
        size.map_or("size unknown".into(), crate::units::human_bytes)
    ));
}

/// Writes one server log line to stderr: with an RFC 3339 UTC time in front,
/// unless stderr is the systemd journal, which stamps each line itself.
pub fn log(line: &str) {
    static STAMP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let stamp = *STAMP.get_or_init(|| {
        let var = std::env::var("JOURNAL_STREAM").ok();
        !is_journal(var.as_deref(), stderr_id())
    });
    if stamp {
        let now = crate::snapshot::rfc3339(unix_now().as_secs() as i64);
        eprintln!("{now} {line}");
    } else {
        eprintln!("{line}");
    }
}

/// stderr's device and inode (fstat on a duplicate of descriptor 2).
fn stderr_id() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let md = std::fs::File::from(fd).metadata().ok()?;
    Some((md.dev(), md.ino()))
}

/// Whether `JOURNAL_STREAM` (systemd's `DEVICE:INODE` of the journal's stream)
/// names stderr: a child whose stderr was redirected inherits the variable.
fn is_journal(var: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(var), Some((dev, ino))) = (var, stderr) else {
        return false;
    };
    let Some((d, i)) = var.trim().split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// Runs the server until SIGINT or SIGTERM, on the store `open` gives, which it
/// calls once the listen address is bound: a busy port creates nothing.
pub fn serve(open: impl FnOnce() -> crate::Result<Store>, cfg: &Config) -> crate::Result<()> {
    let cannot = |e: &dyn std::fmt::Display| {
        crate::Error::Failed(format!("cannot listen on {}: {e}", cfg.listen))
    };
    // Room for every connection allowed plus the store's own files.
    let want = cfg.max_connections as u64 * FDS_PER_CONNECTION + 256;
    match crate::sys::raise_nofile(want) {
        Ok(have) if have >= want => {}
        Ok(have) => log(&format!(
            "chute serve: WARNING: the open-files limit is {have}, below the {want} that --max-connections {} needs; raise it (LimitNOFILE= in the systemd unit, ulimit -n) or lower --max-connections",
            cfg.max_connections
        )),
        Err(e) => log(&format!(
            "chute serve: WARNING: cannot read the open-files limit: {e}"
        )),
    }
    // Before the bind: a request signed while the store's usage is counted below
    // is not "signed before this server started".
    let started = unix_now().as_secs() as i64;
    let listener = std::net::TcpListener::bind(&cfg.listen).map_err(|e| cannot(&e))?;
    // Accepted sockets inherit these: a client that stalls (slow-loris) is dropped.
    crate::sys::set_socket_timeouts(&listener, cfg.timeout).map_err(|e| cannot(&e))?;
    crate::sys::set_backlog(&listener, 1024).map_err(|e| cannot(&e))?;
    // Beyond the per-read timeout: a head must arrive within 10 s of its first
    // byte (8 KiB a line, 64 KiB and 100 headers in all), a body must average
    // 16 KiB/s after its first 10 s, and an unread body is never drained by a
    // worker (the connection closes instead). See tiny_http's util/limits.rs.
    let limits = tiny_http::Limits {
        max_connections: cfg.max_connections,
        max_per_address: cfg.max_per_address,
        // A refused window (507 over quota, 409, 416) is answered before its
        // body is read; the connection's own thread then discards what still
        // comes, up to a whole window of chute's client and for at most 10 s, so
        // the node finishes sending and reads the refusal instead of a reset
        // ("Broken pipe" in place of "quota exceeded").
        linger_bytes: (crate::protocol::MAX_WINDOW + (64 << 10)) as usize,
        linger_time: Duration::from_secs(10),
        ..tiny_http::Limits::default()
    };
    let server = tiny_http::Server::from_listener_with_limits(listener, None, limits)
        .map_err(|e| cannot(&e))?;
    let store = open()?;
    let addr = server
        .server_addr()
        .to_ip()
        .map_or_else(|| cfg.listen.clone(), |a| a.to_string());
    crate::sys::catch_termination();
    log(&format!(
        "chute serve: listening on http://{addr}/chute/blob/ with {} threads, at most {} connections ({} per address), store {}",
        cfg.threads,
        cfg.max_connections,
        cfg.max_per_address,
        store.describe()
    ));
    log(&format!(
        "chute serve: management page on http://{addr}/ for {}",
        ui_audience(&cfg.ui.rules)
    ));
    if let Some(own) = &cfg.ui.own {
        log(&format!(
            "chute serve: the page also shows node {}'s own snapshots and a \"Take new snapshot\" button (key and paths found: {})",
            own.node,
            own.paths.join(" ")
        ));
    }
    let port = server.server_addr().to_ip().map(|a| a.port());
    let mut names: Vec<String> = cfg
        .names
        .iter()
        .map(|n| match port {
            Some(p) if !n.contains(':') => format!("{}:{p}", n.to_ascii_lowercase()),
            _ => n.to_ascii_lowercase(),
        })
        .collect();
    names.push(match server.server_addr().to_ip() {
        Some(a) if a.ip().is_unspecified() => {
            format!("any of its IP addresses on port {}", a.port())
        }
        Some(a) if a.ip().is_loopback() => format!("{a}, localhost:{}", a.port()),
        Some(a) => a.to_string(),
        None => "its address".into(),
    });
    log(&format!(
        "chute serve: answers requests signed for {} (add names with --name)",
        names.join(", ")
    ));
    if cfg.open {
        log(
            "chute serve: WARNING: --open: anyone who can reach this port may read, write and delete any node's blobs; use it only for tests or a trusted LAN",
        );
    } else if cfg.allow.is_empty() {
        log(
            "chute serve: no node is allowed, so every request will be refused (401); admit a node with --allow NODE=KEY or --allow-file FILE, using the line `chute key auth` prints on that node",
        );
    } else {
        let mut nodes: Vec<&String> = cfg.allow.keys().collect();
        crate::sort::sort(&mut nodes);
        log(&format!(
            "chute serve: nodes allowed: {}",
            nodes
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if cfg.append_only {
        log("chute serve: append-only: deletes are refused");
    }
    match cfg.scrub {
        Some(bg) => log(&format!(
            "chute serve: background scrub: a pass every {}, reading at most {}",
            crate::scrub::human_secs(bg.every),
            if bg.rate == 0 {
                "as fast as the disk allows".to_string()
            } else {
                format!("{}/s", crate::units::human_bytes(bg.rate))
            }
        )),
        None => log(
            "chute serve: background scrub off (--scrub-every 30d re-reads every window once a month)",
        ),
    }
    // Before the usage is counted: what a killed server or sink left is garbage
    // (a live writer's, say a local sink's, is kept and counted).
    match store.sweep_temporaries(None, Duration::ZERO) {
        Ok(t) if t.any() => log(&format!("chute serve: temporary files: {}", t.describe())),
        Ok(_) => {}
        Err(e) => log(&format!(
            "chute serve: WARNING: cannot sweep temporary files: {e}"
        )),
    }
    let store = store
        .with_max_window(cfg.max_window)
        .with_max_pending(MAX_PENDING);
    let state = State::new(store, cfg, started)?;
    let state = &state;
    std::thread::scope(|s| {
        if let Some(bg) = cfg.scrub {
            if let Some((_, summary)) = &state.scrub {
                s.spawn(move || {
                    crate::scrub::background(&state.store, bg, &crate::sys::signalled, summary)
                });
            }
        }
        for _ in 0..cfg.threads.max(1) {
            s.spawn(|| {
                while !crate::sys::signalled() {
                    match server.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(mut req)) => {
                            let started = Instant::now();
                            let (seal, reply) = handle(&mut req, state);
                            respond(req, state, seal, reply, started);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            log(&format!("chute serve: accept failed: {e}"));
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            });
        }
    });
    log("chute serve: stopped (requests in flight finished)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_unless_stderr_is_the_journal() {
        assert!(is_journal(Some("8:1234"), Some((8, 1234))));
        assert!(
            !is_journal(Some("8:1234"), Some((8, 1235))),
            "redirected: a file"
        );
        assert!(!is_journal(None, Some((8, 1234))));
        assert!(!is_journal(Some("8:1234"), None));
        assert!(!is_journal(Some("garbage"), Some((8, 1234))));
    }

    /// Issue 14: a signature was good at any peer admitting the node; now the
    /// Host it names must be one of the server's own names.
    #[test]
    fn a_server_answers_to_its_names_and_addresses_only() {
        let v4: std::net::SocketAddr = "127.0.0.1:2002".parse().unwrap();
        let lan: std::net::SocketAddr = "192.168.1.5:2002".parse().unwrap();
        let v6: std::net::SocketAddr = "[::1]:2002".parse().unwrap();
        let mapped: std::net::SocketAddr = "[::ffff:127.0.0.1]:2002".parse().unwrap();
        let names = vec!["peer.test".to_string(), "nas:8080".to_string()];
        let ok = |host: &str, local| own_name(host, &names, Some(local)).is_ok();
        assert!(ok("127.0.0.1:2002", v4));
        assert!(ok("localhost:2002", v4));
        assert!(ok("LocalHost:2002", v4));
        assert!(ok("peer.test:2002", v4));
        assert!(ok("peer.test:2002", lan));
        assert!(
            ok("nas:8080", lan),
            "a name with its port, behind a forward"
        );
        assert!(ok("192.168.1.5:2002", lan));
        assert!(ok("[::1]:2002", v6));
        assert!(ok("localhost:2002", v6));
        assert!(ok("127.0.0.1:2002", mapped));
        assert!(!ok("localhost:2002", lan), "localhost only on loopback");
        assert!(!ok("127.0.0.1:2003", v4));
        assert!(!ok("other:2002", v4));
        assert!(!ok("peer.test:2003", v4));
        assert!(!ok("nas:2002", lan));
        assert!(!ok("raspberrypi:2002", lan), "the host name is not a name");
        assert!(!ok("", v4));
        let port80: std::net::SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert!(ok("peer.test", port80), "no port is port 80");
        assert!(!ok("peer.test", v4));
        assert_eq!(
            own_name("other:1", &names, Some(v4)),
            Err("peer.test:2002".to_string())
        );
        assert_eq!(own_name("x:1", &[], Some(v4)), Err("127.0.0.1:2002".into()));
    }
}
