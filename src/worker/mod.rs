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
synced at once, not after a first copy that may take hours, and once more after it. A
failed initial sync is tried again beside the queue too.
Ready (log line and status file) means both the watches and the initial sync are done.

This file holds the loop's state and what each tick does; start-up is in `start`, the
destinations (the sync stage) in `targets`, reload on HUP in `reload`, and the process
chores (pid file, status, hooks, dump) in `chores`.
*/

mod chores;
mod chroot;
mod dst_guard;
mod progress;
mod reload;
mod start;
mod targets;

use crate::batcher::hold::{OpenFiles, Policy as HoldPolicy};
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

pub(crate) use chores::Status;
use chores::{dump, signame, PidFile};
pub use start::run;
use targets::{full_batch, Target};

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
    /// The start-up's progress lines (before ready).
    start_progress: progress::StartProgress,
    /// When the next verification runs (`verify-interval`).
    verify_at: Option<Instant>,
    /// Files written but not closed yet, held back from the batchers.
    open_files: OpenFiles,
    /// Counters for reports: changed paths seen, syncs done and failed.
    events: u64,
    syncs: u64,
    sync_failures: u64,
    /// When the last sync succeeded, and the last failure.
    last_ok: Option<std::time::SystemTime>,
    last_error: Option<String>,
    /// What the confinement achieved at start (`off` without one), for the state.
    sandbox: crate::report::Sandbox,
}

impl Worker {
    /// The loop: waits for a wake-up (events, signals, the runner, a deadline), handles
    /// it and ticks, until the worker sets its exit code.
    fn serve(&mut self, poll: &mut Poll, signals: &mut Signals) -> Result<i32, StartError> {
        let mut events = Events::with_capacity(64);
        let code = loop {
            if let Some(code) = self.exit {
                break code;
            }
            let timeout = self.timeout(Instant::now());
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(StartError::System {
                    what: "epoll",
                    source: e,
                });
            }
            for ev in events.iter() {
                match ev.token() {
                    INOTIFY => self.drain(),
                    SIGNALS => {
                        for sig in signals.pending() {
                            self.signal(sig);
                        }
                    }
                    WAKER => {
                        for f in self.runner.poll() {
                            self.finished(f);
                        }
                    }
                    _ => {}
                }
            }
            self.tick(Instant::now());
        };
        Ok(code)
    }

    fn timeout(&self, now: Instant) -> Option<Duration> {
        let mut t: Option<Instant> = None;
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        // On standby the batches and verifications that are due wait for the standby
        // file's next check (`standby_check`, below), and once max-iterations are used up
        // for the running sync's end (the runner wakes the loop): a deadline already
        // passed would wake it at once, again and again, a core busy for as long as that
        // lasts.
        let may_start = self.phase == Phase::Running
            && self.standby_check.is_none()
            && !self.iterations_used_up();
        if may_start {
            for t in &self.targets {
                consider(t.batcher.deadline());
            }
            consider(self.verify_at);
            // The next pair check, which leads to the peer's initial sync.
            consider(self.pair.as_ref().and_then(|l| l.retry_at()));
        }
        consider(self.next_poll);
        consider(self.runner.deadline());
        consider(self.standby_check);
        consider(self.progress_at);
        consider(self.open_files.next_due());
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

    /// `max-iterations`: the syncs done and running have reached it (no further one
    /// starts; the worker exits once none runs).
    fn iterations_used_up(&self) -> bool {
        let started = self.iterations + self.runner.running() as u32;
        self.cfg.max_iterations > 0 && started >= self.cfg.max_iterations
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
        let policy = HoldPolicy {
            wait_for_close: self.cfg.wait_for_close,
            settle_created: self.phase == Phase::Running,
        };
        for mut d in changes.dirty {
            if let Some(at) = self.open_files.event(now, &mut d, policy) {
                self.push_dirty(at, d);
            }
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

    /// Held files whose time is up are queued (see [`OpenFiles::release_due`]); `all`:
    /// every held file (the final sync).
    fn release_open_files(&mut self, now: Instant, all: bool) {
        let released = if all {
            self.open_files.release_all()
        } else {
            self.open_files.release_due(now, self.cfg.wait_for_close)
        };
        for (since, d) in released {
            self.push_dirty(since, d);
        }
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
            // Once running, each destination gets its own full run when it is idle, whose
            // end is logged with what it repaired (targets.rs); before, the initial sync
            // is still to come or running, and a full sync is queued after it.
            SIGUSR2 if self.ready && self.phase == Phase::Running => {
                info!("signal USR2: full resync");
                for t in &mut self.targets {
                    t.resync_asked = true;
                }
            }
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

    fn tick(&mut self, now: Instant) {
        if self.exit.is_some() {
            return;
        }
        if self.progress_at.is_some_and(|t| now >= t) && !self.ready {
            let every = self.start_progress.timing.every;
            self.progress_at = self.runner.busy().then_some(now + every);
            if let Some(desc) = self.startup_progress(now) {
                self.reporter.send(&Report::Step(Step {
                    phase: ReportPhase::Initsync,
                    watches: Some(self.watcher.watched()),
                    progress: Some(desc),
                    last_error: None,
                }));
            }
        } else if self.progress_at.is_some_and(|t| now >= t) {
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
                // The standby file is looked at only when a sync is due (or was held): a
                // batch, a verification, a full resync asked for, or the failover pair's
                // next check (which leads to the peer's initial sync).
                let due = self
                    .targets
                    .iter()
                    .any(|t| t.batcher.deadline().is_some_and(|d| d <= now))
                    || self.verify_at.is_some_and(|v| now >= v)
                    || (self.targets.iter()).any(|t| t.resync_asked && !t.batcher.is_busy())
                    || (self.pair.as_ref())
                        .and_then(|l| l.retry_at())
                        .is_some_and(|t| now >= t);
                let recheck = self.standby_check.is_some_and(|t| now >= t);
                if (due || recheck) && self.on_standby(now) {
                    return;
                }
                if self.iterations_used_up() {
                    if self.runner.busy() {
                        return;
                    }
                    info!(
                        "max-iterations: {} sync iterations done; exiting ({} paths queued)",
                        self.iterations,
                        self.queued()
                    );
                    // As in the original: the pre-exit hook once the limit is reached.
                    if let Some(hook) = self.cfg.pre_exit_hook.clone() {
                        self.status.set("preexit");
                        self.run_hook(&hook, "preexit", None);
                    }
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
                        let Some(hook) = self.cfg.pre_exit_hook.clone() else {
                            info!("exit-on-no-events: nothing left to sync; exiting");
                            self.exit = Some(0);
                            return;
                        };
                        // As in the original: the pre-exit hook, then one more sync of
                        // what changed meanwhile (clsync(1)'s "Moving a web-server").
                        info!("exit-on-no-events: nothing left to sync; the pre-exit hook, a last sync, then exit");
                        self.status.set("preexit");
                        self.run_hook(&hook, "preexit", None);
                        self.status.set("terminating");
                        self.phase = Phase::Stopping {
                            final_started: false,
                        };
                        return;
                    }
                }
                if self.verify_at.is_some_and(|v| now >= v) {
                    self.verify(now);
                }
                for t in 0..self.targets.len() {
                    if self.targets[t].resync_asked
                        && !self.targets[t].batcher.is_busy()
                        && self.exit.is_none()
                    {
                        self.targets[t].resync_asked = false;
                        self.targets[t].resyncing = Some(now);
                        self.start_full(t, true);
                    }
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
}
