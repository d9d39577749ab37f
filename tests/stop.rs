//! A stop is a barrier: everything the kernel reported before the stop signal was
//! handled is synced before the worker exits, whatever the load on the machine.
//!
//! The worker runs with delays of an hour, so nothing is synced but by the final sync;
//! the change is made right before SIGTERM (or SIGINT), with busy loops competing for
//! the CPU so the reader thread is often not scheduled between the write and the signal.

mod common;

use common::load::Load;
use common::*;
use nix::sys::signal::Signal;

/// One try: start, change, signal at once, and report what the destination lacks.
fn one_try(t: &TestDir, i: usize, monitor: &str, sig: Signal) -> Result<(), String> {
    let mut w = t.start(&["-t", "3600", "-w", "3600", "--monitor", monitor]);
    // A plain new file, a rewrite of a file the initial sync copied, and a file in a new
    // directory tree (its watches are added while the events are handled).
    // A length of its own per try: rsync's quick check (size and mtime) must not be
    // what decides whether a rewrite within the same second is sent.
    let content = format!("try {i} {}\n", "x".repeat(i));
    write(&t.s(b"f"), content.as_bytes());
    write(&t.s(b"old"), content.as_bytes());
    mkdir_p(&t.s(format!("d{i}/a/b").as_bytes()));
    write(&t.s(format!("d{i}/a/b/g").as_bytes()), content.as_bytes());
    w.signal(sig);
    let st = w.wait_exit(STOP_TIMEOUT);
    let mut lost = Vec::new();
    for rel in ["f".to_string(), "old".to_string(), format!("d{i}/a/b/g")] {
        match std::fs::read(t.d(rel.as_bytes())) {
            Ok(b) if b == content.as_bytes() => {}
            Ok(b) => lost.push(format!("{rel} has {:?}", String::from_utf8_lossy(&b))),
            Err(e) => lost.push(format!("{rel}: {e}")),
        }
    }
    if st.code() != Some(0) || !lost.is_empty() {
        return Err(format!(
            "try {i} ({monitor}, {sig}): exit {st:?}, lost: {lost:?}\nstderr:\n{}",
            w.stderr()
        ));
    }
    Ok(())
}

fn tries(name: &str, monitor: &str, n: usize) {
    let _load = Load::start(2);
    let t = TestDir::new(name);
    write(&t.s(b"old"), b"initial\n");
    let mut failures = Vec::new();
    for i in 0..n {
        let sig = if i % 2 == 0 {
            Signal::SIGTERM
        } else {
            Signal::SIGINT
        };
        if let Err(e) = one_try(&t, i, monitor, sig) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} stops lost a change made right before the signal; first:\n{}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn a_change_right_before_a_stop_is_synced_under_load() {
    tries("stop-barrier", "inotify", 50);
}

#[test]
fn a_change_right_before_a_stop_is_synced_under_load_with_fanotify() {
    if !nix::unistd::geteuid().is_root() {
        return skip("fanotify needs root");
    }
    tries("stop-barrier-fan", "fanotify", 50);
}

#[test]
fn a_stop_during_a_sync_still_syncs_what_came_after() {
    // A change made while a sync runs, then a stop: the final sync takes it.
    let _load = Load::start(2);
    let t = TestDir::new("stop-during-sync");
    let mut w = t.start(&["-t", "0", "-w", "3600"]);
    for i in 0..20 {
        write(&t.s(format!("f{i}").as_bytes()), b"x");
    }
    write(&t.s(b"last"), b"last\n");
    w.signal(Signal::SIGTERM);
    let st = w.wait_exit(STOP_TIMEOUT);
    assert_eq!(st.code(), Some(0), "stderr:\n{}", w.stderr());
    assert_synced_now(&t.src, &t.dst, "after a stop during a sync");
}
