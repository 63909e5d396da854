//! Changing the apps while they serve: SIGHUP and `server.touch_reload` re-read the config and
//! redeploy every app; touching one of an app's `touch_reload` files redeploys that app. In
//! both cases apps added to the config start, apps removed from it drain and stop, and an app
//! whose config changed is redeployed. A redeploy starts the new generation (zygote, workers)
//! next to the old one and moves requests to it once a worker is ready; the old one finishes
//! what it holds and stops. A config that does not load is refused with its error and the
//! running one stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::signal::unix::Signal;
use tokio::time::Duration;

use warren_config::Config;
use warren_front::Front;

/// How often the touch-reload files are looked at.
const TOUCH_POLL: Duration = Duration::from_secs(1);

/// Modification times of the touch-reload files of a config.
struct Stamps {
    server: Option<(PathBuf, Option<SystemTime>)>,
    apps: Vec<(String, PathBuf, Option<SystemTime>)>,
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Stamps {
    fn of(config: &Config) -> Stamps {
        Stamps {
            server: config
                .server
                .touch_reload
                .as_ref()
                .map(|p| (p.clone(), mtime(p))),
            apps: config
                .apps
                .iter()
                .flat_map(|a| {
                    a.touch_reload
                        .iter()
                        .map(|p| (a.name.clone(), p.clone(), mtime(p)))
                })
                .collect(),
        }
    }

    /// What was touched since the last look: `Some(None)` for the server's file (reload all),
    /// `Some(Some(apps))` for apps' files.
    fn touched(&mut self) -> Option<Option<Vec<String>>> {
        if let Some((path, seen)) = &mut self.server {
            let now = mtime(path);
            if now != *seen {
                *seen = now;
                return Some(None);
            }
        }
        let mut apps = Vec::new();
        for (app, path, seen) in &mut self.apps {
            let now = mtime(path);
            if now != *seen {
                *seen = now;
                if !apps.contains(app) {
                    apps.push(app.clone());
                }
            }
        }
        (!apps.is_empty()).then_some(Some(apps))
    }
}

/// An app the new config refuses on its own (its virtualenv gone, a bad value) but that runs
/// now goes on as it runs: its running config takes the refused one's place, and the refusal
/// is logged. One that does not run is logged as refused; its hosts answer 503.
fn keep_running(config: &mut Config, running: &[warren_config::App]) {
    let refused = std::mem::take(&mut config.refused);
    for r in refused {
        let taken = |app: &warren_config::App| {
            config
                .apps
                .iter()
                .any(|other| other.hosts.iter().any(|h| app.hosts.contains(h)))
        };
        match running.iter().find(|a| a.name == r.name) {
            Some(app) if !taken(app) => {
                tracing::error!(
                    app = %r.name,
                    error = %r.error,
                    "the app's new config is refused; the running version keeps serving"
                );
                config.apps.push(app.clone());
            }
            _ => {
                tracing::error!(
                    app = %r.name,
                    hosts = ?r.hosts,
                    error = %r.error,
                    "app refused: it does not run (its hosts answer 503)"
                );
                config.refused.push(r);
            }
        }
    }
    config.apps.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Waits for SIGHUP or a touched file and applies the config of `source` (the file again, or
/// `warren run`'s flags), one reload at a time, until the task is dropped.
pub async fn run(front: Arc<Front>, source: crate::Source, config: Config, mut hup: Signal) {
    let mut stamps = Stamps::of(&config);
    // The running server settings: a reload does not re-apply them.
    let server = config.server.clone();
    // The apps as they run: one the new file refuses keeps its running version.
    let mut running = config.apps;
    let mut poll = tokio::time::interval(TOUCH_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let redeploy = tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config and redeploying every app");
                None
            }
            _ = poll.tick() => match stamps.touched() {
                None => continue,
                Some(None) => {
                    tracing::info!("server.touch_reload touched: reloading the config and redeploying every app");
                    None
                }
                Some(Some(apps)) => {
                    tracing::info!(apps = ?apps, "touch_reload touched: redeploying");
                    Some(apps)
                }
            },
        };
        let mut config = match source.load() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reload refused: the config does not load; the running one stays");
                continue;
            }
        };
        keep_running(&mut config, &running);
        crate::log_warnings(&config);
        if let Err(e) = crate::record_identities(&mut config) {
            tracing::error!(error = %format!("{e:#}"), "reload refused: the running config stays");
            continue;
        }
        if config.server != server {
            tracing::warn!("[server] settings changed; they take effect at the next restart");
        }
        let report = front.reload(&config, redeploy.as_deref()).await;
        running = config.apps.clone();
        tracing::info!(
            added = ?report.added,
            redeployed = ?report.redeployed,
            removed = ?report.removed,
            failed = ?report.failed,
            "reload done"
        );
        // A file touched during the reload still counts next time: what was seen before the
        // reload is kept for every file that is still watched. The server's file is the
        // running one's.
        let old = std::mem::replace(&mut stamps, Stamps::of(&config));
        stamps.server = old.server;
        for (app, path, seen) in &mut stamps.apps {
            if let Some((_, _, before)) = old.apps.iter().find(|(a, p, _)| a == app && p == path) {
                *seen = *before;
            }
        }
    }
}
