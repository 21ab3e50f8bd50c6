//! Who may see the management page, `/chute/status` and `/metrics`, and the
//! checks every form POST of the page passes. Pure: addresses, headers and
//! secrets in, decisions out; nothing here reads a socket or the clock.
//!
//! - A loopback client (127.0.0.0/8, ::1, or either mapped into IPv6) may.
//! - A client whose address is in one of `--ui-allow`'s networks may.
//! - Either only if its `Host` names this server in a way no outside DNS answers
//!   for ([`plain_host`]): an IP address, `localhost`, a one-label name (`pi`) or
//!   a `.local` name. A web page on someone's domain that the browser was made to
//!   resolve to this address (DNS rebinding) sends that domain as `Host`, so it
//!   cannot ride on the browser's address.
//! - Anyone presenting the `--ui-token-file` token may: as `Authorization:
//!   Bearer TOKEN`, or through the login form, which sets the cookie
//!   `chute_ui=<hex HMAC-SHA256(token, "chute ui session 1")>` (never the token
//!   itself; `HttpOnly; SameSite=Strict`).
//!
//! A POST (login, logout, later the snapshot button) must carry `Origin`, equal to
//! `http://` + its `Host`; every POST but the login also a `csrf` field, the hex
//! HMAC-SHA256 under a per-process random secret of the client's session: its
//! cookie value, `loopback` for a cookieless loopback client, `addr <IP>` for a
//! cookieless client let in by address. Every comparison of a secret is in
//! constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::net::IpAddr;

/// The cookie that carries a logged-in session.
pub const COOKIE: &str = "chute_ui";
/// What the session cookie's MAC is over.
const SESSION_LABEL: &[u8] = b"chute ui session 1";
/// Shortest token `--ui-token-file` may hold.
pub const MIN_TOKEN: usize = 16;

/// An address and prefix length: `--ui-allow 192.168.1.0/24`, `fd00::/8`, or a
/// bare address (all its bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/BITS` (IPv4 or IPv6); the error is one line.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{s:?}: expected an IP address or ADDRESS/BITS"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, bits })
    }

    /// Whether `ip` is in this network; an IPv4 address mapped into IPv6 (a
    /// dual-stack listener's view of an IPv4 client) counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, unmap(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[whole] & mask == b[whole] & mask
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        ip => ip,
    }
}

/// Whether `ip` is a loopback address (mapped IPv4 included).
pub fn is_loopback(ip: IpAddr) -> bool {
    unmap(ip).is_loopback()
}

/// The access rules of one server.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// `--ui-allow` networks, besides loopback.
    pub allow: Vec<Cidr>,
    /// The `--ui-token-file` token, trimmed.
    pub token: Option<String>,
    /// Loopback clients are not let in for being loopback (a test hook; see
    /// [`crate::testhooks::ui_not_loopback`]).
    pub no_loopback: bool,
}

/// What a request may do, and the session its forms are bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Let in; the session the CSRF token of its forms is made over.
    Granted(String),
    Denied,
}

impl Rules {
    /// The cookie value for a session opened with the token.
    pub fn session_cookie(&self) -> Option<String> {
        self.token.as_deref().map(session_of)
    }

    /// Whether `presented` is the token (constant time).
    pub fn token_ok(&self, presented: &str) -> bool {
        match &self.token {
            // The MACs of both are compared, not the strings: equal length, and
            // the comparison leaks nothing of the token.
            Some(t) => ct_eq(session_of(t).as_bytes(), session_of(presented).as_bytes()),
            None => false,
        }
    }

    /// Decides for a peer address, its `Host`, `Authorization` and `Cookie`
    /// headers. A valid cookie wins the session name even for a loopback
    /// client, so its forms stay valid wherever it comes from.
    pub fn decide(
        &self,
        peer: Option<IpAddr>,
        host: Option<&str>,
        authorization: Option<&str>,
        cookie: Option<&str>,
    ) -> Access {
        if let (Some(want), Some(c)) = (self.session_cookie(), cookie.and_then(cookie_value)) {
            if ct_eq(want.as_bytes(), c.as_bytes()) {
                return Access::Granted(want);
            }
        }
        if let Some(t) = authorization.and_then(bearer) {
            if self.token_ok(t) {
                return Access::Granted(session_of(t));
            }
        }
        if !plain_host(host) {
            return Access::Denied;
        }
        match peer {
            Some(ip) if is_loopback(ip) && !self.no_loopback => Access::Granted("loopback".into()),
            Some(ip) if self.allow.iter().any(|c| c.contains(ip)) => {
                Access::Granted(format!("addr {}", unmap(ip)))
            }
            _ => Access::Denied,
        }
    }
}

/// Whether a `Host` header (absent: a client that is not a browser) names this
/// server as only this network can: an IP address with or without a port,
/// `localhost`, a name of one label, or one under `.local`. A public name such
/// as `evil.example` may resolve to any address its owner likes.
pub fn plain_host(host: Option<&str>) -> bool {
    let Some(h) = host.map(str::trim) else {
        return true;
    };
    if let Some(rest) = h.strip_prefix('[') {
        // [v6] or [v6]:port
        return rest.split_once(']').is_some_and(|(a, port)| {
            a.parse::<std::net::Ipv6Addr>().is_ok()
                && (port.is_empty() || port.strip_prefix(':').is_some_and(all_digits))
        });
    }
    let name = match h.rsplit_once(':') {
        Some((n, port)) if all_digits(port) => n,
        Some(_) => return false,
        None => h,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let label =
        |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || label(&name)
        || name
            .strip_suffix(".local")
            .is_some_and(|n| n.split('.').all(label))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The hex HMAC-SHA256 of `token` over the session label: the cookie's value.
pub fn session_of(token: &str) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes()).expect("any key");
    m.update(SESSION_LABEL);
    crate::hex::encode(&m.finalize().into_bytes())
}

/// The token of `Authorization: Bearer TOKEN`.
fn bearer(v: &str) -> Option<&str> {
    let (scheme, rest) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The `chute_ui` value of a `Cookie` header.
pub fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k.trim() == COOKIE).then(|| v.trim())
    })
}

/// Equal bytes, compared in time that depends only on the lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The CSRF token of a session under the process's `secret`.
pub fn csrf_token(secret: &[u8; 32], session: &str) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("any key");
    m.update(session.as_bytes());
    crate::hex::encode(&m.finalize().into_bytes())
}

/// Whether a form's `csrf` field is the session's token (constant time).
pub fn csrf_ok(secret: &[u8; 32], session: &str, field: Option<&str>) -> bool {
    field.is_some_and(|f| ct_eq(csrf_token(secret, session).as_bytes(), f.as_bytes()))
}

/// Whether a POST's `Origin` is this server as the browser reached it:
/// present and equal to `http://` + its `Host`.
pub fn origin_ok(origin: Option<&str>, host: Option<&str>) -> bool {
    match (origin, host) {
        (Some(o), Some(h)) if !h.trim().is_empty() => o
            .trim()
            .eq_ignore_ascii_case(&format!("http://{}", h.trim())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let net = Cidr::parse("192.168.1.0/24").unwrap();
        assert!(net.contains(ip("192.168.1.77")));
        assert!(!net.contains(ip("192.168.2.1")));
        assert!(
            net.contains(ip("::ffff:192.168.1.9")),
            "a mapped IPv4 client is IPv4"
        );
        let one = Cidr::parse("10.0.0.5").unwrap();
        assert!(one.contains(ip("10.0.0.5")));
        assert!(!one.contains(ip("10.0.0.4")));
        let odd = Cidr::parse("10.0.0.0/9").unwrap();
        assert!(odd.contains(ip("10.127.255.255")));
        assert!(!odd.contains(ip("10.128.0.0")));
        let v6 = Cidr::parse("fd00:1::/32").unwrap();
        assert!(v6.contains(ip("fd00:1:ffff::1")));
        assert!(!v6.contains(ip("fd00:2::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("[::1]").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host.lan",
            "10.0.0.1/",
            "1.2.3.4/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_allowed_addresses_tokens_and_cookies() {
        let rules = Rules {
            allow: vec![Cidr::parse("192.168.1.0/24").unwrap()],
            token: Some("0123456789abcdef-secret".into()),
            no_loopback: false,
        };
        let cookie = rules.session_cookie().unwrap();
        assert_eq!(cookie.len(), 64);
        assert!(!cookie.contains("secret"));
        let d = |peer: &str, auth: Option<&str>, c: Option<&str>| {
            rules.decide(Some(ip(peer)), Some("127.0.0.1:2002"), auth, c)
        };
        assert_eq!(
            d("127.0.0.9", None, None),
            Access::Granted("loopback".into())
        );
        assert_eq!(d("::1", None, None), Access::Granted("loopback".into()));
        assert_eq!(
            d("192.168.1.4", None, None),
            Access::Granted("addr 192.168.1.4".into())
        );
        assert_eq!(d("8.8.8.8", None, None), Access::Denied);
        assert_eq!(rules.decide(None, None, None, None), Access::Denied);
        // DNS rebinding: a browser on this machine, a page on a public domain.
        assert_eq!(
            rules.decide(Some(ip("127.0.0.1")), Some("evil.example:2002"), None, None),
            Access::Denied
        );
        assert_eq!(
            rules.decide(Some(ip("192.168.1.4")), Some("evil.example"), None, None),
            Access::Denied
        );
        assert_eq!(
            rules.decide(
                Some(ip("127.0.0.1")),
                Some("evil.example:2002"),
                Some("Bearer 0123456789abcdef-secret"),
                None
            ),
            Access::Granted(cookie.clone()),
            "a token holder may use any name"
        );
        let good = Access::Granted(cookie.clone());
        assert_eq!(
            d("8.8.8.8", Some("Bearer 0123456789abcdef-secret"), None),
            good
        );
        assert_eq!(
            d("8.8.8.8", Some("bearer  0123456789abcdef-secret "), None),
            good
        );
        assert_eq!(
            d("8.8.8.8", Some("Bearer 0123456789abcdef-secreT"), None),
            Access::Denied
        );
        assert_eq!(d("8.8.8.8", Some("Basic eA=="), None), Access::Denied);
        let jar = format!("a=b; {COOKIE}={cookie}; c=d");
        assert_eq!(d("8.8.8.8", None, Some(&jar)), good);
        assert_eq!(
            d("127.0.0.1", None, Some(&jar)),
            good,
            "a cookie names the session"
        );
        let wrong = format!("{COOKIE}={}", "0".repeat(64));
        assert_eq!(d("8.8.8.8", None, Some(&wrong)), Access::Denied);
        assert_eq!(
            d("8.8.8.8", None, Some("chute_ui=0123456789abcdef-secret")),
            Access::Denied,
            "the token itself is not a cookie"
        );
        let strict = Rules {
            no_loopback: true,
            ..rules.clone()
        };
        assert_eq!(
            strict.decide(Some(ip("127.0.0.1")), None, None, None),
            Access::Denied
        );
        assert_eq!(
            strict.decide(Some(ip("127.0.0.1")), None, None, Some(&jar)),
            good
        );
        let none = Rules::default();
        assert_eq!(
            none.decide(Some(ip("8.8.8.8")), None, Some("Bearer "), None),
            Access::Denied
        );
        assert!(!none.token_ok(""));
    }

    #[test]
    fn hosts_only_this_network_can_name() {
        for ok in [
            None,
            Some("127.0.0.1:2002"),
            Some("192.168.1.20"),
            Some("[::1]:2002"),
            Some("[fd00::1]"),
            Some("localhost:2002"),
            Some("LocalHost"),
            Some("pi"),
            Some("pi:2002"),
            Some("backup-pi.local:2002"),
            Some("pi.local."),
        ] {
            assert!(plain_host(ok), "{ok:?}");
        }
        for bad in [
            "evil.example",
            "evil.example:2002",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "[::1",
            "[::1]2002",
            "[evil]:1",
            "pi:port",
            "",
            ":2002",
            "a b",
            "x.local.evil.example",
        ] {
            assert!(!plain_host(Some(bad)), "{bad:?}");
        }
    }

    #[test]
    fn csrf_and_origin() {
        let secret = [7u8; 32];
        let t = csrf_token(&secret, "loopback");
        assert!(csrf_ok(&secret, "loopback", Some(&t)));
        assert!(
            !csrf_ok(&secret, "addr 10.0.0.1", Some(&t)),
            "bound to its session"
        );
        assert!(
            !csrf_ok(&[8u8; 32], "loopback", Some(&t)),
            "bound to the process"
        );
        assert!(!csrf_ok(&secret, "loopback", None));
        assert!(!csrf_ok(&secret, "loopback", Some("")));
        assert!(origin_ok(
            Some("http://127.0.0.1:2002"),
            Some("127.0.0.1:2002")
        ));
        assert!(!origin_ok(None, Some("127.0.0.1:2002")));
        assert!(!origin_ok(Some("http://evil.test"), Some("127.0.0.1:2002")));
        assert!(!origin_ok(
            Some("https://127.0.0.1:2002"),
            Some("127.0.0.1:2002")
        ));
        assert!(!origin_ok(Some("null"), Some("127.0.0.1:2002")));
        assert!(!origin_ok(Some("http://"), Some("")));
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"ab", b"abc"));
    }
}
