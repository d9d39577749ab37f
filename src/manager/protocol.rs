/*!
The control protocol of clsync-manager: one JSON object per line over a Unix socket.

A client connects, writes one request line and reads one response line; then the
connection is closed. Documented in docs/manager.md. Requests:

```text
{"cmd":"start","name":"lxc-web01"}     {"cmd":"stop","name":"mirror"}
{"cmd":"restart","name":"mirror"}      {"cmd":"status"}   {"cmd":"status","name":"mirror"}
{"cmd":"list"}  {"cmd":"reload"}  {"cmd":"resync","name":"mirror"}
{"cmd":"logs","name":"mirror","lines":50}  {"cmd":"metrics"}  {"cmd":"check"}
```

Responses: `{"ok":true,"data":...}` or `{"ok":false,"error":"one line"}`. A request that
is not understood changes nothing.
*/

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The default control socket.
pub(crate) const DEFAULT_SOCKET: &str = "/run/clsync/manager.sock";
/// The environment variable that overrides [`DEFAULT_SOCKET`].
pub(crate) const SOCKET_ENV: &str = "CLSYNC_MANAGER_SOCKET";

/// `v` as JSON text in which no control character is raw: serde_json escapes C0 (as
/// `\u001b`, `\n`), and this escapes DEL and C1 (U+007F–U+009F) the same way, which
/// serde_json leaves raw. Outside strings JSON text is ASCII without those, so the
/// replacement is only ever inside a string, and the text stays valid JSON that means the
/// same. What the daemon sends and what the command line prints go through this.
pub(crate) fn json_text(v: &impl Serialize, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
    .unwrap_or_default();
    if !text.chars().any(|c| matches!(c, '\x7f'..='\u{9f}')) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if matches!(c, '\x7f'..='\u{9f}') {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The longest request line the daemon reads.
pub(crate) const MAX_REQUEST: usize = 64 << 10;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<usize>,
    /// `resolve`: which side of a split-brain to keep, `local` or `peer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    #[must_use]
    pub(crate) fn ok(data: serde_json::Value) -> Response {
        Response {
            ok: true,
            data: Some(data),
            error: None,
        }
    }

    pub(crate) fn err(e: impl Into<String>) -> Response {
        Response {
            ok: false,
            data: None,
            error: Some(e.into()),
        }
    }
}

/// One instance in `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    pub name: String,
    pub profile: String,
    /// stopped, starting, initsync, running, stopping, backoff, failed, waiting
    pub state: String,
    pub pid: Option<i32>,
    pub uptime_s: Option<f64>,
    pub restarts: u32,
    pub last_sync_unix: Option<f64>,
    pub queued: Option<u64>,
    pub events: Option<u64>,
    pub syncs: Option<u64>,
    pub sync_failures: Option<u64>,
    pub watches: Option<u64>,
    pub last_error: Option<String>,
    pub on_demand: bool,
    /// A long initial (or full) sync's progress: bytes, percent, rate, time left, files.
    #[serde(default)]
    pub progress: Option<String>,
    /// Per destination: `destination`, `state` (ok, failing, unreachable), `queued`,
    /// `lag_s`, `last_sync_unix`, `last_error`.
    #[serde(default)]
    pub destinations: Option<Vec<crate::report::Destination>>,
    /// The worker's confinement as it reported it: `{"enabled":false}`, or `enabled` with
    /// `landlock` (`full`, `partial`, `none`), `seccomp` (calls refused) and `no_network`;
    /// absent before its first report.
    #[serde(default)]
    pub sandbox: Option<crate::report::Sandbox>,
}

/// Sends one request to the daemon at `socket` and reads its response. `timeout` bounds
/// the wait for the response (a `stop` waits for the final sync).
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
            "clsync-manager is not running (no daemon answers on {}): start it with `clsync-manager run` or `systemctl start clsync-manager`",
            socket.display()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{}: permission denied (the control socket is for root and the configured group)",
            socket.display()
        ),
        _ => format!("{}: {e}", socket.display()),
    })?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(Duration::from_secs(10))).ok();
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    // A daemon that refuses the client answers at once and closes: the write may fail,
    // and the answer is still there to read.
    let written = s.write_all(&line);
    let mut reader = BufReader::new(s);
    let mut resp = String::new();
    let read = reader.read_line(&mut resp);
    if resp.is_empty() {
        return Err(match (written, read) {
            (Err(e), _) | (_, Err(e)) => format!("{}: {e}", socket.display()),
            _ => format!(
                "{}: the daemon closed the connection without a response",
                socket.display()
            ),
        });
    }
    serde_json::from_str(&resp).map_err(|e| format!("invalid response from the daemon: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_has_no_raw_control() {
        let v = serde_json::json!({ "name": "a\x1b[2J\n\x7f\u{9b}31m\u{a0}é" });
        let t = json_text(&v, false);
        assert_eq!(
            t,
            r#"{"name":"a\u001b[2J\n\u007f\u009b31m\u{a0}é"}"#.replace("\\u{a0}", "\u{a0}")
        );
        assert!(!t.chars().any(crate::logger::is_control), "{t:?}");
        let back: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(back, v);
        assert!(!json_text(&v, true)
            .chars()
            .any(|c| crate::logger::is_control(c) && c != '\n'));
    }
}
