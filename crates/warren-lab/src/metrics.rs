//! warren's per-app metrics, picked out of a parsed `/metrics` scrape, and the arithmetic on
//! successive scrapes (counter and histogram deltas, with resets handled as Prometheus'
//! `rate()` does: a counter that went down restarted from zero).
//!
//! The series read (all labelled `app="NAME"`):
//! `warren_app_queue_length`, `warren_app_queue_wait_seconds_{bucket,sum,count}`,
//! `warren_app_workers{state="busy"|"idle"|"starting"}`, `warren_app_target_workers`,
//! `warren_app_spawns_total`, `warren_app_reaps_total`, `warren_app_responses_total{status}`,
//! `warren_app_cold_start_seconds_{bucket,sum,count}`, and the policy the app runs under:
//! `warren_app_min_workers`, `warren_app_max_workers`, `warren_app_target_queue_wait_seconds`
//! (autoscaled apps only) and `warren_app_generation` (it changes at each redeploy). Without an app name every app's series
//! are added up (gauges, counters and histogram buckets all add).
//!
//! **Invariant:** pure; no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::prom::{Bucket, Sample, histogram_quantile, parse_value};

/// Metric names, in one place.
pub mod names {
    /// Requests waiting in the app's queue (gauge).
    pub const QUEUE_LENGTH: &str = "warren_app_queue_length";
    /// Time dispatched requests waited in the queue (histogram, seconds).
    pub const QUEUE_WAIT: &str = "warren_app_queue_wait_seconds";
    /// Workers by `state` (gauge).
    pub const WORKERS: &str = "warren_app_workers";
    /// The worker count the autoscaler asks for (gauge).
    pub const TARGET_WORKERS: &str = "warren_app_target_workers";
    /// Workers forked (counter).
    pub const SPAWNS: &str = "warren_app_spawns_total";
    /// Workers retired (counter).
    pub const REAPS: &str = "warren_app_reaps_total";
    /// Responses by `status` (counter).
    pub const RESPONSES: &str = "warren_app_responses_total";
    /// Time from "need a worker" to "worker ready" (histogram, seconds).
    pub const COLD_START: &str = "warren_app_cold_start_seconds";
    /// Fewest workers, `scale.min` (gauge).
    pub const MIN_WORKERS: &str = "warren_app_min_workers";
    /// Most workers, `scale.max` (gauge).
    pub const MAX_WORKERS: &str = "warren_app_max_workers";
    /// The queue wait the autoscaler aims to stay under, seconds (gauge).
    pub const TARGET_QUEUE_WAIT: &str = "warren_app_target_queue_wait_seconds";
    /// The generation serving the app; a change is a redeploy (gauge).
    pub const GENERATION: &str = "warren_app_generation";
}

/// A classic Prometheus histogram as scraped: cumulative buckets, sum and count.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// Cumulative buckets sorted by bound, `+Inf` last when the exporter sent it.
    pub buckets: Vec<Bucket>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl Histogram {
    /// The observations made after `earlier` was scraped: bucket-wise differences. If any
    /// bucket or the count went down, the exporter restarted and `self` is returned whole.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| {
            earlier
                .buckets
                .iter()
                .find(|b| b.upper_bound == le)
                .map_or(0.0, |b| b.count)
        };
        let reset = self.count < earlier.count
            || self.buckets.iter().any(|b| b.count < before(b.upper_bound));
        if reset {
            return self.clone();
        }
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|b| Bucket {
                    upper_bound: b.upper_bound,
                    count: b.count - before(b.upper_bound),
                })
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// Adds `other`'s observations to these (bucket-wise; bounds missing on one side count 0).
    pub fn add(&mut self, other: &Histogram) {
        for b in &other.buckets {
            match self
                .buckets
                .iter_mut()
                .find(|s| s.upper_bound == b.upper_bound)
            {
                Some(s) => s.count += b.count,
                None => self.buckets.push(*b),
            }
        }
        self.buckets
            .sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
        self.sum += other.sum;
        self.count += other.count;
    }

    /// [`histogram_quantile`] of these buckets.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        histogram_quantile(q, &self.buckets)
    }
}

/// What one scrape says about one app (or about all apps together). `None` where the scrape
/// had no such series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AppMetrics {
    /// Requests waiting in the queue.
    pub queue_length: Option<f64>,
    /// Queue wait of dispatched requests since warren started.
    pub queue_wait: Option<Histogram>,
    /// Workers running a request.
    pub workers_busy: Option<f64>,
    /// Workers waiting for a request.
    pub workers_idle: Option<f64>,
    /// Workers forked but not yet ready.
    pub workers_starting: Option<f64>,
    /// Workers the autoscaler wants.
    pub target_workers: Option<f64>,
    /// Workers forked since warren started.
    pub spawns_total: Option<f64>,
    /// Workers retired since warren started.
    pub reaps_total: Option<f64>,
    /// Responses by status code since warren started.
    pub responses_total: BTreeMap<String, f64>,
    /// Cold-start durations since warren started.
    pub cold_start: Option<Histogram>,
    /// `scale.min` (or the fixed worker count).
    pub min_workers: Option<f64>,
    /// `scale.max` (or the fixed worker count).
    pub max_workers: Option<f64>,
    /// The autoscaler's target queue wait, seconds (autoscaled apps only).
    pub target_queue_wait: Option<f64>,
    /// The generation serving the app (all apps: the sum, which still changes at a reload).
    pub generation: Option<f64>,
}

impl AppMetrics {
    /// Picks the app's series out of a scrape. `app: None` adds up every app.
    pub fn from_samples(samples: &[Sample], app: Option<&str>) -> AppMetrics {
        let mine = |s: &&Sample| match app {
            None => true,
            Some(a) => s.label("app") == Some(a),
        };
        let sum_of = |name: &str, state: Option<&str>| {
            let mut found = None;
            for s in samples.iter().filter(mine) {
                if s.name == name
                    && (state.is_none() || s.label("state") == state)
                    && s.value.is_finite()
                {
                    *found.get_or_insert(0.0) += s.value;
                }
            }
            found
        };
        let mut responses_total = BTreeMap::new();
        for s in samples.iter().filter(mine) {
            if s.name == names::RESPONSES && s.value.is_finite() {
                let status = s.label("status").unwrap_or("unknown").to_string();
                *responses_total.entry(status).or_insert(0.0) += s.value;
            }
        }
        let mine: Vec<Sample> = samples.iter().filter(mine).cloned().collect();
        AppMetrics {
            queue_length: sum_of(names::QUEUE_LENGTH, None),
            queue_wait: histogram(&mine, names::QUEUE_WAIT),
            workers_busy: sum_of(names::WORKERS, Some("busy")),
            workers_idle: sum_of(names::WORKERS, Some("idle")),
            workers_starting: sum_of(names::WORKERS, Some("starting")),
            target_workers: sum_of(names::TARGET_WORKERS, None),
            spawns_total: sum_of(names::SPAWNS, None),
            reaps_total: sum_of(names::REAPS, None),
            responses_total,
            cold_start: histogram(&mine, names::COLD_START),
            min_workers: sum_of(names::MIN_WORKERS, None),
            max_workers: sum_of(names::MAX_WORKERS, None),
            target_queue_wait: target_wait(&mine),
            generation: sum_of(names::GENERATION, None),
        }
    }

    /// busy + idle + starting, counting only the states the scrape had; `None` if it had none.
    pub fn workers(&self) -> Option<f64> {
        let states = [self.workers_busy, self.workers_idle, self.workers_starting];
        states.iter().flatten().copied().reduce(|a, b| a + b)
    }

    /// True when the scrape had none of warren's per-app series for this selection.
    pub fn is_empty(&self) -> bool {
        *self == AppMetrics::default()
    }
}

/// The target queue wait of the selection: one app's, or across several the smallest (the
/// strictest target, which is the one a shared chart line can honestly show).
fn target_wait(samples: &[Sample]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.name == names::TARGET_QUEUE_WAIT && s.value.is_finite())
        .map(|s| s.value)
        .reduce(f64::min)
}

/// The values of the `app` label found on warren's per-app series, to name them when the
/// requested app is not there.
pub fn apps_seen(samples: &[Sample]) -> BTreeSet<String> {
    samples
        .iter()
        .filter(|s| s.name.starts_with("warren_app_"))
        .filter_map(|s| s.label("app"))
        .map(str::to_string)
        .collect()
}

/// The histogram `base` (`base_bucket`, `base_sum`, `base_count`) from `samples`, series that
/// differ only in labels other than `le` added up; `None` if there is no bucket.
fn histogram(samples: &[Sample], base: &str) -> Option<Histogram> {
    let bucket_name = format!("{base}_bucket");
    let sum_name = format!("{base}_sum");
    let count_name = format!("{base}_count");
    let mut h = Histogram::default();
    let mut any = false;
    for s in samples {
        if !s.value.is_finite() {
            continue;
        }
        if s.name == bucket_name {
            let Some(le) = s.label("le").and_then(parse_value) else {
                continue;
            };
            if le.is_nan() {
                continue;
            }
            any = true;
            h.add(&Histogram {
                buckets: vec![Bucket {
                    upper_bound: le,
                    count: s.value,
                }],
                sum: 0.0,
                count: 0.0,
            });
        } else if s.name == sum_name {
            h.sum += s.value;
        } else if s.name == count_name {
            h.count += s.value;
        }
    }
    any.then_some(h)
}

/// Increase of a counter between two scrapes; a counter that went down restarted from zero,
/// so its whole current value is the increase.
pub fn counter_delta(later: f64, earlier: f64) -> f64 {
    if later >= earlier {
        later - earlier
    } else {
        later
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom::parse;

    const SCRAPE: &str = r#"
# HELP warren_app_queue_length requests waiting
# TYPE warren_app_queue_length gauge
warren_app_queue_length{app="hello"} 7
warren_app_queue_length{app="other"} 100
# TYPE warren_app_queue_wait_seconds histogram
warren_app_queue_wait_seconds_bucket{app="hello",le="0.01"} 50
warren_app_queue_wait_seconds_bucket{app="hello",le="0.1"} 90
warren_app_queue_wait_seconds_bucket{app="hello",le="+Inf"} 100
warren_app_queue_wait_seconds_sum{app="hello"} 3.5
warren_app_queue_wait_seconds_count{app="hello"} 100
warren_app_queue_wait_seconds_bucket{app="other",le="0.01"} 0
warren_app_queue_wait_seconds_bucket{app="other",le="0.1"} 0
warren_app_queue_wait_seconds_bucket{app="other",le="+Inf"} 100
warren_app_queue_wait_seconds_count{app="other"} 100
warren_app_workers{app="hello",state="busy"} 3
warren_app_workers{app="hello",state="idle"} 1
warren_app_workers{app="hello",state="starting"} 2
warren_app_workers{app="other",state="busy"} 9
warren_app_target_workers{app="hello"} 6
warren_app_spawns_total{app="hello"} 10
warren_app_reaps_total{app="hello"} 4
warren_app_responses_total{app="hello",status="200"} 95
warren_app_responses_total{app="hello",status="503"} 5
warren_app_min_workers{app="hello"} 1
warren_app_max_workers{app="hello"} 8
warren_app_target_queue_wait_seconds{app="hello"} 0.05
warren_app_target_queue_wait_seconds{app="other"} 0.2
warren_app_generation{app="hello"} 3
warren_front_connections 12
"#;

    #[test]
    fn picks_one_app() {
        let m = AppMetrics::from_samples(&parse(SCRAPE), Some("hello"));
        assert_eq!(m.queue_length, Some(7.0));
        assert_eq!(m.workers(), Some(6.0));
        assert_eq!(m.target_workers, Some(6.0));
        assert_eq!(m.spawns_total, Some(10.0));
        assert_eq!(m.reaps_total, Some(4.0));
        assert_eq!(m.responses_total.get("200"), Some(&95.0));
        assert_eq!(m.responses_total.get("503"), Some(&5.0));
        assert_eq!(m.cold_start, None);
        assert_eq!(
            (
                m.min_workers,
                m.max_workers,
                m.target_queue_wait,
                m.generation
            ),
            (Some(1.0), Some(8.0), Some(0.05), Some(3.0))
        );
        let qw = m.queue_wait.expect("queue wait histogram");
        assert_eq!(qw.count, 100.0);
        assert_eq!(qw.sum, 3.5);
        assert_eq!(qw.buckets.len(), 3);
        // rank 50 is the top of the first bucket.
        assert_eq!(qw.quantile(0.5), Some(0.01));
    }

    #[test]
    fn no_app_adds_every_app() {
        let m = AppMetrics::from_samples(&parse(SCRAPE), None);
        assert_eq!(m.queue_length, Some(107.0));
        assert_eq!(m.workers(), Some(15.0));
        // The strictest target of the apps added up.
        assert_eq!(m.target_queue_wait, Some(0.05));
        let qw = m.queue_wait.expect("queue wait histogram");
        assert_eq!(qw.count, 200.0);
        assert_eq!(qw.buckets[2].count, 200.0);
        assert_eq!(qw.buckets[0].count, 50.0);
    }

    #[test]
    fn unknown_app_is_empty_and_apps_are_named() {
        let samples = parse(SCRAPE);
        assert!(AppMetrics::from_samples(&samples, Some("nope")).is_empty());
        let seen: Vec<_> = apps_seen(&samples).into_iter().collect();
        assert_eq!(seen, ["hello", "other"]);
    }

    fn hist(pairs: &[(f64, f64)]) -> Histogram {
        Histogram {
            buckets: pairs
                .iter()
                .map(|&(upper_bound, count)| Bucket { upper_bound, count })
                .collect(),
            sum: 0.0,
            count: pairs.last().map_or(0.0, |p| p.1),
        }
    }

    #[test]
    fn histogram_delta_and_reset() {
        let inf = f64::INFINITY;
        let a = hist(&[(0.1, 10.0), (1.0, 20.0), (inf, 20.0)]);
        let b = hist(&[(0.1, 10.0), (1.0, 28.0), (inf, 30.0)]);
        let d = b.since(&a);
        assert_eq!(d, hist(&[(0.1, 0.0), (1.0, 8.0), (inf, 10.0)]));
        // 10 new observations: 8 in (0.1, 1], 2 above 1.
        assert_eq!(d.quantile(0.5), Some(0.1 + 0.9 * 5.0 / 8.0));
        assert_eq!(d.quantile(0.99), Some(1.0));
        // Restarted exporter: the later scrape is all new.
        let restarted = hist(&[(0.1, 1.0), (1.0, 2.0), (inf, 2.0)]);
        assert_eq!(restarted.since(&b), restarted);
        // No new observations: no quantile.
        assert_eq!(b.since(&b).quantile(0.5), None);
    }

    #[test]
    fn histogram_add() {
        let inf = f64::INFINITY;
        let mut a = hist(&[(0.1, 1.0), (inf, 2.0)]);
        a.add(&hist(&[(0.1, 3.0), (1.0, 4.0), (inf, 5.0)]));
        assert_eq!(a, hist(&[(0.1, 4.0), (1.0, 4.0), (inf, 7.0)]));
    }

    #[test]
    fn counters() {
        assert_eq!(counter_delta(15.0, 10.0), 5.0);
        assert_eq!(counter_delta(3.0, 10.0), 3.0);
    }
}
