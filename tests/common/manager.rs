//! The one `clsync-manager run` harness of the tests: started on `ROOT/profiles` with its
//! socket and state in ROOT (and extra options of `run` if given), asked through its own
//! command line or raw request lines, killed (with its workers) on drop.

use super::{
    processes_mentioning, read_lossy, wait_until, write, READY_TIMEOUT, STOP_TIMEOUT, SYNC_TIMEOUT,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

pub const MGR: &str = env!("CARGO_BIN_EXE_clsync-manager");

pub struct Mgr {
    pub child: Child,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub profiles: PathBuf,
    pub state: PathBuf,
}

/// How to start a manager other than by default.
#[derive(Default)]
pub struct MgrOpts<'a> {
    /// Extra environment.
    pub env: &'a [(&'a str, &'a str)],
    /// `RLIMIT_NOFILE` (soft and hard) of the manager.
    pub nofile: Option<u64>,
    /// `--clsync`: the worker binary.
    pub clsync: Option<&'a Path>,
    /// More options of `clsync-manager run`.
    pub extra: &'a [&'a str],
}

/// Exit code and output of one `clsync-manager` command.
pub struct Said {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Said {
    fn of(o: std::process::Output) -> Said {
        Said {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Mgr {
    /// Starts the manager on `root/profiles` (which may hold profiles already) and waits
    /// until it answers.
    pub fn start(root: &Path) -> Mgr {
        Mgr::start_opts(root, &MgrOpts::default())
    }

    /// [`start`](Self::start) with `extra` options of `clsync-manager run`.
    pub fn start_with(root: &Path, extra: &[&str]) -> Mgr {
        Mgr::start_opts(
            root,
            &MgrOpts {
                extra,
                ..MgrOpts::default()
            },
        )
    }

    /// [`start`](Self::start) with `opts`.
    pub fn start_opts(root: &Path, opts: &MgrOpts) -> Mgr {
        let profiles = root.join("profiles");
        let state = root.join("state");
        std::fs::create_dir_all(&profiles).unwrap();
        let socket = root.join("manager.sock");
        let mut cmd = Command::new(MGR);
        cmd.args(["run", "--profiles-dir"])
            .arg(&profiles)
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(&socket)
            .args(opts.extra)
            .envs(opts.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(root.join("manager.stdout")).unwrap())
            .stderr(std::fs::File::create(root.join("manager.stderr")).unwrap());
        if let Some(c) = opts.clsync {
            cmd.arg("--clsync").arg(c);
        }
        if let Some(n) = opts.nofile {
            // SAFETY: setrlimit only, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd.spawn().unwrap();
        let m = Mgr {
            child,
            root: root.to_path_buf(),
            socket,
            profiles,
            state,
        };
        wait_until(READY_TIMEOUT, "the manager to answer", || {
            let o = m.cli(&["status"]);
            (o.code == Some(0)).then_some(()).ok_or(o.stderr)
        });
        m
    }

    /// The manager's stderr (its log).
    pub fn log(&self) -> String {
        read_lossy(&self.root.join("manager.stderr"))
    }

    pub fn cli(&self, args: &[&str]) -> Said {
        Said::of(
            Command::new(MGR)
                .arg("--socket")
                .arg(&self.socket)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    }

    /// `clsync-manager --socket S ARGS` as uid/gid 65534 (`setpriv`).
    pub fn cli_as_nobody(&self, args: &[&str]) -> Said {
        Said::of(
            Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    MGR,
                    "--socket",
                ])
                .arg(&self.socket)
                .args(args)
                .output()
                .expect("setpriv (util-linux)"),
        )
    }

    /// `cli(args)`, which must exit 0; its stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert_eq!(
            o.code,
            Some(0),
            "clsync-manager {args:?}: {}\nmanager log:\n{}",
            o.stderr,
            self.log()
        );
        o.stdout
    }

    /// Sends one raw request line; returns the response line ("" if none came).
    pub fn raw(&self, line: &[u8]) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(SYNC_TIMEOUT)).unwrap();
        let _ = s.write_all(line);
        let mut resp = String::new();
        let _ = BufReader::new(s).read_line(&mut resp);
        resp
    }

    /// Sends one raw request line, which must be sent whole and answered by a JSON
    /// object; that object.
    #[track_caller]
    pub fn request(&self, line: &[u8]) -> Value {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(SYNC_TIMEOUT)).unwrap();
        s.write_all(line).unwrap();
        let mut resp = String::new();
        BufReader::new(s).read_line(&mut resp).unwrap();
        serde_json::from_str(&resp).unwrap_or_else(|e| panic!("{resp:?}: {e}"))
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> Vec<Value> {
        let o = self.cli(&["status", "--json"]);
        serde_json::from_str::<Value>(&o.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// The status of instance `name`, if listed.
    pub fn instance(&self, name: &str) -> Option<Value> {
        self.status().into_iter().find(|i| i["name"] == name)
    }

    /// Waits (deadline `SYNC_TIMEOUT`) for instance `name` to be in `state`; its status.
    #[track_caller]
    pub fn wait_state(&self, name: &str, state: &str) -> Value {
        let mut last = None;
        wait_until(SYNC_TIMEOUT, &format!("{name} to be {state}"), || {
            last = self.instance(name);
            match &last {
                Some(i) if i["state"] == state => Ok(()),
                other => Err(format!("{other:?}\nmanager log:\n{}", self.log())),
            }
        });
        last.unwrap()
    }

    /// Writes `profiles/NAME.toml`, with the test's own index directory
    /// ([`super::profiles::with_own_index`]).
    pub fn profile(&self, name: &str, text: &str) {
        let text = super::profiles::with_own_index(&self.root, text);
        write(&self.profiles.join(format!("{name}.toml")), text.as_bytes());
    }

    /// Sends `sig` to the manager.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// SIGTERM, and waits (deadline `STOP_TIMEOUT`) for the manager to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let mut st = None;
        wait_until(STOP_TIMEOUT, "the manager to exit", || {
            st = self.child.try_wait().unwrap();
            st.map(|_| ()).ok_or_else(|| self.log())
        });
        st.unwrap()
    }

    /// The manager's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the manager process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Mgr {
    fn drop(&mut self) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
        // Workers get SIGTERM from their parent-death signal; make sure.
        let me = self.profiles.to_string_lossy().into_owned();
        for (pid, _) in processes_mentioning(me.as_bytes()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The `pid` of an instance's status.
#[track_caller]
pub fn pid_of(i: &Value) -> i32 {
    i["pid"].as_i64().unwrap_or_else(|| panic!("no pid: {i}")) as i32
}

/// No live process (zombies waiting for a reaper aside) is left in group `pgid`.
pub fn group_gone(pgid: i32) -> Result<(), String> {
    let mut live = Vec::new();
    for pid in super::all_pids() {
        // state ppid pgrp ...
        let Some(f) = super::stat_fields(pid) else {
            continue;
        };
        if f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z" {
            live.push(format!("{pid} {}", f.join(" ")));
        }
    }
    if live.is_empty() {
        Ok(())
    } else {
        Err(format!("process group {pgid} still has {live:?}"))
    }
}
