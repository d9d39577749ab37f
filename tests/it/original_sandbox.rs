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

/// `--chroot` cannot be honoured: refused at once (exit 2) with why and what to use,
/// nothing synced.
#[test]
fn chroot_is_refused_with_the_reason() {
    let t = tree("orig-sandbox-chroot");
    let out = std::process::Command::new(BIN)
        .arg("--chroot")
        .arg(&t.root)
        .arg(&t.src)
        .arg(&t.dst)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("a chroot is not carried out by this clsync")
            && err.contains("--sandbox confines the worker"),
        "{err}"
    );
    assert!(!t.d(b"a").exists(), "nothing was synced");
}
