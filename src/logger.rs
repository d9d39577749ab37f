/*!
A minimal logger: one line per message on stderr, `clsync[LABEL]: level: message`.

stderr is what systemd's journal and the manager capture; a process-local logger keeps
the worker free of a logging framework's threads and allocations on the hot path.
*/

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct Logger {
    prefix: String,
    level: LevelFilter,
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = match r.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info => "",
            Level::Debug => "debug: ",
            Level::Trace => "trace: ",
        };
        let line = format!("{}{}{}\n", self.prefix, level, r.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger. `debug`: 0 = info, 1 = debug, 2 or more = trace.
pub fn init(label: Option<&str>, debug: u8) {
    let prefix = match label {
        Some(l) => format!("clsync[{l}]: "),
        None => "clsync: ".to_string(),
    };
    let level = match debug {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    if log::set_boxed_logger(Box::new(Logger { prefix, level })).is_ok() {
        log::set_max_level(level);
    }
}
