//! rsync 3.5's end-of-run race (src/sync/stall.rs): when the receiver misses the signal
//! that ends its run, it sleeps in poll() for a minute after the sync is complete. The
//! worker wakes it; a sync, the initial one included, ends within a couple of seconds.
//!
//! tests/data/rsync_end_stall.c, preloaded into rsync by a wrapper given as the sync
//! handler, makes every run miss that signal, so that the race happens each time instead
//! of now and then on a loaded machine. With an rsync that has no such race the same runs
//! must end by themselves and none may be signalled.

use crate::common::*;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Longer than a woken run takes (the worker looks at a run every half second, and wakes
/// it at the second look that finds it stalled), far shorter than the minute a stalled
/// one takes.
const WITHIN: Duration = Duration::from_secs(15);

fn build_shim(t: &TestDir) -> PathBuf {
    let so = t.root.join("rsync_end_stall.so");
    build_shared_object("rsync_end_stall.c", &so, &["-ldl"]);
    so
}

/// The poll() sleeps after a signal that landed in the window, in milliseconds, as the
/// shim logged them in `log`.
fn hits(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("hit ")?.parse().ok())
        .collect()
}

/// Whether this rsync has the race: a run of its own with the shim, given `--timeout=4`
/// (its poll() then times out after two seconds, not sixty), where the receiver slept on
/// in poll() after its signal had come. A machine's load cannot fake that; an rsync
/// without the race returns from poll() at the signal.
fn rsync_has_the_race(t: &TestDir, so: &Path) -> bool {
    let (src, dst) = (t.root.join("probe-src"), t.root.join("probe-dst"));
    let log = t.root.join("probe.log");
    mkdir_p(&src.join("d"));
    write(&src.join("d/f"), b"probe");
    let mut cmd = Command::new("rsync");
    cmd.env("LD_PRELOAD", so)
        .env("RSYNC_END_STALL_LOG", &log)
        .arg("-a")
        .arg("--timeout=4")
        .arg(format!("{}/", src.display()))
        .arg(&dst);
    let (st, out) = run_within(&mut cmd, Duration::from_secs(30));
    assert!(
        st.is_some_and(|s| s.success()),
        "rsync with the shim: {out}"
    );
    hits(&log).iter().any(|&ms| ms >= 1500)
}

/// The worker's child processes (its running sync), from /proc.
fn children(w: &Worker) -> String {
    let pid = w.pid();
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default()
}

#[test]
fn a_run_whose_receiver_missed_its_end_signal_is_woken() {
    let t = TestDir::new("end-stall");
    let so = build_shim(&t);
    // An rsync without the race (before 3.5, or once fixed) still runs the same scenario:
    // then no run may be woken, the watch must leave healthy runs alone.
    let race = rsync_has_the_race(&t, &so);
    if !race {
        eprintln!("this rsync has no end-of-run race: checking that no run is signalled");
    }
    for i in 0..20 {
        mkdir_p(&t.s(format!("d{i}").as_bytes()));
        write(&t.s(format!("d{i}/f").as_bytes()), b"before");
    }
    let log = t.root.join("stalls.log");
    let script = t.root.join("rsync.sh");
    write_script(
        &script,
        &format!(
            "#!/bin/sh\nRSYNC_END_STALL_LOG='{}' LD_PRELOAD='{}' exec rsync \"$@\"\n",
            log.display(),
            so.display()
        ),
    );
    let began = Instant::now();
    let mut w = Worker::spawn_in(
        &t.root,
        &t.src,
        &t.dst,
        &[OsString::from("-S"), script.into()],
    );
    w.wait_ready_within(WITHIN);
    eprintln!("initial sync: {:?}", began.elapsed());
    // Live changes, one sync each; each run must have ended before the next change.
    for i in 0..3 {
        let name = format!("d{i}/live");
        let began = Instant::now();
        write(&t.s(name.as_bytes()), b"live");
        wait_until(WITHIN, &format!("{name} synced"), || {
            (std::fs::read(t.d(name.as_bytes())).unwrap_or_default() == b"live")
                .then_some(())
                .ok_or_else(|| w.stderr())
        });
        wait_until(WITHIN, "the sync's run to end", || {
            let running = children(&w);
            running
                .trim()
                .is_empty()
                .then_some(())
                .ok_or_else(|| format!("still running: {running}\n{}", w.stderr()))
        });
        eprintln!(
            "change {i}: synced and its run ended in {:?}",
            began.elapsed()
        );
    }
    w.wait_synced(WITHIN);
    let slept = hits(&log);
    let woken = w.stderr().matches("missed the signal").count();
    eprintln!("poll() sleeps after a missed signal (ms): {slept:?}; woken: {woken}");
    if !race {
        assert_eq!(woken, 0, "a healthy run was signalled\n{}", w.stderr());
        w.stop_ok();
        return;
    }
    // The race was forced (the shim saw its signal land in the window) and every run it
    // caught was woken long before its poll() would have timed out.
    assert!(
        slept.len() >= 2 && woken >= 2,
        "the race was caught {} times and woken {woken} times (of 4 runs)\n{}",
        slept.len(),
        w.stderr()
    );
    assert!(
        slept.iter().all(|&ms| ms < 10_000),
        "a run slept {slept:?} ms after its signal\n{}",
        w.stderr()
    );
    w.stop_ok();
}
