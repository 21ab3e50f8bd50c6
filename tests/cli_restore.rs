//! Issue 15: the command line (`--version`, `-h`, `--opt=value`, short flags,
//! argh's errors rewritten with a did-you-mean) and a restore that resumes after an
//! interruption and leaves no temporary file behind.

use crate::util::proxy::Proxy;
use crate::util::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The `.chute-restore-*` temporaries anywhere below `dir`.
fn temps(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".chute-restore-"))
        })
        .collect()
}

/// A source tree whose files sort in this order in the snapshot: two small
/// files, then one of 3 MiB (at least two ranged reads of 2 MiB).
fn three_files(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a-small"), noise(10_000, 1)).unwrap();
    fs::write(src.join("b-small"), noise(20_000, 2)).unwrap();
    fs::write(src.join("c-big"), noise(3 << 20, 3)).unwrap();
    src
}

/// Regression: SIGINT killed a restore outright, leaving the half-written file's
/// `.chute-restore-*` temporary behind, and the re-run refused ("refusing to
/// overwrite") because the files restored before the interruption existed; only
/// `--force` went on, rewriting everything and still leaving the old temporary.
#[test]
fn an_interrupted_restore_leaves_no_temporary_and_resumes_without_force() {
    let env = Env::new("resume");
    let src = three_files(&env);
    // Chunks of their own (packed, files under 256 KiB share one chunk stored
    // after the walk, after c-big's). The sink's two workers take a-small and
    // b-small first, so at least one of them lies before c-big in part 0 and is
    // restored before the read of c-big stalls; the other may lie after c-big's
    // first chunk (a worker that finished early took it), as under load.
    fs::write(src.join("a-small"), noise(256 << 10, 1)).unwrap();
    fs::write(src.join("b-small"), noise(256 << 10, 2)).unwrap();
    env.ok(["init"]);
    let bound = Proxy::bind();
    let server = env.serve(&env.path("srv"), &["--name", &bound.addr]);
    env.ok(["sink", "--remote", &server.url(), src.to_str().unwrap()]);

    // The proxy holds every answer back while a temporary exists under `to`, so
    // the restore stalls on a read with part of c-big written, until released.
    let to = env.path("to");
    let release = Arc::new(AtomicBool::new(false));
    let (watched, released) = (to.clone(), release.clone());
    let proxy = bound.start(
        &server.addr,
        |_| None,
        move |_, _| {
            let until = Instant::now() + Duration::from_secs(60);
            while !released.load(Ordering::SeqCst)
                && !temps(&watched).is_empty()
                && Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            true
        },
    );
    let mut child = env
        .cmd([
            "restore",
            "latest",
            "--remote",
            &proxy.url(),
            "--to",
            to.to_str().unwrap(),
            "--threads",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20 * u64::from(slack()));
    while temps(&to).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no temporary appeared:\n{}",
            listing(&to)
        );
        assert!(child.try_wait().unwrap().is_none(), "restore ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // It stops while its read is still held: it does not wait for the network.
    let deadline = Instant::now() + Duration::from_secs(10 * u64::from(slack()));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "restore did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    };
    release.store(true, Ordering::SeqCst);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(temps(&to), Vec::<PathBuf>::new(), "{status}: {err}");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let restored = to.join(src.strip_prefix("/").unwrap());
    let before = ["a-small", "b-small"]
        .iter()
        .filter(|f| restored.join(f).exists())
        .count();
    assert!(before >= 1, "{}", listing(&to));
    assert!(!restored.join("c-big").exists(), "{}", listing(&to));

    // The re-run needs no --force: what is in place is skipped, the rest restored.
    let to_arg = to.to_str().unwrap();
    let url = server.url();
    let rerun = ["restore", "latest", "--remote", &url, "--to", to_arg];
    let out = env.ok(rerun);
    assert!(
        out.contains(&format!(
            "{before} file{} already restored",
            if before == 1 { "" } else { "s" }
        )),
        "{out}"
    );
    assert_same_tree(&src, &restored);
    assert_eq!(temps(&to), Vec::<PathBuf>::new());
    // Run again: everything is in place, nothing refused.
    let out = env.ok(rerun);
    assert!(out.contains("3 files already restored"), "{out}");
}

/// A file that differs still needs --force, however alike it looks: same size and
/// mtime, other content. The --force run replaces it and removes a temporary an
/// older chute (or a killed one) left behind, which it used to leave in place.
#[test]
fn a_changed_file_still_needs_force_and_stale_temporaries_are_removed() {
    let env = Env::new("resume-force");
    let src = three_files(&env);
    env.ok(["init"]);
    env.ok(["sink", src.to_str().unwrap()]);
    let to = env.path("to");
    let to_arg = to.to_str().unwrap();
    env.ok(["restore", "latest", "--to", to_arg]);
    let restored = to.join(src.strip_prefix("/").unwrap());

    let f = restored.join("b-small");
    let mtime = fs::metadata(&f).unwrap().modified().unwrap();
    let mut changed = noise(20_000, 2);
    changed[7] ^= 1;
    fs::write(&f, &changed).unwrap();
    fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let err = env.fails(1, ["restore", "latest", "--to", to_arg]);
    assert!(
        err.contains("refusing to overwrite 1 existing path"),
        "{err}"
    );
    assert!(err.contains("b-small"), "{err}");
    assert_eq!(fs::read(&f).unwrap(), changed);

    let stale = restored.join(".chute-restore-0123456789abcdef");
    fs::write(&stale, b"half a file").unwrap();
    let out = env.run(["restore", "latest", "--to", to_arg, "--force"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        text(&out.stdout).contains("2 files already restored"),
        "{}",
        text(&out.stdout)
    );
    assert!(err.contains("removed 1 temporary file"), "{err}");
    assert_eq!(temps(&to), Vec::<PathBuf>::new(), "{}", listing(&to));
    assert_same_tree(&src, &restored);
}

/// Issue 16: a restore killed with SIGKILL (no handler runs) left its partial
/// `.chute-restore-*` file, and a re-run that refused to overwrite (a file changed
/// meanwhile, no `--force`) left it too: only a run that went on removed it.
#[test]
fn a_killed_restores_temporary_goes_even_when_the_rerun_refuses() {
    let env = Env::new("resume-kill");
    let src = three_files(&env);
    env.ok(["init"]);
    let bound = Proxy::bind();
    let server = env.serve(&env.path("srv"), &["--name", &bound.addr]);
    env.ok(["sink", "--remote", &server.url(), src.to_str().unwrap()]);
    let to = env.path("to");
    let release = Arc::new(AtomicBool::new(false));
    let (watched, released) = (to.clone(), release.clone());
    let proxy = bound.start(
        &server.addr,
        |_| None,
        move |_, _| {
            let until = Instant::now() + Duration::from_secs(60);
            while !released.load(Ordering::SeqCst)
                && !temps(&watched).is_empty()
                && Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            true
        },
    );
    let to_arg = to.to_str().unwrap();
    let mut child = env
        .cmd([
            "restore",
            "latest",
            "--remote",
            &proxy.url(),
            "--to",
            to_arg,
            "--threads",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20 * u64::from(slack()));
    while temps(&to).is_empty() {
        assert!(Instant::now() < deadline, "no temporary:\n{}", listing(&to));
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    release.store(true, Ordering::SeqCst);
    // One, or two when a small file's temporary was opened before the kill
    // landed (a slow emulated board).
    let left = temps(&to).len();
    assert!((1..=2).contains(&left), "{}", listing(&to));
    // A restored file changed since: the re-run refuses, and still sweeps.
    let restored = to.join(src.strip_prefix("/").unwrap());
    fs::write(restored.join("a-small"), b"changed").unwrap();
    let url = server.url();
    let err = env.fails(1, ["restore", "latest", "--remote", &url, "--to", to_arg]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert!(
        err.contains(&format!("removed {left} temporary file")),
        "{err}"
    );
    assert_eq!(temps(&to), Vec::<PathBuf>::new(), "{}", listing(&to));
}

/// Regression: `--version` was "Unrecognized argument", so an owner could not
/// tell which build runs on a board.
#[test]
fn version_names_the_release_the_commit_and_the_target() {
    let env = Env::new("version");
    for args in [&["--version"][..], &["version"]] {
        let out = env.ok(args);
        let line = out.trim();
        let inner = line
            .strip_prefix(&format!("chute {} (", env!("CARGO_PKG_VERSION")))
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{line:?}"));
        let (commit, target) = inner.split_once(", ").unwrap_or_else(|| panic!("{line:?}"));
        assert!(
            commit == "unknown"
                || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
            "{line:?}"
        );
        // The triple has at least arch-vendor-os (x86_64-unknown-linux-gnu,
        // armv7-unknown-linux-gnueabihf).
        assert!(target.split('-').count() >= 3, "{line:?}");
        assert!(target.contains("linux"), "{line:?}");
    }
}

/// Regression: `-h` was "Unrecognized argument: -h" at every level.
#[test]
fn dash_h_is_help_everywhere() {
    let env = Env::new("dash-h");
    let top = env.ok(["-h"]);
    assert!(top.starts_with("Usage: chute <command>"), "{top}");
    assert!(top.contains("restore"), "{top}");
    let sink = env.ok(["sink", "-h"]);
    assert!(sink.starts_with("Usage: chute sink"), "{sink}");
    assert!(sink.contains("--exclude"), "{sink}");
    assert_eq!(env.ok(["restore", "-h"]), env.ok(["restore", "--help"]));
}

/// Regression: `--exclude='*.bin'` was "Unrecognized argument: --exclude=*.bin";
/// now `--opt=value` is `--opt value` for every option, a switch given a value is
/// refused by name, and nothing after `--` is touched.
#[test]
fn option_equals_value_works_and_excludes() {
    let env = Env::new("opt-eq");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("keep.txt"), b"kept").unwrap();
    fs::write(src.join("drop.bin"), b"dropped").unwrap();
    env.ok(["init"]);
    // A peer (`chute serve` makes its store; a directory would need `chute init`).
    let server = env.serve(&env.path("srv"), &[]);
    let remote = format!("--remote={}", server.url());
    env.ok(["sink", "--exclude=*.bin", &remote, src.to_str().unwrap()]);
    let to = env.path("to");
    let to_arg = format!("--to={}", to.display());
    env.ok(["restore", "latest", &remote, &to_arg]);
    let restored = to.join(src.strip_prefix("/").unwrap());
    assert!(restored.join("keep.txt").exists(), "{}", listing(&to));
    assert!(!restored.join("drop.bin").exists(), "{}", listing(&to));

    let err = env.fails(2, ["restore", "latest", "--force=yes"]);
    let first = err.lines().next().unwrap();
    assert_eq!(
        first,
        "chute restore: --force takes no value (given --force=yes)"
    );
    // After `--` a word that looks like an option is a path to restore.
    let err = env.fails(
        2,
        ["restore", &remote, &to_arg, "--", "latest", "--exclude=x"],
    );
    assert!(err.contains("--exclude=x is not in any snapshot"), "{err}");
}

/// Regression: a typo got argh's generic "Unrecognized argument: --exlude" and
/// "Run chute --help", the top-level usage, instead of naming the command, the
/// option meant and that command's own usage.
#[test]
fn typos_name_the_command_suggest_the_option_and_show_its_usage() {
    let env = Env::new("typos");
    let err = env.fails(2, ["sink", "--exlude", "x", "/tmp"]);
    let mut lines = err.lines();
    assert_eq!(
        lines.next().unwrap(),
        "chute sink: unknown option --exlude (did you mean --exclude?)"
    );
    assert!(err.contains("Usage: chute sink"), "{err}");
    assert!(err.contains("--accept-rollback"), "{err}");
    assert!(!err.contains("Usage: chute <command>"), "{err}");

    let err = env.fails(2, ["snk", "/tmp"]);
    assert_eq!(
        err.lines().next().unwrap(),
        "chute: unknown command snk (did you mean sink?)"
    );
    assert!(err.contains("Usage: chute <command>"), "{err}");

    let err = env.fails(2, ["restore"]);
    assert!(err.starts_with("chute restore: "), "{err}");
    assert!(err.contains("snapshot"), "{err}");
    assert!(err.contains("Usage: chute restore"), "{err}");
}

/// Regression: there were no short flags. `-r -k -n -e -j` on sink, `-t -f` on
/// restore, as one would type them.
#[test]
fn short_flags_work() {
    let env = Env::new("short");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("keep.txt"), b"kept").unwrap();
    fs::write(src.join("drop.bin"), b"dropped").unwrap();
    let key = env.path("k");
    let key = key.to_str().unwrap();
    let server = env.serve(&env.path("srv"), &[]);
    let store = server.url();
    let store = store.as_str();
    env.ok(["init", "-k", key]);
    env.ok([
        "sink",
        "-r",
        store,
        "-k",
        key,
        "-n",
        "pi",
        "-e",
        "*.bin",
        "-j",
        "1",
        src.to_str().unwrap(),
    ]);
    let out = env.ok(["list", "-r", store, "-k", key, "-n", "pi"]);
    assert!(out.contains("1 snapshot"), "{out}");
    let to = env.path("to");
    let to = to.to_str().unwrap();
    let args = [
        "restore", "latest", "-r", store, "-k", key, "-n", "pi", "-t", to, "-j", "1",
    ];
    env.ok(args);
    let restored = Path::new(to).join(src.strip_prefix("/").unwrap());
    assert!(!restored.join("drop.bin").exists());
    fs::write(restored.join("keep.txt"), b"edited").unwrap();
    env.fails(1, args);
    env.ok(args.iter().copied().chain(["-f"]));
    assert_eq!(fs::read(restored.join("keep.txt")).unwrap(), b"kept");
}

/// Sets a directory's mtime, as `touch -d` would.
fn set_dir_mtime(dir: &Path, secs: u64) {
    fs::File::open(dir)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::new(secs, 123_456_789))
        .unwrap();
}

/// A tree of nested directories with small files, symlinks and one file of 3 MiB.
fn nested_tree(env: &Env) -> PathBuf {
    let src = env.path("src");
    let dirs = ["a", "a/ro", "a/ro/deeper", "b", "b/c", "z"];
    for d in dirs {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for (i, d) in dirs.iter().enumerate() {
        for j in 0..4 {
            let seed = (i * 10 + j) as u64;
            fs::write(
                src.join(d).join(format!("f{j}")),
                noise(500 + j * 300, seed),
            )
            .unwrap();
        }
    }
    std::os::unix::fs::symlink("../a/f0", src.join("b/link-a")).unwrap();
    std::os::unix::fs::symlink("nowhere", src.join("b/c/dangling")).unwrap();
    std::os::unix::fs::symlink("f1", src.join("z/link-f1")).unwrap();
    fs::write(src.join("a/ro/big"), noise(3 << 20, 99)).unwrap();
    src
}

/// Gives the tree's directories their modes and old mtimes, deepest first.
fn seal_dirs(src: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for (k, d) in ["a/ro/deeper", "a/ro", "b/c", "b", "z", "a", ""]
        .iter()
        .enumerate()
    {
        let p = src.join(d);
        let mode = if d.starts_with("a/ro") { 0o555 } else { 0o750 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        set_dir_mtime(&p, 1_600_000_000 + k as u64 * 1000);
    }
}

/// Issue 17: restore streams the manifest and writes it in batches. With batches
/// of four files and symlinks (so a/ro/deeper's last file is written in the batch
/// after which its directory is left, and its metadata set), a tree of nested (and read-only) directories, symlinks and a
/// file whose chunks lie in two blobs restores exactly: contents, modes, and the
/// directories' mtimes, which a batch written after its directory's metadata was
/// set would disturb. A conflict in the last batch still refuses before anything
/// is written, and a re-run skips what is in place across batches.
#[test]
fn a_restore_in_many_batches_is_exact_and_refuses_before_writing() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new("batches");
    let src = nested_tree(&env);
    seal_dirs(&src);
    env.ok(["init"]);
    env.ok(["sink", src.to_str().unwrap()]);
    // Change the middle of the big file: its unchanged chunks stay in the first
    // blob, the new ones go to the second.
    fs::set_permissions(src.join("a/ro"), fs::Permissions::from_mode(0o755)).unwrap();
    let big = src.join("a/ro/big");
    let mut bytes = fs::read(&big).unwrap();
    bytes[(3 << 20) / 2..(3 << 20) / 2 + 4096].copy_from_slice(&noise(4096, 7));
    fs::write(&big, &bytes).unwrap();
    fs::write(src.join("z/new"), noise(777, 8)).unwrap();
    seal_dirs(&src);
    env.ok(["sink", src.to_str().unwrap()]);

    let batch = |args: &[&str]| {
        let out = env
            .cmd(args)
            .env("CHUTE_TEST_RESTORE_BATCH", "4")
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let to = env.path("to");
    let to_arg = to.to_str().unwrap();
    let restored = to.join(src.strip_prefix("/").unwrap());

    // A file in the way in the last directory of the walk (z, after a and b).
    let late = restored.join("z/f3");
    fs::create_dir_all(late.parent().unwrap()).unwrap();
    fs::write(&late, b"mine").unwrap();
    let before = listing(&to);
    let (code, _, err) = batch(&["restore", "latest", "--to", to_arg]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("refusing to overwrite 1 existing path"),
        "{err}"
    );
    assert!(err.contains("z/f3"), "{err}");
    assert_eq!(listing(&to), before, "nothing is written before refusing");
    assert_eq!(fs::read(&late).unwrap(), b"mine");

    fs::remove_file(&late).unwrap();
    let (code, out, err) = batch(&["restore", "latest", "--to", to_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("26 files, 7 dirs, 3 symlinks"), "{out}");
    assert_same_tree(&src, &restored);

    // A re-run finds everything in place, batch after batch, and sets the
    // metadata of the directories it leaves again (not held to the end: none
    // waits for a file below it).
    for d in ["a/ro/deeper", "b/c", "z", ""] {
        set_dir_mtime(&restored.join(d), 1_234_567_890);
    }
    let (code, out, err) = batch(&["restore", "latest", "--to", to_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("29 files already restored"), "{out}");
    assert_same_tree(&src, &restored);
}

/// Issue 20, item 7: the recovery sheet. `chute key export` on the node, the
/// sheet typed in on a new machine (another home, no key, no settings), `chute
/// key import` there, and a restore with the settings the sheet gave brings the
/// files back; a typo is found on its line, and a different key is never
/// replaced.
#[test]
fn a_recovery_sheet_restores_on_a_new_machine() {
    let old = Env::new("sheet-old");
    old.ok(["init"]);
    let src = three_files(&old);
    old.ok(["sink", src.to_str().unwrap()]);
    let sheet = old.ok(["key", "export"]);
    let store = old.store();
    assert!(sheet.starts_with("chute recovery sheet 1\n"), "{sheet}");
    for want in [
        "\nnode node1\n",
        "\ndomain test.example\n",
        &format!("\nremote {}\n", store.display()),
        "\nkey 01 ",
        "\nkey 02 ",
        "\nend 32 ",
    ] {
        assert!(sheet.contains(want), "no {want:?} in\n{sheet}");
    }

    let new = Env::new("sheet-new");
    // Typed back with a typo on key line 02: found there, nothing written.
    let typed = new.path("sheet.txt");
    let line2 = sheet.lines().find(|l| l.starts_with("key 02 ")).unwrap();
    let digit = &line2[7..8];
    let wrong = line2.replacen(
        &line2[..8],
        &format!("key 02 {}", if digit == "0" { "1" } else { "0" }),
        1,
    );
    fs::write(&typed, sheet.replace(line2, &wrong)).unwrap();
    let err = new.fails(2, ["key", "import", typed.to_str().unwrap()]);
    assert!(
        err.contains("key line 02 does not match its check"),
        "{err}"
    );
    let key_path = new.ok(["key", "path"]);
    assert!(!Path::new(key_path.trim()).exists());

    // Read from stdin, as `chute key import < sheet.txt`.
    fs::write(&typed, &sheet).unwrap();
    let mut c = new.cmd(["key", "import"]);
    c.stdin(fs::File::open(&typed).unwrap());
    let out = ok_cmd(c);
    assert!(out.contains("created key "), "{out}");
    let remote_line = format!("CHUTE_REMOTE={}", store.display());
    assert!(
        out.contains("CHUTE_NODE=node1\nCHUTE_DOMAIN=test.example\n") && out.contains(&remote_line),
        "{out}"
    );
    let mut c = new.cmd([
        "restore",
        "latest",
        "--to",
        new.path("back").to_str().unwrap(),
    ]);
    c.env("CHUTE_REMOTE", &store);
    ok_cmd(c);
    assert_same_tree(&src, &new.path("back").join(src.strip_prefix("/").unwrap()));

    // Again: the same key is left as it is; another key is never replaced.
    let again = new.ok(["key", "import", typed.to_str().unwrap()]);
    assert!(again.contains("already the sheet's"), "{again}");
    let other = Env::new("sheet-other");
    other.ok(["init"]);
    let err = other.fails(2, ["key", "import", typed.to_str().unwrap()]);
    assert!(err.contains("a different key already exists"), "{err}");
    let err = other.fails(2, ["key", "import", src.join("a-small").to_str().unwrap()]);
    assert!(err.contains("not a chute recovery sheet"), "{err}");
}

/// Issue 20: `--path P` makes `latest` the newest snapshot whose source paths
/// include P exactly (restic's `--path`), for restore, ls, diff and verify, and
/// filters `list`; an id still names its snapshot whatever its paths.
#[test]
fn latest_with_path_is_the_newest_snapshot_of_those_paths() {
    let env = Env::new("latest-path");
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("f"), "a1").unwrap();
    fs::write(b.join("g"), "b1").unwrap();
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    env.ok(["init"]);
    env.ok(["sink", sa]);
    fs::write(a.join("f"), "a2").unwrap();
    env.ok(["sink", sa, sb]);
    env.ok(["sink", sb]);
    let ids: Vec<String> = env
        .ok(["list"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().filter(|w| w.len() == 8))
        .map(String::from)
        .collect();
    assert_eq!(ids.len(), 3);

    // list: only the snapshots whose paths include every --path.
    let listed = env.ok(["list", "--path", sa]);
    assert!(
        listed.contains(&ids[0]) && listed.contains(&ids[1]),
        "{listed}"
    );
    assert!(!listed.contains(&ids[2]) && listed.ends_with("2 snapshots\n"));
    let both = env.ok(["list", "--path", sa, "--path", &format!("{sb}/")]);
    assert!(
        both.contains(&ids[1]) && both.ends_with("1 snapshot\n"),
        "{both}"
    );
    let none = env.ok(["list", "--path", &format!("{sa}/f")]);
    assert!(none.ends_with("0 snapshots\n"), "{none}");

    // latest --path a is the second snapshot (a and b), not the third (b only).
    let to = env.path("to");
    let out = env.ok([
        "restore",
        "latest",
        "--path",
        sa,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(
        out.starts_with(&format!("restored snapshot {}", ids[1])),
        "{out}"
    );
    assert_eq!(
        fs::read(to.join(a.strip_prefix("/").unwrap()).join("f")).unwrap(),
        b"a2"
    );
    let ls = env.ok(["ls", "latest", "--path", sa, "--path", sb]);
    assert!(
        ls.contains(&format!("{sa}/f\n")) && ls.contains(&format!("{sb}/g\n")),
        "{ls}"
    );
    let diff = env.ok(["diff", &ids[0], "latest", "--path", sa]);
    assert!(diff.contains(&format!("M            2 {sa}/f")), "{diff}");
    let v = env.ok(["verify", "--path", sb]);
    assert!(v.contains("verified 1 snapshot"), "{v}");
    let v = env.ok(["verify", "--all", "--path", sa]);
    assert!(v.contains("verified 2 snapshots"), "{v}");
    // find: only in the snapshots of those paths.
    let found = env.ok(["find", "g", "--path", sb]);
    assert!(
        !found.contains(&ids[0]) && found.lines().count() == 2,
        "{found}"
    );
    // An id names its snapshot whatever --path says.
    let out = env.ok(["ls", &ids[2], "--path", sa]);
    assert!(out.contains(&format!("{sb}/g")), "{out}");

    // No snapshot of a path set is a usage error naming it.
    let e = env.fails(2, ["restore", "latest", "--path", &format!("{sa}/f")]);
    assert!(
        e.contains("no snapshot has the paths") && e.contains("/a/f"),
        "{e}"
    );
    let e = env.fails(2, ["verify", "--path", "/nowhere"]);
    assert!(e.contains("no snapshot has the paths /nowhere"), "{e}");
}

/// Issue 20: restore takes globs as PATHs (find's matcher): with a '/' whole
/// paths from the root, without names; what matches comes with what it holds,
/// and a glob that matches nothing is a usage error, as a missing PATH is.
#[test]
fn restore_takes_globs() {
    let env = Env::new("restore-glob");
    let src = env.path("src");
    for d in ["home/pi", "home/bob/sub", "etc"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("home/pi/config.yaml"), "pi").unwrap();
    fs::write(src.join("home/bob/config.yaml"), "bob").unwrap();
    fs::write(src.join("home/bob/sub/config.yaml"), "deeper").unwrap();
    fs::write(src.join("home/bob/other"), "other").unwrap();
    fs::write(src.join("etc/x.conf"), "x").unwrap();
    env.ok(["init"]);
    env.ok(["sink", src.to_str().unwrap()]);
    let files = |to: &Path| -> Vec<String> {
        let mut f: Vec<String> = walk(to)
            .into_iter()
            .filter(|p| p.is_file())
            .map(|p| {
                p.strip_prefix(to.join(src.strip_prefix("/").unwrap()))
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        f.sort();
        f
    };

    // Relative: from the root, whatever the working directory.
    let rel = format!(
        "{}/home/*/config.yaml",
        src.strip_prefix("/").unwrap().display()
    );
    let to = env.path("to1");
    env.ok(["restore", "latest", &rel, "--to", to.to_str().unwrap()]);
    assert_eq!(files(&to), ["home/bob/config.yaml", "home/pi/config.yaml"]);

    // A name glob, and a whole-path glob of a directory (with what it holds).
    let to = env.path("to2");
    let dir = format!("{}/home/b?b", src.display());
    env.ok([
        "restore",
        "latest",
        "*.conf",
        &dir,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(
        files(&to),
        [
            "etc/x.conf",
            "home/bob/config.yaml",
            "home/bob/other",
            "home/bob/sub/config.yaml"
        ]
    );

    let none = format!("{}/home/[xy]*", src.display());
    let e = env.fails(
        2,
        [
            "restore",
            "latest",
            &none,
            "--to",
            env.path("to3").to_str().unwrap(),
        ],
    );
    assert!(
        e.contains("no path in snapshot") && e.contains("matches /"),
        "{e}"
    );
    assert!(!env.path("to3").exists());
}
