//! Small files packed into shared chunks (manifest version 3, see
//! src/sink/packer.rs): they sink into a few packs, restore byte for byte, are
//! found in place by their tags, verify reads each pack once and names every
//! file of a damaged one, and an unchanged tree packs again into the same chunks.
use crate::util::*;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where a source path lands under `--to out`.
fn landed(out: &Path, src: &Path) -> PathBuf {
    out.join(src.strip_prefix("/").unwrap())
}

/// `n` files of 1–3 KiB in directories of 100, and, with `large`, a few files
/// around and above the packing threshold (256 KiB) and empty ones; returns the
/// bytes written.
fn tree(src: &Path, n: usize, large: bool) -> u64 {
    let mut bytes = 0;
    for i in 0..n {
        let dir = src.join(format!("d{:03}", i / 100));
        fs::create_dir_all(&dir).unwrap();
        let len = 1024 + (i * 7919) % 2048;
        let f = dir.join(format!("f{i:05}.txt"));
        fs::write(&f, noise(len, i as u64 + 1)).unwrap();
        if i % 13 == 0 {
            fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        }
        bytes += len as u64;
    }
    if large {
        let big = src.join("big");
        fs::create_dir_all(&big).unwrap();
        for (k, len) in [(256 << 10) - 1, 256 << 10, 300_000, 3 << 20]
            .into_iter()
            .enumerate()
        {
            fs::write(big.join(format!("b{k}")), noise(len, 1000 + k as u64)).unwrap();
            bytes += len as u64;
        }
        fs::write(big.join("empty"), b"").unwrap();
    }
    bytes
}

/// The number of new chunks a sink's report says it stored.
fn new_chunks(out: &str) -> u64 {
    let after = out
        .split("new data ")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    let n = after
        .split(" in ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    n.parse().unwrap_or_else(|_| panic!("{out}"))
}

/// Inode and mtime of every file under `dir`.
fn stamps(dir: &Path) -> HashMap<PathBuf, (u64, i64, i64)> {
    walk(dir)
        .into_iter()
        .filter_map(|p| {
            let m = fs::symlink_metadata(&p).ok()?;
            m.is_file()
                .then(|| (p, (m.ino(), m.mtime(), m.mtime_nsec())))
        })
        .collect()
}

#[test]
fn small_files_pack_restore_whole_and_are_found_in_place() {
    let env = Env::new("pack-roundtrip");
    env.ok(["init"]);
    let src = env.path("src");
    tree(&src, 3000, true);
    let out = env.ok(["sink", src.to_str().unwrap()]);
    // 3,000 small files in about 6 MiB: a few dozen packs, not 3,000 chunks.
    let chunks = new_chunks(&out);
    assert!(chunks < 100, "{chunks} chunks for 3,000 small files: {out}");

    let back = env.path("back");
    let out = env.ok(["restore", "latest", "--to", back.to_str().unwrap()]);
    assert!(out.contains("3005 files"), "{out}");
    let restored = landed(&back, &src);
    assert_same_tree(&src, &restored);

    // Again: every file is found in place (tags of packed files, chunk ids of
    // the others) and none is rewritten.
    let before = stamps(&restored);
    let out = env.ok(["restore", "latest", "--to", back.to_str().unwrap()]);
    assert!(out.contains("3005 files already restored"), "{out}");
    assert_eq!(stamps(&restored), before, "a file in place was rewritten");

    // A packed file changed in place, same size and mtime: its tag tells.
    let f = src.join("d007/f00700.txt");
    let g = landed(&back, &f);
    let mut bytes = fs::read(&g).unwrap();
    bytes[10] ^= 1;
    let mtime = fs::metadata(&g).unwrap().modified().unwrap();
    fs::write(&g, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&g)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let err = env.fails(1, ["restore", "latest", "--to", back.to_str().unwrap()]);
    assert!(err.contains("f00700.txt"), "{err}");
    env.ok([
        "restore",
        "latest",
        "--to",
        back.to_str().unwrap(),
        "--force",
    ]);
    assert_same_tree(&src, &restored);

    let v = env.ok(["verify", "--read-data"]);
    assert!(v.contains("all intact"), "{v}");
}

#[test]
fn a_damaged_pack_names_every_file_in_it() {
    let env = Env::new("pack-damage");
    env.ok(["init"]);
    let src = env.path("src");
    tree(&src, 400, false);
    // One worker: part 0 starts with the first pack (the first files walked).
    env.ok(["sink", "--threads", "1", src.to_str().unwrap()]);
    let store = env.store();
    let first = window_files(&store)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("0000"))
        .unwrap_or_else(|| panic!("{}", listing(&store)));
    let mut data = fs::read(&first).unwrap();
    data[100] ^= 0x20;
    fs::write(&first, data).unwrap();

    let out = env.run(["verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = text(&out.stdout);
    let named = out.matches("damaged file:").count();
    // A pack holds at least 256 KiB of 1–3 KiB files.
    assert!(named >= 80, "{named} files named: {out}");
    assert!(out.contains("d000/f00000.txt"), "{out}");
    assert!(!out.contains("f00399.txt"), "a file of another pack: {out}");
}

#[test]
fn an_unchanged_tree_packs_into_the_same_chunks_without_the_cache() {
    let env = Env::new("pack-dedup");
    env.ok(["init"]);
    let src = env.path("src");
    tree(&src, 2000, false);
    let first = env.ok(["sink", src.to_str().unwrap()]);
    assert!(new_chunks(&first) > 5, "{first}");
    // The cache lost, and every file touched (read again, not taken from the
    // parent): the packs come out the same and are found in the rebuilt index.
    fs::remove_dir_all(env.home().join(".cache/chute")).unwrap();
    let later = SystemTime::now() + Duration::from_secs(10);
    for p in walk(&src) {
        if p.is_file() {
            let f = fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(later).unwrap();
        }
    }
    let second = env.ok(["sink", src.to_str().unwrap()]);
    assert!(second.contains("(0 unchanged"), "{second}");
    assert_eq!(new_chunks(&second), 0, "{second}");
}
