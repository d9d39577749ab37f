//! Load beside a test: processes spinning on the CPU, so that a race between the
//! worker's threads (or a signal and the events before it) is tried when the scheduler
//! is slow to run them.

use std::process::{Child, Command};

/// Busy loops that run until dropped.
pub struct Load(Vec<Child>);

impl Load {
    /// `n` busy loops (`while :; do :; done`).
    pub fn start(n: usize) -> Load {
        Load(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("start a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
