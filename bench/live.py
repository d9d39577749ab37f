#!/usr/bin/env python3
"""Live-sync benchmark for clsync (Python 3.11 stdlib only; started by bench/live.sh).

Per run, on a warm page cache, with fresh destination directories:
  a. inotifywait -r -m SRC: time from start until "Watches established." on stderr;
  b. rsync -a SRC/ DST1/: wall time;
  c. clsync SRC DST2 --status-file F (short form, default delays): time from start until the
     status file reads `running` AND a probe file written into SRC after that has arrived in
     DST2 with the right content ("time until live"); the probe latency on its own; VmHWM,
     inotify watch count, then SIGTERM and exit code.
Reference = a + b. Targets: median(time until live / reference) <= RATIO_TARGET [1.2], median
VmHWM < 20 MiB; with peers also: time until live lower than each peer's (lsyncd, C clsync)
and VmHWM <= RSS_VS_LSYNCD [0.5] x lsyncd's.

Our daemon is measured in two variants, in every part, one after the other on the same tree:
  clsync      the argv above (inotify, the default monitor);
  clsync-fan  the same argv plus `--monitor fanotify` (named "clsync --monitor fanotify" in
              the tables). fanotify needs CAP_SYS_ADMIN: when not root the variant is skipped
              (with a log line); --no-fanotify turns it off. It holds no inotify watch per
              directory by design (one on the root at most), so instead of "watches ==
              DIRS+1" its `ready:` log line must report fanotify file-system mark(s) (else
              it fell back to inotify: FAIL). It must meet
              the same targets as clsync, in each part; its verdicts are labelled "fanotify".

With --with-peers, lsyncd and the original C clsync are measured the same way when installed
(bench/live.sh installs missing ones from Debian packages first when run as root).

More parts (all by default; `--only=live,idle,latency,burst,events` picks some):
  idle:    in the same daemon instance as c., after the probe: 2 s to settle, then 10 s of
           nothing: VmRSS at the end, own CPU (utime+stime of /proc/PID/stat, children
           excluded) and wake-ups (voluntary_ctxt_switches summed over /proc/PID/task/*).
           Reference: `inotifywait -r -m SRC` idle the same way. Target: 0 wake-ups.
  latency: each daemon started again at minimal delays (clsync -t 0 -w 0, lsyncd delay = 0,
           C clsync -t 0 -w 0) with an rsync wrapper that logs each invocation; 20 times:
           write one new small file into the deepest directory, time until it is in DST
           with the right content (polled every ms). Reference: plain `rsync -a FILE DST/`
           of such a file, timed the same way (until the file is there). Target: median
           ratio <= LAT_TARGET [1.5].
  burst:   in that same instance: 20,000 new files (200 dirs x 100, 100-300 bytes) created
           as fast as Python can under a new directory; time from the burst's end until DST
           holds every file with the right size (polled every 20 ms), files still missing
           after BURST_TIMEOUT [max(120, 30 x reference)] s, rsync runs started (wrapper
           log). Reference: plain `rsync -a` of the same files, from its start until they are
           all there. Targets: 0 lost, ratio <= BURST_TARGET [1.5], rsync runs <=
           BURST_RUNS_FRACTION [0.1] x lsyncd's or 1, the floor (when lsyncd is measured).
  events:  how fast the event loop handles inotify events, and whether the kernel queue
           overflows. For each daemon: SRC/zz-events-KIND-RUN with 100 dirs x 200 empty
           files is created before it starts (so it is watched and synced initially); the
           daemon at rare syncs (clsync -t 1 -w 1, lsyncd delay = 1, C clsync -t 1 -w 1),
           ready as in c.; once its CPU is quiet, EVENTS_WORKERS [1] forked processes call
           os.utime() over their shares of the files at EVENTS_RATE [200000] calls/s in
           total (0: as fast as they can) for EVENTS_SECONDS [3] s (each call
           one IN_ATTRIB on another path than the last: inotify merges only identical
           consecutive events); then its CPU is polled every 50 ms until it stops rising (at
           most 10 s). Figures: events generated per second, the daemon's own CPU
           (utime+stime of /proc/PID/stat over all threads, from before the storm until idle
           again), CPU us per event = CPU / events, the capacity of one core = 1e6 / us per
           event (a lower bound when CPU < one clock tick), and a queue overflow = a line
           with "overflow" in its log (ours: "... queue overflowed ...", lsyncd: "OVERFLOW
           in event queue"; the C clsync logs none). fs.inotify.max_queued_events is
           printed. The tree is removed once the daemon is stopped. Targets (clsync and the
           fanotify variant): capacity >= EVENTS_TARGET [200000] events/s, no overflow.
  --scale: the tree is 200,000 directories x 5 files (overrides DIRS, FILES_PER_DIR).

Environment (defaults in brackets):
  CLSYNC_BIN     the clsync binary to measure (set by bench/live.sh)
  DIRS [20000]   directories in the tree (the root not counted); expected watches = DIRS+1
  FILES_PER_DIR [5]  files in each directory, FILE_MIN..FILE_MAX [200..600] bytes each
  FANOUT [100]   the tree is SRC/dNNN/sNN: each top directory dNNN holds FANOUT-1 subdirs
  RUNS [3]       repetitions; the report gives the median
  BENCH_DIR [/tmp]   parent of the temp dir
  QUIET_BUSY [0.15], QUIET_WAIT [300]  before each run, wait up to QUIET_WAIT s until the
                 machine is at most QUIET_BUSY busy (other builds/tests skew the figures)
  TIMEOUT [900]  seconds before a daemon that is not live is given up on
  KEEP [0]       1 = keep the temp dir (tree, logs) for inspection
  BENCH_JSON     write all raw figures to this JSON file
  RATIO_TARGET [1.2], RSS_TARGET_MIB [20], RSS_VS_LSYNCD [0.5]  live-part targets
  LAT_TARGET [1.5], BURST_TARGET [1.5], BURST_RUNS_FRACTION [0.1], BURST_TIMEOUT  see above
  EVENTS_SECONDS [3], EVENTS_TARGET [200000]  the events part
  CLSYNC_ARGS    extra options for clsync (e.g. "-t 0.2 -w 0.2"); default none, i.e. the
                 short form's default delays
  CLSYNC_REV     revision to print for the binary (default: git describe of this checkout)
  CLSYNC_C_BIN   the original C clsync (default: the first `clsync` on PATH, else
                 /usr/bin/clsync, whose `-V` says `clsync v0.`: the C one, not ours)
  LSYNCD_BIN     lsyncd (default: `lsyncd` on PATH)

Exit code: 0 all targets met (those of clsync and its fanotify variant; peers are only
reported), 1 a target missed, 2 error (a daemon failed, never became live, a probe never
arrived, or clsync / its fanotify variant exited non-zero on SIGTERM or during the events
part).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

POLL = 0.005  # seconds between polls of a status file / probe file / log


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_float(name: str, default: float) -> float:
    v = os.environ.get(name, "")
    return float(v) if v.strip() else default


CFG = {
    "dirs": env_int("DIRS", 20000),
    "files_per_dir": env_int("FILES_PER_DIR", 5),
    "fanout": max(2, env_int("FANOUT", 100)),
    "file_min": env_int("FILE_MIN", 200),
    "file_max": env_int("FILE_MAX", 600),
    "runs": max(1, env_int("RUNS", 3)),
    "timeout": env_float("TIMEOUT", 900.0),
    "ratio_target": env_float("RATIO_TARGET", 1.2),
    "rss_target_mib": env_float("RSS_TARGET_MIB", 20.0),
    "rss_vs_lsyncd": env_float("RSS_VS_LSYNCD", 0.5),
    # time until live <= this x the faster peer's (issue 18: 0.95)
    "live_vs_peer": env_float("LIVE_VS_PEER", 0.95),
}

# Everything we start, so the exit path can stop it (by pid / own process group only).
CHILDREN: list[subprocess.Popen] = []

PARTS = ("live", "idle", "latency", "burst", "events")

# Our daemon's variants: "clsync" watches with inotify (the default), "clsync-fan" is the same
# argv plus `--monitor fanotify` (needs root; on by default, --no-fanotify turns it off).
FAN = "clsync-fan"
OWN_KINDS = ("clsync", FAN)
NAMES = {"clsync": "clsync (this)", FAN: "clsync --monitor fanotify", "lsyncd": "lsyncd",
         "clsync-c": "C clsync"}


def own_argv(kind: str, own_bin: str, extra: list[str]) -> list[str]:
    """Our binary and the options every part gives it; the fanotify variant adds --monitor."""
    return [own_bin, *extra, *(["--monitor", "fanotify"] if kind == FAN else [])]


def daemon_log(work: str, kind: str, run: int) -> str:
    """Where run_daemon puts the daemon's stdout+stderr."""
    return os.path.join(work, f"{kind}-run{run}.log")


def fanotify_marks(logpath: str) -> int | None:
    """Marks our worker reports in its `ready:` line when it watches with fanotify; None when
    it does not (it fell back to inotify, the log says why)."""
    try:
        with open(logpath, errors="replace") as f:
            m = re.search(r"ready: watching the whole tree with (\d+) fanotify "
                          r"file-system mark", f.read())
    except OSError:
        return None
    return int(m.group(1)) if m else None


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def now() -> float:
    return time.monotonic()


# ---------------------------------------------------------------- process helpers

def spawn(argv: list[str], **kw) -> subprocess.Popen:
    # Own session: a ^C on the terminal reaches only the bench, which then stops the child
    # itself; and the child's process group (its rsync) can be killed as a whole.
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    CHILDREN.append(p)
    return p


def kill_group(p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if p.returncode is not None:
        return
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait4(p: subprocess.Popen, timeout: float):
    """Reap p with wait4(2): (exit code or None on timeout, rusage)."""
    deadline = now() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            code = os.waitstatus_to_exitcode(status)
            p.returncode = code
            return code, ru
        if now() >= deadline:
            return None, None
        time.sleep(0.01)


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def kib(field: str) -> int:
    return int(field.split()[0])  # "12345 kB"


def inotify_watches(pid: int) -> int:
    """Number of inotify watches held by pid: `inotify wd:` lines over /proc/PID/fdinfo/*."""
    n = 0
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        try:
            with open(os.path.join(d, fd)) as f:
                n += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            pass
    return n


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own user+sys CPU, reaped children's user+sys CPU) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2:].split()
    tck = os.sysconf("SC_CLK_TCK")
    # fields[0] is field 3 (state); utime=14, stime=15, cutime=16, cstime=17
    own = (int(fields[11]) + int(fields[12])) / tck
    kids = (int(fields[13]) + int(fields[14])) / tck
    return own, kids


def sample_process(pid: int) -> dict:
    st = proc_status(pid)
    own, kids = cpu_seconds(pid)
    return {
        "vmhwm_kib": kib(st["VmHWM"]),
        "vmrss_kib": kib(st["VmRSS"]),
        "threads": int(st.get("Threads", "0")),
        "watches": inotify_watches(pid),
        "cpu_s": own,
        "children_cpu_s": kids,
    }


class ChildSampler:
    """Peak VmHWM of the daemon's descendants (its rsync runs), sampled every 0.1 s.
    (wait4's ru_maxrss cannot be used: it also counts the forking parent's RSS, here the
    bench's Python.)"""

    def __init__(self, pid: int):
        self.pid = pid
        self.next = 0.0
        self.peak_kib = 0
        self.seen: set[int] = set()

    def _descendants(self, pid: int) -> list[int]:
        out = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
        for c in list(out):
            out.extend(self._descendants(c))
        return out

    def maybe(self) -> None:
        t = now()
        if t < self.next:
            return
        self.next = t + 0.1
        for c in self._descendants(self.pid):
            try:
                hwm = kib(proc_status(c)["VmHWM"])
            except (OSError, KeyError):
                continue
            self.seen.add(c)
            self.peak_kib = max(self.peak_kib, hwm)


# ---------------------------------------------------------------- tree

def build_tree(src: str) -> str:
    """SRC/dNNNN[/sNN] with FILES_PER_DIR files in every directory. Returns the relative path
    of the last directory created (the probe goes there: deepest, sorted last)."""
    rng = random.Random(20240611)
    fanout = CFG["fanout"]
    last = ""
    for i in range(CFG["dirs"]):
        top, sub = divmod(i, fanout)
        rel = f"d{top:04d}" if sub == 0 else f"d{top:04d}/s{sub:02d}"
        path = os.path.join(src, rel)
        os.mkdir(path)
        for k in range(CFG["files_per_dir"]):
            size = rng.randint(CFG["file_min"], CFG["file_max"])
            with open(os.path.join(path, f"f{k}.txt"), "wb") as f:
                f.write(rng.randbytes(size))
        last = rel
    return last


def cpu_busy(interval: float = 1.0) -> float:
    """Fraction of all CPUs busy over `interval` seconds (from /proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]  # idle + iowait
        return sum(v), idle
    t1, i1 = snap()
    time.sleep(interval)
    t2, i2 = snap()
    return 0.0 if t2 == t1 else 1.0 - (i2 - i1) / (t2 - t1)


def wait_quiet() -> float:
    """Wait (up to QUIET_WAIT s) until other processes leave the machine mostly idle, so a
    parallel build or test run does not end up in the figures. Returns the last busy
    fraction seen."""
    limit = env_float("QUIET_BUSY", 0.15)
    deadline = now() + env_float("QUIET_WAIT", 300.0)
    warned = False
    while True:
        busy = cpu_busy()
        if busy <= limit or now() >= deadline:
            if busy > limit:
                log(f"WARNING: machine still {busy:.0%} busy with other work; figures are noisy")
            return busy
        if not warned:
            log(f"machine {busy:.0%} busy with other work; waiting for it to calm down "
                f"(QUIET_WAIT={env_float('QUIET_WAIT', 300.0):g}s)")
            warned = True


def warm_up(src: str) -> None:
    subprocess.run(["find", src], stdout=subprocess.DEVNULL, check=True)


def cpu_total() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, steal seconds) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    tck = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq + steal) / tck, steal / tck


def other_cpu(before, after, own_cpu_s: float, wall_s: float) -> float:
    """Share of the machine's CPU capacity used by anything but the measured process tree
    during a phase (other builds, tests, kernel writeback, the bench's own polling, steal)."""
    cap = wall_s * (os.cpu_count() or 1)
    return max(0.0, (after[0] - before[0]) - own_cpu_s) / cap if cap > 0 else 0.0


def fs_type(path: str) -> str:
    """File-system type of the mount holding path (from /proc/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, parts[2]
    return kind


def settle() -> None:
    """Flush dirty pages of the previous phase so its writeback does not land on the next."""
    os.sync()


# ---------------------------------------------------------------- measurements

def measure_inotifywait(src: str) -> dict:
    settle()
    t0 = now()
    p = spawn(["inotifywait", "-r", "-m", src], stdout=subprocess.DEVNULL,
              stderr=subprocess.PIPE, text=True)
    established = None
    for line in p.stderr:
        if "Watches established." in line:
            established = now()
            break
    if established is None:
        p.wait()
        raise BenchError(f"inotifywait exited {p.returncode} without 'Watches established.'")
    watches = inotify_watches(p.pid)
    p.terminate()
    p.wait()
    p.stderr.close()
    return {"setup_s": established - t0, "watches": watches}


def measure_rsync(src: str, dst: str) -> dict:
    settle()
    c0 = cpu_total()
    t0 = now()
    p = spawn(["rsync", "-a", src + "/", dst + "/"])
    code, ru = wait4(p, CFG["timeout"])
    t = now() - t0
    if code != 0:
        raise BenchError(f"rsync -a exited {code}")
    own = ru.ru_utime + ru.ru_stime
    return {"wall_s": t, "cpu_s": own, "other_cpu": other_cpu(c0, cpu_total(), own, t)}


def write_probe(path: str, tag: str) -> bytes:
    data = f"clsync bench probe {tag} {time.time_ns()}\n".encode() * 4
    with open(path, "wb") as f:
        f.write(data)
    return data


def wait_for_file(path: str, data: bytes, p: subprocess.Popen, deadline: float,
                  what: str, sampler: ChildSampler | None = None, poll: float = POLL) -> float:
    while True:
        if sampler:
            sampler.maybe()
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    return now()
        except OSError:
            pass
        if p.poll() is not None:
            raise BenchError(f"{what}: daemon exited {p.returncode} before the probe arrived")
        if now() > deadline:
            raise BenchError(f"{what}: probe {path} did not arrive within {CFG['timeout']} s")
        time.sleep(poll)


def tail(path: str, n: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def mirror_diffs(src: str, dst: str) -> int:
    """Entries rsync would still change: 0 when DST mirrors SRC."""
    r = subprocess.run(["rsync", "-a", "--delete", "--dry-run", "--itemize-changes",
                        src + "/", dst + "/"], capture_output=True, text=True)
    return len([l for l in r.stdout.splitlines() if l.strip()])


def run_daemon(kind: str, argv: list[str], src: str, dst: str, probe_dir: str, work: str,
               run: int, ready: str, status_file: str | None = None,
               ready_regex: str | None = None, stop_timeout: float = 300.0,
               after_live=None) -> dict:
    """Start a sync daemon, detect readiness, probe, sample, SIGTERM.

    ready = "status": status_file reads `running`;
            "log":    ready_regex matches the daemon's output;
            "preprobe": a probe written before the start has arrived in DST (the initial
                        sync has reached the last directory).
    Then one probe is written and must arrive: time until live = start -> its arrival.
    after_live(p) -> dict, if given, runs after the live figures are sampled and before
    SIGTERM (idle, latency, burst phases); its dict goes into the result.
    """
    logpath = daemon_log(work, kind, run)
    probe_rel = os.path.join(probe_dir, f"zz-bench-probe-{kind}-{run}.txt")
    pre_rel = os.path.join(probe_dir, f"zz-bench-preprobe-{kind}-{run}.txt")
    res: dict = {"kind": kind, "ready_by": ready}
    pre_data = None
    if ready == "preprobe":
        pre_data = write_probe(os.path.join(src, pre_rel), f"{kind} pre {run}")
    settle()
    c0 = cpu_total()
    with open(logpath, "wb") as logf:
        t0 = now()
        p = spawn(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = t0 + CFG["timeout"]
    sampler = ChildSampler(p.pid)
    try:
        seen: dict[str, float] = {}
        if ready == "status":
            while True:
                try:
                    with open(status_file) as f:
                        word = f.read().strip()
                except OSError:
                    word = ""
                if word and word not in seen:
                    seen[word] = now() - t0
                if word == "running":
                    break
                if p.poll() is not None:
                    raise BenchError(f"{kind} exited {p.returncode} before `running` "
                                     f"(status {word!r}); log tail:\n{tail(logpath)}")
                if now() > deadline:
                    raise BenchError(f"{kind} not `running` after {CFG['timeout']} s "
                                     f"(status {word!r}); log tail:\n{tail(logpath)}")
                sampler.maybe()
                time.sleep(POLL)
        elif ready == "log":
            rx = re.compile(ready_regex)
            while True:
                with open(logpath, errors="replace") as f:
                    if rx.search(f.read()):
                        break
                if p.poll() is not None:
                    raise BenchError(f"{kind} exited {p.returncode} before ready; "
                                     f"log tail:\n{tail(logpath)}")
                if now() > deadline:
                    raise BenchError(f"{kind} not ready after {CFG['timeout']} s")
                sampler.maybe()
                time.sleep(POLL * 4)
        elif ready == "preprobe":
            wait_for_file(os.path.join(dst, pre_rel), pre_data, p, deadline, kind, sampler)
        else:
            raise ValueError(ready)
        t_ready = now()
        res["ready_s"] = t_ready - t0
        res["status_seen_s"] = seen

        data = write_probe(os.path.join(src, probe_rel), f"{kind} {run}")
        t_written = now()
        t_arrived = wait_for_file(os.path.join(dst, probe_rel), data, p, deadline, kind,
                                  sampler)
        res["live_s"] = t_arrived - t0
        res["probe_latency_s"] = t_arrived - t_written

        # Right before stopping it: memory, watches, CPU.
        res.update(sample_process(p.pid))
        res["other_cpu"] = other_cpu(c0, cpu_total(), res["cpu_s"] + res["children_cpu_s"],
                                     now() - t0)
        if after_live is not None:
            res.update(after_live(p))

        p.send_signal(signal.SIGTERM)
        t_term = now()
        code, _ = wait4(p, stop_timeout)
        if code is None:
            kill_group(p)
            wait4(p, 30)
            res["stop_s"] = None
            raise BenchError(f"{kind} did not exit within {stop_timeout} s of SIGTERM")
        res["stop_s"] = now() - t_term
        res["exit_code"] = code
        res["children_peak_kib"] = sampler.peak_kib
        res["children_seen"] = len(sampler.seen)
        res["mirror_diffs"] = mirror_diffs(src, dst)
        res["fanotify_marks"] = fanotify_marks(logpath)
        return res
    finally:
        kill_group(p)
        if p.returncode is None:
            wait4(p, 30)
        for rel in (probe_rel, pre_rel):
            try:
                os.unlink(os.path.join(src, rel))
            except FileNotFoundError:
                pass


# ---------------------------------------------------------------- idle, latency, burst

IDLE_SETTLE_S = 2.0   # after live, before the idle window (pending delay timers run out)
IDLE_S = 10.0         # the idle window
LAT_CHANGES = 20      # single-file changes per daemon and run
LAT_POLL = 0.001      # poll interval while waiting for a latency probe
BURST_DIRS, BURST_FILES = 200, 100  # 20,000 new files


def ctxt_switches(pid: int) -> dict[int, tuple[int, int]]:
    """{tid: (voluntary, nonvoluntary)} over all threads: /proc/PID/status alone has only the
    main thread's counts."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                v = nv = 0
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        v = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        nv = int(line.split()[1])
                out[int(tid)] = (v, nv)
        except OSError:
            pass
    return out


def idle_phase(p: subprocess.Popen, what: str) -> dict:
    """IDLE_SETTLE_S, then IDLE_S of nothing: VmRSS at its end, own CPU (utime+stime, reaped
    children excluded), context switches summed over the threads (wake-ups)."""
    time.sleep(IDLE_SETTLE_S)
    cpu0, kids0 = cpu_seconds(p.pid)
    cs0 = ctxt_switches(p.pid)
    time.sleep(IDLE_S)
    if p.poll() is not None:
        raise BenchError(f"{what}: exited {p.returncode} while idle")
    cpu1, kids1 = cpu_seconds(p.pid)
    cs1 = ctxt_switches(p.pid)
    st = proc_status(p.pid)
    vol = sum(v - cs0.get(t, (0, 0))[0] for t, (v, _) in cs1.items())
    nvol = sum(nv - cs0.get(t, (0, 0))[1] for t, (_, nv) in cs1.items())
    return {"idle": {"rss_kib": kib(st["VmRSS"]), "cpu_s": cpu1 - cpu0,
                     "children_cpu_s": kids1 - kids0, "wakeups": vol, "nonvoluntary": nvol,
                     "threads": len(cs1), "window_s": IDLE_S}}


def measure_inotifywait_idle(src: str) -> dict:
    """Idle reference: `inotifywait -r -m SRC` holding the same watches, doing nothing."""
    p = spawn(["inotifywait", "-r", "-m", src], stdout=subprocess.DEVNULL,
              stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:
            if "Watches established." in line:
                break
        else:
            raise BenchError("inotifywait (idle reference) exited before its watches were set")
        return idle_phase(p, "inotifywait")["idle"]
    finally:
        kill_group(p)
        p.wait()
        p.stderr.close()


def make_wrapper(work: str, tag: str, rsync_path: str) -> tuple[str, str]:
    """An `rsync` wrapper that appends one line per invocation to a log: (wrapper, log)."""
    d = os.path.join(work, f"wrap-{tag}")
    os.makedirs(d, exist_ok=True)
    logf = os.path.join(d, "runs.log")
    open(logf, "w").close()
    w = os.path.join(d, "rsync")
    with open(w, "w") as f:
        f.write(f"#!/bin/sh\necho \"$$\" >> {shlex.quote(logf)}\n"
                f"exec {shlex.quote(rsync_path)} \"$@\"\n")
    os.chmod(w, 0o755)
    return w, logf


def count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def pctl(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))]


def lat_data(tag: str, i: int) -> bytes:
    return f"clsync bench latency {tag} {i} {time.time_ns()}\n".encode() * 3


def latency_reference(work: str, run: int) -> dict:
    """Plain `rsync -a FILE DST/` of one freshly written small file, LAT_CHANGES times: from
    the write until the file is in DST with the right content (polled every ms, as for the
    daemons; rsync itself exits a few ms later: `wall_s`)."""
    s = os.path.join(work, f"latref-src-{run}")
    d = os.path.join(work, f"latref-dst-{run}")
    os.makedirs(s)
    os.makedirs(d)
    lats, walls = [], []
    try:
        for i in range(LAT_CHANGES):
            name = f"zz-lat-{i:02d}.txt"
            data = lat_data("ref", i)
            t0 = now()
            with open(os.path.join(s, name), "wb") as f:
                f.write(data)
            p = spawn(["rsync", "-a", os.path.join(s, name), d + "/"])
            while True:
                exited = p.poll() is not None  # before the read: no race with its exit
                try:
                    with open(os.path.join(d, name), "rb") as f:
                        if f.read() == data:
                            break
                except OSError:
                    pass
                if exited or now() - t0 > 60.0:
                    raise BenchError(f"plain rsync of one file: exit {p.returncode}, "
                                     "file not in DST")
                time.sleep(LAT_POLL)
            lats.append(now() - t0)
            if p.wait() != 0:
                raise BenchError(f"plain rsync of one file exited {p.returncode}")
            walls.append(now() - t0)
            time.sleep(0.1)
    finally:
        shutil.rmtree(s, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
    return {"median_s": statistics.median(lats), "p90_s": pctl(lats, 0.9), "all_s": lats,
            "wall_median_s": statistics.median(walls)}


def latency_phase(p: subprocess.Popen, src: str, dst: str, rel_dir: str, tag: str,
                  runs_log: str) -> dict:
    """LAT_CHANGES times: write one new small file into rel_dir, time until it is in DST with
    the right content (polled every ms); 0.1 s pause between changes."""
    lats = []
    r0 = count_lines(runs_log)
    for i in range(LAT_CHANGES):
        rel = os.path.join(rel_dir, f"zz-lat-{tag}-{i:02d}.txt")
        data = lat_data(tag, i)
        t0 = now()
        with open(os.path.join(src, rel), "wb") as f:
            f.write(data)
        t1 = wait_for_file(os.path.join(dst, rel), data, p, t0 + 60.0, f"{tag} latency",
                           poll=LAT_POLL)
        lats.append(t1 - t0)
        time.sleep(0.1)
    return {"latency": {"median_s": statistics.median(lats), "p90_s": pctl(lats, 0.9),
                        "all_s": lats, "rsync_runs": count_lines(runs_log) - r0}}


def make_burst(root: str) -> tuple[float, float, dict[str, int]]:
    """BURST_DIRS directories x BURST_FILES files (100-300 bytes) under root, as fast as
    Python can. Returns (start, end, {relative dir: {name: size}})."""
    rng = random.Random(4242)
    pool = rng.randbytes(4096)
    sizes = [rng.randint(100, 300) for _ in range(BURST_FILES)]
    names = [f"f{k:03d}" for k in range(BURST_FILES)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    t0 = now()
    os.mkdir(root)
    for d in range(BURST_DIRS):
        dp = os.path.join(root, f"b{d:03d}")
        os.mkdir(dp)
        for k in range(BURST_FILES):
            fd = os.open(os.path.join(dp, names[k]), flags, 0o644)
            os.write(fd, pool[k:k + sizes[k]])
            os.close(fd)
    t1 = now()
    return t0, t1, {"sizes": dict(zip(names, sizes))}


def burst_missing(dst_root: str, sizes: dict[str, int], done: set[int]) -> int:
    """Files of the burst not (yet) in dst_root with the right size; complete directories
    are added to `done` and not scanned again."""
    missing = 0
    for d in range(BURST_DIRS):
        if d in done:
            continue
        have = {}
        try:
            with os.scandir(os.path.join(dst_root, f"b{d:03d}")) as it:
                for e in it:
                    if not e.name.startswith("."):
                        have[e.name] = e
        except OSError:
            missing += len(sizes)
            continue
        if len(have) < len(sizes):
            missing += len(sizes) - len(have)
            continue
        bad = 0
        for n, sz in sizes.items():
            e = have.get(n)
            try:
                if e is None or e.stat().st_size != sz:
                    bad += 1
            except OSError:
                bad += 1
        if bad:
            missing += bad
        else:
            done.add(d)
    return missing


def burst_reference(work: str, run: int) -> dict:
    """Plain `rsync -a` of the burst's files (created the same way outside SRC): from its
    start until DST holds them all (polled as for the daemons), and its wall time."""
    s = os.path.join(work, f"burstref-src-{run}")
    d = os.path.join(work, f"burstref-dst-{run}")
    try:
        t0, t1, meta = make_burst(s)
        settle()
        ts = now()
        p = spawn(["rsync", "-a", s + "/", d + "/"])
        done: set[int] = set()
        while burst_missing(d, meta["sizes"], done):
            if p.poll() is not None and p.returncode != 0:
                raise BenchError(f"plain rsync of the burst exited {p.returncode}")
            if now() - ts > CFG["timeout"]:
                raise BenchError("plain rsync of the burst did not complete")
            time.sleep(0.02)
        arrived = now() - ts
        if p.wait() != 0:
            raise BenchError(f"plain rsync of the burst exited {p.returncode}")
        return {"rsync_s": arrived, "wall_s": now() - ts, "create_s": t1 - t0}
    finally:
        shutil.rmtree(s, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)


def burst_phase(p: subprocess.Popen, src: str, dst: str, rel_root: str, tag: str,
                runs_log: str, timeout: float) -> dict:
    """The burst into SRC/rel_root; time from its end until DST holds every file with the
    right size (polled every 20 ms), lost files after `timeout`, rsync runs started."""
    r0 = count_lines(runs_log)
    t0, t1, meta = make_burst(os.path.join(src, rel_root))
    sizes = meta["sizes"]
    total = BURST_DIRS * BURST_FILES
    done: set[int] = set()
    dst_root = os.path.join(dst, rel_root)
    converged = None
    while True:
        missing = burst_missing(dst_root, sizes, done)
        if missing == 0:
            converged = now()
            break
        if p.poll() is not None:
            raise BenchError(f"{tag}: exited {p.returncode} during the burst")
        if now() - t1 > timeout:
            break
        time.sleep(0.02)
    runs_conv = count_lines(runs_log) - r0
    time.sleep(1.0)  # runs still started right after convergence count too
    return {"burst": {"create_s": t1 - t0, "files": total,
                      "converge_s": None if converged is None else converged - t1,
                      "lost": missing, "timeout_s": timeout,
                      "rsync_runs": count_lines(runs_log) - r0,
                      "rsync_runs_at_converge": runs_conv}}


def log_idle(run: int, kind: str, res: dict) -> None:
    i = res["idle"]
    log(f"run {run}: {kind} idle {i['window_s']:g}s: VmRSS {mib(i['rss_kib']):.1f} MiB, "
        f"CPU {i['cpu_s']:.3f}s, wake-ups {i['wakeups']} (+{i['nonvoluntary']} involuntary, "
        f"{i['threads']} threads)")


def run_kind(kind: str, tag: str, run: int, src: str, dst: str, probe_dir: str, work: str,
             bins: dict, delay: float | None, rsync_bin: str | None, after_live=None) -> dict:
    """Runs one daemon of `kind` (ours, lsyncd or the C clsync) on SRC -> DST through
    run_daemon. `delay`: its collect and sync delay in seconds (None: our short form's own
    delays; the peers get 1); `rsync_bin`: the rsync it runs (None: the one on PATH).
    `bins` holds own, extra, lsyncd, c and rsync (the path of rsync)."""
    if kind in OWN_KINDS:
        status = os.path.join(work, f"status-{tag}-{run}")
        argv = own_argv(kind, bins["own"], bins["extra"])
        if delay is not None:
            argv += ["-t", f"{delay:g}", "-w", f"{delay:g}"]
        if rsync_bin:
            argv += ["-S", rsync_bin]
        return run_daemon(tag, [*argv, src, dst, "--status-file", status], src, dst,
                          probe_dir, work, run, ready="status", status_file=status,
                          after_live=after_live)
    delay = 1 if delay is None else delay
    if kind == "lsyncd":
        conf = os.path.join(work, f"{tag}-{run}.conf")
        binary = f', rsync = {{ binary = "{rsync_bin}" }}' if rsync_bin else ""
        with open(conf, "w") as f:
            f.write('settings { nodaemon = true }\n'
                    f'sync {{ default.rsync, source = "{src}", target = "{dst}", '
                    f'delay = {delay:g}{binary} }}\n')
        return run_daemon(tag, [bins["lsyncd"], conf], src, dst, probe_dir, work, run,
                          ready="log", ready_regex=r"Startup of .* finished",
                          after_live=after_live)
    # The C clsync 0.4.5 never writes `running` to its status file, so readiness is a probe
    # written before the start arriving.
    os.makedirs(dst, exist_ok=True)
    return run_daemon(tag, [bins["c"], "-M", "rsyncdirect", "-W", src, "-D", dst, "-S",
                            rsync_bin or bins["rsync"], "-w", f"{delay:g}", "-t", f"{delay:g}"],
                      src, dst, probe_dir, work, run, ready="preprobe", after_live=after_live)


def run_dynamic_all(parts: set[str], bins: dict, owns: list[str], peers: list[str],
                    src: str, probe_dir: str, work: str, run: int, dsts: list[str]) -> dict:
    """Latency and burst parts of one run: the references, then each daemon (our variants
    `owns`, then the peers) at its minimal delays with an rsync wrapper that counts its rsync
    runs."""
    out: dict = {"dyn": {}}
    if "latency" in parts:
        out["lat_ref"] = lr = latency_reference(work, run)
        log(f"run {run}: plain rsync -a of one file: median {lr['median_s'] * 1000:.1f} ms, "
            f"p90 {lr['p90_s'] * 1000:.1f} ms")
    if "burst" in parts:
        out["burst_ref"] = br = burst_reference(work, run)
        log(f"run {run}: burst of {BURST_DIRS * BURST_FILES} files created in "
            f"{br['create_s']:.2f}s; plain rsync -a of them {br['rsync_s']:.2f}s")
    burst_timeout = env_float("BURST_TIMEOUT", 0.0) or max(
        120.0, 30 * out.get("burst_ref", {}).get("rsync_s", 4.0))
    for kind in [*owns, *peers]:
        tag = f"{kind}-min"
        wrapper, runs_log = make_wrapper(work, f"{tag}-{run}", bins["rsync"])
        dst = os.path.join(work, f"dst-{tag}-{run}")
        lat_rel = probe_dir
        burst_rel = f"zz-burst-{tag}-{run}"

        def cb(p: subprocess.Popen) -> dict:
            res: dict = {}
            if "latency" in parts:
                res.update(latency_phase(p, src, dst, lat_rel, f"{tag}-{run}", runs_log))
            if "burst" in parts:
                res.update(burst_phase(p, src, dst, burst_rel, tag, runs_log, burst_timeout))
            return res

        try:
            res = run_kind(kind, tag, run, src, dst, probe_dir, work, bins, 0, wrapper,
                           after_live=cb)
        except BenchError as e:
            if kind in OWN_KINDS:
                raise
            # A peer that fails is reported and left out of this run's figures.
            log(f"run {run}: {kind} (minimal delays) FAILED: {e}")
            continue
        finally:
            # the daemon is stopped: take the changes out of SRC for the next daemon
            shutil.rmtree(os.path.join(src, burst_rel), ignore_errors=True)
            for i in range(LAT_CHANGES):
                try:
                    os.unlink(os.path.join(src, lat_rel, f"zz-lat-{tag}-{run}-{i:02d}.txt"))
                except FileNotFoundError:
                    pass
        dsts.append(dst)
        res["rsync_runs_total"] = count_lines(runs_log)
        out["dyn"][kind] = res
        msg = f"run {run}: {kind} (minimal delays) live {res['live_s']:.2f}s"
        if "latency" in res:
            lt = res["latency"]
            msg += (f"; latency median {lt['median_s'] * 1000:.1f} ms, p90 "
                    f"{lt['p90_s'] * 1000:.1f} ms ({lt['rsync_runs']} rsync runs)")
        if "burst" in res:
            b = res["burst"]
            msg += (f"; burst converged {fmt(b['converge_s'])} after its end, lost {b['lost']}, "
                    f"{b['rsync_runs']} rsync runs")
        msg += f"; exit {res['exit_code']}, mirror diffs {res['mirror_diffs']}"
        log(msg)
    return out


# ---------------------------------------------------------------- events

EVENTS_DIRS, EVENTS_FILES = 100, 200  # 20,000 empty files, in the tree before the daemon starts
EVENTS_WORKERS = env_int("EVENTS_WORKERS", 1)  # processes calling os.utime
# Total events/s the generators aim at (0: as fast as they can). The target rate by
# default: on a 2-core machine unthrottled generators take every core, and what is
# measured is then the scheduler, not the daemon.
EVENTS_RATE = env_float("EVENTS_RATE", 200000.0)
EVENTS_POLL = 0.05                    # seconds between samples of the daemon's CPU
EVENTS_QUIET_POLLS = 4                # CPU unchanged over this many polls = it is done
EVENTS_SETTLE_MAX = 10.0              # at most this long waiting for that
EVENTS_CAPACITY_TARGET = env_float("EVENTS_TARGET", 200000.0)


def max_queued_events() -> int | None:
    try:
        with open("/proc/sys/fs/inotify/max_queued_events") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (Z = exited, not reaped yet); None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()[0]


def make_event_tree(root: str) -> list[str]:
    """EVENTS_DIRS directories x EVENTS_FILES empty files under root; their paths."""
    os.mkdir(root)
    paths = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for d in range(EVENTS_DIRS):
        dp = os.path.join(root, f"e{d:03d}")
        os.mkdir(dp)
        for k in range(EVENTS_FILES):
            path = os.path.join(dp, f"f{k:03d}")
            os.close(os.open(path, flags, 0o644))
            paths.append(path)
    return paths


def generate_events(paths: list[str], seconds: float) -> tuple[int, float]:
    """EVENTS_WORKERS forked processes, each looping over its share of `paths` calling
    os.utime(path) for `seconds`: every call is one IN_ATTRIB on another path than the one
    before (inotify merges only identical consecutive events). Returns (calls, wall s)."""
    n = EVENTS_WORKERS
    shares = [paths[i * len(paths) // n:(i + 1) * len(paths) // n] for i in range(n)]
    go_r, go_w = os.pipe()
    kids: list[tuple[int, int]] = []  # (pid, read end of its result pipe)
    try:
        for share in shares:
            r, w = os.pipe()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the worker: never returns into the bench's code
                code = 1
                try:
                    for sg in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                        signal.signal(sg, signal.SIG_DFL)
                    os.close(r)
                    os.close(go_w)
                    chunks = [share[j:j + 256] for j in range(0, len(share), 256)]
                    utime, mono = os.utime, time.monotonic
                    os.read(go_r, 1)
                    start = mono()
                    end = start + seconds
                    rate = EVENTS_RATE / n
                    calls = 0
                    done = False
                    while not done:
                        for ch in chunks:
                            for path in ch:
                                utime(path)
                            calls += len(ch)
                            t = mono()
                            if t >= end:
                                done = True
                                break
                            if rate > 0:
                                ahead = calls / rate - (t - start)
                                if ahead > 0:
                                    time.sleep(ahead)
                    os.write(w, str(calls).encode())
                    code = 0
                except BaseException:
                    pass
                finally:
                    os._exit(code)
            os.close(w)
            kids.append((pid, r))
        t0 = now()
        os.write(go_w, b"g" * n)
        total = 0
        for i, (pid, r) in enumerate(kids):
            _, status = os.waitpid(pid, 0)
            kids[i] = (0, r)
            code = os.waitstatus_to_exitcode(status)
            out = b""
            while chunk := os.read(r, 64):
                out += chunk
            if code != 0 or not out:
                raise BenchError(f"event generator {pid} failed (exit {code})")
            total += int(out)
        return total, now() - t0
    finally:
        for pid, r in kids:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
            os.close(r)
        os.close(go_r)
        os.close(go_w)


def wait_cpu_settled(pid: int) -> tuple[float, float, bool]:
    """Sample the daemon's own CPU (utime+stime, all threads) every EVENTS_POLL s until it has
    not increased over EVENTS_QUIET_POLLS samples, at most EVENTS_SETTLE_MAX s. Returns (CPU
    seconds, seconds waited until its last increase, settled)."""
    t0 = now()
    last = cpu_seconds(pid)[0]
    t_last = t0
    still = 0
    while now() - t0 < EVENTS_SETTLE_MAX:
        time.sleep(EVENTS_POLL)
        if proc_state(pid) in (None, "Z"):
            return last, t_last - t0, False
        c = cpu_seconds(pid)[0]
        if c > last:
            last, t_last, still = c, now(), 0
        else:
            still += 1
            if still >= EVENTS_QUIET_POLLS:
                return last, t_last - t0, True
    return last, t_last - t0, False


def events_phase(p: subprocess.Popen, paths: list[str], seconds: float) -> dict:
    """Once the daemon's CPU is quiet: the utime storm over `paths` for `seconds`, then wait
    until the daemon's CPU stops increasing. CPU per event = its CPU over both / the calls."""
    cpu0, _, _ = wait_cpu_settled(p.pid)
    calls, gen_s = generate_events(paths, seconds)
    exited = proc_state(p.pid) in (None, "Z")
    cpu_gen = cpu_seconds(p.pid)[0] if not exited else cpu0
    cpu1, drain_s, settled = wait_cpu_settled(p.pid) if not exited else (cpu_gen, 0.0, False)
    exited = exited or proc_state(p.pid) in (None, "Z")
    cpu = cpu1 - cpu0
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    # Less than one clock tick of CPU: give the bound that one tick implies.
    cap = calls / max(cpu, tick) if calls else None
    return {"events": {"calls": calls, "gen_s": gen_s, "rate": calls / gen_s if gen_s else 0.0,
                       "cpu_s": cpu, "cpu_during_s": cpu_gen - cpu0,
                       "us_per_event": cpu * 1e6 / calls if calls else None,
                       "capacity": cap, "capacity_lower_bound": cpu < tick,
                       "drain_s": drain_s, "settled": settled, "exited": exited,
                       "seconds": seconds}}


def overflow_lines(logpath: str) -> list[str]:
    """Lines of a daemon's log mentioning an overflow (ours: "... queue overflowed ...",
    lsyncd: "OVERFLOW in event queue"; the C clsync logs none)."""
    try:
        with open(logpath, errors="replace") as f:
            return [line.strip() for line in f if "overflow" in line.lower()]
    except OSError:
        return []


def run_events_all(bins: dict, owns: list[str], peers: list[str], src: str, probe_dir: str,
                   work: str, run: int, dsts: list[str]) -> dict:
    """The events part of one run, for each daemon: its own event tree in SRC, the daemon
    started at rare syncs (clsync -t 1 -w 1, lsyncd delay = 1, C clsync -t 1 -w 1), the utime
    storm, its CPU; the tree removed again once the daemon is stopped."""
    seconds = env_float("EVENTS_SECONDS", 3.0)
    out: dict = {}
    for kind in [*owns, *peers]:
        tag = f"{kind}-events"
        rel = f"zz-events-{kind}-{run}"
        root = os.path.join(src, rel)
        dst = os.path.join(work, f"dst-{tag}-{run}")
        try:
            paths = make_event_tree(root)
            settle()
            cb = lambda p: events_phase(p, paths, seconds)  # noqa: E731
            res = run_kind(kind, tag, run, src, dst, probe_dir, work, bins, 1, None,
                           after_live=cb)
        finally:
            shutil.rmtree(root, ignore_errors=True)  # the daemon is stopped by now
        dsts.append(dst)
        logpath = daemon_log(work, tag, run)
        ov = overflow_lines(logpath)
        ev = res["events"]
        ev["overflow"] = bool(ov)
        ev["overflow_lines"] = ov[:5]
        if kind in OWN_KINDS and (ev["exited"] or res["exit_code"] != 0):
            raise BenchError(f"{kind} (events part) exited {res['exit_code']}"
                             f"{' during the event storm' if ev['exited'] else ''}; "
                             f"log tail:\n{tail(logpath)}")
        out[kind] = res
        log(f"run {run}: {kind} events: {ev['calls']} utime calls in {ev['gen_s']:.2f}s "
            f"({ev['rate']:,.0f}/s); daemon CPU {ev['cpu_s']:.2f}s "
            f"({ev['cpu_during_s']:.2f}s during the storm, then {ev['drain_s']:.2f}s until idle"
            f"{'' if ev['settled'] else ', NOT settled'}), "
            f"{fmt(ev['us_per_event'], ' us')} per event, capacity "
            f"{'>= ' if ev['capacity_lower_bound'] else ''}{ev['capacity'] or 0:,.0f} events/s; "
            f"overflow: {'YES: ' + ov[0] if ov else 'no'}"
            f"{'; EXITED during the storm' if ev['exited'] else ''}; "
            f"exit {res['exit_code']}, mirror diffs {res['mirror_diffs']}")
    return {"events": out}


# ---------------------------------------------------------------- peers

def find_c_clsync(own_bin: str) -> str | None:
    """The original C clsync: CLSYNC_C_BIN, else the first `clsync` on PATH (then
    /usr/bin/clsync, where Debian's package puts it) that is not our binary and whose `-V`
    says `clsync v0.` (ours says `clsync 0.x`), so a copy of ours earlier on PATH is passed
    over."""
    if os.environ.get("CLSYNC_C_BIN"):
        cands = [os.environ["CLSYNC_C_BIN"]]
    else:
        cands = [os.path.join(d or ".", "clsync")
                 for d in os.environ.get("PATH", os.defpath).split(os.pathsep)]
        cands.append("/usr/bin/clsync")
    seen = set()
    for cand in cands:
        real = os.path.realpath(cand)
        if real in seen or not os.path.isfile(cand) or not os.access(cand, os.X_OK):
            continue
        seen.add(real)
        if real == os.path.realpath(own_bin):
            continue
        try:
            r = subprocess.run([cand, "-V"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if re.search(r"clsync v0\.", r.stdout + r.stderr):
            return cand
    return None


def peer_versions(c_bin: str | None, lsyncd_bin: str | None) -> dict:
    out = {}
    if c_bin:
        r = subprocess.run([c_bin, "-V"], capture_output=True, text=True)
        m = re.search(r"clsync (v\S+)", r.stdout + r.stderr)
        out["clsync-c"] = m.group(1) if m else "?"
    if lsyncd_bin:
        r = subprocess.run([lsyncd_bin, "--version"], capture_output=True, text=True)
        out["lsyncd"] = (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
    return out


# ---------------------------------------------------------------- report

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, unit="s", nd=2):
    if x is None:
        return "-"
    return f"{x:.{nd}f}{unit}" if unit != "" else f"{x:.{nd}f}"


def mib(k):
    return None if k is None else k / 1024.0


def machine_info(own_bin: str) -> dict:
    def first_line(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True)
            s = (r.stdout + r.stderr).strip().splitlines()
            return s[0] if s else "?"
        except OSError:
            return "?"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = os.environ.get("CLSYNC_REV")  # for a binary built outside this checkout
    if not commit:
        r = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                           capture_output=True, text=True)
        commit = r.stdout.strip() if r.returncode == 0 else "unknown"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "rsync": first_line(["rsync", "--version"]),
        "inotifywait": first_line(["inotifywait", "--help"]),
        "clsync_bin": own_bin,
        "git_head": commit,
        "python": platform.python_version(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        prog="bench/live.sh")
    ap.add_argument("--with-peers", action="store_true",
                    help="also measure lsyncd and the original C clsync when installed")
    ap.add_argument("--only", default=",".join(PARTS), metavar="PARTS",
                    help="comma-separated parts to run: " + ",".join(PARTS) +
                         " (default: all)")
    ap.add_argument("--write-docs", nargs="?", const=DOCS_DEFAULT, default=None,
                    metavar="FILE",
                    help="also write the report, with the machine and date, into FILE "
                         "(default docs/benchmarks.md) between its bench:latest markers")
    ap.add_argument("--no-fanotify", action="store_true",
                    help="do not measure the fanotify variant (clsync --monitor fanotify, "
                         "measured beside the inotify one by default when root)")
    ap.add_argument("--scale", action="store_true",
                    help="the large tree: 200,000 directories x 5 files (overrides DIRS "
                         "and FILES_PER_DIR)")
    args = ap.parse_args()
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad or not parts:
        log(f"--only: unknown part(s) {bad}; choose from {','.join(PARTS)}")
        return 2
    parts = set(parts)
    if args.scale:
        CFG["dirs"], CFG["files_per_dir"] = 200000, 5

    own_bin = os.environ.get("CLSYNC_BIN")
    if not own_bin:
        log("CLSYNC_BIN is not set (run bench/live.sh, which builds it)")
        return 2
    own_bin = os.path.abspath(own_bin)
    for tool in ("inotifywait", "rsync", "find"):
        if not shutil.which(tool):
            log(f"`{tool}` not found (inotifywait is in Debian's inotify-tools)")
            return 2

    owns = ["clsync"]
    if args.no_fanotify:
        log("--no-fanotify: the fanotify variant (clsync --monitor fanotify) is not measured")
    elif os.geteuid() != 0:
        log("not root: the fanotify variant (clsync --monitor fanotify) is skipped "
            "(fanotify needs CAP_SYS_ADMIN)")
    else:
        owns.append(FAN)

    peers = []
    c_bin = lsyncd_bin = None
    if args.with_peers:
        lsyncd_bin = os.environ.get("LSYNCD_BIN") or shutil.which("lsyncd")
        c_bin = find_c_clsync(own_bin)
        if lsyncd_bin:
            peers.append("lsyncd")
        else:
            log("lsyncd not installed: skipped (Debian: apt-get install lsyncd)")
        if c_bin:
            peers.append("clsync-c")
        else:
            log("original C clsync not installed: skipped (Debian: apt-get install clsync)")

    info = machine_info(own_bin)
    extra = shlex.split(os.environ.get("CLSYNC_ARGS", ""))
    info["clsync_args"] = extra
    info["peers"] = peer_versions(c_bin, lsyncd_bin)
    info["variants"] = owns
    info["max_queued_events"] = max_queued_events()
    rsync_path = shutil.which("rsync")
    # What run_kind starts: our binary and options, the peers, the rsync on PATH.
    bins = {"own": own_bin, "extra": extra, "lsyncd": lsyncd_bin, "c": c_bin,
            "rsync": rsync_path}
    parent = os.environ.get("BENCH_DIR") or "/tmp"
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix="clsync-bench.", dir=parent)
    src = os.path.join(work, "src")
    os.mkdir(src)
    total_files = CFG["dirs"] * CFG["files_per_dir"]
    results: list[dict] = []
    error = None
    dsts: list[str] = []
    info["fs"] = fs_type(work)
    # On a disk file system the destinations are only removed at the end, after all
    # measurements: on ext4 without a journal (as here), creating files in the ~30 s after
    # many were deleted is several times slower (the inode allocator skips "recently
    # deleted" inodes one by one), which would land in the next run's figures. On tmpfs
    # deleting is harmless and keeps the memory use down.
    defer_delete = info["fs"] != "tmpfs"
    try:
        log(f"building tree in {src}: {CFG['dirs']} dirs x {CFG['files_per_dir']} files")
        t = now()
        probe_dir = build_tree(src)
        du = subprocess.run(["du", "-sk", src], capture_output=True, text=True).stdout.split()[0]
        log(f"tree built in {now() - t:.1f}s ({total_files} files, {int(du) // 1024} MiB on disk)")
        info["tree"] = {"dirs": CFG["dirs"], "files": total_files, "du_mib": int(du) // 1024,
                        "expected_watches": CFG["dirs"] + 1}

        for run in range(1, CFG["runs"] + 1):
            warm_up(src)
            r: dict = {"run": run}
            r["busy_before"] = wait_quiet()
            live = "live" in parts
            if live:
                r["inotifywait"] = measure_inotifywait(src)
                log(f"run {run}: inotifywait -r setup {r['inotifywait']['setup_s']:.2f}s "
                    f"({r['inotifywait']['watches']} watches)")
                dst1 = os.path.join(work, f"dst-rsync-{run}")
                r["rsync"] = measure_rsync(src, dst1)
                dsts.append(dst1)
                log(f"run {run}: rsync -a {r['rsync']['wall_s']:.2f}s "
                    f"(other CPU {r['rsync']['other_cpu']:.0%})")
                r["reference_s"] = r["inotifywait"]["setup_s"] + r["rsync"]["wall_s"]
            idle_cb = None
            if "idle" in parts:
                r["inotifywait_idle"] = iw = measure_inotifywait_idle(src)
                log(f"run {run}: inotifywait idle {IDLE_S:g}s: VmRSS "
                    f"{mib(iw['rss_kib']):.1f} MiB, CPU {iw['cpu_s']:.3f}s, "
                    f"wake-ups {iw['wakeups']}")
                idle_cb = lambda p: idle_phase(p, "daemon")  # noqa: E731
            if live or idle_cb:
                for kind in owns:
                    dst2 = os.path.join(work, f"dst-{kind}-{run}")
                    r[kind] = c = run_kind(kind, kind, run, src, dst2, probe_dir, work, bins,
                                           None, None, after_live=idle_cb)
                    dsts.append(dst2)
                    if kind == FAN and c["fanotify_marks"] is None:
                        log(f"run {run}: WARNING: {kind} did not watch with fanotify (fell back "
                            f"to inotify); log:\n{tail(daemon_log(work, kind, run))}")
                    if idle_cb:
                        log_idle(run, kind, c)
                    if live:
                        c["ratio"] = c["live_s"] / r["reference_s"]
                        watched = (f"fanotify marks {c['fanotify_marks']}, inotify watches "
                                   f"{c['watches']}" if kind == FAN
                                   else f"watches {c['watches']}")
                        log(f"run {run}: {kind} running {c['ready_s']:.2f}s, live "
                            f"{c['live_s']:.2f}s (probe {c['probe_latency_s']:.2f}s), ratio "
                            f"{c['ratio']:.2f}, VmHWM {mib(c['vmhwm_kib']):.1f} MiB, {watched}, "
                            f"exit {c['exit_code']} (other CPU {c['other_cpu']:.0%})")

                for peer in peers:
                    dstp = os.path.join(work, f"dst-{peer}-{run}")
                    pr = run_kind(peer, peer, run, src, dstp, probe_dir, work, bins, None,
                                  None, after_live=idle_cb)
                    dsts.append(dstp)
                    r[peer] = pr
                    if idle_cb:
                        log_idle(run, peer, pr)
                    if not live:
                        continue
                    pr["ratio"] = pr["live_s"] / r["reference_s"]
                    log(f"run {run}: {peer} ready {pr['ready_s']:.2f}s, live {pr['live_s']:.2f}s "
                        f"(probe {pr['probe_latency_s']:.2f}s), ratio {pr['ratio']:.2f}, "
                        f"VmHWM {mib(pr['vmhwm_kib']):.1f} MiB, watches {pr['watches']}, "
                        f"exit {pr['exit_code']}")
            if "latency" in parts or "burst" in parts:
                r.update(run_dynamic_all(parts, bins, owns, peers, src, probe_dir, work, run,
                                         dsts))
            if "events" in parts:
                r.update(run_events_all(bins, owns, peers, src, probe_dir, work, run, dsts))
            results.append(r)
            if not defer_delete:
                for d in dsts:
                    shutil.rmtree(d, ignore_errors=True)
                dsts.clear()
    except BenchError as e:
        error = str(e)
    finally:
        for p in CHILDREN:
            kill_group(p)
            if p.returncode is None:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
        if os.environ.get("KEEP", "0") == "1":
            log(f"KEEP=1: left {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    if not args.write_docs:
        return report(info, results, peers, error, parts)
    captured = Tee()
    old = sys.stdout
    sys.stdout = captured
    try:
        rc = report(info, results, peers, error, parts)
    finally:
        sys.stdout = old
    write_docs(args.write_docs, captured.text(), info, sys.argv[1:])
    return rc


DOCS_DEFAULT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "docs", "benchmarks.md")
DOCS_START = "<!-- bench:latest:start (written by bench/live.sh --write-docs) -->"
DOCS_END = "<!-- bench:latest:end -->"


class Tee:
    """stdout that also keeps what was written (the report, for --write-docs)."""

    def __init__(self):
        self.parts: list[str] = []
        self.out = sys.stdout

    def write(self, s: str) -> int:
        self.parts.append(s)
        return self.out.write(s)

    def flush(self) -> None:
        self.out.flush()

    def text(self) -> str:
        return "".join(self.parts)


def write_docs(path: str, report_text: str, info: dict, argv: list[str]) -> None:
    """Replaces the part of `path` between DOCS_START and DOCS_END (inserted after the
    "## Results" heading the first time) with this run's report."""
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    block = (f"{DOCS_START}\n### Latest harness run\n\n"
             f"Written by `bench/live.sh {' '.join(argv)}` on {info.get('date', '?')}: "
             f"{info.get('cores', '?')} cores, kernel {info.get('kernel', '?')}, "
             f"{info.get('rsync', '?')}; clsync git {info.get('git_head', '?')}.\n\n"
             f"```text\n{report_text.strip()}\n```\n{DOCS_END}")
    if DOCS_START in doc and DOCS_END in doc:
        head, rest = doc.split(DOCS_START, 1)
        _, tail = rest.split(DOCS_END, 1)
        doc = head + block + tail
    elif "## Results\n" in doc:
        doc = doc.replace("## Results\n", "## Results\n\n" + block + "\n", 1)
    else:
        doc = doc.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)
    log(f"report written into {path}")


def report(info: dict, results: list[dict], peers: list[str], error: str | None,
           parts: set[str] = set(PARTS)) -> int:
    P = print
    P()
    P(f"clsync live benchmark - {info['date']}")
    P(f"machine: {info['cores']} cores, kernel {info['kernel']}, {info['rsync']}")
    P(f"clsync: {info['clsync_bin']} {' '.join(info['clsync_args'])} (git {info['git_head']})"
      + (f"; peers: {info['peers']}" if info.get("peers") else ""))
    if "tree" in info:
        t = info["tree"]
        P(f"tree: {t['dirs']} dirs x {CFG['files_per_dir']} files = {t['files']} files, "
          f"{t['du_mib']} MiB on disk, on {info.get('fs', '?')}; "
          f"runs: {len(results)}/{CFG['runs']}")
    rc = 0
    if error:
        P(f"\nERROR: {error}")
        rc = 2
    if not results:
        if not error:
            P("no results")
        return 2

    if "live" in parts:
        P()
        hdr = (f"{'run':>3} {'inotifywait':>11} {'rsync -a':>9} {'reference':>9} | "
               f"{'running':>8} {'live':>8} {'probe':>6} {'ratio':>6} {'VmHWM':>9} "
               f"{'watches':>7} {'exit':>4} {'diffs':>5} {'busy':>5} {'other':>11}")
        P(hdr)
        P("-" * len(hdr))
        for r in results:
            c = r["clsync"]
            P(f"{r['run']:>3} {fmt(r['inotifywait']['setup_s']):>11} {fmt(r['rsync']['wall_s']):>9} "
              f"{fmt(r['reference_s']):>9} | {fmt(c['ready_s']):>8} {fmt(c['live_s']):>8} "
              f"{fmt(c['probe_latency_s']):>6} {fmt(c['ratio'], ''):>6} "
              f"{fmt(mib(c['vmhwm_kib']), ' MiB', 1):>9} {c['watches']:>7} {c['exit_code']:>4} "
              f"{c['mirror_diffs']:>5} {r.get('busy_before', 0):>5.0%} "
              f"{r['rsync']['other_cpu']:>5.0%}/{c['other_cpu']:<5.0%}")

        m_inw = med([r["inotifywait"]["setup_s"] for r in results])
        m_rs = med([r["rsync"]["wall_s"] for r in results])
        m_ref = med([r["reference_s"] for r in results])
        cl = [r["clsync"] for r in results]
        m_ready = med([c["ready_s"] for c in cl])
        m_live = med([c["live_s"] for c in cl])
        m_probe = med([c["probe_latency_s"] for c in cl])
        m_ratio = med([c["ratio"] for c in cl])
        m_hwm = mib(med([c["vmhwm_kib"] for c in cl]))
        max_hwm = mib(max(c["vmhwm_kib"] for c in cl))
        m_kids = mib(med([c["children_peak_kib"] for c in cl if c["children_peak_kib"]]))
        watches = sorted({c["watches"] for c in cl})
        inw_watches = sorted({r["inotifywait"]["watches"] for r in results})
        expected = info["tree"]["expected_watches"]
        exits = [c["exit_code"] for c in cl]
        diffs = [c["mirror_diffs"] for c in cl]
        statuses = [c.get("status_seen_s", {}) for c in cl]

        P()
        P(f"medians over {len(results)} run(s):")
        P(f"  inotifywait -r setup      {fmt(m_inw)}   (its watches: {inw_watches})")
        P(f"  rsync -a                  {fmt(m_rs)}")
        P(f"  reference (sum)           {fmt(m_ref)}")
        first_seen = {}
        for s in statuses:
            for k, v in s.items():
                first_seen.setdefault(k, []).append(v)
        if first_seen:
            P("  clsync status first seen  " + ", ".join(
                f"{k} {fmt(med(v))}" for k, v in sorted(first_seen.items(), key=lambda kv: med(kv[1]))))
        P(f"  clsync `running`          {fmt(m_ready)}")
        P(f"  clsync time until live    {fmt(m_live)}")
        P(f"  clsync probe latency      {fmt(m_probe)}")
        P(f"  clsync CPU (own)          {fmt(med([c['cpu_s'] for c in cl]))}, "
          f"rsync children CPU {fmt(med([c['children_cpu_s'] for c in cl]))}, "
          f"threads {sorted({c['threads'] for c in cl})}")
        P(f"  clsync stop after SIGTERM {fmt(med([c['stop_s'] for c in cl]))}")
        noisy = [r["run"] for r in results
                 if max(r["rsync"]["other_cpu"], r["clsync"]["other_cpu"]) > 0.25]
        if noisy:
            P(f"  WARNING: other work used > 25% of the CPUs during run(s) {noisy}: noisy figures")
        P(f"  rsync children: peak VmHWM of any one {fmt(m_kids, ' MiB', 1)} (sampled every "
          f"0.1 s; not in the daemon's figure)")
        P(f"  inotify watches held by clsync: {watches} (expected {expected}: "
          f"{'OK' if watches == [expected] else 'MISMATCH'})")
        P(f"  exit code on SIGTERM: {exits} ({'OK' if all(e == 0 for e in exits) else 'FAIL'})")
        P(f"  mirror check (rsync -n differences after stop): {diffs} "
          f"({'OK' if all(d == 0 for d in diffs) else 'DIFFERS'})")

        fans = [k for k in info.get("variants", ["clsync"]) if k == FAN]
        peer_rows = []
        for peer in [*fans, *peers]:
            pr = [r[peer] for r in results if peer in r and "ratio" in r[peer]]
            if not pr:
                continue
            row = {
                "kind": peer, "name": NAMES.get(peer, peer),
                "ready": med([x["ready_s"] for x in pr]),
                "live": med([x["live_s"] for x in pr]),
                "probe": med([x["probe_latency_s"] for x in pr]),
                "ratio": med([x["ratio"] for x in pr]),
                "hwm": mib(med([x["vmhwm_kib"] for x in pr])),
                "max_hwm": mib(max(x["vmhwm_kib"] for x in pr)),
                "kids": mib(med([x["children_peak_kib"] for x in pr])),
                "watches": sorted({x["watches"] for x in pr}),
                "marks": [x.get("fanotify_marks") for x in pr],
                "exits": [x["exit_code"] for x in pr],
                "diffs": [x["mirror_diffs"] for x in pr],
                "by": pr[0]["ready_by"],
            }
            peer_rows.append(row)
        others = [row for row in peer_rows if row["kind"] not in OWN_KINDS]
        lsyncd_row = next((row for row in others if row["kind"] == "lsyncd"), None)

        def live_verdicts(ratio: float, hwm: float, max_hwm: float, live: float,
                          indent: str = "  ") -> bool:
            """The live part's targets for one of our variants: ratio, peak RSS, faster than
            each peer, peak RSS against lsyncd's. Prints them; True if all are met."""
            def line(name: str, value: str, target: str, ok: bool) -> bool:
                P(f"{indent}{name:<26} {value}  ({target})  {'PASS' if ok else 'FAIL'}")
                return ok
            oks = [
                line("ratio live/reference", f"{ratio:.2f}",
                     f"target <= {CFG['ratio_target']:g}", ratio <= CFG["ratio_target"]),
                line("peak RSS (VmHWM)", f"{hwm:.1f} MiB (max {max_hwm:.1f})",
                     f"target < {CFG['rss_target_mib']:g} MiB", hwm < CFG["rss_target_mib"]),
            ]
            for row in others:
                oks.append(line(f"faster than {row['name']}",
                                f"live {fmt(live)} vs {fmt(row['live'])}",
                                "time until live lower", live < row["live"]))
            if others:
                f = CFG["live_vs_peer"]
                best = min(others, key=lambda row: row["live"])
                oks.append(line(f"live <= {f:g} x faster peer's",
                                f"{fmt(live)} vs {best['name']} {fmt(best['live'])}",
                                f"target <= {fmt(f * best['live'])}", live <= f * best["live"]))
            if lsyncd_row:
                f = CFG["rss_vs_lsyncd"]
                oks.append(line(f"peak RSS <= {f:g} x lsyncd's",
                                f"{hwm:.1f} MiB vs {lsyncd_row['hwm']:.1f} MiB",
                                f"target <= {f * lsyncd_row['hwm']:.1f} MiB",
                                hwm <= f * lsyncd_row["hwm"]))
            return all(oks)

        P()
        if not live_verdicts(m_ratio, m_hwm, max_hwm, m_live) and rc == 0:
            rc = 1
        if any(e != 0 for e in exits) or watches != [expected]:
            rc = 2 if rc == 0 or rc == 1 else rc
            if any(e != 0 for e in exits):
                P("  clsync did not exit 0 on SIGTERM")
            if watches != [expected]:
                P("  clsync does not watch every directory")

        if peer_rows:
            P()
            P("peers (medians; same tree, same reference):")
            width = max(len(row["name"]) for row in peer_rows)
            for row in peer_rows:
                watched = (f"fanotify marks {row['marks']}, inotify watches {row['watches']}"
                           if row["kind"] == FAN else f"watches {row['watches']}")
                P(f"  {row['name']:<{width}} ready {fmt(row['ready'])} (by {row['by']}), live "
                  f"{fmt(row['live'])}, probe {fmt(row['probe'])}, ratio {row['ratio']:.2f}, "
                  f"VmHWM {row['hwm']:.1f} MiB (its rsync children {row['kids']:.1f}), "
                  f"{watched}, exit {row['exits']}, mirror diffs {row['diffs']}")
        for row in peer_rows:
            if row["kind"] != FAN:
                continue
            # Our fanotify variant: the same targets; its inotify watch count is 0 by design,
            # so instead of "watches == expected" it must have reported its fanotify mark(s).
            P()
            P(f"  {row['name']}:")
            ok = live_verdicts(row["ratio"], row["hwm"], row["max_hwm"], row["live"], "    ")
            fan_ok = all(m for m in row["marks"])
            P(f"    {'fanotify in use':<26} marks {row['marks']}  (the `ready:` line reports "
              f"fanotify mark(s), no inotify fallback)  {'PASS' if fan_ok else 'FAIL'}")
            if not (ok and fan_ok) and rc == 0:
                rc = 1
            if any(e != 0 for e in row["exits"]):
                P(f"    {row['name']} did not exit 0 on SIGTERM")
                rc = 2

        # A Markdown row set for docs/benchmarks.md.
        P()
        P("markdown:")
        P("| daemon | inotifywait -r | rsync -a | reference | ready | time until live | probe | "
          "ratio | VmHWM | watches |")
        P("|---|---|---|---|---|---|---|---|---|---|")
        P(f"| clsync (this) | {fmt(m_inw)} | {fmt(m_rs)} | {fmt(m_ref)} | {fmt(m_ready)} | "
          f"{fmt(m_live)} | {fmt(m_probe)} | {m_ratio:.2f} | {m_hwm:.1f} MiB | {watches[0] if len(watches) == 1 else watches} |")
        for row in peer_rows:
            if row["kind"] == FAN:
                # fanotify marks instead of inotify watches (and any inotify watch it holds)
                ms = sorted({m for m in row["marks"] if m is not None}) or ["none"]
                iw = row["watches"][0] if len(row["watches"]) == 1 else row["watches"]
                w = (f"{ms[0] if len(ms) == 1 else ms} fanotify mark"
                     f"{'' if ms == [1] else 's'}" + ("" if iw == 0 else f" + {iw} inotify"))
            else:
                w = row["watches"][0] if len(row["watches"]) == 1 else row["watches"]
            P(f"| {row['name']} | | | | {fmt(row['ready'])} | {fmt(row['live'])} | "
              f"{fmt(row['probe'])} | {row['ratio']:.2f} | {row['hwm']:.1f} MiB | {w} |")

    rc = report_extra(results, info.get("variants", ["clsync"]), peers, parts, rc)
    rc = report_events(info, results, info.get("variants", ["clsync"]), peers, parts, rc)

    P()
    P(f"RESULT: {'PASS' if rc == 0 else ('FAIL' if rc == 1 else 'ERROR')}")

    jpath = os.environ.get("BENCH_JSON")
    if jpath:
        with open(jpath, "w") as f:
            json.dump({"info": info, "config": CFG, "parts": sorted(parts), "runs": results,
                       "error": error, "result": rc}, f, indent=2)
    return rc


LAT_TARGET = env_float("LAT_TARGET", 1.3)
BURST_TARGET = env_float("BURST_TARGET", 1.5)
BURST_RUNS_FRACTION = env_float("BURST_RUNS_FRACTION", 0.1)  # "far fewer" than lsyncd's


def print_verdicts(verdicts: list[tuple[str, bool, str]], rc: int) -> int:
    """`name value PASS|FAIL` lines; returns rc raised to 1 if one failed."""
    width = max([40, *(len(name) for name, _, _ in verdicts)])
    for name, ok, val in verdicts:
        print(f"  {name:<{width}} {val:<14} {'PASS' if ok else 'FAIL'}")
        if not ok and rc == 0:
            rc = 1
    return rc


def report_extra(results: list[dict], owns: list[str], peers: list[str], parts: set[str],
                 rc: int) -> int:
    """Idle, latency and burst tables; returns rc raised to 1 if a target of one of our
    variants (clsync, clsync --monitor fanotify) is missed."""
    if not parts & {"idle", "latency", "burst"}:
        return rc
    P = print
    kinds = [*owns, *peers]
    names = NAMES
    rows: dict[str, dict] = {k: {} for k in kinds}
    ref: dict = {}
    if "idle" in parts:
        iws = [r["inotifywait_idle"] for r in results if "inotifywait_idle" in r]
        ref["idle_rss"] = med([i["rss_kib"] for i in iws])
        ref["idle_cpu"] = med([i["cpu_s"] for i in iws])
        ref["idle_wake"] = med([i["wakeups"] for i in iws])
        for k in kinds:
            ids = [r[k]["idle"] for r in results if k in r and "idle" in r[k]]
            if not ids:
                continue
            rows[k]["idle_rss"] = med([i["rss_kib"] for i in ids])
            rows[k]["idle_cpu"] = med([i["cpu_s"] for i in ids])
            rows[k]["idle_wake"] = med([i["wakeups"] for i in ids])
            rows[k]["idle_wake_all"] = [i["wakeups"] for i in ids]
            rows[k]["idle_nvol"] = med([i["nonvoluntary"] for i in ids])
            rows[k]["idle_rss_ratio"] = (rows[k]["idle_rss"] / ref["idle_rss"]
                                         if ref["idle_rss"] else None)
    dyn = [(r, r["dyn"]) for r in results if "dyn" in r]
    if "latency" in parts and dyn:
        ref["lat_med"] = med([r["lat_ref"]["median_s"] for r, _ in dyn])
        ref["lat_p90"] = med([r["lat_ref"]["p90_s"] for r, _ in dyn])
        for k in kinds:
            xs = [(r, d[k]["latency"]) for r, d in dyn if k in d and "latency" in d[k]]
            if not xs:
                continue
            rows[k]["lat_med"] = med([x["median_s"] for _, x in xs])
            rows[k]["lat_p90"] = med([x["p90_s"] for _, x in xs])
            rows[k]["lat_ratio"] = med([x["median_s"] / r["lat_ref"]["median_s"] for r, x in xs])
            rows[k]["lat_runs"] = med([x["rsync_runs"] for _, x in xs])
    if "burst" in parts and dyn:
        ref["burst_rsync"] = med([r["burst_ref"]["rsync_s"] for r, _ in dyn])
        ref["burst_create"] = med([r["burst_ref"]["create_s"] for r, _ in dyn])
        for k in kinds:
            xs = [(r, d[k]["burst"]) for r, d in dyn if k in d and "burst" in d[k]]
            if not xs:
                continue
            conv = [x["converge_s"] for _, x in xs]
            rows[k]["burst_conv"] = None if None in conv else med(conv)
            rows[k]["burst_ratio"] = (None if None in conv else
                                      med([x["converge_s"] / r["burst_ref"]["rsync_s"]
                                           for r, x in xs]))
            rows[k]["burst_lost"] = [x["lost"] for _, x in xs]
            rows[k]["burst_runs"] = med([x["rsync_runs"] for _, x in xs])
            rows[k]["burst_create"] = med([x["create_s"] for _, x in xs])
    if dyn:
        for k in kinds:
            xs = [d[k] for _, d in dyn if k in d]
            if xs:
                rows[k]["min_live"] = med([x["live_s"] for x in xs])
                rows[k]["min_exit"] = [x["exit_code"] for x in xs]
                rows[k]["min_diffs"] = [x["mirror_diffs"] for x in xs]

    def ms(x):
        return "-" if x is None else f"{x * 1000:.1f} ms"

    def rt(x):
        return "-" if x is None else f"{x:.2f}"

    P()
    P(f"latency, burst and idle (medians over {len(results)} run(s); latency and burst at "
      f"minimal delays, idle {IDLE_S:g} s after live + {IDLE_SETTLE_S:g} s at default delays):")
    md = ["| daemon | idle VmRSS | idle CPU | idle wake-ups | latency median | latency p90 | "
          "latency ratio | burst converged | burst ratio | lost | rsync runs (burst) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    md.append(f"| reference | {fmt(mib(ref.get('idle_rss')), ' MiB', 1)} (inotifywait) | "
              f"{fmt(ref.get('idle_cpu'), ' s', 3)} | {fmt(ref.get('idle_wake'), '', 0)} | "
              f"{ms(ref.get('lat_med'))} | {ms(ref.get('lat_p90'))} | 1 | "
              f"{fmt(ref.get('burst_rsync'))} | 1 | | 1 |")
    for k in kinds:
        w = rows[k]
        if not w:
            continue
        md.append(f"| {names.get(k, k)} | {fmt(mib(w.get('idle_rss')), ' MiB', 1)} "
                  f"({rt(w.get('idle_rss_ratio'))}x) | {fmt(w.get('idle_cpu'), ' s', 3)} | "
                  f"{fmt(w.get('idle_wake'), '', 0)} | {ms(w.get('lat_med'))} | "
                  f"{ms(w.get('lat_p90'))} | {rt(w.get('lat_ratio'))} | "
                  f"{fmt(w.get('burst_conv'))} | {rt(w.get('burst_ratio'))} | "
                  f"{w.get('burst_lost', '-')} | {fmt(w.get('burst_runs'), '', 0)} |")
    for line in md:
        P("  " + line)
    for k in kinds:
        w = rows[k]
        if "min_live" in w:
            P(f"  {names.get(k, k)} at minimal delays: time until live {fmt(w['min_live'])}, "
              f"exit {w['min_exit']}, mirror diffs {w['min_diffs']}"
              + (f", rsync runs per latency round of {LAT_CHANGES} changes "
                 f"{fmt(w.get('lat_runs'), '', 0)}" if "lat_runs" in w else "")
              + (f", burst created in {fmt(w.get('burst_create'))}" if "burst_create" in w
                 else ""))
        if "idle_wake_all" in w:
            P(f"  {names.get(k, k)} idle wake-ups per run {w['idle_wake_all']} "
              f"(involuntary median {fmt(w['idle_nvol'], '', 0)})")

    verdicts = []
    for k in owns:
        c = rows[k]
        pre = "" if k == "clsync" else "fanotify: "  # the variant the verdict is about
        if "idle_wake_all" in c:
            verdicts.append((f"{pre}idle wake-ups == 0 (every run)",
                             max(c["idle_wake_all"]) == 0, f"{c['idle_wake_all']}"))
        if "lat_ratio" in c:
            verdicts.append((f"{pre}latency median / plain rsync <= {LAT_TARGET:g}",
                             c["lat_ratio"] <= LAT_TARGET, f"{c['lat_ratio']:.2f}"))
            for pk in peers:
                pl = rows[pk].get("lat_med")
                if pl is not None:
                    verdicts.append((f"{pre}latency median below {names.get(pk, pk)}'s",
                                     c["lat_med"] < pl,
                                     f"{ms(c['lat_med'])} vs {ms(pl)}"))
        if "burst_lost" in c:
            verdicts.append((f"{pre}burst: zero lost", max(c["burst_lost"]) == 0,
                             f"{c['burst_lost']}"))
            verdicts.append((f"{pre}burst converged / plain rsync <= {BURST_TARGET:g}",
                             c["burst_ratio"] is not None and c["burst_ratio"] <= BURST_TARGET,
                             rt(c["burst_ratio"])))
            lr = rows.get("lsyncd", {}).get("burst_runs")
            if lr:
                # One run is the floor: a burst cannot be synced in fewer.
                verdicts.append((f"{pre}burst rsync runs <= max(1, {BURST_RUNS_FRACTION:g} x "
                                 "lsyncd's)",
                                 c["burst_runs"] <= max(1.0, BURST_RUNS_FRACTION * lr),
                                 f"{c['burst_runs']:.0f} vs {lr:.0f}"))
    P()
    return print_verdicts(verdicts, rc)


def report_events(info: dict, results: list[dict], owns: list[str], peers: list[str],
                  parts: set[str], rc: int) -> int:
    """The events table; returns rc raised to 1 if a target of one of our variants is
    missed (capacity >= EVENTS_TARGET events/s of one core, no queue overflow)."""
    if "events" not in parts:
        return rc
    P = print
    rows = []
    for k in [*owns, *peers]:
        xs = [r["events"][k]["events"] for r in results if k in r.get("events", {})]
        if not xs:
            continue
        caps = [x["capacity"] for x in xs]
        rows.append({
            "kind": k, "name": NAMES.get(k, k),
            "rate": med([x["rate"] for x in xs]), "calls": med([x["calls"] for x in xs]),
            "cpu": med([x["cpu_s"] for x in xs]), "cpu_during": med([x["cpu_during_s"] for x in xs]),
            "us": med([x["us_per_event"] for x in xs]),
            "cap": med(caps), "cap_all": caps,
            "bound": any(x["capacity_lower_bound"] for x in xs),
            "drain": med([x["drain_s"] for x in xs]),
            "unsettled": [i + 1 for i, x in enumerate(xs) if not x["settled"]],
            "overflow": [x["overflow"] for x in xs],
            "overflow_line": next((x["overflow_lines"][0] for x in xs if x["overflow_lines"]),
                                  None),
            "exited": [x["exited"] for x in xs],
            "exits": [r["events"][k]["exit_code"] for r in results if k in r.get("events", {})],
            "diffs": [r["events"][k]["mirror_diffs"] for r in results
                      if k in r.get("events", {})],
        })
    P()
    mq = info.get("max_queued_events")
    secs = env_float("EVENTS_SECONDS", 3.0)
    P(f"events (medians over {len(results)} run(s)): {EVENTS_WORKERS} process(es) calling "
      f"os.utime at {EVENTS_RATE:.0f} events/s in total (0: unthrottled) over {EVENTS_DIRS * EVENTS_FILES} watched empty files for {secs:g} s (one "
      f"IN_ATTRIB each); the daemon's own CPU (utime+stime) from before the storm until it is "
      f"idle again; fs.inotify.max_queued_events = {mq if mq is not None else '?'}:")
    md = ["| daemon | events/s generated | daemon CPU | CPU per event | capacity (events/s, "
          "one core) | queue overflow | busy after the storm |",
          "|---|---|---|---|---|---|---|"]
    for w in rows:
        ov = ("no" if not any(w["overflow"]) else
              f"YES (runs {[i + 1 for i, o in enumerate(w['overflow']) if o]})")
        star = "*" if any(w["overflow"]) else ""
        md.append(f"| {w['name']} | {w['rate']:,.0f} | {fmt(w['cpu'], ' s', 2)} | "
                  f"{fmt(w['us'], ' µs', 2)}{star} | {'>= ' if w['bound'] else ''}"
                  f"{w['cap'] or 0:,.0f}{star} | {ov} | {fmt(w['drain'])} |")
    for line in md:
        P("  " + line)
    if any(any(w["overflow"]) for w in rows):
        P("  * the queue overflowed: the kernel dropped events, so the daemon handled fewer "
          "than were generated (plus a rescan): CPU per event is too low, capacity too high")
    for w in rows:
        extra = []
        if w["unsettled"]:
            extra.append(f"CPU still rising after {EVENTS_SETTLE_MAX:g} s in run(s) "
                         f"{w['unsettled']}")
        if any(w["exited"]):
            extra.append("EXITED during the storm")
        if w["overflow_line"]:
            extra.append(f"log: {w['overflow_line']!r}")
        if w["kind"] == "clsync-c":
            extra.append("(it logs no overflow)")
        P(f"  {w['name']}: {w['calls']:,.0f} events, CPU {fmt(w['cpu_during'])} during the "
          f"storm, exit {w['exits']}, mirror diffs {w['diffs']}"
          + ("; " + "; ".join(extra) if extra else ""))
    verdicts = []
    for w in rows:
        if w["kind"] not in OWN_KINDS:
            continue
        pre = "events" if w["kind"] == "clsync" else "fanotify: events"
        verdicts.append((f"{pre}: capacity >= {EVENTS_CAPACITY_TARGET:,.0f} events/s",
                         w["cap"] is not None and w["cap"] >= EVENTS_CAPACITY_TARGET,
                         f"{'>= ' if w['bound'] else ''}{w['cap'] or 0:,.0f}"))
        verdicts.append((f"{pre}: no queue overflow (every run)", not any(w["overflow"]),
                         f"{['yes' if o else 'no' for o in w['overflow']]}"))
    if verdicts:
        P()
        rc = print_verdicts(verdicts, rc)
    return rc


def _on_signal(signum, _frame):
    log(f"signal {signum}: stopping what was started and removing the temp dir")
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
