#!/bin/sh
# Warm restart against full restart (not a timed test): a tree of DIRS directories x 5
# files on tmpfs (default 20,000 = 200 x 100), mirrored once by a first start (full
# initial sync, writes the index), then started again three ways, each timed from exec
# until the status file reads `running`:
#   full-first  the first start (empty destination, no index);
#   warm        a start from the index (nothing changed: the compare only);
#   warm+10     a start from the index with 10 files changed while stopped;
#   full        a start with --initial-sync full (destination up to date: rsync's walk).
# With the peak memory (VmHWM) at `running`. Each once per invocation (RUNS=N repeats them); report the ratio warm/full of the same
# invocation, and the load average.
#
# Usage: bench/warm.sh [CLSYNC] (default target/release/clsync); DIRS=N, BASE=/dev/shm.
set -eu
CLSYNC=${1:-target/release/clsync}
CLSYNC=$(readlink -f "$CLSYNC")
DIRS=${DIRS:-20000}
RUNS=${RUNS:-1}
BASE=${BASE:-/dev/shm}
W=$(mktemp -d "$BASE/clsync-warm-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/src" "$W/dst"
python3 - "$W/src" "$DIRS" <<'EOF'
import os, sys
root, dirs = sys.argv[1], int(sys.argv[2])
top = max(1, dirs // 100)
n = 0
for i in range(top):
    for j in range(dirs // top):
        d = os.path.join(root, f"t{i:03d}", f"d{j:03d}")
        os.makedirs(d, exist_ok=True)
        for k in range(5):
            with open(os.path.join(d, f"f{k}"), "w") as f:
                f.write("x" * (100 + (n % 200)))
            n += 1
EOF

now() { date +%s.%N; }

# start ARGS...: runs clsync until `running`, prints the seconds, stops it (SIGTERM).
start() {
    rm -f "$W/status"
    t0=$(now)
    "$CLSYNC" --index-dir "$W/index" --status-file "$W/status" "$@" "$W/src" "$W/dst" \
        2>"$W/log" &
    pid=$!
    while [ "$(cat "$W/status" 2>/dev/null)" != running ]; do
        kill -0 "$pid" 2>/dev/null || { cat "$W/log" >&2; exit 1; }
        sleep 0.01
    done
    t1=$(now)
    hwm=$(awk '/VmHWM/ {print $2 " kB"}' "/proc/$pid/status")
    kill -TERM "$pid"
    wait "$pid" || true
    how=$(grep -o 'initial sync: [a-z]*[^)]*)' "$W/log" | head -1)
    echo "$(echo "$t1 - $t0" | bc) s, VmHWM $hwm, $how"
}

echo "tree: $DIRS dirs x 5 files on $BASE; load: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
echo "full-first: $(start)"
r=0
while [ "$r" -lt "$RUNS" ]; do
    echo "warm:       $(start)"
    for k in 0 1 2 3 4 5 6 7 8 9; do
        echo "changed $r" >"$W/src/t000/d00$k/f0"
    done
    echo "warm+10:    $(start)"
    echo "full:       $(start --initial-sync full)"
    r=$((r + 1))
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
