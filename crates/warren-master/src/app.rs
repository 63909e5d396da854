//! One app's pool: its idle workers, its queue of waiting requests, and its health.
//!
//! A request takes an idle worker if there is one ([`AppState::checkout`]); otherwise it waits
//! in the app's queue for one, up to the queue timeout. A worker coming back
//! ([`AppState::checkin`]) goes straight to the oldest live waiter, or to the idle list. The
//! lock guards only these lists and is never held across an await or any I/O.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Duration, Instant};

use warren_config::App;

use crate::DispatchError;
use crate::exchange::ResponseLimits;
use crate::pipes::WorkerPipes;
use crate::queue::Queue;
use crate::ratelimit::{APP_LOG_BURST, APP_LOG_PER_SECOND, TokenBucket};
use crate::stats::AppStats;

/// The master's connection to one worker process.
#[derive(Debug)]
pub struct WorkerConn {
    pub(crate) pipes: WorkerPipes,
    /// Bytes read from the worker and not yet consumed; kept across requests.
    pub(crate) rbuf: BytesMut,
    pub pid: i32,
    /// Requests this worker has been given.
    pub(crate) requests: u64,
    /// Its request clock, shared with the watchdog.
    pub(crate) watch: Arc<Watch>,
    /// When it last went idle.
    idle_since: Instant,
    /// The zygote it was forked from (see [`AppState::reset_workers`]).
    epoch: u64,
}

impl WorkerConn {
    pub(crate) fn new(pipes: WorkerPipes, pid: i32, epoch: u64) -> Self {
        WorkerConn {
            epoch,
            pipes,
            rbuf: BytesMut::with_capacity(16 * 1024),
            pid,
            requests: 0,
            watch: Arc::new(Watch {
                pid,
                deadline: AtomicU64::new(0),
                timed_out: AtomicBool::new(false),
            }),
            idle_since: Instant::now(),
        }
    }
}

impl Watch {
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }
}

/// A worker's request clock, registered with its app for the watchdog once, when the worker
/// joins the pool. Whoever sets the deadline back to 0 first owns the request's end: the
/// worker checking in (normal end), or the watchdog (it kills the worker, which is then never
/// pooled again). No lock and no allocation per request.
#[derive(Debug)]
pub(crate) struct Watch {
    pid: i32,
    /// When the request in progress must be done, in ns since [`AppState`]'s clock; 0: none.
    deadline: AtomicU64,
    /// Set by the watchdog just before it kills the worker: its request gets 504.
    pub(crate) timed_out: AtomicBool,
}

/// Whether the app can take requests.
#[derive(Debug, Clone)]
pub enum Health {
    /// The zygote is importing the app; requests wait in the queue.
    Starting,
    Ready,
    /// At zero workers with no zygote (`scale.keep_zygote = false`): a request waits while
    /// the app is imported again.
    Parked,
    /// The app cannot run now (it failed to import, its workers keep dying); requests get 503
    /// until `until`. `refused`: it cannot run as configured on this machine (its sandbox),
    /// and will not be tried again before a reload.
    Broken {
        reason: String,
        until: Instant,
        refused: bool,
    },
}

/// The values of `warren_app_state`'s `state` label, in the order `/metrics` lists them.
pub const STATES: [&str; 6] = [
    "serving",
    "at_zero",
    "crash_loop",
    "draining",
    "starting",
    "refused",
];

struct Pool {
    /// Idle workers, most recently used last (reused first: its caches are warm).
    idle: Vec<WorkerConn>,
    queue: Queue<oneshot::Sender<WorkerConn>>,
    health: Health,
    /// Workers forked or being forked and not yet exited.
    live: usize,
    /// Of those, the ones that have not said `READY` yet.
    starting: usize,
    /// The request clocks of the workers in the pool (with a request timeout).
    watched: Vec<Arc<Watch>>,
    /// Replaced or removed, and drained: takes no request any more.
    retired: bool,
    /// Bumped when the zygote goes (its workers with it): a worker of an earlier epoch that
    /// comes back from a request is dropped, not pooled.
    epoch: u64,
    /// Host pid of the running zygote (0: none).
    zygote: i32,
}

pub struct AppState {
    pub config: App,
    /// 0 for the app as first started; each redeploy starts a new generation next to the old.
    pub generation: u32,
    /// The generation that replaced this one (set when a redeploy swaps it in): requests that
    /// reach this one after it retired go there.
    successor: std::sync::OnceLock<Arc<AppState>>,
    pool: Mutex<Pool>,
    /// The app's counters, shared by its generations (see `stats.rs`).
    pub stats: Arc<AppStats>,
    /// Requests waiting in this generation's queue now (read without the pool's lock by the
    /// autoscaler and `/metrics`).
    pub(crate) queue_len: AtomicU64,
    /// Requests this generation's workers answered: a crash loop is told from an app that
    /// mostly works by these, which the old generation of a redeploy must not move.
    pub(crate) answered: AtomicU64,
    /// How many workers the app should have; the supervisor forks up to it. Fixed by config
    /// for now; the autoscaler will set it.
    target: AtomicUsize,
    /// Wakes the supervisor when `target` changed or a worker was lost.
    pub(crate) wake: Notify,
    /// The origin of the watch deadlines.
    clock: Instant,
    /// Budget for log lines this app can cause at will.
    log_budget: Mutex<TokenBucket>,
    /// What of a response the front relays (`server.max_response_*`); a generation keeps the
    /// limits it started with.
    pub(crate) response_limits: ResponseLimits,
}

impl AppState {
    /// `stats`: the app's counters, carried over from the generation this one replaces.
    pub(crate) fn new(
        config: App,
        generation: u32,
        response_limits: ResponseLimits,
        stats: Arc<AppStats>,
    ) -> Self {
        let target = config.workers;
        AppState {
            response_limits,
            clock: Instant::now(),
            generation,
            successor: std::sync::OnceLock::new(),
            pool: Mutex::new(Pool {
                idle: Vec::with_capacity(target),
                queue: Queue::new(config.queue_max),
                health: Health::Starting,
                live: 0,
                starting: 0,
                watched: Vec::new(),
                retired: false,
                epoch: 0,
                zygote: 0,
            }),
            config,
            stats,
            queue_len: AtomicU64::new(0),
            answered: AtomicU64::new(0),
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
        self.may_log_lines(1)
    }

    /// [`AppState::may_log`] for one event of `lines` lines (a traceback), which costs them
    /// all: grouping lines into one event does not let an app log more.
    pub fn may_log_lines(&self, lines: usize) -> bool {
        let taken = self
            .log_budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_n(lines, Instant::now());
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

    /// The name of this generation's cgroup: `NAME`, then `NAME@GEN` for redeploys.
    pub fn group_name(&self) -> String {
        match self.generation {
            0 => self.config.name.clone(),
            g => format!("{}@{g}", self.config.name),
        }
    }

    /// Where requests go once this generation retired.
    pub(crate) fn set_successor(&self, next: Arc<AppState>) {
        let _ = self.successor.set(next);
    }

    pub(crate) fn successor(&self) -> Option<&Arc<AppState>> {
        self.successor.get()
    }

    /// Retires the app if it is drained: nothing queued, every live worker idle. From then on
    /// [`AppState::checkout`] refuses with [`DispatchError::Retired`]. `force` retires it
    /// whatever runs (the drain timed out).
    pub(crate) fn try_retire(&self, force: bool) -> bool {
        let mut pool = self.pool();
        let drained = pool.queue.is_empty() && pool.idle.len() >= pool.live;
        if drained || force {
            pool.retired = true;
        }
        pool.retired
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

    /// This generation's `warren_app_state` (one of [`STATES`]), once it is serving or
    /// trying to: a retired generation is `draining`, whatever its health.
    pub fn state(&self) -> &'static str {
        let pool = self.pool();
        if pool.retired {
            return "draining";
        }
        match &pool.health {
            Health::Broken { refused: true, .. } => "refused",
            Health::Broken { .. } => "crash_loop",
            Health::Starting => "starting",
            Health::Parked => "at_zero",
            Health::Ready if pool.live == 0 && self.target() == 0 => "at_zero",
            Health::Ready => "serving",
        }
    }

    /// Whether this generation finished draining and takes no request any more.
    pub(crate) fn is_retired(&self) -> bool {
        self.pool().retired
    }

    /// Requests waiting in the queue now, without the pool's lock.
    pub fn queue_len(&self) -> u64 {
        self.queue_len.load(Relaxed)
    }

    pub fn idle_workers(&self) -> usize {
        self.pool().idle.len()
    }

    pub fn live_workers(&self) -> usize {
        self.pool().live
    }

    /// Takes an idle worker, or waits in the queue for one.
    pub(crate) async fn checkout(self: &Arc<Self>) -> Result<WorkerConn, DispatchError> {
        let (id, rx, arrived, from_zero) = {
            let mut pool = self.pool();
            if pool.retired {
                return Err(DispatchError::Retired {
                    app: self.name().to_owned(),
                });
            }
            if let Some(mut w) = pool.idle.pop() {
                drop(pool);
                self.stats.record_dispatch(Duration::ZERO);
                self.begin(&mut w, Instant::now());
                return Ok(w);
            }
            if let Health::Broken { .. } = &pool.health {
                return Err(self.unavailable(&pool.health));
            }
            let from_zero = pool.live == 0;
            if from_zero {
                self.wake_from_zero();
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
            self.queue_len.store(pool.queue.len() as u64, Relaxed);
            (id, rx, now, from_zero)
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
                let waited = arrived.elapsed();
                self.stats.cold_start.observe(waited);
                if from_zero {
                    self.stats.from_zero.observe(waited);
                }
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
            Health::Broken { reason, until, .. } => DispatchError::Unavailable {
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

    /// A worker starts a request: counted, and its deadline set when requests have a limit.
    fn begin(&self, w: &mut WorkerConn, now: Instant) {
        w.requests += 1;
        if let Some(limit) = self.config.limits.request_timeout {
            w.watch.deadline.store(self.nanos(now + limit), Relaxed);
        }
    }

    /// `t` on the watch clock (never 0 for a time after the clock's start).
    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.clock)
            .as_nanos()
            .clamp(1, u64::MAX as u128) as u64
    }

    /// An app at zero with a request waiting: a worker is asked for now, not at the
    /// autoscaler's next tick.
    fn wake_from_zero(&self) {
        if self.target() == 0 {
            self.set_target(1);
        }
    }

    /// Whether a worker that finished a request should leave rather than take another one
    /// (`max_requests`, `max_worker_rss_mb`); the reason, to log.
    fn retire_reason(&self, w: &WorkerConn) -> Option<String> {
        let limits = &self.config.limits;
        if limits.max_requests > 0 && w.requests >= limits.max_requests {
            return Some(format!("served max_requests = {}", limits.max_requests));
        }
        if limits.max_worker_rss_bytes > 0 && w.requests > 0 {
            let rss = crate::procfs::resident_bytes(&w.pid.to_string()).unwrap_or(0);
            if rss > limits.max_worker_rss_bytes {
                return Some(format!(
                    "resident memory {} MiB is over max_worker_rss_mb = {}",
                    rss >> 20,
                    limits.max_worker_rss_bytes >> 20
                ));
            }
        }
        None
    }

    /// Returns a worker that finished a request: to the oldest live waiter, else to idle; or
    /// retires it (its pipes close, it exits, the supervisor forks a fresh one).
    pub(crate) fn checkin(&self, mut w: WorkerConn) {
        if w.requests > 0
            && self.config.limits.request_timeout.is_some()
            && w.watch.deadline.swap(0, AcqRel) == 0
        {
            // The watchdog took this request's end first: it is killing the worker.
            return;
        }
        let retire = self.retire_reason(&w);
        let mut pool = self.pool();
        if w.epoch != pool.epoch {
            // Its zygote is gone, and this worker with it: never offer it again.
            return;
        }
        if let Some(why) = retire {
            drop(pool);
            self.stats.recycled.fetch_add(1, Relaxed);
            if self.may_log() {
                tracing::info!(app = self.name(), pid = w.pid, "retiring worker: {why}");
            }
            return;
        }
        let now = Instant::now();
        while let Some(entry) = pool.queue.pop_live(|tx| !tx.is_closed()) {
            self.begin(&mut w, now);
            match entry.item.send(w) {
                Ok(()) => {
                    self.queue_len.store(pool.queue.len() as u64, Relaxed);
                    self.stats
                        .record_dispatch(now.saturating_duration_since(entry.enqueued));
                    return;
                }
                Err(mut back) => {
                    back.requests -= 1;
                    back.watch.deadline.store(0, Relaxed);
                    w = back;
                }
            }
        }
        self.queue_len.store(0, Relaxed);
        w.idle_since = now;
        pool.idle.push(w);
    }

    /// A fork was requested: counts it as live until it exits, and as starting until it is
    /// ready.
    pub(crate) fn worker_forking(&self) {
        let mut pool = self.pool();
        pool.live += 1;
        pool.starting += 1;
        self.stats.spawned.fetch_add(1, Relaxed);
    }

    /// A worker forked from the zygote of `epoch` said `READY`: it joins the pool (unless that
    /// zygote is gone already).
    pub(crate) fn adopt(&self, w: WorkerConn, epoch: u64) {
        {
            let mut pool = self.pool();
            if pool.epoch != epoch {
                return;
            }
            pool.starting = pool.starting.saturating_sub(1);
            if self.config.limits.request_timeout.is_some() {
                pool.watched.push(w.watch.clone());
            }
        }
        self.checkin(w);
    }

    /// A worker forked from the zygote of `epoch` will never say `READY`.
    pub(crate) fn not_started(&self, epoch: u64) {
        let mut pool = self.pool();
        if pool.epoch == epoch {
            pool.starting = pool.starting.saturating_sub(1);
        }
    }

    /// The zygote could not fork a worker that was asked for.
    pub(crate) fn fork_failed(&self) {
        {
            let mut pool = self.pool();
            pool.starting = pool.starting.saturating_sub(1);
        }
        self.worker_gone(None);
    }

    /// Workers now: (live, idle, starting), and how long each idle one has been idle,
    /// longest first.
    pub(crate) fn census(&self, now: Instant) -> (usize, usize, usize, Vec<Duration>) {
        let pool = self.pool();
        let idle_for = pool
            .idle
            .iter()
            .map(|w| now.saturating_duration_since(w.idle_since))
            .collect();
        (pool.live, pool.idle.len(), pool.starting, idle_for)
    }

    /// Retires up to `n` idle workers, the longest idle first (their pipes close, they exit,
    /// the supervisor sees them go). A busy worker is never touched. Returns how many went.
    pub(crate) fn retire_idle(&self, n: usize) -> usize {
        let retired: Vec<WorkerConn> = {
            let mut pool = self.pool();
            let n = n.min(pool.idle.len());
            pool.idle.drain(..n).collect()
        };
        for w in &retired {
            tracing::info!(
                app = self.name(),
                pid = w.pid,
                "retiring an idle worker (autoscaler)"
            );
        }
        self.stats.reaped.fetch_add(retired.len() as u64, Relaxed);
        retired.len()
    }

    /// A worker process exited (or never started): forget it, and wake the supervisor.
    pub(crate) fn worker_gone(&self, pid: Option<i32>) {
        let mut pool = self.pool();
        pool.live = pool.live.saturating_sub(1);
        if let Some(pid) = pid {
            pool.idle.retain(|w| w.pid != pid);
            pool.watched.retain(|w| w.pid != pid);
        }
        self.stats.exited.fetch_add(1, Relaxed);
        // The last worker went while a request waits (retired at the same moment): that
        // request brings one back, as one arriving at zero does.
        let stranded = pool.live == 0 && !pool.queue.is_empty();
        drop(pool);
        if stranded {
            self.wake_from_zero();
        }
        self.wake.notify_one();
    }

    /// Requests waiting in the queue now.
    pub(crate) fn queued(&self) -> usize {
        self.pool().queue.len()
    }

    pub(crate) fn set_health(&self, health: Health) {
        let mut pool = self.pool();
        if let Health::Broken { .. } = health {
            // Waiters get their 503 now instead of at their timeout.
            pool.queue.drain().for_each(drop);
            pool.idle.clear();
            self.queue_len.store(0, Relaxed);
        }
        pool.health = health;
    }

    /// Forgets every worker (the zygote is gone, and its workers with it).
    pub(crate) fn reset_workers(&self) {
        let mut pool = self.pool();
        pool.epoch += 1;
        pool.zygote = 0;
        pool.idle.clear();
        pool.watched.clear();
        pool.live = 0;
        pool.starting = 0;
    }

    /// The watches of the workers whose request ran past its deadline, now owned by the caller
    /// (their deadline taken back to 0), who kills them after checking each is still this
    /// app's worker; and the earliest deadline still pending.
    pub(crate) fn expired(&self, now: Instant) -> (Vec<Arc<Watch>>, Option<Instant>) {
        let now = self.nanos(now);
        let pool = self.pool();
        let mut expired = Vec::new();
        let mut next = u64::MAX;
        for watch in &pool.watched {
            let d = watch.deadline.load(Relaxed);
            if d == 0 {
                continue;
            }
            if d > now {
                next = next.min(d);
            } else if watch
                .deadline
                .compare_exchange(d, 0, AcqRel, Relaxed)
                .is_ok()
            {
                expired.push(watch.clone());
            }
        }
        let next = (next != u64::MAX).then(|| self.clock + Duration::from_nanos(next));
        (expired, next)
    }

    /// The current zygote's epoch and, once known, its host pid.
    pub(crate) fn epoch(&self) -> u64 {
        self.pool().epoch
    }

    pub(crate) fn set_zygote(&self, pid: i32) {
        self.pool().zygote = pid;
    }

    /// Whether `pid` is a child of the app's running zygote (read from `/proc`).
    pub(crate) fn is_worker(&self, pid: i32) -> bool {
        let zygote = self.pool().zygote;
        zygote > 0 && crate::procfs::parent(pid) == Some(zygote)
    }

    /// Whether the watchdog killed worker `pid` (its death is the request's fault, not a
    /// crash). Asked before [`AppState::worker_gone`] forgets the worker.
    pub(crate) fn killed_by_watchdog(&self, pid: i32) -> bool {
        self.pool()
            .watched
            .iter()
            .any(|w| w.pid == pid && w.timed_out.load(Relaxed))
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
            self.app.queue_len.store(pool.queue.len() as u64, Relaxed);
        }
        rx.close();
        if let Ok(w) = rx.try_recv() {
            self.app.checkin(w);
        }
    }
}
