//! The run's totals: what [`crate::run`] returns and prints.
//!
//! Accounting identities that always hold: `scheduled = sent + dropped` and
//! `sent = ok + non-2xx + timeouts + transport_errors` ([`Summary::errors`] is the last three).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::metrics::counter_delta;
use crate::series::{MetricsSample, Outcome, RequestResult, percentile};

/// Totals of one load test.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The target URL as given.
    pub url: String,
    /// The Host header sent.
    pub host: String,
    /// The pattern, in words ("step 10 → 100 req/s at 30 s").
    pub pattern: String,
    /// The schedule's length, seconds.
    pub duration_s: f64,
    /// The run was stopped early (Ctrl-C): later sends were never scheduled.
    pub interrupted: bool,
    /// Sends that came due (the offered load).
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// Sends dropped by the generator because `--max-in-flight` requests were outstanding.
    pub dropped: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Non-2xx responses by status code.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Requests without a complete response within `--timeout`.
    pub timeouts: u64,
    /// Requests that failed to connect, send or read.
    pub transport_errors: u64,
    /// The transport errors by message.
    pub transport_error_kinds: BTreeMap<String, u64>,
    /// Median latency of the 2xx responses, ms, from the scheduled send to the end of the body.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub latency_p99_ms: Option<f64>,
    /// Largest of the same.
    pub latency_max_ms: Option<f64>,
    /// 99th percentile of how late the generator sent (actual − scheduled), ms: if this is not
    /// small, the generator, not the server, limited the offered load.
    pub send_lag_p99_ms: Option<f64>,
    /// Largest such lateness, ms.
    pub send_lag_max_ms: Option<f64>,
    /// What warren's metrics said over the run (`None` without `--metrics`).
    pub warren: Option<WarrenSummary>,
    /// Rows (seconds) in the CSV.
    pub rows: usize,
    /// The CSV written.
    pub csv: PathBuf,
    /// The PNG written (`None` if drawing failed; the reason is in `warnings`).
    pub png: Option<PathBuf>,
    /// Things the user should know: limits hit, missing metrics, missing font, failed scrapes.
    pub warnings: Vec<String>,
}

/// warren's side of the run, from the first and last scrape and the maxima in between.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WarrenSummary {
    /// The app label read (`None`: all apps added up).
    pub app: Option<String>,
    /// Successful scrapes.
    pub scrapes: u64,
    /// Failed scrapes.
    pub scrape_errors: u64,
    /// Median queue wait of the requests dispatched during the run, ms.
    pub queue_wait_p50_ms: Option<f64>,
    /// 99th percentile of the same, ms.
    pub queue_wait_p99_ms: Option<f64>,
    /// Longest queue seen.
    pub max_queue_length: Option<f64>,
    /// Most workers seen.
    pub max_workers: Option<f64>,
    /// Highest target seen.
    pub max_target_workers: Option<f64>,
    /// Workers forked during the run.
    pub spawns: Option<f64>,
    /// Workers retired during the run.
    pub reaps: Option<f64>,
    /// Cold starts during the run.
    pub cold_starts: Option<f64>,
    /// Median cold start during the run, ms.
    pub cold_start_p50_ms: Option<f64>,
    /// Responses warren counted during the run, by status.
    pub responses: BTreeMap<String, f64>,
}

impl Summary {
    /// Non-2xx responses + timeouts + transport errors.
    pub fn errors(&self) -> u64 {
        self.errors_by_status.values().sum::<u64>() + self.timeouts + self.transport_errors
    }

    /// Fills the request totals from the outcomes; the caller sets the rest.
    pub(crate) fn count(&mut self, outcomes: &[Outcome]) {
        let mut latencies = Vec::new();
        let mut lags = Vec::new();
        for o in outcomes {
            self.scheduled += 1;
            if let Some(sent) = o.sent {
                self.sent += 1;
                lags.push((sent - o.scheduled).max(0.0));
            }
            match o.result {
                RequestResult::Status(s) if (200..300).contains(&s) => {
                    self.ok += 1;
                    latencies.push(o.latency());
                }
                RequestResult::Status(s) => *self.errors_by_status.entry(s).or_insert(0) += 1,
                RequestResult::Timeout => self.timeouts += 1,
                RequestResult::Transport => self.transport_errors += 1,
                RequestResult::Dropped => self.dropped += 1,
            }
        }
        let ms = |v: Option<f64>| v.map(|s| s * 1000.0);
        latencies.sort_by(f64::total_cmp);
        lags.sort_by(f64::total_cmp);
        self.latency_p50_ms = ms(percentile(&latencies, 0.5));
        self.latency_p99_ms = ms(percentile(&latencies, 0.99));
        self.latency_max_ms = ms(latencies.last().copied());
        self.send_lag_p99_ms = ms(percentile(&lags, 0.99));
        self.send_lag_max_ms = ms(lags.last().copied());
    }
}

impl WarrenSummary {
    /// Totals over the scrapes (in time order).
    pub(crate) fn from_samples(
        app: Option<String>,
        samples: &[MetricsSample],
        scrape_errors: u64,
    ) -> WarrenSummary {
        let mut s = WarrenSummary {
            app,
            scrapes: samples.len() as u64,
            scrape_errors,
            ..WarrenSummary::default()
        };
        let max = |f: &dyn Fn(&MetricsSample) -> Option<f64>| {
            samples.iter().filter_map(f).reduce(f64::max)
        };
        s.max_queue_length = max(&|m| m.metrics.queue_length);
        s.max_workers = max(&|m| m.metrics.workers());
        s.max_target_workers = max(&|m| m.metrics.target_workers);
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return s;
        };
        let (a, b) = (&first.metrics, &last.metrics);
        let delta = |l: Option<f64>, e: Option<f64>| Some(counter_delta(l?, e?));
        s.spawns = delta(b.spawns_total, a.spawns_total);
        s.reaps = delta(b.reaps_total, a.reaps_total);
        if let (Some(hb), Some(ha)) = (&b.queue_wait, &a.queue_wait) {
            let d = hb.since(ha);
            s.queue_wait_p50_ms = d.quantile(0.5).map(|v| v * 1000.0);
            s.queue_wait_p99_ms = d.quantile(0.99).map(|v| v * 1000.0);
        }
        if let (Some(hb), Some(ha)) = (&b.cold_start, &a.cold_start) {
            let d = hb.since(ha);
            s.cold_starts = Some(d.count);
            s.cold_start_p50_ms = d.quantile(0.5).map(|v| v * 1000.0);
        }
        for (status, &v) in &b.responses_total {
            let before = a.responses_total.get(status).copied().unwrap_or(0.0);
            s.responses.insert(status.clone(), counter_delta(v, before));
        }
        s
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v}"))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "loadtest  {}; {} s run → {} (Host: {}){}",
            self.pattern,
            self.duration_s,
            self.url,
            self.host,
            if self.interrupted {
                "  [interrupted]"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  requests     scheduled {}  sent {}  dropped by generator {}",
            self.scheduled, self.sent, self.dropped
        )?;
        let by_status = if self.errors_by_status.is_empty() {
            "0".to_string()
        } else {
            self.errors_by_status
                .iter()
                .map(|(s, n)| format!("{s}×{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(
            f,
            "  outcomes     ok(2xx) {}  non-2xx {}  timeouts {}  transport errors {}",
            self.ok, by_status, self.timeouts, self.transport_errors
        )?;
        writeln!(
            f,
            "  latency ms   p50 {}  p99 {}  max {}   (2xx, from the scheduled send)",
            ms(self.latency_p50_ms),
            ms(self.latency_p99_ms),
            ms(self.latency_max_ms)
        )?;
        writeln!(
            f,
            "  send lag ms  p99 {}  max {}",
            ms(self.send_lag_p99_ms),
            ms(self.send_lag_max_ms)
        )?;
        for (msg, n) in &self.transport_error_kinds {
            writeln!(f, "  transport    {n}× {msg}")?;
        }
        if let Some(w) = &self.warren {
            writeln!(
                f,
                "  warren       app {}  scrapes {} (failed {})",
                w.app.as_deref().unwrap_or("(all)"),
                w.scrapes,
                w.scrape_errors
            )?;
            writeln!(
                f,
                "               queue wait ms p50 {}  p99 {}  max queue {}",
                ms(w.queue_wait_p50_ms),
                ms(w.queue_wait_p99_ms),
                num(w.max_queue_length)
            )?;
            write!(
                f,
                "               workers max {}  target max {}  spawns {}  reaps {}",
                num(w.max_workers),
                num(w.max_target_workers),
                num(w.spawns),
                num(w.reaps),
            )?;
            if let Some(n) = w.cold_starts {
                write!(f, "  cold starts {n} (p50 {} ms)", ms(w.cold_start_p50_ms))?;
            }
            writeln!(f)?;
            if !w.responses.is_empty() {
                let r: Vec<String> = w
                    .responses
                    .iter()
                    .map(|(s, n)| format!("{s}×{n}"))
                    .collect();
                writeln!(f, "               responses {}", r.join(" "))?;
            }
        }
        let rows = if self.rows == 1 { "row" } else { "rows" };
        write!(
            f,
            "  wrote        {} ({} {rows})",
            self.csv.display(),
            self.rows
        )?;
        if let Some(png) = &self.png {
            write!(f, ", {}", png.display())?;
        }
        for w in &self.warnings {
            write!(f, "\n  warning      {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{AppMetrics, Histogram};
    use crate::prom::Bucket;

    fn empty() -> Summary {
        Summary {
            url: "http://127.0.0.1:1/".into(),
            host: "h".into(),
            pattern: "constant 1 req/s".into(),
            duration_s: 1.0,
            interrupted: false,
            scheduled: 0,
            sent: 0,
            dropped: 0,
            ok: 0,
            errors_by_status: BTreeMap::new(),
            timeouts: 0,
            transport_errors: 0,
            transport_error_kinds: BTreeMap::new(),
            latency_p50_ms: None,
            latency_p99_ms: None,
            latency_max_ms: None,
            send_lag_p99_ms: None,
            send_lag_max_ms: None,
            warren: None,
            rows: 0,
            csv: "x.csv".into(),
            png: None,
            warnings: vec![],
        }
    }

    #[test]
    fn counts_add_up() {
        let o = |sent: Option<f64>, finished: f64, result| Outcome {
            scheduled: 0.0,
            sent,
            finished,
            result,
        };
        let outcomes = [
            o(Some(0.0), 0.010, RequestResult::Status(200)),
            o(Some(0.0), 0.020, RequestResult::Status(204)),
            o(Some(0.002), 0.030, RequestResult::Status(200)),
            o(Some(0.0), 0.001, RequestResult::Status(503)),
            o(Some(0.0), 0.001, RequestResult::Status(503)),
            o(Some(0.0), 0.001, RequestResult::Status(404)),
            o(Some(0.0), 10.0, RequestResult::Timeout),
            o(Some(0.0), 0.001, RequestResult::Transport),
            o(None, 0.0, RequestResult::Dropped),
        ];
        let mut s = empty();
        s.count(&outcomes);
        assert_eq!((s.scheduled, s.sent, s.dropped, s.ok), (9, 8, 1, 3));
        assert_eq!(s.errors_by_status, BTreeMap::from([(404, 1), (503, 2)]));
        assert_eq!((s.timeouts, s.transport_errors, s.errors()), (1, 1, 5));
        assert_eq!(s.sent, s.ok + s.errors());
        assert_eq!(s.latency_p50_ms, Some(20.0));
        assert_eq!(s.latency_max_ms, Some(30.0));
        assert_eq!(s.send_lag_max_ms, Some(2.0));
        let text = s.to_string();
        assert!(text.contains("non-2xx 404×1 503×2"), "{text}");
        assert!(text.contains("dropped by generator 1"), "{text}");
    }

    #[test]
    fn warren_totals_from_first_and_last_scrape() {
        let scrape = |t: f64, spawns: f64, queue: f64, fast: f64, slow: f64| MetricsSample {
            t,
            metrics: AppMetrics {
                queue_length: Some(queue),
                spawns_total: Some(spawns),
                queue_wait: Some(Histogram {
                    buckets: vec![
                        Bucket {
                            upper_bound: 0.1,
                            count: fast,
                        },
                        Bucket {
                            upper_bound: f64::INFINITY,
                            count: fast + slow,
                        },
                    ],
                    sum: 0.0,
                    count: fast + slow,
                }),
                responses_total: BTreeMap::from([("200".to_string(), fast + slow)]),
                ..AppMetrics::default()
            },
        };
        let samples = [
            scrape(0.0, 2.0, 0.0, 1000.0, 0.0),
            scrape(1.0, 4.0, 30.0, 1000.0, 0.0),
            scrape(2.0, 5.0, 3.0, 1100.0, 0.0),
        ];
        let w = WarrenSummary::from_samples(Some("hello".into()), &samples, 1);
        assert_eq!(w.scrapes, 3);
        assert_eq!(w.scrape_errors, 1);
        assert_eq!(w.spawns, Some(3.0));
        assert_eq!(w.max_queue_length, Some(30.0));
        assert_eq!(w.queue_wait_p50_ms, Some(50.0));
        assert_eq!(w.responses.get("200"), Some(&100.0));
        assert_eq!(w.reaps, None);
    }
}
