//! The per-second time series: what the generator recorded for each request and what each
//! metrics scrape said, folded into one row per second, and written as CSV.
//!
//! Row `i` covers `[i, i + 1)` seconds after the start. Each count is attributed to the second
//! in which its event happened: an offer to its scheduled instant, a send to its actual send,
//! a completion (2xx, non-2xx, timeout, transport error) to the instant it ended, a drop to the
//! instant the generator gave up on it. The rows continue past `--duration` until the last
//! request has ended, so the drain shows.
//!
//! Metrics: scrapes are taken about once a second. The observations between two consecutive
//! scrapes (histogram and counter deltas) go to the row holding the midpoint of the two scrape
//! times, and the gauges of the later scrape (the state at the end of that second) go with
//! them; if two pairs land in the same row their deltas add up and the later gauges win.
//!
//! **Invariant:** pure; no I/O except into the writer given to [`write_csv`], no clock.

use std::io::{self, Write};

use crate::metrics::{AppMetrics, Histogram, counter_delta};

/// What became of one scheduled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestResult {
    /// A complete response (head and body) with this status.
    Status(u16),
    /// No complete response within `--timeout` of the send.
    Timeout,
    /// Connecting, writing or reading failed (refused, reset, malformed response).
    Transport,
    /// Never sent: `--max-in-flight` requests were already outstanding at its scheduled time.
    Dropped,
}

/// One scheduled request, with times in seconds since the start of the test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// When the schedule said to send it.
    pub scheduled: f64,
    /// When it was actually handed to the connection pool; `None` if dropped.
    pub sent: Option<f64>,
    /// When it ended: response complete, timed out, failed, or (dropped) was given up on.
    pub finished: f64,
    /// How it ended.
    pub result: RequestResult,
}

impl Outcome {
    /// Latency in seconds, measured from the *scheduled* instant to the end of the response:
    /// if the generator itself fell behind, that delay counts too, so a slow server cannot hide
    /// queueing by slowing down the sender (no coordinated omission).
    pub fn latency(&self) -> f64 {
        (self.finished - self.scheduled).max(0.0)
    }

    /// A 2xx response.
    pub fn is_ok(&self) -> bool {
        matches!(self.result, RequestResult::Status(s) if (200..300).contains(&s))
    }

    /// Sent and ended in anything but a 2xx response.
    pub fn is_error(&self) -> bool {
        self.sent.is_some() && !self.is_ok()
    }
}

/// One metrics scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSample {
    /// When the scrape was requested, in seconds since the start (negative: before it).
    pub t: f64,
    /// What it said about the selected app(s).
    pub metrics: AppMetrics,
}

/// One second of the test. Rates are counts in that second (= per second).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    /// Start of the second, in seconds since the start of the test.
    pub t_s: u64,
    /// Sends the schedule asked for.
    pub offered: u64,
    /// Requests actually sent.
    pub sent: u64,
    /// 2xx responses completed.
    pub ok: u64,
    /// Non-2xx responses, transport errors and timeouts.
    pub errors: u64,
    /// Of `errors`, the timeouts.
    pub timeouts: u64,
    /// Scheduled sends the generator dropped (`--max-in-flight` reached).
    pub dropped: u64,
    /// Requests sent and not yet ended at the end of the second.
    pub in_flight: u64,
    /// Median latency of the 2xx responses completed in this second, ms.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile of the same, ms.
    pub latency_p99_ms: Option<f64>,
    /// Median queue wait of the requests warren dispatched in this second, ms.
    pub queue_wait_p50_ms: Option<f64>,
    /// 99th percentile of the same, ms.
    pub queue_wait_p99_ms: Option<f64>,
    /// Queue length at the end of the second.
    pub queue_length: Option<f64>,
    /// Workers (busy + idle + starting) at the end of the second.
    pub workers: Option<f64>,
    /// The autoscaler's target at the end of the second.
    pub target_workers: Option<f64>,
    /// Workers forked during the second.
    pub spawns: Option<f64>,
    /// Workers retired during the second.
    pub reaps: Option<f64>,
    /// Workers running a request at the end of the second.
    pub busy_workers: Option<f64>,
    /// The app's `scale.min` (or fixed worker count).
    pub min_workers: Option<f64>,
    /// The app's `scale.max` (or fixed worker count).
    pub max_workers: Option<f64>,
    /// The autoscaler's target queue wait, ms (autoscaled apps only).
    pub target_queue_wait_ms: Option<f64>,
    /// The generation serving the app at the end of the second: a change is a redeploy.
    pub generation: Option<f64>,
}

/// What a vertical marker on the chart stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    /// The pattern's rate changes abruptly (a step, a spike's edges).
    Pattern,
    /// The schedule ends: what follows is the cool-down (`--cooldown`) and the drain.
    LoadStops,
    /// warren started a new generation of the app (a reload or redeploy).
    Reload,
}

/// A vertical marker: an instant, seconds since the start, and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// When it happened.
    pub t: f64,
    /// What happened.
    pub kind: MarkerKind,
    /// A few words for the chart.
    pub label: String,
}

/// The chart's markers, in time order: the pattern's abrupt `changes` (from the schedule,
/// [`crate::Pattern::changes`]), the end of the load at `load_ends` when rows continue past
/// it, and a reload wherever the generation of one row differs from the previous row's (at
/// the end of that second, when the scrape saw it).
pub fn markers(changes: &[(f64, String)], load_ends: f64, rows: &[Row]) -> Vec<Marker> {
    let mut out: Vec<Marker> = changes
        .iter()
        .map(|(t, label)| Marker {
            t: *t,
            kind: MarkerKind::Pattern,
            label: label.clone(),
        })
        .collect();
    if (rows.len() as f64) > load_ends.ceil() {
        out.push(Marker {
            t: load_ends,
            kind: MarkerKind::LoadStops,
            label: "load stops".into(),
        });
    }
    let mut last = None;
    for r in rows {
        if let Some(g) = r.generation {
            if last.is_some_and(|l| l != g) {
                out.push(Marker {
                    t: r.t_s as f64 + 1.0,
                    kind: MarkerKind::Reload,
                    label: "reload".into(),
                });
            }
            last = Some(g);
        }
    }
    out.sort_by(|a, b| a.t.total_cmp(&b.t));
    out
}

/// The CSV header, in column order. The first twelve columns are the documented core; the
/// rest were added after them so that scripts reading the core by position keep working.
pub const CSV_COLUMNS: [&str; 22] = [
    "t_s",
    "offered_rps",
    "sent_rps",
    "ok_rps",
    "error_rps",
    "latency_p50_ms",
    "latency_p99_ms",
    "queue_wait_p50_ms",
    "queue_wait_p99_ms",
    "queue_length",
    "workers",
    "target_workers",
    "timeout_rps",
    "dropped_rps",
    "in_flight",
    "spawns",
    "reaps",
    "busy_workers",
    "min_workers",
    "max_workers",
    "target_queue_wait_ms",
    "generation",
];

/// The second an instant falls into, clamped to `[0, rows)`.
fn second(t: f64, rows: usize) -> usize {
    let i = if t.is_finite() && t > 0.0 {
        t.floor() as usize
    } else {
        0
    };
    i.min(rows.saturating_sub(1))
}

/// Folds the outcomes and scrapes into one row per second, from 0 to the later of
/// `duration_s` and the last request's end.
pub fn aggregate(outcomes: &[Outcome], samples: &[MetricsSample], duration_s: f64) -> Vec<Row> {
    let last_event = outcomes
        .iter()
        .map(|o| o.finished.max(o.scheduled))
        .fold(0.0_f64, f64::max);
    let by_duration = if duration_s.is_finite() {
        duration_s.max(0.0).ceil() as usize
    } else {
        0
    };
    let by_events = if outcomes.is_empty() {
        0
    } else {
        last_event.floor() as usize + 1
    };
    let n = by_duration.max(by_events).max(1);
    let mut rows: Vec<Row> = (0..n)
        .map(|i| Row {
            t_s: i as u64,
            ..Row::default()
        })
        .collect();
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); n];
    // Sends and ends per second, for the in-flight count.
    let mut sends = vec![0u64; n];
    let mut ends = vec![0u64; n];

    for o in outcomes {
        rows[second(o.scheduled, n)].offered += 1;
        let end = second(o.finished, n);
        match o.sent {
            None => rows[end].dropped += 1,
            Some(sent) => {
                let s = second(sent, n);
                rows[s].sent += 1;
                sends[s] += 1;
                ends[end] += 1;
                if o.is_ok() {
                    rows[end].ok += 1;
                    latencies[end].push(o.latency());
                } else {
                    rows[end].errors += 1;
                    if o.result == RequestResult::Timeout {
                        rows[end].timeouts += 1;
                    }
                }
            }
        }
    }
    let (mut sent_so_far, mut ended_so_far) = (0u64, 0u64);
    for i in 0..n {
        sent_so_far += sends[i];
        ended_so_far += ends[i];
        rows[i].in_flight = sent_so_far.saturating_sub(ended_so_far);
        let lat = &mut latencies[i];
        lat.sort_by(f64::total_cmp);
        rows[i].latency_p50_ms = percentile(lat, 0.5).map(|s| s * 1000.0);
        rows[i].latency_p99_ms = percentile(lat, 0.99).map(|s| s * 1000.0);
    }

    add_metrics(&mut rows, samples);
    rows
}

/// Spreads the scrape pairs over the rows (see the module doc).
fn add_metrics(rows: &mut [Row], samples: &[MetricsSample]) {
    let n = rows.len();
    let mut waits: Vec<Option<Histogram>> = vec![None; n];
    for pair in samples.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let i = second((a.t + b.t) / 2.0, n);
        let row = &mut rows[i];
        let (ma, mb) = (&a.metrics, &b.metrics);
        if let (Some(ha), Some(hb)) = (&ma.queue_wait, &mb.queue_wait) {
            waits[i]
                .get_or_insert_with(Histogram::default)
                .add(&hb.since(ha));
        }
        for (out, later, earlier) in [
            (&mut row.spawns, mb.spawns_total, ma.spawns_total),
            (&mut row.reaps, mb.reaps_total, ma.reaps_total),
        ] {
            if let (Some(l), Some(e)) = (later, earlier) {
                *out = Some(out.unwrap_or(0.0) + counter_delta(l, e));
            }
        }
        row.queue_length = mb.queue_length.or(row.queue_length);
        row.workers = mb.workers().or(row.workers);
        row.target_workers = mb.target_workers.or(row.target_workers);
        row.busy_workers = mb.workers_busy.or(row.busy_workers);
        row.min_workers = mb.min_workers.or(row.min_workers);
        row.max_workers = mb.max_workers.or(row.max_workers);
        row.target_queue_wait_ms = mb
            .target_queue_wait
            .map(|s| s * 1000.0)
            .or(row.target_queue_wait_ms);
        row.generation = mb.generation.or(row.generation);
    }
    for (row, wait) in rows.iter_mut().zip(waits) {
        if let Some(h) = wait {
            row.queue_wait_p50_ms = h.quantile(0.5).map(|s| s * 1000.0);
            row.queue_wait_p99_ms = h.quantile(0.99).map(|s| s * 1000.0);
        }
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at least `q` of the
/// values at or below it. `None` for no values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Writes the header and one line per row. Empty cells where there is no value.
pub fn write_csv<W: Write>(rows: &[Row], mut out: W) -> io::Result<()> {
    writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    for r in rows {
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        let num = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.t_s,
            r.offered,
            r.sent,
            r.ok,
            r.errors,
            ms(r.latency_p50_ms),
            ms(r.latency_p99_ms),
            ms(r.queue_wait_p50_ms),
            ms(r.queue_wait_p99_ms),
            num(r.queue_length),
            num(r.workers),
            num(r.target_workers),
            r.timeouts,
            r.dropped,
            r.in_flight,
            num(r.spawns),
            num(r.reaps),
            num(r.busy_workers),
            num(r.min_workers),
            num(r.max_workers),
            ms(r.target_queue_wait_ms),
            num(r.generation),
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom::Bucket;

    fn outcome(scheduled: f64, sent: Option<f64>, finished: f64, result: RequestResult) -> Outcome {
        Outcome {
            scheduled,
            sent,
            finished,
            result,
        }
    }

    fn ok(scheduled: f64, finished: f64) -> Outcome {
        outcome(
            scheduled,
            Some(scheduled),
            finished,
            RequestResult::Status(200),
        )
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn counts_go_to_the_second_of_their_event() {
        let outcomes = [
            ok(0.1, 0.2),
            outcome(0.5, Some(0.7), 1.3, RequestResult::Status(200)),
            outcome(0.9, Some(1.05), 1.5, RequestResult::Status(503)),
            outcome(1.2, Some(1.2), 2.2, RequestResult::Timeout),
            outcome(1.4, Some(1.4), 1.41, RequestResult::Transport),
            outcome(1.6, None, 1.61, RequestResult::Dropped),
        ];
        let rows = aggregate(&outcomes, &[], 2.0);
        // The timeout ends in second 2: a third row for the drain.
        assert_eq!(rows.len(), 3);
        let r = |i: usize| {
            let r = &rows[i];
            (
                r.offered,
                r.sent,
                r.ok,
                r.errors,
                r.timeouts,
                r.dropped,
                r.in_flight,
            )
        };
        assert_eq!(r(0), (3, 2, 1, 0, 0, 0, 1));
        assert_eq!(r(1), (3, 3, 1, 2, 0, 1, 1));
        assert_eq!(r(2), (0, 0, 0, 1, 1, 0, 0));
        assert_eq!(rows[0].latency_p50_ms, Some(100.0));
        // Latency counts from the scheduled instant (0.5), not a late send.
        assert!((rows[1].latency_p99_ms.unwrap_or(0.0) - 800.0).abs() < 1e-6);
        assert_eq!(rows[2].latency_p50_ms, None);
        // Everything offered is accounted for.
        let total = |f: fn(&Row) -> u64| rows.iter().map(f).sum::<u64>();
        assert_eq!(total(|r| r.offered), 6);
        assert_eq!(total(|r| r.sent) + total(|r| r.dropped), 6);
        assert_eq!(total(|r| r.ok) + total(|r| r.errors), total(|r| r.sent));
    }

    #[test]
    fn rows_cover_the_duration_even_without_requests() {
        let rows = aggregate(&[], &[], 3.5);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows.iter().map(|r| r.t_s).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(rows.iter().all(|r| r.offered == 0 && r.workers.is_none()));
    }

    fn scrape(
        t: f64,
        queue: f64,
        busy: f64,
        target: f64,
        spawns: f64,
        le: &[f64],
    ) -> MetricsSample {
        let mut cum = 0.0;
        let mut buckets: Vec<Bucket> = [0.01, 0.1, 1.0]
            .iter()
            .zip(le)
            .map(|(&upper_bound, &n)| {
                cum += n;
                Bucket {
                    upper_bound,
                    count: cum,
                }
            })
            .collect();
        buckets.push(Bucket {
            upper_bound: f64::INFINITY,
            count: cum,
        });
        MetricsSample {
            t,
            metrics: AppMetrics {
                queue_length: Some(queue),
                workers_busy: Some(busy),
                workers_idle: Some(1.0),
                target_workers: Some(target),
                spawns_total: Some(spawns),
                min_workers: Some(1.0),
                max_workers: Some(4.0),
                target_queue_wait: Some(0.05),
                generation: Some(2.0),
                queue_wait: Some(Histogram {
                    buckets,
                    sum: 0.0,
                    count: cum,
                }),
                ..AppMetrics::default()
            },
        }
    }

    #[test]
    fn metrics_use_deltas_between_scrapes() {
        let samples = [
            // Baseline: 100 old observations, all fast.
            scrape(0.01, 0.0, 0.0, 1.0, 1.0, &[100.0, 0.0, 0.0]),
            // Second 0: 10 new, all in (0.01, 0.1].
            scrape(1.01, 5.0, 2.0, 3.0, 3.0, &[100.0, 10.0, 0.0]),
            // Second 1: nothing dispatched.
            scrape(2.0, 9.0, 4.0, 5.0, 5.0, &[100.0, 10.0, 0.0]),
        ];
        let rows = aggregate(&[], &samples, 3.0);
        assert_eq!(rows[0].queue_length, Some(5.0));
        assert_eq!(rows[0].workers, Some(3.0));
        assert_eq!(rows[0].target_workers, Some(3.0));
        assert_eq!(rows[0].spawns, Some(2.0));
        // p50 of 10 observations in (10 ms, 100 ms]: halfway, 55 ms.
        let p50 = rows[0].queue_wait_p50_ms.unwrap_or(f64::NAN);
        assert!((p50 - 55.0).abs() < 1e-9, "{p50}");
        assert_eq!(rows[1].queue_wait_p50_ms, None);
        assert_eq!(rows[1].workers, Some(5.0));
        assert_eq!(rows[1].spawns, Some(2.0));
        // No scrape pair for the last second.
        assert_eq!(rows[2].workers, None);
    }

    #[test]
    fn csv_has_header_and_one_line_per_row() {
        let rows = aggregate(
            &[ok(0.1, 0.1125)],
            &[
                scrape(0.0, 0.0, 0.0, 1.0, 1.0, &[0.0, 0.0, 0.0]),
                scrape(1.0, 2.0, 1.0, 1.0, 1.0, &[1.0, 0.0, 0.0]),
            ],
            2.0,
        );
        let mut out = Vec::new();
        write_csv(&rows, &mut out).expect("write to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], CSV_COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "0,1,1,1,0,12.500,12.500,5.000,9.900,2,2,1,0,0,0,0,,1,1,4,50.000,2"
        );
        assert_eq!(lines[2], "1,0,0,0,0,,,,,,,,0,0,0,,,,,,,");
        for line in &lines {
            assert_eq!(line.split(',').count(), CSV_COLUMNS.len(), "{line}");
        }
    }

    fn generations(gs: &[Option<f64>]) -> Vec<Row> {
        gs.iter()
            .enumerate()
            .map(|(i, &generation)| Row {
                t_s: i as u64,
                generation,
                ..Row::default()
            })
            .collect()
    }

    #[test]
    fn markers_for_pattern_changes_the_end_of_the_load_and_reloads() {
        let kinds = |m: &[Marker]| m.iter().map(|m| (m.t, m.kind)).collect::<Vec<_>>();
        let changes = [(2.0, "10 → 400 req/s".to_string())];
        // Rows stop at the schedule's end: no "load stops", and a steady generation.
        let rows = generations(&[Some(1.0), Some(1.0), Some(1.0), Some(1.0)]);
        assert_eq!(
            kinds(&markers(&changes, 4.0, &rows)),
            [(2.0, MarkerKind::Pattern)]
        );
        // Rows past it (a cool-down), and a reload seen at the end of second 3; a gap in the
        // scrapes (None) is not a change.
        let rows = generations(&[Some(1.0), None, Some(1.0), Some(2.0), Some(2.0), Some(2.0)]);
        let m = markers(&changes, 3.5, &rows);
        assert_eq!(
            kinds(&m),
            [
                (2.0, MarkerKind::Pattern),
                (3.5, MarkerKind::LoadStops),
                (4.0, MarkerKind::Reload)
            ]
        );
        assert_eq!(m[0].label, "10 → 400 req/s");
        // No metrics: only what the schedule knows.
        let rows = generations(&[None; 6]);
        assert_eq!(
            kinds(&markers(&[], 3.0, &rows)),
            [(3.0, MarkerKind::LoadStops)]
        );
    }
}
