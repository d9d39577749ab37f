//! clsync-manager with real workers: restarts, the start limit, configuration errors,
//! stop and final syncs, the control socket's checks, reload, and what survives a restart.

mod common;

use common::manager::{group_gone, pid_of, Mgr, MGR};
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// A mirror profile of `t`'s src → dst.
fn mirror(t: &TestDir, extra: &str) -> String {
    common::profiles::mirror(&t.src, &t.dst, extra)
}

#[test]
fn a_killed_worker_is_restarted_after_its_backoff_and_counted() {
    let t = TestDir::new("mgr-kill9");
    let mut m = Mgr::start(&t.root);
    m.profile(
        "m",
        &mirror(&t, "autostart = true\nrestart-delay = \"200ms\"\n"),
    );
    m.ok(&["reload"]);
    let first = pid_of(&m.wait_state("m", "running"));
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    let mut again = Value::Null;
    wait_until(SYNC_TIMEOUT, "a new worker", || {
        again = m.instance("m").unwrap_or_default();
        (again["state"] == "running" && again["pid"].as_i64() != Some(first as i64))
            .then_some(())
            .ok_or_else(|| again.to_string())
    });
    assert_eq!(again["restarts"], 1, "{again}");
    let table = m.ok(&["status", "m"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(4) == Some("1")),
        "{table}"
    );
    write(&t.s(b"after-restart"), b"x");
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
    assert_eq!(m.terminate().code(), Some(0));
}

#[test]
fn a_worker_that_keeps_failing_is_failed_at_the_start_limit() {
    let t = TestDir::new("mgr-limit");
    let m = Mgr::start(&t.root);
    m.profile(
        "gone",
        &format!(
            "watch-dir = \"{}/missing\"\ndestination-dir = \"{}\"\nautostart = true\nrestart-delay = \"50ms\"\nstart-limit-burst = 3\nstart-limit-interval = \"10m\"\n",
            t.root.display(),
            t.dst.display()
        ),
    );
    m.ok(&["reload"]);
    let i = m.wait_state("gone", "failed");
    assert_eq!(i["restarts"], 2, "three starts, two restarts: {i}");
    let why = i["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("start limit reached: 3 starts"), "{why}");
    assert!(why.contains("missing"), "the worker's error is kept: {why}");
    // An operator's start tries again.
    mkdir(&t.root.join("missing"));
    m.ok(&["start", "gone"]);
    m.wait_state("gone", "running");
}

#[test]
fn a_configuration_error_is_failed_without_restarts() {
    let t = TestDir::new("mgr-config");
    let m = Mgr::start(&t.root);
    m.profile("bad", &mirror(&t, "autostart = true\nmode = \"shell\"\n"));
    m.ok(&["reload"]);
    let i = m.wait_state("bad", "failed");
    assert_eq!(i["restarts"], 0, "{i}");
    let why = i["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("configuration error") && why.contains("needs a sync handler"),
        "{why}"
    );
    // `start` refuses it up front, with the reason.
    let o = m.cli(&["start", "bad"]);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("needs a sync handler"), "{}", o.stderr);
}

#[test]
fn stop_waits_for_the_final_sync_and_leaves_no_process() {
    let t = TestDir::new("mgr-stop");
    let m = Mgr::start(&t.root);
    // An hour's delay: only the final sync can carry the late file.
    m.profile(
        "t",
        &format!(
            "watch-dir = \"{}/%label%\"\ndestination-dir = \"{}/%label%\"\ndelay-collect = 3600\ndelay-sync = 0\n",
            t.src.display(),
            t.dst.display()
        ),
    );
    mkdir(&t.s(b"web01"));
    // Under load, several times: the change is made right before the stop request.
    let _load = common::load::Load::start(2);
    for i in 0..10 {
        m.ok(&["start", "t-web01"]);
        let inst = m.wait_state("t@web01", "running");
        let pgid = pid_of(&inst);
        let content = format!("carried by final sync {i} {}", "x".repeat(i));
        write(&t.s(b"web01/late"), content.as_bytes());
        let out = m.ok(&["stop", "t-web01"]);
        assert_eq!(out.trim(), "t@web01: stopped");
        assert_eq!(
            std::fs::read(t.d(b"web01/late")).ok().as_deref(),
            Some(content.as_bytes()),
            "try {i}: stop returned before the final sync, or the final sync missed the change"
        );
        group_gone(pgid).unwrap();
        assert!(
            m.instance("t@web01").is_none(),
            "stopped on-demand instances are forgotten"
        );
    }
}

#[test]
fn manager_sigterm_stops_every_worker_with_its_final_sync() {
    let t = TestDir::new("mgr-term");
    let mut m = Mgr::start(&t.root);
    m.profile(
        "m",
        &format!(
            "watch-dir = \"{}\"\ndestination-dir = \"{}\"\ndelay-collect = 3600\nautostart = true\n",
            t.src.display(),
            t.dst.display()
        ),
    );
    m.ok(&["reload"]);
    let pid = pid_of(&m.wait_state("m", "running"));
    write(&t.s(b"late"), b"final");
    assert_eq!(m.terminate().code(), Some(0), "{}", m.log());
    assert!(t.d(b"late").exists(), "the final sync ran:\n{}", m.log());
    group_gone(pid).unwrap();
    assert!(!m.socket.exists(), "the socket is removed at exit");
}

#[test]
fn a_second_manager_refuses_to_start() {
    let t = TestDir::new("mgr-two");
    let m = Mgr::start(&t.root);
    // Same state directory: the lock.
    let o = Command::new(MGR)
        .args(["run", "--profiles-dir"])
        .arg(&m.profiles)
        .arg("--state-dir")
        .arg(&m.state)
        .arg("--socket")
        .arg(t.root.join("other.sock"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another clsync-manager is running"), "{err}");
    // Same socket, other state directory.
    let o = Command::new(MGR)
        .args(["run", "--profiles-dir"])
        .arg(&m.profiles)
        .arg("--state-dir")
        .arg(t.root.join("state2"))
        .arg("--socket")
        .arg(&m.socket)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another clsync-manager answers on"), "{err}");
    m.ok(&["status"]);
}

#[test]
fn unprivileged_clients_are_refused_and_the_socket_group_is_let_in() {
    let t = TestDir::new("mgr-creds");
    std::fs::set_permissions(&t.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = Mgr::start(&t.root);
    let mode = std::fs::metadata(&m.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is for root only");
    let o = m.cli_as_nobody(&["status"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert!(o.stderr.contains("permission denied"), "{}", o.stderr);
    // Even where the file mode lets it connect, the daemon checks who it is.
    std::fs::set_permissions(&m.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = m.cli_as_nobody(&["start", "anything"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert!(
        o.stderr.contains("permission denied: uid 65534"),
        "{}",
        o.stderr
    );
    drop(m);

    let t = TestDir::new("mgr-group");
    std::fs::set_permissions(&t.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = Mgr::start_with(&t.root, &["--socket-group", "65534"]);
    let mode = std::fs::metadata(&m.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let o = m.cli_as_nobody(&["status", "--json"]);
    assert_eq!(o.code, Some(0), "the socket group is let in: {}", o.stderr);
    assert_eq!(o.stdout.trim(), "[]");
}

#[test]
fn bad_requests_get_an_error_and_change_nothing() {
    let t = TestDir::new("mgr-bad");
    let m = Mgr::start(&t.root);
    m.profile(
        "t",
        &format!(
            "watch-dir = \"{}/%label%\"\ndestination-dir = \"{}/m/%label%\"\n",
            t.src.display(),
            t.dst.display()
        ),
    );
    // What a label that escapes would sync: src/../etc/x to dst/m/../etc/x, src/a/b/x to
    // dst/m/a/b/x.
    mkdir(&t.root.join("etc"));
    write(&t.root.join("etc").join("x"), b"x");
    mkdir_p(&t.s(b"a/b"));
    write(&t.s(b"a/b/x"), b"x");
    mkdir_p(&t.d(b"m/a"));
    let cases: &[(&[u8], &str)] = &[
        (b"this is not json\n", "malformed request"),
        (b"{\"cmd\":\"frob\"}\n", "unknown command \"frob\""),
        (b"{\"cmd\":\"start\",\"name\":\"t@../etc\"}\n", "label"),
        (b"{\"cmd\":\"start\",\"name\":\"t@a/b\"}\n", "label"),
        (b"{\"cmd\":\"start\",\"name\":\"nosuch\"}\n", "nosuch"),
        (b"{\"cmd\":\"stop\",\"name\":\"t@web01\"}\n", "not running"),
        (b"{\"cmd\":\"start\"}\n", "which instance"),
        (b"{\"cmd\":\"status\",\"bogus\":1}\n", "malformed request"),
    ];
    for (line, want) in cases {
        let r = m.request(line);
        assert_eq!(r["ok"], false, "{}: {r}", String::from_utf8_lossy(line));
        let e = r["error"].as_str().unwrap_or_default();
        assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(line));
    }
    assert_eq!(m.status(), Vec::<Value>::new(), "nothing was started");
    assert!(!t.dst.join("etc").join("x").exists());
    assert!(!t.dst.join("m").join("a").join("b").join("x").exists());
}

#[test]
fn reload_starts_new_stops_removed_restarts_changed_and_leaves_the_rest() {
    let t = TestDir::new("mgr-reload");
    let m = Mgr::start(&t.root);
    for n in ["keep", "change", "remove"] {
        mkdir(&t.s(n.as_bytes()));
        m.profile(
            n,
            &format!(
                "watch-dir = \"{}/{n}\"\ndestination-dir = \"{}/{n}\"\nautostart = true\n",
                t.src.display(),
                t.dst.display()
            ),
        );
    }
    m.ok(&["reload"]);
    let keep = pid_of(&m.wait_state("keep", "running"));
    let change = pid_of(&m.wait_state("change", "running"));
    let remove = pid_of(&m.wait_state("remove", "running"));
    std::fs::remove_file(m.profiles.join("remove.toml")).unwrap();
    m.profile(
        "change",
        &format!(
            "watch-dir = \"{}/change\"\ndestination-dir = \"{}/change\"\nautostart = true\ndelay-sync = 5\n",
            t.src.display(),
            t.dst.display()
        ),
    );
    mkdir(&t.s(b"new"));
    m.profile(
        "new",
        &format!(
            "watch-dir = \"{}/new\"\ndestination-dir = \"{}/new\"\nautostart = true\n",
            t.src.display(),
            t.dst.display()
        ),
    );
    // A broken profile is reported; it does not hold back the others' changes.
    m.profile("broken", "delay-colect = 1\n");
    let o = m.cli(&["reload"]);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("did you mean \"delay-collect\"")
            && o.stderr.contains("the other profiles are applied"),
        "{}",
        o.stderr
    );
    wait_until(SYNC_TIMEOUT, "the reload", || {
        let s = m.status();
        let names: Vec<&str> = s.iter().filter_map(|i| i["name"].as_str()).collect();
        let changed = s
            .iter()
            .any(|i| i["name"] == "change" && i["state"] == "running" && i["pid"] != change);
        (names == ["change", "keep", "new"] && changed)
            .then_some(())
            .ok_or_else(|| format!("{s:?}"))
    });
    // Mended, and reloaded by SIGHUP: the instances stay as they are.
    std::fs::remove_file(m.profiles.join("broken.toml")).unwrap();
    m.signal(Signal::SIGHUP);
    assert_eq!(
        pid_of(&m.wait_state("keep", "running")),
        keep,
        "unchanged: left alone"
    );
    m.wait_state("new", "running");
    group_gone(remove).unwrap();
}

#[test]
fn on_demand_instances_survive_a_manager_restart() {
    let t = TestDir::new("mgr-survive");
    let mut m = Mgr::start(&t.root);
    m.profile(
        "t",
        &format!(
            "watch-dir = \"{}/%label%\"\ndestination-dir = \"{}/%label%\"\ndelay-collect = 0.1\ndelay-sync = 0.1\n",
            t.src.display(),
            t.dst.display()
        ),
    );
    mkdir(&t.s(b"web01"));
    m.ok(&["start", "t@web01"]);
    m.wait_state("t@web01", "running");
    assert_eq!(m.terminate().code(), Some(0));
    let m = Mgr::start(&t.root);
    m.wait_state("t@web01", "running");
    write(&t.s(b"web01/again"), b"x");
    wait_synced(&t.s(b"web01"), &t.d(b"web01"), SYNC_TIMEOUT);
    let logs = m.ok(&["logs", "t@web01", "-n", "2"]);
    assert_eq!(logs.lines().count(), 2, "{logs}");
    let metrics = m.ok(&["metrics"]);
    assert!(
        metrics.contains("clsync_up{instance=\"t@web01\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE clsync_syncs_total counter"),
        "{metrics}"
    );
}

#[test]
fn a_client_is_told_when_the_daemon_is_not_running() {
    let t = TestDir::new("mgr-none");
    let o = Command::new(MGR)
        .arg("--socket")
        .arg(t.root.join("nothing.sock"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("clsync-manager is not running"), "{err}");
}

/// The manager dies hard: its worker gets SIGTERM (parent-death signal) and makes its
/// final sync; a new manager waits for that worker to exit before starting the instance
/// again, so there are never two workers for one instance.
#[test]
fn after_a_hard_manager_death_no_worker_is_orphaned_or_doubled() {
    hard_manager_death("mgr-hard", false);
}

/// The same when the new manager has no record of the old worker (a manager killed
/// before it saved the pid, a lost or restored state file): the worker's instance lock
/// keeps a second worker from starting.
#[test]
fn a_worker_missing_from_the_state_file_is_not_doubled() {
    hard_manager_death("mgr-hard-nostate", true);
}

fn hard_manager_death(name: &str, lose_state: bool) {
    let t = TestDir::new(name);
    let release = t.root.join("release");
    let script = t.root.join("slow-rsync.sh");
    write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in --include-from=*|--files-from=*) while [ ! -e '{}' ]; do sleep 0.05; done;; esac; done\nexec rsync \"$@\"\n",
            release.display()
        )
        .as_bytes(),
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut m = Mgr::start(&t.root);
    m.profile(
        "m",
        &format!(
            "watch-dir = \"{}\"\ndestination-dir = \"{}\"\nsync-handler = \"{}\"\ndelay-collect = 3600\nautostart = true\n",
            t.src.display(),
            t.dst.display(),
            script.display()
        ),
    );
    m.ok(&["reload"]);
    let old = pid_of(&m.wait_state("m", "running"));
    write(&t.s(b"queued"), b"final sync of the orphan");
    m.signal(Signal::SIGKILL);
    m.child.wait().unwrap();
    if lose_state {
        std::fs::remove_file(m.state.join("state.json")).unwrap();
    }
    // The old worker is in its final sync, held by the handler: it is still there.
    assert!(
        std::fs::read(format!("/proc/{old}/cmdline")).is_ok_and(|c| !c.is_empty()),
        "the old worker is gone before its final sync"
    );
    let m2 = Mgr::start(&t.root);
    let i = m2.wait_state("m", &format!("waiting for old worker {old}"));
    assert!(i["pid"].is_null(), "no second worker: {i}");
    // A restart asked for now does not start one either.
    m2.ok(&["restart", "m"]);
    let workers: Vec<_> = processes_mentioning(m2.profiles.to_string_lossy().as_bytes())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(" --profile m"))
        .collect();
    assert_eq!(workers.len(), 1, "one worker for the instance: {workers:?}");
    write(&release, b"");
    let mut new = Value::Null;
    wait_until(SYNC_TIMEOUT, "the instance to run again", || {
        new = m2.instance("m").unwrap_or_default();
        (new["state"] == "running")
            .then_some(())
            .ok_or_else(|| new.to_string())
    });
    assert_ne!(pid_of(&new), old);
    group_gone(old).unwrap();
    assert!(t.d(b"queued").exists(), "the orphan made its final sync");
}

/// `--metrics-textfile`: the metrics are also written for node_exporter's textfile
/// collector, a few seconds after they change.
#[test]
fn metrics_are_written_to_the_textfile() {
    let t = TestDir::new("mgr-textfile");
    let file = t.root.join("clsync.prom");
    let file_arg = file.display().to_string();
    let m = Mgr::start_with(&t.root, &["--metrics-textfile", &file_arg]);
    m.profile("m", &mirror(&t, "autostart = true\n"));
    m.ok(&["reload"]);
    m.wait_state("m", "running");
    wait_until(SYNC_TIMEOUT, "the metrics file", || {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        (text.contains("clsync_up{instance=\"m\"} 1")
            && text.contains("clsync_syncs_total{instance=\"m\"} "))
        .then_some(())
        .ok_or(text)
    });
}

/// The Landlock ABI of this kernel (0 without Landlock), and the word a confined worker
/// reports for it: its rules are written for ABI 6, so an older kernel enforces them
/// partly.
fn landlock_expected() -> &'static str {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with no attribute only returns a number.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    match abi {
        6.. => "full",
        1..=5 => "partial",
        _ => "none",
    }
}

/// The worker's confinement is in `status`: a profile's default (`sandbox = true`) shows
/// what the kernel enforced (Landlock `full` on a kernel with ABI 6 or later, the calls
/// seccomp refuses, network sockets refused for a local mirror), `sandbox = false` shows
/// `off`; the table has it in its SANDBOX column.
#[test]
fn status_shows_each_workers_sandbox() {
    let t = TestDir::new("mgr-sandbox");
    let dst_off = t.root.join("dst-off");
    mkdir(&dst_off);
    let m = Mgr::start(&t.root);
    m.profile("on", &mirror(&t, "autostart = true\n"));
    m.profile(
        "off",
        &common::profiles::mirror(&t.src, &dst_off, "autostart = true\nsandbox = false\n"),
    );
    m.ok(&["reload"]);
    let on = m.wait_state("on", "running");
    let off = m.wait_state("off", "running");
    let want = landlock_expected();
    assert_eq!(on["sandbox"]["enabled"], true, "{on}");
    assert_eq!(on["sandbox"]["landlock"], want, "{on}");
    assert!(on["sandbox"]["seccomp"].as_u64().unwrap_or(0) > 30, "{on}");
    assert_eq!(on["sandbox"]["no_network"], true, "{on}");
    assert_eq!(
        off["sandbox"],
        serde_json::json!({ "enabled": false }),
        "{off}"
    );
    let table = m.ok(&["status"]);
    let column = |name: &str| {
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let at = lines[0].iter().position(|h| *h == "SANDBOX");
        let row = lines.iter().find(|r| r.first() == Some(&name));
        at.zip(row).and_then(|(at, row)| row.get(at).copied())
    };
    assert_eq!(column("on"), Some(want), "{table}");
    assert_eq!(column("off"), Some("off"), "{table}");
}

/// `resync` of an instance with no worker makes its next start a full sync instead of
/// one from its index, whose end tells what it repaired; the start after that is from
/// the index again.
#[test]
fn resync_of_a_stopped_instance_forces_a_full_start() {
    let t = TestDir::new("mgr-resync-stopped");
    let m = Mgr::start(&t.root);
    let index = t.root.join("index");
    m.profile(
        "w",
        &mirror(&t, &format!("index-dir = \"{}\"\n", index.display())),
    );
    write(&t.s(b"a"), b"a");
    let started = |what: &str| {
        m.ok(&["start", "w"]);
        m.wait_state("w", "running");
        let mut logs = String::new();
        wait_until(SYNC_TIMEOUT, what, || {
            logs = m.ok(&["logs", "w", "--lines", "500"]);
            let last = logs.lines().rfind(|l| l.contains("initial sync: "));
            last.is_some_and(|l| l.contains(what))
                .then_some(())
                .ok_or_else(|| logs.clone())
        });
        m.ok(&["stop", "w"]);
    };
    started("initial sync: full (no index)");
    started("initial sync: from the index (");
    assert_eq!(
        m.ok(&["resync", "w"]).trim(),
        "full sync at the next start requested"
    );
    // Drift at the destination while stopped: the full sync repairs it and says so, as
    // a resync of a running instance does.
    std::fs::remove_file(t.d(b"a")).unwrap();
    started("initial sync: full (resync requested)");
    let done = resync_done_line(&m, "w");
    assert!(
        done.contains(": repaired 1 transferred, 0 deleted, "),
        "{done}"
    );
    started("initial sync: from the index (");
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
}

/// `logs NAME` of an instance that was stopped shows its last run's log (it said "is not
/// running" before), headed by a line that says the instance is stopped and when and how
/// the run shown ended; a start after that goes on in the same log.
#[test]
fn logs_of_a_stopped_instance_show_its_last_run() {
    let t = TestDir::new("mgr-logs-stopped");
    let m = Mgr::start(&t.root);
    m.profile("m", &mirror(&t, ""));
    write(&t.s(b"a"), b"a");
    m.ok(&["start", "m"]);
    let pid = pid_of(&m.wait_state("m", "running"));
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
    let before = std::time::SystemTime::now();
    assert_eq!(m.ok(&["stop", "m"]).trim(), "m: stopped");
    assert!(m.instance("m").is_none(), "stopped: not in status");
    let o = m.cli(&["logs", "m"]);
    assert_eq!(o.code, Some(0), "{}\nmanager log:\n{}", o.stderr, m.log());
    let lines: Vec<&str> = o.stdout.lines().collect();
    let head = lines.first().copied().unwrap_or_default();
    assert!(
        head.starts_with("-- m is stopped; the run shown ended at ")
            && head.ends_with(" ago): exit status 0"),
        "{}",
        o.stdout
    );
    // The time is UTC, RFC 3339, and the stop's (to the second).
    let at = head
        .split_once("ended at ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("no time in {head:?}"));
    let slack = std::time::Duration::from_secs(1);
    assert!(
        at + slack >= before && at <= std::time::SystemTime::now(),
        "{head}"
    );
    assert!(
        lines.contains(&format!("-- started worker pid {pid}").as_str())
            && lines.contains(&format!("-- worker pid {pid} ended: exit status 0").as_str())
            && lines.iter().any(|l| l.contains("final sync")),
        "the whole run:\n{}",
        o.stdout
    );
    // Started again: the same log goes on, without the stopped line.
    m.ok(&["start", "m"]);
    let again = pid_of(&m.wait_state("m", "running"));
    let logs = m.ok(&["logs", "m", "--lines", "1000"]);
    assert!(
        !logs.contains("is stopped")
            && logs.contains(&format!("-- started worker pid {pid}\n"))
            && logs.contains(&format!("-- started worker pid {again}\n")),
        "{logs}"
    );
    // An instance that never ran has no log.
    m.profile("never", &mirror(&t, ""));
    let o = m.cli(&["logs", "never"]);
    assert_eq!(o.code, Some(1), "{}", o.stdout);
    assert!(o.stderr.contains("never has not run"), "{}", o.stderr);
}

/// A worker killed by a signal: its instance's LAST ERROR says so without a dangling
/// colon (it was "killed by SIGKILL: "), and LAST SYNC stays the instance's last
/// successful sync while a new worker has not synced (it was reset to "-").
#[test]
fn a_killed_workers_error_and_the_instances_last_sync() {
    let t = TestDir::new("mgr-last");
    let m = Mgr::start(&t.root);
    m.profile(
        "m",
        &mirror(&t, "autostart = true\nrestart-delay = \"1h\"\n"),
    );
    m.ok(&["reload"]);
    m.wait_state("m", "running");
    let mut synced = Value::Null;
    wait_until(SYNC_TIMEOUT, "a first sync", || {
        synced = m.instance("m").unwrap_or_default();
        synced["last_sync_unix"]
            .as_f64()
            .map(|_| ())
            .ok_or_else(|| synced.to_string())
    });
    let last_sync = synced["last_sync_unix"].as_f64().unwrap();
    kill(Pid::from_raw(pid_of(&synced)), Signal::SIGKILL).unwrap();
    let i = m.wait_state("m", "backoff");
    assert_eq!(i["last_error"], "killed by SIGKILL", "{i}");
    let table = m.ok(&["status", "m"]);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.ends_with("  killed by SIGKILL"), "{table}");
    // A new worker that cannot sync (its source is gone): the instance's last sync stays.
    std::fs::rename(&t.src, t.root.join("src-away")).unwrap();
    m.ok(&["restart", "m"]);
    let mut i = Value::Null;
    wait_until(SYNC_TIMEOUT, "the new worker's failure", || {
        i = m.instance("m").unwrap_or_default();
        (i["state"] == "backoff" && i["last_error"].as_str().is_some_and(|e| e.contains("src")))
            .then_some(())
            .ok_or_else(|| i.to_string())
    });
    assert_eq!(i["last_sync_unix"].as_f64(), Some(last_sync), "{i}");
    let table = m.ok(&["status", "m"]);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.contains(" ago "), "LAST SYNC is shown: {table}");
}

/// `promtool check metrics` (Debian package `prometheus`), or `None` after a visible skip
/// (a failure under CI=true).
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        Some("promtool")
    } else {
        skip("promtool not found (apt-get install prometheus)");
        None
    }
}

/// What `promtool check metrics` says of `text`: its exit code and output.
fn promtool_check(promtool: &str, text: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let mut c = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), said)
}

/// Prometheus' naming rules that promtool (2.42) does not lint: a unit in a name is its
/// suffix (before `_total`), `_total` only on counters. The problems found, one a line.
fn naming_problems(text: &str) -> String {
    let mut bad = String::new();
    for l in text.lines() {
        let Some((name, kind)) = l.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) else {
            continue;
        };
        let base = name.strip_suffix("_total").unwrap_or(name);
        if (kind == "counter") != (base != name) {
            bad.push_str(&format!(
                "{name}: a {kind} ends in _total only if a counter\n"
            ));
        }
        for unit in ["seconds", "bytes", "ratio"] {
            let word = format!("_{unit}");
            if base.contains(&word) && !base.ends_with(&word) {
                bad.push_str(&format!("{name}: the unit {unit} is not its suffix\n"));
            }
        }
    }
    bad
}

/// The metrics of a manager with a running, a stopped (its worker exited cleanly) and a
/// failed instance pass `promtool check metrics` without a remark, from the control
/// socket and from the textfile, and name units as suffixes (the age of the last sync
/// was `clsync_seconds_since_last_sync`); every instance has its samples, the running
/// one its last sync as a timestamp.
#[test]
fn metrics_pass_promtool_check() {
    let Some(promtool) = promtool() else { return };
    let t = TestDir::new("mgr-promtool");
    let file = t.root.join("clsync.prom");
    let file_arg = file.display().to_string();
    let m = Mgr::start_with(&t.root, &["--metrics-textfile", &file_arg]);
    write(&t.s(b"a"), b"a");
    m.profile("up", &mirror(&t, "autostart = true\n"));
    let once = t.root.join("dst-once");
    m.profile(
        "once",
        &common::profiles::mirror(&t.src, &once, "autostart = true\nonly-initialsync = true\n"),
    );
    m.profile(
        "broken",
        &format!(
            "watch-dir = \"{}/missing\"\ndestination-dir = \"{}/x\"\nautostart = true\nrestart = \"never\"\n",
            t.root.display(),
            t.root.display()
        ),
    );
    m.ok(&["reload"]);
    m.wait_state("up", "running");
    m.wait_state("once", "stopped");
    m.wait_state("broken", "failed");
    wait_until(SYNC_TIMEOUT, "a sync of up", || {
        let i = m.instance("up").unwrap_or_default();
        i["syncs"]
            .as_u64()
            .filter(|&n| n > 0)
            .map(|_| ())
            .ok_or_else(|| i.to_string())
    });
    let text = m.ok(&["metrics"]);
    let (code, said) = promtool_check(promtool, &text);
    assert_eq!(
        (code, said.as_str()),
        (Some(0), ""),
        "promtool check metrics:\n{said}\nthe metrics:\n{text}"
    );
    assert_eq!(naming_problems(&text), "", "{text}");
    let synced = m.instance("up").unwrap_or_default()["last_sync_unix"]
        .as_f64()
        .unwrap_or_default();
    let stamp = text
        .lines()
        .find_map(|l| l.strip_prefix("clsync_last_sync_timestamp_seconds{instance=\"up\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(stamp, Some(synced), "{text}");
    for (name, up) in [("up", 1), ("once", 0), ("broken", 0)] {
        assert!(
            text.contains(&format!("clsync_up{{instance=\"{name}\"}} {up}\n")),
            "{text}"
        );
    }
    assert!(
        text.contains("clsync_failed{instance=\"broken\"} 1\n")
            && text.contains("clsync_syncs_total{instance=\"up\"} "),
        "{text}"
    );
    let mut from_file = String::new();
    wait_until(SYNC_TIMEOUT, "the metrics file with the three", || {
        from_file = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        ["up", "once", "broken"]
            .iter()
            .all(|n| from_file.contains(&format!("clsync_up{{instance=\"{n}\"}}")))
            .then_some(())
            .ok_or_else(|| from_file.clone())
    });
    let (code, said) = promtool_check(promtool, &from_file);
    assert_eq!(
        (code, said.as_str()),
        (Some(0), ""),
        "promtool check metrics of the textfile:\n{said}\n{from_file}"
    );
}

/// The `full resync done in ...` line of instance `name`'s log, once it is there.
fn resync_done_line(m: &Mgr, name: &str) -> String {
    let mut line = String::new();
    wait_until(SYNC_TIMEOUT, "the resync's end in the log", || {
        let logs = m.ok(&["logs", name, "--lines", "1000"]);
        line = (logs.lines())
            .rfind(|l| l.starts_with("full resync done in "))
            .unwrap_or_default()
            .to_string();
        (!line.is_empty()).then_some(()).ok_or(logs)
    });
    line
}

/// `resync NAME` of a running instance: when the full sync has finished, the instance's
/// log and the manager's say so, with what it repaired at a destination that drifted (a
/// file deleted there, one changed there, one added there); the mirror is whole again.
#[test]
fn resync_logs_when_it_finished_and_what_it_repaired() {
    let t = TestDir::new("mgr-resync-log");
    let m = Mgr::start(&t.root);
    for name in ["a", "b", "c"] {
        write(&t.s(name.as_bytes()), name.repeat(10).as_bytes());
    }
    m.profile("m", &mirror(&t, "autostart = true\n"));
    m.ok(&["reload"]);
    m.wait_state("m", "running");
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
    std::fs::remove_file(t.d(b"a")).unwrap();
    write(&t.d(b"b"), b"changed at the destination");
    write(&t.d(b"extra"), b"not in the source");
    assert_eq!(m.ok(&["resync", "m"]).trim(), "full resync requested");
    let line = resync_done_line(&m, "m");
    assert!(
        line.contains(": repaired 2 transferred, 1 deleted, "),
        "{line}"
    );
    assert!(
        m.log().contains(&format!("[m] {line}")),
        "in the manager's log too:\n{}",
        m.log()
    );
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
}

/// An instance whose index directory another worker holds (the same profile run by
/// `clsync@NAME.service`, say): its worker refuses with exit status 2, so the instance
/// is failed at once, without restarts, and LAST ERROR names the directory and the pid
/// holding it.
#[test]
fn an_instance_whose_index_dir_is_held_elsewhere_is_failed_with_the_holder_named() {
    let t = TestDir::new("mgr-index-busy");
    let index = t.root.join("index").join("busy");
    let other = t.root.join("other-dst");
    mkdir(&other);
    let mut holder = Worker::start_in(
        &t.root,
        &t.src,
        &other,
        &["--index-dir", index.to_str().unwrap()],
    );
    let m = Mgr::start(&t.root);
    // `Mgr::profile` gives it ROOT/index, so this instance's is ROOT/index/busy.
    m.profile(
        "busy",
        &mirror(&t, "autostart = true\nrestart-delay = \"50ms\"\n"),
    );
    m.ok(&["reload"]);
    let i = m.wait_state("busy", "failed");
    assert_eq!(i["restarts"], 0, "{i}");
    let line = format!(
        "configuration error (exit status 2): error: index-dir {} is in use by another worker (pid {})",
        index.display(),
        holder.pid()
    );
    let why = i["last_error"].as_str().unwrap_or_default();
    assert!(why.starts_with(&line), "{why}\nwanted: {line}");
    let table = m.ok(&["status", "busy"]);
    assert!(
        table.contains(&format!("in use by another worker (pid {})", holder.pid())),
        "{table}"
    );
    holder.assert_alive();
    holder.stop_ok();
}

/// A restart of the manager (a package upgrade restarts it) keeps each instance's last
/// run: `logs NAME` still shows what its worker wrote before, and LAST SYNC stays the one
/// of before until the instance syncs again. Both were gone: the logs and LAST SYNC lived
/// in the manager's memory only. (The second worker's full initial sync is held by a
/// wrapper, so no new sync can stand in for the kept one.)
#[test]
fn a_manager_restart_keeps_the_logs_and_the_last_sync() {
    let t = TestDir::new("mgr-restart-keeps");
    write(&t.s(b"a"), b"a");
    let release = t.root.join("release");
    // In the destination: the sandboxed worker's wrapper may write there (the full sync
    // deletes it once released).
    let held = t.d(b".held");
    let wrapper = t.root.join("hold.sh");
    write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\n[ -e '{r}' ] || : > '{h}'\nwhile [ ! -e '{r}' ]; do sleep 0.05; done\nexec rsync \"$@\"\n",
            r = release.display(),
            h = held.display()
        ),
    );
    write(&release, b"");
    let mut m = Mgr::start(&t.root);
    m.profile(
        "w",
        &mirror(
            &t,
            &format!(
                "autostart = true\ninitial-sync = \"full\"\nsync-handler = \"{}\"\n",
                wrapper.display()
            ),
        ),
    );
    m.ok(&["reload"]);
    m.wait_state("w", "running");
    wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
    let mut before = Value::Null;
    wait_until(SYNC_TIMEOUT, "a last sync", || {
        before = (m.instance("w").map(|i| i["last_sync_unix"].clone())).unwrap_or_default();
        before
            .is_f64()
            .then_some(())
            .ok_or_else(|| before.to_string())
    });
    assert_eq!(m.terminate().code(), Some(0), "{}", m.log());
    drop(m);
    assert_eq!(
        std::fs::metadata(t.root.join("state/last-runs.json"))
            .map(|m| m.permissions().mode() & 0o777)
            .ok(),
        Some(0o600),
        "the last runs are left private"
    );

    std::fs::remove_file(&release).unwrap();
    let m = Mgr::start(&t.root);
    wait_until(SYNC_TIMEOUT, "the second initial sync held", || {
        held.exists().then_some(()).ok_or_else(|| m.log())
    });
    let i = m.instance("w").expect("w in status");
    assert_eq!(i["last_sync_unix"], before, "LAST SYNC of before: {i}");
    let logs = m.ok(&["logs", "w", "--lines", "1000"]);
    let first = logs.find("initial sync done");
    let second = logs.rfind("-- started worker pid");
    assert!(
        first.is_some() && second.is_some() && first < second,
        "the first run's log, then the second's:\n{logs}"
    );
    write(&release, b"");
    m.wait_state("w", "running");
}
