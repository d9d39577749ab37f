//! What only the fanotify backend has to get right (the convergence tests run against
//! it as tests/mirror_fanotify.rs and tests/random_fanotify.rs): the fallback when it
//! cannot be used, file systems mounted inside the tree, an unmounted source, the
//! root's own fate, and changes elsewhere on the same file system.
//!
//! fanotify needs root; run as another user these tests are reported as skipped (and
//! fail under `CI=true`, where they run as root).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

const FAN: &[&str] = &["--monitor", "fanotify"];

fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip(&format!("{what}: fanotify needs root"));
    false
}

/// Without the right to use fanotify (here: an unprivileged user) the worker says why
/// and watches with inotify; it mirrors all the same.
#[test]
fn without_permission_it_falls_back_to_inotify() {
    if !root_or_skip("fallback") {
        return;
    }
    let t = TestDir::new("fan-fallback");
    write(&t.s(b"before"), b"1");
    for p in [&t.root, &t.src] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    nix::unistd::chown(&t.dst, Some(65534.into()), Some(65534.into())).unwrap();
    let log = t.root.join("nobody.log");
    let mut child = Command::new(BIN)
        .args(["--monitor", "fanotify", "-t", "0.1", "-w", "0.1"])
        .arg("--status-file")
        .arg(t.dst.join(".status"))
        .args([&t.src, &t.dst])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = t.dst.join(".status");
    wait_until(READY_TIMEOUT, "readiness as nobody", || {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("exited: {st}: {}", read_lossy(&log)));
        }
        match std::fs::read_to_string(&status) {
            Ok(s) if s.trim() == "running" => Ok(()),
            _ => Err("not ready".into()),
        }
    });
    let text = read_lossy(&log);
    assert!(
        text.contains("monitor = fanotify cannot be used for")
            && text.contains("watching with inotify instead")
            && text.contains("watching 1 directory with inotify"),
        "{text}"
    );
    write(&t.s(b"after"), b"2");
    wait_until(SYNC_TIMEOUT, "the change as nobody", || {
        (std::fs::read(t.d(b"after")).ok().as_deref() == Some(b"2".as_slice()))
            .then_some(())
            .ok_or_else(|| "not there".into())
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}: {}", read_lossy(&log));
}

/// A file system mounted below the root is another file system: it gets its own mark,
/// and changes on it are mirrored like any other.
#[test]
fn a_file_system_mounted_inside_the_tree_is_watched_too() {
    if !root_or_skip("submount") {
        return;
    }
    let t = TestDir::new("fan-submount");
    let mnt = t.s(b"mnt");
    mkdir(&mnt);
    let _tmpfs = Tmpfs::mount(&mnt, "");
    mkdir_p(&t.s(b"mnt/deep/er"));
    write(&t.s(b"mnt/deep/seed"), b"seed");
    let mut w = t.start(FAN);
    assert!(
        w.stderr().contains("with 2 fanotify file-system marks"),
        "{}",
        w.stderr()
    );
    write(&t.s(b"mnt/deep/er/new"), b"on the other file system");
    mkdir_p(&t.s(b"mnt/fresh/dir"));
    write(&t.s(b"mnt/fresh/dir/f"), b"f");
    write(&t.s(b"top"), b"top");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

/// A mount point named with a space and a newline (which mountinfo escapes as `\040` and
/// `\012`) is found under its real name: it gets its mark and its changes are mirrored.
#[test]
fn a_mount_point_named_with_a_space_and_a_newline_is_watched_too() {
    if !root_or_skip("submount with an escaped name") {
        return;
    }
    let t = TestDir::new("fan-submount-name");
    let mnt = t.s(b"a b\nc");
    mkdir(&mnt);
    let _tmpfs = Tmpfs::mount(&mnt, "");
    write(&t.s(b"a b\nc/seed"), b"seed");
    let mut w = t.start(FAN);
    assert!(
        w.stderr().contains("with 2 fanotify file-system marks"),
        "{}",
        w.stderr()
    );
    mkdir_p(&t.s(b"a b\nc/fresh"));
    write(&t.s(b"a b\nc/fresh/f"), b"on the other file system");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

/// With one-file-system the mount point's content is neither watched nor synced.
#[test]
fn one_file_system_leaves_a_mount_alone() {
    if !root_or_skip("one-file-system") {
        return;
    }
    let t = TestDir::new("fan-onefs");
    let mnt = t.s(b"mnt");
    mkdir(&mnt);
    let _tmpfs = Tmpfs::mount(&mnt, "");
    let mut w = t.start(&["--monitor", "fanotify", "--one-file-system"]);
    assert!(
        w.stderr().contains("with 1 fanotify file-system mark "),
        "{}",
        w.stderr()
    );
    write(&t.s(b"mnt/inside"), b"not synced");
    write(&t.s(b"probe"), b"synced");
    wait_until(SYNC_TIMEOUT, "the probe", || {
        t.d(b"probe")
            .exists()
            .then_some(())
            .ok_or_else(|| "not there".into())
    });
    assert!(t.d(b"mnt").is_dir(), "the mount point itself is synced");
    assert!(
        !t.d(b"mnt/inside").exists(),
        "content of another file system"
    );
    w.stop_ok();
}

/// The source's file system is unmounted under the worker: the worker keeps nothing open
/// on it (umount succeeds), notices, and stops without touching the destination.
#[test]
fn an_unmounted_source_stops_the_worker() {
    if !root_or_skip("unmount") {
        return;
    }
    let t = TestDir::new("fan-umount");
    let _tmpfs = Tmpfs::mount(&t.src, "");
    for i in 0..5 {
        write(&t.s(format!("data{i}").as_bytes()), b"precious");
    }
    let mut w = t.start(FAN);
    // Events resolved (directory handles opened) right before the unmount.
    mkdir_p(&t.s(b"a/b"));
    write(&t.s(b"a/b/c"), b"c");
    w.wait_synced(SYNC_TIMEOUT);
    // A sync that is just ending (rsync's cwd is the source) may hold it for a moment;
    // the worker itself must not.
    wait_until(SYNC_TIMEOUT, "umount of the source", || {
        let out = Command::new("umount").arg(&t.src).output().unwrap();
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    });
    assert_stopped_for_unmounted_source(&mut w, &t, 5);
}

/// The mark covers the whole file system: changes next to the tree (here the
/// destination and a sibling directory) are filtered out, and never make a sync.
#[test]
fn changes_outside_the_tree_are_not_synced() {
    if !root_or_skip("outside") {
        return;
    }
    let t = TestDir::new("fan-outside");
    let mut w = t.start(&["--monitor", "fanotify", "-d", "1"]);
    let syncs = |w: &Worker| w.stderr().matches("debug: sync of ").count();
    let before = syncs(&w);
    for i in 0..200 {
        mkdir_p(&t.o(format!("o{i}/deep").as_bytes()));
        write(&t.o(format!("o{i}/deep/f").as_bytes()), b"outside");
    }
    // A directory renamed outside the tree, and one moved into it.
    rename(&t.o(b"o0"), &t.o(b"o0-renamed"));
    rename(&t.o(b"o1"), &t.s(b"moved-in"));
    w.wait_synced(SYNC_TIMEOUT);
    assert!(t.d(b"moved-in/deep/f").exists());
    let log = w.stderr();
    let after = syncs(&w);
    assert!(
        after - before <= 2,
        "{} syncs for one change in the tree:\n{log}",
        after - before
    );
    assert!(!log.contains("o1/deep"), "{log}");
    w.stop_ok();
}

/// Directory renames make cached paths stale: files written into a renamed directory
/// (and into one renamed twice before the worker read the events) land at the new path.
#[test]
fn writes_after_directory_renames_land_at_the_new_path() {
    if !root_or_skip("renames") {
        return;
    }
    let t = TestDir::new("fan-renames");
    mkdir_p(&t.s(b"a/b/c"));
    write(&t.s(b"a/b/c/f"), b"1");
    let mut w = t.start(FAN);
    write(&t.s(b"a/b/c/g"), b"2");
    w.wait_synced(SYNC_TIMEOUT);
    rename(&t.s(b"a/b"), &t.s(b"a/B"));
    write(&t.s(b"a/B/c/h"), b"3");
    rename(&t.s(b"a"), &t.s(b"A"));
    rename(&t.s(b"A/B/c"), &t.s(b"C"));
    write(&t.s(b"C/i"), b"4");
    write(&t.s(b"A/B/j"), b"5");
    w.wait_synced(SYNC_TIMEOUT);
    // And the cache still resolves the directories at their new places.
    write(&t.s(b"C/k"), b"6");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

/// The root's own fate without an inotify watch: moved away or deleted, the worker stops
/// and leaves the destination alone (the root's inode mark in the fanotify group).
fn root_gone(name: &str, how: fn(&TestDir)) {
    if !root_or_skip(name) {
        return;
    }
    let t = TestDir::new(name);
    for i in 0..5 {
        write(&t.s(format!("data{i}").as_bytes()), b"precious");
    }
    let mut w = t.start(FAN);
    how(&t);
    let st = w.wait_exit(SYNC_TIMEOUT);
    let log = w.stderr();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains("was deleted, moved away or unmounted"),
        "{log}"
    );
    for i in 0..5 {
        assert!(
            t.d(format!("data{i}").as_bytes()).exists(),
            "data{i}: {log}"
        );
    }
}

cases! { root_gone;
    the_root_moved_away_stops_the_worker: |t| rename(&t.src, &t.root.join("src.moved")),
    the_root_deleted_stops_the_worker: |t| remove_dir_all(&t.src),
}

/// A file system mounted and unmounted below the root changes the mount table; the
/// root's own mount is still there, so the worker goes on.
#[test]
fn a_mount_below_the_root_coming_and_going_is_not_the_roots_unmount() {
    if !root_or_skip("mount below") {
        return;
    }
    let t = TestDir::new("fan-mount-below");
    mkdir(&t.s(b"mnt"));
    let mut w = t.start(FAN);
    let tmpfs = Tmpfs::mount(&t.s(b"mnt"), "");
    drop(tmpfs);
    write(&t.s(b"after"), b"still live");
    w.wait_synced(SYNC_TIMEOUT);
    w.assert_alive();
    w.stop_ok();
}
