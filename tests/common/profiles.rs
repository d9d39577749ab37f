//! Profile fixtures shared by the test files: the profile set a single profile text is
//! resolved in (the parser tests of tests/it/no_panic.rs and the sample values of
//! tests/it/docs.rs), and the mirror profile that the manager and profile tests write.

use clsync::profile::{Profile, ProfileValues, Profiles};
use std::path::{Path, PathBuf};

/// Profile `p` (`values`, read from `file`) beside an empty `base` in
/// /etc/clsync/base.toml, so that `inherits = "base"` resolves.
pub fn p_and_base(file: &Path, values: ProfileValues) -> Profiles {
    let mut profiles = Profiles::new();
    profiles.insert(
        "p".into(),
        Profile {
            name: "p".into(),
            file: file.to_path_buf(),
            values,
            broken: None,
        },
    );
    profiles.insert(
        "base".into(),
        Profile {
            name: "base".into(),
            file: PathBuf::from("/etc/clsync/base.toml"),
            values: Default::default(),
            broken: None,
        },
    );
    profiles
}

/// A profile that mirrors `src` to `dst` with 0.1 s delays, then the lines `extra`.
pub fn mirror(src: &Path, dst: &Path, extra: &str) -> String {
    format!(
        "watch-dir = \"{}\"\ndestination-dir = \"{}\"\ndelay-collect = 0.1\ndelay-sync = 0.1\n{extra}",
        src.display(),
        dst.display()
    )
}
