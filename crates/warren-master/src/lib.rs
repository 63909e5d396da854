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
pub mod applog;
pub mod autoscale;
mod body;
pub mod confinement;
mod exchange;
pub mod metrics;
mod pipes;
mod procfs;
pub mod queue;
pub mod ratelimit;
mod scaler;
pub mod stats;
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
pub use exchange::ResponseLimits;
pub use stats::AppStats;
pub use zygote::{IMPORT_TIMEOUT, try_import};

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
    /// 502: the app's response cannot be relayed (a status outside 200–599, a head over
    /// `server.max_response_headers` or `server.max_response_header_bytes`). Its worker is
    /// fine and goes back to the pool once the rest of the response was read and dropped.
    #[error("app {app}: {reason}")]
    BadResponse { app: String, reason: String },
    /// The worker was dead before the request reached it. Dispatch retries such a request on
    /// another worker; it surfaces (as 502) only when every attempt met a dead worker.
    #[error("app {app}: {reason}")]
    WorkerGone { app: String, reason: String },
    /// 504: the request ran past the app's `request_timeout_s`; its worker was killed.
    #[error("app {app}: the request ran longer than request_timeout_s = {}", limit.as_secs_f64())]
    RequestTimeout { app: String, limit: Duration },
    /// The app was removed by a reload after this request was routed to it: 503.
    #[error("app {app} was removed")]
    Retired { app: String },
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
            DispatchError::QueueFull { .. }
            | DispatchError::QueueTimeout { .. }
            | DispatchError::Retired { .. } => Some(Duration::from_secs(1)),
            DispatchError::Unavailable { retry_after, .. } => {
                Some((*retry_after).max(Duration::from_secs(1)))
            }
            _ => None,
        }
    }
}

/// Workers a request may be offered to when the first ones turn out to be dead already.
const MAX_ATTEMPTS: u32 = 3;

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
        for watch in expired {
            let pid = watch.pid();
            // Only a child of the app's running zygote: never a pid that was reused. (A worker
            // that is not is dropped at its check-in all the same: its deadline was taken.)
            if !app.is_worker(pid) {
                continue;
            }
            watch.timed_out.store(true, Relaxed);
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

/// One running generation of an app: its state, and how to stop its supervisor.
pub(crate) struct Running {
    pub(crate) app: Arc<AppState>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// How long a redeployed app's new generation may take to have a worker ready.
const READY_WAIT: Duration = Duration::from_secs(60);
/// How long an old generation may take to finish its requests after a redeploy.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// All apps' pools and supervisors.
pub struct Master {
    /// The generations that take new requests, in config order (the autoscaler reads them
    /// too).
    running: Arc<std::sync::Mutex<Vec<Running>>>,
    /// Generations draining after a redeploy or removal.
    draining: std::sync::Mutex<JoinSet<()>>,
    /// Apps removed from the config whose last generation still finishes its requests: shown
    /// as `draining` in `/metrics` until it has.
    removed: std::sync::Mutex<Vec<Arc<AppState>>>,
    /// The apps the config refuses (`Config::refused`), for `/metrics`.
    refused: std::sync::Mutex<Vec<String>>,
    worker_bin: Arc<Path>,
    confinement: Arc<Confinement>,
    /// Longest pause between two pieces of a request body.
    body_timeout: Duration,
    /// What of an app's response head the front relays.
    response_limits: ResponseLimits,
    /// Next generation number.
    generation: std::sync::atomic::AtomicU32,
    /// The autoscaler's loop, and how to stop it.
    scaler: (watch::Sender<bool>, tokio::task::JoinHandle<()>),
}

/// What a reload changed, for the log and the caller.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub redeployed: Vec<String>,
    pub removed: Vec<String>,
    /// Apps whose new generation did not come up; their old one keeps serving.
    pub failed: Vec<(String, String)>,
}

impl Master {
    /// Starts a supervisor (and so a zygote) for every app in `config`. Must be called within
    /// a tokio runtime.
    pub fn start(config: &Config, worker_bin: &Path, confinement: Arc<Confinement>) -> Master {
        let running = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop, rx) = watch::channel(false);
        let scaler = tokio::spawn(scaler::run(running.clone(), config.server.max_workers, rx));
        let master = Master {
            running,
            draining: std::sync::Mutex::new(JoinSet::new()),
            removed: std::sync::Mutex::new(Vec::new()),
            refused: std::sync::Mutex::new(config.refused.iter().map(|r| r.name.clone()).collect()),
            worker_bin: worker_bin.into(),
            confinement,
            body_timeout: config.server.body_timeout,
            response_limits: ResponseLimits {
                headers: config.server.max_response_headers,
                head_bytes: config.server.max_response_header_bytes,
            },
            generation: std::sync::atomic::AtomicU32::new(1),
            scaler: (stop, scaler),
        };
        let running: Vec<Running> = config
            .apps
            .iter()
            .map(|a| master.launch(a.clone(), 0, Arc::default()))
            .collect();
        *master.running.lock().unwrap_or_else(|e| e.into_inner()) = running;
        master
    }

    /// Starts a generation of an app, counting into `stats` (the app's, carried over from the
    /// generation it replaces; fresh for an app that is new).
    fn launch(&self, config: warren_config::App, generation: u32, stats: Arc<AppStats>) -> Running {
        let app = Arc::new(AppState::new(
            config,
            generation,
            self.response_limits,
            stats,
        ));
        let (stop, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        if app.config.limits.request_timeout.is_some() {
            tasks.spawn(watchdog(app.clone(), rx.clone()));
        }
        tasks.spawn(zygote::supervise(
            app.clone(),
            self.worker_bin.clone(),
            self.confinement.clone(),
            rx,
        ));
        Running { app, stop, tasks }
    }

    /// `/metrics` in Prometheus text format.
    pub fn metrics(&self) -> String {
        let apps = self.apps();
        let removed: Vec<Arc<AppState>> = {
            let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
            // Drained ones are gone; one added back is shown by its new generation.
            removed.retain(|r| !r.is_retired() && !apps.iter().any(|a| a.name() == r.name()));
            removed.clone()
        };
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        metrics::render(&apps, &removed, &refused)
    }

    /// The apps that take new requests, in config order.
    pub fn apps(&self) -> Vec<Arc<AppState>> {
        serving(&self.running)
    }

    /// Applies `config`: starts the apps it adds, and a new generation of each app in
    /// `redeploy` (every app of `config` when `None`) and of each app whose config changed.
    /// A new generation takes requests once one of its workers is ready; until then, and for
    /// good if it never gets there, the old one serves. Returns the apps in config order (for
    /// the router to swap to) and what changed. The generations replaced or removed are
    /// drained in the background: they finish what they hold, then stop; a request that still
    /// reaches a replaced one follows it to its successor.
    pub async fn reload(
        &self,
        config: &Config,
        redeploy: Option<&[String]>,
    ) -> (Vec<Arc<AppState>>, ReloadReport) {
        let mut report = ReloadReport::default();
        let old = self.apps();
        let find = |name: &str| old.iter().find(|a| a.name() == name);
        // Start every new generation at once, then wait for them together.
        let mut starting = Vec::new();
        for cfg in &config.apps {
            let previous = find(&cfg.name);
            let wanted = match previous {
                None => true,
                Some(p) => {
                    p.config != *cfg || redeploy.is_none_or(|names| names.contains(&cfg.name))
                }
            };
            if wanted {
                let generation = self.generation.fetch_add(1, Relaxed);
                // A redeploy keeps counting where the app was; a new app starts at zero.
                let stats = previous.map_or_else(Arc::default, |p| p.stats.clone());
                starting.push((
                    cfg.name.clone(),
                    self.launch(cfg.clone(), generation, stats),
                ));
            }
        }
        let mut ready = Vec::new();
        for (name, run) in starting {
            let Some(previous) = find(&name) else {
                // A new app: routed to at once (its requests queue while it imports).
                ready.push((name, run));
                continue;
            };
            // The new generation starts with what the old one runs (at least one worker, so
            // that it can show it works): a loaded app keeps its capacity across the swap.
            let scale = &run.app.config.scale;
            run.app
                .set_target(previous.target().max(1).clamp(scale.min.max(1), scale.max));
            match wait_ready(&run.app).await {
                Ok(()) => ready.push((name, run)),
                Err(reason) => {
                    tracing::error!(
                        app = %name,
                        %reason,
                        "the new version did not start; the running one keeps serving"
                    );
                    report.failed.push((name, reason));
                    self.drain_later(run, Duration::ZERO);
                }
            }
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut previous: Vec<Running> = std::mem::take(&mut *running);
        let mut retiring = Vec::new();
        for cfg in &config.apps {
            let old_run = previous
                .iter()
                .position(|r| r.app.name() == cfg.name)
                .map(|i| previous.swap_remove(i));
            match (ready.iter().position(|(n, _)| *n == cfg.name), old_run) {
                (Some(i), old_run) => {
                    let (_, new_run) = ready.swap_remove(i);
                    match old_run {
                        Some(o) => {
                            o.app.set_successor(new_run.app.clone());
                            report.redeployed.push(cfg.name.clone());
                            retiring.push(o);
                        }
                        None => report.added.push(cfg.name.clone()),
                    }
                    running.push(new_run);
                }
                (None, Some(o)) => running.push(o),
                (None, None) => {}
            }
        }
        // What is left was removed from the config.
        {
            let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
            for o in previous {
                report.removed.push(o.app.name().to_owned());
                removed.push(o.app.clone());
                retiring.push(o);
            }
        }
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) =
            config.refused.iter().map(|r| r.name.clone()).collect();
        let apps = running.iter().map(|r| r.app.clone()).collect();
        drop(running);
        for r in retiring {
            // Requests in progress get their whole time limit to finish.
            let wait = r
                .app
                .config
                .limits
                .request_timeout
                .map_or(DRAIN_WAIT, |t| DRAIN_WAIT.max(t + Duration::from_secs(5)));
            self.drain_later(r, wait);
        }
        (apps, report)
    }

    /// Drains `run` in the background (up to `wait`), then stops it.
    fn drain_later(&self, run: Running, wait: Duration) {
        let mut draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the drains that finished (each holds its task's result until joined).
        while draining.try_join_next().is_some() {}
        draining.spawn(drain(run, wait));
    }

    /// Runs one request on a worker of app `app`. `body` is `None` when the request has none.
    pub async fn dispatch<B>(
        &self,
        app: &Arc<AppState>,
        head: &RequestHead<'_>,
        body: Option<B>,
    ) -> Result<Response<ResponseBody>, DispatchError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display + Send,
    {
        let mut app = app;
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
        let mut dispatched;
        let result = loop {
            attempts += 1;
            let worker = match app.checkout().await {
                Ok(w) => w,
                // A redeploy replaced the app after this request was routed: its successor
                // takes it (the body is untouched until a worker is found).
                Err(DispatchError::Retired { .. }) if app.successor().is_some() => {
                    app = app.successor().expect("checked");
                    attempts -= 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let watch = worker.watch.clone();
            dispatched = tokio::time::Instant::now();
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
                    if watch.timed_out.load(Relaxed) =>
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
        // Failures too (a 502, a 504 after request_timeout_s): the time the app had them.
        app.stats.request_duration.observe(dispatched.elapsed());
        if result.is_ok() {
            app.stats.served.fetch_add(1, Relaxed);
            app.answered.fetch_add(1, Relaxed);
        }
        result
    }

    /// Stops every zygote (and with it every worker) and waits for the supervisors.
    pub async fn shutdown(self) {
        let (stop, scaler) = self.scaler;
        let _ = stop.send(true);
        let _ = scaler.await;
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        let mut draining =
            std::mem::take(&mut *self.draining.lock().unwrap_or_else(|e| e.into_inner()));
        for mut r in running {
            let _ = r.stop.send(true);
            while r.tasks.join_next().await.is_some() {}
        }
        while draining.join_next().await.is_some() {}
    }
}

/// The apps of the generations in `running`, in order.
pub(crate) fn serving(running: &std::sync::Mutex<Vec<Running>>) -> Vec<Arc<AppState>> {
    running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|r| r.app.clone())
        .collect()
}

/// Waits until `app` has a worker ready, or says why it will not.
async fn wait_ready(app: &AppState) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    loop {
        match app.health() {
            Health::Broken { reason, .. } => return Err(reason),
            Health::Ready if app.idle_workers() > 0 => return Ok(()),
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no worker was ready within {READY_WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lets an old generation finish what it holds (bounded by `wait`), then stops it.
async fn drain(mut run: Running, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let late = tokio::time::Instant::now() >= deadline;
        if run.app.try_retire(late) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !wait.is_zero() {
        tracing::info!(
            app = run.app.name(),
            generation = run.app.generation,
            "old generation drained; stopping it"
        );
    }
    let _ = run.stop.send(true);
    while run.tasks.join_next().await.is_some() {}
}
