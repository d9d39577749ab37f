//! Failover pairs with two real "nodes": two directories served by two sshd instances
//! on two loopback addresses. The sync direction follows the container; a split-brain is
//! resolved by policy, by a resolver script or by an operator, and the losing side's
//! versions are kept in its conflict directory.

mod common;

use common::ssh::Sshd;
use common::*;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One node: its container tree, its records, its profiles directory.
struct Node {
    tree: PathBuf,
    state: PathBuf,
    profiles: PathBuf,
    status: PathBuf,
}

struct Pair {
    t: TestDir,
    a: Node,
    b: Node,
    _sa: Sshd,
    _sb: Sshd,
}

fn node(root: &Path, name: &str) -> Node {
    let n = Node {
        tree: root.join(name).join("ct"),
        state: root.join(name).join("state"),
        profiles: root.join(name).join("profiles"),
        status: root.join(name).join("status"),
    };
    mkdir_p(&n.tree);
    mkdir_p(&n.profiles);
    n
}

/// Writes each node's `ct` profile: its tree, the other node as peer, `extra` keys.
fn pair(name: &str, extra: &str) -> Pair {
    let t = TestDir::new(name);
    let sa = Sshd::start(&t.root.join("sshd-a"));
    let sb = Sshd::start_like(&t.root.join("sshd-b"), &sa, "127.0.0.2");
    let a = node(&t.root, "a");
    let b = node(&t.root, "b");
    for (me, other, other_sshd) in [(&a, &b, &sb), (&b, &a, &sa)] {
        write(
            &me.profiles.join("ct.toml"),
            format!(
                "watch-dir = \"{}\"\npeer = \"{}\"\npair-dir = \"{}\"\npeer-pair-dir = \"{}\"\nstatus-file = \"{}\"\ndelay-collect = 0.1\ndelay-sync = 0.1\nssh-identity = \"{}\"\nssh-port = {}\nssh-options = [\"-oStrictHostKeyChecking=no\", \"-oUserKnownHostsFile=/dev/null\", \"-oLogLevel=ERROR\"]\n{extra}",
                me.tree.display(),
                other_sshd.dest(&other.tree),
                me.state.display(),
                other.state.display(),
                me.status.display(),
                sa.key.display(),
                sa.port,
            )
            .as_bytes(),
        );
    }
    Pair {
        t,
        a,
        b,
        _sa: sa,
        _sb: sb,
    }
}

fn args(n: &Node, extra: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "--profiles-dir".into(),
        n.profiles.clone().into(),
        "--profile".into(),
        "ct".into(),
    ];
    v.extend(extra.iter().map(OsString::from));
    v
}

/// Starts the worker of node `n` (the container runs there) and waits until it is live.
fn start(p: &Pair, n: &Node, other: &Node) -> Worker {
    Worker::start_raw(&p.t.root, &n.tree, &other.tree, &n.status, &args(n, &[]))
}

/// Runs the worker of node `n` expecting it to stop at the pair check.
fn refused(p: &Pair, n: &Node, extra: &[&str]) -> Finished {
    run(&p.t.root, &args(n, extra), SYNC_TIMEOUT)
}

fn files(root: &Path, dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = snapshot(dir, &no_filter)
        .unwrap()
        .keys()
        .filter(|k| !k.is_empty())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    v.sort();
    let _ = root;
    v
}

/// The conflict directories of a node: `STATE/conflicts/ct/TIMESTAMP/…`, flattened.
fn conflicts(n: &Node) -> Vec<String> {
    let dir = n.state.join("conflicts").join("ct");
    let mut out = Vec::new();
    for ts in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for f in files(&dir, &ts.path()) {
            out.push(f);
        }
    }
    out.sort();
    out
}

/// Scenario 1: the container runs on A, changes flow to B; it moves to B: nothing to
/// pull, changes flow to A. Scenario 2: A's worker is down while A changes; restarted,
/// only A changed: push.
#[test]
fn the_direction_follows_the_container() {
    let p = pair("pair-move", "");
    write(&p.a.tree.join("etc-hostname"), b"ct\n");
    let mut wa = start(&p, &p.a, &p.b);
    write(&p.a.tree.join("on-a"), b"written while running on A");
    wait_synced(&p.a.tree, &p.b.tree, SYNC_TIMEOUT);
    wa.stop_ok();
    // The container moves to B.
    let mut wb = start(&p, &p.b, &p.a);
    assert!(
        wb.stderr().contains("0 changes here, 0 on the peer"),
        "{}",
        wb.stderr()
    );
    write(&p.b.tree.join("on-b"), b"written while running on B");
    wait_synced(&p.b.tree, &p.a.tree, SYNC_TIMEOUT);
    wb.stop_ok();
    // Back on A, with A's worker down for a while: only A changed.
    write(&p.a.tree.join("while-down"), b"no worker ran");
    let mut wa = start(&p, &p.a, &p.b);
    assert!(
        wa.stderr().contains("1 changes here, 0 on the peer"),
        "{}",
        wa.stderr()
    );
    assert_synced_now(
        &p.a.tree,
        &p.b.tree,
        "A pushed what changed while it was down",
    );
    wa.stop_ok();
    assert!(conflicts(&p.a).is_empty() && conflicts(&p.b).is_empty());
}

/// Changes on B only (the container ran there last, A's record is older): A pulls first.
#[test]
fn only_the_peer_changed_pull_first() {
    let p = pair("pair-pull", "");
    write(&p.a.tree.join("f"), b"1");
    let mut wa = start(&p, &p.a, &p.b);
    wa.stop_ok();
    // B changed with no worker running anywhere.
    write(&p.b.tree.join("f"), b"changed on B");
    write(&p.b.tree.join("new-on-b"), b"x");
    let mut wa = start(&p, &p.a, &p.b);
    assert!(
        wa.stderr().contains("pulling the peer's changes first"),
        "{}",
        wa.stderr()
    );
    assert_eq!(std::fs::read(p.a.tree.join("f")).unwrap(), b"changed on B");
    assert_synced_now(&p.a.tree, &p.b.tree, "after the pull");
    wa.stop_ok();
}

/// Both sides changed while apart. Returns the pair, A having run once before.
fn partitioned(name: &str, extra: &str) -> Pair {
    let p = pair(name, extra);
    write(&p.a.tree.join("shared"), b"agreed");
    write(&p.a.tree.join("doomed"), b"agreed");
    let mut wa = start(&p, &p.a, &p.b);
    wa.stop_ok();
    // A: 2 changes; B: 3 changes.
    write(&p.a.tree.join("shared"), b"A's version");
    write(&p.a.tree.join("a-only"), b"A");
    write(&p.b.tree.join("shared"), b"B's version, longer");
    write(&p.b.tree.join("b-only"), b"B");
    std::fs::remove_file(p.b.tree.join("doomed")).unwrap();
    p
}

#[test]
fn split_brain_by_policy_keeps_the_losers_versions() {
    let p = partitioned("pair-least", "split-brain = \"discard-least-changes\"\n");
    let mut wa = start(&p, &p.a, &p.b);
    assert!(
        wa.stderr().contains("keeping the peer's side"),
        "{}",
        wa.stderr()
    );
    assert_eq!(
        std::fs::read(p.a.tree.join("shared")).unwrap(),
        b"B's version, longer"
    );
    assert!(!p.a.tree.join("a-only").exists());
    assert_synced_now(&p.a.tree, &p.b.tree, "A took B's side");
    assert_eq!(
        conflicts(&p.a),
        ["a-only", "doomed", "shared"],
        "A's versions are kept"
    );
    wa.stop_ok();

    let p = partitioned("pair-peer", "split-brain = \"discard-peer\"\n");
    let mut wa = start(&p, &p.a, &p.b);
    assert_eq!(
        std::fs::read(p.b.tree.join("shared")).unwrap(),
        b"A's version"
    );
    assert_synced_now(&p.a.tree, &p.b.tree, "B took A's side");
    assert_eq!(
        conflicts(&p.b),
        ["b-only", "shared"],
        "B's versions are kept on B"
    );
    wa.stop_ok();
}

fn script(p: &Pair, name: &str, body: &str) -> PathBuf {
    let s = p.t.root.join(name);
    write(&s, format!("#!/bin/sh\n{body}\n").as_bytes());
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
    s
}

#[test]
fn a_resolver_script_decides() {
    let p = partitioned("pair-resolver", "");
    let log = p.t.root.join("resolver.log");
    let r = script(
        &p,
        "resolver",
        &format!(
            "echo \"$@\" > '{}'\ncat \"$6\" >> '{}'\necho local",
            log.display(),
            log.display()
        ),
    );
    let profile = p.a.profiles.join("ct.toml");
    append(
        &profile,
        format!("resolver = \"{}\"\n", r.display()).as_bytes(),
    );
    let mut wa = start(&p, &p.a, &p.b);
    let heard = std::fs::read_to_string(&log).unwrap();
    assert!(heard.starts_with("ct 2 3 "), "{heard}");
    assert!(heard.contains("+ a-only\n~ shared\n"), "{heard}");
    assert_eq!(
        std::fs::read(p.b.tree.join("shared")).unwrap(),
        b"A's version"
    );
    assert_eq!(conflicts(&p.b), ["b-only", "shared"]);
    wa.stop_ok();
}

#[test]
fn manual_stops_until_an_operator_resolves_through_the_manager() {
    let p = partitioned("pair-manual", "");
    // The worker alone: exit 7, nothing synced either way.
    let f = refused(&p, &p.a, &[]);
    assert_eq!(f.code(), Some(7), "{}", f.describe());
    assert!(
        f.describe()
            .contains("split-brain: 2 changes here, 3 on the peer"),
        "{}",
        f.describe()
    );
    assert_eq!(
        std::fs::read(p.b.tree.join("shared")).unwrap(),
        b"B's version, longer"
    );
    assert_eq!(
        std::fs::read(p.a.tree.join("shared")).unwrap(),
        b"A's version"
    );
    // Through the manager: status shows it, resolve --keep peer ends it.
    append(&p.a.profiles.join("ct.toml"), b"autostart = true\n");
    let socket = p.t.root.join("mgr.sock");
    let mut mgr = std::process::Command::new(env!("CARGO_BIN_EXE_clsync-manager"))
        .args(["run", "--profiles-dir"])
        .arg(&p.a.profiles)
        .arg("--state-dir")
        .arg(p.t.root.join("mgr-state"))
        .arg("--socket")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(p.t.root.join("mgr.log")).unwrap())
        .spawn()
        .unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_clsync-manager"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    wait_until(SYNC_TIMEOUT, "split-brain in status", || {
        let o = cli(&["status"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.lines()
            .any(|l| l.starts_with("ct ") && l.contains("split-brain"))
            .then_some(())
            .ok_or(out)
    });
    let o = cli(&["resolve", "ct", "--keep", "peer"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_until(SYNC_TIMEOUT, "running again", || {
        let o = cli(&["status"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.lines()
            .any(|l| l.starts_with("ct ") && l.contains("running"))
            .then_some(())
            .ok_or(out)
    });
    assert_eq!(
        std::fs::read(p.a.tree.join("shared")).unwrap(),
        b"B's version, longer"
    );
    assert_eq!(conflicts(&p.a), ["a-only", "doomed", "shared"]);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(mgr.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = mgr.wait();
}

#[test]
fn a_resolver_that_hangs_is_killed_and_counts_as_manual() {
    let p = partitioned("pair-hang", "resolver-timeout = 1\n");
    let r = script(&p, "hang", "sleep 600");
    append(
        &p.a.profiles.join("ct.toml"),
        format!("resolver = \"{}\"\n", r.display()).as_bytes(),
    );
    let f = refused(&p, &p.a, &[]);
    assert_eq!(f.code(), Some(7), "{}", f.describe());
    assert!(f.describe().contains("was killed"), "{}", f.describe());
    let left: Vec<_> = processes_mentioning(r.to_string_lossy().as_bytes());
    assert!(left.is_empty(), "the resolver is gone: {left:?}");
}

/// The example resolvers in contrib/resolvers answer as documented.
#[test]
fn the_shipped_resolvers_answer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/resolvers");
    let ask = |name: &str, args: &[&str]| {
        let o = std::process::Command::new(dir.join(name))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let args = |l: &str, p: &str, ln: &str, pn: &str| {
        ["ct", l, p, ln, pn, "/dev/null", "/dev/null"].map(str::to_string)
    };
    let a = args("2", "3", "200", "100");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_eq!(ask("newest-wins", &a), "local");
    assert_eq!(ask("most-changes", &a), "peer");
    assert_eq!(ask("notify-only", &a), "manual");
    let t = args("2", "2", "100", "100");
    let t: Vec<&str> = t.iter().map(String::as_str).collect();
    assert_eq!(ask("newest-wins", &t), "manual");
    assert_eq!(ask("most-changes", &t), "manual");
}

/// Two workers on one pair at once, A→B and B→A: a file that A's sync writes into B
/// makes B's worker sync it back, and that run changes nothing in A (same size and
/// mtime: rsync's quick check), so A sees no event and nothing ping-pongs. B's rsync
/// runs itemize their changes into a log to show it.
#[test]
fn two_workers_on_one_pair_do_not_ping_pong() {
    let t = TestDir::new("pair-echo");
    let (a, b) = (t.root.join("a"), t.root.join("b"));
    mkdir(&a);
    mkdir(&b);
    write(&a.join("f0"), b"before");
    let log = t.root.join("b-rsync.log");
    let wrapper = t.root.join("b-rsync.sh");
    write(
        &wrapper,
        format!(
            "#!/bin/sh\nL='{}'\nfor x in \"$@\"; do case \"$x\" in --include-from=*) echo \"--list: $(tr '\\0' ' ' < \"${{x#--include-from=}}\")\" >> \"$L\";; esac; done\nrsync -i \"$@\" >> \"$L\"; rc=$?\necho '--end' >> \"$L\"\nexit $rc\n",
            log.display()
        )
        .as_bytes(),
    );
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    mkdir(&t.root.join("wa"));
    mkdir(&t.root.join("wb"));
    let mut wa = Worker::start_in(&t.root.join("wa"), &a, &b, NO_ARGS);
    wait_synced(&a, &b, SYNC_TIMEOUT);
    let wb_args: Vec<OsString> = vec!["-S".into(), wrapper.clone().into()];
    let mut wb = Worker::start_in(&t.root.join("wb"), &b, &a, &wb_args);
    write(&a.join("f"), b"written on A");
    wait_synced(&a, &b, SYNC_TIMEOUT);
    // B's worker syncs f back (its list names /f); that run itemizes no file change.
    let mut run = String::new();
    wait_until(SYNC_TIMEOUT, "B's worker to sync f back", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let mut cur = String::new();
        for line in text.lines() {
            if line.starts_with("--list: ") {
                cur = format!("{line}\n");
            } else if line == "--end" {
                if cur.contains(" /f ") {
                    run = cur.clone();
                    return Ok(());
                }
            } else {
                cur.push_str(line);
                cur.push('\n');
            }
        }
        Err(text)
    });
    let changed: Vec<&str> = run
        .lines()
        .skip(1)
        .filter(|l| l.as_bytes().get(1) == Some(&b'f'))
        .collect();
    assert!(
        changed.is_empty(),
        "B's echo changed files in A: {changed:?}\n{run}"
    );
    assert_eq!(std::fs::read(a.join("f")).unwrap(), b"written on A");
    wb.stop_ok();
    wa.stop_ok();
}
