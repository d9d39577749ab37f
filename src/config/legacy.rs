/*!
Import of the original clsync's configuration file (`~/.clsync.conf`,
`/etc/clsync/clsync.conf`) into our TOML profiles.

Why it exists: people moving from the C clsync have working configuration files, and
retyping them as profiles invites mistakes. This module reads such a file, block by block,
and turns each block into [`ProfileValues`]; [`to_profiles`] writes them out as profile
files, [`load_block`] gives one block (with its `config-block-inherits` chain applied) for
running directly from an old file.

Why it is shaped this way (the original's behaviour is taken from its source, `main.c`
`gkf_parse()`/`parse_parameter()` and `stringex.c` `str_splitargs()`):

- The format is glib's key file, which the original reads with `g_key_file_get_value`
  (raw values, no escape processing): `[block]` lines, `key = value` lines (split at the
  first `=`, both sides trimmed), whole-line `#` comments and blank lines. Anything else
  is an error, as it is for glib. A repeated block continues the earlier one and a
  repeated key replaces the earlier value, as in glib. Trailing white space of a value
  (glib keeps it) is dropped, and so is a `\r` of CRLF files: in a path it is never meant.
- Keys are the original's long option names. The original silently skips keys it does not
  know (it only asks the file for the names it knows); we report them as errors with the
  line, because a misspelt key silently ignored is the bug such an import should catch.
  Keys the original knows but this rewrite has no setting for (`background`,
  `custom-signals`, the sandboxing options…) are not errors: they are listed in
  [`LegacyBlock::ignored`] with a reason, and [`to_profiles`] writes them as comments.
  A few names of older versions of the original are accepted as what they became
  (`rules-path` → `rules-file`, `dir-destination` → `destination-dir`, `syslog = 1` →
  `output = syslog`), so that the original's own example (tests/data/legacy) imports.
- Values are converted the way the original parses them, so that a file means the same:
  numbers with `strtol(…, 0)` (so `0x10` and `010` are numbers too; an empty value is 0),
  flags as numbers (`0` off, anything else on; glib has no bare keys), durations in
  seconds, `ignore-exitcode` as a comma list where `0` drops the codes before it,
  `mode`/`output`/`threading` checked against the original's lists (an empty `threading`
  or `output` is the original's default: `off`, `stderr`). Negative numbers, which the
  original wraps into huge unsigned values, are errors. An empty string value is kept as
  `""`: in the original it disables the option, and keeping it lets a block override its
  parent's value.
- `--` holds the sync-handler arguments as one string, split like the original splits it:
  on spaces and tabs, with `"…"` and `'…'` quoting (the quote characters are removed, a
  backslash before a `"` keeps the quote inside and stays itself). `---` (arguments for the
  initial sync) has no equivalent and is ignored.
- `%option%` substitutions are not expanded here: the `%…%` text is kept so that the
  profile's own substitution does it (with the effective value after inheritance, where
  the original used whatever value was set at that point of its parsing, which for
  `%label%` is often the default "nolabel"). `%watch_dir%` is written `%watch-dir%`, the
  name our substitution knows. A lone `%` (the original keeps it) becomes `%%`. The
  original's run-time macros (`%INCLUDE-LIST%`, `%RSYNC-ARGS%`…) are kept as they are, as
  the profile's substitution keeps them for the sync handler; the few it does not know
  (`%PID%`, `%EXCLUDE-LIST%`…) are kept too and noted by [`to_profiles`], because
  resolving such a profile fails until they are rewritten.
- `config-block-inherits` becomes `inherits`. [`load_block`] applies the chain itself
  (child's values win) and returns values without `inherits`; a missing parent or a cycle
  is an error (the original silently stops at a missing block, and loops on a cycle).
- Errors are one line, `FILE:LINE: message`, quoting the offending value.
*/

use crate::profile::edit_distance;
use crate::profile::{self, ProfileValues};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The file name that means "no configuration file" (`--config-file=/NULL/`).
pub const NULL_CONFIG: &str = "/NULL/";

/// One `[block]` of an original configuration file, converted.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyBlock {
    /// The block name, as written between the brackets.
    pub name: String,
    /// The file the block was read from (for messages and profile headers).
    pub file: PathBuf,
    /// The converted values; `inherits` holds `config-block-inherits` as written.
    pub values: ProfileValues,
    /// Keys of the original that have no setting here: (key, why it is not imported).
    pub ignored: Vec<(String, String)>,
}

/// Errors of reading an original configuration file. Each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", .file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: no block [{block}] (blocks: {})", .file.display(), block_list(.available))]
    NoSuchBlock {
        file: PathBuf,
        block: String,
        available: Vec<String>,
    },
}

fn block_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// A block as read, with where things are (for errors of [`load_block`]).
struct RawBlock {
    block: LegacyBlock,
    /// The line of `config-block-inherits`, if set.
    inherits_line: Option<usize>,
}

/// Parses the text of an original configuration file; `file` is for messages.
pub fn parse(file: &Path, text: &str) -> Result<Vec<LegacyBlock>, LegacyError> {
    Ok(parse_raw(file, text)?
        .into_iter()
        .map(|r| r.block)
        .collect())
}

fn parse_raw(file: &Path, text: &str) -> Result<Vec<RawBlock>, LegacyError> {
    let err = |line: usize, message: String| LegacyError::Syntax {
        file: file.to_path_buf(),
        line,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut blocks: Vec<RawBlock> = Vec::new();
    let mut current: Option<usize> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err(line_no, format!("invalid block line {line:?}")));
            };
            if name.is_empty() || name.contains(['[', ']']) || name.chars().any(char::is_control) {
                return Err(err(line_no, format!("invalid block name {name:?}")));
            }
            current = Some(match blocks.iter().position(|b| b.block.name == name) {
                Some(pos) => pos,
                None => {
                    blocks.push(RawBlock {
                        block: LegacyBlock {
                            name: name.to_string(),
                            file: file.to_path_buf(),
                            values: ProfileValues::default(),
                            ignored: Vec::new(),
                        },
                        inherits_line: None,
                    });
                    blocks.len() - 1
                }
            });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(
                line_no,
                format!("{line:?} is not a `key = value` line, a [block] or a # comment"),
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(err(line_no, format!("no key before '=' in {line:?}")));
        }
        let Some(cur) = current else {
            return Err(err(
                line_no,
                format!("{key} = {value:?} is before the first [block]"),
            ));
        };
        let raw_block = &mut blocks[cur];
        let block = &mut raw_block.block;
        match apply(&mut block.values, key, value) {
            Ok(Applied::Set) => {
                block.ignored.retain(|(k, _)| k != key);
                if key == "config-block-inherits" {
                    raw_block.inherits_line = Some(line_no);
                }
            }
            Ok(Applied::Ignored(reason)) => {
                block.ignored.retain(|(k, _)| k != key);
                block.ignored.push((key.to_string(), reason.to_string()));
            }
            Err(message) => return Err(err(line_no, message)),
        }
    }
    Ok(blocks)
}

/// Reads `file` and returns the values of `block` with its `config-block-inherits` chain
/// applied (the child's values win); `inherits` is cleared since the chain is applied.
/// The file name `/NULL/` means no file: default (empty) values.
pub fn load_block(file: &Path, block: &str) -> Result<ProfileValues, LegacyError> {
    if file == Path::new(NULL_CONFIG) {
        return Ok(ProfileValues::default());
    }
    let text = std::fs::read_to_string(file).map_err(|source| LegacyError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let blocks = parse_raw(file, &text)?;
    resolve_block(file, &blocks, block)
}

fn resolve_block(
    file: &Path,
    blocks: &[RawBlock],
    name: &str,
) -> Result<ProfileValues, LegacyError> {
    let find = |n: &str| blocks.iter().find(|b| b.block.name == n);
    let start = find(name).ok_or_else(|| LegacyError::NoSuchBlock {
        file: file.to_path_buf(),
        block: name.to_string(),
        available: blocks.iter().map(|b| b.block.name.clone()).collect(),
    })?;
    let mut values = start.block.values.clone();
    let mut seen = vec![start.block.name.as_str()];
    let mut cur = start;
    while let Some(parent) = cur.block.values.inherits.as_deref() {
        let line = cur.inherits_line.unwrap_or(0);
        let err = |message: String| LegacyError::Syntax {
            file: file.to_path_buf(),
            line,
            message,
        };
        if seen.contains(&parent) {
            let chain: Vec<String> = seen
                .iter()
                .chain([&parent])
                .map(|b| format!("[{b}]"))
                .collect();
            return Err(err(format!(
                "config-block-inherits = {parent}: inheritance cycle {}",
                chain.join(" -> ")
            )));
        }
        let p = find(parent).ok_or_else(|| {
            let names: Vec<String> = blocks.iter().map(|b| b.block.name.clone()).collect();
            err(format!(
                "config-block-inherits = {parent}: no such block (blocks: {})",
                block_list(&names)
            ))
        })?;
        values = values.merge(p.block.values.clone());
        seen.push(p.block.name.as_str());
        cur = p;
    }
    values.inherits = None;
    Ok(values)
}

/// One profile per block: (file name like `default.toml`, TOML text). The text starts
/// with comments naming the source and listing the keys that were not imported, and
/// parses back (with [`profile::parse_values`]) to the block's values, except that
/// block names unfit for profile names are made fit (in `inherits` too).
pub fn to_profiles(blocks: &[LegacyBlock]) -> Vec<(String, String)> {
    blocks
        .iter()
        .map(|b| {
            let name = profile_name(&b.name);
            let mut values = b.values.clone();
            if let Some(parent) = values.inherits.as_deref() {
                values.inherits = Some(profile_name(parent));
            }
            let mut text = format!("# Imported from {} block [{}].\n", b.file.display(), b.name);
            if !b.ignored.is_empty() {
                text.push_str("# Not imported (no equivalent in this clsync):\n");
                for (key, reason) in &b.ignored {
                    text.push_str(&format!("#   {key}: {reason}\n"));
                }
            }
            let macros = runtime_macros(&values);
            if !macros.is_empty() {
                text.push_str(&format!(
                    "# Note: placeholders of the original that profiles do not know: {}\n",
                    macros.into_iter().collect::<Vec<_>>().join(" ")
                ));
            }
            text.push('\n');
            text.push_str(&values.to_toml());
            (format!("{name}.toml"), text)
        })
        .collect()
}

/// A profile name for a block name: characters other than ASCII letters, digits, `.`,
/// `_` and `-` become `_`, and a leading `-` or `.` becomes `_` (profile names must not
/// start with `-`, and dot-files are skipped).
fn profile_name(block: &str) -> String {
    let mut name: String = block
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(['-', '.']) {
        name.replace_range(..1, "_");
    }
    name
}

/// The `%NAME%` references in the string values that the profile's substitution does
/// not know (such as the original's `%PID%`).
fn runtime_macros(values: &ProfileValues) -> BTreeSet<String> {
    let table: toml::Table = toml::from_str(&values.to_toml()).unwrap_or_default();
    let mut out = BTreeSet::new();
    let mut strings: Vec<&str> = Vec::new();
    for v in table.values() {
        match v {
            toml::Value::String(s) => strings.push(s),
            toml::Value::Array(a) => strings.extend(a.iter().filter_map(|e| e.as_str())),
            _ => {}
        }
    }
    for s in strings {
        let mut rest = s;
        while let Some(i) = rest.find('%') {
            let after = &rest[i + 1..];
            let Some(j) = after.find('%') else { break };
            let name = &after[..j];
            if !name.is_empty()
                && name != "label"
                && !profile::keys().contains(&name)
                && !profile::RUNTIME_PLACEHOLDERS.contains(&name)
            {
                out.insert(format!("%{name}%"));
            }
            rest = &after[j + 1..];
        }
    }
    out
}

/// What became of one `key = value`.
enum Applied {
    Set,
    Ignored(&'static str),
}

const NO_SANDBOX: &str = "privilege separation and sandboxing are not supported";

/// Keys the original knows that have no setting here, with the reason.
fn ignored_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "---" => "sync-handler arguments for the initial sync: there is one argument list",
        "background" => "does not daemonize; run it under a service manager",
        "config-file" | "config-block" => "selects a configuration; meaningless inside one",
        "custom-signals" => "switching blocks by signal is not supported",
        "socket" | "socket-auth" | "socket-mod" | "socket-own" => {
            "the control socket is not supported"
        }
        "privileged-uid"
        | "privileged-gid"
        | "chroot"
        | "pivot-root"
        | "detach-network"
        | "detach-ipc"
        | "detach-miscellanea"
        | "secure-splitting"
        | "splitting"
        | "check-execvp-arguments"
        | "add-permitted-hook-files"
        | "seccomp-filter"
        | "forget-privthread-info"
        | "permit-mprotect"
        | "shm-mprotect"
        | "mountpoints"
        | "preserve-capabilities"
        | "inherit-capabilities"
        | "forbid-devices"
        | "cgroup-group-name" => NO_SANDBOX,
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
        "cancel-syscalls" | "fts-experimental-optimization" => "tuning of the original's internals",
        "auto-add-rules-w" => "walk rules are not added automatically; write them in rules",
        "verbose" => "did nothing in the original either",
        "quiet" => "not supported; use output and debug",
        "help" | "version" => "not a setting",
        _ => return None,
    })
}

/// The original's long option names (current and older ones) that are settings here.
const MAPPED_KEYS: &[&str] = &[
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
    // Older names.
    "rules-path",
    "dir-destination",
    "syslog",
];

/// Whether `name` is an option name of the original (for `%name%` references).
fn is_option_name(name: &str) -> bool {
    MAPPED_KEYS.contains(&name) || ignored_reason(name).is_some()
}

use crate::sync::handler::MODES;

/// The original's `--output` values.
const OUTPUTS: &[&str] = &["stderr", "stdout", "syslog"];

fn apply(v: &mut ProfileValues, key: &str, value: &str) -> Result<Applied, String> {
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
        _ => {
            return match ignored_reason(key) {
                Some(reason) => Ok(Applied::Ignored(reason)),
                None => Err(unknown_key(key, value)),
            }
        }
    }
    Ok(Applied::Set)
}

fn unknown_key(key: &str, value: &str) -> String {
    let dashed = key.replace('_', "-").to_ascii_lowercase();
    let suggestion = MAPPED_KEYS
        .iter()
        .copied()
        .chain(["background", "config-block", "custom-signals"])
        .map(|k| (edit_distance(&dashed, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default();
    format!("unknown key {key:?} (= {value:?}){suggestion}")
}

/// A number as the original's `xstrtol_trim` reads it (`strtol` base 0: decimal, `0x`
/// hex, leading-`0` octal; empty is 0), not negative and at most `max`.
fn number(key: &str, value: &str, max: u64) -> Result<u64, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MAN_EXAMPLE: &str = "\
[default]
background = 1
mode = rsyncshell
debug = 0
output = syslog
label = default
pid-file = /var/run/clsync-%label%.pid

[debug]
config-block-inherits = default
debug = 5
background = 0
output = stderr

[test]
mode=rsyncdirect
debug=3
";

    fn p(text: &str) -> Result<Vec<LegacyBlock>, LegacyError> {
        parse(Path::new("clsync.conf"), text)
    }

    fn one(text: &str) -> ProfileValues {
        let mut b = p(&format!("[b]\n{text}\n")).unwrap();
        assert_eq!(b.len(), 1);
        b.remove(0).values
    }

    fn err(text: &str) -> String {
        p(text).unwrap_err().to_string()
    }

    fn raw_blocks(text: &str) -> Vec<RawBlock> {
        parse_raw(Path::new("clsync.conf"), text).unwrap()
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/legacy")
            .join(name)
    }

    #[test]
    fn man_page_example() {
        let b = p(MAN_EXAMPLE).unwrap();
        let names: Vec<&str> = b.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["default", "debug", "test"]);
        let d = &b[0].values;
        assert_eq!(d.mode.as_deref(), Some("rsyncshell"));
        assert_eq!(d.debug, Some(0));
        assert_eq!(d.output.as_deref(), Some("syslog"));
        assert_eq!(d.label.as_deref(), Some("default"));
        assert_eq!(d.pid_file.as_deref(), Some("/var/run/clsync-%label%.pid"));
        assert_eq!(b[0].ignored.len(), 1);
        assert_eq!(b[0].ignored[0].0, "background");
        assert_eq!(b[1].values.inherits.as_deref(), Some("default"));
        assert_eq!(b[1].values.debug, Some(5));
        assert_eq!(b[2].values.mode.as_deref(), Some("rsyncdirect"));
        assert_eq!(b[2].values.debug, Some(3));
        assert!(b[2].ignored.is_empty());
    }

    #[test]
    fn block_inherits_another() {
        let blocks = raw_blocks(MAN_EXAMPLE);
        let f = Path::new("clsync.conf");
        let v = resolve_block(f, &blocks, "debug").unwrap();
        assert_eq!(v.debug, Some(5));
        assert_eq!(v.output.as_deref(), Some("stderr"));
        assert_eq!(v.mode.as_deref(), Some("rsyncshell"));
        assert_eq!(v.label.as_deref(), Some("default"));
        assert_eq!(v.pid_file.as_deref(), Some("/var/run/clsync-%label%.pid"));
        assert_eq!(v.inherits, None);
        // A three-level chain, child wins field by field.
        let text = format!("{MAN_EXAMPLE}\n[deep]\nconfig-block-inherits = debug\ndebug = 1\n");
        let v = resolve_block(f, &raw_blocks(&text), "deep").unwrap();
        assert_eq!(v.debug, Some(1));
        assert_eq!(v.output.as_deref(), Some("stderr"));
        assert_eq!(v.mode.as_deref(), Some("rsyncshell"));
    }

    #[test]
    fn inheritance_errors() {
        let f = Path::new("clsync.conf");
        let blocks = raw_blocks("[a]\nconfig-block-inherits = b\n[b]\nconfig-block-inherits = a\n");
        let e = resolve_block(f, &blocks, "a").unwrap_err().to_string();
        assert_eq!(
            e,
            "clsync.conf:4: config-block-inherits = a: inheritance cycle [a] -> [b] -> [a]"
        );
        let blocks = raw_blocks("[a]\n\nconfig-block-inherits = nope\n");
        let e = resolve_block(f, &blocks, "a").unwrap_err().to_string();
        assert_eq!(
            e,
            "clsync.conf:3: config-block-inherits = nope: no such block (blocks: a)"
        );
        let e = resolve_block(f, &raw_blocks(MAN_EXAMPLE), "prod")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "clsync.conf: no block [prod] (blocks: default, debug, test)"
        );
        // An empty parent is no parent.
        let blocks = raw_blocks("[a]\nconfig-block-inherits =\ndebug = 2\n");
        assert_eq!(resolve_block(f, &blocks, "a").unwrap().debug, Some(2));
    }

    #[test]
    fn load_block_reads_files_and_null() {
        let v = load_block(Path::new("/NULL/"), "anything").unwrap();
        assert_eq!(v, ProfileValues::default());
        let v = load_block(&fixture("example.conf"), "debug").unwrap();
        assert_eq!(v.debug, Some(5));
        assert_eq!(v.mode.as_deref(), Some("rsyncshell"));
        let e = load_block(&fixture("example.conf"), "nope")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("example.conf: no block [nope] (blocks: default, debug, test, web)"),
            "{e}"
        );
        let e = load_block(&fixture("missing.conf"), "default")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.conf: "), "{e}");
    }

    #[test]
    fn handler_args() {
        let v = one("-- = -aH --exclude-from %EXCLUDE-LIST% --include-from=%INCLUDE-LIST% --exclude '*' %watch-dir%/ %destination-dir%/");
        assert_eq!(
            v.sync_handler_args.unwrap(),
            [
                "-aH",
                "--exclude-from",
                "%EXCLUDE-LIST%",
                "--include-from=%INCLUDE-LIST%",
                "--exclude",
                "*",
                "%watch-dir%/",
                "%destination-dir%/"
            ]
        );
        let v = one("--=  a\t\tb  \"c d\" x\"y z\"w '' 'e\"f' \"g\\\"h\"");
        assert_eq!(
            v.sync_handler_args.unwrap(),
            ["a", "b", "c d", "xy zw", "", "e\"f", "g\\\"h"]
        );
        assert_eq!(one("-- =").sync_handler_args, Some(vec![]));
        let e = err("[b]\n-- = a \"b\n");
        assert_eq!(
            e,
            "clsync.conf:2: -- = \"a \\\"b\": unterminated quote <\">"
        );
        // `---` (initial-sync arguments) has no equivalent.
        let b = p("[b]\n--- = x y\n").unwrap();
        assert_eq!(b[0].values, ProfileValues::default());
        assert_eq!(b[0].ignored[0].0, "---");
    }

    #[test]
    fn substitutions_kept_and_normalised() {
        let v = one(
            "watch-dir = /srv/%label%\ndestination-dir = /b/%watch_dir%/%destination_dir%\n\
             lists-dir = /tmp/%LISTS_DIR%\nexit-hook = /bin/x %%done%% %PID% 1% or 2% 3%\n\
             -- = %RSYNC-ARGS% %watch_dir%/ %pid_file%",
        );
        assert_eq!(v.watch_dir.as_deref(), Some("/srv/%label%"));
        assert_eq!(
            v.destination_dir.as_deref(),
            Some("/b/%watch-dir%/%destination-dir%")
        );
        // Not an option name: left as is.
        assert_eq!(v.lists_dir.as_deref(), Some("/tmp/%LISTS_DIR%"));
        // A lone % is literal in the original, so it is escaped for the profile.
        assert_eq!(
            v.exit_hook.as_deref(),
            Some("/bin/x %%done%% %PID% 1%% or 2%% 3%%")
        );
        assert_eq!(
            v.sync_handler_args.unwrap(),
            ["%RSYNC-ARGS%", "%watch-dir%/", "%pid-file%"]
        );
    }

    #[test]
    fn values_are_converted() {
        let v = one(
            "delay-sync = 15\ndelay-collect = 0x10\ndelay-collect-bigfile =\n\
             timeout-sync = 010\nthreshold-bigfile = 134217728\nretries = 3\n\
             max-iterations = 20\nrsync-inclimit = 0\nignore-exitcode = 23,24\n\
             threading = safe\none-file-system = 1\nexclude-mount-points = 0\n\
             full-initialsync = 2\nuid = nobody\ngid = 0\nexit-hook =\n\
             modification-signature = uid,gid",
        );
        assert_eq!(v.delay_sync, Some(Duration::from_secs(15)));
        assert_eq!(v.delay_collect, Some(Duration::from_secs(16)));
        assert_eq!(v.delay_collect_bigfile, Some(Duration::ZERO));
        assert_eq!(v.timeout_sync, Some(Duration::from_secs(8)));
        assert_eq!(v.threshold_bigfile, Some(134217728));
        assert_eq!(v.retries, Some(3));
        assert_eq!(v.max_iterations, Some(20));
        assert_eq!(v.rsync_inclimit, Some(0));
        assert_eq!(v.ignore_exitcode, Some(vec![23, 24]));
        assert_eq!(v.threading.as_deref(), Some("safe"));
        assert_eq!(v.one_file_system, Some(true));
        assert_eq!(v.exclude_mount_points, Some(false));
        assert_eq!(v.full_initialsync, Some(true));
        assert_eq!(v.uid.as_deref(), Some("nobody"));
        assert_eq!(v.gid.as_deref(), Some("0"));
        assert_eq!(v.exit_hook.as_deref(), Some(""));
        assert_eq!(v.modification_signature.as_deref(), Some("uid,gid"));
        assert_eq!(
            one("ignore-exitcode = 23,0,24").ignore_exitcode,
            Some(vec![24])
        );
        assert_eq!(one("ignore-exitcode = 0").ignore_exitcode, Some(vec![]));
        assert_eq!(one("threading =").threading.as_deref(), Some("off"));
        assert_eq!(one("output =").output.as_deref(), Some("stderr"));
    }

    #[test]
    fn bad_values_name_line_and_value() {
        let cases = [
            ("delay-sync = 1m", "delay-sync = \"1m\": not a number"),
            ("retries = -1", "retries = \"-1\": must not be negative"),
            ("debug = 300", "debug = \"300\": too big (at most 255)"),
            ("mode = rsync", "mode = \"rsync\": unknown mode"),
            (
                "threading = half",
                "threading = \"half\": unknown threading mode",
            ),
            ("output = file", "output = \"file\": unknown output"),
            (
                "ignore-exitcode = 23;24",
                "ignore-exitcode = \"23;24\": \"23;24\" is not an exit code",
            ),
            (
                "ignore-exitcode = 256",
                "ignore-exitcode = \"256\": exit code 256 is not in 0..=255",
            ),
        ];
        for (line, want) in cases {
            let e = err(&format!("# c\n[b]\n{line}\n"));
            assert!(e.starts_with(&format!("clsync.conf:3: {want}")), "{e}");
        }
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let e = err("[default]\nmode = direct\n\ndelay-colect = 5\n");
        assert_eq!(
            e,
            "clsync.conf:4: unknown key \"delay-colect\" (= \"5\") (did you mean \"delay-collect\"?)"
        );
        let e = err("[default]\nwatch_dir = /srv\n");
        assert!(e.contains("(did you mean \"watch-dir\"?)"), "{e}");
        // TOML-only keys are not keys of the original.
        let e = err("[default]\nexclude = /tmp\n");
        assert!(
            e.starts_with("clsync.conf:2: unknown key \"exclude\""),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            err("mode = direct\n"),
            "clsync.conf:1: mode = \"direct\" is before the first [block]"
        );
        assert_eq!(
            err("[a]\njust words\n"),
            "clsync.conf:2: \"just words\" is not a `key = value` line, a [block] or a # comment"
        );
        assert_eq!(err("[a\n"), "clsync.conf:1: invalid block line \"[a\"");
        assert_eq!(err("[]\n"), "clsync.conf:1: invalid block name \"\"");
        assert_eq!(
            err("[a]\n = 1\n"),
            "clsync.conf:2: no key before '=' in \"= 1\""
        );
    }

    #[test]
    fn glib_details() {
        // Comments, blank lines, CRLF, repeated keys and blocks, `=` in values.
        let b = p(
            "# x\r\n  [a]  \r\n\r\n  # y\r\nlabel = one\r\nlabel = two = 2 \r\n\
                   background = 1\r\n[b]\r\n[a]\r\nbackground = 0\r\ndebug = 1\r\n",
        )
        .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].values.label.as_deref(), Some("two = 2"));
        assert_eq!(b[0].values.debug, Some(1));
        assert_eq!(b[0].ignored.len(), 1);
        assert_eq!(b[1].values, ProfileValues::default());
    }

    #[test]
    fn old_key_names() {
        let v = one("rules-path = /r\ndir-destination = /d\nsyslog = 1");
        assert_eq!(v.rules_file.as_deref(), Some("/r"));
        assert_eq!(v.destination_dir.as_deref(), Some("/d"));
        assert_eq!(v.output.as_deref(), Some("syslog"));
        assert_eq!(one("syslog = 0").output, None);
    }

    #[test]
    fn round_trip_through_profiles() {
        let text = std::fs::read_to_string(fixture("example.conf")).unwrap();
        let blocks = p(&text).unwrap();
        let profiles = to_profiles(&blocks);
        assert_eq!(profiles.len(), blocks.len());
        for ((name, toml), block) in profiles.iter().zip(&blocks) {
            assert_eq!(name, &format!("{}.toml", block.name));
            let back = profile::parse_values(Path::new(name), toml)
                .unwrap_or_else(|e| panic!("{e}\n{toml}"));
            assert_eq!(back, block.values, "{toml}");
            assert!(
                toml.starts_with(&format!(
                    "# Imported from clsync.conf block [{}].\n",
                    block.name
                )),
                "{toml}"
            );
        }
        let default = &profiles[0].1;
        assert!(
            default.contains("# Not imported (no equivalent in this clsync):\n#   background: "),
            "{default}"
        );
        let web = &profiles[3].1;
        assert!(web.contains("inherits = \"default\""), "{web}");
        assert!(web.contains("delay-sync = \"15s\""), "{web}");
        assert!(web.contains("ignore-exitcode = [23, 24]"), "{web}");
        assert!(!web.contains("# Note"), "{web}");
        let b = p("[a]\n-- = %EXCLUDE-LIST% %INCLUDE-LIST% %PID% %label% %watch-dir%\n").unwrap();
        let a = &to_profiles(&b)[0].1;
        assert!(
            a.contains(
                "# Note: placeholders of the original that profiles do not know: \
                 %EXCLUDE-LIST% %PID%\n"
            ),
            "{a}"
        );
    }

    #[test]
    fn known_placeholders_are_kept_by_profiles() {
        let d = tempfile::tempdir().unwrap();
        let args: Vec<String> = profile::RUNTIME_PLACEHOLDERS
            .iter()
            .map(|n| format!("%{n}%"))
            .collect();
        let v = ProfileValues {
            sync_handler_args: Some(args.clone()),
            ..Default::default()
        };
        std::fs::write(d.path().join("h.toml"), v.to_toml()).unwrap();
        let profiles = profile::load_dir(d.path()).unwrap();
        let r = profile::resolve(&profiles, "h", None).unwrap();
        assert_eq!(r.values.sync_handler_args, Some(args));
    }

    #[test]
    fn imported_profiles_resolve() {
        let path = fixture("production.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        let d = tempfile::tempdir().unwrap();
        for (name, toml) in to_profiles(&parse(&path, &text).unwrap()) {
            std::fs::write(d.path().join(name), toml).unwrap();
        }
        let profiles = profile::load_dir(d.path()).unwrap();
        let r = profile::resolve(&profiles, "lxc-brother@web01", None).unwrap();
        let v = r.values;
        assert_eq!(v.watch_dir.as_deref(), Some("/srv/lxc/web01"));
        assert_eq!(
            v.pid_file.as_deref(),
            Some("/var/run/clsync-web01-brother.pid")
        );
        assert_eq!(v.mode.as_deref(), Some("rsyncshell"));
        assert_eq!(v.delay_sync, Some(Duration::from_secs(15)));
    }

    #[test]
    fn mapped_keys_are_all_handled() {
        for key in MAPPED_KEYS {
            let value = match *key {
                "mode" => "direct",
                "output" => "stdout",
                "threading" => "full",
                "monitor" => "fanotify",
                _ => "1",
            };
            let mut v = ProfileValues::default();
            assert!(
                matches!(apply(&mut v, key, value), Ok(Applied::Set)),
                "{key}"
            );
            assert_ne!(v, ProfileValues::default(), "{key}");
            assert!(ignored_reason(key).is_none(), "{key}");
        }
    }

    #[test]
    fn profile_names_are_made_fit() {
        assert_eq!(profile_name("lxc-brother"), "lxc-brother");
        assert_eq!(profile_name("a b/c@d"), "a_b_c_d");
        assert_eq!(profile_name("-x"), "_x");
        assert_eq!(profile_name(".x"), "_x");
        let b = p("[a@b]\n[c]\nconfig-block-inherits = a@b\n").unwrap();
        let pr = to_profiles(&b);
        assert_eq!(pr[0].0, "a_b.toml");
        assert!(pr[1].1.contains("inherits = \"a_b\""), "{}", pr[1].1);
    }

    #[test]
    fn fixtures_parse() {
        let path = fixture("example.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        let b = parse(&path, &text).unwrap();
        assert_eq!(b.len(), 4);
        let web = load_block(&path, "web").unwrap();
        assert_eq!(web.watch_dir.as_deref(), Some("/srv/www"));
        assert_eq!(web.label.as_deref(), Some("web"));
        assert_eq!(web.output.as_deref(), Some("syslog"));
        assert_eq!(
            web.sync_handler_args.unwrap(),
            [
                "%RSYNC-ARGS%",
                "--exclude",
                "*.tmp",
                "%watch-dir%/",
                "%destination-dir%/"
            ]
        );

        // The original's own example (an old one: see tests/data/legacy/README.md).
        let path = fixture("production.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        let b = parse(&path, &text).unwrap();
        let names: Vec<&str> = b.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hpc",
                "hpc-backup",
                "lxc-rsyncshell",
                "lxc-brother",
                "lxc-brother-atomic-sync",
                "lxc-brother-initialsync",
                "lxc-backup"
            ]
        );
        assert_eq!(b[0].values.mode.as_deref(), Some("so"));
        assert_eq!(b[0].values.retries, Some(0));
        assert_eq!(b[0].values.one_file_system, Some(true));
        assert_eq!(b[0].ignored[0].0, "auto-add-rules-w");
        assert_eq!(b[1].values.exclude_mount_points, Some(true));
        assert_eq!(
            b[1].values.destination_dir.as_deref(),
            Some("/mnt/backup/mirror")
        );
        let v = load_block(&path, "lxc-brother-atomic-sync").unwrap();
        assert_eq!(v.watch_dir.as_deref(), Some("/srv/lxc/%label%"));
        assert_eq!(v.output.as_deref(), Some("syslog"));
        assert_eq!(v.rules_file.as_deref(), Some("/etc/clsync/rules/lxc"));
        assert_eq!(v.ignore_exitcode, Some(vec![23, 24]));
        assert_eq!(v.delay_sync, Some(Duration::from_secs(15)));
        assert_eq!(v.threading.as_deref(), Some("off"));
        assert_eq!(v.exit_on_no_events, Some(true));
        assert_eq!(v.max_iterations, Some(10));
        assert_eq!(v.full_initialsync, Some(true));
        assert_eq!(
            v.pid_file.as_deref(),
            Some("/var/run/clsync-%label%-brother.pid")
        );
        assert!(b[3].ignored.is_empty(), "{:?}", b[3].ignored);
        assert!(v.dump_dir.is_some(), "dump-dir is a setting");
        let v = load_block(&path, "lxc-backup").unwrap();
        assert_eq!(v.delay_collect_bigfile, Some(Duration::from_secs(43200)));
        assert_eq!(v.debug, Some(1));
        for (name, toml) in to_profiles(&b) {
            profile::parse_values(Path::new(&name), &toml).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
