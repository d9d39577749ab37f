//! The systemd units in `contrib/systemd/`.
//!
//! - `units_pass_systemd_analyze_verify` (always): `systemd-analyze verify` accepts both
//!   units, and the template under the instance names a user would give it, without a
//!   single line on stderr. The copies verified differ from the shipped units only in
//!   their `ExecStart=` binary (the cargo-built one instead of `/usr/bin/...`).
//! - `units_under_a_real_systemd` (only with `CLSYNC_TEST_SYSTEMD=1`): boots systemd in a
//!   `systemd-nspawn` container on a throwaway overlay of this machine's root file
//!   system, with the cargo-built binaries installed as `/usr/bin/clsync` and
//!   `/usr/bin/clsync-manager`, the units in `/etc/systemd/system` and test profiles in
//!   `/etc/clsync`. What this machine's packages and earlier runs left is hidden in the
//!   overlay, so the boot does not depend on it: `/etc/systemd/system` (units enabled
//!   here, such as timers run at boot), the journal (`/var/log/journal`, journald.conf.d)
//!   and `/var/lib/clsync`. A probe unit started at boot drives `systemctl` (readiness, a sync,
//!   reload, the watchdog, a clean stop, the worker template) and writes its findings
//!   into a directory bound into the container; then it powers the container off.
//!
//! Needs (Debian): `systemd` (systemd-analyze), `procps` (`/bin/kill`, named by
//! `ExecReload=`), and for the container test `systemd-container` (systemd-nspawn).
//! Runs as root (mounts).

mod common;

use common::nspawn::*;
use common::*;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The manager binary under test.
const MANAGER_BIN: &str = env!("CARGO_BIN_EXE_clsync-manager");

const MANAGER_UNIT: &str = "clsync-manager.service";
const WORKER_UNIT: &str = "clsync@.service";

fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd")
}

fn read_unit(name: &str) -> String {
    let p = unit_dir().join(name);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// `Key=value` settings of `section`, in order (comments and blank lines skipped).
fn settings(unit: &str, section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in unit.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') && l.ends_with(']') {
            cur = l[1..l.len() - 1].to_string();
            continue;
        }
        if cur == section {
            if let Some((k, v)) = l.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    out
}

fn setting<'a>(s: &'a [(String, String)], key: &str) -> Option<&'a str> {
    s.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The unit with `/usr/bin/clsync-manager` and `/usr/bin/clsync` in `ExecStart=` replaced
/// by the cargo-built binaries. Panics if the unit does not name the installed path (so
/// the replacement cannot silently do nothing).
fn with_test_binaries(unit: &str, name: &str) -> String {
    for b in [BIN, MANAGER_BIN] {
        assert!(
            !b.bytes().any(|c| c.is_ascii_whitespace()),
            "the binary path {b:?} contains white space; cannot put it into ExecStart="
        );
    }
    let mut replaced = 0;
    let text: Vec<String> = unit
        .lines()
        .map(|l| {
            if let Some(rest) = l.strip_prefix("ExecStart=") {
                for (installed, built) in [
                    ("/usr/bin/clsync-manager ", MANAGER_BIN),
                    ("/usr/bin/clsync ", BIN),
                ] {
                    if let Some(args) = rest.strip_prefix(installed) {
                        replaced += 1;
                        return format!("ExecStart={built} {args}");
                    }
                }
            }
            l.to_string()
        })
        .collect();
    assert_eq!(
        replaced, 1,
        "{name}: expected exactly one ExecStart=/usr/bin/clsync[-manager] ... line"
    );
    text.join("\n") + "\n"
}

/// What both units must say (the design, not just syntax).
fn check_settings(name: &str, unit: &str, want: &[(&str, &str)]) {
    let s = settings(unit, "Service");
    for (k, v) in want {
        assert_eq!(
            setting(&s, k),
            Some(*v),
            "{name}: [Service] {k}= should be {v:?}"
        );
    }
    for k in [
        "NoNewPrivileges",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "ProtectHostname",
        "RestrictRealtime",
        "LockPersonality",
    ] {
        assert_eq!(setting(&s, k), Some("yes"), "{name}: {k}=yes expected");
    }
    let filter = setting(&s, "SystemCallFilter").unwrap_or_default();
    for group in ["@system-service", "@mount"] {
        assert!(
            filter.split_whitespace().any(|g| g == group),
            "{name}: SystemCallFilter= should allow {group} (rsync, chown, mknod, mount in scripts): {filter:?}"
        );
    }
    for call in [
        "seccomp",
        "landlock_create_ruleset",
        "landlock_add_rule",
        "landlock_restrict_self",
    ] {
        assert!(
            filter.split_whitespace().any(|g| g == call),
            "{name}: SystemCallFilter= should allow {call} (the workers' sandbox; in no group): {filter:?}"
        );
    }
    // These would break a mirror of an arbitrary tree (see the comments in the units).
    for k in [
        "RestrictSUIDSGID",
        "ProtectClock",
        "ProtectSystem",
        "ProtectHome",
        "PrivateDevices",
    ] {
        assert!(
            setting(&s, k).is_none_or(|v| v == "no"),
            "{name}: {k}= must not be set: it breaks mirroring arbitrary trees"
        );
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = find_program("systemd-analyze") else {
        panic!(
            "systemd-analyze not found: .ci/run must install the Debian package `systemd` \
             (it provides systemd-analyze, used to verify contrib/systemd/*.service)"
        );
    };
    let manager = read_unit(MANAGER_UNIT);
    let worker = read_unit(WORKER_UNIT);
    check_settings(
        MANAGER_UNIT,
        &manager,
        &[
            ("Type", "notify"),
            ("NotifyAccess", "main"),
            ("ExecStart", "/usr/bin/clsync-manager run -Y journal"),
            ("ExecReload", "/bin/kill -HUP $MAINPID"),
            ("Restart", "on-failure"),
            ("KillMode", "mixed"),
            ("RuntimeDirectory", "clsync"),
            ("StateDirectory", "clsync"),
        ],
    );
    let ms = settings(&manager, "Service");
    assert!(
        setting(&ms, "WatchdogSec").is_some(),
        "{MANAGER_UNIT}: WatchdogSec= expected"
    );
    check_settings(
        WORKER_UNIT,
        &worker,
        &[
            (
                "ExecStart",
                "/usr/bin/clsync --unit-instance %i $CLSYNC_ARGS_SYSTEMD",
            ),
            ("EnvironmentFile", "-/etc/default/clsync.d/*"),
            ("Restart", "on-failure"),
            ("KillMode", "mixed"),
            ("RuntimeDirectory", "clsync"),
        ],
    );

    // Documentation=man:NAME(SECTION) must name pages this project ships.
    for (name, unit) in [(MANAGER_UNIT, &manager), (WORKER_UNIT, &worker)] {
        let s = settings(unit, "Unit");
        let docs = setting(&s, "Documentation").unwrap_or_default();
        for d in docs.split_whitespace() {
            let Some(page) = d.strip_prefix("man:") else {
                continue;
            };
            let (n, sec) = page
                .strip_suffix(')')
                .and_then(|p| p.split_once('('))
                .unwrap_or_else(|| panic!("{name}: malformed Documentation entry {d:?}"));
            let file = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("man")
                .join(format!("{n}.{sec}"));
            assert!(
                file.is_file(),
                "{name}: Documentation={d} but {} does not exist",
                file.display()
            );
        }
    }

    let t = tempfile::Builder::new()
        .prefix("clsync-units-")
        .tempdir()
        .expect("temp dir");
    let dir = t.path();
    let manager_t = with_test_binaries(&manager, MANAGER_UNIT);
    let worker_t = with_test_binaries(&worker, WORKER_UNIT);
    write(&dir.join(MANAGER_UNIT), manager_t.as_bytes());
    write(&dir.join(WORKER_UNIT), worker_t.as_bytes());
    // The template as the instances a user starts: PROFILE, PROFILE@LABEL, PROFILE-LABEL.
    let mut paths: Vec<OsString> =
        vec![dir.join(MANAGER_UNIT).into(), dir.join(WORKER_UNIT).into()];
    for inst in ["mirror", "lxc@web01", "lxc-web01"] {
        let p = dir.join(format!("clsync@{inst}.service"));
        write(&p, worker_t.as_bytes());
        paths.push(p.into());
    }
    // --man=no: whether the man pages are installed on this machine is not the units'
    // business; that they exist in man/ is checked above.
    let out = Command::new(&analyze)
        .arg("verify")
        .arg("--man=no")
        .args(&paths)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", analyze.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hint = if stderr.contains("/bin/kill") {
        "\n(hint: /bin/kill is in the Debian package `procps`; .ci/run must install it)"
    } else {
        ""
    };
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\nstderr:\n{stderr}\nstdout:\n{stdout}{hint}\nverified copies:\n--- {MANAGER_UNIT}\n{manager_t}\n--- {WORKER_UNIT}\n{worker_t}",
        describe_status(out.status)
    );
}

// ---------------------------------------------------------------------------
// The real thing: systemd in a container
// ---------------------------------------------------------------------------

/// The whole container run (boot, probe, power-off).
const NSPAWN_TIMEOUT: Duration = Duration::from_secs(600);

/// Test profiles installed in the container's /etc/clsync.
const PROFILES: &[(&str, &str)] = &[
    (
        "systest-fast.toml",
        r#"# Mirrored quickly: the sync, ownership and watchdog checks.
watch-dir = "/srv/clsync-test/fast/src"
destination-dir = "/srv/clsync-test/fast/dst"
delay-collect = "100ms"
delay-sync = "100ms"
status-file = "/run/clsync/systest-fast.status"
autostart = true
restart-delay = "500ms"
"#,
    ),
    (
        "systest-slow.toml",
        r#"# Collects for an hour: what it has queued is only synced by the final sync at stop.
watch-dir = "/srv/clsync-test/slow/src"
destination-dir = "/srv/clsync-test/slow/dst"
delay-collect = "1h"
delay-sync = "1h"
status-file = "/run/clsync/systest-slow.status"
autostart = true
stop-timeout = "2m"
"#,
    ),
    (
        "systest-tmpl.toml",
        r#"# A template for clsync@.service: clsync@systest-tmpl@one, clsync@systest-tmpl-two.
watch-dir = "/srv/clsync-test/tmpl-%label%/src"
destination-dir = "/srv/clsync-test/tmpl-%label%/dst"
delay-collect = "100ms"
delay-sync = "100ms"
status-file = "/run/clsync/systest-tmpl-%label%.status"
"#,
    ),
];

/// Added before `systemctl reload clsync-manager`.
const EXTRA_PROFILE: &str = r#"watch-dir = "/srv/clsync-test/extra/src"
destination-dir = "/srv/clsync-test/extra/dst"
delay-collect = "100ms"
delay-sync = "100ms"
autostart = true
"#;

const TEST_TARGET: &str = "[Unit]
Description=clsync systemd test: basic system plus the probe
Requires=basic.target
After=basic.target
Wants=clsync-probe.service
AllowIsolate=yes
";

/// The container's journald: the probe's checks read the journal, so it must hold all
/// of this boot and nothing else, whatever this machine's journald.conf says. Volatile:
/// in the container's own /run, never flushed to the (hidden) /var/log/journal.
const JOURNALD_CONF: &str = "[Journal]
Storage=volatile
RateLimitIntervalSec=0
MaxLevelStore=debug
";

const PROBE_UNIT: &str = "[Unit]
Description=clsync systemd test probe
After=basic.target
[Service]
Type=oneshot
TimeoutStartSec=15min
ExecStart=/bin/bash /usr/local/sbin/clsync-probe
";

/// Runs in the container as clsync-probe.service. Findings: `PASS name: detail`,
/// `FAIL name: detail`, `INFO ...`, and `DONE` at the end.
const PROBE: &str = r####"#!/bin/bash
OUT=/clsync-findings
F=$OUT/findings
exec >"$OUT/probe.out" 2>&1
# The trace goes to its own file, not into the output the checks capture.
exec 9>"$OUT/probe.trace"
BASH_XTRACEFD=9
set -x
: >"$F"
pass() { echo "PASS $*" >>"$F"; }
fail() { echo "FAIL $*" >>"$F"; }
info() { echo "INFO $*" >>"$F"; }
check() { # check NAME DETAIL COMMAND...: PASS if the command succeeds
    local name=$1 detail=$2; shift 2
    local said
    if said=$("$@" 2>&1); then pass "$name: $detail"; else fail "$name: $detail (failed: $*${said:+: $said})"; fi
}
# wait_for SECONDS NAME DETAIL COMMAND...: poll the command until it succeeds.
wait_for() {
    local secs=$1 name=$2 detail=$3; shift 3
    local end=$((SECONDS + secs)) said
    while :; do
        if said=$("$@" 2>&1); then pass "$name: $detail"; return 0; fi
        if [ $SECONDS -ge $end ]; then fail "$name: $detail (not within ${secs}s: $*${said:+: $said})"; return 1; fi
        sleep 0.1
    done
}
prop() { systemctl show -p "$2" --value "$1"; }
is_() { local v; v=$(prop "$1" "$2"); [ "$v" = "$3" ] || { echo "$2=$v"; return 1; }; }
now() { date +%s.%N; }
# Journal position now; `journal_after CURSOR [journalctl options]` shows what came after.
mark() { journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p'; }
# Not `--after-cursor=CURSOR -u UNIT`: journalctl before 255 (systemd issue 30288) then
# skips the first entry that matches -u when the cursor's own entry does not, so a line
# looked for is lost whenever another unit logged last before the mark. Instead: the
# entry right after CURSOR (no match given, so the skip is exact), and from that entry
# on (--cursor includes it) what matches the options.
journal_after() {
    local next
    next=$(journalctl -q --after-cursor="$1" -o export | sed -n '1{s/^__CURSOR=//p;q}')
    [ -n "$next" ] || return 0
    journalctl -q --no-pager -o short-monotonic --cursor="$next" "${@:2}"
}
no_failure_logged() { ! grep -E 'Failed with result|Main process exited'; }
nothing_killed() { ! grep -Ei 'SIGKILL|left-over|remains running|killing'; }
export -f journal_after
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# Pid of the worker whose command line says --profile NAME (nothing if none or several).
worker_pids() {
    local p
    for p in $(pgrep -x clsync); do
        tr '\0' ' ' </proc/$p/cmdline 2>/dev/null | grep -q -- "--profile $1 " && echo $p
    done
}
# Type, owner, group, mode and device numbers of everything below $1 (sorted).
tree() { (cd "$1" && find . -mindepth 1 | sort | xargs -r stat -c '%n|%F|%u|%g|%a|%t|%T'); }
same_tree() { [ "$(tree "$1")" = "$(tree "$2")" ] && [ -n "$(tree "$1")" ]; }
same_file() { cmp -s "$1" "$2"; }
has_pid() { [ "$(prop "$1" MainPID)" != 0 ]; }
no_clsync_left() { ! pgrep -x clsync >/dev/null && ! pgrep -x clsync-manager >/dev/null; }

info "systemd $(systemctl --version | head -1); cgroup fs $(stat -fc %T /sys/fs/cgroup); kernel $(uname -r)"

# --- 0. journal_after: the first matching line after the mark is shown even when the
#        entry the mark points at matches nothing (another unit logged last: on a machine
#        with more packages, a timer's "Finished ..." just before the watchdog's kill).
echo "before the mark" | systemd-cat -t clsync-probe-other
wait_for 30 journal-after "the line before the mark is in the journal" \
    bash -c "journalctl -q -o cat -t clsync-probe-other | grep -qx 'before the mark'"
cur=$(mark)
echo "after the mark" | systemd-cat -t clsync-probe-match
wait_for 30 journal-after "the first matching line after a mark on another's entry is shown" \
    bash -c "journal_after '$cur' -t clsync-probe-match | grep -q 'after the mark'"

M=clsync-manager.service
FS=/srv/clsync-test/fast/src FD=/srv/clsync-test/fast/dst
SS=/srv/clsync-test/slow/src SD=/srv/clsync-test/slow/dst
mkdir -p $FS $FD $SS $SD /srv/clsync-test/extra/src /srv/clsync-test/extra/dst

# --- 1. start: returns after READY=1, which comes once the socket listens and the
#        autostart workers are started.
t0=$(now)
timeout 150 systemctl start $M
rc=$?
info "systemctl start $M: exit $rc after $(elapsed $t0)s"
check start "systemctl start exits 0" [ $rc = 0 ]
check start "ActiveState=active right after start" is_ $M ActiveState active
check start "SubState=running" is_ $M SubState running
status_json=$(clsync-manager status --json 2>&1)
rc=$?
info "status right after start: $(echo "$status_json" | tr -s ' \n' ' ')"
check ready "control socket answers as soon as systemctl start returns" [ $rc = 0 ]
check ready "both autostart workers started when READY=1 was sent" \
    [ "$(echo "$status_json" | grep -c '"pid": [0-9]')" = 2 ]
st=$(prop $M StatusText)
info "StatusText: $st"
check status-text "STATUS= reaches systemd" grep -q instances <<<"$st"
mp=$(prop $M MainPID)
check mainpid "MainPID is clsync-manager" [ "$(cat /proc/$mp/comm)" = clsync-manager ]
check watchdog-env "WATCHDOG_USEC=@WATCHDOG_USEC@ (the unit's WatchdogSec=) passed to the manager" \
    grep -qz '^WATCHDOG_USEC=@WATCHDOG_USEC@$' /proc/$mp/environ
wp=$(worker_pids systest-fast)
check worker-env "NOTIFY_SOCKET and WATCHDOG_* are not passed to workers" \
    bash -c "[ -n '$wp' ] && ! grep -qzE '^(NOTIFY_SOCKET|WATCHDOG_USEC|WATCHDOG_PID)=' /proc/$wp/environ"
check runtime-dir "RuntimeDirectory /run/clsync holds the control socket" [ -S /run/clsync/manager.sock ]
check state-dir "StateDirectory /var/lib/clsync holds the state file" [ -f /var/lib/clsync/state.json ]
# A fresh container: no delivered index of an earlier run (this machine's /var/lib/clsync).
for w in systest-fast systest-slow; do
    wait_for 30 fresh "the first start of $w is a full initial sync (no index)" \
        bash -c "journalctl -q -o cat -u $M | grep -F '[$w] initial sync:' | head -1 | grep -qF 'initial sync: full (no index)'"
done
info "timers: $(systemctl list-units --type=timer --all --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
# -Y journal: journald takes the <N> priority prefixes off (and keeps the priority).
check journal "no raw <N> priority prefix in the manager's journal lines" \
    bash -c "! journalctl -q --no-pager -u $M | grep -E ': <[0-7]>'"

# --- 2. a change is mirrored; hardening keeps owners, setuid/setgid, device nodes.
wait_for 30 fast-running "systest-fast status file reads running" \
    grep -qx running /run/clsync/systest-fast.status
wait_for 30 sandbox "the profile's worker runs confined (landlock full) inside the unit" \
    bash -c "clsync-manager status systest-fast --json | tr -d ' \n' | grep -qF '\"landlock\":\"full\"' || { clsync-manager status systest-fast --json | tr -s ' \n' ' '; false; }"
echo hello >$FS/hello.txt
wait_for 30 sync "a file written into the watched dir reaches the destination" same_file $FS/hello.txt $FD/hello.txt
mkdir $FS/setgid-dir && chown 1234:2345 $FS/setgid-dir && chmod 2775 $FS/setgid-dir
echo x >$FS/setgid-dir/setuid-file && chown 1234:2345 $FS/setgid-dir/setuid-file \
    && chmod 4755 $FS/setgid-dir/setuid-file
mknod $FS/null-dev c 1 3 && chown 7:8 $FS/null-dev && chmod 640 $FS/null-dev
mknod $FS/loop-dev b 7 0
mkfifo $FS/fifo
ln -s hello.txt $FS/link
wait_for 30 sync-attrs "owners, setuid/setgid modes, device nodes, fifo and symlink mirrored" same_tree $FS $FD
tree $FS >"$OUT/tree.src"; tree $FD >"$OUT/tree.dst"

# --- 3. reload (ExecReload, SIGHUP): a new autostart profile starts, same main pid.
cat >/etc/clsync/systest-extra.toml <<'EOF'
@EXTRA_PROFILE@EOF
mp=$(prop $M MainPID)
timeout 60 systemctl reload $M
check reload "systemctl reload exits 0" [ $? = 0 ]
check reload "MainPID unchanged by reload" is_ $M MainPID "$mp"
wait_for 30 reload "the profile added before reload runs" \
    bash -c "clsync-manager status systest-extra | grep -q running"

# --- 4. watchdog: pings arrive (the service survives several periods), and a hung
#        manager is killed and restarted.
mkdir -p /run/systemd/system/$M.d
printf '[Service]\nWatchdogSec=2s\n' >/run/systemd/system/$M.d/50-probe-watchdog.conf
systemctl daemon-reload
timeout 300 systemctl restart $M
check watchdog "systemctl restart with WatchdogSec=2s exits 0" [ $? = 0 ]
mp=$(prop $M MainPID)
n0=$(prop $M NRestarts)
check watchdog "WATCHDOG_USEC=2000000 after the drop-in" grep -qz '^WATCHDOG_USEC=2000000$' /proc/$mp/environ
# Observed for 4 watchdog periods (not a synchronisation: nothing must happen).
end=$((SECONDS + 8)); alive=yes
while [ $SECONDS -lt $end ]; do
    if ! is_ $M ActiveState active || ! is_ $M MainPID "$mp"; then alive=no; break; fi
    sleep 0.2
done
check watchdog-pings "the manager keeps pinging: same MainPID, active, for 4 watchdog periods" [ $alive = yes ]
t0=$(now); cur=$(mark)
kill -STOP "$mp"
restarted() {
    local p; p=$(prop $M MainPID)
    [ "$(prop $M NRestarts)" -gt "$n0" ] && [ "$p" != 0 ] && [ "$p" != "$mp" ] && is_ $M ActiveState active
}
wait_for 60 watchdog-restart "a SIGSTOPped manager is restarted by the watchdog (NRestarts up, new MainPID)" restarted
info "watchdog restart took $(elapsed $t0)s; NRestarts $n0 -> $(prop $M NRestarts)"
wait_for 30 watchdog-restart "the journal says why" bash -c "journal_after '$cur' -u $M | grep -q 'Watchdog timeout'"
check watchdog-restart "the hung manager is gone" bash -c "! kill -0 $mp 2>/dev/null"
wait_for 30 watchdog-restart "the new manager runs systest-fast again" \
    bash -c "clsync-manager status systest-fast | grep -q running"
check watchdog-restart "exactly one systest-fast worker" [ "$(worker_pids systest-fast | wc -l)" = 1 ]
echo again >$FS/after-watchdog.txt
wait_for 30 watchdog-restart "mirroring works after the restart" same_file $FS/after-watchdog.txt $FD/after-watchdog.txt
rm -f /run/systemd/system/$M.d/50-probe-watchdog.conf
systemctl daemon-reload

# --- 5. clean stop: final syncs complete, exit 0, nothing left over.
wait_for 30 stop "systest-slow running" bash -c "clsync-manager status systest-slow | grep -q running"
echo final >$SS/final.txt
queued() {
    local p; p=$(worker_pids systest-slow)
    [ -n "$p" ] && kill -USR1 "$p" && clsync-manager logs systest-slow -n 5 | grep -q '"queued":[1-9]'
}
wait_for 30 stop "the slow worker has final.txt queued (delay-collect 1h)" queued
cur=$(mark); t0=$(now)
timeout 300 systemctl stop $M
rc=$?
info "systemctl stop: exit $rc after $(elapsed $t0)s"
check stop "systemctl stop exits 0" [ $rc = 0 ]
check stop "ActiveState=inactive" is_ $M ActiveState inactive
# Result= and ExecMainStatus= cannot be asked for: the stopped unit is unloaded (garbage
# collected) at once and `systemctl show` then reports a fresh unit's defaults. The
# journal keeps what happened: "Deactivated successfully" only after a clean exit 0.
stop_log=$(journal_after "$cur" -u $M)
check stop "the manager exited 0 (Deactivated successfully)" grep -q "$M: Deactivated successfully" <<<"$stop_log"
check stop "no failure logged" no_failure_logged <<<"$stop_log"
check stop "the manager stopped every worker itself" grep -q "every worker stopped; exiting" <<<"$stop_log"
check stop "the final sync mirrored what was queued" same_file $SS/final.txt $SD/final.txt
check stop "no clsync or clsync-manager process left" no_clsync_left
check stop "systemd killed nothing (no SIGKILL, no left-over process)" nothing_killed <<<"$stop_log"

# --- 6. the worker template, with PROFILE@LABEL and PROFILE-LABEL instances.
for inst in systest-tmpl@one systest-tmpl-two; do
    label=${inst#systest-tmpl?}
    U="clsync@$inst.service"
    S=/srv/clsync-test/tmpl-$label/src D=/srv/clsync-test/tmpl-$label/dst
    mkdir -p $S $D
    timeout 60 systemctl start "$U"
    check template "systemctl start $U exits 0" [ $? = 0 ]
    check template "$U active" is_ "$U" ActiveState active
    p=$(prop "$U" MainPID)
    check template "$U runs clsync --unit-instance $inst" \
        bash -c "tr '\0' ' ' </proc/$p/cmdline | grep -q -- '--unit-instance $inst'"
    wait_for 30 template "$U status file reads running" grep -qx running /run/clsync/systest-tmpl-$label.status
    echo "$inst" >$S/t.txt
    wait_for 30 template "$U mirrors a change" same_file $S/t.txt $D/t.txt
done
cur=$(mark)
timeout 120 systemctl stop clsync@systest-tmpl@one.service
check template "systemctl stop clsync@systest-tmpl@one exits 0" [ $? = 0 ]
check template "clsync@systest-tmpl@one: exited 0" bash -c \
    "journal_after '$cur' -u clsync@systest-tmpl@one.service | grep -q 'Deactivated successfully'"
check template "/run/clsync kept for the other instance (RuntimeDirectoryPreserve)" \
    [ -f /run/clsync/systest-tmpl-two.status ]
timeout 120 systemctl stop clsync@systest-tmpl-two.service
check template "systemctl stop clsync@systest-tmpl-two exits 0" [ $? = 0 ]
check template "clsync@systest-tmpl-two: exited 0" bash -c \
    "journal_after '$cur' -u clsync@systest-tmpl-two.service | grep -q 'Deactivated successfully'"
tmpl_log=$(journal_after "$cur" -u 'clsync@*')
check template "no failure logged" no_failure_logged <<<"$tmpl_log"
check template "no clsync process left" no_clsync_left
check template "systemd killed nothing" nothing_killed <<<"$tmpl_log"

journalctl -b --no-pager -o short-monotonic -u $M -u 'clsync@*' >"$OUT/journal.txt" 2>&1
systemctl status --no-pager -l $M 'clsync@*' >"$OUT/status.txt" 2>&1
echo DONE >>"$F"
sync
systemctl --no-block poweroff
"####;

/// Probe checks that must appear as PASS lines (a check that never ran is a failure too).
const REQUIRED: &[&str] = &[
    "journal-after",
    "fresh",
    "start",
    "ready",
    "status-text",
    "journal",
    "watchdog-env",
    "worker-env",
    "sandbox",
    "sync",
    "sync-attrs",
    "reload",
    "watchdog-pings",
    "watchdog-restart",
    "stop",
    "template",
];

#[test]
fn units_under_a_real_systemd() {
    if std::env::var_os("CLSYNC_TEST_SYSTEMD").is_none_or(|v| v != "1") {
        return skip("set CLSYNC_TEST_SYSTEMD=1 to boot systemd in systemd-nspawn");
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the systemd-nspawn test needs root (mounts, a container)"
    );
    let Some(nspawn) = find_program("systemd-nspawn") else {
        panic!(
            "systemd-nspawn not found: .ci/run must install the Debian packages `systemd` and \
             `systemd-container` for CLSYNC_TEST_SYSTEMD=1"
        );
    };
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("clsync-nspawn-")
        .tempdir()
        .expect("temp dir");
    let base = fs::canonicalize(tmp.path()).expect("canonicalize");
    let mut c = Container {
        mounts: Vec::new(),
        child: None,
        tmp: Some(tmp),
    };
    // Everything the container writes goes to this tmpfs: the overlay's upper layer
    // (the installed files, the container's /var, /etc changes) and the findings.
    c.mount("tmpfs", "clsync-test", &base, "mode=0755,size=2g");
    let (upper, work, root, findings) = (
        base.join("upper"),
        base.join("work"),
        base.join("root"),
        base.join("findings"),
    );
    for d in [&upper, &work, &root, &findings] {
        mkdir(d);
    }
    c.mount(
        "overlay",
        "clsync-test-root",
        &root,
        &format!(
            "lowerdir=/,upperdir={},workdir={}",
            upper.display(),
            work.display()
        ),
    );
    assert!(
        root.join("lib/systemd/systemd").exists() || root.join("usr/lib/systemd/systemd").exists(),
        "no systemd in the root file system: .ci/run must install `systemd`"
    );

    // The binaries as a package installs them, the units, the probe.
    install(
        &root.join("usr/bin/clsync"),
        &fs::read(BIN).expect("read clsync"),
        0o755,
    );
    install(
        &root.join("usr/bin/clsync-manager"),
        &fs::read(MANAGER_BIN).expect("read clsync-manager"),
        0o755,
    );
    // The container boots this project's units on a plain systemd, not what this
    // machine's packages and admin enabled, aliased, masked or drop-in'd in
    // /etc/systemd/system: basic.target pulls in timers.target, and a timer enabled
    // here (e.g. prometheus-node-exporter-apt.timer, OnBootSec=0) ran at boot and
    // logged in the middle of the watchdog check.
    let sys = root.join("etc/systemd/system");
    remove_host_state(&sys);
    // The journal: only this boot's (see JOURNALD_CONF).
    remove_host_state(&root.join("var/log/journal"));
    let journald_d = root.join("etc/systemd/journald.conf.d");
    remove_host_state(&journald_d);
    install(
        &journald_d.join("clsync-test.conf"),
        JOURNALD_CONF.as_bytes(),
        0o644,
    );
    for u in [MANAGER_UNIT, WORKER_UNIT] {
        install(&sys.join(u), read_unit(u).as_bytes(), 0o644);
    }
    install(
        &sys.join("clsync-test.target"),
        TEST_TARGET.as_bytes(),
        0o644,
    );
    install(
        &sys.join("clsync-probe.service"),
        PROBE_UNIT.as_bytes(),
        0o644,
    );
    // The container has no network (--private-network): nothing to wait for before
    // network-online.target, which the units want.
    for u in [
        "systemd-networkd-wait-online.service",
        "NetworkManager-wait-online.service",
        "ifupdown-wait-online.service",
    ] {
        symlink_force("/dev/null", &sys.join(u));
    }
    let watchdog = setting(
        &settings(&read_unit(MANAGER_UNIT), "Service"),
        "WatchdogSec",
    )
    .map(|v| parse_seconds(v) * 1_000_000)
    .expect("WatchdogSec= in clsync-manager.service");
    let probe = PROBE
        .replace("@EXTRA_PROFILE@", EXTRA_PROFILE)
        .replace("@WATCHDOG_USEC@", &watchdog.to_string());
    install(
        &root.join("usr/local/sbin/clsync-probe"),
        probe.as_bytes(),
        0o755,
    );
    // Only the test profiles, whatever this machine has in /etc/clsync.
    let etc_clsync = root.join("etc/clsync");
    if etc_clsync.exists() {
        remove_dir_all(&etc_clsync);
    }
    mkdir_p(&etc_clsync);
    for (name, text) in PROFILES {
        install(&etc_clsync.join(name), text.as_bytes(), 0o644);
    }
    // No state of a manager or worker that ran on this machine (other tests leave
    // delivered indexes in /var/lib/clsync/index): the first start must be a fresh one.
    remove_host_state(&root.join("var/lib/clsync"));
    remove_host_state(&root.join("run/clsync"));
    fs::set_permissions(&findings, fs::Permissions::from_mode(0o777)).expect("chmod findings");

    // Boot. --register=no and --keep-unit: no machined, no systemd on the host to ask
    // for a scope (this machine's PID 1 need not be systemd). --private-network: the
    // container's services cannot touch the host's interfaces.
    let console = base.join("console.log");
    let machine = format!("clsync-test-{}", std::process::id());
    c.boot(
        &nspawn,
        &root,
        &findings,
        &machine,
        "clsync-test.target",
        &console,
    );
    let show = |what: &str| -> String {
        let mut s = format!("--- findings ({what}):\n");
        s.push_str(&read_lossy(&findings.join("findings")));
        for f in ["journal.txt", "status.txt"] {
            if findings.join(f).exists() {
                s.push_str(&format!("--- {f}:\n{}", read_lossy(&findings.join(f))));
            }
        }
        s.push_str(&format!(
            "--- probe output (tail):\n{}--- probe trace (tail):\n{}",
            tail_lines(&read_lossy(&findings.join("probe.out")), 40),
            tail_lines(&read_lossy(&findings.join("probe.trace")), 80)
        ));
        s.push_str(&format!(
            "--- systemd-nspawn output (tail):\n{}",
            tail_lines(&read_lossy(&console), 150)
        ));
        s
    };
    let text = judge(
        &mut c,
        &findings,
        NSPAWN_TIMEOUT,
        REQUIRED,
        "systemd",
        &show,
    );
    eprintln!(
        "units_under_a_real_systemd: {} checks passed in {:.1}s\n{}",
        text.lines().filter(|l| l.starts_with("PASS")).count(),
        started.elapsed().as_secs_f64(),
        text.lines()
            .filter(|l| l.starts_with("INFO"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Seconds of a systemd time span in the simple forms a unit would use here: `30`,
/// `30s`, `2min`, `1min 30s`.
fn parse_seconds(v: &str) -> u64 {
    v.split_whitespace()
        .map(|part| {
            let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
            let n: u64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("cannot parse the time span {v:?}"));
            match &part[digits.len()..] {
                "" | "s" | "sec" => n,
                "m" | "min" => n * 60,
                "h" => n * 3600,
                unit => panic!("time span {v:?}: unit {unit:?} not understood by this test"),
            }
        })
        .sum()
}
