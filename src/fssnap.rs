//! Consistent points in time for `chute sink --fs-snapshot`: before the walk,
//! each root on a file system that can snapshot is frozen in a read-only
//! snapshot, the root is read from inside it and its paths are recorded as the
//! originals (see `sink::walk`), and the snapshot is removed as soon as the walk
//! ends.
//!
//! - btrfs (`statfs` magic `0x9123683E`): the root's subvolume (walking up while
//!   the device stays the same, to a directory with inode 256) is snapshotted
//!   with `btrfs subvolume snapshot -r` to `<subvolume>/.chute-fssnap-<mount>-<pid>-<n>`
//!   (`mount` is the path set's mount id, so two sinks of different paths never
//!   share a name). A btrfs snapshot holds neither nested subvolumes nor file
//!   systems mounted below the root: they are empty directories in it (the
//!   walk says so for a nested subvolume, whose stand-in has inode 2). The walk
//!   never enters a directory named `.chute-fssnap-*` with inode 256 or 2
//!   (another sink's snapshot, or its stand-in).
//! - LVM thin volumes (a device-mapper device whose LV `lvs` reports with segment
//!   type `thin`): `lvcreate -s -kn -n chute-fssnap-<mount>-<pid>-<n> VG/LV`,
//!   mounted read-only (`nouuid` for XFS) on `<cache>/fssnap-<mount>.d/<n>`;
//!   removed with `umount` and `lvremove -f`. The root must lie below the mount
//!   point of the volume's root.
//! - ZFS (`statfs` magic `0x2FC12FC1`, with a `zfs` command): `zfs snapshot
//!   DATASET@chute-fssnap-<mount>-<pid>-<n>`, read from
//!   `<mountpoint>/.zfs/snapshot/<name>`, removed with `zfs destroy`.
//!
//! Roots on one device (file system, or btrfs subvolume) share one snapshot,
//! so they are read as of one instant too.
//!
//! Modes ([`Mode`]): `off` (the default: no snapshot, as restic), `auto` (each
//! root on one of the above is snapshotted; any other, or one whose snapshot
//! fails, is read live with a one-line note), or one kind (a root that is not on
//! it, or whose snapshot fails, fails the sink before anything is read).
//!
//! Cleanup on every exit path: a [`Taken`] set removes its snapshots when
//! dropped (the walk's end, or an error return), and the sink's SIGINT/SIGTERM
//! path calls [`release`] before it exits. For a kill -9, each snapshot is
//! written to the record `<cache>/fssnap-<mount>` (format: a line
//! `chute-fssnap 1`, then one line per snapshot: `btrfs HEXPATH`,
//! `lvm VG/LV HEXMOUNTPOINT` or `zfs DATASET@NAME`), fsynced *before* the
//! snapshot is made; the next sink of the same paths (holding their lock)
//! removes what the record names before it takes any, with a one-line note,
//! and only names chute made (the `chute-fssnap-` prefix). A snapshot that
//! cannot be removed stays in the record for the next run.

use crate::{Error, Result};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub const BTRFS_MAGIC: u32 = 0x9123_683E;
pub const ZFS_MAGIC: u32 = 0x2FC1_2FC1;
const XFS_MAGIC: u32 = 0x5846_5342;
/// Every snapshot chute makes has a name starting with this (btrfs adds a dot).
pub const PREFIX: &str = "chute-fssnap-";
const RECORD_MAGIC: &str = "chute-fssnap 1";

/// What `--fs-snapshot` / `CHUTE_FS_SNAPSHOT` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Auto,
    Only(Kind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Btrfs,
    Lvm,
    Zfs,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "off" => Mode::Off,
            "auto" => Mode::Auto,
            "btrfs" => Mode::Only(Kind::Btrfs),
            "lvm" => Mode::Only(Kind::Lvm),
            "zfs" => Mode::Only(Kind::Zfs),
            _ => return None,
        })
    }
}

/// What kind of snapshot a root on a file system with `magic` gets (`thin`:
/// whether it is an LVM thin volume), or why it gets none (`Err`, which fails
/// the sink in a one-kind mode and is a note in `auto`); `Ok(None)`: off.
pub fn choose(mode: Mode, magic: u32, thin: bool) -> std::result::Result<Option<Kind>, String> {
    let found = if magic == BTRFS_MAGIC {
        Some(Kind::Btrfs)
    } else if magic == ZFS_MAGIC {
        Some(Kind::Zfs)
    } else if thin {
        Some(Kind::Lvm)
    } else {
        None
    };
    match (mode, found) {
        (Mode::Off, _) => Ok(None),
        (Mode::Auto, Some(k)) => Ok(Some(k)),
        (Mode::Auto, None) => Err("not on btrfs, ZFS or an LVM thin volume".into()),
        (Mode::Only(want), Some(k)) if k == want => Ok(Some(k)),
        (Mode::Only(want), _) => Err(format!(
            "not on {}",
            match want {
                Kind::Btrfs => "btrfs",
                Kind::Lvm => "an LVM thin volume",
                Kind::Zfs => "ZFS",
            }
        )),
    }
}

/// One snapshot, as the record and the cleanup know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    Btrfs(PathBuf),
    Lvm { lv: String, at: PathBuf },
    Zfs(String),
}

impl Made {
    fn line(&self) -> String {
        match self {
            Made::Btrfs(p) => format!("btrfs {}", crate::hex::encode(p.as_os_str().as_bytes())),
            Made::Lvm { lv, at } => {
                format!("lvm {lv} {}", crate::hex::encode(at.as_os_str().as_bytes()))
            }
            Made::Zfs(s) => format!("zfs {s}"),
        }
    }

    /// Parses a record line; only names chute makes are accepted, so a
    /// damaged or forged record cannot make a sink remove anything else.
    fn parse(line: &str) -> Option<Made> {
        let path =
            |h: &str| crate::hex::decode(h).map(|b| PathBuf::from(std::ffi::OsString::from_vec(b)));
        use std::os::unix::ffi::OsStringExt;
        let mut w = line.split(' ');
        let made = match (w.next()?, w.next()?, w.next()) {
            ("btrfs", h, None) => Made::Btrfs(path(h)?),
            ("lvm", lv, Some(h)) => Made::Lvm {
                lv: lv.to_string(),
                at: path(h)?,
            },
            ("zfs", s, None) => Made::Zfs(s.to_string()),
            _ => return None,
        };
        (w.next().is_none() && made.ours()).then_some(made)
    }

    fn ours(&self) -> bool {
        let name = match self {
            Made::Btrfs(p) => p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix('.')),
            Made::Lvm { lv, .. } => lv.split_once('/').map(|(_, n)| n),
            Made::Zfs(s) => s.split_once('@').map(|(_, n)| n),
        };
        name.is_some_and(|n| n.starts_with(PREFIX) && !n.contains('/'))
    }

    fn describe(&self) -> String {
        match self {
            Made::Btrfs(p) => p.display().to_string(),
            Made::Lvm { lv, .. } => lv.clone(),
            Made::Zfs(s) => s.clone(),
        }
    }

    /// Removes the snapshot (done if it is already gone).
    fn remove(&self) -> std::result::Result<(), String> {
        match self {
            Made::Btrfs(p) => {
                if fs::symlink_metadata(p).is_err() {
                    return Ok(());
                }
                run(Command::new("btrfs").args(["subvolume", "delete"]).arg(p))
            }
            Made::Lvm { lv, at } => {
                if is_mount_point(at) {
                    // Lazy: a reader killed mid-read may still hold a file.
                    run(Command::new("umount").arg("-l").arg(at))?;
                }
                let _ = fs::remove_dir(at);
                let gone = Command::new("lvs")
                    .arg(lv)
                    .output()
                    .map(|o| !o.status.success())
                    .unwrap_or(false);
                if gone {
                    return Ok(());
                }
                run(Command::new("lvremove").args(["-f", "-y"]).arg(lv))
            }
            Made::Zfs(s) => {
                let gone = Command::new("zfs")
                    .args(["list", "-H", "-t", "snapshot"])
                    .arg(s)
                    .output()
                    .map(|o| !o.status.success())
                    .unwrap_or(false);
                if gone {
                    return Ok(());
                }
                run(Command::new("zfs").arg("destroy").arg(s))
            }
        }
    }
}

/// Runs a command, its output kept; its last stderr line is the error.
fn run(cmd: &mut Command) -> std::result::Result<(), String> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!("{prog} failed ({}): {}", out.status, last.trim()))
}

fn is_mount_point(p: &Path) -> bool {
    match (fs::metadata(p), p.parent().map(fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// The snapshots of the running sink: [`release`] (the SIGINT path) and
/// [`Taken`]'s drop remove them, whichever comes first.
static LIVE: Mutex<Option<(PathBuf, Vec<Made>)>> = Mutex::new(None);

/// Removes the running sink's snapshots and, if all went, their record.
/// Idempotent; safe from any thread.
pub fn release() {
    let taken = LIVE.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((record, made)) = taken {
        remove_all(&record, made, false);
    }
}

fn remove_all(record: &Path, made: Vec<Made>, stale: bool) {
    let mut left = Vec::new();
    for m in made {
        match m.remove() {
            Ok(()) if stale => eprintln!(
                "chute sink: removed snapshot {} left by an interrupted sink",
                m.describe()
            ),
            Ok(()) => {}
            Err(e) => {
                eprintln!(
                    "chute sink: warning: cannot remove snapshot {}: {e}; the next sink tries again",
                    m.describe()
                );
                left.push(m);
            }
        }
    }
    if left.is_empty() {
        let _ = fs::remove_file(record);
    } else {
        let _ = write_record(record, &left);
    }
}

fn write_record(record: &Path, made: &[Made]) -> std::io::Result<()> {
    let mut text = format!("{RECORD_MAGIC}\n");
    for m in made {
        text.push_str(&m.line());
        text.push('\n');
    }
    crate::fsutil::write_atomic(record, text.as_bytes())
}

/// The snapshots a record names (chute's own only; unknown lines ignored).
pub fn parse_record(text: &str) -> Vec<Made> {
    let mut lines = text.lines();
    if lines.next() != Some(RECORD_MAGIC) {
        return Vec::new();
    }
    lines.filter_map(Made::parse).collect()
}

/// The record of the snapshots of the path set `mount`.
pub fn record_path(cache_dir: &Path, mount: &str) -> PathBuf {
    cache_dir.join(format!("fssnap-{mount}"))
}

/// Removes the snapshots a killed sink of the same paths left (call holding
/// their lock, before taking any).
pub fn sweep(cache_dir: &Path, mount: &str) {
    let record = record_path(cache_dir, mount);
    let Ok(text) = fs::read_to_string(&record) else {
        return;
    };
    remove_all(&record, parse_record(&text), true);
}

/// Where a root is read from while its snapshot lives.
#[derive(Debug, Clone)]
pub struct Source {
    pub root: PathBuf,
    pub read: PathBuf,
}

/// The snapshots this sink took; removes them when dropped.
pub struct Taken {
    pub sources: Vec<Source>,
}

impl Drop for Taken {
    fn drop(&mut self) {
        release();
    }
}

/// Takes a snapshot of each root `mode` asks for (one per file system or
/// subvolume, shared by the roots on it); `cache_dir`/`mount` name the
/// record. Roots that get none are read live (a note unless `quiet`, for `auto`).
pub fn take(
    mode: Mode,
    roots: &[PathBuf],
    cache_dir: &Path,
    mount: &str,
    quiet: bool,
) -> Result<Taken> {
    let mut taken = Taken {
        sources: Vec::new(),
    };
    if mode == Mode::Off {
        return Ok(taken);
    }
    let record = record_path(cache_dir, mount);
    *LIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some((record.clone(), Vec::new()));
    // Roots on one file system (or subvolume) share its snapshot: one instant.
    let mut made: Vec<(u64, PathBuf, PathBuf)> = Vec::new();
    for (n, root) in roots.iter().enumerate() {
        let name = format!("{PREFIX}{mount}-{}-{n}", std::process::id());
        let dev = fs::symlink_metadata(root).map(|m| m.dev()).ok();
        let shared = made.iter().find(|(d, _, _)| Some(*d) == dev);
        let snapped = match shared {
            Some((_, top, at)) => Ok(Some((top.clone(), at.clone()))),
            None => snapshot_root(mode, root, &name, cache_dir, mount, &record),
        };
        match snapped {
            Ok(Some((top, at))) => {
                if let Some(dev) = dev {
                    made.push((dev, top.clone(), at.clone()));
                }
                let read = match root.strip_prefix(&top) {
                    Ok(rel) if !rel.as_os_str().is_empty() => at.join(rel),
                    _ => at,
                };
                taken.sources.push(Source {
                    root: root.clone(),
                    read,
                });
            }
            Ok(None) => {}
            Err(why) if mode == Mode::Auto => {
                if !quiet {
                    eprintln!(
                        "chute sink: note: {} is read live, without a snapshot: {why}",
                        root.display()
                    );
                }
            }
            Err(why) => {
                return Err(Error::Failed(format!(
                    "cannot snapshot {}: {why}; nothing read",
                    root.display()
                )));
            }
        }
    }
    Ok(taken)
}

/// Records `made` (fsynced) before `act` makes it, so a kill leaves it found;
/// [`release`] waits for `act`, so a signal meanwhile removes it too.
fn making(
    record: &Path,
    made: Made,
    act: impl FnOnce() -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let Some((_, list)) = live.as_mut() else {
        return Err("the sink is ending".into());
    };
    list.push(made);
    write_record(record, list).map_err(|e| format!("cannot write {}: {e}", record.display()))?;
    act()
}

fn snapshot_root(
    mode: Mode,
    root: &Path,
    name: &str,
    cache_dir: &Path,
    mount: &str,
    record: &Path,
) -> std::result::Result<Option<(PathBuf, PathBuf)>, String> {
    let md = match fs::symlink_metadata(root) {
        Ok(md) if md.is_dir() || md.is_file() => md,
        // Missing roots are reported by the walk; a symlink has nothing to freeze.
        _ => return Ok(None),
    };
    let magic = crate::sys::fs_type(root).map_err(|e| format!("statfs: {e}"))?;
    let lv = if magic == BTRFS_MAGIC || magic == ZFS_MAGIC || mode == Mode::Off {
        None
    } else {
        thin_lv(md.dev())
    };
    let kind = choose(mode, magic, lv.is_some())?;
    let Some(kind) = kind else {
        return Ok(None);
    };
    let top = top_of(root, md.dev())?;
    match kind {
        Kind::Btrfs => {
            let top_ino = fs::metadata(&top).map_err(|e| e.to_string())?.ino();
            if top_ino != 256 {
                return Err(format!(
                    "{} is not a btrfs subvolume's root (a bind mount?)",
                    top.display()
                ));
            }
            let at = top.join(format!(".{name}"));
            making(record, Made::Btrfs(at.clone()), || {
                run(Command::new("btrfs")
                    .args(["subvolume", "snapshot", "-r"])
                    .arg(&top)
                    .arg(&at))
            })?;
            Ok(Some((top, at)))
        }
        Kind::Zfs => {
            let out = Command::new("zfs")
                .args(["list", "-H", "-o", "name,mountpoint", "-t", "filesystem"])
                .output()
                .map_err(|e| format!("cannot run zfs: {e}"))?;
            let list = String::from_utf8_lossy(&out.stdout);
            let ds = zfs_dataset(&list, &top)
                .ok_or_else(|| format!("no ZFS dataset is mounted at {}", top.display()))?;
            let snap = format!("{ds}@{name}");
            making(record, Made::Zfs(snap.clone()), || {
                run(Command::new("zfs").arg("snapshot").arg(&snap))
            })?;
            let at = top.join(".zfs/snapshot").join(name);
            Ok(Some((top, at)))
        }
        Kind::Lvm => {
            let (vg, origin) = lv.ok_or("not an LVM thin volume")?;
            let dir = cache_dir.join(format!("fssnap-{mount}.d"));
            let at = dir.join(name);
            fs::create_dir_all(&at).map_err(|e| format!("cannot create {}: {e}", at.display()))?;
            let lv = format!("{vg}/{name}");
            let origin = format!("{vg}/{origin}");
            let opts = if magic == XFS_MAGIC {
                "ro,nouuid"
            } else {
                "ro"
            };
            let made = Made::Lvm {
                lv: lv.clone(),
                at: at.clone(),
            };
            making(record, made, || {
                run(Command::new("lvcreate")
                    .args(["-q", "-s", "-kn", "-n", name])
                    .arg(&origin))?;
                run(Command::new("mount")
                    .args(["-o", opts])
                    .arg(format!("/dev/{lv}"))
                    .arg(&at))
            })?;
            Ok(Some((top, at)))
        }
    }
}

/// The top of `root`'s file system (walking up while the device stays `dev`).
fn top_of(root: &Path, dev: u64) -> std::result::Result<PathBuf, String> {
    let mut top = root.to_path_buf();
    if !fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
        top.pop();
    }
    while let Some(up) = top.parent() {
        match fs::metadata(up) {
            Ok(m) if m.dev() == dev => top = up.to_path_buf(),
            Ok(_) => break,
            Err(e) => return Err(format!("{}: {e}", up.display())),
        }
    }
    Ok(top)
}

/// The dataset `zfs list -H -o name,mountpoint` says is mounted at `top`.
pub fn zfs_dataset(list: &str, top: &Path) -> Option<String> {
    list.lines().find_map(|l| {
        let (name, at) = l.split_once('\t')?;
        (Path::new(at) == top).then(|| name.to_string())
    })
}

/// The VG and LV of the thin volume on device `dev`, if it is one.
fn thin_lv(dev: u64) -> Option<(String, String)> {
    let (major, minor) = (libc_major(dev), libc_minor(dev));
    // Only device-mapper devices can be LVM volumes: no `lvs` for the rest.
    fs::metadata(format!("/sys/dev/block/{major}:{minor}/dm")).ok()?;
    let out = Command::new("lvs")
        .args([
            "--noheadings",
            "--separator",
            "|",
            "-o",
            "vg_name,lv_name,segtype,lv_kernel_major,lv_kernel_minor",
        ])
        .output()
        .ok()?;
    parse_lvs(&String::from_utf8_lossy(&out.stdout), major, minor)
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

/// The thin LV with kernel device `major:minor` in `lvs` output (fields
/// `vg|lv|segtype|major|minor`, blank-padded).
pub fn parse_lvs(out: &str, major: u64, minor: u64) -> Option<(String, String)> {
    out.lines().find_map(|l| {
        let f: Vec<&str> = l.split('|').map(str::trim).collect();
        let [vg, lv, seg, ma, mi] = f[..] else {
            return None;
        };
        let same = ma.parse() == Ok(major) && mi.parse() == Ok(minor);
        (same && seg == "thin").then(|| (vg.to_string(), lv.to_string()))
    })
}

/// Whether a directory named `name` is a chute snapshot (or a snapshot's
/// empty stand-in for one) the walk must not enter.
pub fn is_ours(name: &[u8]) -> bool {
    name.strip_prefix(b".")
        .unwrap_or(name)
        .starts_with(PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("auto"), Some(Mode::Auto));
        assert_eq!(Mode::parse("lvm"), Some(Mode::Only(Kind::Lvm)));
        assert_eq!(Mode::parse("ext4"), None);
        assert_eq!(choose(Mode::Off, BTRFS_MAGIC, false), Ok(None));
        assert_eq!(
            choose(Mode::Auto, BTRFS_MAGIC, false),
            Ok(Some(Kind::Btrfs))
        );
        assert_eq!(choose(Mode::Auto, 0xef53, true), Ok(Some(Kind::Lvm)));
        assert_eq!(choose(Mode::Auto, ZFS_MAGIC, false), Ok(Some(Kind::Zfs)));
        assert!(choose(Mode::Auto, 0xef53, false).is_err());
        assert_eq!(
            choose(Mode::Only(Kind::Btrfs), 0xef53, true),
            Err("not on btrfs".into())
        );
        assert!(choose(Mode::Only(Kind::Lvm), BTRFS_MAGIC, false).is_err());
    }

    #[test]
    fn records_round_trip_and_name_only_chute_snapshots() {
        let made = vec![
            Made::Btrfs("/v/data/.chute-fssnap-ab-1-0".into()),
            Made::Lvm {
                lv: "vg0/chute-fssnap-ab-1-1".into(),
                at: "/c/fssnap-ab.d/chute-fssnap-ab-1-1".into(),
            },
            Made::Zfs("tank/home@chute-fssnap-ab-1-2".into()),
        ];
        let mut text = format!("{RECORD_MAGIC}\n");
        for m in &made {
            text.push_str(&m.line());
            text.push('\n');
        }
        assert_eq!(parse_record(&text), made);
        // Names chute does not make are never removed.
        let forged = format!(
            "{RECORD_MAGIC}\nbtrfs {}\nlvm vg0/root 2f\nzfs tank/home@daily\nzfs tank/home\n",
            crate::hex::encode(b"/v/data")
        );
        assert_eq!(parse_record(&forged), vec![]);
        assert_eq!(
            parse_record("chute-fssnap 2\nzfs t@chute-fssnap-x\n"),
            vec![]
        );
    }

    #[test]
    fn lvs_output() {
        let out = "  vg0|pool|thin-pool|253|2\n  vg0|data|thin|253|4\n  vg0|old|linear|253|5\n";
        assert_eq!(parse_lvs(out, 253, 4), Some(("vg0".into(), "data".into())));
        assert_eq!(parse_lvs(out, 253, 5), None);
        assert_eq!(parse_lvs(out, 253, 9), None);
        let dev = libc::makedev(253, 4);
        assert_eq!((libc_major(dev), libc_minor(dev)), (253, 4));
    }

    #[test]
    fn zfs_list() {
        let list = "tank\t/tank\ntank/home\t/home\n";
        assert_eq!(
            zfs_dataset(list, Path::new("/home")),
            Some("tank/home".into())
        );
        assert_eq!(zfs_dataset(list, Path::new("/srv")), None);
    }

    #[test]
    fn own_names() {
        assert!(is_ours(b".chute-fssnap-ab-1-0"));
        assert!(is_ours(b"chute-fssnap-ab-1-0"));
        assert!(!is_ours(b"chute"));
    }
}
