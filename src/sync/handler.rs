/*!
What a batch becomes for each sync-handler mode: the [`Steps`] the runner carries out.

The mode decides the shape of the handler's input (rsync filter lists, a list of paths,
arguments); running, timing out and judging a step is the runner's business. The shapes
are the original clsync's, so that sites can keep their handler scripts:

| mode | each batch | a recursive entry with `have-recursive-sync` |
|---|---|---|
| `rsyncdirect` | `rsync -aH --delete … SRC/ DST/` per part of the plan (written and moved-in files first, with `--checksum`; existing files and deletions by `--files-from`: see plan.rs) | (refused) |
| `rsyncshell` | `H rsynclist LABEL INCLUDE-LIST [EXCLUDE-LIST]` per part | (refused) |
| `shell` | `H synclist LABEL LIST` | `H initialsync LABEL ABSDIR` |
| `direct` | `H REL… DST/` (root as `.`), split into runs of ≤ 254 paths | `H ABSDIR DST/` |
| `simple` | `H sync LABEL MASK ABSPATH` per path | `H sync LABEL MASK ABSDIR` |
| `rsyncso` | `clsyncapi_rsync(INCLUDE-LIST, EXCLUDE-LIST)` per part | (refused) |
| `so` | `clsyncapi_sync(n, events)` | one event, `EVIF_RECURSIVELY`, absolute path |

User arguments (`sync-handler-args`, or the words after `--`) replace the default words;
`%INCLUDE-LIST%` and `%RSYNC-ARGS%` as whole words expand to several arguments;
`%INCLUDE-LIST-PATH%`, `%EXCLUDE-LIST-PATH%`, `%TYPE%` (`sync`, `synclist`, `rsynclist`,
`initialsync`), `%EVENT-MASK%`, `%label%`, `%watch-dir%` and `%destination-dir%` are
replaced inside words. Any other `%…%` text is passed as it is.

Without `have-recursive-sync`, a recursive entry (the initial sync, a new or moved-in
directory, a rescan) is walked here, as the original does, and every node the rules
permit is listed with the mask `IN_CREATE` (`IN_CREATE|IN_ISDIR` for directories).

List files. rsync lists hold rsync patterns (`/path`, the same with the `***` suffix for
trees, every ancestor; `\`,
`*`, `?`, `[` escaped only where rsync treats them as wildcards, which the original got
wrong), shell lists `sync LABEL MASK RELPATH` lines (`RELPATH` with
`synclist-simplify`). Both are newline-terminated as in the original, so a name with a
newline cannot be written: such a path is logged as an error naming it, never silently
left out. With `lists-nul` (and always for rsyncdirect's own argv, which passes
`--from0`) records end with NUL instead and every name can be written; the handler is told
by `CLSYNC_LIST_FORMAT=nul`. List files are written into the lists directory before the
first step starts, named `KIND.PID.SEQ`, and removed when the batch ends (unless
`dont-unlink-lists`).
*/

use super::plan::{plan, plan_runs, push_pattern, Check, Plan, Run};
use super::so::{SoEvent, SoHandler, EOT_DIR, EOT_DOESNTEXIST, EOT_FILE, EVIF_RECURSIVELY};
use super::{Exec, Step, Steps};
use crate::batcher::{Batch, Entry};
use crate::rules::{Kind, Rules};
use crate::watch::{abs_path, MASK_FOUND, MASK_FOUND_DIR};
use log::warn;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod paths;

/// The sync-handler modes of the original.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    Simple,
    Direct,
    Shell,
    RsyncShell,
    #[default]
    RsyncDirect,
    RsyncSo,
    So,
}

/// The mode names, as the original spells them.
pub const MODES: &[&str] = &[
    "simple",
    "direct",
    "shell",
    "rsyncshell",
    "rsyncdirect",
    "rsyncso",
    "so",
];

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Ok(match s {
            "simple" => Mode::Simple,
            "direct" => Mode::Direct,
            "shell" => Mode::Shell,
            "rsyncshell" => Mode::RsyncShell,
            "rsyncdirect" => Mode::RsyncDirect,
            "rsyncso" => Mode::RsyncSo,
            "so" => Mode::So,
            _ => {
                return Err(format!(
                    "unknown mode {s:?}; valid modes: {}",
                    MODES.join(", ")
                ))
            }
        })
    }
}

impl Mode {
    pub fn name(self) -> &'static str {
        MODES[self as usize]
    }

    /// The modes whose handler gets rsync filter lists.
    pub fn is_rsync(self) -> bool {
        matches!(self, Mode::RsyncShell | Mode::RsyncDirect | Mode::RsyncSo)
    }

    /// The modes whose handler is a shared object rather than a program.
    pub fn is_so(self) -> bool {
        matches!(self, Mode::RsyncSo | Mode::So)
    }

    /// The handler used when none is given (`rsync`, and `cp` for direct, as the
    /// original); the other modes need one.
    pub fn default_handler(self) -> Option<&'static str> {
        match self {
            Mode::RsyncDirect => Some("rsync"),
            Mode::Direct => Some("cp"),
            _ => None,
        }
    }

    /// Exit codes that are success besides the `ignore-exitcode` list: rsync's 24
    /// ("some files vanished") is normal on a live tree.
    pub fn ok_codes(self) -> Vec<i32> {
        match self {
            Mode::RsyncDirect => vec![0, 24],
            _ => vec![0],
        }
    }

    fn default_args(self) -> &'static [&'static str] {
        match self {
            Mode::Simple => &["sync", "%label%", "%EVENT-MASK%", "%INCLUDE-LIST%"],
            Mode::Direct => &["%INCLUDE-LIST%", "%destination-dir%/"],
            Mode::Shell => &["synclist", "%label%", "%INCLUDE-LIST-PATH%"],
            Mode::RsyncShell => &[
                "rsynclist",
                "%label%",
                "%INCLUDE-LIST-PATH%",
                "%EXCLUDE-LIST-PATH%",
            ],
            Mode::RsyncDirect => &["%RSYNC-ARGS%", "%watch-dir%/", "%destination-dir%/"],
            Mode::RsyncSo | Mode::So => &[],
        }
    }
}

/// How the handler is called and what it mirrors.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    pub mode: Mode,
    /// The handler program (or shared object), resolved.
    pub program: PathBuf,
    /// The user's argument words; `None`: the mode's defaults.
    pub args: Option<Vec<OsString>>,
    pub src: PathBuf,
    /// As given (an empty path when not set).
    pub dst: PathBuf,
    pub label: String,
    /// Where list files are written.
    pub lists_dir: PathBuf,
    /// The mode of list files: 0600, or 0644 when the handler runs as another user (the
    /// default lists directory is then 0711: files opened by name, not listed).
    pub lists_mode: u32,
    /// `rsync -x`: do not cross file system boundaries (and walks do not either).
    pub one_file_system: bool,
    /// Split include lists into parts of about this many lines (0: no limit).
    pub rsync_inclimit: usize,
    /// Shell lists hold the relative path alone.
    pub synclist_simplify: bool,
    /// Recursive entries go to the handler as one directory instead of being walked.
    pub have_recursive_sync: bool,
    /// NUL-terminated list records (`lists-nul`).
    pub lists_nul: bool,
    /// rsync modes: no exclude list; recursive syncs are walked and every permitted path
    /// is listed (`rsync-prefer-include`, for a few files out of a huge tree).
    pub rsync_prefer_include: bool,
    /// More rsync options: `-e SSH` for an ssh destination, `--password-file`, and the
    /// profile's `rsync-options`.
    pub rsync_extra: Vec<OsString>,
    /// How the destination's side carries out moves: `None` (not at all), a local
    /// directory, or ssh (argv up to and including the host, and the remote path).
    pub mover: Mover,
    /// Full rsync runs report their progress (`--info=progress2`).
    pub progress: bool,
}

/// Where a move seen in the source is repeated at the destination before rsync runs,
/// so that a renamed big file or directory is not transferred again. Only an
/// optimisation: the rsync run that follows checks both paths either way.
#[derive(Debug, Clone, Default)]
pub enum Mover {
    #[default]
    None,
    Local(PathBuf),
    Ssh {
        argv: Vec<OsString>,
        path: Vec<u8>,
    },
}

/// What changes from batch to batch, for the handler's environment.
pub struct Context<'a> {
    pub rules: &'a Rules,
    /// Rule-excluded paths known in the tree (left out of recursive rsync runs).
    pub excludes: &'a BTreeSet<Vec<u8>>,
    /// The status word for `CLSYNC_STATUS`.
    pub status: &'a str,
    /// Sync iterations done before this batch, for `CLSYNC_ITERATION`.
    pub iteration: u32,
}

/// The most paths passed on one command line in direct mode (the original's 254), and
/// the most bytes of them.
const DIRECT_MAX_PATHS: usize = 254;
const DIRECT_MAX_BYTES: usize = 128 << 10;

/// rsync's progress records, asked for on full runs (`HandlerConfig::progress`).
const PROGRESS: &str = "--info=progress2";

pub struct Handler {
    cfg: HandlerConfig,
    /// The words of each run (the user's or the mode's defaults).
    words: Vec<OsString>,
    /// Lists are NUL-terminated.
    nul: bool,
    so: Option<Arc<Mutex<SoHandler>>>,
    /// The batch's remote moves, until its first rsync run takes them.
    pending_moves: Option<Vec<u8>>,
    /// Which of the batch's moves must succeed ([`Handler::moved_trees`]).
    required: Vec<bool>,
    /// The destination is reached over a link (ssh or an rsync daemon).
    remote: bool,
}

/// Values of the per-run placeholders.
#[derive(Default)]
struct Vars {
    include_list: Vec<OsString>,
    include_path: Option<PathBuf>,
    exclude_path: Option<PathBuf>,
    /// A `--files-from` list (sync/plan.rs, `Plan::Files`).
    files_path: Option<PathBuf>,
    typ: &'static str,
    mask: Option<u32>,
    /// rsync's check for the run (`%RSYNC-ARGS%`).
    check: Check,
    /// A full run reports its progress (`--info=progress2` in `%RSYNC-ARGS%`).
    progress: bool,
    /// A verification: the run itemizes what it repairs (`-i` first in the argv) and
    /// reports no progress, its output being the itemized lines.
    itemize: bool,
    /// `--rsync-path=` carrying the batch's remote moves (the batch's first run only).
    rsync_path: Option<OsString>,
}

impl Handler {
    /// A handler for `cfg`; `so` is the loaded shared object in the so modes.
    pub fn new(cfg: HandlerConfig, so: Option<SoHandler>) -> Self {
        let words: Vec<OsString> = match &cfg.args {
            Some(a) => a.clone(),
            None => cfg
                .mode
                .default_args()
                .iter()
                .filter(|w| !(cfg.rsync_prefer_include && **w == "%EXCLUDE-LIST-PATH%"))
                .map(OsString::from)
                .collect(),
        };
        // rsyncdirect with its own argv (or the user's %RSYNC-ARGS%) passes --from0, so
        // it can always take NUL lists.
        let nul = cfg.lists_nul
            || (cfg.mode == Mode::RsyncDirect && words.iter().any(|w| w == "%RSYNC-ARGS%"));
        let remote = crate::dest::Dest::parse(cfg.dst.as_os_str()).is_remote();
        Handler {
            cfg,
            words,
            nul,
            so: so.map(|s| Arc::new(Mutex::new(s))),
            pending_moves: None,
            required: Vec::new(),
            remote,
        }
    }

    /// The destination, as given to the handler.
    pub fn dst(&self) -> &Path {
        &self.cfg.dst
    }

    /// A new include-list limit (a configuration reload).
    pub fn set_inclimit(&mut self, limit: usize) {
        self.cfg.rsync_inclimit = limit;
    }

    /// The steps for `batch`.
    pub fn steps(&mut self, batch: &Batch, ctx: &Context) -> io::Result<Steps> {
        let mut out = Steps::default();
        // First: which renamed trees the moves put in place (the moves' script needs it).
        let moved = self.moved_trees(batch, ctx);
        if !batch.moves.is_empty() {
            self.moves(&batch.moves, &mut out);
        }
        if self.cfg.mode.is_rsync() && self.cfg.rsync_prefer_include {
            let mut paths = BTreeMap::new();
            for e in &batch.entries {
                if e.recursive {
                    self.walk(&e.path, e.mask, ctx.rules, &mut paths);
                } else {
                    *paths.entry(e.path.clone()).or_default() |= e.mask;
                }
            }
            let entries: Vec<Entry> = paths
                .into_iter()
                .map(|(path, mask)| Entry {
                    path,
                    recursive: false,
                    class: crate::batcher::Class::Normal,
                    mask,
                })
                .collect();
            let none = BTreeSet::new();
            let runs = self.plan(&entries, &batch.moves, &none);
            self.rsync(runs, false, false, &mut out)?;
        } else if self.cfg.mode.is_rsync() {
            let started = std::time::Instant::now();
            let entries: std::borrow::Cow<[Entry]> = if moved.is_empty() {
                std::borrow::Cow::Borrowed(&batch.entries)
            } else {
                // The remote `mv` puts these trees in place: the run looks at the renamed
                // directory itself, not at everything below it again.
                std::borrow::Cow::Owned(
                    batch
                        .entries
                        .iter()
                        .map(|e| Entry {
                            recursive: e.recursive && !moved.contains(e.path.as_slice()),
                            ..e.clone()
                        })
                        .collect(),
                )
            };
            let runs = self.plan(&entries, &batch.moves, ctx.excludes);
            log::debug!(
                "planned {} paths in {:.1} ms ({} groups)",
                batch.entries.len(),
                started.elapsed().as_secs_f64() * 1000.0,
                runs.len()
            );
            // A verification reports what it had to repair.
            self.rsync(runs, batch.verify, batch.itemize, &mut out)?;
        } else {
            let (paths, trees) = self.expand(&batch.entries, ctx.rules);
            for dir in trees {
                self.initial(&dir, &mut out)?;
            }
            if !paths.is_empty() {
                match self.cfg.mode {
                    Mode::Shell => self.shell(&paths, &mut out)?,
                    Mode::Direct => self.direct(&paths, &mut out),
                    Mode::Simple => self.simple(&paths, &mut out),
                    Mode::So => self.so_sync(&paths, &mut out),
                    _ => unreachable!("rsync modes are planned"),
                }
            }
        }
        // Moves no rsync run took (a batch without one) go first, on their own.
        if let Some(script) = self.pending_moves.take() {
            out.steps.insert(0, self.moves_step(script));
        }
        // Every child is told the state of the worker and which batch this is.
        for s in &mut out.steps {
            if let Step::Exec(e) = s {
                e.env.extend([
                    ("CLSYNC_STATUS".into(), ctx.status.into()),
                    ("CLSYNC_ITERATION".into(), ctx.iteration.to_string().into()),
                    ("CLSYNC_LABEL".into(), self.cfg.label.clone().into()),
                    (
                        "CLSYNC_LIST_FORMAT".into(),
                        if self.nul { "nul" } else { "newline" }.into(),
                    ),
                ]);
            }
        }
        Ok(out)
    }

    fn write_list(
        &mut self,
        kind: &str,
        data: &[u8],
        files: &mut Vec<PathBuf>,
    ) -> io::Result<PathBuf> {
        // O_EXCL|O_NOFOLLOW: a file or symlink already at the name is never written
        // through; the next number is taken instead.
        // One count for the whole worker: each destination has a handler, and their
        // batches (the warm start's first ones) run at the same time in one directory.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut tries = 0;
        let (path, mut f) = loop {
            let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let path = self
                .cfg
                .lists_dir
                .join(format!("{kind}.{}.{seq}", std::process::id()));
            match crate::safe_file::create_new(&path, self.cfg.lists_mode) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => {
                    tries += 1;
                    warn!("list file {}: exists; not touching it", path.display());
                }
                Err(e) => return Err(e),
            }
        };
        files.push(path.clone());
        io::Write::write_all(&mut f, data)?;
        Ok(path)
    }

    /// NUL-separated records as the list format wants them: as they are with `nul`, else
    /// newline-terminated, leaving out (and logging) records with a newline.
    fn records(&self, nul_separated: &[u8]) -> Vec<u8> {
        if self.nul {
            return nul_separated.to_vec();
        }
        let mut out = Vec::with_capacity(nul_separated.len());
        for rec in nul_separated.split(|&b| b == 0) {
            if rec.is_empty() {
                continue;
            }
            if rec.contains(&b'\n') {
                log::error!(
                    "cannot pass {:?} to the sync handler: its name has a newline, which the original's newline-separated lists cannot hold; set lists-nul (--lists-nul) and read NUL-separated lists",
                    String::from_utf8_lossy(rec)
                );
                continue;
            }
            out.extend_from_slice(rec);
            out.push(b'\n');
        }
        out
    }

    /// Whether this handler's rsync options are ours (`%RSYNC-ARGS%`), so a run can be told
    /// to look past rsync's quick check; a handler script that runs rsync itself gets the
    /// lists of one quick-check plan, as in the original.
    fn own_rsync_args(&self) -> bool {
        self.cfg.mode == Mode::RsyncDirect && self.words.iter().any(|w| w == "%RSYNC-ARGS%")
    }

    /// The runs of a batch of an rsync mode (sync/plan.rs).
    fn plan(
        &self,
        entries: &[Entry],
        moves: &[(Vec<u8>, Vec<u8>)],
        excludes: &BTreeSet<Vec<u8>>,
    ) -> Vec<Run> {
        let (src, limit) = (&self.cfg.src, self.cfg.rsync_inclimit);
        if self.own_rsync_args() {
            // Only our own argv gets a `--files-from` run's options (`rsync_args`).
            let files_from = self.cfg.args.is_none();
            plan_runs(src, entries, moves, excludes, limit, files_from)
        } else {
            vec![Run {
                check: Check::Quick,
                plan: plan(src, entries, excludes, limit),
            }]
        }
    }

    /// The rsync modes: one step per part of each run's plan; `verify` (or `itemize`
    /// alone, which keeps the progress records): rsyncdirect's runs itemize what they
    /// repair (the other modes' handlers run rsync themselves).
    fn rsync(
        &mut self,
        runs: Vec<Run>,
        verify: bool,
        itemize: bool,
        out: &mut Steps,
    ) -> io::Result<()> {
        // (check, exclude list, include list or `--files-from` list, the latter)
        type Part = (Check, Vec<u8>, Option<Vec<u8>>, bool);
        let mut parts: Vec<Part> = Vec::new();
        for run in runs {
            match run.plan {
                Plan::Full { exclude } => parts.push((run.check, exclude, None, false)),
                Plan::Targeted(lists) => parts.extend(
                    lists
                        .into_iter()
                        .map(|l| (run.check, l.exclude, Some(l.include), false)),
                ),
                Plan::Files(list) => parts.push((run.check, Vec::new(), Some(list), true)),
            }
        }
        let own_argv = self.cfg.mode == Mode::RsyncDirect && self.cfg.args.is_none();
        // Only rsync itself itemizes: an rsyncshell handler keeps its argv (the
        // original's `rsynclist LABEL ...`), and its output is not rsync's.
        let itemize = (verify || itemize) && self.cfg.mode == Mode::RsyncDirect;
        for (check, exclude, include, files) in parts {
            let mut vars = Vars {
                typ: if include.is_none() && !own_argv {
                    "initialsync"
                } else {
                    "rsynclist"
                },
                check,
                // A full run can take hours on a big tree: it reports its progress.
                progress: include.is_none() && own_argv && self.cfg.progress && !verify,
                itemize,
                ..Vars::default()
            };
            if own_argv {
                // Lists only where they are needed: no include list for a full run, no
                // exclude list when nothing is excluded.
                if !exclude.is_empty() {
                    vars.exclude_path =
                        Some(self.write_list("exclude", &exclude, &mut out.files)?);
                }
                if let (Some(list), true) = (&include, files) {
                    vars.files_path = Some(self.write_list("files", list, &mut out.files)?);
                } else if let Some(include) = include {
                    vars.include_path =
                        Some(self.write_list("include", &include, &mut out.files)?);
                }
            } else {
                let include = include.unwrap_or_else(|| {
                    let mut all = Vec::new();
                    push_pattern(&mut all, b"", b"***");
                    all
                });
                let data = self.records(&include);
                vars.include_path = Some(self.write_list("include", &data, &mut out.files)?);
                if !self.cfg.rsync_prefer_include {
                    let data = self.records(&exclude);
                    vars.exclude_path = Some(self.write_list("exclude", &data, &mut out.files)?);
                }
            }
            if self.cfg.mode == Mode::RsyncSo {
                let so = self.so.clone().expect("rsyncso has its shared object");
                let inc = vars.include_path.clone().unwrap_or_default();
                let exc = vars.exclude_path.clone();
                out.steps.push(Step::Call(Box::new(move || {
                    so.lock()
                        .map(|h| h.rsync(&inc, exc.as_deref()))
                        .unwrap_or(-1)
                })));
            } else {
                if self.own_rsync_args() {
                    vars.rsync_path = self.pending_moves.take().map(|m| self.rsync_path(&m));
                }
                out.steps.push(self.exec(&vars));
            }
        }
        Ok(())
    }

    /// Repeats the source's renames at the destination: a local `rename(2)` now, or one
    /// `mv -fT` per move over ssh. Neither goes through a symlink at the destination.
    /// Failures are fine: the destination may not have had the old path yet, and rsync
    /// follows. Over ssh the moves ride in the batch's first rsync run (see
    /// [`Handler::rsync_path`]); a batch without one gets them as a first (optional) step
    /// of their own.
    fn moves(&mut self, moves: &[(Vec<u8>, Vec<u8>)], out: &mut Steps) {
        match &self.cfg.mover {
            Mover::None => {}
            Mover::Local(dir) => {
                let root = match crate::safe_file::open_root(dir) {
                    Ok(root) => root,
                    Err(e) => {
                        log::debug!("moves at {}: {e} (rsync follows)", dir.display());
                        return;
                    }
                };
                for (from, to) in moves {
                    // Not through a symlink mirrored into the destination (`d -> /etc`).
                    match crate::safe_file::rename_beneath(&root, from, to) {
                        Ok(()) => log::debug!(
                            "moved {} to {} at the destination",
                            abs_path(dir, from).display(),
                            abs_path(dir, to).display()
                        ),
                        Err(e) => log::debug!(
                            "move of {} at the destination: {e} (rsync follows)",
                            abs_path(dir, from).display()
                        ),
                    }
                }
            }
            Mover::Ssh { path, .. } => {
                let script = remote_moves(path, moves, &self.required);
                if self.own_rsync_args() {
                    self.pending_moves = Some(script);
                } else {
                    out.steps.push(self.moves_step(script));
                }
            }
        }
    }

    /// The destinations of directory renames that the batch's first rsync run will find
    /// done: the moves ride in that run (ssh, `--rsync-path`), and each of these must
    /// succeed or that run does not start (see [`Handler::rsync_path`]), so the run need
    /// not walk the renamed tree again (10,000 entries of file list over the link).
    /// Only where the destination is known to hold the old tree as it was: the worker is
    /// `running` (not in its initial sync, no failed batch), the old path did not appear
    /// in this batch and nothing below it is in the batch, and neither path takes part in
    /// another move of the batch. The moves are also marked required for the script.
    fn moved_trees(&mut self, batch: &Batch, ctx: &Context) -> BTreeSet<Vec<u8>> {
        let mut out = BTreeSet::new();
        self.required.clear();
        let riding = matches!(self.cfg.mover, Mover::Ssh { .. })
            && self.own_rsync_args()
            && !self.cfg.rsync_prefer_include;
        if !riding || batch.moves.is_empty() || ctx.status != "running" {
            return out;
        }
        const APPEARED: u32 = libc::IN_CREATE | libc::IN_MOVED_TO;
        let mut uses: BTreeMap<&[u8], usize> = BTreeMap::new();
        for (from, to) in &batch.moves {
            *uses.entry(from).or_default() += 1;
            *uses.entry(to).or_default() += 1;
        }
        let below = |dir: &[u8], p: &[u8]| {
            dir.is_empty() || (p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/')
        };
        for (from, to) in &batch.moves {
            let once = uses.get(from.as_slice()) == Some(&1) && uses.get(to.as_slice()) == Some(&1);
            let tree = batch.entries.iter().any(|e| e.recursive && e.path == *to)
                && std::fs::symlink_metadata(abs_path(&self.cfg.src, to)).is_ok_and(|m| m.is_dir());
            let unsettled = batch
                .entries
                .iter()
                .any(|e| below(from, &e.path) || (e.path == *from && e.mask & APPEARED != 0));
            let required = once && tree && !unsettled && !from.is_empty();
            self.required.push(required);
            if required {
                out.insert(to.clone());
            }
        }
        out
    }

    /// The moves as an ssh run of their own (`sh -c SCRIPT; exit 0` at the remote side).
    fn moves_step(&self, script: Vec<u8>) -> Step {
        let Mover::Ssh { argv, .. } = &self.cfg.mover else {
            unreachable!("only ssh moves are scripts")
        };
        // Optional: a failure does not fail the batch (no move is required here).
        let mut args: Vec<OsString> = argv[1..].to_vec();
        args.push(OsString::from_vec(script));
        Step::Exec(Exec {
            program: PathBuf::from(&argv[0]),
            args,
            env: Vec::new(),
            progress: false,
            itemize: false,
            optional: true,
        })
    }

    /// `--rsync-path=if (MOVES) >/dev/null 2>&1; then m=; else m=--OPTION; fi; rsync $m`:
    /// the remote command of an rsync run over ssh is a shell line, `RSYNC-PATH --server
    /// ...`, so the moves run in the same session right before the remote rsync starts,
    /// and a rename costs no ssh session of its own (a session over the shared connection
    /// is a round trip or two plus the remote shell's start). Their output cannot reach
    /// rsync's protocol stream. When a required move ([`Handler::moved_trees`]) failed,
    /// the remote rsync is started with an option it does not know ([`MOVE_FAILED`]): it
    /// says so and exits 1, the batch fails and is queued again without its moves, and
    /// the retry walks the renamed tree. A `--rsync-path` among the options is kept.
    fn rsync_path(&self, moves: &[u8]) -> OsString {
        let mut tail: &[u8] = b"rsync";
        let extra = &self.cfg.rsync_extra;
        for (i, a) in extra.iter().enumerate() {
            let a = a.as_bytes();
            if let Some(v) = a.strip_prefix(b"--rsync-path=") {
                tail = v;
            } else if a == b"--rsync-path" {
                if let Some(v) = extra.get(i + 1) {
                    tail = v.as_bytes();
                }
            }
        }
        let mut v = b"--rsync-path=if (".to_vec();
        v.extend_from_slice(moves);
        v.extend_from_slice(b") >/dev/null 2>&1; then m=; else m=");
        v.extend_from_slice(MOVE_FAILED.as_bytes());
        v.extend_from_slice(b"; fi; ");
        v.extend_from_slice(tail);
        v.extend_from_slice(b" $m");
        OsString::from_vec(v)
    }

    /// `%RSYNC-ARGS%`: rsync's options for a run with these lists.
    fn rsync_args(&self, vars: &Vars) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["-aH".into()];
        if vars.progress {
            args.push(PROGRESS.into());
        }
        args.push("--delete".into());
        if let Some(o) = vars.check.rsync_option() {
            args.push(o.into());
        }
        if self.cfg.one_file_system {
            args.push("-x".into());
        }
        args.extend(
            (self.cfg.rsync_extra.iter())
                .filter(|a| !(vars.itemize && *a == PROGRESS))
                .cloned(),
        );
        if let Some(p) = &vars.rsync_path {
            args.push(p.clone());
        }
        if self.nul
            && (vars.exclude_path.is_some()
                || vars.include_path.is_some()
                || vars.files_path.is_some())
        {
            args.push("--from0".into());
        }
        if let Some(p) = &vars.files_path {
            // The listed paths alone (and their ancestors), no directory read; one that
            // vanished since the plan is deleted at the destination.
            args.push(prefixed("--files-from=", p));
            args.push("--delete-missing-args".into());
        }
        if let Some(p) = &vars.exclude_path {
            args.push(prefixed("--exclude-from=", p));
        }
        if let Some(p) = &vars.include_path {
            args.push(prefixed("--include-from=", p));
            args.push("--exclude=*".into());
            // Over a link, incremental recursion costs a round trip before the first file
            // lands (the file list of each directory level follows in turn): a targeted
            // run sends its whole list at once. A full run keeps it (a huge tree starts
            // sending before its whole list is built).
            if self.remote {
                args.push("--no-inc-recursive".into());
            }
        }
        args
    }

    /// The argv of one run: the words with the placeholders filled in; a verification's
    /// starts with `-i` and leaves out progress records.
    fn exec(&self, vars: &Vars) -> Step {
        let mut args = Vec::new();
        if vars.itemize {
            args.push("-i".into());
        }
        for w in &self.words {
            match w.as_bytes() {
                _ if vars.itemize && w == PROGRESS => {}
                b"%INCLUDE-LIST%" => args.extend(vars.include_list.iter().cloned()),
                b"%RSYNC-ARGS%" => args.extend(self.rsync_args(vars)),
                _ => args.push(self.substitute(w, vars)),
            }
        }
        Step::Exec(Exec {
            program: self.cfg.program.clone(),
            args,
            env: Vec::new(),
            progress: vars.progress,
            itemize: vars.itemize,
            optional: false,
        })
    }

    fn substitute(&self, word: &OsStr, vars: &Vars) -> OsString {
        let w = word.as_bytes();
        if !w.contains(&b'%') {
            return word.to_os_string();
        }
        let mask = vars.mask.map(|m| m.to_string());
        let pairs: [(&[u8], Option<&[u8]>); 7] = [
            (b"%label%", Some(self.cfg.label.as_bytes())),
            (b"%watch-dir%", Some(self.cfg.src.as_os_str().as_bytes())),
            (
                b"%destination-dir%",
                Some(self.cfg.dst.as_os_str().as_bytes()),
            ),
            (
                b"%INCLUDE-LIST-PATH%",
                vars.include_path.as_ref().map(|p| p.as_os_str().as_bytes()),
            ),
            (
                b"%EXCLUDE-LIST-PATH%",
                vars.exclude_path.as_ref().map(|p| p.as_os_str().as_bytes()),
            ),
            (
                b"%TYPE%",
                Some(vars.typ.as_bytes()).filter(|t| !t.is_empty()),
            ),
            (b"%EVENT-MASK%", mask.as_ref().map(|m| m.as_bytes())),
        ];
        let mut out = Vec::with_capacity(w.len());
        let mut i = 0;
        'scan: while i < w.len() {
            if w[i] == b'%' {
                for (name, value) in &pairs {
                    if let Some(v) = value {
                        if w[i..].starts_with(name) {
                            out.extend_from_slice(v);
                            i += name.len();
                            continue 'scan;
                        }
                    }
                }
            }
            out.push(w[i]);
            i += 1;
        }
        OsString::from_vec(out)
    }
}

/// The remote shell commands that repeat `moves` inside the destination's `path` (its
/// home for an empty one): `mv -fT` of each, never through a symlinked directory.
/// The script exits 1 when a move flagged in `required` fails (or the destination
/// directory is not there while one is required), else 0.
fn remote_moves(path: &[u8], moves: &[(Vec<u8>, Vec<u8>)], required: &[bool]) -> Vec<u8> {
    let any_required = required.iter().any(|&r| r);
    let mut script = b"f=0; CDPATH= cd -- ".to_vec();
    script.extend_from_slice(&crate::dest::sh_quote(if path.is_empty() {
        b"."
    } else {
        path
    }));
    script.extend_from_slice(if any_required {
        b" || exit 1"
    } else {
        b" || exit 0"
    });
    // `s P` fails when a directory on the way to P is a symlink (one mirrored from the
    // source, `d -> /etc`): mv would follow it out of the tree.
    script.extend_from_slice(
        b"; s() { p=$1; while :; do case $p in */*) p=${p%/*}; [ -L \"$p\" ] && return 1;; *) return 0;; esac; done; }",
    );
    for (i, (from, to)) in moves.iter().enumerate() {
        script.extend_from_slice(b"; s ");
        script.extend_from_slice(&crate::dest::sh_quote(from));
        script.extend_from_slice(b" && s ");
        script.extend_from_slice(&crate::dest::sh_quote(to));
        script.extend_from_slice(b" && mv -fT -- ");
        script.extend_from_slice(&crate::dest::sh_quote(from));
        script.push(b' ');
        script.extend_from_slice(&crate::dest::sh_quote(to));
        script.extend_from_slice(b" 2>/dev/null");
        if required.get(i) == Some(&true) {
            script.extend_from_slice(b" || f=1");
        }
    }
    script.extend_from_slice(b"; exit $f");
    script
}

/// The option the remote rsync is started with when a required move failed: it refuses
/// it by name ("--clsync-remote-move-failed: unknown option") and exits 1.
const MOVE_FAILED: &str = "--clsync-remote-move-failed";

fn prefixed(prefix: &str, p: &Path) -> OsString {
    let mut a = OsString::from(prefix);
    a.push(p);
    a
}

#[cfg(test)]
mod tests;
