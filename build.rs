//! Exports the functions that shared-object sync handlers (modes `so` and `rsyncso`)
//! call back into clsync, as the original's handlers expect: without these flags the
//! linker drops them from the executable and such a handler fails to load.

fn main() {
    for s in [
        "clsyncapi_getapiversion",
        "clsyncapi_fork",
        "_critical",
        "_error",
        "_warning",
        "_info",
        "_debug",
        "xmalloc",
        "xcalloc",
        "xrealloc",
    ] {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={s}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
