//! Seeded randomized operations on SRC while the worker runs; after every
//! round DST must converge to SRC.
//!
//! Reproduce a failure with `CLSYNC_TEST_SEED=<seed> cargo test --release --test it
//! random::<test name>` (`--test random_fanotify` for the fanotify run; the panic message
//! has the whole command, with the seed in decimal or 0x-hex).

use crate::common;

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const ROUNDS: usize = 5;
const OPS_PER_ROUND: usize = 200;
/// A round's work, plus the minute rsync's end-of-run race may add to a run the worker
/// cannot wake (over ssh: common::RSYNC_END_STALL).
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

/// splitmix64: tiny, good enough, and reproducible everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            Some(&v[self.below(v.len())])
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const SPECIAL_BYTES: &[u8] = b"\n\\-#[]*? '\"$\t+!\xff\xfe\x01";
const FILE_MODES: &[u32] = &[0o644, 0o600, 0o755, 0o640, 0o444, 0o700];
const DIR_MODES: &[u32] = &[0o755, 0o700, 0o750, 0o711, 0o775];

#[derive(Clone, Copy, Debug)]
enum Op {
    Create,
    Overwrite,
    Append,
    Truncate,
    Chmod,
    Symlink,
    MkdirP,
    RenameFile,
    RenameDir,
    MoveOut,
    MoveIn,
    WriteOutside,
    Delete,
    RmRf,
    TypeChange,
}

/// (operation, weight)
const OPS: &[(Op, usize)] = &[
    (Op::Create, 30),
    (Op::Overwrite, 10),
    (Op::Append, 8),
    (Op::Truncate, 5),
    (Op::Chmod, 6),
    (Op::Symlink, 6),
    (Op::MkdirP, 12),
    (Op::RenameFile, 8),
    (Op::RenameDir, 5),
    (Op::MoveOut, 3),
    (Op::MoveIn, 3),
    (Op::WriteOutside, 2),
    (Op::Delete, 8),
    (Op::RmRf, 1),
    (Op::TypeChange, 5),
];

struct Tree {
    dirs: Vec<Vec<u8>>,
    /// regular files
    files: Vec<Vec<u8>>,
    /// files and symlinks (anything that is not a directory)
    leaves: Vec<Vec<u8>>,
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

fn is_under(p: &[u8], dir: &[u8]) -> bool {
    p == dir || (p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/')
}

struct Fuzzer {
    seed: u64,
    rng: Rng,
    src: PathBuf,
    outside: PathBuf,
    /// names of directories currently moved out, under `outside`
    out_dirs: Vec<Vec<u8>>,
    counter: u64,
    log: Vec<String>,
    /// operations that found nothing to work on
    skipped: usize,
}

impl Fuzzer {
    fn tree(&self) -> Tree {
        let snap = snapshot(&self.src, &no_filter)
            .unwrap_or_else(|e| panic!("seed {:#x}: cannot list src: {e}", self.seed));
        let mut t = Tree {
            dirs: Vec::new(),
            files: Vec::new(),
            leaves: Vec::new(),
        };
        for (k, e) in snap {
            match e.kind {
                Kind::Dir => t.dirs.push(k),
                Kind::File => {
                    t.files.push(k.clone());
                    t.leaves.push(k);
                }
                _ => t.leaves.push(k),
            }
        }
        t
    }

    fn name(&mut self) -> Vec<u8> {
        let len = 1 + self.rng.below(8);
        let mut v: Vec<u8> = (0..len)
            .map(|_| ALNUM[self.rng.below(ALNUM.len())])
            .collect();
        if self.rng.chance(15) {
            let b = SPECIAL_BYTES[self.rng.below(SPECIAL_BYTES.len())];
            let at = self.rng.below(v.len() + 1);
            v.insert(at, b);
        }
        if self.rng.chance(3) {
            v.insert(0, b'-');
        }
        v
    }

    /// A name that does not exist yet in `parent` (a path under SRC or
    /// outside); `None` after a few collisions.
    fn fresh(&mut self, parent: &Path) -> Option<Vec<u8>> {
        for _ in 0..5 {
            let n = self.name();
            if !exists_nofollow(&bp(parent, &n)) {
                return Some(n);
            }
        }
        None
    }

    fn content(&mut self) -> Vec<u8> {
        let n = if self.rng.chance(5) {
            self.rng.below(20_000)
        } else {
            self.rng.below(2048)
        };
        self.rng.bytes(n)
    }

    fn s(&self, rel: &[u8]) -> PathBuf {
        bp(&self.src, rel)
    }

    fn choose_op(&mut self) -> Op {
        let total: usize = OPS.iter().map(|(_, w)| w).sum();
        let mut r = self.rng.below(total);
        for (op, w) in OPS {
            if r < *w {
                return *op;
            }
            r -= w;
        }
        unreachable!()
    }

    /// Perform one random operation; returns what was done (or `None` when
    /// the operation had nothing to work on).
    fn step(&mut self) -> io::Result<Option<String>> {
        let op = self.choose_op();
        let t = self.tree();
        let non_root: Vec<Vec<u8>> = t.dirs.iter().filter(|d| !d.is_empty()).cloned().collect();
        match op {
            Op::Create => {
                let dir = self.rng.pick(&t.dirs).unwrap().clone();
                let Some(n) = self.fresh(&self.s(&dir)) else {
                    return Ok(None);
                };
                let rel = join(&dir, &n);
                let c = self.content();
                fs::write(self.s(&rel), &c)?;
                Ok(Some(format!("create {} ({} bytes)", show(&rel), c.len())))
            }
            Op::Overwrite => {
                let Some(f) = self.rng.pick(&t.files).cloned() else {
                    return Ok(None);
                };
                let c = self.content();
                fs::write(self.s(&f), &c)?;
                Ok(Some(format!("overwrite {} ({} bytes)", show(&f), c.len())))
            }
            Op::Append => {
                let Some(f) = self.rng.pick(&t.files).cloned() else {
                    return Ok(None);
                };
                let c = self.content();
                OpenOptions::new()
                    .append(true)
                    .open(self.s(&f))?
                    .write_all(&c)?;
                Ok(Some(format!("append {} (+{} bytes)", show(&f), c.len())))
            }
            Op::Truncate => {
                let Some(f) = self.rng.pick(&t.files).cloned() else {
                    return Ok(None);
                };
                let file = OpenOptions::new().write(true).open(self.s(&f))?;
                let len = file.metadata()?.len();
                let new_len = if len == 0 {
                    0
                } else {
                    self.next_u64() % (len + 1)
                };
                file.set_len(new_len)?;
                Ok(Some(format!("truncate {} {len} -> {new_len}", show(&f))))
            }
            Op::Chmod => {
                let (p, mode) = if self.rng.chance(50) && !t.files.is_empty() {
                    let f = self.rng.pick(&t.files).unwrap().clone();
                    (f, *self.rng.pick(FILE_MODES).unwrap())
                } else {
                    let d = self.rng.pick(&t.dirs).unwrap().clone();
                    (d, *self.rng.pick(DIR_MODES).unwrap())
                };
                fs::set_permissions(self.s(&p), fs::Permissions::from_mode(mode))?;
                Ok(Some(format!("chmod {mode:o} {}", show(&p))))
            }
            Op::Symlink => {
                let dir = self.rng.pick(&t.dirs).unwrap().clone();
                let Some(n) = self.fresh(&self.s(&dir)) else {
                    return Ok(None);
                };
                let target: Vec<u8> = match self.rng.below(4) {
                    0 => match self.rng.pick(&t.leaves) {
                        Some(l) => l.rsplit(|&b| b == b'/').next().unwrap().to_vec(),
                        None => b"nothing".to_vec(),
                    },
                    1 => {
                        let mut v = b"../".to_vec();
                        v.extend(self.name());
                        v
                    }
                    2 => pb(&self.outside).to_vec(),
                    _ => self.name(),
                };
                let rel = join(&dir, &n);
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), self.s(&rel))?;
                Ok(Some(format!("symlink {} -> {}", show(&rel), show(&target))))
            }
            Op::MkdirP => {
                let mut rel = self.rng.pick(&t.dirs).unwrap().clone();
                let depth = 1 + self.rng.below(4);
                for _ in 0..depth {
                    let Some(n) = self.fresh(&self.s(&rel)) else {
                        break;
                    };
                    rel = join(&rel, &n);
                    if exists_nofollow(&self.s(&rel)) {
                        return Ok(None);
                    }
                    // Files in the new levels, sometimes.
                    if self.rng.chance(30) {
                        fs::create_dir_all(self.s(&rel))?;
                        let f = join(&rel, &self.name());
                        let c = self.content();
                        fs::write(self.s(&f), c)?;
                    }
                }
                fs::create_dir_all(self.s(&rel))?;
                Ok(Some(format!("mkdir -p {}", show(&rel))))
            }
            Op::RenameFile => {
                let Some(f) = self.rng.pick(&t.leaves).cloned() else {
                    return Ok(None);
                };
                let to = if self.rng.chance(20) && t.files.len() > 1 {
                    // Replace an existing file (atomic save).
                    let g = self.rng.pick(&t.files).unwrap().clone();
                    if g == f {
                        return Ok(None);
                    }
                    g
                } else {
                    let dir = self.rng.pick(&t.dirs).unwrap().clone();
                    let Some(n) = self.fresh(&self.s(&dir)) else {
                        return Ok(None);
                    };
                    join(&dir, &n)
                };
                fs::rename(self.s(&f), self.s(&to))?;
                Ok(Some(format!("mv {} {}", show(&f), show(&to))))
            }
            Op::RenameDir => {
                let Some(d) = self.rng.pick(&non_root).cloned() else {
                    return Ok(None);
                };
                let parents: Vec<Vec<u8>> = t
                    .dirs
                    .iter()
                    .filter(|p| !is_under(p, &d))
                    .cloned()
                    .collect();
                let parent = self.rng.pick(&parents).unwrap().clone();
                let Some(n) = self.fresh(&self.s(&parent)) else {
                    return Ok(None);
                };
                let to = join(&parent, &n);
                fs::rename(self.s(&d), self.s(&to))?;
                Ok(Some(format!("mv {}/ {}/", show(&d), show(&to))))
            }
            Op::MoveOut => {
                let Some(d) = self.rng.pick(&non_root).cloned() else {
                    return Ok(None);
                };
                self.counter += 1;
                let n = format!("out{}", self.counter).into_bytes();
                fs::rename(self.s(&d), bp(&self.outside, &n))?;
                self.out_dirs.push(n.clone());
                Ok(Some(format!("mv {}/ OUTSIDE/{}", show(&d), show(&n))))
            }
            Op::MoveIn => {
                if self.out_dirs.is_empty() {
                    return Ok(None);
                }
                let i = self.rng.below(self.out_dirs.len());
                let n = self.out_dirs.swap_remove(i);
                let parent = self.rng.pick(&t.dirs).unwrap().clone();
                let Some(new) = self.fresh(&self.s(&parent)) else {
                    self.out_dirs.push(n);
                    return Ok(None);
                };
                let to = join(&parent, &new);
                fs::rename(bp(&self.outside, &n), self.s(&to))?;
                Ok(Some(format!("mv OUTSIDE/{} {}/", show(&n), show(&to))))
            }
            Op::WriteOutside => {
                let Some(n) = self.rng.pick(&self.out_dirs).cloned() else {
                    return Ok(None);
                };
                let dir = bp(&self.outside, &n);
                let Some(f) = self.fresh(&dir) else {
                    return Ok(None);
                };
                let c = self.content();
                fs::write(bp(&dir, &f), c)?;
                Ok(Some(format!("write OUTSIDE/{}/{}", show(&n), show(&f))))
            }
            Op::Delete => {
                let Some(f) = self.rng.pick(&t.leaves).cloned() else {
                    return Ok(None);
                };
                fs::remove_file(self.s(&f))?;
                Ok(Some(format!("rm {}", show(&f))))
            }
            Op::RmRf => {
                let Some(d) = self.rng.pick(&non_root).cloned() else {
                    return Ok(None);
                };
                fs::remove_dir_all(self.s(&d))?;
                Ok(Some(format!("rm -rf {}", show(&d))))
            }
            Op::TypeChange => {
                if self.rng.chance(50) {
                    let Some(f) = self.rng.pick(&t.leaves).cloned() else {
                        return Ok(None);
                    };
                    fs::remove_file(self.s(&f))?;
                    fs::create_dir(self.s(&f))?;
                    if self.rng.chance(70) {
                        let inner = join(&f, &self.name());
                        let c = self.content();
                        fs::write(self.s(&inner), c)?;
                    }
                    Ok(Some(format!("file -> dir {}", show(&f))))
                } else {
                    let Some(d) = self.rng.pick(&non_root).cloned() else {
                        return Ok(None);
                    };
                    fs::remove_dir_all(self.s(&d))?;
                    let c = self.content();
                    fs::write(self.s(&d), c)?;
                    Ok(Some(format!("dir -> file {}", show(&d))))
                }
            }
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.rng.next()
    }

    /// Run `n` operations. Now and then a short random pause lets syncs run
    /// in the middle of the changes (load shaping, not synchronisation).
    fn run_ops(&mut self, n: usize) {
        for i in 0..n {
            if self.rng.chance(4) {
                let ms = self.rng.below(150) as u64;
                std::thread::sleep(Duration::from_millis(ms));
            }
            match self.step() {
                Ok(Some(what)) => self.log.push(what),
                Ok(None) => self.skipped += 1,
                Err(e) => panic!(
                    "seed {:#x}: operation {i} failed: {e}\nprevious operations:\n{}",
                    self.seed,
                    self.recent_log()
                ),
            }
        }
    }

    fn recent_log(&self) -> String {
        const MAX: usize = 80;
        let start = self.log.len().saturating_sub(MAX);
        let mut s = String::new();
        if start > 0 {
            s.push_str(&format!("  [... {start} earlier operations ...]\n"));
        }
        for l in &self.log[start..] {
            s.push_str("  ");
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

/// The command that runs test `name` of this binary again with `seed`.
fn rerun(seed: u64, name: &str) -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let exe = exe.file_name().unwrap_or_default().to_string_lossy();
    // target/release/deps/NAME-HASH; the module path without the crate's name.
    let binary = exe.rsplit_once('-').map_or(&*exe, |(b, _)| b);
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("CLSYNC_TEST_SEED={seed:#x} cargo test --release --test {binary} {module}::{name}")
}

fn parse_seed(s: &str) -> u64 {
    let s = s.trim();
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.unwrap_or_else(|e| panic!("CLSYNC_TEST_SEED={s:?}: {e}"))
}

/// One randomized run: its default seed (`CLSYNC_TEST_SEED` overrides it), extra worker
/// options (delays: different batching exercises different interleavings of events,
/// scans and syncs), and whether the destination is reached over ssh.
struct Seed {
    seed: u64,
    args: &'static [&'static str],
    over_ssh: bool,
}

fn run_seed(name: &str, case: Seed) {
    run_seed_to(name, case.seed, case.args, case.over_ssh)
}

/// `over_ssh`: the destination is `root@127.0.0.1:DST` through a real sshd.
fn run_seed_to(name: &str, default_seed: u64, args: &[&str], over_ssh: bool) {
    let seed = match std::env::var("CLSYNC_TEST_SEED") {
        Ok(s) => parse_seed(&s),
        Err(_) => default_seed,
    };
    eprintln!("{name}: seed {seed:#x}");
    let t = TestDir::new(name);
    let mut f = Fuzzer {
        seed,
        rng: Rng(seed),
        src: t.src.clone(),
        outside: t.outside.clone(),
        out_dirs: Vec::new(),
        counter: 0,
        log: Vec::new(),
        skipped: 0,
    };
    // A random tree before the worker starts (initial sync).
    f.run_ops(60);
    let mut all_ops: Vec<String> = vec!["# before start".to_string()];
    all_ops.extend(f.log.iter().cloned());
    let sshd = over_ssh.then(|| common::ssh::Sshd::start(&t.root.join("sshd")));
    let mut w = match &sshd {
        None => t.start(args),
        Some(sshd) => {
            let mut a: Vec<std::ffi::OsString> =
                vec!["-t".into(), "0.1".into(), "-w".into(), "0.1".into()];
            a.extend(sshd.worker_args());
            a.extend(args.iter().map(std::ffi::OsString::from));
            a.push("--status-file".into());
            a.push(t.status.clone().into());
            a.push(t.src.clone().into());
            a.push(sshd.dest(&t.dst).into());
            Worker::start_raw(&t.root, &t.src, &t.dst, &t.status, &a)
        }
    };
    assert_synced_now(
        &t.src,
        &t.dst,
        &format!(
            "seed {seed:#x} (rerun: {}): right after readiness",
            rerun(seed, name)
        ),
    );
    for round in 1..=ROUNDS {
        f.log.clear();
        f.skipped = 0;
        f.run_ops(OPS_PER_ROUND);
        // The whole history, for CLSYNC_TEST_KEEP=1 post-mortems.
        all_ops.push(format!("# round {round}"));
        all_ops.extend(f.log.iter().cloned());
        write(&t.root.join("ops.log"), all_ops.join("\n").as_bytes());
        let tree = f.tree();
        let ctx = format!(
            "seed {seed:#x} round {round}/{ROUNDS} (rerun: {})\n\
             {} operations done, {} skipped; src has {} dirs and {} other entries, {} dirs moved out\n\
             operations of this round:\n{}",
            rerun(seed, name),
            f.log.len(),
            f.skipped,
            tree.dirs.len(),
            tree.leaves.len(),
            f.out_dirs.len(),
            f.recent_log()
        );
        eprintln!("{}", ctx.lines().take(2).collect::<Vec<_>>().join("\n"));
        w.wait_synced_ctx(ROUND_TIMEOUT, &ctx, &no_filter);
    }
    w.stop_ok();
}

cases! { run_seed;
    random_seed_1: Seed { seed: 0x5eed_0000_0000_0001, args: &[], over_ssh: false },
    random_seed_2: Seed { seed: 0x5eed_0000_0000_0002, args: &[], over_ssh: false },
    random_seed_3: Seed { seed: 0xdead_beef_cafe_f00d, args: &[], over_ssh: false },
    random_seed_4: Seed { seed: 0x0123_4567_89ab_cdef, args: &[], over_ssh: false },
    random_seed_5_immediate_batches: Seed {
        seed: 0x5eed_0000_0000_0005,
        args: &["-t", "0", "-w", "0"],
        over_ssh: false,
    },
    random_seed_6_immediate_batches: Seed {
        seed: 0x5eed_0000_0000_0006,
        args: &["-t", "0", "-w", "0"],
        over_ssh: false,
    },
    random_seed_7_slow_batches: Seed {
        seed: 0x5eed_0000_0000_0007,
        args: &["-t", "0.7", "-w", "0.3"],
        over_ssh: false,
    },
    random_seed_8_tiny_include_lists: Seed {
        seed: 0x5eed_0000_0000_0008,
        args: &["-t", "0.05", "--rsync-inclimit", "3"],
        over_ssh: false,
    },
    /// The destination is `root@127.0.0.1:DST` through a real sshd.
    random_seed_9_over_ssh: Seed { seed: 0x5eed_0009, args: &[], over_ssh: true },
}

// ---------------------------------------------------------------------------
// Crashes and warm starts
// ---------------------------------------------------------------------------

/// Rounds of `kill_9_at_random_points_then_a_warm_start_loses_nothing`
/// (`CLSYNC_CRASH_ROUNDS` overrides: a long run is `CLSYNC_CRASH_ROUNDS=1000`).
const CRASH_ROUNDS: usize = 12;

/// A sync handler around rsync that, while a flag file exists, kills the worker right
/// after a successful rsync run (the destination has the batch, the index does not know
/// it yet), or right before one (the rsync then runs on, orphaned, as after a real crash).
fn crash_wrapper(root: &Path) -> PathBuf {
    let script = root.join("crash-rsync.sh");
    let text = format!(
        r#"#!/bin/sh
T='{root}'
if [ -e "$T/kill-before" ]; then rm -f "$T/kill-before"; kill -9 $PPID; fi
for a in "$@"; do case "$a" in --*-from=*) echo "$a: $(tr '\0' ' ' < "${{a#--*-from=}}")" >> "$T/rsync.log";; esac; done
echo "rsync $*" >> "$T/rsync.log"
rsync "$@"; rc=$?
echo "exit $rc" >> "$T/rsync.log"
if [ $rc -eq 0 ] && [ -e "$T/kill-after" ]; then rm -f "$T/kill-after"; kill -9 $PPID; fi
exit $rc
"#,
        root = root.display()
    );
    fs::write(&script, text).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

impl Fuzzer {
    /// Rewrites up to `n` random files with other bytes of the same length and puts
    /// their modification time back (what `cp -p`, `touch -r` or a restore from an
    /// archive do): size and mtime say nothing changed; only ctime and the content do.
    fn rewrite_keeping_size_and_mtime(&mut self, n: usize) {
        let t = self.tree();
        for _ in 0..n {
            let Some(f) = self.rng.pick(&t.files).cloned() else {
                return;
            };
            let p = self.s(&f);
            let md = lstat(&p);
            let len = md.len() as usize;
            if len == 0 {
                continue;
            }
            let mtime = md.modified().unwrap();
            let mut c = self.rng.bytes(len);
            // Other bytes for sure, not just maybe.
            let old = fs::read(&p).unwrap();
            for (b, o) in c.iter_mut().zip(&old) {
                if b == o {
                    *b = !*o;
                }
            }
            fs::write(&p, &c).unwrap();
            fs::File::options()
                .write(true)
                .open(&p)
                .and_then(|h| h.set_modified(mtime))
                .unwrap();
            self.log
                .push(format!("rewrite {} ({len} bytes, mtime kept)", show(&f)));
        }
    }
}

/// kill -9 at random points of the worker's life (before, during and right after its
/// initial sync, between a batch's rsync and its record, mid-rsync with the rsync left
/// running, while changes arrive), with changes made while no worker runs (content
/// rewritten with size and mtime kept among them); then a warm start from the index of
/// what the destination received must leave the destination equal to the source the
/// moment the worker says `running`: the index never claims what was not delivered.
#[test]
fn kill_9_at_random_points_then_a_warm_start_loses_nothing() {
    let name = "kill_9_at_random_points_then_a_warm_start_loses_nothing";
    let seed = match std::env::var("CLSYNC_TEST_SEED") {
        Ok(s) => parse_seed(&s),
        Err(_) => 0x5eed_0000_0000_0c9a,
    };
    let rounds = std::env::var("CLSYNC_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CRASH_ROUNDS);
    eprintln!("{name}: seed {seed:#x}, {rounds} rounds");
    let t = TestDir::new("crash-warm");
    let index = t.root.join("index");
    fs::create_dir(&index).unwrap();
    fs::set_permissions(&index, fs::Permissions::from_mode(0o700)).unwrap();
    let wrapper = crash_wrapper(&t.root);
    let mut args: Vec<std::ffi::OsString> = vec![
        "--index-dir".into(),
        index.clone().into(),
        "-S".into(),
        wrapper.into(),
    ];
    if fanotify_run() {
        args.insert(0, "--monitor=fanotify".into());
    }
    let mut f = Fuzzer {
        seed,
        rng: Rng(seed),
        src: t.src.clone(),
        outside: t.outside.clone(),
        out_dirs: Vec::new(),
        counter: 0,
        log: Vec::new(),
        skipped: 0,
    };
    f.run_ops(80);
    let mut history: Vec<String> = vec!["# before the first start".into()];
    history.append(&mut f.log);
    for round in 0..rounds {
        let dir = t.root.join(format!("run{round}"));
        mkdir(&dir);
        let how = if round == 0 { 0 } else { f.rng.below(4) };
        history.push(format!(
            "# run {round}: kill {}",
            [
                "once running",
                "on a timer",
                "after an rsync",
                "before an rsync"
            ][how]
        ));
        match how {
            2 => write(&t.root.join("kill-after"), b""),
            3 => write(&t.root.join("kill-before"), b""),
            _ => {}
        }
        let mut w = Worker::spawn_in(&dir, &t.src, &t.dst, &args);
        let ctx = |w: &Worker| {
            format!(
                "seed {seed:#x} run {round} (rerun: {})\nstderr:\n{}",
                rerun(seed, name),
                w.stderr()
            )
        };
        match how {
            0 => {
                // The first run completes its initial sync (there is an index to start
                // from); then changes arrive and it dies among them.
                wait_until(READY_TIMEOUT, "the first worker to be running", || {
                    if w.status() == "running" {
                        Ok(())
                    } else if let Some(st) = w.try_wait() {
                        panic!("worker exited: {st:?}\n{}", ctx(&w))
                    } else {
                        Err(w.status())
                    }
                });
                let n = f.rng.below(40);
                f.run_ops(n);
                std::thread::sleep(Duration::from_millis(f.rng.below(300) as u64));
            }
            1 => {
                std::thread::sleep(Duration::from_millis(f.rng.below(600) as u64));
                let n = f.rng.below(40);
                f.run_ops(n);
                std::thread::sleep(Duration::from_millis(f.rng.below(300) as u64));
            }
            _ => {
                // Changes until the wrapper has killed the worker on an rsync run.
                let deadline = std::time::Instant::now() + SYNC_TIMEOUT;
                while w.try_wait().is_none() && std::time::Instant::now() < deadline {
                    f.run_ops(1);
                    std::thread::sleep(Duration::from_millis(50));
                }
                assert!(
                    w.try_wait().is_some(),
                    "the wrapper did not kill the worker within {SYNC_TIMEOUT:?}\n{}",
                    ctx(&w)
                );
            }
        }
        // Whatever is left of the worker's process group dies with it (an rsync the
        // wrapper left running goes on as after a real crash, but must not outlive the
        // round: the next round compares trees).
        let _ = nix::sys::signal::killpg(w.pid(), nix::sys::signal::Signal::SIGKILL);
        w.wait_exit(STOP_TIMEOUT);
        wait_until(
            STOP_TIMEOUT,
            "the killed worker's children to be gone",
            || {
                let left = processes_mentioning(pb(&t.dst));
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                }
            },
        );
        let _ = fs::remove_file(t.root.join("kill-after"));
        let _ = fs::remove_file(t.root.join("kill-before"));
        history.append(&mut f.log);
        // Changes while no worker runs.
        history.push(format!("# stopped after run {round}"));
        let n = f.rng.below(30);
        f.run_ops(n);
        let n = f.rng.below(4);
        f.rewrite_keeping_size_and_mtime(n);
        history.append(&mut f.log);
        write(&t.root.join("ops.log"), history.join("\n").as_bytes());
    }
    let dir = t.root.join("final");
    mkdir(&dir);
    let mut w = Worker::start_in(&dir, &t.src, &t.dst, &args);
    let log = w.stderr();
    assert!(
        log.contains("initial sync: from the index"),
        "seed {seed:#x} (rerun: {}): the last start did not start from the index:\n{log}",
        rerun(seed, name)
    );
    assert_synced_now(
        &t.src,
        &t.dst,
        &format!(
            "seed {seed:#x} (rerun: {}): right after the warm start said running; history:\n{}",
            rerun(seed, name),
            history[history.len().saturating_sub(120)..].join("\n")
        ),
    );
    w.stop_ok();
}
