#!/usr/bin/env bash
# Regenerates generated/clsync.order: the functions the worker runs, in the order the linker
# puts them at the start of the executable's code (see docs/benchmarks.md, "Code layout").
#
# Why: the kernel maps an executable's code in 64 KiB windows around each page that runs
# (fault-around), so code spread over the whole 2 MiB text keeps nearly all of it resident
# although only ~0.4 MiB ever runs. Listing the functions that run lets the linker
# (lld's --symbol-ordering-file, wired in build.rs) pack them into a few windows.
#
# How: the release binary runs under valgrind's callgrind through the common paths (short
# form with inotify and fanotify, the classic command line with rules, a TOML profile;
# start, initial sync, creates, writes, renames, removals, a status dump, stop); every
# function of the executable that ran is listed, those every scenario ran first.
#
#   bench/order.sh            # needs valgrind and rsync; run as root for fanotify
#
# Re-run it when the toolchain changes (std's symbol names carry its hash) or after larger
# changes to the event path; tests/layout.rs fails when, with the toolchain the file
# records, more than a tenth of the listed names no longer exist.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
out="$root/generated/clsync.order"
command -v valgrind >/dev/null || { echo "order.sh: valgrind is needed (apt-get install -y valgrind)" >&2; exit 1; }

(cd "$root" && cargo build --release --bin clsync)
bin="$root/target/release/clsync"
work="$(mktemp -d /tmp/clsync-order.XXXXXX)"
trap 'rc=$?; [[ $rc == 0 ]] || tail -n 5 "$work"/*.log >&2; rm -rf "$work"' EXIT

# wait_for PATH: polls until PATH exists (60 s deadline under valgrind).
wait_for() {
    local i
    for i in $(seq 1 600); do
        [[ -e "$1" ]] && return 0
        sleep 0.1
    done
    echo "order.sh: timed out waiting for $1" >&2
    return 1
}

# scenario NAME ARGS...: runs the worker under callgrind on a fresh small tree, in the
# directory that holds it (src, dst); "@SRC", "@DST" and "@STATUS" in ARGS are replaced by
# absolute paths.
scenario() {
    local name="$1"; shift
    local src="$work/$name/src" dst="$work/$name/dst" status="$work/$name/status"
    mkdir -p "$src" "$dst"
    local d f
    for d in $(seq 1 40); do
        mkdir -p "$src/a$d/b"
        for f in 1 2 3; do echo "$d $f" > "$src/a$d/b/f$f"; done
    done
    local args=() a
    for a in "$@"; do
        a="${a//@SRC/$src}"; a="${a//@DST/$dst}"; a="${a//@STATUS/$status}"
        args+=("$a")
    done
    (cd "$work/$name" && exec valgrind --tool=callgrind --demangle=no \
        --callgrind-out-file="$work/$name.cg" "$bin" "${args[@]}") >"$work/$name.log" 2>&1 &
    local pid=$!
    wait_for "$dst/a40/b/f3"
    echo probe > "$src/probe"; wait_for "$dst/probe"
    mkdir -p "$src/new/deep"; echo x > "$src/new/deep/g"; wait_for "$dst/new/deep/g"
    echo more >> "$src/a3/b/f1"; mv "$src/a4/b/f2" "$src/a4/b/f2x"; wait_for "$dst/a4/b/f2x"
    rm -rf "$src/a1"; mv "$src/a2" "$src/a2x"; wait_for "$dst/a2x/b/f1"
    kill -USR1 "$pid" 2>/dev/null || true
    echo last > "$src/last"; wait_for "$dst/last"
    kill -TERM "$pid"
    wait "$pid" || true
}

printf '+d^a3\n-f.*\\.tmp$\n' > "$work/rules"
# A TOML profile with rules, on the tree the "prof" scenario makes.
mkdir -p "$work/profiles"
cat > "$work/profiles/order.toml" <<EOF
watch-dir = "$work/prof/src"
destination-dir = "$work/prof/dst"
mode = "rsyncdirect"
delay-collect = 0
delay-sync = 0
rules = ['-f.*\.swp$']
# valgrind implements neither seccomp(2) nor the Landlock calls: the worker would refuse
# to start confined.
sandbox = false
EOF

scenario short @SRC @DST --status-file @STATUS
scenario relative src dst
scenario zero -t 0 -w 0 @SRC @DST
if [[ $(id -u) == 0 ]]; then
    scenario fan --monitor fanotify @SRC @DST
fi
scenario classic -M rsyncdirect -W @SRC -D @DST -R "$work/rules" -l order -t 1 -w 1
scenario prof --profile order --profiles-dir "$work/profiles"

python3 - "$bin" "$out" "$(cd "$root" && rustc -V)" "$work"/*.cg <<'EOF'
import re, subprocess, sys
binary, out, rustc_v, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
ran = {}  # function -> in how many scenarios it ran
for path in files:
    objs, fns, ob, here = {}, {}, None, set()
    for line in open(path, errors="replace"):
        m = re.match(r"^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if not m:
            continue
        kind, num, name = m.groups()
        table = objs if kind.endswith("ob") else fns
        if name:
            table[num] = name
        if kind == "ob":
            ob = objs[num]
        elif kind == "fn" and ob == binary:
            name = re.sub(r"'\d+$", "", fns[num])
            here.add(name)
    for name in here:
        ran[name] = ran.get(name, 0) + 1
syms = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True,
                      check=True).stdout
addr = {}
for line in syms.splitlines():
    p = line.split()
    if len(p) == 3 and p[1] in "tTwW":
        addr.setdefault(p[2], int(p[0], 16))
# What every scenario runs first, then what fewer do: the common path stays in as few
# windows as possible; within a group, address order keeps each module's code together.
# The C start-up code (crt1, crtbegin) runs in every process; callgrind names it otherwise.
for name in ("_start", "frame_dummy", "register_tm_clones", "deregister_tm_clones",
             "__do_global_dtors_aux"):
    ran[name] = len(files)
names = sorted((n for n in ran if n in addr), key=lambda n: (-ran[n], addr[n]))
with open(out, "w") as f:
    f.write("# Generated by bench/order.sh: the worker's functions that run, packed first by the\n")
    f.write("# linker so the code the daemon runs is resident in few pages. Do not edit.\n")
    f.write(f"# {rustc_v}\n")
    f.write("\n".join(names) + "\n")
print(f"order.sh: {len(names)} functions -> {out}")
EOF
