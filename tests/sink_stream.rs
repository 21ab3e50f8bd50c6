//! The sink streams its manifest (issue 17): entries leave a bounded queue in
//! walk order as the workers hand their chunks back, in any order.
use crate::util::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

fn sink_and_restore(env: &Env, src: &Path, out: &str) {
    env.ok(["sink", "--threads", "4", src.to_str().unwrap()]);
    let out = env.path(out);
    env.ok([
        "restore",
        "latest",
        "--to",
        out.to_str().unwrap(),
        "--threads",
        "4",
    ]);
    assert_same_tree(src, &out.join(src.strip_prefix("/").unwrap()));
}

// Four workers finish a multi-chunk file's chunks out of order and behind the
// small files walked after it, and more entries than the queue holds (4096) make
// the walker wait for them: every entry must still reach the manifest in walk
// order with its chunks in file order, so what comes back is the tree sunk, in
// a full sink and in an incremental one (unchanged entries pushed whole between
// files read again).
#[test]
fn files_finished_out_of_order_restore_byte_identical() {
    let env = Env::new("stream");
    let src = env.path("src");
    for d in 0..6 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..900u64 {
            let len = ((i * 7919 + d) % 3000) as usize;
            fs::write(dir.join(format!("f{i:04}")), noise(len, i * 10 + d)).unwrap();
            if i % 450 == 150 {
                // Several chunks each (the chunker averages 1 MiB).
                let big = noise(((2 + (i + d) % 3) << 20) as usize, 1000 + i + d);
                fs::write(dir.join(format!("f{i:04}-big")), big).unwrap();
            }
        }
        symlink(format!("f{:04}", d), dir.join("link")).unwrap();
    }
    env.ok(["init"]);
    sink_and_restore(&env, &src, "out1");

    // Changed: one small, one big; added: one; the rest unchanged.
    fs::write(src.join("d2/f0007"), b"changed").unwrap();
    fs::write(src.join("d3/f0150-big"), noise(6 << 20, 77)).unwrap();
    fs::write(src.join("d5/new"), noise(4 << 20, 78)).unwrap();
    sink_and_restore(&env, &src, "out2");
}
