/*!
A tree's state, for comparing both sides of a pair: a [`Manifest`] maps every path to
its type, size and mtime, in the records `find -printf '%y %s %T@ %P\0'` prints, so the
peer's tree is listed over ssh with nothing of ours installed there, and this side's is
listed by [`walk`] (leaving out what the rules exclude). The delivered record
(`crate::delivered`) stores its manifests in the same records, read by [`records`].
*/

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What is known of one path in a manifest.
///
/// Equality is that of what both sides of a pair can list (type, size, whole-second
/// mtime); [`Meta::same_stat`] also compares the local fields of [`Stat`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta {
    /// `f` file, `d` directory, `l` symlink, anything else for other types.
    pub kind: u8,
    pub size: u64,
    /// Modification time in whole seconds (listings from other systems round anyway).
    pub mtime: i64,
    /// What only a local `lstat` tells (all zero when not known: a peer's listing, a
    /// version 1 record).
    pub x: Stat,
}

/// The fields of a local `lstat` a warm start compares besides type, size and mtime:
/// a rewrite that keeps size and mtime (`cp -p`, `touch -r`, a restore) changes the
/// inode change time, and a replaced file its inode number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    pub mtime_ns: u32,
    pub ctime: i64,
    pub ctime_ns: u32,
    pub ino: u64,
}

impl PartialEq for Meta {
    fn eq(&self, other: &Meta) -> bool {
        self.kind == other.kind && self.size == other.size && self.mtime == other.mtime
    }
}
impl Eq for Meta {}

impl Meta {
    /// Equal, and equal in every field of [`Stat`] too (and known: a zero inode number is
    /// never the same).
    #[must_use]
    pub fn same_stat(&self, other: &Meta) -> bool {
        self == other && self.x == other.x && self.x.ino != 0
    }

    /// Whether a change from `self` to `other` is a change of content (directories
    /// change mtime when their entries change; their entries speak for them).
    pub(super) fn differs(&self, other: &Meta) -> bool {
        self.kind != other.kind
            || (self.kind != b'd' && (self.size != other.size || self.mtime != other.mtime))
    }
}

/// A tree's state: path (relative, no leading slash) → [`Meta`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest(pub BTreeMap<Vec<u8>, Meta>);

/// What a [`walk`] found.
#[derive(Debug, Default)]
pub struct Walk {
    pub manifest: Manifest,
    /// The paths the rules exclude, each at the top of its excluded part.
    pub excluded: Vec<Vec<u8>>,
    /// Paths whose inode changed at or after `since` (their state is not settled).
    pub recent: Vec<(Vec<u8>, Meta)>,
}

/// The type letter of a file type (`find -printf %y`'s).
fn kind_of(ft: std::fs::FileType) -> u8 {
    if ft.is_dir() {
        b'd'
    } else if ft.is_file() {
        b'f'
    } else if ft.is_symlink() {
        b'l'
    } else {
        b'o'
    }
}

/// The rules' idea of a type letter.
pub(crate) fn rule_kind(kind: u8) -> crate::rules::Kind {
    match kind {
        b'd' => crate::rules::Kind::Dir,
        b'f' => crate::rules::Kind::File,
        _ => crate::rules::Kind::Other,
    }
}

/// Whether `m`'s inode changed at or after `since` (seconds, nanoseconds).
pub(crate) fn changed_since(m: &std::fs::Metadata, since: Option<(i64, i64)>) -> bool {
    since.is_some_and(|s| (m.ctime(), m.ctime_nsec()) >= s)
}

pub(crate) fn meta_of(m: &std::fs::Metadata) -> Meta {
    let kind = kind_of(m.file_type());
    Meta {
        kind,
        size: if kind == b'd' { 0 } else { m.size() },
        mtime: m.mtime(),
        x: Stat {
            mode: m.mode(),
            mtime_ns: u32::try_from(m.mtime_nsec()).unwrap_or(0),
            ctime: m.ctime(),
            ctime_ns: u32::try_from(m.ctime_nsec()).unwrap_or(0),
            ino: m.ino(),
        },
    }
}

/// Lists the tree below `start` (relative; empty for all of `root`), not following
/// symlinks, not crossing into other file systems, not descending into what `rules`
/// exclude. With `since`, a path whose inode changed since then is listed in `recent`
/// instead of the manifest.
pub fn walk(
    root: &Path,
    start: &[u8],
    rules: &crate::rules::Rules,
    since: Option<(i64, i64)>,
) -> io::Result<Walk> {
    let dev = std::fs::symlink_metadata(root)?.dev();
    let mut w = Walk::default();
    let mut stack: Vec<Vec<u8>> = vec![start.to_vec()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(crate::watch::abs_path(root, &dir)) {
            Ok(rd) => rd,
            Err(e) if dir.is_empty() => return Err(e),
            Err(_) => continue, // vanished meanwhile
        };
        for ent in rd.flatten() {
            use std::os::unix::ffi::OsStrExt;
            let mut rel = dir.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(ent.file_name().as_bytes());
            let Ok(m) = ent.metadata() else { continue };
            let meta = meta_of(&m);
            if !rules.is_empty() && rules.excluded(&rel, rule_kind(meta.kind)) {
                w.excluded.push(rel);
                continue;
            }
            if changed_since(&m, since) {
                w.recent.push((rel.clone(), meta));
            } else {
                w.manifest.0.insert(rel.clone(), meta);
            }
            if meta.kind == b'd' && m.dev() == dev {
                stack.push(rel);
            }
        }
    }
    Ok(w)
}

impl Manifest {
    /// Lists `root` (not following symlinks, not crossing into other file systems); for
    /// the unit tests, which build trees on disk.
    #[cfg(test)]
    pub fn scan(root: &Path) -> io::Result<Manifest> {
        Ok(walk(root, b"", &crate::rules::Rules::none(), None)?.manifest)
    }

    /// Takes out what `rules` exclude (and everything below an excluded directory);
    /// returns the excluded paths at the top of each excluded part.
    pub fn exclude(&mut self, rules: &crate::rules::Rules) -> Vec<Vec<u8>> {
        if rules.is_empty() {
            return Vec::new();
        }
        let mut tops: std::collections::BTreeSet<Vec<u8>> = Default::default();
        for (p, m) in &self.0 {
            let under = p
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'/')
                .any(|(i, _)| tops.contains(&p[..i]));
            if !under && rules.excluded(p, rule_kind(m.kind)) {
                tops.insert(p.clone());
            }
        }
        // The excluded paths, and everything below them.
        self.0.retain(|p, _| {
            !tops.contains(p)
                && !p
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'/')
                    .any(|(i, _)| tops.contains(&p[..i]))
        });
        tops.into_iter().collect()
    }

    /// Reads NUL-terminated `T SIZE MTIME PATH` records (`find -printf '%y %s %T@ %P\0'`).
    pub fn parse(data: &[u8]) -> Result<Manifest, String> {
        let mut out = BTreeMap::new();
        for rec in records(data) {
            let (kind, size, mtime, path, bad) = rec?;
            let mtime: f64 = mtime.parse().map_err(|_| bad.clone())?;
            if path.is_empty() {
                return Err(bad);
            }
            out.insert(
                path.to_vec(),
                Meta {
                    kind,
                    size: if kind == b'd' { 0 } else { size },
                    // Float casts saturate: a bogus mtime stays bogus, whole seconds.
                    #[allow(clippy::cast_possible_truncation)]
                    mtime: mtime.floor() as i64,
                    x: Stat::default(),
                },
            );
        }
        Ok(Manifest(out))
    }

    /// The records [`Manifest::parse`] reads (the unit tests write them; the delivered
    /// record and the peer's `find` write their own).
    #[cfg(test)]
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, m) in &self.0 {
            out.push(m.kind);
            out.extend_from_slice(format!(" {} {} ", m.size, m.mtime).as_bytes());
            out.extend_from_slice(path);
            out.push(0);
        }
        out
    }
}

/// One parsed `T SIZE MTIME PATH` record: type, size, mtime as written, path, and the
/// error line that names the record, for a caller that finds the mtime or path bad.
pub(crate) type Rec<'a> = (u8, u64, &'a str, &'a [u8], String);

/// The NUL-terminated `T SIZE MTIME PATH` records of `data` (a peer's `find -printf`
/// listing, and the delivered record's manifest and journal frames): one reader for both.
pub(crate) fn records(data: &[u8]) -> impl Iterator<Item = Result<Rec<'_>, String>> {
    data.split(|&b| b == 0)
        .enumerate()
        .filter(|(_, rec)| !rec.is_empty())
        .map(|(i, rec)| {
            let bad = format!("record {}: {:?}", i + 1, String::from_utf8_lossy(rec));
            let mut parts = rec.splitn(4, |&b| b == b' ');
            let (Some(t), Some(size), Some(mtime), Some(path)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad);
            };
            let size = std::str::from_utf8(size).ok().and_then(|s| s.parse().ok());
            let mtime = std::str::from_utf8(mtime).ok();
            match (t, size, mtime) {
                (&[kind], Some(size), Some(mtime)) => Ok((kind, size, mtime, path, bad)),
                _ => Err(bad),
            }
        })
}
