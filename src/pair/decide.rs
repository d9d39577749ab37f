/*!
The decision of a pair check, as pure functions of the trees: what each side changed
since the agreed state ([`sides`], [`diff`]), dated so that `discard-younger` and
`discard-older` can compare, and what the after-split-brain [`Policy`] (DRBD's names)
makes of it ([`decide()`]). Nothing here touches a file or runs a process, so every rule
of docs/failover.md is a unit test.
*/

use super::manifest::{Manifest, Meta};

/// What changed on one side since the agreed state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<Vec<u8>>,
    pub modified: Vec<Vec<u8>>,
    pub deleted: Vec<Vec<u8>>,
    /// When the side last changed: the newest mtime among added and modified paths, and
    /// the time of each deletion (the mtime of the nearest directory that is still there:
    /// removing an entry sets its directory's mtime).
    pub newest: i64,
}

impl Changes {
    #[must_use]
    pub fn count(&self) -> usize {
        self.added.len() + self.modified.len() + self.deleted.len()
    }

    /// One path per line, with `+`, `~` or `-` in front (for a resolver script).
    #[must_use]
    pub fn listing(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (mark, list) in [
            (b'+', &self.added),
            (b'~', &self.modified),
            (b'-', &self.deleted),
        ] {
            for p in list {
                out.push(mark);
                out.push(b' ');
                out.extend_from_slice(p);
                out.push(b'\n');
            }
        }
        out
    }
}

/// What changed from `agreed` to `now` (the unit tests' way to make [`Changes`]; a
/// running pair gets them from the delivered record and the peer's listing).
#[cfg(test)]
#[must_use]
pub fn diff(agreed: &Manifest, now: &Manifest) -> Changes {
    let mut c = Changes::default();
    for (p, m) in &now.0 {
        match agreed.0.get(p) {
            None => {
                c.added.push(p.clone());
                c.newest = c.newest.max(m.mtime);
            }
            Some(old) if old.differs(m) => {
                c.modified.push(p.clone());
                c.newest = c.newest.max(m.mtime);
            }
            Some(_) => {}
        }
    }
    for p in agreed.0.keys() {
        if !now.0.contains_key(p) {
            c.deleted.push(p.clone());
        }
    }
    c
}

/// The after-split-brain policies (DRBD's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    DiscardZeroChanges,
    DiscardLeastChanges,
    DiscardYounger,
    DiscardOlder,
    DiscardLocal,
    DiscardPeer,
    #[default]
    Manual,
}

/// The policy names.
pub const POLICIES: &[&str] = &[
    "discard-zero-changes",
    "discard-least-changes",
    "discard-younger",
    "discard-older",
    "discard-local",
    "discard-peer",
    "manual",
];

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        Ok(match s {
            "discard-zero-changes" => Policy::DiscardZeroChanges,
            "discard-least-changes" => Policy::DiscardLeastChanges,
            "discard-younger" => Policy::DiscardYounger,
            "discard-older" => Policy::DiscardOlder,
            "discard-local" => Policy::DiscardLocal,
            "discard-peer" => Policy::DiscardPeer,
            "manual" => Policy::Manual,
            _ => {
                return Err(format!(
                    "unknown split-brain policy {s:?} (valid: {})",
                    POLICIES.join(", ")
                ))
            }
        })
    }
}

/// What to do before live syncing starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changed on either side, or only here: push (then live sync).
    Push,
    /// Only the peer changed: pull its changes first.
    Pull,
    /// Split-brain, resolved: keep this side (the peer's versions are set aside).
    KeepLocal,
    /// Split-brain, resolved: keep the peer's side (ours are set aside).
    KeepPeer,
    /// Split-brain a person must resolve.
    Manual,
}

/// Decides from both sides' changes since the agreed state.
#[must_use]
pub fn decide(local: &Changes, peer: &Changes, policy: Policy) -> Decision {
    match (local.count(), peer.count()) {
        (_, 0) => return Decision::Push,
        (0, _) => return Decision::Pull,
        _ => {}
    }
    match policy {
        // Both changed: there is no side with zero changes.
        Policy::DiscardZeroChanges | Policy::Manual => Decision::Manual,
        Policy::DiscardLeastChanges => match local.count().cmp(&peer.count()) {
            std::cmp::Ordering::Greater => Decision::KeepLocal,
            std::cmp::Ordering::Less => Decision::KeepPeer,
            std::cmp::Ordering::Equal => Decision::Manual,
        },
        Policy::DiscardYounger => match local.newest.cmp(&peer.newest) {
            std::cmp::Ordering::Less => Decision::KeepLocal,
            std::cmp::Ordering::Greater => Decision::KeepPeer,
            std::cmp::Ordering::Equal => Decision::Manual,
        },
        Policy::DiscardOlder => match local.newest.cmp(&peer.newest) {
            std::cmp::Ordering::Greater => Decision::KeepLocal,
            std::cmp::Ordering::Less => Decision::KeepPeer,
            std::cmp::Ordering::Equal => Decision::Manual,
        },
        Policy::DiscardLocal => Decision::KeepPeer,
        Policy::DiscardPeer => Decision::KeepLocal,
    }
}

/// When `p`'s deletion was seen in `tree`: the mtime of its nearest directory that is
/// still there (`root_mtime` for the top).
fn deleted_at(tree: &Manifest, root_mtime: i64, p: &[u8]) -> i64 {
    let mut cur = p;
    while let Some(i) = cur.iter().rposition(|&b| b == b'/') {
        cur = &cur[..i];
        if let Some(m) = tree.0.get(cur).filter(|m| m.kind == b'd') {
            return m.mtime;
        }
    }
    root_mtime
}

/// One side's tree: its manifest and its root's mtime; for the side that received the
/// record's syncs, the record's alternative states.
pub struct Side<'a> {
    pub tree: &'a Manifest,
    pub root_mtime: i64,
    pub also: Option<&'a Manifest>,
}

/// Splits the paths where the two sides differ into what each side changed since the
/// agreed state. Paths equal on both sides are agreed, whatever the record says;
/// `holders` (the directories above excluded paths) are left out. A deletion counts as a change at the time it was seen ([`Changes::newest`]).
#[must_use]
pub fn sides(
    agreed: &Manifest,
    local: Side,
    peer: Side,
    holders: &std::collections::HashSet<Vec<u8>>,
) -> (Changes, Changes) {
    let mut keys: Vec<&Vec<u8>> = local.tree.0.keys().chain(peer.tree.0.keys()).collect();
    keys.sort();
    keys.dedup();
    let (mut l, mut p) = (Changes::default(), Changes::default());
    let same = |a: Option<&Meta>, b: Option<&Meta>| match (a, b) {
        (Some(a), Some(b)) => !a.differs(b),
        (None, None) => true,
        _ => false,
    };
    for k in keys {
        let (a, lo, pe) = (agreed.0.get(k), local.tree.0.get(k), peer.tree.0.get(k));
        if same(lo, pe) {
            continue;
        }
        // A directory that holds excluded paths: no sync may delete it (rsync keeps a
        // directory whose excluded entries it must not touch), so it is no change.
        let dir = |m: Option<&Meta>| m.is_none_or(|m| m.kind == b'd');
        if holders.contains(k) && dir(lo) && dir(pe) {
            continue;
        }
        for (side, now, tree) in [(&mut l, lo, &local), (&mut p, pe, &peer)] {
            // Unchanged: as delivered, or, on the receiving side, as the alternative state
            // of a path that changed while its sync ran (it may have arrived either way).
            let alt = tree.also.and_then(|m| m.0.get(k));
            if same(a, now) || (alt.is_some() && same(alt, now)) {
                continue;
            }
            match (a, now) {
                (None, Some(m)) => {
                    side.added.push(k.clone());
                    side.newest = side.newest.max(m.mtime);
                }
                (Some(_), Some(m)) => {
                    side.modified.push(k.clone());
                    side.newest = side.newest.max(m.mtime);
                }
                _ => {
                    side.deleted.push(k.clone());
                    side.newest = side.newest.max(deleted_at(tree.tree, tree.root_mtime, k));
                }
            }
        }
    }
    (l, p)
}

/// The policy's name, for the log.
pub(super) fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::DiscardZeroChanges => "discard-zero-changes",
        Policy::DiscardLeastChanges => "discard-least-changes",
        Policy::DiscardYounger => "discard-younger",
        Policy::DiscardOlder => "discard-older",
        Policy::DiscardLocal => "discard-local",
        Policy::DiscardPeer => "discard-peer",
        Policy::Manual => "manual",
    }
}
