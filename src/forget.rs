//! `chute forget`: which snapshots a keep policy drops (restic's rules, exactly), and
//! forgetting them on the remote.
//!
//! # The policy
//! Snapshots are grouped by mount, the keyed id of the set of paths backed up (restic
//! groups by host and paths; a node is one host). Within a group, newest first, each
//! `--keep-*` rule is a bucket holding a count and a key of the snapshot's time
//! (from its sealed header, UTC): `last` gives every snapshot a key of its own;
//! `hourly` keys by year, month, day and hour; `daily` by date; `weekly` by ISO year
//! and week; `monthly` by year and month; `yearly` by year. A snapshot whose key
//! differs from the one the bucket last kept is kept by that bucket and uses one of
//! its count, so each rule keeps the newest snapshot of each of the N most recent
//! hours, days, ... that have a snapshot. As restic does since 0.15, a bucket with
//! count left when it reaches the group's oldest snapshot keeps that one too
//! ("oldest"), so the history reaches back as far as the counts allow. A count of
//! `unlimited` never runs out; 0 means the rule is off. A snapshot kept by any rule
//! is kept, and the output says by which; the others are forgotten. A policy with no
//! rule on is refused: it would forget everything.
//!
//! Tags, as restic: `--keep-tag` keeps every snapshot that passes it as a tag
//! filter ([`snapshot::tags_match`]: `a,b` both, repeated either) and says "tag";
//! it has no count and takes none from the other rules, which still see that
//! snapshot. `--tag` (same filter) limits the whole policy to the snapshots that
//! pass it: the others are neither shown nor counted nor forgotten. `--keep-tag`
//! as the only rule when no snapshot passes it (a mistyped tag) is refused
//! ([`Policy::keeps_none`]), where restic would forget them all.
//!
//! # Forgetting
//! [`crate::remote::Remote::forget`] renames the snapshot's `index.json` on the store:
//! it leaves `list` at once, while its data stays, because later snapshots may share
//! its chunks. `chute prune` deletes what nothing remaining references. Snapshots
//! whose header does not open with this key are never touched.

use crate::snapshot::{self, Snapshot};

/// Counts per rule: 0 off, [`UNLIMITED`] never runs out; and the `--keep-tag`
/// filter (empty: off).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: i64,
    pub hourly: i64,
    pub daily: i64,
    pub weekly: i64,
    pub monthly: i64,
    pub yearly: i64,
    pub keep_tags: Vec<String>,
}

/// A count that never runs out.
pub const UNLIMITED: i64 = -1;

impl Policy {
    /// Whether no rule is on.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Whether this policy would forget every one of some snapshots (given by
    /// their tags): `--keep-tag` its only rule and no snapshot passing it, as a
    /// mistyped tag does. A count of 1 or more always keeps one.
    pub fn keeps_none<'a>(&self, mut tags: impl Iterator<Item = &'a [String]>) -> bool {
        let counts = Policy {
            keep_tags: Vec::new(),
            ..self.clone()
        };
        !self.keep_tags.is_empty()
            && counts.is_empty()
            && !tags.any(|t| snapshot::tags_match(&self.keep_tags, t))
    }

    fn rules(&self) -> [(i64, Rule); 6] {
        [
            (self.last, Rule::Last),
            (self.hourly, Rule::Hourly),
            (self.daily, Rule::Daily),
            (self.weekly, Rule::Weekly),
            (self.monthly, Rule::Monthly),
            (self.yearly, Rule::Yearly),
        ]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
        }
    }

    /// The bucket key of a time (UTC seconds); `nr` is the snapshot's rank.
    fn key(self, secs: i64, nr: usize) -> i64 {
        let days = secs.div_euclid(86_400);
        let (y, m, d) = snapshot::civil_from_days(days);
        let (m, d) = (i64::from(m), i64::from(d));
        match self {
            Rule::Last => nr as i64,
            Rule::Hourly => ((y * 100 + m) * 100 + d) * 100 + secs.rem_euclid(86_400) / 3600,
            Rule::Daily => (y * 100 + m) * 100 + d,
            Rule::Weekly => {
                let (iy, w) = iso_week(days);
                iy * 100 + w
            }
            Rule::Monthly => y * 100 + m,
            Rule::Yearly => y,
        }
    }
}

/// ISO 8601 (year, week) of a day counted from 1970-01-01: the week belongs to the
/// year that holds its Thursday.
fn iso_week(days: i64) -> (i64, i64) {
    let monday_based = (days + 3).rem_euclid(7); // 1970-01-01 was a Thursday
    let thursday = days - monday_based + 3;
    let (year, _, _) = snapshot::civil_from_days(thursday);
    let jan1 = days_from_civil(year, 1, 1);
    (year, (thursday - jan1) / 7 + 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One snapshot as [`apply`] sees it: its time (seconds, nanoseconds) and tags.
pub type Item<'a> = (i64, u32, &'a [String]);

/// Applies `policy` to one group, given its snapshots in any order. Returns, for
/// each, why it is kept: empty means forget it.
pub fn apply(policy: &Policy, times: &[Item]) -> Vec<Vec<String>> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    // Newest first; a stable sort keeps ties in input order, as restic's does.
    let time = |i: usize| (times[i].0, times[i].1);
    crate::sort::by(&mut order, |&a, &b| time(b).cmp(&time(a)));
    let mut reasons = vec![Vec::new(); times.len()];
    let mut buckets: Vec<(i64, Rule, Option<i64>)> = policy
        .rules()
        .into_iter()
        .filter(|&(count, _)| count != 0)
        .map(|(count, rule)| (count, rule, None))
        .collect();
    for (nr, &i) in order.iter().enumerate() {
        let oldest = nr + 1 == order.len();
        if !policy.keep_tags.is_empty() && snapshot::tags_match(&policy.keep_tags, times[i].2) {
            reasons[i].push("tag".to_string());
        }
        for (count, rule, last) in &mut buckets {
            if *count == 0 {
                continue;
            }
            let key = rule.key(times[i].0, nr);
            let fresh = *last != Some(key);
            if fresh || oldest {
                reasons[i].push(if fresh {
                    rule.name().to_string()
                } else {
                    format!("oldest {}", rule.name())
                });
                *last = Some(key);
                if *count > 0 {
                    *count -= 1;
                }
            }
        }
    }
    reasons
}

pub(crate) fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

pub(crate) fn row(s: &Snapshot, why: &str) -> String {
    format!(
        "  {:<8}  {:<19}  {}",
        s.short_id(),
        snapshot::display_time(s.header.time),
        why
    )
    .trim_end()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `YYYY-MM-DD HH:MM` UTC to seconds.
    fn t(s: &str) -> Item<'static> {
        let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
        let days = days_from_civil(n(0, 4), n(5, 7), n(8, 10));
        (days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60, 0, &[])
    }

    /// Twelve snapshots over two years, numbered oldest first from 1. Chosen edges:
    /// 2024-12-31 (a Tuesday) is in ISO week 2025-W01 with 2025-01-01; 2025-11-30 is a
    /// Sunday (W48) and 2025-12-01 a Monday (W49); #8 and #9 share an hour.
    const TIMES: [&str; 12] = [
        "2024-01-15 12:00", // 1
        "2024-03-10 08:00", // 2
        "2024-06-30 23:00", // 3  (2024-W26)
        "2024-12-31 22:00", // 4  (2025-W01)
        "2025-01-01 03:00", // 5  (2025-W01)
        "2025-02-14 09:00", // 6  (2025-W07)
        "2025-11-30 10:00", // 7  (2025-W48)
        "2025-12-01 10:00", // 8  (2025-W49)
        "2025-12-01 10:30", // 9
        "2025-12-01 11:00", // 10
        "2025-12-02 09:00", // 11
        "2025-12-02 18:00", // 12
    ];

    fn kept(p: Policy) -> Vec<usize> {
        let times: Vec<Item> = TIMES.iter().map(|s| t(s)).collect();
        apply(&p, &times)
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, _)| i + 1)
            .collect()
    }

    #[test]
    fn policies_keep_what_restic_keeps() {
        let p = Policy::default;
        // Expectations worked out by hand from the rules in the module docs.
        let table: &[(&str, Policy, &[usize])] = &[
            ("last 3", Policy { last: 3, ..p() }, &[10, 11, 12]),
            // Newest of each of the 3 latest days: 12-02, 12-01, 11-30.
            ("daily 3", Policy { daily: 3, ..p() }, &[7, 10, 12]),
            // 9 distinct days, count 10: all but the older ones of shared days.
            (
                "daily 10",
                Policy { daily: 10, ..p() },
                &[1, 2, 3, 4, 5, 6, 7, 10, 12],
            ),
            // Hour 10 of 12-01 keeps 10:30, its newest.
            ("hourly 4", Policy { hourly: 4, ..p() }, &[9, 10, 11, 12]),
            // W49, W48, W07, W01 (whose newest is 2025-01-01, not 2024-12-31).
            ("weekly 4", Policy { weekly: 4, ..p() }, &[5, 6, 7, 12]),
            // ... and the next week with a snapshot is 2024-W26.
            ("weekly 5", Policy { weekly: 5, ..p() }, &[3, 5, 6, 7, 12]),
            (
                "last 1 monthly 3",
                Policy {
                    last: 1,
                    monthly: 3,
                    ..p()
                },
                &[6, 7, 12],
            ),
            // 2025, 2024, and the oldest because the count never runs out.
            (
                "yearly unlimited",
                Policy {
                    yearly: UNLIMITED,
                    ..p()
                },
                &[1, 4, 12],
            ),
            // Years 2025 and 2024 use 2 of 5; the oldest is kept by the 3 left.
            (
                "mixed",
                Policy {
                    hourly: 2,
                    weekly: 2,
                    monthly: 2,
                    yearly: 5,
                    ..p()
                },
                &[1, 4, 7, 11, 12],
            ),
            // Every month has a snapshot kept; daily adds 12-01 11:00.
            (
                "daily 2 monthly 30",
                Policy {
                    daily: 2,
                    monthly: 30,
                    ..p()
                },
                &[1, 2, 3, 4, 5, 6, 7, 10, 12],
            ),
            // Counts used up before the oldest: it goes.
            ("yearly 1", Policy { yearly: 1, ..p() }, &[12]),
        ];
        for (name, policy, want) in table {
            assert_eq!(&kept(policy.clone()), want, "{name}");
        }
    }

    #[test]
    fn reasons_name_every_rule() {
        let times: Vec<Item> = TIMES.iter().map(|s| t(s)).collect();
        let r = apply(
            &Policy {
                hourly: 2,
                weekly: 2,
                monthly: 2,
                yearly: 5,
                ..Policy::default()
            },
            &times,
        );
        assert_eq!(r[11], ["hourly", "weekly", "monthly", "yearly"]);
        assert_eq!(r[10], ["hourly"]);
        assert_eq!(r[6], ["weekly", "monthly"]);
        assert_eq!(r[3], ["yearly"]);
        assert_eq!(r[0], ["oldest yearly"]);
        assert!(r[8].is_empty());
        // Input order does not matter.
        let mut rev = times.clone();
        rev.reverse();
        let r2 = apply(
            &Policy {
                hourly: 2,
                weekly: 2,
                monthly: 2,
                yearly: 5,
                ..Policy::default()
            },
            &rev,
        );
        let mut r2 = r2;
        r2.reverse();
        assert_eq!(r, r2);
    }

    #[test]
    fn iso_weeks_and_dates() {
        let week = |s: &str| iso_week(t(s).0.div_euclid(86_400));
        assert_eq!(week("2024-12-31 00:00"), (2025, 1));
        assert_eq!(week("2025-01-01 00:00"), (2025, 1));
        assert_eq!(week("2021-01-03 00:00"), (2020, 53));
        assert_eq!(week("2025-11-30 00:00"), (2025, 48));
        assert_eq!(week("2025-12-01 00:00"), (2025, 49));
        assert_eq!(week("2024-06-30 00:00"), (2024, 26));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(
            snapshot::display_time(t("2025-12-01 10:30").0),
            "2025-12-01 10:30:00"
        );
    }

    #[test]
    fn an_empty_policy_is_empty() {
        assert!(Policy::default().is_empty());
        let tags = Policy {
            keep_tags: vec!["keep".into()],
            ..Policy::default()
        };
        assert!(!tags.is_empty());
    }

    // --keep-tag alone, and no snapshot with the tag: refused, not everything forgotten.
    #[test]
    fn a_keep_tag_nothing_has_keeps_none() {
        let p = |tags: &[&str], last| Policy {
            last,
            keep_tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Policy::default()
        };
        let snaps = [vec![], vec!["nightly".to_string()]];
        let none = || snaps.iter().map(|t| &t[..]);
        assert!(p(&["nigthly"], 0).keeps_none(none()));
        assert!(!p(&["nightly"], 0).keeps_none(none()));
        assert!(!p(&["nigthly"], 1).keeps_none(none()), "a count keeps one");
        assert!(
            !p(&[], 0).keeps_none(none()),
            "no rule at all is refused elsewhere"
        );
        assert!(p(&["a"], 0).keeps_none(std::iter::empty()));
    }

    // --keep-tag keeps what the rules drop, takes none of their counts and
    // comes first in the reasons; a,b asks for both tags, repeating for either.
    #[test]
    fn keep_tags_keep_what_the_rules_drop() {
        let v = |s: &[&str]| s.iter().map(|t| t.to_string()).collect::<Vec<String>>();
        let (keep, both, other, none) = (v(&["keep"]), v(&["keep", "x"]), v(&["x"]), v(&[]));
        // #1 keep, #5 keep and x, #12 keep, #9 x only.
        let times: Vec<Item> = (1..=12)
            .map(|n| {
                let tags = match n {
                    1 | 12 => &keep[..],
                    5 => &both[..],
                    9 => &other[..],
                    _ => &none[..],
                };
                (t(TIMES[n - 1]).0, 0, tags)
            })
            .collect();
        let kept = |keep_tags: &[&str], last| -> Vec<(usize, String)> {
            let p = Policy {
                last,
                keep_tags: v(keep_tags),
                ..Policy::default()
            };
            apply(&p, &times)
                .iter()
                .enumerate()
                .filter(|(_, r)| !r.is_empty())
                .map(|(i, r)| (i + 1, r.join(" ")))
                .collect()
        };
        let k = |l: &[(usize, &str)]| -> Vec<(usize, String)> {
            l.iter().map(|&(n, r)| (n, r.to_string())).collect()
        };
        // Without tags, last 2 keeps #11 and #12; with them #12's "last" still
        // counts, so #11 is still the second, and #1 and #5 stay.
        assert_eq!(kept(&[], 2), k(&[(11, "last"), (12, "last")]));
        assert_eq!(
            kept(&["keep"], 2),
            k(&[(1, "tag"), (5, "tag"), (11, "last"), (12, "tag last")])
        );
        assert_eq!(
            kept(&["keep"], 0),
            k(&[(1, "tag"), (5, "tag"), (12, "tag")])
        );
        assert_eq!(kept(&["keep,x"], 0), k(&[(5, "tag")]));
        assert_eq!(kept(&["x", "nope"], 0), k(&[(5, "tag"), (9, "tag")]));
        assert_eq!(kept(&["nope"], 0), k(&[]));
    }

    // --tag limits the policy's scope: applied to the tagged snapshots alone,
    // last 1 keeps the newest tagged one, not the newest of all.
    #[test]
    fn a_tag_scope_is_its_own_group() {
        let x = vec!["x".to_string()];
        let tagged: Vec<Item> = TIMES
            .iter()
            .enumerate()
            .filter(|&(i, _)| snapshot::tags_match(&x, if i == 4 || i == 8 { &x } else { &[] }))
            .map(|(_, s)| t(s))
            .collect();
        assert_eq!(tagged, [t(TIMES[4]), t(TIMES[8])]);
        let p = Policy {
            last: 1,
            ..Policy::default()
        };
        assert_eq!(apply(&p, &tagged), [vec![], vec!["last".to_string()]]);
    }
}
