/*!
Strict modes: a file that the manager or a root worker takes instructions from (the
profiles directory and its profiles, `-H` INI files, rules files) or executes (sync
handlers, hooks, resolvers, split-brain notify programs, `.so` handlers, `rsync` and
`ssh` when configured as paths) is refused unless nobody but root (or the running user)
can change it. Otherwise a local user who can write one of them, or replace one in a
directory above it, runs code as root: sshd's `StrictModes` and the original clsync's
checks of its `.so` handlers exist for the same reason.

The rule, for the path as given (every component `lstat`ed, from `/` down) and again for
the resolved path when it differs (so that both a symlink and what it points to count):

- each component is owned by root or by the running (effective) uid;
- a symlink component is judged by its owner alone (its own mode means nothing): its
  target is judged on the resolved path;
- no component is writable by others, nor by its group unless that group is root (gid 0:
  only root is in it on a sane system, and `root:root 0775` directories are common);
- one exception, for directories above the file only (never the file itself): a
  directory owned by root (or the running uid) with the sticky bit may be writable by
  others. The sticky bit stops anyone from renaming or removing entries they do not own,
  so a safe file in `/tmp/x/` (and `/tmp/x` itself, owned by root and not writable by
  others) cannot be replaced by another user. A name that someone else created in
  `/tmp` is owned by them and refused by the first rule. sshd's `secure_path` refuses
  `/tmp` outright; OpenSSH can afford it because its files live in home directories,
  while clsync's own tests, and many sites' deployment scripts, keep handlers in
  `mktemp -d` directories. systemd's `chase()` and `fs.protected_regular` take the same
  view of sticky directories as this rule.

A missing component ends the walk without a refusal: there is nothing to run or read
yet, and whoever opens it reports that. The directories above it have been checked.

`strict-modes = false` (a profile's or INI block's key) turns the checks off for the
files the profile names; `--strict-modes=false` on the command line of `clsync` or of
`clsync-manager run` turns them off for everything, including the profiles themselves (a
key inside a file cannot vouch for that file). The two switches are process-wide flags:
the worker is one instance per process, and the manager only reads profiles.
*/

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The checks of the configuration files (profiles, their directory, `-H` files).
static CONFIG: AtomicBool = AtomicBool::new(true);
/// The checks of the files a configuration names (handlers, hooks, rules, resolvers…).
static NAMED: AtomicBool = AtomicBool::new(true);

/// `--strict-modes=false` on a command line: no checks at all in this process.
pub fn disable() {
    CONFIG.store(false, Ordering::Relaxed);
    NAMED.store(false, Ordering::Relaxed);
}

/// Whether the configuration files are checked (`--strict-modes=false` was not given):
/// the manager passes the opt-out on to its workers.
#[must_use]
pub fn config_enabled() -> bool {
    CONFIG.load(Ordering::Relaxed)
}

/// The effective `strict-modes` of the configuration: off by the profile's key turns
/// off the checks of the files it names; the command line's opt-out stays in force.
pub fn set_named(enabled: bool) {
    NAMED.store(enabled && config_enabled(), Ordering::Relaxed);
}

/// Whether the files a configuration names are checked.
#[must_use]
pub fn named_enabled() -> bool {
    NAMED.load(Ordering::Relaxed)
}

/// Checks a configuration file (profile, profiles directory, `-H` file) unless
/// `--strict-modes=false`; `what` names it in the refusal ("profile").
pub fn check_config(path: &Path, what: &str) -> Result<(), String> {
    if !config_enabled() {
        return Ok(());
    }
    check(path, what, "--strict-modes=false on the command line")
}

/// Checks a file the configuration names (a program it runs, a rules file) unless
/// `strict-modes = false`; `what` names it in the refusal ("sync handler").
pub fn check_named(path: &Path, what: &str) -> Result<(), String> {
    if !named_enabled() {
        return Ok(());
    }
    check(path, what, "strict-modes = false")
}

/// Checks a file a configuration names when its `strict-modes` is on (`on`) and the
/// command line did not turn the checks off: for the checks made while a configuration
/// is loaded, before [`set_named`] applies to it.
pub fn check_named_if(on: bool, path: &Path, what: &str) -> Result<(), String> {
    if !on || !config_enabled() {
        return Ok(());
    }
    check(path, what, "strict-modes = false")
}

/// Checks a program about to run when it is given as a path (with a `/`), unless
/// `strict-modes = false`. A bare name is looked up in `$PATH`, which is the
/// environment root gave the process, not something the configuration names.
pub fn check_program(program: &Path, what: &str) -> Result<(), String> {
    if is_path(program) {
        check_named(program, what)
    } else {
        Ok(())
    }
}

/// [`check_program`] for a program run in `dir`: a relative path is `dir`'s.
pub fn check_program_in(dir: &Path, program: &Path, what: &str) -> Result<(), String> {
    if is_path(program) {
        check_named(&dir.join(program), what)
    } else {
        Ok(())
    }
}

/// Whether `program` is a path rather than a name looked up in `$PATH`.
#[must_use]
pub fn is_path(program: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    program.as_os_str().as_bytes().contains(&b'/')
}

/// Checks `path` whatever the switches say; the refusal is one line naming the file,
/// the component at fault with its owner and mode, the command that fixes it and
/// `opt_out`.
pub fn check(path: &Path, what: &str, opt_out: &str) -> Result<(), String> {
    report(find_unsafe(path, false), path, what, opt_out)
}

/// The directories above `path` alone (as given and resolved), unless `strict-modes =
/// false`: for a `.so` handler, whose own owner and mode follow the original's rules.
pub fn check_ancestors(path: &Path, what: &str) -> Result<(), String> {
    if !named_enabled() {
        return Ok(());
    }
    report(find_unsafe(path, true), path, what, "strict-modes = false")
}

fn report(
    found: std::io::Result<Option<Unsafe>>,
    path: &Path,
    what: &str,
    opt_out: &str,
) -> Result<(), String> {
    let Some(f) = found.map_err(|e| {
        format!(
            "refusing {what} {}: cannot check who may change it: {e}",
            path.display()
        )
    })?
    else {
        return Ok(());
    };
    Err(f.message(path, what, opt_out))
}

/// A component that someone besides root and the running user can change.
#[derive(Debug, PartialEq)]
pub(crate) struct Unsafe {
    pub(crate) component: PathBuf,
    pub(crate) uid: u32,
    pub(crate) mode: u32,
    pub(crate) symlink: bool,
    pub(crate) bad_owner: bool,
    pub(crate) bad_mode: bool,
}

impl Unsafe {
    fn message(&self, path: &Path, what: &str, opt_out: &str) -> String {
        let c = self.component.display();
        let name = nix::unistd::User::from_uid(self.uid.into())
            .ok()
            .flatten()
            .map_or_else(|| "no such user".to_string(), |u| u.name);
        let kind = if self.symlink {
            "symlink"
        } else if self.component.as_path() == path {
            ""
        } else {
            "directory"
        };
        let at = if kind.is_empty() {
            String::new()
        } else {
            format!("{kind} {c} is ")
        };
        let why = match (self.bad_owner, self.bad_mode) {
            (true, true) => "not owned by root and writable by others",
            (true, false) => "not owned by root",
            _ if self.mode & 0o002 != 0 => "writable by others",
            _ => "writable by its group",
        };
        let euid = nix::unistd::geteuid().as_raw();
        let owner = if euid == 0 {
            "root:".to_string()
        } else {
            euid.to_string()
        };
        let mut fix = Vec::new();
        if self.bad_owner {
            let h = if self.symlink { "-h " } else { "" };
            fix.push(format!("chown {h}{owner} {c}"));
        }
        if self.bad_mode {
            fix.push(format!("chmod go-w {c}"));
        }
        format!(
            "refusing {what} {}: {at}owned by uid {} ({name}), mode {:04o}: {why}, so another user could make a root process run what they want; fix: {} (or {opt_out})",
            path.display(),
            self.uid,
            self.mode & 0o7777,
            fix.join(" && "),
        )
    }
}

/// The first component of `path` (as given, then resolved) that fails the rule; `None`
/// when every one passes or the file does not exist yet. `above`: the directories above
/// the file only, not the file itself.
pub(crate) fn find_unsafe(path: &Path, above: bool) -> std::io::Result<Option<Unsafe>> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    if let Some(u) = walk(&abs, above)? {
        return Ok(Some(u));
    }
    match abs.canonicalize() {
        Ok(real) if real != abs => walk(&real, above),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `lstat`s every prefix of the absolute `path`, from `/` down (`above`: but `path`).
fn walk(path: &Path, above: bool) -> std::io::Result<Option<Unsafe>> {
    let euid = nix::unistd::geteuid().as_raw();
    let mut cur = PathBuf::new();
    let mut parts: Vec<Component> = path.components().collect();
    if above {
        parts.pop();
    }
    let file = path.components().count();
    for (i, part) in parts.iter().enumerate() {
        cur.push(part);
        if matches!(part, Component::ParentDir | Component::CurDir) {
            // `..` is judged on the resolved path.
            continue;
        }
        let md = match std::fs::symlink_metadata(&cur) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let last = i + 1 == file;
        let symlink = md.file_type().is_symlink();
        let (uid, mode) = (md.uid(), md.mode());
        let bad_owner = uid != 0 && uid != euid;
        let sticky_dir = md.is_dir() && mode & 0o1000 != 0 && !last;
        let bad_mode =
            !symlink && !sticky_dir && (mode & 0o002 != 0 || (mode & 0o020 != 0 && md.gid() != 0));
        if bad_owner || bad_mode {
            return Ok(Some(Unsafe {
                component: cur,
                uid,
                mode,
                symlink,
                bad_owner,
                bad_mode,
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const NOBODY: u32 = 65534;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A private directory in the temp dir, and a safe 0755 file in it.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o755);
        let file = dir.join("run.sh");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        chmod(&file, 0o755);
        (t, dir, file)
    }

    #[test]
    fn a_safe_file_in_a_private_dir_under_sticky_tmp_passes() {
        let (_t, _dir, file) = setup();
        assert_eq!(find_unsafe(&file, false).unwrap(), None);
        assert!(check(&file, "sync handler", "x").is_ok());
    }

    #[test]
    fn a_file_writable_by_others_is_refused_with_owner_mode_and_fix() {
        let (_t, _dir, file) = setup();
        chmod(&file, 0o757);
        let u = find_unsafe(&file, false).unwrap().unwrap();
        assert_eq!(u.component, file);
        assert!(u.bad_mode && !u.bad_owner);
        let msg = check(&file, "sync handler", "strict-modes = false").unwrap_err();
        assert!(msg.starts_with(&format!("refusing sync handler {}: ", file.display())));
        assert!(msg.contains("mode 0757"), "{msg}");
        assert!(
            msg.contains(&format!("chmod go-w {}", file.display())),
            "{msg}"
        );
        assert!(msg.contains("(or strict-modes = false)"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn group_write_is_refused_unless_the_group_is_root() {
        let (_t, _dir, file) = setup();
        chmod(&file, 0o775);
        let gid = std::fs::metadata(&file).unwrap().gid();
        let refused = find_unsafe(&file, false).unwrap().is_some();
        assert_eq!(refused, gid != 0);
        if root() {
            std::os::unix::fs::chown(&file, None, Some(NOBODY)).unwrap();
            assert!(find_unsafe(&file, false).unwrap().is_some());
            std::os::unix::fs::chown(&file, None, Some(0)).unwrap();
            assert_eq!(find_unsafe(&file, false).unwrap(), None);
        }
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        if !root() {
            return;
        }
        let (_t, _dir, file) = setup();
        std::os::unix::fs::chown(&file, Some(NOBODY), None).unwrap();
        let msg = check(&file, "exit hook", "o").unwrap_err();
        assert!(
            msg.contains("owned by uid 65534 (nobody), mode 0755"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("chown root: {}", file.display())),
            "{msg}"
        );
        assert!(!msg.contains("chmod"), "{msg}");
    }

    #[test]
    fn a_directory_above_is_checked() {
        let (_t, dir, file) = setup();
        chmod(&dir, 0o777);
        let msg = check(&file, "profile", "o").unwrap_err();
        assert!(
            msg.contains(&format!("directory {} is owned by uid", dir.display())),
            "{msg}"
        );
        // Sticky is accepted for a directory above the file, never for the file itself.
        chmod(&dir, 0o1777);
        assert_eq!(find_unsafe(&file, false).unwrap(), None);
        assert!(find_unsafe(&dir, false).unwrap().is_some());
        if root() {
            std::os::unix::fs::chown(&dir, Some(NOBODY), None).unwrap();
            assert!(find_unsafe(&file, false).unwrap().is_some());
        }
    }

    #[test]
    fn a_symlink_counts_by_its_owner_and_its_target() {
        let (t, dir, file) = setup();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(find_unsafe(&link, false).unwrap(), None);
        // The target's directory is judged on the resolved path.
        chmod(&dir, 0o777);
        let u = find_unsafe(&link, false).unwrap().unwrap();
        assert_eq!(u.component, dir);
        chmod(&dir, 0o755);
        if root() {
            nix::unistd::fchownat(
                None,
                &link,
                Some(nix::unistd::Uid::from_raw(NOBODY)),
                None,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .unwrap();
            let msg = check(&link, "rules file", "o").unwrap_err();
            assert!(msg.contains(&format!("symlink {} is owned by uid 65534", link.display())));
            assert!(msg.contains(&format!("chown -h root: {}", link.display())));
        }
    }

    #[test]
    fn above_checks_the_directories_but_not_the_file() {
        let (_t, dir, file) = setup();
        chmod(&file, 0o777);
        assert_eq!(find_unsafe(&file, true).unwrap(), None);
        chmod(&dir, 0o777);
        assert_eq!(find_unsafe(&file, true).unwrap().unwrap().component, dir);
        // Sticky is fine for the directory right above the file.
        chmod(&dir, 0o1777);
        assert_eq!(find_unsafe(&file, true).unwrap(), None);
    }

    #[test]
    fn a_missing_file_is_left_to_whoever_opens_it() {
        let (_t, dir, _file) = setup();
        assert_eq!(find_unsafe(&dir.join("nope/x"), false).unwrap(), None);
        chmod(&dir, 0o777);
        assert!(find_unsafe(&dir.join("nope"), false).unwrap().is_some());
    }

    #[test]
    fn relative_paths_are_taken_from_the_current_directory() {
        // The crate's directory is the test's current directory, owned by root here.
        let r = find_unsafe(Path::new("Cargo.toml"), false).unwrap();
        let abs = std::env::current_dir().unwrap().join("Cargo.toml");
        assert_eq!(r, find_unsafe(&abs, false).unwrap());
    }
}
