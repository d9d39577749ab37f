#!/usr/bin/env bash
# One million directories: clsync on a 1,000,000-directory tree (x 5 files), and the
# 200,000-directory tree for comparison, on tmpfs. See docs/benchmarks.md ("One million
# directories") and bench/live.py, whose tree builder and daemon runner this reuses.
#
#   bench/million.sh                    # 200,000 and 1,000,000 dirs, every part
#   SIZES=200000 bench/million.sh       # the comparison tree only
#   bench/million.sh --only=growth      # parts: live, growth, warm (comma-separated)
#   bench/million.sh --no-fanotify      # inotify only
#
# Parts, per tree size and per monitor (inotify; fanotify as root):
#   live    time until live (start -> a probe written after `running` arrives) against the
#           sequential floor: `inotifywait -r` set-up + a plain `rsync -a` of the same tree
#           (one reference run per size, in the same invocation: the machine may be loaded);
#   growth  VmHWM with --skip-initialsync once `running` (the watch set-up alone): the
#           growth per watched directory is (HWM(big) - HWM(small)) / (dirs(big) -
#           dirs(small)); for fanotify the set-up time (start -> `running`) at each size.
#           CLSYNC_BIN_BEFORE=PATH measures that binary too, on the same trees (a change's
#           effect without the noise of two invocations);
#   warm    with --index-dir DIR: a full start, a clean stop (SIGTERM), a restart until
#           live; then kill -9 and a restart until live; reported against the full initial
#           rsync of the same tree. A binary without --index-dir is reported as "not
#           supported by this binary".
#
# The files are EMPTY by default (FILE_MIN=FILE_MAX=0): every non-empty file costs a 4 KiB
# tmpfs page, so 1,000,000 x 5 files of content need ~24 GB per tree; empty, the inodes
# alone need ~1 KiB each (~5.7 GB a tree at 1 M). The script computes the need from
# MemAvailable and refuses a size that does not fit, with the figures. It raises
# fs.inotify.max_user_watches for the run when it is too low (root) and restores it on exit.
#
# A shared tmpfs limits its inodes (/dev/shm: about half the RAM's pages; 1 M x 6 inodes
# do not fit), so as root the trees go on a tmpfs of the bench's own (nr_inodes=0, size =
# 90 % of RAM, pages used only as filled), unmounted on exit; BENCH_DIR=DIR uses DIR as it
# is (the inode need is checked there too).
#
# Environment: CLSYNC_BIN (skip the build), SIZES [200000,1000000], FILES_PER_DIR [5],
# FILE_MIN, FILE_MAX [0], FANOUT [100], BENCH_DIR [own tmpfs as root, else /dev/shm],
# TIMEOUT [3600], KEEP [0].
set -euo pipefail
# The whole script is one block, read before it runs: an edit while it runs (hours at
# 1 M) cannot change what the running bash executes next.
{
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

for arg in "$@"; do
    case "$arg" in
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    esac
done

if [[ -z "${CLSYNC_BIN:-}" ]]; then
    echo "bench: cargo build --release" >&2
    (cd "$root" && cargo build --release --bin clsync) >&2
    CLSYNC_BIN="${CARGO_TARGET_DIR:-$root/target}/release/clsync"
fi
if [[ ! -x "$CLSYNC_BIN" ]]; then
    echo "bench: CLSYNC_BIN=$CLSYNC_BIN is not an executable" >&2
    exit 2
fi
for tool in rsync inotifywait python3; do
    command -v "$tool" >/dev/null || { echo "bench: \`$tool\` not found (inotifywait: Debian's inotify-tools)" >&2; exit 2; }
done

export CLSYNC_BIN BENCH_HERE="$here"
export FILE_MIN="${FILE_MIN:-0}" FILE_MAX="${FILE_MAX:-0}" FILES_PER_DIR="${FILES_PER_DIR:-5}"
export TIMEOUT="${TIMEOUT:-3600}" QUIET_BUSY="${QUIET_BUSY:-1.0}" QUIET_WAIT="${QUIET_WAIT:-0}"

# fs.inotify.max_user_watches: raised by the Python part when a tree needs more, put back
# here whatever happens to it.
watches_file=/proc/sys/fs/inotify/max_user_watches
old_watches="$(cat "$watches_file")"
restore() {
    if [[ "$(cat "$watches_file")" != "$old_watches" ]]; then
        echo "$old_watches" > "$watches_file" &&
            echo "bench: fs.inotify.max_user_watches restored to $old_watches" >&2
    fi
}
own_mount=""
cleanup() {
    restore
    if [[ -n "$own_mount" ]]; then
        umount "$own_mount" && rmdir "$own_mount" ||
            echo "bench: could not unmount $own_mount" >&2
    fi
}
trap cleanup EXIT
if [[ -z "${BENCH_DIR:-}" && $(id -u) == 0 ]]; then
    own_mount="$(mktemp -d /tmp/clsync-million.XXXXXX)"
    mem_kib="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    mount -t tmpfs -o "nr_inodes=0,size=$((mem_kib * 9 / 10))k,mode=0700" tmpfs "$own_mount"
    export BENCH_DIR="$own_mount"
fi

python3 - "$@" <<'PY'
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.environ["BENCH_HERE"])
import live  # noqa: E402  (tree builder, daemon runner, reference measurements)
from live import BenchError, log, now  # noqa: E402

PARTS = ("live", "growth", "warm")
KIB_PER_INODE = 1.0          # shmem_inode ~752 B + dentry 192 B
KIB_PER_WATCH = 1.0          # kernel memory of one inotify watch (approximate)
MARGIN_GIB = 1.5


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def need_kib(dirs: int) -> float:
    """Source tree + destination copy + kernel watches + margin."""
    files = dirs * live.CFG["files_per_dir"]
    per_tree = (dirs + files) * KIB_PER_INODE
    if live.CFG["file_max"] > 0:
        per_tree += files * 4.0  # a tmpfs page per non-empty file (up to 4 KiB)
    return 2 * per_tree + dirs * KIB_PER_WATCH + MARGIN_GIB * 1024 * 1024


def gib(k: float) -> str:
    return f"{k / 1024 / 1024:.1f} GiB"


def ensure_watches(dirs: int) -> None:
    path = "/proc/sys/fs/inotify/max_user_watches"
    with open(path) as f:
        cur = int(f.read())
    # Plus what the uid's other programs hold now (the limit is per uid), and a margin.
    held = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == os.geteuid():
                held += live.inotify_watches(int(pid))
        except OSError:
            pass
    want = dirs + held + 100_000
    if cur >= want:
        return
    if os.geteuid() != 0:
        raise BenchError(f"fs.inotify.max_user_watches = {cur}, the tree needs {want}: "
                         f"run as root or `sysctl fs.inotify.max_user_watches={want}`")
    log(f"fs.inotify.max_user_watches {cur} -> {want} for the run (restored on exit)")
    with open(path, "w") as f:
        f.write(str(want))


def build(base: str, dirs: int) -> tuple[str, str]:
    src = os.path.join(base, "src")
    os.mkdir(src)
    live.CFG["dirs"] = dirs
    t0 = now()
    last = live.build_tree(src)
    log(f"built {dirs} dirs x {live.CFG['files_per_dir']} files "
        f"({live.CFG['file_min']}..{live.CFG['file_max']} B) in {now() - t0:.0f} s")
    return src, last


def clear_dst(dst: str) -> None:
    if os.path.exists(dst):
        subprocess.run(["rm", "-rf", "--one-file-system", dst], check=True)
    os.mkdir(dst)


def supports(opt: str) -> bool:
    r = subprocess.run([os.environ["CLSYNC_BIN"], "--help"], capture_output=True, text=True)
    return opt in (r.stdout + r.stderr)


def daemon(kind: str, monitor: str, src: str, dst: str, probe_dir: str, work: str, run: int,
           extra: list[str], binary: str | None = None) -> dict:
    status = os.path.join(work, f"{kind}-{run}.status")
    argv = [binary or os.environ["CLSYNC_BIN"], "--monitor", monitor, "--status-file", status, *extra,
            src, dst]
    if "--skip-initialsync" not in extra:
        return live.run_daemon(kind, argv, src, dst, probe_dir, work, run, "status", status)
    # Nothing was copied: the mirror check after the stop (an rsync --dry-run over the
    # whole tree, minutes at 1 M) would only count the tree.
    check, live.mirror_diffs = live.mirror_diffs, lambda _src, _dst: None
    try:
        return live.run_daemon(kind, argv, src, dst, probe_dir, work, run, "status", status)
    finally:
        live.mirror_diffs = check


def size_run(dirs: int, parts: set, monitors: list[str], out: dict) -> None:
    avail = mem_available_kib()
    need = need_kib(dirs)
    if need > avail:
        log(f"{dirs} dirs: needs about {gib(need)} (two trees of {dirs} dirs x "
            f"{live.CFG['files_per_dir']} files, watches, {MARGIN_GIB} GiB margin), "
            f"MemAvailable is {gib(avail)}: not run")
        out[str(dirs)] = {"refused": f"needs {gib(need)}, MemAvailable {gib(avail)}"}
        return
    bench_dir = os.environ.get("BENCH_DIR") or "/dev/shm"
    st = os.statvfs(bench_dir)
    inodes = 2 * dirs * (1 + live.CFG["files_per_dir"]) + 10_000
    if st.f_files and st.f_favail < inodes:
        log(f"{dirs} dirs: needs {inodes} inodes (two trees), {bench_dir} has "
            f"{st.f_favail} free: not run (run as root for a tmpfs without an inode limit)")
        out[str(dirs)] = {"refused": f"needs {inodes} inodes, {st.f_favail} free"}
        return
    ensure_watches(dirs)
    base = tempfile.mkdtemp(prefix=f"clsync-million-{dirs}-", dir=bench_dir)
    res: dict = {"fs": live.fs_type(base), "load_before": os.getloadavg()}
    out[str(dirs)] = res
    try:
        src, last = build(base, dirs)
        dst = os.path.join(base, "dst")
        work = os.path.join(base, "work")
        os.mkdir(work)
        live.warm_up(src)
        if "live" in parts or ("warm" in parts and supports("--index-dir")):
            iw = live.measure_inotifywait(src)
            clear_dst(dst)
            rs = live.measure_rsync(src, dst)
            res["inotifywait_s"] = iw["setup_s"]
            res["rsync_s"] = rs["wall_s"]
            res["floor_s"] = iw["setup_s"] + rs["wall_s"]
            log(f"{dirs}: inotifywait -r {iw['setup_s']:.1f} s + rsync -a {rs['wall_s']:.1f} s"
                f" = floor {res['floor_s']:.1f} s")
        for m in monitors:
            r = res.setdefault(m, {})
            if "growth" in parts:
                bins = [("", None)]
                if os.environ.get("CLSYNC_BIN_BEFORE"):
                    bins.append(("before_", os.environ["CLSYNC_BIN_BEFORE"]))
                for tag, binary in bins:
                    clear_dst(dst)
                    g = daemon(f"growth-{tag}{m}", m, src, dst, last, work, 0,
                               ["--skip-initialsync"], binary)
                    r[f"{tag}growth_ready_s"] = g["ready_s"]
                    r[f"{tag}growth_vmhwm_kib"] = g["vmhwm_kib"]
                    r[f"{tag}growth_watches"] = g["watches"]
                    log(f"{dirs} {m} {tag or 'this '}binary --skip-initialsync: running after "
                        f"{g['ready_s']:.2f} s, VmHWM {g['vmhwm_kib']} KiB, "
                        f"{g['watches']} inotify watches")
            if "live" in parts:
                clear_dst(dst)
                d = daemon(f"live-{m}", m, src, dst, last, work, 1, [])
                r["live_s"] = d["live_s"]
                r["live_vmhwm_kib"] = d["vmhwm_kib"]
                r["live_ratio"] = d["live_s"] / res["floor_s"]
                log(f"{dirs} {m}: live after {d['live_s']:.1f} s = "
                    f"{r['live_ratio']:.2f} x floor, VmHWM {d['vmhwm_kib']} KiB")
            if "warm" in parts:
                r["warm"] = warm(m, src, dst, last, work, res["rsync_s"])
        res["load_after"] = os.getloadavg()
    finally:
        if os.environ.get("KEEP") == "1":
            log(f"kept {base}")
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", base])


def warm(m: str, src: str, dst: str, last: str, work: str, rsync_s: float) -> dict:
    if not supports("--index-dir"):
        log("warm restart: not supported by this binary (no --index-dir)")
        return {"skipped": "not supported by this binary (no --index-dir)"}
    index = os.path.join(work, f"index-{m}")
    os.mkdir(index)
    clear_dst(dst)
    extra = ["--index-dir", index]
    full = daemon(f"warm-full-{m}", m, src, dst, last, work, 10, extra)  # SIGTERM: clean
    clean = daemon(f"warm-clean-{m}", m, src, dst, last, work, 11, extra)
    # kill -9 once live, then a restart.
    status = os.path.join(work, f"warm-kill-{m}.status")
    argv = [os.environ["CLSYNC_BIN"], "--monitor", m, "--status-file", status, *extra, src, dst]
    p = live.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL)
    deadline = now() + live.CFG["timeout"]
    while True:
        try:
            with open(status) as f:
                if f.read().strip() == "running":
                    break
        except OSError:
            pass
        if p.poll() is not None or now() > deadline:
            raise BenchError(f"warm-kill-{m}: not running (exit {p.returncode})")
        time.sleep(live.POLL)
    live.kill_group(p, signal.SIGKILL)
    live.wait4(p, 30)
    killed = daemon(f"warm-after-kill-{m}", m, src, dst, last, work, 12, extra)
    logs = {}
    for name, run in (("clean", 11), ("kill", 12)):
        kind = f"warm-{'clean' if name == 'clean' else 'after-kill'}-{m}"
        with open(live.daemon_log(work, kind, run), errors="replace") as f:
            logs[name] = [l.strip() for l in f if "initial sync:" in l][-1:]
    r = {"full_live_s": full["live_s"], "clean_restart_live_s": clean["live_s"],
         "kill_restart_live_s": killed["live_s"],
         "clean_ratio": clean["live_s"] / rsync_s, "kill_ratio": killed["live_s"] / rsync_s,
         "initial_sync_lines": logs, "mirror_diffs": killed["mirror_diffs"]}
    log(f"{m} warm: clean restart {clean['live_s']:.1f} s ({r['clean_ratio']:.2f} x rsync), "
        f"after kill -9 {killed['live_s']:.1f} s ({r['kill_ratio']:.2f} x rsync); {logs}")
    return r


def report(out: dict, sizes: list[int], monitors: list[str]) -> None:
    print(f"## clsync, one million directories ({live.CFG['files_per_dir']} files a directory, "
          f"{live.CFG['file_min']}..{live.CFG['file_max']} B)")
    for s in sizes:
        r = out.get(str(s), {})
        print(f"- {s} dirs: " + json.dumps(r, default=str))
    ok = [s for s in sizes if "refused" not in out.get(str(s), {"refused": 1})]
    if len(ok) >= 2:
        a, b = min(ok), max(ok)
        for m in monitors:
            ra, rb = out[str(a)].get(m, {}), out[str(b)].get(m, {})
            for tag in ("", "before_"):
                if f"{tag}growth_vmhwm_kib" not in ra or f"{tag}growth_vmhwm_kib" not in rb:
                    continue
                per = (rb[f"{tag}growth_vmhwm_kib"] - ra[f"{tag}growth_vmhwm_kib"]) * 1024 / (b - a)
                ta, tb = ra[f"{tag}growth_ready_s"], rb[f"{tag}growth_ready_s"]
                print(f"- {m} ({tag.rstrip('_') or 'this binary'}): VmHWM growth {per:.1f} "
                      f"bytes per directory ({a} -> {b}); running after {ta:.2f} s -> "
                      f"{tb:.2f} s (x{tb / max(ta, 1e-9):.2f} for x{b / a:.0f} directories)")


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/million.sh")
    ap.add_argument("--only", default=",".join(PARTS))
    ap.add_argument("--no-fanotify", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    parts = {x for x in args.only.split(",") if x}
    if not parts or parts - set(PARTS):
        log(f"--only: choose from {','.join(PARTS)}")
        return 2
    sizes = [int(x) for x in os.environ.get("SIZES", "200000,1000000").split(",") if x]
    monitors = ["inotify"]
    if not args.no_fanotify:
        if os.geteuid() == 0:
            monitors.append("fanotify")
        else:
            log("not root: fanotify is not measured")
    log(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs, "
        f"MemAvailable {gib(mem_available_kib())}")
    out: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                 "cpus": os.cpu_count()}
    for s in sorted(sizes):
        try:
            size_run(s, parts, monitors, out)
        except (BenchError, OSError) as e:
            log(f"{s} dirs: {e}")
            out.setdefault(str(s), {})["error"] = str(e)
    report(out, sorted(sizes), monitors)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 0


def stop_children(*_):
    for p in live.CHILDREN:
        live.kill_group(p, signal.SIGKILL)
    sys.exit(130)


signal.signal(signal.SIGTERM, stop_children)
signal.signal(signal.SIGINT, stop_children)
sys.exit(main())
PY
exit
}
