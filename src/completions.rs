/*!
Shell completions (bash, zsh, fish) for `clsync` and `clsync-manager`.

Why dynamic: the names a person wants completed, profiles of the profiles directory and
instances of the running manager, exist only when TAB is pressed, so the shell has to ask
a program then in any design. Here it asks the program itself: the scripts are
clap_complete's `COMPLETE=SHELL PROGRAM -- WORDS…` registrations, and the program answers
from its own clap command (options, subcommands, values: never out of step with the
binary) plus the completers below for names. A static script per shell would need the
same call patched into three generated scripts in three languages.

What the request may do: it is answered first in `main`, before logging, configuration or
anything else ([`complete_if_asked`]); it reads the profiles directory and asks the
manager's control socket `list`, nothing else. A shell waits for it, so it must not
hang and must not write into the terminal: the socket gets [`SOCKET_WAIT`], the whole
request [`DEADLINE`] (then the process exits with no candidates), and standard error goes
to /dev/null while it runs (bash's registration does not silence it). Names that would
need quoting in a shell are not offered (a candidate is inserted as it is).
*/

use clap_complete::engine::{ArgValueCandidates, ArgValueCompleter, CompletionCandidate};
use clap_complete::env::{Bash, EnvCompleter, Fish, Shells, Zsh};
use clap_complete::CompleteEnv;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable the scripts set: `COMPLETE=bash clsync -- WORDS…`.
pub const VAR: &str = "COMPLETE";
/// How long a completion waits for the manager's answer before it offers the profiles.
pub const SOCKET_WAIT: Duration = Duration::from_millis(300);
/// How long a completion request may take in all; then it exits with no candidates.
pub const DEADLINE: Duration = Duration::from_millis(1500);

/// The program whose command line is completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Clsync,
    Manager,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Clsync => "clsync",
            Program::Manager => "clsync-manager",
        }
    }
}

/// The shells a script is printed for (`clsync completions SHELL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// One of clap's completers whose registration script is edited: `edit.0` replaced by
/// `edit.1`, then `tail` (of the command's name and the binary's) appended. The
/// completion itself is clap's.
struct Edited<S: 'static> {
    shell: S,
    edit: (&'static str, &'static str),
    tail: fn(name: &str, bin: &str) -> String,
}

/// bash: clap's registration, with a candidate ending in `@` (a template, `NAME@`, whose
/// label comes next) left without a space after it, as one ending in `=`, `/` or `:`.
const BASH: Edited<Bash> = Edited {
    shell: Bash,
    edit: BASH_NOSPACE,
    tail: |_, _| String::new(),
};

/// zsh: clap's registration, which also completes when it is autoloaded from `fpath` as
/// `_clsync` (the package's vendor-completions file): the first TAB runs the file's body,
/// which only defines the completer unless the body calls it too. And, as in bash, no
/// space after a template's `NAME@`. (fish adds none after `@` by itself.)
const ZSH: Edited<Zsh> = Edited {
    shell: Zsh,
    edit: ZSH_NOSPACE,
    tail: |name, bin| {
        let f = name.replace('-', "_");
        format!("if [ \"$funcstack[1]\" = \"_{bin}\" ]; then\n    _clap_dynamic_completer_{f} \"$@\"\nfi\n")
    },
};

/// Fragments of clap_complete's scripts that [`BASH`] and [`ZSH`] edit; a
/// unit test fails if a new clap_complete no longer writes them.
const BASH_NOSPACE: (&str, &str) = ("=~ [=/:]$ ]]", "=~ [=/:@]$ ]]");
const ZSH_NOSPACE: (&str, &str) = (
    "        [[ -n $other ]] && _describe -V 'values' other\n",
    r#"        local -a at=() rest=()
        for completion in $other; do
            if [[ "${completion%%:*}" == *@ ]]; then
                at+=("$completion")
            else
                rest+=("$completion")
            fi
        done
        [[ -n $at ]] && _describe -V 'values' at -S ''
        [[ -n $rest ]] && _describe -V 'values' rest
"#,
);

impl<S: EnvCompleter> EnvCompleter for Edited<S> {
    fn name(&self) -> &'static str {
        self.shell.name()
    }
    fn is(&self, name: &str) -> bool {
        self.shell.is(name)
    }
    fn write_registration(
        &self,
        var: &str,
        name: &str,
        bin: &str,
        completer: &str,
        buf: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        let mut script = Vec::new();
        (self.shell).write_registration(var, name, bin, completer, &mut script)?;
        let script = String::from_utf8_lossy(&script).replace(self.edit.0, self.edit.1);
        buf.write_all(script.as_bytes())?;
        buf.write_all((self.tail)(name, bin).as_bytes())
    }
    fn write_complete(
        &self,
        cmd: &mut clap::Command,
        args: Vec<OsString>,
        current_dir: Option<&Path>,
        buf: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        self.shell.write_complete(cmd, args, current_dir, buf)
    }
}

const SHELLS: Shells<'static> = Shells(&[&BASH, &ZSH, &Fish]);

/// Whether `value` of [`VAR`] names a shell of [`SHELLS`] (`bash`, or a path to it as in
/// `$SHELL`): anything else (unset, empty, `0`, `yes`) is no completion request, and the
/// program runs as usual.
fn requested(value: &OsStr) -> bool {
    let stem = Path::new(value).file_stem().unwrap_or(value);
    SHELLS.completer(&stem.to_string_lossy()).is_some()
}

/// Answers a completion request (the environment has `COMPLETE=SHELL`) and exits; returns
/// at once when there is none. Call it first in `main`: before it nothing may be printed,
/// and it must come before any side effect.
pub fn complete_if_asked(program: Program) {
    match std::env::var_os(VAR) {
        Some(v) if requested(&v) => {}
        _ => return,
    }
    silence_stderr();
    std::thread::spawn(|| {
        std::thread::sleep(DEADLINE);
        // No candidates rather than a shell that waits.
        std::process::exit(1);
    });
    let words: Vec<OsString> = std::env::args_os()
        .skip_while(|a| a != "--")
        .skip(1)
        .collect();
    let context = Context::of(program, &words);
    let current_dir = std::env::current_dir().ok();
    let done = CompleteEnv::with_factory(move || context.command())
        .var(VAR)
        .shells(SHELLS)
        .try_complete(std::env::args_os(), current_dir.as_deref());
    std::process::exit(match done {
        Ok(_) => 0,
        Err(_) => 1,
    })
}

/// Points standard error at /dev/null for the rest of a completion request.
fn silence_stderr() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 2);
    }
}

/// The script that registers `program`'s completion in `shell`; it runs `program` from
/// `$PATH` at each TAB (what the package installs under /usr/share).
#[must_use]
pub fn script(program: Program, shell: Shell) -> String {
    let name = program.name();
    let shell: &dyn EnvCompleter = match shell {
        Shell::Bash => &BASH,
        Shell::Zsh => &ZSH,
        Shell::Fish => &Fish,
    };
    let mut buf = Vec::new();
    // Writing into a Vec does not fail.
    let _ = shell.write_registration(VAR, name, name, name, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// What the words already on the command line say about where names come from.
#[derive(Clone)]
struct Context {
    program: Program,
    /// `--profiles-dir DIR` given on the command line.
    profiles_dir: Option<PathBuf>,
    /// `--socket PATH` given on the command line (the manager's).
    socket: Option<PathBuf>,
}

impl Context {
    fn of(program: Program, words: &[OsString]) -> Context {
        Context {
            program,
            profiles_dir: option_value(words, "--profiles-dir"),
            socket: option_value(words, "--socket"),
        }
    }

    fn profiles_dir(&self) -> PathBuf {
        crate::profile::profiles_dir(self.profiles_dir.as_deref())
    }

    fn socket(&self) -> PathBuf {
        use crate::manager::protocol::{DEFAULT_SOCKET, SOCKET_ENV};
        self.socket
            .clone()
            .or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// The program's command with the name completers attached.
    fn command(&self) -> clap::Command {
        match self.program {
            Program::Clsync => self.clsync(crate::cli::command()),
            Program::Manager => self.manager(crate::manager::cli::command()),
        }
    }

    fn clsync(&self, cmd: clap::Command) -> clap::Command {
        let run = self.clone();
        let show = self.clone();
        let check = self.clone();
        cmd.mut_arg("profile", |a| {
            a.add(ArgValueCandidates::new(move || {
                profile_names(&run.profiles_dir(), Templates::WithAt)
            }))
        })
        .mut_subcommand("show-config", |s| {
            s.mut_arg("name", |a| {
                a.add(ArgValueCandidates::new(move || {
                    profile_names(&show.profiles_dir(), Templates::WithAt)
                }))
            })
        })
        .mut_subcommand("check", |s| {
            s.mut_arg("targets", |a| {
                a.add(ArgValueCompleter::new(move |current: &OsStr| {
                    check_targets(&check.profiles_dir(), current)
                }))
            })
        })
    }

    fn manager(&self, mut cmd: clap::Command) -> clap::Command {
        for sub in [
            "start", "stop", "restart", "status", "resync", "resolve", "logs",
        ] {
            let ctx = self.clone();
            cmd = cmd.mut_subcommand(sub, |s| {
                s.mut_arg("name", |a| {
                    a.add(ArgValueCandidates::new(move || {
                        instance_names(&ctx.socket(), &ctx.profiles_dir(), sub == "start")
                    }))
                })
            });
        }
        cmd
    }
}

/// The value of `--NAME VALUE` or `--NAME=VALUE` among `words` (the last one given);
/// bash splits `--NAME=VALUE` into three words at the `=` (`COMP_WORDBREAKS`).
fn option_value(words: &[OsString], name: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut found = None;
    for (i, w) in words.iter().enumerate() {
        let b = w.as_bytes();
        if b == name.as_bytes() {
            let at = if words.get(i + 1).is_some_and(|n| n == "=") {
                i + 2
            } else {
                i + 1
            };
            found = words.get(at).map(PathBuf::from).or(found);
        } else if let Some(v) = b
            .strip_prefix(name.as_bytes())
            .and_then(|r| r.strip_prefix(b"="))
        {
            found = Some(PathBuf::from(OsStr::from_bytes(v)));
        }
    }
    found.filter(|p| !p.as_os_str().is_empty())
}

/// How a template profile is offered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Templates {
    /// `NAME@`: a label has to follow (`--profile`, `show-config`, `start`).
    WithAt,
    /// `NAME` (`check` checks a template as it is).
    Plain,
}

/// Whether a name can be offered as it is: inserted unquoted into a command line, it
/// stays one word that means itself.
fn shell_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '@' | '.' | '_' | '-' | '+' | ',' | '='))
}

/// The profiles of `dir`, a template as `NAME@` or `NAME`; none when the directory cannot
/// be read. Each file is read without the strict-modes check: a completion only shows its
/// name, and a refused profile is still one the person may mean (and is then told why).
fn profile_names(dir: &Path, templates: Templates) -> Vec<CompletionCandidate> {
    crate::strict::disable();
    let Ok(profiles) = crate::profile::load_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<CompletionCandidate> = profiles
        .keys()
        .filter(|n| shell_safe(n))
        .map(|n| {
            let template = crate::profile::is_template_profile(&profiles, n).unwrap_or(false);
            if template && templates == Templates::WithAt {
                CompletionCandidate::new(format!("{n}@"))
                    .help(Some("template: give a label after the @".into()))
            } else {
                CompletionCandidate::new(n.as_str())
            }
        })
        .collect();
    out.sort_by(|a, b| a.get_value().cmp(b.get_value()));
    out
}

/// `clsync check`'s targets: profile names, and profile files once the word looks like a
/// path (it has a `/`, or starts with `.`).
fn check_targets(dir: &Path, current: &OsStr) -> Vec<CompletionCandidate> {
    use std::os::unix::ffi::OsStrExt;
    let b = current.as_bytes();
    if b.contains(&b'/') || b.starts_with(b".") {
        use clap_complete::engine::{PathCompleter, ValueCompleter};
        return PathCompleter::any()
            .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "toml"))
            .complete(current);
    }
    profile_names(dir, Templates::Plain)
        .into_iter()
        .filter(|c| c.get_value().as_bytes().starts_with(b))
        .collect()
}

/// The names `clsync-manager` commands take: the instances the running manager knows
/// (`list` over its control socket), and for `start` its profiles too (templates as
/// `NAME@`). A manager that does not answer within [`SOCKET_WAIT`]: the profiles of the
/// profiles directory.
fn instance_names(socket: &Path, dir: &Path, start: bool) -> Vec<CompletionCandidate> {
    let Some(list) = manager_list(socket) else {
        return profile_names(dir, Templates::WithAt);
    };
    let mut out: Vec<CompletionCandidate> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut offer = |name: String, help: Option<String>| {
        if shell_safe(&name) && seen.insert(name.clone()) {
            out.push(CompletionCandidate::new(name).help(help.map(Into::into)));
        }
    };
    for p in &list {
        for i in &p.instances {
            offer(i.name.clone(), Some(i.state.clone()));
        }
    }
    if start {
        for p in &list {
            if p.template {
                offer(
                    format!("{}@", p.profile),
                    Some("template: give a label after the @".into()),
                );
            } else {
                offer(p.profile.clone(), None);
            }
        }
    }
    out.sort_by(|a, b| a.get_value().cmp(b.get_value()));
    out
}

/// A profile in the manager's `list` answer, as far as a completion needs it.
#[derive(serde::Deserialize)]
struct Listed {
    profile: String,
    #[serde(default)]
    template: bool,
    #[serde(default)]
    instances: Vec<ListedInstance>,
}

#[derive(serde::Deserialize)]
struct ListedInstance {
    name: String,
    #[serde(default)]
    state: String,
}

#[derive(serde::Deserialize)]
struct ListReply {
    ok: bool,
    #[serde(default)]
    data: Option<Vec<Listed>>,
}

/// The manager's `list`, or `None` when it does not answer (in time): the call runs on a
/// thread of its own, left behind if it hangs (in `connect` to a full backlog, or a
/// daemon that accepts and never answers).
fn manager_list(socket: &Path) -> Option<Vec<Listed>> {
    let socket = socket.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let req = crate::manager::protocol::Request {
            cmd: "list".into(),
            name: None,
            lines: None,
            keep: None,
        };
        let line = crate::manager::protocol::call_line(&socket, &req, SOCKET_WAIT);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(SOCKET_WAIT).ok()?.ok()?;
    match serde_json::from_str::<ListReply>(&line).ok()? {
        ListReply {
            ok: true,
            data: Some(list),
        } => Some(list),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edited_fragments_are_in_clap_completes_scripts() {
        let mut b = Vec::new();
        Bash.write_registration(VAR, "clsync", "clsync", "clsync", &mut b)
            .unwrap();
        let b = String::from_utf8(b).unwrap();
        assert!(b.contains(BASH_NOSPACE.0), "{b}");
        assert!(script(Program::Clsync, Shell::Bash).contains(BASH_NOSPACE.1));
        let mut z = Vec::new();
        Zsh.write_registration(VAR, "clsync-manager", "clsync-manager", "x", &mut z)
            .unwrap();
        let z = String::from_utf8(z).unwrap();
        assert!(
            z.contains("_clap_dynamic_completer_clsync_manager()"),
            "{z}"
        );
        assert!(z.starts_with("#compdef clsync-manager"), "{z}");
        assert!(z.contains(ZSH_NOSPACE.0), "{z}");
        assert!(script(Program::Clsync, Shell::Zsh).contains("at -S ''"));
    }

    #[test]
    fn the_completers_attach_to_arguments_that_exist() {
        // mut_arg and mut_subcommand panic on a name that is not there (a renamed field).
        for program in [Program::Clsync, Program::Manager] {
            let mut cmd = Context::of(program, &[]).command();
            cmd.build();
        }
    }

    #[test]
    fn only_a_shell_name_is_a_request() {
        for v in ["bash", "zsh", "fish", "/bin/bash", "/usr/bin/zsh"] {
            assert!(requested(OsStr::new(v)), "{v}");
        }
        for v in ["", "0", "1", "yes", "powershell", "sh"] {
            assert!(!requested(OsStr::new(v)), "{v}");
        }
    }

    #[test]
    fn option_values_from_the_words() {
        let w = |s: &[&str]| s.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            option_value(
                &w(&["clsync", "--profiles-dir", "/x", "--profile", ""]),
                "--profiles-dir"
            ),
            Some(PathBuf::from("/x"))
        );
        assert_eq!(
            option_value(
                &w(&["clsync", "--profiles-dir=/y", "--profile"]),
                "--profiles-dir"
            ),
            Some(PathBuf::from("/y"))
        );
        assert_eq!(
            option_value(&w(&["clsync", "--profiles-dir"]), "--profiles-dir"),
            None
        );
        assert_eq!(
            option_value(
                &w(&["clsync", "--profiles-dir", "=", "/z", "--profile", ""]),
                "--profiles-dir"
            ),
            Some(PathBuf::from("/z"))
        );
    }

    #[test]
    fn names_that_need_quoting_are_not_offered() {
        for ok in ["web", "lxc@", "a.b_c-d", "zürich"] {
            assert!(shell_safe(ok), "{ok}");
        }
        for bad in ["", "a b", "a;b", "$(x)", "a\nb", "a'b", "*", "~x"] {
            assert!(!shell_safe(bad), "{bad:?}");
        }
    }
}
