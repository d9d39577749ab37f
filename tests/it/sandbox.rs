//! The confined worker (`--sandbox`): a shell-mode sync handler probes what it may do and
//! writes what it saw into the destination (which it may write); the same handler run
//! without `--sandbox` shows each probe succeeding, so every refusal is the sandbox's. The
//! default rsync mode still mirrors a tree when confined.

use crate::common;

use common::*;
use std::ffi::OsString;
use std::path::Path;

/// Writes the probing handler: outside the destination, /etc/shadow, a mount namespace,
/// a TCP socket; each line `NAME: RESULT` where RESULT is `ok` or the last line of the
/// error printed. The results go to `dst/.probe` (via a temporary name and a rename).
fn probe_handler(t: &TestDir) -> std::path::PathBuf {
    let script = t.root.join("probe.sh");
    let text = format!(
        r#"#!/bin/sh
d='{dst}'
o='{outside}'
try() {{ name=$1; shift; if out=$("$@" 2>&1 >/dev/null); then echo "$name: ok"; else echo "$name: $(echo "$out" | tail -n 1)"; fi; }}
{{
try outside sh -c "echo x > '$o/written'"
try shadow cat /etc/shadow
try unshare unshare -m true
try socket python3 -c 'import socket; socket.socket()'
mkdir -p "$d/m"
try mount busybox mount -t tmpfs none "$d/m"
}} > "$d/.probe.tmp"
mv "$d/.probe.tmp" "$d/.probe"
"#,
        dst = t.dst.display(),
        outside = t.outside.display(),
    );
    write(&script, text.as_bytes());
    chmod(&script, 0o755);
    script
}

/// Runs a shell-mode worker with the probing handler (`extra`: `--sandbox` or nothing)
/// and returns the probe's lines once the initial sync ran it.
fn probe(t: &TestDir, extra: &[&str]) -> (String, Worker) {
    let script = probe_handler(t);
    // The status file's directory is writable for a confined worker: keep it apart from
    // the test's `outside`.
    let run = t.root.join("run");
    mkdir(&run);
    let status = run.join("status");
    let mut a: Vec<OsString> = vec![
        "-M".into(),
        "shell".into(),
        "-S".into(),
        script.into(),
        "-W".into(),
        t.src.clone().into(),
        "-D".into(),
        t.dst.clone().into(),
        "-l".into(),
        "probe".into(),
        "-t".into(),
        "0.1".into(),
        "-w".into(),
        "0.1".into(),
        "--status-file".into(),
        status.clone().into(),
    ];
    a.extend(extra.iter().map(OsString::from));
    write(&t.s(b"f"), b"1");
    let w = Worker::start_raw(&run, &t.src, &t.dst, &status, &a);
    let probe = t.d(b".probe");
    wait_until(SYNC_TIMEOUT, "the handler's probe results", || {
        probe
            .exists()
            .then_some(())
            .ok_or_else(|| format!("no {}", probe.display()))
    });
    let text = read_lossy(&probe);
    if line(&text, "mount") == "ok" {
        // Unconfined, the tmpfs landed: take it away again.
        let _ = std::process::Command::new("umount").arg(t.d(b"m")).status();
    }
    (text, w)
}

fn line<'a>(probe: &'a str, name: &str) -> &'a str {
    probe
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} line in the probe:\n{probe}"))
}

/// `NoNewPrivs` and `Seccomp` of a process, from /proc/PID/status (read from outside:
/// the handler itself may not read /proc).
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

fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip("the sandbox probes compare with what root may do unconfined");
    false
}

#[test]
fn a_sandboxed_handler_cannot_write_outside_read_shadow_or_mount() {
    if !need_root() {
        return;
    }
    let t = TestDir::new("sandbox-probe");
    let (probe, mut w) = probe(&t, &["--sandbox"]);
    assert!(
        line(&probe, "outside").contains("Permission denied"),
        "{probe}"
    );
    assert!(!t.o(b"written").exists(), "the handler wrote outside");
    assert!(
        line(&probe, "shadow").contains("Permission denied"),
        "{probe}"
    );
    assert!(
        line(&probe, "unshare").contains("Operation not permitted"),
        "{probe}"
    );
    // busybox says this for EPERM from mount(2) (and only for EPERM).
    assert!(
        line(&probe, "mount").contains("permission denied (are you root?)"),
        "{probe}"
    );
    assert_eq!(
        proc_flags(w.pid().as_raw()),
        ("1".to_string(), "2".to_string()),
        "the worker (and so all it runs) has no-new-privileges and a seccomp filter"
    );
    // No remote destination: a TCP socket is refused.
    assert!(
        line(&probe, "socket").contains("PermissionError: [Errno 1] Operation not permitted"),
        "{probe}"
    );
    let log = w.stderr();
    assert!(
        log.contains("sandbox: landlock full, seccomp ("),
        "the worker tells what it applied:\n{log}"
    );
    w.stop_ok();
}

/// The control: the same handler, unconfined, does each of these (as root).
#[test]
fn without_sandbox_the_same_handler_writes_outside_reads_shadow_and_mounts() {
    if !need_root() {
        return;
    }
    let t = TestDir::new("sandbox-probe-off");
    let (probe, mut w) = probe(&t, &[]);
    for name in ["outside", "shadow", "unshare", "socket"] {
        assert_eq!(line(&probe, name), "ok", "{name}:\n{probe}");
    }
    assert!(t.o(b"written").exists());
    assert_eq!(line(&probe, "mount"), "ok", "{probe}");
    let (nnp, _) = proc_flags(w.pid().as_raw());
    assert_eq!(nnp, "0");
    w.stop_ok();
}

#[test]
fn a_sandboxed_worker_mirrors_a_tree_with_rsync() {
    let t = TestDir::new("sandbox-mirror");
    mkdir(&t.s(b"a"));
    write(&t.s(b"a/one"), b"1");
    symlink(b"one", &t.s(b"a/link"));
    let run = t.root.join("run");
    mkdir(&run);
    let mut w = Worker::start_in(&run, &t.src, &t.dst, &["--sandbox"]);
    w.wait_synced(SYNC_TIMEOUT);
    mkdir(&t.s(b"a/b"));
    write(&t.s(b"a/b/two"), b"22");
    rename(&t.s(b"a/one"), &t.s(b"a/b/one"));
    write(&t.s(b"x"), b"333");
    w.wait_synced(SYNC_TIMEOUT);
    remove_dir_all(&t.s(b"a/b"));
    w.wait_synced(SYNC_TIMEOUT);
    assert!(Path::new(&t.d(b"x")).exists());
    let log = w.stderr();
    assert!(log.contains("sandbox: landlock"), "{log}");
    w.stop_ok();
}

/// A kernel without Landlock, as the worker sees it: `landlock_create_ruleset` gives
/// ENOSYS (a seccomp filter set in the child before exec). The worker says so in exactly
/// one warning and mirrors with the rest of the sandbox on.
#[test]
fn without_landlock_one_warning_and_the_mirror_works() {
    use std::os::unix::process::CommandExt;
    let t = TestDir::new("sandbox-no-landlock");
    write(&t.s(b"f"), b"1");
    let rules = [(libc::SYS_landlock_create_ruleset, Vec::new())]
        .into_iter()
        .collect();
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::ENOSYS as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let prog: seccompiler::BpfProgram = filter.try_into().unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--sandbox", "--only-initialsync"])
        .arg(&t.src)
        .arg(&t.dst)
        .stdin(std::process::Stdio::null());
    // SAFETY: apply_filter makes two system calls on a program built before the fork.
    unsafe {
        cmd.pre_exec(move || seccompiler::apply_filter(&prog).map_err(std::io::Error::other));
    }
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(std::fs::read(t.d(b"f")).unwrap(), b"1", "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("does not enforce Landlock"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        log.contains("sandbox: landlock none, seccomp ("),
        "the rest still applies:\n{log}"
    );
}

/// The pid file sits in a directory a confined worker may not write: at exit it cannot
/// be removed, so it is emptied (an empty pid file is stale), and the next start takes it
/// over without a word.
#[test]
fn a_sandboxed_worker_empties_its_pid_file_at_exit() {
    let t = TestDir::new("sandbox-pidfile");
    let piddir = t.root.join("piddir");
    mkdir(&piddir);
    let pid = piddir.join("clsync.pid");
    let run = t.root.join("run");
    mkdir(&run);
    let args = [
        OsString::from("--sandbox"),
        "--pid-file".into(),
        pid.clone().into(),
    ];
    let mut w = Worker::start_in(&run, &t.src, &t.dst, &args);
    let text = std::fs::read_to_string(&pid).unwrap();
    assert_eq!(text.trim(), w.pid().to_string());
    w.stop_ok();
    let left = std::fs::read_to_string(&pid).unwrap_or_default();
    assert_eq!(left, "", "no dead pid is left in {}", pid.display());
    let mut again = Worker::start_in(&run, &t.src, &t.dst, &args);
    assert!(!again.stderr().contains("stale"), "{}", again.stderr());
    again.stop_ok();
}
