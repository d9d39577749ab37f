/*!
The reader of the original's key file (glib's format as the original reads it: `[block]`,
`key = value`, `#` comments, a repeated block continuing the earlier one) and of its
`config-block-inherits` chains. The first stage of an import: text in, blocks of
converted values out, each error one `FILE:LINE: message` line. Each `key = value` is
converted by [`super::options`].
*/

use super::options::{apply, Applied};
use super::{block_list, LegacyBlock, LegacyError, NULL_CONFIG};
use crate::profile::ProfileValues;
use std::path::Path;

/// A block as read, with where things are (for errors of [`load_block`]).
pub(super) struct RawBlock {
    pub(super) block: LegacyBlock,
    /// The line of `config-block-inherits`, if set.
    inherits_line: Option<usize>,
}

/// Parses the text of an original configuration file; `file` is for messages.
pub fn parse(file: &Path, text: &str) -> Result<Vec<LegacyBlock>, LegacyError> {
    Ok(parse_raw(file, text)?
        .into_iter()
        .map(|r| r.block)
        .collect())
}

pub(super) fn parse_raw(file: &Path, text: &str) -> Result<Vec<RawBlock>, LegacyError> {
    let err = |line: usize, message: String| LegacyError::Syntax {
        file: file.to_path_buf(),
        line,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut blocks: Vec<RawBlock> = Vec::new();
    let mut current: Option<usize> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err(line_no, format!("invalid block line {line:?}")));
            };
            if name.is_empty() || name.contains(['[', ']']) || name.chars().any(char::is_control) {
                return Err(err(line_no, format!("invalid block name {name:?}")));
            }
            current = Some(match blocks.iter().position(|b| b.block.name == name) {
                Some(pos) => pos,
                None => {
                    blocks.push(RawBlock {
                        block: LegacyBlock {
                            name: name.to_string(),
                            file: file.to_path_buf(),
                            values: ProfileValues::default(),
                            ignored: Vec::new(),
                        },
                        inherits_line: None,
                    });
                    blocks.len() - 1
                }
            });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(
                line_no,
                format!("{line:?} is not a `key = value` line, a [block] or a # comment"),
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(err(line_no, format!("no key before '=' in {line:?}")));
        }
        let Some(cur) = current else {
            return Err(err(
                line_no,
                format!("{key} = {value:?} is before the first [block]"),
            ));
        };
        let raw_block = &mut blocks[cur];
        let block = &mut raw_block.block;
        match apply(&mut block.values, key, value) {
            Ok(Applied::Set) => {
                block.ignored.retain(|(k, _)| k != key);
                if key == "config-block-inherits" {
                    raw_block.inherits_line = Some(line_no);
                }
            }
            Ok(Applied::Ignored(reason)) => {
                block.ignored.retain(|(k, _)| k != key);
                block.ignored.push((key.to_string(), reason.to_string()));
            }
            Err(message) => return Err(err(line_no, message)),
        }
    }
    Ok(blocks)
}

/// Reads `file` and returns the values of `block` with its `config-block-inherits` chain
/// applied (the child's values win); `inherits` is cleared since the chain is applied.
/// The file name `/NULL/` means no file: default (empty) values.
pub fn load_block(file: &Path, block: &str) -> Result<ProfileValues, LegacyError> {
    if file == Path::new(NULL_CONFIG) {
        return Ok(ProfileValues::default());
    }
    let text = std::fs::read_to_string(file).map_err(|source| LegacyError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let blocks = parse_raw(file, &text)?;
    resolve_block(file, &blocks, block)
}

pub(super) fn resolve_block(
    file: &Path,
    blocks: &[RawBlock],
    name: &str,
) -> Result<ProfileValues, LegacyError> {
    let find = |n: &str| blocks.iter().find(|b| b.block.name == n);
    let start = find(name).ok_or_else(|| LegacyError::NoSuchBlock {
        file: file.to_path_buf(),
        block: name.to_string(),
        available: blocks.iter().map(|b| b.block.name.clone()).collect(),
    })?;
    let mut values = start.block.values.clone();
    let mut seen = vec![start.block.name.as_str()];
    let mut cur = start;
    while let Some(parent) = cur.block.values.inherits.as_deref() {
        let line = cur.inherits_line.unwrap_or(0);
        let err = |message: String| LegacyError::Syntax {
            file: file.to_path_buf(),
            line,
            message,
        };
        if seen.contains(&parent) {
            let chain: Vec<String> = seen
                .iter()
                .chain([&parent])
                .map(|b| format!("[{b}]"))
                .collect();
            return Err(err(format!(
                "config-block-inherits = {parent}: inheritance cycle {}",
                chain.join(" -> ")
            )));
        }
        let p = find(parent).ok_or_else(|| {
            let names: Vec<String> = blocks.iter().map(|b| b.block.name.clone()).collect();
            err(format!(
                "config-block-inherits = {parent}: no such block (blocks: {})",
                block_list(&names)
            ))
        })?;
        values = values.merge(p.block.values.clone());
        seen.push(p.block.name.as_str());
        cur = p;
    }
    values.inherits = None;
    Ok(values)
}
