//! Issue 20, item 8: snapshot tags. `chute sink --tag` (and CHUTE_TAG) seals
//! them in the snapshot's header, `chute list --tag` filters by them and shows
//! them (table and JSON), `chute forget --keep-tag` keeps what the policy would
//! drop and `--tag` limits the policy to the tagged; the store never sees them.
use crate::util::*;
use std::fs;
use std::path::Path;

/// A tag no stored byte can hold by chance.
const SECRET: &str = "tag-zq7-secret";

/// (id, tags) of every snapshot `chute list --json ARGS` prints, oldest first.
fn listed(env: &Env, remote: &str, args: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut all = vec!["list", "--json", "--remote", remote];
    all.extend(args);
    let json = env.ok(all);
    json.split("{\"id\":\"")
        .skip(1)
        .map(|item| {
            let tags = item.split("\"tags\":[").nth(1).unwrap();
            let tags = &tags[..tags.find(']').unwrap()];
            let tags = tags
                .split(',')
                .filter(|t| !t.is_empty())
                .map(|t| t.trim_matches('"').to_string())
                .collect();
            (item[..8].to_string(), tags)
        })
        .collect()
}

/// Just the ids.
fn ids(env: &Env, remote: &str, args: &[&str]) -> Vec<String> {
    listed(env, remote, args)
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

/// The id of the snapshot a sink's summary line names.
fn sunk(out: &str) -> String {
    out.split("snapshot ").nth(1).unwrap()[..8].to_string()
}

fn sink(env: &Env, remote: &str, src: &Path, tags: &[&str]) -> String {
    let mut args = vec!["sink", "--remote", remote, src.to_str().unwrap()];
    for t in tags {
        args.extend(["--tag", t]);
    }
    sunk(&env.ok(args))
}

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"tagged data\n").unwrap();
    fs::write(src.join("b.bin"), noise(300_000, 8)).unwrap();
    src
}

#[test]
fn sink_tags_are_listed_filtered_and_never_seen_by_the_store() {
    let env = Env::new("tags-list");
    env.ok(["init"]);
    let store = env.path("srv");
    let server = env.serve(&store, &[]);
    let remote = server.url();
    let src = source(&env);
    // Repeated tags count once.
    let a = sink(&env, &remote, &src, &[SECRET, "pre upgrade", SECRET]);
    let b = sink(&env, &remote, &src, &[]);
    let out = env
        .cmd(["sink", "--remote", &remote, src.to_str().unwrap()])
        .env("CHUTE_TAG", format!("{SECRET} weekly"))
        .output()
        .unwrap();
    let c = sunk(&check_ok(&env.cmd(["sink"]), &out));
    // A --tag flag wins over CHUTE_TAG, as every flag over its setting.
    let out = env
        .cmd(["sink", "--remote", &remote, "--tag", "manual"])
        .arg(&src)
        .env("CHUTE_TAG", SECRET)
        .output()
        .unwrap();
    let d = sunk(&check_ok(&env.cmd(["sink"]), &out));

    let s = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<String>>();
    assert_eq!(
        listed(&env, &remote, &[]),
        [
            (a.clone(), s(&[SECRET, "pre upgrade"])),
            (b.clone(), s(&[])),
            (c.clone(), s(&[SECRET, "weekly"])),
            (d.clone(), s(&["manual"])),
        ]
    );
    assert_eq!(
        ids(&env, &remote, &["--tag", SECRET]),
        [a.as_str(), c.as_str()]
    );
    // a,b: both tags; repeated: either.
    assert_eq!(
        ids(&env, &remote, &["--tag", &format!("{SECRET},weekly")]),
        [c.as_str()]
    );
    assert_eq!(
        ids(&env, &remote, &["--tag", "pre upgrade", "--tag", "manual"]),
        [a.as_str(), d.as_str()]
    );
    assert!(ids(&env, &remote, &["--tag", "nope"]).is_empty());

    // The table has a TAGS column before PATHS.
    let table = env.ok(["list", "--remote", &remote, "--tag", "weekly"]);
    let mut lines = table.lines();
    let head = lines.next().unwrap();
    assert!(
        head.contains("TAGS") && head.find("TAGS") < head.find("PATHS"),
        "{table}"
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with(&c), "{table}");
    assert!(
        row.contains(&format!("{SECRET},weekly  {}", src.display())),
        "{table}"
    );
    assert_eq!(lines.next(), Some("1 snapshot"), "{table}");
    // Untagged snapshots alone: no TAGS column.
    let table = env.ok(["list", "--remote", &remote, "--tag", "nope"]);
    assert!(!table.contains("TAGS"), "{table}");

    // A restore of latest is as before (the newest, whatever its tags).
    let to = env.path("to");
    env.ok([
        "restore",
        "latest",
        "--remote",
        &remote,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &to.join(src.strip_prefix("/").unwrap()));

    // The store holds the node's name in clear (blob paths, index.json) but not
    // the tags, neither as they are nor in hex.
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    let mut seen_node = false;
    for p in walk(&store) {
        let name = p.to_string_lossy().into_owned();
        assert!(!name.contains(SECRET), "{name}");
        if !p.is_file() {
            continue;
        }
        let data = fs::read(&p).unwrap();
        seen_node |= data.windows(5).any(|w| w == b"node1");
        for needle in [SECRET.as_bytes(), hex.as_bytes(), b"pre upgrade"] {
            assert!(
                !data.windows(needle.len()).any(|w| w == needle),
                "{name} holds {:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(
        seen_node,
        "no stored file names the node:\n{}",
        listing(&store)
    );
}

#[test]
fn bad_tags_are_refused_with_one_line() {
    let env = Env::new("tags-bad");
    env.ok(["init"]);
    let src = source(&env);
    let long = "x".repeat(65);
    let tab = "a\tb".to_string();
    for (tag, why) in [
        ("a,b", "holds a comma"),
        ("", "is empty"),
        (long.as_str(), "longer than 64 bytes"),
        (tab.as_str(), "control character"),
    ] {
        let err = env.fails(2, ["sink", "--tag", tag, src.to_str().unwrap()]);
        assert!(err.contains("--tag") && err.contains(why), "{tag:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let err = env.fails(2, ["list", "--tag", "a,,b"]);
    assert!(err.contains("is empty"), "{err}");
    let err = env.fails(2, ["forget", "--keep-last", "1", "--keep-tag", &long]);
    assert!(err.contains("--keep-tag"), "{err}");
    let err = env.fails(2, ["forget", "--tag", "x", "1a2b3c4d"]);
    assert!(err.contains("--tag"), "{err}");
    let many: Vec<String> = (0..33)
        .flat_map(|i| ["--tag".into(), format!("t{i}")])
        .collect();
    let mut args = vec!["sink".to_string()];
    args.extend(many);
    args.push(src.to_str().unwrap().into());
    let err = env.fails(2, &args);
    assert!(err.contains("at most 32"), "{err}");
    // Nothing was stored by any of them.
    let remote = env.store();
    assert!(ids(&env, remote.to_str().unwrap(), &[]).is_empty());
}

#[test]
fn forget_keep_tag_keeps_what_the_policy_drops() {
    let env = Env::new("tags-keep");
    env.ok(["init"]);
    let remote = env.store().to_str().unwrap().to_string();
    let src = source(&env);
    let a = sink(&env, &remote, &src, &["keep-me"]);
    let b = sink(&env, &remote, &src, &[]);
    let c = sink(&env, &remote, &src, &["other"]);
    let d = sink(&env, &remote, &src, &[]);
    let out = env.ok([
        "forget",
        "--remote",
        &remote,
        "--keep-last",
        "1",
        "--keep-tag",
        "keep-me",
    ]);
    let row = |id: &str| out.lines().find(|l| l.starts_with(&format!("  {id}  ")));
    assert!(row(&a).unwrap().ends_with("  tag"), "{out}");
    assert!(row(&d).unwrap().ends_with("  last"), "{out}");
    assert!(out.contains("forgot 2 snapshots"), "{out}");
    let removed = out
        .split("remove 2 snapshots:")
        .nth(1)
        .expect("a remove list");
    assert!(removed.contains(&b) && removed.contains(&c), "{out}");
    assert_eq!(ids(&env, &remote, &[]), [a.as_str(), d.as_str()]);
    // --keep-tag alone with a tag no snapshot has (a typo) is refused rather
    // than forget them all; with the right one it keeps that one.
    let err = env.fails(2, ["forget", "--remote", &remote, "--keep-tag", "keep-em"]);
    assert!(err.contains("no snapshot has the tag keep-em"), "{err}");
    assert_eq!(ids(&env, &remote, &[]), [a.as_str(), d.as_str()]);
    // The same policy without --keep-tag drops the tagged one too.
    let out = env.ok(["forget", "--remote", &remote, "--keep-last", "1"]);
    assert!(out.contains("forgot 1 snapshot"), "{out}");
    assert_eq!(ids(&env, &remote, &[]), [d.as_str()]);
}

#[test]
fn forget_tag_limits_the_policy_to_the_tagged() {
    let env = Env::new("tags-scope");
    env.ok(["init"]);
    let remote = env.store().to_str().unwrap().to_string();
    let src = source(&env);
    let a = sink(&env, &remote, &src, &["x"]);
    let b = sink(&env, &remote, &src, &[]);
    let c = sink(&env, &remote, &src, &["x", "y"]);
    let d = sink(&env, &remote, &src, &["y"]);
    // --keep-last 1 over x alone: keeps c (the newest with x), forgets a; b and
    // d, newer or untagged, are out of scope and neither shown nor touched.
    let out = env.ok([
        "forget",
        "--remote",
        &remote,
        "--keep-last",
        "1",
        "--tag",
        "x",
    ]);
    assert!(out.contains("keep 1 snapshot of 2"), "{out}");
    let removed = out
        .split("remove 1 snapshot:")
        .nth(1)
        .expect("a remove list");
    assert!(removed.contains(&a), "{out}");
    assert!(!out.contains(&b) && !out.contains(&d), "{out}");
    assert_eq!(
        ids(&env, &remote, &[]),
        [b.as_str(), c.as_str(), d.as_str()]
    );
    // x,y: both; nothing else carries both, so c stays as the newest.
    let out = env.ok([
        "forget",
        "--remote",
        &remote,
        "--keep-last",
        "1",
        "--tag",
        "x,y",
    ]);
    assert!(out.contains("forgot 0 snapshots"), "{out}");
    assert_eq!(
        ids(&env, &remote, &[]),
        [b.as_str(), c.as_str(), d.as_str()]
    );
}
