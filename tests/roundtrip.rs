//! The core issue's user-level tests: sink, list and restore on a local store.
mod util;
use util::*;

#[test]
fn transfer_blob_1_a_file_becomes_a_blob_and_comes_back() {
    let env = Env::new("blob1");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file.bin"), noise(3 << 20, 1)).unwrap();
    env.ok(["init"]);
    env.ok(["sink".as_ref(), src.as_os_str()]);
    let out = env.path("out");
    env.ok(["restore".as_ref(), "latest".as_ref(), "--to".as_ref(), out.as_os_str()]);
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
}
