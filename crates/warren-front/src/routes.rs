//! Which app a request is for: by `Host`, then by static URL prefix within the app.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use warren_config::{CATCH_ALL, Config};

/// A static directory of an app, ready to serve.
pub struct StaticRoute {
    pub prefix: String,
    /// Absolute and canonical (the config resolved it): opened afresh for each request, with
    /// no symlink followed (`static_files`), so a directory swapped for a symlink since is
    /// refused rather than followed.
    pub dir: Arc<Path>,
}

pub struct Routes {
    /// Lower-case host name to app index.
    hosts: HashMap<String, usize>,
    /// Per app, longest prefix first.
    statics: Vec<Vec<StaticRoute>>,
    /// Hosts of the apps the config refused, to their app's name: a 503, not a 404.
    refused: HashMap<String, String>,
}

impl Routes {
    pub fn new(config: &Config) -> Routes {
        let mut hosts = HashMap::new();
        let mut statics = Vec::with_capacity(config.apps.len());
        for (i, app) in config.apps.iter().enumerate() {
            for h in &app.hosts {
                hosts.insert(h.clone(), i);
            }
            statics.push(
                app.static_dirs
                    .iter()
                    .map(|s| StaticRoute {
                        prefix: s.prefix.clone(),
                        dir: Arc::from(s.dir.as_path()),
                    })
                    .collect(),
            );
        }
        let refused = config
            .refused
            .iter()
            .flat_map(|r| r.hosts.iter().map(|h| (h.clone(), r.name.clone())))
            .filter(|(h, _)| !hosts.contains_key(h))
            .collect();
        Routes {
            hosts,
            statics,
            refused,
        }
    }

    /// The app `host` goes to: the one that lists it, else (unless it is a refused app's) the
    /// catch-all app (`hosts = ["*"]`), if any.
    pub fn app_for(&self, host: &str) -> Option<usize> {
        match self.hosts.get(host) {
            Some(&i) => Some(i),
            None if self.refused.contains_key(host) => None,
            None => self.hosts.get(CATCH_ALL).copied(),
        }
    }

    /// The app of the config that `host` would go to, had its config not been refused (asked
    /// when [`Routes::app_for`] has none).
    pub fn refused_app(&self, host: &str) -> Option<&str> {
        self.refused
            .get(host)
            .or_else(|| self.refused.get(CATCH_ALL))
            .map(String::as_str)
    }

    /// The static route whose prefix `path` falls under, if any (`/static` matches
    /// `/static` and `/static/...`, not `/staticfoo`).
    pub fn static_dir(&self, app: usize, path: &str) -> Option<&StaticRoute> {
        self.statics[app].iter().find(|s| {
            path.strip_prefix(s.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(hosts: &[(&str, usize)], refused: &[(&str, &str)]) -> Routes {
        Routes {
            hosts: hosts.iter().map(|&(h, i)| (h.to_owned(), i)).collect(),
            statics: Vec::new(),
            refused: refused
                .iter()
                .map(|&(h, a)| (h.to_owned(), a.to_owned()))
                .collect(),
        }
    }

    #[test]
    fn the_catch_all_app_takes_the_hosts_no_other_app_has() {
        let r = routes(&[("a.test", 0), (CATCH_ALL, 1)], &[("b.test", "b")]);
        assert_eq!(r.app_for("a.test"), Some(0));
        assert_eq!(r.app_for("other.example"), Some(1));
        // A refused app's host stays its own: a 503, not the catch-all's answer.
        assert_eq!(r.app_for("b.test"), None);
        assert_eq!(r.refused_app("b.test"), Some("b"));

        let r = routes(&[("a.test", 0)], &[(CATCH_ALL, "all")]);
        assert_eq!(r.app_for("other.example"), None);
        assert_eq!(r.refused_app("other.example"), Some("all"));
        let r = routes(&[("a.test", 0)], &[]);
        assert_eq!((r.app_for("x"), r.refused_app("x")), (None, None));
    }
}
