/*!
Wakes an rsync whose end-of-run handshake lost its signal, so that a finished sync does not
wait another minute to say so.

A local rsync (`rsync -a SRC/ DST/`) is three processes: the sender (the worker's child),
the generator it forks, and the receiver the generator forks. At the end the generator
sends the receiver SIGUSR2 and waits for it to exit, polling with 20 ms sleeps; the sender
waits for the generator the same way. Since rsync 3.5.0 (Debian 12's security update
3.5.0+ds1-0+deb12u1 among others) the receiver's handler only sets a flag, which the
receiver checks before each `poll()` of its I/O loop. When the signal lands between that
check and the `poll()` — a window of a few instructions, hit now and then on a loaded
machine — the receiver sleeps in `poll()` until its timeout: 60 s without `--timeout`.
The sync has long been complete; only its exit waits. A worker whose queue waits behind
that run (threading off), a stop's final sync and a start's initial sync all took a
minute longer, at random.

Nothing rsync is given avoids it (`--timeout=2` would shorten the wait, and fail slow but
healthy transfers). So a small thread beside each run looks at it every half second after its
first half second and, when the run's processes show exactly that end state twice in a row,
sends the receiver the SIGUSR2 the generator already sent:

- an rsync process (the generator) whose parent is an rsync, both sleeping in
  `nanosleep` and the generator waking all the time (its 20 ms loop: its context switches
  grow between the two looks);
- its child, an rsync (the receiver), asleep in `poll` and not woken once between the two
  looks.

The generator sleeps in that loop only after it has sent its SIGUSR2 (or while exiting on
a signal), so the receiver is then only waiting for the signal it missed: sending it again
is what rsync itself meant to happen, and the run ends at once. Anything else — rsync run
over ssh (the receiver is on the other host), a handler script, a sandbox without /proc —
never shows that shape, and is left alone. A run that is woken logs one line.
*/

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// How long a run has gone before it is first looked at, and the time between two looks.
const EVERY: Duration = Duration::from_millis(500);

/// How deep below the run's own process its rsync processes are looked for (a wrapper
/// script that runs rsync adds a level or two).
const MAX_DEPTH: usize = 5;

/// At most this many processes are read per look: a handler script that runs a crowd of
/// children costs the watch no more than a few hundred small reads a second.
const MAX_PROCS: usize = 64;

/// What a process was doing when looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Doing {
    /// Asleep in `nanosleep`/`clock_nanosleep`.
    Sleeping,
    /// Asleep in `poll`/`ppoll`.
    Polling,
    Other,
}

/// One process of the run, as seen at one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proc {
    pub(crate) pid: i32,
    pub(crate) parent: i32,
    pub(crate) rsync: bool,
    pub(crate) doing: Doing,
    /// Voluntary and involuntary context switches so far.
    pub(crate) switches: u64,
}

/// The receiver to wake, if the two looks (`before`, then `now`) both show the stalled end
/// state described in the module documentation, with the same processes.
pub(crate) fn stalled_receiver(before: &[Proc], now: &[Proc]) -> Option<i32> {
    let find = |set: &[Proc], pid: i32| set.iter().find(|p| p.pid == pid).cloned();
    for recv in now.iter().filter(|p| p.rsync && p.doing == Doing::Polling) {
        let Some(gen) = find(now, recv.parent) else {
            continue;
        };
        let Some(sender) = find(now, gen.parent) else {
            continue;
        };
        if !(gen.rsync && sender.rsync)
            || gen.doing != Doing::Sleeping
            || sender.doing != Doing::Sleeping
        {
            continue;
        }
        let (Some(recv0), Some(gen0), Some(sender0)) = (
            find(before, recv.pid),
            find(before, gen.pid),
            find(before, sender.pid),
        ) else {
            continue;
        };
        let same_shape = recv0.parent == gen.pid
            && gen0.parent == sender.pid
            && recv0.doing == Doing::Polling
            && gen0.doing == Doing::Sleeping
            && sender0.doing == Doing::Sleeping;
        // The receiver slept through; the generator kept looping (every 20 ms: half a
        // second gives it about 25 wake-ups, five is plenty to tell a loop from a sleep).
        if same_shape && recv.switches == recv0.switches && gen.switches >= gen0.switches + 5 {
            return Some(recv.pid);
        }
    }
    None
}

/// Reads a process: None when it is gone or cannot be read (another user's, no /proc).
fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may itself hold spaces or parentheses.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    let parent = f.next()?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let switches = status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        })
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum();
    let doing = if state == "S" {
        doing(pid)
    } else {
        Doing::Other
    };
    Some(Proc {
        pid,
        parent,
        rsync: comm == "rsync",
        doing,
        switches,
    })
}

/// Where a sleeping process sleeps: the system call it is in (`/proc/PID/syscall`, which
/// the parent of the run may read), else the kernel function it waits in.
fn doing(pid: i32) -> Doing {
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) {
        if let Some(nr) = s
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<libc::c_long>().ok())
        {
            return if nr == libc::SYS_nanosleep || nr == libc::SYS_clock_nanosleep {
                Doing::Sleeping
            } else if is_poll(nr) {
                Doing::Polling
            } else {
                Doing::Other
            };
        }
    }
    match std::fs::read_to_string(format!("/proc/{pid}/wchan")) {
        Ok(w) if w.contains("nanosleep") => Doing::Sleeping,
        Ok(w) if w.contains("poll") => Doing::Polling,
        _ => Doing::Other,
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
fn is_poll(nr: libc::c_long) -> bool {
    nr == libc::SYS_poll || nr == libc::SYS_ppoll
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
fn is_poll(nr: libc::c_long) -> bool {
    nr == libc::SYS_ppoll
}

/// The run's process and its descendants (to [`MAX_DEPTH`], at most [`MAX_PROCS`]).
fn look(root: Pid) -> Vec<Proc> {
    let mut out = Vec::new();
    let mut todo = vec![(root.as_raw(), 0usize)];
    while let Some((pid, depth)) = todo.pop() {
        if out.len() >= MAX_PROCS {
            break;
        }
        let Some(p) = read_proc(pid) else { continue };
        out.push(p);
        if depth >= MAX_DEPTH {
            continue;
        }
        let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        else {
            continue;
        };
        todo.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .map(|c| (c, depth + 1)),
        );
    }
    out
}

/// Watches the run whose process is `root` until `done` says it ended (its sender is
/// dropped), waking a stalled receiver as described in the module documentation. `name`
/// is what the log calls the run.
pub(crate) fn watch(root: Pid, name: &str, done: &Receiver<()>) {
    let mut before: Option<Vec<Proc>> = None;
    loop {
        match done.recv_timeout(EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = look(root);
        if let Some(pid) = before.as_deref().and_then(|b| stalled_receiver(b, &now)) {
            log::info!(
                "{name}: its receiver (pid {pid}) missed the signal that ends the run and \
                 would sleep up to a minute (an rsync 3.5 race): woke it"
            );
            let _ = kill(Pid::from_raw(pid), Signal::SIGUSR2);
            before = None;
            continue;
        }
        before = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, parent: i32, doing: Doing, switches: u64) -> Proc {
        Proc {
            pid,
            parent,
            rsync: true,
            doing,
            switches,
        }
    }

    /// Sender 10, generator 11, receiver 12 at the stalled end.
    fn stalled(gen_switches: u64, recv_switches: u64) -> Vec<Proc> {
        vec![
            p(10, 1, Doing::Sleeping, 100 + gen_switches),
            p(11, 10, Doing::Sleeping, gen_switches),
            p(12, 11, Doing::Polling, recv_switches),
        ]
    }

    #[test]
    fn the_stalled_end_is_seen_after_two_looks() {
        assert_eq!(stalled_receiver(&stalled(40, 7), &stalled(90, 7)), Some(12));
    }

    #[test]
    fn a_receiver_that_woke_in_between_is_working() {
        assert_eq!(stalled_receiver(&stalled(40, 7), &stalled(90, 8)), None);
    }

    #[test]
    fn a_generator_that_did_not_loop_is_not_in_its_end_wait() {
        assert_eq!(stalled_receiver(&stalled(40, 7), &stalled(42, 7)), None);
    }

    #[test]
    fn one_look_is_not_enough() {
        assert_eq!(stalled_receiver(&[], &stalled(90, 7)), None);
    }

    #[test]
    fn other_shapes_are_left_alone() {
        // The generator waiting for data (a transfer in progress).
        let mut now = stalled(90, 7);
        now[1].doing = Doing::Polling;
        let mut before = stalled(40, 7);
        before[1].doing = Doing::Polling;
        assert_eq!(stalled_receiver(&before, &now), None);
        // Not rsync (a handler script's children).
        let mut now = stalled(90, 7);
        now[2].rsync = false;
        assert_eq!(stalled_receiver(&stalled(40, 7), &now), None);
        // Only two levels (rsync over ssh: the receiver is on the other host).
        let now = stalled(90, 7)[1..].to_vec();
        let before = stalled(40, 7)[1..].to_vec();
        assert_eq!(stalled_receiver(&before, &now), None);
        // A new receiver under the same pid of the generator (not the same process).
        let mut before = stalled(40, 7);
        before[2].parent = 99;
        assert_eq!(stalled_receiver(&before, &stalled(90, 7)), None);
    }

    #[test]
    fn a_real_run_is_read_with_its_children_and_where_they_sleep() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; :"])
            .spawn()
            .expect("sh");
        let root = Pid::from_raw(i32::try_from(child.id()).unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let procs = look(root);
            let sleeper = procs.iter().find(|p| p.parent == root.as_raw()).cloned();
            match sleeper {
                Some(s) if s.doing == Doing::Sleeping => break (procs, s),
                _ if std::time::Instant::now() > deadline => {
                    panic!("no sleeping child seen: {procs:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        let (procs, sleeper) = seen;
        let sh = procs
            .iter()
            .find(|p| p.pid == root.as_raw())
            .expect("the run");
        assert_eq!(sh.doing, Doing::Other, "sh waits in wait4: {procs:?}");
        assert!(!sh.rsync && !sleeper.rsync);
        let _ = kill(Pid::from_raw(sleeper.pid), Signal::SIGKILL);
    }

    #[test]
    fn this_process_reads_as_a_process() {
        let me = read_proc(std::process::id() as i32).expect("own /proc entry");
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(!me.rsync);
    }
}
