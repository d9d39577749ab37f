use super::import::profile_name;
use super::options::{apply, ignored_reason, Applied, MAPPED_KEYS};
use super::reader::{parse_raw, resolve_block, RawBlock};
use super::*;
use crate::profile::{self, ProfileValues};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MAN_EXAMPLE: &str = "\
[default]
background = 1
mode = rsyncshell
debug = 0
output = syslog
label = default
pid-file = /var/run/clsync-%label%.pid

[debug]
config-block-inherits = default
debug = 5
background = 0
output = stderr

[test]
mode=rsyncdirect
debug=3
";

fn p(text: &str) -> Result<Vec<LegacyBlock>, LegacyError> {
    parse(Path::new("clsync.conf"), text)
}

fn one(text: &str) -> ProfileValues {
    let mut b = p(&format!("[b]\n{text}\n")).unwrap();
    assert_eq!(b.len(), 1);
    b.remove(0).values
}

fn err(text: &str) -> String {
    p(text).unwrap_err().to_string()
}

fn raw_blocks(text: &str) -> Vec<RawBlock> {
    parse_raw(Path::new("clsync.conf"), text).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/legacy")
        .join(name)
}

#[test]
fn man_page_example() {
    let b = p(MAN_EXAMPLE).unwrap();
    let names: Vec<&str> = b.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["default", "debug", "test"]);
    let d = &b[0].values;
    assert_eq!(d.mode.as_deref(), Some("rsyncshell"));
    assert_eq!(d.debug, Some(0));
    assert_eq!(d.output.as_deref(), Some("syslog"));
    assert_eq!(d.label.as_deref(), Some("default"));
    assert_eq!(d.pid_file.as_deref(), Some("/var/run/clsync-%label%.pid"));
    assert_eq!(b[0].ignored.len(), 1);
    assert_eq!(b[0].ignored[0].0, "background");
    assert_eq!(b[1].values.inherits.as_deref(), Some("default"));
    assert_eq!(b[1].values.debug, Some(5));
    assert_eq!(b[2].values.mode.as_deref(), Some("rsyncdirect"));
    assert_eq!(b[2].values.debug, Some(3));
    assert!(b[2].ignored.is_empty());
}

#[test]
fn block_inherits_another() {
    let blocks = raw_blocks(MAN_EXAMPLE);
    let f = Path::new("clsync.conf");
    let v = resolve_block(f, &blocks, "debug").unwrap();
    assert_eq!(v.debug, Some(5));
    assert_eq!(v.output.as_deref(), Some("stderr"));
    assert_eq!(v.mode.as_deref(), Some("rsyncshell"));
    assert_eq!(v.label.as_deref(), Some("default"));
    assert_eq!(v.pid_file.as_deref(), Some("/var/run/clsync-%label%.pid"));
    assert_eq!(v.inherits, None);
    // A three-level chain, child wins field by field.
    let text = format!("{MAN_EXAMPLE}\n[deep]\nconfig-block-inherits = debug\ndebug = 1\n");
    let v = resolve_block(f, &raw_blocks(&text), "deep").unwrap();
    assert_eq!(v.debug, Some(1));
    assert_eq!(v.output.as_deref(), Some("stderr"));
    assert_eq!(v.mode.as_deref(), Some("rsyncshell"));
}

#[test]
fn inheritance_errors() {
    let f = Path::new("clsync.conf");
    let blocks = raw_blocks("[a]\nconfig-block-inherits = b\n[b]\nconfig-block-inherits = a\n");
    let e = resolve_block(f, &blocks, "a").unwrap_err().to_string();
    assert_eq!(
        e,
        "clsync.conf:4: config-block-inherits = a: inheritance cycle [a] -> [b] -> [a]"
    );
    let blocks = raw_blocks("[a]\n\nconfig-block-inherits = nope\n");
    let e = resolve_block(f, &blocks, "a").unwrap_err().to_string();
    assert_eq!(
        e,
        "clsync.conf:3: config-block-inherits = nope: no such block (blocks: a)"
    );
    let e = resolve_block(f, &raw_blocks(MAN_EXAMPLE), "prod")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "clsync.conf: no block [prod] (blocks: default, debug, test)"
    );
    // An empty parent is no parent.
    let blocks = raw_blocks("[a]\nconfig-block-inherits =\ndebug = 2\n");
    assert_eq!(resolve_block(f, &blocks, "a").unwrap().debug, Some(2));
}

#[test]
fn load_block_reads_files_and_null() {
    let v = load_block(Path::new("/NULL/"), "anything").unwrap();
    assert_eq!(v, ProfileValues::default());
    let v = load_block(&fixture("example.conf"), "debug").unwrap();
    assert_eq!(v.debug, Some(5));
    assert_eq!(v.mode.as_deref(), Some("rsyncshell"));
    let e = load_block(&fixture("example.conf"), "nope")
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("example.conf: no block [nope] (blocks: default, debug, test, web)"),
        "{e}"
    );
    let e = load_block(&fixture("missing.conf"), "default")
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.conf: "), "{e}");
}

#[test]
fn handler_args() {
    let v = one("-- = -aH --exclude-from %EXCLUDE-LIST% --include-from=%INCLUDE-LIST% --exclude '*' %watch-dir%/ %destination-dir%/");
    assert_eq!(
        v.sync_handler_args.unwrap(),
        [
            "-aH",
            "--exclude-from",
            "%EXCLUDE-LIST%",
            "--include-from=%INCLUDE-LIST%",
            "--exclude",
            "*",
            "%watch-dir%/",
            "%destination-dir%/"
        ]
    );
    let v = one("--=  a\t\tb  \"c d\" x\"y z\"w '' 'e\"f' \"g\\\"h\"");
    assert_eq!(
        v.sync_handler_args.unwrap(),
        ["a", "b", "c d", "xy zw", "", "e\"f", "g\\\"h"]
    );
    assert_eq!(one("-- =").sync_handler_args, Some(vec![]));
    let e = err("[b]\n-- = a \"b\n");
    assert_eq!(
        e,
        "clsync.conf:2: -- = \"a \\\"b\": unterminated quote <\">"
    );
    // `---` (initial-sync arguments) has no equivalent.
    let b = p("[b]\n--- = x y\n").unwrap();
    assert_eq!(b[0].values, ProfileValues::default());
    assert_eq!(b[0].ignored[0].0, "---");
}

#[test]
fn substitutions_kept_and_normalised() {
    let v = one(
        "watch-dir = /srv/%label%\ndestination-dir = /b/%watch_dir%/%destination_dir%\n\
         lists-dir = /tmp/%LISTS_DIR%\nexit-hook = /bin/x %%done%% %PID% 1% or 2% 3%\n\
         -- = %RSYNC-ARGS% %watch_dir%/ %pid_file%",
    );
    assert_eq!(v.watch_dir.as_deref(), Some("/srv/%label%"));
    assert_eq!(
        v.destination_dir.as_deref(),
        Some("/b/%watch-dir%/%destination-dir%")
    );
    // Not an option name: left as is.
    assert_eq!(v.lists_dir.as_deref(), Some("/tmp/%LISTS_DIR%"));
    // A lone % is literal in the original, so it is escaped for the profile.
    assert_eq!(
        v.exit_hook.as_deref(),
        Some("/bin/x %%done%% %PID% 1%% or 2%% 3%%")
    );
    assert_eq!(
        v.sync_handler_args.unwrap(),
        ["%RSYNC-ARGS%", "%watch-dir%/", "%pid-file%"]
    );
}

#[test]
fn values_are_converted() {
    let v = one(
        "delay-sync = 15\ndelay-collect = 0x10\ndelay-collect-bigfile =\n\
         timeout-sync = 010\nthreshold-bigfile = 134217728\nretries = 3\n\
         max-iterations = 20\nrsync-inclimit = 0\nignore-exitcode = 23,24\n\
         threading = safe\none-file-system = 1\nexclude-mount-points = 0\n\
         full-initialsync = 2\nuid = nobody\ngid = 0\nexit-hook =\n\
         modification-signature = uid,gid",
    );
    assert_eq!(v.delay_sync, Some(Duration::from_secs(15)));
    assert_eq!(v.delay_collect, Some(Duration::from_secs(16)));
    assert_eq!(v.delay_collect_bigfile, Some(Duration::ZERO));
    assert_eq!(v.timeout_sync, Some(Duration::from_secs(8)));
    assert_eq!(v.threshold_bigfile, Some(134217728));
    assert_eq!(v.retries, Some(3));
    assert_eq!(v.max_iterations, Some(20));
    assert_eq!(v.rsync_inclimit, Some(0));
    assert_eq!(v.ignore_exitcode, Some(vec![23, 24]));
    assert_eq!(v.threading.as_deref(), Some("safe"));
    assert_eq!(v.one_file_system, Some(true));
    assert_eq!(v.exclude_mount_points, Some(false));
    assert_eq!(v.full_initialsync, Some(true));
    assert_eq!(v.uid.as_deref(), Some("nobody"));
    assert_eq!(v.gid.as_deref(), Some("0"));
    assert_eq!(v.exit_hook.as_deref(), Some(""));
    assert_eq!(v.modification_signature.as_deref(), Some("uid,gid"));
    assert_eq!(
        one("ignore-exitcode = 23,0,24").ignore_exitcode,
        Some(vec![24])
    );
    assert_eq!(one("ignore-exitcode = 0").ignore_exitcode, Some(vec![]));
    assert_eq!(one("threading =").threading.as_deref(), Some("off"));
    assert_eq!(one("output =").output.as_deref(), Some("stderr"));
}

#[test]
fn bad_values_name_line_and_value() {
    let cases = [
        ("delay-sync = 1m", "delay-sync = \"1m\": not a number"),
        ("retries = -1", "retries = \"-1\": must not be negative"),
        ("debug = 300", "debug = \"300\": too big (at most 255)"),
        ("mode = rsync", "mode = \"rsync\": unknown mode"),
        (
            "threading = half",
            "threading = \"half\": unknown threading mode",
        ),
        ("output = file", "output = \"file\": unknown output"),
        (
            "ignore-exitcode = 23;24",
            "ignore-exitcode = \"23;24\": \"23;24\" is not an exit code",
        ),
        (
            "ignore-exitcode = 256",
            "ignore-exitcode = \"256\": exit code 256 is not in 0..=255",
        ),
    ];
    for (line, want) in cases {
        let e = err(&format!("# c\n[b]\n{line}\n"));
        assert!(e.starts_with(&format!("clsync.conf:3: {want}")), "{e}");
    }
}

#[test]
fn unknown_key_is_an_error_with_its_line() {
    let e = err("[default]\nmode = direct\n\ndelay-colect = 5\n");
    assert_eq!(
        e,
        "clsync.conf:4: unknown key \"delay-colect\" (= \"5\") (did you mean \"delay-collect\"?)"
    );
    let e = err("[default]\nwatch_dir = /srv\n");
    assert!(e.contains("(did you mean \"watch-dir\"?)"), "{e}");
    // TOML-only keys are not keys of the original.
    let e = err("[default]\nexclude = /tmp\n");
    assert!(
        e.starts_with("clsync.conf:2: unknown key \"exclude\""),
        "{e}"
    );
}

#[test]
fn syntax_errors() {
    assert_eq!(
        err("mode = direct\n"),
        "clsync.conf:1: mode = \"direct\" is before the first [block]"
    );
    assert_eq!(
        err("[a]\njust words\n"),
        "clsync.conf:2: \"just words\" is not a `key = value` line, a [block] or a # comment"
    );
    assert_eq!(err("[a\n"), "clsync.conf:1: invalid block line \"[a\"");
    assert_eq!(err("[]\n"), "clsync.conf:1: invalid block name \"\"");
    assert_eq!(
        err("[a]\n = 1\n"),
        "clsync.conf:2: no key before '=' in \"= 1\""
    );
}

#[test]
fn glib_details() {
    // Comments, blank lines, CRLF, repeated keys and blocks, `=` in values.
    let b = p(
        "# x\r\n  [a]  \r\n\r\n  # y\r\nlabel = one\r\nlabel = two = 2 \r\n\
               background = 1\r\n[b]\r\n[a]\r\nbackground = 0\r\ndebug = 1\r\n",
    )
    .unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].values.label.as_deref(), Some("two = 2"));
    assert_eq!(b[0].values.debug, Some(1));
    assert_eq!(b[0].ignored.len(), 1);
    assert_eq!(b[1].values, ProfileValues::default());
}

#[test]
fn old_key_names() {
    let v = one("rules-path = /r\ndir-destination = /d\nsyslog = 1");
    assert_eq!(v.rules_file.as_deref(), Some("/r"));
    assert_eq!(v.destination_dir.as_deref(), Some("/d"));
    assert_eq!(v.output.as_deref(), Some("syslog"));
    assert_eq!(one("syslog = 0").output, None);
}

#[test]
fn round_trip_through_profiles() {
    let text = std::fs::read_to_string(fixture("example.conf")).unwrap();
    let blocks = p(&text).unwrap();
    let profiles = to_profiles(&blocks);
    assert_eq!(profiles.len(), blocks.len());
    for ((name, toml), block) in profiles.iter().zip(&blocks) {
        assert_eq!(name, &format!("{}.toml", block.name));
        let back =
            profile::parse_values(Path::new(name), toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        // A block that neither asks for the sandbox nor inherits runs unconfined, as
        // the original ran it (a profile alone would confine it).
        let mut want = block.values.clone();
        if want.sandbox.is_none() && want.inherits.is_none() {
            want.sandbox = Some(crate::sandbox::Mode::Off);
            assert!(toml.contains("\nsandbox = false\n"), "{toml}");
        }
        assert_eq!(back, want, "{toml}");
        assert!(
            toml.starts_with(&format!(
                "# Imported from clsync.conf block [{}].\n",
                block.name
            )),
            "{toml}"
        );
    }
    let default = &profiles[0].1;
    assert!(
        default.contains("# Not imported (no equivalent in this clsync):\n#   background: "),
        "{default}"
    );
    let web = &profiles[3].1;
    assert!(web.contains("inherits = \"default\""), "{web}");
    assert!(web.contains("delay-sync = \"15s\""), "{web}");
    assert!(web.contains("ignore-exitcode = [23, 24]"), "{web}");
    assert!(!web.contains("# Note"), "{web}");
    let b = p("[a]\n-- = %EXCLUDE-LIST% %INCLUDE-LIST% %PID% %label% %watch-dir%\n").unwrap();
    let a = &to_profiles(&b)[0].1;
    assert!(
        a.contains(
            "# Note: placeholders of the original that profiles do not know: \
             %EXCLUDE-LIST% %PID%\n"
        ),
        "{a}"
    );
}

#[test]
fn known_placeholders_are_kept_by_profiles() {
    let d = tempfile::tempdir().unwrap();
    let args: Vec<String> = profile::RUNTIME_PLACEHOLDERS
        .iter()
        .map(|n| format!("%{n}%"))
        .collect();
    let v = ProfileValues {
        sync_handler_args: Some(args.clone()),
        ..Default::default()
    };
    std::fs::write(d.path().join("h.toml"), v.to_toml()).unwrap();
    let profiles = profile::load_dir(d.path()).unwrap();
    let r = profile::resolve(&profiles, "h", None).unwrap();
    assert_eq!(r.values.sync_handler_args, Some(args));
}

#[test]
fn imported_profiles_resolve() {
    let path = fixture("production.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let d = tempfile::tempdir().unwrap();
    for (name, toml) in to_profiles(&parse(&path, &text).unwrap()) {
        std::fs::write(d.path().join(name), toml).unwrap();
    }
    let profiles = profile::load_dir(d.path()).unwrap();
    let r = profile::resolve(&profiles, "lxc-brother@web01", None).unwrap();
    let v = r.values;
    assert_eq!(v.watch_dir.as_deref(), Some("/srv/lxc/web01"));
    assert_eq!(
        v.pid_file.as_deref(),
        Some("/var/run/clsync-web01-brother.pid")
    );
    assert_eq!(v.mode.as_deref(), Some("rsyncshell"));
    assert_eq!(v.delay_sync, Some(Duration::from_secs(15)));
}

#[test]
fn mapped_keys_are_all_handled() {
    for key in MAPPED_KEYS {
        let value = match *key {
            "mode" => "direct",
            "output" => "stdout",
            "threading" => "full",
            "monitor" => "fanotify",
            "preserve-capabilities" => "CAP_DAC_READ_SEARCH,CAP_KILL",
            "inherit-capabilities" => "clsync",
            _ => "1",
        };
        let mut v = ProfileValues::default();
        assert!(
            matches!(apply(&mut v, key, value), Ok(Applied::Set)),
            "{key}"
        );
        assert_ne!(v, ProfileValues::default(), "{key}");
        assert!(ignored_reason(key).is_none(), "{key}");
    }
}

#[test]
fn profile_names_are_made_fit() {
    assert_eq!(profile_name("lxc-brother"), "lxc-brother");
    assert_eq!(profile_name("a b/c@d"), "a_b_c_d");
    assert_eq!(profile_name("-x"), "_x");
    assert_eq!(profile_name(".x"), "_x");
    let b = p("[a@b]\n[c]\nconfig-block-inherits = a@b\n").unwrap();
    let pr = to_profiles(&b);
    assert_eq!(pr[0].0, "a_b.toml");
    assert!(pr[1].1.contains("inherits = \"a_b\""), "{}", pr[1].1);
}

#[test]
fn fixtures_parse() {
    let path = fixture("example.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let b = parse(&path, &text).unwrap();
    assert_eq!(b.len(), 4);
    let web = load_block(&path, "web").unwrap();
    assert_eq!(web.watch_dir.as_deref(), Some("/srv/www"));
    assert_eq!(web.label.as_deref(), Some("web"));
    assert_eq!(web.output.as_deref(), Some("syslog"));
    assert_eq!(
        web.sync_handler_args.unwrap(),
        [
            "%RSYNC-ARGS%",
            "--exclude",
            "*.tmp",
            "%watch-dir%/",
            "%destination-dir%/"
        ]
    );

    // The original's own example (an old one: see tests/data/legacy/README.md).
    let path = fixture("production.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let b = parse(&path, &text).unwrap();
    let names: Vec<&str> = b.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "hpc",
            "hpc-backup",
            "lxc-rsyncshell",
            "lxc-brother",
            "lxc-brother-atomic-sync",
            "lxc-brother-initialsync",
            "lxc-backup"
        ]
    );
    assert_eq!(b[0].values.mode.as_deref(), Some("so"));
    assert_eq!(b[0].values.retries, Some(0));
    assert_eq!(b[0].values.one_file_system, Some(true));
    assert_eq!(b[0].ignored[0].0, "auto-add-rules-w");
    assert_eq!(b[1].values.exclude_mount_points, Some(true));
    assert_eq!(
        b[1].values.destination_dir.as_deref(),
        Some("/mnt/backup/mirror")
    );
    let v = load_block(&path, "lxc-brother-atomic-sync").unwrap();
    assert_eq!(v.watch_dir.as_deref(), Some("/srv/lxc/%label%"));
    assert_eq!(v.output.as_deref(), Some("syslog"));
    assert_eq!(v.rules_file.as_deref(), Some("/etc/clsync/rules/lxc"));
    assert_eq!(v.ignore_exitcode, Some(vec![23, 24]));
    assert_eq!(v.delay_sync, Some(Duration::from_secs(15)));
    assert_eq!(v.threading.as_deref(), Some("off"));
    assert_eq!(v.exit_on_no_events, Some(true));
    assert_eq!(v.max_iterations, Some(10));
    assert_eq!(v.full_initialsync, Some(true));
    assert_eq!(
        v.pid_file.as_deref(),
        Some("/var/run/clsync-%label%-brother.pid")
    );
    assert!(b[3].ignored.is_empty(), "{:?}", b[3].ignored);
    assert!(v.dump_dir.is_some(), "dump-dir is a setting");
    let v = load_block(&path, "lxc-backup").unwrap();
    assert_eq!(v.delay_collect_bigfile, Some(Duration::from_secs(43200)));
    assert_eq!(v.debug, Some(1));
    for (name, toml) in to_profiles(&b) {
        profile::parse_values(Path::new(&name), &toml).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Each of the original's sandbox keys is accepted in a block and becomes the profile
/// keys its option becomes on the command line (docs/cli.md's table): `sandbox`,
/// `sandbox-network`, `sandbox-read`, `sandbox-exec`, `sync-handler-uid/gid`; the keys
/// that change nothing are listed with their reason.
#[test]
fn the_originals_sandbox_keys_become_profile_keys() {
    use crate::sandbox::Mode;
    let on = || ProfileValues {
        sandbox: Some(Mode::On),
        ..Default::default()
    };
    let s = |v: &str| Some(v.to_string());
    let l = |v: &[&str]| Some(v.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    #[rustfmt::skip]
    let mut cases: Vec<(&str, ProfileValues)> = vec![
        ("secure-splitting = 1", on()),
        // The original turns it on whatever the value.
        ("secure-splitting = 0", on()),
        ("splitting = process", on()),
        ("splitting = thread", on()),
        ("check-execvp-arguments = 1", on()),
        ("seccomp-filter = 1", on()),
        ("forbid-devices = 1", on()),
        ("detach-miscellanea = 1", on()),
        ("detach-network = everywhere", ProfileValues { sandbox_network: s("private"), ..on() }),
        ("detach-network = non-privileged", ProfileValues { sandbox_network: s("auto"), ..Default::default() }),
        ("detach-network = off", ProfileValues { sandbox_network: s("host"), ..Default::default() }),
        ("mountpoints = /srv,/opt", ProfileValues { sandbox_read: l(&["/srv", "/opt"]), ..on() }),
        ("mountpoints = /x,,/srv/%label%", ProfileValues { sandbox_read: l(&["/srv/%label%"]), ..on() }),
        ("add-permitted-hook-files = /opt/h1,/opt/h2", ProfileValues { sandbox_exec: l(&["/opt/h1", "/opt/h2"]), ..Default::default() }),
        ("privileged-uid = nobody\nprivileged-gid = 0", ProfileValues { sync_handler_uid: s("nobody"), sync_handler_gid: s("0"), ..Default::default() }),
        // Only the default: sync-handler-uid wins, before or after it.
        ("privileged-uid = nobody\nsync-handler-uid = root", ProfileValues { sync_handler_uid: s("root"), ..Default::default() }),
        ("sync-handler-uid = root\nprivileged-uid = nobody", ProfileValues { sync_handler_uid: s("root"), ..Default::default() }),
    ];
    // An empty chroot is the original's unset.
    cases.push(("chroot =", ProfileValues::default()));
    for (text, want) in cases {
        let b = p(&format!("[b]\n{text}\n")).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(b[0].values, want, "{text}");
        assert!(b[0].ignored.is_empty(), "{text}: {:?}", b[0].ignored);
    }
    #[rustfmt::skip]
    let no_effect = [
        ("splitting = off", "off changes nothing"),
        ("seccomp-filter = 0", "0: off, so nothing is asked"),
        ("permit-mprotect = 1", "no effect: mprotect is never refused"),
        ("shm-mprotect = 1", "no effect: the worker shares no memory"),
        ("forget-privthread-info = 1", "no effect: there is no privileged thread"),
        ("detach-ipc = 1", "the sandbox takes a private IPC namespace"),
        ("cgroup-group-name = clsync/%PID%", "no effect: no cgroup is made"),
        ("cancel-syscalls = mon_stat", "no effect: tuning of the original's internals"),
        ("pivot-root = off", "off changes nothing"),
    ];
    for (text, reason) in no_effect {
        let b = p(&format!("[b]\n{text}\n")).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(b[0].values, ProfileValues::default(), "{text}");
        let key = text.split(" =").next().unwrap();
        assert_eq!(b[0].ignored.len(), 1, "{text}");
        assert_eq!(b[0].ignored[0].0, key, "{text}");
        assert!(
            b[0].ignored[0].1.contains(reason),
            "{text}: {:?}",
            b[0].ignored
        );
    }
    #[rustfmt::skip]
    let refused = [
        ("chroot = /srv/jail", "chroot = \"/srv/jail\": not read from a -H file (a profile has no such key): give --chroot DIR on the command line"),
        ("pivot-root = auto", "pivot-root = \"auto\": not read from a -H file (a profile has no such key): give --chroot DIR and --pivot-root on the command line"),
        ("splitting = half", "splitting = \"half\": expected off, thread or process"),
        ("detach-network = all", "detach-network = \"all\": expected everywhere, non-privileged or off"),
        ("seccomp-filter = yes", "seccomp-filter = \"yes\": not a number"),
        ("cancel-syscalls = mon_lstat", "cancel-syscalls = \"mon_lstat\": \"mon_lstat\" is not mon_stat"),
    ];
    for (text, want) in refused {
        let e = err(&format!("[b]\n{text}\n"));
        assert!(e.starts_with(&format!("clsync.conf:2: {want}")), "{e}");
    }
    assert!(
        err("[b]\nsecure-spliting = 1\n").contains("(did you mean \"secure-splitting\"?)"),
        "a misspelt sandbox key is suggested"
    );
}

/// A `-H` block with the original's sandbox keys runs a confined worker, with the
/// command line on top (it wins, as for every key); `clsync import` writes the profile keys.
#[test]
fn the_originals_sandbox_keys_in_h_files_and_imports() {
    use crate::sandbox::{Mode, Network};
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("clsync.conf");
    std::fs::write(
        &file,
        "[web]\nwatch-dir = /srv/a\ndestination-dir = /srv/b\nmode = rsyncdirect\n\
         secure-splitting = 1\ndetach-network = everywhere\nmountpoints = /opt/data\n\
         add-permitted-hook-files = /opt/hook\nprivileged-uid = 0\npermit-mprotect = 1\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec!["clsync", "-H", file.to_str().unwrap(), "-K", "web"];
        a.extend(extra);
        crate::cli::parse(a).unwrap_or_else(|e| panic!("{extra:?}: {e}"))
    };
    let c = run(&[]);
    assert_eq!(c.sandbox, Mode::On);
    assert_eq!(c.sandbox_network, Network::Private);
    assert_eq!(c.sandbox_extra.read, [PathBuf::from("/opt/data")]);
    assert_eq!(c.sandbox_extra.exec, [PathBuf::from("/opt/hook")]);
    assert_eq!(c.sync_handler_uid, Some(0));
    assert_eq!(run(&["--sandbox=false"]).sandbox, Mode::Off);
    assert_eq!(run(&["--sandbox=required"]).sandbox, Mode::Required);
    assert_eq!(
        run(&["--sandbox-network=host"]).sandbox_network,
        Network::Host
    );

    let text = std::fs::read_to_string(&file).unwrap();
    let blocks = parse(&file, &text).unwrap();
    let (_, toml) = &to_profiles(&blocks)[0];
    for line in [
        "sandbox = true\n",
        "sandbox-network = \"private\"\n",
        "sandbox-read = [\"/opt/data\"]\n",
        "sandbox-exec = [\"/opt/hook\"]\n",
        "sync-handler-uid = \"0\"\n",
        "#   permit-mprotect: no effect: mprotect is never refused\n",
    ] {
        assert!(toml.contains(line), "{line:?} not in:\n{toml}");
    }
    let back = profile::parse_values(Path::new("web.toml"), toml).unwrap();
    assert_eq!(back, blocks[0].values);
}

#[test]
fn preserve_capabilities_takes_the_originals_four_and_names_another() {
    let mut v = ProfileValues::default();
    assert!(matches!(
        apply(
            &mut v,
            "preserve-capabilities",
            "CAP_DAC_READ_SEARCH,CAP_KILL"
        ),
        Ok(Applied::Set)
    ));
    assert_eq!(
        v.preserve_capabilities,
        Some(vec!["CAP_DAC_READ_SEARCH".into(), "CAP_KILL".into()])
    );
    let e = apply(&mut v, "preserve-capabilities", "CAP_SYS_ADMIN")
        .err()
        .unwrap();
    assert!(
        e.starts_with("preserve-capabilities = \"CAP_SYS_ADMIN\": CAP_SYS_ADMIN cannot be kept"),
        "{e}"
    );
    let e = apply(&mut v, "inherit-capabilities", "all").err().unwrap();
    assert!(
        e.contains("expected empty, dont-touch, clsync or permitted"),
        "{e}"
    );
}
