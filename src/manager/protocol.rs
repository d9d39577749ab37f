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
    // By bytes, not chars (a `status` of 200 instances is 150 kB): DEL is 0x7f, C1 is
    // 0xc2 0x80..=0x9f in UTF-8.
    let b = text.as_bytes();
    let raw_control = b.iter().enumerate().any(|(i, &x)| {
        x == 0x7f || (x == 0xc2 && b.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
    });
    if !raw_control {
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

/// One instance in `status`. The fields are in alphabetical order: serialized directly
/// (see [`status_line`]) they come out in the order a `serde_json::Value` of them has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    /// Per destination: `destination`, `state` (ok, failing, unreachable), `queued`,
    /// `lag_s`, `last_sync_unix`, `last_error`.
    #[serde(default)]
    pub destinations: Option<Vec<crate::report::Destination>>,
    pub events: Option<u64>,
    pub last_error: Option<String>,
    pub last_sync_unix: Option<f64>,
    pub name: String,
    pub on_demand: bool,
    pub pid: Option<i32>,
    pub profile: String,
    /// A long initial (or full) sync's progress: bytes, percent, rate, time left, files.
    #[serde(default)]
    pub progress: Option<String>,
    pub queued: Option<u64>,
    pub restarts: u32,
    /// The worker's confinement as it reported it: `{"enabled":false}`, or `enabled` with
    /// `landlock` (`full`, `partial`, `none`), `seccomp` (calls refused) and `no_network`;
    /// absent before its first report.
    #[serde(default)]
    pub sandbox: Option<crate::report::Sandbox>,
    /// stopped, starting, initsync, running, stopping, backoff, failed, waiting
    pub state: String,
    pub sync_failures: Option<u64>,
    pub syncs: Option<u64>,
    pub uptime_s: Option<f64>,
    pub watches: Option<u64>,
}

/// The response line (newline included) of a successful `status`: written straight from
/// the list, not through a `serde_json::Value` of it, whose maps and strings cost the
/// daemon ~15 µs per instance to build, write and drop (3.4 ms of CPU for 200 instances,
/// for every `status`; bench/many.sh). The same JSON: `{"ok":true,"data":[...]}`.
pub(crate) fn status_line(list: &[InstanceStatus]) -> Vec<u8> {
    let mut line = Vec::with_capacity(64 + 800 * list.len());
    line.extend_from_slice(b"{\"ok\":true,\"data\":");
    line.extend_from_slice(json_text(&list, false).as_bytes());
    line.extend_from_slice(b"}\n");
    line
}

/// Sends one request to the daemon at `socket` and reads its response. `timeout` bounds
/// the wait for the response (a `stop` waits for the final sync).
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, String> {
    let line = call_line(socket, req, timeout)?;
    serde_json::from_str(&line).map_err(|e| format!("invalid response from the daemon: {e}"))
}

/// [`call`], with the response line as it came (the caller parses it into what it needs:
/// the status table reads it straight into [`InstanceStatus`]es).
pub fn call_line(socket: &Path, req: &Request, timeout: Duration) -> Result<String, String> {
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
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status line written straight from the list says what the `Response` of a
    /// `serde_json::Value` of it said, key for key.
    #[test]
    fn the_status_line_is_the_response_of_the_list() {
        let report: crate::report::Report = serde_json::from_str(
            r#"{"consecutive_failures":0,"destinations":[{"consecutive_failures":0,"destination":"/srv","lag_s":0.0,"last_error":null,"last_sync_unix":1.5,"queued":0,"state":"ok"}],"events":9,"iterations":1,"last_error":null,"last_sync_unix":1.5,"phase":"running","queued":0,"ready":true,"running_syncs":0,"sandbox":{"enabled":true,"landlock":"partial","seccomp":46,"no_network":false},"standby":false,"sync_failures":0,"syncing":false,"syncs":1,"unwatched_dirs":0,"uptime_s":0.5,"watches":4}"#,
        )
        .unwrap();
        let crate::report::Report::State(st) = report else {
            panic!("a state")
        };
        let full = InstanceStatus {
            destinations: Some(st.destinations.clone()),
            events: Some(9),
            last_error: Some("a \x1b[2J \u{9b} \"quoted\"".into()),
            last_sync_unix: Some(1.5),
            name: "lxc@web01".into(),
            on_demand: true,
            pid: Some(4242),
            profile: "lxc".into(),
            progress: Some("50%".into()),
            queued: Some(0),
            restarts: 2,
            sandbox: st.sandbox.clone(),
            state: "running".into(),
            sync_failures: Some(0),
            syncs: Some(1),
            uptime_s: Some(0.25),
            watches: Some(4),
        };
        let empty = InstanceStatus {
            destinations: None,
            events: None,
            last_error: None,
            last_sync_unix: None,
            name: "mirror".into(),
            on_demand: false,
            pid: None,
            profile: "mirror".into(),
            progress: None,
            queued: None,
            restarts: 0,
            sandbox: None,
            state: "stopped".into(),
            sync_failures: None,
            syncs: None,
            uptime_s: None,
            watches: None,
        };
        for list in [
            vec![],
            vec![empty.clone()],
            vec![full.clone()],
            vec![full, empty],
        ] {
            let line = status_line(&list);
            assert_eq!(line.last(), Some(&b'\n'));
            let text = std::str::from_utf8(&line).unwrap();
            assert!(!text
                .chars()
                .any(|c| crate::logger::is_control(c) && c != '\n'));
            let via_value = json_text(&Response::ok(serde_json::to_value(&list).unwrap()), false);
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(text).unwrap(),
                serde_json::from_str::<serde_json::Value>(&via_value).unwrap()
            );
            // Same keys in the same order, but within `sandbox` (flattened: its own order).
            if !text.contains("\"sandbox\":{") {
                assert_eq!(text.trim_end(), via_value);
            }
        }
    }

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
        // Each alone (the scan by bytes finds it), and their neighbours left alone.
        for (c, want) in [
            ('\x7f', "\\u007f"),
            ('\u{80}', "\\u0080"),
            ('\u{9f}', "\\u009f"),
            ('\u{a0}', "\u{a0}"),
            ('\u{7e}', "~"),
            ('\u{100}', "\u{100}"),
            ('\u{2080}', "\u{2080}"),
        ] {
            assert_eq!(
                json_text(&c.to_string(), false),
                format!("\"{want}\""),
                "{c:?}"
            );
        }
    }
}
