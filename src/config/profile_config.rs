/*!
From a resolved profile (or a block of the original's INI file) to one layer of the
configuration ([`Values`], built by [`super::build`]), and the `check`, `show-config`
and `import` commands.

Every key is carried out by the worker, except those that belong to the manager
(`autostart`, `restart`), which are accepted and left to it. Profiles run with the
original's defaults (30 s, 30 s, 1800 s, 128 MiB, one try) unless they set their own.
*/

use super::build::{build, Defaults, RulesFrom, Values};
use crate::config::{Config, Initial, StartError};
use crate::profile::{self, Profiles, Resolved};
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

/// A resolved profile as one layer of the configuration. `file` names the profile in
/// errors.
pub fn layer(r: &Resolved, file: &Path) -> Result<Values, StartError> {
    let v = &r.values;
    let err = |m: String| StartError::Usage(format!("{}: {m}", file.display()));
    if v.sync_on_quit == Some(false) {
        return Err(err(
            "sync-on-quit = false is not supported: every stop syncs what is queued, so no change is dropped"
                .into(),
        ));
    }
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
    let dsts: Vec<&String> = match (&v.destination_dir, v.destinations.as_deref()) {
        (None, _) if v.peer.is_some() => v.peer.iter().collect(),
        (Some(d), more) => std::iter::once(d).chain(more.unwrap_or_default()).collect(),
        (None, Some(all)) => all.iter().collect(),
        (None, None) => Vec::new(),
    };
    let user = |key: &str, val: &Option<String>| {
        val.as_deref()
            .map(super::parse_user)
            .transpose()
            .map_err(|e| err(format!("{key}: {e}")))
    };
    let group = |key: &str, val: &Option<String>| {
        val.as_deref()
            .map(super::parse_group)
            .transpose()
            .map_err(|e| err(format!("{key}: {e}")))
    };
    let rules = match (&v.rules_file, &v.rules) {
        (Some(_), Some(_)) => return Err(err("set either rules-file or rules, not both".into())),
        (Some(f), None) => Some(RulesFrom::File(PathBuf::from(f))),
        (None, Some(lines)) => Some(RulesFrom::Inline(lines.clone(), file.to_path_buf())),
        (None, None) => None,
    };
    let initial = match (v.skip_initialsync, v.only_initialsync) {
        (Some(true), Some(true)) => {
            return Err(err(
                "skip-initialsync and only-initialsync exclude each other".into(),
            ))
        }
        (Some(true), _) => Some(Initial::Skip),
        (_, Some(true)) => Some(Initial::Only),
        _ => None,
    };
    Ok(Values {
        src: Some(PathBuf::from(src)),
        // No destination at all (a handler that needs none): one empty one, as before.
        dsts: (!dsts.is_empty()).then(|| dsts.into_iter().map(PathBuf::from).collect()),
        mode: parsed(&v.mode).map_err(err)?,
        sync_handler: v.sync_handler.as_ref().map(PathBuf::from),
        handler_args: v
            .sync_handler_args
            .as_ref()
            .map(|a| a.iter().map(std::ffi::OsString::from).collect()),
        synclist_simplify: v.synclist_simplify,
        have_recursive_sync: v.have_recursive_sync,
        lists_nul: v.lists_nul,
        rsync_prefer_include: v.rsync_prefer_include,
        ignore_failures: v.ignore_failures,
        sync_handler_uid: user("sync-handler-uid", &v.sync_handler_uid)?,
        sync_handler_gid: group("sync-handler-gid", &v.sync_handler_gid)?,
        uid: user("uid", &v.uid)?,
        gid: group("gid", &v.gid)?,
        modification_signature: v
            .modification_signature
            .as_deref()
            .map(crate::signature::parse)
            .transpose()
            .map_err(err)?,
        dump_dir: v.dump_dir.as_ref().map(PathBuf::from),
        ssh_command: v.ssh_command.clone(),
        ssh_identity: v.ssh_identity.as_ref().map(PathBuf::from),
        ssh_port: v.ssh_port,
        ssh_options: v.ssh_options.clone().unwrap_or_default(),
        rsync_options: v
            .rsync_options
            .iter()
            .flatten()
            .map(std::ffi::OsString::from)
            .collect(),
        rsync_password_file: v.rsync_password_file.as_ref().map(PathBuf::from),
        allow_empty_source: v.allow_empty_source,
        strict_modes: v.strict_modes,
        sandbox: v.sandbox,
        sandbox_min: None,
        chroot: None,
        sandbox_network: parsed(&v.sandbox_network).map_err(err)?,
        sandbox_extra: crate::sandbox::Extra {
            read: paths(&v.sandbox_read),
            write: paths(&v.sandbox_write),
            exec: paths(&v.sandbox_exec),
        },
        preserve_capabilities: v
            .preserve_capabilities
            .as_ref()
            .map(|l| crate::sandbox::parse_preserved(&l.join(",")))
            .transpose()
            .map_err(err)?,
        inherit_capabilities: parsed(&v.inherit_capabilities).map_err(err)?,
        progress: v.progress,
        wait_for_close: v.wait_for_close,
        verify_interval: v.verify_interval,
        pair,
        split_brain_keep: None,
        delay_collect: v.delay_collect,
        delay_collect_bigfile: v.delay_collect_bigfile,
        delay_sync: v.delay_sync,
        threshold_bigfile: v.threshold_bigfile,
        rules,
        globs: (v.include.is_some() || v.exclude.is_some()).then(|| {
            (
                v.include.clone().unwrap_or_default(),
                v.exclude.clone().unwrap_or_default(),
                file.to_path_buf(),
            )
        }),
        label: v.label.clone().or_else(|| Some(r.instance.clone())),
        rsync_inclimit: v
            .rsync_inclimit
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        status_file: v.status_file.as_ref().map(PathBuf::from),
        debug: v.debug,
        debug_min: None,
        pid_file: v.pid_file.as_ref().map(PathBuf::from),
        ignore_exitcodes: match &v.ignore_exitcode {
            Some(codes) => {
                let text: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
                Some(super::parse_exitcodes(&text).map_err(err)?)
            }
            None => None,
        },
        timeout_sync: v.timeout_sync,
        initial,
        pre_exit_hook: v.pre_exit_hook.as_ref().map(PathBuf::from),
        exit_hook: v.exit_hook.as_ref().map(PathBuf::from),
        standby_file: v.standby_file.as_ref().map(PathBuf::from),
        retries: v.retries,
        one_file_system: (v.one_file_system == Some(true) || v.exclude_mount_points == Some(true))
            .then_some(true),
        monitor: parsed(&v.monitor).map_err(err)?,
        full_initialsync: v.full_initialsync,
        initial_from: parsed(&v.initial_sync).map_err(err)?,
        index_dir: Some(match &v.index_dir {
            Some(d) => (PathBuf::from(d).join(&r.instance), false),
            None => (
                PathBuf::from(crate::config::DEFAULT_INDEX_DIR).join(&r.instance),
                true,
            ),
        }),
        exit_on_no_events: v.exit_on_no_events,
        max_iterations: v.max_iterations,
        quiet: None,
        output: parsed(&v.output).map_err(err)?,
        background: None,
        lists_dir: v.lists_dir.as_ref().map(PathBuf::from),
        dont_unlink_lists: v.dont_unlink_lists,
        threading: parsed(&v.threading).map_err(err)?,
        max_parallel_syncs: match v.max_parallel_syncs {
            Some(0) => return Err(err("max-parallel-syncs must be at least 1".into())),
            n => n.map(|n| n as usize),
        },
    })
}

/// The worker configuration of a resolved profile alone (the original's defaults).
/// `file` names the profile in errors.
pub fn config_of(r: &Resolved, file: &Path) -> Result<Config, StartError> {
    build(layer(r, file)?, Defaults::PROFILE).map_err(|e| in_file(e, file))
}

/// A usage error of the merged values, named after the file they came from.
#[must_use]
pub fn in_file(e: StartError, file: &Path) -> StartError {
    match e {
        StartError::Usage(m) => StartError::Usage(format!("{}: {m}", file.display())),
        e => e,
    }
}

/// A list of paths (`sandbox-read`…).
fn paths(v: &Option<Vec<String>>) -> Vec<PathBuf> {
    v.iter().flatten().map(PathBuf::from).collect()
}

/// A value of a key parsed as its type (`mode`, `monitor`, `output`, `threading`).
fn parsed<T: std::str::FromStr<Err = String>>(s: &Option<String>) -> Result<Option<T>, String> {
    s.as_deref().map(str::parse).transpose()
}

fn file_of(profiles: &Profiles, r: &Resolved) -> PathBuf {
    profiles
        .get(&r.profile)
        .map(|p| p.file.clone())
        .unwrap_or_default()
}

/// Loads the profiles directory and resolves `name` in it; the file of the profile too.
pub(crate) fn resolve_in(
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

/// A block of the original's INI configuration file (`-H FILE -K BLOCK`) alone as a
/// worker configuration (the original's defaults): see [`legacy_layer`].
pub fn load_legacy(
    file: &Path,
    block: &str,
    label: Option<&str>,
    dirs: (Option<&Path>, Option<&Path>),
) -> Result<Config, StartError> {
    build(legacy_layer(file, block, label, dirs)?, Defaults::ORIGINAL).map_err(|e| in_file(e, file))
}

/// A block of the original's INI configuration file (`-H FILE -K BLOCK`) as one layer of
/// the configuration: inheritance between blocks, then our substitution (the original's
/// default label is `nolabel`, which a block that uses `%label%` gets when no `-l` is
/// given). The block's keys that have no meaning here are reported, not silently dropped.
/// `dirs` are `-W`/`-D` from the command line, which win over the file.
pub fn legacy_layer(
    file: &Path,
    block: &str,
    label: Option<&str>,
    dirs: (Option<&Path>, Option<&Path>),
) -> Result<Values, StartError> {
    use crate::legacy;
    let usage = |m: String| StartError::Usage(m);
    crate::strict::check_config(file, "configuration file").map_err(usage)?;
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
                crate::logger::warn_soon(format!("{}: [{block}] {key}: {why}", file.display()));
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
    layer(&r, file)
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
        if p.symlink_metadata().is_ok() {
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
        crate::safe_file::create_new(&p, 0o644)
            .and_then(|mut f| std::io::Write::write_all(&mut f, toml.as_bytes()))
            .map_err(|e| usage(format!("{}: {e}", p.display())))?;
        written.push(p);
    }
    Ok(written)
}

/// The file that sets `watch-dir` for `r`: the profile's own, or the nearest it inherits
/// from that sets it.
fn watch_dir_file(profiles: &Profiles, r: &Resolved) -> PathBuf {
    let mut name = r.profile.as_str();
    // Bounded: an inheritance loop is refused by resolve, but stay safe.
    for _ in 0..=profiles.len() {
        let Some(p) = profiles.get(name) else { break };
        if p.values.watch_dir.is_some() {
            return p.file.clone();
        }
        match p.values.inherits.as_deref() {
            Some(parent) => name = parent,
            None => break,
        }
    }
    file_of(profiles, r)
}

/// What `check` names of a valid profile: its source and destinations, resolved
/// (`/srv/www -> /mnt/www`; a remote destination as given). A watch-dir that does not
/// exist, or is not a directory, is an error naming the file, the key and the value: the
/// worker would refuse it at start.
fn checked_dirs(cfg: &Config, file: &Path) -> Result<String, String> {
    let bad = |why: String| {
        format!(
            "{}: watch-dir = {:?}: {why}",
            file.display(),
            cfg.src.to_string_lossy()
        )
    };
    let src = match std::fs::metadata(&cfg.src) {
        Ok(m) if m.is_dir() => cfg.src.canonicalize().map_err(|e| bad(e.to_string()))?,
        Ok(_) => return Err(bad("not a directory".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad("no such directory".into()))
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let dsts: Vec<String> = std::iter::once(&cfg.dst)
        .chain(&cfg.more_dsts)
        .map(|d| match crate::dest::Dest::parse(d.as_os_str()) {
            crate::dest::Dest::Local(_) => crate::config::preflight::canonical_maybe_missing(d)
                .unwrap_or_else(|_| d.clone())
                .display()
                .to_string(),
            _ => d.display().to_string(),
        })
        .collect();
    Ok(format!("{} -> {}", src.display(), dsts.join(", ")))
}

/// `clsync check [PROFILE|FILE…]`: validates without running. Prints one line per
/// profile, `NAME: ok (SOURCE -> DESTINATION)` or its error; returns false if any failed.
/// Templates are checked with the label `check` (their directories depend on the label:
/// not looked at).
pub fn check(dir: &Path, targets: &[String], out: &mut dyn std::io::Write) -> bool {
    let mut ok = true;
    let mut report = |what: String, r: Result<String, String>| match r {
        Ok(checked) => {
            let _ = writeln!(out, "{what}: ok ({checked})");
        }
        Err(e) => {
            ok = false;
            let _ = writeln!(out, "{e}");
        }
    };
    let check_one = |profiles: &Profiles, name: &str| -> Result<String, String> {
        let template = profile::is_template_profile(profiles, name).map_err(|e| e.to_string())?;
        let r = profile::resolve(profiles, name, template.then_some("check"))
            .map_err(|e| e.to_string())?;
        let result = config_of(&r, &file_of(profiles, &r))
            .and_then(|c| crate::config::preflight::check_strict(&c).map(|()| c));
        // A base profile that others inherit from need not run on its own: it only has
        // to parse and resolve; its heirs are checked in full.
        let heirs = profiles
            .values()
            .any(|p| p.values.inherits.as_deref() == Some(name));
        let incomplete = r.values.watch_dir.is_none() || r.values.destination_dir.is_none();
        if heirs && incomplete {
            return Ok("inherited by others, which are checked".into());
        }
        let cfg = result.map_err(|e| e.to_string())?;
        if template {
            return Ok("template: each instance's directories are checked at its start".into());
        }
        checked_dirs(&cfg, &watch_dir_file(profiles, &r))
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
                "watch-dir = \"/usr\"\ndestination-dir = \"/b\"\n",
            ),
            ("bad.toml", "watch-dir = \"/usr\"\ndelay-colect = 3\n"),
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
        assert_eq!(String::from_utf8(out).unwrap(), "good: ok (/usr -> /b)\n");
    }

    #[test]
    fn check_accepts_an_incomplete_base_profile_with_heirs() {
        let d = dir(&[
            ("base.toml", "delay-sync = 5\n"),
            (
                "web.toml",
                "inherits = \"base\"\nwatch-dir = \"/usr\"\ndestination-dir = \"/b\"\n",
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

    /// `check` names the directories it checked, resolved (a symlink followed, the
    /// template's label substituted by none), and a watch-dir that does not exist is an
    /// error naming the file that sets it, the key and the value (it was "NAME: ok").
    #[test]
    fn check_names_the_directories_and_refuses_a_missing_watch_dir() {
        let d = dir(&[
            ("base.toml", "watch-dir = \"/nonexistent/clsync-check\"\n"),
            (
                "heir.toml",
                "inherits = \"base\"\ndestination-dir = \"/b\"\n",
            ),
            (
                "tpl.toml",
                "watch-dir = \"/nonexistent/%label%\"\ndestination-dir = \"/b/%label%\"\n",
            ),
        ]);
        let real = d.path().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
        fs::write(
            d.path().join("good.toml"),
            format!(
                "watch-dir = \"{}/link\"\ndestination-dir = \"{}/link/../out\"\n",
                d.path().display(),
                d.path().display()
            ),
        )
        .unwrap();
        let mut out = Vec::new();
        assert!(!check(d.path(), &[], &mut out));
        let out = String::from_utf8(out).unwrap();
        let base = d.path().join("base.toml");
        let want = [
            "base: ok (inherited by others, which are checked)".to_string(),
            format!(
                "good: ok ({} -> {})",
                real.canonicalize().unwrap().display(),
                d.path().canonicalize().unwrap().join("out").display()
            ),
            format!(
                "{}: watch-dir = \"/nonexistent/clsync-check\": no such directory",
                base.display()
            ),
            "tpl: ok (template: each instance's directories are checked at its start)".into(),
        ];
        assert_eq!(out.lines().collect::<Vec<_>>(), want, "{out}");
        let mut out = Vec::new();
        assert!(check(d.path(), &["good".into()], &mut out));
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
