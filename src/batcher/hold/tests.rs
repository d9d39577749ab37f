use super::*;
use libc::{
    IN_ATTRIB, IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_ISDIR, IN_MODIFY,
    IN_MOVED_FROM, IN_MOVED_TO,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The event of a file (not recursive, not a plain write unless `IN_MODIFY` alone).
fn ev(path: &str, mask: u32) -> Dirty {
    Dirty {
        path: path.as_bytes().to_vec(),
        recursive: false,
        modify_only: mask == IN_MODIFY,
        mask,
    }
}

/// Running, without `wait-for-close`.
const SETTLE: Policy = Policy {
    wait_for_close: None,
    settle_created: true,
};

/// Running, with `wait-for-close` of `cap`.
fn wfc(cap: Duration) -> Policy {
    Policy {
        wait_for_close: Some(cap),
        settle_created: true,
    }
}

/// The released files as (seconds after `t0` in ms, path, mask).
fn names(t0: Instant, v: &[(Instant, Dirty)]) -> Vec<(u128, String, u32)> {
    v.iter()
        .map(|(at, d)| {
            assert!(!d.recursive && !d.modify_only, "{d:?}");
            (
                at.duration_since(t0).as_millis(),
                String::from_utf8_lossy(&d.path).into_owned(),
                d.mask,
            )
        })
        .collect()
}

#[test]
fn a_created_file_waits_for_its_close_and_is_queued_as_of_its_creation() {
    let t0 = Instant::now();
    let mut o = OpenFiles::default();
    assert_eq!(o.event(t0, &mut ev("f", IN_CREATE), SETTLE), None);
    assert_eq!(o.next_due(), Some(t0 + CREATE_SETTLE));
    // Written: still held, nothing queued.
    assert_eq!(o.event(t0 + ms(10), &mut ev("f", IN_MODIFY), SETTLE), None);
    let mut close = ev("f", IN_CLOSE_WRITE);
    assert_eq!(o.event(t0 + ms(50), &mut close, SETTLE), Some(t0));
    assert_eq!(close.mask, IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE);
    assert!(!close.modify_only);
    assert_eq!(o.next_due(), None);
    assert!(o.release_due(t0 + secs(1), None).is_empty());
}

#[test]
fn a_created_file_never_closed_is_released_after_the_settle_time_once() {
    // A hard link or a symlink: no close comes.
    let t0 = Instant::now();
    let mut o = OpenFiles::default();
    assert_eq!(o.event(t0, &mut ev("link", IN_CREATE), SETTLE), None);
    assert!(o.release_due(t0 + CREATE_SETTLE - ms(1), None).is_empty());
    let r = o.release_due(t0 + CREATE_SETTLE, None);
    assert_eq!(names(t0, &r), [(0, "link".into(), IN_CREATE)]);
    // Not held again without wait-for-close.
    assert_eq!(o.next_due(), None);
    assert!(o.release_due(t0 + secs(60), None).is_empty());
    assert_eq!(
        o.event(t0 + secs(1), &mut ev("link", IN_ATTRIB), SETTLE),
        Some(t0 + secs(1))
    );
}

#[test]
fn without_wait_for_close_only_a_creation_is_held_and_not_once_stopping() {
    let t0 = Instant::now();
    let mut o = OpenFiles::default();
    for mask in [IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_DELETE] {
        assert_eq!(
            o.event(t0, &mut ev("f", mask), SETTLE),
            Some(t0),
            "{mask:#x}"
        );
    }
    let stopping = Policy {
        wait_for_close: None,
        settle_created: false,
    };
    assert_eq!(o.event(t0, &mut ev("new", IN_CREATE), stopping), Some(t0));
    assert_eq!(o.next_due(), None);
}

#[test]
fn directories_and_recursive_paths_are_never_held() {
    let t0 = Instant::now();
    let mut o = OpenFiles::default();
    let p = wfc(secs(30));
    assert_eq!(o.event(t0, &mut ev("d", IN_CREATE | IN_ISDIR), p), Some(t0));
    let mut rec = ev("d2", IN_CREATE);
    rec.recursive = true;
    assert_eq!(o.event(t0, &mut rec, p), Some(t0));
    assert_eq!(o.next_due(), None);
}

#[test]
fn wait_for_close_holds_a_written_file_until_it_is_closed() {
    let t0 = Instant::now();
    let mut o = OpenFiles::default();
    let p = wfc(secs(30));
    assert_eq!(o.event(t0, &mut ev("f", IN_MODIFY), p), None);
    // More writes and attribute changes keep it held and do not postpone the cap.
    assert_eq!(o.event(t0 + secs(5), &mut ev("f", IN_MODIFY), p), None);
    assert_eq!(o.event(t0 + secs(6), &mut ev("f", IN_ATTRIB), p), None);
    assert_eq!(o.next_due(), Some(t0 + secs(30)));
    // Another file's close does not release it.
    assert_eq!(
        o.event(t0 + secs(7), &mut ev("g", IN_CLOSE_WRITE), p),
        Some(t0 + secs(7))
    );
    assert_eq!(o.next_due(), Some(t0 + secs(30)));
    let mut close = ev("f", IN_CLOSE_WRITE);
    assert_eq!(o.event(t0 + secs(8), &mut close, p), Some(t0));
    assert_eq!(close.mask, IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE);
    assert_eq!(o.next_due(), None);
}

#[test]
fn a_delete_or_rename_releases_a_held_file_as_a_close_does() {
    let t0 = Instant::now();
    let p = wfc(secs(30));
    for end in [
        IN_CLOSE_WRITE,
        IN_DELETE,
        IN_MOVED_FROM,
        IN_MOVED_TO,
        IN_DELETE_SELF,
    ] {
        let mut o = OpenFiles::default();
        assert_eq!(o.event(t0, &mut ev("f", IN_CREATE), p), None);
        let mut d = ev("f", end);
        assert_eq!(o.event(t0 + secs(1), &mut d, p), Some(t0), "{end:#x}");
        assert_eq!(d.mask, IN_CREATE | end);
        assert_eq!(o.next_due(), None, "{end:#x}");
    }
}

#[test]
fn a_file_open_past_the_cap_is_synced_and_held_again_every_cap() {
    // A log that is never closed.
    let t0 = Instant::now();
    let mut o = OpenFiles::default();
    let p = wfc(secs(30));
    assert_eq!(o.event(t0, &mut ev("log", IN_MODIFY | IN_ATTRIB), p), None);
    assert!(o.release_due(t0 + secs(29), p.wait_for_close).is_empty());
    let r = o.release_due(t0 + secs(30), p.wait_for_close);
    assert_eq!(names(t0, &r), [(0, "log".into(), IN_MODIFY | IN_ATTRIB)]);
    // Held again, as of the release.
    assert_eq!(o.next_due(), Some(t0 + secs(60)));
    assert!(o.release_due(t0 + secs(59), p.wait_for_close).is_empty());
    let r = o.release_due(t0 + secs(60), p.wait_for_close);
    assert_eq!(names(t0, &r), [(30_000, "log".into(), IN_MODIFY)]);
    // Closed at last: queued as of the round's start.
    let mut close = ev("log", IN_CLOSE_WRITE);
    assert_eq!(o.event(t0 + secs(61), &mut close, p), Some(t0 + secs(60)));
    assert_eq!(close.mask, IN_MODIFY | IN_CLOSE_WRITE);
    assert_eq!(o.next_due(), None);
}

#[test]
fn a_reload_without_wait_for_close_ends_the_rounds() {
    let t0 = Instant::now();
    let mut o = OpenFiles::default();
    assert_eq!(o.event(t0, &mut ev("log", IN_MODIFY), wfc(secs(30))), None);
    let r = o.release_due(t0 + secs(30), None);
    assert_eq!(names(t0, &r), [(0, "log".into(), IN_MODIFY)]);
    assert_eq!(o.next_due(), None);
}

#[test]
fn next_due_is_the_earliest_held_file_and_only_due_files_are_released() {
    let t0 = Instant::now();
    let mut o = OpenFiles::default();
    let p = wfc(secs(30));
    assert_eq!(o.event(t0 + secs(10), &mut ev("b", IN_MODIFY), p), None);
    assert_eq!(o.event(t0, &mut ev("a", IN_MODIFY), p), None);
    assert_eq!(
        o.event(t0 + secs(20), &mut ev("c", IN_CREATE), SETTLE),
        None
    );
    assert_eq!(o.next_due(), Some(t0 + secs(20) + CREATE_SETTLE));
    let r = o.release_due(t0 + secs(30), p.wait_for_close);
    // c (settled long ago) and a; b is not due before 40 s.
    assert_eq!(
        names(t0, &r),
        [(0, "a".into(), IN_MODIFY), (20_000, "c".into(), IN_CREATE)]
    );
    assert_eq!(o.next_due(), Some(t0 + secs(40)));
    let r = o.release_due(t0 + secs(40), p.wait_for_close);
    assert_eq!(names(t0, &r), [(10_000, "b".into(), IN_MODIFY)]);
    assert_eq!(o.next_due(), Some(t0 + secs(60)));
}

#[test]
fn release_all_takes_every_held_file_in_the_order_of_first_events() {
    // The final sync: nothing is held again, even with wait-for-close. The first events
    // come in the reverse order of the paths, so neither a hash map's order nor the
    // paths' order passes (by chance: 1 in 8!).
    let t0 = Instant::now();
    let mut o = OpenFiles::default();
    let p = wfc(secs(30));
    let files = ["h", "g", "f", "e", "d", "c", "b", "a"];
    for (i, n) in files.iter().enumerate().rev() {
        let mask = if i % 2 == 0 { IN_CREATE } else { IN_MODIFY };
        assert_eq!(o.event(t0 + secs(i as u64), &mut ev(n, mask), p), None);
    }
    let r = o.release_all();
    let want: Vec<(u128, String, u32)> = files
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mask = if i % 2 == 0 { IN_CREATE } else { IN_MODIFY };
            (i as u128 * 1000, n.to_string(), mask)
        })
        .collect();
    assert_eq!(names(t0, &r), want);
    assert_eq!(o.next_due(), None);
    assert!(o.release_all().is_empty());
    assert!(o.release_due(t0 + secs(3600), p.wait_for_close).is_empty());
}
