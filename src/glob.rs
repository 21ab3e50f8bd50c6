//! Path globs, one matcher for every command that takes them: `sink --exclude`
//! and `find`.
//!
//! `*` matches any run of bytes within one path component, `?` one byte, and
//! `[...]` one byte of a class (`[abc]`, ranges `[a-z]`, negated `[!x]` or
//! `[^x]`, a `]` first in the class is literal); none of them matches `/`. A
//! pattern without `/` matches a path's last component (its name), one with `/`
//! the whole path. There is no escape character: `[*]` is a literal `*`.
//!
//! Invariants: matching never allocates and never recurses (a path may be 64 KiB;
//! time is at most the path's length times the pattern's); a `[` with
//! no closing `]` matches itself, so an exclude written before classes existed
//! keeps its meaning, while [`check`] refuses it for commands that want to say so.

/// Whether `pattern` matches `path` (see the module doc: a name or a whole path).
pub fn matches_path(pattern: &[u8], path: &[u8]) -> bool {
    if pattern.contains(&b'/') {
        matches(pattern, path)
    } else {
        // As `Path::file_name`: `/` itself has no name and is matched whole.
        match path.rsplit(|&c| c == b'/').next() {
            Some(name) if !name.is_empty() => matches(pattern, name),
            _ => matches(pattern, path),
        }
    }
}

/// Whether `pattern` matches all of `text`. Since nothing but `/` matches `/`,
/// both split into the same number of components, matched pairwise.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let mut p = pattern.split(|&c| c == b'/');
    let mut t = text.split(|&c| c == b'/');
    loop {
        match (p.next(), t.next()) {
            (Some(p), Some(t)) if component(p, t) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Refuses a pattern a user most likely mistyped: empty, or with a `[` that
/// never closes (or closes only after a `/`, which no class can match).
pub fn check(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("an empty pattern".into());
    }
    for c in pattern.as_bytes().split(|&c| c == b'/') {
        let mut i = 0;
        while i < c.len() {
            i += match c[i] {
                b'[' => match class(&c[i..], 0) {
                    Some((n, _)) => n,
                    None => {
                        return Err(format!(
                            "pattern {pattern:?}: '[' opens a class that does not close (a class never matches '/')"
                        ));
                    }
                },
                _ => 1,
            };
        }
    }
    Ok(())
}

/// One component: the classic single-backtrack wildcard match (the last `*`
/// absorbs one more byte on a mismatch), with `?` and classes as one byte.
fn component(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    // Where the pattern resumes after the last `*`, and the text byte it took up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if p.get(pi) == Some(&b'*') {
            pi += 1;
            star = Some((pi, ti));
            continue;
        }
        if let Some(n) = one(&p[pi..], t[ti]) {
            pi += n;
            ti += 1;
            continue;
        }
        match star {
            Some((sp, st)) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, ti));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// If the pattern's first token (not `*`) matches byte `c`: how many pattern
/// bytes it took.
fn one(p: &[u8], c: u8) -> Option<usize> {
    match *p.first()? {
        b'?' => Some(1),
        b'[' => match class(p, c) {
            Some((n, true)) => Some(n),
            Some((_, false)) => None,
            None => (c == b'[').then_some(1),
        },
        l => (l == c).then_some(1),
    }
}

/// A class at the start of `p` (`p[0]` is `[`): its length and whether it holds
/// `c`; `None` if it does not close.
fn class(p: &[u8], c: u8) -> Option<(usize, bool)> {
    let mut i = 1;
    let negated = matches!(p.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == b']' && !first {
            return Some((i + 1, hit != negated));
        }
        first = false;
        match (p.get(i + 1), p.get(i + 2)) {
            (Some(b'-'), Some(&hi)) if hi != b']' => {
                hit |= (lo..=hi).contains(&c);
                i += 3;
            }
            _ => {
                hit |= lo == c;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_marks_stay_within_a_component() {
        assert!(matches(b"*.tmp", b"a.tmp"));
        assert!(matches(b"*.tmp", b".tmp"));
        assert!(!matches(b"*.tmp", b"a.tmpx"));
        assert!(matches(b"/home/*/cache", b"/home/pi/cache"));
        assert!(!matches(b"/home/*/cache", b"/home/pi/x/cache"));
        assert!(matches(b"?at", b"cat"));
        assert!(!matches(b"?at", b"at"));
        assert!(!matches(b"a?b", b"a/b"));
        assert!(!matches(b"a*b", b"a/b"));
        assert!(matches(b"*a*b*", b"xaxxbx"));
        assert!(matches(b"a**b", b"ab"));
        assert!(!matches(b"*a*b", b"xaxxbx"));
        assert!(matches(b"", b""));
        assert!(!matches(b"", b"a"));
        assert!(matches(b"*", b""));
    }

    #[test]
    fn classes() {
        assert!(matches(b"[abc].txt", b"b.txt"));
        assert!(!matches(b"[abc].txt", b"d.txt"));
        assert!(matches(b"f[0-9][0-9]", b"f42"));
        assert!(!matches(b"f[0-9]", b"fx"));
        assert!(matches(b"[!a]x", b"bx"));
        assert!(!matches(b"[^a]x", b"ax"));
        assert!(matches(b"[]]", b"]"));
        assert!(matches(b"[a-]", b"-"));
        assert!(matches(b"[*]", b"*"));
        assert!(!matches(b"[*]", b"x"));
        // An unclosed class is a literal '[' (an old exclude keeps its meaning).
        assert!(matches(b"a[b", b"a[b"));
        assert!(!matches(b"a[b", b"ab"));
        // A class never spans a '/'.
        assert!(!matches(b"a[/]b", b"a/b"));
    }

    #[test]
    fn a_name_pattern_matches_the_last_component() {
        assert!(matches_path(b"node_modules", b"/a/node_modules"));
        assert!(!matches_path(b"node_modules", b"/a/node_modules2"));
        assert!(matches_path(b"*.jpg", b"/p/2024/x.jpg"));
        assert!(!matches_path(b"*.jpg", b"/p/x.jpg/y"));
        assert!(matches_path(b"/p/*/x.jpg", b"/p/2024/x.jpg"));
        assert!(!matches_path(b"p/*/x.jpg", b"/p/2024/x.jpg"));
        assert!(!matches_path(b"*", b"/"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(check("*.txt").is_ok());
        assert!(check("[a-z]*").is_ok());
        assert!(check("[]]").is_ok());
        assert!(check("").is_err());
        assert!(check("a[bc").is_err());
        assert!(check("a[/]b").is_err());
        assert!(check("[]").is_err());
    }

    /// A path of 64 KiB against stars that never match: linear, no deep recursion
    /// (the recursive matcher this replaced took a stack frame per byte).
    #[test]
    fn long_paths_do_not_recurse() {
        let text = vec![b'a'; 65_536];
        assert!(!matches(b"*b*b*b", &text));
        assert!(matches(b"*a", &text));
    }
}
