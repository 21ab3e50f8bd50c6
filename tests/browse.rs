//! Issue 20 (part 1): reading snapshots without restoring them: `chute ls`,
//! `find` and `diff`, in plain text and JSON Lines, and their errors.

use crate::util::*;
use miniserde::json::{self, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets a file's or a directory's mtime (the owner may, through any descriptor).
fn set_mtime(p: &Path, t: SystemTime) {
    fs::File::open(p).unwrap().set_modified(t).unwrap();
}

/// A small tree with known modes: `a.txt`, `d/b.jpg`, `d/keep.jpg`, `same.txt`,
/// `link -> a.txt`.
fn tree(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("a.txt"), "hello").unwrap();
    fs::write(src.join("d/b.jpg"), noise(1000, 1)).unwrap();
    fs::write(src.join("d/keep.jpg"), noise(2000, 2)).unwrap();
    fs::write(src.join("same.txt"), "same").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    for (p, m) in [("a.txt", 0o644), ("d/b.jpg", 0o640), ("d/keep.jpg", 0o644)] {
        chmod(&src.join(p), m);
    }
    chmod(&src.join("same.txt"), 0o644);
    chmod(&src.join("d"), 0o750);
    chmod(&src, 0o755);
    src
}

/// The tree changed as a second night would find it: `a.txt` rewritten with as
/// many bytes and its old mtime (only its content tells), `d/b.jpg` removed,
/// `d/c.jpg` added, `same.txt` chmod-ed, `link` now a regular file.
fn change(src: &Path) {
    let a = src.join("a.txt");
    let before = fs::metadata(&a).unwrap().modified().unwrap();
    fs::write(&a, "jello").unwrap();
    set_mtime(&a, before);
    fs::remove_file(src.join("d/b.jpg")).unwrap();
    fs::write(src.join("d/c.jpg"), noise(3000, 3)).unwrap();
    chmod(&src.join("same.txt"), 0o600);
    fs::remove_file(src.join("link")).unwrap();
    fs::write(src.join("link"), "now a file").unwrap();
    // The directories' mtimes move with the files in them: pin them, so the
    // diff below holds only what the test changed.
    for d in [src.join("d"), src.to_path_buf()] {
        set_mtime(
            &d,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
    }
}

/// The ids of the snapshots, oldest first.
fn ids(env: &Env, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["list", "--json"];
    args.extend_from_slice(extra);
    let list: Vec<Value> = match json::from_str::<Value>(&env.ok(args)).unwrap() {
        Value::Array(a) => a.into_iter().collect(),
        v => panic!("not a list: {v:?}"),
    };
    // JSON gives the full id (64 hex digits); the tables its first 8, used here.
    let full: Vec<String> = list.iter().map(|s| string(s, "id")).collect();
    assert!(full.iter().all(|i| i.len() == 64), "{full:?}");
    full.iter().map(|i| i[..8].to_string()).collect()
}

/// Every line of JSON Lines output, parsed.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| json::from_str(l).unwrap_or_else(|e| panic!("{e:?}: {l}")))
        .collect()
}

fn p(src: &Path, rel: &str) -> String {
    if rel.is_empty() {
        src.display().to_string()
    } else {
        src.join(rel).display().to_string()
    }
}

#[test]
fn ls_lists_paths_long_lines_json_and_only_the_paths_asked_for() {
    let env = Env::new("browse-ls");
    let src = tree(&env);
    env.ok(["init"]);
    env.ok(["sink", src.to_str().unwrap()]);

    let plain = env.ok(["ls", "latest"]);
    let want: Vec<String> = [
        "",
        "a.txt",
        "d",
        "d/b.jpg",
        "d/keep.jpg",
        "link",
        "same.txt",
    ]
    .iter()
    .map(|r| p(&src, r))
    .collect();
    assert_eq!(plain.lines().collect::<Vec<_>>(), want, "{plain}");

    let long = env.ok(["ls", "-l", "latest"]);
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 7, "{long}");
    let me = {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(&src).unwrap();
        format!("{}:{}", m.uid(), m.gid())
    };
    let line = |rel: &str| -> &str {
        let path = p(&src, rel);
        lines
            .iter()
            .find(|l| l.ends_with(&path) || l.contains(&format!("{path} -> ")))
            .unwrap_or_else(|| panic!("no {path} in {long}"))
    };
    assert!(line("").starts_with(&format!("drwxr-xr-x {me}")), "{long}");
    assert!(line("d").starts_with("drwxr-x--- "), "{long}");
    assert!(line("d/b.jpg").starts_with("-rw-r----- "), "{long}");
    assert!(line("d/b.jpg").contains(" 1000 "), "size: {long}");
    assert!(line("link").starts_with("lrwxrwxrwx "), "{long}");
    assert!(line("link").ends_with(" -> a.txt"), "{long}");
    // The mtime as `chute list` shows times: YYYY-MM-DD HH:MM:SS (UTC).
    let fields: Vec<&str> = line("a.txt").split_whitespace().collect();
    assert_eq!(
        (fields[2], fields[3].len(), fields[4].len()),
        ("5", 10, 8),
        "{long}"
    );

    let js = json_lines(&env.ok(["ls", "--json", "latest"]));
    assert_eq!(js.len(), 7);
    let entry = |rel: &str| {
        js.iter()
            .find(|v| string(v, "path") == p(&src, rel))
            .unwrap_or_else(|| panic!("no {rel}"))
    };
    let a = entry("a.txt");
    assert_eq!(string(a, "type"), "file");
    assert_eq!((num(a, "mode"), num(a, "size")), (0o644, 5));
    assert!(num(a, "uid") == num(entry(""), "uid"));
    let mtime = string(a, "mtime");
    assert!(
        mtime.ends_with('Z') && mtime.as_bytes()[10] == b'T',
        "{mtime}"
    );
    assert_eq!(string(entry("d"), "type"), "dir");
    assert_eq!(num(entry("d"), "mode"), 0o750);
    assert_eq!(string(entry("link"), "type"), "symlink");
    assert_eq!(string(entry("link"), "target"), "a.txt");
    assert!(matches!(a, Value::Object(o) if !o.contains_key("target")));

    // PATHs: that directory and what it holds, that file; nothing else.
    let d = env.ok(["ls", "latest", &p(&src, "d"), &p(&src, "same.txt")]);
    assert_eq!(
        d.lines().collect::<Vec<_>>(),
        [
            p(&src, "d"),
            p(&src, "d/b.jpg"),
            p(&src, "d/keep.jpg"),
            p(&src, "same.txt")
        ],
        "{d}"
    );
    // A relative PATH is taken from the working directory, as restore takes it.
    let mut c = env.cmd(["ls", "latest", "d"]);
    c.current_dir(&src);
    assert_eq!(ok_cmd(c).lines().count(), 3);
}

#[test]
fn find_names_every_snapshot_holding_a_match_oldest_first() {
    let env = Env::new("browse-find");
    let src = tree(&env);
    env.ok(["init"]);
    let server = env.serve(&env.path("srv"), &[]);
    let url = server.url();
    env.ok(["sink", "--remote", &url, src.to_str().unwrap()]);
    change(&src);
    env.ok(["sink", "--remote", &url, src.to_str().unwrap()]);
    let ids = ids(&env, &["--remote", &url]);
    assert_eq!(ids.len(), 2);

    let out = env.ok(["find", "--remote", &url, "*.jpg"]);
    let got: Vec<(&str, &str)> = out
        .lines()
        .map(|l| (&l[..8], l.rsplit(' ').next().unwrap()))
        .collect();
    let (b, c, keep) = (
        p(&src, "d/b.jpg"),
        p(&src, "d/c.jpg"),
        p(&src, "d/keep.jpg"),
    );
    assert_eq!(
        got,
        [
            (&ids[0][..], &b[..]),
            (&ids[0], &keep),
            (&ids[1], &c),
            (&ids[1], &keep)
        ],
        "{out}"
    );
    // id, snapshot time (date, time), size, mtime (date, time), path.
    let first: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(first.len(), 7, "{out}");
    assert_eq!(first[3], "1000", "{out}");

    // A pattern with '/' matches whole paths; '[...]' one byte of a class;
    // several patterns, any of them.
    let whole = format!("{}/*/[bc].jpg", src.display());
    let out = env.ok(["find", "--remote", &url, &whole, "same.*"]);
    assert_eq!(out.lines().count(), 4, "{out}"); // b, same; c, same
    assert!(env.ok(["find", "--remote", &url, "d/*.jpg"]).is_empty());

    // --snapshot: only there.
    let out = env.ok(["find", "--remote", &url, "--snapshot", &ids[1], "*.jpg"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| l.starts_with(&ids[1])), "{out}");

    let js = json_lines(&env.ok(["find", "--remote", &url, "--json", "link"]));
    assert_eq!(js.len(), 2);
    let full = string(&js[0], "snapshot");
    assert!(full.len() == 64 && full.starts_with(&ids[0]), "{full}");
    assert_eq!(string(&js[0], "type"), "symlink");
    assert_eq!(string(&js[1], "type"), "file");
    assert_eq!(string(&js[1], "path"), p(&src, "link"));
    let t = string(&js[1], "time");
    assert!(t.len() == 20 && t.ends_with('Z'), "{t}");
    assert!(string(&js[1], "timestamp").ends_with('Z'));

    // Nothing found is not a failure; it says so on stderr.
    let out = env.run(["find", "--remote", &url, "*.nothing"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("no path matches in 2 snapshots"));
}

#[test]
fn diff_reports_added_removed_modified_retyped_and_metadata_changes() {
    let env = Env::new("browse-diff");
    let src = tree(&env);
    env.ok(["init"]);
    env.ok(["sink", src.to_str().unwrap()]);
    change(&src);
    env.ok(["sink", src.to_str().unwrap()]);
    let ids = ids(&env, &[]);

    let out = env.ok(["diff", &ids[0], &ids[1]]);
    let (changes, summary) = out.trim_end().rsplit_once('\n').unwrap();
    let lines: Vec<(&str, &str)> = changes
        .lines()
        .map(|l| (&l[..1], l.split_whitespace().nth(2).unwrap()))
        .collect();
    let (src_, a, b, c, link, same) = (
        p(&src, ""),
        p(&src, "a.txt"),
        p(&src, "d/b.jpg"),
        p(&src, "d/c.jpg"),
        p(&src, "link"),
        p(&src, "same.txt"),
    );
    // In walk order. `a.txt` kept its size and mtime: only its chunks tell.
    // The directories' mtimes were pinned to a new value: metadata.
    assert_eq!(
        lines,
        [
            ("U", &src_[..]),
            ("M", &a),
            ("U", &p(&src, "d")),
            ("-", &b),
            ("+", &c),
            ("T", &link),
            ("U", &same)
        ],
        "{out}"
    );
    assert!(out.contains(&format!("U {:>12} {same} (mode)", 4)), "{out}");
    assert!(
        out.contains(&format!("M {:>12} {a} (was 5 bytes)", 5)),
        "{out}"
    );
    assert!(
        out.contains(&format!("T {:>12} {link} (was symlink)", 10)),
        "{out}"
    );
    assert_eq!(
        summary,
        "1 added (2.9 KiB), 1 removed (1000 B), 1 modified (5 B now), 1 type changed, 3 metadata only",
        "{out}"
    );

    let js = json_lines(&env.ok(["diff", "--json", &ids[0], "latest"]));
    assert_eq!(js.len(), 8);
    let change = |v: &Value| string(v, "change");
    assert_eq!(change(&js[1]), "modified");
    assert_eq!(string(&js[1], "path"), a);
    assert_eq!(change(&js[3]), "removed");
    assert_eq!(num(&js[3], "size"), 1000);
    assert_eq!(change(&js[4]), "added");
    assert_eq!(change(&js[5]), "type");
    assert_eq!(string(&js[5], "old_type"), "symlink");
    assert_eq!(change(&js[6]), "metadata");
    assert_eq!(num(&js[6], "mode"), 0o600);
    assert!(matches!(field(&js[6], "what"), Value::Array(w) if w.len() == 1));
    let sum = &js[7];
    assert_eq!(change(sum), "summary");
    assert_eq!(
        [
            num(sum, "added"),
            num(sum, "added_bytes"),
            num(sum, "removed"),
            num(sum, "removed_bytes"),
            num(sum, "modified"),
            num(sum, "type_changed"),
            num(sum, "metadata")
        ],
        [1, 3000, 1, 1000, 1, 1, 3]
    );

    // The other way round, + and - swap.
    let out = env.ok(["diff", &ids[1], &ids[0]]);
    assert!(out.contains(&format!("+ {:>12} {b}\n", 1000)), "{out}");
    assert!(out.contains(&format!("- {:>12} {c}\n", 3000)), "{out}");
    assert!(
        out.contains(&format!("T {:>12} {link} (was file)\n", 5)),
        "{out}"
    );

    // A snapshot against itself: nothing but the summary.
    let out = env.ok(["diff", "latest", "latest"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("0 added (0 B), 0 removed"), "{out}");
}

#[test]
fn browsing_errors_are_one_line_and_exit_2_or_1() {
    let env = Env::new("browse-errors");
    let src = tree(&env);
    env.ok(["init"]);
    // No snapshots yet: the operation fails (1), as restore does.
    let err = env.fails(1, ["ls", "latest"]);
    assert!(
        err.starts_with("chute ls: no snapshots of test.example/node1"),
        "{err}"
    );
    env.ok(["sink", src.to_str().unwrap()]);

    for (args, want) in [
        (vec!["ls", "0badc0de"], "chute ls: no snapshot \"0badc0de\""),
        (
            vec!["diff", "latest", "0badc0de"],
            "chute diff: no snapshot \"0badc0de\"",
        ),
        (
            vec!["find", "--snapshot", "nope", "*"],
            "chute find: no snapshot \"nope\"",
        ),
        (
            vec!["find", "a[bc"],
            "chute find: pattern \"a[bc\": '[' opens a class",
        ),
        (vec!["find"], "chute find: give a PATTERN"),
        (
            vec!["ls", "-l", "--json", "latest"],
            "chute ls: give --long or --json",
        ),
    ] {
        let err = env.fails(2, &args);
        assert!(err.starts_with(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // A PATH the snapshot does not hold, named by id (latest would pick among
    // snapshots by their roots first).
    let id = ids(&env, &[]).remove(0);
    let missing = p(&src, "nothing-here");
    let err = env.fails(2, ["ls", &id, &missing]);
    assert!(
        err.contains(&format!("{missing} is not in snapshot {id}")),
        "{err}"
    );
    // A misspelt option gets argh's error rewritten with a did-you-mean.
    let err = env.fails(2, ["ls", "--lnog", "latest"]);
    assert!(err.contains("--long"), "{err}");
}
