//! Live-mirroring behaviour: one test per hard case.

use crate::common;

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// Names that break naive shell quoting, rsync filter/include lists,
/// line-based protocols or UTF-8 assumptions.
const SPECIAL: &[&[u8]] = &[
    b"new\nline",
    b"back\\slash",
    b"-rf",
    b"--delete",
    b"#hash",
    b"[a]*?",
    b"*",
    b"**",
    b"trailing space ",
    b" leading space",
    b"\xff\xfe",
    b"tab\there",
    b"cr\rhere",
    b"quote'\"$(x)`",
    b"- x",
    b"+ y",
    b"!bang",
    b"~",
    b"...",
    b"uni\xc3\xa9",
    b"a:b",
];

fn with_suffix(name: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut v = name.to_vec();
    v.extend_from_slice(suffix);
    v
}

#[test]
fn initial_sync_then_live_change() {
    let t = TestDir::new("initial_sync");
    write(&t.s(b"top.txt"), b"top level file\n");
    write(&t.s(b"empty"), b"");
    mkdir_p(&t.s(b"a/b/c"));
    write(&t.s(b"a/one"), b"1");
    write(&t.s(b"a/b/two"), &[2u8; 3000]);
    write(&t.s(b"a/b/c/three"), b"333");
    chmod(&t.s(b"a/b/two"), 0o600);
    chmod(&t.s(b"a/b"), 0o750);
    mkdir(&t.s(b"emptydir"));
    symlink(b"a/b/two", &t.s(b"link"));
    symlink(b"../top.txt", &t.s(b"a/uplink"));
    // Stale content in DST must not survive a mirror.
    write(&t.d(b"stale"), b"stale");
    mkdir_p(&t.d(b"stale_dir/x"));

    let mut w = t.start(NO_ARGS);
    // Readiness means the initial sync has finished: no polling here.
    assert_synced_now(&t.src, &t.dst, "right after readiness");

    write(&t.s(b"top.txt"), b"changed\n");
    write(&t.s(b"a/b/c/new"), b"new file");
    mkdir(&t.s(b"newdir"));
    write(&t.s(b"newdir/f"), b"f");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn mkdir_p_deep_with_files_at_once() {
    let t = TestDir::new("mkdir_p_deep");
    let mut w = t.start(NO_ARGS);

    let levels: &[&[u8]] = &[
        b"l1",
        b"l1/l2",
        b"l1/l2/l3",
        b"l1/l2/l3/l4",
        b"l1/l2/l3/l4/l5",
    ];
    mkdir_p(&t.s(levels[4]));
    for (i, l) in levels.iter().enumerate() {
        for j in 0..3 {
            let p = t.s(&with_suffix(l, format!("/f{i}_{j}").as_bytes()));
            write(&p, format!("level {i} file {j}\n").as_bytes());
        }
    }
    // A second deep chain built one mkdir + one file at a time, no pauses.
    let mut rel = b"m".to_vec();
    for i in 0..5 {
        mkdir(&t.s(&rel));
        write(
            &t.s(&with_suffix(&rel, b"/file")),
            format!("{i}").as_bytes(),
        );
        rel.extend_from_slice(format!("/m{i}").as_bytes());
    }
    w.wait_synced(SYNC_TIMEOUT);
}

#[test]
fn many_files_in_fresh_dir() {
    let t = TestDir::new("many_files");
    let mut w = t.start(NO_ARGS);

    mkdir(&t.s(b"fresh"));
    for i in 0..2000 {
        write(
            &t.s(format!("fresh/file{i:04}").as_bytes()),
            format!("content of {i}\n").as_bytes(),
        );
    }
    w.wait_synced(Duration::from_secs(60));
}

#[test]
fn dir_rename() {
    let t = TestDir::new("dir_rename");
    let mut w = t.start(NO_ARGS);

    mkdir_p(&t.s(b"d1/sub/deeper"));
    write(&t.s(b"d1/f"), b"f");
    write(&t.s(b"d1/sub/g"), b"g");
    write(&t.s(b"d1/sub/deeper/h"), b"h");
    mkdir(&t.s(b"d1/emptysub"));
    w.wait_synced(SYNC_TIMEOUT);

    rename(&t.s(b"d1"), &t.s(b"d2"));
    w.wait_synced(SYNC_TIMEOUT);
    assert!(!exists_nofollow(&t.d(b"d1")), "old name still in dst");

    // The watches under the renamed directory must follow the new name.
    write(&t.s(b"d2/sub/new"), b"new");
    write(&t.s(b"d2/sub/deeper/new2"), b"new2");
    mkdir(&t.s(b"d2/emptysub/later"));
    write(&t.s(b"d2/emptysub/later/x"), b"x");
    w.wait_synced(SYNC_TIMEOUT);

    // Back to the old name, then into another directory.
    rename(&t.s(b"d2"), &t.s(b"d1"));
    write(&t.s(b"d1/sub/after_back"), b"back");
    w.wait_synced(SYNC_TIMEOUT);
    mkdir(&t.s(b"other"));
    rename(&t.s(b"d1"), &t.s(b"other/moved"));
    w.wait_synced(SYNC_TIMEOUT);
    write(&t.s(b"other/moved/sub/deeper/last"), b"last");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn dir_moved_out_of_tree() {
    let t = TestDir::new("move_out");
    let mut w = t.start(NO_ARGS);

    mkdir_p(&t.s(b"d/sub/deep"));
    write(&t.s(b"d/a"), b"a");
    write(&t.s(b"d/sub/b"), b"b");
    write(&t.s(b"d/sub/deep/c"), b"c");
    write(&t.s(b"keep"), b"keep");
    w.wait_synced(SYNC_TIMEOUT);

    rename(&t.s(b"d"), &t.o(b"d"));
    w.wait_synced(SYNC_TIMEOUT);
    assert!(!exists_nofollow(&t.d(b"d")), "moved-out dir still in dst");

    // Changes in the moved-out directory must not reach DST.
    write(&t.o(b"d/after"), b"after");
    write(&t.o(b"d/sub/after2"), b"after2");
    write(&t.o(b"d/sub/deep/c"), b"changed outside");
    mkdir(&t.o(b"d/newsub"));
    write(&t.o(b"d/newsub/x"), b"x");
    // A later change in SRC: once it is mirrored, the worker has read the
    // events of the writes above too (one inotify queue, in order).
    write(&t.s(b"marker"), b"marker");
    w.wait_synced(SYNC_TIMEOUT);
    assert!(
        !exists_nofollow(&t.d(b"d")),
        "writes outside SRC re-created d in dst"
    );
    assert!(
        !exists_nofollow(&t.d(b"after")),
        "writes outside SRC leaked into dst"
    );
    assert!(
        !exists_nofollow(&t.d(b"newsub")),
        "writes outside SRC leaked into dst"
    );

    // Moving it back in brings everything, including what was written outside.
    rename(&t.o(b"d"), &t.s(b"back"));
    w.wait_synced(SYNC_TIMEOUT);
    write(&t.s(b"back/newsub/y"), b"y");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn dir_moved_into_tree() {
    let t = TestDir::new("move_in");
    let mut w = t.start(NO_ARGS);

    mkdir_p(&t.o(b"m/sub/deep/deeper"));
    write(&t.o(b"m/a"), b"a");
    write(&t.o(b"m/sub/b"), &[7u8; 5000]);
    write(&t.o(b"m/sub/deep/c"), b"c");
    write(&t.o(b"m/sub/deep/deeper/d"), b"d");
    symlink(b"../a", &t.o(b"m/sub/link"));
    chmod(&t.o(b"m/sub/deep"), 0o711);
    rename(&t.o(b"m"), &t.s(b"m"));
    w.wait_synced(SYNC_TIMEOUT);

    // The moved-in subtree must be watched.
    write(&t.s(b"m/sub/deep/deeper/new"), b"new");
    mkdir(&t.s(b"m/sub/deep/deeper/newdir"));
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn rename_then_recreate() {
    let t = TestDir::new("rename_recreate");
    let mut w = t.start(NO_ARGS);

    mkdir_p(&t.s(b"a/sub"));
    write(&t.s(b"a/f1"), b"f1");
    write(&t.s(b"a/sub/f2"), b"f2");
    w.wait_synced(SYNC_TIMEOUT);

    rename(&t.s(b"a"), &t.s(b"b"));
    mkdir(&t.s(b"a"));
    write(&t.s(b"a/f"), b"new a/f");
    w.wait_synced(SYNC_TIMEOUT);

    // The new `a` and the renamed `b` must both be watched, independently.
    write(&t.s(b"a/g"), b"g");
    mkdir(&t.s(b"a/sub"));
    write(&t.s(b"a/sub/h"), b"h");
    write(&t.s(b"b/sub/in_b"), b"in b");
    write(&t.s(b"b/f1"), b"f1 changed");
    w.wait_synced(SYNC_TIMEOUT);
    write(&t.s(b"a/sub/i"), b"i");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn type_changes() {
    let t = TestDir::new("type_changes");
    let mut w = t.start(NO_ARGS);

    write(&t.s(b"x"), b"x was a file");
    mkdir_p(&t.s(b"y/sub"));
    write(&t.s(b"y/a"), b"a");
    write(&t.s(b"y/sub/b"), b"b");
    symlink(b"x", &t.s(b"s"));
    w.wait_synced(SYNC_TIMEOUT);

    // file -> dir, dir with contents -> file, symlink -> file
    remove_file(&t.s(b"x"));
    mkdir(&t.s(b"x"));
    write(&t.s(b"x/f"), b"inside x");
    remove_dir_all(&t.s(b"y"));
    write(&t.s(b"y"), b"y is a file now");
    remove_file(&t.s(b"s"));
    write(&t.s(b"s"), b"s is a file now");
    w.wait_synced(SYNC_TIMEOUT);

    // and back: dir with contents -> file, file -> dir, file -> symlink
    remove_dir_all(&t.s(b"x"));
    write(&t.s(b"x"), b"x is a file again");
    remove_file(&t.s(b"y"));
    mkdir(&t.s(b"y"));
    mkdir(&t.s(b"y/sub2"));
    write(&t.s(b"y/sub2/c"), b"c");
    remove_file(&t.s(b"s"));
    symlink(b"y", &t.s(b"s"));
    w.wait_synced(SYNC_TIMEOUT);

    // Several flips inside one collect window.
    write(&t.s(b"z"), b"z1");
    remove_file(&t.s(b"z"));
    mkdir(&t.s(b"z"));
    write(&t.s(b"z/f"), b"zf");
    remove_dir_all(&t.s(b"z"));
    write(&t.s(b"z"), b"z final file");
    mkdir(&t.s(b"v"));
    write(&t.s(b"v/f"), b"vf");
    remove_dir_all(&t.s(b"v"));
    write(&t.s(b"v"), b"v");
    remove_file(&t.s(b"v"));
    mkdir(&t.s(b"v"));
    write(&t.s(b"v/final"), b"v final dir");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn symlinks() {
    let t = TestDir::new("symlinks");
    mkdir(&t.s(b"tdir"));
    write(&t.s(b"tdir/a"), b"a");
    write(&t.s(b"file.txt"), b"file");
    symlink(b"file.txt", &t.s(b"l_file"));
    symlink(b"tdir", &t.s(b"l_dir"));
    symlink(b"nowhere/at/all", &t.s(b"l_dangling"));
    // An absolute link to a directory outside SRC: following it would copy
    // (and watch) things that are not part of the tree.
    write(&t.o(b"secret"), b"outside");
    symlink(pb(&t.outside), &t.s(b"l_out"));

    let mut w = t.start(NO_ARGS);
    assert_synced_now(&t.src, &t.dst, "right after readiness");
    assert!(lstat(&t.d(b"l_dir")).file_type().is_symlink());

    // New files in the link's target directory, one written through the link.
    write(&t.s(b"tdir/new"), b"new");
    write(&t.s(b"l_dir/via_link"), b"written through the link");
    write(&t.o(b"secret2"), b"outside 2");
    // New links created live.
    symlink(b"tdir", &t.s(b"l2_dir"));
    symlink(b"missing/x", &t.s(b"l2_dangling"));
    symlink(pb(&t.outside), &t.s(b"l2_out"));
    mkdir(&t.s(b"sub"));
    symlink(b"../tdir/a", &t.s(b"sub/l_up"));
    w.wait_synced(SYNC_TIMEOUT);
    for l in [&b"l_dir"[..], b"l2_dir", b"l_out", b"l2_out"] {
        assert!(
            lstat(&t.d(l)).file_type().is_symlink(),
            "{} is not a symlink in dst",
            show(l)
        );
    }

    // Change link targets: replace in place, and atomically via rename.
    remove_file(&t.s(b"l_file"));
    symlink(b"tdir/a", &t.s(b"l_file"));
    symlink(b"file.txt", &t.s(b"tmp_link"));
    rename(&t.s(b"tmp_link"), &t.s(b"l_dir"));
    symlink(b"still/nowhere", &t.s(b"tmp_link2"));
    rename(&t.s(b"tmp_link2"), &t.s(b"l_dangling"));
    w.wait_synced(SYNC_TIMEOUT);

    // A link replaced by a real directory, and a file inside it.
    remove_file(&t.s(b"l2_dir"));
    mkdir(&t.s(b"l2_dir"));
    write(&t.s(b"l2_dir/real"), b"real");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn hardlinks() {
    let t = TestDir::new("hardlinks");
    mkdir(&t.s(b"pre"));
    mkdir(&t.s(b"pre/sub"));
    write(&t.s(b"pre/h1"), b"one inode, three names");
    hard_link(&t.s(b"pre/h1"), &t.s(b"pre/h2"));
    hard_link(&t.s(b"pre/h1"), &t.s(b"pre/sub/h3"));

    let mut w = t.start(NO_ARGS);
    assert_synced_now(&t.src, &t.dst, "right after readiness");
    let ino = |rel: &[u8]| lstat(&t.d(rel)).ino();
    assert_eq!(
        ino(b"pre/h1"),
        ino(b"pre/h2"),
        "initial sync: h1/h2 not one inode in dst"
    );
    assert_eq!(
        ino(b"pre/h1"),
        ino(b"pre/sub/h3"),
        "initial sync: h1/h3 not one inode in dst"
    );

    mkdir(&t.s(b"live"));
    mkdir(&t.s(b"live/sub"));
    write(&t.s(b"live/a"), b"live hard link");
    hard_link(&t.s(b"live/a"), &t.s(b"live/b"));
    hard_link(&t.s(b"live/a"), &t.s(b"live/sub/c"));
    w.wait_synced(SYNC_TIMEOUT);
    wait_until(
        SYNC_TIMEOUT,
        "live hard links to share an inode in dst",
        || {
            let i = |rel: &[u8]| {
                std::fs::symlink_metadata(t.d(rel))
                    .map(|m| m.ino())
                    .map_err(|e| format!("{}: {e}", show(rel)))
            };
            let (a, b, c) = (i(b"live/a")?, i(b"live/b")?, i(b"live/sub/c")?);
            if a == b && a == c {
                Ok(())
            } else {
                Err(format!("inodes in dst: a={a} b={b} sub/c={c}"))
            }
        },
    );
    w.stop_ok();
}

#[test]
fn hardlink_to_already_mirrored_inode() {
    let t = TestDir::new("hardlink_mirrored");
    mkdir(&t.s(b"pre"));
    write(&t.s(b"pre/h1"), b"one inode");
    mkdir(&t.s(b"live"));
    let mut w = t.start(NO_ARGS);
    assert_synced_now(&t.src, &t.dst, "right after readiness");

    // A new name, in another directory, for an inode mirrored long ago.
    hard_link(&t.s(b"pre/h1"), &t.s(b"live/h4"));
    w.wait_synced(SYNC_TIMEOUT);
    wait_until(
        SYNC_TIMEOUT,
        "live/h4 to share pre/h1's inode in dst",
        || {
            let a = std::fs::symlink_metadata(t.d(b"pre/h1")).map_err(|e| e.to_string())?;
            let b = std::fs::symlink_metadata(t.d(b"live/h4")).map_err(|e| e.to_string())?;
            if a.ino() == b.ino() {
                Ok(())
            } else {
                Err(format!(
                    "inodes in dst: pre/h1={} live/h4={}",
                    a.ino(),
                    b.ino()
                ))
            }
        },
    );
    w.stop_ok();
}

#[test]
fn chmod_propagates() {
    let t = TestDir::new("chmod");
    write(&t.s(b"f"), b"f");
    chmod(&t.s(b"f"), 0o644);
    mkdir(&t.s(b"d"));
    chmod(&t.s(b"d"), 0o755);
    write(&t.s(b"d/inner"), b"inner");
    let mut w = t.start(NO_ARGS);
    assert_synced_now(&t.src, &t.dst, "right after readiness");

    chmod(&t.s(b"f"), 0o600);
    chmod(&t.s(b"d"), 0o700);
    w.wait_synced(SYNC_TIMEOUT);

    chmod(&t.s(b"f"), 0o755);
    chmod(&t.s(b"d"), 0o750);
    chmod(&t.s(b"d/inner"), 0o640);
    w.wait_synced(SYNC_TIMEOUT);

    // setgid on a directory, and the root directory itself
    chmod(&t.s(b"d"), 0o2775);
    chmod(&t.src, 0o751);
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn special_names() {
    let t = TestDir::new("special_names");
    mkdir(&t.s(b"pre"));
    for n in SPECIAL {
        write(&bp(&t.s(b"pre"), n), n);
    }
    let mut w = t.start(NO_ARGS);
    assert_synced_now(&t.src, &t.dst, "right after readiness");

    // Live: files at the top level, directories (with a file and a
    // subdirectory of the same name) under d/.
    mkdir(&t.s(b"d"));
    for n in SPECIAL {
        write(&t.s(n), n);
        let dir = bp(&t.s(b"d"), n);
        mkdir(&dir);
        write(&bp(&dir, n), b"file in special dir");
    }
    w.wait_synced(SYNC_TIMEOUT);

    // Changes inside the special directories (their watches must work).
    for n in SPECIAL {
        let dir = bp(&t.s(b"d"), n);
        append(&bp(&dir, n), b" + appended");
        let sub = bp(&dir, &with_suffix(n, b".sub"));
        mkdir(&sub);
        write(&bp(&sub, n), n);
        chmod(&dir, 0o700);
    }
    w.wait_synced(SYNC_TIMEOUT);

    // Renames between special names.
    for (i, n) in SPECIAL.iter().enumerate() {
        let next = SPECIAL[(i + 1) % SPECIAL.len()];
        rename(&t.s(n), &t.s(&with_suffix(next, b"\x01renamed")));
    }
    w.wait_synced(SYNC_TIMEOUT);

    // Deletion of such entries propagates.
    for n in SPECIAL {
        remove_file(&t.s(&with_suffix(n, b"\x01renamed")));
        remove_dir_all(&bp(&t.s(b"d"), n));
        remove_file(&bp(&t.s(b"pre"), n));
    }
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn overflow_while_stopped() {
    let t = TestDir::new("overflow");
    // Existing, watched directories so that the burst generates events.
    for d in 0..30 {
        mkdir_p(&t.s(format!("n/d{d:02}").as_bytes()));
        write(&t.s(format!("n/d{d:02}/seed").as_bytes()), b"seed");
    }
    mkdir(&t.s(b"old"));
    for i in 0..300 {
        write(
            &t.s(format!("old/f{i:03}").as_bytes()),
            format!("old {i}").as_bytes(),
        );
    }
    let mut w = t.start(NO_ARGS);
    assert_synced_now(&t.src, &t.dst, "right after readiness");

    // More new files than the kernel queues events (each is at least one event), so the
    // queue overflows while the worker is stopped.
    let limit: usize = std::fs::read_to_string(if fanotify_run() {
        "/proc/sys/fs/fanotify/max_queued_events"
    } else {
        "/proc/sys/fs/inotify/max_queued_events"
    })
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(16_384);
    let files = (limit + limit / 2).max(30_000);
    w.signal(Signal::SIGSTOP);
    for i in 0..files {
        let d = i % 30;
        write(
            &t.s(format!("n/d{d:02}/f{i:05}").as_bytes()),
            format!("{i}\n").as_bytes(),
        );
    }
    // And in directories the worker has never seen.
    for d in 0..5 {
        mkdir_p(&t.s(format!("fresh/e{d}/deep").as_bytes()));
        for i in 0..20 {
            write(&t.s(format!("fresh/e{d}/deep/g{i}").as_bytes()), b"g");
        }
    }
    for i in 0..100 {
        remove_file(&t.s(format!("old/f{i:03}").as_bytes()));
    }
    for i in 100..200 {
        rename(
            &t.s(format!("old/f{i:03}").as_bytes()),
            &t.s(format!("n/d{:02}/renamed{i}", i % 30).as_bytes()),
        );
    }
    rename(&t.s(b"n/d29"), &t.s(b"n/d29_renamed"));
    remove_dir_all(&t.s(b"n/d28"));
    w.signal(Signal::SIGCONT);
    w.wait_synced(Duration::from_secs(120));
    // Converged because the overflow was handled, not because there was none.
    let log = w.stderr();
    assert!(
        log.contains("queue overflowed"),
        "no queue overflow with {files} new files (limit {limit}):\n{log}"
    );

    // Still mirroring live after the overflow.
    write(&t.s(b"n/d00/after_overflow"), b"after");
    write(&t.s(b"n/d29_renamed/after_overflow"), b"after");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn sigterm_flushes_queue() {
    let t = TestDir::new("sigterm_flush");
    write(&t.s(b"existing"), b"existing");
    let mut w = t.start(&["-t", "30", "-w", "30"]);
    assert_synced_now(&t.src, &t.dst, "right after readiness");

    write(&t.s(b"existing"), b"modified before SIGTERM");
    for i in 0..20 {
        write(&t.s(format!("f{i}").as_bytes()), format!("{i}").as_bytes());
    }
    mkdir_p(&t.s(b"dir/sub"));
    write(&t.s(b"dir/sub/deep"), b"deep");
    let started = Instant::now();
    let st = w.stop();
    assert_eq!(
        st.code(),
        Some(0),
        "exit status after SIGTERM: {st:?}\nstderr:\n{}",
        w.stderr()
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "SIGTERM took {:?}: the worker waited for the collect delay instead of flushing",
        started.elapsed()
    );
    assert_synced_now(&t.src, &t.dst, "right after exit on SIGTERM");
    let left = processes_mentioning(pb(&t.dst));
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn deletions() {
    let t = TestDir::new("deletions");
    let mut rel = b"deep".to_vec();
    for i in 0..6 {
        mkdir_p(&t.s(&rel));
        write(
            &t.s(&with_suffix(&rel, b"/file")),
            format!("{i}").as_bytes(),
        );
        mkdir(&t.s(&with_suffix(&rel, b"/branch")));
        write(&t.s(&with_suffix(&rel, b"/branch/leaf")), b"leaf");
        symlink(b"file", &t.s(&with_suffix(&rel, b"/link")));
        rel.extend_from_slice(format!("/lvl{i}").as_bytes());
    }
    write(&t.s(b"single"), b"single");
    write(&t.s(b"survivor"), b"survivor");
    let mut w = t.start(NO_ARGS);
    assert_synced_now(&t.src, &t.dst, "right after readiness");

    remove_dir_all(&t.s(b"deep"));
    remove_file(&t.s(b"single"));
    w.wait_synced(SYNC_TIMEOUT);
    assert!(!exists_nofollow(&t.d(b"deep")));
    assert!(!exists_nofollow(&t.d(b"single")));

    // Created and deleted inside one collect window.
    mkdir_p(&t.s(b"ephemeral/a/b"));
    write(&t.s(b"ephemeral/a/b/c"), b"c");
    write(&t.s(b"ephemeral_file"), b"e");
    remove_dir_all(&t.s(b"ephemeral"));
    remove_file(&t.s(b"ephemeral_file"));
    write(&t.s(b"marker"), b"m");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn bigfile_queue_syncs() {
    let t = TestDir::new("bigfile_syncs");
    let mut w = t.start(&["-B", "1000", "-T", "0.1", "-t", "0.1"]);
    write(&t.s(b"big"), &[b'B'; 5000]);
    write(&t.s(b"small"), b"small");
    w.wait_synced(SYNC_TIMEOUT);
    // A file that grows over the threshold.
    write(&t.s(b"grows"), b"tiny");
    w.wait_synced(SYNC_TIMEOUT);
    append(&t.s(b"grows"), &[b'G'; 3000]);
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

#[test]
fn bigfile_queue_is_separate() {
    let t = TestDir::new("bigfile_separate");
    let mut w = t.start(&["-T", "30", "-t", "0.1", "-B", "1000"]);
    let big = vec![b'B'; 5000];
    write(&t.s(b"big"), &big);
    write(&t.s(b"small"), b"small file");
    let written = Instant::now();
    wait_until(Duration::from_secs(10), "the small file in dst", || {
        w.assert_alive();
        match std::fs::read(t.d(b"small")) {
            Ok(c) if c == b"small file" => Ok(()),
            Ok(c) => Err(format!("dst/small has {} bytes", c.len())),
            Err(e) => Err(format!("dst/small: {e}")),
        }
    });
    assert!(
        !exists_nofollow(&t.d(b"big")),
        "big file synced {:?} after it was written with -T 30: not held back",
        written.elapsed()
    );
    // Small files keep flowing for a few seconds while the big one waits.
    let mut i = 0;
    while written.elapsed() < Duration::from_secs(3) {
        i += 1;
        let name = format!("small{i}");
        write(&t.s(name.as_bytes()), name.as_bytes());
        wait_until(Duration::from_secs(10), "another small file in dst", || {
            w.assert_alive();
            match std::fs::read(t.d(name.as_bytes())) {
                Ok(c) if c == name.as_bytes() => Ok(()),
                Ok(c) => Err(format!("dst/{name} has {} bytes", c.len())),
                Err(e) => Err(format!("dst/{name}: {e}")),
            }
        });
        assert!(
            !exists_nofollow(&t.d(b"big")),
            "big file synced {:?} after it was written with -T 30: not held back",
            written.elapsed()
        );
    }
    // SIGTERM flushes the big-file queue too.
    w.stop_ok();
    assert_synced_now(&t.src, &t.dst, "right after exit on SIGTERM");
}

#[test]
fn include_list_split() {
    // Tiny include-list parts: every part must still carry the ancestors of
    // its paths, or rsync's final `--exclude=*` hides them.
    let t = TestDir::new("inclimit");
    let mut w = t.start(&["--rsync-inclimit", "7"]);
    for d in 0..6 {
        for e in 0..3 {
            let dir = format!("a{d}/b{e}/c");
            mkdir_p(&t.s(dir.as_bytes()));
            for f in 0..8 {
                write(
                    &t.s(format!("{dir}/f{f}").as_bytes()),
                    format!("{dir}/{f}").as_bytes(),
                );
            }
        }
        write(&t.s(format!("a{d}/top").as_bytes()), b"top");
    }
    w.wait_synced(SYNC_TIMEOUT);
    // Live changes spread over many directories, then deletions.
    for d in 0..6 {
        for e in 0..3 {
            append(&t.s(format!("a{d}/b{e}/c/f0").as_bytes()), b"+");
            remove_file(&t.s(format!("a{d}/b{e}/c/f7").as_bytes()));
        }
    }
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

fn classic_args(t: &TestDir, mode: &[&str]) -> Vec<OsString> {
    let mut a: Vec<OsString> = mode.iter().map(OsString::from).collect();
    a.extend([
        "-W".into(),
        t.src.clone().into(),
        "-D".into(),
        t.dst.clone().into(),
        "-t".into(),
        "0.1".into(),
        "-w".into(),
        "0.1".into(),
        "--status-file".into(),
        t.status.clone().into(),
    ]);
    a
}

/// The classic form (`-W SRC -D DST`) with the mode given as `mode`.
fn classic_form(name: &str, mode: &[&str]) {
    let t = TestDir::new(name);
    mkdir(&t.s(b"pre"));
    write(&t.s(b"pre/f"), b"pre");
    let args = classic_args(&t, mode);
    let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &t.status, &args);
    assert_synced_now(&t.src, &t.dst, &format!("{name}: right after readiness"));
    write(&t.s(b"live"), b"live");
    mkdir(&t.s(b"pre/sub"));
    write(&t.s(b"pre/sub/g"), b"g");
    w.wait_synced_ctx(SYNC_TIMEOUT, name, &no_filter);
    w.stop_ok();
}

cases! { classic_form;
    classic_form_separate_mode: &["-M", "rsyncdirect"],
    classic_form_glued_mode: &["-Mrsyncdirect"],
}

#[test]
fn rules_file() {
    let t = TestDir::new("rules");
    let rules = t.root.join("rules");
    write(&rules, b"-f\\.tmp$\n-d^cache$\n");
    // Excluded: files matching \.tmp$, the directory "cache" at the top.
    let excluded = |rel: &[u8], is_dir: bool| -> bool {
        (!is_dir && rel.ends_with(b".tmp")) || (is_dir && rel == b"cache")
    };

    write(&t.s(b"a.tmp"), b"excluded");
    write(&t.s(b"a.txt"), b"included");
    mkdir_p(&t.s(b"cache/inner"));
    write(&t.s(b"cache/inner/x"), b"excluded");
    mkdir_p(&t.s(b"sub/cache"));
    write(&t.s(b"sub/cache/y"), b"included: not top-level");
    write(&t.s(b"sub/z.tmp"), b"excluded");
    mkdir(&t.s(b"dir.tmp"));
    write(&t.s(b"dir.tmp/in"), b"included: -f does not apply to dirs");
    mkdir(&t.s(b"cache2"));
    write(&t.s(b"cache2/w"), b"included");

    let mut args: Vec<OsString> = vec!["-R".into()];
    args.push(rules.clone().into());
    let mut w = t.start(&args);
    assert_synced_now_filtered(&t.src, &t.dst, "right after readiness", &excluded);
    assert!(!exists_nofollow(&t.d(b"cache")));
    assert!(!exists_nofollow(&t.d(b"a.tmp")));
    assert!(exists_nofollow(&t.d(b"sub/cache/y")));

    write(&t.s(b"b.tmp"), b"excluded");
    write(&t.s(b"sub/c.tmp"), b"excluded");
    write(&t.s(b"cache/live"), b"excluded");
    mkdir(&t.s(b"cache/newdir"));
    write(&t.s(b"cache/newdir/q"), b"excluded");
    write(&t.s(b"b.txt"), b"included");
    write(&t.s(b"sub/cache/live"), b"included");
    // Editor-style save: written under an excluded name, renamed to an
    // included one.
    write(&t.s(b"doc.tmp"), b"saved document");
    rename(&t.s(b"doc.tmp"), &t.s(b"doc"));
    w.wait_synced_ctx(SYNC_TIMEOUT, "rules", &excluded);
    assert!(exists_nofollow(&t.d(b"doc")));
    assert!(!exists_nofollow(&t.d(b"cache")));
    assert!(!exists_nofollow(&t.d(b"b.tmp")));
    w.stop_ok();
}

/// Events are handled after the fact: a directory created in `p` is looked for at
/// `p/d` after `p` was already renamed. It must still be watched once the rename is
/// read, or later writes below it are lost.
#[test]
fn new_dir_whose_parent_was_renamed_before_the_event_was_read() {
    let t = TestDir::new("stale_parent");
    mkdir_p(&t.s(b"top/p"));
    let mut w = t.start(NO_ARGS);
    w.signal(Signal::SIGSTOP);
    mkdir(&t.s(b"top/p/d"));
    rename(&t.s(b"top/p"), &t.s(b"top/p2"));
    mkdir_p(&t.s(b"top/p2/d/e"));
    write(&t.s(b"top/p2/d/e/first"), b"1");
    w.signal(Signal::SIGCONT);
    w.wait_synced(SYNC_TIMEOUT);
    // Only a watch on d and e brings these over.
    write(&t.s(b"top/p2/d/later"), b"2");
    write(&t.s(b"top/p2/d/e/later"), b"3");
    mkdir(&t.s(b"top/p2/d/e/f"));
    write(&t.s(b"top/p2/d/e/f/deeper"), b"4");
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

/// The modification time of `path` (to the nanosecond).
fn mtime(path: &std::path::Path) -> std::time::SystemTime {
    lstat(path).modified().unwrap()
}

/// Rewrites `path` in place (truncate, write) and gives it the modification time `t` back
/// (`futimens`, as `cp -p`, `tar x` and `touch -d` do).
fn rewrite_keeping(path: &std::path::Path, data: &[u8], t: std::time::SystemTime) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", showp(path)));
    f.write_all(data).unwrap();
    f.set_modified(t).unwrap();
}

/// A rewrite that keeps the size and restores the modification time is invisible to
/// rsync's quick check; the worker saw the write, so the content reaches the destination.
/// Before: the destination kept the old content of all six files (timed out after 30 s).
#[test]
fn rewrites_that_restore_the_mtime_are_synced() {
    let t = TestDir::new("restored-mtime");
    for f in [
        "inplace",
        "touch-d",
        "chmod-first",
        "renamed-over",
        "moved-in",
    ] {
        write(&t.s(f.as_bytes()), b"old content 1");
    }
    mkdir(&t.s(b"d"));
    write(&t.s(b"d/g"), b"old content 2");
    let mut w = t.start(NO_ARGS);
    assert_synced_now(&t.src, &t.dst, "right after readiness");
    let new = b"NEW CONTENT 1";

    // In place, the time restored by futimens (cp -p, tar x onto an existing file).
    let p = t.s(b"inplace");
    rewrite_keeping(&p, new, mtime(&p));
    // In place, the time restored by touch -d.
    let p = t.s(b"touch-d");
    let m = lstat(&p);
    rewrite_keeping(&p, new, std::time::SystemTime::now());
    let st = std::process::Command::new("touch")
        .arg("-m")
        .arg("-d")
        .arg(format!("@{}.{:09}", m.mtime(), m.mtime_nsec()))
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    // A change of attributes queues the path first, then the write.
    let p = t.s(b"chmod-first");
    let before = mtime(&p);
    chmod(&p, 0o600);
    rewrite_keeping(&p, new, before);
    // Written under a temporary name in the tree and renamed into place (rsync -t).
    let p = t.s(b"renamed-over");
    let tmp = t.s(b".renamed-over.XXXXXX");
    write(&tmp, new);
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(mtime(&p))
        .unwrap();
    rename(&tmp, &p);
    // Moved in from outside the tree with the same size and time.
    let p = t.s(b"moved-in");
    let o = t.o(b"moved-in");
    write(&o, new);
    std::fs::File::options()
        .write(true)
        .open(&o)
        .unwrap()
        .set_modified(mtime(&p))
        .unwrap();
    rename(&o, &p);
    // A directory replaced by an archive's copy (rm -rf, tar x).
    let before = mtime(&t.s(b"d/g"));
    remove_dir_all(&t.s(b"d"));
    mkdir(&t.s(b"d"));
    write(&t.s(b"d/g"), b"NEW CONTENT 2");
    rewrite_keeping(&t.s(b"d/g"), b"NEW CONTENT 2", before);

    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

/// What only changed attributes, or was renamed inside the tree, sends no content: the
/// destination's copies are made to differ (same size and time, so rsync's quick check
/// cannot tell) and must keep that difference after a chmod and a rename.
#[test]
fn attribute_changes_and_renames_send_no_content() {
    let t = TestDir::new("attr-only");
    write(&t.s(b"mode"), b"source");
    write(&t.s(b"name"), b"source");
    chmod(&t.s(b"mode"), 0o644);
    let mut w = t.start(NO_ARGS);
    assert_synced_now(&t.src, &t.dst, "right after readiness");
    for f in [&b"mode"[..], b"name"] {
        let d = t.d(f);
        rewrite_keeping(&d, b"SENTRY", mtime(&d));
    }

    chmod(&t.s(b"mode"), 0o600);
    rename(&t.s(b"name"), &t.s(b"renamed"));
    wait_until(SYNC_TIMEOUT, "the chmod and the rename mirrored", || {
        let mode = std::fs::symlink_metadata(t.d(b"mode"))
            .map(|m| m.mode() & 0o7777)
            .map_err(|e| e.to_string())?;
        if mode != 0o600 {
            return Err(format!("dst mode {mode:o}"));
        }
        if exists_nofollow(&t.d(b"name")) || !exists_nofollow(&t.d(b"renamed")) {
            return Err("rename not mirrored".into());
        }
        Ok(())
    });
    // A stop runs whatever is still queued: any later run would show here too.
    w.stop_ok();
    for f in [&b"mode"[..], b"renamed"] {
        assert_eq!(
            std::fs::read(t.d(f)).unwrap(),
            b"SENTRY",
            "{}: content was sent again for an attribute change or a rename",
            show(f)
        );
    }
}

/// The short form takes the profile's globs on the command line: `--exclude GLOB` leaves a
/// name out at any depth, `--include GLOB` keeps it although an exclude matches; at start
/// and for live changes. A bad glob is one line naming the command line, exit 2.
#[test]
fn exclude_and_include_globs_on_the_command_line() {
    let t = TestDir::new("cli-globs");
    write(&t.s(b"x.log"), b"1");
    mkdir(&t.s(b"a"));
    write(&t.s(b"a/y.log"), b"2");
    write(&t.s(b"a/keep.log"), b"3");
    write(&t.s(b"a/z.txt"), b"4");
    let mut w = t.start(&["--exclude", "*.log", "--include", "keep.log"]);
    let excluded = |rel: &[u8], _dir: bool| rel.ends_with(b".log") && !rel.ends_with(b"keep.log");
    assert_synced_now_filtered(&t.src, &t.dst, "right after readiness", &excluded);
    assert!(!exists_nofollow(&t.d(b"a/y.log")));
    write(&t.s(b"a/new.log"), b"5");
    write(&t.s(b"a/b.txt"), b"6");
    write(&t.s(b"keep.log"), b"7");
    w.wait_synced_ctx(SYNC_TIMEOUT, "live changes", &excluded);
    assert!(!exists_nofollow(&t.d(b"a/new.log")));
    w.stop_ok();
    let args: [&std::ffi::OsStr; 5] = [
        "--exclude".as_ref(),
        "[".as_ref(),
        "--only-initialsync".as_ref(),
        t.src.as_os_str(),
        t.dst.as_os_str(),
    ];
    let bad = run(&t.root, &args, SYNC_TIMEOUT);
    assert_eq!(bad.code(), Some(2), "{}", bad.describe());
    assert!(
        bad.first_line().contains("the command line") && bad.first_line().contains("\"[\""),
        "{}",
        bad.describe()
    );
}

/// The destination directory replaced while the worker runs (deleted and made again, a
/// file system mounted on it, then unmounted from it: the old directory shows again)
/// holds nothing of what was synced to it before: the next change is not synced alone
/// but with the whole tree, so the destination is a whole mirror each time, and the log
/// says why. (Only the changes were sent: a partial mirror, and nothing said so.)
#[test]
fn a_destination_replaced_while_running_gets_the_whole_tree() {
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root (a tmpfs is mounted on the destination)");
    }
    let t = TestDir::new("dst-replaced");
    mkdir(&t.s(b"d"));
    for i in 0..10 {
        write(&t.s(format!("d/f{i}").as_bytes()), b"before");
    }
    let mut w = t.start(NO_ARGS);
    assert_synced_now(&t.src, &t.dst, "right after readiness");
    let said = |w: &Worker, n: usize| {
        let log = w.stderr();
        let got = log.matches("so the whole tree is synced to it").count();
        assert_eq!(got, n, "warnings about the destination:\n{log}");
    };

    // Deleted and made again (empty).
    std::fs::remove_dir_all(&t.dst).unwrap();
    mkdir(&t.dst);
    write(&t.s(b"after-remake"), b"1");
    w.wait_synced_ctx(
        SYNC_TIMEOUT,
        "after the destination was made again",
        &|_, _| false,
    );
    said(&w, 1);

    // A file system mounted on it.
    let mounted = Tmpfs::mount(&t.dst, "");
    write(&t.s(b"after-mount"), b"2");
    w.wait_synced_ctx(SYNC_TIMEOUT, "after a mount on the destination", &|_, _| {
        false
    });
    said(&w, 2);

    // And unmounted: the directory below shows again, without the change made meanwhile.
    drop(mounted);
    write(&t.s(b"after-umount"), b"3");
    w.wait_synced_ctx(SYNC_TIMEOUT, "after the unmount", &|_, _| false);
    said(&w, 3);

    // From then on a change is sent alone again.
    write(&t.s(b"later"), b"4");
    w.wait_synced(SYNC_TIMEOUT);
    said(&w, 3);
    w.stop_ok();
}
