/*!
Failover pairs: what changed on each side since the last state both sides shared, who
wins a split-brain, and bringing both sides together before the worker syncs (see
docs/failover.md).

- A [`Manifest`] is a tree's state: for every path, its type, size and mtime, in the
  records `find -printf '%y %s %T@ %P\0'` prints, so the peer's tree can be listed over ssh
  with nothing of ours installed there. [`walk`] lists this side, leaving out what the
  rules exclude: excluded paths are each node's own and never part of the pair.
- The agreed state is the newest record of what was delivered ([`crate::delivered`]),
  this node's or the peer's: the worker appends to it after every sync ([`Link`]), so a
  crash leaves a current record and only real concurrent changes make a split-brain.
- [`sides`] tells what each side changed since (added, modified, deleted, and when:
  a deletion is dated by its directory), so a side that changed while no worker ran is
  noticed at start.
- [`decide`] applies the policy named after DRBD's after-split-brain policies; a
  resolver script may decide instead ([`Resolver`]), and anything it cannot settle is
  `manual`: nothing syncs in either direction until an operator says which side to keep.
  Whatever the rsync that follows replaces or deletes is kept in a conflict directory.
- A peer that cannot be reached at start is checked again with backoff while the worker
  runs; nothing is synced to it before ([`Link::check`]).
*/

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crate::delivered::{Record, Version};

/// What is known of one path in a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// `f` file, `d` directory, `l` symlink, anything else for other types.
    pub kind: u8,
    pub size: u64,
    /// Modification time in whole seconds (listings from other systems round anyway).
    pub mtime: i64,
}

impl Meta {
    /// Whether a change from `self` to `other` is a change of content (directories
    /// change mtime when their entries change; their entries speak for them).
    fn differs(&self, other: &Meta) -> bool {
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
fn rule_kind(kind: u8) -> crate::rules::Kind {
    match kind {
        b'd' => crate::rules::Kind::Dir,
        b'f' => crate::rules::Kind::File,
        _ => crate::rules::Kind::Other,
    }
}

/// Whether `m`'s inode changed at or after `since` (seconds, nanoseconds).
fn changed_since(m: &std::fs::Metadata, since: Option<(i64, i64)>) -> bool {
    since.is_some_and(|s| (m.ctime(), m.ctime_nsec()) >= s)
}

fn meta_of(m: &std::fs::Metadata) -> Meta {
    let kind = kind_of(m.file_type());
    Meta {
        kind,
        size: if kind == b'd' { 0 } else { m.size() },
        mtime: m.mtime(),
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
    /// Lists `root` (not following symlinks, not crossing into other file systems).
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
                    mtime: mtime.floor() as i64,
                },
            );
        }
        Ok(Manifest(out))
    }

    /// The records [`Manifest::parse`] reads.
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
    pub fn count(&self) -> usize {
        self.added.len() + self.modified.len() + self.deleted.len()
    }

    /// One path per line, with `+`, `~` or `-` in front (for a resolver script).
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

/// What changed from `agreed` to `now`.
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

/// A resolver script: `SCRIPT INSTANCE LOCAL_CHANGES PEER_CHANGES LOCAL_NEWEST
/// PEER_NEWEST LOCAL_LIST PEER_LIST` with the same in `CLSYNC_*` variables; it answers
/// with one word on stdout (`local`, `peer`, `manual`) or, without one, its exit code
/// (10 local, 11 peer, anything else manual). One that runs past `timeout` is killed
/// (its process group) and counts as `manual`.
pub struct Resolver<'a> {
    pub script: &'a Path,
    pub timeout: Duration,
}

impl Resolver<'_> {
    pub fn run(
        &self,
        instance: &str,
        local: &Changes,
        peer: &Changes,
        lists: &Path,
    ) -> Result<Decision, String> {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(lists).map_err(|e| format!("{}: {e}", lists.display()))?;
        let local_list = lists.join("local-changes");
        let peer_list = lists.join("peer-changes");
        std::fs::write(&local_list, local.listing())
            .and_then(|_| std::fs::write(&peer_list, peer.listing()))
            .map_err(|e| format!("{}: {e}", lists.display()))?;
        let args = [
            instance.to_string(),
            local.count().to_string(),
            peer.count().to_string(),
            local.newest.to_string(),
            peer.newest.to_string(),
        ];
        let mut child = std::process::Command::new(self.script)
            .args(&args)
            .arg(&local_list)
            .arg(&peer_list)
            .env("CLSYNC_INSTANCE", instance)
            .env("CLSYNC_LOCAL_CHANGES", &args[1])
            .env("CLSYNC_PEER_CHANGES", &args[2])
            .env("CLSYNC_LOCAL_NEWEST", &args[3])
            .env("CLSYNC_PEER_NEWEST", &args[4])
            .env("CLSYNC_LOCAL_LIST", &local_list)
            .env("CLSYNC_PEER_LIST", &peer_list)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("resolver {}: {e}", self.script.display()))?;
        let deadline = std::time::Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let pg = nix::unistd::Pid::from_raw(child.id() as i32);
                    let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait();
                    return Err(format!(
                        "resolver {} ran longer than {}s and was killed",
                        self.script.display(),
                        self.timeout.as_secs()
                    ));
                }
            }
        };
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            use std::io::Read;
            let _ = o.read_to_string(&mut out);
        }
        Ok(match out.split_whitespace().next() {
            Some("local") => Decision::KeepLocal,
            Some("peer") => Decision::KeepPeer,
            Some(_) => Decision::Manual,
            None => match status.code() {
                Some(10) => Decision::KeepLocal,
                Some(11) => Decision::KeepPeer,
                _ => Decision::Manual,
            },
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: u8, size: u64, mtime: i64) -> Meta {
        Meta { kind, size, mtime }
    }

    fn man(entries: &[(&str, Meta)]) -> Manifest {
        Manifest(
            entries
                .iter()
                .map(|(p, m)| (p.as_bytes().to_vec(), *m))
                .collect(),
        )
    }

    #[test]
    fn records_round_trip_and_read_find_output() {
        let a = man(&[("d", m(b'd', 0, 5)), ("d/f x", m(b'f', 3, 7))]);
        assert_eq!(Manifest::parse(&a.to_bytes()).unwrap(), a);
        let find = b"d 4096 1700000000.1234567890 d\0f 3 1700000001.5 d/f\nnewline\0";
        let p = Manifest::parse(find).unwrap();
        assert_eq!(p.0[&b"d/f\nnewline"[..]], m(b'f', 3, 1700000001));
        assert_eq!(p.0[&b"d"[..]].size, 0, "directory sizes are not compared");
        assert!(Manifest::parse(b"garbage\0").is_err());
    }

    #[test]
    fn scan_sees_types_and_diff_sees_changes() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), b"abc").unwrap();
        std::fs::write(t.path().join("gone"), b"x").unwrap();
        std::os::unix::fs::symlink("d/f", t.path().join("l")).unwrap();
        let agreed = Manifest::scan(t.path()).unwrap();
        assert_eq!(agreed.0[&b"l"[..]].kind, b'l');
        assert_eq!(diff(&agreed, &agreed).count(), 0);
        std::fs::write(t.path().join("d/f"), b"abcd").unwrap();
        std::fs::remove_file(t.path().join("gone")).unwrap();
        std::fs::write(t.path().join("d/new"), b"n").unwrap();
        let now = Manifest::scan(t.path()).unwrap();
        let c = diff(&agreed, &now);
        assert_eq!(c.added, [b"d/new".to_vec()]);
        assert_eq!(c.modified, [b"d/f".to_vec()]);
        assert_eq!(c.deleted, [b"gone".to_vec()]);
        assert_eq!(c.listing(), b"+ d/new\n~ d/f\n- gone\n".to_vec());
    }

    #[test]
    fn alternatives_count_on_the_receiving_side_and_deletions_are_dated() {
        let agreed = man(&[
            ("d", m(b'd', 0, 5)),
            ("d/f", m(b'f', 1, 10)),
            ("g", m(b'f', 1, 10)),
        ]);
        // f changed while its sync ran: the peer may have 1 byte or 2.
        let also = man(&[("d/f", m(b'f', 2, 11))]);
        let here = man(&[
            ("d", m(b'd', 0, 5)),
            ("d/f", m(b'f', 2, 11)),
            ("g", m(b'f', 1, 10)),
        ]);
        let there = man(&[("d", m(b'd', 0, 50)), ("d/f", m(b'f', 1, 10))]);
        let side = |tree, root_mtime, also| Side {
            tree,
            root_mtime,
            also,
        };
        // The peer received: its old f is as delivered; here f differs from the record.
        let (l, p) = sides(
            &agreed,
            side(&here, 7, None),
            side(&there, 70, Some(&also)),
            &Default::default(),
        );
        assert_eq!(l.modified, [b"d/f".to_vec()]);
        assert_eq!(p.modified.len() + p.added.len(), 0);
        // The peer deleted g, dated by its directory (the root): 70.
        assert_eq!((p.deleted.clone(), p.newest), (vec![b"g".to_vec()], 70));
        // The alternative never excuses the sending side.
        let there2 = man(&[
            ("d", m(b'd', 0, 5)),
            ("d/f", m(b'f', 3, 12)),
            ("g", m(b'f', 1, 10)),
        ]);
        let (l, p) = sides(
            &agreed,
            side(&here, 7, None),
            side(&there2, 7, Some(&also)),
            &Default::default(),
        );
        assert_eq!((l.count(), p.count()), (1, 1));
    }

    fn changes(n: usize, newest: i64) -> Changes {
        Changes {
            added: (0..n).map(|i| format!("p{i}").into_bytes()).collect(),
            newest,
            ..Changes::default()
        }
    }

    #[test]
    fn policies_decide_as_documented() {
        let none = Changes::default();
        let (few, many) = (changes(1, 200), changes(5, 100));
        for p in POLICIES {
            let p: Policy = p.parse().unwrap();
            assert_eq!(decide(&none, &none, p), Decision::Push);
            assert_eq!(decide(&few, &none, p), Decision::Push, "only here changed");
            assert_eq!(
                decide(&none, &few, p),
                Decision::Pull,
                "only the peer changed"
            );
        }
        use Decision::*;
        let d = |p: &str, l: &Changes, r: &Changes| decide(l, r, p.parse().unwrap());
        assert_eq!(d("discard-zero-changes", &few, &many), Manual);
        assert_eq!(d("manual", &few, &many), Manual);
        assert_eq!(d("discard-least-changes", &few, &many), KeepPeer);
        assert_eq!(d("discard-least-changes", &many, &few), KeepLocal);
        assert_eq!(d("discard-least-changes", &few, &few), Manual);
        // few changed last (200): discard-younger keeps the older side.
        assert_eq!(d("discard-younger", &few, &many), KeepPeer);
        assert_eq!(d("discard-older", &few, &many), KeepLocal);
        assert_eq!(d("discard-local", &few, &many), KeepPeer);
        assert_eq!(d("discard-peer", &few, &many), KeepLocal);
        assert!("discard-everything"
            .parse::<Policy>()
            .unwrap_err()
            .contains("valid:"));
    }

    #[test]
    fn resolver_answers_by_word_or_exit_code_and_is_killed_when_it_hangs() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let script = |name: &str, body: &str| {
            let p = t.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let (l, r) = (changes(2, 10), changes(3, 20));
        let run = |p: &Path, timeout: u64| {
            Resolver {
                script: p,
                timeout: Duration::from_secs(timeout),
            }
            .run("web@a", &l, &r, &t.path().join("lists"))
        };
        let word = script(
            "word",
            "[ \"$1 $2 $3 $CLSYNC_INSTANCE\" = 'web@a 2 3 web@a' ] && grep -q '^+ p2$' \"$7\" && echo peer",
        );
        assert_eq!(run(&word, 10), Ok(Decision::KeepPeer));
        assert_eq!(run(&script("code", "exit 10"), 10), Ok(Decision::KeepLocal));
        assert_eq!(run(&script("other", "exit 3"), 10), Ok(Decision::Manual));
        let hang = script("hang", "sleep 600");
        let e = run(&hang, 1).unwrap_err();
        assert!(e.contains("was killed"), "{e}");
    }
}

/// How a worker pairs with its peer (the profile's `peer`, `split-brain`, `resolver`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairSettings {
    /// The instance's name: the records live in `PAIR_DIR/pairs/INSTANCE/`.
    pub instance: String,
    pub policy: Policy,
    pub resolver: Option<std::path::PathBuf>,
    pub resolver_timeout: Duration,
    /// Run as `HOOK INSTANCE` with `CLSYNC_SPLIT_BRAIN` when a person is needed.
    pub notify: Option<std::path::PathBuf>,
    /// This node's directory for records and conflicts (`/var/lib/clsync`).
    pub dir: std::path::PathBuf,
    /// The peer's (default: the same path).
    pub peer_dir: std::path::PathBuf,
    /// An operator's decision for this start (`--split-brain-keep`).
    pub keep: Option<Decision>,
}

/// The exit status of a worker that stops for a split-brain a person must resolve.
pub const SPLIT_BRAIN_EXIT: i32 = crate::exit::ExitCode::SplitBrain as i32;

/// How to reach the peer: its ssh argv (up to and including the host) and path, and
/// rsync's `-e` value.
pub struct Peer<'a> {
    pub ssh: &'a [std::ffi::OsString],
    pub path: &'a [u8],
    pub host: &'a str,
    pub rsync: &'a Path,
    pub rsync_e: &'a std::ffi::OsStr,
}

/// What the pair check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Go on: the initial sync pushes this side. `excluded`: the paths the rules exclude
    /// on either side (no sync may send, delete or overwrite them); `peer_version`: the
    /// version of the peer's record; `local`: this side's tree as the check saw it.
    Go {
        excluded: Vec<Vec<u8>>,
        peer_version: Version,
        local: Manifest,
    },
    /// Stop: a person must resolve it (the message says what changed where).
    SplitBrain(String),
}

/// Why the pair check could not be made.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckError {
    /// ssh could not reach the peer (its host is down): try again later.
    Unreachable(String),
    Failed(String),
}

impl PairSettings {
    fn records(&self) -> std::path::PathBuf {
        self.dir.join("pairs").join(&self.instance)
    }

    fn peer_records(&self) -> std::path::PathBuf {
        self.peer_dir.join("pairs").join(&self.instance)
    }

    fn conflicts(dir: &Path, instance: &str) -> std::path::PathBuf {
        dir.join("conflicts").join(instance)
    }
}

/// A conflict directory's name: the UTC time, `2026-12-03T20-04-35Z`.
pub fn conflict_name(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(':', "-")
}

/// Makes a new conflict directory below `parent` (named by the time, `.2`, `.3`… added
/// if that name is taken: one resolution never writes into another's).
fn local_conflict_dir(parent: &Path) -> Result<std::path::PathBuf, String> {
    // Private: the versions kept there are the container's files.
    crate::delivered::private_dir(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let name = conflict_name(std::time::SystemTime::now());
    for n in 1..1000 {
        let d = parent.join(if n == 1 {
            name.clone()
        } else {
            format!("{name}.{n}")
        });
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{}: {e}", d.display())),
        }
    }
    Err(format!("{}: no free name", parent.display()))
}

/// What a pair rsync run moved, from its itemized output (files and other
/// non-directories; directories are not counted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub created: usize,
    pub replaced: usize,
    pub deleted: usize,
}

impl Moved {
    /// Counts `rsync --out-format='%i %n'` lines.
    pub fn parse(out: &[u8]) -> Moved {
        let mut m = Moved::default();
        for line in out.split(|&b| b == b'\n') {
            if let Some(rest) = line.strip_prefix(b"*deleting ") {
                if !rest.ends_with(b"/") {
                    m.deleted += 1;
                }
                continue;
            }
            if line.len() < 12 || line[11] != b' ' {
                continue;
            }
            let (what, kind, attrs) = (line[0], line[1], &line[2..11]);
            if kind == b'd' || !matches!(what, b'<' | b'>' | b'c' | b'h') {
                continue;
            }
            if attrs.iter().all(|&b| b == b'+') {
                m.created += 1;
            } else {
                m.replaced += 1;
            }
        }
        m
    }

    /// The versions a backup directory received.
    pub fn kept(&self) -> usize {
        self.replaced + self.deleted
    }
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files created, {} replaced, {} deleted",
            self.created, self.replaced, self.deleted
        )
    }
}

impl Peer<'_> {
    /// Runs `script` at the peer. ssh's own failure (exit 255, or no ssh at all) is
    /// [`CheckError::Unreachable`].
    fn remote(&self, script: Vec<u8>, input: Option<&[u8]>) -> Result<Vec<u8>, CheckError> {
        use std::io::Write;
        use std::os::unix::ffi::OsStringExt;
        let mut child = std::process::Command::new(&self.ssh[0])
            .args(&self.ssh[1..])
            .arg(std::ffi::OsString::from_vec(script))
            .stdin(if input.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| CheckError::Unreachable(format!("ssh {}: {e}", self.host)))?;
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            let _ = stdin.write_all(data);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| CheckError::Failed(format!("ssh {}: {e}", self.host)))?;
        let why = || {
            format!(
                "ssh {} exited with {} ({})",
                self.host,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        };
        match out.status.code() {
            Some(0) => Ok(out.stdout),
            Some(255) | None => Err(CheckError::Unreachable(why())),
            Some(_) => Err(CheckError::Failed(why())),
        }
    }

    /// The peer's tree, listed with `find` over ssh (a missing directory is empty), and
    /// its root's mtime.
    fn list(&self) -> Result<(Manifest, i64), CheckError> {
        let q = crate::dest::sh_quote(self.path);
        let mut script = b"find ".to_vec();
        script.extend_from_slice(&q);
        script.extend_from_slice(b" -maxdepth 0 -printf '%T@' 2>/dev/null; printf '\\0'; find ");
        script.extend_from_slice(&q);
        script.extend_from_slice(b" -mindepth 1 -printf '%y %s %T@ %P\\0' 2>/dev/null; exit 0");
        let out = self.remote(script, None)?;
        let cut = out.iter().position(|&b| b == 0).unwrap_or(out.len());
        let root = std::str::from_utf8(&out[..cut])
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0, |t| t.floor() as i64);
        let m = Manifest::parse(out.get(cut + 1..).unwrap_or_default())
            .map_err(|e| CheckError::Failed(format!("the peer's listing: {e}")))?;
        Ok((m, root))
    }

    /// The peer's record of this pair (empty when it has none).
    fn record(&self, dir: &Path) -> Result<Record, CheckError> {
        use std::os::unix::ffi::OsStrExt;
        let mut script = b"d=".to_vec();
        script.extend_from_slice(&crate::dest::sh_quote(dir.as_os_str().as_bytes()));
        script.extend_from_slice(
            b"; for f in manifest journal; do if [ -f \"$d/$f\" ]; then s=$(wc -c < \"$d/$f\"); echo $s; head -c $s \"$d/$f\"; else echo -; fi; done",
        );
        let out = self.remote(script, None)?;
        let bad = |why: &str| CheckError::Failed(format!("the peer's record: {why}"));
        let mut rest = &out[..];
        let mut parts: Vec<&[u8]> = Vec::new();
        for _ in 0..2 {
            let nl = rest.iter().position(|&b| b == b'\n').ok_or(bad("cut"))?;
            let head = std::str::from_utf8(&rest[..nl]).map_err(|_| bad("bad size"))?;
            rest = &rest[nl + 1..];
            if head == "-" {
                parts.push(&[]);
                continue;
            }
            let n: usize = head.trim().parse().map_err(|_| bad("bad size"))?;
            if rest.len() < n {
                return Err(bad("cut"));
            }
            parts.push(&rest[..n]);
            rest = &rest[n..];
        }
        Record::parse(parts[0], parts[1])
            .map(|(r, _)| r)
            .map_err(|e| bad(&e))
    }

    /// Makes a new conflict directory below `parent` at the peer.
    fn conflict_dir(&self, parent: &Path) -> Result<std::path::PathBuf, String> {
        use std::os::unix::ffi::OsStrExt;
        let name = conflict_name(std::time::SystemTime::now());
        let mut script = b"cd ".to_vec();
        // mkdir -p first: cd into the parent, then mkdir each candidate (fails if taken).
        let q = crate::dest::sh_quote(parent.as_os_str().as_bytes());
        let mut pre = b"umask 077; mkdir -p ".to_vec();
        pre.extend_from_slice(&q);
        pre.extend_from_slice(b" && ");
        pre.extend_from_slice(&script);
        script = pre;
        script.extend_from_slice(&q);
        script.extend_from_slice(
            format!(" && for n in '' .2 .3 .4 .5 .6 .7 .8 .9; do mkdir \"{name}$n\" 2>/dev/null && {{ echo \"{name}$n\"; exit 0; }}; done; exit 1").as_bytes(),
        );
        let out = self
            .remote(script, None)
            .map_err(|e| format!("a conflict directory at the peer: {e:?}"))?;
        let got = String::from_utf8_lossy(&out).trim().to_string();
        Ok(parent.join(got))
    }

    fn remote_arg(&self) -> std::ffi::OsString {
        use std::os::unix::ffi::OsStringExt;
        let mut v = self.host.as_bytes().to_vec();
        v.push(b':');
        v.extend_from_slice(self.path);
        v.push(b'/');
        std::ffi::OsString::from_vec(v)
    }

    /// rsync between here and the peer; `backup`: where the replaced and deleted files
    /// of the receiving side go; `exclude`: a `--from0` list of paths no side may touch.
    fn rsync(
        &self,
        pull: bool,
        src: &Path,
        backup: Option<&Path>,
        exclude: Option<&Path>,
    ) -> Result<Moved, String> {
        let mut cmd = std::process::Command::new(self.rsync);
        cmd.args(["-aH", "--delete", "--out-format=%i %n", "-e"])
            .arg(self.rsync_e);
        if let Some(b) = backup {
            let mut a = std::ffi::OsString::from("--backup-dir=");
            a.push(b);
            cmd.arg("--backup").arg(a);
        }
        if let Some(x) = exclude {
            let mut a = std::ffi::OsString::from("--exclude-from=");
            a.push(x);
            cmd.arg("--from0").arg(a);
        }
        let mut local = src.as_os_str().to_os_string();
        local.push("/");
        if pull {
            cmd.arg(self.remote_arg()).arg(local);
        } else {
            cmd.arg(local).arg(self.remote_arg());
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("{}: {e}", self.rsync.display()))?;
        if matches!(out.status.code(), Some(0 | 24)) {
            Ok(Moved::parse(&out.stdout))
        } else {
            Err(format!(
                "rsync {} the peer failed: {}",
                if pull { "from" } else { "to" },
                out.status
            ))
        }
    }

    /// Writes `rec` as the peer's record (the same steps as here: temporary file, sync,
    /// rename; its journal, of an older agreement, is emptied).
    fn put_record(&self, dir: &Path, rec: &Record) -> Result<(), String> {
        use std::os::unix::ffi::OsStrExt;
        let mut script = b"set -e; umask 077; d=".to_vec();
        script.extend_from_slice(&crate::dest::sh_quote(dir.as_os_str().as_bytes()));
        script.extend_from_slice(
            format!(
                "; mkdir -p \"$d\"; cat > \"$d/.manifest.tmp\"; sync \"$d/.manifest.tmp\" 2>/dev/null || sync; mv -f \"$d/.manifest.tmp\" \"$d/manifest\"; echo '{}' > \"$d/.id.tmp\"; mv -f \"$d/.id.tmp\" \"$d/id\"; if [ -f \"$d/journal\" ]; then : > \"$d/journal\"; fi; sync \"$d\" 2>/dev/null || sync",
                rec.version
            )
            .as_bytes(),
        );
        self.remote(script, Some(&rec.manifest_bytes()))
            .map(|_| ())
            .map_err(|e| match e {
                CheckError::Unreachable(e) | CheckError::Failed(e) => e,
            })
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
fn policy_name(p: Policy) -> &'static str {
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

/// Writes the `--from0` exclude list of `paths` (anchored, literal) into `dir`.
fn exclude_list(dir: &Path, paths: &[Vec<u8>]) -> Result<Option<std::path::PathBuf>, String> {
    if paths.is_empty() {
        return Ok(None);
    }
    crate::delivered::private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut data = Vec::new();
    for p in paths {
        crate::sync::plan::push_pattern(&mut data, p, b"");
    }
    crate::delivered::write_atomic(dir, "exclude", &data)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(Some(dir.join("exclude")))
}

/// Before the worker syncs: compares both sides with the newest record either side has
/// (this node's or the peer's: the higher [`Version`]) and brings them together as the
/// policy (or the resolver, or the operator's `keep`) says. What `rules` exclude is left
/// out on both sides: not compared, not sent, not deleted, not overwritten.
pub fn check(
    s: &PairSettings,
    src: &Path,
    peer: &Peer,
    rules: &crate::rules::Rules,
) -> Result<Outcome, CheckError> {
    let failed = |e: String| CheckError::Failed(e);
    let records = s.records();
    let mine = crate::delivered::load(&records).map_err(|e| failed(e.to_string()))?;
    let (mut remote, peer_root) = peer.list()?;
    let theirs = peer.record(&s.peer_records())?;
    let peer_version = theirs.version;
    // The side that received the newest record's syncs: the one whose copy may be in
    // either of two states (a shared copy, equal on both sides, names neither).
    let received_here = theirs.version > mine.version;
    let received_there = mine.version > theirs.version;
    let (newest, whose) = if received_here {
        (theirs, "the peer's")
    } else {
        (mine, "this node's")
    };
    let (mut agreed, mut also) = newest.agreed();
    agreed.exclude(rules);
    also.exclude(rules);
    let w = walk(src, b"", rules, None).map_err(|e| failed(format!("{}: {e}", src.display())))?;
    let local_root = std::fs::symlink_metadata(src).map_or(0, |m| m.mtime());
    let mut excluded = w.excluded;
    excluded.extend(remote.exclude(rules));
    excluded.sort();
    excluded.dedup();
    let mut holders = std::collections::HashSet::new();
    for x in &excluded {
        for (i, &b) in x.iter().enumerate() {
            if b == b'/' {
                holders.insert(x[..i].to_vec());
            }
        }
    }
    let (l, p) = sides(
        &agreed,
        Side {
            tree: &w.manifest,
            root_mtime: local_root,
            also: received_here.then_some(&also),
        },
        Side {
            tree: &remote,
            root_mtime: peer_root,
            also: received_there.then_some(&also),
        },
        &holders,
    );
    if newest.version == Version::default() && agreed.0.is_empty() {
        log::info!(
            "pair check: no agreed state yet; {} excluded paths left alone",
            excluded.len()
        );
    } else {
        log::info!(
            "pair check: agreed state {} ({whose} record); {} excluded paths left alone",
            newest.version,
            excluded.len()
        );
    }
    let (decision, by) = match s.keep {
        Some(k) => (k, "an operator (--split-brain-keep)".to_string()),
        None => match decide(&l, &p, s.policy) {
            Decision::Manual if s.resolver.is_some() && l.count() > 0 && p.count() > 0 => {
                let script = s.resolver.as_deref().expect("checked");
                let r = Resolver {
                    script,
                    timeout: s.resolver_timeout,
                };
                let by = format!("the resolver {}", script.display());
                match r.run(&s.instance, &l, &p, &records.join("resolver")) {
                    Ok(d) => (d, by),
                    Err(e) => {
                        log::error!("split-brain resolver: {e}; a person must decide");
                        (Decision::Manual, by)
                    }
                }
            }
            d => (d, format!("the policy {}", policy_name(s.policy))),
        },
    };
    let counts = format!(
        "{} changes here, {} on the peer {}",
        l.count(),
        p.count(),
        peer.host
    );
    let excl = exclude_list(&records, &excluded).map_err(failed)?;
    let go = Outcome::Go {
        excluded,
        peer_version,
        local: w.manifest,
    };
    match decision {
        Decision::Push => {
            log::info!("pair check: {counts}: pushing");
            Ok(go)
        }
        Decision::Pull | Decision::KeepPeer => {
            let backup = local_conflict_dir(&PairSettings::conflicts(&s.dir, &s.instance))
                .map_err(failed)?;
            if decision == Decision::Pull {
                log::info!("pair check: {counts}: pulling the peer's changes first");
            }
            let moved = peer
                .rsync(true, src, Some(&backup), excl.as_deref())
                .map_err(failed)?;
            let kept = if moved.kept() > 0 {
                format!("; the versions it replaced are in {}", backup.display())
            } else {
                let _ = std::fs::remove_dir(&backup);
                String::new()
            };
            if decision == Decision::Pull {
                log::info!("pair check: pulled from the peer: {moved} here{kept}");
            } else {
                log::warn!(
                    "split-brain: {counts}: {by} decided, keeping the peer's side: {moved} here{kept}"
                );
            }
            Ok(go)
        }
        Decision::KeepLocal => {
            let parent = PairSettings::conflicts(&s.peer_dir, &s.instance);
            let backup = peer.conflict_dir(&parent).map_err(failed)?;
            let moved = peer
                .rsync(false, src, Some(&backup), excl.as_deref())
                .map_err(failed)?;
            log::warn!(
                "split-brain: {counts}: {by} decided, keeping this side: {moved} at the peer; the versions it replaced there are in {}",
                backup.display()
            );
            Ok(go)
        }
        Decision::Manual => {
            let msg = format!(
                "split-brain: {counts}; {by} leaves it to a person: nothing is synced until it is resolved (clsync-manager resolve {} --keep local|peer)",
                s.instance
            );
            if let Some(hook) = &s.notify {
                let _ = std::process::Command::new(hook)
                    .arg(&s.instance)
                    .env("CLSYNC_SPLIT_BRAIN", &msg)
                    .stdin(std::process::Stdio::null())
                    .status();
            }
            Ok(Outcome::SplitBrain(msg))
        }
    }
}

/// A worker's link to its peer: the pair check (at start, then with backoff while the
/// peer cannot be reached), and the record of what each sync delivered.
pub struct Link {
    pub settings: PairSettings,
    pub ssh: Vec<std::ffi::OsString>,
    pub host: String,
    pub path: Vec<u8>,
    pub rsync: std::path::PathBuf,
    pub rsync_e: std::ffi::OsString,
    journal: Option<crate::delivered::Journal>,
    peer_version: Version,
    /// The paths the rules exclude on either side, as of the last pair check.
    pub excluded: Vec<Vec<u8>>,
    /// The state of each path of the running syncs when they started (and its inode
    /// change time).
    pre: std::collections::HashMap<Vec<u8>, (Meta, (i64, i64))>,
    /// This side's tree as the pair check saw it: the state the initial sync started from.
    initial: Option<Manifest>,
    /// When each running sync to the peer started (seconds, nanoseconds), a little
    /// early: inode change times come from a coarse clock.
    running: Vec<(i64, i64)>,
    /// While the peer cannot be reached: the next try and the wait after it.
    waiting: Option<(std::time::Instant, Duration)>,
}

/// What a pair check says the worker does.
#[derive(Debug)]
pub enum Step {
    /// Sync to the peer; keep these excluded paths out of every sync.
    Go(Vec<Vec<u8>>),
    /// The peer cannot be reached: run, but sync nothing to it until a retry succeeds.
    Waiting,
    SplitBrain(String),
}

/// The first retry of an unreachable peer, and the longest wait between tries.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How much earlier than its start a sync counts as started (the coarse clock's tick).
const CTIME_SLACK: Duration = Duration::from_millis(50);

impl Link {
    pub fn new(
        settings: PairSettings,
        ssh: Vec<std::ffi::OsString>,
        host: String,
        path: Vec<u8>,
        rsync: std::path::PathBuf,
        rsync_e: std::ffi::OsString,
    ) -> Link {
        Link {
            settings,
            ssh,
            host,
            path,
            rsync,
            rsync_e,
            journal: None,
            peer_version: Version::default(),
            excluded: Vec::new(),
            pre: Default::default(),
            initial: None,
            running: Vec::new(),
            waiting: None,
        }
    }

    fn peer(&self) -> Peer<'_> {
        Peer {
            ssh: &self.ssh,
            path: &self.path,
            host: &self.host,
            rsync: &self.rsync,
            rsync_e: &self.rsync_e,
        }
    }

    /// The pair check (at start, and at each retry).
    pub fn check(&mut self, src: &Path, rules: &crate::rules::Rules) -> Result<Step, String> {
        match check(&self.settings, src, &self.peer(), rules) {
            Ok(Outcome::Go {
                excluded,
                peer_version,
                local,
            }) => {
                self.waiting = None;
                self.initial = Some(local);
                self.peer_version = peer_version;
                self.excluded = excluded.clone();
                if self.journal.is_none() {
                    let (j, _) = crate::delivered::Journal::open(&self.settings.records())
                        .map_err(|e| format!("the delivered record: {e}"))?;
                    self.journal = Some(j);
                }
                Ok(Step::Go(excluded))
            }
            Ok(Outcome::SplitBrain(m)) => Ok(Step::SplitBrain(m)),
            Err(CheckError::Unreachable(e)) => {
                let wait = self
                    .waiting
                    .map_or(RETRY_FIRST, |(_, w)| (w * 2).min(RETRY_MAX));
                log::warn!(
                    "pair check: the peer {} cannot be reached ({e}); running without syncing to it, next try in {}s",
                    self.host,
                    wait.as_secs()
                );
                self.waiting = Some((std::time::Instant::now() + wait, wait));
                Ok(Step::Waiting)
            }
            Err(CheckError::Failed(e)) => Err(e),
        }
    }

    /// Whether syncs to the peer wait for a pair check.
    pub fn waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// When the next pair check is due.
    pub fn retry_at(&self) -> Option<std::time::Instant> {
        self.waiting.map(|(t, _)| t)
    }

    /// A sync to the peer starts: the time, and the state of the paths it names.
    pub fn sync_started(&mut self, src: &Path, batch: &crate::batcher::Batch) {
        for e in &batch.entries {
            if e.recursive || e.path.is_empty() {
                continue;
            }
            if let Ok(m) = std::fs::symlink_metadata(crate::watch::abs_path(src, &e.path)) {
                self.pre
                    .entry(e.path.clone())
                    .or_insert((meta_of(&m), (m.ctime(), m.ctime_nsec())));
            }
        }
        let t = std::time::SystemTime::now()
            .checked_sub(CTIME_SLACK)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        self.running
            .push((t.as_secs() as i64, i64::from(t.subsec_nanos())));
    }

    /// A sync to the peer ended: records what it delivered (a full sync is a new
    /// agreement, written here and at the peer).
    pub fn sync_finished(
        &mut self,
        src: &Path,
        rules: &crate::rules::Rules,
        batch: &crate::batcher::Batch,
        ok: bool,
    ) {
        // The earliest start of the syncs running: safe for whichever ended.
        let since = self.running.iter().min().copied();
        if let Some(i) = self.running.iter().position(|t| Some(*t) == since) {
            self.running.swap_remove(i);
        }
        let mut pre = std::collections::HashMap::new();
        for e in &batch.entries {
            if let Some(v) = self.pre.remove(&e.path) {
                pre.insert(e.path.clone(), v);
            }
        }
        let (Some(since), true) = (since, ok) else {
            return;
        };
        if self.journal.is_none() {
            return;
        }
        if batch.is_full() {
            self.agree(src, rules, since);
            return;
        }
        let ops = delivered_ops(src, rules, &batch.entries, since, &pre);
        let j = self.journal.as_mut().expect("checked");
        if let Err(e) = j.append(&ops) {
            log::error!("pair: cannot record what was delivered: {e}");
            return;
        }
        if j.wants_compaction() {
            if let Err(e) = j.compact() {
                log::error!("pair: cannot compact the delivered record: {e}");
            }
        }
    }

    /// After a full sync: both sides are equal (what did not change since it began): a
    /// new agreement, here and at the peer.
    fn agree(&mut self, src: &Path, rules: &crate::rules::Rules, since: (i64, i64)) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        let w = match walk(src, b"", rules, Some(since)) {
            Ok(w) => w,
            Err(e) => {
                log::error!("pair: cannot list {}: {e}", src.display());
                return;
            }
        };
        // A path that changed during the sync: the state before it (as the pair check
        // saw it, or as recorded), and the state now as the alternative.
        let before = match self.initial.take() {
            Some(m) => m,
            None => crate::delivered::load(j.dir())
                .map(|r| r.agreed().0)
                .unwrap_or_default(),
        };
        let mut rec = Record {
            version: Version::next(j.version(), self.peer_version),
            paths: w.manifest.0,
            also: Default::default(),
        };
        for (p, m) in w.recent {
            if let Some(b) = before.0.get(&p) {
                rec.paths.insert(p.clone(), *b);
            }
            rec.also.insert(p, also_of(m));
        }
        if let Err(e) = j.replace(&rec) {
            log::error!("pair: cannot record the agreed state: {e}");
            return;
        }
        self.share(&rec);
    }

    fn share(&mut self, rec: &Record) {
        match self.peer().put_record(&self.settings.peer_records(), rec) {
            Ok(()) => {
                self.peer_version = rec.version;
                log::info!(
                    "pair: agreed state {} recorded here and at {}",
                    rec.version,
                    self.host
                );
            }
            Err(e) => log::error!(
                "pair: agreed state {} recorded here; not at the peer: {e}",
                rec.version
            ),
        }
    }

    /// A clean stop after the final sync: the record, compacted, is shared with the peer.
    pub fn clean_stop(&mut self) {
        if self.waiting() {
            return;
        }
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        match j.compact() {
            Ok(rec) => self.share(&rec),
            Err(e) => log::error!("pair: cannot compact the delivered record: {e}"),
        }
    }
}

/// `m` as an alternative state (its type in upper case).
fn also_of(mut m: Meta) -> Meta {
    m.kind = m.kind.to_ascii_uppercase();
    m
}

/// What a sync of `entries` delivered, as journal records: each path's state now, if
/// its inode did not change since the sync began (`since`) or since `pre` saw it then. A
/// path that changed during the sync may have reached the peer in either state: its
/// state at the start is recorded (none: it did not exist) and the state now as the
/// alternative ([`crate::delivered`]).
fn delivered_ops(
    src: &Path,
    rules: &crate::rules::Rules,
    entries: &[crate::batcher::Entry],
    since: (i64, i64),
    pre: &std::collections::HashMap<Vec<u8>, (Meta, (i64, i64))>,
) -> Vec<(Vec<u8>, Meta)> {
    use crate::delivered::{CLEAR_BELOW, DELETED, FORGET};
    let mark = |kind: u8, mtime: i64| Meta {
        kind,
        size: 0,
        mtime,
    };
    let mut ops = Vec::new();
    for e in entries {
        let p = &e.path;
        match std::fs::symlink_metadata(crate::watch::abs_path(src, p)) {
            Ok(m) => {
                let meta = meta_of(&m);
                if !rules.is_empty() && !p.is_empty() && rules.excluded(p, rule_kind(meta.kind)) {
                    continue;
                }
                if e.recursive && meta.kind == b'd' {
                    ops.push((p.clone(), mark(CLEAR_BELOW, 0)));
                    if let Ok(w) = walk(src, p, rules, Some(since)) {
                        for (r, rm) in w.recent {
                            ops.push((r.clone(), mark(FORGET, 0)));
                            ops.push((r, also_of(rm)));
                        }
                        ops.extend(w.manifest.0);
                    }
                }
                if p.is_empty() {
                    continue;
                }
                let before = pre.get(p);
                let settled = !changed_since(&m, Some(since))
                    || before.is_some_and(|(b, c)| *b == meta && *c == (m.ctime(), m.ctime_nsec()));
                if settled {
                    ops.push((p.clone(), meta));
                } else {
                    match before {
                        Some((b, _)) => ops.push((p.clone(), *b)),
                        None => ops.push((p.clone(), mark(FORGET, 0))),
                    }
                    ops.push((p.clone(), also_of(meta)));
                }
            }
            Err(_) => {
                // Gone, and the peer's copy deleted: unless its directory changed since
                // the sync began (it may have come back and gone again meanwhile).
                let parent = &p[..p.iter().rposition(|&b| b == b'/').unwrap_or(0)];
                match std::fs::symlink_metadata(crate::watch::abs_path(src, parent)) {
                    Ok(pm) if !changed_since(&pm, Some(since)) => {
                        ops.push((p.clone(), mark(DELETED, pm.mtime())));
                    }
                    _ => {
                        // Either still there as it was at the start, or deleted.
                        ops.push((p.clone(), mark(CLEAR_BELOW, 0)));
                        ops.push((p.clone(), mark(FORGET, 0)));
                        if let Some((b, _)) = pre.get(p) {
                            ops.push((p.clone(), also_of(*b)));
                        }
                    }
                }
            }
        }
    }
    ops
}
