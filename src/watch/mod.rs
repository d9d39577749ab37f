/*!
The watch stage, first in the pipeline: kernel events in, dirty paths out.

```text
kernel queue ──▶ pump.rs (reader thread) ──buffers──▶ inotify.rs | fanotify.rs ──▶ Changes
                                           records.rs parses,   tree.rs holds the
                                           the backend applies  watched directories
```

Why a stage of its own: a recursive watch is the part where the peers lose changes
(nested directories created before their watch existed, overflows dropped as "stale",
paths that outlive a rename). Owning it lets us make one promise: any event we could not
see turns into "this subtree is dirty: rescan it and sync it recursively".

The worker sees only [`Watcher`]: it waits on [`Watcher::fds`], calls
[`Watcher::drain`] and gets [`Changes`] (paths relative to the watch root, moves, rule
excluded paths, whether the root itself is gone). The watcher only reports paths; it
never decides when or how to sync (that is the batcher's job, then the runner's).

Files, imports running one way (this file → backends → the rest):
- `inotify.rs`: one watch per directory, the default backend;
- `fanotify.rs`: one mark per file system (root, Linux 5.9+), inotify when not possible;
- `tree.rs`: the watched directories as `{parent, name}` nodes (inotify);
- `pump.rs`: the thread that empties the kernel queue as events arrive;
- `records.rs`: the kernel's event records, bytes to fields;
- `changes.rs`: what the stage hands on; `error.rs`: why it cannot start.
*/

mod changes;
mod error;
mod fanotify;
mod inotify;
mod pump;
mod records;
mod tree;

use self::inotify::InotifyWatcher;
pub use changes::{abs_path, Changes, Dirty, MASK_FOUND, MASK_FOUND_DIR};
pub use error::WatchError;

use crate::rules::Rules;
use log::warn;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

/// Which kernel interface watches the tree (`monitor`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Monitor {
    /// One inotify watch per directory (works everywhere, for any user).
    #[default]
    Inotify,
    /// One fanotify mark per file system (root, Linux 5.9+); inotify when not possible.
    Fanotify,
}

impl std::str::FromStr for Monitor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "inotify" => Ok(Monitor::Inotify),
            "fanotify" => Ok(Monitor::Fanotify),
            "kqueue" | "bsm" | "bsm_prefetch" | "gio" | "dtracepipe" => Err(format!(
                "monitor {s} is not supported: it is for BSD, macOS or GLib; on Linux use inotify or fanotify"
            )),
            _ => Err(format!(
                "unknown monitor {s:?} (expected inotify or fanotify)"
            )),
        }
    }
}

/// The tree watch, by either backend; the worker sees only this, and only its methods:
/// which backend runs is this file's business (the fallback to inotify included).
pub struct Watcher(Backend);

/// The backend behind a [`Watcher`].
enum Backend {
    Inotify(Box<InotifyWatcher>),
    Fanotify(Box<fanotify::FanWatcher>),
}

impl Watcher {
    /// Watches the tree below `root` with `monitor`. fanotify that cannot be used (not
    /// root, an old kernel, a file system without file handles) falls back to inotify
    /// with the reason in the log. Returns the watcher and the rule-excluded paths.
    pub fn new(
        root: &Path,
        rules: Rules,
        one_file_system: bool,
        monitor: Monitor,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Self, Changes), WatchError> {
        let rules = match monitor {
            Monitor::Inotify => rules,
            Monitor::Fanotify => match fanotify::FanWatcher::new(root, rules, one_file_system) {
                Ok(f) => {
                    let mut out = Changes::default();
                    f.list_excluded(&mut out);
                    return Ok((Watcher(Backend::Fanotify(Box::new(f))), out));
                }
                Err((fanotify::Unavailable(why), rules)) => {
                    warn!(
                        "monitor = fanotify cannot be used for {}: {why}; watching with inotify instead",
                        root.display()
                    );
                    rules
                }
            },
        };
        let (w, out) = InotifyWatcher::new(root, rules, one_file_system, progress)?;
        Ok((Watcher(Backend::Inotify(Box::new(w))), out))
    }

    /// Hands the reading of the kernel queue to a thread of its own ([`pump`]); call
    /// after any fork, before [`fds`](Self::fds).
    pub fn start_pump(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Backend::Inotify(w) => w.start_pump(),
            Backend::Fanotify(f) => f.start_pump(),
        }
    }

    /// The fds to wait on for events (after [`start_pump`](Self::start_pump)).
    pub fn fds(&self) -> io::Result<Vec<RawFd>> {
        Ok(match &self.0 {
            Backend::Inotify(w) => vec![w.wait_fd()?],
            Backend::Fanotify(f) => f.fds()?.to_vec(),
        })
    }

    pub fn rules(&self) -> &Rules {
        match &self.0 {
            Backend::Inotify(w) => w.rules(),
            Backend::Fanotify(f) => f.rules(),
        }
    }

    /// Kernel watches held: inotify watches, or fanotify marks (one per file system).
    pub fn watched(&self) -> usize {
        match &self.0 {
            Backend::Inotify(w) => w.watched(),
            Backend::Fanotify(f) => f.marks(),
        }
    }

    /// Directories that could not be watched and are polled (inotify only).
    pub fn unwatched(&self) -> usize {
        match &self.0 {
            Backend::Inotify(w) => w.unwatched(),
            Backend::Fanotify(_) => 0,
        }
    }

    /// What is watched, for the log: "20001 directories with inotify", "1 directory
    /// with inotify".
    pub fn describe(&self) -> String {
        match &self.0 {
            Backend::Inotify(w) => format!(
                "{} director{} with inotify",
                w.watched(),
                if w.watched() == 1 { "y" } else { "ies" }
            ),
            Backend::Fanotify(f) => format!(
                "the whole tree with {} fanotify file-system mark{}",
                f.marks(),
                if f.marks() == 1 { "" } else { "s" }
            ),
        }
    }

    pub fn set_rules(&mut self, rules: Rules, out: &mut Changes) {
        match &mut self.0 {
            Backend::Inotify(w) => w.set_rules(rules, out),
            Backend::Fanotify(f) => f.set_rules(rules, out),
        }
    }

    pub fn poll_unwatched(&mut self, out: &mut Changes) {
        if let Backend::Inotify(w) = &mut self.0 {
            w.poll_unwatched(out);
        }
    }

    /// Handles every event the reader thread has handed over and reports what changed.
    pub fn drain(&mut self, out: &mut Changes) -> io::Result<()> {
        match &mut self.0 {
            Backend::Inotify(w) => w.drain(out, false),
            Backend::Fanotify(f) => f.drain(out, false),
        }
    }

    /// A barrier: like [`drain`](Self::drain), but first has the reader thread empty the
    /// kernel queue, so every event queued before this call is handled. The final sync of
    /// a stop is planned after it (a change made just before the signal is in it).
    pub fn drain_all(&mut self, out: &mut Changes) -> io::Result<()> {
        match &mut self.0 {
            Backend::Inotify(w) => w.drain(out, true),
            Backend::Fanotify(f) => f.drain(out, true),
        }
    }
}
