//! tests/it/mirror.rs again, in a binary of its own whose every worker watches with
//! fanotify (`common::fanotify_run`: the binary's name ends in `_fanotify`).

mod common;

#[path = "it/mirror.rs"]
mod mirror;
