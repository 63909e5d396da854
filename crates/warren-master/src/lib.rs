//! warren's master: it owns every app's queue and workers and turns a request into a response.
//!
//! **API Boundary:** the front calls [`Master::dispatch`] with an app index, the request head
//! and its body, and gets back an `http::Response` or a [`DispatchError`] that the front maps
//! to a status code. Nothing here knows about hyper or sockets to clients.
//!
//! Per app there is an [`AppState`] (pool, queue, counters, target worker count) and one
//! supervisor task that runs the app's zygote and forks workers up to the target.

#![forbid(unsafe_code)]

mod app;
mod body;
pub mod confinement;
mod exchange;
pub mod queue;
pub mod ratelimit;
mod stats;
mod zygote;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http::Response;
use http_body::Body;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Duration;

use warren_config::Config;
use warren_protocol::{Kind, RequestHead, put_frame};

pub use app::{AppState, Health};
pub use body::{BodyError, ResponseBody};
pub use confinement::Confinement;
pub use stats::{AppStats, StatsSnapshot};

/// The reason phrase an app gave in its status line, when it differs from the standard one
/// for the code. Stored in the response's extensions; the front passes it to the client.
#[derive(Debug, Clone)]
pub struct Reason(pub Bytes);

/// Why a request got no answer from its app. The front turns each into a status code.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// 503 with `Retry-After`: the queue is at its bound.
    #[error("the queue of app {app} is full ({max} requests waiting)")]
    QueueFull { app: String, max: usize },
    /// 503 with `Retry-After`: no worker became free in time.
    #[error("no worker of app {app} became free within {waited:?}")]
    QueueTimeout { app: String, waited: Duration },
    /// 503 with `Retry-After`: the app cannot run now.
    #[error("app {app} is unavailable: {reason}")]
    Unavailable {
        app: String,
        reason: String,
        retry_after: Duration,
    },
    /// 502: the worker died or broke the protocol before a response head.
    #[error("app {app}: {reason}")]
    WorkerFailed { app: String, reason: String },
    /// The worker was dead before the request reached it. Dispatch retries such a request on
    /// another worker; it surfaces (as 502) only when every attempt met a dead worker.
    #[error("app {app}: {reason}")]
    WorkerGone { app: String, reason: String },
    /// 504: the request ran past the app's `request_timeout_s`; its worker was killed.
    #[error("app {app}: the request ran longer than request_timeout_s = {}", limit.as_secs_f64())]
    RequestTimeout { app: String, limit: Duration },
    /// 413.
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// 408: the client stopped sending its body.
    #[error("the client sent no body data for {0:?}")]
    BodyTimeout(Duration),
}

impl DispatchError {
    /// The `Retry-After` to advertise, for errors a client may retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DispatchError::QueueFull { .. } | DispatchError::QueueTimeout { .. } => {
                Some(Duration::from_secs(1))
            }
            DispatchError::Unavailable { retry_after, .. } => {
                Some((*retry_after).max(Duration::from_secs(1)))
            }
            _ => None,
        }
    }
}

/// Workers a request may be offered to when the first ones turn out to be dead already.
const MAX_ATTEMPTS: u32 = 3;

/// Counts a request as in flight for as long as it lives.
struct InFlight<'a>(&'a AppStats);

impl<'a> InFlight<'a> {
    fn new(stats: &'a AppStats) -> Self {
        stats.in_flight.fetch_add(1, Relaxed);
        InFlight(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Kills the workers of `app` whose request ran past `request_timeout_s` (uWSGI's harakiri).
/// The exchange sees its worker die and answers 504; the supervisor forks a replacement.
async fn watchdog(app: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let limit = app.config.limits.request_timeout.unwrap_or_default();
    // Checked at least every tenth of the limit (a request overruns by at most that much),
    // at most every 10 ms, and at least every second.
    let tick = (limit / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        let now = tokio::time::Instant::now();
        let (expired, next) = app.expired(now);
        for pid in expired {
            app.stats.timed_out.fetch_add(1, Relaxed);
            tracing::warn!(
                app = app.name(),
                pid,
                request_timeout_s = limit.as_secs_f64(),
                "request ran past request_timeout_s; killing its worker"
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let wake = next.map_or(now + tick, |n| n.min(now + tick));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// All apps' pools and supervisors.
pub struct Master {
    apps: Vec<Arc<AppState>>,
    /// Longest pause between two pieces of a request body.
    body_timeout: Duration,
    shutdown: watch::Sender<bool>,
    supervisors: JoinSet<()>,
}

impl Master {
    /// Starts a supervisor (and so a zygote) for every app in `config`. Must be called within
    /// a tokio runtime.
    pub fn start(config: &Config, worker_bin: &Path, confinement: Arc<Confinement>) -> Master {
        let (shutdown, rx) = watch::channel(false);
        let worker_bin: Arc<Path> = worker_bin.into();
        let mut supervisors = JoinSet::new();
        let apps: Vec<Arc<AppState>> = config
            .apps
            .iter()
            .map(|a| Arc::new(AppState::new(a.clone())))
            .collect();
        for app in &apps {
            if app.config.limits.request_timeout.is_some() {
                supervisors.spawn(watchdog(app.clone(), rx.clone()));
            }
            supervisors.spawn(zygote::supervise(
                app.clone(),
                worker_bin.clone(),
                confinement.clone(),
                rx.clone(),
            ));
        }
        Master {
            apps,
            body_timeout: config.server.body_timeout,
            shutdown,
            supervisors,
        }
    }

    /// The apps, in config order (the index is what [`Master::dispatch`] takes).
    pub fn apps(&self) -> &[Arc<AppState>] {
        &self.apps
    }

    /// Runs one request on a worker of app `app`. `body` is `None` when the request has none.
    pub async fn dispatch<B>(
        &self,
        app: usize,
        head: &RequestHead<'_>,
        body: Option<B>,
    ) -> Result<Response<ResponseBody>, DispatchError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display + Send,
    {
        let app = &self.apps[app];
        if head
            .content_length
            .is_some_and(|n| n > app.config.max_body_bytes)
        {
            return Err(DispatchError::BodyTooLarge {
                limit: app.config.max_body_bytes,
            });
        }
        let mut frame = Vec::with_capacity(256 + head.headers.len() * 48);
        head.encode_frame(&mut frame);
        if body.is_none() {
            put_frame(&mut frame, Kind::BodyEnd, b"");
        }
        // Shared, not copied, between attempts.
        let frame = Bytes::from(frame);
        let head_request = head.method == b"HEAD";
        let mut body = body;
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let worker = app.checkout().await?;
            let timed_out = worker.timed_out.clone();
            // A guard, not a pair of calls: the front may drop this future when its client
            // leaves.
            let _in_flight = InFlight::new(&app.stats);
            let result = match body.take() {
                None => {
                    exchange::without_body(app.clone(), worker, frame.clone(), head_request).await
                }
                Some(b) => {
                    let limits = exchange::BodyLimits {
                        declared: head.content_length,
                        max: app.config.max_body_bytes,
                        idle: self.body_timeout,
                    };
                    exchange::with_body(app.clone(), worker, frame.clone(), b, limits).await
                }
            };
            match result {
                // The watchdog killed the worker: this request is why.
                Err(DispatchError::WorkerFailed { .. } | DispatchError::WorkerGone { .. })
                    if timed_out.load(Relaxed) =>
                {
                    break Err(DispatchError::RequestTimeout {
                        app: app.name().to_owned(),
                        limit: app.config.limits.request_timeout.unwrap_or_default(),
                    });
                }
                // Only a request without a body can be retried: a body is consumed once.
                Err(DispatchError::WorkerGone { reason, .. })
                    if attempts < MAX_ATTEMPTS && head.content_length == Some(0) =>
                {
                    tracing::info!(app = app.name(), reason, "retrying on another worker");
                }
                other => break other,
            }
        };
        let counter = if result.is_ok() {
            &app.stats.served
        } else {
            &app.stats.rejected
        };
        counter.fetch_add(1, Relaxed);
        result
    }

    /// Stops every zygote (and with it every worker) and waits for the supervisors.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.supervisors.join_next().await.is_some() {}
    }
}
