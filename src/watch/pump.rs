/*!
A thread that empties a kernel event queue (inotify, fanotify) as fast as events arrive.

Why: the kernel queue is small (`fs.inotify.max_queued_events`, 16,384 by default) and
an overflow costs a rescan and a full sync. The event loop drains the fd on every
wake-up, but it also prepares syncs: listing 20,000 paths for rsync takes tens of
milliseconds, and at 250,000 events/s that alone fills the kernel queue. So the fd is
read on a thread of its own that does nothing else: everything available is read at
once (until `EAGAIN`, so a rename's two halves stay together) and handed to the loop as
one buffer, with a byte on a pipe to wake it. The loop parses the buffers when it gets
to them; merging paths stays its job.

A second fd may be given to watch for `POLLPRI` only (fanotify's `/proc/self/mountinfo`,
which says so when the mount table changed: fanotify has no unmount event). The thread
only notes that it fired; the loop reads the table when it gets to it ([`Pump::take_pri`]).

The hand-over is bounded ([`MAX_QUEUED`] buffers): if the loop falls that far behind,
the thread stops reading, the kernel queue fills, and its overflow event leads to the
usual rescan. A bigger buffer is no substitute for a loop that keeps up; this one only
absorbs the loop's pauses.

Threads do not survive `fork`: the pump is started after the worker went to the
background ([`Pump::start`] is called by the watcher's `start_pump`, before the loop
registers the fds it waits on). The watchers read events only through it; the kernel
queue holds what happens before it starts.
*/

use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// Buffers the loop may be behind before the thread stops reading.
const MAX_QUEUED: usize = 256;
/// One read; everything available is read in a loop of these.
const READ_SIZE: usize = 256 * 1024;
/// A hand-over buffer is sent once it holds this much, even if more is available.
const MAX_BUFFER: usize = 4 << 20;

pub struct Pump {
    rx: Receiver<Msg>,
    wake: OwnedFd,
    /// Barrier requests to the thread: one byte each.
    ask: OwnedFd,
    /// Barriers asked so far; the thread acknowledges each by its running count.
    asked: Cell<u64>,
    /// The `POLLPRI` fd fired since [`take_pri`](Pump::take_pri) was last asked.
    pri: Cell<bool>,
}

/// What the thread hands over, in the order it read it.
enum Msg {
    /// Bytes read from the fd.
    Events(Vec<u8>),
    /// The fd was read until `EAGAIN` after this many barrier requests had arrived:
    /// everything queued in the kernel before the request has been handed over.
    Barrier(u64),
    /// The `POLLPRI` fd fired.
    Pri,
}

/// How long [`Pump::drain_all`] waits for the thread (it only reads: far less than this
/// even on a loaded machine).
/// Events are read by the reader thread only; draining before it runs is a bug.
pub(crate) fn not_started() -> io::Error {
    io::Error::other("the event reader thread is not started (start_pump)")
}

const BARRIER_TIMEOUT: Duration = Duration::from_secs(30);

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?)
}

/// Reads everything available from the non-blocking `fd`. Stops at `EAGAIN`, or once
/// `cap` bytes are read (the caller comes back for the rest). `Err` when the fd is gone.
fn read_available(fd: RawFd, chunk: &mut [u8], cap: usize) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    loop {
        match nix::unistd::read(fd, chunk) {
            Ok(n) if n > 0 => {
                out.extend_from_slice(&chunk[..n]);
                if out.len() >= cap {
                    return Ok(out);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) if e != Errno::EAGAIN && out.is_empty() => {
                // The fd is gone (exit): nothing more to read.
                return Err(());
            }
            // End of file, `EAGAIN`, or an error after some bytes: hand over what we have.
            Ok(_) | Err(_) => return Ok(out),
        }
    }
}

fn clear(fd: RawFd) -> usize {
    let mut sink = [0u8; 256];
    let mut total = 0;
    loop {
        match nix::unistd::read(fd, &mut sink) {
            Ok(n) if n > 0 => total += n,
            Ok(_) | Err(_) => return total,
        }
    }
}

impl Pump {
    /// Starts the thread reading `fd` (non-blocking; it must stay open as long as the
    /// process runs: the watcher owns it and lives until exit), and noting `POLLPRI` on
    /// `pri` when given (the same goes for its life).
    pub fn start(fd: RawFd, name: &str, pri: Option<RawFd>) -> io::Result<Pump> {
        let (wake_r, wake_w) = pipe()?;
        let (ask_r, ask_w) = pipe()?;
        let (tx, rx) = sync_channel::<Msg>(MAX_QUEUED);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut chunk = vec![0u8; READ_SIZE];
                let mut barriers = 0u64;
                let mut pri = pri.unwrap_or(-1);
                let wake = || {
                    // EAGAIN (a wake-up is pending already) is fine.
                    let _ = nix::unistd::write(&wake_w, &[1u8]);
                };
                loop {
                    let mut pfd = [
                        libc::pollfd {
                            fd,
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: ask_r.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        // A negative fd is skipped by poll.
                        libc::pollfd {
                            fd: pri,
                            events: libc::POLLPRI,
                            revents: 0,
                        },
                    ];
                    // Raw libc: nix's poll needs a `BorrowedFd` for `fd`, which the watcher
                    // owns; nix's "poll" feature is not enabled either.
                    // SAFETY: `pfd` is an array of three initialised pollfd structs, alive
                    // for the call; a closed fd is reported in `revents`, not UB.
                    if unsafe { libc::poll(pfd.as_mut_ptr(), 3, -1) } < 0 {
                        if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return;
                    }
                    let fired = pfd[2].revents;
                    if fired & libc::POLLNVAL != 0 {
                        pri = -1;
                    } else if fired & (libc::POLLPRI | libc::POLLERR) != 0 {
                        if tx.send(Msg::Pri).is_err() {
                            return;
                        }
                        wake();
                    }
                    // Requests are counted before the fd is read: what the kernel queued
                    // before a request is in the reads that follow.
                    let asked = clear(ask_r.as_raw_fd()) as u64;
                    if asked == 0 {
                        match read_available(fd, &mut chunk, MAX_BUFFER) {
                            Ok(out) if out.is_empty() => continue,
                            Ok(out) => {
                                if tx.send(Msg::Events(out)).is_err() {
                                    return;
                                }
                                wake();
                            }
                            Err(()) => return,
                        }
                        continue;
                    }
                    // A barrier: read until the kernel queue is empty, whatever the size.
                    barriers += asked;
                    loop {
                        match read_available(fd, &mut chunk, MAX_BUFFER) {
                            Ok(out) if out.is_empty() => break,
                            Ok(out) => {
                                if tx.send(Msg::Events(out)).is_err() {
                                    return;
                                }
                            }
                            Err(()) => break,
                        }
                    }
                    if tx.send(Msg::Barrier(barriers)).is_err() {
                        return;
                    }
                    wake();
                }
            })?;
        Ok(Pump {
            rx,
            wake: wake_r,
            ask: ask_w,
            asked: Cell::new(0),
            pri: Cell::new(false),
        })
    }

    /// Whether the `POLLPRI` fd fired since the last call (seen by the drains so far).
    pub fn take_pri(&self) -> bool {
        self.pri.replace(false)
    }

    /// The fd the event loop waits on (readable when buffers are waiting).
    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Calls `f` with every buffer handed over so far.
    pub fn drain(&self, mut f: impl FnMut(&[u8])) {
        // Clear the wake-ups first: a buffer sent after this comes with a new one.
        clear(self.wake.as_raw_fd());
        loop {
            match self.rx.try_recv() {
                Ok(Msg::Events(buf)) => f(&buf),
                Ok(Msg::Barrier(_)) => {}
                Ok(Msg::Pri) => self.pri.set(true),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    /// A barrier: calls `f` with every buffer the thread reads until the kernel queue is
    /// empty, which includes every event queued before this call. A stop needs it: the
    /// change made just before the signal may still be in the kernel (the thread not yet
    /// scheduled), and the final sync must see it. Fails only if the thread is gone or
    /// does not answer within [`BARRIER_TIMEOUT`]; what was handed over is handled anyway.
    pub fn drain_all(&self, mut f: impl FnMut(&[u8])) -> io::Result<()> {
        let want = self.asked.get() + 1;
        self.asked.set(want);
        clear(self.wake.as_raw_fd());
        match nix::unistd::write(&self.ask, &[1u8]) {
            // A full pipe holds requests the thread has not read yet: it will.
            Ok(1) | Err(Errno::EAGAIN) => {}
            r => {
                self.drain(f);
                return Err(r.map_or_else(io::Error::from, |_| io::ErrorKind::WriteZero.into()));
            }
        }
        let deadline = Instant::now() + BARRIER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Events(buf)) => f(&buf),
                Ok(Msg::Barrier(n)) if n >= want => return Ok(()),
                Ok(Msg::Barrier(_)) => {}
                Ok(Msg::Pri) => self.pri.set(true),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the event reader thread did not empty the kernel queue within {BARRIER_TIMEOUT:?}"
                        ),
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::other("the event reader thread is gone"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_hands_over_what_the_fd_delivers() {
        let (r, w) = pipe().unwrap();
        let pump = Pump::start(r.as_raw_fd(), "test-pump", None).unwrap();
        for i in 0..100u8 {
            nix::unistd::write(&w, &[i]).unwrap();
        }
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < 100 {
            let mut pfd = libc::pollfd {
                fd: pump.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one initialised pollfd struct, alive for the call.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            pump.drain(|b| got.extend_from_slice(b));
            assert!(std::time::Instant::now() < deadline, "got {}", got.len());
        }
        assert_eq!(got, (0..100u8).collect::<Vec<_>>());
        // Keep the read end open until the pump is dropped with the test.
        drop(w);
        std::mem::forget(r);
    }

    #[test]
    fn a_barrier_hands_over_everything_written_before_it() {
        let (r, w) = pipe().unwrap();
        let pump = Pump::start(r.as_raw_fd(), "test-pump", None).unwrap();
        let mut got = Vec::new();
        for round in 0..200u32 {
            let bytes = round.to_ne_bytes();
            nix::unistd::write(&w, &bytes).unwrap();
            // At once: the thread has usually not read it yet.
            pump.drain_all(|b| got.extend_from_slice(b)).unwrap();
            assert_eq!(got.len(), 4 * (round as usize + 1), "round {round}");
        }
        let want: Vec<u8> = (0..200u32).flat_map(|i| i.to_ne_bytes()).collect();
        assert_eq!(got, want);
        drop(w);
        std::mem::forget(r);
    }
}
