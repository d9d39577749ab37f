/*!
What `clsync@NAME.service` runs: a TOML profile, or a block of the original's INI file.

Debian's clsync 0.4.5 shipped a `clsync@.service` running `clsync -K %i`: instance NAME
was block `[NAME]` of `/etc/clsync/clsync.conf`. Our package replaces that package and its
unit, and sites upgrade with instances enabled under those names; the same unit also runs
our TOML profiles (`/etc/clsync/NAME.toml`, or a template as `PROFILE@LABEL` /
`PROFILE-LABEL`). `clsync --unit-instance NAME` decides between the two, before anything
else is read, so the rule lives in one place (here) and the unit stays one line:

- a profile that answers to NAME (as `--profile NAME` would find it) runs; if
  `clsync.conf` also has a block `[NAME]`, one warning names both (the block is
  shadowed: rename one of them);
- otherwise block `[NAME]` runs, as `-H /etc/clsync/clsync.conf -K NAME` (the original's
  defaults, the command line over the block, as Debian's unit did);
- neither: one line naming both places looked in, exit status 2 (the unit's
  `RestartPreventExitStatus=2`: no restart loop).

A profile that exists but does not load is the profile's error, not a reason to fall
back to a block of the same name: the administrator meant the profile.
*/

use crate::exit::StartError;
use std::path::{Path, PathBuf};

/// The original's configuration file, which Debian's `clsync -K %i` read.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/clsync/clsync.conf";

/// What an instance name resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// The profile of that name runs; `shadowed` is the INI file whose block of the same
    /// name it hides, if there is one.
    Profile { shadowed: Option<PathBuf> },
    /// Block NAME of this INI file runs.
    Block { file: PathBuf },
}

/// Decides what instance `name` runs, from the profiles directory `profiles` and the INI
/// file `ini` (either may be missing).
pub fn choose(profiles: &Path, ini: &Path, name: &str) -> Result<Choice, StartError> {
    if profile_answers(profiles, name)? {
        // Whether a block is shadowed is only worth a warning: a broken INI file does not
        // stop the profile.
        let shadowed = blocks_of(ini).is_ok_and(|b| b.iter().any(|b| b == name));
        return Ok(Choice::Profile {
            shadowed: shadowed.then(|| ini.to_path_buf()),
        });
    }
    if blocks_of(ini)?.iter().any(|b| b == name) {
        return Ok(Choice::Block {
            file: ini.to_path_buf(),
        });
    }
    Err(StartError::Usage(format!(
        "instance {name:?}: no profile {name:?} in {} and no block [{name}] in {}",
        profiles.display(),
        ini.display()
    )))
}

/// The warning logged when a profile hides a block of the same name.
#[must_use]
pub fn shadow_warning(profiles: &Path, ini: &Path, name: &str) -> String {
    format!(
        "instance {name:?}: the profile in {} runs; block [{name}] of {} is shadowed by it (rename one of them)",
        profile_file(profiles, name).display(),
        ini.display()
    )
}

/// The file of the profile that answers to `name` (for messages), or the directory.
fn profile_file(profiles: &Path, name: &str) -> PathBuf {
    crate::profile::load_dir(profiles)
        .ok()
        .and_then(|all| {
            let (p, _) = crate::profile::split_instance(&all, name).ok()?;
            all.get(&p).map(|p| p.file.clone())
        })
        .unwrap_or_else(|| profiles.to_path_buf())
}

/// Whether a profile of `profiles` answers to `name` (`PROFILE`, `PROFILE@LABEL`,
/// `PROFILE-LABEL`), loadable or not. A missing directory has none.
fn profile_answers(profiles: &Path, name: &str) -> Result<bool, StartError> {
    let all = match crate::profile::load_dir(profiles) {
        Ok(all) => all,
        Err(crate::profile::ProfileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(false)
        }
        Err(e) => return Err(StartError::Usage(e.to_string())),
    };
    match crate::profile::split_instance(&all, name) {
        Ok((p, _)) => Ok(all.contains_key(&p)),
        Err(crate::profile::ProfileError::NoSuchProfile { .. }) => Ok(false),
        // A broken profile that may be the one meant: it answers (and its error shows).
        Err(_) => Ok(true),
    }
}

/// The block names of the INI file; none if it does not exist.
fn blocks_of(ini: &Path) -> Result<Vec<String>, StartError> {
    let text = match std::fs::read_to_string(ini) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StartError::Usage(format!("{}: {e}", ini.display()))),
    };
    let blocks = crate::legacy::parse(ini, &text).map_err(|e| StartError::Usage(e.to_string()))?;
    Ok(blocks.into_iter().map(|b| b.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(profiles: &[(&str, &str)], ini: Option<&str>) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(t.path().join("p")).expect("mkdir");
        for (n, text) in profiles {
            std::fs::write(t.path().join("p").join(n), text).expect("write");
        }
        if let Some(text) = ini {
            std::fs::write(t.path().join("clsync.conf"), text).expect("write");
        }
        t
    }

    const PLAIN: &str = "watch-dir = \"/s\"\ndestination-dir = \"/d\"\n";
    const TEMPLATE: &str = "watch-dir = \"/s/%label%\"\ndestination-dir = \"/d/%label%\"\n";
    const INI: &str = "[mirror]\nwatch-dir = /s\n[web@one]\nwatch-dir = /w\n";

    fn choose_in(t: &tempfile::TempDir, name: &str) -> Result<Choice, StartError> {
        choose(&t.path().join("p"), &t.path().join("clsync.conf"), name)
    }

    #[test]
    fn a_block_runs_when_no_profile_answers() {
        let t = setup(&[("other.toml", PLAIN)], Some(INI));
        let file = t.path().join("clsync.conf");
        assert_eq!(
            choose_in(&t, "mirror").unwrap(),
            Choice::Block { file: file.clone() }
        );
        // A block name with `@` is a block name, not a template instance.
        assert_eq!(choose_in(&t, "web@one").unwrap(), Choice::Block { file });
    }

    #[test]
    fn a_profile_wins_and_names_the_block_it_shadows() {
        let t = setup(&[("mirror.toml", PLAIN)], Some(INI));
        assert_eq!(
            choose_in(&t, "mirror").unwrap(),
            Choice::Profile {
                shadowed: Some(t.path().join("clsync.conf"))
            }
        );
        let w = shadow_warning(&t.path().join("p"), &t.path().join("clsync.conf"), "mirror");
        assert!(
            w.contains("mirror.toml") && w.contains("[mirror]") && w.contains("clsync.conf"),
            "{w}"
        );
    }

    #[test]
    fn template_instances_are_profiles() {
        let t = setup(&[("web.toml", TEMPLATE)], Some(INI));
        for name in ["web@two", "web-two"] {
            assert_eq!(
                choose_in(&t, name).unwrap(),
                Choice::Profile { shadowed: None },
                "{name}"
            );
        }
        // web@one is a block too: the profile still wins, naming the block.
        assert!(matches!(
            choose_in(&t, "web@one").unwrap(),
            Choice::Profile { shadowed: Some(_) }
        ));
    }

    #[test]
    fn a_broken_profile_is_not_bypassed_for_the_block() {
        let t = setup(&[("mirror.toml", "watch-dir = [\n")], Some(INI));
        assert!(matches!(
            choose_in(&t, "mirror").unwrap(),
            Choice::Profile { .. }
        ));
    }

    #[test]
    fn neither_is_one_usage_error_naming_both_places() {
        let t = setup(&[], None);
        let e = choose_in(&t, "nosuch").unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.exit_code(), 2, "{msg}");
        assert!(
            msg.contains("\"nosuch\"") && msg.contains("[nosuch]") && msg.contains("clsync.conf"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1, "{msg}");
        // No profiles directory at all: the same.
        let e = choose(&t.path().join("none"), &t.path().join("none.conf"), "x").unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn a_bad_ini_file_is_named() {
        let t = setup(&[], Some("[mirror\n"));
        let msg = choose_in(&t, "mirror").unwrap_err().to_string();
        assert!(msg.contains("clsync.conf:1"), "{msg}");
    }
}
