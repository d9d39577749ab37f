//! Turns a batch of dirty paths into rsync filter lists.
//!
//! A targeted rsync run is `rsync -aH --delete --from0 [--exclude-from=EXCL]
//! --include-from=INCL --exclude=* SRC/ DST/`: only what the include list names is looked at,
//! on both sides. What each path needs, decided by an `lstat` at plan time (the batch may be
//! seconds old, so the event's idea of the type is not trusted):
//!
//! - an existing directory synced recursively: `/dir/***` (the directory and all below);
//! - an existing directory whose own attributes changed: `/dir`;
//! - anything else (a file, a symlink, or a path that no longer exists): `/p` and `/p/***`.
//!   A vanished directory then has its contents included too, so rsync can delete it (with
//!   only `/dir` the contents stay protected by `--exclude=*` and rsync says "cannot delete
//!   non-empty directory" and exits 0: a stale tree forever). A path whose type flipped
//!   (file and directory) is matched in both forms.
//! - A vanished path whose parent vanished too is replaced by its topmost vanished ancestor.
//! - A directory most of whose entries are in the batch (at least [`CROWD_MIN`] of them)
//!   is synced whole (`/dir/***`) instead of entry by entry: rsync walks its filter list
//!   for every file it looks at, so a list of hundreds of lines costs more than stat'ing
//!   the few entries of the directory that did not change (a burst of 20,000 new files in
//!   200 new directories: 0.68 s instead of 0.55 s with one line). Only when that extra
//!   work is bounded: the entries not in the batch are at most as many as those in it and
//!   none is a directory without a change below it (its whole subtree would be walked);
//!   a directory in the batch only for its own attributes counts as unchanged below.
//! - A regular file with several names (hard links) makes the whole batch a full run:
//!   `rsync -H` can only link names that are in the same transfer, and the other names
//!   may be anywhere in the tree. The cost falls only on trees that use hard links.
//!
//! A group with no directory to sync recursively (existing files, symlinks, directories'
//! own attributes, vanished paths: the everyday single change) is instead one
//! `--files-from` list ([`Plan::Files`]) when the caller can run it (rsyncdirect's own
//! argv: `--from0 --files-from=F --delete-missing-args`, no `-r`): rsync then sends the
//! listed paths and their ancestor directories (`-R`'s implied directories) and reads no
//! directory, where a filter list makes both sides list and `lstat` every entry of every
//! ancestor on the way (bench/live.sh's probe: 200 and 100 entries, ~1.7 ms of rsync's
//! ~10 ms of CPU). A path gone by then is deleted at the destination
//! (`--delete-missing-args`), and a file replacing a directory replaces it (`--delete`).
//! A name starting with `#` or `;` is listed as `./#name`: rsync reads such a line as a
//! comment, even NUL-separated. Not where a filter list is needed: a file or a vanished
//! path with rule-excluded paths known below it (a directory it replaces at the
//! destination keeps them), or an ancestor that is not a directory at plan time (a
//! symlink: rsync follows it in a listed path). One swapped in between the `lstat` and
//! rsync's own is followed: the listed file is copied from where it points, under a
//! directory (never through a symlink at the destination: implied directories are made
//! as directories), until the swap's own event replaces that directory by the symlink;
//! `-a` keeps the file's owner and mode.
//!
//! Every entry is preceded by each of its ancestor directories (`/a`, `/a/b`), without which
//! rsync would never descend to it. Entries are sorted so that siblings share their ancestor
//! lines, entries below a recursive entry are dropped, and the list is split into parts of
//! about `limit` lines (each part repeats the ancestors it needs) because rsync is slow with
//! huge include lists.
//!
//! What rsync's quick check cannot see. rsync sends a file only when its size or
//! modification time differ at the destination, so a same-size rewrite that restores the old
//! time (`cp -p`, `tar x`, `rsync -t`, build tools) would never reach the destination. The
//! kernel told us which files were written, so [`plan_runs`] (for rsync runs whose options
//! are ours) splits a batch into two groups, each planned as above, run in this order:
//!
//! 1. regular files written in the batch (`IN_MODIFY`/`FAN_MODIFY`: a write or a
//!    truncation, also under a temporary name renamed into place) or moved in from outside
//!    the tree (`IN_MOVED_TO` without a rename inside it: their times may be anything), and
//!    directories deleted (or moved away) and created (or moved in from outside) again in
//!    the batch (`rm -rf d; tar x`: the files in them were found by a walk, their writes
//!    may predate the directory's watch, and the destination still holds the old tree) go
//!    with `--checksum`: sent when their content differs, whatever their times say;
//! 2. everything else (new files found by a walk, attribute changes, renames inside the
//!    tree, which are repeated at the destination, deletions, directories) with the quick
//!    check: a chmod sends no content. Paths below a tree of the first group are left out
//!    (that run covers them), so a burst of new files stays one run.
//!
//! Why `--checksum` and not `--ignore-times`: the latter rewrites a destination file whose
//! content is the same, and the destination's own worker (a failover pair with both sides
//! live) then sees a write and sends it back, and so on forever; a checksum finds the copies
//! equal and writes nothing. The cost: rsync reads such a file whole on the sending side,
//! and on the receiving side when a file of the same size is there (a 4 GiB file rewritten
//! in place costs reading 4 GiB on each side before its delta or copy is sent; new files
//! and files whose size changed are read once more on the sending side only). Not
//! `IN_CLOSE_WRITE`: `touch` opens a file for writing to set its times. A directory new to
//! its path keeps the quick check (the destination has nothing there to be fooled by), as
//! does one renamed inside the tree (the rename is repeated at the destination): reading a
//! whole subtree is only paid where an old tree at the destination could look current.
//!
//! A directory that appeared in the batch (created, or moved in from outside the tree) with
//! such files below it goes into the first group whole (`/dir/***`): the destination has
//! nothing at its path, so the cost is reading its other files once on the sending side,
//! and a burst of new files in new directories stays one run. Otherwise the first group
//! syncs a directory whole only when all its entries, at least [`CROWD_MIN`], are in it. A hard-linked file makes the batch one full run with the
//! quick check, as before; a file written through `mmap` only (no `IN_MODIFY`) keeps the
//! quick check, as do the handler scripts of `rsyncshell` and `rsyncso` (they get the
//! lists of one quick plan and choose rsync's options themselves).
//!
//! Lists are NUL-separated (`--from0`), so a newline cannot split a name. rsync treats `\`
//! as an escape only in patterns that contain a wildcard (`*`, `?`, `[`): a name is written
//! literally unless its pattern has one (always the case for `/***` lines), and then `\`,
//! `*`, `?` and `[` of the name are escaped.

use crate::batcher::Entry;
// hashbrown's default hasher (foldhash): a 20,000-path batch hashes each path several
// times here, and SipHash was a visible part of planning it.
use hashbrown::{HashMap, HashSet};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One rsync run's lists, NUL-separated patterns.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lists {
    pub include: Vec<u8>,
    pub exclude: Vec<u8>,
    pub lines: usize,
}

/// How a batch is carried out.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Sync the whole tree (initial sync, overflow): no include list at all.
    Full { exclude: Vec<u8> },
    /// One rsync run per part.
    Targeted(Vec<Lists>),
    /// One rsync run over the paths of this NUL-separated list (relative, no leading
    /// slash), `--files-from` with `--delete-missing-args`: no directory is listed (see
    /// the module docs for when).
    Files(Vec<u8>),
}

/// How rsync decides that a listed file needs its content sent (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Check {
    /// Size and modification time differ (rsync's quick check, its default).
    #[default]
    Quick,
    /// The content differs (`--checksum`): the kernel reported a write to these files, or
    /// they were moved in from outside the tree.
    Checksum,
}

impl Check {
    /// The rsync option that asks for this check, if any.
    pub fn rsync_option(self) -> Option<&'static str> {
        match self {
            Check::Quick => None,
            Check::Checksum => Some("--checksum"),
        }
    }
}

/// One group of a batch's paths, planned, with the check its runs use.
#[derive(Debug, PartialEq, Eq)]
pub struct Run {
    pub check: Check,
    pub plan: Plan,
}

const PLAIN: u8 = 1;
const TREE: u8 = 2;

/// Appends one rsync pattern for `rel` (no leading slash) plus `suffix`, NUL-terminated.
pub fn push_pattern(out: &mut Vec<u8>, rel: &[u8], suffix: &[u8]) {
    let wild = |b: &u8| matches!(b, b'*' | b'?' | b'[');
    let escape = rel.iter().any(wild) || suffix.iter().any(wild);
    out.push(b'/');
    for &b in rel {
        if escape && (wild(&b) || b == b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.extend_from_slice(suffix);
    out.push(0);
}

/// The sort key that orders paths component by component ("a/b" before "a-b").
fn key(rel: &[u8]) -> Vec<u8> {
    rel.iter().map(|&b| if b == b'/' { 0 } else { b }).collect()
}

fn unkey(k: &[u8]) -> Vec<u8> {
    k.iter().map(|&b| if b == 0 { b'/' } else { b }).collect()
}

fn parent(rel: &[u8]) -> Option<&[u8]> {
    if rel.is_empty() {
        return None;
    }
    Some(match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => &[],
    })
}

/// What an `lstat` at plan time says about a path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Other,
    Missing,
}

struct Stat<'a> {
    root: &'a Path,
    cache: HashMap<Vec<u8>, Kind>,
    /// A regular file with more than one name was seen.
    hardlinked: bool,
}

impl Stat<'_> {
    /// A batch entry's kind (each is looked at once).
    fn kind(&mut self, rel: &[u8]) -> Kind {
        match std::fs::symlink_metadata(crate::watch::abs_path(self.root, rel)) {
            Ok(m) if m.is_dir() => Kind::Dir,
            Ok(m) => {
                self.hardlinked |= m.is_file() && m.nlink() > 1;
                Kind::Other
            }
            Err(_) => Kind::Missing,
        }
    }

    /// An ancestor's kind (many entries share one).
    fn cached_kind(&mut self, rel: &[u8]) -> Kind {
        if let Some(k) = self.cache.get(rel) {
            return *k;
        }
        let k = self.kind(rel);
        self.cache.insert(rel.to_vec(), k);
        k
    }
}

/// A directory with at least this many of its entries in a batch may be synced whole.
pub const CROWD_MIN: usize = 64;

/// Marks as recursive the directories most of whose entries are in the batch (see the
/// module docs for when).
///
/// Directories synced whole this way count as entries of their own parent, which may then
/// be synced whole in turn (200 crowded directories of one new parent: one line).
///
/// `strict` (the group sent with `--checksum`, where every file looked at is read whole):
/// only directories all of whose entries are in the group.
fn collapse_crowded<'a>(root: &Path, merged: &mut HashMap<&'a [u8], bool>, strict: bool) {
    let mut changed_below: Option<HashSet<&'a [u8]>> = None;
    let mut examined: HashSet<&'a [u8]> = Default::default();
    loop {
        let mut kids: HashMap<&'a [u8], usize> = HashMap::new();
        for p in merged.keys() {
            if let Some(par) = parent(p).filter(|par| !par.is_empty()) {
                *kids.entry(par).or_default() += 1;
            }
        }
        let mut crowded: Vec<(&'a [u8], usize)> = kids
            .into_iter()
            .filter(|(p, n)| *n >= CROWD_MIN && !examined.contains(p))
            .collect();
        // Deepest first: a subdirectory synced whole counts as synced whole for its parent.
        crowded.sort_by_key(|(p, _)| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
        if crowded.is_empty() {
            return;
        }
        // Paths with batch entries strictly below them.
        let below = changed_below.get_or_insert_with(|| {
            let mut set = HashSet::new();
            for p in merged.keys() {
                let mut cur = *p;
                while let Some(par) = parent(cur).filter(|par| !par.is_empty()) {
                    if !set.insert(par) {
                        break;
                    }
                    cur = par;
                }
            }
            set
        });
        for (dir, in_batch) in crowded {
            examined.insert(dir);
            if merged.get(dir) != Some(&true)
                && whole_is_cheaper(root, dir, in_batch, merged, below, strict)
            {
                merged.insert(dir, true);
            }
        }
    }
}

/// Whether syncing `dir` whole costs at most about twice syncing its batch entries
/// (`in_batch` of them are its children; those gone from the disk count as in the batch
/// too: `rm dir/*` of 1,000 files is one line that lets rsync delete them all).
fn whole_is_cheaper(
    root: &Path,
    dir: &[u8],
    in_batch: usize,
    merged: &HashMap<&[u8], bool>,
    changed_below: &HashSet<&[u8]>,
    strict: bool,
) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(rd) = std::fs::read_dir(crate::watch::abs_path(root, dir)) else {
        return false;
    };
    // Entries synced anyway; files looked at in addition; directories with changes below
    // them that would be walked whole.
    let (mut inside, mut outside, mut partial) = (0usize, 0usize, 0usize);
    // Batch entries found on the disk.
    let mut present = 0usize;
    let mut path = dir.to_vec();
    path.push(b'/');
    let base = path.len();
    for e in rd {
        let Ok(e) = e else { return false };
        path.truncate(base);
        path.extend_from_slice(e.file_name().as_bytes());
        let is_dir = match e.file_type() {
            Ok(t) => t.is_dir(),
            Err(_) => return false,
        };
        let entry = merged.get(path.as_slice()).copied();
        present += usize::from(entry.is_some());
        match (entry, is_dir) {
            (Some(true), _) | (Some(false), false) => inside += 1,
            (None, false) | (_, true) if strict => return false,
            (None, false) => outside += 1,
            // A directory in the batch for its attributes, or not at all, would be walked
            // whole: only a few, and only with changes below them.
            (_, true) if changed_below.contains(path.as_slice()) => partial += 1,
            (_, true) => return false,
        }
    }
    inside += in_batch.saturating_sub(present);
    if strict {
        return inside >= CROWD_MIN;
    }
    inside >= CROWD_MIN && outside <= inside && partial <= inside / 16
}

/// Plans the rsync runs for a batch, all with the quick check. `excludes` are the
/// rule-excluded paths known below the tree; those under a recursive entry are passed as
/// excludes of its run.
pub fn plan(root: &Path, entries: &[Entry], excludes: &BTreeSet<Vec<u8>>, limit: usize) -> Plan {
    plan_with(root, entries, excludes, limit, false)
}

/// [`plan`], with a `--files-from` list where the group allows one and `files_from`.
fn plan_with(
    root: &Path,
    entries: &[Entry],
    excludes: &BTreeSet<Vec<u8>>,
    limit: usize,
    files_from: bool,
) -> Plan {
    let group = entries.iter().map(|e| (e.path.as_slice(), e.recursive));
    match plan_group(root, group, excludes, limit, false, files_from) {
        Some(g) => g.plan(),
        None => full(excludes),
    }
}

/// A run over the whole tree, without the rule-excluded paths.
fn full(excludes: &BTreeSet<Vec<u8>>) -> Plan {
    let mut exclude = Vec::new();
    for x in excludes {
        push_pattern(&mut exclude, x, b"");
    }
    Plan::Full { exclude }
}

/// A write (`IN_MODIFY`, `FAN_MODIFY`: a `write(2)` or a truncation). Not `IN_CLOSE_WRITE`:
/// `touch` opens the file for writing to set its times, and would resend it.
const WRITTEN: u32 = libc::IN_MODIFY;

/// A directory (synced recursively) that went away and came back in this batch (`rm -rf d;
/// tar x`): the destination still holds the old tree, whose files may have the new ones'
/// sizes and times.
fn replaced(e: &Entry) -> bool {
    const GONE: u32 = libc::IN_DELETE | libc::IN_MOVED_FROM;
    const CAME: u32 = libc::IN_CREATE | libc::IN_MOVED_TO;
    e.recursive && !e.path.is_empty() && e.mask & GONE != 0 && e.mask & CAME != 0
}

/// Plans a batch as up to two groups of runs (see the module docs): files the kernel saw
/// written or moved in from outside the tree (`--checksum`), and everything else with the
/// quick check. `moves` are the batch's renames inside the tree,
/// in order (empty when not known: then every moved-in file counts as from outside).
/// Without written or moved-in files this is [`plan`]'s one group. `files_from`: a group
/// of existing files and deletions may be a `--files-from` run ([`Plan::Files`]; the
/// handler passes the options such a run needs).
pub fn plan_runs(
    root: &Path,
    entries: &[Entry],
    moves: &[(Vec<u8>, Vec<u8>)],
    excludes: &BTreeSet<Vec<u8>>,
    limit: usize,
    files_from: bool,
) -> Vec<Run> {
    let quick = || {
        vec![Run {
            check: Check::Quick,
            plan: plan_with(root, entries, excludes, limit, files_from),
        }]
    };
    let candidate =
        |e: &Entry| (!e.recursive && e.mask & (WRITTEN | libc::IN_MOVED_TO) != 0) || replaced(e);
    if !entries.iter().any(candidate) {
        return quick();
    }
    // Renames carry what is known of their source: a file written under a temporary name
    // and renamed into place (rsync, editors) is a written file; an unchanged file renamed
    // inside the tree was renamed at the destination too and the quick check suffices.
    let mut written: HashSet<&[u8]> = HashSet::new();
    let mut moved_in: HashSet<&[u8]> = HashSet::new();
    for e in entries.iter().filter(|e| !e.recursive) {
        if e.mask & WRITTEN != 0 {
            written.insert(&e.path);
        } else if e.mask & libc::IN_MOVED_TO != 0 {
            moved_in.insert(&e.path);
        }
    }
    for (from, to) in moves {
        let (from, to) = (from.as_slice(), to.as_slice());
        if written.contains(from) {
            written.insert(to);
        } else if !written.contains(to) {
            // Moved in from outside only if its source had been.
            if moved_in.contains(from) {
                moved_in.insert(to);
            } else {
                moved_in.remove(to);
            }
        }
    }
    let renamed: HashSet<&[u8]> = moves.iter().map(|(_, to)| to.as_slice()).collect();
    // A directory that appeared in the batch (created, or moved in from outside) with such
    // files below it is checked whole: the destination has nothing there (or an old tree,
    // see `replaced`), so it costs reading its other files once on the sending side, and
    // the batch stays one run (a burst of new files in new directories).
    let appeared: HashSet<&[u8]> = entries
        .iter()
        .filter(|e| {
            e.recursive
                && !e.path.is_empty()
                && e.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0
                && !renamed.contains(e.path.as_slice())
        })
        .map(|e| e.path.as_slice())
        .collect();
    let mut holding: HashSet<&[u8]> = HashSet::new();
    if !appeared.is_empty() {
        for p in written.iter().chain(moved_in.iter()) {
            let mut top = None;
            let mut cur = *p;
            while let Some(par) = parent(cur).filter(|par| !par.is_empty()) {
                if appeared.contains(par) {
                    top = Some(par);
                }
                cur = par;
            }
            holding.extend(top);
        }
    }
    let (checked, rest): (Vec<&Entry>, Vec<&Entry>) = entries.iter().partition(|e| {
        if e.recursive {
            (replaced(e) && !renamed.contains(e.path.as_slice()))
                || holding.contains(e.path.as_slice())
        } else {
            written.contains(e.path.as_slice()) || moved_in.contains(e.path.as_slice())
        }
    });
    if checked.is_empty() {
        return quick();
    }
    let paths = checked.iter().map(|e| (e.path.as_slice(), e.recursive));
    let Some(mut g) = plan_group(root, paths, excludes, limit, true, files_from) else {
        // Hard links (or the root): one full run with the quick check, as before.
        return quick();
    };
    // Paths the first run syncs whole: the rest needs no line of its own.
    let trees: HashSet<Vec<u8>> = std::mem::take(&mut g.trees).into_iter().collect();
    let mut runs = vec![Run {
        check: Check::Checksum,
        plan: g.plan(),
    }];
    let covered = |p: &[u8]| {
        // The root's own attributes: every run transfers the root directory itself.
        if p.is_empty() {
            return true;
        }
        let mut cur = p;
        loop {
            if trees.contains(cur) {
                return true;
            }
            match parent(cur) {
                Some(par) if !par.is_empty() => cur = par,
                _ => return false,
            }
        }
    };
    let rest: Vec<Entry> = rest
        .into_iter()
        .filter(|e| (e.recursive && e.path.is_empty()) || !covered(&e.path))
        .map(|e| (*e).clone())
        .collect();
    if !rest.is_empty() {
        runs.push(Run {
            check: Check::Quick,
            plan: plan_with(root, &rest, excludes, limit, files_from),
        });
    }
    runs
}

/// One group's lists, and the paths they sync whole.
struct Group {
    parts: Vec<Lists>,
    trees: Vec<Vec<u8>>,
    /// The group as a `--files-from` list instead of `parts`.
    files: Option<Vec<u8>>,
}

impl Group {
    fn plan(self) -> Plan {
        match self.files {
            Some(list) => Plan::Files(list),
            None => Plan::Targeted(self.parts),
        }
    }
}

/// Plans one group of `(path, recursive)` entries as targeted lists; `None` when the group
/// needs a run over the whole tree (the root recursively, a hard-linked file).
fn plan_group<'a>(
    root: &Path,
    entries: impl Iterator<Item = (&'a [u8], bool)>,
    excludes: &BTreeSet<Vec<u8>>,
    limit: usize,
    strict: bool,
    files_from: bool,
) -> Option<Group> {
    let mut merged: HashMap<&[u8], bool> = HashMap::new();
    for (path, recursive) in entries {
        if recursive && path.is_empty() {
            return None;
        }
        *merged.entry(path).or_insert(false) |= recursive;
    }
    collapse_crowded(root, &mut merged, strict);
    let mut stat = Stat {
        root,
        cache: HashMap::new(),
        hardlinked: false,
    };
    // Paths synced recursively whatever they are now (a `/***` line at them or at their
    // topmost vanished ancestor): entries below them need no line of their own, only the
    // lstat that finds hard links.
    let trees: HashSet<&[u8]> = merged
        .iter()
        .filter(|(_, r)| **r)
        .map(|(p, _)| *p)
        .collect();
    let covered = |p: &[u8]| {
        let mut cur = p;
        while let Some(par) = parent(cur) {
            if trees.contains(par) {
                return true;
            }
            cur = par;
        }
        false
    };
    let mut forms: BTreeMap<Vec<u8>, u8> = BTreeMap::new();
    // The paths of a `--files-from` run (as keys), while the group can be one: no
    // directory synced recursively, nothing of the rules' excluded below a path that may
    // be deleted, every ancestor a directory.
    let mut files: Option<BTreeSet<Vec<u8>>> = (files_from && trees.is_empty()).then(BTreeSet::new);
    for (path, recursive) in merged.iter().map(|(p, r)| (*p, *r)) {
        if !trees.is_empty() && covered(path) {
            stat.kind(path);
            continue;
        }
        let kind = stat.kind(path);
        let (path, form) = match kind {
            Kind::Dir if recursive => (path, TREE),
            Kind::Dir => (path, PLAIN),
            Kind::Other => (path, PLAIN | TREE),
            Kind::Missing => {
                let mut top = path;
                while let Some(p) = parent(top) {
                    if p.is_empty() || stat.cached_kind(p) == Kind::Dir {
                        break;
                    }
                    top = p;
                }
                (top, PLAIN | TREE)
            }
        };
        if path.is_empty() {
            // The root's own attributes: every run transfers the root directory itself.
            if form & TREE != 0 {
                return None;
            }
            forms.entry(Vec::new()).or_insert(PLAIN);
            files = None;
            continue;
        }
        if files.is_some() {
            // A file or a vanished path may replace a directory at the destination, whose
            // excluded entries a filter list protects.
            let below = kind != Kind::Dir && excluded_below(excludes, path);
            if below || !ancestors_are_dirs(&mut stat, path) {
                files = None;
            } else if let Some(f) = files.as_mut() {
                f.insert(key(path));
            }
        }
        *forms.entry(key(path)).or_insert(0) |= form;
    }

    if stat.hardlinked {
        // rsync -H links names it sees in one transfer; the other names of this inode may
        // be anywhere in the tree, so only a full run keeps the destination's links.
        return None;
    }
    if let Some(keys) = files {
        let mut list = Vec::new();
        for k in &keys {
            // rsync skips a line that starts with `#` or `;` as a comment, NUL-separated
            // or not; `./` keeps the name (and its place: `-R` drops the `./`).
            if matches!(k.first(), Some(b'#' | b';')) {
                list.extend_from_slice(b"./");
            }
            list.extend_from_slice(&unkey(k));
            list.push(0);
        }
        return Some(Group {
            parts: Vec::new(),
            trees: Vec::new(),
            files: Some(list),
        });
    }
    let trees = forms
        .iter()
        .filter(|(k, f)| !k.is_empty() && *f & TREE != 0)
        .map(|(k, _)| unkey(k))
        .collect();
    let mut parts = Vec::new();
    let mut cur = Lists::default();
    // Ancestor directories already listed in the current part (as keys), a stack.
    let mut listed: Vec<Vec<u8>> = Vec::new();
    // The last entry with a `/***` line: entries below it are covered.
    let mut covering: Option<Vec<u8>> = None;
    for (k, form) in &forms {
        if k.is_empty() {
            continue;
        }
        if let Some(c) = &covering {
            if k.len() > c.len() && k.starts_with(c) && k[c.len()] == 0 {
                continue;
            }
        }
        if limit > 0 && cur.lines >= limit {
            parts.push(std::mem::take(&mut cur));
            listed.clear();
        }
        while let Some(top) = listed.last() {
            if k.len() > top.len() && k.starts_with(top) && k[top.len()] == 0 {
                break;
            }
            listed.pop();
        }
        // Ancestors of k not listed yet.
        let start = listed.last().map_or(0, |t| t.len() + 1);
        for (i, &b) in k.iter().enumerate().skip(start) {
            if b == 0 {
                let anc = &k[..i];
                push_pattern(&mut cur.include, &unkey(anc), b"");
                cur.lines += 1;
                listed.push(anc.to_vec());
            }
        }
        let rel = unkey(k);
        if form & PLAIN != 0 {
            push_pattern(&mut cur.include, &rel, b"");
            cur.lines += 1;
        }
        if form & TREE != 0 {
            push_pattern(&mut cur.include, &rel, b"/***");
            cur.lines += 1;
            covering = Some(k.clone());
            let mut lo = rel.clone();
            lo.push(b'/');
            let mut hi = rel.clone();
            hi.push(b'/' + 1);
            for x in excludes.range(lo..hi) {
                push_pattern(&mut cur.exclude, x, b"");
            }
        } else {
            listed.push(k.clone());
        }
    }
    if cur.lines > 0 || parts.is_empty() {
        parts.push(cur);
    }
    Some(Group {
        parts,
        trees,
        files: None,
    })
}

/// Whether a rule-excluded path is known below `rel`.
fn excluded_below(excludes: &BTreeSet<Vec<u8>>, rel: &[u8]) -> bool {
    let mut lo = rel.to_vec();
    lo.push(b'/');
    let mut hi = rel.to_vec();
    hi.push(b'/' + 1);
    excludes.range(lo..hi).next().is_some()
}

/// Whether every ancestor of `rel` is a directory now (an `lstat`: not a symlink).
fn ancestors_are_dirs(stat: &mut Stat, rel: &[u8]) -> bool {
    let mut cur = rel;
    while let Some(p) = parent(cur).filter(|p| !p.is_empty()) {
        if stat.cached_kind(p) != Kind::Dir {
            return false;
        }
        cur = p;
    }
    true
}

#[cfg(test)]
mod tests;
