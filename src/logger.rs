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

Every line goes through [`escape_controls`]: names, labels and paths come from users
(file names in a watched tree, profile file names, worker output the manager relays), and
a control character in them must not reach a terminal or a log reader as one (an ESC
sequence that rewrites the screen, a newline that forges a second log line). The same
function escapes the manager's status table and its JSON (see docs/security.md,
"Output").
*/

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::borrow::Cow;
use std::ffi::CString;
use std::fmt::Write as _;
use std::io::Write;

/// Whether `c` is a control character that must not be printed raw: C0 (U+0000–U+001F),
/// DEL (U+007F) and C1 (U+0080–U+009F; a terminal may take U+009B as CSI).
#[must_use]
pub fn is_control(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f'..='\u{9f}')
}

/// `s` with its control characters escaped: `\n`, `\r`, `\t`, `\xNN` for the other C0
/// characters and DEL, `\u{NN}` for C1. Everything else (backslashes too) is left as it
/// is: this is for showing, not a reversible encoding. Borrowed when nothing changes (the
/// common case, so the log's hot path does not allocate twice).
#[must_use]
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// Bytes (a path, a file name) shown as text: valid UTF-8 as in [`escape_controls`], each
/// byte of an invalid sequence as `\xNN` (where `Path::display` would show U+FFFD and
/// lose which bytes they were).
#[must_use]
pub fn escape_bytes(b: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b) {
        return escape_controls(s);
    }
    let mut out = String::with_capacity(b.len() + 8);
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c);
        }
        for x in chunk.invalid() {
            let _ = write!(out, "\\x{x:02x}");
        }
    }
    Cow::Owned(out)
}

/// A path for a log line or a message: [`escape_bytes`] of its bytes.
#[must_use]
pub fn path(p: &std::path::Path) -> Cow<'_, str> {
    use std::os::unix::ffi::OsStrExt;
    escape_bytes(p.as_os_str().as_bytes())
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0'..='\x1f' | '\x7f' => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        '\u{80}'..='\u{9f}' => {
            let _ = write!(out, "\\u{{{:02x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

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
        // One buffer, so that a line is one write: `<N>` for the journal, the prefix
        // (escaped already), the level, the message; escaped as a whole only when it
        // holds a control character.
        let mut line = String::with_capacity(128);
        if self.output == Output::Journal {
            let _ = write!(line, "<{}>", priority(r.level()));
        }
        if self.output != Output::Syslog {
            line.push_str(&self.prefix);
        }
        let _ = write!(line, "{level}{}", r.args());
        let mut line = match escape_controls(&line) {
            Cow::Borrowed(_) => line,
            Cow::Owned(escaped) => escaped,
        };
        match self.output {
            Output::Stderr | Output::Journal => {
                line.push('\n');
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Output::Stdout => {
                line.push('\n');
                let _ = std::io::stdout().lock().write_all(line.as_bytes());
            }
            Output::Syslog => {
                // NUL is escaped too (`\x00`): CString would not take it.
                if let Ok(c) = CString::new(line) {
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

/// Warnings raised while the configuration that says where the log goes is still being
/// read (a `-H` block's keys that change nothing here, with the reason): there is no
/// logger yet, and `log` drops what it gets before one, so they wait here for
/// [`init_named`].
static EARLY: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Whether [`init_named`] has installed the logger.
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Logs a warning now, or as soon as the logger is installed.
pub(crate) fn warn_soon(msg: String) {
    if INSTALLED.load(std::sync::atomic::Ordering::Acquire) {
        log::warn!("{msg}");
    } else {
        EARLY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(msg);
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
    let name = escape_controls(&name).into_owned();
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
    INSTALLED.store(true, std::sync::atomic::Ordering::Release);
    let early = std::mem::take(
        &mut *EARLY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for msg in early {
        log::warn!("{msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape_controls("plain/ü name"), "plain/ü name");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\x1b[31mred\nforged\r\tz\0\x7f"),
            "a\\x1b[31mred\\nforged\\r\\tz\\x00\\x7f"
        );
        assert_eq!(
            escape_controls("csi\u{9b}2J\u{80}\u{a0}"),
            "csi\\u{9b}2J\\u{80}\u{a0}"
        );
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let e = escape_controls(&c.to_string()).into_owned();
            assert!(!e.chars().any(is_control), "{c:?} -> {e:?}");
        }
    }

    #[test]
    fn invalid_bytes_are_shown_as_bytes() {
        assert_eq!(escape_bytes(b"ok"), "ok");
        assert_eq!(escape_bytes(b"a\xff\xfeb\x1b"), "a\\xff\\xfeb\\x1b");
        assert_eq!(escape_bytes("é\n".as_bytes()), "é\\n");
    }
}
