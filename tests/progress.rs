//! Issue 20 (item 3): progress on a terminal for sink and restore (files and bytes
//! of the total, rate), nothing but the summary when stderr is a pipe, and a sink
//! stopped by SIGINT that says the next run resumes, which it does.

use crate::util::*;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `c` with stdin, stdout and stderr on a pseudo-terminal (util-linux
/// `script`); returns its status and everything it wrote there.
fn on_terminal(c: &Command) -> (bool, String) {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_str().unwrap().replace('\'', "'\\''"));
    let mut line = quote(c.get_program());
    for a in c.get_args() {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let mut s = Command::new("script");
    s.args(["-qec", &line, "/dev/null"]).stdin(Stdio::null());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    let out = s.output().expect("run script (util-linux)");
    (out.status.success(), text(&out.stdout))
}

/// A progress line of `what` with a total and a rate was drawn in place.
fn assert_live_line(out: &str, what: &str) {
    let drawn: Vec<&str> = out
        .split("\r\x1b[K")
        .filter(|l| l.starts_with(&format!("{what}: ")))
        .collect();
    assert!(
        drawn
            .iter()
            .any(|l| l.contains(" files, ") && l.contains("/s")),
        "no {what} progress line with a rate:\n{out:?}"
    );
    assert!(
        drawn
            .iter()
            .any(|l| l.contains("/4 files") || l.contains("/≥")),
        "no {what} progress line with a total:\n{out:?}"
    );
}

#[test]
fn a_terminal_gets_a_live_line_with_total_and_rate_a_pipe_only_the_summary() {
    let env = Env::new("progress-tty");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("f{i}")), noise(1 << 20, i)).unwrap();
    }
    let s = src.to_str().unwrap();
    env.ok(["init"]);
    // The walk pauses a second after its first file, so it lasts long enough
    // for a line with a rate (4 MiB fit in the last window, sent after the walk,
    // so --limit-upload would not make the walk last). Nothing is asserted of
    // the time.
    let mut sink = env.cmd(["sink", s]);
    sink.env("CHUTE_TEST_STALL_SECS", "1");
    let (ok, out) = on_terminal(&sink);
    assert!(ok, "sink on a terminal failed:\n{out}");
    assert_live_line(&out, "sink");

    let to = env.path("back");
    let t = to.to_str().unwrap();
    let restore = ["restore", "--limit-download", "2M", "--to", t, "latest"];
    let (ok, out) = on_terminal(&env.cmd(restore));
    assert!(ok, "restore on a terminal failed:\n{out}");
    assert_live_line(&out, "restore");
    assert!(
        out.contains("/4 files"),
        "restore knows its total:\n{out:?}"
    );
    assert_same_tree(&src, &to.join(s.trim_start_matches('/')));

    // The same restore with stderr on a pipe (cron): the summary on stdout only.
    let to2 = env.path("back2");
    let out = env.run([
        "restore",
        "--limit-download",
        "2M",
        "--to",
        to2.to_str().unwrap(),
        "latest",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "nothing on stderr off a terminal");
    assert!(text(&out.stdout).starts_with("restored snapshot"));
}

#[test]
fn a_sink_stopped_by_sigint_says_the_next_run_resumes_and_it_does() {
    let env = Env::new("progress-sigint");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join(format!("f{i}")), noise(2 << 20, 10 + i)).unwrap();
    }
    let s = src.to_str().unwrap();
    env.ok(["init"]);
    // The sink pauses after its first file (until a file that never appears):
    // the signal comes while its upload is under way.
    let mut c = env.cmd(["sink", s]);
    c.env("CHUTE_TEST_STALL_UNTIL", env.path("never"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while !walk(&env.home().join(".cache")).iter().any(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("journal-"))
    }) {
        assert!(Instant::now() < until, "the sink never started its journal");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains(
            "chute sink: interrupted; no snapshot committed; run the same sink again to resume"
        ),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        env.ok(["list"]).contains("0 snapshots"),
        "nothing committed"
    );

    // The next run completes, and what it committed restores.
    env.ok(["sink", s]);
    let to = env.path("back");
    env.ok(["restore", "--to", to.to_str().unwrap(), "latest"]);
    assert_same_tree(&src, &to.join(s.trim_start_matches('/')));
}
