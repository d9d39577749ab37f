/*!
The batcher: which dirty paths are synced together, and when.

It is a pure state machine. Every method that depends on time takes `now` as an argument,
so the unit tests drive it with made-up instants and never sleep.

The timing rule is the original clsync's: a queue fires at
`max(first event + delay-collect, end of last sync + delay-sync)`. The deadline is counted
from the *first* event of the batch, not from the last one: a steady trickle of writes can
not postpone a sync forever, as a debounce would. Paths of files larger than
threshold-bigfile wait in a second queue with its own, longer, collect delay, so a big
file being written does not drag every small change into an expensive transfer.

A failed sync gives its paths back (`complete(.., false)`): they are merged into the queues
again and the next try waits for an exponential backoff. Nothing is ever dropped here.
*/

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The delays of the original's `-t`, `-T` and `-w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delays {
    pub collect: Duration,
    pub collect_bigfile: Duration,
    pub sync: Duration,
}

/// Which queue a path waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Normal,
    Big,
}

/// One path of a batch. `recursive` means "the whole subtree below this directory".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub recursive: bool,
    pub class: Class,
}

/// The paths handed to one sync run.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
}

impl Batch {
    /// True when the batch syncs the whole tree (the root, recursively).
    pub fn is_full(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.recursive && e.path.is_empty())
    }
}

#[derive(Default)]
struct Queue {
    paths: HashMap<Vec<u8>, bool>,
    first: Option<Instant>,
}

impl Queue {
    fn take(&mut self, class: Class, out: &mut Vec<Entry>) {
        self.first = None;
        out.extend(self.paths.drain().map(|(path, recursive)| Entry {
            path,
            recursive,
            class,
        }));
    }
}

/// Backoff after the first failure; doubled for each further failure.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// The backoff never grows past this (unless delay-sync itself is longer).
const RETRY_MAX: Duration = Duration::from_secs(60);

pub struct Batcher {
    delays: Delays,
    normal: Queue,
    big: Queue,
    last_sync: Option<Instant>,
    busy: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Batcher {
    pub fn new(delays: Delays) -> Self {
        Batcher {
            delays,
            normal: Queue::default(),
            big: Queue::default(),
            last_sync: None,
            busy: false,
            failures: 0,
            retry_at: None,
        }
    }

    fn queue(&mut self, class: Class) -> &mut Queue {
        match class {
            Class::Normal => &mut self.normal,
            Class::Big => &mut self.big,
        }
    }

    /// Marks `path` dirty. A path is kept once; `recursive` is sticky; a path moves to the
    /// queue of its latest classification (a file that grew past the threshold waits with
    /// the big files, a recursive entry always waits in the normal queue).
    pub fn push(&mut self, now: Instant, path: Vec<u8>, recursive: bool, class: Class) {
        let class = if recursive { Class::Normal } else { class };
        let other = match class {
            Class::Normal => Class::Big,
            Class::Big => Class::Normal,
        };
        let mut recursive = recursive;
        let other_q = self.queue(other);
        if let Some(r) = other_q.paths.remove(&path) {
            recursive |= r;
            if other_q.paths.is_empty() {
                other_q.first = None;
            }
        }
        let q = self.queue(class);
        q.first.get_or_insert(now);
        let r = q.paths.entry(path).or_insert(false);
        *r |= recursive;
    }

    /// Whether `path` is queued already (in either queue).
    pub fn contains(&self, path: &[u8]) -> bool {
        self.normal.paths.contains_key(path) || self.big.paths.contains_key(path)
    }

    /// Number of queued paths.
    pub fn len(&self) -> usize {
        self.normal.paths.len() + self.big.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// The earliest time any sync may start at all (delay-sync after the last sync, or the
    /// retry backoff after a failure).
    fn not_before(&self) -> Option<Instant> {
        let after_sync = self.last_sync.map(|t| t + self.delays.sync);
        match (after_sync, self.retry_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn queue_deadline(&self, class: Class) -> Option<Instant> {
        let (q, delay) = match class {
            Class::Normal => (&self.normal, self.delays.collect),
            Class::Big => (&self.big, self.delays.collect_bigfile),
        };
        let due = q.first? + delay;
        Some(match self.not_before() {
            Some(nb) => due.max(nb),
            None => due,
        })
    }

    /// When the next batch is due; `None` while a sync runs or nothing is queued.
    pub fn deadline(&self) -> Option<Instant> {
        if self.busy {
            return None;
        }
        match (
            self.queue_deadline(Class::Normal),
            self.queue_deadline(Class::Big),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes every queue whose deadline has passed, as one batch, and marks the batcher
    /// busy until [`complete`](Self::complete).
    pub fn take_due(&mut self, now: Instant) -> Option<Batch> {
        if self.busy {
            return None;
        }
        let mut entries = Vec::new();
        if self.queue_deadline(Class::Normal).is_some_and(|d| d <= now) {
            self.normal.take(Class::Normal, &mut entries);
        }
        if self.queue_deadline(Class::Big).is_some_and(|d| d <= now) {
            self.big.take(Class::Big, &mut entries);
        }
        if entries.is_empty() {
            return None;
        }
        self.busy = true;
        Some(Batch { entries })
    }

    /// Takes everything queued, ignoring all delays (the final sync on shutdown).
    pub fn take_all(&mut self) -> Option<Batch> {
        if self.busy || self.is_empty() {
            return None;
        }
        let mut entries = Vec::new();
        self.normal.take(Class::Normal, &mut entries);
        self.big.take(Class::Big, &mut entries);
        self.busy = true;
        Some(Batch { entries })
    }

    /// Marks a batch started outside the queues (the initial sync) as running.
    pub fn start_external(&mut self) {
        self.busy = true;
    }

    /// Ends the running sync. On failure the batch's paths are queued again (as if their
    /// events had just happened) and the next sync waits for the backoff.
    pub fn complete(&mut self, now: Instant, batch: Batch, ok: bool) {
        self.busy = false;
        self.last_sync = Some(now);
        if ok {
            self.failures = 0;
            self.retry_at = None;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let backoff = self.backoff();
        self.retry_at = Some(now + backoff);
        for e in batch.entries {
            // The retry is governed by retry_at; the collect delay does not start anew.
            let first = now.checked_sub(self.delays.collect_bigfile.max(self.delays.collect));
            self.push(first.unwrap_or(now), e.path, e.recursive, e.class);
        }
    }

    /// Consecutive failed syncs so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The wait before the next try after `failures` consecutive failures.
    pub fn backoff(&self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        let base = RETRY_MIN.max(self.delays.sync);
        let cap = RETRY_MAX.max(self.delays.sync);
        let shift = (self.failures - 1).min(16);
        base.saturating_mul(1 << shift).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let batch = b.take_all().unwrap();
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
        let batch = b.take_all().unwrap();
        assert_eq!(paths(&batch), ["a"]);
        b.push(t0, b"b".to_vec(), false, Class::Normal);
        assert!(b.take_all().is_none(), "one sync at a time");
        b.complete(t0, batch, true);
        assert_eq!(paths(&b.take_all().unwrap()), ["b"]);
    }

    #[test]
    fn full_batch_is_recognised() {
        let batch = Batch {
            entries: vec![Entry {
                path: Vec::new(),
                recursive: true,
                class: Class::Normal,
            }],
        };
        assert!(batch.is_full());
    }
}
