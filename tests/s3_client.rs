//! The S3 client against real servers: a 3-node Garage cluster and `rclone serve
//! s3` (tests/util/s3.rs; `make test-deps` installs both). These call the
//! client, `chute::s3`, directly, as the S3 store does (s3_store.rs drives the
//! binary); a response-editing proxy in front of a real server plays the hostile
//! path.

use crate::util::noise;
use crate::util::proxy::Proxy;
use crate::util::s3::{Garage, Rclone, client_env};
use chute::crypto::sha256;
use chute::remote::ErrorKind;
use chute::s3::list::Object;
use chute::s3::{Client, Config};

fn client(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> Client {
    Client::new(Config::from_env(spec, env).unwrap())
}

fn kind<T: std::fmt::Debug>(r: chute::remote::Result<T>) -> ErrorKind {
    let e = r.unwrap_err();
    assert!(!e.message.contains('\n'), "not one line: {e}");
    e.kind
}

/// Every key listed under `prefix`, `max_keys` a page; and how many pages.
fn list_all(c: &Client, prefix: &str, max_keys: usize) -> (Vec<Object>, usize) {
    let mut out = Vec::new();
    let mut pages = 0;
    for page in c.list_with(prefix, None, max_keys) {
        let page = page.unwrap();
        assert!(page.objects.len() <= max_keys);
        out.extend(page.objects);
        pages += 1;
    }
    (out, pages)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The operations a store needs, on one server through `c` (whose spec has a
/// prefix, so keys go in and come back relative to it). `checks_payload`: the
/// server refuses a body that does not match its signed SHA-256 (Garage does;
/// rclone 1.75.2 stores it anyway).
fn exercise(c: &Client, checks_payload: bool) {
    let data = noise(100_000, 18);
    let sha = sha256(&data);
    c.put("a/obj", &data, &sha).unwrap();
    assert_eq!(c.get("a/obj", 100_000).unwrap(), data);
    // A whole GET is capped: a larger object is refused, not read.
    assert_eq!(kind(c.get("a/obj", 99_999)), ErrorKind::Refused);

    // Ranges: exactly the bytes asked for.
    assert_eq!(c.get_range("a/obj", 10, 1000).unwrap(), data[10..1010]);
    assert_eq!(c.get_range("a/obj", 99_999, 1).unwrap(), data[99_999..]);
    assert_eq!(c.get_range("a/obj", 0, 100_000).unwrap(), data);
    // Past the end: the object ends inside the range, or before it.
    assert_eq!(kind(c.get_range("a/obj", 99_990, 100)), ErrorKind::NotFound);
    assert_eq!(kind(c.get_range("a/obj", 200_000, 10)), ErrorKind::NotFound);

    let head = c.head("a/obj").unwrap();
    assert_eq!(head.size, 100_000);
    // The server's clock and ours agree to well within SigV4's 15 minutes,
    // or no request would have been accepted.
    assert!(head.last_modified.abs_diff(now()) < 900, "{head:?}");

    // A listing longer than a page, followed through continuation tokens.
    for i in 0..25 {
        let body = format!("object {i}");
        c.put(
            &format!("list/k{i:02}"),
            body.as_bytes(),
            &sha256(body.as_bytes()),
        )
        .unwrap();
    }
    let (listed, pages) = list_all(c, "list/", 4);
    assert_eq!(pages, 7, "25 keys, 4 a page");
    let keys: Vec<String> = listed.iter().map(|o| o.key.clone()).collect();
    let want: Vec<String> = (0..25).map(|i| format!("list/k{i:02}")).collect();
    assert_eq!(keys, want);
    assert_eq!(listed[3].size, "object 3".len() as u64);
    assert!(listed.iter().all(|o| o.last_modified.abs_diff(now()) < 900));
    // One page of 1000 holds them all; an empty prefix lists nothing, once.
    assert_eq!(list_all(c, "list/", 1000), (listed.clone(), 1));
    let (none, pages) = list_all(c, "nothing/", 10);
    assert!(none.is_empty() && pages == 1);

    // A delimiter folds "directories" into common prefixes.
    for k in ["tree/x/1", "tree/x/2", "tree/y/3", "tree/z"] {
        c.put(k, b"t", &sha256(b"t")).unwrap();
    }
    let pages: Vec<_> = c
        .list_with("tree/", Some("/"), 1000)
        .map(Result::unwrap)
        .collect();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].prefixes, ["tree/x/", "tree/y/"]);
    let objects: Vec<&str> = pages[0].objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(objects, ["tree/z"]);

    // Copy, then delete the original: the copy stays whole.
    c.copy("a/obj", "b/copy").unwrap();
    c.delete("a/obj").unwrap();
    assert_eq!(c.get("b/copy", 1 << 20).unwrap(), data);
    assert_eq!(kind(c.get("a/obj", 1 << 20)), ErrorKind::NotFound);
    assert_eq!(kind(c.head("a/obj")), ErrorKind::NotFound);
    assert_eq!(kind(c.get_range("a/obj", 0, 10)), ErrorKind::NotFound);
    assert_eq!(kind(c.copy("a/obj", "b/other")), ErrorKind::NotFound);
    // Deleting what is gone is not an error (S3's rule).
    c.delete("a/obj").unwrap();

    // A body that is not what its signed hash says is not stored, where the
    // server checks; where it does not, this pins that the store above must not
    // count on it.
    let forged = c.put("a/forged", b"other bytes", &sha);
    if checks_payload {
        let e = forged.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused, "{e}");
        assert_eq!(kind(c.head("a/forged")), ErrorKind::NotFound);
    } else {
        assert!(forged.is_ok(), "the server now checks x-amz-content-sha256");
    }
}

/// Clients with a wrong secret, or for a wrong region, are refused with an
/// authentication error naming the S3 code.
fn refused_credentials(spec: &str, region: &str, check_region: bool) {
    let wrong_secret = |k: &str| match k {
        "AWS_SECRET_ACCESS_KEY" => Some("not-the-secret".to_string()),
        _ => client_env(region)(k),
    };
    let c = client(spec, &wrong_secret);
    let e = c.head("anything").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains("403"), "{e}");
    assert_eq!(kind(c.put("x", b"x", &sha256(b"x"))), ErrorKind::Auth);
    let e = c.list("").next().unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(
        e.message.contains("SignatureDoesNotMatch")
            || e.message.contains("AccessDenied")
            || e.message.contains("InvalidAccessKeyId"),
        "{e}"
    );
    if check_region {
        let c = client(spec, &client_env("us-west-2"));
        let e = c.list("").next().unwrap().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    }
}

#[test]
fn garage_cluster_serves_every_operation() {
    let g = Garage::start();
    eprintln!("garage: 3 nodes up in {:?}", g.started_in);
    let c = client(&g.spec(0, "pfx/sub"), &g.env());
    exercise(&c, true);
    // Replicated: what node 1 stored, node 3 serves.
    let data = noise(5000, 3);
    c.put("replicated", &data, &sha256(&data)).unwrap();
    let c3 = client(&g.spec(2, "pfx/sub"), &g.env());
    assert_eq!(c3.get("replicated", 5000).unwrap(), data);
    // The client's prefix is a folder of the bucket: a client without one sees
    // the same object under the full key, and lists it so.
    let whole = client(&g.spec(1, ""), &g.env());
    assert_eq!(whole.get("pfx/sub/replicated", 5000).unwrap(), data);
    let (keys, _) = list_all(&whole, "pfx/sub/rep", 10);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].key, "pfx/sub/replicated");
    // A bucket that does not exist is a configuration error, not a missing object.
    let other = client(
        &format!("s3:http://{}/no-such-bucket", g.endpoint(0)),
        &g.env(),
    );
    let e = other.get("k", 10).unwrap_err();
    assert_ne!(e.kind, ErrorKind::NotFound, "{e}");
    refused_credentials(&g.spec(0, ""), "garage", true);
}

/// The helpers the resilience tests build on: with one of three nodes killed
/// the cluster (replication 3) still takes writes and serves reads; the killed
/// node's port refuses, which is Unavailable (retried), and once restarted it
/// serves what was written while it was down.
#[test]
fn garage_node_killed_and_restarted() {
    let mut g = Garage::start();
    eprintln!("garage: 3 nodes up in {:?}", g.started_in);
    let c1 = client(&g.spec(0, ""), &g.env());
    let c2 = client(&g.spec(1, ""), &g.env());
    let t = std::time::Instant::now();
    g.kill(1);
    let data = noise(3000, 9);
    c1.put("while-down", &data, &sha256(&data)).unwrap();
    assert_eq!(c1.get("while-down", 3000).unwrap(), data);
    assert_eq!(kind(c2.head("while-down")), ErrorKind::Unavailable);
    eprintln!(
        "garage: node 2 killed, PUT and GET through node 1 in {:?}",
        t.elapsed()
    );
    let t = std::time::Instant::now();
    g.restart(1);
    eprintln!("garage: node 2 back, seen by all, in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    assert_eq!(c2.get("while-down", 3000).unwrap(), data);
    eprintln!("garage: first GET through node 2 in {:?}", t.elapsed());
}

#[test]
fn rclone_serves_every_operation() {
    let r = Rclone::start();
    let c = client(&r.spec("pfx/sub"), &r.env());
    exercise(&c, false);
    refused_credentials(&r.spec(""), "us-east-1", false);
}

/// rclone answers a ranged GET with 200 and a correct Content-Range, not 206:
/// taken. An answer edited on the way (another range, no Content-Range, a byte
/// too many) is refused, never handed back as the bytes asked for; so is a
/// listing that is not XML, or that replays its first page for every token.
#[test]
fn wrong_range_and_list_answers_are_refused() {
    use crate::util::proxy::Resp;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Edit {
        None,
        ShiftRange,
        DropRange,
        ExtraByte,
        NotXml,
        ReplayPage,
    }
    fn set_header(resp: &mut Resp, name: &str, value: &str) {
        resp.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        resp.headers.push((name.into(), value.into()));
    }

    let r = Rclone::start();
    let edit = Arc::new(Mutex::new(Edit::None));
    // The statuses rclone gave, and the first list page seen (to replay).
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let first_page = Arc::new(Mutex::new(Vec::new()));
    let (e2, s2, f2) = (edit.clone(), statuses.clone(), first_page.clone());
    let proxy = Proxy::bind().start(
        &r.endpoint(),
        |_| None,
        move |req, resp| {
            s2.lock().unwrap().push(resp.status);
            let listing = req.path.contains("list-type=2");
            let token = req.path.contains("continuation-token");
            match *e2.lock().unwrap() {
                Edit::None => {}
                // The neighbouring bytes, honestly labelled: still not what was asked.
                Edit::ShiftRange => set_header(resp, "Content-Range", "bytes 101-200/10000"),
                Edit::DropRange => {
                    resp.status = 200;
                    resp.headers
                        .retain(|(k, _)| !k.eq_ignore_ascii_case("content-range"));
                }
                Edit::ExtraByte => resp.body.push(0),
                Edit::NotXml if listing => {
                    resp.body = b"<html><body>a proxy's login page</body></html>".to_vec();
                }
                Edit::ReplayPage if listing && !token => *f2.lock().unwrap() = resp.body.clone(),
                Edit::ReplayPage if listing => resp.body = f2.lock().unwrap().clone(),
                Edit::NotXml | Edit::ReplayPage => {}
            }
            true
        },
    );
    let c = client(
        &format!("s3:http://{}/{}", proxy.addr, crate::util::s3::BUCKET),
        &r.env(),
    );
    let set = |e: Edit| *edit.lock().unwrap() = e;

    let data = noise(10_000, 7);
    c.put("obj", &data, &sha256(&data)).unwrap();
    // Unedited: rclone's 200 with a matching Content-Range is taken.
    assert_eq!(c.get_range("obj", 100, 100).unwrap(), data[100..200]);
    assert_eq!(
        statuses.lock().unwrap().last(),
        Some(&200),
        "rclone answered a ranged GET with 206: its 200 is no longer exercised here"
    );
    for e in [Edit::ShiftRange, Edit::DropRange, Edit::ExtraByte] {
        set(e);
        let err = c.get_range("obj", 100, 100).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Refused, "{e:?}: {err}");
    }

    set(Edit::None);
    for i in 0..6 {
        c.put(&format!("l/{i}"), b"x", &sha256(b"x")).unwrap();
    }
    assert_eq!(list_all(&c, "l/", 2).1, 3);
    set(Edit::NotXml);
    let err = c.list_with("l/", None, 2).next().unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err}");
    assert!(
        err.message.contains("malformed XML") || err.message.contains("ListBucketResult"),
        "{err}"
    );
    set(Edit::ReplayPage);
    let mut pages = c.list_with("l/", None, 2);
    pages.next().unwrap().unwrap();
    let err = pages.next().unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err}");
    assert!(err.message.contains("out of order"), "{err}");
    assert!(pages.next().is_none(), "a listing went on after an error");
}
