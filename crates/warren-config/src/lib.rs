//! warren's configuration: a TOML file with a `[server]` table and one `[apps.NAME]` table per app.
//!
//! Parsing is two steps. Serde turns the text into the raw `*File` structs (with
//! `deny_unknown_fields`, so a typo is an error rather than a silently ignored key), and
//! [`validate`] turns those into [`Config`], resolving paths against the config file's
//! directory and checking what the file system can tell us (the app directory exists, the entry
//! module is there, the virtualenv has a `site-packages`). Every error names the file, the key
//! and the reason, so `warren serve` can refuse a bad file with one clear line.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod env;
pub mod identity;
mod quick;

pub use env::{Env, check_key, parse_env_file};
pub use quick::QuickStart;

/// Where the bundled example config lives, relative to the working directory.
pub const DEFAULT_CONFIG: &str = "config/warren.toml";

/// The host of an app that takes every request whose host no other app has (`hosts =
/// ["*"]`, as `warren run` gives its app). One app at most may have it.
pub const CATCH_ALL: &str = "*";

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a `#[source]`: the message says the cause, and a caller that prints the chain
    /// (`{:#}`) would say it twice.
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Syntax { path: PathBuf, reason: String },
    #[error("{}: {key}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// A value given on the command line (`warren run`), named by its flag.
    #[error("{flag}: {reason}")]
    Flag { flag: String, reason: String },
    #[error("{0}")]
    Identities(#[from] identity::IdentityError),
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (kept so later messages can point back at it); for `warren run`,
    /// the file in the app's directory that its in-memory config stands for.
    pub file: PathBuf,
    pub server: Server,
    /// Apps in name order (new apps are given their uids in this order).
    pub apps: Vec<App>,
    /// Apps of the file that cannot run as configured, in name order: their hosts answer 503
    /// and the others are served.
    pub refused: Vec<Refused>,
    /// `FILE: KEY: REASON` lines about values that run but disagree with each other (a body
    /// limit the app's `/tmp` cannot hold), in name order: `warren check` prints them and
    /// `warren serve` logs them at start and on every reload.
    pub warnings: Vec<String>,
}

/// An app of the config file refused on its own (its directory, virtualenv or entry module is
/// missing, a value is out of range, a host is taken): the rest of the file is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub name: String,
    /// The hosts it claimed that no other app had: the front answers them with a 503.
    pub hosts: Vec<String>,
    /// `FILE: KEY: REASON`, as a refused config's one line.
    pub error: String,
    /// The key at fault (`apps.NAME.venv`) and the reason alone, for a caller that names the
    /// value's origin otherwise (`warren run` names its flags).
    pub key: String,
    pub reason: String,
}

impl Refused {
    fn new(name: &str, host_owner: &HashMap<String, String>, error: ConfigError) -> Refused {
        let mut hosts: Vec<String> = host_owner
            .iter()
            .filter(|(_, owner)| *owner == name)
            .map(|(host, _)| host.clone())
            .collect();
        hosts.sort();
        Refused::of(name, hosts, error)
    }

    fn of(name: &str, hosts: Vec<String>, error: ConfigError) -> Refused {
        let (key, reason) = match &error {
            ConfigError::Invalid { key, reason, .. } => (key.clone(), reason.clone()),
            other => (String::new(), other.to_string()),
        };
        Refused {
            name: name.to_owned(),
            hosts,
            error: error.to_string(),
            key,
            reason,
        }
    }
}

/// `[server]`: what the front listens on and the limits it applies before any app sees a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub listen: SocketAddr,
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Most header lines of an app's response; more gets the client a 502.
    pub max_response_headers: usize,
    /// Largest response head of an app (status, reason, names and values); larger gets the
    /// client a 502, and nothing of it is held in memory.
    pub max_response_header_bytes: usize,
    /// Time a client has to send the whole request head (slowloris bound).
    pub header_timeout: Duration,
    /// Longest pause allowed between two pieces of a request body: a client that stalls
    /// mid-body gets 408 instead of holding a worker.
    pub body_timeout: Duration,
    /// Threads of the front and master. The workers need the cores more: by default half of
    /// them, at least one.
    pub threads: usize,
    /// First uid of the per-app unprivileged ids (see [`App::uid`]).
    pub sandbox_uid_base: u32,
    /// warren's state (the app identities, [`identity`]): `server.state_dir`, by default
    /// `.warren/` beside the config file. May not exist yet; `warren serve` creates it.
    pub state_dir: PathBuf,
    /// A file whose modification (`touch`) reloads the config, as SIGHUP does.
    pub touch_reload: Option<PathBuf>,
    /// Where `/metrics` (Prometheus text format) is served; loopback is advised.
    pub admin: Option<SocketAddr>,
    /// Most workers of all apps together; the autoscaler shares them out.
    pub max_workers: Option<usize>,
    /// The Linux scheduling policy of the front's threads (`server.scheduling`).
    pub scheduling: Scheduling,
    /// One INFO event per request (target `access`), `server.access_log`; on by default.
    pub access_log: bool,
}

/// `[apps.NAME]`: one WSGI app.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub name: String,
    /// Absolute, canonical app directory; goes first on the worker's `sys.path`.
    pub path: PathBuf,
    /// Module part of `entry` (`pkg.mod` in `pkg.mod:application`).
    pub module: String,
    /// Callable part of `entry`.
    pub callable: String,
    /// Lower-case host names routed to this app (no port).
    pub hosts: Vec<String>,
    /// Workers at start: `scale.min`, or `workers` for a fixed-size app.
    pub workers: usize,
    /// `[apps.NAME.scale]`: how the autoscaler sizes the app (`workers = N` is min = max = N).
    pub scale: Scale,
    /// The virtualenv's `site-packages` directory, added to `sys.path` after the app directory.
    pub site_packages: Option<PathBuf>,
    /// The virtualenv's directory and the Python version it was made with (`pyvenv.cfg`'s
    /// `version`, or the `3.X` of its `lib/python3.X`).
    pub venv: Option<(PathBuf, String)>,
    /// URL prefix (no trailing slash) to absolute directory, served by the front itself.
    pub static_dirs: Vec<StaticDir>,
    /// Most requests waiting in this app's queue; one more gets 503.
    pub queue_max: usize,
    /// Longest a request may wait in the queue for a worker before it gets 503.
    pub queue_timeout: Duration,
    /// Largest request body accepted; larger gets 413. By default [`DEFAULT_MAX_BODY_MB`],
    /// under the default `/tmp` ([`DEFAULT_TMP_MB`]), where frameworks spool uploads.
    pub max_body_bytes: u64,
    /// `[apps.NAME.limits]`: resources of the app's processes together.
    pub limits: Limits,
    /// `[apps.NAME.sandbox]`: how its processes are confined.
    pub sandbox: Sandbox,
    /// The unprivileged uid (and gid) outside that root inside the app's sandbox maps to: the
    /// app's recorded identity ([`identity`]), or for an app not recorded yet the uid it
    /// would get. `warren serve` records it ([`record_identities`]) before using it.
    pub uid: u32,
    /// Variables added to warren's minimum environment: the `env_files` in order, then `env`.
    /// Its `Debug` shows the keys only.
    pub env: Env,
    /// Files whose modification (`touch`) redeploys this app: new zygote and workers first,
    /// then the old ones drain.
    pub touch_reload: Vec<PathBuf>,
    /// A path (and query) the zygote requests once after importing the app, before forking
    /// workers, so that lazy first-request set-up is shared (GAE's warm-up request). The
    /// request carries `X-Warren-Warmup: 1`.
    pub warmup: Option<String>,
}

/// `[apps.NAME.limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memory of all the app's processes, swap included.
    pub memory_bytes: u64,
    /// CPU time, in percent of one core, of all its processes together.
    pub cpu_percent: u32,
    /// Processes and threads (`pids.max`).
    pub pids: u32,
    /// Size of the app's private `/tmp`.
    pub tmp_bytes: u64,
    /// Open files per process.
    pub nofile: u64,
    /// Largest file a process may write.
    pub fsize_bytes: u64,
    /// Whether workers may start threads (SAE: no).
    pub threads: bool,
    /// The Linux scheduling policy of the app's zygote and workers.
    pub scheduling: Scheduling,
    /// Longest a request may keep its worker (uWSGI's harakiri): past it the client gets 504
    /// (or its streamed response is cut) and the worker is killed and replaced. `None`: no bound.
    pub request_timeout: Option<Duration>,
    /// A worker is retired after this many requests (0: never), between two requests.
    pub max_requests: u64,
    /// A worker whose resident memory exceeds this after a request is retired (0: never).
    pub max_worker_rss_bytes: u64,
}

/// `limits.scheduling` and `server.scheduling`: how the kernel schedules an app's processes,
/// or the front's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// `SCHED_BATCH` (the default): a worker woken by a request, or a front thread woken by a
    /// response or a client, does not preempt the task running on its CPU; it runs when that
    /// task's slice ends, blocks, or a CPU is idle. Under load that saves a context switch per
    /// request, and across a cgroup boundary a context switch is what confinement costs most.
    Batch,
    /// `SCHED_OTHER`: a woken task may preempt at once.
    Normal,
}

impl Scheduling {
    fn parse(value: &str) -> Result<Scheduling, String> {
        match value {
            "batch" => Ok(Scheduling::Batch),
            "normal" => Ok(Scheduling::Normal),
            other => Err(format!("unknown policy `{other}` (one of batch, normal)")),
        }
    }
}

/// `[apps.NAME.scale]`: the autoscaler's policy for one app.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    /// Fewest workers; 0 lets the app go to zero when idle.
    pub min: usize,
    pub max: usize,
    /// The queue wait the autoscaler aims to stay under.
    pub target_queue_wait: Duration,
    /// Window over which load is averaged for normal decisions.
    pub stable_window: Duration,
    /// Short window that detects a burst.
    pub panic_window: Duration,
    /// Panic when the panic window asks for this many times the workers running.
    pub panic_threshold: f64,
    /// Idle workers above `min` are retired after this long idle.
    pub idle_timeout: Duration,
    /// Whether the imported zygote survives when the app is at zero workers (a fork, not an
    /// import, on the next request).
    pub keep_zygote: bool,
}

impl Scale {
    /// A fixed-size app: `workers = n`.
    pub fn fixed(n: usize) -> Scale {
        Scale {
            min: n,
            max: n,
            ..ScaleFile::default().defaults()
        }
    }

    /// Whether the autoscaler has anything to decide.
    pub fn is_fixed(&self) -> bool {
        self.min == self.max
    }
}

/// `[apps.NAME.sandbox]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// `false` runs the app unconfined (for comparisons and debugging; logged as a warning).
    pub enabled: bool,
    /// PEP 578 audit hooks that explain refusals as Python exceptions.
    pub python_guards: bool,
    /// Mechanisms the app may run without where the kernel lacks them (default: none, so an
    /// app refuses to start rather than run less confined than configured).
    pub optional: Vec<String>,
    /// Extra directories bound read-only, at their own paths.
    pub readable: Vec<PathBuf>,
    /// Directories bound read-write, at their own paths. Each must belong to the app's uid;
    /// one that does not exist yet (its parent does) is created by warren for it.
    pub writable: Vec<PathBuf>,
}

/// The mechanisms `sandbox.optional` may name.
pub const MECHANISMS: [&str; 5] = ["cgroups", "namespaces", "landlock", "seccomp", "rlimits"];

/// One `static` entry of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticDir {
    pub prefix: String,
    pub dir: PathBuf,
}

impl fmt::Display for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.module, self.callable)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    apps: BTreeMap<String, AppFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_max_header_bytes")]
    max_header_bytes: usize,
    #[serde(default = "default_max_response_headers")]
    max_response_headers: usize,
    #[serde(default = "default_max_response_header_bytes")]
    max_response_header_bytes: usize,
    #[serde(default = "default_header_timeout_s")]
    header_timeout_s: f64,
    #[serde(default = "default_body_timeout_s")]
    body_timeout_s: f64,
    threads: Option<usize>,
    #[serde(default = "default_uid_base")]
    sandbox_uid_base: u32,
    state_dir: Option<String>,
    touch_reload: Option<String>,
    admin: Option<String>,
    max_workers: Option<usize>,
    #[serde(default = "default_scheduling")]
    scheduling: String,
    #[serde(default = "default_access_log")]
    access_log: bool,
}

fn default_access_log() -> bool {
    true
}

fn default_scheduling() -> String {
    "batch".into()
}

fn default_uid_base() -> u32 {
    200_000
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: default_listen(),
            max_header_bytes: default_max_header_bytes(),
            max_response_headers: default_max_response_headers(),
            max_response_header_bytes: default_max_response_header_bytes(),
            header_timeout_s: default_header_timeout_s(),
            body_timeout_s: default_body_timeout_s(),
            threads: None,
            sandbox_uid_base: default_uid_base(),
            state_dir: None,
            touch_reload: None,
            admin: None,
            max_workers: None,
            scheduling: default_scheduling(),
            access_log: default_access_log(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
/// hyper's own bound on a head's lines.
fn default_max_response_headers() -> usize {
    100
}
/// nginx's `large_client_header_buffers` (4 × 8 KiB) twice over: apps set more cookies and
/// policies than clients send.
fn default_max_response_header_bytes() -> usize {
    64 * 1024
}
fn default_header_timeout_s() -> f64 {
    10.0
}
fn default_body_timeout_s() -> f64 {
    30.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFile {
    path: String,
    entry: String,
    hosts: Option<Vec<String>>,
    workers: Option<usize>,
    scale: Option<ScaleFile>,
    venv: Option<String>,
    #[serde(default, rename = "static")]
    static_dirs: BTreeMap<String, String>,
    #[serde(default = "default_queue_max")]
    queue_max: usize,
    #[serde(default = "default_queue_timeout_s")]
    queue_timeout_s: f64,
    #[serde(default = "default_max_body_mb")]
    max_body_mb: f64,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    sandbox: SandboxFile,
    #[serde(default)]
    touch_reload: Vec<String>,
    warmup: Option<String>,
    /// Values checked by hand: serde's error for a wrong type would quote the value.
    env: Option<toml::Value>,
    #[serde(default)]
    env_files: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitsFile {
    memory_mb: u64,
    cpu_percent: u32,
    pids: u32,
    tmp_mb: u64,
    nofile: u64,
    fsize_mb: Option<u64>,
    threads: bool,
    scheduling: String,
    request_timeout_s: f64,
    max_requests: u64,
    max_worker_rss_mb: u64,
}

impl Default for LimitsFile {
    fn default() -> Self {
        LimitsFile {
            memory_mb: 256,
            cpu_percent: 100,
            pids: 128,
            tmp_mb: DEFAULT_TMP_MB,
            nofile: 1024,
            fsize_mb: None,
            threads: false,
            scheduling: "batch".into(),
            request_timeout_s: 60.0,
            max_requests: 0,
            max_worker_rss_mb: 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SandboxFile {
    enabled: bool,
    python_guards: bool,
    optional: Vec<String>,
    readable: Vec<String>,
    writable: Vec<String>,
}

impl Default for SandboxFile {
    fn default() -> Self {
        SandboxFile {
            enabled: true,
            python_guards: true,
            optional: Vec::new(),
            readable: Vec::new(),
            writable: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ScaleFile {
    min: usize,
    max: usize,
    target_queue_wait_ms: f64,
    stable_window_s: f64,
    panic_window_s: f64,
    panic_threshold: f64,
    idle_timeout_s: f64,
    keep_zygote: bool,
}

impl Default for ScaleFile {
    fn default() -> Self {
        ScaleFile {
            min: 0,
            max: 8,
            target_queue_wait_ms: 50.0,
            stable_window_s: 60.0,
            panic_window_s: 6.0,
            panic_threshold: 2.0,
            idle_timeout_s: 60.0,
            keep_zygote: true,
        }
    }
}

impl ScaleFile {
    fn defaults(&self) -> Scale {
        Scale {
            min: self.min,
            max: self.max,
            target_queue_wait: Duration::from_secs_f64(self.target_queue_wait_ms / 1000.0),
            stable_window: Duration::from_secs_f64(self.stable_window_s),
            panic_window: Duration::from_secs_f64(self.panic_window_s),
            panic_threshold: self.panic_threshold,
            idle_timeout: Duration::from_secs_f64(self.idle_timeout_s),
            keep_zygote: self.keep_zygote,
        }
    }
}

fn validate_scale(s: &ScaleFile, key: &dyn Fn(&str) -> String) -> Result<Scale, (String, String)> {
    if s.max == 0 || s.max > 1024 {
        return Err((key("scale.max"), "must be between 1 and 1024".into()));
    }
    if s.min > s.max {
        return Err((
            key("scale.min"),
            format!("must not exceed scale.max ({})", s.max),
        ));
    }
    let seconds = |v: f64, name: &str, lo: f64, hi: f64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err((key(name), format!("must be between {lo} and {hi}")))
        }
    };
    seconds(
        s.target_queue_wait_ms,
        "scale.target_queue_wait_ms",
        0.1,
        600_000.0,
    )?;
    seconds(s.stable_window_s, "scale.stable_window_s", 1.0, 3600.0)?;
    seconds(s.panic_window_s, "scale.panic_window_s", 0.1, 3600.0)?;
    if s.panic_window_s > s.stable_window_s {
        return Err((
            key("scale.panic_window_s"),
            format!(
                "must not exceed scale.stable_window_s ({})",
                s.stable_window_s
            ),
        ));
    }
    seconds(s.panic_threshold, "scale.panic_threshold", 1.0, 100.0)?;
    seconds(s.idle_timeout_s, "scale.idle_timeout_s", 0.1, 86_400.0)?;
    Ok(s.defaults())
}

fn default_workers() -> usize {
    2
}
fn default_queue_max() -> usize {
    1024
}
fn default_queue_timeout_s() -> f64 {
    30.0
}
fn default_max_body_mb() -> f64 {
    DEFAULT_MAX_BODY_MB as f64
}

/// `limits.tmp_mb` when not set: the size of a confined app's private `/tmp`, MiB.
pub const DEFAULT_TMP_MB: u64 = 16;

/// `max_body_mb` when not set, MiB. Werkzeug (Flask), Bottle and Django spool an upload past
/// half a MiB or so to a file in `/tmp`, and a confined app's `/tmp` is `limits.tmp_mb`
/// (16 MiB): so the default body fits there, twice over (two workers, the default, each
/// receiving one at once), as nginx (1 MiB) and App Engine (32 MiB) cap bodies by default.
pub const DEFAULT_MAX_BODY_MB: u64 = 8;

/// The warning for a confined app whose largest accepted body would not fit where its
/// framework spools it: a private `/tmp` of `tmp_bytes` in which no file may pass
/// `fsize_bytes`. `None` when it fits, or the app is not confined (its `/tmp` is the host's).
/// A warning rather than a refusal: an app that reads `wsgi.input` as a stream into a
/// writable directory needs no `/tmp` for its bodies.
fn body_warning(app: &App) -> Option<(String, String)> {
    let room = app.limits.tmp_bytes.min(app.limits.fsize_bytes);
    if !app.sandbox.enabled || app.max_body_bytes <= room {
        return None;
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let (what, key) = if app.limits.fsize_bytes < app.limits.tmp_bytes {
        ("largest file (limits.fsize_mb", "limits.fsize_mb")
    } else {
        ("private /tmp (limits.tmp_mb", "limits.tmp_mb")
    };
    Some((
        format!("apps.{}.max_body_mb", app.name),
        format!(
            "accepts bodies up to {} MiB, but the app's {what} {} MiB) cannot hold one: Flask, \
             Bottle and Django spool uploads there and would fail with \"No space left on \
             device\" or \"File too large\"; raise {key} (and limits.memory_mb: /tmp is memory) \
             or lower max_body_mb",
            mib(app.max_body_bytes),
            mib(room)
        ),
    ))
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse(path, &text)
}

/// Parses and validates `text` as if read from `path` (relative paths resolve against its directory).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let value: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        reason: syntax_reason(text, &e),
    })?;
    let raw: ConfigFile =
        serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
            let mut key = e.path().to_string();
            let reason = plain_words(e.into_inner().message().trim());
            // "missing field `entry`" is about the key that is missing, not its table.
            if let Some(field) = reason
                .strip_prefix("missing field `")
                .and_then(|r| r.strip_suffix('`'))
            {
                key = format!("{key}.{field}");
            }
            ConfigError::Invalid {
                path: path.to_owned(),
                key,
                reason,
            }
        })?;
    validate(path, raw)
}

/// serde's messages name Rust types (`invalid type: string "x", expected usize`); a config's
/// reader wants the kind of value: `expected a whole number, found text "x"`.
fn plain_words(message: &str) -> String {
    let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    else {
        return message.to_owned();
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    format!("expected {}, found {}", kind(expected), found_words(found))
}

/// What serde expected, in words (its type names and its visitors' own phrases).
fn kind(expected: &str) -> &str {
    match expected {
        "usize" | "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" | "isize" => {
            "a whole number"
        }
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "string" | "a borrowed string" => "text",
        "a sequence" => "a list",
        "a map" => "a table",
        _ if expected.starts_with("struct ") => "a table",
        other => other,
    }
}

/// What serde found (`string "x"`, `integer `5``, `floating point `1.5``), in words.
fn found_words(found: &str) -> String {
    let pairs = [
        ("string ", "text "),
        ("integer ", "the number "),
        ("floating point ", "the number "),
        ("boolean ", ""),
    ];
    for (from, to) in pairs {
        if let Some(v) = found.strip_prefix(from) {
            return format!("{to}{}", v.trim_matches('`'));
        }
    }
    match found {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        other => other.to_owned(),
    }
}

fn syntax_reason(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().to_owned();
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

fn validate(file: &Path, raw: ConfigFile) -> Result<Config, ConfigError> {
    let invalid = |key: String, reason: String| ConfigError::Invalid {
        path: file.to_owned(),
        key,
        reason,
    };
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));

    let listen = raw.server.listen.parse().map_err(|_| {
        invalid(
            "server.listen".into(),
            format!(
                "`{}` is not an address like 127.0.0.1:8080",
                raw.server.listen
            ),
        )
    })?;
    let admin = match &raw.server.admin {
        None => None,
        Some(a) => Some(a.parse().map_err(|_| {
            invalid(
                "server.admin".into(),
                format!("`{a}` is not an address like 127.0.0.1:9090"),
            )
        })?),
    };
    if raw.server.max_workers == Some(0) {
        return Err(invalid(
            "server.max_workers".into(),
            "must be at least 1".into(),
        ));
    }
    if raw.server.max_header_bytes < 8192 {
        return Err(invalid(
            "server.max_header_bytes".into(),
            "must be at least 8192".into(),
        ));
    }
    if !(1..=10_000).contains(&raw.server.max_response_headers) {
        return Err(invalid(
            "server.max_response_headers".into(),
            "must be between 1 and 10000".into(),
        ));
    }
    if !(1024..=1 << 20).contains(&raw.server.max_response_header_bytes) {
        return Err(invalid(
            "server.max_response_header_bytes".into(),
            "must be between 1024 and 1048576".into(),
        ));
    }
    let header_timeout = seconds(raw.server.header_timeout_s)
        .ok_or_else(|| invalid("server.header_timeout_s".into(), "must be > 0".into()))?;
    let body_timeout = seconds(raw.server.body_timeout_s)
        .ok_or_else(|| invalid("server.body_timeout_s".into(), "must be > 0".into()))?;

    let threads = match raw.server.threads {
        Some(0) => {
            return Err(invalid(
                "server.threads".into(),
                "must be at least 1".into(),
            ));
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
    };
    let scheduling = Scheduling::parse(&raw.server.scheduling)
        .map_err(|reason| invalid("server.scheduling".into(), reason))?;

    let mut apps = Vec::with_capacity(raw.apps.len());
    let mut host_owner: HashMap<String, String> = HashMap::new();
    let uid_base = raw.server.sandbox_uid_base;
    if uid_base < 1000 || uid_base.checked_add(65_536).is_none() {
        return Err(invalid(
            "server.sandbox_uid_base".into(),
            "must be at least 1000 (an unprivileged id) and leave room for 65536 apps".into(),
        ));
    }
    let state_dir =
        resolve_maybe_missing(base, raw.server.state_dir.as_deref().unwrap_or(".warren"))
            .map_err(|reason| invalid("server.state_dir".into(), reason))?;
    // The uids as recorded, or as they would be given (see `record_identities`).
    let names: Vec<&str> = raw.apps.keys().map(String::as_str).collect();
    let uids = identity::assign(&identity::read(&state_dir)?, &names, uid_base)
        .map_err(|e| invalid("server.sandbox_uid_base".into(), e.to_string()))?
        .uids;
    let mut refused = Vec::new();
    for (name, app) in raw.apps {
        let key = |k: &str| format!("apps.{name}.{k}");
        // Named apps with a problem of their own are refused alone: the others are served.
        let checked = (|| -> Result<App, ConfigError> {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    format!("apps.{name}"),
                    "an app name may only use letters, digits, '-' and '_'".into(),
                ));
            }
            let hosts = match app.hosts {
                Some(hosts) if hosts.is_empty() => {
                    return Err(invalid(key("hosts"), "must list at least one host".into()));
                }
                Some(hosts) => hosts,
                None => vec![format!("{name}.localhost")],
            };
            let mut clean_hosts = Vec::with_capacity(hosts.len());
            for host in hosts {
                let host = host.trim().to_ascii_lowercase();
                if host.is_empty() || host.contains(['/', ' ', ':']) {
                    return Err(invalid(
                        key("hosts"),
                        format!("`{host}` is not a host name (no scheme, port or path)"),
                    ));
                }
                if host.contains('*') && host != CATCH_ALL {
                    return Err(invalid(
                        key("hosts"),
                        format!(
                            "`{host}` is not a host name: the one wildcard is `*` alone, for \
                             every host that no other app has"
                        ),
                    ));
                }
                if let Some(other) = host_owner.get(&host) {
                    return Err(invalid(
                        key("hosts"),
                        format!("host `{host}` is already routed to app `{other}`"),
                    ));
                }
                host_owner.insert(host.clone(), name.clone());
                clean_hosts.push(host);
            }

            let path =
                resolve_dir(base, &app.path).map_err(|reason| invalid(key("path"), reason))?;

            let mut venv_dir = None;
            let site_packages = match &app.venv {
                None => None,
                Some(venv) => {
                    let dir =
                        resolve_dir(base, venv).map_err(|reason| invalid(key("venv"), reason))?;
                    venv_dir = Some(dir.clone());
                    Some(find_site_packages(&dir).ok_or_else(|| {
                        invalid(
                            key("venv"),
                            format!("{} has no lib/python3.*/site-packages", dir.display()),
                        )
                    })?)
                }
            };

            let (module, callable) =
                parse_entry(&app.entry).map_err(|r| invalid(key("entry"), r))?;
            let search: Vec<&Path> = std::iter::once(path.as_path())
                .chain(site_packages.as_deref())
                .collect();
            if !module_exists(&search, &module) {
                return Err(invalid(
                    key("entry"),
                    format!(
                        "module `{module}` not found in {} (looked for {}.py and {}/__init__.py)",
                        search
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(" or "),
                        module.replace('.', "/"),
                        module.replace('.', "/")
                    ),
                ));
            }

            let scale = match (app.workers, &app.scale) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        key("workers"),
                        "a fixed `workers` count and a [scale] section exclude each other \
                         (`workers = N` is scale.min = scale.max = N)"
                            .into(),
                    ));
                }
                (Some(n), None) if n == 0 || n > 1024 => {
                    return Err(invalid(key("workers"), "must be between 1 and 1024".into()));
                }
                (Some(n), None) => Scale::fixed(n),
                (None, None) => Scale::fixed(default_workers()),
                (None, Some(s)) => {
                    validate_scale(s, &key).map_err(|(k, reason)| invalid(k, reason))?
                }
            };
            if app.queue_max == 0 {
                return Err(invalid(key("queue_max"), "must be at least 1".into()));
            }
            let queue_timeout = seconds(app.queue_timeout_s)
                .ok_or_else(|| invalid(key("queue_timeout_s"), "must be > 0".into()))?;
            if !(app.max_body_mb.is_finite() && app.max_body_mb >= 0.0) {
                return Err(invalid(key("max_body_mb"), "must be >= 0".into()));
            }
            let max_body_bytes = (app.max_body_mb * 1024.0 * 1024.0) as u64;

            let mut static_dirs = Vec::with_capacity(app.static_dirs.len());
            for (prefix, dir) in app.static_dirs {
                let skey = format!("apps.{name}.static.\"{prefix}\"");
                if !prefix.starts_with('/') || prefix.contains("..") {
                    return Err(invalid(
                        skey,
                        "a static URL prefix starts with '/' and has no '..'".into(),
                    ));
                }
                let dir = resolve_dir(&path, &dir).map_err(|reason| invalid(skey, reason))?;
                let prefix = prefix.trim_end_matches('/').to_owned();
                static_dirs.push(StaticDir { prefix, dir });
            }
            // Longest prefix first, so `/static/img` wins over `/static`.
            static_dirs.sort_by_key(|s| std::cmp::Reverse(s.prefix.len()));

            let limits =
                validate_limits(&app.limits, &key).map_err(|(k, reason)| invalid(k, reason))?;
            let sandbox = validate_sandbox(app.sandbox, base, &key)
                .map_err(|(k, reason)| invalid(k, reason))?;
            let touch_reload = app
                .touch_reload
                .iter()
                .map(|f| resolve_file(base, f))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| invalid(key("touch_reload"), reason))?;

            if let Some(w) = &app.warmup
                && (!w.starts_with('/') || w.chars().any(|c| c.is_control()))
            {
                return Err(invalid(
                    key("warmup"),
                    "a warm-up path starts with '/' and has no control characters".into(),
                ));
            }
            let env = validate_env(app.env, &app.env_files, base, &key)
                .map_err(|(k, reason)| invalid(k, reason))?;
            Ok(App {
                warmup: app.warmup,
                touch_reload,
                limits,
                sandbox,
                uid: uids[&name],
                env,
                name: name.clone(),
                path,
                module,
                callable,
                hosts: clean_hosts,
                workers: scale.min,
                scale,
                venv: venv_dir.zip(site_packages.as_deref()).map(|(dir, sp)| {
                    let version = venv_version(&dir, sp);
                    (dir, version)
                }),
                site_packages,
                static_dirs,
                queue_max: app.queue_max,
                queue_timeout,
                max_body_bytes,
            })
        })();
        match checked {
            Ok(app) => apps.push(app),
            Err(e) => refused.push(Refused::new(&name, &host_owner, e)),
        }
    }

    // An app that another's sandbox could read, or whose writable directory holds warren's
    // own files, is refused (each check names the app at fault).
    while let Err((key, reason)) =
        apps_apart(&apps).and_then(|()| writable_apart(&apps, base, &state_dir))
    {
        let Some(i) = apps
            .iter()
            .position(|a| key.starts_with(&format!("apps.{}.", a.name)))
        else {
            return Err(invalid(key, reason));
        };
        let app = apps.remove(i);
        refused.push(Refused::new(&app.name, &host_owner, invalid(key, reason)));
    }
    refused.sort_by(|a, b| a.name.cmp(&b.name));
    let warnings = apps
        .iter()
        .filter_map(body_warning)
        .map(|(key, reason)| invalid(key, reason).to_string())
        .collect();
    Ok(Config {
        warnings,
        file: file.to_owned(),
        server: Server {
            listen,
            max_header_bytes: raw.server.max_header_bytes,
            max_response_headers: raw.server.max_response_headers,
            max_response_header_bytes: raw.server.max_response_header_bytes,
            header_timeout,
            body_timeout,
            threads,
            sandbox_uid_base: uid_base,
            state_dir,
            admin,
            max_workers: raw.server.max_workers,
            scheduling,
            access_log: raw.server.access_log,
            touch_reload: match &raw.server.touch_reload {
                None => None,
                Some(f) => Some(
                    resolve_file(base, f)
                        .map_err(|reason| invalid("server.touch_reload".into(), reason))?,
                ),
            },
        },
        apps,
        refused,
    })
}

fn validate_limits(
    l: &LimitsFile,
    key: &dyn Fn(&str) -> String,
) -> Result<Limits, (String, String)> {
    let mb = 1024 * 1024;
    if !(16..=1 << 20).contains(&l.memory_mb) {
        return Err((
            key("limits.memory_mb"),
            "must be between 16 and 1048576".into(),
        ));
    }
    if !(1..=100_000).contains(&l.cpu_percent) {
        return Err((
            key("limits.cpu_percent"),
            "must be between 1 and 100000".into(),
        ));
    }
    if !(4..=1 << 20).contains(&l.pids) {
        return Err((key("limits.pids"), "must be between 4 and 1048576".into()));
    }
    if !(1..=1 << 20).contains(&l.tmp_mb) {
        return Err((key("limits.tmp_mb"), "must be between 1 and 1048576".into()));
    }
    if !(64..=1 << 20).contains(&l.nofile) {
        return Err((
            key("limits.nofile"),
            "must be between 64 and 1048576".into(),
        ));
    }
    let fsize_mb = l.fsize_mb.unwrap_or(l.tmp_mb.max(64));
    if fsize_mb == 0 {
        return Err((key("limits.fsize_mb"), "must be at least 1".into()));
    }
    let t = l.request_timeout_s;
    if !(0.0..=86_400.0).contains(&t) {
        return Err((
            key("limits.request_timeout_s"),
            "must be between 0 (no bound) and 86400 seconds".into(),
        ));
    }
    let request_timeout = (t > 0.0).then(|| Duration::from_secs_f64(t));
    let scheduling =
        Scheduling::parse(&l.scheduling).map_err(|reason| (key("limits.scheduling"), reason))?;
    if l.max_worker_rss_mb > l.memory_mb {
        return Err((
            key("limits.max_worker_rss_mb"),
            format!(
                "must not exceed limits.memory_mb ({}): the cgroup would kill the app first",
                l.memory_mb
            ),
        ));
    }
    Ok(Limits {
        memory_bytes: l.memory_mb * mb,
        cpu_percent: l.cpu_percent,
        pids: l.pids,
        tmp_bytes: l.tmp_mb * mb,
        nofile: l.nofile,
        fsize_bytes: fsize_mb * mb,
        threads: l.threads,
        scheduling,
        request_timeout,
        max_requests: l.max_requests,
        max_worker_rss_bytes: l.max_worker_rss_mb * mb,
    })
}

fn validate_sandbox(
    s: SandboxFile,
    base: &Path,
    key: &dyn Fn(&str) -> String,
) -> Result<Sandbox, (String, String)> {
    for m in &s.optional {
        if !MECHANISMS.contains(&m.as_str()) {
            return Err((
                key("sandbox.optional"),
                format!("unknown mechanism `{m}` (one of {})", MECHANISMS.join(", ")),
            ));
        }
    }
    let readable = s
        .readable
        .iter()
        .map(|d| resolve_dir(base, d).map_err(|reason| (key("sandbox.readable"), reason)))
        .collect::<Result<_, _>>()?;
    // A writable directory may not exist yet: warren creates it, owned by the app's uid.
    let writable = s
        .writable
        .iter()
        .map(|d| resolve_maybe_missing(base, d).map_err(|reason| (key("sandbox.writable"), reason)))
        .collect::<Result<_, _>>()?;
    Ok(Sandbox {
        enabled: s.enabled,
        python_guards: s.python_guards,
        readable,
        writable,
        optional: s.optional,
    })
}

/// `[apps.NAME] env` and `env_files`: the files in order, then `env`, later keys replacing
/// earlier ones. No reason quotes a value.
fn validate_env(
    table: Option<toml::Value>,
    files: &[String],
    base: &Path,
    key: &dyn Fn(&str) -> String,
) -> Result<Env, (String, String)> {
    let mut env = Env::default();
    for rel in files {
        let path = base.join(rel);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            (
                key("env_files"),
                format!("{}: cannot read: {e}", path.display()),
            )
        })?;
        let pairs = parse_env_file(&text).map_err(|(line, reason)| {
            (
                key("env_files"),
                format!("{}: line {line}: {reason}", path.display()),
            )
        })?;
        for (k, v) in pairs {
            env.insert(k, v);
        }
    }
    let table = match table {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => {
            return Err((
                key("env"),
                "must be a table of strings, like env = { NAME = \"value\" }".into(),
            ));
        }
    };
    for (k, v) in table {
        check_key(&k).map_err(|reason| (key(&format!("env.{k}")), reason))?;
        let toml::Value::String(v) = v else {
            return Err((key(&format!("env.{k}")), "must be a string".into()));
        };
        env.insert(k, v);
    }
    Ok(env)
}

/// A writable directory is the app's own: warren's config and state must not be in one, or the
/// app could rewrite its own confinement or identity.
fn writable_apart(
    apps: &[App],
    config_dir: &Path,
    state_dir: &Path,
) -> Result<(), (String, String)> {
    let config_dir = std::fs::canonicalize(config_dir).unwrap_or_else(|_| config_dir.to_owned());
    for app in apps.iter().filter(|a| a.sandbox.enabled) {
        for dir in &app.sandbox.writable {
            let holds = |p: &Path| p.starts_with(dir);
            if holds(&config_dir) || holds(state_dir) {
                return Err((
                    format!("apps.{}.sandbox.writable", app.name),
                    format!(
                        "{} holds warren's config file or state directory ({}); the app could \
                         change them: give it a directory of its own",
                        dir.display(),
                        state_dir.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Gives every app of `config` its recorded uid, recording a uid for each app that has none
/// yet (under the state directory's lock, see [`identity::commit`]). Returns the apps given a
/// uid now. `warren serve` calls it at start and on every reload.
pub fn record_identities(
    config: &mut Config,
) -> Result<Vec<(String, u32)>, identity::IdentityError> {
    let names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
    let done = identity::commit(
        &config.server.state_dir,
        &names,
        config.server.sandbox_uid_base,
    )?;
    for app in &mut config.apps {
        app.uid = done.uids[&app.name];
    }
    Ok(done.new)
}

fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s))
}

/// A file that may not exist yet (it is `touch`ed later), in a directory that must.
fn resolve_file(base: &Path, rel: &str) -> Result<PathBuf, String> {
    let joined = base.join(rel);
    let (Some(parent), Some(name)) = (joined.parent(), joined.file_name()) else {
        return Err(format!("{} is not a file path", joined.display()));
    };
    // `parent` is joined to `base` already (a relative base must not be joined twice).
    let parent = resolve_dir(Path::new(""), &parent.to_string_lossy())?;
    Ok(parent.join(name))
}

/// One app must never read another's files, and a sandbox binds `/usr` (for every app) and
/// its app's directory (with everything beneath it) read-only: so no app's code lives under
/// `/usr`, nor inside the directory of another, sandboxed app. (Two apps may share one
/// directory: they then run the same code.)
fn apps_apart(apps: &[App]) -> Result<(), (String, String)> {
    for app in apps {
        let key = format!("apps.{}.path", app.name);
        if app.path.starts_with("/usr") {
            return Err((
                key,
                format!(
                    "{} is under /usr, which every app's sandbox can read; put apps elsewhere",
                    app.path.display()
                ),
            ));
        }
        if let Some(outer) = apps
            .iter()
            .find(|o| o.sandbox.enabled && o.path != app.path && app.path.starts_with(&o.path))
        {
            return Err((
                key,
                format!(
                    "{} is inside the directory of app `{}` ({}), whose sandbox could read it",
                    app.path.display(),
                    outer.name,
                    outer.path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// A directory that may not exist yet (warren creates it), in a directory that must: the
/// canonical path if it exists, else the canonical parent joined with its name.
fn resolve_maybe_missing(base: &Path, rel: &str) -> Result<PathBuf, String> {
    let joined = base.join(rel);
    if std::fs::symlink_metadata(&joined).is_ok() {
        return resolve_dir(base, rel);
    }
    let (Some(parent), Some(name)) = (joined.parent(), joined.file_name()) else {
        return Err(format!("{} is not a directory path", joined.display()));
    };
    // `parent` is joined to `base` already (a relative base must not be joined twice).
    let parent = resolve_dir(Path::new(""), &parent.to_string_lossy()).map_err(|reason| {
        format!(
            "{} does not exist, nor does its parent: {reason}",
            joined.display()
        )
    })?;
    Ok(parent.join(name))
}

fn resolve_dir(base: &Path, rel: &str) -> Result<PathBuf, String> {
    let joined = base.join(rel);
    match std::fs::canonicalize(&joined) {
        Ok(p) if p.is_dir() => Ok(p),
        Ok(p) => Err(format!("{} is not a directory", p.display())),
        Err(e) => Err(format!("{}: {e}", joined.display())),
    }
}

/// The Python version a virtualenv was made with: `pyvenv.cfg`'s `version` (or
/// `version_info`), else the `3.X` of `site_packages`'s parent (`lib/python3.X`).
fn venv_version(venv: &Path, site_packages: &Path) -> String {
    let from_cfg = std::fs::read_to_string(venv.join("pyvenv.cfg"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let (k, v) = line.split_once('=')?;
                matches!(k.trim(), "version" | "version_info").then(|| v.trim().to_owned())
            })
        });
    from_cfg.unwrap_or_else(|| {
        site_packages
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().trim_start_matches("python").to_owned())
            .unwrap_or_default()
    })
}

/// `3.11` of `3.11.7`.
fn minor(version: &str) -> &str {
    let mut dots = version.match_indices('.').map(|(i, _)| i);
    match (dots.next(), dots.next()) {
        (Some(_), Some(second)) => &version[..second],
        _ => version,
    }
}

/// Refuses each app whose virtualenv was made with a Python of another minor version than
/// `embedded` (the one warren's worker embeds, whose interpreter is `exe`): its compiled
/// packages would fail to import as "No module named ...". The refusal names both versions
/// and the command that makes a fitting virtualenv.
pub fn refuse_other_pythons(config: &mut Config, embedded: &str, exe: &str) {
    let file = config.file.clone();
    let (keep, other): (Vec<App>, Vec<App>) =
        std::mem::take(&mut config.apps).into_iter().partition(|a| {
            a.venv
                .as_ref()
                .is_none_or(|(_, v)| minor(v) == minor(embedded))
        });
    config.apps = keep;
    for app in other {
        let (dir, version) = app.venv.as_ref().expect("partitioned on it");
        let error = ConfigError::Invalid {
            path: file.clone(),
            key: format!("apps.{}.venv", app.name),
            reason: format!(
                "{} was made with Python {version}, but warren embeds Python {embedded}: make \
                 it again with `{exe} -m venv {}` (packages compiled for one cannot load in the \
                 other)",
                dir.display(),
                dir.display()
            ),
        };
        config
            .refused
            .push(Refused::of(&app.name, app.hosts.clone(), error));
    }
    config.refused.sort_by(|a, b| a.name.cmp(&b.name));
}

fn find_site_packages(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found.pop()
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Splits `module:callable`, checking both halves are Python identifiers (the module dotted).
/// `module:factory()` names an app factory, called once in the zygote: the callable keeps its
/// `()`, which the worker reads.
fn parse_entry(entry: &str) -> Result<(String, String), String> {
    let Some((module, callable)) = entry.split_once(':') else {
        return Err(format!(
            "`{entry}` is not of the form module:callable (or module:factory())"
        ));
    };
    if !module.split('.').all(is_identifier) {
        return Err(format!("`{module}` is not a Python module name"));
    }
    let name = callable.strip_suffix("()").unwrap_or(callable);
    if !is_identifier(name) {
        return Err(format!(
            "`{callable}` is not a Python identifier, or one followed by () for a factory"
        ));
    }
    Ok((module.to_owned(), callable.to_owned()))
}

fn module_exists(search: &[&Path], module: &str) -> bool {
    let rel = module.replace('.', "/");
    search.iter().any(|dir| {
        dir.join(format!("{rel}.py")).is_file() || dir.join(&rel).join("__init__.py").is_file()
    })
}

#[cfg(test)]
mod tests;
