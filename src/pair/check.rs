/*!
The pair check a worker makes before it syncs: it lists both sides, finds the newest
record either side has, lets `decide.rs` (or the resolver script, or the
operator's `--split-brain-keep`) say what to do, and brings both sides together, keeping
whatever the rsync replaces or deletes in a conflict directory, or stops for a person
([`Outcome::SplitBrain`], exit [`SPLIT_BRAIN_EXIT`]).
*/

use super::decide::{decide, policy_name, sides, Changes, Decision, Policy, Side};
use super::manifest::{walk, Manifest};
use super::peer::Peer;
use crate::delivered::Version;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

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
    pub(super) fn records(&self) -> std::path::PathBuf {
        self.dir.join("pairs").join(&self.instance)
    }

    pub(super) fn peer_records(&self) -> std::path::PathBuf {
        self.peer_dir.join("pairs").join(&self.instance)
    }

    pub(super) fn conflicts(dir: &Path, instance: &str) -> std::path::PathBuf {
        dir.join("conflicts").join(instance)
    }
}

/// A conflict directory's name: the UTC time, `2026-12-03T20-04-35Z`.
#[must_use]
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
        crate::delivered::private_dir(lists).map_err(|e| format!("{}: {e}", lists.display()))?;
        let local_list = lists.join("local-changes");
        let peer_list = lists.join("peer-changes");
        crate::delivered::write_atomic(lists, "local-changes", &local.listing())
            .and_then(|_| crate::delivered::write_atomic(lists, "peer-changes", &peer.listing()))
            .map_err(|e| format!("{}: {e}", lists.display()))?;
        let args = [
            instance.to_string(),
            local.count().to_string(),
            peer.count().to_string(),
            local.newest.to_string(),
            peer.newest.to_string(),
        ];
        crate::strict::check_program(self.script, "resolver")?;
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
                    // A pid is at most PID_MAX_LIMIT (2^22): it fits an i32.
                    #[allow(clippy::cast_possible_wrap)]
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
                if let Err(e) = crate::strict::check_program(hook, "split-brain notify program") {
                    log::error!("{e}");
                } else {
                    let _ = std::process::Command::new(hook)
                        .arg(&s.instance)
                        .env("CLSYNC_SPLIT_BRAIN", &msg)
                        .stdin(std::process::Stdio::null())
                        .status();
                }
            }
            Ok(Outcome::SplitBrain(msg))
        }
    }
}
