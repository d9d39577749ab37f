use super::*;
use crate::batcher::Class;
use std::fs;

fn entry(p: &str, recursive: bool) -> Entry {
    Entry {
        path: p.as_bytes().to_vec(),
        recursive,
        class: Class::Normal,
        mask: 0,
    }
}

fn lines(list: &[u8]) -> Vec<String> {
    list.split(|&b| b == 0)
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

fn targeted(p: Plan) -> Vec<Lists> {
    match p {
        Plan::Targeted(v) => v,
        p => panic!("expected a targeted plan: {p:?}"),
    }
}

#[test]
fn escaping_only_where_rsync_sees_a_wildcard() {
    let mut out = Vec::new();
    push_pattern(&mut out, b"a\\b", b"");
    push_pattern(&mut out, b"a\\b", b"/***");
    push_pattern(&mut out, b"x[1]*?", b"");
    push_pattern(&mut out, b"new\nline", b"");
    assert_eq!(
        out,
        b"/a\\b\0/a\\\\b/***\0/x\\[1]\\*\\?\0/new\nline\0".to_vec()
    );
}

#[test]
fn files_dirs_and_vanished_paths() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("a/b/new")).unwrap();
    fs::write(t.path().join("a/b/f"), "x").unwrap();
    fs::create_dir(t.path().join("c")).unwrap();
    let p = plan(
        t.path(),
        &[
            entry("a/b/f", false),
            entry("a/b/new", true),
            entry("a/b/new/inner", false),
            entry("c", false),
            entry("gone/deep/x", false),
            entry("a/b/gone", false),
        ],
        &BTreeSet::new(),
        0,
    );
    let parts = targeted(p);
    assert_eq!(parts.len(), 1);
    assert_eq!(
        lines(&parts[0].include),
        [
            "/a",
            "/a/b",
            "/a/b/f",
            "/a/b/f/***",
            "/a/b/gone",
            "/a/b/gone/***",
            "/a/b/new/***",
            "/c",
            "/gone",
            "/gone/***"
        ]
    );
}

/// `n` directories `dir/bNNN`, each with a file.
fn crowd(root: &Path, n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let d = format!("dir/b{i:03}");
            fs::create_dir_all(root.join(&d)).unwrap();
            fs::write(root.join(&d).join("f"), "x").unwrap();
            entry(&d, true)
        })
        .collect()
}

#[test]
fn a_directory_mostly_in_the_batch_is_synced_whole() {
    let t = tempfile::tempdir().unwrap();
    let mut entries = crowd(t.path(), CROWD_MIN);
    // One more directory, partly changed; a file not in the batch.
    fs::create_dir(t.path().join("dir/partly")).unwrap();
    entries.push(entry("dir/partly/new", false));
    fs::write(t.path().join("dir/old-file"), "x").unwrap();
    let parts = targeted(plan(t.path(), &entries, &BTreeSet::new(), 0));
    assert_eq!(lines(&parts[0].include), ["/dir/***"]);
}

#[test]
fn a_mass_deletion_is_one_line() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("dir")).unwrap();
    fs::write(t.path().join("dir/kept"), "x").unwrap();
    let entries: Vec<Entry> = (0..CROWD_MIN * 2)
        .map(|i| entry(&format!("dir/gone-{i}"), false))
        .collect();
    let parts = targeted(plan(t.path(), &entries, &BTreeSet::new(), 0));
    assert_eq!(lines(&parts[0].include), ["/dir/***"]);
}

#[test]
fn crowded_directories_of_one_parent_make_it_crowded_too() {
    let t = tempfile::tempdir().unwrap();
    let mut entries = Vec::new();
    for d in 0..CROWD_MIN {
        for f in 0..CROWD_MIN {
            let p = format!("top/d{d:03}/f{f:03}");
            fs::create_dir_all(t.path().join(format!("top/d{d:03}"))).unwrap();
            fs::write(t.path().join(&p), "x").unwrap();
            entries.push(entry(&p, false));
        }
    }
    let parts = targeted(plan(t.path(), &entries, &BTreeSet::new(), 0));
    assert_eq!(lines(&parts[0].include), ["/top/***"]);
}

#[test]
fn a_crowded_directory_with_an_unchanged_subtree_is_not_synced_whole() {
    for attr_only in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let mut entries = crowd(t.path(), CROWD_MIN);
        // A big directory nothing changed in (or only its own attributes): syncing
        // `dir` whole would walk it.
        fs::create_dir_all(t.path().join("dir/big/deep")).unwrap();
        if attr_only {
            entries.push(entry("dir/big", false));
        }
        let parts = targeted(plan(t.path(), &entries, &BTreeSet::new(), 0));
        let l = lines(&parts[0].include);
        assert_eq!(l.len(), 1 + CROWD_MIN + usize::from(attr_only), "{l:?}");
        assert!(!l.contains(&"/dir/***".to_string()));
    }
}

#[test]
fn a_crowded_directory_with_more_unchanged_files_than_changes_is_not_synced_whole() {
    let t = tempfile::tempdir().unwrap();
    let entries = crowd(t.path(), CROWD_MIN);
    for i in 0..=CROWD_MIN {
        fs::write(t.path().join(format!("dir/old-{i}")), "x").unwrap();
    }
    let parts = targeted(plan(t.path(), &entries, &BTreeSet::new(), 0));
    assert_eq!(lines(&parts[0].include).len(), 1 + CROWD_MIN);
    // Below the minimum nothing is collapsed either.
    let t = tempfile::tempdir().unwrap();
    let entries = crowd(t.path(), CROWD_MIN - 1);
    let parts = targeted(plan(t.path(), &entries, &BTreeSet::new(), 0));
    assert_eq!(lines(&parts[0].include).len(), CROWD_MIN);
}

#[test]
fn component_order_keeps_ancestors_shared() {
    let t = tempfile::tempdir().unwrap();
    let p = plan(
        t.path(),
        &[
            entry("a/x", false),
            entry("a-b", false),
            entry("a/y", false),
        ],
        &BTreeSet::new(),
        0,
    );
    // a, a/x, a/y are missing: the topmost vanished ancestor `a` is listed once.
    assert_eq!(
        lines(&targeted(p)[0].include),
        ["/a", "/a/***", "/a-b", "/a-b/***"]
    );
}

#[test]
fn long_lists_are_split_and_repeat_ancestors() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("d")).unwrap();
    let entries: Vec<Entry> = (0..10)
        .map(|i| {
            let p = format!("d/f{i}");
            fs::write(t.path().join(&p), "x").unwrap();
            entry(&p, false)
        })
        .collect();
    let parts = targeted(plan(t.path(), &entries, &BTreeSet::new(), 5));
    assert!(parts.len() >= 3, "{} parts", parts.len());
    for part in &parts {
        let l = lines(&part.include);
        assert_eq!(l[0], "/d", "every part lists the ancestor first");
    }
    let files: usize = parts
        .iter()
        .map(|p| {
            lines(&p.include)
                .iter()
                .filter(|l| l.ends_with("/***"))
                .count()
        })
        .sum();
    assert_eq!(files, 10, "no entry lost in the split");
}

#[test]
fn excludes_below_recursive_entries_are_passed() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("n/sub")).unwrap();
    let excludes: BTreeSet<Vec<u8>> = [b"n/sub/x.tmp".to_vec(), b"other.tmp".to_vec()].into();
    let parts = targeted(plan(t.path(), &[entry("n", true)], &excludes, 0));
    assert_eq!(lines(&parts[0].exclude), ["/n/sub/x.tmp"]);
    match plan(t.path(), &[entry("", true)], &excludes, 0) {
        Plan::Full { exclude } => assert_eq!(lines(&exclude), ["/n/sub/x.tmp", "/other.tmp"]),
        _ => panic!("root recursive is a full sync"),
    }
}

#[test]
fn a_hard_linked_file_makes_a_full_run() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("a")).unwrap();
    fs::write(t.path().join("a/one"), "x").unwrap();
    fs::write(t.path().join("single"), "x").unwrap();
    assert!(matches!(
        plan(t.path(), &[entry("single", false)], &BTreeSet::new(), 0),
        Plan::Targeted(_)
    ));
    fs::hard_link(t.path().join("a/one"), t.path().join("two")).unwrap();
    assert!(matches!(
        plan(t.path(), &[entry("two", false)], &BTreeSet::new(), 0),
        Plan::Full { .. }
    ));
}

fn masked(p: &str, mask: u32) -> Entry {
    Entry {
        mask,
        ..entry(p, false)
    }
}

fn runs_of(runs: Vec<Run>) -> Vec<(Check, Vec<String>)> {
    runs.into_iter()
        .map(|r| {
            let parts = targeted(r.plan);
            assert_eq!(parts.len(), 1);
            (r.check, lines(&parts[0].include))
        })
        .collect()
}

#[test]
fn written_and_moved_in_files_get_a_run_that_looks_past_the_quick_check() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("d")).unwrap();
    for f in [
        "d/written",
        "d/chmod",
        "d/moved-in",
        "d/other",
        "renamed",
        "from-temp",
    ] {
        fs::write(t.path().join(f), "x").unwrap();
    }
    let entries = [
        masked("d/written", libc::IN_MODIFY | libc::IN_CLOSE_WRITE),
        // touch: opened for writing, not written
        masked("d/chmod", libc::IN_ATTRIB | libc::IN_CLOSE_WRITE),
        masked("d/moved-in", libc::IN_MOVED_TO),
        // renamed inside the tree, unchanged; and a temporary file renamed into place
        masked("old", libc::IN_MOVED_FROM),
        masked("renamed", libc::IN_MOVED_TO),
        masked(
            ".tmp",
            libc::IN_CREATE | libc::IN_MODIFY | libc::IN_MOVED_FROM,
        ),
        masked("from-temp", libc::IN_MOVED_TO),
    ];
    let moves = [
        (b"old".to_vec(), b"renamed".to_vec()),
        (b".tmp".to_vec(), b"from-temp".to_vec()),
    ];
    let runs = runs_of(plan_runs(
        t.path(),
        &entries,
        &moves,
        &BTreeSet::new(),
        0,
        false,
    ));
    let want = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        runs,
        [
            (
                Check::Checksum,
                want(&[
                    "/.tmp",
                    "/.tmp/***",
                    "/d",
                    "/d/moved-in",
                    "/d/moved-in/***",
                    "/d/written",
                    "/d/written/***",
                    "/from-temp",
                    "/from-temp/***"
                ])
            ),
            (
                Check::Quick,
                want(&[
                    "/d",
                    "/d/chmod",
                    "/d/chmod/***",
                    "/old",
                    "/old/***",
                    "/renamed",
                    "/renamed/***"
                ])
            ),
        ]
    );
    // Without written or moved-in files: the one quick plan.
    let quiet = [masked("d/chmod", libc::IN_ATTRIB)];
    let runs = plan_runs(t.path(), &quiet, &[], &BTreeSet::new(), 0, false);
    assert_eq!(
        runs,
        [Run {
            check: Check::Quick,
            plan: plan(t.path(), &quiet, &BTreeSet::new(), 0)
        }]
    );
}

#[test]
fn a_new_directory_and_its_written_files_are_one_run() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("new/sub")).unwrap();
    fs::write(t.path().join("new/f"), "x").unwrap();
    fs::write(t.path().join("new/sub/g"), "x").unwrap();
    let w = libc::IN_CREATE | libc::IN_MODIFY | libc::IN_CLOSE_WRITE;
    let dir = libc::IN_CREATE | libc::IN_ISDIR;
    let entries = [
        Entry {
            mask: dir,
            ..entry("new", true)
        },
        Entry {
            mask: dir,
            ..entry("new/sub", true)
        },
        masked("new/f", w),
        masked("new/sub/g", w),
    ];
    let runs = runs_of(plan_runs(
        t.path(),
        &entries,
        &[],
        &BTreeSet::new(),
        0,
        false,
    ));
    assert_eq!(runs, [(Check::Checksum, vec!["/new/***".to_string()])]);
    // Also with files in it that are not in the batch (written before its watch).
    fs::write(t.path().join("new/unseen"), "x").unwrap();
    let runs = runs_of(plan_runs(
        t.path(),
        &entries,
        &[],
        &BTreeSet::new(),
        0,
        false,
    ));
    assert_eq!(runs, [(Check::Checksum, vec!["/new/***".to_string()])]);
    // A directory that did not appear: its written files are listed one by one while it
    // holds a file not in the batch (neither sent nor read), and it is synced whole once
    // all its entries (at least CROWD_MIN) are in the group.
    fs::create_dir(t.path().join("old")).unwrap();
    let names: Vec<String> = (0..CROWD_MIN).map(|i| format!("old/f{i:03}")).collect();
    for f in names.iter().map(String::as_str).chain(["old/unchanged"]) {
        fs::write(t.path().join(f), "x").unwrap();
    }
    let entries: Vec<Entry> = names.iter().map(|f| masked(f, w)).collect();
    let runs = runs_of(plan_runs(
        t.path(),
        &entries,
        &[],
        &BTreeSet::new(),
        0,
        false,
    ));
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0, Check::Checksum);
    assert_eq!(runs[0].1.len(), 1 + 2 * CROWD_MIN, "{:?}", runs[0].1);
    fs::remove_file(t.path().join("old/unchanged")).unwrap();
    let runs = runs_of(plan_runs(
        t.path(),
        &entries,
        &[],
        &BTreeSet::new(),
        0,
        false,
    ));
    assert_eq!(runs, [(Check::Checksum, vec!["/old/***".to_string()])]);
}

#[test]
fn a_directory_replaced_in_the_batch_is_checked_whole_and_a_renamed_one_is_not() {
    let t = tempfile::tempdir().unwrap();
    for d in ["replaced/sub", "new", "renamed"] {
        fs::create_dir_all(t.path().join(d)).unwrap();
    }
    let dir = |p: &str, mask: u32| Entry {
        mask: mask | libc::IN_ISDIR,
        ..entry(p, true)
    };
    let entries = [
        dir("replaced", libc::IN_DELETE | libc::IN_CREATE),
        dir("replaced/sub", libc::IN_CREATE),
        dir("new", libc::IN_CREATE),
        dir("renamed", libc::IN_MOVED_FROM | libc::IN_MOVED_TO),
        masked("gone", libc::IN_MOVED_FROM | libc::IN_ISDIR),
    ];
    let moves = [(b"gone".to_vec(), b"renamed".to_vec())];
    let runs = runs_of(plan_runs(
        t.path(),
        &entries,
        &moves,
        &BTreeSet::new(),
        0,
        false,
    ));
    assert_eq!(
        runs,
        [
            (Check::Checksum, vec!["/replaced/***".to_string()]),
            (
                Check::Quick,
                vec![
                    "/gone".to_string(),
                    "/gone/***".into(),
                    "/new/***".into(),
                    "/renamed/***".into()
                ]
            ),
        ]
    );
}

#[test]
fn root_attributes_only_give_an_empty_include_list() {
    let t = tempfile::tempdir().unwrap();
    let parts = targeted(plan(t.path(), &[entry("", false)], &BTreeSet::new(), 0));
    assert_eq!(parts.len(), 1);
    assert!(parts[0].include.is_empty());
}

fn files(p: &Plan) -> Vec<String> {
    match p {
        Plan::Files(list) => lines(list),
        p => panic!("expected a --files-from list: {p:?}"),
    }
}

/// A file written in a directory with many siblings (the probe of bench/live.sh: its
/// parents hold 200 and 100 entries) is one `--files-from` line: rsync reads no directory,
/// neither at the source nor at the destination. Deletions, attribute changes and a
/// vanished tree's top go in the same kind of list.
#[test]
fn existing_files_and_deletions_go_in_a_files_from_list() {
    let t = tempfile::tempdir().unwrap();
    for i in 0..200 {
        fs::create_dir_all(t.path().join(format!("d{i:03}/s"))).unwrap();
        fs::write(t.path().join(format!("d{i:03}/f")), "x").unwrap();
    }
    fs::write(t.path().join("d199/s/probe"), "x").unwrap();
    fs::write(t.path().join("d199/s/chmod"), "x").unwrap();
    let written = [masked(
        "d199/s/probe",
        libc::IN_CREATE | libc::IN_MODIFY | libc::IN_CLOSE_WRITE,
    )];
    let runs = plan_runs(t.path(), &written, &[], &BTreeSet::new(), 0, true);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].check, Check::Checksum);
    assert_eq!(files(&runs[0].plan), ["d199/s/probe"]);
    // Without: the filter lists of before (rsyncshell, rsyncso, a user's argv).
    let runs = plan_runs(t.path(), &written, &[], &BTreeSet::new(), 0, false);
    assert_eq!(
        lines(&targeted(runs.into_iter().next().unwrap().plan)[0].include),
        ["/d199", "/d199/s", "/d199/s/probe", "/d199/s/probe/***"]
    );
    // A chmod, a deletion, a directory's own attributes, a vanished tree (its top).
    let quick = [
        masked("d199/s/chmod", libc::IN_ATTRIB),
        masked("d199/s/gone", libc::IN_DELETE),
        masked("d010", libc::IN_ATTRIB | libc::IN_ISDIR),
        masked("vanished/deep/x", libc::IN_DELETE),
    ];
    let runs = plan_runs(t.path(), &quick, &[], &BTreeSet::new(), 0, true);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].check, Check::Quick);
    assert_eq!(
        files(&runs[0].plan),
        ["d010", "d199/s/chmod", "d199/s/gone", "vanished"]
    );
    // rsync reads a line starting with `#` or `;` as a comment, NUL-separated or not.
    let odd = [
        masked("#hash", libc::IN_DELETE),
        masked(";semi", libc::IN_DELETE),
        masked("d199/#deeper", libc::IN_DELETE),
    ];
    let runs = plan_runs(t.path(), &odd, &[], &BTreeSet::new(), 0, true);
    assert_eq!(files(&runs[0].plan), ["./#hash", "./;semi", "d199/#deeper"]);
    // Both groups of an editor's save: the written file, and its temporary name gone.
    let save = [
        masked("d199/s/.probe.swp", libc::IN_CREATE | libc::IN_DELETE),
        masked("d199/s/probe", libc::IN_MODIFY),
    ];
    let runs = plan_runs(t.path(), &save, &[], &BTreeSet::new(), 0, true);
    let got: Vec<(Check, Vec<String>)> = runs.iter().map(|r| (r.check, files(&r.plan))).collect();
    assert_eq!(
        got,
        [
            (Check::Checksum, vec!["d199/s/probe".to_string()]),
            (Check::Quick, vec!["d199/s/.probe.swp".to_string()]),
        ]
    );
}

/// Where rsync has to read a directory, or a filter list protects something, the
/// include lists stay: a directory synced recursively, a path that may replace a
/// directory holding rule-excluded entries, an ancestor that is not a directory (a
/// symlink now: rsync would follow it), the root's own attributes.
#[test]
fn a_files_from_list_only_where_no_directory_is_read() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("a/new")).unwrap();
    fs::write(t.path().join("a/f"), "x").unwrap();
    fs::create_dir_all(t.path().join("real/b")).unwrap();
    fs::write(t.path().join("real/b/f"), "x").unwrap();
    std::os::unix::fs::symlink("real", t.path().join("link")).unwrap();
    let none = BTreeSet::new();
    let is_files = |entries: &[Entry], excludes: &BTreeSet<Vec<u8>>| {
        let runs = plan_runs(t.path(), entries, &[], excludes, 0, true);
        runs.iter().any(|r| matches!(r.plan, Plan::Files(_)))
    };
    assert!(is_files(&[masked("a/f", libc::IN_ATTRIB)], &none));
    assert!(!is_files(
        &[masked("a/f", libc::IN_ATTRIB), entry("a/new", true)],
        &none
    ));
    let excluded: BTreeSet<Vec<u8>> = [b"gone/x.tmp".to_vec()].into();
    assert!(is_files(&[masked("gone", libc::IN_DELETE)], &none));
    assert!(!is_files(&[masked("gone", libc::IN_DELETE)], &excluded));
    assert!(!is_files(&[masked("link/b/f", libc::IN_ATTRIB)], &none));
    assert!(!is_files(
        &[masked("a/f", libc::IN_ATTRIB), entry("", false)],
        &none
    ));
}
