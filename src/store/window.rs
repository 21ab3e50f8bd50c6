//! Part 0's window files: their names ([`Window`]), receiving one whole or not at
//! all, re-reading one with a stat before and after, and reading a byte range across
//! several ([`RangeReader`]).

use super::*;

/// A written window of part 0, with the SHA-256 its bytes had when they arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub offset: u64,
    pub len: u64,
    pub sha256: [u8; 32],
}

impl Window {
    pub(super) fn end(&self) -> u64 {
        self.offset + self.len
    }
    pub(super) fn same_range(&self, other: &Window) -> bool {
        self.offset == other.offset && self.len == other.len
    }
    pub(super) fn file_name(&self) -> String {
        format!(
            "{:016x}-{:016x}-{}",
            self.offset,
            self.len,
            crate::hex::encode(&self.sha256)
        )
    }
    pub(super) fn from_file_name(name: &str) -> Option<Window> {
        let mut parts = name.split('-');
        let (a, b, h) = (parts.next()?, parts.next()?, parts.next()?);
        if a.len() != 16 || b.len() != 16 || parts.next().is_some() {
            return None;
        }
        let w = Window {
            offset: u64::from_str_radix(a, 16).ok()?,
            len: u64::from_str_radix(b, 16).ok()?,
            sha256: crate::hex::decode32(h)?,
        };
        (w.len > 0 && w.offset.checked_add(w.len).is_some()).then_some(w)
    }
}

/// The windows in a blob directory (however incomplete) and the newest change time
/// of anything in it, temporaries included (a window being received is activity),
/// except the verified record and the lock (a verify or a scrub, which may create
/// them, is not activity).
pub(super) fn blob_files(dir: &Path) -> Result<(Vec<Window>, Option<std::time::SystemTime>)> {
    let mut windows = Vec::new();
    let mut newest = None;
    for d in [dir.to_path_buf(), dir.join(PART)] {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(format!("cannot list {}", d.display()))(e)),
        };
        for e in entries {
            let e = e.map_err(io_err(format!("cannot list {}", d.display())))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if d == dir && (name.starts_with(RECORD) || name == ".lock") {
                continue;
            }
            if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                newest = newest.max(Some(t));
            }
            if d != dir {
                if let Some(w) = e.file_name().to_str().and_then(Window::from_file_name) {
                    windows.push(w);
                }
            }
        }
    }
    crate::sort::by_key(&mut windows, |w| w.offset);
    Ok((windows, newest))
}

/// What re-reading a window file found.
pub(super) struct Reread {
    /// The file's length.
    pub(super) len: u64,
    /// SHA-256 of its first `want` bytes (all of them if it is shorter).
    pub(super) digest: [u8; 32],
    /// Its stamp, if it did not change while read and had settled before.
    pub(super) settled: Option<Stamp>,
}

/// Re-reads the first `want` bytes of a window file, in pieces, with a stat before
/// and after.
pub(super) fn reread(path: &Path, want: u64, buf: &mut [u8]) -> io::Result<Reread> {
    let mut f = File::open(path)?;
    let before = Stamp::of(&f.metadata()?);
    let mut h = Sha256State::new();
    let mut got = 0u64;
    let mut r = (&mut f).take(want);
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        got += n as u64;
    }
    let after = Stamp::of(&f.metadata()?);
    Ok(Reread {
        len: if got < want {
            got
        } else {
            after.size.max(want)
        },
        digest: h.finalize().into(),
        settled: (before == after && after.settled()).then_some(after),
    })
}

/// Streams exactly `len` bytes of `body` into `f`, a new temporary, not fsynced
/// (the commit does that, see the module docs), its write-back started; gives it
/// back (still locked, see [`super::temps`]).
pub(super) fn receive(
    mut f: File,
    len: u64,
    body: &mut dyn Read,
    expect: Option<[u8; 32]>,
) -> Result<([u8; 32], File)> {
    let digest = receive_into(&mut f, len, body, expect)?;
    // Started now, so the commit's fdatasync of every window has little left to wait
    // for, and the disk writes while the workers seal.
    crate::sys::start_writeback(&f);
    Ok((digest, f))
}

/// Copies exactly `len` bytes of `body` to `out` and returns their SHA-256,
/// refusing a body that is shorter, longer, or (with `expect`) of another hash.
pub(super) fn receive_into(
    out: &mut dyn Write,
    len: u64,
    body: &mut dyn Read,
    expect: Option<[u8; 32]>,
) -> Result<[u8; 32]> {
    let mut h = Sha256State::new();
    let mut buf = vec![0u8; (256 << 10).min(len as usize)];
    let mut got = 0u64;
    while got < len {
        let want = buf.len().min((len - got) as usize);
        let n = match body.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(Error::Bad(format!("body ended after {got} of {len} bytes")));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Bad(format!(
                    "body ended after {got} of {len} bytes: {e}"
                )));
            }
        };
        h.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(io_err("cannot write window"))?;
        got += n as u64;
    }
    // One byte more than announced means the sender lied about the length.
    let mut extra = [0u8; 1];
    if matches!(body.read(&mut extra), Ok(n) if n > 0) {
        return Err(Error::Bad(format!("body is longer than {len} bytes")));
    }
    let digest: [u8; 32] = h.finalize().into();
    if expect.is_some_and(|e| e != digest) {
        return Err(Error::Digest);
    }
    Ok(digest)
}

/// A reader over a byte range of part 0, whatever the backend.
pub struct RangeReader(pub(super) Box<dyn Read + Send>);

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Reads a byte range that may span several window files.
pub(super) struct FileRange {
    pub(super) part: PathBuf,
    /// (window, offset within it, bytes to take), in order.
    pub(super) pieces: Vec<(Window, u64, u64)>,
    pub(super) current: Option<io::Take<File>>,
}

impl Read for FileRange {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(cur) = &mut self.current {
                let n = cur.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                if cur.limit() > 0 {
                    return Err(short_window());
                }
                self.current = None;
            }
            if self.pieces.is_empty() {
                return Ok(0);
            }
            let (w, skip, take) = self.pieces.remove(0);
            let mut f = File::open(self.part.join(w.file_name()))?;
            f.seek(SeekFrom::Start(skip))?;
            self.current = Some(f.take(take));
        }
    }
}

/// A window file that holds fewer bytes than its name says were written: it was
/// truncated behind the store's back (damage; the scrub names it).
pub(super) fn short_window() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "window file shorter than its name says",
    )
}
