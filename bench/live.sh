#!/usr/bin/env bash
# Live-sync benchmark for clsync: time until live vs. (inotifywait -r setup + plain rsync -a),
# peak RSS, inotify watch count; idle RSS/CPU/wake-ups, single-change latency, a burst of
# 20,000 new files at minimal delays, and an inotify event storm (daemon CPU per event, queue
# overflow). Our daemon is measured twice, watching with inotify (`clsync`) and with fanotify
# (`clsync --monitor fanotify`, root only). See docs/benchmarks.md and bench/live.py.
#
#   bench/live.sh                 # full run: 20,000 dirs x 5 files, 3 runs, all parts
#   DIRS=200 RUNS=1 bench/live.sh # smoke test
#   bench/live.sh --with-peers    # also measure lsyncd and the original C clsync; as root,
#                                 # missing ones are installed first (Debian: apt-get install
#                                 # -y lsyncd clsync inotify-tools)
#   bench/live.sh --no-fanotify   # without the fanotify variant
#   bench/live.sh --only=live     # only the time-until-live part (as before); parts:
#                                 # live, idle, latency, burst, events (comma-separated)
#   bench/live.sh --scale         # 200,000 dirs x 5 files (slow)
#
# Environment: CLSYNC_BIN (skip the build and use this binary), DIRS, FILES_PER_DIR, FANOUT,
# RUNS, BENCH_DIR, TIMEOUT, KEEP, BENCH_JSON, CLSYNC_ARGS, CLSYNC_C_BIN, LSYNCD_BIN,
# RATIO_TARGET, RSS_TARGET_MIB, RSS_VS_LSYNCD, LIVE_VS_PEER, BURST_TIMEOUT, LAT_TARGET, BURST_TARGET,
# BURST_RUNS_FRACTION, EVENTS_SECONDS, EVENTS_TARGET (see bench/live.py).
#
# Debian's `clsync` package puts the C original at /usr/bin/clsync; ours is the one in
# CLSYNC_BIN (built here), so the two do not clash: live.py picks the C one by its `-V`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

with_peers=0
for arg in "$@"; do
    case "$arg" in
        -h|--help) exec python3 "$here/live.py" --help ;;
        --with-peers) with_peers=1 ;;
    esac
done

# The original C clsync: CLSYNC_C_BIN, or a `clsync` on PATH / in /usr/bin whose -V says
# `clsync v0.` (ours says `clsync 0.x`).
have_c_clsync() {
    local c
    if [[ -n "${CLSYNC_C_BIN:-}" ]]; then
        [[ -x "$CLSYNC_C_BIN" ]]
        return
    fi
    for c in $(type -ap clsync) /usr/bin/clsync; do
        [[ -x "$c" && "$("$c" -V 2>&1 || true)" == *"clsync v0."* ]] && return 0
    done
    return 1
}

if [[ $with_peers == 1 ]]; then
    missing=()
    [[ -n "${LSYNCD_BIN:-}" ]] || command -v lsyncd >/dev/null || missing+=(lsyncd)
    have_c_clsync || missing+=(clsync)
    command -v inotifywait >/dev/null || missing+=(inotify-tools)
    if (( ${#missing[@]} )); then
        if [[ $(id -u) != 0 ]]; then
            echo "bench: not root: not installing the peers; to measure them: apt-get install ${missing[*]}" >&2
        elif ! command -v apt-get >/dev/null; then
            echo "bench: no apt-get: install ${missing[*]} to measure the peers" >&2
        else
            echo "bench: installing the peers: apt-get install -y ${missing[*]}" >&2
            export DEBIAN_FRONTEND=noninteractive
            if ! apt-get install -y -qq "${missing[@]}" >&2; then
                echo "bench: apt-get install failed; apt-get update -qq, then once more" >&2
                apt-get update -qq >&2 && apt-get install -y -qq "${missing[@]}" >&2 ||
                    echo "bench: could not install ${missing[*]}; going on without them" >&2
            fi
        fi
    fi
fi

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
