/*!
The throwaway systemd-nspawn container the unit and package tests boot: this machine's
root under an overlay whose upper layer is a tmpfs, its mounts and the nspawn process
undone on drop (panic or not), and the small file helpers they write into it with.
*/

use super::*;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Mounts, the container process and the temp dir; undone on drop, panic or not.
pub struct Container {
    pub mounts: Vec<PathBuf>,
    pub child: Option<Child>,
    pub tmp: Option<tempfile::TempDir>,
}

impl Container {
    pub fn mount(&mut self, fstype: &str, source: &str, target: &Path, data: &str) {
        use std::ffi::CString;
        let c = |s: &[u8]| CString::new(s).expect("no NUL");
        let (src, ty, tgt, d) = (
            c(source.as_bytes()),
            c(fstype.as_bytes()),
            c(target.as_os_str().as_bytes()),
            c(data.as_bytes()),
        );
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                tgt.as_ptr(),
                ty.as_ptr(),
                0,
                d.as_ptr() as *const libc::c_void,
            )
        };
        if r != 0 {
            panic!(
                "mount -t {fstype} -o {data} {source} {}: {}",
                target.display(),
                std::io::Error::last_os_error()
            );
        }
        self.mounts.push(target.to_path_buf());
    }

    /// Boots systemd in `root` (`nspawn` is systemd-nspawn) as machine `machine` with
    /// `unit` as its default target, `findings` bound at /clsync-findings, no network,
    /// and the console written to `console`.
    pub fn boot(
        &mut self,
        nspawn: &Path,
        root: &Path,
        findings: &Path,
        machine: &str,
        unit: &str,
        console: &Path,
    ) {
        let console_f = std::fs::File::create(console).expect("console log");
        let mut cmd = std::process::Command::new(nspawn);
        cmd.arg("--quiet")
            .arg("--register=no")
            .arg("--keep-unit")
            .arg("--private-network")
            .arg("--console=pipe")
            .arg(format!("--machine={machine}"))
            .arg("--directory")
            .arg(root)
            .arg(format!("--bind={}:/clsync-findings", findings.display()))
            // systemd-nspawn 252's own system call filter has no landlock_* calls (they
            // would fail with EPERM, and the workers' Landlock show as "none").
            .arg(
                "--system-call-filter=landlock_create_ruleset landlock_add_rule landlock_restrict_self",
            )
            .arg("--boot")
            .arg("--")
            .arg(format!("systemd.unit={unit}"))
            .arg("systemd.log_color=0")
            .stdin(std::process::Stdio::null())
            .stdout(console_f.try_clone().expect("dup"))
            .stderr(console_f);
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", nspawn.display())),
        );
    }

    pub fn stop_child(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SIGTERM makes systemd-nspawn power the container off; then SIGKILL.
        // The child has not been waited for, so its pid (a zombie at worst) cannot have
        // been reused by another process.
        #[allow(clippy::cast_possible_wrap)]
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.stop_child();
        for m in self.mounts.drain(..).rev() {
            let c = std::ffi::CString::new(m.as_os_str().as_bytes()).expect("no NUL");
            // SAFETY: a NUL-terminated path. Lazy, so a busy mount cannot make it fail.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                eprintln!(
                    "umount {}: {}",
                    m.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        // The temp dir (now an empty mount point again) is removed with `tmp`.
        drop(self.tmp.take());
    }
}

pub fn install(path: &Path, data: &[u8], mode: u32) {
    if let Some(d) = path.parent() {
        mkdir_p(d);
    }
    // Replace whatever the host has there (a symlink would be followed by a write).
    let _ = fs::remove_file(path);
    write(path, data);
    chmod(path, mode);
}

/// Hide what this machine has at `path` (a path in the overlay; the host keeps it).
/// Checked: a container that silently kept the host's state would make the test
/// depend on what ran or was installed here before.
pub fn remove_host_state(path: &Path) {
    if path.symlink_metadata().is_ok() {
        remove_dir_all(path);
    }
    assert!(
        path.symlink_metadata().is_err(),
        "{} still exists in the container's overlay after removing it",
        path.display()
    );
}

pub fn symlink_force(target: &str, link: &Path) {
    if let Some(d) = link.parent() {
        mkdir_p(d);
    }
    let _ = fs::remove_file(link);
    symlink(target.as_bytes(), link);
}

/// The last `n` lines of `s` (a container's console, for a failure message).
pub fn tail_lines(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    let start = v.len().saturating_sub(n);
    let mut out = v[start..].join("\n");
    out.push('\n');
    out
}

/// A program in `$PATH` (or the usual sbin directories, which root's PATH may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Waits (up to `timeout`) for the container to power off, then judges what its probe
/// wrote to `findings/findings`: no `FAIL` line, a `PASS NAME:` line for every check in
/// `required`, and `DONE` (the probe ran to its end); then systemd-nspawn's own exit.
/// `show(why)` renders the logs for a failure message. Returns the findings.
pub fn judge(
    c: &mut Container,
    findings: &Path,
    timeout: Duration,
    required: &[&str],
    test: &str,
    show: &dyn Fn(&str) -> String,
) -> String {
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        if let Some(st) = c.child.as_mut().unwrap().try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            c.stop_child();
            panic!(
                "the container did not power off within {timeout:?}\n{}",
                show("timeout")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    c.child = None;
    let text = read_lossy(&findings.join("findings"));
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    let missing: Vec<&&str> = required
        .iter()
        .filter(|r| !text.lines().any(|l| l.starts_with(&format!("PASS {r}:"))))
        .collect();
    let done = text.lines().any(|l| l == "DONE");
    assert!(
        failed.is_empty() && missing.is_empty() && done,
        "{test} test failed: {} FAIL lines, checks without a PASS: {missing:?}, probe finished: {done}; systemd-nspawn {}\n{}",
        failed.len(),
        describe_status(status),
        show("failure")
    );
    assert!(
        status.success(),
        "systemd-nspawn: {} after a complete probe\n{}",
        describe_status(status),
        show("nspawn failed")
    );
    text
}
