//! Reading a peer's answers under caps, so a lying peer costs a bounded amount of
//! memory whatever it sends: [`Capped`] fails a body past its size, [`read_capped`]
//! reads a small one whole, and [`Array`] walks a JSON array one element at a time
//! (the lists, which may be long) without ever holding the document.
//!
//! [`Array`] knows just the JSON the protocol answers with: elements that are
//! strings, unsigned integers, `true`/`false`/`null`, or flat objects of those.
//! A string longer than [`MAX_STRING`] bytes, an object of more than
//! [`MAX_FIELDS`] fields, or nesting deeper than that is refused as it arrives.
//! Pure: it reads any [`BufRead`], so the tests feed it from memory.

use std::fmt;
use std::io::{self, BufRead, Read};

/// Longest string [`Array`] accepts: a blob URI is at most
/// `/chute/blob/` + 4 × 128 + 3 + `/index.forgotten.json`, ~550 bytes.
pub const MAX_STRING: usize = 1024;
/// Most fields in an object element (a `ListedBlob` has 4).
pub const MAX_FIELDS: usize = 16;

/// Why an answer was not read.
#[derive(Debug)]
pub enum Error {
    /// The body went on past this many bytes.
    TooLarge(u64),
    /// Not the JSON expected, said in a few words.
    Malformed(String),
    /// The connection failed while reading.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge(cap) => write!(f, "sent an answer larger than {cap} bytes"),
            Error::Malformed(m) => write!(f, "sent malformed JSON: {m}"),
            Error::Io(e) => write!(f, "answer cut short: {e}"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        match e.get_ref().and_then(|i| i.downcast_ref::<Oversize>()) {
            Some(o) => Error::TooLarge(o.0),
            None => Error::Io(e),
        }
    }
}

/// The marker [`Capped`] puts in the `io::Error` it fails with.
#[derive(Debug)]
struct Oversize(u64);

impl fmt::Display for Oversize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "answer larger than {} bytes", self.0)
    }
}

impl std::error::Error for Oversize {}

/// A reader that fails (rather than ends) once its source goes past `cap` bytes,
/// so a cut answer and an oversized one are told apart.
pub struct Capped<R> {
    inner: R,
    cap: u64,
    left: u64,
}

impl<R: Read> Capped<R> {
    pub fn new(inner: R, cap: u64) -> Capped<R> {
        Capped {
            inner,
            cap,
            left: cap,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte more than allowed tells "exactly cap" from "more than cap".
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX).max(1));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(io::Error::other(Oversize(self.cap)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads a whole body of at most `cap` bytes.
pub fn read_capped(r: impl Read, cap: u64) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    Capped::new(r, cap).read_to_end(&mut out)?;
    Ok(out)
}

/// One element of an array (a flat object's fields are scalars).
#[derive(Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Num(u64),
    /// `true`, `false` or `null`: nothing the protocol sends in a list, kept so
    /// a newer peer's extra fields can be skipped.
    Literal,
    Object(Vec<(String, Value)>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    First,
    Next,
    Done,
}

/// A JSON array read one element at a time from a [`BufRead`].
pub struct Array<R> {
    r: R,
    state: State,
}

fn bad<T>(m: impl Into<String>) -> Result<T, Error> {
    Err(Error::Malformed(m.into()))
}

impl<R: BufRead> Array<R> {
    pub fn new(r: R) -> Array<R> {
        Array {
            r,
            state: State::Start,
        }
    }

    /// The next element, or `None` after the closing `]` (and nothing but
    /// whitespace after it).
    pub fn next_value(&mut self) -> Result<Option<Value>, Error> {
        loop {
            match self.state {
                State::Start => {
                    self.expect(b'[')?;
                    self.state = State::First;
                }
                State::First => {
                    if self.peek_past_ws()? == Some(b']') {
                        self.bump();
                        return self.finish();
                    }
                    self.state = State::Next;
                    return self.value(true).map(Some);
                }
                State::Next => match self.peek_past_ws()? {
                    Some(b',') => {
                        self.bump();
                        return self.value(true).map(Some);
                    }
                    Some(b']') => {
                        self.bump();
                        return self.finish();
                    }
                    _ => return bad("expected , or ] in the array"),
                },
                State::Done => return Ok(None),
            }
        }
    }

    fn finish(&mut self) -> Result<Option<Value>, Error> {
        self.state = State::Done;
        match self.peek_past_ws()? {
            None => Ok(None),
            Some(_) => bad("data after the array"),
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, Error> {
        loop {
            match self.r.fill_buf() {
                Ok(b) => return Ok(b.first().copied()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn bump(&mut self) {
        self.r.consume(1);
    }

    fn peek_past_ws(&mut self) -> Result<Option<u8>, Error> {
        loop {
            match self.peek()? {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.bump(),
                other => return Ok(other),
            }
        }
    }

    fn expect(&mut self, want: u8) -> Result<(), Error> {
        if self.peek_past_ws()? != Some(want) {
            return bad(format!("expected {:?}", want as char));
        }
        self.bump();
        Ok(())
    }

    /// A value; objects only where `object_ok` (array elements, not fields).
    fn value(&mut self, object_ok: bool) -> Result<Value, Error> {
        match self.peek_past_ws()? {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'0'..=b'9') => self.number().map(Value::Num),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'{') if object_ok => self.object(),
            Some(b'{' | b'[') => bad("nested value"),
            Some(_) => bad("unexpected character"),
            None => bad("ends early"),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<Value, Error> {
        for &w in word {
            if self.peek()? != Some(w) {
                return bad("unexpected character");
            }
            self.bump();
        }
        Ok(Value::Literal)
    }

    fn number(&mut self) -> Result<u64, Error> {
        let mut n: u64 = 0;
        let leading_zero = self.peek()? == Some(b'0');
        while let Some(c @ b'0'..=b'9') = self.peek()? {
            self.bump();
            if leading_zero
                && n == 0
                && c == b'0'
                && self.peek()?.is_some_and(|c| c.is_ascii_digit())
            {
                return bad("a number with a leading zero");
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(c - b'0')))
                .ok_or_else(|| Error::Malformed("number too large".into()))?;
        }
        if matches!(self.peek()?, Some(b'.' | b'e' | b'E')) {
            return bad("not an unsigned integer");
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, Error> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = self
                .peek()?
                .ok_or_else(|| Error::Malformed("ends early".into()))?;
            self.bump();
            match c {
                b'"' => break,
                b'\\' => {
                    let e = self
                        .peek()?
                        .ok_or_else(|| Error::Malformed("ends early".into()))?;
                    self.bump();
                    let ch = match e {
                        b'"' | b'\\' | b'/' => e as char,
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.hex4()?,
                        _ => return bad("bad escape"),
                    };
                    let mut utf8 = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
                }
                0..=0x1f => return bad("control character in a string"),
                _ => out.push(c),
            }
            if out.len() > MAX_STRING {
                return bad(format!("a string longer than {MAX_STRING} bytes"));
            }
        }
        String::from_utf8(out).or_else(|_| bad("a string that is not UTF-8"))
    }

    /// `\uXXXX` (one code unit; a surrogate, which needs a pair, is refused: no
    /// name the protocol sends has one).
    fn hex4(&mut self) -> Result<char, Error> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self
                .peek()?
                .and_then(|c| (c as char).to_digit(16))
                .ok_or_else(|| Error::Malformed("bad \\u escape".into()))?;
            self.bump();
            v = v * 16 + d;
        }
        char::from_u32(v).ok_or_else(|| Error::Malformed("surrogate in a \\u escape".into()))
    }

    fn object(&mut self) -> Result<Value, Error> {
        self.expect(b'{')?;
        let mut fields = Vec::new();
        if self.peek_past_ws()? == Some(b'}') {
            self.bump();
            return Ok(Value::Object(fields));
        }
        loop {
            if fields.len() == MAX_FIELDS {
                return bad(format!("an object of more than {MAX_FIELDS} fields"));
            }
            let key = self.string()?;
            self.expect(b':')?;
            let v = self.value(false)?;
            fields.push((key, v));
            match self.peek_past_ws()? {
                Some(b',') => self.bump(),
                Some(b'}') => {
                    self.bump();
                    return Ok(Value::Object(fields));
                }
                _ => return bad("expected , or } in an object"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &[u8]) -> Result<Vec<Value>, Error> {
        let mut a = Array::new(text);
        let mut out = Vec::new();
        while let Some(v) = a.next_value()? {
            out.push(v);
        }
        Ok(out)
    }

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    #[test]
    fn arrays_of_strings_and_objects() {
        assert_eq!(all(b"[]").unwrap(), vec![]);
        assert_eq!(all(b" [ ] \n").unwrap(), vec![]);
        assert_eq!(
            all(br#"["/a", "b\"\\\/\u0041\n" ]"#).unwrap(),
            vec![s("/a"), s("b\"\\/A\n")]
        );
        assert_eq!(
            all(br#"[{"uri":"/x/","state":"pending","bytes":12,"idle":0,"new":null}]"#).unwrap(),
            vec![Value::Object(vec![
                ("uri".into(), s("/x/")),
                ("state".into(), s("pending")),
                ("bytes".into(), Value::Num(12)),
                ("idle".into(), Value::Num(0)),
                ("new".into(), Value::Literal),
            ])]
        );
        assert_eq!(
            all(b"[18446744073709551615]").unwrap(),
            vec![Value::Num(u64::MAX)]
        );
    }

    #[test]
    fn refuses_what_is_not_the_protocol() {
        for bad in [
            &b""[..],
            b"{}",
            b"[",
            b"[\"a\"",
            b"[\"a\",]",
            b"[,]",
            b"[\"a\" \"b\"]",
            b"[] x",
            b"[[]]",
            b"[{\"a\":{}}]",
            b"[{\"a\":[]}]",
            b"[-1]",
            b"[1.5]",
            b"[01]",
            b"[18446744073709551616]",
            b"[\"\x01\"]",
            b"[\"\\x\"]",
            b"[\"\\ud800\"]",
            b"[\"\xff\"]",
            b"[tru]",
        ] {
            assert!(
                matches!(all(bad), Err(Error::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_long_string_is_refused_as_it_arrives() {
        // An endless string: refused after MAX_STRING bytes, not read to the end.
        let endless = std::io::BufReader::new(b"[\"".chain(std::io::repeat(b'a')));
        assert!(matches!(
            Array::new(endless).next_value(),
            Err(Error::Malformed(m)) if m.contains("longer than")
        ));
        let fields: String = (0..=MAX_FIELDS).map(|i| format!("\"k{i}\":1,")).collect();
        let many = format!("[{{{}\"z\":1}}]", fields);
        assert!(matches!(all(many.as_bytes()), Err(Error::Malformed(_))));
    }

    #[test]
    fn capped_tells_too_large_from_cut() {
        assert_eq!(read_capped(&b"abcd"[..], 4).unwrap(), b"abcd");
        assert!(matches!(
            read_capped(&b"abcde"[..], 4),
            Err(Error::TooLarge(4))
        ));
        assert!(matches!(
            read_capped(std::io::repeat(0), 1 << 10),
            Err(Error::TooLarge(1024))
        ));
        let capped = std::io::BufReader::new(Capped::new(std::io::repeat(b' '), 100));
        assert!(matches!(
            Array::new(capped).next_value(),
            Err(Error::TooLarge(100))
        ));
    }
}
