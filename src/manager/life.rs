/*!
When a worker that ended is started again: the restart policy as a pure state machine.

Like the batcher, every decision takes `now` as an argument, so the tests drive it with
made-up instants. The rules, in order:

- a stop that was asked for ends in `stopped`;
- exit status 2 means the worker's configuration is invalid: restarting cannot help, so
  the instance is `failed` at once, with the reason, and stays so until started again;
- `restart = "never"`: `stopped` after a clean exit, `failed` otherwise;
  `"on-failure"` (the default): restart unless the exit was clean; `"always"`: restart;
- a restart waits `restart-delay`, doubled for each restart in a row up to
  `restart-max-delay`; a worker that ran longer than `restart-max-delay` before it ended
  starts the series anew;
- `start-limit-burst` starts within `start-limit-interval`: `failed` ("start limit
  reached"), as systemd does, so a worker that keeps dying does not spin forever.
*/

use crate::profile::ProfileValues;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// `restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    #[default]
    OnFailure,
    Always,
    Never,
}

/// An instance's restart policy (from its profile's keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub restart: Restart,
    pub delay: Duration,
    pub max_delay: Duration,
    pub burst: u32,
    pub interval: Duration,
    /// How long a stopping worker may take for its final sync.
    pub stop_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            restart: Restart::OnFailure,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            burst: 5,
            interval: Duration::from_secs(600),
            stop_timeout: Duration::from_secs(90),
        }
    }
}

impl Policy {
    /// The policy a profile sets (defaults for what it does not).
    #[must_use]
    pub fn of(v: &ProfileValues) -> Policy {
        let d = Policy::default();
        Policy {
            restart: match v.restart.as_deref() {
                Some("always") => Restart::Always,
                Some("never") => Restart::Never,
                _ => Restart::OnFailure,
            },
            delay: v.restart_delay.unwrap_or(d.delay),
            max_delay: v.restart_max_delay.unwrap_or(d.max_delay),
            burst: v.start_limit_burst.unwrap_or(d.burst).max(1),
            interval: v.start_limit_interval.unwrap_or(d.interval),
            stop_timeout: v.stop_timeout.unwrap_or(d.stop_timeout),
        }
    }
}

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    #[must_use]
    pub fn clean(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => {
                let name = nix::sys::signal::Signal::try_from(*s)
                    .map_or_else(|_| s.to_string(), |s| s.as_str().to_string());
                write!(f, "killed by {name}")
            }
        }
    }
}

/// How a worker ended, with its own last error line when it left one: `exit status 3:
/// error: ...`, or `killed by SIGKILL` alone (a worker killed says nothing, and a dangling
/// `: ` reads as if something was cut off).
#[must_use]
pub fn ended_with(exit: Exit, why: &str) -> String {
    let why = why.trim();
    if why.is_empty() {
        exit.to_string()
    } else {
        format!("{exit}: {why}")
    }
}

/// What to do after a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Stay stopped (asked for, or a clean exit without restart).
    Stopped,
    /// Start again at this instant.
    Restart(Instant),
    /// No more restarts until an operator starts it again.
    Failed(String),
}

/// The restart bookkeeping of one instance.
#[derive(Debug, Clone)]
pub struct Life {
    pub policy: Policy,
    starts: VecDeque<Instant>,
    delay: Duration,
    /// Restarts done by the policy (not by an operator).
    pub restarts: u32,
}

impl Life {
    #[must_use]
    pub fn new(policy: Policy) -> Life {
        Life {
            delay: policy.delay,
            policy,
            starts: VecDeque::new(),
            restarts: 0,
        }
    }

    /// An operator started it: the series and the start limit begin anew.
    pub fn reset(&mut self) {
        self.starts.clear();
        self.delay = self.policy.delay;
    }

    /// A worker was started now.
    pub fn started(&mut self, now: Instant) {
        self.starts.push_back(now);
        while self.starts.len() > self.policy.burst as usize {
            self.starts.pop_front();
        }
    }

    /// Decides what follows the end of a worker that ran for `ran`. `stopping`: the end
    /// was asked for. `why` describes the end for a `failed` state.
    pub fn ended(
        &mut self,
        now: Instant,
        ran: Duration,
        exit: Exit,
        stopping: bool,
        why: &str,
    ) -> Next {
        if stopping {
            return Next::Stopped;
        }
        if exit == Exit::Code(2) {
            let what = format!("configuration error ({exit})");
            return Next::Failed(match why.trim() {
                "" => what,
                why => format!("{what}: {why}"),
            });
        }
        let restart = match self.policy.restart {
            Restart::Never => false,
            Restart::OnFailure => !exit.clean(),
            Restart::Always => true,
        };
        if !restart {
            return if exit.clean() {
                Next::Stopped
            } else {
                Next::Failed(ended_with(exit, why))
            };
        }
        let recent = self
            .starts
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= self.policy.interval)
            .count();
        if recent >= self.policy.burst as usize {
            return Next::Failed(format!(
                "start limit reached: {recent} starts within {}s (last: {})",
                self.policy.interval.as_secs(),
                ended_with(exit, why)
            ));
        }
        if ran > self.policy.max_delay {
            self.delay = self.policy.delay;
        }
        let wait = self.delay;
        self.delay = (self.delay * 2).min(self.policy.max_delay);
        self.restarts += 1;
        Next::Restart(now + wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn policy() -> Policy {
        Policy {
            restart: Restart::OnFailure,
            delay: secs(1),
            max_delay: secs(8),
            burst: 5,
            interval: secs(100),
            stop_timeout: secs(90),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets_after_a_long_run() {
        let t0 = Instant::now();
        let mut l = Life::new(Policy {
            burst: 100,
            ..policy()
        });
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            l.started(now);
            match l.ended(now, secs(0), Exit::Signal(9), false, "") {
                Next::Restart(at) => {
                    waits.push((at - now).as_secs());
                    now = at;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
        l.started(now);
        assert_eq!(
            l.ended(now, secs(9), Exit::Code(1), false, ""),
            Next::Restart(now + secs(1)),
            "a long run starts the series anew"
        );
        assert_eq!(l.restarts, 7);
    }

    #[test]
    fn start_limit_fails_the_instance() {
        let t0 = Instant::now();
        let mut l = Life::new(policy());
        let mut now = t0;
        for i in 0..5 {
            l.started(now);
            let next = l.ended(now, secs(0), Exit::Code(1), false, "boom");
            if i < 4 {
                assert!(matches!(next, Next::Restart(_)), "{next:?}");
                now += secs(10);
            } else {
                match next {
                    Next::Failed(why) => {
                        assert!(why.contains("start limit reached: 5 starts"), "{why}")
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        // Starts older than the interval do not count; an operator's start resets.
        l.reset();
        l.started(now + secs(200));
        assert!(matches!(
            l.ended(now + secs(200), secs(0), Exit::Code(1), false, ""),
            Next::Restart(_)
        ));
    }

    #[test]
    fn configuration_errors_and_policies() {
        let now = Instant::now();
        let mut l = Life::new(policy());
        l.started(now);
        assert_eq!(
            l.ended(now, secs(0), Exit::Code(2), false, "bad key"),
            Next::Failed("configuration error (exit status 2): bad key".into())
        );
        assert_eq!(
            l.ended(now, secs(0), Exit::Code(1), true, ""),
            Next::Stopped
        );
        assert_eq!(
            l.ended(now, secs(0), Exit::Code(0), false, ""),
            Next::Stopped
        );
        let mut always = Life::new(Policy {
            restart: Restart::Always,
            ..policy()
        });
        assert!(matches!(
            always.ended(now, secs(0), Exit::Code(0), false, ""),
            Next::Restart(_)
        ));
        let mut never = Life::new(Policy {
            restart: Restart::Never,
            ..policy()
        });
        assert!(matches!(
            never.ended(now, secs(0), Exit::Signal(9), false, ""),
            Next::Failed(w) if w == "killed by SIGKILL"
        ));
    }

    /// A worker that said nothing before it ended: its end alone, no dangling colon.
    #[test]
    fn an_end_without_words_has_no_dangling_colon() {
        assert_eq!(ended_with(Exit::Signal(9), ""), "killed by SIGKILL");
        assert_eq!(ended_with(Exit::Code(1), " \n"), "exit status 1");
        assert_eq!(
            ended_with(Exit::Code(3), "error: source /x: gone"),
            "exit status 3: error: source /x: gone"
        );
        let mut l = Life::new(policy());
        let now = Instant::now();
        assert_eq!(
            l.ended(now, secs(0), Exit::Code(2), false, ""),
            Next::Failed("configuration error (exit status 2)".into())
        );
        for _ in 0..5 {
            l.started(now);
        }
        assert!(matches!(
            l.ended(now, secs(0), Exit::Signal(15), false, ""),
            Next::Failed(w) if w.ends_with("(last: killed by SIGTERM)")
        ));
    }
}
