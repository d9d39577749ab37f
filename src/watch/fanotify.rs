/*!
The fanotify backend (`monitor = "fanotify"`): one mark per file system instead of one
inotify watch per directory.

Why: with inotify, start-up walks the whole tree and adds a watch per directory, so the
time until live and the kernel memory grow with the number of directories (millions on a
file server). Since Linux 5.9 fanotify reports directory events with the parent's file
handle and the entry's name (`FAN_REPORT_DFID_NAME`), so one `FAN_MARK_FILESYSTEM` mark
sees every change on the file system, and nothing has to be walked at start. The original
clsync tried fanotify and gave up because the fanotify of its time had no directory
events.

How an event becomes a path:
- the directory's handle is looked up in a cache (`handle → place`); a miss opens the
  handle (`open_by_handle_at`, `O_PATH`) and reads the path back from `/proc/self/fd`. A
  path below the watch root is `Inside`, anything else `Outside` (the mark covers the whole
  file system, our destination included when it is on the same one); directories the
  rules exclude or do not monitor are `Ignored`. Negative answers are cached as well.
- a handle that cannot be opened any more (`ESTALE`: the directory is deleted) uses its
  cached place if it has one: events of a directory that was deleted right after them
  still count. A directory never seen and already gone needs nothing: its deletion was
  reported on its parent, which is how the destination loses it.
- a directory rename makes every cached path suspect: a generation counter is bumped and
  an entry of an older generation is checked again (one open) the next time it is used.
  That keeps a rename O(1) however large the cache is.
- `FAN_RENAME` (Linux 5.17) reports both ends of a rename in one event, so moves are
  paired without cookies; on older kernels `MOVED_FROM`/`MOVED_TO` are plain changes.
- `FAN_Q_OVERFLOW` means events were lost: the whole tree is synced recursively, as with
  inotify's overflow.
- the watch root's own fate: deleted or moved away comes from an inode mark on the root
  in the same group (`FAN_DELETE_SELF | FAN_MOVE_SELF`); unmounted from
  `/proc/self/mountinfo`, which signals `POLLPRI` when the mount table changes (the
  reader thread waits on it too), after which the root's mount is looked for by its id
  and device. fanotify has no unmount event (the kernel drops the marks silently), and
  `FAN_MNT_DETACH` (6.15) needs a second group of another kind. So a fanotify worker
  holds no inotify instance: the per-uid limit of those (`fs.inotify.max_user_instances`)
  does not apply to it; its group counts against `fs.fanotify.max_user_groups`.

Mount points below the root are other file systems: each gets its own mark (unless
one-file-system), and its own fd to open handles with. With filter rules the tree is still
listed once at start (and after an overflow or a reload), because the initial sync needs
the excluded paths; that walk adds no watches.

Needs `CAP_SYS_ADMIN` (and `CAP_DAC_READ_SEARCH` for `open_by_handle_at`) and a file
system with file handles and an fsid; anything else falls back to inotify with the reason
in the log.
*/

use super::changes::{abs_path, join, kind_now, Changes, Dirty};
use super::pump::{not_started, Pump};
use super::records::{in_mask, parse_fid, Entry, META_LEN};
use crate::rules::{Kind, Rules};
use log::{debug, warn};
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// More cached directories than this and the cache starts over (it refills on demand,
/// one open per directory). Bounded low because most entries are of directories outside
/// the tree: an initial copy to a destination on the same file system makes one per
/// destination directory (28 MiB at 200,000 directories with a bound of a million).
const CACHE_MAX: usize = 1 << 16;

/// Where a directory handle points.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    /// Below the watch root (relative path; the root is empty).
    /// Shared with the cache: an event clones a reference count, not the path.
    Inside(std::rc::Rc<[u8]>),
    /// Not below the watch root.
    Outside,
    /// Below it, but the rules exclude it or do not monitor it.
    Ignored,
}

struct Cached {
    place: Place,
    generation: u64,
}

/// One file system we hold a mark on.
struct Mount {
    fsid: [u8; 8],
    /// A directory on it: opened for `open_by_handle_at` while events are handled, and
    /// closed after, so the worker never keeps the file system busy (it can be unmounted,
    /// which [`RootMount`] then notices).
    dir: PathBuf,
    fd: Option<OwnedFd>,
}

/// The mount the watch root is on, to notice its unmount.
struct RootMount {
    /// `/proc/self/mountinfo`, opened at start: `POLLPRI` on it says the mount table
    /// changed. Being opened then, it stays the table of the start's mount namespace.
    table: std::fs::File,
    /// The mount's id and `major:minor`, as `statx` gave them and mountinfo prints them
    /// (an id is reused after an unmount; the pair much less so).
    id: u64,
    dev: String,
}

impl RootMount {
    fn of(root: &Path) -> io::Result<Self> {
        let c = cpath(root)?;
        // SAFETY: `statx` is plain integers, for which all zeroes is a valid value.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // Raw libc: nix has no statx.
        // SAFETY: `c` is a NUL-terminated path and `stx` a writable statx, both alive for
        // the call; failures are error returns.
        let r = unsafe {
            libc::statx(
                libc::AT_FDCWD,
                c.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                libc::STATX_MNT_ID,
                &mut stx,
            )
        };
        if r != 0 {
            return Err(errno());
        }
        if stx.stx_mask & libc::STATX_MNT_ID == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let m = RootMount {
            table: std::fs::File::open("/proc/self/mountinfo")?,
            id: stx.stx_mnt_id,
            dev: format!("{}:{}", stx.stx_dev_major, stx.stx_dev_minor),
        };
        if !m.mounted()? {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("mount {} ({}) is not in /proc/self/mountinfo", m.id, m.dev),
            ));
        }
        Ok(m)
    }

    /// Whether the mount is still in the table (read again from its start).
    fn mounted(&self) -> io::Result<bool> {
        use std::io::{Read, Seek};
        let mut f = &self.table;
        f.seek(io::SeekFrom::Start(0))?;
        let mut text = Vec::new();
        f.read_to_end(&mut text)?;
        Ok(crate::mounts::parse(&text)
            .iter()
            .any(|m| m.id == self.id && m.dev == self.dev))
    }
}

pub struct FanWatcher {
    fan: OwnedFd,
    /// The watch root's mount: unmounted.
    root_mount: RootMount,
    root: PathBuf,
    rules: Rules,
    one_file_system: bool,
    mounts: Vec<Mount>,
    cache: HashMap<Box<[u8]>, Cached>,
    generation: u64,
    /// `FAN_RENAME` is in the mark (pairs moves).
    rename: bool,
    /// The thread that reads the fanotify fd, once started.
    pump: Option<Pump>,
}

/// Why fanotify cannot be used here; the caller falls back to inotify.
#[derive(Debug)]
pub struct Unavailable(pub String);

fn errno() -> io::Error {
    io::Error::last_os_error()
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// Opens a directory (`O_RDONLY | O_DIRECTORY`; std adds `O_CLOEXEC`).
fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(p)?;
    Ok(f.into())
}

/// The file system id of `fd`'s file system, as the bytes fanotify's records carry.
/// (Raw libc: nix's `Statfs` does not hand out the id's bytes.)
fn fsid_of(fd: RawFd) -> io::Result<[u8; 8]> {
    // SAFETY: `statfs` is plain integers, for which all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `statfs`; a bad fd is an error return, not UB.
    if unsafe { libc::fstatfs(fd, &mut st) } != 0 {
        return Err(errno());
    }
    // `__kernel_fsid_t` is two ints, as in the event's info record.
    // SAFETY: `fsid_t` is two `c_int`s (8 bytes, no padding), so every bit pattern of it
    // is a valid `[u8; 8]` and the sizes match (checked by transmute at compile time).
    Ok(unsafe { std::mem::transmute::<libc::fsid_t, [u8; 8]>(st.f_fsid) })
}

/// Is `rel` or a directory above it excluded, or not monitored, by the rules?
fn ignored(rules: &Rules, rel: &[u8]) -> bool {
    if rules.is_empty() || rel.is_empty() {
        return false;
    }
    let mut end = 0;
    loop {
        let next = rel[end..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(rel.len(), |i| end + i);
        let prefix = &rel[..next];
        if rules.excluded(prefix, Kind::Dir) || !rules.monitored(prefix) {
            return true;
        }
        if next == rel.len() {
            return false;
        }
        end = next + 1;
    }
}

impl FanWatcher {
    /// Marks the file system(s) of `root`. Fails with the reason when fanotify cannot be
    /// used (not root, an old kernel, a file system without file handles).
    /// The rules come back with the error, for the inotify watcher that takes over.
    pub fn new(
        root: &Path,
        rules: Rules,
        one_file_system: bool,
    ) -> Result<Self, (Unavailable, Rules)> {
        match Self::setup(root, one_file_system) {
            Ok(mut w) => {
                w.rules = rules;
                Ok(w)
            }
            Err(e) => Err((e, rules)),
        }
    }

    fn setup(root: &Path, one_file_system: bool) -> Result<Self, Unavailable> {
        let fail = |what: &str, e: io::Error| {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM) => " (it needs root: CAP_SYS_ADMIN)",
                Some(libc::EMFILE) if what == "fanotify_init" => {
                    " (this user's fanotify groups are used up: fs.fanotify.max_user_groups)"
                }
                Some(libc::EINVAL) => " (the kernel needs to be 5.9 or newer)",
                Some(libc::EXDEV | libc::ENODEV | libc::EOPNOTSUPP) => {
                    " (the file system has no file handles or fsid)"
                }
                _ => "",
            };
            Unavailable(format!("{what}: {e}{hint}"))
        };
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_DFID_NAME;
        // Raw libc: nix's fanotify flags have no `FAN_REPORT_DFID_NAME`.
        // SAFETY: takes no pointers; the result is checked before use.
        let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_CLOEXEC) as u32) };
        if fd < 0 {
            return Err(fail("fanotify_init", errno()));
        }
        // SAFETY: fanotify_init succeeded: `fd` is a new open fd nothing else owns.
        let fan = unsafe { OwnedFd::from_raw_fd(fd) };
        let root_mount = RootMount::of(root)
            .map_err(|e| fail(&format!("the mount of {}", root.display()), e))?;
        let mut w = FanWatcher {
            fan,
            root_mount,
            root: root.to_path_buf(),
            rules: Rules::default(),
            one_file_system,
            mounts: Vec::new(),
            cache: HashMap::new(),
            generation: 0,
            rename: true,
            pump: None,
        };
        w.mark_root(root)
            .map_err(|e| fail(&format!("fanotify_mark {}", root.display()), e))?;
        let mut places = vec![root.to_path_buf()];
        if !one_file_system {
            places.extend(crate::mounts::points_below(&crate::mounts::read(), root));
        }
        for p in places {
            w.mark(&p)
                .map_err(|e| fail(&format!("fanotify_mark {}", p.display()), e))?;
        }
        Ok(w)
    }

    /// Marks the root directory itself (an inode mark): its deletion and its move.
    fn mark_root(&self, root: &Path) -> io::Result<()> {
        let c = cpath(root)?;
        // SAFETY: `c` is a NUL-terminated path that outlives the call, and the fanotify
        // fd is ours and open; failures are error returns.
        let r = unsafe {
            libc::fanotify_mark(
                self.fan.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_DONT_FOLLOW | libc::FAN_MARK_ONLYDIR,
                libc::FAN_DELETE_SELF | libc::FAN_MOVE_SELF | libc::FAN_ONDIR,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if r != 0 {
            return Err(errno());
        }
        Ok(())
    }

    /// Adds a file-system mark for the file system `dir` is on (once per fsid).
    fn mark(&mut self, dir: &Path) -> io::Result<()> {
        let fd = open_dir(dir)?;
        let fsid = fsid_of(fd.as_raw_fd())?;
        if self.mounts.iter().any(|m| m.fsid == fsid) {
            return Ok(());
        }
        let base = libc::FAN_CREATE
            | libc::FAN_DELETE
            | libc::FAN_MODIFY
            | libc::FAN_CLOSE_WRITE
            | libc::FAN_ATTRIB
            | libc::FAN_ONDIR;
        let c = cpath(dir)?;
        // Raw libc: nix's mark flags have no `FAN_MARK_FILESYSTEM` nor `FAN_RENAME`.
        // SAFETY: `c` is a NUL-terminated path that outlives the call, and the fanotify
        // fd is ours and open; failures are error returns.
        let add = |mask: u64| unsafe {
            libc::fanotify_mark(
                self.fan.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                mask,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if self.rename && add(base | libc::FAN_RENAME) != 0 {
            let e = errno();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
            // Before 5.17: no FAN_RENAME, moves arrive as two unpaired halves.
            self.rename = false;
        }
        if !self.rename && add(base | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0 {
            return Err(errno());
        }
        debug!(
            "fanotify: marked the file system of {}{}",
            dir.display(),
            if self.rename { "" } else { " (no FAN_RENAME)" }
        );
        drop(fd);
        self.mounts.push(Mount {
            fsid,
            dir: dir.to_path_buf(),
            fd: None,
        });
        Ok(())
    }

    /// The fd to wait on: the reader thread's (see `start_pump`).
    pub fn fds(&self) -> io::Result<[RawFd; 1]> {
        Ok([self.pump.as_ref().ok_or_else(not_started)?.fd()])
    }

    /// Hands the reading of the fanotify fd, and the wait for mount table changes, to a
    /// thread of its own (after any fork).
    pub fn start_pump(&mut self) -> io::Result<()> {
        if self.pump.is_none() {
            self.pump = Some(Pump::start(
                self.fan.as_raw_fd(),
                "clsync-fanotify",
                Some(self.root_mount.table.as_raw_fd()),
            )?);
        }
        Ok(())
    }

    /// Handles the events in `buf` (whole `fanotify_event_metadata` records).
    fn events_in(&mut self, buf: &[u8], out: &mut Changes) {
        let n = buf.len();
        let mut off = 0;
        while off + META_LEN <= n {
            // SAFETY: `off + META_LEN <= buf.len()`, so the bytes read are in `buf`;
            // read_unaligned needs no alignment, and the struct is plain integers, valid
            // for any bytes.
            let meta: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
            let len = meta.event_len as usize;
            if len < META_LEN || off + len > n {
                break;
            }
            if meta.fd >= 0 {
                // Not in FID mode; close it so it cannot leak.
                let _ = nix::unistd::close(meta.fd);
            }
            let info_start = off + (meta.metadata_len as usize).min(len);
            self.event(meta.mask, &buf[info_start..off + len], out);
            off += len;
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Number of file systems marked.
    pub fn marks(&self) -> usize {
        self.mounts.len()
    }

    /// The rule-excluded paths of the tree (a walk that adds no watches), for the excludes
    /// of recursive syncs. Nothing to do without rules.
    pub fn list_excluded(&self, out: &mut Changes) {
        if self.rules.is_empty() {
            return;
        }
        // With one-file-system, directories on another device are not entered.
        let device = self
            .one_file_system
            .then(|| std::fs::symlink_metadata(&self.root).ok().map(|m| m.dev()))
            .flatten();
        let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
        while let Some(rel) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(abs_path(&self.root, &rel)) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                let crel = join(&rel, name.as_bytes());
                let kind = e.file_type().map_or(Kind::File, Kind::of);
                if self.rules.excluded(&crel, kind) {
                    out.excluded.push(crel);
                } else if kind == Kind::Dir
                    && !device.is_some_and(|d| e.metadata().is_ok_and(|m| m.dev() != d))
                {
                    stack.push(crel);
                }
            }
        }
    }

    /// Events were lost (or the rules changed): everything is synced again.
    fn rescan(&mut self, out: &mut Changes) {
        self.generation += 1;
        self.list_excluded(out);
        out.dirty(Vec::new(), true);
    }

    pub fn set_rules(&mut self, rules: Rules, out: &mut Changes) {
        self.rules = rules;
        self.cache.clear();
        self.rescan(out);
    }

    /// Opens a directory handle and reads its path; `None` when it is gone.
    fn resolve(&mut self, e: &Entry) -> Option<Place> {
        let mount = self.mounts.iter_mut().find(|m| m.fsid == e.fsid)?;
        if mount.fd.is_none() {
            mount.fd = open_dir(&mount.dir).ok();
        }
        let mount_fd = mount.fd.as_ref()?.as_raw_fd();
        // struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[]; },
        // 4-byte aligned.
        let mut fh = vec![0u32; 2 + e.handle.len().div_ceil(4)];
        fh[0] = e.handle.len() as u32;
        fh[1] = e.handle_type as u32;
        for (word, bytes) in fh[2..].iter_mut().zip(e.handle.chunks(4)) {
            let mut w = [0u8; 4];
            w[..bytes.len()].copy_from_slice(bytes);
            *word = u32::from_ne_bytes(w);
        }
        // Not in nix.
        // SAFETY: `fh` is a `file_handle` header followed by `handle_bytes` bytes of
        // handle, 4-byte aligned and alive for the call; `mount_fd` is an open directory.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount_fd,
                fh.as_mut_ptr() as *mut libc::file_handle,
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: open_by_handle_at succeeded: `fd` is a new open fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if !nix::sys::stat::fstat(fd.as_raw_fd()).is_ok_and(|st| st.st_nlink != 0) {
            return None;
        }
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let p = link.as_os_str().as_bytes();
        let root = self.root.as_os_str().as_bytes();
        let rel: &[u8] = if p == root {
            b""
        } else if root == b"/" && p.len() > 1 && p[0] == b'/' {
            &p[1..]
        } else if p.len() > root.len() && p.starts_with(root) && p[root.len()] == b'/' {
            &p[root.len() + 1..]
        } else {
            return Some(Place::Outside);
        };
        if ignored(&self.rules, rel) {
            return Some(Place::Ignored);
        }
        Some(Place::Inside(rel.into()))
    }

    /// The place of a directory handle: from the cache when it is current, else opened
    /// (and cached).
    fn place(&mut self, e: &Entry) -> Option<Place> {
        if let Some(c) = self.cache.get(e.key) {
            if c.generation == self.generation {
                return Some(c.place.clone());
            }
        }
        let found = self.resolve(e);
        let place = match (found, self.cache.get(e.key)) {
            (Some(p), _) => p,
            // Gone now: where it was last seen is the best we know.
            (None, Some(c)) => c.place.clone(),
            (None, None) => return None,
        };
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(
            e.key.into(),
            Cached {
                place: place.clone(),
                generation: self.generation,
            },
        );
        Some(place)
    }

    /// The relative path an entry names, or `None` when it is not ours.
    fn path_of(&mut self, e: &Entry) -> Option<Vec<u8>> {
        match self.place(e)? {
            Place::Inside(dir) => Some(match e.name {
                Some(n) => join(&dir, n),
                None => dir.to_vec(),
            }),
            Place::Outside | Place::Ignored => None,
        }
    }

    /// Handles every event the reader thread has handed over (with `barrier`: every
    /// event in the kernel queue now) and reports what changed.
    pub fn drain(&mut self, out: &mut Changes, barrier: bool) -> io::Result<()> {
        let pump = self.pump.take().ok_or_else(not_started)?;
        let read = if barrier {
            pump.drain_all(|buf| self.events_in(buf, out))
        } else {
            pump.drain(|buf| self.events_in(buf, out));
            Ok(())
        };
        let mounts_changed = pump.take_pri();
        self.pump = Some(pump);
        for m in &mut self.mounts {
            m.fd = None;
        }
        if mounts_changed {
            match self.root_mount.mounted() {
                Ok(true) => {}
                Ok(false) => out.root_gone = true,
                Err(e) => warn!("cannot read /proc/self/mountinfo: {e}"),
            }
        }
        read
    }

    fn event(&mut self, mask: u64, info: &[u8], out: &mut Changes) {
        if mask & libc::FAN_Q_OVERFLOW != 0 {
            warn!("the kernel's fanotify queue overflowed; syncing the whole tree");
            self.rescan(out);
            return;
        }
        if mask & (libc::FAN_DELETE_SELF | libc::FAN_MOVE_SELF) != 0 {
            // Only the root's inode mark asks for these.
            out.root_gone = true;
            return;
        }
        let mut dir: Option<Entry> = None;
        let mut old: Option<Entry> = None;
        let mut new: Option<Entry> = None;
        let mut i = 0;
        while i + 4 <= info.len() {
            let typ = info[i];
            let rlen = u16::from_ne_bytes([info[i + 2], info[i + 3]]) as usize;
            if rlen < 4 || i + rlen > info.len() {
                break;
            }
            let rec = &info[i..i + rlen];
            match typ {
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME => dir = parse_fid(rec, true),
                libc::FAN_EVENT_INFO_TYPE_DFID => dir = parse_fid(rec, false),
                libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => old = parse_fid(rec, true),
                libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => new = parse_fid(rec, true),
                _ => {}
            }
            i += rlen;
        }
        let is_dir = mask & libc::FAN_ONDIR != 0;
        if mask & libc::FAN_RENAME != 0 {
            if is_dir {
                self.generation += 1;
            }
            let from = old.as_ref().and_then(|e| self.path_of(e));
            let to = new.as_ref().and_then(|e| self.path_of(e));
            let from = from.filter(|p| !self.skip(p, is_dir, false, out));
            let to = to.filter(|p| !self.skip(p, is_dir, true, out));
            let dmask = if is_dir { libc::IN_ISDIR } else { 0 };
            if let (Some(f), Some(t)) = (&from, &to) {
                out.moves.push((f.clone(), t.clone()));
            }
            if let Some(f) = from {
                out.event(f, false, libc::IN_MOVED_FROM | dmask);
            }
            if let Some(t) = to {
                out.event(t, is_dir, libc::IN_MOVED_TO | dmask);
            }
            let rest = mask & !libc::FAN_RENAME & 0xfff;
            if rest == 0 {
                return;
            }
        }
        let Some(e) = dir else {
            return;
        };
        if is_dir && mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0 {
            self.generation += 1;
        }
        let bits = in_mask(mask & !libc::FAN_RENAME);
        if bits & 0xfff == 0 {
            return;
        }
        let Some(rel) = self.path_of(&e) else {
            return;
        };
        let named = e.name.is_some();
        let created = mask & (libc::FAN_CREATE | libc::FAN_MOVED_TO) != 0;
        if named && self.skip(&rel, is_dir, created, out) {
            return;
        }
        log::trace!("fanotify {mask:#x}: {}", String::from_utf8_lossy(&rel));
        // A directory that appeared: sync all of it (its content may predate our event).
        let recursive = is_dir && named && created;
        out.dirty.push(Dirty {
            path: rel,
            recursive,
            modify_only: bits == libc::IN_MODIFY,
            mask: bits,
        });
    }

    /// Whether the rules exclude the entry `rel`; an excluded entry that appeared is
    /// remembered for the excludes of recursive syncs. (A directory the rules only do not
    /// monitor is synced itself; the events inside it are dropped by [`ignored`].)
    fn skip(&self, rel: &[u8], is_dir: bool, appeared: bool, out: &mut Changes) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let kind = if is_dir {
            Kind::Dir
        } else {
            kind_now(&self.root, rel)
        };
        let excluded = self.rules.excluded(rel, kind);
        if excluded && appeared {
            out.excluded.push(rel.to_vec());
        }
        excluded
    }
}
