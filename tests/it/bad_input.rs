//! The worker refuses bad command lines and bad trees with the documented
//! exit code, a first stderr line naming the offending path or value, and
//! without touching DST.

use crate::common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use common::*;

/// A refusal must come quickly; a worker that starts instead is a failure.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(15);

const SENTINEL: &[u8] = b"sentinel: must survive\n";

/// Everything under `dir` (names, types, modes, link targets, contents).
fn fingerprint(dir: &Path) -> BTreeMap<Vec<u8>, (String, Option<Vec<u8>>)> {
    let snap =
        snapshot(dir, &no_filter).unwrap_or_else(|e| panic!("cannot read {}: {e}", showp(dir)));
    snap.into_iter()
        .map(|(k, e)| {
            let content = (e.kind == Kind::File).then(|| {
                std::fs::read(bp(dir, &k)).unwrap_or_else(|e| panic!("read {}: {e}", show(&k)))
            });
            (k, (format!("{:?} {:o}", e.kind, e.mode), content))
        })
        .collect()
}

#[track_caller]
fn assert_unchanged(
    dir: &Path,
    before: &BTreeMap<Vec<u8>, (String, Option<Vec<u8>>)>,
    out: &Finished,
) {
    let after = fingerprint(dir);
    if &after != before {
        let mut lines = Vec::new();
        for k in before.keys().chain(after.keys()) {
            if before.get(k) != after.get(k) && !lines.contains(&show(k)) {
                lines.push(show(k));
            }
        }
        panic!(
            "{} was modified by a refused start; changed entries: {}\n{}",
            showp(dir),
            lines.join(", "),
            out.describe()
        );
    }
}

fn os(s: &str) -> OsString {
    OsString::from(s)
}

fn p(path: &Path) -> OsString {
    path.as_os_str().to_os_string()
}

/// A test dir whose DST holds one sentinel file.
fn setup(name: &str) -> TestDir {
    let t = TestDir::new(name);
    write(&t.d(b"sentinel"), SENTINEL);
    write(&t.s(b"some_file"), b"source content");
    t
}

#[track_caller]
fn expect_refusal(
    t: &TestDir,
    args: &[OsString],
    code: i32,
    must_mention: &[&str],
    guarded: &Path,
) -> Finished {
    let before = fingerprint(guarded);
    let out = run(&t.root, args, REFUSE_TIMEOUT);
    assert_eq!(
        out.code(),
        Some(code),
        "clsync {args:?}: expected exit {code}, got {}",
        out.describe()
    );
    assert!(
        !out.stderr.trim().is_empty(),
        "clsync {args:?}: no error message on stderr\n{}",
        out.describe()
    );
    let first = out.first_line();
    for m in must_mention {
        assert!(
            first.contains(m),
            "clsync {args:?}: first stderr line does not mention {m:?}: {first:?}\n{}",
            out.describe()
        );
    }
    assert_unchanged(guarded, &before, &out);
    out
}

fn s(path: &Path) -> String {
    path.to_str().expect("test paths are UTF-8").to_string()
}

#[test]
fn src_missing() {
    let t = setup("src_missing");
    let src = t.root.join("no_such_dir");
    let out = expect_refusal(&t, &[p(&src), p(&t.dst)], 3, &[&s(&src)], &t.dst);
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "expected exactly one line on stderr\n{}",
        out.describe()
    );
    assert!(!src.exists(), "a missing SRC must not be created");
}

#[test]
fn src_is_a_file() {
    let t = setup("src_is_file");
    let src = t.root.join("plain_file");
    write(&src, b"not a directory");
    expect_refusal(&t, &[p(&src), p(&t.dst)], 3, &[&s(&src)], &t.dst);
}

#[test]
fn dst_equals_src() {
    let t = setup("dst_equals_src");
    write(&t.s(b"sentinel"), SENTINEL);
    expect_refusal(&t, &[p(&t.src), p(&t.src)], 3, &[&s(&t.src)], &t.src);
}

#[test]
fn dst_equals_src_other_spelling() {
    let t = setup("dst_equals_src_spelling");
    write(&t.s(b"sentinel"), SENTINEL);
    // Same directory through a trailing "/." and through a symlink.
    let dot = t.root.join("src/.");
    let link = t.root.join("link_to_src");
    symlink(pb(&t.src), &link);
    for dst in [&dot, &link] {
        let out = expect_refusal(&t, &[p(&t.src), p(dst)], 3, &[], &t.src);
        let first = out.first_line();
        assert!(
            first.contains(&s(dst)) || first.contains(&s(&t.src)),
            "first stderr line names neither {} nor {}: {first:?}",
            s(dst),
            s(&t.src)
        );
    }
}

#[test]
fn dst_inside_src() {
    let t = setup("dst_inside_src");
    let dst = t.s(b"sub/dst");
    mkdir_p(&dst);
    write(&dst.join("sentinel"), SENTINEL);
    expect_refusal(&t, &[p(&t.src), p(&dst)], 3, &[&s(&dst)], &t.src);
}

#[test]
fn src_inside_dst() {
    let t = setup("src_inside_dst");
    let src = t.d(b"inner/src");
    mkdir_p(&src);
    write(&src.join("file"), b"in src");
    // The sentinel in DST is outside SRC: a mirror would delete it.
    expect_refusal(&t, &[p(&src), p(&t.dst)], 3, &[&s(&src)], &t.dst);
    assert_eq!(std::fs::read(t.d(b"sentinel")).unwrap(), SENTINEL);
}

#[test]
fn dst_not_creatable() {
    let t = setup("dst_not_creatable");
    let file = t.root.join("file");
    write(&file, b"a regular file");
    let dst = file.join("dst");
    expect_refusal(&t, &[p(&t.src), p(&dst)], 3, &[&s(&dst)], &file);
    assert_eq!(std::fs::read(&file).unwrap(), b"a regular file");
}

fn classic(t: &TestDir, handler: &Path) -> Vec<OsString> {
    vec![
        os("-M"),
        os("rsyncdirect"),
        os("-W"),
        p(&t.src),
        os("-D"),
        p(&t.dst),
        os("-S"),
        p(handler),
        os("-t"),
        os("0.1"),
        os("-w"),
        os("0.1"),
    ]
}

#[test]
fn sync_handler_not_found() {
    let t = setup("handler_not_found");
    let handler = Path::new("/nonexistent/rsync");
    expect_refusal(
        &t,
        &classic(&t, handler),
        4,
        &["/nonexistent/rsync"],
        &t.dst,
    );
}

#[test]
fn sync_handler_not_executable() {
    let t = setup("handler_not_exec");
    let handler = t.root.join("rsync");
    write(&handler, b"#!/bin/sh\nexit 0\n");
    chmod(&handler, 0o644);
    expect_refusal(&t, &classic(&t, &handler), 4, &[&s(&handler)], &t.dst);
}

#[test]
fn unknown_option() {
    let t = setup("unknown_option");
    let args = [os("--no-such-option"), p(&t.src), p(&t.dst)];
    let out = expect_refusal(&t, &args, 2, &["--no-such-option"], &t.dst);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());
}

#[test]
fn unimplemented_mode() {
    let t = setup("unimplemented_mode");
    let args = [
        os("-M"),
        os("shell"),
        os("-W"),
        p(&t.src),
        os("-D"),
        p(&t.dst),
    ];
    expect_refusal(&t, &args, 2, &["shell"], &t.dst);
}

#[test]
fn invalid_duration() {
    let t = setup("invalid_duration");
    let args = [os("-t"), os("abc"), p(&t.src), p(&t.dst)];
    expect_refusal(&t, &args, 2, &["abc"], &t.dst);
}

// ---------------------------------------------------------------------------
// Overlaps by identity: a destination that is the source, inside it or around it
// under another name (a bind mount, a symlink) is refused before anything runs.
// ---------------------------------------------------------------------------

/// A bind mount, unmounted (lazily) on drop so a failing test leaves none behind.
struct Bind(std::path::PathBuf);

impl Bind {
    fn mount(from: &Path, at: &Path) -> Bind {
        mkdir_p(at);
        let st = std::process::Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount --bind {} {}", showp(from), showp(at));
        Bind(at.to_path_buf())
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// `ROOT/top` with `src` (a file and `sub/deep`) and a sibling `other` beside it.
fn top_tree(t: &TestDir) -> std::path::PathBuf {
    let top = t.root.join("top");
    mkdir_p(&top.join("src/sub"));
    mkdir_p(&top.join("other"));
    write(&top.join("src/file"), b"source file");
    write(&top.join("src/sub/deep"), b"deep file");
    write(&top.join("other/sibling"), SENTINEL);
    top
}

#[test]
fn dst_is_a_bind_mount_of_the_source_parent() {
    let t = setup("bind_parent");
    let top = top_tree(&t);
    let bm = t.root.join("bm");
    let _m = Bind::mount(&top, &bm);
    let args = [os("--only-initialsync"), p(&top.join("src")), p(&bm)];
    expect_refusal(&t, &args, 3, &[&s(&bm), "around the source"], &top);
}

#[test]
fn dst_is_a_bind_mount_of_a_directory_below_the_source() {
    let t = setup("bind_below");
    let top = top_tree(&t);
    let bm = t.root.join("bm");
    let _m = Bind::mount(&top.join("src/sub"), &bm);
    let args = [os("--only-initialsync"), p(&top.join("src")), p(&bm)];
    expect_refusal(&t, &args, 3, &[&s(&bm), "inside the source"], &top);
}

#[test]
fn src_through_a_symlink_and_dst_a_bind_mount_of_its_parent() {
    let t = setup("bind_symlink");
    let top = top_tree(&t);
    let bm = t.root.join("bm");
    let _m = Bind::mount(&top, &bm);
    // The source named through a symlink, the destination through a symlink to the
    // bind mount: identities, not spellings, decide.
    let alias = t.root.join("alias");
    symlink(pb(&top), &alias);
    let bm_link = t.root.join("bm_link");
    symlink(pb(&bm), &bm_link);
    let args = [os("--only-initialsync"), p(&alias.join("src")), p(&bm_link)];
    expect_refusal(&t, &args, 3, &[&s(&bm), "around the source"], &top);
}

#[test]
fn src_inside_dst_through_a_bind_mount() {
    let t = setup("bind_reverse");
    let top = top_tree(&t);
    let bm = t.root.join("bm");
    let _m = Bind::mount(&top, &bm);
    // SRC is bm/src, DST is top: the source is inside the destination, by another path.
    let args = [os("--only-initialsync"), p(&bm.join("src")), p(&top)];
    expect_refusal(&t, &args, 3, &[&s(&top), "around the source"], &top);
}

#[test]
fn a_bind_mount_made_after_the_start_is_refused_before_the_next_full_sync() {
    let t = setup("bind_later");
    let top = top_tree(&t);
    let dst = t.root.join("mirror");
    mkdir_p(&dst);
    let mut w = Worker::start_in(&t.root, &top.join("src"), &dst, NO_ARGS);
    // The destination now shows the source's parent; a full resync must not run.
    let _m = Bind::mount(&top, &dst);
    let before = fingerprint(&top);
    w.signal(nix::sys::signal::Signal::SIGUSR2);
    let st = w.wait_exit(SYNC_TIMEOUT);
    assert_eq!(st.code(), Some(3), "{}", w.stderr());
    assert!(w.stderr().contains("around the source"), "{}", w.stderr());
    let after = fingerprint(&top);
    assert!(
        after == before,
        "the source's parent changed under a full resync:\n{}",
        w.stderr()
    );
}

// ---------------------------------------------------------------------------
// Labels: one safe path component, wherever they come in.
// ---------------------------------------------------------------------------

/// Labels that would leave their place: `.` falls back to the parent, `..` to the
/// grandparent, and the rest are not one plain component.
const BAD_LABELS: &[&str] = &[".", "..", "", "a/b", "/", "a\nb", "\u{1b}[2J", "-rf"];

/// A template profile `ct` mirroring `ROOT/ct/LABEL` to `ROOT/mirror/LABEL`, and a
/// sibling container's mirror `ROOT/mirror/web01` that a `.` label would wipe.
fn label_setup(name: &str) -> (TestDir, std::path::PathBuf, std::path::PathBuf) {
    let t = setup(name);
    let prof = t.root.join("profiles");
    mkdir_p(&prof);
    mkdir_p(&t.root.join("ct/web01"));
    write(&t.root.join("ct/web01/file"), b"container file");
    let mirror = t.root.join("mirror");
    mkdir_p(&mirror.join("web01"));
    write(&mirror.join("web01/sibling"), SENTINEL);
    write(
        &prof.join("ct.toml"),
        format!(
            "watch-dir = \"{0}/ct/%label%\"\ndestination-dir = \"{0}/mirror/%label%\"\ndelay-collect = 0.1\ndelay-sync = 0.1\nonly-initialsync = true\n",
            t.root.display()
        )
        .as_bytes(),
    );
    (t, prof, mirror)
}

#[test]
fn labels_that_are_not_one_safe_component_are_refused_on_the_command_line() {
    let (t, prof, mirror) = label_setup("labels_cli");
    for bad in BAD_LABELS {
        let dir = || vec![os("--profiles-dir"), p(&prof)];
        let mut forms: Vec<Vec<OsString>> = Vec::new();
        let mut a = dir();
        a.extend([os("--profile"), os(&format!("ct@{bad}"))]);
        forms.push(a);
        let mut a = dir();
        a.extend([os("--profile"), os("ct"), os(&format!("--label={bad}"))]);
        forms.push(a);
        if !bad.is_empty() {
            let mut a = dir();
            a.extend([os("--profile"), os(&format!("ct-{bad}"))]);
            forms.push(a);
        }
        // The short form takes a label too (for its log lines and hooks).
        forms.push(vec![
            os("--only-initialsync"),
            os(&format!("--label={bad}")),
            p(&t.src),
            p(&t.dst),
        ]);
        for args in forms {
            let out = expect_refusal(&t, &args, 2, &["invalid label"], &mirror);
            assert!(
                out.stderr.lines().count() == 1,
                "{args:?}: one line expected\n{}",
                out.describe()
            );
        }
    }
    // A profile's own label is checked as well.
    write(
        &prof.join("fixed.toml"),
        format!(
            "label = \".\"\nwatch-dir = \"{0}/ct/web01\"\ndestination-dir = \"{0}/mirror/%label%\"\n",
            t.root.display()
        )
        .as_bytes(),
    );
    let args = [os("--profiles-dir"), p(&prof), os("--profile"), os("fixed")];
    expect_refusal(&t, &args, 2, &["fixed.toml", "invalid label"], &mirror);
    // A good label runs (the refusals above are about the label, not the profile).
    let args = [
        os("--profiles-dir"),
        p(&prof),
        os("--profile"),
        os("ct@web02"),
    ];
    mkdir_p(&t.root.join("ct/web02"));
    let out = run(&t.root, &args, REFUSE_TIMEOUT);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(
        std::fs::read(mirror.join("web01/sibling")).unwrap(),
        SENTINEL
    );
}

#[test]
fn labels_that_are_not_one_safe_component_are_refused_from_an_ini_file() {
    let (t, _prof, mirror) = label_setup("labels_ini");
    let conf = t.root.join("clsync.conf");
    write(
        &conf,
        format!(
            "[tmpl]\nwatch-dir = {0}/ct/%label%\ndestination-dir = {0}/mirror/%label%\nmode = rsyncdirect\nonly-initialsync = 1\n\n[plain]\nwatch-dir = {0}/ct/web01\ndestination-dir = {0}/mirror/x\nmode = rsyncdirect\nonly-initialsync = 1\n\n[own]\nlabel = ..\nwatch-dir = {0}/ct/web01\ndestination-dir = {0}/mirror/%label%\nmode = rsyncdirect\nonly-initialsync = 1\n",
            t.root.display()
        )
        .as_bytes(),
    );
    for bad in BAD_LABELS {
        for block in ["tmpl", "plain"] {
            let args = [
                os("-H"),
                p(&conf),
                os("-K"),
                os(block),
                os(&format!("--label={bad}")),
            ];
            expect_refusal(&t, &args, 2, &["invalid label"], &mirror);
        }
    }
    let args = [os("-H"), p(&conf), os("-K"), os("own")];
    expect_refusal(&t, &args, 2, &["invalid label \"..\""], &mirror);
}

#[test]
fn labels_that_are_not_one_safe_component_are_refused_by_the_manager() {
    let (t, prof, mirror) = label_setup("labels_manager");
    let _ = prof;
    let mut m = common::manager::Mgr::start(&t.root);
    let before = fingerprint(&mirror);
    for bad in BAD_LABELS {
        // Through the command line and as a raw request on the control socket.
        let o = m.cli(&["start", &format!("ct@{bad}")]);
        assert_ne!(o.code, Some(0), "start ct@{bad:?}: {}", o.stdout);
        assert!(
            o.stderr.contains("invalid label") && o.stderr.trim().lines().count() == 1,
            "start ct@{bad:?}: {}",
            o.stderr
        );
        let req = serde_json::json!({"cmd": "start", "name": format!("ct@{bad}")});
        let resp = m.raw(format!("{req}\n").as_bytes());
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        assert_eq!(v["ok"], false, "{resp}");
        assert!(
            v["error"].as_str().unwrap_or("").contains("invalid label"),
            "{resp}"
        );
    }
    assert!(m.alive(), "the manager died:\n{}", m.log());
    assert!(
        m.status().is_empty(),
        "no instance may exist: {:?}",
        m.status()
    );
    assert!(fingerprint(&mirror) == before, "the mirrors changed");
}

// ---------------------------------------------------------------------------
// Durations too long for the clock: a usage error, never a panic.
// ---------------------------------------------------------------------------

#[test]
fn huge_durations_are_a_usage_error_not_a_panic() {
    let t = setup("huge_durations");
    let opts = [
        ("-w", "1e30"),
        ("-k", "1e300"),
        ("-t", "1e20"),
        ("-T", "1e30"),
        ("--wait-for-close", "1e30"),
        ("--verify-interval", "1e300"),
        ("-w", "200y"),
        ("-w", "inf"),
    ];
    for (opt, v) in opts {
        let args = [
            os(opt),
            os(v),
            os("--only-initialsync"),
            p(&t.src),
            p(&t.dst),
        ];
        let out = expect_refusal(&t, &args, 2, &[v, "invalid duration"], &t.dst);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());
    }
    // The same values in a profile and in the original's INI file.
    let prof = t.root.join("profiles");
    mkdir_p(&prof);
    write(
        &prof.join("p.toml"),
        format!(
            "watch-dir = \"{}\"\ndestination-dir = \"{}\"\ndelay-sync = 1e30\n",
            t.src.display(),
            t.dst.display()
        )
        .as_bytes(),
    );
    let args = [os("--profiles-dir"), p(&prof), os("--profile"), os("p")];
    expect_refusal(&t, &args, 2, &["p.toml", "delay-sync"], &t.dst);
    let conf = t.root.join("clsync.conf");
    write(
        &conf,
        format!(
            "[default]\nwatch-dir = {}\ndestination-dir = {}\nmode = rsyncdirect\ndelay-sync = 18446744073709551615\n",
            t.src.display(),
            t.dst.display()
        )
        .as_bytes(),
    );
    expect_refusal(&t, &[os("-H"), p(&conf)], 2, &["delay-sync"], &t.dst);
}

#[test]
fn the_longest_durations_run_without_overflow() {
    // At the cap (100 years) every deadline is still computed without a panic.
    let t = setup("longest_durations");
    let out = run(
        &t.root,
        &[
            os("-w"),
            os("100y"),
            os("-t"),
            os("3153600000"),
            os("-T"),
            os("100y"),
            os("-k"),
            os("100y"),
            os("--wait-for-close"),
            os("100y"),
            os("--verify-interval"),
            os("100y"),
            os("--only-initialsync"),
            p(&t.src),
            p(&t.dst),
        ],
        REFUSE_TIMEOUT,
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(std::fs::read(t.d(b"some_file")).unwrap(), b"source content");
}

#[test]
fn a_bind_mount_made_after_the_start_is_refused_before_the_next_sync_of_a_change() {
    let t = setup("bind_later_change");
    let top = top_tree(&t);
    let dst = t.root.join("mirror");
    mkdir_p(&dst);
    let mut w = Worker::start_in(&t.root, &top.join("src"), &dst, NO_ARGS);
    let _m = Bind::mount(&top, &dst);
    let before = fingerprint(&top);
    // A change: its (targeted) sync would write into the source's parent.
    write(&top.join("src/sub/new"), b"new file");
    let st = w.wait_exit(SYNC_TIMEOUT);
    assert_eq!(st.code(), Some(3), "{}", w.stderr());
    assert!(w.stderr().contains("around the source"), "{}", w.stderr());
    let mut after = fingerprint(&top);
    after.remove(b"src/sub/new".as_slice());
    assert!(
        after == before,
        "the source's parent changed under a sync:\n{}",
        w.stderr()
    );
}

/// `--initial-sync index` with `--full-initialsync`: refused in one line naming both (the
/// latter syncs what the rules exclude, which the index leaves out); nothing is made.
#[test]
fn full_initialsync_with_initial_sync_index_is_refused() {
    let t = setup("initial_sync_index_full");
    let index = t.root.join("index");
    let out = expect_refusal(
        &t,
        &[
            os("--index-dir"),
            p(&index),
            os("--initial-sync"),
            os("index"),
            os("--full-initialsync"),
            p(&t.src),
            p(&t.dst),
        ],
        2,
        &["initial-sync = index", "full-initialsync"],
        &t.dst,
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());
    assert!(!index.exists(), "the index directory was made");
}
