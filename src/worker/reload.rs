/*!
Reload on HUP: the configuration and rules are read again, what can change without a
restart (rules, delays, rsync policy, log level) is applied to the running worker and the
tree is rescanned. Kept apart because
it is the one place that replaces parts of a live pipeline.
*/

use super::*;

impl Worker {
    /// SIGHUP: parses the command line again (re-reading a profile or configuration
    /// file), applies what can change at run time and reloads the rules; a setting that
    /// needs a restart is named in the log and left as it was. A configuration with an
    /// error changes nothing.
    pub(super) fn reload(&mut self) {
        let mut new = match &self.cfg.reload_args {
            Some(args) => match crate::cli::parse(args.clone()) {
                Ok(c) => c,
                Err(e) => {
                    error!(
                        "signal HUP: keeping the old configuration: {}",
                        e.to_string().trim()
                    );
                    return;
                }
            },
            None => self.cfg.clone(),
        };
        let kept = self.cfg.keep_sandboxed_paths(&mut new);
        let rules = match new.load_rules() {
            Ok(r) => r,
            Err(e) => {
                error!("signal HUP: keeping the old rules and configuration: {e}");
                return;
            }
        };
        self.status.set("rehashing");
        let mut restart = self.cfg.restart_needed_for(&new);
        restart.extend(kept);
        if !restart.is_empty() {
            warn!(
                "signal HUP: {} changed; that takes a restart (kept as it was)",
                restart.join(", ")
            );
        }
        let old = self.cfg.clone();
        self.cfg.reload_from(new);
        crate::strict::set_named(self.cfg.strict_modes);
        if self.cfg.mode == Mode::Simple {
            self.cfg.delays = old.delays;
        }
        for t in &mut self.targets {
            t.batcher.set_delays(self.cfg.delays);
            t.handler.set_inclimit(self.cfg.rsync_inclimit);
        }
        self.runner
            .set_policy(self.cfg.ignore_exitcodes.clone(), self.cfg.timeout_sync);
        if self.cfg.modification_signature != old.modification_signature {
            self.signatures = (self.cfg.modification_signature != 0)
                .then(|| crate::signature::Signatures::new(self.cfg.modification_signature));
        }
        crate::logger::set_level(self.cfg.debug, self.cfg.quiet);
        info!("signal HUP: configuration and rules reloaded; rescanning the tree");
        // The rescan lists what the new rules exclude.
        self.excludes.clear();
        if let Some(l) = &self.pair {
            self.excludes.extend(l.excluded.iter().cloned());
        }
        let mut changes = Changes::default();
        self.watcher.set_rules(rules, &mut changes);
        self.apply(changes);
        if self.ready {
            self.status.set("running");
        }
    }
}
