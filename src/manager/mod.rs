/*!
clsync-manager: one supervisor per host that runs a `clsync` worker per profile and per
container instance, restarts them with backoff, and answers a control socket.

- [`daemon`]: the event loop (`clsync-manager run`).
- [`instance_lock`]: the lock each worker holds for its instance (never two at once).
- [`life`]: the restart policy, pure and tested with a made-up clock.
- [`protocol`]: the JSON-lines control protocol and its client side.
- [`metrics`]: the Prometheus text of `clsync-manager metrics`.

Why a separate process per worker rather than threads: a worker that crashes, leaks or
hangs in a sync handler takes nothing else down, and each is the same `clsync` a user
can run by hand with the same profile.
*/

pub mod cli;
pub mod daemon;
pub mod instance_lock;
pub mod life;
pub mod protocol;

use protocol::InstanceStatus;
use std::fmt::Write;

/// Prometheus text format: counters and gauges per instance.
pub fn metrics(list: &[InstanceStatus]) -> String {
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
    family(
        "clsync_seconds_since_last_sync",
        "gauge",
        "Seconds since the last successful sync.",
        &|s| s.last_sync_unix.map(|t| (now - t).max(0.0)),
    );
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
