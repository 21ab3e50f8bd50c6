use std::io::Read;
use std::io::Result as IoResult;
use std::sync::mpsc::channel;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use crate::util::Conn;

/// A `Reader` that reads exactly the number of bytes from a sub-reader.
///
/// If the limit is reached, it returns EOF. If the limit is not reached
/// when the destructor is called, the remaining bytes will be read and
/// thrown away.
pub struct EqualReader<R>
where
    R: Read,
{
    reader: R,
    size: usize,
    last_read_signal: Sender<IoResult<()>>,
    // chute patch: the connection to close if the body is left unread.
    conn: Option<Arc<Conn>>,
}

impl<R> EqualReader<R>
where
    R: Read,
{
    pub fn new(reader: R, size: usize) -> (EqualReader<R>, Receiver<IoResult<()>>) {
        Self::with_conn(reader, size, None)
    }

    pub(crate) fn with_conn(
        reader: R,
        size: usize,
        conn: Option<Arc<Conn>>,
    ) -> (EqualReader<R>, Receiver<IoResult<()>>) {
        let (tx, rx) = channel();

        let r = EqualReader {
            reader,
            size,
            last_read_signal: tx,
            conn,
        };

        (r, rx)
    }
}

impl<R> Read for EqualReader<R>
where
    R: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.size == 0 {
            return Ok(0);
        }

        let buf = if buf.len() < self.size {
            buf
        } else {
            &mut buf[..self.size]
        };

        match self.reader.read(buf) {
            Ok(len) => {
                self.size -= len;
                Ok(len)
            }
            err @ Err(_) => err,
        }
    }
}

impl<R> Drop for EqualReader<R>
where
    R: Read,
{
    fn drop(&mut self) {
        // chute patch: never read a large body the handler left unread. Upstream
        // drained the rest here, in the thread that answered the request, so a
        // client that declared a large body and sent it a byte at a time pinned a
        // worker for as long as it liked (and first, upstream allocated the whole
        // declared remainder at once). Only a rest of at most `drain_bytes` that
        // arrives within `drain_time` is skipped, keeping the connection; otherwise
        // the connection is marked to close: the response says `Connection: close`
        // and the connection's own thread discards at most a few KiB before
        // closing (client.rs).
        if self.size == 0 {
            self.last_read_signal.send(Ok(())).ok();
            return;
        }
        let Some(conn) = self.conn.clone() else {
            self.last_read_signal.send(Ok(())).ok();
            return;
        };
        let mut drained = false;
        if self.size <= conn.limits().drain_bytes {
            conn.start_drain();
            let mut buf = [0u8; 4096];
            while self.size > 0 {
                let want = self.size.min(buf.len());
                match self.reader.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.size -= n,
                }
            }
            drained = self.size == 0;
        }
        if !drained {
            conn.mark_close();
        }
        self.last_read_signal.send(Ok(())).ok();
    }
}

/// chute patch: a chunked body left before its end also closes the connection
/// (the next request would start somewhere in it).
pub struct UntilEof<R: Read> {
    pub inner: R,
    pub eof: bool,
    pub conn: Option<Arc<Conn>>,
}

impl<R: Read> Read for UntilEof<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        Ok(n)
    }
}

impl<R: Read> Drop for UntilEof<R> {
    fn drop(&mut self) {
        if !self.eof {
            if let Some(conn) = &self.conn {
                conn.mark_close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EqualReader;
    use std::io::Read;

    #[test]
    fn test_limit() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let (mut equal_reader, _) = EqualReader::new(org_reader.by_ref(), 5);

            let mut string = String::new();
            equal_reader.read_to_string(&mut string).unwrap();
            assert_eq!(string, "hello");
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }

    #[test]
    fn test_not_enough() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let (mut equal_reader, _) = EqualReader::new(org_reader.by_ref(), 5);

            let mut vec = [0];
            equal_reader.read_exact(&mut vec).unwrap();
            assert_eq!(vec[0], b'h');
        }

        // chute patch: the unread rest is left, not drained.
        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, "ello world");
    }
}
