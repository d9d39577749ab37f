//! Start-up and exit options: pid file, skip-initialsync, only-initialsync.

use crate::common;

use common::*;
use std::ffi::OsString;
use std::time::Duration;

#[test]
fn pid_file_refuses_a_second_instance_and_is_removed_at_exit() {
    let t = TestDir::new("pidfile");
    // What a second worker that did not refuse would copy to its destination.
    write(&t.s(b"x"), b"x");
    let pid = t.root.join("clsync.pid");
    let mut w = t.start(&[OsString::from("--pid-file"), pid.clone().into()]);
    let text = std::fs::read_to_string(&pid).unwrap();
    assert_eq!(text.trim(), w.pid().to_string());
    // A second worker on the same pid file (another destination) refuses to start.
    let other = t.root.join("dst2");
    let second = run(
        &t.root,
        &[
            OsString::from("--pid-file"),
            pid.clone().into(),
            t.src.clone().into(),
            other.clone().into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(second.status.code(), Some(1), "{}", second.stderr);
    assert!(
        second.stderr.contains("another process is running"),
        "{}",
        second.stderr
    );
    assert!(t.d(b"x").exists(), "the first worker mirrors x");
    assert!(
        !other.join("x").exists(),
        "the refused worker synced nothing"
    );
    w.stop_ok();
    assert!(!pid.exists(), "removed at exit");
}

#[test]
fn a_stale_pid_file_is_replaced() {
    let t = TestDir::new("stalepid");
    let pid = t.root.join("clsync.pid");
    // pid_max is at most 2^22: this pid cannot be alive.
    write(&pid, b"4194304999\n");
    let mut w = t.start(&[OsString::from("--pid-file"), pid.clone().into()]);
    assert_eq!(
        std::fs::read_to_string(&pid).unwrap().trim(),
        w.pid().to_string()
    );
    w.stop_ok();
}

#[test]
fn only_initialsync_syncs_and_exits() {
    let t = TestDir::new("onlyinit");
    mkdir_p(&t.s(b"a/b"));
    write(&t.s(b"a/b/f"), b"data");
    let f = run(
        &t.root,
        &[
            OsString::from("--only-initialsync"),
            t.src.clone().into(),
            t.dst.clone().into(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_synced_now(&t.src, &t.dst, "after --only-initialsync");
}

#[test]
fn skip_initialsync_mirrors_only_changes() {
    let t = TestDir::new("skipinit");
    write(&t.s(b"old"), b"not synced at start");
    let mut w = t.start(&[OsString::from("--skip-initialsync")]);
    write(&t.s(b"new"), b"synced");
    wait_until(SYNC_TIMEOUT, "the new file", || {
        exists_nofollow(&t.d(b"new"))
            .then_some(())
            .ok_or_else(|| "not yet".into())
    });
    assert!(!exists_nofollow(&t.d(b"old")), "no initial sync");
    w.stop_ok();
    let both = run(
        &t.root,
        &[
            OsString::from("--skip-initialsync"),
            "--only-initialsync".into(),
            t.src.clone().into(),
            t.dst.clone().into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(both.status.code(), Some(2), "{}", both.stderr);
    assert!(
        both.stderr.contains("exclude each other"),
        "{}",
        both.stderr
    );
}

/// A hook that records its arguments and environment.
fn recording_hook(t: &TestDir, name: &str) -> std::path::PathBuf {
    let hook = t.root.join(name);
    let log = t.root.join(format!("{name}.log"));
    write_script(
        &hook,
        &format!(
            "#!/bin/sh\necho \"$0 $* status=$CLSYNC_STATUS code=$CLSYNC_EXIT_CODE cwd=$(pwd)\" >> '{}'\n",
            log.display()
        ),
    );
    hook
}

#[test]
fn pre_exit_and_exit_hooks_run_with_the_label() {
    let t = TestDir::new("hooks");
    let pre = recording_hook(&t, "pre");
    let post = recording_hook(&t, "post");
    let mut w = t.start(&[
        OsString::from("--pre-exit-hook"),
        pre.clone().into(),
        "--exit-hook".into(),
        post.clone().into(),
        "-l".into(),
        "web01".into(),
    ]);
    write(&t.s(b"f"), b"x");
    w.stop_ok();
    let pre_log = std::fs::read_to_string(t.root.join("pre.log")).unwrap();
    let post_log = std::fs::read_to_string(t.root.join("post.log")).unwrap();
    let src = t.src.display().to_string();
    assert_eq!(
        pre_log,
        format!("{} web01 status=preexit code= cwd={src}\n", pre.display())
    );
    assert_eq!(
        post_log,
        format!("{} web01 status=exiting code=0 cwd={src}\n", post.display())
    );
    assert_synced_now(&t.src, &t.dst, "after the stop");
}

/// Clock ticks of CPU (user and system) process `pid` uses over the next `window` (a
/// measurement, not a wait for anything: a worker with nothing to do uses next to none,
/// a busy loop about 100 a second).
fn cpu_ticks_over(pid: nix::unistd::Pid, window: std::time::Duration) -> u64 {
    let ticks = || {
        // After the command name: state, ..., utime (the 12th), stime.
        let f = stat_fields(pid.as_raw()).expect("the worker's /proc/PID/stat");
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = ticks();
    let start = std::time::Instant::now();
    while start.elapsed() < window {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ticks() - before
}

#[test]
fn standby_file_holds_syncs_and_events_keep_queuing() {
    let t = TestDir::new("standby");
    let standby = t.root.join("standby");
    let mut w = t.start(&[OsString::from("--standby-file"), standby.clone().into()]);
    write(&standby, b"");
    wait_until(SYNC_TIMEOUT, "status hold on", || {
        // The status changes at the first batch that is held back.
        write(&t.s(b"probe"), b"p");
        match w.status().as_str() {
            "hold on" => Ok(()),
            s => Err(s.to_string()),
        }
    });
    write(&t.s(b"held"), b"waits for the standby file to go");
    // Held, not merely not yet synced: the worker has queued `held` (probe and held), its
    // batch was due after 0.1 s and is overdue by more than a second (a standby check
    // every second), and no sync ran since the hold began.
    let held_at = state(&mut w);
    let syncs = held_at["syncs"].clone();
    wait_until(SYNC_TIMEOUT, "held queued and overdue", || {
        let s = state(&mut w);
        let lag = s["destinations"][0]["lag_s"].as_f64().unwrap_or(0.0);
        if s["queued"] == 2 && s["standby"] == true && lag >= 1.5 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(state(&mut w)["syncs"], syncs, "no sync on standby");
    // Waiting, not spinning: over two seconds of standby with overdue batches the worker
    // uses next to no CPU (it used a whole core: the overdue deadline woke its loop
    // again and again).
    let used = cpu_ticks_over(w.pid(), std::time::Duration::from_secs(2));
    assert!(
        used < 20,
        "{used} clock ticks of CPU in 2 s on standby (a busy loop)"
    );
    assert!(!exists_nofollow(&t.d(b"held")), "held synced on standby");
    assert!(
        !exists_nofollow(&t.d(b"probe")),
        "nothing synced on standby"
    );
    std::fs::remove_file(&standby).unwrap();
    w.wait_synced(SYNC_TIMEOUT);
    assert_eq!(w.status(), "running");
    w.stop_ok();
}

/// No verification runs while the standby file exists either (it is a full rsync to the
/// destination): with nothing queued, the verification that comes due finds the worker
/// on standby ("hold on") and leaves the drift alone; it repairs it once the file is
/// gone. (It ran, standby or not, when no batch was due.)
#[test]
fn a_verification_waits_while_on_standby() {
    let t = TestDir::new("standby-verify");
    write(&t.s(b"f"), b"data");
    let standby = t.root.join("standby");
    let mut w = t.start(&[
        OsString::from("--standby-file"),
        standby.clone().into(),
        "--verify-interval".into(),
        "1s".into(),
    ]);
    write(&standby, b"");
    std::fs::remove_file(t.d(b"f")).unwrap();
    wait_until(SYNC_TIMEOUT, "status hold on", || {
        match w.status().as_str() {
            "hold on" => Ok(()),
            s => Err(format!("{s}\n{}", w.stderr())),
        }
    });
    assert!(
        !exists_nofollow(&t.d(b"f")),
        "repaired on standby:\n{}",
        w.stderr()
    );
    std::fs::remove_file(&standby).unwrap();
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn one_file_system_leaves_mount_points_empty() {
    let t = TestDir::new("onefs");
    mkdir_p(&t.s(b"mnt"));
    write(&t.s(b"top"), b"same fs");
    let _tmpfs = Tmpfs::mount(&t.s(b"mnt"), "");
    write(&t.s(b"mnt/inside"), b"other fs");
    let mut w = t.start(&[OsString::from("--one-file-system")]);
    write(&t.s(b"mnt/later"), b"other fs, after start");
    write(&t.s(b"top2"), b"same fs, after start");
    let other_fs = |rel: &[u8], _: bool| rel.starts_with(b"mnt/");
    w.wait_synced_ctx(SYNC_TIMEOUT, "one-file-system", &other_fs);
    w.stop_ok();
    assert!(t.d(b"mnt").is_dir(), "the mount point itself is synced");
    assert_eq!(
        std::fs::read_dir(t.d(b"mnt")).unwrap().count(),
        0,
        "nothing from the other file system"
    );
}

#[test]
fn max_iterations_counts_the_initial_sync() {
    let t = TestDir::new("maxiter");
    write(&t.s(b"before"), b"initial sync = iteration 1");
    let mut w = t.start(&[OsString::from("--max-iterations"), "2".into()]);
    write(&t.s(b"second"), b"iteration 2");
    let st = w.wait_exit(SYNC_TIMEOUT);
    assert_eq!(st.code(), Some(0), "{}", w.stderr());
    assert!(exists_nofollow(&t.d(b"before")) && exists_nofollow(&t.d(b"second")));
    assert!(
        w.stderr()
            .contains("max-iterations: 2 sync iterations done"),
        "{}",
        w.stderr()
    );
}

#[test]
fn exit_on_no_events_exits_once_synced() {
    let t = TestDir::new("noevents");
    mkdir_p(&t.s(b"d/e"));
    write(&t.s(b"d/e/f"), b"x");
    let f = run(
        &t.root,
        &[
            OsString::from("--exit-on-no-events"),
            t.src.clone().into(),
            t.dst.clone().into(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert!(f.stderr.contains("exit-on-no-events"), "{}", f.stderr);
    assert_synced_now(&t.src, &t.dst, "after --exit-on-no-events");
}

#[test]
fn full_initialsync_ignores_the_rules_once() {
    let t = TestDir::new("fullinit");
    let rules = t.root.join("rules");
    write(&rules, b"-f\\.log$\n");
    write(&t.s(b"old.log"), b"synced once, at start");
    let mut w = t.start(&[OsString::from("-F"), "-R".into(), rules.into()]);
    assert!(
        exists_nofollow(&t.d(b"old.log")),
        "the initial sync ignores the rules"
    );
    write(&t.s(b"new.log"), b"excluded");
    write(&t.s(b"marker"), b"synced");
    wait_until(SYNC_TIMEOUT, "marker", || {
        exists_nofollow(&t.d(b"marker"))
            .then_some(())
            .ok_or_else(|| "not yet".into())
    });
    assert!(!exists_nofollow(&t.d(b"new.log")), "later, the rules apply");
    w.stop_ok();
}

#[test]
fn background_detaches_and_the_pid_file_names_the_daemon() {
    let t = TestDir::new("background");
    let pid = t.root.join("clsync.pid");
    write(&t.s(b"before"), b"x");
    let f = run(
        &t.root,
        &[
            OsString::from("-b"),
            "-t".into(),
            "0.1".into(),
            "-w".into(),
            "0.1".into(),
            "--pid-file".into(),
            pid.clone().into(),
            "--status-file".into(),
            t.status.clone().into(),
            t.src.clone().into(),
            t.dst.clone().into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(
        f.status.code(),
        Some(0),
        "the foreground process returns: {}",
        f.stderr
    );
    let mut daemon = 0;
    wait_until(SYNC_TIMEOUT, "the daemon to be running", || {
        daemon = std::fs::read_to_string(&pid)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())?;
        match std::fs::read_to_string(&t.status) {
            Ok(s) if s.trim() == "running" => Ok(()),
            s => Err(format!("status {s:?}")),
        }
    });
    let daemon = nix::unistd::Pid::from_raw(daemon);
    // Stops the daemon however the test ends.
    struct Kill(nix::unistd::Pid);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _guard = Kill(daemon);
    write(&t.s(b"live"), b"y");
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_until(SYNC_TIMEOUT, "the daemon to exit", || {
        if pid.exists() {
            Err("pid file still there".into())
        } else {
            Ok(())
        }
    });
}

#[test]
fn journal_output_carries_priorities_and_quiet_keeps_errors_only() {
    let t = TestDir::new("journal");
    let mut w = t.start(&[OsString::from("--output"), "journal".into()]);
    w.stop_ok();
    let log = w.stderr();
    assert!(
        log.lines().any(|l| l.starts_with("<6>clsync: ready")),
        "info lines carry <6>:\n{log}"
    );
    let t = TestDir::new("quiet");
    let mut w = t.start(&[OsString::from("-q")]);
    write(&t.s(b"f"), b"x");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
    assert_eq!(w.stderr(), "", "nothing but errors with -q");
    // syslog(3): nothing on stderr, and the worker runs as usual.
    let t = TestDir::new("syslog");
    let mut w = t.start(&[OsString::from("-Y"), "syslog".into()]);
    write(&t.s(b"f"), b"x");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
    assert_eq!(w.stderr(), "", "the log goes to syslog");
}

#[test]
fn sigusr1_logs_the_state_as_json() {
    let t = TestDir::new("usr1");
    mkdir_p(&t.s(b"a/b"));
    let mut w = t.start(&[OsString::from("-t"), "30".into(), "-w".into(), "30".into()]);
    write(&t.s(b"queued"), b"waits 30 s");
    wait_until(SYNC_TIMEOUT, "the state line", || {
        w.signal(nix::sys::signal::Signal::SIGUSR1);
        let log = w.stderr();
        match log
            .lines()
            .find(|l| l.starts_with("clsync: state: ") && l.contains("\"queued\":1"))
        {
            Some(_) => Ok(()),
            None => Err(log),
        }
    });
    let log = w.stderr();
    let line = log
        .lines()
        .rev()
        .find(|l| l.starts_with("clsync: state: "))
        .unwrap();
    let state: serde_json::Value =
        serde_json::from_str(line.trim_start_matches("clsync: state: ")).unwrap();
    assert_eq!(state["phase"], "running", "{line}");
    assert_eq!(state["ready"], true, "{line}");
    assert_eq!(state["watches"], 3, "root, a and a/b: {line}");
    assert_eq!(state["destinations"][0]["queued"], 1, "{line}");
    w.stop_ok();
}

#[test]
fn lists_dir_keeps_the_lists_with_dont_unlink_lists() {
    let t = TestDir::new("listsdir");
    let lists = t.root.join("lists");
    mkdir(&t.s(b"d"));
    let mut w = t.start(&[OsString::from("-L"), lists.clone().into(), "-U".into()]);
    write(&t.s(b"d/new file"), b"x");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&lists).unwrap().permissions().mode() & 0o777,
        0o700,
        "created private"
    );
    // A new file is a `--files-from` run (sync/plan.rs): its list names it alone.
    let kept: Vec<Vec<u8>> = std::fs::read_dir(&lists)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("files.")
        })
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(
        kept.iter().any(|l| l == b"d/new file\0"),
        "a kept list names the file, NUL-terminated: {kept:?}"
    );
    // A lists directory others may write to is refused before anything is synced.
    let open = t.root.join("open");
    mkdir(&open);
    chmod(&open, 0o777);
    let f = run(
        &t.root,
        &[
            OsString::from("-L"),
            open.into(),
            t.src.clone().into(),
            t.root.join("dst2").into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(f.status.code(), Some(3), "{}", f.stderr);
    assert!(f.stderr.contains("writable by others"), "{}", f.stderr);
}

/// `--uid`/`--gid`: the worker drops to the user once the tree is watched; its list
/// files (in a private directory handed to that user) keep working for live syncs.
#[test]
fn the_worker_drops_to_uid_and_gid_and_keeps_syncing() {
    drops_to_nobody_and_syncs("uid-drop", &[]);
}

/// The same with a `--lists-dir` the worker makes: it is handed to the user too (made
/// root's 0700, the lists could not be written after the drop).
#[test]
fn a_lists_dir_the_worker_makes_is_the_uids() {
    use std::os::unix::fs::MetadataExt;
    let t = drops_to_nobody_and_syncs("uid-drop-lists", &["--lists-dir".into(), "LISTS".into()]);
    let m = std::fs::symlink_metadata(t.root.join("made-lists")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (65534, 0o700));
}

/// Runs a worker as nobody (with `extra` options; `LISTS` names `made-lists` in the
/// test's root, not made yet) and checks a live change is synced.
fn drops_to_nobody_and_syncs(name: &str, extra: &[OsString]) -> TestDir {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new(name);
    // The user's own directories: the status file's directory may be the user's, not
    // one everybody may write to (that is refused).
    for d in [&t.root, &t.src, &t.dst] {
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut args = vec![
        OsString::from("--uid"),
        "nobody".into(),
        "--gid".into(),
        "65534".into(),
    ];
    args.extend(extra.iter().map(|a| {
        if a == "LISTS" {
            t.root.join("made-lists").into_os_string()
        } else {
            a.clone()
        }
    }));
    let mut w = t.start(&args);
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert!(uid_line.contains("\t65534\t"), "{uid_line}");
    assert_eq!(
        groups.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65534"]
    );
    write(&t.s(b"after-drop"), b"synced by nobody");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
    t
}

/// A long initial sync logs its progress every few seconds (bytes done of the total,
/// rate, time left). The handler is rsync slowed down by --bwlimit.
#[test]
fn a_long_initial_sync_reports_its_progress() {
    let t = TestDir::new("progress");
    let slow = t.root.join("slow-rsync.sh");
    write_script(&slow, "#!/bin/sh\nexec rsync --bwlimit=2m \"$@\"\n");
    write(&t.s(b"big"), &vec![7u8; 14 << 20]);
    let args: Vec<OsString> = vec![
        "--progress".into(),
        "-S".into(),
        slow.into(),
        "--status-file".into(),
        t.status.clone().into(),
        t.src.clone().into(),
        t.dst.clone().into(),
    ];
    let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &t.status, &args);
    let log = w.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("initial sync: ") && l.contains(" MiB of "))
        .unwrap_or_else(|| panic!("no progress line:\n{log}"));
    // Bytes done of the total (estimated from rsync's whole percentage: 14 MiB within a
    // percent or two), a rate, the time left.
    let total: f64 = line
        .split_once(" MiB of ~")
        .and_then(|(_, r)| r.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no estimated total: {line}"));
    assert!((13.5..=15.0).contains(&total), "{line}");
    assert!(line.contains("/s, ") && line.contains(" left, "), "{line}");
    w.stop_ok();
}

/// `--verify-interval`: a periodic full comparison repairs drift at the destination
/// (here: changes made there by someone else, which no event reports) and says so.
#[test]
fn verification_repairs_drift_and_reports_it() {
    let t = TestDir::new("verify");
    write(&t.s(b"keep"), b"source copy");
    write(&t.s(b"also"), b"x");
    let mut w = t.start(&[OsString::from("--verify-interval"), "1".into()]);
    wait_until(SYNC_TIMEOUT, "a verification with nothing to do", || {
        let log = w.stderr();
        log.contains("verify: no drift").then_some(()).ok_or(log)
    });
    write(&t.d(b"keep"), b"edited at the destination");
    remove_file(&t.d(b"also"));
    write(&t.d(b"junk"), b"not in the source");
    w.wait_synced(SYNC_TIMEOUT);
    wait_until(SYNC_TIMEOUT, "the repair to be reported", || {
        let log = w.stderr();
        log.contains("differences repaired")
            .then_some(())
            .ok_or(log)
    });
    w.stop_ok();
}

/// `--wait-for-close`: a file being written is synced once it is closed, not while the
/// writer still has it open; one that stays open is synced after the cap anyway.
#[test]
fn a_file_open_for_writing_waits_for_its_close_or_the_cap() {
    use std::io::Write;
    let t = TestDir::new("wait-close");
    write(&t.s(b"f"), b"old;");
    write(&t.s(b"log"), b"start;");
    let mut w = t.start(&[OsString::from("--wait-for-close"), "30".into()]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(t.s(b"f"))
        .unwrap();
    f.write_all(b"half written;").unwrap();
    // A later, closed file is synced: the open one's change was seen before it, held.
    write(&t.s(b"b"), b"closed at once");
    wait_until(SYNC_TIMEOUT, "b", || {
        t.d(b"b")
            .exists()
            .then_some(())
            .ok_or_else(|| "not yet".into())
    });
    assert_eq!(
        std::fs::read(t.d(b"f")).unwrap(),
        b"old;",
        "synced while open"
    );
    f.write_all(b"done").unwrap();
    drop(f);
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();

    // The cap: a log that is never closed still syncs.
    let mut w = t.start(&[OsString::from("--wait-for-close"), "1".into()]);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(t.s(b"log"))
        .unwrap();
    log.write_all(b"line 1;").unwrap();
    wait_until(SYNC_TIMEOUT, "the open log after the cap", || {
        let d = std::fs::read(t.d(b"log")).unwrap_or_default();
        (d == b"start;line 1;")
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&d).into_owned())
    });
    drop(log);
    w.stop_ok();
}

/// Live syncing does not wait for the initial copy: while the initial rsync is held (a
/// wrapper waits for a release file before running the full sync), a change made now
/// reaches the destination; the worker becomes ready once the initial sync ends, and
/// everything converges.
#[test]
fn changes_during_the_initial_sync_are_synced_without_waiting_for_it() {
    live_during_a_held_initial_sync(false);
}

/// The same when the first try of the initial sync fails (a destination not reachable
/// for a moment, a handler that could not be run): it is tried again beside the queue,
/// not as an ordinary batch that every live change would wait for.
#[test]
fn changes_during_a_retried_initial_sync_are_synced_without_waiting_for_it() {
    live_during_a_held_initial_sync(true);
}

/// A wrapper of rsync that holds the whole-tree runs (those with no list): each logs its
/// start in ROOT/full.log, the first fails at once when `fail_first`, the next ones touch
/// ROOT/full.started and wait for ROOT/release (at most two minutes). Runs with a list
/// (live changes) go through at once.
fn hold_script(t: &TestDir, fail_first: bool) -> std::path::PathBuf {
    let script = t.root.join("hold-full.sh");
    write_script(
        &script,
        &format!(
            r#"#!/bin/sh
T='{root}'
case "$*" in *--include-from=*|*--files-from=*) exec rsync "$@";; esac
echo full >> "$T/full.log"
if [ {fail_first} = true ] && [ ! -e "$T/failed" ]; then : > "$T/failed"; exit 12; fi
touch "$T/full.started"
i=0; while [ ! -e "$T/release" ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done
exec rsync "$@"
"#,
            root = t.root.display()
        ),
    );
    script
}

fn live_during_a_held_initial_sync(fail_first: bool) {
    let t = TestDir::new("live-during-initial");
    mkdir(&t.s(b"old"));
    for i in 0..20 {
        write(&t.s(format!("old/f{i}").as_bytes()), b"old");
    }
    let script = hold_script(&t, fail_first);
    let mut w = Worker::spawn_in(
        &t.root,
        &t.src,
        &t.dst,
        &[OsString::from("-S"), script.into()],
    );
    wait_until(SYNC_TIMEOUT, "the initial sync starts", || {
        t.root
            .join("full.started")
            .exists()
            .then_some(())
            .ok_or_else(|| format!("not yet\n{}", w.stderr()))
    });
    mkdir_p(&t.s(b"new/deep"));
    write(&t.s(b"new/deep/during"), b"written during the initial sync");
    write(&t.s(b"old/f3"), b"changed during the initial sync");
    wait_until(
        SYNC_TIMEOUT,
        "the change, before the initial sync ends",
        || {
            let got = std::fs::read(t.d(b"new/deep/during")).unwrap_or_default();
            (got == b"written during the initial sync")
                .then_some(())
                .ok_or_else(|| format!("not there yet\n{}", w.stderr()))
        },
    );
    assert!(
        !t.d(b"old/f0").exists(),
        "the initial sync is still held\n{}",
        w.stderr()
    );
    assert_ne!(w.status(), "running", "ready before the initial sync ended");
    let tries = std::fs::read_to_string(t.root.join("full.log")).unwrap();
    assert_eq!(
        tries.lines().count(),
        if fail_first { 2 } else { 1 },
        "whole-tree runs so far:\n{tries}\n{}",
        w.stderr()
    );
    write(&t.root.join("release"), b"");
    w.wait_ready_within(SYNC_TIMEOUT);
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

/// `--max-iterations 1` reached by the initial sync while it runs, with a change queued:
/// the worker waits for the sync's end without spinning (the overdue batch woke its loop
/// again and again, a core busy for the whole initial copy), then exits 0 with the
/// change still queued (no further sync).
#[test]
fn max_iterations_reached_during_a_sync_waits_for_it_without_spinning() {
    let t = TestDir::new("maxit-wait");
    write(&t.s(b"old"), b"old");
    let script = hold_script(&t, false);
    let mut w = Worker::spawn_in(
        &t.root,
        &t.src,
        &t.dst,
        &[
            OsString::from("-S"),
            script.into(),
            "--max-iterations".into(),
            "1".into(),
        ],
    );
    wait_until(SYNC_TIMEOUT, "the initial sync starts", || {
        (t.root.join("full.started").exists())
            .then_some(())
            .ok_or_else(|| format!("not yet\n{}", w.stderr()))
    });
    write(&t.s(b"new"), b"queued, never synced");
    wait_until(SYNC_TIMEOUT, "the change queued", || {
        let s = state(&mut w);
        (s["queued"] == 1)
            .then_some(())
            .ok_or_else(|| s.to_string())
    });
    let used = cpu_ticks_over(w.pid(), std::time::Duration::from_secs(2));
    assert!(
        used < 20,
        "{used} clock ticks of CPU in 2 s waiting for the sync (a busy loop)"
    );
    write(&t.root.join("release"), b"");
    let st = w.wait_exit(SYNC_TIMEOUT);
    assert_eq!(st.code(), Some(0), "{}", w.stderr());
    assert!(t.d(b"old").exists(), "the initial sync ran");
    let log = w.stderr();
    assert!(
        log.contains("max-iterations: 1 sync iterations done; exiting (1 paths queued)"),
        "no sync after the last iteration:\n{log}"
    );
}

/// At zero delays a new file costs one rsync run, not one for its creation and another
/// for its content: a file just created waits (briefly) for its writer to close it. One
/// that stays open is synced after a moment anyway.
#[test]
fn a_new_file_costs_one_rsync_run_at_zero_delays() {
    use std::io::Write as _;
    let t = TestDir::new("one-run-per-file");
    let runs = t.root.join("runs.log");
    let script = t.root.join("count-rsync.sh");
    write_script(
        &script,
        &format!(
            "#!/bin/sh\necho run >> '{}'\nexec rsync \"$@\"\n",
            runs.display()
        ),
    );
    let mut w = t.start(&[
        OsString::from("-t"),
        "0".into(),
        "-w".into(),
        "0".into(),
        "-S".into(),
        script.into(),
    ]);
    let count = || {
        std::fs::read_to_string(&runs)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let before = count();
    for i in 0..10 {
        let name = format!("new{i}");
        let mut f = std::fs::File::create(t.s(name.as_bytes())).unwrap();
        f.write_all(b"first part, ").unwrap();
        // A writer that takes a moment between its writes (not synchronisation: the
        // worker must not sync the half-written file whatever it has read by now).
        std::thread::sleep(Duration::from_millis(10));
        f.write_all(b"second part").unwrap();
        drop(f);
        wait_until(SYNC_TIMEOUT, "the new file", || {
            let got = std::fs::read(t.d(name.as_bytes())).unwrap_or_default();
            (got == b"first part, second part")
                .then_some(())
                .ok_or_else(|| "not there".into())
        });
    }
    assert_eq!(count() - before, 10, "rsync runs for 10 new files");
    // Kept open: synced after a moment without its close.
    let mut f = std::fs::File::create(t.s(b"open")).unwrap();
    f.write_all(b"still open").unwrap();
    wait_until(SYNC_TIMEOUT, "the open file", || {
        (std::fs::read(t.d(b"open")).unwrap_or_default() == b"still open")
            .then_some(())
            .ok_or_else(|| "not there".into())
    });
    drop(f);
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

/// The worker's state (SIGUSR1), a fresh line.
fn state(w: &mut Worker) -> serde_json::Value {
    let count = |log: &str| {
        log.lines()
            .filter(|l| l.starts_with("clsync: state: "))
            .count()
    };
    let before = count(&w.stderr());
    w.signal(nix::sys::signal::Signal::SIGUSR1);
    let mut line = String::new();
    wait_until(SYNC_TIMEOUT, "a state line", || {
        let log = w.stderr();
        if count(&log) > before {
            line = log
                .lines()
                .rev()
                .find(|l| l.starts_with("clsync: state: "))
                .unwrap()
                .to_string();
            Ok(())
        } else {
            Err(log)
        }
    });
    serde_json::from_str(line.trim_start_matches("clsync: state: ")).unwrap()
}
