//! The arrival schedule: the instants at which the open-loop generator sends, decided in
//! advance from the pattern alone.
//!
//! The `k`-th send (k = 0, 1, …) happens at the instant `t_k` where the integrated rate
//! [`cumulative`] reaches `k + ½`. Sends are therefore evenly spaced in "expected request
//! count": at a constant rate `r` they fall at `(k + ½) / r`, and over any interval `[a, b)`
//! the number of sends differs from `cumulative(b) − cumulative(a)` by less than one.
//! Nothing random, nothing measured: two runs with the same arguments offer exactly the same
//! load, whatever the server does.
//!
//! **Invariant:** pure. No clock is read; times are offsets from the test's start.

use std::time::Duration;

use crate::pattern::{Pattern, cumulative, rate_at};

/// Iterator over the send instants of `pattern` in `[0, duration)`, as offsets from the start.
#[derive(Debug, Clone)]
pub struct Schedule {
    pattern: Pattern,
    duration: f64,
    /// `cumulative(duration)`, computed once: the iterator stops at the first `k + ½` above it.
    total: f64,
    /// Index of the next send.
    next: u64,
    /// Time of the previous send: the next one cannot be earlier, so the search starts here.
    last: f64,
}

impl Schedule {
    /// The schedule of `pattern` over `[0, duration_s)` seconds.
    pub fn new(pattern: Pattern, duration_s: f64) -> Self {
        let duration = if duration_s.is_finite() {
            duration_s.max(0.0)
        } else {
            0.0
        };
        Schedule {
            pattern,
            duration,
            total: cumulative(&pattern, duration),
            next: 0,
            last: 0.0,
        }
    }

    /// How many sends the whole schedule holds (the iterator yields exactly this many).
    pub fn len_total(&self) -> u64 {
        expected_sends(&self.pattern, self.duration)
    }
}

/// The number of sends of the schedule of `pattern` over `[0, duration_s)`:
/// `round(cumulative(duration_s))`, without iterating.
pub fn expected_sends(pattern: &Pattern, duration_s: f64) -> u64 {
    let total = cumulative(pattern, duration_s.max(0.0));
    if total.is_finite() && total > 0.0 {
        // Sends sit at k + ½ for k = 0.. while k + ½ < total (the last one strictly before the
        // end); that is ceil(total - ½) of them.
        (total - 0.5).ceil().max(0.0) as u64
    } else {
        0
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let target = self.next as f64 + 0.5;
        // A send exactly at `duration` would be outside the half-open interval.
        if self.total.is_nan() || target >= self.total {
            return None;
        }
        let t = solve(&self.pattern, target, self.last, self.duration);
        self.next += 1;
        self.last = t;
        Some(Duration::from_secs_f64(t))
    }
}

/// The smallest `t` in `[lo, hi]` with `cumulative(t) >= target`, to about a nanosecond.
/// Requires `cumulative(lo) < target <= cumulative(hi)`. Newton steps on the rate, falling back
/// to bisection when a step leaves the bracket or the rate is zero (a flat stretch of a step or
/// spike at rate 0).
fn solve(pattern: &Pattern, target: f64, mut lo: f64, mut hi: f64) -> f64 {
    const EPS_T: f64 = 1e-10;
    const EPS_N: f64 = 1e-9;
    let newton = |t: f64, c: f64| {
        let r = rate_at(pattern, t);
        if r > 0.0 {
            t + (target - c) / r
        } else {
            f64::NAN
        }
    };
    let mut t = newton(lo, cumulative(pattern, lo));
    for _ in 0..200 {
        if t.is_nan() || t <= lo || t >= hi {
            t = lo + (hi - lo) / 2.0;
        }
        let c = cumulative(pattern, t);
        if (c - target).abs() < EPS_N {
            return t;
        }
        if c < target {
            lo = t;
        } else {
            hi = t;
        }
        if hi - lo < EPS_T {
            return hi;
        }
        t = newton(t, c);
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(pattern: Pattern, duration: f64) -> Vec<f64> {
        Schedule::new(pattern, duration)
            .map(|d| d.as_secs_f64())
            .collect()
    }

    const PATTERNS: [Pattern; 7] = [
        Pattern::Constant { rate: 50.0 },
        Pattern::Constant { rate: 0.3 },
        Pattern::Step {
            from: 0.0,
            to: 100.0,
            at: 3.0,
        },
        Pattern::Spike {
            from: 10.0,
            to: 400.0,
            at: 2.0,
            duration: 5.0,
        },
        Pattern::Ramp {
            from: 0.0,
            to: 100.0,
            over: 10.0,
        },
        Pattern::Ramp {
            from: 120.0,
            to: 5.0,
            over: 10.0,
        },
        Pattern::Sine {
            from: 0.0,
            to: 100.0,
            period: 3.0,
        },
    ];

    #[test]
    fn constant_rate_is_evenly_spaced() {
        let ts = times(Pattern::Constant { rate: 50.0 }, 2.0);
        assert_eq!(ts.len(), 100);
        for (k, t) in ts.iter().enumerate() {
            let want = (k as f64 + 0.5) / 50.0;
            assert!((t - want).abs() < 1e-6, "send {k} at {t}, want {want}");
        }
    }

    #[test]
    fn count_in_any_interval_matches_the_integral() {
        for p in PATTERNS {
            let duration = 10.0;
            let ts = times(p, duration);
            let mut a = 0.0;
            while a < duration {
                for width in [0.1, 0.37, 1.0, 2.5] {
                    let b = (a + width).min(duration);
                    let count = ts.iter().filter(|&&t| t >= a && t < b).count() as f64;
                    let want = cumulative(&p, b) - cumulative(&p, a);
                    assert!(
                        (count - want).abs() <= 1.0,
                        "{p:?} [{a}, {b}): {count} sends, integral {want}"
                    );
                }
                a += 0.25;
            }
        }
    }

    #[test]
    fn times_are_increasing_and_inside_the_duration() {
        for p in PATTERNS {
            let ts = times(p, 10.0);
            assert!(ts.windows(2).all(|w| w[0] < w[1]), "{p:?}");
            assert!(ts.iter().all(|&t| (0.0..10.0).contains(&t)), "{p:?}");
        }
    }

    #[test]
    fn len_total_matches_the_iterator() {
        for p in PATTERNS {
            for d in [0.0, 0.01, 1.0, 3.3, 10.0] {
                let s = Schedule::new(p, d);
                assert_eq!(s.len_total(), s.count() as u64, "{p:?} over {d}");
            }
        }
    }

    #[test]
    fn zero_rate_sends_nothing() {
        assert!(times(Pattern::Constant { rate: 0.0 }, 100.0).is_empty());
        // A step from 0 sends nothing before the step.
        let ts = times(
            Pattern::Step {
                from: 0.0,
                to: 10.0,
                at: 5.0,
            },
            10.0,
        );
        assert_eq!(ts.len(), 50);
        assert!(ts[0] >= 5.0, "first send at {}", ts[0]);
    }

    #[test]
    fn spike_concentrates_sends_in_the_spike() {
        let p = Pattern::Spike {
            from: 10.0,
            to: 400.0,
            at: 2.0,
            duration: 5.0,
        };
        let ts = times(p, 10.0);
        let inside = ts.iter().filter(|&&t| (2.0..7.0).contains(&t)).count();
        assert!((1999..=2001).contains(&inside), "{inside}");
        assert!((2049..=2051).contains(&ts.len()), "{}", ts.len());
    }

    #[test]
    fn same_arguments_same_schedule() {
        for p in PATTERNS {
            assert_eq!(times(p, 7.0), times(p, 7.0));
        }
    }
}
