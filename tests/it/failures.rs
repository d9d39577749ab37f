//! rsync failures: paths stay queued and are retried; 24 is success; a signal is failure.
//!
//! The sync handler is a small script that counts its calls, misbehaves on a chosen call
//! and otherwise runs the real rsync with the worker's argv.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};

/// Writes a handler script that counts its calls in `calls` (the call number is `$n`,
/// 1 for the initial sync) and then runs `body`, which ends by running rsync or not.
fn script(t: &TestDir, body: &str) -> (PathBuf, PathBuf) {
    let script = t.root.join("handler.sh");
    let calls = t.root.join("calls");
    let text = format!(
        "#!/bin/sh\nn=$(cat '{calls}' 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > '{calls}'\n{body}\n",
        calls = calls.display(),
    );
    write_script(&script, &text);
    (script, calls)
}

fn calls(p: &Path) -> u32 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn start_with_handler(t: &TestDir, script: &Path) -> Worker {
    let s = script.as_os_str().to_os_string();
    t.start(&[std::ffi::OsString::from("-S"), s])
}

/// A handler that fails some calls after the initial sync: the files written meanwhile
/// arrive all the same, through retries.
struct Retried {
    /// The handler's script (`$n` is the call number, 1 for the initial sync).
    body: &'static str,
    /// Files written once the worker runs (parent directories are made first).
    files: &'static [&'static str],
    /// At least this many handler calls by the time the trees are equal.
    min_calls: u32,
    /// The worker's log says this about the failure.
    says: &'static str,
    /// Exactly this many failures are logged, if given.
    failures: Option<usize>,
}

fn retried(name: &str, case: Retried) {
    let t = TestDir::new(name);
    let (script, count) = script(&t, case.body);
    let mut w = start_with_handler(&t, &script);
    for f in case.files {
        let path = t.s(f.as_bytes());
        mkdir_p(path.parent().unwrap());
        write(&path, format!("{name}: {f}").as_bytes());
    }
    w.wait_synced_ctx(SYNC_TIMEOUT, name, &no_filter);
    let n = calls(&count);
    assert!(
        n >= case.min_calls,
        "{name}: {n} handler calls, expected at least {}: the failed batch was not retried",
        case.min_calls
    );
    let log = w.stderr();
    assert!(
        log.contains(case.says),
        "{name}: the failure is not reported as {:?}:\n{log}",
        case.says
    );
    if let Some(want) = case.failures {
        assert_eq!(
            log.matches("sync failed").count(),
            want,
            "{name}: failures logged\n{log}"
        );
    }
    w.stop_ok();
}

cases! { retried;
    /// Call 1 is the initial sync; call 2 is the first live batch: it fails.
    exit_23_is_retried_and_nothing_is_lost: Retried {
        body: "if [ $n = 2 ]; then exit 23; fi\nexec rsync \"$@\"",
        files: &["a", "d/e/f"],
        min_calls: 3,
        says: "sync failed: rsync exited with code 23",
        failures: None,
    },
    handler_killed_by_a_signal_is_a_failure: Retried {
        body: "if [ $n = 2 ]; then kill -KILL $$; fi\nexec rsync \"$@\"",
        files: &["x"],
        min_calls: 3,
        says: "killed by signal SIGKILL",
        failures: None,
    },
    /// Calls 2..=4 fail: three consecutive failures with backoff 1 s, 2 s.
    failing_handler_keeps_paths_queued_across_many_failures: Retried {
        body: "if [ $n -ge 2 ] && [ $n -le 4 ]; then exit 12; fi\nexec rsync \"$@\"",
        files: &["kept"],
        min_calls: 5,
        says: "sync failed",
        failures: Some(3),
    },
}

/// A handler that runs rsync and then exits with a code that counts as success (every
/// call after the initial sync): each change is one run, never retried.
struct Success {
    /// The code the handler exits with after rsync.
    code: u32,
    /// Extra worker options.
    args: &'static [&'static str],
}

fn success(name: &str, case: Success) {
    let t = TestDir::new(name);
    let (script, count) = script(
        &t,
        &format!("rsync \"$@\" || exit $?\n[ $n = 1 ] || exit {}", case.code),
    );
    let mut args = vec![std::ffi::OsString::from("-S"), script.into()];
    args.extend(case.args.iter().map(std::ffi::OsString::from));
    let mut w = t.start(&args);
    write(&t.s(b"one"), b"1");
    w.wait_synced_ctx(SYNC_TIMEOUT, name, &no_filter);
    // A second change must be a new batch, not a retry of the first.
    let before = calls(&count);
    write(&t.s(b"two"), b"2");
    w.wait_synced_ctx(SYNC_TIMEOUT, name, &no_filter);
    w.stop_ok();
    let log = w.stderr();
    assert!(
        !log.contains("sync failed"),
        "{name}: exit {} is not a failure:\n{log}",
        case.code
    );
    assert_eq!(
        calls(&count),
        before + 1,
        "{name}: one run per batch, no retries:\n{log}"
    );
}

cases! { success;
    exit_24_is_success_without_retry: Success { code: 24, args: &[] },
    /// `-x 23`: exit 23 of the handler is not a failure.
    ignore_exitcode_makes_a_code_success: Success { code: 23, args: &["-x", "23"] },
}

/// SIGTERM waits for the running sync; a second SIGTERM kills the sync's whole process
/// group (the handler and what it started) and exits 1.
#[test]
fn second_sigterm_kills_the_sync_process_group() {
    let t = TestDir::new("abort");
    let pidfile = t.root.join("handler.pid");
    let (script, _) = script(
        &t,
        &format!(
            "if [ $n -ge 2 ]; then echo $$ > '{}'; sleep 600; fi\nexec rsync \"$@\"",
            pidfile.display()
        ),
    );
    let mut w = start_with_handler(&t, &script);
    write(&t.s(b"f"), b"x");
    let mut pgid = 0;
    wait_until(SYNC_TIMEOUT, "the slow handler to run", || {
        pgid = std::fs::read_to_string(&pidfile)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())?;
        Ok(())
    });
    let group = nix::unistd::Pid::from_raw(-pgid);
    w.signal(nix::sys::signal::Signal::SIGTERM);
    // The first signal waits for the sync: worker and handler stay.
    wait_until(SYNC_TIMEOUT, "status terminating", || {
        match w.status().as_str() {
            "terminating" => Ok(()),
            s => Err(s.to_string()),
        }
    });
    w.assert_alive();
    assert!(
        nix::sys::signal::kill(group, None).is_ok(),
        "the first SIGTERM must not kill the running sync"
    );
    w.signal(nix::sys::signal::Signal::SIGTERM);
    let st = w.wait_exit(std::time::Duration::from_secs(20));
    assert_eq!(
        st.code(),
        Some(1),
        "an aborted final sync is a failure:\n{}",
        w.stderr()
    );
    wait_until(
        std::time::Duration::from_secs(10),
        "the handler's group to be gone",
        || match nix::sys::signal::kill(group, None) {
            Err(nix::errno::Errno::ESRCH) => Ok(()),
            other => Err(format!("kill(-{pgid}, 0) = {other:?}")),
        },
    );
}

/// The watch root moved away (or unmounted, deleted): stop with an error and leave the
/// destination alone rather than mirror an empty tree.
#[test]
fn watch_root_moved_away_stops_without_touching_the_destination() {
    let t = TestDir::new("root_gone");
    mkdir_p(&t.s(b"a/b"));
    write(&t.s(b"a/b/f"), b"data");
    write(&t.s(b"top"), b"data");
    let mut w = t.start(NO_ARGS);
    rename(&t.src, &t.root.join("src.moved"));
    let st = w.wait_exit(SYNC_TIMEOUT);
    let log = w.stderr();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains("was deleted, moved away or unmounted"),
        "{log}"
    );
    assert_synced_now(
        &t.root.join("src.moved"),
        &t.dst,
        "the destination is untouched",
    );
}

/// `-k 1`: a sync that runs past the timeout is killed with its whole process group,
/// counts as a failure, and its paths are synced by the retry.
#[test]
fn timeout_sync_kills_the_process_group_and_retries() {
    let t = TestDir::new("timeout");
    let pidfile = t.root.join("handler.pid");
    let (script, count) = script(
        &t,
        &format!(
            "if [ $n = 2 ]; then echo $$ > '{}'; sleep 600; fi\nexec rsync \"$@\"",
            pidfile.display()
        ),
    );
    let s = script.as_os_str().to_os_string();
    let mut w = t.start(&[std::ffi::OsString::from("-S"), s, "-k".into(), "1".into()]);
    write(&t.s(b"f"), b"x");
    w.wait_synced(SYNC_TIMEOUT);
    let pgid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(calls(&count) >= 3, "retried after the timeout");
    let log = w.stderr();
    assert!(log.contains("longer than timeout-sync"), "{log}");
    wait_until(
        SYNC_TIMEOUT,
        "the timed-out handler's group to be gone",
        || match nix::sys::signal::kill(nix::unistd::Pid::from_raw(-pgid), None) {
            Err(nix::errno::Errno::ESRCH) => Ok(()),
            other => Err(format!("kill(-{pgid}, 0) = {other:?}")),
        },
    );
    w.stop_ok();
}

/// `-r 2`: two failed tries in a row end the worker with rsync's exit code, and the exit
/// hook sees it.
#[test]
fn retries_gives_up_with_rsyncs_exit_code() {
    let t = TestDir::new("retries");
    let (script, count) = script(&t, "[ $n = 1 ] || exit 12\nexec rsync \"$@\"");
    let s = script.as_os_str().to_os_string();
    let mut w = t.start(&[std::ffi::OsString::from("-S"), s, "-r".into(), "2".into()]);
    write(&t.s(b"f"), b"x");
    let st = w.wait_exit(SYNC_TIMEOUT);
    let log = w.stderr();
    assert_eq!(st.code(), Some(12), "rsync's exit code:\n{log}");
    assert_eq!(calls(&count), 3, "the initial sync and two tries:\n{log}");
    assert!(log.contains("giving up after 2 tries in a row"), "{log}");
}

/// Lines of the worker's log that say a sync failed.
fn failure_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("sync failed")).collect()
}

/// Every line of stderr is the worker's own log line (rsync's are at debug level).
#[track_caller]
fn only_log_lines(log: &str) {
    for l in log.lines() {
        assert!(
            l.starts_with("clsync"),
            "a line that is not the worker's: {l:?}\n{log}"
        );
    }
}

/// The short form against a read-only destination, as a one-shot: it exits non-zero
/// after the failure (retrying forever is for the live form), with one line saying why.
#[test]
fn only_initialsync_to_a_read_only_destination_exits_non_zero() {
    let t = TestDir::new("ro_oneshot");
    write(&t.s(b"f"), b"x");
    let _ro = Tmpfs::mount(&t.dst, "ro");
    let out = run(
        &t.root,
        &[
            std::ffi::OsString::from("--only-initialsync"),
            t.src.clone().into(),
            t.dst.clone().into(),
        ],
        SYNC_TIMEOUT,
    );
    let code = out.code();
    assert!(
        code.is_some_and(|c| c != 0),
        "expected a non-zero exit: {}",
        out.describe()
    );
    let fails = failure_lines(&out.stderr);
    assert_eq!(fails.len(), 1, "{}", out.describe());
    assert!(
        fails[0].contains("Read-only file system"),
        "{}",
        out.describe()
    );
    only_log_lines(&out.stderr);
}

/// The live form keeps retrying, with one summarised line per failed try (rsync's own
/// lines only at debug level), and syncs once the destination is writable.
#[test]
fn a_read_only_destination_logs_one_line_per_failed_try() {
    let t = TestDir::new("ro_live");
    write(&t.s(b"f"), b"x");
    let ro = Tmpfs::mount(&t.dst, "ro");
    let mut w = Worker::spawn_in(&t.root, &t.src, &t.dst, NO_ARGS);
    wait_until(SYNC_TIMEOUT, "three failed tries", || {
        let log = w.stderr();
        (failure_lines(&log).len() >= 3).then_some(()).ok_or(log)
    });
    w.assert_alive();
    let log = w.stderr();
    only_log_lines(&log);
    for l in failure_lines(&log) {
        assert!(
            l.contains("Read-only file system") && l.contains("next try in"),
            "{l}\n{log}"
        );
    }
    // Writable again: the next try goes through.
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&t.dst)
        .status()
        .unwrap();
    assert!(st.success());
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
    w.stop_ok();
    drop(ro);
}

/// Starts a `cat` as `uid` that holds every inotify instance the uid may have (taken
/// before exec, as that uid, and inherited: no close-on-exec) until its stdin closes.
/// Returns it and `fs.inotify.max_user_instances`.
fn hog_inotify_instances(uid: u32) -> (std::process::Child, String) {
    use std::process::{Command, Stdio};
    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .unwrap()
        .trim()
        .to_string();
    let n: u64 = limit.parse().unwrap();
    let mut hog = Command::new("cat");
    hog.stdin(Stdio::piped()).stdout(Stdio::null());
    // SAFETY: only raw system calls between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut hog, move || {
            let r = libc::rlimit {
                rlim_cur: n + 64,
                rlim_max: n + 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(uid, uid, uid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            let mut got = 0;
            while libc::inotify_init1(0) >= 0 {
                got += 1;
            }
            if got != n || *libc::__errno_location() != libc::EMFILE {
                return Err(std::io::Error::other("the instances were not used up"));
            }
            Ok(())
        });
    }
    (hog.spawn().unwrap(), limit)
}

fn end_hog(mut hog: std::process::Child) {
    drop(hog.stdin.take());
    let _ = hog.kill();
    let _ = hog.wait();
}

/// When the uid's inotify instances are used up (`fs.inotify.max_user_instances`, 128 by
/// default, shared by every worker of the uid), the worker says so with the sysctl, its
/// value, the uid and the ways out, instead of "Too many open files".
#[test]
fn used_up_inotify_instances_are_named_with_the_sysctl() {
    use std::process::Command;
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root (a second uid's inotify instances are used up)");
    }
    let t = TestDir::new("inotify-instances");
    chmod(&t.root, 0o711);
    for d in [&t.src, &t.dst] {
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let (hog, limit) = hog_inotify_instances(65534);
    let (status, err) = run_within(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(BIN)
            .args(["--exit-on-no-events"])
            .arg(&t.src)
            .arg(&t.dst),
        SYNC_TIMEOUT,
    );
    end_hog(hog);
    assert_eq!(status.and_then(|s| s.code()), Some(5), "exit code: {err}");
    for want in [
        format!("fs.inotify.max_user_instances = {limit}"),
        "for uid 65534".to_string(),
        "sysctl fs.inotify.max_user_instances=".to_string(),
        "or watch with monitor = fanotify (as root: it takes no inotify instance)".to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} not in: {err}");
    }
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

/// The way out the advice above names: a fanotify worker needs no inotify instance, so
/// it starts and mirrors while its uid has none left (here a uid of its own, 65533, with
/// the capabilities fanotify needs; the instances stay used up the whole time).
#[test]
fn a_fanotify_worker_needs_no_inotify_instance() {
    use std::process::{Command, Stdio};
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root (fanotify, and a second uid's inotify instances are used up)");
    }
    const UID: u32 = 65533;
    let t = TestDir::new("fanotify-no-instances");
    chmod(&t.root, 0o711);
    let run = t.root.join("run");
    mkdir(&run);
    mkdir_p(&t.s(b"a/b"));
    write(&t.s(b"a/b/before"), b"1");
    for d in [
        &t.src,
        &t.s(b"a"),
        &t.s(b"a/b"),
        &t.s(b"a/b/before"),
        &t.dst,
        &run,
    ] {
        std::os::unix::fs::chown(d, Some(UID), Some(UID)).unwrap();
    }
    let status = run.join("status");
    let log = t.root.join("worker.log");
    let (hog, _) = hog_inotify_instances(UID);
    let caps = "+sys_admin,+dac_read_search";
    let mut worker = Command::new("setpriv")
        .arg(format!("--reuid={UID}"))
        .arg(format!("--regid={UID}"))
        .args([
            "--clear-groups",
            "--inh-caps",
            caps,
            "--ambient-caps",
            caps,
            "--",
        ])
        .arg(BIN)
        .args(["--monitor", "fanotify", "-t", "0.1", "-w", "0.1"])
        .arg("--status-file")
        .arg(&status)
        .arg(&t.src)
        .arg(&t.dst)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until(
        READY_TIMEOUT,
        "readiness without an inotify instance",
        || {
            if let Ok(Some(st)) = worker.try_wait() {
                return Err(format!("exited: {st}: {}", read_lossy(&log)));
            }
            match std::fs::read_to_string(&status) {
                Ok(s) if s.trim() == "running" => Ok(()),
                _ => Err("not ready".into()),
            }
        },
    );
    mkdir_p(&t.s(b"a/b/new/deeper"));
    write(&t.s(b"a/b/new/deeper/after"), b"2");
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
    let text = read_lossy(&log);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let st = worker.wait().unwrap();
    end_hog(hog);
    assert!(text.contains("fanotify file-system mark"), "{text}");
    assert!(st.success(), "{st}: {}", read_lossy(&log));
}
