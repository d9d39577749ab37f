//! The sync-handler modes, each with a recording handler: the exact argv, list files,
//! environment and working directory the handler gets, and the failure policy.
//!
//! The recording handler stores each call in its own numbered directory: `argv`
//! (NUL-separated), `env` (the CLSYNC_* variables), `cwd`, `uid`, and a copy of every
//! argument that names a file (list files are removed once the batch is over). It fails
//! call N when the file `fail.N` exists (with the code in it, or by SIGKILL for `KILL`).

use crate::common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const MASK_DIR: u32 = libc::IN_CREATE | libc::IN_ISDIR;
const MASK_FILE: u32 = libc::IN_CREATE;

struct Recorder {
    script: PathBuf,
    dir: PathBuf,
}

#[derive(Debug)]
struct Call {
    argv: Vec<Vec<u8>>,
    env: BTreeMap<String, String>,
    cwd: String,
    uid: String,
    /// Copies of the files named by arguments, by argument index (argv[0] = 0).
    files: BTreeMap<usize, Vec<u8>>,
}

impl Call {
    fn args(&self) -> Vec<String> {
        self.argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    fn file(&self, i: usize) -> String {
        String::from_utf8_lossy(
            self.files
                .get(&i)
                .unwrap_or_else(|| panic!("argument {i} of {:?} names no file", self.args())),
        )
        .into_owned()
    }
}

fn recorder(t: &TestDir) -> Recorder {
    let dir = t.root.join("calls");
    mkdir(&dir);
    let script = t.root.join("record.sh");
    let text = format!(
        r#"#!/bin/sh
d='{dir}'
n=1
while ! mkdir "$d/$n" 2>/dev/null; do n=$((n+1)); done
c="$d/$n"
printf '%s\0' "$0" "$@" > "$c/argv.tmp"
env | grep '^CLSYNC_' | sort > "$c/env"
pwd > "$c/cwd"
id -u > "$c/uid"
i=0
for a in "$@"; do
  i=$((i+1))
  if [ -f "$a" ]; then cp "$a" "$c/file.$i"; fi
done
mv "$c/argv.tmp" "$c/argv"
if [ -e "$d/fail.$n" ]; then
  f=$(cat "$d/fail.$n")
  if [ "$f" = KILL ]; then kill -KILL $$; fi
  exit "$f"
fi
exit 0
"#,
        dir = dir.display()
    );
    write_script(&script, &text);
    Recorder { script, dir }
}

impl Recorder {
    /// The calls completed so far (argv written last), in order.
    fn calls(&self) -> Vec<Call> {
        let mut out = Vec::new();
        for n in 1.. {
            let c = self.dir.join(n.to_string());
            let Ok(argv) = std::fs::read(c.join("argv")) else {
                break;
            };
            let argv: Vec<Vec<u8>> = argv
                .split(|&b| b == 0)
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>();
            let argv = argv[..argv.len() - 1].to_vec();
            let env = std::fs::read_to_string(c.join("env"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let mut files = BTreeMap::new();
            for i in 1..argv.len() {
                if let Ok(data) = std::fs::read(c.join(format!("file.{i}"))) {
                    files.insert(i, data);
                }
            }
            out.push(Call {
                argv,
                env,
                cwd: std::fs::read_to_string(c.join("cwd"))
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                uid: std::fs::read_to_string(c.join("uid"))
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                files,
            });
        }
        out
    }

    /// Waits until at least `n` calls are complete; returns them all.
    fn wait_calls(&self, n: usize) -> Vec<Call> {
        let mut calls = Vec::new();
        wait_until(SYNC_TIMEOUT, &format!("{n} handler calls"), || {
            calls = self.calls();
            if calls.len() >= n {
                Ok(())
            } else {
                Err(format!("{} calls: {:#?}", calls.len(), calls))
            }
        });
        calls
    }

    /// Waits for a call that `pred` accepts; returns it.
    fn wait_call(&self, what: &str, pred: impl Fn(&Call) -> bool) -> Call {
        let mut found = None;
        wait_until(SYNC_TIMEOUT, what, || {
            let calls = self.calls();
            let n = calls.len();
            found = calls.into_iter().find(|c| pred(c));
            found
                .as_ref()
                .map(|_| ())
                .ok_or_else(|| format!("not among {n} calls: {:#?}", self.calls()))
        });
        found.unwrap()
    }

    fn fail(&self, call: usize, how: &str) {
        write(&self.dir.join(format!("fail.{call}")), how.as_bytes());
    }
}

/// Starts a classic-form worker in `mode` with the recorder as handler, quick delays and
/// label `lbl`; `extra` options go before `--` and `args` after it. The status file is in
/// a directory of its own (a confined worker may write there: not the test's root).
fn start(t: &TestDir, rec: &Recorder, mode: &str, extra: &[&str], args: &[&str]) -> Worker {
    let status = status_file(t);
    let mut a: Vec<OsString> = vec![
        "-M".into(),
        mode.into(),
        "-S".into(),
        rec.script.clone().into(),
        "-W".into(),
        t.src.clone().into(),
        "-l".into(),
        "lbl".into(),
        "-t".into(),
        "0.1".into(),
        "-w".into(),
        "0.1".into(),
        "-T".into(),
        "0.1".into(),
        "--status-file".into(),
        status.clone().into(),
    ];
    a.extend(extra.iter().map(OsString::from));
    if !args.is_empty() {
        a.push("--".into());
        a.extend(args.iter().map(OsString::from));
    }
    Worker::start_raw(&t.root, &t.src, &t.dst, &status, &a)
}

/// `run/status` under the test's root (the directory is made).
fn status_file(t: &TestDir) -> PathBuf {
    let run = t.root.join("run");
    mkdir_p(&run);
    run.join("status")
}

/// The options of a run with the sandbox on or off: `--sandbox` with the recorder's
/// directory writable (`--sandbox-write`; the handler records its calls there), or
/// nothing.
fn confined(rec: &Recorder, sandbox: bool) -> Vec<String> {
    if sandbox {
        vec!["--sandbox".into(), "--sandbox-write".into(), s(&rec.dir)]
    } else {
        Vec::new()
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn shell_mode(name: &str, sandbox: bool) {
    let t = TestDir::new(name);
    let rec = recorder(&t);
    mkdir(&t.s(b"a"));
    write(&t.s(b"a/f"), b"1");
    let extra = confined(&rec, sandbox);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut w = start(&t, &rec, "shell", &extra, &[]);
    if sandbox {
        w.assert_sandboxed();
    }
    let first = &rec.wait_calls(1)[0];
    let args = first.args();
    assert_eq!(args[..3], [s(&rec.script), "synclist".into(), "lbl".into()]);
    assert_eq!(args.len(), 4, "{args:?}");
    assert_eq!(
        first.file(3),
        format!("sync lbl {MASK_DIR} \nsync lbl {MASK_DIR} a\nsync lbl {MASK_FILE} a/f\n"),
        "the initial sync lists every node"
    );
    assert_eq!(first.env["CLSYNC_STATUS"], "initsync");
    assert_eq!(first.env["CLSYNC_ITERATION"], "0");
    assert_eq!(first.env["CLSYNC_LABEL"], "lbl");
    assert_eq!(first.env["CLSYNC_LIST_FORMAT"], "newline");
    assert_eq!(first.cwd, s(&t.src));

    write(&t.s(b"b c"), b"2");
    let live = rec.wait_call("a list with \"b c\"", |c| {
        c.files.get(&3).is_some_and(|f| f.ends_with(b" b c\n"))
    });
    let line = live.file(3);
    let mask: u32 = line
        .strip_prefix("sync lbl ")
        .and_then(|l| l.strip_suffix(" b c\n"))
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("not one `sync lbl MASK b c` line: {line:?}"));
    assert_ne!(mask & libc::IN_CREATE, 0, "mask {mask:#x} has IN_CREATE");
    assert_eq!(live.env["CLSYNC_STATUS"], "running");
    assert_ne!(live.env["CLSYNC_ITERATION"], "0");
    // The list file is removed once the batch is over.
    let list = PathBuf::from(&live.args()[3]);
    wait_until(SYNC_TIMEOUT, "the list file to be removed", || {
        (!list.exists())
            .then_some(())
            .ok_or_else(|| format!("{} still exists", list.display()))
    });
    w.stop_ok();
}

cases! { shell_mode;
    shell_mode_gets_a_synclist_with_label_mask_and_path: false,
    /// The same, sandboxed: the handler reads the lists and writes only where granted.
    shell_mode_gets_a_synclist_with_label_mask_and_path_sandboxed: true,
}

#[test]
fn shell_mode_simplified_lists_and_recursive_syncs() {
    let t = TestDir::new("mode-shell-rec");
    let rec = recorder(&t);
    let mut w = start(
        &t,
        &rec,
        "shell",
        &["--synclist-simplify", "--have-recursive-sync"],
        &[],
    );
    let first = &rec.wait_calls(1)[0];
    assert_eq!(
        first.args(),
        [
            s(&rec.script),
            "initialsync".into(),
            "lbl".into(),
            s(&t.src)
        ]
    );
    mkdir(&t.s(b"newdir"));
    rec.wait_call("initialsync of newdir", |c| {
        c.args()
            == [
                s(&rec.script),
                "initialsync".into(),
                "lbl".into(),
                s(&t.s(b"newdir")),
            ]
    });
    write(&t.s(b"file"), b"x");
    rec.wait_call("a simplified list", |c| {
        c.args().get(1).map(String::as_str) == Some("synclist")
            && c.files.get(&3).map(Vec::as_slice) == Some(b"file\n")
    });
    w.stop_ok();
}

fn rsyncshell_mode(name: &str, sandbox: bool) {
    let t = TestDir::new(name);
    let rec = recorder(&t);
    mkdir(&t.s(b"d"));
    let extra = confined(&rec, sandbox);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut w = start(&t, &rec, "rsyncshell", &extra, &[]);
    if sandbox {
        w.assert_sandboxed();
    }
    let first = &rec.wait_calls(1)[0];
    let args = first.args();
    assert_eq!(
        args[..3],
        [s(&rec.script), "rsynclist".into(), "lbl".into()]
    );
    assert_eq!(args.len(), 5, "{args:?}");
    assert_eq!(
        first.file(3),
        "/***\n",
        "the initial sync includes everything"
    );
    assert_eq!(first.file(4), "", "nothing excluded");
    write(&t.s(b"d/x[1]"), b"1");
    let live = rec.wait_call("a list with d/x[1]", |c| {
        c.files
            .get(&3)
            .is_some_and(|f| f.windows(5).any(|w| w == b"/d/x\\"))
    });
    // The ancestor, the file, and the file as a directory (a type flip); a name with a
    // wildcard character is escaped only in the patterns rsync reads as wildcards.
    assert_eq!(live.file(3), "/d\n/d/x\\[1]\n/d/x\\[1]/***\n");
    w.stop_ok();
}

cases! { rsyncshell_mode;
    rsyncshell_mode_gets_rsync_include_and_exclude_lists: false,
    rsyncshell_mode_gets_rsync_include_and_exclude_lists_sandboxed: true,
}

#[test]
fn rsyncshell_prefer_include_has_no_exclude_list() {
    let t = TestDir::new("mode-rsyncshell-incl");
    let rec = recorder(&t);
    mkdir(&t.s(b"d"));
    write(&t.s(b"d/f"), b"1");
    let mut w = start(&t, &rec, "rsyncshell", &["--rsync-prefer-include"], &[]);
    let first = &rec.wait_calls(1)[0];
    assert_eq!(first.args().len(), 4, "{:?}", first.args());
    // Every node is listed (files also in their directory form).
    assert_eq!(first.file(3), "/d\n/d/f\n/d/f/***\n");
    w.stop_ok();
}

fn direct_mode(name: &str, sandbox: bool) {
    let t = TestDir::new(name);
    let rec = recorder(&t);
    for i in 0..300 {
        write(&t.s(format!("f{i:03}").as_bytes()), b"x");
    }
    let dst = format!("{}/", s(&t.dst));
    let mut extra = confined(&rec, sandbox);
    extra.extend(["-D".to_string(), s(&t.dst)]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut w = start(&t, &rec, "direct", &extra, &[]);
    if sandbox {
        w.assert_sandboxed();
    }
    let calls = rec.wait_calls(2);
    let mut paths = Vec::new();
    for c in &calls[..2] {
        let a = c.args();
        assert_eq!(a.last(), Some(&dst), "the destination comes last");
        assert!(a.len() - 2 <= 254, "{} paths in one run", a.len() - 2);
        paths.extend(a[1..a.len() - 1].iter().cloned());
    }
    let mut expected = vec![".".to_string()];
    expected.extend((0..300).map(|i| format!("f{i:03}")));
    assert_eq!(paths, expected, "the root as `.`, then every file, once");
    write(&t.s(b"-dash"), b"x");
    rec.wait_call("a run for -dash", |c| {
        c.args()[1..] == ["-dash".to_string(), dst.clone()]
    });
    w.stop_ok();
}

cases! { direct_mode;
    direct_mode_passes_paths_as_arguments_in_runs_of_254: false,
    direct_mode_passes_paths_as_arguments_in_runs_of_254_sandboxed: true,
}

fn simple_mode(name: &str, sandbox: bool) {
    let t = TestDir::new(name);
    let rec = recorder(&t);
    mkdir(&t.s(b"a"));
    write(&t.s(b"a/f"), b"1");
    let extra = confined(&rec, sandbox);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut w = start(&t, &rec, "simple", &extra, &[]);
    if sandbox {
        w.assert_sandboxed();
    }
    let calls = rec.wait_calls(3);
    let r = s(&rec.script);
    let sync = |mask: u32, p: &Path| {
        vec![
            r.clone(),
            "sync".into(),
            "lbl".into(),
            mask.to_string(),
            s(p),
        ]
    };
    assert_eq!(calls[0].args(), sync(MASK_DIR, &t.src));
    assert_eq!(calls[1].args(), sync(MASK_DIR, &t.s(b"a")));
    assert_eq!(calls[2].args(), sync(MASK_FILE, &t.s(b"a/f")));
    std::fs::remove_file(t.s(b"a/f")).unwrap();
    let del = rec.wait_call("the deletion of a/f", |c| {
        c.args().get(4) == Some(&s(&t.s(b"a/f"))) && c.args()[3] != MASK_FILE.to_string()
    });
    let mask: u32 = del.args()[3].parse().unwrap();
    assert_ne!(mask & libc::IN_DELETE, 0, "mask {mask:#x} has IN_DELETE");
    w.stop_ok();
}

cases! { simple_mode;
    simple_mode_calls_the_handler_per_path_with_its_mask: false,
    simple_mode_calls_the_handler_per_path_with_its_mask_sandboxed: true,
}

#[test]
fn placeholders_in_user_arguments() {
    let t = TestDir::new("mode-args");
    let rec = recorder(&t);
    let mut w = start(
        &t,
        &rec,
        "shell",
        &["-D", &s(&t.dst)],
        &[
            "custom",
            "%TYPE%",
            "%label%",
            "%INCLUDE-LIST-PATH%",
            "%watch-dir%/",
            "x%EVENT-MASK%y",
            "%destination-dir%",
        ],
    );
    let first = &rec.wait_calls(1)[0];
    let a = first.args();
    assert_eq!(
        [&a[..4], &a[5..]].concat(),
        [
            s(&rec.script),
            "custom".into(),
            "synclist".into(),
            "lbl".into(),
            format!("{}/", s(&t.src)),
            "x%EVENT-MASK%y".into(),
            s(&t.dst),
        ],
        "{a:?}"
    );
    assert!(
        first.files.contains_key(&4),
        "%INCLUDE-LIST-PATH% names the list"
    );
    w.stop_ok();
}

#[test]
fn a_name_with_a_newline_is_an_error_in_newline_lists_and_passes_in_nul_lists() {
    for nul in [false, true] {
        let t = TestDir::new("mode-newline");
        let rec = recorder(&t);
        write(&t.s(b"new\nline"), b"x");
        write(&t.s(b"plain"), b"x");
        let extra: &[&str] = if nul { &["--lists-nul"] } else { &[] };
        let mut w = start(&t, &rec, "shell", extra, &[]);
        let first = &rec.wait_calls(1)[0];
        let list = first.files[&3].clone();
        if nul {
            assert_eq!(first.env["CLSYNC_LIST_FORMAT"], "nul");
            let recs: Vec<&[u8]> = list.split(|&b| b == 0).collect();
            assert!(
                recs.contains(&format!("sync lbl {MASK_FILE} new\nline").as_bytes()),
                "{list:?}"
            );
        } else {
            assert_eq!(
                String::from_utf8_lossy(&list),
                format!("sync lbl {MASK_DIR} \nsync lbl {MASK_FILE} plain\n")
            );
            let log = w.stderr();
            assert!(
                log.contains("cannot pass \"sync lbl 256 new\\nline\" to the sync handler")
                    && log.contains("lists-nul"),
                "the path is reported:\n{log}"
            );
        }
        w.stop_ok();
    }
}

#[test]
fn a_failed_handler_ends_the_worker_with_its_code_and_the_exit_hook_hears_why() {
    let t = TestDir::new("mode-fail");
    let rec = recorder(&t);
    let hook_log = t.root.join("hook.log");
    let hook = t.root.join("hook.sh");
    write_script(
        &hook,
        &format!(
            "#!/bin/sh\necho \"$1 $CLSYNC_STATUS $CLSYNC_EXIT_CODE\" >> '{}'\n",
            hook_log.display()
        ),
    );
    rec.fail(2, "3");
    let mut w = start(&t, &rec, "shell", &["--exit-hook", &s(&hook)], &[]);
    write(&t.s(b"f"), b"x");
    let st = w.wait_exit(SYNC_TIMEOUT);
    assert_eq!(
        st.code(),
        Some(3),
        "retries = 1: the handler's code\n{}",
        w.stderr()
    );
    assert_eq!(rec.calls().len(), 2);
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap(),
        "lbl synchandler error 3\n"
    );
}

#[test]
fn ignore_failures_keeps_the_paths_queued_and_a_signal_is_a_failure() {
    let t = TestDir::new("mode-ignore");
    let rec = recorder(&t);
    rec.fail(2, "KILL");
    let mut w = start(&t, &rec, "shell", &["--ignore-failures"], &[]);
    write(&t.s(b"f"), b"x");
    let has_f = |c: &Call| c.files.get(&3).is_some_and(|l| l.ends_with(b" f\n"));
    rec.wait_call("the killed call", |c| has_f(c));
    // The next call carries f again: nothing was dropped.
    wait_until(SYNC_TIMEOUT, "f to be retried", || {
        let n = rec.calls().iter().filter(|c| has_f(c)).count();
        (n >= 2)
            .then_some(())
            .ok_or_else(|| format!("{n} calls with f"))
    });
    let log = w.stderr();
    assert!(log.contains("killed by signal SIGKILL"), "{log}");
    w.stop_ok();
}

#[test]
fn the_handler_runs_as_sync_handler_uid() {
    let t = TestDir::new("mode-uid");
    // nobody must reach the watch directory and the recorder.
    std::fs::set_permissions(&t.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rec = recorder(&t);
    std::fs::set_permissions(&rec.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut w = start(&t, &rec, "shell", &["--sync-handler-uid", "nobody"], &[]);
    let first = &rec.wait_calls(1)[0];
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    assert_eq!(first.uid, nobody.to_string());
    assert!(first.files.contains_key(&3), "nobody can read the list");
    w.stop_ok();
}

#[test]
fn modification_signature_skips_changes_that_keep_the_fields() {
    let t = TestDir::new("mode-modsign");
    let rec = recorder(&t);
    let mut w = start(
        &t,
        &rec,
        "direct",
        &["-D", &s(&t.dst), "--modification-signature", "uid,gid"],
        &["%INCLUDE-LIST%"],
    );
    rec.wait_calls(1);
    let with = |p: &str| {
        let p = p.to_string();
        move |c: &Call| c.args()[1..].contains(&p)
    };
    write(&t.s(b"f"), b"first sight is synced");
    rec.wait_call("f", with("f"));
    let before = rec.calls().len();
    append(&t.s(b"f"), b" and more");
    write(&t.s(b"g"), b"another file");
    rec.wait_call("g", with("g"));
    let later: Vec<Vec<String>> = rec.calls()[before..].iter().map(Call::args).collect();
    assert!(
        !later.iter().any(|a| a[1..].contains(&"f".to_string())),
        "f was synced again with the same uid and gid: {later:?}"
    );
    nix::unistd::chown(&t.s(b"f"), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let n = rec.calls().len();
    wait_until(SYNC_TIMEOUT, "f after chown", || {
        rec.calls()[n..]
            .iter()
            .any(with("f"))
            .then_some(())
            .ok_or_else(|| "not yet".into())
    });
    w.stop_ok();
}

#[test]
fn usr1_writes_the_state_into_dump_dir() {
    let t = TestDir::new("dump");
    let dump = t.root.join("dump");
    let mut w = t.start(&[OsString::from("--dump-dir"), dump.clone().into()]);
    w.signal(nix::sys::signal::Signal::SIGUSR1);
    let file = dump.join(format!("clsync.{}.json", w.pid()));
    wait_until(SYNC_TIMEOUT, "the dump file", || {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        (v["phase"] == "running" && v["watches"] == 1)
            .then_some(())
            .ok_or(text)
    });
    w.stop_ok();
}

/// A mode that loads the project's own C handler (tests/data/so_handler.c), which logs
/// what it is given into DST/so_handler.log.
struct So {
    mode: &'static str,
    /// The handler's log line for the file `after`, written while the worker runs.
    live: &'static str,
    /// What the handler's log says of the initial sync.
    initial: fn() -> String,
    /// Run with `--sandbox`.
    sandbox: bool,
}

/// The project's own C handler loaded in `so` and `rsyncso` modes: the host functions it
/// calls work, it hears of the initial sync and of a live change, and it is deinitialised.
fn shared_object_handler(name: &str, case: So) {
    let mode = case.mode;
    let t = TestDir::new(name);
    let so = t.root.join("handler.so");
    build_shared_object("so_handler.c", &so, &[]);
    write(&t.s(b"before"), b"1");
    let status = status_file(&t);
    let mut args: Vec<OsString> = [
        "-M",
        mode,
        "-W",
        &s(&t.src),
        "-D",
        &s(&t.dst),
        "-S",
        &s(&so),
        "-l",
        "lbl",
        "-t",
        "0.1",
        "-w",
        "0.1",
        "--status-file",
        &s(&status),
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if case.sandbox {
        args.push("--sandbox".into());
    }
    let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &status, &args);
    if case.sandbox {
        w.assert_sandboxed();
    }
    write(&t.s(b"after"), b"2");
    let log = t.d(b"so_handler.log");
    let want = case.live;
    wait_until(
        SYNC_TIMEOUT,
        &format!("{name}: the handler to hear of `after`"),
        || {
            let text = read_lossy(&log);
            text.contains(want).then_some(()).ok_or(text)
        },
    );
    let text = read_lossy(&log);
    assert!(text.starts_with("init\n"), "{name}: {text}");
    // The host functions are exported by the executable and do what they say.
    for line in [
        "  api version: 2\n",
        "  xmalloc, xrealloc: abcde; xcalloc: zeroed\n",
        "  clsyncapi_fork: child exited 3\n",
        "  logged: warning, error, debug\n",
    ] {
        assert!(
            text.contains(line),
            "{name}: the handler's log lacks {line:?}:\n{text}"
        );
    }
    let log_text = w.stderr();
    for line in [
        "clsyncapi_init(): hello from so_handler, pid 42, bye",
        "host_calls(): a warning from the handler: 1",
        "host_calls(): an error from the handler: two",
    ] {
        assert!(
            log_text.contains(line),
            "{name}: the worker's log lacks {line:?}:\n{log_text}"
        );
    }
    assert!(text.contains("  label: lbl\n"), "{name}: {text}");
    let initial = (case.initial)();
    assert!(
        text.contains(&initial),
        "{name}: the initial sync is not logged as {initial:?}:\n{text}"
    );
    w.stop_ok();
    assert!(
        read_lossy(&log).ends_with("deinit\n"),
        "{name}: deinit at exit"
    );
}

cases! { shared_object_handler;
    /// `so`: the initial walk lists `before` with its mask, a live event names `after`.
    shared_object_handler_in_so_mode: So {
        mode: "so",
        live: "  \"after\" len=5",
        initial: || format!("  \"before\" len=6 mask={MASK_FILE:#x} flags=0"),
        sandbox: false,
    },
    /// `so`, sandboxed: the handler is loaded, calls back and forks in the confinement.
    shared_object_handler_in_so_mode_sandboxed: So {
        mode: "so",
        live: "  \"after\" len=5",
        initial: || format!("  \"before\" len=6 mask={MASK_FILE:#x} flags=0"),
        sandbox: true,
    },
    /// `rsyncso`: include lists, everything at the initial sync.
    shared_object_handler_in_rsyncso_mode: So {
        mode: "rsyncso",
        live: "  inc: /after",
        initial: || "  inc: /***\n".to_string(),
        sandbox: false,
    },
    /// `rsyncso`, sandboxed.
    shared_object_handler_in_rsyncso_mode_sandboxed: So {
        mode: "rsyncso",
        live: "  inc: /after",
        initial: || "  inc: /***\n".to_string(),
        sandbox: true,
    },
}

/// The functions a shared-object handler calls back into clsync are in the executable's
/// dynamic symbol table (build.rs exports them; a linker drops them otherwise).
#[test]
fn host_functions_are_exported_to_shared_object_handlers() {
    let symbols: &[&str] = &include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/sync/host_symbols.in"
    ));
    let out = std::process::Command::new("nm")
        .args(["-D", "--defined-only", env!("CARGO_BIN_EXE_clsync")])
        .output()
        .expect("run nm (binutils)");
    assert!(out.status.success(), "nm -D: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let exported: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "T" | "W", name] => Some(name),
            _ => None,
        })
        .collect();
    let missing: Vec<&&str> = symbols.iter().filter(|s| !exported.contains(**s)).collect();
    assert!(
        missing.is_empty(),
        "not exported by {}: {missing:?}",
        env!("CARGO_BIN_EXE_clsync")
    );
}

/// The original's "atomic sync" example: rsyncdirect with the user's own arguments,
/// `%RSYNC-ARGS%` and the directories, and no -D. Sandboxed, the destination only the
/// arguments name is granted with `--sandbox-write` (the worker does not read a
/// handler's arguments for paths).
fn rsyncdirect_with_rsync_args(name: &str, sandbox: bool) {
    let t = TestDir::new(name);
    mkdir(&t.s(b"d"));
    write(&t.s(b"d/before"), b"1");
    let src = format!("{}/", s(&t.src));
    let dst = format!("{}/", s(&t.dst));
    let status = status_file(&t);
    let mut args: Vec<OsString> = Vec::new();
    if sandbox {
        args.extend([
            "--sandbox".into(),
            "--sandbox-write".into(),
            t.dst.clone().into(),
        ]);
    }
    args.extend(
        [
            "-M",
            "rsyncdirect",
            "-W",
            &s(&t.src),
            "-S",
            "rsync",
            "-t",
            "0.1",
            "-w",
            "0.1",
            "--status-file",
            &s(&status),
            "--",
            "%RSYNC-ARGS%",
            &src,
            &dst,
        ]
        .iter()
        .map(OsString::from),
    );
    let mut w = Worker::start_raw(&t.root, &t.src, &t.dst, &status, &args);
    if sandbox {
        w.assert_sandboxed();
    }
    write(&t.s(b"d/new\nline"), b"2");
    std::fs::remove_file(t.s(b"d/before")).unwrap();
    w.wait_synced(SYNC_TIMEOUT);
    w.stop_ok();
}

cases! { rsyncdirect_with_rsync_args;
    rsyncdirect_with_rsync_args_placeholder_mirrors: false,
    rsyncdirect_with_rsync_args_placeholder_mirrors_sandboxed: true,
}

/// A sync handler named by a relative path (`./sync.sh`) is taken from the directory the
/// worker was started in, as the original takes it (it resolves the path before moving
/// to the watch directory), not from the watch directory the handler runs in: found at
/// start, it must be the one each sync runs. One found in neither place is refused at
/// start, naming both.
#[test]
fn a_relative_sync_handler_is_taken_from_the_start_directory() {
    use std::process::Command;
    let t = TestDir::new("relative-handler");
    write(&t.s(b"file"), b"data");
    let ran = t.root.join("ran");
    write_script(
        &t.root.join("sync.sh"),
        &format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec rsync \"$@\"\n",
            ran.display()
        ),
    );
    // A one-shot worker started in ROOT with `-S handler`: its exit code and log.
    let run = |handler: &str| {
        let (status, err) = run_within(
            Command::new(BIN)
                .current_dir(&t.root)
                .args(["--exit-on-no-events", "-S", handler])
                .arg(&t.src)
                .arg(&t.dst),
            SYNC_TIMEOUT,
        );
        (status.and_then(|s| s.code()), err)
    };
    let (code, err) = run("./sync.sh");
    assert_eq!(code, Some(0), "{err}");
    assert!(ran.exists(), "the handler did not run:\n{err}");
    assert_synced_now(&t.src, &t.dst, "after the initial sync");

    let (code, err) = run("./nowhere.sh");
    assert_eq!(code, Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for want in [
        "sync handler ./nowhere.sh: not found",
        &t.root.display().to_string(),
        &t.src.display().to_string(),
    ] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
}
