/*!
What a manager leaves for the next one in `STATE_DIR/state.json`: the instances started on
demand (they run again after a manager restart) and the pids of running workers (a new
manager waits for them to exit before it starts their instance again, so an instance never
has two workers).

Apart because it is the only state that outlives the process.
*/

use super::daemon::{fingerprint, Daemon};
use super::instance::{alive_worker, Instance, State};
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

impl Daemon {
    /// Reads the state file of a previous manager: on-demand instances, live workers.
    pub(super) fn restore(&mut self, profiles: &Profiles) {
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
