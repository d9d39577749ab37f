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
    pub(super) fn start(&mut self, t: usize, batch: Batch) {
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
    pub(super) fn finished(&mut self, f: Finished) {
        self.finish_batch(f);
        self.report();
    }

    pub(super) fn finish_batch(&mut self, f: Finished) {
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

    /// Starts a sync of the whole tree to destination `t` outside its queue (the initial
    /// sync, or a verification).
    pub(super) fn start_full(&mut self, t: usize, verify: bool) {
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
    }
}
