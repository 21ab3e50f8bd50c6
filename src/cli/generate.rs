//! `chute generate`: the man pages and the shell completions (bash, zsh, fish),
//! made from the help texts `--help` prints (argh's, from [`super::args`], taken
//! apart by [`argv::parse`]), so that they cannot drift from the flags. setup/
//! ships their output (`make docs` writes setup/man and setup/completions), which
//! setup/install.sh installs; a test fails when those copies are stale.
//!
//! Output is plain text and the same for the same flags: no date, no commit, only
//! the crate's version.

use super::args::GenerateCmd;
use super::argv::{self, Entry, Help};
use crate::{Error, Result};
use std::fmt::Write as _;
use std::path::Path;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The top level's help and each command's, in the order `--help` lists them.
fn pages() -> (Help, Vec<(String, Help)>) {
    let top = argv::parse(&argv::help(None));
    let commands = top
        .commands
        .iter()
        .map(|c| (c.name.clone(), argv::parse(&argv::help(Some(&c.name)))))
        .collect();
    (top, commands)
}

/// The options a user types: argh's `--help` entry is left to `--help` itself.
fn options(h: &Help) -> impl Iterator<Item = &Entry> {
    h.options.iter().filter(|o| o.name != "--help")
}

/// Whether the usage line shows `name`'s value or positional as repeatable.
fn repeats(h: &Help, e: &Entry) -> bool {
    let word = e.value.as_deref().unwrap_or(&e.name);
    h.usage.contains(&format!("<{word}...>"))
}

/// A description's first sentence, at most ~80 characters, for the one-line
/// descriptions completion menus show.
fn brief(about: &str) -> String {
    let first = about.split(". ").next().unwrap_or("").trim_end_matches('.');
    if first.len() <= 80 {
        return first.to_string();
    }
    let head: String = first.chars().take(77).collect();
    let cut = head.rfind(' ').unwrap_or(head.len());
    format!("{}...", &head[..cut])
}

// --- man pages -------------------------------------------------------------------

/// Text for roff: backslashes and hyphens escaped, a line that would start with a
/// request's `.` or `'` guarded.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with(['.', '\'']) {
        format!("\\&{t}")
    } else {
        t
    }
}

/// A description as roff paragraphs (argh keeps the doc comment's line breaks).
fn paragraphs(out: &mut String, about: &str) {
    for line in about.lines() {
        if line.trim().is_empty() {
            out.push_str(".PP\n");
        } else {
            let _ = writeln!(out, "{}", roff(line.trim()));
        }
    }
}

fn title(out: &mut String, name: &str, about: &str) {
    let _ = write!(
        out,
        ".TH {} 1 \"\" \"chute {VERSION}\" \"chute manual\"\n.nh\n.ad l\n.SH NAME\n{} \\- {}\n",
        roff(&name.to_uppercase()),
        roff(name),
        roff(&brief(about)),
    );
}

/// `chute-<command>(1)`.
fn man_command(name: &str, h: &Help) -> String {
    let mut out = String::new();
    title(&mut out, &format!("chute-{name}"), &h.about);
    let prefix = format!("chute {name}");
    let rest = h.usage.strip_prefix(&prefix).unwrap_or(&h.usage).trim();
    let _ = write!(
        out,
        ".SH SYNOPSIS\n.B {}\n{}\n.SH DESCRIPTION\n",
        roff(&prefix),
        roff(rest)
    );
    paragraphs(&mut out, &h.about);
    if !h.positionals.is_empty() {
        out.push_str(".SH ARGUMENTS\n");
        for p in &h.positionals {
            let _ = write!(out, ".TP\n.I {}\n{}\n", roff(&p.name), roff(&p.about));
        }
    }
    out.push_str(".SH OPTIONS\n");
    for o in &h.options {
        out.push_str(".TP\n");
        if let Some(s) = &o.short {
            let _ = write!(out, "\\fB{}\\fR, ", roff(s));
        }
        let _ = write!(out, "\\fB{}\\fR", roff(&o.name));
        if let Some(v) = &o.value {
            let _ = write!(out, " \\fI{}\\fR", roff(v));
        }
        let _ = writeln!(out, "\n{}", roff(&o.about));
    }
    out.push_str(".SH SEE ALSO\n.BR chute (1)\n");
    out
}

/// The `CHUTE_*` names an option's description mentions, with the options that do.
fn environment(commands: &[(String, Help)]) -> Vec<(String, Vec<String>)> {
    let mut vars: Vec<(String, Vec<String>)> = Vec::new();
    for (name, h) in commands {
        for o in options(h) {
            for word in o
                .about
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            {
                if word.len() <= 6 || !word.starts_with("CHUTE_") {
                    continue;
                }
                let user = format!("{name} {}", o.name);
                match vars.iter_mut().find(|(v, _)| v == word) {
                    Some((_, users)) if !users.contains(&user) => users.push(user),
                    Some(_) => {}
                    None => vars.push((word.to_string(), vec![user])),
                }
            }
        }
    }
    vars.sort();
    vars
}

/// `chute(1)`: what chute is, its commands, the environment they read, the exit
/// statuses.
fn man_top(top: &Help, commands: &[(String, Help)]) -> String {
    let mut out = String::new();
    title(
        &mut out,
        "chute",
        "zero-knowledge backups between small boards",
    );
    out.push_str(
        ".SH SYNOPSIS\n.B chute\n\\fIcommand\\fR [\\fIoptions\\fR] [\\fIarguments\\fR]\n\
         .br\n.B chute \\-\\-version\n.br\n.B chute\n[\\fIcommand\\fR] \\fB\\-\\-help\\fR\n\
         .SH DESCRIPTION\n",
    );
    paragraphs(&mut out, &top.about);
    out.push_str(
        ".PP\nEach command has a page of its own, and \\fB\\-\\-help\\fR.\n.SH COMMANDS\n",
    );
    for c in &top.commands {
        let _ = write!(
            out,
            ".TP\n.BR chute\\-{} (1)\n{}\n",
            roff(&c.name),
            roff(&c.about)
        );
    }
    out.push_str(
        ".SH ENVIRONMENT\nEvery setting is taken from its flag, else its environment \
         variable, else the config file \\fB/etc/chute/chute.conf\\fR (\\fBCHUTE_CONFIG\\fR; \
         \\fBKEY=value\\fR lines with the same names), else its default.\n",
    );
    for (var, users) in environment(commands) {
        let _ = write!(out, ".TP\n.B {}\n{}\n", roff(&var), roff(&users.join(", ")));
    }
    out.push_str(
        ".SH EXIT STATUS\n.TP\n.B 0\nsuccess\n.TP\n.B 1\nthe command failed\n.TP\n.B 2\n\
         a usage error, or no store at the remote\n.TP\n.B 3\nthe command finished but \
         left some of its work undone (it says what)\n.SH SEE ALSO\n",
    );
    let refs: Vec<String> = top
        .commands
        .iter()
        .map(|c| format!(".BR chute\\-{} (1)", roff(&c.name)))
        .collect();
    let _ = writeln!(out, "{}", refs.join(" ,\n"));
    out
}

// --- completions -------------------------------------------------------------------

fn bash(top: &Help, commands: &[(String, Help)]) -> String {
    let mut out = String::from(
        "# bash completion for chute (made by `chute generate`: do not edit)\n\
         _chute() {\n\
         \tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} opts= takes=\n\
         \tCOMPREPLY=()\n\
         \tif ((COMP_CWORD == 1)); then\n",
    );
    let names: Vec<&str> = top.commands.iter().map(|c| c.name.as_str()).collect();
    let _ = write!(
        out,
        "\t\tmapfile -t COMPREPLY < <(compgen -W '{} help --help --version' -- \"$cur\")\n\
         \t\treturn\n\tfi\n\tcase ${{COMP_WORDS[1]}} in\n",
        names.join(" ")
    );
    for (name, h) in commands {
        let mut opts = Vec::new();
        let mut takes = Vec::new();
        for o in &h.options {
            let names = o.short.iter().chain([&o.name]);
            if o.value.is_some() {
                takes.extend(names.clone().cloned());
            }
            opts.extend(names.cloned());
        }
        let _ = writeln!(
            out,
            "\t{name}) opts='{}' takes=' {} ' ;;",
            opts.join(" "),
            takes.join(" ")
        );
    }
    out.push_str(
        "\tesac\n\
         \t# An option's value and the arguments: the shell's own file names.\n\
         \t[[ $takes == *\" $prev \"* ]] && return\n\
         \tif [[ $cur == -* ]]; then\n\
         \t\tmapfile -t COMPREPLY < <(compgen -W \"$opts\" -- \"$cur\")\n\
         \tfi\n\
         }\n\
         complete -o bashdefault -o default -F _chute chute\n",
    );
    out
}

/// Text inside a single-quoted zsh word.
fn zsh_quote(text: &str) -> String {
    text.replace('\'', "'\\''")
}

/// Text inside a single-quoted zsh word, within `_arguments`' `[...]`.
fn zsh_bracketed(text: &str) -> String {
    zsh_quote(text).replace('[', "\\[").replace(']', "\\]")
}

fn zsh(top: &Help, commands: &[(String, Help)]) -> String {
    let mut out = String::from(
        "#compdef chute\n\
         # zsh completion for chute (made by `chute generate`: do not edit)\n\
         _chute() {\n\
         \tlocal -a commands\n\
         \tcommands=(\n",
    );
    for c in &top.commands {
        let _ = writeln!(out, "\t\t'{}:{}'", c.name, zsh_quote(&brief(&c.about)));
    }
    out.push_str(
        "\t)\n\
         \tif ((CURRENT == 2)); then\n\
         \t\t_describe -t commands 'chute command' commands\n\
         \t\treturn\n\
         \tfi\n\
         \tlocal cmd=${words[2]}\n\
         \tshift words\n\
         \t((CURRENT--))\n\
         \tcase $cmd in\n",
    );
    for (name, h) in commands {
        let _ = writeln!(out, "\t{name})\n\t\t_arguments -s \\");
        for o in options(h) {
            let many = repeats(h, o);
            let names: Vec<&str> = o
                .short
                .iter()
                .map(String::as_str)
                .chain([o.name.as_str()])
                .collect();
            let spec = match (&names[..], many) {
                ([one], true) => format!("'*{one}"),
                ([one], false) => format!("'{one}"),
                (both, true) => format!("'*'{{{}}}'", both.join(",")),
                (both, false) => format!("'({})'{{{}}}'", both.join(" "), both.join(",")),
            };
            let value = o.value.as_deref().map_or(String::new(), |v| {
                format!(":{}:_files", v.trim_end_matches('.'))
            });
            let _ = writeln!(
                out,
                "\t\t\t{spec}[{}]{value}' \\",
                zsh_bracketed(&brief(&o.about))
            );
        }
        for p in &h.positionals {
            let star = if repeats(h, p) { "*" } else { "" };
            let _ = writeln!(out, "\t\t\t'{star}:{}:_files' \\", zsh_quote(&p.name));
        }
        out.push_str("\t\t\t&& return\n\t\t;;\n");
    }
    out.push_str("\tesac\n\treturn 1\n}\n_chute \"$@\"\n");
    out
}

/// Text inside a single-quoted fish word.
fn fish_quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

fn fish(top: &Help, commands: &[(String, Help)]) -> String {
    let mut out = String::from(
        "# fish completion for chute (made by `chute generate`: do not edit)\n\
         complete -c chute -f\n",
    );
    for c in &top.commands {
        let _ = writeln!(
            out,
            "complete -c chute -n __fish_use_subcommand -a {} -d '{}'",
            c.name,
            fish_quote(&brief(&c.about))
        );
    }
    for (name, h) in commands {
        let when = format!("complete -c chute -n '__fish_seen_subcommand_from {name}'");
        if !h.positionals.is_empty() {
            let _ = writeln!(out, "{when} -F");
        }
        for o in options(h) {
            out.push_str(&when);
            if let Some(s) = &o.short {
                let _ = write!(out, " -s {}", s.trim_start_matches('-'));
            }
            let _ = write!(out, " -l {}", o.name.trim_start_matches('-'));
            if o.value.is_some() {
                out.push_str(" -r -F");
            }
            let _ = writeln!(out, " -d '{}'", fish_quote(&brief(&o.about)));
        }
    }
    out
}

/// Writes what `c` asks for.
pub fn cmd(c: GenerateCmd) -> Result<()> {
    if c.man.is_none() && c.bash.is_none() && c.zsh.is_none() && c.fish.is_none() {
        return Err(Error::Usage(
            "say what to write: --man DIR, --bash FILE, --zsh FILE or --fish FILE".into(),
        ));
    }
    let (top, commands) = pages();
    let write = |path: &Path, text: String| {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        parent
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| crate::fsutil::write_atomic(path, text.as_bytes()))
            .map_err(|e| Error::Failed(format!("cannot write {}: {e}", path.display())))
    };
    if let Some(dir) = &c.man {
        write(&dir.join("chute.1"), man_top(&top, &commands))?;
        for (name, h) in &commands {
            write(&dir.join(format!("chute-{name}.1")), man_command(name, h))?;
        }
    }
    if let Some(f) = &c.bash {
        write(f, bash(&top, &commands))?;
    }
    if let Some(f) = &c.zsh {
        write(f, zsh(&top, &commands))?;
    }
    if let Some(f) = &c.fish {
        write(f, fish(&top, &commands))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_escapes_what_roff_would_read_as_requests() {
        assert_eq!(roff("--to DIR"), "\\-\\-to DIR");
        assert_eq!(roff(".hidden"), "\\&.hidden");
        assert_eq!(roff("a\\b"), "a\\eb");
    }

    #[test]
    fn brief_is_the_first_sentence_and_short() {
        assert_eq!(
            brief("List snapshots, oldest first."),
            "List snapshots, oldest first"
        );
        assert_eq!(brief("One. Two."), "One");
        let long = "word ".repeat(40);
        let b = brief(&long);
        assert!(b.len() <= 80 && b.ends_with("..."), "{b}");
    }

    #[test]
    fn every_command_and_option_is_in_every_output() {
        let (top, commands) = pages();
        let outputs = [
            man_top(&top, &commands),
            bash(&top, &commands),
            zsh(&top, &commands),
            fish(&top, &commands),
        ];
        for (name, h) in &commands {
            for out in &outputs {
                assert!(out.contains(name.as_str()), "{name}");
            }
            let page = man_command(name, h);
            let (b, z, f) = (&outputs[1], &outputs[2], &outputs[3]);
            for o in options(h) {
                let bare = o.name.trim_start_matches('-');
                assert!(page.contains(&roff(&o.name)), "{name} {}", o.name);
                assert!(b.contains(&o.name), "bash: {name} {}", o.name);
                assert!(z.contains(&o.name), "zsh: {name} {}", o.name);
                assert!(f.contains(&format!("-l {bare}")), "fish: {name} {}", o.name);
            }
        }
        // The environment section lists a variable with the options that read it.
        let env = environment(&commands);
        let remote = env.iter().find(|(v, _)| v == "CHUTE_REMOTE").unwrap();
        assert!(
            remote.1.contains(&"sink --remote".to_string()),
            "{remote:?}"
        );
    }

    #[test]
    fn zsh_specs_mark_repeatable_options_and_quote_descriptions() {
        let (top, commands) = pages();
        let z = zsh(&top, &commands);
        // --exclude is repeatable (`<exclude...>`), --remote is not.
        assert!(z.contains("'*'{-e,--exclude}'["), "{z}");
        assert!(z.contains("'(-r --remote)'{-r,--remote}'["), "{z}");
        assert_eq!(zsh_bracketed("a'b[c]:d"), "a'\\''b\\[c\\]:d");
    }
}
