//! Issue 20 (item 4): chunks are compressed before sealing when that saves an
//! eighth (`--compression auto`, the default), stored as they are with
//! `--compression off`, and restore is byte-identical either way, old
//! (uncompressed) snapshots included, over the real binary.

use crate::util::*;
use std::fs;
use std::path::Path;

/// `n` bytes of syslog-like lines: LZ4 makes them several times smaller.
fn log_text(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 100);
    let mut i = 0u64;
    while out.len() < n {
        let line = format!(
            "2026-12-02T18:{:02}:{:02}.{:06}+00:00 pi-kitchen sshd[{}]: Accepted publickey for pi from 192.168.1.{} port {} ssh2\n",
            i / 60 % 60,
            i % 60,
            i * 7919 % 1_000_000,
            800 + i % 97,
            i % 251,
            40_000 + i * 13 % 20_000
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

/// A tree of 3 MiB of logs and 1 MiB of noise; returns the data's bytes.
fn tree(src: &Path) -> u64 {
    fs::create_dir_all(src.join("log")).unwrap();
    fs::write(src.join("log/syslog"), log_text(3 << 20)).unwrap();
    fs::write(src.join("photo.jpg"), noise(1 << 20, 20)).unwrap();
    4 << 20
}

fn restore_same(env: &Env, snapshot: &str, src: &Path, out: &str) {
    let out = env.path(out);
    env.ok([
        "restore".as_ref(),
        snapshot.as_ref(),
        "--to".as_ref(),
        out.as_os_str(),
        src.as_os_str(),
    ]);
    assert_same_tree(src, &out.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn compressible_data_is_stored_smaller_and_restores_whole() {
    let env = Env::new("compress-auto");
    env.ok(["init"]);
    let src = env.path("src");
    let data = tree(&src);
    env.ok(["sink", src.to_str().unwrap()]);
    let stored = bytes_under(&env.store());
    // The logs shrink several times, the noise not at all: well under 3/4.
    assert!(
        stored < data * 3 / 4 && stored > 1 << 20,
        "{stored} bytes stored for {data}: {}",
        listing(&env.store())
    );
    restore_same(&env, "latest", &src, "out");
    env.ok(["verify", "--read-data"]);
    // stats: the content's bytes, and the fewer bytes the store holds.
    let s = env.ok(["stats", "--json"]);
    assert!(s.contains(&format!("\"unique_bytes\":{data}")), "{s}");
}

#[test]
fn compression_off_stores_about_the_data_and_old_snapshots_restore() {
    let mut env = Env::new("compress-off");
    env.ok(["init"]);
    let src = env.path("src");
    let data = tree(&src);
    // Off: the format of chutes before compression (type 1 segments, kind 1
    // chunks, pinned by the unchanged vectors), so this is an old snapshot.
    env.ok(["sink", "--compression", "off", src.to_str().unwrap()]);
    let stored = bytes_under(&env.store());
    assert!(
        stored >= data && stored < data + data / 20,
        "{stored} bytes stored for {data}"
    );
    let old = env.ok(["list"]);
    // The table's first row, after the header line: the only snapshot.
    let old = old
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    // A compressing sink on top: unchanged files keep their old chunks, a new
    // file's are compressed; both snapshots restore.
    fs::write(src.join("log/messages"), log_text(1 << 20)).unwrap();
    env.set("CHUTE_COMPRESSION", "auto");
    env.ok(["sink", src.to_str().unwrap()]);
    let grown = bytes_under(&env.store()) - stored;
    assert!(grown < (1 << 20) / 2, "the new log took {grown} bytes");
    restore_same(&env, "latest", &src, "new");
    // The old snapshot, restored after the compressing sink shared its chunks:
    // its two files, byte for byte.
    let out = env.path("old");
    env.ok(["restore", old, "--to", out.to_str().unwrap()]);
    let back = out.join(src.strip_prefix("/").unwrap());
    assert!(!back.join("log/messages").exists());
    for f in ["log/syslog", "photo.jpg"] {
        assert!(
            fs::read(back.join(f)).unwrap() == fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    env.ok(["verify", "--read-data"]);
}

#[test]
fn a_bad_compression_setting_is_a_usage_error() {
    let mut env = Env::new("compress-bad");
    env.ok(["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let err = env.fails(2, ["sink", "--compression", "zstd", src.to_str().unwrap()]);
    assert!(
        err.contains("--compression \"zstd\": expected off or auto"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    env.set("CHUTE_COMPRESSION", "on");
    let err = env.fails(2, ["sink", src.to_str().unwrap()]);
    assert!(err.contains("CHUTE_COMPRESSION \"on\""), "{err}");
}

// Prune checked each chunk it repacks by opening it as kind 1, so a blob
// holding compressed chunks (kind 7) was called damaged and never repacked.
#[test]
fn prune_repacks_compressed_chunks() {
    let env = Env::new("compress-prune");
    env.ok(["init"]);
    let src = env.path("src");
    tree(&src);
    env.ok(["sink", src.to_str().unwrap()]);
    // The photo goes: the first blob is mostly unused once its snapshot is
    // forgotten, and its compressed log chunks are still in use.
    fs::remove_file(src.join("photo.jpg")).unwrap();
    env.ok(["sink", src.to_str().unwrap()]);
    env.ok(["forget", "--keep-last", "1"]);
    let out = env.ok(["prune", "--grace", "0"]);
    assert!(out.contains("repacked") || out.contains("deleted"), "{out}");
    restore_same(&env, "latest", &src, "out");
    env.ok(["verify", "--all", "--read-data"]);
}
