/*!
One supervised instance and its worker's life: start (fork+exec with the instance lock,
the report pipe and a parent-death signal), stop (TERM, escalated by the loop), restart,
reap (exit status → the restart policy of [`super::life`]), and the worker's three pipes
(output logged by line and kept for `logs`; reports that update the state).

Apart from the loop so that what happens to one worker reads in one place.
*/

use super::daemon::Daemon;
use super::instance_lock::{self, Taken};
use super::life::{ended_with, Exit, Life, Next, Policy};
use super::protocol::InstanceStatus;
use crate::report::{Latest, Phase, Report};
use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Lines of each worker's output kept for `logs`.
const LOG_LINES: usize = 1000;

/// Between a worker's second TERM (abort the final sync) and KILL.
pub(super) const ABORT_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Stopped,
    Starting,
    Running,
    Stopping,
    Backoff,
    Failed,
    /// A worker of a previous manager still runs for this instance.
    Waiting(i32),
    /// A failover pair's split-brain waits for `resolve`.
    SplitBrain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
    Report,
}

/// One of a worker's pipes, with the start of a line not complete yet.
struct Pipe {
    pub(super) file: File,
    pub(super) kind: Stream,
    pub(super) partial: Vec<u8>,
}

pub(super) struct Worker {
    pub(super) child: Child,
    pub(super) pid: i32,
    pub(super) started: Instant,
    pipes: HashMap<Token, Pipe>,
}

pub(super) struct Instance {
    pub(super) name: String,
    pub(super) profile: String,
    /// Started by `start` (templates, or profiles without autostart).
    pub(super) on_demand: bool,
    /// The resolved profile, to notice changes on reload.
    pub(super) fingerprint: String,
    pub(super) life: Life,
    pub(super) state: State,
    pub(super) worker: Option<Worker>,
    pub(super) restart_at: Option<Instant>,
    /// When the stop escalates next, and whether the second TERM was sent.
    pub(super) stop_at: Option<(Instant, bool)>,
    /// Start again once stopped (`restart`, a changed profile).
    pub(super) then_start: bool,
    /// Forget the instance once stopped (its profile is gone).
    pub(super) then_remove: bool,
    /// The next start resolves a split-brain keeping this side (`local` or `peer`).
    pub(super) resolve: Option<String>,
    pub(super) last_error: Option<String>,
    /// What the worker reported (empty until its first report).
    pub(super) report: Latest,
    /// The instance's last successful sync (Unix time): the latest any of its workers
    /// reported, kept when a new worker starts (which has not synced yet).
    pub(super) last_sync_unix: Option<f64>,
    /// How and when its last worker ended (none while the first one runs).
    pub(super) ended: Option<Ended>,
    pub(super) logs: VecDeque<String>,
}

/// How and when a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Ended {
    pub(super) at_unix: f64,
    pub(super) exit: Exit,
}

/// What is kept of an instance once it is stopped and forgotten (`stop`, a removed
/// profile): its last runs' log, how the last one ended, its last sync. `logs NAME` shows
/// it; a start of the instance takes it up again. Also what a manager leaves the next one
/// of each instance (state_file.rs).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct LastRun {
    pub(super) logs: VecDeque<String>,
    pub(super) ended: Option<Ended>,
    pub(super) last_sync_unix: Option<f64>,
}

/// Stopped instances whose last run is kept, at most: the oldest stop is forgotten first.
/// With [`LOG_LINES`] lines each, the log of a busy instance (~100 bytes a line) is ~100 KB:
/// at most ~6 MB for all of them.
pub(super) const KEPT_STOPPED: usize = 64;

/// The last runs of stopped instances, bounded by [`KEPT_STOPPED`].
#[derive(Default)]
pub(super) struct Stopped {
    runs: HashMap<String, LastRun>,
    /// Names, the oldest stop first.
    order: VecDeque<String>,
}

impl Stopped {
    /// The kept runs, the oldest stop first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &LastRun)> {
        (self.order.iter()).filter_map(|n| self.runs.get(n).map(|r| (n, r)))
    }

    pub(super) fn keep(&mut self, name: &str, run: LastRun) {
        if self.runs.insert(name.to_string(), run).is_some() {
            self.order.retain(|n| n != name);
        }
        self.order.push_back(name.to_string());
        while self.order.len() > KEPT_STOPPED {
            if let Some(old) = self.order.pop_front() {
                self.runs.remove(&old);
            }
        }
    }

    pub(super) fn take(&mut self, name: &str) -> Option<LastRun> {
        let run = self.runs.remove(name)?;
        self.order.retain(|n| n != name);
        Some(run)
    }

    pub(super) fn get(&self, name: &str) -> Option<&LastRun> {
        self.runs.get(name)
    }
}

/// Now as Unix time.
pub(super) fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Instance {
    pub(super) fn new(name: &str, profile: &str, fingerprint: String, policy: Policy) -> Instance {
        Instance {
            name: name.to_string(),
            profile: profile.to_string(),
            on_demand: false,
            fingerprint,
            life: Life::new(policy),
            state: State::Stopped,
            worker: None,
            restart_at: None,
            stop_at: None,
            then_start: false,
            then_remove: false,
            resolve: None,
            last_error: None,
            report: Latest::default(),
            last_sync_unix: None,
            ended: None,
            logs: VecDeque::new(),
        }
    }

    /// What is kept of it once it is forgotten.
    pub(super) fn last_run(&mut self) -> LastRun {
        LastRun {
            logs: std::mem::take(&mut self.logs),
            ended: self.ended,
            last_sync_unix: self.last_sync_unix,
        }
    }

    pub(super) fn state_name(&self) -> String {
        match self.state {
            State::Stopped => "stopped".into(),
            State::Starting => match self.report.phase {
                Some(Phase::Initsync) => "initsync".into(),
                _ => "starting".into(),
            },
            State::Running => "running".into(),
            State::Stopping => "stopping".into(),
            State::Backoff => "backoff".into(),
            State::Failed => "failed".into(),
            State::Waiting(pid) => format!("waiting for old worker {pid}"),
            State::SplitBrain => "split-brain".into(),
        }
    }

    pub(super) fn status(&self) -> InstanceStatus {
        let r = &self.report;
        let num = |v: Option<usize>| v.map(|v| v as u64);
        InstanceStatus {
            name: self.name.clone(),
            profile: self.profile.clone(),
            state: self.state_name(),
            pid: self.worker.as_ref().map(|w| w.pid),
            uptime_s: self
                .worker
                .as_ref()
                .map(|w| w.started.elapsed().as_secs_f64()),
            restarts: self.life.restarts,
            last_sync_unix: self.last_sync_unix,
            queued: num(r.queued),
            events: r.events,
            syncs: r.syncs,
            sync_failures: r.sync_failures,
            watches: num(r.watches),
            last_error: self.last_error.clone().or_else(|| r.last_error.clone()),
            on_demand: self.on_demand,
            destinations: r.destinations.clone(),
            sandbox: r.sandbox.clone(),
            progress: r
                .progress
                .clone()
                .filter(|_| matches!(self.state, State::Starting)),
        }
    }

    fn log_line(&mut self, line: String) {
        if self.logs.len() >= LOG_LINES {
            self.logs.pop_front();
        }
        self.logs.push_back(line);
    }
}

impl Daemon {
    /// Stops `name` and forgets it once it is gone.
    pub(super) fn remove(&mut self, name: &str) {
        let Some(i) = self.instances.get_mut(name) else {
            return;
        };
        i.then_remove = true;
        i.then_start = false;
        if i.worker.is_some() {
            self.stop(name);
        } else {
            self.forget(name);
        }
    }

    /// Forgets `name` (it has no worker), keeping its last run for `logs`.
    pub(super) fn forget(&mut self, name: &str) {
        if let Some(mut i) = self.instances.remove(name) {
            if !i.logs.is_empty() {
                self.stopped.keep(name, i.last_run());
            }
        }
    }

    /// Starts the worker of `name` now (or as soon as a previous manager's is gone).
    pub(super) fn start(&mut self, name: &str) {
        let Some(i) = self.instances.get_mut(name) else {
            return;
        };
        if i.worker.is_some() || matches!(i.state, State::Waiting(_)) {
            return;
        }
        i.restart_at = None;
        i.report = Latest::default();
        // Stopped before: its log and last sync go on.
        if let Some(last) = self.stopped.take(name) {
            let mut logs = last.logs;
            logs.append(&mut i.logs);
            i.logs = logs;
            while i.logs.len() > LOG_LINES {
                i.logs.pop_front();
            }
            i.last_sync_unix = i.last_sync_unix.or(last.last_sync_unix);
            i.ended = i.ended.or(last.ended);
        }
        let lock = match instance_lock::take(&self.opts.state_dir, name) {
            Ok(Taken::Free(lock)) => lock,
            Ok(Taken::Held(pid)) => {
                warn!("[{name}] a worker of this instance (pid {pid}) still holds its lock; waiting for it to exit");
                i.state = State::Waiting(pid);
                self.save();
                self.notify_status();
                return;
            }
            Err(e) => {
                error!("[{name}] cannot start the worker: {e}");
                i.state = State::Failed;
                i.last_error = Some(e);
                self.save();
                self.notify_status();
                return;
            }
        };
        match self.spawn(name, lock) {
            Ok(()) => {}
            Err(e) => {
                let i = self.instances.get_mut(name).expect("instance");
                error!("[{name}] cannot start the worker: {e}");
                i.state = State::Failed;
                i.last_error = Some(e);
            }
        }
        self.save();
        self.notify_status();
    }

    fn spawn(&mut self, name: &str, lock: instance_lock::Lock) -> Result<(), String> {
        // It runs as root: the strict modes, right before each start.
        crate::strict::check_program(&self.opts.clsync, "clsync binary")?;
        self.worker_fits()?;
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let w_fd = w.as_raw_fd();
        let parent = nix::unistd::getpid().as_raw();
        let lock_fd = lock.raw_fd();
        let mut cmd = Command::new(&self.opts.clsync);
        if let Some(keep) = self.instances.get_mut(name).and_then(|i| i.resolve.take()) {
            cmd.arg("--split-brain-keep").arg(keep);
        }
        if !crate::strict::config_enabled() {
            cmd.arg("--strict-modes=false");
        }
        cmd.arg("--profiles-dir")
            .arg(&self.opts.profiles_dir)
            .arg("--profile")
            .arg(name)
            .env(crate::report::REPORT_FD_ENV, "3")
            .env(instance_lock::LOCK_FD_ENV, lock_fd.to_string())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The manager died between fork and prctl: do not run orphaned.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                // The instance lock stays open in the worker (see instance_lock).
                if libc::fcntl(lock_fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if w_fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(w_fd, 3) != 3 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{}: {e}", self.opts.clsync.display()))?;
        drop(w);
        // A pid is at most PID_MAX_LIMIT (2^22): it fits an i32.
        #[allow(clippy::cast_possible_wrap)]
        let pid = child.id() as i32;
        lock.hand_over(pid);
        let out = child.stdout.take().map(|s| File::from(OwnedFd::from(s)));
        let err = child.stderr.take().map(|s| File::from(OwnedFd::from(s)));
        let report = File::from(r);
        let mut pipes = HashMap::new();
        for (f, kind) in [
            (out, Stream::Stdout),
            (err, Stream::Stderr),
            (Some(report), Stream::Report),
        ] {
            let Some(file) = f else { continue };
            set_nonblocking(&file);
            let t = self.token();
            self.poll
                .registry()
                .register(&mut SourceFd(&file.as_raw_fd()), t, Interest::READABLE)
                .map_err(|e| format!("epoll: {e}"))?;
            self.pipes.insert(t, name.to_string());
            pipes.insert(
                t,
                Pipe {
                    file,
                    kind,
                    partial: Vec::new(),
                },
            );
        }
        let i = self.instances.get_mut(name).expect("instance");
        i.life.started(Instant::now());
        i.state = State::Starting;
        i.stop_at = None;
        i.worker = Some(Worker {
            child,
            pid,
            started: Instant::now(),
            pipes,
        });
        info!("[{name}] started worker pid {pid}");
        i.log_line(format!("-- started worker pid {pid}"));
        Ok(())
    }

    /// Asks the worker of `name` to stop (final sync), escalating after stop-timeout.
    pub(super) fn stop(&mut self, name: &str) {
        let Some(i) = self.instances.get_mut(name) else {
            return;
        };
        i.restart_at = None;
        let Some(w) = &i.worker else {
            if matches!(i.state, State::Backoff | State::Starting) {
                i.state = State::Stopped;
            }
            return;
        };
        if i.state == State::Stopping {
            return;
        }
        info!("[{name}] stopping worker pid {} (final sync)", w.pid);
        let _ = nix::sys::signal::kill(Pid::from_raw(w.pid), Signal::SIGTERM);
        i.state = State::Stopping;
        i.stop_at = Some((Instant::now() + i.life.policy.stop_timeout, false));
        self.notify_status();
    }

    /// Stops `name` and starts it again.
    pub(super) fn restart(&mut self, name: &str) {
        let Some(i) = self.instances.get_mut(name) else {
            return;
        };
        if matches!(i.state, State::Waiting(_)) {
            // It starts as soon as the previous manager's worker is gone.
            return;
        }
        i.life.reset();
        if i.worker.is_some() {
            i.then_start = true;
            self.stop(name);
        } else {
            i.state = State::Stopped;
            self.start(name);
        }
    }

    /// Collects exited workers and decides what follows.
    pub(super) fn reap(&mut self) {
        // The loop calls this after every event; asking each worker (a wait4 each) is
        // 200 system calls per event with 200 instances, so first one question for all.
        if !child_exited() {
            return;
        }
        let names: Vec<String> = self.instances.keys().cloned().collect();
        let mut reaped = false;
        for name in names {
            let i = self.instances.get_mut(&name).expect("listed");
            let Some(w) = i.worker.as_mut() else { continue };
            let st = match w.child.try_wait() {
                Ok(Some(st)) => st,
                _ => continue,
            };
            let exit = match (st.code(), st.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(s)) => Exit::Signal(s),
                _ => Exit::Code(-1),
            };
            // Whatever it still had to say.
            let tokens: Vec<Token> = w.pipes.keys().copied().collect();
            for t in tokens {
                drain(i, t);
            }
            let w = i.worker.take().expect("worker");
            let pid = w.pid;
            let ran = w.started.elapsed();
            for (t, p) in &w.pipes {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&p.file.as_raw_fd()));
                self.pipes.remove(t);
            }
            let stopping = i.state == State::Stopping || self.stopping;
            // The worker's own last error line says why.
            let why = i
                .logs
                .iter()
                .rev()
                .find(|l| l.contains("error"))
                .cloned()
                .unwrap_or_default();
            i.log_line(format!("-- worker pid {pid} ended: {exit}"));
            i.ended = Some(Ended {
                at_unix: now_unix(),
                exit,
            });
            i.stop_at = None;
            let next = if exit == Exit::Code(crate::pair::SPLIT_BRAIN_EXIT) && !stopping {
                Next::Failed(String::new())
            } else {
                i.life.ended(Instant::now(), ran, exit, stopping, &why)
            };
            match &next {
                Next::Stopped => info!("[{name}] worker pid {pid} ended ({exit})"),
                Next::Restart(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    warn!(
                        "[{name}] worker pid {pid} ended ({exit}); restart in {:.1}s",
                        wait.as_secs_f64()
                    );
                }
                Next::Failed(_) if exit == Exit::Code(crate::pair::SPLIT_BRAIN_EXIT) => {
                    error!("[{name}] split-brain: nothing syncs until `clsync-manager resolve {name} --keep local|peer`");
                }
                Next::Failed(reason) => error!("[{name}] failed: {reason}"),
            }
            let (state, restart_at, error) = after_exit(&next, exit, &why);
            i.state = state;
            if restart_at.is_some() {
                i.restart_at = restart_at;
            }
            if error.is_some() {
                i.last_error = error;
            }
            let then_start = std::mem::take(&mut i.then_start);
            let ended = i.status();
            if i.then_remove {
                self.forget(&name);
            } else if then_start && !self.stopping {
                let i = self.instances.get_mut(&name).expect("listed");
                i.state = State::Stopped;
                self.start(&name);
            }
            self.answer_waiters(&name, ended);
            reaped = true;
        }
        // Once for all the workers reaped here: the state file is written with fsync
        // (16 ms on a disk), and a manager stopping 200 workers reaps many at a time.
        if reaped {
            self.save();
            self.notify_status();
            self.metrics_changed();
        }
    }

    pub(super) fn read_pipe(&mut self, t: Token) {
        let Some(name) = self.pipes.get(&t).cloned() else {
            return;
        };
        let Some(i) = self.instances.get_mut(&name) else {
            return;
        };
        let (eof, reported) = drain(i, t);
        if eof {
            if let Some(p) = i.worker.as_mut().and_then(|w| w.pipes.remove(&t)) {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&p.file.as_raw_fd()));
            }
            self.pipes.remove(&t);
        }
        if reported {
            self.notify_status();
            self.metrics_changed();
        }
    }
}

/// Reads what a worker pipe holds and handles its complete lines: output is logged with
/// the instance's name and kept for `logs`; reports update the state. Returns (end of
/// file, a report arrived).
fn drain(i: &mut Instance, t: Token) -> (bool, bool) {
    let Some(p) = i.worker.as_mut().and_then(|w| w.pipes.get_mut(&t)) else {
        return (true, false);
    };
    let mut chunk = [0u8; 8192];
    let mut eof = false;
    loop {
        match (&p.file).read(&mut chunk) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => p.partial.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                eof = true;
                break;
            }
        }
    }
    let mut lines = Vec::new();
    while let Some(n) = p.partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = p.partial.drain(..=n).collect();
        lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
    }
    if eof && !p.partial.is_empty() {
        lines.push(String::from_utf8_lossy(&p.partial).into_owned());
        p.partial.clear();
    }
    let kind = p.kind;
    let mut reported = false;
    for line in lines {
        if kind == Stream::Report {
            reported |= take_report(i, &line);
        } else {
            // The worker's own `clsync[LABEL]: ` prefix says again what the name says.
            let text = match line.strip_prefix("clsync") {
                Some(rest) if rest.starts_with(": ") || rest.starts_with('[') => rest
                    .split_once(": ")
                    .map_or(line.as_str(), |(_, t)| t)
                    .to_string(),
                _ => line,
            };
            // Keep the worker's levels in the manager's log (and so in the journal).
            if let Some(m) = text.strip_prefix("error: ") {
                error!("[{}] {m}", i.name);
            } else if let Some(m) = text.strip_prefix("warning: ") {
                warn!("[{}] {m}", i.name);
            } else if let Some(m) = text.strip_prefix("debug: ") {
                debug!("[{}] {m}", i.name);
            } else {
                info!("[{}] {text}", i.name);
            }
            i.log_line(text);
        }
    }
    (eof, reported)
}

/// What a worker's end makes of its instance, once the restart policy has decided: its
/// state, when it starts again, and its error (`None`: the one it had stays).
fn after_exit(next: &Next, exit: Exit, why: &str) -> (State, Option<Instant>, Option<String>) {
    match next {
        Next::Stopped => (State::Stopped, None, None),
        Next::Restart(at) => (State::Backoff, Some(*at), Some(ended_with(exit, why))),
        Next::Failed(_) if exit == Exit::Code(crate::pair::SPLIT_BRAIN_EXIT) => {
            (State::SplitBrain, None, Some(why.to_string()))
        }
        Next::Failed(reason) => (State::Failed, None, Some(reason.clone())),
    }
}

/// Takes in one line of the report pipe: a worker that says it is ready is running. Returns
/// whether the line was a report (anything else is ignored).
fn take_report(i: &mut Instance, line: &str) -> bool {
    let Ok(report) = serde_json::from_str::<Report>(line) else {
        return false;
    };
    if matches!(&report, Report::State(s) if s.ready) && i.state == State::Starting {
        i.state = State::Running;
        i.last_error = None;
        info!("[{}] running", i.name);
    }
    // Steps carry a few fields: laid over the state, the counters kept.
    i.report.update(report);
    if let Some(t) = i.report.last_sync_unix {
        i.last_sync_unix = Some(i.last_sync_unix.map_or(t, |l| l.max(t)));
    }
    true
}

/// Whether a child of this process has exited and waits to be reaped (it is left to be
/// reaped by its `Child`). Also true when that cannot be told.
fn child_exited() -> bool {
    // SAFETY: waitid with WNOWAIT only looks; the siginfo_t is owned by this frame and
    // zeroed, so si_pid stays 0 when no child has exited (WNOHANG).
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        match r {
            0 => info.si_pid() != 0,
            // No child at all: nothing to reap.
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) => false,
            _ => true,
        }
    }
}

pub(super) fn set_nonblocking(f: &File) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(fl) = fcntl(f.as_raw_fd(), FcntlArg::F_GETFL) {
        let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
        let _ = fcntl(f.as_raw_fd(), FcntlArg::F_SETFL(fl));
    }
}

/// Whether a worker (of this manager or an earlier one) holds the lock of `name`.
pub(super) fn instance_held(state_dir: &Path, name: &str) -> bool {
    matches!(instance_lock::take(state_dir, name), Ok(Taken::Held(_)))
}

/// Whether `pid` is a live clsync worker (its command line names clsync).
pub(super) fn alive_worker(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.windows(6).any(|w| w == b"clsync"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status of an instance as its worker reports: the initial sync and its progress
    /// while starting, running once ready (the progress no longer shown, an error of the
    /// start forgotten), the counters of the last state.
    #[test]
    fn reports_move_a_starting_instance_to_running() {
        let mut i = Instance::new("web", "web", String::new(), Policy::default());
        i.state = State::Starting;
        i.last_error = Some("exit code 1: before".into());
        assert!(take_report(&mut i, r#"{"phase":"watching","watches":2}"#));
        assert_eq!(i.status().state, "starting");
        assert!(take_report(
            &mut i,
            r#"{"phase":"initsync","watches":4,"progress":"50%"}"#
        ));
        let s = i.status();
        assert_eq!((s.state.as_str(), s.watches), ("initsync", Some(4)));
        assert_eq!(s.progress.as_deref(), Some("50%"));
        assert_eq!(s.events, None);
        assert!(!take_report(&mut i, "clsync: not a report"));
        let ready = r#"{"consecutive_failures":0,"destinations":[{"consecutive_failures":0,"destination":"/srv","lag_s":0.0,"last_error":null,"last_sync_unix":1.5,"queued":0,"state":"ok"}],"events":9,"iterations":1,"last_error":null,"last_sync_unix":1.5,"phase":"running","queued":0,"ready":true,"running_syncs":0,"sandbox":{"enabled":true,"landlock":"partial","seccomp":46,"no_network":false},"standby":false,"sync_failures":0,"syncing":false,"syncs":1,"unwatched_dirs":0,"uptime_s":0.5,"watches":4}"#;
        assert!(take_report(&mut i, ready));
        let s = i.status();
        assert_eq!(i.state, State::Running);
        assert_eq!(s.state, "running");
        assert_eq!(
            (s.events, s.syncs, s.last_sync_unix),
            (Some(9), Some(1), Some(1.5))
        );
        assert_eq!((s.progress, s.last_error), (None, None));
        assert_eq!(s.sandbox.as_ref().map(|b| b.word()), Some("partial"));
        let d = s.destinations.expect("destinations");
        assert_eq!((d.len(), d[0].destination.as_str()), (1, "/srv"));
    }

    /// Each decision of the policy gives its state; a split-brain exit is its own state
    /// (waiting for `resolve`), whatever the policy says, and keeps the worker's words.
    #[test]
    fn the_end_of_a_worker_gives_the_state_that_follows() {
        let at = Instant::now();
        let why = "error: rsync exited with 12";
        assert_eq!(
            after_exit(&Next::Stopped, Exit::Code(0), why),
            (State::Stopped, None, None)
        );
        assert_eq!(
            after_exit(&Next::Restart(at), Exit::Signal(9), why),
            (
                State::Backoff,
                Some(at),
                Some(format!("{}: {why}", Exit::Signal(9)))
            )
        );
        assert_eq!(
            after_exit(&Next::Failed("start limit".into()), Exit::Code(1), why),
            (State::Failed, None, Some("start limit".into()))
        );
        let split = Exit::Code(crate::pair::SPLIT_BRAIN_EXIT);
        assert_eq!(
            after_exit(&Next::Failed(String::new()), split, why),
            (State::SplitBrain, None, Some(why.into()))
        );
    }

    /// The last runs of stopped instances are bounded: the oldest stop goes first, and a
    /// name stopped again counts from its new stop.
    #[test]
    fn stopped_runs_are_bounded_oldest_first() {
        let run = |line: &str| LastRun {
            logs: VecDeque::from([line.to_string()]),
            ended: None,
            last_sync_unix: None,
        };
        let mut s = Stopped::default();
        for n in 0..KEPT_STOPPED {
            s.keep(&format!("i{n}"), run("first"));
        }
        s.keep("i0", run("again"));
        s.keep("new", run("new"));
        assert!(s.get("i1").is_none(), "the oldest stop is forgotten");
        assert_eq!(s.get("i0").map(|r| r.logs[0].as_str()), Some("again"));
        assert!(s.get("i2").is_some() && s.get("new").is_some());
        assert_eq!(s.runs.len(), KEPT_STOPPED);
        assert!(s.take("i0").is_some() && s.take("i0").is_none());
        assert_eq!(
            (s.runs.len(), s.order.len()),
            (KEPT_STOPPED - 1, KEPT_STOPPED - 1)
        );
    }

    /// The instance's last sync is the latest any of its workers reported: a new worker's
    /// first state (no sync yet) does not reset it.
    #[test]
    fn the_last_sync_is_the_instances() {
        let mut i = Instance::new("web", "web", String::new(), Policy::default());
        i.state = State::Starting;
        let state = |t: &str| {
            format!(
                r#"{{"consecutive_failures":0,"destinations":[],"events":0,"iterations":0,"last_error":null,"last_sync_unix":{t},"phase":"running","queued":0,"ready":true,"running_syncs":0,"standby":false,"sync_failures":0,"syncing":false,"syncs":0,"unwatched_dirs":0,"uptime_s":0.5,"watches":1}}"#
            )
        };
        assert!(take_report(&mut i, &state("7.5")));
        assert_eq!(i.status().last_sync_unix, Some(7.5));
        i.report = Latest::default();
        assert!(take_report(&mut i, &state("null")));
        assert_eq!(i.status().last_sync_unix, Some(7.5));
        assert!(take_report(&mut i, &state("9.0")));
        assert_eq!(i.status().last_sync_unix, Some(9.0));
    }

    /// A split-brain step's message is the instance's error until the manager has its own.
    #[test]
    fn a_split_brain_report_is_the_instance_error() {
        let mut i = Instance::new("pair", "pair", String::new(), Policy::default());
        i.state = State::Starting;
        assert!(take_report(
            &mut i,
            r#"{"last_error":"both sides changed","phase":"split-brain"}"#
        ));
        assert_eq!(i.status().last_error.as_deref(), Some("both sides changed"));
        assert_eq!(i.state, State::Starting);
    }
}
