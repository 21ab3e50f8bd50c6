//! Issue 20 (item 5): what a file system holds besides names and bytes comes back
//! from a restore: sparse files as sparse files, hard links as hard links, FIFOs.

use crate::util::*;
use std::fs;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};

/// A 64 MiB file with data in three places restores to its bytes and its holes:
/// it takes about what its data takes on disk, not 64 MiB.
#[test]
fn a_sparse_file_restores_sparse() {
    let env = Env::new("fsx_sparse");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let f = fs::File::create(src.join("disk.img")).unwrap();
    let size: u64 = 64 << 20;
    f.set_len(size).unwrap();
    let data = noise(200_000, 7);
    for at in [0, 20 << 20, size - 1000] {
        f.write_all_at(&data[..1000.min(data.len())], at).unwrap();
    }
    f.write_all_at(&data, 40 << 20).unwrap();
    drop(f);
    if fs::metadata(src.join("disk.img")).unwrap().blocks() * 512 > 8 << 20 {
        panic!(
            "the test's file system does not keep holes: {}",
            src.display()
        );
    }
    env.ok(["init"]);
    env.ok(["sink", src.to_str().unwrap()]);
    let to = env.path("out");
    env.ok(["restore", "latest", "--to", to.to_str().unwrap()]);
    let back = to.join(src.strip_prefix("/").unwrap());
    assert_same_tree(&src, &back);
    let m = fs::metadata(back.join("disk.img")).unwrap();
    assert_eq!(m.len(), size);
    let on_disk = m.blocks() * 512;
    assert!(
        on_disk < 4 << 20,
        "the restored 64 MiB file takes {on_disk} bytes on disk"
    );
}

fn mkfifo(p: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", p.display());
}

/// Three names of one file come back as three names of one inode, the file's
/// bytes written once; a restore of one of the names alone gives it its bytes;
/// a FIFO comes back a FIFO with its mode; `ls` shows it as `p`.
#[test]
fn hard_links_and_fifos_come_back() {
    let env = Env::new("fsx_links");
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let data = noise(300_000, 3);
    fs::write(src.join("a"), &data).unwrap();
    fs::hard_link(src.join("a"), src.join("sub/b")).unwrap();
    fs::hard_link(src.join("a"), src.join("z")).unwrap();
    fs::write(src.join("single"), b"one name").unwrap();
    mkfifo(&src.join("pipe"));
    fs::set_permissions(src.join("pipe"), fs::Permissions::from_mode(0o640)).unwrap();
    let s = src.to_str().unwrap();
    env.ok(["init"]);
    let out = env.run(["sink", s]);
    assert!(out.status.success());
    assert!(
        !text(&out.stderr).contains("not backing up"),
        "{}",
        text(&out.stderr)
    );

    let to = env.path("out");
    env.ok(["restore", "latest", "--to", to.to_str().unwrap()]);
    let back = to.join(src.strip_prefix("/").unwrap());
    let ino = |rel: &str| fs::metadata(back.join(rel)).unwrap().ino();
    assert_eq!(ino("a"), ino("sub/b"));
    assert_eq!(ino("a"), ino("z"));
    assert_eq!(fs::metadata(back.join("a")).unwrap().nlink(), 3);
    assert_eq!(fs::metadata(back.join("single")).unwrap().nlink(), 1);
    assert_eq!(fs::read(back.join("z")).unwrap(), data);
    let pipe = fs::symlink_metadata(back.join("pipe")).unwrap();
    assert!(pipe.file_type().is_fifo());
    assert_eq!(pipe.mode() & 0o7777, 0o640);
    assert_same_tree(&src, &back);
    // Again: everything is in place.
    env.ok(["restore", "latest", "--to", to.to_str().unwrap()]);

    // One name alone: the first of its inode in this restore, so its bytes.
    let one = env.path("one");
    let b = src.join("sub/b");
    env.ok([
        "restore",
        "latest",
        b.to_str().unwrap(),
        "--to",
        one.to_str().unwrap(),
    ]);
    let b_back = one.join(b.strip_prefix("/").unwrap());
    assert_eq!(fs::read(&b_back).unwrap(), data);

    let ls = env.ok(["ls", "latest", "--long"]);
    let line = ls.lines().find(|l| l.ends_with("/pipe")).expect(&ls);
    assert!(line.starts_with("prw-r-----"), "{line}");
}
