/*!
clsync: a live file-sync daemon. The worker watches a tree with inotify, collects the
changed paths into batches and mirrors them with rsync; see docs/architecture.md.
*/

pub(crate) mod batcher;
pub mod cli;
pub mod config;
pub mod delivered;
pub mod dest;
pub mod legacy;
pub mod logger;
pub mod manager;
pub mod mounts;
pub mod pair;
pub mod profile;
pub mod profile_config;
pub mod report;
pub mod rules;
pub mod signature;
pub(crate) mod sync;
pub mod watch;
pub mod worker;
