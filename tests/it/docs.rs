//! Documentation in step with the code: man/clsync.toml.5 documents every profile key (and
//! no other), in the order of `profile::keys()`, says truthfully whether the worker carries
//! it out today, and quotes every shipped profile in its EXAMPLES.

use crate::common;

use clsync::profile;
use common::shipped_profiles;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The text of a man page with roff's `\-` turned into `-`.
fn man_page(name: &str) -> String {
    let path = root().join("man").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("\\-", "-")
}

/// The lines of section `.SH name`, up to the next `.SH`.
fn section<'a>(page: &'a str, name: &str) -> Vec<&'a str> {
    let head = format!(".SH {name}");
    let mut lines = page.lines().skip_while(|l| l.trim() != head);
    assert!(lines.next().is_some(), "no section {head:?} in the page");
    lines.take_while(|l| !l.starts_with(".SH")).collect()
}

/// The entries of the KEYS section of clsync.toml(5): each `.TP` followed by `.B key`,
/// with the text of the entry up to the next `.TP`.
fn key_entries() -> Vec<(String, String)> {
    let page = man_page("clsync.toml.5");
    let lines = section(&page, "KEYS");
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == ".TP" {
            let tag = lines.get(i + 1).copied().unwrap_or("");
            let key = tag.strip_prefix(".B ").unwrap_or_else(|| {
                panic!("clsync.toml.5, KEYS: a .TP entry whose tag is not `.B key`: {tag:?}")
            });
            entries.push((key.trim().to_string(), String::new()));
            i += 2;
            continue;
        }
        if let Some((_, text)) = entries.last_mut() {
            text.push_str(lines[i]);
            text.push(' ');
        }
        i += 1;
    }
    entries
}

#[test]
fn every_profile_key_has_an_entry_in_order_and_no_other() {
    let documented: Vec<String> = key_entries().into_iter().map(|(k, _)| k).collect();
    let keys: Vec<String> = profile::keys().iter().map(|k| k.to_string()).collect();
    let missing: Vec<&String> = keys.iter().filter(|k| !documented.contains(k)).collect();
    let unknown: Vec<&String> = documented.iter().filter(|k| !keys.contains(k)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "man/clsync.toml.5 is out of step with profile::KEYS:\n  \
         keys without an entry: {missing:?}\n  entries that are no key: {unknown:?}"
    );
    assert_eq!(
        documented, keys,
        "man/clsync.toml.5 lists the keys in another order (or twice); keep the order of KEYS"
    );
}

/// A value of the right type for each key, to set it in a profile.
const SAMPLES: &[(&str, &str)] = &[
    ("watch-dir", "\"/srv/a\""),
    ("destination-dir", "\"/srv/b\""),
    ("mode", "\"rsyncdirect\""),
    ("sync-handler", "\"rsync\""),
    ("sync-handler-args", "[\"-a\"]"),
    ("rules-file", "\"/etc/clsync/rules\""),
    ("rules", "[\"+*\"]"),
    ("exclude", "[\"*.tmp\"]"),
    ("include", "[\"keep.tmp\"]"),
    ("delay-sync", "1"),
    ("delay-collect", "1"),
    ("delay-collect-bigfile", "1"),
    ("threshold-bigfile", "\"1MiB\""),
    ("retries", "1"),
    ("ignore-exitcode", "[24]"),
    ("timeout-sync", "1"),
    ("threading", "\"safe\""),
    ("max-parallel-syncs", "2"),
    ("label", "\"web\""),
    ("lists-dir", "\"/run/clsync/lists\""),
    ("status-file", "\"/run/clsync/status\""),
    ("pid-file", "\"/run/clsync/pid\""),
    ("exit-hook", "\"/bin/true\""),
    ("pre-exit-hook", "\"/bin/true\""),
    ("full-initialsync", "true"),
    ("only-initialsync", "true"),
    ("skip-initialsync", "true"),
    ("initial-sync", "\"full\""),
    ("index-dir", "\"/var/lib/clsync/index\""),
    ("exit-on-no-events", "true"),
    ("sync-on-quit", "true"),
    ("one-file-system", "true"),
    ("exclude-mount-points", "true"),
    ("rsync-prefer-include", "true"),
    ("dont-unlink-lists", "true"),
    ("have-recursive-sync", "true"),
    ("synclist-simplify", "true"),
    ("ignore-failures", "true"),
    ("max-iterations", "1"),
    ("standby-file", "\"/run/clsync/standby\""),
    ("modification-signature", "\"*\""),
    ("rsync-inclimit", "1"),
    ("output", "\"syslog\""),
    ("debug", "1"),
    ("uid", "\"nobody\""),
    ("gid", "\"nogroup\""),
    ("sync-handler-uid", "\"nobody\""),
    ("sync-handler-gid", "0"),
    ("lists-nul", "true"),
    ("dump-dir", "\"/run/clsync/dump\""),
    ("destinations", "[\"/srv/c\"]"),
    ("ssh-command", "\"ssh\""),
    ("ssh-identity", "\"/root/.ssh/id_clsync\""),
    ("ssh-port", "2222"),
    ("ssh-options", "[\"-oConnectTimeout=10\"]"),
    ("rsync-options", "[\"--bwlimit=10m\"]"),
    ("rsync-password-file", "\"/etc/clsync/rsync.secret\""),
    ("allow-empty-source", "true"),
    ("strict-modes", "false"),
    ("sandbox", "true"),
    ("sandbox-network", "\"host\""),
    ("sandbox-read", "[\"/etc\"]"),
    ("sandbox-write", "[\"/tmp\"]"),
    ("sandbox-exec", "[\"/usr/bin\"]"),
    (
        "preserve-capabilities",
        "[\"CAP_DAC_READ_SEARCH\", \"CAP_KILL\"]",
    ),
    ("inherit-capabilities", "\"clsync\""),
    ("progress", "true"),
    ("verify-interval", "\"1h\""),
    ("wait-for-close", "\"30s\""),
    ("monitor", "\"fanotify\""),
    ("peer", "\"node-b:/srv/b\""),
    ("split-brain", "\"discard-least-changes\""),
    ("resolver", "\"/usr/local/bin/resolve\""),
    ("resolver-timeout", "30"),
    ("split-brain-notify", "\"/usr/local/bin/page\""),
    ("pair-dir", "\"/var/lib/clsync\""),
    ("peer-pair-dir", "\"/var/lib/clsync\""),
    ("autostart", "true"),
    ("restart", "\"on-failure\""),
    ("restart-delay", "\"2s\""),
    ("restart-max-delay", "\"5m\""),
    ("start-limit-burst", "5"),
    ("start-limit-interval", "\"10m\""),
    ("stop-timeout", "\"90s\""),
    ("inherits", "\"base\""),
];

/// Keys that need another mode than rsyncdirect to make sense.
const SHELL_ONLY: &[&str] = &["have-recursive-sync", "synclist-simplify"];
/// Keys of failover pairs: they need a peer (which is the destination).
const PAIR_ONLY: &[&str] = clsync::profile_config::PAIR_KEYS;

/// Whether the worker takes a profile with watch-dir, destination-dir and `key = value`
/// (in shell mode for the keys that need it): `Err` with its message if not.
fn accepted(key: &str, value: &str) -> Result<(), String> {
    let file = PathBuf::from("/etc/clsync/p.toml");
    let mut text = format!("{key} = {value}\n");
    let pair = key == "peer" || PAIR_ONLY.contains(&key);
    if PAIR_ONLY.contains(&key) {
        text.push_str("peer = \"node-b:/srv/b\"\n");
    }
    for base in ["watch-dir", "destination-dir"] {
        if base != key && !(pair && base == "destination-dir") {
            text.push_str(&format!("{base} = \"/srv/{base}\"\n"));
        }
    }
    if SHELL_ONLY.contains(&key) {
        text.push_str("mode = \"shell\"\nsync-handler = \"/bin/true\"\n");
    }
    let values = profile::parse_values(&file, &text)
        .unwrap_or_else(|e| panic!("sample for {key} does not parse: {e}"));
    let profiles = common::profiles::p_and_base(&file, values);
    let r = profile::resolve(&profiles, "p", None)
        .unwrap_or_else(|e| panic!("sample for {key} does not resolve: {e}"));
    clsync::profile_config::config_of(&r, &file)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn every_entry_says_it_is_carried_out_and_the_worker_takes_it() {
    let sampled: Vec<&str> = SAMPLES.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        sampled,
        profile::keys(),
        "tests/it/docs.rs SAMPLES: give every key of KEYS a sample value, in KEYS order"
    );
    let mut wrong = Vec::new();
    for (key, text) in &key_entries() {
        if !(text.contains("Carried out") || text.contains("Accepted")) {
            wrong.push(format!("{key}: say \"Carried out\" or \"Accepted\""));
        }
        if text.contains("Not implemented yet") || text.contains("not implemented yet") {
            wrong.push(format!("{key}: says \"not implemented yet\""));
        }
        let value = SAMPLES.iter().find(|(k, _)| k == key).unwrap().1;
        if let Err(e) = accepted(key, value) {
            wrong.push(format!("{key} = {value}: the worker refuses it: {e}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "man/clsync.toml.5 or the worker is wrong about:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn shipped_profiles_use_documented_keys_and_are_quoted_in_examples() {
    let documented: Vec<String> = key_entries().into_iter().map(|(k, _)| k).collect();
    let page = man_page("clsync.toml.5");
    let examples = section(&page, "EXAMPLES").join("\n");
    for path in shipped_profiles() {
        let p = profile::load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        for line in p.values.to_toml().lines() {
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            assert!(
                documented.iter().any(|d| d == key.trim()),
                "{}: key {key} has no entry in man/clsync.toml.5",
                path.display()
            );
        }
        let file = path.file_name().unwrap().to_string_lossy();
        assert!(
            examples.contains(&*file),
            "man/clsync.toml.5: EXAMPLES does not show the shipped profile {file}"
        );
    }
}

/// The `--long` options in `clsync --help`.
fn long_options() -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clsync"))
        .arg("--help")
        .output()
        .expect("run clsync --help");
    assert!(out.status.success(), "clsync --help failed: {out:?}");
    let help = String::from_utf8(out.stdout).expect("--help output is UTF-8");
    let mut opts: Vec<String> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter_map(|t| t.strip_prefix("--"))
        .filter(|t| t.starts_with(|c: char| c.is_ascii_lowercase()))
        .map(|t| format!("--{t}"))
        .collect();
    opts.sort();
    opts.dedup();
    assert!(!opts.is_empty(), "no --options in clsync --help:\n{help}");
    opts
}

#[test]
fn every_long_option_is_in_clsync_1() {
    let page = man_page("clsync.1");
    // `--profile` must not count as documented because `--profiles-dir` is.
    let mentions = |opt: &str| {
        page.match_indices(opt).any(|(i, _)| {
            !page[i + opt.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
        })
    };
    let missing: Vec<String> = long_options()
        .into_iter()
        .filter(|o| !mentions(o))
        .collect();
    assert!(
        missing.is_empty(),
        "options of clsync --help missing from man/clsync.1: {}",
        missing.join(" ")
    );
}

/// The commands `PROGRAM --help` lists under `Commands:`.
fn commands(program: &str) -> Vec<String> {
    let out = std::process::Command::new(program)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{program} --help: {out:?}");
    let help = String::from_utf8(out.stdout).expect("--help output is UTF-8");
    let list: Vec<String> = help
        .lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert!(!list.is_empty(), "no commands in {program} --help:\n{help}");
    list
}

#[test]
fn every_command_has_an_entry_in_its_man_page() {
    for (program, page) in [
        (env!("CARGO_BIN_EXE_clsync"), "clsync.1"),
        (env!("CARGO_BIN_EXE_clsync-manager"), "clsync-manager.8"),
    ] {
        let text = man_page(page);
        let entries: Vec<String> = section(&text, "COMMANDS")
            .iter()
            .filter_map(|l| l.strip_prefix(".B "))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        let missing: Vec<String> = commands(program)
            .into_iter()
            .filter(|c| !entries.contains(c))
            .collect();
        assert!(
            missing.is_empty(),
            "commands of {program} --help without an entry in COMMANDS of man/{page}: {missing:?}"
        );
    }
}

/// Every option of the original's man page (clsync 0.4, OPTIONS), short and long.
const ORIGINAL_OPTIONS: &[(Option<char>, &str)] = &[
    (None, "add-permitted-hook-files"),
    (None, "cancel-syscalls"),
    (None, "cgroup-group-name"),
    (None, "check-execvp-arguments"),
    (None, "chroot"),
    (None, "config-block-inherits"),
    (None, "custom-signals"),
    (None, "detach-ipc"),
    (None, "detach-miscellanea"),
    (None, "detach-network"),
    (None, "dump-dir"),
    (None, "exit-hook"),
    (None, "exit-on-no-events"),
    (None, "exit-on-sync-skip"),
    (None, "forbid-devices"),
    (None, "fts-experimental-optimization"),
    (None, "have-recursive-sync"),
    (None, "ignore-failures"),
    (None, "inherit-capabilities"),
    (None, "max-iterations"),
    (None, "modification-signature"),
    (None, "monitor"),
    (None, "mountpoints"),
    (None, "one-file-system"),
    (None, "only-initialsync"),
    (None, "permit-mprotect"),
    (None, "pivot-root"),
    (None, "pre-exit-hook"),
    (None, "privileged-gid"),
    (None, "privileged-uid"),
    (None, "rsync-inclimit"),
    (None, "rsync-prefer-include"),
    (None, "seccomp-filter"),
    (None, "secure-splitting"),
    (None, "shm-mprotect"),
    (None, "skip-initialsync"),
    (None, "socket"),
    (None, "socket-mod"),
    (None, "socket-own"),
    (None, "splitting"),
    (None, "standby-file"),
    (None, "status-file"),
    (None, "sync-handler-gid"),
    (None, "sync-handler-uid"),
    (None, "sync-on-quit"),
    (None, "synclist-simplify"),
    (Some('B'), "threshold-bigfile"),
    (Some('C'), "preserve-capabilities"),
    (Some('D'), "destination-dir"),
    (Some('F'), "full-initialsync"),
    (Some('H'), "config-file"),
    (Some('K'), "config-block"),
    (Some('L'), "lists-dir"),
    (Some('M'), "mode"),
    (Some('R'), "rules-file"),
    (Some('S'), "sync-handler"),
    (Some('T'), "delay-collect-bigfile"),
    (Some('U'), "dont-unlink-lists"),
    (Some('V'), "version"),
    (Some('W'), "watch-dir"),
    (Some('X'), "exclude-mount-points"),
    (Some('Y'), "output"),
    (Some('b'), "background"),
    (Some('d'), "debug"),
    (Some('g'), "gid"),
    (Some('h'), "help"),
    (Some('k'), "timeout-sync"),
    (Some('l'), "label"),
    (Some('p'), "threading"),
    (Some('q'), "quiet"),
    (Some('r'), "retries"),
    (Some('t'), "delay-collect"),
    (Some('u'), "uid"),
    (Some('v'), "verbose"),
    (Some('w'), "delay-sync"),
    (Some('x'), "ignore-exitcode"),
    (Some('z'), "pid-file"),
];

/// None of the original's options is unknown to clsync: each is either implemented (it
/// parses, or asks for its value) or refused by name as not implemented / not supported.
#[test]
fn every_option_of_the_original_is_recognised() {
    let mut unknown = Vec::new();
    for (short, long) in ORIGINAL_OPTIONS {
        let mut forms = vec![format!("--{long}")];
        if let Some(c) = short {
            forms.push(format!("-{c}"));
        }
        for form in forms {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_clsync"))
                .arg(&form)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run clsync");
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("unexpected argument") || err.contains("unknown option") {
                unknown.push(format!(
                    "{form}: {}",
                    err.lines().next().unwrap_or_default()
                ));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "options of the original that clsync does not know:\n{}",
        unknown.join("\n")
    );
}

/// README.md's test command is the one CI runs (`.ci/run`), with `CI=true` (a test whose
/// prerequisites are missing fails there instead of reporting itself skipped) and
/// `--no-fail-fast` (a failing test file does not hide the later ones).
#[test]
fn readme_test_command_is_the_one_ci_runs() {
    let read =
        |p: &str| std::fs::read_to_string(root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let command = |text: &str, file: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.contains("cargo test --release"))
            .unwrap_or_else(|| panic!("{file}: no test command"));
        let at = line
            .find("CI=")
            .unwrap_or_else(|| panic!("{file}: no CI=true: {line}"));
        line[at..].trim().to_string()
    };
    let readme = command(&read("README.md"), "README.md");
    let ci = command(&read(".ci/run"), ".ci/run");
    assert_eq!(readme, ci, "README.md and .ci/run run different tests");
    for word in ["CI=true", "--release", "--no-fail-fast"] {
        assert!(
            readme.split_whitespace().any(|w| w == word),
            "the test command lacks {word}: {readme}"
        );
    }
}

/// The rows of the table under `## Exit codes` in docs/cli.md: (code cell, meaning cell).
fn exit_code_rows() -> Vec<(String, String)> {
    let path = root().join("docs/cli.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines().skip_while(|l| l.trim() != "## Exit codes");
    assert!(
        lines.next().is_some(),
        "docs/cli.md has no `## Exit codes` section"
    );
    lines
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| code |"))
        .map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').splitn(2, '|').collect();
            assert_eq!(
                cells.len(),
                2,
                "docs/cli.md, exit codes: a row without two cells: {l:?}"
            );
            (cells[0].trim().to_string(), cells[1].trim().to_string())
        })
        .collect()
}

/// The exit-code table of docs/cli.md is `clsync::exit::ExitCode`: the same codes in the
/// same order, each row opening with the code's meaning, and every kind of `StartError`
/// named in the row of its code. (The handler's own code, passed through after
/// `--retries` failures, is the one row that is no fixed number.)
#[test]
fn exit_code_table_is_the_exit_code_type() {
    use clsync::exit::{ExitCode, Kind};
    let rows = exit_code_rows();
    let fixed: Vec<&(String, String)> = rows
        .iter()
        .filter(|(c, _)| c != "the handler's code")
        .collect();
    let documented: Vec<&str> = fixed.iter().map(|(c, _)| c.as_str()).collect();
    let codes: Vec<String> = ExitCode::ALL.iter().map(|c| c.code().to_string()).collect();
    assert_eq!(
        documented, codes,
        "docs/cli.md lists other exit codes than clsync::exit::ExitCode::ALL"
    );
    let row = |code: ExitCode| -> &str {
        &fixed[ExitCode::ALL.iter().position(|c| *c == code).unwrap()].1
    };
    for code in ExitCode::ALL {
        assert!(
            row(code).starts_with(code.meaning()),
            "docs/cli.md, exit code {}: the row should open with {:?}, it reads {:?}",
            code.code(),
            code.meaning(),
            row(code)
        );
    }
    for kind in Kind::ALL {
        let code = kind.exit_code();
        assert!(
            row(code).contains(kind.documented_as()),
            "docs/cli.md, exit code {}: the row does not name the start-up error {kind:?} \
             as {:?}",
            code.code(),
            kind.documented_as()
        );
    }
}
