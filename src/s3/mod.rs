//! A blocking S3 client: the few operations a store needs, over ureq, signed
//! with AWS Signature V4 ([`sigv4`]), answers parsed by a small strict XML
//! parser ([`xml`], [`list`]). A leaf: it knows buckets and keys, not blobs.
//!
//! **Where.** [`S3Spec::parse`] takes restic's form,
//! `s3:http://HOST[:PORT]/BUCKET[/PREFIX]`; every key the client is given is
//! relative to PREFIX (joined with `/`), and [`Client::list`] hands keys back the
//! same way. Requests are path-style (`http://HOST/BUCKET/KEY`) unless
//! [`S3Spec::virtual_host`] asks for `http://BUCKET.HOST/KEY`. `s3:https://` is
//! refused: this build has no TLS. Over plain HTTP the data is sealed before it
//! leaves the node, but a request can be seen and replayed for SigV4's 15 minutes:
//! [`PLAIN_HTTP_WARNING`] is the line the CLI prints.
//!
//! **Who.** [`Config::from_env`] reads the environment it is given (so tests
//! need not set the process's): the key pair from `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`, else from the file `CHUTE_S3_CREDENTIALS_FILE`
//! names, and the region from `AWS_DEFAULT_REGION`, else `AWS_REGION`, else
//! `CHUTE_S3_REGION`, else `us-east-1` (Garage's is `garage`). The credentials file is lines of
//! `name = value`: `access_key_id` and `secret_access_key`, each exactly once;
//! blank lines and lines starting with `#` are ignored; anything else is refused,
//! and so is a file over 4 KiB.
//!
//! **What.** [`Client::put`] (the caller passes the body's SHA-256, which it has
//! already: it is the signed `x-amz-content-sha256`, and the server checks the
//! body against it), [`Client::get`] (whole, up to a cap), [`Client::get_range`],
//! [`Client::head`], [`Client::delete`], [`Client::copy`] and [`Client::list`]
//! (ListObjectsV2 pages, continuation tokens followed). Nothing is retried
//! here: a caller wraps a call in [`crate::remote::retry`], which retries
//! [`ErrorKind::Unavailable`].
//!
//! **Trust.** Every answer may have been edited on the way or come from a
//! broken server, so each is bounded and checked before it is used: an error
//! body is read to at most [`MAX_ERROR_BODY`]; a ranged GET reads exactly the
//! length asked (more is refused, less is an error) and only from an answer whose
//! `Content-Range` names exactly that range (206, or a 200 with a matching
//! `Content-Range`, as rclone answers; a 200 without one is a server that ignored
//! the range: refused unread); a whole GET at most the caller's cap; a list page
//! at most [`list::MAX_PAGE_KEYS`] entries in [`list::max_page_bytes`], its keys
//! checked to start with the prefix asked for and to increase strictly from one
//! page to the next (a server that replays a page cannot loop us); a copy's 200
//! must carry a `CopyObjectResult` (S3 may answer 200 with an `Error` body).
//! Redirects are not followed: a signed request goes only where it was aimed.
//! Connecting times out after [`CONNECT_TIMEOUT`], each read and write after
//! [`IO_TIMEOUT`]. Request and answer bodies pass through [`crate::throttle`]'s
//! limits (a paced body keeps its Content-Length; whole phases' timeouts grow
//! with the limit).
//!
//! **Errors** are [`crate::remote::Error`]s, one line naming the operation, the
//! key, the status and the S3 error code: a transport failure, a timeout, 500,
//! 502, 503, 504, 429 or `SlowDown` is [`ErrorKind::Unavailable`]; 403, or
//! 400 `AuthorizationHeaderMalformed` (a credential scope for another region),
//! is [`ErrorKind::Auth`]; 404 is [`ErrorKind::NotFound`] (but `NoSuchBucket` is
//! [`ErrorKind::Refused`]: a missing bucket is a configuration error, not a
//! missing object); 416 (a range past the end) is [`ErrorKind::NotFound`]; 507
//! or an error code naming a quota is [`ErrorKind::Full`]; any other answer is
//! [`ErrorKind::Refused`].

mod config;
pub mod list;
pub mod sigv4;
pub mod time;
pub mod xml;

pub use config::{Config, Credentials, DEFAULT_REGION, S3Spec, region_from_env};

use crate::remote::{Error, ErrorKind, Result, one_line};
use list::{MAX_PAGE_KEYS, Object, Page};
use sigv4::Signer;
use std::io::{BufReader, Read};
use std::time::Duration;
use ureq::Agent;

/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read or write on a connection may wait: a stalled server or
/// network fails the request instead of hanging the command.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long sending a body, waiting for the answer's head, or receiving its body
/// may take in all (a window of a few MiB, or a list page, on a slow link).
pub const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// The part of an error body read (and shown); the rest is never read.
pub const MAX_ERROR_BODY: u64 = 4 << 10;
/// A `CopyObjectResult` (an ETag and a date), with room to spare.
const MAX_COPY_ANSWER: u64 = 4 << 10;

/// The line the CLI prints before using an `s3:http://` store.
pub const PLAIN_HTTP_WARNING: &str = "warning: S3 over plain http: the data is sealed, but anyone on the path can see each signed request and replay it within SigV4's 15-minute window (a delete included)";

/// What `HEAD` says of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    /// `Last-Modified`, in unix seconds.
    pub last_modified: u64,
}

/// A blocking S3 client for one bucket and prefix; safe to share between
/// threads (one keep-alive pool).
pub struct Client {
    agent: Agent,
    spec: S3Spec,
    signer: Signer,
    host: String,
}

type Response = ureq::http::Response<ureq::Body>;

impl Client {
    pub fn new(config: Config) -> Client {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(IO_TIMEOUT))
            .timeout_per_write(Some(IO_TIMEOUT))
            // Whole phases bounded too, as the peer's client does: a server that
            // sends a byte a minute cannot hold a request open for long.
            .timeout_send_body(Some(crate::throttle::body_timeout(
                PHASE_TIMEOUT,
                crate::throttle::up(),
            )))
            .timeout_recv_response(Some(PHASE_TIMEOUT))
            .timeout_recv_body(Some(crate::throttle::body_timeout(
                PHASE_TIMEOUT,
                crate::throttle::down(),
            )))
            .max_idle_connections_per_host(16)
            // A 3xx is an answer (refused, see `failure`): following it would send
            // a signed request, body and all, wherever the answer says.
            .max_redirects(0)
            .build()
            .into();
        let host = config.spec.host();
        Client {
            agent,
            signer: Signer {
                access_key_id: config.credentials.access_key_id,
                secret_access_key: config.credentials.secret_access_key,
                region: config.region,
                service: "s3".into(),
            },
            spec: config.spec,
            host,
        }
    }

    /// The store, for messages (`s3:http://HOST/BUCKET/PREFIX`).
    pub fn describe(&self) -> String {
        self.spec.to_string()
    }

    pub fn spec(&self) -> &S3Spec {
        &self.spec
    }

    /// Signs and sends one request. `key` is relative to the prefix (`None`: the
    /// bucket itself); `extra` headers are signed too.
    #[allow(clippy::too_many_arguments)] // a request's parts, each named
    fn send(
        &self,
        what: &str,
        method: &str,
        key: Option<&str>,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
        body: &[u8],
        sha256: &[u8; 32],
    ) -> Result<Response> {
        let full = key.map(|k| self.spec.full_key(k));
        let path = self.spec.path(full.as_deref());
        let sha = crate::hex::encode(sha256);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let date = sigv4::amz_date(secs);
        let mut headers: Vec<(&str, &str)> = vec![
            ("host", &self.host),
            ("x-amz-content-sha256", &sha),
            ("x-amz-date", &date),
        ];
        headers.extend_from_slice(extra);
        let auth = self.signer.authorization(
            &sigv4::Request {
                method,
                path: &path,
                query,
                headers: &headers,
                payload_sha256: &sha,
            },
            &date,
        );
        let mut uri = format!("http://{}{path}", self.host);
        for (i, (k, v)) in query.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(&sigv4::encode(k, true));
            uri.push('=');
            uri.push_str(&sigv4::encode(v, true));
        }
        let mut req = ureq::http::Request::builder().method(method).uri(&uri);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        req = req.header("authorization", auth);
        let req = req
            .body(body)
            .map_err(|e| Error::new(ErrorKind::Refused, format!("{what}: bad request: {e}")))?;
        crate::throttle::run(&self.agent, req).map_err(|e| self.transport(what, e))
    }

    fn transport(&self, what: &str, e: ureq::Error) -> Error {
        use std::io::ErrorKind as Io;
        // Reached, then cut off: a server that answers before it read the body
        // (an overloaded cluster's 503) and closes; not an unreachable host.
        let cut = matches!(&e, ureq::Error::Io(io) if matches!(
            io.kind(),
            Io::BrokenPipe | Io::ConnectionReset | Io::ConnectionAborted | Io::UnexpectedEof
        ));
        let how = if cut {
            "the connection was closed mid-request by"
        } else {
            "cannot reach"
        };
        Error::new(
            ErrorKind::Unavailable,
            format!("{what}: {how} {}: {}", self.host, one_line(&e.to_string())),
        )
    }

    /// `what` for messages: the operation and the full key.
    fn what(&self, op: &str, key: &str) -> String {
        format!("s3 {op} {}/{}", self.spec.bucket, self.spec.full_key(key))
    }

    /// The error for an answer that is not a success: its status and S3 error
    /// code sorted into a kind (see the module docs), one line.
    fn failure(&self, what: &str, mut resp: Response) -> Error {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(60)));
        let mut body = Vec::new();
        let _ = resp
            .body_mut()
            .as_reader()
            .take(MAX_ERROR_BODY)
            .read_to_end(&mut body);
        let (code, message) = error_document(&body);
        let mut e = Error::new(
            kind_of(status, code.as_deref()),
            format!(
                "{what}: {status} {}{}",
                code.as_deref().unwrap_or("(no S3 error code)"),
                message.map_or(String::new(), |m| format!(": {m}"))
            ),
        );
        e.retry_after = retry_after;
        e
    }

    /// Reads a body of at most `cap` bytes whole; more is refused. The buffer
    /// grows with the bytes that arrive, not with `cap`.
    fn body(&self, what: &str, resp: &mut Response, cap: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(cap.min(64 << 10) as usize);
        crate::throttle::download(resp.body_mut().as_reader())
            .take(cap.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{what}: reading the answer from {}: {e}", self.host),
                )
            })?;
        if out.len() as u64 > cap {
            return Err(Error::new(
                ErrorKind::Refused,
                format!("{what}: {} answered more than {cap} bytes", self.host),
            ));
        }
        Ok(out)
    }

    /// PutObject: stores `body` at `key`; `sha256` is the body's SHA-256, which
    /// the request is signed with and the server checks. Done when this returns.
    pub fn put(&self, key: &str, body: &[u8], sha256: &[u8; 32]) -> Result<()> {
        let what = self.what("PUT", key);
        let mut resp = self.send(&what, "PUT", Some(key), &[], &[], body, sha256)?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(&what, resp));
        }
        self.body(&what, &mut resp, MAX_ERROR_BODY)?;
        Ok(())
    }

    /// GetObject, whole: at most `cap` bytes (a larger object is refused).
    pub fn get(&self, key: &str, cap: u64) -> Result<Vec<u8>> {
        let what = self.what("GET", key);
        let mut resp = self.send(&what, "GET", Some(key), &[], &[], &[], &sigv4::EMPTY_SHA256)?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(&what, resp));
        }
        if let Some(len) = content_length(&resp) {
            if len > cap {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!("{what}: the object is {len} bytes, more than the {cap} expected"),
                ));
            }
        }
        self.body(&what, &mut resp, cap)
    }

    /// GetObject of `len` bytes at `offset`: exactly those bytes, or an error
    /// ([`ErrorKind::NotFound`] if the object ends before them). `len` 0 asks
    /// nothing of the server.
    pub fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let what = format!("{} bytes {offset}+{len}", self.what("GET", key));
        let last = offset.checked_add(len - 1).ok_or_else(|| {
            Error::new(ErrorKind::Refused, format!("{what}: the range overflows"))
        })?;
        let range = format!("bytes={offset}-{last}");
        let mut resp = self.send(
            &what,
            "GET",
            Some(key),
            &[],
            &[("range", &range)],
            &[],
            &sigv4::EMPTY_SHA256,
        )?;
        let status = resp.status().as_u16();
        if status != 200 && status != 206 {
            return Err(self.failure(&what, resp));
        }
        let content_range = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok());
        check_range(content_range, offset, len).map_err(|(kind, why)| {
            Error::new(
                kind,
                format!("{what}: {} answered {status} {why}", self.host),
            )
        })?;
        let out = self.body(&what, &mut resp, len)?;
        if out.len() as u64 != len {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("{what}: {} sent {} of {len} bytes", self.host, out.len()),
            ));
        }
        Ok(out)
    }

    /// HeadObject: the object's size and `Last-Modified`.
    pub fn head(&self, key: &str) -> Result<Head> {
        let what = self.what("HEAD", key);
        let resp = self.send(
            &what,
            "HEAD",
            Some(key),
            &[],
            &[],
            &[],
            &sigv4::EMPTY_SHA256,
        )?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(&what, resp));
        }
        let size = content_length(&resp);
        let date = resp
            .headers()
            .get("last-modified")
            .and_then(|v| v.to_str().ok())
            .and_then(time::parse_http_date);
        match (size, date) {
            (Some(size), Some(last_modified)) => Ok(Head {
                size,
                last_modified,
            }),
            _ => Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "{what}: {} answered without a Content-Length or a Last-Modified date",
                    self.host
                ),
            )),
        }
    }

    /// DeleteObject. S3 answers a delete of a missing key as a success too.
    pub fn delete(&self, key: &str) -> Result<()> {
        let what = self.what("DELETE", key);
        let mut resp = self.send(
            &what,
            "DELETE",
            Some(key),
            &[],
            &[],
            &[],
            &sigv4::EMPTY_SHA256,
        )?;
        match resp.status().as_u16() {
            200 | 204 => {}
            // Some S3-alikes answer a missing key so (AWS answers 204): gone either way.
            404 => {
                let e = self.failure(&what, resp);
                return if e.kind == ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                };
            }
            _ => return Err(self.failure(&what, resp)),
        }
        self.body(&what, &mut resp, MAX_ERROR_BODY)?;
        Ok(())
    }

    /// CopyObject within the bucket: `to` becomes a copy of `from` (both
    /// relative to the prefix).
    pub fn copy(&self, from: &str, to: &str) -> Result<()> {
        let what = format!(
            "{} from {}",
            self.what("COPY", to),
            self.spec.full_key(from)
        );
        let source = sigv4::encode_path(&format!(
            "{}/{}",
            self.spec.bucket,
            self.spec.full_key(from)
        ));
        let mut resp = self.send(
            &what,
            "PUT",
            Some(to),
            &[],
            &[("x-amz-copy-source", &source)],
            &[],
            &sigv4::EMPTY_SHA256,
        )?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(&what, resp));
        }
        // A 200 may still carry an <Error> (S3 reports a copy that failed late so).
        let body = self.body(&what, &mut resp, MAX_COPY_ANSWER)?;
        let mut p = xml::Pull::new(&body[..], MAX_COPY_ANSWER);
        match p.root() {
            Ok(root) if root == "CopyObjectResult" => match p.skip() {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::new(
                    ErrorKind::Refused,
                    format!("{what}: {} answered {e}", self.host),
                )),
            },
            Ok(root) if root == "Error" => {
                let (code, message) = error_document(&body);
                Err(Error::new(
                    kind_of(500, code.as_deref()),
                    format!(
                        "{what}: 200 {}{}",
                        code.as_deref().unwrap_or("(no S3 error code)"),
                        message.map_or(String::new(), |m| format!(": {m}"))
                    ),
                ))
            }
            Ok(root) => Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "{what}: {} answered <{root}>, not a CopyObjectResult",
                    self.host
                ),
            )),
            Err(e) => Err(Error::new(
                ErrorKind::Refused,
                format!("{what}: {} answered {e}", self.host),
            )),
        }
    }

    /// ListObjectsV2 of the keys under `prefix` (relative to the client's),
    /// [`MAX_PAGE_KEYS`] a page: an iterator of pages, each fetched when asked.
    pub fn list(&self, prefix: &str) -> Listing<'_> {
        self.list_with(prefix, None, MAX_PAGE_KEYS)
    }

    /// [`Client::list`] with a delimiter (common prefixes come back in
    /// [`Page::prefixes`]) and `max_keys` a page (1 to [`MAX_PAGE_KEYS`]).
    pub fn list_with<'a>(
        &'a self,
        prefix: &str,
        delimiter: Option<&str>,
        max_keys: usize,
    ) -> Listing<'a> {
        let full = self.spec.full_key(prefix);
        Listing {
            client: self,
            // The client's own prefix always ends a segment.
            full_prefix: if prefix.is_empty() && !self.spec.prefix.is_empty() {
                format!("{}/", self.spec.prefix)
            } else {
                full
            },
            delimiter: delimiter.map(str::to_string),
            max_keys: max_keys.clamp(1, MAX_PAGE_KEYS),
            token: None,
            last_key: None,
            last_prefix: None,
            done: false,
        }
    }
}

/// The pages of a listing, fetched one at a time (see [`Client::list`]). Keys in
/// pages are relative to the client's prefix; common prefixes too.
pub struct Listing<'a> {
    client: &'a Client,
    full_prefix: String,
    delimiter: Option<String>,
    max_keys: usize,
    token: Option<String>,
    last_key: Option<String>,
    last_prefix: Option<String>,
    done: bool,
}

impl Listing<'_> {
    fn page(&mut self) -> Result<Page> {
        let c = self.client;
        let what = format!("s3 LIST {}/{}", c.spec.bucket, self.full_prefix);
        let max_keys = self.max_keys.to_string();
        let mut query: Vec<(&str, &str)> = vec![
            ("list-type", "2"),
            ("max-keys", &max_keys),
            ("prefix", &self.full_prefix),
        ];
        if let Some(d) = &self.delimiter {
            query.push(("delimiter", d));
        }
        if let Some(t) = &self.token {
            query.push(("continuation-token", t));
        }
        let mut resp = c.send(&what, "GET", None, &query, &[], &[], &sigv4::EMPTY_SHA256)?;
        if resp.status().as_u16() != 200 {
            return Err(c.failure(&what, resp));
        }
        let reader = BufReader::with_capacity(
            16 << 10,
            crate::throttle::download(resp.body_mut().as_reader()),
        );
        let mut page = list::parse_page(reader, self.max_keys).map_err(|e| {
            let kind = match e {
                xml::Error::Io(_) => ErrorKind::Unavailable,
                _ => ErrorKind::Refused,
            };
            Error::new(kind, format!("{what}: {} answered {e}", c.host))
        })?;
        let refuse = |why: String| {
            Error::new(
                ErrorKind::Refused,
                format!("{what}: {} listed {why}", c.host),
            )
        };
        let strip = |k: String| -> std::result::Result<String, Error> {
            if !k.starts_with(&self.full_prefix) {
                return Err(refuse(format!("{k:?}, outside the prefix asked for")));
            }
            Ok(if c.spec.prefix.is_empty() {
                k
            } else {
                k[c.spec.prefix.len() + 1..].to_string()
            })
        };
        // Keys come in UTF-8 binary order, each once, across pages too: a page
        // replayed or out of order is refused, so a listing always ends.
        for o in &page.objects {
            if self.last_key.as_ref().is_some_and(|l| *l >= o.key) {
                return Err(refuse(format!("{:?} out of order", o.key)));
            }
            self.last_key = Some(o.key.clone());
        }
        for p in &page.prefixes {
            if self.last_prefix.as_ref().is_some_and(|l| l >= p) {
                return Err(refuse(format!("prefix {p:?} out of order")));
            }
            self.last_prefix = Some(p.clone());
        }
        if page.next.is_some() && page.objects.is_empty() && page.prefixes.is_empty() {
            return Err(refuse("an empty page that says more follow".into()));
        }
        page.objects = page
            .objects
            .into_iter()
            .map(|o| {
                Ok(Object {
                    key: strip(o.key)?,
                    ..o
                })
            })
            .collect::<Result<_>>()?;
        page.prefixes = page
            .prefixes
            .into_iter()
            .map(strip)
            .collect::<Result<_>>()?;
        self.token = page.next.clone();
        Ok(page)
    }
}

impl Iterator for Listing<'_> {
    type Item = Result<Page>;

    fn next(&mut self) -> Option<Result<Page>> {
        if self.done {
            return None;
        }
        let page = self.page();
        // After an error or the last page, nothing more: an error is not retried
        // from here (the caller lists again, under `retry`).
        self.done = page.as_ref().map_or(true, |p| p.next.is_none());
        Some(page)
    }
}

/// Checks a ranged answer's `Content-Range` against the range asked for; the
/// error's kind says whether the object ends before it.
fn check_range(
    content_range: Option<&str>,
    offset: u64,
    len: u64,
) -> std::result::Result<(), (ErrorKind, String)> {
    let Some(cr) = content_range else {
        return Err((
            ErrorKind::Refused,
            "without a Content-Range: the range was not honoured".into(),
        ));
    };
    let parsed = cr.trim().strip_prefix("bytes ").and_then(|r| {
        let (span, total) = r.split_once('/')?;
        let (a, b) = span.split_once('-')?;
        let num = |s: &str| {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        let total = if total == "*" {
            None
        } else {
            Some(num(total)?)
        };
        Some((num(a)?, num(b)?, total))
    });
    let Some((first, last, total)) = parsed else {
        return Err((
            ErrorKind::Refused,
            format!("a malformed Content-Range {cr:?}"),
        ));
    };
    let want_last = offset + (len - 1);
    if first == offset && last == want_last && total.is_none_or(|t| t > last) {
        return Ok(());
    }
    // The object ends inside the range: those bytes were never written.
    if first == offset && last < want_last && total == Some(last + 1) {
        return Err((
            ErrorKind::NotFound,
            format!("bytes {first}-{last} of {last}+1: the object ends before the range does"),
        ));
    }
    Err((
        ErrorKind::Refused,
        format!("Content-Range {cr:?} for bytes {offset}-{want_last}"),
    ))
}

fn content_length(resp: &Response) -> Option<u64> {
    resp.headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The kind of a failed answer (see the module docs).
fn kind_of(status: u16, code: Option<&str>) -> ErrorKind {
    let code = code.unwrap_or("");
    // RequestTimeout: AWS's 400 for an upload that came too slowly; worth a retry.
    if matches!(
        code,
        "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout"
    ) {
        return ErrorKind::Unavailable;
    }
    if code.contains("Quota") {
        return ErrorKind::Full;
    }
    // A credential scope for another region: AWS and Garage answer 400 with this.
    if code == "AuthorizationHeaderMalformed" {
        return ErrorKind::Auth;
    }
    match status {
        507 => ErrorKind::Full,
        403 => ErrorKind::Auth,
        404 if code == "NoSuchBucket" => ErrorKind::Refused,
        404 | 416 => ErrorKind::NotFound,
        429 | 500 | 502 | 503 | 504 => ErrorKind::Unavailable,
        _ => ErrorKind::Refused,
    }
}

/// The `Code` and `Message` of an S3 `<Error>` document, each cut to one short
/// line; `None` where the body is not one.
fn error_document(body: &[u8]) -> (Option<String>, Option<String>) {
    let mut p = xml::Pull::new(body, MAX_ERROR_BODY);
    let (mut code, mut message) = (None, None);
    if !matches!(p.root(), Ok(root) if root == "Error") {
        return (None, None);
    }
    while let Ok(xml::Event::Start(name)) = p.next() {
        match name.as_str() {
            "Code" => code = p.text().ok().map(|t| one_line(&t)),
            // XML whitespace (a wrapped message) is one space here.
            "Message" => {
                message = p
                    .text()
                    .ok()
                    .map(|t| one_line(&t.split_whitespace().collect::<Vec<_>>().join(" ")))
            }
            _ => {
                if p.skip().is_err() {
                    break;
                }
            }
        }
    }
    let code = code.filter(|c| {
        !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
    });
    (code, message.filter(|m| !m.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_taken_only_as_asked() {
        // 206 or rclone's 200, with the range asked for.
        assert!(check_range(Some("bytes 100-199/1000"), 100, 100).is_ok());
        assert!(check_range(Some("bytes 0-9/*"), 0, 10).is_ok());
        assert!(check_range(Some("bytes 0-9/10"), 0, 10).is_ok());
        // The object ends first: not found, not the short bytes.
        let (kind, _) = check_range(Some("bytes 100-149/150"), 100, 100).unwrap_err();
        assert_eq!(kind, ErrorKind::NotFound);
        for cr in [
            None,
            Some("bytes 101-200/1000"),
            Some("bytes 100-198/1000"),
            Some("bytes 100-200/1000"),
            Some("bytes 100-199/150"),
            Some("bytes 100-199"),
            Some("bytes=100-199/1000"),
            Some("bytes -199/1000"),
            Some("bytes 100-+199/1000"),
            Some("items 100-199/1000"),
        ] {
            let (kind, why) = check_range(cr, 100, 100).unwrap_err();
            assert_eq!(kind, ErrorKind::Refused, "{cr:?}: {why}");
        }
    }

    #[test]
    fn errors_sort_by_status_and_code() {
        use ErrorKind::*;
        for (status, code, kind) in [
            (503, Some("SlowDown"), Unavailable),
            (503, None, Unavailable),
            (500, Some("InternalError"), Unavailable),
            (400, Some("SlowDown"), Unavailable),
            (400, Some("RequestTimeout"), Unavailable),
            (429, None, Unavailable),
            (403, Some("SignatureDoesNotMatch"), Auth),
            (403, Some("InvalidAccessKeyId"), Auth),
            (403, Some("AccessDenied"), Auth),
            (400, Some("AuthorizationHeaderMalformed"), Auth),
            (404, Some("NoSuchKey"), NotFound),
            (404, None, NotFound),
            (404, Some("NoSuchBucket"), Refused),
            (416, Some("InvalidRange"), NotFound),
            (507, None, Full),
            (403, Some("QuotaExceeded"), Full),
            (400, Some("InvalidRequest"), Refused),
            (409, None, Refused),
            (301, Some("PermanentRedirect"), Refused),
            (501, Some("NotImplemented"), Refused),
        ] {
            assert_eq!(kind_of(status, code), kind, "{status} {code:?}");
        }
        let body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The key\ndoes not exist</Message><Resource>/b/k</Resource></Error>";
        assert_eq!(
            error_document(body),
            (
                Some("NoSuchKey".into()),
                Some("The key does not exist".into())
            )
        );
        assert_eq!(error_document(b"<html>nope</html>"), (None, None));
        assert_eq!(error_document(b"not xml"), (None, None));
        // A code that is not a code is not repeated in our message.
        assert_eq!(
            error_document(b"<Error><Code>a b\x07</Code></Error>").0,
            None
        );
    }
}
