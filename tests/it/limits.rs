//! Running out of inotify watches, and directories the worker may not read.
//!
//! The watch limit is lowered for the worker alone by running it in a new user namespace
//! (`unshare -U -r`), whose `user.max_inotify_watches` is its own; the rest of the machine
//! (and the other tests) keep the normal limit.

use crate::common;

use common::*;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Runs the worker in a user namespace with `limit` inotify watches.
fn spawn_limited(t: &TestDir, limit: u32, args: &[OsString]) -> Child {
    let stderr = std::fs::File::create(t.root.join("worker.stderr")).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-U", "-r", "sh", "-c"])
        .arg(format!(
            "echo {limit} > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\""
        ))
        .arg(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0);
    cmd.spawn().expect("spawn unshare")
}

fn stderr(t: &TestDir) -> String {
    read_lossy(&t.root.join("worker.stderr"))
}

fn short_args(t: &TestDir) -> Vec<OsString> {
    vec![
        "-t".into(),
        "0.1".into(),
        "-w".into(),
        "0.1".into(),
        "--status-file".into(),
        t.status.clone().into(),
        t.src.clone().into(),
        t.dst.clone().into(),
    ]
}

fn tree(base: &Path, dirs: usize) {
    for i in 0..dirs {
        mkdir_p(&base.join(format!("d{i}/sub")));
        write(&base.join(format!("d{i}/sub/f")), format!("{i}").as_bytes());
    }
}

#[test]
fn too_few_watches_at_start_is_a_clear_error() {
    let t = TestDir::new("enospc_start");
    tree(&t.src, 10); // 21 directories
    write(&t.d(b"sentinel"), b"keep me");
    let mut child = spawn_limited(&t, 5, &short_args(&t));
    let mut status = None;
    wait_until(Duration::from_secs(30), "the worker to exit", || {
        status = child.try_wait().map_err(|e| e.to_string())?;
        status.map(|_| ()).ok_or_else(|| "still running".into())
    });
    let log = stderr(&t);
    assert_eq!(status.unwrap().code(), Some(5), "exit code 5:\n{log}");
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.contains("user.max_inotify_watches = 5")
            && first.contains("fs.inotify.max_user_watches = ")
            && first.contains("needs at least 21"),
        "names the limit in force, its value and the count needed: {first}"
    );
    assert_eq!(
        std::fs::read_dir(&t.dst).unwrap().count(),
        1,
        "nothing was synced before the error"
    );
}

#[test]
fn running_out_of_watches_later_is_polled_until_converged() {
    let t = TestDir::new("enospc_live");
    tree(&t.src, 4); // 9 directories
    let mut child = spawn_limited(&t, 14, &short_args(&t));
    wait_until(Duration::from_secs(30), "ready", || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("worker exited: {st:?}\n{}", stderr(&t));
        }
        match std::fs::read_to_string(&t.status) {
            Ok(s) if s.trim() == "running" => Ok(()),
            s => Err(format!("status {s:?}")),
        }
    });
    // Ten more directories than watches: some can only be polled.
    tree(&t.src.join("new"), 5);
    wait_synced(&t.src, &t.dst, Duration::from_secs(60));
    // Writes into a directory that has no watch arrive too.
    write(&t.s(b"new/d4/sub/later"), b"polled");
    write(&t.s(b"new/d0/sub/later"), b"polled");
    wait_synced(&t.src, &t.dst, Duration::from_secs(60));
    let log = stderr(&t);
    assert!(
        log.contains("inotify watch limit reached") && log.contains("polling"),
        "the shortage is reported:\n{log}"
    );
    assert_eq!(
        log.matches("inotify watch limit reached").count(),
        1,
        "reported once, not once per directory:\n{log}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{log}");
}

#[test]
fn unreadable_directory_at_start_is_a_clear_error() {
    let t = TestDir::new("unreadable");
    mkdir_p(&t.s(b"a/secret"));
    write(&t.s(b"a/secret/f"), b"s");
    write(&t.d(b"sentinel"), b"keep me");
    for p in [&t.root, &t.src, &t.dst] {
        nix::unistd::chown(p.as_path(), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    }
    // Root reads any directory whatever its mode: the worker runs as nobody.
    chmod(&t.s(b"a/secret"), 0o000);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .arg(&t.src)
        .arg(&t.dst)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv");
    chmod(&t.s(b"a/secret"), 0o755);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "exit code 5:\n{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.contains("a/secret") && first.contains("Permission denied"),
        "names the directory and the problem: {first}"
    );
    assert!(!t.d(b"a").exists(), "nothing synced");
    assert!(t.d(b"sentinel").exists(), "nothing deleted");
}
