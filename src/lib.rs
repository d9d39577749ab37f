/*!
clsync: a live file-sync daemon. The worker watches a tree with inotify, collects the
changed paths into batches and mirrors them with rsync; see docs/architecture.md.
*/

pub(crate) mod batcher;
pub mod completions;
pub mod config;
pub(crate) mod delivered;
pub(crate) mod dest;
pub mod exit;
pub mod logger;
pub mod manager;
pub(crate) mod mounts;
pub(crate) mod pair;
pub(crate) mod report;
pub mod rules;
pub(crate) mod safe_file;
pub(crate) mod sandbox;
pub(crate) mod signature;
pub mod strict;
pub(crate) mod sync;
pub(crate) mod watch;
pub mod worker;

// The configuration's layers live in `config/`; their old paths stay valid.
pub use config::{cli, legacy, profile, profile_config};
