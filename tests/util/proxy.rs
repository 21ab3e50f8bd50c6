//! A response-editing TCP proxy: the on-path attacker of the hostile-answer tests.
//!
//! It listens on 127.0.0.1:0 and forwards each HTTP request it reads (head, then
//! a `Content-Length` body) to the upstream server over a connection of its own,
//! reads the whole answer (`Content-Length` or chunked), and lets the test
//! rewrite it (status, headers, body) or drop it before sending it on with a
//! fresh `Content-Length`. A test may also answer a request itself, never
//! forwarding it. Every request is recorded byte for byte (`seen`), so a test can
//! replay one elsewhere. Bind first ([`Proxy::bind`]) to learn the proxy's port
//! (the server it fronts must answer to it: `--name 127.0.0.1:PORT`), then
//! [`Bound::start`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the client sent it.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    /// The whole request, head and body, byte for byte.
    pub raw: Vec<u8>,
    pub body: Vec<u8>,
}

/// An answer, to send or as received (the body de-chunked).
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    /// Every header but `Content-Length` and `Transfer-Encoding` (recomputed).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// A JSON answer with no other header (what a forger without the key sends).
    pub fn json(status: u16, body: &str) -> Resp {
        Resp {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} X\r\n", self.status);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

type Fake = dyn Fn(&Req) -> Option<Resp> + Send + Sync;
type Edit = dyn Fn(&Req, &mut Resp) -> bool + Send + Sync;

/// A bound, not yet running proxy.
pub struct Bound {
    listener: TcpListener,
    pub addr: String,
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    pub addr: String,
    /// Every request received, in order.
    pub seen: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn bind() -> Bound {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        Bound { listener, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Bound {
    /// Forwards to `upstream` (`host:port`). `fake` may answer a request itself;
    /// `edit` may rewrite a forwarded answer, or drop it (`false`: the client's
    /// connection is closed without an answer).
    pub fn start(
        self,
        upstream: &str,
        fake: impl Fn(&Req) -> Option<Resp> + Send + Sync + 'static,
        edit: impl Fn(&Req, &mut Resp) -> bool + Send + Sync + 'static,
    ) -> Proxy {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let fake: Arc<Fake> = Arc::new(fake);
        let edit: Arc<Edit> = Arc::new(edit);
        let (upstream, s, st) = (upstream.to_string(), seen.clone(), stop.clone());
        let listener = self.listener;
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (up, s, fake, edit) = (upstream.clone(), s.clone(), fake.clone(), edit.clone());
                std::thread::spawn(move || serve(conn, &up, &s, &*fake, &*edit));
            }
        });
        Proxy {
            addr: self.addr,
            seen,
            stop,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// One client connection: requests in turn until it closes.
fn serve(conn: TcpStream, upstream: &str, seen: &Mutex<Vec<Req>>, fake: &Fake, edit: &Edit) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut out = match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r) {
        seen.lock().unwrap().push(req.clone());
        let resp = match fake(&req) {
            Some(resp) => resp,
            None => {
                let Some(mut resp) = forward(upstream, &req) else {
                    return;
                };
                if !edit(&req, &mut resp) {
                    return;
                }
                resp
            }
        };
        if out.write_all(&resp.bytes()).is_err() {
            return;
        }
    }
}

/// A head's lines (request or status line first), or `None` at EOF.
fn read_head(r: &mut impl BufRead) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Some(lines);
        }
        lines.push(line);
    }
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn read_request(r: &mut impl BufRead) -> Option<Req> {
    let lines = read_head(r)?;
    let mut parts = lines[0].split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let len: usize = header(&lines, "Content-Length").map_or(0, |v| v.parse().unwrap_or(0));
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let mut raw = lines.join("\r\n").into_bytes();
    raw.extend_from_slice(b"\r\n\r\n");
    raw.extend_from_slice(&body);
    Some(Req {
        method,
        path,
        raw,
        body,
    })
}

/// Sends `req` upstream on a connection of its own; the whole answer.
fn forward(upstream: &str, req: &Req) -> Option<Resp> {
    let mut s = TcpStream::connect(upstream).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(&req.raw).ok()?;
    let mut r = BufReader::new(s);
    let lines = read_head(&mut r)?;
    let status: u16 = lines[0].split_whitespace().nth(1)?.parse().ok()?;
    let chunked = header(&lines, "Transfer-Encoding").is_some_and(|v| v.contains("chunked"));
    let mut body = Vec::new();
    if req.method == "HEAD" || status == 304 || status == 204 {
    } else if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = header(&lines, "Content-Length") {
        body = vec![0; len.parse().ok()?];
        r.read_exact(&mut body).ok()?;
    } else {
        r.read_to_end(&mut body).ok()?;
    }
    let headers = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case("Content-Length")
                && !k.eq_ignore_ascii_case("Transfer-Encoding")
        })
        .collect();
    Some(Resp {
        status,
        headers,
        body,
    })
}
