/*!
The runner: runs the steps of batches without ever blocking the event loop.

The steps of a batch run one after another; with `threading` several batches run at once,
each its own `Job`.

Each child process runs in its own process group (so a stop or a timeout can kill rsync
together with whatever a wrapper script forked), with its argv built by the handler, never
a shell line. A small thread per step waits for it and wakes the event loop through a mio
`Waker`; the loop itself only ever polls. A second one looks at the step's processes every
half second for rsync's end-of-run race (`stall.rs`).

Exit codes: for rsync 0 and 24 ("some files vanished before they could be transferred",
which is normal on a live tree: the vanishing is an event of its own) are success; for a
handler script only 0. The `ignore-exitcode` list adds to those. Anything else, and a child
killed by a signal, fail the batch: its paths go back to the queue.
*/

use super::{Finished, Itemized, RunConfig, Step, Steps};
use crate::batcher::Batch;
use log::debug;
use mio::Waker;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

enum Outcome {
    Exited(ExitStatus),
    Returned(i32),
    Failed(io::Error),
}

struct Done {
    job: u64,
    step: u64,
    outcome: Outcome,
    /// With `stderr_to_log`: what the step said on standard error, summarised.
    said: Option<String>,
    /// What the step itemized (its output lines, counted; the first few kept).
    itemized: Option<Itemized>,
}

/// How many itemized lines are kept for the log.
const ITEMIZED_KEPT: usize = 10;

struct Job {
    id: u64,
    tag: usize,
    batch: Batch,
    steps: VecDeque<Step>,
    files: Vec<PathBuf>,
    /// The current step: its number, its process group (None for a call).
    step: u64,
    /// The current step may fail without failing the batch.
    optional: bool,
    pid: Option<Pid>,
    started: Instant,
    /// Set once the current step overran `timeout` and was signalled.
    timed_out: Option<Instant>,
    /// What the batch's steps itemized, summed.
    itemized: Option<Itemized>,
    /// The latest progress record of its run that prints one (kept after the run's
    /// end: the last one holds the totals).
    progress: Arc<std::sync::Mutex<Option<String>>>,
    /// When the batch started (its first step).
    began: Instant,
}

/// A running batch as the worker's progress lines see it ([`Runner::jobs`]).
pub struct JobView<'a> {
    /// The caller's tag (the destination).
    pub tag: usize,
    pub batch: &'a Batch,
    /// The latest `--info=progress2` record of its run, if it prints them.
    pub record: Option<String>,
    /// The process group of its current step (None for a call, or between steps).
    pub pid: Option<Pid>,
    /// When the batch started.
    pub began: Instant,
}

pub struct Runner {
    cfg: RunConfig,
    tx: Sender<Done>,
    rx: Receiver<Done>,
    waker: Arc<Waker>,
    jobs: Vec<Job>,
    next_id: u64,
    next_step: u64,
}

/// How long the result of a run waits for the end of its standard error once the run
/// has exited.
const STDERR_GRACE: Duration = Duration::from_secs(1);

/// Reads a child's standard error to its end: every line to the log at debug level; the
/// summary is the first line that says what went wrong (rsync's closing `rsync error:`
/// line only repeats the exit code) and how many more there were.
fn read_stderr(err: std::process::ChildStderr, name: &str) -> Option<String> {
    use std::io::BufRead;
    let mut first: Option<String> = None;
    let mut closing: Option<String> = None;
    let mut lines = 0usize;
    let mut r = std::io::BufReader::new(err);
    let mut buf = Vec::new();
    while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
        let line = String::from_utf8_lossy(&buf).trim().to_string();
        buf.clear();
        if line.is_empty() {
            continue;
        }
        debug!("{name}: {line}");
        lines += 1;
        if line.starts_with("rsync error:") {
            closing.get_or_insert(line);
        } else if first.is_none() {
            first = Some(line);
        }
    }
    let head = first.or(closing)?;
    Some(match lines {
        1 => head,
        n => format!("{head} (and {} more lines; -d 1 logs them)", n - 1),
    })
}

/// Reads a run's output: keeps the latest `--info=progress2` record (they end with `\r`
/// and hold a `%`) for [`Runner::progress`] and [`Runner::jobs`] (the last one stays
/// after the run's end: it holds the totals, for [`Finished::progress`]), and counts the
/// other lines (`rsync -i`'s itemized changes), keeping the first few.
fn read_output(
    mut out: std::process::ChildStdout,
    latest: &std::sync::Mutex<Option<String>>,
) -> Itemized {
    use std::io::Read;
    let mut itemized = Itemized::default();
    let mut buf = [0u8; 4096];
    let mut cur = Vec::new();
    if let Ok(mut l) = latest.lock() {
        *l = None;
    }
    while let Ok(n) = out.read(&mut buf) {
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\r' || b == b'\n' {
                let rec = String::from_utf8_lossy(&cur).trim().to_string();
                if rec.contains('%') && b == b'\r' {
                    if let Ok(mut l) = latest.lock() {
                        *l = Some(rec);
                    }
                } else if !rec.is_empty() && !rec.contains('%') {
                    itemized.add(rec, ITEMIZED_KEPT);
                }
                cur.clear();
            } else {
                cur.push(b);
            }
        }
    }
    itemized
}

/// rsync's `--info=progress2` record (`1,234,567  45%  12.34MB/s  0:00:12 (xfr#12,
/// to-chk=100/2000)`) as a readable line: bytes, percent, rate, time left, and files
/// checked of those known so far.
pub fn describe_progress(rec: &str) -> String {
    let f: Vec<&str> = rec.split_whitespace().collect();
    if f.len() < 4 {
        return rec.to_string();
    }
    let mut s = format!("{} bytes ({}), {}, {} left", f[0], f[1], f[2], f[3]);
    if let Some(chk) = f.iter().find_map(|x| {
        x.strip_prefix("to-chk=")
            .map(|c| (c, false))
            .or_else(|| x.strip_prefix("ir-chk=").map(|c| (c, true)))
    }) {
        let (c, scanning) = chk;
        if let Some((left, total)) = c.trim_end_matches(')').split_once('/') {
            if let (Ok(l), Ok(t)) = (left.parse::<u64>(), total.parse::<u64>()) {
                s.push_str(&format!(
                    "; {} of {t} files{}",
                    t - l.min(t),
                    if scanning { " found so far" } else { "" }
                ));
            }
        }
    }
    s
}

/// How long a child gets between SIGTERM and SIGKILL: a run that overran
/// `timeout-sync`, and every run when the worker aborts (src/worker/).
pub const KILL_GRACE: Duration = Duration::from_secs(3);

/// A readable reason for a failed run of `name`.
fn describe(name: &str, status: &ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let sig = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
        return format!("{name} was killed by signal {sig}");
    }
    let code = status.code().unwrap_or(-1);
    let what = match code {
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files, dirs",
        5 => "error starting client-server protocol",
        10 => "error in socket I/O",
        11 => "error in file I/O",
        12 => "error in rsync protocol data stream",
        20 => "received SIGUSR1 or SIGINT",
        23 => "partial transfer due to error",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for daemon connection",
        _ => "",
    };
    if what.is_empty() || !name.contains("rsync") {
        format!("{name} exited with code {code}")
    } else {
        format!("{name} exited with code {code} ({what})")
    }
}

impl Runner {
    pub fn new(cfg: RunConfig, waker: Arc<Waker>) -> Self {
        let (tx, rx) = channel();
        Runner {
            cfg,
            tx,
            rx,
            waker,
            jobs: Vec::new(),
            next_id: 0,
            next_step: 0,
        }
    }

    /// New exit-code and timeout policy (a configuration reload); applies to the runs
    /// started from now on.
    pub fn set_policy(&mut self, ignore_exitcodes: Vec<i32>, timeout: Option<Duration>) {
        self.cfg.ignore_exitcodes = ignore_exitcodes;
        self.cfg.timeout = timeout;
    }

    /// The latest progress record of a running full rsync (`--info=progress2`).
    pub fn progress(&self) -> Option<String> {
        self.jobs
            .iter()
            .find_map(|j| j.progress.lock().ok().and_then(|p| p.clone()))
    }

    /// The running batches, with what is known of their progress.
    pub fn jobs(&self) -> impl Iterator<Item = JobView<'_>> {
        self.jobs.iter().map(|j| JobView {
            tag: j.tag,
            batch: &j.batch,
            record: j.progress.lock().ok().and_then(|p| p.clone()),
            pid: j.pid,
            began: j.began,
        })
    }

    /// What the runs are called in messages ("rsync", "sync handler /x").
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// True while any batch runs.
    pub fn busy(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Batches running now.
    pub fn running(&self) -> usize {
        self.jobs.len()
    }

    fn success(&self, code: i32) -> bool {
        self.cfg.ok_codes.contains(&code) || self.cfg.ignore_exitcodes.contains(&code)
    }

    /// Starts the steps of a batch. If nothing could be started (or there was nothing
    /// to run) the batch is returned at once.
    pub fn start(&mut self, tag: usize, batch: Batch, steps: Steps) -> Option<Finished> {
        self.next_id += 1;
        self.jobs.push(Job {
            id: self.next_id,
            tag,
            batch,
            steps: steps.steps.into(),
            files: steps.files,
            step: 0,
            optional: false,
            pid: None,
            started: Instant::now(),
            timed_out: None,
            itemized: None,
            progress: Default::default(),
            began: Instant::now(),
        });
        self.next_step(self.next_id)
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.jobs.iter().position(|j| j.id == id)
    }

    /// Starts the next step of job `id`; finishes the job when none is left.
    fn next_step(&mut self, id: u64) -> Option<Finished> {
        let i = self.index(id)?;
        let Some(step) = self.jobs[i].steps.pop_front() else {
            return self.finish(i, Ok(()), None);
        };
        self.next_step += 1;
        let seq = self.next_step;
        let tx = self.tx.clone();
        let waker = self.waker.clone();
        let report = move |outcome, itemized, said| {
            let _ = tx.send(Done {
                job: id,
                step: seq,
                outcome,
                said,
                itemized,
            });
            let _ = waker.wake();
        };
        let optional = matches!(&step, Step::Exec(e) if e.optional);
        let pid = match step {
            Step::Exec(e) => {
                debug!("running {} {:?}", e.program.display(), e.args);
                // Checked again right before each run: the file may have changed.
                if let Err(msg) =
                    crate::strict::check_program_in(&self.cfg.cwd, &e.program, "sync handler")
                {
                    return self.finish(i, Err(msg), None);
                }
                let mut cmd = Command::new(&e.program);
                cmd.args(&e.args)
                    .envs(e.env.iter().map(|(k, v)| (k, v)))
                    .current_dir(&self.cfg.cwd)
                    .stdin(Stdio::null())
                    .process_group(0);
                if let Some(g) = self.cfg.gid {
                    cmd.gid(g);
                }
                if let Some(u) = self.cfg.uid {
                    cmd.uid(u);
                }
                // A worker killed (SIGKILL) takes its handler with it: an rsync left
                // running could finish after the next worker's sync of the same paths
                // and put an older copy over the newer one its index records.
                // SAFETY: runs in the child between fork and exec; prctl is
                // async-signal-safe and nothing is allocated.
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                if e.progress || e.itemize {
                    cmd.stdout(Stdio::piped());
                }
                if self.cfg.stderr_to_log {
                    cmd.stderr(Stdio::piped());
                }
                match cmd.spawn() {
                    Ok(mut child) => {
                        // A pid is at most PID_MAX_LIMIT (2^22): it fits an i32.
                        #[allow(clippy::cast_possible_wrap)]
                        let pid = Pid::from_raw(child.id() as i32);
                        let reader = child.stdout.take().map(|out| {
                            let latest = self.jobs[i].progress.clone();
                            std::thread::spawn(move || read_output(out, &latest))
                        });
                        let said = child.stderr.take().map(|err| {
                            let name = self.cfg.name.clone();
                            let (tx, rx) = channel();
                            std::thread::spawn(move || {
                                let _ = tx.send(read_stderr(err, &name));
                            });
                            rx
                        });
                        let itemize = e.itemize;
                        // Beside the run: wakes an rsync stalled at its end (stall.rs).
                        // Optional: a thread that cannot be started only goes without.
                        let (ended, watching) = channel::<()>();
                        let name = self.cfg.name.clone();
                        let _ = std::thread::Builder::new()
                            .name("run-watch".into())
                            .spawn(move || super::stall::watch(pid, &name, &watching));
                        std::thread::spawn(move || {
                            let outcome = match child.wait() {
                                Ok(st) => Outcome::Exited(st),
                                Err(e) => Outcome::Failed(e),
                            };
                            drop(ended);
                            let itemized = reader.and_then(|r| r.join().ok()).filter(|_| itemize);
                            // A grandchild that keeps standard error open (a daemon a
                            // script started) must not hold the result back.
                            let said = said
                                .and_then(|rx| rx.recv_timeout(STDERR_GRACE).ok())
                                .flatten();
                            report(outcome, itemized, said)
                        });
                        Some(pid)
                    }
                    Err(err) => {
                        let msg = format!("cannot run {}: {err}", e.program.display());
                        if optional {
                            debug!("{msg} (optional step)");
                            return self.next_step(id);
                        }
                        return self.finish(i, Err(msg), None);
                    }
                }
            }
            Step::Call(f) => {
                std::thread::spawn(move || report(Outcome::Returned(f()), None, None));
                None
            }
        };
        let job = &mut self.jobs[i];
        job.step = seq;
        job.optional = optional;
        job.pid = pid;
        job.started = Instant::now();
        job.timed_out = None;
        None
    }

    fn finish(
        &mut self,
        i: usize,
        result: Result<(), String>,
        code: Option<i32>,
    ) -> Option<Finished> {
        let job = self.jobs.swap_remove(i);
        if !self.cfg.keep_lists {
            for f in &job.files {
                let _ = std::fs::remove_file(f);
            }
        }
        let progress = job.progress.lock().ok().and_then(|mut p| p.take());
        Some(Finished {
            tag: job.tag,
            batch: job.batch,
            result,
            code,
            itemized: job.itemized,
            progress,
        })
    }

    /// Collects ended steps (call when the waker fired). Returns the batches whose last
    /// step is over or whose step failed.
    pub fn poll(&mut self) -> Vec<Finished> {
        let mut out = Vec::new();
        while let Ok(done) = self.rx.try_recv() {
            let Some(i) = self
                .index(done.job)
                .filter(|&i| self.jobs[i].step == done.step)
            else {
                continue;
            };
            let job = &mut self.jobs[i];
            job.pid = None;
            if let Some(it) = done.itemized {
                let sum = job.itemized.get_or_insert_with(Itemized::default);
                sum.count += it.count;
                sum.transferred += it.transferred;
                sum.deleted += it.deleted;
                for l in it.first {
                    if sum.first.len() < ITEMIZED_KEPT {
                        sum.first.push(l);
                    }
                }
            }
            let name = self.cfg.name.clone();
            if job.timed_out.is_some() {
                let t = self.cfg.timeout.unwrap_or_default();
                let msg = format!(
                    "{name} ran longer than timeout-sync ({}s) and was killed",
                    t.as_secs_f64()
                );
                out.extend(self.finish(i, Err(msg), None));
                continue;
            }
            let optional = self.jobs[i].optional;
            let f = match done.outcome {
                Outcome::Exited(st) if optional || st.code().is_some_and(|c| self.success(c)) => {
                    self.next_step(done.job)
                }
                Outcome::Exited(st) => {
                    let mut why = describe(&name, &st);
                    if let Some(said) = &done.said {
                        why.push_str(": ");
                        why.push_str(said);
                    }
                    self.finish(i, Err(why), st.code())
                }
                Outcome::Returned(c) if self.success(c) => self.next_step(done.job),
                Outcome::Returned(c) => {
                    self.finish(i, Err(format!("{name} returned {c}")), Some(c))
                }
                Outcome::Failed(e) => self.finish(i, Err(format!("waiting for {name}: {e}")), None),
            };
            out.extend(f);
        }
        out
    }

    /// When a running step overruns its timeout (or, once signalled, when it gets KILL).
    pub fn deadline(&self) -> Option<Instant> {
        let limit = self.cfg.timeout?;
        self.jobs
            .iter()
            .filter(|j| j.pid.is_some())
            .map(|j| match j.timed_out {
                Some(at) => at + KILL_GRACE,
                None => j.started + limit,
            })
            .min()
    }

    /// Enforces the timeout: TERM to a step's process group when it overruns, KILL after
    /// a grace period. Call on every loop turn.
    pub fn enforce_timeout(&mut self, now: Instant) {
        let Some(limit) = self.cfg.timeout else {
            return;
        };
        for job in &mut self.jobs {
            let Some(pid) = job.pid else { continue };
            match job.timed_out {
                None if now >= job.started + limit => {
                    log::error!(
                        "{} has run for {}s, longer than timeout-sync: killing its process group",
                        self.cfg.name,
                        limit.as_secs_f64()
                    );
                    job.timed_out = Some(now);
                    let _ = killpg(pid, Signal::SIGTERM);
                }
                Some(at) if now >= at + KILL_GRACE => {
                    let _ = killpg(pid, Signal::SIGKILL);
                }
                _ => {}
            }
        }
    }

    /// Sends `sig` to the process group of every running step.
    pub fn signal(&self, sig: Signal) {
        for pid in self.jobs.iter().filter_map(|j| j.pid) {
            let _ = killpg(pid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::describe_progress;

    #[test]
    fn progress_records_read_as_a_line() {
        assert_eq!(
            describe_progress(
                "    1,234,567  45%   12.34MB/s    0:00:12 (xfr#12, to-chk=100/2000)"
            ),
            "1,234,567 bytes (45%), 12.34MB/s, 0:00:12 left; 1900 of 2000 files"
        );
        assert_eq!(
            describe_progress("32,768   0%    0.00kB/s    0:00:00 (xfr#1, ir-chk=1009/1011)"),
            "32,768 bytes (0%), 0.00kB/s, 0:00:00 left; 2 of 1011 files found so far"
        );
        assert_eq!(describe_progress("odd"), "odd");
    }
}
