//! Issue 20 (item 2): `--json` on every command that reports a result (one object
//! on stdout, nothing else there; full ids, RFC 3339 times, sizes as integers),
//! `--quiet` (nothing but failures) and `--verbose` (a line per file), over the
//! real binary.

use crate::util::*;
use miniserde::json::{self, Value};
use std::fs;

/// stdout as one JSON object, on one line.
fn object(out: &str) -> Value {
    assert_eq!(out.lines().count(), 1, "one line of JSON: {out}");
    let v: Value = json::from_str(out).unwrap_or_else(|e| panic!("{e:?}: {out}"));
    assert!(matches!(v, Value::Object(_)), "{out}");
    v
}

fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    match field(v, k) {
        Value::Array(a) => a,
        x => panic!("{k} is not a list: {x:?}"),
    }
}

/// A full snapshot id: 64 lowercase hex digits.
fn full_id(v: &Value, k: &str) -> String {
    let id = string(v, k);
    assert!(
        id.len() == 64
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{k}: {id}"
    );
    id
}

/// `2026-12-02T17:57:10Z`.
fn rfc3339(v: &Value, k: &str) {
    let t = string(v, k);
    let b = t.as_bytes();
    let shape = b.len() == 20
        && [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'Z'),
        ]
        .iter()
        .all(|&(i, c)| b[i] == c);
    assert!(shape, "{k}: {t}");
}

fn tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("a.txt"), "alpha").unwrap();
    fs::write(src.join("d/b.bin"), noise(200 << 10, 7)).unwrap();
    src
}

#[test]
fn json_reports_of_sink_restore_verify_forget_prune_scrub() {
    let env = Env::new("output-json");
    let src = tree(&env);
    let s = src.to_str().unwrap();
    env.ok(["init"]);
    let first = object(&env.ok(["sink", "--json", s]));
    let id1 = full_id(&first, "id");
    rfc3339(&first, "time");
    assert_eq!(num(&first, "files"), 2);
    assert_eq!(num(&first, "bytes"), 5 + (200 << 10));
    assert!(num(&first, "sent_bytes") > 0);
    assert!(list(&first, "missing").is_empty());
    assert!(matches!(field(&first, "seconds"), Value::Number(_)));
    assert!(string(&first, "blob").ends_with('Z'));
    fs::write(src.join("a.txt"), "alpha, changed").unwrap();
    let second = object(&env.ok(["sink", "--json", s]));
    let id2 = full_id(&second, "id");
    assert_eq!(num(&second, "unchanged_files"), 1);

    // list gives the same full ids and times in the same form.
    let listed: Value = json::from_str(&env.ok(["list", "--json"])).unwrap();
    let Value::Array(items) = listed else {
        panic!("not a list")
    };
    assert_eq!(full_id(&items[0], "id"), id1);
    assert_eq!(full_id(&items[1], "id"), id2);
    rfc3339(&items[1], "time");

    // A full id from JSON names the snapshot, as the short id does.
    let out = env.path("out");
    let r = object(&env.ok(["restore", "--json", &id1, "--to", out.to_str().unwrap()]));
    assert_eq!(full_id(&r, "id"), id1);
    rfc3339(&r, "time");
    assert_eq!((num(&r, "files"), num(&r, "lost_entries")), (2, 0));
    assert_eq!(string(&r, "to"), out.display().to_string());

    let v = object(&env.ok(["verify", "--json", "--all", "--read-data"]));
    assert!(matches!(field(&v, "intact"), Value::Bool(true)), "{v:?}");
    assert_eq!(num(&v, "snapshots"), 2);
    assert_eq!(string(&v, "mode"), "read");
    assert!(list(&v, "damaged_files").is_empty());

    let f = object(&env.ok(["forget", "--json", "--keep-last", "1"]));
    assert!(matches!(field(&f, "dry_run"), Value::Bool(false)), "{f:?}");
    let gone = list(&f, "forgotten");
    assert_eq!(gone.len(), 1);
    assert_eq!(full_id(&gone[0], "id"), id1);
    rfc3339(&gone[0], "time");
    assert_eq!(full_id(&list(&f, "kept")[0], "id"), id2);

    let p = object(&env.ok(["prune", "--json", "--grace", "0"]));
    assert_eq!(num(&p, "snapshots"), 1);
    num(&p, "reclaimed_bytes");
    assert!(matches!(field(&p, "pack"), Value::Null), "{p:?}");
    for b in list(&p, "blobs") {
        let fate = string(b, "fate");
        assert!(
            ["deleted", "kept", "marked", "committed"].contains(&&fate[..]),
            "{p:?}"
        );
        num(b, "bytes");
    }

    let store = env.store();
    let sc = object(&env.ok(["scrub", "--json", "--store", store.to_str().unwrap()]));
    assert!(num(&sc, "windows") > 0);
    assert!(list(&sc, "damaged").is_empty());

    // One output at a time: --json with --quiet is a usage error.
    let err = env.fails(2, ["sink", "--json", "-q", s]);
    assert!(
        err.contains("give one of --json, --quiet and --verbose"),
        "{err}"
    );
}

#[test]
fn quiet_prints_only_failures_and_verbose_names_each_file() {
    let env = Env::new("output-quiet");
    let src = tree(&env);
    let s = src.to_str().unwrap();
    env.ok(["init"]);
    let silent = |args: &[&str]| {
        let o = env.run(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        assert_eq!(
            (text(&o.stdout), text(&o.stderr)),
            (String::new(), String::new()),
            "{args:?}"
        );
    };
    let out = env.path("out");
    let to = out.to_str().unwrap();
    let store = env.store();
    silent(&["sink", "-q", s]);
    silent(&["sink", "--quiet", "--progress", s]);
    silent(&["restore", "-q", "latest", "--to", to]);
    silent(&["verify", "-q", "--all"]);
    silent(&["forget", "-q", "--keep-last", "1"]);
    silent(&["prune", "-q", "--grace", "0"]);
    silent(&["scrub", "-q", "--store", store.to_str().unwrap()]);
    // A failure still says so.
    let err = env.fails(2, ["restore", "-q", "nosuch", "--to", to]);
    assert!(err.contains("no snapshot \"nosuch\""), "{err}");
    let nope = env.path("nope");
    let err = env.fails(3, ["sink", "-q", s, nope.to_str().unwrap()]);
    assert!(
        err.contains("cannot read") && err.contains("saved, but"),
        "{err}"
    );

    // -v: the files a sink reads (new or changed, not the unchanged), then the
    // summary; restore -v: each file it writes.
    fs::write(src.join("a.txt"), "alpha, changed").unwrap();
    let o = env.ok(["sink", "-v", s]);
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines.len(), 2, "{o}");
    assert_eq!(lines[0], src.join("a.txt").display().to_string());
    assert!(lines[1].starts_with("snapshot "), "{o}");
    let out2 = env.path("out2");
    let o = env.ok(["restore", "-v", "latest", "--to", out2.to_str().unwrap()]);
    let mut lines: Vec<&str> = o.lines().collect();
    let summary = lines.pop().unwrap();
    assert!(summary.starts_with("restored snapshot "), "{o}");
    lines.sort();
    let landed = |rel: &str| out2.join(src.join(rel).strip_prefix("/").unwrap());
    assert_eq!(
        lines,
        [landed("a.txt"), landed("d/b.bin")]
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
        "{o}"
    );
}
