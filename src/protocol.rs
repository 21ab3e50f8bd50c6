//! The REST protocol of `chute serve`, the Parachute prototype's blob API: routes,
//! range headers and wire types, shared by the server ([`crate::server`]) and the
//! HTTP client ([`crate::remote::HttpRemote`]). Pure: nothing here touches a socket or a disk, so
//! the parsers are unit-tested and fuzzed in memory.
//!
//! Every path is below `/chute/blob/`; `URI` is `<domain>/<node>/<mount>/<timestamp>`,
//! each component 1-128 of `[A-Za-z0-9._-]`, not starting with a dot.
//!
//! | request | answer |
//! |---|---|
//! | `POST /chute/blob/` with index.json (`domain`, `node`, `mount`, `timestamp` place it; other fields are opaque) | `201`, body the JSON string `"/chute/blob/URI/"`, same in `Location`; malformed → `400`; already committed → `409` |
//! | `GET /chute/blob/<domain>/<node>/` | `200`, JSON array of the node's committed `"/chute/blob/URI/index.json"` |
//! | `GET /chute/blob/<domain>/<node>/?uncommitted` | `200`, JSON array of the node's blobs that are not committed snapshots (for `chute prune`): `{"uri":"/chute/blob/URI/","state":S,"bytes":N,"idle":SECS}`, `S` one of `forgotten`, `pending` (created, never committed) or `orphan` (no index left: an interrupted delete), `N` the bytes of its windows, `SECS` how long nothing in it changed |
//! | `GET /chute/blob/URI/index.json` | `200`, the committed index, with `ETag`; a pending blob's (created, not committed) index as it was posted, with `ETag` and `X-Chute-State: pending`; `304` if `If-None-Match` matches; `404` if unknown or forgotten |
//! | `PUT /chute/blob/URI/index.json` | commits the final index (chute's addition: the snapshot becomes visible): `201`, `true`; `409` if part 0 has gaps below the index's `size` or another index was committed |
//! | `PUT /chute/blob/URI/0` | `201`, `true`: the body is one window at offset 0, or with `Content-Range: bytes FIRST-LAST/TOTAL` (`TOTAL` may be `*`) the window `FIRST..=LAST` |
//! | `GET /chute/blob/URI/0` | `200`, JSON string: hex SHA-256 of the whole part; with `Range: bytes=A-B` (or `A-`, `-N`) `206` and those bytes |
//! | `PUT /chute/blob/URI/0/<W>/<N>` | `201`, `true`: window `N` of size `W` (offset `N*W`, at most `W` bytes), for resumable transfers |
//! | `GET /chute/blob/URI/0/<W>/<N>` | `200` and the window's bytes; `404` if never written |
//! | `DELETE /chute/blob/URI/0/<W>/<N>` | trim (`chute prune`): `200`, `true`: that window of a forgotten snapshot is gone (its other windows stay readable); `409` for a committed or pending blob; `404` if no such window |
//! | `GET /chute/blob/URI/0/<W>/<N>/hash/sha256` | `200`, JSON string: hex SHA-256 of that window as its file holds it now: from the verified record when a fresh stat of the file (inode, size, mtime, ctime) equals the one recorded when its bytes were last found equal to the SHA-256 they arrived with (on arrival, by a re-read, by a scrub), else re-read from disk; `404` if never written; `500` if the file is shorter than written. Bit rot that leaves the stat alone is found by the scrub, not here |
//! | `GET /chute/blob/URI/0/<W>/<N>/hmac?nonce=<64 hex>` | storage challenge (`chute verify`): `200`, JSON string: hex of the 16-byte Poly1305 tag of the window's bytes with the 32 nonce bytes as its one-time key (see [`crate::format`]'s "Storage challenges"), computed by reading the window file every time, never from a record (so only a store that kept the bytes can answer); `404` if never written; `400` a missing or malformed nonce; `500` if the file is shorter than written |
//! | `DELETE /chute/blob/URI/` | `200`, `true`: a forgotten, pending or orphaned blob is gone (index first); `409` for a committed snapshot (forget it first), so a prune racing a commit cannot destroy it |
//! | `DELETE /chute/blob/URI/index.json` | forget (`chute forget`): `200`, `true`: `index.json` becomes `index.forgotten.json`, so the snapshot leaves the list; its part stays readable and hashable (later snapshots may share its chunks) and can never change again; `404` if not committed; again on a forgotten one `200`, and its `idle` restarts (prune does this when it marks it, so the grace period is counted on the store's clock too) |
//! | `GET /chute/blob/URI/index.forgotten.json` | `200`, the index a forgotten snapshot had (for `chute verify`); `404` if not forgotten |
//!
//! Every DELETE passes one gate, `may_delete`: an `--append-only` server refuses them
//! (`403`) unless the request also carries `X-Chute-Admin`, the proof of the key
//! given with `--admin-key-file`, with a fresh, unused time and nonce (see
//! [`crate::auth`]).
//!
//! Requests are signed (see [`crate::auth`]); the signature covers the method, the
//! target, the body's SHA-256, every header above that the server acts on
//! (`Content-Range`, `Range`, `If-None-Match`) and `Host`, the peer it was made
//! for. `401` is a request that does not authenticate, or was signed by an older
//! chute ("old signature version"), or for a `Host` that is not one of this
//! server's names ("request signed for peer X, this peer is Y": `chute serve
//! --name X` admits the name); `429` with `Retry-After: SECONDS` a node past its
//! request rate.
//!
//! Every answer to a verified node's request carries `X-Chute-Answer`, a MAC under
//! the node's key over the request's nonce, the status, the body's SHA-256 (or
//! `sealed` for window and range bytes) and the `Content-Length`, `Content-Range`,
//! `ETag`, `Retry-After` and `X-Chute-State` headers; an `--open` server answers
//! anyone else with `X-Chute-Answer: open`. Answers always have a
//! `Content-Length`. See [`crate::auth`].
//!
//! A PUT may carry `X-Chute-SHA256: <hex>`: the server hashes the body as it arrives
//! and keeps nothing if they differ (`400`). Windows are written to a temporary file
//! and renamed before the `201`, so a broken one is never seen; they are made
//! durable by the commit (`PUT .../index.json`), which fdatasyncs every window before
//! the index is written: an acknowledged window of an uncommitted blob may be lost in
//! a power cut (see [`crate::store`]; a resumed sink re-checks every window's hash).
//!
//! Errors are JSON `{"error": "..."}`: `400` malformed (bad names, `..`, `%`-encoded
//! characters, NUL, bad headers, digest mismatch, a body that ends early), `404`
//! unknown, `405` wrong method (with `Allow`), `409` conflict, `411` no
//! `Content-Length` on a PUT, `413` body too large (a creating index over 8 KiB, a committing one over 1 MiB, a window
//! over `--max-window`), `416` a range not written, overlapping windows or a window
//! starting more than 64 largest windows past the end of part 0, `429` too many
//! requests (with `Retry-After`), `507` store full,
//! node quota full, or the node has 64 pending (uncommitted) blobs already.
//! A window PUT to a blob committed or forgotten while its body was arriving is
//! `409` and kept nowhere: a committed blob never changes.
//!
//! Quotas (`--quota`, `quota=` in `--allow-file`) count every window and index
//! file a node's blobs hold, each its bytes plus 4 KiB; a window sent again over
//! itself is charged only the difference, and deletes and trims give back exactly
//! what they removed.

use crate::blob::{BlobId, valid_component};
use crate::crypto::ChallengeNonce;

/// Where every route starts.
pub const PREFIX: &str = "/chute/blob/";

/// The window size a sink or a prune's repack uploads part 0 in, the `<W>` of
/// `/0/<W>/<N>`, unless it learnt better (see `sink::next_window`).
pub const DEFAULT_WINDOW: u64 = 2 << 20;
/// Bounds for the window size a remote is given: small enough that a failed window
/// costs little to resend on a slow uplink, large enough that requests stay few; the
/// top also bounds memory (each worker may hold a full window).
pub const MIN_WINDOW: u64 = 1 << 20;
pub const MAX_WINDOW: u64 = 4 << 20;

/// A parsed request path.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/chute/blob/`
    Root,
    /// `/chute/blob/<domain>/<node>/`
    Node { domain: String, node: String },
    /// `/chute/blob/URI/`
    Blob(BlobId),
    /// `/chute/blob/URI/index.json`
    Index(BlobId),
    /// `/chute/blob/URI/index.forgotten.json`
    Forgotten(BlobId),
    /// `/chute/blob/URI/0`
    Part(BlobId),
    /// `/chute/blob/URI/0/<W>/<N>`
    Window { id: BlobId, size: u64, n: u64 },
    /// `/chute/blob/URI/0/<W>/<N>/hash/sha256`
    WindowHash { id: BlobId, size: u64, n: u64 },
    /// `/chute/blob/URI/0/<W>/<N>/hmac?nonce=<64 hex>`
    WindowChallenge {
        id: BlobId,
        size: u64,
        n: u64,
        nonce: ChallengeNonce,
    },
}

/// Why a path did not parse.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// Not below `/chute/blob/`, or no such resource shape.
    NotFound,
    /// Below `/chute/blob/` but malformed: a 400.
    Bad(String),
}

fn number(s: &str) -> Result<u64, RouteError> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RouteError::Bad(format!("{s:?} is not a number")));
    }
    s.parse()
        .map_err(|_| RouteError::Bad(format!("{s:?} is too large")))
}

/// Parses a request target. Pure: the fuzz target and the tests call it directly.
pub fn parse_route(url: &str) -> Result<Route, RouteError> {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return if path == "/chute/blob" {
            Ok(Route::Root)
        } else {
            Err(RouteError::NotFound)
        };
    };
    if rest.is_empty() {
        return Ok(Route::Root);
    }
    if rest.contains('%') {
        return Err(RouteError::Bad(
            "percent-encoded paths are not accepted".into(),
        ));
    }
    let trailing = rest.ends_with('/');
    let parts: Vec<&str> = rest.strip_suffix('/').unwrap_or(rest).split('/').collect();
    // Name components first: these are where traversal would hide.
    let names = parts.len().min(4);
    for p in &parts[..names] {
        if !valid_component(p) {
            return Err(RouteError::Bad(format!("invalid path component {p:?}")));
        }
    }
    let id = |p: &[&str]| {
        BlobId::new(p[0], p[1], p[2], p[3]).map_err(|e| RouteError::Bad(e.to_string()))
    };
    match (parts.as_slice(), trailing) {
        ([d, n], true) => Ok(Route::Node {
            domain: (*d).into(),
            node: (*n).into(),
        }),
        ([_, _, _, _], true) => Ok(Route::Blob(id(&parts)?)),
        ([_, _, _, _, "index.json"], false) => Ok(Route::Index(id(&parts)?)),
        ([_, _, _, _, "index.forgotten.json"], false) => Ok(Route::Forgotten(id(&parts)?)),
        ([_, _, _, _, "0"], false) => Ok(Route::Part(id(&parts)?)),
        ([_, _, _, _, "0", w, n], false) => Ok(Route::Window {
            id: id(&parts)?,
            size: number(w)?,
            n: number(n)?,
        }),
        ([_, _, _, _, "0", w, n, "hash", "sha256"], false) => Ok(Route::WindowHash {
            id: id(&parts)?,
            size: number(w)?,
            n: number(n)?,
        }),
        ([_, _, _, _, "0", w, n, "hmac"], false) => Ok(Route::WindowChallenge {
            id: id(&parts)?,
            size: number(w)?,
            n: number(n)?,
            nonce: challenge_nonce(url)?,
        }),
        _ => Err(RouteError::NotFound),
    }
}

/// The `nonce=<64 hex>` of a storage challenge's query string: exactly one, 32 bytes.
fn challenge_nonce(url: &str) -> Result<ChallengeNonce, RouteError> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let mut values = query.split('&').filter_map(|p| p.strip_prefix("nonce="));
    let bad = || RouteError::Bad("a challenge needs one nonce=<64 hex digits>".into());
    let (Some(v), None) = (values.next(), values.next()) else {
        return Err(bad());
    };
    if v.len() != 64 {
        return Err(bad());
    }
    crate::hex::decode(v)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)
}

/// The request target of a storage challenge (the client's side of
/// [`Route::WindowChallenge`]), below [`PREFIX`].
pub fn challenge_target(id: &BlobId, size: u64, n: u64, nonce: &ChallengeNonce) -> String {
    format!(
        "{}/0/{size}/{n}/hmac?nonce={}",
        id.path(),
        crate::hex::encode(nonce)
    )
}

/// `Content-Range: bytes FIRST-LAST/TOTAL` → (first, last, total).
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes ")?;
    let (range, total) = v.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let digits = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (a, b) = (digits(a)?, digits(b)?);
    let total = if total == "*" {
        None
    } else {
        Some(digits(total)?)
    };
    if b < a || total.is_some_and(|t| b >= t) {
        return None;
    }
    Some((a, b, total))
}

/// A `Range` header that cannot be served: 416.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// `Range: bytes=A-B`, `A-` or `-N` against a part of `len` bytes → (offset, len).
/// Only one range is supported.
pub fn parse_range(v: &str, len: u64) -> Result<(u64, u64), Unsatisfiable> {
    let spec = v.trim().strip_prefix("bytes=").ok_or(Unsatisfiable)?;
    if spec.contains(',') {
        return Err(Unsatisfiable);
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let num = |s: &str| -> Result<u64, Unsatisfiable> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(Unsatisfiable);
        }
        s.parse().map_err(|_| Unsatisfiable)
    };
    let (first, last) = match (a.is_empty(), b.is_empty()) {
        (false, false) => (num(a)?, num(b)?.min(len.saturating_sub(1))),
        (false, true) => (num(a)?, len.saturating_sub(1)),
        (true, false) => {
            let n = num(b)?.min(len);
            (len - n, len.saturating_sub(1))
        }
        (true, true) => return Err(Unsatisfiable),
    };
    if len == 0 || first > last || first >= len {
        return Err(Unsatisfiable);
    }
    Ok((first, last - first + 1))
}

/// One entry of `GET .../<node>/?uncommitted`.
#[derive(miniserde::Serialize, miniserde::Deserialize, Debug)]
pub struct ListedBlob {
    pub uri: String,
    pub state: String,
    pub bytes: u64,
    pub idle: u64,
}

/// Whether the query string of `url` holds the bare word `name`.
pub fn query_has(url: &str, name: &str) -> bool {
    url.split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> BlobId {
        BlobId::new("d", "n", "m", "t").unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(parse_route("/chute/blob/"), Ok(Route::Root));
        assert_eq!(
            parse_route("/chute/blob/d/n/"),
            Ok(Route::Node {
                domain: "d".into(),
                node: "n".into()
            })
        );
        assert_eq!(
            parse_route("/chute/blob/d/n/m/t/index.json"),
            Ok(Route::Index(id()))
        );
        assert_eq!(
            parse_route("/chute/blob/d/n/m/t/index.forgotten.json"),
            Ok(Route::Forgotten(id()))
        );
        assert!(query_has("/chute/blob/d/n/?uncommitted", "uncommitted"));
        assert!(!query_has("/chute/blob/d/n/?uncommittedx", "uncommitted"));
        assert_eq!(
            parse_route("/chute/blob/d/n/m/t/0?x=1"),
            Ok(Route::Part(id()))
        );
        assert_eq!(
            parse_route("/chute/blob/d/n/m/t/0/4096/3/hash/sha256"),
            Ok(Route::WindowHash {
                id: id(),
                size: 4096,
                n: 3
            })
        );
        let nonce: ChallengeNonce = core::array::from_fn(|i| (i % 16) as u8 * 17);
        let target = format!("{PREFIX}{}", challenge_target(&id(), 4096, 3, &nonce));
        assert_eq!(
            target,
            "/chute/blob/d/n/m/t/0/4096/3/hmac?nonce=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        );
        assert_eq!(
            parse_route(&target),
            Ok(Route::WindowChallenge {
                id: id(),
                size: 4096,
                n: 3,
                nonce
            })
        );
        assert_eq!(
            parse_route(
                "/chute/blob/d/n/m/t/0/4096/3/hmac?x=1&nonce=00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff"
            ),
            Ok(Route::WindowChallenge {
                id: id(),
                size: 4096,
                n: 3,
                nonce
            })
        );
        assert_eq!(parse_route("/etc/passwd"), Err(RouteError::NotFound));
        for bad in [
            "/chute/blob/../n/m/t/0",
            "/chute/blob/d/n/m/%2e%2e/0",
            "/chute/blob/d/n/m%2ft/0",
            "/chute/blob/d/n/m/t\0/0",
            "/chute/blob//etc/passwd/x/0",
            "/chute/blob/d/n/m/t/0/x/1",
            "/chute/blob/d/n/m/t/0/99999999999999999999/1",
            // A challenge without its nonce, or with one that is not 32 bytes of hex.
            "/chute/blob/d/n/m/t/0/4096/3/hmac",
            "/chute/blob/d/n/m/t/0/4096/3/hmac?nonce=",
            "/chute/blob/d/n/m/t/0/4096/3/hmac?nonce=00112233445566778899aabbccddeeff00112233445566778899aabbccddee",
            "/chute/blob/d/n/m/t/0/4096/3/hmac?nonce=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00",
            "/chute/blob/d/n/m/t/0/4096/3/hmac?nonce=zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            "/chute/blob/d/n/m/t/0/4096/3/hmac?nonce=\u{e9}0112233445566778899aabbccddeef00112233445566778899aabbccddeeff",
            "/chute/blob/d/n/m/t/0/4096/3/hmac?nonce=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff&nonce=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ] {
            assert!(matches!(parse_route(bad), Err(RouteError::Bad(_))), "{bad}");
        }
    }

    /// A property test of the parsers an attacker reaches first: random and mutated
    /// request targets and header values never panic, and whatever parses is safe
    /// (every name component valid, every range inside the part). CI runs it on each
    /// change; CHUTE_FUZZ_ITERS makes a longer run.
    #[test]
    fn fuzz_path_and_header_parsers() {
        let iters: usize = std::env::var("CHUTE_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).unwrap();
        let mut x = u64::from_le_bytes(seed) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds: &[&[u8]] = &[
            b"/chute/blob/d/n/m/t/0/4096/3/hash/sha256",
            b"/chute/blob/d/n/m/t/0/4096/3/hmac?nonce=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            b"/chute/blob/d/n/m/t/index.json",
            b"/chute/blob/d/n/",
            b"bytes=0-99",
            b"bytes 0-9/100",
            b"node=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff quota=1G",
        ];
        let alphabet: &[u8] = b"/.%2fF0e9-_=*, \0\xff\xc3hashsha256index.jsonbytes";
        for i in 0..iters {
            let mut v = seeds[i % seeds.len()].to_vec();
            for _ in 0..(next() % 6) {
                let r = next() as usize;
                match r % 4 {
                    0 if !v.is_empty() => {
                        let at = r / 4 % v.len();
                        v[at] = alphabet[r / 64 % alphabet.len()];
                    }
                    1 => {
                        let at = r / 4 % (v.len() + 1);
                        v.insert(at, alphabet[r / 64 % alphabet.len()]);
                    }
                    2 if !v.is_empty() => {
                        let at = r / 4 % v.len();
                        v.remove(at);
                    }
                    _ => v.extend((0..r % 8).map(|_| next() as u8)),
                }
            }
            let s = String::from_utf8_lossy(&v);
            if let Ok(route) = parse_route(&s) {
                let ids: Vec<&BlobId> = match &route {
                    Route::Blob(id) | Route::Index(id) | Route::Part(id) => vec![id],
                    Route::Window { id, .. } | Route::WindowHash { id, .. } => vec![id],
                    Route::WindowChallenge { id, .. } => vec![id],
                    _ => vec![],
                };
                for id in ids {
                    for c in [&id.domain, &id.node, &id.mount, &id.timestamp] {
                        assert!(valid_component(c), "{s:?} gave component {c:?}");
                    }
                }
            }
            let len = next() % 1000;
            if let Ok((off, n)) = parse_range(&s, len) {
                assert!(n > 0 && off + n <= len, "{s:?} against {len}: {off}+{n}");
            }
            if let Some((a, b, t)) = parse_content_range(&s) {
                assert!(a <= b && t.is_none_or(|t| b < t), "{s:?}");
            }
            let _ = crate::auth::parse_allow(&s);
            let _ = crate::units::parse_bytes(&s);
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some((0, 9, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 9-5/*"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_range("bytes=0-9", 100), Ok((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Ok((90, 10)));
        assert_eq!(parse_range("bytes=-5", 100), Ok((95, 5)));
        assert_eq!(parse_range("bytes=95-200", 100), Ok((95, 5)));
        assert_eq!(parse_range("bytes=100-", 100), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=0-1,3-4", 100), Err(Unsatisfiable));
        assert_eq!(parse_range("items=0-1", 100), Err(Unsatisfiable));
    }
}
