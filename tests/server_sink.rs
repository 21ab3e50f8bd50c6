//! sink, list and restore against a real `chute serve` over HTTP: round trips, what
//! the server gets to see, several nodes at once, and a server that dies mid-sink.
use crate::util::*;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `chute ARGS... --remote URL` in `env` as node `node`.
fn chute(env: &Env, node: &str, args: &[&str], remote: &str) -> Command {
    let mut c = env.cmd(args);
    c.arg("--remote").arg(remote).env("CHUTE_NODE", node);
    c
}

/// Where `restore --to out` puts a tree that was backed up from `src`.
fn restored(out: &Path, src: &Path) -> PathBuf {
    out.join(src.strip_prefix("/").unwrap())
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// Text nobody would write by chance, `len` bytes of numbered lines.
fn canary_text(tag: &str, len: usize) -> Vec<u8> {
    let mut s = String::new();
    let mut n = 0;
    while s.len() < len {
        s.push_str(&format!(
            "{tag} line {n:06}: the quick brown quokka files its tax return in triplicate\n"
        ));
        n += 1;
    }
    s.truncate(len);
    s.into_bytes()
}

#[test]
fn round_trip_over_http_and_the_server_learns_nothing() {
    let env = Env::new("http-zk");
    env.ok(["init"]);
    let store = env.path("server-store");
    let srv = env.serve(&store, &[]);
    let url = srv.url();

    // Distinctive names and contents, so any leak is findable.
    let src = env.path("src-marmoset-root");
    let names = [
        "src-marmoset-root",
        "quokka-secret-ledger.txt",
        "nested-wombat-dir",
        "deeper-numbat-dir",
        "pangolin-diary.md",
        "axolotl-noise.bin",
        "empty-okapi.txt",
        "capybara-private.key",
        "link-narwhal",
    ];
    let mut plain: Vec<Vec<u8>> = vec![
        canary_text("LEDGER", 200_000),
        canary_text("DIARY", 70_000),
        noise(700_000, 42),
        b"-----BEGIN CAPYBARA PRIVATE KEY----- not really, but unmistakable\n".to_vec(),
    ];
    write(&src.join("quokka-secret-ledger.txt"), &plain[0]);
    let deeper = src.join("nested-wombat-dir/deeper-numbat-dir");
    write(&deeper.join("pangolin-diary.md"), &plain[1]);
    write(&src.join("nested-wombat-dir/axolotl-noise.bin"), &plain[2]);
    write(&src.join("nested-wombat-dir/empty-okapi.txt"), b"");
    let key = src.join("capybara-private.key");
    write(&key, &plain[3]);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("quokka-secret-ledger.txt", src.join("link-narwhal")).unwrap();
    fs::set_permissions(&deeper, fs::Permissions::from_mode(0o750)).unwrap();

    let out = ok_cmd(chute(&env, "node1", &["sink", src.to_str().unwrap()], &url));
    assert!(out.contains("snapshot "), "{out}");
    let out = ok_cmd(chute(&env, "node1", &["list"], &url));
    assert!(out.contains("1 snapshot"), "{out}");
    let dest = env.path("out");
    let restore = ["restore", "latest", "--to", dest.to_str().unwrap()];
    ok_cmd(chute(&env, "node1", &restore, &url));
    assert_same_tree(&src, &restored(&dest, &src));

    // Zero knowledge: no file under the store holds a source name, or any 32-byte run
    // of any source file's plaintext (window contents, indexes, names alike).
    plain.push(
        fs::read_link(src.join("link-narwhal"))
            .unwrap()
            .into_os_string()
            .into_encoded_bytes(),
    );
    let runs: HashSet<&[u8]> = plain.iter().flat_map(|p| p.windows(32)).collect();
    let files: Vec<PathBuf> = walk(&store).into_iter().filter(|p| p.is_file()).collect();
    assert!(files.len() > 2, "{}", listing(&store));
    let mut bytes = 0;
    for f in &files {
        let rel = f
            .strip_prefix(&store)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let data = fs::read(f).unwrap();
        bytes += data.len();
        for name in names {
            assert!(!rel.contains(name), "store path {rel} names {name}");
            assert!(
                !data.windows(name.len()).any(|w| w == name.as_bytes()),
                "store file {rel} holds the name {name}"
            );
        }
        if let Some(i) = data.windows(32).position(|w| runs.contains(w)) {
            panic!(
                "store file {rel} holds plaintext at byte {i}: {:?}",
                String::from_utf8_lossy(&data[i..i + 32])
            );
        }
    }
    // The store did receive the data (sealed), so the scan above meant something:
    // at least the noise, which does not compress (the texts do).
    assert!(bytes > 700_000, "store holds only {bytes} bytes");
}

#[test]
fn several_nodes_sink_to_one_server_at_once() {
    let server_env = Env::new("http-many-srv");
    let store = server_env.path("store");
    let srv = server_env.serve(&store, &["--threads", "2"]);
    let url = srv.url();
    let nodes: Vec<(Env, String, PathBuf)> = (0..3)
        .map(|i| {
            let env = Env::new(&format!("http-many-{i}"));
            env.ok(["init"]);
            let src = env.path("src");
            // One file spans two 4 MiB windows; small files share a window.
            write(&src.join("big.bin"), &noise(5 << 20 | 12345, 100 + i));
            for j in 0..20 {
                let body = format!("node {i} file {j}\n").repeat(j as usize * 50 + 1);
                write(&src.join(format!("d{}/f{j}.txt", j % 3)), body.as_bytes());
            }
            (env, format!("pi-{i}"), src)
        })
        .collect();
    let children: Vec<_> = nodes
        .iter()
        .map(|(env, node, src)| {
            let mut c = chute(
                env,
                node,
                &["sink", "--threads", "2", src.to_str().unwrap()],
                &url,
            );
            let child = c
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (c, child)
        })
        .collect();
    for (c, child) in children {
        check_ok(&c, &child.wait_with_output().unwrap());
    }
    for (env, node, src) in &nodes {
        let out = ok_cmd(chute(env, node, &["list"], &url));
        assert!(out.contains("\n1 snapshot\n"), "{node}: {out}");
        // The server holds exactly one committed blob for each node.
        let (status, _, body) = raw_http(
            &srv.addr,
            &request(
                "GET",
                &format!("/chute/blob/test.example/{node}/"),
                &[],
                b"",
            ),
        );
        assert_eq!(status, 200);
        let list: Vec<String> = miniserde::json::from_str(&text(&body)).unwrap();
        assert_eq!(list.len(), 1, "{node}: {list:?}");
        let dest = env.path("out");
        let restore = ["restore", "latest", "--to", dest.to_str().unwrap()];
        ok_cmd(chute(env, node, &restore, &url));
        assert_same_tree(src, &restored(&dest, src));
    }
}

#[test]
fn a_server_killed_mid_sink_leaves_no_snapshot_and_a_rerun_succeeds() {
    let env = Env::new("http-kill");
    env.ok(["init"]);
    let store = env.path("store");
    let src = env.path("src");
    // 200 MiB in four files: long enough that the kill lands mid-transfer.
    for i in 0..4u64 {
        write(
            &src.join(format!("part{i}.bin")),
            &noise(50 << 20, 1000 + i),
        );
    }
    write(&src.join("small.txt"), b"small\n");
    let mut srv = env.serve(&store, &[]);
    let url = srv.url();
    let mut c = chute(&env, "node1", &["sink", src.to_str().unwrap()], &url);
    let mut sink = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let started = Instant::now();
    while window_files(&store).len() < 3 {
        if let Some(status) = sink.try_wait().unwrap() {
            panic!("the sink ended ({status}) before the server could be killed");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no windows arrived:\n{}",
            listing(&store)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    srv.child.kill().unwrap(); // SIGKILL: no clean shutdown, no flush
    srv.child.wait().unwrap();
    let arrived = window_files(&store).len();

    let out = sink.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "sink after the kill:\n{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    // Besides the --open server's warning (issue 14), printed once, and the
    // refused connection's hint (issue 15).
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| {
            !l.trim().is_empty() && !l.contains("is an --open server") && !l.starts_with("hint: ")
        })
        .collect();
    assert_eq!(lines.len(), 1, "expected a one-line error:\n{err}");
    assert!(lines[0].starts_with("chute sink: "), "{err}");
    assert!(
        arrived < 50,
        "all {arrived} windows arrived before the kill"
    );

    // A restarted server on the same store shows no snapshot: the blob never committed.
    let srv = env.serve(&store, &[]);
    let url = srv.url();
    let out = ok_cmd(chute(&env, "node1", &["list"], &url));
    assert!(out.contains("\n0 snapshots\n"), "{out}");
    let dest = env.path("out");
    let restore = ["restore", "latest", "--to", dest.to_str().unwrap()];
    let mut c = chute(&env, "node1", &restore, &url);
    let out = c.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "restore with no snapshot: {out:?}"
    );
    assert!(
        !dest.exists(),
        "restore of nothing created {}",
        dest.display()
    );

    // Running the sink again completes, and the snapshot restores byte for byte.
    ok_cmd(chute(&env, "node1", &["sink", src.to_str().unwrap()], &url));
    let out = ok_cmd(chute(&env, "node1", &["list"], &url));
    assert!(out.contains("\n1 snapshot\n"), "{out}");
    ok_cmd(chute(&env, "node1", &restore, &url));
    assert_same_tree(&src, &restored(&dest, &src));
}

/// The static ARM binary cannot load NSS plugins; `localhost` and other /etc/hosts
/// names must still resolve (CI runs this under qemu against the ARM build).
#[test]
fn a_remote_named_by_host_name_resolves() {
    let env = Env::new("hostname");
    env.ok(["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"by name").unwrap();
    let server = env.serve(&env.path("store"), &[]);
    let port = server.addr.rsplit(':').next().unwrap();
    let url = format!("http://localhost:{port}");
    env.ok(["sink", "--remote", &url, src.to_str().unwrap()]);
    assert!(env.ok(["list", "--remote", &url]).contains("1 snapshot"));
}

// Issue 17.4: restore planned its ranged reads in manifest order while the sink's
// workers append chunks to part 0 in the order they finish, so neighbours in the
// blob were fetched apart: a restore of 200,000 small files through serve made
// 27,736 ranged GETs where ~170 would do. Sorted by offset, a run of small files
// costs about one GET per 2 MiB of sealed bytes.
#[test]
fn a_restore_of_many_small_files_reads_each_part_of_the_blob_once() {
    let env = Env::new("http-gets");
    env.ok(["init"]);
    let store = env.path("server-store");
    // Per-request lines, which the count below reads.
    let srv = env.serve(&store, &["--log-requests"]);
    let url = srv.url();
    let src = env.path("src");
    let mut total = 0;
    for i in 0..3000u64 {
        let len = 1000 + (i * 7919 % 3000) as usize;
        total += len;
        write(&src.join(format!("d{}/f{i}", i % 7)), &noise(len, i));
    }
    let sink = ["sink", "--threads", "8", src.to_str().unwrap()];
    ok_cmd(chute(&env, "node1", &sink, &url));
    let from = srv.log.lock().unwrap().len();
    let dest = env.path("out");
    let restore = ["restore", "latest", "--to", dest.to_str().unwrap()];
    ok_cmd(chute(&env, "node1", &restore, &url));
    assert_same_tree(&src, &restored(&dest, &src));
    let log = srv.log.lock().unwrap()[from..].to_string();
    let gets = log.lines().filter(|l| l.contains("/0\" 206")).count();
    // ~6 MB of chunks: 3 reads of 2 MiB, and the manifest's. A version 3
    // manifest's table node is stored after its segments and read before them,
    // so each table costs two reads per pass (restore reads the manifest twice).
    let keys = chute::crypto::Keys::load(&env.home().join(".config/chute/key")).unwrap();
    let index = walk(&store)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "index.json"))
        .unwrap();
    let index = chute::format::Index::parse(&fs::read(index).unwrap()).unwrap();
    let tables = chute::format::open_header(&keys, &index)
        .unwrap()
        .nodes
        .len();
    let most = total / (2 << 20) + 2 + 4 * tables;
    assert!(
        gets <= most,
        "{gets} ranged GETs for {total} bytes of small files (at most {most}):\n{}",
        log.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}
