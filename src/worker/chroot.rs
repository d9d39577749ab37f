/*!
The original's `--chroot DIR`: the worker changes its root to DIR once the tree is
watched, before it confines itself and drops its privileges.

Why it is checked first: after the change every path the worker and its programs use is
looked up inside DIR: the watch tree (new directories get their watches by path), the
destinations, rsync or the sync handler, the lists, status, pid and dump files, the hooks,
the rules file read again on SIGHUP, `/dev/null` (every child's standard input) and, for
fanotify or the sandbox, `/proc`. The original left it to the administrator to bind-mount them and
failed at the first sync that missed one. Here [`check`] compares each of them, before
anything is watched or forked, with what DIR holds at the same path: the same file (device
and inode, so a bind mount or the directory itself), or the start is refused with one line
naming the path and the bind mount that is missing. rsync's own libraries and the system
files a handler reads are not checked: a chroot without them fails at the first run, with
the program's own error.

A chroot alone does not hold a root process in (it can `chroot` again, or `mount`); with
the sandbox on, its seccomp filter refuses both, which is what the original's
`--pivot-root` was for.
*/

use crate::config::{Config, StartError};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Refuses the start when a path the worker uses is not the same file at the same path
/// inside `cfg.chroot` (nothing to do without one). `src`, `handler`, `lists_dir` and
/// `control` are the resolved watch tree, sync handler, lists and ssh control directories.
pub(super) fn check(
    cfg: &Config,
    src: &Path,
    handler: &Path,
    lists_dir: &Path,
    control: Option<&Path>,
) -> Result<(), StartError> {
    let Some(dir) = cfg.chroot.as_deref() else {
        return Ok(());
    };
    let refuse =
        |m: String| StartError::Path(format!("--chroot {}: {m}", crate::logger::path(dir)));
    let root = std::fs::metadata(dir).map_err(|e| refuse(e.to_string()))?;
    if !root.is_dir() {
        return Err(refuse("not a directory".into()));
    }
    for (what, path) in used_paths(cfg, src, handler, lists_dir, control) {
        let path = absolute(&path)?;
        let inside = within(dir, &path);
        let host = std::fs::metadata(&path)
            .map_err(|e| refuse(format!("the {what} {}: {e}", crate::logger::path(&path))))?;
        let same = match in_root(dir, &path).and_then(|f| f.metadata()) {
            Ok(m) => (m.dev(), m.ino()) == (host.dev(), host.ino()),
            Err(e) if e.raw_os_error().is_none() => return Err(refuse(e.to_string())),
            Err(_) => false,
        };
        if !same {
            return Err(refuse(format!(
                "the {what} {p} is not at the same path inside it ({i} is {state}): bind-mount it there (mount --bind {p} {i})",
                p = crate::logger::path(&path),
                i = crate::logger::path(&inside),
                state = if inside.exists() { "another file" } else { "missing" },
            )));
        }
    }
    // Every child's standard input and output go to /dev/null.
    let null = within(dir, Path::new("/dev/null"));
    let is_null = in_root(dir, Path::new("/dev/null"))
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3));
    if !is_null {
        return Err(refuse(format!(
            "{} is not the null device (bind-mount /dev there, or mknod -m 666 {} c 1 3)",
            crate::logger::path(&null),
            crate::logger::path(&null)
        )));
    }
    // fanotify reads each event's path back from /proc/self/fd; the sandbox counts the
    // worker's threads in /proc/self/status before it confines it.
    let needs_proc = if cfg.monitor == crate::watch::Monitor::Fanotify {
        Some("--monitor fanotify reads /proc/self/fd")
    } else if cfg.sandbox.on() {
        Some("the sandbox reads /proc/self/status")
    } else {
        None
    };
    if let Some(why) = needs_proc {
        let proc = within(dir, Path::new("/proc"));
        let is_proc = in_root(dir, Path::new("/proc")).is_ok_and(|f| {
            nix::sys::statfs::fstatfs(&f)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
        });
        if !is_proc {
            return Err(refuse(format!(
                "{why}, and {} is not a proc file system (mount -t proc proc {})",
                crate::logger::path(&proc),
                crate::logger::path(&proc)
            )));
        }
    }
    Ok(())
}

/// Changes the root to `cfg.chroot` (and the current directory to the same path inside,
/// or `/`). Root only (CAP_SYS_CHROOT): before the uid drop and the sandbox, whose filter
/// refuses chroot.
pub(super) fn enter(cfg: &Config) -> Result<(), StartError> {
    let Some(dir) = cfg.chroot.as_deref() else {
        return Ok(());
    };
    let cwd = std::env::current_dir().map_err(StartError::CurrentDir)?;
    nix::unistd::chroot(dir)
        .map_err(|e| StartError::Path(format!("--chroot {}: {e}", crate::logger::path(dir))))?;
    if std::env::set_current_dir(&cwd).is_err() {
        std::env::set_current_dir("/").map_err(StartError::CurrentDir)?;
    }
    log::info!("chroot: the root is now {}", crate::logger::path(dir));
    Ok(())
}

/// `path` opened (`O_PATH`) as the worker will find it once `dir` is its root: symbolic
/// links on the way are resolved inside `dir` (`openat2` with `RESOLVE_IN_ROOT`), so an
/// absolute link in the jail leads where it will lead after the chroot, not to the
/// host's file of that name.
fn in_root(dir: &Path, path: &Path) -> std::io::Result<std::fs::File> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    use std::os::fd::{AsRawFd, FromRawFd};
    let root = std::fs::File::open(dir)?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(root.as_raw_fd(), rel, how).map_err(|e| match e {
        nix::errno::Errno::ENOSYS => std::io::Error::other(
            "this kernel has no openat2 (Linux 5.6): --chroot cannot check its paths",
        ),
        e => e.into(),
    })?;
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// `path` as it is seen inside `dir`.
fn within(dir: &Path, path: &Path) -> PathBuf {
    dir.join(path.strip_prefix("/").unwrap_or(path))
}

fn absolute(p: &Path) -> Result<PathBuf, StartError> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .map_err(StartError::CurrentDir)?
            .join(p))
    }
}

/// Every path the worker, its handler and hooks use after the start, by what it is.
fn used_paths(
    cfg: &Config,
    src: &Path,
    handler: &Path,
    lists_dir: &Path,
    control: Option<&Path>,
) -> Vec<(&'static str, PathBuf)> {
    let mut v: Vec<(&'static str, PathBuf)> = vec![("watch directory", src.to_path_buf())];
    for d in cfg.destinations() {
        if let crate::dest::Dest::Local(p) = d {
            v.push(("destination", p));
        }
    }
    v.push(("sync handler", handler.to_path_buf()));
    v.push(("lists directory", lists_dir.to_path_buf()));
    v.extend(control.map(|c| ("ssh control directory", c.to_path_buf())));
    let parent = |f: &Option<PathBuf>| {
        f.as_deref()
            .and_then(Path::parent)
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
    };
    v.extend(parent(&cfg.status_file).map(|p| ("status-file directory", p)));
    v.extend(parent(&cfg.pid_file).map(|p| ("pid-file directory", p)));
    v.extend(cfg.dump_dir.clone().map(|p| ("dump-dir", p)));
    v.extend(cfg.index_dir.clone().map(|p| ("index-dir", p)));
    v.extend(cfg.rules_file.clone().map(|p| ("rules file", p)));
    v.extend(cfg.pre_exit_hook.clone().map(|p| ("pre-exit-hook", p)));
    v.extend(cfg.exit_hook.clone().map(|p| ("exit-hook", p)));
    if let Some(c) = cfg.ssh.command.as_deref().filter(|c| c.contains('/')) {
        v.push(("ssh-command", PathBuf::from(c)));
    }
    v.extend(cfg.ssh.identity.clone().map(|p| ("ssh-identity", p)));
    v.extend(
        cfg.rsync_password_file
            .clone()
            .map(|p| ("rsync-password-file", p)),
    );
    if let Some(pair) = &cfg.pair {
        v.push(("pair-dir", pair.dir.clone()));
        v.push(("peer-pair-dir", pair.peer_dir.clone()));
        v.extend(pair.resolver.clone().map(|p| ("resolver", p)));
        v.extend(pair.notify.clone().map(|p| ("split-brain-notify", p)));
    }
    let extra = &cfg.sandbox_extra;
    v.extend(extra.read.iter().map(|p| ("sandbox-read path", p.clone())));
    v.extend(
        extra
            .write
            .iter()
            .map(|p| ("sandbox-write path", p.clone())),
    );
    v.extend(extra.exec.iter().map(|p| ("sandbox-exec path", p.clone())));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(dir: &Path, path: &Path) -> bool {
        let host = std::fs::metadata(path).unwrap();
        in_root(dir, path)
            .and_then(|f| f.metadata())
            .is_ok_and(|m| (m.dev(), m.ino()) == (host.dev(), host.ino()))
    }

    /// Paths are looked up as the chrooted worker will look them up: an absolute symbolic
    /// link inside the jail does not lead back to the host's file of that name.
    #[test]
    fn paths_inside_are_resolved_within_the_new_root() {
        let t = tempfile::tempdir().unwrap();
        let t = std::fs::canonicalize(t.path()).unwrap();
        let real = t.join("real");
        std::fs::create_dir(&real).unwrap();
        let jail = t.join("jail");
        let inside = within(&jail, &real);
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        // What a careless jail holds: a link to the host's path, which after the chroot
        // points at itself.
        std::os::unix::fs::symlink(&real, &inside).unwrap();
        assert!(
            !same(&jail, &real),
            "a link out of the jail is not the same file"
        );
        // The same directory at the same path inside (here: the jail is /) is.
        assert!(
            same(Path::new("/"), &real),
            "with / as the root, every path is itself"
        );
    }
}
