//! The `warren` command: `warren serve --config config/warren.toml`, or `warren run
//! module:callable` for one app without a config file.
//!
//! This is the binary edge: it reads the config (refusing a bad one with the file, key and
//! reason; `run` builds one in memory from its flags and validates it the same way), sets up
//! logging, binds the listener, starts the master (one zygote per app) and the front, reloads
//! on SIGHUP or a touched file (`reload.rs`), and shuts both down on SIGINT or SIGTERM.
//! `check --import` imports each app once in a throwaway zygote, confined as `serve` would.

#![forbid(unsafe_code)]

mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// The environment variable that sets the log filter (tracing's `EnvFilter` syntax).
const LOG_ENV: &str = "WARREN_LOG";
/// The environment variable that names another binary for the zygotes (one that runs as the
/// worker when its `argv[0]` is `warren-worker`).
const WORKER_ENV: &str = "WARREN_WORKER";

#[derive(Parser)]
#[command(
    name = "warren",
    version,
    about = "Serve many small Python WSGI apps on one box"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the apps of a config file.
    Serve {
        /// The config file.
        #[arg(long, short, default_value = warren_config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Serve one app without a config file, confined like a config file's app, on every
    /// host (as `gunicorn module:callable` does).
    Run {
        /// The WSGI callable, as `module:callable` (`app:app`).
        #[arg(value_name = "MODULE:CALLABLE")]
        entry: String,
        /// The app's directory (its state goes in `.warren/` there).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// A virtualenv whose site-packages the app uses.
        #[arg(long)]
        venv: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// A fixed number of workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Check a config file and print the apps it defines.
    Check {
        #[arg(long, short, default_value = warren_config::DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also import each app in a throwaway confined zygote, as `serve` starts it, to find
        /// a wrong callable or a missing dependency before serving (records the apps' uids,
        /// as `serve` does).
        #[arg(long)]
        import: bool,
    },
    /// Report which confinement mechanisms this machine enforces.
    Doctor,
    /// Open-loop load against an app on loopback (step, spike, ramp, sine), recorded with
    /// warren's metrics as CSV and a PNG chart: the autoscaler lab.
    Loadtest(Box<warren_lab::LoadtestArgs>),
}

/// Installs the log subscriber. Lines are written to stderr by a thread of their own
/// (`tracing-appender`): with an access line per request, a `write` to a file or a pipe on the
/// front's own thread cost about a tenth of its throughput. The returned guard flushes what is
/// queued when dropped. It starts a thread: call it after the confinement probe.
fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    log_format().with_writer(writer).init();
    guard
}

/// The subscriber's settings: `WARREN_LOG` as the filter (default `info`), colours on a
/// terminal.
fn log_format() -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    tracing_subscriber::EnvFilter,
> {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

/// What runs before any thread may exist logs straight to stderr, on this thread only.
fn before_threads<T>(f: impl FnOnce() -> T) -> T {
    let subscriber = log_format().with_writer(std::io::stderr).finish();
    tracing::subscriber::with_default(subscriber, f)
}

/// The binary a zygote runs: this one (it is the worker when started as `warren-worker`),
/// unless `WARREN_WORKER` names another.
fn worker_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(WORKER_ENV) {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe().context("finding the warren executable")
}

fn main() {
    // Started by the master as a zygote: nothing of warren's own runs first.
    if std::env::args_os()
        .next()
        .is_some_and(|a| Path::new(&a).file_name() == Some(warren_worker::ARGV0.as_ref()))
    {
        warren_worker::main();
    }
    // One line, with the whole cause chain, and no backtrace: a bad config is a user error.
    if let Err(e) = run(Cli::parse()) {
        eprintln!("warren: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Check { config, import } => {
            // Reads the config, the env files and the identities; writes nothing, unless the
            // apps are to be imported: they then run as serve runs them, with their uids.
            let mut config = load_config(&config)?;
            if import {
                record_identities(&mut config)?;
            }
            let recorded = warren_config::identity::read(&config.server.state_dir)?;
            for app in &config.apps {
                let s = &app.scale;
                let workers = if s.is_fixed() {
                    workers(app.workers)
                } else {
                    format!("{} to {} (autoscaled)", s.min, workers(s.max))
                };
                let uid = if recorded.get(&app.name).is_some() {
                    format!("uid {}", app.uid)
                } else {
                    format!(
                        "uid {} (not recorded yet: given at the next start)",
                        app.uid
                    )
                };
                // The names of its variables only, never their values.
                let env = if app.env.is_empty() {
                    String::new()
                } else {
                    format!(", env {}", app.env.keys().collect::<Vec<_>>().join(" "))
                };
                println!("{app}: hosts {:?}, {workers}, {uid}{env}", app.hosts);
            }
            for r in &config.refused {
                println!("{}: refused: {}", r.name, r.error);
            }
            for w in &config.warnings {
                println!("warning: {w}");
            }
            if !nix_is_root() {
                println!(
                    "(not root: the apps run as warren's own uid, which their writable \
                     directories must belong to)"
                );
            }
            println!(
                "identities: {}",
                config
                    .server
                    .state_dir
                    .join(warren_config::identity::FILE)
                    .display()
            );
            let failed = if import { import_all(&config)? } else { 0 };
            anyhow::ensure!(
                config.refused.is_empty(),
                "{} of the config's apps cannot run as configured (above)",
                config.refused.len()
            );
            anyhow::ensure!(
                failed == 0,
                "{failed} of the config's apps do not import (above)"
            );
            Ok(())
        }
        Command::Doctor => {
            let findings = warren_sandbox::probe::probe_all();
            println!("{:<12} {:<14} detail", "mechanism", "status");
            for f in &findings {
                println!(
                    "{:<12} {:<14} {}",
                    f.mechanism.name(),
                    f.status.label(),
                    f.detail
                );
            }
            if !nix_is_root() {
                println!(
                    "(not root: user namespaces, Landlock, seccomp and rlimits work; cgroups only in a \
                     delegated cgroup v2 subtree)"
                );
            }
            Ok(())
        }
        Command::Loadtest(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let summary = runtime.block_on(warren_lab::run(*args))?;
            if summary.errors() > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Serve { config } => serve_from(Source::File(config)),
        Command::Run {
            entry,
            dir,
            venv,
            listen,
            workers,
        } => serve_from(Source::Run(warren_config::QuickStart {
            dir,
            entry,
            venv,
            listen,
            workers,
        })),
    }
}

/// Where the served config comes from, and how its messages name a key.
pub(crate) enum Source {
    /// `warren serve --config FILE`.
    File(PathBuf),
    /// `warren run`: built from the flags again at each reload.
    Run(warren_config::QuickStart),
}

impl Source {
    /// The validated config, with the apps whose virtualenv another Python made refused.
    pub(crate) fn load(&self) -> Result<warren_config::Config> {
        match self {
            Source::File(path) => load_config(path),
            Source::Run(quick) => {
                let mut config = quick.load()?;
                refuse_other_pythons(&mut config);
                quick.reword(&mut config);
                Ok(config)
            }
        }
    }

    /// `FILE: KEY`, or the flag `KEY` came from.
    fn key(&self, config: &warren_config::Config, key: &str) -> String {
        match self {
            Source::Run(quick) if quick.flag(key).is_some() => {
                quick.flag(key).unwrap_or_default().to_owned()
            }
            _ => format!("{}: {key}", config.file.display()),
        }
    }
}

/// `warren serve` and `warren run`.
fn serve_from(source: Source) -> Result<()> {
    let mut config = source.load()?;
    // Before any thread exists: probing forks, and user namespaces need one thread.
    let confinement = Arc::new(before_threads(warren_master::Confinement::probe));
    // Before the runtime's threads (and the log's) exist, so that they inherit it.
    let batch = config.server.scheduling == warren_config::Scheduling::Batch;
    warren_sandbox::set_own_scheduling(batch).context("setting the front's scheduling")?;
    let _log = init_logging();
    confinement.log();
    runnable(&config)?;
    record_identities(&mut config)?;
    tracing::info!(
        policy = if batch { "SCHED_BATCH" } else { "SCHED_OTHER" },
        "front scheduling (server.scheduling)"
    );
    // One thread: a current-thread runtime, with no cross-thread wake-ups at all.
    let mut runtime = match config.server.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(source, config, confinement))
}

/// Imports every app of `config` as `serve` would start it, one at a time, and prints how
/// each went; returns how many failed.
fn import_all(config: &warren_config::Config) -> Result<usize> {
    let worker_bin = worker_binary()?;
    // Before any thread exists: probing forks, and user namespaces need one thread.
    let confinement = warren_master::Confinement::probe();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut failed = 0;
    for app in &config.apps {
        match runtime.block_on(warren_master::try_import(app, &worker_bin, &confinement)) {
            Ok(took) => println!("{}: import ok ({} ms)", app.name, took.as_millis()),
            Err(why) => {
                failed += 1;
                println!("{}: import failed: {why}", app.name);
            }
        }
    }
    confinement.finish();
    Ok(failed)
}

/// Loads the config at `path`; an app whose virtualenv was made with another Python than the
/// one warren embeds is refused (with both versions named).
pub(crate) fn load_config(path: &Path) -> Result<warren_config::Config> {
    let mut config = warren_config::load(path)?;
    refuse_other_pythons(&mut config);
    Ok(config)
}

fn refuse_other_pythons(config: &mut warren_config::Config) {
    warren_config::refuse_other_pythons(
        config,
        warren_worker::PYTHON_VERSION,
        warren_worker::PYTHON_EXE,
    );
}

/// Logs the apps the config refuses (the others are served), and fails when none is left.
fn runnable(config: &warren_config::Config) -> Result<()> {
    if config.apps.is_empty() {
        let why: Vec<&str> = config.refused.iter().map(|r| r.error.as_str()).collect();
        anyhow::ensure!(
            !why.is_empty(),
            "{}: no [apps.NAME] table: there is nothing to serve",
            config.file.display()
        );
        anyhow::bail!("no app can run: {}", why.join("; "));
    }
    for r in &config.refused {
        tracing::error!(
            app = %r.name,
            hosts = ?r.hosts,
            error = %r.error,
            "app refused: it is not started (its hosts answer 503); the others are"
        );
    }
    log_warnings(config);
    Ok(())
}

/// Logs the config's warnings (values that run but disagree), at start and on every reload.
pub(crate) fn log_warnings(config: &warren_config::Config) {
    for w in &config.warnings {
        tracing::warn!(warning = %w, "config warning: the app runs, but this will fail");
    }
}

/// Records the apps' uids in the state directory (giving new apps theirs) and logs each new
/// one. At start and on every reload.
pub(crate) fn record_identities(config: &mut warren_config::Config) -> Result<()> {
    let new = warren_config::record_identities(config).context("recording the app identities")?;
    for (app, uid) in new {
        tracing::info!(
            app = %app,
            uid,
            state = %config.server.state_dir.display(),
            "app given a new uid (kept from now on; its writable directories must belong to it)"
        );
    }
    Ok(())
}

/// `1 worker`, `2 workers`.
fn workers(n: usize) -> String {
    match n {
        1 => "1 worker".to_owned(),
        n => format!("{n} workers"),
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

async fn serve(
    source: Source,
    config: warren_config::Config,
    confinement: Arc<warren_master::Confinement>,
) -> Result<()> {
    let worker_bin = worker_binary()?;
    anyhow::ensure!(
        worker_bin.is_file(),
        "worker binary {} not found ({WORKER_ENV} names it; unset, it is this warren binary)",
        worker_bin.display()
    );
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| {
            format!(
                "{}: cannot bind {}",
                source.key(&config, "server.listen"),
                config.server.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let master = warren_master::Master::start(&config, Path::new(&worker_bin), confinement.clone());
    for app in &config.apps {
        tracing::info!(app = %app.name, hosts = ?app.hosts, workers = app.workers, uid = app.uid, dir = %app.path.display(), "app configured");
    }
    let front = Arc::new(warren_front::Front::new(&config, master));
    // Installed before the `listening` line: from then on SIGHUP reloads instead of killing.
    let hup = signal(SignalKind::hangup())?;
    let admin = match config.server.admin {
        None => None,
        Some(at) => {
            let l = TcpListener::bind(at).await.with_context(|| {
                format!("{}: cannot bind {at}", source.key(&config, "server.admin"))
            })?;
            tracing::info!(addr = %l.local_addr()?, "admin listening: GET /metrics");
            let (stop, rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(warren_front::serve_admin(l, front.clone(), async move {
                let mut rx = rx;
                let _ = rx.wait_for(|s| *s).await;
            }));
            Some((stop, task))
        }
    };
    let reloads = tokio::spawn(reload::run(front.clone(), source, config, hup));
    tracing::info!(%addr, "listening");
    // A machine-readable line for scripts and tests that bind port 0.
    println!("listening on {addr}");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
    };
    warren_front::run(listener, front.clone(), shutdown).await;
    reloads.abort();
    let _ = reloads.await;
    if let Some((stop, task)) = admin {
        let _ = stop.send(true);
        let _ = task.await;
    }
    match Arc::try_unwrap(front) {
        Ok(front) => front.into_master().shutdown().await,
        Err(_) => tracing::warn!("connections still hold the front; exiting without waiting"),
    }
    confinement.finish();
    Ok(())
}
