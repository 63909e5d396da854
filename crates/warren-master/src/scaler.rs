//! The autoscaler's loop: every [`TICK`] it samples each app (workers by state, queue length,
//! the queue-wait histogram), keeps the windows the policy needs, asks
//! [`autoscale::decide`] for a target, shares the machine-wide budget with
//! [`autoscale::share`], and applies the result: a new target for the supervisor to fork up
//! to, and idle workers retired. The policy itself is pure; this is the only place that reads
//! the clock for it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::{Duration, Instant};

use crate::Running;
use crate::app::AppState;
use crate::autoscale::{self, Claim, Decision, Observed, Window};
use crate::stats::HistSnapshot;

/// How often apps are sampled and decided on.
pub const TICK: Duration = Duration::from_millis(100);

/// What the loop remembers of one app (one generation).
struct Track {
    /// Requests in the app (running + queued), one sample per tick, newest last.
    load: VecDeque<f64>,
    /// The queue-wait histogram at each tick, newest last.
    waits: VecDeque<HistSnapshot>,
    last_panic: Option<Duration>,
    /// Longest history kept, in ticks (the stable window).
    keep: usize,
}

impl Track {
    fn new(app: &AppState) -> Track {
        let keep = ticks(app.config.scale.stable_window).max(1);
        Track {
            load: VecDeque::with_capacity(keep + 1),
            waits: VecDeque::with_capacity(keep + 2),
            last_panic: None,
            keep,
        }
    }

    fn push(&mut self, load: f64, waits: HistSnapshot) {
        self.load.push_back(load);
        self.waits.push_back(waits);
        while self.load.len() > self.keep {
            self.load.pop_front();
        }
        // One more snapshot than samples: the window's start.
        while self.waits.len() > self.keep + 1 {
            self.waits.pop_front();
        }
    }

    fn window(&self, span: Duration) -> Window {
        let n = ticks(span).max(1);
        let loads = self.load.iter().rev().take(n);
        let count = loads.len().max(1);
        let load = loads.sum::<f64>() / count as f64;
        let wait_p99 = match (self.waits.back(), self.waits.iter().rev().nth(n)) {
            (Some(now), Some(then)) => now.since(then).quantile(0.99),
            (Some(now), None) => self
                .waits
                .front()
                .and_then(|first| now.since(first).quantile(0.99)),
            _ => None,
        };
        Window { load, wait_p99 }
    }
}

fn ticks(d: Duration) -> usize {
    (d.as_secs_f64() / TICK.as_secs_f64()).round() as usize
}

/// Runs until `stop` turns true: the apps are the generations `running` holds at each tick (a
/// reload replaces them), sized under `budget` workers in all when there is one.
pub(crate) async fn run(
    running: Arc<Mutex<Vec<Running>>>,
    budget: Option<usize>,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let mut tracks: HashMap<usize, Track> = HashMap::new();
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let apps = crate::serving(&running);
        let now = Instant::now();
        let since = now.saturating_duration_since(started);
        // Forget generations that are gone.
        tracks.retain(|k, _| apps.iter().any(|a| key(a) == *k));
        let mut decisions: Vec<(Decision, usize, usize)> = Vec::with_capacity(apps.len());
        for app in &apps {
            let (live, idle, starting, idle_for) = app.census(now);
            let queued = app.queue_len() as usize;
            let busy = live.saturating_sub(idle + starting);
            let track = tracks.entry(key(app)).or_insert_with(|| Track::new(app));
            track.push((busy + queued) as f64, app.stats.queue_wait.snapshot());
            let scale = &app.config.scale;
            let decision = if scale.is_fixed() {
                Decision {
                    target: scale.min,
                    retire: 0,
                    panic_now: false,
                    panicking: false,
                }
            } else {
                let observed = Observed {
                    now: since,
                    workers: live,
                    busy,
                    queued,
                    stable: track.window(scale.stable_window),
                    panic: track.window(scale.panic_window),
                    idle_for,
                    last_panic: track.last_panic,
                };
                let d = autoscale::decide(scale, &observed);
                if d.panic_now {
                    if track
                        .last_panic
                        .is_none_or(|t| since - t > scale.stable_window)
                    {
                        tracing::info!(
                            app = app.name(),
                            workers = live,
                            queued,
                            target = d.target,
                            "burst: scaling up (panic window)"
                        );
                    }
                    track.last_panic = Some(since);
                }
                d
            };
            decisions.push((decision, live, idle));
        }
        let allowed = match budget {
            None => decisions.iter().map(|(d, ..)| d.target).collect(),
            Some(budget) => {
                let claims: Vec<Claim> = apps
                    .iter()
                    .zip(&decisions)
                    .map(|(app, (d, live, idle))| Claim {
                        target: d.target,
                        min: app.config.scale.min,
                        has_work: live > idle || app.queue_len() > 0,
                    })
                    .collect();
                autoscale::share(budget, &claims)
            }
        };
        for ((app, (d, live, _)), allowed) in apps.iter().zip(&decisions).zip(allowed) {
            let target = d.target.min(allowed);
            if target != app.target() {
                tracing::debug!(app = app.name(), from = app.target(), to = target, "target");
                app.set_target(target);
            }
            // Cut by the budget: idle workers above the share go now, whatever their idle
            // time (a busy app elsewhere needs them).
            let over_budget = if allowed < d.target {
                live.saturating_sub(allowed)
            } else {
                0
            };
            let retire = d.retire.max(over_budget);
            if retire > 0 {
                app.retire_idle(retire);
            }
        }
    }
}

/// Identifies one generation of an app across ticks.
fn key(app: &Arc<AppState>) -> usize {
    Arc::as_ptr(app) as usize
}
