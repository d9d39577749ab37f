#!/usr/bin/env bash
# Link benchmark for clsync: the destination behind a real link with latency. A network
# namespace joined by a veth pair, sshd inside it on its own port (generated host key, an
# authorized key in the temp dir), `tc qdisc ... netem delay 10ms rate 100mbit` on both
# ends (20 ms round trip). Measured against plain rsync over the same warm ssh connection
# (ControlMaster) and lsyncd's `default.rsyncssh`: initial sync, single-change latency,
# a 20,000-file burst, a renamed directory of 10,000 files, warm and full restart.
# See docs/benchmarks.md and bench/link.py (the measuring).
#
#   bench/link.sh                       # 2,000 dirs x 5 files
#   DIRS=200 BIG=1000 BURST=2000 bench/link.sh   # smoke test
#   bench/link.sh --no-lsyncd           # without the peer
#
# A kernel without sch_netem (CONFIG_NET_SCH_NETEM not set: `tc` says "Specified qdisc
# kind is unknown") gets the same link another way: `tbf rate 100mbit` on both veth ends
# and a relay in the root namespace that holds every chunk 10 ms in each direction
# (bench/link.py relay); the report says which link was used. LINK=netem or LINK=relay
# forces one.
#
# Needs root (namespaces, tc, sshd), ip, tc, sshd, ssh, rsync, python3; lsyncd for the
# peer (as root it is installed with apt-get when missing). Everything it starts is
# stopped and the namespace, the veth pair and the temp dir are removed on exit, also on
# Ctrl-C or SIGTERM. Environment: CLSYNC_BIN, DIRS, FILES_PER_DIR, FANOUT, BIG, BURST,
# LAT_N, IDLE_S, DELAY_MS, RATE, LINK, REMOTE_BASHRC, BENCH_DIR, KEEP, BENCH_JSON, LSYNCD_BIN, TIMEOUT.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

with_lsyncd=1
for arg in "$@"; do
    case "$arg" in
        -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --no-lsyncd) with_lsyncd=0 ;;
        *) echo "bench: unknown argument $arg" >&2; exit 2 ;;
    esac
done

if [[ $(id -u) != 0 ]]; then
    echo "bench: needs root (ip netns, tc, sshd)" >&2
    exit 2
fi
for t in ip tc rsync ssh ssh-keygen /usr/sbin/sshd python3; do
    command -v "$t" >/dev/null || { echo "bench: $t is missing" >&2; exit 2; }
done
if [[ $with_lsyncd == 1 && -z "${LSYNCD_BIN:-}" ]] && ! command -v lsyncd >/dev/null; then
    echo "bench: installing the peer: apt-get install -y lsyncd" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lsyncd >&2 ||
        { echo "bench: could not install lsyncd; going on without it" >&2; with_lsyncd=0; }
fi
export WITH_LSYNCD=$with_lsyncd

if [[ -z "${CLSYNC_BIN:-}" ]]; then
    echo "bench: cargo build --release" >&2
    (cd "$root" && cargo build --release --bin clsync) >&2
    CLSYNC_BIN="${CARGO_TARGET_DIR:-$root/target}/release/clsync"
fi
[[ -x "$CLSYNC_BIN" ]] || { echo "bench: CLSYNC_BIN=$CLSYNC_BIN is not an executable" >&2; exit 2; }
export CLSYNC_BIN

# Names of this run: interface names are at most 15 bytes.
id=$(( $$ % 100000 ))
ns="clsync-link-$id"
vh="cll${id}h"
vn="cll${id}n"
net="10.$(( 200 + id % 50 )).$(( id % 250 ))"
tmp=""
pids=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    # Whatever still runs inside the namespace (sshd's sessions, a stray rsync).
    if ip netns list 2>/dev/null | grep -qw "$ns"; then
        for p in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$p" 2>/dev/null || true
        done
    fi
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    ip link del "$vh" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    if [[ -n "$tmp" && -d "$tmp" ]]; then
        if [[ "${KEEP:-0}" == 1 ]]; then
            echo "bench: kept $tmp" >&2
        else
            rm -rf -- "$tmp"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

tmp="$(mktemp -d "${BENCH_DIR:-/tmp}/clsync-link.XXXXXX")"
export LINK_TMP="$tmp"

ip netns add "$ns"
ip link add "$vh" type veth peer name "$vn"
ip link set "$vn" netns "$ns"
ip addr add "$net.1/30" dev "$vh"
ip link set "$vh" up
ip -n "$ns" addr add "$net.2/30" dev "$vn"
ip -n "$ns" link set "$vn" up
ip -n "$ns" link set lo up

delay="${DELAY_MS:-10}"
rate="${RATE:-100mbit}"
link="${LINK:-}"
if [[ -z "$link" || "$link" == netem ]]; then
    if tc qdisc add dev "$vh" root netem delay "${delay}ms" rate "$rate" 2>"$tmp/tc.err" &&
        tc -n "$ns" qdisc add dev "$vn" root netem delay "${delay}ms" rate "$rate" 2>>"$tmp/tc.err"; then
        link=netem
    elif [[ "$link" == netem ]]; then
        echo "bench: netem: $(cat "$tmp/tc.err")" >&2
        exit 2
    else
        echo "bench: no netem in this kernel ($(head -1 "$tmp/tc.err")): tbf rate $rate on both ends + a ${delay} ms relay each way" >&2
        tc qdisc del dev "$vh" root 2>/dev/null || true
        link=relay
    fi
fi
if [[ "$link" == relay ]]; then
    tc qdisc add dev "$vh" root tbf rate "$rate" burst 64kb latency 100ms
    tc -n "$ns" qdisc add dev "$vn" root tbf rate "$rate" burst 64kb latency 100ms
fi
export LINK_KIND="$link" LINK_DELAY_MS="$delay" LINK_RATE="$rate" LINK_VETH="$vh"
export LINK_QDISC="$(tc qdisc show dev "$vh" | head -1)"

# sshd inside the namespace: its own port, host key and authorized key.
port=$(( 20000 + id % 20000 ))
mkdir -p /run/sshd "$tmp/ssh"
ssh-keygen -q -t ed25519 -N "" -f "$tmp/ssh/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$tmp/ssh/id"
cp "$tmp/ssh/id.pub" "$tmp/ssh/authorized_keys"
cat >"$tmp/ssh/sshd_config" <<EOF
Port $port
ListenAddress $net.2
HostKey $tmp/ssh/host_key
AuthorizedKeysFile $tmp/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile $tmp/ssh/sshd.pid
LogLevel VERBOSE
MaxStartups 100
MaxSessions 100
EOF
# bash sources ~/.bashrc for a command run by sshd (Debian's SSH_SOURCE_BASHRC) unless
# SHLVL says it is not the first shell. The remote account's start-up files are not the
# link (on the machine of docs/benchmarks.md root's .bashrc runs `pyenv init`: 0.4 s per
# session); REMOTE_BASHRC=1 keeps them.
[[ "${REMOTE_BASHRC:-0}" == 1 ]] || echo "SetEnv SHLVL=1" >>"$tmp/ssh/sshd_config"
ip netns exec "$ns" /usr/sbin/sshd -D -f "$tmp/ssh/sshd_config" -E "$tmp/ssh/sshd.log" </dev/null &
pids+=($!)

ssh_host="$net.2"
ssh_port="$port"
if [[ "$link" == relay ]]; then
    ssh_host=127.0.0.1
    ssh_port=$(( port + 1 ))
    python3 "$here/link.py" relay "127.0.0.1:$ssh_port" "$net.2:$port" "$delay" </dev/null &
    pids+=($!)
fi
export LINK_HOST="$ssh_host" LINK_PORT="$ssh_port" LINK_KEY="$tmp/ssh/id" LINK_SSHD_LOG="$tmp/ssh/sshd.log"

# Both ends listen before the measuring starts.
for _ in $(seq 200); do
    if ssh -p "$ssh_port" -i "$tmp/ssh/id" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=2 \
        "root@$ssh_host" true 2>/dev/null; then
        break
    fi
    sleep 0.05
done

python3 "$here/link.py" run
