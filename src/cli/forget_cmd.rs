//! `chute forget` from the command line: settings in, the report printed.
//!
//! `--json` prints one object: `{"dry_run", "kept", "forgotten"}`, each list of
//! `{"id", "time", "paths", "reasons"}` (`reasons`: why a policy kept it, e.g.
//! `"daily 1"`; empty in `forgotten`, and `kept` is empty when ids were given).
//! In a dry run `forgotten` is what would be. `--quiet` prints nothing but errors.

use super::args::*;
use super::{Settings, Show, open_node};
use crate::forget::{Item, Policy, UNLIMITED, apply, plural, row};
use crate::snapshot::{self, Snapshot};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// `chute forget` from the command line.
pub(super) fn cmd(s: &Settings, c: ForgetCmd) -> Result<()> {
    let show = Show::of(c.json, c.quiet, false)?;
    // The report for people, unless --json or --quiet.
    macro_rules! say {
        ($($t:tt)*) => {
            if show.text() {
                println!($($t)*)
            }
        };
    }
    let mut kept_items: Vec<ForgetItem> = Vec::new();
    let policy = policy_of(&c)?;
    if policy.is_empty() && c.snapshots.is_empty() {
        return Err(Error::Usage(
            "no --keep-* rule given (nor snapshot ids): refusing to forget every snapshot; e.g. --keep-daily 7 --keep-weekly 5 --keep-monthly 12".into(),
        ));
    }
    if !policy.is_empty() && !c.snapshots.is_empty() {
        return Err(Error::Usage(
            "give either snapshot ids or --keep-* rules, not both".into(),
        ));
    }
    let scope = super::backup::tags("--tag", c.tag, true)?;
    if !scope.is_empty() && !c.snapshots.is_empty() {
        return Err(Error::Usage(
            "--tag limits a --keep-* policy; snapshot ids name what to forget".into(),
        ));
    }
    let node = open_node(s, c.key_file, c.remote, c.domain, c.node, c.admin_key_file)?;
    let (keys, remote) = (&node.keys, node.remote.as_ref());
    let mut remove: Vec<Snapshot> = Vec::new();
    // What a forget acts on must be the store's whole view: a policy applied to a
    // rolled-back list would keep the wrong snapshots.
    let all = snapshot::all(keys, remote, &node.domain, &node.node)?;
    crate::chain::guard(
        keys,
        remote,
        &node.domain,
        &node.node,
        &node.cache_dir,
        &all,
        "forget",
        crate::chain::Strict::Fail,
        false,
    )?;
    if policy.is_empty() {
        for name in &c.snapshots {
            let snap = snapshot::find_in(all.clone(), remote, &node.domain, &node.node, name, &[])?;
            if !remove.iter().any(|r| r.blob == snap.blob) {
                remove.push(snap);
            }
        }
    } else {
        let mut groups: BTreeMap<String, Vec<Snapshot>> = BTreeMap::new();
        // Out of the --tag scope: not shown, not counted, not forgotten.
        let mut all = all;
        snapshot::keep_tagged(&mut all, &scope);
        if !all.is_empty() && policy.keeps_none(all.iter().map(|s| &s.header.tags[..])) {
            return Err(Error::Usage(format!(
                "no snapshot has the tag {}: --keep-tag alone would forget all {}; nothing forgotten (chute list shows the tags)",
                policy.keep_tags.join(" or "),
                all.len()
            )));
        }
        for snap in all {
            groups
                .entry(snap.blob.mount.clone())
                .or_default()
                .push(snap);
        }
        for (n, group) in groups.values().enumerate() {
            let times: Vec<Item> = group
                .iter()
                .map(|s| (s.header.time, s.header.time_ns, &s.header.tags[..]))
                .collect();
            let reasons = apply(&policy, &times);
            let paths: Vec<String> = group[0]
                .header
                .roots
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect();
            if n > 0 {
                say!();
            }
            say!("snapshots of {}:", paths.join(" "));
            let kept = reasons.iter().filter(|r| !r.is_empty()).count();
            say!("keep {} of {}:", plural(kept, "snapshot"), group.len());
            say!("  {:<8}  {:<19}  KEPT BECAUSE", "ID", "TIME (UTC)");
            for (snap, why) in group.iter().zip(&reasons) {
                if !why.is_empty() {
                    say!("{}", row(snap, &why.join(", ")));
                    kept_items.push(item(snap, why));
                }
            }
            let gone: Vec<&Snapshot> = group
                .iter()
                .zip(&reasons)
                .filter(|(_, why)| why.is_empty())
                .map(|(s, _)| s)
                .collect();
            if !gone.is_empty() {
                say!("remove {}:", plural(gone.len(), "snapshot"));
                for snap in gone {
                    say!("{}", row(snap, ""));
                    remove.push(snap.clone());
                }
            }
        }
    }
    show.json(&ForgetJson {
        dry_run: c.dry_run,
        kept: kept_items,
        forgotten: remove.iter().map(|s| item(s, &[])).collect(),
    });
    if c.dry_run {
        say!(
            "dry run: would forget {}; nothing changed",
            plural(remove.len(), "snapshot")
        );
        return Ok(());
    }
    for snap in &remove {
        remote.forget(&snap.blob)?;
        // Recorded once the store took it (a forget refused, say by an append-only
        // peer, must not let the store hide that snapshot later), so a later check
        // knows this gap (or this lower newest) was this node's doing. Killed in
        // between, the store still shows it forgotten, which explains it the same.
        crate::chain::change(&node.cache_dir, "forget", |r| {
            crate::chain::forgot(r, &snap.blob.mount, snap.header.seq)
        });
        if !c.snapshots.is_empty() {
            say!(
                "forgot snapshot {} ({})",
                snap.short_id(),
                snapshot::display_time(snap.header.time)
            );
        }
    }
    say!(
        "forgot {}{}",
        plural(remove.len(), "snapshot"),
        if remove.is_empty() {
            ""
        } else {
            "; `chute prune` reclaims the space nothing remaining uses"
        }
    );
    Ok(())
}

/// One snapshot in `chute forget --json`'s object (see the module doc).
#[derive(miniserde::Serialize)]
struct ForgetItem {
    id: String,
    time: String,
    paths: Vec<String>,
    reasons: Vec<String>,
}

#[derive(miniserde::Serialize)]
struct ForgetJson {
    dry_run: bool,
    kept: Vec<ForgetItem>,
    forgotten: Vec<ForgetItem>,
}

fn item(s: &Snapshot, reasons: &[String]) -> ForgetItem {
    ForgetItem {
        id: s.id(),
        time: snapshot::rfc3339(s.header.time),
        paths: (s.header.roots.iter())
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect(),
        reasons: reasons.to_vec(),
    }
}

/// `N` or `unlimited`.
fn parse_count(flag: &str, v: &Option<String>) -> Result<i64> {
    match v.as_deref() {
        None => Ok(0),
        Some("unlimited") => Ok(UNLIMITED),
        Some(s) => s.parse::<u32>().map(i64::from).map_err(|_| {
            Error::Usage(format!(
                "--keep-{flag} {s:?}: expected a count or \"unlimited\""
            ))
        }),
    }
}

/// The policy the flags describe.
pub fn policy_of(c: &ForgetCmd) -> Result<Policy> {
    Ok(Policy {
        keep_tags: super::backup::tags("--keep-tag", c.keep_tag.clone(), true)?,
        last: parse_count("last", &c.keep_last)?,
        hourly: parse_count("hourly", &c.keep_hourly)?,
        daily: parse_count("daily", &c.keep_daily)?,
        weekly: parse_count("weekly", &c.keep_weekly)?,
        monthly: parse_count("monthly", &c.keep_monthly)?,
        yearly: parse_count("yearly", &c.keep_yearly)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse() {
        assert_eq!(parse_count("last", &None).unwrap(), 0);
        assert_eq!(parse_count("last", &Some("7".into())).unwrap(), 7);
        assert_eq!(
            parse_count("last", &Some("unlimited".into())).unwrap(),
            UNLIMITED
        );
        assert!(parse_count("last", &Some("-2".into())).is_err());
    }
}
