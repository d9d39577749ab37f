/*!
The warm start's compare: the source tree as it is now against a destination's index
(what it received), giving the batch that brings the destination up to date — paths
whose type, mode, size, mtime (s+ns), inode change time (s+ns) or inode differ, paths the
index lacks, and paths the index has that are gone (deletions). It replaces the full
rsync at start when the index is usable ([`super::Record::unusable`]).

Why it is safe: the index never says "delivered" for a state the destination may not
have received, so a path equal to its record is at the destination as it is here; every
other path is sent. Called once the watches are set: a change after a directory's watch
exists is an event, one before is seen here. Drift made at the destination by someone
else is not seen (that is what `verify-interval` repairs).
*/

use super::{Record, DELETED};
use crate::batcher::{Class, Entry};
use crate::pair::manifest::{meta_of, rule_kind};
use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What differs between the source and an index.
/// A directory the index does not know as one: sent whole, and as a directory that went
/// and came back (`--checksum`, sync/plan.rs `replaced`). The destination may hold an
/// older tree at its path: one a sync that was killed before its record delivered, or
/// moved there by a rename repeated at the destination; its files may have the sizes and
/// times of the source's and other content, which the quick check would keep.
const MAYBE_OLD_TREE: u32 = libc::IN_CREATE | libc::IN_DELETE | libc::IN_ISDIR;

#[derive(Debug, Default)]
pub struct Differences {
    /// The batch: changed and new paths, and deletions.
    pub entries: Vec<Entry>,
    /// Paths that changed or are new (a new directory counts once).
    pub differ: usize,
    /// Paths gone (a gone directory counts once).
    pub deleted: usize,
    /// Paths in the index (deletion markers left out).
    pub indexed: usize,
}

impl Differences {
    /// Over a quarter of the indexed paths (and over 1,000): a full rsync handles a mass
    /// change better than a list of that many paths.
    #[must_use]
    pub fn too_many(&self) -> bool {
        let n = self.differ + self.deleted;
        n > 1000 && n * 4 > self.indexed
    }
}

/// Compares the tree at `src` (below what `rules` exclude, not following symlinks) with
/// `rec`, consumed on the way (its memory is given back as the walk goes).
#[cfg(test)]
pub fn compare(src: &Path, rules: &crate::rules::Rules, rec: Record) -> io::Result<Differences> {
    compare_reporting(src, rules, rec, &mut |_, _| {})
}

/// How many source entries are compared between two calls of the progress callback.
const PROGRESS_STEP: usize = 4096;

/// [`compare`], calling `progress(compared, indexed)` every few thousand entries (the
/// start-up's progress lines on a big tree; the callback decides whether to tell).
pub fn compare_reporting(
    src: &Path,
    rules: &crate::rules::Rules,
    mut rec: Record,
    progress: &mut dyn FnMut(usize, usize),
) -> io::Result<Differences> {
    let mut compared = 0usize;
    let mut d = Differences {
        indexed: rec.paths.values().filter(|m| m.kind != DELETED).count(),
        ..Differences::default()
    };
    let dev = std::fs::symlink_metadata(src)?.dev();
    let entry = |path: Vec<u8>, recursive: bool, mask: u32| Entry {
        path,
        recursive,
        class: Class::Normal,
        mask,
    };
    // Directories sent whole: what the index has below them is theirs, neither compared
    // nor deleted.
    let mut whole: HashSet<Vec<u8>> = HashSet::new();
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(crate::watch::abs_path(src, &dir)) {
            Ok(rd) => rd,
            Err(e) if dir.is_empty() => return Err(e),
            // Gone meanwhile: its event is queued.
            Err(_) => continue,
        };
        for ent in rd.flatten() {
            use std::os::unix::ffi::OsStrExt;
            compared += 1;
            if compared.is_multiple_of(PROGRESS_STEP) {
                progress(compared, d.indexed);
            }
            let mut rel = dir.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(ent.file_name().as_bytes());
            // lstat (fstatat with AT_SYMLINK_NOFOLLOW).
            let Ok(m) = ent.metadata() else { continue };
            let now = meta_of(&m);
            let is_dir = now.kind == b'd';
            if !rules.is_empty() && rules.excluded(&rel, rule_kind(now.kind)) {
                continue;
            }
            let old = rec.paths.remove(&rel).filter(|o| o.kind != DELETED);
            let also = rec.also.remove(&rel).is_some();
            match old {
                // New here (or its delivery not known): a directory is synced whole.
                None => {
                    d.differ += 1;
                    if is_dir {
                        whole.insert(rel.clone());
                        d.entries.push(entry(rel, true, MAYBE_OLD_TREE));
                    } else {
                        // Compared by content: the destination may hold an older copy.
                        d.entries
                            .push(entry(rel, false, libc::IN_CREATE | libc::IN_MODIFY));
                    }
                }
                Some(o) if o.kind != now.kind => {
                    d.differ += 1;
                    if is_dir {
                        whole.insert(rel.clone());
                        d.entries.push(entry(rel, true, MAYBE_OLD_TREE));
                    } else {
                        d.entries
                            .push(entry(rel, false, libc::IN_CREATE | libc::IN_MODIFY));
                    }
                }
                Some(o) => {
                    if also || !o.same_stat(&now) {
                        d.differ += 1;
                        let mask = if is_dir {
                            libc::IN_ATTRIB | libc::IN_ISDIR
                        } else {
                            // Compared by content, never by rsync's quick check: after a
                            // crash the destination may hold a state newer than the
                            // index's (sent, not yet recorded) with the source's size and
                            // second, and the quick check would take it for the source's.
                            // The cost is reading files of the same size on both sides.
                            libc::IN_MODIFY
                        };
                        d.entries.push(entry(rel.clone(), false, mask));
                    }
                    if is_dir {
                        if m.dev() == dev {
                            stack.push(rel);
                        } else {
                            // Another file system below the source: not indexed, synced
                            // whole.
                            d.differ += 1;
                            whole.insert(rel.clone());
                            d.entries
                                .push(entry(rel, true, libc::IN_CREATE | libc::IN_ISDIR));
                        }
                    }
                }
            }
        }
    }
    // What the index has and the source lacks: deleted at the destination (the top of
    // each gone directory only). Not what it has below a directory sent whole, which the
    // walk did not enter: such records are there when the directory itself has none, only
    // an alternative — changed while the full sync that made the agreement ran (a tree
    // made a moment before it), or sent whole by a sync killed before its record. They
    // were counted as deletions (a fresh tree's directory of 500 files: "500 deleted"),
    // each an entry that the plan then dropped below the directory's own.
    let mut gone_dirs: HashSet<Vec<u8>> = HashSet::new();
    let under = |p: &[u8], set: &HashSet<Vec<u8>>| {
        p.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'/')
            .any(|(i, _)| set.contains(&p[..i]))
    };
    let left: Vec<(Vec<u8>, u8)> = {
        let mut v: Vec<(Vec<u8>, u8)> = rec
            .paths
            .into_iter()
            .filter(|(_, m)| m.kind != DELETED)
            .map(|(p, m)| (p, m.kind))
            .chain(
                rec.also
                    .into_iter()
                    .map(|(p, m)| (p, m.kind.to_ascii_lowercase())),
            )
            .collect();
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
        v
    };
    for (p, kind) in left {
        if under(&p, &gone_dirs) || under(&p, &whole) {
            continue;
        }
        d.deleted += 1;
        if kind == b'd' {
            d.entries
                .push(entry(p.clone(), true, libc::IN_DELETE | libc::IN_ISDIR));
            gone_dirs.insert(p);
        } else {
            d.entries.push(entry(p, false, libc::IN_DELETE));
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivered::Version;

    /// What changed while no worker ran, and only that, is found: a written file, a
    /// rewrite with the same size and mtime, a deletion, a new directory tree.
    #[test]
    fn the_compare_finds_what_changed_and_only_that() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path();
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        for f in ["a", "d/b", "d/e/c", "same", "gone"] {
            std::fs::write(src.join(f), f).unwrap();
        }
        let w = crate::pair::manifest::walk(src, b"", &crate::rules::Rules::none(), None).unwrap();
        let rec = Record {
            version: Version::next(Version::default(), Version::default()),
            paths: w.manifest.0,
            ..Record::default()
        };
        let d0 = compare(src, &crate::rules::Rules::none(), rec.clone()).unwrap();
        assert!(d0.entries.is_empty(), "{:?}", d0.entries);
        assert_eq!(d0.indexed, 7);
        // Changes made while stopped.
        std::fs::write(src.join("a"), "longer").unwrap();
        let before = std::fs::metadata(src.join("d/b")).unwrap();
        std::fs::write(src.join("d/b.tmp"), "D/B").unwrap();
        let times = std::fs::FileTimes::new().set_modified(before.modified().unwrap());
        std::fs::File::options()
            .write(true)
            .open(src.join("d/b.tmp"))
            .unwrap()
            .set_times(times)
            .unwrap();
        std::fs::rename(src.join("d/b.tmp"), src.join("d/b")).unwrap();
        std::fs::remove_file(src.join("gone")).unwrap();
        std::fs::remove_dir_all(src.join("d/e")).unwrap();
        std::fs::create_dir_all(src.join("new/sub")).unwrap();
        std::fs::write(src.join("new/sub/f"), "f").unwrap();
        let d = compare(src, &crate::rules::Rules::none(), rec).unwrap();
        let mut got: Vec<(String, bool, u32)> = d
            .entries
            .iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.path).into_owned(),
                    e.recursive,
                    e.mask,
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("a".into(), false, libc::IN_MODIFY),
                ("d".into(), false, libc::IN_ATTRIB | libc::IN_ISDIR),
                ("d/b".into(), false, libc::IN_MODIFY),
                ("d/e".into(), true, libc::IN_DELETE | libc::IN_ISDIR),
                ("gone".into(), false, libc::IN_DELETE),
                ("new".into(), true, MAYBE_OLD_TREE),
            ]
        );
        assert_eq!((d.differ, d.deleted), (4, 2));
    }

    /// A directory the index knows only as an alternative (changed while the full sync
    /// ran) while it holds its files: the directory is sent whole, once, and nothing below
    /// it counts as deleted; a file gone below it is the whole sync's to delete.
    #[test]
    fn nothing_below_a_directory_sent_whole_counts_as_deleted() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path();
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        for f in ["a", "d/b", "d/c", "d/e/f", "d/gone"] {
            std::fs::write(src.join(f), f).unwrap();
        }
        let w = crate::pair::manifest::walk(src, b"", &crate::rules::Rules::none(), None).unwrap();
        let mut rec = Record {
            version: Version::next(Version::default(), Version::default()),
            paths: w.manifest.0,
            ..Record::default()
        };
        let dir = rec.paths.remove(b"d".as_slice()).unwrap();
        rec.also
            .insert(b"d".to_vec(), crate::delivered::tracker::also_of(dir));
        std::fs::remove_file(src.join("d/gone")).unwrap();
        let d = compare(src, &crate::rules::Rules::none(), rec).unwrap();
        let got: Vec<(&[u8], bool, u32)> = d
            .entries
            .iter()
            .map(|e| (e.path.as_slice(), e.recursive, e.mask))
            .collect();
        assert_eq!(got, vec![(b"d".as_slice(), true, MAYBE_OLD_TREE)]);
        assert_eq!((d.differ, d.deleted), (1, 0));
    }
}
