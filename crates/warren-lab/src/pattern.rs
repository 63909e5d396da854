//! Arrival-rate patterns: how many requests per second the generator offers at each instant.
//!
//! **Invariant:** pure. Time is an argument in seconds since the start of the test; nothing
//! here reads a clock. [`rate_at`] gives the instantaneous rate and [`cumulative`] its exact
//! integral (the expected number of sends in `[0, t)`), which the schedule inverts.

use std::f64::consts::TAU;

/// The pattern names accepted by `--pattern`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PatternKind {
    /// --from requests/s throughout.
    #[default]
    Constant,
    /// --from until --at, then --to.
    Step,
    /// --from, then --to during [--at, --at + --spike-duration), then --from again.
    Spike,
    /// Linear from --from to --to over the whole --duration.
    Ramp,
    /// Oscillates between --from and --to with --period, starting at the midpoint.
    Sine,
}

impl PatternKind {
    /// The name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PatternKind::Constant => "constant",
            PatternKind::Step => "step",
            PatternKind::Spike => "spike",
            PatternKind::Ramp => "ramp",
            PatternKind::Sine => "sine",
        }
    }
}

/// A fully specified arrival-rate pattern. Rates are requests per second and never negative;
/// times are seconds since the start of the test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// The same rate throughout.
    Constant {
        /// Requests per second.
        rate: f64,
    },
    /// `from` before `at`, `to` from `at` on.
    Step {
        /// Rate before the step.
        from: f64,
        /// Rate from the step on.
        to: f64,
        /// When the step happens.
        at: f64,
    },
    /// `to` during `[at, at + duration)`, `from` otherwise.
    Spike {
        /// Base rate.
        from: f64,
        /// Rate during the spike.
        to: f64,
        /// When the spike starts.
        at: f64,
        /// How long the spike lasts.
        duration: f64,
    },
    /// Linear from `from` at t = 0 to `to` at t = `over` (and `to` after that).
    Ramp {
        /// Rate at t = 0.
        from: f64,
        /// Rate at t = `over`.
        to: f64,
        /// Length of the ramp: the test's duration.
        over: f64,
    },
    /// `(from + to) / 2 + (to - from) / 2 · sin(2πt / period)`: starts at the midpoint and
    /// rises towards `to` first.
    Sine {
        /// One extreme (reached at 3/4 of each period when `from < to`).
        from: f64,
        /// The other extreme (reached at 1/4 of each period when `from < to`).
        to: f64,
        /// Seconds per full oscillation.
        period: f64,
    },
}

impl Pattern {
    /// The highest rate the pattern reaches in `[0, duration)`: an upper bound used for checks
    /// and for the chart's scale.
    pub fn peak(&self) -> f64 {
        match *self {
            Pattern::Constant { rate } => rate,
            Pattern::Step { from, to, .. }
            | Pattern::Spike { from, to, .. }
            | Pattern::Ramp { from, to, .. }
            | Pattern::Sine { from, to, .. } => from.max(to),
        }
    }

    /// The instants in `(0, duration)` where the rate changes abruptly, each with a short
    /// label for the chart's markers: a step, a spike's start and end. A ramp and a sine change
    /// all the time and have none.
    pub fn changes(&self, duration: f64) -> Vec<(f64, String)> {
        let r = |v: f64| format!("{v}");
        let all = match *self {
            Pattern::Constant { .. } | Pattern::Ramp { .. } | Pattern::Sine { .. } => vec![],
            Pattern::Step { from, to, at } => vec![(at, format!("{} → {} req/s", r(from), r(to)))],
            Pattern::Spike {
                from,
                to,
                at,
                duration: d,
            } => vec![
                (at, format!("spike {} req/s", r(to))),
                (at + d, format!("back to {} req/s", r(from))),
            ],
        };
        all.into_iter()
            .filter(|(t, _)| *t > 0.0 && *t < duration)
            .collect()
    }
}

/// The offered rate (requests/s) at `t` seconds after the start. Negative `t` counts as 0.
pub fn rate_at(pattern: &Pattern, t: f64) -> f64 {
    let t = t.max(0.0);
    let rate = match *pattern {
        Pattern::Constant { rate } => rate,
        Pattern::Step { from, to, at } => {
            if t < at {
                from
            } else {
                to
            }
        }
        Pattern::Spike {
            from,
            to,
            at,
            duration,
        } => {
            if t >= at && t < at + duration {
                to
            } else {
                from
            }
        }
        Pattern::Ramp { from, to, over } => {
            if over <= 0.0 || t >= over {
                to
            } else {
                from + (to - from) * t / over
            }
        }
        Pattern::Sine { from, to, period } => {
            let mid = (from + to) / 2.0;
            let amp = (to - from) / 2.0;
            if period <= 0.0 {
                mid
            } else {
                mid + amp * (TAU * t / period).sin()
            }
        }
    };
    rate.max(0.0)
}

/// The integral of [`rate_at`] over `[0, t)`: how many sends the pattern asks for by time `t`.
/// Non-decreasing in `t`; 0 for `t <= 0`.
pub fn cumulative(pattern: &Pattern, t: f64) -> f64 {
    if t <= 0.0 {
        return 0.0;
    }
    match *pattern {
        Pattern::Constant { rate } => rate * t,
        Pattern::Step { from, to, at } => from * t + (to - from) * overlap(at, f64::INFINITY, t),
        Pattern::Spike {
            from,
            to,
            at,
            duration,
        } => from * t + (to - from) * overlap(at, at + duration, t),
        Pattern::Ramp { from, to, over } => {
            if over <= 0.0 {
                to * t
            } else {
                let within = t.min(over);
                let ramp = from * within + (to - from) * within * within / (2.0 * over);
                ramp + to * (t - within)
            }
        }
        Pattern::Sine { from, to, period } => {
            let mid = (from + to) / 2.0;
            let amp = (to - from) / 2.0;
            if period <= 0.0 {
                mid * t
            } else {
                mid * t + amp * period / TAU * (1.0 - (TAU * t / period).cos())
            }
        }
    }
}

/// Length of `[start, end) ∩ [0, t)`.
fn overlap(start: f64, end: f64, t: f64) -> f64 {
    let lo = start.max(0.0);
    let hi = end.min(t);
    (hi - lo).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: Pattern, cases: &[(f64, f64)]) {
        for &(t, want) in cases {
            let got = rate_at(&pattern, t);
            assert!(
                (got - want).abs() < 1e-9,
                "{pattern:?} at t={t}: got {got}, want {want}"
            );
        }
    }

    /// Numerical integral of `rate_at` by the midpoint rule, to check `cumulative`.
    fn integrate(pattern: &Pattern, t: f64) -> f64 {
        let steps = 200_000;
        let dt = t / steps as f64;
        (0..steps)
            .map(|i| rate_at(pattern, (i as f64 + 0.5) * dt) * dt)
            .sum()
    }

    const ALL: [Pattern; 6] = [
        Pattern::Constant { rate: 50.0 },
        Pattern::Step {
            from: 10.0,
            to: 100.0,
            at: 3.0,
        },
        Pattern::Spike {
            from: 10.0,
            to: 200.0,
            at: 2.0,
            duration: 5.0,
        },
        Pattern::Ramp {
            from: 0.0,
            to: 100.0,
            over: 10.0,
        },
        Pattern::Ramp {
            from: 80.0,
            to: 20.0,
            over: 10.0,
        },
        Pattern::Sine {
            from: 20.0,
            to: 100.0,
            period: 4.0,
        },
    ];

    #[test]
    fn constant_is_flat() {
        check(
            Pattern::Constant { rate: 50.0 },
            &[(0.0, 50.0), (1.5, 50.0), (3599.0, 50.0), (-1.0, 50.0)],
        );
    }

    #[test]
    fn step_switches_at_at() {
        check(
            Pattern::Step {
                from: 10.0,
                to: 100.0,
                at: 3.0,
            },
            &[(0.0, 10.0), (2.999, 10.0), (3.0, 100.0), (60.0, 100.0)],
        );
    }

    #[test]
    fn spike_is_half_open() {
        check(
            Pattern::Spike {
                from: 10.0,
                to: 200.0,
                at: 2.0,
                duration: 5.0,
            },
            &[
                (0.0, 10.0),
                (1.999, 10.0),
                (2.0, 200.0),
                (6.999, 200.0),
                (7.0, 10.0),
                (30.0, 10.0),
            ],
        );
    }

    #[test]
    fn ramp_is_linear_over_the_duration() {
        check(
            Pattern::Ramp {
                from: 0.0,
                to: 100.0,
                over: 10.0,
            },
            &[
                (0.0, 0.0),
                (2.5, 25.0),
                (5.0, 50.0),
                (10.0, 100.0),
                (11.0, 100.0),
            ],
        );
        check(
            Pattern::Ramp {
                from: 80.0,
                to: 20.0,
                over: 10.0,
            },
            &[(0.0, 80.0), (5.0, 50.0), (10.0, 20.0)],
        );
    }

    #[test]
    fn sine_starts_at_midpoint_and_reaches_both_extremes() {
        check(
            Pattern::Sine {
                from: 20.0,
                to: 100.0,
                period: 4.0,
            },
            &[
                (0.0, 60.0),
                (1.0, 100.0),
                (2.0, 60.0),
                (3.0, 20.0),
                (4.0, 60.0),
                (5.0, 100.0),
            ],
        );
    }

    #[test]
    fn rates_are_never_negative() {
        for p in ALL {
            for i in 0..1000 {
                assert!(rate_at(&p, i as f64 * 0.013) >= 0.0, "{p:?}");
            }
        }
    }

    #[test]
    fn cumulative_is_the_integral_of_the_rate() {
        for p in ALL {
            for t in [0.0, 0.7, 2.0, 3.0, 4.5, 7.0, 10.0, 12.3] {
                let exact = cumulative(&p, t);
                let numeric = integrate(&p, t);
                assert!(
                    (exact - numeric).abs() < 1e-3 * numeric.max(1.0),
                    "{p:?} t={t}: cumulative {exact}, numeric {numeric}"
                );
            }
        }
    }

    #[test]
    fn cumulative_is_non_decreasing() {
        for p in ALL {
            let mut last = 0.0;
            for i in 0..2000 {
                let c = cumulative(&p, i as f64 * 0.01);
                assert!(c >= last - 1e-9, "{p:?} at {i}");
                last = c;
            }
        }
    }

    #[test]
    fn peak_bounds_the_rate() {
        for p in ALL {
            for i in 0..1000 {
                assert!(rate_at(&p, i as f64 * 0.013) <= p.peak() + 1e-9, "{p:?}");
            }
        }
    }

    #[test]
    fn abrupt_changes_are_the_step_and_the_spike_edges() {
        let at = |p: Pattern, duration: f64| -> Vec<f64> {
            p.changes(duration).into_iter().map(|(t, _)| t).collect()
        };
        let step = Pattern::Step {
            from: 10.0,
            to: 400.0,
            at: 20.0,
        };
        assert_eq!(step.changes(90.0), [(20.0, "10 → 400 req/s".to_string())]);
        let spike = Pattern::Spike {
            from: 5.0,
            to: 50.0,
            at: 10.0,
            duration: 5.0,
        };
        assert_eq!(at(spike, 60.0), [10.0, 15.0]);
        // A spike that outlasts the run has no end to mark.
        assert_eq!(at(spike, 12.0), [10.0]);
        assert!(at(Pattern::Constant { rate: 1.0 }, 10.0).is_empty());
        let ramp = Pattern::Ramp {
            from: 1.0,
            to: 9.0,
            over: 10.0,
        };
        assert!(at(ramp, 10.0).is_empty());
    }
}
