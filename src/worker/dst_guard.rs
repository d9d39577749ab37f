/*!
The local destination is the directory that was synced: its identity (device, inode) is
taken at its first sync and compared before each one.

Why: a live sync sends only what changed. If the destination directory was deleted and
made again, or a file system was mounted on it or unmounted from it (a backup disk that
went away leaves its empty mount point on the root file system), the directory there now
holds nothing of what the earlier syncs sent; the changes alone would make it a partial
mirror, and nothing would say so. So a destination whose identity changed gets a full
sync (its batches include the whole tree until one succeeds), with a warning that names
what was seen: the same as a start would do with it. A destination that is gone is made
again by that full sync (rsync creates it), as at start.

Compared by identity, not by path: the path is the same in every one of these cases.
The identity is the device, the inode and the birth time (statx): a directory made again
right after the old one was deleted often gets the same inode number; where the file
system keeps no birth time, device and inode alone. Remote destinations are not looked
at (that would cost a round trip per sync).
*/

use crate::delivered::dir_id;
use std::path::Path;

/// What a destination directory was at its first sync.
#[derive(Debug, Default)]
pub(super) struct DstGuard {
    /// The destination's identity (through symlinks: `dev:ino:btime`, as the index
    /// names it), once known.
    id: Option<String>,
    /// Its identity changed: every batch syncs the whole tree until one succeeds.
    pub(super) full_needed: bool,
}

/// The identity of `dst`, if it is there.
fn identity(dst: &Path) -> Option<String> {
    Some(dir_id(dst)).filter(|id| id != "missing")
}

impl DstGuard {
    /// Before a sync to `dst`: `Some(warning)` when the directory is not the one synced
    /// before (from then on [`full_needed`](Self::full_needed) is set).
    pub(super) fn check(&mut self, dst: &Path) -> Option<String> {
        let now = identity(dst);
        let was = match &self.id {
            None => {
                self.id = now;
                return None;
            }
            Some(was) if Some(was) == now.as_ref() => return None,
            Some(was) => was.clone(),
        };
        let what = match &now {
            Some(now) => format!(
                "is another directory now (device:inode:birth {now}, was {was}): deleted and made again, or a file system mounted on it or unmounted from it"
            ),
            None => "is gone".to_string(),
        };
        // The new one (if any) is the one synced from now on; a destination that is gone
        // is known again once the full sync has made it.
        self.id = now;
        self.full_needed = true;
        Some(format!(
            "destination {} {what}: it holds nothing of the earlier syncs, so the whole tree is synced to it",
            dst.display()
        ))
    }

    /// A full sync to `dst` succeeded: it is the directory synced, if it was not known.
    pub(super) fn full_done(&mut self, dst: &Path) {
        self.full_needed = false;
        if self.id.is_none() {
            self.id = identity(dst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_made_again_or_gone_needs_a_full_sync() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("dst");
        std::fs::create_dir(&d).unwrap();
        let mut g = DstGuard::default();
        assert_eq!(g.check(&d), None, "the first sync records it");
        assert_eq!(g.check(&d), None);
        assert!(!g.full_needed);
        // Made again right away (often with the same inode number).
        std::fs::remove_dir(&d).unwrap();
        std::fs::create_dir(&d).unwrap();
        let w = g.check(&d).unwrap();
        assert!(w.contains("is another directory now"), "{w}");
        assert!(g.full_needed);
        // The full sync runs against the new one, which is recorded at once.
        assert_eq!(g.check(&d), None);
        g.full_done(&d);
        assert!(!g.full_needed);
        std::fs::remove_dir(&d).unwrap();
        let w = g.check(&d).unwrap();
        assert!(w.ends_with("so the whole tree is synced to it"), "{w}");
        assert!(w.contains(" is gone"), "{w}");
        assert!(g.full_needed);
        // Made by the full sync, then replaced before the next sync: seen.
        std::fs::create_dir(&d).unwrap();
        g.full_done(&d);
        std::fs::remove_dir(&d).unwrap();
        std::fs::create_dir(&d).unwrap();
        assert!(g.check(&d).is_some(), "replaced after the full sync");
    }
}
