use super::*;

/// The argv of a full run of rsyncdirect with its own options, with `progress` on
/// and `verify` as given.
fn full_run(verify: bool) -> Exec {
    full_run_of(Mode::RsyncDirect, "rsyncdirect", verify)
}

/// The argv of a full run of `mode` with its default words (`tag` keeps the list
/// directories of tests running at once apart).
fn full_run_of(mode: Mode, tag: &str, verify: bool) -> Exec {
    let dir = std::env::temp_dir().join(format!("clsync-handler-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut h = Handler::new(
        HandlerConfig {
            mode,
            program: "/usr/bin/rsync".into(),
            args: None,
            src: "/src".into(),
            dst: "/dst".into(),
            label: "t".into(),
            lists_dir: dir.clone(),
            lists_mode: 0o600,
            one_file_system: false,
            rsync_inclimit: 0,
            synclist_simplify: false,
            have_recursive_sync: false,
            lists_nul: false,
            rsync_prefer_include: false,
            rsync_extra: vec!["--bwlimit=1000".into(), PROGRESS.into()],
            mover: Mover::None,
            progress: true,
        },
        None,
    );
    let batch = Batch {
        entries: vec![Entry {
            path: Vec::new(),
            recursive: true,
            class: crate::batcher::Class::Normal,
            mask: MASK_FOUND_DIR,
        }],
        moves: Vec::new(),
        verify,
        beside: false,
        initial: false,
        itemize: false,
    };
    let ctx = Context {
        rules: &Rules::default(),
        excludes: &BTreeSet::new(),
        status: "running",
        iteration: 0,
    };
    let mut steps = h.steps(&batch, &ctx).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(steps.steps.len(), 1, "{steps:?}");
    match steps.steps.remove(0) {
        Step::Exec(e) => e,
        s => panic!("{s:?}"),
    }
}

fn args(e: &Exec) -> Vec<&str> {
    e.args.iter().map(|a| a.to_str().unwrap()).collect()
}

/// A full run reports its progress; a verification itemizes instead, its argv built
/// so from the start: `-i` first, no progress records (not even the user's).
#[test]
fn verify_argv_itemizes_without_progress() {
    let full = full_run(false);
    assert_eq!(
        args(&full),
        [
            "-aH",
            PROGRESS,
            "--delete",
            "--bwlimit=1000",
            PROGRESS,
            "/src/",
            "/dst/"
        ]
    );
    assert!(full.progress && !full.itemize);
    let verify = full_run(true);
    assert_eq!(
        args(&verify),
        ["-i", "-aH", "--delete", "--bwlimit=1000", "/src/", "/dst/"]
    );
    assert!(verify.itemize && !verify.progress);
}

/// An rsyncshell handler is called as the original's man page says, `H rsynclist LABEL
/// INCLUDE-LIST-PATH EXCLUDE-LIST-PATH`, on a verification too: its first argument
/// stays `rsynclist` (rsync's `-i` is not the handler's to receive), and its output is
/// not read as rsync's itemized lines.
#[test]
fn rsyncshell_verify_keeps_the_handler_argv() {
    for verify in [false, true] {
        let run = full_run_of(Mode::RsyncShell, &format!("rsyncshell-{verify}"), verify);
        let a = args(&run);
        assert_eq!(a.len(), 4, "verify {verify}: {a:?}");
        assert_eq!(a[..2], ["rsynclist", "t"], "verify {verify}: {a:?}");
        assert!(a[2].contains("include"), "verify {verify}: {a:?}");
        assert!(a[3].contains("exclude"), "verify {verify}: {a:?}");
        assert!(!run.itemize && !run.progress, "verify {verify}: {run:?}");
    }
}

/// A targeted run to a destination over a link sends its whole file list at once
/// (`--no-inc-recursive`: incremental recursion costs a round trip before the first file
/// lands); a full run keeps incremental recursion, and a local destination is as before.
#[test]
fn a_targeted_run_over_a_link_sends_its_list_at_once() {
    for (dst, tag) in [("root@h:/dst", "ssh"), ("/dst", "local")] {
        let dir =
            std::env::temp_dir().join(format!("clsync-handler-inc-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = Handler::new(
            HandlerConfig {
                mode: Mode::RsyncDirect,
                program: "/usr/bin/rsync".into(),
                args: None,
                src: "/nonexistent-src".into(),
                dst: dst.into(),
                label: "t".into(),
                lists_dir: dir.clone(),
                lists_mode: 0o600,
                one_file_system: false,
                rsync_inclimit: 0,
                synclist_simplify: false,
                have_recursive_sync: false,
                lists_nul: false,
                rsync_prefer_include: false,
                rsync_extra: Vec::new(),
                mover: Mover::None,
                progress: false,
            },
            None,
        );
        let ctx = Context {
            rules: &Rules::default(),
            excludes: &BTreeSet::new(),
            status: "running",
            iteration: 0,
        };
        let run = |h: &mut Handler, path: &[u8], recursive: bool| {
            let batch = Batch {
                entries: vec![Entry {
                    path: path.to_vec(),
                    recursive,
                    class: crate::batcher::Class::Normal,
                    mask: libc::IN_ATTRIB,
                }],
                moves: Vec::new(),
                ..Batch::default()
            };
            let mut steps = h.steps(&batch, &ctx).unwrap();
            assert_eq!(steps.steps.len(), 1, "{steps:?}");
            match steps.steps.remove(0) {
                Step::Exec(e) => e.args,
                s => panic!("{s:?}"),
            }
        };
        // A directory synced recursively: the include-list run (a run over a files-from
        // list does not recurse, so incremental recursion is moot there).
        let targeted = run(&mut h, b"a/b", true);
        let full = run(&mut h, b"", true);
        let _ = std::fs::remove_dir_all(&dir);
        let has = |a: &[OsString]| a.iter().any(|w| w == "--no-inc-recursive");
        assert!(a_has_include(&targeted), "{tag}: {targeted:?}");
        assert_eq!(has(&targeted), tag == "ssh", "{tag}: {targeted:?}");
        assert!(!has(&full), "{tag}: {full:?}");
    }
}

fn a_has_include(a: &[OsString]) -> bool {
    a.iter()
        .any(|w| w.to_string_lossy().starts_with("--include-from="))
}
