/*!
The `clsync-manager` command line: `run` starts the daemon; every other command is a
client of its control socket (`check` alone works without the daemon).
*/

use super::daemon::{self, Options};
use super::protocol::{self, InstanceStatus, Request, Response};
use crate::report::Health;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "clsync-manager",
    version,
    about = "Supervisor of clsync workers: one per profile and per container instance",
    after_help = "Exit codes: 0 ok, 1 the request failed, 2 usage or invalid profiles (check), 3 the daemon is not running or refused the client."
)]
struct Args {
    /// The daemon's control socket [default: $CLSYNC_MANAGER_SOCKET or /run/clsync/manager.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon in the foreground (systemd Type=notify)
    Run {
        /// Profiles directory [default: $CLSYNC_PROFILES_DIR or /etc/clsync]
        #[arg(long, value_name = "DIR")]
        profiles_dir: Option<PathBuf>,
        /// State directory (on-demand instances, worker pids, lock)
        #[arg(long, value_name = "DIR", default_value = "/var/lib/clsync")]
        state_dir: PathBuf,
        /// Members of this group may use the control socket too (it is then 0660)
        #[arg(long, value_name = "GROUP")]
        socket_group: Option<String>,
        /// The clsync worker binary [default: clsync next to this program, else in $PATH]
        #[arg(long, value_name = "PATH")]
        clsync: Option<PathBuf>,
        /// Also write Prometheus metrics to this file (node_exporter textfile collector)
        #[arg(long, value_name = "FILE")]
        metrics_textfile: Option<PathBuf>,
        /// Where the log goes: stderr, stdout, syslog or journal [default: stderr]
        #[arg(short = 'Y', long, value_name = "OUTPUT")]
        output: Option<crate::logger::Output>,
        /// Debug level: 0 info, 1 debug, 2 trace
        #[arg(short = 'd', long, value_name = "LEVEL", default_value_t = 0)]
        debug: u8,
        /// false: do not refuse profiles, handlers and hooks that others than root may
        /// change (passed on to the workers)
        #[arg(long, value_name = "true|false", default_value_t = true, action = clap::ArgAction::Set)]
        strict_modes: bool,
    },
    /// Start an instance: PROFILE, PROFILE@LABEL or PROFILE-LABEL (e.g. lxc-web01)
    Start {
        /// PROFILE, PROFILE@LABEL or PROFILE-LABEL
        name: String,
    },
    /// Stop an instance (waits for its final sync)
    Stop {
        /// The instance
        name: String,
    },
    /// Stop and start an instance
    Restart {
        /// The instance
        name: String,
    },
    /// Show the instances (or one) as a table
    Status {
        /// Only this instance
        name: Option<String>,
        /// JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// List profiles, templates and their instances
    List {
        /// JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Re-read the profiles: start new autostart ones, stop removed ones, restart changed ones
    Reload,
    /// End a failover pair's split-brain, keeping one side (the other's changes are kept aside)
    Resolve {
        /// The instance
        name: String,
        /// Which side to keep: local (this node) or peer
        #[arg(long, value_name = "local|peer", value_parser = ["local", "peer"])]
        keep: String,
    },
    /// Full resync of an instance
    Resync {
        /// The instance
        name: String,
    },
    /// The last lines of an instance's output
    Logs {
        /// The instance
        name: String,
        /// How many lines
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
    /// Check the profiles (does not need the daemon)
    Check {
        /// Profiles directory [default: $CLSYNC_PROFILES_DIR or /etc/clsync]
        #[arg(long, value_name = "DIR")]
        profiles_dir: Option<PathBuf>,
        /// false: do not refuse files that others than root may change
        #[arg(long, value_name = "true|false", default_value_t = true, action = clap::ArgAction::Set)]
        strict_modes: bool,
    },
    /// Prometheus metrics of every instance
    Metrics,
    /// Print the shell completion script for bash, zsh or fish
    Completions {
        /// The shell
        #[arg(value_name = "SHELL")]
        shell: crate::completions::Shell,
    },
}

/// The command line's clap command, for the completions ([`crate::completions`]).
pub(crate) fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}

/// Runs `clsync-manager` with `args`; returns the exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let a = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let socket = a
        .socket
        .or_else(|| std::env::var_os(protocol::SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(protocol::DEFAULT_SOCKET));
    let (req, json) = match a.cmd {
        Cmd::Run {
            profiles_dir,
            state_dir,
            socket_group,
            clsync,
            metrics_textfile,
            output,
            debug,
            strict_modes,
        } => {
            if !strict_modes {
                crate::strict::disable();
            }
            let output = output.unwrap_or_default();
            crate::logger::init_named("clsync-manager".into(), debug, false, output);
            let socket_group = match socket_group.as_deref().map(crate::config::parse_group) {
                Some(Err(e)) => {
                    eprintln!("clsync-manager: --socket-group: {e}");
                    return 2;
                }
                Some(Ok(g)) => Some(g),
                None => None,
            };
            let opts = Options {
                profiles_dir: crate::profile::profiles_dir(profiles_dir.as_deref()),
                socket,
                state_dir,
                socket_group,
                clsync: clsync.unwrap_or_else(worker_binary),
                metrics_textfile,
            };
            return match daemon::run(opts) {
                Ok(code) => code,
                Err(e) => {
                    log::error!("{e}");
                    1
                }
            };
        }
        Cmd::Check {
            profiles_dir,
            strict_modes,
        } => {
            if !strict_modes {
                crate::strict::disable();
            }
            let dir = crate::profile::profiles_dir(profiles_dir.as_deref());
            let ok = crate::profile_config::check(&dir, &[], &mut std::io::stdout());
            return if ok { 0 } else { 2 };
        }
        Cmd::Start { name } => (req("start", Some(name)), false),
        Cmd::Stop { name } => (req("stop", Some(name)), false),
        Cmd::Restart { name } => (req("restart", Some(name)), false),
        Cmd::Status { name, json } => (req("status", name), json),
        Cmd::List { json } => (req("list", None), json),
        Cmd::Reload => (req("reload", None), false),
        Cmd::Resync { name } => (req("resync", Some(name)), false),
        Cmd::Resolve { name, keep } => (
            Request {
                cmd: "resolve".into(),
                name: Some(name),
                lines: None,
                keep: Some(keep),
            },
            false,
        ),
        Cmd::Logs { name, lines } => (
            Request {
                cmd: "logs".into(),
                name: Some(name),
                lines: Some(lines),
                keep: None,
            },
            false,
        ),
        Cmd::Metrics => (req("metrics", None), false),
        Cmd::Completions { shell } => {
            let program = crate::completions::Program::Manager;
            print!("{}", crate::completions::script(program, shell));
            return 0;
        }
    };
    // A stop waits for the worker's final sync.
    let line = match protocol::call_line(&socket, &req, Duration::from_secs(3600)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("clsync-manager: {e}");
            return 3;
        }
    };
    // The status table: the line read straight into the status objects, not through a
    // `serde_json::Value` first, which for 200 instances was 5 of the command's 7 ms of
    // CPU (its maps' allocations and page faults; bench/many.sh).
    if req.cmd == "status" && !json {
        if let Ok(StatusReply {
            ok: true,
            data: Some(list),
        }) = serde_json::from_str(&line)
        {
            print!("{}", status_table(&list));
            return 0;
        }
    }
    match serde_json::from_str::<Response>(&line) {
        Ok(resp) => print_response(&req, resp, json),
        Err(e) => {
            eprintln!("clsync-manager: invalid response from the daemon: {e}");
            3
        }
    }
}

/// A successful `status` response as the table needs it.
#[derive(serde::Deserialize)]
struct StatusReply {
    ok: bool,
    #[serde(default)]
    data: Option<Vec<InstanceStatus>>,
}

fn req(cmd: &str, name: Option<String>) -> Request {
    Request {
        cmd: cmd.into(),
        name,
        lines: None,
        keep: None,
    }
}

/// `clsync` next to this program (a package installs both in one directory), else the
/// one in `$PATH`.
fn worker_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("clsync")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("clsync"))
}

fn print_response(req: &Request, resp: Response, json: bool) -> i32 {
    if !resp.ok {
        let e = resp.error.as_deref().unwrap_or("failed");
        eprintln!("clsync-manager: {}", esc(e));
        return if e.starts_with("permission denied") {
            3
        } else {
            1
        };
    }
    let data = resp.data.unwrap_or_default();
    if json {
        println!("{}", protocol::json_text(&data, true));
        return 0;
    }
    match req.cmd.as_str() {
        "status" => {
            let list: Vec<InstanceStatus> = serde_json::from_value(data).unwrap_or_default();
            print!("{}", status_table(&list));
        }
        "start" | "stop" | "restart" | "resolve" => {
            println!(
                "{}: {}",
                esc(data["name"].as_str().unwrap_or_default()),
                esc(data["state"].as_str().unwrap_or_default())
            );
        }
        "logs" => {
            if let Some(head) = logs_head(&data) {
                println!("{}", esc(&head));
            }
            for l in data["lines"].as_array().into_iter().flatten() {
                println!("{}", esc(l.as_str().unwrap_or_default()));
            }
        }
        // The exposition format escapes only `\`, `"` and newlines in label values.
        "metrics" => {
            for l in data["text"].as_str().unwrap_or_default().lines() {
                println!("{}", esc(l));
            }
        }
        "list" => {
            for p in data.as_array().into_iter().flatten() {
                let kind = if p["template"].as_bool() == Some(true) {
                    "template"
                } else if p["autostart"].as_bool() == Some(true) {
                    "autostart"
                } else {
                    "on demand"
                };
                println!(
                    "{} ({kind})",
                    esc(p["profile"].as_str().unwrap_or_default())
                );
                for i in p["instances"].as_array().into_iter().flatten() {
                    println!(
                        "  {}: {}",
                        esc(i["name"].as_str().unwrap_or_default()),
                        esc(i["state"].as_str().unwrap_or_default())
                    );
                }
            }
        }
        "resync" if data["resync"] == "next start" => {
            println!("full sync at the next start requested");
        }
        "resync" => println!("full resync requested"),
        "reload" => println!("profiles reloaded"),
        _ => println!("{}", protocol::json_text(&data, false)),
    }
    0
}

/// The line above the log of an instance that has no worker: its state, and when and how
/// the run shown ended (`-- web is stopped; the run shown ended at 2026-12-05T20:31:07Z
/// (12s ago): exit status 0`).
fn logs_head(data: &serde_json::Value) -> Option<String> {
    let at = data["ended_unix"].as_f64()?;
    let since = std::time::UNIX_EPOCH + Duration::from_secs_f64(at.max(0.0));
    let ago = std::time::SystemTime::now()
        .duration_since(since)
        .unwrap_or_default();
    Some(format!(
        "-- {} is {}; the run shown ended at {} ({} ago): {}",
        data["name"].as_str().unwrap_or_default(),
        data["state"].as_str().unwrap_or_default(),
        humantime::format_rfc3339_seconds(since),
        human(ago.as_secs_f64()),
        data["ended"].as_str().unwrap_or_default()
    ))
}

/// What the daemon sent, fit for a terminal: names, labels, paths and errors come from
/// users (see [`crate::logger::escape_controls`]).
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    crate::logger::escape_controls(s)
}

/// Seconds as `1h02m`, `3m12s`, `12s`.
#[must_use]
pub(crate) fn human(secs: f64) -> String {
    // Float casts saturate (NaN is 0), and the negative is clamped first.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The `status` table.
pub(crate) fn status_table(list: &[InstanceStatus]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut rows = vec![[
        "INSTANCE".to_string(),
        "STATE".into(),
        "PID".into(),
        "UPTIME".into(),
        "RESTARTS".into(),
        "LAST SYNC".into(),
        "QUEUED".into(),
        "SANDBOX".into(),
        "LAST ERROR".into(),
    ]];
    for s in list {
        let row = [
            s.name.clone(),
            match &s.progress {
                Some(p) => format!("{} ({p})", s.state),
                None => s.state.clone(),
            },
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.uptime_s.map_or("-".into(), human),
            s.restarts.to_string(),
            s.last_sync_unix
                .map_or("-".into(), |t| format!("{} ago", human(now - t))),
            s.queued.map_or("-".into(), |q| q.to_string()),
            s.sandbox.as_ref().map_or("-", |b| b.word()).into(),
            s.last_error.clone().unwrap_or_else(|| "-".into()),
        ];
        rows.push(row.map(|c| esc(&c).into_owned()));
    }
    let mut widths = [0usize; 9];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (n, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i == widths.len() - 1 {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        // Several destinations, or one in trouble: a line each, with its lag.
        let dests = n.checked_sub(1).and_then(|i| list[i].destinations.as_ref());
        if let Some(dests) = dests {
            if dests.len() > 1 || dests.iter().any(|d| d.state != Health::Ok) {
                for d in dests {
                    out.push_str(&format!(
                        "  -> {}  {}  queued {}  lag {}{}\n",
                        esc(&d.destination),
                        d.state.name(),
                        d.queued,
                        human(d.lag_s),
                        d.last_error
                            .as_deref()
                            .map_or(String::new(), |e| format!("  {}", esc(e))),
                    ));
                }
            }
        }
    }
    if list.is_empty() {
        out.push_str("(no instances)\n");
    }
    out
}
