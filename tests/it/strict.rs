//! Strict modes: a profile, a profiles directory, a `-H` file, a rules file, a sync
//! handler or a hook that another user (nobody, uid 65534) may change is refused before
//! anything runs as root, with one line naming the file, its owner, its mode and the fix;
//! `strict-modes = false` (or `--strict-modes=false`) lets the same setup run.

use crate::common;

use common::manager::Mgr;
use common::*;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

const NOBODY: u32 = 65534;

/// A path as the messages show it (and as profiles and scripts take it); shadows
/// common's quoted form.
fn showp(p: &Path) -> String {
    p.display().to_string()
}

fn chown_nobody(p: &Path) {
    std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).expect("chown nobody");
}

fn chown_root(p: &Path) {
    std::os::unix::fs::chown(p, Some(0), Some(0)).expect("chown root");
}

/// Writes `file` as nobody (`setpriv`), so the file is nobody's own.
fn write_as_nobody(file: &Path, text: &str) {
    let st = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "printf '%s' \"$1\" > \"$2\"", "sh", text])
        .arg(file)
        .status()
        .expect("run setpriv");
    assert!(st.success(), "setpriv write {}: {st}", showp(file));
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&lstat(file)),
        NOBODY,
        "{} is nobody's",
        showp(file)
    );
}

/// A script that creates `marker` when it runs (as whoever runs it).
fn script(path: &Path, marker: &Path) {
    write(
        path,
        format!("#!/bin/sh\ntouch '{}'\nexit 0\n", showp(marker)).as_bytes(),
    );
    chmod(path, 0o755);
}

/// A shell-mode profile that runs `handler` for its initial sync, then `hook`, and ends.
/// The scripts' markers are in `marks`, which the (default) sandbox lets them write.
fn profile_text(t: &TestDir, handler: &Path, hook: &Path, extra: &str) -> String {
    let text = format!(
        "watch-dir = \"{}\"\ndestination-dir = \"{}\"\nmode = \"shell\"\nsync-handler = \"{}\"\nexit-hook = \"{}\"\nonly-initialsync = true\nautostart = true\nrestart = \"never\"\nsandbox-write = [\"{}\"]\n{extra}",
        showp(&t.src),
        showp(&t.dst),
        showp(handler),
        showp(hook),
        showp(&t.root.join("marks")),
    );
    common::profiles::with_own_index(&t.root, &text)
}

fn os<S: AsRef<std::ffi::OsStr>>(s: S) -> OsString {
    s.as_ref().to_os_string()
}

/// The one line of `text` that refuses `what`, checked for the file, the owner, the mode
/// and the fix.
#[track_caller]
fn refusal(text: &str, what: &str, file: &Path, owner: &str, mode: &str, fix: &str) -> String {
    let head = format!("refusing {what} {}: ", showp(file));
    let line = text
        .lines()
        .find(|l| l.contains(&head))
        .unwrap_or_else(|| panic!("no line with {head:?} in:\n{text}"))
        .to_string();
    for part in [
        format!("owned by {owner}, mode {mode}"),
        format!("fix: {fix} (or "),
    ] {
        assert!(line.contains(&part), "{part:?} not in {line:?}");
    }
    line
}

fn absent(marker: &Path) {
    assert!(
        !exists_nofollow(marker),
        "{} exists: the script ran as root",
        showp(marker)
    );
}

fn profiles_run(t: &TestDir, profiles: &Path, name: &str, strict: bool) -> Finished {
    let mut args = Vec::new();
    if !strict {
        args.push(os("--strict-modes=false"));
    }
    args.extend([
        os("--profiles-dir"),
        os(profiles),
        os("--profile"),
        os(name),
    ]);
    run(&t.root, &args, SYNC_TIMEOUT)
}

/// The state and last error of `name` in the manager's status.
fn state_of(m: &Mgr, name: &str) -> Option<(String, String)> {
    m.status().iter().find(|i| i["name"] == name).map(|i| {
        (
            i["state"].as_str().unwrap_or_default().to_string(),
            i["last_error"].as_str().unwrap_or_default().to_string(),
        )
    })
}

struct Setup {
    t: TestDir,
    handler: PathBuf,
    hook: PathBuf,
    ran: PathBuf,
    hooked: PathBuf,
}

fn setup(name: &str) -> Setup {
    let t = TestDir::new(name);
    write(&t.s(b"file"), b"data");
    let bin = t.root.join("bin");
    mkdir(&bin);
    let (handler, hook) = (bin.join("handler"), bin.join("hook"));
    let marks = t.root.join("marks");
    mkdir(&marks);
    let (ran, hooked) = (marks.join("ran-handler"), marks.join("ran-hook"));
    script(&handler, &ran);
    script(&hook, &hooked);
    Setup {
        t,
        handler,
        hook,
        ran,
        hooked,
    }
}

#[test]
fn a_profile_others_may_change_runs_nothing_as_root() {
    let s = setup("strict-profile");
    let t = &s.t;
    for f in [&s.handler, &s.hook] {
        chmod(f, 0o777);
        chown_nobody(f);
    }
    // The manager: the profile arrives, a reload reads it.
    let m = Mgr::start(&t.root);
    let profile = m.profiles.join("web.toml");
    write(
        &profile,
        profile_text(t, &s.handler, &s.hook, "").as_bytes(),
    );
    chmod(&profile, 0o666);
    chown_nobody(&profile);
    let o = m.cli(&["reload"]);
    assert_eq!(o.code, Some(1), "{}{}\n{}", o.stdout, o.stderr, m.log());
    let p = showp(&profile);
    let fix = format!("chown root: {p} && chmod go-w {p}");
    let line = refusal(
        &o.stderr,
        "profile",
        &profile,
        "uid 65534 (nobody)",
        "0666",
        &fix,
    );
    assert!(line.contains("--strict-modes=false"), "{line}");
    // Broken like a profile that does not parse: failed, with the line.
    let (state, error) = state_of(&m, "web").expect("web is listed");
    assert_eq!(state, "failed");
    assert!(
        error.contains(&format!("refusing profile {p}: ")),
        "{error}"
    );
    let list = m.cli(&["list", "--json"]);
    assert!(list.stdout.contains("refusing profile"), "{}", list.stdout);
    // clsync --profile and clsync check.
    let f = profiles_run(t, &m.profiles, "web", true);
    assert_eq!(f.status.code(), Some(2), "{}", f.describe());
    refusal(
        &f.stderr,
        "profile",
        &profile,
        "uid 65534 (nobody)",
        "0666",
        &fix,
    );
    let c = run(
        &t.root,
        &[os("check"), os("--profiles-dir"), os(&m.profiles)],
        SYNC_TIMEOUT,
    );
    assert_eq!(c.status.code(), Some(2), "{}", c.describe());
    refusal(
        &c.stdout,
        "profile",
        &profile,
        "uid 65534 (nobody)",
        "0666",
        &fix,
    );
    absent(&s.ran);
    absent(&s.hooked);

    // A safe profile naming the handler: the handler is refused, by name.
    chown_root(&profile);
    chmod(&profile, 0o644);
    let f = profiles_run(t, &m.profiles, "web", true);
    assert_eq!(f.status.code(), Some(2), "{}", f.describe());
    let h = showp(&s.handler);
    let line = refusal(
        &f.stderr,
        "sync handler",
        &s.handler,
        "uid 65534 (nobody)",
        "0777",
        &format!("chown root: {h} && chmod go-w {h}"),
    );
    assert!(line.contains("(or strict-modes = false)"), "{line}");
    // A safe handler, the hook still nobody's.
    chown_root(&s.handler);
    chmod(&s.handler, 0o755);
    let f = profiles_run(t, &m.profiles, "web", true);
    assert_eq!(f.status.code(), Some(2), "{}", f.describe());
    let k = showp(&s.hook);
    refusal(
        &f.stderr,
        "exit hook",
        &s.hook,
        "uid 65534 (nobody)",
        "0777",
        &format!("chown root: {k} && chmod go-w {k}"),
    );
    absent(&s.ran);
    absent(&s.hooked);
    drop(m);

    // The opt-out: everything nobody's again, and it runs.
    for f in [&profile, &s.handler] {
        chown_nobody(f);
        chmod(f, 0o777);
    }
    let f = profiles_run(t, &t.root.join("profiles"), "web", false);
    assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    assert!(exists_nofollow(&s.ran) && exists_nofollow(&s.hooked));
    remove_file(&s.ran);
    remove_file(&s.hooked);
    // The manager with --strict-modes=false passes it on to its worker.
    let m = Mgr::start_with(&t.root, &["--strict-modes=false"]);
    wait_until(SYNC_TIMEOUT, "the scripts to run under the manager", || {
        (exists_nofollow(&s.ran) && exists_nofollow(&s.hooked))
            .then_some(())
            .ok_or_else(|| format!("{:?}\n{}", m.status(), m.log()))
    });
}

#[test]
fn a_profiles_directory_others_may_write_to_is_refused() {
    let s = setup("strict-dir");
    let t = &s.t;
    chmod(&t.root, 0o755);
    let profiles = t.root.join("profiles");
    mkdir(&profiles);
    chmod(&profiles, 0o777);
    // One planted by nobody, one written by root: both sit in a directory anyone can
    // swap files in.
    let planted = profiles.join("planted.toml");
    write_as_nobody(&planted, &profile_text(t, &s.handler, &s.hook, ""));
    let own = profiles.join("own.toml");
    write(&own, profile_text(t, &s.handler, &s.hook, "").as_bytes());
    let d = showp(&profiles);
    for (name, file) in [("planted", &planted), ("own", &own)] {
        let f = profiles_run(t, &profiles, name, true);
        assert_eq!(f.status.code(), Some(2), "{}", f.describe());
        let line = refusal(
            &f.stderr,
            "profile",
            file,
            "uid 0 (root)",
            "0777",
            &format!("chmod go-w {d}"),
        );
        assert!(
            line.contains(&format!("directory {d} is owned by")),
            "{line}"
        );
    }
    let c = run(
        &t.root,
        &[os("check"), os("--profiles-dir"), os(&profiles)],
        SYNC_TIMEOUT,
    );
    assert_eq!(c.status.code(), Some(2), "{}", c.describe());
    for file in [&planted, &own] {
        refusal(
            &c.stdout,
            "profile",
            file,
            "uid 0 (root)",
            "0777",
            &format!("chmod go-w {d}"),
        );
    }
    let c = run(
        &t.root,
        &[
            os("check"),
            os("--strict-modes=false"),
            os("--profiles-dir"),
            os(&profiles),
        ],
        SYNC_TIMEOUT,
    );
    assert_eq!(c.status.code(), Some(0), "{}", c.describe());
    // The manager: both broken on reload, nothing started.
    let m = Mgr::start(&t.root);
    let o = m.cli(&["reload"]);
    assert_eq!(o.code, Some(1), "{}{}\n{}", o.stdout, o.stderr, m.log());
    for name in ["planted", "own"] {
        let (state, error) = state_of(&m, name).expect("listed");
        assert_eq!(state, "failed", "{name}");
        assert!(
            error.contains(&format!("directory {d} is owned by")),
            "{error}"
        );
    }
    absent(&s.ran);
    absent(&s.hooked);
    drop(m);
    // The opt-out.
    let f = profiles_run(t, &profiles, "own", false);
    assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    assert!(exists_nofollow(&s.ran) && exists_nofollow(&s.hooked));
}

#[test]
fn an_ini_file_others_may_write_to_is_refused() {
    let s = setup("strict-ini");
    let t = &s.t;
    let ini = t.root.join("clsync.conf");
    write(
        &ini,
        format!(
            "[default]\nwatch-dir = {}\ndestination-dir = {}\nmode = shell\nsync-handler = {}\nexit-hook = {}\nonly-initialsync = 1\n",
            showp(&t.src),
            showp(&t.dst),
            showp(&s.handler),
            showp(&s.hook)
        )
        .as_bytes(),
    );
    chmod(&ini, 0o666);
    let f = run(&t.root, &[os("-H"), os(&ini)], SYNC_TIMEOUT);
    assert_eq!(f.status.code(), Some(2), "{}", f.describe());
    let line = refusal(
        &f.stderr,
        "configuration file",
        &ini,
        "uid 0 (root)",
        "0666",
        &format!("chmod go-w {}", showp(&ini)),
    );
    assert!(!line.contains("chown"), "{line}");
    absent(&s.ran);
    absent(&s.hooked);
    let f = run(
        &t.root,
        &[os("--strict-modes=false"), os("-H"), os(&ini)],
        SYNC_TIMEOUT,
    );
    assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    assert!(exists_nofollow(&s.ran) && exists_nofollow(&s.hooked));
}

#[test]
fn a_rules_file_others_may_write_to_is_refused() {
    let s = setup("strict-rules");
    let t = &s.t;
    let rules = t.root.join("rules");
    write(&rules, b"+f.*\n");
    chmod(&rules, 0o666);
    let args = |strict: bool| {
        let mut a = vec![];
        if !strict {
            a.push(os("--strict-modes=false"));
        }
        a.extend([
            os("-M"),
            os("shell"),
            os("-S"),
            os(&s.handler),
            os("-W"),
            os(&t.src),
            os("-D"),
            os(&t.dst),
            os("-R"),
            os(&rules),
            os("--only-initialsync"),
        ]);
        a
    };
    let f = run(&t.root, &args(true), SYNC_TIMEOUT);
    assert_eq!(f.status.code(), Some(2), "{}", f.describe());
    let r = showp(&rules);
    let line = refusal(
        &f.stderr,
        "rules file",
        &rules,
        "uid 0 (root)",
        "0666",
        &format!("chmod go-w {r}"),
    );
    assert!(line.contains("(or strict-modes = false)"), "{line}");
    absent(&s.ran);
    // A profile naming it: refused too, unless the profile says strict-modes = false.
    let profiles = t.root.join("profiles");
    mkdir(&profiles);
    let rules_key = format!("rules-file = \"{r}\"\n");
    write(
        &profiles.join("web.toml"),
        profile_text(t, &s.handler, &s.hook, &rules_key).as_bytes(),
    );
    let f = profiles_run(t, &profiles, "web", true);
    assert_eq!(f.status.code(), Some(2), "{}", f.describe());
    refusal(
        &f.stderr,
        "rules file",
        &rules,
        "uid 0 (root)",
        "0666",
        &format!("chmod go-w {r}"),
    );
    absent(&s.ran);
    absent(&s.hooked);
    write(
        &profiles.join("web.toml"),
        profile_text(
            t,
            &s.handler,
            &s.hook,
            &(rules_key + "strict-modes = false\n"),
        )
        .as_bytes(),
    );
    let f = profiles_run(t, &profiles, "web", true);
    assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    assert!(exists_nofollow(&s.ran) && exists_nofollow(&s.hooked));
    remove_file(&s.ran);
    // And the command line's opt-out.
    let f = run(&t.root, &args(false), SYNC_TIMEOUT);
    assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    assert!(exists_nofollow(&s.ran));
}

#[test]
fn a_handler_in_a_directory_of_another_user_is_refused() {
    let s = setup("strict-handler-dir");
    let t = &s.t;
    // Root's own 0755 handler, in a directory nobody owns: nobody can replace it.
    let theirs = t.root.join("theirs");
    mkdir(&theirs);
    chmod(&theirs, 0o755);
    chown_nobody(&theirs);
    let handler = theirs.join("handler");
    script(&handler, &s.ran);
    let profiles = t.root.join("profiles");
    mkdir(&profiles);
    let text = profile_text(t, &handler, &s.hook, "");
    write(&profiles.join("web.toml"), text.as_bytes());
    let f = profiles_run(t, &profiles, "web", true);
    assert_eq!(f.status.code(), Some(2), "{}", f.describe());
    let d = showp(&theirs);
    let line = refusal(
        &f.stderr,
        "sync handler",
        &handler,
        "uid 65534 (nobody)",
        "0755",
        &format!("chown root: {d}"),
    );
    assert!(
        line.contains(&format!("directory {d} is owned by")) && !line.contains("chmod"),
        "{line}"
    );
    absent(&s.ran);
    absent(&s.hooked);
    write(
        &profiles.join("web.toml"),
        (text + "strict-modes = false\n").as_bytes(),
    );
    let f = profiles_run(t, &profiles, "web", true);
    assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    assert!(exists_nofollow(&s.ran) && exists_nofollow(&s.hooked));
}

#[test]
fn a_handler_and_hook_changed_after_the_start_are_refused_at_their_next_run() {
    let s = setup("strict-later");
    let t = &s.t;
    let status = t.root.join("status");
    let args = [
        os("-M"),
        os("shell"),
        os("-S"),
        os(&s.handler),
        os("-W"),
        os(&t.src),
        os("-D"),
        os(&t.dst),
        os("--exit-hook"),
        os(&s.hook),
        os("-t"),
        os("0.1"),
        os("-w"),
        os("0.1"),
        os("--status-file"),
        os(&status),
    ];
    let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &status, &args);
    wait_until(SYNC_TIMEOUT, "the initial sync", || {
        exists_nofollow(&s.ran)
            .then_some(())
            .ok_or_else(|| w.stderr())
    });
    remove_file(&s.ran);
    chown_nobody(&s.handler);
    chmod(&s.hook, 0o775);
    chown_root(&s.hook);
    std::os::unix::fs::chown(&s.hook, None, Some(NOBODY)).unwrap();
    write(&t.s(b"new"), b"x");
    // The sync fails (retries 1 in the classic form): the worker ends.
    let st = w.wait_exit(SYNC_TIMEOUT);
    assert!(!st.success(), "{st}\n{}", w.stderr());
    let h = showp(&s.handler);
    refusal(
        &w.stderr(),
        "sync handler",
        &s.handler,
        "uid 65534 (nobody)",
        "0755",
        &format!("chown root: {h}"),
    );
    // The exit hook, made group-writable for nobody's group after the start.
    let k = showp(&s.hook);
    let line = refusal(
        &w.stderr(),
        "exit hook",
        &s.hook,
        "uid 0 (root)",
        "0775",
        &format!("chmod go-w {k}"),
    );
    assert!(line.contains("writable by its group"), "{line}");
    absent(&s.ran);
    absent(&s.hooked);
}

#[test]
fn a_clsync_binary_of_another_user_is_not_started_by_the_manager() {
    let s = setup("strict-binary");
    let t = &s.t;
    let theirs = t.root.join("bin").join("clsync");
    std::fs::copy(BIN, &theirs).expect("copy clsync");
    chmod(&theirs, 0o755);
    chown_nobody(&theirs);
    let m = Mgr::start_with(&t.root, &["--clsync", &showp(&theirs)]);
    write(
        &m.profiles.join("web.toml"),
        profile_text(t, &s.handler, &s.hook, "").as_bytes(),
    );
    let o = m.cli(&["reload"]);
    assert_eq!(o.code, Some(0), "{}{}\n{}", o.stdout, o.stderr, m.log());
    let mut last = None;
    wait_until(SYNC_TIMEOUT, "web to fail", || {
        last = state_of(&m, "web");
        match &last {
            Some((state, _)) if state == "failed" => Ok(()),
            other => Err(format!("{other:?}\n{}", m.log())),
        }
    });
    let (_, error) = last.unwrap();
    let b = showp(&theirs);
    refusal(
        &error,
        "clsync binary",
        &theirs,
        "uid 65534 (nobody)",
        "0755",
        &format!("chown root: {b}"),
    );
    absent(&s.ran);
    absent(&s.hooked);
}
