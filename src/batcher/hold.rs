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

Like the batcher it is pure: time is an argument (`now`), and whether a file is still
open is known from its events alone (no look at `/proc`), so the unit tests drive it with
made-up instants and events. The worker hands it each dirty path and queues what it
returns; [`OpenFiles::next_due`] is one of the worker's wake-up times.
*/

use crate::watch::Dirty;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a file just created waits for its writer to close it before it is synced
/// anyway (a hard link, a symlink, a writer that keeps it open).
const CREATE_SETTLE: Duration = Duration::from_millis(100);

/// A file held back because it is being written: a file just created waits for its
/// `IN_CLOSE_WRITE` (at most [`CREATE_SETTLE`]), so a new file costs one rsync run, not one
/// for its creation and another for its content, even at zero delays; with
/// `wait-for-close`, a file written but not closed waits for its close (at most the cap,
/// then again every cap while it stays open).
#[derive(Clone, Copy, Debug)]
struct Held {
    /// When its first event came (its place in the queue when it is released).
    since: Instant,
    /// When it is synced anyway (with wait-for-close: and held again, for the next round).
    due: Instant,
    /// The events' masks, for the handler.
    mask: u32,
}

/// The events that end the writing of a file: it is closed, deleted or renamed.
const ENDS: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF;

/// The settings the hold-back follows, read from the worker at each call (a reload may
/// change `wait-for-close`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// `wait-for-close`: how long a file being written waits for its close (then it is
    /// synced anyway, and held again for another round while it stays open).
    pub(crate) wait_for_close: Option<Duration>,
    /// Without `wait-for-close`, whether a file just created waits for its close (at
    /// most [`CREATE_SETTLE`]): not once a stop was asked (the final sync takes it as is).
    pub(crate) settle_created: bool,
}

/// Files written but not closed yet, held back from the batcher (see [`Held`]).
#[derive(Debug, Default)]
pub(crate) struct OpenFiles {
    held: HashMap<Vec<u8>, Held>,
}

impl OpenFiles {
    /// Whether the event `d` leaves its file held back as being written. An event that
    /// ends the writing (close, delete, rename) releases it; a directory's event or a
    /// recursive path is never held.
    ///
    /// Returns when the path is to be queued (now, or as of the first event of a held
    /// file it releases, whose masks are merged into `d`), or `None` while it stays held
    /// (its mask kept for the release).
    pub(crate) fn event(&mut self, now: Instant, d: &mut Dirty, policy: Policy) -> Option<Instant> {
        if d.recursive {
            return Some(now);
        }
        if d.mask & ENDS != 0 || d.mask & libc::IN_ISDIR != 0 {
            if self.held.is_empty() {
                return Some(now);
            }
            // Released: queued as of its first event, so the delays count from there.
            return Some(self.held.remove(&d.path).map_or(now, |h| {
                d.mask |= h.mask;
                d.modify_only = false;
                h.since
            }));
        }
        if let Some(h) = self.held.get_mut(&d.path) {
            h.mask |= d.mask;
            return None;
        }
        let created = d.mask & libc::IN_CREATE != 0;
        let cap = match policy.wait_for_close {
            Some(cap) if created || d.mask & libc::IN_MODIFY != 0 => cap,
            None if created && policy.settle_created => CREATE_SETTLE,
            _ => return Some(now),
        };
        self.held.insert(
            d.path.clone(),
            Held {
                since: now,
                due: now + cap,
                mask: d.mask,
            },
        );
        None
    }

    /// When the next held file is due (a wake-up time of the worker's loop).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.held.values().map(|h| h.due).min()
    }

    /// The held files whose time is up, to be queued as of their first events: synced
    /// anyway (a log that is never closed: with `wait-for-close` it is held again, for
    /// the next round, as of `now`).
    pub(crate) fn release_due(
        &mut self,
        now: Instant,
        wait_for_close: Option<Duration>,
    ) -> Vec<(Instant, Dirty)> {
        let due: Vec<Vec<u8>> = self
            .held
            .iter()
            .filter(|(_, h)| now >= h.due)
            .map(|(p, _)| p.clone())
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for path in due {
            let h = match wait_for_close {
                Some(cap) => std::mem::replace(
                    self.held.get_mut(&path).expect("a held path"),
                    Held {
                        since: now,
                        due: now + cap,
                        mask: libc::IN_MODIFY,
                    },
                ),
                None => self.held.remove(&path).expect("a held path"),
            };
            out.push(released(path, h));
        }
        sorted(out)
    }

    /// Every held file, to be queued as of its first event (the final sync).
    pub(crate) fn release_all(&mut self) -> Vec<(Instant, Dirty)> {
        sorted(self.held.drain().map(|(p, h)| released(p, h)).collect())
    }
}

/// A released file: when it is queued as of, and its dirty path.
fn released(path: Vec<u8>, h: Held) -> (Instant, Dirty) {
    (
        h.since,
        Dirty {
            path,
            recursive: false,
            modify_only: false,
            mask: h.mask,
        },
    )
}

/// Released files in the order of their first events (then of their paths), so the
/// batcher's queue counts from the earliest.
fn sorted(mut v: Vec<(Instant, Dirty)>) -> Vec<(Instant, Dirty)> {
    v.sort_by(|a, b| (a.0, &a.1.path).cmp(&(b.0, &b.1.path)));
    v
}

#[cfg(test)]
mod tests;
