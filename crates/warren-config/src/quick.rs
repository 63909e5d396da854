//! The config of `warren run MODULE:CALLABLE`: one app of one directory, built in memory from
//! the command line and validated by [`parse`](crate::parse) like a file, so that it gets the
//! same defaults (confinement included) and every refusal is the loader's. The config stands
//! for a file inside the app's directory ([`FILE_NAME`], never written), so that relative
//! paths and the state directory (`.warren/`) resolve there; its messages name the flag a
//! value came from (`--venv: ...`) instead of a file and a key.

use std::path::PathBuf;

use crate::{CATCH_ALL, Config, ConfigError, parse};

/// The name of the file `warren run`'s config stands for, in the app's directory. Nothing is
/// read from or written to it.
pub const FILE_NAME: &str = "warren-run.toml";

/// What `warren run` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuickStart {
    /// The app's directory (`--dir`), relative to the working directory.
    pub dir: PathBuf,
    /// `MODULE:CALLABLE`.
    pub entry: String,
    /// The virtualenv (`--venv`), relative to the working directory (not to `dir`: it is
    /// typed in a shell).
    pub venv: Option<PathBuf>,
    /// `--listen`.
    pub listen: String,
    /// `--workers`: a fixed count.
    pub workers: usize,
}

impl QuickStart {
    /// The app's name: the directory's own name (`.` resolved), each character an app name
    /// may not have replaced by `-`; `app` when nothing is left.
    pub fn name(&self) -> String {
        let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let base = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        clean_name(&base)
    }

    /// The file the config stands for: [`FILE_NAME`] in the app's directory.
    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The config as TOML: the app takes every host (`hosts = ["*"]`), as gunicorn does.
    pub fn text(&self) -> Result<String, ConfigError> {
        let mut app = toml::Table::new();
        app.insert("path".into(), ".".into());
        app.insert("entry".into(), self.entry.as_str().into());
        app.insert("hosts".into(), toml::Value::Array(vec![CATCH_ALL.into()]));
        app.insert(
            "workers".into(),
            toml::Value::Integer(i64::try_from(self.workers).unwrap_or(i64::MAX)),
        );
        if let Some(venv) = &self.venv {
            // Absolute: relative to the working directory, where the flag was typed.
            let venv = std::path::absolute(venv).unwrap_or_else(|_| venv.clone());
            let venv = venv.to_str().ok_or_else(|| ConfigError::Flag {
                flag: "--venv".into(),
                reason: format!("{} is not a UTF-8 path", venv.display()),
            })?;
            app.insert("venv".into(), venv.into());
        }
        let mut apps = toml::Table::new();
        apps.insert(self.name(), app.into());
        let mut server = toml::Table::new();
        server.insert("listen".into(), self.listen.as_str().into());
        let mut root = toml::Table::new();
        root.insert("server".into(), server.into());
        root.insert("apps".into(), apps.into());
        Ok(toml::to_string(&root).expect("a table of strings and numbers serializes"))
    }

    /// Builds and validates the config. A refusal of the app is in `refused`, as a file's
    /// would be, with the flag named (see [`QuickStart::reword`]).
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = parse(&self.file(), &self.text()?).map_err(|e| match e {
            ConfigError::Invalid { key, reason, .. } if self.flag(&key).is_some() => {
                ConfigError::Flag {
                    flag: self.flag(&key).unwrap_or_default().to_owned(),
                    reason,
                }
            }
            other => other,
        })?;
        self.reword(&mut config);
        Ok(config)
    }

    /// The flag (or argument) a key of its config came from.
    pub fn flag(&self, key: &str) -> Option<&'static str> {
        let name = self.name();
        let of_app = key
            .strip_prefix("apps.")
            .and_then(|k| k.strip_prefix(name.as_str()))
            .and_then(|k| k.strip_prefix('.'));
        match (key, of_app) {
            ("server.listen", _) => Some("--listen"),
            // The state directory is `.warren/` in the app's directory.
            ("server.state_dir", _) | (_, Some("path")) => Some("--dir"),
            (_, Some("entry")) => Some("MODULE:CALLABLE"),
            (_, Some("venv")) => Some("--venv"),
            (_, Some("workers")) => Some("--workers"),
            _ => None,
        }
    }

    /// Names the flag in each refusal of `config` that is about one (as `--venv: REASON`),
    /// also those made after [`QuickStart::load`] (the embedded Python's check of the venv).
    pub fn reword(&self, config: &mut Config) {
        for r in &mut config.refused {
            if let Some(flag) = self.flag(&r.key) {
                r.error = ConfigError::Flag {
                    flag: flag.to_owned(),
                    reason: r.reason.clone(),
                }
                .to_string();
                r.key = flag.to_owned();
            }
        }
    }
}

/// `name` with each character an app name may not have replaced by `-` (ends trimmed).
fn clean_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    match cleaned.trim_matches('-') {
        "" => "app".to_owned(),
        n => n.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn quick(dir: &Path, entry: &str, venv: Option<&Path>) -> QuickStart {
        QuickStart {
            dir: dir.to_owned(),
            entry: entry.into(),
            venv: venv.map(Path::to_owned),
            listen: "127.0.0.1:0".into(),
            workers: 2,
        }
    }

    #[test]
    fn names_are_cleaned() {
        for (dir, name) in [
            ("bottle", "bottle"),
            ("my app.v2", "my-app-v2"),
            ("é", "app"),
            ("a_b-c", "a_b-c"),
        ] {
            assert_eq!(clean_name(dir), name, "{dir}");
        }
    }

    #[test]
    fn one_app_of_the_directory_on_every_host() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("my.site");
        std::fs::create_dir(&app).unwrap();
        std::fs::write(app.join("app.py"), "app = None\n").unwrap();
        let config = quick(&app, "app:app", None).load().unwrap();
        assert!(config.refused.is_empty(), "{:?}", config.refused);
        let a = &config.apps[0];
        assert_eq!(a.name, "my-site");
        assert_eq!(a.hosts, [CATCH_ALL]);
        assert_eq!((a.workers, a.scale.is_fixed()), (2, true));
        assert!(a.sandbox.enabled, "confined by default");
        assert_eq!(a.path, app.canonicalize().unwrap());
        assert_eq!(
            config.server.state_dir,
            app.canonicalize().unwrap().join(".warren")
        );
    }

    #[test]
    fn refusals_name_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "app = None\n").unwrap();
        let refusal = |q: QuickStart| {
            let config = q.load().unwrap();
            assert!(config.apps.is_empty());
            config.refused[0].error.clone()
        };
        let nowhere = dir.path().join("nowhere");
        let e = refusal(quick(dir.path(), "app:app", Some(&nowhere)));
        assert!(e.starts_with("--venv: "), "{e}");
        assert!(e.contains("nowhere"), "{e}");
        let e = refusal(quick(dir.path(), "nomod:app", None));
        assert!(
            e.starts_with("MODULE:CALLABLE: module `nomod` not found"),
            "{e}"
        );
        let e = refusal(QuickStart {
            workers: 0,
            ..quick(dir.path(), "app:app", None)
        });
        assert!(e.starts_with("--workers: "), "{e}");
        let e = quick(&dir.path().join("gone"), "app:app", None)
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--dir: "), "{e}");
        let e = QuickStart {
            listen: "nope".into(),
            ..quick(dir.path(), "app:app", None)
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--listen: `nope`"), "{e}");
    }
}
