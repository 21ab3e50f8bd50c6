//! Issue 15's setup traps: ordinary mistakes a new user makes setting chute up
//! once, each of which used to fill a disk or lose a night silently, or answer
//! with an error that did not say what to do.
//!
//! - Only `chute init` creates a store: a missing directory, an unmounted disk's
//!   empty mount point, or `HOST:PORT` without `http://` are refused (exit 2),
//!   never filled; a directory is a store only if it holds the marker.
//! - chute.conf: a misspelt key is an error naming FILE:LINE; paths with spaces
//!   are quoted as in the shell.
//! - `chute serve` creates nothing before it has its port, and its store is 0700.
//! - HTTP errors: another web server's page is one line and a hint, a closed port
//!   fails at once with a hint; hints fit what was typed (`--key-file`, `--node`).

use crate::util::*;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn small_tree(env: &Env) -> String {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"hello").unwrap();
    src.display().to_string()
}

/// `chute list --remote DIR` on a directory that does not exist used to create a
/// store there and say "0 snapshots", exit 0.
#[test]
fn a_missing_store_is_refused_not_created() {
    let env = Env::new("trap-missing");
    env.ok(["init"]);
    let dir = env.path("nope/store");
    for cmd in ["list", "verify", "prune"] {
        let err = env.fails(2, [cmd, "--remote", dir.to_str().unwrap()]);
        assert!(
            err.contains(&format!("chute init --remote {}", dir.display())),
            "{err}"
        );
        assert!(
            err.contains("does not exist"),
            "no unmounted-disk hint: {err}"
        );
        assert_eq!(err.lines().count(), 2, "one line and a hint: {err}");
    }
    assert!(!env.path("nope").exists(), "{}", listing(&env.dir));
}

/// `--remote peer:2002` (no `http://`) used to back up into a local folder named
/// `peer:2002` in the working directory.
#[test]
fn host_port_without_a_scheme_is_refused() {
    let env = Env::new("trap-hostport");
    env.ok(["init"]);
    let src = small_tree(&env);
    for (remote, meant) in [
        ("peer:2002", "http://peer:2002?"),
        ("localhost:2002", "http://localhost:2002?"),
        ("192.168.1.20:2002/chute", "http://192.168.1.20:2002?"),
    ] {
        let out = env
            .cmd(["sink", "--remote", remote, &src])
            .current_dir(&env.dir)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{remote}: {err}");
        assert!(err.contains(&format!("did you mean {meant}")), "{err}");
    }
    assert!(!env.path("peer:2002").exists(), "{}", listing(&env.dir));
    assert!(!env.path("localhost:2002").exists());
    assert!(!env.path("192.168.1.20:2002").exists());
}

/// An unmounted USB disk leaves an empty mount point: the nightly sink used to
/// create a store in it and fill the SD card.
#[test]
fn an_empty_mount_point_is_not_written_to() {
    let env = Env::new("trap-unmounted");
    env.ok(["init"]);
    let src = small_tree(&env);
    let mnt = env.path("mnt/backup");
    fs::create_dir_all(&mnt).unwrap();
    let err = env.fails(2, ["sink", &src, "--remote", mnt.to_str().unwrap()]);
    assert!(err.contains("is not a chute store"), "{err}");
    assert!(err.contains("mounted"), "{err}");
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0, "{}", listing(&mnt));
    // Nor does a directory of other files become a store, even by init.
    let docs = env.path("docs");
    fs::create_dir_all(&docs).unwrap();
    fs::write(docs.join("letter.txt"), b"dear").unwrap();
    env.fails(2, ["sink", &src, "--remote", docs.to_str().unwrap()]);
    let err = env.fails(1, ["init", "--remote", docs.to_str().unwrap()]);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(fs::read_dir(&docs).unwrap().count(), 1);
}

/// `chute init --remote DIR` makes the store (0700, marker, cache tag); then sink
/// and list work, and a second init leaves both key and store alone.
#[test]
fn init_creates_the_store_then_sink_works() {
    let env = Env::new("trap-init");
    let store = env.path("usb/chute");
    let out = env.ok(["init", "--remote", store.to_str().unwrap()]);
    assert!(
        out.contains("created key") && out.contains("created store"),
        "{out}"
    );
    assert_eq!(mode(&store), 0o700);
    assert_eq!(
        fs::read_to_string(store.join("chute-store")).unwrap(),
        "chute-store 1\n"
    );
    let tag = fs::read_to_string(store.join("CACHEDIR.TAG")).unwrap();
    assert!(
        tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"),
        "{tag}"
    );
    let src = small_tree(&env);
    env.ok(["sink", &src, "--remote", store.to_str().unwrap()]);
    let out = env.ok(["init", "--remote", store.to_str().unwrap()]);
    assert!(out.contains("left as it is"), "{out}");
    let out = env.ok(["list", "--remote", store.to_str().unwrap()]);
    assert!(out.contains("1 snapshot"), "{out}");
    // The default store too (no --remote): init makes it, sink uses it.
    env.ok(["init"]);
    assert_eq!(mode(&env.store()), 0o700);
    env.ok(["sink", &src]);
}

/// A store an older chute made (marker, no tag) works and gets its tag; a
/// directory that merely looks like a store (a web project with an index.json
/// four levels down) is refused and left untouched, never adopted and tagged.
#[test]
fn only_a_marked_store_is_a_store() {
    let env = Env::new("trap-adopt");
    let store = env.new_store("store");
    let src = small_tree(&env);
    env.ok(["sink", &src, "--remote", store.to_str().unwrap()]);
    fs::remove_file(store.join("CACHEDIR.TAG")).unwrap();
    let out = env.ok(["list", "--remote", store.to_str().unwrap()]);
    assert!(out.contains("1 snapshot"), "{out}");
    assert!(store.join("CACHEDIR.TAG").is_file());

    let proj = env.path("proj");
    fs::create_dir_all(proj.join("www/site/assets/i18n")).unwrap();
    fs::write(proj.join("www/site/assets/i18n/index.json"), b"{}").unwrap();
    fs::write(proj.join(".scrub-state"), b"x").unwrap();
    let before = listing(&proj);
    env.fails(2, ["list", "--remote", proj.to_str().unwrap()]);
    env.fails(1, ["init", "--remote", proj.to_str().unwrap()]);
    assert_eq!(listing(&proj), before, "nothing written into it");
}

fn with_config(env: &Env, conf: &str, args: &[&str]) -> std::process::Output {
    let file = env.path("chute.conf");
    fs::write(&file, conf).unwrap();
    env.cmd(args).env("CHUTE_CONFIG", &file).output().unwrap()
}

/// A misspelt key in chute.conf used to be ignored, so backups went to the
/// default store.
#[test]
fn a_misspelt_config_key_is_an_error() {
    let env = Env::new("trap-conf-typo");
    env.ok(["init"]);
    let store = env.path("store");
    let conf = format!(
        "# chute.conf\nCHUTE_NODE=pi\nCHUTE_REMTOE={}\n",
        store.display()
    );
    let src = small_tree(&env);
    let out = with_config(&env, &conf, &["sink", &src]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}:3: unknown setting CHUTE_REMTOE (did you mean CHUTE_REMOTE?)",
            env.path("chute.conf").display()
        )),
        "{err}"
    );
    assert!(
        fs::read_dir(env.store()).unwrap().count() == 2,
        "nothing written to the default store: {}",
        listing(&env.store())
    );
}

/// CHUTE_PATHS could not hold a path with a space, however quoted.
#[test]
fn config_paths_with_spaces() {
    let env = Env::new("trap-conf-spaces");
    let store = env.new_store("store");
    let a = env.path("a dir/x");
    let b = env.path("b c");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("one"), b"1").unwrap();
    fs::write(b.join("two"), b"2").unwrap();
    let conf = format!(
        "CHUTE_REMOTE={}\nCHUTE_PATHS=\"{}\" '{}'\n",
        store.display(),
        a.display(),
        b.display()
    );
    let out = with_config(&env, &conf, &["sink"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = with_config(&env, &conf, &["list", "--json"]);
    let json = text(&out.stdout);
    assert!(json.contains("\"files\":2"), "{json}");
    for p in [&a, &b] {
        assert!(json.contains(&format!("\"{}\"", p.display())), "{json}");
    }
    // The same rule in the environment: one value, words as the shell splits them.
    let out = env
        .cmd(["sink", "--remote", store.to_str().unwrap()])
        .env(
            "CHUTE_PATHS",
            format!(
                "'{}' {}",
                a.display(),
                b.display().to_string().replace(' ', "\\ ")
            ),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `chute serve` on a busy port used to create its store first and leave it
/// behind; the store it creates is 0700.
#[test]
fn serve_on_a_busy_port_creates_nothing() {
    let env = Env::new("trap-serve-busy");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let store = env.path("srv/store");
    let err = env.fails(
        1,
        [
            "serve",
            "--open",
            "--listen",
            &addr,
            "--store",
            store.to_str().unwrap(),
        ],
    );
    assert!(err.contains("cannot listen"), "{err}");
    assert!(!env.path("srv").exists(), "{}", listing(&env.dir));
    drop(busy);
    let server = env.serve(&store, &[]);
    assert_eq!(mode(&store), 0o700);
    assert!(store.join("chute-store").is_file());
    drop(server);
}

/// A tiny web server that is not chute: answers `count` requests with an HTML
/// page of `status`.
fn html_server(status: &'static str, count: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().take(count) {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            let body = format!(
                "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head><body>{}</body></html>",
                "<p>filler</p>".repeat(300)
            );
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// A wrong port answered by another web server (a router's login page, 401)
/// used to dump its page into the error, with the `key auth` hint; a 404 page was
/// called an answer "tampered with on the way".
#[test]
fn another_web_server_gets_one_line_and_a_hint() {
    let env = Env::new("trap-html");
    env.ok(["init"]);
    for status in ["401 Unauthorized", "404 Not Found"] {
        let addr = html_server(status, 4);
        let err = env.fails(1, ["list", "--remote", &format!("http://{addr}")]);
        assert_eq!(err.lines().count(), 2, "{err}");
        assert!(err.contains("Welcome to nginx!"), "{err}");
        assert!(!err.contains("filler") && !err.contains("<html"), "{err}");
        assert!(
            err.contains(&format!("hint: is {addr} a chute serve?")),
            "{err}"
        );
    }
}

/// A refused connection used to take 8 s (retries) and give no hint.
#[test]
fn a_closed_port_fails_fast_with_a_hint() {
    let env = Env::new("trap-closed");
    env.ok(["init"]);
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let started = Instant::now();
    let err = env.fails(1, ["list", "--remote", &format!("http://{addr}")]);
    let took = started.elapsed();
    assert!(err.contains("connection refused"), "{err}");
    assert!(
        err.contains(&format!("hint: is `chute serve` running on {addr}?")),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Hints that contradicted what was typed: "pass --key-file" to one who did,
/// and the `key auth` hint to one restoring another machine's backups.
#[test]
fn hints_fit_what_was_typed() {
    let env = Env::new("trap-hints");
    let missing = env.path("keys/old.key");
    let err = env.fails(1, ["list", "--key-file", missing.to_str().unwrap()]);
    assert!(!err.contains("pass --key-file"), "{err}");
    assert!(
        err.contains(&format!(
            "--key-file names {}, which does not exist",
            missing.display()
        )),
        "{err}"
    );

    // A new machine (node1) with the old one's key, reading its store.
    let store = env.new_store("store");
    let src = small_tree(&env);
    let remote = store.to_str().unwrap();
    env.ok(["sink", &src, "--remote", remote, "--node", "oldpi"]);
    let out = env.run(["list", "--remote", remote]);
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("oldpi") && err.contains("pass --node OLDNAME"),
        "{err}"
    );
    let err = env.fails(
        1,
        [
            "restore",
            "latest",
            "--to",
            env.path("r").to_str().unwrap(),
            "--remote",
            remote,
        ],
    );
    assert!(err.contains("pass --node OLDNAME"), "{err}");

    // The same over the wire: the peer admits only oldpi.
    let allow = env.ok(["key", "auth", "--node", "oldpi"]);
    let server = env.serve(&env.path("peer"), &["--allow", allow.trim()]);
    env.ok(["sink", &src, "--remote", &server.url(), "--node", "oldpi"]);
    let err = env.fails(1, ["list", "--remote", &server.url()]);
    assert!(err.contains("pass --node OLDNAME"), "{err}");
}
