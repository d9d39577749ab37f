/*!
One worker per instance, whatever happens to the manager: a lock held by the worker.

Why: the state file records the pids of running workers, and a new manager waits for a
live worker of the old one before it starts that instance again. But a record is written
after the fact: a manager killed between starting a worker and saving its pid, a state
file lost or edited, a pid reused — each would let two workers sync one instance at once,
both deleting at the destination what the other has not sent yet. So each instance has a
lock file (`STATE_DIR/instances/NAME.lock`). The manager takes it (`flock`) before it
starts the worker and hands the open descriptor to the worker, which keeps it until it
exits (the manager closes its own copy at once). `flock` locks belong to the open file,
not to a process, so the lock lives exactly as long as the worker does — through the
manager's death — and no other worker of that instance can start while it lives: a new
manager finds the lock taken and waits (`waiting for old worker PID`).

The worker marks the descriptor close-on-exec ([`Inherited::adopt`]), so a hook or
handler it starts, which may outlive it, does not keep the instance locked.
*/

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The environment variable that names the inherited lock descriptor.
pub const LOCK_FD_ENV: &str = "CLSYNC_INSTANCE_LOCK_FD";

/// The lowest descriptor number the lock is moved to, clear of the worker's 0–3.
const LOCK_FD_MIN: i32 = 10;

fn path(state_dir: &Path, name: &str) -> Result<PathBuf, String> {
    if name.is_empty()
        || name.starts_with('.')
        || name.bytes().any(|b| b == b'/' || b.is_ascii_control())
    {
        return Err(format!("instance name {name:?} cannot name a lock file"));
    }
    Ok(state_dir.join("instances").join(format!("{name}.lock")))
}

/// What [`take`] found.
pub enum Taken {
    /// The lock is ours: hand it to the worker with [`Lock::raw_fd`].
    Free(Lock),
    /// A worker holds it; its pid as it wrote it (0 if unknown).
    Held(i32),
}

/// An instance lock held by the manager until the worker it starts has inherited it.
pub struct Lock(File);

impl Lock {
    /// The descriptor to leave open across `exec` (close-on-exec is set in the manager).
    #[must_use]
    pub fn raw_fd(&self) -> i32 {
        self.0.as_raw_fd()
    }

    /// Records the worker's pid in the file (for `status` and a later manager), then
    /// closes the manager's copy: the worker's keeps the lock.
    pub fn hand_over(mut self, pid: i32) {
        let _ = self.0.set_len(0);
        let _ = self.0.rewind();
        let _ = writeln!(self.0, "{pid}");
    }
}

/// Tries to take the lock of instance `name` in `state_dir`.
pub fn take(state_dir: &Path, name: &str) -> Result<Taken, String> {
    let path = path(state_dir, name)?;
    let dir = path.parent().expect("joined");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    use std::os::unix::fs::DirBuilderExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Out of the way of the descriptors the worker gets by number (0-3).
    // SAFETY: fcntl on a descriptor we own; the new one is owned by the File below.
    let fd = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, LOCK_FD_MIN) };
    if fd < 0 {
        return Err(format!(
            "{}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    drop(f);
    // SAFETY: `fd` was just returned by fcntl and nothing else owns it.
    let mut f = unsafe { File::from_raw_fd(fd) };
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        return Ok(Taken::Held(text.trim().parse().unwrap_or(0)));
    }
    Ok(Taken::Free(Lock(f)))
}

/// The worker's side: the inherited descriptor named by [`LOCK_FD_ENV`].
pub struct Inherited;

impl Inherited {
    /// Marks the inherited lock close-on-exec (it stays open, and locked, until the
    /// worker exits) and removes the variable so children do not see it.
    pub fn adopt() {
        let fd = std::env::var(LOCK_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|fd| *fd > 2);
        std::env::remove_var(LOCK_FD_ENV);
        if let Some(fd) = fd {
            // SAFETY: fcntl on a plain integer descriptor has no memory effects; a
            // descriptor that is not open fails with EBADF and is left alone.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}
