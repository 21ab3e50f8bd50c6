//! `chute scrub` from the command line: settings in, the report printed.

use super::Settings;
use super::args::*;
use crate::units::human_bytes;
use crate::{Error, Result};

/// `chute scrub` from the command line.
pub(super) fn cmd(s: &Settings, c: ScrubCmd) -> Result<()> {
    let root = s.store_spec(c.store)?;
    let started = std::time::Instant::now();
    let r = s.open_store(&root, false)?.0.scrub()?;
    for d in &r.damaged {
        println!(
            "damaged: {} window at byte {} ({} bytes): {}",
            d.blob, d.offset, d.len, d.why
        );
    }
    if r.temps.any() {
        println!("temporary files: {}", r.temps.describe());
    }
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
