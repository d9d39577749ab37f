/*!
A running worker's link to its peer: the pair check at start and, while the peer cannot
be reached, again with backoff (syncs to it wait); and, after every sync, the record of
what it delivered (`crate::delivered`'s journal, a full sync being a new agreement
shared with the peer), so that a crash leaves a current record and only real
concurrent changes make a split-brain.
*/

use super::check::{check, CheckError, Outcome, PairSettings};
use super::manifest::{changed_since, meta_of, rule_kind, walk, Manifest, Meta};
use super::peer::Peer;
use crate::delivered::{Record, Version};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// A worker's link to its peer: the pair check (at start, then with backoff while the
/// peer cannot be reached), and the record of what each sync delivered.
pub struct Link {
    pub settings: PairSettings,
    pub ssh: Vec<std::ffi::OsString>,
    pub host: String,
    pub path: Vec<u8>,
    pub rsync: std::path::PathBuf,
    pub rsync_e: std::ffi::OsString,
    journal: Option<crate::delivered::Journal>,
    peer_version: Version,
    /// The paths the rules exclude on either side, as of the last pair check.
    pub excluded: Vec<Vec<u8>>,
    /// The state of each path of the running syncs when they started (and its inode
    /// change time).
    pre: std::collections::HashMap<Vec<u8>, (Meta, (i64, i64))>,
    /// This side's tree as the pair check saw it: the state the initial sync started from.
    initial: Option<Manifest>,
    /// When each running sync to the peer started (seconds, nanoseconds), a little
    /// early: inode change times come from a coarse clock.
    running: Vec<(i64, i64)>,
    /// While the peer cannot be reached: the next try and the wait after it.
    waiting: Option<(std::time::Instant, Duration)>,
}

/// What a pair check says the worker does.
#[derive(Debug)]
pub enum Step {
    /// Sync to the peer; keep these excluded paths out of every sync.
    Go(Vec<Vec<u8>>),
    /// The peer cannot be reached: run, but sync nothing to it until a retry succeeds.
    Waiting,
    SplitBrain(String),
}

/// The first retry of an unreachable peer, and the longest wait between tries.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How much earlier than its start a sync counts as started (the coarse clock's tick).
const CTIME_SLACK: Duration = Duration::from_millis(50);

impl Link {
    #[must_use]
    pub fn new(
        settings: PairSettings,
        ssh: Vec<std::ffi::OsString>,
        host: String,
        path: Vec<u8>,
        rsync: std::path::PathBuf,
        rsync_e: std::ffi::OsString,
    ) -> Link {
        Link {
            settings,
            ssh,
            host,
            path,
            rsync,
            rsync_e,
            journal: None,
            peer_version: Version::default(),
            excluded: Vec::new(),
            pre: Default::default(),
            initial: None,
            running: Vec::new(),
            waiting: None,
        }
    }

    fn peer(&self) -> Peer<'_> {
        Peer {
            ssh: &self.ssh,
            path: &self.path,
            host: &self.host,
            rsync: &self.rsync,
            rsync_e: &self.rsync_e,
        }
    }

    /// The pair check (at start, and at each retry).
    pub fn check(&mut self, src: &Path, rules: &crate::rules::Rules) -> Result<Step, String> {
        match check(&self.settings, src, &self.peer(), rules) {
            Ok(Outcome::Go {
                excluded,
                peer_version,
                local,
            }) => {
                self.waiting = None;
                self.initial = Some(local);
                self.peer_version = peer_version;
                self.excluded = excluded.clone();
                if self.journal.is_none() {
                    let (j, _) = crate::delivered::Journal::open(&self.settings.records())
                        .map_err(|e| format!("the delivered record: {e}"))?;
                    self.journal = Some(j);
                }
                Ok(Step::Go(excluded))
            }
            Ok(Outcome::SplitBrain(m)) => Ok(Step::SplitBrain(m)),
            Err(CheckError::Unreachable(e)) => {
                let wait = self
                    .waiting
                    .map_or(RETRY_FIRST, |(_, w)| (w * 2).min(RETRY_MAX));
                log::warn!(
                    "pair check: the peer {} cannot be reached ({e}); running without syncing to it, next try in {}s",
                    self.host,
                    wait.as_secs()
                );
                self.waiting = Some((std::time::Instant::now() + wait, wait));
                Ok(Step::Waiting)
            }
            Err(CheckError::Failed(e)) => Err(e),
        }
    }

    /// Whether syncs to the peer wait for a pair check.
    #[must_use]
    pub fn waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// When the next pair check is due.
    #[must_use]
    pub fn retry_at(&self) -> Option<std::time::Instant> {
        self.waiting.map(|(t, _)| t)
    }

    /// A sync to the peer starts: the time, and the state of the paths it names.
    pub fn sync_started(&mut self, src: &Path, batch: &crate::batcher::Batch) {
        for e in &batch.entries {
            if e.recursive || e.path.is_empty() {
                continue;
            }
            if let Ok(m) = std::fs::symlink_metadata(crate::watch::abs_path(src, &e.path)) {
                self.pre
                    .entry(e.path.clone())
                    .or_insert((meta_of(&m), (m.ctime(), m.ctime_nsec())));
            }
        }
        let t = std::time::SystemTime::now()
            .checked_sub(CTIME_SLACK)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
        self.running.push((secs, i64::from(t.subsec_nanos())));
    }

    /// A sync to the peer ended: records what it delivered (a full sync is a new
    /// agreement, written here and at the peer).
    pub fn sync_finished(
        &mut self,
        src: &Path,
        rules: &crate::rules::Rules,
        batch: &crate::batcher::Batch,
        ok: bool,
    ) {
        // The earliest start of the syncs running: safe for whichever ended.
        let since = self.running.iter().min().copied();
        if let Some(i) = self.running.iter().position(|t| Some(*t) == since) {
            self.running.swap_remove(i);
        }
        let mut pre = std::collections::HashMap::new();
        for e in &batch.entries {
            if let Some(v) = self.pre.remove(&e.path) {
                pre.insert(e.path.clone(), v);
            }
        }
        let (Some(since), true) = (since, ok) else {
            return;
        };
        if self.journal.is_none() {
            return;
        }
        if batch.is_full() {
            self.agree(src, rules, since);
            return;
        }
        let ops = delivered_ops(src, rules, &batch.entries, since, &pre);
        let j = self.journal.as_mut().expect("checked");
        if let Err(e) = j.append(&ops) {
            log::error!("pair: cannot record what was delivered: {e}");
            return;
        }
        if j.wants_compaction() {
            if let Err(e) = j.compact() {
                log::error!("pair: cannot compact the delivered record: {e}");
            }
        }
    }

    /// After a full sync: both sides are equal (what did not change since it began): a
    /// new agreement, here and at the peer.
    fn agree(&mut self, src: &Path, rules: &crate::rules::Rules, since: (i64, i64)) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        let w = match walk(src, b"", rules, Some(since)) {
            Ok(w) => w,
            Err(e) => {
                log::error!("pair: cannot list {}: {e}", src.display());
                return;
            }
        };
        // A path that changed during the sync: the state before it (as the pair check
        // saw it, or as recorded), and the state now as the alternative.
        let before = match self.initial.take() {
            Some(m) => m,
            None => crate::delivered::load(j.dir())
                .map(|r| r.agreed().0)
                .unwrap_or_default(),
        };
        let mut rec = Record {
            version: Version::next(j.version(), self.peer_version),
            paths: w.manifest.0,
            also: Default::default(),
        };
        for (p, m) in w.recent {
            if let Some(b) = before.0.get(&p) {
                rec.paths.insert(p.clone(), *b);
            }
            rec.also.insert(p, also_of(m));
        }
        if let Err(e) = j.replace(&rec) {
            log::error!("pair: cannot record the agreed state: {e}");
            return;
        }
        self.share(&rec);
    }

    fn share(&mut self, rec: &Record) {
        match self.peer().put_record(&self.settings.peer_records(), rec) {
            Ok(()) => {
                self.peer_version = rec.version;
                log::info!(
                    "pair: agreed state {} recorded here and at {}",
                    rec.version,
                    self.host
                );
            }
            Err(e) => log::error!(
                "pair: agreed state {} recorded here; not at the peer: {e}",
                rec.version
            ),
        }
    }

    /// A clean stop after the final sync: the record, compacted, is shared with the peer.
    pub fn clean_stop(&mut self) {
        if self.waiting() {
            return;
        }
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        match j.compact() {
            Ok(rec) => self.share(&rec),
            Err(e) => log::error!("pair: cannot compact the delivered record: {e}"),
        }
    }
}

/// `m` as an alternative state (its type in upper case).
fn also_of(mut m: Meta) -> Meta {
    m.kind = m.kind.to_ascii_uppercase();
    m
}

/// What a sync of `entries` delivered, as journal records: each path's state now, if
/// its inode did not change since the sync began (`since`) or since `pre` saw it then. A
/// path that changed during the sync may have reached the peer in either state: its
/// state at the start is recorded (none: it did not exist) and the state now as the
/// alternative ([`crate::delivered`]).
fn delivered_ops(
    src: &Path,
    rules: &crate::rules::Rules,
    entries: &[crate::batcher::Entry],
    since: (i64, i64),
    pre: &std::collections::HashMap<Vec<u8>, (Meta, (i64, i64))>,
) -> Vec<(Vec<u8>, Meta)> {
    use crate::delivered::{CLEAR_BELOW, DELETED, FORGET};
    let mark = |kind: u8, mtime: i64| Meta {
        kind,
        size: 0,
        mtime,
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
                let settled = !changed_since(&m, Some(since))
                    || before.is_some_and(|(b, c)| *b == meta && *c == (m.ctime(), m.ctime_nsec()));
                if settled {
                    ops.push((p.clone(), meta));
                } else {
                    match before {
                        Some((b, _)) => ops.push((p.clone(), *b)),
                        None => ops.push((p.clone(), mark(FORGET, 0))),
                    }
                    ops.push((p.clone(), also_of(meta)));
                }
            }
            Err(_) => {
                // Gone, and the peer's copy deleted: unless its directory changed since
                // the sync began (it may have come back and gone again meanwhile).
                let parent = &p[..p.iter().rposition(|&b| b == b'/').unwrap_or(0)];
                match std::fs::symlink_metadata(crate::watch::abs_path(src, parent)) {
                    Ok(pm) if !changed_since(&pm, Some(since)) => {
                        ops.push((p.clone(), mark(DELETED, pm.mtime())));
                    }
                    _ => {
                        // Either still there as it was at the start, or deleted.
                        ops.push((p.clone(), mark(CLEAR_BELOW, 0)));
                        ops.push((p.clone(), mark(FORGET, 0)));
                        if let Some((b, _)) = pre.get(p) {
                            ops.push((p.clone(), also_of(*b)));
                        }
                    }
                }
            }
        }
    }
    ops
}
