//! A `clsync-manager run` for tests outside tests/manager.rs: started on `ROOT/profiles`
//! with its socket and state in ROOT, asked through its own command line or raw request
//! lines, killed (with its workers) on drop.

use super::{processes_mentioning, read_lossy, wait_until, READY_TIMEOUT, SYNC_TIMEOUT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const MGR: &str = env!("CARGO_BIN_EXE_clsync-manager");

pub struct Mgr {
    child: Child,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub profiles: PathBuf,
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
}

/// Exit code and output of one `clsync-manager` command.
pub struct Said {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Mgr {
    /// Starts the manager on `root/profiles` (which may hold profiles already) and waits
    /// until it answers.
    pub fn start(root: &Path) -> Mgr {
        Mgr::start_with(root, &MgrOpts::default())
    }

    /// [`Mgr::start`] with `opts`.
    pub fn start_with(root: &Path, opts: &MgrOpts) -> Mgr {
        let profiles = root.join("profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        let socket = root.join("manager.sock");
        let mut cmd = Command::new(MGR);
        cmd.args(["run", "--profiles-dir"])
            .arg(&profiles)
            .arg("--state-dir")
            .arg(root.join("state"))
            .arg("--socket")
            .arg(&socket)
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
        };
        wait_until(READY_TIMEOUT, "the manager to answer", || {
            let o = m.cli(&["status"]);
            (o.code == Some(0)).then_some(()).ok_or(o.stderr)
        });
        m
    }

    pub fn log(&self) -> String {
        read_lossy(&self.root.join("manager.stderr"))
    }

    pub fn cli(&self, args: &[&str]) -> Said {
        let o = Command::new(MGR)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Said {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
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

    /// `status --json`, parsed.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let o = self.cli(&["status", "--json"]);
        serde_json::from_str::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
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
        let me = self.profiles.to_string_lossy().into_owned();
        for (pid, _) in processes_mentioning(me.as_bytes()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
