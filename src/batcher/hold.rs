/*!
Hold-back of files being written: a batching policy that sits before the batcher and
decides *when* a changed file may join a queue at all.

A file just created is usually written and closed a moment later; queueing its
`IN_CREATE` at once would cost one rsync run for the empty file and another for its
content. With `wait-for-close`, a file written but not closed yet is not worth copying
half-written. Both wait here for the event that ends the writing (`IN_CLOSE_WRITE`, a
delete, a rename), each with a cap, so a file whose writer never closes it (a log, a
hard link, a symlink) is still synced. A released path keeps the time of its first
event, so the batcher's delays count from there, as if it had never been held.
*/

use std::time::{Duration, Instant};

/// How long a file just created waits for its writer to close it before it is synced
/// anyway (a hard link, a symlink, a writer that keeps it open).
pub(crate) const CREATE_SETTLE: Duration = Duration::from_millis(100);

/// A file held back because it is being written: a file just created waits for its
/// `IN_CLOSE_WRITE` (at most [`CREATE_SETTLE`]), so a new file costs one rsync run, not one
/// for its creation and another for its content, even at zero delays; with
/// `wait-for-close`, a file written but not closed waits for its close (at most the cap,
/// then again every cap while it stays open).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Held {
    /// When its first event came (its place in the queue when it is released).
    pub(crate) since: Instant,
    /// When it is synced anyway (with wait-for-close: and held again, for the next round).
    pub(crate) due: Instant,
    /// The events' masks, for the handler.
    pub(crate) mask: u32,
}
