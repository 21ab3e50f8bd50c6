//! `--limit-upload` and `--limit-download` (and CHUTE_LIMIT_*): the rate a real
//! sink sends to `chute serve` and a restore reads back, over loopback and from a
//! store directory, measured against the limit; and bad rates refused.
use crate::util::*;
use std::fs;
use std::path::Path;
use std::time::Instant;

const MIB: f64 = (1 << 20) as f64;

/// Runs `chute ARGS` in `env` (with `vars`), insisting it succeeds; the seconds it took.
fn timed(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> f64 {
    let mut c = env.cmd(args);
    c.envs(vars.iter().copied());
    let t = Instant::now();
    ok_cmd(c);
    t.elapsed().as_secs_f64()
}

/// Asserts `bytes` in `secs` is within 20% of `limit` bytes a second (its lower
/// bound widened under an emulator, whose CPU time could slow the command apart
/// from the limit; the upper bound is what the limit promises).
fn within_20_percent(what: &str, bytes: u64, secs: f64, limit: f64) {
    let rate = bytes as f64 / secs;
    eprintln!(
        "{what}: {:.2} MiB in {secs:.2} s = {:.3} MiB/s (limit {:.1} MiB/s)",
        bytes as f64 / MIB,
        rate / MIB,
        limit / MIB
    );
    assert!(
        rate <= limit * 1.2 && rate >= limit * 0.8 / f64::from(slack()),
        "{what}: {:.3} MiB/s against a limit of {:.1} MiB/s",
        rate / MIB,
        limit / MIB
    );
}

/// Restores the latest snapshot of `src` from `remote` into `out` with
/// `--limit-download 4M`, checks the tree, and that `bytes` came at the limit.
fn restore_at_4m(env: &Env, remote: &str, out: &str, src: &str, bytes: u64, what: &str) {
    let out = env.path(out);
    let to = out.to_str().unwrap();
    let args = [
        "restore",
        "latest",
        "--remote",
        remote,
        "--to",
        to,
        "--limit-download",
        "4M",
    ];
    let secs = timed(env, &args, &[]);
    assert_same_tree(Path::new(src), &out.join(&src[1..]));
    within_20_percent(
        &format!("{what} --limit-download 4M"),
        bytes,
        secs,
        4.0 * MIB,
    );
}

fn source(env: &Env, mib: usize) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // Incompressible, in a few files, so chunks are whole windows' worth.
    for i in 0..4 {
        fs::write(src.join(format!("f{i}")), noise(mib << 18, i as u64 + 1)).unwrap();
    }
    src
}

/// The measurement: a 20 MiB sink through `chute serve` with `--limit-upload
/// 2M` sends at 2 MiB/s within 20% (about 10 s; without the limit it takes under 1 s
/// here), with every upload thread sharing the one budget (-j 4).
#[test]
fn a_sink_through_serve_sends_at_the_upload_limit() {
    let env = Env::new("limit-up");
    env.ok(["init"]);
    let src = source(&env, 20);
    let store = env.path("server-store");
    let srv = env.serve(&store, &[]);
    let url = srv.url();
    let before = bytes_under(&store);
    let src = src.to_str().unwrap();
    let args = [
        "sink",
        "--remote",
        &url,
        "-j",
        "4",
        "--limit-upload",
        "2M",
        src,
    ];
    let secs = timed(&env, &args, &[]);
    // What the server keeps is what the sink sent: sealed windows and indexes.
    let sent = bytes_under(&store) - before;
    assert!(sent >= 20 << 20, "{sent} bytes stored");
    within_20_percent("sink --limit-upload 2M", sent, secs, 2.0 * MIB);
}

/// `--limit-download 4M` on a restore over HTTP, and CHUTE_LIMIT_DOWNLOAD=4M on one
/// from a store directory (which the limits cover too): 8 MiB back at 4 MiB/s
/// within 20% each (about 2 s).
#[test]
fn a_restore_reads_at_the_download_limit_from_a_peer_and_a_directory() {
    let env = Env::new("limit-down");
    env.ok(["init"]);
    let src = source(&env, 8);
    let src = src.to_str().unwrap();
    env.ok(["sink", src]);
    let local = env.store();
    let stored = bytes_under(&local);
    let secs = timed(
        &env,
        &[
            "restore",
            "latest",
            "--to",
            env.path("out-dir").to_str().unwrap(),
        ],
        &[("CHUTE_LIMIT_DOWNLOAD", "4M")],
    );
    assert_same_tree(Path::new(src), &env.path("out-dir").join(&src[1..]));
    within_20_percent(
        "restore from a directory, CHUTE_LIMIT_DOWNLOAD=4M",
        stored,
        secs,
        4.0 * MIB,
    );

    let store = env.path("server-store");
    let srv = env.serve(&store, &[]);
    let url = srv.url();
    env.ok(["sink", "--remote", &url, src]);
    let stored = bytes_under(&store);
    restore_at_4m(&env, &url, "out-http", src, stored, "restore over HTTP");
}

/// A rate that is not a size, or 0, is a usage error naming the option, on one
/// line, before anything is opened.
#[test]
fn bad_rates_are_refused() {
    let env = Env::new("limit-bad");
    env.ok(["init"]);
    for (args, want) in [
        (
            &["sink", "--limit-upload", "abc", "/"][..],
            "--limit-upload: \"abc\" is not a size",
        ),
        (
            &["sink", "--limit-upload", "0", "/"][..],
            "--limit-upload \"0\": a limit must be above 0",
        ),
        (
            &["sink", "--limit-upload", "15K", "/"][..],
            "--limit-upload \"15K\": at least 32K (a peer drops",
        ),
        (
            &["restore", "latest", "--limit-download", "2Q"][..],
            "--limit-download: \"2Q\" is not a size",
        ),
        (
            &["prune", "--limit-download", "-1"][..],
            "--limit-download: \"-1\" is not a size",
        ),
    ] {
        let err = env.fails(2, args);
        assert!(
            err.starts_with(&format!("chute {}: {want}", args[0])),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let mut c = env.cmd(["verify"]);
    c.env("CHUTE_LIMIT_DOWNLOAD", "0");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .starts_with("chute verify: --limit-download \"0\": a limit must be above 0"),
        "{}",
        text(&out.stderr)
    );
}

/// The S3 client is paced too: 6 MiB into `rclone serve s3` with `--limit-upload
/// 2M` and back with `--limit-download 4M`, each within 20% of its limit (the
/// file data counted: what crosses the wire is a little more).
#[test]
fn a_bucket_is_written_and_read_at_the_limits() {
    let rclone = crate::util::s3::Rclone::start();
    let mut env = Env::new("limit-s3");
    env.set("AWS_ACCESS_KEY_ID", crate::util::s3::KEY_ID);
    env.set("AWS_SECRET_ACCESS_KEY", crate::util::s3::SECRET);
    env.set("AWS_DEFAULT_REGION", "us-east-1");
    let spec = rclone.spec("limits");
    env.ok(["init", "--remote", &spec]);
    let src = source(&env, 6);
    let src = src.to_str().unwrap();
    let args = ["sink", "--remote", &spec, "--limit-upload", "2M", src];
    let secs = timed(&env, &args, &[]);
    within_20_percent("sink to S3 --limit-upload 2M", 6 << 20, secs, 2.0 * MIB);
    restore_at_4m(&env, &spec, "out", src, 6 << 20, "restore from S3");
}
