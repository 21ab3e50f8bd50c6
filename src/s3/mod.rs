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
//! `AWS_SECRET_ACCESS_KEY`, or from the file `CHUTE_S3_CREDENTIALS_FILE` names
//! (not both), and the region from `AWS_DEFAULT_REGION`, else `AWS_REGION`, else
//! `us-east-1` (Garage's is `garage`). The credentials file is lines of
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
//! [`IO_TIMEOUT`].
//!
//! **Errors** are [`crate::remote::Error`]s, one line naming the operation, the
//! key, the status and the S3 error code: a transport failure, a timeout, 500,
//! 502, 503, 504, 429 or `SlowDown` is [`ErrorKind::Unavailable`]; 403 is
//! [`ErrorKind::Auth`]; 404 is [`ErrorKind::NotFound`] (but `NoSuchBucket` is
//! [`ErrorKind::Refused`]: a missing bucket is a configuration error, not a
//! missing object); 416 (a range past the end) is [`ErrorKind::NotFound`]; 507
//! or an error code naming a quota is [`ErrorKind::Full`]; any other answer is
//! [`ErrorKind::Refused`].

pub mod list;
pub mod sigv4;
pub mod time;
pub mod xml;

use crate::remote::{Error, ErrorKind, Result};
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
/// The part of an error body read (and shown); the rest is never read.
pub const MAX_ERROR_BODY: u64 = 4 << 10;
/// A `CopyObjectResult` (an ETag and a date), with room to spare.
const MAX_COPY_ANSWER: u64 = 4 << 10;
/// The longest error message kept from an answer, in characters.
const MAX_MESSAGE: usize = 200;
/// The largest credentials file read.
const MAX_CREDENTIALS_FILE: u64 = 4 << 10;
/// The region used when the environment names none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The line the CLI prints before using an `s3:http://` store.
pub const PLAIN_HTTP_WARNING: &str = "warning: S3 over plain http: the data is sealed, but anyone on the path can see each signed request and replay it within SigV4's 15-minute window (a delete included)";

/// Where a bucket is: restic's `s3:http://HOST[:PORT]/BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Spec {
    /// `HOST[:PORT]`, as given.
    pub authority: String,
    pub bucket: String,
    /// The key prefix every key is under, without leading or trailing `/`;
    /// empty for the whole bucket.
    pub prefix: String,
    /// `http://BUCKET.HOST/KEY` rather than `http://HOST/BUCKET/KEY`.
    pub virtual_host: bool,
}

fn usage(msg: String) -> crate::Error {
    crate::Error::Usage(msg)
}

impl S3Spec {
    /// Parses `s3:http://HOST[:PORT]/BUCKET[/PREFIX]` (path-style).
    pub fn parse(spec: &str) -> crate::Result<S3Spec> {
        let Some(url) = spec.strip_prefix("s3:") else {
            return Err(usage(format!(
                "{spec}: an S3 store is s3:http://HOST[:PORT]/BUCKET[/PREFIX]"
            )));
        };
        if url.starts_with("https://") {
            return Err(usage(format!(
                "{spec}: this build of chute has no TLS; use s3:http:// on a network you trust (the data is sealed), or a TLS-terminating proxy on this machine"
            )));
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(usage(format!(
                "{spec}: an S3 store is s3:http://HOST[:PORT]/BUCKET[/PREFIX]"
            )));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        check_authority(authority).map_err(|why| usage(format!("{spec}: {why}")))?;
        let path = path.trim_end_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        check_bucket(bucket).map_err(|why| usage(format!("{spec}: {why}")))?;
        if prefix
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
            && !prefix.is_empty()
        {
            return Err(usage(format!(
                "{spec}: the prefix has an empty, '.' or '..' segment"
            )));
        }
        if prefix.len() > 512 || prefix.chars().any(char::is_control) {
            return Err(usage(format!(
                "{spec}: the prefix is longer than 512 bytes or has a control character"
            )));
        }
        Ok(S3Spec {
            authority: authority.to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            virtual_host: false,
        })
    }

    /// This spec with virtual-host addressing on or off.
    pub fn virtual_host(mut self, yes: bool) -> S3Spec {
        self.virtual_host = yes;
        self
    }

    /// The `Host` requests are sent to (and signed for).
    fn host(&self) -> String {
        if self.virtual_host {
            format!("{}.{}", self.bucket, self.authority)
        } else {
            self.authority.clone()
        }
    }

    /// The full key of `key` (relative to the prefix).
    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The request path (encoded) of a full key, or of the bucket for `None`.
    fn path(&self, full_key: Option<&str>) -> String {
        let key = full_key.unwrap_or("");
        if self.virtual_host {
            sigv4::encode_path(key)
        } else if full_key.is_none() {
            sigv4::encode_path(&self.bucket)
        } else {
            sigv4::encode_path(&format!("{}/{key}", self.bucket))
        }
    }
}

impl std::fmt::Display for S3Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3:http://{}/{}", self.authority, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

fn check_authority(a: &str) -> std::result::Result<(), String> {
    if a.is_empty() {
        return Err("no host".into());
    }
    if !a
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return Err(format!("{a:?} is not HOST[:PORT]"));
    }
    if let Some((host, port)) = a.rsplit_once(':') {
        // An IPv6 literal without a port ends in `]`.
        if !host.is_empty() && !port.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(format!("{port:?} is not a port"));
        }
    }
    Ok(())
}

/// S3's bucket naming rules: 3 to 63 of `a-z 0-9 . -`, starting and ending with
/// a letter or digit.
fn check_bucket(b: &str) -> std::result::Result<(), String> {
    let edge = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if b.len() < 3
        || b.len() > 63
        || !b
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        || !edge(b.bytes().next())
        || !edge(b.bytes().last())
    {
        return Err(format!(
            "{b:?} is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')"
        ));
    }
    Ok(())
}

/// An S3 key pair. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// From the environment (see the module docs): the `AWS_*` pair or the
    /// `CHUTE_S3_CREDENTIALS_FILE`, not both.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> crate::Result<Credentials> {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        let id = set("AWS_ACCESS_KEY_ID");
        let secret = set("AWS_SECRET_ACCESS_KEY");
        match (set("CHUTE_S3_CREDENTIALS_FILE"), id, secret) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(usage(
                "both CHUTE_S3_CREDENTIALS_FILE and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are set: set one".into(),
            )),
            (Some(file), None, None) => Credentials::from_file(std::path::Path::new(&file)),
            (None, Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
                access_key_id,
                secret_access_key,
            }),
            (None, Some(_), None) => Err(usage(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
            )),
            (None, None, Some(_)) => Err(usage(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
            )),
            (None, None, None) => Err(usage(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or CHUTE_S3_CREDENTIALS_FILE".into(),
            )),
        }
    }

    /// Reads a credentials file (see the module docs for its format).
    pub fn from_file(path: &std::path::Path) -> crate::Result<Credentials> {
        let what = format!("S3 credentials file {}", path.display());
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CREDENTIALS_FILE + 1).read_to_string(&mut text))
            .map_err(|e| crate::Error::Io(what.clone(), e))?;
        if text.len() as u64 > MAX_CREDENTIALS_FILE {
            return Err(usage(format!(
                "{what}: longer than {MAX_CREDENTIALS_FILE} bytes"
            )));
        }
        Credentials::parse(&text).map_err(|why| usage(format!("{what}: {why}")))
    }

    /// Parses the text of a credentials file.
    pub fn parse(text: &str) -> std::result::Result<Credentials, String> {
        let (mut id, mut secret) = (None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = n + 1;
            let Some((name, value)) = line.split_once('=') else {
                return Err(format!("line {n} is not `name = value`"));
            };
            let value = value.trim();
            if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("line {n}: the value is empty or has a space"));
            }
            let slot = match name.trim() {
                "access_key_id" => &mut id,
                "secret_access_key" => &mut secret,
                other => {
                    return Err(format!(
                        "line {n}: unknown name {other:?} (access_key_id, secret_access_key)"
                    ));
                }
            };
            if slot.replace(value.to_string()).is_some() {
                return Err(format!("line {n}: {} given twice", name.trim()));
            }
        }
        match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
                access_key_id,
                secret_access_key,
            }),
            _ => Err("needs both access_key_id and secret_access_key".into()),
        }
    }
}

/// Everything a [`Client`] needs: where, who, which region.
#[derive(Debug, Clone)]
pub struct Config {
    pub spec: S3Spec,
    pub credentials: Credentials,
    pub region: String,
}

impl Config {
    /// Parses `spec` and reads credentials and region from `env` (a lookup such
    /// as `|k| std::env::var(k).ok()`; see the module docs).
    pub fn from_env(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> crate::Result<Config> {
        let spec = S3Spec::parse(spec)?;
        let credentials = Credentials::from_env(env)?;
        let region = region_from_env(env);
        if region.is_empty()
            || region.len() > 64
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(usage(format!("S3 region {region:?} is not a region name")));
        }
        Ok(Config {
            spec,
            credentials,
            region,
        })
    }
}

/// `AWS_DEFAULT_REGION`, else `AWS_REGION`, else [`DEFAULT_REGION`].
pub fn region_from_env(env: &dyn Fn(&str) -> Option<String>) -> String {
    ["AWS_DEFAULT_REGION", "AWS_REGION"]
        .iter()
        .find_map(|k| env(k).filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_REGION.to_string())
}

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
        self.agent.run(req).map_err(|e| self.transport(what, e))
    }

    fn transport(&self, what: &str, e: ureq::Error) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "{what}: cannot reach {}: {}",
                self.host,
                one_line(&e.to_string())
            ),
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

    /// Reads a body of at most `cap` bytes whole; more is refused.
    fn body(&self, what: &str, resp: &mut Response, cap: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(cap + 1)
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
        let usize_len = usize::try_from(len)
            .map_err(|_| Error::new(ErrorKind::Refused, format!("{what}: too large for memory")))?;
        let mut out = Vec::with_capacity(usize_len);
        let n = resp
            .body_mut()
            .as_reader()
            .take(len + 1)
            .read_to_end(&mut out)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{what}: reading the answer from {}: {e}", self.host),
                )
            })? as u64;
        if n != len {
            let kind = if n > len {
                ErrorKind::Refused
            } else {
                ErrorKind::Unavailable
            };
            return Err(Error::new(
                kind,
                format!(
                    "{what}: {} sent {n} bytes{}",
                    self.host,
                    if n > len { " or more" } else { "" }
                ),
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
        if !matches!(resp.status().as_u16(), 200 | 204) {
            return Err(self.failure(&what, resp));
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
        let reader = BufReader::with_capacity(16 << 10, resp.body_mut().as_reader());
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
    if code == "SlowDown" || code == "ServiceUnavailable" || code == "InternalError" {
        return ErrorKind::Unavailable;
    }
    if code.contains("Quota") {
        return ErrorKind::Full;
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
            "Message" => message = p.text().ok().map(|t| one_line(&t)),
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

/// `s` on one line of at most [`MAX_MESSAGE`] characters, control characters
/// replaced: what a server says goes into our one-line errors.
fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect();
    out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > MAX_MESSAGE {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_in_restics_form() {
        let s = S3Spec::parse("s3:http://127.0.0.1:3900/chute-test/a/b/").unwrap();
        assert_eq!(
            s,
            S3Spec {
                authority: "127.0.0.1:3900".into(),
                bucket: "chute-test".into(),
                prefix: "a/b".into(),
                virtual_host: false
            }
        );
        assert_eq!(s.to_string(), "s3:http://127.0.0.1:3900/chute-test/a/b");
        assert_eq!(s.host(), "127.0.0.1:3900");
        assert_eq!(s.path(Some(&s.full_key("x y"))), "/chute-test/a/b/x%20y");
        assert_eq!(s.path(None), "/chute-test");
        let v = S3Spec::parse("s3:http://garage.lan/bkt")
            .unwrap()
            .virtual_host(true);
        assert_eq!(v.prefix, "");
        assert_eq!(v.host(), "bkt.garage.lan");
        assert_eq!(v.path(Some(&v.full_key("k"))), "/k");
        assert_eq!(v.path(None), "/");
        for bad in [
            "http://h/bucket",
            "s3:https://h/bucket",
            "s3:ftp://h/bucket",
            "s3:http:///bucket",
            "s3:http://h",
            "s3:http://h/",
            "s3:http://h/Bucket",
            "s3:http://h/b",
            "s3:http://h/-bucket",
            "s3:http://u@h/bucket",
            "s3:http://h:port/bucket",
            "s3:http://h:99999/bucket",
            "s3:http://h/bucket/a//b",
            "s3:http://h/bucket/../b",
        ] {
            let e = S3Spec::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let e = S3Spec::parse("s3:https://h/bucket")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no TLS"), "{e}");
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn credentials_and_region_come_from_the_environment_given() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_REGION", "garage"),
        ]);
        let c = Config::from_env("s3:http://h/bucket", &env).unwrap();
        assert_eq!(c.credentials.access_key_id, "GK1");
        assert_eq!(c.region, "garage");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_REGION", "garage"),
        ]);
        assert_eq!(region_from_env(&env), "eu-west-1");
        assert_eq!(region_from_env(&env_of(&[])), DEFAULT_REGION);

        let dir = std::env::temp_dir().join(format!("chute-s3-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("creds");
        std::fs::write(
            &file,
            "# garage key\naccess_key_id = GKf\n\nsecret_access_key=sf\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = Credentials::from_env(&env_of(&[("CHUTE_S3_CREDENTIALS_FILE", f)])).unwrap();
        assert_eq!(
            c,
            Credentials {
                access_key_id: "GKf".into(),
                secret_access_key: "sf".into()
            }
        );
        for env in [
            env_of(&[("CHUTE_S3_CREDENTIALS_FILE", f), ("AWS_ACCESS_KEY_ID", "x")]),
            env_of(&[("AWS_ACCESS_KEY_ID", "x")]),
            env_of(&[("AWS_SECRET_ACCESS_KEY", "x")]),
            env_of(&[]),
            env_of(&[("CHUTE_S3_CREDENTIALS_FILE", "/nonexistent/creds")]),
        ] {
            let e = Credentials::from_env(&env).unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        std::fs::write(&file, "x".repeat(5000)).unwrap();
        assert!(Credentials::from_file(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        for bad in [
            "access_key_id = a\n",
            "access_key_id = a\nsecret_access_key = b\nregion = c\n",
            "access_key_id = a\naccess_key_id = a\nsecret_access_key = b\n",
            "access_key_id a\nsecret_access_key = b\n",
            "access_key_id = a b\nsecret_access_key = b\n",
            "access_key_id =\nsecret_access_key = b\n",
        ] {
            assert!(Credentials::parse(bad).is_err(), "{bad:?}");
        }
        let bad_region = env_of(&[
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_REGION", "us east\n"),
        ]);
        assert!(Config::from_env("s3:http://h/bucket", &bad_region).is_err());
    }

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
            (429, None, Unavailable),
            (403, Some("SignatureDoesNotMatch"), Auth),
            (403, Some("InvalidAccessKeyId"), Auth),
            (403, Some("AccessDenied"), Auth),
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
        assert_eq!(one_line(&"x".repeat(300)).len(), MAX_MESSAGE + 3);
    }
}
