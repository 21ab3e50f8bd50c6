//! `chute scrub`: the keyless check of a store, run where the store is.
//!
//! Every window file was hashed as it arrived and is named with that SHA-256 (see
//! [`crate::store`]). A scrub reads each window file again and compares its length
//! and SHA-256 with its name ([`Store::scrub`]), so a peer finds bit rot in the
//! backups it keeps for others without holding any key, and can tell them (their
//! `chute verify` names the files). It also checks that each committed blob's
//! `index.json` parses and that its window files cover `[0, size)`: a deleted
//! window is reported as a damaged range (`no window file holds bytes A..B`). It reads one window at a time: memory does not
//! grow with the store. Exit status 1 if any window is damaged. Either way it
//! re-reads every window, ignoring the store's verified-hash record, and leaves
//! that record vouching only for what it found intact. It removes the temporary
//! files killed writers left in blobs and reports them, and those live writers
//! hold (see [`crate::store`]):
//!
//! ```text
//! temporary files: 3 swept (12.0 MiB), 1 in use by a live writer (2.0 MiB)
//! ```
//!
//! `chute serve --scrub-every DURATION` also runs it in the background
//! ([`background`]): one thread at the lowest CPU and I/O priority, reading at most
//! `--scrub-rate` bytes a second, logging each damaged window as it is found and one
//! line per pass, in the access log's shape:
//!
//! ```text
//! scrub "SCRUB /chute/blob/" pass started
//! scrub "SCRUB /chute/blob/d.org/pi/m1/t1/0" damaged window at byte 4194304 (2097152 bytes): its bytes no longer match the SHA-256 they arrived with
//! scrub "SCRUB /chute/blob/" pass done: 812 windows (1.6 GiB) in 9 blobs in 171.3 s: 1 damaged; next in 30d
//! ```
//!
//! Its progress survives a restart in `<store>/.scrub-state` (written atomically):
//!
//! ```text
//! chute-scrub 1
//! last-pass <unix seconds>   start of the last completed pass, or 0
//! pass <unix seconds>        start of the pass in progress, or -
//! after <d/n/m/t>            the last blob that pass finished, or -
//! ```
//!
//! A pass is due `--scrub-every` after the last completed one started; a pass in
//! progress resumes after the last blob it finished. SIGINT/SIGTERM stop it between
//! windows (at most one window read, up to 64 MiB, after the signal).

use crate::snapshot::unix_now;
use crate::store::{ScrubEvent, Store};
use crate::units::human_bytes;
use std::path::Path;
use std::time::{Duration, Instant};

/// The background scrub's read rate unless `--scrub-rate` says otherwise: about a
/// third of what a USB 2 disk or a good SD card reads, so requests keep most of the
/// disk, and still a whole terabyte a day and a bit.
pub const DEFAULT_RATE: u64 = 10 << 20;

/// How `chute serve` scrubs in the background.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Background {
    /// Seconds from the start of one completed pass to the start of the next.
    pub every: u64,
    /// Bytes read per second at most; 0 for no limit.
    pub rate: u64,
}

/// What the management page shows of the background scrub (see [`crate::ui`]),
/// kept up to date by [`background`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Start of the last completed pass (Unix seconds), if any.
    pub last_pass: Option<u64>,
    /// Damaged windows the last completed pass found (one this server ran: the
    /// state file keeps no count).
    pub damaged: Option<u64>,
    /// Damaged windows found so far by the pass in progress.
    pub damaged_now: u64,
    /// Start of the pass in progress.
    pub running: Option<u64>,
}

const STATE: &str = ".scrub-state";
const STATE_MAGIC: &str = "chute-scrub";
const STATE_VERSION: u32 = 1;
/// Least time between two saves of the progress of a pass.
const SAVE_EVERY: Duration = Duration::from_secs(10);
/// How long to wait before trying a pass that failed (listing the store) again.
const RETRY: u64 = 600;

/// What `.scrub-state` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ScrubState {
    /// Start of the last completed pass (Unix seconds), 0 if none.
    last_pass: u64,
    /// Start of the pass in progress, and the last blob it finished.
    pass: Option<(u64, Option<String>)>,
}

impl ScrubState {
    fn render(&self) -> String {
        let (pass, after) = match &self.pass {
            Some((t, a)) => (t.to_string(), a.clone().unwrap_or_else(|| "-".into())),
            None => ("-".into(), "-".into()),
        };
        format!(
            "{STATE_MAGIC} {STATE_VERSION}\nlast-pass {}\npass {pass}\nafter {after}\n",
            self.last_pass
        )
    }

    fn parse(text: &str) -> std::result::Result<ScrubState, String> {
        let mut lines = text.lines();
        let head = lines.next().unwrap_or("");
        match head
            .strip_prefix(STATE_MAGIC)
            .map(|v| v.trim().parse::<u32>())
        {
            Some(Ok(STATE_VERSION)) => {}
            Some(Ok(v)) if v > STATE_VERSION => {
                return Err(format!(
                    "written by a newer chute (format {v}, this build reads {STATE_VERSION})"
                ));
            }
            _ => return Err("not a scrub state file".into()),
        }
        let mut field = |name: &str| -> std::result::Result<String, String> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|v| v.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| format!("no {name} line"))
        };
        let last_pass = field("last-pass")?
            .parse()
            .map_err(|_| "bad last-pass".to_string())?;
        let pass = field("pass")?;
        let after = field("after")?;
        let pass = match pass.as_str() {
            "-" => None,
            t => {
                let t = t.parse().map_err(|_| "bad pass".to_string())?;
                let after = (after != "-").then_some(after);
                if let Some(a) = &after {
                    if crate::blob::BlobId::parse(a).is_err() {
                        return Err("bad after".into());
                    }
                }
                Some((t, after))
            }
        };
        Ok(ScrubState { last_pass, pass })
    }
}

/// `90` → `90s`, `86400` → `1d`: the largest unit that divides it.
pub fn human_secs(s: u64) -> String {
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn log(what: &str, msg: &str) {
    crate::server::log(&format!("scrub \"SCRUB /chute/blob/{what}\" {msg}"));
}

/// Sleeps until `until` (Unix seconds) or until `stop` says so; false if stopped.
fn wait_until(until: u64, stop: &dyn Fn() -> bool) -> bool {
    while unix_now() < until {
        if stop() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    !stop()
}

fn save(path: &Path, state: &ScrubState) {
    if let Err(e) = crate::store::write_atomic(path, state.render().as_bytes()) {
        crate::server::log(&format!(
            "chute serve: scrub: cannot save its progress: {e}"
        ));
    }
}

/// The background scrub of a served store, until `stop` says so: each pass re-reads
/// every window at no more than `bg.rate` bytes a second, on this thread, at the
/// lowest priority. See the module docs for the log lines and the state file.
/// `summary` follows its passes, for the management page.
pub fn background(
    store: &Store,
    bg: Background,
    stop: &dyn Fn() -> bool,
    summary: &std::sync::Mutex<Summary>,
) {
    let note = |f: &dyn Fn(&mut Summary)| f(&mut summary.lock().expect("poisoned"));
    crate::sys::lower_thread_priority();
    // Its progress lives beside the store's objects; a store with no local
    // directory (an object store) keeps no progress and has no scrub of its own.
    let Some(dir) = store.local_dir() else {
        crate::server::log("chute serve: scrub: this store has no background scrub");
        return;
    };
    let path = dir.join(STATE);
    let mut state = match std::fs::read_to_string(&path) {
        Ok(text) => match ScrubState::parse(&text) {
            Ok(s) => s,
            Err(e) if e.starts_with("written by a newer") => {
                crate::server::log(&format!(
                    "chute serve: scrub: {} was {e}; the background scrub is off",
                    path.display()
                ));
                return;
            }
            Err(e) => {
                crate::server::log(&format!(
                    "chute serve: scrub: {} is damaged ({e}); starting afresh",
                    path.display()
                ));
                ScrubState::default()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ScrubState::default(),
        Err(e) => {
            crate::server::log(&format!(
                "chute serve: scrub: cannot read {}: {e}; the background scrub is off",
                path.display()
            ));
            return;
        }
    };
    let last = (state.last_pass > 0).then_some(state.last_pass);
    note(&|s| s.last_pass = last);
    let mut retry_at = 0;
    loop {
        let now = unix_now();
        let due = match &state.pass {
            Some(_) => now,
            None if state.last_pass == 0 => now,
            // A clock set back must not postpone the next pass by years.
            None => state.last_pass.min(now).saturating_add(bg.every),
        };
        if !wait_until(due.max(retry_at), stop) {
            return;
        }
        let (started, after) = state.pass.clone().unwrap_or((unix_now(), None));
        state.pass = Some((started, after.clone()));
        save(&path, &state);
        note(&|s| {
            s.running = Some(started);
            s.damaged_now = 0;
        });
        log(
            "",
            &match &after {
                Some(a) => format!("pass resumed after {a}"),
                None => "pass started".into(),
            },
        );
        let clock = Instant::now();
        let mut read = 0u64;
        let mut saved = Instant::now();
        let result = store.scrub_paced(after.as_deref(), &mut |event| {
            match event {
                ScrubEvent::Read(n) => {
                    read += n;
                    if bg.rate > 0 {
                        let due = Duration::from_secs_f64(read as f64 / bg.rate as f64);
                        while clock.elapsed() < due {
                            if stop() {
                                return false;
                            }
                            let left = due.saturating_sub(clock.elapsed());
                            std::thread::sleep(left.min(Duration::from_millis(100)));
                        }
                    }
                }
                ScrubEvent::Damaged(d) => {
                    note(&|s| s.damaged_now += 1);
                    log(
                        &format!("{}/0", d.blob),
                        &format!(
                            "damaged window at byte {} ({} bytes): {}",
                            d.offset, d.len, d.why
                        ),
                    )
                }
                ScrubEvent::BlobDone(blob) => {
                    state.pass = Some((started, Some(blob.to_string())));
                    if saved.elapsed() >= SAVE_EVERY {
                        save(&path, &state);
                        saved = Instant::now();
                    }
                }
            }
            !stop()
        });
        let secs = clock.elapsed().as_secs_f64();
        match result {
            Ok(r) => {
                let mut found = if r.damaged.is_empty() {
                    "all intact".to_string()
                } else {
                    format!("{} damaged", r.damaged.len())
                };
                if r.temps.any() {
                    found.push_str(&format!("; temporary files: {}", r.temps.describe()));
                }
                let what = format!(
                    "{} windows ({}) in {} blobs in {secs:.1} s: {found}",
                    r.windows,
                    human_bytes(r.bytes),
                    r.blobs
                );
                if r.stopped {
                    save(&path, &state);
                    let resume = match &state.pass {
                        Some((_, Some(a))) => format!("after {a}"),
                        _ => "from the start".into(),
                    };
                    log("", &format!("pass stopped after {what}; resumes {resume}"));
                    return;
                }
                state = ScrubState {
                    last_pass: started,
                    pass: None,
                };
                let damaged = r.damaged.len() as u64;
                note(&|s| {
                    *s = Summary {
                        last_pass: Some(started),
                        damaged: Some(damaged),
                        damaged_now: 0,
                        running: None,
                    }
                });
                save(&path, &state);
                log(
                    "",
                    &format!("pass done: {what}; next in {}", human_secs(bg.every)),
                );
            }
            Err(e) => {
                save(&path, &state);
                note(&|s| s.running = None);
                crate::server::log(&format!(
                    "chute serve: scrub: {e}; trying again in {}",
                    human_secs(RETRY)
                ));
                retry_at = unix_now() + RETRY;
            }
        }
        if stop() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_refuses_what_it_cannot_read() {
        for s in [
            ScrubState::default(),
            ScrubState {
                last_pass: 1_700_000_000,
                pass: Some((1_700_100_000, None)),
            },
            ScrubState {
                last_pass: 0,
                pass: Some((1_700_100_000, Some("d.org/pi/m1/t1".into()))),
            },
        ] {
            assert_eq!(ScrubState::parse(&s.render()), Ok(s.clone()));
        }
        let newer = ScrubState::parse("chute-scrub 2\n").unwrap_err();
        assert!(newer.starts_with("written by a newer chute"), "{newer}");
        for bad in [
            "",
            "chute-scrub 1\n",
            "chute-scrub 1\nlast-pass x\npass -\nafter -\n",
            "chute-scrub 1\nlast-pass 0\npass 5\nafter ../../etc\n",
            "\0\0\0",
        ] {
            assert!(ScrubState::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(human_secs(30 * 86_400), "30d");
        assert_eq!(human_secs(90), "90s");
    }
}
