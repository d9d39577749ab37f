use super::*;

/// Conveniences of the tests alone.
impl Batcher {
    /// One batch at a time (`threading = off`).
    fn new(delays: Delays) -> Self {
        Self::with_threading(delays, Threading::Off, 1)
    }

    /// `push_event` without a mask.
    fn push(&mut self, now: Instant, path: Vec<u8>, recursive: bool, class: Class) {
        self.push_event(now, path, recursive, 0, class);
    }

    /// Batches running now.
    fn running(&self) -> usize {
        self.running
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn delays() -> Delays {
    Delays {
        collect: secs(30),
        collect_bigfile: secs(1800),
        sync: secs(30),
    }
}

/// Delays of zero (the minimal-delay setting of the benchmarks).
fn zero() -> Delays {
    Delays {
        collect: Duration::ZERO,
        collect_bigfile: Duration::ZERO,
        sync: Duration::ZERO,
    }
}

fn paths(b: &Batch) -> Vec<String> {
    let mut v: Vec<String> = b
        .entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn deadline_counts_from_first_event_not_last() {
    let t0 = Instant::now();
    let mut b = Batcher::new(delays());
    b.push(t0, b"a".to_vec(), false, Class::Normal);
    b.push(t0 + secs(20), b"b".to_vec(), false, Class::Normal);
    b.push(t0 + secs(29), b"c".to_vec(), false, Class::Normal);
    assert_eq!(b.deadline(), Some(t0 + secs(30)));
    assert!(b.take_due(t0 + secs(29)).is_none());
    let batch = b
        .take_due(t0 + secs(30))
        .expect("due at first event + collect");
    assert_eq!(paths(&batch), ["a", "b", "c"]);
}

#[test]
fn paths_are_deduplicated_and_recursive_is_sticky() {
    let t0 = Instant::now();
    let mut b = Batcher::new(delays());
    b.push(t0, b"d".to_vec(), true, Class::Normal);
    b.push(t0, b"d".to_vec(), false, Class::Normal);
    b.push(t0, b"f".to_vec(), false, Class::Normal);
    b.push(t0, b"f".to_vec(), false, Class::Normal);
    assert_eq!(b.len(), 2);
    let batch = b.take_due(t0 + secs(30)).unwrap();
    let d = batch.entries.iter().find(|e| e.path == b"d").unwrap();
    assert!(d.recursive);
}

#[test]
fn delay_sync_holds_the_next_batch_after_a_sync() {
    let t0 = Instant::now();
    let mut b = Batcher::new(Delays {
        collect: secs(1),
        collect_bigfile: secs(10),
        sync: secs(30),
    });
    b.push(t0, b"a".to_vec(), false, Class::Normal);
    let batch = b.take_due(t0 + secs(1)).unwrap();
    assert_eq!(b.deadline(), None, "no deadline while busy");
    b.push(t0 + secs(2), b"b".to_vec(), false, Class::Normal);
    assert!(b.take_due(t0 + secs(5)).is_none(), "busy");
    b.complete(t0 + secs(3), batch, true);
    // first event at 2 s + collect 1 s = 3 s, but last sync ended at 3 s + 30 s.
    assert_eq!(b.deadline(), Some(t0 + secs(33)));
    assert!(b.take_due(t0 + secs(32)).is_none());
    assert_eq!(paths(&b.take_due(t0 + secs(33)).unwrap()), ["b"]);
}

#[test]
fn big_files_wait_in_their_own_queue() {
    let t0 = Instant::now();
    let mut b = Batcher::new(delays());
    b.push(t0, b"big".to_vec(), false, Class::Big);
    b.push(t0, b"small".to_vec(), false, Class::Normal);
    let first = b.take_due(t0 + secs(30)).unwrap();
    assert_eq!(paths(&first), ["small"]);
    b.complete(t0 + secs(31), first, true);
    assert_eq!(b.deadline(), Some(t0 + secs(1800)));
    assert!(b.take_due(t0 + secs(1799)).is_none());
    let second = b.take_due(t0 + secs(1800)).unwrap();
    assert_eq!(paths(&second), ["big"]);
    assert_eq!(second.entries[0].class, Class::Big);
}

#[test]
fn a_path_moves_to_the_queue_of_its_latest_class() {
    let t0 = Instant::now();
    let mut b = Batcher::new(delays());
    b.push(t0, b"f".to_vec(), false, Class::Normal);
    b.push(t0 + secs(1), b"f".to_vec(), false, Class::Big);
    assert_eq!(b.len(), 1);
    assert!(
        b.take_due(t0 + secs(30)).is_none(),
        "f now waits as a big file"
    );
    assert_eq!(b.deadline(), Some(t0 + secs(1801)));
    // a recursive entry never waits as a big file
    b.push(t0 + secs(2), b"f".to_vec(), true, Class::Big);
    assert_eq!(b.deadline(), Some(t0 + secs(32)));
}

#[test]
fn both_queues_due_make_one_batch() {
    let t0 = Instant::now();
    let mut b = Batcher::new(Delays {
        collect: secs(5),
        collect_bigfile: secs(5),
        sync: secs(0),
    });
    b.push(t0, b"big".to_vec(), false, Class::Big);
    b.push(t0, b"small".to_vec(), false, Class::Normal);
    assert_eq!(paths(&b.take_due(t0 + secs(5)).unwrap()), ["big", "small"]);
}

#[test]
fn failure_requeues_everything_with_backoff() {
    let t0 = Instant::now();
    let mut b = Batcher::new(Delays {
        collect: secs(1),
        collect_bigfile: secs(100),
        sync: secs(0),
    });
    b.push(t0, b"a".to_vec(), true, Class::Normal);
    b.push(t0, b"big".to_vec(), false, Class::Big);
    let batch = b.take_all(t0).unwrap();
    b.push(t0 + secs(1), b"c".to_vec(), false, Class::Normal);
    b.complete(t0 + secs(2), batch, false);
    assert_eq!(b.len(), 3, "the failed paths are queued again");
    assert_eq!(b.failures(), 1);
    // first retry after 1 s
    assert!(b.take_due(t0 + secs(2)).is_none());
    let again = b.take_due(t0 + secs(3)).unwrap();
    assert!(again
        .entries
        .iter()
        .any(|e| e.path == b"a" && e.recursive && e.class == Class::Normal));
    b.complete(t0 + secs(4), again, false);
    // second failure: 2 s
    assert!(b.take_due(t0 + secs(5)).is_none());
    let third = b.take_due(t0 + secs(6)).unwrap();
    b.complete(t0 + secs(7), third, true);
    assert_eq!(b.failures(), 0);
    // the big file rode along only when its own queue was due: it is still queued,
    // or it was synced in a batch; either way nothing was lost:
    assert!(b.is_empty() || b.contains(b"big"));
}

#[test]
fn backoff_is_capped() {
    let t0 = Instant::now();
    let mut b = Batcher::new(Delays {
        collect: secs(0),
        collect_bigfile: secs(0),
        sync: secs(0),
    });
    let mut now = t0;
    for _ in 0..20 {
        b.push(now, b"x".to_vec(), false, Class::Normal);
        let d = b.deadline().unwrap();
        now = now.max(d);
        let batch = b.take_due(now).unwrap();
        b.complete(now, batch, false);
    }
    assert_eq!(b.backoff(), RETRY_MAX);
}

#[test]
fn take_all_ignores_delays_and_busy_blocks_it() {
    let t0 = Instant::now();
    let mut b = Batcher::new(delays());
    b.push(t0, b"a".to_vec(), false, Class::Big);
    let batch = b.take_all(t0).unwrap();
    assert_eq!(paths(&batch), ["a"]);
    b.push(t0, b"b".to_vec(), false, Class::Normal);
    assert!(b.take_all(t0).is_none(), "one sync at a time");
    b.complete(t0, batch, true);
    assert_eq!(paths(&b.take_all(t0).unwrap()), ["b"]);
}

fn quick() -> Delays {
    Delays {
        collect: secs(1),
        collect_bigfile: secs(1),
        sync: secs(0),
    }
}

#[test]
fn full_threading_runs_batches_in_parallel_up_to_the_limit() {
    let t0 = Instant::now();
    let mut b = Batcher::with_threading(quick(), Threading::Full, 2);
    b.push(t0, b"big".to_vec(), false, Class::Normal);
    let first = b.take_due(t0 + secs(1)).unwrap();
    // the same path again, while the first batch runs: full threading syncs it too
    b.push(t0 + secs(1), b"big".to_vec(), false, Class::Normal);
    let second = b.take_due(t0 + secs(2)).unwrap();
    assert_eq!(paths(&second), ["big"]);
    assert_eq!(b.running(), 2);
    b.push(t0 + secs(2), b"c".to_vec(), false, Class::Normal);
    assert_eq!(b.deadline(), None, "the limit of 2 is reached");
    assert!(b.take_due(t0 + secs(9)).is_none());
    b.complete(t0 + secs(9), first, true);
    assert_eq!(paths(&b.take_due(t0 + secs(9)).unwrap()), ["c"]);
    b.complete(t0 + secs(10), second, true);
}

#[test]
fn off_runs_one_batch_whatever_the_limit() {
    let t0 = Instant::now();
    let mut b = Batcher::with_threading(quick(), Threading::Off, 8);
    b.push(t0, b"a".to_vec(), false, Class::Normal);
    let _first = b.take_due(t0 + secs(1)).unwrap();
    b.push(t0, b"b".to_vec(), false, Class::Normal);
    assert!(b.take_due(t0 + secs(5)).is_none());
    assert_eq!(b.deadline(), None);
}

#[test]
fn safe_threading_never_puts_a_path_in_two_running_batches() {
    let t0 = Instant::now();
    let mut b = Batcher::with_threading(quick(), Threading::Safe, 4);
    b.push(t0, b"d".to_vec(), true, Class::Normal);
    b.push(t0, b"f".to_vec(), false, Class::Normal);
    let first = b.take_due(t0 + secs(1)).unwrap();
    // overlapping: the same file, a path below the running recursive d, and a
    // recursive parent of nothing running (free), and the root (covers everything)
    b.push(t0 + secs(1), b"f".to_vec(), false, Class::Normal);
    b.push(t0 + secs(1), b"d/x/y".to_vec(), false, Class::Normal);
    b.push(t0 + secs(1), b"e".to_vec(), true, Class::Normal);
    let second = b.take_due(t0 + secs(2)).unwrap();
    assert_eq!(paths(&second), ["e"], "only the free path runs");
    assert_eq!(b.len(), 2, "f and d/x/y wait");
    // what is left is held: no busy loop on a past deadline
    assert_eq!(b.deadline(), None);
    assert!(b.take_due(t0 + secs(3)).is_none());
    b.complete(t0 + secs(3), first, true);
    let third = b.take_due(t0 + secs(3)).unwrap();
    assert_eq!(paths(&third), ["d/x/y", "f"]);
    // a recursive queued directory waits for running paths below it
    b.push(t0 + secs(3), b"e/sub".to_vec(), false, Class::Normal);
    b.push(t0 + secs(3), b"d".to_vec(), true, Class::Normal);
    assert!(
        b.take_due(t0 + secs(4)).is_none(),
        "e/sub is under the running e, d above the running d/x/y"
    );
    b.complete(t0 + secs(4), second, true);
    assert_eq!(paths(&b.take_due(t0 + secs(4)).unwrap()), ["e/sub"]);
    b.complete(t0 + secs(5), third, true);
    assert_eq!(paths(&b.take_due(t0 + secs(5)).unwrap()), ["d"]);
}

#[test]
fn safe_threading_holds_everything_behind_a_running_full_sync() {
    let t0 = Instant::now();
    let mut b = Batcher::with_threading(quick(), Threading::Safe, 4);
    let initial = Batch {
        entries: vec![Entry {
            path: Vec::new(),
            recursive: true,
            class: Class::Normal,
            mask: 0,
        }],
        moves: Vec::new(),
        verify: false,
        beside: false,
        initial: false,
        itemize: false,
    };
    b.start_external(&initial);
    b.push(t0, b"a".to_vec(), false, Class::Normal);
    assert!(b.take_due(t0 + secs(1)).is_none());
    b.complete(t0 + secs(2), initial, true);
    assert_eq!(paths(&b.take_due(t0 + secs(2)).unwrap()), ["a"]);
}

#[test]
fn a_burst_is_coalesced_but_a_single_change_is_not_delayed() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut b = Batcher::new(zero());
    b.push(t0, b"one".to_vec(), false, Class::Normal);
    assert_eq!(b.deadline(), Some(t0), "a single change goes at once");
    let one = b.take_due(t0).unwrap();
    b.complete(t0, one, true);
    // A burst: a path every 0.1 ms.
    let mut now = t0;
    for i in 0..COALESCE_MIN * 2 {
        now = t0 + Duration::from_micros(100 * i as u64);
        b.push(now, format!("f{i}").into_bytes(), false, Class::Normal);
    }
    assert_eq!(b.deadline(), Some(now + COALESCE_QUIET));
    assert!(
        b.take_due(now + ms(5)).is_none(),
        "still within the quiet gap"
    );
    // It stops: due once it was quiet long enough.
    let burst = b.take_due(now + COALESCE_QUIET).unwrap();
    assert_eq!(burst.entries.len(), COALESCE_MIN * 2);
    b.complete(now + COALESCE_QUIET, burst, true);
    // A stream that never pauses is cut at the cap after its first event.
    let start = now + ms(20);
    for i in 0..COALESCE_MIN {
        b.push(start, format!("t{i}").into_bytes(), false, Class::Normal);
    }
    let mut i = 0u64;
    loop {
        let at = start + ms(i);
        b.push(at, format!("s{i}").into_bytes(), false, Class::Normal);
        if let Some(batch) = b.take_due(at) {
            assert_eq!(at, start + COALESCE_CAP, "{} paths", batch.entries.len());
            b.complete(at, batch, true);
            break;
        }
        i += 1;
        assert!(ms(i) <= COALESCE_CAP, "never due");
    }
}

#[test]
fn a_new_directory_waits_for_a_pause_but_a_moved_in_one_does_not() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut b = Batcher::new(zero());
    let created = libc::IN_CREATE | libc::IN_ISDIR;
    b.push_event(t0, b"new".to_vec(), true, created, Class::Normal);
    assert_eq!(b.deadline(), Some(t0 + COALESCE_QUIET));
    // Filled: each path pushes the start back, up to the cap.
    b.push_event(
        t0 + ms(8),
        b"new/a".to_vec(),
        false,
        libc::IN_CREATE,
        Class::Normal,
    );
    assert!(b.take_due(t0 + ms(10)).is_none());
    let batch = b.take_due(t0 + ms(18)).unwrap();
    assert_eq!(batch.entries.len(), 2);
    b.complete(t0 + ms(18), batch, true);
    // The next batch is not held by the old directory.
    let t1 = t0 + ms(100);
    b.push(t1, b"file".to_vec(), false, Class::Normal);
    assert_eq!(b.deadline(), Some(t1));
    let batch = b.take_due(t1).unwrap();
    b.complete(t1, batch, true);
    let moved = libc::IN_MOVED_TO | libc::IN_ISDIR;
    b.push_event(t1, b"moved".to_vec(), true, moved, Class::Normal);
    assert_eq!(b.deadline(), Some(t1), "a moved-in directory is complete");
}

#[test]
fn configured_delays_are_not_stretched_by_coalescing() {
    let t0 = Instant::now();
    let mut b = Batcher::new(delays());
    for i in 0..COALESCE_MIN * 2 {
        b.push(t0, format!("f{i}").into_bytes(), false, Class::Normal);
    }
    let collect = delays().collect;
    assert!(collect >= COALESCE_CAP);
    b.push(t0 + collect, b"late".to_vec(), false, Class::Normal);
    assert_eq!(b.deadline(), Some(t0 + collect));
}

fn root_batch() -> Batch {
    Batch {
        entries: vec![Entry {
            path: Vec::new(),
            recursive: true,
            class: Class::Normal,
            mask: 0,
        }],
        ..Batch::default()
    }
}

#[test]
fn live_batches_run_beside_the_initial_sync_and_are_synced_again_after_it() {
    let t0 = Instant::now();
    let mut b = Batcher::new(quick());
    let mut initial = root_batch();
    b.start_beside(&mut initial);
    assert!(initial.beside && b.is_busy());
    b.push(t0, b"a".to_vec(), false, Class::Normal);
    let live = b
        .take_due(t0 + secs(1))
        .expect("a live batch while the initial runs");
    assert_eq!(paths(&live), ["a"]);
    b.complete(t0 + secs(2), live, true);
    assert!(
        b.take_due(t0 + secs(10)).is_none(),
        "nothing else is queued"
    );
    b.complete(t0 + secs(20), initial, true);
    assert!(!b.is_busy());
    // `a` may have been overwritten by the initial run: once more.
    assert_eq!(paths(&b.take_due(t0 + secs(21)).unwrap()), ["a"]);
}

#[test]
fn safe_threading_never_runs_the_initial_sync_beside() {
    let t0 = Instant::now();
    let mut b = Batcher::with_threading(quick(), Threading::Safe, 4);
    let mut initial = root_batch();
    b.start_beside(&mut initial);
    assert!(!initial.beside);
    b.push(t0, b"a".to_vec(), false, Class::Normal);
    assert!(b.take_due(t0 + secs(1)).is_none());
}

#[test]
fn threading_modes_parse() {
    assert_eq!("safe".parse(), Ok(Threading::Safe));
    assert!("ful"
        .parse::<Threading>()
        .unwrap_err()
        .contains("off, safe or full"));
}

#[test]
fn full_batch_is_recognised() {
    let batch = Batch {
        entries: vec![Entry {
            path: Vec::new(),
            recursive: true,
            class: Class::Normal,
            mask: 0,
        }],
        moves: Vec::new(),
        verify: false,
        beside: false,
        initial: false,
        itemize: false,
    };
    assert!(batch.is_full());
}

#[test]
fn a_failed_initial_sync_is_tried_again_beside_the_queue() {
    let t0 = Instant::now();
    let mut b = Batcher::new(quick());
    let mut initial = root_batch();
    b.start_beside(&mut initial);
    b.push(t0, b"a".to_vec(), false, Class::Normal);
    let live = b.take_due(t0 + secs(1)).expect("a live batch");
    // The initial sync fails while the live batch runs.
    b.complete(t0 + secs(2), initial, false);
    assert_eq!(b.len(), 1, "the whole tree stays queued");
    let retry_at = t0 + secs(2) + b.backoff();
    assert_eq!(
        b.deadline(),
        Some(retry_at),
        "no slot is needed to try again"
    );
    assert!(b.take_due(retry_at - Duration::from_millis(1)).is_none());
    let again = b
        .take_due(retry_at)
        .expect("tried again while a live batch runs");
    assert!(again.beside && again.is_full(), "{again:?}");
    b.complete(retry_at, live, true);
    // Live changes keep going while it runs.
    b.push(retry_at, b"b".to_vec(), false, Class::Normal);
    let live = b
        .take_due(retry_at + secs(1))
        .expect("a live batch beside the retry");
    assert_eq!(paths(&live), ["b"]);
    b.complete(retry_at + secs(1), live, true);
    assert!(b.take_due(retry_at + secs(5)).is_none());
    b.complete(retry_at + secs(9), again, true);
    // What live batches synced since the first try is synced once more after it.
    let mut after = paths(&b.take_due(retry_at + secs(10)).unwrap());
    after.sort();
    assert_eq!(after, ["a", "b"]);
}

#[test]
fn a_failed_initial_sync_pending_a_retry_is_part_of_the_final_sync() {
    let t0 = Instant::now();
    let mut b = Batcher::new(quick());
    let mut initial = root_batch();
    b.start_beside(&mut initial);
    b.complete(t0, initial, false);
    b.push(t0, b"a".to_vec(), false, Class::Normal);
    let last = b.take_all(t0).expect("the final sync");
    assert!(last.is_full() && !last.beside, "{last:?}");
    assert!(b.is_empty());
}

#[test]
fn a_deferred_full_sync_runs_beside_after_the_backoff() {
    let t0 = Instant::now();
    let mut b = Batcher::new(quick());
    let mut warm = root_batch();
    warm.entries[0].path = b"changed".to_vec();
    b.start_external(&warm);
    b.complete(t0, warm, false);
    // Its replacement, the full sync, runs beside the queue after the backoff.
    b.defer_beside(t0, root_batch());
    let retry_at = t0 + b.backoff();
    assert!(b.take_due(retry_at - Duration::from_millis(1)).is_none());
    let full = b.take_due(retry_at).expect("the full sync, beside");
    assert!(full.beside && full.is_full(), "{full:?}");
    // The failed batch's own paths are queued as live changes.
    assert_eq!(paths(&b.take_due(retry_at + secs(1)).unwrap()), ["changed"]);
    // Under safe threading nothing runs beside: it is queued.
    let mut s = Batcher::with_threading(quick(), Threading::Safe, 4);
    s.defer_beside(t0, root_batch());
    let full = s
        .take_due(t0 + secs(1))
        .expect("queued under safe threading");
    assert!(!full.beside && full.is_full(), "{full:?}");
}
