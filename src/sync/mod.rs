/*!
Running rsync for a batch without ever blocking the event loop.

A batch becomes one or more rsync runs ([`plan`]), executed one after another. Each run
is a child process in its own process group (so a stop can kill rsync together with the
children rsync forks), with its argv built here, never a shell line. A small thread per
run waits for the child and wakes the event loop through a mio `Waker`; the loop itself
only ever polls.

Exit codes: 0 and 24 ("some files vanished before they could be transferred", which is
normal on a live tree: the vanishing is an event of its own) are success. Anything else,
23 included, and a child killed by a signal, fail the batch: its paths go back to the
queue.
*/

pub mod plan;

use crate::queue::Batch;
use log::debug;
use mio::Waker;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use plan::{Lists, Plan};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

/// How to call rsync.
#[derive(Debug, Clone)]
pub struct RsyncConfig {
    pub program: PathBuf,
    pub src: PathBuf,
    pub dst: PathBuf,
    /// Where list files are written (a private directory).
    pub lists_dir: PathBuf,
    /// Exit codes that count as success besides 0 and 24 (`ignore-exitcode`).
    pub ignore_exitcodes: Vec<i32>,
    /// A run that takes longer is killed (its process group: TERM, then KILL) and fails.
    pub timeout: Option<std::time::Duration>,
    /// `rsync -x`: do not cross file system boundaries.
    pub one_file_system: bool,
    /// Keep list files after the run (`dont-unlink-lists`, for debugging).
    pub keep_lists: bool,
}

enum Run {
    Full { exclude: Vec<u8> },
    Part(Lists),
}

struct Job {
    batch: Batch,
    runs: VecDeque<Run>,
    pid: Option<Pid>,
    files: Vec<PathBuf>,
    /// When the current run started.
    started: std::time::Instant,
    /// Set once the current run overran `timeout` and was signalled.
    timed_out: Option<std::time::Instant>,
}

struct Done {
    seq: u64,
    status: io::Result<ExitStatus>,
}

/// The outcome of a finished batch.
pub struct Finished {
    pub batch: Batch,
    pub result: Result<(), String>,
    /// The failing run's exit code, when it exited with one.
    pub code: Option<i32>,
}

pub struct Runner {
    cfg: RsyncConfig,
    tx: Sender<Done>,
    rx: Receiver<Done>,
    waker: Arc<Waker>,
    job: Option<Job>,
    seq: u64,
    /// Exit code of the run that failed the current job.
    last_code: Option<i32>,
}

/// How long a run that overran its timeout gets between TERM and KILL.
const KILL_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Success, as far as a mirror is concerned.
pub fn rsync_ok(status: &ExitStatus) -> bool {
    matches!(status.code(), Some(0 | 24))
}

/// A readable reason for an rsync failure.
pub fn describe(status: &ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
        return format!("rsync was killed by signal {name}");
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
    if what.is_empty() {
        format!("rsync exited with code {code}")
    } else {
        format!("rsync exited with code {code} ({what})")
    }
}

impl Runner {
    pub fn new(cfg: RsyncConfig, waker: Arc<Waker>) -> Self {
        let (tx, rx) = channel();
        Runner {
            cfg,
            tx,
            rx,
            waker,
            job: None,
            seq: 0,
            last_code: None,
        }
    }

    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// Starts the runs of a planned batch. If nothing could be spawned the batch is
    /// returned as failed at once.
    pub fn start(&mut self, batch: Batch, plan: Plan) -> Option<Finished> {
        assert!(self.job.is_none(), "one batch at a time");
        let runs = match plan {
            Plan::Full { exclude } => VecDeque::from([Run::Full { exclude }]),
            Plan::Targeted(parts) => parts.into_iter().map(Run::Part).collect(),
        };
        self.job = Some(Job {
            batch,
            runs,
            pid: None,
            files: Vec::new(),
            started: std::time::Instant::now(),
            timed_out: None,
        });
        self.next_run()
    }

    fn write_list(&self, name: &str, data: &[u8]) -> io::Result<PathBuf> {
        let path = self
            .cfg
            .lists_dir
            .join(format!("{name}.{}.{}", std::process::id(), self.seq));
        std::fs::write(&path, data)?;
        Ok(path)
    }

    fn argv(&mut self, run: &Run) -> io::Result<Vec<OsString>> {
        let mut args: Vec<OsString> = vec!["-aH".into(), "--delete".into()];
        if self.cfg.one_file_system {
            args.push("-x".into());
        }
        let mut files = Vec::new();
        let (exclude, include) = match run {
            Run::Full { exclude } => (exclude, None),
            Run::Part(l) => (&l.exclude, Some(&l.include)),
        };
        if !exclude.is_empty() || include.is_some() {
            args.push("--from0".into());
        }
        if !exclude.is_empty() {
            let p = self.write_list("exclude", exclude)?;
            let mut a = OsString::from("--exclude-from=");
            a.push(&p);
            args.push(a);
            files.push(p);
        }
        if let Some(include) = include {
            let p = self.write_list("include", include)?;
            let mut a = OsString::from("--include-from=");
            a.push(&p);
            args.push(a);
            args.push("--exclude=*".into());
            files.push(p);
        }
        args.push(dir_arg(&self.cfg.src));
        args.push(dir_arg(&self.cfg.dst));
        if let Some(job) = self.job.as_mut() {
            job.files.extend(files);
        }
        Ok(args)
    }

    /// Spawns the next run of the current job; finishes the job when none is left.
    fn next_run(&mut self) -> Option<Finished> {
        let run = self.job.as_mut()?.runs.pop_front();
        let Some(run) = run else {
            return self.finish(Ok(()));
        };
        self.seq += 1;
        let seq = self.seq;
        let spawned = self.argv(&run).and_then(|args| {
            debug!("running {} {:?}", self.cfg.program.display(), args);
            Command::new(&self.cfg.program)
                .args(&args)
                .stdin(Stdio::null())
                .process_group(0)
                .spawn()
        });
        match spawned {
            Ok(mut child) => {
                let pid = Pid::from_raw(child.id() as i32);
                let job = self.job.as_mut().expect("job");
                job.pid = Some(pid);
                job.started = std::time::Instant::now();
                job.timed_out = None;
                let tx = self.tx.clone();
                let waker = self.waker.clone();
                std::thread::spawn(move || {
                    let status = child.wait();
                    let _ = tx.send(Done { seq, status });
                    let _ = waker.wake();
                });
                None
            }
            Err(e) => self.finish(Err(format!(
                "cannot run {}: {e}",
                self.cfg.program.display()
            ))),
        }
    }

    fn finish(&mut self, result: Result<(), String>) -> Option<Finished> {
        let job = self.job.take()?;
        for f in &job.files {
            if !self.cfg.keep_lists {
                let _ = std::fs::remove_file(f);
            }
        }
        Some(Finished {
            batch: job.batch,
            result,
            code: self.last_code.take(),
        })
    }

    /// Collects exited children (call when the waker fired). Returns the batch when its
    /// last run is over or a run failed.
    pub fn poll(&mut self) -> Option<Finished> {
        while let Ok(done) = self.rx.try_recv() {
            if done.seq != self.seq || self.job.is_none() {
                continue;
            }
            let job = self.job.as_mut().expect("job");
            job.pid = None;
            if job.timed_out.is_some() {
                let t = self.cfg.timeout.unwrap_or_default();
                return self.finish(Err(format!(
                    "rsync ran longer than timeout-sync ({}s) and was killed",
                    t.as_secs_f64()
                )));
            }
            match done.status {
                Ok(st)
                    if rsync_ok(&st)
                        || st
                            .code()
                            .is_some_and(|c| self.cfg.ignore_exitcodes.contains(&c)) =>
                {
                    if let Some(f) = self.next_run() {
                        return Some(f);
                    }
                }
                Ok(st) => {
                    self.last_code = st.code();
                    return self.finish(Err(describe(&st)));
                }
                Err(e) => return self.finish(Err(format!("waiting for rsync: {e}"))),
            }
        }
        None
    }

    /// When the running run overruns its timeout (or, once signalled, when it gets KILL).
    pub fn deadline(&self) -> Option<std::time::Instant> {
        let job = self.job.as_ref()?;
        job.pid?;
        match job.timed_out {
            Some(at) => Some(at + KILL_GRACE),
            None => Some(job.started + self.cfg.timeout?),
        }
    }

    /// Enforces the timeout: TERM to the run's process group when it overruns, KILL
    /// after a grace period. Call on every loop turn.
    pub fn enforce_timeout(&mut self, now: std::time::Instant) {
        let Some(limit) = self.cfg.timeout else {
            return;
        };
        let Some(job) = self.job.as_mut() else { return };
        let Some(pid) = job.pid else { return };
        match job.timed_out {
            None if now >= job.started + limit => {
                log::error!(
                    "rsync has run for {}s, longer than timeout-sync: killing its process group",
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

    /// Sends `sig` to the running rsync's process group.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.job.as_ref().and_then(|j| j.pid) {
            let _ = killpg(pid, sig);
        }
    }
}

/// `DIR/`: rsync copies the directory's contents, not the directory itself.
fn dir_arg(p: &Path) -> OsString {
    let mut s = p.as_os_str().to_os_string();
    s.push("/");
    s
}
