//! `chute scrub` from the command line: settings in, the report printed.
//!
//! `--json` prints one object, intact or not (damage also exits 3): `{"store",
//! "blobs", "windows", "bytes", "seconds", "damaged"}`, `damaged` a list of
//! `{"blob", "offset", "len", "why"}` (a window: its blob path, where it starts
//! and its length in bytes). `--quiet` prints nothing but the failure.

use super::args::*;
use super::{Settings, Show};
use crate::units::human_bytes;
use crate::{Error, Result};

/// `chute scrub` from the command line.
pub(super) fn cmd(s: &Settings, c: ScrubCmd) -> Result<()> {
    let show = Show::of(c.json, c.quiet, false)?;
    let root = s.store_spec(c.store)?;
    let started = std::time::Instant::now();
    let r = s.open_store(&root, false)?.0.scrub()?;
    show.json(&ScrubJson {
        store: root.clone(),
        blobs: r.blobs,
        windows: r.windows,
        bytes: r.bytes,
        seconds: started.elapsed().as_secs_f64(),
        damaged: (r.damaged.iter())
            .map(|d| Damaged {
                blob: d.blob.to_string(),
                offset: d.offset,
                len: d.len,
                why: d.why.to_string(),
            })
            .collect(),
    });
    for d in r.damaged.iter().filter(|_| show.text()) {
        println!(
            "damaged: {} window at byte {} ({} bytes): {}",
            d.blob, d.offset, d.len, d.why
        );
    }
    if r.temps.any() && show.text() {
        println!("temporary files: {}", r.temps.describe());
    }
    if show.text() {
        println!(
            "scrubbed {} windows ({}) in {} blobs in {:.1} s: {}",
            r.windows,
            human_bytes(r.bytes),
            r.blobs,
            started.elapsed().as_secs_f64(),
            if r.damaged.is_empty() {
                "all intact".to_string()
            } else {
                format!("{} damaged", r.damaged.len())
            }
        );
    }
    if r.damaged.is_empty() {
        Ok(())
    } else {
        Err(Error::Damaged(format!(
            "{} damaged window{} in {} (see above)",
            r.damaged.len(),
            if r.damaged.len() == 1 { "" } else { "s" },
            root
        )))
    }
}

/// `chute scrub --json`'s object (see the module doc).
#[derive(miniserde::Serialize)]
struct ScrubJson {
    store: String,
    blobs: u64,
    windows: u64,
    bytes: u64,
    seconds: f64,
    damaged: Vec<Damaged>,
}

#[derive(miniserde::Serialize)]
struct Damaged {
    blob: String,
    offset: u64,
    len: u64,
    why: String,
}
