//! Migration with zero edits: the original clsync's documented command lines, its
//! clsync.conf blocks, rules files and handler scripts, run with this clsync as they are
//! written. The only change is the paths: each documented path is replaced by a
//! directory of the test (the `paths` table of each fixture), nothing else.
//!
//! Where the fixtures come from (copied here: the repository has no copy of the
//! original's documentation):
//! - clsync(1) of the original, version 0.4.5 (Debian's clsync 0.4.5-2, upstream
//!   https://github.com/clsync/clsync `man/man1/clsync.1`): its EXAMPLES section, the
//!   example under `--modification-signature`, the RULES section's rules files and the
//!   CONFIGURATION FILE section's blocks.
//! - The original's README.md, "7. Recommended configuration" (upstream commit 206c09d of
//!   2013-09-15; the section was dropped from the README five days later): four command
//!   lines in the syntax of clsync 0.1, `clsync [OPTIONS] WATCH-DIR HANDLER [RULES-FILE
//!   [DESTINATION]]`, whose handler, `/home/clsync/bin/clsync-actionscript.sh`, is the
//!   original's `examples/clsync-actionscript.sh` of that time (renamed
//!   `clsync-synchandler-rsync.sh` in upstream commit d805381).
//!
//! Every man page fixture runs three ways ([`Via`]): the command line as written; the same
//! options as a block of a clsync.conf (the original's option names as keys, the
//! handler's words as `--`) in `~/.clsync.conf`, run with `-K BLOCK` as the
//! original reads it; and that block after `clsync import`, run with `--profile`: the
//! imported profile must do the same.

use crate::common;

use common::manager::Mgr;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The three ways a fixture runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    /// The command line as documented.
    Line,
    /// Its options as a block of a clsync.conf, `~/.clsync.conf` (HOME is the test's
    /// directory): `clsync -K fixture`, as the original reads it.
    Block,
    /// That clsync.conf after `clsync import`: `clsync --profile fixture`.
    Import,
}

const VIAS: [Via; 3] = [Via::Line, Via::Block, Via::Import];

// ---------------------------------------------------------------------------
// Documented lines, split and rewritten
// ---------------------------------------------------------------------------

/// Splits a documented command line as sh does for these lines: blanks separate words,
/// `'…'` and `"…"` quote, a backslash outside single quotes takes the next character.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        _ => cur.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// The documented line's arguments (without the leading `clsync`), with each documented
/// path replaced by the test's: the first entry of `paths` found in a word is replaced
/// (so longer paths that start like shorter ones are listed first).
fn rewrite(line: &str, paths: &[(&str, PathBuf)]) -> Vec<OsString> {
    let w = words(line);
    assert_eq!(w.first().map(String::as_str), Some("clsync"), "{line}");
    w[1..]
        .iter()
        .map(|word| {
            for (doc, real) in paths {
                if let Some(i) = word.find(doc) {
                    let mut b = word.as_bytes()[..i].to_vec();
                    b.extend_from_slice(real.as_os_str().as_bytes());
                    b.extend_from_slice(&word.as_bytes()[i + doc.len()..]);
                    return OsString::from(std::ffi::OsStr::from_bytes(&b));
                }
            }
            OsString::from(word)
        })
        .collect()
}

/// The original's (0.4.5) options that the fixtures use: (short, long, takes a value:
/// 0 no, 1 yes, 2 optional and attached).
const OPTIONS: &[(Option<char>, &str, u8)] = &[
    (Some('M'), "mode", 1),
    (Some('W'), "watch-dir", 1),
    (Some('S'), "sync-handler", 1),
    (Some('D'), "destination-dir", 1),
    (Some('R'), "rules-file", 1),
    (Some('w'), "delay-sync", 1),
    (Some('t'), "delay-collect", 1),
    (Some('T'), "delay-collect-bigfile", 1),
    (Some('B'), "threshold-bigfile", 1),
    (Some('x'), "ignore-exitcode", 1),
    (Some('b'), "background", 2),
    (Some('Y'), "output", 1),
    (Some('z'), "pid-file", 1),
    (Some('r'), "retries", 1),
    (Some('l'), "label", 1),
    (Some('u'), "uid", 1),
    (Some('g'), "gid", 1),
    (Some('d'), "debug", 2),
    (Some('p'), "threading", 1),
    (Some('L'), "lists-dir", 1),
    (Some('k'), "timeout-sync", 1),
    (None, "modification-signature", 1),
    (None, "exit-on-no-events", 0),
    (None, "max-iterations", 1),
    (None, "pre-exit-hook", 1),
    (None, "exit-hook", 1),
    (None, "have-recursive-sync", 0),
    (None, "rsync-prefer-include", 0),
    (None, "skip-initialsync", 0),
    (None, "ignore-failures", 0),
];

/// The command line's options as the lines of a clsync.conf block: each option under its
/// long name (a flag as `= 1`; the last of a repeated option wins, as in the original),
/// the words after `--` as the value of `--`.
fn block_lines(args: &[OsString]) -> Vec<String> {
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        keys.retain(|(key, _)| key != k);
        keys.push((k.to_string(), v));
    };
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_str().expect("UTF-8 test paths").to_string())
        .collect();
    let mut i = 0;
    let mut handler_words = None;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            handler_words = Some(args[i..].to_vec());
            break;
        }
        let (name, attached) = if let Some(long) = a.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (
                    OPTIONS
                        .iter()
                        .find(|o| o.1 == n)
                        .unwrap_or_else(|| panic!("{a}")),
                    Some(v.to_string()),
                ),
                None => (
                    OPTIONS
                        .iter()
                        .find(|o| o.1 == long)
                        .unwrap_or_else(|| panic!("{a}")),
                    None,
                ),
            }
        } else {
            let c = a.chars().nth(1).unwrap_or_else(|| panic!("{a}"));
            let o = OPTIONS
                .iter()
                .find(|o| o.0 == Some(c))
                .unwrap_or_else(|| panic!("option {a} is not in the table"));
            let rest = &a[2..];
            (o, (!rest.is_empty()).then(|| rest.to_string()))
        };
        let value = match (name.2, attached) {
            (_, Some(v)) => v,
            (1, None) => {
                i += 1;
                args[i - 1].clone()
            }
            _ => "1".to_string(),
        };
        set(name.1, value);
    }
    let mut lines: Vec<String> = keys
        .into_iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    if let Some(w) = handler_words {
        let quoted: Vec<String> = w
            .iter()
            .map(|x| {
                if x.contains([' ', '\t', '\'', '"']) {
                    format!("'{x}'")
                } else {
                    x.clone()
                }
            })
            .collect();
        lines.push(format!("-- = {}", quoted.join(" ")));
    }
    lines
}

// ---------------------------------------------------------------------------
// Running a fixture
// ---------------------------------------------------------------------------

/// What a fixture needs besides its line.
#[derive(Default)]
struct Opts {
    /// Working directory (default: the test's root).
    cwd: Option<PathBuf>,
    /// Standard input (default: /dev/null).
    stdin: Option<Vec<u8>>,
    /// A directory put first in `PATH` (stand-ins of programs that are not installed).
    bin: Option<PathBuf>,
    /// A line of clsync 0.1 (the README's): its block and profile are made of the
    /// classic line it is read as (0.1's configuration keys are not the original's since).
    line01: bool,
}

/// A started fixture: the clsync process the test started (which may have gone to the
/// background, leaving a worker whose command line names the test's directory).
struct Started {
    child: Child,
    via: Via,
    root: PathBuf,
    log: PathBuf,
    args: Vec<OsString>,
}

/// Starts the fixture `line` (paths rewritten by `paths`) the way `via` says.
#[track_caller]
fn start(t: &TestDir, via: Via, line: &str, paths: &[(&str, PathBuf)], o: Opts) -> Started {
    start_named(t, via, "fixture", line, paths, o)
}

/// [`start`] with the block (and profile) named `name`, for fixtures of several lines.
#[track_caller]
fn start_named(
    t: &TestDir,
    via: Via,
    name: &str,
    line: &str,
    paths: &[(&str, PathBuf)],
    o: Opts,
) -> Started {
    let mut given = rewrite(line, paths);
    if o.line01 && via != Via::Line {
        let mut argv = vec![OsString::from("clsync")];
        argv.append(&mut given);
        given =
            clsync::legacy::argv01::translate(&argv).expect("a line of clsync 0.1")[1..].to_vec();
    }
    let args: Vec<OsString> = match via {
        Via::Line => given.clone(),
        Via::Block | Via::Import => {
            let conf = t.root.join(format!("{name}.conf"));
            let text = format!(
                "# From: {line}\n[{name}]\n{}\n",
                block_lines(&given).join("\n")
            );
            if via == Via::Block {
                // As the original reads it: `-K BLOCK` alone takes ~/.clsync.conf.
                let home_conf = t.root.join(".clsync.conf");
                let mut all = std::fs::read(&home_conf).unwrap_or_default();
                all.extend_from_slice(text.as_bytes());
                write(&home_conf, &all);
                ["-K".into(), name.into()].into()
            } else {
                write(&conf, text.as_bytes());
                let profiles = t.root.join("profiles");
                mkdir_p(&profiles);
                let imported = run(
                    &t.root,
                    &[
                        OsString::from("import"),
                        "--profiles-dir".into(),
                        profiles.clone().into(),
                        conf.into(),
                    ],
                    Duration::from_secs(30),
                );
                assert_eq!(
                    imported.code(),
                    Some(0),
                    "clsync import of\n{text}\n{}",
                    imported.describe()
                );
                [
                    "--profiles-dir".into(),
                    profiles.into(),
                    "--profile".into(),
                    name.into(),
                ]
                .into()
            }
        }
    };
    let log = t.root.join(format!("{via:?}-{name}.log"));
    let out = File::create(&log).expect("log");
    let mut cmd = Command::new(BIN);
    cmd.args(common::own_index(&t.root, &args))
        .current_dir(o.cwd.as_deref().unwrap_or(&t.root))
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .process_group(0);
    match o.stdin {
        Some(bytes) => {
            let f = t.root.join("stdin");
            write(&f, &bytes);
            cmd.stdin(File::open(&f).expect("stdin"));
        }
        None => {
            cmd.stdin(Stdio::null());
        }
    }
    // ~/.clsync.conf of the Block way (and nobody's else).
    cmd.env("HOME", &t.root);
    if let Some(bin) = &o.bin {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut p = bin.clone().into_os_string();
        p.push(":");
        p.push(path);
        cmd.env("PATH", p);
    }
    let child = cmd.spawn().expect("spawn clsync");
    Started {
        child,
        via,
        root: t.root.clone(),
        log,
        args,
    }
}

impl Started {
    fn log(&self) -> String {
        read_lossy(&self.log)
    }

    fn context(&mut self) -> String {
        format!(
            "{:?}: clsync {:?}\nexit: {:?}\noutput:\n{}",
            self.via,
            self.args,
            self.child.try_wait().ok().flatten(),
            self.log()
        )
    }

    /// The clsync processes of this test (the one started and what it left in the
    /// background): their command line names the test's directory.
    fn pids(&self) -> Vec<i32> {
        processes_mentioning(self.root.as_os_str().as_bytes())
            .into_iter()
            .filter(|(_, cmd)| cmd.starts_with(BIN))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Polls `check` until it is Ok; fails with the fixture's output when the deadline
    /// passes or clsync exited with an error.
    #[track_caller]
    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<(), String>,
    ) {
        let start = Instant::now();
        loop {
            let err = match check() {
                Ok(()) => return,
                Err(e) => e,
            };
            if let Ok(Some(st)) = self.child.try_wait() {
                if !st.success() {
                    panic!("{what}: clsync failed: {err}\n{}", self.context());
                }
            }
            if start.elapsed() > timeout {
                panic!("{what}: not after {timeout:?}: {err}\n{}", self.context());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `dst` mirrors `src`.
    #[track_caller]
    fn wait_mirrored(&mut self, src: &Path, dst: &Path) {
        self.wait_synced_filtered(src, dst, &no_filter);
    }

    #[track_caller]
    fn wait_synced_filtered(
        &mut self,
        src: &Path,
        dst: &Path,
        exclude: &dyn Fn(&[u8], bool) -> bool,
    ) {
        let (s, d) = (src.to_path_buf(), dst.to_path_buf());
        self.wait_for("the mirror", SYNC_TIMEOUT, || {
            let diff = diff_trees(&s, &d, exclude);
            if diff.is_empty() {
                Ok(())
            } else {
                Err(diff.join("\n"))
            }
        });
    }

    /// Waits for clsync to exit by itself.
    #[track_caller]
    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > SYNC_TIMEOUT {
                panic!("clsync did not exit by itself\n{}", self.context());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every clsync process of the fixture (SIGTERM, by pid) and waits for them.
    #[track_caller]
    fn stop(&mut self) {
        let mut pids = self.pids();
        if let Ok(None) = self.child.try_wait() {
            pids.push(self.child.id() as i32);
        }
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let start = Instant::now();
        while !self.pids().is_empty() || matches!(self.child.try_wait(), Ok(None)) {
            if start.elapsed() > STOP_TIMEOUT {
                panic!("clsync did not stop on SIGTERM\n{}", self.context());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // A failed test leaves nothing running.
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small tree: files at two depths, an empty directory, a symlink, modes.
fn seed(root: &Path) {
    mkdir_p(&root.join("a/b"));
    mkdir_p(&root.join("empty"));
    write(&root.join("index.html"), b"<html>\n");
    write(&root.join("a/one"), b"one\n");
    write(&root.join("a/b/two"), b"two\n");
    chmod(&root.join("a/b/two"), 0o600);
    symlink(b"../index.html", &root.join("a/link"));
}

// ---------------------------------------------------------------------------
// clsync(1), EXAMPLES
// ---------------------------------------------------------------------------

/// clsync(1) EXAMPLES, "Mirroring a directory".
#[test]
fn man_mirroring_a_directory() {
    for via in VIAS {
        let t = TestDir::new("mig-mirror");
        seed(&t.src);
        let mut r = start(
            &t,
            via,
            "clsync -Mrsyncdirect -W/path/to/source_dir -D/path/to/destination_dir",
            &[
                ("/path/to/source_dir", t.src.clone()),
                ("/path/to/destination_dir", t.dst.clone()),
            ],
            Opts::default(),
        );
        r.wait_mirrored(&t.src, &t.dst);
        r.stop();
    }
}

/// clsync(1) EXAMPLES, "Syncing 'authorized_keys' files": a rules file that walks the
/// home directories without syncing them, and `cp --parents` as the handler of the
/// direct mode. Only the authorized_keys files arrive.
#[test]
fn man_syncing_authorized_keys_files() {
    for via in VIAS {
        let t = TestDir::new("mig-keys");
        // printf "+w^$\n+w^[^/]+$\n+W^[^/]+/.ssh$\n+f^[^/]+/.ssh/authorized_keys$\n-*" > /etc/clsync/rules/authorized_files_only
        mkdir_p(&t.root.join("rules"));
        write(
            &t.root.join("rules/authorized_files_only"),
            b"+w^$\n+w^[^/]+$\n+W^[^/]+/.ssh$\n+f^[^/]+/.ssh/authorized_keys$\n-*",
        );
        mkdir_p(&t.s(b"alice/.ssh"));
        mkdir_p(&t.s(b"bob/docs"));
        write(
            &t.s(b"alice/.ssh/authorized_keys"),
            b"ssh-ed25519 AAAA alice\n",
        );
        write(&t.s(b"alice/.ssh/id_ed25519"), b"private\n");
        write(&t.s(b"alice/notes"), b"notes\n");
        write(&t.s(b"bob/docs/cv"), b"cv\n");
        let mut r = start(
            &t,
            via,
            "clsync -Mdirect -Scp -W/mnt/master/home/ -D/home -R/etc/clsync/rules/authorized_files_only -- -Pfp --parents %INCLUDE-LIST% %destination-dir%",
            &[
                ("/mnt/master/home", t.src.clone()),
                ("/home", t.dst.clone()),
                ("/etc/clsync/rules", t.root.join("rules")),
            ],
            Opts::default(),
        );
        let key = t.d(b"alice/.ssh/authorized_keys");
        r.wait_for(
            "alice's authorized_keys",
            SYNC_TIMEOUT,
            || match std::fs::read(&key) {
                Ok(b) if b == b"ssh-ed25519 AAAA alice\n" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        let mut found = Vec::new();
        for e in walkdir(&t.dst) {
            found.push(e);
        }
        assert_eq!(
            found,
            ["alice", "alice/.ssh", "alice/.ssh/authorized_keys"],
            "only the authorized_keys files (and the directories cp --parents makes)\n{}",
            r.context()
        );
        r.stop();
    }
}

/// The paths below `root`, relative, sorted.
fn walkdir(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel))
            .expect("read_dir")
            .flatten()
        {
            let r = rel.join(e.file_name());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(r.clone());
            }
            out.push(r.to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// clsync(1) EXAMPLES, "Mirroring a directory, but faster" and "Instant mirroring of a
/// directory": the initial sync, then a change.
#[test]
fn man_mirroring_faster_and_instant() {
    for line in [
        "clsync -w5 -t5 -T5 -Mrsyncdirect -W/path/to/source_dir -D/path/to/destination_dir",
        "clsync -w0 -t0 -T0 -Mrsyncdirect -W/path/to/source_dir -D/path/to/destination_dir",
    ] {
        for via in VIAS {
            let t = TestDir::new("mig-faster");
            seed(&t.src);
            let mut r = start(
                &t,
                via,
                line,
                &[
                    ("/path/to/source_dir", t.src.clone()),
                    ("/path/to/destination_dir", t.dst.clone()),
                ],
                Opts::default(),
            );
            r.wait_mirrored(&t.src, &t.dst);
            write(&t.s(b"a/new"), b"new\n");
            remove_file(&t.s(b"a/one"));
            r.wait_mirrored(&t.src, &t.dst);
            r.stop();
        }
    }
}

/// clsync(1) EXAMPLES, "Making two directories synchronous": two instances in the
/// background, each with its pid file, mirroring one directory into the other.
#[test]
fn man_making_two_directories_synchronous() {
    for via in VIAS {
        let t = TestDir::new("mig-two");
        seed(&t.src);
        let paths = [
            ("/path/to/dir1", t.src.clone()),
            ("/path/to/dir2", t.dst.clone()),
            ("/var/run", t.root.clone()),
        ];
        let mut first = start_named(
            &t,
            via,
            "dir1",
            "clsync -Mrsyncdirect --background -z /var/run/clsync0.pid --output syslog -Mrsyncdirect -W/path/to/dir1 -D/path/to/dir2 --modification-signature '*'",
            &paths,
            Opts::default(),
        );
        first.wait_mirrored(&t.src, &t.dst);
        let mut second = start_named(
            &t,
            via,
            "dir2",
            "clsync -Mrsyncdirect --background -z /var/run/clsync1.pid --output syslog -Mrsyncdirect -W/path/to/dir2 -D/path/to/dir1 --modification-signature '*'",
            &paths,
            Opts::default(),
        );
        for (r, pid_file) in [(&mut first, "clsync0.pid"), (&mut second, "clsync1.pid")] {
            let f = t.root.join(pid_file);
            r.wait_for(pid_file, SYNC_TIMEOUT, || {
                let pid: i32 = std::fs::read_to_string(&f)
                    .map_err(|e| e.to_string())?
                    .trim()
                    .parse()
                    .map_err(|e| format!("{e}"))?;
                kill(Pid::from_raw(pid), None).map_err(|e| format!("pid {pid}: {e}"))
            });
        }
        assert_synced_now(&t.dst, &t.src, "dir2 -> dir1");
        second.stop();
        first.stop();
    }
}

/// clsync(1) EXAMPLES, "Fixing privileges of a web-site", and the same line under
/// `--modification-signature` ("Full example"): `chown` as the handler of the direct mode,
/// in the background; what root owns becomes www-data's, at start and when it appears.
#[test]
fn man_fixing_privileges_of_a_web_site() {
    if !nix::unistd::geteuid().is_root() {
        return skip("chown to www-data needs root");
    }
    let Ok(Some(www)) = nix::unistd::User::from_name("www-data") else {
        return skip("no user www-data");
    };
    for line in [
        "clsync -w3 -t3 -T3 -x1 -W/var/www/site.example.org/root -Mdirect -Schown --uid 0 --gid 0	-Ysyslog  -b1 --modification-signature uid,gid -- --from=root www-data:www-data %INCLUDE-LIST%",
        "clsync -w5 -t5 -T5 -x1 -W /var/www/site.example.org/root  -Mdirect  -Schown --uid   0	--gid	0   -Ysyslog  -b1  --modification-signature  uid,gid  --  --from=root www-data:www-data %INCLUDE-LIST%",
    ] {
        for via in VIAS {
            let t = TestDir::new("mig-chown");
            seed(&t.src);
            let owned = |p: &Path| {
                let m = lstat(p);
                if m.uid() == www.uid.as_raw() && m.gid() == www.gid.as_raw() {
                    Ok(())
                } else {
                    Err(format!("{} is {}:{}", showp(p), m.uid(), m.gid()))
                }
            };
            let mut r = start(
                &t,
                via,
                line,
                &[("/var/www/site.example.org/root", t.src.clone())],
                Opts::default(),
            );
            for f in [b"index.html".as_slice(), b"a/one", b"a/b/two", b"a/b"] {
                let p = t.s(f);
                r.wait_for("chown at start", SYNC_TIMEOUT, || owned(&p));
            }
            let new = t.s(b"a/new.php");
            write(&new, b"<?php\n");
            r.wait_for("chown of a new file", SYNC_TIMEOUT, || owned(&new));
            r.stop();
        }
    }
}

/// clsync(1) EXAMPLES, "'Atomic' sync": rsync with the default arguments and the paths
/// as the handler's words; exits once nothing is left to sync.
#[test]
fn man_atomic_sync() {
    for via in VIAS {
        let t = TestDir::new("mig-atomic");
        seed(&t.src);
        let mut r = start(
            &t,
            via,
            "clsync   --exit-on-no-events   --max-iterations=20   --mode=rsyncdirect	-W/var/www_new	 -Srsync   -- %RSYNC-ARGS% /var/www_new/ /var/www/",
            &[("/var/www_new", t.src.clone()), ("/var/www", t.dst.clone())],
            Opts::default(),
        );
        let st = r.wait_exit();
        assert_eq!(st.code(), Some(0), "{}", r.context());
        assert_synced_now(&t.src, &t.dst, "after the atomic sync");
    }
}

/// A helper process of a test, killed when the test ends however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on the loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// clsync(1) EXAMPLES, "Moving a web-server": to an rsync daemon (on the loopback, the
/// one change besides paths: the host), with the pre-exit and exit hooks.
#[test]
fn man_moving_a_web_server() {
    for via in VIAS {
        let t = TestDir::new("mig-move");
        seed(&t.src);
        let remote = t.root.join("remote");
        mkdir_p(&remote.join("www"));
        let port = free_port();
        let conf = t.root.join("rsyncd.conf");
        write(
            &conf,
            format!(
                "use chroot = no\nmunge symlinks = no\n[var]\npath = {}\nread only = no\nuid = root\ngid = root\n",
                remote.display()
            )
            .as_bytes(),
        );
        let daemon = Command::new("rsync")
            .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--config={}", conf.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("rsync --daemon");
        // Killed on every way out, a failed assertion included.
        let mut daemon = KillOnDrop(daemon);
        wait_until(SYNC_TIMEOUT, "the rsync daemon", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        let hooks = t.root.join("hooks.log");
        for name in ["stop-here.sh", "start-there.sh"] {
            write_script(
                &t.root.join(name),
                &format!("#!/bin/sh\necho \"{name} $*\" >> '{}'\n", hooks.display()),
            );
        }
        let mut r = start(
            &t,
            via,
            "clsync	--exit-on-no-events	--max-iterations=20	--pre-exit-hook=/root/stop-here.sh --exit-hook=/root/start-there.sh	--mode=rsyncdirect --ignore-exitcode=23,24 --retries=3 -W /var/www -S rsync -- %RSYNC-ARGS% /var/www/ rsync://clsync@another-host/var/www/",
            &[
                (
                    "rsync://clsync@another-host/var/www/",
                    PathBuf::from(format!("rsync://clsync@127.0.0.1:{port}/var/www/")),
                ),
                ("/var/www", t.src.clone()),
                ("/root", t.root.clone()),
            ],
            Opts::default(),
        );
        let st = r.wait_exit();
        let _ = daemon.0.kill();
        let _ = daemon.0.wait();
        assert_eq!(st.code(), Some(0), "{}", r.context());
        assert_synced_now_filtered(&t.src, &remote.join("www"), "at the other host", &|_, _| {
            false
        });
        let log = read_lossy(&hooks);
        assert!(
            log.contains("stop-here.sh ") && log.contains("start-there.sh "),
            "both hooks ran: {log:?}\n{}",
            r.context()
        );
    }
}

/// Stand-ins of programs the original's examples run that are not installed (pdcp,
/// uftp): each records its arguments, one call a line, in `calls.log`.
fn stand_ins(t: &TestDir, names: &[&str]) -> (PathBuf, PathBuf) {
    let bin = t.root.join("bin");
    mkdir_p(&bin);
    let log = t.root.join("calls.log");
    for n in names {
        write_script(
            &bin.join(n),
            &format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
        );
    }
    (bin, log)
}

/// clsync(1) EXAMPLES, "Copying files to slave-nodes using pdcp(1)" and "... using
/// uftp(1)": the handler gets the paths as documented, at start and on a change.
#[test]
fn man_copying_files_with_pdcp_and_uftp() {
    type Expected = fn(&TestDir, &str) -> String;
    let cases: [(&str, &str, Expected); 2] = [
        (
            "pdcp",
            "clsync -Msimple -S pdcp -W /opt/global -b -Y syslog -- -a %INCLUDE-LIST% %INCLUDE-LIST%",
            |t, rel| {
                let p = t.s(rel.as_bytes());
                format!("-a {} {}", p.display(), p.display())
            },
        ),
        (
            "uftp",
            "clsync -Mdirect -S uftp -W/opt/global --background=1 --output=syslog -- -M 248.225.233.1 %INCLUDE-LIST%",
            |_, rel| format!(" {rel}"),
        ),
    ];
    for (program, line, expected) in cases {
        for via in VIAS {
            let t = TestDir::new("mig-copy");
            seed(&t.src);
            let (bin, log) = stand_ins(&t, &[program]);
            let mut r = start(
                &t,
                via,
                line,
                &[("/opt/global", t.src.clone())],
                Opts {
                    bin: Some(bin),
                    ..Opts::default()
                },
            );
            // uftp's line keeps the default delays (30 s + 30 s): its start alone.
            let rels: &[&str] = if program == "pdcp" {
                &["a/one", "a/b/two", "new"]
            } else {
                &["a/one", "a/b/two"]
            };
            for &rel in rels {
                if rel == "new" {
                    write(&t.s(b"new"), b"new\n");
                }
                let want = expected(&t, rel);
                r.wait_for(program, SYNC_TIMEOUT, || {
                    let calls = read_lossy(&log);
                    if calls.lines().any(|l| {
                        l.contains(&want)
                            && (program != "uftp" || l.starts_with("-M 248.225.233.1 "))
                    }) {
                        Ok(())
                    } else {
                        Err(format!("no call with {want:?} in {calls:?}"))
                    }
                });
            }
            r.stop();
        }
    }
}

/// clsync(1) EXAMPLES, the two dry runs with `echo` as the handler: rsync's arguments,
/// and how pdcp would be called.
#[test]
fn man_dry_runs_with_echo() {
    for via in VIAS {
        let t = TestDir::new("mig-echo");
        seed(&t.src);
        let mut r = start(
            &t,
            via,
            "clsync -Mrsyncdirect -S echo -W/path/to/source_dir -D/path/to/destination_dir",
            &[
                ("/path/to/source_dir", t.src.clone()),
                ("/path/to/destination_dir", t.dst.clone()),
            ],
            Opts::default(),
        );
        let want = format!("{}/ {}/", t.src.display(), t.dst.display());
        let f = r.log.clone();
        r.wait_for("rsync's arguments", SYNC_TIMEOUT, || {
            let out = read_lossy(&f);
            if out
                .lines()
                .any(|l| l.starts_with("-aH --delete") && l.ends_with(&want))
            {
                Ok(())
            } else {
                Err(format!("no line of rsync's arguments ending in {want:?}"))
            }
        });
        r.stop();

        let t = TestDir::new("mig-echo2");
        seed(&t.src);
        let mut r = start(
            &t,
            via,
            "clsync -Msimple -S echo -W /opt/global -b0 -- pdcp -a %INCLUDE-LIST% %INCLUDE-LIST%",
            &[("/opt/global", t.src.clone())],
            Opts::default(),
        );
        let p = t.s(b"a/b/two");
        let want = format!("pdcp -a {} {}", p.display(), p.display());
        let f = r.log.clone();
        r.wait_for("pdcp's arguments", SYNC_TIMEOUT, || {
            let out = read_lossy(&f);
            if out.lines().any(|l| l == want) {
                Ok(())
            } else {
                Err(format!("no line {want:?}"))
            }
        });
        r.stop();
    }
}

/// clsync(1) EXAMPLES, "Automatically run 'make build' if any '*.c' file changed": the
/// rules on standard input, the current directory watched, make as the handler.
#[test]
fn man_make_build_when_a_c_file_changes() {
    for via in VIAS {
        let t = TestDir::new("mig-make");
        let built = t.root.join("built.log");
        write(
            &t.s(b"Makefile"),
            format!("build:\n\techo built >> '{}'\n", built.display()).as_bytes(),
        );
        write(&t.s(b"main.c"), b"int main(void) { return 0; }\n");
        // printf "%s\n" "+f.c$" "-f" | clsync ...
        let mut r = start(
            &t,
            via,
            "clsync  --have-recursive-sync  -W  .	 -R  /dev/stdin	 -Mdirect	-r1	--ignore-failures -t1	-w1	-Smake -- build",
            &[],
            Opts {
                cwd: Some(t.src.clone()),
                stdin: Some(b"+f.c$\n-f\n".to_vec()),
                ..Opts::default()
            },
        );
        let builds = |n: usize| {
            let f = built.clone();
            move || {
                let got = read_lossy(&f).lines().filter(|l| *l == "built").count();
                if got >= n {
                    Ok(())
                } else {
                    Err(format!("{got} builds"))
                }
            }
        };
        r.wait_for("the build at start", SYNC_TIMEOUT, builds(1));
        let before = read_lossy(&built).lines().count();
        write(&t.s(b"util.c"), b"int util;\n");
        r.wait_for("a build after util.c", SYNC_TIMEOUT, builds(before + 1));
        r.stop();
    }
}

// ---------------------------------------------------------------------------
// The original's README, "7. Recommended configuration" (clsync 0.1's command line)
// ---------------------------------------------------------------------------

/// The handler the README's lines name, `/home/clsync/bin/clsync-actionscript.sh`: the
/// original's `examples/clsync-actionscript.sh` of that time, as it was but for the two
/// directories (`./testdir/from` and `./testdir/to` there).
fn actionscript(t: &TestDir) -> PathBuf {
    let path = t.root.join("clsync-actionscript.sh");
    write_script(
        &path,
        &format!(
            r#"#!/bin/bash -x

FROM="{}"
TO="{}"

ACTION="$1"
LABEL="$2"
ARG0="$3"
ARG1="$4"

function rsynclist() {{
	LISTFILE="$1"
	EXCLISTFILE="$2"

	excludefrom=''
	if [ "$EXCLISTFILE" != "" ]; then
		excludefrom="--exclude-from=${{EXCLISTFILE}}"
	fi

	rsync -avH --delete-before "$excludefrom" --include-from="${{LISTFILE}}" --exclude='*' "$FROM"/ "$TO"/

	return 0
}}

case "$ACTION" in
	rsynclist)
		rsynclist "$ARG0" "$ARG1"
		;;
esac

exit $?
"#,
            t.src.display(),
            t.dst.display()
        ),
    );
    path
}

/// The README's lines name a rules file, `/home/clsync/clsync-rules`, without its text:
/// this is the one of the original's example of that time (`examples/clsync-start-rsync.sh`).
const README_RULES: &[u8] = b"-d^[Dd]ont[Ss]ync$\n+*.*\n";

/// The README's four recommended lines: each starts, and its first sync mirrors the
/// tree (what the rules leave out excepted). As a block and as an imported profile they
/// are the classic line each is read as, in the original's (0.4.5) option names.
#[test]
fn readme_recommended_configuration() {
    let rsync = String::from_utf8(
        Command::new("sh")
            .args(["-c", "which rsync"])
            .output()
            .expect("which rsync")
            .stdout,
    )
    .expect("UTF-8");
    let lines = [
        // The simpliest usage; `$(which rsync)` as the shell expands it.
        "clsync -R2 -d /dev/shm/clsync /tmp/fromdir $(which rsync) /dev/zero /tmp/todir"
            .replace("$(which rsync)", rsync.trim()),
        // Backing-up over very slow channel; `$[1024 * 1024 * 16]` as bash expands it.
        "clsync -l backup -R -d /dev/shm/clsync -t600 -T3600 -B$[1024 * 1024 * 16] /home/user /home/clsync/bin/clsync-actionscript.sh /home/clsync/clsync-rules"
            .replace("$[1024 * 1024 * 16]", &(1024 * 1024 * 16).to_string()),
        // Syncing ordinary web-server over 1Gbs channel.
        "clsync -l mirror -p -R -d /dev/shm/clsync /var/www /home/clsync/bin/clsync-actionscript.sh /home/clsync/clsync-rules".into(),
        // Syncing only few files from huge file tree (with a great lot of excludes).
        "clsync -l mirror -p -R -d /dev/shm/clsync -I /home/user /home/clsync/bin/clsync-actionscript.sh /home/clsync/clsync-rules".into(),
    ];
    for (line, via) in lines.iter().flat_map(|l| VIAS.map(|v| (l, v))) {
        let t = TestDir::new("mig-readme");
        seed(&t.src);
        mkdir_p(&t.s(b"DontSync/deep"));
        write(&t.s(b"DontSync/deep/x"), b"not this\n");
        write(&t.root.join("clsync-rules"), README_RULES);
        actionscript(&t);
        let mut r = start(
            &t,
            via,
            line,
            &[
                ("/tmp/fromdir", t.src.clone()),
                ("/tmp/todir", t.dst.clone()),
                ("/dev/shm/clsync", t.root.join("lists")),
                ("/home/user", t.src.clone()),
                ("/var/www", t.src.clone()),
                ("/home/clsync/bin", t.root.clone()),
                ("/home/clsync", t.root.clone()),
            ],
            Opts {
                line01: true,
                ..Opts::default()
            },
        );
        let rules = !line.contains("/dev/zero");
        if line.contains(" -I ") {
            // With -I (--rsync-prefer-include) there is no exclude list, and the script
            // passes rsync an empty word for it ("$excludefrom"), which rsync refuses
            // since 3.2.4 ("Empty source arg specified"), whichever clsync runs it: the
            // handler's call is what is checked, as bash -x traces it.
            let lists = t.root.join("lists");
            let want = [
                "+ ACTION=rsynclist".to_string(),
                "+ LABEL=mirror".to_string(),
                format!("+ ARG0={}/", lists.display()),
                "+ ARG1=".to_string(),
            ];
            let log = r.log.clone();
            r.wait_for("the handler's call", SYNC_TIMEOUT, || {
                let out = read_lossy(&log);
                match want
                    .iter()
                    .find(|w| !out.lines().any(|l| l.starts_with(w.as_str())))
                {
                    None => Ok(()),
                    Some(w) => Err(format!("no line {w:?}")),
                }
            });
            r.stop();
            continue;
        }
        r.wait_synced_filtered(&t.src, &t.dst, &|rel, _| {
            rules && (rel == b"DontSync" || rel.starts_with(b"DontSync/"))
        });
        if rules {
            assert!(
                !t.d(b"DontSync").exists(),
                "DontSync is left out\n{}",
                r.context()
            );
        }
        r.stop();
    }
}

// ---------------------------------------------------------------------------
// Our man pages' EXAMPLES: the same four situations in this clsync's syntax
// ---------------------------------------------------------------------------

/// The `.nf` lines of the EXAMPLES section of `man/NAME`, by `.SS` subsection, with
/// roff's `\-` and `\(aq` turned into `-` and `'`.
fn man_examples(name: &str) -> Vec<(String, Vec<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("man").join(name);
    let page = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("\\-", "-")
        .replace("\\(aq", "'");
    let mut out: Vec<(String, Vec<String>)> = vec![(String::new(), Vec::new())];
    let mut in_section = false;
    let mut in_nf = false;
    for line in page.lines() {
        if line.starts_with(".SH ") {
            in_section = line == ".SH EXAMPLES";
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some(title) = line.strip_prefix(".SS ") {
            out.push((title.to_string(), Vec::new()));
        } else if line == ".nf" {
            in_nf = true;
        } else if line == ".fi" {
            in_nf = false;
        } else if in_nf {
            out.last_mut().expect("one").1.push(line.to_string());
        }
    }
    out.retain(|(_, lines)| !lines.is_empty());
    assert!(!out.is_empty(), "{name}: no EXAMPLES");
    out
}

/// clsync(1) EXAMPLES: every `clsync` line of the four situations, with the files it
/// shows (`# cat FILE` and the lines under it), starts and mirrors.
#[test]
fn our_clsync_1_examples_run_as_written() {
    let examples = man_examples("clsync.1");
    let titles: Vec<&str> = examples.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        titles,
        [
            "A simple mirror",
            "A backup over a slow channel",
            "A web server over a fast (1 Gb/s) link",
            "A few files out of a huge tree"
        ],
        "the README's four situations"
    );
    let mut ran = 0;
    for (title, lines) in &examples {
        // `# cat FILE` and its lines.
        let mut files: Vec<(String, String)> = Vec::new();
        let mut commands = Vec::new();
        for l in lines {
            let cmd = l.strip_prefix("# ").or_else(|| l.strip_prefix("$ "));
            match cmd {
                Some(c) if c.starts_with("cat ") => {
                    files.push((c["cat ".len()..].to_string(), String::new()));
                }
                Some(c) if c.starts_with("clsync ") => commands.push(c.to_string()),
                Some(c) => panic!("{title}: a line that is neither cat nor clsync: {c}"),
                None => {
                    let (_, text) = files.last_mut().unwrap_or_else(|| panic!("{title}: {l}"));
                    text.push_str(l);
                    text.push('\n');
                }
            }
        }
        assert!(!commands.is_empty(), "{title}: no clsync line");
        for line in commands {
            ran += 1;
            let t = TestDir::new("mig-ours");
            seed(&t.src);
            mkdir_p(&t.s(b"cache"));
            write(&t.s(b"cache/page"), b"cached\n");
            for f in [
                "passwd",
                "group",
                "shadow",
                "hosts",
                "ssh/sshd_config",
                "ssh/ssh_config",
            ] {
                mkdir_p(&t.s(b"ssh"));
                write(&t.s(f.as_bytes()), f.as_bytes());
            }
            let paths = [
                ("/etc/clsync", t.root.clone()),
                ("/tmp/fromdir", t.src.clone()),
                ("/tmp/todir", t.dst.clone()),
                ("/home/user", t.src.clone()),
                ("/mnt/backup/user", t.dst.clone()),
                ("/var/www", t.src.clone()),
                ("/srv/mirror/www", t.dst.clone()),
                ("/srv/etc-mirror", t.dst.clone()),
                ("/etc", t.src.clone()),
            ];
            for (file, text) in &files {
                let to = rewrite(&format!("clsync {file}"), &paths);
                write(Path::new(&to[0]), text.as_bytes());
            }
            let mut r = start(&t, Via::Line, &line, &paths, Opts::default());
            if line.contains(" -R ") {
                let want = ["group", "passwd", "shadow", "ssh", "ssh/sshd_config"];
                let dst = t.dst.clone();
                r.wait_for(title, SYNC_TIMEOUT, || {
                    let got = walkdir(&dst);
                    if got == want {
                        Ok(())
                    } else {
                        Err(format!("{got:?}"))
                    }
                });
                assert_eq!(lstat(&t.d(b"shadow")).len(), 6, "{title}");
            } else {
                let cache = line.contains("--exclude /cache/");
                r.wait_synced_filtered(&t.src, &t.dst, &|rel, _| {
                    cache && (rel == b"cache" || rel.starts_with(b"cache/"))
                });
                if cache {
                    assert!(!t.d(b"cache").exists(), "{title}: the cache is left out");
                }
            }
            r.stop();
        }
    }
    assert!(ran >= 5, "{ran} lines");
}

/// clsync-manager(8) EXAMPLES: the shipped profiles of the four situations, checked and
/// started as the page shows (their directories changed to the test's), each mirrors.
#[test]
fn our_clsync_manager_8_examples_run_as_written() {
    let examples = man_examples("clsync-manager.8");
    let lines: Vec<&String> = examples.iter().flat_map(|(_, l)| l).collect();
    let started: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("# clsync-manager start "))
        .filter(|n| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("profiles/{n}.toml"))
                .exists()
        })
        .collect();
    assert_eq!(
        started,
        ["mirror", "backup", "web-mirror", "sparse-include"]
    );
    let checked: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("# clsync check "))
        .collect();
    assert!(!checked.is_empty(), "a clsync check line");
    for name in started {
        let t = TestDir::new("mig-mgr");
        seed(&t.src);
        for f in ["passwd", "group", "shadow", "hosts", "ssh/sshd_config"] {
            mkdir_p(&t.s(b"ssh"));
            write(&t.s(f.as_bytes()), f.as_bytes());
        }
        mkdir_p(&t.root.join("profiles"));
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("profiles/{name}.toml")),
        )
        .expect("shipped profile");
        let mut text = shipped.clone();
        for (from, to) in [
            ("/srv/mirror/data", &t.dst),
            ("/srv/mirror/www", &t.dst),
            ("/mnt/backup/data", &t.dst),
            ("/srv/etc-mirror", &t.dst),
            ("/srv/data", &t.src),
            ("/var/www", &t.src),
            (
                "\"/etc\"",
                &PathBuf::from(format!("\"{}\"", t.src.display())),
            ),
            ("/run/clsync", &t.root),
        ] {
            text = text.replace(from, &to.display().to_string());
        }
        assert_ne!(text, shipped);
        write(
            &t.root.join(format!("profiles/{name}.toml")),
            common::profiles::with_own_index(&t.root, &text).as_bytes(),
        );
        for c in &checked {
            let said = run(
                &t.root,
                &[
                    "check",
                    "--profiles-dir",
                    t.root.join("profiles").to_str().unwrap(),
                    name,
                ],
                Duration::from_secs(30),
            );
            assert_eq!(
                (said.code(), said.stdout.trim()),
                (
                    Some(0),
                    format!("{name}: ok ({} -> {})", t.src.display(), t.dst.display()).as_str()
                ),
                "clsync check {c} -> {name}: {}",
                said.describe()
            );
        }
        let mgr = Mgr::start(&t.root);
        mgr.ok(&["start", name]);
        mgr.wait_state(name, "running");
        if name == "sparse-include" {
            wait_until(SYNC_TIMEOUT, "the few files", || {
                let got = walkdir(&t.dst);
                if got == ["group", "passwd", "shadow", "ssh", "ssh/sshd_config"] {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            });
        } else {
            wait_synced(&t.src, &t.dst, SYNC_TIMEOUT);
        }
        mgr.ok(&["stop", name]);
    }
}

// ---------------------------------------------------------------------------
// clsync(1), RULES: its rules files as they are written
// ---------------------------------------------------------------------------

/// clsync(1) RULES, "Syncing pwdb files and sshd_config" in its non-rsync and rsync
/// forms, and "Syncing /srv/lxc tree (rsync case)": each rules file with the EXAMPLES
/// line of its kind (the direct mode's `cp --parents` of the authorized_keys example,
/// rsyncdirect's "Mirroring a directory") and `-R` naming it.
#[test]
fn man_rules_files() {
    let pwdb = ["group", "passwd", "shadow", "ssh", "ssh/sshd_config"];
    // Everything but the files below a tmp/ and the sessions directories.
    let lxc = [
        "X11",
        "X11/Xsession",
        "c1",
        "c1/rootfs",
        "c1/rootfs/etc",
        "c1/rootfs/etc/hostname",
        "c1/rootfs/tmp",
        "c1/rootfs/var",
        "c1/rootfs/var/lib",
        "c1/rootfs/var/lib/php",
        "group",
        "hosts",
        "passwd",
        "shadow",
        "ssh",
        "ssh/ssh_host_key",
        "ssh/sshd_config",
    ];
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "# which files to sync:\n+f^passwd$\n+f^group$\n+f^shadow$\n+f^ssh/sshd_config$\n\n# walk and monitor next directories:\n+W^$\n+W^ssh$\n\n# forbid the rest:\n-*\n",
            "clsync -Mdirect -Scp -W/mnt/master/home/ -D/home -R/etc/clsync/rules/authorized_files_only -- -Pfp --parents %INCLUDE-LIST% %destination-dir%",
            &pwdb,
        ),
        (
            "+f^passwd$\n+f^group$\n+f^shadow$\n+f^ssh/sshd_config$\n+d^$\n+d^ssh$\n-*\n",
            "clsync -Mrsyncdirect -W/path/to/source_dir -D/path/to/destination_dir -R/etc/clsync/rules/authorized_files_only",
            &pwdb,
        ),
        (
            "-d/sess(ion)?s?$\n-f/tmp/\n+*\n",
            "clsync -Mrsyncdirect -W/path/to/source_dir -D/path/to/destination_dir -R/etc/clsync/rules/authorized_files_only",
            &lxc,
        ),
    ];
    for (rules, line, want) in cases {
        for via in VIAS {
            let t = TestDir::new("mig-rules");
            mkdir_p(&t.root.join("rules"));
            write(
                &t.root.join("rules/authorized_files_only"),
                rules.as_bytes(),
            );
            for f in [
                "passwd",
                "group",
                "shadow",
                "hosts",
                "ssh/sshd_config",
                "ssh/ssh_host_key",
                "X11/Xsession",
                "c1/rootfs/etc/hostname",
                "c1/rootfs/tmp/scratch",
                "c1/rootfs/var/lib/php/sessions/sess_1",
            ] {
                let p = t.s(f.as_bytes());
                mkdir_p(p.parent().unwrap());
                write(&p, f.as_bytes());
            }
            let mut r = start(
                &t,
                via,
                line,
                &[
                    ("/mnt/master/home", t.src.clone()),
                    ("/home", t.dst.clone()),
                    ("/path/to/source_dir", t.src.clone()),
                    ("/path/to/destination_dir", t.dst.clone()),
                    ("/etc/clsync/rules", t.root.join("rules")),
                ],
                Opts::default(),
            );
            let dst = t.dst.clone();
            r.wait_for("what the rules permit", SYNC_TIMEOUT, || {
                let got = walkdir(&dst);
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            });
            r.stop();
        }
    }
}

/// clsync(1) of the original, --pre-exit-hook: "executed before the last sync iteration
/// (see --max-iterations, --exit-on-no-events and SIGNALS)"; its sync loop runs the hook
/// when --max-iterations is reached, then exits.
#[test]
fn pre_exit_hook_when_max_iterations_is_reached() {
    let t = TestDir::new("mig-maxit");
    seed(&t.src);
    let hooks = t.root.join("hooks.log");
    for name in ["stop-here.sh", "start-there.sh"] {
        write_script(
            &t.root.join(name),
            &format!(
                "#!/bin/sh\necho \"{name} $* $CLSYNC_STATUS\" >> '{}'\n",
                hooks.display()
            ),
        );
    }
    let mut r = start(
        &t,
        Via::Line,
        "clsync -w0 -t0 -T0 --max-iterations=2 --pre-exit-hook=/root/stop-here.sh --exit-hook=/root/start-there.sh -Mrsyncdirect -W/path/to/source_dir -D/path/to/destination_dir",
        &[
            ("/path/to/source_dir", t.src.clone()),
            ("/path/to/destination_dir", t.dst.clone()),
            ("/root", t.root.clone()),
        ],
        Opts::default(),
    );
    r.wait_mirrored(&t.src, &t.dst);
    write(&t.s(b"a/second"), b"the second iteration\n");
    let st = r.wait_exit();
    assert_eq!(st.code(), Some(0), "{}", r.context());
    assert_eq!(
        read_lossy(&hooks),
        "stop-here.sh nolabel preexit\nstart-there.sh nolabel exiting\n",
        "{}",
        r.context()
    );
}
