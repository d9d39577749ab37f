//! One worker per index directory (`--index-dir`, a profile's `index-dir`): a second
//! worker on a directory in use refuses to start (one line naming the directory and the
//! pid that holds it, exit status 2) and the first one keeps mirroring; the lock dies with
//! its worker (`kill -9` included), so the next one starts at once and warm-starts; a
//! handler the worker started, which may outlive it, does not hold it.

use crate::common::{self, TestDir, Worker, SYNC_TIMEOUT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

fn index_args(index: &Path) -> Vec<OsString> {
    vec!["--index-dir".into(), index.into()]
}

/// The short form of a second worker: `dst`, its own status file, the index `index`.
fn second(t: &TestDir, dst: &Path, index: &Path) -> common::Finished {
    let mut a: Vec<OsString> = vec!["-t".into(), "0.1".into(), "-w".into(), "0.1".into()];
    a.extend(index_args(index));
    a.extend([
        "--status-file".into(),
        t.root.join("status2").into(),
        t.src.clone().into(),
        dst.into(),
    ]);
    common::run(&t.root, &a, Duration::from_secs(20))
}

#[test]
fn a_second_worker_on_the_same_index_dir_refuses_and_the_first_keeps_mirroring() {
    let t = TestDir::new("lock-second");
    let index = t.root.join("index");
    common::write(&t.s(b"a"), b"a");
    let mut first = Worker::start_in(&t.root, &t.src, &t.dst, &index_args(&index));
    first.wait_synced(SYNC_TIMEOUT);
    let dst2 = t.root.join("dst2");
    common::mkdir(&dst2);
    let r = second(&t, &dst2, &index);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    let line = format!(
        "clsync: error: index-dir {} is in use by another worker (pid {}); not starting a second one on the same index: stop that worker, or give this one its own index-dir",
        index.display(),
        first.pid()
    );
    assert_eq!(r.stderr.trim_end(), line, "{}", r.describe());
    // Nothing was synced by the refused one; the first goes on.
    assert_eq!(std::fs::read_dir(&dst2).unwrap().count(), 0);
    first.assert_alive();
    common::write(&t.s(b"after"), b"after the refusal");
    first.wait_synced(SYNC_TIMEOUT);
    first.stop_ok();
}

#[test]
fn after_a_kill_9_the_next_worker_starts_at_once_and_warm_starts() {
    let t = TestDir::new("lock-kill9");
    let index = t.root.join("index");
    common::write(&t.s(b"a"), b"a");
    let mut first = Worker::start_in(&t.root, &t.src, &t.dst, &index_args(&index));
    first.wait_synced(SYNC_TIMEOUT);
    first.signal(Signal::SIGKILL);
    first.wait_exit(SYNC_TIMEOUT);
    common::write(&t.s(b"while-down"), b"x");
    let mut next = Worker::start_in(&t.root, &t.src, &t.dst, &index_args(&index));
    assert!(
        next.stderr().contains("initial sync: from the index ("),
        "{}",
        next.stderr()
    );
    next.wait_synced(SYNC_TIMEOUT);
    next.stop_ok();
}

/// The worker is killed while its handler (a shell that waits for a `sleep` it started,
/// then runs rsync) runs: the handler itself gets SIGTERM from the worker's death
/// (`PR_SET_PDEATHSIG`), but the child it started lives on, orphaned, with every
/// descriptor the handler inherited; a new worker on the same index starts anyway.
#[test]
fn a_handler_that_outlives_its_worker_does_not_hold_the_lock() {
    let t = TestDir::new("lock-orphan");
    let index = t.root.join("index");
    let started = t.root.join("handler-started");
    let script = t.root.join("slow-rsync");
    common::write_script(&script, &format!(
            "#!/bin/sh\nif [ ! -e '{s}' ]; then sleep 120 & echo $! > '{s}.tmp'; mv '{s}.tmp' '{s}'; wait; fi\nexec rsync \"$@\"\n",
            s = started.display()
        ));
    common::write(&t.s(b"a"), b"a");
    let mut a = index_args(&index);
    a.extend(["-S".into(), script.clone().into()]);
    let mut first = Worker::spawn_in(&t.root, &t.src, &t.dst, &a);
    common::wait_until(SYNC_TIMEOUT, "the handler sleeping", || {
        std::fs::read_to_string(&started)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let orphan: i32 = std::fs::read_to_string(&started)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    first.signal(Signal::SIGKILL);
    first.wait_exit(SYNC_TIMEOUT);
    // The handler's child outlives the worker (it is what could have kept the lock).
    assert!(
        kill(Pid::from_raw(orphan), None).is_ok(),
        "the handler's child {orphan} is gone"
    );
    let r = std::panic::catch_unwind(|| {
        let mut next = Worker::start_in(&t.root, &t.src, &t.dst, &a);
        next.wait_synced(SYNC_TIMEOUT);
        next.stop_ok();
    });
    let _ = kill(Pid::from_raw(orphan), Signal::SIGKILL);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

/// Kills the daemon (by the pid its pid file gave) when the test ends, passed or not.
struct Daemon(i32);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// With `-b` the worker that holds the lock is the process that stays after the fork:
/// the refusal names its pid (the one in its pid file), not the parent's that exited.
#[test]
fn the_refusal_names_the_daemon_that_stays_after_the_fork() {
    let t = TestDir::new("lock-daemon");
    let index = t.root.join("index");
    let pid_file = t.root.join("pid");
    let mut a: Vec<OsString> = vec!["-b".into(), "--pid-file".into(), pid_file.clone().into()];
    a.extend(index_args(&index));
    a.extend(["-t".into(), "0.1".into(), "-w".into(), "0.1".into()]);
    a.extend([t.src.clone().into(), t.dst.clone().into()]);
    let r = common::run(&t.root, &a, SYNC_TIMEOUT);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    let mut pid = 0;
    common::wait_until(SYNC_TIMEOUT, "the pid file", || {
        pid = std::fs::read_to_string(&pid_file)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())?;
        Ok(())
    });
    let _daemon = Daemon(pid);
    let dst2 = t.root.join("dst2");
    common::mkdir(&dst2);
    let r = second(&t, &dst2, &index);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    assert!(
        r.stderr
            .contains(&format!("is in use by another worker (pid {pid});")),
        "daemon {pid}: {}",
        r.describe()
    );
}
