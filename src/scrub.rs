//! `chute scrub`: the keyless check of a store, run where the store is.
//!
//! Every window file was hashed as it arrived and is named with that SHA-256 (see
//! [`crate::store`]). A scrub reads each window file again and compares its length
//! and SHA-256 with its name ([`Store::scrub`]), so a peer finds bit rot in the
//! backups it keeps for others without holding any key, and can tell them (their
//! `chute verify` names the files). It reads one window at a time: memory does not
//! grow with the store. Exit status 1 if any window is damaged.

use crate::cli::Settings;
use crate::sink::human_bytes;
use crate::store::Store;
use crate::{Error, Result};
use argh::FromArgs;
use std::path::PathBuf;

/// Re-hash every stored window against the SHA-256 it arrived with (no key needed).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "scrub")]
pub struct ScrubCmd {
    /// store directory (CHUTE_STORE; default /var/lib/chute as root, else
    /// $XDG_DATA_HOME/chute/store)
    #[argh(option)]
    pub store: Option<PathBuf>,
}

/// `chute scrub` from the command line.
pub fn cmd(s: &Settings, c: ScrubCmd) -> Result<()> {
    let root = match s.get(
        c.store.map(|p| p.to_string_lossy().into_owned()),
        "CHUTE_STORE",
    ) {
        Some(p) => PathBuf::from(p),
        None if crate::sys::is_root() => "/var/lib/chute".into(),
        None => crate::cli::data_dir()?.join("chute/store"),
    };
    // Opening would create an empty store; a typo should not pass as "intact".
    if !root.join("chute-store").is_file() {
        return Err(Error::Usage(format!(
            "{} is not a chute store (no chute-store file)",
            root.display()
        )));
    }
    let started = std::time::Instant::now();
    let r = Store::open(&root)?.scrub()?;
    for d in &r.damaged {
        println!(
            "damaged: {} window at byte {} ({} bytes): {}",
            d.blob, d.offset, d.len, d.why
        );
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
            root.display()
        )))
    }
}
