/*!
The checks made against the file system before anything is touched, and again before
each sync: the source, the destinations (by identity, not by path string), the sync
handler and the lists directory.

They come after [`super::build`] has made the `Config` (the values are consistent; here
is whether the places they name are safe to use): a mistake costs an error message with
its exit code, never a deleted file.
*/

use super::{Config, StartError};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Makes sure a lists directory is safe to write lists into: created 0700 if missing;
/// refused if someone else owns it or others may write to it, sticky or not (a list could
/// be swapped under rsync, or a name taken first): [`crate::safe_file::check_dir`].
/// `uid` is the user the worker drops to (it writes the lists, so may own the directory).
pub fn check_lists_dir(dir: &Path, uid: Option<u32>) -> Result<(), StartError> {
    crate::safe_file::ensure_dir(dir, "lists-dir", 0o700, uid).map_err(StartError::Path)
}

/// Finds an executable: a path with a slash is taken as is, a bare name in `$PATH`.
#[must_use]
pub fn find_executable(prog: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.components().count() > 1 || prog.is_absolute() {
        return is_exec(prog).then(|| prog.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| is_exec(p))
}

/// Canonicalizes a path that may not exist yet: the longest existing prefix is resolved,
/// the rest appended (`..` in the missing part is refused).
pub(crate) fn canonical_maybe_missing(p: &Path) -> Result<PathBuf, String> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot read the current directory: {e}"))?
            .join(p)
    };
    let mut existing = abs.as_path();
    let mut tail = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(c) => {
                let mut out = c;
                for part in tail.iter().rev() {
                    out.push(part);
                }
                return Ok(out);
            }
            Err(_) => {
                if existing.components().next_back() == Some(Component::ParentDir) {
                    return Err(format!("{}: '..' below a missing directory", p.display()));
                }
                let name = existing
                    .file_name()
                    .ok_or_else(|| format!("{}: no existing parent directory", p.display()))?;
                tail.push(name.to_os_string());
                existing = existing.parent().unwrap_or(Path::new("/"));
            }
        }
    }
}

/// Where a sync handler named by a relative path with a slash (`./sync.sh`, `bin/sync`)
/// is: in the current directory at start when it is there, as the original takes it (it
/// resolves the path before it moves to the watch directory), as `lists-dir` is taken;
/// else in the watch directory `src`, where the handler runs. A bare name is looked up in
/// `$PATH` and an absolute path is itself: both are returned as they are.
#[must_use]
pub fn handler_path(h: &Path, src: &Path) -> PathBuf {
    if h.is_absolute() || h.components().count() < 2 {
        return h.to_path_buf();
    }
    if let Ok(here) = std::env::current_dir().map(|d| d.join(h)) {
        if here.symlink_metadata().is_ok() {
            return here;
        }
    }
    src.join(h)
}

/// Finds the sync handler: an executable, or the shared object of the so modes.
fn find_handler(cfg: &Config, src: &Path) -> Result<PathBuf, StartError> {
    let h = &cfg.rsync;
    if cfg.mode.is_so() {
        return match std::fs::metadata(h) {
            Ok(m) if m.is_file() => Ok(h.clone()),
            Ok(_) => Err(StartError::Handler(format!(
                "sync handler {}: not a regular file",
                h.display()
            ))),
            Err(e) => Err(StartError::Handler(format!(
                "sync handler {}: {e}",
                h.display()
            ))),
        };
    }
    let found = handler_path(h, src);
    find_executable(&found).ok_or_else(|| {
        let cwd = std::env::current_dir().unwrap_or_default();
        StartError::Handler(format!(
            "sync handler {}: not found or not executable{}",
            h.display(),
            if h.as_os_str() == "rsync" {
                " in $PATH (install rsync: apt-get install rsync)".to_string()
            } else if h.components().count() == 1 {
                " in $PATH".to_string()
            } else if h.is_relative() {
                format!(
                    " (looked for in the current directory {} and in the watch directory {})",
                    cwd.display(),
                    src.display()
                )
            } else {
                String::new()
            }
        ))
    })
}

/// The strict modes ([`crate::strict`]) for every file the configuration names that a
/// root worker reads instructions from or runs: the rules file, the sync handler (a
/// shared object is checked where it is loaded, with the original's rules), the hooks,
/// the failover pair's resolver and notify program, and `ssh` when given as a path.
pub fn check_strict(cfg: &Config) -> Result<(), StartError> {
    let on = cfg.strict_modes;
    // `dir`: where the program runs (a relative path is taken from there).
    let check_in = |dir: &Path, p: &Path, what: &str| {
        if crate::strict::is_path(p) {
            crate::strict::check_named_if(on, &dir.join(p), what).map_err(StartError::Usage)
        } else {
            Ok(())
        }
    };
    // The handler and the hooks run in the watch directory, the others here.
    let check = |p: &Path, what: &str| check_in(Path::new(""), p, what);
    let in_src = |p: &Path, what: &str| check_in(&cfg.src, p, what);
    if let Some(f) = &cfg.rules_file {
        crate::strict::check_named_if(on, f, "rules file").map_err(StartError::Usage)?;
    }
    if !cfg.mode.is_so() {
        in_src(&handler_path(&cfg.rsync, &cfg.src), "sync handler")?;
    }
    for (hook, what) in [
        (&cfg.pre_exit_hook, "pre-exit hook"),
        (&cfg.exit_hook, "exit hook"),
    ] {
        if let Some(h) = hook {
            in_src(h, what)?;
        }
    }
    if let Some(p) = &cfg.pair {
        if let Some(r) = &p.resolver {
            check(r, "resolver")?;
        }
        if let Some(n) = &p.notify {
            check(n, "split-brain notify program")?;
        }
    }
    if let Some(ssh) = &cfg.ssh.command {
        check(Path::new(ssh), "ssh command")?;
    }
    Ok(())
}

/// Checks source, destinations and the handler, and creates missing local destination
/// directories. Returns the canonical source, the destinations (local ones canonical,
/// remote ones as given; the first is `dst`) and the handler. Nothing else is touched.
pub fn preflight(cfg: &Config) -> Result<(PathBuf, Vec<PathBuf>, PathBuf), StartError> {
    let src = match std::fs::metadata(&cfg.src) {
        Ok(m) if m.is_dir() => cfg
            .src
            .canonicalize()
            .map_err(|e| StartError::Path(format!("source {}: {e}", cfg.src.display())))?,
        Ok(_) => {
            return Err(StartError::Path(format!(
                "source {}: not a directory",
                cfg.src.display()
            )))
        }
        Err(e) => {
            return Err(StartError::Path(format!(
                "source {}: {e}",
                cfg.src.display()
            )))
        }
    };
    cfg.check_mode().map_err(StartError::Usage)?;
    check_strict(cfg)?;
    let handler = find_handler(cfg, &src)?;
    if cfg.mode != crate::sync::handler::Mode::RsyncDirect || cfg.handler_args.is_some() {
        // The handler decides what the destination is (a host, a path, nothing): it is
        // passed on as given, never created or deleted here.
        return Ok((src, vec![cfg.dst.clone()], handler));
    }
    let mut dsts = Vec::new();
    let empty_src = dir_is_empty(&src);
    for given in std::iter::once(&cfg.dst).chain(&cfg.more_dsts) {
        let d = match crate::dest::Dest::parse(given.as_os_str()) {
            crate::dest::Dest::Local(_) => check_local_dst(&src, given)?,
            _ => given.clone(),
        };
        if empty_src && !cfg.allow_empty_source && !dst_is_empty(&d) {
            return Err(StartError::Path(empty_source_message(&src, given)));
        }
        dsts.push(d);
    }
    Ok((src, dsts, handler))
}

/// Why a sync from an empty source is refused.
#[must_use]
pub fn empty_source_message(src: &Path, dst: &Path) -> String {
    format!(
        "the watch directory {} is empty but the destination {} is not (an unmounted disk?): not syncing, so nothing is deleted there; set allow-empty-source (--allow-empty-source) to mirror an empty tree",
        src.display(),
        dst.display()
    )
}

/// Whether a directory has no entries (an unreadable one counts as not empty).
#[must_use]
pub fn dir_is_empty(d: &Path) -> bool {
    std::fs::read_dir(d).is_ok_and(|mut rd| rd.next().is_none())
}

/// Whether a destination holds nothing: a local directory that is empty or missing; a
/// remote one is not known to be empty.
#[must_use]
pub fn dst_is_empty(d: &Path) -> bool {
    match crate::dest::Dest::parse(d.as_os_str()) {
        crate::dest::Dest::Local(p) => !p.exists() || dir_is_empty(&p),
        _ => false,
    }
}

/// A local destination: canonical, not the source, not inside it nor around it, a
/// directory (created if missing).
fn check_local_dst(src: &Path, given: &Path) -> Result<PathBuf, StartError> {
    let dst =
        canonical_maybe_missing(given).map_err(|e| StartError::Path(format!("destination {e}")))?;
    if dst == src {
        return Err(StartError::Path(format!(
            "destination {} is the source directory itself",
            given.display()
        )));
    }
    if dst.starts_with(src) {
        return Err(StartError::Path(format!(
            "destination {} is inside the source {}: it would sync into itself",
            given.display(),
            src.display()
        )));
    }
    if src.starts_with(&dst) {
        return Err(StartError::Path(format!(
            "source {} is inside the destination {}: --delete would remove everything else there",
            src.display(),
            dst.display()
        )));
    }
    check_overlap(src, &dst).map_err(StartError::Path)?;
    match std::fs::metadata(&dst) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(StartError::Path(format!(
                "destination {}: not a directory",
                given.display()
            )))
        }
        Err(_) => {
            creatable_below(given, &dst).map_err(|e| {
                StartError::Path(format!(
                    "destination {} does not exist, and {e}; create it yourself (mkdir -p {})",
                    given.display(),
                    given.display()
                ))
            })?;
            std::fs::create_dir_all(&dst).map_err(|e| {
                StartError::Path(format!(
                    "destination {}: cannot create it: {e}",
                    given.display()
                ))
            })?;
        }
    }
    Ok(dst)
}

/// Whether the missing directories of `dst` (the canonical form of `given`) may be made
/// by root: no existing component of `given` is a symlink someone else owns, and the
/// nearest existing directory above `dst` is root's (or the running user's) and closed to
/// others. Below a directory another user may write to (`/tmp`, a user's home), that
/// user could put a symlink where a missing component is about to be made, and root
/// would create the tree and then sync into wherever it points.
fn creatable_below(given: &Path, dst: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    if let Ok(abs) = std::path::absolute(given) {
        for p in abs.ancestors() {
            if let Ok(m) = p.symlink_metadata() {
                if m.file_type().is_symlink() && m.uid() != 0 && m.uid() != me {
                    return Err(format!(
                        "{} on the way is a symlink owned by uid {}, who could point it anywhere",
                        p.display(),
                        m.uid()
                    ));
                }
            }
        }
    }
    let Some(existing) = dst
        .ancestors()
        .skip(1)
        .find(|a| a.symlink_metadata().is_ok())
    else {
        return Ok(());
    };
    crate::safe_file::check_dir(existing, "directory", None).map_err(|e| {
        // check_dir's line starts with "refusing directory X: "; keep its reason.
        let why = e.split_once(": ").map_or(e.as_str(), |(_, r)| r);
        let why = why.split_once("; use a private").map_or(why, |(w, _)| w);
        format!(
            "{} above it is not safe to create it in: {why}",
            existing.display()
        )
    })
}

/// The (device, inode) of a directory, following symlinks.
fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Refuses a local destination that is the source, inside it or around it under any
/// name, by identity rather than by path: the (device, inode) of the destination and of
/// each of its ancestors against those of the source and its ancestors (after resolving
/// symlinks), and, for bind mounts of a directory below the source (whose ancestors never
/// lead back to it), their places in their file system ([`crate::mounts`]). Called at
/// start and again before every sync: a mount made later is seen too. `dst` may not
/// exist yet (then only "inside the source" can apply, to where it would be created).
pub fn check_overlap(src: &Path, dst: &Path) -> Result<(), String> {
    let src = src
        .canonicalize()
        .map_err(|e| format!("source {}: {e}", src.display()))?;
    let dst = canonical_maybe_missing(dst).map_err(|e| format!("destination {e}"))?;
    let src_id =
        identity(&src).ok_or_else(|| format!("source {}: cannot stat it", src.display()))?;
    let src_chain: Vec<(u64, u64)> = src.ancestors().filter_map(identity).collect();
    // The destination, or the nearest directory that exists on its way.
    let existing = dst
        .ancestors()
        .find(|a| identity(a).is_some())
        .unwrap_or(Path::new("/"));
    let dst_exists = existing == dst;
    let same = "the source directory itself under another name (a bind mount or a link)";
    let around = "a directory around the source under another name (a bind mount or a link): --delete would remove the source and everything beside it";
    let inside =
        "inside the source under another name (a bind mount or a link): it would sync into itself";
    let refuse = |what: &str| {
        Err(format!(
            "destination {} is {what} (source {})",
            dst.display(),
            src.display()
        ))
    };
    if dst_exists {
        let dst_id = identity(&dst);
        if dst_id == Some(src_id) {
            return refuse(same);
        }
        if dst_id.is_some_and(|d| src_chain.contains(&d)) {
            return refuse(around);
        }
    }
    if existing
        .ancestors()
        .filter_map(identity)
        .any(|a| a == src_id)
    {
        return refuse(inside);
    }
    // A bind mount of a directory below (or above) the source: same device, and one
    // place in the file system is a prefix of the other.
    let mounts = crate::mounts::read();
    if let (Some((sd, sp)), Some((dd, dp))) = (
        crate::mounts::place(&mounts, &src),
        crate::mounts::place(&mounts, existing),
    ) {
        if sd == dd {
            if dst_exists && dp == sp {
                return refuse(same);
            }
            if dst_exists && sp.starts_with(&dp) {
                return refuse(around);
            }
            if dp.starts_with(&sp) {
                return refuse(inside);
            }
        }
    }
    Ok(())
}

/// [`check_overlap`] again for a destination the worker syncs to (before each sync):
/// local destinations of rsyncdirect only, as at start ([`preflight`]). A source that is
/// gone is not this check's business (the worker stops for it on its own, exit 1).
pub fn recheck_destination(cfg: &Config, src: &Path, dst: &Path) -> Result<(), String> {
    if src.canonicalize().is_err() {
        return Ok(());
    }
    let own_rsync =
        cfg.mode == crate::sync::handler::Mode::RsyncDirect && cfg.handler_args.is_none();
    match crate::dest::Dest::parse(dst.as_os_str()) {
        crate::dest::Dest::Local(d) if own_rsync => check_overlap(src, &d),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_by_identity_sees_through_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().canonicalize().unwrap();
        let src = top.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::os::unix::fs::symlink(&top, top.join("alias")).unwrap();
        std::os::unix::fs::symlink(src.join("sub"), top.join("subalias")).unwrap();
        let e = check_overlap(&src, &top.join("alias")).unwrap_err();
        assert!(e.contains("around the source"), "{e}");
        let e = check_overlap(&src, &top.join("subalias/new")).unwrap_err();
        assert!(e.contains("inside the source"), "{e}");
        let e = check_overlap(&src, &top.join("alias/src")).unwrap_err();
        assert!(e.contains("the source directory itself"), "{e}");
        // A sibling, existing or not, is fine.
        std::fs::create_dir(top.join("dst")).unwrap();
        assert_eq!(check_overlap(&src, &top.join("dst")), Ok(()));
        assert_eq!(check_overlap(&src, &top.join("new/dst")), Ok(()));
        assert_eq!(check_overlap(&src, &top.join("alias/srcx")), Ok(()));
    }

    #[test]
    fn missing_paths_canonicalize_through_their_existing_parent() {
        let t = tempfile::tempdir().unwrap();
        let c = canonical_maybe_missing(&t.path().join("a/b")).unwrap();
        assert_eq!(c, t.path().canonicalize().unwrap().join("a/b"));
    }
}
