//! A real sshd on a loopback port for the tests, with a generated host key and a client
//! key; the "remote" destination is a local directory served by it, so the tests can
//! look at it directly.

use super::*;

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    child: Option<Child>,
    pub dir: PathBuf,
    pub addr: String,
    pub port: u16,
    pub key: PathBuf,
    config: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Sshd {
    /// Starts sshd (as root; it logs in as root with the generated key only) on a free
    /// loopback port and waits until it accepts connections.
    pub fn start(dir: &Path) -> Sshd {
        Sshd::start_at(dir, "127.0.0.1", free_port(), None)
    }

    /// A second daemon on another loopback address, with the same port and client key
    /// as `first` (the worker's ssh options apply to every ssh destination).
    pub fn start_like(dir: &Path, first: &Sshd, addr: &str) -> Sshd {
        Sshd::start_at(dir, addr, first.port, Some(&first.key))
    }

    fn start_at(dir: &Path, addr: &str, port: u16, key: Option<&Path>) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: .ci/run installs openssh-server"
        );
        fs::create_dir_all(dir).unwrap();
        fs::create_dir_all("/run/sshd").unwrap();
        let key = match key {
            Some(k) => k.to_path_buf(),
            None => dir.join("id"),
        };
        let host = dir.join("host_key");
        for k in [&key, &host] {
            if !k.exists() {
                run_ok(
                    Command::new("ssh-keygen")
                        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                        .arg(k),
                );
            }
        }
        let auth = dir.join("authorized_keys");
        let mut public = key.clone().into_os_string();
        public.push(".pub");
        fs::copy(&public, &auth).unwrap();
        let mut s = Sshd {
            child: None,
            dir: dir.to_path_buf(),
            addr: addr.to_string(),
            port,
            key,
            config: dir.join("sshd_config"),
        };
        fs::write(
            &s.config,
            format!(
                "Port {}\nListenAddress {}\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\nPidFile {}\nLogLevel VERBOSE\nMaxStartups 100\nMaxSessions 100\n",
                s.port,
                s.addr,
                host.display(),
                auth.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        s.up();
        s
    }

    /// (Re)starts the daemon on its port.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "sshd is running");
        let log = fs::File::create(self.dir.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let (addr, port) = (self.addr.clone(), self.port);
        wait_until(READY_TIMEOUT, "sshd to listen", || {
            std::net::TcpStream::connect((addr.as_str(), port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    }

    /// Stops the daemon and every session it started (the destination is down).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            let sessions = descendants(pid);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            for p in sessions {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    /// Sessions that ran a command, so far (sshd logs each at `LogLevel VERBOSE`): an
    /// rsync run, a remote `mv`; not the connections, nor `ssh -O` requests.
    pub fn sessions(&self) -> usize {
        fs::read_to_string(self.dir.join("sshd.log"))
            .unwrap_or_default()
            .matches("Starting session: command")
            .count()
    }

    /// `root@127.0.0.1:PATH`
    pub fn dest(&self, path: &Path) -> String {
        format!("root@{}:{}", self.addr, path.display())
    }

    /// The worker's options to reach this sshd.
    pub fn worker_args(&self) -> Vec<OsString> {
        vec![
            "--ssh-identity".into(),
            self.key.clone().into(),
            "--ssh-port".into(),
            self.port.to_string().into(),
            "--ssh-option=-oStrictHostKeyChecking=no".into(),
            "--ssh-option=-oUserKnownHostsFile=/dev/null".into(),
            "--ssh-option=-oLogLevel=ERROR".into(),
            "--ssh-option=-oConnectTimeout=5".into(),
        ]
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.down();
    }
}

/// Every process below `pid` (children, their children, ...).
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent: Vec<(i32, i32)> = Vec::new();
    for p in all_pids() {
        if let Some(pp) = stat_fields(p).and_then(|f| f.get(1)?.parse().ok()) {
            parent.push((p, pp));
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for (c, pp) in &parent {
            if *pp == p && !out.contains(c) {
                out.push(*c);
                todo.push(*c);
            }
        }
    }
    out
}
