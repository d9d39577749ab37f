/*!
From a resolved profile to the worker's [`Config`], and the `check` / `show-config`
commands.

Every key is carried out by the worker, except those that belong to the manager
(`autostart`, `restart`), which are accepted and left to it. Profiles run with the
original's defaults (30 s, 30 s, 1800 s, 128 MiB, one try) unless they set their own.
*/

use crate::config::{Config, StartError};
use crate::profile::{self, Profiles, Resolved};
use crate::queue::Delays;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The keys of failover pairs, which need `peer` (the pair's destination).
pub const PAIR_KEYS: &[&str] = &[
    "split-brain",
    "resolver",
    "resolver-timeout",
    "split-brain-notify",
    "pair-dir",
    "peer-pair-dir",
];

/// The worker configuration of a resolved profile. `file` names the profile in errors.
pub fn config_of(r: &Resolved, file: &Path) -> Result<Config, StartError> {
    let v = &r.values;
    let err = |m: String| StartError::Usage(format!("{}: {m}", file.display()));
    if v.sync_on_quit == Some(false) {
        return Err(err(
            "sync-on-quit = false is not supported: every stop syncs what is queued, so no change is dropped"
                .into(),
        ));
    }
    let mode: crate::sync::handler::Mode = match v.mode.as_deref() {
        None => Default::default(),
        Some(m) => m.parse().map_err(err)?,
    };
    let src = v
        .watch_dir
        .as_ref()
        .ok_or_else(|| err("watch-dir is not set".into()))?;
    // `peer` is the destination of a failover pair.
    if v.peer.is_some() && (v.destination_dir.is_some() || v.destinations.is_some()) {
        return Err(err(
            "peer is the destination of a failover pair: do not set destination-dir or destinations too".into(),
        ));
    }
    let set_key = |k: &str| {
        let prefix = format!("{k} = ");
        v.to_toml().lines().any(|l| l.starts_with(&prefix))
    };
    if let (None, Some(k)) = (&v.peer, PAIR_KEYS.iter().find(|k| set_key(k))) {
        return Err(err(format!(
            "{k} is for failover pairs: it needs peer = \"[user@]host:/path\""
        )));
    }
    let pair = match &v.peer {
        None => None,
        Some(p) => {
            if !matches!(
                crate::dest::Dest::parse(std::ffi::OsStr::new(p)),
                crate::dest::Dest::Ssh { .. }
            ) {
                return Err(err(format!(
                    "peer = {p:?}: a failover peer is [user@]host:/path (reached over ssh)"
                )));
            }
            let dir = PathBuf::from(v.pair_dir.as_deref().unwrap_or("/var/lib/clsync"));
            Some(crate::pair::PairSettings {
                instance: r.instance.clone(),
                policy: v
                    .split_brain
                    .as_deref()
                    .unwrap_or("manual")
                    .parse()
                    .map_err(err)?,
                resolver: v.resolver.as_ref().map(PathBuf::from),
                resolver_timeout: v.resolver_timeout.unwrap_or(Duration::from_secs(60)),
                notify: v.split_brain_notify.as_ref().map(PathBuf::from),
                peer_dir: v
                    .peer_pair_dir
                    .as_ref()
                    .map_or_else(|| dir.clone(), PathBuf::from),
                dir,
                keep: None,
            })
        }
    };
    // `destinations` alone names them all; with destination-dir it adds to it.
    let (dst, more) = match (&v.destination_dir, v.destinations.as_deref()) {
        (None, _) if v.peer.is_some() => (v.peer.clone().unwrap_or_default(), Vec::new()),
        (Some(d), _) => (d.clone(), v.destinations.clone().unwrap_or_default()),
        (None, Some([first, rest @ ..])) => (first.clone(), rest.to_vec()),
        (None, _) => (String::new(), Vec::new()),
    };
    let user = |key: &str, val: &Option<String>| {
        val.as_deref()
            .map(crate::config::parse_user)
            .transpose()
            .map_err(|e| err(format!("{key}: {e}")))
    };
    let group = |key: &str, val: &Option<String>| {
        val.as_deref()
            .map(crate::config::parse_group)
            .transpose()
            .map_err(|e| err(format!("{key}: {e}")))
    };
    if v.rules_file.is_some() && v.rules.is_some() {
        return Err(err("set either rules-file or rules, not both".into()));
    }
    let cfg = Config {
        src: PathBuf::from(src),
        dst: PathBuf::from(dst),
        rsync: PathBuf::from(
            v.sync_handler
                .as_deref()
                .or(mode.default_handler())
                .unwrap_or_default(),
        ),
        mode,
        handler_args: v
            .sync_handler_args
            .as_ref()
            .map(|a| a.iter().map(std::ffi::OsString::from).collect()),
        synclist_simplify: v.synclist_simplify == Some(true),
        have_recursive_sync: v.have_recursive_sync == Some(true),
        lists_nul: v.lists_nul == Some(true),
        rsync_prefer_include: v.rsync_prefer_include == Some(true),
        ignore_failures: v.ignore_failures == Some(true),
        sync_handler_uid: user("sync-handler-uid", &v.sync_handler_uid)?,
        sync_handler_gid: group("sync-handler-gid", &v.sync_handler_gid)?,
        uid: user("uid", &v.uid)?,
        gid: group("gid", &v.gid)?,
        modification_signature: match &v.modification_signature {
            Some(m) => crate::signature::parse(m).map_err(err)?,
            None => 0,
        },
        dump_dir: v.dump_dir.as_ref().map(PathBuf::from),
        more_dsts: more.iter().map(PathBuf::from).collect(),
        ssh: crate::dest::Ssh {
            command: v.ssh_command.clone(),
            identity: v.ssh_identity.as_ref().map(PathBuf::from),
            port: v.ssh_port,
            options: v.ssh_options.clone().unwrap_or_default(),
        },
        rsync_options: v
            .rsync_options
            .iter()
            .flatten()
            .map(std::ffi::OsString::from)
            .collect(),
        rsync_password_file: v.rsync_password_file.as_ref().map(PathBuf::from),
        allow_empty_source: v.allow_empty_source == Some(true),
        progress: v.progress,
        verify_interval: v.verify_interval.filter(|d| !d.is_zero()),
        wait_for_close: v.wait_for_close.filter(|d| !d.is_zero()),
        pair,
        reload_args: None,
        delays: Delays {
            collect: v.delay_collect.unwrap_or(Duration::from_secs(30)),
            collect_bigfile: v.delay_collect_bigfile.unwrap_or(Duration::from_secs(1800)),
            sync: v.delay_sync.unwrap_or(Duration::from_secs(30)),
        },
        threshold_bigfile: v.threshold_bigfile.unwrap_or(128 << 20),
        rules_file: v.rules_file.as_ref().map(PathBuf::from),
        rules_inline: v.rules.clone().map(|r| (r, file.to_path_buf())),
        globs: (v.include.is_some() || v.exclude.is_some()).then(|| {
            (
                v.include.clone().unwrap_or_default(),
                v.exclude.clone().unwrap_or_default(),
                file.to_path_buf(),
            )
        }),
        label: v.label.clone().or_else(|| Some(r.instance.clone())),
        rsync_inclimit: v.rsync_inclimit.unwrap_or(20000) as usize,
        status_file: v.status_file.as_ref().map(PathBuf::from),
        debug: v.debug.unwrap_or(0),
        pid_file: v.pid_file.as_ref().map(PathBuf::from),
        ignore_exitcodes: match &v.ignore_exitcode {
            Some(codes) => {
                let text: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
                crate::config::parse_exitcodes(&text).map_err(err)?
            }
            None => Vec::new(),
        },
        timeout_sync: v.timeout_sync.filter(|t| !t.is_zero()),
        initial: match (
            v.skip_initialsync == Some(true),
            v.only_initialsync == Some(true),
        ) {
            (true, true) => {
                return Err(err(
                    "skip-initialsync and only-initialsync exclude each other".into(),
                ))
            }
            (true, false) => crate::config::Initial::Skip,
            (false, true) => crate::config::Initial::Only,
            (false, false) => crate::config::Initial::Sync,
        },
        pre_exit_hook: v.pre_exit_hook.as_ref().map(PathBuf::from),
        exit_hook: v.exit_hook.as_ref().map(PathBuf::from),
        standby_file: v.standby_file.as_ref().map(PathBuf::from),
        // As the original: give up after one failed try unless told otherwise (see
        // below for remote and several destinations).
        retries: v.retries.unwrap_or(1),
        one_file_system: v.one_file_system == Some(true) || v.exclude_mount_points == Some(true),
        full_initialsync: v.full_initialsync == Some(true),
        exit_on_no_events: v.exit_on_no_events == Some(true),
        max_iterations: v.max_iterations.unwrap_or(0),
        quiet: false,
        output: match &v.output {
            Some(o) => o.parse().map_err(err)?,
            None => crate::logger::Output::Stderr,
        },
        background: false,
        lists_dir: v.lists_dir.as_ref().map(PathBuf::from),
        dont_unlink_lists: v.dont_unlink_lists == Some(true),
        monitor: match &v.monitor {
            Some(m) => m.parse().map_err(err)?,
            None => crate::watch::Monitor::Inotify,
        },
        threading: match &v.threading {
            Some(t) => t.parse().map_err(err)?,
            None => crate::queue::Threading::Off,
        },
        max_parallel_syncs: match v.max_parallel_syncs {
            Some(0) => return Err(err("max-parallel-syncs must be at least 1".into())),
            Some(n) => n as usize,
            None => crate::config::MAX_PARALLEL_SYNCS,
        },
    };
    let mut cfg = cfg;
    if v.retries.is_none() && cfg.networked() {
        // A node that is down comes back: keep the changes queued and retry.
        cfg.retries = 0;
    }
    cfg.check_mode().map_err(err)?;
    Ok(cfg)
}

fn file_of(profiles: &Profiles, r: &Resolved) -> PathBuf {
    profiles
        .get(&r.profile)
        .map(|p| p.file.clone())
        .unwrap_or_default()
}

/// Loads the profiles directory and resolves `name` in it; the file of the profile too.
fn resolve_in(
    dir: &Path,
    name: &str,
    label: Option<&str>,
) -> Result<(Resolved, PathBuf), StartError> {
    let usage = |e: profile::ProfileError| StartError::Usage(e.to_string());
    let profiles = profile::load_dir(dir).map_err(usage)?;
    let r = profile::resolve(&profiles, name, label).map_err(usage)?;
    let file = file_of(&profiles, &r);
    Ok((r, file))
}

/// Resolves `name` (`PROFILE`, `PROFILE@LABEL` or `PROFILE-LABEL`) in the profiles
/// directory into a worker configuration.
pub fn load(dir: &Path, name: &str, label: Option<&str>) -> Result<Config, StartError> {
    let (r, file) = resolve_in(dir, name, label)?;
    config_of(&r, &file)
}

/// A block of the original's INI configuration file (`-H FILE -K BLOCK`) as a worker
/// configuration: inheritance between blocks, then our substitution (the original's
/// default label is `nolabel`, which a block that uses `%label%` gets when no `-l` is
/// given). The block's keys that have no meaning here are reported, not silently dropped.
/// `dirs` are `-W`/`-D` from the command line, which win over the file.
pub fn load_legacy(
    file: &Path,
    block: &str,
    label: Option<&str>,
    dirs: (Option<&Path>, Option<&Path>),
) -> Result<Config, StartError> {
    use crate::legacy;
    let usage = |m: String| StartError::Usage(m);
    let mut values = legacy::load_block(file, block).map_err(|e| usage(e.to_string()))?;
    if let Some(w) = dirs.0 {
        values.watch_dir = Some(w.to_string_lossy().replace('%', "%%"));
    }
    if let Some(d) = dirs.1 {
        values.destination_dir = Some(d.to_string_lossy().replace('%', "%%"));
    }
    let text =
        std::fs::read_to_string(file).map_err(|e| usage(format!("{}: {e}", file.display())))?;
    for b in legacy::parse(file, &text).map_err(|e| usage(e.to_string()))? {
        if b.name == block {
            for (key, why) in &b.ignored {
                log::warn!("{}: [{block}] {key}: {why}", file.display());
            }
        }
    }
    let mut profiles = Profiles::new();
    profiles.insert(
        block.to_string(),
        profile::Profile {
            name: block.to_string(),
            file: file.to_path_buf(),
            values,
            broken: None,
        },
    );
    let template =
        profile::is_template_profile(&profiles, block).map_err(|e| usage(e.to_string()))?;
    let label = match (template, label) {
        (true, l) => Some(l.unwrap_or("nolabel")),
        (false, _) => None,
    };
    let r = profile::resolve(&profiles, block, label).map_err(|e| usage(e.to_string()))?;
    config_of(&r, file)
}

/// `clsync import FILE [DIR]`: one profile per block of the original's configuration
/// file, written to DIR; an existing profile is never overwritten. Returns the files.
pub fn import(file: &Path, dir: &Path) -> Result<Vec<PathBuf>, StartError> {
    use crate::legacy;
    let usage = |m: String| StartError::Usage(m);
    let text =
        std::fs::read_to_string(file).map_err(|e| usage(format!("{}: {e}", file.display())))?;
    let blocks = legacy::parse(file, &text).map_err(|e| usage(e.to_string()))?;
    let out = legacy::to_profiles(&blocks);
    for (name, _) in &out {
        let p = dir.join(name);
        if p.exists() {
            return Err(usage(format!(
                "{}: exists; not overwriting (import into an empty directory)",
                p.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| usage(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (name, toml) in out {
        let p = dir.join(name);
        std::fs::write(&p, toml).map_err(|e| usage(format!("{}: {e}", p.display())))?;
        written.push(p);
    }
    Ok(written)
}

/// `clsync check [PROFILE|FILE…]`: validates without running. Prints one line per
/// profile; returns false if any failed. Templates are checked with the label `check`.
pub fn check(dir: &Path, targets: &[String], out: &mut dyn std::io::Write) -> bool {
    let mut ok = true;
    let mut report = |what: String, r: Result<(), String>| match r {
        Ok(()) => {
            let _ = writeln!(out, "{what}: ok");
        }
        Err(e) => {
            ok = false;
            let _ = writeln!(out, "{e}");
        }
    };
    let check_one = |profiles: &Profiles, name: &str| -> Result<(), String> {
        let label = profile::is_template_profile(profiles, name)
            .map_err(|e| e.to_string())?
            .then_some("check");
        let r = profile::resolve(profiles, name, label).map_err(|e| e.to_string())?;
        let result = config_of(&r, &file_of(profiles, &r)).map(|_| ());
        // A base profile that others inherit from need not run on its own: it only has
        // to parse and resolve; its heirs are checked in full.
        let heirs = profiles
            .values()
            .any(|p| p.values.inherits.as_deref() == Some(name));
        let incomplete = r.values.watch_dir.is_none() || r.values.destination_dir.is_none();
        if heirs && incomplete {
            return Ok(());
        }
        result.map_err(|e| e.to_string())
    };
    let (files, names): (Vec<&String>, Vec<&String>) = targets
        .iter()
        .partition(|t| t.contains('/') || t.ends_with(".toml"));
    for f in files {
        // A file is checked in its own directory, so that `inherits` resolves.
        let path = Path::new(f);
        let r = profile::load_file(path)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                let profiles = profile::load_dir(parent.unwrap_or(Path::new(".")))
                    .map_err(|e| e.to_string())?;
                check_one(&profiles, &p.name)
            });
        report(f.clone(), r);
    }
    if names.is_empty() && !targets.is_empty() {
        return ok;
    }
    match profile::load_dir(dir) {
        Err(e) => report(dir.display().to_string(), Err(e.to_string())),
        Ok(profiles) => {
            let all: Vec<String> = if names.is_empty() {
                profiles.keys().cloned().collect()
            } else {
                names.into_iter().cloned().collect()
            };
            if all.is_empty() {
                report(
                    dir.display().to_string(),
                    Err(format!("{}: no profiles", dir.display())),
                );
            }
            for name in all {
                let r = check_one(&profiles, &name);
                report(name, r);
            }
        }
    }
    ok
}

/// `clsync show-config PROFILE[@LABEL]`: the effective values after inheritance and
/// substitution.
pub fn show(dir: &Path, name: &str, label: Option<&str>) -> Result<String, StartError> {
    let (r, file) = resolve_in(dir, name, label)?;
    Ok(format!(
        "# {} ({})\n{}",
        r.instance,
        file.display(),
        r.values.to_toml()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    #[test]
    fn a_profile_becomes_a_config_with_the_original_defaults() {
        let d = dir(&[(
            "web.toml",
            "watch-dir = \"/srv/www\"\ndestination-dir = \"/mnt/www\"\ndelay-collect = \"2s\"\n",
        )]);
        let c = load(d.path(), "web", None).unwrap();
        assert_eq!(c.src, PathBuf::from("/srv/www"));
        assert_eq!(c.delays.collect, Duration::from_secs(2));
        assert_eq!(c.delays.sync, Duration::from_secs(30));
        assert_eq!(c.label.as_deref(), Some("web"));
    }

    #[test]
    fn templates_take_their_label() {
        let d = dir(&[(
            "lxc.toml",
            "watch-dir = \"/srv/lxc/%label%\"\ndestination-dir = \"/mnt/lxc/%label%\"\n",
        )]);
        let c = load(d.path(), "lxc-web01", None).unwrap();
        assert_eq!(c.src, PathBuf::from("/srv/lxc/web01"));
        let c = load(d.path(), "lxc", Some("db")).unwrap();
        assert_eq!(c.dst, PathBuf::from("/mnt/lxc/db"));
        assert!(load(d.path(), "lxc", None).is_err());
    }

    #[test]
    fn check_reports_every_profile() {
        let d = dir(&[
            (
                "good.toml",
                "watch-dir = \"/a\"\ndestination-dir = \"/b\"\n",
            ),
            ("bad.toml", "watch-dir = \"/a\"\ndelay-colect = 3\n"),
        ]);
        let mut out = Vec::new();
        assert!(!check(d.path(), &[], &mut out));
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("bad.toml:2:1: unknown key \"delay-colect\""),
            "{out}"
        );
        fs::remove_file(d.path().join("bad.toml")).unwrap();
        let mut out = Vec::new();
        assert!(check(d.path(), &["good".to_string()], &mut out));
        assert_eq!(String::from_utf8(out).unwrap(), "good: ok\n");
    }

    #[test]
    fn check_accepts_an_incomplete_base_profile_with_heirs() {
        let d = dir(&[
            ("base.toml", "delay-sync = 5\n"),
            (
                "web.toml",
                "inherits = \"base\"\nwatch-dir = \"/a\"\ndestination-dir = \"/b\"\n",
            ),
            ("lonely.toml", "delay-sync = 5\n"),
        ]);
        let mut out = Vec::new();
        assert!(!check(d.path(), &[], &mut out));
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("base: ok") && out.contains("web: ok"), "{out}");
        assert!(
            out.contains("watch-dir is not set"),
            "a profile nobody inherits must run: {out}"
        );
    }

    #[test]
    fn show_prints_effective_values() {
        let d = dir(&[
            (
                "base.toml",
                "delay-sync = 5\ndestination-dir = \"/b/%label%\"\n",
            ),
            (
                "t.toml",
                "inherits = \"base\"\nwatch-dir = \"/a/%label%\"\n",
            ),
        ]);
        let s = show(d.path(), "t@x", None).unwrap();
        assert!(s.contains("watch-dir = \"/a/x\""), "{s}");
        assert!(s.contains("destination-dir = \"/b/x\""), "{s}");
        assert!(s.contains("delay-sync"), "{s}");
    }
}
