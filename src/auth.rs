//! Request authentication between nodes: HMAC-SHA256 signatures in HTTP headers.
//!
//! Each node has an auth key derived from its master key, bound to its node name:
//! `auth = HMAC-SHA256(HKDF(master, "chute request auth"), "chute node\0" || node)`.
//! A server that admits the node stores only this key (`chute key auth` prints
//! `<node>=<hex>`); it can check the node's signatures but decrypt nothing, and it
//! cannot sign for any other node. A node that lost everything but its key file
//! derives the same auth key again.
//!
//! A signed request carries:
//!
//! | header | value |
//! |---|---|
//! | `Host` | the peer's authority as the node was given it (see below) |
//! | `X-Chute-Node` | the node name |
//! | `X-Chute-Time` | Unix seconds when signed |
//! | `X-Chute-Nonce` | 32 random hex digits, never reused |
//! | `X-Chute-SHA256` | hex SHA-256 of the body (of the empty string for none) |
//! | `X-Chute-Signature` | hex `HMAC-SHA256(auth, CANONICAL)` |
//!
//! `CANONICAL` is these ten lines joined by `\n` (no newline after the last):
//!
//! ```text
//! chute-auth-v3
//! METHOD
//! PATH
//! TIME
//! NONCE
//! BODY-SHA256
//! content-range:VALUE
//! range:VALUE
//! if-none-match:VALUE
//! host:AUTHORITY
//! ```
//!
//! `PATH` is the request target exactly as sent (with any query); `TIME`, `NONCE`
//! and `BODY-SHA256` are the header values as sent. The last three lines cover
//! every other header the server acts on ([`COVERED`]): the lowercase name, a
//! colon, and the value with surrounding whitespace trimmed, empty when the header
//! is absent (the server reads the first one of a name, and so does the check). An
//! on-path attacker can therefore neither move a window (`Content-Range`), change
//! what a read returns (`Range`), nor turn a read into a `304` (`If-None-Match`).
//! `Content-Length` needs no line: the body is bound by its SHA-256.
//!
//! `AUTHORITY` binds the signature to one peer: `host[:port]` exactly as the node
//! was given it in `--remote http://AUTHORITY` (lowercased, no trailing slash),
//! sent as the request's `Host`. The server checks the signature over the `Host`
//! it received, then that it is one of its own names, else `401` ("request signed
//! for peer X, this peer is Y"). Its names: every `chute serve --name NAME`
//! (`CHUTE_NAME`, comma-separated), matched as `NAME:PORT` with the port the
//! connection arrived on, or exactly when the name gives a port (`nas:8080`
//! behind a port forward); the address the connection arrived on as a literal
//! (`192.168.1.5:2002`, `[::1]:2002`); and `localhost:PORT` when that address is
//! loopback. A `Host` without a port is port 80's. The machine's host name is not
//! a name unless given (every Raspberry Pi is called raspberrypi). So a peer that
//! admits a node cannot replay the node's requests to another peer that admits
//! it too. A signature of the previous version (`chute-auth-v2`, without the
//! `host:` line) is refused with `401` "old signature version, upgrade chute on
//! this node".
//!
//! # Answers
//! Every answer to a request the server verified as signed by an admitted node
//! carries `X-Chute-Answer: <hex HMAC-SHA256(auth, CANONICAL-ANSWER)>`, under the
//! same node key, with `CANONICAL-ANSWER` these nine lines joined by `\n`:
//!
//! ```text
//! chute-answer-v1
//! REQUEST-NONCE
//! STATUS
//! BODY
//! content-length:VALUE
//! content-range:VALUE
//! etag:VALUE
//! retry-after:VALUE
//! x-chute-state:VALUE
//! ```
//!
//! `REQUEST-NONCE` is the `X-Chute-Nonce` of the request answered, `STATUS` the
//! decimal status, and each header line the value sent, empty when absent
//! ([`ANSWER_COVERED`]); the server always sends `Content-Length` (never a chunked
//! body). `BODY` is the hex SHA-256 of the body for every JSON or small answer
//! (lists, acknowledgements, hashes, created URIs, indexes, errors, `304`), and
//! the word `sealed` for a window or a range of part 0: those bytes are
//! authenticated end to end by the node itself (every chunk and manifest segment
//! is AEAD-sealed and bound to its id and blob path, every window's SHA-256 is in
//! the sealed header, and verify, restore and prune check them), while the MAC
//! still binds their status, length and range, so neither a 404 nor a truncation
//! can be forged. The label differs from the request's, so neither MAC passes for
//! the other. The client checks the MAC against its own request's nonce before it
//! acts on anything in the answer (a list, an acknowledgement, a hash, a 404, a
//! 409), and fails with "answer from PEER is not authenticated" otherwise: an
//! on-path attacker can drop or delay answers, not forge them. A 429 or 503
//! without a valid MAC is still waited out within the retry budget (it only
//! delays); a 401 without one keeps the peer's reason, marked unauthenticated.
//!
//! Answers to requests that failed before the node was verified (unsigned, bad
//! signature, unknown node, malformed or stale headers, replays, rate limits) carry
//! no MAC: the server cannot tell whose key to use; nor do tiny_http's own early
//! answers (400, 408, 411, 431). An `--open` server answers a caller it holds no
//! key for with `X-Chute-Answer: open`; the client then warns once per process
//! that the peer's answers cannot be authenticated, and accepts them. That is a
//! downgrade an on-path attacker can force by stripping the MAC and writing
//! `open`: a node that talks only to admitting servers should not accept it (not
//! yet enforced).
//!
//! On an `--append-only` server a DELETE must also carry `X-Chute-Admin`: hex
//! `HMAC-SHA256(SHA-256(admin key file), "chute-admin-v1\n" METHOD "\n" PATH "\n"
//! TIME "\n" NONCE)` with the same time and nonce as the signature, so the proof
//! cannot be lifted onto another request. On an `--open` server an anonymous
//! caller may send the proof alone, with `X-Chute-Time` and `X-Chute-Nonce`: its
//! time and nonce get the same checks as a signature's, in a table of the admin
//! key's own.
//!
//! # What the server refuses
//! - `401`: a signature that does not verify; a time more than [`MAX_SKEW`] seconds
//!   from the server's clock (stale); a time before the second the server started;
//!   a nonce the node already used (replay).
//! - `429` with `Retry-After: SECONDS`: a node past its request rate (a token
//!   bucket per node: `--rate-limit` requests a second, `--rate-burst` at once), or
//!   whose nonce table is full. Only the node's own requests are refused: each
//!   admitted node has its own bucket and its own table, so a flooding node
//!   throttles itself and no other.
//!
//! The server checks the body against `X-Chute-SHA256` before acting on it.
//!
//! # Replay
//! Each node's table remembers a 64-bit keyed hash of every nonce it accepted,
//! with an expiry, at most [`MAX_NONCES`] entries (16 bytes each, about 4.5 MB with
//! the hash table's slack, per node). A request signed at `TIME` is refused as
//! stale once the server's clock passes `TIME + MAX_SKEW`, and `TIME` is signed, so
//! a replay of it can be accepted only until then: the nonce is kept exactly that
//! long. Since `TIME >= receive time - MAX_SKEW`, that is never later than
//! receive time + 2 x `MAX_SKEW`. A node whose clock is in sync so holds at most
//! `--rate-limit` x `MAX_SKEW` + burst entries: 151,000 at the defaults, below
//! the cap. One whose clock runs ahead holds more, and at the cap is answered 429
//! until its first entries expire; no other node is affected.
//!
//! The tables live in memory. So that a restart does not forget them, a server
//! refuses every request signed before the second it started: a request captured
//! from an earlier run cannot be replayed. The trade-off is clock skew: a node
//! whose clock lags the server's by `k` seconds is refused (`401`, "signed before
//! this server started") for the first `k` seconds after each start, and a node
//! whose clock runs `k` seconds ahead leaves its requests of the last `k` seconds
//! before a restart replayable for `k` seconds after it. Keep clocks in sync (NTP);
//! `MAX_SKEW` bounds both. A request captured in the very second of a restart is
//! the one residual case.

use crate::crypto::Keys;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

pub const NODE: &str = "X-Chute-Node";
pub const TIME: &str = "X-Chute-Time";
pub const NONCE: &str = "X-Chute-Nonce";
pub const BODY: &str = "X-Chute-SHA256";
pub const SIGNATURE: &str = "X-Chute-Signature";
/// Proof of the admin key, which an `--append-only` server asks of every delete.
pub const ADMIN: &str = "X-Chute-Admin";
/// The other headers the server acts on, covered by the signature in this order.
pub const COVERED: [&str; 3] = ["Content-Range", "Range", "If-None-Match"];
/// The first line of the canonical string: a new one for every change of it.
const LABEL: &str = "chute-auth-v3";
/// The label of the previous canonical string (no `host:` line): recognised only
/// to tell an old node to upgrade.
const OLD_LABEL: &str = "chute-auth-v2";
/// The MAC of an answer (see "Answers" in the module docs), or [`ANSWER_OPEN`].
pub const ANSWER: &str = "X-Chute-Answer";
/// What an `--open` server answers a caller it holds no key for.
pub const ANSWER_OPEN: &str = "open";
/// Whether an `index.json` answer is a pending blob's index (`pending`).
pub const STATE: &str = "X-Chute-State";
/// The answer headers a client acts on, covered by the answer MAC in this order.
pub const ANSWER_COVERED: [&str; 5] = [
    "Content-Length",
    "Content-Range",
    "ETag",
    "Retry-After",
    STATE,
];
/// The first line of an answer's canonical string: differs from the request's, so
/// neither MAC can pass for the other.
const ANSWER_LABEL: &str = "chute-answer-v1";
/// The body line of an answer whose bytes are sealed by the node itself (a window
/// or a range of part 0), so the MAC does not hash them.
const SEALED: &str = "sealed";
/// How far a request's time may be from the server's clock, in seconds.
pub const MAX_SKEW: i64 = 300;
/// The most nonces one node's table (or the admin key's) remembers at once; past
/// it that node is answered 429 until some expire. 7/8 of 2^18: the most a table
/// of 2^18 slots holds before it grows (about 4.5 MB).
pub const MAX_NONCES: usize = 229_376;
/// Requests a second a node may make, sustained, by default: an honest 64 MiB
/// sink, restore and `verify --read-data` on loopback peaks at about 120 in a
/// second, and a restore at full loopback speed makes about 190 a second.
pub const DEFAULT_RATE: u32 = 500;
/// Requests a node may make at once by default (the token bucket's depth).
pub const DEFAULT_BURST: u32 = 1000;

/// The auth key a server holds for `node`.
pub fn node_key(keys: &Keys, node: &str) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(keys.auth_key()).expect("any key length");
    mac.update(b"chute node\0");
    mac.update(node.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The request signature's MAC over the canonical string (see the module docs);
/// `host: None` gives the old `chute-auth-v2` string, without its line.
#[allow(clippy::too_many_arguments)] // the canonical string's fields, each named
fn mac(
    key: &[u8; 32],
    method: &str,
    path: &str,
    time: &str,
    nonce: &str,
    body: &str,
    covered: &[&str; 3],
    host: Option<&str>,
) -> Hmac<Sha256> {
    let mut lines: Vec<String> = COVERED
        .iter()
        .zip(covered)
        .map(|(name, value)| format!("{}:{}", name.to_ascii_lowercase(), value.trim()))
        .collect();
    let label = match host {
        Some(h) => {
            lines.push(format!("host:{}", h.trim()));
            LABEL
        }
        None => OLD_LABEL,
    };
    let mut parts = vec![label, method, path, time, nonce, body];
    parts.extend(lines.iter().map(String::as_str));
    mac_over(key, &parts)
}

/// What an answer's MAC says of its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerBody<'a> {
    /// The SHA-256 of the whole body (every JSON or small answer).
    Sha256(&'a [u8; 32]),
    /// Bytes the node sealed itself (a window, a range of part 0): not hashed.
    Sealed,
}

/// The answer MAC over the canonical answer string (see "Answers" in the module
/// docs): `nonce` is the request's, `covered` the values of [`ANSWER_COVERED`]
/// (empty when absent).
fn answer_mac(
    key: &[u8; 32],
    nonce: &str,
    status: u16,
    body: AnswerBody,
    covered: &[&str; 5],
) -> Hmac<Sha256> {
    let status = status.to_string();
    let body = match body {
        AnswerBody::Sha256(d) => crate::hex::encode(d),
        AnswerBody::Sealed => SEALED.to_string(),
    };
    let lines: Vec<String> = ANSWER_COVERED
        .iter()
        .zip(covered)
        .map(|(name, value)| format!("{}:{}", name.to_ascii_lowercase(), value.trim()))
        .collect();
    let mut parts = vec![ANSWER_LABEL, nonce, &status, &body];
    parts.extend(lines.iter().map(String::as_str));
    mac_over(key, &parts)
}

/// The `X-Chute-Answer` value a server sends with an answer to a request of the
/// node whose auth key is `key`.
pub fn answer_tag(
    key: &[u8; 32],
    nonce: &str,
    status: u16,
    body: AnswerBody,
    covered: &[&str; 5],
) -> String {
    crate::hex::encode(
        &answer_mac(key, nonce, status, body, covered)
            .finalize()
            .into_bytes(),
    )
}

/// Checks an answer's `X-Chute-Answer` value in constant time.
pub fn answer_ok(
    key: &[u8; 32],
    nonce: &str,
    status: u16,
    body: AnswerBody,
    covered: &[&str; 5],
    tag: &str,
) -> bool {
    let Some(t) = crate::hex::decode(tag.trim()) else {
        return false;
    };
    answer_mac(key, nonce, status, body, covered)
        .verify_slice(&t)
        .is_ok()
}

/// The values of the [`COVERED`] headers among `headers` (the first of each name,
/// empty if absent).
pub fn covered<'a>(headers: &[(&str, &'a str)]) -> [&'a str; 3] {
    COVERED.map(|name| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| *v)
    })
}

/// A node's signing identity, on the client side.
#[derive(Clone)]
pub struct Signer {
    pub node: String,
    key: [u8; 32],
    admin: Option<[u8; 32]>,
    /// The peer's authority the signatures are bound to, sent as `Host`.
    host: String,
}

impl Signer {
    pub fn new(keys: &Keys, node: &str) -> Signer {
        Signer {
            node: node.to_string(),
            key: node_key(keys, node),
            admin: None,
            host: String::new(),
        }
    }

    /// Binds every signature to the peer at `authority` (`host[:port]` as given
    /// in `--remote`, lowercased here): it is sent as the `Host` header, and
    /// another peer refuses the request.
    pub fn for_peer(mut self, authority: &str) -> Signer {
        self.host = authority.trim().to_ascii_lowercase();
        self
    }

    /// The node's auth key: what checks the peer's answers.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// Also proves the admin key (SHA-256 of the admin key file's bytes) on every
    /// request: what forget and prune need on an append-only server.
    pub fn with_admin(mut self, admin_key: [u8; 32]) -> Signer {
        self.admin = Some(admin_key);
        self
    }

    /// The headers that sign one request whose other headers are `headers` (the
    /// [`COVERED`] ones among them are signed too: send them unchanged), with
    /// `Host` (the peer given to [`Signer::for_peer`]) first: send it as is.
    pub fn headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_sha256: &[u8; 32],
    ) -> Vec<(&'static str, String)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.headers_at(method, path, headers, body_sha256, now)
    }

    /// The headers that sign one request as if sent at `unix_secs` (tests use this
    /// to show that stale requests are refused).
    pub fn headers_at(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_sha256: &[u8; 32],
        unix_secs: u64,
    ) -> Vec<(&'static str, String)> {
        let mut n = [0u8; 16];
        getrandom::fill(&mut n).expect("the system random generator failed");
        let nonce = crate::hex::encode(&n);
        self.headers_with(method, path, headers, body_sha256, unix_secs, &nonce)
    }

    /// As [`Signer::headers_at`] with a given nonce: only for pinned test vectors.
    pub(crate) fn headers_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_sha256: &[u8; 32],
        unix_secs: u64,
        nonce: &str,
    ) -> Vec<(&'static str, String)> {
        let time = unix_secs.to_string();
        let body = crate::hex::encode(body_sha256);
        let sig = mac(
            &self.key,
            method,
            path,
            &time,
            nonce,
            &body,
            &covered(headers),
            Some(&self.host),
        )
        .finalize()
        .into_bytes();
        let mut out = vec![
            ("Host", self.host.clone()),
            (NODE, self.node.clone()),
            (TIME, time),
            (NONCE, nonce.to_string()),
            (BODY, body),
            (SIGNATURE, crate::hex::encode(&sig)),
        ];
        if let Some(a) = &self.admin {
            out.push((ADMIN, admin_proof(a, method, path, &out[2].1, &out[3].1)));
        }
        out
    }
}

/// `HMAC-SHA256(admin key, "chute-admin-v1\n" METHOD "\n" PATH "\n" TIME "\n" NONCE)`,
/// hex: bound to one signed request by its time and nonce, so it cannot be replayed
/// apart from it.
pub fn admin_proof(admin: &[u8; 32], method: &str, path: &str, time: &str, nonce: &str) -> String {
    let m = mac_over(admin, &["chute-admin-v1", method, path, time, nonce]);
    crate::hex::encode(&m.finalize().into_bytes())
}

/// Checks an admin proof in constant time.
pub fn admin_ok(
    admin: &[u8; 32],
    method: &str,
    path: &str,
    time: &str,
    nonce: &str,
    proof: &str,
) -> bool {
    let Some(p) = crate::hex::decode(proof) else {
        return false;
    };
    mac_over(admin, &["chute-admin-v1", method, path, time, nonce])
        .verify_slice(&p)
        .is_ok()
}

fn mac_over(key: &[u8; 32], parts: &[&str]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            m.update(b"\n");
        }
        m.update(part.as_bytes());
    }
    m
}

/// What the server knows of one admitted node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    pub key: [u8; 32],
    pub quota: Option<u64>,
}

/// Parses `NODE=HEXKEY [quota=BYTES]`, as `chute key auth` prints and allow files hold.
pub fn parse_allow(line: &str) -> Result<(String, Admitted), String> {
    let mut words = line.split_whitespace();
    let first = words.next().ok_or("empty allow line")?;
    let (node, key) = first
        .split_once('=')
        .ok_or_else(|| format!("{first:?} is not NODE=KEY"))?;
    if !crate::blob::valid_component(node) {
        return Err(format!("invalid node name {node:?}"));
    }
    let key = crate::hex::decode32(key)
        .ok_or_else(|| format!("the key for {node} is not 64 hex digits"))?;
    let mut quota = None;
    for w in words {
        match w.split_once('=') {
            Some(("quota", q)) => quota = Some(crate::units::parse_bytes(q)?),
            _ => return Err(format!("unknown option {w:?} (expected quota=BYTES)")),
        }
    }
    Ok((node.to_string(), Admitted { key, quota }))
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Unsigned,
    UnknownNode(String),
    Malformed(&'static str),
    Stale(i64),
    /// Signed before the server started (at these Unix seconds).
    BeforeStart(i64),
    Replayed,
    BadSignature,
    /// Signed by an older chute (`chute-auth-v2`, not bound to a peer).
    OldVersion,
    /// Signed for another peer (the `Host` it was signed for, this peer's name).
    WrongPeer(String, String),
    /// Past the node's request rate: retry after these seconds.
    RateLimited(u64),
    /// The node's nonce table is full: retry after these seconds.
    Busy(u64),
}

impl Refusal {
    /// Seconds after which the same request, signed afresh, may pass: the refusals
    /// that are throttling (429) rather than authentication (401).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::RateLimited(s) | Refusal::Busy(s) => Some(*s),
            _ => None,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unsigned => f.write_str(
                "unsigned request: this server admits only nodes allowed with --allow (run `chute key auth` on the node)",
            ),
            Refusal::UnknownNode(n) => write!(f, "node {n:?} is not allowed on this server"),
            Refusal::Malformed(h) => write!(f, "malformed {h} header"),
            Refusal::Stale(now) => write!(
                f,
                "request time is more than {MAX_SKEW} s from the server's clock ({now}); check the node's clock"
            ),
            Refusal::BeforeStart(start) => write!(
                f,
                "request signed before this server started ({start}): a replay, or the node's clock is behind the server's"
            ),
            Refusal::Replayed => f.write_str("replayed request (nonce already used)"),
            Refusal::BadSignature => f.write_str("bad signature (wrong key for this node?)"),
            Refusal::OldVersion => {
                f.write_str("old signature version, upgrade chute on this node")
            }
            Refusal::WrongPeer(signed, this) => write!(
                f,
                "request signed for peer {signed:?}, this peer is {this:?} (chute serve --name {signed} admits that name)"
            ),
            Refusal::RateLimited(s) => {
                write!(f, "too many requests from this node; retry in {s} s")
            }
            Refusal::Busy(s) => write!(
                f,
                "too many requests from this node in the replay window; retry in {s} s"
            ),
        }
    }
}

/// A per-node request rate: a token bucket `burst` deep, refilled at `per_sec`
/// tokens a second; `per_sec` 0 is no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_sec: u32,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            per_sec: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

/// One token bucket.
struct Bucket {
    tokens: f64,
    last: f64,
}

impl Bucket {
    fn new(rate: RateLimit) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst.max(1)),
            last: 0.0,
        }
    }

    /// Takes a token at `now` (seconds), or says in how many seconds one is due.
    fn take(&mut self, rate: RateLimit, now: f64) -> Result<(), u64> {
        if rate.per_sec == 0 {
            return Ok(());
        }
        let per_sec = f64::from(rate.per_sec);
        // A clock that steps back refills nothing (and is not a debt either).
        let elapsed = (now - self.last).max(0.0);
        self.last = now;
        self.tokens = (self.tokens + elapsed * per_sec).min(f64::from(rate.burst.max(1)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(((1.0 - self.tokens) / per_sec).ceil().max(1.0) as u64)
    }
}

/// The nonces one identity (a node, or the admin key) used recently: a keyed
/// 64-bit hash of each with the second after which a replay of it would be stale.
struct Nonces {
    hasher: RandomState,
    until: HashMap<u64, i64>,
    /// When expired entries are next dropped.
    next_sweep: i64,
    /// While full of live entries: when the first of them expires. Until then a
    /// refusal costs no sweep.
    full_until: i64,
}

impl Nonces {
    fn new() -> Nonces {
        Nonces {
            hasher: RandomState::new(),
            until: HashMap::new(),
            next_sweep: 0,
            full_until: 0,
        }
    }

    /// Remembers `nonce` until `until`, or refuses it: seen (and not yet expired),
    /// or the table is full.
    fn take(&mut self, nonce: &str, until: i64, now: i64) -> Result<(), Refusal> {
        let full = self.until.len() >= MAX_NONCES;
        if now >= self.next_sweep || (full && now >= self.full_until) {
            self.until.retain(|_, u| *u >= now);
            self.next_sweep = now + MAX_SKEW;
            if self.until.len() >= MAX_NONCES {
                let soonest = self.until.values().copied().min().unwrap_or(now);
                self.full_until = soonest + 1;
            }
        }
        let key = self.hasher.hash_one(nonce);
        if self.until.get(&key).is_some_and(|u| *u >= now) {
            return Err(Refusal::Replayed);
        }
        if self.until.len() >= MAX_NONCES && !self.until.contains_key(&key) {
            return Err(Refusal::Busy((self.full_until - now).max(1) as u64));
        }
        self.until.insert(key, until);
        Ok(())
    }
}

/// What the server keeps per admitted node.
struct NodeState {
    bucket: Bucket,
    nonces: Nonces,
}

/// The server side: admitted nodes, each with its own rate bucket and nonce table.
pub struct Verifier {
    pub nodes: HashMap<String, Admitted>,
    /// Unix seconds when the server started: earlier requests are refused.
    start: i64,
    rate: RateLimit,
    state: HashMap<String, Mutex<NodeState>>,
    /// Nonces of admin proofs sent without a node signature (`--open`).
    admin: Mutex<Nonces>,
}

/// The signature headers of one request, as received.
pub struct Signed<'a> {
    pub node: &'a str,
    pub time: &'a str,
    pub nonce: &'a str,
    pub body: &'a str,
    pub signature: &'a str,
    /// The values of the [`COVERED`] headers, empty if absent.
    pub covered: [&'a str; 3],
    /// The `Host` header, empty if absent.
    pub host: &'a str,
}

impl Verifier {
    /// A verifier for `nodes`, for a server started at Unix second `start`.
    pub fn new(nodes: HashMap<String, Admitted>, start: i64, rate: RateLimit) -> Verifier {
        let state = nodes
            .keys()
            .map(|n| {
                let s = NodeState {
                    bucket: Bucket::new(rate),
                    nonces: Nonces::new(),
                };
                (n.clone(), Mutex::new(s))
            })
            .collect();
        Verifier {
            nodes,
            start,
            rate,
            state,
            admin: Mutex::new(Nonces::new()),
        }
    }

    /// A request time that is fresh at `now`, parsed.
    fn fresh(&self, time: &str, now: i64) -> Result<i64, Refusal> {
        let time: i64 = time.parse().map_err(|_| Refusal::Malformed(TIME))?;
        if now.abs_diff(time) > MAX_SKEW as u64 {
            return Err(Refusal::Stale(now));
        }
        if time < self.start {
            return Err(Refusal::BeforeStart(self.start));
        }
        Ok(time)
    }

    /// Checks one request's signature at server time `now` (since the Unix epoch);
    /// returns the node.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        h: &Signed,
        now: Duration,
    ) -> Result<String, Refusal> {
        let secs = now.as_secs() as i64;
        let (admitted, state) = match (self.nodes.get(h.node), self.state.get(h.node)) {
            (Some(a), Some(s)) => (a, s),
            _ => return Err(Refusal::UnknownNode(h.node.to_string())),
        };
        let time = self.fresh(h.time, secs)?;
        check_nonce(h.nonce)?;
        if crate::hex::decode32(h.body).is_none() {
            return Err(Refusal::Malformed(BODY));
        }
        let sig = crate::hex::decode(h.signature).ok_or(Refusal::Malformed(SIGNATURE))?;
        let v3 = |host| {
            mac(
                &admitted.key,
                method,
                path,
                h.time,
                h.nonce,
                h.body,
                &h.covered,
                host,
            )
        };
        if v3(Some(h.host)).verify_slice(&sig).is_err() {
            // A node not yet upgraded is told so, not that its key is wrong.
            return Err(match v3(None).verify_slice(&sig) {
                Ok(()) => Refusal::OldVersion,
                Err(_) => Refusal::BadSignature,
            });
        }
        // Only a verified request is counted or takes a nonce: forged ones cannot
        // throttle a node. The rate comes first, so it bounds the table's growth.
        let mut state = state.lock().expect("poisoned");
        state
            .bucket
            .take(self.rate, now.as_secs_f64())
            .map_err(Refusal::RateLimited)?;
        state.nonces.take(h.nonce, time + MAX_SKEW, secs)?;
        Ok(h.node.to_string())
    }

    /// The time and nonce checks of [`Verifier::check`] for an admin proof that
    /// came without a node signature (an anonymous caller on an `--open` server):
    /// the proof binds them, these make them fresh and single-use.
    pub fn check_admin(&self, time: &str, nonce: &str, now: Duration) -> Result<(), Refusal> {
        let secs = now.as_secs() as i64;
        let time = self.fresh(time, secs)?;
        check_nonce(nonce)?;
        let mut nonces = self.admin.lock().expect("poisoned");
        nonces.take(nonce, time + MAX_SKEW, secs)
    }
}

fn check_nonce(nonce: &str) -> Result<(), Refusal> {
    if nonce.len() < 16 || nonce.len() > 64 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Refusal::Malformed(NONCE));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed<'a>(h: &'a [(&'static str, String)], covered: [&'a str; 3]) -> Signed<'a> {
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        Signed {
            node: get(NODE),
            time: get(TIME),
            nonce: get(NONCE),
            body: get(BODY),
            signature: get(SIGNATURE),
            covered,
            host: get("Host"),
        }
    }

    fn now() -> Duration {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    }

    fn secs(s: i64) -> Duration {
        Duration::from_secs(s as u64)
    }

    fn verifier(keys: &Keys, nodes: &[&str], start: i64, rate: RateLimit) -> Verifier {
        let nodes = nodes
            .iter()
            .map(|n| {
                let line = format!("{n}={}", crate::hex::encode(&node_key(keys, n)));
                parse_allow(&line).unwrap()
            })
            .collect();
        Verifier::new(nodes, start, rate)
    }

    const NONE: [&str; 3] = ["", "", ""];

    #[test]
    fn sign_verify_stale_replay_and_tamper() {
        let keys = Keys::from_key_bytes(b"k");
        let s = Signer::new(&keys, "pi");
        let (_, admitted) = parse_allow(&format!(
            "pi={} quota=1G",
            crate::hex::encode(&node_key(&keys, "pi"))
        ))
        .unwrap();
        assert_eq!(admitted.quota, Some(1 << 30));
        let v = verifier(&keys, &["pi"], 0, RateLimit::default());
        let now = now();
        let t = now.as_secs() as i64;
        let h = s.headers("PUT", "/chute/blob/d/pi/m/t/0/4/0", &[], &[1; 32]);
        assert_eq!(
            v.check("PUT", "/chute/blob/d/pi/m/t/0/4/0", &signed(&h, NONE), now),
            Ok("pi".into())
        );
        assert_eq!(
            v.check("PUT", "/chute/blob/d/pi/m/t/0/4/0", &signed(&h, NONE), now),
            Err(Refusal::Replayed)
        );
        let h = s.headers("PUT", "/x", &[], &[1; 32]);
        assert_eq!(
            v.check("PUT", "/y", &signed(&h, NONE), now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            v.check("GET", "/x", &signed(&h, NONE), now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            v.check("PUT", "/x", &signed(&h, NONE), secs(t + 1000)),
            Err(Refusal::Stale(t + 1000))
        );
        let other = Signer::new(&Keys::from_key_bytes(b"other"), "pi");
        let h = other.headers("PUT", "/x", &[], &[1; 32]);
        assert_eq!(
            v.check("PUT", "/x", &signed(&h, NONE), now),
            Err(Refusal::BadSignature)
        );
    }

    /// Issue 13: Content-Range was not signed, so a window could be moved.
    #[test]
    fn covered_headers_are_signed() {
        let keys = Keys::from_key_bytes(b"k");
        let s = Signer::new(&keys, "pi");
        let v = verifier(&keys, &["pi"], 0, RateLimit::default());
        let sent = [
            ("Content-Type", "application/octet-stream"),
            ("content-range", " bytes 0-3/* "),
        ];
        let h = s.headers("PUT", "/p/0", &sent, &[1; 32]);
        for wrong in [
            ["bytes 4-7/*", "", ""],
            ["", "", ""],
            ["bytes 0-3/*", "bytes=0-3", ""],
            ["bytes 0-3/*", "", "\"x\""],
        ] {
            assert_eq!(
                v.check("PUT", "/p/0", &signed(&h, wrong), now()),
                Err(Refusal::BadSignature),
                "{wrong:?}"
            );
        }
        // Names match in any case; values as the server reads them (trimmed).
        assert_eq!(
            v.check("PUT", "/p/0", &signed(&h, ["bytes 0-3/*", "", ""]), now()),
            Ok("pi".into())
        );
    }

    /// The canonical string of the module docs, pinned: a changed byte fails here.
    #[test]
    fn signature_vector_v3() {
        let s = Signer {
            node: "pi".into(),
            key: [7; 32],
            admin: Some([9; 32]),
            host: String::new(),
        }
        .for_peer("Peer.Example:2002");
        let body = crate::crypto::sha256(b"abcd");
        let nonce = "000102030405060708090a0b0c0d0e0f";
        let h = s.headers_with(
            "PUT",
            "/chute/blob/d/pi/m/t/0",
            &[("Content-Range", "bytes 4-7/*")],
            &body,
            1_700_000_000,
            nonce,
        );
        // The reference, written from the docs alone.
        let canonical = format!(
            "chute-auth-v3\nPUT\n/chute/blob/d/pi/m/t/0\n1700000000\n{nonce}\n{}\ncontent-range:bytes 4-7/*\nrange:\nif-none-match:\nhost:peer.example:2002",
            crate::hex::encode(&body)
        );
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7; 32]).unwrap();
        m.update(canonical.as_bytes());
        let reference = crate::hex::encode(&m.finalize().into_bytes());
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(get(SIGNATURE), reference);
        assert_eq!(
            get(SIGNATURE),
            "ca28e0eacc74efbbbed43e26e2a1001da6dcc4b62b38378515b28a0770c680ff"
        );
        assert_eq!(get("Host"), "peer.example:2002");
        assert_eq!(get(NODE), "pi");
        assert_eq!(get(TIME), "1700000000");
        assert_eq!(get(NONCE), nonce);
        assert_eq!(
            get(ADMIN),
            admin_proof(
                &[9; 32],
                "PUT",
                "/chute/blob/d/pi/m/t/0",
                "1700000000",
                nonce
            )
        );
    }

    /// The canonical answer string of the module docs, pinned.
    #[test]
    fn answer_vector_v1() {
        let key = [7; 32];
        let nonce = "000102030405060708090a0b0c0d0e0f";
        let body = crate::crypto::sha256(b"true");
        let covered = ["4", "", "", "", ""];
        let tag = answer_tag(&key, nonce, 201, AnswerBody::Sha256(&body), &covered);
        let canonical = format!(
            "chute-answer-v1\n{nonce}\n201\n{}\ncontent-length:4\ncontent-range:\netag:\nretry-after:\nx-chute-state:",
            crate::hex::encode(&body)
        );
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        m.update(canonical.as_bytes());
        assert_eq!(tag, crate::hex::encode(&m.finalize().into_bytes()));
        assert_eq!(
            tag,
            "6bb03091b218bbf421db1908d1964c3e8aa1badeb2f16691c16718e48a525792"
        );
        let sealed = answer_tag(
            &key,
            nonce,
            206,
            AnswerBody::Sealed,
            &["3", "bytes 0-2/9", "", "", ""],
        );
        let canonical = format!(
            "chute-answer-v1\n{nonce}\n206\nsealed\ncontent-length:3\ncontent-range:bytes 0-2/9\netag:\nretry-after:\nx-chute-state:"
        );
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        m.update(canonical.as_bytes());
        assert_eq!(sealed, crate::hex::encode(&m.finalize().into_bytes()));
    }

    /// Issue 14: answers were not authenticated: an edited status, body or covered
    /// header, another request's nonce or another key all fail the check.
    #[test]
    fn answers_are_bound_to_request_status_body_and_headers() {
        let key = [7; 32];
        let nonce = "000102030405060708090a0b0c0d0e0f";
        let body = crate::crypto::sha256(b"[]");
        let covered = ["2", "", "", "", ""];
        let tag = answer_tag(&key, nonce, 200, AnswerBody::Sha256(&body), &covered);
        assert!(answer_ok(
            &key,
            nonce,
            200,
            AnswerBody::Sha256(&body),
            &covered,
            &tag
        ));
        let other = crate::crypto::sha256(b"[1]");
        assert!(!answer_ok(
            &key,
            nonce,
            404,
            AnswerBody::Sha256(&body),
            &covered,
            &tag
        ));
        assert!(!answer_ok(
            &key,
            nonce,
            200,
            AnswerBody::Sha256(&other),
            &covered,
            &tag
        ));
        assert!(!answer_ok(
            &key,
            nonce,
            200,
            AnswerBody::Sealed,
            &covered,
            &tag
        ));
        assert!(!answer_ok(
            &key,
            "00",
            200,
            AnswerBody::Sha256(&body),
            &covered,
            &tag
        ));
        assert!(!answer_ok(
            &[8; 32],
            nonce,
            200,
            AnswerBody::Sha256(&body),
            &covered,
            &tag
        ));
        for i in 0..5 {
            let mut c = covered;
            c[i] = "9";
            assert!(
                !answer_ok(&key, nonce, 200, AnswerBody::Sha256(&body), &c, &tag),
                "{i}"
            );
        }
        assert!(!answer_ok(
            &key,
            nonce,
            200,
            AnswerBody::Sha256(&body),
            &covered,
            "open"
        ));
        assert!(!answer_ok(
            &key,
            nonce,
            200,
            AnswerBody::Sha256(&body),
            &covered,
            ""
        ));
        // A request's signature is never an answer's MAC.
        let s = Signer::new(&Keys::from_key_bytes(b"k"), "pi").for_peer("h:1");
        let h = s.headers_with("GET", "/", &[], &body, 1, nonce);
        let sig = &h.iter().find(|(k, _)| *k == SIGNATURE).unwrap().1;
        assert!(!answer_ok(
            s.key(),
            nonce,
            200,
            AnswerBody::Sha256(&body),
            &covered,
            sig
        ));
    }

    /// Issue 14: a signature was good for every peer that admits the node; a v2
    /// signature (no host) is refused as old, not as a wrong key.
    #[test]
    fn signatures_are_bound_to_the_host_and_v2_is_refused_as_old() {
        let keys = Keys::from_key_bytes(b"k");
        let v = verifier(&keys, &["pi"], 0, RateLimit::default());
        let s = Signer::new(&keys, "pi").for_peer("a:1");
        let h = s.headers("GET", "/x", &[], &[0; 32]);
        let mut other = signed(&h, NONE);
        other.host = "b:1";
        assert_eq!(
            v.check("GET", "/x", &other, now()),
            Err(Refusal::BadSignature)
        );
        let t = now().as_secs().to_string();
        let nonce = "00112233445566778899aabbccddeeff";
        let body = crate::hex::encode(&[0; 32]);
        let old = mac(&s.key, "GET", "/y", &t, nonce, &body, &NONE, None);
        let sig = crate::hex::encode(&old.finalize().into_bytes());
        let req = Signed {
            node: "pi",
            time: &t,
            nonce,
            body: &body,
            signature: &sig,
            covered: NONE,
            host: "a:1",
        };
        let refused = v.check("GET", "/y", &req, now()).unwrap_err();
        assert_eq!(refused, Refusal::OldVersion);
        assert!(refused.to_string().contains("upgrade chute on this node"));
        assert!(v.check("GET", "/x", &signed(&h, NONE), now()).is_ok());
    }

    /// Issue 13: a replay table in memory forgot everything on restart.
    #[test]
    fn requests_signed_before_the_start_are_refused() {
        let keys = Keys::from_key_bytes(b"k");
        let s = Signer::new(&keys, "pi");
        let t = now().as_secs() as i64;
        let v = verifier(&keys, &["pi"], t, RateLimit::default());
        let old = s.headers_at("DELETE", "/x", &[], &[0; 32], (t - 1) as u64);
        let refused = v.check("DELETE", "/x", &signed(&old, NONE), secs(t));
        assert_eq!(refused, Err(Refusal::BeforeStart(t)));
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("before this server started")
        );
        let fresh = s.headers_at("DELETE", "/x", &[], &[0; 32], t as u64);
        assert!(
            v.check("DELETE", "/x", &signed(&fresh, NONE), secs(t))
                .is_ok()
        );
    }

    /// Issue 13: one node's requests throttled every node.
    #[test]
    fn each_node_has_its_own_rate() {
        let keys = Keys::from_key_bytes(b"k");
        let rate = RateLimit {
            per_sec: 2,
            burst: 3,
        };
        let v = verifier(&keys, &["a", "b"], 0, rate);
        let (a, b) = (Signer::new(&keys, "a"), Signer::new(&keys, "b"));
        let t = now();
        let go = |s: &Signer, at: Duration| {
            let h = s.headers_at("GET", "/", &[], &[0; 32], at.as_secs());
            v.check("GET", "/", &signed(&h, NONE), at)
        };
        for _ in 0..3 {
            assert!(go(&a, t).is_ok());
        }
        let refused = go(&a, t).unwrap_err();
        assert_eq!(refused, Refusal::RateLimited(1));
        assert_eq!(refused.retry_after(), Some(1));
        assert!(go(&b, t).is_ok(), "another node is not throttled");
        assert!(go(&a, t + Duration::from_millis(500)).is_ok(), "refilled");
        let off = verifier(
            &keys,
            &["a"],
            0,
            RateLimit {
                per_sec: 0,
                burst: 0,
            },
        );
        for _ in 0..50 {
            let h = a.headers("GET", "/", &[], &[0; 32]);
            assert!(off.check("GET", "/", &signed(&h, NONE), t).is_ok());
        }
    }

    #[test]
    fn a_full_nonce_table_refuses_only_until_its_first_entry_expires() {
        let mut n = Nonces::new();
        let now = 1_000_000;
        for i in 0..MAX_NONCES {
            // Expiring over the next 100 s.
            let until = now + 1 + (i % 100) as i64;
            assert!(n.take(&format!("{i:032x}"), until, now).is_ok());
        }
        assert_eq!(n.take("ff", now + 300, now), Err(Refusal::Busy(2)));
        let first = format!("{:032x}", 0);
        assert_eq!(n.take(&first, now + 300, now), Err(Refusal::Replayed));
        // Entries expire after their second: then there is room again.
        assert!(n.take("ff", now + 300, now + 2).is_ok());
        assert!(n.until.len() < MAX_NONCES);
        // An expired nonce is forgotten, and a replay of it is stale by then.
        assert!(n.take(&first, now + 300, now + 2).is_ok());
    }

    /// Issue 13: an admin proof without a signature was never checked for time.
    #[test]
    fn anonymous_admin_proofs_are_fresh_and_single_use() {
        let v = verifier(&Keys::from_key_bytes(b"k"), &[], 0, RateLimit::default());
        let t = now().as_secs() as i64;
        let nonce = "00112233445566778899aabbccddeeff";
        assert!(v.check_admin(&t.to_string(), nonce, secs(t)).is_ok());
        assert_eq!(
            v.check_admin(&t.to_string(), nonce, secs(t)),
            Err(Refusal::Replayed)
        );
        assert_eq!(
            v.check_admin(
                &(t - 1000).to_string(),
                "00112233445566778899aabbccddee00",
                secs(t)
            ),
            Err(Refusal::Stale(t))
        );
        assert_eq!(
            v.check_admin(&t.to_string(), "nope", secs(t)),
            Err(Refusal::Malformed(NONCE))
        );
    }

    #[test]
    fn node_keys_differ_per_node() {
        let keys = Keys::from_key_bytes(b"k");
        assert_ne!(node_key(&keys, "a"), node_key(&keys, "b"));
        assert_ne!(&node_key(&keys, "a"), keys.auth_key());
    }

    #[test]
    fn allow_lines_and_sizes() {
        assert!(parse_allow("pi").is_err());
        assert!(parse_allow("../x=00").is_err());
        assert!(parse_allow(&format!("pi={} color=red", "00".repeat(32))).is_err());
    }
}
