use super::*;

/// Conveniences of the tests alone.
impl SoHandler {
    /// Checks ownership and permissions like the original, `dlopen(RTLD_NOW |
    /// RTLD_LOCAL)`, resolves the symbols and calls `clsyncapi_init` if present; either
    /// entry point will do.
    fn load(
        path: &Path,
        watch_dir: &Path,
        destination_dir: &Path,
        label: &str,
    ) -> Result<SoHandler, String> {
        Self::load_with(
            path,
            watch_dir,
            destination_dir,
            label,
            &SoOptions::default(),
        )
    }

    /// The file it was loaded from.
    fn path(&self) -> &Path {
        &self.path
    }

    /// Exports `clsyncapi_rsync`.
    fn has_rsync(&self) -> bool {
        self.has_rsync
    }

    /// Exports `clsyncapi_sync`.
    fn has_sync(&self) -> bool {
        self.has_sync
    }
}
use std::mem::offset_of;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;

/// Messages of the host logging functions, for the tests.
pub(super) static CAPTURED: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

/// A scratch tree: the handler compiled into `dir/handler.so` (0755, ours), a watch
/// and a destination directory. The handler logs into `dst/so_handler.log`.
struct Fixture {
    _tmp: tempfile::TempDir,
    so: PathBuf,
    src: PathBuf,
    dst: PathBuf,
}

impl Fixture {
    fn new(defines: &[&str]) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let so = root.join("handler.so");
        let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/so_handler.c");
        let out = Command::new("gcc")
            .args(["-shared", "-fPIC", "-Wall", "-Werror", "-o"])
            .arg(&so)
            .args(defines)
            .arg(&c)
            .output()
            .expect("gcc is needed for the so handler tests");
        assert!(
            out.status.success(),
            "gcc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::set_permissions(&so, std::fs::Permissions::from_mode(0o755)).unwrap();
        let src = root.join("src");
        let dst = root.join("dst");
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        Fixture {
            _tmp: tmp,
            so,
            src,
            dst,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dst.join("so_handler.log")).unwrap_or_default()
    }

    /// What the handler records at init.
    fn init_lines(&self, label: &str, flags: &str) -> String {
        let api = if host_api_exported() {
            "2"
        } else {
            "not exported"
        };
        let (src, dst) = (self.src.display(), self.dst.display());
        let level = self.src.to_str().unwrap().matches('/').count();
        format!(
            "init\n  api version: {api}\n  label: {label}\n  watchdir: {src} ({})\n  \
             watchdirwslash: {src}/\n  dirlevel: {level}\n  destdir: {dst} ({})\n  \
             destdirwslash: {dst}/\n  destproto: (null)\n  handler: {}\n  flags: {flags}\n  \
             indexes: same as ctx, zeroed\n",
            src.to_string().len(),
            dst.to_string().len(),
            self.so.display(),
        )
    }
}

fn ev(path: &str, evmask: u32, flags: u32, old: u8, new: u8) -> SoEvent {
    SoEvent {
        path: path.as_bytes().to_vec(),
        evmask,
        flags,
        objtype_old: old,
        objtype_new: new,
    }
}

#[test]
fn handler_records_init_sync_rsync_and_deinit_exactly() {
    let f = Fixture::new(&[]);
    let h = SoHandler::load(&f.so, &f.src, &f.dst, "site").unwrap();
    assert!(h.has_sync() && h.has_rsync());
    assert_eq!(h.path(), f.so.as_path());

    let rc = h.sync(&[
        ev("", 0x100, EVIF_RECURSIVELY, EOT_DIR, EOT_DIR),
        ev("a/b.txt", 0x8, 0, EOT_DOESNTEXIST, EOT_FILE),
        ev(
            "gone dir",
            0x200,
            EVIF_CONTENTRECURSIVELY,
            EOT_DIR,
            EOT_DOESNTEXIST,
        ),
    ]);
    assert_eq!(rc, 0);
    assert_eq!(h.sync(&[ev("fail", 0x2, 0, EOT_FILE, EOT_FILE)]), 5);
    // No events, no call.
    assert_eq!(h.sync(&[]), 0);

    let inc = f.dst.join("inc.list");
    let exc = f.dst.join("exc.list");
    std::fs::write(&inc, "+ /a/\n+ /a/b.txt\n- *\n").unwrap();
    std::fs::write(&exc, "- /tmp/\n").unwrap();
    assert_eq!(h.rsync(&inc, Some(&exc)), 0);

    // From another thread, as the runner calls it.
    let h = Arc::new(h);
    let h2 = Arc::clone(&h);
    let inc2 = inc.clone();
    let rc = std::thread::spawn(move || h2.rsync(&inc2, None))
        .join()
        .unwrap();
    assert_eq!(rc, 3);
    drop(Arc::into_inner(h).unwrap());

    let want = format!(
        "{}sync 3\n  \"\" len=0 mask=0x100 flags=1 type=3->3\n  \
         \"a/b.txt\" len=7 mask=0x8 flags=0 type=1->2\n  \
         \"gone dir\" len=8 mask=0x200 flags=2 type=3->1\n\
         sync 1\n  \"fail\" len=4 mask=0x2 flags=0 type=2->2\n\
         rsync\n  inclist: {inc}\n  inc: + /a/\n  inc: + /a/b.txt\n  inc: - *\n  \
         exclist: {exc}\n  exc: - /tmp/\n\
         rsync\n  inclist: {inc}\n  inc: + /a/\n  inc: + /a/b.txt\n  inc: - *\n  \
         exclist: (null)\n\
         deinit\n",
        f.init_lines("site", "mode=0 debug=0 threading=0 rsyncpreferinclude=0"),
        inc = inc.display(),
        exc = exc.display(),
    );
    assert_eq!(f.log(), want);

    if host_api_exported() {
        let captured = CAPTURED.lock().unwrap();
        assert!(captured.iter().any(|(l, m)| *l == log::Level::Info
            && m == "sync handler: clsyncapi_init(): hello from so_handler, pid 42, bye"));
    }
}

#[test]
fn options_fill_the_mode_and_flags() {
    let f = Fixture::new(&[]);
    let opts = SoOptions {
        mode: Some(SoMode::So),
        debug: 3,
        rsync_prefer_include: true,
        layout: CtxLayout::Capabilities,
    };
    let h = SoHandler::load_with(&f.so, &f.src, &f.dst, "opts", &opts).unwrap();
    drop(h);
    let want = f.init_lines("opts", "mode=7 debug=3 threading=0 rsyncpreferinclude=1") + "deinit\n";
    assert_eq!(f.log(), want);
}

#[test]
fn the_layout_without_capabilities_moves_the_fields() {
    let f = Fixture::new(&["-DNO_CAPS"]);
    let opts = SoOptions {
        mode: Some(SoMode::RsyncSo),
        debug: 2,
        rsync_prefer_include: false,
        layout: CtxLayout::NoCapabilities,
    };
    let h = SoHandler::load_with(&f.so, &f.src, &f.dst, "nocaps", &opts).unwrap();
    let events = [ev("x", 0x8, 0, EOT_FILE, EOT_FILE)];
    assert_eq!(h.sync(&events), 0);
    drop(h);
    let want = f.init_lines("nocaps", "mode=6 debug=2 threading=0 rsyncpreferinclude=0")
        + "sync 1\n  \"x\" len=1 mask=0x8 flags=0 type=2->2\ndeinit\n";
    assert_eq!(f.log(), want);

    // The same handler with the default layout reads NULL for destdir, cannot open
    // "(null)/so_handler.log" and refuses to start.
    let err = SoHandler::load(&f.so, &f.src, &f.dst, "nocaps").unwrap_err();
    assert_eq!(
        err,
        format!(
            "sync handler {}: clsyncapi_init returned 2; not using it",
            f.so.display()
        )
    );
}

#[test]
fn the_mode_requires_its_entry_point() {
    let f = Fixture::new(&["-DNO_RSYNC"]);
    let opts = SoOptions {
        mode: Some(SoMode::RsyncSo),
        ..SoOptions::default()
    };
    let err = SoHandler::load_with(&f.so, &f.src, &f.dst, "x", &opts).unwrap_err();
    assert_eq!(
        err,
        format!(
            "sync handler {}: does not export clsyncapi_rsync, required in rsyncso mode; \
             refusing to use it",
            f.so.display()
        )
    );
    // Refused before init: nothing recorded.
    assert_eq!(f.log(), "");

    let opts = SoOptions {
        mode: Some(SoMode::So),
        ..SoOptions::default()
    };
    let h = SoHandler::load_with(&f.so, &f.src, &f.dst, "x", &opts).unwrap();
    assert!(h.has_sync() && !h.has_rsync());
    assert_eq!(h.rsync(Path::new("/nonexistent"), None), libc::ENOSYS);
}

#[test]
fn a_failing_init_refuses_the_handler_without_deinit() {
    let f = Fixture::new(&[]);
    let err = SoHandler::load(&f.so, &f.src, &f.dst, "fail-init").unwrap_err();
    assert_eq!(
        err,
        format!(
            "sync handler {}: clsyncapi_init returned 7; not using it",
            f.so.display()
        )
    );
    let want = f.init_lines(
        "fail-init",
        "mode=0 debug=0 threading=0 rsyncpreferinclude=0",
    );
    assert_eq!(f.log(), want);
}

#[test]
fn group_or_world_writable_or_special_bits_are_refused() {
    let f = Fixture::new(&[]);
    for (mode, why) in [
        (0o664, "writable by group or others (mode 0664)"),
        (0o646, "writable by group or others (mode 0646)"),
        (0o4755, "has the setuid, setgid or sticky bit (mode 4755)"),
        (0o1755, "has the setuid, setgid or sticky bit (mode 1755)"),
    ] {
        std::fs::set_permissions(&f.so, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = SoHandler::load(&f.so, &f.src, &f.dst, "x").unwrap_err();
        assert_eq!(
            err,
            format!(
                "sync handler {}: {why}; refusing to load it",
                f.so.display()
            )
        );
    }
    assert_eq!(f.log(), "");
}

#[test]
fn a_directory_above_that_others_may_write_to_is_refused() {
    let f = Fixture::new(&[]);
    let dir = f.so.parent().unwrap().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = SoHandler::load(&f.so, &f.src, &f.dst, "x").unwrap_err();
    assert!(
        err.starts_with(&format!(
            "refusing sync handler {}: directory {} is owned by uid 0 (root), mode 0777",
            f.so.display(),
            dir.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("fix: chmod go-w {}", dir.display())),
        "{err}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(f.log(), "");
}

#[test]
fn missing_file_directory_and_foreign_owner_are_refused() {
    let f = Fixture::new(&[]);
    let missing = f.src.join("nope.so");
    let err = SoHandler::load(&missing, &f.src, &f.dst, "x").unwrap_err();
    assert_eq!(
        err,
        format!(
            "sync handler {}: cannot open it: No such file or directory (os error 2)",
            missing.display()
        )
    );

    let err = SoHandler::load(&f.src, &f.src, &f.dst, "x").unwrap_err();
    assert_eq!(
        err,
        format!(
            "sync handler {}: not a regular file; refusing to load it",
            f.src.display()
        )
    );

    let me = nix::unistd::getuid().as_raw();
    if me == 0 {
        std::os::unix::fs::chown(&f.so, Some(54321), None).unwrap();
        let err = SoHandler::load(&f.so, &f.src, &f.dst, "x").unwrap_err();
        assert_eq!(
            err,
            format!(
                "sync handler {}: owned by uid 54321, not by root, by the user running \
                 clsync (uid 0) or by the owner of the clsync binary; refusing to load it",
                f.so.display()
            )
        );
    }
    assert_eq!(f.log(), "");
}

#[test]
fn a_file_that_is_no_library_fails_to_load() {
    let f = Fixture::new(&[]);
    let bogus = f.src.join("bogus.so");
    std::fs::write(&bogus, "not an ELF file").unwrap();
    std::fs::set_permissions(&bogus, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = SoHandler::load(&bogus, &f.src, &f.dst, "x").unwrap_err();
    let prefix = format!("sync handler {}: cannot load it: ", bogus.display());
    assert!(err.starts_with(&prefix), "{err}");
}

#[test]
fn handler_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SoHandler>();
}

#[test]
fn destproto_follows_the_original() {
    assert_eq!(destproto(b"/backup"), None);
    assert_eq!(destproto(b"user@host:/backup"), Some(b"rsync+ssh".to_vec()));
    assert_eq!(destproto(b"host:/backup"), None);
    assert_eq!(destproto(b"rsync://host/mod"), Some(b"rsync:".to_vec()));
    assert_eq!(destproto(b"Rsync://host/mod"), None);
}

/// The layout of `struct ctx` and `api_eventinfo_t`, as the original's headers give it
/// with gcc on x86-64 (and as the Debian clsync 0.4.5 binary uses it).
#[test]
#[cfg(target_arch = "x86_64")]
fn ctx_layout_matches_the_original() {
    assert_eq!(std::mem::size_of::<ApiEventInfo>(), 32);
    assert_eq!(offset_of!(ApiEventInfo, path_len), 8);
    assert_eq!(offset_of!(ApiEventInfo, path), 16);
    assert_eq!(offset_of!(ApiEventInfo, objtype_old), 24);
    assert_eq!(offset_of!(ApiEventInfo, objtype_new), 28);

    assert_eq!(std::mem::size_of::<RuleAbi>(), 88);
    for (off, want) in [
        (offset_of!(CtxAbi, pid_str_len), 80),
        (offset_of!(CtxAbi, uid), 88),
        (offset_of!(CtxAbi, synchandler_gid), 108),
        (offset_of!(CtxAbi, child_pid), 116),
        (offset_of!(CtxAbi, children), 1140),
        (offset_of!(CtxAbi, iteration_num), 1144),
        (offset_of!(CtxAbi, rules), 1152),
        (offset_of!(CtxAbi, rules_count), 23680),
        (offset_of!(CtxAbi, st_dev), 23688),
        (offset_of!(CtxAbi, flags_values_raw), 23696),
        (offset_of!(CtxAbi, flags), 31888),
        (offset_of!(CtxAbi, flags_set), 35984),
        (offset_of!(CtxAbi, config_path), 40080),
        (offset_of!(CtxAbi, customsignal), 40096),
        (offset_of!(CtxAbi, label), 44200),
        (offset_of!(CtxAbi, watchdir), 44208),
        (offset_of!(CtxAbi, destdir), 44248),
        (offset_of!(CtxAbi, destproto), 44256),
        (offset_of!(CtxAbi, watchdirwslash), 44264),
        (offset_of!(CtxAbi, destdirwslash), 44272),
        (offset_of!(CtxAbi, socket), 44304),
        (offset_of!(CtxAbi, socketgid), 44316),
        (offset_of!(CtxAbi, watchdirlen), 44320),
        (offset_of!(CtxAbi, destdirwslashsize), 44360),
        (offset_of!(CtxAbi, watchdir_dirlevel), 44368),
        (offset_of!(CtxAbi, handlerfpath), 44376),
        (offset_of!(CtxAbi, handler_handle), 44384),
        (offset_of!(CtxAbi, handler_funct), 44392),
        (offset_of!(CtxAbi, rulfpath), 44424),
        (offset_of!(CtxAbi, listoutdir), 44440),
        (offset_of!(CtxAbi, notifyenginefunct), 44448),
        (offset_of!(CtxAbi, retries), 44472),
        (offset_of!(CtxAbi, bfilethreshold), 44480),
        (offset_of!(CtxAbi, syncdelay), 44488),
        (offset_of!(CtxAbi, queues), 44496),
        (offset_of!(CtxAbi, rsyncinclimit), 44560),
        (offset_of!(CtxAbi, synctime), 44568),
        (offset_of!(CtxAbi, synctimeout), 44576),
        (offset_of!(CtxAbi, sigset), 44584),
        (offset_of!(CtxAbi, isignoredexitcode), 44592),
        (offset_of!(CtxAbi, blockthread), 44848),
        (offset_of!(CtxAbi, blockthread_count), 44976),
        (offset_of!(CtxAbi, chroot_dir), 44984),
        (offset_of!(CtxAbi, synchandler_args), 49120),
        (offset_of!(CtxAbi, synchandler_argf), 53744),
        (offset_of!(CtxAbi, indexes_p), 53752),
        (offset_of!(CtxAbi, fsmondata), 53760),
    ] {
        assert_eq!(off, want);
    }
    assert_eq!(std::mem::size_of::<CtxAbi>(), 53768);
}

#[test]
fn host_api_version_is_2() {
    assert_eq!(clsyncapi_getapiversion(), 2);
}

/// The logging functions, called the way a C handler calls them: through a variadic
/// prototype.
#[test]
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn host_logging_formats_variadic_arguments() {
    type Variadic = unsafe extern "C" fn(*const c_char, *const c_char, ...);
    type DebugVariadic = unsafe extern "C" fn(c_int, *const c_char, *const c_char, ...);
    // SAFETY: the C ABI passes variadic integer and pointer arguments as named ones on
    // these targets, which is what the host functions rely on.
    unsafe {
        let error: Variadic = std::mem::transmute(_error as *const ());
        let debug: DebugVariadic = std::mem::transmute(_debug as *const ());
        error(
            c"handler_fn".as_ptr(),
            c"%s=%d, %lu; %s %s %s %s %s".as_ptr(),
            c"answer".as_ptr(),
            42 as c_int,
            7_000_000_000u64 as libc::c_ulong,
            c"five".as_ptr(),
            c"six".as_ptr(),
            c"seven".as_ptr(),
            c"eight".as_ptr(),
            c"(8 args)".as_ptr(),
        );
        debug(
            4,
            c"other_fn".as_ptr(),
            c"level %i: %s".as_ptr(),
            4 as c_int,
            c"deep".as_ptr(),
        );
    }
    let captured = CAPTURED.lock().unwrap();
    assert!(captured.contains(&(
        log::Level::Error,
        "sync handler: handler_fn(): answer=42, 7000000000; five six seven eight (8 args)"
            .to_string()
    )));
    assert!(captured.contains(&(
        log::Level::Trace,
        "sync handler: other_fn(): level 4: deep".to_string()
    )));
}
