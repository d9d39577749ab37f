/*!
TOML profiles for the worker: loading, inheritance, `%…%` substitution and templates.

Why it is shaped this way:

- One profile per `*.toml` file in a profiles directory (`--profiles-dir`, else
  `$CLSYNC_PROFILES_DIR`, else `/etc/clsync`), named by the file stem. Other files and
  dot-files are ignored so that editor leftovers and READMEs can live there. A file that
  does not load is *broken*: it stays in the directory's list with its error (one line
  naming file, line and column), and resolving it, or a profile that inherits from it,
  fails with that error. Every other profile loads and runs: one bad file must not stop
  the rest (`clsync check` reports each profile, ok or its error; the manager marks the
  broken ones failed and keeps running the good ones).
- Keys are the original clsync's long option names in kebab-case, so its man page
  documents them. Unknown keys are rejected (`deny_unknown_fields`): a misspelt
  `delay-colect` must not be silently ignored. The error names `file:line:col` and
  suggests the closest key by edit distance. serde_derive does not expose the field list,
  so it is written once in [`KEYS`]; a unit test checks it against the struct both ways.
- Every field is an `Option` so that "not set" differs from "set to the default"; that is
  what inheritance (`inherits = "base"`, child's set values win, field by field) needs.
  Defaults are applied later by whoever turns a profile into a running configuration.
- Values whose set is closed and small (`threading`: off, safe, full) are checked while
  parsing so that a typo gets a line and column; open-ended ones (`mode`, paths) are left
  to whoever builds the running configuration.
- Durations are seconds (`30`, `0.5`) or a string (`"200ms"`, `"2m"`), parsed by
  [`crate::config::parse_duration`] so the CLI and profiles agree; sizes are bytes or a
  binary-unit string parsed by [`crate::config::parse_size`] (which rejects the ambiguous
  `"128MB"`).
- Substitution as in the original: `%label%`, `%option-name%` (effective value after
  inheritance, itself substituted, with cycle detection) and `%%` for a literal `%`.
  Unknown names are errors, not left as is, so that typos show up at start. The
  original's per-run placeholders (`%INCLUDE-LIST%`, `%INCLUDE-LIST-PATH%`,
  `%EXCLUDE-LIST-PATH%`, `%RSYNC-ARGS%`, `%EVENT-MASK%`, `%TYPE%`) are kept as they are:
  the sync handler's runs fill them in.
- `%label%` is the instance label (`PROFILE@LABEL`, `PROFILE-LABEL` or `--label`). A
  profile that uses `%label%` and has no fixed label of its own is a *template*: it needs
  a label, and a non-template refuses one. A profile with a fixed `label = "web"` may use
  `%label%`, which then means that label, as in the original. A `label` that itself uses
  `%label%` (e.g. `"lxc-%label%"`) is derived from the instance label.
- Labels end up in paths (lists-dir, pid-file…), so `/`, `..`, NUL, a leading `-` and the
  empty label are refused.
- Substitution works on the serialized form (a `toml::Table`) rather than field by field,
  so that adding a field needs no change here; [`ProfileValues::to_toml`] uses the same
  serialization (durations as humantime strings, sizes as bytes) and round-trips.
*/

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default profiles directory.
pub const DEFAULT_PROFILES_DIR: &str = "/etc/clsync";

/// The environment variable that overrides [`DEFAULT_PROFILES_DIR`].
pub const PROFILES_DIR_ENV: &str = "CLSYNC_PROFILES_DIR";

/// How deep `%option%` substitutions may nest before we give up.
const MAX_SUBST_DEPTH: usize = 16;

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
const DURATION_KEYS: &[&str] = &[
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
const NO_SUBST_KEYS: &[&str] = &["inherits"];

/// The valid keys of a profile file.
pub fn keys() -> &'static [&'static str] {
    KEYS
}

/// The values of one profile file (or, after [`resolve`], the effective values).
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
    pub fn merge(self, parent: ProfileValues) -> ProfileValues {
        merge_fields!(self, parent;
            watch_dir, destination_dir, mode, sync_handler, sync_handler_args, rules_file,
            rules, exclude, include, delay_sync, delay_collect, delay_collect_bigfile,
            threshold_bigfile, retries, ignore_exitcode, timeout_sync, threading,
            max_parallel_syncs, label, lists_dir, status_file, pid_file, exit_hook, pre_exit_hook, full_initialsync,
            only_initialsync, skip_initialsync, exit_on_no_events, sync_on_quit,
            one_file_system, exclude_mount_points, rsync_prefer_include, dont_unlink_lists,
            have_recursive_sync, synclist_simplify, ignore_failures, max_iterations,
            standby_file, modification_signature, rsync_inclimit, output, debug, uid, gid,
            sync_handler_uid, sync_handler_gid, lists_nul, dump_dir, destinations, ssh_command,
            ssh_identity, ssh_port, ssh_options, rsync_options, rsync_password_file,
            allow_empty_source, progress, verify_interval, wait_for_close, monitor, peer, split_brain, resolver, resolver_timeout,
            split_brain_notify, pair_dir, peer_pair_dir, autostart, restart,
            restart_delay, restart_max_delay, start_limit_burst, start_limit_interval,
            stop_timeout, inherits,
        )
    }

    /// The set values as TOML `key = value` lines in the order of [`KEYS`]; durations as
    /// humantime strings (`"30s"`, `"1m 30s"`), sizes as bytes. Parses back to `self`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialize: {e}\n"))
    }

    fn to_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("ProfileValues serializes to a table")
    }

    fn from_table(table: toml::Table) -> Result<ProfileValues, String> {
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

/// A profile as loaded from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The file stem.
    pub name: String,
    pub file: PathBuf,
    /// The values set in the file itself (no inheritance).
    pub values: ProfileValues,
    /// Why the file does not load (one line naming it); its `values` are then empty,
    /// except `autostart` when that much could be read (so the manager can show it failed).
    pub broken: Option<String>,
}

/// The profiles of a directory by name.
pub type Profiles = BTreeMap<String, Profile>;

/// A profile instance ready to use: inheritance applied, substitutions done.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// `PROFILE@LABEL` for a template instance, else `PROFILE`.
    pub instance: String,
    pub profile: String,
    /// The instance label (`None` for a non-template).
    pub label: Option<String>,
    pub values: ProfileValues,
}

/// Errors of loading and resolving profiles. Each displays as one line that names the
/// file (with `:line:col` where known) or the profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", location(.file, *.line_col))]
    Syntax {
        file: PathBuf,
        line_col: Option<(usize, usize)>,
        message: String,
    },
    #[error("{}: unknown key {key:?}{}", location(.file, *.line_col), suggestion_text(.suggestion))]
    UnknownKey {
        file: PathBuf,
        line_col: Option<(usize, usize)>,
        key: String,
        suggestion: Option<&'static str>,
    },
    #[error("{}: invalid profile name {name:?}: {reason}", .file.display())]
    BadName {
        file: PathBuf,
        name: String,
        reason: &'static str,
    },
    #[error("{}: inherits {parent:?}: no such profile in {}", .file.display(), .dir.display())]
    UnknownParent {
        file: PathBuf,
        parent: String,
        dir: PathBuf,
    },
    #[error("{}: {}: inheritance cycle", .file.display(), cycle_text(.chain))]
    Cycle { file: PathBuf, chain: Vec<String> },
    #[error("{}: {message}", .file.display())]
    Substitution { file: PathBuf, message: String },
    #[error("no such profile {name:?} in {}", .dir.display())]
    NoSuchProfile { name: String, dir: PathBuf },
    #[error("{message}")]
    Broken { message: String },
    #[error("{}: inherits {parent:?}, which is broken: {message}", .file.display())]
    BrokenParent {
        file: PathBuf,
        parent: String,
        message: String,
    },
    #[error("invalid label {label:?}: {reason} (a label must be one safe path component)")]
    BadLabel { label: String, reason: &'static str },
    #[error("profile {profile} is not a template (it does not use %label%), so it takes no label (got {label:?})")]
    NotTemplate { profile: String, label: String },
    #[error("profile {profile} is a template: give a label, e.g. {profile}@NAME")]
    NeedsLabel { profile: String },
    #[error("two labels for profile {profile}: {first:?} in the name and {second:?}")]
    TwoLabels {
        profile: String,
        first: String,
        second: String,
    },
}

impl ProfileError {
    /// The profile or one it inherits from is broken (its file does not load).
    pub fn is_broken(&self) -> bool {
        matches!(
            self,
            ProfileError::Broken { .. } | ProfileError::BrokenParent { .. }
        )
    }
}

fn location(file: &Path, line_col: Option<(usize, usize)>) -> String {
    match line_col {
        Some((l, c)) => format!("{}:{l}:{c}", file.display()),
        None => file.display().to_string(),
    }
}

fn suggestion_text(s: &Option<&'static str>) -> String {
    s.map(|k| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

fn cycle_text(chain: &[String]) -> String {
    chain
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i == 0 {
                format!("inherits {p:?}")
            } else {
                format!(", which inherits {p:?}")
            }
        })
        .collect()
}

/// The profiles directory: `cli`, else `$CLSYNC_PROFILES_DIR` (if not empty), else
/// `/etc/clsync`.
pub fn profiles_dir(cli: Option<&Path>) -> PathBuf {
    profiles_dir_from(cli, std::env::var_os(PROFILES_DIR_ENV))
}

fn profiles_dir_from(cli: Option<&Path>, env: Option<std::ffi::OsString>) -> PathBuf {
    if let Some(p) = cli {
        return p.to_path_buf();
    }
    match env {
        Some(e) if !e.is_empty() => PathBuf::from(e),
        _ => PathBuf::from(DEFAULT_PROFILES_DIR),
    }
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
fn suggest_key(key: &str) -> Option<&'static str> {
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

fn check_name(file: &Path, name: &str) -> Result<(), ProfileError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.contains('@') {
        Some("contains '@', which separates a profile from its label")
    } else if name.starts_with('-') {
        Some("starts with '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ProfileError::BadName {
            file: file.to_path_buf(),
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Loads one profile file; its name is the file stem.
pub fn load_file(path: impl AsRef<Path>) -> Result<Profile, ProfileError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    check_name(path, &name)?;
    let values = parse_values(path, &text)?;
    Ok(Profile {
        name,
        file: path.to_path_buf(),
        values,
        broken: None,
    })
}

/// A profile whose file does not load: kept with its error, and with `autostart` if the
/// file is TOML at all (so a broken autostart profile shows as failed, not as absent).
fn broken_profile(path: &Path, error: ProfileError) -> Profile {
    let autostart = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .and_then(|t| t.get("autostart").and_then(toml::Value::as_bool));
    Profile {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        file: path.to_path_buf(),
        values: ProfileValues {
            autostart,
            ..Default::default()
        },
        broken: Some(error.to_string()),
    }
}

/// Loads every `*.toml` file of `dir` (not dot-files, not subdirectories). A file that
/// does not load is kept as a broken profile (see [`Profile::broken`]); only a directory
/// that cannot be read is an error.
pub fn load_dir(dir: &Path) -> Result<Profiles, ProfileError> {
    let io = |source| ProfileError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut profiles = Profiles::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !is_toml || hidden || !path.is_file() {
            continue;
        }
        let profile = load_file(&path).unwrap_or_else(|e| broken_profile(&path, e));
        profiles.insert(profile.name.clone(), profile);
    }
    Ok(profiles)
}

/// The directory the profiles came from, for messages.
fn dir_of(profiles: &Profiles) -> PathBuf {
    profiles
        .values()
        .next()
        .and_then(|p| p.file.parent())
        .map_or_else(
            || PathBuf::from("the profiles directory"),
            Path::to_path_buf,
        )
}

/// The values of `name` with its ancestors' values merged in.
pub fn inherited(profiles: &Profiles, name: &str) -> Result<ProfileValues, ProfileError> {
    let start = profiles
        .get(name)
        .ok_or_else(|| ProfileError::NoSuchProfile {
            name: name.to_string(),
            dir: dir_of(profiles),
        })?;
    if let Some(message) = &start.broken {
        return Err(ProfileError::Broken {
            message: message.clone(),
        });
    }
    let mut values = start.values.clone();
    let mut seen = vec![start.name.clone()];
    let mut cur = start;
    while let Some(parent) = cur.values.inherits.as_deref() {
        let chain = || {
            seen[1..]
                .iter()
                .cloned()
                .chain([parent.to_string()])
                .collect()
        };
        if seen.iter().any(|s| s == parent) {
            return Err(ProfileError::Cycle {
                file: start.file.clone(),
                chain: chain(),
            });
        }
        let p = profiles
            .get(parent)
            .ok_or_else(|| ProfileError::UnknownParent {
                file: cur.file.clone(),
                parent: parent.to_string(),
                dir: cur
                    .file
                    .parent()
                    .map_or_else(|| dir_of(profiles), Path::to_path_buf),
            })?;
        if let Some(message) = &p.broken {
            return Err(ProfileError::BrokenParent {
                file: start.file.clone(),
                parent: parent.to_string(),
                message: message.clone(),
            });
        }
        values = values.merge(p.values.clone());
        seen.push(p.name.clone());
        cur = p;
    }
    Ok(values)
}

/// One piece of a string with `%…%` substitutions.
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits `s` into text and `%name%` references (`%%` is a literal `%`).
fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        let after = &rest[i + 1..];
        let Some(j) = after.find('%') else {
            return Err(format!("unmatched '%' in {s:?} (write %% for a literal %)"));
        };
        if j == 0 {
            out.push(Piece::Text("%"));
        } else {
            out.push(Piece::Var(&after[..j]));
        }
        rest = &after[j + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

fn uses_label(s: &str) -> bool {
    pieces(s).is_ok_and(|p| p.iter().any(|p| matches!(p, Piece::Var("label"))))
}

/// The strings of a table value that substitution applies to.
fn strings_of(v: &toml::Value) -> Vec<&str> {
    match v {
        toml::Value::String(s) => vec![s.as_str()],
        toml::Value::Array(a) => a.iter().filter_map(|e| e.as_str()).collect(),
        _ => Vec::new(),
    }
}

fn substitutable(key: &str) -> bool {
    !DURATION_KEYS.contains(&key) && !NO_SUBST_KEYS.contains(&key)
}

/// Whether effective values make a template: `%label%` is used somewhere and there is no
/// fixed label (a `label` option without `%label%` in it) for it to mean.
fn is_template(table: &toml::Table) -> bool {
    let uses = table
        .iter()
        .filter(|(k, _)| substitutable(k))
        .any(|(_, v)| strings_of(v).into_iter().any(uses_label));
    let fixed_label = table
        .get("label")
        .and_then(|v| v.as_str())
        .is_some_and(|l| !uses_label(l));
    uses && !fixed_label
}

struct Subst<'a> {
    table: &'a toml::Table,
    /// The instance label.
    label: Option<&'a str>,
}

/// The original's placeholders that each sync-handler run fills in (kept as they are by
/// substitution; `legacy` leaves them unescaped on import).
pub(crate) const RUNTIME_PLACEHOLDERS: &[&str] = &[
    "INCLUDE-LIST",
    "INCLUDE-LIST-PATH",
    "EXCLUDE-LIST-PATH",
    "RSYNC-ARGS",
    "EVENT-MASK",
    "TYPE",
];

impl Subst<'_> {
    fn expand(&self, s: &str, stack: &mut Vec<String>) -> Result<String, String> {
        let mut out = String::new();
        for piece in pieces(s)? {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => out.push_str(&self.value_of(name, s, stack)?),
            }
        }
        Ok(out)
    }

    fn value_of(&self, name: &str, text: &str, stack: &mut Vec<String>) -> Result<String, String> {
        if RUNTIME_PLACEHOLDERS.contains(&name) {
            return Ok(format!("%{name}%"));
        }
        if name == "label" {
            if let Some(l) = self.label {
                return Ok(l.to_string());
            }
        }
        if stack.iter().any(|s| s == name) || stack.len() >= MAX_SUBST_DEPTH {
            let mut chain: Vec<String> = stack.iter().map(|s| format!("%{s}%")).collect();
            chain.push(format!("%{name}%"));
            return Err(format!("substitution cycle: {}", chain.join(" -> ")));
        }
        let Some(v) = self.table.get(name) else {
            return Err(if KEYS.contains(&name) {
                format!("%{name}% in {text:?}: option {name} is not set")
            } else {
                format!("unknown substitution %{name}% in {text:?}")
            });
        };
        let value = match v {
            toml::Value::String(d) if DURATION_KEYS.contains(&name) => {
                let d = crate::config::parse_duration(d)?;
                format!("{}", d.as_secs_f64())
            }
            toml::Value::String(s) if NO_SUBST_KEYS.contains(&name) => s.clone(),
            toml::Value::String(s) => {
                stack.push(name.to_string());
                let r = self.expand(s, stack);
                stack.pop();
                r?
            }
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            _ => {
                return Err(format!(
                    "%{name}% in {text:?}: option {name} is a list, which cannot be substituted"
                ))
            }
        };
        Ok(value)
    }
}

/// Does every substitution in `values` for instance label `label`.
fn substitute(values: &ProfileValues, label: Option<&str>) -> Result<ProfileValues, String> {
    let table = values.to_table();
    let subst = Subst {
        table: &table,
        label,
    };
    let mut out = toml::Table::new();
    for (k, v) in &table {
        let nv = if !substitutable(k) {
            v.clone()
        } else {
            match v {
                toml::Value::String(s) => {
                    toml::Value::String(subst.expand(s, &mut vec![k.clone()])?)
                }
                toml::Value::Array(a) => toml::Value::Array(
                    a.iter()
                        .map(|e| match e {
                            toml::Value::String(s) => {
                                Ok(toml::Value::String(subst.expand(s, &mut vec![k.clone()])?))
                            }
                            other => Ok(other.clone()),
                        })
                        .collect::<Result<_, String>>()?,
                ),
                other => other.clone(),
            }
        };
        out.insert(k.clone(), nv);
    }
    ProfileValues::from_table(out)
}

/// Checks a label: it ends up in paths (`%label%` in watch-dir, destination-dir,
/// lists-dir…), in hook arguments and in log lines, so it must be one safe path
/// component: not empty, not `.` or `..` (a `%label%` path would fall back to the parent,
/// and `--delete` would then wipe a sibling's mirror), no `/`, no `..`, no NUL or other
/// control character (newline, ESC), no leading `-` (an option to a hook). The one check
/// for every way a label comes in: `PROFILE@LABEL`, `PROFILE-LABEL`, `--label`/`-l`, a
/// profile's or INI block's `label`, and the manager's control socket.
pub fn check_label(label: &str) -> Result<(), ProfileError> {
    let reason = if label.is_empty() {
        Some("empty")
    } else if label == "." || label == ".." {
        Some("'.' and '..' name a directory itself or its parent, not a place of its own")
    } else if label.contains('/') {
        Some("contains '/'")
    } else if label.contains("..") {
        Some("contains '..'")
    } else if label.contains('\0') {
        Some("contains NUL")
    } else if label.chars().any(char::is_control) {
        Some("contains a control character")
    } else if label.starts_with('-') {
        Some("starts with '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ProfileError::BadLabel {
            label: label.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Whether profile `name` (with inheritance) is a template, i.e. needs a label.
pub fn is_template_profile(profiles: &Profiles, name: &str) -> Result<bool, ProfileError> {
    Ok(is_template(&inherited(profiles, name)?.to_table()))
}

/// Splits an instance name into profile and label: `PROFILE@LABEL`, an existing
/// `PROFILE`, or `TEMPLATE-LABEL` (the longest template name wins).
fn split_instance(
    profiles: &Profiles,
    name: &str,
) -> Result<(String, Option<String>), ProfileError> {
    if let Some((p, l)) = name.split_once('@') {
        return Ok((p.to_string(), Some(l.to_string())));
    }
    if profiles.contains_key(name) {
        return Ok((name.to_string(), None));
    }
    // The longest profile name that fits and is a template wins; a broken one that fits
    // better is reported (it may well be the one meant), one that fits less is skipped.
    let mut best: Option<&str> = None;
    for p in profiles.keys() {
        let fits = name
            .strip_prefix(p.as_str())
            .is_some_and(|rest| rest.starts_with('-'));
        if !fits || best.is_some_and(|b| p.len() <= b.len()) {
            continue;
        }
        match is_template_profile(profiles, p) {
            Ok(true) => best = Some(p),
            Ok(false) => {}
            Err(e) if e.is_broken() => best = Some(p),
            Err(e) => return Err(e),
        }
    }
    match best {
        Some(p) => Ok((p.to_string(), Some(name[p.len() + 1..].to_string()))),
        None => Err(ProfileError::NoSuchProfile {
            name: name.to_string(),
            dir: dir_of(profiles),
        }),
    }
}

/// Resolves `name` (`PROFILE`, `PROFILE@LABEL` or `PROFILE-LABEL`), with `label` from a
/// `--label` flag if given: inheritance applied, substitutions done, `label` set.
pub fn resolve(
    profiles: &Profiles,
    name: &str,
    label: Option<&str>,
) -> Result<Resolved, ProfileError> {
    let (profile, name_label) = split_instance(profiles, name)?;
    let label = match (name_label, label) {
        (Some(a), Some(b)) if a != b => {
            return Err(ProfileError::TwoLabels {
                profile,
                first: a,
                second: b.to_string(),
            })
        }
        (Some(a), _) => Some(a),
        (None, b) => b.map(str::to_string),
    };
    if let Some(l) = &label {
        check_label(l)?;
    }
    let values = inherited(profiles, &profile)?;
    let template = is_template(&values.to_table());
    match (&label, template) {
        (Some(l), false) => {
            return Err(ProfileError::NotTemplate {
                profile,
                label: l.clone(),
            })
        }
        (None, true) => return Err(ProfileError::NeedsLabel { profile }),
        _ => {}
    }
    let file = profiles[&profile].file.clone();
    let mut values =
        substitute(&values, label.as_deref()).map_err(|message| ProfileError::Substitution {
            file: file.clone(),
            message,
        })?;
    if values.label.is_none() {
        values.label.clone_from(&label);
    }
    // The profile's own `label` (fixed, or derived from the instance label) is a label
    // like any other.
    if let Some(l) = &values.label {
        check_label(l).map_err(|e| ProfileError::Substitution {
            file,
            message: format!("label: {e}"),
        })?;
    }
    let instance = match &label {
        Some(l) => format!("{profile}@{l}"),
        None => profile.clone(),
    };
    Ok(Resolved {
        instance,
        profile,
        label,
        values,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn runtime_placeholders_are_kept_for_the_handler() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("h.toml"),
            "sync-handler-args = [\"--include-from=%INCLUDE-LIST-PATH%\", \"%RSYNC-ARGS%\", \"%watch-dir%/\"]\nwatch-dir = \"/w\"\n",
        )
        .unwrap();
        let r = resolve(&load_dir(d.path()).unwrap(), "h", None).unwrap();
        assert_eq!(
            r.values.sync_handler_args.unwrap(),
            ["--include-from=%INCLUDE-LIST-PATH%", "%RSYNC-ARGS%", "/w/"]
        );
    }

    use super::*;

    fn parse(text: &str) -> Result<ProfileValues, ProfileError> {
        parse_values(Path::new("/etc/clsync/web.toml"), text)
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn profiles(files: &[(&str, &str)]) -> (tempfile::TempDir, Profiles) {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            write(d.path(), &format!("{name}.toml"), text);
        }
        let p = load_dir(d.path()).unwrap();
        (d, p)
    }

    #[test]
    fn unknown_key_is_reported_with_suggestion_and_position() {
        let e =
            parse("watch-dir = \"/srv\"\nmode = \"rsyncdirect\"\ndelay-colect = 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/clsync/web.toml:3:1: unknown key \"delay-colect\" (did you mean \"delay-collect\"?)"
        );
        let e = parse("delay_collect_bigfile = 3\n").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("(did you mean \"delay-collect-bigfile\"?)"),
            "{e}"
        );
        let e = parse("frobnicate = 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/clsync/web.toml:1:1: unknown key \"frobnicate\""
        );
    }

    #[test]
    fn wrong_type_is_reported_with_position_and_key() {
        let e = parse("mode = \"rsyncdirect\"\ndelay-sync = true\n").unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("/etc/clsync/web.toml:2:14: delay-sync: invalid type"),
            "{s}"
        );
        assert!(!s.contains('\n'));
        let e = parse("\n\n\ndelay-collect = \"abc\"\n").unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("/etc/clsync/web.toml:4:17: delay-collect: invalid duration \"abc\""),
            "{s}"
        );
        let e = parse("retries = \"x\"").unwrap_err();
        assert!(
            e.to_string().contains(":1:11: retries: invalid type"),
            "{e}"
        );
        let e = parse("exclude = [\n  \"a=b\",\n  3,\n]\n").unwrap_err();
        assert!(e.to_string().contains(":3:3: exclude: invalid type"), "{e}");
    }

    #[test]
    fn syntax_error_is_one_line_with_position() {
        let e = parse("mode = \"rsyncdirect\"\nwatch-dir = \n").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("/etc/clsync/web.toml:2:"), "{s}");
        assert!(!s.contains('\n'), "{s}");
    }

    #[test]
    fn threading_is_checked() {
        for m in THREADING_MODES {
            assert_eq!(
                parse(&format!("threading = \"{m}\""))
                    .unwrap()
                    .threading
                    .as_deref(),
                Some(*m)
            );
        }
        let e = parse("mode = \"rsyncdirect\"\nthreading = \"ful\"").unwrap_err();
        assert!(
            e.to_string()
                .contains(":2:13: threading: invalid threading mode \"ful\""),
            "{e}"
        );
    }

    #[test]
    fn durations_in_all_forms() {
        let v = parse(
            "delay-sync = 30\ndelay-collect = 0.5\ndelay-collect-bigfile = \"2h\"\ntimeout-sync = \"200ms\"\n",
        )
        .unwrap();
        assert_eq!(v.delay_sync, Some(Duration::from_secs(30)));
        assert_eq!(v.delay_collect, Some(Duration::from_millis(500)));
        assert_eq!(v.delay_collect_bigfile, Some(Duration::from_secs(7200)));
        assert_eq!(v.timeout_sync, Some(Duration::from_millis(200)));
        let v = parse("delay-sync = \"30s\"\ndelay-collect = \"30\"\n").unwrap();
        assert_eq!(v.delay_sync, Some(Duration::from_secs(30)));
        assert_eq!(v.delay_collect, Some(Duration::from_secs(30)));
        assert!(parse("delay-sync = -1").is_err());
        assert!(parse("delay-sync = -0.5").is_err());
    }

    #[test]
    fn sizes() {
        let v = parse("threshold-bigfile = \"128MiB\"").unwrap();
        assert_eq!(v.threshold_bigfile, Some(134217728));
        let v = parse("threshold-bigfile = 134217728").unwrap();
        assert_eq!(v.threshold_bigfile, Some(134217728));
        let e = parse("threshold-bigfile = \"128MB\"").unwrap_err();
        assert!(
            e.to_string()
                .contains(":1:21: threshold-bigfile: invalid size"),
            "{e}"
        );
        assert!(parse("threshold-bigfile = -1").is_err());
    }

    /// Every field set: a struct literal without `..`, so it lists every field.
    fn all_set() -> ProfileValues {
        let s = |x: &str| Some(x.to_string());
        let l = |x: &[&str]| Some(x.iter().map(|x| x.to_string()).collect());
        ProfileValues {
            watch_dir: s("/srv/web"),
            destination_dir: s("/backup/web"),
            mode: s("rsyncdirect"),
            sync_handler: s("/usr/bin/rsync"),
            sync_handler_args: l(&["-a", "%watch-dir%/"]),
            rules_file: s("/etc/clsync/rules"),
            rules: l(&["-d^/tmp$", "+*.*"]),
            exclude: l(&["/cache"]),
            include: l(&["/cache/keep"]),
            delay_sync: Some(Duration::from_secs(30)),
            delay_collect: Some(Duration::from_millis(1500)),
            delay_collect_bigfile: Some(Duration::from_secs(7200)),
            threshold_bigfile: Some(128 << 20),
            retries: Some(3),
            ignore_exitcode: Some(vec![23, 24]),
            timeout_sync: Some(Duration::from_millis(200)),
            threading: s("safe"),
            max_parallel_syncs: Some(8),
            label: s("web"),
            lists_dir: s("/run/clsync/%label%"),
            status_file: s("/run/clsync/%label%.status"),
            pid_file: s("/run/clsync/%label%.pid"),
            exit_hook: s("/bin/true"),
            pre_exit_hook: s("/bin/true"),
            full_initialsync: Some(true),
            only_initialsync: Some(false),
            skip_initialsync: Some(false),
            exit_on_no_events: Some(false),
            sync_on_quit: Some(true),
            one_file_system: Some(true),
            exclude_mount_points: Some(true),
            rsync_prefer_include: Some(false),
            dont_unlink_lists: Some(false),
            have_recursive_sync: Some(true),
            synclist_simplify: Some(true),
            ignore_failures: Some(false),
            max_iterations: Some(10),
            standby_file: s("/run/standby"),
            modification_signature: s("*"),
            rsync_inclimit: Some(20000),
            output: s("syslog"),
            debug: Some(2),
            uid: s("nobody"),
            gid: s("1000"),
            sync_handler_uid: s("www-data"),
            sync_handler_gid: s("www-data"),
            lists_nul: Some(true),
            dump_dir: s("/run/clsync/dump"),
            destinations: l(&["node-b:/srv/web", "/backup/web"]),
            ssh_command: s("ssh"),
            ssh_identity: s("/root/.ssh/id_clsync"),
            ssh_port: Some(2222),
            ssh_options: l(&["-oConnectTimeout=10"]),
            rsync_options: l(&["--bwlimit=10m", "--compress"]),
            rsync_password_file: s("/etc/clsync/rsync.secret"),
            allow_empty_source: Some(false),
            progress: Some(true),
            verify_interval: Some(Duration::from_secs(3600)),
            wait_for_close: Some(Duration::from_secs(30)),
            monitor: s("fanotify"),
            peer: s("node-b:/srv/lxc/%label%"),
            split_brain: s("discard-least-changes"),
            resolver: s("/usr/local/bin/resolve"),
            resolver_timeout: Some(Duration::from_secs(30)),
            split_brain_notify: s("/usr/local/bin/page-admin"),
            pair_dir: s("/var/lib/clsync"),
            peer_pair_dir: s("/var/lib/clsync"),
            autostart: Some(true),
            restart: s("on-failure"),
            restart_delay: Some(Duration::from_secs(2)),
            restart_max_delay: Some(Duration::from_secs(300)),
            start_limit_burst: Some(5),
            start_limit_interval: Some(Duration::from_secs(600)),
            stop_timeout: Some(Duration::from_secs(90)),
            inherits: s("base"),
        }
    }

    #[test]
    fn keys_match_the_struct_and_round_trip() {
        let v = all_set();
        let text = v.to_toml();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let got: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut want: Vec<&str> = KEYS.to_vec();
        want.sort();
        assert_eq!(got, want, "KEYS and ProfileValues disagree");
        assert_eq!(parse(&text).unwrap(), v);
        // Output is in field order, which is KEYS' order.
        let order: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
            .collect();
        assert_eq!(order, KEYS);
        assert!(text.contains("delay-collect = \"1s 500ms\""), "{text}");
        assert!(text.contains("threshold-bigfile = 134217728"), "{text}");
        assert_eq!(ProfileValues::default().to_toml(), "");
    }

    #[test]
    fn every_key_is_accepted_and_unknown_rejected() {
        for key in KEYS {
            let ok = [
                "\"1\"",
                "\"safe\"",
                "\"never\"",
                "[\"x\"]",
                "true",
                "1",
                "[1]",
            ]
            .iter()
            .any(|v| parse(&format!("{key} = {v}")).is_ok_and(|p| p != ProfileValues::default()));
            assert!(ok, "key {key} is not accepted");
        }
        assert!(parse("no-such-key = 1").is_err());
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("delay-colect", "delay-collect"), 1);
        assert_eq!(suggest_key("delay-sinc"), Some("delay-sync"));
        assert_eq!(suggest_key("xyz"), None);
    }

    #[test]
    fn load_dir_ignores_other_files_and_names_bad_ones() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "web.toml", "watch-dir = \"/srv/web\"\n");
        write(d.path(), "README", "not toml = = =");
        write(d.path(), ".web.toml", "junk = = =");
        write(d.path(), "web.toml~", "junk = = =");
        std::fs::create_dir(d.path().join("sub.toml")).unwrap();
        let p = load_dir(d.path()).unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["web"]);
        assert_eq!(p["web"].file, d.path().join("web.toml"));
        assert_eq!(p["web"].values.watch_dir.as_deref(), Some("/srv/web"));

        // A file that does not load is kept as broken, with its error; the others load.
        write(d.path(), "bad.toml", "mode = 3\nautostart = true\n");
        write(d.path(), "heir.toml", "inherits = \"bad\"\n");
        let p = load_dir(d.path()).unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["bad", "heir", "web"]);
        let e = p["bad"].broken.clone().unwrap();
        assert!(
            e.starts_with(&format!(
                "{}:1:8: mode:",
                d.path().join("bad.toml").display()
            )),
            "{e}"
        );
        assert_eq!(p["bad"].values.autostart, Some(true));
        assert_eq!(resolve(&p, "bad", None).unwrap_err().to_string(), e);
        let h = resolve(&p, "heir", None).unwrap_err();
        assert!(h.is_broken(), "{h}");
        assert_eq!(
            h.to_string(),
            format!(
                "{}: inherits \"bad\", which is broken: {e}",
                d.path().join("heir.toml").display()
            )
        );
        assert!(resolve(&p, "web", None).is_ok());

        let e = load_dir(&d.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn inheritance_chain_overrides_field_by_field() {
        let (_d, p) = profiles(&[
            (
                "base",
                "mode = \"rsyncdirect\"\ndelay-sync = 30\nretries = 1\n",
            ),
            (
                "mid",
                "inherits = \"base\"\ndelay-sync = 5\nexclude = [\"/a\"]\n",
            ),
            (
                "web",
                "inherits = \"mid\"\nwatch-dir = \"/srv/web\"\nretries = 3\n",
            ),
        ]);
        let r = resolve(&p, "web", None).unwrap();
        assert_eq!(r.instance, "web");
        assert_eq!(r.label, None);
        let v = r.values;
        assert_eq!(v.mode.as_deref(), Some("rsyncdirect"));
        assert_eq!(v.delay_sync, Some(Duration::from_secs(5)));
        assert_eq!(v.retries, Some(3));
        assert_eq!(v.exclude, Some(vec!["/a".to_string()]));
        assert_eq!(v.watch_dir.as_deref(), Some("/srv/web"));
        assert_eq!(v.inherits.as_deref(), Some("mid"));
    }

    #[test]
    fn inheritance_cycle_and_missing_parent() {
        let (d, p) = profiles(&[
            ("web", "inherits = \"base\"\n"),
            ("base", "inherits = \"web\"\n"),
            ("self", "inherits = \"self\"\n"),
            ("orphan", "inherits = \"nosuch\"\n"),
        ]);
        let e = resolve(&p, "web", None).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: inherits \"base\", which inherits \"web\": inheritance cycle",
                d.path().join("web.toml").display()
            )
        );
        let e = resolve(&p, "self", None).unwrap_err().to_string();
        assert!(
            e.ends_with("self.toml: inherits \"self\": inheritance cycle"),
            "{e}"
        );
        let e = resolve(&p, "orphan", None).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: inherits \"nosuch\": no such profile in {}",
                d.path().join("orphan.toml").display(),
                d.path().display()
            )
        );
    }

    #[test]
    fn substitution() {
        let (_d, p) = profiles(&[(
            "lxc",
            r#"
watch-dir = "/var/lib/lxc/%label%/rootfs"
destination-dir = "backup:%watch-dir%"
sync-handler-args = ["--exclude=%%tmp", "%destination-dir%/"]
exit-hook = "/bin/echo %delay-sync% %retries% %one-file-system%"
delay-sync = 0.5
retries = 2
one-file-system = true
"#,
        )]);
        let r = resolve(&p, "lxc@web01", None).unwrap();
        assert_eq!(r.instance, "lxc@web01");
        assert_eq!(r.profile, "lxc");
        assert_eq!(r.label.as_deref(), Some("web01"));
        let v = &r.values;
        assert_eq!(v.watch_dir.as_deref(), Some("/var/lib/lxc/web01/rootfs"));
        assert_eq!(
            v.destination_dir.as_deref(),
            Some("backup:/var/lib/lxc/web01/rootfs")
        );
        assert_eq!(
            v.sync_handler_args,
            Some(vec![
                "--exclude=%tmp".to_string(),
                "backup:/var/lib/lxc/web01/rootfs/".to_string()
            ])
        );
        assert_eq!(v.exit_hook.as_deref(), Some("/bin/echo 0.5 2 true"));
        assert_eq!(v.label.as_deref(), Some("web01"));
    }

    #[test]
    fn substitution_errors() {
        let (_d, p) = profiles(&[
            ("a", "watch-dir = \"/srv/%x%\"\n"),
            (
                "b",
                "watch-dir = \"%destination-dir%\"\ndestination-dir = \"%watch-dir%\"\n",
            ),
            ("c", "watch-dir = \"%destination-dir%\"\n"),
            ("d", "watch-dir = \"/srv/%oops\"\n"),
            ("e", "watch-dir = \"%exclude%\"\nexclude = [\"a\"]\n"),
        ]);
        let e = resolve(&p, "a", None).unwrap_err().to_string();
        assert!(
            e.ends_with("a.toml: unknown substitution %x% in \"/srv/%x%\""),
            "{e}"
        );
        let e = resolve(&p, "b", None).unwrap_err().to_string();
        assert!(e.contains("b.toml: substitution cycle"), "{e}");
        let e = resolve(&p, "c", None).unwrap_err().to_string();
        assert!(e.contains("option destination-dir is not set"), "{e}");
        let e = resolve(&p, "d", None).unwrap_err().to_string();
        assert!(e.contains("unmatched '%'"), "{e}");
        let e = resolve(&p, "e", None).unwrap_err().to_string();
        assert!(e.contains("is a list"), "{e}");
    }

    #[test]
    fn fixed_label_and_derived_label() {
        let (_d, p) = profiles(&[
            ("web", "label = \"www\"\nwatch-dir = \"/srv/%label%\"\n"),
            (
                "lxc",
                "label = \"lxc-%label%\"\nlists-dir = \"/run/%label%\"\n",
            ),
        ]);
        let r = resolve(&p, "web", None).unwrap();
        assert_eq!(r.values.watch_dir.as_deref(), Some("/srv/www"));
        assert_eq!(r.values.label.as_deref(), Some("www"));
        let e = resolve(&p, "web@x", None).unwrap_err().to_string();
        assert!(e.contains("profile web is not a template"), "{e}");
        let r = resolve(&p, "lxc@a", None).unwrap();
        assert_eq!(r.values.label.as_deref(), Some("lxc-a"));
        assert_eq!(r.values.lists_dir.as_deref(), Some("/run/a"));
        assert_eq!(r.label.as_deref(), Some("a"));
    }

    #[test]
    fn templates_and_instance_names() {
        let (d, p) = profiles(&[
            ("lxc", "watch-dir = \"/lxc/%label%\"\n"),
            ("lxc-big", "inherits = \"lxc\"\ndelay-sync = 60\n"),
            ("plain", "watch-dir = \"/srv\"\n"),
            ("plain-x", "watch-dir = \"/srv/x\"\n"),
        ]);
        assert!(is_template_profile(&p, "lxc").unwrap());
        assert!(is_template_profile(&p, "lxc-big").unwrap());
        assert!(!is_template_profile(&p, "plain").unwrap());

        let r = resolve(&p, "lxc-web01", None).unwrap();
        assert_eq!(
            (r.profile.as_str(), r.instance.as_str()),
            ("lxc", "lxc@web01")
        );
        assert_eq!(r.values.watch_dir.as_deref(), Some("/lxc/web01"));
        // Longest template name wins.
        let r = resolve(&p, "lxc-big-web01", None).unwrap();
        assert_eq!(r.profile, "lxc-big");
        assert_eq!(r.label.as_deref(), Some("web01"));
        assert_eq!(r.values.delay_sync, Some(Duration::from_secs(60)));
        // An existing profile name is taken as is.
        assert_eq!(resolve(&p, "lxc-big@x", None).unwrap().profile, "lxc-big");
        assert_eq!(resolve(&p, "plain-x", None).unwrap().profile, "plain-x");
        // A separate label.
        let r = resolve(&p, "lxc", Some("web02")).unwrap();
        assert_eq!(r.instance, "lxc@web02");
        assert!(resolve(&p, "lxc@a", Some("a")).is_ok());
        let e = resolve(&p, "lxc@a", Some("b")).unwrap_err().to_string();
        assert!(e.contains("two labels"), "{e}");

        let e = resolve(&p, "lxc", None).unwrap_err().to_string();
        assert_eq!(e, "profile lxc is a template: give a label, e.g. lxc@NAME");
        let e = resolve(&p, "plain", Some("x")).unwrap_err().to_string();
        assert!(
            e.starts_with("profile plain is not a template (it does not use %label%)"),
            "{e}"
        );
        let e = resolve(&p, "plain-y", None).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("no such profile \"plain-y\" in {}", d.path().display())
        );
        let e = resolve(&p, "nosuch@x", None).unwrap_err().to_string();
        assert!(e.starts_with("no such profile \"nosuch\""), "{e}");
    }

    #[test]
    fn bad_labels() {
        let (_d, p) = profiles(&[("lxc", "watch-dir = \"/lxc/%label%\"\n")]);
        for bad in [
            "",
            "a/b",
            "..",
            ".",
            "a..b",
            "-x",
            "a\0b",
            "a\nb",
            "\u{1b}[31m",
            "a\tb",
            "/",
        ] {
            let e = resolve(&p, "lxc", Some(bad)).unwrap_err();
            assert!(matches!(e, ProfileError::BadLabel { .. }), "{bad:?}: {e}");
            assert!(e.to_string().starts_with("invalid label"), "{e}");
        }
        assert!(matches!(
            resolve(&p, "lxc@../x", None),
            Err(ProfileError::BadLabel { .. })
        ));
        assert!(matches!(
            resolve(&p, "lxc-", None),
            Err(ProfileError::BadLabel { .. })
        ));
        assert!(matches!(
            resolve(&p, "lxc@.", None),
            Err(ProfileError::BadLabel { .. })
        ));
        assert!(matches!(
            resolve(&p, "lxc-.", None),
            Err(ProfileError::BadLabel { .. })
        ));
        assert!(check_label("web01.example").is_ok());
        assert!(check_label(".hidden").is_ok());
        // A profile's own label is checked too, fixed or derived.
        let (_d, p) = profiles(&[
            ("fixed", "label = \".\"\nwatch-dir = \"/srv/%label%\"\n"),
            ("derived", "label = \"%watch-dir%\"\nwatch-dir = \"/srv\"\n"),
        ]);
        for name in ["fixed", "derived"] {
            let e = resolve(&p, name, None).unwrap_err().to_string();
            assert!(e.contains(".toml: label: invalid label"), "{e}");
        }
    }

    #[test]
    fn profile_names_with_at_are_rejected() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a@b.toml", "");
        let e = load_file(d.path().join("a@b.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid profile name \"a@b\""), "{e}");
        let p = load_dir(d.path()).unwrap();
        let e = p["a@b"].broken.clone().unwrap();
        assert!(e.contains("invalid profile name \"a@b\""), "{e}");
    }

    #[test]
    fn profiles_dir_precedence() {
        let cli = Path::new("/x/profiles");
        assert_eq!(profiles_dir(Some(cli)), cli);
        assert_eq!(
            profiles_dir_from(Some(cli), Some("/env".into())),
            PathBuf::from("/x/profiles")
        );
        assert_eq!(
            profiles_dir_from(None, Some("/env".into())),
            PathBuf::from("/env")
        );
        assert_eq!(
            profiles_dir_from(None, Some("".into())),
            PathBuf::from("/etc/clsync")
        );
        assert_eq!(profiles_dir_from(None, None), PathBuf::from("/etc/clsync"));
    }
}
