//! One app's pool: its idle workers, its queue of waiting requests, and its health.
//!
//! A request takes an idle worker if there is one ([`AppState::checkout`]); otherwise it waits
//! in the app's queue for one, up to the queue timeout. A worker coming back
//! ([`AppState::checkin`]) goes straight to the oldest live waiter, or to the idle list. The
//! lock guards only these lists and is never held across an await or any I/O.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::net::UnixStream;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Duration, Instant};

use warren_config::App;

use crate::DispatchError;
use crate::queue::Queue;
use crate::ratelimit::{APP_LOG_BURST, APP_LOG_PER_SECOND, TokenBucket};
use crate::stats::AppStats;

/// The master's connection to one worker process.
#[derive(Debug)]
pub struct WorkerConn {
    pub(crate) stream: UnixStream,
    /// Bytes read from the worker and not yet consumed; kept across requests.
    pub(crate) rbuf: BytesMut,
    pub pid: i32,
}

impl WorkerConn {
    pub(crate) fn new(stream: UnixStream, pid: i32) -> Self {
        WorkerConn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            pid,
        }
    }
}

/// Whether the app can take requests.
#[derive(Debug, Clone)]
pub enum Health {
    /// The zygote is importing the app; requests wait in the queue.
    Starting,
    Ready,
    /// The app cannot run now (it failed to import); requests get 503 until `until`.
    Broken {
        reason: String,
        until: Instant,
    },
}

struct Pool {
    /// Idle workers, most recently used last (reused first: its caches are warm).
    idle: Vec<WorkerConn>,
    queue: Queue<oneshot::Sender<WorkerConn>>,
    health: Health,
    /// Workers forked or being forked and not yet exited.
    live: usize,
}

pub struct AppState {
    pub config: App,
    pool: Mutex<Pool>,
    pub stats: AppStats,
    /// How many workers the app should have; the supervisor forks up to it. Fixed by config
    /// for now; the autoscaler will set it.
    target: AtomicUsize,
    /// Wakes the supervisor when `target` changed or a worker was lost.
    pub(crate) wake: Notify,
    /// Budget for log lines this app can cause at will.
    log_budget: Mutex<TokenBucket>,
}

impl AppState {
    pub(crate) fn new(config: App) -> Self {
        let target = config.workers;
        AppState {
            pool: Mutex::new(Pool {
                idle: Vec::with_capacity(target),
                queue: Queue::new(config.queue_max),
                health: Health::Starting,
                live: 0,
            }),
            config,
            stats: AppStats::default(),
            target: AtomicUsize::new(target),
            wake: Notify::new(),
            log_budget: Mutex::new(TokenBucket::new(
                APP_LOG_PER_SECOND,
                APP_LOG_BURST,
                Instant::now(),
            )),
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding this lock is a bug; the lists stay consistent either way.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a log line caused by this app may be written now. When lines were held back
    /// since the last one, says how many, once.
    pub fn may_log(&self) -> bool {
        let taken = self
            .log_budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(Instant::now());
        match taken {
            Some(0) => true,
            Some(n) => {
                tracing::warn!(
                    app = self.name(),
                    suppressed = n,
                    "app log lines suppressed (rate limit)"
                );
                true
            }
            None => false,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn target(&self) -> usize {
        self.target.load(Relaxed)
    }

    /// Sets how many workers the app should run (the autoscaler's output).
    pub fn set_target(&self, n: usize) {
        self.target.store(n, Relaxed);
        self.wake.notify_one();
    }

    pub fn health(&self) -> Health {
        self.pool().health.clone()
    }

    pub fn idle_workers(&self) -> usize {
        self.pool().idle.len()
    }

    pub fn live_workers(&self) -> usize {
        self.pool().live
    }

    /// Takes an idle worker, or waits in the queue for one.
    pub(crate) async fn checkout(self: &Arc<Self>) -> Result<WorkerConn, DispatchError> {
        let (id, rx) = {
            let mut pool = self.pool();
            if let Some(w) = pool.idle.pop() {
                self.stats.record_dispatch(Duration::ZERO);
                return Ok(w);
            }
            if let Health::Broken { .. } = &pool.health {
                return Err(self.unavailable(&pool.health));
            }
            let (tx, rx) = oneshot::channel();
            let now = Instant::now();
            let id = match pool.queue.push(now, tx) {
                Ok(id) => id,
                Err(tx) => {
                    // Requests whose clients left may still hold places: clear them, retry once.
                    pool.queue.retain(|tx| !tx.is_closed());
                    pool.queue
                        .push(now, tx)
                        .map_err(|_| DispatchError::QueueFull {
                            app: self.name().to_owned(),
                            max: self.config.queue_max,
                        })?
                }
            };
            self.stats.queued.store(pool.queue.len() as u64, Relaxed);
            (id, rx)
        };
        let mut waiting = Waiting {
            app: self,
            id,
            rx: Some(rx),
        };
        let rx = waiting.rx.as_mut().expect("set above");
        match tokio::time::timeout(self.config.queue_timeout, rx).await {
            Ok(Ok(w)) => {
                waiting.rx = None;
                Ok(w)
            }
            Ok(Err(_)) => {
                waiting.rx = None;
                Err(self.unavailable(&self.health()))
            }
            Err(_) => Err(DispatchError::QueueTimeout {
                app: self.name().to_owned(),
                waited: self.config.queue_timeout,
            }),
        }
    }

    /// The 503 for a request the app cannot take in state `health`.
    fn unavailable(&self, health: &Health) -> DispatchError {
        match health {
            Health::Broken { reason, until } => DispatchError::Unavailable {
                app: self.name().to_owned(),
                reason: reason.clone(),
                retry_after: until.saturating_duration_since(Instant::now()),
            },
            _ => DispatchError::Unavailable {
                app: self.name().to_owned(),
                reason: "the app is restarting".into(),
                retry_after: Duration::from_secs(1),
            },
        }
    }

    /// Returns a worker that finished a request: to the oldest live waiter, else to idle.
    pub(crate) fn checkin(&self, mut w: WorkerConn) {
        let mut pool = self.pool();
        let now = Instant::now();
        while let Some(entry) = pool.queue.pop_live(|tx| !tx.is_closed()) {
            match entry.item.send(w) {
                Ok(()) => {
                    self.stats.queued.store(pool.queue.len() as u64, Relaxed);
                    self.stats
                        .record_dispatch(now.saturating_duration_since(entry.enqueued));
                    return;
                }
                Err(back) => w = back,
            }
        }
        self.stats.queued.store(0, Relaxed);
        pool.idle.push(w);
    }

    /// A fork was requested: counts it as live until it exits.
    pub(crate) fn worker_forking(&self) {
        self.pool().live += 1;
        self.stats.spawned.fetch_add(1, Relaxed);
    }

    /// A worker process exited (or never started): forget it, and wake the supervisor.
    pub(crate) fn worker_gone(&self, pid: Option<i32>) {
        let mut pool = self.pool();
        pool.live = pool.live.saturating_sub(1);
        if let Some(pid) = pid {
            pool.idle.retain(|w| w.pid != pid);
        }
        self.stats.exited.fetch_add(1, Relaxed);
        drop(pool);
        self.wake.notify_one();
    }

    pub(crate) fn set_health(&self, health: Health) {
        let mut pool = self.pool();
        if let Health::Broken { .. } = health {
            // Waiters get their 503 now instead of at their timeout.
            pool.queue.drain().for_each(drop);
            pool.idle.clear();
            self.stats.queued.store(0, Relaxed);
        }
        pool.health = health;
    }

    /// Forgets every worker (the zygote is gone, and its workers with it).
    pub(crate) fn reset_workers(&self) {
        let mut pool = self.pool();
        pool.idle.clear();
        pool.live = 0;
    }
}

/// A request's place in the queue. Dropping it (client gone, timeout) takes it out of the
/// queue; a worker handed over in the same instant goes back to the pool, not lost.
struct Waiting<'a> {
    app: &'a AppState,
    id: u64,
    rx: Option<oneshot::Receiver<WorkerConn>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        {
            let mut pool = self.app.pool();
            pool.queue.remove(self.id);
            self.app
                .stats
                .queued
                .store(pool.queue.len() as u64, Relaxed);
        }
        rx.close();
        if let Ok(w) = rx.try_recv() {
            self.app.checkin(w);
        }
    }
}
