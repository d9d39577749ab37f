/*!
`clsync-manager run`: the supervisor's event loop.

One thread and one `mio::Poll`, like the worker: signals (TERM/INT stop everything,
HUP reloads, CHLD reaps), the control socket and its clients, and three pipes per worker
(stdout and stderr, logged line by line with the instance's name and kept in a ring
buffer for `logs`, and the report descriptor on which the worker sends its state after
every sync). Timers: restart backoffs, the stop escalation (TERM, a second TERM after
`stop-timeout` makes the worker abort its final sync, KILL of its process group ten
seconds later), waiting for a worker of a previous manager to go, systemd's watchdog.

This file is the loop and what only the loop decides: start-up (lock, socket), the
timers, signals, and bringing the instances in line with the profiles. The rest of the
supervisor is split by what it is about, each file an `impl Daemon` of its own:

- [`super::instance`]: one instance and its worker's life — spawn, stop, reap, pipes.
- [`super::control`]: the control socket's commands.
- [`super::state_file`]: what survives a manager restart.
- [`super::metrics`]: the Prometheus text and the metrics file.

Each worker is `clsync --profiles-dir DIR --profile NAME` started by fork+exec in its own
process group, with a parent-death signal (SIGTERM: a worker whose manager died hard
makes its final sync and exits). The pids of running workers are kept in the state file
(`STATE_DIR/state.json`, with the instances started on demand, which survive a manager
restart); a new manager waits for a live worker of the old one to exit before it starts
that instance again, so there are never two workers for one instance. A lock file in
the state directory and the socket keep a second manager from starting.

Stop and restart requests are answered when the worker is gone (a stop waits for the
final sync), so a client's `stop` returns when nothing is left running.
*/

use super::clients::{spare_fd, Client, Limits, Waiter};
use super::instance::{alive_worker, instance_held, Instance, State, Stopped, ABORT_GRACE};
use super::life::Policy;
use super::metrics::METRICS_REFRESH;
use crate::profile::{self, Profiles};
use log::{error, info, warn};
use mio::net::UnixListener;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SIGNALS: Token = Token(0);
const LISTENER: Token = Token(1);

/// How often a previous manager's worker is looked for.
const WAIT_POLL: Duration = Duration::from_secs(1);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub profiles_dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Members of this group may use the socket too (it is then 0660).
    pub socket_group: Option<u32>,
    /// The worker binary.
    pub clsync: PathBuf,
    /// Prometheus metrics are also written here (for node_exporter's textfile collector).
    pub metrics_textfile: Option<PathBuf>,
}

pub(super) struct Daemon {
    pub(super) opts: Options,
    pub(super) poll: Poll,
    pub(super) instances: BTreeMap<String, Instance>,
    /// The last run of instances stopped and forgotten, for `logs`.
    pub(super) stopped: Stopped,
    /// Worker pipes: token → instance.
    pub(super) pipes: HashMap<Token, String>,
    pub(super) clients: HashMap<Token, Client>,
    pub(super) waiters: Vec<Waiter>,
    pub(super) next_token: usize,
    pub(super) stopping: bool,
    pub(super) watchdog: Option<(Duration, Instant)>,
    pub(super) metrics_due: Option<Instant>,
    pub(super) saved: String,
    /// The control socket's bounds, and its spare descriptor for `EMFILE`.
    pub(super) limits: Limits,
    pub(super) spare: Option<File>,
    /// When the control socket last warned of a flood.
    pub(super) socket_warned: Option<Instant>,
}

/// Closes every descriptor above the standard three, as sshd does: whatever a shell or
/// a parent left open would pass to every worker and handler run as root, and would eat
/// into the descriptor budget the control socket is sized by. Nothing of the daemon's own
/// is open yet.
fn close_inherited() {
    // SAFETY: close_range(2) on descriptors this process does not use (none is open yet
    // but the standard three); no Rust object owns one of them.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r != 0 {
        // Older kernels (before 5.9): mark them close-on-exec one by one instead.
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        let fds: Vec<i32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect();
        for fd in fds {
            // SAFETY: fcntl on a descriptor number; a closed one (the directory's own)
            // fails harmlessly with EBADF.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub fn run(opts: Options) -> Result<i32, String> {
    close_inherited();
    let limits = Limits::from_env()?;
    crate::safe_file::ensure_dir(&opts.state_dir, "state directory", 0o700, None)?;
    let _lock = lock(&opts.state_dir)?;
    if std::os::unix::net::UnixStream::connect(&opts.socket).is_ok() {
        return Err(format!(
            "another clsync-manager answers on {}; not starting a second one",
            opts.socket.display()
        ));
    }
    let profiles = profile::load_dir(&opts.profiles_dir).map_err(|e| e.to_string())?;
    let listener = listen(&opts)?;
    let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD]).map_err(|e| format!("signals: {e}"))?;
    let mut listener = listener;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .and_then(|_| {
            poll.registry()
                .register(&mut listener, LISTENER, Interest::READABLE)
        })
        .map_err(|e| format!("epoll: {e}"))?;
    let mut d = Daemon {
        opts,
        poll,
        instances: BTreeMap::new(),
        stopped: Stopped::default(),
        pipes: HashMap::new(),
        clients: HashMap::new(),
        waiters: Vec::new(),
        next_token: 2,
        stopping: false,
        watchdog: None,
        metrics_due: None,
        saved: String::new(),
        limits,
        spare: spare_fd(),
        socket_warned: None,
    };
    d.restore(&profiles);
    d.apply_profiles(&profiles);
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let every = Duration::from_micros(usec / 2);
        d.watchdog = Some((every, Instant::now() + every));
    }
    info!(
        "{} instances, control socket {}",
        d.instances.len(),
        d.opts.socket.display()
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    d.notify_status();

    let mut events = Events::with_capacity(64);
    loop {
        if d.stopping && d.instances.values().all(|i| i.worker.is_none()) {
            break;
        }
        let timeout = d.timeout(Instant::now());
        if let Err(e) = d.poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => {
                    for sig in signals.pending() {
                        d.signal(sig);
                    }
                }
                LISTENER => d.accept(&listener),
                t if d.pipes.contains_key(&t) => d.read_pipe(t),
                t => d.client_event(t),
            }
        }
        d.tick(Instant::now());
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    d.save();
    d.save_last_runs();
    // Every instance is down now; say so rather than leave the last figures behind.
    d.write_metrics();
    let _ = std::fs::remove_file(&d.opts.socket);
    info!("every worker stopped; exiting");
    Ok(0)
}

/// Takes the manager lock in the state directory (flock, released at exit).
fn lock(dir: &Path) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("manager.lock");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut other = String::new();
        let _ = f.read_to_string(&mut other);
        return Err(format!(
            "another clsync-manager is running (it holds {}, pid {}); not starting a second one",
            path.display(),
            other.trim()
        ));
    }
    let _ = f.set_len(0);
    let _ = write!(f, "{}", std::process::id());
    Ok(f)
}

/// Binds the control socket: 0600 root, or 0660 with the configured group.
fn listen(opts: &Options) -> Result<UnixListener, String> {
    let show = opts.socket.display();
    // The socket's directory is ours alone: in a directory others may write to, a local
    // user could swap the socket for their own between its removal and bind, or for a
    // symlink before its group and mode are set.
    if let Some(dir) = opts.socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::safe_file::ensure_dir(dir, "control socket directory", 0o755, None)?;
    }
    // Nobody answers on it (checked): a stale socket of a manager that died.
    let _ = std::fs::remove_file(&opts.socket);
    // Created with its final mode (none for others; the group's when a socket group is
    // given), so nothing is changed by path after bind but its group.
    let mask = if opts.socket_group.is_some() {
        0o117
    } else {
        0o177
    };
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(mask) };
    let l = UnixListener::bind(&opts.socket);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l.map_err(|e| format!("control socket {show}: {e}"))?;
    if let Some(g) = opts.socket_group {
        // Not following a symlink: the name is the socket just bound.
        nix::unistd::fchownat(
            None,
            &opts.socket,
            None,
            Some(nix::unistd::Gid::from_raw(g)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("control socket {show}: {e}"))?;
    }
    Ok(l)
}

pub(super) fn fingerprint(v: &profile::ProfileValues) -> String {
    v.to_toml()
}

impl Daemon {
    pub(super) fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// Brings the instances in line with the profiles: autostart profiles run, removed
    /// ones stop, changed ones restart, unchanged ones are left alone.
    fn apply_profiles(&mut self, profiles: &Profiles) {
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        // Autostart profiles that are broken (or inherit from a broken one): shown as
        // failed instances; the others run regardless.
        let mut broken: Vec<(String, String)> = Vec::new();
        for (name, p) in profiles {
            if p.values.autostart != Some(true) {
                continue;
            }
            match profile::is_template_profile(profiles, name) {
                Ok(false) => {
                    wanted.insert(name.clone());
                }
                Ok(true) => {
                    warn!("profile {name}: autostart is ignored for a template (start instances with `clsync-manager start {name}@LABEL`)")
                }
                Err(e) => {
                    error!("profile {name}: {e}");
                    broken.push((name.clone(), e.to_string()));
                }
            }
        }
        let names: Vec<String> = self.instances.keys().cloned().collect();
        for name in names {
            let i = &self.instances[&name];
            let keep = i.on_demand || wanted.contains(&name);
            match (keep, profile::resolve(profiles, &name, None)) {
                (true, Ok(r)) => {
                    let fp = fingerprint(&r.values);
                    let i = self.instances.get_mut(&name).expect("listed");
                    if i.fingerprint != fp {
                        info!("[{name}] profile changed: restarting");
                        i.fingerprint = fp;
                        i.life.policy = Policy::of(&r.values);
                        self.restart(&name);
                    }
                }
                (_, Err(e)) if e.is_broken() => {
                    // A profile broken by an edit: a running worker keeps its settings
                    // (stopping it would not make the file right); one not running is
                    // failed until the file is mended.
                    let i = self.instances.get_mut(&name).expect("listed");
                    if i.worker.is_some() {
                        error!("[{name}] {e}: the worker keeps running with the settings it has");
                    } else {
                        i.state = State::Failed;
                    }
                    i.last_error = Some(e.to_string());
                }
                (_, Err(e)) => {
                    info!("[{name}] {e}: stopping and removing the instance");
                    self.remove(&name);
                }
                (false, Ok(_)) => {
                    info!("[{name}] no longer autostart: stopping");
                    self.remove(&name);
                }
            }
        }
        for name in wanted {
            if self.instances.contains_key(&name) {
                let i = &self.instances[&name];
                if i.state == State::Stopped && !i.then_remove {
                    self.start(&name);
                }
                continue;
            }
            if let Ok(r) = profile::resolve(profiles, &name, None) {
                self.instances.insert(
                    name.clone(),
                    Instance::new(
                        &name,
                        &r.profile,
                        fingerprint(&r.values),
                        Policy::of(&r.values),
                    ),
                );
                self.start(&name);
            }
        }
        for (name, e) in broken {
            self.instances.entry(name.clone()).or_insert_with(|| {
                let mut i = Instance::new(&name, &name, String::new(), Policy::default());
                i.state = State::Failed;
                i.last_error = Some(e);
                i
            });
        }
        // On-demand instances restored from the state file.
        let idle: Vec<String> = self
            .instances
            .values()
            .filter(|i| i.on_demand && i.state == State::Stopped)
            .map(|i| i.name.clone())
            .collect();
        for name in idle {
            self.start(&name);
        }
        self.save();
    }

    fn timeout(&self, now: Instant) -> Option<Duration> {
        let mut t: Option<Instant> = None;
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        for i in self.instances.values() {
            consider(i.restart_at);
            consider(i.stop_at.map(|(at, _)| at));
            if matches!(i.state, State::Waiting(_)) {
                consider(Some(now + WAIT_POLL));
            }
        }
        consider(self.watchdog.map(|(_, at)| at));
        consider(self.metrics_due);
        consider(self.client_deadline());
        t.map(|t| t.saturating_duration_since(now))
    }

    fn tick(&mut self, now: Instant) {
        self.reap();
        self.expire_clients(now);
        let names: Vec<String> = self.instances.keys().cloned().collect();
        for name in names {
            let i = self.instances.get_mut(&name).expect("listed");
            if i.restart_at.is_some_and(|at| now >= at) && !self.stopping {
                i.restart_at = None;
                i.state = State::Stopped;
                info!("[{name}] restarting (restart {})", i.life.restarts);
                self.start(&name);
                continue;
            }
            if let (Some((at, aborted)), Some(w)) = (i.stop_at, &i.worker) {
                if now >= at {
                    if !aborted {
                        warn!(
                            "[{name}] still stopping after {}s: aborting its final sync",
                            i.life.policy.stop_timeout.as_secs()
                        );
                        let _ = nix::sys::signal::kill(Pid::from_raw(w.pid), Signal::SIGTERM);
                        i.stop_at = Some((now + ABORT_GRACE, true));
                    } else {
                        warn!(
                            "[{name}] killing worker pid {} and its process group",
                            w.pid
                        );
                        let _ = killpg(Pid::from_raw(w.pid), Signal::SIGKILL);
                        i.stop_at = None;
                    }
                }
            }
            if let State::Waiting(pid) = i.state {
                if !alive_worker(pid) && !instance_held(&self.opts.state_dir, &name) {
                    info!("[{name}] the previous manager's worker {pid} is gone");
                    i.state = State::Stopped;
                    let ended = i.status();
                    if !i.then_remove && !self.stopping {
                        self.start(&name);
                    } else {
                        self.forget(&name);
                    }
                    self.answer_waiters(&name, ended);
                }
            }
        }
        if let Some((every, at)) = self.watchdog {
            if now >= at {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                self.watchdog = Some((every, now + every));
            }
        }
        if self.metrics_due.is_some_and(|t| now >= t) {
            self.write_metrics();
            self.metrics_due = Some(now + METRICS_REFRESH);
        }
    }

    pub(super) fn signal(&mut self, sig: i32) {
        match sig {
            SIGCHLD => self.reap(),
            SIGTERM | SIGINT => {
                if self.stopping {
                    warn!("signal again: aborting the workers' final syncs");
                    for i in self.instances.values_mut() {
                        if let Some(w) = &i.worker {
                            let _ = nix::sys::signal::kill(Pid::from_raw(w.pid), Signal::SIGTERM);
                            i.stop_at = Some((Instant::now() + ABORT_GRACE, true));
                        }
                    }
                    return;
                }
                info!("stopping every worker (final syncs), then exiting");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                // The on-demand instances are started again by the next manager.
                self.save();
                self.stopping = true;
                let names: Vec<String> = self.instances.keys().cloned().collect();
                for name in names {
                    self.stop(&name);
                }
            }
            SIGHUP => {
                if let Err(e) = self.reload() {
                    error!("reload: {e}");
                }
            }
            _ => {}
        }
    }

    /// Applies the profiles as they are now. A broken profile does not hold back the
    /// others: they are applied, and the broken ones are reported (an error, so that
    /// `clsync-manager reload` says so).
    pub(super) fn reload(&mut self) -> Result<(), String> {
        let profiles = profile::load_dir(&self.opts.profiles_dir)
            .map_err(|e| format!("keeping the old profiles: {e}"))?;
        info!(
            "reloading the profiles in {}",
            self.opts.profiles_dir.display()
        );
        self.apply_profiles(&profiles);
        self.notify_status();
        let broken: Vec<&str> = profiles
            .values()
            .filter_map(|p| p.broken.as_deref())
            .collect();
        if broken.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the other profiles are applied; broken: {}",
                broken.join("; ")
            ))
        }
    }

    pub(super) fn notify_status(&self) {
        let count = |s: &[&str]| {
            self.instances
                .values()
                .filter(|i| s.contains(&i.state_name().as_str()))
                .count()
        };
        let text = format!(
            "{} running, {} starting, {} failed, {} instances",
            count(&["running"]),
            count(&["starting", "initsync"]),
            count(&["failed"]),
            self.instances.len()
        );
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&text)]);
    }
}
