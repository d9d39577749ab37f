/*!
The control socket's connections: accepting, reading one request line, writing replies,
and the bounds that keep a flood or a stuck client from taking the manager down; the
commands themselves are in [`super::control`].

The socket bounds its clients, so that neither a flood nor a stuck client takes the
manager down with it (docs/security.md, "Control socket"):

- a client that has not sent a complete request within the idle timeout ([`Limits::idle`],
  10 s, `CLSYNC_MANAGER_IDLE_MS`) is closed with a one-line error;
- at most [`Limits::max_clients`] connections at once (64, `CLSYNC_MANAGER_MAX_CLIENTS`;
  fewer if the descriptor budget is smaller). At the cap a new connection evicts the
  oldest one that has not sent a full request (it gets a one-line error), so a flood of
  idle connections cannot keep `status` out; only when every slot is a waiting `stop`
  is the newcomer refused;
- the descriptors never exceed a budget taken from `RLIMIT_NOFILE`, and a spare
  descriptor is kept so that on `EMFILE` the pending connections are still taken off the
  queue and told why (mio is edge-triggered: a listener left with pending connections
  would not wake up again);
- replies are written without blocking: what does not fit in the socket waits in the
  client's buffer for the socket to be writable (with the same timeout between
  progress), so a client that does not read stalls nobody.
*/

use super::control::Handled;
use super::daemon::Daemon;
use super::protocol::{json_text, Request, Response, MAX_REQUEST};
use log::{debug, error, warn};
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Token};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// The environment variable for the idle timeout, in milliseconds.
pub(crate) const IDLE_ENV: &str = "CLSYNC_MANAGER_IDLE_MS";
/// The environment variable for the connection cap.
pub(crate) const MAX_CLIENTS_ENV: &str = "CLSYNC_MANAGER_MAX_CLIENTS";
/// Descriptors the manager needs besides clients and workers: standard streams, epoll,
/// the signal pipe, the listener, the lock, the spare one, a state or profile file being
/// read or written, a worker being spawned.
const FIXED_FDS: usize = 16;
/// Descriptors of one running worker: three pipes, its instance lock, and a margin.
const FDS_PER_WORKER: usize = 5;
/// How often a flood of refused or evicted connections is logged (the rest go to debug).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The bounds of the control socket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// How long a client may take to send a complete request (and, for a reply that does
    /// not fit in the socket, the longest pause in reading it).
    pub(super) idle: Duration,
    /// The most connections at once (clients and waiters).
    pub(super) max_clients: usize,
    /// Descriptors the manager allows itself: the soft `RLIMIT_NOFILE` less a headroom.
    pub(super) fd_budget: usize,
}

impl Limits {
    /// The limits from the environment and `RLIMIT_NOFILE` (whose soft value is raised to
    /// the hard one first). A value that is not a positive number is refused.
    pub(super) fn from_env() -> Result<Limits, String> {
        let num = |var: &str, default: u64| -> Result<u64, String> {
            match std::env::var(var) {
                Err(_) => Ok(default),
                Ok(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{var}={v:?}: expected a positive whole number")),
            }
        };
        let idle = Duration::from_millis(num(IDLE_ENV, 10_000)?);
        let max_clients = usize::try_from(num(MAX_CLIENTS_ENV, 64)?).unwrap_or(usize::MAX);
        let soft = raise_nofile();
        // A quarter of the limit (8 to 64) stays free for what is not counted.
        let headroom = (soft / 4).clamp(8, 64);
        Ok(Limits {
            idle,
            max_clients,
            fd_budget: soft.saturating_sub(headroom),
        })
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one; returns the soft limit now in force.
fn raise_nofile() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct owned by this frame.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r = want;
            }
        }
    }
    usize::try_from(r.rlim_cur).unwrap_or(usize::MAX)
}

/// The spare descriptor given up on `EMFILE` to take a connection off the queue.
pub(super) fn spare_fd() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// A client waiting for an instance to stop (or to start again).
pub(super) struct Waiter {
    pub(super) stream: UnixStream,
    pub(super) name: String,
    pub(super) restart: bool,
}

/// A connection: reading its request, or (`out` not empty) writing a reply that did not
/// fit in the socket at once.
pub(super) struct Client {
    pub(super) stream: UnixStream,
    pub(super) buf: Vec<u8>,
    /// The rest of the reply to write; empty while the request is read.
    pub(super) out: Vec<u8>,
    /// When it was accepted: the oldest is evicted first.
    pub(super) since: Instant,
    /// Closed at this time: no complete request yet, or no progress in the reply.
    pub(super) deadline: Instant,
}

impl Client {
    fn writing(&self) -> bool {
        !self.out.is_empty()
    }
}

/// Whether a peer with these credentials may use the socket.
fn permitted(uid: u32, pid: i32, group: Option<u32>) -> bool {
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        return true;
    }
    let Some(g) = group else { return false };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().any(|l| {
        (l.starts_with("Groups:") || l.starts_with("Gid:"))
            && l.split_whitespace().skip(1).any(|x| x == g.to_string())
    })
}

/// `resp` as one line of JSON.
fn line_of(resp: &Response) -> Vec<u8> {
    let mut line = json_text(resp, false).into_bytes();
    line.push(b'\n');
    line
}

/// Writes what the socket takes now of `buf`; returns how much, or `None` when the peer
/// is gone.
fn write_some(stream: &mut UnixStream, buf: &[u8]) -> Option<usize> {
    let mut n = 0;
    while n < buf.len() {
        match stream.write(&buf[n..]) {
            Ok(0) => return None,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(n)
}

/// A last word to a connection being closed: one error line if the socket takes it now
/// (never waiting), then the connection is closed.
fn say(mut stream: UnixStream, error: &str) {
    let _ = write_some(&mut stream, &line_of(&Response::err(error)));
}

/// Whether a connection waits on the listener (poll(2) needs no new descriptor).
fn pending(listener: &UnixListener) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
}

/// A duration as the docs write it: `10s`, `200ms`.
fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Daemon {
    /// Takes every pending connection (until `WouldBlock`: the listener is
    /// edge-triggered).
    pub(super) fn accept(&mut self, listener: &UnixListener) {
        loop {
            match listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // accept(2) takes a descriptor before it looks at the queue: EMFILE
                    // says nothing is free, not that a connection waits. Evicting then
                    // would close the client just taken before it could send its request.
                    if !pending(listener) {
                        return;
                    }
                    // Out of descriptors (the budget is an estimate): close the oldest
                    // idle connection and try again, as at the cap.
                    if self.evict_oldest("too many connections (out of file descriptors); closed") {
                        continue;
                    }
                    // None: give up the spare descriptor to take the connection off the
                    // queue and say why, then take the spare again.
                    let Some(spare) = self.spare.take().or_else(spare_fd) else {
                        error!("control socket: {e}; no spare descriptor left: pending connections wait");
                        return;
                    };
                    drop(spare);
                    match listener.accept() {
                        Ok((stream, _)) => {
                            self.loud(&format!("control socket: {e}: a connection refused"));
                            say(
                                stream,
                                &format!("clsync-manager is out of file descriptors ({e}); closed"),
                            );
                            // The connection is closed: its descriptor is the spare again.
                            self.spare = spare_fd();
                        }
                        // Nothing pending any more, or the descriptor freed did not help
                        // (ENFILE: another process took it): stop rather than spin.
                        Err(_) => {
                            self.spare = spare_fd();
                            return;
                        }
                    }
                }
                Err(e) => {
                    error!("control socket: {e}");
                    return;
                }
            }
        }
    }

    /// A warning, at most one each [`WARN_EVERY`] (a flood would fill the log); the rest
    /// go to debug.
    fn loud(&mut self, msg: &str) {
        let now = Instant::now();
        if self.socket_warned.is_some_and(|t| now < t + WARN_EVERY) {
            debug!("{msg}");
        } else {
            warn!(
                "{msg} (more of these within {}s are logged at debug level)",
                WARN_EVERY.as_secs()
            );
            self.socket_warned = Some(now);
        }
    }

    /// How many connections may be open now: the configured cap, or fewer if the
    /// descriptor budget less the running workers' share is smaller (never none, so that
    /// `status` can always be asked).
    pub(super) fn client_cap(&self) -> usize {
        let workers = self.running_workers();
        let left = self
            .limits
            .fd_budget
            .saturating_sub(FIXED_FDS + FDS_PER_WORKER * workers);
        self.limits.max_clients.min(left).max(1)
    }

    /// How many instances have a worker running (each holds [`FDS_PER_WORKER`]).
    fn running_workers(&self) -> usize {
        self.instances
            .values()
            .filter(|i| i.worker.is_some())
            .count()
    }

    /// Whether one more worker fits in the descriptor budget with room left for one
    /// client (so that `status` can still be asked); the error says what to raise.
    pub(super) fn worker_fits(&self) -> Result<(), String> {
        let workers = self.running_workers();
        let need = FIXED_FDS + FDS_PER_WORKER * (workers + 1) + 1;
        if need <= self.limits.fd_budget {
            return Ok(());
        }
        Err(format!(
            "out of file descriptors: {workers} workers run, each takes {FDS_PER_WORKER} of the manager's, and its budget is {} (the soft RLIMIT_NOFILE less a quarter kept free); raise LimitNOFILE= in the unit (or ulimit -n) and start it again",
            self.limits.fd_budget
        ))
    }

    /// A new connection: checked, made room for, and read at once (a command-line client
    /// has usually sent its request already: answered before a flood can evict it).
    fn admit(&mut self, stream: UnixStream) {
        let cred =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials);
        let ok = cred
            .as_ref()
            .is_ok_and(|c| permitted(c.uid(), c.pid(), self.opts.socket_group));
        if !ok {
            let who = cred.map_or("unknown".into(), |c| format!("uid {}", c.uid()));
            self.loud(&format!("control socket: refused a client ({who})"));
            say(
                stream,
                &format!("permission denied: {who} may not control clsync-manager (root and the socket group only)"),
            );
            return;
        }
        let cap = self.client_cap();
        if self.clients.len() + self.waiters.len() >= cap {
            let too_many = format!("too many connections ({cap}); closed");
            if !self.evict_oldest(&too_many) {
                self.loud(&format!(
                    "control socket: {too_many}: every connection waits for a stop"
                ));
                say(stream, &too_many);
                return;
            }
        }
        if let Some(t) = self.keep(stream, Interest::READABLE, Vec::new()) {
            self.read_client(t);
        }
    }

    /// Closes the oldest connection that has not sent a request (it is told `why`), else
    /// the oldest reply being written (to a client that does not read it); waiters are
    /// never evicted. Whether there was one.
    fn evict_oldest(&mut self, why: &str) -> bool {
        let victim = self
            .clients
            .iter()
            .min_by_key(|(_, c)| (c.writing(), c.since))
            .map(|(t, _)| *t);
        let Some(t) = victim else {
            return false;
        };
        let mut c = self.clients.remove(&t).expect("listed");
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.loud(&format!(
            "control socket: {why}: the oldest idle connection"
        ));
        if !c.writing() {
            say(c.stream, why);
        }
        true
    }

    /// An event on a client's connection.
    pub(super) fn client_event(&mut self, t: Token) {
        match self.clients.get(&t) {
            Some(c) if c.writing() => self.flush(t),
            Some(_) => self.read_client(t),
            None => {}
        }
    }

    /// Writes more of a reply; closes the connection when it is all written or the peer
    /// is gone.
    fn flush(&mut self, t: Token) {
        let Some(c) = self.clients.get_mut(&t) else {
            return;
        };
        match write_some(&mut c.stream, &c.out) {
            Some(n) if n < c.out.len() => {
                c.out.drain(..n);
                if n > 0 {
                    c.deadline = Instant::now() + self.limits.idle;
                }
            }
            _ => {
                let mut c = self.clients.remove(&t).expect("client");
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
        }
    }

    /// Sends `resp` and closes the connection, without waiting: what the socket does not
    /// take now is written as the client reads it.
    pub(super) fn reply(&mut self, stream: UnixStream, resp: &Response) {
        self.reply_line(stream, &line_of(resp));
    }

    /// [`reply`](Self::reply) with the response line written out already.
    pub(super) fn reply_line(&mut self, mut stream: UnixStream, line: &[u8]) {
        let Some(n) = write_some(&mut stream, line) else {
            return;
        };
        if n == line.len() {
            return;
        }
        self.keep(stream, Interest::WRITABLE, line[n..].to_vec());
    }

    /// Registers a connection for `interest` and keeps it as a client with `out` still to
    /// write and the idle deadline from now; `None` (the connection dropped) when epoll
    /// refuses it.
    fn keep(&mut self, mut stream: UnixStream, interest: Interest, out: Vec<u8>) -> Option<Token> {
        let t = self.token();
        self.poll
            .registry()
            .register(&mut stream, t, interest)
            .ok()?;
        let now = Instant::now();
        self.clients.insert(
            t,
            Client {
                stream,
                buf: Vec::new(),
                out,
                since: now,
                deadline: now + self.limits.idle,
            },
        );
        Some(t)
    }

    /// The earliest client deadline, for the loop's timeout.
    pub(super) fn client_deadline(&self) -> Option<Instant> {
        self.clients.values().map(|c| c.deadline).min()
    }

    /// Closes the clients whose time is up: one that has not sent its request is told so.
    pub(super) fn expire_clients(&mut self, now: Instant) {
        let due: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            let mut c = self.clients.remove(&t).expect("listed");
            let _ = self.poll.registry().deregister(&mut c.stream);
            if c.writing() {
                debug!(
                    "control socket: a client read nothing of its reply for {}: closed",
                    show(self.limits.idle)
                );
            } else {
                debug!(
                    "control socket: a client idle for {}: closed",
                    show(self.limits.idle)
                );
                say(
                    c.stream,
                    &format!(
                        "idle for {} without a complete request; closed",
                        show(self.limits.idle)
                    ),
                );
            }
        }
    }

    fn read_client(&mut self, t: Token) {
        let Some(c) = self.clients.get_mut(&t) else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let mut closed = false;
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
            if c.buf.len() > MAX_REQUEST {
                break;
            }
        }
        let line_end = c.buf.iter().position(|&b| b == b'\n');
        if line_end.is_none() && !closed && c.buf.len() <= MAX_REQUEST {
            return;
        }
        let mut c = self.clients.remove(&t).expect("client");
        let _ = self.poll.registry().deregister(&mut c.stream);
        let line = match line_end {
            Some(n) => c.buf[..n].to_vec(),
            None if c.buf.len() > MAX_REQUEST => {
                self.reply(c.stream, &Response::err("request too long"));
                return;
            }
            None => c.buf.clone(),
        };
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                self.reply(c.stream, &Response::err(format!("malformed request: {e}")));
                return;
            }
        };
        debug!("control: {req:?}");
        match self.handle(&req) {
            Handled::Now(resp) => self.reply(c.stream, &resp),
            Handled::Line(line) => self.reply_line(c.stream, &line),
            Handled::Later { name, restart } => self.waiters.push(Waiter {
                stream: c.stream,
                name,
                restart,
            }),
        }
    }
}
