use super::load::profiles_dir_from;
use super::schema::suggest_key;
use super::*;
use std::time::Duration;

#[test]
fn runtime_placeholders_are_kept_for_the_handler() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("h.toml"),
        "sync-handler-args = [\"--include-from=%INCLUDE-LIST-PATH%\", \"%RSYNC-ARGS%\", \"%watch-dir%/\"]\nwatch-dir = \"/w\"\n",
    )
    .unwrap();
    let r = resolve(&load_dir(d.path()).unwrap(), "h", None).unwrap();
    assert_eq!(
        r.values.sync_handler_args.unwrap(),
        ["--include-from=%INCLUDE-LIST-PATH%", "%RSYNC-ARGS%", "/w/"]
    );
}

fn parse(text: &str) -> Result<ProfileValues, ProfileError> {
    parse_values(Path::new("/etc/clsync/web.toml"), text)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn profiles(files: &[(&str, &str)]) -> (tempfile::TempDir, Profiles) {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        write(d.path(), &format!("{name}.toml"), text);
    }
    let p = load_dir(d.path()).unwrap();
    (d, p)
}

#[test]
fn unknown_key_is_reported_with_suggestion_and_position() {
    let e = parse("watch-dir = \"/srv\"\nmode = \"rsyncdirect\"\ndelay-colect = 3\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/clsync/web.toml:3:1: unknown key \"delay-colect\" (did you mean \"delay-collect\"?)"
    );
    let e = parse("delay_collect_bigfile = 3\n").unwrap_err();
    assert!(
        e.to_string()
            .ends_with("(did you mean \"delay-collect-bigfile\"?)"),
        "{e}"
    );
    let e = parse("frobnicate = 3\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/clsync/web.toml:1:1: unknown key \"frobnicate\""
    );
}

#[test]
fn wrong_type_is_reported_with_position_and_key() {
    let e = parse("mode = \"rsyncdirect\"\ndelay-sync = true\n").unwrap_err();
    let s = e.to_string();
    assert!(
        s.starts_with("/etc/clsync/web.toml:2:14: delay-sync: invalid type"),
        "{s}"
    );
    assert!(!s.contains('\n'));
    let e = parse("\n\n\ndelay-collect = \"abc\"\n").unwrap_err();
    let s = e.to_string();
    assert!(
        s.starts_with("/etc/clsync/web.toml:4:17: delay-collect: invalid duration \"abc\""),
        "{s}"
    );
    let e = parse("retries = \"x\"").unwrap_err();
    assert!(
        e.to_string().contains(":1:11: retries: invalid type"),
        "{e}"
    );
    let e = parse("exclude = [\n  \"a=b\",\n  3,\n]\n").unwrap_err();
    assert!(e.to_string().contains(":3:3: exclude: invalid type"), "{e}");
}

#[test]
fn syntax_error_is_one_line_with_position() {
    let e = parse("mode = \"rsyncdirect\"\nwatch-dir = \n").unwrap_err();
    let s = e.to_string();
    assert!(s.starts_with("/etc/clsync/web.toml:2:"), "{s}");
    assert!(!s.contains('\n'), "{s}");
}

#[test]
fn threading_is_checked() {
    for m in THREADING_MODES {
        assert_eq!(
            parse(&format!("threading = \"{m}\""))
                .unwrap()
                .threading
                .as_deref(),
            Some(*m)
        );
    }
    let e = parse("mode = \"rsyncdirect\"\nthreading = \"ful\"").unwrap_err();
    assert!(
        e.to_string()
            .contains(":2:13: threading: invalid threading mode \"ful\""),
        "{e}"
    );
}

#[test]
fn durations_in_all_forms() {
    let v = parse(
        "delay-sync = 30\ndelay-collect = 0.5\ndelay-collect-bigfile = \"2h\"\ntimeout-sync = \"200ms\"\n",
    )
    .unwrap();
    assert_eq!(v.delay_sync, Some(Duration::from_secs(30)));
    assert_eq!(v.delay_collect, Some(Duration::from_millis(500)));
    assert_eq!(v.delay_collect_bigfile, Some(Duration::from_secs(7200)));
    assert_eq!(v.timeout_sync, Some(Duration::from_millis(200)));
    let v = parse("delay-sync = \"30s\"\ndelay-collect = \"30\"\n").unwrap();
    assert_eq!(v.delay_sync, Some(Duration::from_secs(30)));
    assert_eq!(v.delay_collect, Some(Duration::from_secs(30)));
    assert!(parse("delay-sync = -1").is_err());
    assert!(parse("delay-sync = -0.5").is_err());
}

#[test]
fn sizes() {
    let v = parse("threshold-bigfile = \"128MiB\"").unwrap();
    assert_eq!(v.threshold_bigfile, Some(134217728));
    let v = parse("threshold-bigfile = 134217728").unwrap();
    assert_eq!(v.threshold_bigfile, Some(134217728));
    let e = parse("threshold-bigfile = \"128MB\"").unwrap_err();
    assert!(
        e.to_string()
            .contains(":1:21: threshold-bigfile: invalid size"),
        "{e}"
    );
    assert!(parse("threshold-bigfile = -1").is_err());
}

/// Every field set: a struct literal without `..`, so it lists every field.
fn all_set() -> ProfileValues {
    let s = |x: &str| Some(x.to_string());
    let l = |x: &[&str]| Some(x.iter().map(|x| x.to_string()).collect());
    ProfileValues {
        watch_dir: s("/srv/web"),
        destination_dir: s("/backup/web"),
        mode: s("rsyncdirect"),
        sync_handler: s("/usr/bin/rsync"),
        sync_handler_args: l(&["-a", "%watch-dir%/"]),
        rules_file: s("/etc/clsync/rules"),
        rules: l(&["-d^/tmp$", "+*.*"]),
        exclude: l(&["/cache"]),
        include: l(&["/cache/keep"]),
        delay_sync: Some(Duration::from_secs(30)),
        delay_collect: Some(Duration::from_millis(1500)),
        delay_collect_bigfile: Some(Duration::from_secs(7200)),
        threshold_bigfile: Some(128 << 20),
        retries: Some(3),
        ignore_exitcode: Some(vec![23, 24]),
        timeout_sync: Some(Duration::from_millis(200)),
        threading: s("safe"),
        max_parallel_syncs: Some(8),
        label: s("web"),
        lists_dir: s("/run/clsync/%label%"),
        status_file: s("/run/clsync/%label%.status"),
        pid_file: s("/run/clsync/%label%.pid"),
        exit_hook: s("/bin/true"),
        pre_exit_hook: s("/bin/true"),
        full_initialsync: Some(true),
        only_initialsync: Some(false),
        skip_initialsync: Some(false),
        initial_sync: s("full"),
        index_dir: s("/var/lib/clsync/index"),
        exit_on_no_events: Some(false),
        sync_on_quit: Some(true),
        one_file_system: Some(true),
        exclude_mount_points: Some(true),
        rsync_prefer_include: Some(false),
        dont_unlink_lists: Some(false),
        have_recursive_sync: Some(true),
        synclist_simplify: Some(true),
        ignore_failures: Some(false),
        max_iterations: Some(10),
        standby_file: s("/run/standby"),
        modification_signature: s("*"),
        rsync_inclimit: Some(20000),
        output: s("syslog"),
        debug: Some(2),
        uid: s("nobody"),
        gid: s("1000"),
        sync_handler_uid: s("www-data"),
        sync_handler_gid: s("www-data"),
        lists_nul: Some(true),
        dump_dir: s("/run/clsync/dump"),
        destinations: l(&["node-b:/srv/web", "/backup/web"]),
        ssh_command: s("ssh"),
        ssh_identity: s("/root/.ssh/id_clsync"),
        ssh_port: Some(2222),
        ssh_options: l(&["-oConnectTimeout=10"]),
        rsync_options: l(&["--bwlimit=10m", "--compress"]),
        rsync_password_file: s("/etc/clsync/rsync.secret"),
        allow_empty_source: Some(false),
        strict_modes: Some(true),
        sandbox: Some(crate::sandbox::Mode::Required),
        sandbox_network: s("private"),
        sandbox_read: l(&["/etc/myapp"]),
        sandbox_write: l(&["/var/backups/old"]),
        sandbox_exec: l(&["/opt/venv/bin"]),
        preserve_capabilities: l(&["CAP_DAC_READ_SEARCH", "CAP_KILL"]),
        inherit_capabilities: s("clsync"),
        progress: Some(true),
        verify_interval: Some(Duration::from_secs(3600)),
        wait_for_close: Some(Duration::from_secs(30)),
        monitor: s("fanotify"),
        peer: s("node-b:/srv/lxc/%label%"),
        split_brain: s("discard-least-changes"),
        resolver: s("/usr/local/bin/resolve"),
        resolver_timeout: Some(Duration::from_secs(30)),
        split_brain_notify: s("/usr/local/bin/page-admin"),
        pair_dir: s("/var/lib/clsync"),
        peer_pair_dir: s("/var/lib/clsync"),
        autostart: Some(true),
        restart: s("on-failure"),
        restart_delay: Some(Duration::from_secs(2)),
        restart_max_delay: Some(Duration::from_secs(300)),
        start_limit_burst: Some(5),
        start_limit_interval: Some(Duration::from_secs(600)),
        stop_timeout: Some(Duration::from_secs(90)),
        inherits: s("base"),
    }
}

#[test]
fn keys_match_the_struct_and_round_trip() {
    let v = all_set();
    let text = v.to_toml();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let got: Vec<&str> = table.keys().map(String::as_str).collect();
    let mut want: Vec<&str> = KEYS.to_vec();
    want.sort();
    assert_eq!(got, want, "KEYS and ProfileValues disagree");
    assert_eq!(parse(&text).unwrap(), v);
    // Output is in field order, which is KEYS' order.
    let order: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
        .collect();
    assert_eq!(order, KEYS);
    assert!(text.contains("delay-collect = \"1s 500ms\""), "{text}");
    assert!(text.contains("threshold-bigfile = 134217728"), "{text}");
    assert_eq!(ProfileValues::default().to_toml(), "");
}

#[test]
fn every_key_is_accepted_and_unknown_rejected() {
    for key in KEYS {
        let ok = [
            "\"1\"",
            "\"safe\"",
            "\"never\"",
            "\"auto\"",
            "[\"x\"]",
            "true",
            "1",
            "[1]",
            "[\"CAP_KILL\"]",
            "\"clsync\"",
        ]
        .iter()
        .any(|v| parse(&format!("{key} = {v}")).is_ok_and(|p| p != ProfileValues::default()));
        assert!(ok, "key {key} is not accepted");
    }
    assert!(parse("no-such-key = 1").is_err());
}

#[test]
fn edit_distance_works() {
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("delay-colect", "delay-collect"), 1);
    assert_eq!(suggest_key("delay-sinc"), Some("delay-sync"));
    assert_eq!(suggest_key("xyz"), None);
}

#[test]
fn load_dir_ignores_other_files_and_names_bad_ones() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "web.toml", "watch-dir = \"/srv/web\"\n");
    write(d.path(), "README", "not toml = = =");
    write(d.path(), ".web.toml", "junk = = =");
    write(d.path(), "web.toml~", "junk = = =");
    std::fs::create_dir(d.path().join("sub.toml")).unwrap();
    let p = load_dir(d.path()).unwrap();
    assert_eq!(p.keys().collect::<Vec<_>>(), ["web"]);
    assert_eq!(p["web"].file, d.path().join("web.toml"));
    assert_eq!(p["web"].values.watch_dir.as_deref(), Some("/srv/web"));

    // A file that does not load is kept as broken, with its error; the others load.
    write(d.path(), "bad.toml", "mode = 3\nautostart = true\n");
    write(d.path(), "heir.toml", "inherits = \"bad\"\n");
    let p = load_dir(d.path()).unwrap();
    assert_eq!(p.keys().collect::<Vec<_>>(), ["bad", "heir", "web"]);
    let e = p["bad"].broken.clone().unwrap();
    assert!(
        e.starts_with(&format!(
            "{}:1:8: mode:",
            d.path().join("bad.toml").display()
        )),
        "{e}"
    );
    assert_eq!(p["bad"].values.autostart, Some(true));
    assert_eq!(resolve(&p, "bad", None).unwrap_err().to_string(), e);
    let h = resolve(&p, "heir", None).unwrap_err();
    assert!(h.is_broken(), "{h}");
    assert_eq!(
        h.to_string(),
        format!(
            "{}: inherits \"bad\", which is broken: {e}",
            d.path().join("heir.toml").display()
        )
    );
    assert!(resolve(&p, "web", None).is_ok());

    let e = load_dir(&d.path().join("nope")).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn inheritance_chain_overrides_field_by_field() {
    let (_d, p) = profiles(&[
        (
            "base",
            "mode = \"rsyncdirect\"\ndelay-sync = 30\nretries = 1\n",
        ),
        (
            "mid",
            "inherits = \"base\"\ndelay-sync = 5\nexclude = [\"/a\"]\n",
        ),
        (
            "web",
            "inherits = \"mid\"\nwatch-dir = \"/srv/web\"\nretries = 3\n",
        ),
    ]);
    let r = resolve(&p, "web", None).unwrap();
    assert_eq!(r.instance, "web");
    assert_eq!(r.label, None);
    let v = r.values;
    assert_eq!(v.mode.as_deref(), Some("rsyncdirect"));
    assert_eq!(v.delay_sync, Some(Duration::from_secs(5)));
    assert_eq!(v.retries, Some(3));
    assert_eq!(v.exclude, Some(vec!["/a".to_string()]));
    assert_eq!(v.watch_dir.as_deref(), Some("/srv/web"));
    assert_eq!(v.inherits.as_deref(), Some("mid"));
}

#[test]
fn inheritance_cycle_and_missing_parent() {
    let (d, p) = profiles(&[
        ("web", "inherits = \"base\"\n"),
        ("base", "inherits = \"web\"\n"),
        ("self", "inherits = \"self\"\n"),
        ("orphan", "inherits = \"nosuch\"\n"),
    ]);
    let e = resolve(&p, "web", None).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: inherits \"base\", which inherits \"web\": inheritance cycle",
            d.path().join("web.toml").display()
        )
    );
    let e = resolve(&p, "self", None).unwrap_err().to_string();
    assert!(
        e.ends_with("self.toml: inherits \"self\": inheritance cycle"),
        "{e}"
    );
    let e = resolve(&p, "orphan", None).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: inherits \"nosuch\": no such profile in {}",
            d.path().join("orphan.toml").display(),
            d.path().display()
        )
    );
}

#[test]
fn substitution() {
    let (_d, p) = profiles(&[(
        "lxc",
        r#"
watch-dir = "/var/lib/lxc/%label%/rootfs"
destination-dir = "backup:%watch-dir%"
sync-handler-args = ["--exclude=%%tmp", "%destination-dir%/"]
exit-hook = "/bin/echo %delay-sync% %retries% %one-file-system%"
delay-sync = 0.5
retries = 2
one-file-system = true
"#,
    )]);
    let r = resolve(&p, "lxc@web01", None).unwrap();
    assert_eq!(r.instance, "lxc@web01");
    assert_eq!(r.profile, "lxc");
    assert_eq!(r.label.as_deref(), Some("web01"));
    let v = &r.values;
    assert_eq!(v.watch_dir.as_deref(), Some("/var/lib/lxc/web01/rootfs"));
    assert_eq!(
        v.destination_dir.as_deref(),
        Some("backup:/var/lib/lxc/web01/rootfs")
    );
    assert_eq!(
        v.sync_handler_args,
        Some(vec![
            "--exclude=%tmp".to_string(),
            "backup:/var/lib/lxc/web01/rootfs/".to_string()
        ])
    );
    assert_eq!(v.exit_hook.as_deref(), Some("/bin/echo 0.5 2 true"));
    assert_eq!(v.label.as_deref(), Some("web01"));
}

#[test]
fn substitution_errors() {
    let (_d, p) = profiles(&[
        ("a", "watch-dir = \"/srv/%x%\"\n"),
        (
            "b",
            "watch-dir = \"%destination-dir%\"\ndestination-dir = \"%watch-dir%\"\n",
        ),
        ("c", "watch-dir = \"%destination-dir%\"\n"),
        ("d", "watch-dir = \"/srv/%oops\"\n"),
        ("e", "watch-dir = \"%exclude%\"\nexclude = [\"a\"]\n"),
    ]);
    let e = resolve(&p, "a", None).unwrap_err().to_string();
    assert!(
        e.ends_with("a.toml: unknown substitution %x% in \"/srv/%x%\""),
        "{e}"
    );
    let e = resolve(&p, "b", None).unwrap_err().to_string();
    assert!(e.contains("b.toml: substitution cycle"), "{e}");
    let e = resolve(&p, "c", None).unwrap_err().to_string();
    assert!(e.contains("option destination-dir is not set"), "{e}");
    let e = resolve(&p, "d", None).unwrap_err().to_string();
    assert!(e.contains("unmatched '%'"), "{e}");
    let e = resolve(&p, "e", None).unwrap_err().to_string();
    assert!(e.contains("is a list"), "{e}");
}

#[test]
fn fixed_label_and_derived_label() {
    let (_d, p) = profiles(&[
        ("web", "label = \"www\"\nwatch-dir = \"/srv/%label%\"\n"),
        (
            "lxc",
            "label = \"lxc-%label%\"\nlists-dir = \"/run/%label%\"\n",
        ),
    ]);
    let r = resolve(&p, "web", None).unwrap();
    assert_eq!(r.values.watch_dir.as_deref(), Some("/srv/www"));
    assert_eq!(r.values.label.as_deref(), Some("www"));
    let e = resolve(&p, "web@x", None).unwrap_err().to_string();
    assert!(e.contains("profile web is not a template"), "{e}");
    let r = resolve(&p, "lxc@a", None).unwrap();
    assert_eq!(r.values.label.as_deref(), Some("lxc-a"));
    assert_eq!(r.values.lists_dir.as_deref(), Some("/run/a"));
    assert_eq!(r.label.as_deref(), Some("a"));
}

#[test]
fn templates_and_instance_names() {
    let (d, p) = profiles(&[
        ("lxc", "watch-dir = \"/lxc/%label%\"\n"),
        ("lxc-big", "inherits = \"lxc\"\ndelay-sync = 60\n"),
        ("plain", "watch-dir = \"/srv\"\n"),
        ("plain-x", "watch-dir = \"/srv/x\"\n"),
    ]);
    assert!(is_template_profile(&p, "lxc").unwrap());
    assert!(is_template_profile(&p, "lxc-big").unwrap());
    assert!(!is_template_profile(&p, "plain").unwrap());

    let r = resolve(&p, "lxc-web01", None).unwrap();
    assert_eq!(
        (r.profile.as_str(), r.instance.as_str()),
        ("lxc", "lxc@web01")
    );
    assert_eq!(r.values.watch_dir.as_deref(), Some("/lxc/web01"));
    // Longest template name wins.
    let r = resolve(&p, "lxc-big-web01", None).unwrap();
    assert_eq!(r.profile, "lxc-big");
    assert_eq!(r.label.as_deref(), Some("web01"));
    assert_eq!(r.values.delay_sync, Some(Duration::from_secs(60)));
    // An existing profile name is taken as is.
    assert_eq!(resolve(&p, "lxc-big@x", None).unwrap().profile, "lxc-big");
    assert_eq!(resolve(&p, "plain-x", None).unwrap().profile, "plain-x");
    // A separate label.
    let r = resolve(&p, "lxc", Some("web02")).unwrap();
    assert_eq!(r.instance, "lxc@web02");
    assert!(resolve(&p, "lxc@a", Some("a")).is_ok());
    let e = resolve(&p, "lxc@a", Some("b")).unwrap_err().to_string();
    assert!(e.contains("two labels"), "{e}");

    let e = resolve(&p, "lxc", None).unwrap_err().to_string();
    assert_eq!(e, "profile lxc is a template: give a label, e.g. lxc@NAME");
    let e = resolve(&p, "plain", Some("x")).unwrap_err().to_string();
    assert!(
        e.starts_with("profile plain is not a template (it does not use %label%)"),
        "{e}"
    );
    let e = resolve(&p, "plain-y", None).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("no such profile \"plain-y\" in {}", d.path().display())
    );
    let e = resolve(&p, "nosuch@x", None).unwrap_err().to_string();
    assert!(e.starts_with("no such profile \"nosuch\""), "{e}");
}

#[test]
fn bad_labels() {
    let (_d, p) = profiles(&[("lxc", "watch-dir = \"/lxc/%label%\"\n")]);
    for bad in [
        "",
        "a/b",
        "..",
        ".",
        "a..b",
        "-x",
        "a\0b",
        "a\nb",
        "\u{1b}[31m",
        "a\tb",
        "/",
    ] {
        let e = resolve(&p, "lxc", Some(bad)).unwrap_err();
        assert!(matches!(e, ProfileError::BadLabel { .. }), "{bad:?}: {e}");
        assert!(e.to_string().starts_with("invalid label"), "{e}");
    }
    assert!(matches!(
        resolve(&p, "lxc@../x", None),
        Err(ProfileError::BadLabel { .. })
    ));
    assert!(matches!(
        resolve(&p, "lxc-", None),
        Err(ProfileError::BadLabel { .. })
    ));
    assert!(matches!(
        resolve(&p, "lxc@.", None),
        Err(ProfileError::BadLabel { .. })
    ));
    assert!(matches!(
        resolve(&p, "lxc-.", None),
        Err(ProfileError::BadLabel { .. })
    ));
    assert!(check_label("web01.example").is_ok());
    assert!(check_label(".hidden").is_ok());
    // A profile's own label is checked too, fixed or derived.
    let (_d, p) = profiles(&[
        ("fixed", "label = \".\"\nwatch-dir = \"/srv/%label%\"\n"),
        ("derived", "label = \"%watch-dir%\"\nwatch-dir = \"/srv\"\n"),
    ]);
    for name in ["fixed", "derived"] {
        let e = resolve(&p, name, None).unwrap_err().to_string();
        assert!(e.contains(".toml: label: invalid label"), "{e}");
    }
}

#[test]
fn profile_names_with_at_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a@b.toml", "");
    let e = load_file(d.path().join("a@b.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid profile name \"a@b\""), "{e}");
    let p = load_dir(d.path()).unwrap();
    let e = p["a@b"].broken.clone().unwrap();
    assert!(e.contains("invalid profile name \"a@b\""), "{e}");
}

#[test]
fn profiles_dir_precedence() {
    let cli = Path::new("/x/profiles");
    assert_eq!(profiles_dir(Some(cli)), cli);
    assert_eq!(
        profiles_dir_from(Some(cli), Some("/env".into())),
        PathBuf::from("/x/profiles")
    );
    assert_eq!(
        profiles_dir_from(None, Some("/env".into())),
        PathBuf::from("/env")
    );
    assert_eq!(
        profiles_dir_from(None, Some("".into())),
        PathBuf::from("/etc/clsync")
    );
    assert_eq!(profiles_dir_from(None, None), PathBuf::from("/etc/clsync"));
}

#[test]
fn preserve_capabilities_outside_the_originals_four_is_refused_with_its_line() {
    let e = parse("preserve-capabilities = [\"CAP_KILL\", \"CAP_NET_ADMIN\"]").unwrap_err();
    let e = e.to_string();
    assert!(e.contains(":1:"), "{e}");
    assert!(e.contains("CAP_NET_ADMIN cannot be kept"), "{e}");
    let e = parse("inherit-capabilities = \"all\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("inherit-capabilities"), "{e}");
}
