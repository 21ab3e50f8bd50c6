//! chute patch: what one client may make the server spend (not in upstream tiny_http).
//!
//! Upstream gives every connection a thread and reads heads and bodies under the
//! socket's per-read timeout only, with no cap on connections, head size or time.
//! Here a [`Table`] admits connections under a global and a per-address cap
//! (closing the oldest idle connection to make room, refusing when none is idle),
//! and each connection's [`Conn`] bounds its reads: a request head must arrive
//! within `head_timeout` of its first byte, and a body must keep up an average of
//! `body_floor` bytes/s once `body_grace` has passed. Every read of the socket goes
//! through [`Conn::before_read`], which sets the socket's read timeout to what is
//! left, so no single read can outlive a deadline.

use crate::connection::Connection;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Shutdown};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Caps on what a client may make the server spend.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once, all clients together.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_per_address: usize,
    /// Time from a request head's first byte to its blank line.
    pub head_timeout: Duration,
    /// Time a body may take before `body_floor` applies.
    pub body_grace: Duration,
    /// Average body bytes per second a request must keep up after `body_grace`
    /// (0: no floor).
    pub body_floor: u64,
    /// Longest request line or header line.
    pub max_line: usize,
    /// Longest request head (request line and headers).
    pub max_head: usize,
    /// Most headers in one request.
    pub max_headers: usize,
    /// Before closing a connection whose body was left unread, read and discard
    /// at most this many bytes, for at most `linger_time`, so that the client sees
    /// the response instead of a reset.
    pub linger_bytes: usize,
    pub linger_time: Duration,
    /// A body left unread that is at most this long is skipped in place if it
    /// arrives within `drain_time` (the connection stays open); else the
    /// connection closes.
    pub drain_bytes: usize,
    pub drain_time: Duration,
    /// Stack of each connection's thread.
    pub stack_size: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 256,
            max_per_address: 64,
            head_timeout: Duration::from_secs(10),
            body_grace: Duration::from_secs(10),
            body_floor: 16 * 1024,
            max_line: 8 * 1024,
            max_head: 64 * 1024,
            max_headers: 100,
            linger_bytes: 64 * 1024,
            linger_time: Duration::from_secs(2),
            drain_bytes: 8 * 1024,
            drain_time: Duration::from_millis(100),
            stack_size: 128 * 1024,
        }
    }
}

enum Phase {
    /// Waiting for a request head; the deadline runs from its first byte.
    Head { first_byte: Option<Instant> },
    /// Reading a body; the floor runs from the first read of it.
    Body { first_read: Option<Instant>, bytes: u64 },
    /// Discarding what the client still sends before closing.
    Linger { until: Instant },
}

/// One admitted connection, shared by its thread, its requests and the table.
pub(crate) struct Conn {
    ip: Option<IpAddr>,
    /// A handle on the socket, to set its timeout and to shut it down.
    socket: Connection,
    /// The socket's own read timeout (the server's `--timeout`).
    base: Option<Duration>,
    limits: Arc<Limits>,
    epoch: Instant,
    close: AtomicBool,
    inflight: AtomicUsize,
    /// Requests read on this connection so far.
    served: AtomicU64,
    /// Milliseconds since `epoch` (plus one) at which the connection began waiting
    /// for a request head; 0 while a request is being read or handled.
    waiting: AtomicU64,
    phase: Mutex<Phase>,
}

impl Conn {
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection is to be closed after the responses already owed.
    pub(crate) fn must_close(&self) -> bool {
        self.close.load(SeqCst)
    }

    pub(crate) fn mark_close(&self) {
        self.close.store(true, SeqCst);
    }

    /// Closes the connection now: its thread's next read ends.
    fn kill(&self) {
        self.mark_close();
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    pub(crate) fn shutdown_write(&self) {
        let _ = self.socket.shutdown(Shutdown::Write);
    }

    pub(crate) fn request_started(&self) {
        self.served.fetch_add(1, SeqCst);
        self.inflight.fetch_add(1, SeqCst);
    }

    pub(crate) fn request_finished(&self) {
        self.inflight.fetch_sub(1, SeqCst);
    }

    /// The connection waits for (or reads) a request head: it is idle.
    pub(crate) fn start_head(&self) {
        *self.phase() = Phase::Head { first_byte: None };
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.waiting.store(ms, SeqCst);
    }

    /// The head is read: what follows is the request's body.
    pub(crate) fn start_body(&self) {
        *self.phase() = Phase::Body {
            first_read: None,
            bytes: 0,
        };
        self.waiting.store(0, SeqCst);
    }

    /// Reads from now on end within `limits.drain_time`.
    pub(crate) fn start_drain(&self) {
        *self.phase() = Phase::Linger {
            until: Instant::now() + self.limits.drain_time,
        };
    }

    pub(crate) fn start_linger(&self) {
        *self.phase() = Phase::Linger {
            until: Instant::now() + self.limits.linger_time,
        };
    }

    /// If the connection is idle: whether it ever completed a request head, and
    /// since when it is idle. Closed first: connections that never sent a whole
    /// request (idle from the start, or slow-loris heads), oldest first; then
    /// kept-alive clients that did, longest idle first.
    fn idle_since(&self) -> Option<(bool, u64)> {
        let w = self.waiting.load(SeqCst);
        (w != 0 && self.inflight.load(SeqCst) == 0).then(|| (self.served.load(SeqCst) > 0, w))
    }

    /// Before each read of the socket: fails once the current deadline has
    /// passed, else sets the socket's read timeout to the time left.
    pub(crate) fn before_read(&self) -> io::Result<()> {
        let now = Instant::now();
        let end = match &mut *self.phase() {
            Phase::Head { first_byte: None } => None,
            Phase::Head {
                first_byte: Some(t),
            } => Some(*t + self.limits.head_timeout),
            Phase::Body { first_read, bytes } => {
                let start = *first_read.get_or_insert(now);
                if self.limits.body_floor == 0 {
                    None
                } else {
                    let earned =
                        Duration::from_secs_f64(*bytes as f64 / self.limits.body_floor as f64);
                    Some(start + self.limits.body_grace.max(earned))
                }
            }
            Phase::Linger { until } => Some(*until),
        };
        let timeout = match end {
            None => self.base,
            Some(end) => {
                let left = end.saturating_duration_since(now);
                if left.is_zero() {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        "the client is too slow (deadline passed)",
                    ));
                }
                Some(self.base.map_or(left, |b| b.min(left)))
            }
        };
        self.socket
            .set_read_timeout(timeout.map(|t| t.max(Duration::from_millis(1))))
    }

    /// After each read of the socket.
    pub(crate) fn after_read(&self, n: usize) {
        match &mut *self.phase() {
            Phase::Head { first_byte } if n > 0 => {
                first_byte.get_or_insert_with(Instant::now);
            }
            Phase::Body { bytes, .. } => *bytes += n as u64,
            _ => {}
        }
    }
}

/// The connections open now.
pub(crate) struct Table {
    limits: Arc<Limits>,
    epoch: Instant,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Connections closed or refused to make room, since the last warning.
    evicted: AtomicU64,
    refused: AtomicU64,
    warned: Mutex<Option<Instant>>,
}

/// A connection's place in the table: dropping it frees the place.
pub(crate) struct Admission {
    table: Arc<Table>,
    conn: Arc<Conn>,
}

impl Admission {
    pub(crate) fn conn(&self) -> Arc<Conn> {
        self.conn.clone()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut conns = self.table.lock();
        conns.retain(|c| !Arc::ptr_eq(c, &self.conn));
    }
}

impl Table {
    pub(crate) fn new(limits: Limits) -> Arc<Table> {
        Arc::new(Table {
            limits: Arc::new(limits),
            epoch: Instant::now(),
            conns: Mutex::new(Vec::new()),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            warned: Mutex::new(None),
        })
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection, closing the oldest idle one (from the same address
    /// if that address is at its cap) when full. `None`: no room, close it.
    pub(crate) fn admit(self: &Arc<Self>, socket: &Connection, ip: Option<IpAddr>) -> Option<Admission> {
        let handle = match socket.try_clone() {
            Ok(h) => h,
            Err(e) => {
                eprintln!("chute serve: cannot take a connection: {e}");
                return None;
            }
        };
        let base = socket.read_timeout().ok().flatten();
        let max_total = self.limits.max_connections.max(1);
        let max_per = self.limits.max_per_address.max(1);
        let mut conns = self.lock();
        loop {
            let same = |c: &&Arc<Conn>| ip.is_some() && c.ip == ip;
            let per_full = conns.iter().filter(same).count() >= max_per;
            if !per_full && conns.len() < max_total {
                break;
            }
            let victim = conns
                .iter()
                .enumerate()
                .filter(|(_, c)| !per_full || same(c))
                .filter_map(|(i, c)| c.idle_since().map(|t| (t, i)))
                .min();
            match victim {
                Some((_, i)) => {
                    conns.swap_remove(i).kill();
                    self.evicted.fetch_add(1, SeqCst);
                }
                None => {
                    self.refused.fetch_add(1, SeqCst);
                    drop(conns);
                    self.warn(per_full);
                    return None;
                }
            }
        }
        let conn = Arc::new(Conn {
            ip,
            socket: handle,
            base,
            limits: self.limits.clone(),
            epoch: self.epoch,
            close: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            phase: Mutex::new(Phase::Head { first_byte: None }),
        });
        conn.start_head();
        conns.push(conn.clone());
        drop(conns);
        if self.evicted.load(SeqCst) > 0 {
            self.warn(false);
        }
        Some(Admission {
            table: self.clone(),
            conn,
        })
    }

    /// Says at most once a minute that connections were closed or refused.
    fn warn(&self, per_address: bool) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        *warned = Some(Instant::now());
        let evicted = self.evicted.swap(0, SeqCst);
        let refused = self.refused.swap(0, SeqCst);
        eprintln!(
            "chute serve: connections full ({} in all, {} per address{}): closed {evicted} idle, refused {refused} new",
            self.limits.max_connections,
            self.limits.max_per_address,
            if per_address { "; one address at its cap" } else { "" },
        );
    }
}
