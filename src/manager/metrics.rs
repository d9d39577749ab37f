/*!
The Prometheus text of `clsync-manager metrics` and of the metrics text file (for
node_exporter's textfile collector), made from the instances' status.

Apart from the loop because the text is a pure function of the status list; the loop only
decides when the file is rewritten.

The text passes `promtool check metrics` (tests/manager.rs scrapes a manager with running,
stopped and failed instances through it) and Prometheus' naming rules: `_total` on
counters only, a unit as the name's suffix (`clsync_last_sync_age_seconds`; it was
`clsync_seconds_since_last_sync` before).
*/

use super::daemon::Daemon;
use super::instance::Instance;
use super::protocol::InstanceStatus;
use log::error;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Prometheus text format: counters and gauges per instance.
#[must_use]
pub fn text(list: &[InstanceStatus]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, value: &dyn Fn(&InstanceStatus) -> Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for s in list {
                if let Some(v) = value(s) {
                    let _ = writeln!(out, "{name}{{instance=\"{}\"}} {v}", escape(&s.name));
                }
            }
        };
    family(
        "clsync_up",
        "gauge",
        "1 when the worker is running and ready.",
        &|s| Some(if s.state == "running" { 1.0 } else { 0.0 }),
    );
    family(
        "clsync_failed",
        "gauge",
        "1 when the instance is failed (no more restarts).",
        &|s| Some(if s.state == "failed" { 1.0 } else { 0.0 }),
    );
    family(
        "clsync_restarts_total",
        "counter",
        "Restarts by the restart policy.",
        &|s| Some(f64::from(s.restarts)),
    );
    family(
        "clsync_events_total",
        "counter",
        "Changed paths seen by the current worker.",
        &|s| s.events.map(|v| v as f64),
    );
    family(
        "clsync_syncs_total",
        "counter",
        "Successful syncs of the current worker.",
        &|s| s.syncs.map(|v| v as f64),
    );
    family(
        "clsync_sync_failures_total",
        "counter",
        "Failed syncs of the current worker.",
        &|s| s.sync_failures.map(|v| v as f64),
    );
    family(
        "clsync_queued_paths",
        "gauge",
        "Paths waiting to be synced.",
        &|s| s.queued.map(|v| v as f64),
    );
    family("clsync_watches", "gauge", "Directories watched.", &|s| {
        s.watches.map(|v| v as f64)
    });
    // Prometheus' own advice is the time of the last success (an alert computes the age
    // with time()); the age itself is kept for dashboards, named with its unit last.
    family(
        "clsync_last_sync_timestamp_seconds",
        "gauge",
        "Unix time of the instance's last successful sync.",
        &|s| s.last_sync_unix,
    );
    family(
        "clsync_last_sync_age_seconds",
        "gauge",
        "Seconds since the instance's last successful sync.",
        &|s| s.last_sync_unix.map(|t| (now - t).max(0.0)),
    );
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics text file is rewritten this long after a change, and at least this often
/// (so that "seconds since the last sync" moves).
const METRICS_EVERY: Duration = Duration::from_secs(5);
pub(super) const METRICS_REFRESH: Duration = Duration::from_secs(15);

impl Daemon {
    pub(super) fn metrics_changed(&mut self) {
        let soon = Instant::now() + METRICS_EVERY;
        if self.opts.metrics_textfile.is_some() && self.metrics_due.is_none_or(|t| t > soon) {
            self.metrics_due = Some(soon);
        }
    }

    pub(super) fn write_metrics(&self) {
        let Some(path) = &self.opts.metrics_textfile else {
            return;
        };
        let text = super::metrics::text(&self.statuses());
        // A random temporary name (O_EXCL): the textfile directory is often another
        // user's (prometheus), so a predictable name could be a planted symlink.
        if let Err(e) = crate::safe_file::write_atomic(path, text.as_bytes(), 0o644) {
            error!("metrics file {}: {e}", path.display());
        }
    }

    pub(super) fn statuses(&self) -> Vec<InstanceStatus> {
        self.instances.values().map(Instance::status).collect()
    }
}
