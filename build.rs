//! Exports the functions that shared-object sync handlers (modes `so` and `rsyncso`)
//! call back into clsync, as the original's handlers expect: without these flags the
//! linker drops them from the executable and such a handler fails to load. The list is
//! the one `sync::so::HOST_SYMBOLS` holds.

fn main() {
    let symbols: &[&str] = &include!("src/sync/host_symbols.in");
    for s in symbols {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={s}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/sync/host_symbols.in");
}
