//! rsync 3.5's end-of-run race (src/sync/stall.rs): when the receiver misses the signal
//! that ends its run, it sleeps in poll() for a minute after the sync is complete. The
//! worker wakes it; a sync, the initial one included, ends within a couple of seconds.
//!
//! tests/data/rsync_end_stall.c, preloaded into rsync by a wrapper given as the sync
//! handler, makes every run miss that signal, so that the race happens each time instead
//! of now and then on a loaded machine.

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

/// Whether this rsync has the race: with the shim a run of its own, given `--timeout=4`
/// (its poll() then times out after two seconds, not sixty), takes those two seconds.
fn rsync_has_the_race(t: &TestDir, so: &Path) -> bool {
    let (src, dst) = (t.root.join("probe-src"), t.root.join("probe-dst"));
    mkdir_p(&src.join("d"));
    write(&src.join("d/f"), b"probe");
    let began = Instant::now();
    let mut cmd = Command::new("rsync");
    cmd.env("LD_PRELOAD", so)
        .arg("-a")
        .arg("--timeout=4")
        .arg(format!("{}/", src.display()))
        .arg(&dst);
    let (st, out) = run_within(&mut cmd, Duration::from_secs(30));
    assert!(
        st.is_some_and(|s| s.success()),
        "rsync with the shim: {out}"
    );
    began.elapsed() >= Duration::from_millis(1500)
}

#[test]
fn a_run_whose_receiver_missed_its_end_signal_is_woken() {
    let t = TestDir::new("end-stall");
    let so = build_shim(&t);
    if !rsync_has_the_race(&t, &so) {
        return skip("this rsync ends its runs without the race of rsync 3.5: nothing to wake");
    }
    for i in 0..20 {
        mkdir_p(&t.s(format!("d{i}").as_bytes()));
        write(&t.s(format!("d{i}/f").as_bytes()), b"before");
    }
    let script = t.root.join("rsync.sh");
    write_script(
        &script,
        &format!(
            "#!/bin/sh\nLD_PRELOAD='{}' exec rsync \"$@\"\n",
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
    wait_until(WITHIN, "readiness (the initial sync's end)", || {
        (w.status() == "running")
            .then_some(())
            .ok_or_else(|| format!("status {:?}\n{}", w.status(), w.stderr()))
    });
    let initial = began.elapsed();
    // Live changes, one sync each.
    for i in 0..3 {
        let name = format!("d{i}/live");
        let began = Instant::now();
        write(&t.s(name.as_bytes()), b"live");
        wait_until(WITHIN, &format!("{name} synced"), || {
            (std::fs::read(t.d(name.as_bytes())).unwrap_or_default() == b"live")
                .then_some(())
                .ok_or_else(|| w.stderr())
        });
        // Its rsync has ended (the next change must not find it still running).
        wait_until(WITHIN, "the sync's end", || {
            let woken = w.stderr().matches("missed the signal").count();
            (woken >= i + 2)
                .then_some(())
                .ok_or_else(|| format!("{woken} runs woken\n{}", w.stderr()))
        });
        eprintln!("change {i}: synced and ended in {:?}", began.elapsed());
    }
    eprintln!("initial sync: {initial:?}");
    w.wait_synced(WITHIN);
    w.stop_ok();
}
