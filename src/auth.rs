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
//! | `X-Chute-Node` | the node name |
//! | `X-Chute-Time` | Unix seconds when signed |
//! | `X-Chute-Nonce` | 32 random hex digits, never reused |
//! | `X-Chute-SHA256` | hex SHA-256 of the body (of the empty string for none) |
//! | `X-Chute-Signature` | hex `HMAC-SHA256(auth, "chute-auth-v1\n" METHOD "\n" PATH "\n" TIME "\n" NONCE "\n" BODY-SHA256)` |
//!
//! On an `--append-only` server a DELETE must also carry `X-Chute-Admin`: hex
//! `HMAC-SHA256(SHA-256(admin key file), "chute-admin-v1\n" METHOD "\n" PATH "\n"
//! TIME "\n" NONCE)` with the same time and nonce as the signature, so the proof
//! cannot be lifted onto another request.
//!
//! `PATH` is the request target exactly as sent (with any query). The server refuses
//! (401) a signature that does not verify, a time more than [`MAX_SKEW`] seconds
//! from its own clock (stale), and a nonce it has seen within that window (replay);
//! it checks the body against `X-Chute-SHA256` before acting on it.

use crate::crypto::Keys;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;

pub const NODE: &str = "X-Chute-Node";
pub const TIME: &str = "X-Chute-Time";
pub const NONCE: &str = "X-Chute-Nonce";
pub const BODY: &str = "X-Chute-SHA256";
pub const SIGNATURE: &str = "X-Chute-Signature";
/// Proof of the admin key, which an `--append-only` server asks of every delete.
pub const ADMIN: &str = "X-Chute-Admin";
/// How far a request's time may be from the server's clock, in seconds.
pub const MAX_SKEW: i64 = 300;
/// The most nonces remembered at once; past it requests are refused until some expire.
const MAX_NONCES: usize = 200_000;

/// The auth key a server holds for `node`.
pub fn node_key(keys: &Keys, node: &str) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(keys.auth_key()).expect("any key length");
    mac.update(b"chute node\0");
    mac.update(node.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The request signature's MAC over its labelled, newline-joined parts.
fn mac(
    key: &[u8; 32],
    method: &str,
    path: &str,
    time: &str,
    nonce: &str,
    body: &str,
) -> Hmac<Sha256> {
    mac_over(key, &["chute-auth-v1", method, path, time, nonce, body])
}

/// A node's signing identity, on the client side.
#[derive(Clone)]
pub struct Signer {
    pub node: String,
    key: [u8; 32],
    admin: Option<[u8; 32]>,
}

impl Signer {
    pub fn new(keys: &Keys, node: &str) -> Signer {
        Signer {
            node: node.to_string(),
            key: node_key(keys, node),
            admin: None,
        }
    }

    /// Also proves the admin key (SHA-256 of the admin key file's bytes) on every
    /// request: what forget and prune need on an append-only server.
    pub fn with_admin(mut self, admin_key: [u8; 32]) -> Signer {
        self.admin = Some(admin_key);
        self
    }

    /// The headers that sign one request.
    pub fn headers(
        &self,
        method: &str,
        path: &str,
        body_sha256: &[u8; 32],
    ) -> Vec<(&'static str, String)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.headers_at(method, path, body_sha256, now)
    }

    /// The headers that sign one request as if sent at `unix_secs` (tests use this
    /// to show that stale requests are refused).
    pub fn headers_at(
        &self,
        method: &str,
        path: &str,
        body_sha256: &[u8; 32],
        unix_secs: u64,
    ) -> Vec<(&'static str, String)> {
        let time = unix_secs.to_string();
        let mut n = [0u8; 16];
        getrandom::fill(&mut n).expect("the system random generator failed");
        let nonce = crate::hex::encode(&n);
        let body = crate::hex::encode(body_sha256);
        let sig = mac(&self.key, method, path, &time, &nonce, &body)
            .finalize()
            .into_bytes();
        let mut out = vec![
            (NODE, self.node.clone()),
            (TIME, time),
            (NONCE, nonce),
            (BODY, body),
            (SIGNATURE, crate::hex::encode(&sig)),
        ];
        if let Some(a) = &self.admin {
            out.push((ADMIN, admin_proof(a, method, path, &out[1].1, &out[2].1)));
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
    Replayed,
    BadSignature,
    Busy,
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
            Refusal::Replayed => f.write_str("replayed request (nonce already used)"),
            Refusal::BadSignature => f.write_str("bad signature (wrong key for this node?)"),
            Refusal::Busy => f.write_str("too many requests in the replay window; retry later"),
        }
    }
}

/// The server side: admitted nodes and the nonces seen recently.
pub struct Verifier {
    pub nodes: HashMap<String, Admitted>,
    seen: Mutex<HashMap<(String, String), i64>>,
}

/// The signature headers of one request, as received.
pub struct Signed<'a> {
    pub node: &'a str,
    pub time: &'a str,
    pub nonce: &'a str,
    pub body: &'a str,
    pub signature: &'a str,
}

impl Verifier {
    pub fn new(nodes: HashMap<String, Admitted>) -> Verifier {
        Verifier {
            nodes,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Checks one request's signature at server time `now`; returns the node.
    pub fn check(&self, method: &str, path: &str, h: &Signed, now: i64) -> Result<String, Refusal> {
        let admitted = self
            .nodes
            .get(h.node)
            .ok_or_else(|| Refusal::UnknownNode(h.node.to_string()))?;
        let time: i64 = h.time.parse().map_err(|_| Refusal::Malformed(TIME))?;
        if (now - time).abs() > MAX_SKEW {
            return Err(Refusal::Stale(now));
        }
        if h.nonce.len() < 16
            || h.nonce.len() > 64
            || !h.nonce.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Refusal::Malformed(NONCE));
        }
        if crate::hex::decode32(h.body).is_none() {
            return Err(Refusal::Malformed(BODY));
        }
        let sig = crate::hex::decode(h.signature).ok_or(Refusal::Malformed(SIGNATURE))?;
        mac(&admitted.key, method, path, h.time, h.nonce, h.body)
            .verify_slice(&sig)
            .map_err(|_| Refusal::BadSignature)?;
        // Only a verified request may take a nonce: forged ones cannot fill the table.
        let mut seen = self.seen.lock().expect("poisoned");
        if seen.len() >= MAX_NONCES {
            seen.retain(|_, t| (now - *t).abs() <= MAX_SKEW);
            if seen.len() >= MAX_NONCES {
                return Err(Refusal::Busy);
            }
        }
        match seen.insert((h.node.to_string(), h.nonce.to_string()), time) {
            Some(_) => Err(Refusal::Replayed),
            None => Ok(h.node.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed<'a>(h: &'a [(&'static str, String)]) -> Signed<'a> {
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
        }
    }

    #[test]
    fn sign_verify_stale_replay_and_tamper() {
        let keys = Keys::from_key_bytes(b"k");
        let s = Signer::new(&keys, "pi");
        let (node, admitted) = parse_allow(&format!(
            "pi={} quota=1G",
            crate::hex::encode(&node_key(&keys, "pi"))
        ))
        .unwrap();
        assert_eq!(admitted.quota, Some(1 << 30));
        let v = Verifier::new([(node, admitted)].into());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let h = s.headers("PUT", "/chute/blob/d/pi/m/t/0/4/0", &[1; 32]);
        assert_eq!(
            v.check("PUT", "/chute/blob/d/pi/m/t/0/4/0", &signed(&h), now),
            Ok("pi".into())
        );
        assert_eq!(
            v.check("PUT", "/chute/blob/d/pi/m/t/0/4/0", &signed(&h), now),
            Err(Refusal::Replayed)
        );
        let h = s.headers("PUT", "/x", &[1; 32]);
        assert_eq!(
            v.check("PUT", "/y", &signed(&h), now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            v.check("GET", "/x", &signed(&h), now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            v.check("PUT", "/x", &signed(&h), now + 1000),
            Err(Refusal::Stale(now + 1000))
        );
        let other = Signer::new(&Keys::from_key_bytes(b"other"), "pi");
        let h = other.headers("PUT", "/x", &[1; 32]);
        assert_eq!(
            v.check("PUT", "/x", &signed(&h), now),
            Err(Refusal::BadSignature)
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
