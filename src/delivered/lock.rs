/*!
One worker per index directory: an exclusive `flock` on `INDEX_DIR/lock`, held for the
worker's whole life.

Why: the index of each destination is a manifest and a journal that one writer appends
to and compacts. Two workers on the same `index-dir` (a profile run by clsync-manager
and also by `clsync@NAME.service`, two profile directories with a profile of the same
name, a copied unit) would interleave their journals and rewrite each other's manifest;
a later warm start would then trust an index that is true for neither, and skip what a
destination never received. So the second worker refuses to start (exit status 2: a
restart cannot help while the first one runs), naming the directory and the pid that
holds it.

The lock is `flock(LOCK_EX|LOCK_NB)` on a file opened `O_CREAT|O_NOFOLLOW|O_CLOEXEC`,
mode 0600, in the private 0700 index directory. `flock` belongs to the open file: the
kernel drops it when the worker dies, `kill -9` included, so there is no stale lock to
clean up; the descriptor survives the fork to the background, the chroot, the sandbox
and the uid drop, which only ever come after it is taken. Close-on-exec keeps it out of
the handlers and hooks, so an orphaned rsync does not keep the directory locked. The
file holds the holder's pid (rewritten after the fork to the background) for the
refusal's message; `/proc/locks` is asked when the file is still empty.
*/

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The name of the lock file in the index directory.
pub const FILE: &str = "lock";

/// The lock on an index directory; dropped (closed) when the worker ends.
#[derive(Debug)]
pub struct IndexLock {
    file: File,
}

/// Why [`take`] did not get the lock.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it: its pid, when it could be found.
    Held { dir: PathBuf, pid: Option<i32> },
    /// The lock file could not be opened or locked.
    Io(String),
}

impl IndexLock {
    /// Records this process's pid in the lock file (again after a fork to the
    /// background, so that it names the process that stays).
    pub fn note_pid(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        writeln!(self.file, "{}", std::process::id())
    }
}

/// Takes the lock of index directory `dir` (already made and checked private), or says
/// who holds it. A lock file made here by root is given to `owner` (the `uid`/`gid` the
/// worker drops to), who may start the next worker without root.
pub fn take(dir: &Path, owner: (Option<u32>, Option<u32>)) -> Result<IndexLock, LockError> {
    let path = dir.join(FILE);
    let fail = |e: io::Error| LockError::Io(format!("index-dir lock {}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(fail)?;
    let md = file.metadata().map_err(fail)?;
    if !md.is_file() {
        return Err(LockError::Io(format!(
            "index-dir lock {}: not a regular file",
            path.display()
        )));
    }
    // libc's flock, not nix's `Flock`: that one unlocks (LOCK_UN) when dropped, and the
    // lock belongs to the open file the process forked to the background shares with
    // its parent, which exits after the fork: an unlock there would free the directory
    // under the worker that stays. Closing a descriptor leaves the lock to the other.
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                pid: holder(&file, &md),
            });
        }
        return Err(fail(e));
    }
    if nix::unistd::geteuid().is_root() && (owner.0.is_some() || owner.1.is_some()) {
        nix::unistd::fchown(
            file.as_raw_fd(),
            owner.0.map(nix::unistd::Uid::from_raw),
            owner.1.map(nix::unistd::Gid::from_raw),
        )
        .map_err(|e| fail(e.into()))?;
    }
    let mut lock = IndexLock { file };
    lock.note_pid().map_err(fail)?;
    Ok(lock)
}

/// The pid written in the lock file; else the one `/proc/locks` gives for its inode.
fn holder(mut file: &File, md: &std::fs::Metadata) -> Option<i32> {
    let mut text = String::new();
    if file.read_to_string(&mut text).is_ok() {
        if let Ok(pid) = text.trim().parse::<i32>() {
            return Some(pid);
        }
    }
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let (major, minor) = (libc::major(md.dev()), libc::minor(md.dev()));
    let id = format!("{major:02x}:{minor:02x}:{}", md.ino());
    locks.lines().find_map(|l| {
        // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder_and_is_free_once_it_is_dropped() {
        let t = tempfile::tempdir().unwrap();
        let first = take(t.path(), (None, None)).unwrap();
        match take(t.path(), (None, None)) {
            Err(LockError::Held { dir, pid }) => {
                assert_eq!(dir, t.path());
                assert_eq!(pid, Some(std::process::id() as i32));
            }
            other => panic!("{other:?}"),
        }
        let md = std::fs::metadata(t.path().join(FILE)).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        drop(first);
        take(t.path(), (None, None)).unwrap();
    }

    #[test]
    fn proc_locks_names_the_holder_of_an_empty_lock_file() {
        let t = tempfile::tempdir().unwrap();
        let first = take(t.path(), (None, None)).unwrap();
        first.file.set_len(0).unwrap();
        let f = File::open(t.path().join(FILE)).unwrap();
        let md = f.metadata().unwrap();
        assert_eq!(holder(&f, &md), Some(std::process::id() as i32));
    }

    #[test]
    fn a_symlink_in_place_of_the_lock_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.path().join(FILE)).unwrap();
        assert!(matches!(
            take(t.path(), (None, None)),
            Err(LockError::Io(_))
        ));
    }
}
