/*!
Start-up: from a checked [`Config`] to a running [`Worker`](super::Worker). The order
matters (watches before the initial sync, ready only after both; see [`crate::worker`]); kept apart so that order reads in one place and the loop holds only
what runs once the worker is up. [`run`] is the list of the steps in their order; each
step is a function below whose doc says why it stands where it does.
*/

use super::*;

/// Runs the worker until it is told to stop. Returns the process exit code.
///
/// Each line below is one start-up step, in the order they must run; each step's doc
/// says why it stands where it does.
pub fn run(mut cfg: Config) -> Result<i32, StartError> {
    tune_allocator();
    // A supervisor's report pipe and instance lock, before any child could inherit them.
    let mut reporter = crate::report::Reporter::from_env();
    crate::manager::instance_lock::Inherited::adopt();
    simple_mode(&mut cfg);
    let status = Status::new(cfg.status_file.clone(), cfg.uid)?;
    check_dump_dir(&cfg)?;
    status.set("starting");
    let (rules, paths) = check(&cfg)?;
    // `_lists` keeps a temporary lists directory alive until the worker ends.
    let (_lists, lists_dir) = list_files_dir(&mut cfg)?;
    // Kept until the worker ends: one worker per index directory.
    let mut index_lock = index_dir(&mut cfg)?;
    let control = ssh_control_dir(&cfg)?;
    // `--chroot`: refused here, before anything is watched or forked, when a path the
    // worker uses is not the same file at the same path inside the new root.
    chroot::check(
        &cfg,
        &paths.src,
        &paths.rsync,
        &lists_dir,
        control.as_ref().map(tempfile::TempDir::path),
    )?;
    let (pair, peer_excluded) = match pair_up(
        &cfg,
        &paths,
        control.as_ref(),
        &rules,
        &status,
        &mut reporter,
    )? {
        Pairing::Go(pair, excluded) => (pair, excluded),
        Pairing::SplitBrain => return Ok(crate::pair::SPLIT_BRAIN_EXIT),
    };
    let started = Instant::now();
    let timing = super::progress::Timing::from_env();
    let (mut watcher, init) = watch(&cfg, &paths.src, rules, (started, timing), &mut reporter)?;
    go_background(&cfg)?;
    // After the fork, so the files name the process that stays.
    if let Some(l) = &mut index_lock {
        let _ = l.note_pid();
    }
    let _pid_file = match &cfg.pid_file {
        Some(p) => Some(PidFile::create(p)?),
        None => None,
    };
    // Root only; the sandbox's rules are then opened inside the new root.
    chroot::enter(&cfg)?;
    // Opened as root; namespaces and capabilities while still root, the rest after the
    // uid drop; all before the first thread.
    // `_handler_tmp` keeps the handlers' TMPDIR alive until the worker ends.
    let (mut sandbox, _handler_tmp) = prepare_sandbox(&cfg, &paths, &lists_dir, control.as_ref())?;
    isolate(sandbox.as_mut())?;
    drop_privileges(&cfg)?;
    let sandbox = confine(sandbox)?;
    let (mut poll, waker, mut signals) = wake_ups(&mut watcher)?;
    let (runner, targets) = handlers(
        &cfg,
        &paths,
        &lists_dir,
        control.as_ref(),
        (watcher.watched(), index_rules_hash(&cfg, watcher.rules())),
        waker,
    )?;
    let mut w = assemble(Parts {
        excludes: init.excluded.into_iter().chain(peer_excluded).collect(),
        cfg,
        src: paths.src,
        watcher,
        runner,
        targets,
        control,
        pair,
        status,
        reporter,
        started,
        timing,
        sandbox,
    });
    w.initial_sync();
    let code = w.serve(&mut poll, &mut signals)?;
    w.finish(code);
    Ok(code)
}

/// The watch tree's tables grow by doubling; glibc's default (a threshold that rises
/// as big blocks are freed) puts the later generations on the heap, where each old
/// one leaves a hole that stays resident. A fixed threshold keeps every block of
/// 32 KiB or more in a mapping of its own: grown in place by mremap, returned on free.
/// First, before anything big is allocated.
fn tune_allocator() {
    // SAFETY: mallopt only changes the allocator's settings.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 10) };
}

/// Simple mode: every event goes to the handler at once, as in the original (no delays,
/// no big-file queue). Before the batchers are made from these settings.
fn simple_mode(cfg: &mut Config) {
    if cfg.mode == Mode::Simple {
        cfg.delays = crate::batcher::Delays {
            collect: Duration::ZERO,
            collect_bigfile: Duration::ZERO,
            sync: Duration::ZERO,
        };
        cfg.threshold_bigfile = 0;
    }
}

/// The source, the destinations and the sync handler, as checked by [`preflight`].
struct Paths {
    src: PathBuf,
    dsts: Vec<PathBuf>,
    rsync: PathBuf,
}

/// The refusals: the rules, the paths ([`preflight`]) and a live pid file. Before the
/// worker's own directories are made, the tree is watched or the process forks: a refused
/// start is told on the terminal and leaves no directory of the worker behind.
fn check(cfg: &Config) -> Result<(crate::rules::Rules, Paths), StartError> {
    // The programs run later are checked again right before each run.
    crate::strict::set_named(cfg.strict_modes);
    let rules = cfg
        .load_rules()
        .map_err(|e| StartError::Usage(e.to_string()))?;
    let (src, dsts, rsync) = preflight(cfg)?;
    if let Some(p) = &cfg.pid_file {
        PidFile::check(p)?;
    }
    // A mistyped sandbox-read/-write/-exec path is told here, before the fork.
    if cfg.sandbox.on() {
        cfg.sandbox_extra.check().map_err(StartError::Sandbox)?;
    }
    Ok((rules, Paths { src, dsts, rsync }))
}

/// What the failover pair step decided.
// Made once and taken apart at once: the size of the link does not matter here.
#[allow(clippy::large_enum_variant)]
enum Pairing {
    /// Go on: the link (a failover pair only) and the paths the peer keeps excluded.
    Go(Option<crate::pair::Link>, Vec<Vec<u8>>),
    /// A split-brain a person must resolve: nothing is synced, the worker ends with
    /// [`crate::pair::SPLIT_BRAIN_EXIT`].
    SplitBrain,
}

/// A failover pair: bring both sides together before anything is watched or synced
/// (or, when the peer cannot be reached, once it can: nothing is synced to it before).
/// The check may pull the peer's changes into the source first; a split-brain ends the
/// start here, before the tree is walked.
fn pair_up(
    cfg: &Config,
    paths: &Paths,
    control: Option<&tempfile::TempDir>,
    rules: &crate::rules::Rules,
    status: &Status,
    reporter: &mut crate::report::Reporter,
) -> Result<Pairing, StartError> {
    let mut peer_excluded = Vec::new();
    let pair = match (&cfg.pair, Dest::parse(paths.dsts[0].as_os_str())) {
        (Some(settings), Dest::Ssh { host, path }) => {
            let dir = control.expect("made for ssh").path();
            let mut link = crate::pair::Link::new(
                settings.clone(),
                cfg.ssh.argv_to(dir, &host),
                host,
                path,
                paths.rsync.clone(),
                cfg.ssh.rsync_e(dir),
            );
            status.set("pairing");
            match link.check(&paths.src, rules) {
                Ok(crate::pair::Step::Go(excluded)) => peer_excluded = excluded,
                Ok(crate::pair::Step::Waiting) if cfg.initial == Initial::Only => {
                    return Err(StartError::PeerUnreachable)
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
                    return Ok(Pairing::SplitBrain);
                }
                Err(e) => return Err(StartError::Pair(e)),
            }
            Some(link)
        }
        _ => None,
    };
    Ok(Pairing::Go(pair, peer_excluded))
}

/// Sets the watches on the whole tree, reporting the count as it grows. Before the
/// initial sync, so a change made while it runs is an event like any other; before the
/// fork, so a tree that cannot be watched is refused on the terminal.
fn watch(
    cfg: &Config,
    src: &std::path::Path,
    rules: crate::rules::Rules,
    (started, timing): (Instant, super::progress::Timing),
    reporter: &mut crate::report::Reporter,
) -> Result<(Watcher, Changes), StartError> {
    // The start-up's schedule (worker/progress.rs): once it has run a while, every few
    // seconds.
    let mut next = started + timing.after;
    let (watcher, init) =
        Watcher::new(src, rules, cfg.one_file_system, cfg.monitor, &mut |dirs| {
            let now = Instant::now();
            if now < next {
                return;
            }
            next = now + timing.every;
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
    Ok((watcher, init))
}

/// `background`: forks away from the terminal. After every check and the watches (their
/// refusals reach the terminal), before the pid file (it names the process that stays)
/// and before any thread (threads do not survive a fork).
fn go_background(cfg: &Config) -> Result<(), StartError> {
    if cfg.background {
        if cfg.output == crate::logger::Output::Stderr {
            warn!("going to the background: the log goes to /dev/null (use --output syslog)");
        }
        // No thread exists yet: the inotify fd and the watches survive the fork.
        nix::unistd::daemon(true, false).map_err(StartError::Background)?;
    }
    Ok(())
}

/// The loop's sources of wake-ups: the epoll instance, the waker of the runner's thread,
/// the signals, and the watcher's reader thread with its fds. After the fork (threads
/// do not survive it): a thread empties the kernel queue while the loop prepares syncs.
fn wake_ups(watcher: &mut Watcher) -> Result<(Poll, Arc<Waker>, Signals), StartError> {
    let system = |what| move |source| StartError::System { what, source };
    let poll = Poll::new().map_err(system("epoll"))?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(system("waker"))?);
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGIO])
        .map_err(system("signals"))?;
    watcher
        .start_pump()
        .map_err(system("event reader thread"))?;
    let registry = poll.registry();
    for fd in watcher.fds().map_err(system("epoll"))? {
        registry
            .register(&mut SourceFd(&fd), INOTIFY, Interest::READABLE)
            .map_err(system("epoll"))?;
    }
    registry
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(system("epoll"))?;
    Ok((poll, waker, signals))
}

/// The sync stage: the shared object (`so` modes), the [`Runner`] that runs the handler's
/// processes, and one [`Target`] per destination with its batcher and handler. After the
/// privileges are dropped (the `.so` is checked and loaded, and its `clsyncapi_init`
/// runs, as the user the worker runs as) and the watches set (the tree's size chooses the
/// progress default).
fn handlers(
    cfg: &Config,
    paths: &Paths,
    lists_dir: &std::path::Path,
    control: Option<&tempfile::TempDir>,
    (watched, rules_hash): (usize, u64),
    waker: Arc<Waker>,
) -> Result<(Runner, Vec<Target>), StartError> {
    let Paths { src, dsts, rsync } = paths;
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
            crate::sync::so::SoHandler::load_with(rsync, src, &dsts[0], &label, &opts)
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
    for (n, d) in dsts.iter().enumerate() {
        let dest = Dest::parse(d.as_os_str());
        let (rsync_extra, mover) = transport(cfg, &dest, control);
        let handler = Handler::new(
            HandlerConfig {
                mode: cfg.mode,
                program: rsync.clone(),
                args: cfg.handler_args.clone(),
                src: src.clone(),
                dst: d.clone(),
                label: label.clone(),
                lists_dir: lists_dir.to_path_buf(),
                lists_mode: lists_mode(cfg),
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
                    .unwrap_or(watched >= crate::config::PROGRESS_MIN_DIRS),
            },
            so.take(),
        );
        let mut target = Target::new(
            dest.show(),
            Batcher::with_threading(cfg.delays, cfg.threading, cfg.max_parallel_syncs),
            handler,
        );
        // Every destination keeps an index, but a pair's peer: the pair keeps its record.
        if let Some(base) = cfg
            .index_dir
            .as_ref()
            .filter(|_| n > 0 || cfg.pair.is_none())
        {
            let id = crate::delivered::Identity {
                src: src.clone(),
                dst: dest.clone(),
                rules: rules_hash,
            };
            match open_index(base, n, d, id) {
                Ok((ix, rec)) => {
                    target.index = Some(ix);
                    target.index_loaded = Some(rec);
                }
                Err(e) => error!(
                    "index of {} in {}: {e}; running without it",
                    dest.show(),
                    base.display()
                ),
            }
        }
        targets.push(target);
    }
    Ok((runner, targets))
}

/// How one destination is reached: rsync's extra arguments (`-e` with the shared ssh
/// connection, a daemon's password file, `rsync-options`) and the mover that renames
/// there (rsyncdirect without threads only).
fn transport(
    cfg: &Config,
    dest: &Dest,
    control: Option<&tempfile::TempDir>,
) -> (Vec<std::ffi::OsString>, Mover) {
    let dir = control.map(tempfile::TempDir::path);
    let mut rsync_extra = dest.rsync_args(&cfg.ssh, dir, cfg.rsync_password_file.as_deref());
    rsync_extra.extend(cfg.rsync_options.iter().cloned());
    let mover = if cfg.mode != Mode::RsyncDirect || cfg.threading != crate::batcher::Threading::Off
    {
        Mover::None
    } else {
        match dest {
            Dest::Local(p) => Mover::Local(p.clone()),
            Dest::Ssh { host, path } => Mover::Ssh {
                argv: cfg.ssh.argv_to(dir.expect("made for ssh"), host),
                path: path.clone(),
            },
            Dest::Daemon(_) => Mover::None,
        }
    };
    (rsync_extra, mover)
}

/// What the start-up steps made, for the worker to hold.
struct Parts {
    cfg: Config,
    src: PathBuf,
    watcher: Watcher,
    excludes: BTreeSet<Vec<u8>>,
    runner: Runner,
    targets: Vec<Target>,
    control: Option<tempfile::TempDir>,
    pair: Option<crate::pair::Link>,
    status: Status,
    reporter: crate::report::Reporter,
    started: Instant,
    /// The start-up progress lines' schedule.
    timing: super::progress::Timing,
    sandbox: crate::report::Sandbox,
}

/// The worker in its first state: running, not ready, nothing counted yet.
fn assemble(p: Parts) -> Worker {
    let Parts {
        cfg,
        src,
        watcher,
        excludes,
        runner,
        targets,
        control,
        pair,
        status,
        reporter,
        started,
        timing,
        sandbox,
    } = p;
    let signatures = (cfg.modification_signature != 0)
        .then(|| crate::signature::Signatures::new(cfg.modification_signature));
    Worker {
        targets,
        control,
        pair,
        cfg,
        src,
        watcher,
        runner,
        excludes,
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
        start_progress: super::progress::StartProgress::new(timing),
        verify_at: None,
        open_files: Default::default(),
        events: 0,
        syncs: 0,
        sync_failures: 0,
        last_ok: None,
        last_error: None,
        sandbox,
    }
}

impl Worker {
    /// The initial full sync of every destination (or none with `skip-initialsync`:
    /// ready at once). Last of the start-up, with the watches set and the loop's wake-ups
    /// registered: a change made while it runs is an event like any other.
    fn initial_sync(&mut self) {
        self.status.set("initsync");
        if self.pair.as_ref().is_some_and(|l| l.waiting()) {
            self.hold_pair();
        }
        if self.cfg.initial == Initial::Skip {
            info!("initial sync skipped (skip-initialsync)");
            for t in &mut self.targets {
                t.initial_ok = true;
            }
            self.became_ready();
        } else {
            for t in 0..self.targets.len() {
                if t == 0 && self.pair.as_ref().is_some_and(|l| l.waiting()) {
                    continue;
                }
                self.initial_sync_of(t);
            }
            // The indexes compared are dropped: their pages go back.
            crate::delivered::give_back_memory();
            // Destinations whose index says they are up to date.
            self.initial_progress();
        }
    }

    /// The ending, once the loop has its exit code: the pair's record of a clean stop,
    /// the shared ssh connections closed, the status file, the exit hook.
    fn finish(&mut self, code: i32) {
        // A clean stop after the final sync: both sides are equal, record it.
        if code == 0 && self.ready && matches!(self.phase, Phase::Stopping { .. }) {
            if let Some(link) = &mut self.pair {
                link.clean_stop();
            }
        }
        for t in &mut self.targets {
            if let Some(ix) = &mut t.index {
                ix.clean_stop();
            }
        }
        self.close_ssh();
        self.status.set("exiting");
        if let Some(hook) = self.cfg.exit_hook.clone() {
            if self.ready {
                let why = if self.failed {
                    "synchandler error"
                } else {
                    "exiting"
                };
                self.run_hook(&hook, why, Some(code));
            }
        }
    }
}

/// `index-dir`: made here (0700, owned by the user the worker runs as, who writes there
/// after the drop; missing parents 0711), before the sandbox grants it and the chroot
/// check looks for it. The profile's default that cannot be made is a warning: the
/// worker runs without an index (every start is a full sync). Its lock is taken here,
/// before anything reads or writes the index and before the fork, chroot and uid drop
/// (see [`crate::delivered::lock`]): a second worker on the same directory is refused.
fn index_dir(cfg: &mut Config) -> Result<Option<crate::delivered::lock::IndexLock>, StartError> {
    use crate::delivered::lock::{take, LockError};
    let Some(d) = cfg.index_dir.clone() else {
        return Ok(None);
    };
    let d = if d.is_relative() {
        std::env::current_dir()
            .map_err(StartError::CurrentDir)?
            .join(d)
    } else {
        d
    };
    let made = make_index_dir(&d, cfg)
        .map_err(LockError::Io)
        .and_then(|()| take(&d, (cfg.uid, cfg.gid)));
    match made {
        Ok(l) => {
            cfg.index_dir = Some(d);
            Ok(Some(l))
        }
        // Even the profile's default: two workers on one index must not both run.
        Err(LockError::Held { dir, pid }) => Err(StartError::IndexBusy { dir, pid }),
        Err(LockError::Io(e)) if cfg.index_dir_default => {
            warn!("{e}; running without an index (every start is a full sync)");
            cfg.index_dir = None;
            Ok(None)
        }
        Err(LockError::Io(e)) => Err(StartError::Path(e)),
    }
}

fn make_index_dir(d: &std::path::Path, cfg: &Config) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let fail = |e: std::io::Error| format!("index-dir {}: cannot create it: {e}", d.display());
    if std::fs::symlink_metadata(d).is_err() {
        if let Some(parent) = d.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(parent)
                .map_err(fail)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {
                if cfg.uid.is_some() || cfg.gid.is_some() {
                    nix::unistd::chown(
                        d,
                        cfg.uid.map(nix::unistd::Uid::from_raw),
                        cfg.gid.map(nix::unistd::Gid::from_raw),
                    )
                    .map_err(|e| fail(e.into()))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(e)),
        }
    }
    crate::safe_file::check_dir(d, "index-dir", cfg.uid)
}

/// What decides the set of synced paths, hashed into each index's identity: another
/// rules file, mode, `one-file-system` or rsync options make the index foreign.
fn index_rules_hash(cfg: &Config, rules: &crate::rules::Rules) -> u64 {
    let what = format!(
        "{rules:?}\n{:?}\n{:?}\n{}\n{:?}\n{:?}",
        cfg.globs, cfg.mode, cfg.one_file_system, cfg.rsync_options, cfg.handler_args
    );
    crate::delivered::checksum(what.as_bytes())
}

/// Opens destination `n`'s index in `base` (a subdirectory named by its number and a
/// hash of its name, with a `dest` file naming it for people). A record that cannot be
/// read is started anew (the initial sync is then full): it only ever saves work.
fn open_index(
    base: &std::path::Path,
    n: usize,
    d: &std::path::Path,
    id: crate::delivered::Identity,
) -> std::io::Result<(crate::delivered::Tracker, crate::delivered::Record)> {
    use std::os::unix::ffi::OsStrExt;
    let name = d.as_os_str().as_bytes();
    let dir = base.join(format!("{n}-{:016x}", crate::delivered::checksum(name)));
    let opened = match crate::delivered::Tracker::open(&dir, Some(id.clone()), "index") {
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            warn!("index {}: {e}; starting it anew", dir.display());
            for f in ["manifest", "journal"] {
                match std::fs::remove_file(dir.join(f)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            crate::delivered::Tracker::open(&dir, Some(id), "index")?
        }
        r => r?,
    };
    let mut text = name.to_vec();
    text.push(b'\n');
    crate::delivered::write_atomic(&dir, "dest", &text)?;
    Ok(opened)
}

/// An existing dump directory that others may write to is refused at start, not at the
/// first SIGUSR1 (a missing one is made 0700 by the dump).
fn check_dump_dir(cfg: &Config) -> Result<(), StartError> {
    match &cfg.dump_dir {
        Some(d) if std::fs::symlink_metadata(d).is_ok() => {
            crate::safe_file::check_dir(d, "dump-dir", cfg.uid).map_err(StartError::Path)
        }
        _ => Ok(()),
    }
}

/// List files are 0600, or 0644 when the handler runs as another user than the one
/// who writes them (the private lists directory is then 0711).
fn lists_mode(cfg: &Config) -> u32 {
    let writer = cfg.uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    if cfg.sync_handler_uid.is_some_and(|u| u != writer) {
        0o644
    } else {
        0o600
    }
}

/// The directory of the list files (made absolute; a private temporary one when
/// `lists-dir` is not given) and the temporary directory to keep alive, if any.
fn list_files_dir(cfg: &mut Config) -> Result<(Option<tempfile::TempDir>, PathBuf), StartError> {
    // List files: in lists-dir if given (checked, kept with dont-unlink-lists), else in a
    // private temporary directory removed at exit.
    // The handler runs in the watch directory: list paths must be absolute.
    if let Some(d) = cfg.lists_dir.as_mut().filter(|d| d.is_relative()) {
        let cwd = std::env::current_dir().map_err(StartError::CurrentDir)?;
        *d = cwd.join(&*d);
    }
    let lists = match &cfg.lists_dir {
        Some(d) => {
            let made = d.symlink_metadata().is_err();
            crate::config::check_lists_dir(d, cfg.uid)?;
            if made {
                // Made here as root: the worker's and the handler's, as a temporary one.
                give_lists_dir(d, cfg)?;
            }
            None
        }
        None => {
            // 0700 from mkdir on: tempfile's default follows the umask (0755).
            use std::os::unix::fs::PermissionsExt;
            let t = tempfile::Builder::new()
                .prefix("clsync-lists.")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .map_err(|source| StartError::MakeDir {
                    what: "list files",
                    source,
                })?;
            give_lists_dir(t.path(), cfg)?;
            Some(t)
        }
    };
    let lists_dir = match (&lists, &cfg.lists_dir) {
        (Some(t), _) => t.path().to_path_buf(),
        (None, Some(d)) => d.clone(),
        (None, None) => unreachable!("one of the two is set"),
    };
    Ok((lists, lists_dir))
}

/// A lists directory the worker made (0700, root's): the worker writes its lists after
/// dropping to `uid`, so it becomes `uid`'s; a handler running as another user must be
/// able to read them (the directory is then 0711: its files can be opened by name, not
/// listed).
fn give_lists_dir(dir: &std::path::Path, cfg: &Config) -> Result<(), StartError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| StartError::ListsDir {
        path: dir.to_path_buf(),
        source: e,
    };
    // Through a descriptor of the directory itself: never a symlink put in its place.
    let d = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| fail(e.into()))?;
    if cfg.uid.is_some() || cfg.gid.is_some() {
        std::os::unix::fs::fchown(&d, cfg.uid, cfg.gid).map_err(|e| fail(e.into()))?;
    }
    let writer = cfg.uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    if cfg.sync_handler_uid.is_some_and(|u| u != writer) {
        d.set_permissions(std::fs::Permissions::from_mode(0o711))
            .map_err(|e| fail(e.into()))?;
    }
    Ok(())
}

/// ssh destinations share one connection each; its control socket lives in a private
/// temporary directory made here (none without an ssh destination).
fn ssh_control_dir(cfg: &Config) -> Result<Option<tempfile::TempDir>, StartError> {
    Ok(
        if cfg
            .destinations()
            .iter()
            .any(|d| matches!(d, Dest::Ssh { .. }))
        {
            Some(
                tempfile::Builder::new()
                    .prefix("clsync-ssh.")
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                    .tempdir()
                    .map_err(|source| StartError::MakeDir {
                        what: "ssh",
                        source,
                    })?,
            )
        } else {
            None
        },
    )
}

/// The confinement (`sandbox`), prepared while the worker is still root: every granted
/// path is opened and the filter compiled, so that what can fail fails here. Also the
/// handlers' private temporary directory ([`handler_tmp`]), kept alive by the caller.
fn prepare_sandbox(
    cfg: &Config,
    paths: &Paths,
    lists_dir: &std::path::Path,
    control: Option<&tempfile::TempDir>,
) -> Result<(Option<crate::sandbox::Sandbox>, Option<tempfile::TempDir>), StartError> {
    if !cfg.sandbox.on() {
        return Ok((None, None));
    }
    let mut grants = crate::sandbox::Grants::for_worker(
        cfg,
        &paths.src,
        &paths.rsync,
        lists_dir,
        control.map(tempfile::TempDir::path),
    );
    let tmp = handler_tmp(cfg)?;
    grants.write.push(tmp.path().to_path_buf());
    if let Some(parent) = tmp.path().parent() {
        grants.remove_dir.push(parent.to_path_buf());
    }
    let sandbox = crate::sandbox::Sandbox::prepare(&grants).map_err(StartError::Sandbox)?;
    Ok((Some(sandbox), Some(tmp)))
}

/// A confined worker's handlers and hooks get a private temporary directory as `TMPDIR`
/// (removed at exit): the sandbox does not let them write `/tmp` itself, and a script's
/// `mktemp` should work. Owned by the user the handler runs as, mode 0700. Set in the
/// environment here, before the worker's first thread.
fn handler_tmp(cfg: &Config) -> Result<tempfile::TempDir, StartError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |source| StartError::MakeDir {
        what: "the handlers' temporary files",
        source,
    };
    let t = tempfile::Builder::new()
        .prefix("clsync-tmp.")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(fail)?;
    let (uid, gid) = (
        cfg.sync_handler_uid.or(cfg.uid),
        cfg.sync_handler_gid.or(cfg.gid),
    );
    if uid.is_some() || gid.is_some() {
        nix::unistd::chown(
            t.path(),
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
        )
        .map_err(|e| fail(e.into()))?;
    }
    // The worker has one thread here (the sandbox is applied before the first).
    std::env::set_var("TMPDIR", t.path());
    Ok(t)
}

/// The private namespaces and the cut capabilities of a confined worker: after the
/// watches (fanotify_init needs `CAP_SYS_ADMIN`), the fork to the background and the pid
/// file; before the uid drop (unsharing needs root) and the first thread (capabilities
/// are a thread's own).
fn isolate(sandbox: Option<&mut crate::sandbox::Sandbox>) -> Result<(), StartError> {
    match sandbox {
        Some(sb) => sb.isolate().map_err(StartError::Sandbox),
        None => Ok(()),
    }
}

/// Applies the prepared confinement; from here on the worker and all it runs are confined.
/// Before the first thread ([`wake_ups`] starts the event reader). Returns what it
/// achieved, for the worker's state.
fn confine(sandbox: Option<crate::sandbox::Sandbox>) -> Result<crate::report::Sandbox, StartError> {
    if let Some(sb) = sandbox {
        let done = sb.enforce().map_err(StartError::Sandbox)?;
        log::info!("{}", done.describe());
        if let Some(kept) = &done.capabilities {
            log::debug!("sandbox: capabilities kept: {}", kept.join(" "));
        }
        return Ok(crate::report::Sandbox {
            enabled: true,
            enforced: Some(done),
        });
    }
    Ok(crate::report::Sandbox::OFF)
}

/// `uid` / `gid`: the worker drops to this user and group once the tree is watched and
/// the pid file written (the watches stay; list files and the handler run as them).
/// `preserve-capabilities` (`-C`) keeps the capabilities it names across the drop, and
/// `inherit-capabilities` passes them on to the handlers.
fn drop_privileges(cfg: &Config) -> Result<(), StartError> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    let (uid, gid) = (cfg.uid, cfg.gid);
    let fail = |what, source| StartError::Privileges { what, source };
    // Only a drop away from root loses capabilities (`--uid 0` keeps them all).
    let preserve = if uid.is_some_and(|u| u != 0) {
        &cfg.preserve_capabilities[..]
    } else {
        if !cfg.preserve_capabilities.is_empty() {
            log::debug!("preserve-capabilities: no drop from root; the worker keeps root's");
        }
        &[]
    };
    crate::sandbox::keep_before_uid_drop(preserve).map_err(StartError::Sandbox)?;
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
    crate::sandbox::keep_after_uid_drop(preserve, cfg.inherit_capabilities)
        .map_err(StartError::Sandbox)?;
    if !preserve.is_empty() {
        let names: Vec<String> = preserve.iter().map(ToString::to_string).collect();
        info!(
            "kept after the drop to uid: {}{}",
            names.join(" "),
            if cfg.inherit_capabilities.passes_on() {
                " (the handlers inherit them)"
            } else {
                ""
            }
        );
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
