//! `clsync`: parse the command line, run the worker, map errors to exit codes.

fn main() {
    let cfg = match clsync::cli::parse(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    clsync::logger::init(cfg.label.as_deref(), cfg.debug);
    match clsync::worker::run(cfg) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("clsync: error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
