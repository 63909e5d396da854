//! An app's environment variables: `[apps.NAME] env` and `env_files`.
//!
//! An app starts from a cleared environment (see `warren_sandbox::zygote_command` for the
//! minimum warren sets); what the config declares is added on top. Values are often secrets,
//! so they are never shown: [`Env`]'s `Debug` prints only the keys, and no error of the
//! env-file parser ([`parse_env_file`]) quotes a value, only the line number and the reason.
//! The files are read when the config is loaded (at start and on every reload), by warren,
//! so they may be readable by the operator alone.

use std::collections::BTreeMap;
use std::fmt;

/// Variables an app gets on top of warren's minimum, by name. Its `Debug` shows the keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// Sets `key` (already checked by [`check_key`]), replacing an earlier value.
    pub(crate) fn insert(&mut self, key: String, value: String) {
        self.0.insert(key, value);
    }

    /// The variables in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The names only (safe to show).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys only: a `{:?}` of the config must never print a secret.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Whether `key` may be set by an app's config: an environment variable name
/// (`[A-Za-z_][A-Za-z0-9_]*`) that warren does not own. The reason names the key (never a
/// value).
pub fn check_key(key: &str) -> Result<(), String> {
    let mut bytes = key.bytes();
    let well_formed = matches!(bytes.next(), Some(b) if b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric());
    if !well_formed {
        return Err(format!(
            "`{key}` is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
        ));
    }
    let reason = match key {
        "PYTHONHOME" | "PYTHONPATH" => Some(
            "warren sets the interpreter's home and the app's import path itself (`path`, `venv`)",
        ),
        k if k.starts_with("WARREN_") => Some("WARREN_* names are warren's own"),
        // The zygote starts privileged and confines itself after exec: the dynamic loader
        // reads these before any confinement exists.
        k if k.starts_with("LD_") => {
            Some("read by the dynamic loader before the sandbox is in place")
        }
        _ => None,
    };
    match reason {
        Some(why) => Err(format!("`{key}` cannot be set: {why}")),
        None => Ok(()),
    }
}

/// Parses an env file: `KEY=VALUE` lines, `#` comments and blank lines, a tolerated `export `
/// prefix, and a value optionally in matching single or double quotes (taken literally, no
/// escapes). An unquoted value is the rest of the line, trimmed (a `#` in it is part of it).
/// An error is `(line number, reason)`; the reason never contains the value.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let Some((key, value)) = line.split_once('=') else {
            return Err((n, "expected KEY=VALUE".into()));
        };
        let key = key.trim_end();
        check_key(key).map_err(|reason| (n, reason))?;
        let value = value.trim();
        let value = match value.as_bytes().first() {
            Some(&q @ (b'"' | b'\'')) => {
                if value.len() < 2 || value.as_bytes()[value.len() - 1] != q {
                    return Err((
                        n,
                        format!("{key}: the value's opening quote is not closed at the line's end"),
                    ));
                }
                &value[1..value.len() - 1]
            }
            _ => value,
        };
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text`: the pairs, or an error `(line, reason)` that must contain `want` and
    /// must not contain the secret marker `s3cr3t`.
    fn check(text: &str, expected: Result<&[(&str, &str)], (usize, &str)>) {
        let got = parse_env_file(text);
        match (got, expected) {
            (Ok(pairs), Ok(want)) => {
                let want: Vec<(String, String)> = want
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                assert_eq!(pairs, want, "{text:?}");
            }
            (Err((line, reason)), Err((want_line, want))) => {
                assert_eq!(line, want_line, "{text:?}: {reason}");
                assert!(reason.contains(want), "{text:?}: {reason:?} lacks {want:?}");
                assert!(
                    !reason.contains("s3cr3t"),
                    "{text:?}: {reason:?} shows the value"
                );
            }
            (got, want) => panic!("{text:?}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn env_files_parse() {
        check("", Ok(&[]));
        check("# comment\n\n  \nA=1\n", Ok(&[("A", "1")]));
        check("A=1\nB=two words \n", Ok(&[("A", "1"), ("B", "two words")]));
        check("export A=1\n", Ok(&[("A", "1")]));
        check("export\tA=1\n", Ok(&[("A", "1")]));
        check("exported=1\n", Ok(&[("exported", "1")]));
        check("A = 1\n", Ok(&[("A", "1")]));
        check(
            "A=\"x y\"\nB='$z \"q\"'\n",
            Ok(&[("A", "x y"), ("B", "$z \"q\"")]),
        );
        check("A=\n", Ok(&[("A", "")]));
        check("A=\"\"\n", Ok(&[("A", "")]));
        check("A=a=b#c\n", Ok(&[("A", "a=b#c")]));
        check("A=1\r\nB=2\r\n", Ok(&[("A", "1"), ("B", "2")]));
        check("A=1\nA=2\n", Ok(&[("A", "1"), ("A", "2")]));
    }

    #[test]
    fn env_file_errors_name_the_line_but_not_the_value() {
        check("A=1\ns3cr3t\n", Err((2, "expected KEY=VALUE")));
        check(
            "\n\n1A=s3cr3t\n",
            Err((3, "`1A` is not an environment variable name")),
        );
        check("A B=s3cr3t\n", Err((1, "not an environment variable name")));
        check(
            "A=\"s3cr3t\n",
            Err((1, "A: the value's opening quote is not closed")),
        );
        check("A='s3cr3t\"\n", Err((1, "not closed")));
        check("A=\"\n", Err((1, "not closed")));
        check(
            "PYTHONPATH=s3cr3t\n",
            Err((1, "`PYTHONPATH` cannot be set")),
        );
        check(
            "export WARREN_X=s3cr3t\n",
            Err((1, "WARREN_* names are warren's own")),
        );
    }

    #[test]
    fn keys_are_names_warren_does_not_own() {
        let check = |key: &str, want: Option<&str>| match (check_key(key), want) {
            (Ok(()), None) => {}
            (Err(reason), Some(want)) => {
                assert!(reason.contains(want), "{key}: {reason:?} lacks {want:?}")
            }
            (got, want) => panic!("{key}: got {got:?}, expected {want:?}"),
        };
        check("A", None);
        check("_a1", None);
        check("DATABASE_URL", None);
        check("LANG", None);
        check("PATH", None);
        check("PYTHONUNBUFFERED", None);
        check("", Some("is not an environment variable name"));
        check("9LIVES", Some("is not an environment variable name"));
        check("A-B", Some("is not an environment variable name"));
        check("É", Some("is not an environment variable name"));
        check("PYTHONHOME", Some("`PYTHONHOME` cannot be set"));
        check("PYTHONPATH", Some("import path"));
        check("WARREN_LOG", Some("`WARREN_LOG` cannot be set: WARREN_*"));
        check("WARREN_", Some("warren's own"));
        check("LD_PRELOAD", Some("dynamic loader"));
    }

    #[test]
    fn debug_shows_keys_only() {
        let mut env = Env::default();
        env.insert("DB_PASSWORD".into(), "s3cr3t".into());
        env.insert("A".into(), "visible?".into());
        let shown = format!("{env:?} {env:#?}");
        assert!(
            shown.contains("DB_PASSWORD") && shown.contains("\"A\""),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("visible?"),
            "{shown}"
        );
    }
}
