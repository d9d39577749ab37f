/*!
The original's options, one by one: which keys map to a profile setting
([`MAPPED_KEYS`], older names included), which the original knows but have no setting
here ([`ignored_reason`]), and [`apply`], which converts a value the way the original
parses it (`strtol` numbers, flags as numbers, seconds, `ignore-exitcode` lists, the `--`
argument string, `%…%` references kept for the profile's substitution). The conversion
table of an import, between the reader and the writer.
*/

use crate::profile::edit_distance;
use crate::profile::{self, ProfileValues};
use crate::sync::handler::MODES;

/// What became of one `key = value`.
pub(super) enum Applied {
    Set,
    Ignored(&'static str),
}

/// Keys the original knows that have no setting here, with the reason.
pub(super) fn ignored_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "---" => "sync-handler arguments for the initial sync: there is one argument list",
        "background" => "does not daemonize; run it under a service manager",
        "config-file" | "config-block" => "selects a configuration; meaningless inside one",
        "custom-signals" => "switching blocks by signal is not supported",
        "socket" | "socket-auth" | "socket-mod" | "socket-own" => {
            "the control socket is not supported"
        }
        "exit-on-sync-skipping" | "exit-on-sync-skip" => {
            "inotify queue overflows are handled by a full resync"
        }
        "cluster-iface"
        | "cluster-ip"
        | "cluster-port"
        | "cluster-timeout"
        | "cluster-node-name"
        | "cluster-hash-dl-min"
        | "cluster-hash-dl-max"
        | "cluster-scan-dl-max" => "clustering was never implemented in the original",
        "fts-experimental-optimization" => "tuning of the original's internals",
        "auto-add-rules-w" => "walk rules are not added automatically; write them in rules",
        "verbose" => "did nothing in the original either",
        "quiet" => "not supported; use output and debug",
        "help" | "version" => "not a setting",
        _ => return None,
    })
}

/// The original's long option names (current and older ones) that are settings here.
pub(super) const MAPPED_KEYS: &[&str] = &[
    "watch-dir",
    "sync-handler",
    "--",
    "rules-file",
    "destination-dir",
    "mode",
    "status-file",
    "pid-file",
    "uid",
    "gid",
    "sync-handler-uid",
    "sync-handler-gid",
    "dump-dir",
    "config-block-inherits",
    "threading",
    "retries",
    "ignore-failures",
    "output",
    "one-file-system",
    "exclude-mount-points",
    "monitor",
    "max-iterations",
    "standby-file",
    "modification-signature",
    "timeout-sync",
    "delay-sync",
    "delay-collect",
    "delay-collect-bigfile",
    "threshold-bigfile",
    "lists-dir",
    "have-recursive-sync",
    "synclist-simplify",
    "rsync-inclimit",
    "rsync-prefer-include",
    "ignore-exitcode",
    "dont-unlink-lists",
    "full-initialsync",
    "only-initialsync",
    "skip-initialsync",
    "exit-on-no-events",
    "exit-hook",
    "pre-exit-hook",
    "sync-on-quit",
    "debug",
    "label",
    "preserve-capabilities",
    "inherit-capabilities",
    // Older names.
    "rules-path",
    "dir-destination",
    "syslog",
];

/// Whether `name` is an option name of the original (for `%name%` references).
fn is_option_name(name: &str) -> bool {
    MAPPED_KEYS.contains(&name)
        || ignored_reason(name).is_some()
        || super::sandbox_options::find(name).is_some()
}

/// The original's `--output` values.
const OUTPUTS: &[&str] = &["stderr", "stdout", "syslog"];

// The `as u32`/`as u8` casts cannot truncate: number() caps each value at that MAX.
#[allow(clippy::cast_possible_truncation)]
pub(super) fn apply(v: &mut ProfileValues, key: &str, value: &str) -> Result<Applied, String> {
    let num = |max: u64| number(key, value, max);
    let secs = || {
        let n = number(key, value, u64::MAX)?;
        crate::config::parse_duration(&n.to_string()).map_err(|e| format!("{key} = {value:?}: {e}"))
    };
    let flag = || number(key, value, u64::MAX).map(|n| n != 0);
    let text = || Some(macros(value));
    match key {
        "watch-dir" => v.watch_dir = text(),
        "destination-dir" | "dir-destination" => v.destination_dir = text(),
        "sync-handler" => v.sync_handler = text(),
        "--" => {
            let args = split_args(value).map_err(|e| format!("-- = {value:?}: {e}"))?;
            v.sync_handler_args = Some(args.iter().map(|a| macros(a)).collect());
        }
        "rules-file" | "rules-path" => v.rules_file = text(),
        "mode" => {
            if !MODES.contains(&value) {
                return Err(format!(
                    "mode = {value:?}: unknown mode (expected one of {})",
                    MODES.join(", ")
                ));
            }
            v.mode = Some(value.to_string());
        }
        "status-file" => v.status_file = text(),
        "pid-file" => v.pid_file = text(),
        "uid" => v.uid = text(),
        "gid" => v.gid = text(),
        "sync-handler-uid" => v.sync_handler_uid = text(),
        "sync-handler-gid" => v.sync_handler_gid = text(),
        "dump-dir" => v.dump_dir = text(),
        "config-block-inherits" => {
            v.inherits = (!value.is_empty()).then(|| value.to_string());
        }
        "threading" => {
            let mode = if value.is_empty() { "off" } else { value };
            if !profile::THREADING_MODES.contains(&mode) {
                return Err(format!(
                    "threading = {value:?}: unknown threading mode (expected off, safe or full)"
                ));
            }
            v.threading = Some(mode.to_string());
        }
        "output" => {
            let out = if value.is_empty() { "stderr" } else { value };
            if !OUTPUTS.contains(&out) {
                return Err(format!(
                    "output = {value:?}: unknown output (expected stderr, stdout or syslog)"
                ));
            }
            v.output = Some(out.to_string());
        }
        "syslog" => {
            if flag()? {
                v.output = Some("syslog".to_string());
            }
        }
        "retries" => v.retries = Some(num(u32::MAX.into())? as u32),
        "max-iterations" => v.max_iterations = Some(num(u32::MAX.into())? as u32),
        "rsync-inclimit" => v.rsync_inclimit = Some(num(u64::MAX)?),
        "threshold-bigfile" => v.threshold_bigfile = Some(num(u64::MAX)?),
        "debug" => v.debug = Some(num(u8::MAX.into())? as u8),
        "timeout-sync" => v.timeout_sync = Some(secs()?),
        "delay-sync" => v.delay_sync = Some(secs()?),
        "delay-collect" => v.delay_collect = Some(secs()?),
        "delay-collect-bigfile" => v.delay_collect_bigfile = Some(secs()?),
        "ignore-failures" => v.ignore_failures = Some(flag()?),
        "one-file-system" => v.one_file_system = Some(flag()?),
        "exclude-mount-points" => v.exclude_mount_points = Some(flag()?),
        "have-recursive-sync" => v.have_recursive_sync = Some(flag()?),
        "synclist-simplify" => v.synclist_simplify = Some(flag()?),
        "rsync-prefer-include" => v.rsync_prefer_include = Some(flag()?),
        "dont-unlink-lists" => v.dont_unlink_lists = Some(flag()?),
        "full-initialsync" => v.full_initialsync = Some(flag()?),
        "only-initialsync" => v.only_initialsync = Some(flag()?),
        "skip-initialsync" => v.skip_initialsync = Some(flag()?),
        "exit-on-no-events" => v.exit_on_no_events = Some(flag()?),
        "sync-on-quit" => v.sync_on_quit = Some(flag()?),
        "standby-file" => v.standby_file = text(),
        "modification-signature" => v.modification_signature = text(),
        "lists-dir" => v.lists_dir = text(),
        "exit-hook" => v.exit_hook = text(),
        "pre-exit-hook" => v.pre_exit_hook = text(),
        "label" => v.label = text(),
        "monitor" => {
            value.parse::<crate::watch::Monitor>()?;
            v.monitor = text();
        }
        "ignore-exitcode" => v.ignore_exitcode = Some(exit_codes(value)?),
        "preserve-capabilities" => {
            crate::sandbox::parse_preserved(value)
                .map_err(|e| format!("preserve-capabilities = {value:?}: {e}"))?;
            let names = value.split(',').map(str::trim).filter(|n| !n.is_empty());
            v.preserve_capabilities = Some(names.map(String::from).collect());
        }
        "inherit-capabilities" => {
            value
                .parse::<crate::sandbox::Inherit>()
                .map_err(|e| format!("inherit-capabilities = {e}"))?;
            v.inherit_capabilities = text();
        }
        _ if super::sandbox_options::find(key).is_some() => return sandbox_option(v, key, value),
        _ => {
            return match ignored_reason(key) {
                Some(reason) => Ok(Applied::Ignored(reason)),
                None => Err(unknown_key(key, value)),
            }
        }
    }
    Ok(Applied::Set)
}

/// One of the original's sandbox options ([`super::sandbox_options`]) as profile keys:
/// `sandbox`, `sandbox-network`, `sandbox-read`, `sandbox-exec`, `sync-handler-uid/gid`.
fn sandbox_option(v: &mut ProfileValues, key: &str, value: &str) -> Result<Applied, String> {
    use super::sandbox_options::{apply, Asked, Effect};
    let mut asked = Asked::default();
    match apply(&mut asked, key, value).map_err(|e| format!("{key} = {value:?}: {e}"))? {
        Effect::NoEffect(reason) => return Ok(Applied::Ignored(reason)),
        Effect::Set => {}
    }
    let Asked {
        sandbox,
        network,
        read,
        exec,
        privileged_uid,
        privileged_gid,
        chroot,
        pivot_root,
    } = asked;
    if chroot.is_some() || pivot_root {
        return Err(format!(
            "{key} = {value:?}: not read from a -H file (a profile has no such key): give --chroot DIR{} on the command line",
            if pivot_root { " and --pivot-root" } else { "" }
        ));
    }
    if sandbox && v.sandbox != Some(crate::sandbox::Mode::Required) {
        v.sandbox = Some(crate::sandbox::Mode::On);
    }
    let paths = |l: Vec<String>| l.iter().map(|p| macros(p)).collect();
    if let Some(n) = network {
        v.sandbox_network = Some(n.as_str().to_string());
    }
    if let Some(l) = read {
        v.sandbox_read = Some(paths(l));
    }
    if let Some(l) = exec {
        v.sandbox_exec = Some(paths(l));
    }
    // Only the default: `sync-handler-uid`/`-gid` win, before or after it in the block.
    if let Some(u) = privileged_uid {
        v.sync_handler_uid.get_or_insert_with(|| macros(&u));
    }
    if let Some(g) = privileged_gid {
        v.sync_handler_gid.get_or_insert_with(|| macros(&g));
    }
    Ok(Applied::Set)
}

fn unknown_key(key: &str, value: &str) -> String {
    let dashed = key.replace('_', "-").to_ascii_lowercase();
    let suggestion = MAPPED_KEYS
        .iter()
        .copied()
        .chain(["background", "config-block", "custom-signals"])
        .chain(super::sandbox_options::OPTIONS.iter().map(|(k, _, _)| *k))
        .map(|k| (edit_distance(&dashed, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default();
    format!("unknown key {key:?} (= {value:?}){suggestion}")
}

/// A number as the original's `xstrtol_trim` reads it (`strtol` base 0: decimal, `0x`
/// hex, leading-`0` octal; empty is 0), not negative and at most `max`.
pub(super) fn number(key: &str, value: &str, max: u64) -> Result<u64, String> {
    let bad = |why: &str| format!("{key} = {value:?}: {why}");
    let s = value.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(bad("must not be negative"));
    }
    if s.is_empty() {
        return Ok(0);
    }
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or(s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    let n = u64::from_str_radix(digits, radix).map_err(|_| bad("not a number"))?;
    if n > max {
        return Err(bad(&format!("too big (at most {max})")));
    }
    Ok(n)
}

/// `ignore-exitcode`: comma-separated codes; `0` drops the codes before it.
fn exit_codes(value: &str) -> Result<Vec<i32>, String> {
    let mut codes: Vec<i32> = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let code: u8 = if part.is_empty() {
            0
        } else if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().map_err(|_| {
                format!("ignore-exitcode = {value:?}: exit code {part} is not in 0..=255")
            })?
        } else {
            return Err(format!(
                "ignore-exitcode = {value:?}: {part:?} is not an exit code"
            ));
        };
        if code == 0 {
            codes.clear();
        } else if !codes.contains(&code.into()) {
            codes.push(code.into());
        }
    }
    Ok(codes)
}

/// Splits the `--` value like the original's `str_splitargs`: on spaces and tabs, with
/// `"…"` (a `\"` inside does not end it; the backslash stays) and `'…'` quoting; the quote
/// characters are removed. A word that had quotes is kept even when empty.
fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if !cur.is_empty() || quoted {
                    args.push(std::mem::take(&mut cur));
                }
                quoted = false;
            }
            '"' => {
                quoted = true;
                let mut backslashes = 0;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quote <\">".to_string()),
                        Some('"') if backslashes % 2 == 0 => break,
                        Some(c) => {
                            backslashes = if c == '\\' { backslashes + 1 } else { 0 };
                            cur.push(c);
                        }
                    }
                }
            }
            '\'' => {
                quoted = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quote <'>".to_string()),
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                    }
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() || quoted {
        args.push(cur);
    }
    Ok(args)
}

/// Keeps `%…%` references for the profile's substitution, with option names written in
/// kebab-case (`%watch_dir%` → `%watch-dir%`); `%%` stays; what the original keeps
/// literally (a `%` without a closing one, `%…%` around something that is not a name) gets
/// its `%` doubled.
fn macros(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('%') else {
            out.push_str("%%");
            rest = after;
            continue;
        };
        let name = &after[..j];
        let dashed = name.replace('_', "-");
        let name_like = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if is_option_name(&dashed) {
            out.push('%');
            out.push_str(&dashed);
            out.push('%');
        } else if name_like {
            out.push('%');
            out.push_str(name);
            out.push('%');
        } else {
            // Not a name (`100% and 50%`): the original keeps it literally.
            out.push_str("%%");
            out.push_str(name);
            out.push_str("%%");
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}
