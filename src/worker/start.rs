/*!
Start-up: from a checked [`Config`] to a running [`Worker`](super::Worker). The order
matters (watches before the initial sync, ready only after both; see [`crate::worker`]); kept apart so that order reads in one place and the loop holds only
what runs once the worker is up.
*/

use super::*;

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
    // `_lists` keeps a temporary lists directory alive until the worker ends.
    let (_lists, lists_dir) = list_files_dir(&mut cfg)?;

    let control = ssh_control_dir(&cfg)?;

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

/// The directory of the list files (made absolute; a private temporary one when
/// `lists-dir` is not given) and the temporary directory to keep alive, if any.
fn list_files_dir(cfg: &mut Config) -> Result<(Option<tempfile::TempDir>, PathBuf), StartError> {
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
    Ok((lists, lists_dir))
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
                    .tempdir()
                    .map_err(|e| {
                        StartError::Other(format!("cannot create a directory for ssh: {e}"))
                    })?,
            )
        } else {
            None
        },
    )
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
