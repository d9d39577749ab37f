/*!
The profile file format: every key ([`KEYS`]), the values of one file
([`ProfileValues`], every field an `Option` so that inheritance can tell "not set" from
"set"), how durations, sizes, ids and the closed sets (`threading`, `restart`) are read,
and [`parse_values`], which turns serde's errors into one line naming the file, line,
column and key (with the closest key for a typo). The first stage of a profile: text in,
values out, nothing resolved yet.
*/

use super::ProfileError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Every valid key, in the order of [`ProfileValues`]' fields (and of `to_toml` output).
pub const KEYS: &[&str] = &[
    "watch-dir",
    "destination-dir",
    "mode",
    "sync-handler",
    "sync-handler-args",
    "rules-file",
    "rules",
    "exclude",
    "include",
    "delay-sync",
    "delay-collect",
    "delay-collect-bigfile",
    "threshold-bigfile",
    "retries",
    "ignore-exitcode",
    "timeout-sync",
    "threading",
    "max-parallel-syncs",
    "label",
    "lists-dir",
    "status-file",
    "pid-file",
    "exit-hook",
    "pre-exit-hook",
    "full-initialsync",
    "only-initialsync",
    "skip-initialsync",
    "initial-sync",
    "index-dir",
    "exit-on-no-events",
    "sync-on-quit",
    "one-file-system",
    "exclude-mount-points",
    "rsync-prefer-include",
    "dont-unlink-lists",
    "have-recursive-sync",
    "synclist-simplify",
    "ignore-failures",
    "max-iterations",
    "standby-file",
    "modification-signature",
    "rsync-inclimit",
    "output",
    "debug",
    "uid",
    "gid",
    "sync-handler-uid",
    "sync-handler-gid",
    "lists-nul",
    "dump-dir",
    "destinations",
    "ssh-command",
    "ssh-identity",
    "ssh-port",
    "ssh-options",
    "rsync-options",
    "rsync-password-file",
    "allow-empty-source",
    "strict-modes",
    "sandbox",
    "sandbox-network",
    "sandbox-read",
    "sandbox-write",
    "sandbox-exec",
    "preserve-capabilities",
    "inherit-capabilities",
    "progress",
    "verify-interval",
    "wait-for-close",
    "monitor",
    "peer",
    "split-brain",
    "resolver",
    "resolver-timeout",
    "split-brain-notify",
    "pair-dir",
    "peer-pair-dir",
    "autostart",
    "restart",
    "restart-delay",
    "restart-max-delay",
    "start-limit-burst",
    "start-limit-interval",
    "stop-timeout",
    "inherits",
];

/// Keys whose values are durations (substituted as seconds).
pub(super) const DURATION_KEYS: &[&str] = &[
    "delay-sync",
    "delay-collect",
    "delay-collect-bigfile",
    "timeout-sync",
    "resolver-timeout",
    "verify-interval",
    "wait-for-close",
    "restart-delay",
    "restart-max-delay",
    "start-limit-interval",
    "stop-timeout",
];

/// Keys whose string values are not substituted.
pub(super) const NO_SUBST_KEYS: &[&str] = &["inherits"];

/// The valid keys of a profile file.
#[must_use]
pub fn keys() -> &'static [&'static str] {
    KEYS
}

/// The values of one profile file (or, after [`resolve`](super::resolve), the effective values).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProfileValues {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_handler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_handler_args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_file: Option<String>,
    /// Inline rules lines in the original's `[+-][fdWwms*]regex` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub delay_sync: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub delay_collect: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub delay_collect_bigfile: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_size"
    )]
    pub threshold_bigfile: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_exitcode: Option<Vec<i32>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub timeout_sync: Option<Duration>,
    /// `off`, `safe` or `full` (checked when parsing, so a typo is reported at its line).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_threading"
    )]
    pub threading: Option<String>,
    /// How many syncs may run at once with threading safe or full (not in the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_syncs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lists_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_hook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_exit_hook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_initialsync: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_initialsync: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_initialsync: Option<bool>,
    /// `index` or `full` (not in the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_sync: Option<String>,
    /// The base of the instances' index directories (not in the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_on_no_events: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_on_quit: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_file_system: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_mount_points: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync_prefer_include: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dont_unlink_lists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub have_recursive_sync: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synclist_simplify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_failures: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modification_signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync_inclimit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<u8>,
    /// A user name or number.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_id"
    )]
    pub uid: Option<String>,
    /// A group name or number.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_id"
    )]
    pub gid: Option<String>,
    /// The sync handler's user (name or number).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_id"
    )]
    pub sync_handler_uid: Option<String>,
    /// The sync handler's group (name or number).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_id"
    )]
    pub sync_handler_gid: Option<String>,
    /// NUL-terminated list records (not in the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lists_nul: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_dir: Option<String>,
    /// More destinations besides destination-dir (not in the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_options: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync_options: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync_password_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_empty_source: Option<bool>,
    /// `false`: the files this profile names (handlers, hooks, rules…) are not checked
    /// for who may change them ([`crate::strict`]; not in the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_modes: Option<bool>,
    /// `true` (a profile's default), `false` or `"required"`: the worker confines itself
    /// ([`crate::sandbox`]; not in the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::sandbox::Mode>,
    /// `auto`, `private` or `host`: the network a confined worker keeps.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_sandbox_network"
    )]
    pub sandbox_network: Option<String>,
    /// Paths a confined worker may read, write, run besides its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_read: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_write: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_exec: Option<Vec<String>>,
    /// Capabilities kept across the drop to `uid` (the original's `-C`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_preserve_capabilities"
    )]
    pub preserve_capabilities: Option<Vec<String>>,
    /// `empty`, `dont-touch`, `clsync` or `permitted`: whether the handlers inherit them.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_inherit_capabilities"
    )]
    pub inherit_capabilities: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<bool>,
    /// Periodic verification against the source (not in the original).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub verify_interval: Option<Duration>,
    /// Sync written files once closed, at the latest after this long (not in the original).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub wait_for_close: Option<Duration>,
    /// How the tree is watched: `inotify` or `fanotify` (not in the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    /// The other node of a failover pair: `[user@]host:/path` (not in the original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_brain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub resolver_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_brain_notify: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_pair_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    /// For the manager: `on-failure`, `always` or `never`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_restart"
    )]
    pub restart: Option<String>,
    /// For the manager: the first restart's delay, doubled for each further one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub restart_delay: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub restart_max_delay: Option<Duration>,
    /// For the manager: this many starts within start-limit-interval make it `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_limit_burst: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub start_limit_interval: Option<Duration>,
    /// For the manager: how long a stopping worker may take for its final sync.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub stop_timeout: Option<Duration>,
    /// The name of the parent profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherits: Option<String>,
}

/// Field-by-field `child.x.or(parent.x)`. The destructuring has no `..`, so a field added
/// to the struct but not here does not compile.
macro_rules! merge_fields {
    ($child:expr, $parent:expr; $($f:ident),* $(,)?) => {{
        let ProfileValues { $($f),* } = $child;
        let parent = $parent;
        ProfileValues { $($f: $f.or(parent.$f)),* }
    }};
}

impl ProfileValues {
    /// These values, with every value not set here taken from `parent`.
    #[must_use]
    pub fn merge(self, parent: ProfileValues) -> ProfileValues {
        merge_fields!(self, parent;
            watch_dir, destination_dir, mode, sync_handler, sync_handler_args, rules_file,
            rules, exclude, include, delay_sync, delay_collect, delay_collect_bigfile,
            threshold_bigfile, retries, ignore_exitcode, timeout_sync, threading,
            max_parallel_syncs, label, lists_dir, status_file, pid_file, exit_hook, pre_exit_hook, full_initialsync,
            only_initialsync, skip_initialsync, initial_sync, index_dir, exit_on_no_events, sync_on_quit,
            one_file_system, exclude_mount_points, rsync_prefer_include, dont_unlink_lists,
            have_recursive_sync, synclist_simplify, ignore_failures, max_iterations,
            standby_file, modification_signature, rsync_inclimit, output, debug, uid, gid,
            sync_handler_uid, sync_handler_gid, lists_nul, dump_dir, destinations, ssh_command,
            ssh_identity, ssh_port, ssh_options, rsync_options, rsync_password_file,
            allow_empty_source, strict_modes, sandbox, sandbox_network, sandbox_read, sandbox_write, sandbox_exec, preserve_capabilities, inherit_capabilities, progress, verify_interval, wait_for_close, monitor, peer, split_brain, resolver, resolver_timeout,
            split_brain_notify, pair_dir, peer_pair_dir, autostart, restart,
            restart_delay, restart_max_delay, start_limit_burst, start_limit_interval,
            stop_timeout, inherits,
        )
    }

    /// The set values as TOML `key = value` lines in the order of [`KEYS`]; durations as
    /// humantime strings (`"30s"`, `"1m 30s"`), sizes as bytes. Parses back to `self`.
    #[must_use]
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialize: {e}\n"))
    }

    pub(super) fn to_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("ProfileValues serializes to a table")
    }

    pub(super) fn from_table(table: toml::Table) -> Result<ProfileValues, String> {
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration: seconds like 30 or 0.5, or a string like \"200ms\", \"2m\"")
        }
        // Numbers go through the same parser as strings (one cap, one message).
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
            crate::config::parse_duration(&v.to_string()).map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
            crate::config::parse_duration(&v.to_string()).map_err(E::custom)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
            crate::config::parse_duration(&format!("{v:?}")).map_err(E::custom)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            crate::config::parse_duration(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V).map(Some)
}

/// A user or group: a name, or a number written with or without quotes.
fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a user or group name, or a number")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            u32::try_from(v)
                .map(|n| n.to_string())
                .map_err(|_| E::custom(format!("invalid id {v}")))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            u32::try_from(v)
                .map(|n| n.to_string())
                .map_err(|_| E::custom(format!("invalid id {v}")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V).map(Some)
}

/// The values of `restart` (for the manager).
pub const RESTART_POLICIES: &[&str] = &["on-failure", "always", "never"];

fn de_restart<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if RESTART_POLICIES.contains(&s.as_str()) {
        Ok(Some(s))
    } else {
        Err(serde::de::Error::custom(format!(
            "invalid restart policy {s:?} (expected on-failure, always or never)"
        )))
    }
}

/// The values of `threading`, as in the original.
pub const THREADING_MODES: &[&str] = &["off", "safe", "full"];

fn de_sandbox_network<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<crate::sandbox::Network>()
        .map_err(serde::de::Error::custom)?;
    Ok(Some(s))
}

fn de_preserve_capabilities<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    crate::sandbox::parse_preserved(&v.join(",")).map_err(serde::de::Error::custom)?;
    Ok(Some(v))
}

fn de_inherit_capabilities<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<crate::sandbox::Inherit>()
        .map_err(serde::de::Error::custom)?;
    Ok(Some(s))
}

fn de_threading<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if THREADING_MODES.contains(&s.as_str()) {
        Ok(Some(s))
    } else {
        Err(serde::de::Error::custom(format!(
            "invalid threading mode {s:?} (expected off, safe or full)"
        )))
    }
}

fn ser_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a size: bytes like 134217728, or a string like \"128MiB\"")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            crate::config::parse_size(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V).map(Some)
}

/// 1-based line and column (in characters) of byte offset `pos` in `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The key of the `key = value` line at or before byte offset `pos` (for errors whose span
/// is the value, possibly inside a multi-line array).
fn key_at(text: &str, pos: usize) -> Option<String> {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    for line in text[..line_end].lines().rev() {
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        if KEYS.contains(&k) {
            return Some(k.to_string());
        }
    }
    None
}

/// Levenshtein distance in characters (also used for the INI keys in `legacy`).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known key closest to `key`, if it is close enough to be a likely typo.
pub(super) fn suggest_key(key: &str) -> Option<&'static str> {
    let dashed = key.replace('_', "-").to_ascii_lowercase();
    if let Some(k) = KEYS.iter().find(|k| **k == dashed) {
        return Some(k);
    }
    KEYS.iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Parses the text of a profile file; `file` is for error messages.
pub fn parse_values(file: &Path, text: &str) -> Result<ProfileValues, ProfileError> {
    toml::from_str::<ProfileValues>(text).map_err(|e| {
        let span = e.span();
        let lc = span.as_ref().map(|s| line_col(text, s.start));
        let message = e.message().replace('\n', " ");
        if let Some(rest) = message.strip_prefix("unknown field `") {
            if let Some(end) = rest.find('`') {
                let key = rest[..end].to_string();
                return ProfileError::UnknownKey {
                    file: file.to_path_buf(),
                    line_col: lc,
                    suggestion: suggest_key(&key),
                    key,
                };
            }
        }
        let message = match span.and_then(|s| key_at(text, s.start)) {
            Some(k) => format!("{k}: {message}"),
            None => message,
        };
        ProfileError::Syntax {
            file: file.to_path_buf(),
            line_col: lc,
            message,
        }
    })
}
