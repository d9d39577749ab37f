/*!
How the programs create files: never through a symlink they did not make, never at a
name someone else could have prepared.

Why: the worker and the manager run as root and write into directories that may be
shared (`/run`, a metrics textfile directory owned by prometheus, a dump directory given
on the command line). A predictable temporary name such as `STATUS.tmp.PID` opened with
`O_TRUNC` lets any local user plant a symlink there and have root overwrite the file it
points to. So every file is made one of two ways:

- [`write_atomic`]: a temporary file with a random name in the final file's directory,
  created with `O_EXCL` (which never follows a symlink at the final component), given
  its mode with `fchmod`, fsync'd, then renamed onto the final name. `rename` replaces
  a symlink planted at the final name; it does not write through it.
- [`create_new`]: `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC` at a name the caller chose
  (list files, imported profiles): an existing file or symlink there is an error, not
  a target.

Directories the programs write into are checked with [`check_dir`] at start: one that
someone else may write to (a group or other write bit, sticky included; group write is
allowed for the root group) or that someone else owns is refused, because a file in it
could be swapped between its writing and its use.

Renames inside a tree someone else fills (the local destination mirrors a source any
user may write to) go through [`rename_beneath`]: each parent is resolved below the tree
without following a symlink, so a symlink mirrored into the destination cannot carry a
rename out of it.
*/

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The identity of a file: device and inode.
pub type FileId = (u64, u64);

/// Writes `data` to `path` crash-safe and without following symlinks: a new temporary
/// file with a random name beside it (`O_EXCL`), mode `mode` (not subject to the umask),
/// fsync, rename onto `path`, fsync of the directory. Returns the identity of the file
/// now at `path`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<FileId> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    let f = tmp.as_file_mut();
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()?;
    let m = f.metadata()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()?;
    Ok((m.dev(), m.ino()))
}

/// Creates `path` as a new file, mode exactly `mode` (whatever the umask), open for writing:
/// `O_EXCL|O_NOFOLLOW|O_CLOEXEC`, so an existing file or symlink there is an error.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o700)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // The mode asked for, whatever the umask (a list another user's handler must read
    // is 0644 under umask 077 too); through the descriptor, never the name.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(f)
}

/// Reads `path` unless it is a symlink (`O_NOFOLLOW`); returns its text and identity.
pub fn read_nofollow(path: &Path) -> io::Result<(String, FileId)> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let m = f.metadata()?;
    let mut text = String::new();
    io::Read::read_to_string(&mut f, &mut text)?;
    Ok((text, (m.dev(), m.ino())))
}

/// The identity of `path` itself (a symlink is not followed).
pub fn id_of(path: &Path) -> io::Result<FileId> {
    let m = std::fs::symlink_metadata(path)?;
    Ok((m.dev(), m.ino()))
}

fn user(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| format!("{uid} ({})", u.name))
}

fn group(gid: u32) -> String {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| format!("{gid} ({})", g.name))
}

/// Checks that only root, this process's effective uid or `also` (the uid the worker
/// drops to) can change what is in `dir`: it (and a symlink naming it) is owned by one of
/// them, and has no write bit for others, nor for the group unless the group is root.
/// A sticky bit does not help (a name in a sticky directory can still be taken first).
/// The error is one line naming the directory (as `what`), its owner, group and mode,
/// and the commands that fix it.
pub fn check_dir(dir: &Path, what: &str, also: Option<u32>) -> Result<(), String> {
    let euid = nix::unistd::geteuid().as_raw();
    let trusted = |uid: u32| uid == 0 || uid == euid || Some(uid) == also;
    let fix = format!(
        "use a private directory (chown root:root {d} && chmod 0700 {d})",
        d = dir.display()
    );
    let l = std::fs::symlink_metadata(dir).map_err(|e| format!("{what} {}: {e}", dir.display()))?;
    if l.file_type().is_symlink() && !trusted(l.uid()) {
        return Err(format!(
            "refusing {what} {}: a symlink owned by uid {}; {fix}",
            dir.display(),
            user(l.uid())
        ));
    }
    let m = std::fs::metadata(dir).map_err(|e| format!("{what} {}: {e}", dir.display()))?;
    if !m.is_dir() {
        return Err(format!("{what} {}: not a directory", dir.display()));
    }
    let mode = m.mode() & 0o7777;
    let others_write = mode & 0o002 != 0 || (mode & 0o020 != 0 && m.gid() != 0);
    if others_write || !trusted(m.uid()) {
        return Err(format!(
            "refusing {what} {}: writable by others (owned by uid {}, group {}, mode \
             {mode:04o}): they could replace the files written there; {fix}",
            dir.display(),
            user(m.uid()),
            group(m.gid())
        ));
    }
    Ok(())
}

/// Creates `dir` (and missing parents) with `mode` if it does not exist, then
/// [`check_dir`]s it.
pub fn ensure_dir(dir: &Path, what: &str, mode: u32, also: Option<u32>) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .map_err(|e| format!("{what} {}: cannot create it: {e}", dir.display()))?;
    }
    check_dir(dir, what, also)
}

/// `root` opened as a directory (`O_PATH`) for [`rename_beneath`]: once for a batch of
/// renames.
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let dir = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(dir) })
}

/// Renames `from` to `to`, both relative to `root` (a directory from [`open_root`]; the
/// bytes of relative paths), with every directory on the way resolved below `root` and
/// no symlink followed: a component that is a symlink (a mirrored one, say `d -> /etc`)
/// fails the rename with `ELOOP` or `EXDEV` instead of renaming `/etc/passwd`. The last
/// components are renamed as they are (a symlink there is moved, not followed).
pub fn rename_beneath(root: &OwnedFd, from: &[u8], to: &[u8]) -> io::Result<()> {
    let (from_dir, from_name) = parent_beneath(root, from)?;
    let (to_dir, to_name) = parent_beneath(root, to)?;
    nix::fcntl::renameat(
        Some(from_dir.as_raw_fd()),
        from_name,
        Some(to_dir.as_raw_fd()),
        to_name,
    )?;
    Ok(())
}

/// The directory holding `rel` below `root` (opened `O_PATH`, no symlink followed on
/// the way) and the last component's name.
fn parent_beneath<'a>(root: &OwnedFd, rel: &'a [u8]) -> io::Result<(OwnedFd, &'a std::ffi::OsStr)> {
    use std::os::unix::ffi::OsStrExt;
    let rel = rel.strip_suffix(b"/").unwrap_or(rel);
    let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    if name.is_empty() || name == b"." || name == b".." || rel.starts_with(b"/") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a relative path to a name",
        ));
    }
    let parent = if parent.is_empty() { &b"."[..] } else { parent };
    let fd = open_beneath(root, std::ffi::OsStr::from_bytes(parent))?;
    Ok((fd, std::ffi::OsStr::from_bytes(name)))
}

/// `openat2(root, rel, O_PATH|O_DIRECTORY, RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`; on a
/// kernel without openat2 (before 5.6), a walk of `openat(O_NOFOLLOW)` one component at
/// a time that refuses `..`.
fn open_beneath(root: &OwnedFd, rel: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    use std::os::unix::ffi::OsStrExt;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    match nix::fcntl::openat2(root.as_raw_fd(), rel, how) {
        // SAFETY: openat2 just returned this descriptor and nothing else owns it.
        Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(nix::errno::Errno::ENOSYS) => {}
        Err(e) => return Err(e.into()),
    }
    let mut cur = root.try_clone()?;
    for part in rel.as_bytes().split(|&b| b == b'/') {
        if part.is_empty() || part == b"." {
            continue;
        }
        if part == b".." {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        let fd = nix::fcntl::openat(
            Some(cur.as_raw_fd()),
            std::ffi::OsStr::from_bytes(part),
            flags | OFlag::O_NOFOLLOW,
            nix::sys::stat::Mode::empty(),
        )?;
        // SAFETY: openat just returned this descriptor and nothing else owns it.
        cur = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_beneath_moves_inside_and_refuses_links_and_dot_dot() {
        let t = tempfile::tempdir().unwrap();
        let (root, out) = (t.path().join("root"), t.path().join("out"));
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir(&out).unwrap();
        std::fs::write(root.join("d/f"), b"x").unwrap();
        std::fs::write(out.join("f"), b"outside").unwrap();
        std::os::unix::fs::symlink(&out, root.join("link")).unwrap();
        let fd = open_root(&root).unwrap();
        rename_beneath(&fd, b"d/f", b"d/g").unwrap();
        assert!(root.join("d/g").exists() && !root.join("d/f").exists());
        for (from, to) in [
            (&b"link/f"[..], &b"link/g"[..]),
            (b"d/g", b"link/g"),
            (b"../out/f", b"../out/g"),
            (b"/d/g", b"d/h"),
            (b"d/..", b"e"),
        ] {
            assert!(
                rename_beneath(&fd, from, to).is_err(),
                "{} -> {}",
                from.escape_ascii(),
                to.escape_ascii()
            );
        }
        assert!(out.join("f").exists() && !out.join("g").exists());
        assert!(root.join("d/g").exists());
    }

    #[test]
    fn write_atomic_replaces_a_symlink_and_leaves_its_target() {
        let t = tempfile::tempdir().unwrap();
        let canary = t.path().join("canary");
        std::fs::write(&canary, b"canary").unwrap();
        let f = t.path().join("status");
        std::os::unix::fs::symlink(&canary, &f).unwrap();
        write_atomic(&f, b"running\n", 0o640).unwrap();
        assert_eq!(std::fs::read(&canary).unwrap(), b"canary");
        let m = std::fs::symlink_metadata(&f).unwrap();
        assert!(m.is_file());
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read(&f).unwrap(), b"running\n");
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 2);
    }

    #[test]
    fn create_new_refuses_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let canary = t.path().join("canary");
        std::fs::write(&canary, b"canary").unwrap();
        let f = t.path().join("list");
        std::os::unix::fs::symlink(&canary, &f).unwrap();
        assert!(create_new(&f, 0o600).is_err());
        assert_eq!(std::fs::read(&canary).unwrap(), b"canary");
    }

    #[test]
    fn check_dir_refuses_a_shared_directory() {
        let t = tempfile::tempdir().unwrap();
        check_dir(t.path(), "dump-dir", None).unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = check_dir(t.path(), "dump-dir", None).unwrap_err();
        assert!(e.contains("mode 1777"), "{e}");
        assert!(e.contains(&t.path().display().to_string()), "{e}");
    }
}
