//! Build script: names the build for `chute --version` (version, git commit,
//! target triple), so an owner can tell which build runs on a board.
//!
//! - `CHUTE_TARGET`: the triple cargo builds for (`TARGET`; cross builds included).
//! - `CHUTE_COMMIT`: `CHUTE_COMMIT` from the environment if set (a packager
//!   building from a tarball), else `git rev-parse --short HEAD` when this package
//!   is the top of its own git checkout, else `unknown` (no git, or a tarball
//!   unpacked inside some other repository).
//!
//! It reruns only when the commit can change (`HEAD`, the branch's ref,
//! `packed-refs`), never on every build; cargo reruns a script whose
//! `rerun-if-changed` file is missing, so only existing files are named.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=CHUTE_TARGET={target}");
    println!("cargo:rerun-if-changed=src/build.rs");
    println!("cargo:rerun-if-env-changed=CHUTE_COMMIT");
    if let Some(c) = std::env::var("CHUTE_COMMIT").ok().filter(|c| !c.is_empty()) {
        println!("cargo:rustc-env=CHUTE_COMMIT={c}");
        return;
    }
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let ours = git(&dir, &["rev-parse", "--show-toplevel"])
        .and_then(|top| Path::new(&top).canonicalize().ok())
        .is_some_and(|top| dir.canonicalize().is_ok_and(|d| d == top));
    let commit = ours
        .then(|| git(&dir, &["rev-parse", "--short=7", "HEAD"]))
        .flatten();
    if commit.is_some() {
        let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
        if let Some(r) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
            watch.push(r);
        }
        for w in watch {
            if let Some(p) = git(&dir, &["rev-parse", "--git-path", &w]) {
                let p = dir.join(p);
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
        }
    }
    println!(
        "cargo:rustc-env=CHUTE_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
