//! The confined worker (`--sandbox`): a shell-mode sync handler probes what it may do and
//! writes what it saw into the destination (which it may write); the same handler run
//! without `--sandbox` shows each probe succeeding, so every refusal is the sandbox's. The
//! default rsync mode still mirrors a tree when confined.

use crate::common;

use common::*;
use std::ffi::OsString;
use std::path::Path;

/// Writes the probing handler: outside the destination, /etc/shadow, a mount namespace,
/// a TCP socket; each line `NAME: RESULT` where RESULT is `ok` or the last line of the
/// error printed. The results go to `dst/.probe` (via a temporary name and a rename).
fn probe_handler(t: &TestDir) -> std::path::PathBuf {
    let script = t.root.join("probe.sh");
    let text = format!(
        r#"#!/bin/sh
d='{dst}'
o='{outside}'
try() {{ name=$1; shift; if out=$("$@" 2>&1 >/dev/null); then echo "$name: ok"; else echo "$name: $(echo "$out" | tail -n 1)"; fi; }}
{{
try outside sh -c "echo x > '$o/written'"
try shadow cat /etc/shadow
try unshare unshare -m true
try socket python3 -c 'import socket; socket.socket()'
try mktemp sh -c 'f=$(mktemp) && echo x > "$f" && rm "$f"'
mkdir -p "$d/m"
try mount busybox mount -t tmpfs none "$d/m"
}} > "$d/.probe.tmp"
mv "$d/.probe.tmp" "$d/.probe"
"#,
        dst = t.dst.display(),
        outside = t.outside.display(),
    );
    write(&script, text.as_bytes());
    chmod(&script, 0o755);
    script
}

/// Runs a shell-mode worker with the probing handler (`extra`: `--sandbox` or nothing)
/// and returns the probe's lines once the initial sync ran it.
fn probe(t: &TestDir, extra: &[&str]) -> (String, Worker) {
    let script = probe_handler(t);
    // The status file's directory is writable for a confined worker: keep it apart from
    // the test's `outside`.
    let run = t.root.join("run");
    mkdir(&run);
    let status = run.join("status");
    let mut a: Vec<OsString> = vec![
        "-M".into(),
        "shell".into(),
        "-S".into(),
        script.into(),
        "-W".into(),
        t.src.clone().into(),
        "-D".into(),
        t.dst.clone().into(),
        "-l".into(),
        "probe".into(),
        "-t".into(),
        "0.1".into(),
        "-w".into(),
        "0.1".into(),
        "--status-file".into(),
        status.clone().into(),
    ];
    a.extend(extra.iter().map(OsString::from));
    write(&t.s(b"f"), b"1");
    let w = Worker::start_raw(&run, &t.src, &t.dst, &status, &a);
    let probe = t.d(b".probe");
    wait_until(SYNC_TIMEOUT, "the handler's probe results", || {
        probe
            .exists()
            .then_some(())
            .ok_or_else(|| format!("no {}", probe.display()))
    });
    let text = read_lossy(&probe);
    if line(&text, "mount") == "ok" {
        // Unconfined, the tmpfs landed: take it away again.
        let _ = std::process::Command::new("umount").arg(t.d(b"m")).status();
    }
    (text, w)
}

fn line<'a>(probe: &'a str, name: &str) -> &'a str {
    probe
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} line in the probe:\n{probe}"))
}

/// `NoNewPrivs` and `Seccomp` of a process, from /proc/PID/status (read from outside:
/// the handler itself may not read /proc).
fn proc_flags(pid: i32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let get = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (get("NoNewPrivs:"), get("Seccomp:"))
}

fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip("the sandbox probes compare with what root may do unconfined");
    false
}

#[test]
fn a_sandboxed_handler_cannot_write_outside_read_shadow_or_mount() {
    if !need_root() {
        return;
    }
    let t = TestDir::new("sandbox-probe");
    let (probe, mut w) = probe(&t, &["--sandbox"]);
    assert!(
        line(&probe, "outside").contains("Permission denied"),
        "{probe}"
    );
    assert!(!t.o(b"written").exists(), "the handler wrote outside");
    assert!(
        line(&probe, "shadow").contains("Permission denied"),
        "{probe}"
    );
    assert!(
        line(&probe, "unshare").contains("Operation not permitted"),
        "{probe}"
    );
    // busybox says this for EPERM from mount(2) (and only for EPERM).
    assert!(
        line(&probe, "mount").contains("permission denied (are you root?)"),
        "{probe}"
    );
    assert_eq!(
        proc_flags(w.pid().as_raw()),
        ("1".to_string(), "2".to_string()),
        "the worker (and so all it runs) has no-new-privileges and a seccomp filter"
    );
    // No remote destination: a TCP socket is refused.
    assert!(
        line(&probe, "socket").contains("PermissionError: [Errno 1] Operation not permitted"),
        "{probe}"
    );
    // /tmp is closed, but the handler's TMPDIR is a private directory of its own.
    assert_eq!(line(&probe, "mktemp"), "ok", "{probe}");
    let log = w.stderr();
    assert!(
        log.contains("sandbox: landlock full, seccomp ("),
        "the worker tells what it applied:\n{log}"
    );
    w.stop_ok();
}

/// The control: the same handler, unconfined, does each of these (as root).
#[test]
fn without_sandbox_the_same_handler_writes_outside_reads_shadow_and_mounts() {
    if !need_root() {
        return;
    }
    let t = TestDir::new("sandbox-probe-off");
    let (probe, mut w) = probe(&t, &[]);
    for name in ["outside", "shadow", "unshare", "socket"] {
        assert_eq!(line(&probe, name), "ok", "{name}:\n{probe}");
    }
    assert!(t.o(b"written").exists());
    assert_eq!(line(&probe, "mount"), "ok", "{probe}");
    let (nnp, _) = proc_flags(w.pid().as_raw());
    assert_eq!(nnp, "0");
    w.stop_ok();
}

#[test]
fn a_sandboxed_worker_mirrors_a_tree_with_rsync() {
    let t = TestDir::new("sandbox-mirror");
    mkdir(&t.s(b"a"));
    write(&t.s(b"a/one"), b"1");
    symlink(b"one", &t.s(b"a/link"));
    let run = t.root.join("run");
    mkdir(&run);
    let mut w = Worker::start_in(&run, &t.src, &t.dst, &["--sandbox"]);
    w.wait_synced(SYNC_TIMEOUT);
    mkdir(&t.s(b"a/b"));
    write(&t.s(b"a/b/two"), b"22");
    rename(&t.s(b"a/one"), &t.s(b"a/b/one"));
    write(&t.s(b"x"), b"333");
    w.wait_synced(SYNC_TIMEOUT);
    remove_dir_all(&t.s(b"a/b"));
    w.wait_synced(SYNC_TIMEOUT);
    assert!(Path::new(&t.d(b"x")).exists());
    let log = w.stderr();
    assert!(log.contains("sandbox: landlock"), "{log}");
    w.stop_ok();
}

/// A kernel without Landlock, as the worker sees it: `landlock_create_ruleset` gives
/// ENOSYS (a seccomp filter set in the child before exec). The worker says so in exactly
/// one warning and mirrors with the rest of the sandbox on.
#[test]
fn without_landlock_one_warning_and_the_mirror_works() {
    use std::os::unix::process::CommandExt;
    let t = TestDir::new("sandbox-no-landlock");
    write(&t.s(b"f"), b"1");
    let rules = [(libc::SYS_landlock_create_ruleset, Vec::new())]
        .into_iter()
        .collect();
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::ENOSYS as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let prog: seccompiler::BpfProgram = filter.try_into().unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--sandbox", "--only-initialsync"])
        .arg(&t.src)
        .arg(&t.dst)
        .stdin(std::process::Stdio::null());
    // SAFETY: apply_filter makes two system calls on a program built before the fork.
    unsafe {
        cmd.pre_exec(move || seccompiler::apply_filter(&prog).map_err(std::io::Error::other));
    }
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(std::fs::read(t.d(b"f")).unwrap(), b"1", "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("does not enforce Landlock"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        log.contains("sandbox: landlock none, seccomp ("),
        "the rest still applies:\n{log}"
    );
}

/// The pid file sits in a directory a confined worker may not write: at exit it cannot
/// be removed, so it is emptied (an empty pid file is stale), and the next start takes it
/// over without a word.
#[test]
fn a_sandboxed_worker_empties_its_pid_file_at_exit() {
    let t = TestDir::new("sandbox-pidfile");
    let piddir = t.root.join("piddir");
    mkdir(&piddir);
    let pid = piddir.join("clsync.pid");
    let run = t.root.join("run");
    mkdir(&run);
    let args = [
        OsString::from("--sandbox"),
        "--pid-file".into(),
        pid.clone().into(),
    ];
    let mut w = Worker::start_in(&run, &t.src, &t.dst, &args);
    // Confined: it cannot remove the pid file (its directory is not granted).
    w.assert_sandboxed();
    let text = std::fs::read_to_string(&pid).unwrap();
    assert_eq!(text.trim(), w.pid().to_string());
    w.stop_ok();
    let left = std::fs::read_to_string(&pid).unwrap_or_default();
    assert_eq!(left, "", "no dead pid is left in {}", pid.display());
    let mut again = Worker::start_in(&run, &t.src, &t.dst, &args);
    assert!(!again.stderr().contains("stale"), "{}", again.stderr());
    again.stop_ok();
}

/// Runs a shell-mode worker whose handler runs `body` (shell lines writing to standard
/// output) once, at the initial sync, and returns what it wrote (kept in
/// `dst/.NAME`) with the worker.
fn probe_with(t: &TestDir, name: &str, body: &str, extra: &[OsString]) -> (String, Worker) {
    let script = t.root.join(format!("{name}.sh"));
    let out = t.dst.join(format!(".{name}"));
    let text = format!(
        "#!/bin/sh\n{{\n{body}\n}} > '{out}.tmp'\nmv '{out}.tmp' '{out}'\n",
        out = out.display()
    );
    write(&script, text.as_bytes());
    chmod(&script, 0o755);
    // Made beforehand by a test whose worker drops to another user.
    let run = t.root.join("run");
    mkdir_p(&run);
    let status = run.join("status");
    let mut a: Vec<OsString> = vec![
        "-M".into(),
        "shell".into(),
        "-S".into(),
        script.into(),
        "-W".into(),
        t.src.clone().into(),
        "-D".into(),
        t.dst.clone().into(),
        "-l".into(),
        name.into(),
        "-t".into(),
        "0.1".into(),
        "-w".into(),
        "0.1".into(),
        "--status-file".into(),
        status.clone().into(),
    ];
    a.extend(extra.iter().cloned());
    write(&t.s(b"f"), b"1");
    let w = Worker::start_raw(&run, &t.src, &t.dst, &status, &a);
    wait_until(SYNC_TIMEOUT, "the handler's probe results", || {
        out.exists()
            .then_some(())
            .ok_or_else(|| format!("no {}", out.display()))
    });
    (read_lossy(&out), w)
}

/// A capability set from /proc status text (`CapBnd` …) as a mask.
fn cap_mask(status: &str, set: &str) -> u64 {
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:")))
        .unwrap_or_else(|| panic!("no {set} in:\n{status}"));
    u64::from_str_radix(v.trim(), 16).unwrap()
}

/// Capability numbers (linux/capability.h).
const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_FOWNER: u32 = 3;
const CAP_SETPCAP: u32 = 8;
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_RAWIO: u32 = 17;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_BOOT: u32 = 22;
const CAP_SYS_TIME: u32 = 25;
const CAP_BPF: u32 = 39;

fn has(mask: u64, cap: u32) -> bool {
    mask & (1 << cap) != 0
}

/// The handler's capability sets, its namespaces and what x32 calls and clone3 give
/// (python3 ctypes: `syscall(0x40000000 | getpid)`, `clone3(NULL, 0)`), and a TCP
/// connection to `port` on 127.0.0.1. `/proc` is granted (`--sandbox-read /proc`) so the
/// handler can read its own status.
fn caps_body(port: u16) -> String {
    format!(
        r#"grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status
echo "net: $(readlink /proc/self/ns/net)"
echo "ipc: $(readlink /proc/self/ns/ipc)"
echo "uts: $(readlink /proc/self/ns/uts)"
python3 -c '
import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *a):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    return "ok" if r != -1 else errno.errorcode[ctypes.get_errno()]
print("x32:", call(0x40000000 | 39))
print("clone3:", call(435, 0, 0))
try:
    s = socket.create_connection(("127.0.0.1", {port}), timeout=5)
    print("connect: ok")
except OSError as e:
    print("connect:", errno.errorcode.get(e.errno, e))
' 2>&1"#
    )
}

fn ns_of_test(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

/// A confined handler (shell mode: a handler of the site's, so CAP_SYS_ADMIN stays) runs
/// with the bounding set cut: no CAP_SYS_MODULE, NET_ADMIN, SYS_PTRACE, SETPCAP…, the
/// ownership ones kept, nothing inheritable or ambient; in private network, IPC and UTS
/// namespaces (every destination is local), where 127.0.0.1 cannot be reached; and an
/// x32 call and clone3 give ENOSYS.
#[test]
fn a_sandboxed_handler_has_a_cut_bounding_set_and_private_namespaces() {
    if !need_root() {
        return;
    }
    let t = TestDir::new("sandbox-caps");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let extra: Vec<OsString> = vec!["--sandbox".into(), "--sandbox-read".into(), "/proc".into()];
    let (probe, mut w) = probe_with(&t, "caps", &caps_body(port), &extra);
    let bnd = cap_mask(&probe, "CapBnd");
    for (name, cap) in [
        ("CAP_SYS_MODULE", CAP_SYS_MODULE),
        ("CAP_NET_ADMIN", CAP_NET_ADMIN),
        ("CAP_NET_RAW", CAP_NET_RAW),
        ("CAP_SYS_PTRACE", CAP_SYS_PTRACE),
        ("CAP_SYS_RAWIO", CAP_SYS_RAWIO),
        ("CAP_SYS_BOOT", CAP_SYS_BOOT),
        ("CAP_SYS_TIME", CAP_SYS_TIME),
        ("CAP_BPF", CAP_BPF),
        ("CAP_SETPCAP", CAP_SETPCAP),
    ] {
        assert!(
            !has(bnd, cap),
            "{name} is still in the bounding set:\n{probe}"
        );
    }
    for (name, cap) in [
        ("CAP_CHOWN", CAP_CHOWN),
        ("CAP_DAC_OVERRIDE", CAP_DAC_OVERRIDE),
        ("CAP_DAC_READ_SEARCH", CAP_DAC_READ_SEARCH),
        ("CAP_FOWNER", CAP_FOWNER),
        ("CAP_SYS_ADMIN (shell mode)", CAP_SYS_ADMIN),
    ] {
        assert!(has(bnd, cap), "{name} was cut:\n{probe}");
    }
    assert_eq!(cap_mask(&probe, "CapPrm"), bnd, "{probe}");
    assert_eq!(cap_mask(&probe, "CapEff"), bnd, "{probe}");
    assert_eq!(cap_mask(&probe, "CapInh"), 0, "{probe}");
    assert_eq!(cap_mask(&probe, "CapAmb"), 0, "{probe}");
    for kind in ["net", "ipc", "uts"] {
        let theirs = line(&probe, kind);
        assert!(theirs.starts_with(&format!("{kind}:[")), "{probe}");
        assert_ne!(theirs, ns_of_test(kind), "{kind} namespace:\n{probe}");
    }
    assert_ne!(line(&probe, "connect"), "ok", "{probe}");
    assert_eq!(line(&probe, "clone3"), "ENOSYS", "{probe}");
    assert_eq!(line(&probe, "x32"), "ENOSYS", "{probe}");
    let log = w.stderr();
    assert!(
        log.contains("private namespaces: net ipc uts"),
        "the start-up line names the namespaces:\n{log}"
    );
    assert!(log.contains(", capabilities cut to "), "{log}");
    w.stop_ok();
    drop(listener);
}

/// `--sandbox-network=host`: the handler stays in the test's network namespace (and may
/// connect to it), still in private IPC and UTS ones.
#[test]
fn with_sandbox_network_host_the_handler_keeps_the_hosts_network() {
    if !need_root() {
        return;
    }
    let t = TestDir::new("sandbox-host-net");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let extra: Vec<OsString> = vec![
        "--sandbox".into(),
        "--sandbox-network=host".into(),
        "--sandbox-read".into(),
        "/proc".into(),
    ];
    let (probe, mut w) = probe_with(&t, "caps", &caps_body(port), &extra);
    assert_eq!(line(&probe, "net"), ns_of_test("net"), "{probe}");
    assert_ne!(line(&probe, "ipc"), ns_of_test("ipc"), "{probe}");
    assert_eq!(line(&probe, "connect"), "ok", "{probe}");
    let log = w.stderr();
    assert!(log.contains("private namespaces: ipc uts"), "{log}");
    w.stop_ok();
    drop(listener);
}

/// The default mode (rsync, no handler of the site's, no -X) also drops CAP_SYS_ADMIN:
/// seen on the worker itself, from outside.
#[test]
fn a_sandboxed_rsync_worker_drops_sys_admin_too() {
    if !need_root() {
        return;
    }
    let t = TestDir::new("sandbox-rsync-caps");
    write(&t.s(b"f"), b"1");
    let run = t.root.join("run");
    mkdir(&run);
    let mut w = Worker::start_in(&run, &t.src, &t.dst, &["--sandbox"]);
    w.wait_synced(SYNC_TIMEOUT);
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).unwrap();
    let bnd = cap_mask(&status, "CapBnd");
    assert!(!has(bnd, CAP_SYS_ADMIN), "{status}");
    assert!(has(bnd, CAP_CHOWN) && has(bnd, CAP_FOWNER), "{status}");
    assert_eq!(cap_mask(&status, "CapEff"), bnd, "{status}");
    w.stop_ok();
}

/// `sandbox-network=private` with a destination reached over ssh cannot be honoured:
/// refused at start (exit 2) with one line saying why; nothing is synced.
#[test]
fn a_private_network_with_an_ssh_destination_is_refused() {
    let t = TestDir::new("sandbox-private-ssh");
    write(&t.s(b"f"), b"1");
    let dst = format!("localhost:{}", t.dst.display());
    let args: Vec<OsString> = vec![
        "--sandbox".into(),
        "--sandbox-network=private".into(),
        t.src.clone().into(),
        dst.clone().into(),
    ];
    let out = run(&t.root, &args, STOP_TIMEOUT);
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    let want = format!(
        "sandbox-network = \"private\" cannot be honoured: destination {dst} is reached over the network (use auto or host)"
    );
    assert!(out.stderr.contains(&want), "{}", out.describe());
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());
    assert!(!t.d(b"f").exists());
}

/// The original's `-C CAP_DAC_READ_SEARCH --inherit-capabilities=clsync` with `--uid`: the
/// worker keeps the capability after the drop to nobody, and the handler it runs as
/// nobody inherits it (ambient) and reads a root-only file. Without them (the control)
/// the same handler cannot.
#[test]
fn preserve_capabilities_keeps_them_across_the_uid_drop_for_the_handler() {
    use std::os::unix::fs::PermissionsExt;
    if !need_root() {
        return;
    }
    let body = |secret: &Path| {
        format!(
            "grep -E '^Cap(Eff|Amb):' /proc/self/status\nid -u\nif cat '{}' >/dev/null 2>&1; then echo 'secret: read'; else echo 'secret: refused'; fi",
            secret.display()
        )
    };
    let mut results = Vec::new();
    for keep in [true, false] {
        let t = TestDir::new("preserve-caps");
        // The handler's directory stays root's (strict modes); the trees and the status
        // file's directory are nobody's.
        std::fs::set_permissions(&t.root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = t.root.join("run");
        mkdir(&run);
        for d in [&t.src, &t.dst, &run] {
            std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
        }
        let secret = t.o(b"secret");
        write(&secret, b"root only");
        chmod(&secret, 0o600);
        let mut extra: Vec<OsString> = vec![
            "--uid".into(),
            "65534".into(),
            "--gid".into(),
            "65534".into(),
        ];
        if keep {
            extra.extend([
                OsString::from("-C"),
                "CAP_DAC_READ_SEARCH".into(),
                "--inherit-capabilities=clsync".into(),
            ]);
        }
        let (probe, mut w) = probe_with(&t, "keep", &body(&secret), &extra);
        let worker = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).unwrap();
        assert!(
            probe.lines().any(|l| l == "65534"),
            "the handler runs as nobody:\n{probe}"
        );
        results.push((keep, probe, cap_mask(&worker, "CapEff")));
        w.stop_ok();
    }
    let (_, kept, worker_eff) = &results[0];
    assert_eq!(
        *worker_eff,
        1 << CAP_DAC_READ_SEARCH,
        "the worker keeps it after the drop"
    );
    assert_eq!(cap_mask(kept, "CapAmb"), 1 << CAP_DAC_READ_SEARCH, "{kept}");
    assert!(has(cap_mask(kept, "CapEff"), CAP_DAC_READ_SEARCH), "{kept}");
    assert_eq!(line(kept, "secret"), "read", "{kept}");
    let (_, control, worker_eff) = &results[1];
    assert_eq!(*worker_eff, 0);
    assert_eq!(cap_mask(control, "CapAmb"), 0, "{control}");
    assert_eq!(line(control, "secret"), "refused", "{control}");
}

/// `-C` names only the original's four capabilities: another one is refused by name
/// (exit 2), before anything starts.
#[test]
fn preserve_capabilities_refuses_another_capability_by_name() {
    let t = TestDir::new("preserve-caps-bad");
    let args: Vec<OsString> = vec![
        "-C".into(),
        "CAP_DAC_READ_SEARCH,CAP_SYS_ADMIN".into(),
        "--uid".into(),
        "65534".into(),
        t.src.clone().into(),
        t.dst.clone().into(),
    ];
    let out = run(&t.root, &args, STOP_TIMEOUT);
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(
        out.first_line().contains(
            "--preserve-capabilities: CAP_SYS_ADMIN cannot be kept after the drop to uid: only CAP_DAC_READ_SEARCH, CAP_SETUID, CAP_SETGID and CAP_KILL can"
        ),
        "{}",
        out.describe()
    );
}

/// `--uid 0` is no drop from root: `-C` then leaves the worker all it had (it does not
/// shrink a root worker to the listed capabilities).
#[test]
fn preserve_capabilities_with_uid_0_keeps_roots() {
    if !need_root() {
        return;
    }
    let t = TestDir::new("preserve-caps-root");
    let run = t.root.join("run");
    mkdir(&run);
    let before = std::fs::read_to_string("/proc/self/status").unwrap();
    let mut w = Worker::start_in(&run, &t.src, &t.dst, &["--uid", "0", "-C", "CAP_KILL"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).unwrap();
    assert_eq!(
        cap_mask(&status, "CapEff"),
        cap_mask(&before, "CapEff"),
        "{status}"
    );
    w.stop_ok();
}

/// A sandbox path that does not exist is refused before the worker goes to the
/// background: the terminal sees the line and the exit status.
#[test]
fn a_missing_sandbox_path_is_refused_before_going_to_the_background() {
    let t = TestDir::new("sandbox-missing-path");
    let missing = t.root.join("no-such-dir");
    let (status, err) = run_within(
        std::process::Command::new(BIN)
            .arg("--sandbox")
            .arg("--background")
            .arg("--sandbox-read")
            .arg(&missing)
            .arg(&t.src)
            .arg(&t.dst),
        SYNC_TIMEOUT,
    );
    assert!(status.is_some_and(|s| !s.success()), "{status:?}: {err}");
    assert!(
        err.contains(&format!("sandbox-read {}", missing.display())),
        "the refusal is on the terminal: {err:?}"
    );
}
