//! Issue 20 (item 1): `chute stats`: files, bytes, unique and stored bytes and
//! the dedup ratio per set of source paths and in total, over the real binary.

use crate::util::*;
use miniserde::json::{self, Number, Value};
use std::fs;

/// Sealed bytes a chunk adds to its plaintext (header, nonce, tag).
const OVERHEAD: u64 = 46;

fn ratio(v: &Value) -> f64 {
    match field(v, "dedup") {
        Value::Number(Number::F64(f)) => *f,
        Value::Number(Number::U64(n)) => *n as f64,
        x => panic!("dedup is not a number: {x:?}"),
    }
}

fn paths(v: &Value) -> Vec<String> {
    match field(v, "paths") {
        Value::Array(a) => a
            .iter()
            .map(|p| match p {
                Value::String(s) => s.clone(),
                x => panic!("{x:?}"),
            })
            .collect(),
        x => panic!("{x:?}"),
    }
}

/// (files, bytes, unique bytes, stored bytes, chunks, dedup) of a line.
fn figures(v: &Value) -> (u64, u64, u64, u64) {
    let (chunks, unique, stored) = (
        num(v, "chunks"),
        num(v, "unique_bytes"),
        num(v, "stored_bytes"),
    );
    assert_eq!(stored, unique + chunks * OVERHEAD, "{v:?}");
    assert!(chunks > 0);
    (
        num(v, "snapshots"),
        num(v, "files"),
        num(v, "bytes"),
        unique,
    )
}

#[test]
fn stats_counts_each_chunk_once_per_path_set_and_in_total() {
    let env = Env::new("stats");
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let big = noise(600 << 10, 1);
    fs::write(a.join("big"), &big).unwrap();
    fs::write(a.join("small"), noise(1000, 2)).unwrap();
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    env.ok(["init"]);
    env.ok(["sink", sa]);
    env.ok(["sink", sa]);
    // The same 600 KiB under b: its chunks are a's.
    fs::write(b.join("copy"), &big).unwrap();
    env.ok(["sink", sa, sb]);

    let out = env.ok(["stats", "--json"]);
    let v: Value = json::from_str(&out).unwrap_or_else(|e| panic!("{e:?}: {out}"));
    let sets = match field(&v, "path_sets") {
        Value::Array(s) => s.clone(),
        x => panic!("{x:?}"),
    };
    assert_eq!(sets.len(), 2, "{out}");
    let one = 600 * 1024 + 1000;
    // a alone, twice: every chunk twice.
    assert_eq!(paths(&sets[0]), [sa]);
    assert_eq!(figures(&sets[0]), (2, 4, 2 * one, one));
    assert_eq!(ratio(&sets[0]), 2.0);
    // a and b: the copy is stored once.
    assert_eq!(paths(&sets[1]), [sa, sb]);
    assert_eq!(figures(&sets[1]), (1, 3, one + (600 << 10), one));
    let total = field(&v, "total");
    assert!(paths(total).is_empty());
    let bytes = 3 * one + (600 << 10);
    assert_eq!(figures(total), (3, 7, bytes, one));
    assert_eq!(
        ratio(total),
        (bytes as f64 / one as f64 * 100.0).round() / 100.0
    );

    // Run-spilled (one chunk a run in memory): the same figures, and no run left.
    let mut c = env.cmd(["stats", "--json"]);
    c.env("CHUTE_TEST_CHUNK_CAP", "1");
    assert_eq!(ok_cmd(c), out);
    let left: Vec<_> = walk(&env.home())
        .into_iter()
        .filter(|p| (p.file_name()).is_some_and(|n| n.to_string_lossy().starts_with("stats-")))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Plain: a line per path set, then the total.
    let plain = env.ok(["stats"]);
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines.len(), 4, "{plain}");
    assert!(lines[0].starts_with("SNAPSHOTS") && lines[0].ends_with("PATHS"));
    assert!(lines[1].ends_with(&format!("2.00x  {sa}")), "{plain}");
    assert!(lines[2].ends_with(&format!("2.00x  {sa} {sb}")), "{plain}");
    assert!(
        lines[3].contains(" 3 ") && lines[3].ends_with("x  (total)"),
        "{plain}"
    );

    // Named snapshots (one named twice counts once), and --path.
    let latest = env.ok(["stats", "--json", "latest", "latest"]);
    let v: Value = json::from_str(&latest).unwrap();
    assert_eq!(figures(field(&v, "total")), (1, 3, one + (600 << 10), one));
    let v: Value = json::from_str(&env.ok(["stats", "--json", "--path", sb])).unwrap();
    assert_eq!(num(field(&v, "total"), "snapshots"), 1);
    let e = env.fails(2, ["stats", "nosuchid"]);
    assert!(e.contains("no snapshot \"nosuchid\""), "{e}");
}
