/*!
Failover pairs: what changed on each side since the last state both sides shared, who
wins a split-brain, and bringing both sides together before the worker syncs (see
docs/failover.md).

- A [`Manifest`] is a tree's state: for every path, its type, size and mtime, in the
  records `find -printf '%y %s %T@ %P\0'` prints, so the peer's tree can be listed over ssh
  with nothing of ours installed there. [`walk`] lists this side, leaving out what the
  rules exclude: excluded paths are each node's own and never part of the pair.
- The agreed state is the newest record of what was delivered ([`crate::delivered`]),
  this node's or the peer's: the worker appends to it after every sync ([`Link`]), so a
  crash leaves a current record and only real concurrent changes make a split-brain.
- [`sides`] tells what each side changed since (added, modified, deleted, and when:
  a deletion is dated by its directory), so a side that changed while no worker ran is
  noticed at start.
- [`decide()`] applies the policy named after DRBD's after-split-brain policies; a
  resolver script may decide instead ([`Resolver`]), and anything it cannot settle is
  `manual`: nothing syncs in either direction until an operator says which side to keep.
  Whatever the rsync that follows replaces or deletes is kept in a conflict directory.
- A peer that cannot be reached at start is checked again with backoff while the worker
  runs; nothing is synced to it before ([`Link::check`]).

Its parts: `manifest.rs` a tree's state and how it is listed (here with [`walk`], at
the peer from `find` records); `decide.rs` the pure part, what each side changed and
what the policy makes of it; `peer.rs` the ssh and rsync side (listing, records and
conflict directories at the peer); `check.rs` the pair check at start, which puts them
together (with the resolver script and the local conflict directories); `link.rs` the
worker's link to its peer while it runs (retries, and the record of what each sync
delivered).
*/

mod check;
mod decide;
mod link;
pub(crate) mod manifest;
mod peer;

pub use check::{PairSettings, SPLIT_BRAIN_EXIT};
pub use decide::Decision;
pub use link::{Link, Step};
pub(crate) use manifest::records;
pub use manifest::{Manifest, Meta, Stat};

#[cfg(test)]
mod tests;
