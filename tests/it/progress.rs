//! The start-up's progress lines: a start that lasts longer than the threshold logs how
//! far its initial sync is every interval (paths and bytes of the total from rsync's
//! records, bytes read without them, the paths handed over to a handler), ending at the
//! totals; a small tree that starts at once logs none.
//!
//! The start is made long on purpose, deterministically: the sync handler is a wrapper
//! that waits for a marker file the test creates once it has seen a progress line, then
//! runs real rsync at a bandwidth limit (a lower bound on how long it takes). The
//! threshold and the interval are shortened through the worker's hidden
//! `CLSYNC_PROGRESS_TIMING` (milliseconds), so a test need not last five seconds.

use crate::common::{self, wait_until, TestDir, BIN};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A worker started with the progress timing in its environment (common::Worker
/// passes none); `--only-initialsync`: it exits once ready.
struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    /// The short form `clsync EXTRA… SRC DST`.
    fn start(t: &TestDir, timing: Option<&str>, extra: &[&str]) -> Run {
        let mut args: Vec<std::ffi::OsString> = extra.iter().map(Into::into).collect();
        args.extend([t.src.clone().into(), t.dst.clone().into()]);
        Run::start_raw(t, timing, &args)
    }

    fn start_raw(t: &TestDir, timing: Option<&str>, args: &[std::ffi::OsString]) -> Run {
        let log = t.root.join("worker.stderr");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .args(["--only-initialsync"])
            .env_remove("CLSYNC_PROGRESS_TIMING")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0);
        if let Some(v) = timing {
            cmd.env("CLSYNC_PROGRESS_TIMING", v);
        }
        Run {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        common::read_lossy(&self.log)
    }

    /// Waits for the exit (deadline) and returns the log; the exit must be 0.
    fn finish(mut self) -> String {
        let mut status = None;
        wait_until(TIMEOUT, "the worker's exit", || {
            status = self.child.try_wait().unwrap();
            status.map(|_| ()).ok_or_else(|| self.log())
        });
        let log = self.log();
        assert_eq!(status.unwrap().code(), Some(0), "{log}");
        log
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The progress lines of a log (not `initial sync: full (…)`, `… from the index (…)`
/// or `initial sync done`).
fn progress_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("initial sync: ").map(|(_, r)| r))
        .filter(|r| !r.starts_with("full (") && !r.starts_with("from the index ("))
        .map(str::to_string)
        .collect()
}

/// The wrapper run as the sync handler: waits for `go` (a marker the test creates),
/// then runs `program ARGS…`.
fn gated(t: &TestDir, program: &str) -> (PathBuf, PathBuf) {
    let go = t.root.join("go");
    let script = t.root.join("gated-handler");
    common::write_script(
        &script,
        &format!(
            "#!/bin/sh\nwhile [ ! -e '{}' ]; do sleep 0.05; done\n{program} \"$@\"\n",
            go.display()
        ),
    );
    (script, go)
}

/// 20 files of 100,000 bytes: 2 MB, 21 paths with the root.
fn tree(src: &Path) {
    for i in 0..20u8 {
        let data: Vec<u8> = (0..100_000u32).map(|n| (n as u8) ^ i).collect();
        common::write(&src.join(format!("f{i:02}")), &data);
    }
}

/// `1.2 MiB` as bytes.
fn bytes(s: &str) -> f64 {
    let (n, unit) = s.split_once(' ').unwrap_or((s, "B"));
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("not a size: {s:?}"));
    let k = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        u => panic!("unit {u:?} in {s:?}"),
    };
    n * k
}

/// An initial sync held long (the handler waits for the test, then rsync runs at 500
/// kB/s with `--info=progress2`): progress lines appear while it waits; then lines with
/// paths and bytes done of the total, never going back, the last at the total (21 paths,
/// 2 MB); the lines come every interval, not before the threshold.
///
/// Failed before: the worker logged nothing while the handler waited (the test timed out
/// waiting for the first line), and rsync's records were logged only 5 s into a full sync.
#[test]
fn a_long_initial_sync_tells_how_far_it_is_up_to_the_total() {
    let t = TestDir::new("progress-long");
    tree(&t.src);
    let (script, go) = gated(&t, "exec rsync --bwlimit=500");
    let run = Run::start(
        &t,
        Some("300,300"),
        &["--progress=yes", "-S", script.to_str().unwrap()],
    );
    wait_until(TIMEOUT, "a progress line while the handler waits", || {
        (!progress_lines(&run.log()).is_empty())
            .then_some(())
            .ok_or_else(|| run.log())
    });
    common::write(&go, b"");
    let log = run.finish();
    let lines = progress_lines(&log);
    // `N of M paths, B[ of [~]T], R/s, S s`
    let mut counted = Vec::new();
    for l in &lines {
        let Some((paths, rest)) = l.split_once(" paths, ") else {
            continue;
        };
        let (done, total) = paths.split_once(" of ").unwrap();
        let size = rest.split(", ").next().unwrap();
        let done_bytes = bytes(size.split(" of ").next().unwrap());
        counted.push((
            done.replace(',', "").parse::<u64>().unwrap(),
            total.replace(',', "").parse::<u64>().unwrap(),
            done_bytes,
        ));
    }
    assert!(
        counted.len() >= 3,
        "at least three lines with counts (2 MB at 500 kB/s, a line every 0.3 s):\n{log}"
    );
    for w in counted.windows(2) {
        assert!(
            w[1].0 >= w[0].0 && w[1].2 >= w[0].2,
            "the counts went back: {w:?}\n{log}"
        );
    }
    let last = counted.last().unwrap();
    assert_eq!((last.0, last.1), (21, 21), "ends at the total:\n{log}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("21 of 21 paths, 1.9 MiB of 1.9 MiB, "),
        "the last line has the totals:\n{log}"
    );
    common::assert_synced_now(&t.src, &t.dst, "after the initial sync");
}

/// Without rsync's records (a tree under the 50,000 directories where they are on by
/// default), the lines tell the bytes rsync has read so far, growing.
///
/// Failed before: no line at all (progress records off, nothing else was told).
#[test]
fn without_rsync_records_the_lines_tell_the_bytes_read() {
    let t = TestDir::new("progress-read");
    tree(&t.src);
    let (script, go) = gated(&t, "exec rsync --bwlimit=500");
    let run = Run::start(&t, Some("300,300"), &["-S", script.to_str().unwrap()]);
    wait_until(TIMEOUT, "a progress line while the handler waits", || {
        (!progress_lines(&run.log()).is_empty())
            .then_some(())
            .ok_or_else(|| run.log())
    });
    common::write(&go, b"");
    let log = run.finish();
    let read: Vec<f64> = progress_lines(&log)
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("the whole tree, ")?;
            Some(bytes(rest.split(" read, ").next()?))
        })
        .collect();
    assert!(read.len() >= 3, "lines with the bytes read:\n{log}");
    assert!(
        read.windows(2).all(|w| w[1] >= w[0]),
        "the bytes read went back: {read:?}\n{log}"
    );
    assert!(
        read.last().unwrap() >= &1_000_000.0,
        "rsync read most of the 2 MB before the last line: {read:?}\n{log}"
    );
    common::assert_synced_now(&t.src, &t.dst, "after the initial sync");
}

/// A handler script (shell mode): the lines tell what was handed over to it and how many
/// paths were queued meanwhile.
///
/// Failed before: no line while the handler ran.
#[test]
fn a_handler_start_tells_what_was_handed_over() {
    let t = TestDir::new("progress-handler");
    common::write(&t.s(b"a"), b"a");
    let (script, go) = gated(&t, "exit 0 #");
    let args = [
        "-M", "shell", "-l", "lbl", "-t", "0.1", "-w", "0.1", "-T", "0.1", "-S",
    ];
    let mut args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    args.extend([script.into(), "-W".into(), t.src.clone().into()]);
    let run = Run::start_raw(&t, Some("300,300"), &args);
    wait_until(TIMEOUT, "a progress line while the handler runs", || {
        progress_lines(&run.log())
            .iter()
            .any(|l| l.starts_with("the whole tree handed over to sync handler "))
            .then_some(())
            .ok_or_else(|| run.log())
    });
    // A change made meanwhile is queued, and counted.
    common::write(&t.s(b"b"), b"b");
    wait_until(TIMEOUT, "the change counted as queued", || {
        progress_lines(&run.log())
            .iter()
            .any(|l| l.contains(", 1 path queued since, "))
            .then_some(())
            .ok_or_else(|| run.log())
    });
    common::write(&go, b"");
    run.finish();
}

/// A small tree whose start ends within the default five seconds logs no progress line,
/// even with rsync's records on.
///
/// A guard against noise (it passes on the old code too, which had no start-up lines).
#[test]
fn a_quick_start_logs_no_progress_line() {
    let t = TestDir::new("progress-quick");
    tree(&t.src);
    let run = Run::start(&t, None, &["--progress=yes"]);
    let log = run.finish();
    assert!(
        log.contains("initial sync done ("),
        "the start ended:\n{log}"
    );
    assert_eq!(progress_lines(&log), Vec::<String>::new(), "{log}");
}

/// A warm start compares the source with the index before any rsync: on a big tree that
/// walk is part of the start-up, and tells how far it is (here at its 4,096th entry of
/// 10,000, the threshold being zero).
///
/// Failed before: the compare said nothing until its result (`from the index (…)`).
#[test]
fn the_compare_with_the_index_tells_how_far_it_is() {
    let t = TestDir::new("progress-compare");
    for d in 0..20 {
        common::mkdir(&t.s(format!("d{d}").as_bytes()));
        for f in 0..500 {
            common::write(&t.s(format!("d{d}/f{f}").as_bytes()), b"x");
        }
    }
    let index = t.root.join("index");
    let first = Run::start(&t, None, &["--index-dir", index.to_str().unwrap()]).finish();
    assert!(first.contains("initial sync: full (no index)"), "{first}");
    common::write(&t.s(b"d0/new"), b"new");
    let log = Run::start(&t, Some("0,50"), &["--index-dir", index.to_str().unwrap()]).finish();
    assert!(
        log.contains("initial sync: comparing with the index: 4,096 paths compared ("),
        "{log}"
    );
    assert!(log.contains("initial sync: from the index ("), "{log}");
    common::assert_synced_now(&t.src, &t.dst, "after the warm start");
}

/// Two destinations sync in parallel, each with its own line (` to DST`), each telling
/// its own rsync's numbers: the first runs to its totals while the second is held (its
/// lines say the whole tree, with no record yet), then the second ends at its totals too.
///
/// Failed before: no start-up lines (and the runner kept one progress record for all
/// runs, so two destinations' numbers would have mixed).
#[test]
fn each_destination_tells_its_own_progress() {
    let t = TestDir::new("progress-two");
    tree(&t.src);
    let dst2 = t.root.join("dst2");
    common::mkdir(&dst2);
    let go = t.root.join("go");
    let script = t.root.join("handler");
    common::write_script(&script, &format!(
            "#!/bin/sh\ncase \"$*\" in *'{}'*) while [ ! -e '{}' ]; do sleep 0.05; done;; esac\nexec rsync --bwlimit=1000 \"$@\"\n",
            dst2.display(),
            go.display()
        ));
    let args: Vec<std::ffi::OsString> = vec![
        "--progress=yes".into(),
        "-S".into(),
        script.into(),
        "-W".into(),
        t.src.clone().into(),
        "-D".into(),
        t.dst.clone().into(),
        "-D".into(),
        dst2.clone().into(),
    ];
    let run = Run::start_raw(&t, Some("200,200"), &args);
    let to1 = format!(" to {}", t.dst.display());
    let to2 = format!(" to {}", dst2.display());
    wait_until(TIMEOUT, "the first destination at its totals", || {
        progress_lines(&run.log())
            .iter()
            .any(|l| l.starts_with("21 of 21 paths, 1.9 MiB of 1.9 MiB, ") && l.ends_with(&to1))
            .then_some(())
            .ok_or_else(|| run.log())
    });
    let held = progress_lines(&run.log());
    let second: Vec<&String> = held.iter().filter(|l| l.ends_with(&to2)).collect();
    assert!(
        !second.is_empty() && second.iter().all(|l| l.starts_with("the whole tree, ")),
        "the held destination has lines of its own, without numbers of the other's:\n{}",
        run.log()
    );
    common::write(&go, b"");
    let log = run.finish();
    let last2 = progress_lines(&log)
        .into_iter()
        .rfind(|l| l.ends_with(&to2))
        .unwrap();
    assert!(
        last2.starts_with("21 of 21 paths, 1.9 MiB of 1.9 MiB, "),
        "the second ends at its totals: {last2}\n{log}"
    );
    common::assert_synced_now(&t.src, &dst2, "the second destination");
}

/// The watch set-up of a big tree tells the directories watched so far on the same
/// schedule (here from the start, every 1,024 directories of 3,000).
///
/// Failed before: the set-up told only every 5 s of its own, whatever the start-up's.
#[test]
fn the_watch_set_up_tells_the_directories_watched() {
    let t = TestDir::new("progress-watch");
    for a in 0..30 {
        for b in 0..100 {
            common::mkdir_p(&t.s(format!("a{a}/b{b}").as_bytes()));
        }
    }
    let log = Run::start(&t, Some("0,1"), &[]).finish();
    let counts: Vec<u64> = log
        .lines()
        .filter_map(|l| {
            l.split_once("setting watches: ")?
                .1
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!counts.is_empty(), "{log}");
    assert!(
        counts.windows(2).all(|w| w[1] > w[0]) && counts.iter().all(|&n| n <= 3031),
        "{counts:?}\n{log}"
    );
    assert!(log.contains("watching 3031 directories"), "{log}");
}

/// The worker's state (SIGUSR1's `state:` line, the dump, the supervisor's report) holds
/// the last progress line while a long start-up runs: `clsync-manager status` and a dump
/// say how far it is too.
///
/// Failed before: the state had no `progress` key.
#[test]
fn the_state_tells_the_progress_of_a_long_start() {
    let t = TestDir::new("progress-state");
    common::write(&t.s(b"a"), b"a");
    let (script, go) = gated(&t, "exec rsync");
    let run = Run::start(&t, Some("200,200"), &["-S", script.to_str().unwrap()]);
    wait_until(TIMEOUT, "a progress line while the handler waits", || {
        (!progress_lines(&run.log()).is_empty())
            .then_some(())
            .ok_or_else(|| run.log())
    });
    let pid = nix::unistd::Pid::from_raw(run.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    wait_until(TIMEOUT, "the state with the progress", || {
        run.log()
            .lines()
            .any(|l| l.contains("state: {") && l.contains(r#""progress":"the whole tree"#))
            .then_some(())
            .ok_or_else(|| run.log())
    });
    common::write(&go, b"");
    run.finish();
}
