//! Per-app counters and histograms, written on the request path with relaxed atomics and read
//! by the autoscaler and `/metrics`. No lock is taken to count.
//!
//! **Architecture Invariant:** an [`AppStats`] belongs to the app, not to one generation: a
//! redeploy hands the running generation's `Arc<AppStats>` to the new one (`Master::reload`),
//! so that its counters never go backwards while the app exists; only an app removed and added
//! again starts from zero. What describes one generation (its queue length now, its workers)
//! lives in its `AppState`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the histogram buckets, in seconds (Prometheus `le`); one more bucket
/// counts everything above the last.
pub const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram of durations with fixed buckets, counted with relaxed atomics.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

/// A copy of a [`Histogram`]'s counts (per bucket, not cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistSnapshot {
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum_us: u64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    pub fn snapshot(&self) -> HistSnapshot {
        HistSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Relaxed)),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

impl HistSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &HistSnapshot) -> HistSnapshot {
        HistSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// The `q` quantile (0..=1), interpolated linearly within its bucket as Prometheus'
    /// `histogram_quantile` does; `None` when nothing was observed. Above the last bound it
    /// answers the last bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 && (seen + c) as f64 >= rank {
                let Some(&hi) = BUCKETS.get(i) else {
                    return Some(Duration::from_secs_f64(BUCKETS[BUCKETS.len() - 1]));
                };
                let lo = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let within = ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
                return Some(Duration::from_secs_f64(lo + (hi - lo) * within));
            }
            seen += c;
        }
        Some(Duration::from_secs_f64(BUCKETS[BUCKETS.len() - 1]))
    }
}

/// Status codes counted per app (100..=599).
const STATUSES: usize = 500;

#[derive(Debug)]
pub struct AppStats {
    /// Responses completed by a worker.
    pub served: AtomicU64,
    /// Workers forked, and workers that exited.
    pub spawned: AtomicU64,
    pub exited: AtomicU64,
    /// Workers retired between requests (`max_requests`, `max_worker_rss_mb`).
    pub recycled: AtomicU64,
    /// Workers killed for running a request past `request_timeout_s`.
    pub timed_out: AtomicU64,
    /// Idle workers retired by the autoscaler.
    pub reaped: AtomicU64,
    /// Queue wait of every dispatched request (0 for those that found an idle worker).
    pub queue_wait: Histogram,
    /// Requests that found no idle worker: arrival to dispatch.
    pub cold_start: Histogram,
    /// Requests that arrived when the app had no worker at all: arrival to dispatch.
    pub from_zero: Histogram,
    /// Dispatch (a worker given the request) to the response head (or the failure instead).
    pub request_duration: Histogram,
    /// Responses by status code.
    responses: [AtomicU64; STATUSES],
    /// The last reading of the app's cgroup (none without one).
    pub cgroup: CgroupReading,
}

/// What the app's cgroups said (read every few seconds by the master). Each generation has a
/// cgroup of its own, whose counters start at zero: the counters here are the sums of what
/// every generation's group counted, so they go on across redeploys.
#[derive(Debug, Default)]
pub struct CgroupReading {
    pub has_reading: AtomicBool,
    /// The serving generation's memory, as last read.
    pub memory_bytes: AtomicU64,
    pub oom_kills: AtomicU64,
    /// CFS periods in which the quota ran out, and the time throttled.
    pub nr_throttled: AtomicU64,
    pub throttled_us: AtomicU64,
}

impl CgroupReading {
    /// Adds what a generation's group counted since its reading `last` (none: since it was
    /// made), and keeps its memory when `serving` (a draining generation's is not the app's).
    pub fn record(
        &self,
        last: Option<&warren_sandbox::cgroup::Usage>,
        now: &warren_sandbox::cgroup::Usage,
        serving: bool,
    ) {
        let since =
            |f: fn(&warren_sandbox::cgroup::Usage) -> u64| f(now).saturating_sub(last.map_or(0, f));
        if serving {
            self.memory_bytes.store(now.memory_bytes, Relaxed);
        }
        self.oom_kills.fetch_add(since(|u| u.oom_kills), Relaxed);
        self.nr_throttled
            .fetch_add(since(|u| u.nr_throttled), Relaxed);
        self.throttled_us
            .fetch_add(since(|u| u.throttled_us), Relaxed);
        self.has_reading.store(true, Relaxed);
    }
}

impl Default for AppStats {
    fn default() -> Self {
        AppStats {
            served: AtomicU64::new(0),
            spawned: AtomicU64::new(0),
            exited: AtomicU64::new(0),
            recycled: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            reaped: AtomicU64::new(0),
            queue_wait: Histogram::default(),
            cold_start: Histogram::default(),
            from_zero: Histogram::default(),
            request_duration: Histogram::default(),
            responses: std::array::from_fn(|_| AtomicU64::new(0)),
            cgroup: CgroupReading::default(),
        }
    }
}

impl AppStats {
    /// Counts a response sent for this app.
    pub fn record_status(&self, status: u16) {
        if let Some(c) = (status as usize)
            .checked_sub(100)
            .and_then(|i| self.responses.get(i))
        {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Responses sent so far, by status code (only codes seen).
    pub fn responses(&self) -> Vec<(u16, u64)> {
        self.responses
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Relaxed);
                (n > 0).then_some((i as u16 + 100, n))
            })
            .collect()
    }

    /// A request was given a worker after waiting `waited` in the queue (its count and sum
    /// are the histogram's).
    pub fn record_dispatch(&self, waited: Duration) {
        self.queue_wait.observe(waited);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for _ in 0..100 {
            h.observe(Duration::from_millis(30)); // bucket (0.025, 0.05]
        }
        let q = h.snapshot().quantile(0.5).unwrap().as_secs_f64();
        assert!((q - 0.0375).abs() < 1e-9, "{q}");
        let q = h.snapshot().quantile(0.99).unwrap().as_secs_f64();
        assert!(q > 0.049 && q <= 0.05, "{q}");
        let before = h.snapshot();
        h.observe(Duration::from_secs(100));
        let d = h.snapshot().since(&before);
        assert_eq!(d.count(), 1);
        assert_eq!(d.quantile(0.99), Some(Duration::from_secs(30)));
    }

    #[test]
    fn statuses_are_counted_by_code() {
        let s = AppStats::default();
        s.record_status(200);
        s.record_status(200);
        s.record_status(503);
        s.record_status(42);
        assert_eq!(s.responses(), [(200, 2), (503, 1)]);
    }
}
