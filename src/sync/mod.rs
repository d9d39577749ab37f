/*!
The last stage of the pipeline: a batch the batcher (src/batcher.rs) let go becomes the
runs that mirror it, and those runs are watched to their end without ever blocking the
event loop.

kernel → tree → rules → batcher → **plan → runner**

- [`handler`]: what a mode makes of a batch. A batch becomes a list of [`Step`]s: for
  rsync one rsync run per part of the plan, for a handler script one run with its list
  file, for a shared-object handler an in-process call.
- [`plan`]: for the rsync modes, which include and exclude lists cover the batch's paths
  (an `lstat` of each path at plan time decides its lines).
- [`runner`]: starts the steps of a batch one after another, each child in its own
  process group, and reports each finished batch ([`Finished`]).
- [`so`]: the C ABI of shared-object handlers.
- `stall`: beside each run, wakes an rsync (3.5) whose receiver missed the signal that
  ends its run, which would otherwise sleep a minute before exiting.

This file holds the types the stages pass to each other: what to run ([`Exec`], [`Step`],
[`Steps`]), how every run is started and judged ([`RunConfig`]), and what came of a batch
([`Finished`], [`Itemized`]).
*/

// Every unsafe operation of the stage (nearly all in so.rs) is in a block of its own
// with a `SAFETY:` comment, unsafe functions included; clippy checks both.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod handler;
pub mod plan;
mod runner;
pub mod so;
mod stall;

pub use runner::{describe_progress, Runner, KILL_GRACE};

use crate::batcher::Batch;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// One child process of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Added to the environment.
    pub env: Vec<(OsString, OsString)>,
    /// The run prints rsync's `--info=progress2` on standard output: it is read, and the
    /// latest record is kept for [`Runner::progress`].
    pub progress: bool,
    /// The run itemizes its changes (`rsync -i`) on standard output: they are counted
    /// and the first few kept, for [`Finished::itemized`] (a verification's report).
    pub itemize: bool,
    /// An optimisation whose failure does not fail the batch (a remote `mv` that the
    /// following rsync run makes good if it did not work).
    pub optional: bool,
}

/// One step of a batch.
pub enum Step {
    /// A child process in its own process group.
    Exec(Exec),
    /// An in-process call on a thread of its own (shared-object handlers); returns the
    /// handler's code, 0 for success.
    Call(Box<dyn FnOnce() -> i32 + Send>),
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Exec(e) => e.fmt(f),
            Step::Call(_) => f.write_str("Call"),
        }
    }
}

/// The steps of a batch and the list files they read (removed when the batch ends).
#[derive(Debug, Default)]
pub struct Steps {
    pub steps: Vec<Step>,
    pub files: Vec<PathBuf>,
}

/// How every run is started and judged.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    /// What the runs are called in messages ("rsync", "sync handler /x").
    pub name: String,
    /// Working directory of every child (the watch directory).
    pub cwd: PathBuf,
    /// Exit codes that are success (0, and 24 for rsync).
    pub ok_codes: Vec<i32>,
    /// Exit codes that count as success besides those (`ignore-exitcode`).
    pub ignore_exitcodes: Vec<i32>,
    /// A run that takes longer is killed (its process group: TERM, then KILL) and fails.
    pub timeout: Option<Duration>,
    /// Keep list files after the run (`dont-unlink-lists`, for debugging).
    pub keep_lists: bool,
    /// Run children as this user and group (`sync-handler-uid`, `sync-handler-gid`).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The children's standard error goes to the log at debug level, line by line, and
    /// a failure's message quotes its first line: one summarised line per failed try
    /// instead of rsync's ten (set for rsync run by the worker itself; a handler script's
    /// output stays its own).
    pub stderr_to_log: bool,
}

/// Changes a run itemized: how many, and the first ones.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Itemized {
    pub count: usize,
    pub first: Vec<String>,
    /// Of those, files whose data was sent (rsync's `>f`/`<f` lines).
    pub transferred: usize,
    /// Of those, paths deleted at the destination (`*deleting`).
    pub deleted: usize,
}

impl Itemized {
    /// Counts one line of `rsync -i` (`YXcstpoguax path`, or `*deleting path`).
    pub fn add(&mut self, line: String, keep: usize) {
        self.count += 1;
        if line.starts_with("*deleting") {
            self.deleted += 1;
        } else if line.starts_with(['>', '<']) {
            self.transferred += 1;
        }
        if self.first.len() < keep {
            self.first.push(line);
        }
    }
}

/// The outcome of a finished batch.
pub struct Finished {
    /// The caller's tag of the batch (the destination it was for).
    pub tag: usize,
    pub batch: Batch,
    pub result: Result<(), String>,
    /// The failing run's exit code, when it exited with one.
    pub code: Option<i32>,
    /// What its runs itemized, when they were asked to (`Exec::itemize`).
    pub itemized: Option<Itemized>,
    /// The last `--info=progress2` record of its run (the totals), when it printed them.
    pub progress: Option<String>,
}
