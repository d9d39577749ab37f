/*!
Keeping one destination's record current as syncs end: the state of each path a sync
names when it starts, and when it ends the records of what it delivered (a journal
frame, `fdatasync`'d before the batch leaves the queue), or after a full sync a new
agreement (the whole tree, walked). Held by each destination of a worker (its warm-start
index) and by a failover pair's link (the pair's record); kept apart from both because
the rule that makes a crash safe — the record never says "delivered" for a state the
destination may not have received — is the same for both.
*/

use super::{Journal, Record, Version, CLEAR_BELOW, DELETED, FORGET};
use crate::pair::manifest::{changed_since, meta_of, rule_kind, walk, Manifest};
use crate::pair::Meta;
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How much earlier than its start a sync counts as started (the coarse clock's tick).
const CTIME_SLACK: Duration = Duration::from_millis(50);

/// What a record is true for: the source root, the destination, and what decides the set
/// of synced paths. Computed again at each new agreement (a local destination may not
/// exist before its first full sync).
#[derive(Debug, Clone)]
pub struct Identity {
    pub src: PathBuf,
    pub dst: crate::dest::Dest,
    /// A hash of the rules, mode, `one-file-system` and `rsync-options`.
    pub rules: u64,
}

/// `dev:ino:btime` of a directory (followed: rsync follows a destination that is a
/// symlink to a directory). The birth time tells a directory made again with a reused
/// inode number; 0 where the file system does not keep it. `missing` when it is gone.
pub fn dir_id(p: &Path) -> String {
    match std::fs::metadata(p) {
        Ok(m) => {
            let born = m
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{}:{born}", m.dev(), m.ino())
        }
        Err(_) => "missing".into(),
    }
}

/// The identity line of a record: `src=DEV:INO:BTIME<TAB>dst=…<TAB>rules=HASH`. A local
/// destination is named by its root's `dev:ino:btime`, a remote one by host and path as
/// written (the remote root is not asked: a destination replaced at the same remote path
/// looks the same, which `verify-interval` repairs).
#[must_use]
pub fn identity(id: &Identity) -> String {
    let dst = match &id.dst {
        crate::dest::Dest::Local(p) => format!("local:{}", dir_id(p)),
        crate::dest::Dest::Ssh { host, path } => {
            format!("ssh:{host:?}:{:?}", String::from_utf8_lossy(path))
        }
        crate::dest::Dest::Daemon(s) => format!("daemon:{s:?}"),
    };
    format!(
        "src={}\tdst={dst}\trules={:016x}",
        dir_id(&id.src),
        id.rules
    )
}

/// One destination's record, kept current as its syncs end.
pub struct Tracker {
    journal: Journal,
    /// `None`: a pair's record (no identity written).
    identity: Option<Identity>,
    /// For the log: `pair` or `index`.
    what: &'static str,
    /// The state of each path of the running syncs when they started.
    pre: HashMap<Vec<u8>, Meta>,
    /// When each running sync started (seconds, nanoseconds), a little early: inode
    /// change times come from a coarse clock.
    running: Vec<(i64, i64)>,
    /// What the running syncs may deliver, as written before they ran
    /// ([`Tracker::in_flight`]); written again after a new agreement replaced the journal
    /// while one of them still ran. Emptied when none runs.
    pending: Vec<(Vec<u8>, Meta)>,
}

impl Tracker {
    /// Opens (creating) the record in `dir`; returns it as loaded.
    pub fn open(
        dir: &Path,
        identity: Option<Identity>,
        what: &'static str,
    ) -> io::Result<(Tracker, Record)> {
        let (journal, rec) = Journal::open(dir)?;
        Ok((
            Tracker {
                journal,
                identity,
                what,
                pre: HashMap::new(),
                running: Vec::new(),
                pending: Vec::new(),
            },
            rec,
        ))
    }

    /// The identity a record written now would carry (empty for a pair's).
    #[must_use]
    pub fn identity_now(&self) -> String {
        self.identity.as_ref().map(identity).unwrap_or_default()
    }

    /// A sync starts: the time, and the state of the paths it names.
    pub fn started(&mut self, src: &Path, batch: &crate::batcher::Batch) {
        for e in &batch.entries {
            if e.recursive || e.path.is_empty() {
                continue;
            }
            if let Ok(m) = std::fs::symlink_metadata(crate::watch::abs_path(src, &e.path)) {
                self.pre.entry(e.path.clone()).or_insert(meta_of(&m));
            }
        }
        if self.identity.is_some() {
            self.in_flight(src, batch);
        }
        let t = std::time::SystemTime::now()
            .checked_sub(CTIME_SLACK)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
        self.running.push((secs, i64::from(t.subsec_nanos())));
    }

    /// Before a sync runs, the index learns what it may deliver: each path the batch
    /// names gets its state now as an alternative (the destination may hold either once
    /// rsync has begun), and a directory sent whole loses its own record (anything of it
    /// may arrive: the next start sends it whole again, and the compare ignores what the
    /// index has below a directory it sends whole, `warm::compare`). Without this a kill -9 after rsync delivered a new path and before
    /// [`Tracker::finished`] recorded it left a path the index did not know at the
    /// destination: deleted from the source while no worker ran, it was never deleted
    /// there. A sync of the whole tree makes the index unusable until it ends.
    fn in_flight(&mut self, src: &Path, batch: &crate::batcher::Batch) {
        let mark = |kind: u8| Meta {
            kind,
            size: 0,
            mtime: 0,
            x: Default::default(),
        };
        // An alternative state "a directory" at a path the source does not have: whatever
        // the destination has there is deleted whole at the next start.
        let gone_here = || mark(b'D');
        let r = if batch.is_full() {
            self.journal.invalidate()
        } else {
            let mut ops = Vec::new();
            let named: std::collections::HashSet<&[u8]> =
                batch.entries.iter().map(|e| e.path.as_slice()).collect();
            // Renames are repeated at the destination first: a kill between two of them
            // leaves a name there that no entry names (`mv a b; mv b c` in one batch).
            let moved = batch
                .moves
                .iter()
                .flat_map(|(a, b)| [a, b])
                .filter(|p| !named.contains(p.as_slice()));
            let paths = batch.entries.iter().map(|e| (&e.path, e.recursive));
            for (p, recursive) in paths.chain(moved.map(|p| (p, true))) {
                if p.is_empty() {
                    continue;
                }
                match std::fs::symlink_metadata(crate::watch::abs_path(src, p)) {
                    Ok(m) => {
                        let meta = meta_of(&m);
                        if recursive && meta.kind == b'd' {
                            ops.push((p.clone(), mark(FORGET)));
                        }
                        ops.push((p.clone(), also_of(meta)));
                    }
                    // A deletion. The destination may get the path all the same before
                    // rsync deletes it: a rename repeated there (`mv a b` in this batch,
                    // `mv b c` already done here). Deleted at the next start if still gone.
                    Err(_) => {
                        ops.push((p.clone(), mark(FORGET)));
                        ops.push((p.clone(), gone_here()));
                    }
                }
            }
            let r = self.journal.append_unsynced(&ops);
            self.pending.extend(ops);
            r
        };
        if let Err(e) = r {
            log::error!(
                "{}: cannot record what a sync is about to send: {e}",
                self.what
            );
            if let Err(e) = self.journal.invalidate() {
                log::error!("{}: cannot set the index aside: {e}", self.what);
            }
        }
    }

    /// A sync ended. A partial one that succeeded is recorded here (a journal frame, on
    /// disk when this returns); for a full one that succeeded the start time is returned,
    /// and the caller makes the new agreement ([`Tracker::agree`]).
    pub fn finished(
        &mut self,
        src: &Path,
        rules: &crate::rules::Rules,
        batch: &crate::batcher::Batch,
        ok: bool,
    ) -> Option<(i64, i64)> {
        // The earliest start of the syncs running: safe for whichever ended.
        let since = self.running.iter().min().copied();
        if let Some(i) = self.running.iter().position(|t| Some(*t) == since) {
            self.running.swap_remove(i);
        }
        if self.running.is_empty() {
            self.pending.clear();
        }
        let mut pre = HashMap::new();
        for e in &batch.entries {
            if let Some(v) = self.pre.remove(&e.path) {
                pre.insert(e.path.clone(), v);
            }
        }
        let (Some(since), true) = (since, ok) else {
            return None;
        };
        if batch.is_full() {
            return Some(since);
        }
        let ops = delivered_ops(src, rules, &batch.entries, since, &pre);
        if let Err(e) = self.journal.append(&ops) {
            log::error!("{}: cannot record what was delivered: {e}", self.what);
            return None;
        }
        if self.journal.wants_compaction() {
            if let Err(e) = self.journal.compact() {
                log::error!("{}: cannot compact the delivered record: {e}", self.what);
            }
        }
        None
    }

    /// After a full sync that began at `since`: source and destination are equal (what
    /// did not change since it began), a new agreement above `other`. A path that changed
    /// during the sync keeps its state before it (`before`, else as recorded) and gets
    /// the state now as the alternative.
    pub fn agree(
        &mut self,
        src: &Path,
        rules: &crate::rules::Rules,
        since: (i64, i64),
        before: Option<Manifest>,
        other: Version,
    ) -> Option<Record> {
        let w = match walk(src, b"", rules, Some(since)) {
            Ok(w) => w,
            Err(e) => {
                log::error!("{}: cannot list {}: {e}", self.what, src.display());
                return None;
            }
        };
        let before = match before {
            Some(m) => m,
            None if w.recent.is_empty() => Manifest::default(),
            None => super::load(self.journal.dir())
                .map(|r| r.agreed().0)
                .unwrap_or_default(),
        };
        let mut rec = Record {
            version: Version::next(self.journal.version(), other),
            paths: w.manifest.0,
            also: Default::default(),
            identity: self.identity_now(),
        };
        for (p, m) in w.recent {
            if let Some(b) = before.0.get(&p) {
                rec.paths.insert(p.clone(), *b);
            }
            rec.also.insert(p, also_of(m));
        }
        if let Err(e) = self.journal.replace(&rec) {
            log::error!("{}: cannot record the agreed state: {e}", self.what);
            return None;
        }
        // Syncs of live changes that ran beside the full one and still run: what they may
        // deliver was in the journal just replaced.
        if let Err(e) = self.journal.append_unsynced(&self.pending) {
            log::error!(
                "{}: cannot record what a sync is about to send: {e}",
                self.what
            );
            if let Err(e) = self.journal.invalidate() {
                log::error!("{}: cannot set the index aside: {e}", self.what);
            }
        }
        Some(rec)
    }

    /// Manifest + journal as the new manifest, the journal emptied.
    pub fn compact(&mut self) -> io::Result<Record> {
        self.journal.compact()
    }

    /// A clean stop: compacted only when the journal has outgrown the manifest (the next
    /// start reads both anyway; loading millions of paths to rewrite them is not worth
    /// a slower stop).
    pub fn clean_stop(&mut self) {
        if self.journal.wants_compaction() {
            if let Err(e) = self.journal.compact() {
                log::error!("{}: cannot compact the delivered record: {e}", self.what);
            }
        }
    }
}

/// `m` as an alternative state (its type in upper case).
pub(crate) fn also_of(mut m: Meta) -> Meta {
    m.kind = m.kind.to_ascii_uppercase();
    m
}

/// What a sync of `entries` delivered, as journal records: each path's state now, if
/// its inode did not change since the sync began (`since`) or since `pre` saw it then. A
/// path that changed during the sync may have reached the destination in either state:
/// its state at the start is recorded (none: it did not exist) and the state now as the
/// alternative ([`crate::delivered`]).
fn delivered_ops(
    src: &Path,
    rules: &crate::rules::Rules,
    entries: &[crate::batcher::Entry],
    since: (i64, i64),
    pre: &HashMap<Vec<u8>, Meta>,
) -> Vec<(Vec<u8>, Meta)> {
    let mark = |kind: u8, mtime: i64| Meta {
        kind,
        size: 0,
        mtime,
        x: Default::default(),
    };
    let mut ops = Vec::new();
    for e in entries {
        let p = &e.path;
        match std::fs::symlink_metadata(crate::watch::abs_path(src, p)) {
            Ok(m) => {
                let meta = meta_of(&m);
                if !rules.is_empty() && !p.is_empty() && rules.excluded(p, rule_kind(meta.kind)) {
                    continue;
                }
                if e.recursive && meta.kind == b'd' {
                    ops.push((p.clone(), mark(CLEAR_BELOW, 0)));
                    if let Ok(w) = walk(src, p, rules, Some(since)) {
                        for (r, rm) in w.recent {
                            ops.push((r.clone(), mark(FORGET, 0)));
                            ops.push((r, also_of(rm)));
                        }
                        ops.extend(w.manifest.0);
                    }
                }
                if p.is_empty() {
                    continue;
                }
                let before = pre.get(p);
                let settled =
                    !changed_since(&m, Some(since)) || before.is_some_and(|b| b.same_stat(&meta));
                if settled {
                    ops.push((p.clone(), meta));
                } else {
                    match before {
                        Some(b) => ops.push((p.clone(), *b)),
                        None => ops.push((p.clone(), mark(FORGET, 0))),
                    }
                    ops.push((p.clone(), also_of(meta)));
                }
            }
            Err(_) => {
                // Gone, and the destination's copy deleted: unless its directory changed
                // since the sync began (it may have come back and gone again meanwhile).
                let parent = &p[..p.iter().rposition(|&b| b == b'/').unwrap_or(0)];
                match std::fs::symlink_metadata(crate::watch::abs_path(src, parent)) {
                    Ok(pm) if !changed_since(&pm, Some(since)) => {
                        ops.push((p.clone(), mark(DELETED, pm.mtime())));
                    }
                    _ => {
                        // Either still there as it was at the start, or deleted: kept as
                        // an alternative (its state at the start, else a type only), so
                        // that a warm start deletes it if it is still gone then.
                        ops.push((p.clone(), mark(CLEAR_BELOW, 0)));
                        ops.push((p.clone(), mark(FORGET, 0)));
                        let kind = if e.recursive || e.mask & libc::IN_ISDIR != 0 {
                            b'd'
                        } else {
                            b'f'
                        };
                        let b = pre.get(p).copied().unwrap_or(mark(kind, 0));
                        ops.push((p.clone(), also_of(b)));
                    }
                }
            }
        }
    }
    ops
}
