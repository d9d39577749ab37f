/*!
clsync-manager: one supervisor per host that runs a `clsync` worker per profile and per
container instance, restarts them with backoff, and answers a control socket.

- [`daemon`]: the event loop (`clsync-manager run`): timers, signals, reload.
- `instance`: one instance and its worker's life (spawn, stop, reap, pipes).
- `control`: the control socket's commands, answered by the loop.
- `state_file`: what a manager leaves for the next one (`state.json`).
- [`instance_lock`]: the lock each worker holds for its instance (never two at once).
- [`life`]: the restart policy, pure and tested with a made-up clock.
- [`protocol`]: the JSON-lines control protocol and its client side.
- [`metrics`]: the Prometheus text of `clsync-manager metrics`.
- [`cli`]: the `clsync-manager` command line.

Why a separate process per worker rather than threads: a worker that crashes, leaks or
hangs in a sync handler takes nothing else down, and each is the same `clsync` a user
can run by hand with the same profile.
*/

pub mod cli;
mod clients;
mod control;
pub(crate) mod daemon;
mod instance;
pub(crate) mod instance_lock;
pub(crate) mod life;
pub(crate) mod metrics;
pub mod protocol;
mod state_file;
