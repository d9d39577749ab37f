/*!
The original clsync's sandbox options (`--secure-splitting`, `--splitting`,
`--seccomp-filter`, `--detach-network`, `--mountpoints`, `--chroot`, …) and what each
becomes here: one table ([`OPTIONS`]) read by the command line ([`crate::cli`]) and by the
`-H` file's reader ([`super::options`]), so that an option and its INI key always mean the
same.

Why they are mapped rather than refused: a site that ran the original confined must be
able to move over without losing the confinement, and without rewriting its command
lines first. The original split itself into a privileged and an unprivileged part and
filtered the unprivileged part's system calls; this worker instead confines itself and
everything it runs once the tree is watched ([`crate::sandbox`]: no-new-privileges,
Landlock, a seccomp deny-list, namespaces). So an option that asks for confinement turns
the sandbox on (it is what carries it out here), an option that tunes the original's
split has nothing left to tune and is accepted with its reason, and the lists
(`--mountpoints`, `--add-permitted-hook-files`) become paths the sandbox grants.
`--chroot` is carried out by the worker itself (`crate::worker` checks at start that
everything it uses is at the same path inside the directory); a `-H` file cannot set it,
since a profile, which a `-H` block stands for, has no such key.

Values are read as the original reads them (`main.c`, `parse_parameter()`): flags take an
optional number (`--seccomp-filter`, `--seccomp-filter=0`; `strtol`, 0 is off), the
word options take exactly the original's words (an empty value is the original's `off`),
lists are comma-separated and an empty element drops the elements before it.
*/

use crate::sandbox::Network;

/// What the original's sandbox options of one layer (the command line, or one block of a
/// `-H` file) ask for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Asked {
    /// An option that only the sandbox carries out here was given: turn it on.
    pub sandbox: bool,
    /// `--detach-network`.
    pub network: Option<Network>,
    /// `--mountpoints`: paths the sandbox lets the worker read.
    pub read: Option<Vec<String>>,
    /// `--add-permitted-hook-files`: programs the sandbox lets the worker run.
    pub exec: Option<Vec<String>>,
    /// `--privileged-uid`: the default of `sync-handler-uid`.
    pub privileged_uid: Option<String>,
    /// `--privileged-gid`: the default of `sync-handler-gid`.
    pub privileged_gid: Option<String>,
    /// `--chroot`: the directory the worker changes its root to once the tree is watched.
    pub chroot: Option<String>,
    /// `--pivot-root` other than `off` (it needs `--chroot`).
    pub pivot_root: bool,
}

/// How an option's value is read and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No value: turns the sandbox on (`--secure-splitting`).
    On,
    /// `[=N]`, a number (bare: 1): not 0 turns the sandbox on, which carries it out.
    Confines,
    /// `[=N]`, a number: accepted, nothing to do here.
    Flag,
    /// `=N`, a number (required): accepted, nothing to do here.
    Number,
    /// Any text: accepted, nothing to do here.
    Text,
    /// `off|thread|process`.
    Splitting,
    /// `everywhere|non-privileged|off`.
    DetachNetwork,
    /// `off|direct|auto|auto-ro`.
    PivotRoot,
    /// A comma list of paths the sandbox lets the worker read; a path turns it on.
    ReadList,
    /// A comma list of programs the sandbox lets the worker run.
    ExecList,
    /// A user: the default of `sync-handler-uid`.
    User,
    /// A group: the default of `sync-handler-gid`.
    Group,
    /// `mon_stat` (a comma list): accepted, nothing to do here.
    CancelSyscalls,
    /// A directory to change the root to (empty: none).
    Chroot,
}

/// The original's sandbox options: name, kind, and what it does here (the reason given
/// for an option that changes nothing; docs/cli.md's table says more).
pub(crate) const OPTIONS: &[(&str, Kind, &str)] = &[
    ("secure-splitting", Kind::On, "turns the sandbox on (the original's --splitting=process --check-execvp-arguments --seccomp-filter --forbid-devices)"),
    ("splitting", Kind::Splitting, "thread or process turns the sandbox on: nothing privileged is left once the worker has confined itself; off changes nothing"),
    ("check-execvp-arguments", Kind::Confines, "covered by the sandbox, which it turns on: only the system directories and the configured handler and hooks may be run (Landlock)"),
    ("add-permitted-hook-files", Kind::ExecList, "the programs are added to sandbox-exec"),
    ("seccomp-filter", Kind::Confines, "turns the sandbox on, whose seccomp filter refuses mount, ptrace, module loading, bpf, reboot and the like"),
    ("forget-privthread-info", Kind::Flag, "no effect: there is no privileged thread"),
    ("permit-mprotect", Kind::Flag, "no effect: mprotect is never refused"),
    ("shm-mprotect", Kind::Flag, "no effect: the worker shares no memory with another process"),
    ("chroot", Kind::Chroot, "the worker changes its root to the directory once the tree is watched (command line only); refused at start unless the watch tree, the destinations, the handler and every file the worker uses are at the same path inside it"),
    ("pivot-root", Kind::PivotRoot, "off changes nothing; another way needs --chroot, as in the original, and turns the sandbox on, whose seccomp filter refuses chroot, pivot_root, mount and unshare (the escapes the old root's unmounting guarded against)"),
    ("mountpoints", Kind::ReadList, "turns the sandbox on; the mount points are added to sandbox-read, and nothing else outside the trees and the system files is reachable"),
    ("detach-network", Kind::DetachNetwork, "everywhere: sandbox-network = private and the sandbox on; non-privileged (the original's default): auto; off: host"),
    ("detach-ipc", Kind::Number, "no effect of its own: the sandbox takes a private IPC namespace"),
    ("detach-miscellanea", Kind::Confines, "covered by the sandbox, which it turns on (a private UTS and IPC namespace)"),
    ("forbid-devices", Kind::Confines, "covered by the sandbox, which it turns on: of /dev only null, zero, random and urandom may be opened (Landlock)"),
    ("cgroup-group-name", Kind::Text, "no effect: no cgroup is made (under systemd the unit's cgroup applies)"),
    ("privileged-uid", Kind::User, "the default of sync-handler-uid, as in the original"),
    ("privileged-gid", Kind::Group, "the default of sync-handler-gid, as in the original"),
    ("cancel-syscalls", Kind::CancelSyscalls, "no effect: tuning of the original's internals (lstat is not skipped)"),
];

/// The option named `name` (without dashes), if it is one of the table.
#[must_use]
pub(crate) fn find(name: &str) -> Option<(Kind, &'static str)> {
    OPTIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, k, what)| (k, what))
}

/// What applying one option did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Something in [`Asked`] may have changed.
    Set,
    /// Accepted; nothing to do here, for this reason.
    NoEffect(&'static str),
}

/// Applies option `name` (no dashes; see [`find`]) with `value` (a bare flag: `"1"`) to
/// `asked`. An error is the reason alone; the caller names the option or key and value.
pub(crate) fn apply(asked: &mut Asked, name: &str, value: &str) -> Result<Effect, String> {
    let Some((kind, what)) = find(name) else {
        return Err("not a sandbox option of the original".into());
    };
    let word = |words: &[&str]| {
        if value.is_empty() || words.contains(&value) {
            Ok(())
        } else {
            let (last, rest) = words.split_last().unwrap_or((&"", &[]));
            Err(format!("expected {} or {last}", rest.join(", ")))
        }
    };
    match kind {
        Kind::On => asked.sandbox = true,
        Kind::Confines => {
            if number(value)? != 0 {
                asked.sandbox = true;
            } else {
                return Ok(Effect::NoEffect(
                    "0: off, so nothing is asked (the sandbox is as the other settings make it)",
                ));
            }
        }
        Kind::Flag | Kind::Number => {
            number(value)?;
            return Ok(Effect::NoEffect(what));
        }
        Kind::Text => return Ok(Effect::NoEffect(what)),
        Kind::Splitting => {
            word(&["off", "thread", "process"])?;
            if matches!(value, "thread" | "process") {
                asked.sandbox = true;
            } else {
                return Ok(Effect::NoEffect(what));
            }
        }
        Kind::DetachNetwork => {
            word(&["everywhere", "non-privileged", "off"])?;
            asked.network = Some(match value {
                "everywhere" => {
                    asked.sandbox = true;
                    Network::Private
                }
                "non-privileged" => Network::Auto,
                _ => Network::Host,
            });
        }
        Kind::PivotRoot => {
            word(&["off", "direct", "auto", "auto-ro"])?;
            if matches!(value, "" | "off") {
                return Ok(Effect::NoEffect(what));
            }
            asked.pivot_root = true;
            asked.sandbox = true;
        }
        Kind::ReadList => {
            let list = comma_list(value);
            if !list.is_empty() {
                asked.sandbox = true;
            }
            asked.read = Some(list);
        }
        Kind::ExecList => asked.exec = Some(comma_list(value)),
        Kind::User => asked.privileged_uid = Some(value.to_string()),
        Kind::Group => asked.privileged_gid = Some(value.to_string()),
        Kind::CancelSyscalls => {
            if let Some(bad) = value.split(',').find(|s| !s.is_empty() && *s != "mon_stat") {
                return Err(format!("{bad:?} is not mon_stat"));
            }
            return Ok(Effect::NoEffect(what));
        }
        // Empty: the original's way of unsetting it.
        Kind::Chroot => asked.chroot = (!value.is_empty()).then(|| value.to_string()),
    }
    Ok(Effect::Set)
}

/// A flag's value as the original reads it (`strtol` base 0; empty is 0).
fn number(value: &str) -> Result<u64, String> {
    super::options::number("", value, u64::MAX)
        .map_err(|e| e.trim_start_matches(&format!(" = {value:?}: ")).to_string())
}

/// A comma list as the original reads `--mountpoints` and `--add-permitted-hook-files`:
/// an empty element drops the elements before it.
fn comma_list(value: &str) -> Vec<String> {
    let mut list = Vec::new();
    for part in value.split(',') {
        if part.is_empty() {
            list.clear();
        } else {
            list.push(part.to_string());
        }
    }
    list
}
