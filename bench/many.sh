#!/usr/bin/env bash
# Many containers on one host: clsync-manager with N instances of a template profile (the
# LXC template's settings), each watching its own tree of DIRS directories on tmpfs and
# mirroring it locally. Measures
#   - the time to start all N until every one is `running`, against a reference: plain
#     `rsync -a` of the same N trees, NPROC at a time (the initial copies alone);
#   - zero wake-ups when nothing changes: the context switches (voluntary + involuntary)
#     of every thread of the manager and of every worker over IDLE_SECONDS;
#   - memory: PSS of every idle worker (/proc/PID/smaps_rollup; shared pages count 1/N
#     each), where one worker's private pages go (smaps), the manager's own RSS and PSS;
#   - the answer time of `status` with N instances, STATUS_CALLS times each from a raw
#     socket request and from the `clsync-manager status` command line;
#   - the limits met on the way: inotify instances and watches of the uid (the bench
#     raises fs.inotify.max_user_instances / max_user_watches for the run if they are too
#     low, says so, and restores them at exit), the manager's descriptors against its
#     RLIMIT_NOFILE, the tasks against the cgroup's pids.max;
#   - the time `SIGTERM` to the manager takes to stop every worker (final syncs).
# The manager runs on its own profiles dir, state dir and socket in the temp dir: never
# /etc/clsync, /var/lib/clsync or /run/clsync.
#
#   bench/many.sh                      # 200 instances x 1,000 dirs, tmpfs (/dev/shm)
#   N=20 DIRS=100 bench/many.sh        # smoke test
#   bench/many.sh --at-limit           # do not raise the inotify limits: what fails, and
#                                      # how the manager shows it
#
# Environment: CLSYNC_BIN, CLSYNC_MANAGER_BIN (skip the build), N (200), DIRS (1000),
# FILES_PER_DIR (1), BENCH_DIR (/dev/shm: the trees), STATE_BASE (/var/tmp: the manager's
# state dir, on a disk as /var/lib/clsync is), IDLE_SECONDS (10), SETTLE (5), STATUS_CALLS
# (50), START_TIMEOUT (900), KEEP (0: remove the temp dir), BENCH_JSON (raw figures),
# PSS_TARGET_MIB (1.5), STATUS_TARGET_MS (50). Needs root (sysctl, tmpfs), rsync, python3.
# Exit code: 0 every target met, 1 a target missed, 2 an error (an instance never ran).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

at_limit=0
for arg in "$@"; do
    case "$arg" in
        --at-limit) at_limit=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "bench: unknown argument $arg" >&2; exit 2 ;;
    esac
done

if [[ -z "${CLSYNC_BIN:-}" || -z "${CLSYNC_MANAGER_BIN:-}" ]]; then
    echo "bench: cargo build --release" >&2
    (cd "$root" && cargo build --release --bin clsync --bin clsync-manager) >&2
    CLSYNC_BIN="${CARGO_TARGET_DIR:-$root/target}/release/clsync"
    CLSYNC_MANAGER_BIN="${CARGO_TARGET_DIR:-$root/target}/release/clsync-manager"
fi
for b in "$CLSYNC_BIN" "$CLSYNC_MANAGER_BIN"; do
    [[ -x "$b" ]] || { echo "bench: $b is not an executable" >&2; exit 2; }
done
command -v rsync >/dev/null || { echo "bench: rsync is missing" >&2; exit 2; }
[[ $(id -u) == 0 ]] || echo "bench: not root: the inotify limits cannot be raised" >&2

export CLSYNC_BIN CLSYNC_MANAGER_BIN
export N="${N:-200}" DIRS="${DIRS:-1000}" FILES_PER_DIR="${FILES_PER_DIR:-1}"
export IDLE_SECONDS="${IDLE_SECONDS:-10}" SETTLE="${SETTLE:-5}"
export STATUS_CALLS="${STATUS_CALLS:-50}" START_TIMEOUT="${START_TIMEOUT:-900}"
export PSS_TARGET_MIB="${PSS_TARGET_MIB:-1.5}" STATUS_TARGET_MS="${STATUS_TARGET_MS:-50}"
export AT_LIMIT=$at_limit BENCH_JSON="${BENCH_JSON:-}"
export BENCH_COMMIT="$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
BENCH_TMP="$(mktemp -d "${BENCH_DIR:-/dev/shm}/clsync-many.XXXXXX")"
# The state dir (state.json, rewritten with fsync at every start, and the instance locks)
# on a disk, as /var/lib/clsync is.
STATE_TMP="$(mktemp -d "${STATE_BASE:-/var/tmp}/clsync-many-state.XXXXXX")"
export BENCH_TMP STATE_DIR="$STATE_TMP/state"

# The sysctls as found; restored at exit if they still hold the value the bench set (a
# concurrent bench that changed them since keeps its own).
inst_sysctl=/proc/sys/fs/inotify/max_user_instances
watch_sysctl=/proc/sys/fs/inotify/max_user_watches
old_inst="$(cat $inst_sysctl)"
old_watch="$(cat $watch_sysctl)"
set_inst=""
set_watch=""
py=""

cleanup() {
    local rc=$? mgr_pid workers
    [[ -n "$py" ]] && kill "$py" 2>/dev/null
    mgr_pid="$(cat "$BENCH_TMP/manager.pid" 2>/dev/null || true)"
    if [[ -n "$mgr_pid" ]] && kill -0 "$mgr_pid" 2>/dev/null; then
        # Its workers, by pid: they stop with the manager (final sync); any left after
        # the manager is gone is killed.
        workers="$(cat "/proc/$mgr_pid/task/$mgr_pid/children" 2>/dev/null || true)"
        kill -TERM "$mgr_pid" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$mgr_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$mgr_pid" 2>/dev/null || true
        for w in $workers; do kill -KILL "$w" 2>/dev/null || true; done
    fi
    if [[ -n "$set_inst" && "$(cat $inst_sysctl)" == "$set_inst" ]]; then
        echo "$old_inst" > $inst_sysctl && echo "bench: fs.inotify.max_user_instances restored to $old_inst" >&2
    fi
    if [[ -n "$set_watch" && "$(cat $watch_sysctl)" == "$set_watch" ]]; then
        echo "$old_watch" > $watch_sysctl && echo "bench: fs.inotify.max_user_watches restored to $old_watch" >&2
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "bench: kept $BENCH_TMP" >&2
    else
        rm -rf "$BENCH_TMP" "$STATE_TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# What this uid holds now (other programs' inotify instances and watches count too).
in_use() {
    python3 - <<'EOF'
import os
uid = os.getuid()
inst = watches = 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        if os.stat(f"/proc/{pid}").st_uid != uid:
            continue
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                    continue
                inst += 1
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    watches += sum(1 for l in f if l.startswith("inotify wd:"))
            except OSError:
                pass
    except OSError:
        pass
print(inst, watches)
EOF
}
read -r used_inst used_watch < <(in_use)
need_inst=$((used_inst + N + 16))
need_watch=$((used_watch + N * (DIRS + 8) + 1000))
export LIMITS_FOUND="max_user_instances=$old_inst max_user_watches=$old_watch (in use by uid $(id -u): $used_inst instances, $used_watch watches)"
notes=""
if [[ $at_limit == 0 ]]; then
    if (( old_inst < need_inst )); then
        echo "$need_inst" > $inst_sysctl
        set_inst="$need_inst"
        notes+="raised fs.inotify.max_user_instances $old_inst -> $need_inst for the run (restored at exit); "
    fi
    if (( old_watch < need_watch )); then
        echo "$need_watch" > $watch_sysctl
        set_watch="$need_watch"
        notes+="raised fs.inotify.max_user_watches $old_watch -> $need_watch for the run (restored at exit); "
    fi
fi
export LIMIT_NOTES="${notes:-limits left as found}" NEED_INST=$need_inst NEED_WATCH=$need_watch
echo "bench: $LIMITS_FOUND; $LIMIT_NOTES" >&2

set +e
python3 - <<'EOF' &
import json, os, signal, socket, statistics, subprocess, sys, time

T = os.environ["BENCH_TMP"]
N = int(os.environ["N"]); DIRS = int(os.environ["DIRS"]); FILES = int(os.environ["FILES_PER_DIR"])
IDLE = float(os.environ["IDLE_SECONDS"]); SETTLE = float(os.environ["SETTLE"])
CALLS = int(os.environ["STATUS_CALLS"]); START_TIMEOUT = float(os.environ["START_TIMEOUT"])
MGR = os.environ["CLSYNC_MANAGER_BIN"]; WORKER = os.environ["CLSYNC_BIN"]
AT_LIMIT = os.environ["AT_LIMIT"] == "1"
SOCK = f"{T}/manager.sock"
figures = {"n": N, "dirs": DIRS, "files_per_dir": FILES, "limits_found": os.environ["LIMITS_FOUND"],
           "limit_notes": os.environ["LIMIT_NOTES"]}
missed = []

def say(*a):
    print("bench:", *a, file=sys.stderr, flush=True)

def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])

def cpu_busy(seconds=1.0):
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = snap(); time.sleep(seconds); t1, i1 = snap()
    return 1 - (i1 - i0) / max(1, t1 - t0)

# ---- the trees: one made, copied N-1 times (cp -a, two at a time) ----
def make_tree(top):
    top_dirs = max(1, round(DIRS ** 0.5 / 3))
    per = (DIRS - top_dirs) // top_dirs
    extra = DIRS - top_dirs - per * top_dirs
    n = 0
    for t in range(top_dirs):
        d = f"{top}/d{t:03}"
        os.makedirs(d); n += 1
        for f in range(FILES):
            with open(f"{d}/f{f}", "wb") as fh: fh.write(b"x" * 100)
        for s in range(per + (1 if t < extra else 0)):
            sd = f"{d}/s{s:03}"
            os.mkdir(sd); n += 1
            for f in range(FILES):
                with open(f"{sd}/f{f}", "wb") as fh: fh.write(b"y" * 100)
    assert n == DIRS, (n, DIRS)

t0 = time.monotonic()
os.makedirs(f"{T}/src"); os.makedirs(f"{T}/dst"); os.makedirs(f"{T}/profiles"); os.makedirs(f"{T}/status")
make_tree(f"{T}/src/c000")
procs = []
for i in range(1, N):
    procs.append(subprocess.Popen(["cp", "-a", f"{T}/src/c000", f"{T}/src/c{i:03}"]))
    if len(procs) >= 2:
        procs.pop(0).wait()
for p in procs: p.wait()
say(f"{N} trees of {DIRS} dirs x {FILES} files made in {time.monotonic() - t0:.1f} s")

# ---- reference: the initial copies alone, plain rsync -a, NPROC at a time ----
ncpu = os.cpu_count() or 1
def rsync_all(dst):
    os.makedirs(dst)
    t0 = time.monotonic(); running = []
    for i in range(N):
        running.append(subprocess.Popen(["rsync", "-a", f"{T}/src/c{i:03}/", f"{dst}/c{i:03}/"]))
        if len(running) >= ncpu:
            running.pop(0).wait()
    for p in running: p.wait()
    return time.monotonic() - t0
figures["load_before"] = load()
figures["busy_before"] = round(cpu_busy(), 2)
ref = rsync_all(f"{T}/ref")
subprocess.run(["rm", "-rf", f"{T}/ref"])
figures["reference_rsync_s"] = round(ref, 2)
say(f"reference: {N} x rsync -a, {ncpu} at a time: {ref:.2f} s")

# ---- the manager and its template profile (the LXC template's settings) ----
with open(f"{T}/profiles/lxc.toml", "w") as f:
    f.write(f'''# bench/many.sh: profiles/lxc.toml on the bench's trees
watch-dir = "{T}/src/%label%"
destination-dir = "{T}/dst/%label%"
mode = "rsyncdirect"
delay-collect = "3s"
delay-sync = "3s"
threshold-bigfile = "64MiB"
delay-collect-bigfile = "1m"
rules = [
    "-d/sess(ion)?s?$",
    "-f/tmp/",
    "+*",
]
status-file = "{T}/status/lxc-%label%.status"
''')
env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "CLSYNC_MANAGER_"))}
mgr = subprocess.Popen([MGR, "run", "--profiles-dir", f"{T}/profiles", "--state-dir", os.environ["STATE_DIR"],
                        "--socket", SOCK, "--clsync", WORKER],
                       stdin=subprocess.DEVNULL, stdout=open(f"{T}/manager.out", "wb"),
                       stderr=open(f"{T}/manager.log", "wb"), env=env, start_new_session=True)
with open(f"{T}/manager.pid", "w") as f: f.write(str(mgr.pid))

def request(obj, timeout=60):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(SOCK)
    s.sendall(json.dumps(obj).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        c = s.recv(1 << 16)
        if not c: break
        buf += c
    s.close()
    return buf

def status():
    r = json.loads(request({"cmd": "status"}))
    if not r["ok"]: raise RuntimeError(r["error"])
    return r["data"]

deadline = time.monotonic() + 30
while True:
    try:
        status(); break
    except (OSError, ValueError):
        if time.monotonic() > deadline or mgr.poll() is not None:
            say("the manager does not answer; its log:", open(f"{T}/manager.log").read()[-2000:])
            sys.exit(2)
        time.sleep(0.05)

# ---- the processes ----
def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []
def tasks(pid):
    try: return os.listdir(f"/proc/{pid}/task")
    except OSError: return []
def kv(path):
    out = {}
    try:
        with open(path) as f:
            for l in f:
                k, _, v = l.partition(":")
                out[k.strip()] = v.strip()
    except OSError:
        pass
    return out

names = [f"lxc-c{i:03}" for i in range(N)]
t0 = time.monotonic()
for n in names:
    r = json.loads(request({"cmd": "start", "name": n}))
    if not r["ok"]:
        say(f"start {n}: {r['error']}")
t_requests = time.monotonic() - t0
def descendants(pid):
    out = []
    for c in children(pid):
        out.append(c); out.extend(descendants(c))
    return out
def tasks_under(pid):
    return sum(len(tasks(p)) for p in [pid] + descendants(pid))
peak_tasks = 0
states = {}
while True:
    peak_tasks = max(peak_tasks, tasks_under(mgr.pid))
    st = status()
    states = {}
    for i in st: states.setdefault(i["state"], []).append(i)
    if len(states.get("running", [])) == N:
        break
    # The sysctls are global: another program (another bench restoring what it found)
    # may lower them while this one runs. Said, not fought over.
    for key, need in (("max_user_instances", "NEED_INST"), ("max_user_watches", "NEED_WATCH")):
        now = int(open(f"/proc/sys/fs/inotify/{key}").read())
        if not AT_LIMIT and now < int(os.environ[need]) and key not in figures.setdefault("limits_lowered_during_run", {}):
            figures["limits_lowered_during_run"][key] = now
            say(f"fs.inotify.{key} was lowered to {now} by another program during the run: instances past it fail")
    if time.monotonic() - t0 > START_TIMEOUT or (AT_LIMIT and not states.get("starting") and not states.get("initsync")):
        break
    time.sleep(0.2)
t_running = time.monotonic() - t0
figures["start_requests_s"] = round(t_requests, 2)
figures["start_all_running_s"] = round(t_running, 2)
figures["start_ratio_vs_reference"] = round(t_running / ref, 2)
figures["states_after_start"] = {k: len(v) for k, v in states.items()}
figures["peak_tasks_during_start"] = peak_tasks
say(f"{N} start requests answered in {t_requests:.2f} s; states after {t_running:.1f} s: {figures['states_after_start']}")
if len(states.get("running", [])) != N:
    for k, v in states.items():
        if k != "running":
            say(f"  {k}: e.g. {v[0]['name']}: {v[0].get('last_error')}")
            figures.setdefault("not_running_examples", {})[k] = v[0].get("last_error")
    if not AT_LIMIT:
        say("not every instance runs: stopping")
        json.dump(figures, sys.stderr); sys.exit(2)

# Idle: no rsync left under any worker, then SETTLE seconds more.
deadline = time.monotonic() + 120
while True:
    workers = children(mgr.pid)
    grand = [c for w in workers for c in children(w)]
    if not grand or time.monotonic() > deadline: break
    time.sleep(0.2)
figures["worker_children_when_idle"] = len(grand)
time.sleep(SETTLE)
workers = children(mgr.pid)

# ---- wake-ups over IDLE seconds: every thread of the manager and of every worker ----
def switches():
    out = {}
    for p in [mgr.pid] + workers:
        for t in tasks(p):
            s = kv(f"/proc/{p}/task/{t}/status")
            out[(p, int(t), s.get("Name", "?"))] = int(s.get("voluntary_ctxt_switches", 0)) + int(s.get("nonvoluntary_ctxt_switches", 0))
    return out
a = switches(); time.sleep(IDLE); b = switches()
woke = {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0) > 0}
figures["idle_seconds"] = IDLE
figures["threads_watched"] = len(b)
figures["wakeups_total"] = sum(woke.values())
figures["wakeups_manager"] = sum(v for k, v in woke.items() if k[0] == mgr.pid)
figures["threads_that_woke"] = [f"{p}/{t} {n}: {v}" for (p, t, n), v in sorted(woke.items())][:20]
say(f"wake-ups in {IDLE:.0f} s of {len(b)} threads: {figures['wakeups_total']} (manager {figures['wakeups_manager']})")
if figures["wakeups_total"]:
    missed.append("zero wake-ups")

# ---- memory ----
def rollup(pid):
    r = kv(f"/proc/{pid}/smaps_rollup")
    return {k: int(v.split()[0]) for k, v in r.items() if v.endswith("kB")}
rolls = {w: rollup(w) for w in workers}
pss = sorted(r["Pss"] for r in rolls.values())
med = statistics.median(pss)
figures["workers"] = len(workers)
figures["worker_pss_kib"] = {"median": med, "max": pss[-1], "min": pss[0], "sum": sum(pss)}
for k in ("Pss_Anon", "Pss_File", "Private_Dirty", "Private_Clean", "Rss", "Shared_Clean"):
    figures.setdefault("worker_median_kib", {})[k] = statistics.median(r.get(k, 0) for r in rolls.values())
figures["worker_threads"] = sorted(set(len(tasks(w)) for w in workers))
mr = rollup(mgr.pid)
ms = kv(f"/proc/{mgr.pid}/status")
figures["manager_kib"] = {"Rss": mr.get("Rss"), "Pss": mr.get("Pss"), "Private_Dirty": mr.get("Private_Dirty"),
                          "VmHWM": int(ms.get("VmHWM", "0 kB").split()[0]), "threads": len(tasks(mgr.pid))}
# Where one worker's private pages are (the median one).
w = min(rolls, key=lambda w: abs(rolls[w]["Pss"] - med))
parts = {}
name = None
with open(f"/proc/{w}/smaps") as f:
    for l in f:
        head = l.split()
        if "-" in head[0] and ":" not in head[0]:
            name = head[5] if len(head) > 5 else "[anon]"
            name = os.path.basename(name) if name.startswith("/") else name
        elif head[0] in ("Private_Dirty:", "Private_Clean:"):
            parts[name] = parts.get(name, 0) + int(head[1])
figures["worker_private_by_mapping_kib"] = dict(sorted(parts.items(), key=lambda x: -x[1])[:8])
say(f"worker PSS median {med / 1024:.2f} MiB, max {pss[-1] / 1024:.2f} MiB; private by mapping {figures['worker_private_by_mapping_kib']}")
say(f"manager RSS {mr.get('Rss', 0) / 1024:.1f} MiB, PSS {mr.get('Pss', 0) / 1024:.1f} MiB")
if pss[-1] > float(os.environ["PSS_TARGET_MIB"]) * 1024:
    missed.append("PSS per worker")

# ---- limits ----
fds = len(os.listdir(f"/proc/{mgr.pid}/fd"))
lim = [l for l in open(f"/proc/{mgr.pid}/limits") if l.startswith("Max open files")][0].split()
figures["manager_fds"] = fds
figures["manager_nofile_soft_hard"] = [lim[3], lim[4]]
ino_inst = ino_watch = 0
for p in workers:
    try:
        for fd in os.listdir(f"/proc/{p}/fd"):
            try:
                if os.readlink(f"/proc/{p}/fd/{fd}") == "anon_inode:inotify":
                    ino_inst += 1
                    ino_watch += sum(1 for l in open(f"/proc/{p}/fdinfo/{fd}") if l.startswith("inotify wd:"))
            except OSError:
                pass
    except OSError:
        pass
figures["workers_inotify_instances"] = ino_inst
figures["workers_inotify_watches"] = ino_watch
figures["tasks_total"] = len(b)
# The pids controller's limit where the manager runs (cgroup v2 "0::PATH", or v1's
# "N:pids:PATH"); none at the root cgroup. systemd's TasksMax= sets it for the unit.
figures["cgroup_pids"] = "no pids.max (root cgroup or no pids controller)"
for l in open(f"/proc/{mgr.pid}/cgroup").read().splitlines():
    _, ctl, path = l.split(":", 2)
    base = {"": "/sys/fs/cgroup", "pids": "/sys/fs/cgroup/pids"}.get(ctl)
    try:
        if base:
            figures["cgroup_pids"] = "pids.current %s, pids.max %s (%s)" % (
                open(f"{base}{path}/pids.current").read().strip(), open(f"{base}{path}/pids.max").read().strip(), path)
            break
    except OSError:
        pass
figures["kernel_pid_max"] = int(open("/proc/sys/kernel/pid_max").read())
say(f"limits: manager {fds} fds (nofile {lim[3]}/{lim[4]}), workers {ino_inst} inotify instances, {ino_watch} watches, {len(b)} threads; cgroup pids {figures['cgroup_pids']}")

# ---- status answer time ----
def timed(fn):
    out = []
    for _ in range(CALLS):
        t = time.perf_counter(); fn(); out.append((time.perf_counter() - t) * 1000)
    return out
def raw():
    r = request({"cmd": "status"})
    assert r.startswith(b'{"ok":true'), r[:200]
def cli(*args):
    def f():
        p = subprocess.run([MGR, "--socket", SOCK, "status", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.returncode == 0, p.stderr
    return f
figures["status_bytes"] = len(request({"cmd": "status"}))
res = {"raw socket": timed(raw), "clsync-manager status": timed(cli()), "clsync-manager status --json": timed(cli("--json"))}
# the CLI's own start-up without the manager: `clsync-manager --help`
res["clsync-manager --help (no request)"] = timed(lambda: subprocess.run([MGR, "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
figures["status_ms"] = {}
for k, v in res.items():
    v = sorted(v)
    figures["status_ms"][k] = {"median": round(statistics.median(v), 2), "p90": round(v[int(len(v) * 0.9) - 1], 2), "max": round(v[-1], 2)}
    say(f"status, {k}: median {statistics.median(v):.2f} ms, max {v[-1]:.2f} ms ({CALLS} calls)")
target = float(os.environ["STATUS_TARGET_MS"])
if any(figures["status_ms"][k]["median"] > target for k in ("raw socket", "clsync-manager status", "clsync-manager status --json")):
    missed.append("status time (median)")

# ---- stop everything: SIGTERM to the manager ----
t0 = time.monotonic()
mgr.send_signal(signal.SIGTERM)
try:
    rc = mgr.wait(timeout=600)
except subprocess.TimeoutExpired:
    rc = None
figures["stop_all_s"] = round(time.monotonic() - t0, 2)
figures["manager_exit"] = rc
figures["load_after"] = load()
say(f"SIGTERM to the manager: every worker stopped, manager exited {rc} in {figures['stop_all_s']:.2f} s")
figures["missed"] = missed
if os.environ.get("BENCH_JSON"):
    with open(os.environ["BENCH_JSON"], "w") as f: json.dump(figures, f, indent=1)
print(json.dumps(figures, indent=1))
sys.exit(1 if missed else 0)
EOF
py=$!
wait $py
rc=$?
py=""
set -e
exit $rc
