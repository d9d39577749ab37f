/*!
The peer's side of a pair, reached over ssh with nothing of ours installed there: its
tree listed with `find`, its delivered record read and written with a few lines of
`sh`, a conflict directory made there, and rsync in either direction with what the run
moved counted from its itemized output ([`Moved`]). ssh's own failure is told apart
([`CheckError::Unreachable`]): a peer that is down is retried, not an error.
*/

use super::check::{conflict_name, CheckError};
use super::manifest::Manifest;
use crate::delivered::Record;
use std::path::Path;

/// How to reach the peer: its ssh argv (up to and including the host) and path, and
/// rsync's `-e` value.
pub struct Peer<'a> {
    pub ssh: &'a [std::ffi::OsString],
    pub path: &'a [u8],
    pub host: &'a str,
    pub rsync: &'a Path,
    pub rsync_e: &'a std::ffi::OsStr,
}

/// What a pair rsync run moved, from its itemized output (files and other
/// non-directories; directories are not counted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub created: usize,
    pub replaced: usize,
    pub deleted: usize,
}

impl Moved {
    /// Counts `rsync --out-format='%i %n'` lines.
    #[must_use]
    pub fn parse(out: &[u8]) -> Moved {
        let mut m = Moved::default();
        for line in out.split(|&b| b == b'\n') {
            if let Some(rest) = line.strip_prefix(b"*deleting ") {
                if !rest.ends_with(b"/") {
                    m.deleted += 1;
                }
                continue;
            }
            if line.len() < 12 || line[11] != b' ' {
                continue;
            }
            let (what, kind, attrs) = (line[0], line[1], &line[2..11]);
            if kind == b'd' || !matches!(what, b'<' | b'>' | b'c' | b'h') {
                continue;
            }
            if attrs.iter().all(|&b| b == b'+') {
                m.created += 1;
            } else {
                m.replaced += 1;
            }
        }
        m
    }

    /// The versions a backup directory received.
    #[must_use]
    pub fn kept(&self) -> usize {
        self.replaced + self.deleted
    }
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files created, {} replaced, {} deleted",
            self.created, self.replaced, self.deleted
        )
    }
}

impl Peer<'_> {
    /// Runs `script` at the peer. ssh's own failure (exit 255, or no ssh at all) is
    /// [`CheckError::Unreachable`].
    pub(super) fn remote(
        &self,
        script: Vec<u8>,
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, CheckError> {
        use std::io::Write;
        use std::os::unix::ffi::OsStringExt;
        crate::strict::check_program(Path::new(&self.ssh[0]), "ssh command")
            .map_err(CheckError::Failed)?;
        let mut child = std::process::Command::new(&self.ssh[0])
            .args(&self.ssh[1..])
            .arg(std::ffi::OsString::from_vec(script))
            .stdin(if input.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| CheckError::Unreachable(format!("ssh {}: {e}", self.host)))?;
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            let _ = stdin.write_all(data);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| CheckError::Failed(format!("ssh {}: {e}", self.host)))?;
        let why = || {
            format!(
                "ssh {} exited with {} ({})",
                self.host,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        };
        match out.status.code() {
            Some(0) => Ok(out.stdout),
            Some(255) | None => Err(CheckError::Unreachable(why())),
            Some(_) => Err(CheckError::Failed(why())),
        }
    }

    /// The peer's tree, listed with `find` over ssh (a missing directory is empty), and
    /// its root's mtime.
    pub(super) fn list(&self) -> Result<(Manifest, i64), CheckError> {
        let q = crate::dest::sh_quote(self.path);
        let mut script = b"find ".to_vec();
        script.extend_from_slice(&q);
        script.extend_from_slice(b" -maxdepth 0 -printf '%T@' 2>/dev/null; printf '\\0'; find ");
        script.extend_from_slice(&q);
        script.extend_from_slice(b" -mindepth 1 -printf '%y %s %T@ %P\\0' 2>/dev/null; exit 0");
        let out = self.remote(script, None)?;
        let cut = out.iter().position(|&b| b == 0).unwrap_or(out.len());
        // Float casts saturate: a bogus mtime stays bogus, whole seconds.
        #[allow(clippy::cast_possible_truncation)]
        let root = std::str::from_utf8(&out[..cut])
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0, |t| t.floor() as i64);
        let m = Manifest::parse(out.get(cut + 1..).unwrap_or_default())
            .map_err(|e| CheckError::Failed(format!("the peer's listing: {e}")))?;
        Ok((m, root))
    }

    /// The peer's record of this pair (empty when it has none).
    pub(super) fn record(&self, dir: &Path) -> Result<Record, CheckError> {
        use std::os::unix::ffi::OsStrExt;
        let mut script = b"d=".to_vec();
        script.extend_from_slice(&crate::dest::sh_quote(dir.as_os_str().as_bytes()));
        script.extend_from_slice(
            b"; for f in manifest journal; do if [ -f \"$d/$f\" ]; then s=$(wc -c < \"$d/$f\"); echo $s; head -c $s \"$d/$f\"; else echo -; fi; done",
        );
        let out = self.remote(script, None)?;
        let bad = |why: &str| CheckError::Failed(format!("the peer's record: {why}"));
        let mut rest = &out[..];
        let mut parts: Vec<&[u8]> = Vec::new();
        for _ in 0..2 {
            let nl = rest.iter().position(|&b| b == b'\n').ok_or(bad("cut"))?;
            let head = std::str::from_utf8(&rest[..nl]).map_err(|_| bad("bad size"))?;
            rest = &rest[nl + 1..];
            if head == "-" {
                parts.push(&[]);
                continue;
            }
            let n: usize = head.trim().parse().map_err(|_| bad("bad size"))?;
            if rest.len() < n {
                return Err(bad("cut"));
            }
            parts.push(&rest[..n]);
            rest = &rest[n..];
        }
        Record::parse(parts[0], parts[1])
            .map(|(r, _)| r)
            .map_err(|e| bad(&e))
    }

    /// Makes a new conflict directory below `parent` at the peer.
    pub(super) fn conflict_dir(&self, parent: &Path) -> Result<std::path::PathBuf, String> {
        use std::os::unix::ffi::OsStrExt;
        let name = conflict_name(std::time::SystemTime::now());
        let mut script = b"cd ".to_vec();
        // mkdir -p first: cd into the parent, then mkdir each candidate (fails if taken).
        let q = crate::dest::sh_quote(parent.as_os_str().as_bytes());
        let mut pre = b"umask 077; mkdir -p ".to_vec();
        pre.extend_from_slice(&q);
        pre.extend_from_slice(b" && ");
        pre.extend_from_slice(&script);
        script = pre;
        script.extend_from_slice(&q);
        script.extend_from_slice(
            format!(" && for n in '' .2 .3 .4 .5 .6 .7 .8 .9; do mkdir \"{name}$n\" 2>/dev/null && {{ echo \"{name}$n\"; exit 0; }}; done; exit 1").as_bytes(),
        );
        let out = self
            .remote(script, None)
            .map_err(|e| format!("a conflict directory at the peer: {e:?}"))?;
        let got = String::from_utf8_lossy(&out).trim().to_string();
        Ok(parent.join(got))
    }

    fn remote_arg(&self) -> std::ffi::OsString {
        use std::os::unix::ffi::OsStringExt;
        let mut v = self.host.as_bytes().to_vec();
        v.push(b':');
        v.extend_from_slice(self.path);
        v.push(b'/');
        std::ffi::OsString::from_vec(v)
    }

    /// rsync between here and the peer; `backup`: where the replaced and deleted files
    /// of the receiving side go; `exclude`: a `--from0` list of paths no side may touch.
    pub(super) fn rsync(
        &self,
        pull: bool,
        src: &Path,
        backup: Option<&Path>,
        exclude: Option<&Path>,
    ) -> Result<Moved, String> {
        crate::strict::check_program(self.rsync, "rsync")?;
        let mut cmd = std::process::Command::new(self.rsync);
        cmd.args(["-aH", "--delete", "--out-format=%i %n", "-e"])
            .arg(self.rsync_e);
        if let Some(b) = backup {
            let mut a = std::ffi::OsString::from("--backup-dir=");
            a.push(b);
            cmd.arg("--backup").arg(a);
        }
        if let Some(x) = exclude {
            let mut a = std::ffi::OsString::from("--exclude-from=");
            a.push(x);
            cmd.arg("--from0").arg(a);
        }
        let mut local = src.as_os_str().to_os_string();
        local.push("/");
        if pull {
            cmd.arg(self.remote_arg()).arg(local);
        } else {
            cmd.arg(local).arg(self.remote_arg());
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("{}: {e}", self.rsync.display()))?;
        if matches!(out.status.code(), Some(0 | 24)) {
            Ok(Moved::parse(&out.stdout))
        } else {
            Err(format!(
                "rsync {} the peer failed: {}",
                if pull { "from" } else { "to" },
                out.status
            ))
        }
    }

    /// Writes `rec` as the peer's record (the same steps as here: temporary file, sync,
    /// rename; its journal, of an older agreement, is emptied).
    pub(super) fn put_record(&self, dir: &Path, rec: &Record) -> Result<(), String> {
        use std::os::unix::ffi::OsStrExt;
        let mut script = b"set -e; umask 077; d=".to_vec();
        script.extend_from_slice(&crate::dest::sh_quote(dir.as_os_str().as_bytes()));
        script.extend_from_slice(
            format!(
                "; mkdir -p \"$d\"; cat > \"$d/.manifest.tmp\"; sync \"$d/.manifest.tmp\" 2>/dev/null || sync; mv -f \"$d/.manifest.tmp\" \"$d/manifest\"; echo '{}' > \"$d/.id.tmp\"; mv -f \"$d/.id.tmp\" \"$d/id\"; if [ -f \"$d/journal\" ]; then : > \"$d/journal\"; fi; sync \"$d\" 2>/dev/null || sync",
                rec.version
            )
            .as_bytes(),
        );
        // Version 1: the peer needs type, size and mtime only, and an older peer
        // reads no other.
        self.remote(script, Some(&rec.manifest_bytes_v1()))
            .map(|_| ())
            .map_err(|e| match e {
                CheckError::Unreachable(e) | CheckError::Failed(e) => e,
            })
    }
}
