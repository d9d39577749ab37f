#!/usr/bin/env python3
"""Live-sync benchmark for clsync (Python 3.11 stdlib only; started by bench/live.sh).

Per run, on a warm page cache, with fresh destination directories:
  a. inotifywait -r -m SRC: time from start until "Watches established." on stderr;
  b. rsync -a SRC/ DST1/: wall time;
  c. clsync SRC DST2 --status-file F (short form, default delays): time from start until the
     status file reads `running` AND a probe file written into SRC after that has arrived in
     DST2 with the right content ("time until live"); the probe latency on its own; VmHWM,
     inotify watch count, then SIGTERM and exit code.
Reference = a + b. Targets: median(time until live / reference) <= 1.3, median VmHWM < 20 MiB.

With --with-peers, lsyncd and the original C clsync are measured the same way when installed.

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
  RATIO_TARGET [1.3], RSS_TARGET_MIB [20]
  CLSYNC_ARGS    extra options for clsync (e.g. "-t 0.2 -w 0.2"); default none, i.e. the
                 short form's default delays
  CLSYNC_REV     revision to print for the binary (default: git describe of this checkout)
  CLSYNC_C_BIN   the original C clsync (default: `clsync` on PATH if it is the C one)
  LSYNCD_BIN     lsyncd (default: `lsyncd` on PATH)

Exit code: 0 all targets met, 1 a target missed, 2 error (a daemon failed, never became
live, a probe never arrived, or clsync exited non-zero on SIGTERM).
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
    "ratio_target": env_float("RATIO_TARGET", 1.3),
    "rss_target_mib": env_float("RSS_TARGET_MIB", 20.0),
}

# Everything we start, so the exit path can stop it (by pid / own process group only).
CHILDREN: list[subprocess.Popen] = []


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
                  what: str, sampler: ChildSampler | None = None) -> float:
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
        time.sleep(POLL)


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
               ready_regex: str | None = None, stop_timeout: float = 300.0) -> dict:
    """Start a sync daemon, detect readiness, probe, sample, SIGTERM.

    ready = "status": status_file reads `running`;
            "log":    ready_regex matches the daemon's output;
            "preprobe": a probe written before the start has arrived in DST (the initial
                        sync has reached the last directory).
    Then one probe is written and must arrive: time until live = start -> its arrival.
    """
    logpath = os.path.join(work, f"{kind}-run{run}.log")
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


# ---------------------------------------------------------------- peers

def find_c_clsync(own_bin: str) -> str | None:
    cand = os.environ.get("CLSYNC_C_BIN") or shutil.which("clsync")
    if not cand or not os.access(cand, os.X_OK):
        return None
    if os.path.realpath(cand) == os.path.realpath(own_bin):
        return None
    try:
        r = subprocess.run([cand, "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return cand if re.search(r"clsync v0\.", r.stdout + r.stderr) else None


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
    args = ap.parse_args()

    own_bin = os.environ.get("CLSYNC_BIN")
    if not own_bin:
        log("CLSYNC_BIN is not set (run bench/live.sh, which builds it)")
        return 2
    own_bin = os.path.abspath(own_bin)
    for tool in ("inotifywait", "rsync", "find"):
        if not shutil.which(tool):
            log(f"`{tool}` not found (inotifywait is in Debian's inotify-tools)")
            return 2

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
    rsync_path = shutil.which("rsync")
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
            r["inotifywait"] = measure_inotifywait(src)
            log(f"run {run}: inotifywait -r setup {r['inotifywait']['setup_s']:.2f}s "
                f"({r['inotifywait']['watches']} watches)")
            dst1 = os.path.join(work, f"dst-rsync-{run}")
            r["rsync"] = measure_rsync(src, dst1)
            dsts.append(dst1)
            log(f"run {run}: rsync -a {r['rsync']['wall_s']:.2f}s "
                f"(other CPU {r['rsync']['other_cpu']:.0%})")
            r["reference_s"] = r["inotifywait"]["setup_s"] + r["rsync"]["wall_s"]

            dst2 = os.path.join(work, f"dst-clsync-{run}")
            status = os.path.join(work, f"status-{run}")
            r["clsync"] = run_daemon(
                "clsync", [own_bin, *extra, src, dst2, "--status-file", status], src, dst2,
                probe_dir, work, run, ready="status", status_file=status)
            dsts.append(dst2)
            c = r["clsync"]
            c["ratio"] = c["live_s"] / r["reference_s"]
            log(f"run {run}: clsync running {c['ready_s']:.2f}s, live {c['live_s']:.2f}s "
                f"(probe {c['probe_latency_s']:.2f}s), ratio {c['ratio']:.2f}, "
                f"VmHWM {mib(c['vmhwm_kib']):.1f} MiB, watches {c['watches']}, "
                f"exit {c['exit_code']} (other CPU {c['other_cpu']:.0%})")

            for peer in peers:
                dstp = os.path.join(work, f"dst-{peer}-{run}")
                if peer == "lsyncd":
                    conf = os.path.join(work, f"lsyncd-{run}.conf")
                    with open(conf, "w") as f:
                        f.write('settings { nodaemon = true }\n'
                                f'sync {{ default.rsync, source = "{src}", '
                                f'target = "{dstp}", delay = 1 }}\n')
                    pr = run_daemon(peer, [lsyncd_bin, conf], src, dstp, probe_dir, work,
                                    run, ready="log", ready_regex=r"Startup of .* finished")
                else:
                    # 0.4.5 never writes `running` to its status file, so readiness is a
                    # probe written before the start arriving; same delays as our short form.
                    os.makedirs(dstp, exist_ok=True)
                    pr = run_daemon(peer, [c_bin, "-M", "rsyncdirect", "-W", src, "-D", dstp,
                                           "-S", rsync_path, "-w", "1", "-t", "1"],
                                    src, dstp, probe_dir, work, run, ready="preprobe")
                dsts.append(dstp)
                pr["ratio"] = pr["live_s"] / r["reference_s"]
                r[peer] = pr
                log(f"run {run}: {peer} ready {pr['ready_s']:.2f}s, live {pr['live_s']:.2f}s "
                    f"(probe {pr['probe_latency_s']:.2f}s), ratio {pr['ratio']:.2f}, "
                    f"VmHWM {mib(pr['vmhwm_kib']):.1f} MiB, watches {pr['watches']}, "
                    f"exit {pr['exit_code']}")
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

    return report(info, results, peers, error)


def report(info: dict, results: list[dict], peers: list[str], error: str | None) -> int:
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

    ok_ratio = m_ratio <= CFG["ratio_target"]
    ok_rss = m_hwm < CFG["rss_target_mib"]
    P()
    P(f"  ratio live/reference      {m_ratio:.2f}  (target <= {CFG['ratio_target']})  "
      f"{'PASS' if ok_ratio else 'FAIL'}")
    P(f"  peak RSS (VmHWM)          {m_hwm:.1f} MiB (max {max_hwm:.1f})  "
      f"(target < {CFG['rss_target_mib']:g} MiB)  {'PASS' if ok_rss else 'FAIL'}")
    if not (ok_ratio and ok_rss) and rc == 0:
        rc = 1
    if any(e != 0 for e in exits) or watches != [expected]:
        rc = 2 if rc == 0 or rc == 1 else rc
        if any(e != 0 for e in exits):
            P("  clsync did not exit 0 on SIGTERM")
        if watches != [expected]:
            P("  clsync does not watch every directory")

    peer_rows = []
    for peer in peers:
        pr = [r[peer] for r in results if peer in r]
        if not pr:
            continue
        row = {
            "name": peer, "ready": med([x["ready_s"] for x in pr]),
            "live": med([x["live_s"] for x in pr]),
            "probe": med([x["probe_latency_s"] for x in pr]),
            "ratio": med([x["ratio"] for x in pr]),
            "hwm": mib(med([x["vmhwm_kib"] for x in pr])),
            "kids": mib(med([x["children_peak_kib"] for x in pr])),
            "watches": sorted({x["watches"] for x in pr}),
            "exits": [x["exit_code"] for x in pr],
            "diffs": [x["mirror_diffs"] for x in pr],
            "by": pr[0]["ready_by"],
        }
        peer_rows.append(row)
    if peer_rows:
        P()
        P("peers (medians; same tree, same reference):")
        for row in peer_rows:
            P(f"  {row['name']:<9} ready {fmt(row['ready'])} (by {row['by']}), live "
              f"{fmt(row['live'])}, probe {fmt(row['probe'])}, ratio {row['ratio']:.2f}, "
              f"VmHWM {row['hwm']:.1f} MiB (its rsync children {row['kids']:.1f}), "
              f"watches {row['watches']}, exit {row['exits']}, mirror diffs {row['diffs']}")

    # A Markdown row set for docs/benchmarks.md.
    P()
    P("markdown:")
    P("| daemon | inotifywait -r | rsync -a | reference | ready | time until live | probe | "
      "ratio | VmHWM | watches |")
    P("|---|---|---|---|---|---|---|---|---|---|")
    P(f"| clsync (this) | {fmt(m_inw)} | {fmt(m_rs)} | {fmt(m_ref)} | {fmt(m_ready)} | "
      f"{fmt(m_live)} | {fmt(m_probe)} | {m_ratio:.2f} | {m_hwm:.1f} MiB | {watches[0] if len(watches) == 1 else watches} |")
    for row in peer_rows:
        P(f"| {row['name']} | | | | {fmt(row['ready'])} | {fmt(row['live'])} | "
          f"{fmt(row['probe'])} | {row['ratio']:.2f} | {row['hwm']:.1f} MiB | "
          f"{row['watches'][0] if len(row['watches']) == 1 else row['watches']} |")

    P()
    P(f"RESULT: {'PASS' if rc == 0 else ('FAIL' if rc == 1 else 'ERROR')}")

    jpath = os.environ.get("BENCH_JSON")
    if jpath:
        with open(jpath, "w") as f:
            json.dump({"info": info, "config": CFG, "runs": results, "error": error,
                       "result": rc}, f, indent=2)
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
