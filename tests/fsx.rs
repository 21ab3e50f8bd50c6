//! Issue 20 (item 5): what a file system holds besides names and bytes comes back
//! from a restore: sparse files as sparse files.

use crate::util::*;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};

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
