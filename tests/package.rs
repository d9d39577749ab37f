//! The Debian package as the successor of Debian 12's own `clsync` 0.4.5-2.
//!
//! `package_replaces_debians_clsync` (only with `CLSYNC_TEST_SYSTEMD=1`): builds our
//! .deb with `packaging/build-deb.sh --no-build` from the release binaries this test run
//! uses, fetches Debian's `clsync_0.4.5-2` (`apt-get download`, or apt's cache), and
//! boots systemd in a `systemd-nspawn` container on a throwaway overlay of this
//! machine's root file system. A probe unit there does what an administrator does:
//!
//! 1. installs Debian's clsync, puts a block into `/etc/clsync/clsync.conf`, enables
//!    and starts `clsync@BLOCK` (the C program mirrors it);
//! 2. installs our .deb over it (`dpkg -i`): an upgrade, not a downgrade; the unit file
//!    is still there and `dpkg -S` of the path the enabled link names answers `clsync`
//!    (a unit shipped in /usr/lib would be that file under another name), the enabled
//!    instance now runs our binary on the same block and mirrors a change; the old init
//!    script, its runlevel links and the unit systemd generated from it are gone, and so
//!    is the unmodified `/etc/default/clsync`;
//! 3. adds a TOML profile of the block's name: the profile runs and the log names the
//!    shadowed block; an instance with neither fails at once with exit status 2 and is
//!    not restarted;
//! 4. `dpkg --remove`: nothing of the package is left but its conffiles; `dpkg --purge`:
//!    nothing at all (a snapshot of /etc, /usr and /var/lib taken before is compared);
//! 5. again with a site that edited `/etc/default/clsync` and `/etc/init.d/clsync`: the
//!    edited defaults stay and reach the unit (`CLSYNC_ARGS_SYSTEMD`; `CLSYNC_ENABLE=true`,
//!    which only the init script read, gets a warning), the edited init
//!    script is kept as `/etc/init.d/clsync.dpkg-bak` where nothing runs it; purge
//!    removes both.
//!
//! `package_passes_lintian` (also with `CLSYNC_TEST_SYSTEMD=1`, it needs the built
//! package): `lintian` reports no error on the .deb.
//!
//! Needs (Debian): `systemd-container`, `dpkg-dev`, `lintian`, cargo-deb, and Debian's
//! clsync's dependency `libglib2.0-0` (installed on the host, which the container's root is
//! an overlay of). Runs as root (mounts, dpkg in the container).

mod common;

use common::nspawn::*;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Debian 12's package this one succeeds.
const OLD_VERSION: &str = "0.4.5-2";

/// The whole container run (boot, probe, power-off).
const NSPAWN_TIMEOUT: Duration = Duration::from_secs(600);

fn enabled() -> bool {
    if std::env::var_os("CLSYNC_TEST_SYSTEMD").is_none_or(|v| v != "1") {
        skip("set CLSYNC_TEST_SYSTEMD=1 to build the .deb and install it in systemd-nspawn");
        return false;
    }
    true
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        describe_status(out.status),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Our .deb, built once per test binary from the release binaries of this run.
struct Built {
    _dir: tempfile::TempDir,
    deb: PathBuf,
    secs: f64,
}

fn built() -> Option<&'static Built> {
    static BUILT: OnceLock<Option<Built>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let have = Command::new(&cargo)
                .args(["deb", "--version"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !have {
                skip(
                    "cargo-deb is not installed (`cargo install --locked cargo-deb`; .ci/run \
                     installs it)",
                );
                return None;
            }
            let dir = tempfile::Builder::new()
                .prefix("clsync-deb-")
                .tempdir()
                .expect("temp dir");
            let t0 = Instant::now();
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            // --no-build: the binaries this test run was built with (target/release);
            // --fast: less compression, the same files.
            run(Command::new(root.join("packaging/build-deb.sh"))
                .args(["--no-build", "--fast", "--output"])
                .arg(dir.path())
                .env("CARGO", &cargo)
                .current_dir(root));
            let deb = fs::read_dir(dir.path())
                .expect("read the output dir")
                .map(|e| e.expect("entry").path())
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .expect("build-deb.sh made no .deb");
            Some(Built {
                deb,
                secs: t0.elapsed().as_secs_f64(),
                _dir: dir,
            })
        })
        .as_ref()
}

/// Debian's `clsync_0.4.5-2_*.deb`: from apt's cache, else `apt-get download` into `dir`.
fn old_deb(dir: &Path) -> Option<PathBuf> {
    let cached = fs::read_dir("/var/cache/apt/archives").ok().and_then(|rd| {
        rd.filter_map(Result::ok).map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("clsync_0.4.5-2_"))
        })
    });
    if let Some(p) = cached {
        return Some(p);
    }
    let out = Command::new("apt-get")
        .args(["download", &format!("clsync={OLD_VERSION}")])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output();
    let found = fs::read_dir(dir).ok().and_then(|rd| {
        rd.filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
    });
    if found.is_none() {
        let said = match out {
            Ok(o) => format!(
                "{}: {}",
                describe_status(o.status),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => e.to_string(),
        };
        skip(&format!(
            "cannot get Debian's clsync {OLD_VERSION} (`apt-get download clsync={OLD_VERSION}`: \
             {said}); it needs Debian 12's package lists (apt-get update)"
        ));
    }
    found
}

/// Runs in the container as pkgtest-probe.service. Findings: `PASS name: detail`,
/// `FAIL name: detail`, `INFO ...`, and `DONE` at the end.
const PROBE: &str = r####"#!/bin/bash
OUT=/clsync-findings
F=$OUT/findings
D=/var/tmp/clsync-debs
exec >"$OUT/probe.out" 2>&1
exec 9>"$OUT/probe.trace"
BASH_XTRACEFD=9
set -x
: >"$F"
export DEBIAN_FRONTEND=noninteractive
pass() { echo "PASS $*" >>"$F"; }
fail() { echo "FAIL $*" >>"$F"; }
info() { echo "INFO $*" >>"$F"; }
check() { # check NAME DETAIL COMMAND...: PASS if the command succeeds
    local name=$1 detail=$2; shift 2
    local said
    if said=$("$@" 2>&1); then pass "$name: $detail"; else fail "$name: $detail (failed: $*${said:+: $said})"; fi
}
wait_for() { # wait_for SECONDS NAME DETAIL COMMAND...: poll until the command succeeds
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
mark() { journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p'; }
journal_after() { journalctl -q --no-pager -o cat --after-cursor="$1" "${@:2}"; }
same_file() { cmp -s "$1" "$2"; }
installed_version() { dpkg-query -W -f='${Status} ${Version}' clsync 2>/dev/null; }
# Every path of the file system that matters, for the leftover check (dpkg's and apt's
# own databases, journals and caches excluded: what they say is checked on its own).
snapshot() {
    find /etc /usr /var/lib -xdev \( -path /var/lib/dpkg -o -path /var/lib/apt \
        -o -path /var/lib/systemd -o -path /var/lib/ucf -o -path /etc/ld.so.cache \) -prune \
        -o -print | sort
}
# The files (not directories) a .deb ships, as absolute paths.
deb_files() { dpkg-deb --fsys-tarfile "$1" | tar -t | sed -n 's|^\./|/|; /\/$/d; p'; }
# Does any of them exist (through /lib -> usr/lib too)?
none_exist() { local p left=; while read -r p; do [ -e "$p" ] || [ -L "$p" ] && left="$left $p"; done; [ -z "$left" ] || { echo "left:$left"; return 1; }; }
conffiles_of() { dpkg-deb --ctrl-tarfile "$1" | tar -xO ./conffiles 2>/dev/null; }
B=pkgtest
U=clsync@$B.service
S=/srv/pkgtest/src DST=/srv/pkgtest/dst DST2=/srv/pkgtest/dst2
rc_links() { ls /etc/rc?.d/ 2>/dev/null | grep -x '[SK][0-9][0-9]clsync'; }
main_exe() { local p; p=$(prop "$1" MainPID); [ "$p" != 0 ] && readlink "/proc/$p/exe"; }
main_cmdline() { local p; p=$(prop "$1" MainPID); [ "$p" != 0 ] && tr '\0' ' ' <"/proc/$p/cmdline"; }
# the instance runs OUR binary (the one in the new .deb), not the C one
runs_ours() { local p; p=$(prop "$1" MainPID); [ "$p" != 0 ] && cmp -s "/proc/$p/exe" $D/new-clsync; }
export D
export -f prop is_ journal_after installed_version deb_files none_exist conffiles_of rc_links main_exe main_cmdline runs_ours

info "systemd $(systemctl --version | head -1); dpkg $(dpkg-query -W -f='${Version}' dpkg)"
info "old: $(dpkg-deb -f $D/old.deb Package Version | tr '\n' ' '); new: $(dpkg-deb -f $D/new.deb Package Version | tr '\n' ' ')"

write_block() {
    mkdir -p /etc/clsync $S $DST $DST2
    cat >/etc/clsync/clsync.conf <<EOF
# What a site running Debian's clsync 0.4.5 has: one block per clsync@BLOCK instance.
[$B]
mode = rsyncdirect
sync-handler = /usr/bin/rsync
watch-dir = $S
destination-dir = $DST
delay-sync = 1
delay-collect = 1
EOF
}

# install_old EDITED: Debian's clsync, a block, clsync@pkgtest enabled and mirroring.
install_old() {
    local edited=$1 out
    out=$(dpkg -i $D/old.deb 2>&1)
    check old-install "dpkg -i Debian's clsync $OLD ($edited)" [ $? = 0 ]
    [ -n "$out" ] && info "dpkg -i old: $(echo "$out" | tail -3 | tr '\n' ' ')"
    check old-install "Debian's clsync $OLD installed" bash -c "installed_version | grep -qx 'install ok installed $OLD'"
    write_block
    if [ "$edited" = edited ]; then
        # What a site does: its own arguments for the unit, a line in the init script.
        sed -i "s/^CLSYNC_ARGS_SYSTEMD=.*/CLSYNC_ARGS_SYSTEMD='-b0 -Ystderr -d1'/; s/^CLSYNC_ENABLE=.*/CLSYNC_ENABLE=true/" /etc/default/clsync
        echo "# edited by the site" >>/etc/init.d/clsync
    fi
    systemctl daemon-reload
    timeout 60 systemctl enable --now $U
    check old-unit "systemctl enable --now $U with Debian's package ($edited)" [ $? = 0 ]
    check old-unit "$U is enabled" is_ $U UnitFileState enabled
    local f="old-$edited-$(date +%s%N).txt"
    echo old >$S/$f
    wait_for 30 old-unit "Debian's clsync mirrors the block ($edited)" same_file $S/$f $DST/$f
}

upgrade() {
    local edited=$1 out rc cur
    cur=$(mark)
    out=$(dpkg -i $D/new.deb 2>&1); rc=$?
    info "dpkg -i new ($edited): exit $rc: $(echo "$out" | tr '\n' ' ' | tail -c 1500)"
    check upgrade "dpkg -i of our package over Debian's exits 0 ($edited)" [ $rc = 0 ]
    check upgrade "dpkg says it upgrades, not downgrades ($edited)" bash -c "! grep -qi downgrad <<<\"\$0\"" "$out"
    check upgrade "our version is installed ($edited)" bash -c "installed_version | grep -qx 'install ok installed $NEW'"
    check upgrade "our version sorts above Debian's $OLD" dpkg --compare-versions "$NEW" gt "$OLD"
    info "dpkg --verify clsync ($edited): $(dpkg --verify clsync 2>&1 | tr '\n' ' ')"
    check verify "dpkg has the sums of the installed files (md5sums) ($edited)" \
        [ -s /var/lib/dpkg/info/clsync.md5sums ]
    check verify "dpkg --verify finds every file but conffiles as packaged ($edited)" \
        bash -c '[ -z "$(dpkg --verify clsync 2>&1 | grep -v "^..5...... c /")" ]'
    check unit-file "a unit file for $U is still there after dpkg removed the old package's files ($edited)" \
        bash -c "f=\$(systemctl show -p FragmentPath --value $U); [ -n \"\$f\" ] && [ -f \"\$f\" ] && cmp \"\$f\" $D/new-unit"
    check unit-file "the path the enabled link names belongs to the package (dpkg -S) ($edited)" \
        bash -c "dpkg -S \$(readlink /etc/systemd/system/multi-user.target.wants/$U) | grep -q '^clsync:'"
    check unit-file "the instance stays enabled: its link resolves ($edited)" \
        bash -c "[ -e /etc/systemd/system/multi-user.target.wants/$U ] && systemctl is-enabled $U"
    check init-script "no runlevel links of the init script ($edited)" bash -c '! rc_links'
    check init-script "no unit generated from the init script ($edited)" is_ clsync.service LoadState not-found
    check init-script "nothing named /etc/init.d/clsync to run ($edited)" [ ! -e /etc/init.d/clsync ]
    if [ "$edited" = edited ]; then
        check init-script "the edited init script kept as /etc/init.d/clsync.dpkg-bak" \
            grep -q "edited by the site" /etc/init.d/clsync.dpkg-bak
        check defaults "the edited /etc/default/clsync is kept" grep -q -- "-d1" /etc/default/clsync
        check defaults "dpkg's output warns that CLSYNC_ENABLE=true no longer starts anything" \
            bash -c "grep -q 'warning: /etc/default/clsync sets CLSYNC_ENABLE=true' <<<\"\$0\"" "$out"
    else
        check init-script "no copy of the unmodified init script left" bash -c '! ls /etc/init.d/clsync*'
        check defaults "the unmodified /etc/default/clsync is removed" [ ! -e /etc/default/clsync ]
    fi
    wait_for 60 unit-runs "$U is active and runs our binary after the upgrade ($edited)" \
        bash -c "is_ $U ActiveState active && runs_ours $U"
    info "$U after the upgrade: $(main_cmdline $U)"
    local f="new-$edited-$(date +%s%N).txt"
    echo new >$S/$f
    wait_for 30 unit-runs "our clsync mirrors the same block ($edited)" same_file $S/$f $DST/$f
}

# remove_and_purge: nothing left but conffiles, then nothing at all.
remove_and_purge() {
    local edited=$1 out rc
    out=$(dpkg --remove clsync 2>&1); rc=$?
    check remove "dpkg --remove clsync exits 0 ($edited)" [ $rc = 0 ] 
    [ $rc = 0 ] || info "dpkg --remove: $out"
    check remove "the package is in state config-files ($edited)" \
        bash -c "installed_version | grep -q '^deinstall ok config-files'"
    check remove "no clsync process left ($edited)" bash -c '! pgrep -x clsync'
    check remove "no file of ours left but conffiles ($edited)" \
        bash -c "deb_files $D/new.deb | grep -vxF -f <(conffiles_of $D/new.deb) | none_exist"
    check remove "dpkg -L lists only conffiles ($edited)" \
        bash -c "left=\$(dpkg -L clsync | while read -r p; do [ -d \"\$p\" ] || echo \"\$p\"; done | grep -vxF -f <(conffiles_of $D/new.deb; echo /etc/default/clsync; echo /etc/init.d/clsync)); [ -z \"\$left\" ] || { echo \"\$left\"; false; }"
    # What the administrator wrote is theirs to remove; then purge.
    rm -f /etc/clsync/clsync.conf /etc/clsync/$B.toml
    out=$(dpkg --purge clsync 2>&1); rc=$?
    check purge "dpkg --purge clsync exits 0 ($edited)" [ $rc = 0 ]
    [ -n "$out" ] && info "dpkg --purge ($edited): $(echo "$out" | tr '\n' ' ')"
    check purge "dpkg no longer knows the package ($edited)" bash -c "! installed_version | grep -q 'ok'"
    check purge "no file of either package left ($edited)" \
        bash -c "(deb_files $D/new.deb; deb_files $D/old.deb) | none_exist"
    check purge "no backup of a conffile left ($edited)" bash -c '! ls -d /etc/init.d/clsync* /etc/default/clsync* /etc/clsync 2>/dev/null'
    check purge "no maintainer script or list of clsync left in dpkg's database ($edited)" \
        bash -c '! ls /var/lib/dpkg/info/clsync.* 2>/dev/null'
    snapshot >"$OUT/after-$edited"
    check purge "the file system is as before (/etc, /usr, /var/lib) ($edited)" \
        diff "$OUT/before" "$OUT/after-$edited"
}

OLD=@OLD_VERSION@
NEW=$(dpkg-deb -f $D/new.deb Version)
systemctl stop 'clsync@*.service' 2>/dev/null
dpkg --purge clsync >/dev/null 2>&1
rm -rf /etc/clsync /var/lib/clsync /srv/pkgtest
check setup "no clsync package in the container to start with" bash -c "! installed_version | grep -q 'ok'"
snapshot >"$OUT/before"

# --- 1-2. a site that never edited the package's files.
install_old unedited
upgrade unedited

# --- 3. a profile of the same name takes over; neither: exit 2, no restart.
cat >/etc/clsync/$B.toml <<EOF
watch-dir = "$S"
destination-dir = "$DST2"
delay-collect = "100ms"
delay-sync = "100ms"
EOF
cur=$(mark)
timeout 120 systemctl restart $U
check profile "systemctl restart $U exits 0" [ $? = 0 ]
echo profile >$S/profile.txt
wait_for 30 profile "the TOML profile $B.toml runs: it mirrors into its own destination" same_file $S/profile.txt $DST2/profile.txt
check profile "the block is not run beside it" bash -c "[ \"\$(pgrep -xc clsync)\" = 1 ]"
wait_for 10 profile "one log line names the profile and the shadowed block" \
    bash -c "journal_after '$cur' -u $U | grep -F '$B.toml' | grep -F '[$B]' | grep -F /etc/clsync/clsync.conf"
info "profile: $(journal_after "$cur" -u $U | grep -F shadowed)"
cur=$(mark)
timeout 60 systemctl start clsync@nosuch.service
wait_for 30 neither "clsync@nosuch (no profile, no block) fails" is_ clsync@nosuch.service ActiveState failed
check neither "with exit status 2" is_ clsync@nosuch.service ExecMainStatus 2
check neither "and is not restarted" is_ clsync@nosuch.service NRestarts 0
check neither "one line names what was looked for" \
    bash -c "journal_after '$cur' -u clsync@nosuch.service | grep -F nosuch | grep -F /etc/clsync/clsync.conf"
info "neither: $(journal_after "$cur" -u clsync@nosuch.service | grep -F nosuch | head -3 | tr '\n' ' ')"
systemctl reset-failed clsync@nosuch.service
# --- 4. remove, purge.
remove_and_purge unedited

# --- 5. a site that edited /etc/default/clsync and the init script.
install_old edited
upgrade edited
check defaults "the unit passes CLSYNC_ARGS_SYSTEMD of the kept /etc/default/clsync" \
    bash -c "main_cmdline $U | grep -q -- ' -d1'"
remove_and_purge edited

journalctl -b --no-pager -o short-monotonic -u 'clsync@*' >"$OUT/journal.txt" 2>&1
echo DONE >>"$F"
sync
systemctl --no-block poweroff
"####;

const REQUIRED: &[&str] = &[
    "setup",
    "old-install",
    "old-unit",
    "upgrade",
    "verify",
    "unit-file",
    "init-script",
    "defaults",
    "unit-runs",
    "profile",
    "neither",
    "remove",
    "purge",
];

const TEST_TARGET: &str = "[Unit]
Description=clsync package test: basic system plus the probe
Requires=basic.target
After=basic.target
Wants=pkgtest-probe.service
AllowIsolate=yes
";

const PROBE_UNIT: &str = "[Unit]
Description=clsync package test probe
After=basic.target
[Service]
Type=oneshot
TimeoutStartSec=15min
ExecStart=/bin/bash /usr/local/sbin/pkgtest-probe
";

/// One file of a .deb, extracted.
fn file_of_deb(deb: &Path, path: &str, into: &Path) -> Vec<u8> {
    let x = into.join("x");
    let _ = fs::remove_dir_all(&x);
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x));
    // Through either spelling of a merged /usr.
    for p in [path.to_string(), format!("usr/{path}")] {
        if let Ok(b) = fs::read(x.join(&p)) {
            return b;
        }
    }
    panic!("{} has no {path}", deb.display());
}

#[test]
fn package_replaces_debians_clsync() {
    if !enabled() {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the package test needs root (mounts, a container)"
    );
    let Some(nspawn) = find_program("systemd-nspawn") else {
        panic!(
            "systemd-nspawn not found: .ci/run must install `systemd-container` for \
             CLSYNC_TEST_SYSTEMD=1"
        );
    };
    // Debian's clsync's library. (Its other dependency, lsb-base, is provided by
    // sysvinit-utils, which is essential.)
    let glib = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "libglib2.0-0"])
        .output()
        .is_ok_and(|o| o.stdout.ends_with(b" installed"));
    assert!(
        glib,
        "libglib2.0-0 is not installed: Debian's clsync {OLD_VERSION} depends on it; .ci/run \
         must install it (the container is an overlay of this root)"
    );
    let started = Instant::now();
    let Some(b) = built() else { return };
    let dl = tempfile::Builder::new()
        .prefix("clsync-old-deb-")
        .tempdir()
        .expect("temp dir");
    let Some(old) = old_deb(dl.path()) else {
        return;
    };

    let tmp = tempfile::Builder::new()
        .prefix("clsync-pkg-")
        .tempdir()
        .expect("temp dir");
    let base = fs::canonicalize(tmp.path()).expect("canonicalize");
    let mut c = Container {
        mounts: Vec::new(),
        child: None,
        tmp: Some(tmp),
    };
    c.mount("tmpfs", "clsync-pkgtest", &base, "mode=0755,size=2g");
    let (upper, work, root, findings, scratch) = (
        base.join("upper"),
        base.join("work"),
        base.join("root"),
        base.join("findings"),
        base.join("scratch"),
    );
    for d in [&upper, &work, &root, &findings, &scratch] {
        mkdir(d);
    }
    c.mount(
        "overlay",
        "clsync-pkgtest-root",
        &root,
        &format!(
            "lowerdir=/,upperdir={},workdir={}",
            upper.display(),
            work.display()
        ),
    );
    let debs = root.join("var/tmp/clsync-debs");
    install(
        &debs.join("old.deb"),
        &fs::read(&old).expect("read old"),
        0o644,
    );
    install(
        &debs.join("new.deb"),
        &fs::read(&b.deb).expect("read new"),
        0o644,
    );
    let unit = file_of_deb(&b.deb, "lib/systemd/system/clsync@.service", &scratch);
    install(&debs.join("new-unit"), &unit, 0o644);
    let bin = file_of_deb(&b.deb, "usr/bin/clsync", &scratch);
    install(&debs.join("new-clsync"), &bin, 0o755);

    let sys = root.join("etc/systemd/system");
    install(&sys.join("pkgtest.target"), TEST_TARGET.as_bytes(), 0o644);
    install(
        &sys.join("pkgtest-probe.service"),
        PROBE_UNIT.as_bytes(),
        0o644,
    );
    for u in [
        "systemd-networkd-wait-online.service",
        "NetworkManager-wait-online.service",
        "ifupdown-wait-online.service",
    ] {
        symlink_force("/dev/null", &sys.join(u));
    }
    install(
        &root.join("usr/local/sbin/pkgtest-probe"),
        PROBE.replace("@OLD_VERSION@", OLD_VERSION).as_bytes(),
        0o755,
    );
    // A machine an administrator upgrades has no policy-rc.d that forbids starting
    // services (a build machine or a container image may): maintainer scripts start
    // and restart units there.
    let _ = fs::remove_file(root.join("usr/sbin/policy-rc.d"));
    fs::set_permissions(&findings, fs::Permissions::from_mode(0o777)).expect("chmod findings");

    let console = base.join("console.log");
    c.boot(
        &nspawn,
        &root,
        &findings,
        &format!("clsync-pkgtest-{}", std::process::id()),
        "pkgtest.target",
        &console,
    );
    let show = |what: &str| -> String {
        let mut s = format!("--- findings ({what}):\n");
        s.push_str(&read_lossy(&findings.join("findings")));
        if findings.join("journal.txt").exists() {
            s.push_str(&format!(
                "--- journal.txt (tail):\n{}",
                tail_lines(&read_lossy(&findings.join("journal.txt")), 60)
            ));
        }
        s.push_str(&format!(
            "--- probe output (tail):\n{}--- probe trace (tail):\n{}--- systemd-nspawn output (tail):\n{}",
            tail_lines(&read_lossy(&findings.join("probe.out")), 40),
            tail_lines(&read_lossy(&findings.join("probe.trace")), 60),
            tail_lines(&read_lossy(&console), 60)
        ));
        s
    };
    let text = judge(
        &mut c,
        &findings,
        NSPAWN_TIMEOUT,
        REQUIRED,
        "package",
        &show,
    );
    eprintln!(
        "package_replaces_debians_clsync: {} checks passed in {:.1}s (the .deb built in {:.1}s)\n{}",
        text.lines().filter(|l| l.starts_with("PASS")).count(),
        started.elapsed().as_secs_f64(),
        b.secs,
        text.lines()
            .filter(|l| l.starts_with("INFO"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn package_passes_lintian() {
    if !enabled() {
        return;
    }
    let Some(lintian) = find_program("lintian") else {
        panic!("lintian not found: .ci/run must install the Debian package `lintian`");
    };
    let Some(b) = built() else { return };
    let out = Command::new(&lintian)
        .args(["--tag-display-limit", "0", "--display-info"])
        .arg(&b.deb)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", lintian.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    eprintln!("lintian {}:\n{text}", b.deb.display());
    assert!(
        errors.is_empty() && out.status.success(),
        "lintian: {} ({} errors)\n{text}\nstderr:\n{}",
        describe_status(out.status),
        errors.len(),
        String::from_utf8_lossy(&out.stderr)
    );
}
