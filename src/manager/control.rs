/*!
The control socket's server side: who may connect (peer credentials), reading one request
line, and the commands (`start`, `stop`, `status`, ...). A `stop` or `restart` is answered
when the worker is gone, so its client waits in [`Waiter`] until the reaper calls
[`Daemon::answer_waiters`].

Apart from the loop because the commands are the protocol of docs/manager.md, read and
changed on their own; [`super::protocol`] holds the wire types and the client.

How the socket bounds its clients (idle timeout, cap, descriptor budget, replies that
never block) is in [`super::clients`].
*/

use super::daemon::{fingerprint, Daemon};
use super::instance::{Instance, State};
use super::life::Policy;
use super::protocol::{status_line, InstanceStatus, Request, Response};
use crate::profile;
use log::info;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::json;

pub(super) enum Handled {
    Now(Response),
    /// A response already written out as its line (`status`: see [`status_line`]).
    Line(Vec<u8>),
    Later {
        name: String,
        restart: bool,
    },
}

impl Daemon {
    pub(super) fn handle(&mut self, req: &Request) -> Handled {
        let name = || {
            req.name
                .clone()
                .ok_or_else(|| format!("{}: which instance? (give a name)", req.cmd))
        };
        let r = match req.cmd.as_str() {
            "status" => {
                return match self.cmd_status(req.name.as_deref()) {
                    Ok(list) => Handled::Line(status_line(&list)),
                    Err(e) => Handled::Now(Response::err(e)),
                }
            }
            "list" => self.cmd_list(),
            "start" => name().and_then(|n| self.cmd_start(&n)),
            "stop" => return self.with_name(req, |d, n| d.cmd_stop(n)),
            "restart" => return self.with_name(req, |d, n| d.cmd_restart(n)),
            "resync" => name().and_then(|n| self.cmd_resync(&n)),
            "resolve" => name().and_then(|n| self.cmd_resolve(&n, req.keep.as_deref())),
            "logs" => name().and_then(|n| self.cmd_logs(&n, req.lines.unwrap_or(50))),
            "reload" => self.reload().map(|_| json!({ "reloaded": true })),
            "metrics" => Ok(json!({ "text": super::metrics::text(&self.statuses()) })),
            "check" => {
                let mut out = Vec::new();
                let ok = crate::profile_config::check(&self.opts.profiles_dir, &[], &mut out);
                Ok(json!({ "ok": ok, "text": String::from_utf8_lossy(&out) }))
            }
            other => Err(format!(
                "unknown command {other:?} (valid: start, stop, restart, status, list, reload, resync, resolve, logs, metrics, check)"
            )),
        };
        Handled::Now(match r {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e),
        })
    }

    fn with_name(
        &mut self,
        req: &Request,
        f: impl FnOnce(&mut Self, &str) -> Result<Handled, String>,
    ) -> Handled {
        let r = match &req.name {
            Some(n) => self.canonical(n).and_then(|n| f(self, &n)),
            None => Err(format!("{}: which instance? (give a name)", req.cmd)),
        };
        r.unwrap_or_else(|e| Handled::Now(Response::err(e)))
    }

    /// The canonical instance name of `name` (`PROFILE`, `PROFILE@LABEL`,
    /// `PROFILE-LABEL`), checked against the profiles.
    fn canonical(&self, name: &str) -> Result<String, String> {
        if self.instances.contains_key(name) {
            return Ok(name.to_string());
        }
        let profiles = profile::load_dir(&self.opts.profiles_dir).map_err(|e| e.to_string())?;
        profile::resolve(&profiles, name, None)
            .map(|r| r.instance)
            .map_err(|e| e.to_string())
    }

    fn instance(&self, name: &str) -> Result<&Instance, String> {
        let n = self.canonical(name)?;
        self.instances
            .get(&n)
            .ok_or_else(|| format!("{n} is not running (start it with `clsync-manager start {n}`)"))
    }

    fn cmd_status(&self, name: Option<&str>) -> Result<Vec<InstanceStatus>, String> {
        Ok(match name {
            Some(n) => vec![self.instance(n)?.status()],
            None => self.statuses(),
        })
    }

    fn cmd_list(&self) -> Result<serde_json::Value, String> {
        let profiles = profile::load_dir(&self.opts.profiles_dir).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (name, p) in &profiles {
            let template = profile::is_template_profile(&profiles, name).unwrap_or(false);
            out.push(json!({
                "profile": name,
                "file": p.file.display().to_string(),
                "error": p.broken,
                "template": template,
                "autostart": p.values.autostart == Some(true),
                "instances": self.instances.values()
                    .filter(|i| &i.profile == name)
                    .map(|i| json!({"name": i.name, "state": i.state_name()}))
                    .collect::<Vec<_>>(),
            }));
        }
        Ok(serde_json::Value::Array(out))
    }

    fn cmd_start(&mut self, name: &str) -> Result<serde_json::Value, String> {
        if self.stopping {
            return Err("clsync-manager is stopping".into());
        }
        let profiles = profile::load_dir(&self.opts.profiles_dir).map_err(|e| e.to_string())?;
        let r = profile::resolve(&profiles, name, None).map_err(|e| e.to_string())?;
        // Refuse what the worker would refuse, before anything runs.
        let file = profiles[&r.profile].file.clone();
        crate::profile_config::config_of(&r, &file).map_err(|e| e.to_string())?;
        let n = r.instance.clone();
        let autostart = profiles[&r.profile].values.autostart == Some(true)
            && !profile::is_template_profile(&profiles, &r.profile).unwrap_or(true);
        let i = self.instances.entry(n.clone()).or_insert_with(|| {
            Instance::new(
                &n,
                &r.profile,
                fingerprint(&r.values),
                Policy::of(&r.values),
            )
        });
        i.on_demand |= !autostart;
        i.then_remove = false;
        match i.state {
            // Started again once the running stop is over.
            State::Stopping => i.then_start = true,
            State::Running | State::Starting | State::Waiting(_) => {}
            _ => {
                i.life.reset();
                i.last_error = None;
                i.state = State::Stopped;
                self.start(&n);
            }
        }
        self.save();
        let i = &self.instances[&n];
        if i.state == State::Failed {
            return Err(format!(
                "{n}: {}",
                i.last_error.clone().unwrap_or_else(|| "failed".into())
            ));
        }
        serde_json::to_value(i.status()).map_err(|e| e.to_string())
    }

    fn cmd_stop(&mut self, name: &str) -> Result<Handled, String> {
        let i = self
            .instances
            .get_mut(name)
            .ok_or_else(|| format!("{name} is not running"))?;
        // Stopped instances are forgotten (an autostart one starts again with the next
        // reload or manager start, as an enabled unit does after `systemctl stop`).
        i.on_demand = false;
        if let State::Waiting(pid) = i.state {
            // A previous manager's worker makes its final sync: answer when it is gone,
            // and do not start a new one.
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
            i.then_remove = true;
            self.save();
            return Ok(Handled::Later {
                name: name.to_string(),
                restart: false,
            });
        }
        if i.worker.is_none() {
            i.state = State::Stopped;
            i.restart_at = None;
            let st = i.status();
            self.forget(name);
            self.save();
            return Ok(Handled::Now(Response::ok(
                serde_json::to_value(st).unwrap_or_default(),
            )));
        }
        i.then_start = false;
        i.then_remove = true;
        self.stop(name);
        self.save();
        Ok(Handled::Later {
            name: name.to_string(),
            restart: false,
        })
    }

    fn cmd_restart(&mut self, name: &str) -> Result<Handled, String> {
        if !self.instances.contains_key(name) {
            return Err(format!("{name} is not running (use start)"));
        }
        let running = self.instances[name].worker.is_some();
        self.restart(name);
        if running {
            return Ok(Handled::Later {
                name: name.to_string(),
                restart: true,
            });
        }
        let i = &self.instances[name];
        Ok(Handled::Now(Response::ok(
            serde_json::to_value(i.status()).unwrap_or_default(),
        )))
    }

    /// Ends a split-brain: the instance starts again keeping `keep`'s side.
    fn cmd_resolve(&mut self, name: &str, keep: Option<&str>) -> Result<serde_json::Value, String> {
        let keep = match keep {
            Some(k @ ("local" | "peer")) => k.to_string(),
            Some(k) => return Err(format!("resolve: --keep {k:?}: expected local or peer")),
            None => return Err("resolve: say which side to keep: --keep local|peer".into()),
        };
        let n = self.canonical(name)?;
        let i = self
            .instances
            .get_mut(&n)
            .ok_or_else(|| format!("{n} is not known to the manager"))?;
        if i.state != State::SplitBrain {
            return Err(format!("{n} is {}, not in split-brain", i.state_name()));
        }
        info!("[{n}] split-brain resolved by an operator: keeping the {keep} side");
        i.resolve = Some(keep);
        i.life.reset();
        i.last_error = None;
        i.state = State::Stopped;
        self.start(&n);
        let i = &self.instances[&n];
        serde_json::to_value(i.status()).map_err(|e| e.to_string())
    }

    fn cmd_resync(&mut self, name: &str) -> Result<serde_json::Value, String> {
        let n = self.canonical(name)?;
        if let Some(w) = self.instances.get(&n).and_then(|i| i.worker.as_ref()) {
            nix::sys::signal::kill(Pid::from_raw(w.pid), Signal::SIGUSR2)
                .map_err(|e| format!("{n}: {e}"))?;
            info!("[{n}] full resync requested");
            return Ok(json!({ "name": n, "resync": true }));
        }
        // No worker: its next start is a full sync (not one from the index).
        let profiles = profile::load_dir(&self.opts.profiles_dir).map_err(|e| e.to_string())?;
        let r = profile::resolve(&profiles, &n, None).map_err(|e| e.to_string())?;
        let file = profiles[&r.profile].file.clone();
        let cfg = crate::profile_config::config_of(&r, &file).map_err(|e| e.to_string())?;
        if let Some(dir) = &cfg.index_dir {
            crate::delivered::request_full(dir)
                .map_err(|e| format!("{n}: {}: {e}", dir.display()))?;
        }
        info!("[{n}] full sync at the next start requested");
        Ok(json!({ "name": n, "resync": "next start" }))
    }

    /// The last `lines` of an instance's log: of its worker, or of its last run once it
    /// has none (stopped and forgotten, failed, waiting for a restart), with its state and
    /// how and when that run ended.
    fn cmd_logs(&self, name: &str, lines: usize) -> Result<serde_json::Value, String> {
        let known = |n: &str| self.instances.contains_key(n) || self.stopped.get(n).is_some();
        let n = if known(name) {
            name.to_string()
        } else {
            self.canonical(name)?
        };
        let (logs, state, ended) = match (self.instances.get(&n), self.stopped.get(&n)) {
            (Some(i), _) => (
                &i.logs,
                i.state_name(),
                i.ended.filter(|_| i.worker.is_none()),
            ),
            (None, Some(r)) => (&r.logs, "stopped".to_string(), r.ended),
            (None, None) => {
                return Err(format!(
                    "{n} has not run since clsync-manager started: no log (start it with `clsync-manager start {n}`)"
                ))
            }
        };
        let skip = logs.len().saturating_sub(lines);
        Ok(json!({
            "name": n,
            "state": state,
            "ended_unix": ended.map(|e| e.at_unix),
            "ended": ended.map(|e| e.exit.to_string()),
            "lines": logs.iter().skip(skip).collect::<Vec<_>>(),
        }))
    }

    /// Replies to clients waiting for `name` to stop or to start again: with its status
    /// now, or (if it is gone) as it ended.
    pub(super) fn answer_waiters(&mut self, name: &str, ended: InstanceStatus) {
        let s = self.instances.get(name).map_or(ended, |i| i.status());
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.waiters) {
            if w.name != name {
                keep.push(w);
                continue;
            }
            let resp = if w.restart && s.state == "failed" {
                Response::err(format!(
                    "{name} failed: {}",
                    s.last_error.clone().unwrap_or_default()
                ))
            } else {
                Response::ok(serde_json::to_value(&s).unwrap_or_default())
            };
            self.reply(w.stream, &resp);
        }
        self.waiters = keep;
    }
}
