//! One page of a ListObjectsV2 answer (`ListBucketResult`), parsed as it streams
//! in (see [`super::xml`]): what a page may cost is capped before any of it is
//! kept, so a listing of a million objects costs one page of memory at a time.
//!
//! Kept from a page: each object's key, `Size` and `LastModified` (unix
//! seconds), the `CommonPrefixes` (with a delimiter), and the continuation token.
//! Refused: a page with more entries than were asked for, a key longer than
//! [`MAX_KEY`] or empty, a size or date that does not parse, an object missing
//! one of the three, a truncated page without a continuation token, and any
//! document that is not a `ListBucketResult`. An answer that does not parse is an
//! error, never an empty list. Other elements (`ETag`, `Owner`, ...) are skipped.

use super::xml::{self, Event, Pull};
use std::io::BufRead;

/// Longest key S3 accepts (1,024 bytes of UTF-8), and so the longest listed.
pub const MAX_KEY: usize = 1024;
/// Most entries asked for a page, S3's own maximum.
pub const MAX_PAGE_KEYS: usize = 1000;
/// Most bytes a page of `keys` entries may take: an entry is its key and about
/// 400 bytes of markup and other fields (ETag, owner, storage class), so 2 KiB
/// an entry leaves room, and 16 KiB covers the envelope.
pub fn max_page_bytes(keys: usize) -> u64 {
    keys as u64 * 2048 + (16 << 10)
}

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The key, relative to the client's prefix (see [`super::Client::list`]).
    pub key: String,
    pub size: u64,
    /// `LastModified`, in unix seconds.
    pub last_modified: u64,
}

/// One page: objects, common prefixes, and the token for the next page.
#[derive(Debug, Default)]
pub struct Page {
    pub objects: Vec<Object>,
    /// With a delimiter: each distinct key prefix up to it (full keys, as sent).
    pub prefixes: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// Parses a page of at most `max_keys` entries from `r`, reading at most
/// [`max_page_bytes`]`(max_keys)` bytes. Keys are as the server sent them (full).
pub fn parse_page(r: impl BufRead, max_keys: usize) -> Result<Page, xml::Error> {
    let mut p = Pull::new(r, max_page_bytes(max_keys));
    let root = p.root()?;
    if root != "ListBucketResult" {
        return Err(xml::Error::Bad(format!(
            "<{root}> where a ListBucketResult was expected"
        )));
    }
    let mut page = Page::default();
    let mut truncated = None;
    let mut token = None;
    loop {
        match p.next()? {
            Event::Start(name) => match name.as_str() {
                "Contents" => {
                    page.objects.push(object(&mut p)?);
                }
                "CommonPrefixes" => {
                    page.prefixes.push(common_prefix(&mut p)?);
                }
                "IsTruncated" => {
                    truncated = Some(match p.text()?.trim() {
                        "true" => true,
                        "false" => false,
                        other => return bad(format!("IsTruncated {other:?}")),
                    });
                }
                "NextContinuationToken" => token = Some(p.text()?),
                _ => p.skip()?,
            },
            Event::End(_) => break,
            Event::Text(_) => return bad("text directly inside ListBucketResult"),
            Event::Eof => unreachable!("the root is open"),
        }
        if page.objects.len() + page.prefixes.len() > max_keys {
            return bad(format!("more than the {max_keys} entries asked for"));
        }
    }
    if p.next()? != Event::Eof {
        return bad("content after ListBucketResult");
    }
    match (truncated, token) {
        (None, _) => return bad("no IsTruncated"),
        (Some(true), Some(t)) if !t.is_empty() => page.next = Some(t),
        (Some(true), _) => return bad("a truncated page without a NextContinuationToken"),
        (Some(false), _) => {}
    }
    Ok(page)
}

fn bad<T>(why: impl Into<String>) -> Result<T, xml::Error> {
    Err(xml::Error::Bad(why.into()))
}

fn check_key(key: String) -> Result<String, xml::Error> {
    if key.is_empty() || key.len() > MAX_KEY {
        return bad(format!(
            "a key of {} bytes (1 to {MAX_KEY} allowed)",
            key.len()
        ));
    }
    Ok(key)
}

/// After `<Contents>`: key, size and date, through `</Contents>`.
fn object<R: BufRead>(p: &mut Pull<R>) -> Result<Object, xml::Error> {
    let (mut key, mut size, mut date) = (None, None, None);
    loop {
        match p.next()? {
            Event::Start(name) => match name.as_str() {
                "Key" if key.is_none() => key = Some(check_key(p.text()?)?),
                "Size" if size.is_none() => {
                    let t = p.text()?;
                    let t = t.trim();
                    if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
                        return bad(format!("Size {t:?}"));
                    }
                    size = Some(
                        t.parse()
                            .map_err(|_| xml::Error::Bad(format!("Size {t:?}")))?,
                    );
                }
                "LastModified" if date.is_none() => {
                    let t = p.text()?;
                    date = Some(
                        super::time::parse_iso8601(t.trim())
                            .ok_or_else(|| xml::Error::Bad(format!("LastModified {t:?}")))?,
                    );
                }
                "Key" | "Size" | "LastModified" => return bad(format!("two {name} in one entry")),
                _ => p.skip()?,
            },
            Event::End(_) => break,
            Event::Text(_) => return bad("text directly inside Contents"),
            Event::Eof => unreachable!("Contents is open"),
        }
    }
    match (key, size, date) {
        (Some(key), Some(size), Some(last_modified)) => Ok(Object {
            key,
            size,
            last_modified,
        }),
        _ => bad("an entry without its Key, Size or LastModified"),
    }
}

/// After `<CommonPrefixes>`: its one `Prefix`.
fn common_prefix<R: BufRead>(p: &mut Pull<R>) -> Result<String, xml::Error> {
    let mut prefix = None;
    loop {
        match p.next()? {
            Event::Start(name) if name == "Prefix" && prefix.is_none() => {
                prefix = Some(check_key(p.text()?)?)
            }
            Event::Start(_) => p.skip()?,
            Event::End(_) => break,
            Event::Text(_) => return bad("text directly inside CommonPrefixes"),
            Event::Eof => unreachable!("CommonPrefixes is open"),
        }
    }
    prefix.ok_or_else(|| xml::Error::Bad("CommonPrefixes without a Prefix".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page as AWS documents it (ListObjectsV2 response syntax), trimmed.
    const AWS_PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
    <Name>bucket</Name>
    <Prefix/>
    <KeyCount>2</KeyCount>
    <MaxKeys>2</MaxKeys>
    <IsTruncated>true</IsTruncated>
    <Contents>
        <Key>happyface.jpg</Key>
        <LastModified>2014-11-21T19:40:05.000Z</LastModified>
        <ETag>&quot;70ee1738b6b21e2c8a43f3a5ab0eee71&quot;</ETag>
        <Size>11</Size>
        <StorageClass>STANDARD</StorageClass>
    </Contents>
    <Contents>
        <Key>a &amp; b</Key>
        <LastModified>2014-05-02T04:51:50.000Z</LastModified>
        <ETag>&quot;becf17f89c30367a9a44495d62ed521a-1&quot;</ETag>
        <Size>4192256</Size>
        <Owner><ID>x</ID><DisplayName>y</DisplayName></Owner>
        <StorageClass>STANDARD</StorageClass>
    </Contents>
    <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
</ListBucketResult>"#;

    #[test]
    fn parses_a_page() {
        let page = parse_page(AWS_PAGE.as_bytes(), 2).unwrap();
        assert_eq!(
            page.objects,
            [
                Object {
                    key: "happyface.jpg".into(),
                    size: 11,
                    last_modified: 1_416_598_805
                },
                Object {
                    key: "a & b".into(),
                    size: 4_192_256,
                    last_modified: 1_399_006_310
                }
            ]
        );
        assert_eq!(
            page.next.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
        let last = "<ListBucketResult><IsTruncated>false</IsTruncated><CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes></ListBucketResult>";
        let page = parse_page(last.as_bytes(), 10).unwrap();
        assert!(page.objects.is_empty() && page.next.is_none());
        assert_eq!(page.prefixes, ["d/"]);
    }

    #[test]
    fn refuses_pages_that_do_not_add_up() {
        let entry = |k: &str, size: &str, date: &str| {
            format!(
                "<Contents><Key>{k}</Key><Size>{size}</Size><LastModified>{date}</LastModified></Contents>"
            )
        };
        let page = |body: &str| {
            format!("<ListBucketResult><IsTruncated>false</IsTruncated>{body}</ListBucketResult>")
        };
        let ok = entry("k", "1", "2014-11-21T19:40:05.000Z");
        assert!(parse_page(page(&ok).as_bytes(), 1).is_ok());
        let long_key = "k".repeat(MAX_KEY + 1);
        for doc in [
            // Not a listing at all (an error document answered with a 200).
            "<Error><Code>InternalError</Code></Error>".to_string(),
            String::new(),
            // Cut short.
            page(&ok)[..40].to_string(),
            // More entries than asked for.
            page(&ok.repeat(2)),
            page(&entry("", "1", "2014-11-21T19:40:05Z")),
            page(&entry(&long_key, "1", "2014-11-21T19:40:05Z")),
            page(&entry("k", "-1", "2014-11-21T19:40:05Z")),
            page(&entry("k", "18446744073709551616", "2014-11-21T19:40:05Z")),
            page(&entry("k", "1", "yesterday")),
            page("<Contents><Key>k</Key><Size>1</Size></Contents>"),
            page("<Contents><Key>k</Key><Key>j</Key><Size>1</Size><LastModified>2014-11-21T19:40:05Z</LastModified></Contents>"),
            // Truncated without a token, or no IsTruncated at all.
            "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>".into(),
            "<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken></NextContinuationToken></ListBucketResult>".into(),
            "<ListBucketResult></ListBucketResult>".into(),
            "<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>".into(),
        ] {
            assert!(parse_page(doc.as_bytes(), 1).is_err(), "{doc:?} was accepted");
        }
    }

    #[test]
    fn a_page_is_read_within_its_byte_cap() {
        // A page of one entry padded past the cap with markup we would skip.
        let pad = "<ETag>x</ETag>".repeat(max_page_bytes(1) as usize / 14 + 1);
        let doc = format!(
            "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k</Key><Size>1</Size><LastModified>2014-11-21T19:40:05Z</LastModified>{pad}</Contents></ListBucketResult>"
        );
        assert!(matches!(
            parse_page(doc.as_bytes(), 1),
            Err(xml::Error::TooLong(_))
        ));
    }
}
