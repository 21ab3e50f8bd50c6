//! Files that change while a sink reads them: a chunk's id and its sealed content
//! always come from one copy, each file is one version or reported, and a store
//! that already holds a chunk whose content is not the one its id names (written
//! by an older chute) is found by verify and restore and healed by the next sink.
use crate::util::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Where a source path lands under `--to out`.
fn landed(out: &Path, src: &Path) -> PathBuf {
    out.join(src.strip_prefix("/").unwrap())
}

fn restore(env: &Env, snapshot: &str, out: &Path) {
    env.ok(["restore", snapshot, "--to", out.to_str().unwrap()]);
}

// The race of issue 22: a worker computed a chunk's id from the mapped source,
// then sealed the mapped bytes again after another process had rewritten them.
// The chunk carried the id of one version and the content of another, and every
// later sink that met the first version deduplicated against it: an untouched
// file restored with the other version's bytes, and verify said "all intact".
// The failpoint rewrites the file exactly between the id and the seal.
#[test]
fn a_file_rewritten_between_id_and_seal_never_gives_another_file_its_bytes() {
    let env = Env::new("race");
    env.ok(["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let a = noise(8 << 20, 22);
    let b: Vec<u8> = a.iter().map(|x| !x).collect();
    let f = src.join("db");
    fs::write(&f, &a).unwrap();
    let out = env
        .cmd(["sink", "--threads", "2", src.to_str().unwrap()])
        .env("CHUTE_TEST_REWRITE_SOURCE", &f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read(&f).unwrap(), b, "the failpoint did not rewrite");
    let back = env.path("back1");
    restore(&env, "latest", &back);
    let got = fs::read(landed(&back, &f)).unwrap();
    assert!(
        got == a || got == b,
        "the rewritten file restored as neither version"
    );

    // Untouched files with each version's bytes, backed up later: they must come
    // back exactly, whatever the chunk index offers them.
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("a"), &a).unwrap();
    fs::write(other.join("b"), &b).unwrap();
    env.ok(["sink", other.to_str().unwrap()]);
    let back = env.path("back2");
    restore(&env, "latest", &back);
    assert!(fs::read(landed(&back, &other.join("a"))).unwrap() == a);
    assert!(fs::read(landed(&back, &other.join("b"))).unwrap() == b);
    let v = env.ok(["verify", "--all", "--read-data"]);
    assert!(v.contains("all intact"), "{v}");
}

#[test]
fn a_file_changed_during_one_read_is_read_again_and_kept_whole() {
    let env = Env::new("reread");
    env.ok(["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("log");
    let a = noise(3 << 20, 5);
    fs::write(&f, &a).unwrap();
    let out = env
        .cmd(["sink", src.to_str().unwrap()])
        .env(
            "CHUTE_TEST_CHANGE_DURING_READ",
            format!("1:{}", f.display()),
        )
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("changed while"), "{err}");
    let back = env.path("back");
    restore(&env, "latest", &back);
    // The second, consistent read: the version after the change.
    assert!(fs::read(landed(&back, &f)).unwrap() == fs::read(&f).unwrap());
    assert!(fs::read(&f).unwrap() != a);
}

// A small file (read, not mapped) was read again from where the first read
// ended, its end: the second read found no bytes, the third too, and the file
// was saved empty and reported as changing although it had changed once.
#[test]
fn a_small_file_changed_during_one_read_is_read_again_from_its_start() {
    let env = Env::new("reread-small");
    env.ok(["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("note");
    fs::write(&f, noise(3000, 7)).unwrap();
    let out = env
        .cmd(["sink", src.to_str().unwrap()])
        .env(
            "CHUTE_TEST_CHANGE_DURING_READ",
            format!("1:{}", f.display()),
        )
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("changed while"), "{err}");
    let back = env.path("back");
    restore(&env, "latest", &back);
    assert!(fs::read(landed(&back, &f)).unwrap() == fs::read(&f).unwrap());
}

#[test]
fn a_file_that_keeps_changing_is_saved_reported_and_exits_3() {
    let env = Env::new("changing");
    env.ok(["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("steady"), b"steady\n").unwrap();
    let f = src.join("log");
    fs::write(&f, noise(300_000, 6)).unwrap();
    let out = env
        .cmd(["sink", src.to_str().unwrap()])
        .env(
            "CHUTE_TEST_CHANGE_DURING_READ",
            format!("9:{}", f.display()),
        )
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(
        err.matches("changed while being read (3 tries)").count(),
        1,
        "{err}"
    );
    assert!(err.contains("1 file changed while being read"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Saved, as last read: the snapshot is there, whole as far as chunks go.
    assert!(
        text(&out.stdout).contains("2 files (0 unchanged, 1 changed while read)"),
        "{}",
        text(&out.stdout)
    );
    let back = env.path("back");
    restore(&env, "latest", &back);
    assert_eq!(
        fs::read(landed(&back, &src.join("steady"))).unwrap(),
        b"steady\n"
    );
    assert_eq!(
        fs::metadata(landed(&back, &f)).unwrap().len(),
        300_000,
        "the last read is kept"
    );
    env.ok(["verify", "--read-data"]);
}

/// Rewrites the store so that the chunk at offset 0 of `snapshot`'s part 0 holds
/// `bytes` sealed under the id of the bytes it held: what an older chute wrote when
/// its source changed between the id and the seal. Window hashes and the sealed
/// header are made to match, as that chute would have uploaded them.
fn forge_wrong_content(env: &Env, plain: &[u8], bytes: &[u8]) {
    use chute::crypto::{Keys, Kind};
    use chute::format::{Index, open_header, seal_header};
    assert_eq!(plain.len(), bytes.len());
    let keys = Keys::load(&env.home().join(".config/chute/key")).unwrap();
    let index_path = walk(&env.store())
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "index.json"))
        .expect("one committed snapshot");
    let blob_dir = index_path.parent().unwrap().to_path_buf();
    let blob = blob_dir
        .strip_prefix(env.store())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut index = Index::parse(&fs::read(&index_path).unwrap()).unwrap();
    let mut header = open_header(&keys, &index).unwrap();
    assert_eq!(header.window_hashes.len(), 1, "one window");
    let window = fs::read_dir(blob_dir.join("0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .unwrap();
    let mut data = fs::read(&window).unwrap();
    let id = keys.chunk_id(plain);
    let forged = keys.seal(Kind::Chunk, &id, bytes);
    let mut whole = data[..forged.len()].to_vec();
    // Noise: stored as it is (raw 0), never compressed.
    keys.open_chunk(&id, 0, &mut whole, &mut Vec::new())
        .expect("offset 0 holds the chunk");
    data[..forged.len()].copy_from_slice(&forged);
    let sha = chute::crypto::sha256(&data);
    let name = window.file_name().unwrap().to_str().unwrap();
    let renamed = format!(
        "{}-{}",
        &name[..name.rfind('-').unwrap()],
        chute::hex::encode(&sha)
    );
    fs::remove_file(&window).unwrap();
    fs::write(blob_dir.join("0").join(renamed), &data).unwrap();
    let _ = fs::remove_file(blob_dir.join(".verified"));
    header.window_hashes[0] = sha;
    index.sealed = Some(seal_header(&keys, &blob, &header));
    fs::write(&index_path, index.to_json()).unwrap();
    // The re-sealed header has a new chain id, which the node's chain record
    // would rightly call a replaced snapshot; that chute's node kept no record.
    env.drop_chain_records();
}

#[test]
fn a_chunk_whose_content_is_not_its_id_is_found_refused_and_healed() {
    let env = Env::new("heal");
    env.ok(["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // A chunk of its own (256 KiB, the largest file never cut nor packed): a
    // file packed with others would be healed in a pack of another id.
    let a = noise(256 << 10, 1);
    let b = noise(256 << 10, 2);
    let f = src.join("config.yaml");
    fs::write(&f, &a).unwrap();
    env.ok(["sink", src.to_str().unwrap()]);
    forge_wrong_content(&env, &a, &b);
    let first = env.ok(["list"]);
    let first = first
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();

    // The seal authenticates, and both readers still refuse it, naming the file.
    let out = env.fails(1, ["verify", "--read-data"]);
    assert!(out.contains("damaged"), "{out}");
    let report = text(&env.run(["verify", "--read-data"]).stdout);
    assert!(
        report.contains(&format!("damaged file: {} (snapshot {first})", f.display())),
        "{report}"
    );
    assert!(report.contains("not the content its id names"), "{report}");
    assert!(
        report.contains("the next sink stores this content afresh"),
        "{report}"
    );
    let back = env.path("back");
    let err = env.fails(1, ["restore", "latest", "--to", back.to_str().unwrap()]);
    assert!(err.contains("config.yaml"), "{err}");
    assert!(err.contains("not the content its id names"), "{err}");
    assert!(!landed(&back, &f).exists(), "a damaged file was placed");

    // The next sink re-reads the unchanged file and stores its content afresh;
    // a new file with the same content uses that fresh copy.
    fs::write(src.join("copy.yaml"), &a).unwrap();
    let s = env.ok(["sink", src.to_str().unwrap()]);
    assert!(s.contains("2 files (0 unchanged)"), "{s}");
    assert!(!s.contains("in 0 chunks"), "nothing stored afresh: {s}");
    let back = env.path("back2");
    restore(&env, "latest", &back);
    assert!(fs::read(landed(&back, &f)).unwrap() == a);
    assert!(fs::read(landed(&back, &src.join("copy.yaml"))).unwrap() == a);
    let v = env.ok(["verify", "--read-data"]);
    assert!(v.contains("all intact"), "{v}");
    // The first snapshot stays damaged until it is forgotten.
    env.fails(1, ["verify", "--all", "--read-data"]);

    // Healed: the fresh copy is offered again, nothing is stored twice.
    let more = env.path("more");
    fs::create_dir_all(&more).unwrap();
    fs::write(more.join("third.yaml"), &a).unwrap();
    let s = env.ok(["sink", more.to_str().unwrap()]);
    assert!(s.contains("in 0 chunks"), "{s}");
}
