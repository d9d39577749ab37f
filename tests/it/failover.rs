//! Failover pairs with two real "nodes": two directories served by two sshd instances
//! on two loopback addresses. The sync direction follows the container; a split-brain is
//! resolved by policy, by a resolver script or by an operator, and the losing side's
//! versions are kept in its conflict directory.

use crate::common;

use common::ssh::Sshd;
use common::*;
use std::ffi::OsString;
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
            common::profiles::with_own_index(&me.state, &format!(
                "watch-dir = \"{}\"\npeer = \"{}\"\npair-dir = \"{}\"\npeer-pair-dir = \"{}\"\nstatus-file = \"{}\"\ndelay-collect = 0.1\ndelay-sync = 0.1\nssh-identity = \"{}\"\nssh-port = {}\nssh-options = [\"-oStrictHostKeyChecking=no\", \"-oUserKnownHostsFile=/dev/null\", \"-oLogLevel=ERROR\"]\n{extra}",
                me.tree.display(),
                other_sshd.dest(&other.tree),
                me.state.display(),
                other.state.display(),
                me.status.display(),
                sa.key.display(),
                sa.port,
            ))
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
/// It runs confined, as a profile's worker does by default (`sandbox = true`): the pair's
/// pulls, pushes, checks and resolutions below all run in the sandbox.
fn start(p: &Pair, n: &Node, other: &Node) -> Worker {
    let w = Worker::start_raw(&p.t.root, &n.tree, &other.tree, &n.status, &args(n, &[]));
    w.assert_sandboxed();
    w
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
    write_script(&s, &format!("#!/bin/sh\n{body}\n"));
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
    // The STATE column: while the worker still runs, its split-brain report is already
    // in LAST ERROR of a row that says `starting` (and `resolve` is refused then).
    wait_until(SYNC_TIMEOUT, "split-brain in status", || {
        let o = cli(&["status"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.lines()
            .any(|l| {
                let mut cols = l.split_whitespace();
                cols.next() == Some("ct") && cols.next() == Some("split-brain")
            })
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
    write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\nL='{}'\nfor x in \"$@\"; do case \"$x\" in --include-from=*|--files-from=*) echo \"--list: $(tr '\\0' ' ' < \"${{x#*=}}\")\" >> \"$L\";; esac; done\nrsync -i \"$@\" >> \"$L\"; rc=$?\necho '--end' >> \"$L\"\nexit $rc\n",
            log.display()
        ),
    );
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
                // `/f` in an include list, `f` in a `--files-from` one.
                let names = cur.lines().next().unwrap_or_default().split(' ');
                if names.skip(1).any(|n| n == "/f" || n == "f") {
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

// ---------------------------------------------------------------------------
// Nothing lost: crashes, a peer that is down, excluded paths, deletions.
// ---------------------------------------------------------------------------

/// Every regular file below `dir`: relative path → content.
fn contents(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Contents lost = 0: every (file name, content) in `versions` exists afterwards in a
/// live tree or a conflict directory of either node.
#[track_caller]
fn assert_every_version_kept(p: &Pair, versions: &[(&str, &[u8])]) {
    let mut everywhere: Vec<(String, Vec<u8>)> = Vec::new();
    for dir in [
        p.a.tree.clone(),
        p.b.tree.clone(),
        p.a.state.join("conflicts"),
        p.b.state.join("conflicts"),
    ] {
        for (rel, data) in contents(&dir) {
            let name = rel.rsplit('/').next().unwrap().to_string();
            everywhere.push((name, data));
        }
    }
    let lost: Vec<String> = versions
        .iter()
        .filter(|(name, data)| {
            !everywhere
                .iter()
                .any(|(n, d)| n == name && d.as_slice() == *data)
        })
        .map(|(n, d)| format!("{n}: {:?}", String::from_utf8_lossy(d)))
        .collect();
    assert!(lost.is_empty(), "versions lost: {lost:?}");
}

/// The trees are equal but for paths whose relative name contains one of `local`.
fn wait_equal_but(p: &Pair, from: &Node, to: &Node, local: &[&str]) {
    let keep = |m: std::collections::BTreeMap<String, Vec<u8>>| {
        m.into_iter()
            .filter(|(k, _)| !local.iter().any(|l| k.contains(l)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let _ = p;
    wait_until(SYNC_TIMEOUT, "the trees to agree", || {
        let (a, b) = (keep(contents(&from.tree)), keep(contents(&to.tree)));
        if a == b {
            Ok(())
        } else {
            Err(format!("{a:?}\n!=\n{b:?}"))
        }
    });
}

/// Kills the worker (SIGKILL: no final sync, no record at stop).
fn crash(w: &mut Worker) {
    w.signal(nix::sys::signal::Signal::SIGKILL);
    w.wait_exit(SYNC_TIMEOUT);
}

/// A profile's rules as profiles/lxc.toml has them, and an exclude glob.
const LXC_RULES: &str = "rules = ['-d/sess(ion)?s?$', '-f/tmp/', '+*']\nexclude = ['*.swp']\n";

/// Paths the rules exclude belong to their node: a push, a flip and a pull neither copy
/// nor delete nor overwrite them, on either node.
#[test]
fn excluded_files_survive_a_flip_and_a_pull_on_both_nodes() {
    let p = pair("pair-excluded", LXC_RULES);
    let own = |n: &Node, who: &str| -> Vec<(PathBuf, Vec<u8>)> {
        vec![
            (
                n.tree.join(format!("var/lib/php/sessions/sess_{who}")),
                format!("session of {who}").into_bytes(),
            ),
            (
                n.tree.join(format!("var/tmp/work-{who}")),
                format!("work file of {who}").into_bytes(),
            ),
            (
                n.tree.join(format!("etc/.{who}.swp")),
                format!("swap of {who}").into_bytes(),
            ),
            // Directories that only hold excluded files, on this node only.
            (
                n.tree.join(format!("srv/{who}-cache/tmp/x")),
                format!("cache of {who}").into_bytes(),
            ),
        ]
    };
    let (a_own, b_own) = (own(&p.a, "a"), own(&p.b, "b"));
    for (f, data) in a_own.iter().chain(&b_own) {
        mkdir_p(f.parent().unwrap());
        write(f, data);
    }
    write(&p.a.tree.join("etc/hostname"), b"ct\n");
    let check = |what: &str| {
        for (f, data) in a_own.iter().chain(&b_own) {
            assert_eq!(
                std::fs::read(f).ok().as_deref(),
                Some(&data[..]),
                "{what}: {} is gone or changed",
                f.display()
            );
        }
        for (mine, theirs) in [(&p.a, &b_own), (&p.b, &a_own)] {
            for (f, _) in theirs {
                let rel = f.strip_prefix(if mine.tree == p.a.tree {
                    &p.b.tree
                } else {
                    &p.a.tree
                });
                let there = mine.tree.join(rel.unwrap());
                assert!(!there.exists(), "{what}: {} was copied", there.display());
            }
        }
    };
    let excluded = ["sess_", "work-", ".swp", "-cache/tmp/"];
    // The container runs on A: A pushes.
    let mut wa = start(&p, &p.a, &p.b);
    write(&p.a.tree.join("on-a"), b"A");
    wait_equal_but(&p, &p.a, &p.b, &excluded);
    check("after A's push");
    wa.stop_ok();
    // It moves to B (a flip): B pushes.
    let mut wb = start(&p, &p.b, &p.a);
    assert!(
        wb.stderr().contains("0 changes here, 0 on the peer"),
        "{}",
        wb.stderr()
    );
    write(&p.b.tree.join("on-b"), b"B");
    wait_equal_but(&p, &p.b, &p.a, &excluded);
    check("after the flip to B");
    wb.stop_ok();
    // B changes with no worker running; A starts: it pulls.
    write(&p.b.tree.join("on-b"), b"B, changed while no worker ran");
    let mut wa = start(&p, &p.a, &p.b);
    assert!(
        wa.stderr().contains("pulling the peer's changes first"),
        "{}",
        wa.stderr()
    );
    assert_eq!(
        std::fs::read(p.a.tree.join("on-b")).unwrap(),
        b"B, changed while no worker ran"
    );
    check("after A's pull");
    wa.stop_ok();
    check("at the end");
    // The record of the pair names no excluded path.
    for n in [&p.a, &p.b] {
        let m = std::fs::read(n.state.join("pairs/ct/manifest")).unwrap();
        let m = String::from_utf8_lossy(&m);
        for x in excluded {
            assert!(!m.contains(x), "{x} in the manifest:\n{m}");
        }
    }
}

/// A's worker dies hard (kill -9) with a write it had not synced; it restarts on A, the
/// peer unchanged since: A pushes. No split-brain, no revert (the policy,
/// discard-younger, would revert A if it counted the peer as changed).
#[test]
fn a_crash_then_a_restart_on_the_same_node_pushes() {
    let p = pair("pair-crash-same", "split-brain = \"discard-younger\"\n");
    let standby = p.t.root.join("standby-a");
    append(
        &p.a.profiles.join("ct.toml"),
        format!("standby-file = \"{}\"\n", standby.display()).as_bytes(),
    );
    write(&p.a.tree.join("base"), b"base");
    let mut wa = start(&p, &p.a, &p.b);
    write(&p.a.tree.join("f"), b"version 1, synced");
    wait_synced(&p.a.tree, &p.b.tree, SYNC_TIMEOUT);
    // Syncs are held from now on: the next write stays unsynced.
    write(&standby, b"");
    write(&p.a.tree.join("f"), b"version 2, not synced when A crashed");
    wait_until(SYNC_TIMEOUT, "A to hold its sync", || {
        (wa.status() == "hold on").then_some(()).ok_or(wa.status())
    });
    crash(&mut wa);
    assert_eq!(
        std::fs::read(p.b.tree.join("f")).unwrap(),
        b"version 1, synced"
    );
    std::fs::remove_file(&standby).unwrap();
    let mut wa = start(&p, &p.a, &p.b);
    let log = wa.stderr();
    assert!(
        log.contains("1 changes here, 0 on the peer") && log.contains("pushing"),
        "{log}"
    );
    assert!(!log.contains("split-brain"), "{log}");
    wait_synced(&p.a.tree, &p.b.tree, SYNC_TIMEOUT);
    assert_eq!(
        std::fs::read(p.a.tree.join("f")).unwrap(),
        b"version 2, not synced when A crashed",
        "A was not reverted"
    );
    wa.stop_ok();
    assert!(conflicts(&p.a).is_empty() && conflicts(&p.b).is_empty());
    assert_every_version_kept(
        &p,
        &[
            ("base", b"base"),
            ("f", b"version 2, not synced when A crashed"),
        ],
    );
}

/// A's host dies (kill -9 of its worker with unsynced writes, its sshd stopped); the
/// container starts on B while A cannot be reached. B's worker runs (ready, recording
/// changes); when A is back, A's unsynced changes and B's are decided by the policy,
/// and every version is kept, live or in a conflict directory.
#[test]
fn a_crash_then_a_start_on_the_peer_keeps_every_version() {
    let mut p = pair(
        "pair-crash-peer",
        "split-brain = \"discard-least-changes\"\n",
    );
    let standby = p.t.root.join("standby-a");
    append(
        &p.a.profiles.join("ct.toml"),
        format!("standby-file = \"{}\"\n", standby.display()).as_bytes(),
    );
    write(&p.a.tree.join("shared"), b"agreed");
    let mut wa = start(&p, &p.a, &p.b);
    write(&p.a.tree.join("shared"), b"A, synced");
    write(&p.a.tree.join("a-synced"), b"A, synced");
    wait_synced(&p.a.tree, &p.b.tree, SYNC_TIMEOUT);
    write(&standby, b"");
    write(&p.a.tree.join("shared"), b"A's version, not synced");
    write(&p.a.tree.join("a-unsynced"), b"A, not synced");
    wait_until(SYNC_TIMEOUT, "A to hold its sync", || {
        (wa.status() == "hold on").then_some(()).ok_or(wa.status())
    });
    crash(&mut wa);
    // A's host is gone.
    p._sa.down();
    let mut wb = start(&p, &p.b, &p.a);
    assert!(wb.stderr().contains("cannot be reached"), "{}", wb.stderr());
    write(&p.b.tree.join("shared"), b"B's version");
    write(&p.b.tree.join("b-new-1"), b"B 1");
    write(&p.b.tree.join("b-new-2"), b"B 2");
    // A comes back: B's retried pair check decides (3 changes on B, 2 on A: B's side).
    p._sa.up();
    wait_until(SYNC_TIMEOUT * 3, "B's pair check to decide", || {
        let log = wb.stderr();
        log.contains("keeping this side").then_some(()).ok_or(log)
    });
    let log = wb.stderr();
    assert!(
        log.contains("3 changes here, 2 on the peer"),
        "only real changes count: {log}"
    );
    wait_synced(&p.b.tree, &p.a.tree, SYNC_TIMEOUT);
    write(&p.b.tree.join("b-later"), b"B, live again");
    wait_synced(&p.b.tree, &p.a.tree, SYNC_TIMEOUT);
    wb.stop_ok();
    assert_every_version_kept(
        &p,
        &[
            ("shared", b"A's version, not synced"),
            ("a-unsynced", b"A, not synced"),
            ("a-synced", b"A, synced"),
            ("shared", b"B's version"),
            ("b-new-1", b"B 1"),
            ("b-new-2", b"B 2"),
            ("b-later", b"B, live again"),
        ],
    );
    assert_eq!(conflicts(&p.a), ["a-unsynced", "shared"]);
}

/// The old node died with nothing unsynced: the peer, started while it was down, finds
/// only its own changes when it comes back and pushes them (no split-brain, nothing set
/// aside), even with the default policy (manual).
#[test]
fn a_start_on_the_peer_pushes_when_the_old_node_had_nothing_unsynced() {
    let mut p = pair("pair-peer-clean", "");
    write(&p.a.tree.join("f"), b"agreed");
    let mut wa = start(&p, &p.a, &p.b);
    write(&p.a.tree.join("f"), b"A, synced");
    write(&p.a.tree.join("g"), b"A, synced");
    wait_synced(&p.a.tree, &p.b.tree, SYNC_TIMEOUT);
    // Everything reached B (and was recorded) before the crash.
    wait_until(SYNC_TIMEOUT, "A's record of g", || {
        let j = std::fs::read(p.a.state.join("pairs/ct/journal")).unwrap_or_default();
        let j = String::from_utf8_lossy(&j).into_owned();
        j.contains(" g\0").then_some(()).ok_or(j)
    });
    crash(&mut wa);
    p._sa.down();
    let mut wb = start(&p, &p.b, &p.a);
    assert!(wb.stderr().contains("cannot be reached"), "{}", wb.stderr());
    write(&p.b.tree.join("f"), b"B's version");
    std::fs::remove_file(p.b.tree.join("g")).unwrap();
    p._sa.up();
    wait_until(SYNC_TIMEOUT * 3, "B's pair check to push", || {
        let log = wb.stderr();
        log.contains("2 changes here, 0 on the peer")
            .then_some(())
            .ok_or(log)
    });
    wait_synced(&p.b.tree, &p.a.tree, SYNC_TIMEOUT);
    wb.stop_ok();
    assert!(!wb.stderr().contains("split-brain"), "{}", wb.stderr());
    assert!(conflicts(&p.a).is_empty() && conflicts(&p.b).is_empty());
    assert_every_version_kept(&p, &[("f", b"B's version")]);
}

/// discard-younger: a side that only deleted, after the other side's change, is the
/// younger one (a deletion is a change at the time it was seen).
#[test]
fn a_side_that_only_deleted_is_younger() {
    let p = pair("pair-delete-younger", "split-brain = \"discard-younger\"\n");
    write(&p.a.tree.join("f"), b"agreed");
    write(&p.a.tree.join("g"), b"agreed g");
    let mut wa = start(&p, &p.a, &p.b);
    wa.stop_ok();
    // A changed f an hour ago; B deleted g now.
    write(&p.a.tree.join("f"), b"A's change, an hour ago");
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(p.a.tree.join("f"))
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    std::fs::remove_file(p.b.tree.join("g")).unwrap();
    let mut wa = start(&p, &p.a, &p.b);
    let log = wa.stderr();
    assert!(
        log.contains("1 changes here, 1 on the peer")
            && log.contains("the policy discard-younger decided, keeping this side"),
        "{log}"
    );
    assert_synced_now(&p.a.tree, &p.b.tree, "B took A's side");
    wa.stop_ok();
    assert_eq!(
        std::fs::read(p.b.tree.join("f")).unwrap(),
        b"A's change, an hour ago"
    );
    assert_every_version_kept(&p, &[("f", b"A's change, an hour ago"), ("g", b"agreed g")]);
}

/// The resolution log names the policy that decided and counts what rsync moved (a
/// 201-file directory counts 201); conflict directories have UTC names; both nodes have
/// the `id` file docs/failover.md describes.
#[test]
fn resolution_logs_name_the_decider_and_count_what_moved() {
    let p = partitioned("pair-counts", "split-brain = \"discard-peer\"\n");
    mkdir_p(&p.b.tree.join("big"));
    for i in 0..201 {
        write(
            &p.b.tree.join(format!("big/f{i:03}")),
            format!("{i}").as_bytes(),
        );
    }
    let mut wa = start(&p, &p.a, &p.b);
    let log = wa.stderr();
    assert!(
        log.contains("2 changes here, 205 on the peer")
            && log.contains(
                "the policy discard-peer decided, keeping this side: 2 files created, 1 replaced, 202 deleted at the peer"
            ),
        "{log}"
    );
    assert_synced_now(&p.a.tree, &p.b.tree, "B took A's side");
    wa.stop_ok();
    let kept = contents(&p.b.state.join("conflicts"));
    assert_eq!(
        kept.len(),
        203,
        "the versions moved aside: {:?}",
        kept.keys()
    );
    let names: Vec<String> = std::fs::read_dir(p.b.state.join("conflicts/ct"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let re = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ$").unwrap();
    assert!(re.is_match(&names[0]), "{names:?}");
    let id = |n: &Node| std::fs::read_to_string(n.state.join("pairs/ct/id")).unwrap();
    assert_eq!(id(&p.a), id(&p.b));
    assert!(id(&p.a).trim().contains('.'), "{}", id(&p.a));
    let mut versions: Vec<(String, Vec<u8>)> = (0..201)
        .map(|i| (format!("f{i:03}"), format!("{i}").into_bytes()))
        .collect();
    versions.push(("b-only".into(), b"B".to_vec()));
    versions.push(("shared".into(), b"B's version, longer".to_vec()));
    versions.push(("shared".into(), b"A's version".to_vec()));
    let v: Vec<(&str, &[u8])> = versions
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    assert_every_version_kept(&p, &v);
}

/// `clsync-manager resolve NAME --keep both` is a usage error (exit 2), like a missing
/// `--keep`; no daemon is asked.
#[test]
fn resolve_with_a_bad_keep_is_a_usage_error() {
    let t = TestDir::new("pair-resolve-usage");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_clsync-manager"))
            .arg("--socket")
            .arg(t.root.join("no-daemon.sock"))
            .args(args)
            .output()
            .unwrap()
    };
    let missing = run(&["resolve", "ct"]);
    assert_eq!(missing.status.code(), Some(2));
    let o = run(&["resolve", "ct", "--keep", "both"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("both") && err.contains("local"), "{err}");
}
