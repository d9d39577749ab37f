/*!
A profiles directory: one profile per `*.toml` file, named by its stem, a file that does
not load kept as a broken profile with its error (so one bad file does not stop the
others), and inheritance (`inherits`, the child's set values winning field by field,
cycles and missing or broken parents named). The second stage of a profile: files in,
one profile's merged values out; substitution comes next ([`super::template`]).
*/

use super::{parse_values, Profile, ProfileError, ProfileValues, Profiles};
use std::path::{Path, PathBuf};

/// The default profiles directory.
pub const DEFAULT_PROFILES_DIR: &str = "/etc/clsync";

/// The environment variable that overrides [`DEFAULT_PROFILES_DIR`].
pub const PROFILES_DIR_ENV: &str = "CLSYNC_PROFILES_DIR";

/// The profiles directory: `cli`, else `$CLSYNC_PROFILES_DIR` (if not empty), else
/// `/etc/clsync`.
#[must_use]
pub fn profiles_dir(cli: Option<&Path>) -> PathBuf {
    profiles_dir_from(cli, std::env::var_os(PROFILES_DIR_ENV))
}

pub(super) fn profiles_dir_from(cli: Option<&Path>, env: Option<std::ffi::OsString>) -> PathBuf {
    if let Some(p) = cli {
        return p.to_path_buf();
    }
    match env {
        Some(e) if !e.is_empty() => PathBuf::from(e),
        _ => PathBuf::from(DEFAULT_PROFILES_DIR),
    }
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

/// Loads one profile file; its name is the file stem. A file that someone besides root
/// (or the running user) may change, or in such a directory, is refused
/// ([`crate::strict`]) before it is read.
pub fn load_file(path: impl AsRef<Path>) -> Result<Profile, ProfileError> {
    let path = path.as_ref();
    crate::strict::check_config(path, "profile")
        .map_err(|message| ProfileError::Unsafe { message })?;
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
    // A file refused by the strict modes is read for `autostart` alone: the worst its
    // writer can do with it is show a failed instance.
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
pub(super) fn dir_of(profiles: &Profiles) -> PathBuf {
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
