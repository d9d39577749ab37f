/*!
Why the watch cannot start: the errors that stop the worker at start-up, and the advice
for the one users meet most (the inotify watch limit).
*/

use std::io;
use std::path::{Path, PathBuf};

/// Errors that stop the worker at start-up; at run time the same conditions are logged
/// and the subtree is polled instead.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path}: inotify watch limit reached: {advice}")]
    NoSpace { path: PathBuf, advice: String },
    #[error(
        "cannot watch {path}: {source} (make it readable for this user, or exclude it with a rule)"
    )]
    Watch { path: PathBuf, source: io::Error },
    #[error("cannot read directory {path}: {source} (make it readable for this user, or exclude it with a rule)")]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("cannot initialise inotify: {0}")]
    Init(io::Error),
    #[error("cannot initialise inotify: this user's inotify instances are used up: {0}")]
    Instances(String),
}

impl WatchError {
    /// The error of a failed `inotify_init`: `EMFILE` there is the per-user instance
    /// limit (shared by every worker, and every other program, of the uid), not this
    /// process's descriptors, and says so with the numbers.
    pub(super) fn init(e: io::Error) -> Self {
        if e.raw_os_error() == Some(libc::EMFILE) {
            WatchError::Instances(instances_advice())
        } else {
            WatchError::Init(e)
        }
    }
}

/// What to tell a user whose uid has no inotify instance left: the limit in force
/// (`fs.inotify.max_user_instances`, or `user.max_inotify_instances` when lower in this
/// user namespace), how many this uid holds where that can be seen, and the ways out.
pub(super) fn instances_advice() -> String {
    let (limit, sysctl, _) = inotify_limit("max_user_instances", "max_inotify_instances");
    let uid = nix::unistd::getuid().as_raw();
    let held = instances_of(uid);
    let limit_text = limit.map_or_else(|| "?".to_string(), |l| l.to_string());
    let suggest = limit.unwrap_or(128).saturating_mul(4).max(1024);
    format!(
        "{sysctl} = {limit_text}{} for uid {uid}, and each clsync worker watching with inotify needs one; raise it, e.g. `sysctl {sysctl}={suggest}`, and persist it in /etc/sysctl.d/, or watch with monitor = fanotify (as root: it takes no inotify instance)",
        held.map_or_else(String::new, |n| format!(", {n} in use"))
    )
}

/// How many inotify instances the processes of `uid` hold, counted in /proc (`None` when
/// some processes could not be looked into: the count would be low).
fn instances_of(uid: u32) -> Option<usize> {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = p.file_name();
        if !name
            .to_str()
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        if !p.metadata().is_ok_and(|m| m.uid() == uid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            return None;
        };
        n += fds
            .flatten()
            .filter(|f| {
                std::fs::read_link(f.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:inotify")
            })
            .count();
    }
    Some(n)
}

/// An inotify limit in force: `fs.inotify.NAME`, or `user.USER_NAME` of this user
/// namespace when that is lower (the lower one is what bites); with the sysctl's name and
/// the global value.
fn inotify_limit(name: &str, user_name: &str) -> (Option<u64>, String, Option<u64>) {
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let global = read(&format!("/proc/sys/fs/inotify/{name}"));
    match read(&format!("/proc/sys/user/{user_name}")) {
        Some(u) if global.is_none_or(|g| u < g) => (Some(u), format!("user.{user_name}"), global),
        _ => (global, format!("fs.inotify.{name}"), global),
    }
}

/// What to tell a user whose tree needs `needed` watches: the limit in force, the
/// sysctl that sets it and a value that fits. Inside a user namespace
/// `user.max_inotify_watches` may be lower than the global
/// `fs.inotify.max_user_watches`; the lower one is what bites, and both are named.
pub(super) fn watch_limit_advice(needed: usize) -> String {
    let (limit, sysctl, global) = inotify_limit("max_user_watches", "max_inotify_watches");
    let show = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    let state = if sysctl.starts_with("user.") {
        format!(
            "{sysctl} = {} in this user namespace (fs.inotify.max_user_watches = {})",
            show(limit),
            show(global)
        )
    } else {
        format!("{sysctl} = {}", show(limit))
    };
    let limit = limit.unwrap_or(0);
    let suggest = (needed as u64 + 8192).max(limit.saturating_mul(2));
    format!(
        "{state}, this tree needs at least {needed} watches (plus those other programs use); raise it, e.g. `sysctl {sysctl}={suggest}`"
    )
}

/// Counts the directories below `dir` (itself included) without following symlinks.
pub(super) fn count_dirs(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        n += 1;
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    n
}

/// Is `err` "this path is gone or is no longer a directory"?
pub(super) fn vanished(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}
