//! The worker's code layout: the functions `generated/clsync.order` lists (those that
//! run, found by `bench/order.sh`) are packed at the start of the executable's code, in
//! the listed order, and the list still names the functions of this build. Without this the
//! worker keeps ~1 MiB more of its code resident (docs/benchmarks.md, "Code layout"),
//! which no functional test would notice.
//!
//! Symbol names carry hashes of the toolchain (v0 mangling names each crate with its
//! disambiguator), so the list is compared twice: by the functions' paths, demangled by
//! `c++filt` with the disambiguators, hashes and generic arguments dropped (legacy and v0
//! mangling alike), which does not depend on the toolchain (the
//! list still names this code's functions), and by the exact names the linker matches,
//! which do only with the toolchain the list was made with (the functions are placed).

mod common;

use common::skip;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};

const ORDER: &str = include_str!("../generated/clsync.order");

/// The listed names, and the toolchain the list was made with (its `# rustc …` line).
fn listed() -> (Vec<&'static str>, Option<&'static str>) {
    let rustc = ORDER
        .lines()
        .find_map(|l| l.strip_prefix("# rustc ").map(str::trim));
    let names = ORDER
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    (names, rustc)
}

/// Address and size of every function symbol of the worker binary, by `nm`.
fn functions() -> HashMap<String, (u64, u64)> {
    let out = Command::new("nm")
        .args(["--defined-only", "-S", env!("CARGO_BIN_EXE_clsync")])
        .output()
        .expect("run nm (binutils)");
    assert!(out.status.success(), "nm failed: {out:?}");
    let mut map = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [addr, size, kind, name] = f[..] {
            if matches!(kind, "t" | "T" | "w" | "W") {
                let hex = |s| u64::from_str_radix(s, 16).unwrap();
                map.entry(name.to_string())
                    .or_insert((hex(addr), hex(size)));
            }
        }
    }
    map
}

/// The toolchain-independent path of each symbol name: demangled by `c++filt` (binutils),
/// with the crates' `[hash]` disambiguators removed.
fn paths<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let names: Vec<&str> = names.into_iter().collect();
    let mut child = Command::new("c++filt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run c++filt (binutils)");
    let mut input = child.stdin.take().unwrap();
    let text = names.join("\n") + "\n";
    let feeder = std::thread::spawn(move || input.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("c++filt");
    feeder.join().unwrap().expect("write to c++filt");
    assert!(out.status.success(), "c++filt failed: {out:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| normalize(&strip_disambiguators(l)))
        .collect();
    assert_eq!(lines.len(), names.len(), "c++filt gave one line per name");
    lines
}

/// `alloc[fdfd2bd8633a6659]::string::String` → `alloc::string::String` (v0 mangling), and
/// `clap_builder::…::new::h9096e0e7e51da09b` → `clap_builder::…::new` (legacy mangling).
fn strip_disambiguators(s: &str) -> String {
    let s = match s.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => s,
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        match tail.find(']') {
            Some(j) if j > 0 && tail[..j].bytes().all(|b| b.is_ascii_hexdigit()) => {
                rest = &tail[j + 1..];
            }
            _ => {
                out.push('[');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// What the legacy and the v0 mangling schemes (toolchains differ in which they use) both
/// say of a function once demangled: its path without generic arguments (v0 names the
/// concrete types, legacy the parameters), without the brackets of qualified paths
/// (`<alloc::ffi::c_str::CString>::new` in v0 is `alloc::ffi::c_str::CString::new` in
/// legacy), with closures unnumbered.
fn normalize(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut qualified = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'<' {
            let prev = out.as_bytes().last().copied();
            if prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == b'_' || p == b':') {
                // Generic arguments: skipped to the matching '>' ("->" inside is no bracket).
                let mut depth = 0usize;
                while i < b.len() {
                    match b[i] {
                        b'<' => depth += 1,
                        b'>' if i > 0 && b[i - 1] == b'-' => {}
                        b'>' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                if out.ends_with("::") {
                    out.truncate(out.len() - 2);
                }
            } else {
                qualified += 1;
            }
        } else if c == b'>' && qualified > 0 {
            qualified -= 1;
        } else {
            out.push(c as char);
        }
        i += 1;
    }
    // Closures: legacy `{{closure}}`, v0 `{closure#0}`.
    let mut norm = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find('{') {
        norm.push_str(&rest[..at]);
        match rest[at..].find('}') {
            Some(end) => {
                let inner = rest[at..at + end].trim_start_matches('{');
                let word: String = inner
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic() || *c == '_' || *c == '.')
                    .collect();
                norm.push('{');
                norm.push_str(&word);
                norm.push('}');
                rest = rest[at + end..].trim_start_matches('}');
            }
            None => {
                norm.push_str(&rest[at..]);
                rest = "";
            }
        }
    }
    norm.push_str(rest);
    norm
}

#[test]
fn legacy_and_v0_names_normalize_alike() {
    for (legacy, v0) in [
        (
            "alloc::ffi::c_str::CString::new",
            "<alloc::ffi::c_str::CString>::new::<&str>",
        ),
        (
            "<core::result::Result<T,std::io::error::Error> as tempfile::error::IoResultExt<T>>::with_err_path",
            "<core::result::Result<(), std::io::error::Error> as tempfile::error::IoResultExt<()>>::with_err_path::<fn() -> u8>",
        ),
        (
            "clsync::worker::Worker::run::{{closure}}",
            "<clsync::worker::Worker>::run::{closure#1}",
        ),
    ] {
        assert_eq!(normalize(legacy), normalize(v0), "{legacy} / {v0}");
    }
    assert_eq!(
        normalize("<alloc::ffi::c_str::CString>::new::<&str>"),
        "alloc::ffi::c_str::CString::new"
    );
}

#[test]
fn disambiguators_are_stripped() {
    assert_eq!(
        strip_disambiguators("<alloc[fdfd2bd8633a6659]::string::String as core[c1f1a4ba060b9bfa]::fmt::Display>::fmt"),
        "<alloc::string::String as core::fmt::Display>::fmt"
    );
    assert_eq!(strip_disambiguators("a[u8; 4]::b"), "a[u8; 4]::b");
    assert_eq!(
        strip_disambiguators("clap_builder::ValueParser::new::h9096e0e7e51da09b"),
        "clap_builder::ValueParser::new"
    );
}

/// On any toolchain: the list names this code's functions. Compared by path, so a new
/// toolchain's hashes do not matter; a renamed or reworked module drops out of the list.
#[test]
fn the_list_names_functions_of_this_build() {
    if env!("CLSYNC_CODE_ORDERED") != "1" {
        // A debug build inlines nothing and names other functions than the release build
        // the list was made from.
        return skip(
            "this build does not apply generated/clsync.order (not a release build, \
             CLSYNC_NO_CODE_ORDER set, or a linker without --symbol-ordering-file)",
        );
    }
    let (names, _) = listed();
    assert!(
        names.len() > 500,
        "the order file lists {} names",
        names.len()
    );
    let funcs = functions();
    let here: HashSet<String> = paths(funcs.keys().map(String::as_str))
        .into_iter()
        .collect();
    let wanted = paths(names.iter().copied());
    let missing: Vec<&String> = wanted.iter().filter(|p| !here.contains(*p)).collect();
    assert!(
        missing.len() * 10 <= wanted.len(),
        "generated/clsync.order is stale: {} of its {} functions are not in this build \
         (by demangled path, whatever the toolchain), e.g. {:?}; run bench/order.sh",
        missing.len(),
        wanted.len(),
        &missing[..missing.len().min(5)]
    );
}

/// With the toolchain the list was made with: the linker placed the listed functions
/// first, in order. With another one the exact names (and so the placement) cannot
/// match: reported as skipped, a failure under CI, whose toolchain the list must match.
#[test]
fn listed_functions_come_first_in_the_listed_order() {
    if env!("CLSYNC_CODE_ORDERED") != "1" {
        return skip(
            "this build does not apply generated/clsync.order (not a release build, \
             CLSYNC_NO_CODE_ORDER set, or a linker without --symbol-ordering-file)",
        );
    }
    let (names, made_with) = listed();
    let funcs = functions();
    let found: Vec<(&str, u64, u64)> = names
        .iter()
        .filter_map(|n| funcs.get(*n).map(|&(a, s)| (*n, a, s)))
        .collect();
    let this = env!("CLSYNC_RUSTC_VERSION");
    if found.len() * 10 < names.len() * 9 {
        let same = made_with.is_some_and(|m| this.strip_prefix("rustc ") == Some(m));
        assert!(
            !same,
            "generated/clsync.order is stale: {} of its {} functions are in this build; \
             run bench/order.sh",
            found.len(),
            names.len()
        );
        return skip(&format!(
            "generated/clsync.order was made with rustc {made_with:?}, this is {this:?}: \
             {} of {} exact names match, so the linker placed none of the rest; \
             run bench/order.sh for this toolchain",
            found.len(),
            names.len()
        ));
    }
    // Names of one function (identical functions merged into aliases) are placed where
    // the first of them is listed: the later names are not checked again.
    let mut seen = HashSet::new();
    let found: Vec<(&str, u64, u64)> = found.into_iter().filter(|f| seen.insert(f.1)).collect();
    // The linker honoured the list: the found functions are in the listed order, one
    // after the other (alignment padding aside) at the start of the code.
    for w in found.windows(2) {
        assert!(
            w[0].1 <= w[1].1,
            "{} (at {:#x}) is listed before {} but placed after it (at {:#x})",
            w[0].0,
            w[0].1,
            w[1].0,
            w[1].1
        );
    }
    if let (Some(first), Some(last)) = (found.first(), found.last()) {
        let span = last.1 + last.2 - first.1;
        let sizes: u64 = found.iter().map(|f| f.2).sum();
        assert!(
            span <= sizes + sizes / 4 + 4096,
            "the listed functions are spread over {span} bytes for {sizes} bytes of code"
        );
        let earliest = funcs.values().map(|f| f.0).min().unwrap();
        assert!(
            first.1 - earliest < 4096,
            "the listed functions do not start the code ({:#x} vs {earliest:#x})",
            first.1
        );
    }
}
