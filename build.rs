//! Exports the functions that shared-object sync handlers (modes `so` and `rsyncso`)
//! call back into clsync, as the original's handlers expect: without these flags the
//! linker drops them from the executable and such a handler fails to load. The list is
//! the one `sync::so::HOST_SYMBOLS` holds.
//!
//! Also packs the executable's relative relocations (DT_RELR) where the C library can
//! apply them (glibc 2.36+): the start-up relocation table shrinks from ~340 KB, read
//! at every start and then resident, to ~5 KB. The executable stays position
//! independent (ASLR); only the table's encoding changes.

fn main() {
    let symbols: &[&str] = &include!("src/sync/host_symbols.in");
    for s in symbols {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={s}");
    }
    if libc_knows_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
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
