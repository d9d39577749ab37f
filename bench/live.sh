#!/usr/bin/env bash
# Live-sync benchmark for clsync: time until live vs. (inotifywait -r setup + plain rsync -a),
# peak RSS, inotify watch count; idle RSS/CPU/wake-ups, single-change latency and a burst of
# 20,000 new files at minimal delays. See docs/benchmarks.md.
#
#   bench/live.sh                 # full run: 20,000 dirs x 5 files, 3 runs, all parts
#   DIRS=200 RUNS=1 bench/live.sh # smoke test
#   bench/live.sh --with-peers    # also measure lsyncd and the original C clsync, if installed
#   bench/live.sh --only=live     # only the time-until-live part (as before); parts:
#                                 # live, idle, latency, burst (comma-separated)
#   bench/live.sh --scale         # 200,000 dirs x 5 files (slow)
#
# Environment: CLSYNC_BIN (skip the build and use this binary), DIRS, FILES_PER_DIR, FANOUT,
# RUNS, BENCH_DIR, TIMEOUT, KEEP, BENCH_JSON, CLSYNC_C_BIN, LSYNCD_BIN, BURST_TIMEOUT,
# LAT_TARGET, BURST_TARGET, BURST_RUNS_FRACTION (see bench/live.py).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

for arg in "$@"; do
    case "$arg" in
        -h|--help) exec python3 "$here/live.py" --help ;;
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
export CLSYNC_BIN

# The Python part removes its temp dir and stops every process it started on exit,
# on SIGINT/SIGTERM/SIGHUP too (its own trap).
exec python3 "$here/live.py" "$@"
