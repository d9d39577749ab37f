//! Remote destinations over a real sshd on loopback, several destinations, a
//! destination that goes away and comes back, a full disk, and a source that empties.

use crate::common;

use common::ssh::Sshd;
use common::*;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

/// Starts a short-form worker from `t.src` to `dsts` with `sshd`'s options.
fn start(t: &TestDir, sshd: &Sshd, dsts: &[String], extra: &[&str]) -> Worker {
    let mut args = sshd.worker_args();
    args.extend(extra.iter().map(OsString::from));
    start_with(t, dsts, args)
}

/// Starts a short-form worker from `t.src` to `dsts` with these options. The status file
/// is in a directory of its own (a confined worker may write there: not the test's root,
/// where the keys are).
fn start_with(t: &TestDir, dsts: &[String], opts: Vec<OsString>) -> Worker {
    let run = t.root.join("run");
    mkdir_p(&run);
    let status = run.join("status");
    let mut args: Vec<OsString> = vec!["-t".into(), "0.1".into(), "-w".into(), "0.1".into()];
    args.extend(opts);
    args.push("--status-file".into());
    args.push(status.clone().into());
    args.push(t.src.clone().into());
    args.extend(dsts.iter().map(OsString::from));
    Worker::start_raw(&t.root, &t.src, &t.dst, &status, &args)
}

/// The worker's state object, asked for with SIGUSR1.
fn state(w: &Worker) -> serde_json::Value {
    let before = w.stderr().matches("state: ").count();
    w.signal(nix::sys::signal::Signal::SIGUSR1);
    let mut out = serde_json::Value::Null;
    wait_until(SYNC_TIMEOUT, "a state line", || {
        let log = w.stderr();
        if log.matches("state: ").count() <= before {
            return Err("not yet".into());
        }
        let line = log
            .rsplit("state: ")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap();
        out = serde_json::from_str(line).map_err(|e| e.to_string())?;
        Ok(())
    });
    out
}

fn mirror_over_ssh(name: &str, extra: &[&str]) {
    let t = TestDir::new(name);
    let sshd = Sshd::start(&t.root.join("sshd"));
    mkdir(&t.s(b"d"));
    write(&t.s(b"d/before"), b"initial");
    let mut w = start(&t, &sshd, &[sshd.dest(&t.dst)], extra);
    if extra.contains(&"--sandbox") {
        w.assert_sandboxed();
    }
    assert_synced_now(&t.src, &t.dst, "after the initial sync over ssh");
    for name in [
        &b"sp ace"[..],
        b"new\nline",
        b"-dash",
        b"q'uote",
        b"st*ar[1]",
        b"\xff\xfe",
    ] {
        write(&bp(&t.s(b"d"), name), name);
    }
    rename(&t.s(b"d"), &t.s(b"renamed"));
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
    // The shared connection is closed at exit.
    let masters: Vec<_> = processes_mentioning(b"ControlPersist")
        .into_iter()
        .filter(|(_, c)| c.contains(&format!("-p {}", sshd.port)))
        .collect();
    assert!(masters.is_empty(), "ssh masters left: {masters:?}");
}

cases! { mirror_over_ssh;
    mirror_over_ssh_with_special_names: &[],
    /// The same, sandboxed: rsync, ssh, its shared connection and the remote renames.
    mirror_over_ssh_with_special_names_sandboxed: &["--sandbox"],
}

/// A confined worker reaches an ssh destination with a key and a known-hosts file that
/// are not in `~/.ssh`, named in the ssh options the two ways ssh takes them (`-o` and
/// `IdentityFile=…` as two words, `-oUserKnownHostsFile=…` as one): it may read the key,
/// and `StrictHostKeyChecking=accept-new` appends the host's key to the known-hosts
/// file. Its state says it is confined, with the network kept for ssh.
#[test]
fn a_sandboxed_worker_reaches_ssh_with_a_key_and_known_hosts_outside_home() {
    let t = TestDir::new("ssh-sandbox");
    let sshd = Sshd::start(&t.root.join("sshd"));
    let known = t.root.join("known_hosts");
    write(&known, b"");
    write(&t.s(b"f"), b"1");
    let opt = |o: String| OsString::from(format!("--ssh-option={o}"));
    let opts = vec![
        "--sandbox".into(),
        "--ssh-port".into(),
        sshd.port.to_string().into(),
        opt("-o".into()),
        opt(format!("IdentityFile={}", sshd.key.display())),
        opt(format!("-oUserKnownHostsFile={}", known.display())),
        opt("-oStrictHostKeyChecking=accept-new".into()),
        opt("-oLogLevel=ERROR".into()),
        opt("-oConnectTimeout=5".into()),
    ];
    let mut w = start_with(&t, &[sshd.dest(&t.dst)], opts);
    w.assert_sandboxed();
    assert_synced_now(&t.src, &t.dst, "after the initial sync over ssh");
    write(&t.s(b"g"), b"2");
    w.wait_synced(SYNC_TIMEOUT);
    // The host's public key (its name may be hashed: HashKnownHosts).
    let host_key = read_lossy(&sshd.dir.join("host_key.pub"));
    let host_key = host_key.split_whitespace().nth(1).unwrap_or("none");
    let host_keys = read_lossy(&known);
    assert!(
        host_keys.contains(&format!(" ssh-ed25519 {host_key}")),
        "the host key is recorded: {host_keys:?}\n{}",
        w.stderr()
    );
    let s = state(&w);
    assert_eq!(s["sandbox"]["enabled"], true, "{s}");
    assert_eq!(s["sandbox"]["no_network"], false, "{s}");
    assert!(
        ["full", "partial"].contains(&s["sandbox"]["landlock"].as_str().unwrap_or("")),
        "{s}"
    );
    w.stop_ok();
}

/// A rename of a big file or of a directory of many files is repeated at the remote side
/// with `mv` instead of a new transfer: the destination keeps the same inodes.
#[test]
fn remote_moves_do_not_transfer_again() {
    let t = TestDir::new("ssh-moves");
    let sshd = Sshd::start(&t.root.join("sshd"));
    write(&t.s(b"big"), &vec![0x5a; 200 << 20]);
    mkdir(&t.s(b"dir"));
    for i in 0..1000 {
        write(&t.s(format!("dir/f{i}").as_bytes()), b"x");
    }
    let mut w = start(&t, &sshd, &[sshd.dest(&t.dst)], &[]);
    let big = lstat(&t.d(b"big")).ino();
    let inside = lstat(&t.d(b"dir/f500")).ino();
    rename(&t.s(b"big"), &t.s(b"big-renamed"));
    rename(&t.s(b"dir"), &t.s(b"dir-renamed"));
    w.wait_synced(SYNC_TIMEOUT);
    assert_eq!(
        lstat(&t.d(b"big-renamed")).ino(),
        big,
        "the big file was sent again"
    );
    assert_eq!(
        lstat(&t.d(b"dir-renamed/f500")).ino(),
        inside,
        "the directory was sent again"
    );
    w.stop_ok();
}

/// A renamed directory costs the remote side one session: the `mv` runs in the shell that
/// starts the remote rsync (`--rsync-path`), not in an ssh session of its own before it
/// (each is a round trip or two over the shared connection plus a remote shell's start).
#[test]
fn a_remote_rename_rides_in_the_rsync_session() {
    let t = TestDir::new("ssh-move-session");
    let sshd = Sshd::start(&t.root.join("sshd"));
    mkdir(&t.s(b"dir"));
    for i in 0..100 {
        write(&t.s(format!("dir/f{i}").as_bytes()), b"x");
    }
    let mut w = start(&t, &sshd, &[sshd.dest(&t.dst)], &[]);
    w.wait_synced(SYNC_TIMEOUT);
    let inside = lstat(&t.d(b"dir/f50")).ino();
    let before = sshd.sessions();
    rename(&t.s(b"dir"), &t.s(b"dir-renamed"));
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
    assert_eq!(
        lstat(&t.d(b"dir-renamed/f50")).ino(),
        inside,
        "the directory was sent again"
    );
    assert_eq!(
        sshd.sessions() - before,
        1,
        "ssh sessions for one renamed directory\n{}",
        w.stderr()
    );
}

/// An rsync that first copies each include or files-from list it is given to `log` (the
/// lists are removed when the batch ends); a files-from line gets the leading slash of an
/// include line, so both read alike.
fn list_keeping_rsync(t: &TestDir, log: &std::path::Path) -> std::path::PathBuf {
    let wrapper = t.root.join("rsync-lists");
    write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do case $a in --include-from=*) tr '\\0' '\\n' < \"${{a#--include-from=}}\" >> '{0}'; echo --- >> '{0}';; --files-from=*) tr '\\0' '\\n' < \"${{a#--files-from=}}\" | sed 's|^|/|' >> '{0}'; echo --- >> '{0}';; esac; done\nexec rsync \"$@\"\n",
            log.display()
        )
        .as_bytes(),
    );
    chmod(&wrapper, 0o755);
    wrapper
}

/// A renamed directory whose old tree the destination holds is not walked again: the
/// remote `mv` puts it in place and the run that follows names the directory itself
/// (`/dir-renamed`), not its 1,000 entries (`/dir-renamed/***`: a file list of all of
/// them over the link).
#[test]
fn a_renamed_tree_is_not_walked_again() {
    let t = TestDir::new("ssh-move-walk");
    let sshd = Sshd::start(&t.root.join("sshd"));
    mkdir(&t.s(b"dir"));
    for i in 0..1000 {
        write(&t.s(format!("dir/f{i}").as_bytes()), b"x");
    }
    let log = t.root.join("lists");
    let rsync = list_keeping_rsync(&t, &log);
    let rsync = rsync.to_str().unwrap();
    let mut w = start(&t, &sshd, &[sshd.dest(&t.dst)], &["-S", rsync]);
    w.wait_synced(SYNC_TIMEOUT);
    let inside = lstat(&t.d(b"dir/f500")).ino();
    rename(&t.s(b"dir"), &t.s(b"dir-renamed"));
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
    assert_eq!(lstat(&t.d(b"dir-renamed/f500")).ino(), inside);
    let lists = std::fs::read_to_string(&log).unwrap();
    assert!(
        lists.lines().any(|l| l == "/dir-renamed"),
        "no run named the renamed directory:\n{lists}"
    );
    assert!(
        !lists.lines().any(|l| l.starts_with("/dir-renamed/")),
        "the renamed tree was walked again:\n{lists}"
    );
}

/// When the destination did not hold the old tree after all (removed there by someone
/// else), the move fails, the run does not start, and the batch's retry walks the renamed
/// tree: nothing is missing at the destination.
#[test]
fn a_failed_remote_move_falls_back_to_a_walk() {
    let t = TestDir::new("ssh-move-fail");
    let sshd = Sshd::start(&t.root.join("sshd"));
    mkdir(&t.s(b"dir"));
    for i in 0..100 {
        write(&t.s(format!("dir/f{i}").as_bytes()), b"x");
    }
    let mut w = start(&t, &sshd, &[sshd.dest(&t.dst)], &[]);
    w.wait_synced(SYNC_TIMEOUT);
    std::fs::remove_dir_all(t.d(b"dir")).unwrap();
    rename(&t.s(b"dir"), &t.s(b"dir-renamed"));
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
    assert!(
        w.stderr().contains("clsync-remote-move-failed"),
        "the move did not fail as required:\n{}",
        w.stderr()
    );
}

/// Local destinations get the same treatment (a rename at the destination).
#[test]
fn local_moves_do_not_copy_again() {
    let t = TestDir::new("local-moves");
    write(&t.s(b"big"), &vec![1u8; 8 << 20]);
    let mut w = t.start(NO_ARGS);
    let ino = lstat(&t.d(b"big")).ino();
    rename(&t.s(b"big"), &t.s(b"moved"));
    w.wait_synced(SYNC_TIMEOUT);
    assert_eq!(lstat(&t.d(b"moved")).ino(), ino);
    w.stop_ok();
}

#[test]
fn two_destinations_one_down_then_back() {
    let t = TestDir::new("ssh-two");
    let mut a = Sshd::start(&t.root.join("sshd-a"));
    let mut b = Sshd::start_like(&t.root.join("sshd-b"), &a, "127.0.0.2");
    let dst_b = t.root.join("dst-b");
    mkdir(&dst_b);
    write(&t.s(b"first"), b"1");
    let mut w = start(&t, &a, &[a.dest(&t.dst), b.dest(&dst_b)], &[]);
    assert_synced_now(&t.src, &dst_b, "b after the initial sync");
    b.down();
    for i in 0..20 {
        write(&t.s(format!("while-b-is-down-{i}").as_bytes()), b"x");
    }
    // a stays current while b is down.
    w.wait_synced(SYNC_TIMEOUT);
    wait_until(SYNC_TIMEOUT, "b reported unreachable", || {
        let s = state(&w);
        let d = &s["destinations"][1];
        (d["state"] == "unreachable" && d["queued"].as_u64() > Some(0))
            .then_some(())
            .ok_or_else(|| s.to_string())
    });
    let s = state(&w);
    assert_eq!(s["destinations"][0]["state"], "ok", "{s}");
    assert!(s["destinations"][1]["last_error"].is_string(), "{s}");
    a.down();
    a.up();
    b.up();
    write(&t.s(b"after-b-is-back"), b"y");
    wait_synced(&t.src, &dst_b, Duration::from_secs(120));
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

/// A full disk at the destination: the worker keeps the paths queued and retries until
/// there is room again.
#[test]
fn a_full_destination_converges_once_there_is_room() {
    let t = TestDir::new("disk-full");
    let mnt = t.root.join("small");
    mkdir(&mnt);
    let _tmpfs = Tmpfs::mount(&mnt, "size=1m");
    let mut w = Worker::start(&t.src, &mnt, NO_ARGS);
    write(&t.s(b"too-big"), &vec![3u8; 3 << 20]);
    wait_until(SYNC_TIMEOUT, "the failure", || {
        w.stderr()
            .contains("sync failed")
            .then_some(())
            .ok_or_else(|| "not yet".into())
    });
    w.assert_alive();
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    wait_synced(&t.src, &mnt, Duration::from_secs(120));
    w.stop_ok();
}

/// The source's disk is unmounted under the worker: the directory is empty now, and
/// mirroring that would delete everything at the destination. The worker stops instead;
/// started again, it refuses; with allow-empty-source it mirrors the empty tree.
#[test]
fn an_emptied_source_does_not_empty_the_destination() {
    let t = TestDir::new("empty-src");
    let _tmpfs = Tmpfs::mount(&t.src, "");
    for i in 0..5 {
        write(&t.s(format!("data{i}").as_bytes()), b"precious");
    }
    let mut w = t.start(NO_ARGS);
    let st = std::process::Command::new("umount")
        .arg(&t.src)
        .status()
        .unwrap();
    assert!(st.success());
    assert_stopped_for_unmounted_source(&mut w, &t, 5);
    let out = run(
        &t.root,
        &[t.src.as_os_str(), t.dst.as_os_str()],
        SYNC_TIMEOUT,
    );
    assert_eq!(out.code(), Some(3), "{}", out.describe());
    assert!(
        out.describe().contains("is empty but the destination"),
        "{}",
        out.describe()
    );
    assert!(t.d(b"data0").exists());
    let mut w = t.start(&["--allow-empty-source"]);
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
    assert!(
        !t.d(b"data0").exists(),
        "allowed: the empty tree is mirrored"
    );
}

/// Everything in the source is deleted while the worker runs: the same refusal.
#[test]
fn a_source_emptied_at_run_time_is_not_mirrored() {
    let t = TestDir::new("emptied");
    for i in 0..5 {
        write(&t.s(format!("data{i}").as_bytes()), b"precious");
    }
    let mut w = t.start(NO_ARGS);
    for i in 0..5 {
        remove_file(&t.s(format!("data{i}").as_bytes()));
    }
    let code = w.wait_exit(SYNC_TIMEOUT);
    assert_eq!(code.code(), Some(1), "{}", w.stderr());
    assert!(
        w.stderr().contains("is empty but the destination"),
        "{}",
        w.stderr()
    );
    assert!(
        t.d(b"data4").exists(),
        "nothing was deleted at the destination"
    );
}

/// A rename is repeated at the remote side without going through a symlink there: with
/// `dst/d -> root-only` (as a symlink mirrored from the source leaves it until the next
/// rsync), `mv d/f d/g` in the source must not rename `root-only/f`.
#[test]
fn a_remote_move_is_not_repeated_through_a_symlink() {
    let t = TestDir::new("ssh-move-link");
    let sshd = Sshd::start(&t.root.join("sshd"));
    let target = t.root.join("root-only");
    mkdir(&target);
    write(&target.join("f"), b"canary");
    mkdir(&t.s(b"d"));
    write(&t.s(b"d/f"), b"source");
    symlink(pb(&target), &t.d(b"d"));
    let mut w = start(&t, &sshd, &[sshd.dest(&t.dst)], &["--skip-initialsync"]);
    rename(&t.s(b"d/f"), &t.s(b"d/g"));
    wait_until(SYNC_TIMEOUT, "the destination's d is a directory", || {
        let m = std::fs::symlink_metadata(t.d(b"d")).map_err(|e| e.to_string())?;
        m.is_dir()
            .then_some(())
            .ok_or_else(|| format!("{:?}", m.file_type()))
    });
    w.stop_ok();
    assert!(
        exists_nofollow(&target.join("f")) && !exists_nofollow(&target.join("g")),
        "the move went through the remote symlink"
    );
}
