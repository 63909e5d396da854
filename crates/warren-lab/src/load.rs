//! The I/O half of the lab: the open-loop sender and the metrics sampler.
//!
//! The sender walks the precomputed [`Schedule`], sleeps until each instant and hands the
//! request to its own task, so a slow response never delays the next send. Requests go over
//! HTTP/1.1 keep-alive connections from a hyper-util pool: a connection that finished its
//! request is reused, a new one is opened when none is idle. `--max-in-flight` bounds the
//! requests outstanding; a send that would exceed it is recorded as dropped, never skipped
//! silently. Every scheduled send yields exactly one [`Outcome`].
//!
//! The sampler scrapes the metrics endpoint on its own connection pool once a second, from
//! the load's start until the sender has drained, plus one last scrape at the end.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::header::HOST;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until, timeout};

use crate::args::{Plan, Target};
use crate::metrics::{AppMetrics, apps_seen};
use crate::prom;
use crate::schedule::Schedule;
use crate::series::{MetricsSample, Outcome, RequestResult};

/// The pooled HTTP/1.1 client both the sender and the sampler use.
type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Distinct transport-error messages kept for the summary; more are counted under "other".
const MAX_ERROR_KINDS: usize = 16;

/// The largest metrics page read (a scrape is a few kB; this only bounds a broken endpoint).
const MAX_METRICS_BYTES: usize = 16 << 20;

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

fn client(max_idle: usize, connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

/// Seconds from `start` to `now` (negative before the start).
fn since(start: Instant, now: Instant) -> f64 {
    if now >= start {
        now.duration_since(start).as_secs_f64()
    } else {
        -start.duration_since(now).as_secs_f64()
    }
}

/// An error and its causes on one line ("client error (Connect): tcp connect error: ...").
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Live counters, read by the progress line of long runs.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub dropped: AtomicU64,
}

/// What the sender produced.
#[derive(Debug, Default)]
pub(crate) struct Generated {
    /// One per scheduled send that came due, in no particular order.
    pub outcomes: Vec<Outcome>,
    /// Transport-error messages and how often each occurred.
    pub transport_errors: BTreeMap<String, u64>,
    /// The schedule was cut short by `stop`.
    pub interrupted: bool,
}

/// Runs the schedule of `plan` from `start`; stops early (no further sends) when `stop`
/// completes, then waits for the requests in flight (each bounded by the timeout).
pub(crate) async fn generate(
    plan: &Plan,
    start: Instant,
    progress: Arc<Progress>,
    stop: impl Future<Output = ()>,
) -> Result<Generated, tokio::task::JoinError> {
    let client = client(plan.max_in_flight, plan.timeout);
    let permits = Arc::new(Semaphore::new(plan.max_in_flight));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Outcome, Option<String>)>();
    let expected = usize::try_from(plan.scheduled).unwrap_or(0);
    let collector = tokio::spawn(async move {
        let mut out = Generated {
            outcomes: Vec::with_capacity(expected),
            ..Generated::default()
        };
        while let Some((outcome, error)) = rx.recv().await {
            out.outcomes.push(outcome);
            if let Some(e) = error {
                let key = if out.transport_errors.len() < MAX_ERROR_KINDS
                    || out.transport_errors.contains_key(&e)
                {
                    e
                } else {
                    "other".to_string()
                };
                *out.transport_errors.entry(key).or_insert(0) += 1;
            }
        }
        out
    });

    let mut interrupted = false;
    tokio::pin!(stop);
    for offset in Schedule::new(plan.pattern, plan.duration_s) {
        tokio::select! {
            biased;
            () = &mut stop => {
                interrupted = true;
                break;
            }
            () = sleep_until(start + offset) => {}
        }
        let scheduled = offset.as_secs_f64();
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            progress.dropped.fetch_add(1, Ordering::Relaxed);
            let outcome = Outcome {
                scheduled,
                sent: None,
                finished: since(start, Instant::now()),
                result: RequestResult::Dropped,
            };
            let _ = tx.send((outcome, None));
            continue;
        };
        let tx = tx.clone();
        let client = client.clone();
        let target = plan.target.clone();
        let limit = plan.timeout;
        let progress = progress.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            progress.sent.fetch_add(1, Ordering::Relaxed);
            let (result, error) = match timeout(limit, exchange(&client, &target)).await {
                Ok(Ok(status)) => (RequestResult::Status(status), None),
                Ok(Err(e)) => (RequestResult::Transport, Some(e)),
                Err(_) => (RequestResult::Timeout, None),
            };
            let finished = Instant::now();
            drop(permit);
            let counter = match result {
                RequestResult::Status(s) if (200..300).contains(&s) => &progress.ok,
                _ => &progress.errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let outcome = Outcome {
                scheduled,
                sent: Some(since(start, sent)),
                finished: since(start, finished),
                result,
            };
            let _ = tx.send((outcome, error));
        });
    }
    // A pattern whose rate ends at zero has no sends left before the end of the run: the run
    // still lasts its whole duration, so that what follows the load (scale-down) is recorded.
    if !interrupted {
        tokio::select! {
            biased;
            () = &mut stop => interrupted = true,
            () = sleep_until(start + Duration::from_secs_f64(plan.duration_s)) => {}
        }
    }
    drop(tx);
    let mut generated = collector.await?;
    generated.interrupted = interrupted;
    Ok(generated)
}

/// One GET: the status once the whole body has been read (and dropped), or the error.
async fn exchange(client: &HttpClient, target: &Target) -> Result<u16, String> {
    let request = Request::get(target.uri.clone())
        .header(HOST, target.host.clone())
        .body(Empty::new())
        .map_err(|e| chain(&e))?;
    let response = client.request(request).await.map_err(|e| chain(&e))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| chain(&e))?;
    }
    Ok(status)
}

/// One scrape: the parsed samples, or why there are none.
pub(crate) async fn scrape(
    client: &HttpClient,
    target: &Target,
) -> Result<Vec<prom::Sample>, String> {
    let fetch = async {
        let request = Request::get(target.uri.clone())
            .header(HOST, target.host.clone())
            .body(Empty::new())
            .map_err(|e| chain(&e))?;
        let response = client.request(request).await.map_err(|e| chain(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_METRICS_BYTES)
            .collect()
            .await
            .map_err(|e| chain(e.as_ref()))?
            .to_bytes();
        Ok(prom::parse(&String::from_utf8_lossy(&body)))
    };
    timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {SCRAPE_TIMEOUT:?}")))
}

/// A client for the metrics endpoint (its own pool, so scrapes never wait behind the load).
pub(crate) fn metrics_client() -> HttpClient {
    client(2, SCRAPE_TIMEOUT)
}

/// Checks the endpoint once before the load starts: an error if it cannot be read, and a
/// warning if it has nothing for the selected app.
pub(crate) async fn probe_metrics(
    client: &HttpClient,
    target: &Target,
    app: Option<&str>,
) -> Result<Option<String>, String> {
    let samples = scrape(client, target).await?;
    if !AppMetrics::from_samples(&samples, app).is_empty() {
        return Ok(None);
    }
    let seen = apps_seen(&samples);
    let seen = if seen.is_empty() {
        "none".to_string()
    } else {
        seen.into_iter().collect::<Vec<_>>().join(", ")
    };
    Ok(Some(match app {
        Some(a) => format!(
            "{} has no warren_app_* series with app=\"{a}\" (apps seen: {seen}); the metric columns stay empty until it appears",
            target.url
        ),
        None => format!(
            "{} has no warren_app_* series yet; the metric columns stay empty until they appear",
            target.url
        ),
    }))
}

/// What the sampler collected.
#[derive(Debug, Default)]
pub(crate) struct Sampled {
    /// Scrapes that succeeded, in time order.
    pub samples: Vec<MetricsSample>,
    /// Scrapes that failed.
    pub errors: u64,
    /// The first failure's reason.
    pub first_error: Option<String>,
}

/// Scrapes once a second from `start` until `stop` turns true, then once more.
pub(crate) async fn sample_metrics(
    client: HttpClient,
    target: Target,
    app: Option<String>,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> Sampled {
    let mut out = Sampled::default();
    let mut ticks = interval_at(start, Duration::from_secs(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let last = tokio::select! {
            _ = ticks.tick() => false,
            changed = stop.changed() => changed.is_err() || *stop.borrow(),
        };
        let t = since(start, Instant::now());
        match scrape(&client, &target).await {
            Ok(samples) => out.samples.push(MetricsSample {
                t,
                metrics: AppMetrics::from_samples(&samples, app.as_deref()),
            }),
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
        }
        if last {
            return out;
        }
    }
}

/// Raises the soft open-file limit so that `max_in_flight` sockets fit; a warning if the hard
/// limit does not allow it (connections beyond it then fail as transport errors).
pub(crate) fn raise_nofile(max_in_flight: usize) -> Option<String> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = max_in_flight as u64 + 128;
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => return Some(format!("cannot read the open-file limit: {e}")),
    };
    if soft >= want {
        return None;
    }
    let new_soft = want.min(hard);
    if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, new_soft, hard) {
        return Some(format!(
            "open-file limit {soft} is below --max-in-flight {max_in_flight} and could not be raised: {e}"
        ));
    }
    (new_soft < want).then(|| {
        format!(
            "open-file limit {new_soft} (hard) is below --max-in-flight {max_in_flight} + 128; \
             connections beyond it will fail as transport errors"
        )
    })
}
