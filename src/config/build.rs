/*!
The one place a [`Config`] is made: the layers' values, merged, validated and completed
with the defaults.

A configuration comes in layers: a TOML profile ([`super::profile_config::layer`]) or a
block of the original's INI file ([`super::profile_config::legacy_layer`]), and the
command line on top ([`super::cli`]). Each layer is first turned into [`Values`], where
every setting is `None` unless the layer gives it; [`Values::over`] puts one layer on
another (the upper one wins), and [`build`] checks what only the merged values can tell
(the mode against its options, the label) and fills in the defaults of the form in use
([`Defaults`]). So a setting is read from each layer once and turned into the `Config`
once: a check added here applies to every way of starting the worker.
*/

use super::{Config, Initial, StartError};
use crate::batcher::Delays;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Where the filter rules come from.
#[derive(Debug, Clone, PartialEq)]
pub enum RulesFrom {
    /// A rules file (`rules-file`, `-R`).
    File(PathBuf),
    /// Inline rules (a profile's `rules`), with the file that holds them.
    Inline(Vec<String>, PathBuf),
}

/// The settings one layer gives (`None`: the layer says nothing of it), already parsed:
/// the layer reported its own mistakes with its own words (a file and key, or an option).
#[derive(Debug, Clone, Default)]
pub struct Values {
    pub src: Option<PathBuf>,
    /// Every destination, the first one first.
    pub dsts: Option<Vec<PathBuf>>,
    pub mode: Option<crate::sync::handler::Mode>,
    pub sync_handler: Option<PathBuf>,
    pub handler_args: Option<Vec<OsString>>,
    pub synclist_simplify: Option<bool>,
    pub have_recursive_sync: Option<bool>,
    pub lists_nul: Option<bool>,
    pub rsync_prefer_include: Option<bool>,
    pub ignore_failures: Option<bool>,
    pub sync_handler_uid: Option<u32>,
    pub sync_handler_gid: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub modification_signature: Option<u32>,
    pub dump_dir: Option<PathBuf>,
    pub ssh_command: Option<String>,
    pub ssh_identity: Option<PathBuf>,
    pub ssh_port: Option<u16>,
    /// Added to those of the layer below (not replacing them).
    pub ssh_options: Vec<String>,
    /// Added to those of the layer below (not replacing them).
    pub rsync_options: Vec<OsString>,
    pub rsync_password_file: Option<PathBuf>,
    pub allow_empty_source: Option<bool>,
    pub strict_modes: Option<bool>,
    pub sandbox: Option<crate::sandbox::Mode>,
    /// At least this sandbox mode, whatever the layers say (the original's sandbox
    /// options on the command line turn it on; `"required"` stays required).
    pub sandbox_min: Option<crate::sandbox::Mode>,
    pub sandbox_network: Option<crate::sandbox::Network>,
    /// The original's `--chroot` (command line only).
    pub chroot: Option<PathBuf>,
    /// Added to those of the layer below (not replacing them).
    pub sandbox_extra: crate::sandbox::Extra,
    pub preserve_capabilities: Option<Vec<caps::Capability>>,
    pub inherit_capabilities: Option<crate::sandbox::Inherit>,
    pub progress: Option<bool>,
    /// `Some(0)` turns it off (as does leaving it unset everywhere).
    pub wait_for_close: Option<Duration>,
    pub verify_interval: Option<Duration>,
    pub pair: Option<crate::pair::PairSettings>,
    /// How a failover pair's split-brain is resolved for this start (`--split-brain-keep`).
    pub split_brain_keep: Option<crate::pair::Decision>,
    pub delay_collect: Option<Duration>,
    pub delay_collect_bigfile: Option<Duration>,
    pub delay_sync: Option<Duration>,
    pub threshold_bigfile: Option<u64>,
    pub rules: Option<RulesFrom>,
    pub globs: Option<(Vec<String>, Vec<String>, PathBuf)>,
    pub label: Option<String>,
    pub rsync_inclimit: Option<usize>,
    pub status_file: Option<PathBuf>,
    pub debug: Option<u8>,
    /// At least this debug level (`-v`), whatever the layers say.
    pub debug_min: Option<u8>,
    pub pid_file: Option<PathBuf>,
    pub ignore_exitcodes: Option<Vec<i32>>,
    pub timeout_sync: Option<Duration>,
    pub initial: Option<Initial>,
    pub pre_exit_hook: Option<PathBuf>,
    pub exit_hook: Option<PathBuf>,
    pub standby_file: Option<PathBuf>,
    pub retries: Option<u32>,
    pub one_file_system: Option<bool>,
    pub monitor: Option<crate::watch::Monitor>,
    pub full_initialsync: Option<bool>,
    pub initial_from: Option<super::InitialFrom>,
    /// The instance's index directory, and whether it is the profile's default.
    pub index_dir: Option<(PathBuf, bool)>,
    pub exit_on_no_events: Option<bool>,
    pub max_iterations: Option<u32>,
    pub quiet: Option<bool>,
    pub output: Option<crate::logger::Output>,
    pub background: Option<bool>,
    pub lists_dir: Option<PathBuf>,
    pub dont_unlink_lists: Option<bool>,
    pub threading: Option<crate::batcher::Threading>,
    pub max_parallel_syncs: Option<usize>,
}

/// Field-by-field `upper.x.or(lower.x)`, with the listed exceptions done by hand. The
/// destructuring has no `..`: a field added to [`Values`] but not here does not compile.
macro_rules! over_fields {
    ($upper:expr, $lower:ident; $($f:ident),* ; $($by_hand:ident),* $(,)?) => {{
        let Values { $($f,)* $($by_hand,)* } = $upper;
        (Values { $($f: $f.or($lower.$f),)* ..Values::default() }, ($($by_hand,)*))
    }};
}

impl Values {
    /// These values on top of `lower`: each one set here wins. Lists of extra options
    /// add to those below. A mode given here without a handler drops the handler below
    /// when the mode changes (it was that mode's handler), and a rules file given here
    /// replaces inline rules below.
    #[must_use]
    pub fn over(self, lower: Values) -> Values {
        let mode_changed = self
            .mode
            .is_some_and(|m| m != lower.mode.unwrap_or_default());
        let (mut v, (sync_handler, ssh_options, rsync_options, rules, sandbox_extra)) = over_fields!(
            self, lower;
            src, dsts, mode, handler_args, synclist_simplify, have_recursive_sync, lists_nul,
            rsync_prefer_include, ignore_failures, sync_handler_uid, sync_handler_gid, uid,
            gid, modification_signature, dump_dir, ssh_command, ssh_identity, ssh_port,
            rsync_password_file, allow_empty_source, strict_modes, sandbox, progress, wait_for_close,
            verify_interval, pair, split_brain_keep, delay_collect, delay_collect_bigfile,
            delay_sync, threshold_bigfile, globs, label, rsync_inclimit, status_file, debug,
            debug_min, pid_file, ignore_exitcodes, timeout_sync, initial, pre_exit_hook,
            exit_hook, standby_file, retries, one_file_system, monitor, full_initialsync,
            initial_from, index_dir,
            exit_on_no_events, max_iterations, quiet, output, background, lists_dir,
            dont_unlink_lists, threading, max_parallel_syncs, sandbox_network, sandbox_min, chroot,
            preserve_capabilities, inherit_capabilities;
            sync_handler, ssh_options, rsync_options, rules, sandbox_extra,
        );
        v.sync_handler = match sync_handler {
            Some(h) => Some(h),
            None if mode_changed => None,
            None => lower.sync_handler,
        };
        v.ssh_options = lower.ssh_options;
        v.ssh_options.extend(ssh_options);
        v.rsync_options = lower.rsync_options;
        v.rsync_options.extend(rsync_options);
        v.rules = rules.or(lower.rules);
        v.sandbox_extra = sandbox_extra.after(lower.sandbox_extra);
        v
    }
}

/// The defaults that differ between the forms of starting the worker.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub delays: Delays,
    /// Failed tries before giving up (0: never) when nothing sets `retries` and the
    /// destinations are not networked ([`Config::networked`]: those retry forever).
    pub retries: u32,
    /// Whether the worker confines itself when nothing sets `sandbox`.
    pub sandbox: crate::sandbox::Mode,
}

impl Defaults {
    /// The original's: 30 s, 30 s, 1800 s, one try, not confined (the classic form, `-H`).
    pub const ORIGINAL: Defaults = Defaults {
        delays: Delays {
            collect: Duration::from_secs(30),
            collect_bigfile: Duration::from_secs(1800),
            sync: Duration::from_secs(30),
        },
        retries: 1,
        sandbox: crate::sandbox::Mode::Off,
    };

    /// A TOML profile's (what the manager and the units run): the original's, confined
    /// ([`crate::sandbox`]).
    pub const PROFILE: Defaults = Defaults {
        sandbox: crate::sandbox::Mode::On,
        ..Defaults::ORIGINAL
    };

    /// The short form's, for a person watching the result: 0.2 s from a change to the
    /// mirror (and the first change after a long initial copy is not held back); bursts
    /// are coalesced by the batcher, so short delays no longer mean many small runs.
    /// Failed syncs are retried forever.
    pub const SHORT: Defaults = Defaults {
        delays: Delays {
            collect: Duration::from_millis(200),
            collect_bigfile: Duration::from_secs(5),
            sync: Duration::from_millis(200),
        },
        retries: 0,
        sandbox: crate::sandbox::Mode::Off,
    };
}

/// Validates the merged values and builds the worker's [`Config`]: the only place one
/// is made. Errors are usage errors (exit 2), worded for the merged result.
pub fn build(v: Values, d: Defaults) -> Result<Config, StartError> {
    let usage = |m: String| StartError::Usage(m);
    let mode = v.mode.unwrap_or_default();
    let src = v.src.ok_or_else(|| usage("watch-dir is not set".into()))?;
    let mut dsts = v.dsts.unwrap_or_default().into_iter();
    let dst = dsts.next().unwrap_or_default();
    let mut pair = v.pair;
    if let Some(keep) = v.split_brain_keep {
        match pair.as_mut() {
            Some(p) => p.keep = Some(keep),
            None => {
                return Err(usage(
                    "--split-brain-keep needs a profile with a peer".into(),
                ))
            }
        }
    }
    let (rules_file, rules_inline) = match v.rules {
        // The original's README names /dev/zero as the rules file of a mirror without
        // rules: /dev/null and /dev/zero are no rules (reading /dev/zero never ends).
        Some(RulesFrom::File(f)) if crate::rules::is_empty_device(&f) => (None, None),
        Some(RulesFrom::File(f)) => (Some(f), None),
        Some(RulesFrom::Inline(lines, file)) => (None, Some((lines, file))),
        None => (None, None),
    };
    if v.initial_from == Some(super::InitialFrom::Index) && v.full_initialsync == Some(true) {
        return Err(usage(
            "initial-sync = index and full-initialsync exclude each other (full-initialsync syncs what the rules exclude, which the index leaves out)".into(),
        ));
    }
    let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
    let mut cfg = Config {
        src,
        dst,
        more_dsts: dsts.collect(),
        rsync: v
            .sync_handler
            .unwrap_or_else(|| PathBuf::from(mode.default_handler().unwrap_or_default())),
        mode,
        handler_args: v.handler_args,
        synclist_simplify: v.synclist_simplify == Some(true),
        have_recursive_sync: v.have_recursive_sync == Some(true),
        lists_nul: v.lists_nul == Some(true),
        rsync_prefer_include: v.rsync_prefer_include == Some(true),
        ignore_failures: v.ignore_failures == Some(true),
        sync_handler_uid: v.sync_handler_uid,
        sync_handler_gid: v.sync_handler_gid,
        uid: v.uid,
        gid: v.gid,
        modification_signature: v.modification_signature.unwrap_or(0),
        dump_dir: v.dump_dir,
        ssh: crate::dest::Ssh {
            command: v.ssh_command,
            identity: v.ssh_identity,
            port: v.ssh_port,
            options: v.ssh_options,
        },
        rsync_options: v.rsync_options,
        rsync_password_file: v.rsync_password_file,
        allow_empty_source: v.allow_empty_source == Some(true),
        strict_modes: v.strict_modes != Some(false),
        sandbox: match (v.sandbox.unwrap_or(d.sandbox), v.sandbox_min) {
            (crate::sandbox::Mode::Off, Some(min)) => min,
            (mode, _) => mode,
        },
        sandbox_network: v.sandbox_network.unwrap_or_default(),
        sandbox_extra: v.sandbox_extra,
        chroot: v.chroot,
        preserve_capabilities: v.preserve_capabilities.unwrap_or_default(),
        inherit_capabilities: v.inherit_capabilities.unwrap_or_default(),
        progress: v.progress,
        wait_for_close: nonzero(v.wait_for_close),
        verify_interval: nonzero(v.verify_interval),
        pair,
        reload_args: None,
        delays: Delays {
            collect: v.delay_collect.unwrap_or(d.delays.collect),
            collect_bigfile: v.delay_collect_bigfile.unwrap_or(d.delays.collect_bigfile),
            sync: v.delay_sync.unwrap_or(d.delays.sync),
        },
        threshold_bigfile: v.threshold_bigfile.unwrap_or(128 << 20),
        rules_file,
        rules_inline,
        globs: v.globs,
        label: v.label,
        rsync_inclimit: v.rsync_inclimit.unwrap_or(20000),
        status_file: v.status_file,
        debug: v.debug.unwrap_or(0).max(v.debug_min.unwrap_or(0)),
        pid_file: v.pid_file,
        ignore_exitcodes: v.ignore_exitcodes.unwrap_or_default(),
        timeout_sync: nonzero(v.timeout_sync),
        initial: v.initial.unwrap_or_default(),
        pre_exit_hook: v.pre_exit_hook,
        exit_hook: v.exit_hook,
        standby_file: v.standby_file,
        retries: v.retries.unwrap_or(d.retries),
        one_file_system: v.one_file_system == Some(true),
        monitor: v.monitor.unwrap_or_default(),
        full_initialsync: v.full_initialsync == Some(true),
        initial_from: v.initial_from.unwrap_or_default(),
        index_dir_default: v.index_dir.as_ref().is_some_and(|(_, d)| *d),
        index_dir: v.index_dir.map(|(d, _)| d),
        exit_on_no_events: v.exit_on_no_events == Some(true),
        max_iterations: v.max_iterations.unwrap_or(0),
        quiet: v.quiet == Some(true),
        output: v.output.unwrap_or_default(),
        background: v.background == Some(true),
        lists_dir: v.lists_dir,
        dont_unlink_lists: v.dont_unlink_lists == Some(true),
        threading: v.threading.unwrap_or_default(),
        max_parallel_syncs: v.max_parallel_syncs.unwrap_or(super::MAX_PARALLEL_SYNCS),
    };
    if v.retries.is_none() && cfg.networked() {
        // A node that is down comes back: keep the changes queued and retry.
        cfg.retries = 0;
    }
    // Whichever way the label came (-l, a profile, an INI block), it is checked here
    // once more, as what the worker will use.
    if let Some(l) = &cfg.label {
        super::profile::check_label(l).map_err(|e| usage(format!("label: {e}")))?;
    }
    cfg.check_mode().map_err(usage)?;
    crate::sandbox::check_network(&cfg).map_err(usage)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::handler::Mode;

    #[test]
    fn the_upper_layer_wins_and_extra_options_add_up() {
        let lower = Values {
            mode: Some(Mode::Shell),
            sync_handler: Some(PathBuf::from("/usr/local/bin/handler")),
            delay_sync: Some(Duration::from_secs(5)),
            ssh_options: vec!["-oA=1".into()],
            rsync_options: vec!["--compress".into()],
            rules: Some(RulesFrom::Inline(
                vec!["-f^x".into()],
                PathBuf::from("p.toml"),
            )),
            ..Values::default()
        };
        let upper = Values {
            delay_sync: Some(Duration::from_secs(1)),
            ssh_options: vec!["-oB=2".into()],
            rsync_options: vec!["--inplace".into()],
            rules: Some(RulesFrom::File(PathBuf::from("rules"))),
            ..Values::default()
        };
        let v = upper.over(lower.clone());
        assert_eq!(v.delay_sync, Some(Duration::from_secs(1)));
        assert_eq!(v.mode, Some(Mode::Shell));
        assert_eq!(v.sync_handler, lower.sync_handler);
        assert_eq!(v.ssh_options, ["-oA=1", "-oB=2"]);
        assert_eq!(v.rsync_options, ["--compress", "--inplace"]);
        assert_eq!(v.rules, Some(RulesFrom::File(PathBuf::from("rules"))));
        // Another mode on top without a handler: the handler below was that mode's.
        let other = Values {
            mode: Some(Mode::RsyncDirect),
            ..Values::default()
        };
        assert_eq!(other.over(lower.clone()).sync_handler, None);
        let same = Values {
            mode: Some(Mode::Shell),
            ..Values::default()
        };
        assert_eq!(
            same.over(lower).sync_handler.as_deref(),
            Some(std::path::Path::new("/usr/local/bin/handler"))
        );
    }

    #[test]
    fn build_fills_in_the_form_defaults() {
        let v = || Values {
            src: Some(PathBuf::from("/a")),
            dsts: Some(vec![PathBuf::from("/b"), PathBuf::from("/c")]),
            ..Values::default()
        };
        let c = build(v(), Defaults::SHORT).unwrap();
        assert_eq!(c.delays, Defaults::SHORT.delays);
        assert_eq!(
            (c.dst.as_path(), c.more_dsts.len()),
            (std::path::Path::new("/b"), 1)
        );
        // Several destinations retry forever unless told otherwise.
        assert_eq!(build(v(), Defaults::ORIGINAL).unwrap().retries, 0);
        let one = Values {
            dsts: Some(vec![PathBuf::from("/b")]),
            ..v()
        };
        assert_eq!(build(one, Defaults::ORIGINAL).unwrap().retries, 1);
        let keep = Values {
            split_brain_keep: Some(crate::pair::Decision::KeepLocal),
            ..v()
        };
        assert!(build(keep, Defaults::ORIGINAL)
            .unwrap_err()
            .to_string()
            .contains("needs a profile with a peer"));
    }
}
