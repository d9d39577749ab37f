/*!
Start-up progress: a person who starts the worker on a big tree learns every few seconds
how far the start-up is, once it has run for more than a few seconds; a start that ends
sooner prints nothing of it.

Three stages, one schedule ([`Timing`]): the watch set-up (`setting watches: N
directories so far`, start.rs, the scan calling back every 1,024 directories), a warm
start's compare with the index ([`comparing`]), and the initial sync, one line per
destination every [`Timing::every`]:

```text
initial sync: 41,230 of 200,000 paths, 1.2 GiB of ~3.4 GiB, 18.0 MiB/s, 0:02:10 left, 12 s
```

Only what the worker knows already goes in, so that a small tree is not made slower:
rsync's own `--info=progress2` records when the run prints them (trees of
[`crate::config::PROGRESS_MIN_DIRS`] directories or more, or `progress = true`: they cost
rsync a record per file, which is why small trees go without); else the bytes rsync has
read so far (`rchar` of `/proc/PID/io`, one small read per line; rsync run by the worker
itself, which is the sender), or for a handler the paths handed over to it and those queued
since. No pass over the tree and no output of rsync is added for this.

When the initial sync of a destination ends after progress lines were printed, one last
line gives its totals (from rsync's last record), so the numbers end where they were going.
*/

use super::*;
use std::collections::HashMap;

/// When the first line comes and how often the next ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timing {
    /// The start-up must have run this long (since the worker started) first.
    pub(super) after: Duration,
    pub(super) every: Duration,
}

impl Timing {
    /// The hidden environment variable that sets both (milliseconds, `AFTER,EVERY`), for
    /// the tests: a test's start-up need not last five seconds to be long. Not in the
    /// manual: people have no need for it.
    const ENV: &'static str = "CLSYNC_PROGRESS_TIMING";

    pub(super) fn from_env() -> Timing {
        let default = Timing {
            after: Duration::from_secs(5),
            every: PROGRESS_EVERY,
        };
        let Some(v) = std::env::var_os(Self::ENV) else {
            return default;
        };
        let parsed = v.to_str().and_then(|v| {
            let (a, e) = v.split_once(',')?;
            Some(Timing {
                after: Duration::from_millis(a.trim().parse().ok()?),
                every: Duration::from_millis(e.trim().parse::<u64>().ok()?.max(1)),
            })
        });
        parsed.unwrap_or_else(|| {
            warn!(
                "{}={}: not AFTER_MS,EVERY_MS; ignored",
                Self::ENV,
                v.to_string_lossy()
            );
            default
        })
    }
}

/// What the start-up progress has shown, per destination.
pub(super) struct StartProgress {
    pub(super) timing: Timing,
    /// A line was printed: the end of each initial sync gets its totals.
    pub(super) shown: bool,
    /// The last line (the first destination's), for the state (`progress`).
    pub(super) last: Option<String>,
    /// The last sample of each destination's bytes (for the rate), and when.
    samples: HashMap<usize, (Instant, u64)>,
}

impl StartProgress {
    pub(super) fn new(timing: Timing) -> StartProgress {
        StartProgress {
            timing,
            shown: false,
            last: None,
            samples: HashMap::new(),
        }
    }

    /// When the first line is due for an initial sync starting `now`: once the start-up
    /// has run [`Timing::after`], and one interval into the sync (its first line has
    /// something to say).
    pub(super) fn first_at(&self, started: Instant, now: Instant) -> Instant {
        (started + self.timing.after).max(now + self.timing.every)
    }

    /// The bytes rate since the last sample of destination `tag` (or since `began`).
    fn rate(&mut self, tag: usize, now: Instant, began: Instant, bytes: u64) -> f64 {
        let (t0, b0) = self.samples.get(&tag).copied().unwrap_or((began, 0));
        self.samples.insert(tag, (now, bytes));
        let dt = now.saturating_duration_since(t0).as_secs_f64();
        if dt <= 0.0 {
            0.0
        } else {
            bytes.saturating_sub(b0) as f64 / dt
        }
    }
}

/// An `--info=progress2` record, read: `1,234,567  45%  12.34MB/s  0:00:12 (xfr#12,
/// to-chk=100/2000)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) bytes: u64,
    pub(super) percent: u64,
    /// rsync's estimate of the time left (`0:00:12`).
    pub(super) left: Option<String>,
    /// Paths checked and those known so far (`to-chk` / `ir-chk`), when told.
    pub(super) paths: Option<(u64, u64)>,
    /// Incremental recursion still reads the tree (`ir-chk`): the total grows.
    pub(super) scanning: bool,
}

impl Record {
    pub(super) fn parse(rec: &str) -> Option<Record> {
        let mut f = rec.split_whitespace();
        let bytes = f.next()?.replace(',', "").parse().ok()?;
        let percent = f.next()?.strip_suffix('%')?.parse().ok()?;
        let _rate = f.next();
        let left = f
            .next()
            .filter(|t| t.contains(':') && t.bytes().all(|b| b == b':' || b.is_ascii_digit()))
            .map(str::to_string);
        let mut r = Record {
            bytes,
            percent,
            left,
            paths: None,
            scanning: false,
        };
        for w in f {
            let (c, scanning) = match (w.strip_prefix("to-chk="), w.strip_prefix("ir-chk=")) {
                (Some(c), _) => (c, false),
                (_, Some(c)) => (c, true),
                _ => continue,
            };
            if let Some((left, total)) = c.trim_end_matches(')').split_once('/') {
                if let (Ok(l), Ok(t)) = (left.parse::<u64>(), total.parse::<u64>()) {
                    r.paths = Some((t - l.min(t), t));
                    r.scanning = scanning;
                }
            }
        }
        Some(r)
    }

    /// The total size, from the percentage (rsync's is of the whole transfer); only once
    /// the tree is read and the share is big enough to say something.
    fn total_bytes(&self) -> Option<u64> {
        (!self.scanning && self.percent >= 5).then(|| self.bytes.saturating_mul(100) / self.percent)
    }

    /// `41,230 of 200,000 paths, 1.2 GiB of ~3.4 GiB`.
    fn describe(&self) -> String {
        let mut s = String::new();
        if let Some((done, total)) = self.paths {
            s.push_str(&format!(
                "{} of {} paths{}, ",
                thousands(done),
                thousands(total),
                if self.scanning { " found so far" } else { "" }
            ));
        }
        s.push_str(&bytes(self.bytes));
        match self.total_bytes() {
            Some(t) if self.percent >= 100 => s.push_str(&format!(" of {}", bytes(t))),
            Some(t) => s.push_str(&format!(" of ~{}", bytes(t))),
            None => {}
        }
        s
    }

    /// `, 0:01:54 left` while rsync can tell (the tree read, not done yet).
    fn left(&self) -> String {
        match &self.left {
            Some(l) if !self.scanning && self.percent < 100 => format!(", {l} left"),
            _ => String::new(),
        }
    }
}

/// `1234567` as `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 path`, `1,234 paths`.
fn paths(n: u64) -> String {
    format!("{} path{}", thousands(n), if n == 1 { "" } else { "s" })
}

/// Bytes in binary units: `512 B`, `1.2 KiB`, `3.4 GiB`.
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// The bytes a process has read so far (`rchar` of `/proc/PID/io`): for rsync run by the
/// worker, the sender, that is the source's data read. None when it cannot be read (gone,
/// another user's, or inside the sandbox: it grants no `/proc`, and reading the progress
/// is no reason to widen it).
fn read_bytes(pid: nix::unistd::Pid) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The progress callback of the warm start's compare with the index (a walk of the whole
/// source, before any rsync): `initial sync: comparing with the index: N paths compared
/// (M in the index), 12 s` on the start-up's schedule. It runs in the loop's thread, so
/// it tells itself.
pub(super) fn comparing(
    started: Instant,
    timing: Timing,
    to: &str,
) -> impl FnMut(usize, usize) + '_ {
    let mut next = started + timing.after;
    move |compared, indexed| {
        let now = Instant::now();
        if now < next {
            return;
        }
        next = now + timing.every;
        info!(
            "initial sync: comparing with the index: {} paths compared ({} in the index), {} s{to}",
            thousands(compared as u64),
            thousands(indexed as u64),
            now.saturating_duration_since(started).as_secs()
        );
    }
}

impl Worker {
    /// The start-up's progress lines, while the initial syncs run (see the module doc).
    /// Returns the text for the supervisor's report (the first destination's).
    pub(super) fn startup_progress(&mut self, now: Instant) -> Option<String> {
        let elapsed = now.saturating_duration_since(self.started).as_secs();
        let several = self.targets.len() > 1;
        let own_rsync = self.cfg.mode == Mode::RsyncDirect && self.cfg.handler_args.is_none();
        let mut lines = Vec::new();
        for job in self.runner.jobs() {
            let b = job.batch;
            if !(b.initial || (b.is_full() && !b.verify)) {
                continue;
            }
            let to = if several {
                format!(" to {}", self.targets[job.tag].name)
            } else {
                String::new()
            };
            let what = if b.is_full() {
                "the whole tree".to_string()
            } else {
                format!("{} from the index", paths(b.entries.len() as u64))
            };
            let desc = if let Some(rec) = job.record.as_deref().and_then(Record::parse) {
                let rate = self.start_progress.rate(job.tag, now, job.began, rec.bytes);
                format!(
                    "{}, {}/s{}, {elapsed} s",
                    rec.describe(),
                    bytes(rate as u64),
                    rec.left()
                )
            } else if let Some(read) = job.pid.filter(|_| own_rsync).and_then(read_bytes) {
                let rate = self.start_progress.rate(job.tag, now, job.began, read);
                format!(
                    "{what}, {} read, {}/s, {elapsed} s",
                    bytes(read),
                    bytes(rate as u64)
                )
            } else {
                let queued = self.targets[job.tag].batcher.len();
                format!(
                    "{what} handed over to {}, {} queued since, {elapsed} s",
                    self.runner.name(),
                    paths(queued as u64)
                )
            };
            lines.push((desc, to));
        }
        let report = lines.first().map(|(d, _)| d.clone());
        if report.is_some() {
            self.start_progress.last.clone_from(&report);
        }
        for (desc, to) in lines {
            info!("initial sync: {desc}{to}");
            self.start_progress.shown = true;
        }
        report
    }

    /// The initial sync of destination `f.tag` ended: after progress lines, one with its
    /// totals (when rsync told them).
    pub(super) fn startup_progress_done(&mut self, f: &Finished) {
        if self.ready || !self.start_progress.shown || f.result.is_err() {
            return;
        }
        if !(f.batch.initial || (f.batch.is_full() && !f.batch.verify)) {
            return;
        }
        let Some(rec) = f.progress.as_deref().and_then(Record::parse) else {
            return;
        };
        let elapsed = self.started.elapsed();
        let to = if self.targets.len() > 1 {
            format!(" to {}", self.targets[f.tag].name)
        } else {
            String::new()
        };
        let rate = rec.bytes as f64 / elapsed.as_secs_f64().max(0.001);
        info!(
            "initial sync: {}, {}/s, {} s{to}",
            rec.describe(),
            bytes(rate as u64),
            elapsed.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read() {
        let r = Record::parse("  1,000,000  50%  520.13kB/s    0:00:01 (xfr#10, to-chk=11/22)")
            .unwrap();
        assert_eq!(
            r,
            Record {
                bytes: 1_000_000,
                percent: 50,
                left: Some("0:00:01".into()),
                paths: Some((11, 22)),
                scanning: false
            }
        );
        assert_eq!(r.describe(), "11 of 22 paths, 976.6 KiB of ~1.9 MiB");
        assert_eq!(r.left(), ", 0:00:01 left");
        let r =
            Record::parse("32,768   0%    0.00kB/s    0:00:00 (xfr#1, ir-chk=1009/1011)").unwrap();
        assert_eq!(r.describe(), "2 of 1,011 paths found so far, 32.0 KiB");
        let r =
            Record::parse("2,000,000 100%  492.47kB/s    0:00:03 (xfr#20, to-chk=0/22)").unwrap();
        assert_eq!(r.describe(), "22 of 22 paths, 1.9 MiB of 1.9 MiB");
        assert_eq!(r.left(), "");
        assert_eq!(Record::parse("odd"), None);
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(200_000), "200,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
