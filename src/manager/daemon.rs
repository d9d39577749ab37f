/*!
`clsync-manager run`: the supervisor's event loop.

One thread and one `mio::Poll`, like the worker: signals (TERM/INT stop everything,
HUP reloads, CHLD reaps), the control socket and its clients, and three pipes per worker
(stdout and stderr, logged line by line with the instance's name and kept in a ring
buffer for `logs`, and the report descriptor on which the worker sends its state after
every sync). Timers: restart backoffs, the stop escalation (TERM, a second TERM after
`stop-timeout` makes the worker abort its final sync, KILL of its process group ten
seconds later), waiting for a worker of a previous manager to go, systemd's watchdog.

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

use super::instance_lock::{self, Taken};
use super::life::{Exit, Life, Next, Policy};
use super::protocol::{InstanceStatus, Request, Response, MAX_REQUEST};
use crate::profile::{self, Profiles};
use log::{debug, error, info, warn};
use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIGNALS: Token = Token(0);
const LISTENER: Token = Token(1);

/// Lines of each worker's output kept for `logs`.
const LOG_LINES: usize = 1000;
/// Between a worker's second TERM (abort the final sync) and KILL.
const ABORT_GRACE: Duration = Duration::from_secs(10);
/// How often a previous manager's worker is looked for.
const WAIT_POLL: Duration = Duration::from_secs(1);
/// The metrics text file is rewritten this long after a change, and at least this often
/// (so that "seconds since the last sync" moves).
const METRICS_EVERY: Duration = Duration::from_secs(5);
const METRICS_REFRESH: Duration = Duration::from_secs(15);

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
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
    file: File,
    kind: Stream,
    partial: Vec<u8>,
}

struct Worker {
    child: Child,
    pid: i32,
    started: Instant,
    pipes: HashMap<Token, Pipe>,
}

struct Instance {
    name: String,
    profile: String,
    /// Started by `start` (templates, or profiles without autostart).
    on_demand: bool,
    /// The resolved profile, to notice changes on reload.
    fingerprint: String,
    life: Life,
    state: State,
    worker: Option<Worker>,
    restart_at: Option<Instant>,
    /// When the stop escalates next, and whether the second TERM was sent.
    stop_at: Option<(Instant, bool)>,
    /// Start again once stopped (`restart`, a changed profile).
    then_start: bool,
    /// Forget the instance once stopped (its profile is gone).
    then_remove: bool,
    /// The next start resolves a split-brain keeping this side (`local` or `peer`).
    resolve: Option<String>,
    last_error: Option<String>,
    /// The worker's last report.
    report: Option<serde_json::Value>,
    logs: VecDeque<String>,
}

impl Instance {
    fn new(name: &str, profile: &str, fingerprint: String, policy: Policy) -> Instance {
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
            report: None,
            logs: VecDeque::new(),
        }
    }

    fn state_name(&self) -> String {
        match self.state {
            State::Stopped => "stopped".into(),
            State::Starting => match self
                .report
                .as_ref()
                .and_then(|r| r.get("phase"))
                .and_then(|p| p.as_str())
            {
                Some("initsync") => "initsync".into(),
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

    fn status(&self) -> InstanceStatus {
        let r = self.report.as_ref();
        let num = |k: &str| r.and_then(|r| r.get(k)).and_then(|v| v.as_u64());
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
            last_sync_unix: r
                .and_then(|r| r.get("last_sync_unix"))
                .and_then(|v| v.as_f64()),
            queued: num("queued"),
            events: num("events"),
            syncs: num("syncs"),
            sync_failures: num("sync_failures"),
            watches: num("watches"),
            last_error: self.last_error.clone().or_else(|| {
                r.and_then(|r| r.get("last_error"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            }),
            on_demand: self.on_demand,
            destinations: r.and_then(|r| r.get("destinations")).cloned(),
            progress: r
                .filter(|_| matches!(self.state, State::Starting))
                .and_then(|r| r.get("progress"))
                .and_then(|v| v.as_str())
                .map(str::to_string),
        }
    }

    fn log_line(&mut self, line: String) {
        if self.logs.len() >= LOG_LINES {
            self.logs.pop_front();
        }
        self.logs.push_back(line);
    }
}

/// A client waiting for an instance to stop (or to start again).
struct Waiter {
    stream: UnixStream,
    name: String,
    restart: bool,
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// What the state file keeps across manager restarts.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Saved {
    #[serde(default)]
    on_demand: BTreeSet<String>,
    #[serde(default)]
    workers: BTreeMap<String, i32>,
}

struct Daemon {
    opts: Options,
    poll: Poll,
    instances: BTreeMap<String, Instance>,
    /// Worker pipes: token → instance.
    pipes: HashMap<Token, String>,
    clients: HashMap<Token, Client>,
    waiters: Vec<Waiter>,
    next_token: usize,
    stopping: bool,
    watchdog: Option<(Duration, Instant)>,
    metrics_due: Option<Instant>,
    saved: String,
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub fn run(opts: Options) -> Result<i32, String> {
    std::fs::create_dir_all(&opts.state_dir)
        .map_err(|e| format!("state directory {}: {e}", opts.state_dir.display()))?;
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
        pipes: HashMap::new(),
        clients: HashMap::new(),
        waiters: Vec::new(),
        next_token: 2,
        stopping: false,
        watchdog: None,
        metrics_due: None,
        saved: String::new(),
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
                t => d.read_client(t),
            }
        }
        d.tick(Instant::now());
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    d.save();
    // Every instance is down now; say so rather than leave the last figures behind.
    d.write_metrics();
    let _ = std::fs::remove_file(&d.opts.socket);
    info!("every worker stopped; exiting");
    Ok(0)
}

/// Takes the manager lock in the state directory (flock, released at exit).
fn lock(dir: &Path) -> Result<File, String> {
    let path = dir.join("manager.lock");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
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
    use std::os::unix::fs::PermissionsExt;
    let show = opts.socket.display();
    if let Some(dir) = opts.socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // Nobody answers on it (checked): a stale socket of a manager that died.
    let _ = std::fs::remove_file(&opts.socket);
    // Created with no access for others, then opened up for the group if asked.
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(&opts.socket);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l.map_err(|e| format!("control socket {show}: {e}"))?;
    if let Some(g) = opts.socket_group {
        nix::unistd::chown(&opts.socket, None, Some(nix::unistd::Gid::from_raw(g)))
            .map_err(|e| format!("control socket {show}: {e}"))?;
        std::fs::set_permissions(&opts.socket, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| format!("control socket {show}: {e}"))?;
    }
    Ok(l)
}

/// Whether a peer with these credentials may use the socket.
fn permitted(uid: u32, pid: i32, group: Option<u32>) -> bool {
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        return true;
    }
    let Some(g) = group else { return false };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().any(|l| {
        (l.starts_with("Groups:") || l.starts_with("Gid:"))
            && l.split_whitespace().skip(1).any(|x| x == g.to_string())
    })
}

fn fingerprint(v: &profile::ProfileValues) -> String {
    v.to_toml()
}

impl Daemon {
    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// Reads the state file of a previous manager: on-demand instances, live workers.
    fn restore(&mut self, profiles: &Profiles) {
        let path = self.opts.state_dir.join("state.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let saved: Saved = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                warn!("{}: ignored: {e}", path.display());
                return;
            }
        };
        for name in &saved.on_demand {
            match profile::resolve(profiles, name, None) {
                Ok(r) => {
                    let mut i = Instance::new(
                        &r.instance,
                        &r.profile,
                        fingerprint(&r.values),
                        Policy::of(&r.values),
                    );
                    i.on_demand = true;
                    self.instances.insert(r.instance.clone(), i);
                }
                Err(e) => warn!("on-demand instance {name} is not restarted: {e}"),
            }
        }
        for (name, pid) in saved.workers {
            if !alive_worker(pid) {
                continue;
            }
            if let Some(i) = self.instances.get_mut(&name) {
                warn!("[{name}] a worker of the previous manager (pid {pid}) is still running; waiting for it to exit");
                i.state = State::Waiting(pid);
            } else if let Ok(r) = profile::resolve(profiles, &name, None) {
                let mut i = Instance::new(
                    &r.instance,
                    &r.profile,
                    fingerprint(&r.values),
                    Policy::of(&r.values),
                );
                i.state = State::Waiting(pid);
                self.instances.insert(name, i);
            }
        }
    }

    /// Writes the state file if it changed.
    fn save(&mut self) {
        let saved = Saved {
            on_demand: self
                .instances
                .values()
                .filter(|i| i.on_demand && !i.then_remove)
                .map(|i| i.name.clone())
                .collect(),
            workers: self
                .instances
                .values()
                .filter_map(|i| i.worker.as_ref().map(|w| (i.name.clone(), w.pid)))
                .collect(),
        };
        let text = serde_json::to_string_pretty(&saved).unwrap_or_default();
        if text == self.saved {
            return;
        }
        let path = self.opts.state_dir.join("state.json");
        let tmp = self.opts.state_dir.join(".state.json.tmp");
        match std::fs::write(&tmp, format!("{text}\n")).and_then(|_| std::fs::rename(&tmp, &path)) {
            Ok(()) => self.saved = text,
            Err(e) => error!("{}: {e}", path.display()),
        }
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

    /// Stops `name` and forgets it once it is gone.
    fn remove(&mut self, name: &str) {
        let Some(i) = self.instances.get_mut(name) else {
            return;
        };
        i.then_remove = true;
        i.then_start = false;
        if i.worker.is_some() {
            self.stop(name);
        } else {
            self.instances.remove(name);
        }
    }

    /// Starts the worker of `name` now (or as soon as a previous manager's is gone).
    fn start(&mut self, name: &str) {
        let Some(i) = self.instances.get_mut(name) else {
            return;
        };
        if i.worker.is_some() || matches!(i.state, State::Waiting(_)) {
            return;
        }
        i.restart_at = None;
        i.report = None;
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
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let w_fd = w.as_raw_fd();
        let parent = std::process::id() as i32;
        let lock_fd = lock.raw_fd();
        let mut cmd = Command::new(&self.opts.clsync);
        if let Some(keep) = self.instances.get_mut(name).and_then(|i| i.resolve.take()) {
            cmd.arg("--split-brain-keep").arg(keep);
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
    fn stop(&mut self, name: &str) {
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
    fn restart(&mut self, name: &str) {
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
        t.map(|t| t.saturating_duration_since(now))
    }

    fn tick(&mut self, now: Instant) {
        self.reap();
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
                        self.instances.remove(&name);
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

    /// Collects exited workers and decides what follows.
    fn reap(&mut self) {
        let names: Vec<String> = self.instances.keys().cloned().collect();
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
            i.stop_at = None;
            let next = if exit == Exit::Code(crate::pair::SPLIT_BRAIN_EXIT) && !stopping {
                Next::Failed(String::new())
            } else {
                i.life.ended(Instant::now(), ran, exit, stopping, &why)
            };
            match &next {
                Next::Stopped => {
                    info!("[{name}] worker pid {pid} ended ({exit})");
                    i.state = State::Stopped;
                }
                Next::Restart(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    warn!(
                        "[{name}] worker pid {pid} ended ({exit}); restart in {:.1}s",
                        wait.as_secs_f64()
                    );
                    i.state = State::Backoff;
                    i.restart_at = Some(*at);
                    i.last_error = Some(format!("{exit}: {why}"));
                }
                Next::Failed(_) if exit == Exit::Code(crate::pair::SPLIT_BRAIN_EXIT) => {
                    error!("[{name}] split-brain: nothing syncs until `clsync-manager resolve {name} --keep local|peer`");
                    i.state = State::SplitBrain;
                    i.last_error = Some(why.clone());
                }
                Next::Failed(reason) => {
                    error!("[{name}] failed: {reason}");
                    i.state = State::Failed;
                    i.last_error = Some(reason.clone());
                }
            }
            let then_start = std::mem::take(&mut i.then_start);
            let ended = i.status();
            if i.then_remove {
                self.instances.remove(&name);
            } else if then_start && !self.stopping {
                let i = self.instances.get_mut(&name).expect("listed");
                i.state = State::Stopped;
                self.start(&name);
            }
            self.answer_waiters(&name, ended);
            self.save();
            self.notify_status();
            self.metrics_changed();
        }
    }

    /// Replies to clients waiting for `name` to stop or to start again: with its status
    /// now, or (if it is gone) as it ended.
    fn answer_waiters(&mut self, name: &str, ended: InstanceStatus) {
        let s = self.instances.get(name).map_or(ended, |i| i.status());
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.waiters) {
            if w.name != name {
                keep.push(w);
                continue;
            }
            let resp = if w.restart && s.state == "failed" {
                Response::err(format!(
                    "{name} failed: {}",
                    s.last_error.clone().unwrap_or_default()
                ))
            } else {
                Response::ok(serde_json::to_value(&s).unwrap_or_default())
            };
            reply_mio(w.stream, &resp);
        }
        self.waiters = keep;
    }

    fn signal(&mut self, sig: i32) {
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
    fn reload(&mut self) -> Result<(), String> {
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

    fn notify_status(&self) {
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

    fn metrics_changed(&mut self) {
        let soon = Instant::now() + METRICS_EVERY;
        if self.opts.metrics_textfile.is_some() && self.metrics_due.is_none_or(|t| t > soon) {
            self.metrics_due = Some(soon);
        }
    }

    fn write_metrics(&self) {
        let Some(path) = &self.opts.metrics_textfile else {
            return;
        };
        let text = super::metrics(&self.statuses());
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path)) {
            error!("metrics file {}: {e}", path.display());
        }
    }

    fn statuses(&self) -> Vec<InstanceStatus> {
        self.instances.values().map(Instance::status).collect()
    }

    fn accept(&mut self, listener: &UnixListener) {
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let cred = nix::sys::socket::getsockopt(
                        &stream,
                        nix::sys::socket::sockopt::PeerCredentials,
                    );
                    let ok = cred
                        .as_ref()
                        .is_ok_and(|c| permitted(c.uid(), c.pid(), self.opts.socket_group));
                    if !ok {
                        let who = cred.map_or("unknown".into(), |c| format!("uid {}", c.uid()));
                        warn!("control socket: refused a client ({who})");
                        reply_mio(
                            stream,
                            &Response::err(format!(
                                "permission denied: {who} may not control clsync-manager (root and the socket group only)"
                            )),
                        );
                        continue;
                    }
                    let t = self.token();
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, t, Interest::READABLE)
                        .is_ok()
                    {
                        self.clients.insert(
                            t,
                            Client {
                                stream,
                                buf: Vec::new(),
                            },
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    error!("control socket: {e}");
                    return;
                }
            }
        }
    }

    fn read_client(&mut self, t: Token) {
        let Some(c) = self.clients.get_mut(&t) else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let mut closed = false;
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let line_end = c.buf.iter().position(|&b| b == b'\n');
        if line_end.is_none() && !closed && c.buf.len() <= MAX_REQUEST {
            return;
        }
        let mut c = self.clients.remove(&t).expect("client");
        let _ = self.poll.registry().deregister(&mut c.stream);
        let line = match line_end {
            Some(n) => c.buf[..n].to_vec(),
            None if c.buf.len() > MAX_REQUEST => {
                reply_mio(c.stream, &Response::err("request too long"));
                return;
            }
            None => c.buf.clone(),
        };
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                reply_mio(c.stream, &Response::err(format!("malformed request: {e}")));
                return;
            }
        };
        debug!("control: {req:?}");
        match self.handle(&req) {
            Handled::Now(resp) => reply_mio(c.stream, &resp),
            Handled::Later { name, restart } => self.waiters.push(Waiter {
                stream: c.stream,
                name,
                restart,
            }),
        }
    }

    fn handle(&mut self, req: &Request) -> Handled {
        let name = || {
            req.name
                .clone()
                .ok_or_else(|| format!("{}: which instance? (give a name)", req.cmd))
        };
        let r = match req.cmd.as_str() {
            "status" => self.cmd_status(req.name.as_deref()),
            "list" => self.cmd_list(),
            "start" => name().and_then(|n| self.cmd_start(&n)),
            "stop" => return self.with_name(req, |d, n| d.cmd_stop(n)),
            "restart" => return self.with_name(req, |d, n| d.cmd_restart(n)),
            "resync" => name().and_then(|n| self.cmd_resync(&n)),
            "resolve" => name().and_then(|n| self.cmd_resolve(&n, req.keep.as_deref())),
            "logs" => name().and_then(|n| self.cmd_logs(&n, req.lines.unwrap_or(50))),
            "reload" => self.reload().map(|_| json!({ "reloaded": true })),
            "metrics" => Ok(json!({ "text": super::metrics(&self.statuses()) })),
            "check" => {
                let mut out = Vec::new();
                let ok = crate::profile_config::check(&self.opts.profiles_dir, &[], &mut out);
                Ok(json!({ "ok": ok, "text": String::from_utf8_lossy(&out) }))
            }
            other => Err(format!(
                "unknown command {other:?} (valid: start, stop, restart, status, list, reload, resync, resolve, logs, metrics, check)"
            )),
        };
        Handled::Now(match r {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e),
        })
    }

    fn with_name(
        &mut self,
        req: &Request,
        f: impl FnOnce(&mut Self, &str) -> Result<Handled, String>,
    ) -> Handled {
        let r = match &req.name {
            Some(n) => self.canonical(n).and_then(|n| f(self, &n)),
            None => Err(format!("{}: which instance? (give a name)", req.cmd)),
        };
        r.unwrap_or_else(|e| Handled::Now(Response::err(e)))
    }

    /// The canonical instance name of `name` (`PROFILE`, `PROFILE@LABEL`,
    /// `PROFILE-LABEL`), checked against the profiles.
    fn canonical(&self, name: &str) -> Result<String, String> {
        if self.instances.contains_key(name) {
            return Ok(name.to_string());
        }
        let profiles = profile::load_dir(&self.opts.profiles_dir).map_err(|e| e.to_string())?;
        profile::resolve(&profiles, name, None)
            .map(|r| r.instance)
            .map_err(|e| e.to_string())
    }

    fn instance(&self, name: &str) -> Result<&Instance, String> {
        let n = self.canonical(name)?;
        self.instances
            .get(&n)
            .ok_or_else(|| format!("{n} is not running (start it with `clsync-manager start {n}`)"))
    }

    fn cmd_status(&self, name: Option<&str>) -> Result<serde_json::Value, String> {
        let list = match name {
            Some(n) => vec![self.instance(n)?.status()],
            None => self.statuses(),
        };
        serde_json::to_value(list).map_err(|e| e.to_string())
    }

    fn cmd_list(&self) -> Result<serde_json::Value, String> {
        let profiles = profile::load_dir(&self.opts.profiles_dir).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (name, p) in &profiles {
            let template = profile::is_template_profile(&profiles, name).unwrap_or(false);
            out.push(json!({
                "profile": name,
                "file": p.file.display().to_string(),
                "error": p.broken,
                "template": template,
                "autostart": p.values.autostart == Some(true),
                "instances": self.instances.values()
                    .filter(|i| &i.profile == name)
                    .map(|i| json!({"name": i.name, "state": i.state_name()}))
                    .collect::<Vec<_>>(),
            }));
        }
        Ok(serde_json::Value::Array(out))
    }

    fn cmd_start(&mut self, name: &str) -> Result<serde_json::Value, String> {
        if self.stopping {
            return Err("clsync-manager is stopping".into());
        }
        let profiles = profile::load_dir(&self.opts.profiles_dir).map_err(|e| e.to_string())?;
        let r = profile::resolve(&profiles, name, None).map_err(|e| e.to_string())?;
        // Refuse what the worker would refuse, before anything runs.
        let file = profiles[&r.profile].file.clone();
        crate::profile_config::config_of(&r, &file).map_err(|e| e.to_string())?;
        let n = r.instance.clone();
        let autostart = profiles[&r.profile].values.autostart == Some(true)
            && !profile::is_template_profile(&profiles, &r.profile).unwrap_or(true);
        let i = self.instances.entry(n.clone()).or_insert_with(|| {
            Instance::new(
                &n,
                &r.profile,
                fingerprint(&r.values),
                Policy::of(&r.values),
            )
        });
        i.on_demand |= !autostart;
        i.then_remove = false;
        match i.state {
            // Started again once the running stop is over.
            State::Stopping => i.then_start = true,
            State::Running | State::Starting | State::Waiting(_) => {}
            _ => {
                i.life.reset();
                i.last_error = None;
                i.state = State::Stopped;
                self.start(&n);
            }
        }
        self.save();
        let i = &self.instances[&n];
        if i.state == State::Failed {
            return Err(format!(
                "{n}: {}",
                i.last_error.clone().unwrap_or_else(|| "failed".into())
            ));
        }
        serde_json::to_value(i.status()).map_err(|e| e.to_string())
    }

    fn cmd_stop(&mut self, name: &str) -> Result<Handled, String> {
        let i = self
            .instances
            .get_mut(name)
            .ok_or_else(|| format!("{name} is not running"))?;
        // Stopped instances are forgotten (an autostart one starts again with the next
        // reload or manager start, as an enabled unit does after `systemctl stop`).
        i.on_demand = false;
        if let State::Waiting(pid) = i.state {
            // A previous manager's worker makes its final sync: answer when it is gone,
            // and do not start a new one.
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
            i.then_remove = true;
            self.save();
            return Ok(Handled::Later {
                name: name.to_string(),
                restart: false,
            });
        }
        if i.worker.is_none() {
            i.state = State::Stopped;
            i.restart_at = None;
            let st = i.status();
            self.instances.remove(name);
            self.save();
            return Ok(Handled::Now(Response::ok(
                serde_json::to_value(st).unwrap_or_default(),
            )));
        }
        i.then_start = false;
        i.then_remove = true;
        self.stop(name);
        self.save();
        Ok(Handled::Later {
            name: name.to_string(),
            restart: false,
        })
    }

    fn cmd_restart(&mut self, name: &str) -> Result<Handled, String> {
        if !self.instances.contains_key(name) {
            return Err(format!("{name} is not running (use start)"));
        }
        let running = self.instances[name].worker.is_some();
        self.restart(name);
        if running {
            return Ok(Handled::Later {
                name: name.to_string(),
                restart: true,
            });
        }
        let i = &self.instances[name];
        Ok(Handled::Now(Response::ok(
            serde_json::to_value(i.status()).unwrap_or_default(),
        )))
    }

    /// Ends a split-brain: the instance starts again keeping `keep`'s side.
    fn cmd_resolve(&mut self, name: &str, keep: Option<&str>) -> Result<serde_json::Value, String> {
        let keep = match keep {
            Some(k @ ("local" | "peer")) => k.to_string(),
            Some(k) => return Err(format!("resolve: --keep {k:?}: expected local or peer")),
            None => return Err("resolve: say which side to keep: --keep local|peer".into()),
        };
        let n = self.canonical(name)?;
        let i = self
            .instances
            .get_mut(&n)
            .ok_or_else(|| format!("{n} is not known to the manager"))?;
        if i.state != State::SplitBrain {
            return Err(format!("{n} is {}, not in split-brain", i.state_name()));
        }
        info!("[{n}] split-brain resolved by an operator: keeping the {keep} side");
        i.resolve = Some(keep);
        i.life.reset();
        i.last_error = None;
        i.state = State::Stopped;
        self.start(&n);
        let i = &self.instances[&n];
        serde_json::to_value(i.status()).map_err(|e| e.to_string())
    }

    fn cmd_resync(&mut self, name: &str) -> Result<serde_json::Value, String> {
        let i = self.instance(name)?;
        let w = i
            .worker
            .as_ref()
            .ok_or_else(|| format!("{}: no worker is running", i.name))?;
        nix::sys::signal::kill(Pid::from_raw(w.pid), Signal::SIGUSR2)
            .map_err(|e| format!("{}: {e}", i.name))?;
        info!("[{}] full resync requested", i.name);
        Ok(json!({ "name": i.name, "resync": true }))
    }

    fn cmd_logs(&self, name: &str, lines: usize) -> Result<serde_json::Value, String> {
        let i = self.instance(name)?;
        let skip = i.logs.len().saturating_sub(lines);
        Ok(json!({ "name": i.name, "lines": i.logs.iter().skip(skip).collect::<Vec<_>>() }))
    }

    fn read_pipe(&mut self, t: Token) {
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
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v.get("ready").and_then(|r| r.as_bool()) == Some(true)
                    && i.state == State::Starting
                {
                    i.state = State::Running;
                    i.last_error = None;
                    info!("[{}] running", i.name);
                }
                // Progress reports carry a few fields: merge, keep the counters.
                match (i.report.as_mut(), v) {
                    (Some(serde_json::Value::Object(old)), serde_json::Value::Object(new)) => {
                        old.extend(new)
                    }
                    (_, v) => i.report = Some(v),
                }
                reported = true;
            }
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

enum Handled {
    Now(Response),
    Later { name: String, restart: bool },
}

fn set_nonblocking(f: &File) {
    // SAFETY: fcntl on an open descriptor.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Whether `pid` is a live clsync worker (its command line names clsync).
/// Whether a worker (of this manager or an earlier one) holds the lock of `name`.
fn instance_held(state_dir: &Path, name: &str) -> bool {
    matches!(instance_lock::take(state_dir, name), Ok(Taken::Held(_)))
}

fn alive_worker(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.windows(6).any(|w| w == b"clsync"))
}

/// Writes a response (blocking, bounded by a timeout) and closes the connection.
fn reply_mio(stream: UnixStream, resp: &Response) {
    let fd = stream.into_raw_fd();
    // SAFETY: the descriptor was just released by the mio stream.
    let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    reply_std(std, resp);
}

fn reply_std(mut s: std::os::unix::net::UnixStream, resp: &Response) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut line = serde_json::to_vec(resp).unwrap_or_default();
    line.push(b'\n');
    let _ = s.write_all(&line);
}
