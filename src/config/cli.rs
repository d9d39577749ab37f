/*!
The `clsync` command line: the short form `clsync SRC DST` and the original's classic
options (`-M rsyncdirect -W SRC -D DST …`).

The two forms differ only in their defaults: the short form is for a person watching the
result (about 0.2 s from a change to the mirror), the classic form keeps the
original's 30 s / 30 s / 1800 s so existing setups behave as before. The original's
sandbox options are mapped onto the worker's sandbox ([`crate::legacy::sandbox_options`]);
an option of the original that is not supported (its capability options, its control
socket) is rejected by name with the reason, never silently ignored.
*/

use crate::config::build::{build, Defaults, RulesFrom, Values};
use crate::config::{parse_duration, parse_size, Config, Initial, StartError};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "clsync",
    version,
    about = "Live mirror of a directory tree: inotify + rsync",
    after_help = "Short form: clsync [OPTIONS] SRC DST\nClassic form: clsync -M rsyncdirect -W SRC -D DST [OPTIONS]\nExit codes: 0 ok, 1 runtime failure, 2 usage, 3 bad source/destination, 4 rsync not found, 5 tree cannot be watched, 7 split-brain of a failover pair.",
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true,
    // As getopt in the original: an option given again replaces the earlier value
    // (clsync(1)'s "two directories synchronous" example gives -M twice).
    args_override_self = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Sync-handler mode: rsyncdirect, rsyncshell, shell, direct, simple, rsyncso, so
    #[arg(short = 'M', long = "mode", value_name = "MODE")]
    mode: Option<crate::sync::handler::Mode>,
    /// Directory to watch (classic form)
    #[arg(short = 'W', long = "watch-dir", value_name = "DIR")]
    watch_dir: Option<PathBuf>,
    /// Where to mirror to: a directory, [user@]host:/path (ssh) or rsync://host/module/path; repeat for several
    #[arg(short = 'D', long = "destination-dir", value_name = "DEST")]
    destination_dir: Vec<PathBuf>,
    /// The sync handler: rsync (rsyncdirect), a program, or a shared object (so modes)
    #[arg(short = 'S', long = "sync-handler", value_name = "PATH")]
    sync_handler: Option<PathBuf>,
    /// Minimal delay between syncs (seconds, or 200ms, 2m…)
    #[arg(short = 'w', long = "delay-sync", value_name = "DUR", value_parser = parse_duration)]
    delay_sync: Option<Duration>,
    /// How long events are collected before a sync, from the first event
    #[arg(short = 't', long = "delay-collect", value_name = "DUR", value_parser = parse_duration)]
    delay_collect: Option<Duration>,
    /// Collect delay for big files
    #[arg(short = 'T', long = "delay-collect-bigfile", value_name = "DUR", value_parser = parse_duration)]
    delay_collect_bigfile: Option<Duration>,
    /// Size above which a file is a big file (bytes, or 128MiB…; 0 disables)
    #[arg(short = 'B', long = "threshold-bigfile", value_name = "SIZE", value_parser = parse_size)]
    threshold_bigfile: Option<u64>,
    /// Filter rules file ([+-][fdWwms*]regex per line)
    #[arg(short = 'R', long = "rules-file", value_name = "FILE")]
    rules_file: Option<PathBuf>,
    /// Label of this instance (shown in log lines)
    #[arg(short = 'l', long = "label")]
    label: Option<String>,
    /// Split include lists into parts of about N lines (0 = no limit) [default: 20000]
    #[arg(long = "rsync-inclimit", value_name = "N")]
    rsync_inclimit: Option<usize>,
    /// Write the status (starting, initsync, running, terminating, exiting) to this file
    #[arg(long = "status-file", value_name = "FILE")]
    status_file: Option<PathBuf>,
    /// Debug level: 0 info, 1 debug, 2 trace; -d alone: 1 [default: 0]
    #[arg(short = 'd', long = "debug", value_name = "LEVEL", num_args = 0..=1, default_missing_value = "1")]
    debug: Option<u8>,
    /// Write the pid here; refuse to start if it names a live process
    #[arg(short = 'z', long = "pid-file", value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// rsync exit codes that are not failures (besides 0 and 24): 23,24 or repeated; 0 resets
    #[arg(short = 'x', long = "ignore-exitcode", value_name = "CODES")]
    ignore_exitcode: Vec<String>,
    /// Kill a sync (its whole process group) that runs longer, and count it as failed; 0: none
    #[arg(short = 'k', long = "timeout-sync", value_name = "DUR", value_parser = parse_duration)]
    timeout_sync: Option<Duration>,
    /// Do not run the initial full sync: mirror only changes from now on
    #[arg(long = "skip-initialsync")]
    skip_initialsync: bool,
    /// Run the initial full sync, then exit
    #[arg(long = "only-initialsync")]
    only_initialsync: bool,
    /// Run as `HOOK LABEL` when a stop is requested, before the final sync
    #[arg(long = "pre-exit-hook", value_name = "PROGRAM")]
    pre_exit_hook: Option<PathBuf>,
    /// Run as `HOOK LABEL` when the worker exits
    #[arg(long = "exit-hook", value_name = "PROGRAM")]
    exit_hook: Option<PathBuf>,
    /// While this file exists no sync runs (events keep queuing)
    #[arg(long = "standby-file", value_name = "FILE")]
    standby_file: Option<PathBuf>,
    /// Give up after N failed syncs in a row, exiting with the handler's code; 0: retry forever [default: 1 in the classic form, 0 in the short form]
    #[arg(short = 'r', long = "retries", value_name = "N")]
    retries: Option<u32>,
    /// Do not cross into other file systems (mount points are synced empty)
    #[arg(long = "one-file-system")]
    one_file_system: bool,
    /// Leave the content of mount points out (the same as --one-file-system here)
    #[arg(short = 'X', long = "exclude-mount-points")]
    exclude_mount_points: bool,
    /// Leave out what matches GLOB (gitignore style, as the profile key `exclude`; repeatable)
    #[arg(long = "exclude", value_name = "GLOB", action = clap::ArgAction::Append)]
    exclude: Vec<String>,
    /// Keep what matches GLOB although an --exclude matches it (as the profile key `include`)
    #[arg(long = "include", value_name = "GLOB", action = clap::ArgAction::Append)]
    include: Vec<String>,
    /// Ignore the rules' excludes on the initial sync
    #[arg(short = 'F', long = "full-initialsync")]
    full_initialsync: bool,
    /// Where the initial sync starts from: index (only what differs from the index of
    /// what each destination received; full without a usable one) or full [default: index
    /// when a usable one exists]
    #[arg(long = "initial-sync", value_name = "index|full")]
    initial_sync: Option<crate::config::InitialFrom>,
    /// Keep an index of what each destination received in DIR (0700; created if missing),
    /// for a start without a full rsync
    #[arg(long = "index-dir", value_name = "DIR")]
    index_dir: Option<PathBuf>,
    /// After the initial sync, sync what is queued and exit when nothing is left
    #[arg(long = "exit-on-no-events")]
    exit_on_no_events: bool,
    /// Exit after N sync iterations (the initial sync counts); 0: no limit
    #[arg(long = "max-iterations", value_name = "N")]
    max_iterations: Option<u32>,
    /// Sync the queue before exiting on SIGQUIT (always done, on every stop signal)
    #[arg(long = "sync-on-quit")]
    sync_on_quit: bool,
    /// Errors only
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Where the log goes: stderr, syslog or journal [default: stderr]
    #[arg(short = 'Y', long = "output", value_name = "OUTPUT")]
    output: Option<crate::logger::Output>,
    /// Detach into the background once the tree is watched (log with --output syslog); -b0: stay
    #[arg(short = 'b', long = "background", value_name = "0|1", num_args = 0..=1, require_equals = true, default_missing_value = "1", value_parser = clap::value_parser!(u8).range(0..=1))]
    background: Option<u8>,
    /// Directory for the list files handed to rsync (0700; created if missing)
    #[arg(short = 'L', long = "lists-dir", value_name = "DIR")]
    lists_dir: Option<PathBuf>,
    /// Keep the list files after each run (debugging)
    #[arg(short = 'U', long = "dont-unlink-lists")]
    dont_unlink_lists: bool,
    /// Parallel syncs: off, safe (a path is never in two syncs at once) or full [default: off]
    #[arg(short = 'p', long = "threading", value_name = "MODE")]
    threading: Option<crate::batcher::Threading>,
    /// How many syncs may run at once with --threading safe or full [default: 4]
    #[arg(long = "max-parallel-syncs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_parallel_syncs: Option<u32>,
    /// shell mode: list lines hold the relative path alone
    #[arg(long = "synclist-simplify")]
    synclist_simplify: bool,
    /// Hand recursive syncs to the handler as one directory (shell, direct, simple, so)
    #[arg(long = "have-recursive-sync")]
    have_recursive_sync: bool,
    /// rsync modes: no exclude list; recursive syncs list every permitted path
    #[arg(long = "rsync-prefer-include")]
    rsync_prefer_include: bool,
    /// List files with NUL-terminated records (names with newlines); CLSYNC_LIST_FORMAT=nul
    #[arg(long = "lists-nul")]
    lists_nul: bool,
    /// Keep running when syncs fail; the failed paths stay queued and are retried
    #[arg(long = "ignore-failures")]
    ignore_failures: bool,
    /// Run the sync handler as this user (name or number)
    #[arg(long = "sync-handler-uid", value_name = "USER")]
    sync_handler_uid: Option<String>,
    /// Run the sync handler with this group (name or number)
    #[arg(long = "sync-handler-gid", value_name = "GROUP")]
    sync_handler_gid: Option<String>,
    /// Drop to this user once the tree is watched (name or number)
    #[arg(short = 'u', long = "uid", value_name = "USER")]
    uid: Option<String>,
    /// Drop to this group once the tree is watched (name or number)
    #[arg(short = 'g', long = "gid", value_name = "GROUP")]
    gid: Option<String>,
    /// Skip paths whose stat fields did not change: e.g. uid,gid or size,mtime or *
    #[arg(long = "modification-signature", value_name = "FIELDS")]
    modification_signature: Option<String>,
    /// SIGUSR1/SIGIO also write the state (JSON) into this directory
    #[arg(long = "dump-dir", value_name = "DIR")]
    dump_dir: Option<PathBuf>,
    /// The ssh program for [user@]host:/path destinations [default: ssh]
    #[arg(long = "ssh-command", value_name = "PROGRAM")]
    ssh_command: Option<String>,
    /// ssh identity file (-i)
    #[arg(long = "ssh-identity", value_name = "FILE")]
    ssh_identity: Option<PathBuf>,
    /// ssh port (-p)
    #[arg(long = "ssh-port", value_name = "PORT")]
    ssh_port: Option<u16>,
    /// One more ssh argument (e.g. -oConnectTimeout=10); repeatable
    #[arg(long = "ssh-option", value_name = "ARG", allow_hyphen_values = true)]
    ssh_option: Vec<String>,
    /// One more rsync option (e.g. --bwlimit=10m, --compress, --inplace); repeatable
    #[arg(long = "rsync-option", value_name = "ARG", allow_hyphen_values = true)]
    rsync_option: Vec<String>,
    /// rsync --password-file for rsync:// destinations
    #[arg(long = "rsync-password-file", value_name = "FILE")]
    rsync_password_file: Option<PathBuf>,
    /// Report the progress of full syncs every 5 s (default: for trees of 50,000 directories or more): yes or no
    #[arg(long = "progress", value_name = "yes|no", num_args = 0..=1, require_equals = true, default_missing_value = "yes", value_parser = parse_yes_no)]
    progress: Option<bool>,
    /// Sync a file being written once it is closed, or every DUR while it stays open (e.g. 30s)
    #[arg(long = "wait-for-close", value_name = "DUR", value_parser = parse_duration)]
    wait_for_close: Option<Duration>,
    /// Every DUR, compare each destination with the source (a full rsync run) and repair drift, reporting it
    #[arg(long = "verify-interval", value_name = "DUR", value_parser = parse_duration)]
    verify_interval: Option<Duration>,
    /// Resolve a failover pair's split-brain for this start: keep local or peer (clsync-manager resolve uses it)
    #[arg(long = "split-brain-keep", value_name = "local|peer")]
    split_brain_keep: Option<String>,
    /// Sync even when the watch directory is empty (else taken for an unmounted disk)
    #[arg(long = "allow-empty-source")]
    allow_empty_source: bool,
    /// Check that only root (or this user) can change the profile, -H file, rules file and
    /// the programs run (handler, hooks, resolver…): false turns the checks off [default: true]
    #[arg(long = "strict-modes", value_name = "true|false", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_yes_no)]
    strict_modes: Option<bool>,
    /// Confine the worker and what it runs (Landlock, seccomp, capabilities, namespaces):
    /// see docs/security.md; required: refuse to start where the kernel cannot
    /// [default: false; true for --profile]
    #[arg(long = "sandbox", value_name = "true|false|required", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_sandbox)]
    sandbox: Option<crate::sandbox::Mode>,
    /// The network a confined worker keeps: auto (a private one when every destination
    /// is local), private, host [default: auto]
    #[arg(long = "sandbox-network", value_name = "auto|private|host", value_parser = parse_sandbox_network)]
    sandbox_network: Option<crate::sandbox::Network>,
    /// A path a confined worker and its handlers may read as well (repeatable)
    #[arg(long = "sandbox-read", value_name = "PATH")]
    sandbox_read: Vec<PathBuf>,
    /// A path a confined worker and its handlers may write as well (repeatable)
    #[arg(long = "sandbox-write", value_name = "PATH")]
    sandbox_write: Vec<PathBuf>,
    /// A program or directory a confined worker and its handlers may run as well (repeatable)
    #[arg(long = "sandbox-exec", value_name = "PATH")]
    sandbox_exec: Vec<PathBuf>,
    // The original's sandbox options, mapped by `legacy::sandbox_options` (not in
    // --help: docs/cli.md and clsync(1) list them with what each does here).
    #[arg(long = "secure-splitting", hide = true)]
    secure_splitting: bool,
    #[arg(long = "splitting", hide = true, value_name = "off|thread|process")]
    splitting: Option<String>,
    #[arg(long = "check-execvp-arguments", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    check_execvp_arguments: Option<String>,
    #[arg(long = "add-permitted-hook-files", hide = true, value_name = "PATHS")]
    add_permitted_hook_files: Option<String>,
    #[arg(long = "seccomp-filter", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    seccomp_filter: Option<String>,
    #[arg(long = "forget-privthread-info", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    forget_privthread_info: Option<String>,
    #[arg(long = "permit-mprotect", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    permit_mprotect: Option<String>,
    #[arg(long = "shm-mprotect", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    shm_mprotect: Option<String>,
    #[arg(long = "chroot", hide = true, value_name = "DIR")]
    chroot: Option<String>,
    #[arg(long = "pivot-root", hide = true, value_name = "WAY")]
    pivot_root: Option<String>,
    #[arg(long = "mountpoints", hide = true, value_name = "PATHS")]
    mountpoints: Option<String>,
    #[arg(long = "detach-network", hide = true, value_name = "WAY")]
    detach_network: Option<String>,
    #[arg(long = "detach-ipc", hide = true, value_name = "N")]
    detach_ipc: Option<String>,
    #[arg(long = "detach-miscellanea", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    detach_miscellanea: Option<String>,
    #[arg(long = "forbid-devices", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    forbid_devices: Option<String>,
    #[arg(long = "cgroup-group-name", hide = true, value_name = "NAME")]
    cgroup_group_name: Option<String>,
    #[arg(long = "privileged-uid", hide = true, value_name = "USER")]
    privileged_uid: Option<String>,
    #[arg(long = "privileged-gid", hide = true, value_name = "GROUP")]
    privileged_gid: Option<String>,
    #[arg(long = "cancel-syscalls", hide = true, value_name = "SYSCALLS")]
    cancel_syscalls: Option<String>,
    /// Capabilities the worker keeps after dropping to --uid, comma-separated: any of
    /// CAP_DAC_READ_SEARCH, CAP_SETUID, CAP_SETGID, CAP_KILL (as in the original)
    #[arg(short = 'C', long = "preserve-capabilities", value_name = "LIST")]
    preserve_capabilities: Option<String>,
    /// Whether the handlers inherit the capabilities of --preserve-capabilities: clsync or
    /// permitted (yes), empty or dont-touch (no) [default: empty]
    #[arg(long = "inherit-capabilities", value_name = "MODE", value_parser = parse_inherit_capabilities)]
    inherit_capabilities: Option<crate::sandbox::Inherit>,
    /// Accepted: no event is ever skipped (an inotify overflow means a rescan)
    #[arg(long = "exit-on-sync-skip")]
    exit_on_sync_skip: bool,
    /// More log detail (the same as -d 1)
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// How the tree is watched: inotify (default) or fanotify (root, Linux 5.9+: one mark
    /// per file system, no per-directory setup)
    #[arg(long = "monitor", value_name = "SUBSYSTEM", value_parser = parse_monitor)]
    monitor: Option<crate::watch::Monitor>,
    /// The original's INI configuration file (`/NULL/`: none)
    #[arg(short = 'H', long = "config-file", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// The block of the configuration file to use [default: default]
    #[arg(short = 'K', long = "config-block", value_name = "BLOCK")]
    config_block: Option<String>,
    /// Run a profile (PROFILE, PROFILE@LABEL or PROFILE-LABEL) from the profiles directory
    #[arg(long = "profile", value_name = "NAME")]
    profile: Option<String>,
    /// Profiles directory [default: $CLSYNC_PROFILES_DIR or /etc/clsync]
    #[arg(long = "profiles-dir", value_name = "DIR")]
    profiles_dir: Option<PathBuf>,
    /// What clsync@NAME.service runs: the profile NAME if there is one, else block [NAME]
    /// of /etc/clsync/clsync.conf (or of -H FILE); logs to the journal unless -Y says
    /// otherwise
    #[arg(long = "unit-instance", value_name = "NAME")]
    unit_instance: Option<String>,
    /// SRC DST [DST...] (short form); with -M/-W/-D: the sync handler's arguments (after --)
    #[arg(value_name = "SRC DST | -- HANDLER-ARGS")]
    paths: Vec<PathBuf>,
}

/// The commands besides running the worker (a source directory literally named like one
/// is given as `./check`).
#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Validate profiles without running them: one line per profile (NAME: ok, or its
    /// error); exit 0 if every one is valid, 2 if not
    Check {
        /// Profiles directory [default: $CLSYNC_PROFILES_DIR or /etc/clsync]
        #[arg(long = "profiles-dir", value_name = "DIR")]
        profiles_dir: Option<PathBuf>,
        /// Profiles by name, or profile files (a path or *.toml); none: every profile of
        /// the directory
        #[arg(value_name = "PROFILE|FILE")]
        targets: Vec<String>,
        /// false: do not report files that others than root may change
        #[arg(long = "strict-modes", value_name = "true|false", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_yes_no)]
        strict_modes: Option<bool>,
    },
    /// Print a profile's effective values, after inheritance and substitution
    ShowConfig {
        /// Profiles directory [default: $CLSYNC_PROFILES_DIR or /etc/clsync]
        #[arg(long = "profiles-dir", value_name = "DIR")]
        profiles_dir: Option<PathBuf>,
        /// The label of a template's instance (or give PROFILE@LABEL)
        #[arg(short = 'l', long = "label")]
        label: Option<String>,
        /// The profile (PROFILE, PROFILE@LABEL or PROFILE-LABEL)
        #[arg(value_name = "PROFILE")]
        name: String,
    },
    /// Convert the original's INI configuration file into profiles, one per block,
    /// written into the profiles directory (an existing profile is never overwritten)
    Import {
        /// Profiles directory [default: $CLSYNC_PROFILES_DIR or /etc/clsync]
        #[arg(long = "profiles-dir", value_name = "DIR")]
        profiles_dir: Option<PathBuf>,
        /// The original's configuration file
        #[arg(value_name = "CLSYNC.CONF")]
        file: PathBuf,
    },
    /// Print the shell completion script for bash, zsh or fish
    ///
    /// The package installs them; by hand, e.g.
    /// `clsync completions bash > ~/.local/share/bash-completion/completions/clsync`.
    Completions {
        /// The shell
        #[arg(value_name = "SHELL")]
        shell: crate::completions::Shell,
    },
}

/// The command line's clap command, for the completions ([`crate::completions`]).
pub(crate) fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}

/// Options of the original clsync that this version does not support, with the reason:
/// named in a clear error rather than a generic "unexpected argument".
const UNSUPPORTED_OPTIONS: &[(Option<char>, &str, &str)] = &[
    (None, "config-block-inherits", "on the command line; write config-block-inherits into the block of the -H configuration file (or use inherits in a profile)"),
    (None, "custom-signals", "signals have fixed meanings (see SIGNALS in clsync(1))"),
    (None, "fts-experimental-optimization", "the tree walk does not use fts(3); there is nothing to tune"),
    (None, "socket", "the worker has no control socket: use its signals (USR1 state, USR2 full resync, HUP rules reload, TERM stop), or clsync-manager"),
    (None, "socket-mod", "the worker has no control socket (see --socket)"),
    (None, "socket-own", "the worker has no control socket (see --socket)"),
];

/// Finds an option of the original that is not supported: the message names it.
fn unsupported_option<T: AsRef<std::ffi::OsStr>>(args: &[T]) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let say = |short: &Option<char>, long: &str, why: &str| match short {
        Some(c) => format!("option --{long} (-{c}) of the original clsync is not supported: {why}"),
        None => format!("option --{long} of the original clsync is not supported: {why}"),
    };
    for a in args.iter().skip(1) {
        let a = a.as_ref().as_bytes();
        if a == b"--" {
            break;
        }
        if let Some(long) = a.strip_prefix(b"--") {
            let name = long.split(|&b| b == b'=').next().unwrap_or_default();
            if let Some((short, long, why)) = UNSUPPORTED_OPTIONS
                .iter()
                .find(|(_, l, _)| l.as_bytes() == name)
            {
                return Some(say(short, long, why));
            }
        } else if a.len() >= 2 && a[0] == b'-' {
            let c = a[1] as char;
            if let Some((short, long, why)) =
                UNSUPPORTED_OPTIONS.iter().find(|(s, _, _)| *s == Some(c))
            {
                return Some(say(short, long, why));
            }
        }
    }
    None
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the worker.
    Run(Box<Config>),
    /// `clsync check [--profiles-dir DIR] [PROFILE|FILE…]`
    Check { dir: PathBuf, targets: Vec<String> },
    /// `clsync import FILE [--profiles-dir DIR]`
    Import { file: PathBuf, dir: PathBuf },
    /// `clsync show-config [--profiles-dir DIR] [--label L] PROFILE[@LABEL]`
    ShowConfig {
        dir: PathBuf,
        name: String,
        label: Option<String>,
    },
    /// `clsync completions SHELL`
    Completions(crate::completions::Shell),
}

/// Reports a command-line error as one line on standard error (`clsync: error: ...`,
/// without clap's usage and hint lines) and exits with clap's code, 2; help and version
/// are printed as clap prints them. A script or a supervisor log then shows the reason
/// alone, as for every other refusal.
pub fn exit_on_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind as K;
    if matches!(
        e.kind(),
        K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    let text = e.render().to_string();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("error: invalid command line");
    match line.strip_prefix("error: ") {
        Some(rest) => eprintln!("clsync: error: {rest}"),
        None => eprintln!("clsync: {line}"),
    }
    std::process::exit(e.exit_code())
}

/// `clsync help` and `clsync help SUBCOMMAND` as `--help` and `SUBCOMMAND --help` (what
/// people type after git and cargo). Not a help subcommand of clap's: `clsync help DST`
/// is a short form whose source is a directory named `help`, and stays one.
fn help_as_option(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const SUBS: [&str; 4] = ["check", "show-config", "import", "completions"];
    match args.get(1..) {
        Some([h]) if h == "help" => args[1] = "--help".into(),
        Some([h, sub]) if h == "help" && SUBS.iter().any(|s| sub == s) => {
            args.swap(1, 2);
            args[2] = "--help".into();
        }
        _ => {}
    }
    args
}

/// Parses the command line: a subcommand (`check`, `show-config`, `import`) or a worker
/// run.
pub fn parse_command(args: Vec<std::ffi::OsString>) -> Result<Command, clap::Error> {
    let (mut a, argv) = parse_args(help_as_option(args))?;
    let dir = |d: Option<PathBuf>| crate::profile::profiles_dir(d.as_deref());
    Ok(match a.command.take() {
        Some(Sub::Check {
            profiles_dir,
            targets,
            strict_modes,
        }) => {
            if strict_modes == Some(false) {
                crate::strict::disable();
            }
            Command::Check {
                dir: dir(profiles_dir),
                targets,
            }
        }
        Some(Sub::ShowConfig {
            profiles_dir,
            label,
            name,
        }) => Command::ShowConfig {
            dir: dir(profiles_dir),
            name,
            label,
        },
        Some(Sub::Import { profiles_dir, file }) => Command::Import {
            file,
            dir: dir(profiles_dir),
        },
        Some(Sub::Completions { shell }) => Command::Completions(shell),
        None => Command::Run(Box::new(run_config(a, argv)?)),
    })
}

fn parse_monitor(s: &str) -> Result<crate::watch::Monitor, String> {
    s.parse()
}

fn parse_sandbox(s: &str) -> Result<crate::sandbox::Mode, String> {
    s.parse()
}

fn parse_sandbox_network(s: &str) -> Result<crate::sandbox::Network, String> {
    s.parse()
}

fn parse_inherit_capabilities(s: &str) -> Result<crate::sandbox::Inherit, String> {
    s.parse()
}

fn parse_yes_no(s: &str) -> Result<bool, String> {
    match s {
        "yes" | "1" | "true" | "on" => Ok(true),
        "no" | "0" | "false" | "off" => Ok(false),
        _ => Err(format!("{s:?}: expected yes or no")),
    }
}

/// Parses the command line into a worker configuration.
pub fn parse<I, T>(args: I) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone + AsRef<std::ffi::OsStr>,
{
    let (a, argv) = parse_args(args)?;
    run_config(a, argv)
}

/// The options as clap parses them, after the original's forms clap does not know (the
/// unsupported options named, `-b0`/`-b1`); and the command line as given.
fn parse_args<I, T>(args: I) -> Result<(Args, Vec<std::ffi::OsString>), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone + AsRef<std::ffi::OsStr>,
{
    let args: Vec<T> = args.into_iter().collect();
    if let Some(msg) = unsupported_option(&args) {
        return Err(clap::Error::raw(
            clap::error::ErrorKind::UnknownArgument,
            format!("{msg}\n"),
        ));
    }
    let argv: Vec<std::ffi::OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
    // The original's `-b0` / `-b1`: an optional value attached to the short option.
    let mut parsed = Vec::with_capacity(argv.len());
    for (i, a) in argv.iter().enumerate() {
        if a == "--" {
            parsed.extend(argv[i..].iter().cloned());
            break;
        }
        match a.to_str() {
            Some(v @ ("-b0" | "-b1")) => parsed.push(format!("--background={}", &v[2..]).into()),
            _ => parsed.push(a.clone()),
        }
    }
    match Args::try_parse_from(parsed) {
        Ok(a) => Ok((a, argv)),
        // A command line of clsync 0.1 (`clsync [OPTIONS] WATCH-DIR HANDLER [RULES
        // [DEST]]`, the original's README): only tried when today's form refuses it.
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => Err(e),
        Err(e) => match crate::legacy::argv01::translate(&argv) {
            Some(today) => Ok((Args::try_parse_from(&today).map_err(|_| e)?, today)),
            None => Err(e),
        },
    }
}

/// The worker's configuration from parsed options; `argv` is kept for SIGHUP.
fn run_config(a: Args, argv: Vec<std::ffi::OsString>) -> Result<Config, clap::Error> {
    let invalid =
        |e: String| clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n"));
    if a.command.is_some() {
        return Err(invalid(
            "check, show-config, import and completions are commands of their own, not a worker's options"
                .into(),
        ));
    }
    let mut c = to_config(a).map_err(|e| invalid(e.to_string()))?;
    c.reload_args = Some(argv);
    Ok(c)
}

/// `skip-initialsync` and `only-initialsync` together make no sense (the original
/// refuses the pair too).
fn initial(skip: bool, only: bool) -> Result<Option<Initial>, StartError> {
    match (skip, only) {
        (true, true) => Err(StartError::Usage(
            "--skip-initialsync and --only-initialsync exclude each other".into(),
        )),
        (true, false) => Ok(Some(Initial::Skip)),
        (false, true) => Ok(Some(Initial::Only)),
        (false, false) => Ok(None),
    }
}

/// The original's sandbox options given on the command line, each applied in turn
/// ([`crate::legacy::sandbox_options`]).
fn original_sandbox(a: &Args) -> Result<crate::legacy::sandbox_options::Asked, StartError> {
    use crate::legacy::sandbox_options::{apply, Asked};
    let given: [(&str, Option<&str>); 19] = [
        ("secure-splitting", a.secure_splitting.then_some("")),
        ("splitting", a.splitting.as_deref()),
        (
            "check-execvp-arguments",
            a.check_execvp_arguments.as_deref(),
        ),
        (
            "add-permitted-hook-files",
            a.add_permitted_hook_files.as_deref(),
        ),
        ("seccomp-filter", a.seccomp_filter.as_deref()),
        (
            "forget-privthread-info",
            a.forget_privthread_info.as_deref(),
        ),
        ("permit-mprotect", a.permit_mprotect.as_deref()),
        ("shm-mprotect", a.shm_mprotect.as_deref()),
        ("chroot", a.chroot.as_deref()),
        ("pivot-root", a.pivot_root.as_deref()),
        ("mountpoints", a.mountpoints.as_deref()),
        ("detach-network", a.detach_network.as_deref()),
        ("detach-ipc", a.detach_ipc.as_deref()),
        ("detach-miscellanea", a.detach_miscellanea.as_deref()),
        ("forbid-devices", a.forbid_devices.as_deref()),
        ("cgroup-group-name", a.cgroup_group_name.as_deref()),
        ("privileged-uid", a.privileged_uid.as_deref()),
        ("privileged-gid", a.privileged_gid.as_deref()),
        ("cancel-syscalls", a.cancel_syscalls.as_deref()),
    ];
    let mut asked = Asked::default();
    for (name, value) in given {
        let Some(value) = value else { continue };
        apply(&mut asked, name, value).map_err(|e| {
            StartError::Usage(if value.is_empty() {
                format!("--{name}: {e}")
            } else {
                format!("--{name} {value:?}: {e}")
            })
        })?;
    }
    if asked.pivot_root && asked.chroot.is_none() {
        return Err(StartError::Usage(
            "--pivot-root needs --chroot, as in the original".into(),
        ));
    }
    if asked.sandbox && a.sandbox == Some(crate::sandbox::Mode::Off) {
        return Err(StartError::Usage(
            "--sandbox=false contradicts the original's sandbox options given with it (--secure-splitting, --splitting, --seccomp-filter…): they turn the sandbox on".into(),
        ));
    }
    Ok(asked)
}

/// The options given on the command line as one layer of the configuration: `-W` and
/// `-D` as the directories; the short form's paths and the handler's words are the
/// caller's.
fn layer(a: Args) -> Result<Values, StartError> {
    let usage = |opt: &str, e: String| StartError::Usage(format!("--{opt}: {e}"));
    let user = |opt: &str, v: &Option<String>| {
        v.as_deref()
            .map(crate::config::parse_user)
            .transpose()
            .map_err(|e| usage(opt, e))
    };
    let group = |opt: &str, v: &Option<String>| {
        v.as_deref()
            .map(crate::config::parse_group)
            .transpose()
            .map_err(|e| usage(opt, e))
    };
    let flag = |given: bool| given.then_some(true);
    let paths = |l: Option<Vec<String>>| l.into_iter().flatten().map(PathBuf::from);
    let original = original_sandbox(&a)?;
    let _ = a.exit_on_sync_skip; // nothing is ever skipped
    let _ = a.sync_on_quit; // what every stop does anyway
    let split_brain_keep = match a.split_brain_keep.as_deref() {
        None => None,
        Some("local") => Some(crate::pair::Decision::KeepLocal),
        Some("peer") => Some(crate::pair::Decision::KeepPeer),
        Some(k) => {
            return Err(StartError::Usage(format!(
                "--split-brain-keep {k:?}: expected local or peer"
            )))
        }
    };
    Ok(Values {
        // The original's privileged-uid/-gid are the default of these.
        sync_handler_uid: match user("sync-handler-uid", &a.sync_handler_uid)? {
            None => user("privileged-uid", &original.privileged_uid)?,
            given => given,
        },
        sync_handler_gid: match group("sync-handler-gid", &a.sync_handler_gid)? {
            None => group("privileged-gid", &original.privileged_gid)?,
            given => given,
        },
        uid: user("uid", &a.uid)?,
        gid: group("gid", &a.gid)?,
        modification_signature: a
            .modification_signature
            .as_deref()
            .map(crate::signature::parse)
            .transpose()
            .map_err(|e| usage("modification-signature", e))?,
        ignore_exitcodes: if a.ignore_exitcode.is_empty() {
            None
        } else {
            Some(crate::config::parse_exitcodes(&a.ignore_exitcode).map_err(StartError::Usage)?)
        },
        initial: initial(a.skip_initialsync, a.only_initialsync)?,
        split_brain_keep,
        src: a.watch_dir,
        dsts: (!a.destination_dir.is_empty()).then_some(a.destination_dir),
        mode: a.mode,
        sync_handler: a.sync_handler,
        handler_args: None,
        synclist_simplify: flag(a.synclist_simplify),
        have_recursive_sync: flag(a.have_recursive_sync),
        lists_nul: flag(a.lists_nul),
        rsync_prefer_include: flag(a.rsync_prefer_include),
        ignore_failures: flag(a.ignore_failures),
        dump_dir: a.dump_dir,
        ssh_command: a.ssh_command,
        ssh_identity: a.ssh_identity,
        ssh_port: a.ssh_port,
        ssh_options: a.ssh_option,
        rsync_options: a.rsync_option.into_iter().map(Into::into).collect(),
        rsync_password_file: a.rsync_password_file,
        allow_empty_source: flag(a.allow_empty_source),
        strict_modes: a.strict_modes,
        sandbox: a.sandbox,
        sandbox_min: original.sandbox.then_some(crate::sandbox::Mode::On),
        chroot: original.chroot.map(PathBuf::from),
        sandbox_network: a.sandbox_network.or(original.network),
        sandbox_extra: crate::sandbox::Extra {
            read: paths(original.read).chain(a.sandbox_read).collect(),
            write: a.sandbox_write,
            exec: paths(original.exec).chain(a.sandbox_exec).collect(),
        },
        preserve_capabilities: a
            .preserve_capabilities
            .as_deref()
            .map(crate::sandbox::parse_preserved)
            .transpose()
            .map_err(|e| usage("preserve-capabilities", e))?,
        inherit_capabilities: a.inherit_capabilities,
        progress: a.progress,
        wait_for_close: a.wait_for_close,
        verify_interval: a.verify_interval,
        pair: None,
        delay_collect: a.delay_collect,
        delay_collect_bigfile: a.delay_collect_bigfile,
        delay_sync: a.delay_sync,
        threshold_bigfile: a.threshold_bigfile,
        rules: a.rules_file.map(RulesFrom::File),
        globs: (!a.include.is_empty() || !a.exclude.is_empty())
            .then(|| (a.include, a.exclude, PathBuf::from("the command line"))),
        label: a.label,
        rsync_inclimit: a.rsync_inclimit,
        status_file: a.status_file,
        debug: a.debug,
        debug_min: a.verbose.then_some(1),
        pid_file: a.pid_file,
        timeout_sync: a.timeout_sync,
        pre_exit_hook: a.pre_exit_hook,
        exit_hook: a.exit_hook,
        standby_file: a.standby_file,
        retries: a.retries,
        one_file_system: flag(a.one_file_system || a.exclude_mount_points),
        monitor: a.monitor,
        full_initialsync: flag(a.full_initialsync),
        initial_from: a.initial_sync,
        index_dir: a.index_dir.map(|d| (d, false)),
        exit_on_no_events: flag(a.exit_on_no_events),
        max_iterations: a.max_iterations,
        quiet: flag(a.quiet),
        output: a.output,
        background: a.background.map(|b| b != 0),
        lists_dir: a.lists_dir,
        dont_unlink_lists: flag(a.dont_unlink_lists),
        threading: a.threading,
        max_parallel_syncs: a.max_parallel_syncs.map(|n| n as usize),
    })
}

/// `--unit-instance NAME` becomes `--profile NAME` or `-H FILE -K NAME`
/// ([`crate::config::unit_instance`] decides); the journal is the default output.
fn unit_instance(a: &mut Args, name: String) -> Result<(), StartError> {
    use crate::config::unit_instance::{choose, shadow_warning, Choice, DEFAULT_CONFIG_FILE};
    if a.profile.is_some() || a.config_block.is_some() {
        return Err(StartError::Usage(
            "--unit-instance chooses the profile or the block itself; do not give --profile or -K too".into(),
        ));
    }
    if !a.paths.is_empty() || a.watch_dir.is_some() || !a.destination_dir.is_empty() {
        return Err(StartError::Usage(
            "--unit-instance takes the directories from the profile or the block; do not give SRC/DST or -W/-D too".into(),
        ));
    }
    let profiles = crate::profile::profiles_dir(a.profiles_dir.as_deref());
    let ini = a
        .config_file
        .take()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
    match choose(&profiles, &ini, &name)? {
        Choice::Profile { shadowed } => {
            if let Some(file) = shadowed {
                crate::logger::warn_soon(shadow_warning(&profiles, &file, &name));
            }
            a.profile = Some(name);
        }
        Choice::Block { file } => {
            a.profiles_dir = None;
            a.config_file = Some(file);
            a.config_block = Some(name);
        }
    }
    if a.output.is_none() {
        a.output = Some(crate::logger::Output::Journal);
    }
    Ok(())
}

/// The command line's layers, merged in one order (a profile or an INI block below, the
/// options on top), built into the worker's configuration.
fn to_config(mut a: Args) -> Result<Config, StartError> {
    let usage = |m: &str| StartError::Usage(m.into());
    if a.strict_modes == Some(false) {
        // Before any file is read: a key inside a file cannot vouch for that file.
        crate::strict::disable();
    }
    if let Some(name) = a.unit_instance.take() {
        unit_instance(&mut a, name)?;
    }
    if let Some(name) = a.profile.take() {
        if a.config_file.is_some() {
            return Err(usage("give either --profile or -H, not both"));
        }
        if !a.paths.is_empty() || a.watch_dir.is_some() || !a.destination_dir.is_empty() {
            return Err(usage(
                "--profile takes the directories from the profile; do not give SRC/DST or -W/-D too",
            ));
        }
        let dir = crate::profile::profiles_dir(a.profiles_dir.as_deref());
        let (r, file) = crate::profile_config::resolve_in(&dir, &name, a.label.as_deref())?;
        let profile = crate::profile_config::layer(&r, &file)?;
        // `-l` named the template's instance; the label is the profile's.
        a.label = None;
        let options = layer(a)?;
        return build(options.over(profile), Defaults::PROFILE)
            .map_err(|e| crate::profile_config::in_file(e, &file));
    }
    if a.config_file.is_none() && a.config_block.is_some() {
        // -K alone: the original's files, ~/.clsync.conf or /etc/clsync/clsync.conf.
        a.config_file = Some(crate::legacy::default_config_file().ok_or_else(|| {
            usage("-K BLOCK without -H FILE reads ~/.clsync.conf or /etc/clsync/clsync.conf, and neither exists")
        })?);
    }
    match a.config_file.take() {
        Some(f) if f.as_os_str() != crate::legacy::NULL_CONFIG => {
            // As in the original, the command line wins over the block; -W and -D too.
            let block = a.config_block.take().unwrap_or_else(|| "default".into());
            let ini = crate::profile_config::legacy_layer(
                &f,
                &block,
                a.label.as_deref(),
                (
                    a.watch_dir.as_deref(),
                    a.destination_dir.first().map(PathBuf::as_path),
                ),
            )?;
            if !a.paths.is_empty() {
                return Err(usage(
                    "with -H give the directories as -W/-D (or in the file), not as SRC DST",
                ));
            }
            let options = layer(a)?;
            return build(options.over(ini), Defaults::ORIGINAL)
                .map_err(|e| crate::profile_config::in_file(e, &f));
        }
        _ => {}
    }
    if a.config_block.is_some() {
        return Err(usage("-K/--config-block needs -H FILE"));
    }
    if a.profiles_dir.is_some() {
        return Err(usage("--profiles-dir needs --profile NAME"));
    }
    if a.split_brain_keep.is_some() {
        return Err(usage("--split-brain-keep needs --profile with a peer"));
    }
    let classic = a.mode.is_some() || a.watch_dir.is_some() || !a.destination_dir.is_empty();
    let mut handler_args = None;
    let paths = std::mem::take(&mut a.paths);
    let (src, dsts) = if classic {
        if !paths.is_empty() {
            // The words after `--` replace the mode's default arguments; a single empty
            // word brings the defaults back (as in the original).
            let words: Vec<std::ffi::OsString> =
                paths.into_iter().map(PathBuf::into_os_string).collect();
            if !(words.len() == 1 && words[0].is_empty()) {
                handler_args = Some(words);
            }
        }
        let src = a
            .watch_dir
            .take()
            .ok_or_else(|| usage("-W/--watch-dir is required"))?;
        (src, std::mem::take(&mut a.destination_dir))
    } else {
        if paths.len() < 2 {
            return Err(StartError::Usage(format!(
                "expected SRC and DST, got {} path{} (usage: clsync SRC DST [DST...], or clsync -M rsyncdirect -W SRC -D DST)",
                paths.len(),
                if paths.len() == 1 { "" } else { "s" }
            )));
        }
        let mut p = paths.into_iter();
        let src = p.next().expect("two");
        (src, p.collect())
    };
    let mut options = layer(a)?;
    options.src = Some(src);
    options.dsts = Some(dsts);
    options.handler_args = handler_args;
    // The original's defaults in its classic form; the short form's are quick.
    build(
        options,
        if classic {
            Defaults::ORIGINAL
        } else {
            Defaults::SHORT
        },
    )
}

#[cfg(test)]
mod tests;
