/*!
The destinations: the sync stage of the pipeline. Each [`Target`] has its own batcher,
handler (which builds that destination's argv) and health; here a batch is started for one
destination and its end (success, retry, unreachable) is taken in. Kept apart from the loop
because this is where one slow or dead node must not hold back the others.
*/

use super::*;

/// One destination of the worker. Each has its own queue, retry backoff and health, so
/// a slow or dead node does not hold back the others: their syncs run in parallel.
pub(super) struct Target {
    pub(super) name: String,
    pub(super) batcher: Batcher,
    pub(super) handler: Handler,
    /// The initial sync to it succeeded (or was skipped).
    pub(super) initial_ok: bool,
    /// Its initial sync failed at least once.
    pub(super) initial_failed: bool,
    /// The last sync failed because the destination could not be reached.
    pub(super) unreachable: bool,
    pub(super) last_error: Option<String>,
    pub(super) last_ok: Option<std::time::SystemTime>,
    /// When its oldest unsynced change was queued (the lag).
    pub(super) behind_since: Option<std::time::SystemTime>,
    /// Its index of what it received (`index-dir`), kept current as its syncs end.
    pub(super) index: Option<crate::delivered::Tracker>,
    /// The index as loaded at start, until the initial sync has compared it.
    pub(super) index_loaded: Option<crate::delivered::Record>,
    /// A full resync was asked for (SIGUSR2, `clsync-manager resync`): it starts once
    /// the destination is idle.
    pub(super) resync_asked: bool,
    /// When the running full resync started: its end is logged with what it repaired.
    pub(super) resyncing: Option<Instant>,
    /// A local destination's identity, checked before each sync (see `dst_guard`).
    pub(super) dst_guard: super::dst_guard::DstGuard,
}

impl Target {
    /// A destination before its initial sync: nothing known of its health yet.
    pub(super) fn new(name: String, batcher: Batcher, handler: Handler) -> Target {
        Target {
            name,
            batcher,
            handler,
            initial_ok: false,
            initial_failed: false,
            unreachable: false,
            last_error: None,
            last_ok: None,
            behind_since: None,
            index: None,
            index_loaded: None,
            resync_asked: false,
            resyncing: None,
            dst_guard: Default::default(),
        }
    }
}

/// rsync's exit codes that mean "could not reach or talk to the destination" (and 255,
/// ssh's own failure).
fn unreachable_code(code: Option<i32>) -> bool {
    matches!(code, Some(5 | 10 | 12 | 30 | 35 | 255))
}

impl Worker {
    /// Ends the shared ssh connections (their masters would linger for a minute).
    pub(super) fn close_ssh(&self) {
        let Some(dir) = &self.control else { return };
        for d in self.cfg.destinations() {
            let Dest::Ssh { host, .. } = d else { continue };
            let argv = self.cfg.ssh.exit_argv(dir.path(), &host);
            if let Err(e) = crate::strict::check_program(argv[0].as_ref(), "ssh command") {
                log::error!("{e}");
                continue;
            }
            let _ = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// Starts a batch for destination `t`.
    pub(super) fn start(&mut self, t: usize, mut batch: Batch) {
        if !self.ready && (batch.initial || (batch.is_full() && !batch.verify)) {
            // The start-up's progress lines (progress.rs).
            let first = self.start_progress.first_at(self.started, Instant::now());
            self.progress_at = Some(self.progress_at.map_or(first, |t| t.min(first)));
        } else if batch.is_full() {
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
        // A local destination that is not the directory synced before gets the whole
        // tree (dst_guard.rs).
        if self.cfg.mode == Mode::RsyncDirect && self.cfg.handler_args.is_none() {
            if let crate::dest::Dest::Local(d) = crate::dest::Dest::parse(dst.as_os_str()) {
                let guard = &mut self.targets[t].dst_guard;
                if let Some(w) = guard.check(&d) {
                    warn!("{w}");
                }
                if guard.full_needed && !batch.is_full() {
                    batch.entries.extend(full_batch(false).entries);
                }
            }
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
        if let Some(ix) = &mut self.targets[t].index {
            ix.started(&self.src, &batch);
        }
        let f = match self.targets[t].handler.steps(&batch, &ctx) {
            Ok(steps) => self.runner.start(t, batch, steps),
            Err(e) => Some(Finished {
                tag: t,
                batch,
                result: Err(format!("cannot write the list files: {e}")),
                code: None,
                itemized: None,
                progress: None,
            }),
        };
        if let Some(f) = f {
            self.finished(f);
        }
    }

    /// A batch is over: bookkeeping, then a report to the supervisor.
    pub(super) fn finished(&mut self, f: Finished) {
        self.finish_batch(f);
        self.report();
    }

    pub(super) fn finish_batch(&mut self, f: Finished) {
        self.startup_progress_done(&f);
        let now = Instant::now();
        let full = f.batch.is_full();
        let n = f.batch.entries.len();
        let ok = f.result.is_ok();
        let ti = f.tag;
        let verify = f.batch.verify;
        // The warm start's initial sync (what differs from the index).
        let initial = f.batch.initial;
        let itemized_full = full && f.batch.itemize;
        let beside = self.initial_beside();
        // Another destination's full sync may still run: it keeps its lines.
        if full && !self.runner.busy() {
            self.progress_at = None;
        }
        if let (0, Some(l)) = (ti, &mut self.pair) {
            l.sync_finished(&self.src, self.watcher.rules(), &f.batch, ok);
        }
        // Recorded (on disk) before the batch leaves the queue: a crash after this
        // re-sends nothing of it, a crash before re-sends it at the next start.
        if let Some(ix) = &mut self.targets[ti].index {
            let rules = self.watcher.rules();
            if let Some(since) = ix.finished(&self.src, rules, &f.batch, ok) {
                ix.agree(&self.src, rules, since, None, Default::default());
                crate::delivered::give_back_memory();
            }
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
                if full || initial {
                    t.initial_ok = true;
                }
                if full {
                    let dst = t.handler.dst().to_path_buf();
                    t.dst_guard.full_done(&dst);
                }
            }
            Err(why) => {
                self.sync_failures += 1;
                self.last_error = Some(why.clone());
                t.last_error = Some(why.clone());
                t.unreachable = unreachable_code(f.code);
                if full || initial {
                    t.initial_failed = true;
                }
                if initial {
                    // Retried as a full sync (its end makes the destination ready),
                    // beside the queue where the initial sync may run there: live
                    // changes need not wait for a whole copy.
                    if beside {
                        t.batcher.defer_beside(now, full_batch(false));
                    } else {
                        t.batcher.push_event(
                            now,
                            Vec::new(),
                            true,
                            crate::watch::MASK_FOUND_DIR,
                            Class::Normal,
                        );
                    }
                }
            }
        }
        // A full resync is a verification run that was asked for, or the itemized full
        // sync of a start after one was asked for while the instance was stopped.
        let resync = if verify || itemized_full {
            self.targets[ti].resyncing.take()
        } else {
            None
        };
        let several = self.targets.len() > 1;
        let t = &self.targets[ti];
        let to = if several {
            format!(" to {}", t.name)
        } else {
            String::new()
        };
        if let Some(since) = resync {
            resync_done(&to, since.elapsed(), &f.result, f.itemized.as_ref());
        } else if let (true, Ok(()), Some(it)) = (verify, &f.result, &f.itemized) {
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
        if full || initial {
            self.initial_progress();
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

    /// Ready once every destination had its initial sync; with several, one that cannot
    /// be reached does not hold back the others (it is retried).
    pub(super) fn initial_progress(&mut self) {
        let several = self.targets.len() > 1;
        let initial_done = self
            .targets
            .iter()
            .all(|t| t.initial_ok || (several && t.initial_failed))
            && self.targets.iter().any(|t| t.initial_ok);
        if !self.ready && initial_done {
            info!(
                "initial sync done ({:.1}s after start)",
                self.started.elapsed().as_secs_f64()
            );
            // A full sync asked for by `clsync-manager resync` is done.
            if let Some(d) = self.cfg.index_dir.as_ref() {
                if self.targets.iter().all(|t| t.initial_ok) {
                    let _ = std::fs::remove_file(d.join(crate::delivered::RESYNC_MARKER));
                }
            }
            self.became_ready();
            if self.cfg.initial == Initial::Only && self.phase == Phase::Running {
                info!("only-initialsync: exiting");
                self.exit = Some(0);
            }
        }
    }

    /// The initial sync of destination `t`: from its index when a usable one exists
    /// (only what differs; nothing when nothing does), else the full sync. Logs which,
    /// and why.
    pub(super) fn initial_sync_of(&mut self, t: usize) {
        let to = if self.targets.len() > 1 {
            format!(" to {}", self.targets[t].name)
        } else {
            String::new()
        };
        let started = Instant::now();
        match self.warm(t) {
            Ok(d) if d.entries.is_empty() => {
                info!(
                    "initial sync: from the index (0 differ, 0 deleted, {:.2} s){to}",
                    started.elapsed().as_secs_f64()
                );
                self.targets[t].initial_ok = true;
            }
            Ok(d) => {
                info!(
                    "initial sync: from the index ({} differ, {} deleted, {:.2} s){to}",
                    d.differ,
                    d.deleted,
                    started.elapsed().as_secs_f64()
                );
                let batch = Batch {
                    entries: d.entries,
                    initial: true,
                    ..Batch::default()
                };
                self.targets[t].batcher.start_external(&batch);
                self.start(t, batch);
            }
            Err(why) => {
                info!("initial sync: full ({why}){to}");
                info!(
                    "initial sync of {} to {}",
                    self.src.display(),
                    self.targets[t].name
                );
                // After `clsync-manager resync`: its end tells what it repaired, as a
                // resync of a running worker does.
                let resync = why == RESYNC_REQUESTED;
                if resync {
                    self.targets[t].resyncing = Some(Instant::now());
                }
                self.start_full_itemized(t, false, resync);
            }
        }
    }

    /// What differs between the source and destination `t`'s index, or why the full
    /// sync runs.
    fn warm(&mut self, t: usize) -> Result<crate::delivered::warm::Differences, String> {
        let loaded = self.targets[t].index_loaded.take();
        let to_dest = if self.targets.len() > 1 {
            format!(" to {}", self.targets[t].name)
        } else {
            String::new()
        };
        if t == 0 && self.pair.is_some() {
            return Err("a failover pair's peer".into());
        }
        if self.cfg.initial_from == crate::config::InitialFrom::Full {
            return Err("initial-sync = full".into());
        }
        if self.cfg.full_initialsync {
            return Err("full-initialsync".into());
        }
        if let Some(d) = &self.cfg.index_dir {
            if std::fs::symlink_metadata(d.join(crate::delivered::RESYNC_MARKER)).is_ok() {
                return Err(RESYNC_REQUESTED.into());
            }
        }
        let Some(ix) = &self.targets[t].index else {
            return Err(if self.cfg.index_dir.is_none() {
                "no index-dir".into()
            } else {
                "no index".into()
            });
        };
        if !matches!(
            self.cfg.mode,
            Mode::RsyncDirect | Mode::RsyncShell | Mode::RsyncSo
        ) {
            return Err(format!("mode {:?} has no warm start", self.cfg.mode));
        }
        let rec = loaded.ok_or("no index")?;
        if let Some(why) = rec.unusable(&ix.identity_now()) {
            return Err(why);
        }
        let d = crate::delivered::warm::compare_reporting(
            &self.src,
            self.watcher.rules(),
            rec,
            &mut progress::comparing(self.started, self.start_progress.timing, &to_dest),
        )
        .map_err(|e| format!("cannot compare {} with the index: {e}", self.src.display()))?;
        if d.too_many() {
            return Err(format!(
                "{} of {} indexed paths differ, over 25 %",
                d.differ + d.deleted,
                d.indexed
            ));
        }
        Ok(d)
    }

    /// Whether an initial sync runs beside the queue (see the module doc of `worker`):
    /// before ready, rsync of our own only (a handler script may not expect two runs at
    /// once), not for a failover pair's peer, nor when the initial sync is all there is.
    fn initial_beside(&self) -> bool {
        !self.ready
            && self.pair.is_none()
            && self.cfg.mode == Mode::RsyncDirect
            && self.cfg.initial != Initial::Only
    }

    /// Starts a sync of the whole tree to destination `t` outside its queue (the initial
    /// sync, or a verification).
    pub(super) fn start_full(&mut self, t: usize, verify: bool) {
        self.start_full_itemized(t, verify, false);
    }

    /// [`start_full`](Self::start_full), its runs itemizing what they change when
    /// `itemize` (rsync of our own only).
    fn start_full_itemized(&mut self, t: usize, verify: bool, itemize: bool) {
        let mut batch = full_batch(verify);
        batch.itemize = itemize;
        if !verify && self.initial_beside() {
            // Changes made during a long initial copy are synced meanwhile.
            self.targets[t].batcher.start_beside(&mut batch);
        } else {
            self.targets[t].batcher.start_external(&batch);
        }
        self.start(t, batch);
    }
}

/// Why the initial sync is full after `clsync-manager resync` of a stopped instance.
const RESYNC_REQUESTED: &str = "resync requested";

/// The end of a full resync, in the log (and so in the manager's and `clsync-manager logs`):
/// how long it took and what it repaired, from rsync's itemized changes (files sent,
/// deleted, others such as directories, links and attributes); a sync handler of its own
/// does not say.
fn resync_done(
    to: &str,
    took: Duration,
    result: &Result<(), String>,
    itemized: Option<&crate::sync::Itemized>,
) {
    let secs = took.as_secs_f64();
    match (result, itemized) {
        (Err(why), _) => error!("full resync{to} failed after {secs:.1}s: {why}"),
        (Ok(()), Some(it)) if it.count == 0 => {
            info!("full resync{to} done in {secs:.1}s: nothing to repair");
        }
        (Ok(()), Some(it)) => info!(
            "full resync{to} done in {secs:.1}s: repaired {} transferred, {} deleted, {} other changes (for example: {})",
            it.transferred,
            it.deleted,
            it.count - it.transferred - it.deleted,
            it.first.join(", ")
        ),
        (Ok(()), None) => info!(
            "full resync{to} done in {secs:.1}s (the sync handler does not say what it changed)"
        ),
    }
}

/// A batch that syncs the whole tree.
pub(super) fn full_batch(verify: bool) -> Batch {
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
        initial: false,
        itemize: false,
    }
}
