//! `chute generate`: the man pages and completions setup/ ships are what the binary
//! makes now, and each works in the real program that reads it: man (groff), bash,
//! zsh and fish (installed by `make test-deps`).

use crate::util::{Env, text, walk};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn generate(env: &Env) -> PathBuf {
    let out = env.path("docs");
    env.ok([
        "generate".as_ref(),
        "--man".as_ref(),
        out.join("man").as_os_str(),
        "--bash".as_ref(),
        out.join("completions/chute.bash").as_os_str(),
        "--zsh".as_ref(),
        out.join("completions/_chute").as_os_str(),
        "--fish".as_ref(),
        out.join("completions/chute.fish").as_os_str(),
    ]);
    out
}

fn shell(program: &str, script: &str) -> String {
    let out = Command::new(program)
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("{program} (make test-deps installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} -c {script}\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn the_shipped_man_pages_and_completions_are_what_the_binary_makes() {
    let env = Env::new("docs-fresh");
    let made = generate(&env);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("setup");
    let mut files = walk(&made);
    files.retain(|f| f.is_file());
    let shipped_count = fs::read_dir(shipped.join("man")).unwrap().count();
    assert_eq!(
        files
            .iter()
            .filter(|f| f.starts_with(made.join("man")))
            .count(),
        shipped_count,
        "setup/man has pages of commands that are gone, or lacks new ones: run make docs"
    );
    assert!(files.len() > 10, "{files:?}");
    for f in files {
        let rel = f.strip_prefix(&made).unwrap();
        let want = fs::read(&f).unwrap();
        let have = fs::read(shipped.join(rel)).unwrap_or_default();
        assert!(
            want == have,
            "setup/{} is stale (the flags changed): run make docs",
            rel.display()
        );
    }
}

/// A page as man shows it, as plain text (groff's hyphens and minus signs as `-`).
fn render(page: &Path) -> String {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-P-cbou"])
        .arg(page)
        .output()
        .expect("groff (make test-deps installs groff-base)");
    text(&out.stdout).replace(['\u{2010}', '\u{2212}'], "-")
}

#[test]
fn man_renders_every_page_without_a_warning() {
    let env = Env::new("docs-man");
    let man = generate(&env).join("man");
    let mut pages = walk(&man);
    pages.retain(|f| f.is_file());
    for page in &pages {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(page)
            .output()
            .expect("groff (make test-deps installs groff-base)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            page.display(),
            text(&out.stderr)
        );
    }
    let sink = render(&man.join("chute-sink.1"));
    assert!(sink.contains("chute-sink - Back up PATHs"), "{sink}");
    assert!(sink.contains("-e, --exclude exclude"), "{sink}");
    let top = render(&man.join("chute.1"));
    assert!(top.contains("chute-restore(1)"), "{top}");
    assert!(top.contains("CHUTE_REMOTE"), "{top}");
}

#[test]
fn bash_completes_commands_options_and_file_names() {
    let env = Env::new("docs-bash");
    let script = generate(&env).join("completions/chute.bash");
    let complete = |words: &str| {
        shell(
            "bash",
            &format!(
                "source '{}'; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); \
                 _chute; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ),
        )
    };
    assert_eq!(complete("chute si"), "sink\n");
    assert_eq!(complete("chute res"), "restore\n");
    let opts = complete("chute sink --excl");
    assert_eq!(opts, "--exclude\n--exclude-file\n--exclude-caches\n");
    // After an option that takes a value, and for arguments: no words of ours,
    // so bash falls back to file names (complete -o default).
    assert_eq!(complete("chute restore --to ''"), "\n");
    assert_eq!(complete("chute sink ''"), "\n");
    let reg = shell(
        "bash",
        &format!("source '{}'; complete -p chute", script.display()),
    );
    assert!(reg.contains("-F _chute"), "{reg}");
}

#[test]
fn fish_completes_commands_and_options() {
    let env = Env::new("docs-fish");
    let script = generate(&env).join("completions/chute.fish");
    let complete = |line: &str| {
        shell(
            "fish",
            &format!("source '{}'; complete -C '{line}'", script.display()),
        )
    };
    let cmds = complete("chute ver");
    assert!(cmds.starts_with("verify\t"), "{cmds}");
    let opts = complete("chute restore --");
    assert!(opts.contains("--to\t"), "{opts}");
    assert!(opts.contains("--accept-rollback\t"), "{opts}");
    assert!(
        !opts.contains("--exclude-caches"),
        "sink's option offered to restore: {opts}"
    );
}

#[test]
fn zsh_loads_the_completion_function() {
    let env = Env::new("docs-zsh");
    let dir = generate(&env).join("completions");
    shell("zsh", &format!("zsh -n '{}'", dir.join("_chute").display()));
    // Loaded the way zsh loads it from $fpath: by compinit, as the function _chute.
    let out = shell(
        "zsh",
        &format!(
            "fpath=('{}' $fpath); autoload -Uz compinit; compinit -u -d '{}'; \
             print -r -- $_comps[chute]; autoload +X _chute; whence -w _chute",
            dir.display(),
            env.path("zcompdump").display()
        ),
    );
    assert_eq!(out, "_chute\n_chute: function\n");
}
