//! Issue 21 (item 1): `chute sink --fs-snapshot` reads each root from a read-only
//! btrfs snapshot, so a file rewritten during the sink restores as one whole
//! version; the snapshot is gone after a normal run and after SIGINT, and the
//! one a `kill -9` left is removed by the next run. Runs on a real btrfs file
//! system on a loop device (root and btrfs-progs needed: `make test-deps`
//! installs them); without them these tests fail, they never skip.

use crate::util::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// One btrfs loop device at a time: there are few of them.
static LOOP: Mutex<()> = Mutex::new(());

/// A btrfs file system on a loop device, mounted under the test's directory,
/// with a subvolume `data`; unmounted (which frees the loop device) on drop.
struct Btrfs {
    mnt: PathBuf,
    _one: std::sync::MutexGuard<'static, ()>,
}

fn must(what: &str, c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run {:?}: {e} (make test-deps installs btrfs-progs)",
            c.get_program()
        )
    });
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{} (these tests need root and btrfs-progs: make test-deps)",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

impl Btrfs {
    fn new(env: &Env) -> Btrfs {
        let one = LOOP.lock().unwrap_or_else(|p| p.into_inner());
        let img = env.path("btrfs.img");
        let mnt = env.path("vol");
        fs::create_dir_all(&mnt).unwrap();
        fs::File::create(&img).unwrap().set_len(256 << 20).unwrap();
        must("mkfs.btrfs", Command::new("mkfs.btrfs").arg("-q").arg(&img));
        must(
            "mount -o loop (btrfs)",
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&mnt),
        );
        let fs = Btrfs { mnt, _one: one };
        must(
            "btrfs subvolume create",
            Command::new("btrfs")
                .args(["subvolume", "create"])
                .arg(fs.data()),
        );
        fs
    }

    fn data(&self) -> PathBuf {
        self.mnt.join("data")
    }

    /// The chute snapshots on the file system (`btrfs subvolume list`).
    fn chute_snapshots(&self) -> Vec<String> {
        let out = Command::new("btrfs")
            .args(["subvolume", "list"])
            .arg(&self.mnt)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .filter(|l| l.contains("chute-fssnap-"))
            .map(String::from)
            .collect()
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.mnt).status();
        if !ok.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// Starts a sink of `root` that pauses after its first file (until a file that
/// never appears) and returns once its snapshot exists.
fn stalled_sink(env: &Env, fs: &Btrfs, roots: &[&str]) -> Child {
    let mut c = env.cmd(["sink", "--fs-snapshot", "btrfs"]);
    c.args(roots);
    c.env("CHUTE_TEST_STALL_UNTIL", env.path("never"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while fs.chute_snapshots().is_empty() {
        assert!(Instant::now() < until, "the sink never took its snapshot");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past the snapshot, into the walk (the journal is written before it).
    std::thread::sleep(Duration::from_millis(300));
    child
}

const DB: usize = 4 << 20;

#[test]
fn a_file_rewritten_during_the_sink_restores_as_one_version_and_the_snapshot_goes() {
    let env = Env::new("fssnap-torn");
    let fs = Btrfs::new(&env);
    let data = fs.data();
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("a"), b"first in walk order").unwrap();
    fs::write(data.join("sub/still"), noise(300 << 10, 1)).unwrap();
    let db = data.join("db");
    fs::write(&db, vec![1u8; DB]).unwrap();
    let root = data.to_str().unwrap();
    env.ok(["init"]);

    // The sink takes its snapshot, reads `a`, and waits; meanwhile, and while it
    // reads `db`, a writer rewrites `db` in place, 64 KiB at a time, each
    // version one repeated byte: the live file is torn at almost every instant,
    // and a read of it mixes bytes. (A writer running before the snapshot would
    // let the snapshot itself hold a torn file, as a crash would.)
    let go = env.path("go");
    let mut c = env.cmd(["sink", "--fs-snapshot", "btrfs", root]);
    c.env("CHUTE_TEST_STALL_UNTIL", &go)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while fs.chute_snapshots().is_empty() {
        assert!(Instant::now() < until, "the sink never took its snapshot");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = AtomicBool::new(false);
    let version = AtomicU8::new(1);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let f = fs::OpenOptions::new().write(true).open(&db).unwrap();
            let mut v = 1u8;
            while !stop.load(Ordering::Relaxed) {
                v = v % 250 + 2;
                let piece = vec![v; 64 << 10];
                for off in (0..DB).step_by(piece.len()) {
                    f.write_all_at(&piece, off as u64).unwrap();
                }
                version.store(v, Ordering::Relaxed);
            }
        });
        while version.load(Ordering::Relaxed) == 1 {
            std::thread::sleep(Duration::from_millis(5));
        }
        fs::write(&go, b"").unwrap();
        let out = child.wait_with_output().unwrap();
        stop.store(true, Ordering::Relaxed);
        out
    });
    let err = text(&out.stderr);
    assert!(out.status.success(), "sink failed:\n{err}");
    assert!(!err.contains("changed while being read"), "{err}");
    assert_eq!(fs.chute_snapshots(), Vec::<String>::new(), "snapshot left");
    assert!(
        !fs::read_dir(&data).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("chute")),
        "a snapshot directory is left in {}",
        data.display()
    );

    // Recorded under the original paths, as one version.
    let to = env.path("back");
    env.ok(["restore", "--to", to.to_str().unwrap(), "latest"]);
    let back = to.join(root.trim_start_matches('/'));
    let got = fs::read(back.join("db")).unwrap();
    assert_eq!(got.len(), DB);
    let mixed = got.iter().position(|&b| b != 1);
    assert_eq!(
        mixed, None,
        "the restored database is not the snapshot's version"
    );
    assert_eq!(
        fs::read(back.join("sub/still")).unwrap(),
        noise(300 << 10, 1)
    );

    // A second snapshot sees the unchanged files as unchanged (their device is
    // the original's, not the snapshot's).
    let out = env.ok(["sink", "--fs-snapshot", "btrfs", root]);
    assert!(out.contains("(2 unchanged"), "{out}");
    assert_eq!(fs.chute_snapshots(), Vec::<String>::new());
}

#[test]
fn a_killed_sinks_snapshot_is_removed_by_the_next_run_and_sigint_removes_its_own() {
    let env = Env::new("fssnap-kill");
    let fs = Btrfs::new(&env);
    let data = fs.data();
    for i in 0..3 {
        fs::write(data.join(format!("f{i}")), noise(1 << 20, 20 + i)).unwrap();
    }
    let root = data.to_str().unwrap();
    env.ok(["init"]);

    let mut child = stalled_sink(&env, &fs, &[root]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        fs.chute_snapshots().len(),
        1,
        "a kill -9 leaves its snapshot"
    );
    let out = env.run(["sink", "--fs-snapshot", "btrfs", root]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("chute sink: removed snapshot ")
            && err.contains("left by an interrupted sink"),
        "{err}"
    );
    assert_eq!(fs.chute_snapshots(), Vec::<String>::new());

    // SIGINT: the sink removes its snapshot before it exits.
    fs::write(data.join("f0"), noise(1 << 20, 30)).unwrap();
    let child = stalled_sink(&env, &fs, &[root]);
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted; no snapshot committed"), "{err}");
    assert_eq!(fs.chute_snapshots(), Vec::<String>::new(), "{err}");
    let to = env.path("back");
    env.ok(["restore", "--to", to.to_str().unwrap(), "latest"]);
    assert_eq!(
        fs::read(to.join(root.trim_start_matches('/')).join("f1")).unwrap(),
        noise(1 << 20, 21)
    );
}

#[test]
fn roots_on_one_subvolume_share_its_snapshot_and_a_nested_subvolume_is_named() {
    let env = Env::new("fssnap-shared");
    let fs = Btrfs::new(&env);
    let data = fs.data();
    for d in ["x", "y"] {
        fs::create_dir_all(data.join(d)).unwrap();
        fs::write(data.join(d).join("f"), d).unwrap();
    }
    must(
        "btrfs subvolume create",
        Command::new("btrfs")
            .args(["subvolume", "create"])
            .arg(data.join("nested")),
    );
    fs::write(data.join("nested/n"), b"n").unwrap();
    env.ok(["init"]);
    let (x, y) = (data.join("x"), data.join("y"));
    let child = stalled_sink(&env, &fs, &[x.to_str().unwrap(), y.to_str().unwrap()]);
    assert_eq!(fs.chute_snapshots().len(), 1, "one instant for both roots");
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(fs.chute_snapshots(), Vec::<String>::new(), "SIGTERM too");

    let root = data.to_str().unwrap();
    let out = env.run(["sink", "--fs-snapshot", "btrfs", root]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "chute sink: not entering {root}/nested: a nested subvolume, empty in the file system snapshot (name it as a PATH to back it up)"
        )
    );
}

#[test]
fn a_root_elsewhere_is_read_live_with_a_note_or_refused_when_btrfs_is_asked() {
    let env = Env::new("fssnap-ext4");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    let s = src.to_str().unwrap();
    env.ok(["init"]);
    let err = env.fails(1, ["sink", "--fs-snapshot", "btrfs", s]);
    assert_eq!(
        err.trim_end(),
        format!("chute sink: cannot snapshot {s}: not on btrfs; nothing read")
    );
    assert!(env.ok(["list"]).contains("0 snapshots"));
    let out = env.run(["sink", "--fs-snapshot", "auto", s]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "chute sink: note: {s} is read live, without a snapshot: not on btrfs, ZFS or an LVM thin volume"
        )
    );
    let mut quiet = env.cmd(["sink", "--quiet", s]);
    quiet.env("CHUTE_FS_SNAPSHOT", "auto");
    let out = quiet.output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "", "--quiet says no note");
    let err = env.fails(2, ["sink", "--fs-snapshot", "ext4", s]);
    assert!(
        err.contains("--fs-snapshot \"ext4\": expected auto, btrfs, lvm, zfs or off"),
        "{err}"
    );
    assert!(Path::new(s).join("a").exists());
}
