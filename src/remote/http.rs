//! The HTTP remote: [`Remote`] over the REST protocol of [`crate::protocol`], via ureq.
//!
//! One keep-alive agent is shared by all sink and restore threads. Every window is
//! sent with `X-Chute-SHA256`, so the peer keeps it only if it arrived intact.
//! Transport failures, 5xx and 429 answers are [`ErrorKind::Unavailable`] and retried
//! with backoff (a 429 after its `Retry-After`) by the callers that can safely repeat
//! (every request here is idempotent: a window rewrite replaces the same bytes; a
//! commit of the same index is a no-op).
//!
//! The peer is not trusted with our memory or our requests: every answer is read
//! under a cap of its own (a hash 128 bytes, a created blob's URI 1 KiB, an error
//! 4 KiB, an index [`store::MAX_INDEX`], a window read the bytes asked for, a list
//! [`MAX_LISTED`] entries of at most 1 KiB each, read as a stream and checked entry
//! by entry: a list costs its compact [`BlobId`]s, never the document). Redirects
//! are not followed: a 3xx is a refusal, so a signed request never goes to a host
//! the peer names.
//!
//! Nor is the path to the peer trusted: every request is signed for the peer's
//! authority as given in `--remote` (sent as `Host`), and every answer's
//! `X-Chute-Answer` MAC is checked against the request's nonce before anything in
//! it is used, a status included: a list when its last byte is read and before
//! it is returned, a small answer once read whole (see [`crate::auth`]). An
//! `--open` server's `open` is accepted with a warning, once per process.
//!
//! Errors say what a user can act on, in one line: an answer that is not chute's
//! (no `X-Chute-Answer`, a body that is neither JSON nor bytes: another web server
//! on that port) is cut to its title or first line with a hint to check the port;
//! a refused connection says so, with a hint that `chute serve` may not be running,
//! and is not retried until the peer has answered once (nothing listens there: the
//! 8 s of backoff would only delay the error). Connecting times out after
//! [`CONNECT_TIMEOUT`].
//!
//! Request and answer bodies pass through [`crate::throttle`]'s limits, when the
//! command set any: a paced body still goes out with its Content-Length (the
//! server needs one), and the body timeouts grow with the limit.

use super::answer::{self, Array, Value};
use super::{Error, ErrorKind, Remote, Result, one_line, retry};
use crate::auth::{self, Signer};
use crate::blob::{BlobId, BlobState, Uncommitted};
use crate::format::Index;
use crate::store;
use crate::throttle;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use ureq::Agent;

use crate::protocol::PREFIX;

/// Most entries a list answer may hold (snapshots of a node, or its uncommitted
/// blobs): a daily snapshot for 130 years, an hourly one for 5, and each entry
/// listed is an index `chute list` then fetches. The cap bounds what a lying peer
/// costs: a kept [`BlobId`] is 96 bytes and four names (the peer picks two, up to
/// 128 bytes each), under 500 bytes: `chute list` handed 50,001 entries with
/// 128-byte names peaked at 25 MiB RSS (x86_64), below the 32 MiB promised.
pub const MAX_LISTED: usize = 50_000;
/// Most bytes of a list answer: [`MAX_LISTED`] entries of up to 1 KiB each (an
/// entry is ~600 bytes at most). Streamed, so this bounds time, not memory.
const MAX_LIST_BYTES: u64 = MAX_LISTED as u64 * 1024;
/// A window hash answer: a JSON string of 64 hex digits, with room for whitespace.
const MAX_HASH_ANSWER: u64 = 128;
/// A create answer: the JSON string `"/chute/blob/URI/"`, ~530 bytes at most.
const MAX_CREATE_ANSWER: u64 = 1 << 10;
/// The part of an error body shown; the rest is never read.
const MAX_ERROR_BODY: u64 = 4 << 10;
/// An acknowledgement (`true`, or a short JSON answer), with room for whitespace.
const MAX_ACK: u64 = 128;
/// The longest a 429's `Retry-After` is obeyed; longer waits are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long a TCP connect may take: a peer on the LAN or across a home link
/// answers within a second or two; one that is off should not hold a command.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Set once this process warned that a peer is an `--open` server.
static OPEN_WARNED: AtomicBool = AtomicBool::new(false);

/// How an answer's body is read, and so how its MAC covers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Read whole, at most this many bytes: its SHA-256 is in the MAC.
    Small(u64),
    /// A list, hashed while it streams: checked before any entry is used.
    List,
    /// Bytes the node sealed itself (a range of part 0): the MAC says `sealed`.
    Sealed,
}

/// An answer whose MAC checked (or a list's, still to be checked over its body).
struct Answer {
    resp: ureq::http::Response<ureq::Body>,
    /// The body of a [`Expect::Small`] answer.
    body: Vec<u8>,
    /// A list answer's MAC check, made over the body's SHA-256 once read.
    later: Option<Later>,
}

/// The MAC check of an answer whose body is still to be read.
struct Later {
    key: [u8; 32],
    nonce: String,
    status: u16,
    covered: [String; 5],
    tag: String,
}

/// A reader that hashes what passes through it (a list answer's body).
struct Hashing<R> {
    inner: R,
    sha: sha2::Sha256,
}

impl<R: std::io::Read> std::io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// A peer's store, e.g. `http://peer:2002`.
pub struct HttpRemote {
    agent: Agent,
    base: String,
    signer: Option<Signer>,
    /// Take answers marked `open` (an `--open` peer's, which cannot carry a MAC).
    allow_open: bool,
    /// Set once anything answered at `base`: a refused connection is then a peer
    /// restarting (retried), not a wrong address.
    reached: AtomicBool,
}

impl HttpRemote {
    /// Connects lazily to `http://HOST:PORT` (a path after the authority is ignored).
    /// With a `signer`, every request is signed (see [`crate::auth`]).
    pub fn new(spec: &str, signer: Option<Signer>) -> crate::Result<HttpRemote> {
        let Some(rest) = spec.strip_prefix("http://") else {
            return Err(crate::Error::Usage(format!(
                "{spec}: only http:// remotes are supported (data is sealed before it leaves the node)"
            )));
        };
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() {
            return Err(crate::Error::Usage(format!("{spec}: no host in remote")));
        }
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_send_body(Some(throttle::body_timeout(
                Duration::from_secs(120),
                throttle::up(),
            )))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_recv_body(Some(throttle::body_timeout(
                Duration::from_secs(120),
                throttle::down(),
            )))
            .max_idle_connections_per_host(16)
            // A 3xx comes back as an answer (a refusal, see `check`): following it
            // would send the signed request, body and all, wherever the peer says.
            .max_redirects(0)
            .build()
            .into();
        Ok(HttpRemote {
            agent,
            base: format!("http://{authority}"),
            // Signatures name the peer as given: another peer refuses them.
            signer: signer.map(|s| s.for_peer(authority)),
            allow_open: false,
            reached: AtomicBool::new(false),
        })
    }

    /// Takes answers an `--open` peer marks `open` (they carry no MAC), with a
    /// warning once a run. Off by default: anything on the path could write that
    /// mark over a real peer's answer (`CHUTE_OPEN_PEER=1` turns it on).
    pub fn allowing_open(mut self, yes: bool) -> HttpRemote {
        self.allow_open = yes;
        self
    }

    /// The error for an answer whose MAC is missing or wrong: nothing in it is used.
    fn forged(&self, what: &str, status: u16) -> Error {
        let node = self.signer.as_ref().map_or("", |s| s.node.as_str());
        Error::new(
            ErrorKind::Refused,
            format!(
                "{what}: answer from {} is not authenticated (X-Chute-Answer missing or wrong): tampered with on the way, or not the peer that admits node {node} (status {status})",
                self.base
            ),
        )
    }

    /// Checks an answer's `X-Chute-Answer` against our request's `nonce` (see
    /// [`crate::auth`]) before anything in it is acted on, and reads a small body
    /// whole to do so; then maps its status to success or a remote error.
    fn authenticate(
        &self,
        what: &str,
        nonce: Option<&str>,
        resp: ureq::http::Response<ureq::Body>,
        expect: Expect,
    ) -> Result<Answer> {
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            // A refusal whatever it says: nothing in it is acted on.
            return Err(self.redirect(what, &resp));
        }
        if !from_chute(&resp) {
            return Err(self.not_chute(what, resp));
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let tag = header(auth::ANSWER);
        let covered = auth::ANSWER_COVERED.map(header);
        let ok = (200..300).contains(&status);
        let mut resp = resp;
        let body = match expect {
            Expect::Small(cap) if ok => self.body(what, &mut resp, cap)?,
            _ if ok => Vec::new(),
            // The first few KiB say what went wrong; the rest is not read (and a
            // longer error does not authenticate).
            _ => answer::read_capped(
                std::io::Read::take(resp.body_mut().as_reader(), MAX_ERROR_BODY),
                MAX_ERROR_BODY,
            )
            .unwrap_or_default(),
        };
        let open = tag.trim() == auth::ANSWER_OPEN;
        if open && self.signer.is_some() && !self.allow_open {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "{what}: {} answers as an --open server, whose answers cannot be authenticated (or something on the path wrote that over a real answer): if that peer really is --open on a trusted LAN, set CHUTE_OPEN_PEER=1",
                    self.base
                ),
            ));
        }
        let key = match (&self.signer, nonce) {
            (Some(s), Some(n)) if !open => Some((*s.key(), n)),
            _ => None,
        };
        let mut later = None;
        if let Some((key, nonce)) = key {
            let digest = crate::crypto::sha256(&body);
            let kind = match expect {
                Expect::Sealed if ok => Some(auth::AnswerBody::Sealed),
                Expect::List if ok => None,
                _ => Some(auth::AnswerBody::Sha256(&digest)),
            };
            let refs = covered.each_ref().map(String::as_str);
            match kind {
                Some(b) if auth::answer_ok(&key, nonce, status, b, &refs, &tag) => {}
                Some(_) => return Err(self.unauthenticated(what, status, &resp, &body)),
                None => {
                    later = Some(Later {
                        key,
                        nonce: nonce.to_string(),
                        status,
                        covered: covered.clone(),
                        tag,
                    });
                }
            }
        } else if !OPEN_WARNED.swap(true, Ordering::Relaxed) {
            eprintln!(
                "chute: warning: {} is an --open server: its answers cannot be authenticated (anyone on the path can edit them)",
                self.base
            );
        }
        if ok {
            return Ok(Answer { resp, body, later });
        }
        Err(self.failed(what, status, &resp, &body))
    }

    /// An answer whose MAC did not check. A 429 or 503 is still waited out (the
    /// retry budget bounds the wait): forging one only delays us, which an
    /// on-path attacker can do anyway by holding the packets. A 401 keeps the
    /// peer's reason: it is an error either way, and a peer that does not admit
    /// this node has no key to authenticate its refusal with.
    fn unauthenticated(
        &self,
        what: &str,
        status: u16,
        resp: &ureq::http::Response<ureq::Body>,
        body: &[u8],
    ) -> Error {
        match status {
            429 | 503 | 401 => {
                let mut e = self.failed(what, status, resp, body);
                e.message.push_str(" (answer not authenticated)");
                e
            }
            _ => self.forged(what, status),
        }
    }

    /// An answer from something other than `chute serve` (another web server on
    /// that port): its title or first line, and a hint to check the address.
    fn not_chute(&self, what: &str, mut resp: ureq::http::Response<ureq::Body>) -> Error {
        let status = resp.status().as_u16();
        let kind = resp
            .headers()
            .get("Content-Type")
            .map_or("no Content-Type".into(), |v| {
                one_line(&String::from_utf8_lossy(v.as_bytes()))
            });
        let body = answer::read_capped(
            std::io::Read::take(resp.body_mut().as_reader(), MAX_ERROR_BODY),
            MAX_ERROR_BODY,
        )
        .unwrap_or_default();
        let authority = self.base.trim_start_matches("http://");
        Error::new(
            if matches!(status, 502..=504) {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Refused
            },
            format!(
                "{what}: {} answered {status} ({kind}), not as chute serve does: \"{}\"",
                self.base,
                gist(&String::from_utf8_lossy(&body))
            ),
        )
        .with_hint(format!(
            "is {authority} a chute serve? Check the port in --remote (chute serve listens on 2002 by default)"
        ))
    }

    /// A 3xx: a refusal (redirects are not followed).
    fn redirect(&self, what: &str, resp: &ureq::http::Response<ureq::Body>) -> Error {
        let status = resp.status().as_u16();
        let to = resp
            .headers()
            .get("Location")
            .map(|l| one_line(&String::from_utf8_lossy(l.as_bytes())))
            .unwrap_or_default();
        Error::new(
            ErrorKind::Refused,
            format!(
                "{what}: {} answered {status} (a redirect to \"{to}\"): redirects are not followed",
                self.base
            ),
        )
    }

    /// The remote error an answer of `status` with error `body` is.
    fn failed(
        &self,
        what: &str,
        status: u16,
        resp: &ureq::http::Response<ureq::Body>,
        body: &[u8],
    ) -> Error {
        let wait = matches!(status, 429 | 503).then(|| retry_after(resp));
        let body = String::from_utf8_lossy(body);
        #[derive(miniserde::Deserialize)]
        struct E {
            error: String,
        }
        let msg =
            miniserde::json::from_str::<E>(&body).map_or_else(|_| body.to_string(), |e| e.error);
        let kind = match status {
            404 | 416 => ErrorKind::NotFound,
            // 403 is a refusal (another node's space, append-only), not a missing key.
            401 => ErrorKind::Auth,
            507 => ErrorKind::Full,
            // Rate-limited: wait as told (capped, see `retry_after`), then try again.
            429 => ErrorKind::Unavailable,
            s if s >= 500 => ErrorKind::Unavailable,
            _ => ErrorKind::Refused,
        };
        let mut e = Error::new(
            kind,
            format!(
                "{what}: {} answered {status}: {}",
                self.base,
                one_line(&msg)
            ),
        );
        e.retry_after = wait;
        if status == 401 && msg.contains("is not allowed on this server") {
            let node = self.signer.as_ref().map_or("", |s| s.node.as_str());
            e = e.with_hint(format!(
                "run `chute key auth` here and admit the line it prints with `chute serve --allow` on the peer; or, if this machine replaces one that backed up under another name than {node:?}, pass --node OLDNAME"
            ));
        }
        e
    }

    fn transport(&self, what: &str) -> impl FnOnce(ureq::Error) -> Error {
        let msg = format!("{what}: cannot reach {}", self.base);
        let authority = self.base.trim_start_matches("http://").to_string();
        let reached = self.reached.load(Ordering::Relaxed);
        move |e| {
            let refused = matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
            if refused {
                // At first contact nothing listens there, and retrying only delays
                // saying so; a peer that answered before may be restarting.
                let kind = if reached {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::Refused
                };
                return Error::new(kind, format!("{msg}: connection refused"))
                    .with_hint(format!("is `chute serve` running on {authority}?"));
            }
            let e = Error::new(ErrorKind::Unavailable, format!("{msg}: {e}"));
            if reached {
                e
            } else {
                e.with_hint(format!(
                    "is {authority} the right address, and is `chute serve` running there?"
                ))
            }
        }
    }

    /// A failure reading an answer, naming the peer.
    fn answer_error(&self, what: &str) -> impl Fn(answer::Error) -> Error {
        let head = format!("{what}: {}", self.base);
        move |e| {
            let kind = match e {
                answer::Error::Io(_) => ErrorKind::Unavailable,
                _ => ErrorKind::Refused,
            };
            Error::new(kind, format!("{head} {e}"))
        }
    }

    /// A small body, whole, refused past `cap` bytes.
    fn body(
        &self,
        what: &str,
        resp: &mut ureq::http::Response<ureq::Body>,
        cap: u64,
    ) -> Result<Vec<u8>> {
        let body = throttle::download(resp.body_mut().as_reader());
        answer::read_capped(body, cap).map_err(self.answer_error(what))
    }

    /// A window's hex digest (a hash, a challenge's answer) of `N` bytes, or `None`
    /// for a window never written. A 404 is authenticated like any answer before it
    /// means that.
    fn hex_answer<const N: usize>(
        &self,
        what: &str,
        target: &str,
        kind: &str,
    ) -> Result<Option<[u8; N]>> {
        let a = match self.send(
            what,
            "GET",
            target,
            &[],
            &[],
            Expect::Small(MAX_HASH_ANSWER),
        ) {
            Ok(a) => a,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let hex: String = self.json(what, &a.body)?;
        let digest = crate::hex::decode(&hex).and_then(|b| <[u8; N]>::try_from(b).ok());
        digest.map(Some).ok_or_else(|| {
            Error::new(
                ErrorKind::Refused,
                format!(
                    "{what}: {} sent a bad {kind} {:?}",
                    self.base,
                    one_line(&hex)
                ),
            )
        })
    }

    /// A small JSON answer, already read (and authenticated).
    fn json<T: miniserde::Deserialize>(&self, what: &str, bytes: &[u8]) -> Result<T> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| miniserde::json::from_str(text).ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Refused,
                    format!("{what}: {} sent malformed JSON", self.base),
                )
            })
    }

    /// Reads a list answer entry by entry (at most [`MAX_LISTED`], as a stream
    /// under [`MAX_LIST_BYTES`]): `entry` checks each as it arrives and makes it
    /// what is kept; then a list that names a blob twice (`id` of an entry) is
    /// refused.
    fn entries<T>(
        &self,
        what: &str,
        body: impl std::io::Read,
        mut entry: impl FnMut(Value) -> Result<T>,
        id: impl Fn(&T) -> &BlobId,
    ) -> Result<Vec<T>> {
        let reader = answer::Capped::new(body, MAX_LIST_BYTES);
        let mut list = Array::new(BufReader::with_capacity(16 << 10, reader));
        let mut out = Vec::new();
        while let Some(v) = list.next_value().map_err(self.answer_error(what))? {
            if out.len() == MAX_LISTED {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!("{what}: {} sent more than {MAX_LISTED} entries", self.base),
                ));
            }
            out.push(entry(v)?);
        }
        // Sorting references finds duplicates without a second copy of the names.
        let mut sorted: Vec<&BlobId> = out.iter().map(id).collect();
        crate::sort::sort(&mut sorted);
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::new(
                ErrorKind::Refused,
                format!("{what}: {} listed {} twice", self.base, w[0].path()),
            ));
        }
        Ok(out)
    }

    /// An entry of a snapshot list: `"/chute/blob/URI/index.json"`, a blob of
    /// `domain`/`node`.
    fn snapshot_entry(&self, what: &str, v: Value, domain: &str, node: &str) -> Result<BlobId> {
        let Value::Str(uri) = v else {
            return Err(Error::new(
                ErrorKind::Refused,
                format!("{what}: {} sent an entry that is not a string", self.base),
            ));
        };
        self.listed_blob(what, &uri, "/index.json", domain, node)
    }

    /// An entry of an `?uncommitted` list: a `protocol::ListedBlob` of a blob of
    /// `domain`/`node`.
    fn uncommitted_entry(
        &self,
        what: &str,
        v: Value,
        domain: &str,
        node: &str,
    ) -> Result<Uncommitted> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::Refused,
                format!("{what}: {} sent a bad entry: {why}", self.base),
            )
        };
        // The fields of a `protocol::ListedBlob`; others (a newer peer's) are skipped.
        let Value::Object(fields) = v else {
            return Err(bad("not an object"));
        };
        let (mut uri, mut state, mut bytes, mut idle) = (None, None, None, None);
        for (k, v) in fields {
            let slot = match (k.as_str(), v) {
                ("uri", Value::Str(s)) => uri.replace(s).is_some(),
                ("state", Value::Str(s)) => state.replace(s).is_some(),
                ("bytes", Value::Num(n)) => bytes.replace(n).is_some(),
                ("idle", Value::Num(n)) => idle.replace(n).is_some(),
                ("uri" | "state" | "bytes" | "idle", _) => {
                    return Err(bad(&format!("{k} of the wrong type")));
                }
                _ => false,
            };
            if slot {
                return Err(bad(&format!("{k} twice")));
            }
        }
        let (Some(uri), Some(state), Some(bytes), Some(idle)) = (uri, state, bytes, idle) else {
            return Err(bad("a field missing"));
        };
        let id = self.listed_blob(what, &uri, "/", domain, node)?;
        let state = BlobState::parse(&state)
            .ok_or_else(|| bad(&format!("state \"{}\"", one_line(&state))))?;
        Ok(Uncommitted {
            id,
            state,
            bytes,
            idle,
        })
    }

    /// A listed URI `/chute/blob/URI/<suffix>` of a blob of `domain`/`node`.
    fn listed_blob(
        &self,
        what: &str,
        uri: &str,
        suffix: &str,
        domain: &str,
        node: &str,
    ) -> Result<BlobId> {
        let id = uri
            .strip_prefix(PREFIX)
            .and_then(|p| p.strip_suffix(suffix))
            .filter(|p| !p.ends_with('/'))
            .and_then(|p| BlobId::parse(p).ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Refused,
                    format!("{what}: {} sent a bad entry {:?}", self.base, one_line(uri)),
                )
            })?;
        if id.domain != domain || id.node != node {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "{what}: {} listed {}, a blob of another node",
                    self.base,
                    id.path()
                ),
            ));
        }
        Ok(id)
    }

    /// One request, signed if we have a signer, retried while the remote is
    /// unavailable (each attempt signed afresh), and its answer authenticated.
    fn send(
        &self,
        what: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        expect: Expect,
    ) -> Result<Answer> {
        self.send_hashed(what, method, path, headers, body, &sha256_of(body), expect)
    }

    /// [`HttpRemote::send`] of a body whose SHA-256 the caller has: a window is
    /// hashed once, for the signature and for the hash `put_window` returns, however
    /// often it is retried.
    #[allow(clippy::too_many_arguments)] // send's, plus the digest.
    fn send_hashed(
        &self,
        what: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        digest: &[u8; 32],
        expect: Expect,
    ) -> Result<Answer> {
        retry(|| self.send_once(what, method, path, headers, body, digest, expect))
    }

    /// One attempt of [`HttpRemote::send`].
    #[allow(clippy::too_many_arguments)] // send's, plus the digest.
    fn send_once(
        &self,
        what: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        digest: &[u8; 32],
        expect: Expect,
    ) -> Result<Answer> {
        let target = format!("{PREFIX}{path}");
        let url = format!("{}{target}", self.base);
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut nonce = None;
        match &self.signer {
            Some(s) => {
                // `Host` among them: the authority the signature names, sent as is.
                for (k, v) in s.headers(method, &target, headers, digest) {
                    if k == auth::NONCE {
                        nonce = Some(v.clone());
                    }
                    b = b.header(k, v);
                }
            }
            None if !body.is_empty() => {
                b = b.header(auth::BODY, crate::hex::encode(digest));
            }
            None => {}
        }
        let req = b
            .body(body)
            .map_err(|e| Error::new(ErrorKind::Refused, format!("{what}: {e}")))?;
        let r = throttle::run(&self.agent, req).map_err(self.transport(what))?;
        self.reached.store(true, Ordering::Relaxed);
        self.authenticate(what, nonce.as_deref(), r, expect)
    }

    /// A blob's index document (`index.json`, or a forgotten one's); `pending`
    /// says whether a pending blob's index (as created) is wanted too.
    fn fetch_index(&self, id: &BlobId, name: &str, pending: bool) -> Result<Index> {
        let what = format!("{name} of {}", id.path());
        let path = format!("{}/{name}", id.path());
        let a = self.send(
            &what,
            "GET",
            &path,
            &[],
            &[],
            Expect::Small(store::MAX_INDEX),
        )?;
        let state = a.resp.headers().get(auth::STATE).map(|v| v.as_bytes());
        if state == Some(b"pending") && !pending {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("{what}: {} holds it pending (never committed)", self.base),
            ));
        }
        super::parse_index(a.body, id)
    }

    /// A small request whose answer body is an acknowledgement.
    fn ack(
        &self,
        what: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<()> {
        self.send(what, method, path, headers, body, Expect::Small(MAX_ACK))?;
        Ok(())
    }

    /// A list answer, read entry by entry through `entry`, then its MAC checked
    /// over the whole body before the list is returned.
    fn list_of<T>(
        &self,
        what: &str,
        path: &str,
        entry: impl FnMut(Value) -> Result<T>,
        id: impl Fn(&T) -> &BlobId,
    ) -> Result<Vec<T>> {
        use sha2::Digest;
        let mut a = self.send(what, "GET", path, &[], &[], Expect::List)?;
        let mut body = Hashing {
            inner: answer::Capped::new(
                throttle::download(a.resp.body_mut().as_reader()),
                MAX_LIST_BYTES,
            ),
            sha: sha2::Sha256::new(),
        };
        // A list refused entry by entry (too long, a bad entry) fails here, before
        // its MAC: nothing in it is used either way, and the rest is not read.
        let list = self.entries(what, &mut body, entry, id)?;
        if let Some(l) = a.later {
            // The rest of the body (whitespace after the array) is covered too.
            std::io::copy(&mut body, &mut std::io::sink())
                .map_err(|e| self.answer_error(what)(answer::Error::Io(e)))?;
            let digest: [u8; 32] = body.sha.finalize().into();
            let covered = l.covered.each_ref().map(String::as_str);
            let b = auth::AnswerBody::Sha256(&digest);
            if !auth::answer_ok(&l.key, &l.nonce, l.status, b, &covered, &l.tag) {
                return Err(self.forged(what, l.status));
            }
        }
        Ok(list)
    }
}

/// The SHA-256 a request's signature covers.
fn sha256_of(body: &[u8]) -> [u8; 32] {
    crate::crypto::sha256(body)
}

/// Whether an answer can be chute's: it carries `X-Chute-Answer`, or its body is
/// empty, JSON or bytes (what `chute serve` sends, its own 401 to an unknown node
/// included). An HTML page from another web server is none of these.
fn from_chute(resp: &ureq::http::Response<ureq::Body>) -> bool {
    let headers = resp.headers();
    if headers.contains_key(auth::ANSWER) {
        return true;
    }
    let empty = headers
        .get("Content-Length")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    let kind = headers
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    empty || kind.starts_with("application/json") || kind.starts_with("application/octet-stream")
}

/// A short line for a foreign body: an HTML page's title, else its first
/// non-blank line, at most 80 characters.
fn gist(body: &str) -> String {
    let lower = body.to_ascii_lowercase();
    let title = lower.find("<title>").and_then(|start| {
        let rest = &body[start + 7..];
        let end = rest.to_ascii_lowercase().find("</title>")?;
        Some(rest[..end].trim())
    });
    let line = title.unwrap_or_else(|| {
        body.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
    });
    let mut out: String = line
        .chars()
        .take(80)
        .flat_map(char::escape_default)
        .collect();
    if line.chars().nth(80).is_some() {
        out.push_str("...");
    }
    out
}

/// A 429's (or 503's) `Retry-After` in seconds (an HTTP date or garbage counts as 1 s),
/// at most [`MAX_RETRY_AFTER`].
fn retry_after(resp: &ureq::http::Response<ureq::Body>) -> Duration {
    resp.headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), |s| {
            Duration::from_secs(s).min(MAX_RETRY_AFTER)
        })
}

impl Remote for HttpRemote {
    fn describe(&self) -> String {
        self.base.clone()
    }

    /// Two: while one window's PUT waits on the server (which hashes and writes
    /// it), a worker can complete and send the next. With one in flight a 1 GiB
    /// sink through a loopback serve took 16–24% longer than to a local store
    /// (seven runs); with two, 4–13% (five), for one more 2 MiB buffer.
    fn windows_in_flight(&self) -> u32 {
        2
    }

    fn create(&self, index: &Index) -> Result<BlobId> {
        let what = "create blob";
        let json = [("Content-Type", "application/json")];
        let body = index.to_json();
        let a = self.send(
            what,
            "POST",
            "",
            &json,
            body.as_bytes(),
            Expect::Small(MAX_CREATE_ANSWER),
        )?;
        let uri: String = self.json(what, &a.body)?;
        // The blob is placed by the index's names: any other is a lie.
        uri.strip_prefix(PREFIX)
            .and_then(|p| p.strip_suffix('/'))
            .filter(|p| *p == index.blob_path())
            .and_then(|p| BlobId::parse(p).ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Refused,
                    format!(
                        "{what}: {} answered an unexpected URI {:?}",
                        self.base,
                        one_line(&uri)
                    ),
                )
            })
    }

    fn put_window(&self, id: &BlobId, window: u64, n: u64, data: &[u8]) -> Result<[u8; 32]> {
        let what = format!("upload window {n} of {}", id.path());
        let path = format!("{}/0/{window}/{n}", id.path());
        let octets = [("Content-Type", "application/octet-stream")];
        let digest = sha256_of(data);
        let expect = Expect::Small(MAX_ACK);
        self.send_hashed(&what, "PUT", &path, &octets, data, &digest, expect)?;
        Ok(digest)
    }

    fn window_hash(&self, id: &BlobId, window: u64, n: u64) -> Result<Option<[u8; 32]>> {
        let what = format!("hash of window {n} of {}", id.path());
        let path = format!("{}/0/{window}/{n}/hash/sha256", id.path());
        self.hex_answer(&what, &path, "SHA-256")
    }

    fn challenge(
        &self,
        id: &BlobId,
        window: u64,
        n: u64,
        nonce: &crate::crypto::ChallengeNonce,
    ) -> Result<Option<[u8; 16]>> {
        let what = format!("storage challenge on window {n} of {}", id.path());
        let target = crate::protocol::challenge_target(id, window, n, nonce);
        self.hex_answer(&what, &target, "answer")
    }

    fn read(&self, id: &BlobId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let what = format!("read bytes {offset}+{len} of {}", id.path());
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={offset}-{}", offset + len - 1);
        // The body is read inside the retry too: a connection cut mid-body is a
        // transient failure like any other.
        retry(|| {
            let mut a = self.send_once(
                &what,
                "GET",
                &format!("{}/0", id.path()),
                &[("Range", &range)],
                &[],
                &sha256_of(&[]),
                Expect::Sealed,
            )?;
            let r = &mut a.resp;
            if r.status().as_u16() != 206 {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!("{what}: range not honoured"),
                ));
            }
            let body = self.body(&what, r, len)?;
            if body.len() as u64 != len {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{what}: got {} bytes", body.len()),
                ));
            }
            Ok(body)
        })
    }

    fn commit(&self, id: &BlobId, index: &Index) -> Result<()> {
        let what = format!("commit {}", id.path());
        let json = [("Content-Type", "application/json")];
        let path = format!("{}/index.json", id.path());
        self.ack(&what, "PUT", &path, &json, index.to_json().as_bytes())
    }

    fn index(&self, id: &BlobId) -> Result<Index> {
        self.fetch_index(id, "index.json", false)
    }

    fn list(&self, domain: &str, node: &str) -> Result<Vec<BlobId>> {
        let what = format!("list snapshots of {domain}/{node}");
        let entry = |v| self.snapshot_entry(&what, v, domain, node);
        self.list_of(&what, &format!("{domain}/{node}/"), entry, |id| id)
    }

    fn delete(&self, id: &BlobId) -> Result<()> {
        let what = format!("delete {}", id.path());
        self.ack(&what, "DELETE", &format!("{}/", id.path()), &[], &[])
    }

    fn forget(&self, id: &BlobId) -> Result<()> {
        let what = format!("forget {}", id.path());
        let path = format!("{}/index.json", id.path());
        self.ack(&what, "DELETE", &path, &[], &[])
    }

    fn forgotten_index(&self, id: &BlobId) -> Result<Index> {
        self.fetch_index(id, "index.forgotten.json", false)
    }

    fn trim(&self, id: &BlobId, window: u64, n: u64) -> Result<()> {
        let what = format!("trim window {n} of {}", id.path());
        let path = format!("{}/0/{window}/{n}", id.path());
        self.ack(&what, "DELETE", &path, &[], &[])
    }

    fn list_uncommitted(&self, domain: &str, node: &str) -> Result<Vec<Uncommitted>> {
        let what = format!("list uncommitted blobs of {domain}/{node}");
        let entry = |v| self.uncommitted_entry(&what, v, domain, node);
        self.list_of(
            &what,
            &format!("{domain}/{node}/?uncommitted"),
            entry,
            |u| &u.id,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote never connected to: the tests feed its list parsing from memory.
    fn peer() -> HttpRemote {
        HttpRemote::new("http://127.0.0.1:9", None).unwrap()
    }

    fn snapshots(body: &str) -> Result<Vec<BlobId>> {
        let r = peer();
        let entry = |v| r.snapshot_entry("list", v, "d", "n");
        r.entries("list", body.as_bytes(), entry, |id| id)
    }

    fn uncommitted(body: &str) -> Result<Vec<Uncommitted>> {
        let r = peer();
        let entry = |v| r.uncommitted_entry("list", v, "d", "n");
        r.entries("list", body.as_bytes(), entry, |u| &u.id)
    }

    fn refused(r: Result<impl std::fmt::Debug>, want: &str) {
        let e = r.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused, "{e}");
        assert!(e.message.contains(want), "{e}");
        assert!(e.message.contains("http://127.0.0.1:9"), "{e}");
    }

    #[test]
    fn lists_keep_only_blobs_of_the_node_asked_for() {
        let ok =
            snapshots(r#"["/chute/blob/d/n/m/t1/index.json", "/chute/blob/d/n/m/t2/index.json"]"#);
        let ids: Vec<String> = ok.unwrap().iter().map(BlobId::path).collect();
        assert_eq!(ids, ["d/n/m/t1", "d/n/m/t2"]);
        refused(
            snapshots(r#"["/chute/blob/d/other/m/t/index.json"]"#),
            "another node",
        );
        refused(
            snapshots(r#"["/chute/blob/x/n/m/t/index.json"]"#),
            "another node",
        );
        refused(snapshots(r#"["/chute/blob/d/n/m/t/"]"#), "bad entry");
        refused(
            snapshots(r#"["/chute/blob/d/n/m/t//index.json"]"#),
            "bad entry",
        );
        refused(
            snapshots(r#"["/chute/blob/d/n/../t/index.json"]"#),
            "bad entry",
        );
        refused(snapshots(r#"[1]"#), "not a string");
        refused(
            snapshots(
                r#"["/chute/blob/d/n/m/a/index.json","/chute/blob/d/n/m/b/index.json","/chute/blob/d/n/m/a/index.json"]"#,
            ),
            "listed d/n/m/a twice",
        );
        refused(
            snapshots(r#"["/chute/blob/d/n/m/t/index.json""#),
            "malformed JSON",
        );
    }

    #[test]
    fn lists_stop_at_the_entry_cap() {
        let entries: Vec<String> = (0..=MAX_LISTED)
            .map(|i| format!("\"/chute/blob/d/n/m/{i}/index.json\""))
            .collect();
        let body = format!("[{}]", entries.join(","));
        refused(snapshots(&body), "more than 50000 entries");
        let body = format!("[{}]", entries[..MAX_LISTED].join(","));
        assert_eq!(snapshots(&body).unwrap().len(), MAX_LISTED);
    }

    #[test]
    fn uncommitted_lists_are_read_field_by_field() {
        let got = uncommitted(
            r#"[{"uri":"/chute/blob/d/n/m/t/","state":"forgotten","bytes":5,"idle":7,"later":true}]"#,
        )
        .unwrap();
        assert_eq!(
            got,
            [Uncommitted {
                id: BlobId::new("d", "n", "m", "t").unwrap(),
                state: BlobState::Forgotten,
                bytes: 5,
                idle: 7,
            }]
        );
        let one = |fields: &str| uncommitted(&format!("[{{{fields}}}]"));
        refused(
            one(r#""uri":"/chute/blob/d/n/m/t/","state":"pending","bytes":5"#),
            "missing",
        );
        refused(
            one(r#""uri":"/chute/blob/d/n/m/t/","state":"gone","bytes":5,"idle":1"#),
            "state",
        );
        refused(
            one(r#""uri":"/chute/blob/d/n/m/t/","state":"pending","bytes":"5","idle":1"#),
            "wrong type",
        );
        refused(
            one(
                r#""uri":"/chute/blob/d/n/m/t/","uri":"/chute/blob/d/n/m/u/","state":"pending","bytes":5,"idle":1"#,
            ),
            "twice",
        );
        refused(
            one(r#""uri":"/chute/blob/e/n/m/t/","state":"pending","bytes":5,"idle":1"#),
            "another node",
        );
        refused(uncommitted(r#"["/chute/blob/d/n/m/t/"]"#), "not an object");
    }

    #[test]
    fn a_peer_s_text_stays_on_one_short_line() {
        assert_eq!(one_line("a\nb\x1b[2J"), "a\\nb\\u{1b}[2J");
        let long = "x".repeat(10_000);
        assert_eq!(one_line(&long).len(), 203);
    }
}
