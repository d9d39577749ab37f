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

pub(crate) mod hold;

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
    /// The initial sync of a warm start (what differs from the destination's index): its
    /// end makes the destination ready, as a full initial sync's does.
    pub initial: bool,
    /// Its runs itemize what they change, as a verification's do, without being one (the
    /// full sync of a start after `clsync-manager resync`: its end tells what it repaired).
    pub itemize: bool,
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
    /// A sync that ran beside the queue and failed (the initial sync, say a handler that
    /// could not be run for a moment): tried again beside the queue once the backoff has
    /// passed. Queued as live changes it would run as an ordinary batch, and every live
    /// change would wait for the whole copy it makes.
    beside_retry: Option<Batch>,
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
            beside_retry: None,
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

    /// Marks `path` dirty, ORing the event's inotify mask into the path's. A path is kept
    /// once; `recursive` is sticky; a path moves to the queue of its latest classification
    /// (a file that grew past the threshold waits with the big files, a recursive entry
    /// always waits in the normal queue).
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

    /// Number of queued paths (those of a failed sync waiting to run beside again too).
    pub fn len(&self) -> usize {
        self.normal.paths.len()
            + self.big.paths.len()
            + self.beside_retry.as_ref().map_or(0, |b| b.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True while a batch runs (in the queue or beside it).
    pub fn is_busy(&self) -> bool {
        self.running > 0 || self.beside > 0
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
        // A failed sync beside the queue needs no free slot: it runs beside it.
        let beside = self
            .beside_retry
            .as_ref()
            .map(|_| self.not_before().unwrap_or_else(Instant::now));
        if self.full() || self.held {
            return beside;
        }
        [
            beside,
            self.queue_deadline(Class::Normal),
            self.queue_deadline(Class::Big),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Takes every queue whose deadline has passed, as one batch, and counts it running
    /// until [`complete`](Self::complete). With `safe` threading, paths that overlap a
    /// running batch stay queued.
    pub fn take_due(&mut self, now: Instant) -> Option<Batch> {
        if self.beside_retry.is_some() && self.not_before().is_none_or(|t| t <= now) {
            let mut batch = self.beside_retry.take()?;
            batch.beside = true;
            self.beside += 1;
            return Some(batch);
        }
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
        let mut entries = (self.beside_retry.take()).map_or_else(Vec::new, |b| b.entries);
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
        if self.beside > 0 || self.beside_retry.is_some() {
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
            initial: false,
            itemize: false,
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

    /// Runs `batch` beside the queue once the backoff of the last failure has passed (a
    /// warm start's initial sync failed: the full sync that replaces it). With `safe`
    /// threading its paths are queued instead, as [`start_beside`](Self::start_beside)
    /// would run it there.
    pub fn defer_beside(&mut self, now: Instant, batch: Batch) {
        if self.threading == Threading::Safe {
            for e in batch.entries {
                self.push_event(now, e.path, e.recursive, e.mask, e.class);
            }
            return;
        }
        match &mut self.beside_retry {
            Some(b) => b.entries.extend(batch.entries),
            None => self.beside_retry = Some(batch),
        }
    }

    /// Ends a running sync. On failure the batch's paths are queued again (as if their
    /// events had just happened) and the next sync waits for the backoff.
    pub fn complete(&mut self, now: Instant, mut batch: Batch, ok: bool) {
        let retry_beside = batch.beside && !ok;
        if batch.beside {
            self.beside = self.beside.saturating_sub(1);
            // The paths synced meanwhile wait for the retry's end when it failed.
            if self.beside == 0 && !retry_beside {
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
        if retry_beside {
            batch.beside = false;
            match &mut self.beside_retry {
                Some(b) => b.entries.append(&mut batch.entries),
                None => self.beside_retry = Some(batch),
            }
            return;
        }
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
mod tests;
