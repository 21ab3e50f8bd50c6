//! What argh is given and what its errors say. argh knows neither `--opt=value`
//! nor `-h`, and words its errors for no command in particular
//! ("Unrecognized argument: --exlude"); this module fixes both around it, from
//! the command's own `--help` text (so the flags in [`super::args`] stay the one
//! list of them):
//!
//! - Before argh: `-h` is `--help`; `--opt=value` is split in two for an option
//!   that takes a value and refused for a switch; an option's value and
//!   everything after `--` pass untouched.
//! - After argh: one line `chute <command>: <what>` with a did-you-mean for a
//!   mistyped option or command, then that command's usage; exit status 2.

use super::Cli;
use argh::FromArgs;

/// One line of a help text's lists: an option, a positional argument or a command,
/// with its description (continuation lines joined).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// `--exclude`, `paths` or `sink`.
    pub name: String,
    /// An option's one-letter form: `-e`.
    pub short: Option<String>,
    /// An option that takes a value: the value's placeholder in the usage line.
    pub value: Option<String>,
    pub about: String,
}

/// A help text, taken apart.
#[derive(Debug, Default)]
pub(super) struct Help {
    /// The usage line without its `Usage: `.
    pub usage: String,
    /// The command's description.
    pub about: String,
    pub positionals: Vec<Entry>,
    pub options: Vec<Entry>,
    pub commands: Vec<Entry>,
}

/// The help text argh prints for `chute [command] --help`.
pub(super) fn help(command: Option<&str>) -> String {
    let args: Vec<&str> = command.into_iter().chain(["--help"]).collect();
    match Cli::from_args(&["chute"], &args) {
        Ok(_) => String::new(),
        Err(e) => e.output,
    }
}

/// Takes argh's help text apart: the usage line, the description, and the
/// entries of its "Positional Arguments:", "Options:" and "Commands:" lists (two
/// spaces, the name, its description from column 20 or on the next lines). Whether
/// an option takes a value, and its placeholder, comes from the usage line
/// (`[-r <remote>]`, `--to <to>`).
pub(super) fn parse(help: &str) -> Help {
    let mut lines = help.lines();
    let usage = lines.next().unwrap_or("").trim_start_matches("Usage: ");
    let words: Vec<&str> = usage.split_whitespace().collect();
    let value = |f: &str| {
        let w = words
            .windows(2)
            .find(|w| w[0].trim_start_matches('[') == f && w[1].starts_with('<'))?;
        Some(w[1].trim_matches(['<', '>', '[', ']', '.']).to_string())
    };
    let mut out = Help {
        usage: usage.to_string(),
        ..Help::default()
    };
    let mut list: Option<&mut Vec<Entry>> = None;
    for line in lines {
        match line {
            "Positional Arguments:" => list = Some(&mut out.positionals),
            "Options:" => list = Some(&mut out.options),
            "Commands:" => list = Some(&mut out.commands),
            _ => {}
        }
        let Some(list) = list.as_deref_mut() else {
            let sep = if out.about.is_empty() { "" } else { "\n" };
            if !line.is_empty() || !out.about.is_empty() {
                out.about = format!("{}{sep}{line}", out.about);
            }
            continue;
        };
        if line.starts_with("    ") {
            if let Some(last) = list.last_mut() {
                let sep = if last.about.is_empty() { "" } else { " " };
                last.about = format!("{}{sep}{}", last.about, line.trim());
            }
        } else if let Some(entry) = line.strip_prefix("  ") {
            // Names ("-e, --exclude", "--help, help"), then the description: with
            // a single space between them when the name fills its column.
            let mut names = Vec::new();
            let mut about = entry;
            loop {
                let (word, tail) = about.split_once(' ').unwrap_or((about, ""));
                about = tail;
                match word.strip_suffix(',') {
                    Some(w) => names.push(w),
                    None => break names.push(word),
                }
            }
            let (short, name) = match names[..] {
                [first, long, ..] if !first.starts_with("--") => (Some(first.to_string()), long),
                _ => (None, names[0]),
            };
            list.push(Entry {
                name: name.to_string(),
                value: value(name).or_else(|| short.as_deref().and_then(value)),
                short,
                about: about.trim().to_string(),
            });
        }
    }
    out.about = out.about.trim_end().to_string();
    out
}

/// Levenshtein distance, on bytes (flag and command names are ASCII).
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let next = (diag + usize::from(x != y))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The candidate `word` most likely meant: the only one it begins, else the
/// nearest within a third of its length (at least 1, at most 3 edits).
fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let mut prefixed = candidates.iter().filter(|c| c.starts_with(word));
    if let (Some(only), None) = (prefixed.next(), prefixed.next()) {
        if word.trim_start_matches('-').len() >= 2 {
            return Some(only);
        }
    }
    let bound = (word.len() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|&(d, _)| d <= bound)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// A usage error: the one-line message and the usage to print after it.
#[derive(Debug)]
pub struct Refusal {
    pub line: String,
    pub usage: String,
}

fn refuse(command: Option<&str>, what: String) -> Refusal {
    let who = command.map_or("chute".to_string(), |c| format!("chute {c}"));
    Refusal {
        line: format!("{who}: {what}"),
        usage: help(command),
    }
}

/// The command a command line names, if any (its first word, unless an option).
fn command_of(args: &[String]) -> Option<&str> {
    args.first()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-') && *a != "help")
}

/// Rewrites what the user typed into what argh reads (see the module doc);
/// refuses an unknown command and a switch given a value.
pub fn normalize(args: &[String]) -> Result<Vec<String>, Refusal> {
    let Some(cmd) = command_of(args) else {
        // The top level: only -h/--help and `help ...` mean anything here.
        let mut out = args.to_vec();
        if let Some(first) = out.first_mut().filter(|a| *a == "-h") {
            *first = "--help".into();
        }
        return Ok(out);
    };
    let names = parse(&help(None)).commands;
    if !names.iter().any(|n| n.name == cmd) {
        let names: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
        let guess = nearest(cmd, &names).map_or(String::new(), |g| format!(" (did you mean {g}?)"));
        return Err(refuse(None, format!("unknown command {cmd}{guess}")));
    }
    let flags = parse(&help(Some(cmd))).options;
    let takes_value = |name: &str| {
        flags
            .iter()
            .find(|f| f.name == name || f.short.as_deref() == Some(name))
            .map(|f| f.value.is_some())
    };
    let mut out = vec![cmd.to_string()];
    let mut rest = args[1..].iter();
    while let Some(a) = rest.next() {
        if a == "--" {
            out.push(a.clone());
            out.extend(rest.by_ref().cloned());
            break;
        }
        if a == "-h" {
            out.push("--help".into());
            continue;
        }
        if let Some((name, value)) = a.split_once('=').filter(|_| a.starts_with("--")) {
            match takes_value(name) {
                Some(true) => {
                    out.push(name.into());
                    out.push(value.into());
                }
                Some(false) => {
                    return Err(refuse(
                        Some(cmd),
                        format!("{name} takes no value (given {a})"),
                    ));
                }
                // `--=x` is no option at all (and `--` would end them): argh refuses it whole.
                None if name == "--" => out.push(a.clone()),
                // argh refuses it; the error names the option without its value.
                None => out.push(name.into()),
            }
            continue;
        }
        out.push(a.clone());
        if takes_value(a) == Some(true) {
            out.extend(rest.next().cloned());
        }
    }
    Ok(out)
}

/// argh's error for a parsed command line, rewritten (see the module doc).
pub fn rewrite(args: &[String], argh_says: &str) -> Refusal {
    let cmd = command_of(args);
    let mut lines = argh_says.lines();
    let first = lines.next().unwrap_or("invalid arguments").trim();
    let what = if let Some(arg) = first.strip_prefix("Unrecognized argument: ") {
        if arg.starts_with('-') {
            let flags = parse(&help(cmd)).options;
            let longs: Vec<&str> = flags.iter().map(|f| f.name.as_str()).collect();
            let guess =
                nearest(arg, &longs).map_or(String::new(), |g| format!(" (did you mean {g}?)"));
            format!("unknown option {arg}{guess}")
        } else {
            format!("unexpected argument {arg}")
        }
    } else {
        // "Required positional arguments not provided:\n    snapshot" and the like.
        let mut what = first.trim_end_matches(['.', ':']).to_string();
        let more: Vec<&str> = lines.map(str::trim).filter(|l| !l.is_empty()).collect();
        if !more.is_empty() {
            what = format!("{what}: {}", more.join(", "));
        }
        // argh's messages are ASCII (and Unicode case tables cost the binary).
        if let Some(first) = what.get_mut(0..1) {
            first.make_ascii_lowercase();
        }
        what
    };
    refuse(cmd, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_and_switches_come_from_the_help_text() {
        let h = parse(&help(Some("restore")));
        assert!(h.usage.starts_with("chute restore "), "{}", h.usage);
        assert!(h.about.starts_with("Restore a snapshot"), "{}", h.about);
        let f = &h.options;
        let get = |l: &str| f.iter().find(|x| x.name == l).unwrap();
        assert_eq!(get("--remote").value.as_deref(), Some("remote"));
        assert_eq!(get("--remote").short.as_deref(), Some("-r"));
        assert_eq!(get("--to").value.as_deref(), Some("to"));
        assert_eq!(get("--force").value, None);
        assert_eq!(get("--force").short.as_deref(), Some("-f"));
        assert_eq!(get("--accept-rollback").value, None);
        assert_eq!(h.positionals[0].name, "snapshot");
        assert!(!h.positionals[0].about.is_empty());
        let top = parse(&help(None));
        let restore = top.commands.iter().find(|c| c.name == "restore").unwrap();
        assert!(restore.about.starts_with("Restore a snapshot"));
        // A description that wraps is one string; a name too long for its column
        // has its description on the next lines.
        let sink = parse(&help(Some("sink")));
        let rollback = sink.options.iter().find(|x| x.name == "--accept-rollback");
        assert!(rollback.unwrap().about.starts_with("take the store's view"));
        let no = sink
            .options
            .iter()
            .find(|x| x.name == "--no-exclude-caches");
        assert_eq!(
            no.map(|x| x.about.as_str()),
            Some("back up directories holding a CACHEDIR.TAG too")
        );
        let files = sink
            .options
            .iter()
            .find(|x| x.name == "--files-from")
            .unwrap();
        assert!(
            files.about.ends_with("repeatable (CHUTE_PATHS_FILE)"),
            "{}",
            files.about
        );
    }

    #[test]
    fn equals_is_split_for_options_only_and_nothing_after_dashdash_is_touched() {
        let got = normalize(&strings(&[
            "sink",
            "--exclude=*.bin",
            "-h",
            "--remote",
            "--x=y",
            "--",
            "--exclude=a",
            "-h",
        ]))
        .unwrap();
        assert_eq!(
            got,
            strings(&[
                "sink",
                "--exclude",
                "*.bin",
                "--help",
                "--remote",
                "--x=y",
                "--",
                "--exclude=a",
                "-h"
            ])
        );
        let e = normalize(&strings(&["restore", "x", "--force=yes"])).unwrap_err();
        assert_eq!(
            e.line,
            "chute restore: --force takes no value (given --force=yes)"
        );
        assert!(e.usage.starts_with("Usage: chute restore"), "{}", e.usage);
        assert_eq!(normalize(&strings(&["-h"])).unwrap(), ["--help"]);
        // `--=x` does not become `--` (which would end the options).
        assert_eq!(
            normalize(&strings(&["sink", "--=x", "data"])).unwrap(),
            strings(&["sink", "--=x", "data"])
        );
    }

    #[test]
    fn typos_get_the_nearest_name() {
        let e = normalize(&strings(&["snk"])).unwrap_err();
        assert_eq!(e.line, "chute: unknown command snk (did you mean sink?)");
        let e = normalize(&strings(&["frobnicate"])).unwrap_err();
        assert_eq!(e.line, "chute: unknown command frobnicate");
        let args = strings(&["sink", "--exlude", "x"]);
        let e = rewrite(&args, "Unrecognized argument: --exlude\n");
        assert_eq!(
            e.line,
            "chute sink: unknown option --exlude (did you mean --exclude?)"
        );
        assert!(e.usage.starts_with("Usage: chute sink"));
        let e = rewrite(
            &strings(&["restore"]),
            "Required positional arguments not provided:\n    snapshot\n",
        );
        assert_eq!(
            e.line,
            "chute restore: required positional arguments not provided: snapshot"
        );
        assert_eq!(distance("exlude", "exclude"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(
            nearest("--rem", &["--remote", "--domain"]),
            Some("--remote")
        );
        assert_eq!(nearest("--zzz", &["--remote", "--domain"]), None);
    }
}
