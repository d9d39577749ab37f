/*!
What a manager leaves for the next one in `STATE_DIR/state.json`: the instances started on
demand (they run again after a manager restart) and the pids of running workers (a new
manager waits for them to exit before it starts their instance again, so an instance never
has two workers).

And, at a clean exit, in `STATE_DIR/last-runs.json` (0600: logs name files): each instance's
last run (its log, how it ended, its last sync). A restart of the manager (a package
upgrade restarts it) would otherwise forget them: `clsync-manager logs NAME` would have
nothing to show and LAST SYNC (and its metric) would be empty until the next sync, which
after a warm start with nothing to send may be long. The next manager keeps them as it
keeps stopped instances' (the 64 most recent); a start of the instance takes them up.

Apart because it is the only state that outlives the process.
*/

use super::daemon::{fingerprint, Daemon};
use super::instance::{alive_worker, Instance, LastRun, State};
use super::life::Policy;
use crate::profile::{self, Profiles};
use log::{error, warn};
use std::collections::{BTreeMap, BTreeSet};

/// What the state file keeps across manager restarts.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Saved {
    #[serde(default)]
    pub(super) on_demand: BTreeSet<String>,
    #[serde(default)]
    pub(super) workers: BTreeMap<String, i32>,
}

/// The file of the last runs a manager leaves at exit.
const LAST_RUNS: &str = "last-runs.json";

/// A last-runs file larger than this is not read (1,000 lines of each of 64 instances are
/// about 6 MB).
const LAST_RUNS_MAX: u64 = 64 << 20;

/// One instance's last run in [`LAST_RUNS`].
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedRun {
    name: String,
    #[serde(flatten)]
    run: LastRun,
}

impl Daemon {
    /// At a clean exit (every worker stopped): each instance's last run, for the next
    /// manager's `logs` and LAST SYNC, the most recently ended last. The instances' logs
    /// are taken (the manager is about to exit).
    pub(super) fn save_last_runs(&mut self) {
        let mut live: Vec<SavedRun> = (self.instances.values_mut())
            .filter(|i| !i.logs.is_empty() || i.last_sync_unix.is_some())
            .map(|i| SavedRun {
                name: i.name.clone(),
                run: i.last_run(),
            })
            .collect();
        live.sort_by(|a, b| {
            let at = |r: &SavedRun| r.run.ended.map_or(0.0, |e| e.at_unix);
            at(a).total_cmp(&at(b))
        });
        let kept = (self.stopped.iter())
            .filter(|(n, _)| !self.instances.contains_key(*n))
            .map(|(n, r)| SavedRun {
                name: n.clone(),
                run: r.clone(),
            });
        let runs: Vec<SavedRun> = kept.chain(live).collect();
        let path = self.opts.state_dir.join(LAST_RUNS);
        let text = serde_json::to_vec(&runs).unwrap_or_default();
        if let Err(e) = crate::safe_file::write_atomic(&path, &text, 0o600) {
            error!("{}: {e}", path.display());
        }
    }

    /// The last runs the previous manager left: kept as stopped instances' are.
    fn restore_last_runs(&mut self) {
        let path = self.opts.state_dir.join(LAST_RUNS);
        use std::os::unix::fs::OpenOptionsExt;
        // Not through a symlink, and not waiting on a FIFO: a regular file of root's, in
        // the private state directory.
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
        else {
            return;
        };
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            warn!("{}: ignored: not a regular file", path.display());
            return;
        }
        if f.metadata().is_ok_and(|m| m.len() > LAST_RUNS_MAX) {
            warn!(
                "{}: ignored: larger than {LAST_RUNS_MAX} bytes",
                path.display()
            );
            return;
        }
        match serde_json::from_reader::<_, Vec<SavedRun>>(std::io::BufReader::new(f)) {
            Ok(runs) => {
                for r in runs {
                    self.stopped.keep(&r.name, r.run);
                }
            }
            Err(e) => warn!("{}: ignored: {e}", path.display()),
        }
    }

    /// Reads the state file of a previous manager: on-demand instances, live workers, and
    /// the last runs it left.
    pub(super) fn restore(&mut self, profiles: &Profiles) {
        self.restore_last_runs();
        let path = self.opts.state_dir.join("state.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let saved: Saved = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                warn!("{}: ignored: {e}", path.display());
                return;
            }
        };
        for name in &saved.on_demand {
            match profile::resolve(profiles, name, None) {
                Ok(r) => {
                    let mut i = Instance::new(
                        &r.instance,
                        &r.profile,
                        fingerprint(&r.values),
                        Policy::of(&r.values),
                    );
                    i.on_demand = true;
                    self.instances.insert(r.instance.clone(), i);
                }
                Err(e) => warn!("on-demand instance {name} is not restarted: {e}"),
            }
        }
        for (name, pid) in saved.workers {
            if !alive_worker(pid) {
                continue;
            }
            if let Some(i) = self.instances.get_mut(&name) {
                warn!("[{name}] a worker of the previous manager (pid {pid}) is still running; waiting for it to exit");
                i.state = State::Waiting(pid);
            } else if let Ok(r) = profile::resolve(profiles, &name, None) {
                let mut i = Instance::new(
                    &r.instance,
                    &r.profile,
                    fingerprint(&r.values),
                    Policy::of(&r.values),
                );
                i.state = State::Waiting(pid);
                self.instances.insert(name, i);
            }
        }
    }

    /// Writes the state file if it changed.
    pub(super) fn save(&mut self) {
        let saved = Saved {
            on_demand: self
                .instances
                .values()
                .filter(|i| i.on_demand && !i.then_remove)
                .map(|i| i.name.clone())
                .collect(),
            workers: self
                .instances
                .values()
                .filter_map(|i| i.worker.as_ref().map(|w| (i.name.clone(), w.pid)))
                .collect(),
        };
        let text = serde_json::to_string_pretty(&saved).unwrap_or_default();
        if text == self.saved {
            return;
        }
        let path = self.opts.state_dir.join("state.json");
        match crate::safe_file::write_atomic(&path, format!("{text}\n").as_bytes(), 0o600) {
            Ok(_) => self.saved = text,
            Err(e) => error!("{}: {e}", path.display()),
        }
    }
}
