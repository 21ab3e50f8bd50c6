//! Manifest version 3 through the real binary (issue 17 item 2): a snapshot of
//! unchanged files stores almost no manifest (its nodes are its parent's), and
//! forget and prune keep, trim around and repack the nodes kept snapshots reuse
//! from a forgotten one, so every kept snapshot still restores.
use crate::util::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Runs chute and insists on exit status `code`; returns (stdout, stderr).
fn status(env: &Env, code: i32, args: &[&str]) -> (String, String) {
    let out = env.run(args);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "chute {args:?}: expected exit {code}\nstdout:\n{o}\nstderr:\n{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    (o, e)
}

fn with<'a>(args: &[&'a str], remote: &'a str) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["--remote", remote]);
    v
}

/// Snapshot ids, oldest first.
fn ids(env: &Env, remote: &str) -> Vec<String> {
    let json = env.ok(with(&["list", "--json"], remote));
    json.split("\"id\":\"")
        .skip(1)
        .map(|s| s[..8].to_string())
        .collect()
}

/// Committed blob directories (snapshots and packs), by name: oldest first.
fn committed(store: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(store)
        .into_iter()
        .filter(|p| p.file_name() == Some("index.json".as_ref()))
        .map(|p| p.parent().unwrap().to_path_buf())
        .collect();
    v.sort();
    v
}

/// Bytes of a blob's part 0.
fn part0(blob: &Path) -> u64 {
    window_files(blob)
        .iter()
        .map(|w| fs::metadata(w).unwrap().len())
        .sum()
}

fn restore_same(env: &Env, remote: &str, id: &str, src: &Path, tag: &str) {
    let out = env.path(&format!("out-{id}-{tag}"));
    env.ok(with(
        &["restore", id, "--to", out.to_str().unwrap()],
        remote,
    ));
    assert_same_tree(src, &out.join(src.strip_prefix("/").unwrap()));
    fs::remove_dir_all(out).unwrap();
}

/// 12,000 empty files (no chunks: the first blob's part 0 is their manifest,
/// several windows of it) and one big file last in walk order.
fn tree(src: &Path) {
    for d in 0..24 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..500 {
            fs::write(dir.join(format!("an-empty-file-{f:04}")), b"").unwrap();
        }
    }
    fs::write(src.join("zz-big.bin"), noise(3 << 20, 17)).unwrap();
}

// Snapshot 1 holds a big file and the manifest of 12,000 empty ones; the big
// file is deleted and snapshot 2 made, then snapshot 3 of nothing changed: it
// must store almost nothing (its nodes are snapshot 2's, which reused most of
// snapshot 1's). Snapshot 1 is forgotten: its blob's nodes are still used, so
// prune keeps them (and stops while a kept manifest is partly lost); repacked,
// they move to the pack with nothing else of the blob, which goes; snapshots 2
// and 3, and a snapshot 4 whose parent names the deleted blob, restore byte for
// byte and verify with --read-data.
#[test]
fn a_no_change_snapshot_reuses_the_manifest_through_forget_and_prune() {
    let env = Env::new("v3-dedup");
    env.ok(["init"]);
    let store = env.new_store("store");
    let remote = store.display().to_string();
    let src = env.path("src");
    tree(&src);
    let sink = |env: &Env| env.ok(with(&["sink", src.to_str().unwrap()], &remote));
    sink(&env);
    fs::remove_file(src.join("zz-big.bin")).unwrap();
    sink(&env);
    sink(&env);
    let snaps = ids(&env, &remote);
    assert_eq!(snaps.len(), 3);
    let blobs = committed(&store);
    let sizes: Vec<u64> = blobs.iter().map(|b| part0(b)).collect();
    let manifest1 = sizes[0] - (3 << 20) - 46 * 4;
    assert!(manifest1 > 100 << 10, "{sizes:?}");
    // Snapshot 2 changed one directory (and the end of the walk): a few nodes.
    assert!(sizes[1] < manifest1 / 10, "{sizes:?}");
    // Snapshot 3 changed nothing: at most a node or two.
    assert!(sizes[2] < 2048, "{sizes:?}");

    env.ok(with(&["forget", &snaps[0]], &remote));
    let first = blobs[0].clone();
    // Its first window holds only nodes the others reuse: with it gone their
    // manifests are partly lost, so prune deletes nothing.
    let w0 = window_files(&first)
        .into_iter()
        .find(|w| {
            let name = w.file_name().unwrap().to_str().unwrap();
            u64::from_str_radix(name.split('-').next().unwrap(), 16) == Ok(0)
        })
        .unwrap_or_else(|| panic!("no window 0 in {}", listing(&first)));
    let saved = fs::read(&w0).unwrap();
    fs::remove_file(&w0).unwrap();
    let (_, err) = status(&env, 1, &with(&["prune", "--grace", "0"], &remote));
    assert!(err.contains("nothing was deleted"), "{err}");
    assert!(first.exists(), "{}", listing(&store));
    fs::write(&w0, saved).unwrap();

    // Kept, not repacked: the forgotten blob stays and every kept snapshot reads.
    let out = env.ok(with(
        &["prune", "--grace", "0", "--repack-threshold", "100%"],
        &remote,
    ));
    assert!(first.exists(), "{out}\n{}", listing(&store));
    restore_same(&env, &remote, &snaps[2], &src, "kept");
    env.ok(with(&["verify", "--all", "--read-data"], &remote));

    // Repacked: the big file's 3 MiB are unused, the nodes are copied.
    let out = env.ok(with(&["prune", "--grace", "0"], &remote));
    assert!(out.contains("repacked"), "{out}");
    assert!(!first.exists(), "{out}\n{}", listing(&store));
    let packed: u64 = committed(&store)
        .iter()
        .filter(|b| !blobs.contains(b))
        .map(|b| part0(b))
        .sum();
    assert!(
        packed < manifest1 + (64 << 10),
        "{packed} {manifest1}\n{out}"
    );
    for (i, id) in snaps.iter().enumerate().skip(1) {
        restore_same(&env, &remote, id, &src, &format!("packed{i}"));
    }
    env.ok(with(&["verify", "--all", "--read-data"], &remote));

    // A sink whose parent's nodes live in the deleted blob finds them in the
    // pack, and reuses them again (their places as written): restorable too.
    fs::write(src.join("d03/new.txt"), b"snapshot 4\n").unwrap();
    sink(&env);
    let snaps = ids(&env, &remote);
    let last = committed(&store)
        .into_iter()
        .filter(|b| !blobs.contains(b))
        .map(|b| part0(&b))
        .min()
        .unwrap();
    assert!(last < manifest1 / 10, "{last}");
    restore_same(&env, &remote, snaps.last().unwrap(), &src, "after");
    env.ok(with(&["verify", "--all", "--read-data"], &remote));
}
