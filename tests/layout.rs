//! The worker's code layout: the functions `src/bin/clsync.order` lists (those that run,
//! found by `bench/order.sh`) are packed at the start of the executable's code, in the
//! listed order, and the list still names the functions of this build. Without this the
//! worker keeps ~1 MiB more of its code resident (docs/benchmarks.md, "Code layout"),
//! which no functional test would notice.

use std::collections::HashMap;
use std::process::Command;

const ORDER: &str = include_str!("../src/bin/clsync.order");

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

#[test]
fn listed_functions_come_first_in_the_listed_order() {
    if env!("CLSYNC_CODE_ORDERED") != "1" {
        eprintln!(
            "skipped: this build does not apply src/bin/clsync.order (not a release build, \
             CLSYNC_NO_CODE_ORDER set, or a linker without --symbol-ordering-file)"
        );
        return;
    }
    let (names, made_with) = listed();
    assert!(
        names.len() > 500,
        "the order file lists {} names",
        names.len()
    );
    let funcs = functions();
    let found: Vec<(&str, u64, u64)> = names
        .iter()
        .filter_map(|n| funcs.get(*n).map(|&(a, s)| (*n, a, s)))
        .collect();
    let this = env!("CLSYNC_RUSTC_VERSION");
    if made_with.is_some_and(|m| this.strip_prefix("rustc ") == Some(m)) {
        // Same toolchain: the names must still be there (a renamed or reworked module
        // drops out of the list; regenerate it with bench/order.sh).
        assert!(
            found.len() * 10 >= names.len() * 9,
            "src/bin/clsync.order is stale: {} of its {} functions are in this build; \
             run bench/order.sh",
            found.len(),
            names.len()
        );
    } else {
        eprintln!(
            "src/bin/clsync.order was made with rustc {made_with:?}, this is {this:?}: \
             {} of {} names match; run bench/order.sh for this toolchain",
            found.len(),
            names.len()
        );
    }
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
