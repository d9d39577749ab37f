/*!
The writer of an import: one profile file per block of the original's file, headed by
comments naming where it came from, the keys that were not imported and why, and the
original's placeholders that profiles do not know; block names made fit to be profile
names. The last stage of `clsync import`.
*/

use super::LegacyBlock;
use crate::profile::{self, ProfileValues};
use std::collections::BTreeSet;

/// One profile per block: (file name like `default.toml`, TOML text). The text starts
/// with comments naming the source and listing the keys that were not imported, and
/// parses back (with [`profile::parse_values`]) to the block's values, except that
/// block names unfit for profile names are made fit (in `inherits` too) and a block that
/// neither turns the sandbox on nor inherits gets `sandbox = false` (as it ran).
#[must_use]
pub fn to_profiles(blocks: &[LegacyBlock]) -> Vec<(String, String)> {
    blocks
        .iter()
        .map(|b| {
            let name = profile_name(&b.name);
            let mut values = b.values.clone();
            if let Some(parent) = values.inherits.as_deref() {
                values.inherits = Some(profile_name(parent));
            }
            let mut text = format!("# Imported from {} block [{}].\n", b.file.display(), b.name);
            if !b.ignored.is_empty() {
                text.push_str("# Not imported (no equivalent in this clsync):\n");
                for (key, reason) in &b.ignored {
                    text.push_str(&format!("#   {key}: {reason}\n"));
                }
            }
            // The original runs a block unconfined unless it asks for its sandbox, and a
            // profile confines by default: a block that says nothing (nor inherits it)
            // stays unconfined, so the imported profile does what the block did.
            if values.sandbox.is_none() && values.inherits.is_none() {
                values.sandbox = Some(crate::sandbox::Mode::Off);
                text.push_str("# sandbox = false: the block ran unconfined; remove the line to confine the worker (docs/security.md).\n");
            }
            let macros = runtime_macros(&values);
            if !macros.is_empty() {
                text.push_str(&format!(
                    "# Note: placeholders of the original that profiles do not know: {}\n",
                    macros.into_iter().collect::<Vec<_>>().join(" ")
                ));
            }
            text.push('\n');
            text.push_str(&values.to_toml());
            (format!("{name}.toml"), text)
        })
        .collect()
}

/// A profile name for a block name: characters other than ASCII letters, digits, `.`,
/// `_` and `-` become `_`, and a leading `-` or `.` becomes `_` (profile names must not
/// start with `-`, and dot-files are skipped).
pub(super) fn profile_name(block: &str) -> String {
    let mut name: String = block
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(['-', '.']) {
        name.replace_range(..1, "_");
    }
    name
}

/// The `%NAME%` references in the string values that the profile's substitution does
/// not know (such as the original's `%PID%`).
fn runtime_macros(values: &ProfileValues) -> BTreeSet<String> {
    let table: toml::Table = toml::from_str(&values.to_toml()).unwrap_or_default();
    let mut out = BTreeSet::new();
    let mut strings: Vec<&str> = Vec::new();
    for v in table.values() {
        match v {
            toml::Value::String(s) => strings.push(s),
            toml::Value::Array(a) => strings.extend(a.iter().filter_map(|e| e.as_str())),
            _ => {}
        }
    }
    for s in strings {
        let mut rest = s;
        while let Some(i) = rest.find('%') {
            let after = &rest[i + 1..];
            let Some(j) = after.find('%') else { break };
            let name = &after[..j];
            if !name.is_empty()
                && name != "label"
                && !profile::keys().contains(&name)
                && !profile::RUNTIME_PLACEHOLDERS.contains(&name)
            {
                out.insert(format!("%{name}%"));
            }
            rest = &after[j + 1..];
        }
    }
    out
}
