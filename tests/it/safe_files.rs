//! Files the programs create never follow a symlink they did not make, and the
//! directories they write into are their own (docs/security.md, "Files the programs
//! create").
//!
//! Each planted-symlink test puts a symlink to a root-owned canary at the name the
//! program would write through (its old predictable temporary name, and the final name),
//! triggers the write, and asserts the canary is unchanged and the program still works.
//! Where the name sits in a directory another user may write to, the symlink is planted
//! by `nobody` (`setpriv`). Where that directory must now be private (status, dump and
//! lists directories, the manager's state directory), a shared one is refused at start
//! (a test each), and the symlink is planted by root: a name prepared by someone else is
//! still never written through. The one such directory nobody may own is the status
//! file's with `--uid nobody` (root writes `starting` there before the drop): planted by
//! nobody.
//!
//! Names with the program's pid are planted before it runs: `sh` plants them with its
//! own pid (`$$`) and then `exec`s the program, which keeps that pid.
//!
//! The attacks need `fs.protected_symlinks = 0` (the kernel's own defence against them in
//! sticky directories): each test checks it and says so when it cannot run.

use crate::common;

use common::manager::MGR;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CANARY: &[u8] = b"root's canary\n";
const REFUSE_TIMEOUT: Duration = Duration::from_secs(15);

/// False (with a message) when the kernel would stop the attacks itself.
fn attacks_possible() -> bool {
    let v = std::fs::read_to_string("/proc/sys/fs/protected_symlinks").unwrap_or_default();
    if v.trim() != "0" {
        eprintln!(
            "SKIPPED: fs.protected_symlinks = {} (the planted-symlink attacks need 0)",
            v.trim()
        );
        return false;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (a second uid plants the symlinks)");
        return false;
    }
    true
}

/// A root-owned 0600 file in the test's private directory.
fn canary(t: &TestDir) -> PathBuf {
    let c = t.root.join("canary");
    write(&c, CANARY);
    chmod(&c, 0o600);
    c
}

#[track_caller]
fn assert_canary(c: &Path) {
    let now = std::fs::read(c).unwrap();
    assert_eq!(
        show(&now),
        show(CANARY),
        "the canary {} was written through a planted symlink",
        showp(c)
    );
}

/// A directory `nobody` can write to: `mode` with root as owner, or owned by nobody.
fn shared_dir(t: &TestDir, name: &str, mode: u32, nobody_owns: bool) -> PathBuf {
    // The test's root is 0700: nobody needs to reach into it.
    chmod(&t.root, 0o711);
    let d = t.root.join(name);
    mkdir(&d);
    if nobody_owns {
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
    }
    chmod(&d, mode);
    d
}

/// `ln -s TARGET LINK` as nobody, now.
fn plant_as_nobody(target: &Path, link: &Path) {
    let st = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "ln",
            "-s",
        ])
        .arg(target)
        .arg(link)
        .status()
        .unwrap();
    assert!(st.success(), "nobody could not plant {}", showp(link));
}

/// One shell line planting `$DIR_n/NAME` (where `$$` is the program's pid) as a
/// symlink to `$CANARY`, as nobody or as root.
fn plant_line(var: &str, name: &str, by_nobody: bool) -> String {
    let who = if by_nobody {
        "setpriv --reuid=65534 --regid=65534 --clear-groups -- "
    } else {
        ""
    };
    format!("{who}ln -s \"$CANARY\" \"${var}/{name}\" || exit 99\n")
}

/// A program started by `sh` after `plant` ran with the program's own pid.
struct Planted {
    child: Child,
    stderr: PathBuf,
    /// Checked at every poll: a write through a symlink fails the test at once.
    canary: Option<PathBuf>,
}

impl Planted {
    fn spawn(
        dir: &Path,
        env: &[(&str, &Path)],
        plant: &str,
        bin: &str,
        args: &[OsString],
    ) -> Planted {
        let stderr = dir.join("planted.stderr");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{plant}exec \"$@\""))
            .arg("sh")
            .arg(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("planted.stdout")).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Planted {
            child: cmd.spawn().unwrap(),
            stderr,
            canary: env
                .iter()
                .find(|(k, _)| *k == "CANARY")
                .map(|(_, v)| v.to_path_buf()),
        }
    }

    #[track_caller]
    fn check_canary(&self) {
        if let Some(c) = &self.canary {
            assert_canary(c);
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// Waits until `f` holds, failing if the program exits first.
    #[track_caller]
    fn wait(&mut self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !f() {
            self.check_canary();
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("exited ({st}) before {what}:\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "no {what} after {READY_TIMEOUT:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit code, or a failure if it still runs at the deadline.
    #[track_caller]
    fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_canary();
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}: it should have refused to start:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) -> Option<i32> {
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
        self.exit_code(STOP_TIMEOUT)
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `clsync -t 0.1 -w 0.1 EXTRA --status-file STATUS SRC DST`.
fn worker_args(t: &TestDir, status: &Path, extra: &[OsString]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-t".into(), "0.1".into(), "-w".into(), "0.1".into()];
    a.extend(extra.iter().cloned());
    a.extend([
        "--status-file".into(),
        status.into(),
        t.src.clone().into(),
        t.dst.clone().into(),
    ]);
    a
}

fn is_file(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
}

/// The classic form in `rsyncshell` mode with `script` as handler.
fn rsyncshell_args(t: &TestDir, status: &Path, script: &Path, extra: &[OsString]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "-M".into(),
        "rsyncshell".into(),
        "-S".into(),
        script.into(),
        "-W".into(),
        t.src.clone().into(),
        "-l".into(),
        "lbl".into(),
        "-t".into(),
        "0.1".into(),
        "-w".into(),
        "0.1".into(),
        "--status-file".into(),
        status.into(),
    ];
    a.extend(extra.iter().cloned());
    a
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[track_caller]
fn assert_regular(p: &Path, mode: u32) {
    let m = lstat(p);
    assert!(
        m.file_type().is_file(),
        "{} is not a regular file",
        showp(p)
    );
    assert_eq!(m.mode() & 0o7777, mode, "mode of {}", showp(p));
}

/// The refusal line: names the directory, its owner and its mode.
#[track_caller]
fn assert_refusal(err: &str, dir: &Path, what: &str) {
    let line = err
        .lines()
        .find(|l| l.contains(&dir.display().to_string()))
        .unwrap_or_else(|| panic!("no line names {}:\n{err}", showp(dir)));
    for want in [what, "uid 0 (root)", "mode 1777", "chmod 0700"] {
        assert!(line.contains(want), "{want:?} not in {line:?}");
    }
}

// ---------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------

/// The pid file may sit in a directory others can write to (it is not refused): nobody's
/// symlinks at its old temporary name `PID-FILE.tmp.PID` and at its name are replaced, the
/// canary is untouched, and the file is removed at exit.
#[test]
fn pid_file_symlinks_planted_by_nobody_are_not_followed() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-pid");
    let c = canary(&t);
    let run = shared_dir(&t, "run", 0o1777, false);
    let pidfile = run.join("clsync.pid");
    let plant =
        plant_line("RUN", "clsync.pid.tmp.$$", true) + &plant_line("RUN", "clsync.pid", true);
    let status = t.root.join("status");
    let args = worker_args(&t, &status, &["--pid-file".into(), pidfile.clone().into()]);
    let mut w = Planted::spawn(
        &t.root,
        &[("CANARY", &c), ("RUN", &run)],
        &plant,
        BIN,
        &args,
    );
    w.wait("status running", || read_trim(&status) == "running");
    assert_canary(&c);
    assert_regular(&pidfile, 0o644);
    assert_eq!(read_trim(&pidfile), w.pid().to_string());
    write(&t.s(b"f"), b"1");
    wait_until(SYNC_TIMEOUT, "f mirrored", || {
        t.d(b"f")
            .exists()
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    assert_eq!(w.stop(), Some(0), "{}", w.stderr());
    assert!(
        !exists_nofollow(&pidfile),
        "the pid file is removed at exit"
    );
    assert_canary(&c);
}

/// The status file in the worker's own directory: symlinks at its old temporary name
/// `STATUS.tmp.PID` and at its name are replaced, not written through.
#[test]
fn status_file_symlinks_are_not_followed() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-status");
    let c = canary(&t);
    let dir = t.root.join("run");
    mkdir(&dir);
    let status = dir.join("status");
    let plant = plant_line("RUN", "status.tmp.$$", false) + &plant_line("RUN", "status", false);
    let args = worker_args(&t, &status, &[]);
    let mut w = Planted::spawn(
        &t.root,
        &[("CANARY", &c), ("RUN", &dir)],
        &plant,
        BIN,
        &args,
    );
    w.wait("status running", || {
        is_file(&status) && read_trim(&status) == "running"
    });
    assert_canary(&c);
    assert_regular(&status, 0o644);
    write(&t.s(b"f"), b"1");
    wait_until(SYNC_TIMEOUT, "f mirrored", || {
        t.d(b"f")
            .exists()
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    assert_eq!(w.stop(), Some(0), "{}", w.stderr());
    assert_canary(&c);
}

/// With `--uid nobody` the status file's directory may be nobody's own (it is accepted),
/// and root writes `starting` there before dropping to nobody: nobody's symlinks at the
/// old temporary name `STATUS.tmp.PID` and at the status file are replaced, and a
/// root-owned canary elsewhere is untouched.
#[test]
fn status_file_symlinks_planted_by_the_uid_user_are_not_followed() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-status-uid");
    let private = tempfile::tempdir().unwrap();
    let c = private.path().join("canary");
    write(&c, CANARY);
    chmod(&c, 0o600);
    // The user's own directories, as for any `--uid` worker.
    for d in [&t.root, &t.src, &t.dst] {
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
        chmod(d, 0o755);
    }
    let run = t.root.join("run");
    mkdir(&run);
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
    let status = run.join("status");
    let plant = plant_line("RUN", "status.tmp.$$", true) + &plant_line("RUN", "status", true);
    let args = worker_args(
        &t,
        &status,
        &[
            "--uid".into(),
            "nobody".into(),
            "--gid".into(),
            "65534".into(),
        ],
    );
    let mut w = Planted::spawn(
        &t.root,
        &[("CANARY", &c), ("RUN", &run)],
        &plant,
        BIN,
        &args,
    );
    w.wait("status running", || {
        is_file(&status) && read_trim(&status) == "running"
    });
    assert_canary(&c);
    write(&t.s(b"f"), b"1");
    wait_until(SYNC_TIMEOUT, "f mirrored", || {
        t.d(b"f")
            .exists()
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    assert_eq!(w.stop(), Some(0), "{}", w.stderr());
    assert_canary(&c);
}

/// A status file's directory that others may write to (1777) is refused at start with
/// one line; nobody's symlink at the old temporary name is never written through.
#[test]
fn status_dir_writable_by_others_is_refused() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-status-1777");
    let c = canary(&t);
    let shared = shared_dir(&t, "shared", 0o1777, false);
    let status = shared.join("status");
    let plant = plant_line("SHARED", "status.tmp.$$", true);
    let args = worker_args(&t, &status, &[]);
    let mut w = Planted::spawn(
        &t.root,
        &[("CANARY", &c), ("SHARED", &shared)],
        &plant,
        BIN,
        &args,
    );
    let code = w.exit_code(REFUSE_TIMEOUT);
    assert_canary(&c);
    assert_eq!(code, Some(3), "{}", w.stderr());
    assert_refusal(&w.stderr(), &shared, "status-file directory");
    assert!(!exists_nofollow(&status), "nothing written");
}

/// SIGUSR1 with a dump directory: symlinks at the old temporary name
/// `.clsync.PID.json.tmp` and at `clsync.PID.json` are replaced; the dump is 0600.
#[test]
fn dump_file_symlinks_are_not_followed() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-dump");
    let c = canary(&t);
    let dump = t.root.join("dump");
    mkdir(&dump);
    chmod(&dump, 0o700);
    let plant = plant_line("DUMP", ".clsync.$$.json.tmp", false)
        + &plant_line("DUMP", "clsync.$$.json", false);
    let status = t.root.join("status");
    let args = worker_args(&t, &status, &["--dump-dir".into(), dump.clone().into()]);
    let mut w = Planted::spawn(
        &t.root,
        &[("CANARY", &c), ("DUMP", &dump)],
        &plant,
        BIN,
        &args,
    );
    w.wait("status running", || read_trim(&status) == "running");
    let file = dump.join(format!("clsync.{}.json", w.pid()));
    kill(Pid::from_raw(w.pid() as i32), Signal::SIGUSR1).unwrap();
    w.wait("the dump", || {
        is_file(&file) && read_trim(&file).contains("\"phase\"")
    });
    assert_canary(&c);
    assert_regular(&file, 0o600);
    assert_eq!(w.stop(), Some(0), "{}", w.stderr());
    assert_canary(&c);
}

/// A dump directory others may write to (1777) is refused at start.
#[test]
fn dump_dir_writable_by_others_is_refused() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-dump-1777");
    let c = canary(&t);
    let shared = shared_dir(&t, "dump", 0o1777, false);
    let plant = plant_line("SHARED", ".clsync.$$.json.tmp", true);
    let status = t.root.join("status");
    let args = worker_args(&t, &status, &["--dump-dir".into(), shared.clone().into()]);
    let mut w = Planted::spawn(
        &t.root,
        &[("CANARY", &c), ("SHARED", &shared)],
        &plant,
        BIN,
        &args,
    );
    let code = w.exit_code(REFUSE_TIMEOUT);
    assert_eq!(code, Some(3), "{}", w.stderr());
    assert_refusal(&w.stderr(), &shared, "dump-dir");
    assert_canary(&c);
}

/// An `rsyncshell` handler that records `MODE PATH` of each list file it gets and of its
/// directory, and succeeds.
fn list_recorder(t: &TestDir) -> (PathBuf, PathBuf) {
    let rec = t.root.join("lists.seen");
    let script = t.root.join("handler.sh");
    write(
        &script,
        format!(
            "#!/bin/sh\nshift 2\nfor f in \"$@\"; do stat -c '%a %F %n' \"$f\" \"$(dirname \"$f\")\" >> '{}'; done\n",
            rec.display()
        )
        .as_bytes(),
    );
    chmod(&script, 0o755);
    (script, rec)
}

fn seen(rec: &Path) -> Vec<(String, String, String)> {
    read_lossy(rec)
        .lines()
        .filter_map(|l| {
            let (mode, rest) = l.split_once(' ')?;
            let (kind, path) = rest.rsplit_once(' ')?;
            Some((mode.to_string(), kind.to_string(), path.to_string()))
        })
        .collect()
}

/// List files in a lists directory (kept with `dont-unlink-lists`): symlinks at the names
/// the worker would take (`include.PID.N`, `exclude.PID.N`) are passed over, never
/// written through; the syncs go on with the next numbers, in 0600 files.
#[test]
fn list_file_symlinks_are_not_followed() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-lists");
    let c = canary(&t);
    let lists = t.root.join("lists");
    mkdir(&lists);
    chmod(&lists, 0o700);
    let mut plant = String::new();
    for n in 1..=4 {
        plant += &plant_line("LISTS", &format!("include.$$.{n}"), false);
        plant += &plant_line("LISTS", &format!("exclude.$$.{n}"), false);
    }
    let (script, rec) = list_recorder(&t);
    let status = t.root.join("status");
    let args = rsyncshell_args(
        &t,
        &status,
        &script,
        &[
            "--lists-dir".into(),
            lists.clone().into(),
            "--dont-unlink-lists".into(),
        ],
    );
    let mut w = Planted::spawn(
        &t.root,
        &[("CANARY", &c), ("LISTS", &lists)],
        &plant,
        BIN,
        &args,
    );
    w.wait("status running", || read_trim(&status) == "running");
    write(&t.s(b"f"), b"1");
    w.wait("a list naming f", || {
        seen(&rec)
            .iter()
            .any(|(_, _, p)| p.contains("/include.") && read_lossy(Path::new(p)).contains("/f"))
    });
    assert_canary(&c);
    let seen = seen(&rec);
    let files: Vec<_> = seen.iter().filter(|(_, k, _)| k != "directory").collect();
    assert!(!files.is_empty());
    for (mode, kind, path) in files {
        assert_eq!(
            (mode.as_str(), kind.starts_with("regular")),
            ("600", true),
            "{path}"
        );
        assert!(!path.ends_with(".1"), "{path}: a planted name was used");
    }
    assert_eq!(w.stop(), Some(0), "{}", w.stderr());
    assert_canary(&c);
}

/// A lists directory others may write to (1777, sticky or not) is refused at start;
/// nobody's symlink at the first list's name is never written through.
#[test]
fn lists_dir_writable_by_others_is_refused() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-lists-1777");
    let c = canary(&t);
    let shared = shared_dir(&t, "lists", 0o1777, false);
    let plant =
        plant_line("SHARED", "include.$$.1", true) + &plant_line("SHARED", "exclude.$$.2", true);
    let (script, _rec) = list_recorder(&t);
    let status = t.root.join("status");
    let args = rsyncshell_args(
        &t,
        &status,
        &script,
        &[
            "--lists-dir".into(),
            shared.clone().into(),
            "--dont-unlink-lists".into(),
        ],
    );
    let mut w = Planted::spawn(
        &t.root,
        &[("CANARY", &c), ("SHARED", &shared)],
        &plant,
        BIN,
        &args,
    );
    let code = w.exit_code(REFUSE_TIMEOUT);
    assert_canary(&c);
    assert_eq!(code, Some(3), "{}", w.stderr());
    assert_refusal(&w.stderr(), &shared, "lists-dir");
}

/// Without `lists-dir`, list files go to a private directory: 0700, files 0600.
#[test]
fn default_lists_dir_is_private() {
    let t = TestDir::new("safe-lists-default");
    let (script, rec) = list_recorder(&t);
    let a = rsyncshell_args(&t, &t.status, &script, &[]);
    let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &t.status, &a);
    write(&t.s(b"f"), b"1");
    wait_until(SYNC_TIMEOUT, "two handler calls", || {
        (seen(&rec).len() >= 4)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    let seen = seen(&rec);
    let dirs: Vec<_> = seen.iter().filter(|(_, k, _)| k == "directory").collect();
    let files: Vec<_> = seen.iter().filter(|(_, k, _)| k != "directory").collect();
    assert!(!dirs.is_empty() && !files.is_empty(), "{seen:?}");
    for (mode, _, path) in dirs {
        assert_eq!(mode, "700", "the lists directory {path}");
    }
    for (mode, kind, path) in files {
        assert_eq!(
            (mode.as_str(), kind.starts_with("regular")),
            ("600", true),
            "{path}"
        );
    }
    w.stop_ok();
}

// ---------------------------------------------------------------------------
// The manager and import
// ---------------------------------------------------------------------------

fn manager_args(root: &Path, state: &Path, extra: &[OsString]) -> Vec<OsString> {
    let profiles = root.join("profiles");
    mkdir_p(&profiles);
    let mut a: Vec<OsString> = vec![
        "run".into(),
        "--profiles-dir".into(),
        profiles.into(),
        "--state-dir".into(),
        state.into(),
        "--socket".into(),
        root.join("manager.sock").into(),
    ];
    a.extend(extra.iter().cloned());
    a
}

/// The metrics textfile directory is often another user's (prometheus), so it is not
/// refused: nobody's symlinks at the old temporary name `FILE.tmp` and at the file's name
/// are replaced, and the metrics are written.
#[test]
fn metrics_textfile_symlinks_planted_by_nobody_are_not_followed() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-metrics");
    let c = canary(&t);
    let dir = shared_dir(&t, "textfile", 0o755, true);
    let file = dir.join("clsync.prom");
    plant_as_nobody(&c, &dir.join("clsync.prom.tmp"));
    plant_as_nobody(&c, &file);
    let args = manager_args(
        &t.root,
        &t.root.join("state"),
        &["--metrics-textfile".into(), file.clone().into()],
    );
    let mut m = Planted::spawn(&t.root, &[("CANARY", &c)], "", MGR, &args);
    let sock = t.root.join("manager.sock");
    m.wait("the control socket", || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    // With no instance the metrics are written at exit ("every instance is down").
    assert_eq!(m.stop(), Some(0), "{}", m.stderr());
    assert_canary(&c);
    assert_regular(&file, 0o644);
    assert!(
        read_lossy(&file).contains("# TYPE clsync_"),
        "{}",
        read_lossy(&file)
    );
}

/// The manager's state file: symlinks at the old temporary name `.state.json.tmp` and at
/// `state.json` are replaced; the state file is 0600.
#[test]
fn state_file_symlinks_are_not_followed() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-state");
    let c = canary(&t);
    let state = t.root.join("state");
    mkdir(&state);
    chmod(&state, 0o700);
    let plant =
        plant_line("STATE", ".state.json.tmp", false) + &plant_line("STATE", "state.json", false);
    let file = state.join("state.json");
    let args = manager_args(&t.root, &state, &[]);
    let mut m = Planted::spawn(
        &t.root,
        &[("CANARY", &c), ("STATE", &state)],
        &plant,
        MGR,
        &args,
    );
    m.wait("the state file", || is_file(&file));
    assert_canary(&c);
    assert_regular(&file, 0o600);
    assert_eq!(m.stop(), Some(0), "{}", m.stderr());
    assert_canary(&c);
}

/// A state directory others may write to (1777) is refused at start.
#[test]
fn state_dir_writable_by_others_is_refused() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-state-1777");
    let c = canary(&t);
    let shared = shared_dir(&t, "state", 0o1777, false);
    plant_as_nobody(&c, &shared.join(".state.json.tmp"));
    let args = manager_args(&t.root, &shared, &[]);
    let mut m = Planted::spawn(&t.root, &[("CANARY", &c)], "", MGR, &args);
    let code = m.exit_code(REFUSE_TIMEOUT);
    assert_canary(&c);
    assert_ne!(code, Some(0), "{}", m.stderr());
    assert_refusal(&m.stderr(), &shared, "state directory");
}

/// `clsync import` never writes through a symlink at a profile's name, even a dangling
/// one (which `exists()` reports as missing): the file it points to is not created.
#[test]
fn import_does_not_write_through_a_dangling_symlink() {
    let t = TestDir::new("safe-import");
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy/production.conf");
    let prof = t.root.join("profiles");
    mkdir(&prof);
    let target = t.root.join("not-to-be-created");
    symlink(pb(&target), &prof.join("lxc-brother.toml"));
    let f = run(
        &t.root,
        &[
            OsString::from("import"),
            "--profiles-dir".into(),
            prof.clone().into(),
            conf.into(),
        ],
        Duration::from_secs(30),
    );
    assert!(
        !target.exists(),
        "written through the symlink: {}",
        f.describe()
    );
    assert_eq!(f.code(), Some(2), "{}", f.describe());
    assert!(f.stderr.contains("lxc-brother.toml"), "{}", f.stderr);
    assert!(
        lstat(&prof.join("lxc-brother.toml"))
            .file_type()
            .is_symlink(),
        "left alone"
    );
}

/// A missing destination below a directory others may write to is not created: nobody
/// plants a symlink where its first missing component goes (to a root-only directory),
/// and the worker refuses with one line instead of creating the tree through the link
/// and syncing the source into it.
#[test]
fn a_missing_destination_below_a_shared_directory_is_not_created() {
    if !attacks_possible() {
        return;
    }
    let t = TestDir::new("safe-dst-1777");
    write(&t.s(b"secret"), b"data");
    let target = t.root.join("root-only");
    mkdir(&target);
    chmod(&target, 0o700);
    let shared = shared_dir(&t, "shared", 0o1777, false);
    plant_as_nobody(&target, &shared.join("x"));
    let dst = shared.join("x").join("mirror");
    let (status, err) = run_within(
        Command::new(BIN)
            .args(["-t", "0.1", "-w", "0.1", "--exit-on-no-events"])
            .arg(&t.src)
            .arg(&dst),
        REFUSE_TIMEOUT,
    );
    assert!(
        !exists_nofollow(&target.join("mirror")),
        "root created the destination through nobody's symlink: {err}"
    );
    assert!(status.is_some_and(|s| !s.success()), "{status:?}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].contains("does not exist")
            && lines[0].contains(&format!("mkdir -p {}", dst.display())),
        "{err}"
    );
}

/// A rename in the source is repeated at a local destination without following a
/// symlink there: with `dst/d -> root-only` (as a symlink mirrored from the source
/// leaves it until the next rsync), `mv d/f d/g` in the source must not rename
/// `root-only/f`.
#[test]
fn a_rename_is_not_repeated_through_a_symlink_at_the_destination() {
    let t = TestDir::new("safe-move-link");
    let target = t.root.join("root-only");
    mkdir(&target);
    write(&target.join("f"), CANARY);
    mkdir(&t.s(b"d"));
    write(&t.s(b"d/f"), b"source");
    symlink(pb(&target), &t.d(b"d"));
    let mut w = t.start(&["--skip-initialsync"]);
    rename(&t.s(b"d/f"), &t.s(b"d/g"));
    // The batch is done when rsync has replaced the symlink with the source's directory.
    wait_until(SYNC_TIMEOUT, "the destination's d is a directory", || {
        let m = std::fs::symlink_metadata(t.d(b"d")).map_err(|e| e.to_string())?;
        m.is_dir()
            .then_some(())
            .ok_or_else(|| format!("{:?}", m.file_type()))
    });
    w.stop_ok();
    assert!(
        exists_nofollow(&target.join("f")) && !exists_nofollow(&target.join("g")),
        "the rename went through the destination's symlink: {:?}",
        std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
}
