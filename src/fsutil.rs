//! File-system steps that make writes durable and atomic, shared by the store, the
//! key file, the cache and prune's marks: a whole file replaced atomically, a
//! directory fsynced so a rename in it survives a power cut, random temporary names.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Writes a whole file atomically: temp file, fsync, rename, fsync the directory.
/// On failure the temporary is removed and `path` is as it was.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |f| f.write_all(data))
}

/// [`write_atomic`], the bytes written by `write` (streamed, never held whole).
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}", random_suffix()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Fsyncs a directory, so a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Fsyncs the directory holding `path`.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(dir)
}

pub fn random_bytes() -> [u8; 8] {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the system random generator failed");
    b
}

/// 16 random hex digits, for temporary names.
pub fn random_suffix() -> String {
    crate::hex::encode(&random_bytes())
}
