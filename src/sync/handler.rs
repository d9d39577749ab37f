/*!
What a batch becomes for each sync-handler mode: the [`Steps`] the runner carries out.

The mode decides the shape of the handler's input (rsync filter lists, a list of paths,
arguments); everything about running, timing out and judging a step is the runner's. List
files are written here, before the first step starts, into the lists directory, with a
name that is unique in this process (`KIND.PID.SEQ`), and removed by the runner when the
batch ends (unless `dont-unlink-lists`).
*/

use super::plan::{plan, Plan};
use super::{Exec, Step, Steps};
use crate::queue::Batch;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// How the handler is called and what it mirrors.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// The handler (rsync in rsyncdirect mode), resolved.
    pub program: PathBuf,
    pub src: PathBuf,
    pub dst: PathBuf,
    /// Where list files are written.
    pub lists_dir: PathBuf,
    /// `rsync -x`: do not cross file system boundaries.
    pub one_file_system: bool,
    /// Split include lists into parts of about this many lines (0: no limit).
    pub rsync_inclimit: usize,
}

pub struct Handler {
    cfg: HandlerConfig,
    seq: u64,
}

impl Handler {
    pub fn new(cfg: HandlerConfig) -> Self {
        Handler { cfg, seq: 0 }
    }

    /// The steps for `batch`. `excludes` are the rule-excluded paths known in the tree
    /// (left out of recursive syncs).
    pub fn steps(&mut self, batch: &Batch, excludes: &BTreeSet<Vec<u8>>) -> io::Result<Steps> {
        let p = plan(
            &self.cfg.src,
            &batch.entries,
            excludes,
            self.cfg.rsync_inclimit,
        );
        self.rsync_direct(p)
    }

    fn write_list(
        &mut self,
        kind: &str,
        data: &[u8],
        files: &mut Vec<PathBuf>,
    ) -> io::Result<PathBuf> {
        self.seq += 1;
        let path = self
            .cfg
            .lists_dir
            .join(format!("{kind}.{}.{}", std::process::id(), self.seq));
        std::fs::write(&path, data)?;
        files.push(path.clone());
        Ok(path)
    }

    /// rsyncdirect: `rsync -aH --delete [-x] --from0 [--exclude-from=X]
    /// [--include-from=I --exclude=*] SRC/ DST/`, one run per part of the plan.
    fn rsync_direct(&mut self, p: Plan) -> io::Result<Steps> {
        let parts: Vec<(Vec<u8>, Option<Vec<u8>>)> = match p {
            Plan::Full { exclude } => vec![(exclude, None)],
            Plan::Targeted(parts) => parts
                .into_iter()
                .map(|l| (l.exclude, Some(l.include)))
                .collect(),
        };
        let mut out = Steps::default();
        for (exclude, include) in parts {
            let mut args: Vec<OsString> = vec!["-aH".into(), "--delete".into()];
            if self.cfg.one_file_system {
                args.push("-x".into());
            }
            if !exclude.is_empty() || include.is_some() {
                args.push("--from0".into());
            }
            if !exclude.is_empty() {
                let p = self.write_list("exclude", &exclude, &mut out.files)?;
                args.push(prefixed("--exclude-from=", &p));
            }
            if let Some(include) = include {
                let p = self.write_list("include", &include, &mut out.files)?;
                args.push(prefixed("--include-from=", &p));
                args.push("--exclude=*".into());
            }
            args.push(dir_arg(&self.cfg.src));
            args.push(dir_arg(&self.cfg.dst));
            out.steps.push(Step::Exec(Exec {
                program: self.cfg.program.clone(),
                args,
                env: Vec::new(),
            }));
        }
        Ok(out)
    }
}

fn prefixed(prefix: &str, p: &Path) -> OsString {
    let mut a = OsString::from(prefix);
    a.push(p);
    a
}

/// `DIR/`: rsync copies the directory's contents, not the directory itself.
pub fn dir_arg(p: &Path) -> OsString {
    let mut s = p.as_os_str().to_os_string();
    s.push("/");
    s
}
