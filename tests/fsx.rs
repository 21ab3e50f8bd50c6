//! Issue 20 (item 5): what a file system holds besides names and bytes comes back
//! from a restore: sparse files as sparse files, hard links as hard links, FIFOs,
//! extended attributes and POSIX ACLs.

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

fn set_xattr(p: &std::path::Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated; `value` is readable for its length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn get_xattr(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated; `buf` is writable for its length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

/// A POSIX access ACL as the kernel keeps it in `system.posix_acl_access`:
/// owner rw-, user 1234 r--, group r--, mask r--, other ---.
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1234),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// User extended attributes of a file and a directory and a file's POSIX ACL
/// come back with a restore.
#[test]
fn extended_attributes_and_acls_come_back() {
    let env = Env::new("fsx_xattr");
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"attributes").unwrap();
    fs::write(src.join("plain"), b"none").unwrap();
    fs::set_permissions(src.join("d/f"), fs::Permissions::from_mode(0o640)).unwrap();
    set_xattr(&src.join("d/f"), "user.comment", b"kept");
    set_xattr(&src.join("d/f"), "system.posix_acl_access", &acl());
    set_xattr(&src.join("d"), "user.empty", b"");
    env.ok(["init"]);
    env.ok(["sink", src.to_str().unwrap()]);
    let to = env.path("out");
    env.ok(["restore", "latest", "--to", to.to_str().unwrap()]);
    let back = to.join(src.strip_prefix("/").unwrap());
    assert_same_tree(&src, &back);
    assert_eq!(
        get_xattr(&back.join("d/f"), "user.comment").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        get_xattr(&back.join("d/f"), "system.posix_acl_access"),
        get_xattr(&src.join("d/f"), "system.posix_acl_access")
    );
    assert!(get_xattr(&back.join("d/f"), "system.posix_acl_access").is_some());
    assert_eq!(
        get_xattr(&back.join("d"), "user.empty").as_deref(),
        Some(&b""[..])
    );
    assert_eq!(get_xattr(&back.join("plain"), "user.comment"), None);

    // An attribute changed on an unchanged file: the next snapshot keeps the
    // new value and diff names it.
    set_xattr(&src.join("d/f"), "user.comment", b"changed");
    env.ok(["sink", src.to_str().unwrap()]);
    let out = env.ok(["diff", "--", &first_id(&env), "latest"]);
    let f = format!("{}/d/f (xattrs)", src.display());
    assert!(
        out.lines().any(|l| l.starts_with('U') && l.ends_with(&f)),
        "{out}"
    );
    let again = env.path("again");
    env.ok(["restore", "latest", "--to", again.to_str().unwrap()]);
    let back = again.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        get_xattr(&back.join("d/f"), "user.comment").as_deref(),
        Some(&b"changed"[..])
    );
}

/// The id of this node's oldest snapshot.
fn first_id(env: &Env) -> String {
    let list = env.ok(["list"]);
    let row = list.lines().nth(1).expect("a snapshot row");
    row.split_whitespace().next().unwrap().to_string()
}
