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

/// One option of a command, as its help lists it.
#[derive(Debug, PartialEq, Eq)]
struct Flag {
    long: String,
    short: Option<String>,
    takes_value: bool,
}

/// The help text argh prints for `chute [command] --help`.
fn help(command: Option<&str>) -> String {
    let args: Vec<&str> = command.into_iter().chain(["--help"]).collect();
    match Cli::from_args(&["chute"], &args) {
        Ok(_) => String::new(),
        Err(e) => e.output,
    }
}

/// The options a help text lists (under "Options:", one a line starting with
/// `  -`); whether each takes a value comes from the usage line (`--x <x>`).
fn flags(help: &str) -> Vec<Flag> {
    // "[-r <remote>]", "--to <to>": a flag followed by a placeholder.
    let usage: Vec<&str> = help
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let takes = |f: &str| {
        usage
            .windows(2)
            .any(|w| w[0].trim_start_matches('[') == f && w[1].starts_with('<'))
    };
    help.lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .filter(|l| l.starts_with("  -"))
        .filter_map(|l| {
            let mut words = l.split_whitespace().map(|w| w.trim_end_matches(','));
            let first = words.next()?;
            let (short, long) = if first.starts_with("--") {
                (None, first)
            } else {
                (Some(first.to_string()), words.next()?)
            };
            let takes_value = takes(long) || short.as_deref().is_some_and(takes);
            Some(Flag {
                long: long.to_string(),
                short,
                takes_value,
            })
        })
        .collect()
}

/// The commands the top-level help lists.
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
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
    let names = commands(&help(None));
    if !names.iter().any(|n| n == cmd) {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let guess = nearest(cmd, &names).map_or(String::new(), |g| format!(" (did you mean {g}?)"));
        return Err(refuse(None, format!("unknown command {cmd}{guess}")));
    }
    let flags = flags(&help(Some(cmd)));
    let takes_value = |name: &str| {
        flags
            .iter()
            .find(|f| f.long == name || f.short.as_deref() == Some(name))
            .map(|f| f.takes_value)
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
            let flags = flags(&help(cmd));
            let longs: Vec<&str> = flags.iter().map(|f| f.long.as_str()).collect();
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
        let f = flags(&help(Some("restore")));
        let get = |l: &str| f.iter().find(|x| x.long == l).unwrap();
        assert!(get("--remote").takes_value);
        assert_eq!(get("--remote").short.as_deref(), Some("-r"));
        assert!(get("--to").takes_value);
        assert!(!get("--force").takes_value);
        assert_eq!(get("--force").short.as_deref(), Some("-f"));
        assert!(!get("--accept-rollback").takes_value);
        assert!(commands(&help(None)).iter().any(|c| c == "restore"));
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
