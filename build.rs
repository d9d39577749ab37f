//! Exports the functions that shared-object sync handlers (modes `so` and `rsyncso`)
//! call back into clsync, as the original's handlers expect: without these flags the
//! linker drops them from the executable and such a handler fails to load. The list is
//! the one `sync::so::HOST_SYMBOLS` holds.
//!
//! Also packs the executable's relative relocations (DT_RELR) where the C library can
//! apply them (glibc 2.36+): the start-up relocation table shrinks from ~340 KB, read
//! at every start and then resident, to ~5 KB. The executable stays position
//! independent (ASLR); only the table's encoding changes.
//!
//! And lays out the worker's code: the functions listed in `generated/clsync.order`
//! (those that run, found by `bench/order.sh`) go first in the executable's text, so the
//! code the daemon runs fills a few of the 64 KiB windows the kernel maps around each page
//! that runs, instead of touching nearly all of them (about 1 MiB less resident). This
//! needs a linker that reads symbol ordering files (lld, rustc's default on x86_64 Linux
//! since 1.90); a one-line probe link decides, and without it the build is the same as
//! before, only larger in memory.
//!
//! `generated/` holds what a script writes and the build reads, apart from `src/` (which
//! is written by hand): its files are not edited, only regenerated, and they are bound to
//! the toolchain that made them. The order file is committed all the same: making it runs
//! the release binary under valgrind (`bench/order.sh`), which a build cannot require, and
//! with a stale or foreign-toolchain file the build still succeeds (the linker skips names
//! it does not know, `--no-warn-symbol-ordering`); `tests/layout.rs` says when to re-run it.

fn main() {
    let symbols: &[&str] = &include!("src/sync/host_symbols.in");
    for s in symbols {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={s}");
    }
    if libc_knows_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let ordered = code_order_flags();
    for flag in &ordered {
        println!("cargo:rustc-link-arg-bin=clsync={flag}");
    }
    // tests/layout.rs checks the order took effect (and is not stale) when it was used.
    println!(
        "cargo:rustc-env=CLSYNC_CODE_ORDERED={}",
        if ordered.is_empty() { "0" } else { "1" }
    );
    println!("cargo:rustc-env=CLSYNC_RUSTC_VERSION={}", rustc_version());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=CLSYNC_NO_CODE_ORDER");
    println!("cargo:rerun-if-changed=src/sync/host_symbols.in");
}

/// Whether the C library this build links against (native builds on glibc) applies
/// packed relative relocations: it then defines the version `GLIBC_ABI_DT_RELR`, which
/// the linker records as a requirement. Elsewhere (cross builds, musl, older glibc) the
/// flag is left out.
fn libc_knows_relr() -> bool {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("TARGET") != env("HOST") || env("CARGO_CFG_TARGET_ENV") != "gnu" {
        return false;
    }
    let arch = env("CARGO_CFG_TARGET_ARCH");
    let candidates = [
        format!("/lib/{arch}-linux-gnu/libc.so.6"),
        format!("/usr/lib/{arch}-linux-gnu/libc.so.6"),
        "/lib64/libc.so.6".to_string(),
        "/usr/lib64/libc.so.6".to_string(),
    ];
    let needle = b"GLIBC_ABI_DT_RELR";
    candidates.iter().any(|p| {
        std::fs::read(p).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}

const ORDER_FILE: &str = "generated/clsync.order";

/// The linker flags that apply `ORDER_FILE`, if the linker this build uses takes them:
/// a trivial program is linked with them, through the same rustc, target and flags.
/// `CLSYNC_NO_CODE_ORDER=1` leaves them out.
fn code_order_flags() -> Vec<String> {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    // Only release builds: the list names the optimised build's functions.
    if !env("CLSYNC_NO_CODE_ORDER").is_empty()
        || env("CARGO_CFG_TARGET_OS") != "linux"
        || env("PROFILE") != "release"
    {
        return Vec::new();
    }
    let manifest = std::path::PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let order = manifest.join(ORDER_FILE);
    if !order.is_file() {
        return Vec::new();
    }
    let flags = vec![
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    let out = std::path::PathBuf::from(env("OUT_DIR"));
    let probe = out.join("order_probe.rs");
    if std::fs::write(&probe, "fn main() {}\n").is_err() {
        return Vec::new();
    }
    let mut cmd = std::process::Command::new(rustc());
    cmd.arg("--target").arg(env("TARGET"));
    for f in env("CARGO_ENCODED_RUSTFLAGS")
        .split('\x1f')
        .filter(|f| !f.is_empty())
    {
        cmd.arg(f);
    }
    if let Ok(linker) = std::env::var("RUSTC_LINKER") {
        cmd.arg("-C").arg(format!("linker={linker}"));
    }
    for f in &flags {
        cmd.arg("-C").arg(format!("link-arg={f}"));
    }
    cmd.arg("-o").arg(out.join("order_probe")).arg(&probe);
    let linked = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if linked {
        flags
    } else {
        Vec::new()
    }
}

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())
}

/// `rustc -V` of this build: symbol names carry the toolchain's hashes, so the order
/// file is only expected to match the toolchain it was made with (tests/layout.rs).
fn rustc_version() -> String {
    std::process::Command::new(rustc())
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}
