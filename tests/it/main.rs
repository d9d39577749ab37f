//! The integration tests that may share a process, one module per former test file, in
//! one test binary: tests/common and the library are compiled and linked once for all
//! of them instead of once per file. Their tests run side by side (two threads here).
//!
//! Files whose tests change what the others would see stay binaries of their own
//! (tests/*.rs; cargo runs one binary at a time): stop.rs and manager.rs load the CPU
//! with busy loops on purpose; fanotify.rs, mirror_fanotify.rs and random_fanotify.rs
//! watch the whole file system, so the others' file activity would reach (and could
//! overflow) their queues; systemd.rs and lxc.rs start units and containers on the
//! machine; layout.rs checks the linker's work on the binary; socket.rs floods a manager
//! with hundreds of connections and times its answers.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod completions;
mod docs;
mod failover;
mod failures;
mod index_lock;
mod lifecycle;
mod limits;
mod migrate;
mod mirror;
mod modes;
mod no_panic;
mod original_sandbox;
mod profiles;
mod progress;
mod random;
mod remote;
mod safe_files;
mod sandbox;
mod stall;
mod strict;
mod targeted;
mod threading;
mod warm;
