/*!
Exit codes and the reasons a start is refused. The table of exit codes in docs/cli.md is
[`ExitCode`]: every code with the words its row opens with, and every kind of
[`StartError`] with the words that name it in the row of its code (tests/docs.rs holds
the page to both). Kept in one place so a new refusal cannot get a code the page does
not know.
*/

use std::io;
use std::path::PathBuf;

/// The process exit codes of `clsync` (besides the handler's own code, passed through
/// when the worker gives up after `--retries` failed syncs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Done = 0,
    Failure = 1,
    Usage = 2,
    Path = 3,
    Handler = 4,
    Watch = 5,
    SplitBrain = 7,
}

impl ExitCode {
    /// Every code, in the order of the table.
    pub const ALL: [ExitCode; 7] = [
        ExitCode::Done,
        ExitCode::Failure,
        ExitCode::Usage,
        ExitCode::Path,
        ExitCode::Handler,
        ExitCode::Watch,
        ExitCode::SplitBrain,
    ];

    /// The number the process exits with.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// What the code means: the words its row in docs/cli.md opens with.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Done => "stopped on request after the final sync",
            ExitCode::Failure => "runtime failure",
            ExitCode::Usage => "invalid command line or option value",
            ExitCode::Path => "bad source or destination",
            ExitCode::Handler => "sync handler (rsync) not found or not executable",
            ExitCode::Watch => "the tree cannot be watched",
            ExitCode::SplitBrain => "a failover pair's split-brain that a person must resolve",
        }
    }
}

/// Why the worker could not start (or, for [`System`](StartError::System), could not go
/// on waiting). Each kind has its exit code ([`StartError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The command line, a profile or a value in it.
    #[error("{0}")]
    Usage(String),
    /// The source or a destination.
    #[error("{0}")]
    Path(String),
    /// Another worker holds the lock of the index directory (`index-dir`).
    #[error("index-dir {} is in use by another worker (pid {}); not starting a second one on the same index: stop that worker, or give this one its own index-dir", dir.display(), pid.map_or("unknown".into(), |p| p.to_string()))]
    IndexBusy { dir: PathBuf, pid: Option<i32> },
    /// The sync handler or the shared object.
    #[error("{0}")]
    Handler(String),
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    /// The current directory, to make a relative `lists-dir` absolute.
    #[error("cannot read the current directory: {0}")]
    CurrentDir(#[source] io::Error),
    /// A private directory of the worker (`what`: "list files", "ssh").
    #[error("cannot create a directory for {what}: {source}")]
    MakeDir {
        what: &'static str,
        source: io::Error,
    },
    /// The private lists directory could not be handed to the users that need it.
    #[error("lists directory {}: {source}", path.display())]
    ListsDir {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The pid file names a live process other than this one.
    #[error("pid file {}: another process is running as pid {pid}; not starting a second instance", path.display())]
    PidFileLive { path: PathBuf, pid: i32 },
    /// The pid file could not be written.
    #[error("pid file {}: {source}", path.display())]
    PidFile { path: PathBuf, source: io::Error },
    /// The failover pair check failed.
    #[error("pair check: {0}")]
    Pair(String),
    /// `--only-initialsync` in a failover pair whose peer cannot be reached.
    #[error("pair check: the peer cannot be reached")]
    PeerUnreachable,
    /// The fork to the background failed.
    #[error("cannot go to the background: {0}")]
    Background(#[source] nix::Error),
    /// `uid` / `gid` could not be taken (`what`: the call that failed).
    #[error("cannot drop privileges ({what}): {source}")]
    Privileges {
        what: &'static str,
        source: nix::Error,
    },
    /// The sandbox could not be prepared or applied (`sandbox = true`).
    #[error("{0}")]
    Sandbox(String),
    /// A resource of the system the loop needs (`what`: "epoll", "waker", "signals",
    /// "event reader thread").
    #[error("{what}: {source}")]
    System {
        what: &'static str,
        source: io::Error,
    },
}

/// The kinds of [`StartError`], to list them with their exit codes and their words in
/// docs/cli.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Usage,
    IndexBusy,
    Path,
    Handler,
    Watch,
    CurrentDir,
    MakeDir,
    ListsDir,
    PidFileLive,
    PidFile,
    Pair,
    PeerUnreachable,
    Background,
    Privileges,
    Sandbox,
    System,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 16] = [
        Kind::Usage,
        Kind::IndexBusy,
        Kind::Path,
        Kind::Handler,
        Kind::Watch,
        Kind::CurrentDir,
        Kind::MakeDir,
        Kind::ListsDir,
        Kind::PidFileLive,
        Kind::PidFile,
        Kind::Pair,
        Kind::PeerUnreachable,
        Kind::Background,
        Kind::Privileges,
        Kind::Sandbox,
        Kind::System,
    ];

    /// The documented exit code (docs/cli.md).
    pub fn exit_code(self) -> ExitCode {
        match self {
            Kind::Usage | Kind::IndexBusy => ExitCode::Usage,
            Kind::Path => ExitCode::Path,
            Kind::Handler => ExitCode::Handler,
            Kind::Watch => ExitCode::Watch,
            Kind::CurrentDir
            | Kind::MakeDir
            | Kind::ListsDir
            | Kind::PidFileLive
            | Kind::PidFile
            | Kind::Pair
            | Kind::PeerUnreachable
            | Kind::Background
            | Kind::Privileges
            | Kind::Sandbox
            | Kind::System => ExitCode::Failure,
        }
    }

    /// The words that name this kind in the row of its exit code in docs/cli.md.
    pub fn documented_as(self) -> &'static str {
        match self {
            Kind::Usage => "invalid command line or option value",
            Kind::IndexBusy => "the index directory is in use by another worker",
            Kind::Path => "bad source or destination",
            Kind::Handler => "sync handler (rsync) not found or not executable",
            Kind::Watch => "the tree cannot be watched",
            Kind::CurrentDir => "the current directory cannot be read",
            Kind::MakeDir => "a directory for the list files or for ssh cannot be made",
            Kind::ListsDir => {
                "the lists directory cannot be given to `--uid` or `--sync-handler-uid`"
            }
            Kind::PidFileLive => "a live pid in the pid file",
            Kind::PidFile => "the pid file cannot be written",
            Kind::Pair => "a failover pair's check failed",
            Kind::PeerUnreachable => "its peer cannot be reached with `--only-initialsync`",
            Kind::Background => "cannot go to the background",
            Kind::Privileges => "privileges could not be dropped",
            Kind::Sandbox => "the sandbox could not be applied",
            Kind::System => "the system refused a resource (epoll, signals, a thread)",
        }
    }
}

impl StartError {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            StartError::Usage(_) => Kind::Usage,
            StartError::IndexBusy { .. } => Kind::IndexBusy,
            StartError::Path(_) => Kind::Path,
            StartError::Handler(_) => Kind::Handler,
            StartError::Watch(_) => Kind::Watch,
            StartError::CurrentDir(_) => Kind::CurrentDir,
            StartError::MakeDir { .. } => Kind::MakeDir,
            StartError::ListsDir { .. } => Kind::ListsDir,
            StartError::PidFileLive { .. } => Kind::PidFileLive,
            StartError::PidFile { .. } => Kind::PidFile,
            StartError::Pair(_) => Kind::Pair,
            StartError::PeerUnreachable => Kind::PeerUnreachable,
            StartError::Background(_) => Kind::Background,
            StartError::Privileges { .. } => Kind::Privileges,
            StartError::Sandbox(_) => Kind::Sandbox,
            StartError::System { .. } => Kind::System,
        }
    }

    /// The documented exit code (docs/cli.md).
    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code().code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind says what the worker said before it had kinds, and exits as before: 2 to
    /// 5 for the four refusals, 1 for every other start-up step.
    #[test]
    fn kinds_keep_their_messages_and_exit_codes() {
        let io = || io::Error::from_raw_os_error(libc::EACCES);
        let cases: Vec<(StartError, &str, i32)> = vec![
            (StartError::Usage("u".into()), "u", 2),
            (
                StartError::IndexBusy {
                    dir: "/i".into(),
                    pid: Some(7),
                },
                "index-dir /i is in use by another worker (pid 7); not starting a second one on the same index: stop that worker, or give this one its own index-dir",
                2,
            ),
            (StartError::Path("p".into()), "p", 3),
            (StartError::Handler("h".into()), "h", 4),
            (
                StartError::CurrentDir(io()),
                "cannot read the current directory: Permission denied (os error 13)",
                1,
            ),
            (
                StartError::MakeDir {
                    what: "ssh",
                    source: io(),
                },
                "cannot create a directory for ssh: Permission denied (os error 13)",
                1,
            ),
            (
                StartError::ListsDir {
                    path: "/tmp/l".into(),
                    source: nix::Error::EPERM.into(),
                },
                "lists directory /tmp/l: EPERM: Operation not permitted",
                1,
            ),
            (
                StartError::PidFileLive {
                    path: "/run/c.pid".into(),
                    pid: 42,
                },
                "pid file /run/c.pid: another process is running as pid 42; not starting a second instance",
                1,
            ),
            (
                StartError::PidFile {
                    path: "/run/c.pid".into(),
                    source: io(),
                },
                "pid file /run/c.pid: Permission denied (os error 13)",
                1,
            ),
            (StartError::Pair("x".into()), "pair check: x", 1),
            (
                StartError::PeerUnreachable,
                "pair check: the peer cannot be reached",
                1,
            ),
            (
                StartError::Background(nix::Error::EAGAIN),
                "cannot go to the background: EAGAIN: Try again",
                1,
            ),
            (
                StartError::Privileges {
                    what: "setuid",
                    source: nix::Error::EPERM,
                },
                "cannot drop privileges (setuid): EPERM: Operation not permitted",
                1,
            ),
            (
                StartError::System {
                    what: "epoll",
                    source: io(),
                },
                "epoll: Permission denied (os error 13)",
                1,
            ),
        ];
        for (e, message, code) in cases {
            assert_eq!(e.to_string(), message);
            assert_eq!(e.exit_code(), code, "{message}");
        }
    }
}
