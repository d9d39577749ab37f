#!/usr/bin/env python3
"""The measuring half of bench/link.sh (which sets up the namespace, the link and sshd, and
removes them again); python3 stdlib only.

    link.py relay LISTEN TARGET DELAY_MS   a TCP relay holding each chunk DELAY_MS per way
    link.py run                            the measurements (environment from link.sh)

Parts, for each daemon (our clsync at `-t 0 -w 0`, lsyncd's default.rsyncssh at delay 0),
each against the same work done by plain rsync over a warm ssh connection (a ControlMaster
opened before the part):
  initial   a tree of DIRS directories x FILES_PER_DIR files plus `big/` (BIG files):
            start until the daemon is live (clsync: status `running`; lsyncd: `Startup of
            ... finished`); reference: rsync -a of the tree.
  latency   LAT_N times a new ~150-byte file in the deepest directory, until it is at the
            destination with its content (polled every 1 ms); reference: the same write
            and `rsync -a FILE host:DST/DIR/`.
  burst     BURST new files in 200 new directories, until all are at the destination;
            reference: rsync -a of the same files.
  rename    `big/` (BIG files) renamed, until the destination has the new name with every
            file and not the old one; ssh connections and sessions (sshd's log), bytes
            over the veth; target: <= 3 round trips + plain rsync of the changed parent
            (`rsync -d --delete`, not recursive); reference: `ssh mv` + that rsync.
  idle      after IDLE_S (65) s without changes, one more change (a ControlPersist of
            60 s has ended the shared connection by then): its latency, new connections.
  restart   clsync stopped and started again on the mirrored tree with 10 files changed
            meanwhile: full (today's initial rsync) and, if the binary has `--index-dir`,
            warm (`--initial-sync index`); lsyncd's restart (always full).
"""
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

E = os.environ


def relay(listen: str, target: str, delay_ms: str) -> None:
    """Forwards TCP connections to `target`, each chunk written `delay_ms` after it was read,
    in both directions (order kept): a link's propagation delay in user space."""
    delay = float(delay_ms) / 1000.0
    host, port = listen.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    def pump(a: socket.socket, b: socket.socket) -> None:
        import collections
        q: collections.deque = collections.deque()
        cv = threading.Condition()
        done = [False]

        def writer() -> None:
            while True:
                with cv:
                    while not q and not done[0]:
                        cv.wait()
                    if not q:
                        break
                    due, data = q.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    b.sendall(data)
                except OSError:
                    break
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        while True:
            try:
                data = a.recv(262144)
            except OSError:
                data = b""
            with cv:
                if not data:
                    done[0] = True
                    cv.notify()
                    break
                q.append((time.monotonic() + delay, data))
                cv.notify()
        t.join()

    def serve(c: socket.socket) -> None:
        try:
            u = socket.create_connection((thost, int(tport)))
        except OSError:
            c.close()
            return
        for s in (c, u):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = threading.Thread(target=pump, args=(u, c), daemon=True)
        t.start()
        pump(c, u)
        t.join()
        c.close()
        u.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


# ---------------------------------------------------------------- the measuring

TMP = E.get("LINK_TMP", "")
HOST = "root@" + E.get("LINK_HOST", "")
PORT = E.get("LINK_PORT", "")
KEY = E.get("LINK_KEY", "")
SSHD_LOG = E.get("LINK_SSHD_LOG", "")
VETH = E.get("LINK_VETH", "")
CLSYNC = E.get("CLSYNC_BIN", "")
DIRS = int(E.get("DIRS", "2000"))
FILES = int(E.get("FILES_PER_DIR", "5"))
FANOUT = int(E.get("FANOUT", "100"))
BIG = int(E.get("BIG", "10000"))
BURST = int(E.get("BURST", "20000"))
LAT_N = int(E.get("LAT_N", "20"))
TIMEOUT = float(E.get("TIMEOUT", "600"))
IDLE_S = float(E.get("IDLE_S", "65"))
RTT = 2 * float(E.get("LINK_DELAY_MS", "10")) / 1000.0
SSH_OPTS = ["-p", PORT, "-i", KEY, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
CHILDREN: list = []
OUT: list = []


def say(s: str = "") -> None:
    print(s, flush=True)
    OUT.append(s)


def sh(argv: list, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if r.returncode not in (0, 24):
        raise SystemExit(f"bench: {argv[0]} failed ({r.returncode}): {r.stderr.decode()[-800:]}")
    return r


def timed(argv: list) -> float:
    t = time.monotonic()
    sh(argv)
    return time.monotonic() - t


def spawn(argv: list, log: str, **kw) -> subprocess.Popen:
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=open(log, "wb"),
                         stderr=subprocess.STDOUT, start_new_session=True, **kw)
    CHILDREN.append(p)
    return p


def stop(p: subprocess.Popen) -> int:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    try:
        os.killpg(p.pid, signal.SIGKILL)  # its ssh masters, if any linger
    except OSError:
        pass
    return p.returncode


def wait_until(pred, what: str, p: subprocess.Popen = None, poll: float = 0.001,
               timeout: float = None) -> float:
    t0 = time.monotonic()
    deadline = t0 + (timeout or TIMEOUT)
    while not pred():
        if p is not None and p.poll() is not None:
            raise SystemExit(f"bench: daemon exited ({p.returncode}) waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - t0


def has(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


def count_files(d: str) -> int:
    n = 0
    try:
        for _, _, fs in os.walk(d):
            n += len(fs)
    except OSError:
        pass
    return n


class Sshd:
    """Counts in sshd's log: new connections and sessions that ran a command."""

    def __init__(self):
        self.mark()

    def counts(self):
        try:
            text = open(SSHD_LOG, encoding="utf-8", errors="replace").read()
        except OSError:
            return (0, 0)
        return (text.count("Accepted publickey"), text.count("Starting session: command"))

    def mark(self):
        self.base = self.counts()

    def since(self):
        c = self.counts()
        return (c[0] - self.base[0], c[1] - self.base[1])


def veth_bytes() -> int:
    b = 0
    for k in ("tx_bytes", "rx_bytes"):
        with open(f"/sys/class/net/{VETH}/statistics/{k}") as f:
            b += int(f.read())
    return b


def make_tree(src: str) -> list:
    rnd = random.Random(1)
    dirs = []
    for i in range(DIRS):
        top, sub = divmod(i, FANOUT)
        d = os.path.join(src, f"d{top:04d}", f"s{sub:02d}")
        os.makedirs(d, exist_ok=True)
        dirs.append(d)
        for j in range(FILES):
            with open(os.path.join(d, f"f{j}"), "wb") as f:
                f.write(os.urandom(rnd.randint(200, 600)))
    big = os.path.join(src, "big")
    os.makedirs(big)
    for j in range(BIG):
        with open(os.path.join(big, f"b{j:05d}"), "wb") as f:
            f.write(os.urandom(rnd.randint(200, 600)))
    return dirs


def mirror_diffs(src: str, dst: str) -> int:
    r = sh(["rsync", "-anH", "--delete", "-i", src + "/", dst + "/"])
    return len([x for x in r.stdout.splitlines() if x.strip()])


class Ref:
    """Plain rsync over a warm ControlMaster."""

    def __init__(self):
        self.ctl = os.path.join(TMP, "ref.ctl")
        sh(["ssh", *SSH_OPTS, "-o", "ControlMaster=yes", "-o", f"ControlPath={self.ctl}",
            "-o", "ControlPersist=yes", "-fN", HOST])
        self.e = " ".join(["ssh", *SSH_OPTS, "-o", f"ControlPath={self.ctl}"])

    def rsync(self, *args) -> float:
        return timed(["rsync", "-e", self.e, *args])

    def ssh(self, *cmd) -> float:
        return timed(["ssh", *SSH_OPTS, "-o", f"ControlPath={self.ctl}", HOST, *cmd])

    def close(self):
        subprocess.run(["ssh", *SSH_OPTS, "-o", f"ControlPath={self.ctl}", "-O", "exit", HOST],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def clsync_supports(opt: str) -> bool:
    r = subprocess.run([CLSYNC, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return opt.encode() in r.stdout


def clsync_argv(src: str, dst: str, status: str, extra: list) -> list:
    return [CLSYNC, "-t", "0", "-w", "0", "--status-file", status,
            "--ssh-identity", KEY, "--ssh-port", PORT,
            "--ssh-option=-oStrictHostKeyChecking=no", "--ssh-option=-oUserKnownHostsFile=/dev/null",
            "--ssh-option=-oLogLevel=ERROR", *extra, src, f"{HOST}:{dst}"]


def status_is(path: str, word: str):
    def f():
        try:
            return open(path).read().strip() == word
        except OSError:
            return False
    return f


def lsyncd_start(src: str, dst: str, tag: str):
    conf = os.path.join(TMP, f"lsyncd-{tag}.lua")
    log = os.path.join(TMP, f"lsyncd-{tag}.log")
    host = HOST.split("@", 1)[1]
    with open(conf, "w") as f:
        f.write(f"""settings {{ nodaemon = true, logfile = "{log}" }}
sync {{
    default.rsyncssh,
    source = "{src}",
    host = "root@{host}",
    targetdir = "{dst}",
    delay = 0,
    ssh = {{
        port = {PORT},
        identityFile = "{KEY}",
        options = {{
            BatchMode = "yes", StrictHostKeyChecking = "no",
            UserKnownHostsFile = "/dev/null", LogLevel = "ERROR",
            ControlMaster = "auto", ControlPath = "{TMP}/lsyncd-%C", ControlPersist = "60",
        }},
    }},
}}
""")
    open(log, "w").close()
    t0 = time.monotonic()
    p = spawn([E.get("LSYNCD_BIN", "lsyncd"), conf], log + ".out")

    def ready():
        try:
            return "Startup of" in open(log, errors="replace").read()
        except OSError:
            return False
    wait_until(ready, "lsyncd's start-up", p, poll=0.005)
    return p, time.monotonic() - t0


def latency(src: str, dst: str, rel: str, tag: str, p, n: int = LAT_N) -> list:
    out = []
    for i in range(n):
        data = f"{tag} change {i} ".encode() * 8
        name = os.path.join(rel, f"lat-{tag}-{i}")
        t0 = time.monotonic()
        with open(os.path.join(src, name), "wb") as f:
            f.write(data)
        wait_until(lambda: has(os.path.join(dst, name), data), f"{tag} latency probe", p)
        out.append(time.monotonic() - t0)
        time.sleep(0.1)
    return out


def latency_ref(ref: Ref, src: str, dst: str, rel: str) -> list:
    out = []
    for i in range(LAT_N):
        data = f"ref change {i} ".encode() * 8
        name = os.path.join(rel, f"lat-ref-{i}")
        t0 = time.monotonic()
        with open(os.path.join(src, name), "wb") as f:
            f.write(data)
        # Until the file is there, as for the daemons: rsync's closing exchanges come after.
        r = subprocess.Popen(["rsync", "-a", "-e", ref.e, os.path.join(src, name),
                              f"{HOST}:{dst}/{rel}/"])
        wait_until(lambda: has(os.path.join(dst, name), data), "reference probe")
        out.append(time.monotonic() - t0)
        if r.wait() != 0:
            raise SystemExit(f"bench: reference rsync failed ({r.returncode})")
        time.sleep(0.1)
    return out


def make_burst(root: str) -> list:
    rnd = random.Random(2)
    dirs = []
    per = max(1, BURST // 200)
    for d in range(200):
        dd = os.path.join(root, f"b{d:03d}")
        os.makedirs(dd)
        dirs.append(dd)
        for j in range(per):
            fd = os.open(os.path.join(dd, f"f{j}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, os.urandom(rnd.randint(100, 300)))
            os.close(fd)
    return dirs


def burst_done(dst: str, n: int):
    def f():
        return count_files(dst) >= n
    return f


def rename_done(dst: str, old: str, new: str):
    def f():
        if os.path.lexists(os.path.join(dst, old)):
            return False
        try:
            return len(os.listdir(os.path.join(dst, new))) >= BIG
        except OSError:
            return False
    return f


def quiet() -> float:
    """The last time the veth's byte counters moved (from now on; now if they do not),
    once they stood still for 0.3 s or 3 round trips."""
    still = max(0.3, 3 * RTT)
    last, seen = time.monotonic(), veth_bytes()
    while time.monotonic() - last < still:
        time.sleep(0.002)
        b = veth_bytes()
        if b != seen:
            seen, last = b, time.monotonic()
    return last


def fmt(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def run() -> int:
    res: dict = {"link": E.get("LINK_KIND"), "qdisc": E.get("LINK_QDISC")}
    src = os.path.join(TMP, "src")
    os.makedirs(src)
    dirs = make_tree(src)
    deep = os.path.relpath(dirs[-1], src)
    sshd = Sshd()
    rev = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse",
                          "--short", "HEAD"], stdout=subprocess.PIPE, text=True).stdout.strip()
    load = open("/proc/loadavg").read().split()[:3]
    say(f"clsync link benchmark - {time.strftime('%Y-%m-%dT%H:%M:%S%z')}")
    say(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}, load {' '.join(load)}; "
        f"{subprocess.run(['rsync', '--version'], stdout=subprocess.PIPE, text=True).stdout.splitlines()[0]}")
    say(f"clsync: {CLSYNC} (git {rev})")
    say(f"link: {E.get('LINK_KIND')}: {E.get('LINK_QDISC')}; delay {E.get('LINK_DELAY_MS')} ms "
        f"each way, rate {E.get('LINK_RATE')}")
    say(f"tree: {DIRS} dirs x {FILES} files + big/ {BIG} files; burst {BURST} files; "
        f"latency {LAT_N} changes")

    # A cold ssh connection, for comparing with the rest.
    t0 = time.monotonic()
    sh(["ssh", *SSH_OPTS, HOST, "true"])
    res["ssh_cold"] = time.monotonic() - t0
    ref = Ref()
    res["ssh_warm"] = statistics.median(ref.ssh("true") for _ in range(5))
    say(f"ssh: a new connection running `true` {fmt(res['ssh_cold'])}; over the warm "
        f"ControlMaster {fmt(res['ssh_warm'])} (nominal round trip {fmt(RTT)})")

    # ------------------------------------------------------------------ reference
    dref = os.path.join(TMP, "dst-ref")
    os.makedirs(dref)
    r = {}
    r["initial"] = ref.rsync("-a", src + "/", f"{HOST}:{dref}/")
    r["latency"] = latency_ref(ref, src, dref, deep)
    bsrc = os.path.join(TMP, "burst-ref")
    os.makedirs(bsrc)
    make_burst(bsrc)
    r["burst"] = ref.rsync("-a", bsrc + "/", f"{HOST}:{dref}/burst-ref/")
    shutil.rmtree(bsrc)
    # A renamed directory: `mv` over the warm connection, then the changed parent alone.
    os.rename(os.path.join(src, "big"), os.path.join(src, "big-ref"))
    sshd.mark()
    b0 = veth_bytes()
    r["rename_mv"] = ref.ssh("mv", "-T", f"{dref}/big", f"{dref}/big-ref")
    r["rename_parent"] = ref.rsync("-d", "-lptgoD", "--delete", "--exclude=/burst-ref",
                                   src + "/", f"{HOST}:{dref}/")
    r["rename_bytes"] = veth_bytes() - b0
    r["rename_ssh"] = sshd.since()
    os.rename(os.path.join(src, "big-ref"), os.path.join(src, "big"))
    sshd.mark()
    b0 = veth_bytes()
    r["rename_naive"] = ref.rsync("-a", "--delete", os.path.join(src, "big") + "/",
                                  f"{HOST}:{dref}/big-naive/")
    r["rename_naive_bytes"] = veth_bytes() - b0
    res["ref"] = r
    res["target_rename"] = 3 * RTT + r["rename_parent"]
    res["target_latency"] = 1.2 * statistics.median(r["latency"])

    # ------------------------------------------------------------------ daemons
    daemons = ["clsync"] + (["lsyncd"] if E.get("WITH_LSYNCD") == "1" else [])
    has_index = clsync_supports("--index-dir")
    for tag in daemons:
        d = {}
        dst = os.path.join(TMP, f"dst-{tag}")
        os.makedirs(dst)
        status = os.path.join(TMP, f"status-{tag}")
        idx = os.path.join(TMP, "index")
        extra = ["--index-dir", idx] if has_index else []
        sshd.mark()
        if tag == "clsync":
            t0 = time.monotonic()
            p = spawn(clsync_argv(src, dst, status, extra), os.path.join(TMP, "clsync-1.log"))
            d["initial"] = wait_until(status_is(status, "running"), "clsync running", p, 0.005)
        else:
            p, d["initial"] = lsyncd_start(src, dst, "1")
        d["initial_ssh"] = sshd.since()
        time.sleep(0.5)
        sshd.mark()
        d["latency"] = latency(src, dst, deep, tag, p)
        d["latency_ssh"] = sshd.since()
        broot = os.path.join(src, f"burst-{tag}")
        os.makedirs(broot)
        sshd.mark()
        t0 = time.monotonic()
        make_burst(broot)
        made = time.monotonic() - t0
        d["burst"] = wait_until(burst_done(os.path.join(dst, f"burst-{tag}"), (BURST // 200) * 200),
                                f"{tag} burst", p, 0.05)
        d["burst_made"] = made
        d["burst_ssh"] = sshd.since()
        time.sleep(1.0)
        sshd.mark()
        b0 = veth_bytes()
        new = f"big-{tag}"
        os.rename(os.path.join(src, "big"), os.path.join(src, new))
        t0 = time.monotonic()
        d["rename_arrived"] = wait_until(rename_done(dst, "big", new), f"{tag} rename", p, 0.002)
        # Converged = the link is quiet again: what follows the move (a check of the
        # renamed tree) is part of the cost.
        d["rename"] = quiet() - t0
        d["rename_bytes"] = veth_bytes() - b0
        d["rename_ssh"] = sshd.since()
        d["rename_same_inode"] = None
        os.rename(os.path.join(src, new), os.path.join(src, "big"))
        wait_until(rename_done(dst, new, "big"), f"{tag} rename back", p, 0.01)
        if IDLE_S > 0:
            # One change after a quiet spell longer than a ControlPersist of 60 s.
            time.sleep(IDLE_S)
            sshd.mark()
            d["idle_latency"] = latency(src, dst, deep, f"{tag}-idle", p, 1)[0]
            d["idle_ssh"] = sshd.since()
        time.sleep(0.5)
        d["exit"] = stop(p)
        # Changes while nothing runs, then a restart.
        for i in range(10):
            with open(os.path.join(src, dirs[i * 7 % len(dirs)], "f0"), "ab") as f:
                f.write(b"changed while stopped\n")
        d["diffs_before_restart"] = mirror_diffs(src, dst)
        if tag == "clsync":
            variants = [("full", extra + (["--initial-sync", "full"] if has_index else []))]
            if has_index:
                variants.insert(0, ("warm", extra + ["--initial-sync", "index"]))
            for name, args in variants:
                with open(os.path.join(src, dirs[-1], "f1"), "ab") as f:
                    f.write(f"changed before the {name} restart\n".encode())
                sshd.mark()
                log = os.path.join(TMP, f"clsync-{name}.log")
                p = spawn(clsync_argv(src, dst, status, args), log)
                d[f"restart_{name}"] = wait_until(status_is(status, "running"),
                                                  f"clsync {name} restart", p, 0.005)
                d[f"restart_{name}_ssh"] = sshd.since()
                d[f"restart_{name}_log"] = [x for x in open(log, errors="replace").read()
                                            .splitlines() if "initial sync:" in x][:1]
                d[f"restart_{name}_exit"] = stop(p)
            if not has_index:
                d["restart_warm"] = "not supported by this binary (no --index-dir)"
        else:
            with open(os.path.join(src, dirs[-1], "f1"), "ab") as f:
                f.write(b"changed before the lsyncd restart\n")
            sshd.mark()
            p, d["restart_full"] = lsyncd_start(src, dst, "2")
            d["restart_full_ssh"] = sshd.since()
            d["restart_full_exit"] = stop(p)
            d["restart_warm"] = "not supported (lsyncd always runs its full rsync)"
        d["diffs"] = mirror_diffs(src, dst)
        shutil.rmtree(broot)
        for name in os.listdir(os.path.join(src, deep)):
            if name.startswith("lat-"):
                os.unlink(os.path.join(src, deep, name))
        res[tag] = d
    ref.close()

    # ------------------------------------------------------------------ report
    say()
    lat_ref = statistics.median(r["latency"])
    rows = [("plain rsync (warm ssh)", r["initial"], lat_ref,
             statistics.quantiles(r["latency"], n=10)[-1], r["burst"], None, None, None)]
    for tag in daemons:
        d = res[tag]
        rows.append((tag, d["initial"], statistics.median(d["latency"]),
                     statistics.quantiles(d["latency"], n=10)[-1], d["burst"], d["rename"],
                     d["rename_bytes"], d["rename_ssh"]))
    say("| | initial sync | latency median | latency p90 | burst converged | rename converged | rename bytes on the link | rename ssh connections/sessions |")
    say("|---|---|---|---|---|---|---|---|")
    for name, ini, lat, p90, bur, ren, rb, rs in rows:
        if ren is None:
            ren_s = (f"mv {fmt(r['rename_mv'])} + parent {fmt(r['rename_parent'])}")
            rb_s = f"{r['rename_bytes']:,}"
            rs_s = f"{r['rename_ssh'][0]}/{r['rename_ssh'][1]}"
        else:
            ren_s, rb_s, rs_s = fmt(ren), f"{rb:,}", f"{rs[0]}/{rs[1]}"
        say(f"| {name} | {fmt(ini)} | {fmt(lat)} | {fmt(p90)} | {fmt(bur)} | {ren_s} | {rb_s} | {rs_s} |")
    say(f"(reference rename by rsync alone: `rsync -a` of the renamed directory {fmt(r['rename_naive'])}, "
        f"{r['rename_naive_bytes']:,} bytes on the link)")
    say()
    fails = 0
    for tag in daemons:
        d = res[tag]
        lat = statistics.median(d["latency"])
        say(f"{tag}: ssh connections/sessions: initial {d['initial_ssh']}, latency round "
            f"{d['latency_ssh']} for {LAT_N} changes, burst {d['burst_ssh']} (made in "
            f"{fmt(d['burst_made'])}), rename {d['rename_ssh']} (the new name complete after "
            f"{fmt(d['rename_arrived'])}); exit {d['exit']}; "
            f"mirror diffs before the restart {d['diffs_before_restart']}, at the end {d['diffs']}")
        if "idle_latency" in d:
            say(f"{tag}: one change after {IDLE_S:.0f} s without any: {fmt(d['idle_latency'])}, "
                f"ssh connections/sessions {d['idle_ssh']}")
        say(f"{tag}: restart full {fmt(d['restart_full'])} (ssh {d['restart_full_ssh']}) "
            f"{d.get('restart_full_log', '')}")
        w = d["restart_warm"]
        say(f"{tag}: restart warm " + (w if isinstance(w, str) else
            f"{fmt(w)} (ssh {d['restart_warm_ssh']}) {d['restart_warm_log']}"))
        if tag != "clsync":
            continue
        checks = [
            ("latency median <= 1.2 x plain rsync", lat <= res["target_latency"],
             f"{fmt(lat)} vs {fmt(lat_ref)} = {lat / lat_ref:.2f}"),
            ("latency: no new ssh connection", d["latency_ssh"][0] == 0, f"{d['latency_ssh'][0]}"),
            ("rename <= 3 round trips + rsync of the parent", d["rename"] <= res["target_rename"],
             f"{fmt(d['rename'])} vs {fmt(res['target_rename'])} "
             f"(= {(d['rename'] - r['rename_parent']) / RTT:.1f} round trips + the parent's rsync)"),
            ("rename: no data sent (bytes <= 2 x mv + parent's)",
             d["rename_bytes"] <= 2 * r["rename_bytes"] + 20000,
             f"{d['rename_bytes']:,} vs {r['rename_bytes']:,}"),
            ("mirror diffs at the end == 0", d["diffs"] == 0, f"{d['diffs']}"),
        ]
        if "idle_latency" in d:
            checks.append((f"after {IDLE_S:.0f} s idle: no new ssh connection",
                           d["idle_ssh"][0] == 0,
                           f"{d['idle_ssh'][0]} ({fmt(d['idle_latency'])})"))
        if not isinstance(w, str):
            checks.append(("warm restart < full restart", w < d["restart_full"],
                           f"{fmt(w)} vs {fmt(d['restart_full'])}"))
        for what, ok, fig in checks:
            fails += not ok
            say(f"  {what:50s} {fig:45s} {'PASS' if ok else 'FAIL'}")
    say(f"RESULT: {'PASS' if not fails else 'FAIL'}")
    if E.get("BENCH_JSON"):
        with open(E["BENCH_JSON"], "w") as f:
            json.dump(res, f, indent=1, default=str)
    return 1 if fails else 0


def main() -> int:
    if len(sys.argv) >= 5 and sys.argv[1] == "relay":
        relay(sys.argv[2], sys.argv[3], sys.argv[4])
        return 0
    if len(sys.argv) == 2 and sys.argv[1] == "run":
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, lambda *_: sys.exit(143))
        try:
            return run()
        finally:
            for p in CHILDREN:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    p.wait()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
