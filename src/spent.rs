//! The node's record of the storage challenges `chute verify` has spent, kept in
//! its cache dir for the remote (`<cache>/challenges`), so no nonce is used twice:
//! the store has seen a spent nonce's answer and could replay it without the data.
//!
//! # File `challenges`, text
//! `chute-challenges 1`, then a line `<count> <blob path>` per blob (snapshot or
//! pack) some run challenged: how many of its challenges were spent, so the next
//! run spends challenge `count` (see [`crate::format`]'s "Storage challenges").
//! Replaced whole and atomically ([`crate::fsutil::write_atomic`]), and written
//! before the challenges it counts are sent, so a run killed midway wastes a
//! challenge rather than reuses one. A line is never dropped on the store's word
//! (a store that left a blob out of a listing would otherwise have its nonces asked
//! again, answers it may have kept): the record grows by one short line per blob
//! ever checked, about 100 bytes a snapshot.
//!
//! A missing or unreadable record counts from 0 again (a new machine, a wiped
//! cache): a store could then replay answers it saw; `verify --read-data` is the
//! proof that needs no record.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

const NAME: &str = "challenges";
const HEAD: &str = "chute-challenges 1";

/// Spent challenges per blob path.
#[derive(Debug, Default)]
pub struct Spent {
    path: Option<PathBuf>,
    counts: BTreeMap<String, u8>,
}

impl Spent {
    /// The record in `cache_dir`; empty if absent or not a record.
    pub fn load(cache_dir: &Path) -> Spent {
        let path = cache_dir.join(NAME);
        let counts = std::fs::read_to_string(&path)
            .ok()
            .map(|text| parse(&text))
            .unwrap_or_default();
        Spent {
            path: Some(path),
            counts,
        }
    }

    /// A record kept in memory only (tests, and callers with no cache dir).
    pub fn in_memory() -> Spent {
        Spent::default()
    }

    /// How many challenges of `blob` were spent.
    pub fn count(&self, blob: &str) -> u8 {
        self.counts.get(blob).copied().unwrap_or(0)
    }

    /// Counts one more spent challenge of each of `blobs` and saves the record:
    /// call before sending them.
    pub fn spend<'a>(&mut self, blobs: impl IntoIterator<Item = &'a str>) -> io::Result<()> {
        for b in blobs {
            let c = self.counts.entry(b.to_string()).or_insert(0);
            *c = c.saturating_add(1);
        }
        self.save()
    }

    /// Blob paths recorded.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        self.counts.keys().map(String::as_str)
    }

    /// Drops the lines of blobs `keep` says no; saves if that changed anything.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) -> io::Result<()> {
        let before = self.counts.len();
        self.counts.retain(|b, _| keep(b));
        if self.counts.len() == before {
            return Ok(());
        }
        self.save()
    }

    fn save(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = format!("{HEAD}\n");
        for (b, c) in &self.counts {
            text.push_str(&format!("{c} {b}\n"));
        }
        crate::fsutil::write_atomic(path, text.as_bytes())
    }
}

fn parse(text: &str) -> BTreeMap<String, u8> {
    let mut lines = text.lines();
    if lines.next() != Some(HEAD) {
        return BTreeMap::new();
    }
    lines
        .filter_map(|l| {
            let (c, b) = l.split_once(' ')?;
            Some((b.to_string(), c.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_a_reload_and_drop_only_what_is_asked() {
        let dir =
            std::env::temp_dir().join(format!("chute-spent-{}", crate::fsutil::random_suffix()));
        let mut s = Spent::load(&dir);
        assert_eq!(s.count("d/n/m/t1"), 0);
        s.spend(["d/n/m/t1", "d/n/m/t2"]).unwrap();
        s.spend(["d/n/m/t1"]).unwrap();
        let mut s = Spent::load(&dir);
        assert_eq!((s.count("d/n/m/t1"), s.count("d/n/m/t2")), (2, 1));
        s.retain(|b| b != "d/n/m/t2").unwrap();
        let s = Spent::load(&dir);
        assert_eq!(s.blobs().collect::<Vec<_>>(), ["d/n/m/t1"]);
        // Not a record: counts start again (the module docs say what that costs).
        std::fs::write(dir.join(NAME), "something else\n2 d/n/m/t1\n").unwrap();
        assert_eq!(Spent::load(&dir).count("d/n/m/t1"), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
