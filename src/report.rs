/*!
The worker's reports to its supervisor: one JSON object per line on the file descriptor
named by `CLSYNC_REPORT_FD` (set by clsync-manager, absent otherwise).

A separate descriptor rather than standard output, because the sync handler inherits
standard output and its lines would mix with ours. Reports are the worker's state object
(the one SIGUSR1 logs), sent when the tree is watched, when it becomes ready and after
every sync, so the manager's `status` and metrics never have to ask. Writing never
blocks the worker for long: the descriptor is non-blocking and a report that does not fit
is dropped (the next one carries the whole state again); a closed pipe ends reporting.

[`Report`] is the one type of a line, written here and read by the manager
(`manager/instance.rs`), so the two sides cannot disagree on a key. It has two kinds: the
whole [`State`], and a [`Step`] of start-up or of a long sync (a few fields, which the
manager lays over the last state it has: [`Latest`]).
*/

use serde::{Deserialize, Serialize};

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;

/// The environment variable that names the report descriptor.
pub const REPORT_FD_ENV: &str = "CLSYNC_REPORT_FD";

pub struct Reporter(Option<File>);

impl Reporter {
    /// The reporter of `CLSYNC_REPORT_FD`, or one that reports nothing. The variable is
    /// removed so that handlers do not inherit it.
    #[must_use]
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

    /// Sends one report, as a line.
    pub fn send(&mut self, report: &Report) {
        let Some(f) = &mut self.0 else { return };
        let json = serde_json::to_string(report).unwrap_or_default();
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

/// What the worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Setting its watches (a large tree takes a while).
    Watching,
    /// Watching; the initial sync runs.
    Initsync,
    Running,
    /// The final sync of a stop runs.
    Stopping,
    /// A second stop signal aborts the final sync.
    Aborting,
    /// A failover pair's split-brain: the worker exits and waits for an operator.
    SplitBrain,
}

/// A destination's health in [`Destination::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    /// Its last sync failed.
    Failing,
    /// It cannot be reached (an ssh destination whose host is down).
    Unreachable,
}

impl Health {
    /// As written in the report and shown by `clsync-manager status`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Failing => "failing",
            Health::Unreachable => "unreachable",
        }
    }
}

/// One line on the report descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Report {
    /// The whole state: when the worker becomes ready and after every sync.
    State(State),
    /// A few fields: while the watches are set, at the initial sync, a long sync's
    /// progress, a split-brain.
    Step(Step),
}

/// The worker's state object, the one SIGUSR1 logs and `status` shows. The fields are in
/// alphabetical order, the order of the JSON object this type replaced, so that the
/// logged line is the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The most consecutive failures of any destination.
    pub consecutive_failures: u32,
    pub destinations: Vec<Destination>,
    /// Changed paths seen.
    pub events: u64,
    pub iterations: u32,
    pub last_error: Option<String>,
    pub last_sync_unix: Option<f64>,
    pub phase: Phase,
    /// While a long start-up runs: its last progress line (src/worker/progress.rs);
    /// absent otherwise, and in the reports of a worker before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The most paths waiting for any destination.
    pub queued: usize,
    pub ready: bool,
    pub running_syncs: usize,
    /// The worker's confinement (absent in the reports of a worker before this field).
    #[serde(default)]
    pub sandbox: Option<Sandbox>,
    pub standby: bool,
    pub sync_failures: u64,
    pub syncing: bool,
    pub syncs: u64,
    pub unwatched_dirs: usize,
    pub uptime_s: f64,
    pub watches: usize,
}

/// The worker's confinement in [`State::sandbox`]: `{"enabled":false}` (`sandbox =
/// false`), or enabled with what the kernel enforced ([`crate::sandbox::Enforced`]):
/// `landlock` (`full`, `partial`, `none`), `seccomp` (how many calls are refused) and
/// `no_network` (sockets other than Unix ones refused). An object, so that what a later
/// confinement adds is one more key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    pub enabled: bool,
    #[serde(flatten)]
    pub enforced: Option<crate::sandbox::Enforced>,
}

impl Sandbox {
    /// Not confined (`sandbox = false`).
    pub const OFF: Sandbox = Sandbox {
        enabled: false,
        enforced: None,
    };

    /// One word for the status table: `off`, or Landlock's `full`, `partial`, `none`.
    #[must_use]
    pub fn word(&self) -> &'static str {
        match &self.enforced {
            _ if !self.enabled => "off",
            Some(e) => e.landlock,
            None => "on",
        }
    }
}

/// One destination in [`State::destinations`] (fields in alphabetical order, as above).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub consecutive_failures: u32,
    pub destination: String,
    /// Seconds since its oldest path waiting was seen.
    pub lag_s: f64,
    pub last_error: Option<String>,
    pub last_sync_unix: Option<f64>,
    pub queued: usize,
    pub state: Health,
}

/// A report of a few fields; those absent say nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watches: Option<usize>,
    /// A long sync's progress: bytes, percent, rate, time left, files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What the manager knows of a worker: the last [`State`] with the [`Step`]s reported since
/// laid over it (a step changes the fields it carries and keeps the others). Empty until
/// the first report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latest {
    pub phase: Option<Phase>,
    pub ready: bool,
    pub watches: Option<usize>,
    pub queued: Option<usize>,
    pub events: Option<u64>,
    pub syncs: Option<u64>,
    pub sync_failures: Option<u64>,
    pub last_sync_unix: Option<f64>,
    pub last_error: Option<String>,
    pub destinations: Option<Vec<Destination>>,
    pub progress: Option<String>,
    pub sandbox: Option<Sandbox>,
}

impl Latest {
    /// Takes in one report.
    pub fn update(&mut self, report: Report) {
        match report {
            Report::State(s) => {
                self.phase = Some(s.phase);
                self.ready = s.ready;
                self.watches = Some(s.watches);
                self.queued = Some(s.queued);
                self.events = Some(s.events);
                self.syncs = Some(s.syncs);
                self.sync_failures = Some(s.sync_failures);
                self.last_sync_unix = s.last_sync_unix;
                self.last_error = s.last_error;
                self.destinations = Some(s.destinations);
                self.sandbox = s.sandbox;
            }
            Report::Step(s) => {
                self.phase = Some(s.phase);
                if s.watches.is_some() {
                    self.watches = s.watches;
                }
                if s.progress.is_some() {
                    self.progress = s.progress;
                }
                if s.last_error.is_some() {
                    self.last_error = s.last_error;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            consecutive_failures: 1,
            destinations: vec![Destination {
                consecutive_failures: 1,
                destination: "host:/srv".into(),
                lag_s: 2.5,
                last_error: Some("rsync exited with 23".into()),
                last_sync_unix: None,
                queued: 3,
                state: Health::Failing,
            }],
            events: 7,
            iterations: 4,
            last_error: None,
            last_sync_unix: Some(1_700_000_000.125),
            phase: Phase::Running,
            progress: None,
            queued: 3,
            ready: true,
            running_syncs: 0,
            sandbox: Some(Sandbox {
                enabled: true,
                enforced: Some(crate::sandbox::Enforced {
                    landlock: "full",
                    seccomp: 47,
                    no_network: true,
                    fallback_filter: true,
                    capabilities: Some(vec!["CAP_CHOWN".into(), "CAP_KILL".into()]),
                    namespaces: vec!["net".into(), "ipc".into(), "uts".into()],
                }),
            }),
            standby: false,
            sync_failures: 1,
            syncing: false,
            syncs: 2,
            unwatched_dirs: 0,
            uptime_s: 12.0,
            watches: 5,
        }
    }

    /// The lines are those the worker wrote before the type existed (taken from its
    /// `json!` and `format!` calls), byte for byte.
    #[test]
    fn report_lines_keep_their_wire_form() {
        let line = serde_json::to_string(&Report::State(state())).unwrap();
        assert_eq!(
            line,
            r#"{"consecutive_failures":1,"destinations":[{"consecutive_failures":1,"destination":"host:/srv","lag_s":2.5,"last_error":"rsync exited with 23","last_sync_unix":null,"queued":3,"state":"failing"}],"events":7,"iterations":4,"last_error":null,"last_sync_unix":1700000000.125,"phase":"running","queued":3,"ready":true,"running_syncs":0,"sandbox":{"enabled":true,"landlock":"full","seccomp":47,"no_network":true,"fallback_filter":true,"capabilities":["CAP_CHOWN","CAP_KILL"],"namespaces":["net","ipc","uts"]},"standby":false,"sync_failures":1,"syncing":false,"syncs":2,"unwatched_dirs":0,"uptime_s":12.0,"watches":5}"#
        );
        let step = |phase, watches, progress: Option<&str>| {
            serde_json::to_string(&Report::Step(Step {
                phase,
                watches,
                progress: progress.map(str::to_string),
                last_error: None,
            }))
            .unwrap()
        };
        assert_eq!(
            step(Phase::Watching, Some(10), None),
            r#"{"phase":"watching","watches":10}"#
        );
        assert_eq!(
            step(Phase::Initsync, Some(10), Some("1 MB")),
            r#"{"phase":"initsync","watches":10,"progress":"1 MB"}"#
        );
    }

    /// Every kind reads back as what was written: a step is never taken for a state (nor a
    /// state for a step, which would lose its counters).
    #[test]
    fn reports_read_back_as_their_kind() {
        let s = Report::State(state());
        let back: Report = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let split = Report::Step(Step {
            phase: Phase::SplitBrain,
            watches: None,
            progress: None,
            last_error: Some("both sides changed".into()),
        });
        let line = r#"{"last_error":"both sides changed","phase":"split-brain"}"#;
        assert_eq!(serde_json::from_str::<Report>(line).unwrap(), split);
        assert!(serde_json::from_str::<Report>(r#"{"phase":"dancing"}"#).is_err());
        assert!(serde_json::from_str::<Report>("not json").is_err());
        // The sandbox: off is an object too; an unknown Landlock word is no state.
        let mut off = state();
        off.sandbox = Some(Sandbox::OFF);
        let line = serde_json::to_string(&Report::State(off.clone())).unwrap();
        assert!(line.contains(r#""sandbox":{"enabled":false},"#), "{line}");
        assert_eq!(
            serde_json::from_str::<Report>(&line).unwrap(),
            Report::State(off)
        );
        let odd = serde_json::to_string(&Report::State(state()))
            .unwrap()
            .replace(r#""landlock":"full""#, r#""landlock":"most""#);
        assert!(!matches!(
            serde_json::from_str::<Report>(&odd),
            Ok(Report::State(State {
                sandbox: Some(Sandbox {
                    enforced: Some(_),
                    ..
                }),
                ..
            }))
        ));
        assert_eq!(
            [Sandbox::OFF.word(), state().sandbox.unwrap().word()],
            ["off", "full"]
        );
        for h in [Health::Ok, Health::Failing, Health::Unreachable] {
            assert_eq!(serde_json::to_value(h).unwrap(), h.name());
        }
    }

    /// A step changes only what it carries; a state replaces every field it has (a null
    /// error clears the one a step set) and keeps the progress of the steps.
    #[test]
    fn steps_are_laid_over_the_last_state() {
        let mut l = Latest::default();
        l.update(Report::Step(Step {
            phase: Phase::Watching,
            watches: Some(3),
            progress: None,
            last_error: None,
        }));
        assert_eq!(
            (l.phase, l.watches, l.events),
            (Some(Phase::Watching), Some(3), None)
        );
        l.update(Report::Step(Step {
            phase: Phase::Initsync,
            watches: None,
            progress: Some("40%".into()),
            last_error: Some("x".into()),
        }));
        assert_eq!((l.phase, l.watches), (Some(Phase::Initsync), Some(3)));
        assert!(!l.ready);
        l.update(Report::State(state()));
        assert_eq!(l.phase, Some(Phase::Running));
        assert!(l.ready);
        assert_eq!((l.watches, l.events, l.syncs), (Some(5), Some(7), Some(2)));
        assert_eq!(l.last_error, None);
        assert_eq!(l.progress.as_deref(), Some("40%"));
        assert_eq!(l.destinations.as_ref().map(Vec::len), Some(1));
        assert_eq!(l.sandbox.as_ref().map(Sandbox::word), Some("full"));
        l.update(Report::Step(Step {
            phase: Phase::Running,
            watches: Some(6),
            progress: Some("90%".into()),
            last_error: None,
        }));
        assert_eq!((l.watches, l.events), (Some(6), Some(7)));
        assert_eq!(l.progress.as_deref(), Some("90%"));
        assert!(l.ready);
    }
}
