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

Parallel syncs (`threading`): with `off` one batch runs at a time. With `full` up to
`max-parallel-syncs` batches run at once and a path may be in two of them (the original's
"full": a big transfer never holds back small ones, at the price of the same file being
synced twice at once). With `safe` a queued path that overlaps a path of a running batch
(the same path, below a recursive one, or above it when the queued one is recursive) stays
queued until that batch ends: no path is ever in two runs at once. In both parallel modes
delay-sync is counted from the start of the last batch as well as from the end of the
last one, so it still limits how often runs start.
*/

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many batches may run at once (`threading`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Threading {
    /// One batch at a time.
    #[default]
    Off,
    /// Parallel batches; a path is never in two running batches.
    Safe,
    /// Parallel batches, no exclusion.
    Full,
}

impl std::str::FromStr for Threading {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Threading::Off),
            "safe" => Ok(Threading::Safe),
            "full" => Ok(Threading::Full),
            _ => Err(format!(
                "invalid threading mode {s:?} (expected off, safe or full)"
            )),
        }
    }
}

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
    /// The inotify masks of the path's events, ORed (for handlers that are told them).
    pub mask: u32,
}

/// What is known of a queued path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Meta {
    recursive: bool,
    mask: u32,
}

impl Meta {
    fn merge(&mut self, other: Meta) {
        self.recursive |= other.recursive;
        self.mask |= other.mask;
    }

    /// A directory created (not moved in) since it was queued: see [`COALESCE_MIN`].
    fn is_new_dir(&self) -> bool {
        self.recursive && self.mask & libc::IN_CREATE != 0
    }
}

/// The paths handed to one sync run.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    /// Renames seen in the source, in order, to repeat at the destination first (an
    /// optimisation: the entries hold both paths of each).
    pub moves: Vec<(Vec<u8>, Vec<u8>)>,
    /// A periodic verification (`verify-interval`): its runs report what they repaired.
    pub verify: bool,
    /// Runs beside the queue ([`Batcher::start_beside`]): live batches do not wait for it.
    pub beside: bool,
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
    paths: HashMap<Vec<u8>, Meta>,
    first: Option<Instant>,
    /// When the latest path was pushed (for [`COALESCE_MIN`]).
    last: Option<Instant>,
    /// A directory created since the queue was last taken is queued (see
    /// [`COALESCE_MIN`]).
    fresh_dir: bool,
}

fn entry(path: Vec<u8>, m: Meta, class: Class) -> Entry {
    Entry {
        path,
        recursive: m.recursive,
        class,
        mask: m.mask,
    }
}

impl Queue {
    fn take(&mut self, class: Class, out: &mut Vec<Entry>) {
        self.first = None;
        self.last = None;
        self.fresh_dir = false;
        out.extend(self.paths.drain().map(|(path, m)| entry(path, m, class)));
    }
}

/// Burst coalescing, for collect delays shorter than [`COALESCE_CAP`] (zero included): a
/// queue that already holds [`COALESCE_MIN`] paths while more keep arriving waits until
/// they stop for [`COALESCE_QUIET`], at most until [`COALESCE_CAP`] after its first event.
/// A single change is not delayed (one path is far below the minimum); a burst of
/// thousands of files is synced in a few rsync runs instead of one per few milliseconds
/// of events, which also converges sooner (each run has a fixed cost).
///
/// A directory just created (not one moved in: that one is complete) counts as the start
/// of a burst however few paths are queued: it is almost always being filled (`mkdir -p`,
/// `cp -r`, `tar x`, `git clone`), and syncing it at once would copy it nearly empty and
/// then once more. An empty `mkdir` waits [`COALESCE_QUIET`] longer; a file change does
/// not wait at all.
///
/// Paths in the queue from which a burst is assumed.
pub const COALESCE_MIN: usize = 64;
/// A pause this long ends a burst.
pub const COALESCE_QUIET: Duration = Duration::from_millis(10);
/// A burst is cut into runs of at most this long (so a steady stream still syncs).
pub const COALESCE_CAP: Duration = Duration::from_millis(500);

/// Backoff after the first failure; doubled for each further failure.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// The backoff never grows past this (unless delay-sync itself is longer).
const RETRY_MAX: Duration = Duration::from_secs(60);

pub struct Batcher {
    delays: Delays,
    normal: Queue,
    big: Queue,
    last_sync: Option<Instant>,
    threading: Threading,
    /// Batches running now, and how many may run at once.
    running: usize,
    max_running: usize,
    /// `safe`: the paths of the running batches (recursive or not).
    in_flight: HashMap<Vec<u8>, bool>,
    /// Syncs running beside the queue (the initial sync).
    beside: usize,
    /// Paths synced by live batches while a sync ran beside: that sync may have written
    /// what it read before their change over them, so they are synced once more after it.
    resync: HashMap<Vec<u8>, Meta>,
    /// `safe`: everything due is held back by running batches; nothing is due until one
    /// ends or a new path arrives.
    held: bool,
    failures: u32,
    retry_at: Option<Instant>,
    /// Renames to hand to the next batch (threading off only).
    moves: Vec<(Vec<u8>, Vec<u8>)>,
}

/// At most this many renames wait for a batch; more are left to rsync alone.
const MAX_MOVES: usize = 10_000;

impl Batcher {
    /// One batch at a time (`threading = off`).
    pub fn new(delays: Delays) -> Self {
        Self::with_threading(delays, Threading::Off, 1)
    }

    /// `max_parallel` batches at once (forced to 1 with `Threading::Off`).
    pub fn with_threading(delays: Delays, threading: Threading, max_parallel: usize) -> Self {
        Batcher {
            delays,
            normal: Queue::default(),
            big: Queue::default(),
            last_sync: None,
            threading,
            running: 0,
            max_running: match threading {
                Threading::Off => 1,
                _ => max_parallel.max(1),
            },
            in_flight: HashMap::new(),
            beside: 0,
            resync: HashMap::new(),
            held: false,
            failures: 0,
            retry_at: None,
            moves: Vec::new(),
        }
    }

    /// A rename `from` → `to` in the source (both paths are pushed as changes too).
    /// Kept for the next batch only when batches run one at a time: with parallel
    /// batches their order at the destination is not the source's.
    pub fn push_move(&mut self, from: Vec<u8>, to: Vec<u8>) {
        if self.threading == Threading::Off && self.moves.len() < MAX_MOVES {
            self.moves.push((from, to));
        }
    }

    /// New delays (a configuration reload); queued paths keep their first-event time.
    pub fn set_delays(&mut self, delays: Delays) {
        self.delays = delays;
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
        self.push_event(now, path, recursive, 0, class);
    }

    /// [`push`](Self::push) with the event's inotify mask (ORed into the path's).
    pub fn push_event(
        &mut self,
        now: Instant,
        path: Vec<u8>,
        recursive: bool,
        mask: u32,
        class: Class,
    ) {
        let class = if recursive { Class::Normal } else { class };
        let other = match class {
            Class::Normal => Class::Big,
            Class::Big => Class::Normal,
        };
        let mut meta = Meta { recursive, mask };
        let other_q = self.queue(other);
        if let Some(m) = other_q.paths.remove(&path) {
            meta.merge(m);
            if other_q.paths.is_empty() {
                other_q.first = None;
                other_q.last = None;
                other_q.fresh_dir = false;
            }
        }
        let q = self.queue(class);
        q.fresh_dir |= meta.is_new_dir();
        q.first.get_or_insert(now);
        q.last = Some(q.last.map_or(now, |l| l.max(now)));
        q.paths.entry(path).or_default().merge(meta);
        self.held = false;
    }

    /// Whether `path` is queued already (in either queue).
    pub fn contains(&self, path: &[u8]) -> bool {
        self.normal.paths.contains_key(path) || self.big.paths.contains_key(path)
    }

    /// ORs `mask` into the mask of a queued `path` (either queue); false if not queued.
    pub fn merge_mask(&mut self, path: &[u8], mask: u32) -> bool {
        for q in [&mut self.normal, &mut self.big] {
            if let Some(m) = q.paths.get_mut(path) {
                m.mask |= mask;
                return true;
            }
        }
        false
    }

    /// Number of queued paths.
    pub fn len(&self) -> usize {
        self.normal.paths.len() + self.big.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True while a batch runs (in the queue or beside it).
    pub fn is_busy(&self) -> bool {
        self.running > 0 || self.beside > 0
    }

    /// Batches running now.
    pub fn running(&self) -> usize {
        self.running
    }

    /// True when no further batch may start now (the parallel limit is reached).
    fn full(&self) -> bool {
        self.running >= self.max_running
    }

    /// `safe`: whether a queued `path` overlaps a path of a running batch.
    fn blocked(&self, path: &[u8], recursive: bool) -> bool {
        if self.in_flight.is_empty() {
            return false;
        }
        if self.in_flight.contains_key(path) {
            return true;
        }
        // A running recursive ancestor (the root included) covers this path.
        let mut p = path;
        while !p.is_empty() {
            p = match p.iter().rposition(|&b| b == b'/') {
                Some(i) => &p[..i],
                None => &[],
            };
            if self.in_flight.get(p) == Some(&true) {
                return true;
            }
        }
        // A queued recursive directory covers the running paths below it.
        recursive
            && self.in_flight.keys().any(|k| {
                path.is_empty()
                    || (k.len() > path.len() && k.starts_with(path) && k[path.len()] == b'/')
            })
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
        let first = q.first?;
        let mut due = first + delay;
        if delay < COALESCE_CAP && (q.paths.len() >= COALESCE_MIN || q.fresh_dir) {
            if let Some(last) = q.last {
                due = due.max((last + COALESCE_QUIET).min(first + COALESCE_CAP));
            }
        }
        Some(match self.not_before() {
            Some(nb) => due.max(nb),
            None => due,
        })
    }

    /// When the next batch is due; `None` while no further sync may start (the parallel
    /// limit is reached, or everything due is held back by running batches) or nothing
    /// is queued.
    pub fn deadline(&self) -> Option<Instant> {
        if self.full() || self.held {
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

    /// Takes every queue whose deadline has passed, as one batch, and counts it running
    /// until [`complete`](Self::complete). With `safe` threading, paths that overlap a
    /// running batch stay queued.
    pub fn take_due(&mut self, now: Instant) -> Option<Batch> {
        if self.full() || self.held {
            return None;
        }
        let mut entries = Vec::new();
        for class in [Class::Normal, Class::Big] {
            if self.queue_deadline(class).is_some_and(|d| d <= now) {
                self.take_queue(class, &mut entries);
            }
        }
        self.begin(now, entries)
    }

    /// Takes everything queued, ignoring all delays (the final sync on shutdown).
    pub fn take_all(&mut self, now: Instant) -> Option<Batch> {
        if self.full() || self.is_empty() {
            return None;
        }
        let mut entries = Vec::new();
        self.take_queue(Class::Normal, &mut entries);
        self.take_queue(Class::Big, &mut entries);
        self.begin(now, entries)
    }

    /// Moves a queue's paths into `out`, leaving those that `safe` threading holds back;
    /// if it leaves any, nothing is due until a running batch ends or a path is pushed
    /// (the held paths were checked just now and can only be freed by a completion).
    fn take_queue(&mut self, class: Class, out: &mut Vec<Entry>) {
        if self.threading != Threading::Safe || self.in_flight.is_empty() {
            self.queue(class).take(class, out);
            return;
        }
        let q = std::mem::take(self.queue(class));
        let mut kept = Queue::default();
        for (path, m) in q.paths {
            if self.blocked(&path, m.recursive) {
                kept.fresh_dir |= m.is_new_dir();
                kept.paths.insert(path, m);
            } else {
                out.push(entry(path, m, class));
            }
        }
        if !kept.paths.is_empty() {
            kept.first = q.first;
            kept.last = q.last;
            self.held = true;
        }
        *self.queue(class) = kept;
    }

    fn begin(&mut self, now: Instant, entries: Vec<Entry>) -> Option<Batch> {
        if entries.is_empty() {
            return None;
        }
        if self.beside > 0 {
            for e in &entries {
                self.resync.entry(e.path.clone()).or_default().merge(Meta {
                    recursive: e.recursive,
                    mask: e.mask,
                });
            }
        }
        let batch = Batch {
            entries,
            moves: std::mem::take(&mut self.moves),
            verify: false,
            beside: false,
        };
        self.start_external(&batch);
        if self.threading != Threading::Off {
            self.last_sync = Some(now);
        }
        Some(batch)
    }

    /// Counts a batch started outside the queues (the initial sync) as running.
    pub fn start_external(&mut self, batch: &Batch) {
        self.running += 1;
        if self.threading == Threading::Safe {
            for e in &batch.entries {
                *self.in_flight.entry(e.path.clone()).or_insert(false) |= e.recursive;
            }
        }
    }

    /// Starts `batch` (the initial sync) beside the queue: batches of live changes keep
    /// starting while it runs, so a change made during a long initial copy reaches the
    /// destination without waiting for it. The paths those batches sync are synced once
    /// more when it ends ([`complete`](Self::complete)): it may have copied an older
    /// state of them after they were synced. Not with `safe` threading, whose promise is
    /// that no path is in two running syncs: there it runs as an ordinary batch.
    pub fn start_beside(&mut self, batch: &mut Batch) {
        if self.threading == Threading::Safe {
            self.start_external(batch);
            return;
        }
        batch.beside = true;
        self.beside += 1;
    }

    /// Ends a running sync. On failure the batch's paths are queued again (as if their
    /// events had just happened) and the next sync waits for the backoff.
    pub fn complete(&mut self, now: Instant, batch: Batch, ok: bool) {
        if batch.beside {
            self.beside = self.beside.saturating_sub(1);
            if self.beside == 0 {
                for (path, m) in std::mem::take(&mut self.resync) {
                    self.push_event(now, path, m.recursive, m.mask, Class::Normal);
                }
            }
        } else {
            self.running = self.running.saturating_sub(1);
        }
        self.held = false;
        if self.threading == Threading::Safe {
            for e in &batch.entries {
                self.in_flight.remove(&e.path);
            }
        }
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
            self.push_event(first.unwrap_or(now), e.path, e.recursive, e.mask, e.class);
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
        };
        assert!(batch.is_full());
    }
}
