/*!
The command line of the original's first versions (clsync 0.1, 2013):
`clsync [OPTIONS] WATCH-DIR HANDLER [RULES-FILE [DESTINATION]]`, translated into today's
classic form.

Why it exists: the original's README recommended four command lines in this form (its
section "7. Recommended configuration", e.g. `clsync -R2 -d /dev/shm/clsync /tmp/fromdir
$(which rsync) /dev/zero /tmp/todir`), and scripts written from it still run them. Several
of its letters mean something else today (`-R` was rsync mode, now the rules file; `-d`
the lists directory, now debug; `-p` threading without a value; `-D` debug, now the
destination), so such a line cannot be read by today's parser. It is only tried when
today's parser refuses the command line ([`translate`] is called by `cli.rs` after a
failed parse), so no line that works in today's form changes its meaning; and it must
parse completely under the 0.1 grammar (its option table, from the original's `main.c`
and `common.h` of that time, getopt's rules: an optional value only attached, `-R2`), with
a watch directory and a handler, and use `-R` (0.1's rsync; `-R0` for its shell mode),
or it is not taken. (0.1 had `watch-dir`, `sync-handler`,
`rules-path` and `dir-destination` in its configuration file only; its command line gave
them as the positional words.)

What each option becomes: `-R` (rsync through the handler script) is `-M rsyncshell`,
`-R2` (rsync run directly) `-M rsyncdirect` (with today's default rsync arguments;
0.1 also passed `--inplace --delete-before`, which change nothing in the mirror's
content), `-R0` is `-M shell` (with `-S`, its `initialsync` calls are the
`--have-recursive-sync` ones; without `-S` there was no initial sync: `--skip-initialsync`);
`-M` (the handler is a shared object) the so modes; `-d DIR` `--lists-dir`, `-p` `--threading
safe`, `-I` `--rsync-prefer-include`, `-D[N]` `--debug`, `-L N` `--rsync-inclimit`, `-Y`
`--output syslog`, `-Z` `--synclist-simplify`, `-f` `--monitor fanotify`; the others keep
their letter. An empty RULES-FILE means none, as in 0.1. The cluster options and
`-A`/`-C` have no counterpart: a line with them is not translated (today's parser's
error stands).
*/

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// How an option of 0.1 takes its value.
#[derive(Clone, Copy, PartialEq)]
enum Takes {
    /// Required: attached or the next word.
    Value,
    /// Optional: attached only (getopt's `::`).
    Attached,
}

/// 0.1's options that have a counterpart today: (letter, long name, value).
const OPTIONS: &[(u8, &str, Takes)] = &[
    (b'H', "config-path", Takes::Value),
    (b'K', "config-block", Takes::Value),
    (b'b', "background", Takes::Attached),
    (b'u', "uid", Takes::Value),
    (b'g', "gid", Takes::Value),
    (b'p', "pthread", Takes::Attached),
    (b'Y', "syslog", Takes::Attached),
    (b'z', "pid-file", Takes::Value),
    (b'k', "timeout-sync", Takes::Value),
    (b'w', "delay-sync", Takes::Value),
    (b't', "delay-collect", Takes::Value),
    (b'T', "delay-collect-bigfile", Takes::Value),
    (b'B', "threshold-bigfile", Takes::Value),
    (b'd', "dir-lists", Takes::Value),
    (b'S', "initialsync-enable", Takes::Attached),
    (b'Z', "synclist-simplify", Takes::Attached),
    (b'M', "synchandler-so-module", Takes::Attached),
    (b'R', "rsync", Takes::Attached),
    (b'L', "rsync-inclimit", Takes::Value),
    (b'I', "rsync-prefer-include", Takes::Attached),
    (b'x', "ignore-exitcode", Takes::Value),
    (b'U', "dont-unlink-lists", Takes::Attached),
    (b'F', "full-initialsync", Takes::Attached),
    (b'v', "verbose", Takes::Attached),
    (b'D', "debug", Takes::Attached),
    (b'q', "quiet", Takes::Attached),
    (b'f', "fanotify", Takes::Attached),
    (b'i', "inotify", Takes::Attached),
    (b'l', "label", Takes::Value),
];

/// A flag's level as 0.1 counts it: bare is one more, `N` attached sets N (`atoi`).
fn level(previous: u32, value: Option<&OsStr>) -> u32 {
    match value {
        None => previous + 1,
        Some(v) => std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
    }
}

/// Today's classic command line for a command line of clsync 0.1 (`args[0]` is the
/// program), or None when it is not one.
#[must_use]
pub fn translate(args: &[OsString]) -> Option<Vec<OsString>> {
    let mut positional: Vec<OsString> = Vec::new();
    let mut given: Vec<(u8, Option<OsString>)> = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_bytes();
        i += 1;
        if a == b"--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = a.strip_prefix(b"--") {
            let (name, value) = match long.iter().position(|&b| b == b'=') {
                Some(p) => (
                    &long[..p],
                    Some(OsStr::from_bytes(&long[p + 1..]).to_owned()),
                ),
                None => (long, None),
            };
            let &(c, _, takes) = OPTIONS.iter().find(|o| o.1.as_bytes() == name)?;
            let value = match (takes, value) {
                (Takes::Value, None) => {
                    i += 1;
                    Some(args.get(i - 1)?.clone())
                }
                (_, v) => v,
            };
            given.push((c, value));
        } else if a.len() > 1 && a[0] == b'-' {
            // Every option of 0.1 takes a value, so a word is one option: `-R2`, `-d/dir`,
            // `-d DIR` (`-pR` is -p with the value "R", as getopt reads it).
            let &(c, _, takes) = OPTIONS.iter().find(|o| o.0 == a[1])?;
            let rest = (a.len() > 2).then(|| OsStr::from_bytes(&a[2..]).to_owned());
            let value = match (takes, rest) {
                (Takes::Value, None) => {
                    i += 1;
                    Some(args.get(i - 1)?.clone())
                }
                (_, v) => v,
            };
            given.push((c, value));
        } else {
            positional.push(args[i - 1].clone());
        }
    }
    // Only a line that uses 0.1's -R (rsync, in each of the README's lines), a letter
    // that means the rules file today: another line refused by today's parser keeps that
    // parser's message (`-d x /a /b` is a bad debug level, not 0.1's lists directory).
    if !given.iter().any(|(c, _)| *c == b'R') {
        return None;
    }
    let mut out: Vec<OsString> = vec![args.first()?.clone()];
    let push = |out: &mut Vec<OsString>, words: &[&OsStr]| {
        out.extend(words.iter().map(|w| w.to_os_string()));
    };
    let (mut rsync, mut so, mut initialsync, mut debug) = (0, 0, 0, 0);
    for (c, v) in &given {
        let v = v.as_deref();
        let arg = || v.unwrap_or_default();
        match c {
            b'R' => rsync = level(rsync, v),
            b'M' => so = level(so, v),
            b'S' => initialsync = level(initialsync, v),
            b'D' => debug = level(debug, v),
            b'd' => push(&mut out, &["--lists-dir".as_ref(), arg()]),
            b'p' => {
                if level(0, v) != 0 {
                    push(&mut out, &["--threading".as_ref(), "safe".as_ref()]);
                }
            }
            b'Y' => {
                if level(0, v) != 0 {
                    push(&mut out, &["--output".as_ref(), "syslog".as_ref()]);
                }
            }
            b'b' => {
                let on = level(0, v) != 0;
                push(&mut out, &[if on { "-b1" } else { "-b0" }.as_ref()]);
            }
            b'L' => push(&mut out, &["--rsync-inclimit".as_ref(), arg()]),
            b'f' => push(&mut out, &["--monitor".as_ref(), "fanotify".as_ref()]),
            b'i' => {}
            b'I' | b'Z' | b'U' | b'F' | b'v' | b'q' => {
                if level(0, v) != 0 {
                    let long = match c {
                        b'I' => "--rsync-prefer-include",
                        b'Z' => "--synclist-simplify",
                        b'U' => "--dont-unlink-lists",
                        b'F' => "--full-initialsync",
                        b'v' => "--verbose",
                        _ => "--quiet",
                    };
                    push(&mut out, &[long.as_ref()]);
                }
            }
            // The options with the same letter and a value today.
            _ => {
                let mut opt = OsString::from("-");
                opt.push(OsStr::from_bytes(&[*c]));
                push(&mut out, &[&opt, arg()]);
            }
        }
    }
    let mut pos = positional.iter().map(OsString::as_os_str);
    let watch = pos.next()?;
    let handler = pos.next()?;
    let rules = pos.next();
    let dest = pos.next();
    if pos.next().is_some() {
        return None;
    }
    let mode = match (rsync, so) {
        (0, 0) => "shell",
        (0, _) => "so",
        (_, 0) if rsync >= 2 => "rsyncdirect",
        (_, 0) => "rsyncshell",
        _ => "rsyncso",
    };
    push(&mut out, &["-M".as_ref(), mode.as_ref()]);
    push(&mut out, &["-W".as_ref(), watch, "-S".as_ref(), handler]);
    if let Some(r) = rules.filter(|r| !r.is_empty()) {
        push(&mut out, &["-R".as_ref(), r]);
    }
    if let Some(d) = dest {
        push(&mut out, &["-D".as_ref(), d]);
    }
    if mode == "shell" {
        if initialsync == 0 {
            push(&mut out, &["--skip-initialsync".as_ref()]);
        } else {
            push(&mut out, &["--have-recursive-sync".as_ref()]);
        }
    }
    if debug > 0 {
        push(&mut out, &["-d".as_ref(), debug.to_string().as_ref()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(line: &str) -> Option<String> {
        let args: Vec<OsString> = line.split(' ').map(OsString::from).collect();
        translate(&args).map(|v| {
            v.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
    }

    #[test]
    fn the_readmes_recommended_lines() {
        assert_eq!(
            t("clsync -R2 -d /dev/shm/clsync /tmp/fromdir /usr/bin/rsync /dev/zero /tmp/todir")
                .as_deref(),
            Some("clsync --lists-dir /dev/shm/clsync -M rsyncdirect -W /tmp/fromdir -S /usr/bin/rsync -R /dev/zero -D /tmp/todir")
        );
        assert_eq!(
            t("clsync -l backup -R -d /dev/shm/clsync -t600 -T3600 -B16777216 /home/user /h/a.sh /h/rules").as_deref(),
            Some("clsync -l backup --lists-dir /dev/shm/clsync -t 600 -T 3600 -B 16777216 -M rsyncshell -W /home/user -S /h/a.sh -R /h/rules")
        );
        assert_eq!(
            t("clsync -l mirror -p -R -d /dev/shm/clsync -I /home/user /h/a.sh /h/rules")
                .as_deref(),
            Some("clsync -l mirror --threading safe --lists-dir /dev/shm/clsync --rsync-prefer-include -M rsyncshell -W /home/user -S /h/a.sh -R /h/rules")
        );
    }

    #[test]
    fn getopt_rules_and_other_modes() {
        // -pR is -p with the value "R" (atoi: 0, so threading off), as getopt reads it;
        // an empty rules file is none.
        assert_eq!(
            t("clsync -R2 -pR -d/l w rsync  d").as_deref(),
            Some("clsync --lists-dir /l -M rsyncdirect -W w -S rsync -D d")
        );
        assert_eq!(
            t("clsync -R0 -S -d /l w h").as_deref(),
            Some("clsync --lists-dir /l -M shell -W w -S h --have-recursive-sync")
        );
        assert_eq!(
            t("clsync -R0 -D3 -d/l w h").as_deref(),
            Some("clsync --lists-dir /l -M shell -W w -S h --skip-initialsync -d 3")
        );
        // Without -R: today's parser's error stands.
        assert_eq!(t("clsync -p sometimes /a /b"), None);
        assert_eq!(t("clsync -d /l w h"), None);
        // Not 0.1's: an unknown option, a missing handler, too many words.
        assert_eq!(t("clsync --exclude x w h"), None);
        assert_eq!(t("clsync -R w"), None);
        assert_eq!(t("clsync -R w h r d extra"), None);
        assert_eq!(t("clsync -c eth0 w h"), None);
    }
}
