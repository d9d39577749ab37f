//! No input may panic: random and mutated inputs for every parser a user (or a client of
//! the control socket) can reach. The command line's duration and size parsers and the
//! whole command line, TOML profiles (parsed, resolved, turned into a configuration),
//! the original's INI files, rules files and globs, and control-socket requests (parsed
//! here, and sent to a running clsync-manager, which must keep answering).
//!
//! The inputs come from a small deterministic generator (xorshift), not a fuzzing
//! framework: the same inputs on every run, a few seconds in all, no extra dependency.
//! `CLSYNC_NO_PANIC_SEED=N` runs another sequence, `CLSYNC_NO_PANIC_ROUNDS=N` a longer
//! one. Each failure names the input that panicked.

use crate::common;

use clsync::profile;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// xorshift64*: deterministic, good enough to pick mutations.
struct Gen(u64);

impl Gen {
    fn new(salt: u64) -> Gen {
        let seed = std::env::var("CLSYNC_NO_PANIC_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
        Gen((seed ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

fn rounds(default: usize) -> usize {
    std::env::var("CLSYNC_NO_PANIC_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Pieces that tend to break parsers: numbers at and past every limit, units, quotes,
/// separators, substitutions, control characters, non-ASCII.
const TOKENS: &[&str] = &[
    "0",
    "1",
    "-1",
    "0.5",
    "1e30",
    "1e300",
    "1e309",
    "-1e309",
    "inf",
    "-inf",
    "nan",
    "NaN",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967295",
    "4294967296",
    "65536",
    "255",
    "256",
    "0x10",
    "010",
    "1.5e-300",
    "100y",
    "200y",
    "2m",
    "200ms",
    "1h 30m",
    "KiB",
    "MiB",
    "GiB",
    "TiB",
    "KB",
    "k",
    "B",
    "%",
    "%%",
    "%label%",
    "%watch-dir%",
    "%x%",
    "%INCLUDE-LIST%",
    "\"",
    "'",
    "\\",
    "=",
    "==",
    "[",
    "]",
    "[[",
    "{",
    "}",
    ",",
    "\n",
    "\r\n",
    "\t",
    " ",
    "#",
    "@",
    "..",
    ".",
    "/",
    "-",
    "--",
    "\u{0}",
    "\u{1b}",
    "\u{7f}",
    "é",
    "\u{feff}",
    "true",
    "false",
    "\"\"",
    "[]",
    "{}",
    "inherits",
    "label",
    "peer",
    "node-b:/x",
    "rsync://h/m",
    "*",
    "**",
    "+",
    "(",
    ")",
    "?",
    "^",
    "$",
    "+*",
    "-*",
    "+d",
    "-f",
];

/// `base` with a few random insertions, deletions, duplications and replacements.
fn mutate(g: &mut Gen, base: &str) -> String {
    let mut s: Vec<char> = base.chars().collect();
    for _ in 0..1 + g.below(6) {
        let at = g.below(s.len() + 1);
        match g.below(5) {
            0 | 1 => {
                let tok: Vec<char> = g.pick(TOKENS).chars().collect();
                s.splice(at..at, tok);
            }
            2 if !s.is_empty() => {
                let end = (at + 1 + g.below(12)).min(s.len());
                s.drain(at.min(end)..end);
            }
            3 if !s.is_empty() => {
                let from = g.below(s.len());
                let end = (from + 1 + g.below(40)).min(s.len());
                let part: Vec<char> = s[from..end].to_vec();
                s.splice(at..at, part);
            }
            _ if at < s.len() => s[at] = *g.pick(&['"', '=', '\n', '%', '0', '9', '-', ' ']),
            _ => {}
        }
    }
    s.into_iter().collect()
}

/// A string made of random tokens.
fn tokens(g: &mut Gen, max: usize) -> String {
    (0..1 + g.below(max)).map(|_| *g.pick(TOKENS)).collect()
}

/// Runs `f` on each input; collects the ones that panicked and fails naming them.
fn no_panic<T: std::fmt::Debug>(what: &str, inputs: impl Iterator<Item = T>, f: impl Fn(&T)) {
    let mut bad = Vec::new();
    let mut n = 0;
    for input in inputs {
        n += 1;
        if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
            bad.push(format!("{input:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} of {n} inputs panicked, e.g.:\n  {}",
        bad.len(),
        bad.iter().take(5).cloned().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn duration_and_size_parsers() {
    let mut g = Gen::new(1);
    let inputs: Vec<String> = (0..rounds(20_000))
        .map(|i| {
            if i % 2 == 0 {
                tokens(&mut g, 4)
            } else {
                mutate(&mut g, "1.5e3")
            }
        })
        .collect();
    no_panic("parse_duration / parse_size", inputs.iter(), |s| {
        if let Ok(d) = clsync::config::parse_duration(s) {
            assert!(d <= clsync::config::MAX_DURATION, "{s:?} gave {d:?}");
            // A deadline that far away is still computable.
            let _ = std::time::Instant::now() + d;
        }
        let _ = clsync::config::parse_size(s);
    });
}

/// Options with values, for random command lines.
const OPTIONS: &[&str] = &[
    "-w",
    "-t",
    "-T",
    "-k",
    "-B",
    "--wait-for-close",
    "--verify-interval",
    "-r",
    "--max-iterations",
    "--rsync-inclimit",
    "-d",
    "-x",
    "-l",
    "--max-parallel-syncs",
    "-p",
    "-M",
    "--monitor",
    "--modification-signature",
    "--ssh-port",
    "--progress",
    "-b",
    "--split-brain-keep",
    "--label",
    "-K",
    "--profile",
];

#[test]
fn the_command_line() {
    let mut g = Gen::new(2);
    let inputs: Vec<Vec<String>> = (0..rounds(3_000))
        .map(|_| {
            let mut argv = vec!["clsync".to_string()];
            for _ in 0..g.below(5) {
                argv.push(g.pick(OPTIONS).to_string());
                argv.push(tokens(&mut g, 3));
            }
            if g.below(3) > 0 {
                argv.push("/nonexistent/src".into());
                argv.push("/nonexistent/dst".into());
            }
            argv
        })
        .collect();
    no_panic("cli::parse", inputs.iter(), |argv| {
        if let Ok(c) = clsync::cli::parse(argv.iter()) {
            // What the worker computes from the delays must not overflow either.
            let now = std::time::Instant::now();
            let d = c.delays;
            let _ = now + d.collect + d.sync;
            let _ = now + d.collect_bigfile;
        }
    });
}

/// The shipped profiles and a sample that sets many keys: the bases of the mutations.
fn profile_bases() -> Vec<String> {
    let mut v: Vec<String> = common::shipped_profiles()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    v.push(
        r#"watch-dir = "/srv/%label%"
destination-dir = "/mnt/%label%"
label = "x-%label%"
inherits = "base"
delay-sync = 0.5
delay-collect = "2m"
timeout-sync = 30
threshold-bigfile = "128MiB"
retries = 3
ignore-exitcode = [23, 24]
threading = "safe"
max-parallel-syncs = 4
rules = ["-d/tmp$", "+*"]
exclude = ["*.tmp"]
include = ["/keep/"]
exit-hook = "/bin/echo %delay-sync% %retries%"
restart = "on-failure"
restart-delay = 2
stop-timeout = "90s"
uid = 0
mode = "rsyncdirect"
"#
        .to_string(),
    );
    v
}

#[test]
fn toml_profiles() {
    let mut g = Gen::new(3);
    let bases = profile_bases();
    let file = PathBuf::from("/etc/clsync/p.toml");
    let inputs: Vec<(String, String)> = (0..rounds(3_000))
        .map(|_| {
            let base = g.pick(&bases).clone();
            let text = mutate(&mut g, &base);
            let label = tokens(&mut g, 2);
            (text, label)
        })
        .collect();
    no_panic("profiles", inputs.iter(), |(text, label)| {
        let Ok(values) = profile::parse_values(&file, text) else {
            return;
        };
        let _ = values.to_toml();
        let profiles = common::profiles::p_and_base(&file, values);
        for (name, l) in [("p", None), ("p", Some(label.as_str())), ("p@x", None)] {
            if let Ok(r) = profile::resolve(&profiles, name, l) {
                let _ = clsync::profile_config::config_of(&r, &file);
            }
        }
    });
}

#[test]
fn ini_files() {
    let mut g = Gen::new(4);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy");
    let bases: Vec<String> = ["example.conf", "production.conf"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
        .collect();
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("clsync.conf");
    let inputs: Vec<String> = (0..rounds(2_000))
        .map(|_| {
            let base = g.pick(&bases).clone();
            mutate(&mut g, &base)
        })
        .collect();
    no_panic("INI files", inputs.iter().enumerate(), |(i, text)| {
        let Ok(blocks) = clsync::legacy::parse(&file, text) else {
            return;
        };
        let _ = clsync::legacy::to_profiles(&blocks);
        // Through the file as `clsync -H FILE -K BLOCK` reads it, now and then.
        if i % 8 == 0 {
            std::fs::write(&file, text).unwrap();
            for b in blocks.iter().take(3) {
                let _ = clsync::profile_config::load_legacy(&file, &b.name, None, (None, None));
            }
        }
    });
}

#[test]
fn rules_and_globs() {
    let mut g = Gen::new(5);
    let base = "-d/sess(ion)?s?$\n-f/tmp/\n+f^passwd$\n+d^ssh$\n+w^a\n-s^b\n+m^c\n-*\n+*\n";
    let file = Path::new("/etc/clsync/rules");
    let inputs: Vec<(String, Vec<String>, String)> = (0..rounds(3_000))
        .map(|_| {
            let text = mutate(&mut g, base);
            let globs = (0..g.below(3)).map(|_| tokens(&mut g, 3)).collect();
            let path = tokens(&mut g, 3);
            (text, globs, path)
        })
        .collect();
    no_panic("rules", inputs.iter(), |(text, globs, path)| {
        use clsync::rules::{Kind, Rules};
        let Ok(rules) = Rules::parse(text, file) else {
            return;
        };
        let Ok(rules) = rules.with_globs(globs, globs, file) else {
            return;
        };
        for kind in [Kind::File, Kind::Dir, Kind::Other] {
            let _ = rules.excluded(path.as_bytes(), kind);
        }
    });
}

/// Request lines: JSON of the right shape with odd values, and mutated JSON.
fn requests(g: &mut Gen, n: usize) -> Vec<String> {
    let cmds = [
        "start", "stop", "restart", "status", "list", "reload", "resync", "resolve", "logs",
        "metrics", "check", "", "x",
    ];
    (0..n)
        .map(|_| {
            let mut o = serde_json::Map::new();
            o.insert("cmd".into(), (*g.pick(&cmds)).into());
            if g.below(2) == 0 {
                o.insert("name".into(), tokens(g, 3).into());
            }
            if g.below(3) == 0 {
                let lines: serde_json::Value = match g.below(3) {
                    0 => u64::MAX.into(),
                    1 => (-1).into(),
                    _ => tokens(g, 1).into(),
                };
                o.insert("lines".into(), lines);
            }
            if g.below(4) == 0 {
                o.insert("keep".into(), tokens(g, 1).into());
            }
            let line = serde_json::Value::Object(o).to_string();
            if g.below(3) == 0 {
                mutate(g, &line)
            } else {
                line
            }
        })
        .collect()
}

#[test]
fn control_socket_requests_are_parsed_without_panic() {
    let mut g = Gen::new(6);
    let inputs = requests(&mut g, rounds(5_000));
    no_panic("requests", inputs.iter(), |line| {
        let _ = serde_json::from_str::<clsync::manager::protocol::Request>(line);
    });
}

#[test]
fn a_manager_answers_every_request_and_keeps_running() {
    let t = common::TestDir::new("no-panic-manager");
    let mut m = common::manager::Mgr::start(&t.root);
    let mut g = Gen::new(7);
    for line in requests(&mut g, rounds(300)) {
        // "stop" of nothing and "reload" of an empty directory answer at once; every
        // request gets one response line (or the connection closes for a line that is
        // not one), and the manager lives on.
        let resp = m.raw(format!("{}\n", line.replace('\n', " ")).as_bytes());
        if !resp.is_empty() {
            serde_json::from_str::<serde_json::Value>(&resp)
                .unwrap_or_else(|e| panic!("{line:?}: response {resp:?}: {e}"));
        }
        assert!(m.alive(), "the manager died on {line:?}:\n{}", m.log());
    }
    let o = m.cli(&["status"]);
    assert_eq!(o.code, Some(0), "{}\n{}", o.stderr, m.log());
    assert!(!m.log().contains("panicked"), "{}", m.log());
}
