use super::*;

#[test]
fn short_form_is_quick() {
    let c = parse(["clsync", "/a", "/b"]).unwrap();
    assert_eq!(c.src, PathBuf::from("/a"));
    assert_eq!(c.delays.collect, Duration::from_millis(200));
    assert_eq!(c.threshold_bigfile, 134217728);
}

#[test]
fn classic_form_keeps_the_original_defaults() {
    let c = parse(["clsync", "-Mrsyncdirect", "-W/a", "-D", "/b", "-w5"]).unwrap();
    assert_eq!(c.delays.collect, Duration::from_secs(30));
    assert_eq!(c.delays.sync, Duration::from_secs(5));
    assert_eq!(c.delays.collect_bigfile, Duration::from_secs(1800));
    assert_eq!(c.dst, PathBuf::from("/b"));
}

/// As getopt in the original: an option given again replaces the earlier value
/// (clsync(1)'s "Making two directories synchronous" gives -M twice).
#[test]
fn an_option_given_again_replaces_the_earlier_value() {
    let c = parse([
        "clsync",
        "-Mshell",
        "-Mrsyncdirect",
        "-W/a",
        "-D/b",
        "-w1",
        "-w2",
    ])
    .unwrap();
    assert_eq!(c.mode, crate::sync::handler::Mode::RsyncDirect);
    assert_eq!(c.delays.sync, Duration::from_secs(2));
}

/// The original's -d takes its level attached or not at all (`-d5`, `-d -d`).
#[test]
fn debug_without_a_level() {
    assert_eq!(
        parse(["clsync", "-d", "-Mrsyncdirect", "-W/a", "-D/b"])
            .unwrap()
            .debug,
        1
    );
    assert_eq!(parse(["clsync", "-d5", "-W/a", "-D/b"]).unwrap().debug, 5);
    assert_eq!(parse(["clsync", "-d", "2", "/a", "/b"]).unwrap().debug, 2);
}

/// The original README's recommended lines, in clsync 0.1's form.
#[test]
fn command_lines_of_clsync_0_1() {
    let c = parse([
        "clsync",
        "-R2",
        "-d",
        "/l",
        "/a",
        "/usr/bin/rsync",
        "/dev/zero",
        "/b",
    ])
    .unwrap();
    assert_eq!(c.mode, crate::sync::handler::Mode::RsyncDirect);
    assert_eq!(
        (c.src.as_path(), c.dst.as_path()),
        (std::path::Path::new("/a"), std::path::Path::new("/b"))
    );
    assert_eq!(c.lists_dir, Some(PathBuf::from("/l")));
    assert_eq!(c.rules_file, None, "/dev/zero: no rules");
    // Today's message for a line that is not 0.1's.
    assert!(parse(["clsync", "-d", "x", "/a", "/b"])
        .unwrap_err()
        .to_string()
        .contains("invalid value 'x'"));
}

#[test]
fn unimplemented_things_are_errors() {
    assert!(parse(["clsync", "-M", "shell", "-W/a", "-D/b"])
        .unwrap_err()
        .to_string()
        .contains("mode shell needs a sync handler (-S"));
    assert!(parse(["clsync", "-M", "sell", "-W/a"])
        .unwrap_err()
        .to_string()
        .contains("unknown mode \"sell\""));
    assert!(parse(["clsync", "--no-such-option", "/a", "/b"]).is_err());
    assert!(parse(["clsync", "-p", "sometimes", "/a", "/b"])
        .unwrap_err()
        .to_string()
        .contains("expected off, safe or full"));
    assert!(parse(["clsync", "--uid=no-such-user-here", "/a", "/b"])
        .unwrap_err()
        .to_string()
        .contains("unknown user"));
    assert!(parse(["clsync", "/a"]).is_err());
    assert!(parse(["clsync", "-b1", "/a", "/b"]).unwrap().background);
    assert!(!parse(["clsync", "-b0", "/a", "/b"]).unwrap().background);
    assert!(parse(["clsync", "-b", "/a", "/b"]).unwrap().background);
    assert!(parse(["clsync", "-W/a"]).is_err());
    assert!(parse(["clsync", "-t", "abc", "/a", "/b"]).is_err());
}

#[test]
fn monitor_inotify_or_fanotify() {
    assert!(parse(["clsync", "--monitor", "inotify", "/a", "/b"]).is_ok());
    assert_eq!(
        parse(["clsync", "--monitor", "fanotify", "/a", "/b"])
            .unwrap()
            .monitor,
        crate::watch::Monitor::Fanotify
    );
    assert!(parse(["clsync", "--monitor=dnotify", "/a", "/b"])
        .unwrap_err()
        .to_string()
        .contains("expected inotify or fanotify"));
    assert!(parse(["clsync", "--monitor=kqueue", "/a", "/b"])
        .unwrap_err()
        .to_string()
        .contains("not supported"));
}

#[test]
fn non_utf8_paths_pass_through() {
    use std::os::unix::ffi::OsStrExt;
    let s = std::ffi::OsStr::from_bytes(b"/tmp/\xff");
    let c = parse([
        std::ffi::OsStr::new("clsync"),
        s,
        std::ffi::OsStr::new("/b"),
    ])
    .unwrap();
    assert_eq!(c.src.as_os_str().as_bytes(), b"/tmp/\xff");
}

/// `clsync OPTIONS /a /b`.
fn with(options: &[&str]) -> Result<Config, clap::Error> {
    let mut args = vec!["clsync"];
    args.extend(options);
    args.extend(["/a", "/b"]);
    parse(args)
}

/// Options, then the expected sandbox, sandbox-network, sandbox-read and sandbox-exec.
type Case<'a> = (
    &'a [&'a str],
    crate::sandbox::Mode,
    crate::sandbox::Network,
    &'a [&'a str],
    &'a [&'a str],
);

/// Each of the original's sandbox options is accepted and gives the configuration its
/// table in docs/cli.md describes: the options that ask for confinement turn the sandbox
/// on, `--detach-network` picks the network, the lists become granted paths, the rest
/// change nothing.
#[test]
fn the_originals_sandbox_options_are_accepted_and_mapped() {
    use crate::sandbox::{Mode, Network};
    use Mode::{Off, On, Required};
    use Network::{Auto, Host, Private};
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // options, sandbox, sandbox-network, sandbox-read, sandbox-exec
        (&[], Off, Auto, &[], &[]),
        (&["--secure-splitting"], On, Auto, &[], &[]),
        (&["--splitting=thread"], On, Auto, &[], &[]),
        (&["--splitting", "process"], On, Auto, &[], &[]),
        (&["--splitting=off"], Off, Auto, &[], &[]),
        (&["--splitting="], Off, Auto, &[], &[]),
        (&["--check-execvp-arguments"], On, Auto, &[], &[]),
        (&["--check-execvp-arguments=0"], Off, Auto, &[], &[]),
        (&["--seccomp-filter"], On, Auto, &[], &[]),
        (&["--seccomp-filter=0x1"], On, Auto, &[], &[]),
        (&["--seccomp-filter=0"], Off, Auto, &[], &[]),
        (&["--forbid-devices"], On, Auto, &[], &[]),
        (&["--detach-miscellanea"], On, Auto, &[], &[]),
        (&["--permit-mprotect"], Off, Auto, &[], &[]),
        (&["--shm-mprotect=1"], Off, Auto, &[], &[]),
        (&["--forget-privthread-info"], Off, Auto, &[], &[]),
        (&["--detach-ipc=0"], Off, Auto, &[], &[]),
        (&["--detach-ipc", "1"], Off, Auto, &[], &[]),
        (&["--cgroup-group-name=clsync/%PID%"], Off, Auto, &[], &[]),
        (&["--cancel-syscalls=mon_stat"], Off, Auto, &[], &[]),
        (&["--cancel-syscalls="], Off, Auto, &[], &[]),
        (&["--pivot-root=off"], Off, Auto, &[], &[]),
        (&["--chroot="], Off, Auto, &[], &[]),
        (&["--detach-network=everywhere"], On, Private, &[], &[]),
        (&["--detach-network=non-privileged"], Off, Auto, &[], &[]),
        (&["--detach-network", "off"], Off, Host, &[], &[]),
        (&["--detach-network="], Off, Host, &[], &[]),
        // Ours is the more precise: it wins.
        (&["--detach-network=off", "--sandbox-network=private"], Off, Private, &[], &[]),
        (&["--mountpoints=/srv,/opt"], On, Auto, &["/srv", "/opt"], &[]),
        (&["--mountpoints=/x,,/srv", "--sandbox-read=/etc/app"], On, Auto, &["/srv", "/etc/app"], &[]),
        (&["--mountpoints="], Off, Auto, &[], &[]),
        (&["--add-permitted-hook-files=/opt/h1,/opt/h2"], Off, Auto, &[], &["/opt/h1", "/opt/h2"]),
        (&["--secure-splitting", "--add-permitted-hook-files", "/opt/h", "--sandbox-exec=/opt/i"], On, Auto, &[], &["/opt/h", "/opt/i"]),
        // Never less than asked for with --sandbox.
        (&["--secure-splitting", "--sandbox=required"], Required, Auto, &[], &[]),
        (&["--sandbox", "--splitting=off"], On, Auto, &[], &[]),
    ];
    let paths = |l: &[&str]| l.iter().map(PathBuf::from).collect::<Vec<_>>();
    for (options, sandbox, network, read, exec) in cases {
        assert_eq!(with(options).unwrap().chroot, None, "{options:?}");
        let c = with(options).unwrap_or_else(|e| panic!("{options:?}: {e}"));
        assert_eq!(
            (c.sandbox, c.sandbox_network),
            (*sandbox, *network),
            "{options:?}"
        );
        assert_eq!(c.sandbox_extra.read, paths(read), "{options:?}");
        assert_eq!(c.sandbox_extra.exec, paths(exec), "{options:?}");
        assert!(c.sandbox_extra.write.is_empty(), "{options:?}");
    }
}

/// `--privileged-uid`/`-gid` are the default of `--sync-handler-uid`/`-gid`, as in the
/// original: the sync-handler ones win when given too.
#[test]
fn privileged_uid_and_gid_are_the_sync_handlers_default() {
    let c = with(&["--privileged-uid=nobody", "--privileged-gid=0"]).unwrap();
    assert_eq!(
        (c.sync_handler_uid, c.sync_handler_gid),
        (Some(65534), Some(0))
    );
    let c = with(&[
        "--privileged-uid=nobody",
        "--sync-handler-uid=0",
        "--sync-handler-gid=7",
        "--privileged-gid=0",
    ])
    .unwrap();
    assert_eq!((c.sync_handler_uid, c.sync_handler_gid), (Some(0), Some(7)));
    let c = with(&[]).unwrap();
    assert_eq!((c.sync_handler_uid, c.sync_handler_gid), (None, None));
}

/// A value the original would not take is refused naming the option and the value; so is
/// `--chroot` (with why and what to use instead), and a contradiction with `--sandbox`.
#[test]
fn the_originals_sandbox_options_refuse_bad_values() {
    #[rustfmt::skip]
    let cases: &[(&[&str], &str)] = &[
        (&["--splitting=sometimes"], "--splitting \"sometimes\": expected off, thread or process"),
        (&["--detach-network=all"], "--detach-network \"all\": expected everywhere, non-privileged or off"),
        (&["--pivot-root=sideways"], "--pivot-root \"sideways\": expected off, direct, auto or auto-ro"),
        (&["--pivot-root=auto-ro"], "--pivot-root needs --chroot, as in the original"),
        (&["--sandbox=false", "--chroot=/j", "--pivot-root=auto"], "--sandbox=false contradicts"),
        (&["--seccomp-filter=yes"], "--seccomp-filter \"yes\": not a number"),
        (&["--forbid-devices=-1"], "--forbid-devices \"-1\": must not be negative"),
        (&["--cancel-syscalls=mon_lstat"], "--cancel-syscalls \"mon_lstat\": \"mon_lstat\" is not mon_stat"),
        (&["--privileged-uid=no-such-user-here"], "--privileged-uid: unknown user"),
        (&["--privileged-gid=no-such-group-here"], "--privileged-gid: unknown group"),
        (&["--sandbox=false", "--seccomp-filter"], "--sandbox=false contradicts the original's sandbox options"),
        (&["--secure-splitting=1"], "unexpected value '1' for '--secure-splitting'"),
    ];
    for (options, want) in cases {
        let e = with(options).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(want), "{options:?}: {e}");
    }
    // The original's --detach-ipc takes a value (a word after it is that value).
    let e = parse(["clsync", "/a", "/b", "--detach-ipc"]).unwrap_err();
    assert!(
        e.to_string()
            .contains("a value is required for '--detach-ipc <N>'"),
        "{e}"
    );
}

/// The original's options turn the sandbox on over a lower layer that has it off, and
/// never turn a `"required"` below into a plain `true`.
#[test]
fn the_originals_sandbox_options_only_raise_the_sandbox_of_a_lower_layer() {
    use crate::config::build::{build, Defaults, Values};
    use crate::sandbox::Mode;
    let layer = |sandbox: Option<Mode>, min: Option<Mode>| Values {
        src: Some("/a".into()),
        dsts: Some(vec!["/b".into()]),
        sandbox,
        sandbox_min: min,
        ..Values::default()
    };
    for (lower, want) in [
        (Some(Mode::Off), Mode::On),
        (None, Mode::On),
        (Some(Mode::Required), Mode::Required),
    ] {
        let v = layer(None, Some(Mode::On)).over(layer(lower, None));
        assert_eq!(
            build(v, Defaults::PROFILE).unwrap().sandbox,
            want,
            "{lower:?}"
        );
    }
}

/// `--chroot DIR` sets the worker's new root (checked and entered at start); a
/// `--pivot-root` other than off needs it and turns the sandbox on, whose filter refuses
/// the escapes the original's unmounting of the old root guarded against.
#[test]
fn chroot_and_pivot_root() {
    use crate::sandbox::Mode;
    let c = with(&["--chroot", "/srv/jail"]).unwrap();
    assert_eq!(c.chroot, Some(PathBuf::from("/srv/jail")));
    assert_eq!(c.sandbox, Mode::Off);
    for way in ["direct", "auto", "auto-ro"] {
        let c = with(&["--chroot=/srv/jail", &format!("--pivot-root={way}")]).unwrap();
        assert_eq!(
            (c.chroot.as_deref(), c.sandbox),
            (Some(std::path::Path::new("/srv/jail")), Mode::On),
            "{way}"
        );
    }
    let c = with(&["--chroot=/srv/jail", "--pivot-root=off"]).unwrap();
    assert_eq!(c.sandbox, Mode::Off);
    assert_eq!(with(&["--chroot="]).unwrap().chroot, None);
    // Fixed at start: a reload does not change it.
    let mut new = with(&["--chroot=/other"]).unwrap();
    assert_eq!(c.restart_needed_for(&new), ["chroot"]);
    let mut old = c.clone();
    old.reload_from(std::mem::replace(&mut new, with(&[]).unwrap()));
    assert_eq!(old.chroot, Some(PathBuf::from("/srv/jail")));
}

/// `clsync help` and `clsync help check` print the help as `--help` would; `clsync help
/// DST` stays a short form whose source is a directory named `help`.
#[test]
fn help_is_the_help_option_and_help_dst_stays_a_mirror() {
    let os = |v: &[&str]| -> Vec<std::ffi::OsString> { v.iter().map(Into::into).collect() };
    assert_eq!(
        help_as_option(os(&["clsync", "help"])),
        os(&["clsync", "--help"])
    );
    assert_eq!(
        help_as_option(os(&["clsync", "help", "check"])),
        os(&["clsync", "check", "--help"])
    );
    assert_eq!(
        help_as_option(os(&["clsync", "help", "/mnt/mirror"])),
        os(&["clsync", "help", "/mnt/mirror"])
    );
    let e = parse_command(os(&["clsync", "help"])).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
}

#[test]
fn unit_instance_takes_no_profile_block_or_directories() {
    for args in [
        &["clsync", "--unit-instance", "a", "--profile", "a"][..],
        &["clsync", "--unit-instance", "a", "-K", "a"],
        &["clsync", "--unit-instance", "a", "/src", "/dst"],
        &["clsync", "--unit-instance", "a", "-W", "/src"],
    ] {
        let e = parse(args).expect_err("refused").to_string();
        assert!(e.contains("--unit-instance"), "{args:?}: {e}");
    }
}
