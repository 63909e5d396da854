//! The escape suite: a hostile app (`tests/apps/escape`) tries, one route per attack, to get
//! out of its sandbox (processes, system calls, files, resources, network, signals, the
//! Python guards), and each test asserts that the attack was contained with the errno of the
//! layer meant to stop it, that the attacking app is still served (its worker answered, or
//! was replaced when the kernel killed it), that a neighbour app answered 200 all along, and
//! that warren then exits cleanly.
//!
//! The attacking app `evil` runs with the Python guards off, so the kernel layers alone must
//! hold; `guarded` is the same code with the guards on. The suite needs root (cgroups,
//! namespaces): without it every test says it was skipped, except under CI, where that fails.
//! The attacks run only inside warren's workers, never in this process.

mod support;

use std::collections::BTreeMap;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{Client, Warren, fixture, repo_root};

const EVIL: &str = "evil.localhost";
const GUARDED: &str = "guarded.localhost";
/// The guarded app's `limits.tmp_mb`.
const TMP_MB_GUARDED: u64 = 16;
const GOOD: &str = "good.localhost";

/// What `examples/apps/hello` answers.
const HELLO: &str = "Hello, World!\n";

// errno values (Linux).
const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EACCES: i32 = 13;
const EMFILE: i32 = 24;
const EFBIG: i32 = 27;
const ENOSPC: i32 = 28;
const EROFS: i32 = 30;
const ENOSYS: i32 = 38;
const ENETUNREACH: i32 = 101;
const ECONNREFUSED: i32 = 111;

const MIB: u64 = 1 << 20;
/// `[apps.evil.limits] tmp_mb` and `nofile` of the config below.
const TMP_MB: u64 = 8;
const NOFILE: i64 = 256;

/// How long a killed worker has to be replaced (its app answering `/ok` again).
const REPLACE_TIMEOUT: Duration = Duration::from_secs(15);

/// Log lines that say a worker or a zygote ended (or could not start).
const DEATH_MARKS: &[&str] = &[
    "worker killed",
    "worker exited",
    "app unavailable",
    "could not fork",
    "did not become ready",
];

// ---------------------------------------------------------------------------------------------
// Running the suite

/// The ids of a `/proc/PID/status` line such as `Uid:` (real, effective, saved, fs).
fn config() -> String {
    let root = repo_root();
    let escape = fixture("escape");
    let venv = root.join(".venv");
    let hello = root.join("examples/apps/hello");
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.evil]
path = "{escape}"
entry = "app:application"
venv = "{venv}"
workers = 2

[apps.evil.limits]
memory_mb = 64
cpu_percent = 20
pids = 32
tmp_mb = {TMP_MB}
nofile = {NOFILE}

[apps.evil.sandbox]
python_guards = false    # the kernel layers alone must hold

[apps.guarded]
path = "{escape}"
entry = "app:application"
venv = "{venv}"
workers = 1
# python_guards default true

[apps.guarded.limits]
fsize_mb = 1              # for the notes a file past these gets
tmp_mb = {TMP_MB_GUARDED}

[apps.good]
path = "{hello}"
entry = "app:application"
workers = 2
"#,
        venv = venv.display(),
        hello = hello.display(),
    )
}

/// Starts warren on [`config`] and waits for every worker.
fn start_warren() -> Warren {
    let w = Warren::start(&config());
    w.wait_workers("evil", 2);
    w.wait_workers("guarded", 1);
    w.wait_workers("good", 2);
    w
}

/// Percent-encodes a query value (keeps `/`, which is legal there).
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The neighbour: an innocent app that must keep answering

/// One request of the neighbour.
struct Probe {
    result: Result<(), String>,
    took: Duration,
}

/// A background thread sending `GET /` to the `good` app every ~10 ms on a kept-alive
/// connection, recording every answer. [`Neighbour::finish`] asserts all of them were 200.
struct Neighbour {
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<Probe>>>,
    thread: Option<JoinHandle<()>>,
}

/// Fewest requests the neighbour must have made when it finishes.
const MIN_PROBES: usize = 5;
/// Longest a neighbour request may take.
const PROBE_MAX: Duration = Duration::from_secs(5);

impl Neighbour {
    fn start(w: &Warren) -> Neighbour {
        let addr = w.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = stop.clone();
            let probes = probes.clone();
            std::thread::spawn(move || {
                let mut client: Option<Client> = None;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    // `Client` panics on I/O errors: a panic is a failed request, and the
                    // next one gets a fresh connection.
                    let answer = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        let c = client.get_or_insert_with(|| {
                            let c = Client::connect(addr, GOOD);
                            c.set_read_timeout(Duration::from_secs(10));
                            c
                        });
                        let resp = c.get("/");
                        (resp.status, resp.text())
                    }));
                    let result = match answer {
                        Ok((200, body)) if body == HELLO => Ok(()),
                        Ok((status, body)) => Err(format!("{status} {body:?}")),
                        Err(panic) => {
                            client = None;
                            let msg = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "panic".to_owned());
                            Err(format!("request failed: {msg}"))
                        }
                    };
                    let took = started.elapsed();
                    probes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Probe { result, took });
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Neighbour {
            stop,
            probes,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.probes.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops the thread (after at least [`MIN_PROBES`] requests) and asserts every request
    /// got a 200 with the right body, none slower than [`PROBE_MAX`].
    fn finish(mut self, w: &Warren) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count() < MIN_PROBES && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the neighbour thread panicked");
        }
        let probes = std::mem::take(&mut *self.probes.lock().unwrap_or_else(|e| e.into_inner()));
        assert!(
            probes.len() >= MIN_PROBES,
            "the neighbour app made only {} request(s); log:\n{}",
            probes.len(),
            w.logs()
        );
        let failures: Vec<String> = probes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.result.as_ref().err().map(|e| format!("#{i}: {e}")))
            .collect();
        assert!(
            failures.is_empty(),
            "the neighbour app did not always answer 200 ({} of {} requests failed): {:?}; \
             log:\n{}",
            failures.len(),
            probes.len(),
            &failures[..failures.len().min(10)],
            w.logs()
        );
        let slowest = probes.iter().map(|p| p.took).max().unwrap_or_default();
        assert!(
            slowest < PROBE_MAX,
            "a neighbour request took {slowest:?} (at most {PROBE_MAX:?} allowed); log:\n{}",
            w.logs()
        );
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Attacks and their reports

/// The `key=value` answer of an attack route.
struct Report {
    request: String,
    body: String,
    fields: BTreeMap<String, String>,
}

impl Report {
    fn parse(request: &str, body: &str) -> Report {
        let fields = body
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Report {
            request: request.to_owned(),
            body: body.to_owned(),
            fields,
        }
    }

    fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or_else(|| {
            panic!(
                "{}: the report has no `{key}=` line:\n{}",
                self.request, self.body
            )
        })
    }

    fn outcome(&self) -> &str {
        self.get("outcome")
    }

    fn errno(&self) -> Option<i32> {
        self.int_opt("errno").map(|e| e as i32)
    }

    fn error(&self) -> &str {
        self.get("error")
    }

    fn int_opt(&self, key: &str) -> Option<i64> {
        let v = self.get(key);
        if v.is_empty() {
            return None;
        }
        Some(v.parse().unwrap_or_else(|_| {
            panic!(
                "{}: `{key}={v}` is not an integer:\n{}",
                self.request, self.body
            )
        }))
    }

    fn int(&self, key: &str) -> i64 {
        self.int_opt(key)
            .unwrap_or_else(|| panic!("{}: `{key}=` is empty:\n{}", self.request, self.body))
    }
}

/// Runs an attack on `host` (one request on a fresh connection) and parses its report. The
/// worker must answer: a 502 here means the kernel killed it, or an exec replaced it.
/// Sends `GET path` to `host` and, while the attack runs, one request to the neighbour (which
/// must answer 200: the attack cannot stall it), then reads the attack's answer.
fn during_attack(w: &Warren, host: &str, path: &str) -> support::Response {
    let mut c = w.client(host);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .expect("sending the attack");
    let n = w.get(GOOD, "/");
    assert_eq!(
        n.status,
        200,
        "the neighbour failed while {host}{path} ran: {}",
        n.text()
    );
    c.read_response("GET").expect("the attack's answer")
}

fn attack_on(w: &Warren, host: &str, path: &str) -> Report {
    let resp = during_attack(w, host, path);
    assert_eq!(
        resp.status,
        200,
        "{host}{path}: expected the attack's report, got {} {} {:?} (a 502 means the worker \
         died: killed by the kernel, or replaced by an exec); log:\n{}",
        resp.status,
        resp.reason,
        resp.text(),
        w.logs()
    );
    let report = Report::parse(&format!("{host}{path}"), &resp.text());
    report.outcome();
    report
}

/// Runs an attack on the `evil` app.
fn attack(w: &Warren, path: &str) -> Report {
    attack_on(w, EVIL, path)
}

/// Asserts the attack was contained and, when `allowed` is not empty, that its errno is one
/// of `allowed` (the layer meant to stop it did).
fn assert_contained(report: &Report, allowed: &[i32]) {
    assert_eq!(
        report.outcome(),
        "contained",
        "{} ESCAPED the sandbox:\n{}",
        report.request,
        report.body
    );
    if !allowed.is_empty() {
        let errno = report.errno();
        assert!(
            errno.is_some_and(|e| allowed.contains(&e)),
            "{}: contained, but with errno {errno:?} instead of one of {allowed:?}, so not by \
             the layer meant to stop it:\n{}",
            report.request,
            report.body
        );
    }
}

/// Asserts that integer field `key` of the report is one of `allowed`.
fn assert_field_in(report: &Report, key: &str, allowed: &[i64]) {
    let v = report.int_opt(key);
    assert!(
        v.is_some_and(|v| allowed.contains(&v)),
        "{}: `{key}` is {v:?}, expected one of {allowed:?}:\n{}",
        report.request,
        report.body
    );
}

/// Runs an attack that must kill its worker: warren answers 502.
fn attack_expecting_death(w: &Warren, path: &str) {
    let resp = during_attack(w, EVIL, path);
    assert_eq!(
        resp.status,
        502,
        "{EVIL}{path}: expected the kernel to kill the worker (502), got {} {}:\n{}\nlog:\n{}",
        resp.status,
        resp.reason,
        resp.text(),
        w.logs()
    );
}

fn death_lines(w: &Warren) -> Vec<String> {
    w.logs()
        .lines()
        .filter(|l| DEATH_MARKS.iter().any(|m| l.contains(m)))
        .map(str::to_owned)
        .collect()
}

/// Polls `host/ok` until it answers `200 ok`, up to `timeout`.
fn wait_answers_ok(w: &Warren, host: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let resp = w.get(host, "/ok");
        if resp.status == 200 && resp.text() == "ok" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} did not answer /ok within {timeout:?} of the attack (last: {} {:?}); \
             log:\n{}",
            resp.status,
            resp.text(),
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_warren_alive(w: &Warren) {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", w.pid())).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .map(str::to_owned);
    assert!(
        state.as_deref().is_some_and(|s| s != "Z" && s != "X"),
        "warren (pid {}) is not running any more (state {state:?}); log:\n{}",
        w.pid(),
        w.logs()
    );
}

/// A running warren with the three apps, and the neighbour already sending requests. (The
/// neighbour is declared first so that, when a failed test drops the scene, it stops before
/// warren is killed.)
struct Scene {
    neighbour: Neighbour,
    w: Warren,
}

impl Scene {
    /// `None` when the suite is skipped (not root).
    fn start() -> Option<Scene> {
        if !support::needs_root() {
            return None;
        }
        let w = start_warren();
        let neighbour = Neighbour::start(&w);
        Some(Scene { neighbour, w })
    }

    fn attack(&self, path: &str) -> Report {
        attack(&self.w, path)
    }

    /// After an attack the worker survived: no worker of any app died, every app answers.
    fn finish(self) {
        self.end(false);
    }

    /// After an attack that killed an `evil` worker: it is replaced within
    /// [`REPLACE_TIMEOUT`], and no worker of another app died.
    fn finish_after_death(self) {
        self.end(true);
    }

    fn end(self, evil_died: bool) {
        let Scene { neighbour, w } = self;
        wait_answers_ok(&w, EVIL, REPLACE_TIMEOUT);
        wait_answers_ok(&w, GUARDED, Duration::from_secs(5));
        assert_warren_alive(&w);
        let deaths = death_lines(&w);
        if evil_died {
            let others: Vec<&String> = deaths
                .iter()
                .filter(|l| !l.contains("app=\"evil\""))
                .collect();
            assert!(
                others.is_empty(),
                "workers of other apps died too: {others:#?}; log:\n{}",
                w.logs()
            );
        } else {
            assert!(
                deaths.is_empty(),
                "a worker or zygote died during the attack: {deaths:#?}; log:\n{}",
                w.logs()
            );
        }
        neighbour.finish(&w);
        w.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Finding the app's processes and cgroup from the host

/// The `<controller>_path=` (or, failing that, `path=`) value of a log line, unquoted.
fn cgroup_path_in(line: &str, controller: &str) -> Option<PathBuf> {
    let value = |prefix: &str| {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(prefix))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let v = value(&format!("{controller}_path=")).or_else(|| value("path="))?;
    v.starts_with('/').then(|| PathBuf::from(v))
}

/// The directory of `app`'s group in `controller`'s hierarchy, from warren's log, checked to
/// hold `file`.
fn cgroup_dir(w: &Warren, app: &str, controller: &str, file: &str) -> PathBuf {
    let tag = format!("app=\"{app}\"");
    let find = |w: &Warren| {
        w.log_lines(&[&tag, "cgroup"])
            .iter()
            .find_map(|l| cgroup_path_in(l, controller))
    };
    let found = w.wait_for_log_matching(Duration::from_secs(10), |logs| {
        logs.lines()
            .filter(|l| l.contains(&tag) && l.contains("cgroup"))
            .any(|l| cgroup_path_in(l, controller).is_some())
    });
    assert!(
        found,
        "no log line with {tag}, `cgroup` and `{controller}_path=/...`; log:\n{}",
        w.logs()
    );
    let dir = find(w).expect("the cgroup line");
    assert!(
        dir.join(file).is_file(),
        "{} has no {file}; log:\n{}",
        dir.display(),
        w.logs()
    );
    dir
}

/// `nr_throttled` from a cgroup's `cpu.stat`.
fn nr_throttled(dir: &Path) -> u64 {
    let stat = std::fs::read_to_string(dir.join("cpu.stat")).expect("reading cpu.stat");
    stat.lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no nr_throttled in {}/cpu.stat:\n{stat}", dir.display()))
}

/// A process of an app, seen from the host.
#[derive(Debug)]
struct AppProcess {
    pid: u32,
    ppid: u32,
    status: String,
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        match parent_of(pid) {
            Some(p) if p == ancestor => return true,
            Some(p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

/// The processes under warren whose command line is `warren-worker ... --name APP ...`: the
/// zygote and its forks (a fork keeps its parent's command line).
fn app_processes(w: &Warren, app: &str) -> Vec<AppProcess> {
    let needle = format!("\0--name\0{app}\0");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("warren-worker") || !cmdline.contains(&needle) {
            continue;
        }
        if !descends_from(pid, w.pid()) {
            continue;
        }
        let (Some(ppid), Ok(status)) = (
            parent_of(pid),
            std::fs::read_to_string(format!("/proc/{pid}/status")),
        ) else {
            continue;
        };
        found.push(AppProcess { pid, ppid, status });
    }
    found
}

/// The forks among `procs`: those whose parent is one of them too. That leaves out the
/// process warren started (a zygote, or the waiter that forked the zygote into its pid
/// namespace) and keeps every worker.
fn forks(procs: &[AppProcess]) -> Vec<&AppProcess> {
    procs
        .iter()
        .filter(|p| procs.iter().any(|q| q.pid == p.ppid))
        .collect()
}

fn status_line<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or("(missing)")
}

// =============================================================================================
// Processes

#[test]
fn fork_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/fork_bomb");
    assert_contained(&r, &[EPERM]);
    assert!(
        r.error().starts_with("PermissionError"),
        "fork should fail with PermissionError:\n{}",
        r.body
    );
    assert_eq!(r.int("forks"), 0, "a fork succeeded:\n{}", r.body);
    s.finish();
}

#[test]
fn threads_cannot_start() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/thread_bomb");
    assert_contained(&r, &[]);
    assert!(
        r.error().starts_with("RuntimeError"),
        "threads are disabled by default: the first start should raise RuntimeError:\n{}",
        r.body
    );
    assert_eq!(r.int("started"), 0, "a thread started:\n{}", r.body);
    s.finish();
}

#[test]
fn threads_cannot_start_in_the_zygote_at_import_time() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/thread_at_import");
    assert_contained(&r, &[]);
    assert!(r.error().starts_with("RuntimeError"), "{}", r.body);
    s.finish();
}

#[test]
fn fork_is_refused_in_the_zygote_at_import_time() {
    let Some(s) = Scene::start() else { return };
    // The zygote's filter lets its own keyed fork through, not the app's.
    let r = s.attack("/fork_at_import");
    assert_contained(&r, &[EPERM]);
    assert!(r.error().starts_with("PermissionError"), "{}", r.body);
    s.finish();
}

#[test]
fn subprocess_run_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/subprocess_run");
    // EPERM from the filter at the fork (ENOENT would be a child that was made, failing exec).
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn posixsubprocess_fork_exec_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/posixsubprocess");
    assert_contained(&r, &[EPERM]);
    assert_eq!(r.int("forked"), 0, "a child was created:\n{}", r.body);
    s.finish();
}

#[test]
fn os_system_runs_nothing() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/os_system");
    assert_contained(&r, &[]);
    assert_ne!(r.int("status"), 0, "os.system returned 0:\n{}", r.body);
    s.finish();
}

#[test]
fn raw_fork_and_execve_syscalls_are_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/raw_syscall");
    assert_contained(&r, &[EPERM]);
    assert_field_in(&r, "fork_errno", &[EPERM.into()]);
    assert_field_in(&r, "execve_errno", &[EPERM.into()]);
    s.finish();
}

#[test]
fn clone3_is_not_available() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/clone3");
    assert_contained(&r, &[ENOSYS]);
    s.finish();
}

#[test]
fn memfd_exec_is_refused_at_memfd_create() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/memfd_exec");
    assert_contained(&r, &[EPERM]);
    assert_eq!(
        r.get("stage"),
        "memfd_create",
        "memfd_create should be refused:\n{}",
        r.body
    );
    s.finish();
}

// =============================================================================================
// System calls

#[test]
fn i386_int80_kills_the_worker_with_sigsys() {
    let Some(s) = Scene::start() else { return };
    attack_expecting_death(&s.w, "/i386_int80");
    assert!(
        s.w.wait_for_log_line(Duration::from_secs(10), &["evil", "SIGSYS"]),
        "no log line says an evil worker was killed by SIGSYS; log:\n{}",
        s.w.logs()
    );
    s.finish_after_death();
}

#[test]
fn io_uring_is_not_available() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/io_uring");
    assert_contained(&r, &[ENOSYS]);
    s.finish();
}

#[test]
fn unshare_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/unshare");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn setns_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/setns");
    // The sandbox's own /proc opens; the call itself is what is refused.
    assert_eq!(
        r.get("stage"),
        "setns",
        "setns was never called:\n{}",
        r.body
    );
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn mount_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/mount");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn pivot_root_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/pivot_root");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn chroot_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/chroot");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn ptrace_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/ptrace");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn process_vm_writev_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/process_vm_writev");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn tiocsti_is_refused_by_the_filter() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/tiocsti");
    // Exactly EPERM: ENOTTY would mean the ioctl reached the (non-)terminal.
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn bpf_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/bpf");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn perf_event_open_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/perf_event_open");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn keyctl_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/keyctl");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn userfaultfd_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/userfaultfd");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

// =============================================================================================
// File system

#[test]
fn shared_library_from_tmp_does_not_load() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/load_so_from_tmp");
    assert_contained(&r, &[]);
    assert_eq!(
        r.get("stage"),
        "dlopen",
        "the copy into /tmp should work and the dlopen fail:\n{}",
        r.body
    );
    assert!(
        r.error().starts_with("OSError"),
        "dlopen should raise OSError (/tmp is noexec):\n{}",
        r.body
    );
    s.finish();
}

#[test]
fn etc_shadow_is_unreadable() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/read_shadow");
    // The new root's /etc holds a few generated files: the host's shadow is not there at all.
    assert_contained(&r, &[ENOENT]);
    s.finish();
}

#[test]
fn other_app_directory_is_out_of_reach() {
    let Some(s) = Scene::start() else { return };
    let hello = repo_root().join("examples/apps/hello");
    let r = s.attack(&format!(
        "/read_other_app?path={}",
        query_value(&hello.display().to_string())
    ));
    // Not bound into the new root: the path does not exist (not merely unreadable).
    assert_contained(&r, &[ENOENT]);
    assert_field_in(&r, "open_errno", &[ENOENT.into()]);
    s.finish();
}

#[test]
fn other_app_directory_is_out_of_reach_by_a_relative_path() {
    let Some(s) = Scene::start() else { return };
    // From tests/apps/escape up to the repository, then down into the neighbour.
    let r = s.attack(&format!(
        "/read_other_app?path={}",
        query_value("../../../examples/apps/hello")
    ));
    assert_contained(&r, &[ENOENT]);
    assert_field_in(&r, "open_errno", &[ENOENT.into()]);
    s.finish();
}

#[test]
fn proc_1_root_does_not_lead_to_the_host() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/read_proc1_root");
    assert_contained(&r, &[EPERM, ENOENT, EACCES]);
    s.finish();
}

#[test]
fn app_code_is_read_only() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/write_code");
    // Appending meets the file's owner first (EACCES); creating a file meets the read-only
    // bind (EROFS), which would hold even for a uid that owned the directory.
    assert_contained(&r, &[EROFS, EACCES]);
    assert_field_in(&r, "create_errno", &[EROFS.into()]);
    s.finish();
}

#[test]
fn site_packages_are_read_only() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/write_site_packages");
    // The venv is bound read-only.
    assert_contained(&r, &[EROFS]);
    s.finish();
}

// =============================================================================================
// Resources

#[test]
fn memory_hog_is_killed_by_the_oom_killer() {
    let Some(s) = Scene::start() else { return };
    attack_expecting_death(&s.w, "/memory_hog");
    assert!(
        s.w.wait_for_log_line(Duration::from_secs(10), &["evil", "out of memory"]),
        "no log line says an evil worker ran out of memory; log:\n{}",
        s.w.logs()
    );
    s.finish_after_death();
}

#[test]
fn memory_near_the_limit_is_logged_against_the_app() {
    let Some(s) = Scene::start() else { return };
    // What the app's processes already use, from its group on the host.
    let memory = cgroup_dir(&s.w, "evil", "memory", "memory.stat");
    let used = ["memory.current", "memory.usage_in_bytes"]
        .iter()
        .find_map(|f| std::fs::read_to_string(memory.join(f)).ok())
        .and_then(|t| t.trim().parse::<u64>().ok())
        .expect("the group's memory use");
    // To 94% of the 64 MiB limit (the log's threshold is 90%), for long enough to be read
    // (every 5 s) twice.
    let hold = (64 * MIB * 94 / 100).saturating_sub(used) / MIB;
    let seconds = support::slow(Duration::from_secs(11)).as_secs();
    let r = s.attack(&format!("/memory_hold?mib={hold}&seconds={seconds}"));
    assert_contained(&r, &[]);
    assert!(
        s.w.wait_for_log_line(
            Duration::from_secs(1),
            &["memory use is above 90%", "app=\"evil\"", "limit_mb=64"]
        ),
        "no log line says the evil app neared its memory limit ({used} bytes used, {hold} MiB \
         held); log:\n{}",
        s.w.logs()
    );
    s.finish();
}

#[test]
fn cpu_spin_is_throttled_and_the_neighbour_keeps_answering() {
    let Some(s) = Scene::start() else { return };
    let dir = cgroup_dir(&s.w, "evil", "cpu", "cpu.stat");
    let before = nr_throttled(&dir);
    let r = s.attack("/cpu_spin?seconds=2");
    assert_contained(&r, &[]);
    let after = nr_throttled(&dir);
    assert!(
        after > before,
        "{}/cpu.stat nr_throttled did not grow during a 2 s spin ({before} -> {after}); the \
         spin reported: {}",
        dir.display(),
        r.get("detail")
    );
    // The master reads the throttling back from the group and logs it against the app.
    assert!(
        s.w.wait_for_log_line(
            support::slow(Duration::from_secs(15)),
            &["cpu quota reached", "app=\"evil\"", "nr_throttled="]
        ),
        "no log line says the evil app was throttled; log:\n{}",
        s.w.logs()
    );
    s.finish();
}

#[test]
fn tmp_is_capped() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/fill_tmp");
    assert_contained(&r, &[ENOSPC, EFBIG]);
    let written = r.int("written") as u64;
    assert!(
        (TMP_MB / 2 * MIB..=TMP_MB * MIB).contains(&written),
        "wrote {written} bytes to /tmp, expected about its {TMP_MB} MiB:\n{}",
        r.body
    );
    s.finish();
}

#[test]
fn descriptors_are_capped() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/many_fds");
    assert_contained(&r, &[EMFILE]);
    let count = r.int("count");
    assert!(
        count < NOFILE,
        "opened {count} descriptors, the limit is {NOFILE}:\n{}",
        r.body
    );
    s.finish();
}

// =============================================================================================
// Network

#[test]
fn host_loopback_is_unreachable() {
    let Some(s) = Scene::start() else { return };
    // warren's own listening port: open on the host's loopback.
    let r = s.attack(&format!("/connect_host?port={}", s.w.addr.port()));
    assert_contained(&r, &[ECONNREFUSED, ENETUNREACH, EACCES, EPERM]);
    s.finish();
}

#[test]
fn tcp_inside_the_sandbox_is_refused_by_landlock() {
    let Some(s) = Scene::start() else { return };
    // Only Landlock answers EACCES here: the namespace's own loopback would let it through.
    let r = s.attack("/tcp_in_sandbox");
    assert_contained(&r, &[EACCES]);
    s.finish();
}

#[test]
fn host_abstract_unix_socket_is_unreachable() {
    let Some(s) = Scene::start() else { return };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!("warren-escape-{}-{nanos}", std::process::id());
    let addr = UnixSocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let listener = UnixListener::bind_addr(&addr).expect("binding the abstract socket");
    listener.set_nonblocking(true).unwrap();
    let r = s.attack(&format!("/abstract_unix?name={}", query_value(&name)));
    assert_contained(&r, &[ECONNREFUSED, EPERM, EACCES]);
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a connection reached the host's abstract socket: {other:?}"),
    }
    s.finish();
}

#[test]
fn raw_socket_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/raw_socket");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn netlink_socket_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/netlink_socket");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

// =============================================================================================
// Signals and identity

#[test]
fn kill_all_is_refused_and_everyone_survives() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/kill_all");
    assert_contained(&r, &[EPERM]);
    // `finish` checks that no worker of any app died and every app still answers.
    s.finish();
}

#[test]
fn sethostname_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/sethostname");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn clock_settime_is_refused() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/settimeofday");
    assert_contained(&r, &[EPERM]);
    s.finish();
}

#[test]
fn worker_holds_only_stdio_and_its_two_pipes_to_the_master() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/fds");
    assert_contained(&r, &[]);
    assert_eq!(r.int("pipes"), 2, "{}", r.body);
    assert_eq!(r.int("sockets"), 0, "{}", r.body);
    s.finish();
}

#[test]
fn worker_has_seccomp_no_new_privs_and_no_capabilities() {
    let Some(s) = Scene::start() else { return };
    let r = s.attack("/self_check");
    assert_contained(&r, &[]);
    assert_eq!(r.get("seccomp"), "2", "no seccomp filter:\n{}", r.body);
    assert_eq!(
        r.get("no_new_privs"),
        "1",
        "no_new_privs unset:\n{}",
        r.body
    );
    for key in ["cap_eff", "cap_prm", "cap_bnd"] {
        let caps = u64::from_str_radix(r.get(key), 16).unwrap_or(u64::MAX);
        assert_eq!(caps, 0, "{key} is not empty:\n{}", r.body);
    }
    // rlimits, soft and hard alike: no core dumps, the app's open files, and a file size of
    // `limits.fsize_mb`, by default the larger of tmp_mb and 64 MiB.
    let fsize = (TMP_MB.max(64) * MIB) as i64;
    for (key, want) in [("core", 0), ("nofile", NOFILE), ("fsize", fsize)] {
        for side in ["soft", "hard"] {
            assert_eq!(
                r.int(&format!("{key}_{side}")),
                want,
                "{key} {side}:\n{}",
                r.body
            );
        }
    }
    s.finish();
}

#[test]
fn worker_runs_as_unprivileged_uid_outside() {
    let Some(s) = Scene::start() else { return };
    let procs = app_processes(&s.w, "evil");
    let workers = forks(&procs);
    assert!(
        workers.len() >= 2,
        "found {} evil worker(s) under warren (pid {}), expected 2: {procs:#?}",
        workers.len(),
        s.w.pid()
    );
    // Every process forked inside the tree (the zygote, if a waiter outside the pid
    // namespace started it, and the workers): the zygote runs the app's import-time code. The
    // root of the tree may be such a waiter, which runs no app code.
    for p in &workers {
        let uids = support::status_ids(&p.status, "Uid:");
        assert!(
            uids.len() == 4 && uids.iter().all(|&u| u != 0),
            "evil process {} has uid 0 of the host among its ids ({}); {}",
            p.pid,
            status_line(&p.status, "Uid:"),
            status_line(&p.status, "Gid:")
        );
    }
    // The waiter, the root of the tree outside the pid namespace, keeps no capability but
    // CAP_KILL (5), for the parent-death signal its death sends the zygote.
    for p in procs
        .iter()
        .filter(|p| !workers.iter().any(|w| w.pid == p.pid))
    {
        for key in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let line = status_line(&p.status, key);
            let caps = u64::from_str_radix(line.trim_start_matches(key).trim(), 16);
            assert_eq!(caps, Ok(1 << 5), "evil's waiter {}: {line}", p.pid);
        }
        assert_eq!(
            status_line(&p.status, "NoNewPrivs:")
                .split_whitespace()
                .last(),
            Some("1")
        );
    }
    for p in &workers {
        let nspid = support::status_ids(&p.status, "NSpid:");
        assert!(
            nspid.len() >= 2,
            "evil worker {} is not in a pid namespace of its own ({})",
            p.pid,
            status_line(&p.status, "NSpid:")
        );
    }
    s.finish();
}

#[test]
fn worker_lives_in_namespaces_of_its_own() {
    let Some(s) = Scene::start() else { return };
    let procs = app_processes(&s.w, "evil");
    let workers = forks(&procs);
    assert!(!workers.is_empty(), "no evil worker found: {procs:#?}");
    for p in &workers {
        for ns in ["user", "pid", "mnt", "net", "ipc", "uts"] {
            let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("own namespace");
            let theirs = std::fs::read_link(format!("/proc/{}/ns/{ns}", p.pid))
                .unwrap_or_else(|e| panic!("/proc/{}/ns/{ns}: {e}", p.pid));
            assert_ne!(
                ours, theirs,
                "evil worker {} shares the host's {ns} namespace",
                p.pid
            );
        }
    }
    s.finish();
}

// =============================================================================================
// Python guards

#[test]
fn evil_app_runs_without_python_guards() {
    let Some(s) = Scene::start() else { return };
    // The premise of the suite: with `python_guards = false` nothing is refused in Python, so
    // subprocess.run reaches the kernel, which refuses the fork.
    let r = s.attack("/audit_tamper");
    assert_contained(&r, &[]);
    assert!(
        !r.get("a_error").contains("sandbox"),
        "the Python guards are on in the evil app:\n{}",
        r.body
    );
    assert_field_in(&r, "a_errno", &[EPERM.into(), ENOENT.into()]);
    s.finish();
}

#[test]
fn python_guards_refuse_with_a_message_naming_the_app_and_the_policy() {
    let Some(s) = Scene::start() else { return };
    let r = attack_on(&s.w, GUARDED, &format!("/guards?port={}", s.w.addr.port()));
    assert_contained(&r, &[]);
    for key in [
        "subprocess",
        "os_system",
        "cdll",
        "connect",
        "connect_disguised",
        "listen",
        "write_app_dir",
        "os_open_app_dir",
    ] {
        let message = r.get(key);
        assert!(
            message.starts_with("PermissionError")
                && message.contains("sandbox")
                && message.contains("guarded"),
            "{key}: expected a PermissionError naming the app and the sandbox policy, got \
             {message:?}:\n{}",
            r.body
        );
    }
    // Each refusal names the setting that would allow it, where there is one (on this Python,
    // 3.11, a thread start raises no audit event: the guard replaces the starter).
    for (key, setting) in [
        ("thread", "limits.threads"),
        ("write_app_dir", "sandbox.writable"),
        ("os_open_app_dir", "sandbox.writable"),
    ] {
        let message = r.get(key);
        assert!(
            message.contains(setting) && message.contains("guarded"),
            "{key}: expected a message naming {setting}, got {message:?}:\n{}",
            r.body
        );
    }
    assert!(r.get("thread").starts_with("RuntimeError"), "{}", r.body);
    // And warren's log has each kind once, against the app.
    for kind in ["Thread", "Write", "Listen"] {
        let needle = format!("refused ({kind}, logged once)");
        // The log is written by a thread of its own: wait for the line, then count.
        s.w.wait_for_log_line(Duration::from_secs(10), &["guarded", &needle]);
        let logs = s.w.logs();
        let lines = s.w.log_lines(&["guarded", &needle]);
        assert_eq!(lines.len(), 1, "{kind}:\n{logs}");
    }
    s.finish();
}

#[test]
fn python_guards_note_the_limit_a_failure_hit() {
    let Some(s) = Scene::start() else { return };
    // Formatted as a framework logs a caught exception.
    let r = attack_on(&s.w, GUARDED, "/limit_notes");
    assert!(
        r.get("fsize").contains("File too large")
            && r.get("fsize").contains("limits.fsize_mb = 1 MB"),
        "{}",
        r.body
    );
    assert!(
        r.get("tmp").contains("No space left on device")
            && r.get("tmp")
                .contains(&format!("limits.tmp_mb = {TMP_MB_GUARDED} MB")),
        "{}",
        r.body
    );
    // Not caught: the worker's own traceback carries it.
    let resp = s.w.get(GUARDED, "/raise_full_tmp");
    assert_eq!(resp.status, 500, "{}", resp.text());
    assert!(
        s.w.wait_for_log_line(Duration::from_secs(10), &["guarded", "limits.tmp_mb"]),
        "{}",
        s.w.logs()
    );
    s.finish();
}

#[test]
fn bypassing_the_audit_hook_still_hits_the_kernel() {
    let Some(s) = Scene::start() else { return };
    let r = attack_on(&s.w, GUARDED, "/audit_tamper");
    assert_contained(&r, &[]);
    let a = r.get("a_error");
    assert!(
        a.starts_with("PermissionError") && a.contains("sandbox"),
        "(a) subprocess.run should be refused by the guard:\n{}",
        r.body
    );
    assert_eq!(r.get("b_outcome"), "contained", "{}", r.body);
    assert_field_in(&r, "b_errno", &[EPERM.into()]);
    assert_eq!(r.int("b_forked"), 0, "(b) a child was created:\n{}", r.body);
    assert_eq!(r.get("c_outcome"), "contained", "{}", r.body);
    assert_field_in(&r, "c_errno", &[EPERM.into()]);
    // (d) The guard is out of Python's reach: rewriting every audit hook Python can find
    // leaves it refusing as before.
    let d = r.get("d_error");
    assert!(
        d.starts_with("PermissionError") && d.contains("sandbox"),
        "(d) subprocess.run after the app rewrote the audit hooks it could reach should still be \
         refused by the guard:\n{}",
        r.body
    );
    s.finish();
}

/// `name:errno` pairs of a `seccomp_probe` report.
fn probe_results(text: &str) -> BTreeMap<String, i32> {
    text.split_whitespace()
        .filter_map(|pair| {
            let (name, errno) = pair.split_once(':')?;
            Some((name.to_owned(), errno.parse().ok()?))
        })
        .collect()
}

#[test]
fn seccomp_is_the_layer_that_refuses_with_eperm() {
    let Some(s) = Scene::start() else { return };
    // Outside the sandbox, as nobody (no capabilities, no filter): with these arguments no call
    // answers EPERM by itself, so an EPERM inside can only be the filter's.
    let dir = support::tempdir();
    let out = support::as_nobody(dir.path(), None, &repo_root().join(".venv/bin/python"))
        .arg(Path::new(&fixture("escape")).join("seccomp_probe.py"))
        .output()
        .expect("running seccomp_probe.py as nobody");
    let outside = probe_results(&String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success() && outside.len() >= 16,
        "seccomp_probe.py outside: {} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, errno) in &outside {
        assert_ne!(
            *errno, EPERM,
            "{name} answers EPERM without seccomp: {outside:?}"
        );
    }
    // Inside: every one of them is refused by the filter.
    let r = s.attack("/seccomp_layer");
    assert_contained(&r, &[EPERM]);
    let inside = probe_results(r.get("results"));
    assert_eq!(
        inside.keys().collect::<Vec<_>>(),
        outside.keys().collect::<Vec<_>>(),
        "{}",
        r.body
    );
    assert!(inside.values().all(|&e| e == EPERM), "{}", r.body);
    s.finish();
}
