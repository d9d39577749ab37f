//! The LXC hooks of `contrib/lxc/`.
//!
//! Without LXC: the hooks send the right request, return at once (start-host) or within
//! their timeout (post-stop) when the manager hangs, log to syslog through `logger`, and
//! refuse unsafe container names.
//!
//! With LXC (`CLSYNC_TEST_LXC=1`, needs the packages `lxc` and `busybox-static`): a real
//! busybox container in a temporary lxcpath, whose config includes `clsync.conf` (the
//! hooks of the source tree), and a real `clsync-manager run` on temporary paths. Starting
//! the container starts its instance, a file written inside reaches the mirror, and
//! stopping the container makes the final sync (a file that only the final sync can
//! carry arrives) and removes the instance.

mod common;

use clsync::manager::protocol::{self, InstanceStatus, Request};
use common::*;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const MANAGER: &str = env!("CARGO_BIN_EXE_clsync-manager");

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/lxc")
}

fn hook(name: &str) -> PathBuf {
    contrib().join(name)
}

/// What a command printed and how it ended.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Ran {
    fn describe(&self) -> String {
        format!(
            "{:?} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, output to files in `dir`; kills its process group and
/// panics if it runs longer than `timeout`.
#[track_caller]
fn run_cmd(dir: &Path, tag: &str, cmd: &mut Command, timeout: Duration) -> Ran {
    let out = dir.join(format!("{tag}.stdout"));
    let err = dir.join(format!("{tag}.stderr"));
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("create stdout file"))
        .stderr(File::create(&err).expect("create stderr file"))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                read_lossy(&out),
                read_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        status,
        stdout: read_lossy(&out),
        stderr: read_lossy(&err),
        took: start.elapsed(),
    }
}

/// A directory with a fake `logger` that appends its arguments to `log`, to be put first
/// in the hooks' PATH: the syslog messages become readable by the test.
struct FakeLogger {
    bin: PathBuf,
    log: PathBuf,
}

impl FakeLogger {
    fn new(root: &Path) -> FakeLogger {
        let bin = root.join("bin");
        mkdir_p(&bin);
        let log = root.join("syslog");
        write(&log, b"");
        let script = bin.join("logger");
        write(
            &script,
            format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n", log.display()).as_bytes(),
        );
        chmod(&script, 0o755);
        FakeLogger { bin, log }
    }

    fn path(&self) -> std::ffi::OsString {
        let mut p = self.bin.clone().into_os_string();
        p.push(":");
        p.push(std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()));
        p
    }

    fn text(&self) -> String {
        read_lossy(&self.log)
    }

    /// Waits until a logged line contains `needle`.
    #[track_caller]
    fn wait_for(&self, needle: &str, timeout: Duration) {
        wait_until(timeout, &format!("the hook to log {needle:?}"), || {
            let t = self.text();
            if t.contains(needle) {
                Ok(())
            } else {
                Err(format!("syslog so far:\n{t}"))
            }
        });
    }
}

/// A hook run by hand, the way LXC runs it (arguments NAME lxc TYPE, LXC_* variables).
fn hook_cmd(script: &str, name: &str, socket: &Path, logger: &FakeLogger) -> Command {
    let mut c = Command::new(hook(script));
    c.args([name, "lxc", script])
        .env("LXC_NAME", name)
        .env("LXC_HOOK_VERSION", "0")
        .env("CLSYNC_MANAGER", MANAGER)
        .env("CLSYNC_MANAGER_SOCKET", socket)
        .env("PATH", logger.path())
        .env_remove("CLSYNC_LXC_PROFILE");
    c
}

/// Accepts one client on `l` (deadline `timeout`) and reads its request line; the client
/// gets no answer while the returned stream is kept.
#[track_caller]
fn accept_request(l: &UnixListener, timeout: Duration) -> (UnixStream, Request) {
    l.set_nonblocking(true).unwrap();
    let mut conn = None;
    wait_until(
        timeout,
        "the hook to connect to the manager socket",
        || match l.accept() {
            Ok((s, _)) => {
                conn = Some(s);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
    );
    let s = conn.unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .expect("read the hook's request");
    let req: Request = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("request {line:?} is not valid: {e}"));
    (s, req)
}

/// No process of ours still mentions `needle` (the hook's background request is over).
#[track_caller]
fn wait_no_process(needle: &str, timeout: Duration) {
    wait_until(timeout, "the hook's clsync-manager client to exit", || {
        let p = processes_mentioning(needle.as_bytes());
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("still running: {p:?}"))
        }
    });
}

#[test]
fn start_host_hook_returns_at_once_when_the_manager_hangs() {
    let t = TestDir::new("lxc-start-hang");
    let logger = FakeLogger::new(&t.root);
    // A "manager" that takes the request and never answers.
    let socket = t.root.join("hung.sock");
    let l = UnixListener::bind(&socket).unwrap();
    let mut cmd = hook_cmd("start-host", "hang1", &socket, &logger);
    cmd.env("LXC_ROOTFS_PATH", &t.src)
        .env("CLSYNC_LXC_START_TIMEOUT", "5");
    let ran = run_cmd(&t.root, "start-host", &mut cmd, Duration::from_secs(30));
    assert!(ran.status.success(), "{}", ran.describe());
    // LXC reads the hook's output to the end: the background request must not hold it.
    assert!(
        ran.took < Duration::from_secs(4),
        "start-host should return at once, without waiting for the manager: {}",
        ran.describe()
    );
    let (_conn, req) = accept_request(&l, Duration::from_secs(10));
    assert_eq!(req.cmd, "start");
    assert_eq!(req.name.as_deref(), Some("lxc-hang1"));
    // The bounded request gives up and says so in syslog; nothing is left running.
    logger.wait_for(
        "no answer from clsync-manager within 5s",
        Duration::from_secs(30),
    );
    assert!(logger.text().contains("-p daemon.err"), "{}", logger.text());
    // The hook's subshell, timeout(1) and the client all name the container.
    wait_no_process("hang1", Duration::from_secs(10));
}

#[test]
fn start_host_hook_uses_the_configured_profile_and_logs_a_refusal() {
    let t = TestDir::new("lxc-start-profile");
    let logger = FakeLogger::new(&t.root);
    let socket = t.root.join("m.sock");
    let l = UnixListener::bind(&socket).unwrap();
    let mut cmd = hook_cmd("start-host", "db1", &socket, &logger);
    cmd.env("LXC_ROOTFS_PATH", &t.src)
        .env("CLSYNC_LXC_PROFILE", "ct");
    let ran = run_cmd(&t.root, "start-host", &mut cmd, Duration::from_secs(30));
    assert!(ran.status.success(), "{}", ran.describe());
    let (conn, req) = accept_request(&l, Duration::from_secs(10));
    assert_eq!(req.cmd, "start");
    assert_eq!(req.name.as_deref(), Some("ct-db1"));
    // The manager refuses: the refusal lands in syslog.
    let mut w = &conn;
    std::io::Write::write_all(&mut w, b"{\"ok\":false,\"error\":\"no profile ct\"}\n").unwrap();
    logger.wait_for("could not start ct-db1 (exit 1)", Duration::from_secs(30));
    assert!(logger.text().contains("no profile ct"), "{}", logger.text());
}

#[test]
fn start_host_hook_starts_nothing_for_a_rootfs_the_host_cannot_see() {
    // lvm, overlay...: LXC_ROOTFS_PATH is no directory on the host, and mirroring the
    // empty mount point would empty the mirror.
    let t = TestDir::new("lxc-start-blockdev");
    let logger = FakeLogger::new(&t.root);
    let socket = t.root.join("m.sock");
    let l = UnixListener::bind(&socket).unwrap();
    l.set_nonblocking(true).unwrap();
    let mut cmd = hook_cmd("start-host", "web01", &socket, &logger);
    cmd.env("LXC_ROOTFS_PATH", "/dev/vg0/web01");
    let ran = run_cmd(&t.root, "start-host", &mut cmd, Duration::from_secs(30));
    assert!(ran.status.success(), "{}", ran.describe());
    assert!(
        logger.text().contains("is not a directory on the host"),
        "{}",
        logger.text()
    );
    // The refusal happens before anything is sent (and before anything is backgrounded).
    assert!(l.accept().is_err(), "the hook contacted the manager");
}

#[test]
fn post_stop_hook_is_bounded_when_the_manager_hangs() {
    let t = TestDir::new("lxc-stop-hang");
    let logger = FakeLogger::new(&t.root);
    let socket = t.root.join("hung.sock");
    let l = UnixListener::bind(&socket).unwrap();
    // Read the request while the hook waits for its answer.
    let acceptor = {
        let l = l.try_clone().unwrap();
        std::thread::spawn(move || accept_request(&l, Duration::from_secs(30)))
    };
    let mut cmd = hook_cmd("post-stop", "hang2", &socket, &logger);
    cmd.env("CLSYNC_LXC_STOP_TIMEOUT", "2");
    let ran = run_cmd(&t.root, "post-stop", &mut cmd, Duration::from_secs(60));
    let (_conn, req) = acceptor.join().unwrap();
    assert!(ran.status.success(), "{}", ran.describe());
    assert_eq!(req.cmd, "stop");
    assert_eq!(req.name.as_deref(), Some("lxc-hang2"));
    assert!(
        ran.took >= Duration::from_secs(2) && ran.took < Duration::from_secs(15),
        "post-stop should wait for the final sync, but no longer than its timeout (2s): {}",
        ran.describe()
    );
    assert!(
        logger.text().contains("lxc-hang2 still stopping after 2s"),
        "{}",
        logger.text()
    );
    wait_no_process("hang2", Duration::from_secs(10));
}

#[test]
fn hooks_refuse_unsafe_container_names() {
    let t = TestDir::new("lxc-names");
    let logger = FakeLogger::new(&t.root);
    let socket = t.root.join("m.sock");
    let l = UnixListener::bind(&socket).unwrap();
    l.set_nonblocking(true).unwrap();
    for script in ["start-host", "post-stop"] {
        for name in ["", ".", "..", "../etc", "a/b", "-rf", "a b", "a\nb", "a\tb"] {
            write(&logger.log, b"");
            let mut cmd = hook_cmd(script, name, &socket, &logger);
            cmd.env("LXC_ROOTFS_PATH", &t.src);
            let ran = run_cmd(&t.root, script, &mut cmd, Duration::from_secs(30));
            assert!(
                ran.status.success(),
                "{script} {name:?}: {}",
                ran.describe()
            );
            assert!(
                logger.text().contains("refusing the container name"),
                "{script} {name:?}: {}",
                logger.text()
            );
            assert!(
                l.accept().is_err(),
                "{script} {name:?}: the hook contacted the manager"
            );
        }
        // No LXC_NAME at all (set -u must not end the hook with an error).
        write(&logger.log, b"");
        let mut cmd = hook_cmd(script, "x", &socket, &logger);
        cmd.env_remove("LXC_NAME");
        let ran = run_cmd(&t.root, script, &mut cmd, Duration::from_secs(30));
        assert!(
            ran.status.success(),
            "{script} without LXC_NAME: {}",
            ran.describe()
        );
        assert!(logger.text().contains("refusing"), "{}", logger.text());
    }
}

/// Every hook the snippet names is an executable of contrib/lxc, under its install path.
#[test]
fn config_snippet_sets_both_hooks() {
    let text = fs::read_to_string(contrib().join("clsync.conf")).unwrap();
    let mut hooks = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').expect("key = value");
        let (key, value) = (key.trim(), value.trim());
        let file = value
            .strip_prefix("/usr/share/clsync/lxc/")
            .unwrap_or_else(|| panic!("{key}: {value} is not under /usr/share/clsync/lxc/"));
        let md = fs::metadata(contrib().join(file)).unwrap();
        assert!(
            md.permissions().mode() & 0o111 != 0,
            "{file} is not executable"
        );
        hooks.push(key.to_string());
    }
    hooks.sort();
    assert_eq!(hooks, ["lxc.hook.post-stop", "lxc.hook.start-host"]);
}

// ---------------------------------------------------------------------------
// A real container
// ---------------------------------------------------------------------------

/// `clsync-manager run` on temporary paths; stopped (TERM, then KILL) on drop.
struct Manager {
    child: Child,
    socket: PathBuf,
    stderr: PathBuf,
}

impl Manager {
    fn start(root: &Path, profiles: &Path) -> Manager {
        let socket = root.join("manager.sock");
        let stderr = root.join("manager.stderr");
        let mut cmd = Command::new(MANAGER);
        cmd.arg("--socket")
            .arg(&socket)
            .arg("run")
            .arg("--profiles-dir")
            .arg(profiles)
            .arg("--state-dir")
            .arg(root.join("state"))
            .arg("--clsync")
            .arg(BIN)
            .args(["-d", "1"])
            .stdin(Stdio::null())
            .stdout(File::create(root.join("manager.stdout")).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .process_group(0);
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn clsync-manager");
        let mut m = Manager {
            child,
            socket,
            stderr,
        };
        wait_until(Duration::from_secs(30), "the manager to answer", || {
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!("clsync-manager exited: {st:?}\n{}", read_lossy(&m.stderr));
            }
            m.statuses().map(|_| ())
        });
        m
    }

    fn statuses(&self) -> Result<Vec<InstanceStatus>, String> {
        self.status_of_opt(None)
    }

    fn status_of(&self, name: &str) -> Result<Vec<InstanceStatus>, String> {
        self.status_of_opt(Some(name))
    }

    fn status_of_opt(&self, name: Option<&str>) -> Result<Vec<InstanceStatus>, String> {
        let req = Request {
            cmd: "status".into(),
            name: name.map(str::to_string),
            lines: None,
            keep: None,
        };
        let resp = protocol::call(&self.socket, &req, Duration::from_secs(10))?;
        if !resp.ok {
            return Err(resp.error.unwrap_or_default());
        }
        serde_json::from_value(resp.data.unwrap_or_default()).map_err(|e| e.to_string())
    }

    fn instance(&self, name: &str) -> Result<Option<InstanceStatus>, String> {
        Ok(self.statuses()?.into_iter().find(|s| s.name == name))
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = Pid::from_raw(self.child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = self.child.try_wait() {
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            let log = read_lossy(&self.stderr);
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("cmd: \"status\""))
                .collect();
            eprintln!(
                "--- clsync-manager stderr (without the status requests):\n{}\n--- end",
                lines.join("\n")
            );
        }
    }
}

/// A busybox container in its own lxcpath; stopped and destroyed on drop.
struct Container {
    lxcpath: PathBuf,
    name: String,
    dir: PathBuf,
    log: PathBuf,
}

impl Container {
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.arg("-P").arg(&self.lxcpath).arg("-n").arg(&self.name);
        c
    }

    fn rootfs(&self) -> PathBuf {
        self.lxcpath.join(&self.name).join("rootfs")
    }

    /// `sh -c SCRIPT` inside the container.
    #[track_caller]
    fn sh(&self, script: &str) {
        let mut c = self.cmd("lxc-attach");
        c.args(["--", "/bin/sh", "-c", script]);
        let ran = run_cmd(&self.dir, "lxc-attach", &mut c, Duration::from_secs(60));
        assert!(
            ran.status.success(),
            "lxc-attach {script:?}: {}",
            ran.describe()
        );
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let quiet = |mut c: Command| {
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        let mut stop = Command::new("timeout");
        stop.args(["60", "lxc-stop", "-k", "-P"])
            .arg(&self.lxcpath)
            .arg("-n")
            .arg(&self.name);
        quiet(stop);
        let mut destroy = Command::new("timeout");
        destroy
            .args(["60", "lxc-destroy", "-f", "-P"])
            .arg(&self.lxcpath)
            .arg("-n")
            .arg(&self.name);
        quiet(destroy);
        if std::thread::panicking() {
            let log = read_lossy(&self.log);
            let errors: Vec<&str> = log
                .lines()
                .filter(|l| {
                    ["ERROR", "WARN", "hook", "Script", "script"]
                        .iter()
                        .any(|w| l.contains(w))
                })
                .collect();
            eprintln!(
                "--- lxc log {} (errors, warnings, hooks):\n{}\n--- end",
                self.log.display(),
                errors.join("\n")
            );
        }
    }
}

fn have(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            fs::metadata(d.join(prog))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

#[test]
fn container_start_and_stop_drive_its_instance() {
    if std::env::var_os("CLSYNC_TEST_LXC").is_none_or(|v| v != "1") {
        return skip("set CLSYNC_TEST_LXC=1 to run the LXC test (needs lxc, busybox-static, root)");
    }
    for prog in [
        "lxc-create",
        "lxc-start",
        "lxc-attach",
        "lxc-stop",
        "lxc-destroy",
        "lxc-wait",
        "busybox",
        "rsync",
    ] {
        assert!(
            have(prog),
            "{prog} is not installed (apt-get install lxc busybox-static rsync)"
        );
    }
    let t = TestDir::new("lxc");
    let logger = FakeLogger::new(&t.root);
    let lxcpath = t.root.join("lxc");
    mkdir(&lxcpath);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("clsync-t{}-{nanos:x}", std::process::id());
    // The hooks name the instance PROFILE-LABEL; the manager lists it as PROFILE@LABEL.
    let instance = format!("lxc-{name}");
    let listed = format!("lxc@{name}");
    let mirror = t.dst.join(&name);

    // The template profile: the container's /srv, big files wait an hour.
    let profiles = t.root.join("profiles");
    mkdir(&profiles);
    let run = t.root.join("run");
    mkdir(&run);
    write(
        &profiles.join("lxc.toml"),
        format!(
            r#"watch-dir = "{lxc}/%label%/rootfs/srv"
destination-dir = "{dst}/%label%"
mode = "rsyncdirect"
delay-collect = "0.5s"
delay-sync = "0.5s"
threshold-bigfile = "16KiB"
delay-collect-bigfile = "1h"
lists-dir = "{run}/%label%"
status-file = "{run}/lxc-%label%.status"
stop-timeout = "60s"
index-dir = "{index}"
"#,
            index = t.root.join("index").display(),
            lxc = lxcpath.display(),
            dst = t.dst.display(),
            run = run.display(),
        )
        .as_bytes(),
    );
    let manager = Manager::start(&t.root, &profiles);

    // The container, with the snippet of contrib/lxc pointing at the source tree's hooks.
    let base = t.root.join("base.conf");
    write(
        &base,
        b"lxc.net.0.type = empty\nlxc.apparmor.profile = unconfined\n",
    );
    let snippet = fs::read_to_string(contrib().join("clsync.conf")).unwrap();
    let installed = "/usr/share/clsync/lxc/";
    let hook_lines = snippet
        .lines()
        .filter(|l| l.starts_with("lxc.hook.") && l.contains(installed))
        .count();
    assert_eq!(hook_lines, 2, "{snippet}");
    let snippet = snippet.replace(installed, &format!("{}/", contrib().display()));
    let snippet_file = t.root.join("clsync.conf");
    write(&snippet_file, snippet.as_bytes());

    let ct = Container {
        lxcpath: lxcpath.clone(),
        name: name.clone(),
        dir: t.root.clone(),
        log: t.root.join("lxc.log"),
    };
    let mut create = ct.cmd("lxc-create");
    create.arg("-f").arg(&base).args(["-t", "busybox"]);
    let ran = run_cmd(&t.root, "lxc-create", &mut create, Duration::from_secs(120));
    assert!(ran.status.success(), "lxc-create: {}", ran.describe());
    append(
        &lxcpath.join(&name).join("config"),
        format!("lxc.include = {}\n", snippet_file.display()).as_bytes(),
    );
    mkdir(&ct.rootfs().join("srv"));
    mkdir(&mirror);

    // Start: the hook starts the instance in the background.
    let mut start = ct.cmd("lxc-start");
    start
        .args(["-l", "DEBUG", "-o"])
        .arg(&ct.log)
        .env("CLSYNC_MANAGER", MANAGER)
        .env("CLSYNC_MANAGER_SOCKET", &manager.socket)
        .env("CLSYNC_LXC_STOP_TIMEOUT", "120")
        .env("PATH", logger.path())
        .env_remove("CLSYNC_LXC_PROFILE");
    let ran = run_cmd(&t.root, "lxc-start", &mut start, Duration::from_secs(60));
    assert!(ran.status.success(), "lxc-start: {}", ran.describe());
    let mut wait = ct.cmd("lxc-wait");
    wait.args(["-s", "RUNNING", "-t", "30"]);
    let ran = run_cmd(&t.root, "lxc-wait", &mut wait, Duration::from_secs(60));
    assert!(ran.status.success(), "lxc-wait RUNNING: {}", ran.describe());
    let mut worker_pid = None;
    wait_until(
        Duration::from_secs(30),
        &format!("{listed} running"),
        || match manager.instance(&listed)? {
            Some(s) if s.state == "running" => {
                worker_pid = s.pid;
                Ok(())
            }
            other => Err(format!("status: {other:?}\nsyslog:\n{}", logger.text())),
        },
    );
    let worker_pid = worker_pid.expect("a running instance has a pid");
    // `status lxc-NAME` (the hooks' name) finds the same instance.
    let one = manager.status_of(&instance).expect("status lxc-NAME");
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0].name, listed);

    // Live: a small file written in the container reaches the mirror.
    ct.sh("echo hi > /srv/file");
    wait_until(SYNC_TIMEOUT, "/srv/file in the mirror", || {
        match fs::read(mirror.join("file")) {
            Ok(b) if b == b"hi\n" => Ok(()),
            r => Err(format!("{r:?}")),
        }
    });

    // A big file waits an hour in its queue: a later small file gets through, it does not.
    ct.sh("head -c 65536 /dev/zero > /big.tmp && mv /big.tmp /srv/big && echo m > /srv/marker");
    wait_until(
        SYNC_TIMEOUT,
        "/srv/marker in the mirror",
        || match fs::read(mirror.join("marker")) {
            Ok(b) if b == b"m\n" => Ok(()),
            r => Err(format!("{r:?}")),
        },
    );
    wait_until(
        SYNC_TIMEOUT,
        "the big file to be reported queued",
        || match manager.instance(&listed)? {
            Some(s) if s.queued.unwrap_or(0) >= 1 => Ok(()),
            other => Err(format!("status: {other:?}")),
        },
    );
    assert!(
        !exists_nofollow(&mirror.join("big")),
        "the big file should wait for its hour-long collect delay"
    );

    // Stop right after a last (big) write: the post-stop hook's `stop` makes the final
    // sync, which carries everything queued, the big files too.
    ct.sh("head -c 40000 /dev/zero > /last.tmp && mv /last.tmp /srv/last");
    let mut stop = ct.cmd("lxc-stop");
    stop.args(["-t", "30"]);
    let ran = run_cmd(&t.root, "lxc-stop", &mut stop, Duration::from_secs(120));
    assert!(ran.status.success(), "lxc-stop: {}", ran.describe());
    // LXC runs post-stop before the container counts as STOPPED, so lxc-stop returns
    // once the hook's `stop` has been answered: after the final sync.
    let syslog = logger.text();
    assert!(
        syslog.contains(&format!("post-stop: container {name}: final sync done")),
        "lxc-stop returned before the post-stop hook was done:\n{syslog}"
    );
    // The hook's stop returned: the worker is gone, and so is the instance.
    let left = manager.instance(&listed).expect("status");
    assert!(
        left.is_none(),
        "{listed} still listed after its stop: {left:?}"
    );
    assert!(
        kill(Pid::from_raw(worker_pid), None).is_err(),
        "worker pid {worker_pid} still alive after the stop"
    );
    for (file, len) in [("big", 65536), ("last", 40000)] {
        assert_eq!(
            fs::metadata(mirror.join(file)).map(|m| m.len()).ok(),
            Some(len),
            "/srv/{file}, a big file, should have been carried by the final sync"
        );
    }
    assert_synced_now(
        &ct.rootfs().join("srv"),
        &mirror,
        "after the container stopped",
    );
    let syslog = logger.text();
    assert!(
        syslog.contains(&format!("start-host: container {name}: {listed}: starting")),
        "{syslog}"
    );
    assert!(
        !syslog.contains("daemon.err"),
        "a hook logged an error:\n{syslog}"
    );
    drop(ct);
    drop(manager);
}
