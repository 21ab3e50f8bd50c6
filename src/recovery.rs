//! The recovery sheet: a node's key file and the settings a restore on a new
//! machine needs, as text to print and keep on paper (`chute key export`), and
//! read back, typed in by hand or scanned (`chute key import`).
//!
//! # Sheet, text, version 1
//! ```text
//! chute recovery sheet 1
//! <free text lines: what the sheet is, the date>
//! node <name>
//! domain <domain>
//! remote <the remote, as CHUTE_REMOTE takes it>
//! key 01 3f9c1a2b 4c5d6e7f 8091a2b3 c4d5e6f7 check 5e1f
//! key 02 …
//! end <key file length in bytes> <fingerprint: 16 hex>
//! ```
//! The key file's bytes, 16 to a `key` line (the last may hold fewer), in hex
//! in groups of 8. Each line's `check` is the first 2 bytes of SHA-256 of
//! `"chute-sheet-line" || u16 line number (big-endian) || the line's bytes`, so a typo is
//! found on the line it is on; `end` gives the length and the key's
//! fingerprint, the first 8 bytes of SHA-256 of `"chute-sheet-key" || key
//! file bytes`, which says the whole key is back (and which key it is, without
//! revealing it). A reader takes hex in either case, any spacing, and skips
//! every line that is not one of the above; `node`, `domain` and `remote` are
//! optional (a sheet may leave a setting to the defaults).

use crate::crypto::sha256;
use crate::hex;

const HEAD: &str = "chute recovery sheet 1";
/// Key bytes a line.
const PER_LINE: usize = 16;
/// Longest key file a sheet holds (a LUKS key file is 4 KiB at most, usually).
pub const MAX_KEY: usize = 8192;

/// What a sheet holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sheet {
    pub key: Vec<u8>,
    pub node: Option<String>,
    pub domain: Option<String>,
    pub remote: Option<String>,
}

fn line_check(n: u16, bytes: &[u8]) -> String {
    let mut data = b"chute-sheet-line".to_vec();
    data.extend_from_slice(&n.to_be_bytes());
    data.extend_from_slice(bytes);
    hex::encode(&sha256(&data)[..2])
}

/// The key's fingerprint: names the key without revealing it.
pub fn fingerprint(key: &[u8]) -> String {
    hex::encode(&sha256(&[b"chute-sheet-key".as_slice(), key].concat())[..8])
}

impl Sheet {
    /// The sheet's text. `note`: free lines under the heading.
    pub fn to_text(&self, note: &str) -> Result<String, String> {
        if self.key.is_empty() || self.key.len() > MAX_KEY {
            return Err(format!(
                "a key file of {} bytes does not fit a recovery sheet (1 to {MAX_KEY} bytes)",
                self.key.len()
            ));
        }
        let mut out = format!("{HEAD}\n{note}\n");
        for (name, v) in [
            ("node", &self.node),
            ("domain", &self.domain),
            ("remote", &self.remote),
        ] {
            if let Some(v) = v {
                if v.is_empty() || v.contains(['\n', '\r']) {
                    return Err(format!("the {name} {v:?} cannot go on a sheet"));
                }
                out.push_str(&format!("{name} {v}\n"));
            }
        }
        for (i, bytes) in self.key.chunks(PER_LINE).enumerate() {
            let n = i as u16 + 1;
            out.push_str(&format!("key {n:02}"));
            for group in bytes.chunks(4) {
                out.push(' ');
                out.push_str(&hex::encode(group));
            }
            out.push_str(&format!(" check {}\n", line_check(n, bytes)));
        }
        out.push_str(&format!(
            "end {} {}\n",
            self.key.len(),
            fingerprint(&self.key)
        ));
        Ok(out)
    }

    /// Reads a sheet back; the error names the line at fault.
    pub fn parse(text: &str) -> Result<Sheet, String> {
        let mut lines = text.lines().map(str::trim);
        if !lines.any(|l| l == HEAD) {
            return Err(format!("no \"{HEAD}\" line: not a chute recovery sheet"));
        }
        let mut sheet = Sheet::default();
        let mut end = None;
        let mut next = 1u32;
        for l in lines {
            let (word, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            let rest = rest.trim();
            match word {
                "node" => sheet.node = Some(rest.to_string()),
                "domain" => sheet.domain = Some(rest.to_string()),
                "remote" => sheet.remote = Some(rest.to_string()),
                "key" => {
                    let (n, bytes) = key_line(rest)?;
                    if u32::from(n) != next {
                        return Err(format!("key line {n:02} where line {next:02} should be"));
                    }
                    sheet.key.extend_from_slice(&bytes);
                    if sheet.key.len() > MAX_KEY {
                        return Err(format!("more than {MAX_KEY} key bytes"));
                    }
                    next += 1;
                }
                "end" => {
                    end = Some(rest.to_string());
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or("no \"end\" line: the sheet is cut short")?;
        let (len, print) = end
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("the end line {end:?} is not \"end LENGTH FINGERPRINT\""))?;
        let len: usize = len
            .parse()
            .map_err(|_| format!("the end line's length {len:?} is not a number"))?;
        if len != sheet.key.len() {
            return Err(format!(
                "the key lines hold {} bytes where the end line says {len}: a line is missing",
                sheet.key.len()
            ));
        }
        if fingerprint(&sheet.key) != print.trim().to_ascii_lowercase() {
            return Err(
                "every line checks, but the key's fingerprint is not the end line's: lines from another sheet?".into(),
            );
        }
        Ok(sheet)
    }
}

/// A `key` line's number and bytes, its check checked.
fn key_line(rest: &str) -> Result<(u16, Vec<u8>), String> {
    let mut words = rest.split_whitespace();
    let n: u16 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("the key line {rest:?} has no line number"))?;
    let mut digits = String::new();
    let mut check = None;
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("check") {
            check = words.next();
            break;
        }
        digits.push_str(w);
    }
    let check = check.ok_or_else(|| format!("key line {n:02} has no check"))?;
    let bytes = hex::decode(&digits.to_ascii_lowercase())
        .filter(|b| !b.is_empty() && b.len() <= PER_LINE)
        .ok_or_else(|| format!("key line {n:02}: {digits:?} is not 1 to 16 bytes of hex"))?;
    if line_check(n, &bytes) != check.to_ascii_lowercase() {
        return Err(format!(
            "key line {n:02} does not match its check {check}: a typo on that line"
        ));
    }
    Ok((n, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version 1, byte for byte: a change here is a format change.
    #[test]
    fn the_sheet_is_pinned() {
        let sheet = Sheet {
            key: (0u8..20).collect(),
            node: Some("pi".into()),
            domain: None,
            remote: Some("http://peer:2002".into()),
        };
        let text = sheet.to_text("note").unwrap();
        // Computed apart (Python's hashlib) from the definitions above.
        let want = "chute recovery sheet 1\nnote\nnode pi\nremote http://peer:2002\n\
                    key 01 00010203 04050607 08090a0b 0c0d0e0f check 6528\n\
                    key 02 10111213 check b3a3\n\
                    end 20 21acbf75f1be910b\n";
        assert_eq!(text, want);
        assert_eq!(Sheet::parse(&text), Ok(sheet));
    }

    #[test]
    fn a_typed_sheet_reads_back_and_a_typo_is_found_on_its_line() {
        let key: Vec<u8> = (0..32).map(|i| (i * 37 + 11) as u8).collect();
        let sheet = Sheet {
            key: key.clone(),
            ..Sheet::default()
        };
        let text = sheet.to_text("").unwrap();
        // Upper case, other spacing, blank and stray lines, text before the head.
        let typed = format!(
            "scanned page\n{}\n\n",
            text.to_uppercase()
                .replace("CHUTE RECOVERY SHEET 1", HEAD)
                .replace("KEY ", "key  ")
                .replace("CHECK", "check")
                .replace("END", "end")
        );
        assert_eq!(Sheet::parse(&typed).unwrap().key, key);
        // One digit wrong on line 2.
        let lines: Vec<String> = text.lines().map(String::from).collect();
        let mut bad = lines.clone();
        let l2 = &bad[3];
        let pos = l2.find(' ').unwrap() + 4;
        let c = if &l2[pos..=pos] == "0" { "1" } else { "0" };
        bad[3] = format!("{}{c}{}", &l2[..pos], &l2[pos + 1..]);
        let e = Sheet::parse(&bad.join("\n")).unwrap_err();
        assert!(e.contains("key line 02 does not match its check"), "{e}");
        // A line left out, lines swapped, the end missing, no head.
        let mut missing = lines.clone();
        missing.remove(2);
        assert!(
            Sheet::parse(&missing.join("\n"))
                .unwrap_err()
                .contains("key line 02 where line 01")
        );
        let cut = lines[..lines.len() - 1].join("\n");
        assert!(Sheet::parse(&cut).unwrap_err().contains("cut short"));
        assert!(
            Sheet::parse("key 01 00 check 0000")
                .unwrap_err()
                .contains("not a chute recovery sheet")
        );
        // Another key's end line.
        let other = Sheet {
            key: vec![1; 32],
            ..Sheet::default()
        }
        .to_text("")
        .unwrap();
        let mixed = format!(
            "{}\n{}",
            lines[..lines.len() - 1].join("\n"),
            other.lines().last().unwrap()
        );
        assert!(Sheet::parse(&mixed).unwrap_err().contains("fingerprint"));
    }

    #[test]
    fn what_does_not_fit_is_refused() {
        assert!(Sheet::default().to_text("").is_err());
        let big = Sheet {
            key: vec![0; MAX_KEY + 1],
            ..Sheet::default()
        };
        assert!(big.to_text("").is_err());
        let bad = Sheet {
            key: vec![1],
            node: Some("a\nb".into()),
            ..Sheet::default()
        };
        assert!(bad.to_text("").is_err());
        let longest = Sheet {
            key: vec![7; MAX_KEY],
            ..Sheet::default()
        };
        assert_eq!(
            Sheet::parse(&longest.to_text("").unwrap()).unwrap(),
            longest
        );
    }
}
