/*!
The worker's settings, value parsers, and the checks made before anything is touched.

Everything a user can get wrong is checked here, before the destination is created or
rsync is run, so a mistake costs an error message and never a deleted file. Each
problem maps to a documented exit code ([`StartError::exit_code`]).

The layers a configuration comes from live beside it: the command line ([`cli`]), the
TOML profiles ([`profile`], [`profile_config`]) and the original's INI file ([`legacy`]);
[`build`] merges them and makes the `Config`, and [`preflight`] checks it against the
file system before anything is touched.
*/

pub(crate) mod build;
pub mod cli;
pub mod legacy;
pub(crate) mod preflight;
pub mod profile;
pub mod profile_config;
pub mod unit_instance;

pub use preflight::{
    check_lists_dir, check_overlap, dir_is_empty, dst_is_empty, empty_source_message,
    find_executable, preflight, recheck_destination,
};

use crate::batcher::Delays;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The worker's settings after parsing.
#[derive(Debug, Clone)]
pub struct Config {
    pub src: PathBuf,
    pub dst: PathBuf,
    /// The sync handler as given (a bare name is looked up in `$PATH`): rsync in
    /// rsyncdirect mode, a program or a shared object in the other modes.
    pub rsync: PathBuf,
    /// The sync-handler mode.
    pub mode: crate::sync::handler::Mode,
    /// The handler's argument words (`sync-handler-args`, or after `--`); `None`: the
    /// mode's defaults.
    pub handler_args: Option<Vec<OsString>>,
    /// Shell lists hold the relative path alone (`synclist-simplify`).
    pub synclist_simplify: bool,
    /// Recursive syncs go to the handler as one directory (`have-recursive-sync`).
    pub have_recursive_sync: bool,
    /// NUL-terminated list records, for handlers that opt in (`lists-nul`).
    pub lists_nul: bool,
    /// rsync modes: include lists only, recursive syncs walked (`rsync-prefer-include`).
    pub rsync_prefer_include: bool,
    /// A failed sync neither counts towards `retries` nor stops the worker; its paths
    /// stay queued (`ignore-failures`).
    pub ignore_failures: bool,
    /// The handler runs as this user and group (`sync-handler-uid`, `-gid`).
    pub sync_handler_uid: Option<u32>,
    pub sync_handler_gid: Option<u32>,
    /// The worker drops to this user and group once the tree is watched (`uid`, `gid`).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Skip paths whose stat fields (this mask of [`crate::signature`] bits) did not
    /// change since their last sync (`modification-signature`).
    pub modification_signature: u32,
    /// SIGUSR1/SIGIO also write the state as JSON into this directory (`dump-dir`).
    pub dump_dir: Option<PathBuf>,
    /// More destinations besides `dst` (each with its own queue and retries).
    pub more_dsts: Vec<PathBuf>,
    /// How ssh destinations are reached.
    pub ssh: crate::dest::Ssh,
    /// More rsync options (`--bwlimit=…`, `--compress`, `--inplace`, …).
    pub rsync_options: Vec<OsString>,
    /// `--password-file` for rsync daemon destinations.
    pub rsync_password_file: Option<PathBuf>,
    /// Report the progress of full syncs (rsync `--info=progress2`, which costs rsync
    /// about a sixth of its time); `None`: only for trees of [`PROGRESS_MIN_DIRS`]
    /// directories or more, where an initial sync takes long enough to need it.
    pub progress: Option<bool>,
    /// A file written but not closed yet is synced once it is closed (IN_CLOSE_WRITE), or
    /// after this long while it stays open (`wait-for-close`; `None`: off).
    pub wait_for_close: Option<Duration>,
    /// Every this often, a full rsync run checks each destination against the source
    /// and repairs what drifted, reporting what it repaired (`verify-interval`).
    pub verify_interval: Option<Duration>,
    /// A failover pair with the destination (the profile's `peer`).
    pub pair: Option<crate::pair::PairSettings>,
    /// Sync even when the watch directory is empty (by default an empty source is taken
    /// for an unmounted disk: nothing is deleted at the destinations).
    pub allow_empty_source: bool,
    /// Refuse handlers, hooks, rules files and other programs that someone besides root
    /// (or the running user) may change ([`crate::strict`]); `strict-modes = false` turns
    /// it off.
    pub strict_modes: bool,
    /// The worker confines itself and what it runs ([`crate::sandbox`]; `sandbox`).
    pub sandbox: crate::sandbox::Mode,
    /// The network a confined worker keeps (`sandbox-network`).
    pub sandbox_network: crate::sandbox::Network,
    /// Paths a confined worker is granted besides its own (`sandbox-read/-write/-exec`).
    pub sandbox_extra: crate::sandbox::Extra,
    /// The root the worker changes to once the tree is watched (the original's
    /// `--chroot`; every path it uses must be at the same place inside).
    pub chroot: Option<PathBuf>,
    /// Capabilities kept across the drop to `uid` (`preserve-capabilities`, `-C`).
    pub preserve_capabilities: Vec<caps::Capability>,
    /// Whether the handlers inherit them (`inherit-capabilities`).
    pub inherit_capabilities: crate::sandbox::Inherit,
    /// The command line this configuration came from: SIGHUP parses it again (re-reading
    /// the profile or configuration file) and applies what can change at run time.
    pub reload_args: Option<Vec<OsString>>,
    pub delays: Delays,
    /// 0 disables the big-file queue.
    pub threshold_bigfile: u64,
    pub rules_file: Option<PathBuf>,
    /// Rules given inline (a profile's `rules`), with the file that holds them.
    pub rules_inline: Option<(Vec<String>, PathBuf)>,
    /// A profile's `include` and `exclude` globs, with the file that holds them.
    pub globs: Option<(Vec<String>, Vec<String>, PathBuf)>,
    pub label: Option<String>,
    pub rsync_inclimit: usize,
    pub status_file: Option<PathBuf>,
    pub debug: u8,
    /// Written at start, removed at exit; a live pid in it refuses the start.
    pub pid_file: Option<PathBuf>,
    /// Exit codes of rsync that are not failures (besides 0 and 24).
    pub ignore_exitcodes: Vec<i32>,
    /// A sync running longer is killed and fails (`None`: no limit).
    pub timeout_sync: Option<Duration>,
    pub initial: Initial,
    /// Run as `HOOK LABEL` when a stop is requested, before the final sync.
    pub pre_exit_hook: Option<PathBuf>,
    /// Run as `HOOK LABEL` when the worker exits (after the final sync, or a failure).
    pub exit_hook: Option<PathBuf>,
    /// While this file exists no sync runs; events keep queuing.
    pub standby_file: Option<PathBuf>,
    /// Give up after this many failed tries in a row and exit with rsync's exit code;
    /// 0 (the default): retry forever, keeping the paths queued.
    pub retries: u32,
    /// Do not cross into other file systems (`one-file-system`, `exclude-mount-points`):
    /// a mount point is synced as an empty directory, its content is not watched or synced.
    pub one_file_system: bool,
    /// How the tree is watched (`monitor`).
    pub monitor: crate::watch::Monitor,
    /// Ignore the rules' excludes on the initial sync (`full-initialsync`).
    pub full_initialsync: bool,
    /// Where the initial sync starts from (`initial-sync`).
    pub initial_from: InitialFrom,
    /// The directory of this instance's index of what each destination received
    /// (`index-dir`; the profile's default is `/var/lib/clsync/index/INSTANCE`).
    pub index_dir: Option<PathBuf>,
    /// `index_dir` is the profile's default, not given: a failure to make it is a
    /// warning (the worker runs without an index), not a refusal.
    pub index_dir_default: bool,
    /// After the initial sync, sync what is queued and exit when nothing is left.
    pub exit_on_no_events: bool,
    /// Exit after this many sync iterations (the initial sync counts); 0: no limit.
    pub max_iterations: u32,
    /// Errors only in the log.
    pub quiet: bool,
    pub output: crate::logger::Output,
    /// Detach (fork, setsid, stdio to /dev/null) once the tree is watched.
    pub background: bool,
    /// Where list files go (default: a private temporary directory).
    pub lists_dir: Option<PathBuf>,
    /// Keep list files after each run.
    pub dont_unlink_lists: bool,
    /// Parallel syncs (`threading`: off, safe, full).
    pub threading: crate::batcher::Threading,
    /// How many syncs may run at once with threading safe or full.
    pub max_parallel_syncs: usize,
}

/// From this many watched directories on, full syncs report their progress by default.
pub const PROGRESS_MIN_DIRS: usize = 50_000;

/// The default of `max-parallel-syncs`.
pub const MAX_PARALLEL_SYNCS: usize = 4;

/// Where the initial sync starts from (`initial-sync`, `--initial-sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialFrom {
    /// From the index when a usable one exists, else full.
    #[default]
    Auto,
    /// From the index (full when there is no usable one, said in the log).
    Index,
    /// A full rsync of the whole tree, whatever the index says.
    Full,
}

impl std::str::FromStr for InitialFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "index" => Ok(InitialFrom::Index),
            "full" => Ok(InitialFrom::Full),
            _ => Err(format!(
                "invalid initial-sync {s:?} (expected index or full)"
            )),
        }
    }
}

/// The profile's `index-dir` when none is given (one subdirectory per instance).
pub const DEFAULT_INDEX_DIR: &str = "/var/lib/clsync/index";

/// What happens with the initial full sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Initial {
    /// Sync the whole tree, then mirror changes.
    #[default]
    Sync,
    /// Do not: only changes from now on are mirrored (`skip-initialsync`).
    Skip,
    /// Sync the whole tree and exit (`only-initialsync`).
    Only,
}

/// Parses `ignore-exitcode` values as the original: comma-separated codes, repeatable;
/// a `0` drops the codes given before it.
pub fn parse_exitcodes(values: &[String]) -> Result<Vec<i32>, String> {
    let mut out = Vec::new();
    for v in values {
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let code: i32 = part
                .parse()
                .map_err(|_| format!("invalid exit code {part:?} in {v:?}"))?;
            if code == 0 {
                out.clear();
            } else if !(1..=255).contains(&code) {
                return Err(format!(
                    "invalid exit code {code} in {v:?}: must be 1 to 255"
                ));
            } else {
                out.push(code);
            }
        }
    }
    Ok(out)
}

/// Resolves a user (name or number) for `uid` / `sync-handler-uid`.
pub fn parse_user(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!("unknown user {s:?}")),
        Err(e) => Err(format!("cannot look up user {s:?}: {e}")),
    }
}

/// Resolves a group (name or number) for `gid` / `sync-handler-gid`.
pub fn parse_group(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(s) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("unknown group {s:?}")),
        Err(e) => Err(format!("cannot look up group {s:?}: {e}")),
    }
}

pub use crate::exit::StartError;

/// Sorts every field of [`Config`] into one of two kinds and derives from that both
/// halves of a SIGHUP reload: [`Config::restart_needed_for`] compares the fields that are
/// fixed at start (built into rsync's argv, the watch, the privileges, the files opened),
/// and [`Config::reload_from`] assigns the others. The destructuring names every field
/// and has no `..`: a field added to `Config` but not sorted here does not compile, so a
/// setting can no longer be named as kept while replaced, or changed without effect and
/// unreported.
macro_rules! restart_or_reload {
    (restart: $($r:ident),* $(,)?; reload: $($l:ident),* $(,)?) => {
        impl Config {
            /// The settings that differ between `self` and `new` and can only change
            /// with a restart (SIGHUP keeps them as they are), by their option names.
            pub fn restart_needed_for(&self, new: &Config) -> Vec<String> {
                let mut v: Vec<&'static str> = Vec::new();
                $(if self.$r != new.$r { v.push(stringify!($r)); })*
                v.into_iter().map(option_name).collect()
            }

            /// SIGHUP: takes every setting a reload may change from `new`; those that
            /// need a restart stay as they are.
            pub fn reload_from(&mut self, new: Config) {
                let Config { $($r: _,)* $($l,)* } = new;
                $(self.$l = $l;)*
            }
        }
    };
}

restart_or_reload! {
    restart: src, dst, more_dsts, ssh, rsync_options, rsync_password_file, progress, pair,
        mode, rsync, handler_args, lists_dir, label, uid, gid, threading, max_parallel_syncs,
        one_file_system, monitor, pid_file, output, status_file, sync_handler_uid,
        sync_handler_gid, lists_nul, synclist_simplify, have_recursive_sync,
        rsync_prefer_include, background, initial, full_initialsync, dont_unlink_lists,
        initial_from, index_dir, index_dir_default,
        sandbox, sandbox_network, sandbox_extra, chroot, preserve_capabilities,
        inherit_capabilities;
    reload: ignore_failures, modification_signature, dump_dir, wait_for_close,
        verify_interval, allow_empty_source, strict_modes, reload_args, delays, threshold_bigfile,
        rules_file, rules_inline, globs, rsync_inclimit, debug, ignore_exitcodes,
        timeout_sync, pre_exit_hook, exit_hook, standby_file, retries, exit_on_no_events,
        max_iterations, quiet,
}

impl Config {
    /// With the sandbox on, the paths it granted at start (`dump-dir`, the rules file, the
    /// hooks) are fixed too: a changed one is set back in `new` and named, as a setting
    /// that takes a restart.
    pub fn keep_sandboxed_paths(&self, new: &mut Config) -> Vec<String> {
        let mut changed = Vec::new();
        if !self.sandbox.on() {
            return changed;
        }
        let mut keep = |name: &str, old: &Option<PathBuf>, new: &mut Option<PathBuf>| {
            if old != new {
                changed.push(format!("{name} (sandboxed)"));
                new.clone_from(old);
            }
        };
        keep("dump-dir", &self.dump_dir, &mut new.dump_dir);
        keep("rules-file", &self.rules_file, &mut new.rules_file);
        keep("pre-exit-hook", &self.pre_exit_hook, &mut new.pre_exit_hook);
        keep("exit-hook", &self.exit_hook, &mut new.exit_hook);
        changed
    }
}

/// The option a [`Config`] field is set by.
fn option_name(field: &str) -> String {
    match field {
        "src" => "watch-dir".to_string(),
        "dst" => "destination-dir".to_string(),
        "more_dsts" => "destinations".to_string(),
        "rsync" => "sync-handler".to_string(),
        "handler_args" => "sync-handler-args".to_string(),
        "initial" => "skip-initialsync/only-initialsync".to_string(),
        "pair" => "peer".to_string(),
        f => f.replace('_', "-"),
    }
}

impl Config {
    /// Every destination, the first one first.
    #[must_use]
    pub fn destinations(&self) -> Vec<crate::dest::Dest> {
        std::iter::once(&self.dst)
            .chain(&self.more_dsts)
            .map(|d| crate::dest::Dest::parse(d.as_os_str()))
            .collect()
    }

    /// Whether a destination is remote or there are several: then a failed sync is
    /// retried forever by default (a node that is down comes back), not given up.
    #[must_use]
    pub fn networked(&self) -> bool {
        !self.more_dsts.is_empty() || self.destinations().iter().any(|d| d.is_remote())
    }

    /// After how many failed tries in a row the worker gives up (0: never). A one-shot
    /// (`only-initialsync`) whose retries would be forever gives up after its first
    /// failure: nothing else would end it, and whoever runs it needs its exit code.
    #[must_use]
    pub fn give_up_after(&self) -> u32 {
        if self.initial == Initial::Only && self.retries == 0 {
            1
        } else {
            self.retries
        }
    }

    /// Checks the combinations of mode and options that make no sense (the original
    /// refuses them too).
    pub fn check_mode(&self) -> Result<(), String> {
        use crate::sync::handler::Mode;
        let m = self.mode;
        if self.have_recursive_sync && m.is_rsync() {
            return Err(format!(
                "have-recursive-sync does not apply to mode {}: rsync lists are recursive already",
                m.name()
            ));
        }
        if self.rsync_prefer_include && !m.is_rsync() {
            return Err(format!(
                "rsync-prefer-include applies to the rsync modes only, not to {}",
                m.name()
            ));
        }
        if self.synclist_simplify && m.is_rsync() {
            return Err(format!(
                "synclist-simplify does not apply to mode {} (it is for shell lists)",
                m.name()
            ));
        }
        if m.is_so() && self.handler_args.as_ref().is_some_and(|a| !a.is_empty()) {
            return Err(format!(
                "mode {} calls a shared object: it takes no sync-handler arguments",
                m.name()
            ));
        }
        // The default arguments of rsyncdirect and direct name the destination; the
        // user's own arguments may name it themselves.
        let needs_dst =
            matches!(m, Mode::RsyncDirect | Mode::Direct) && self.handler_args.is_none();
        if needs_dst && self.dst.as_os_str().is_empty() {
            return Err(format!(
                "mode {} needs a destination directory (-D/--destination-dir)",
                m.name()
            ));
        }
        if !self.more_dsts.is_empty() && (m != Mode::RsyncDirect || self.handler_args.is_some()) {
            return Err(format!(
                "several destinations need mode rsyncdirect with its own arguments (mode {} is given {} destinations)",
                m.name(),
                self.more_dsts.len() + 1
            ));
        }
        if self.rsync.as_os_str().is_empty() {
            return Err(format!(
                "mode {} needs a sync handler (-S/--sync-handler: {})",
                m.name(),
                if m.is_so() {
                    "the shared object to load"
                } else {
                    "the program to run"
                }
            ));
        }
        Ok(())
    }

    /// The filter rules: the rules file or inline rules, behind the profile's globs.
    /// Called at start and again on SIGHUP.
    pub fn load_rules(&self) -> Result<crate::rules::Rules, crate::rules::RulesError> {
        use crate::rules::Rules;
        let rules = match (&self.rules_file, &self.rules_inline) {
            (Some(f), _) => {
                crate::strict::check_named_if(self.strict_modes, f, "rules file")
                    .map_err(|message| crate::rules::RulesError::Unsafe { message })?;
                Rules::load(f)?
            }
            (None, Some((lines, file))) => Rules::parse(&lines.join("\n"), file)?,
            (None, None) => Rules::none(),
        };
        let rules = rules.walk_apart(!self.mode.is_rsync());
        match &self.globs {
            Some((include, exclude, file)) => rules.with_globs(include, exclude, file),
            None => Ok(rules),
        }
    }
}

/// The longest duration any setting takes: 100 years (of 365.25 days, as humantime's
/// `100y`). Longer ones mean "never" in
/// practice, and a deadline that far away would overflow the clock's arithmetic (a
/// panic); they are refused as usage errors instead.
pub const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// Parses a duration: plain seconds (`30`, `0.5`) or humantime (`200ms`, `2m`), at most
/// [`MAX_DURATION`]. Every duration of the command line, of profiles (numbers too) and of
/// the original's INI files goes through here, so the cap and the messages are the same
/// everywhere.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = if let Ok(secs) = t.parse::<f64>() {
        if secs.is_nan() || secs.is_infinite() {
            return Err(format!("invalid duration {s:?}: not a finite number"));
        }
        if secs < 0.0 {
            return Err(format!("invalid duration {s:?}: must not be negative"));
        }
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(too_long(s));
        }
        Duration::try_from_secs_f64(secs).map_err(|_| too_long(s))?
    } else {
        humantime::parse_duration(t).map_err(|e| {
            format!("invalid duration {s:?}: {e} (use seconds like 30 or 0.5, or 200ms, 2m, 1h)")
        })?
    };
    if d > MAX_DURATION {
        return Err(too_long(s));
    }
    Ok(d)
}

fn too_long(s: &str) -> String {
    format!("invalid duration {s:?}: longer than 100 years (the longest accepted)")
}

/// Parses a size: plain bytes, or a number with a binary unit: `K`/`KiB`, `M`/`MiB`,
/// `G`/`GiB`, `T`/`TiB` (all powers of 1024). Decimal units (`KB`, `MB`…) are rejected as
/// ambiguous rather than guessed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected bytes or a number with KiB, MiB, GiB, TiB")
    })?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        "KB" | "kB" | "MB" | "GB" | "TB" => {
            return Err(format!(
                "invalid size {s:?}: decimal units are ambiguous here; write {num}{}iB (binary) or plain bytes",
                &unit.trim()[..1].to_uppercase()
            ))
        }
        u => return Err(format!("invalid size {s:?}: unknown unit {u:?} (use KiB, MiB, GiB, TiB)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandboxed_worker_keeps_the_paths_it_granted_on_reload() {
        let parse = |extra: &[&str]| {
            let mut a: Vec<std::ffi::OsString> = ["clsync", "-W", "/srv/a", "-D", "/srv/b"]
                .iter()
                .map(Into::into)
                .collect();
            a.extend(extra.iter().map(Into::into));
            crate::cli::parse(a).unwrap()
        };
        let old = parse(&["--sandbox", "--exit-hook", "/bin/true"]);
        let mut new = parse(&["--sandbox", "--exit-hook", "/bin/false"]);
        assert_eq!(
            old.keep_sandboxed_paths(&mut new),
            ["exit-hook (sandboxed)"]
        );
        assert_eq!(new.exit_hook, old.exit_hook);
        let old = parse(&["--exit-hook", "/bin/true"]);
        let mut new = parse(&["--exit-hook", "/bin/false"]);
        assert!(old.keep_sandboxed_paths(&mut new).is_empty());
        assert_eq!(
            new.exit_hook.as_deref(),
            Some(std::path::Path::new("/bin/false"))
        );
        let mut on = parse(&["--sandbox"]);
        assert_eq!(parse(&[]).restart_needed_for(&on), ["sandbox"]);
        on.reload_from(parse(&[]));
        assert!(on.sandbox.on(), "sandbox is kept until a restart");
    }

    #[test]
    fn exit_codes_as_the_original() {
        assert_eq!(parse_exitcodes(&["23,24".into()]), Ok(vec![23, 24]));
        assert_eq!(parse_exitcodes(&["23".into(), "0,24".into()]), Ok(vec![24]));
        assert!(parse_exitcodes(&["x".into()]).is_err());
        assert!(parse_exitcodes(&["300".into()]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("abc").unwrap_err().contains("\"abc\""));
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn durations_longer_than_100_years_are_refused_not_a_panic() {
        for s in [
            "1e30",
            "1e300",
            "1e20",
            "inf",
            "NaN",
            "3155760001",
            "200y",
            "1e309",
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains(&format!("{s:?}")), "{s}: {e}");
        }
        assert_eq!(parse_duration("3155760000"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("100y"), Ok(MAX_DURATION));
        assert!(parse_duration("99y").is_ok());
    }

    #[test]
    fn sizes_are_binary_and_decimal_units_rejected() {
        assert_eq!(parse_size("134217728"), Ok(134217728));
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("128M"), Ok(128 << 20));
        assert_eq!(parse_size("16KiB"), Ok(16 << 10));
        assert!(parse_size("128MB").unwrap_err().contains("128MiB"));
        assert!(parse_size("12x").unwrap_err().contains("unknown unit"));
        assert!(parse_size("").is_err());
    }
}
