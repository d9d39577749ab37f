/*!
Import of the original clsync's configuration file (`~/.clsync.conf`,
`/etc/clsync/clsync.conf`) into our TOML profiles.

Why it exists: people moving from the C clsync have working configuration files, and
retyping them as profiles invites mistakes. This module reads such a file, block by block,
and turns each block into [`ProfileValues`]; [`to_profiles`] writes them out as profile
files, [`load_block`] gives one block (with its `config-block-inherits` chain applied) for
running directly from an old file.

Its parts, in the order a file goes through them: `reader.rs` reads the key file into
blocks and applies `config-block-inherits`, `options.rs` is the table of the original's
keys and how each value is converted (`sandbox_options.rs` for its sandbox options, shared
with the command line), `import.rs` writes the blocks out as profile files.
This file holds the converted block and the errors they share.

Why it is shaped this way (the original's behaviour is taken from its source, `main.c`
`gkf_parse()`/`parse_parameter()` and `stringex.c` `str_splitargs()`):

- The format is glib's key file, which the original reads with `g_key_file_get_value`
  (raw values, no escape processing): `[block]` lines, `key = value` lines (split at the
  first `=`, both sides trimmed), whole-line `#` comments and blank lines. Anything else
  is an error, as it is for glib. A repeated block continues the earlier one and a
  repeated key replaces the earlier value, as in glib. Trailing white space of a value
  (glib keeps it) is dropped, and so is a `\r` of CRLF files: in a path it is never meant.
- Keys are the original's long option names. The original silently skips keys it does not
  know (it only asks the file for the names it knows); we report them as errors with the
  line, because a misspelt key silently ignored is the bug such an import should catch.
  Keys the original knows but this rewrite has no setting for (`background`,
  `custom-signals`, the sandbox options that change nothing here…) are not errors: they
  are listed in [`LegacyBlock::ignored`] with a reason, and [`to_profiles`] writes them as
  comments. The original's sandbox keys that mean something here (`secure-splitting`,
  `seccomp-filter`, `detach-network`, `mountpoints`…) become the profile's `sandbox`,
  `sandbox-network`, `sandbox-read` and `sandbox-exec` through the table the command line
  uses too (`sandbox_options.rs`); `chroot`, which a profile cannot hold (it is for the
  command line), is an error that says so.
  A few names of older versions of the original are accepted as what they became
  (`rules-path` → `rules-file`, `dir-destination` → `destination-dir`, `syslog = 1` →
  `output = syslog`), so that the original's own example (tests/data/legacy) imports.
- Values are converted the way the original parses them, so that a file means the same:
  numbers with `strtol(…, 0)` (so `0x10` and `010` are numbers too; an empty value is 0),
  flags as numbers (`0` off, anything else on; glib has no bare keys), durations in
  seconds, `ignore-exitcode` as a comma list where `0` drops the codes before it,
  `mode`/`output`/`threading` checked against the original's lists (an empty `threading`
  or `output` is the original's default: `off`, `stderr`). Negative numbers, which the
  original wraps into huge unsigned values, are errors. An empty string value is kept as
  `""`: in the original it disables the option, and keeping it lets a block override its
  parent's value.
- `--` holds the sync-handler arguments as one string, split like the original splits it:
  on spaces and tabs, with `"…"` and `'…'` quoting (the quote characters are removed, a
  backslash before a `"` keeps the quote inside and stays itself). `---` (arguments for the
  initial sync) has no equivalent and is ignored.
- `%option%` substitutions are not expanded here: the `%…%` text is kept so that the
  profile's own substitution does it (with the effective value after inheritance, where
  the original used whatever value was set at that point of its parsing, which for
  `%label%` is often the default "nolabel"). `%watch_dir%` is written `%watch-dir%`, the
  name our substitution knows. A lone `%` (the original keeps it) becomes `%%`. The
  original's run-time macros (`%INCLUDE-LIST%`, `%RSYNC-ARGS%`…) are kept as they are, as
  the profile's substitution keeps them for the sync handler; the few it does not know
  (`%PID%`, `%EXCLUDE-LIST%`…) are kept too and noted by [`to_profiles`], because
  resolving such a profile fails until they are rewritten.
- `config-block-inherits` becomes `inherits`. [`load_block`] applies the chain itself
  (child's values win) and returns values without `inherits`; a missing parent or a cycle
  is an error (the original silently stops at a missing block, and loops on a cycle).
- Errors are one line, `FILE:LINE: message`, quoting the offending value.
*/

pub mod argv01;
mod import;
mod options;
mod reader;
pub(crate) mod sandbox_options;

pub use import::to_profiles;
pub use reader::{load_block, parse};

use crate::profile::ProfileValues;
use std::path::PathBuf;

/// The file name that means "no configuration file" (`--config-file=/NULL/`).
pub const NULL_CONFIG: &str = "/NULL/";

/// The configuration file the original reads when `-K` is given without `-H`:
/// `~/.clsync.conf` if it exists, else `/etc/clsync/clsync.conf` if it exists
/// (Debian's clsync@.service runs `clsync -K %i`).
#[must_use]
pub fn default_config_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".clsync.conf"));
    home.into_iter()
        .chain([PathBuf::from("/etc/clsync/clsync.conf")])
        .find(|p| p.exists())
}

/// One `[block]` of an original configuration file, converted.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyBlock {
    /// The block name, as written between the brackets.
    pub name: String,
    /// The file the block was read from (for messages and profile headers).
    pub file: PathBuf,
    /// The converted values; `inherits` holds `config-block-inherits` as written.
    pub values: ProfileValues,
    /// Keys of the original that have no setting here: (key, why it is not imported).
    pub ignored: Vec<(String, String)>,
}

/// Errors of reading an original configuration file. Each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", .file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: no block [{block}] (blocks: {})", .file.display(), block_list(.available))]
    NoSuchBlock {
        file: PathBuf,
        block: String,
        available: Vec<String>,
    },
}

pub(super) fn block_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests;
