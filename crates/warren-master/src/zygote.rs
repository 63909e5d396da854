//! The supervisor of one app: starts its zygote, keeps `target` workers forked from it, reaps
//! their exits, and backs off when the app cannot be imported.
//!
//! "Spawn a worker for app X" is one message: [`Msg::Fork`] with the worker's ends of two fresh
//! pipes attached. The zygote replies `Forked{pid}`, the new worker says `READY` on its
//! response pipe, and the worker joins the pool. Confinement wraps the zygote's launch
//! (`warren_sandbox::zygote_command`), so every worker inherits it.
//!
//! [`try_import`] (`warren check --import`) starts a zygote through the same launch, waits for
//! it to import the app, and stops it.

use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::io::Interest;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UnixDatagram;
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

use warren_protocol::control::{EXIT_IMPORT_FAILED, EXIT_SANDBOX_FAILED, MSG_LEN, Msg};
use warren_protocol::{FRAME_HEADER, Kind, parse_header};

use crate::app::{AppState, Health, WorkerConn};
use crate::applog::{Event, Grouper, Level, Repeats};
use crate::confinement::{AppSandbox, Confinement, report_usage};
use crate::pipes::WorkerPipes;

/// How long a new worker may take to say READY.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest pause before re-importing an app that failed.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A worker that dies sooner than this after its start counts towards a crash loop.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(10);
/// First and longest delay between forks while workers keep dying young.
const FORK_DELAY_MIN: Duration = Duration::from_millis(100);
const FORK_DELAY_MAX: Duration = Duration::from_secs(30);
/// Workers dying young in a row, with no request answered in between, that make a crash loop:
/// the app is marked unavailable (503 at once, with `Retry-After`), and its zygote is started
/// again after a back-off, which also picks up fixed code.
const CRASH_LOOP_DEATHS: u32 = 5;
/// A zygote that ran this long without a crash loop resets the crash-loop back-off.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Longest log line taken from an app; the rest of the line is dropped.
const MAX_LOG_LINE: usize = 8 * 1024;
/// How long a line that may belong to a traceback waits for the next one before it is logged
/// as it stands (a traceback is printed at once; this only bounds the wait when it ends).
const HOLD: Duration = Duration::from_millis(100);

/// How a zygote's life ended.
enum End {
    Shutdown,
    /// It never became ready: the app does not import.
    ImportFailed(String),
    /// It died after it was ready.
    Crashed(String),
    /// Its workers kept dying young; it was stopped after running for the given time.
    CrashLoop(String, Duration),
    /// The app went to zero workers and keeps no zygote (`scale.keep_zygote = false`).
    Parked,
}

/// Runs `app`'s zygote until `shutdown` turns true, restarting it with back-off.
pub(crate) async fn supervise(
    app: Arc<AppState>,
    worker_bin: Arc<Path>,
    confinement: Arc<Confinement>,
    mut shutdown: watch::Receiver<bool>,
) {
    let sandbox = match AppSandbox::prepare(&app, &confinement) {
        Ok(s) => s,
        Err(reason) => {
            tracing::error!(app = app.name(), %reason, "refusing to start the app");
            app.set_health(Health::Broken {
                reason: format!("the app cannot start: {reason}"),
                until: Instant::now() + Duration::from_secs(86_400 * 365),
                refused: true,
            });
            stopped(&mut shutdown).await;
            return;
        }
    };
    let report = sandbox
        .cgroup
        .as_ref()
        .map(|cg| tokio::spawn(report_usage(app.clone(), cg.clone(), shutdown.clone())));
    supervise_zygotes(&app, &worker_bin, &sandbox, &mut shutdown).await;
    // The report holds the cgroup: gone before the group can be removed.
    if let Some(report) = report {
        report.abort();
        let _ = report.await;
    }
    // Blocking file-system work (and, on v1, a short wait for the last processes to go).
    let _ = tokio::task::spawn_blocking(move || sandbox.finish()).await;
}

async fn supervise_zygotes(
    app: &Arc<AppState>,
    worker_bin: &Path,
    sandbox: &AppSandbox,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut crash_backoff = BACKOFF_MIN;
    // The last traceback, across the zygote's restarts: an import failure that repeats is
    // logged in full once, then as one line per round until it changes.
    let repeats = Arc::new(std::sync::Mutex::new(Repeats::default()));
    loop {
        let end = run_zygote(app, worker_bin, sandbox, shutdown, &mut backoff, &repeats).await;
        app.reset_workers();
        let (reason, import) = match end {
            End::Shutdown => return,
            End::Parked => {
                tracing::info!(
                    app = app.name(),
                    "at zero workers: zygote stopped (scale.keep_zygote = false); the next request imports the app again"
                );
                app.set_health(Health::Parked);
                // Until a request (or the autoscaler) asks for a worker again.
                while app.target() == 0 {
                    tokio::select! {
                        () = app.wake.notified() => {}
                        () = stopped(shutdown) => return,
                    }
                }
                continue;
            }
            End::ImportFailed(r) => (r, true),
            End::Crashed(r) => (r, false),
            End::CrashLoop(r, ran) => {
                if ran >= STABLE_AFTER {
                    crash_backoff = BACKOFF_MIN;
                }
                // Import failures and crash loops back off separately: a zygote that imports
                // fine resets the first, not the second.
                backoff = crash_backoff;
                crash_backoff = (crash_backoff * 2).min(BACKOFF_MAX);
                (r, false)
            }
        };
        tracing::error!(
            app = app.name(),
            reason = %reason,
            retry_in_s = backoff.as_secs_f64(),
            "app unavailable; requests get 503 until it starts"
        );
        let until = Instant::now() + backoff;
        app.set_health(Health::Broken {
            reason: if import {
                "the app failed to import; its traceback is in the log".to_owned()
            } else {
                reason
            },
            until,
            refused: false,
        });
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = stopped(shutdown) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Resolves once shutdown was asked for.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(EXIT_IMPORT_FAILED), _) => "the app could not be imported".into(),
        (Some(EXIT_SANDBOX_FAILED), _) => {
            "the zygote could not confine itself (the reason is logged above)".into()
        }
        (Some(c), _) => format!("exited with status {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// Describes a raw wait status reported by the zygote.
fn describe_wait(status: i32) -> (bool, String) {
    let sig = status & 0x7f;
    if sig == 0 {
        let code = (status >> 8) & 0xff;
        (code == 0, format!("exited with status {code}"))
    } else {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|_| sig.to_string());
        (false, format!("killed by {name}"))
    }
}

async fn run_zygote(
    app: &Arc<AppState>,
    worker_bin: &Path,
    sandbox: &AppSandbox,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Duration,
    repeats: &Arc<std::sync::Mutex<Repeats>>,
) -> End {
    let cfg = &app.config;
    let Started {
        mut child,
        control,
        started,
    } = match start_zygote(cfg, worker_bin, sandbox) {
        Ok(s) => s,
        Err(e) => return End::ImportFailed(e),
    };
    if let Some(out) = child.stdout.take() {
        tokio::spawn(log_lines(app.clone(), "stdout", out, repeats.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(log_lines(app.clone(), "stderr", err, repeats.clone()));
    }
    app.set_health(Health::Starting);

    let mut ready = false;
    let mut next_token = 0u32;
    let mut pending: HashMap<u32, (WorkerPipes, Instant)> = HashMap::new();
    // Start time of each running worker, to tell a crash loop from an occasional death.
    let mut started_at: HashMap<i32, Instant> = HashMap::new();
    // Workers' pids inside the zygote's pid namespace → as seen here.
    let mut host_pids: HashMap<i32, i32> = HashMap::new();
    let mut zygote_pid = 0;
    // Crash-loop back-off: forks wait until `next_fork_at`; the delay doubles while workers
    // keep dying young, so a broken app costs a few forks a minute, not a core.
    let mut fork_delay = Duration::ZERO;
    let mut next_fork_at = Instant::now();
    let mut young_deaths = 0u32;
    // Requests the app had answered at the last young death: deaths in between answered
    // requests are an app that mostly works (a crash now and then), not a crash loop.
    let mut served_at_death = app.answered.load(std::sync::atomic::Ordering::Relaxed);
    loop {
        if ready
            && !cfg.scale.keep_zygote
            && app.target() == 0
            && app.live_workers() == 0
            && app.queued() == 0
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return End::Parked;
        }
        let short = ready && app.live_workers() < app.target();
        if short && Instant::now() >= next_fork_at {
            while app.live_workers() < app.target() {
                let (pipes, theirs) = match WorkerPipes::create() {
                    Ok(p) => p,
                    Err(e) => {
                        // The master's own descriptors or memory ran short: try again later.
                        tracing::error!(app = app.name(), error = %e, "cannot create a worker's pipes");
                        next_fork_at = Instant::now() + BACKOFF_MIN;
                        break;
                    }
                };
                next_token = next_token.wrapping_add(1);
                match request_fork(&control, next_token, theirs).await {
                    Ok(()) => {
                        app.worker_forking();
                        pending.insert(next_token, (pipes, Instant::now()));
                    }
                    Err(e) => {
                        tracing::error!(app = app.name(), error = %e, "cannot ask the zygote to fork");
                        return End::Crashed(format!("control socket: {e}"));
                    }
                }
            }
        }
        let fork_timer = tokio::time::sleep_until(next_fork_at);
        tokio::select! {
            () = fork_timer, if short => {}
            () = stopped(shutdown) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return End::Shutdown;
            }
            status = child.wait() => {
                let mut what = status.map(describe_exit).unwrap_or_else(|e| e.to_string());
                if sandbox.new_oom_kills() > 0 {
                    what = format!("{what}: out of memory (the app's cgroup limit is {} MiB)", cfg.limits.memory_bytes >> 20);
                }
                return if ready { End::Crashed(format!("zygote {what}")) } else { End::ImportFailed(what) };
            }
            msg = receive(&control) => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        let status = child.wait().await.map(describe_exit).unwrap_or_default();
                        return if ready {
                            End::Crashed(format!("zygote control socket: {e} ({status})"))
                        } else {
                            End::ImportFailed(status)
                        };
                    }
                };
                match msg {
                    Msg::ZygoteReady { pid: ns_pid } => {
                        ready = true;
                        *backoff = BACKOFF_MIN;
                        app.set_health(Health::Ready);
                        // Confined, the zygote is pid 1 of its own namespace, a child of the
                        // process warren started; logs and signals need the pid as seen here.
                        let outer = child.id().map_or(0, |p| p as i32);
                        zygote_pid = warren_sandbox::host_pid_of_child(outer, ns_pid)
                            .unwrap_or(outer);
                        app.set_zygote(zygote_pid);
                        tracing::info!(
                            app = app.name(),
                            pid = zygote_pid,
                            ns_pid,
                            import_ms = started.elapsed().as_secs_f64() * 1e3,
                            "zygote ready"
                        );
                    }
                    Msg::Forked { token, pid: ns_pid } => {
                        if let Some((pipes, asked)) = pending.remove(&token) {
                            let pid = warren_sandbox::host_pid_of_child(zygote_pid, ns_pid)
                                .unwrap_or(ns_pid);
                            host_pids.insert(ns_pid, pid);
                            started_at.insert(ns_pid, asked);
                            tokio::spawn(await_ready(app.clone(), pipes, pid, asked, app.epoch()));
                        }
                    }
                    Msg::ForkFailed { token, errno } => {
                        pending.remove(&token);
                        tracing::error!(app = app.name(), errno, "zygote could not fork a worker");
                        app.fork_failed();
                        tokio::time::sleep(BACKOFF_MIN).await;
                    }
                    Msg::Exited { pid: ns_pid, status } => {
                        let Some(pid) = host_pids.remove(&ns_pid) else {
                            // Not a worker: a child the app's own code forked (at import, in a
                            // warm-up) that the zygote, pid 1 of its namespace, reaped.
                            tracing::debug!(app = app.name(), ns_pid, status, "a non-worker child of the zygote exited");
                            continue;
                        };
                        let (clean, mut how) = describe_wait(status);
                        let harakiri = app.killed_by_watchdog(pid);
                        if harakiri {
                            how = format!("{how} (its request ran past request_timeout_s)");
                        } else if !clean && sandbox.new_oom_kills() > 0 {
                            how = format!(
                                "{how}: out of memory (the app's cgroup limit is {} MiB; the kernel's OOM killer ended it)",
                                cfg.limits.memory_bytes >> 20
                            );
                        }
                        let lived = started_at.remove(&ns_pid).map(|t| t.elapsed());
                        if app.may_log() {
                            let lived_s = lived.map(|d| d.as_secs_f64());
                            if clean {
                                tracing::info!(app = app.name(), pid, "worker {how}");
                            } else {
                                tracing::warn!(app = app.name(), pid, lived_s, "worker {how}");
                            }
                        }
                        if harakiri {
                            // The request's fault, not a crash: replaced at once.
                        } else if !clean && lived.is_none_or(|d| d < CRASH_LOOP_WINDOW) {
                            let served = app.answered.load(std::sync::atomic::Ordering::Relaxed);
                            if served != served_at_death {
                                young_deaths = 0;
                                fork_delay = Duration::ZERO;
                                served_at_death = served;
                            }
                            young_deaths += 1;
                            if young_deaths >= CRASH_LOOP_DEATHS {
                                app.worker_gone(Some(pid));
                                let _ = child.start_kill();
                                let _ = child.wait().await;
                                return End::CrashLoop(
                                    format!(
                                        "its workers keep dying young ({young_deaths} in a row, the last {how})"
                                    ),
                                    started.elapsed(),
                                );
                            }
                            fork_delay = (fork_delay * 2).clamp(FORK_DELAY_MIN, FORK_DELAY_MAX);
                            next_fork_at = Instant::now() + fork_delay;
                            tracing::warn!(
                                app = app.name(),
                                delay_ms = fork_delay.as_millis() as u64,
                                "workers are dying young; delaying the next fork"
                            );
                        } else {
                            fork_delay = Duration::ZERO;
                            young_deaths = 0;
                        }
                        app.worker_gone(Some(pid));
                    }
                    Msg::Fork { .. } => {}
                }
            }
            () = app.wake.notified() => {}
        }
    }
}

/// A zygote just started: its process (stdout and stderr piped) and its control socket.
struct Started {
    child: tokio::process::Child,
    control: UnixDatagram,
    started: Instant,
}

/// Starts a zygote of `cfg` confined by `sandbox`: the one launch of app code, for the
/// supervisor and for [`try_import`].
fn start_zygote(
    cfg: &warren_config::App,
    worker_bin: &Path,
    sandbox: &AppSandbox,
) -> Result<Started, String> {
    let procs = sandbox.procs_files();
    let spec = warren_sandbox::ZygoteSpec {
        worker_bin,
        name: &cfg.name,
        dir: &cfg.path,
        module: &cfg.module,
        callable: &cfg.callable,
        site_packages: cfg.site_packages.as_deref(),
        warmup: cfg.warmup.as_deref(),
        sandbox: sandbox.policy.as_ref(),
        cgroup_procs: &procs,
        batch: cfg.limits.scheduling == warren_config::Scheduling::Batch,
        env: warren_sandbox::AppEnv(cfg.env.iter().collect()),
    };
    let launch = warren_sandbox::zygote_command(&spec).map_err(|e| e.to_string())?;
    let mut command = tokio::process::Command::from(launch.command);
    command.kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", worker_bin.display()))?;
    drop(launch.child_end);
    drop(launch.procs);
    let started = Instant::now();
    // A SOCK_SEQPACKET socket: tokio's datagram type drives its readiness, and each
    // recv/send moves exactly one message, as on a datagram socket.
    let control = std::os::unix::net::UnixDatagram::from(launch.control);
    let control = control
        .set_nonblocking(true)
        .and_then(|()| UnixDatagram::from_std(control))
        .map_err(|e| format!("watching the control socket: {e}"))?;
    Ok(Started {
        child,
        control,
        started,
    })
}

/// Longest [`try_import`] waits for the app to import.
pub const IMPORT_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes of an app's output [`try_import`] keeps: a traceback fits, and an app that
/// prints without end does not fill memory.
const IMPORT_OUTPUT_MAX: usize = 64 * 1024;

/// Imports `app` once in a throwaway zygote, started as `warren serve` starts it (the same
/// cgroup, [`Policy`](warren_sandbox::Policy) and launch), then stops it and removes its
/// cgroup. `Ok`: the time from the start to `ZygoteReady` (import and warm-up). `Err`: why it
/// did not get there, followed by what the app wrote (the traceback) on its own lines.
/// `warren check --import` calls it for each app.
pub async fn try_import(
    app: &warren_config::App,
    worker_bin: &Path,
    confinement: &Confinement,
) -> Result<Duration, String> {
    let limits = crate::ResponseLimits {
        headers: 1,
        head_bytes: 1,
    };
    let state = AppState::new(app.clone(), 0, limits, Default::default());
    let sandbox = AppSandbox::prepare(&state, confinement)
        .map_err(|reason| format!("the app cannot start: {reason}"))?;
    let outcome = import_once(app, worker_bin, &sandbox).await;
    let _ = tokio::task::spawn_blocking(move || sandbox.finish()).await;
    outcome
}

async fn import_once(
    app: &warren_config::App,
    worker_bin: &Path,
    sandbox: &AppSandbox,
) -> Result<Duration, String> {
    let Started {
        mut child,
        control,
        started,
    } = start_zygote(app, worker_bin, sandbox)?;
    let output = Arc::new(std::sync::Mutex::new(Vec::new()));
    let readers = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(keep_output(o, output.clone()))),
        child
            .stderr
            .take()
            .map(|e| tokio::spawn(keep_output(e, output.clone()))),
    ];
    let waited = tokio::time::timeout(IMPORT_TIMEOUT, async {
        tokio::select! {
            status = child.wait() => Err(status.map(describe_exit).unwrap_or_else(|e| e.to_string())),
            msg = receive(&control) => match msg {
                Ok(Msg::ZygoteReady { .. }) => Ok(started.elapsed()),
                Ok(other) => Err(format!("the zygote sent {other:?} before it was ready")),
                Err(_) => Err(child.wait().await.map(describe_exit).unwrap_or_default()),
            },
        }
    })
    .await;
    let outcome = match waited {
        Ok(Ok(took)) => Ok(took),
        Ok(Err(mut why)) => {
            if sandbox.new_oom_kills() > 0 {
                why = format!(
                    "{why}: out of memory (the app's cgroup limit is {} MiB)",
                    app.limits.memory_bytes >> 20
                );
            }
            Err(why)
        }
        Err(_) => Err(format!(
            "it did not finish importing within {} s",
            IMPORT_TIMEOUT.as_secs()
        )),
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    drop(control);
    // The output ends when the zygote's namespace is gone; a descendant that kept a copy of
    // its stderr does not hold the answer up.
    for reader in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    }
    outcome.map_err(|why| {
        let output = output.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&output);
        let text = text.trim_end();
        if text.is_empty() {
            why
        } else {
            format!("{why}\n{text}")
        }
    })
}

/// Appends what `out` gives to `into`, up to [`IMPORT_OUTPUT_MAX`] bytes; the rest is read and
/// dropped, so the app never blocks on a full pipe.
async fn keep_output<R: AsyncRead + Unpin>(mut out: R, into: Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = out.read(&mut buf).await {
        let mut kept = into.lock().unwrap_or_else(|e| e.into_inner());
        let room = IMPORT_OUTPUT_MAX.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// Asks the zygote to fork a worker that serves on `theirs`, which go with the message.
async fn request_fork(
    control: &UnixDatagram,
    token: u32,
    theirs: [OwnedFd; 2],
) -> std::io::Result<()> {
    let buf = Msg::Fork { token }.encode();
    let fds = theirs.each_ref().map(AsRawFd::as_raw_fd);
    loop {
        control.writable().await?;
        let sent = control.try_io(Interest::WRITABLE, || {
            sendmsg::<()>(
                control.as_raw_fd(),
                &[IoSlice::new(&buf)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    // The worker's ends are the zygote's now: ours close here, or the worker's exit would not
    // end the response stream.
    drop(theirs);
    Ok(())
}

async fn receive(control: &UnixDatagram) -> std::io::Result<Msg> {
    let mut buf = [0u8; MSG_LEN];
    match control.recv(&mut buf).await? {
        0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
        n => Msg::decode(&buf[..n])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
    }
}

/// Waits for a forked worker's `READY`, then puts it in the pool.
async fn await_ready(app: Arc<AppState>, pipes: WorkerPipes, pid: i32, asked: Instant, epoch: u64) {
    let mut hdr = [0u8; FRAME_HEADER];
    let ready = tokio::time::timeout(READY_TIMEOUT, pipes.read_exact(&mut hdr)).await;
    match ready.map(|r| r.map(|_| parse_header(hdr))) {
        Ok(Ok(Ok((Kind::Ready, 0)))) => {
            let us = asked.elapsed().as_micros() as u64;
            tracing::info!(
                app = app.name(),
                pid,
                fork_to_ready_us = us,
                "worker started"
            );
            app.adopt(WorkerConn::new(pipes, pid, epoch), epoch);
        }
        other => {
            app.not_started(epoch);
            // The zygote will report its exit; dropping its pipes makes a live one exit.
            tracing::error!(app = app.name(), pid, outcome = ?other, "worker did not become ready");
        }
    }
}

/// Copies an app's output into warren's log, tagged with the app: a line per event, a
/// traceback as one event (`applog.rs` has the rules). A line longer than [`MAX_LOG_LINE`] is
/// cut, with the number of bytes dropped: an app cannot make one line cost unbounded memory,
/// nor split it into many events. Lines held to see what follows them (a traceback's
/// possible header, its possible chained exception) go out when nothing follows within
/// [`HOLD`].
async fn log_lines<R: AsyncRead + Unpin>(
    app: Arc<AppState>,
    stream: &'static str,
    out: R,
    repeats: Arc<std::sync::Mutex<Repeats>>,
) {
    let mut reader = BufReader::with_capacity(MAX_LOG_LINE, out);
    let mut line = Vec::with_capacity(256);
    let mut dropped = 0usize;
    let mut grouper = Grouper::default();
    let mut events = Vec::new();
    loop {
        let filled = if grouper.holding() {
            // `fill_buf` is cancel-safe: what it read stays in the buffer.
            match tokio::time::timeout(HOLD, reader.fill_buf()).await {
                Ok(r) => r,
                Err(_) => {
                    grouper.flush(&mut events);
                    emit(&app, stream, &mut events, &repeats);
                    continue;
                }
            }
        } else {
            reader.fill_buf().await
        };
        let buf = match filled {
            Ok([]) | Err(_) => break,
            Ok(b) => b,
        };
        let (piece, newline) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        let room = MAX_LOG_LINE - line.len();
        line.extend_from_slice(&piece[..piece.len().min(room)]);
        dropped += piece.len().saturating_sub(room);
        let used = piece.len() + usize::from(newline);
        reader.consume(used);
        if newline {
            let text = String::from_utf8_lossy(&line);
            grouper.push(text.trim_end_matches('\r'), dropped, &mut events);
            emit(&app, stream, &mut events, &repeats);
            line.clear();
            dropped = 0;
        }
    }
    if !line.is_empty() {
        let text = String::from_utf8_lossy(&line);
        grouper.push(text.trim_end_matches('\r'), dropped, &mut events);
    }
    grouper.flush(&mut events);
    emit(&app, stream, &mut events, &repeats);
}

/// Logs `events` (and empties it), each spending its lines from the app's log budget. A
/// traceback the same as the app's previous one is one line saying so.
fn emit(
    app: &AppState,
    stream: &'static str,
    events: &mut Vec<Event>,
    repeats: &std::sync::Mutex<Repeats>,
) {
    for e in events.drain(..) {
        let name = app.name();
        if e.traceback {
            let repeat = repeats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(&e.text);
            if let Some(times) = repeat {
                if app.may_log() {
                    tracing::error!(target: "app", app = name, stream, "same traceback as before ({times} times)");
                }
                continue;
            }
        }
        if !app.may_log_lines(e.lines) {
            continue;
        }
        let cut_bytes = (e.cut_bytes > 0).then_some(e.cut_bytes);
        let text = &e.text;
        if e.traceback {
            // One line: the exception as the message, the whole traceback as a field written
            // with its newlines escaped, so that an event stays one line of the log and no
            // line of an app's output can pass for one of warren's own.
            let exception = text.rsplit('\n').next().unwrap_or_default();
            tracing::error!(target: "app", app = name, stream, cut_bytes, traceback = ?text, "{exception}");
            continue;
        }
        match e.level {
            Level::Info => tracing::info!(target: "app", app = name, stream, cut_bytes, "{text}"),
            Level::Warn => tracing::warn!(target: "app", app = name, stream, cut_bytes, "{text}"),
            Level::Error => tracing::error!(target: "app", app = name, stream, cut_bytes, "{text}"),
        }
    }
}
