//! Parallel syncs (`--threading safe|full`): a slow transfer does not hold back other
//! changes; `safe` never runs two syncs of the same path at once, `full` does.
//!
//! The sync handler wraps the real rsync. When its include list names `slow` it records
//! its start, notes an overlap if another run on `slow` is in progress, and waits for a
//! `release` file before transferring: the test decides when the slow sync may end.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};

fn wrapper(t: &TestDir) -> PathBuf {
    let script = t.root.join("slow-rsync.sh");
    let text = format!(
        r#"#!/bin/sh
T='{root}'
inc=""
for a in "$@"; do case "$a" in --include-from=*|--files-from=*) inc="${{a#*=}}";; esac; done
if [ -n "$inc" ] && grep -qa slow "$inc"; then
  mkdir "$T/inflight" 2>/dev/null || echo overlap >> "$T/overlaps"
  touch "$T/started.$$"
  while [ ! -e "$T/release" ]; do sleep 0.05; done
  rsync "$@"; rc=$?
  rmdir "$T/inflight" 2>/dev/null
  exit $rc
fi
exec rsync "$@"
"#,
        root = t.root.display()
    );
    write_script(&script, &text);
    script
}

fn started(root: &Path) -> usize {
    std::fs::read_dir(root)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("started.")
        })
        .count()
}

fn start(t: &TestDir, mode: &str) -> Worker {
    let script = wrapper(t);
    t.start(&[
        "-S".as_ref(),
        script.as_os_str(),
        "--threading".as_ref(),
        mode.as_ref(),
    ])
}

/// Writes `slow` and waits until its sync is running (and blocked).
fn block_on_slow(t: &TestDir) {
    write(&t.s(b"slow"), b"big transfer");
    wait_until(SYNC_TIMEOUT, "the slow sync starts", || {
        (started(&t.root) == 1)
            .then_some(())
            .ok_or_else(|| format!("{} slow runs started", started(&t.root)))
    });
}

fn wait_file(path: &Path, what: &str) {
    wait_until(SYNC_TIMEOUT, what, || {
        path.exists()
            .then_some(())
            .ok_or_else(|| format!("{} is missing", showp(path)))
    });
}

#[test]
fn safe_syncs_other_paths_while_a_slow_one_runs_but_never_the_same_path_twice() {
    let t = TestDir::new("thread-safe");
    let mut w = start(&t, "safe");
    block_on_slow(&t);
    // Another file reaches the destination while the slow sync is still blocked.
    write(&t.s(b"fast"), b"small");
    wait_file(&t.d(b"fast"), "fast is synced while slow is running");
    assert!(!t.d(b"slow").exists(), "slow is still held by the test");
    // slow changes again, then another file: the later file's batch is proof that the
    // scheduler has decided about slow, which must wait for the running sync.
    append(&t.s(b"slow"), b" grows");
    write(&t.s(b"fast2"), b"small too");
    wait_file(&t.d(b"fast2"), "fast2 is synced while slow is running");
    assert_eq!(started(&t.root), 1, "a second sync of slow started");
    write(&t.root.join("release"), b"");
    // The change held back during the first run is synced after it.
    wait_until(SYNC_TIMEOUT, "the held sync of slow runs", || {
        (started(&t.root) == 2)
            .then_some(())
            .ok_or_else(|| format!("{} slow runs started", started(&t.root)))
    });
    w.wait_synced(SYNC_TIMEOUT);
    assert!(
        !t.root.join("overlaps").exists(),
        "two syncs of slow at once"
    );
    w.stop_ok();
}

#[test]
fn full_syncs_the_same_path_in_parallel() {
    let t = TestDir::new("thread-full");
    let mut w = start(&t, "full");
    block_on_slow(&t);
    write(&t.s(b"fast"), b"small");
    wait_file(&t.d(b"fast"), "fast is synced while slow is running");
    append(&t.s(b"slow"), b" grows");
    wait_until(SYNC_TIMEOUT, "a second sync of slow starts", || {
        (started(&t.root) == 2)
            .then_some(())
            .ok_or_else(|| format!("{} slow runs started", started(&t.root)))
    });
    write(&t.root.join("release"), b"");
    w.wait_synced(SYNC_TIMEOUT);
    assert!(
        t.root.join("overlaps").exists(),
        "full threading overlapped"
    );
    w.stop_ok();
}

#[test]
fn stop_waits_for_every_parallel_sync_and_flushes() {
    let t = TestDir::new("thread-stop");
    let mut w = start(&t, "full");
    block_on_slow(&t);
    write(&t.s(b"fast"), b"small");
    wait_file(&t.d(b"fast"), "fast is synced while slow is running");
    write(&t.s(b"late"), b"queued at stop");
    w.signal(nix::sys::signal::Signal::SIGTERM);
    write(&t.root.join("release"), b"");
    let st = w.wait_exit(STOP_TIMEOUT);
    assert_eq!(st.code(), Some(0), "{}", w.stderr());
    assert_synced_now(&t.src, &t.dst, "after the stop");
}
