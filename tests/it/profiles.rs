//! Profiles: every shipped profile passes `clsync check` and runs against temp dirs;
//! templates run per label; a broken profile is refused with file, line and column.

use crate::common;

use common::*;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

/// The watch directories the shipped profiles name (a site's: /srv/data, /var/www) that
/// do not exist here, which `check` refuses; templates aside (their label decides).
fn shipped_watch_dirs_missing(dir: &Path) -> Vec<std::path::PathBuf> {
    let profiles = clsync::profile::load_dir(dir).unwrap();
    let mut missing = Vec::new();
    for name in profiles.keys() {
        if clsync::profile::is_template_profile(&profiles, name).unwrap_or(true) {
            continue;
        }
        let r = clsync::profile::resolve(&profiles, name, None).unwrap();
        if let Some(w) = r.values.watch_dir.map(std::path::PathBuf::from) {
            if !w.exists() && !missing.contains(&w) {
                missing.push(w);
            }
        }
    }
    missing
}

#[test]
fn shipped_profiles_pass_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let t = TestDir::new("check-shipped");
    // `check` refuses a watch-dir that does not exist: the examples' are made in a
    // private mount namespace, on a tmpfs over their nearest existing ancestor, so that
    // nothing of this machine's tree is touched.
    let missing = shipped_watch_dirs_missing(&dir);
    let mut tops: Vec<&Path> = missing
        .iter()
        .map(|m| m.ancestors().find(|a| a.exists()).unwrap())
        .collect();
    tops.sort();
    tops.dedup();
    let mut script = String::from("set -e\n");
    for top in &tops {
        assert_ne!(*top, Path::new("/"), "{missing:?}");
        script.push_str(&format!(
            "mkdir -p '{0}'; mount -t tmpfs clsync-check '{0}'\n",
            top.display()
        ));
    }
    for m in &missing {
        script.push_str(&format!("mkdir -p '{}'\n", m.display()));
    }
    script.push_str("exec \"$0\" \"$@\"\n");
    let probe = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        skip("unshare -m (a private mount namespace) is not permitted here");
        return;
    }
    let o = std::process::Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
            BIN,
        ])
        .arg("check")
        .arg("--profiles-dir")
        .arg(&dir)
        .current_dir(&t.root)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for p in shipped_profiles() {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name}: ok ("))),
            "{name} not reported ok:\n{stdout}"
        );
    }
}

/// Each shipped profile, inherited by a test profile that points it at temp dirs.
#[test]
fn shipped_profiles_run_against_temp_dirs() {
    for p in shipped_profiles() {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let t = TestDir::new(&format!("profile-{name}"));
        let prof = t.root.join("profiles");
        mkdir(&prof);
        std::fs::copy(&p, prof.join(p.file_name().unwrap())).unwrap();
        write(
            &prof.join(format!("test-{name}.toml")),
            format!(
                "inherits = \"{name}\"\nwatch-dir = \"{}\"\ndestination-dir = \"{}\"\nstatus-file = \"{}\"\ndelay-collect = 0.1\ndelay-sync = 0.1\n",
                t.src.display(),
                t.dst.display(),
                t.status.display()
            )
            .as_bytes(),
        );
        // The profile's own rules and globs decide what must arrive and what must not.
        let rules = clsync::profile_config::load(&prof, &format!("test-{name}"), None)
            .unwrap()
            .load_rules()
            .unwrap();
        let excluded = |rel: &[u8], is_dir: bool| {
            use clsync::rules::Kind as K;
            rules.excluded(rel, if is_dir { K::Dir } else { K::File })
        };
        mkdir_p(&t.s(b"a/b"));
        write(&t.s(b"a/b/before"), b"initial");
        write(&t.s(b"passwd"), b"root:x:0:0::/root:/bin/sh");
        let args: Vec<OsString> = vec![
            "--profiles-dir".into(),
            prof.clone().into(),
            "--profile".into(),
            format!("test-{name}").into(),
        ];
        let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &t.status, &args);
        w.wait_synced_ctx(SYNC_TIMEOUT, &name, &excluded);
        write(&t.s(b"a/b/live"), b"live change");
        mkdir_p(&t.s(b"c/d"));
        write(&t.s(b"c/d/e"), b"new dir");
        mkdir_p(&t.s(b"ssh"));
        write(&t.s(b"ssh/sshd_config"), b"PermitRootLogin no");
        write(&t.s(b"ssh/moduli"), b"not wanted by sparse-include");
        w.wait_synced_ctx(SYNC_TIMEOUT, &name, &excluded);
        w.stop_ok();
        assert!(
            t.d(b"passwd").exists(),
            "{name}: passwd arrives in every profile"
        );
        let got = snapshot(&t.dst, &no_filter).unwrap();
        for (rel, e) in &got {
            assert!(
                rel.is_empty() || !excluded(rel, e.kind == Kind::Dir),
                "{name}: {} is excluded by the profile's rules but was mirrored",
                show(rel)
            );
        }
    }
}

#[test]
fn a_template_runs_per_label() {
    let t = TestDir::new("template");
    let prof = t.root.join("profiles");
    mkdir(&prof);
    mkdir(&t.s(b"web01"));
    write(&t.s(b"web01/index.html"), b"hello");
    write(
        &prof.join("ct.toml"),
        format!(
            "watch-dir = \"{}/%label%\"\ndestination-dir = \"{}/%label%\"\nstatus-file = \"{}\"\ndelay-collect = \"100ms\"\ndelay-sync = \"100ms\"\n",
            t.src.display(),
            t.dst.display(),
            t.status.display()
        )
        .as_bytes(),
    );
    // PROFILE-LABEL, as `clsync-manager start lxc-web01` will pass it.
    let args: Vec<OsString> = vec![
        "--profiles-dir".into(),
        prof.into(),
        "--profile".into(),
        "ct-web01".into(),
    ];
    let mut w = Worker::start_raw(&t.root, &t.s(b"web01"), &t.d(b"web01"), &t.status, &args);
    write(&t.s(b"web01/new"), b"x");
    w.wait_synced(SYNC_TIMEOUT);
    assert!(
        w.stderr().contains("clsync[web01]"),
        "log lines carry the label:\n{}",
        w.stderr()
    );
    w.stop_ok();
}

#[test]
fn a_broken_profile_is_refused_with_file_line_and_column() {
    let t = TestDir::new("badprofile");
    let prof = t.root.join("profiles");
    mkdir(&prof);
    write(&t.d(b"sentinel"), b"keep");
    write(
        &prof.join("web.toml"),
        format!(
            "watch-dir = \"{}\"\ndestination-dir = \"{}\"\ndelay-colect = 3\n",
            t.src.display(),
            t.dst.display()
        )
        .as_bytes(),
    );
    let check = run(
        &t.root,
        &[
            OsString::from("check"),
            "--profiles-dir".into(),
            prof.clone().into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(check.status.code(), Some(2), "{}", check.stdout);
    assert!(
        check.stdout.contains(
            "web.toml:3:1: unknown key \"delay-colect\" (did you mean \"delay-collect\"?)"
        ),
        "{}",
        check.stdout
    );
    let start = run(
        &t.root,
        &[
            OsString::from("--profiles-dir"),
            prof.into(),
            "--profile".into(),
            "web".into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(start.status.code(), Some(2), "{}", start.stderr);
    assert!(start.stderr.contains("web.toml:3:1"), "{}", start.stderr);
    assert!(t.d(b"sentinel").exists());
    assert_eq!(
        std::fs::read_dir(&t.dst).unwrap().count(),
        1,
        "nothing synced"
    );
}

#[test]
fn profile_globs_exclude_and_include() {
    let t = TestDir::new("globs");
    let prof = t.root.join("profiles");
    mkdir(&prof);
    write(
        &prof.join("g.toml"),
        format!(
            "watch-dir = \"{}\"\ndestination-dir = \"{}\"\nstatus-file = \"{}\"\ndelay-collect = 0.1\ndelay-sync = 0.1\nexclude = [\"*.tmp\", \"cache/\"]\ninclude = [\"keep.tmp\"]\n",
            t.src.display(),
            t.dst.display(),
            t.status.display()
        )
        .as_bytes(),
    );
    write(&t.s(b"a.tmp"), b"excluded");
    write(&t.s(b"keep.tmp"), b"included");
    mkdir_p(&t.s(b"cache"));
    write(&t.s(b"cache/x"), b"excluded dir");
    let args: Vec<OsString> = vec![
        "--profiles-dir".into(),
        prof.clone().into(),
        "--profile".into(),
        "g".into(),
    ];
    let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &t.status, &args);
    mkdir_p(&t.s(b"sub/cache/deeper"));
    write(&t.s(b"sub/b.tmp"), b"excluded at depth");
    write(&t.s(b"sub/keep.tmp"), b"included at depth");
    write(&t.s(b"sub/cache/deeper/y"), b"below an excluded dir");
    mkdir_p(&t.s(b"other"));
    write(
        &t.s(b"other/cache"),
        b"a file named cache is not a directory",
    );
    let excluded = |rel: &[u8], is_dir: bool| {
        let name = rel.rsplit(|&b| b == b'/').next().unwrap_or_default();
        (name.ends_with(b".tmp") && name != b"keep.tmp") || (is_dir && name == b"cache")
    };
    w.wait_synced_ctx(SYNC_TIMEOUT, "globs", &excluded);
    w.stop_ok();
    for p in [&b"a.tmp"[..], b"cache", b"sub/b.tmp", b"sub/cache"] {
        assert!(
            !exists_nofollow(&t.d(p)),
            "{} must not be mirrored",
            show(p)
        );
    }
    for p in [&b"keep.tmp"[..], b"sub/keep.tmp", b"other/cache"] {
        assert!(exists_nofollow(&t.d(p)), "{} must be mirrored", show(p));
    }
}

/// SIGHUP re-reads the rules: what they no longer exclude is synced, and a broken rules
/// file keeps the old rules.
#[test]
fn sighup_reloads_the_rules() {
    let t = TestDir::new("hup");
    let rules = t.root.join("rules");
    write(&rules, b"-f\\.tmp$\n");
    write(&t.s(b"x.tmp"), b"held back");
    write(&t.s(b"plain"), b"synced");
    let mut w = t.start(&[OsString::from("-R"), rules.clone().into()]);
    wait_until(SYNC_TIMEOUT, "plain synced", || {
        exists_nofollow(&t.d(b"plain"))
            .then_some(())
            .ok_or_else(|| "not yet".into())
    });
    assert!(!exists_nofollow(&t.d(b"x.tmp")));
    write(&rules, b"-fbroken(\n");
    w.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until(SYNC_TIMEOUT, "the broken rules to be refused", || {
        w.stderr()
            .contains("keeping the old rules")
            .then_some(())
            .ok_or_else(|| "not yet".into())
    });
    write(&t.s(b"y.tmp"), b"still held back");
    write(&t.s(b"plain2"), b"synced");
    wait_until(SYNC_TIMEOUT, "plain2 synced", || {
        exists_nofollow(&t.d(b"plain2"))
            .then_some(())
            .ok_or_else(|| "not yet".into())
    });
    assert!(!exists_nofollow(&t.d(b"y.tmp")), "old rules still in force");
    write(&rules, b"# nothing excluded now\n");
    w.signal(nix::sys::signal::Signal::SIGHUP);
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

/// An existing configuration of the original runs as it is: `-H FILE -K BLOCK`.
#[test]
fn the_original_ini_config_runs_with_dash_h() {
    let t = TestDir::new("legacy");
    mkdir(&t.s(b"web"));
    write(&t.s(b"web/index.html"), b"hello");
    let conf = t.root.join("clsync.conf");
    write(
        &conf,
        format!(
            "# the original's format\n[default]\nmode = rsyncdirect\ndelay-sync = 30\ndelay-collect = 30\nwatch-dir = {src}/%label%\ndestination-dir = {dst}/%label%\n\n[fast]\nconfig-block-inherits = default\ndelay-sync = 0\ndelay-collect = 0\n",
            src = t.src.display(),
            dst = t.dst.display()
        )
        .as_bytes(),
    );
    let args: Vec<OsString> = vec![
        "-H".into(),
        conf.into(),
        "-K".into(),
        "fast".into(),
        "-l".into(),
        "web".into(),
        "--status-file".into(),
        t.status.clone().into(),
    ];
    let mut w = Worker::start_raw(&t.root, &t.s(b"web"), &t.d(b"web"), &t.status, &args);
    write(&t.s(b"web/live"), b"changed");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

/// `clsync import` turns the original's production example into profiles that resolve.
#[test]
fn import_of_the_originals_production_example() {
    let t = TestDir::new("import");
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy/production.conf");
    let prof = t.root.join("profiles");
    let f = run(
        &t.root,
        &[
            OsString::from("import"),
            "--profiles-dir".into(),
            prof.clone().into(),
            conf.clone().into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert!(prof.join("lxc-brother.toml").exists(), "{}", f.stdout);
    let show = run(
        &t.root,
        &[
            OsString::from("show-config"),
            "--profiles-dir".into(),
            prof.clone().into(),
            "lxc-brother@web01".into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(show.status.code(), Some(0), "{}", show.stderr);
    assert!(show.stdout.contains("web01"), "{}", show.stdout);
    // A second import never overwrites.
    let again = run(
        &t.root,
        &[
            OsString::from("import"),
            "--profiles-dir".into(),
            prof.into(),
            conf.into(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(again.status.code(), Some(2), "{}", again.stderr);
    assert!(again.stderr.contains("not overwriting"), "{}", again.stderr);
}

/// SIGHUP re-reads the profile: what can change at run time changes (here the collect
/// delay, so a change queued for an hour is synced at once), what needs a restart is
/// named and kept, and a broken profile changes nothing.
#[test]
fn sighup_reloads_the_profile() {
    let t = TestDir::new("hup-profile");
    let prof = t.root.join("profiles");
    mkdir(&prof);
    let text = |collect: &str, dst: &std::path::Path| {
        format!(
            "watch-dir = \"{}\"\ndestination-dir = \"{}\"\nstatus-file = \"{}\"\ndelay-collect = {collect}\ndelay-sync = 0\n",
            t.src.display(),
            dst.display(),
            t.status.display()
        )
    };
    let file = prof.join("p.toml");
    write(&file, text("3600", &t.dst).as_bytes());
    let args: Vec<OsString> = vec![
        "--profiles-dir".into(),
        prof.clone().into(),
        "--profile".into(),
        "p".into(),
    ];
    let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &t.status, &args);
    write(&t.s(b"queued"), b"waits an hour");
    // A broken profile: the old configuration stays.
    write(&file, b"delay-collect = \"soon\"\n");
    w.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until(SYNC_TIMEOUT, "the reload error", || {
        let log = w.stderr();
        log.contains("signal HUP: keeping the old configuration")
            .then_some(())
            .ok_or(log)
    });
    w.assert_alive();
    assert!(!t.d(b"queued").exists(), "still an hour to go");
    let other = t.root.join("elsewhere");
    write(&file, text("0.1", &other).as_bytes());
    w.signal(nix::sys::signal::Signal::SIGHUP);
    w.wait_synced(SYNC_TIMEOUT);
    let log = w.stderr();
    assert!(
        log.contains("signal HUP: destination-dir changed; that takes a restart"),
        "{log}"
    );
    assert!(!other.exists(), "the destination did not change");
    w.stop_ok();
}

/// A broken profile (a typo in a key) and one that inherits from it, beside good ones:
/// only those two fail; `clsync --profile`, `check` and the manager go on with the rest.
#[test]
fn one_broken_profile_does_not_stop_the_others() {
    let t = TestDir::new("one-broken");
    let prof = t.root.join("profiles");
    mkdir(&prof);
    write(&t.s(b"file"), b"content");
    let src2 = t.root.join("src2");
    let dst2 = t.root.join("dst2");
    mkdir(&src2);
    write(&src2.join("file2"), b"content 2");
    let pair = |s: &Path, d: &Path| {
        common::profiles::with_own_index(&t.root, &common::profiles::mirror(s, d, ""))
    };
    write(&prof.join("good.toml"), pair(&t.src, &t.dst).as_bytes());
    write(&prof.join("mirror.toml"), pair(&src2, &dst2).as_bytes());
    write(
        &prof.join("broken.toml"),
        b"autostart = true\ndelay-colect = 3\n",
    );
    write(
        &prof.join("heir.toml"),
        format!(
            "inherits = \"broken\"\nautostart = true\n{}",
            pair(&src2, &dst2)
        )
        .as_bytes(),
    );
    let dir: [OsString; 2] = ["--profiles-dir".into(), prof.clone().into()];

    // The worker runs a good profile.
    let mut args = dir.to_vec();
    args.extend([
        "--profile".into(),
        "good".into(),
        "--only-initialsync".into(),
    ]);
    let f = run(&t.root, &args, Duration::from_secs(30));
    assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    assert_eq!(std::fs::read(t.d(b"file")).unwrap(), b"content");
    // The broken one and its heir are refused, each naming the broken file.
    for name in ["broken", "heir"] {
        let mut args = dir.to_vec();
        args.extend(["--profile".into(), name.into()]);
        let f = run(&t.root, &args, Duration::from_secs(30));
        assert_eq!(f.status.code(), Some(2), "{name}: {}", f.describe());
        assert!(
            f.first_line()
                .contains("broken.toml:2:1: unknown key \"delay-colect\""),
            "{name}: {}",
            f.describe()
        );
    }

    // check reports every profile, ok or its error, and fails.
    let mut args = vec![OsString::from("check")];
    args.extend(dir.iter().cloned());
    let f = run(&t.root, &args, Duration::from_secs(30));
    assert_ne!(f.status.code(), Some(0), "{}", f.describe());
    let lines: Vec<&str> = f.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "one line per profile:\n{}", f.stdout);
    let ok = |name: &str, s: &Path, d: &Path| {
        // The destination may not exist yet: its parent does.
        let real = |p: &Path| {
            let parent = p.parent().unwrap().canonicalize().unwrap();
            parent.join(p.file_name().unwrap()).display().to_string()
        };
        format!("{name}: ok ({} -> {})", real(s), real(d))
    };
    assert!(
        lines.contains(&ok("good", &t.src, &t.dst).as_str())
            && lines.contains(&ok("mirror", &src2, &dst2).as_str()),
        "{}",
        f.stdout
    );
    assert!(
        lines.iter().any(|l| l.ends_with(
            "broken.toml:2:1: unknown key \"delay-colect\" (did you mean \"delay-collect\"?)"
        )),
        "{}",
        f.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("heir.toml: inherits \"broken\", which is broken:")),
        "{}",
        f.stdout
    );

    // The manager: broken and heir (autostart) are failed, the others start.
    let m = common::manager::Mgr::start(&t.root);
    let o = m.cli(&["start", "mirror"]);
    assert_eq!(o.code, Some(0), "{}{}\n{}", o.stdout, o.stderr, m.log());
    wait_until(SYNC_TIMEOUT, "mirror to be running", || {
        let running = m
            .status()
            .iter()
            .any(|i| i["name"] == "mirror" && i["state"] == "running");
        running.then_some(()).ok_or_else(|| m.log())
    });
    assert_eq!(std::fs::read(dst2.join("file2")).unwrap(), b"content 2");
    let status = m.status();
    let state = |n: &str| {
        status.iter().find(|i| i["name"] == n).map(|i| {
            (
                i["state"].as_str().unwrap_or("").to_string(),
                i["last_error"].to_string(),
            )
        })
    };
    assert_eq!(
        state("mirror").map(|s| s.0).as_deref(),
        Some("running"),
        "{status:?}"
    );
    for n in ["broken", "heir"] {
        let (st, err) = state(n).unwrap_or_else(|| panic!("{n} not listed: {status:?}"));
        assert_eq!(st, "failed", "{n}: {status:?}");
        assert!(err.contains("broken.toml:2:1"), "{n}: {err}");
    }
    assert!(state("good").is_none(), "good is not autostart: {status:?}");
    let o = m.cli(&["start", "broken"]);
    assert_ne!(o.code, Some(0), "{}", o.stdout);
    assert!(o.stderr.contains("broken.toml:2:1"), "{}", o.stderr);
    // Still running the good one.
    assert_eq!(
        m.status()
            .iter()
            .find(|i| i["name"] == "mirror")
            .map(|i| i["state"].clone()),
        Some(serde_json::json!("running"))
    );
}

/// profiles/backup.toml retries with backoff instead of exiting on its first failed
/// sync (a backup disk that is away or full comes back).
#[test]
fn the_backup_profile_retries_a_failed_sync() {
    let t = TestDir::new("backup-retries");
    let prof = t.root.join("profiles");
    mkdir(&prof);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/backup.toml");
    std::fs::copy(&shipped, prof.join("backup.toml")).unwrap();
    write(
        &prof.join("test-backup.toml"),
        format!(
            "inherits = \"backup\"\nwatch-dir = \"{}\"\ndestination-dir = \"{}\"\nstatus-file = \"{}\"\ndelay-collect = 0.1\ndelay-sync = 0.1\n",
            t.src.display(),
            t.dst.display(),
            t.status.display()
        )
        .as_bytes(),
    );
    write(&t.s(b"f"), b"x");
    let ro = Tmpfs::mount(&t.dst, "ro");
    let args: Vec<OsString> = vec![
        "--profiles-dir".into(),
        prof.into(),
        "--profile".into(),
        "test-backup".into(),
    ];
    let stderr = t.root.join("backup.stderr");
    let mut child = std::process::Command::new(BIN)
        .args(common::own_index(&t.root, &args))
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut exited = None;
    wait_until(SYNC_TIMEOUT, "two failed tries", || {
        let log = read_lossy(&stderr);
        exited = exited.or(child.try_wait().unwrap());
        let fails = log.lines().filter(|l| l.contains("sync failed")).count();
        (fails >= 2 || exited.is_some()).then_some(()).ok_or(log)
    });
    let log = read_lossy(&stderr);
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    drop(ro);
    assert!(
        alive,
        "the backup profile gave up after a failed sync:\n{log}"
    );
    assert!(!log.contains("giving up"), "{log}");
}

/// A status file under a directory that does not exist yet (/run/clsync outside the
/// systemd units): the worker creates the directory; no warning per status change.
#[test]
fn the_status_file_directory_is_created() {
    let t = TestDir::new("status-dir");
    let status = t.root.join("run/clsync/mirror.status");
    write(&t.s(b"f"), b"x");
    let args: Vec<OsString> = vec![
        "-t".into(),
        "0.1".into(),
        "-w".into(),
        "0.1".into(),
        "--status-file".into(),
        status.clone().into(),
        t.src.clone().into(),
        t.dst.clone().into(),
    ];
    let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &status, &args);
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
    assert!(!w.stderr().contains("status file"), "{}", w.stderr());
    assert_eq!(std::fs::read_to_string(&status).unwrap(), "exiting\n");
}

/// SIGHUP with changed `rsync-options` and `progress`: both are part of rsync's argv,
/// built at start, so they take a restart; the log names them (they were neither applied
/// nor named) and the worker goes on with the options it started with.
#[test]
fn sighup_names_rsync_options_and_progress_as_needing_a_restart() {
    let t = TestDir::new("hup-rsync-options");
    let prof = t.root.join("profiles");
    mkdir(&prof);
    let text = |more: &str| {
        format!(
            "watch-dir = \"{}\"\ndestination-dir = \"{}\"\nstatus-file = \"{}\"\ndelay-collect = 0.1\ndelay-sync = 0\n{more}",
            t.src.display(),
            t.dst.display(),
            t.status.display()
        )
    };
    let file = prof.join("p.toml");
    write(&file, text("").as_bytes());
    let args: Vec<OsString> = vec![
        "--profiles-dir".into(),
        prof.clone().into(),
        "--profile".into(),
        "p".into(),
    ];
    let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &t.status, &args);
    write(
        &file,
        text("rsync-options = [\"--exclude=*.skip\"]\nprogress = true\n").as_bytes(),
    );
    w.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until(SYNC_TIMEOUT, "the reload", || {
        let log = w.stderr();
        log.contains("signal HUP: configuration and rules reloaded")
            .then_some(())
            .ok_or(log)
    });
    let log = w.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("that takes a restart"))
        .unwrap_or_else(|| panic!("no setting named as needing a restart:\n{log}"));
    assert!(
        line.contains("rsync-options") && line.contains("progress"),
        "{line}"
    );
    // Kept as it was: the exclude it would add is not in force.
    write(&t.s(b"file.skip"), b"still synced");
    w.wait_synced(SYNC_TIMEOUT);
    assert!(t.d(b"file.skip").exists(), "the old options stay in force");
    w.stop_ok();
}

/// SIGHUP with changed ssh settings: they take a restart and are kept, as the log says;
/// they were logged as kept but replaced, so the exit closed the shared connection with
/// the new ssh command. Here each ssh command is a wrapper that records its arguments.
#[test]
fn sighup_keeps_the_ssh_settings_it_says_it_keeps() {
    use common::ssh::Sshd;
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new("hup-ssh");
    let sshd = Sshd::start(&t.root.join("sshd"));
    let wrapper = |name: &str| {
        let script = t.root.join(name);
        let log = t.root.join(format!("{name}.log"));
        write(
            &script,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\nexec ssh \"$@\"\n",
                log.display()
            )
            .as_bytes(),
        );
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        (script, log)
    };
    write(&t.s(b"before"), b"initial");
    let (ssh_a, log_a) = wrapper("ssh-a");
    let (ssh_b, log_b) = wrapper("ssh-b");
    let prof = t.root.join("profiles");
    mkdir(&prof);
    let text = |ssh: &Path| {
        format!(
            "watch-dir = \"{}\"\ndestination-dir = \"{}\"\nstatus-file = \"{}\"\ndelay-collect = 0.1\ndelay-sync = 0\nssh-command = \"{}\"\nssh-identity = \"{}\"\nssh-port = {}\nssh-options = [\"-oStrictHostKeyChecking=no\", \"-oUserKnownHostsFile=/dev/null\", \"-oLogLevel=ERROR\", \"-oConnectTimeout=5\"]\n",
            t.src.display(),
            sshd.dest(&t.dst),
            t.status.display(),
            ssh.display(),
            sshd.key.display(),
            sshd.port
        )
    };
    let file = prof.join("p.toml");
    write(&file, text(&ssh_a).as_bytes());
    let args: Vec<OsString> = vec![
        "--profiles-dir".into(),
        prof.clone().into(),
        "--profile".into(),
        "p".into(),
    ];
    let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &t.status, &args);
    write(&file, text(&ssh_b).as_bytes());
    w.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until(SYNC_TIMEOUT, "the reload", || {
        let log = w.stderr();
        log.contains("signal HUP: ssh changed; that takes a restart (kept as it was)")
            .then_some(())
            .ok_or(log)
    });
    write(&t.s(b"after-hup"), b"over the old ssh");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
    let a = std::fs::read_to_string(&log_a).unwrap_or_default();
    assert!(
        a.lines().any(|l| l.contains("-O exit")),
        "the exit closes the connection with the ssh command kept:\n{a}"
    );
    assert!(
        !log_b.exists(),
        "the new ssh command ran although kept out: {}",
        std::fs::read_to_string(&log_b).unwrap_or_default()
    );
}

/// The subcommands are clap's like every option: `clsync --help` lists them, and each
/// has its own `--help`.
#[test]
fn subcommands_have_help() {
    let t = TestDir::new("sub-help");
    let top = run(
        &t.root,
        &[OsString::from("--help")],
        Duration::from_secs(30),
    );
    assert_eq!(top.status.code(), Some(0), "{}", top.stderr);
    for sub in ["check", "show-config", "import"] {
        assert!(
            top.stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "clsync --help does not list {sub}:\n{}",
            top.stdout
        );
        let help = run(
            &t.root,
            &[OsString::from(sub), "--help".into()],
            Duration::from_secs(30),
        );
        assert_eq!(help.status.code(), Some(0), "{sub} --help: {}", help.stderr);
        assert!(
            help.stdout.contains("--profiles-dir"),
            "{sub} --help:\n{}",
            help.stdout
        );
    }
    // A stray option is refused by name, as for the worker.
    let bad = run(
        &t.root,
        &[OsString::from("check"), "--label".into(), "x".into()],
        Duration::from_secs(30),
    );
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);
    assert!(bad.stderr.starts_with("clsync: error: "), "{}", bad.stderr);
}

/// `clsync check` names the directories it checked (resolved: through a symlink), and a
/// profile whose watch-dir does not exist fails it: one line naming the file, the key and
/// the value, exit 2 (it said "NAME: ok" and exited 0; only the start refused it);
/// `clsync-manager check` says the same.
#[test]
fn check_names_its_directories_and_fails_on_a_missing_watch_dir() {
    let t = TestDir::new("check-dirs");
    let prof = t.root.join("profiles");
    mkdir(&prof);
    let link = t.root.join("via-link");
    std::os::unix::fs::symlink(&t.src, &link).unwrap();
    write(
        &prof.join("good.toml"),
        common::profiles::mirror(&link, &t.dst, "").as_bytes(),
    );
    let dir: [OsString; 3] = ["check".into(), "--profiles-dir".into(), prof.clone().into()];
    let f = run(&t.root, &dir, Duration::from_secs(30));
    let real = |p: &Path| p.canonicalize().unwrap().display().to_string();
    assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    assert_eq!(
        f.stdout,
        format!("good: ok ({} -> {})\n", real(&t.src), real(&t.dst))
    );
    let gone = t.root.join("gone");
    write(
        &prof.join("gone.toml"),
        common::profiles::mirror(&gone, &t.dst, "").as_bytes(),
    );
    let want = format!(
        "{}: watch-dir = \"{}\": no such directory",
        prof.join("gone.toml").display(),
        gone.display()
    );
    let f = run(&t.root, &dir, Duration::from_secs(30));
    assert_eq!(f.status.code(), Some(2), "{}", f.describe());
    let lines: Vec<&str> = f.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", f.stdout);
    assert_eq!(lines[0], want, "{}", f.stdout);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_clsync-manager"))
        .args(dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == want),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!gone.exists(), "check made nothing");
}
