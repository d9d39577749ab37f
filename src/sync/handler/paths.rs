/*!
The handler modes that take paths rather than rsync filter lists (`shell`, `direct`,
`simple`, `so`): entries expanded into paths (recursive ones walked, as the original does),
and the runs or calls each mode makes of them. See the table in the parent module.
*/

use super::*;

impl Handler {
    /// Splits entries into single paths (recursive ones walked, masks merged) and, with
    /// have-recursive-sync, the directories handed over whole.
    pub(super) fn expand(
        &self,
        entries: &[Entry],
        rules: &Rules,
    ) -> (BTreeMap<Vec<u8>, u32>, Vec<Vec<u8>>) {
        let mut paths: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        let mut trees = Vec::new();
        for e in entries {
            if !e.recursive {
                if !rules.is_empty() && !self.listed_dir(&e.path, rules) {
                    continue;
                }
                *paths.entry(e.path.clone()).or_default() |= e.mask;
            } else if self.cfg.have_recursive_sync {
                trees.push(e.path.clone());
            } else {
                self.walk(&e.path, e.mask, rules, &mut paths);
            }
        }
        (paths, trees)
    }

    /// Lists `rel` and everything below it that the rules permit, not following symlinks
    /// (nor mount points with one-file-system).
    pub(super) fn walk(
        &self,
        rel: &[u8],
        mask: u32,
        rules: &Rules,
        out: &mut BTreeMap<Vec<u8>, u32>,
    ) {
        let top = abs_path(&self.cfg.src, rel);
        let Ok(m) = std::fs::symlink_metadata(&top) else {
            // Gone since: the handler hears about the path itself.
            *out.entry(rel.to_vec()).or_default() |= mask;
            return;
        };
        if rules.is_empty() || rules.listed(rel, Kind::of(m.file_type())) {
            *out.entry(rel.to_vec()).or_default() |= mask | MASK_FOUND_DIR;
        }
        let dev = m.dev();
        let mut stack = vec![rel.to_vec()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(abs_path(&self.cfg.src, &dir)) else {
                continue;
            };
            for ent in rd.flatten() {
                let name = ent.file_name();
                let mut child = dir.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(name.as_bytes());
                let Ok(ft) = ent.file_type() else { continue };
                let kind = Kind::of(ft);
                if !rules.is_empty() && rules.excluded(&child, kind) {
                    continue;
                }
                if ft.is_dir() {
                    if rules.is_empty() || rules.listed(&child, kind) {
                        *out.entry(child.clone()).or_default() |= MASK_FOUND_DIR;
                    }
                    let same_fs =
                        !self.cfg.one_file_system || ent.metadata().is_ok_and(|m| m.dev() == dev);
                    if same_fs {
                        stack.push(child);
                    }
                } else {
                    *out.entry(child).or_default() |= MASK_FOUND;
                }
            }
        }
    }

    /// False for a directory the rules walk but do not sync (its events are not the
    /// handler's); true for anything else, a path gone since included.
    fn listed_dir(&self, rel: &[u8], rules: &Rules) -> bool {
        match std::fs::symlink_metadata(abs_path(&self.cfg.src, rel)) {
            Ok(m) if m.is_dir() => rules.listed(rel, Kind::Dir),
            _ => true,
        }
    }

    /// have-recursive-sync: a directory handed over whole, with `%TYPE%` initialsync.
    pub(super) fn initial(&mut self, rel: &[u8], out: &mut Steps) -> io::Result<()> {
        let abs = abs_path(&self.cfg.src, rel);
        match self.cfg.mode {
            Mode::So => {
                let ev = SoEvent {
                    path: abs.into_os_string().into_vec(),
                    evmask: MASK_FOUND_DIR,
                    flags: EVIF_RECURSIVELY,
                    objtype_old: EOT_DIR,
                    objtype_new: EOT_DIR,
                };
                out.steps.push(self.so_call(vec![ev]));
            }
            Mode::Shell if self.cfg.args.is_none() => {
                let vars = Vars {
                    include_list: vec![abs.into_os_string()],
                    typ: "initialsync",
                    mask: Some(MASK_FOUND_DIR),
                    ..Vars::default()
                };
                // The original's initial words: `initialsync LABEL ABSDIR`.
                let words = ["initialsync", "%label%", "%INCLUDE-LIST%"];
                let saved =
                    std::mem::replace(&mut self.words, words.iter().map(OsString::from).collect());
                out.steps.push(self.exec(&vars));
                self.words = saved;
            }
            _ => {
                let vars = Vars {
                    include_list: vec![abs.into_os_string()],
                    typ: "initialsync",
                    mask: Some(MASK_FOUND_DIR),
                    ..Vars::default()
                };
                out.steps.push(self.exec(&vars));
            }
        }
        Ok(())
    }

    /// shell: one list file, `sync LABEL MASK RELPATH` (or `RELPATH`) per path.
    pub(super) fn shell(
        &mut self,
        paths: &BTreeMap<Vec<u8>, u32>,
        out: &mut Steps,
    ) -> io::Result<()> {
        let mut list = Vec::new();
        for (rel, mask) in paths {
            if !self.cfg.synclist_simplify {
                list.extend_from_slice(b"sync ");
                list.extend_from_slice(self.cfg.label.as_bytes());
                list.extend_from_slice(format!(" {mask} ").as_bytes());
            }
            list.extend_from_slice(rel);
            list.push(0);
        }
        let data = self.records(&list);
        let vars = Vars {
            include_path: Some(self.write_list("list", &data, &mut out.files)?),
            typ: "synclist",
            ..Vars::default()
        };
        out.steps.push(self.exec(&vars));
        Ok(())
    }

    /// direct: the relative paths as arguments (root as `.`), several runs if many.
    pub(super) fn direct(&mut self, paths: &BTreeMap<Vec<u8>, u32>, out: &mut Steps) {
        let mut run: Vec<OsString> = Vec::new();
        let mut bytes = 0;
        for rel in paths.keys() {
            let arg = if rel.is_empty() {
                OsString::from(".")
            } else {
                OsString::from_vec(rel.clone())
            };
            if !run.is_empty()
                && (run.len() >= DIRECT_MAX_PATHS || bytes + arg.len() > DIRECT_MAX_BYTES)
            {
                let vars = Vars {
                    include_list: std::mem::take(&mut run),
                    typ: "synclist",
                    ..Vars::default()
                };
                out.steps.push(self.exec(&vars));
                bytes = 0;
            }
            bytes += arg.len() + 1;
            run.push(arg);
        }
        let vars = Vars {
            include_list: run,
            typ: "synclist",
            ..Vars::default()
        };
        out.steps.push(self.exec(&vars));
    }

    /// simple: one run per path, `sync LABEL MASK ABSPATH`.
    pub(super) fn simple(&mut self, paths: &BTreeMap<Vec<u8>, u32>, out: &mut Steps) {
        for (rel, mask) in paths {
            let vars = Vars {
                include_list: vec![abs_path(&self.cfg.src, rel).into_os_string()],
                typ: "sync",
                mask: Some(*mask),
                ..Vars::default()
            };
            out.steps.push(self.exec(&vars));
        }
    }

    /// so: one `clsyncapi_sync` call with every path.
    pub(super) fn so_sync(&mut self, paths: &BTreeMap<Vec<u8>, u32>, out: &mut Steps) {
        let events = paths
            .iter()
            .map(|(rel, &mask)| {
                let now = std::fs::symlink_metadata(abs_path(&self.cfg.src, rel));
                let new = match now {
                    Ok(m) if m.is_dir() => EOT_DIR,
                    Ok(_) => EOT_FILE,
                    Err(_) => EOT_DOESNTEXIST,
                };
                let created = mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0;
                SoEvent {
                    path: rel.clone(),
                    evmask: mask,
                    flags: 0,
                    objtype_old: if created { EOT_DOESNTEXIST } else { new },
                    objtype_new: new,
                }
            })
            .collect();
        out.steps.push(self.so_call(events));
    }

    pub(super) fn so_call(&self, events: Vec<SoEvent>) -> Step {
        let so = self.so.clone().expect("so mode has its shared object");
        Step::Call(Box::new(move || {
            so.lock().map(|h| h.sync(&events)).unwrap_or(-1)
        }))
    }
}
