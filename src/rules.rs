/*!
Filter rules in the original clsync's format: one rule per line, `[+-][fdWwms*]regex`.

`+` includes, `-` excludes; the type letters say what the rule applies to: `f` files,
`d` directories (walk, monitor and sync), `W` walk + monitor, `w` walk, `m` monitor,
`s` sync, `*` everything. The regex is matched against the path relative to the watch
directory without a leading slash (the root itself is the empty string, so `+d^$` names
it). The first matching rule decides; a path no rule matches is included.

For a directory each action is decided on its own, by the first rule that matches the
path and names that action: walk (`w`, `W`, `d`, `*`), monitor (`m`, `W`, `d`, `*`) and
sync (`s`, `d`, `*`). In the rsync modes walking and syncing cannot be separated (rsync
descends into what it syncs), so a directory whose walk or sync is excluded is neither
watched nor synced; one whose monitoring alone is excluded is synced (at start, and when
an ancestor is synced recursively) but gets no inotify watch. The modes that hand paths
to their handler (shell, direct, simple, so) decide the two apart, as the original does
([`Rules::walk_apart`]): a directory whose walk is permitted and whose sync is not is
walked (and watched, if monitoring is permitted) but is not itself in the handler's
lists, so `+w^$`, `+w^[^/]+$`, `+W^[^/]+/.ssh$`, `+f^[^/]+/.ssh/authorized_keys$`, `-*`
(clsync(1)'s authorized_keys example) hands `cp --parents` the key files alone. Anything that is not a
directory is typed by `lstat`, as in the original: a regular file is matched by `f` and
`*` rules, a symlink, device, fifo or socket only by `*` rules.

Regexes are matched on bytes, so non-UTF-8 names are filtered like any other. They are
Unicode-aware (`.` is one character, `\w` a Unicode word character), except that `(?i)`
folds ASCII letters only, as the C library does in the C locale: Unicode's case tables
would add 140 KB to every worker's start-up relocations (see [`compile`]); `\p{…}`
classes are not built in either and are refused with the rule's file and line.

Profiles may also say `exclude = [globs]` and `include = [globs]`, the friendlier form:
gitignore-style patterns where `*` does not cross `/`, `**` does, a pattern without a `/`
matches a name at any depth, a leading or inner `/` anchors it at the watch root, and a
trailing `/` matches directories only. Globs are checked before the regex rules, includes
before excludes: a path matching an `include` is never excluded by an `exclude`.
*/

use regex::bytes::{Regex, RegexBuilder};
use std::path::{Path, PathBuf};

/// Compiles a rule's regex. The build leaves out regex's Unicode case-folding and
/// property tables (their pointers are relocated, so dirtied, at every start: ~190 KB of
/// resident memory per worker); a pattern that asks for case-insensitive matching is
/// compiled in ASCII mode instead, where `(?i)` folds `A-Z` only and `.` is one byte.
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(pattern).or_else(|e| {
        if e.to_string().contains("case insensitiv") {
            RegexBuilder::new(pattern).unicode(false).build()
        } else {
            Err(e)
        }
    })
}

/// Whether `path` is the null or the zero device (by its device number, through
/// symlinks): a rules file that holds no rules.
#[must_use]
pub(crate) fn is_empty_device(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::metadata(path).is_ok_and(|m| {
        m.file_type().is_char_device()
            && libc::major(m.rdev()) == 1
            && matches!(libc::minor(m.rdev()), 3 | 5)
    })
}

/// What a path is, by `lstat` (symlinks are not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// Symlinks, devices, fifos, sockets: only `*` rules apply.
    Other,
}

impl Kind {
    #[must_use]
    pub(crate) fn of(t: std::fs::FileType) -> Kind {
        if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

#[derive(Debug)]
enum Matcher {
    Regex(Regex),
    Glob(globset::GlobMatcher),
}

impl Matcher {
    fn is_match(&self, rel: &[u8]) -> bool {
        match self {
            Matcher::Regex(r) => r.is_match(rel),
            Matcher::Glob(g) => {
                use std::os::unix::ffi::OsStrExt;
                g.is_match(std::ffi::OsStr::from_bytes(rel))
            }
        }
    }
}

#[derive(Debug)]
struct Rule {
    include: bool,
    files: bool,
    walk: bool,
    monitor: bool,
    sync: bool,
    other: bool,
    regex: Matcher,
}

/// A parsed rules file.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    /// A directory's walk and sync are decided apart ([`Rules::walk_apart`]).
    walk_apart: bool,
}

/// A rules file that could not be read or parsed; names the file, line and value.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{file}: cannot read the rules file: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// Someone besides root (or the running user) may change the file ([`crate::strict`]).
    #[error("{message}")]
    Unsafe { message: String },
    #[error("{file}:{line}: invalid rule {text:?}: {why}")]
    Parse {
        file: PathBuf,
        line: usize,
        text: String,
        why: String,
    },
    #[error("{file}: invalid glob {pattern:?}: {why}")]
    Glob {
        file: PathBuf,
        pattern: String,
        why: String,
    },
}

impl Rules {
    /// No rules: everything is included.
    #[must_use]
    pub(crate) fn none() -> Self {
        Rules::default()
    }

    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub(crate) fn load(file: &Path) -> Result<Self, RulesError> {
        let text = std::fs::read(file).map_err(|source| RulesError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(&String::from_utf8_lossy(&text), file)
    }

    /// Parses rules text; `file` only names the source in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, RulesError> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why: String| RulesError::Parse {
                file: file.to_path_buf(),
                line: i + 1,
                text: line.to_string(),
                why,
            };
            let mut chars = line.chars();
            let include = match chars.next() {
                Some('+') => true,
                Some('-') => false,
                Some(c) => return Err(err(format!("must start with '+' or '-', not {c:?}"))),
                None => unreachable!("empty lines are skipped"),
            };
            // (files, walk, monitor, sync, other)
            let (files, walk, monitor, sync, other) = match chars.next() {
                Some('f') => (true, false, false, false, false),
                Some('d') => (false, true, true, true, false),
                Some('W') => (false, true, true, false, false),
                Some('w') => (false, true, false, false, false),
                Some('m') => (false, false, true, false, false),
                Some('s') => (false, false, false, true, false),
                Some('*') => (true, true, true, true, true),
                Some(c) => {
                    return Err(err(format!(
                        "unknown type {c:?}; valid types are f, d, W, w, m, s, *"
                    )))
                }
                None => return Err(err("missing type letter and regex".into())),
            };
            let regex = compile(chars.as_str()).map_err(|e| err(e.to_string()))?;
            rules.push(Rule {
                include,
                files,
                walk,
                monitor,
                sync,
                other,
                regex: Matcher::Regex(regex),
            });
        }
        Ok(Rules {
            rules,
            walk_apart: false,
        })
    }

    /// For the modes that hand paths to their handler (shell, direct, simple, so): a
    /// directory whose sync is excluded but whose walk is permitted is still walked and
    /// watched, and left out of the handler's lists only ([`Rules::listed`]). Without it
    /// (the rsync modes, whose rsync descends into what it syncs) either exclusion leaves
    /// the directory out.
    #[must_use]
    pub(crate) fn walk_apart(mut self, yes: bool) -> Self {
        self.walk_apart = yes;
        self
    }

    /// Puts gitignore-style `include` and `exclude` globs in front of the rules (includes
    /// first, so they win). `file` names the source in errors.
    pub fn with_globs(
        mut self,
        include: &[String],
        exclude: &[String],
        file: &Path,
    ) -> Result<Self, RulesError> {
        let mut front = Vec::new();
        for (list, inc) in [(include, true), (exclude, false)] {
            for pat in list {
                let err = |why: String| RulesError::Glob {
                    file: file.to_path_buf(),
                    pattern: pat.clone(),
                    why,
                };
                let (body, dirs_only) = match pat.strip_suffix('/') {
                    Some(b) => (b, true),
                    None => (pat.as_str(), false),
                };
                if body.is_empty() {
                    return Err(err("empty pattern".into()));
                }
                let anchored = body.contains('/');
                let body = body.trim_start_matches('/');
                let full = if anchored {
                    body.to_string()
                } else {
                    format!("**/{body}")
                };
                let glob = globset::GlobBuilder::new(&full)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| err(e.kind().to_string()))?;
                front.push(Rule {
                    include: inc,
                    files: !dirs_only,
                    walk: true,
                    monitor: true,
                    sync: true,
                    other: !dirs_only,
                    regex: Matcher::Glob(glob.compile_matcher()),
                });
            }
        }
        front.append(&mut self.rules);
        self.rules = front;
        Ok(self)
    }

    /// The first matching rule that `applies`; no match permits.
    fn permits(&self, rel: &[u8], applies: impl Fn(&Rule) -> bool) -> bool {
        self.rules
            .iter()
            .find(|r| applies(r) && r.regex.is_match(rel))
            .is_none_or(|r| r.include)
    }

    /// Whether the path (relative, no leading slash) is excluded: for a directory, when
    /// walking or syncing it is excluded (walking alone with [`Rules::walk_apart`]).
    #[must_use]
    pub fn excluded(&self, rel: &[u8], kind: Kind) -> bool {
        match kind {
            Kind::File => !self.permits(rel, |r| r.files),
            Kind::Other => !self.permits(rel, |r| r.other),
            Kind::Dir => {
                !self.permits(rel, |r| r.walk)
                    || (!self.walk_apart && !self.permits(rel, |r| r.sync))
            }
        }
    }

    /// Whether a path goes into the handler's lists: not excluded, and for a directory
    /// its sync permitted too.
    #[must_use]
    pub(crate) fn listed(&self, rel: &[u8], kind: Kind) -> bool {
        !self.excluded(rel, kind) && (kind != Kind::Dir || self.permits(rel, |r| r.sync))
    }

    /// Whether a (not excluded) directory gets an inotify watch.
    #[must_use]
    pub(crate) fn monitored(&self, rel: &[u8]) -> bool {
        self.permits(rel, |r| r.monitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Rules {
        Rules::parse(text, Path::new("rules")).unwrap()
    }

    #[test]
    fn first_match_wins_and_default_is_include() {
        let r = rules("+f^keep\\.tmp$\n-f\\.tmp$\n-d^cache$\n");
        assert!(r.excluded(b"a/b.tmp", Kind::File));
        assert!(!r.excluded(b"keep.tmp", Kind::File));
        assert!(r.excluded(b"cache", Kind::Dir));
        assert!(
            !r.excluded(b"cache", Kind::File),
            "a file named cache is not a dir"
        );
        assert!(!r.excluded(b"sub/cache", Kind::Dir));
        assert!(!r.excluded(b"other", Kind::File));
    }

    #[test]
    fn sparse_include_example_from_the_man_page() {
        let r = rules("+f^passwd$\n+f^ssh/sshd_config$\n+d^$\n+d^ssh$\n-*\n");
        assert!(!r.excluded(b"", Kind::Dir));
        assert!(!r.excluded(b"passwd", Kind::File));
        assert!(!r.excluded(b"ssh", Kind::Dir));
        assert!(!r.excluded(b"ssh/sshd_config", Kind::File));
        assert!(r.excluded(b"ssh/moduli", Kind::File));
        assert!(r.excluded(b"hosts", Kind::File));
        assert!(r.excluded(b"apt", Kind::Dir));
    }

    #[test]
    fn symlinks_and_specials_match_only_star_rules() {
        let r = rules("-f\\.tmp$\n-d^cache$\n");
        assert!(r.excluded(b"x.tmp", Kind::File));
        assert!(!r.excluded(b"x.tmp", Kind::Other), "a symlink is not an f");
        assert!(!r.excluded(b"cache", Kind::Other), "nor a d");
        let r = rules("-*\\.tmp$");
        assert!(r.excluded(b"x.tmp", Kind::Other));
    }

    #[test]
    fn each_directory_action_has_its_own_first_match() {
        let r = rules("-m^logs$\n-s^nosync$\n+W^walked$\n-d^walked$\n-w^nowalk$\n");
        assert!(!r.excluded(b"logs", Kind::Dir), "walked and synced");
        assert!(!r.monitored(b"logs"), "but not monitored");
        assert!(
            r.excluded(b"nosync", Kind::Dir),
            "sync excluded: not mirrored at all"
        );
        assert!(r.excluded(b"nowalk", Kind::Dir));
        // +W permits walk and monitor; the sync action falls through to -d.
        assert!(r.monitored(b"walked"));
        assert!(r.excluded(b"walked", Kind::Dir));
        assert!(r.monitored(b"other") && !r.excluded(b"other", Kind::Dir));
    }

    /// clsync(1)'s authorized_keys example: in the modes that take paths, a directory
    /// walked but not synced is entered (and watched where monitoring is permitted)
    /// without being listed; in the rsync modes it is left out.
    #[test]
    fn walk_apart_walks_what_it_does_not_list() {
        let text = "+w^$\n+w^[^/]+$\n+W^[^/]+/.ssh$\n+f^[^/]+/.ssh/authorized_keys$\n-*";
        let r = rules(text).walk_apart(true);
        for dir in [&b""[..], b"alice", b"alice/.ssh"] {
            assert!(!r.excluded(dir, Kind::Dir), "{dir:?} is walked");
            assert!(!r.listed(dir, Kind::Dir), "{dir:?} is not listed");
        }
        assert!(r.monitored(b"alice/.ssh") && !r.monitored(b"alice"));
        assert!(
            r.excluded(b"alice/docs", Kind::Dir),
            "-* forbids walking the rest"
        );
        assert!(r.listed(b"alice/.ssh/authorized_keys", Kind::File));
        assert!(!r.listed(b"alice/.ssh/id_ed25519", Kind::File));
        let r = rules(text);
        assert!(
            r.excluded(b"alice", Kind::Dir),
            "rsync modes: sync excluded, left out"
        );
    }

    #[test]
    fn null_and_zero_are_empty_rules_files() {
        assert!(is_empty_device(Path::new("/dev/null")));
        assert!(is_empty_device(Path::new("/dev/zero")));
        assert!(!is_empty_device(Path::new("/dev/urandom")));
        assert!(!is_empty_device(Path::new("/etc/passwd")));
    }

    #[test]
    fn globs_are_gitignore_style_and_includes_win() {
        let r = Rules::none()
            .with_globs(
                &["keep.log".into(), "/logs/important/".into()],
                &[
                    "*.log".into(),
                    "/logs/".into(),
                    "tmp/".into(),
                    "a/*/c".into(),
                ],
                Path::new("p.toml"),
            )
            .unwrap();
        assert!(r.excluded(b"x.log", Kind::File));
        assert!(
            r.excluded(b"deep/er/x.log", Kind::File),
            "no slash: any depth"
        );
        assert!(!r.excluded(b"deep/keep.log", Kind::File), "include wins");
        assert!(r.excluded(b"logs", Kind::Dir));
        assert!(!r.excluded(b"sub/logs", Kind::Dir), "leading slash anchors");
        assert!(!r.excluded(b"logs/important", Kind::Dir));
        assert!(r.excluded(b"x/tmp", Kind::Dir));
        assert!(
            !r.excluded(b"x/tmp", Kind::File),
            "trailing slash: directories only"
        );
        assert!(r.excluded(b"a/b/c", Kind::File));
        assert!(!r.excluded(b"a/b/b/c", Kind::File), "* does not cross /");
        assert!(Rules::none()
            .with_globs(&[], &["a[".into()], Path::new("p.toml"))
            .unwrap_err()
            .to_string()
            .contains("p.toml"));
    }

    #[test]
    fn case_insensitive_rules_fold_ascii() {
        let r = rules("-f(?i)\\.JPE?G$");
        assert!(r.excluded(b"a/b.jpg", Kind::File));
        assert!(r.excluded(b"a/B.JpEg", Kind::File));
        assert!(!r.excluded(b"a/b.png", Kind::File));
        // Unicode-aware otherwise: `.` is one character, `\w` a Unicode letter.
        assert!(rules("-f^caf.$").excluded("café".as_bytes(), Kind::File));
        assert!(rules("-f^\\w+$").excluded("Документ".as_bytes(), Kind::File));
        let e = Rules::parse("-f\\p{Greek}", Path::new("r")).unwrap_err();
        assert!(e.to_string().starts_with("r:1: invalid rule"), "{e}");
    }

    #[test]
    fn non_utf8_names_match() {
        let r = rules("-f^\\xff");
        assert!(
            !r.excluded(b"\xff", Kind::File),
            "\\xff in the regex is U+00FF, UTF-8 encoded"
        );
        let r = rules("-f^(?-u:\\xff)");
        assert!(r.excluded(b"\xff", Kind::File));
    }

    #[test]
    fn bad_rules_name_file_line_and_value() {
        let e = Rules::parse("+f^a$\nxf^b\n", Path::new("/etc/r")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/r:2: invalid rule \"xf^b\": must start with '+' or '-', not 'x'"
        );
        let e = Rules::parse("-q.*", Path::new("r")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("r:1: invalid rule \"-q.*\": unknown type 'q'"));
        let e = Rules::parse("-f(", Path::new("r")).unwrap_err();
        assert!(e.to_string().starts_with("r:1: invalid rule \"-f(\""));
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let r = rules("# comment\n\n-f^x$\n");
        assert!(r.excluded(b"x", Kind::File));
    }
}
