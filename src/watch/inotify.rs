/*!
The inotify backend (`monitor = "inotify"`, the default): one watch per directory.

Why we drive inotify ourselves rather than through a recursive-watch library: that is
where the peers lose changes. Here:

- A new or moved-in directory: add the watch first, then list it, so a file created in
  between is seen either as an event or in the listing (both are fine: paths dedupe).
- Directories are nodes `{parent, name}` ([`Tree`]); a rename inside the tree is
  paired by the inotify cookie and moves one node. An unpaired `MOVED_FROM` means the
  directory left the tree: its watches are removed (the kernel would keep reporting it).
- `IN_Q_OVERFLOW`, an event for an unknown watch descriptor, a watch the kernel dropped
  while the directory still exists: rescan (re-adding watches) and sync recursively.
- Out of watches (`ENOSPC`) at start: a fatal, actionable error. At run time the subtree
  is polled (rescanned and synced recursively on an interval) until a watch can be added.
- Symlinks are never followed (`IN_DONT_FOLLOW`, `lstat` semantics everywhere). A
  directory whose inode is already watched at another place that still exists (a bind
  mount, a loop) is not entered twice.
*/

use super::changes::{abs_path, join, kind_now, Changes, Dirty};
use super::error::{count_dirs, vanished, watch_limit_advice, WatchError};
use super::pump::{self, not_started};
use super::records;
use super::tree::{NodeId, Tree, ROOT};
use crate::logger::path;
use crate::rules::{Kind, Rules};
use inotify::{EventMask, Inotify, WatchMask};
use log::{debug, error, warn};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::EXCL_UNLINK);

struct PendingMove {
    cookie: u32,
    node: Option<NodeId>,
}

pub struct InotifyWatcher {
    inotify: Inotify,
    root: PathBuf,
    rules: Rules,
    tree: Tree,
    /// Watches we removed ourselves; their late events and their `IN_IGNORED` are dropped.
    retired: HashSet<i32>,
    /// Directories that could not be watched: polled.
    unwatched: HashSet<NodeId>,
    pending: Option<PendingMove>,
    /// Watches of nodes dropped because their directory was found elsewhere.
    orphans: Vec<i32>,
    /// Directories `(parent, name)` that were gone when we came to watch or list them.
    /// Events are handled after the fact: the directory may not be gone but be below an
    /// ancestor whose rename is still in the queue. When that rename arrives, these are
    /// looked for again at the new place; an event for the name itself clears them.
    missing: HashSet<(NodeId, Box<[u8]>)>,
    /// The tree contradicted the kernel in a way only a full rescan resolves.
    stale: bool,
    /// With one-file-system: the root's device; directories on others are not entered.
    device: Option<u64>,
    /// Files' `MOVED_FROM` (cookie, path) waiting for their `MOVED_TO` in this read.
    file_moves: Vec<(u32, Vec<u8>)>,
    /// The thread that reads the inotify fd, once started ([`pump`]).
    pump: Option<pump::Pump>,
}

impl InotifyWatcher {
    /// Watches the tree below `root`; returns the watcher and the paths the rules exclude
    /// (for the initial sync). `progress` gets the number of watched directories every
    /// 1,024 directories scanned (it decides when to tell: a tree of millions takes long).
    pub fn new(
        root: &Path,
        rules: Rules,
        one_file_system: bool,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Self, Changes), WatchError> {
        let inotify = Inotify::init().map_err(WatchError::init)?;
        let device = if one_file_system {
            let m = std::fs::metadata(root).map_err(|source| WatchError::Unreadable {
                path: root.to_path_buf(),
                source,
            })?;
            Some(m.dev())
        } else {
            None
        };
        let mut w = InotifyWatcher {
            device,
            inotify,
            root: root.to_path_buf(),
            rules,
            tree: Tree::new(),
            retired: HashSet::new(),
            unwatched: HashSet::new(),
            pending: None,
            orphans: Vec::new(),
            missing: HashSet::new(),
            stale: false,
            file_moves: Vec::new(),
            pump: None,
        };
        let mut out = Changes::default();
        w.scan(ROOT, Some(progress), &mut out)?;
        out.dirty.clear();
        Ok((w, out))
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn watched(&self) -> usize {
        self.tree.watched()
    }

    /// Number of directories that could not be watched and are polled.
    pub fn unwatched(&self) -> usize {
        self.unwatched.len()
    }

    fn abs(&self, id: NodeId) -> PathBuf {
        abs_path(&self.root, &self.tree.path(id))
    }

    fn rel_excluded(&self, rel: &[u8], kind: Kind) -> bool {
        !self.rules.is_empty() && self.rules.excluded(rel, kind)
    }

    /// Drops the kernel watches of nodes removed from the tree.
    fn retire(&mut self, wds: Vec<i32>) {
        for wd in wds {
            log::trace!("retire watch {wd}");
            // Only a watch no node holds any more (an orphan may have been found again).
            if self.tree.by_wd(wd).is_none() && self.retired.insert(wd) {
                // EINVAL when the kernel dropped it already (a deleted directory): fine,
                // its IN_IGNORED is then on the way and is consumed via `retired`.
                // (By number: keeping the crate's descriptor objects would cost ~40
                // bytes per directory.)
                // (Raw libc: nix's inotify wrapper is another crate's fd.)
                // SAFETY: takes no pointers; the fd is our open inotify instance, and a
                // stale `wd` is an error return.
                unsafe { libc::inotify_rm_watch(self.inotify.as_raw_fd(), wd) };
            }
        }
    }

    fn remove_node(&mut self, id: NodeId) {
        let wds = self.tree.remove(id);
        self.unwatched.retain(|n| self.tree.contains(*n));
        self.missing.retain(|(p, _)| self.tree.contains(*p));
        self.retire(wds);
    }

    /// Node `id`'s directory was not found at its path: drop the node, remember where
    /// it was, and queue the path (deleted at the destination if it is really gone).
    fn lost(&mut self, id: NodeId, out: &mut Changes) {
        out.dirty(self.tree.path(id), false);
        if let Some(p) = self.tree.parent(id) {
            self.missing.insert((p, self.tree.name(id).into()));
        }
        self.remove_node(id);
    }

    /// A directory appeared at `name` in `parent`: watch it and everything below.
    fn new_dir(&mut self, parent: NodeId, name: &[u8], out: &mut Changes) {
        let rel = join(&self.tree.path(parent), name);
        if self.rel_excluded(&rel, Kind::Dir) {
            out.excluded.push(rel);
            return;
        }
        let (c, stale) = self.tree.insert(parent, name, None);
        self.retire(stale);
        self.rescan(c, out);
    }

    /// After node `n` moved: look again for directories that were missing below it.
    fn find_missing_below(&mut self, n: NodeId, out: &mut Changes) {
        let found: Vec<(NodeId, Box<[u8]>)> = self
            .missing
            .iter()
            .filter(|(p, _)| self.tree.contains(*p) && self.tree.is_within(*p, n))
            .cloned()
            .collect();
        for (p, name) in found {
            self.missing.remove(&(p, name.clone()));
            if self.tree.contains(p) && self.tree.child(p, &name).is_none() {
                debug!(
                    "looking again for {}",
                    path(&abs_path(&self.root, &join(&self.tree.path(p), &name)))
                );
                self.new_dir(p, &name, out);
            }
        }
    }

    /// Adds the watch for node `id` and decides whether to descend into it.
    /// Returns Ok(false) when the directory must not be entered.
    fn watch_node(
        &mut self,
        id: NodeId,
        startup: bool,
        out: &mut Changes,
    ) -> Result<bool, WatchError> {
        let abs = self.abs(id);
        if let (Some(dev), true) = (self.device, id != ROOT) {
            if std::fs::symlink_metadata(&abs).is_ok_and(|m| m.dev() != dev) {
                // A mount point: the directory itself is synced (rsync -x), not its content.
                debug!("not entering {}: another file system", path(&abs));
                self.remove_node(id);
                return Ok(false);
            }
        }
        if id != ROOT && !self.rules.is_empty() && !self.rules.monitored(&self.tree.path(id)) {
            // The rules say: walk and sync it, but do not monitor it.
            debug!("not monitoring {} (rules)", path(&abs));
            return Ok(true);
        }
        match self.inotify.watches().add(&abs, MASK) {
            Ok(wd) => {
                let raw = wd.get_watch_descriptor_id();
                log::trace!(
                    "watch {raw} node {id} {} (known as {:?})",
                    path(&abs),
                    self.tree.by_wd(raw)
                );
                self.retired.remove(&raw);
                match self.tree.by_wd(raw) {
                    Some(other) if other != id => {
                        let other_abs = self.abs(other);
                        let same = match (
                            std::fs::symlink_metadata(&abs),
                            std::fs::symlink_metadata(&other_abs),
                        ) {
                            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                            _ => false,
                        };
                        if !same && self.tree.is_within(id, other) {
                            // Our tree has this directory above itself: some moves are
                            // still unread. A full rescan, top-down, sorts it out.
                            self.stale = true;
                            return Ok(false);
                        }
                        if same {
                            warn!(
                                "not entering {}: it is the directory {} seen a second time (bind mount?)",
                                path(&abs),
                                path(&other_abs)
                            );
                            self.tree.remove(id);
                            return Ok(false);
                        }
                        // The directory moved here and we have not seen the move yet: the
                        // last place it was seen wins; its old place is gone.
                        out.dirty(self.tree.path(other), false);
                        // Its subdirectories are found again (same wds) by this scan;
                        // those that are not are retired when the scan ends.
                        let orphaned = self.tree.remove(other);
                        self.orphans
                            .extend(orphaned.into_iter().filter(|o| *o != raw));
                        self.unwatched.retain(|n| self.tree.contains(*n));
                        self.tree.set_wd(id, Some(raw));
                    }
                    Some(_) => {}
                    None => {
                        self.tree.set_wd(id, Some(raw));
                    }
                }
                self.unwatched.remove(&id);
                Ok(true)
            }
            Err(e) if vanished(&e) && id != ROOT => {
                self.lost(id, out);
                Ok(false)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                if startup {
                    return Err(WatchError::NoSpace {
                        path: abs,
                        advice: watch_limit_advice(count_dirs(&self.root)),
                    });
                }
                if self.unwatched.insert(id) && self.unwatched.len() == 1 {
                    // Logged once per episode; the other directories join the poll quietly.
                    error!(
                        "cannot watch {}: inotify watch limit reached: {}; polling it until a watch can be added",
                        path(&abs),
                        watch_limit_advice(self.tree.len())
                    );
                } else {
                    debug!(
                        "cannot watch {}: inotify watch limit reached; polling it",
                        path(&abs)
                    );
                }
                Ok(true)
            }
            Err(e) => {
                if startup {
                    return Err(WatchError::Watch {
                        path: abs,
                        source: e,
                    });
                }
                if self.unwatched.insert(id) {
                    error!("cannot watch {}: {e}; polling it", path(&abs));
                }
                Ok(true)
            }
        }
    }

    /// Watches and lists the subtree of node `id`: new directories get nodes and watches,
    /// gone ones lose theirs; `id` is reported dirty recursively. `startup` (with a
    /// progress callback) is the first scan, where an unreadable directory is an error.
    fn scan(
        &mut self,
        id: NodeId,
        mut startup: Option<&mut dyn FnMut(usize)>,
        out: &mut Changes,
    ) -> Result<(), WatchError> {
        out.dirty(self.tree.path(id), true);
        let mut stack = vec![id];
        let mut n = 0u32;
        while let Some(cur) = stack.pop() {
            n = n.wrapping_add(1);
            // The callback decides whether to tell (the start-up's schedule).
            if n.is_multiple_of(1024) {
                if let Some(p) = startup.as_mut() {
                    p(self.tree.watched());
                }
            }
            let startup = startup.is_some();
            if !self.tree.contains(cur) || !self.watch_node(cur, startup, out)? {
                continue;
            }
            let abs = self.abs(cur);
            let rd = match std::fs::read_dir(&abs) {
                Ok(rd) => rd,
                Err(e) if vanished(&e) && cur != ROOT => {
                    self.lost(cur, out);
                    continue;
                }
                Err(e) => {
                    if startup {
                        return Err(WatchError::Unreadable {
                            path: abs,
                            source: e,
                        });
                    }
                    if self.unwatched.insert(cur) {
                        error!("cannot read directory {}: {e}; polling it", path(&abs));
                    }
                    continue;
                }
            };
            let rel = self.tree.path(cur);
            let mut seen: HashSet<Box<[u8]>> = HashSet::new();
            for entry in rd {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        if startup {
                            return Err(WatchError::Unreadable {
                                path: abs,
                                source: e,
                            });
                        }
                        error!("cannot read directory {}: {e}", path(&abs));
                        self.unwatched.insert(cur);
                        break;
                    }
                };
                let name = entry.file_name();
                let name = name.as_bytes();
                let kind = entry.file_type().map_or(Kind::File, Kind::of);
                if kind != Kind::Dir {
                    if !self.rules.is_empty() {
                        let crel = join(&rel, name);
                        if self.rules.excluded(&crel, kind) {
                            out.excluded.push(crel);
                        }
                    }
                    continue;
                }
                let crel = join(&rel, name);
                if self.rel_excluded(&crel, Kind::Dir) {
                    if let Some(c) = self.tree.child(cur, name) {
                        self.remove_node(c);
                    }
                    out.excluded.push(crel);
                    continue;
                }
                seen.insert(name.into());
                let child = match self.tree.child(cur, name) {
                    Some(c) => c,
                    None => {
                        let (c, stale) = self.tree.insert(cur, name, None);
                        self.retire(stale);
                        c
                    }
                };
                stack.push(child);
            }
            let gone: Vec<(Vec<u8>, NodeId)> = self
                .tree
                .children(cur)
                .filter(|(n, _)| !seen.contains(*n))
                .map(|(n, c)| (n.to_vec(), c))
                .collect();
            for (name, c) in gone {
                out.dirty(join(&rel, &name), false);
                self.remove_node(c);
            }
        }
        let orphans = std::mem::take(&mut self.orphans);
        let lost: Vec<i32> = orphans
            .into_iter()
            .filter(|o| self.tree.by_wd(*o).is_none())
            .collect();
        self.retire(lost);
        Ok(())
    }

    /// Rescans a subtree after events were lost, and reports it for a recursive sync.
    fn rescan(&mut self, id: NodeId, out: &mut Changes) {
        if let Err(e) = self.scan(id, None, out) {
            // Not reachable: run-time scans log and poll instead of failing.
            error!("rescan of {} failed: {e}", path(&self.abs(id)));
        }
    }

    /// Replaces the filter rules (SIGHUP) and rescans the whole tree: directories the new
    /// rules exclude lose their watches, directories they include get them, and the
    /// excluded paths are listed again.
    pub fn set_rules(&mut self, rules: Rules, out: &mut Changes) {
        self.rules = rules;
        self.overflow(out);
    }

    /// Rescans and re-syncs every directory that could not be watched.
    pub fn poll_unwatched(&mut self, out: &mut Changes) {
        let ids: Vec<NodeId> = self.unwatched.iter().copied().collect();
        for id in ids {
            if self.tree.contains(id) {
                debug!("polling unwatched {}", path(&self.abs(id)));
                self.rescan(id, out);
            }
        }
        self.unwatched.retain(|n| self.tree.contains(*n));
    }

    /// Handles every event the reader thread has handed over (everything that was in the
    /// kernel queue when it last read; with `barrier`, everything in it now) and reports
    /// what changed.
    pub fn drain(&mut self, out: &mut Changes, barrier: bool) -> io::Result<()> {
        let pump = self.pump.take().ok_or_else(not_started)?;
        let mut each = |buf: &[u8]| {
            records::inotify_events(buf, |wd, mask, cookie, name| {
                let (mask, name) = (
                    EventMask::from_bits_retain(mask),
                    name.map(OsStr::from_bytes),
                );
                self.handle(wd, mask, cookie, name, out);
                // Debug builds check the tree's links after every event, and name it.
                #[cfg(debug_assertions)]
                self.check_tree(|| format!("event {mask:?} cookie {cookie} wd {wd} name {name:?}"));
            })
        };
        let read = if barrier {
            pump.drain_all(&mut each)
        } else {
            pump.drain(&mut each);
            Ok(())
        };
        self.pump = Some(pump);
        // A file's MOVED_FROM without its MOVED_TO in this read: it left the tree.
        self.file_moves.clear();
        self.resolve_pending(out);
        if std::mem::take(&mut self.stale) {
            warn!("the watch tree is out of step with the file system; rescanning the whole tree");
            self.overflow(out);
        }
        #[cfg(debug_assertions)]
        self.check_tree(|| "the end of a read".to_string());
        read
    }

    /// Hands the reading of the inotify fd to a thread of its own (after any fork).
    pub fn start_pump(&mut self) -> io::Result<()> {
        if self.pump.is_none() {
            self.pump = Some(pump::Pump::start(
                self.inotify.as_raw_fd(),
                "clsync-inotify",
                None,
            )?);
        }
        Ok(())
    }

    /// The fd the event loop waits on: the reader thread's (see [`start_pump`]).
    pub(super) fn wait_fd(&self) -> io::Result<RawFd> {
        self.pump.as_ref().map(|p| p.fd()).ok_or_else(not_started)
    }

    /// A directory's `MOVED_FROM` not followed by its `MOVED_TO`: it left the tree.
    fn resolve_pending(&mut self, _out: &mut Changes) {
        if let Some(p) = self.pending.take() {
            if let Some(n) = p.node {
                if self.tree.contains(n) {
                    debug!("{} moved out of the tree", path(&self.abs(n)));
                    self.remove_node(n);
                }
            }
        }
    }

    fn overflow(&mut self, out: &mut Changes) {
        self.pending = None;
        self.rescan(ROOT, out);
    }

    /// Debug builds: panics, saying after what, if the tree's links are inconsistent.
    #[cfg(debug_assertions)]
    fn check_tree(&self, after: impl FnOnce() -> String) {
        if let Err(e) = self.tree.check() {
            panic!("the watch tree is inconsistent after {}: {e}", after());
        }
    }

    fn handle(
        &mut self,
        wd: i32,
        mask: EventMask,
        cookie: u32,
        name: Option<&OsStr>,
        out: &mut Changes,
    ) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            warn!("the kernel's inotify queue overflowed (fs.inotify.max_queued_events); rescanning the whole tree");
            self.overflow(out);
            return;
        }
        let paired = mask.contains(EventMask::MOVED_TO | EventMask::ISDIR)
            && self.pending.as_ref().is_some_and(|p| p.cookie == cookie);
        if !paired {
            self.resolve_pending(out);
        }
        if mask.contains(EventMask::IGNORED) {
            if self.retired.remove(&wd) {
                return;
            }
            if let Some(id) = self.tree.by_wd(wd) {
                self.tree.set_wd(id, None);
                if id == ROOT {
                    out.root_gone = true;
                    return;
                }
                // The kernel dropped the watch (the directory was deleted, or its file
                // system unmounted). Look again: still there means re-watch it.
                self.rescan(id, out);
            }
            return;
        }
        let Some(id) = self.tree.by_wd(wd) else {
            if !self.retired.contains(&wd) {
                warn!("event for an unknown watch descriptor {wd}; rescanning the whole tree");
                self.overflow(out);
            }
            return;
        };
        let Some(name) = name else {
            // An event about the watched directory itself.
            if id == ROOT && mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
                out.root_gone = true;
            } else if mask.contains(EventMask::ATTRIB) {
                out.event(self.tree.path(id), false, mask.bits());
            }
            return;
        };
        let name = name.as_bytes();
        let rel = join(&self.tree.path(id), name);
        log::trace!(
            "event {mask:?} cookie {cookie} wd {wd} node {id}: {}",
            String::from_utf8_lossy(&rel)
        );
        if !mask.contains(EventMask::ISDIR) {
            if !self.rules.is_empty() && self.rules.excluded(&rel, kind_now(&self.root, &rel)) {
                out.excluded.push(rel);
                return;
            }
            if mask.contains(EventMask::MOVED_FROM) {
                self.file_moves.push((cookie, rel.clone()));
            } else if mask.contains(EventMask::MOVED_TO) {
                if let Some(i) = self.file_moves.iter().position(|(c, _)| *c == cookie) {
                    let (_, from) = self.file_moves.swap_remove(i);
                    out.moves.push((from, rel.clone()));
                }
            }
            let modify_only = mask == EventMask::MODIFY;
            out.dirty.push(Dirty {
                path: rel,
                recursive: false,
                modify_only,
                mask: mask.bits(),
            });
            return;
        }
        if self.rel_excluded(&rel, Kind::Dir) {
            // Not ours: never watched, never synced, never deleted at the destination.
            if let Some(c) = self.tree.child(id, name) {
                self.remove_node(c);
            }
            if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                out.excluded.push(rel);
            }
            return;
        }
        self.missing.remove(&(id, Box::from(name)));
        if mask.contains(EventMask::MOVED_FROM) {
            let node = self.tree.child(id, name);
            out.event(rel, false, mask.bits());
            self.pending = Some(PendingMove { cookie, node });
        } else if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            if paired {
                let p = self.pending.take().expect("paired move");
                if let Some(n) = p
                    .node
                    .filter(|n| self.tree.contains(*n) && !self.tree.is_within(id, *n))
                {
                    log::trace!(
                        "move of node {n} paired: now {}",
                        String::from_utf8_lossy(&rel)
                    );
                    out.moves.push((self.tree.path(n), rel.clone()));
                    let stale = self.tree.rename(n, id, name);
                    self.retire(stale);
                    if self.rules.is_empty() && !self.unwatched.contains(&n) {
                        out.event(rel, true, mask.bits());
                        self.find_missing_below(n, out);
                    } else {
                        // The excludes below it are known by their old paths: list again.
                        self.rescan(n, out);
                    }
                    return;
                }
                if let Some(n) = p.node.filter(|n| self.tree.contains(*n)) {
                    self.remove_node(n);
                }
            }
            self.new_dir(id, name, out);
        } else if mask.contains(EventMask::DELETE) {
            if let Some(c) = self.tree.child(id, name) {
                self.remove_node(c);
            }
            out.event(rel, false, mask.bits());
        } else {
            out.event(rel, false, mask.bits());
        }
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    /// docs/architecture.md: debug builds check the watch tree after every event.
    #[test]
    #[should_panic(expected = "the watch tree is inconsistent after event")]
    fn debug_builds_check_the_tree_after_every_event() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let (mut w, _) =
            InotifyWatcher::new(dir.path(), Rules::default(), false, &mut |_| {}).unwrap();
        w.start_pump().unwrap();
        w.tree.break_free_list();
        // A file's events change nothing in the tree: only the check can see the damage.
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let mut out = Changes::default();
        let _ = w.drain(&mut out, true);
    }
}
