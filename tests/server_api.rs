//! The REST contract of `chute serve` (the table in src/server.rs), row by row, over
//! raw HTTP so nothing in our own client can paper over a wrong answer.
use crate::util::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// The blob every test works on.
const BLOB: &str = "/chute/blob/d.org/pi/m1/t1";

/// One answer: status, head (status line and headers) and body.
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        header_of(&self.head, name)
    }

    fn text(&self) -> String {
        text(&self.body)
    }

    /// The body as a JSON string (window hashes, blob URIs).
    fn json_string(&self) -> String {
        miniserde::json::from_str::<String>(&self.text())
            .unwrap_or_else(|_| panic!("not a JSON string: {:?}", self.text()))
    }

    /// Asserts the status and, for an error, the `{"error": "..."}` body; returns self.
    fn expect(self, status: u16, what: &str) -> Resp {
        assert_eq!(
            self.status,
            status,
            "{what}: expected {status}\n{}\n\n{}",
            self.head,
            self.text()
        );
        if status >= 400 {
            #[derive(miniserde::Deserialize)]
            struct E {
                error: String,
            }
            let e: E = miniserde::json::from_str(&self.text()).unwrap_or_else(|_| {
                panic!(
                    "{what}: error body is not {{\"error\": ...}}: {:?}",
                    self.text()
                )
            });
            assert!(!e.error.is_empty(), "{what}: empty error message");
            assert_eq!(
                self.header("Content-Type").as_deref(),
                Some("application/json"),
                "{what}: error Content-Type"
            );
        }
        self
    }
}

/// Sends raw bytes, half-closes, and reads the whole answer; `None` if the server
/// closed the connection without answering.
fn send(addr: &str, raw: &[u8]) -> Option<Resp> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A server may answer and close before it has read a body it refuses; the
    // answer is still there to read.
    let _ = s.write_all(raw);
    // Half-closing lets the server see the end of a short body instead of waiting.
    let _ = s.shutdown(Shutdown::Write);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = text(&buf[..split]);
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Resp {
        status,
        head,
        body: buf[split + 4..].to_vec(),
    })
}

fn call(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    send(addr, &request(method, path, headers, body))
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer"))
}

fn hex_sha256(data: &[u8]) -> String {
    chute::hex::encode(&chute::crypto::sha256(data))
}

/// An index.json placing a blob at d.org/pi/m1/`ts`.
fn index(ts: &str, size: Option<u64>) -> String {
    let size = size.map_or(String::new(), |s| format!(",\"size\":{s}"));
    format!(
        r#"{{"version":1,"domain":"d.org","node":"pi","mount":"m1","timestamp":"{ts}","parent":null,"sealed":"b3BhcXVl"{size}}}"#
    )
}

/// A fresh server on its own store, and the store's path.
fn server(name: &str) -> (Env, Server, PathBuf) {
    let env = Env::new(name);
    let store = env.path("a/b/c/store");
    let srv = env.serve(&store, &["--threads", "2"]);
    (env, srv, store)
}

fn create(addr: &str, ts: &str) {
    call(
        addr,
        "POST",
        "/chute/blob/",
        &[],
        index(ts, None).as_bytes(),
    )
    .expect(201, "create");
}

#[test]
fn post_creates_a_blob_and_refuses_bad_indexes() {
    let (_env, srv, store) = server("api-post");
    let a = &srv.addr;
    let r = call(a, "POST", "/chute/blob/", &[], index("t1", None).as_bytes()).expect(201, "POST");
    assert_eq!(r.json_string(), format!("{BLOB}/"));
    assert_eq!(r.header("Location"), Some(format!("{BLOB}/")));
    assert!(store.join("d.org/pi/m1/t1").is_dir());
    // Creating again while uncommitted is idempotent.
    call(a, "POST", "/chute/blob/", &[], index("t1", None).as_bytes()).expect(201, "re-POST");

    for body in [
        "",
        "not json",
        "{",
        "[]",
        r#"{"domain":"d.org","node":"pi","mount":"m1"}"#,
        r#"{"domain":1,"node":"pi","mount":"m1","timestamp":"t"}"#,
    ] {
        call(a, "POST", "/chute/blob/", &[], body.as_bytes()).expect(400, body);
    }
    for (d, n, m, t) in [
        ("../x", "pi", "m1", "t"),
        ("d.org", "..", "m1", "t"),
        ("d.org", "pi", "/etc", "t"),
        ("d.org", "pi", "m1", "a/b"),
        ("d.org", "pi", "m1", ""),
        ("d.org", "pi", ".hidden", "t"),
        ("d.org", "pi", "m1", "t\\u0000"),
        ("d.org", "pi", "m1", "caf\\u00e9"),
        ("d.org", "pi", "m1", &"x".repeat(129)),
    ] {
        let body = format!(r#"{{"domain":"{d}","node":"{n}","mount":"{m}","timestamp":"{t}"}}"#);
        call(a, "POST", "/chute/blob/", &[], body.as_bytes()).expect(400, &body);
    }
    // Only the one good blob was created.
    let names: Vec<_> = walk(&store)
        .iter()
        .map(|p| p.strip_prefix(&store).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "CACHEDIR.TAG",
            "chute-store",
            "d.org",
            "d.org/pi",
            "d.org/pi/m1",
            "d.org/pi/m1/t1",
            "d.org/pi/m1/t1/.lock",
            "d.org/pi/m1/t1/0",
            "d.org/pi/m1/t1/index.pending.json"
        ]
    );
    // An index over 1 MiB is refused before it is stored.
    let big = format!(
        r#"{{"domain":"d.org","node":"pi","mount":"m1","timestamp":"t9","pad":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    call(a, "POST", "/chute/blob/", &[], big.as_bytes()).expect(413, "big index");
    assert!(!store.join("d.org/pi/m1/t9").exists());
}

#[test]
fn windows_are_written_hashed_and_read_back() {
    let (_env, srv, _store) = server("api-windows");
    let a = &srv.addr;
    create(a, "t1");
    let data = b"abcdefghijklmn";
    let part = format!("{BLOB}/0");

    // Window 0 by number, with a matching digest.
    let sum = hex_sha256(b"abcd");
    let r = call(
        a,
        "PUT",
        &format!("{part}/4/0"),
        &[("X-Chute-SHA256", &sum)],
        b"abcd",
    );
    assert_eq!(r.expect(201, "PUT window 0").text(), "true");
    // Window 1 through /0 with Content-Range and an unknown total.
    let r = call(
        a,
        "PUT",
        &part,
        &[("Content-Range", "bytes 4-7/*")],
        b"efgh",
    );
    r.expect(201, "PUT bytes 4-7/*");
    // Window 2 through /0 with a known total (and an upper-case digest).
    let up = hex_sha256(b"ijkl").to_uppercase();
    let h = [("Content-Range", "bytes 8-11/14"), ("X-Chute-SHA256", &up)];
    call(a, "PUT", &part, &h, b"ijkl").expect(201, "PUT bytes 8-11/14");
    // A short last window by number.
    call(a, "PUT", &format!("{part}/4/3"), &[], b"mn").expect(201, "PUT last window");
    // Rewriting a window with the same offset and length is allowed (a retry).
    call(a, "PUT", &format!("{part}/4/3"), &[], b"mn").expect(201, "rewrite");

    // Window bytes and hashes, re-read from disk.
    for (n, w) in data.chunks(4).enumerate() {
        let r = call(a, "GET", &format!("{part}/4/{n}"), &[], b"").expect(200, "GET window");
        assert_eq!(r.body, w, "window {n}");
        let r = call(a, "GET", &format!("{part}/4/{n}/hash/sha256"), &[], b"");
        assert_eq!(r.expect(200, "window hash").json_string(), hex_sha256(w));
    }
    // "8/0" would answer the short window at offset 0: a window is at most W bytes.
    for missing in ["4/9", "2/0", "4/99999999"] {
        call(a, "GET", &format!("{part}/{missing}"), &[], b"").expect(404, missing);
        let path = format!("{part}/{missing}/hash/sha256");
        call(a, "GET", &path, &[], b"").expect(404, &path);
    }

    // The whole part's hash, and ranges of it.
    let r = call(a, "GET", &part, &[], b"").expect(200, "GET /0");
    assert_eq!(r.json_string(), hex_sha256(data));
    for (range, want, cr) in [
        ("bytes=2-9", &data[2..10], "bytes 2-9/14"),
        ("bytes=0-0", &data[..1], "bytes 0-0/14"),
        ("bytes=10-", &data[10..], "bytes 10-13/14"),
        ("bytes=-3", &data[11..], "bytes 11-13/14"),
        ("bytes=12-99", &data[12..], "bytes 12-13/14"),
        ("bytes=0-13", &data[..], "bytes 0-13/14"),
    ] {
        let r = call(a, "GET", &part, &[("Range", range)], b"").expect(206, range);
        assert_eq!(r.body, want, "{range}");
        assert_eq!(r.header("Content-Range").as_deref(), Some(cr), "{range}");
        assert_eq!(
            r.header("Content-Length"),
            Some(want.len().to_string()),
            "{range}"
        );
    }
    for range in [
        "bytes=14-",
        "bytes=14-20",
        "bytes=100-200",
        "bytes=5-2",
        "bytes=0-1,3-4",
    ] {
        call(a, "GET", &part, &[("Range", range)], b"").expect(416, range);
    }

    // Overlapping windows are refused and change nothing.
    for (cr, body) in [
        ("bytes 2-5/*", &b"XXXX"[..]),
        ("bytes 0-7/*", b"XXXXXXXX"),
        ("bytes 13-14/*", b"XX"),
    ] {
        call(a, "PUT", &part, &[("Content-Range", cr)], body).expect(416, cr);
    }
    call(a, "PUT", &format!("{part}/2/1"), &[], b"XX").expect(416, "overlap by number");
    // Without Content-Range the body is a window at offset 0: here it overlaps too.
    call(a, "PUT", &part, &[], b"XY").expect(416, "overlap at 0");
    let r = call(a, "GET", &part, &[], b"").expect(200, "GET /0 after refusals");
    assert_eq!(r.json_string(), hex_sha256(data));

    // Malformed window requests.
    call(a, "PUT", &format!("{part}/4/4"), &[], b"opqrs").expect(400, "body larger than W");
    call(a, "PUT", &format!("{part}/0/1"), &[], b"o").expect(400, "window size 0");
    call(a, "PUT", &format!("{part}/4/x"), &[], b"o").expect(400, "window number x");
    let huge = format!("{part}/4/{}", u64::MAX / 2);
    call(a, "PUT", &huge, &[], b"o").expect(400, "offset overflows");
    for cr in [
        "bytes 14-15/15",
        "bytes 14-14/14",
        "bytes=14-15/*",
        "14-15/*",
        "bytes 15-14/*",
    ] {
        call(a, "PUT", &part, &[("Content-Range", cr)], b"op").expect(400, cr);
    }
    let h = [("Content-Range", "bytes 14-20/*")];
    call(a, "PUT", &part, &h, b"op").expect(400, "Content-Range longer than body");
    call(a, "PUT", &format!("{part}/4/4"), &[], b"").expect(400, "empty window");
    let h = [("X-Chute-SHA256", "abc")];
    call(a, "PUT", &format!("{part}/4/4"), &h, b"op").expect(400, "short digest");

    // A part of an unknown blob.
    let other = "/chute/blob/d.org/pi/m1/nope/0";
    call(a, "PUT", other, &[], b"abcd").expect(404, "PUT to unknown blob");
    call(a, "GET", other, &[], b"").expect(404, "GET unknown part");
    call(a, "GET", &format!("{other}/4/0"), &[], b"").expect(404, "unknown window");
    let path = format!("{other}/4/0/hash/sha256");
    call(a, "GET", &path, &[], b"").expect(404, "unknown window hash");
}

#[test]
fn a_window_with_the_wrong_digest_is_not_kept() {
    let (_env, srv, store) = server("api-digest");
    let a = &srv.addr;
    create(a, "t1");
    let part = format!("{BLOB}/0");
    let wrong = hex_sha256(b"something else");
    let h = [("X-Chute-SHA256", wrong.as_str())];
    call(a, "PUT", &format!("{part}/4/0"), &h, b"abcd").expect(400, "mismatch by number");
    call(a, "GET", &format!("{part}/4/0/hash/sha256"), &[], b"").expect(404, "hash after mismatch");
    call(a, "GET", &format!("{part}/4/0"), &[], b"").expect(404, "window after mismatch");
    let h = [
        ("X-Chute-SHA256", wrong.as_str()),
        ("Content-Range", "bytes 0-3/*"),
    ];
    call(a, "PUT", &part, &h, b"abcd").expect(400, "mismatch by range");
    // A large body (streamed, not buffered by tiny_http) with a wrong digest.
    let big = noise(300_000, 7);
    let h = [("X-Chute-SHA256", wrong.as_str())];
    call(a, "PUT", &format!("{part}/1048576/0"), &h, &big).expect(400, "big mismatch");
    let dir = store.join("d.org/pi/m1/t1/0");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "{}",
        listing(&dir)
    );
    // The same window with the right digest is then accepted.
    let sum = hex_sha256(&big);
    let h = [("X-Chute-SHA256", sum.as_str())];
    call(a, "PUT", &format!("{part}/1048576/0"), &h, &big).expect(201, "big match");
    let r = call(a, "GET", &format!("{part}/1048576/0/hash/sha256"), &[], b"");
    assert_eq!(r.expect(200, "hash").json_string(), sum);
}

#[test]
fn bodies_without_length_too_large_or_cut_short() {
    let (_env, srv, store) = server("api-length");
    let a = &srv.addr;
    create(a, "t1");
    let part = format!("{BLOB}/0");
    let head = |method: &str, path: &str, extra: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}\r\n")
    };
    // tiny_http gives no body length for these; the contract says 411.
    let chunked = "Transfer-Encoding: chunked\r\n";
    let cases = [
        (
            head("PUT", &format!("{part}/4/0"), ""),
            "PUT window, no length",
        ),
        (head("PUT", &part, ""), "PUT part, no length"),
        (
            head("PUT", &format!("{part}/4/0"), chunked) + "4\r\nabcd\r\n0\r\n\r\n",
            "PUT window, chunked",
        ),
        (
            head(
                "PUT",
                &part,
                &format!("Content-Range: bytes 0-3/*\r\n{chunked}"),
            ) + "4\r\nabcd\r\n0\r\n\r\n",
            "PUT part with Content-Range, chunked",
        ),
        (
            head("PUT", &format!("{BLOB}/index.json"), chunked)
                + &format!(
                    "{:x}\r\n{}\r\n0\r\n\r\n",
                    index("t1", Some(4)).len(),
                    index("t1", Some(4))
                ),
            "PUT index, chunked",
        ),
    ];
    for (req, what) in &cases {
        let r = send(a, req.as_bytes()).unwrap_or_else(|| panic!("{what}: no answer"));
        r.expect(411, what);
    }
    // A window over the server's limit is refused from its Content-Length alone.
    let req = head(
        "PUT",
        &part,
        &format!("Content-Length: {}\r\n", (64 << 20) + 1),
    );
    send(a, req.as_bytes())
        .unwrap()
        .expect(413, "window over 64 MiB");
    // A body that ends before its Content-Length is refused and not kept (bodies
    // up to 1 KiB are read by tiny_http itself, which just drops the connection).
    let mut req = head("PUT", &format!("{part}/8192/0"), "Content-Length: 5000\r\n").into_bytes();
    req.extend_from_slice(&noise(3000, 1));
    send(a, &req).unwrap().expect(400, "body cut short");
    let dir = store.join("d.org/pi/m1/t1/0");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "{}",
        listing(&dir)
    );
}

#[test]
fn commit_listing_etag_immutability_and_delete() {
    let (_env, srv, store) = server("api-commit");
    let a = &srv.addr;
    create(a, "t1");
    create(a, "t2"); // stays uncommitted: never listed
    let idx_path = format!("{BLOB}/index.json");
    let part = format!("{BLOB}/0");
    // Issue 14: a pending blob's index is readable as posted, marked pending.
    let r = call(a, "GET", &idx_path, &[], b"").expect(200, "index before commit");
    assert_eq!(r.header("X-Chute-State").as_deref(), Some("pending"));
    assert!(r.text().contains(r#""timestamp":"t1""#), "{}", r.text());
    call(
        a,
        "GET",
        "/chute/blob/d.org/pi/m1/nope/index.json",
        &[],
        b"",
    )
    .expect(404, "index of no blob");
    let r = call(a, "GET", "/chute/blob/d.org/pi/", &[], b"").expect(200, "empty listing");
    assert_eq!(r.text(), "[]");

    call(a, "PUT", &format!("{part}/4/0"), &[], b"abcd").expect(201, "w0");
    call(a, "PUT", &format!("{part}/4/2"), &[], b"ij").expect(201, "w2");
    let final_idx = index("t1", Some(10));
    call(a, "PUT", &idx_path, &[], final_idx.as_bytes()).expect(409, "commit with a gap");
    let r = call(a, "GET", &idx_path, &[], b"").expect(200, "index after refused commit");
    assert_eq!(r.header("X-Chute-State").as_deref(), Some("pending"));
    call(a, "PUT", &format!("{part}/4/1"), &[], b"efgh").expect(201, "w1");
    let short = index("t1", Some(11));
    call(a, "PUT", &idx_path, &[], short.as_bytes()).expect(409, "commit past the end");
    let elsewhere = index("t2", Some(10));
    call(a, "PUT", &idx_path, &[], elsewhere.as_bytes()).expect(400, "index for another blob");
    let no_size = index("t1", None);
    call(a, "PUT", &idx_path, &[], no_size.as_bytes()).expect(400, "index without size");
    call(a, "PUT", &idx_path, &[], b"{").expect(400, "malformed index");
    let r = call(a, "PUT", &idx_path, &[], final_idx.as_bytes()).expect(201, "commit");
    assert_eq!(r.text(), "true");
    // Committing the same bytes again is a no-op (a client retry).
    call(a, "PUT", &idx_path, &[], final_idx.as_bytes()).expect(201, "commit again");

    let r = call(a, "GET", &idx_path, &[], b"").expect(200, "GET index");
    assert_eq!(r.text(), final_idx);
    assert_eq!(r.header("X-Chute-State"), None, "committed");
    let etag = r.header("ETag").expect("ETag");
    assert_eq!(etag, format!("\"{}\"", hex_sha256(final_idx.as_bytes())));
    let r = call(a, "GET", &idx_path, &[("If-None-Match", &etag)], b"");
    let r = r.expect(304, "If-None-Match");
    assert!(r.body.is_empty());
    assert_eq!(r.header("ETag"), Some(etag.clone()));
    let list = format!("\"other\", {etag}");
    call(a, "GET", &idx_path, &[("If-None-Match", &list)], b"").expect(304, "list of tags");
    let r = call(a, "GET", &idx_path, &[("If-None-Match", "\"other\"")], b"");
    assert_eq!(r.expect(200, "other tag").text(), final_idx);

    // Only the committed blob is listed.
    let r = call(a, "GET", "/chute/blob/d.org/pi/", &[], b"").expect(200, "listing");
    let list: Vec<String> = miniserde::json::from_str(&r.text()).unwrap();
    assert_eq!(list, [idx_path.as_str()]);
    let r = call(a, "GET", "/chute/blob/d.org/other/", &[], b"").expect(200, "other node");
    assert_eq!(r.text(), "[]");

    // A committed blob cannot change.
    call(a, "PUT", &format!("{part}/4/3"), &[], b"op").expect(409, "window after commit");
    call(a, "PUT", &format!("{part}/4/0"), &[], b"abcd").expect(409, "rewrite after commit");
    let h = [("Content-Range", "bytes 10-11/*")];
    call(a, "PUT", &part, &h, b"kl").expect(409, "range after commit");
    let other = index("t1", Some(10)).replace("b3BhcXVl", "Y2hhbmdlZA");
    call(a, "PUT", &idx_path, &[], other.as_bytes()).expect(409, "second commit");
    call(a, "POST", "/chute/blob/", &[], final_idx.as_bytes()).expect(409, "re-create");
    let r = call(a, "GET", &part, &[], b"").expect(200, "part hash");
    assert_eq!(r.json_string(), hex_sha256(b"abcdefghij"));

    // A committed snapshot is not deleted directly (a prune racing a commit could
    // otherwise destroy it): 409 until it is forgotten; then DELETE removes it.
    call(a, "DELETE", &format!("{BLOB}/"), &[], b"").expect(409, "DELETE committed");
    assert!(store.join("d.org/pi/m1/t1/index.json").exists());
    // Nor trimmed: only a forgotten snapshot's windows may go one by one.
    call(a, "DELETE", &format!("{part}/4/1"), &[], b"").expect(409, "trim committed");
    call(a, "DELETE", "/chute/blob/d.org/pi/m1/t2/0/4/0", &[], b"").expect(409, "trim pending");
    call(a, "DELETE", &idx_path, &[], b"").expect(200, "forget");
    let r = call(a, "DELETE", &format!("{part}/4/1"), &[], b"").expect(200, "trim");
    assert_eq!(r.text(), "true");
    call(a, "DELETE", &format!("{part}/4/1"), &[], b"").expect(404, "trim again");
    call(a, "GET", &format!("{part}/4/1"), &[], b"").expect(404, "trimmed window");
    let r = call(a, "GET", &format!("{part}/4/2"), &[], b"").expect(200, "the next window");
    assert_eq!(r.text(), "ij");
    let r = call(a, "GET", &part, &[("Range", "bytes=0-3")], b"").expect(206, "before it");
    assert_eq!(r.text(), "abcd");
    call(a, "GET", &part, &[("Range", "bytes=2-5")], b"").expect(416, "across the hole");
    let r = call(a, "DELETE", &format!("{BLOB}/"), &[], b"").expect(200, "DELETE");
    assert_eq!(r.text(), "true");
    assert!(!store.join("d.org/pi/m1/t1").exists());
    call(a, "GET", &idx_path, &[], b"").expect(404, "index after delete");
    call(a, "GET", &part, &[], b"").expect(404, "part after delete");
    call(a, "DELETE", &format!("{BLOB}/"), &[], b"").expect(404, "DELETE again");
    let r = call(a, "GET", "/chute/blob/d.org/pi/", &[], b"").expect(200, "listing after");
    assert_eq!(r.text(), "[]");
    // An uncommitted blob can be deleted too.
    call(a, "DELETE", "/chute/blob/d.org/pi/m1/t2/", &[], b"").expect(200, "DELETE pending");
    assert!(!store.join("d.org/pi/m1/t2").exists());
}

#[test]
fn wrong_methods_are_405_with_allow() {
    let (_env, srv, _store) = server("api-405");
    let a = &srv.addr;
    create(a, "t1");
    for (method, path, allow) in [
        ("GET", "/chute/blob/".to_string(), "POST"),
        ("PUT", "/chute/blob/".to_string(), "POST"),
        ("POST", "/chute/blob/d.org/pi/".to_string(), "GET"),
        ("DELETE", "/chute/blob/d.org/pi/".to_string(), "GET"),
        ("GET", format!("{BLOB}/"), "DELETE"),
        ("PUT", format!("{BLOB}/"), "DELETE"),
        ("POST", format!("{BLOB}/index.json"), "GET, PUT, DELETE"),
        ("PUT", format!("{BLOB}/index.forgotten.json"), "GET"),
        ("POST", format!("{BLOB}/0"), "GET, PUT"),
        ("POST", format!("{BLOB}/0/4/0"), "GET, PUT, DELETE"),
        ("PATCH", format!("{BLOB}/0/4/0"), "GET, PUT, DELETE"),
        ("PUT", format!("{BLOB}/0/4/0/hash/sha256"), "GET"),
    ] {
        let what = format!("{method} {path}");
        let r = call(a, method, &path, &[], b"").expect(405, &what);
        assert_eq!(r.header("Allow").as_deref(), Some(allow), "{what}");
    }
    // Outside /chute/blob/ nothing exists but the management side (`/` and
    // the rest, tests/ui.rs).
    for path in [
        "/chute",
        "/chute/blobs/",
        "/etc/passwd",
        "/chute/blob/d.org/pi",
    ] {
        call(a, "GET", path, &[], b"").expect(404, path);
    }
}

#[test]
fn traversal_attempts_touch_nothing_outside_the_store() {
    let (env, srv, store) = server("api-traversal");
    let a = &srv.addr;
    // A sentinel name that must never appear anywhere.
    let esc = format!("chute-escape-{}", std::process::id());
    let before = walk(&env.dir);
    let long = "x".repeat(129);
    // Long, but within the 8 KiB request line (a longer one gets 431).
    let very_long = "y".repeat(7_000);
    let paths: Vec<(String, u16)> = vec![
        (format!("/chute/blob/../../../{esc}/n/m/t/0"), 400),
        (format!("/chute/blob/d/../../../{esc}/t/0"), 400),
        (format!("/chute/blob/d/n/m/../../../{esc}/0"), 400),
        (format!("/chute/blob/./n/m/{esc}/0"), 400),
        (format!("/chute/blob/%2e%2e/%2e%2e/m/{esc}/0"), 400),
        (format!("/chute/blob/d/n/%2E%2E/{esc}/0"), 400),
        (format!("/chute/blob/d/n/m%2f..%2f..%2f{esc}/t/0"), 400),
        (format!("/chute/blob/d/n/m/{esc}%2F..%2F..%2Fx/0"), 400),
        (format!("/chute/blob/d/n/m/{esc}%00/0"), 400),
        (format!("/chute/blob/d/n/m/{esc}\0/0"), 400),
        (format!("/chute/blob/d/n/m/{esc}\0../../x/0"), 400),
        (format!("/chute/blob//etc/{esc}/x/0"), 400),
        (format!("/chute/blob/d//{esc}/t/0"), 400),
        (format!("/chute/blob/..\\..\\{esc}/n/m/t/0"), 400),
        (format!("/chute/blob/d/n/m/{esc}%ff/0"), 400),
        (format!("/chute/blob/d/n/m/{long}/0"), 400),
        (format!("/chute/blob/d/n/{very_long}/{esc}/0"), 400),
        (
            format!("/chute/blob/d/n/m/{esc}/0/4/0/../../../../../x"),
            404,
        ),
        (format!("//{esc}"), 404),
        ("//etc/passwd".into(), 404),
        ("/../../../../etc/passwd".into(), 404),
        ("/chute/blob/../../../../../../etc/passwd".into(), 400),
        ("/chute/blob/../../../../etc/passwd/x/y/0".into(), 400),
    ];
    for (path, status) in &paths {
        for method in ["PUT", "GET", "DELETE"] {
            let what = format!("{method} {path:?}");
            let r = call(a, method, path, &[], b"pwnd").expect(*status, &what);
            assert!(!r.text().contains("root:"), "{what} leaked /etc/passwd");
        }
        let what = format!("PUT {path:?} with Content-Range");
        call(a, "PUT", path, &[("Content-Range", "bytes 0-3/*")], b"pwnd").expect(*status, &what);
        let what = format!("GET {path:?} window hash");
        call(a, "GET", &format!("{path}/4/0/hash/sha256"), &[], b"")
            .expect(if *status == 400 { 400 } else { 404 }, &what);
    }
    // Raw non-UTF-8 bytes in the request line: tiny_http drops the connection before
    // our handler sees it; a 400 would be fine too, anything else is not.
    let mut req = b"PUT /chute/blob/d/n/m/".to_vec();
    req.extend_from_slice(&[0xff, 0xfe, b'.', b'.']);
    req.extend_from_slice(
        b"/0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 4\r\n\r\npwnd",
    );
    if let Some(r) = send(a, &req) {
        assert_eq!(r.status, 400, "non-UTF-8 path\n{}", r.head);
    }
    // The server still answers afterwards.
    call(a, "GET", "/chute/blob/d.org/pi/", &[], b"").expect(200, "still alive");

    assert_eq!(
        walk(&env.dir),
        before,
        "the attempts created or removed files"
    );
    let names: Vec<_> = walk(&store)
        .iter()
        .map(|p| p.strip_prefix(&store).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        ["CACHEDIR.TAG", "chute-store"],
        "the store gained files"
    );
    for dir in [
        std::env::temp_dir(),
        PathBuf::from("/"),
        PathBuf::from("/etc"),
    ] {
        assert!(
            !dir.join(&esc).exists(),
            "{} escaped",
            dir.join(&esc).display()
        );
    }
}

/// Splits a stream of keep-alive answers (each with Content-Length) into statuses
/// and bodies.
fn split_answers(mut buf: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = text(&buf[..split]);
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("Content-Length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let body = &buf[split + 4..];
        out.push((status, body[..len.min(body.len())].to_vec()));
        buf = &body[len.min(body.len())..];
    }
    out
}

#[test]
fn refusals_before_the_body_is_read_keep_a_keep_alive_connection_in_sync() {
    let (_env, srv, store) = server("api-keepalive");
    create(&srv.addr, "t1");
    let part = format!("{BLOB}/0");
    let put = |path: &str, extra: &str, body: &[u8]| {
        let mut r = format!(
            "PUT {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    // Each of these is refused before its (> 1 KiB, so streamed) body is read; the
    // server must still skip the body, or it would parse it as the next request.
    let mut raw = Vec::new();
    raw.extend(put(&format!("{part}/4/0"), "", &noise(5000, 1)));
    raw.extend(put(
        &part,
        "Content-Range: bytes 0-9/*\r\n",
        &noise(3000, 2),
    ));
    raw.extend(put("/chute/blob/d.org/pi/", "", &noise(2000, 3)));
    raw.extend(put("/chute/blob/d.org/pi/m1/nope/0", "", &noise(3000, 4)));
    raw.extend(put(&format!("{part}/4/x"), "", &noise(3000, 5)));
    raw.extend(put(&format!("{part}/8192/0"), "", b"abcd"));
    raw.extend(request("GET", "/chute/blob/d.org/pi/", &[], b""));
    let answers = pipeline(&srv.addr, &raw);
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [400, 400, 405, 404, 400, 201, 200]);
    assert_eq!(answers[6].1, b"[]");
    let dir = store.join("d.org/pi/m1/t1/0");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "{}",
        listing(&dir)
    );
    let r = call(&srv.addr, "GET", &format!("{part}/8192/0"), &[], b"");
    assert_eq!(r.expect(200, "window").body, b"abcd");
}

/// Writes pipelined requests on one connection and splits the answers.
fn pipeline(addr: &str, raw: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(raw);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    split_answers(&buf)
}

/// RFC 9112 9.3.2: pipelined requests that are not all safe must be handled in
/// order. tiny_http hands the next request on a connection to another worker as soon
/// as the previous body has been read, so a GET pipelined after a PUT can run before
/// the PUT's window is renamed into place and answer 404. No chute client pipelines
/// (ureq waits for each answer), so this only bites other clients.
#[test]
#[ignore = "tiny_http runs pipelined requests of one connection in parallel"]
fn a_get_pipelined_after_a_put_sees_the_put() {
    let (_env, srv, _store) = server("api-pipeline");
    create(&srv.addr, "t1");
    let data = noise(1 << 20, 9);
    let mut raw = format!(
        "PUT {BLOB}/0/1048576/0 HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    raw.extend_from_slice(&data);
    let path = format!("{BLOB}/0/1048576/0/hash/sha256");
    raw.extend(request("GET", &path, &[], b""));
    let answers = pipeline(&srv.addr, &raw);
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [201, 200]);
    assert_eq!(text(&answers[1].1), format!("\"{}\"", hex_sha256(&data)));
}

// The listening socket carries the connection timeout, so accept() itself times
// out whenever no client comes within it: the server must go on accepting (a peer
// that is idle all day and deaf at the nightly sink would lose every backup).
#[test]
fn an_idle_server_still_accepts_after_its_timeout() {
    let env = Env::new("api-idle");
    let store = env.path("store");
    let srv = env.serve(&store, &["--timeout", "1"]);
    create(&srv.addr, "t1");
    std::thread::sleep(Duration::from_millis(2500));
    call(&srv.addr, "GET", "/chute/blob/d.org/pi/", &[], b"").expect(200, "GET after idle");
    let log = srv.log.lock().unwrap().clone();
    assert!(!log.contains("accept failed"), "{log}");
}
