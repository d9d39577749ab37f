//! `clsync-manager`: the supervisor and its control client; see clsync::manager.

fn main() {
    std::process::exit(clsync::manager::cli::main(std::env::args_os().collect()));
}
