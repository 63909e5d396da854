//! warren's load-testing lab: offer a known load to an app, watch how warren's queue and
//! autoscaler respond, and keep the result as a CSV time series and a PNG chart.
//!
//! # Open loop, not closed loop
//!
//! Closed-loop tools (wrk, ab, hey) run N connections that each send the next request when the
//! previous answer arrives. When the server slows down they slow down with it: the offered
//! load drops exactly when it should stay, the queue that real users would build never forms,
//! and the latency of the requests that were *not* sent is never measured (coordinated
//! omission). Real traffic does not wait for the server.
//!
//! This generator is **open loop**: the send instants are fixed in advance by the pattern
//! ([`schedule::Schedule`], a pure function of the arguments) and each request goes out on its
//! own task at its instant, whatever happened to the earlier ones. If warren cannot keep up,
//! requests pile up in its queue and that shows as queue length, queue wait and latency, which
//! is what an autoscaler has to react to. Latency is measured from the *scheduled* instant.
//! `--max-in-flight` bounds the sockets the generator holds; a send beyond it is counted as
//! *dropped by the generator*, never silently skipped.
//!
//! Patterns ([`pattern::rate_at`]): `constant` (`--from`), `step` (`--from` then `--to` at
//! `--at`), `spike` (`--to` during `[--at, --at + --spike-duration)`), `ramp` (linear over the
//! duration), `sine` (between `--from` and `--to` with `--period`).
//!
//! # Outputs
//!
//! - **CSV** (`--csv`, one row per second, see [`series`]): `t_s`; `offered_rps` (sends the
//!   schedule asked for), `sent_rps`, `ok_rps` (2xx completions), `error_rps` (non-2xx,
//!   timeouts, transport errors); `latency_p50_ms`, `latency_p99_ms` (client side, 2xx
//!   completed that second); from warren's metrics when `--metrics` is given:
//!   `queue_wait_p50_ms`, `queue_wait_p99_ms` (requests dispatched that second, from the
//!   histogram's bucket deltas), `queue_length`, `workers` (busy + idle + starting),
//!   `target_workers`; then `timeout_rps`, `dropped_rps`, `in_flight`, `spawns`, `reaps`,
//!   `busy_workers`, `min_workers`, `max_workers`, `target_queue_wait_ms` (the autoscaler's
//!   target) and `generation` (it changes at a reload).
//!   Empty cell: no value (no metrics, or nothing completed that second).
//! - **PNG** (`--png`, see [`plot`]): offered vs ok vs errors; queue wait and client latency
//!   against the autoscaler's target wait; workers, busy workers and the target between the
//!   app's `min` and `max`, on one time axis, with vertical markers where the pattern changes,
//!   the load stops and warren reloaded the app ([`series::markers`]).
//!
//! `--cooldown S` keeps sampling the metrics S seconds after the schedule ends, with no load,
//! so that the scale-down (idle timeout, stable window) is on the chart.
//! - **[`Summary`]**: the totals, printed as a short table and returned.
//!
//! The lab only ever sends to loopback (127.0.0.0/8, `[::1]`, `localhost`): see [`args`].

#![forbid(unsafe_code)]

pub mod args;
mod load;
pub mod metrics;
pub mod pattern;
pub mod plot;
pub mod prom;
pub mod schedule;
pub mod series;
pub mod summary;

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tokio::time::Instant;

pub use args::{ArgsError, LoadtestArgs, Plan};
pub use pattern::{Pattern, PatternKind, rate_at};
pub use schedule::Schedule;
pub use summary::{Summary, WarrenSummary};

/// How long after the set-up the first send is scheduled, so the first sends are not late.
const LEAD: Duration = Duration::from_millis(100);

/// How often a long run prints a progress line to stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Runs a load test: validates `args`, offers the load, samples the metrics, writes the CSV and
/// the PNG, prints a summary table to stdout and returns it.
///
/// Fails before sending anything if the arguments are refused, the CSV cannot be created or
/// the metrics endpoint cannot be read. Ctrl-C stops the schedule early; the requests in flight
/// are still awaited and the outputs written. A chart that cannot be drawn is a warning in the
/// summary, not an error: the CSV holds the data. Raises the process's soft open-file limit
/// when `--max-in-flight` sockets would not fit under it.
pub async fn run(args: LoadtestArgs) -> anyhow::Result<Summary> {
    let plan = args.plan()?;
    let mut warnings = Vec::new();

    check_parent("--csv", &plan.csv)?;
    check_parent("--png", &plan.png)?;
    warnings.extend(load::raise_nofile(plan.max_in_flight));

    let metrics = match &plan.metrics {
        Some(target) => {
            let client = load::metrics_client();
            match load::probe_metrics(&client, target, plan.app.as_deref()).await {
                Ok(warning) => warnings.extend(warning),
                Err(e) => bail!("cannot read --metrics {}: {e}", target.url),
            }
            Some((client, target.clone()))
        }
        None => None,
    };

    // Created now, so that a path that cannot be written stops the run before the load.
    let csv = File::create(&plan.csv)
        .with_context(|| format!("cannot create --csv {}", plan.csv.display()))?;

    let start = Instant::now() + LEAD;
    let (stop_sampler, stopped) = watch::channel(false);
    let sampler = metrics.map(|(client, target)| {
        AbortOnDrop(tokio::spawn(load::sample_metrics(
            client,
            target,
            plan.app.clone(),
            start,
            stopped,
        )))
    });
    let progress = Arc::new(load::Progress::default());
    let reporter = (plan.duration_s >= PROGRESS_EVERY.as_secs_f64()).then(|| {
        AbortOnDrop(tokio::spawn(report_progress(
            progress.clone(),
            start,
            plan.scheduled,
        )))
    });
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handling available: never interrupt.
            std::future::pending::<()>().await;
        }
    };
    let generated = load::generate(&plan, start, progress, interrupt)
        .await
        .context("the load generator failed")?;
    drop(reporter);
    // The cool-down: no load, the sampler still running, so that the scale-down is recorded.
    let mut horizon = plan.duration_s;
    if plan.cooldown_s > 0.0 && !generated.interrupted {
        let until = start + Duration::from_secs_f64(plan.duration_s + plan.cooldown_s);
        eprintln!(
            "loadtest: load done; sampling {} s more (--cooldown)",
            plan.cooldown_s
        );
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let elapsed = Instant::now()
            .saturating_duration_since(start)
            .as_secs_f64();
        horizon = elapsed.clamp(plan.duration_s, plan.duration_s + plan.cooldown_s);
    }
    let _ = stop_sampler.send(true);
    let sampled = match sampler {
        Some(mut task) => Some((&mut task.0).await.context("the metrics sampler failed")?),
        None => None,
    };
    let samples = sampled.as_ref().map_or(&[][..], |s| &s.samples[..]);

    let rows = series::aggregate(&generated.outcomes, samples, horizon);
    let markers = series::markers(
        &plan.pattern.changes(plan.duration_s),
        plan.duration_s,
        &rows,
    );
    series::write_csv(&rows, BufWriter::new(csv))
        .with_context(|| format!("cannot write --csv {}", plan.csv.display()))?;

    let cooldown = if plan.cooldown_s > 0.0 {
        format!(" + {} s cool-down", plan.cooldown_s)
    } else {
        String::new()
    };
    let title = format!(
        "{}; {} s run{cooldown} → {} (Host: {})",
        plan.describe_pattern(),
        plan.duration_s,
        plan.target.url,
        String::from_utf8_lossy(plan.target.host.as_bytes())
    );
    let text = match plot::font() {
        Ok(_) => true,
        Err(reason) => {
            warnings.push(reason.to_string());
            false
        }
    };
    // Drawing is CPU work: keep it off the runtime's threads.
    let drawn = {
        let (rows, path) = (rows.clone(), plan.png.clone());
        tokio::task::spawn_blocking(move || plot::draw(&rows, &markers, &title, &path, text)).await
    };
    let png = match drawn {
        Ok(Ok(())) => Some(plan.png.clone()),
        Ok(Err(e)) => {
            warnings.push(format!("no chart: {e:#}"));
            None
        }
        Err(e) => {
            warnings.push(format!("no chart: drawing failed: {e}"));
            None
        }
    };

    let mut summary = Summary {
        url: plan.target.url.clone(),
        host: String::from_utf8_lossy(plan.target.host.as_bytes()).into_owned(),
        pattern: plan.describe_pattern(),
        duration_s: plan.duration_s,
        interrupted: generated.interrupted,
        scheduled: 0,
        sent: 0,
        dropped: 0,
        ok: 0,
        errors_by_status: Default::default(),
        timeouts: 0,
        transport_errors: 0,
        transport_error_kinds: generated.transport_errors.clone(),
        latency_p50_ms: None,
        latency_p99_ms: None,
        latency_max_ms: None,
        send_lag_p99_ms: None,
        send_lag_max_ms: None,
        warren: sampled
            .as_ref()
            .map(|s| WarrenSummary::from_samples(plan.app.clone(), &s.samples, s.errors)),
        rows: rows.len(),
        csv: plan.csv.clone(),
        png,
        warnings,
    };
    summary.count(&generated.outcomes);
    if let Some(e) = sampled.as_ref().and_then(|s| s.first_error.as_ref()) {
        summary
            .warnings
            .push(format!("a metrics scrape failed: {e}"));
    }
    if summary.dropped > 0 {
        summary.warnings.push(format!(
            "{} sends were dropped by the generator: --max-in-flight {} requests were outstanding",
            summary.dropped, plan.max_in_flight
        ));
    }
    if summary.send_lag_p99_ms.is_some_and(|lag| lag > 50.0) {
        summary.warnings.push(
            "the generator sent late (send lag p99 above 50 ms): the offered load was not fully met"
                .to_string(),
        );
    }
    println!("{summary}");
    Ok(summary)
}

/// A background task that ends when its handle is dropped, so that an early return (an error,
/// a panic elsewhere) leaves no sampler or progress printer running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Refuses an output path whose directory does not exist, before the run rather than after.
fn check_parent(flag: &str, path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            bail!(
                "{flag} {}: directory {} does not exist",
                path.display(),
                dir.display()
            )
        }
        _ => Ok(()),
    }
}

/// Prints one progress line to stderr every [`PROGRESS_EVERY`].
async fn report_progress(progress: Arc<load::Progress>, start: Instant, scheduled: u64) {
    let mut ticks = tokio::time::interval_at(start + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        ticks.tick().await;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        eprintln!(
            "loadtest t={:>4.0}s  sent {}/{}  ok {}  errors {}  dropped {}",
            start.elapsed().as_secs_f64(),
            get(&progress.sent),
            scheduled,
            get(&progress.ok),
            get(&progress.errors),
            get(&progress.dropped),
        );
    }
}

#[cfg(test)]
mod tests {
    /// Every source file of the crate starts with a `//!` module doc.
    #[test]
    fn every_module_has_a_doc() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in ["src", "tests"] {
            let entries = std::fs::read_dir(root.join(dir)).expect("read the crate's sources");
            for entry in entries {
                let path = entry.expect("directory entry").path();
                if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).expect("read a source file");
                    assert!(
                        text.starts_with("//!"),
                        "{} does not start with a //! module doc",
                        path.display()
                    );
                }
            }
        }
    }
}
