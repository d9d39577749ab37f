/*!
A minimal logger with the original's outputs: `stderr`, `stdout`, `syslog` and (new)
`journal`.

- `stderr`: one line per message, `clsync[LABEL]: level: message`; what the manager
  captures.
- `syslog`: through libc's syslog(3), ident `clsync[LABEL]`, facility daemon. libc
  reconnects to /dev/log by itself when syslogd restarts (the `syslog` crate does not).
- `journal`: stderr lines with the `<N>` priority prefix that journald reads from a
  service's output stream, so levels survive without a journal client library.

A process-local logger keeps the worker free of a logging framework's threads and
allocations on the hot path.
*/

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::ffi::CString;
use std::io::Write;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Stderr,
    Stdout,
    Syslog,
    Journal,
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stderr" | "" => Ok(Output::Stderr),
            "stdout" => Ok(Output::Stdout),
            "syslog" => Ok(Output::Syslog),
            "journal" => Ok(Output::Journal),
            other => Err(format!(
                "invalid output {other:?}; valid outputs: stderr, stdout, syslog, journal"
            )),
        }
    }
}

struct Logger {
    prefix: String,
    output: Output,
}

/// syslog(3) priorities, which journald's `<N>` prefixes share.
fn priority(l: Level) -> libc::c_int {
    match l {
        Level::Error => libc::LOG_ERR,
        Level::Warn => libc::LOG_WARNING,
        Level::Info => libc::LOG_INFO,
        Level::Debug | Level::Trace => libc::LOG_DEBUG,
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
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
        match self.output {
            Output::Stderr => {
                let line = format!("{}{}{}\n", self.prefix, level, r.args());
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Output::Stdout => {
                let line = format!("{}{}{}\n", self.prefix, level, r.args());
                let _ = std::io::stdout().lock().write_all(line.as_bytes());
            }
            Output::Journal => {
                let line = format!(
                    "<{}>{}{}{}\n",
                    priority(r.level()),
                    self.prefix,
                    level,
                    r.args()
                );
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Output::Syslog => {
                let msg = format!("{level}{}", r.args()).replace('\0', "\\0");
                if let Ok(c) = CString::new(msg) {
                    // SAFETY: "%s" with one NUL-terminated string argument.
                    unsafe { libc::syslog(priority(r.level()), c"%s".as_ptr(), c.as_ptr()) };
                }
            }
        }
    }

    fn flush(&self) {}
}

/// The log level for `-d LEVEL` and `-q`.
fn level(debug: u8, quiet: bool) -> LevelFilter {
    match (quiet, debug) {
        (true, _) => LevelFilter::Error,
        (false, 0) => LevelFilter::Info,
        (false, 1) => LevelFilter::Debug,
        (false, _) => LevelFilter::Trace,
    }
}

/// Changes the log level (a configuration reload).
pub(crate) fn set_level(debug: u8, quiet: bool) {
    log::set_max_level(level(debug, quiet));
}

/// Installs the worker's logger (`clsync[LABEL]: `). `debug`: 0 = info, 1 = debug, 2 or
/// more = trace; `quiet` keeps errors only.
pub fn init(label: Option<&str>, debug: u8, quiet: bool, output: Output) {
    let name = match label {
        Some(l) => format!("clsync[{l}]"),
        None => "clsync".to_string(),
    };
    init_named(name, debug, quiet, output);
}

/// Installs the logger with `name` as the prefix and syslog ident.
pub(crate) fn init_named(name: String, debug: u8, quiet: bool, output: Output) {
    let level = level(debug, quiet);
    if output == Output::Syslog {
        // openlog keeps the pointer: the ident must live as long as the process.
        let ident: &'static CString =
            Box::leak(Box::new(CString::new(name.clone()).unwrap_or_default()));
        // SAFETY: a 'static NUL-terminated ident; LOG_PID | LOG_NDELAY, facility daemon.
        unsafe {
            libc::openlog(
                ident.as_ptr(),
                libc::LOG_PID | libc::LOG_NDELAY,
                libc::LOG_DAEMON,
            )
        };
    }
    let logger = Logger {
        prefix: format!("{name}: "),
        output,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
