//! Bandwidth limits (`--limit-upload`, `--limit-download`; bytes a second): one
//! token bucket per direction for the whole process, so parallel upload or
//! download workers share one budget. Every byte a command sends to its remote
//! or reads from it passes through [`Paced`]: the HTTP remote's and the S3
//! client's request and answer bodies (sent with an explicit Content-Length, so
//! a request stays unchunked as without a limit), and a store directory's window
//! writes and reads (as restic limits every backend). `chute serve` and `chute
//! scrub` take no limit.
//!
//! A bucket holds at most a quarter second's worth of bytes, so a burst after
//! idling is bounded; a take may overdraw it, and its taker then sleeps until the
//! debt is paid (outside the lock), so waiting threads queue up in order.
//! [`Bucket`] is pure (the caller passes the time); [`set`] installs the limits
//! once, before any remote is opened.

use std::io::{self, Read};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// A token bucket in bytes, refilled at `rate` bytes a second up to `burst`.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Duration,
}

impl Bucket {
    /// A full bucket at `now` for `rate` (> 0) bytes a second.
    pub fn new(rate: u64, now: Duration) -> Bucket {
        let burst = (rate / 4).max(1) as f64;
        Bucket {
            rate: rate as f64,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// The most bytes one take should ask for: a quarter second's worth.
    pub fn burst(&self) -> usize {
        self.burst as usize
    }

    /// Takes `n` bytes at `now` (a clock that never goes back; an earlier time
    /// counts as the last one); returns how long the taker waits before using them.
    pub fn take(&mut self, n: u64, now: Duration) -> Duration {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// One direction's limit: its bucket and the clock it runs on.
pub struct Limit {
    bucket: Mutex<Bucket>,
    /// Held while a paced request body is sent: one at a time gets the whole
    /// rate, where k at once would get a k-th each, and a peer drops a body that
    /// averages under 16 KiB/s (see [`MIN_UPLOAD`]).
    sending: Mutex<()>,
    start: Instant,
    chunk: usize,
    rate: u64,
}

impl Limit {
    fn new(rate: u64) -> Limit {
        let bucket = Bucket::new(rate, Duration::ZERO);
        Limit {
            chunk: bucket.burst(),
            bucket: Mutex::new(bucket),
            sending: Mutex::new(()),
            start: Instant::now(),
            rate,
        }
    }

    /// Spends `n` bytes, sleeping as long as the limit asks.
    fn spend(&self, n: usize) {
        let wait = self
            .bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(n as u64, self.start.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

static LIMITS: [OnceLock<Limit>; 2] = [OnceLock::new(), OnceLock::new()];

/// Installs the upload and download limits (bytes a second) for this process;
/// only the first call counts.
pub fn set(up: Option<u64>, down: Option<u64>) {
    for (slot, rate) in LIMITS.iter().zip([up, down]) {
        if let Some(r) = rate.filter(|&r| r > 0) {
            let _ = slot.set(Limit::new(r));
        }
    }
}

/// The upload limit, if one is set.
pub fn up() -> Option<&'static Limit> {
    LIMITS[0].get()
}

/// The download limit, if one is set.
pub fn down() -> Option<&'static Limit> {
    LIMITS[1].get()
}

/// The lowest upload limit: a peer drops a request body that averages under 16
/// KiB/s after its first 10 s (`body_floor` in the vendored tiny_http), and a
/// paced body gets the whole limit (see `Limit::sending`); twice that leaves room.
pub const MIN_UPLOAD: u64 = 32 * 1024;

/// How long a request or answer body may take under `limit` (the upload limit
/// for request bodies, the download limit for answers): `base`, plus the time
/// 16 of the largest windows take at that rate, so a window that shares a low
/// limit with other workers is not cut off by a timeout meant for a stalled peer.
pub fn body_timeout(base: Duration, limit: Option<&Limit>) -> Duration {
    limit.map_or(base, |l| {
        base + Duration::from_secs(16 * crate::protocol::MAX_WINDOW / l.rate)
    })
}

/// A reader whose bytes are spent from `limit` as they pass (none: unlimited),
/// at most one burst per read.
pub struct Paced<R> {
    pub inner: R,
    pub limit: Option<&'static Limit>,
}

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(l) = self.limit else {
            return self.inner.read(buf);
        };
        let max = buf.len().min(l.chunk);
        let n = self.inner.read(&mut buf[..max])?;
        // The end of a body (0) costs nothing, nor waits for others' debt.
        if n > 0 {
            l.spend(n);
        }
        Ok(n)
    }
}

/// Spends `n` bytes already moved from `limit`, one burst at a time.
pub fn spend(limit: Option<&'static Limit>, mut n: usize) {
    if let Some(l) = limit {
        while n > 0 {
            let k = n.min(l.chunk);
            l.spend(k);
            n -= k;
        }
    }
}

/// Runs `req` on `agent`, its body paced by the upload limit when one is set
/// (with its length as Content-Length, so it is sent as without a limit).
pub fn run(
    agent: &ureq::Agent,
    req: ureq::http::Request<&[u8]>,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let Some(limit) = up().filter(|_| !req.body().is_empty()) else {
        return agent.run(req);
    };
    let (mut parts, body) = req.into_parts();
    parts
        .headers
        .insert(ureq::http::header::CONTENT_LENGTH, body.len().into());
    let mut paced = Paced {
        inner: body,
        limit: Some(limit),
    };
    let send = ureq::SendBody::from_reader(&mut paced);
    let _turn = limit.sending.lock().unwrap_or_else(PoisonError::into_inner);
    agent.run(ureq::http::Request::from_parts(parts, send))
}

/// `r`, its bytes spent from the download limit when one is set.
pub fn download<R: Read>(r: R) -> Paced<R> {
    Paced {
        inner: r,
        limit: down(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_full_bucket_lets_a_quarter_second_through_then_paces() {
        let mut b = Bucket::new(1000, Duration::ZERO);
        assert_eq!(b.burst(), 250);
        assert_eq!(b.take(250, Duration::ZERO), Duration::ZERO);
        // Empty: 100 more bytes are 100 ms away.
        assert_eq!(b.take(100, Duration::ZERO), 100 * MS);
        // Another taker queues behind the first one's debt.
        assert_eq!(b.take(100, Duration::ZERO), 200 * MS);
        // Once the debt is paid, the rate holds: 50 bytes 50 ms later cost nothing extra.
        assert_eq!(b.take(50, 250 * MS), Duration::ZERO);
    }

    #[test]
    fn idling_never_saves_more_than_one_burst() {
        let mut b = Bucket::new(1000, Duration::ZERO);
        assert_eq!(b.take(250, Duration::ZERO), Duration::ZERO);
        // An hour idle refills a quarter second's worth, not an hour's.
        let later = Duration::from_secs(3600);
        assert_eq!(b.take(250, later), Duration::ZERO);
        assert_eq!(b.take(1, later), MS);
    }

    #[test]
    fn the_rate_holds_over_many_takes() {
        // 10 MiB at 2 MiB/s in 64 KiB takes, each after its wait: the last one
        // ends 5 s minus the first burst (a quarter second) in.
        let rate = 2 << 20;
        let mut b = Bucket::new(rate, Duration::ZERO);
        let mut now = Duration::ZERO;
        for _ in 0..160 {
            now += b.take(64 << 10, now);
        }
        let want = Duration::from_millis(4750);
        assert!(now.abs_diff(want) < MS, "{now:?}");
    }

    #[test]
    fn a_clock_read_late_by_another_thread_takes_nothing_back() {
        let mut b = Bucket::new(1000, 10 * MS);
        assert_eq!(b.take(250, 10 * MS), Duration::ZERO);
        // A time older than the last (read before another thread's take) refills nothing.
        assert_eq!(b.take(10, 5 * MS), 10 * MS);
    }

    #[test]
    fn an_unlimited_reader_passes_everything_at_once() {
        let data = vec![7u8; 100_000];
        let mut r = Paced {
            inner: &data[..],
            limit: None,
        };
        let mut buf = vec![0; 200_000];
        assert_eq!(r.read(&mut buf).unwrap(), 100_000);
    }
}
