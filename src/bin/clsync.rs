//! `clsync`: parse the command line, run the worker or a subcommand, map errors to exit
//! codes.

use clsync::cli::Command;

fn main() {
    // A shell asking for completions (COMPLETE=bash clsync -- WORDS): answered and exited
    // before anything else runs.
    clsync::completions::complete_if_asked(clsync::completions::Program::Clsync);
    let cmd = match clsync::cli::parse_command(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(e) => clsync::cli::exit_on_error(e),
    };
    match cmd {
        Command::Run(cfg) => {
            clsync::logger::init(cfg.label.as_deref(), cfg.debug, cfg.quiet, cfg.output);
            match clsync::worker::run(*cfg) {
                Ok(code) => std::process::exit(code),
                Err(e) => {
                    eprintln!("clsync: error: {e}");
                    std::process::exit(e.exit_code());
                }
            }
        }
        Command::Check { dir, targets } => {
            let ok = clsync::profile_config::check(&dir, &targets, &mut std::io::stdout());
            std::process::exit(if ok { 0 } else { 2 });
        }
        Command::Import { file, dir } => match clsync::profile_config::import(&file, &dir) {
            Ok(written) => {
                for p in written {
                    println!("{}", p.display());
                }
            }
            Err(e) => {
                eprintln!("clsync: error: {e}");
                std::process::exit(e.exit_code());
            }
        },
        Command::Completions(shell) => {
            print!(
                "{}",
                clsync::completions::script(clsync::completions::Program::Clsync, shell)
            );
        }
        Command::ShowConfig { dir, name, label } => {
            match clsync::profile_config::show(&dir, &name, label.as_deref()) {
                Ok(text) => print!("{text}"),
                Err(e) => {
                    eprintln!("clsync: error: {e}");
                    std::process::exit(e.exit_code());
                }
            }
        }
    }
}
