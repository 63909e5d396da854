//! Which app a request is for: by `Host`, then by static URL prefix within the app.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use warren_config::Config;

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

    pub fn app_for(&self, host: &str) -> Option<usize> {
        self.hosts.get(host).copied()
    }

    /// The app of the config that `host` would go to, had its config not been refused.
    pub fn refused_app(&self, host: &str) -> Option<&str> {
        self.refused.get(host).map(String::as_str)
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
