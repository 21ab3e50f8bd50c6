//! This node's own view on the management page (issue 19, point 2), when
//! `chute serve` runs where the node's key and backup settings are: its
//! snapshots, decrypted here; when the newest was taken and the next sink is
//! due; and the prototype's "Take new snapshot" button with its progress.
//!
//! The server never opens the key. It runs this same binary as a child, with
//! its own environment and settings file: `chute list --json` for the
//! snapshots and `chute status --json` for how the last sink and verify on
//! this machine ended, cron's included (from a thread of its own, one at a
//! time, the answers kept for [`LIST_FOR`] or until a sink from the page ends)
//! and `chute sink --progress` for the button (one at a time from the page; the sink's per-mount lock keeps
//! it apart from cron's, which then fails with the lock's message). So the list
//! and the sink read the same settings, check the same snapshot chain and take
//! the same locks as the nightly sink, and a flaw in the page cannot read the
//! key out of the server's memory.
//!
//! The view is on when the settings name a key file this process can open and
//! something to back up (`CHUTE_PATHS` or `CHUTE_PATHS_FILE`); see
//! `chute serve`'s start-up log.
//!
//! Bounded: one list child and one sink child at a time; a list's output is
//! read up to [`LIST_CAP`] bytes and its newest [`SHOW`] snapshots kept; a
//! sink's last [`KEEP_LINES`] lines of output, each cut at [`LINE_CAP`] bytes,
//! and its latest progress line.

use super::status::{OwnSnapshot, OwnView, SinkRun};
use crate::runlog::{Record, StatusOut};
use crate::snapshot::rfc3339;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a snapshot list is shown before it is read again (a list reads
/// every snapshot's header; the snapshots change once a night, and a sink from
/// the page reads them again at once).
pub const LIST_FOR: Duration = Duration::from_secs(300);
/// Largest `chute list --json` (or `status --json`) output read.
pub const LIST_CAP: u64 = 8 << 20;
/// Newest snapshots shown.
pub const SHOW: usize = 30;
/// Lines of a sink's output kept.
pub const KEEP_LINES: usize = 40;
/// Longest line kept (longer ones are cut).
pub const LINE_CAP: usize = 400;
/// The cron entry `make install` puts in place.
pub const CRON_FILE: &str = "/etc/cron.d/chute";

/// What the own view needs from the settings.
#[derive(Clone, Debug)]
pub struct OwnSettings {
    /// This binary, run for `list` and `sink`.
    pub exe: PathBuf,
    pub node: String,
    /// What the button backs up, as the settings say it.
    pub paths: Vec<String>,
}

/// The own view's state in a running server.
pub struct Own {
    pub settings: OwnSettings,
    list: Arc<Mutex<Listing>>,
    run: Arc<Mutex<Runs>>,
}

#[derive(Default)]
struct Listing {
    /// When the shown list was read; `None` before the first.
    at: Option<Instant>,
    busy: bool,
    /// Bumped when a sink from the page ends: a read that began before is not
    /// taken as fresh.
    generation: u64,
    /// Newest first, at most [`SHOW`].
    snapshots: Vec<OwnSnapshot>,
    total: u64,
    listed_unix: Option<u64>,
    error: Option<String>,
    next_sink: Option<String>,
    last_sink: Option<Record>,
    last_verify: Option<Record>,
}

#[derive(Default)]
struct Runs {
    current: Option<Run>,
    ok: u64,
    failed: u64,
}

struct Run {
    started_unix: u64,
    started: Instant,
    progress: Option<String>,
    lines: VecDeque<String>,
    /// Exit code (`-1`: killed by a signal) and seconds, once it ended.
    ended: Option<(i64, u64)>,
}

/// A `chute list --json` entry: the fields shown (the rest are ignored).
#[derive(miniserde::Deserialize)]
struct Listed {
    id: String,
    time: String,
    paths: Vec<String>,
    files: u64,
    bytes: u64,
}

impl Own {
    pub fn new(settings: OwnSettings) -> Own {
        Own {
            settings,
            list: Arc::default(),
            run: Arc::default(),
        }
    }

    /// The view as it stands; starts reading the list again (in a thread of its
    /// own) when it is older than [`LIST_FOR`] and no read runs.
    pub fn view(&self, now_unix: u64) -> OwnView {
        self.refresh();
        let l = self.list.lock().expect("poisoned");
        let r = self.run.lock().expect("poisoned");
        OwnView {
            node: self.settings.node.clone(),
            paths: self.settings.paths.clone(),
            snapshots: l.snapshots.clone(),
            snapshots_total: l.total,
            listed: l.listed_unix.map(|t| rfc3339(t as i64)),
            listed_unix: l.listed_unix,
            listing: l.busy,
            list_error: l.error.clone(),
            next_sink: l.next_sink.clone(),
            last_sink: l.last_sink.clone(),
            last_verify: l.last_verify.clone(),
            sink: r.current.as_ref().map(|run| run.view(now_unix)),
            sinks_ok: r.ok,
            sinks_failed: r.failed,
        }
    }

    fn refresh(&self) {
        let generation = {
            let mut l = self.list.lock().expect("poisoned");
            if l.busy || l.at.is_some_and(|at| at.elapsed() < LIST_FOR) {
                return;
            }
            l.busy = true;
            l.generation
        };
        let (list, exe) = (self.list.clone(), self.settings.exe.clone());
        std::thread::spawn(move || {
            let read = read_list(&exe);
            let runs = read_runs(&exe);
            let next = schedule();
            let mut l = list.lock().expect("poisoned");
            l.busy = false;
            l.at = (l.generation == generation).then(Instant::now);
            l.next_sink = next;
            // Kept on an error: the records only ever get newer.
            if let Ok((sink, verify)) = runs {
                (l.last_sink, l.last_verify) = (sink, verify);
            }
            match read {
                Ok((snapshots, total)) => {
                    l.snapshots = snapshots;
                    l.total = total;
                    l.listed_unix = Some(super::unix_now());
                    l.error = None;
                }
                Err(e) => l.error = Some(e),
            }
        });
    }

    /// Starts a sink of the configured paths, unless one from the page runs;
    /// says which. The error is one line for the page.
    pub fn start_sink(&self) -> Result<bool, String> {
        let mut runs = self.run.lock().expect("poisoned");
        if runs.current.as_ref().is_some_and(|r| r.ended.is_none()) {
            return Ok(false);
        }
        let mut child = crate::testhooks::child_command(&self.settings.exe)
            .args(["sink", "--progress"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.settings.exe.display()))?;
        runs.current = Some(Run {
            started_unix: super::unix_now(),
            started: Instant::now(),
            progress: None,
            lines: VecDeque::new(),
            ended: None,
        });
        drop(runs);
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let (run, list) = (self.run.clone(), self.list.clone());
        std::thread::spawn(move || {
            let pump_out = out.map(|o| {
                let run = run.clone();
                std::thread::spawn(move || pump(o, &run))
            });
            if let Some(e) = err {
                pump(e, &run);
            }
            if let Some(t) = pump_out {
                let _ = t.join();
            }
            let code = match child.wait() {
                Ok(st) => st.code().map_or(-1, i64::from),
                Err(_) => -1,
            };
            let mut runs = run.lock().expect("poisoned");
            if code == 0 {
                runs.ok += 1;
            } else {
                runs.failed += 1;
            }
            if let Some(r) = runs.current.as_mut() {
                r.ended = Some((code, r.started.elapsed().as_secs()));
            }
            drop(runs);
            // The next view reads the list again, new snapshot included.
            let mut l = list.lock().expect("poisoned");
            l.at = None;
            l.generation += 1;
        });
        Ok(true)
    }
}

impl Run {
    fn view(&self, now_unix: u64) -> SinkRun {
        let (exit_code, secs) = match self.ended {
            Some((c, s)) => (Some(c), s),
            None => (None, now_unix.saturating_sub(self.started_unix)),
        };
        SinkRun {
            running: self.ended.is_none(),
            started: rfc3339(self.started_unix as i64),
            started_unix: self.started_unix,
            secs,
            progress: self.progress.clone(),
            output: self.lines.iter().cloned().collect(),
            exit_code,
            summary: self
                .lines
                .iter()
                .rev()
                .find(|l| l.starts_with("snapshot "))
                .cloned(),
        }
    }
}

/// Reads a child's output into its run, line by line, bounded.
fn pump(from: impl Read, run: &Mutex<Runs>) {
    let mut r = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // A longer line comes in pieces: each piece is a line here.
        match r.by_ref().take(LINE_CAP as u64).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        let mut runs = run.lock().expect("poisoned");
        let Some(cur) = runs.current.as_mut() else {
            return;
        };
        if let Some(p) = line.strip_prefix("progress: ") {
            cur.progress = Some(p.to_string());
        } else {
            if cur.lines.len() == KEEP_LINES {
                cur.lines.pop_front();
            }
            cur.lines.push_back(line);
        }
    }
}

/// Runs `chute list --json`: the newest [`SHOW`] snapshots, newest first, and
/// how many there are; or the child's last line of error.
fn read_list(exe: &std::path::Path) -> Result<(Vec<OwnSnapshot>, u64), String> {
    parse_list(&run_child(exe, "list")?)
}

/// Runs `chute status --json`: the node's last sink and verify.
fn read_runs(exe: &std::path::Path) -> Result<(Option<Record>, Option<Record>), String> {
    let out = run_child(exe, "status")?;
    let text = std::str::from_utf8(&out).map_err(|_| "chute status: output is not UTF-8")?;
    let s: StatusOut = miniserde::json::from_str(text.trim())
        .map_err(|_| "chute status: output is not the JSON object it prints")?;
    Ok((s.last_sink, s.last_verify))
}

/// Runs `chute COMMAND --json` and reads its output, up to [`LIST_CAP`]
/// bytes; or says how it failed, with the child's last line of error.
fn run_child(exe: &std::path::Path, command: &str) -> Result<Vec<u8>, String> {
    let mut child = crate::testhooks::child_command(exe)
        .args([command, "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let mut out = Vec::new();
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        if let Some(s) = stderr {
            let _ = s.take(64 << 10).read_to_end(&mut e);
        }
        e
    });
    if let Some(o) = child.stdout.take() {
        let _ = o.take(LIST_CAP).read_to_end(&mut out);
    }
    // Past the cap the child may block writing: it is ended, not waited on.
    if out.len() as u64 >= LIST_CAP {
        let _ = child.kill();
    }
    let err = reader.join().unwrap_or_default();
    let status = child.wait().map_err(|e| format!("chute {command}: {e}"))?;
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let last = text.lines().rev().find(|l| !l.trim().is_empty());
        return Err(format!(
            "chute {command} failed: {}",
            last.unwrap_or("no message")
        ));
    }
    Ok(out)
}

/// The newest [`SHOW`] of `chute list --json`'s snapshots (it lists them
/// oldest first), newest first, and how many there are.
fn parse_list(json: &[u8]) -> Result<(Vec<OwnSnapshot>, u64), String> {
    let text = std::str::from_utf8(json).map_err(|_| "chute list: output is not UTF-8")?;
    let all: Vec<Listed> = miniserde::json::from_str(text.trim())
        .map_err(|_| "chute list: output is not the JSON list it prints")?;
    let total = all.len() as u64;
    let shown = all
        .into_iter()
        .rev()
        .take(SHOW)
        .map(|l| OwnSnapshot {
            id: l.id,
            time: l.time,
            paths: l.paths,
            files: l.files,
            bytes: l.bytes,
        })
        .collect();
    Ok((shown, total))
}

/// When the next nightly sink is due: systemd's timer when it is enabled
/// (then the cron entry stands aside), else the cron entry's schedule.
fn schedule() -> Option<String> {
    let systemd = Command::new("systemctl")
        .args([
            "show",
            "chute-sink.timer",
            "--property=UnitFileState",
            "--property=NextElapseUSecRealtime",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| timer_schedule(&String::from_utf8_lossy(&o.stdout)));
    systemd.or_else(|| cron_schedule(&std::fs::read_to_string(CRON_FILE).ok()?))
}

/// From `systemctl show`'s `KEY=VALUE` lines: the timer's next time, if enabled.
pub fn timer_schedule(show: &str) -> Option<String> {
    let get = |k: &str| show.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    if get("UnitFileState=") != Some("enabled") {
        return None;
    }
    Some(match get("NextElapseUSecRealtime=") {
        Some(t) if !t.is_empty() && t != "n/a" => format!("{t} (chute-sink.timer)"),
        _ => "chute-sink.timer is enabled; systemd names no next time".into(),
    })
}

/// From a cron file: the first entry's five time fields.
pub fn cron_schedule(text: &str) -> Option<String> {
    let entry = text.lines().map(str::trim).find(|l| {
        !l.is_empty()
            && !l.starts_with('#')
            && l.split_whitespace()
                .next()
                .is_some_and(|w| !w.contains('='))
    })?;
    let fields: Vec<&str> = entry.split_whitespace().take(5).collect();
    (fields.len() == 5).then(|| {
        format!(
            "cron: {} in {CRON_FILE} (minute, hour, day, month, weekday; this machine's time zone)",
            fields.join(" ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keep_the_newest_first() {
        let json = br#"[{"id":"aa","time":"2026-12-01 03:17:00","timestamp":"t1","host":"pi","paths":["/etc"],"files":3,"dirs":1,"bytes":100,"blob":"b","seq":1},
            {"id":"bb","time":"2026-12-02 03:17:00","timestamp":"t2","host":"pi","paths":["/etc","/home"],"files":4,"dirs":2,"bytes":200,"blob":"b","seq":2}]"#;
        let (shown, total) = parse_list(json).unwrap();
        assert_eq!(total, 2);
        assert_eq!(shown[0].id, "bb");
        assert_eq!(shown[0].paths, ["/etc", "/home"]);
        assert_eq!((shown[1].id.as_str(), shown[1].files), ("aa", 3));
        assert!(parse_list(b"[]").unwrap().0.is_empty());
        assert!(parse_list(b"error").is_err());
        assert!(parse_list(b"\xff").is_err());
        let many: Vec<String> = (0..SHOW + 5)
            .map(|i| format!(r#"{{"id":"{i}","time":"t","paths":[],"files":0,"bytes":0}}"#))
            .collect();
        let (shown, total) = parse_list(format!("[{}]", many.join(",")).as_bytes()).unwrap();
        assert_eq!((shown.len(), total), (SHOW, SHOW as u64 + 5));
        assert_eq!(shown[0].id, (SHOW + 4).to_string());
    }

    #[test]
    fn schedules_from_systemd_and_cron() {
        assert_eq!(
            timer_schedule(
                "NextElapseUSecRealtime=Thu 2026-12-03 03:22:41 UTC\nUnitFileState=enabled\n"
            )
            .as_deref(),
            Some("Thu 2026-12-03 03:22:41 UTC (chute-sink.timer)")
        );
        assert_eq!(
            timer_schedule("NextElapseUSecRealtime=\nUnitFileState=disabled\n"),
            None
        );
        assert_eq!(timer_schedule(""), None);
        let cron = "# /etc/cron.d/chute\nMAILTO=root\n\n17 3 * * * root systemctl is-enabled x || { log=$(mktemp); }\n";
        let s = cron_schedule(cron).unwrap();
        assert!(
            s.starts_with("cron: 17 3 * * * in /etc/cron.d/chute"),
            "{s}"
        );
        assert_eq!(cron_schedule("# nothing\nPATH=/bin\n"), None);
        assert_eq!(cron_schedule("17 3 *\n"), None);
        // The shipped entry.
        let shipped = include_str!("../../setup/chute.cron");
        assert!(cron_schedule(shipped).is_some_and(|s| s.starts_with("cron: 17 3 * * * ")));
    }

    #[test]
    fn a_sink_s_output_is_kept_bounded() {
        let runs = Mutex::new(Runs {
            current: Some(Run {
                started_unix: 0,
                started: Instant::now(),
                progress: None,
                lines: VecDeque::new(),
                ended: None,
            }),
            ..Runs::default()
        });
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("warning {i}\nprogress: {i} files, 1 KiB\n"));
        }
        text.push_str(&"x".repeat(LINE_CAP * 2 + 10));
        text.push_str("\nsnapshot 1a2b saved: 3 files\n");
        pump(text.as_bytes(), &runs);
        let runs = runs.lock().unwrap();
        let cur = runs.current.as_ref().unwrap();
        assert_eq!(cur.lines.len(), KEEP_LINES);
        assert!(cur.lines.iter().all(|l| l.len() <= LINE_CAP));
        assert_eq!(cur.progress.as_deref(), Some("99 files, 1 KiB"));
        let v = cur.view(5);
        assert_eq!(v.summary.as_deref(), Some("snapshot 1a2b saved: 3 files"));
        assert!(v.running);
        assert_eq!(v.secs, 5);
    }
}
