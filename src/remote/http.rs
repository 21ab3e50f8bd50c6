//! The HTTP remote: [`Remote`] over the REST protocol of [`crate::protocol`], via ureq.
//!
//! One keep-alive agent is shared by all sink and restore threads. Every window is
//! sent with `X-Chute-SHA256`, so the peer keeps it only if it arrived intact.
//! Transport failures and 5xx answers are [`ErrorKind::Unavailable`] and retried with
//! backoff by the callers that can safely repeat (every request here is idempotent:
//! a window rewrite replaces the same bytes; a commit of the same index is a no-op).

use super::{Error, ErrorKind, Remote, Result, retry};
use crate::auth::{self, Signer};
use crate::blob::BlobId;
use crate::format::Index;
use std::time::Duration;
use ureq::Agent;

use crate::protocol::PREFIX;
/// Longest JSON answer read (indexes, lists, hashes).
const MAX_JSON: u64 = 64 << 20;

/// A peer's store, e.g. `http://peer:2002`.
pub struct HttpRemote {
    agent: Agent,
    base: String,
    signer: Option<Signer>,
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
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_send_body(Some(Duration::from_secs(120)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_recv_body(Some(Duration::from_secs(120)))
            .max_idle_connections_per_host(16)
            .build()
            .into();
        Ok(HttpRemote {
            agent,
            base: format!("http://{authority}"),
            signer,
        })
    }

    /// Maps a response to success or a remote error.
    fn check(
        &self,
        what: &str,
        resp: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) || status == 304 {
            return Ok(resp);
        }
        let mut resp = resp;
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_string()
            .unwrap_or_default();
        #[derive(miniserde::Deserialize)]
        struct E {
            error: String,
        }
        let msg = miniserde::json::from_str::<E>(&body).map_or(body, |e| e.error);
        let kind = match status {
            404 | 416 => ErrorKind::NotFound,
            // 403 is a refusal (another node's space, append-only), not a missing key.
            401 => ErrorKind::Auth,
            507 => ErrorKind::Full,
            s if s >= 500 => ErrorKind::Unavailable,
            _ => ErrorKind::Refused,
        };
        Err(Error::new(
            kind,
            format!("{what}: {} answered {status}: {msg}", self.base),
        ))
    }

    fn transport(&self, what: &str) -> impl FnOnce(ureq::Error) -> Error {
        let msg = format!("{what}: cannot reach {}", self.base);
        move |e| Error::new(ErrorKind::Unavailable, format!("{msg}: {e}"))
    }

    fn json<T: miniserde::Deserialize>(
        &self,
        what: &str,
        resp: ureq::http::Response<ureq::Body>,
    ) -> Result<T> {
        let mut resp = resp;
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON)
            .read_to_string()
            .map_err(self.transport(what))?;
        miniserde::json::from_str(&text).map_err(|_| {
            Error::new(
                ErrorKind::Refused,
                format!("{what}: {} sent malformed JSON", self.base),
            )
        })
    }

    /// One request, signed if we have a signer, retried while the remote is
    /// unavailable (each attempt signed afresh), and checked.
    fn send(
        &self,
        what: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let target = format!("{PREFIX}{path}");
        let url = format!("{}{target}", self.base);
        let digest = crate::crypto::sha256(body);
        retry(|| {
            let mut b = ureq::http::Request::builder().method(method).uri(&url);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            match &self.signer {
                Some(s) => {
                    for (k, v) in s.headers(method, &target, headers, &digest) {
                        b = b.header(k, v);
                    }
                }
                None if !body.is_empty() => {
                    b = b.header(auth::BODY, crate::hex::encode(&digest));
                }
                None => {}
            }
            let req = b
                .body(body)
                .map_err(|e| Error::new(ErrorKind::Refused, format!("{what}: {e}")))?;
            let r = self.agent.run(req).map_err(self.transport(what))?;
            self.check(what, r)
        })
    }

    /// A blob's index document (`index.json`, or a forgotten one's).
    fn fetch_index(&self, id: &BlobId, name: &str) -> Result<Index> {
        let what = format!("{name} of {}", id.path());
        let mut resp = self.get(&what, &format!("{}/{name}", id.path()))?;
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(crate::store::MAX_INDEX)
            .read_to_vec()
            .map_err(self.transport(&what))?;
        super::parse_index(&bytes, id)
    }

    fn get(&self, what: &str, path: &str) -> Result<ureq::http::Response<ureq::Body>> {
        self.send(what, "GET", path, &[], &[])
    }
}

fn blob_from_uri(uri: &str) -> Option<BlobId> {
    let p = uri.strip_prefix(PREFIX)?;
    let p = p.strip_suffix("index.json").unwrap_or(p);
    BlobId::parse(p).ok()
}

impl Remote for HttpRemote {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn create(&self, index: &Index) -> Result<BlobId> {
        let what = "create blob";
        let json = [("Content-Type", "application/json")];
        let resp = self.send(what, "POST", "", &json, index.to_json().as_bytes())?;
        let uri: String = self.json(what, resp)?;
        blob_from_uri(&uri).ok_or_else(|| {
            Error::new(
                ErrorKind::Refused,
                format!("{what}: unexpected answer {uri:?}"),
            )
        })
    }

    fn put_window(&self, id: &BlobId, window: u64, n: u64, data: &[u8]) -> Result<[u8; 32]> {
        let what = format!("upload window {n} of {}", id.path());
        let path = format!("{}/0/{window}/{n}", id.path());
        let octets = [("Content-Type", "application/octet-stream")];
        self.send(&what, "PUT", &path, &octets, data)?;
        Ok(crate::crypto::sha256(data))
    }

    fn window_hash(&self, id: &BlobId, window: u64, n: u64) -> Result<Option<[u8; 32]>> {
        let what = format!("hash of window {n} of {}", id.path());
        let resp = match self.get(&what, &format!("{}/0/{window}/{n}/hash/sha256", id.path())) {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let hex: String = self.json(&what, resp)?;
        crate::hex::decode32(&hex).map(Some).ok_or_else(|| {
            Error::new(
                ErrorKind::Refused,
                format!("{what}: not a SHA-256: {hex:?}"),
            )
        })
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
            let mut r = self.send(
                &what,
                "GET",
                &format!("{}/0", id.path()),
                &[("Range", &range)],
                &[],
            )?;
            if r.status().as_u16() != 206 {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!("{what}: range not honoured"),
                ));
            }
            let body = r
                .body_mut()
                .with_config()
                .limit(len + 1)
                .read_to_vec()
                .map_err(self.transport(&what))?;
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
        self.send(&what, "PUT", &path, &json, index.to_json().as_bytes())?;
        Ok(())
    }

    fn index(&self, id: &BlobId) -> Result<Index> {
        self.fetch_index(id, "index.json")
    }

    fn list(&self, domain: &str, node: &str) -> Result<Vec<BlobId>> {
        let what = format!("list snapshots of {domain}/{node}");
        let resp = self.get(&what, &format!("{domain}/{node}/"))?;
        let uris: Vec<String> = self.json(&what, resp)?;
        uris.iter()
            .map(|u| {
                blob_from_uri(u).ok_or_else(|| {
                    Error::new(ErrorKind::Refused, format!("{what}: bad entry {u:?}"))
                })
            })
            .collect()
    }

    fn delete(&self, id: &BlobId) -> Result<()> {
        let what = format!("delete {}", id.path());
        self.send(&what, "DELETE", &format!("{}/", id.path()), &[], &[])?;
        Ok(())
    }

    fn forget(&self, id: &BlobId) -> Result<()> {
        let what = format!("forget {}", id.path());
        let path = format!("{}/index.json", id.path());
        self.send(&what, "DELETE", &path, &[], &[])?;
        Ok(())
    }

    fn forgotten_index(&self, id: &BlobId) -> Result<Index> {
        self.fetch_index(id, "index.forgotten.json")
    }

    fn trim(&self, id: &BlobId, window: u64, n: u64) -> Result<()> {
        let what = format!("trim window {n} of {}", id.path());
        let path = format!("{}/0/{window}/{n}", id.path());
        self.send(&what, "DELETE", &path, &[], &[])?;
        Ok(())
    }

    fn list_uncommitted(&self, domain: &str, node: &str) -> Result<Vec<crate::blob::Uncommitted>> {
        let what = format!("list uncommitted blobs of {domain}/{node}");
        let resp = self.get(&what, &format!("{domain}/{node}/?uncommitted"))?;
        let list: Vec<crate::protocol::ListedBlob> = self.json(&what, resp)?;
        list.into_iter()
            .map(|b| {
                let bad =
                    || Error::new(ErrorKind::Refused, format!("{what}: bad entry {:?}", b.uri));
                Ok(crate::blob::Uncommitted {
                    id: blob_from_uri(&b.uri).ok_or_else(bad)?,
                    state: crate::blob::BlobState::parse(&b.state).ok_or_else(bad)?,
                    bytes: b.bytes,
                    idle: b.idle,
                })
            })
            .collect()
    }
}
