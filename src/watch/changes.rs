/*!
What the watch stage hands on: paths that changed ([`Dirty`]), collected per read of the
kernel queue in [`Changes`], and the path helpers both backends build them with.

Its own file so that the backends and the worker share these types without importing
each other: `mod.rs` → backends → this.
*/

use crate::rules::Kind;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the worker needs to know about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirty {
    /// Relative to the watch root, no leading slash; the root is empty.
    pub path: Vec<u8>,
    /// Sync the whole subtree (a new, moved-in or rescanned directory).
    pub recursive: bool,
    /// The event was a plain `IN_MODIFY`: a path already queued needs no new look.
    pub modify_only: bool,
    /// The inotify mask of the event (`IN_*` bits, as the original hands to handlers);
    /// for what a rescan found: `IN_CREATE`, with `IN_ISDIR` for a directory.
    pub mask: u32,
}

/// `IN_CREATE`: the mask of a file found by a walk or rescan, as in the original.
pub const MASK_FOUND: u32 = libc::IN_CREATE;
/// `IN_CREATE | IN_ISDIR`: the mask of a directory found by a walk or rescan.
pub const MASK_FOUND_DIR: u32 = libc::IN_CREATE | libc::IN_ISDIR;

/// The output of handling events or a rescan.
#[derive(Debug, Default)]
pub struct Changes {
    pub dirty: Vec<Dirty>,
    /// Paths excluded by the rules that were seen inside the tree; a recursive sync of an
    /// ancestor must exclude them explicitly.
    pub excluded: Vec<Vec<u8>>,
    /// The watch root itself was deleted, moved away or unmounted.
    pub root_gone: bool,
    /// Renames inside the tree (files and directories), in order: `(from, to)`.
    pub moves: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Changes {
    /// What a rescan found.
    pub(super) fn dirty(&mut self, path: Vec<u8>, recursive: bool) {
        let mask = if recursive {
            MASK_FOUND_DIR
        } else {
            MASK_FOUND
        };
        self.event(path, recursive, mask);
    }

    /// What an event said.
    pub(super) fn event(&mut self, path: Vec<u8>, recursive: bool, mask: u32) {
        self.dirty.push(Dirty {
            path,
            recursive,
            modify_only: false,
            mask,
        });
    }
}

pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !dir.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// The rules' kind of a non-directory path, by `lstat` (a path that is gone by now
/// counts as a file).
pub(super) fn kind_now(root: &Path, rel: &[u8]) -> Kind {
    std::fs::symlink_metadata(abs_path(root, rel)).map_or(Kind::File, |m| Kind::of(m.file_type()))
}

/// Absolute path of `rel` below `root`.
pub fn abs_path(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}
