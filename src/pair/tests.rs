use super::check::*;
use super::decide::*;
use super::manifest::*;
use std::path::Path;
use std::time::Duration;

fn m(kind: u8, size: u64, mtime: i64) -> Meta {
    Meta {
        kind,
        size,
        mtime,
        x: Default::default(),
    }
}

fn man(entries: &[(&str, Meta)]) -> Manifest {
    Manifest(
        entries
            .iter()
            .map(|(p, m)| (p.as_bytes().to_vec(), *m))
            .collect(),
    )
}

#[test]
fn records_round_trip_and_read_find_output() {
    let a = man(&[("d", m(b'd', 0, 5)), ("d/f x", m(b'f', 3, 7))]);
    assert_eq!(Manifest::parse(&a.to_bytes()).unwrap(), a);
    let find = b"d 4096 1700000000.1234567890 d\0f 3 1700000001.5 d/f\nnewline\0";
    let p = Manifest::parse(find).unwrap();
    assert_eq!(p.0[&b"d/f\nnewline"[..]], m(b'f', 3, 1700000001));
    assert_eq!(p.0[&b"d"[..]].size, 0, "directory sizes are not compared");
    assert!(Manifest::parse(b"garbage\0").is_err());
}

#[test]
fn scan_sees_types_and_diff_sees_changes() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("d")).unwrap();
    std::fs::write(t.path().join("d/f"), b"abc").unwrap();
    std::fs::write(t.path().join("gone"), b"x").unwrap();
    std::os::unix::fs::symlink("d/f", t.path().join("l")).unwrap();
    let agreed = Manifest::scan(t.path()).unwrap();
    assert_eq!(agreed.0[&b"l"[..]].kind, b'l');
    assert_eq!(diff(&agreed, &agreed).count(), 0);
    std::fs::write(t.path().join("d/f"), b"abcd").unwrap();
    std::fs::remove_file(t.path().join("gone")).unwrap();
    std::fs::write(t.path().join("d/new"), b"n").unwrap();
    let now = Manifest::scan(t.path()).unwrap();
    let c = diff(&agreed, &now);
    assert_eq!(c.added, [b"d/new".to_vec()]);
    assert_eq!(c.modified, [b"d/f".to_vec()]);
    assert_eq!(c.deleted, [b"gone".to_vec()]);
    assert_eq!(c.listing(), b"+ d/new\n~ d/f\n- gone\n".to_vec());
}

#[test]
fn alternatives_count_on_the_receiving_side_and_deletions_are_dated() {
    let agreed = man(&[
        ("d", m(b'd', 0, 5)),
        ("d/f", m(b'f', 1, 10)),
        ("g", m(b'f', 1, 10)),
    ]);
    // f changed while its sync ran: the peer may have 1 byte or 2.
    let also = man(&[("d/f", m(b'f', 2, 11))]);
    let here = man(&[
        ("d", m(b'd', 0, 5)),
        ("d/f", m(b'f', 2, 11)),
        ("g", m(b'f', 1, 10)),
    ]);
    let there = man(&[("d", m(b'd', 0, 50)), ("d/f", m(b'f', 1, 10))]);
    let side = |tree, root_mtime, also| Side {
        tree,
        root_mtime,
        also,
    };
    // The peer received: its old f is as delivered; here f differs from the record.
    let (l, p) = sides(
        &agreed,
        side(&here, 7, None),
        side(&there, 70, Some(&also)),
        &Default::default(),
    );
    assert_eq!(l.modified, [b"d/f".to_vec()]);
    assert_eq!(p.modified.len() + p.added.len(), 0);
    // The peer deleted g, dated by its directory (the root): 70.
    assert_eq!((p.deleted.clone(), p.newest), (vec![b"g".to_vec()], 70));
    // The alternative never excuses the sending side.
    let there2 = man(&[
        ("d", m(b'd', 0, 5)),
        ("d/f", m(b'f', 3, 12)),
        ("g", m(b'f', 1, 10)),
    ]);
    let (l, p) = sides(
        &agreed,
        side(&here, 7, None),
        side(&there2, 7, Some(&also)),
        &Default::default(),
    );
    assert_eq!((l.count(), p.count()), (1, 1));
}

fn changes(n: usize, newest: i64) -> Changes {
    Changes {
        added: (0..n).map(|i| format!("p{i}").into_bytes()).collect(),
        newest,
        ..Changes::default()
    }
}

#[test]
fn policies_decide_as_documented() {
    let none = Changes::default();
    let (few, many) = (changes(1, 200), changes(5, 100));
    for p in POLICIES {
        let p: Policy = p.parse().unwrap();
        assert_eq!(decide(&none, &none, p), Decision::Push);
        assert_eq!(decide(&few, &none, p), Decision::Push, "only here changed");
        assert_eq!(
            decide(&none, &few, p),
            Decision::Pull,
            "only the peer changed"
        );
    }
    use Decision::*;
    let d = |p: &str, l: &Changes, r: &Changes| decide(l, r, p.parse().unwrap());
    assert_eq!(d("discard-zero-changes", &few, &many), Manual);
    assert_eq!(d("manual", &few, &many), Manual);
    assert_eq!(d("discard-least-changes", &few, &many), KeepPeer);
    assert_eq!(d("discard-least-changes", &many, &few), KeepLocal);
    assert_eq!(d("discard-least-changes", &few, &few), Manual);
    // few changed last (200): discard-younger keeps the older side.
    assert_eq!(d("discard-younger", &few, &many), KeepPeer);
    assert_eq!(d("discard-older", &few, &many), KeepLocal);
    assert_eq!(d("discard-local", &few, &many), KeepPeer);
    assert_eq!(d("discard-peer", &few, &many), KeepLocal);
    assert!("discard-everything"
        .parse::<Policy>()
        .unwrap_err()
        .contains("valid:"));
}

#[test]
fn resolver_answers_by_word_or_exit_code_and_is_killed_when_it_hangs() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let script = |name: &str, body: &str| {
        let p = t.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let (l, r) = (changes(2, 10), changes(3, 20));
    let run = |p: &Path, timeout: u64| {
        Resolver {
            script: p,
            timeout: Duration::from_secs(timeout),
        }
        .run("web@a", &l, &r, &t.path().join("lists"))
    };
    let word = script(
        "word",
        "[ \"$1 $2 $3 $CLSYNC_INSTANCE\" = 'web@a 2 3 web@a' ] && grep -q '^+ p2$' \"$7\" && echo peer",
    );
    assert_eq!(run(&word, 10), Ok(Decision::KeepPeer));
    assert_eq!(run(&script("code", "exit 10"), 10), Ok(Decision::KeepLocal));
    assert_eq!(run(&script("other", "exit 3"), 10), Ok(Decision::Manual));
    let hang = script("hang", "sleep 600");
    let e = run(&hang, 1).unwrap_err();
    assert!(e.contains("was killed"), "{e}");
}

/// The resolver's input files (`local-changes`, `peer-changes`) are written with a random
/// temporary name and renamed into place: a symlink at either name is replaced, its
/// target untouched, and the resolver reads the listing.
#[test]
fn resolver_input_files_replace_a_symlink_instead_of_writing_through_it() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = tempfile::tempdir().unwrap();
    let canary = t.path().join("canary");
    std::fs::write(&canary, b"canary\n").unwrap();
    let lists = t.path().join("lists");
    std::fs::create_dir(&lists).unwrap();
    for name in ["local-changes", "peer-changes"] {
        std::os::unix::fs::symlink(&canary, lists.join(name)).unwrap();
    }
    let script = t.path().join("resolve");
    std::fs::write(&script, "#!/bin/sh\ngrep -q '^+ p2$' \"$7\" && echo peer\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = Resolver {
        script: &script,
        timeout: Duration::from_secs(10),
    }
    .run("web@a", &changes(2, 10), &changes(3, 20), &lists);
    assert_eq!(r, Ok(Decision::KeepPeer));
    assert_eq!(std::fs::read(&canary).unwrap(), b"canary\n");
    for name in ["local-changes", "peer-changes"] {
        let m = std::fs::symlink_metadata(lists.join(name)).unwrap();
        assert!(m.is_file(), "{name} is a regular file");
        assert_eq!(m.mode() & 0o777, 0o600, "{name}");
    }
}
