//! The autoscaler's policy: how many workers an app should have, as a pure function of what
//! was observed. No clock reads, no I/O: time comes in [`Observed::now`], and the loop in
//! `scaler.rs` gathers the observations and applies the [`Decision`].
//!
//! The signal is the load an app carries: the average number of its requests in the system
//! (running on a worker or waiting in its queue) over a window, and the queue wait of the
//! requests dispatched in it. By Little's law the average number in the system is the arrival
//! rate times the time each spends, so `ceil(load / UTILIZATION)` workers keep the queue short;
//! a queue wait over `target_queue_wait` adds a worker for every request still waiting.
//!
//! Two windows, as Knative has: the *stable* window (60 s by default) sizes the app in normal
//! times, so steady load does not flap; the *panic* window (6 s) sees a burst within a second or
//! two. When the panic window asks for `panic_threshold` times the workers running (or requests
//! wait longer than the target), the app panics: it scales up to what the panic window asks
//! and does not scale down until a whole stable window has passed without panic.
//!
//! Scaling down waits until the workers are less than 60% busy (and then aims for 80%), so a
//! load that hovers at a boundary does not flap. It only ever retires *idle* workers, and only those idle for `idle_timeout` (a
//! busy worker is never killed to shrink the pool): the decision says how many of the longest
//! idle to retire. With `min = 0` an idle app goes to zero; a request that finds no worker
//! brings one back (the loop raises the target at once, without waiting for a tick).
//!
//! [`share`] applies a machine-wide budget: every app with work gets a worker, the rest is
//! shared by water-filling towards each app's target, and an app over its share gives back its
//! idle workers at once so that a busy app can have them.

use std::time::Duration;

use warren_config::Scale;

/// The share of its workers an app should keep busy: the headroom that absorbs jitter.
pub const UTILIZATION: f64 = 0.8;
/// An app scales down only when its workers are less busy than this: the band between the two
/// keeps a load that hovers at a boundary from flapping the worker count.
pub const SCALE_DOWN_UTILIZATION: f64 = 0.6;

/// What one window saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    /// Average requests in the app (running or queued) over the window.
    pub load: f64,
    /// 99th percentile queue wait of the requests dispatched in the window, if any were.
    pub wait_p99: Option<Duration>,
}

/// What the loop observed of one app.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Time since the loop started.
    pub now: Duration,
    /// Live workers: running a request, idle, or starting.
    pub workers: usize,
    /// Workers running a request now.
    pub busy: usize,
    /// Requests waiting in the queue now.
    pub queued: usize,
    pub stable: Window,
    pub panic: Window,
    /// How long each idle worker has been idle, longest first.
    pub idle_for: Vec<Duration>,
    /// When the panic condition last held (from the previous decisions), if ever.
    pub last_panic: Option<Duration>,
}

/// What the app should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// How many workers the app should have; the supervisor forks up to it.
    pub target: usize,
    /// How many of the longest-idle workers to retire now.
    pub retire: usize,
    /// Whether the panic condition holds now (the loop keeps it as `last_panic`).
    pub panic_now: bool,
    /// Whether the app is in panic mode (within a stable window of the last panic).
    pub panicking: bool,
}

/// Workers that `w`'s load asks for.
fn wanted(w: &Window, policy: &Scale, busy: usize, queued: usize) -> usize {
    let mut n = (w.load / UTILIZATION).ceil() as usize;
    if w.wait_p99.is_some_and(|p| p > policy.target_queue_wait) {
        // Requests wait too long: one more worker for each still waiting.
        n = n.max(busy + queued);
    }
    n
}

/// The policy: see the module documentation.
pub fn decide(policy: &Scale, o: &Observed) -> Decision {
    let stable = wanted(&o.stable, policy, o.busy, o.queued);
    let panic = wanted(&o.panic, policy, o.busy, o.queued);
    let waiting_too_long = o.queued > 0
        && o.panic
            .wait_p99
            .is_some_and(|p| p > policy.target_queue_wait);
    let panic_now = panic as f64 >= policy.panic_threshold * o.workers.max(1) as f64
        && panic > o.workers
        || waiting_too_long;
    let last_panic = if panic_now { Some(o.now) } else { o.last_panic };
    let panicking = last_panic.is_some_and(|t| o.now.saturating_sub(t) < policy.stable_window);
    let mut target = if panicking {
        // Never down while panicking.
        panic.max(stable).max(o.workers)
    } else if stable < o.workers && o.stable.load >= SCALE_DOWN_UTILIZATION * o.workers as f64 {
        // Busy enough that one worker fewer would push it over the target: hold.
        o.workers
    } else {
        stable
    };
    // Whatever runs or waits now keeps a worker; a request waiting at zero brings one back.
    target = target.max(o.busy).max(usize::from(o.queued > 0));
    target = target.clamp(policy.min, policy.max);
    let retire = if panicking || o.workers <= target {
        0
    } else {
        let expired = o
            .idle_for
            .iter()
            .filter(|d| **d >= policy.idle_timeout)
            .count();
        expired.min(o.workers - target)
    };
    Decision {
        target,
        retire,
        panic_now,
        panicking,
    }
}

/// One app's claim on the machine-wide budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claim {
    /// What [`decide`] asked for.
    pub target: usize,
    /// The app's `min`.
    pub min: usize,
    /// Whether it has requests running or waiting now.
    pub has_work: bool,
}

/// Shares `budget` workers among the apps: each target is kept if they all fit; otherwise
/// every app with work gets one, then the `min`s, then the rest goes one at a time to the app
/// furthest from its target (water-filling, so two busy apps get equal shares). The result is
/// each app's allowed target, never above what it asked for.
pub fn share(budget: usize, claims: &[Claim]) -> Vec<usize> {
    let total: usize = claims.iter().map(|c| c.target).sum();
    if total <= budget {
        return claims.iter().map(|c| c.target).collect();
    }
    let mut alloc = vec![0usize; claims.len()];
    let mut left = budget;
    let give = |alloc: &mut Vec<usize>, i: usize, upto: usize, left: &mut usize| {
        while alloc[i] < upto.min(claims[i].target) && *left > 0 {
            alloc[i] += 1;
            *left -= 1;
        }
    };
    for (i, c) in claims.iter().enumerate() {
        if c.has_work {
            give(&mut alloc, i, 1, &mut left);
        }
    }
    for (i, c) in claims.iter().enumerate() {
        give(&mut alloc, i, c.min, &mut left);
    }
    while left > 0 {
        // The app furthest from its target; ties go to the first.
        let Some(i) = (0..claims.len())
            .filter(|&i| alloc[i] < claims[i].target)
            .max_by_key(|&i| (claims[i].target - alloc[i], std::cmp::Reverse(i)))
        else {
            break;
        };
        alloc[i] += 1;
        left -= 1;
    }
    alloc
}

#[cfg(test)]
mod tests;
