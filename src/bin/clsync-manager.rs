//! `clsync-manager`: the supervisor and its control client; see clsync::manager.

fn main() {
    // A shell asking for completions: answered and exited before anything else runs.
    clsync::completions::complete_if_asked(clsync::completions::Program::Manager);
    std::process::exit(clsync::manager::cli::main(std::env::args_os().collect()));
}
