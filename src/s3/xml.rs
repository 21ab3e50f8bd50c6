//! A small, strict XML pull parser for the few documents S3 answers with
//! (`ListBucketResult`, `CopyObjectResult`, `Error`); no crate.
//!
//! It reads a stream byte by byte through a `BufRead` and hands out events:
//! element starts and ends (names checked to nest), and text with the five
//! predefined entities and character references decoded and CDATA taken as is,
//! one event for the run of text between two tags.
//! Attributes are skipped (S3 sends only `xmlns`), as are the XML declaration,
//! processing instructions and comments. Refused, as a peer's answer we cannot
//! trust: a DOCTYPE (no entity expansion, ever), an unknown entity, a mismatched
//! or missing end tag, text or a second element outside the root, and anything
//! past the caps: [`MAX_DEPTH`] nesting, [`MAX_NAME`] bytes of a name,
//! [`MAX_TAG`] bytes of a tag, [`MAX_TEXT`] bytes of one text, and the document
//! limit the caller sets. What it keeps is the open elements' names and one text:
//! memory is bounded whatever the document's length.

use std::io::BufRead;

/// Deepest nesting accepted (S3's answers go 3 deep: result, entry, field).
pub const MAX_DEPTH: usize = 8;
/// Longest element name.
pub const MAX_NAME: usize = 64;
/// Longest tag, attributes included.
pub const MAX_TAG: usize = 1024;
/// Longest text of one element, decoded: a key is at most 1,024 bytes; a
/// continuation token, an error message, an ETag, a date fit easily.
pub const MAX_TEXT: usize = 4096;

/// Why a document was refused.
#[derive(Debug)]
pub enum Error {
    /// Reading the stream failed (a cut connection, a timeout).
    Io(std::io::Error),
    /// Past the document limit the caller set.
    TooLong(u64),
    /// Not well-formed, or not within the caps; the reason in words.
    Bad(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "reading the answer failed: {e}"),
            Error::TooLong(n) => write!(f, "answer longer than {n} bytes"),
            Error::Bad(why) => write!(f, "malformed XML: {why}"),
        }
    }
}

fn bad<T>(why: impl Into<String>) -> Result<T, Error> {
    Err(Error::Bad(why.into()))
}

/// One step through a document.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Start(String),
    End(String),
    /// Text that is not only whitespace (whitespace between elements is dropped).
    Text(String),
    /// The root element closed and nothing but whitespace, comments or
    /// processing instructions followed.
    Eof,
}

/// A pull parser over `r`, refusing documents longer than `limit` bytes.
pub struct Pull<R> {
    r: R,
    read: u64,
    limit: u64,
    open: Vec<String>,
    root_seen: bool,
    /// The end of a self-closing element, handed out next.
    pending_end: Option<String>,
}

impl<R: BufRead> Pull<R> {
    pub fn new(r: R, limit: u64) -> Pull<R> {
        Pull {
            r,
            read: 0,
            limit,
            open: Vec::new(),
            root_seen: false,
            pending_end: None,
        }
    }

    /// Bytes of the document read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    fn peek(&mut self) -> Result<Option<u8>, Error> {
        let buf = self.r.fill_buf().map_err(Error::Io)?;
        Ok(buf.first().copied())
    }

    fn byte(&mut self) -> Result<Option<u8>, Error> {
        let b = self.peek()?;
        if b.is_some() {
            self.r.consume(1);
            self.read += 1;
            if self.read > self.limit {
                return Err(Error::TooLong(self.limit));
            }
        }
        Ok(b)
    }

    fn need(&mut self) -> Result<u8, Error> {
        match self.byte()? {
            Some(b) => Ok(b),
            None => bad("the document ends inside a tag"),
        }
    }

    /// Skips to just past `end` (of a comment, a processing instruction): what
    /// is skipped is not kept, so only the document limit bounds it.
    fn skip_past(&mut self, end: &[u8]) -> Result<(), Error> {
        let mut last = [0u8; 3];
        loop {
            last = [last[1], last[2], self.need()?];
            if last.ends_with(end) {
                return Ok(());
            }
        }
    }

    /// The next event.
    #[allow(clippy::should_implement_trait)] // fallible, and Eof is an event, not the end
    pub fn next(&mut self) -> Result<Event, Error> {
        if let Some(name) = self.pending_end.take() {
            return Ok(Event::End(name));
        }
        let mut text = Vec::new();
        loop {
            match self.peek()? {
                None => {
                    if !text.is_empty() && !is_space(&text) {
                        return bad("text after the root element");
                    }
                    if self.root_seen && self.open.is_empty() {
                        return Ok(Event::Eof);
                    }
                    return bad("the document ends before its root element closes");
                }
                Some(b'<') => {
                    if !text.is_empty() && !is_space(&text) {
                        return self.text_event(text);
                    }
                    text.clear();
                    self.byte()?;
                    match self.need()? {
                        b'/' => return self.end_tag(),
                        b'?' => self.skip_past(b"?>")?,
                        b'!' => {
                            if let Some(t) = self.bang()? {
                                if self.open.is_empty() {
                                    return bad("text outside the root element");
                                }
                                text.extend_from_slice(&t);
                                continue;
                            }
                        }
                        first => return self.start_tag(first),
                    }
                }
                Some(b'&') => {
                    self.byte()?;
                    self.entity(&mut text)?;
                }
                Some(_) => {
                    let b = self.need()?;
                    text.push(b);
                }
            }
            if text.len() > MAX_TEXT {
                return bad(format!("a text longer than {MAX_TEXT} bytes"));
            }
        }
    }

    fn text_event(&mut self, text: Vec<u8>) -> Result<Event, Error> {
        if self.open.is_empty() {
            return bad("text outside the root element");
        }
        match String::from_utf8(text) {
            Ok(s) => Ok(Event::Text(s)),
            Err(_) => bad("text that is not UTF-8"),
        }
    }

    /// After `<!`: a comment (skipped, `None`) or CDATA (its bytes); a DOCTYPE or
    /// anything else is refused.
    fn bang(&mut self) -> Result<Option<Vec<u8>>, Error> {
        match self.need()? {
            b'-' if self.need()? == b'-' => {
                self.skip_past(b"-->")?;
                Ok(None)
            }
            b'[' => {
                for &want in b"CDATA[" {
                    if self.need()? != want {
                        return bad("a <![ that is not CDATA");
                    }
                }
                let mut out = Vec::new();
                loop {
                    out.push(self.need()?);
                    if out.ends_with(b"]]>") {
                        out.truncate(out.len() - 3);
                        return Ok(Some(out));
                    }
                    if out.len() > MAX_TEXT + 3 {
                        return bad(format!("a text longer than {MAX_TEXT} bytes"));
                    }
                }
            }
            _ => bad("a DOCTYPE or other declaration (refused)"),
        }
    }

    /// After `&`: one entity or character reference, decoded into `out`.
    fn entity(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let mut name = Vec::new();
        loop {
            match self.need()? {
                b';' => break,
                b if name.len() < 10 => name.push(b),
                _ => return bad("an entity longer than 10 bytes"),
            }
        }
        let c = match name.as_slice() {
            b"amp" => '&',
            b"lt" => '<',
            b"gt" => '>',
            b"quot" => '"',
            b"apos" => '\'',
            [b'#', b'x', hex @ ..] => char_ref(hex, 16)?,
            [b'#', dec @ ..] => char_ref(dec, 10)?,
            _ => {
                return bad(format!(
                    "unknown entity &{};",
                    String::from_utf8_lossy(&name)
                ));
            }
        };
        let mut buf = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    /// After `<` and the name's first byte `first`.
    fn start_tag(&mut self, first: u8) -> Result<Event, Error> {
        if self.root_seen && self.open.is_empty() {
            return bad("a second root element");
        }
        let mut name = vec![first];
        let mut tag_len = 1;
        let mut end = self.need()?;
        while is_name_byte(end) {
            name.push(end);
            if name.len() > MAX_NAME {
                return bad(format!("an element name longer than {MAX_NAME} bytes"));
            }
            end = self.need()?;
        }
        if !is_name_start(first) {
            return bad("an element name that does not start with a letter");
        }
        // Attributes: skipped, quotes respected, within MAX_TAG.
        let mut quote = None;
        let mut prev = 0;
        loop {
            tag_len += 1;
            if tag_len > MAX_TAG {
                return bad(format!("a tag longer than {MAX_TAG} bytes"));
            }
            match (quote, end) {
                (Some(q), b) if b == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(end),
                (None, b'>') => break,
                (None, b'<') => return bad("a '<' inside a tag"),
                (None, _) => {}
            }
            prev = end;
            end = self.need()?;
        }
        let name = String::from_utf8(name).expect("name bytes are ASCII");
        if self.open.len() == MAX_DEPTH {
            return bad(format!("elements nested deeper than {MAX_DEPTH}"));
        }
        self.root_seen = true;
        if prev == b'/' {
            self.pending_end = Some(name.clone());
        } else {
            self.open.push(name.clone());
        }
        Ok(Event::Start(name))
    }

    /// After `</`.
    fn end_tag(&mut self) -> Result<Event, Error> {
        let mut name = Vec::new();
        let mut b = self.need()?;
        while is_name_byte(b) {
            name.push(b);
            if name.len() > MAX_NAME {
                return bad(format!("an element name longer than {MAX_NAME} bytes"));
            }
            b = self.need()?;
        }
        while b.is_ascii_whitespace() {
            b = self.need()?;
        }
        if b != b'>' {
            return bad("a malformed end tag");
        }
        match self.open.pop() {
            Some(open) if open.as_bytes() == name.as_slice() => Ok(Event::End(open)),
            Some(open) => bad(format!(
                "</{}> closes <{open}>",
                String::from_utf8_lossy(&name)
            )),
            None => bad("an end tag outside the root element"),
        }
    }

    /// After a `Start`: the element's text (empty if none), through its `End`; an
    /// element inside it is refused.
    pub fn text(&mut self) -> Result<String, Error> {
        let mut out = String::new();
        loop {
            match self.next()? {
                Event::Text(t) => {
                    if out.len() + t.len() > MAX_TEXT {
                        return bad(format!("a text longer than {MAX_TEXT} bytes"));
                    }
                    out.push_str(&t);
                }
                Event::End(_) => return Ok(out),
                Event::Start(name) => return bad(format!("unexpected <{name}> inside text")),
                Event::Eof => return bad("the document ends inside an element"),
            }
        }
    }

    /// After a `Start`: skips everything through its `End`.
    pub fn skip(&mut self) -> Result<(), Error> {
        let mut depth = 1;
        while depth > 0 {
            match self.next()? {
                Event::Start(_) => depth += 1,
                Event::End(_) => depth -= 1,
                Event::Text(_) => {}
                Event::Eof => return bad("the document ends inside an element"),
            }
        }
        Ok(())
    }

    /// The root element's name (skipping the prolog).
    pub fn root(&mut self) -> Result<String, Error> {
        match self.next()? {
            Event::Start(name) => Ok(name),
            _ => bad("no root element"),
        }
    }
}

fn is_space(text: &[u8]) -> bool {
    text.iter().all(|b| b.is_ascii_whitespace())
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
}

fn char_ref(digits: &[u8], radix: u32) -> Result<char, Error> {
    let s = std::str::from_utf8(digits).unwrap_or("");
    if s.is_empty() || s.len() > 8 || !s.chars().all(|c| c.is_digit(radix)) {
        return bad("a malformed character reference");
    }
    match u32::from_str_radix(s, radix).ok().and_then(char::from_u32) {
        Some(c) if c != '\0' => Ok(c),
        _ => bad("a character reference to no character"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(doc: &str) -> Result<Vec<Event>, Error> {
        let mut p = Pull::new(doc.as_bytes(), 1 << 20);
        let mut out = Vec::new();
        loop {
            let e = p.next()?;
            if e == Event::Eof {
                return Ok(out);
            }
            out.push(e);
        }
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    #[test]
    fn reads_what_s3_sends() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<R xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n  <K>a&amp;b &lt;&#x41;&#66;&gt; &quot;&apos;</K><!-- c --><E/><C><![CDATA[x<y]]>z</C>\n</R>\n";
        assert_eq!(
            events(doc).unwrap(),
            [
                Event::Start(s("R")),
                Event::Start(s("K")),
                Event::Text(s("a&b <AB> \"'")),
                Event::End(s("K")),
                Event::Start(s("E")),
                Event::End(s("E")),
                Event::Start(s("C")),
                Event::Text(s("x<yz")),
                Event::End(s("C")),
                Event::End(s("R")),
            ]
        );
        let mut p = Pull::new("<R><K>a<!--x-->b</K><S><T>u</T></S></R>".as_bytes(), 100);
        assert_eq!(p.root().unwrap(), "R");
        assert_eq!(p.next().unwrap(), Event::Start(s("K")));
        assert_eq!(p.text().unwrap(), "ab");
        assert_eq!(p.next().unwrap(), Event::Start(s("S")));
        p.skip().unwrap();
        assert_eq!(p.next().unwrap(), Event::End(s("R")));
        assert_eq!(p.next().unwrap(), Event::Eof);
    }

    #[test]
    fn refuses_what_is_not_well_formed_or_too_big() {
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        let long_text = format!("<a>{}</a>", "x".repeat(MAX_TEXT + 1));
        let long_name = format!("<{0}></{0}>", "a".repeat(MAX_NAME + 1));
        let long_tag = format!("<a b=\"{}\"></a>", "x".repeat(MAX_TAG));
        for doc in [
            "",
            "   ",
            "<a>",
            "<a></b>",
            "<a><b></a></b>",
            "<a></a><b></b>",
            "<a></a>x",
            "x<a></a>",
            "<!DOCTYPE a [<!ENTITY e \"x\">]><a>&e;</a>",
            "<a>&e;</a>",
            "<a>&#0;</a>",
            "<a>&#xD800;</a>",
            "<a>&amp</a>",
            "<a>\u{0}</a",
            "<1a></1a>",
            "<a b=\"<\"></a",
            "<a><![CDAT[x]]></a>",
            "</a>",
            deep.as_str(),
            long_text.as_str(),
            long_name.as_str(),
            long_tag.as_str(),
        ] {
            assert!(events(doc).is_err(), "{doc:?} was accepted");
        }
        // Past the caller's limit.
        let mut p = Pull::new("<a>0123456789</a>".as_bytes(), 10);
        p.root().unwrap();
        assert!(matches!(p.next(), Err(Error::TooLong(10))));
    }
}
