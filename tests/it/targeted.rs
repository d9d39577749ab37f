//! What a targeted rsync run is asked to read for a change (sync/plan.rs): seen through a
//! wrapper that records each run's argv and list, never through timing (that is
//! bench/live.sh's business).

use crate::common::*;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// An rsync wrapper that keeps each run's argv (`PID.argv`, NUL-separated) and a copy of
/// its list (`PID.list`) in `dir`.
fn recording_rsync(t: &TestDir, dir: &Path) -> PathBuf {
    mkdir(dir);
    let script = t.root.join("recording-rsync.sh");
    write(
        &script,
        format!(
            r#"#!/bin/sh
D='{}'
for a in "$@"; do case "$a" in --files-from=*|--include-from=*) cp "${{a#*=}}" "$D/$$.list";; esac; done
printf '%s\0' "$@" > "$D/$$.tmp" && mv "$D/$$.tmp" "$D/$$.argv"
exec rsync "$@"
"#,
            dir.display()
        )
        .as_bytes(),
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Every recorded run: (argv, list entries).
fn runs(dir: &Path) -> Vec<(Vec<String>, Vec<String>)> {
    let split = |b: Vec<u8>| -> Vec<String> {
        b.split(|&c| c == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "argv") {
            let argv = split(std::fs::read(&p).unwrap());
            let list = split(std::fs::read(p.with_extension("list")).unwrap_or_default());
            out.push((argv, list));
        }
    }
    out
}

/// The run whose list names `path`, once it has ended.
fn run_naming(dir: &Path, path: &str) -> (Vec<String>, Vec<String>) {
    let mut found = None;
    wait_until(SYNC_TIMEOUT, &format!("a run naming {path}"), || {
        let all = runs(dir);
        found = all
            .iter()
            .find(|(_, l)| l.iter().any(|x| x.trim_start_matches('/') == path))
            .cloned();
        found
            .as_ref()
            .map(|_| ())
            .ok_or_else(|| format!("runs so far: {all:?}"))
    });
    found.unwrap()
}

/// A file written in a directory with many siblings, whose parent has many siblings too
/// (bench/live.sh's probe: 200 and 100 entries), is synced by a run that names it alone
/// in a `--files-from` list, without `-r`: rsync reads neither directory, at the source
/// nor at the destination. So are a deletion and a same-size rewrite that keeps the
/// modification time (read whole: `--checksum`); a new directory still goes by include
/// list (rsync reads that one).
#[test]
fn a_file_among_many_siblings_is_synced_without_reading_its_directories() {
    let t = TestDir::new("files-from");
    for i in 0..60 {
        mkdir_p(&t.s(format!("top/d{i:02}").as_bytes()));
        write(&t.s(format!("top/f{i:02}").as_bytes()), b"sibling");
    }
    for i in 0..100 {
        write(&t.s(format!("top/d59/g{i:03}").as_bytes()), b"sibling");
    }
    let dir = t.root.join("runs");
    let script = recording_rsync(&t, &dir);
    let mut w = t.start(&[
        OsString::from("-t"),
        "0".into(),
        "-w".into(),
        "0".into(),
        "-S".into(),
        script.into(),
    ]);
    w.wait_synced(SYNC_TIMEOUT);

    let check = |argv: &[String], list: &[String], path: &str| {
        assert_eq!(list, [path], "the list names the path alone: {argv:?}");
        assert!(
            argv.iter().any(|a| a.starts_with("--files-from=")),
            "a --files-from run: {argv:?}"
        );
        assert!(
            argv.iter().any(|a| a == "--delete-missing-args"),
            "a vanished path is deleted: {argv:?}"
        );
        for no in ["--include-from=", "--exclude=", "-r", "--recursive"] {
            assert!(
                !argv.iter().any(|a| a.starts_with(no)),
                "{no} in a --files-from run reads directories: {argv:?}"
            );
        }
    };
    write(&t.s(b"top/d59/new"), b"the probe");
    let (argv, list) = run_naming(&dir, "top/d59/new");
    check(&argv, &list, "top/d59/new");
    assert!(argv.iter().any(|a| a == "--checksum"), "{argv:?}");
    w.wait_synced(SYNC_TIMEOUT);

    remove_file(&t.s(b"top/d59/g000"));
    let (argv, list) = run_naming(&dir, "top/d59/g000");
    check(&argv, &list, "top/d59/g000");
    w.wait_synced(SYNC_TIMEOUT);

    // Same size, old modification time: only a look at the content finds it.
    let f = t.s(b"top/d59/g001");
    let old = lstat(&f).modified().unwrap();
    write(&f, b"SIBLING");
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (argv, list) = run_naming(&dir, "top/d59/g001");
    check(&argv, &list, "top/d59/g001");
    wait_until(SYNC_TIMEOUT, "the rewrite", || {
        (std::fs::read(t.d(b"top/d59/g001")).unwrap_or_default() == b"SIBLING")
            .then_some(())
            .ok_or_else(|| "old content".into())
    });

    mkdir(&t.s(b"top/d59/newdir"));
    let (argv, _) = run_naming(&dir, "top/d59/newdir/***");
    assert!(
        argv.iter().any(|a| a.starts_with("--include-from=")),
        "{argv:?}"
    );
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}
