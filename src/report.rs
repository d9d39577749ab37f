/*!
The worker's reports to its supervisor: one JSON object per line on the file descriptor
named by `CLSYNC_REPORT_FD` (set by clsync-manager, absent otherwise).

A separate descriptor rather than standard output, because the sync handler inherits
standard output and its lines would mix with ours. Reports are the worker's state object
(the one SIGUSR1 logs), sent when the tree is watched, when it becomes ready and after
every sync, so the manager's `status` and metrics never have to ask. Writing never
blocks the worker for long: the descriptor is non-blocking and a report that does not fit
is dropped (the next one carries the whole state again); a closed pipe ends reporting.
*/

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;

/// The environment variable that names the report descriptor.
pub const REPORT_FD_ENV: &str = "CLSYNC_REPORT_FD";

pub struct Reporter(Option<File>);

impl Reporter {
    /// The reporter of `CLSYNC_REPORT_FD`, or one that reports nothing. The variable is
    /// removed so that handlers do not inherit it.
    pub fn from_env() -> Reporter {
        let fd = std::env::var(REPORT_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|fd| *fd > 2);
        std::env::remove_var(REPORT_FD_ENV);
        let Some(fd) = fd else {
            return Reporter(None);
        };
        // The descriptor must be open, and must not leak into handlers.
        // SAFETY: fcntl on a plain integer descriptor has no memory effects.
        let ok = unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == 0
                && libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) == 0
        };
        if !ok {
            return Reporter(None);
        }
        // SAFETY: the descriptor was handed to this process to own.
        Reporter(Some(unsafe { File::from_raw_fd(fd) }))
    }

    /// A reporter that reports nothing.
    pub fn none() -> Reporter {
        Reporter(None)
    }

    /// Sends one JSON object (without a newline).
    pub fn send(&mut self, json: &str) {
        let Some(f) = &mut self.0 else { return };
        let mut line = Vec::with_capacity(json.len() + 1);
        line.extend_from_slice(json.as_bytes());
        line.push(b'\n');
        match f.write(&line) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.0 = None,
        }
    }
}
