/*!
A running worker's link to its peer: the pair check at start and, while the peer cannot
be reached, again with backoff (syncs to it wait); and, after every sync, the record of
what it delivered (`crate::delivered`'s journal, a full sync being a new agreement
shared with the peer), so that a crash leaves a current record and only real
concurrent changes make a split-brain.
*/

use super::check::{check, CheckError, Outcome, PairSettings};
use super::manifest::Manifest;
use super::peer::Peer;
use crate::delivered::{Record, Tracker, Version};
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
    /// The record of what was delivered to the peer (opened at the first pair check
    /// that passes).
    tracker: Option<Tracker>,
    peer_version: Version,
    /// The paths the rules exclude on either side, as of the last pair check.
    pub excluded: Vec<Vec<u8>>,
    /// This side's tree as the pair check saw it: the state the initial sync started from.
    initial: Option<Manifest>,
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
            tracker: None,
            peer_version: Version::default(),
            excluded: Vec::new(),
            initial: None,
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
                if self.tracker.is_none() {
                    let (t, _) = Tracker::open(&self.settings.records(), None, "pair")
                        .map_err(|e| format!("the delivered record: {e}"))?;
                    self.tracker = Some(t);
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
        if let Some(t) = &mut self.tracker {
            t.started(src, batch);
        }
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
        let Some(t) = &mut self.tracker else { return };
        let Some(since) = t.finished(src, rules, batch, ok) else {
            return;
        };
        // A path that changed during the sync: the state before it (as the pair check
        // saw it, or as recorded), and the state now as the alternative.
        if let Some(rec) = t.agree(src, rules, since, self.initial.take(), self.peer_version) {
            self.share(&rec);
        }
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
        let Some(t) = self.tracker.as_mut() else {
            return;
        };
        match t.compact() {
            Ok(rec) => self.share(&rec),
            Err(e) => log::error!("pair: cannot compact the delivered record: {e}"),
        }
    }
}
