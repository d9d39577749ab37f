//! The original clsync's sandbox options start a confined worker: `clsync
//! --secure-splitting SRC DST` (and each option that asks for confinement, and a `-H`
//! block with `secure-splitting = 1`) runs a worker with no-new-privileges, a seccomp
//! filter and Landlock that still mirrors a changing tree; the options that change nothing
//! here leave the worker unconfined, which shows the check can tell the two apart.

use crate::common;

use common::*;
use std::ffi::OsString;

/// `NoNewPrivs` and `Seccomp` of a process, from /proc/PID/status.
fn proc_flags(pid: i32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let get = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (get("NoNewPrivs:"), get("Seccomp:"))
}

/// Changes the tree after the start, waits for the mirror, and returns the worker's
/// (NoNewPrivs, Seccomp, log).
fn mirror_and_flags(t: &TestDir, w: &mut Worker) -> (String, String, String) {
    w.wait_synced(SYNC_TIMEOUT);
    mkdir(&t.s(b"a/b"));
    write(&t.s(b"a/b/two"), b"22");
    rename(&t.s(b"a/one"), &t.s(b"a/b/one"));
    write(&t.s(b"x"), b"333");
    w.wait_synced(SYNC_TIMEOUT);
    remove_dir_all(&t.s(b"a/b"));
    w.wait_synced(SYNC_TIMEOUT);
    let (nnp, seccomp) = proc_flags(w.pid().as_raw());
    (nnp, seccomp, w.stderr())
}

fn tree(name: &str) -> TestDir {
    let t = TestDir::new(name);
    mkdir(&t.s(b"a"));
    write(&t.s(b"a/one"), b"1");
    symlink(b"one", &t.s(b"a/link"));
    t
}

/// `clsync OPTIONS SRC DST`: confined (`true`) or not, and mirroring either way.
fn run(name: &str, (options, confined): (&[&str], bool)) {
    let t = tree(&name.replace('_', "-"));
    let run = t.root.join("run");
    mkdir(&run);
    let mut w = Worker::start_in(&run, &t.src, &t.dst, options);
    let (nnp, seccomp, log) = mirror_and_flags(&t, &mut w);
    if confined {
        assert_eq!(
            (nnp.as_str(), seccomp.as_str()),
            ("1", "2"),
            "{options:?}: the worker (and all it runs) has no-new-privileges and a seccomp filter\n{log}"
        );
        assert!(
            log.contains("sandbox: landlock full, seccomp ("),
            "{options:?}: the worker tells what it applied:\n{log}"
        );
    } else {
        assert_eq!(
            (nnp.as_str(), seccomp.as_str()),
            ("0", "0"),
            "{options:?}: not confined\n{log}"
        );
        assert!(!log.contains("sandbox:"), "{options:?}:\n{log}");
    }
    w.stop_ok();
}

cases! { run;
    secure_splitting_confines: (&["--secure-splitting"], true),
    splitting_process_confines: (&["--splitting", "process"], true),
    splitting_thread_confines: (&["--splitting=thread"], true),
    seccomp_filter_confines: (&["--seccomp-filter"], true),
    check_execvp_arguments_confines: (&["--check-execvp-arguments"], true),
    forbid_devices_confines: (&["--forbid-devices"], true),
    detach_miscellanea_confines: (&["--detach-miscellanea"], true),
    detach_network_everywhere_confines: (&["--detach-network=everywhere"], true),
    mountpoints_confine: (&["--mountpoints=/usr,/var"], true),
    secure_splitting_with_every_other_option_confines: (&[
        "--secure-splitting", "--check-execvp-arguments", "--seccomp-filter",
        "--permit-mprotect=0", "--shm-mprotect", "--forget-privthread-info",
        "--detach-ipc=1", "--detach-network", "non-privileged", "--forbid-devices",
        "--cgroup-group-name=clsync/%PID%", "--cancel-syscalls=mon_stat", "--pivot-root=off",
        "--add-permitted-hook-files=/bin/true", "--privileged-uid=0", "--privileged-gid=0",
    ], true),
    splitting_off_does_not_confine: (&["--splitting=off"], false),
    permit_mprotect_does_not_confine: (&["--permit-mprotect"], false),
    detach_network_off_does_not_confine: (&["--detach-network=off", "--detach-ipc=0"], false),
    seccomp_filter_0_does_not_confine: (&["--seccomp-filter=0"], false),
}

/// A `-H` block with the original's `secure-splitting = 1` runs confined too.
#[test]
fn an_h_block_with_secure_splitting_confines() {
    let t = tree("orig-sandbox-ini");
    let run = t.root.join("run");
    mkdir(&run);
    let status = run.join("status");
    let ini = t.root.join("clsync.conf");
    write(
        &ini,
        format!(
            "[b]\nmode = rsyncdirect\nwatch-dir = {}\ndestination-dir = {}\n\
             status-file = {}\nsecure-splitting = 1\ndetach-ipc = 1\n",
            t.src.display(),
            t.dst.display(),
            status.display()
        )
        .as_bytes(),
    );
    let args: Vec<OsString> = ["-H".into(), ini.into(), "-K".into(), "b".into()]
        .into_iter()
        .chain(["-t", "0.1", "-w", "0.1"].map(OsString::from))
        .collect();
    let mut w = Worker::start_raw(&run, &t.src, &t.dst, &status, &args);
    let (nnp, seccomp, log) = mirror_and_flags(&t, &mut w);
    assert_eq!((nnp.as_str(), seccomp.as_str()), ("1", "2"), "{log}");
    assert!(log.contains("sandbox: landlock full, seccomp ("), "{log}");
    // The no-effect key is named with its reason, not dropped silently.
    assert!(
        log.contains("[b] detach-ipc: no effect of its own"),
        "{log}"
    );
    w.stop_ok();
}

// ---------------------------------------------------------------------------
// --chroot
// ---------------------------------------------------------------------------

/// Builds `t.root/jail` the way a site would for the original's `--chroot`, inside a
/// private mount namespace (gone when the worker exits): `/usr`, `/etc`, `/dev` and
/// `/proc` bind-mounted, `/bin`, `/lib`, `/lib64`, `/sbin` as the same symbolic links into /usr,
/// and each of `binds` bind-mounted at its own path. Then runs `clsync ARGS` there with
/// TMPDIR=`tmpdir` (where the worker makes its lists directory). The script ends by
/// exec'ing clsync, so the child's pid is the worker's.
fn in_jail(
    t: &TestDir,
    binds: &[&std::path::Path],
    tmpdir: &std::path::Path,
    args: &[OsString],
) -> std::process::Command {
    let jail = t.root.join("jail");
    mkdir(&jail);
    let script = r#"set -e
j=$1; shift
for d in usr etc dev proc; do mkdir -p "$j/$d"; mount --bind "/$d" "$j/$d"; done
for l in bin lib lib64 sbin; do [ -L "/$l" ] && ln -sfn "$(readlink "/$l")" "$j/$l"; done
while [ "$1" != -- ]; do mkdir -p "$j$1"; mount --bind "$1" "$j$1"; shift; done
shift
exec "$@"
"#;
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(&jail);
    cmd.args(binds).arg("--").arg(BIN).args(args);
    cmd.env("TMPDIR", tmpdir).stdin(std::process::Stdio::null());
    cmd
}

fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip("a chroot and bind mounts need root");
    false
}

/// `clsync --chroot JAIL [OPTIONS] SRC DST` with the test's tree bind-mounted at the same
/// path inside: the worker's root is the jail (/proc/PID/root), it mirrors changes made
/// after the start (new directories are watched by path, inside the jail), and it stops
/// cleanly.
fn chroot_run(name: &str, options: &[&str]) {
    if !need_root() {
        return;
    }
    let t = tree(&name.replace('_', "-"));
    let run = t.root.join("run");
    mkdir(&run);
    let status = run.join("status");
    let jail = t.root.join("jail");
    let mut args: Vec<OsString> = vec!["--chroot".into(), jail.clone().into()];
    args.extend(options.iter().map(OsString::from));
    args.extend(["-t", "0.1", "-w", "0.1", "--status-file"].map(OsString::from));
    args.extend([
        status.clone().into(),
        t.src.clone().into(),
        t.dst.clone().into(),
    ]);
    let log = run.join("stderr");
    let mut cmd = in_jail(&t, &[&t.root], &run, &args);
    cmd.stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    wait_until(READY_TIMEOUT, "the worker in the jail is running", || {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the worker exited: {st}\n{}", read_lossy(&log));
        }
        (read_lossy(&status).trim() == "running")
            .then_some(())
            .ok_or_else(|| read_lossy(&log))
    });
    let root = std::fs::read_link(format!("/proc/{}/root", child.id())).unwrap();
    assert_eq!(root, jail, "the worker's root\n{}", read_lossy(&log));
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
    mkdir(&t.s(b"a/b"));
    write(&t.s(b"a/b/two"), b"22");
    rename(&t.s(b"a/one"), &t.s(b"a/b/one"));
    write(&t.s(b"x"), b"333");
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
    write(&t.s(b"a/b/three"), b"3");
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
    let text = read_lossy(&log);
    assert!(
        text.contains(&format!("chroot: the root is now {}", jail.display())),
        "{text}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{}", read_lossy(&log));
    if options.contains(&"--secure-splitting") {
        assert!(
            text.contains("sandbox: landlock full, seccomp ("),
            "confined inside the jail:\n{text}"
        );
    }
}

cases! { chroot_run;
    chroot_mirrors_inside_the_jail: &[],
    chroot_with_secure_splitting_and_pivot_root_mirrors_confined: &["--secure-splitting", "--pivot-root=auto-ro"],
}

/// A jail that lacks a bind mount is refused at start (exit 3), in one line naming the
/// path and the bind mount to make, before anything is synced: first the watch tree (the
/// destination alone is bound), then the lists directory (the tree is bound, TMPDIR is not).
#[test]
fn chroot_refuses_a_missing_bind_mount_naming_it() {
    if !need_root() {
        return;
    }
    let t = tree("orig-sandbox-chroot-missing");
    let jail = t.root.join("jail");
    let args: Vec<OsString> = vec![
        "--chroot".into(),
        jail.clone().into(),
        "--only-initialsync".into(),
        t.src.clone().into(),
        t.dst.clone().into(),
    ];
    let (status, err) = run_within(&mut in_jail(&t, &[&t.dst], &t.root, &args), SYNC_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let src = t.src.display();
    let inside = format!("{}{}", jail.display(), t.src.display());
    assert!(
        err.contains(&format!(
            "--chroot {}: the watch directory {src} is not at the same path inside it ({inside} is missing): bind-mount it there (mount --bind {src} {inside})",
            jail.display()
        )),
        "{err}"
    );
    assert!(!t.d(b"a").exists(), "nothing was synced");

    // The tree is there now, but the lists directory (made in TMPDIR) is not.
    let tmp = tempfile::tempdir().unwrap();
    let tmp = std::fs::canonicalize(tmp.path()).unwrap();
    std::fs::remove_dir_all(&jail).unwrap();
    let (status, err) = run_within(
        &mut in_jail(&t, &[&t.src, &t.dst], &tmp, &args),
        SYNC_TIMEOUT,
    );
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{err}");
    assert!(
        err.contains(&format!("the lists directory {}/", tmp.display()))
            && err.contains("is missing): bind-mount it there (mount --bind "),
        "{err}"
    );
    assert!(!t.d(b"a").exists(), "nothing was synced");
}

/// Without the sandbox, `--pivot-root` other than off needs `--chroot`, as in the
/// original: refused at once.
#[test]
fn pivot_root_without_chroot_is_refused() {
    let t = tree("orig-sandbox-pivot");
    let (status, err) = run_within(
        std::process::Command::new(BIN)
            .args(["--pivot-root=auto"])
            .arg(&t.src)
            .arg(&t.dst),
        SYNC_TIMEOUT,
    );
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{err}");
    assert!(
        err.contains("--pivot-root needs --chroot, as in the original"),
        "{err}"
    );
    assert!(!t.d(b"a").exists(), "nothing was synced");
}
