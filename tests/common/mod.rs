//! Shared harness for the integration tests: temp trees, the worker process,
//! and a byte-exact tree comparison with a readable diff.
//!
//! Everything here is real: real inotify, real rsync, real child processes.
//! Synchronisation is always "wait for a condition with a deadline"; there
//! are no fixed sleeps except the short pause inside polling loops.

#![allow(dead_code)]

pub mod load;
pub mod manager;
pub mod nspawn;
pub mod profiles;
pub mod ssh;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_clsync");

/// How long one rsync run may stay alive after its work is done: rsync 3.5's end-of-run
/// race (src/sync/stall.rs) leaves its receiver asleep in poll() for 60 s. The worker wakes
/// a local run's receiver, but not one on the other end of ssh (the tests' sshd runs it) nor
/// inside --sandbox (no /proc): such a run is a minute late, not lost. The deadlines below
/// are that much longer than the work they wait for needs, so that the race, which strikes
/// now and then on a loaded machine, makes a test slow instead of failed.
const RSYNC_END_STALL: Duration = Duration::from_secs(60);
/// How long a worker may take to become ready (status file reads `running`).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30 + RSYNC_END_STALL.as_secs());
/// Default deadline for a small change to be mirrored.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30 + RSYNC_END_STALL.as_secs());
/// How long a worker may take to exit after SIGTERM (its final sync included).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60 + RSYNC_END_STALL.as_secs());
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(20);

/// An empty argument list (`&[]` alone has no element type).
pub const NO_ARGS: &[&str] = &[];

// ---------------------------------------------------------------------------
// Paths as bytes
// ---------------------------------------------------------------------------

/// `base/rel` where `rel` is raw bytes (may contain anything but NUL; `/`
/// separates components).
pub fn bp(base: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        // `join("")` would append a trailing slash.
        base.to_path_buf()
    } else {
        base.join(OsStr::from_bytes(rel))
    }
}

/// Printable, unambiguous form of a byte path.
pub fn show(p: &[u8]) -> String {
    if p.is_empty() {
        ".".to_string()
    } else {
        format!("\"{}\"", p.escape_ascii())
    }
}

/// Printable form of a `Path`.
pub fn showp(p: &Path) -> String {
    show(p.as_os_str().as_bytes())
}

/// Bytes of a `Path`.
pub fn pb(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

// ---------------------------------------------------------------------------
// Small file-system helpers that panic with the path on failure
// ---------------------------------------------------------------------------

#[track_caller]
pub fn write(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", showp(path)));
}

#[track_caller]
pub fn append(path: &Path, data: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open for append {}: {e}", showp(path)));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("append {}: {e}", showp(path)));
}

#[track_caller]
pub fn mkdir(path: &Path) {
    fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", showp(path)));
}

#[track_caller]
pub fn mkdir_p(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", showp(path)));
}

#[track_caller]
pub fn rename(from: &Path, to: &Path) {
    fs::rename(from, to).unwrap_or_else(|e| panic!("rename {} -> {}: {e}", showp(from), showp(to)));
}

#[track_caller]
pub fn remove_file(path: &Path) {
    fs::remove_file(path).unwrap_or_else(|e| panic!("rm {}: {e}", showp(path)));
}

#[track_caller]
pub fn remove_dir_all(path: &Path) {
    fs::remove_dir_all(path).unwrap_or_else(|e| panic!("rm -rf {}: {e}", showp(path)));
}

#[track_caller]
/// Writes an executable script (0755) at `path`.
pub fn write_script(path: &Path, text: &str) {
    write(path, text.as_bytes());
    chmod(path, 0o755);
}

/// Builds the C source `tests/data/NAME` into the shared object `out` (mode 0755) with
/// gcc, `extra` after the source (libraries); panics with gcc's output if it fails.
#[allow(dead_code)]
pub fn build_shared_object(name: &str, out: &Path, extra: &[&str]) {
    let c = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let res = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(out)
        .arg(&c)
        .args(extra)
        .output()
        .expect("gcc (.ci/run installs it)");
    assert!(
        res.status.success(),
        "gcc {}: {}",
        c.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    chmod(out, 0o755);
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", showp(path)));
}

#[track_caller]
pub fn symlink(target: &[u8], link: &Path) {
    std::os::unix::fs::symlink(OsStr::from_bytes(target), link)
        .unwrap_or_else(|e| panic!("ln -s {} {}: {e}", show(target), showp(link)));
}

#[track_caller]
pub fn hard_link(existing: &Path, new: &Path) {
    fs::hard_link(existing, new)
        .unwrap_or_else(|e| panic!("ln {} {}: {e}", showp(existing), showp(new)));
}

#[track_caller]
pub fn lstat(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", showp(path)))
}

/// Whether anything (even a dangling symlink) exists at `path`.
pub fn exists_nofollow(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

// ---------------------------------------------------------------------------
// Per-test directory
// ---------------------------------------------------------------------------

/// A unique temp dir per test with `src/`, `dst/`, `outside/` (a sibling of
/// `src` that is not watched) and a status-file path.
///
/// Removed on drop unless `CLSYNC_TEST_KEEP` is set in the environment.
pub struct TestDir {
    tmp: Option<tempfile::TempDir>,
    pub root: PathBuf,
    pub src: PathBuf,
    pub dst: PathBuf,
    pub outside: PathBuf,
    pub status: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("clsync-{name}-"))
            .tempdir_in(std::env::temp_dir())
            .expect("create temp dir");
        // Canonical, so that the paths we pass are the ones the worker reports.
        let root = fs::canonicalize(tmp.path()).expect("canonicalize temp dir");
        let src = root.join("src");
        let dst = root.join("dst");
        let outside = root.join("outside");
        mkdir(&src);
        mkdir(&dst);
        mkdir(&outside);
        let status = root.join("status");
        TestDir {
            tmp: Some(tmp),
            root,
            src,
            dst,
            outside,
            status,
        }
    }

    /// `src/rel`.
    pub fn s(&self, rel: &[u8]) -> PathBuf {
        bp(&self.src, rel)
    }

    /// `dst/rel`.
    pub fn d(&self, rel: &[u8]) -> PathBuf {
        bp(&self.dst, rel)
    }

    /// `outside/rel`.
    pub fn o(&self, rel: &[u8]) -> PathBuf {
        bp(&self.outside, rel)
    }

    /// Start a worker on `src` → `dst` (short form, fast delays unless given).
    pub fn start<S: AsRef<OsStr>>(&self, extra: &[S]) -> Worker {
        Worker::start_in(&self.root, &self.src, &self.dst, extra)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("CLSYNC_TEST_KEEP").is_some() {
            if let Some(t) = self.tmp.take() {
                eprintln!("keeping test dir {}", showp(&t.keep()));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The worker process
// ---------------------------------------------------------------------------

/// True in the test binaries that run the convergence tests again with
/// `--monitor fanotify` (`tests/*_fanotify.rs` include tests/it/mirror.rs and random.rs); every
/// worker they start watches with fanotify.
pub fn fanotify_run() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().contains("_fanotify-"))
        })
        .unwrap_or(false)
}

fn has_opt<S: AsRef<OsStr>>(args: &[S], short: &str, long: &str) -> bool {
    args.iter().any(|a| {
        let a = a.as_ref().as_bytes();
        a.starts_with(short.as_bytes())
            || a == long.as_bytes()
            || a.starts_with(format!("{long}=").as_bytes())
    })
}

/// A running `clsync` child. Killed (SIGKILL, whole process group) on drop if
/// it is still running; on a panicking drop, its stderr is printed.
pub struct Worker {
    child: Child,
    reaped: Option<ExitStatus>,
    pub src: PathBuf,
    pub dst: PathBuf,
    pub status_file: PathBuf,
    pub stderr_path: PathBuf,
    pub args: Vec<OsString>,
}

/// Spawn the binary with `args` in its own process group, stdout and stderr
/// to files in `dir`. The child gets SIGKILL if the spawning thread dies.
fn spawn(dir: &Path, tag: &str, args: &[OsString]) -> (Child, PathBuf, PathBuf) {
    let stdout_path = dir.join(format!("{tag}.stdout"));
    let stderr_path = dir.join(format!("{tag}.stderr"));
    let stdout = File::create(&stdout_path).expect("create stdout file");
    let stderr = File::create(&stderr_path).expect("create stderr file");
    let args = own_index(dir, args);
    let mut cmd = Command::new(BIN);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    (child, stdout_path, stderr_path)
}

/// `args` with `--index-dir DIR/index/INSTANCE` first when they run a profile
/// (`--profile`) or a block of the original's file (`-H`/`-K`) without an `--index-dir`:
/// the index would otherwise be the machine's /var/lib/clsync/index/INSTANCE, outliving
/// the test and held (one worker per index directory) by any other test that runs an
/// instance of the same name at the same time. Subcommands are left as they are.
pub fn own_index(dir: &Path, args: &[OsString]) -> Vec<OsString> {
    let named = |a: &OsString, opts: &[&str]| {
        let a = a.to_string_lossy();
        opts.iter().any(|o| {
            a == *o
                || a.starts_with(&format!("{o}="))
                || (o.len() == 2 && a.starts_with(o) && !o.starts_with("--"))
        })
    };
    let instance = ["--profile", "-H", "--config-file", "-K", "--config-block"];
    let sub = args.first().is_some_and(|a| {
        ["check", "import", "show-config", "completions", "help"].contains(&&*a.to_string_lossy())
    });
    if sub
        || !args.iter().any(|a| named(a, &instance))
        || args.iter().any(|a| a == "/NULL/")
        || args.iter().any(|a| named(a, &["--index-dir"]))
    {
        return args.to_vec();
    }
    // The instance's name: the values of --profile, -K and -l, to keep two instances of
    // one template (or two blocks) of a test apart.
    let mut name = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let a = a.to_string_lossy();
        for o in ["--profile", "-K", "--config-block", "-l", "--label"] {
            if a == o {
                name.extend(args.get(i + 1).map(|v| v.to_string_lossy().into_owned()));
            } else if let Some(v) = a.strip_prefix(&format!("{o}=")) {
                name.push(v.to_string());
            } else if o.len() == 2 && a.len() > 2 && a.starts_with(o) && !a.starts_with("--") {
                name.push(a[2..].to_string());
            }
        }
    }
    let name = if name.is_empty() {
        "default".to_string()
    } else {
        name.join("@").replace('/', "_")
    };
    let mut out: Vec<OsString> = vec!["--index-dir".into(), dir.join("index").join(name).into()];
    out.extend(args.iter().cloned());
    out
}

pub fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", showp(path)),
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    let start = v.len().saturating_sub(lines);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[... {start} earlier lines ...]\n"));
    }
    for l in &v[start..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// How a process ended, in words: `exit code 2`, `killed by signal 9`.
pub fn describe_status(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{st:?}"),
    }
}

impl Worker {
    /// Short form: `clsync [-t 0.1] [-w 0.1] [extra] --status-file F SRC DST`;
    /// status file and logs live in `src`'s parent directory.
    pub fn start<S: AsRef<OsStr>>(src: &Path, dst: &Path, extra: &[S]) -> Worker {
        let dir = src.parent().expect("src has a parent");
        Worker::start_in(dir, src, dst, extra)
    }

    /// Short form with status file and logs in `dir`.
    pub fn start_in<S: AsRef<OsStr>>(dir: &Path, src: &Path, dst: &Path, extra: &[S]) -> Worker {
        let status = dir.join("status");
        let mut args: Vec<OsString> = Vec::new();
        if !has_opt(extra, "-t", "--delay-collect") {
            args.extend(["-t", "0.1"].map(OsString::from));
        }
        if !has_opt(extra, "-w", "--delay-sync") {
            args.extend(["-w", "0.1"].map(OsString::from));
        }
        // Debug logging on request: CLSYNC_TEST_DEBUG=1 (or 2 for trace).
        if let Some(level) = std::env::var_os("CLSYNC_TEST_DEBUG") {
            if !has_opt(extra, "-d", "--debug") {
                args.push("-d".into());
                args.push(level);
            }
        }
        args.extend(extra.iter().map(|a| a.as_ref().to_os_string()));
        args.push("--status-file".into());
        args.push(status.clone().into());
        args.push(src.into());
        args.push(dst.into());
        Worker::start_raw(dir, src, dst, &status, &args)
    }

    /// Start with exactly `args` (which must make the worker write `status`)
    /// and wait until `status` reads `running`. `src`/`dst` are only recorded
    /// for `wait_synced` and the messages.
    pub fn start_raw<S: AsRef<OsStr>>(
        dir: &Path,
        src: &Path,
        dst: &Path,
        status: &Path,
        args: &[S],
    ) -> Worker {
        let _ = fs::remove_file(status);
        let mut args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        let fanotify = fanotify_run() && !has_opt(&args, "--monitor", "--monitor");
        if fanotify {
            args.insert(0, "--monitor=fanotify".into());
        }
        let (child, _stdout, stderr_path) = spawn(dir, "worker", &args);
        let mut w = Worker {
            child,
            reaped: None,
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
            status_file: status.to_path_buf(),
            stderr_path,
            args,
        };
        w.wait_ready();
        w.check_fanotify(fanotify);
        w
    }

    /// Starts the short form like [`start_in`](Self::start_in) without waiting for
    /// readiness (for tests that hold the initial sync).
    pub fn spawn_in<S: AsRef<OsStr>>(dir: &Path, src: &Path, dst: &Path, extra: &[S]) -> Worker {
        let status = dir.join("status");
        let _ = fs::remove_file(&status);
        let mut args: Vec<OsString> = vec!["-t".into(), "0.1".into(), "-w".into(), "0.1".into()];
        args.extend(extra.iter().map(|a| a.as_ref().to_os_string()));
        args.extend([
            "--status-file".into(),
            status.clone().into(),
            src.into(),
            dst.into(),
        ]);
        let (child, _stdout, stderr_path) = spawn(dir, "worker", &args);
        Worker {
            child,
            reaped: None,
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
            status_file: status,
            stderr_path,
            args,
        }
    }

    fn check_fanotify(&self, fanotify: bool) {
        if fanotify && !nix::unistd::geteuid().is_root() {
            // The run goes on with the inotify fallback, but it is not the fanotify run.
            skip("fanotify needs root; this worker watches with inotify");
        }
        if fanotify && nix::unistd::geteuid().is_root() {
            // The point of these runs: fanotify must really be in use, not the fallback.
            let log = self.stderr();
            assert!(
                log.contains("fanotify file-system mark"),
                "the worker did not watch with fanotify:\n{log}"
            );
        }
    }

    fn wait_ready(&mut self) {
        self.wait_ready_within(READY_TIMEOUT);
    }

    /// Waits until the status file reads `running` (for a worker started without waiting,
    /// [`spawn_in`](Self::spawn_in)); panics with its output and process tree after
    /// `timeout`, or at once if it exits.
    #[track_caller]
    pub fn wait_ready_within(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.status() == "running" {
                return;
            }
            if let Some(st) = self.try_wait() {
                panic!(
                    "worker exited before it was ready: {}\nargs: {:?}\nstderr:\n{}",
                    describe_status(st),
                    self.args,
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "worker not ready after {timeout:?} (status file: {:?})\nargs: {:?}\nstderr:\n{}\nprocesses:\n{}",
                    self.status(),
                    self.args,
                    self.stderr(),
                    process_tree(self.pid())
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Current content of the status file, trimmed ("" if absent).
    pub fn status(&self) -> String {
        fs::read(&self.status_file)
            .map(|b| String::from_utf8_lossy(b.trim_ascii()).into_owned())
            .unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Asserts that the worker confined itself (`--sandbox`): its start-up line says so.
    pub fn assert_sandboxed(&self) {
        let log = self.stderr();
        assert!(
            log.contains("sandbox: landlock "),
            "the worker is not confined:\n{log}"
        );
    }

    /// Non-blocking: the exit status if the worker has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().expect("try_wait");
        }
        self.reaped
    }

    /// Panic (with stderr) if the worker is no longer running.
    #[track_caller]
    pub fn assert_alive(&mut self) {
        if let Some(st) = self.try_wait() {
            panic!(
                "worker exited unexpectedly: {}\nstderr:\n{}",
                describe_status(st),
                tail(&self.stderr(), 200)
            );
        }
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap_or_else(|e| panic!("kill -{sig} {}: {e}", self.pid()));
    }

    /// Wait (with a deadline) for the worker to exit; panic on timeout.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "worker did not exit within {timeout:?}; status file: {:?}\nstderr:\n{}",
                    self.status(),
                    tail(&self.stderr(), 200)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then wait for the exit (deadline `STOP_TIMEOUT`).
    #[track_caller]
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(st) = self.try_wait() {
            panic!(
                "worker had already exited before stop(): {}\nstderr:\n{}",
                describe_status(st),
                tail(&self.stderr(), 200)
            );
        }
        self.signal(Signal::SIGTERM);
        self.wait_exit(STOP_TIMEOUT)
    }

    /// `stop()` and assert exit code 0.
    #[track_caller]
    pub fn stop_ok(&mut self) {
        let st = self.stop();
        assert_eq!(
            st.code(),
            Some(0),
            "worker should exit 0 on SIGTERM, got {}\nstderr:\n{}",
            describe_status(st),
            tail(&self.stderr(), 200)
        );
    }

    /// Poll until `src` and `dst` are equal; panic with a diff on timeout or
    /// if the worker dies.
    #[track_caller]
    pub fn wait_synced(&mut self, timeout: Duration) {
        self.wait_synced_ctx(timeout, "", &no_filter)
    }

    #[track_caller]
    pub fn wait_synced_ctx(
        &mut self,
        timeout: Duration,
        context: &str,
        exclude: &dyn Fn(&[u8], bool) -> bool,
    ) {
        let (src, dst) = (self.src.clone(), self.dst.clone());
        let pid = self.pid();
        // What the worker's watches miss, and where it and its children wait.
        let diagnose = || {
            format!(
                "{}\nprocesses:\n{}",
                unwatched_report(pid, &src, exclude),
                process_tree(pid)
            )
        };
        wait_synced_impl(
            &src,
            &dst,
            timeout,
            context,
            exclude,
            &mut || self.assert_alive(),
            &diagnose,
        );
    }
}

/// The inode numbers watched by process `pid`'s inotify instances (from
/// /proc/PID/fdinfo), or None if they cannot be read.
pub fn watched_inodes(pid: Pid) -> Option<BTreeSet<u64>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut out = BTreeSet::new();
    for de in fs::read_dir(dir).ok()?.flatten() {
        let Ok(text) = fs::read_to_string(de.path()) else {
            continue;
        };
        for line in text.lines().filter(|l| l.starts_with("inotify ")) {
            if let Some(ino) = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("ino:"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            {
                out.insert(ino);
            }
        }
    }
    Some(out)
}

/// Directories of `src` that the worker `pid` has no inotify watch on:
/// events there are lost. For the report after a sync timeout.
fn unwatched_report(pid: Pid, src: &Path, exclude: &dyn Fn(&[u8], bool) -> bool) -> String {
    let Some(watched) = watched_inodes(pid) else {
        return "(cannot read the worker's inotify watches)\n".to_string();
    };
    let Ok(snap) = snapshot(src, exclude) else {
        return String::new();
    };
    let missing: Vec<String> = snap
        .iter()
        .filter(|(_, e)| e.kind == Kind::Dir && !watched.contains(&e.ino))
        .map(|(k, _)| show(k))
        .collect();
    if missing.is_empty() {
        format!(
            "the worker has an inotify watch on every source directory ({} watches)\n",
            watched.len()
        )
    } else {
        format!(
            "source directories WITHOUT an inotify watch in the worker ({} of {} watches held): {}\n",
            missing.len(),
            watched.len(),
            missing.join(", ")
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            if let Ok(None) = self.child.try_wait() {
                // Not reaped yet, so the pid (= pgid) cannot have been reused.
                // A short grace period lets it remove its temporary files.
                let _ = kill(self.pid(), Signal::SIGCONT);
                let _ = kill(self.pid(), Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        break;
                    }
                    std::thread::sleep(POLL);
                }
                if let Ok(None) = self.child.try_wait() {
                    let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
                    let _ = self.child.wait();
                }
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- worker args: {:?}\n--- worker stderr ({}):\n{}--- end of worker stderr",
                self.args,
                showp(&self.stderr_path),
                tail(&self.stderr(), 300)
            );
        }
    }
}

/// Result of a run-to-completion invocation.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn first_line(&self) -> &str {
        self.stderr.lines().next().unwrap_or("")
    }

    pub fn describe(&self) -> String {
        format!(
            "{}\nstderr:\n{}\nstdout:\n{}",
            describe_status(self.status),
            self.stderr,
            self.stdout
        )
    }
}

/// Run the binary with arbitrary `args` and wait (deadline `timeout`) for it
/// to exit. Logs go to `dir`. Panics if it is still running at the deadline.
#[track_caller]
pub fn run<S: AsRef<OsStr>>(dir: &Path, args: &[S], timeout: Duration) -> Finished {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
    let (mut child, stdout_path, stderr_path) = spawn(dir, "run", &args);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "clsync {args:?} still running after {timeout:?} (it should have refused to start)\nstderr:\n{}",
                tail(&read_lossy(&stderr_path), 100)
            );
        }
        std::thread::sleep(POLL);
    };
    Finished {
        status,
        stdout: read_lossy(&stdout_path),
        stderr: read_lossy(&stderr_path),
    }
}

// ---------------------------------------------------------------------------
// Tree snapshots and comparison
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    Other(&'static str),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink(_) => "symlink",
            Kind::Other(s) => s,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    /// `mode & 0o7777`
    pub mode: u32,
    pub len: u64,
    pub ino: u64,
}

pub type Snapshot = BTreeMap<Vec<u8>, Entry>;

/// Never excludes anything.
pub fn no_filter(_rel: &[u8], _is_dir: bool) -> bool {
    false
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut v = parent.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

fn entry_of(md: &fs::Metadata, path: &Path) -> Result<Entry, String> {
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        let t = fs::read_link(path).map_err(|e| format!("readlink {}: {e}", showp(path)))?;
        Kind::Symlink(t.into_os_string().into_vec())
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_fifo() {
        Kind::Other("fifo")
    } else if ft.is_socket() {
        Kind::Other("socket")
    } else if ft.is_block_device() {
        Kind::Other("block device")
    } else if ft.is_char_device() {
        Kind::Other("char device")
    } else {
        Kind::Other("unknown")
    };
    Ok(Entry {
        kind,
        mode: md.mode() & 0o7777,
        len: md.len(),
        ino: md.ino(),
    })
}

/// Walk `root` without following symlinks. Keys are paths relative to `root`
/// as bytes (the root itself is the empty key). `exclude(rel, is_dir)` drops
/// an entry (and, for a directory, everything below it).
pub fn snapshot(root: &Path, exclude: &dyn Fn(&[u8], bool) -> bool) -> Result<Snapshot, String> {
    let mut out = Snapshot::new();
    let md = fs::symlink_metadata(root).map_err(|e| format!("lstat {}: {e}", showp(root)))?;
    out.insert(Vec::new(), entry_of(&md, root)?);
    if !md.is_dir() {
        return Ok(out);
    }
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let dir = bp(root, &rel);
        let rd = fs::read_dir(&dir).map_err(|e| format!("readdir {}: {e}", showp(&dir)))?;
        for de in rd {
            let de = de.map_err(|e| format!("readdir {}: {e}", showp(&dir)))?;
            let child_rel = join_rel(&rel, de.file_name().as_bytes());
            let path = de.path();
            let md =
                fs::symlink_metadata(&path).map_err(|e| format!("lstat {}: {e}", showp(&path)))?;
            let e = entry_of(&md, &path)?;
            let is_dir = e.kind == Kind::Dir;
            if exclude(&child_rel, is_dir) {
                continue;
            }
            if is_dir {
                stack.push(child_rel.clone());
            }
            out.insert(child_rel, e);
        }
    }
    Ok(out)
}

fn read_all(path: &Path) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut v))
        .map_err(|e| format!("read {}: {e}", showp(path)))?;
    Ok(v)
}

fn has_reported_ancestor(p: &[u8], reported: &BTreeSet<Vec<u8>>) -> bool {
    let mut end = p.len();
    while let Some(i) = p[..end].iter().rposition(|&b| b == b'/') {
        if reported.contains(&p[..i]) {
            return true;
        }
        end = i;
    }
    false
}

/// Differences between the trees `src` and `dst`, one readable line each
/// (empty = equal). Compares names, types, file contents, permission bits
/// (files and directories, the roots included) and symlink targets.
pub fn diff_trees(src: &Path, dst: &Path, exclude: &dyn Fn(&[u8], bool) -> bool) -> Vec<String> {
    let a = match snapshot(src, exclude) {
        Ok(s) => s,
        Err(e) => return vec![format!("cannot read source tree: {e}")],
    };
    let b = match snapshot(dst, &no_filter) {
        Ok(s) => s,
        Err(e) => return vec![format!("cannot read destination tree: {e}")],
    };
    let mut out = Vec::new();
    // Paths whose subtree is already explained by one line.
    let mut covered: BTreeSet<Vec<u8>> = BTreeSet::new();
    let keys: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    for k in keys {
        if has_reported_ancestor(k, &covered) {
            continue;
        }
        let p = show(k);
        match (a.get(k), b.get(k)) {
            (Some(x), None) => {
                out.push(format!("{p}: {} missing in dst", x.kind.name()));
                covered.insert(k.clone());
            }
            (None, Some(y)) => {
                out.push(format!("{p}: {} in dst but not in src", y.kind.name()));
                covered.insert(k.clone());
            }
            (Some(x), Some(y)) => {
                if std::mem::discriminant(&x.kind) != std::mem::discriminant(&y.kind) {
                    out.push(format!(
                        "{p}: type differs: src {}, dst {}",
                        x.kind.name(),
                        y.kind.name()
                    ));
                    covered.insert(k.clone());
                    continue;
                }
                match (&x.kind, &y.kind) {
                    (Kind::Symlink(t1), Kind::Symlink(t2)) => {
                        if t1 != t2 {
                            out.push(format!(
                                "{p}: symlink target differs: src -> {}, dst -> {}",
                                show(t1),
                                show(t2)
                            ));
                        }
                        continue; // symlink modes are meaningless
                    }
                    (Kind::Other(o1), Kind::Other(o2)) if o1 != o2 => {
                        out.push(format!("{p}: type differs: src {o1}, dst {o2}"));
                        continue;
                    }
                    (Kind::File, Kind::File) => {
                        if x.len != y.len {
                            out.push(format!(
                                "{p}: file length differs: src {} bytes, dst {} bytes",
                                x.len, y.len
                            ));
                        } else {
                            match (read_all(&bp(src, k)), read_all(&bp(dst, k))) {
                                (Ok(c1), Ok(c2)) => {
                                    if let Some(i) = c1.iter().zip(&c2).position(|(u, v)| u != v) {
                                        out.push(format!(
                                            "{p}: content differs ({} bytes each), first at offset {i}: src 0x{:02x}, dst 0x{:02x}",
                                            x.len, c1[i], c2[i]
                                        ));
                                    } else if c1.len() != c2.len() {
                                        out.push(format!(
                                            "{p}: length changed while reading: src {} bytes, dst {} bytes",
                                            c1.len(),
                                            c2.len()
                                        ));
                                    }
                                }
                                (Err(e), _) | (_, Err(e)) => out.push(format!("{p}: {e}")),
                            }
                        }
                    }
                    _ => {}
                }
                if x.mode != y.mode {
                    out.push(format!(
                        "{p}: mode differs: src {:04o}, dst {:04o}",
                        x.mode, y.mode
                    ));
                }
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

fn format_diff(diff: &[String]) -> String {
    const MAX: usize = 60;
    let mut s = String::new();
    for l in diff.iter().take(MAX) {
        s.push_str("  ");
        s.push_str(l);
        s.push('\n');
    }
    if diff.len() > MAX {
        s.push_str(&format!(
            "  ... and {} more differences\n",
            diff.len() - MAX
        ));
    }
    s
}

/// Poll until the trees are equal; panic with the diff on timeout.
#[track_caller]
pub fn wait_synced(src: &Path, dst: &Path, timeout: Duration) {
    wait_synced_impl(src, dst, timeout, "", &no_filter, &mut || {}, &String::new);
}

#[track_caller]
fn wait_synced_impl(
    src: &Path,
    dst: &Path,
    timeout: Duration,
    context: &str,
    exclude: &dyn Fn(&[u8], bool) -> bool,
    alive: &mut dyn FnMut(),
    diagnose: &dyn Fn() -> String,
) {
    let start = Instant::now();
    loop {
        let diff = diff_trees(src, dst, exclude);
        if diff.is_empty() {
            return;
        }
        alive();
        if start.elapsed() > timeout {
            panic!(
                "{context}{}trees not in sync after {timeout:?}: {} -> {} ({} differences)\n{}{}",
                if context.is_empty() { "" } else { ": " },
                showp(src),
                showp(dst),
                diff.len(),
                format_diff(&diff),
                diagnose()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Assert the trees are equal right now (no polling).
#[track_caller]
pub fn assert_synced_now(src: &Path, dst: &Path, what: &str) {
    assert_synced_now_filtered(src, dst, what, &no_filter)
}

#[track_caller]
pub fn assert_synced_now_filtered(
    src: &Path,
    dst: &Path,
    what: &str,
    exclude: &dyn Fn(&[u8], bool) -> bool,
) {
    let diff = diff_trees(src, dst, exclude);
    assert!(
        diff.is_empty(),
        "{what}: {} -> {} differ ({} differences)\n{}",
        showp(src),
        showp(dst),
        diff.len(),
        format_diff(&diff)
    );
}

/// Runs `cmd` (stdin closed, stdout dropped, stderr kept) and waits up to `timeout` for it
/// to end: its exit status (`None` when it was still running and was killed) and stderr.
/// For programs that should refuse to start: one that starts instead is not waited on
/// forever.
#[allow(dead_code)]
pub fn run_within(cmd: &mut Command, timeout: Duration) -> (Option<ExitStatus>, String) {
    // stderr to an unnamed file, not a pipe: a program that writes much would block on a
    // full pipe and be taken for one that started.
    let mut log = tempfile::tempfile().expect("tempfile");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().expect("dup"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = Vec::new();
    use std::io::Seek;
    let _ = log.rewind().and_then(|()| log.read_to_end(&mut err));
    (status, String::from_utf8_lossy(&err).into_owned())
}

/// Poll `check` until it returns Ok; panic with its last error on timeout.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        let err = match check() {
            Ok(()) => return,
            Err(e) => e,
        };
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}: {err}");
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// Processes (other than this one) whose command line contains `needle`.
/// The pids of every process, from /proc.
pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The fields of /proc/PID/stat after the command name, state first (the name is in
/// parentheses and may hold spaces and parentheses: the fields after the last `)`).
/// None when the process is gone.
pub fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The process `root` and its descendants, one line each (pid, parent, state, where the
/// kernel has it waiting, command line) and, readable by root, the kernel stack of each:
/// what a test prints when a worker or its children make no progress, so a hang seen once
/// on a loaded machine says where it was.
pub fn process_tree(root: Pid) -> String {
    let mut procs = Vec::new();
    for pid in all_pids() {
        let Some(f) = stat_fields(pid) else { continue };
        let (Some(state), Some(ppid)) = (f.first(), f.get(1).and_then(|p| p.parse::<i32>().ok()))
        else {
            continue;
        };
        procs.push((pid, ppid, state.clone()));
    }
    let mut out = String::new();
    let mut todo = vec![(root.as_raw(), 0usize)];
    while let Some((pid, depth)) = todo.pop() {
        let Some((_, ppid, state)) = procs.iter().find(|p| p.0 == pid) else {
            continue;
        };
        let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        let args = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:indent$}{pid} (parent {ppid}) {state} wchan={wchan} {}\n",
            "",
            args.trim_end(),
            indent = depth * 2
        ));
        if let Ok(stack) = fs::read_to_string(format!("/proc/{pid}/stack")) {
            for l in stack.lines().take(12) {
                out.push_str(&format!("{:indent$}  | {l}\n", "", indent = depth * 2));
            }
        }
        // The threads of a process that has more than one: which of them waits where.
        let tasks: Vec<_> = fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        if tasks.len() > 1 {
            for t in tasks {
                let dir = t.path();
                let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
                let wchan = fs::read_to_string(dir.join("wchan")).unwrap_or_default();
                out.push_str(&format!(
                    "{:indent$}  thread {} {} wchan={wchan}\n",
                    "",
                    t.file_name().to_string_lossy(),
                    comm.trim_end(),
                    indent = depth * 2
                ));
            }
        }
        for c in procs.iter().filter(|p| p.1 == pid) {
            todo.push((c.0, depth + 1));
        }
    }
    out
}

pub fn processes_mentioning(needle: &[u8]) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for de in rd.flatten() {
        let Some(pid) = de.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = fs::read(de.path().join("cmdline")) else {
            continue;
        };
        if cmd.windows(needle.len()).any(|w| w == needle) {
            let shown: Vec<String> = cmd
                .split(|&b| b == 0)
                .map(|a| a.escape_ascii().to_string())
                .collect();
            out.push((pid, shown.join(" ")));
        }
    }
    out
}

/// The example profiles shipped in `profiles/`, sorted.
pub fn shipped_profiles() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no profiles shipped in {}", dir.display());
    v
}

// ---------------------------------------------------------------------------
// Mounts (the tests run as root)
// ---------------------------------------------------------------------------

/// A tmpfs mounted at a path, unmounted (lazily) on drop, so a failing test leaves no
/// mount behind; one the test unmounted itself is fine too.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`-o`; empty for none) at `at`.
    pub fn mount(at: &Path, options: &str) -> Tmpfs {
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "tmpfs"]);
        if !options.is_empty() {
            cmd.args(["-o", options]);
        }
        let st = cmd.arg("clsync-test").arg(at).status().expect("run mount");
        assert!(st.success(), "mount tmpfs -o {options:?} on {}", showp(at));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The worker stopped because its source was unmounted: exit 1, the reason in its log,
/// and the files `data0`..`data{n-1}` still at the destination.
pub fn assert_stopped_for_unmounted_source(w: &mut Worker, t: &TestDir, n: usize) {
    let code = w.wait_exit(SYNC_TIMEOUT);
    assert_eq!(code.code(), Some(1), "{}", w.stderr());
    assert!(
        w.stderr().contains("unmounted; stopping without syncing"),
        "{}",
        w.stderr()
    );
    for i in 0..n {
        assert!(
            t.d(format!("data{i}").as_bytes()).exists(),
            "data{i} was deleted"
        );
    }
}

// ---------------------------------------------------------------------------
// Tables of cases
// ---------------------------------------------------------------------------

/// A table of cases that differ only in data: `cases! { runner; name: data, ... }` makes
/// one `#[test] fn name()` per row, calling `runner("name", data)`. Each case runs, passes
/// and fails on its own, under its own name (which the runner puts in its messages), and
/// `cargo test NAME` picks it out. Attributes before a row (its `///` lines) go on its test.
#[allow(unused_macros)] // the test files that have no table
macro_rules! cases {
    ($runner:path; $($(#[$attr:meta])* $name:ident: $case:expr,)+) => {
        $(
            $(#[$attr])*
            #[test]
            fn $name() {
                $runner(stringify!($name), $case)
            }
        )+
    };
}
#[allow(unused_imports)]
pub(crate) use cases;

// ---------------------------------------------------------------------------
// Tests whose prerequisites are missing
// ---------------------------------------------------------------------------

/// True when the tests run under CI (`CI=true`): every prerequisite is installed there, so
/// a missing one is a failure, not a skip.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A test that cannot run here (no root for fanotify, no systemd, no LXC, a toolchain
/// the check does not apply to) says so on one visible line, `SKIPPED: <test>: <reason>`,
/// written straight to the process's stderr so that the harness's capture of passing
/// tests does not swallow it; under `CI=true` it fails instead. The caller returns right
/// after: `return skip("…");`.
#[track_caller]
pub fn skip(reason: &str) {
    let here = std::panic::Location::caller();
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(n) if n != "main" => n.to_string(),
        _ => format!("{}:{}", here.file(), here.line()),
    };
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
    if under_ci() {
        panic!("{test}: {reason} (CI=true: the prerequisites must be there, a skip fails)");
    }
}
