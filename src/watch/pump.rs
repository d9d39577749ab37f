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

The hand-over is bounded ([`MAX_QUEUED`] buffers): if the loop falls that far behind,
the thread stops reading, the kernel queue fills, and its overflow event leads to the
usual rescan. A bigger buffer is no substitute for a loop that keeps up; this one only
absorbs the loop's pauses.

Threads do not survive `fork`: the pump is started after the worker went to the
background ([`Pump::start`] is called by the watcher's `start_pump`, before the loop
registers the fds it waits on). The watchers read events only through it; the kernel
queue holds what happens before it starts.
*/

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};

/// Buffers the loop may be behind before the thread stops reading.
const MAX_QUEUED: usize = 256;
/// One read; everything available is read in a loop of these.
const READ_SIZE: usize = 256 * 1024;
/// A hand-over buffer is sent once it holds this much, even if more is available.
const MAX_BUFFER: usize = 4 << 20;

pub struct Pump {
    rx: Receiver<Vec<u8>>,
    wake: OwnedFd,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Pump {
    /// Starts the thread reading `fd` (non-blocking; it must stay open as long as the
    /// process runs: the watcher owns it and lives until exit).
    pub fn start(fd: RawFd, name: &str) -> io::Result<Pump> {
        let (wake_r, wake_w) = pipe()?;
        let (tx, rx) = sync_channel::<Vec<u8>>(MAX_QUEUED);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut chunk = vec![0u8; READ_SIZE];
                loop {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
                        if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return;
                    }
                    let mut out = Vec::new();
                    loop {
                        let n = unsafe {
                            libc::read(fd, chunk.as_mut_ptr() as *mut libc::c_void, chunk.len())
                        };
                        if n > 0 {
                            out.extend_from_slice(&chunk[..n as usize]);
                            if out.len() >= MAX_BUFFER {
                                break;
                            }
                            continue;
                        }
                        let e = io::Error::last_os_error();
                        if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        if n < 0 && e.kind() != io::ErrorKind::WouldBlock {
                            // The fd is gone (exit): nothing more to read.
                            if out.is_empty() {
                                return;
                            }
                        }
                        break;
                    }
                    if out.is_empty() {
                        continue;
                    }
                    if tx.send(out).is_err() {
                        return;
                    }
                    // EAGAIN (a wake-up is pending already) is fine.
                    unsafe { libc::write(wake_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
                }
            })?;
        Ok(Pump { rx, wake: wake_r })
    }

    /// The fd the event loop waits on (readable when buffers are waiting).
    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Calls `f` with every buffer handed over so far.
    pub fn drain(&self, mut f: impl FnMut(&[u8])) {
        let mut sink = [0u8; 256];
        // Clear the wake-ups first: a buffer sent after this comes with a new one.
        while unsafe { libc::read(self.wake.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) } > 0
        {
        }
        loop {
            match self.rx.try_recv() {
                Ok(buf) => f(&buf),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }
}

/// Calls `f(wd, mask, cookie, name)` for each `struct inotify_event` in `buf`.
pub fn inotify_events(buf: &[u8], mut f: impl FnMut(i32, u32, u32, Option<&[u8]>)) {
    const HDR: usize = 16;
    let mut off = 0;
    while off + HDR <= buf.len() {
        let word = |i: usize| {
            let b = &buf[off + i..off + i + 4];
            [b[0], b[1], b[2], b[3]]
        };
        let wd = i32::from_ne_bytes(word(0));
        let mask = u32::from_ne_bytes(word(4));
        let cookie = u32::from_ne_bytes(word(8));
        let len = u32::from_ne_bytes(word(12)) as usize;
        let end = off + HDR + len;
        if end > buf.len() {
            break;
        }
        let name = (len > 0).then(|| {
            let raw = &buf[off + HDR..end];
            &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())]
        });
        f(wd, mask, cookie, name);
        off = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_hands_over_what_the_fd_delivers() {
        let (r, w) = pipe().unwrap();
        let pump = Pump::start(r.as_raw_fd(), "test-pump").unwrap();
        for i in 0..100u8 {
            unsafe { libc::write(w.as_raw_fd(), [i].as_ptr().cast(), 1) };
        }
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < 100 {
            let mut pfd = libc::pollfd {
                fd: pump.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
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
    fn inotify_records_are_parsed() {
        let mut buf = Vec::new();
        for (wd, mask, cookie, name) in [(1, 2u32, 0u32, &b"ab"[..]), (3, 4, 5, b"")] {
            buf.extend_from_slice(&i32::to_ne_bytes(wd));
            buf.extend_from_slice(&mask.to_ne_bytes());
            buf.extend_from_slice(&cookie.to_ne_bytes());
            let padded = if name.is_empty() { 0 } else { 16 };
            buf.extend_from_slice(&(padded as u32).to_ne_bytes());
            let mut n = name.to_vec();
            n.resize(padded, 0);
            buf.extend_from_slice(&n);
        }
        let mut seen = Vec::new();
        inotify_events(&buf, |wd, mask, cookie, name| {
            seen.push((wd, mask, cookie, name.map(|n| n.to_vec())))
        });
        assert_eq!(seen, [(1, 2, 0, Some(b"ab".to_vec())), (3, 4, 5, None)]);
    }
}
