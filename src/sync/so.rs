/*!
Shared-object sync handlers: the `so` and `rsyncso` modes.

Why: sites that ran the original clsync with `--mode=so` or `--mode=rsyncso` have handlers
compiled as `.so` files against its headers. Loading those same files, unchanged, is the
only way to move such a site over, so this module speaks the original's binary interface
(its API version 2) rather than one of our own.

This file is longer than the ~700 lines the other modules keep to, on purpose: the
`struct ctx` layout, the loader that fills it in and the host symbols handlers link
against are one contract with the original's headers and must agree byte for byte, so
they are kept together rather than spread over files that could drift apart. (Its unit
tests are in so/tests.rs.)

# What a handler exports (all looked up with `dlsym`, all optional but one)

| symbol | C signature | when called |
| --- | --- | --- |
| `clsyncapi_init` | `int (struct ctx *, struct indexes *)` | once, right after loading; non-zero refuses the handler |
| `clsyncapi_sync` | `int (int n, api_eventinfo_t *ei)` | `so` mode: once per batch, `n >= 1` |
| `clsyncapi_rsync` | `int (const char *inclist, const char *exclist)` | `rsyncso` mode: once per list (exclist may be NULL) |
| `clsyncapi_deinit` | `int (void)` | once, when the handler is dropped; non-zero is logged |

The mode ([`SoOptions::mode`]) decides which of `clsyncapi_sync` / `clsyncapi_rsync` is
required (the original only logs a missing one and then calls through NULL; here loading
fails instead); without a mode either will do. A return
value is the handler's exit code: 0 is success, anything else is judged by the caller like
a handler script's exit code (`ignore-exitcode`, retries). The paths handed to a call are
valid only during that call (the original frees them right after), and the list files of
`clsyncapi_rsync` are removed by the caller afterwards unless `dont-unlink-lists`.

`api_eventinfo_t` (32 bytes on LP64): `uint32_t evmask` (inotify mask), `uint32_t flags`
(`EVIF_RECURSIVELY` 1: sync the directory with its content, `EVIF_CONTENTRECURSIVELY` 2),
`size_t path_len`, `const char *path` (relative to the watch directory, no leading slash,
the watch directory itself is ""), `eventobjtype_t objtype_old, objtype_new` (C enums, 4
bytes: `EOT_UNKNOWN` 0, `EOT_DOESNTEXIST` 1, `EOT_FILE` 2, `EOT_DIR` 3).

# What the handler is given: the `struct ctx *` and `struct indexes *`

There is no API version check on the handler: the original has none either. The version
travels the other way: the handler calls the host's `clsyncapi_getapiversion()` (it
returns 2) and refuses to start on a mismatch, as the original's examples do.

`struct ctx` is the original's whole run-time context (53,768 bytes), and handlers read it
directly: the examples and the shipped production handlers read `destdir`, `watchdir`,
`watchdirwslash`, `destdirwslash`, `flags[DEBUG]`, `flags[THREADING]` and
`flags[RSYNCPREFERINCLUDE]`. Its layout depends on the original's build options, which a
handler sees only if it includes the build's `compilerflags.h`. Reproduced here
(`CtxAbi`) is the layout of a Linux LP64 glibc build with capabilities, `unshare` and
`getmntent` support and without cluster or cgroup support: that of the Debian/Ubuntu
`clsync` 0.4.5 binary (checked against its machine code: `handlerfpath` at 44,376,
`flags` at 31,888, `flags[MODE]` compared with 6 for rsyncso) and of a source build on any
system with libcap headers. [`CtxLayout::NoCapabilities`] gives the layout without
`CAPABILITIES_SUPPORT` instead (the `caps` field and the permitted-hook-files array
missing, so every field from `child_pid` on sits 4 or 8 bytes earlier): what a handler
compiled against the headers alone sees, such as the original's production examples,
which include `ctx.h` but not `compilerflags.h` and, built as shipped, read NULL for
`destdir` from a capabilities build. Cluster and cgroup support add fields only after
`dump_path`, past the strings and flags handlers use (but before `handlerfpath` and the
lengths); 4 KiB of zeros follow the struct, so that a handler built with them reads zeros
past our end rather than unmapped memory.

Filled in (everything else is zero, i.e. NULL / off / empty):

- `state` = `STATE_RUNNING` (2); `pid`, `pid_str`, `pid_str_len`; `uid`, `gid`,
  `privileged_uid/gid`, `synchandler_uid/gid` = our real uid and gid; `st_dev` of the
  watch directory.
- `flags[MODE]` (6 for rsyncso, 7 for so, 0 when not told), `flags[DEBUG]`,
  `flags[RSYNCPREFERINCLUDE]`, with `flags_set[]` = 1 for those given a non-zero value;
  `flags[THREADING]` = 0 always: calls into a handler are serialized here, which is what
  handlers that check it ("not pthread-safe") need.
- `label`, `watchdir`, `watchdirwslash` (with a trailing `/`; the same pointer when the
  watch directory is `/`), `watchdirlen`, `watchdirsize` (= len, as the original),
  `watchdirwslashsize`, `watchdir_dirlevel`; `destdir`, `destdirwslash`, `destdirlen`,
  `destdirsize`, `destdirwslashsize` and `destproto` (`"rsync+ssh"` for `user@host:path`,
  `"scheme:"` for `scheme://...`, and then `destdirwslash` is `destdir` itself, as in
  the original); `handlerfpath`, `handler_handle` and `handler_funct` (the four symbols).
- `indexes_p` and the second argument of `clsyncapi_init`: a zeroed block the size of
  `struct indexes` (all hash tables NULL): our event index is not glib's.

# Host functions handlers call

Handlers are linked against symbols of the clsync executable itself. This module defines
them with the original's names: `clsyncapi_getapiversion`, `clsyncapi_fork` (a plain
`fork(2)`; the child is expected to exec, as every example does), the logging back ends
of `error()`/`warning()`/`info()`/`debug()`/`critical()` (`_error`, `_warning`, `_info`,
`_debug`, `_critical`, into our log; `_critical` exits the process, as in the original),
and `xmalloc`, `xcalloc`, `xrealloc` (exit on out-of-memory). Not provided:
`apievinfo2rsynclist` (needs glib's index) and the rest of the original's internals.

The logging functions are C-variadic, which stable Rust cannot define. They are defined
with eight word-sized arguments after the fixed ones and those are handed to
`snprintf(3)`: on x86-64 and AArch64 Linux, variadic integer and pointer arguments are
passed exactly like named ones, so `%s`, `%i`, `%p`, `%lu`... format correctly (up to
eight of them); floating-point conversions do not. On other architectures only the
format string is logged.

**The executable must export these symbols** for a handler that uses them to load
(`dlopen` with `RTLD_NOW` fails on an undefined symbol): the binary has to be linked with
`-Wl,--export-dynamic-symbol=` for each of [`HOST_SYMBOLS`] (or `-rdynamic`). Without
that, handlers that use none of them still load, and a load that fails on one of them
says so. [`host_api_exported`] tells which case the running binary is in.

# Loading

As the original, before `dlopen`: the file (symlinks followed) must be a regular file,
owned by root, by our real uid or by the owner of the running clsync binary, and must have
no setuid, setgid or sticky bit and no group or world write bit. Unlike the original, the
file is opened first, checked through that descriptor and loaded from
`/proc/self/fd/N`, so what is checked is what is loaded (the path is used when /proc is
missing). Then `dlopen(RTLD_NOW | RTLD_LOCAL)`, the symbols, and `clsyncapi_init`. On drop
`clsyncapi_deinit` and `dlclose` (the original skips both in rsyncso mode, which looks like
an oversight: its rsyncso example defines a deinit).

# Threads

[`SoHandler`] is `Send` and `Sync`: every call into the handler (init, sync, rsync,
deinit) holds one mutex, so a handler never runs on two threads at once, whichever thread
calls. A call cannot be interrupted: a timeout around it is the caller's business.
*/

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The original's `CLSYNC_API_VERSION`, returned by `clsyncapi_getapiversion()`.
pub const CLSYNC_API_VERSION: c_int = 2;

/// `eventinfo_flags`: sync the path recursively.
pub const EVIF_RECURSIVELY: u32 = 0x1;
/// `eventinfo_flags`: recursively, but only the content of this directory (part of
/// the ABI; never sent by this host).
#[allow(dead_code)]
pub const EVIF_CONTENTRECURSIVELY: u32 = 0x2;

/// `eventobjtype` values (`EOT_UNKNOWN` is part of the ABI; this host always knows).
#[allow(dead_code)]
pub const EOT_UNKNOWN: u8 = 0;
pub const EOT_DOESNTEXIST: u8 = 1;
pub const EOT_FILE: u8 = 2;
pub const EOT_DIR: u8 = 3;

/// The host functions a handler may call (see the module doc): the executable must
/// export them; build.rs passes `-Wl,--export-dynamic-symbol=NAME` for each of this list.
pub const HOST_SYMBOLS: &[&str] = &include!("host_symbols.in");

/// One changed path for `clsyncapi_sync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoEvent {
    /// Relative to the watch directory, no leading slash; the watch directory itself is
    /// empty.
    pub path: Vec<u8>,
    /// inotify mask.
    pub evmask: u32,
    /// `EVIF_*`.
    pub flags: u32,
    /// `EOT_*` before and after the event.
    pub objtype_old: u8,
    pub objtype_new: u8,
}

/// Which mode the handler is loaded for: decides the required symbol and `flags[MODE]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoMode {
    /// `rsyncso`: `clsyncapi_rsync` is required.
    RsyncSo,
    /// `so`: `clsyncapi_sync` is required.
    So,
}

/// What else the handler sees in its `struct ctx`.
#[derive(Debug, Clone, Default)]
pub struct SoOptions {
    /// None: either entry point will do, `flags[MODE]` is 0.
    pub mode: Option<SoMode>,
    /// `flags[DEBUG]` (the original's `--debug` level).
    pub debug: i32,
    /// `flags[RSYNCPREFERINCLUDE]`.
    pub rsync_prefer_include: bool,
    /// Which `struct ctx` layout the handler was compiled for.
    pub layout: CtxLayout,
}

/// The `struct ctx` layouts a handler may have been compiled for: the original's
/// `CAPABILITIES_SUPPORT` build option adds fields (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CtxLayout {
    /// With `CAPABILITIES_SUPPORT`: the Debian/Ubuntu binary's layout, and that of
    /// handlers that include the `compilerflags.h` of a build on a system with libcap.
    #[default]
    Capabilities,
    /// Without it: handlers compiled against the headers alone (the original's production
    /// examples include `ctx.h` but not `compilerflags.h`), or for a build without libcap.
    NoCapabilities,
}

// ---------------------------------------------------------------------------------------
// The C side: api_eventinfo_t and struct ctx.

/// `api_eventinfo_t`.
#[repr(C)]
struct ApiEventInfo {
    evmask: u32,
    flags: u32,
    path_len: usize,
    path: *const c_char,
    objtype_old: c_int,
    objtype_new: c_int,
}

type InitFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;
type SyncFn = unsafe extern "C" fn(c_int, *mut ApiEventInfo) -> c_int;
type RsyncFn = unsafe extern "C" fn(*const c_char, *const c_char) -> c_int;
type DeinitFn = unsafe extern "C" fn() -> c_int;

// Sizes from the original's configuration.h.
const MAXCHILDREN: usize = 1 << 8;
const MAXRULES: usize = 1 << 8;
const OPTION_FLAGS: usize = 1 << 10;
const MAXSIGNALNUM: usize = 1 << 9;
const MAXPERMITTEDHOOKFILES: usize = 1 << 8;
const MAXMOUNTPOINTS: usize = 1 << 8;
const MAXARGUMENTS: usize = 1 << 8;
const MAX_BLOCKTHREADS: usize = 1 << 4;
const QUEUE_MAX: usize = 4;

// Indexes into `flags[]` (the original's `flags_enum`: short options are their letter,
// long-only ones 512 + n).
const FLAG_MODE: usize = b'M' as usize;
const FLAG_DEBUG: usize = b'd' as usize;
const FLAG_THREADING: usize = b'p' as usize;
const FLAG_RSYNCPREFERINCLUDE: usize = (1 << 9) | 2;

// `mode_id` and `state_enum` values.
const MODE_RSYNCSO: c_int = 6;
const MODE_SO: c_int = 7;
const STATE_RUNNING: c_int = 2;

/// `rule_t`: an int, a glibc `regex_t` (64 bytes), a `mode_t` and two enums.
#[repr(C)]
struct RuleAbi {
    num: c_int,
    expr: [u64; 8],
    objtype: libc::mode_t,
    perm: c_int,
    mask: c_int,
}

/// `queueinfo_t`.
#[repr(C)]
struct QueueInfoAbi {
    collectdelay: libc::c_uint,
    stime: libc::time_t,
}

/// `synchandler_args_t`.
#[repr(C)]
struct SyncHandlerArgsAbi {
    v: [*mut c_char; MAXARGUMENTS],
    c: c_int,
    isexpanded: [c_char; MAXARGUMENTS],
}

/// `struct ctx` of a Linux LP64 glibc build with `CAPABILITIES_SUPPORT`,
/// `UNSHARE_SUPPORT` and `GETMNTENT_SUPPORT`, without `CLUSTER_SUPPORT` and
/// `CGROUP_SUPPORT` (see the module doc). Every field is valid when zero.
#[repr(C)]
struct CtxAbi {
    state: c_int,
    pid: libc::pid_t,
    pid_str: [c_char; 65],
    pid_str_len: usize,
    uid: libc::uid_t,
    gid: libc::gid_t,
    privileged_uid: libc::uid_t,
    privileged_gid: libc::gid_t,
    synchandler_uid: libc::uid_t,
    synchandler_gid: libc::gid_t,
    caps: u32,
    child_pid: [libc::pid_t; MAXCHILDREN],
    children: c_int,
    iteration_num: u32,
    rules: [RuleAbi; MAXRULES],
    rules_count: usize,
    st_dev: libc::dev_t,
    flags_values_raw: [*mut c_char; OPTION_FLAGS],
    flags: [c_int; OPTION_FLAGS],
    flags_set: [c_int; OPTION_FLAGS],
    config_path: *mut c_char,
    config_block: *const c_char,
    customsignal: [*mut c_char; MAXSIGNALNUM + 1],
    label: *mut c_char,
    watchdir: *mut c_char,
    pidfile: *mut c_char,
    standbyfile: *mut c_char,
    exithookfile: *mut c_char,
    preexithookfile: *mut c_char,
    destdir: *mut c_char,
    destproto: *mut c_char,
    watchdirwslash: *mut c_char,
    destdirwslash: *mut c_char,
    statusfile: *mut c_char,
    socketpath: *mut c_char,
    dump_path: *mut c_char,
    socket: c_int,
    socketmod: libc::mode_t,
    socketuid: libc::uid_t,
    socketgid: libc::gid_t,
    watchdirlen: usize,
    destdirlen: usize,
    watchdirsize: usize,
    destdirsize: usize,
    watchdirwslashsize: usize,
    destdirwslashsize: usize,
    watchdir_dirlevel: i16,
    handlerfpath: *mut c_char,
    handler_handle: *mut c_void,
    /// init, sync, rsync, deinit.
    handler_funct: [*mut c_void; 4],
    rulfpath: *mut c_char,
    rulfpathsize: usize,
    listoutdir: *mut c_char,
    /// wait, handle, add_watch_dir.
    notifyenginefunct: [*mut c_void; 3],
    retries: c_int,
    bfilethreshold: usize,
    syncdelay: libc::c_uint,
    queues: [QueueInfoAbi; QUEUE_MAX],
    rsyncinclimit: libc::c_uint,
    synctime: libc::time_t,
    synctimeout: libc::c_uint,
    sigset: *mut c_void,
    isignoredexitcode: [c_char; 1 << 8],
    blockthread: [libc::pthread_t; MAX_BLOCKTHREADS],
    blockthread_count: usize,
    chroot_dir: *mut c_char,
    permitted_hookfile: [*mut c_char; MAXPERMITTEDHOOKFILES + 1],
    permitted_hookfiles: c_int,
    mountpoint: [*mut c_char; MAXMOUNTPOINTS + 1],
    mountpoints: c_int,
    synchandler_args: [SyncHandlerArgsAbi; 2],
    synchandler_argf: c_int,
    indexes_p: *mut c_void,
    fsmondata: *mut c_void,
}

/// The ctx and zeros after it (for handlers built with more options than [`CtxAbi`]).
#[repr(C)]
struct CtxBlock {
    ctx: CtxAbi,
    slack: [u8; 4096],
}

/// Stands in for `struct indexes` (15 pointers in the original, 16 with cluster support).
#[repr(C)]
struct IndexesBlock {
    tables: [*mut c_void; 32],
}

// ---------------------------------------------------------------------------------------
// The handler.

struct Inner {
    handle: *mut c_void,
    sync: Option<SyncFn>,
    rsync: Option<RsyncFn>,
    deinit: Option<DeinitFn>,
    /// Pointed to by the handler (it keeps the ctx pointer): never moved, freed last.
    _ctx: Box<CtxBlock>,
    _indexes: Box<IndexesBlock>,
    /// The strings the ctx points to.
    _strings: Vec<CString>,
}

/// A loaded shared-object sync handler. See the module doc.
pub struct SoHandler {
    path: PathBuf,
    has_sync: bool,
    has_rsync: bool,
    inner: Mutex<Inner>,
}

// SAFETY: the raw pointers in `Inner` are the dlopen handle, the handler's functions and
// our own heap blocks; nothing in them is tied to a thread. Every use goes through the
// mutex (or `&mut self` in drop), so the handler is never entered from two threads at
// once, and glibc's dlopen/dlsym/dlclose are thread-safe.
unsafe impl Send for SoHandler {}
// SAFETY: as for Send above: all access to `Inner` is serialized by its mutex.
unsafe impl Sync for SoHandler {}

impl std::fmt::Debug for SoHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoHandler")
            .field("path", &self.path)
            .field("has_sync", &self.has_sync)
            .field("has_rsync", &self.has_rsync)
            .finish()
    }
}

/// The last `dlerror()`, or a stand-in.
fn dlerror_string() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call
    // on this thread; it is copied at once.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "no error description".to_string()
    } else {
        // SAFETY: see above.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// Looks `name` up in `handle`.
fn symbol(handle: *mut c_void, name: &CStr) -> *mut c_void {
    // SAFETY: handle is a live dlopen handle, name NUL-terminated.
    unsafe {
        libc::dlerror();
        libc::dlsym(handle, name.as_ptr())
    }
}

/// Whether the running executable exports the host functions ([`HOST_SYMBOLS`]) to
/// handlers.
pub fn host_api_exported() -> bool {
    // SAFETY: RTLD_DEFAULT with a NUL-terminated name.
    !unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"clsyncapi_getapiversion".as_ptr()) }.is_null()
}

fn cstring(bytes: &[u8]) -> CString {
    // Paths and labels cannot hold NUL; cut at one all the same rather than fail.
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    CString::new(&bytes[..end]).expect("no NUL before end")
}

/// A path's bytes without trailing slashes (but "/" stays "/").
fn trimmed(p: &Path) -> &[u8] {
    let mut b = p.as_os_str().as_bytes();
    while b.len() > 1 && b.ends_with(b"/") {
        b = &b[..b.len() - 1];
    }
    b
}

/// The original's `destproto`: "rsync+ssh" for `user@host:path`, "scheme:" for
/// `scheme://...` with a lower-case scheme, None for a local directory.
fn destproto(dest: &[u8]) -> Option<Vec<u8>> {
    match dest.windows(3).position(|w| w == b"://") {
        None => {
            let at = dest.iter().position(|&b| b == b'@');
            let colon = dest.iter().position(|&b| b == b':');
            match (at, colon) {
                (Some(a), Some(c)) if a < c => Some(b"rsync+ssh".to_vec()),
                _ => None,
            }
        }
        Some(sep) if dest[..sep].iter().all(u8::is_ascii_lowercase) => Some(dest[..=sep].to_vec()),
        Some(_) => None,
    }
}

/// Refuses a handler file the original would refuse; returns the opened file.
fn check_file(path: &Path, shown: &str) -> Result<std::fs::File, String> {
    // The directories above it: the strict modes' rule (the file's own follows below).
    crate::strict::check_ancestors(path, "sync handler")?;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("sync handler {shown}: cannot open it: {e}"))?;
    let md = file
        .metadata()
        .map_err(|e| format!("sync handler {shown}: cannot stat it: {e}"))?;
    if !md.is_file() {
        return Err(format!(
            "sync handler {shown}: not a regular file; refusing to load it"
        ));
    }
    let uid = md.uid();
    let ruid = nix::unistd::getuid().as_raw();
    if uid != 0 && uid != ruid {
        let exe_uid = std::fs::metadata("/proc/self/exe").map(|m| m.uid()).ok();
        if exe_uid != Some(uid) {
            return Err(format!(
                "sync handler {shown}: owned by uid {uid}, not by root, by the user running \
                 clsync (uid {ruid}) or by the owner of the clsync binary; refusing to load it"
            ));
        }
    }
    let mode = md.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "sync handler {shown}: writable by group or others (mode {mode:04o}); refusing to load it"
        ));
    }
    if mode & 0o7000 != 0 {
        return Err(format!(
            "sync handler {shown}: has the setuid, setgid or sticky bit (mode {mode:04o}); \
             refusing to load it"
        ));
    }
    Ok(file)
}

/// A heap `T` with all bytes zero (`Box::new_zeroed` needs a newer Rust than ours).
///
/// # Safety
/// `T` is not zero-sized, and all-zero bytes are a valid `T`.
unsafe fn zeroed_box<T>() -> Box<T> {
    let layout = std::alloc::Layout::new::<T>();
    // SAFETY: the layout is not zero-sized (the caller's promise).
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: p was allocated by the global allocator with T's layout, and all-zero bytes
    // are a valid T (the caller's promise); the Box owns it from here.
    unsafe { Box::from_raw(p) }
}

/// Turns the filled-in ctx into the layout of a build without `CAPABILITIES_SUPPORT`:
/// without `caps` (everything from `child_pid` on 4 or 8 bytes early) and without
/// `permitted_hookfile[]` and `permitted_hookfiles` (everything from `mountpoint` on 2,072
/// bytes early). The fields before `rules` that move are zero, so moving from `rules` on
/// is enough. The block's typed view is meaningless afterwards; only the handler reads it.
fn drop_capability_fields(block: &mut CtxBlock) {
    let size = std::mem::size_of::<CtxAbi>();
    let rules = std::mem::offset_of!(CtxAbi, rules);
    let hooks = std::mem::offset_of!(CtxAbi, permitted_hookfile);
    let mounts = std::mem::offset_of!(CtxAbi, mountpoint);
    let tail_shift = 8 + (mounts - hooks);
    let base = (block as *mut CtxBlock).cast::<u8>();
    // SAFETY: all ranges lie inside the block (CtxAbi comes first in it); ptr::copy allows
    // overlap; every byte pattern is valid for the integer and pointer fields.
    unsafe {
        std::ptr::copy(base.add(rules), base.add(rules - 8), hooks - rules);
        std::ptr::copy(
            base.add(mounts),
            base.add(mounts - tail_shift),
            size - mounts,
        );
        std::ptr::write_bytes(base.add(size - tail_shift), 0, tail_shift);
    }
}

impl SoHandler {
    /// Checks ownership and permissions like the original, `dlopen(RTLD_NOW |
    /// RTLD_LOCAL)`, resolves the symbols and calls `clsyncapi_init` if present; the mode
    /// in `opts` says which entry point is required (without one either will do).
    pub fn load_with(
        path: &Path,
        watch_dir: &Path,
        destination_dir: &Path,
        label: &str,
        opts: &SoOptions,
    ) -> Result<SoHandler, String> {
        let shown = path.display().to_string();
        let file = check_file(path, &shown)?;

        // Load what was checked: the open descriptor, through /proc.
        use std::os::fd::AsRawFd;
        let via_fd = format!("/proc/self/fd/{}", file.as_raw_fd());
        let load_path = if Path::new(&via_fd).exists() {
            cstring(via_fd.as_bytes())
        } else {
            cstring(path.as_os_str().as_bytes())
        };
        // SAFETY: a NUL-terminated path; the library's constructors run here, which is the
        // point of loading it.
        let handle = unsafe { libc::dlopen(load_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        drop(file);
        if handle.is_null() {
            // The message names what was loaded: the descriptor's path.
            let err = dlerror_string().replace(&via_fd, &shown);
            let hint = if err.contains("undefined symbol")
                && HOST_SYMBOLS.iter().any(|s| err.contains(s))
                && !host_api_exported()
            {
                "; it needs clsync's host functions, which this clsync binary does not export"
            } else {
                ""
            };
            return Err(format!("sync handler {shown}: cannot load it: {err}{hint}"));
        }
        let close = |msg: String| {
            // SAFETY: handle is live and not used after this.
            unsafe { libc::dlclose(handle) };
            msg
        };

        let init = symbol(handle, c"clsyncapi_init");
        let sync = symbol(handle, c"clsyncapi_sync");
        let rsync = symbol(handle, c"clsyncapi_rsync");
        let deinit = symbol(handle, c"clsyncapi_deinit");
        let missing = match opts.mode {
            Some(SoMode::So) if sync.is_null() => Some("clsyncapi_sync, required in so mode"),
            Some(SoMode::RsyncSo) if rsync.is_null() => {
                Some("clsyncapi_rsync, required in rsyncso mode")
            }
            None if sync.is_null() && rsync.is_null() => Some("clsyncapi_sync or clsyncapi_rsync"),
            _ => None,
        };
        if let Some(what) = missing {
            return Err(close(format!(
                "sync handler {shown}: does not export {what}; refusing to use it"
            )));
        }
        // SAFETY: the symbols are the original's API functions, with these signatures.
        let (init, sync, rsync, deinit) = unsafe {
            (
                (!init.is_null()).then(|| std::mem::transmute::<*mut c_void, InitFn>(init)),
                (!sync.is_null()).then(|| std::mem::transmute::<*mut c_void, SyncFn>(sync)),
                (!rsync.is_null()).then(|| std::mem::transmute::<*mut c_void, RsyncFn>(rsync)),
                (!deinit.is_null()).then(|| std::mem::transmute::<*mut c_void, DeinitFn>(deinit)),
            )
        };
        let funct = [
            init.map_or(std::ptr::null_mut(), |f| f as *mut c_void),
            sync.map_or(std::ptr::null_mut(), |f| f as *mut c_void),
            rsync.map_or(std::ptr::null_mut(), |f| f as *mut c_void),
            deinit.map_or(std::ptr::null_mut(), |f| f as *mut c_void),
        ];

        let mut strings = Vec::new();
        let mut own = |b: &[u8]| -> *mut c_char {
            let s = cstring(b);
            let p = s.as_ptr() as *mut c_char;
            strings.push(s);
            p
        };
        // SAFETY: every field of CtxBlock and IndexesBlock is an integer, an array of them or
        // a raw pointer, for which all-zero bytes are valid.
        let mut block: Box<CtxBlock> = unsafe { zeroed_box() };
        // SAFETY: as above.
        let mut indexes: Box<IndexesBlock> = unsafe { zeroed_box() };
        let ctx = &mut block.ctx;

        ctx.state = STATE_RUNNING;
        let pid = nix::unistd::getpid().as_raw();
        ctx.pid = pid;
        let pid_str = pid.to_string();
        for (d, s) in ctx.pid_str.iter_mut().zip(pid_str.bytes()) {
            // ASCII digits: the same value as a signed char.
            #[allow(clippy::cast_possible_wrap)]
            let c = s as c_char;
            *d = c;
        }
        ctx.pid_str_len = pid_str.len();
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        ctx.uid = uid;
        ctx.gid = gid;
        ctx.privileged_uid = uid;
        ctx.privileged_gid = gid;
        ctx.synchandler_uid = uid;
        ctx.synchandler_gid = gid;
        ctx.st_dev = std::fs::metadata(watch_dir).map_or(0, |m| m.dev()) as libc::dev_t;

        let mut set_flag = |i: usize, v: c_int| {
            ctx.flags[i] = v;
            ctx.flags_set[i] = c_int::from(v != 0);
        };
        set_flag(
            FLAG_MODE,
            match opts.mode {
                Some(SoMode::RsyncSo) => MODE_RSYNCSO,
                Some(SoMode::So) => MODE_SO,
                None => 0,
            },
        );
        set_flag(FLAG_DEBUG, opts.debug);
        set_flag(
            FLAG_RSYNCPREFERINCLUDE,
            c_int::from(opts.rsync_prefer_include),
        );
        set_flag(FLAG_THREADING, 0);

        ctx.label = own(label.as_bytes());

        let watch = trimmed(watch_dir);
        ctx.watchdir = own(watch);
        ctx.watchdirlen = watch.len();
        ctx.watchdirsize = watch.len();
        if watch == b"/" {
            ctx.watchdirwslash = ctx.watchdir;
        } else {
            let mut w = watch.to_vec();
            w.push(b'/');
            ctx.watchdirwslash = own(&w);
            ctx.watchdirwslashsize = w.len() + 1;
            let level = w[1..].iter().filter(|&&b| b == b'/').count();
            ctx.watchdir_dirlevel = i16::try_from(level).unwrap_or(i16::MAX);
        }

        let dest_raw = destination_dir.as_os_str().as_bytes();
        match destproto(dest_raw) {
            Some(proto) => {
                ctx.destproto = own(&proto);
                ctx.destdir = own(dest_raw);
                ctx.destdirwslash = ctx.destdir;
            }
            None => {
                let dest = trimmed(destination_dir);
                ctx.destdir = own(dest);
                ctx.destdirlen = dest.len();
                ctx.destdirsize = dest.len();
                let mut d = dest.to_vec();
                d.push(b'/');
                ctx.destdirwslash = own(&d);
                ctx.destdirwslashsize = d.len() + 1;
            }
        }
        ctx.handlerfpath = own(path.as_os_str().as_bytes());
        ctx.handler_handle = handle;
        ctx.handler_funct = funct;
        let indexes_p = std::ptr::addr_of_mut!(*indexes).cast::<c_void>();
        ctx.indexes_p = indexes_p;
        if opts.layout == CtxLayout::NoCapabilities {
            drop_capability_fields(&mut block);
        }
        let ctx_p = std::ptr::addr_of_mut!(block.ctx).cast::<c_void>();

        if let Some(init) = init {
            // SAFETY: the handler's init with the ctx and indexes blocks, which live as long
            // as the handler (they are freed after dlclose).
            let rc = unsafe { init(ctx_p, indexes_p) };
            if rc != 0 {
                return Err(close(format!(
                    "sync handler {shown}: clsyncapi_init returned {rc}; not using it"
                )));
            }
        }
        log::debug!(
            "sync handler {shown}: loaded (sync: {}, rsync: {}, host functions exported: {})",
            sync.is_some(),
            rsync.is_some(),
            host_api_exported()
        );
        Ok(SoHandler {
            path: path.to_path_buf(),
            has_sync: sync.is_some(),
            has_rsync: rsync.is_some(),
            inner: Mutex::new(Inner {
                handle,
                sync,
                rsync,
                deinit,
                _ctx: block,
                _indexes: indexes,
                _strings: strings,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// rsyncso mode: `clsyncapi_rsync(include list, exclude list or NULL)`; the handler's
    /// code (0 for success; ENOSYS when it has no such entry point, EINVAL for a path with
    /// a NUL byte).
    pub fn rsync(&self, include_list: &Path, exclude_list: Option<&Path>) -> i32 {
        let inner = self.lock();
        let Some(f) = inner.rsync else {
            log::error!(
                "sync handler {}: has no clsyncapi_rsync",
                self.path.display()
            );
            return libc::ENOSYS;
        };
        let Ok(inc) = CString::new(include_list.as_os_str().as_bytes()) else {
            return libc::EINVAL;
        };
        let exc = match exclude_list.map(|p| CString::new(p.as_os_str().as_bytes())) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(_)) => return libc::EINVAL,
        };
        log::debug!(
            "sync handler {}: clsyncapi_rsync({}, {})",
            self.path.display(),
            include_list.display(),
            exclude_list.map_or("NULL".into(), |p| p.display().to_string())
        );
        // SAFETY: the handler's rsync with two strings that outlive the call; the mutex keeps
        // it single-threaded.
        unsafe {
            f(
                inc.as_ptr(),
                exc.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            )
        }
    }

    /// so mode: `clsyncapi_sync(n, events)`; the handler's code (0 for success). No call
    /// for no events (the original never makes one), 0 then; ENOSYS when the handler has no
    /// such entry point, E2BIG for more than `i32::MAX` events.
    pub fn sync(&self, events: &[SoEvent]) -> i32 {
        let inner = self.lock();
        let Some(f) = inner.sync else {
            log::error!(
                "sync handler {}: has no clsyncapi_sync",
                self.path.display()
            );
            return libc::ENOSYS;
        };
        if events.is_empty() {
            return 0;
        }
        let Ok(n) = c_int::try_from(events.len()) else {
            return libc::E2BIG;
        };
        let paths: Vec<CString> = events.iter().map(|e| cstring(&e.path)).collect();
        let mut ei: Vec<ApiEventInfo> = events
            .iter()
            .zip(&paths)
            .map(|(e, p)| ApiEventInfo {
                evmask: e.evmask,
                flags: e.flags,
                path_len: p.as_bytes().len(),
                path: p.as_ptr(),
                objtype_old: c_int::from(e.objtype_old),
                objtype_new: c_int::from(e.objtype_new),
            })
            .collect();
        log::debug!(
            "sync handler {}: clsyncapi_sync({n} events)",
            self.path.display()
        );
        // SAFETY: the handler's sync with n valid records whose strings outlive the call; the
        // mutex keeps it single-threaded.
        unsafe { f(n, ei.as_mut_ptr()) }
    }
}

impl Drop for SoHandler {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(deinit) = inner.deinit {
            // SAFETY: the handler's deinit, once, before dlclose.
            let rc = unsafe { deinit() };
            if rc != 0 {
                log::error!(
                    "sync handler {}: clsyncapi_deinit returned {rc}",
                    self.path.display()
                );
            }
        }
        // SAFETY: the handle is live; nothing of the library is used after this (the ctx
        // block it may still point to is ours and freed afterwards).
        if unsafe { libc::dlclose(inner.handle) } != 0 {
            log::error!(
                "sync handler {}: cannot unload it: {}",
                self.path.display(),
                dlerror_string()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Host functions for handlers (see the module doc).

/// Formats a C format string with up to eight word-sized arguments.
///
/// # Safety
/// `fmt` is NULL or a NUL-terminated printf format whose conversions take integer or
/// pointer arguments, at most eight, matching `args`.
unsafe fn format_c(fmt: *const c_char, args: [usize; 8]) -> String {
    if fmt.is_null() {
        return String::new();
    }
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        let mut buf = vec![0u8; 4096];
        let [a0, a1, a2, a3, a4, a5, a6, a7] = args;
        // SAFETY: buf is writable for buf.len() bytes and snprintf writes at most that;
        // fmt is a NUL-terminated format taking at most eight integer or pointer arguments
        // (the caller's promise), and on these targets the C ABI passes word-sized
        // variadic arguments as the named ones, so unused ones are never read as more.
        let n = unsafe {
            libc::snprintf(
                buf.as_mut_ptr().cast(),
                buf.len(),
                fmt,
                a0,
                a1,
                a2,
                a3,
                a4,
                a5,
                a6,
                a7,
            )
        };
        if let Ok(n) = usize::try_from(n) {
            let n = n.min(buf.len() - 1);
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    let _ = args;
    // SAFETY: fmt is not NULL (checked above) and NUL-terminated (the caller's promise).
    unsafe { CStr::from_ptr(fmt) }
        .to_string_lossy()
        .into_owned()
}

/// Where the handler's messages go.
fn emit(level: log::Level, func: *const c_char, msg: String) {
    let func = if func.is_null() {
        String::new()
    } else {
        // SAFETY: the handler passes __func__, a NUL-terminated string.
        unsafe { CStr::from_ptr(func) }
            .to_string_lossy()
            .into_owned()
    };
    let line = format!("sync handler: {func}(): {msg}");
    #[cfg(test)]
    tests::CAPTURED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((level, line.clone()));
    log::log!(level, "{line}");
}

/// `clsyncapi_getapiversion()`: the API version this host speaks.
#[no_mangle]
pub extern "C" fn clsyncapi_getapiversion() -> c_int {
    CLSYNC_API_VERSION
}

/// `clsyncapi_fork(ctx)`: `fork(2)`. The ctx is not used.
///
/// # Safety
/// As `fork(2)` in a multi-threaded process: the child may only call async-signal-safe
/// functions until it execs.
#[no_mangle]
pub unsafe extern "C" fn clsyncapi_fork(_ctx: *mut c_void) -> libc::pid_t {
    // SAFETY: the caller's promise above: the child only execs (or calls async-signal-safe
    // functions) and never returns into our code with our threads gone.
    unsafe { libc::fork() }
}

/// Defines one of the logging functions a handler calls as `NAME(func, fmt, ...)`.
macro_rules! log_fn {
    ($(#[$doc:meta])* $name:ident, $level:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// `func` NULL or a C string; `fmt` a printf format whose conversions take integer
        /// or pointer arguments, at most eight, and that many arguments.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $name(
            func: *const c_char,
            fmt: *const c_char,
            a0: usize,
            a1: usize,
            a2: usize,
            a3: usize,
            a4: usize,
            a5: usize,
            a6: usize,
            a7: usize,
        ) {
            // SAFETY: fmt and its arguments are as format_c wants them (the caller's
            // promise).
            let msg = unsafe { format_c(fmt, [a0, a1, a2, a3, a4, a5, a6, a7]) };
            emit($level, func, msg);
        }
    };
}

log_fn!(
    /// `_error(func, fmt, ...)`, what the original's `error()` macro calls.
    _error,
    log::Level::Error
);
log_fn!(
    /// `_warning(func, fmt, ...)`.
    _warning,
    log::Level::Warn
);
log_fn!(
    /// `_info(func, fmt, ...)`.
    _info,
    log::Level::Info
);

/// `_debug(level, func, fmt, ...)`: levels 1 and 2 are debug messages, higher ones trace.
///
/// # Safety
/// As [`_error`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn _debug(
    level: c_int,
    func: *const c_char,
    fmt: *const c_char,
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
    a7: usize,
) {
    let lvl = if level <= 2 {
        log::Level::Debug
    } else {
        log::Level::Trace
    };
    if !log::log_enabled!(lvl) && !cfg!(test) {
        return;
    }
    // SAFETY: fmt and its arguments are as format_c wants them (the caller's promise).
    let msg = unsafe { format_c(fmt, [a0, a1, a2, a3, a4, a5, a6, a7]) };
    emit(lvl, func, msg);
}

/// `_critical(func, fmt, ...)`: logs and exits with `errno` (1 if it is 0), as the
/// original does.
///
/// # Safety
/// As [`_error`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn _critical(
    func: *const c_char,
    fmt: *const c_char,
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
    a7: usize,
) {
    let errno = std::io::Error::last_os_error();
    // SAFETY: fmt and its arguments are as format_c wants them (the caller's promise).
    let msg = unsafe { format_c(fmt, [a0, a1, a2, a3, a4, a5, a6, a7]) };
    emit(
        log::Level::Error,
        func,
        format!("critical: {msg} (errno: {errno})"),
    );
    log::logger().flush();
    std::process::exit(errno.raw_os_error().filter(|&e| e != 0).unwrap_or(1));
}

/// Exits the process for an allocation that failed, as the original's allocators do.
fn out_of_memory(what: &str, size: usize) -> ! {
    log::error!("sync handler: {what}: cannot allocate {size} bytes");
    log::logger().flush();
    std::process::exit(libc::ENOMEM);
}

/// `xmalloc(size)`: `malloc(3)` that exits on failure.
///
/// # Safety
/// As `malloc(3)`.
#[no_mangle]
pub unsafe extern "C" fn xmalloc(size: libc::size_t) -> *mut c_void {
    // SAFETY: malloc(3) with the caller's arguments, as is.
    let p = unsafe { libc::malloc(size) };
    if p.is_null() && size != 0 {
        out_of_memory("xmalloc", size);
    }
    p
}

/// `xcalloc(nmemb, size)`: `calloc(3)` that exits on failure.
///
/// # Safety
/// As `calloc(3)`.
#[no_mangle]
pub unsafe extern "C" fn xcalloc(nmemb: libc::size_t, size: libc::size_t) -> *mut c_void {
    // SAFETY: calloc(3) with the caller's arguments, as is.
    let p = unsafe { libc::calloc(nmemb, size) };
    if p.is_null() && nmemb != 0 && size != 0 {
        out_of_memory("xcalloc", nmemb.saturating_mul(size));
    }
    p
}

/// `xrealloc(ptr, size)`: `realloc(3)` that exits on failure.
///
/// # Safety
/// As `realloc(3)`.
#[no_mangle]
pub unsafe extern "C" fn xrealloc(ptr: *mut c_void, size: libc::size_t) -> *mut c_void {
    // SAFETY: realloc(3) with the caller's arguments, as is. ptr is NULL or from this allocator (the caller's promise).
    let p = unsafe { libc::realloc(ptr, size) };
    if p.is_null() && size != 0 {
        out_of_memory("xrealloc", size);
    }
    p
}

#[cfg(test)]
mod tests;
