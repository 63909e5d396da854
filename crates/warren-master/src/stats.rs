//! Per-app counters, written on the request path with relaxed atomics and read by whoever
//! reports them (logs now; the autoscaler and `/metrics` later). No lock is taken to count.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct AppStats {
    /// Requests waiting in the queue now.
    pub queued: AtomicU64,
    /// Requests a worker is handling now.
    pub in_flight: AtomicU64,
    /// Responses completed by a worker.
    pub served: AtomicU64,
    /// Requests refused or failed by warren (503, 502, 413) rather than answered by the app.
    pub rejected: AtomicU64,
    /// Dispatched requests, and their total and largest wait in the queue.
    pub dispatched: AtomicU64,
    pub queue_wait_us_sum: AtomicU64,
    pub queue_wait_us_max: AtomicU64,
    /// Workers forked, and workers that exited.
    pub spawned: AtomicU64,
    pub exited: AtomicU64,
    /// Workers retired between requests (`max_requests`, `max_worker_rss_mb`).
    pub recycled: AtomicU64,
    /// Workers killed for running a request past `request_timeout_s`.
    pub timed_out: AtomicU64,
}

/// A consistent-enough copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub queued: u64,
    pub in_flight: u64,
    pub served: u64,
    pub rejected: u64,
    pub dispatched: u64,
    pub queue_wait_us_sum: u64,
    pub queue_wait_us_max: u64,
    pub spawned: u64,
    pub exited: u64,
    pub recycled: u64,
    pub timed_out: u64,
}

impl AppStats {
    pub fn record_dispatch(&self, waited: Duration) {
        let us = waited.as_micros().min(u64::MAX as u128) as u64;
        self.dispatched.fetch_add(1, Relaxed);
        if us > 0 {
            self.queue_wait_us_sum.fetch_add(us, Relaxed);
            self.queue_wait_us_max.fetch_max(us, Relaxed);
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            queued: self.queued.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            served: self.served.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            dispatched: self.dispatched.load(Relaxed),
            queue_wait_us_sum: self.queue_wait_us_sum.load(Relaxed),
            queue_wait_us_max: self.queue_wait_us_max.load(Relaxed),
            spawned: self.spawned.load(Relaxed),
            exited: self.exited.load(Relaxed),
            recycled: self.recycled.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
        }
    }
}
