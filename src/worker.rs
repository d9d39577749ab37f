/*!
The worker loop: one thread, one `mio::Poll`, four sources of wake-ups.

- the watcher's event pipe: a reader thread empties the kernel's event queue as fast as
  events arrive and hands buffers over; every wake-up handles all of them
  ([`Watcher::drain`]);
- signals (signal-hook's pipe): TERM/INT/QUIT stop after a final sync, USR2 forces a full
  resync, HUP reloads the rules, USR1/IO log the state;
- a `Waker` poked by the thread that waits for the running rsync;
- the timeout: the batcher's next deadline, the next poll of unwatchable directories, a
  sync's timeout, the next look at a standby file.

Start-up order matters: the watches are set first, then the initial full sync runs, so a
change made while it runs is an event like any other. With rsyncdirect (threading off or
full) the initial sync runs beside the queue ([`Batcher::start_beside`]): such a change is
synced at once, not after a first copy that may take hours, and once more after it.
Ready (log line and status file) means both the watches and the initial sync are done.
*/

use crate::batcher::{Batch, Batcher, Class, Entry};
use crate::config::{preflight, Config, Initial, StartError};
use crate::dest::Dest;
use crate::report::{Health, Phase as ReportPhase, Report, Step};
use crate::sync::handler::{Context, Handler, HandlerConfig, Mode, Mover};
use crate::sync::{Finished, RunConfig, Runner, KILL_GRACE};
use crate::watch::{abs_path, Changes, Watcher};
use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::signal::Signal;
use signal_hook::consts::{SIGHUP, SIGINT, SIGIO, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const INOTIFY: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);

/// How often directories that could not be watched are rescanned.
const POLL_UNWATCHED: Duration = Duration::from_secs(5);
/// How often a standby file is looked at.
const STANDBY_CHECK: Duration = Duration::from_secs(1);
/// How long a pre-exit or exit hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the progress of a long full sync is logged and reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long a file just created waits for its writer to close it before it is synced
/// anyway (a hard link, a symlink, a writer that keeps it open).
const CREATE_SETTLE: Duration = Duration::from_millis(100);

/// A file held back because it is being written: a file just created waits for its
/// `IN_CLOSE_WRITE` (at most [`CREATE_SETTLE`]), so a new file costs one rsync run, not one
/// for its creation and another for its content, even at zero delays; with
/// `wait-for-close`, a file written but not closed waits for its close (at most the cap,
/// then again every cap while it stays open).
#[derive(Clone, Copy, Debug)]
struct Held {
    /// When its first event came (its place in the queue when it is released).
    since: Instant,
    /// When it is synced anyway (with wait-for-close: and held again, for the next round).
    due: Instant,
    /// The events' masks, for the handler.
    mask: u32,
}

/// The pid file: refuses to start over a live pid, replaces a stale one, and is removed
/// at exit if it still names this process.
struct PidFile(PathBuf);

impl PidFile {
    /// Refuses to go on if the file names a live process other than this one.
    fn check(path: &std::path::Path) -> Result<(), StartError> {
        let me = std::process::id() as i32;
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                let alive = pid > 0
                    && pid != me
                    && !matches!(
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                        Err(nix::errno::Errno::ESRCH)
                    );
                if alive {
                    return Err(StartError::Other(format!(
                        "pid file {}: another process is running as pid {pid}; not starting a second instance",
                        path.display()
                    )));
                }
            }
        }
        Ok(())
    }

    fn create(path: &std::path::Path) -> Result<PidFile, StartError> {
        Self::check(path)?;
        let me = std::process::id() as i32;
        if let Some(stale) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .filter(|pid| *pid != me)
        {
            warn!(
                "pid file {}: replacing the stale pid {stale}",
                path.display()
            );
        }
        let mut tmp = path.as_os_str().to_os_string();
        tmp.push(format!(".tmp.{me}"));
        std::fs::write(&tmp, format!("{me}\n"))
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| StartError::Other(format!("pid file {}: {e}", path.display())))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let mine = std::fs::read_to_string(&self.0)
            .is_ok_and(|t| t.trim() == std::process::id().to_string());
        if mine {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Writes the status word to the status file atomically (temp file + rename), only
/// when it changes.
pub struct Status(Option<PathBuf>, std::cell::RefCell<String>);

impl Status {
    /// A missing directory of the status file (`/run/clsync` outside the units, which
    /// make it with RuntimeDirectory) is created (0755), or every change would warn.
    pub fn new(path: Option<PathBuf>) -> Self {
        if let Some(dir) = path.as_deref().and_then(std::path::Path::parent) {
            use std::os::unix::fs::DirBuilderExt;
            if !dir.as_os_str().is_empty() && !dir.exists() {
                if let Err(e) = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                {
                    warn!(
                        "cannot create the status file's directory {}: {e}",
                        dir.display()
                    );
                }
            }
        }
        Status(path, Default::default())
    }

    pub fn set(&self, word: &str) {
        let Some(path) = &self.0 else { return };
        if *self.1.borrow() == word {
            return;
        }
        *self.1.borrow_mut() = word.to_string();
        let mut tmp = path.clone().into_os_string();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let r = std::fs::write(&tmp, format!("{word}\n")).and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            warn!("cannot write the status file {}: {e}", path.display());
        }
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Phase {
    Running,
    /// Stop requested: finish the running sync, then one final sync of everything queued.
    Stopping {
        final_started: bool,
    },
    /// Second signal: rsync is being killed.
    Aborting {
        since: Instant,
        killed: bool,
    },
}

struct Worker {
    cfg: Config,
    src: PathBuf,
    watcher: Watcher,
    /// One per destination: its queue, handler and health.
    targets: Vec<Target>,
    runner: Runner,
    excludes: BTreeSet<Vec<u8>>,
    /// `modification-signature`: the last stat fields of each synced path.
    signatures: Option<crate::signature::Signatures>,
    status: Status,
    ready: bool,
    phase: Phase,
    next_poll: Option<Instant>,
    /// The exit code once the running rsync is gone, after an abort.
    abort_code: i32,
    /// Set while the standby file exists: when to look at it again.
    standby_check: Option<Instant>,
    /// Sync iterations done (batches, the initial sync included).
    iterations: u32,
    started: Instant,
    exit: Option<i32>,
    /// The worker gives up because syncs failed (the exit hook hears so).
    failed: bool,
    /// Reports to a supervisor (clsync-manager).
    reporter: crate::report::Reporter,
    /// The ssh control sockets' directory (ssh destinations only).
    control: Option<tempfile::TempDir>,
    /// A failover pair's link (its peer is the first destination).
    pair: Option<crate::pair::Link>,
    /// While a full sync runs: when its progress is logged and reported next.
    progress_at: Option<Instant>,
    /// When the next verification runs (`verify-interval`).
    verify_at: Option<Instant>,
    /// Files written but not closed yet (see [`Held`]).
    open_files: std::collections::HashMap<Vec<u8>, Held>,
    /// Counters for reports: changed paths seen, syncs done and failed.
    events: u64,
    syncs: u64,
    sync_failures: u64,
    /// When the last sync succeeded, and the last failure.
    last_ok: Option<std::time::SystemTime>,
    last_error: Option<String>,
}

/// One destination of the worker. Each has its own queue, retry backoff and health, so
/// a slow or dead node does not hold back the others: their syncs run in parallel.
struct Target {
    name: String,
    batcher: Batcher,
    handler: Handler,
    /// The initial sync to it succeeded (or was skipped).
    initial_ok: bool,
    /// Its initial sync failed at least once.
    initial_failed: bool,
    /// The last sync failed because the destination could not be reached.
    unreachable: bool,
    last_error: Option<String>,
    last_ok: Option<std::time::SystemTime>,
    /// When its oldest unsynced change was queued (the lag).
    behind_since: Option<std::time::SystemTime>,
}

/// rsync's exit codes that mean "could not reach or talk to the destination" (and 255,
/// ssh's own failure).
fn unreachable_code(code: Option<i32>) -> bool {
    matches!(code, Some(5 | 10 | 12 | 30 | 35 | 255))
}

/// Runs the worker until it is told to stop. Returns the process exit code.
pub fn run(cfg: Config) -> Result<i32, StartError> {
    let mut cfg = cfg;
    // The watch tree's tables grow by doubling; glibc's default (a threshold that rises
    // as big blocks are freed) puts the later generations on the heap, where each old
    // one leaves a hole that stays resident. A fixed threshold keeps every block of
    // 32 KiB or more in a mapping of its own: grown in place by mremap, returned on free.
    // SAFETY: mallopt only changes the allocator's settings.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 10) };
    let mut reporter = crate::report::Reporter::from_env();
    crate::manager::instance_lock::Inherited::adopt();
    if cfg.mode == Mode::Simple {
        // simple mode: every event goes to the handler at once, as in the original.
        cfg.delays = crate::batcher::Delays {
            collect: Duration::ZERO,
            collect_bigfile: Duration::ZERO,
            sync: Duration::ZERO,
        };
        cfg.threshold_bigfile = 0;
    }
    let status = Status::new(cfg.status_file.clone());
    status.set("starting");
    let rules = cfg
        .load_rules()
        .map_err(|e| StartError::Usage(e.to_string()))?;
    let (src, dsts, rsync) = preflight(&cfg)?;
    let dst = dsts[0].clone();
    if let Some(p) = &cfg.pid_file {
        PidFile::check(p)?;
    }
    // List files: in lists-dir if given (checked, kept with dont-unlink-lists), else in a
    // private temporary directory removed at exit.
    // The handler runs in the watch directory: list paths must be absolute.
    if let Some(d) = cfg.lists_dir.as_mut().filter(|d| d.is_relative()) {
        let cwd = std::env::current_dir()
            .map_err(|e| StartError::Other(format!("cannot read the current directory: {e}")))?;
        *d = cwd.join(&*d);
    }
    let lists = match &cfg.lists_dir {
        Some(d) => {
            crate::config::check_lists_dir(d)?;
            None
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("clsync-lists.")
                .tempdir()
                .map_err(|e| {
                    StartError::Other(format!("cannot create a directory for list files: {e}"))
                })?;
            // The worker writes its lists after dropping to `uid`; a handler running as
            // another user must be able to read them (the directory is then 0711: its
            // files can be opened by name, not listed).
            use std::os::unix::fs::PermissionsExt;
            let fail = |e: &dyn std::fmt::Display| {
                StartError::Other(format!("lists directory {}: {e}", t.path().display()))
            };
            if cfg.uid.is_some() || cfg.gid.is_some() {
                nix::unistd::chown(
                    t.path(),
                    cfg.uid.map(nix::unistd::Uid::from_raw),
                    cfg.gid.map(nix::unistd::Gid::from_raw),
                )
                .map_err(|e| fail(&e))?;
            }
            let writer = cfg.uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
            if cfg.sync_handler_uid.is_some_and(|u| u != writer) {
                std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o711))
                    .map_err(|e| fail(&e))?;
            }
            Some(t)
        }
    };
    let lists_dir = match (&lists, &cfg.lists_dir) {
        (Some(t), _) => t.path().to_path_buf(),
        (None, Some(d)) => d.clone(),
        (None, None) => unreachable!("one of the two is set"),
    };

    // ssh destinations share one connection each; its control socket lives here.
    let control = if cfg
        .destinations()
        .iter()
        .any(|d| matches!(d, Dest::Ssh { .. }))
    {
        Some(
            tempfile::Builder::new()
                .prefix("clsync-ssh.")
                .tempdir()
                .map_err(|e| {
                    StartError::Other(format!("cannot create a directory for ssh: {e}"))
                })?,
        )
    } else {
        None
    };

    // A failover pair: bring both sides together before anything is watched or synced
    // (or, when the peer cannot be reached, once it can: nothing is synced to it before).
    let mut peer_excluded = Vec::new();
    let pair = match (&cfg.pair, Dest::parse(dst.as_os_str())) {
        (Some(settings), Dest::Ssh { host, path }) => {
            let dir = control.as_ref().expect("made for ssh").path();
            let mut ssh = cfg.ssh.argv(dir);
            ssh.push("--".into());
            ssh.push(host.clone().into());
            let mut link = crate::pair::Link::new(
                settings.clone(),
                ssh,
                host,
                path,
                rsync.clone(),
                cfg.ssh.rsync_e(dir),
            );
            status.set("pairing");
            match link.check(&src, &rules) {
                Ok(crate::pair::Step::Go(excluded)) => peer_excluded = excluded,
                Ok(crate::pair::Step::Waiting) if cfg.initial == Initial::Only => {
                    return Err(StartError::Other(
                        "pair check: the peer cannot be reached".into(),
                    ))
                }
                Ok(crate::pair::Step::Waiting) => {}
                Ok(crate::pair::Step::SplitBrain(msg)) => {
                    error!("{msg}");
                    status.set("split-brain");
                    reporter.send(&Report::Step(Step {
                        phase: ReportPhase::SplitBrain,
                        watches: None,
                        progress: None,
                        last_error: Some(msg),
                    }));
                    return Ok(crate::pair::SPLIT_BRAIN_EXIT);
                }
                Err(e) => return Err(StartError::Other(format!("pair check: {e}"))),
            }
            Some(link)
        }
        _ => None,
    };

    let started = Instant::now();
    let (watcher, init) =
        Watcher::new(&src, rules, cfg.one_file_system, cfg.monitor, &mut |dirs| {
            info!(
                "setting watches: {dirs} directories so far ({:.0}s)",
                started.elapsed().as_secs_f64()
            );
            reporter.send(&Report::Step(Step {
                phase: ReportPhase::Watching,
                watches: Some(dirs),
                progress: None,
                last_error: None,
            }));
        })?;
    reporter.send(&Report::Step(Step {
        phase: ReportPhase::Initsync,
        watches: Some(watcher.watched()),
        progress: None,
        last_error: None,
    }));
    info!(
        "watching {} under {} ({:.1}s)",
        watcher.describe(),
        src.display(),
        started.elapsed().as_secs_f64()
    );
    if cfg.background {
        if cfg.output == crate::logger::Output::Stderr {
            warn!("going to the background: the log goes to /dev/null (use --output syslog)");
        }
        // No thread exists yet: the inotify fd and the watches survive the fork.
        nix::unistd::daemon(true, false)
            .map_err(|e| StartError::Other(format!("cannot go to the background: {e}")))?;
    }
    // After the fork, so the file names the process that stays.
    let _pid_file = match &cfg.pid_file {
        Some(p) => Some(PidFile::create(p)?),
        None => None,
    };

    drop_privileges(cfg.uid, cfg.gid)?;

    let mut poll = Poll::new().map_err(|e| StartError::Other(format!("epoll: {e}")))?;
    let waker = Arc::new(
        Waker::new(poll.registry(), WAKER).map_err(|e| StartError::Other(format!("waker: {e}")))?,
    );
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGIO])
        .map_err(|e| StartError::Other(format!("signals: {e}")))?;
    // After the fork (threads do not survive it): a thread empties the kernel queue
    // while the loop prepares syncs.
    let mut watcher = watcher;
    watcher
        .start_pump()
        .map_err(|e| StartError::Other(format!("event reader thread: {e}")))?;
    let registry = poll.registry();
    for fd in watcher
        .fds()
        .map_err(|e| StartError::Other(format!("epoll: {e}")))?
    {
        registry
            .register(&mut SourceFd(&fd), INOTIFY, Interest::READABLE)
            .map_err(|e| StartError::Other(format!("epoll: {e}")))?;
    }
    registry
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(|e| StartError::Other(format!("epoll: {e}")))?;

    let label = cfg.label.clone().unwrap_or_else(|| "nolabel".into());
    let so = if cfg.mode.is_so() {
        let opts = crate::sync::so::SoOptions {
            mode: Some(if cfg.mode == Mode::So {
                crate::sync::so::SoMode::So
            } else {
                crate::sync::so::SoMode::RsyncSo
            }),
            debug: i32::from(cfg.debug),
            rsync_prefer_include: cfg.rsync_prefer_include,
            ..Default::default()
        };
        Some(
            crate::sync::so::SoHandler::load_with(&rsync, &src, &dst, &label, &opts)
                .map_err(StartError::Handler)?,
        )
    } else {
        None
    };
    let runner = Runner::new(
        RunConfig {
            name: if cfg.mode == Mode::RsyncDirect && cfg.handler_args.is_none() {
                "rsync".into()
            } else {
                format!("sync handler {}", rsync.display())
            },
            cwd: src.clone(),
            ok_codes: cfg.mode.ok_codes(),
            ignore_exitcodes: cfg.ignore_exitcodes.clone(),
            timeout: cfg.timeout_sync,
            keep_lists: cfg.dont_unlink_lists,
            uid: cfg.sync_handler_uid,
            gid: cfg.sync_handler_gid,
            stderr_to_log: cfg.mode == Mode::RsyncDirect && cfg.handler_args.is_none(),
        },
        waker,
    );
    let mut so = so;
    let mut targets = Vec::new();
    for d in &dsts {
        let dest = Dest::parse(d.as_os_str());
        let mut rsync_extra: Vec<std::ffi::OsString> = Vec::new();
        let mut mover = match &dest {
            Dest::Local(p) => Mover::Local(p.clone()),
            _ => Mover::None,
        };
        match &dest {
            Dest::Ssh { host, path } => {
                let dir = control.as_ref().expect("made for ssh").path();
                rsync_extra.push("-e".into());
                rsync_extra.push(cfg.ssh.rsync_e(dir));
                let mut argv = cfg.ssh.argv(dir);
                argv.push("--".into());
                argv.push(host.into());
                mover = Mover::Ssh {
                    argv,
                    path: path.clone(),
                };
            }
            Dest::Daemon(_) => {
                if let Some(f) = &cfg.rsync_password_file {
                    let mut a = std::ffi::OsString::from("--password-file=");
                    a.push(f);
                    rsync_extra.push(a);
                }
            }
            Dest::Local(_) => {}
        }
        rsync_extra.extend(cfg.rsync_options.iter().cloned());
        if cfg.mode != Mode::RsyncDirect || cfg.threading != crate::batcher::Threading::Off {
            mover = Mover::None;
        }
        let handler = Handler::new(
            HandlerConfig {
                mode: cfg.mode,
                program: rsync.clone(),
                args: cfg.handler_args.clone(),
                src: src.clone(),
                dst: d.clone(),
                label: label.clone(),
                lists_dir: lists_dir.clone(),
                one_file_system: cfg.one_file_system,
                rsync_inclimit: cfg.rsync_inclimit,
                synclist_simplify: cfg.synclist_simplify,
                have_recursive_sync: cfg.have_recursive_sync,
                lists_nul: cfg.lists_nul,
                rsync_prefer_include: cfg.rsync_prefer_include,
                rsync_extra,
                mover,
                progress: cfg
                    .progress
                    .unwrap_or(watcher.watched() >= crate::config::PROGRESS_MIN_DIRS),
            },
            so.take(),
        );
        targets.push(Target {
            name: dest.show(),
            batcher: Batcher::with_threading(cfg.delays, cfg.threading, cfg.max_parallel_syncs),
            handler,
            initial_ok: false,
            initial_failed: false,
            unreachable: false,
            last_error: None,
            last_ok: None,
            behind_since: None,
        });
    }
    let signatures = (cfg.modification_signature != 0)
        .then(|| crate::signature::Signatures::new(cfg.modification_signature));
    let mut w = Worker {
        targets,
        control,
        pair,
        cfg,
        src,
        watcher,
        runner,
        excludes: init.excluded.into_iter().chain(peer_excluded).collect(),
        signatures,
        status,
        ready: false,
        phase: Phase::Running,
        next_poll: None,
        abort_code: 1,
        standby_check: None,
        iterations: 0,
        started,
        exit: None,
        failed: false,
        reporter,
        progress_at: None,
        verify_at: None,
        open_files: Default::default(),
        events: 0,
        syncs: 0,
        sync_failures: 0,
        last_ok: None,
        last_error: None,
    };
    w.status.set("initsync");
    if w.pair.as_ref().is_some_and(|l| l.waiting()) {
        w.hold_pair();
    }
    if w.cfg.initial == Initial::Skip {
        info!("initial sync skipped (skip-initialsync)");
        for t in &mut w.targets {
            t.initial_ok = true;
        }
        w.became_ready();
    } else {
        for t in 0..w.targets.len() {
            if t == 0 && w.pair.as_ref().is_some_and(|l| l.waiting()) {
                continue;
            }
            info!(
                "initial sync of {} to {}",
                w.src.display(),
                w.targets[t].name
            );
            w.start_full(t, false);
        }
    }

    let mut events = Events::with_capacity(64);
    let code = loop {
        if let Some(code) = w.exit {
            break code;
        }
        let timeout = w.timeout(Instant::now());
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(StartError::Other(format!("epoll: {e}")));
        }
        for ev in events.iter() {
            match ev.token() {
                INOTIFY => w.drain(),
                SIGNALS => {
                    for sig in signals.pending() {
                        w.signal(sig);
                    }
                }
                WAKER => {
                    for f in w.runner.poll() {
                        w.finished(f);
                    }
                }
                _ => {}
            }
        }
        w.tick(Instant::now());
    };
    // A clean stop after the final sync: both sides are equal, record it.
    if code == 0 && w.ready && matches!(w.phase, Phase::Stopping { .. }) {
        if let Some(link) = &mut w.pair {
            link.clean_stop();
        }
    }
    w.close_ssh();
    w.status.set("exiting");
    if let Some(hook) = w.cfg.exit_hook.clone() {
        if w.ready {
            let why = if w.failed {
                "synchandler error"
            } else {
                "exiting"
            };
            w.run_hook(&hook, why, Some(code));
        }
    }
    Ok(code)
}

impl Worker {
    fn timeout(&self, now: Instant) -> Option<Duration> {
        let mut t: Option<Instant> = None;
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        if self.phase == Phase::Running {
            for t in &self.targets {
                consider(t.batcher.deadline());
            }
        }
        consider(self.next_poll);
        consider(self.pair.as_ref().and_then(|l| l.retry_at()));
        consider(self.runner.deadline());
        consider(self.standby_check);
        consider(self.progress_at);
        consider(self.open_files.values().map(|h| h.due).min());
        if self.phase == Phase::Running {
            consider(self.verify_at);
        }
        if let Phase::Aborting { since, .. } = self.phase {
            consider(Some(since + KILL_GRACE));
        }
        if matches!(self.phase, Phase::Stopping { .. })
            && !self.runner.busy()
            && self.standby_check.is_none()
        {
            return Some(Duration::ZERO);
        }
        t.map(|t| t.saturating_duration_since(now))
    }

    fn drain(&mut self) {
        let mut changes = Changes::default();
        if let Err(e) = self.watcher.drain(&mut changes) {
            error!("reading inotify events: {e}");
        }
        self.apply(changes);
    }

    /// [`drain`](Self::drain) behind a barrier: every event queued in the kernel so far
    /// is handled. If the reader thread cannot give that guarantee, the whole tree is
    /// queued instead: a full sync cannot miss what the events would have said.
    fn drain_all(&mut self) {
        let mut changes = Changes::default();
        if let Err(e) = self.watcher.drain_all(&mut changes) {
            error!("reading the last events: {e}; syncing the whole tree instead");
            changes.dirty.push(crate::watch::Dirty {
                path: Vec::new(),
                recursive: true,
                modify_only: false,
                mask: crate::watch::MASK_FOUND_DIR,
            });
        }
        self.apply(changes);
    }

    fn apply(&mut self, changes: Changes) {
        if changes.root_gone {
            error!(
                "the watch directory {} was deleted, moved away or unmounted; stopping without syncing (nothing is deleted at the destination)",
                self.src.display()
            );
            self.abort(1);
            return;
        }
        self.excludes.extend(changes.excluded);
        self.events += changes.dirty.len() as u64;
        for (from, to) in &changes.moves {
            for t in &mut self.targets {
                t.batcher.push_move(from.clone(), to.clone());
            }
        }
        let now = Instant::now();
        for mut d in changes.dirty {
            let at = if d.recursive {
                now
            } else {
                match self.hold(now, &mut d) {
                    Some(at) => at,
                    None => continue,
                }
            };
            self.push_dirty(at, d);
        }
        if self.watcher.unwatched() > 0 && self.next_poll.is_none() {
            self.next_poll = Some(now + POLL_UNWATCHED);
        }
    }

    /// Queues one changed path for every destination (its class decided by its size,
    /// skipped when its modification signature did not change).
    fn push_dirty(&mut self, now: Instant, d: crate::watch::Dirty) {
        let class = if d.recursive || (self.cfg.threshold_bigfile == 0 && self.signatures.is_none())
        {
            Class::Normal
        } else {
            // A write to a queued path: only its mask (a write is what makes rsync check
            // the content, sync/plan.rs).
            if d.modify_only
                && self
                    .targets
                    .iter_mut()
                    .all(|t| t.batcher.merge_mask(&d.path, d.mask))
            {
                return;
            }
            // An event that cannot have changed the size (chmod, touch, chown) of a path
            // queued already: no lstat (the hottest syscall of an event storm), its mask is
            // merged into the queued one.
            const RESIZES: u32 =
                libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_CREATE | libc::IN_MOVED_TO;
            if d.mask & RESIZES == 0
                && self.signatures.is_none()
                && self.targets.iter().all(|t| t.batcher.contains(&d.path))
            {
                for t in &mut self.targets {
                    t.batcher.merge_mask(&d.path, d.mask);
                }
                return;
            }
            match std::fs::symlink_metadata(abs_path(&self.src, &d.path)) {
                Ok(m) => {
                    if let Some(sigs) = &mut self.signatures {
                        if sigs.unchanged(&d.path, &m) {
                            debug!(
                                "{}: modification signature unchanged; not synced",
                                String::from_utf8_lossy(&d.path)
                            );
                            return;
                        }
                    }
                    if self.cfg.threshold_bigfile > 0
                        && m.is_file()
                        && m.len() > self.cfg.threshold_bigfile
                    {
                        Class::Big
                    } else {
                        Class::Normal
                    }
                }
                // Gone (a deletion is never skipped).
                Err(_) => Class::Normal,
            }
        };
        // The path is moved into the last destination's queue, copied for the others.
        let (last, others) = self
            .targets
            .split_last_mut()
            .expect("at least one destination");
        for t in others {
            t.behind_since
                .get_or_insert_with(std::time::SystemTime::now);
            t.batcher
                .push_event(now, d.path.clone(), d.recursive, d.mask, class);
        }
        last.behind_since
            .get_or_insert_with(std::time::SystemTime::now);
        last.batcher
            .push_event(now, d.path, d.recursive, d.mask, class);
    }

    /// Whether the event `d` of a file leaves it held back as being written ([`Held`]).
    /// An event that ends the writing (close, delete, rename) releases it.
    /// Returns when the path is to be queued (now, or as of the first event of a held file
    /// it releases, whose masks are merged into `d`), or `None` while it stays held.
    fn hold(&mut self, now: Instant, d: &mut crate::watch::Dirty) -> Option<Instant> {
        const ENDS: u32 = libc::IN_CLOSE_WRITE
            | libc::IN_DELETE
            | libc::IN_MOVED_FROM
            | libc::IN_MOVED_TO
            | libc::IN_DELETE_SELF;
        if d.mask & ENDS != 0 || d.mask & libc::IN_ISDIR != 0 {
            if self.open_files.is_empty() {
                return Some(now);
            }
            // Released: queued as of its first event, so the delays count from there.
            return Some(self.open_files.remove(&d.path).map_or(now, |h| {
                d.mask |= h.mask;
                d.modify_only = false;
                h.since
            }));
        }
        if let Some(h) = self.open_files.get_mut(&d.path) {
            h.mask |= d.mask;
            return None;
        }
        let created = d.mask & libc::IN_CREATE != 0;
        let cap = match self.cfg.wait_for_close {
            Some(cap) if created || d.mask & libc::IN_MODIFY != 0 => cap,
            None if created && self.phase == Phase::Running => CREATE_SETTLE,
            _ => return Some(now),
        };
        self.open_files.insert(
            d.path.clone(),
            Held {
                since: now,
                due: now + cap,
                mask: d.mask,
            },
        );
        None
    }

    /// Held files whose time is up are synced anyway (a log that is never closed: with
    /// wait-for-close it is held again for the next round). `all`: every held file (the
    /// final sync).
    fn release_open_files(&mut self, now: Instant, all: bool) {
        let due: Vec<(Vec<u8>, Held)> = self
            .open_files
            .iter()
            .filter(|(_, h)| all || now >= h.due)
            .map(|(p, h)| (p.clone(), *h))
            .collect();
        for (path, h) in due {
            match (all, self.cfg.wait_for_close) {
                (false, Some(cap)) => {
                    self.open_files.insert(
                        path.clone(),
                        Held {
                            since: now,
                            due: now + cap,
                            mask: libc::IN_MODIFY,
                        },
                    );
                }
                _ => {
                    self.open_files.remove(&path);
                }
            }
            self.push_dirty(
                h.since,
                crate::watch::Dirty {
                    path,
                    recursive: false,
                    modify_only: false,
                    mask: h.mask,
                },
            );
        }
    }

    /// The worker's state as one JSON object (SIGUSR1, SIGIO), for people and scripts.
    fn state_json(&self) -> String {
        serde_json::to_string(&self.state()).unwrap_or_default()
    }

    /// The worker's state, as reported to the supervisor.
    fn state(&self) -> crate::report::State {
        let phase = match self.phase {
            Phase::Running => ReportPhase::Running,
            Phase::Stopping { .. } => ReportPhase::Stopping,
            Phase::Aborting { .. } => ReportPhase::Aborting,
        };
        let unix = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
        };
        let now = std::time::SystemTime::now();
        let destinations = self
            .targets
            .iter()
            .map(|t| crate::report::Destination {
                destination: t.name.clone(),
                state: if t.unreachable {
                    Health::Unreachable
                } else if t.batcher.failures() > 0 {
                    Health::Failing
                } else {
                    Health::Ok
                },
                queued: t.batcher.len(),
                consecutive_failures: t.batcher.failures(),
                lag_s: t
                    .behind_since
                    .and_then(|b| now.duration_since(b).ok())
                    .map_or(0.0, |d| (d.as_secs_f64() * 10.0).round() / 10.0),
                last_sync_unix: unix(t.last_ok),
                last_error: t.last_error.clone(),
            })
            .collect();
        crate::report::State {
            phase,
            ready: self.ready,
            queued: self
                .targets
                .iter()
                .map(|t| t.batcher.len())
                .max()
                .unwrap_or(0),
            syncing: self.runner.busy(),
            running_syncs: self.runner.running(),
            consecutive_failures: self
                .targets
                .iter()
                .map(|t| t.batcher.failures())
                .max()
                .unwrap_or(0),
            iterations: self.iterations,
            watches: self.watcher.watched(),
            unwatched_dirs: self.watcher.unwatched(),
            standby: self.standby_check.is_some(),
            uptime_s: (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            events: self.events,
            syncs: self.syncs,
            sync_failures: self.sync_failures,
            last_sync_unix: unix(self.last_ok),
            last_error: self.last_error.clone(),
            destinations,
        }
    }

    /// Ends the shared ssh connections (their masters would linger for a minute).
    fn close_ssh(&self) {
        let Some(dir) = &self.control else { return };
        for d in self.cfg.destinations() {
            let Dest::Ssh { host, .. } = d else { continue };
            let argv = self.cfg.ssh.argv(dir.path());
            let _ = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .args(["-O", "exit", "--", &host])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// Sends the state to the supervisor, if there is one.
    fn report(&mut self) {
        self.reporter.send(&Report::State(self.state()));
    }

    fn became_ready(&mut self) {
        self.ready = true;
        self.verify_at = self.cfg.verify_interval.map(|i| Instant::now() + i);
        info!(
            "ready: watching {} ({:.1}s after start)",
            self.watcher.describe(),
            self.started.elapsed().as_secs_f64()
        );
        if self.phase == Phase::Running {
            self.status.set("running");
        }
        self.report();
    }

    fn signal(&mut self, sig: i32) {
        match sig {
            SIGTERM | SIGINT | SIGQUIT => match self.phase {
                Phase::Running => {
                    info!(
                        "signal {}: final sync of {} queued paths, then exit",
                        signame(sig),
                        self.queued()
                    );
                    if let Some(hook) = self.cfg.pre_exit_hook.clone() {
                        if self.ready {
                            self.status.set("preexit");
                            self.run_hook(&hook, "preexit", None);
                        }
                    }
                    self.status.set("terminating");
                    self.phase = Phase::Stopping {
                        final_started: false,
                    };
                }
                Phase::Stopping { .. } => {
                    warn!("signal {} again: aborting the final sync", signame(sig));
                    self.abort(1);
                }
                Phase::Aborting { .. } => {}
            },
            SIGUSR2 => {
                info!("signal USR2: full resync");
                for t in &mut self.targets {
                    t.batcher.push_event(
                        Instant::now(),
                        Vec::new(),
                        true,
                        crate::watch::MASK_FOUND_DIR,
                        Class::Normal,
                    );
                }
            }
            SIGHUP if self.phase != Phase::Running => {
                info!("signal HUP: stopping; nothing reloaded")
            }
            SIGHUP => self.reload(),
            SIGUSR1 | SIGIO => {
                let state = self.state_json();
                info!("state: {state}");
                if let Some(dir) = &self.cfg.dump_dir {
                    dump(dir, &state);
                }
            }
            _ => debug!("signal {sig} ignored"),
        }
    }

    /// SIGHUP: parses the command line again (re-reading a profile or configuration
    /// file), applies what can change at run time and reloads the rules; a setting that
    /// needs a restart is named in the log and left as it was. A configuration with an
    /// error changes nothing.
    fn reload(&mut self) {
        let new = match &self.cfg.reload_args {
            Some(args) => match crate::cli::parse(args.clone()) {
                Ok(c) => c,
                Err(e) => {
                    error!(
                        "signal HUP: keeping the old configuration: {}",
                        e.to_string().trim()
                    );
                    return;
                }
            },
            None => self.cfg.clone(),
        };
        let rules = match new.load_rules() {
            Ok(r) => r,
            Err(e) => {
                error!("signal HUP: keeping the old rules and configuration: {e}");
                return;
            }
        };
        self.status.set("rehashing");
        let restart = self.cfg.restart_needed_for(&new);
        if !restart.is_empty() {
            warn!(
                "signal HUP: {} changed; that takes a restart (kept as it was)",
                restart.join(", ")
            );
        }
        let old = self.cfg.clone();
        self.cfg.reload_from(new);
        if self.cfg.mode == Mode::Simple {
            self.cfg.delays = old.delays;
        }
        for t in &mut self.targets {
            t.batcher.set_delays(self.cfg.delays);
            t.handler.set_inclimit(self.cfg.rsync_inclimit);
        }
        self.runner
            .set_policy(self.cfg.ignore_exitcodes.clone(), self.cfg.timeout_sync);
        if self.cfg.modification_signature != old.modification_signature {
            self.signatures = (self.cfg.modification_signature != 0)
                .then(|| crate::signature::Signatures::new(self.cfg.modification_signature));
        }
        crate::logger::set_level(self.cfg.debug, self.cfg.quiet);
        info!("signal HUP: configuration and rules reloaded; rescanning the tree");
        // The rescan lists what the new rules exclude.
        self.excludes.clear();
        if let Some(l) = &self.pair {
            self.excludes.extend(l.excluded.iter().cloned());
        }
        let mut changes = Changes::default();
        self.watcher.set_rules(rules, &mut changes);
        self.apply(changes);
        if self.ready {
            self.status.set("running");
        }
    }

    /// Stops now: kills a running rsync (TERM, then KILL after a grace period).
    fn abort(&mut self, code: i32) {
        if !self.runner.busy() {
            self.exit = Some(code);
            return;
        }
        self.runner.signal(Signal::SIGTERM);
        self.phase = Phase::Aborting {
            since: Instant::now(),
            killed: false,
        };
        self.abort_code = code;
    }

    /// Paths waiting, for the destination that is furthest behind.
    fn queued(&self) -> usize {
        self.targets
            .iter()
            .map(|t| t.batcher.len())
            .max()
            .unwrap_or(0)
    }

    /// Starts a batch for destination `t`.
    fn start(&mut self, t: usize, batch: Batch) {
        if batch.is_full() {
            self.progress_at = Some(Instant::now() + PROGRESS_EVERY);
        }
        debug!(
            "sync of {} paths to {} ({} running)",
            batch.entries.len(),
            self.targets[t].name,
            self.runner.running()
        );
        // An empty source is an unmounted disk until told otherwise: syncing it would
        // delete everything at the destination.
        if !self.cfg.allow_empty_source
            && crate::config::dir_is_empty(&self.src)
            && !crate::config::dst_is_empty(self.targets[t].handler.dst())
        {
            error!(
                "{}",
                crate::config::empty_source_message(&self.src, self.targets[t].handler.dst())
            );
            // Its paths stay queued (for the log's count); nothing runs.
            self.targets[t]
                .batcher
                .complete(Instant::now(), batch, false);
            self.abort(1);
            return;
        }
        // A sync deletes what the source lacks (a full one everywhere): the destination is
        // checked again by identity first (a bind mount made since the start must not
        // alias the source).
        let dst = self.targets[t].handler.dst();
        if let Err(e) = crate::config::recheck_destination(&self.cfg, &self.src, dst) {
            error!("{e}: not syncing; exiting");
            self.targets[t]
                .batcher
                .complete(Instant::now(), batch, false);
            self.abort(3);
            return;
        }
        let none = BTreeSet::new();
        let excludes =
            if !self.ready && self.cfg.full_initialsync && batch.is_full() && self.pair.is_none() {
                &none // full-initialsync: the initial sync ignores the rules' excludes
            } else {
                &self.excludes
            };
        let status = if !self.ready {
            "initsync"
        } else if self.targets[t].batcher.failures() > 0 {
            "synchandler error"
        } else {
            "running"
        };
        let ctx = Context {
            rules: self.watcher.rules(),
            excludes,
            status,
            iteration: self.iterations,
        };
        if let (0, Some(l)) = (t, &mut self.pair) {
            l.sync_started(&self.src, &batch);
        }
        let f = match self.targets[t].handler.steps(&batch, &ctx) {
            Ok(steps) => self.runner.start(t, batch, steps),
            Err(e) => Some(Finished {
                tag: t,
                batch,
                result: Err(format!("cannot write the list files: {e}")),
                code: None,
                itemized: None,
            }),
        };
        if let Some(f) = f {
            self.finished(f);
        }
    }

    /// A batch is over: bookkeeping, then a report to the supervisor.
    fn finished(&mut self, f: Finished) {
        self.finish_batch(f);
        self.report();
    }

    fn finish_batch(&mut self, f: Finished) {
        let now = Instant::now();
        let full = f.batch.is_full();
        let n = f.batch.entries.len();
        let ok = f.result.is_ok();
        let ti = f.tag;
        let verify = f.batch.verify;
        if full {
            self.progress_at = None;
        }
        if let (0, Some(l)) = (ti, &mut self.pair) {
            l.sync_finished(&self.src, self.watcher.rules(), &f.batch, ok);
        }
        let t = &mut self.targets[ti];
        t.batcher.complete(now, f.batch, ok);
        self.iterations += 1;
        match &f.result {
            Ok(()) => {
                let at = std::time::SystemTime::now();
                self.syncs += 1;
                self.last_ok = Some(at);
                t.last_ok = Some(at);
                if t.unreachable {
                    info!("{} is reachable again", t.name);
                }
                t.unreachable = false;
                t.last_error = None;
                if t.batcher.is_empty() {
                    t.behind_since = None;
                }
                if full {
                    t.initial_ok = true;
                }
            }
            Err(why) => {
                self.sync_failures += 1;
                self.last_error = Some(why.clone());
                t.last_error = Some(why.clone());
                t.unreachable = unreachable_code(f.code);
                if full {
                    t.initial_failed = true;
                }
            }
        }
        let several = self.targets.len() > 1;
        let t = &self.targets[ti];
        let to = if several {
            format!(" to {}", t.name)
        } else {
            String::new()
        };
        if let (true, Ok(()), Some(it)) = (verify, &f.result, &f.itemized) {
            if it.count == 0 {
                info!("verify{to}: no drift");
            } else {
                warn!(
                    "verify{to}: {} differences repaired (for example: {})",
                    it.count,
                    it.first.join(", ")
                );
            }
        }
        if let Err(why) = &f.result {
            let retries = self.cfg.give_up_after();
            let give_up =
                retries > 0 && !self.cfg.ignore_failures && t.batcher.failures() >= retries;
            let aborting = matches!(self.phase, Phase::Aborting { .. });
            if give_up && self.phase == Phase::Running {
                error!(
                    "sync{to} failed: {why}; giving up after {} tries in a row (retries = {}): exiting; {n} paths were not synced",
                    t.batcher.failures(),
                    retries
                );
                // Parallel syncs still running are stopped too.
                self.failed = true;
                self.abort(f.code.filter(|c| *c != 0).unwrap_or(1));
                return;
            } else if !aborting {
                error!(
                    "sync{to} failed: {why}; {n} paths stay queued, next try in {}s{}",
                    t.batcher.backoff().as_secs_f64(),
                    if t.unreachable { " (unreachable)" } else { "" }
                );
                if self.ready && self.phase == Phase::Running {
                    self.status.set("synchandler error");
                }
            }
        } else if self.ready
            && self.phase == Phase::Running
            && self.standby_check.is_none()
            && self.targets.iter().all(|t| t.batcher.failures() == 0)
        {
            self.status.set("running");
        }
        // Ready once every destination had its initial sync; with several, one that
        // cannot be reached does not hold back the others (it is retried).
        let initial_done = self
            .targets
            .iter()
            .all(|t| t.initial_ok || (several && t.initial_failed))
            && self.targets.iter().any(|t| t.initial_ok);
        if full && !self.ready && initial_done {
            info!(
                "initial sync done ({:.1}s after start)",
                self.started.elapsed().as_secs_f64()
            );
            self.became_ready();
            if self.cfg.initial == Initial::Only && self.phase == Phase::Running {
                info!("only-initialsync: exiting");
                self.exit = Some(0);
            }
        }
        match self.phase {
            Phase::Stopping {
                final_started: true,
            } => {
                if !ok {
                    error!(
                        "final sync{to} failed: {} paths were not synced",
                        self.targets[ti].batcher.len()
                    );
                    self.abort_code = 1;
                }
                if !self.runner.busy() {
                    if self.abort_code == 0 {
                        info!("final sync done");
                    }
                    self.exit = Some(self.abort_code);
                }
            }
            Phase::Aborting { .. } if !self.runner.busy() => self.exit = Some(self.abort_code),
            _ => {}
        }
    }

    fn tick(&mut self, now: Instant) {
        if self.exit.is_some() {
            return;
        }
        if self.progress_at.is_some_and(|t| now >= t) {
            self.progress_at = self.runner.busy().then_some(now + PROGRESS_EVERY);
            if let Some(rec) = self.runner.progress() {
                let what = if self.ready { "full" } else { "initial" };
                let desc = crate::sync::describe_progress(&rec);
                info!("{what} sync: {desc}");
                self.reporter.send(&Report::Step(Step {
                    phase: if self.ready {
                        ReportPhase::Running
                    } else {
                        ReportPhase::Initsync
                    },
                    watches: Some(self.watcher.watched()),
                    progress: Some(desc),
                    last_error: None,
                }));
            }
        }
        self.runner.enforce_timeout(now);
        self.release_open_files(now, false);
        if let Some(t) = self.next_poll {
            if now >= t {
                let mut changes = Changes::default();
                self.watcher.poll_unwatched(&mut changes);
                self.next_poll = None;
                self.apply(changes);
            }
        }
        match self.phase {
            Phase::Aborting { since, killed } => {
                if !self.runner.busy() {
                    self.exit = Some(self.abort_code);
                } else if !killed && now >= since + KILL_GRACE {
                    self.runner.signal(Signal::SIGKILL);
                    self.phase = Phase::Aborting {
                        since,
                        killed: true,
                    };
                }
            }
            Phase::Stopping { final_started } => {
                if self.runner.busy() || final_started || self.on_standby(now) {
                    return;
                }
                // Pick up everything the kernel queued up to now (a barrier: the change
                // made just before the signal may not have been read yet), then sync
                // everything, ignoring delays (files still being written included).
                self.drain_all();
                self.release_open_files(now, true);
                if self.exit.is_some() {
                    return;
                }
                self.phase = Phase::Stopping {
                    final_started: true,
                };
                // The final syncs of every destination, in parallel; the exit code is
                // 1 if any fails.
                self.abort_code = 0;
                let mut any = false;
                for t in 0..self.targets.len() {
                    if let Some(batch) = self.targets[t].batcher.take_all(now) {
                        any = true;
                        self.start(t, batch);
                    }
                }
                if !any {
                    info!("nothing queued; exiting");
                    self.exit = Some(0);
                }
            }
            Phase::Running => {
                // The standby file is looked at only when a sync is due (or was held).
                let due = self
                    .targets
                    .iter()
                    .any(|t| t.batcher.deadline().is_some_and(|d| d <= now));
                let recheck = self.standby_check.is_some_and(|t| now >= t);
                if (due || recheck) && self.on_standby(now) {
                    return;
                }
                let started = self.iterations + self.runner.running() as u32;
                if self.cfg.max_iterations > 0 && started >= self.cfg.max_iterations {
                    if self.runner.busy() {
                        return;
                    }
                    info!(
                        "max-iterations: {} sync iterations done; exiting ({} paths queued)",
                        self.iterations,
                        self.queued()
                    );
                    self.exit = Some(0);
                    return;
                }
                if self.cfg.exit_on_no_events
                    && self.ready
                    && self.queued() == 0
                    && !self.runner.busy()
                {
                    self.drain();
                    if self.queued() == 0 && self.exit.is_none() {
                        info!("exit-on-no-events: nothing left to sync; exiting");
                        self.exit = Some(0);
                        return;
                    }
                }
                if self.verify_at.is_some_and(|v| now >= v) {
                    self.verify(now);
                }
                if self
                    .pair
                    .as_ref()
                    .and_then(|l| l.retry_at())
                    .is_some_and(|t| now >= t)
                {
                    self.retry_pair();
                }
                for t in 0..self.targets.len() {
                    if self.exit.is_some() {
                        break;
                    }
                    if let Some(batch) = self.targets[t].batcher.take_due(now) {
                        self.start(t, batch);
                    }
                }
            }
        }
    }

    /// The peer of a pair cannot be reached: its initial sync is held (counted as
    /// running, so no batch starts) until a pair check passes ([`retry_pair`]); the
    /// worker runs meanwhile, ready once the other destinations are.
    fn hold_pair(&mut self) {
        let t = &mut self.targets[0];
        t.batcher.start_external(&full_batch(false));
        t.initial_failed = true;
        t.unreachable = true;
        t.last_error = Some("the pair check waits for the peer".into());
        if self.targets.len() == 1 {
            self.became_ready();
        }
    }

    /// The pair check again, the peer having been unreachable: on success the held
    /// initial sync runs.
    fn retry_pair(&mut self) {
        let Some(link) = &mut self.pair else { return };
        match link.check(&self.src, self.watcher.rules()) {
            Ok(crate::pair::Step::Go(excluded)) => {
                self.excludes.extend(excluded);
                info!(
                    "initial sync of {} to {}",
                    self.src.display(),
                    self.targets[0].name
                );
                self.start(0, full_batch(false));
            }
            Ok(crate::pair::Step::Waiting) => {}
            Ok(crate::pair::Step::SplitBrain(msg)) => {
                error!("{msg}");
                self.status.set("split-brain");
                self.reporter.send(&Report::Step(Step {
                    phase: ReportPhase::SplitBrain,
                    watches: None,
                    progress: None,
                    last_error: Some(msg),
                }));
                self.abort(crate::pair::SPLIT_BRAIN_EXIT);
            }
            Err(e) => {
                error!("pair check: {e}");
                self.abort(1);
            }
        }
    }

    /// Starts a sync of the whole tree to destination `t` outside its queue (the initial
    /// sync, or a verification).
    fn start_full(&mut self, t: usize, verify: bool) {
        let mut batch = full_batch(verify);
        if !verify
            && !self.ready
            && self.pair.is_none()
            && self.cfg.mode == Mode::RsyncDirect
            && self.cfg.initial != Initial::Only
        {
            // Changes made during a long initial copy are synced meanwhile (rsync of our
            // own only: a handler script may not expect two runs at once).
            self.targets[t].batcher.start_beside(&mut batch);
        } else {
            self.targets[t].batcher.start_external(&batch);
        }
        self.start(t, batch);
    }

    /// `verify-interval`: a full rsync run per destination that is idle, which repairs
    /// drift (changes made at the destination by someone else, events lost for reasons
    /// outside our control) and reports what it repaired. A busy destination is checked
    /// at the next interval.
    fn verify(&mut self, now: Instant) {
        self.verify_at = self.cfg.verify_interval.map(|i| now + i);
        for t in 0..self.targets.len() {
            if self.targets[t].batcher.is_busy() || self.exit.is_some() {
                continue;
            }
            debug!("verifying {}", self.targets[t].name);
            self.start_full(t, true);
        }
    }

    /// While the standby file exists no sync starts; it is looked at again every second.
    fn on_standby(&mut self, now: Instant) -> bool {
        let Some(file) = &self.cfg.standby_file else {
            return false;
        };
        if file.exists() {
            if self.standby_check.is_none() {
                info!(
                    "standby: {} exists; no sync until it is gone ({} paths queued)",
                    file.display(),
                    self.queued()
                );
                if self.phase == Phase::Running && self.ready {
                    self.status.set("hold on");
                }
            }
            self.standby_check = Some(now + STANDBY_CHECK);
            return true;
        }
        if self.standby_check.take().is_some() {
            info!("standby: {} is gone; syncing again", file.display());
            if self.phase == Phase::Running && self.ready {
                self.status.set("running");
            }
        }
        false
    }

    /// Runs a hook as `HOOK LABEL` in the watch directory, with `CLSYNC_STATUS` (and
    /// `CLSYNC_EXIT_CODE` at exit) in its environment, in its own process group; waits
    /// for it at most `HOOK_TIMEOUT`. A failing hook is logged, not fatal.
    fn run_hook(&self, hook: &std::path::Path, status: &str, code: Option<i32>) {
        use std::os::unix::process::CommandExt;
        let label = self.cfg.label.clone().unwrap_or_else(|| "nolabel".into());
        let mut cmd = std::process::Command::new(hook);
        cmd.arg(&label)
            .current_dir(&self.src)
            .env("CLSYNC_STATUS", status)
            .env("CLSYNC_LABEL", &label)
            .stdin(std::process::Stdio::null())
            .process_group(0);
        if let Some(c) = code {
            cmd.env("CLSYNC_EXIT_CODE", c.to_string());
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                error!("{status} hook {}: {e}", hook.display());
                return;
            }
        };
        let deadline = Instant::now() + HOOK_TIMEOUT;
        let st = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break None,
            }
        };
        match st {
            Some(st) if st.success() => info!("{status} hook {} done", hook.display()),
            Some(st) => error!("{status} hook {} failed: {st}", hook.display()),
            None => {
                error!(
                    "{status} hook {} still running after {}s: killed",
                    hook.display(),
                    HOOK_TIMEOUT.as_secs()
                );
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    Signal::SIGKILL,
                );
                let _ = child.wait();
            }
        }
    }
}

/// A batch that syncs the whole tree.
fn full_batch(verify: bool) -> Batch {
    Batch {
        entries: vec![Entry {
            path: Vec::new(),
            recursive: true,
            class: Class::Normal,
            mask: crate::watch::MASK_FOUND_DIR,
        }],
        moves: Vec::new(),
        verify,
        beside: false,
    }
}

/// `uid` / `gid`: the worker drops to this user and group once the tree is watched and
/// the pid file written (the watches stay; list files and the handler run as them).
fn drop_privileges(uid: Option<u32>, gid: Option<u32>) -> Result<(), StartError> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    let fail = |what: &str, e: nix::Error| {
        StartError::Other(format!("cannot drop privileges ({what}): {e}"))
    };
    if let Some(g) = gid {
        let g = Gid::from_raw(g);
        setgroups(&[g]).map_err(|e| fail("setgroups", e))?;
        setgid(g).map_err(|e| fail("setgid", e))?;
    } else if uid.is_some() {
        // Do not keep root's supplementary groups.
        setgroups(&[nix::unistd::getegid()]).map_err(|e| fail("setgroups", e))?;
    }
    if let Some(u) = uid {
        setuid(Uid::from_raw(u)).map_err(|e| fail("setuid", e))?;
    }
    if uid.is_some() || gid.is_some() {
        info!(
            "running as uid {} gid {}",
            nix::unistd::getuid(),
            nix::unistd::getgid()
        );
    }
    Ok(())
}

/// Writes the state JSON to `DIR/clsync.PID.json` (atomically; the directory is created
/// 0700 if missing).
fn dump(dir: &std::path::Path, state: &str) {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    let file = dir.join(format!("clsync.{}.json", std::process::id()));
    let tmp = dir.join(format!(".clsync.{}.json.tmp", std::process::id()));
    let r = std::fs::write(&tmp, format!("{state}\n")).and_then(|_| std::fs::rename(&tmp, &file));
    match r {
        Ok(()) => info!("state written to {}", file.display()),
        Err(e) => error!("dump-dir {}: {e}", dir.display()),
    }
}

fn signame(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(
        |_| sig.to_string(),
        |s| s.as_str().trim_start_matches("SIG").to_string(),
    )
}
