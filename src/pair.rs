/*!
Failover pairs: what changed on each side since the last state both sides agreed on, and
who wins a split-brain. The pure part of issue 7's design, wired into the worker and the
manager in a later step (see docs/failover.md).

- A [`Manifest`] is the agreed state: for every path, its type, size and mtime. It is
  written as NUL-terminated records `T SIZE MTIME PATH`, the same shape `find -printf
  '%y %s %T@ %P\0'` prints, so the peer's tree can be listed over ssh with nothing of
  ours installed there.
- [`diff`] tells what changed between the agreed state and a side's tree now (added,
  modified, deleted), so a side that changed while no worker ran is noticed at start.
- [`decide`] applies the policy named after DRBD's after-split-brain policies; a
  resolver script may decide instead ([`Resolver`]), and anything it cannot settle is
  `manual`: nothing syncs in either direction until an operator says which side to keep.
*/

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

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

impl Manifest {
    /// Lists `root` (not following symlinks, not crossing into other file systems).
    pub fn scan(root: &Path) -> io::Result<Manifest> {
        let dev = std::fs::symlink_metadata(root)?.dev();
        let mut out = BTreeMap::new();
        let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
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
                let ft = m.file_type();
                let kind = if ft.is_dir() {
                    b'd'
                } else if ft.is_file() {
                    b'f'
                } else if ft.is_symlink() {
                    b'l'
                } else {
                    b'o'
                };
                out.insert(
                    rel.clone(),
                    Meta {
                        kind,
                        size: if kind == b'd' { 0 } else { m.size() },
                        mtime: m.mtime(),
                    },
                );
                if kind == b'd' && m.dev() == dev {
                    stack.push(rel);
                }
            }
        }
        Ok(Manifest(out))
    }

    /// Reads NUL-terminated `T SIZE MTIME PATH` records (`find -printf '%y %s %T@ %P\0'`).
    pub fn parse(data: &[u8]) -> Result<Manifest, String> {
        let mut out = BTreeMap::new();
        for (i, rec) in data.split(|&b| b == 0).enumerate() {
            if rec.is_empty() {
                continue;
            }
            let bad = || format!("record {}: {:?}", i + 1, String::from_utf8_lossy(rec));
            let mut parts = rec.splitn(4, |&b| b == b' ');
            let (Some(t), Some(size), Some(mtime), Some(path)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let num = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
            let size: u64 = num(size).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            let mtime: f64 = num(mtime).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            if t.len() != 1 || path.is_empty() {
                return Err(bad());
            }
            let kind = t[0];
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

    /// The newest mtime in the tree (0 when empty).
    pub fn newest(&self) -> i64 {
        self.0.values().map(|m| m.mtime).max().unwrap_or(0)
    }
}

/// What changed on one side since the agreed state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<Vec<u8>>,
    pub modified: Vec<Vec<u8>>,
    pub deleted: Vec<Vec<u8>>,
    /// The newest mtime among added and modified paths (when the side last changed).
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
