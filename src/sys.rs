//! The one module allowed `unsafe`: memory maps and the few POSIX calls std lacks
//! on Rust 1.85 (symlink times, ownership, advisory locks, signals, thread priority,
//! file system types and free space).
#![allow(unsafe_code)] // Each call below states why it is sound.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Starts writing `file`'s dirty pages back to the disk without waiting for it
/// (best effort: an fsync later is what makes them durable).
pub fn start_writeback(file: &File) {
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Asks the kernel to start reading `[offset, offset+len)` of `file` into the
/// page cache without waiting for it (best effort: a range past the end, or one
/// `off_t` cannot hold, is ignored).
pub fn read_ahead(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: posix_fadvise only reads the descriptor, which `file` keeps open.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED);
    }
}

/// A read-only map of `len` bytes of `file` at `offset`.
pub fn map(file: &File, offset: u64, len: usize) -> io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and private to this process. Another process may
    // still change or truncate the file while it is mapped; a changed byte only
    // changes what is backed up (the chunk is hashed and sealed as read), and a
    // truncation is the documented SIGBUS risk of mapping files (README, "Limits").
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(file)?
    };
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Sets a path's mtime without following a final symlink.
pub fn set_mtime_nofollow(path: &Path, secs: i64, nsecs: u32) -> io::Result<()> {
    let c = cpath(path)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            // `as _`: the field's own type; libc marks musl's `time_t` alias deprecated.
            tv_sec: secs as _,
            tv_nsec: nsecs as libc::c_long,
        },
    ];
    // SAFETY: `c` is a valid NUL-terminated string and `times` two valid timespecs,
    // both alive for the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Most bytes of names (NUL-separated) [`xattrs`] lists, and of one value.
const XATTR_LIST_MAX: usize = 64 * 1024;

/// The extended attributes of `path` (not following a final symlink), names
/// sorted: user ones, and the POSIX ACLs (`system.posix_acl_access`,
/// `system.posix_acl_default`) and others the caller may read. A file system
/// without them gives none; one that cannot be read is an error.
pub fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(path)?;
    // The size first: most files have none, and cost this one call.
    // SAFETY: `c` is NUL-terminated; a null buffer of size 0 asks for the size.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; (n.max(0) as usize).clamp(1, XATTR_LIST_MAX)];
    // SAFETY: `c` is NUL-terminated; `names` is writable for its whole length.
    let n = match n {
        n if n < 0 => n,
        _ => unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) },
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    let mut value = vec![0u8; XATTR_LIST_MAX];
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::ErrorKind::InvalidData)?;
        // SAFETY: both strings are NUL-terminated; `value` is writable for its length.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Removed since the list was read.
                Some(libc::ENODATA) => continue,
                _ => return Err(e),
            }
        }
        out.push((name.to_vec(), value[..n as usize].to_vec()));
    }
    out.sort();
    Ok(out)
}

/// Sets one extended attribute of `path` (not following a final symlink).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let cname = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: both strings are NUL-terminated; `value` is readable for its length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes a FIFO (named pipe) at `path`, mode 0600 (a restore sets the real
/// mode after).
pub fn mkfifo(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets owner and group without following a final symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// The file system type (`statfs` `f_type`, a magic number from
/// `linux/magic.h`) of the file system holding `path`.
pub fn fs_type(path: &Path) -> io::Result<u32> {
    let c = cpath(path)?;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type is i32 on 32-bit glibc ARM, u32 on musl, i64 on 64-bit; every magic
    // number fits in 32 bits, so the low 32 bits are the type.
    #[allow(clippy::unnecessary_cast)] // not the same type on every target
    Ok(st.f_type as u32)
}

/// Bytes an unprivileged writer may still use on the file system holding `path`
/// (`statvfs`: `f_bavail` blocks of `f_frsize` bytes).
pub fn free_space(path: &Path) -> io::Result<u64> {
    let c = cpath(path)?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The field types differ between targets (u32 on 32-bit glibc ARM).
    #[allow(clippy::unnecessary_cast)] // not the same type on every target
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Whether this process runs as root (and so may restore ownership).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Takes an exclusive advisory lock on `file`, waiting for it. The lock lasts as
/// long as the file stays open.
pub fn lock(file: &File) -> io::Result<()> {
    // SAFETY: the descriptor is valid for the lifetime of `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes an exclusive advisory lock on `file` without waiting; `false` if another
/// process holds it. The lock lasts as long as the file stays open.
pub fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: the descriptor is valid for the lifetime of `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Lets `n` connections wait for `accept` (std listens with 128). A crowd of
/// connections arriving at once then waits in the kernel, which costs no
/// descriptor, while the server admits them or closes them, instead of having its
/// handshakes dropped (a 1 s SYN retry for honest clients too).
pub fn set_backlog(listener: &std::net::TcpListener, n: i32) -> io::Result<()> {
    // SAFETY: the descriptor is valid while `listener` lives; calling listen
    // again on a listening socket only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), n) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises this process's soft limit on open files towards `want` (at most to the
/// hard limit) and returns the soft limit now in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is 32 bits on 32-bit ARM, 64 here.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let cur = lim.rlim_cur as u64;
    if cur >= want {
        return Ok(cur);
    }
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        want
    } else {
        want.min(lim.rlim_max as u64)
    };
    if target <= cur {
        return Ok(cur);
    }
    lim.rlim_cur = target as libc::rlim_t;
    // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one
    // needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Ok(cur);
    }
    Ok(target)
}

/// Sets SO_RCVTIMEO, SO_SNDTIMEO and TCP_NODELAY on a listening socket; Linux
/// copies them to every accepted connection, which is how a tiny_http server gets
/// per-connection timeouts it has no setting for, and answers without the ~40 ms
/// Nagle/delayed-ACK stall at the end of each response (that stall made ranged
/// restores wait 40 ms a request). SO_RCVTIMEO also makes `accept` on the listener
/// fail with EAGAIN when no client comes within `t`; the vendored tiny_http keeps
/// accepting after that (see src/vendor/README.md).
pub fn set_socket_timeouts(
    listener: &std::net::TcpListener,
    t: std::time::Duration,
) -> io::Result<()> {
    let tv = libc::timeval {
        // `as _`: the fields' own types; libc marks musl's aliases deprecated.
        tv_sec: t.as_secs() as _,
        tv_usec: t.subsec_micros() as _,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: the descriptor is valid while `listener` lives; `tv` is a valid
        // timeval and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let on: libc::c_int = 1;
    // SAFETY: as above; `on` is a valid c_int and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lowers the calling thread's CPU priority (nice 19) and, on Linux, its I/O
/// priority (best-effort class, lowest level), so a background job yields to the
/// threads answering requests. Best effort: a refusal leaves the priority as it was.
pub fn lower_thread_priority() {
    // SAFETY: no pointers are passed. On Linux the nice value is per thread and
    // `who == 0` names the calling thread, so only this thread is affected.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
    #[cfg(target_os = "linux")]
    {
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_BE: libc::c_long = 2;
        const IOPRIO_CLASS_SHIFT: u32 = 13;
        // SAFETY: ioprio_set takes three integers; `who == 0` is the calling thread.
        unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                0 as libc::c_long,
                (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 7,
            );
        }
    }
}

static SIGNALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNALLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to a flag that [`signalled`] reads.
pub fn catch_termination() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe;
        // `sigaction` is given a zeroed struct with a valid handler and empty mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Gives SIGINT and SIGTERM back their default action (ending the process).
pub fn default_termination() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Whether SIGINT or SIGTERM arrived since [`catch_termination`].
pub fn signalled() -> bool {
    SIGNALLED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Restores the default SIGPIPE action so a closed stdout ends us quietly.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The CPUs this process may run on (its affinity mask; else the online count;
/// else 2). In place of `std::thread::available_parallelism`, which also reads
/// cgroup quotas and costs ~10 KB of the armv7 binary's 2 MiB budget.
pub fn cores() -> usize {
    // SAFETY: `set` is a plain bit set the call fills; 0 is this thread, and
    // the size passed is the set's.
    let n = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            libc::CPU_COUNT(&set) as usize
        } else {
            0
        }
    };
    if n > 0 {
        return n;
    }
    // SAFETY: sysconf only reads a system value.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if online > 0 { online as usize } else { 2 }
}

/// Below this size an allocation comes from the heap, above it from its own
/// memory map, returned to the kernel when freed. (musl, the aarch64 build's libc,
/// maps and unmaps large allocations by itself.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 << 10;

/// Keeps glibc's malloc from holding on to the large buffers chute frees (chunks,
/// packs, windows and reads of up to a few MiB), so peak RSS is what is in use,
/// not how fragmented the heap became over a long run. glibc starts with the
/// threshold above, but raises it to the size of each mapped buffer freed: from
/// then on those buffers come from the heap and the per-thread arenas, whose
/// holes stay resident and grow with the length of the run. Setting the threshold
/// turns that off (a full local sink of 50,000 small files: 19.4 MiB peak RSS
/// before, 12.5-13.2 after). `MALLOC_MMAP_THRESHOLD_` in the environment, read by
/// glibc itself, wins.
pub fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt takes two integers and sets malloc's parameters under
        // malloc's own lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

#[cfg(test)]
mod cores_tests {
    #[test]
    fn cores_counts_what_this_process_may_use() {
        let n = super::cores();
        // available_parallelism also applies cgroup quotas: never more than ours.
        let std_n = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(n >= std_n && n >= 1, "{n} < {std_n}");
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
        let max: usize = online
            .trim()
            .split(',')
            .map(|r| match r.split_once('-') {
                Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
                None => 1,
            })
            .sum();
        assert!(n <= max, "{n} > {max} online");
    }
}
