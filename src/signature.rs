/*!
`modification-signature`: skip a path whose stat fields did not change since its last
sync. This is the original's loop breaker for two nodes that sync to each other: the
file an incoming sync wrote has the fields the peer already knows, so it is not sent
back.

The value is a comma-separated list of `dev ino mode nlink uid gid rdev size blksize
blocks atime mtime ctime`, or `*` for all of them but `nlink` (as the original's code
does; its man page lists fewer). Times are compared in whole seconds, as the original.
Unknown names are an error (the original read past its table). Deletions are never
skipped, and a path seen for the first time is always synced.
*/

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// The field names, in bit order.
pub const FIELDS: &[&str] = &[
    "dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blksize", "blocks", "atime",
    "mtime", "ctime",
];

const NLINK: u32 = 1 << 3;

/// Parses the option's value into a field mask (0: off).
pub fn parse(value: &str) -> Result<u32, String> {
    let mut mask = 0;
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "*" {
            mask |= ((1 << FIELDS.len()) - 1) & !NLINK;
            continue;
        }
        match FIELDS.iter().position(|f| *f == part) {
            Some(i) => mask |= 1 << i,
            None => {
                return Err(format!(
                    "invalid modification-signature field {part:?} (valid: {}, or *)",
                    FIELDS.join(", ")
                ))
            }
        }
    }
    Ok(mask)
}

/// Field `i` as an i64. The values are only compared for equality, and `u64 as i64`
/// is one-to-one: a wrap changes nothing.
#[allow(clippy::cast_possible_wrap)]
fn field(m: &Metadata, i: usize) -> i64 {
    match i {
        0 => m.dev() as i64,
        1 => m.ino() as i64,
        2 => m.mode() as i64,
        3 => m.nlink() as i64,
        4 => m.uid() as i64,
        5 => m.gid() as i64,
        6 => m.rdev() as i64,
        7 => m.size() as i64,
        8 => m.blksize() as i64,
        9 => m.blocks() as i64,
        10 => m.atime(),
        11 => m.mtime(),
        _ => m.ctime(),
    }
}

/// The last signature seen of each path.
pub struct Signatures {
    mask: u32,
    seen: HashMap<Vec<u8>, Box<[i64]>>,
}

impl Signatures {
    #[must_use]
    pub fn new(mask: u32) -> Self {
        Signatures {
            mask,
            seen: HashMap::new(),
        }
    }

    /// True when `path`'s selected fields equal those of its last call (the change needs
    /// no sync); records them otherwise.
    pub fn unchanged(&mut self, path: &[u8], m: &Metadata) -> bool {
        let sig: Box<[i64]> = (0..FIELDS.len())
            .filter(|i| self.mask & (1 << i) != 0)
            .map(|i| field(m, i))
            .collect();
        match self.seen.get_mut(path) {
            Some(old) if *old == sig => true,
            Some(old) => {
                *old = sig;
                false
            }
            None => {
                self.seen.insert(path.to_vec(), sig);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_star() {
        assert_eq!(parse(""), Ok(0));
        assert_eq!(parse("size,mtime"), Ok((1 << 7) | (1 << 11)));
        assert_eq!(parse("*").unwrap() & NLINK, 0);
        assert_eq!(parse("*").unwrap().count_ones(), 12);
        assert!(parse("size,color").unwrap_err().contains("\"color\""));
    }

    #[test]
    fn first_sight_syncs_then_unchanged_skips() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"one").unwrap();
        let mut s = Signatures::new(parse("size").unwrap());
        let m = std::fs::symlink_metadata(&f).unwrap();
        assert!(!s.unchanged(b"f", &m));
        assert!(s.unchanged(b"f", &m));
        std::fs::write(&f, b"longer").unwrap();
        let m = std::fs::symlink_metadata(&f).unwrap();
        assert!(!s.unchanged(b"f", &m));
    }
}
