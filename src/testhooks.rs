//! Every failpoint and test override in one audited place. Each is read from an
//! environment variable that only the test suite sets; unset (as in every real
//! run) each is a no-op or returns the real value. None of them can make a run
//! store wrong data: they kill the process, slow it, shorten a period, or change
//! the *source* files a sink reads, as another process could.
//!
//! - `CHUTE_FAILPOINT=NAME`: [`failpoint`] aborts like `kill -9` at that point
//!   (sink, in order: `tail-saved`, the last window's bytes kept beside the
//!   journal but no final index journaled; `before-last-window`, the final index
//!   journaled, the last window not sent; `before-commit`, every window
//!   acknowledged; `after-commit`; prune: `prune-marked`, `prune-repacking`,
//!   `prune-deleted-one`, `prune-repacked`).
//! - `CHUTE_TEST_KEEPALIVE_MS`: the sink's keep-alive period ([`keepalive`]).
//! - `CHUTE_TEST_CHUNK_CAP`: chunk records a sink keeps in memory before it
//!   spills them to sorted runs on disk ([`chunk_cap`]).
//! - `CHUTE_TEST_STALL_SECS`, `CHUTE_TEST_STALL_UNTIL`: a sink that pauses after
//!   its first file ([`stall`]).
//! - `CHUTE_TEST_REWRITE_SOURCE`, `CHUTE_TEST_CHANGE_DURING_READ`: a source file
//!   rewritten between a chunk's id and its seal ([`rewrite_source`]), or during
//!   its read ([`change_during_read`]).
//! - `CHUTE_TEST_HOLD_WINDOW=DIR`: the store holds the first window it receives
//!   between its last byte and its rename into place ([`hold_window`]).
//! - `CHUTE_TEST_PRUNE_PAUSE=DIR`: prune pauses after its plan, before its first
//!   change ([`prune_pause`]).
//! - `CHUTE_TEST_RESTORE_BATCH=N`: restore writes at most N files and symlinks
//!   per batch ([`restore_batch`]), so a small tree takes several.
//! - `CHUTE_TEST_UI_NOT_LOOPBACK=1`: the management page does not let loopback
//!   clients in for being loopback ([`ui_not_loopback`]), so the access tests
//!   see a refused client on any machine. It can only refuse more.
//! - `CHUTE_TEST_RUNNER`: the words the ARM test runs put in front of the binary
//!   (`qemu-arm-static -cpu cortex-a7`) go in front of the children the
//!   management page starts too ([`child_command`]): qemu-user cannot exec an
//!   ARM binary without binfmt. It changes how a child starts, not what it does.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Dies like `kill -9` at a named point when `CHUTE_FAILPOINT` names it: the
/// resume tests need deterministic crashes at moments too short to hit with a signal.
pub fn failpoint(name: &str) {
    if std::env::var_os("CHUTE_FAILPOINT").is_some_and(|v| v == name) {
        std::process::abort();
    }
}

/// `default`, or `CHUTE_TEST_KEEPALIVE_MS` milliseconds: the sink's keep-alive
/// period, shortened for tests whose prunes use grace periods of seconds.
pub fn keepalive(default: Duration) -> Duration {
    std::env::var("CHUTE_TEST_KEEPALIVE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&ms| ms > 0)
        .map_or(default, Duration::from_millis)
}

/// `default`, or `CHUTE_TEST_CHUNK_CAP`: how many chunk records a sink keeps in
/// memory before it spills them to disk (see [`crate::runchunks`]); tests make it
/// tiny so a small tree spills and merges many times.
pub fn chunk_cap(default: usize) -> usize {
    std::env::var("CHUTE_TEST_CHUNK_CAP")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// Sleeps `CHUTE_TEST_STALL_SECS` seconds after the first file read, or until the
/// file `CHUTE_TEST_STALL_UNTIL` exists (at most a minute), once: for tests only, a
/// sink that writes nothing for a while (as one walking a huge unchanged tree does)
/// while a prune runs.
pub fn stall() {
    static STALL: std::sync::Once = std::sync::Once::new();
    STALL.call_once(|| {
        if let Some(secs) = std::env::var("CHUTE_TEST_STALL_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            std::thread::sleep(Duration::from_secs(secs));
        }
        if let Some(path) = std::env::var_os("CHUTE_TEST_STALL_UNTIL") {
            let until = Instant::now() + Duration::from_secs(60);
            while !Path::new(&path).exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
}

/// For tests only: `CHUTE_TEST_CHANGE_DURING_READ=N:PATH` changes one byte of
/// PATH after each of its first N reads, before the stat that ends the read (10 ms
/// later, so even a coarse clock gives it a new mtime): a file written on every try.
pub fn change_during_read(path: &Path, tries: u32) {
    let Some(spec) = std::env::var_os("CHUTE_TEST_CHANGE_DURING_READ") else {
        return;
    };
    let spec = spec.as_bytes();
    let Some(colon) = spec.iter().position(|&b| b == b':') else {
        return;
    };
    let times: u32 = std::str::from_utf8(&spec[..colon])
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if tries > times || path.as_os_str().as_bytes() != &spec[colon + 1..] {
        return;
    }
    std::thread::sleep(Duration::from_millis(10));
    if let Ok(f) = fs::OpenOptions::new().read(true).write(true).open(path) {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 1];
        if f.read_exact_at(&mut b, 0).is_ok() {
            let _ = f.write_all_at(&[!b[0]], 0);
        }
    }
}

/// For tests only: once, right after a worker computed a chunk's id and before it
/// seals the chunk, rewrites the file `CHUTE_TEST_REWRITE_SOURCE` in place (every
/// byte inverted), as a database writing while it is backed up would. An id and a
/// seal taken from two reads of the source would disagree here every time.
pub fn rewrite_source() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let Some(path) = std::env::var_os("CHUTE_TEST_REWRITE_SOURCE") else {
        return;
    };
    ONCE.call_once(|| {
        use std::os::unix::fs::FileExt;
        let Ok(f) = fs::OpenOptions::new().read(true).write(true).open(&path) else {
            return;
        };
        let mut bytes = Vec::new();
        if (&f).read_to_end(&mut bytes).is_ok() {
            bytes.iter_mut().for_each(|b| *b = !*b);
            let _ = f.write_all_at(&bytes, 0);
        }
    });
}

/// For tests only: `CHUTE_TEST_HOLD_WINDOW=DIR` holds the first window this process
/// receives after its body is on disk and before it is renamed into place: creates
/// `DIR/held`, then waits until `DIR/go` exists (at most 30 s). A test commits the
/// blob meanwhile, as a client racing its own slow window would.
pub fn hold_window() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static HELD: AtomicBool = AtomicBool::new(false);
    let Some(dir) = std::env::var_os("CHUTE_TEST_HOLD_WINDOW") else {
        return;
    };
    if HELD.swap(true, Ordering::SeqCst) {
        return;
    }
    let dir = Path::new(&dir);
    let _ = fs::write(dir.join("held"), b"");
    let until = Instant::now() + Duration::from_secs(30);
    while !dir.join("go").exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// For tests only: `CHUTE_TEST_PRUNE_PAUSE=DIR` pauses a prune once it has
/// planned, before it changes anything: creates `DIR/paused`, then waits until
/// `DIR/go` exists (at most 30 s). A test changes the store's listing meanwhile,
/// as a store hiding a snapshot during the run would.
pub fn prune_pause() {
    let Some(dir) = std::env::var_os("CHUTE_TEST_PRUNE_PAUSE") else {
        return;
    };
    let dir = Path::new(&dir);
    let _ = fs::write(dir.join("paused"), b"");
    let until = Instant::now() + Duration::from_secs(30);
    while !dir.join("go").exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `default`, or `CHUTE_TEST_RESTORE_BATCH`: the most files and symlinks restore
/// writes per batch, made tiny by tests so a small tree crosses several batches.
pub fn restore_batch(default: usize) -> usize {
    std::env::var("CHUTE_TEST_RESTORE_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// Whether `CHUTE_TEST_UI_NOT_LOOPBACK=1`: the management page treats loopback
/// clients as any other address (see [`crate::ui::access`]).
pub fn ui_not_loopback() -> bool {
    std::env::var_os("CHUTE_TEST_UI_NOT_LOOPBACK").is_some_and(|v| v == "1")
}

/// A command that runs this binary (`exe`) as a child: behind
/// `CHUTE_TEST_RUNNER`'s words when set.
pub fn child_command(exe: &Path) -> std::process::Command {
    let runner = std::env::var("CHUTE_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(first) => {
            let mut c = std::process::Command::new(first);
            c.args(words).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    }
}
