/*!
`%…%` substitution and templates: a profile that uses `%label%` without a fixed label
of its own is a template and needs an instance label (`PROFILE@LABEL`, `PROFILE-LABEL`
or `--label`); every label is checked to be one safe path component; `%option%` takes
the option's effective value, with cycle detection. The last stage of a profile: a name
in, a [`Resolved`] instance out, ready to be turned into a running configuration.
*/

use super::load::{dir_of, inherited};
use super::schema::{DURATION_KEYS, KEYS, NO_SUBST_KEYS};
use super::{ProfileError, ProfileValues, Profiles, Resolved};

/// How deep `%option%` substitutions may nest before we give up.
const MAX_SUBST_DEPTH: usize = 16;

/// One piece of a string with `%…%` substitutions.
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits `s` into text and `%name%` references (`%%` is a literal `%`).
fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        let after = &rest[i + 1..];
        let Some(j) = after.find('%') else {
            return Err(format!("unmatched '%' in {s:?} (write %% for a literal %)"));
        };
        if j == 0 {
            out.push(Piece::Text("%"));
        } else {
            out.push(Piece::Var(&after[..j]));
        }
        rest = &after[j + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

fn uses_label(s: &str) -> bool {
    pieces(s).is_ok_and(|p| p.iter().any(|p| matches!(p, Piece::Var("label"))))
}

/// The strings of a table value that substitution applies to.
fn strings_of(v: &toml::Value) -> Vec<&str> {
    match v {
        toml::Value::String(s) => vec![s.as_str()],
        toml::Value::Array(a) => a.iter().filter_map(|e| e.as_str()).collect(),
        _ => Vec::new(),
    }
}

fn substitutable(key: &str) -> bool {
    !DURATION_KEYS.contains(&key) && !NO_SUBST_KEYS.contains(&key)
}

/// Whether effective values make a template: `%label%` is used somewhere and there is no
/// fixed label (a `label` option without `%label%` in it) for it to mean.
fn is_template(table: &toml::Table) -> bool {
    let uses = table
        .iter()
        .filter(|(k, _)| substitutable(k))
        .any(|(_, v)| strings_of(v).into_iter().any(uses_label));
    let fixed_label = table
        .get("label")
        .and_then(|v| v.as_str())
        .is_some_and(|l| !uses_label(l));
    uses && !fixed_label
}

struct Subst<'a> {
    table: &'a toml::Table,
    /// The instance label.
    label: Option<&'a str>,
}

/// The original's placeholders that each sync-handler run fills in (kept as they are by
/// substitution; `legacy` leaves them unescaped on import).
pub(crate) const RUNTIME_PLACEHOLDERS: &[&str] = &[
    "INCLUDE-LIST",
    "INCLUDE-LIST-PATH",
    "EXCLUDE-LIST-PATH",
    "RSYNC-ARGS",
    "EVENT-MASK",
    "TYPE",
];

impl Subst<'_> {
    fn expand(&self, s: &str, stack: &mut Vec<String>) -> Result<String, String> {
        let mut out = String::new();
        for piece in pieces(s)? {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => out.push_str(&self.value_of(name, s, stack)?),
            }
        }
        Ok(out)
    }

    fn value_of(&self, name: &str, text: &str, stack: &mut Vec<String>) -> Result<String, String> {
        if RUNTIME_PLACEHOLDERS.contains(&name) {
            return Ok(format!("%{name}%"));
        }
        if name == "label" {
            if let Some(l) = self.label {
                return Ok(l.to_string());
            }
        }
        if stack.iter().any(|s| s == name) || stack.len() >= MAX_SUBST_DEPTH {
            let mut chain: Vec<String> = stack.iter().map(|s| format!("%{s}%")).collect();
            chain.push(format!("%{name}%"));
            return Err(format!("substitution cycle: {}", chain.join(" -> ")));
        }
        let Some(v) = self.table.get(name) else {
            return Err(if KEYS.contains(&name) {
                format!("%{name}% in {text:?}: option {name} is not set")
            } else {
                format!("unknown substitution %{name}% in {text:?}")
            });
        };
        let value = match v {
            toml::Value::String(d) if DURATION_KEYS.contains(&name) => {
                let d = crate::config::parse_duration(d)?;
                format!("{}", d.as_secs_f64())
            }
            toml::Value::String(s) if NO_SUBST_KEYS.contains(&name) => s.clone(),
            toml::Value::String(s) => {
                stack.push(name.to_string());
                let r = self.expand(s, stack);
                stack.pop();
                r?
            }
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            _ => {
                return Err(format!(
                    "%{name}% in {text:?}: option {name} is a list, which cannot be substituted"
                ))
            }
        };
        Ok(value)
    }
}

/// Does every substitution in `values` for instance label `label`.
fn substitute(values: &ProfileValues, label: Option<&str>) -> Result<ProfileValues, String> {
    let table = values.to_table();
    let subst = Subst {
        table: &table,
        label,
    };
    let mut out = toml::Table::new();
    for (k, v) in &table {
        let nv = if !substitutable(k) {
            v.clone()
        } else {
            match v {
                toml::Value::String(s) => {
                    toml::Value::String(subst.expand(s, &mut vec![k.clone()])?)
                }
                toml::Value::Array(a) => toml::Value::Array(
                    a.iter()
                        .map(|e| match e {
                            toml::Value::String(s) => {
                                Ok(toml::Value::String(subst.expand(s, &mut vec![k.clone()])?))
                            }
                            other => Ok(other.clone()),
                        })
                        .collect::<Result<_, String>>()?,
                ),
                other => other.clone(),
            }
        };
        out.insert(k.clone(), nv);
    }
    ProfileValues::from_table(out)
}

/// Checks a label: it ends up in paths (`%label%` in watch-dir, destination-dir,
/// lists-dir…), in hook arguments and in log lines, so it must be one safe path
/// component: not empty, not `.` or `..` (a `%label%` path would fall back to the parent,
/// and `--delete` would then wipe a sibling's mirror), no `/`, no `..`, no NUL or other
/// control character (newline, ESC), no leading `-` (an option to a hook). The one check
/// for every way a label comes in: `PROFILE@LABEL`, `PROFILE-LABEL`, `--label`/`-l`, a
/// profile's or INI block's `label`, and the manager's control socket.
pub fn check_label(label: &str) -> Result<(), ProfileError> {
    let reason = if label.is_empty() {
        Some("empty")
    } else if label == "." || label == ".." {
        Some("'.' and '..' name a directory itself or its parent, not a place of its own")
    } else if label.contains('/') {
        Some("contains '/'")
    } else if label.contains("..") {
        Some("contains '..'")
    } else if label.contains('\0') {
        Some("contains NUL")
    } else if label.chars().any(char::is_control) {
        Some("contains a control character")
    } else if label.starts_with('-') {
        Some("starts with '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ProfileError::BadLabel {
            label: label.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Whether profile `name` (with inheritance) is a template, i.e. needs a label.
pub fn is_template_profile(profiles: &Profiles, name: &str) -> Result<bool, ProfileError> {
    Ok(is_template(&inherited(profiles, name)?.to_table()))
}

/// Splits an instance name into profile and label: `PROFILE@LABEL`, an existing
/// `PROFILE`, or `TEMPLATE-LABEL` (the longest template name wins).
pub(crate) fn split_instance(
    profiles: &Profiles,
    name: &str,
) -> Result<(String, Option<String>), ProfileError> {
    if let Some((p, l)) = name.split_once('@') {
        return Ok((p.to_string(), Some(l.to_string())));
    }
    if profiles.contains_key(name) {
        return Ok((name.to_string(), None));
    }
    // The longest profile name that fits and is a template wins; a broken one that fits
    // better is reported (it may well be the one meant), one that fits less is skipped.
    let mut best: Option<&str> = None;
    for p in profiles.keys() {
        let fits = name
            .strip_prefix(p.as_str())
            .is_some_and(|rest| rest.starts_with('-'));
        if !fits || best.is_some_and(|b| p.len() <= b.len()) {
            continue;
        }
        match is_template_profile(profiles, p) {
            Ok(true) => best = Some(p),
            Ok(false) => {}
            Err(e) if e.is_broken() => best = Some(p),
            Err(e) => return Err(e),
        }
    }
    match best {
        Some(p) => Ok((p.to_string(), Some(name[p.len() + 1..].to_string()))),
        None => Err(ProfileError::NoSuchProfile {
            name: name.to_string(),
            dir: dir_of(profiles),
        }),
    }
}

/// Resolves `name` (`PROFILE`, `PROFILE@LABEL` or `PROFILE-LABEL`), with `label` from a
/// `--label` flag if given: inheritance applied, substitutions done, `label` set.
pub fn resolve(
    profiles: &Profiles,
    name: &str,
    label: Option<&str>,
) -> Result<Resolved, ProfileError> {
    let (profile, name_label) = split_instance(profiles, name)?;
    let label = match (name_label, label) {
        (Some(a), Some(b)) if a != b => {
            return Err(ProfileError::TwoLabels {
                profile,
                first: a,
                second: b.to_string(),
            })
        }
        (Some(a), _) => Some(a),
        (None, b) => b.map(str::to_string),
    };
    if let Some(l) = &label {
        check_label(l)?;
    }
    let values = inherited(profiles, &profile)?;
    let template = is_template(&values.to_table());
    match (&label, template) {
        (Some(l), false) => {
            return Err(ProfileError::NotTemplate {
                profile,
                label: l.clone(),
            })
        }
        (None, true) => return Err(ProfileError::NeedsLabel { profile }),
        _ => {}
    }
    let file = profiles[&profile].file.clone();
    let mut values =
        substitute(&values, label.as_deref()).map_err(|message| ProfileError::Substitution {
            file: file.clone(),
            message,
        })?;
    if values.label.is_none() {
        values.label.clone_from(&label);
    }
    // The profile's own `label` (fixed, or derived from the instance label) is a label
    // like any other.
    if let Some(l) = &values.label {
        check_label(l).map_err(|e| ProfileError::Substitution {
            file,
            message: format!("label: {e}"),
        })?;
    }
    let instance = match &label {
        Some(l) => format!("{profile}@{l}"),
        None => profile.clone(),
    };
    Ok(Resolved {
        instance,
        profile,
        label,
        values,
    })
}
