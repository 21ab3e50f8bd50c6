//! What setup/ ships, run as it will run: the cron line under sh with only cron's
//! surroundings stubbed (systemctl, logger, sleep), the Containerfile's entry point
//! with flags appended, and install.sh staged into a DESTDIR and removed again.

use crate::util::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn setup_file(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("setup")
        .join(name);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A shell script that runs the chute under test (through the emulator, if one is
/// set) with its arguments: what the cron line's /usr/local/bin/chute becomes.
fn chute_wrapper(at: &Path) {
    let c = base_command();
    let mut words = vec![c.get_program().to_string_lossy().into_owned()];
    words.extend(c.get_args().map(|a| a.to_string_lossy().into_owned()));
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    script(at, &format!("exec {} \"$@\"", quoted.join(" ")));
}

/// The command of setup/chute.cron's one job line (after the five time fields and
/// the user), pointed at the chute under test.
fn cron_command(chute: &Path) -> String {
    let cron = setup_file("chute.cron");
    let line = cron
        .lines()
        .find(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .expect("a job line");
    assert!(!line.contains('%'), "cron turns % into a newline: {line}");
    let fields: Vec<&str> = line.splitn(7, ' ').collect();
    assert_eq!(fields[5], "root", "{line}");
    fields[6].replace("/usr/local/bin/chute", &chute.display().to_string())
}

struct CronRun {
    status: i32,
    /// What cron would mail.
    mail: String,
    /// What reached syslog.
    syslog: String,
    /// The random delay the job slept, in seconds.
    delay: u32,
}

/// Runs the cron job once, as cron would: sh -c, cron's PATH with stubs for
/// systemctl (the timer is not enabled), logger (appends to a file) and sleep
/// (records its argument instead of waiting up to 20 minutes).
fn run_cron(env: &Env, config: &str) -> CronRun {
    let stubs = env.path("stubs");
    fs::create_dir_all(&stubs).unwrap();
    let syslog = env.path("syslog");
    let slept = env.path("slept");
    script(&stubs.join("systemctl"), "exit 1");
    script(
        &stubs.join("logger"),
        &format!("cat >>'{}'", syslog.display()),
    );
    script(
        &stubs.join("sleep"),
        &format!("echo \"$1\" >'{}'", slept.display()),
    );
    chute_wrapper(&stubs.join("chute"));
    let conf = env.path("chute.conf");
    fs::write(&conf, config).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(cron_command(&stubs.join("chute")))
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", stubs.display()),
        )
        .env("HOME", env.home())
        .env("CHUTE_CONFIG", &conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "cron's stdout: {}",
        text(&out.stdout)
    );
    CronRun {
        status: out.status.code().unwrap_or(-1),
        mail: text(&out.stderr),
        syslog: fs::read_to_string(&syslog).unwrap_or_default(),
        delay: fs::read_to_string(&slept).unwrap().trim().parse().unwrap(),
    }
}

#[test]
fn the_cron_job_waits_a_random_while_and_mails_the_error_line() {
    let env = Env::new("cron");
    env.ok(["init"]);
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a"), b"kept").unwrap();

    // A night that fails: the key named in the config is not there.
    let bad = run_cron(
        &env,
        &format!(
            "CHUTE_KEY_FILE={}\nCHUTE_PATHS={}\n",
            env.path("no-such-key").display(),
            data.display()
        ),
    );
    assert_eq!(
        bad.status, 0,
        "cron ignores the status; the mail carries it"
    );
    assert!(
        bad.mail.contains("chute sink exited with status"),
        "{}",
        bad.mail
    );
    let error = bad
        .syslog
        .lines()
        .find(|l| l.starts_with("chute sink:"))
        .unwrap_or_else(|| panic!("no error line in syslog: {}", bad.syslog));
    assert!(error.contains("no-such-key"), "{error}");
    assert!(
        bad.mail.contains(error),
        "the mail must carry {error:?}:\n{}",
        bad.mail
    );
    assert!(bad.delay < 1200, "{}", bad.delay);

    // A good night: syslog has the summary, cron has nothing to mail.
    let key = env.home().join(".config/chute/key");
    let good = run_cron(
        &env,
        &format!(
            "CHUTE_KEY_FILE={}\nCHUTE_PATHS={}\n",
            key.display(),
            data.display()
        ),
    );
    assert_eq!(good.mail, "", "a clean night mails nothing");
    assert!(good.syslog.contains("snapshot"), "{}", good.syslog);
}

#[test]
fn cron_and_the_timer_run_at_the_same_priority_and_spread() {
    let cron = setup_file("chute.cron");
    let service = setup_file("chute-sink.service");
    let timer = setup_file("chute-sink.timer");
    let job = cron.lines().last().unwrap();
    for (unit, cron_form) in [
        ("Nice=10", "nice -n 10 "),
        ("IOSchedulingClass=idle", "ionice -c 3 "),
        ("CPUSchedulingPolicy=batch", "chrt -b 0 "),
    ] {
        assert!(service.contains(unit), "chute-sink.service lacks {unit}");
        assert!(job.contains(cron_form), "the cron job lacks {cron_form}");
    }
    assert!(timer.contains("RandomizedDelaySec=20min"));
    assert!(job.contains("shuf -i 0-1199 -n 1"), "{job}");
}

/// ENV and ENTRYPOINT of setup/Containerfile.
fn container_entry() -> (Vec<(String, String)>, Vec<String>) {
    let file = setup_file("Containerfile");
    let mut env = Vec::new();
    let mut entry = Vec::new();
    for line in file.lines() {
        if let Some(vars) = line.strip_prefix("ENV ") {
            for kv in vars.split_whitespace() {
                let (k, v) = kv.split_once('=').unwrap();
                env.push((k.to_string(), v.to_string()));
            }
        } else if let Some(json) = line.strip_prefix("ENTRYPOINT ") {
            entry = json
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|w| w.trim_matches('"').to_string())
                .collect();
        }
    }
    assert_eq!(entry.first().map(String::as_str), Some("/chute"));
    (env, entry[1..].to_vec())
}

#[test]
fn flags_after_the_container_image_override_its_defaults() {
    let env = Env::new("container");
    let (vars, args) = container_entry();
    assert!(vars.iter().any(|(k, _)| k == "CHUTE_LISTEN"), "{vars:?}");
    assert!(vars.iter().any(|(k, _)| k == "CHUTE_STORE"), "{vars:?}");
    // `podman run ... chute --listen ... --store ...`: appended to the entry point.
    let store = env.path("store");
    let mut cmd = env.cmd(&args);
    cmd.envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["--listen", "127.0.0.1:0", "--store"])
        .arg(&store)
        .arg("--open");
    let server = Server::spawn(cmd);
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);

    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), b"through the container's entry point").unwrap();
    env.ok(["init"]);
    env.ok(["sink", "--remote", &server.url(), data.to_str().unwrap()]);
    assert!(store.is_dir(), "the appended --store is the one used");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    walk(dir).into_iter().filter(|p| !p.is_dir()).collect()
}

#[test]
fn uninstall_removes_what_install_put_down_whatever_its_prefix() {
    let env = Env::new("install");
    let stage = env.path("stage");
    let install = Path::new(env!("CARGO_MANIFEST_DIR")).join("setup/install.sh");
    let bin = env.path("chute-binary");
    fs::write(&bin, b"#!/bin/sh\n").unwrap();
    let run = |args: &[&str], prefix: Option<&str>| {
        let mut c = Command::new("bash");
        c.arg(&install).args(args).env("DESTDIR", &stage);
        match prefix {
            Some(p) => c.env("PREFIX", p),
            None => c.env_remove("PREFIX"),
        };
        let out = c.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "install.sh {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    run(&[bin.to_str().unwrap()], Some("/opt/chute"));
    let installed = files_under(&stage);
    assert!(stage.join("opt/chute/bin/chute").is_file(), "{installed:?}");
    let cron = fs::read_to_string(stage.join("etc/cron.d/chute")).unwrap();
    assert!(cron.contains("/opt/chute/bin/chute sink"), "{cron}");
    // The man pages and completions setup/ ships (tests/docs.rs keeps them current).
    for doc in [
        "share/man/man1/chute.1",
        "share/man/man1/chute-sink.1",
        "share/bash-completion/completions/chute",
        "share/zsh/site-functions/_chute",
        "share/fish/vendor_completions.d/chute.fish",
    ] {
        assert!(
            stage.join("opt/chute").join(doc).is_file(),
            "{doc}: {installed:?}"
        );
    }

    // `make uninstall` without the install's PREFIX still finds the binary.
    let said = run(&["--uninstall"], None);
    assert!(said.contains("opt/chute/bin/chute"), "{said}");
    assert_eq!(
        files_under(&stage),
        Vec::<PathBuf>::new(),
        "everything install put down is gone: {said}"
    );
}

#[test]
fn the_shipped_config_holds_only_settings_chute_knows() {
    let env = Env::new("shipped-conf");
    // Every line, commented examples included, as an owner would uncomment them.
    let conf = setup_file("chute.conf");
    let all: String = conf
        .lines()
        .map(|l| l.strip_prefix('#').unwrap_or(l))
        .filter(|l| l.starts_with("CHUTE_"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(all.lines().count() > 15, "{all}");
    let file = env.path("chute.conf");
    fs::write(&file, &all).unwrap();
    let out = env
        .cmd(["list"])
        .env("CHUTE_CONFIG", &file)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("chute.conf:"), "{err}");
}
