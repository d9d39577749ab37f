/*!
The worker's process chores: the pid file, the status file, the state it reports to a
supervisor or dumps on USR1, and the pre-exit / exit hooks. They sit beside the pipeline
(watch -> batcher -> sync), not in it: kept apart so the loop reads as the pipeline alone.
*/

use super::*;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

/// The pid file: refuses to start over a live pid, replaces a stale one, and is removed
/// at exit if the file at its name is still the one this process wrote (same identity).
/// Written with [`crate::safe_file::write_atomic`] and read without following a symlink:
/// a symlink planted at the name is replaced, never written through.
///
/// The file stays open: a sandboxed worker ([`crate::sandbox`]) may not remove it at exit
/// (its directory is not granted), so it is emptied through this descriptor instead, whose
/// rights were fixed when it was opened. An empty pid file counts as stale.
pub(super) struct PidFile(PathBuf, crate::safe_file::FileId, Option<std::fs::File>);

impl PidFile {
    /// Refuses to go on if the file names a live process other than this one.
    pub(super) fn check(path: &std::path::Path) -> Result<(), StartError> {
        let me = std::process::id() as i32;
        if let Ok((text, _)) = crate::safe_file::read_nofollow(path) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                let alive = pid > 0
                    && pid != me
                    && !matches!(
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                        Err(nix::errno::Errno::ESRCH)
                    );
                if alive {
                    return Err(StartError::PidFileLive {
                        path: path.to_path_buf(),
                        pid,
                    });
                }
            }
        }
        Ok(())
    }

    pub(super) fn create(path: &std::path::Path) -> Result<PidFile, StartError> {
        Self::check(path)?;
        let me = std::process::id() as i32;
        if let Some(stale) = crate::safe_file::read_nofollow(path)
            .ok()
            .and_then(|(t, _)| t.trim().parse::<i32>().ok())
            .filter(|pid| *pid != me)
        {
            warn!(
                "pid file {}: replacing the stale pid {stale}",
                path.display()
            );
        }
        let id = crate::safe_file::write_atomic(path, format!("{me}\n").as_bytes(), 0o644)
            .map_err(|source| StartError::PidFile {
                path: path.to_path_buf(),
                source,
            })?;
        let open = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| (m.dev(), m.ino()) == id));
        Ok(PidFile(path.to_path_buf(), id, open))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if crate::safe_file::id_of(&self.0).is_ok_and(|id| id == self.1)
            && std::fs::remove_file(&self.0).is_err()
        {
            if let Some(f) = &self.2 {
                let _ = f.set_len(0);
            }
        }
    }
}

/// Writes the status word to the status file atomically (a temporary file with a random
/// name + rename, [`crate::safe_file::write_atomic`]), only when it changes.
pub struct Status(Option<PathBuf>, std::cell::RefCell<String>);

impl Status {
    /// A missing directory of the status file (`/run/clsync` outside the units, which
    /// make it with RuntimeDirectory) is created 0755 (others may read the status), or
    /// every change would warn. An existing directory that others may write to is
    /// refused ([`crate::safe_file::check_dir`]); `uid` is the user the worker drops to,
    /// who may own it.
    pub fn new(path: Option<PathBuf>, uid: Option<u32>) -> Result<Self, StartError> {
        if let Some(dir) = path.as_deref().and_then(std::path::Path::parent) {
            if !dir.as_os_str().is_empty() {
                crate::safe_file::ensure_dir(dir, "status-file directory", 0o755, uid)
                    .map_err(StartError::Path)?;
            }
        }
        Ok(Status(path, Default::default()))
    }

    pub fn set(&self, word: &str) {
        let Some(path) = &self.0 else { return };
        if *self.1.borrow() == word {
            return;
        }
        *self.1.borrow_mut() = word.to_string();
        let r = crate::safe_file::write_atomic(path, format!("{word}\n").as_bytes(), 0o644);
        if let Err(e) = r {
            warn!("cannot write the status file {}: {e}", path.display());
        }
    }
}

impl Worker {
    /// The worker's state as one JSON object (SIGUSR1, SIGIO), for people and scripts.
    pub(super) fn state_json(&self) -> String {
        serde_json::to_string(&self.state()).unwrap_or_default()
    }

    /// The worker's state, as reported to the supervisor.
    pub(super) fn state(&self) -> crate::report::State {
        let phase = match self.phase {
            Phase::Running => ReportPhase::Running,
            Phase::Stopping { .. } => ReportPhase::Stopping,
            Phase::Aborting { .. } => ReportPhase::Aborting,
        };
        let unix = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
        };
        let now = std::time::SystemTime::now();
        let destinations = self
            .targets
            .iter()
            .map(|t| crate::report::Destination {
                destination: t.name.clone(),
                state: if t.unreachable {
                    Health::Unreachable
                } else if t.batcher.failures() > 0 {
                    Health::Failing
                } else {
                    Health::Ok
                },
                queued: t.batcher.len(),
                consecutive_failures: t.batcher.failures(),
                lag_s: t
                    .behind_since
                    .and_then(|b| now.duration_since(b).ok())
                    .map_or(0.0, |d| (d.as_secs_f64() * 10.0).round() / 10.0),
                last_sync_unix: unix(t.last_ok),
                last_error: t.last_error.clone(),
            })
            .collect();
        crate::report::State {
            phase,
            ready: self.ready,
            queued: self
                .targets
                .iter()
                .map(|t| t.batcher.len())
                .max()
                .unwrap_or(0),
            syncing: self.runner.busy(),
            running_syncs: self.runner.running(),
            consecutive_failures: self
                .targets
                .iter()
                .map(|t| t.batcher.failures())
                .max()
                .unwrap_or(0),
            iterations: self.iterations,
            watches: self.watcher.watched(),
            unwatched_dirs: self.watcher.unwatched(),
            standby: self.standby_check.is_some(),
            uptime_s: (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            events: self.events,
            syncs: self.syncs,
            sync_failures: self.sync_failures,
            last_sync_unix: unix(self.last_ok),
            last_error: self.last_error.clone(),
            destinations,
            sandbox: Some(self.sandbox.clone()),
            progress: (!self.ready)
                .then(|| self.start_progress.last.clone())
                .flatten(),
        }
    }

    /// Sends the state to the supervisor, if there is one.
    pub(super) fn report(&mut self) {
        self.reporter.send(&Report::State(self.state()));
    }

    pub(super) fn became_ready(&mut self) {
        self.ready = true;
        self.verify_at = self.cfg.verify_interval.map(|i| Instant::now() + i);
        info!(
            "ready: watching {} ({:.1}s after start)",
            self.watcher.describe(),
            self.started.elapsed().as_secs_f64()
        );
        if self.phase == Phase::Running {
            self.status.set("running");
        }
        self.report();
    }

    /// Runs a hook as `HOOK LABEL` in the watch directory, with `CLSYNC_STATUS` (and
    /// `CLSYNC_EXIT_CODE` at exit) in its environment, in its own process group; waits
    /// for it at most `HOOK_TIMEOUT`. A failing hook is logged, not fatal.
    pub(super) fn run_hook(&self, hook: &std::path::Path, status: &str, code: Option<i32>) {
        use std::os::unix::process::CommandExt;
        let label = self.cfg.label.clone().unwrap_or_else(|| "nolabel".into());
        let what = if status == "preexit" {
            "pre-exit hook"
        } else {
            "exit hook"
        };
        if let Err(e) = crate::strict::check_program_in(&self.src, hook, what) {
            error!("{e}");
            return;
        }
        let mut cmd = std::process::Command::new(hook);
        cmd.arg(&label)
            .current_dir(&self.src)
            .env("CLSYNC_STATUS", status)
            .env("CLSYNC_LABEL", &label)
            .stdin(std::process::Stdio::null())
            .process_group(0);
        if let Some(c) = code {
            cmd.env("CLSYNC_EXIT_CODE", c.to_string());
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                error!("{status} hook {}: {e}", hook.display());
                return;
            }
        };
        let deadline = Instant::now() + HOOK_TIMEOUT;
        let st = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break None,
            }
        };
        match st {
            Some(st) if st.success() => info!("{status} hook {} done", hook.display()),
            Some(st) => error!("{status} hook {} failed: {st}", hook.display()),
            None => {
                error!(
                    "{status} hook {} still running after {}s: killed",
                    hook.display(),
                    HOOK_TIMEOUT.as_secs()
                );
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    Signal::SIGKILL,
                );
                let _ = child.wait();
            }
        }
    }
}

/// Writes the state JSON to `DIR/clsync.PID.json`, 0600 (atomically, with a random
/// temporary name; the directory is created 0700 if missing, and refused if others may
/// write to it).
pub(super) fn dump(dir: &std::path::Path, state: &str) {
    if let Err(e) = crate::safe_file::ensure_dir(dir, "dump-dir", 0o700, None) {
        error!("{e}");
        return;
    }
    let file = dir.join(format!("clsync.{}.json", std::process::id()));
    match crate::safe_file::write_atomic(&file, format!("{state}\n").as_bytes(), 0o600) {
        Ok(_) => info!("state written to {}", file.display()),
        Err(e) => error!("dump-dir {}: {e}", dir.display()),
    }
}

pub(super) fn signame(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(
        |_| sig.to_string(),
        |s| s.as_str().trim_start_matches("SIG").to_string(),
    )
}
