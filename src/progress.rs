//! Progress of a long command on stderr (sink, restore, `verify --read-data`,
//! prune): files and bytes done of the total, the rate over the last few seconds
//! and the time left.
//!
//! Three modes, chosen once by the command ([`Show`]): `Off` (a flag such as
//! `--quiet` turns it off); `Terminal`, one line redrawn in place at most every
//! [`REDRAW`] and only when stderr is a terminal at construction (so cron and
//! pipes get nothing but the summary, at the cost of one `isatty`); `Lines`, a
//! line `progress: ...` every [`LINE_EVERY`] wherever stderr goes (`chute sink
//! --progress`: a log, the management page's sink, which shows what follows
//! `progress: `).
//!
//! The object is shared between threads: counters are atomics the workers add to,
//! and whoever calls [`Progress::tick`] when a redraw is due draws (one at a time,
//! the others skip). Anything else written to stderr while a line is shown calls
//! [`Progress::clear`] first. Memory is a few counters and [`SAMPLES`] rate
//! samples, whatever the number of files.
//!
//! Totals: restore, verify and prune know theirs from their plan. A sink's walk is
//! single-pass, so when progress is shown a counting thread walks the same roots
//! alongside ([`count`]: stat only, depth-first on open directory handles, so its
//! memory is the tree's depth, not its size) and the line says `≥ N` until the
//! count is done; the count only approximates what the sink keeps (it applies the
//! excludes and stays on each root's device, not `CACHEDIR.TAG` or this backup's
//! own files), so a total passed is raised to what was done, and the summary is
//! exact. With progress off nothing is counted.
//!
//! The line is built by [`line`], a pure function of the counters and a rate
//! measured by [`Rate`] with an injected clock, so both are unit-tested without
//! sleeping.

use crate::units::{human_age, human_bytes};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How a command shows its progress on stderr (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    Off,
    /// One live line, redrawn in place, when stderr is a terminal.
    Terminal,
    /// A line `progress: ...` every [`LINE_EVERY`] wherever stderr goes.
    Lines,
}

/// How often [`Show::Lines`] writes a line.
pub const LINE_EVERY: Duration = Duration::from_secs(2);
/// Least time between two redraws on a terminal (4 a second).
pub const REDRAW: Duration = Duration::from_millis(250);
/// Rate samples kept: the rate is over the last `SAMPLES` redraws (~5 s).
pub const SAMPLES: usize = 20;

/// The totals a line compares with; `exact` false while they are still counted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Total {
    pub files: u64,
    pub bytes: u64,
    pub exact: bool,
}

/// Bytes per second over a sliding window of samples `(time since start, bytes)`.
#[derive(Default)]
pub struct Rate {
    samples: std::collections::VecDeque<(Duration, u64)>,
}

impl Rate {
    pub fn push(&mut self, at: Duration, bytes: u64) {
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((at, bytes));
    }

    /// None until the samples span half a second (a rate from less is noise).
    pub fn per_sec(&self) -> Option<f64> {
        let (t0, b0) = *self.samples.front()?;
        let (t1, b1) = *self.samples.back()?;
        let secs = t1.saturating_sub(t0).as_secs_f64();
        (secs >= 0.5).then(|| b1.saturating_sub(b0) as f64 / secs)
    }
}

/// The progress line: `N/M files, SIZE/SIZE P%, RATE/s, ETA T`; totals marked
/// `≥` while counted (no percentage or ETA then), no rate before one is known.
pub fn line(noun: &str, files: u64, bytes: u64, total: Option<Total>, rate: Option<f64>) -> String {
    let mut s = match total {
        None => format!("{files} {noun}, {}", human_bytes(bytes)),
        Some(t) => {
            // A count that fell short of what was done says what was done.
            let (tf, tb) = (t.files.max(files), t.bytes.max(bytes));
            let ge = if t.exact { "" } else { "≥" };
            let mut s = format!(
                "{files}/{ge}{tf} {noun}, {}/{ge}{}",
                human_bytes(bytes),
                human_bytes(tb)
            );
            if t.exact && tb > 0 {
                s.push_str(&format!(" {}%", bytes * 100 / tb));
            }
            s
        }
    };
    if let Some(r) = rate {
        s.push_str(&format!(", {}/s", human_bytes(r as u64)));
        if let Some(t) = total.filter(|t| t.exact && r >= 1.0) {
            let left = t.bytes.saturating_sub(bytes) as f64 / r;
            // Beyond 100 days an ETA says nothing.
            if left < 8_640_000.0 {
                s.push_str(&format!(", ETA {}", human_age(left.ceil() as u64)));
            }
        }
    }
    s
}

/// A command's progress on stderr (see the module doc).
pub struct Progress {
    mode: Show,
    what: &'static str,
    noun: &'static str,
    started: Instant,
    files: AtomicU64,
    bytes: AtomicU64,
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    /// 0 no total, 1 counting, 2 exact.
    total_state: AtomicU64,
    state: Mutex<State>,
}

struct State {
    sampled: Option<Instant>,
    drawn: Option<Instant>,
    rate: Rate,
    shown: bool,
}

impl Progress {
    /// `what` starts the terminal line (`sink`, `restore`...).
    pub fn new(what: &'static str, wanted: Show) -> Progress {
        let mode = match wanted {
            Show::Terminal if !std::io::stderr().is_terminal() => Show::Off,
            m => m,
        };
        Progress {
            mode,
            what,
            noun: "files",
            started: Instant::now(),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total_files: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            total_state: AtomicU64::new(0),
            state: Mutex::new(State {
                sampled: None,
                drawn: None,
                rate: Rate::default(),
                shown: false,
            }),
        }
    }

    /// What the line counts instead of files (prune counts blobs).
    pub fn counting(mut self, noun: &'static str) -> Progress {
        self.noun = noun;
        self
    }

    pub fn on(&self) -> bool {
        self.mode != Show::Off
    }

    /// The totals; `exact` false while still counting.
    pub fn total(&self, files: u64, bytes: u64, exact: bool) {
        self.total_files.store(files, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
        self.total_state
            .store(if exact { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// Sets what is done so far, and draws if due.
    pub fn set(&self, files: u64, bytes: u64) {
        self.files.store(files, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        self.tick();
    }

    /// Adds to what is done, and draws if due.
    pub fn add(&self, files: u64, bytes: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.tick();
    }

    /// Draws the line if a redraw is due.
    pub fn tick(&self) {
        let every = match self.mode {
            Show::Off => return,
            Show::Terminal => REDRAW,
            Show::Lines => LINE_EVERY,
        };
        let Ok(mut st) = self.state.try_lock() else {
            return;
        };
        let now = Instant::now();
        if st.sampled.is_some_and(|t| now.duration_since(t) < REDRAW) {
            return;
        }
        st.sampled = Some(now);
        let (files, bytes) = (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        );
        st.rate.push(now - self.started, bytes);
        // The first sample starts the clock: a command that ends within a
        // redraw shows nothing.
        let drawn = *st.drawn.get_or_insert(now);
        if now.duration_since(drawn) < every {
            return;
        }
        st.drawn = Some(now);
        let total = match self.total_state.load(Ordering::Relaxed) {
            0 => None,
            s => Some(Total {
                files: self.total_files.load(Ordering::Relaxed),
                bytes: self.total_bytes.load(Ordering::Relaxed),
                exact: s == 2,
            }),
        };
        let text = line(self.noun, files, bytes, total, st.rate.per_sec());
        let mut e = std::io::stderr().lock();
        if self.mode == Show::Lines {
            let _ = writeln!(e, "progress: {text}");
        } else {
            st.shown = true;
            let _ = write!(e, "\r\x1b[K{}: {text}", self.what);
            let _ = e.flush();
        }
    }

    /// Erases a shown line, before something else is written to stderr.
    pub fn clear(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.shown {
            eprint!("\r\x1b[K");
            st.shown = false;
        }
    }
}

impl Drop for Progress {
    /// A command that returns early (an error) leaves no line behind its message.
    fn drop(&mut self) {
        self.clear();
    }
}

/// Counts the regular files and their bytes under `roots` for a sink's total,
/// calling `report(files, bytes, done)` as it goes and once at the end; stops
/// early when `stop` is set. Leaves out what `excluded` names and directories on
/// another device than their root; never follows symlinks.
pub fn count(
    roots: &[std::path::PathBuf],
    excluded: &dyn Fn(&Path) -> bool,
    stop: &AtomicBool,
    report: &dyn Fn(u64, u64, bool),
) {
    use std::os::unix::fs::MetadataExt;
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut last = Instant::now();
    for root in roots {
        let Ok(md) = std::fs::symlink_metadata(root) else {
            continue;
        };
        if md.is_file() {
            files += 1;
            bytes += md.len();
            continue;
        }
        if !md.is_dir() {
            continue;
        }
        let dev = md.dev();
        let mut stack = Vec::new();
        if let Ok(rd) = std::fs::read_dir(root) {
            stack.push(rd);
        }
        while let Some(rd) = stack.last_mut() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(entry) = rd.next() else {
                stack.pop();
                continue;
            };
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            if excluded(&path) {
                continue;
            }
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if md.is_file() {
                files += 1;
                bytes += md.len();
            } else if md.is_dir() && md.dev() == dev {
                if let Ok(rd) = std::fs::read_dir(&path) {
                    stack.push(rd);
                }
            }
            if last.elapsed() >= REDRAW {
                last = Instant::now();
                report(files, bytes, false);
            }
        }
    }
    report(files, bytes, true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rate_is_over_the_window_and_waits_for_half_a_second() {
        let mut r = Rate::default();
        assert_eq!(r.per_sec(), None);
        r.push(ms(0), 0);
        r.push(ms(250), 1 << 20);
        assert_eq!(r.per_sec(), None);
        r.push(ms(1000), 4 << 20);
        assert_eq!(r.per_sec(), Some(4.0 * 1048576.0));
        // Old samples leave the window: a stall shows as a falling rate.
        for i in 0..SAMPLES as u64 {
            r.push(ms(2000 + i * 250), 10 << 20);
        }
        assert_eq!(r.per_sec(), Some(0.0));
    }

    #[test]
    fn no_total_yet_shows_counts_and_rate() {
        assert_eq!(line("files", 3, 5 << 20, None, None), "3 files, 5.0 MiB");
        assert_eq!(
            line("files", 3, 5 << 20, None, Some(2.0 * 1048576.0)),
            "3 files, 5.0 MiB, 2.0 MiB/s"
        );
    }

    #[test]
    fn a_total_being_counted_is_a_lower_bound_without_eta() {
        let t = Total {
            files: 10,
            bytes: 100 << 20,
            exact: false,
        };
        assert_eq!(
            line("files", 3, 5 << 20, Some(t), Some(1048576.0)),
            "3/≥10 files, 5.0 MiB/≥100.0 MiB, 1.0 MiB/s"
        );
    }

    #[test]
    fn an_exact_total_gives_percent_and_eta() {
        let t = Total {
            files: 10,
            bytes: 100 << 20,
            exact: true,
        };
        assert_eq!(
            line("files", 4, 25 << 20, Some(t), Some(1048576.0)),
            "4/10 files, 25.0 MiB/100.0 MiB 25%, 1.0 MiB/s, ETA 1m 15s"
        );
        // No rate yet: no ETA.
        assert_eq!(
            line("files", 4, 25 << 20, Some(t), None),
            "4/10 files, 25.0 MiB/100.0 MiB 25%"
        );
        // A stalled transfer has no ETA rather than an absurd one.
        assert_eq!(
            line("files", 4, 25 << 20, Some(t), Some(0.0)),
            "4/10 files, 25.0 MiB/100.0 MiB 25%, 0 B/s"
        );
    }

    #[test]
    fn done_beyond_the_total_clamps_it() {
        let t = Total {
            files: 2,
            bytes: 1 << 20,
            exact: true,
        };
        assert_eq!(
            line("files", 3, 2 << 20, Some(t), Some(1048576.0)),
            "3/3 files, 2.0 MiB/2.0 MiB 100%, 1.0 MiB/s, ETA 0s"
        );
        let empty = Total {
            files: 0,
            bytes: 0,
            exact: true,
        };
        assert_eq!(line("files", 0, 0, Some(empty), None), "0/0 files, 0 B/0 B");
    }

    #[test]
    fn counting_stays_in_the_roots_device_and_skips_excludes() {
        let dir = std::env::temp_dir().join(format!("chute-count-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/one"), [0u8; 10]).unwrap();
        std::fs::write(dir.join("a/b/two"), [0u8; 20]).unwrap();
        std::fs::write(dir.join("a/skip"), [0u8; 40]).unwrap();
        std::os::unix::fs::symlink("/", dir.join("a/link")).unwrap();
        let got = std::cell::Cell::new((0, 0, false));
        count(
            &[dir.join("a")],
            &|p| p.ends_with("skip"),
            &AtomicBool::new(false),
            &|f, b, d| got.set((f, b, d)),
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got.get(), (2, 30, true));
    }
}
