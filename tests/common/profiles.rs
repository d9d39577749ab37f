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

/// `text` (a TOML profile) with `index-dir = "ROOT/index"` first, unless it names its
/// own: a test's instances keep their index in its temp dir, not in the machine's
/// /var/lib/clsync/index/INSTANCE, which would outlive the test and which another test
/// running an instance of the same name at the same time would hold (one worker per
/// index directory).
pub fn with_own_index(root: &Path, text: &str) -> String {
    if text.contains("index-dir") {
        return text.to_string();
    }
    format!("index-dir = \"{}/index\"\n{text}", root.display())
}
