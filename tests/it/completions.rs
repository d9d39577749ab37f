//! Shell completions in the real shells (bash with bash-completion, zsh, fish), from the
//! scripts `clsync completions SHELL` and `clsync-manager completions SHELL` print, laid
//! out as the package installs them and loaded the way each shell loads them there:
//! option names, profile names (templates as `NAME@`) from the profiles directory, and
//! instance names from the running manager; a manager that does not answer and a
//! profiles directory that cannot be read cost no wait and print nothing.

use crate::common;

use common::manager::Mgr;
use common::profiles::mirror;
use common::{mkdir, wait_until, write, TestDir, SYNC_TIMEOUT};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CLSYNC: &str = env!("CARGO_BIN_EXE_clsync");
const MANAGER: &str = env!("CARGO_BIN_EXE_clsync-manager");

/// The longest a completion may keep the shell waiting (the program's own deadline is
/// 1.5 s; a manager that does not answer is given up after 0.3 s).
const SHELL_WAIT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug)]
enum Sh {
    Bash,
    Zsh,
    Fish,
}

const SHELLS: [Sh; 3] = [Sh::Bash, Sh::Zsh, Sh::Fish];

/// The completion scripts of both programs under `root/share` as the package installs
/// them in /usr/share, and a `$PATH` that finds this build's programs first (this
/// machine may have another clsync in /usr/bin).
struct Installed {
    share: PathBuf,
    path: OsString,
    home: PathBuf,
}

/// What the shells need that may be missing here: `Some(reason)` (the test skips, or
/// fails under CI=true, whose .ci/run installs them).
fn shells_missing() -> Option<String> {
    let missing: Vec<&str> = [
        ("bash-completion", BASH_COMPLETION),
        ("zsh", "zsh"),
        ("fish", "fish"),
    ]
    .into_iter()
    .filter(|(_, what)| {
        if what.starts_with('/') {
            !Path::new(what).exists()
        } else {
            Command::new(what)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        }
    })
    .map(|(name, _)| name)
    .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "not installed: {} (apt-get install zsh fish bash-completion)",
            missing.join(", ")
        )
    })
}

const BASH_COMPLETION: &str = "/usr/share/bash-completion/bash_completion";

/// What the shell drivers print when the shell was told to add no space after a match.
const NOSPACE: &str = "<nospace>";

impl Installed {
    /// The scripts installed under `root`, or `None` when a shell is missing (the test
    /// has said so: `return` then).
    #[track_caller]
    fn new(root: &Path) -> Option<Installed> {
        if let Some(reason) = shells_missing() {
            common::skip(&reason);
            return None;
        }
        let share = root.join("share");
        let bin_dir = Path::new(CLSYNC).parent().unwrap();
        for (program, bin) in [("clsync", CLSYNC), ("clsync-manager", MANAGER)] {
            for (shell, file) in [
                ("bash", format!("bash-completion/completions/{program}")),
                ("zsh", format!("zsh/vendor-completions/_{program}")),
                ("fish", format!("fish/vendor_completions.d/{program}.fish")),
            ] {
                let out = Command::new(bin)
                    .args(["completions", shell])
                    .current_dir(root)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success() && !out.stdout.is_empty() && out.stderr.is_empty(),
                    "{program} completions {shell}: {out:?}"
                );
                let path = share.join(file);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                write(&path, &out.stdout);
            }
        }
        let mut path = OsString::from(bin_dir);
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let home = root.join("home");
        mkdir(&home);
        Some(Installed { share, path, home })
    }

    /// What `shell` offers for the command line `words` (the last one is the word being
    /// completed, maybe empty), values only; the shell must print nothing else.
    fn complete(&self, shell: Sh, env: &[(&str, &OsString)], words: &[&str]) -> Vec<String> {
        self.complete_spaced(shell, env, words).0
    }

    /// [`complete`](Self::complete), and whether the shell was told to add no space after
    /// the match (bash: `compopt -o nospace`; zsh: `_describe … -S ''`; fish decides by
    /// itself, from the last character, and is not asked).
    fn complete_spaced(
        &self,
        shell: Sh,
        env: &[(&str, &OsString)],
        words: &[&str],
    ) -> (Vec<String>, bool) {
        let (out, took) = self.run(shell, env, words);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{shell:?} completing {words:?}: {out:?}"
        );
        assert!(
            took < SHELL_WAIT,
            "{shell:?} completing {words:?} took {took:?}"
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let nospace = text.lines().any(|l| l == NOSPACE);
        let mut got: Vec<String> = text
            .lines()
            .filter(|l| *l != NOSPACE)
            .map(|l| match shell {
                Sh::Bash => l.to_string(),
                // `value:description`, a `:` in the value escaped.
                Sh::Zsh => value_before(l, ':')
                    .replace("\\:", ":")
                    .replace("\\\\", "\\"),
                Sh::Fish => l.split('\t').next().unwrap_or_default().to_string(),
            })
            .collect();
        got.sort();
        (got, nospace)
    }

    fn run(&self, shell: Sh, env: &[(&str, &OsString)], words: &[&str]) -> (Output, Duration) {
        let mut cmd = match shell {
            // bash-completion's own loader finds the file in the user directory, as it
            // finds /usr/share/bash-completion/completions/clsync; then the function it
            // registered runs as at a TAB.
            Sh::Bash => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(concat!(
                        "source \"$CLSYNC_TEST_BASH_COMPLETION\" || exit 9\n",
                        "__load_completion \"$1\" || exit 8\n",
                        "f=$(complete -p \"$1\" | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p')\n",
                        "COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); COMP_LINE=\"$*\"\n",
                        "COMP_POINT=${#COMP_LINE}; COMP_TYPE=9; COMP_KEY=9\n",
                        // compopt works only under readline: record what it is told (IFS is \\013 there).
                        "nospace=; compopt() { [[ $1 == -o && $2 == nospace ]] && nospace=1; return 0; }\n",
                        "\"$f\" \"$1\" \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"\n",
                        "(( ${#COMPREPLY[@]} )) && printf '%s\\n' \"${COMPREPLY[@]}\"\n",
                        "[[ -n $nospace ]] && echo '<nospace>'\n",
                        "exit 0\n"
                    ))
                    .arg("bash")
                    .args(words)
                    .env("BASH_COMPLETION_USER_DIR", self.share.join("bash-completion"))
                    .env("CLSYNC_TEST_BASH_COMPLETION", BASH_COMPLETION);
                c
            }
            // compinit finds `#compdef clsync` in the vendor-completions file on $fpath
            // and autoloads it as `_clsync`; `_describe` (which would add the matches to
            // the line editor) prints them instead.
            Sh::Zsh => {
                let mut c = Command::new("zsh");
                c.arg("-f")
                    .arg("-c")
                    .arg(concat!(
                        "fpath=($1 $fpath); shift\n",
                        "autoload -Uz compinit && compinit -u -D || exit 9\n",
                        "_describe() { [[ $4 == -S && -z $5 ]] && print '<nospace>'; print -rl -- \"${(@P)3}\" }\n",
                        "words=(\"$@\"); CURRENT=$#\n",
                        "${_comps[$1]:?no completion for $1}\n",
                        "exit 0\n"
                    ))
                    .arg("zsh")
                    .arg(self.share.join("zsh/vendor-completions"))
                    .args(words);
                c
            }
            // fish autoloads clsync.fish from its completion path; `complete -C` is what
            // a TAB shows.
            Sh::Fish => {
                let line = words.join(" ");
                let mut c = Command::new("fish");
                c.arg("--no-config")
                    .arg("-c")
                    .arg("set -p fish_complete_path $argv[1]; complete -C $argv[2]")
                    .arg(self.share.join("fish/vendor_completions.d"))
                    .arg(line)
                    .env("XDG_CONFIG_HOME", self.home.join("config"))
                    .env("XDG_DATA_HOME", self.home.join("data"));
                c
            }
        };
        cmd.env("PATH", &self.path)
            .env("HOME", &self.home)
            .env_remove("CLSYNC_PROFILES_DIR")
            .env_remove("CLSYNC_MANAGER_SOCKET")
            .env_remove("COMPLETE")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.home)
            .stdin(Stdio::null());
        let start = Instant::now();
        let out = cmd.output().unwrap();
        (out, start.elapsed())
    }
}

/// `s` up to the first `sep` that is not escaped with `\`.
fn value_before(s: &str, sep: char) -> &str {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            c if c == sep && !escaped => return &s[..i],
            _ => escaped = false,
        }
    }
    s
}

fn names(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The candidates that are no option (an empty word is offered the options too).
fn no_options(v: Vec<String>) -> Vec<String> {
    v.into_iter().filter(|c| !c.starts_with('-')).collect()
}

/// A profiles directory with profiles a and b, template lxc, and what is no profile.
fn profiles_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    mkdir(&dir);
    let src = root.join("src");
    let dst = root.join("dst");
    write(&dir.join("a.toml"), mirror(&src, &dst, "").as_bytes());
    write(&dir.join("b.toml"), mirror(&src, &dst, "").as_bytes());
    write(
        &dir.join("lxc.toml"),
        mirror(&src.join("%label%"), &dst.join("%label%"), "").as_bytes(),
    );
    // Not profiles: another extension, a dot-file, a directory.
    write(&dir.join("notes.txt"), b"");
    write(&dir.join(".hidden.toml"), b"");
    mkdir(&dir.join("d.toml"));
    dir
}

#[test]
fn profile_names_complete_in_bash_zsh_and_fish() {
    let t = TestDir::new("completions-profiles");
    let Some(sh) = Installed::new(&t.root) else {
        return;
    };
    let dir: OsString = profiles_dir(&t.root, "profiles").into();
    let other = t.root.join("other");
    mkdir(&other);
    write(
        &other.join("elsewhere.toml"),
        mirror(&t.src, &t.dst, "").as_bytes(),
    );
    let env = [("CLSYNC_PROFILES_DIR", &dir)];
    for shell in SHELLS {
        let got = |words: &[&str]| sh.complete(shell, &env, words);
        assert_eq!(
            got(&["clsync", "--profile", ""]),
            names(&["a", "b", "lxc@"]),
            "{shell:?}"
        );
        // A template's label comes right after the @: no space (fish: its own rule).
        let (m, nospace) = sh.complete_spaced(shell, &env, &["clsync", "--profile", "l"]);
        assert_eq!(m, names(&["lxc@"]), "{shell:?}");
        assert!(
            nospace || matches!(shell, Sh::Fish),
            "{shell:?}: a space after lxc@"
        );
        let (m, nospace) = sh.complete_spaced(shell, &env, &["clsync", "--profile", "a"]);
        assert_eq!((m, nospace), (names(&["a"]), false), "{shell:?}");
        assert_eq!(
            no_options(got(&["clsync", "show-config", ""])),
            names(&["a", "b", "lxc@"]),
            "{shell:?}"
        );
        // `check` checks a template as it is.
        assert_eq!(
            no_options(got(&["clsync", "check", ""])),
            names(&["a", "b", "lxc"]),
            "{shell:?}"
        );
        // --profiles-dir on the command line wins over the environment, as when it runs.
        let o = other.to_str().unwrap();
        assert_eq!(
            got(&["clsync", "--profiles-dir", o, "--profile", ""]),
            names(&["elsewhere"]),
            "{shell:?}"
        );
        // `--profiles-dir=DIR`, which bash's line editor splits into three words at the `=`.
        let joined = format!("--profiles-dir={o}");
        let words: Vec<&str> = match shell {
            Sh::Bash => vec!["clsync", "--profiles-dir", "=", o, "--profile", ""],
            _ => vec!["clsync", &joined, "--profile", ""],
        };
        assert_eq!(got(&words), names(&["elsewhere"]), "{shell:?}");
        // Without a manager (no socket there), the manager's commands offer the profiles.
        assert_eq!(
            no_options(got(&["clsync-manager", "start", ""])),
            names(&["a", "b", "lxc@"]),
            "{shell:?}"
        );
    }
}

#[test]
fn option_and_command_names_complete_in_bash_zsh_and_fish() {
    let t = TestDir::new("completions-options");
    let Some(sh) = Installed::new(&t.root) else {
        return;
    };
    for shell in SHELLS {
        let got = |words: &[&str]| sh.complete(shell, &[], words);
        assert_eq!(
            got(&["clsync", "--exc"]),
            names(&["--exclude", "--exclude-mount-points"]),
            "{shell:?}"
        );
        assert_eq!(got(&["clsync", "--profiles-d"]), names(&["--profiles-dir"]));
        assert_eq!(
            got(&["clsync", "completions", ""])
                .into_iter()
                .filter(|c| !c.starts_with('-'))
                .collect::<Vec<_>>(),
            names(&["bash", "fish", "zsh"]),
            "{shell:?}"
        );
        assert_eq!(
            got(&["clsync-manager", "st"]),
            names(&["start", "status", "stop"]),
            "{shell:?}"
        );
        assert_eq!(
            got(&["clsync-manager", "logs", "--li"]),
            names(&["--lines"]),
            "{shell:?}"
        );
    }
}

#[test]
fn manager_commands_complete_the_instances_the_running_manager_knows() {
    let t = TestDir::new("completions-manager");
    let Some(sh) = Installed::new(&t.root) else {
        return;
    };
    let m = Mgr::start(&t.root);
    mkdir(&t.src.join("web01"));
    mkdir(&t.dst.join("web01"));
    m.profile("a", &mirror(&t.src, &t.dst, ""));
    m.profile("b", &mirror(&t.src, &t.dst, ""));
    m.profile(
        "lxc",
        &mirror(&t.src.join("%label%"), &t.dst.join("%label%"), ""),
    );
    for name in ["a", "lxc@web01"] {
        let o = m.cli(&["start", name]);
        assert_eq!(o.code, Some(0), "{}{}\n{}", o.stdout, o.stderr, m.log());
    }
    wait_until(SYNC_TIMEOUT, "both instances to be listed", || {
        let list = m.status();
        (list.len() == 2).then_some(()).ok_or(format!("{list:?}"))
    });
    // The profiles directory the completion would fall back to has none of these: what
    // is offered comes from the manager.
    let empty: OsString = t.root.join("empty").into();
    mkdir(Path::new(&empty));
    let socket: OsString = m.socket.clone().into();
    let env = [
        ("CLSYNC_MANAGER_SOCKET", &socket),
        ("CLSYNC_PROFILES_DIR", &empty),
    ];
    for shell in SHELLS {
        let got = |words: &[&str]| no_options(sh.complete(shell, &env, words));
        for cmd in ["stop", "restart", "status", "logs", "resync", "resolve"] {
            assert_eq!(
                got(&["clsync-manager", cmd, ""]),
                names(&["a", "lxc@web01"]),
                "{shell:?} {cmd}"
            );
        }
        assert_eq!(
            got(&["clsync-manager", "start", ""]),
            names(&["a", "b", "lxc@", "lxc@web01"]),
            "{shell:?}"
        );
        assert_eq!(
            got(&["clsync-manager", "stop", "lxc"]),
            names(&["lxc@web01"]),
            "{shell:?}"
        );
        // The socket given on the command line, as the command would use it.
        let s = m.socket.to_str().unwrap();
        let env = [("CLSYNC_PROFILES_DIR", &empty)];
        assert_eq!(
            no_options(sh.complete(shell, &env, &["clsync-manager", "--socket", s, "stop", ""])),
            names(&["a", "lxc@web01"]),
            "{shell:?}"
        );
    }
}

/// One completion request straight to the program, as the scripts make it.
fn request(
    program: &str,
    env: &[(&str, &OsString)],
    words: &[&str],
    as_nobody: bool,
) -> (Output, Duration) {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.arg("--")
        .args(words)
        .env_remove("CLSYNC_PROFILES_DIR")
        .env_remove("CLSYNC_MANAGER_SOCKET")
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .env("_CLAP_IFS", "\n")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null());
    let start = Instant::now();
    let out = cmd.output().unwrap();
    (out, start.elapsed())
}

#[test]
fn a_manager_that_does_not_answer_and_an_unreadable_directory_cost_no_wait() {
    let t = TestDir::new("completions-silent");
    let Some(sh) = Installed::new(&t.root) else {
        return;
    };
    let dir: OsString = profiles_dir(&t.root, "profiles").into();

    // A socket that takes the connection and never answers (never even accepts).
    let silent = t.root.join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let socket: OsString = silent.clone().into();
    let env = [
        ("CLSYNC_MANAGER_SOCKET", &socket),
        ("CLSYNC_PROFILES_DIR", &dir),
    ];
    let (out, took) = request(MANAGER, &env, &["clsync-manager", "stop", ""], false);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let offered: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        no_options(offered),
        names(&["a", "b", "lxc@"]),
        "the profiles instead"
    );
    assert!(took < Duration::from_millis(1200), "waited {took:?}");
    for shell in SHELLS {
        assert_eq!(
            no_options(sh.complete(shell, &env, &["clsync-manager", "stop", ""])),
            names(&["a", "b", "lxc@"]),
            "{shell:?}"
        );
    }
    drop(listener);

    // A profiles directory its user cannot read (0700 root, asked as nobody), one that
    // does not exist, and one that is a file: no names, no words on the terminal.
    let private = t.root.join("private");
    mkdir(&private);
    write(&private.join("secret.toml"), b"");
    common::chmod(&private, 0o700);
    // The test directory itself is 0700: let nobody through to `private` alone.
    common::chmod(&t.root, 0o711);
    let cases: [(PathBuf, bool); 3] = [
        (private.clone(), true),
        (t.root.join("missing"), false),
        (t.root.join("private/secret.toml"), false),
    ];
    for (dir, as_nobody) in cases {
        let d: OsString = dir.clone().into();
        let env = [("CLSYNC_PROFILES_DIR", &d)];
        let (out, took) = request(CLSYNC, &env, &["clsync", "--profile", ""], as_nobody);
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "{}: {out:?}",
            dir.display()
        );
        assert!(took < SHELL_WAIT, "{}: {took:?}", dir.display());
    }
}

#[test]
fn a_completion_request_runs_nothing_else() {
    // Words that would be a mirror of src to dst: asked to complete them, the program
    // only completes (nothing is synced, no pid file is written), and a COMPLETE that
    // names no shell is no request at all.
    let t = TestDir::new("completions-nothing-else");
    write(&t.s(b"file"), b"data");
    let pid = t.root.join("pid");
    let (src, dst, pidf) = (
        t.src.to_str().unwrap(),
        t.dst.to_str().unwrap(),
        pid.to_str().unwrap(),
    );
    let (out, took) = request(
        CLSYNC,
        &[],
        &[
            "clsync",
            "--exit-on-no-events",
            "-z",
            pidf,
            src,
            dst,
            "--ex",
        ],
        false,
    );
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let offered = String::from_utf8_lossy(&out.stdout);
    assert!(offered.lines().any(|l| l == "--exclude"), "{offered}");
    assert!(took < SHELL_WAIT, "{took:?}");
    assert!(!t.d(b"file").exists() && !pid.exists(), "the worker ran");
    let v = Command::new(CLSYNC)
        .arg("--version")
        .env("COMPLETE", "1")
        .output()
        .unwrap();
    assert!(
        v.status.success() && String::from_utf8_lossy(&v.stdout).starts_with("clsync "),
        "{v:?}"
    );
}
