//! Issue 14, item 4: `verify` without download must catch a store that kept the
//! window hashes but threw the data away. Before storage challenges, the store
//! answered verify's hash questions from its record, so such a store passed
//! (shown below: once the challenges are used up, verify is back to that check,
//! and the same store passes, as it did on main for every run).
use crate::util::*;
use chute::crypto::{Keys, Kind, sha256};
use chute::format::{Index, encode_header, open_header};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// Window files under a store (data, not temporaries).
/// Makes the store one that kept hashes but not data: every window file but the
/// last (it holds the manifest, so verify can still name the files) holds zeros
/// of its length, and the blob's verified record vouches for the new file
/// as holding the SHA-256 in its name (a line in the record's own format, see
/// src/store/record.rs), so the hash route still answers the sealed hashes.
fn keep_hashes_drop_data(store: &Path) -> usize {
    let mut windows = window_files(store);
    windows.sort();
    windows.pop();
    for w in &windows {
        let len = fs::metadata(w).unwrap().len();
        fs::write(w, vec![0u8; len as usize]).unwrap();
        let m = fs::metadata(w).unwrap();
        let body = format!(
            "{} {} {} {}.{:09} {}.{:09}",
            w.file_name().unwrap().to_str().unwrap(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        );
        let check = chute::hex::encode(&sha256(body.as_bytes())[..8]);
        let record = w.parent().unwrap().parent().unwrap().join(".verified");
        let mut text = fs::read_to_string(&record).expect("the store keeps a record");
        text.push_str(&format!("{body} {check}\n"));
        fs::write(&record, text).unwrap();
    }
    windows.len()
}

fn kept_hashes_but_not_data(http: bool) {
    let env = Env::new(if http { "proof-http" } else { "proof" });
    env.ok(["init"]);
    // Served or local: either way a store made by init.
    let store = env.new_store("store");
    let server = http.then(|| env.serve(&store, &[]));
    let remote = server
        .as_ref()
        .map_or(store.display().to_string(), |s| s.url());
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("big.bin");
    fs::write(&big, noise(5 << 20, 1)).unwrap();
    env.ok(with(&["sink", src.to_str().unwrap()], &remote));
    let (out, _) = status(&env, 0, &with(&["verify"], &remote));
    assert!(out.contains("all intact"), "{out}");

    let n = keep_hashes_drop_data(&store);
    assert!(n >= 2, "{}", listing(&store));
    let range = |w: usize| {
        format!(
            "(bytes {}-{}): changed or not held",
            w << 21,
            ((w + 1) << 21) - 1
        )
    };
    // Challenges 1, 2 and 3: every window is named, every time.
    for _ in 1..4 {
        let (out, _) = status(&env, 1, &with(&["verify"], &remote));
        assert_eq!(out.matches("changed or not held").count(), n, "{out}");
        assert!((0..n).all(|w| out.contains(&range(w))), "{out}");
        assert!(
            out.contains("by storage challenges (the store read them)"),
            "{out}"
        );
        assert!(
            out.contains(&format!("damaged file: {}", big.display())),
            "{out}"
        );
    }
    // All four spent: back to the store's hashes, which this store still answers,
    // and verify says so.
    let (out, err) = status(&env, 0, &with(&["verify"], &remote));
    assert!(out.contains("by the store's SHA-256 only"), "{out}");
    assert!(
        err.contains("its 4 storage challenges are used up")
            && err.contains("run verify --read-data to check the data itself"),
        "{err}"
    );
    assert_eq!(err.matches("used up").count(), 1, "once per run: {err}");
    // Downloading still finds it.
    status(&env, 1, &with(&["verify", "--read-data"], &remote));
}

#[test]
fn a_store_that_kept_hashes_but_not_data_fails_verify() {
    kept_hashes_but_not_data(false);
}

#[test]
fn a_store_that_kept_hashes_but_not_data_fails_verify_over_http() {
    kept_hashes_but_not_data(true);
}

// A window that is gone is missing to a challenge as to a hash, and a missing
// window file does not spend more than one challenge a run.
#[test]
fn a_deleted_window_is_missing() {
    let env = Env::new("proof-missing");
    env.ok(["init"]);
    let store = env.new_store("store");
    let remote = store.display().to_string();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), noise(5 << 20, 2)).unwrap();
    env.ok(with(&["sink", src.to_str().unwrap()], &remote));
    fs::remove_file(&window_files(&store)[0]).unwrap();
    let (out, _) = status(&env, 1, &with(&["verify"], &remote));
    assert_eq!(out.matches("): missing").count(), 1, "{out}");
    let record = walk(&env.home().join(".cache/chute"))
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "challenges"))
        .expect("the record of spent challenges");
    let text = fs::read_to_string(record).unwrap();
    assert!(
        text.starts_with("chute-challenges 1\n1 test.example/node1/"),
        "{text}"
    );
}

// Snapshots written before challenges (header version 1) verify as before, by
// the store's hashes, and verify says why.
#[test]
fn a_version_1_snapshot_still_verifies() {
    let env = Env::new("proof-v1");
    env.ok(["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f.bin"), noise(3 << 20, 3)).unwrap();
    env.ok(["sink", src.to_str().unwrap()]);
    // Re-seal its header as version 1: the version 3 bytes without the segment
    // table, the chain and the challenges (src/format.rs, "Snapshot header").
    let keys = Keys::load(&env.home().join(".config/chute/key")).unwrap();
    let index_path = walk(&env.store())
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "index.json"))
        .unwrap();
    let mut index = Index::parse(&fs::read(&index_path).unwrap()).unwrap();
    let mut h = open_header(&keys, &index).unwrap();
    assert_eq!(h.challenges, 4);
    let blob = index.blob_path();
    // A chute that wrote version 1 headers wrote version 1 manifests: rewrite the
    // manifest (the end of part 0, in its last window) as one, as it would have.
    let mut windows: Vec<PathBuf> = walk(index_path.parent().unwrap())
        .into_iter()
        .filter(|p| p.parent().unwrap().ends_with("0") && p.is_file())
        .collect();
    windows.sort();
    let last = windows.pop().unwrap();
    let start = windows.len() as u64 * u64::from(h.window);
    assert!(h.manifest_offset >= start);
    let mut tail = fs::read(&last).unwrap();
    let at = (h.manifest_offset - start) as usize;
    let sealed = tail[at..].to_vec();
    let base = h.manifest_offset;
    let fetch = |s: &chute::format::Span| {
        let o = (s.offset - base) as usize;
        Ok(sealed[o..o + s.len as usize].to_vec())
    };
    let (m, lost) = chute::format::read_manifest(&keys, &blob, &h, fetch).unwrap();
    assert!(lost.is_empty());
    let plain = chute::format::encode_manifest(&m);
    let (v1_manifest, segments) = chute::format::seal_manifest(&keys, &blob, &plain);
    tail.truncate(at);
    tail.extend_from_slice(&v1_manifest);
    fs::remove_file(&last).unwrap();
    let hash = sha256(&tail);
    let name = format!(
        "{start:016x}-{:016x}-{}",
        tail.len(),
        chute::hex::encode(&hash)
    );
    fs::write(last.parent().unwrap().join(name), &tail).unwrap();
    h.manifest_len = v1_manifest.len() as u64;
    h.segments = segments;
    h.table.clear();
    h.part_size = start + tail.len() as u64;
    *h.window_hashes.last_mut().unwrap() = hash;
    index.size = Some(h.part_size);
    // The header without the segment table (version 2), then without the chain and
    // the challenges (version 1).
    let v2 = encode_header(&h);
    let tail = 8 + 32 + 4 + 1 + h.answers.len() * 8;
    let mut v1 = v2[..v2.len() - tail].to_vec();
    v1[0] = 1;
    index.sealed = Some(chute::hex::encode(&keys.seal(
        Kind::Header,
        blob.as_bytes(),
        &v1,
    )));
    fs::write(&index_path, index.to_json()).unwrap();
    let h = open_header(&keys, &index).unwrap();
    assert_eq!((h.version, h.challenges), (1, 0));
    // A chute that wrote version 1 headers kept no chain record either.
    env.drop_chain_records();

    for _ in 0..2 {
        let (out, err) = status(&env, 0, &["verify"]);
        assert!(out.contains("all intact"), "{out}");
        assert!(out.contains("by the store's SHA-256 only"), "{out}");
        assert!(
            err.contains("it records no storage challenges (written by an older chute)"),
            "{err}"
        );
    }
    env.ok(["verify", "--read-data"]);
}

// A sink killed midway and run again keeps the windows the first run sent; the
// header must still record their challenge answers (from the journal: only the
// bytes sent could give them), or verify would prove nothing about them.
#[test]
fn a_resumed_sink_records_the_answers_of_the_windows_it_kept() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let env = Env::new("proof-resume");
    env.ok(["init"]);
    let store = env.new_store("store");
    let remote = store.display().to_string();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // The first file fills three 2 MiB windows; the sink stalls after reading it.
    fs::write(src.join("a-big.bin"), noise(7 << 20, 4)).unwrap();
    fs::write(src.join("b-small.bin"), noise(100_000, 5)).unwrap();
    let never = env.path("never");
    let mut child = env
        .cmd(with(&["sink", src.to_str().unwrap()], &remote))
        .env("CHUTE_TEST_STALL_UNTIL", &never)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let journaled = |n: &str| {
        walk(&env.home().join(".cache/chute")).iter().any(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("journal-"))
                && fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.starts_with(n))
        })
    };
    // Workers send windows in parallel: 1 may be acknowledged before 0.
    while !(journaled("w 0 ") && journaled("w 1 ")) {
        assert!(Instant::now() < deadline, "the sink never sent two windows");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = env.ok(with(&["sink", src.to_str().unwrap()], &remote));
    assert!(out.contains("resumed after"), "{out}");
    let (out, err) = status(&env, 0, &with(&["verify"], &remote));
    assert!(
        out.contains("by storage challenges (the store read them)"),
        "{out}"
    );
    assert!(out.contains("all intact"), "{out}");
    assert!(!err.contains("storage challenges"), "{err}");
    // And they are right: a store without the data fails them.
    let n = keep_hashes_drop_data(&store);
    let (out, _) = status(&env, 1, &with(&["verify"], &remote));
    assert_eq!(out.matches("changed or not held").count(), n, "{out}");
}
