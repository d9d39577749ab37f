use super::*;

#[test]
fn short_form_is_quick() {
    let c = parse(["clsync", "/a", "/b"]).unwrap();
    assert_eq!(c.src, PathBuf::from("/a"));
    assert_eq!(c.delays.collect, Duration::from_millis(200));
    assert_eq!(c.threshold_bigfile, 134217728);
}

#[test]
fn classic_form_keeps_the_original_defaults() {
    let c = parse(["clsync", "-Mrsyncdirect", "-W/a", "-D", "/b", "-w5"]).unwrap();
    assert_eq!(c.delays.collect, Duration::from_secs(30));
    assert_eq!(c.delays.sync, Duration::from_secs(5));
    assert_eq!(c.delays.collect_bigfile, Duration::from_secs(1800));
    assert_eq!(c.dst, PathBuf::from("/b"));
}

#[test]
fn unimplemented_things_are_errors() {
    assert!(parse(["clsync", "-M", "shell", "-W/a", "-D/b"])
        .unwrap_err()
        .to_string()
        .contains("mode shell needs a sync handler (-S"));
    assert!(parse(["clsync", "-M", "sell", "-W/a"])
        .unwrap_err()
        .to_string()
        .contains("unknown mode \"sell\""));
    assert!(parse(["clsync", "--no-such-option", "/a", "/b"]).is_err());
    assert!(parse(["clsync", "--chroot", "/x", "/a", "/b"])
        .unwrap_err()
        .to_string()
        .contains("option --chroot of the original clsync is not supported: clsync does not sandbox itself"));
    assert!(parse(["clsync", "-p", "sometimes", "/a", "/b"])
        .unwrap_err()
        .to_string()
        .contains("expected off, safe or full"));
    assert!(parse(["clsync", "--uid=no-such-user-here", "/a", "/b"])
        .unwrap_err()
        .to_string()
        .contains("unknown user"));
    assert!(parse(["clsync", "/a"]).is_err());
    assert!(parse(["clsync", "-b1", "/a", "/b"]).unwrap().background);
    assert!(!parse(["clsync", "-b0", "/a", "/b"]).unwrap().background);
    assert!(parse(["clsync", "-b", "/a", "/b"]).unwrap().background);
    assert!(parse(["clsync", "-W/a"]).is_err());
    assert!(parse(["clsync", "-t", "abc", "/a", "/b"]).is_err());
}

#[test]
fn monitor_inotify_or_fanotify() {
    assert!(parse(["clsync", "--monitor", "inotify", "/a", "/b"]).is_ok());
    assert_eq!(
        parse(["clsync", "--monitor", "fanotify", "/a", "/b"])
            .unwrap()
            .monitor,
        crate::watch::Monitor::Fanotify
    );
    assert!(parse(["clsync", "--monitor=dnotify", "/a", "/b"])
        .unwrap_err()
        .to_string()
        .contains("expected inotify or fanotify"));
    assert!(parse(["clsync", "--monitor=kqueue", "/a", "/b"])
        .unwrap_err()
        .to_string()
        .contains("not supported"));
}

#[test]
fn non_utf8_paths_pass_through() {
    use std::os::unix::ffi::OsStrExt;
    let s = std::ffi::OsStr::from_bytes(b"/tmp/\xff");
    let c = parse([
        std::ffi::OsStr::new("clsync"),
        s,
        std::ffi::OsStr::new("/b"),
    ])
    .unwrap();
    assert_eq!(c.src.as_os_str().as_bytes(), b"/tmp/\xff");
}
