/*!
Destinations: a local directory, `[user@]host:/path` (rsync over ssh) or
`rsync://[user@]host[:port]/module/path` (an rsync daemon).

The syntax is rsync's own, so a destination means here what it means to rsync: a colon
before the first slash makes it remote (`./a:b` is a local directory named `a:b`),
`host::module/path` is a daemon too.

For ssh destinations every run of rsync and every remote command share one connection
per destination (OpenSSH's ControlMaster, with the control socket in a private
directory of the worker), so a burst of small batches does not pay a handshake each.
The `-e` command is built from the profile's settings, never from file names.
*/

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Where a tree is mirrored to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Local(PathBuf),
    /// `[user@]host:path`
    Ssh {
        /// `[user@]host`
        host: String,
        path: Vec<u8>,
    },
    /// `rsync://...` or `host::module/path`, passed to rsync as given.
    Daemon(OsString),
}

impl Dest {
    /// Reads a destination the way rsync does.
    pub fn parse(s: &OsStr) -> Dest {
        let b = s.as_bytes();
        if b.starts_with(b"rsync://") {
            return Dest::Daemon(s.to_os_string());
        }
        let colon = b.iter().position(|&c| c == b':');
        let slash = b.iter().position(|&c| c == b'/');
        match colon {
            Some(c) if c > 0 && slash.is_none_or(|s| c < s) => {
                if b.get(c + 1) == Some(&b':') {
                    return Dest::Daemon(s.to_os_string());
                }
                Dest::Ssh {
                    host: String::from_utf8_lossy(&b[..c]).into_owned(),
                    path: b[c + 1..].to_vec(),
                }
            }
            _ => Dest::Local(PathBuf::from(s)),
        }
    }

    pub fn is_remote(&self) -> bool {
        !matches!(self, Dest::Local(_))
    }

    /// The destination as rsync's last argument: `DIR/`, `host:path/`, `rsync://…/`.
    pub fn rsync_arg(&self) -> OsString {
        let mut s = match self {
            Dest::Local(p) => p.as_os_str().to_os_string(),
            Dest::Ssh { host, path } => {
                let mut v = host.as_bytes().to_vec();
                v.push(b':');
                v.extend_from_slice(path);
                OsString::from_vec(v)
            }
            Dest::Daemon(s) => s.clone(),
        };
        if !s.as_bytes().ends_with(b"/") {
            s.push("/");
        }
        s
    }

    /// rsync's arguments that reach this destination: `-e` with the shared ssh
    /// connection through `control_dir` (made for ssh destinations), a daemon's
    /// `--password-file=` when one is given; none for a local directory.
    pub fn rsync_args(
        &self,
        ssh: &Ssh,
        control_dir: Option<&Path>,
        password_file: Option<&Path>,
    ) -> Vec<OsString> {
        match self {
            Dest::Ssh { .. } => {
                let dir = control_dir.expect("made for ssh destinations");
                vec!["-e".into(), ssh.rsync_e(dir)]
            }
            Dest::Daemon(_) => password_file
                .map(|f| {
                    let mut a = OsString::from("--password-file=");
                    a.push(f);
                    a
                })
                .into_iter()
                .collect(),
            Dest::Local(_) => Vec::new(),
        }
    }

    /// For messages.
    pub fn show(&self) -> String {
        match self {
            Dest::Local(p) => p.display().to_string(),
            Dest::Ssh { host, path } => format!("{host}:{}", String::from_utf8_lossy(path)),
            Dest::Daemon(s) => s.to_string_lossy().into_owned(),
        }
    }
}

/// How to reach ssh destinations, from the profile's `ssh-*` keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ssh {
    /// The ssh program (default `ssh`).
    pub command: Option<String>,
    pub identity: Option<PathBuf>,
    pub port: Option<u16>,
    /// More `-o Key=Value` options, or any ssh arguments.
    pub options: Vec<String>,
}

impl Ssh {
    /// The ssh argv (program first) with the shared connection through `control_dir`,
    /// without a host: the base of [`argv_to`](Self::argv_to) and [`rsync_e`](Self::rsync_e).
    fn argv(&self, control_dir: &Path) -> Vec<OsString> {
        let mut v: Vec<OsString> =
            vec![self.command.clone().unwrap_or_else(|| "ssh".into()).into()];
        if let Some(p) = self.port {
            v.push("-p".into());
            v.push(p.to_string().into());
        }
        if let Some(i) = &self.identity {
            v.push("-i".into());
            v.push(i.clone().into());
        }
        // ssh takes the first value given for an option: the user's come first.
        v.extend(self.options.iter().map(OsString::from));
        let mut cp = OsString::from("ControlPath=");
        cp.push(control_dir.join("%C"));
        for o in [
            OsString::from("BatchMode=yes"),
            "ControlMaster=auto".into(),
            cp,
            "ControlPersist=60".into(),
            // A host that is down fails a sync in seconds, not after TCP's minutes.
            "ConnectTimeout=15".into(),
            "ServerAliveInterval=15".into(),
            "ServerAliveCountMax=4".into(),
        ] {
            v.push("-o".into());
            v.push(o);
        }
        v
    }

    /// The ssh argv that runs a command on `host` through the shared connection: the
    /// settings' argv, `--` (so no host is taken for an option) and the host; the remote
    /// command's words come after it. Every ssh run to a destination is built here.
    pub fn argv_to(&self, control_dir: &Path, host: &str) -> Vec<OsString> {
        self.argv_with(control_dir, &[], host)
    }

    /// `ssh -O exit` to `host`: ends the shared connection (its master would linger).
    pub fn exit_argv(&self, control_dir: &Path, host: &str) -> Vec<OsString> {
        self.argv_with(control_dir, &["-O", "exit"], host)
    }

    fn argv_with(&self, control_dir: &Path, opts: &[&str], host: &str) -> Vec<OsString> {
        let mut v = self.argv(control_dir);
        v.extend(opts.iter().map(OsString::from));
        v.push("--".into());
        v.push(host.into());
        v
    }

    /// rsync's `-e` value: the argv above as one string, each word quoted for rsync's
    /// own splitting (it honours double quotes).
    pub fn rsync_e(&self, control_dir: &Path) -> OsString {
        let mut out = Vec::new();
        for (i, w) in self.argv(control_dir).iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            let w = w.as_bytes();
            if w.iter()
                .any(|&c| c == b' ' || c == b'\t' || c == b'"' || c == b'\'')
            {
                out.push(b'"');
                for &c in w {
                    if c == b'"' || c == b'\\' {
                        out.push(b'\\');
                    }
                    out.push(c);
                }
                out.push(b'"');
            } else {
                out.extend_from_slice(w);
            }
        }
        OsString::from_vec(out)
    }
}

/// Quotes `s` for a POSIX shell (the remote side of ssh runs one): `'…'`, with `'` as
/// `'\''`. Any byte but NUL passes through.
pub fn sh_quote(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &c in s {
        if c == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(c);
        }
    }
    out.push(b'\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Dest {
        Dest::parse(OsStr::new(s))
    }

    #[test]
    fn destinations_read_as_rsync_reads_them() {
        assert_eq!(p("/srv/x"), Dest::Local("/srv/x".into()));
        assert_eq!(p("./a:b"), Dest::Local("./a:b".into()));
        assert_eq!(
            p("root@node-b:/srv/lxc/web01"),
            Dest::Ssh {
                host: "root@node-b".into(),
                path: b"/srv/lxc/web01".to_vec()
            }
        );
        assert_eq!(
            p("rsync://backup@nas:8873/mod/x"),
            Dest::Daemon("rsync://backup@nas:8873/mod/x".into())
        );
        assert_eq!(p("nas::mod/x"), Dest::Daemon("nas::mod/x".into()));
        assert!(p("h:/x").is_remote());
        assert_eq!(p("h:/x").rsync_arg(), "h:/x/");
        assert_eq!(p("/x/").rsync_arg(), "/x/");
    }

    #[test]
    fn ssh_command_and_quoting() {
        let s = Ssh {
            port: Some(2222),
            identity: Some("/root/my key".into()),
            ..Ssh::default()
        };
        let e = s.rsync_e(Path::new("/tmp/c"));
        let e = e.to_string_lossy();
        assert!(
            e.starts_with("ssh -p 2222 -i \"/root/my key\" -o BatchMode=yes"),
            "{e}"
        );
        assert!(e.contains("ControlPath=/tmp/c/%C"), "{e}");
        assert_eq!(sh_quote(b"it's"), b"'it'\\''s'".to_vec());
    }

    #[test]
    fn rsync_args_reach_each_kind_of_destination() {
        let ssh = Ssh::default();
        let dir = Path::new("/tmp/c");
        let pw = Some(Path::new("/etc/pw"));
        assert_eq!(
            p("h:/x").rsync_args(&ssh, Some(dir), pw),
            vec![OsString::from("-e"), ssh.rsync_e(dir)]
        );
        assert_eq!(
            p("rsync://h/m").rsync_args(&ssh, None, pw),
            vec![OsString::from("--password-file=/etc/pw")]
        );
        assert!(p("rsync://h/m").rsync_args(&ssh, None, None).is_empty());
        assert!(p("/x").rsync_args(&ssh, Some(dir), pw).is_empty());
    }

    #[test]
    fn ssh_argv_to_a_host_ends_with_the_host_after_the_options() {
        let s = Ssh {
            port: Some(2222),
            ..Ssh::default()
        };
        let dir = Path::new("/tmp/c");
        let mut want = s.argv(dir);
        want.extend(["--".into(), "-oProxyCommand=x".into()]);
        assert_eq!(s.argv_to(dir, "-oProxyCommand=x"), want);
        let mut want = s.argv(dir);
        want.extend(["-O", "exit", "--", "root@b"].map(OsString::from));
        assert_eq!(s.exit_argv(dir, "root@b"), want);
    }
}
