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

Its parts, in the order a profile goes through them: `schema.rs` is the file format
(the keys, [`ProfileValues`], the TOML parser and its one-line errors), `load.rs` reads a
profiles directory and applies inheritance, `template.rs` does the substitutions and
turns a name (`PROFILE`, `PROFILE@LABEL`, `PROFILE-LABEL`) into a [`Resolved`] instance.
This file holds what they share: the loaded [`Profile`] and the [`ProfileError`]s.
*/

mod load;
mod schema;
mod template;

pub use load::{
    inherited, load_dir, load_file, profiles_dir, DEFAULT_PROFILES_DIR, PROFILES_DIR_ENV,
};
pub(crate) use schema::edit_distance;
pub use schema::{keys, parse_values, ProfileValues, KEYS, RESTART_POLICIES, THREADING_MODES};
pub(crate) use template::split_instance;
pub(crate) use template::RUNTIME_PLACEHOLDERS;
pub use template::{check_label, is_template_profile, resolve};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// Someone besides root (or the running user) may change the file or a directory
    /// above it ([`crate::strict`]).
    #[error("{message}")]
    Unsafe { message: String },
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
    #[must_use]
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

#[cfg(test)]
mod tests;
