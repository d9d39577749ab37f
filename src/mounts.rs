/*!
Where a directory is inside its file system, whatever mount shows it: for overlap checks
that a bind mount cannot fool.

Why: comparing the (device, inode) of a destination and of every ancestor of the source
(and the reverse) catches a destination that *is* the source or one of its ancestors
under another name. It cannot catch a bind mount of a directory *below* the source used
as the destination (`mount --bind src/sub /mnt/y; clsync src /mnt/y`): the ancestors of
`/mnt/y` are `/mnt` and `/`, and nothing on that side of the mount leads back into the
source. rsync would copy the source into a part of itself and `--delete` what it does
not find there. The kernel knows the answer: `/proc/self/mountinfo` gives, for each
mount, its device and the directory of that file system it shows (`root`). A path's place
in its file system is that root joined with the path below the mount point, and two
directories overlap when they are on one device and one place is a prefix of the other.

The fanotify backend reads the same table for the mount points below the watch root (each
another file system to mark): mountinfo is parsed, and its escapes undone, here only.
*/

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// One line of mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// The mount's id (what `statx` gives as `stx_mnt_id`; reused once it is unmounted).
    pub id: u64,
    /// `major:minor` as the kernel prints it.
    pub dev: String,
    /// The directory of the file system this mount shows.
    pub root: PathBuf,
    /// Where it is mounted.
    pub point: PathBuf,
}

/// Undoes mountinfo's escapes (`\040` for a space, `\011`, `\012`, `\134`); a backslash
/// not followed by three octal digits of a byte value stays as it is.
fn unescape(s: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (s[i + 1] - b'0') as u32 * 64
                + (s[i + 2] - b'0') as u32 * 8
                + (s[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Parses the text of `/proc/self/mountinfo` (lines it cannot read are skipped).
pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            if f.len() < 5 {
                return None;
            }
            Some(Mount {
                id: std::str::from_utf8(f[0]).ok()?.parse().ok()?,
                dev: String::from_utf8_lossy(f[2]).into_owned(),
                root: unescape(f[3]),
                point: unescape(f[4]),
            })
        })
        .collect()
}

/// The mounts of this process (`/proc/self/mountinfo`); none when it cannot be read.
pub fn read() -> Vec<Mount> {
    std::fs::read("/proc/self/mountinfo").map_or_else(|_| Vec::new(), |text| parse(&text))
}

/// The mount points strictly below the directory `root` (compared as bytes: `root` is
/// canonical, as the kernel prints mount points).
pub fn points_below(mounts: &[Mount], root: &Path) -> Vec<PathBuf> {
    let root = root.as_os_str().as_bytes();
    mounts
        .iter()
        .filter(|m| {
            let mp = m.point.as_os_str().as_bytes();
            if root == b"/" {
                mp.len() > 1
            } else {
                mp.len() > root.len() && mp.starts_with(root) && mp[root.len()] == b'/'
            }
        })
        .map(|m| m.point.clone())
        .collect()
}

/// Where the canonical path `p` is: its device and its place in that file system. The
/// mount is the last one listed (the one on top) whose mount point is `p` or an ancestor.
pub fn place(mounts: &[Mount], p: &Path) -> Option<(String, PathBuf)> {
    let m = mounts
        .iter()
        .filter(|m| p.starts_with(&m.point))
        .max_by_key(|m| m.point.components().count())
        .and_then(|best| {
            // Of the mounts on that very point, the last listed is on top.
            mounts.iter().rev().find(|m| m.point == best.point)
        })?;
    let below = p.strip_prefix(&m.point).ok()?;
    let mut at = m.root.clone();
    for c in below.components() {
        if let Component::Normal(n) = c {
            at.push(n);
        }
    }
    Some((m.dev.clone(), at))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `a` and `b` show the same directory or one inside the other (the rule
    /// `config::check_overlap` applies to places).
    fn overlap_in(mounts: &[Mount], a: &Path, b: &Path) -> bool {
        match (place(mounts, a), place(mounts, b)) {
            (Some((da, pa)), Some((db, pb))) => {
                da == db && (pa.starts_with(&pb) || pb.starts_with(&pa))
            }
            _ => false,
        }
    }

    const TABLE: &[u8] = b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
30 22 0:40 / /tmp rw shared:9 - tmpfs tmpfs rw\n\
31 22 8:1 /srv/top/src/sub /mnt/y rw shared:1 - ext4 /dev/sda1 rw\n\
32 22 8:1 /srv/top /mnt/bm rw shared:1 - ext4 /dev/sda1 rw\n\
33 22 8:1 /srv/with\\040space /mnt/sp rw shared:1 - ext4 /dev/sda1 rw\n";

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(br"/srv/a\040b"), PathBuf::from("/srv/a b"));
        assert_eq!(unescape(br"/x\\y"), PathBuf::from(r"/x\\y"));
        assert_eq!(unescape(br"/x\134y"), PathBuf::from(r"/x\y"));
        assert_eq!(unescape(br"/end\04"), PathBuf::from(r"/end\04"));
        assert_eq!(unescape(br"/big\777"), PathBuf::from(r"/big\777"));
    }

    /// Mount points named with a space or a newline (escaped by the kernel, at the end of
    /// the field too): found below the root under their real names, and placed.
    #[test]
    fn mount_points_with_a_space_or_newline_in_their_name() {
        let table = b"22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n\
40 22 0:50 / /srv/tree/a\\040b rw shared:2 - tmpfs tmpfs rw\n\
41 22 0:51 / /srv/tree/line\\012break rw shared:3 - tmpfs tmpfs rw\n\
42 22 0:52 / /srv/tree/trailing\\040 rw shared:4 - tmpfs tmpfs rw\n\
43 22 0:53 /x\\011y /srv/tree/deep/er rw shared:5 - tmpfs tmpfs rw\n\
44 22 0:54 / /srv/treex rw shared:6 - tmpfs tmpfs rw\n";
        let m = parse(table);
        assert_eq!(
            points_below(&m, Path::new("/srv/tree")),
            [
                "/srv/tree/a b",
                "/srv/tree/line\nbreak",
                "/srv/tree/trailing ",
                "/srv/tree/deep/er"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(points_below(&m, Path::new("/")).len(), 5);
        assert!(points_below(&m, Path::new("/srv/tree/deep/er")).is_empty());
        assert_eq!(
            place(&m, Path::new("/srv/tree/trailing /f")),
            Some(("0:52".into(), PathBuf::from("/f")))
        );
        assert_eq!(
            place(&m, Path::new("/srv/tree/deep/er/g")),
            Some(("0:53".into(), PathBuf::from("/x\ty/g")))
        );
    }

    #[test]
    fn places_follow_bind_mounts() {
        let m = parse(TABLE);
        assert_eq!(
            m.iter().map(|m| m.id).collect::<Vec<_>>(),
            [22, 30, 31, 32, 33]
        );
        assert_eq!(
            place(&m, Path::new("/mnt/y/a")),
            Some(("8:1".into(), PathBuf::from("/srv/top/src/sub/a")))
        );
        assert_eq!(
            place(&m, Path::new("/mnt/sp")),
            Some(("8:1".into(), PathBuf::from("/srv/with space")))
        );
        assert_eq!(
            place(&m, Path::new("/tmp/x")),
            Some(("0:40".into(), PathBuf::from("/x")))
        );
    }

    #[test]
    fn a_bind_mount_below_or_above_the_source_overlaps() {
        let m = parse(TABLE);
        let src = Path::new("/srv/top/src");
        // A bind mount of a directory below the source.
        assert!(overlap_in(&m, src, Path::new("/mnt/y")));
        // Of the source's parent, and a directory in it.
        assert!(overlap_in(&m, src, Path::new("/mnt/bm")));
        assert!(overlap_in(&m, src, Path::new("/mnt/bm/src/deeper")));
        // A sibling is not an overlap, nor is another file system.
        assert!(!overlap_in(&m, src, Path::new("/mnt/bm/other")));
        assert!(!overlap_in(&m, src, Path::new("/srv/top/srcx")));
        assert!(!overlap_in(&m, src, Path::new("/tmp/src")));
    }
}
