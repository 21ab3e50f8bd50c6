//! The container image (issue 21, item 2): `cross/image.sh`, as `make image` calls
//! it, builds setup/Containerfile with podman into a private store under the test's
//! directory, and the image is inspected as podman sees it: `chute serve` as the entry
//! point with no CMD (so flags after the image name are the only flags: argh refuses
//! a repeated option, "duplicate values provided"), the address and store as ENV, the
//! store as a volume, and /chute byte-identical to the binary under test, which runs.
//! A container is not started: `podman run` fails in the sandbox this was written in
//! (crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted), so the entry point's
//! handling of ENV and appended flags is tested by running the binary the same way
//! (setup_ops::flags_after_the_container_image_override_its_defaults). `make
//! test-deps` installs podman; without it this test fails, it never skips.
use crate::util::{Env, check_ok, text};
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin_under_test() -> PathBuf {
    std::env::var_os("CHUTE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_chute")))
}

/// `bin` behind `CHUTE_TEST_RUNNER`'s words (qemu for an ARM build), as
/// util::base_command runs the binary under test.
fn runner_command(bin: &Path) -> Command {
    let runner = std::env::var("CHUTE_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(first) => {
            let mut c = Command::new(first);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// The image's platform for the binary's machine, as `file` names it.
fn platform(bin: &Path) -> &'static str {
    let out = Command::new("file").arg("-b").arg(bin).output().unwrap();
    let desc = text(&out.stdout);
    if desc.contains("aarch64") {
        "linux/arm64"
    } else if desc.contains("ARM") {
        "linux/arm/v7"
    } else {
        "linux/amd64"
    }
}

#[test]
fn image_runs_chute_serve_from_env_with_nothing_in_cmd() {
    let env = Env::new("image");
    let root = env.path("podman");
    // A private store (vfs needs no overlay mounts) so tests and a developer's own
    // images never meet; --cgroup-manager cgroupfs: no systemd session needed.
    let global = format!(
        "--root {0}/root --runroot {0}/run --storage-driver vfs --cgroup-manager cgroupfs",
        root.display()
    );
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.args(global.split_whitespace()).args(args);
        c
    };
    let bin = bin_under_test();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cross/image.sh");
    let mut build = Command::new("bash");
    build
        .arg(&script)
        .arg(platform(&bin))
        .arg(&bin)
        .arg("chute-test:probe")
        .env("CHUTE_IMAGE_FLAGS", &global)
        .env("CHUTE_IMAGE_DYNAMIC_OK", "1");
    let out = build.output().expect("bash cross/image.sh");
    check_ok(&build, &out);

    let mut inspect = podman(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{json .Config.Env}}|{{json .Config.Volumes}}|{{json .Config.ExposedPorts}}",
        "chute-test:probe",
    ]);
    let out = inspect.output().expect("podman image inspect");
    let got = check_ok(&inspect, &out);
    let parts: Vec<&str> = got.trim().split('|').collect();
    assert_eq!(parts[0], r#"["/chute","serve"]"#, "{got}");
    assert_eq!(
        parts[1], "null",
        "no CMD: appended flags must be the only ones; {got}"
    );
    assert!(parts[2].contains(r#""CHUTE_LISTEN=0.0.0.0:2002""#), "{got}");
    assert!(
        parts[2].contains(r#""CHUTE_STORE=/var/lib/chute""#),
        "{got}"
    );
    assert!(parts[3].contains(r#""/var/lib/chute""#), "{got}");
    assert!(parts[4].contains("2002/tcp"), "{got}");

    // The file inside is the binary, whole: copied out of a created (never started)
    // container and run.
    let mut create = podman(&["create", "--name", "probe", "chute-test:probe"]);
    let out = create.output().unwrap();
    check_ok(&create, &out);
    let inside = env.path("chute-from-image");
    let mut cp = podman(&["cp", "probe:/chute", inside.to_str().unwrap()]);
    let out = cp.output().unwrap();
    check_ok(&cp, &out);
    assert!(
        std::fs::read(&inside).unwrap() == std::fs::read(&bin).unwrap(),
        "/chute in the image differs from {}",
        bin.display()
    );
    let mut version = runner_command(&inside);
    version.arg("--version");
    let out = version.output().unwrap();
    assert!(check_ok(&version, &out).starts_with("chute "));
    let mut rm = podman(&["rm", "probe"]);
    let _ = rm.output();
}
