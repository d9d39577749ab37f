/*!
Failover pairs: what changed on each side since the last state both sides agreed on, who
wins a split-brain, and bringing both sides together before the worker syncs (see
docs/failover.md).

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
pub const SPLIT_BRAIN_EXIT: i32 = 7;

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
    /// Go on: the initial sync pushes this side.
    Go,
    /// Stop: a person must resolve it (the message says what changed where).
    SplitBrain(String),
}

impl PairSettings {
    fn records(&self) -> std::path::PathBuf {
        self.dir.join("pairs").join(&self.instance)
    }

    fn conflicts(dir: &Path, instance: &str) -> std::path::PathBuf {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        dir.join("conflicts").join(instance).join(ts.to_string())
    }
}

impl Peer<'_> {
    fn remote(&self, script: Vec<u8>) -> io::Result<std::process::Output> {
        use std::os::unix::ffi::OsStringExt;
        std::process::Command::new(&self.ssh[0])
            .args(&self.ssh[1..])
            .arg(std::ffi::OsString::from_vec(script))
            .stdin(std::process::Stdio::null())
            .output()
    }

    /// The peer's tree, listed with `find` over ssh (a missing directory is empty).
    fn list(&self) -> Result<Manifest, String> {
        let mut script = b"find ".to_vec();
        script.extend_from_slice(&crate::dest::sh_quote(self.path));
        script.extend_from_slice(b" -mindepth 1 -printf '%y %s %T@ %P\\0' 2>/dev/null; exit 0");
        let out = self
            .remote(script)
            .map_err(|e| format!("ssh {}: {e}", self.host))?;
        if !out.status.success() {
            return Err(format!(
                "cannot list the peer {}: ssh exited with {} ({})",
                self.host,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Manifest::parse(&out.stdout).map_err(|e| format!("the peer's listing: {e}"))
    }

    fn remote_arg(&self) -> std::ffi::OsString {
        use std::os::unix::ffi::OsStringExt;
        let mut v = self.host.as_bytes().to_vec();
        v.push(b':');
        v.extend_from_slice(self.path);
        v.push(b'/');
        std::ffi::OsString::from_vec(v)
    }

    /// rsync between here and the peer; `backup`: where the overwritten and deleted
    /// files of the receiving side go.
    fn rsync(&self, pull: bool, src: &Path, backup: Option<&Path>) -> Result<(), String> {
        let mut cmd = std::process::Command::new(self.rsync);
        cmd.args(["-aH", "--delete", "-e"]).arg(self.rsync_e);
        if let Some(b) = backup {
            let mut a = std::ffi::OsString::from("--backup-dir=");
            a.push(b);
            cmd.arg("--backup").arg(a);
        }
        let mut local = src.as_os_str().to_os_string();
        local.push("/");
        if pull {
            cmd.arg(self.remote_arg()).arg(local);
        } else {
            cmd.arg(local).arg(self.remote_arg());
        }
        let st = cmd
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("{}: {e}", self.rsync.display()))?;
        if matches!(st.code(), Some(0 | 24)) {
            Ok(())
        } else {
            Err(format!(
                "rsync {} the peer failed: {st}",
                if pull { "from" } else { "to" }
            ))
        }
    }
}

/// Splits the paths where the two sides differ into what each side changed since the
/// agreed state. Paths equal on both sides are agreed, whatever the record says (a
/// worker that died after syncing them left an old record behind).
pub fn sides(agreed: &Manifest, local: &Manifest, peer: &Manifest) -> (Changes, Changes) {
    let mut keys: Vec<&Vec<u8>> = local.0.keys().chain(peer.0.keys()).collect();
    keys.sort();
    keys.dedup();
    let (mut l, mut p) = (Changes::default(), Changes::default());
    let same = |a: Option<&Meta>, b: Option<&Meta>| match (a, b) {
        (Some(a), Some(b)) => !a.differs(b),
        (None, None) => true,
        _ => false,
    };
    for k in keys {
        let (a, lo, pe) = (agreed.0.get(k), local.0.get(k), peer.0.get(k));
        if same(lo, pe) {
            continue;
        }
        for (side, now) in [(&mut l, lo), (&mut p, pe)] {
            if same(a, now) {
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
                _ => side.deleted.push(k.clone()),
            }
        }
    }
    (l, p)
}

/// Before the worker syncs: compares both sides with the agreed state and brings them
/// together as the policy (or the resolver, or the operator's `keep`) says.
pub fn check(s: &PairSettings, src: &Path, peer: &Peer) -> Result<Outcome, String> {
    let records = s.records();
    let agreed = match std::fs::read(records.join("manifest")) {
        Ok(data) => Manifest::parse(&data).map_err(|e| format!("{}: {e}", records.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Manifest::default(),
        Err(e) => return Err(format!("{}: {e}", records.display())),
    };
    let local = Manifest::scan(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let remote = peer.list()?;
    let (l, p) = sides(&agreed, &local, &remote);
    let decision = match s.keep {
        Some(k) => k,
        None => match decide(&l, &p, s.policy) {
            Decision::Manual if s.resolver.is_some() => {
                let r = Resolver {
                    script: s.resolver.as_deref().expect("checked"),
                    timeout: s.resolver_timeout,
                };
                match r.run(&s.instance, &l, &p, &records.join("resolver")) {
                    Ok(d) => d,
                    Err(e) => {
                        log::error!("split-brain resolver: {e}; a person must decide");
                        Decision::Manual
                    }
                }
            }
            d => d,
        },
    };
    let counts = format!(
        "{} changes here, {} on the peer {}",
        l.count(),
        p.count(),
        peer.host
    );
    match decision {
        Decision::Push => {
            log::info!("pair check: {counts}: pushing");
            Ok(Outcome::Go)
        }
        Decision::Pull => {
            log::info!("pair check: {counts}: pulling the peer's changes first");
            peer.rsync(true, src, None)?;
            Ok(Outcome::Go)
        }
        Decision::KeepLocal => {
            let backup = PairSettings::conflicts(&s.peer_dir, &s.instance);
            log::warn!(
                "split-brain: {counts}: keeping this side; the peer's {} changed or deleted files go to {} there",
                p.count(),
                backup.display()
            );
            peer.rsync(false, src, Some(&backup))?;
            Ok(Outcome::Go)
        }
        Decision::KeepPeer => {
            let backup = PairSettings::conflicts(&s.dir, &s.instance);
            log::warn!(
                "split-brain: {counts}: keeping the peer's side; this side's {} changed or deleted files go to {}",
                l.count(),
                backup.display()
            );
            peer.rsync(true, src, Some(&backup))?;
            Ok(Outcome::Go)
        }
        Decision::Manual => {
            let msg = format!(
                "split-brain: {counts}; nothing is synced until it is resolved (clsync-manager resolve {} --keep local|peer)",
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

/// Records the agreed state (this tree, now equal to the peer's) here and at the peer.
pub fn record(s: &PairSettings, src: &Path, peer: &Peer) -> Result<(), String> {
    let records = s.records();
    std::fs::create_dir_all(&records).map_err(|e| format!("{}: {e}", records.display()))?;
    let m = Manifest::scan(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let file = records.join("manifest");
    let tmp = records.join(".manifest.tmp");
    std::fs::write(&tmp, m.to_bytes())
        .and_then(|_| std::fs::rename(&tmp, &file))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let mut to = std::ffi::OsString::from(format!("{}:", peer.host));
    to.push(s.peer_dir.join("pairs").join(&s.instance).join("manifest"));
    let st = std::process::Command::new(peer.rsync)
        .args(["-a", "--mkpath", "-e"])
        .arg(peer.rsync_e)
        .arg(&file)
        .arg(&to)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", peer.rsync.display()))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("copying the agreed state to the peer: rsync {st}"))
    }
}
