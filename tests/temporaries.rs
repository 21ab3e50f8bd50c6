//! Issue 16, item 2: a `kill -9` of a local sink, or of `chute serve` during a PUT,
//! left `0/.tmp-*` window files in blobs that nothing ever removed (not prune, not
//! scrub, not a commit, not a server's start) and quotas never counted. Each test
//! kills a writer while it holds a window between its last byte and its rename
//! (`CHUTE_TEST_HOLD_WINDOW`), then checks one sweep point.
use crate::util::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Window temporaries (`0/.tmp-*`) anywhere under a store.
fn temps(store: &Path) -> Vec<PathBuf> {
    part0_files(store, |n| n.starts_with(".tmp-"))
}

/// Waits until `hold/held` exists (a writer holds its first window), or fails.
fn await_held(hold: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60 * u64::from(slack()));
    while !hold.join("held").exists() {
        assert!(Instant::now() < deadline, "{what} never held a window");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A sink into `remote` that holds its first window; waits until it does.
fn holding_sink(env: &Env, remote: &str, src: &Path, hold: &Path) -> Child {
    let _ = fs::remove_dir_all(hold);
    fs::create_dir_all(hold).unwrap();
    let child = env
        .cmd(["sink", src.to_str().unwrap(), "--remote", remote])
        .env("CHUTE_TEST_HOLD_WINDOW", hold)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    await_held(hold, "the sink");
    child
}

/// Kills a sink holding a window with SIGKILL: its temporary stays behind.
fn kill_sink(env: &Env, store: &Path, src: &Path, hold: &Path) -> Vec<PathBuf> {
    let mut child = holding_sink(env, store.to_str().unwrap(), src, hold);
    child.kill().unwrap();
    child.wait().unwrap();
    let left = temps(store);
    assert!(!left.is_empty(), "no temporary left:\n{}", listing(store));
    left
}

fn source(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), noise(3 << 20, 16)).unwrap();
    fs::write(src.join("small.txt"), b"small\n").unwrap();
    src
}

/// A local store with a source tree to sink into it, and a hold directory.
fn local(name: &str) -> (Env, PathBuf, PathBuf, PathBuf) {
    let env = Env::new(name);
    let store = env.new_store("store");
    let src = source(&env);
    let hold = env.path("hold");
    (env, store, src, hold)
}

#[test]
fn a_scrub_sweeps_and_reports_a_killed_local_sinks_temporary() {
    let (env, store, src, hold) = local("temps-scrub");
    let left = kill_sink(&env, &store, &src, &hold);
    let out = env.ok(["scrub", "--store", store.to_str().unwrap()]);
    assert!(
        out.contains(&format!("temporary files: {} swept", left.len())),
        "{out}"
    );
    assert!(temps(&store).is_empty(), "{}", listing(&store));
}

#[test]
fn a_prune_sweeps_a_pending_blobs_temporary_after_the_grace() {
    let (env, store, src, hold) = local("temps-prune");
    let s = store.to_str().unwrap();
    let left = kill_sink(&env, &store, &src, &hold);
    let out = env.ok(["prune", "--grace", "1h", "--remote", s]);
    assert!(out.contains("younger than the grace period, kept"), "{out}");
    assert_eq!(temps(&store), left);
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    for t in &left {
        fs::File::options()
            .write(true)
            .open(t)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    let out = env.ok(["prune", "--grace", "1h", "--remote", s]);
    assert!(out.contains("temporary files: 1 swept"), "{out}");
    assert!(temps(&store).is_empty(), "{}", listing(&store));
}

#[test]
fn a_resumed_sinks_commit_sweeps_the_killed_ones_temporary() {
    let (env, store, src, hold) = local("temps-commit");
    kill_sink(&env, &store, &src, &hold);
    env.ok([
        "sink",
        src.to_str().unwrap(),
        "--remote",
        store.to_str().unwrap(),
    ]);
    assert!(temps(&store).is_empty(), "{}", listing(&store));
}

#[test]
fn a_server_killed_mid_put_leaves_nothing_after_its_restart() {
    let env = Env::new("temps-serve");
    env.ok(["init"]);
    let srv = env.path("srv");
    let src = source(&env);
    let hold = env.path("hold");
    fs::create_dir_all(&hold).unwrap();
    let server = env.serve_env(
        &srv,
        &[],
        &[("CHUTE_TEST_HOLD_WINDOW", hold.to_str().unwrap())],
    );
    let mut sink = env
        .cmd(["sink", src.to_str().unwrap(), "--remote", &server.url()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    await_held(&hold, "the server");
    drop(server); // SIGKILL
    let _ = sink.kill();
    let _ = sink.wait();
    let left = temps(&srv);
    assert_eq!(left.len(), 1, "{}", listing(&srv));
    let server = env.serve(&srv, &[]);
    server.await_log(0, "temporary files: 1 swept", 10);
    assert!(temps(&srv).is_empty(), "{}", listing(&srv));
}
