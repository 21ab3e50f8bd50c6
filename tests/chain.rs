//! Issue 14, items 2 and 3: the snapshot chain and the node's record catch a
//! store that rolls back, hides or truncates, and prune never deletes on such a
//! view. The "malicious store" is the test editing the store directory on disk:
//! hiding moves a blob's index.json out of the store, a rollback puts back a copy
//! of the store taken before a sink.
use crate::util::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One snapshot as `list --json` shows it: (id, blob path, seq).
type Snap = (String, String, u64);

fn field<'a>(item: &'a str, name: &str) -> &'a str {
    let at = item
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("no {name} in {item}"))
        + name.len()
        + 3;
    let rest = &item[at..];
    match rest.strip_prefix('"') {
        Some(s) => &s[..s.find('"').unwrap()],
        None => &rest[..rest.find([',', '}']).unwrap()],
    }
}

/// The snapshots `list --json` shows, oldest first, and list's stderr.
fn snaps(env: &Env, remote: &str) -> (Vec<Snap>, String) {
    let out = env.run(["list", "--json", "--remote", remote]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "list failed: {err}");
    let json = text(&out.stdout);
    let list = json
        .split("{\"id\"")
        .skip(1)
        .map(|item| {
            let item = format!("{{\"id\"{item}");
            (
                // The short id the messages use: the full id's first 8 digits.
                field(&item, "id")[..8].to_string(),
                field(&item, "blob").to_string(),
                field(&item, "seq").parse().unwrap(),
            )
        })
        .collect();
    (list, err)
}

fn sink(env: &Env, remote: &str, src: &Path) {
    env.ok(["sink", src.to_str().unwrap(), "--remote", remote]);
}

/// Runs chute with `--remote remote`, insists on exit 1; returns stderr.
fn refused(env: &Env, remote: &str, args: &[&str]) -> String {
    let mut a = args.to_vec();
    a.extend(["--remote", remote]);
    env.fails(1, &a)
}

/// Hides a committed snapshot: its index.json leaves the store.
fn hide(env: &Env, store: &Path, blob: &str) -> PathBuf {
    let stash = env.path(&format!("hidden-{}", blob.replace('/', "_")));
    fs::rename(store.join(blob).join("index.json"), &stash).unwrap();
    stash
}

fn unhide(store: &Path, blob: &str, stash: &Path) {
    fs::rename(stash, store.join(blob).join("index.json")).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Every data and index file under the store with its contents (not the store's
/// own lock files and records).
fn store_state(store: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk(store)
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .map(|p| {
            let data = fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

fn restore_same(env: &Env, remote: &str, id: &str, src: &Path) {
    let out = env.path(&format!("out-{id}"));
    let _ = fs::remove_dir_all(&out);
    env.ok([
        "restore",
        id,
        "--to",
        out.to_str().unwrap(),
        "--remote",
        remote,
    ]);
    assert_same_tree(src, &out.join(src.strip_prefix("/").unwrap()));
}

fn setup(name: &str) -> (Env, PathBuf, String, PathBuf) {
    let env = Env::new(name);
    env.ok(["init"]);
    let store = env.new_store("store");
    let remote = store.display().to_string();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data.bin"), noise(2 << 20, 7)).unwrap();
    (env, store, remote, src)
}

/// The attack: on main, prune deleted S1's blob, which S2 (hidden from the
/// listing) reuses, and restoring S2 then failed.
#[test]
fn prune_refuses_a_listing_that_hides_a_snapshot() {
    let (env, store, remote, src) = setup("chain-prune-hide");
    sink(&env, &remote, &src);
    sink(&env, &remote, &src); // unchanged: S2 reuses S1's data
    let (list, _) = snaps(&env, &remote);
    let [(s1, _, _), (s2, b2, _)] = &list[..] else {
        panic!("{list:?}")
    };
    env.ok(["forget", s1.as_str(), "--remote", &remote]);
    let stash = hide(&env, &store, b2);
    let before = store_state(&store);
    let err = refused(&env, &remote, &["prune", "--grace", "0"]);
    assert!(
        err.contains("rolled back or hides snapshots") && err.contains("nothing was deleted"),
        "{err}"
    );
    assert!(before == store_state(&store), "prune changed the store");
    unhide(&store, b2, &stash);
    restore_same(&env, &remote, s2, &src);
    env.ok(["verify", "--all", "--remote", &remote]);
}

/// A snapshot hidden while prune runs, after it read the listing: it stops before
/// its first change.
#[test]
fn prune_stops_when_its_view_changes_during_the_run() {
    let (env, store, remote, src) = setup("chain-prune-during");
    sink(&env, &remote, &src);
    sink(&env, &remote, &src);
    let (list, _) = snaps(&env, &remote);
    env.ok(["forget", list[0].0.as_str(), "--remote", &remote]);
    let gate = env.path("gate");
    fs::create_dir_all(&gate).unwrap();
    let mut child = env
        .cmd(["prune", "--grace", "0", "--remote", &remote])
        .env("CHUTE_TEST_PRUNE_PAUSE", &gate)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !gate.join("paused").exists() {
        if child.try_wait().unwrap().is_some() || std::time::Instant::now() > until {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "prune never paused after its plan\nstdout:\n{}\nstderr:\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let stash = hide(&env, &store, &list[1].1);
    let before = store_state(&store);
    fs::write(gate.join("go"), b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("snapshot {} left the listing", list[1].0))
            && err.contains("nothing was deleted"),
        "{err}"
    );
    assert!(before == store_state(&store), "prune changed the store");
    unhide(&store, &list[1].1, &stash);
    restore_same(&env, &remote, &list[1].0, &src);
    env.ok(["verify", "--all", "--remote", &remote]);
}

/// A store put back to a copy taken before the last sink: every command that
/// trusts the newest refuses, by id restore only warns, --accept-rollback takes
/// the store's view and the chain goes on from there.
#[test]
fn a_rolled_back_store_is_refused_until_accepted() {
    let (env, store, remote, src) = setup("chain-rollback");
    sink(&env, &remote, &src);
    let (first, _) = snaps(&env, &remote);
    let old = env.path("store-old");
    copy_tree(&store, &old);
    fs::write(src.join("new.txt"), b"newer").unwrap();
    sink(&env, &remote, &src);
    fs::remove_dir_all(&store).unwrap();
    fs::rename(&old, &store).unwrap();
    let msg = format!(
        "store {remote} shows snapshot seq 1 of {} as newest, this node committed or saw seq 2",
        src.display()
    );
    let out = env.path("out");
    for args in [
        &["list"][..],
        &["restore", "latest", "--to", out.to_str().unwrap()],
        &["verify"],
        &["verify", "--all"],
        &["prune", "--grace", "0"],
        &["sink", src.to_str().unwrap()],
    ] {
        let err = refused(&env, &remote, args);
        assert!(
            err.contains(&msg) && err.contains("--accept-rollback"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    }
    assert!(!out.exists());
    // A snapshot named by id is what it is: a warning only.
    let o = env.run([
        "restore",
        &first[0].0,
        "--to",
        out.to_str().unwrap(),
        "--remote",
        &remote,
    ]);
    let e = text(&o.stderr);
    assert!(
        o.status.success() && e.contains("warning: ") && e.contains(&msg),
        "{e}"
    );
    let back = out.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(back.join("data.bin")).unwrap(), noise(2 << 20, 7));
    assert!(!back.join("new.txt").exists());
    let o = env.run(["list", "--accept-rollback", "--remote", &remote]);
    let e = text(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("--accept-rollback: taking the store's view") && e.contains(&msg),
        "{e}"
    );
    let (list, err) = snaps(&env, &remote);
    assert!(err.is_empty(), "accepted, then quiet: {err}");
    assert_eq!(list, first);
    sink(&env, &remote, &src);
    let (list, _) = snaps(&env, &remote);
    let seqs: Vec<u64> = list.iter().map(|s| s.2).collect();
    assert_eq!(seqs, [1, 2]);
    restore_same(&env, &remote, &list[1].0, &src);
    env.ok(["verify", "--all", "--remote", &remote]);
}

/// The same rollback, accepted by a sink.
#[test]
fn sink_accepts_a_rollback_when_told_and_says_so() {
    let (env, store, remote, src) = setup("chain-rollback-sink");
    sink(&env, &remote, &src);
    let old = env.path("store-old");
    copy_tree(&store, &old);
    sink(&env, &remote, &src);
    sink(&env, &remote, &src);
    fs::remove_dir_all(&store).unwrap();
    fs::rename(&old, &store).unwrap();
    let err = refused(&env, &remote, &["sink", src.to_str().unwrap()]);
    assert!(err.contains("this node committed or saw seq 3"), "{err}");
    let o = env.run([
        "sink",
        src.to_str().unwrap(),
        "--accept-rollback",
        "--remote",
        &remote,
    ]);
    let e = text(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("taking the store's view"), "{e}");
    let (list, err) = snaps(&env, &remote);
    assert!(err.is_empty(), "{err}");
    assert_eq!(list.iter().map(|s| s.2).collect::<Vec<_>>(), [1, 2]);
}

/// A store that leaves a snapshot out of the middle of the list: a gap in the
/// chain, which list, restore latest and verify refuse.
#[test]
fn a_truncated_list_shows_as_a_gap() {
    let (env, store, remote, src) = setup("chain-gap");
    for i in 0..3 {
        fs::write(src.join("n.txt"), format!("{i}")).unwrap();
        sink(&env, &remote, &src);
    }
    let (list, _) = snaps(&env, &remote);
    let stash = hide(&env, &store, &list[1].1);
    let out = env.path("out");
    for args in [
        &["list"][..],
        &["restore", "latest", "--to", out.to_str().unwrap()],
        &["verify", "--all"],
        &["prune", "--grace", "0"],
    ] {
        let err = refused(&env, &remote, args);
        assert!(
            err.contains("has a gap: seq 2 missing")
                && err.contains(&format!(
                    "after snapshot {} and before snapshot {}",
                    list[0].0, list[2].0
                )),
            "{args:?}: {err}"
        );
    }
    unhide(&store, &list[1].1, &stash);
    let (_, err) = snaps(&env, &remote);
    assert!(err.is_empty(), "{err}");
}

/// Forgetting is this node's doing: the newest forgotten (and pruned) is no
/// rollback, and the next sink follows the one before it.
#[test]
fn forgetting_the_newest_is_not_mistaken_for_hiding() {
    let (env, _store, remote, src) = setup("chain-forget-newest");
    sink(&env, &remote, &src);
    fs::write(src.join("n.txt"), b"2").unwrap();
    sink(&env, &remote, &src);
    let (list, _) = snaps(&env, &remote);
    env.ok(["forget", list[1].0.as_str(), "--remote", &remote]);
    let (after, err) = snaps(&env, &remote);
    assert!(err.is_empty(), "{err}");
    assert_eq!(after.len(), 1);
    env.ok(["prune", "--grace", "0", "--remote", &remote]);
    let (_, err) = snaps(&env, &remote);
    assert!(err.is_empty(), "{err}");
    fs::write(src.join("n.txt"), b"3").unwrap();
    sink(&env, &remote, &src);
    let (list, err) = snaps(&env, &remote);
    assert!(err.is_empty(), "{err}");
    assert_eq!(list.iter().map(|s| s.2).collect::<Vec<_>>(), [1, 3]);
    env.ok(["verify", "--all", "--remote", &remote]);
    // A new machine sees seq 3 follow seq 1 directly: no gap either.
    fs::remove_dir_all(env.home().join(".cache")).unwrap();
    let (_, err) = snaps(&env, &remote);
    assert!(err.is_empty(), "{err}");
}

/// A node rebuilt from its key alone (an empty cache directory) continues the
/// chain, and sees a snapshot hidden from it as a gap, as a warning: it cannot
/// tell it from one forgotten and pruned before.
#[test]
fn a_node_rebuilt_from_the_key_continues_the_chain() {
    let (env, store, remote, src) = setup("chain-new-machine");
    for i in 0..3 {
        fs::write(src.join("n.txt"), format!("{i}")).unwrap();
        sink(&env, &remote, &src);
    }
    let (list, _) = snaps(&env, &remote);
    let stash = hide(&env, &store, &list[1].1);
    fs::remove_dir_all(env.home().join(".cache")).unwrap();
    let (shown, err) = snaps(&env, &remote);
    assert_eq!(shown.len(), 2);
    assert!(
        err.contains("warning: the chain of") && err.contains("has a gap: seq 2 missing"),
        "{err}"
    );
    unhide(&store, &list[1].1, &stash);
    fs::write(src.join("n.txt"), b"3").unwrap();
    sink(&env, &remote, &src);
    let (list, err) = snaps(&env, &remote);
    assert!(err.is_empty(), "{err}");
    assert_eq!(list.iter().map(|s| s.2).collect::<Vec<_>>(), [1, 2, 3, 4]);
    restore_same(&env, &remote, "latest", &src);
    // From now on this machine has a record: hiding the newest is refused.
    let stash = hide(&env, &store, &list[3].1);
    let err = refused(&env, &remote, &["list"]);
    assert!(err.contains("this node committed or saw seq 4"), "{err}");
    unhide(&store, &list[3].1, &stash);
}

/// Two path sets sunk in turn are two chains: no false alarm, each numbered on
/// its own.
#[test]
fn two_path_sets_form_two_chains() {
    let (env, _store, remote, src) = setup("chain-two-mounts");
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("o.txt"), b"other").unwrap();
    for i in 0..2 {
        fs::write(src.join("n.txt"), format!("{i}")).unwrap();
        sink(&env, &remote, &src);
        sink(&env, &remote, &other);
    }
    let (list, err) = snaps(&env, &remote);
    assert!(err.is_empty(), "{err}");
    assert_eq!(list.iter().map(|s| s.2).collect::<Vec<_>>(), [1, 1, 2, 2]);
    env.ok(["verify", "--all", "--remote", &remote]);
    env.ok(["forget", "--keep-last", "1", "--remote", &remote]);
    env.ok(["prune", "--grace", "0", "--remote", &remote]);
    let (list, err) = snaps(&env, &remote);
    assert!(err.is_empty(), "{err}");
    assert_eq!(list.iter().map(|s| s.2).collect::<Vec<_>>(), [2, 2]);
}

/// A damaged record is said aloud and rebuilt, not obeyed nor ignored silently.
#[test]
fn a_damaged_record_warns_and_is_rebuilt() {
    let (env, _store, remote, src) = setup("chain-damaged");
    sink(&env, &remote, &src);
    let records: Vec<PathBuf> = walk(&env.home().join(".cache"))
        .into_iter()
        .filter(|p| p.file_name() == Some("chain".as_ref()))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    fs::write(&records[0], b"chute chain record 1\nnot a line\n").unwrap();
    let (_, err) = snaps(&env, &remote);
    assert!(
        err.contains("is damaged (line 2") && err.contains("rebuilding it"),
        "{err}"
    );
    let text = fs::read_to_string(&records[0]).unwrap();
    assert!(text.starts_with("chute chain record 1\n") && text.lines().count() == 2);
    let (_, err) = snaps(&env, &remote);
    assert!(err.is_empty(), "{err}");
}
