//! Shared code of the end-to-end tests: a handle on a running `warren serve` and a small raw
//! HTTP/1.1 client.
//!
//! [`Warren::start`] writes a config into a temporary directory, starts the real binary in its
//! own process group, waits for its `listening on ADDR` line and collects its stderr (the log)
//! in the background. [`Warren::stop`] sends SIGTERM, waits for a clean exit and checks that no
//! descendant (zygotes, workers; they run in sessions of their own) outlives it; dropping a
//! handle that was not stopped kills them all, so a failing test leaves nothing behind.
//!
//! [`Client`] speaks HTTP/1.1 over a plain `TcpStream`: requests are raw bytes, responses are
//! parsed by hand (status line, headers, then a body framed by `Content-Length`, chunked
//! encoding or the end of the connection), connections are reused, and every read has a
//! timeout so that no test can hang.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default read timeout of a [`Client`]: long enough for a slow machine, short enough that a
/// test that waits for an answer that never comes fails instead of hanging.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `warren` gets to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `d` times `WARREN_TEST_SLOWDOWN` (default 1): the factor by which this machine is slower
/// than a real one, for the waits of a run under software emulation (`scripts/vm/run`). Only
/// waits for something to happen are scaled; no test measures time.
pub fn slow(d: Duration) -> Duration {
    let factor = std::env::var("WARREN_TEST_SLOWDOWN")
        .ok()
        .and_then(|f| f.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    d * factor
}

/// [`Warren::logs`] waits for the log to be quiet this long...
const LOG_QUIET: Duration = Duration::from_millis(30);
/// ... but no longer than this in all (a loaded warren logs every request).
const LOG_SETTLE_MAX: Duration = Duration::from_millis(400);

/// How long `warren` gets to exit after SIGTERM (its own drain bound is 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(25);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Absolute path of the fixture app `tests/apps/NAME`, as a string for a config file.
pub fn fixture(name: &str) -> String {
    let dir = repo_root().join("tests/apps").join(name);
    assert!(dir.is_dir(), "fixture app {} is missing", dir.display());
    dir.display().to_string()
}

/// The uid of the unprivileged runs (`nobody` on Debian).
pub const NOBODY: u32 = 65534;

/// Who a started warren runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// This test's own user.
    Caller,
    /// Switched to this uid and gid, nothing else.
    Uid(u32),
    /// `nobody`, the way an unprivileged user runs warren on a machine where Python is
    /// readable: the Python prefix made reachable to `nobody` (here it may sit under `/root`,
    /// mode 0700) in a private mount namespace of warren alone, and, when given, started inside
    /// `delegated`, a cgroup v2 directory delegated to `nobody`.
    Unprivileged { delegated: Option<PathBuf> },
}

/// `sys.base_prefix` of the test venv's Python: the interpreter the worker embeds.
pub fn python_base_prefix() -> PathBuf {
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .args(["-c", "import sys; print(sys.base_prefix)"])
        .output()
        .expect("running .venv/bin/python (scripts/setup makes it)");
    assert!(out.status.success(), "reading sys.base_prefix failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The numbers of a `/proc/PID/status` line (`"Uid:"`: real, effective, saved, filesystem).
pub fn status_ids(status: &str, key: &str) -> Vec<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The first directory on the way to `path` that other users cannot enter, if any.
fn closed_ancestor(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut ancestors: Vec<&Path> = path.ancestors().collect();
    ancestors.reverse();
    ancestors.into_iter().find_map(|dir| {
        let mode = std::fs::metadata(dir).ok()?.permissions().mode();
        (mode & 0o001 == 0).then(|| dir.to_path_buf())
    })
}

/// `program` run as `nobody` the way [`RunAs::Unprivileged`] runs warren: `unshare` (a private
/// mount namespace where the Python prefix is reachable), `sh` (the mounts, the move into
/// `delegated` while still root), then `setpriv` to `nobody`, each replacing the last, so the
/// child's pid is the program's. `dir` holds a mount point. Arguments are added by the caller.
pub fn as_nobody(dir: &Path, delegated: Option<&Path>, program: &Path) -> Command {
    let prefix = python_base_prefix();
    let closed = closed_ancestor(&prefix);
    let stash = dir.join("python-prefix");
    std::fs::create_dir_all(&stash).expect("creating the prefix mount point");
    const SCRIPT: &str = r#"set -e
prefix=$1 stash=$2 closed=$3 cgroup=$4
shift 4
if [ -n "$closed" ]; then
    mount --bind "$prefix" "$stash"
    mount -t tmpfs -o mode=0755,size=1m warren-test "$closed"
    mkdir -p "$prefix"
    mount --bind "$stash" "$prefix"
fi
if [ -n "$cgroup" ]; then
    echo $$ >"$cgroup/cgroup.procs"
fi
exec setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups -- "$@"
"#;
    let arg = |p: Option<&Path>| p.map(|p| p.display().to_string()).unwrap_or_default();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        SCRIPT,
        "sh",
    ])
    .arg(&prefix)
    .arg(&stash)
    .arg(arg(closed.as_deref()))
    .arg(arg(delegated))
    .arg(program)
    .env("NOBODY", NOBODY.to_string());
    cmd
}

/// A running `warren serve`.
pub struct Warren {
    child: Option<Child>,
    pid: u32,
    pub addr: SocketAddr,
    /// The temporary directory holding the config (and whatever a test put next to it).
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    logs: Arc<Mutex<String>>,
    log_thread: Option<JoinHandle<()>>,
}

/// What every started warren gets: no standard input, its output piped (to find its address
/// and collect its log), none of the caller's Python or worker variables, a process group of
/// its own, and the `info` log unless the caller set `WARREN_LOG`.
fn prepare(cmd: &mut Command) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("WARREN_WORKER")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .process_group(0);
    if std::env::var_os("WARREN_LOG").is_none() {
        cmd.env("WARREN_LOG", "info");
    }
}

impl Warren {
    /// Starts `warren serve` on `config` (TOML text), written to a fresh temporary directory.
    pub fn start(config: &str) -> Warren {
        Warren::start_in(tempdir(), config, &[])
    }

    /// Starts `warren serve` on `config` written into `dir`, with extra environment variables.
    pub fn start_in(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Warren {
        Warren::start_as(dir, config, env, RunAs::Caller)
    }

    /// [`Warren::start_in`], run as `run_as` says: a test of the unprivileged start. The test
    /// itself must be root to switch.
    pub fn start_as(
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
        run_as: RunAs,
    ) -> Warren {
        // Apps may be given the directory as `sandbox.writable` (gate and marker files).
        world_writable(dir.path());
        let config_path = dir.path().join("warren.toml");
        std::fs::write(&config_path, config).expect("writing the config");
        let mut cmd = match &run_as {
            RunAs::Unprivileged { delegated } => as_nobody(
                dir.path(),
                delegated.as_deref(),
                Path::new(env!("CARGO_BIN_EXE_warren")),
            ),
            _ => Command::new(env!("CARGO_BIN_EXE_warren")),
        };
        cmd.arg("serve").arg("--config").arg(&config_path);
        prepare(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let RunAs::Uid(uid) = run_as {
            // Supplementary groups are dropped too (std clears them when switching from root).
            cmd.uid(uid).gid(uid);
        }
        Warren::launch(cmd, dir, config_path)
    }

    /// Starts `warren ARGS` in the working directory `cwd` (`warren run`, or `warren serve`
    /// with its default config), with the environment [`Warren::start`] gives; `dir` is kept
    /// with the handle.
    pub fn start_command(dir: tempfile::TempDir, cwd: &Path, args: &[&str]) -> Warren {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
        cmd.args(args).current_dir(cwd);
        prepare(&mut cmd);
        let config_path = dir.path().join("warren.toml");
        Warren::launch(cmd, dir, config_path)
    }

    /// Spawns `cmd`, collects its log and waits for its `listening on ADDR` line.
    fn launch(mut cmd: Command, dir: tempfile::TempDir, config_path: PathBuf) -> Warren {
        let mut child = cmd.spawn().expect("starting target/debug/warren");
        let pid = child.id();

        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        let log_thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&String::from_utf8_lossy(&line)),
                }
            }
        });

        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut sent = false;
            // Keep draining after the first line, so warren never blocks on its stdout.
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if !sent {
                    let _ = tx.send(line.clone());
                    sent = true;
                }
                line.clear();
            }
        });

        let mut warren = Warren {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            config_path,
            logs,
            log_thread: Some(log_thread),
        };
        match rx.recv_timeout(slow(START_TIMEOUT)) {
            Ok(line) => {
                let addr = line
                    .trim()
                    .strip_prefix("listening on ")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| {
                        panic!(
                            "unexpected first stdout line {line:?}; log:\n{}",
                            warren.logs()
                        )
                    });
                warren.addr = addr;
            }
            Err(_) => {
                let status = warren.kill();
                let logs = warren.finish_logs();
                panic!("warren did not print `listening on ADDR` (exit: {status:?}); log:\n{logs}");
            }
        }
        warren
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything warren logged so far. warren writes its log from a thread of its own, a
    /// moment after the event: this waits until nothing new has come for a short while (at
    /// most a bound), so that what happened before the call is in what it returns.
    pub fn logs(&self) -> String {
        let read = || self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let deadline = Instant::now() + slow(LOG_SETTLE_MAX);
        let mut text = read();
        loop {
            std::thread::sleep(LOG_QUIET);
            let now = read();
            if now.len() == text.len() || Instant::now() >= deadline {
                return now;
            }
            text = now;
        }
    }

    /// Waits until the log satisfies `pred`; false if it did not within `timeout`.
    pub fn wait_for_log_matching(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + slow(timeout);
        loop {
            if pred(&self.logs()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a log line contains every one of `needles`.
    pub fn wait_for_log_line(&self, timeout: Duration, needles: &[&str]) -> bool {
        self.wait_for_log_matching(timeout, |logs| {
            logs.lines().any(|l| needles.iter().all(|n| l.contains(n)))
        })
    }

    /// Log lines that contain every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `n` workers of `app` have started (panics with the log otherwise).
    pub fn wait_workers(&self, app: &str, n: usize) {
        let tag = format!("app=\"{app}\"");
        let ok = self.wait_for_log_matching(Duration::from_secs(30), |logs| {
            logs.lines()
                .filter(|l| l.contains("worker started") && l.contains(&tag))
                .count()
                >= n
        });
        assert!(
            ok,
            "{n} worker(s) of app {app} did not start; log:\n{}",
            self.logs()
        );
    }

    /// Waits until `path` exists (a fixture app creates it when a request reaches it), up to
    /// 30 s; panics with the log otherwise.
    pub fn wait_for_file(&self, path: &Path) {
        let deadline = std::time::Instant::now() + slow(Duration::from_secs(30));
        while !path.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never appeared: the request never reached the app; log:\n{}",
                path.display(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A new keep-alive connection that sends `Host: host`.
    pub fn client(&self, host: &str) -> Client {
        Client::connect(self.addr, host)
    }

    /// One request on a fresh connection.
    pub fn get(&self, host: &str, path: &str) -> Response {
        self.client(host).get(path)
    }

    /// Sends SIGHUP (reload the config, redeploy the apps).
    pub fn hangup(&self) {
        signal(self.pid, "HUP");
    }

    /// Sends SIGTERM without waiting (see [`Warren::stop`] for the whole shutdown).
    pub fn terminate(&self) {
        signal(self.pid, "TERM");
    }

    /// SIGTERM, a clean exit within a bound, and no descendant of warren left behind.
    /// Returns the whole log.
    pub fn stop(mut self) -> String {
        let family = descendants(self.pid);
        signal(self.pid, "TERM");
        let status = self.wait_exit(slow(STOP_TIMEOUT));
        let leftovers = wait_gone(&family, slow(Duration::from_secs(10)));
        if !leftovers.is_empty() {
            kill_all(&leftovers);
        }
        let logs = self.finish_logs();
        let status = status.unwrap_or_else(|| {
            let status = self.kill();
            panic!(
                "warren did not exit within {STOP_TIMEOUT:?} of SIGTERM ({status:?}); log:\n{logs}"
            )
        });
        assert!(
            status.success(),
            "warren exited with {status} after SIGTERM; log:\n{logs}"
        );
        assert!(
            leftovers.is_empty(),
            "processes started by warren still running after it exited: {leftovers:?}; log:\n{logs}"
        );
        logs
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    /// Kills warren, its process group and its descendants, and reaps warren.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let family = descendants(self.pid);
        signal_group(self.pid, "KILL");
        kill_all(&family);
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// The admin address (`[server] admin`), from its `admin listening addr=...` log line.
    pub fn admin_addr(&self) -> SocketAddr {
        assert!(
            self.wait_for_log_line(Duration::from_secs(10), &["admin listening"]),
            "no admin line; log:\n{}",
            self.logs()
        );
        let line = self.log_lines(&["admin listening"]).remove(0);
        line.split_whitespace()
            .find_map(|t| t.strip_prefix("addr="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr= in {line:?}"))
    }

    /// SIGKILLs warren alone, as a crash would, while this process holds a copy of each of
    /// warren's descriptors (`pidfd_getfd`): its zygotes and workers then see no socket or pipe
    /// close, and only their parent-death signals can end them. Returns those still alive
    /// after `timeout`, having killed them so that nothing outlives the test. warren is left
    /// unreaped until the handle is dropped: a zombie still reads as a running warren, so no
    /// other warren removes its groups as stale meanwhile.
    pub fn crash(&mut self, timeout: Duration) -> Vec<(u32, String)> {
        let family = descendants(self.pid);
        let held = hold_descriptors(self.pid);
        assert!(!held.is_empty(), "no descriptor of warren could be held");
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
        let left = wait_gone(&family, timeout);
        kill_all(&left);
        drop(held);
        left
    }

    fn finish_logs(&mut self) -> String {
        if let Some(t) = self.log_thread.take() {
            // The pipe closes once warren and every process that inherited it are gone.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        self.logs()
    }
}

impl Drop for Warren {
    fn drop(&mut self) {
        let family = descendants(self.pid);
        if self.child.is_some() {
            signal(self.pid, "TERM");
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                self.kill();
            }
        }
        // Whatever happened, leave no zygote or worker behind.
        kill_all(&wait_gone(&family, Duration::from_millis(500)));
    }
}

/// Whether this test can run here: it needs root (cgroups, switching uids). Under CI, where
/// tests run as root, not being root is a failure rather than a skip.
pub fn needs_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned));
    if euid.as_deref() == Some("0") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs root and CI runs as root"
    );
    eprintln!("skipped: needs root");
    false
}

/// A temporary directory that sandboxed apps can read (mode 0755: an app runs as an
/// unprivileged uid, and a test may put an app or a venv in here).
pub fn tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("warren-e2e-")
        .tempdir()
        .expect("creating a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 the temporary directory");
    dir
}

/// Makes `dir` writable by every uid (for `sandbox.writable` directories of a test).
pub fn world_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
}

/// One live (not zombie) process, from `/proc`.
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    /// The command line, arguments joined by spaces.
    pub cmdline: String,
}

/// The fields of `/proc/PID/stat` from the third on (`state ppid pgrp ...`; `fields[0]` is
/// field 3 of proc(5)). The command name before them may hold anything: split after the last ')'.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Every live process (zombies left out).
pub fn proc_list() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let fields = stat_fields(pid)?;
            if fields.len() < 3 || fields[0] == "Z" || fields[0] == "X" {
                return None;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            Some(Proc {
                pid,
                ppid: fields[1].parse().ok()?,
                pgrp: fields[2].parse().ok()?,
                cmdline: String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .trim()
                    .to_owned(),
            })
        })
        .collect()
}

/// `(pid, parent pid, command line)` of every live process.
fn processes() -> Vec<(u32, u32, String)> {
    proc_list()
        .into_iter()
        .map(|p| (p.pid, p.ppid, p.cmdline))
        .collect()
}

/// The pid, as the test sees it, of the descendant of warren that calls itself `ns_pid` inside
/// its pid namespace (what `os.getpid()` returns in a confined app).
pub fn host_pid(warren: u32, ns_pid: &str) -> String {
    for (pid, _) in descendants(warren) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let last = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|v| v.split_whitespace().last().map(str::to_owned));
        if last.as_deref() == Some(ns_pid.trim()) {
            return pid.to_string();
        }
    }
    panic!("no process of warren {warren} has pid {ns_pid} in its namespace")
}

/// Live descendants of `pid` (children, their children, ...): `(pid, command line)`.
pub fn descendants(pid: u32) -> Vec<(u32, String)> {
    let all = processes();
    let mut out: Vec<(u32, String)> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, pp, cmd) in &all {
            if *pp == parent && !out.iter().any(|(q, _)| q == p) {
                out.push((*p, cmd.clone()));
                frontier.push(*p);
            }
        }
    }
    out
}

/// The processes of `family` that are still alive (same pid and command line) after waiting
/// up to `timeout` for them to go.
fn wait_gone(family: &[(u32, String)], timeout: Duration) -> Vec<(u32, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let live = processes();
        let left: Vec<(u32, String)> = family
            .iter()
            .filter(|(p, cmd)| live.iter().any(|(q, _, c)| q == p && c == cmd))
            .cloned()
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_all(procs: &[(u32, String)]) {
    for (pid, _) in procs {
        signal(*pid, "KILL");
    }
}

/// One scrape of `/metrics` at `admin`, in the Prometheus text format: `name{labels}` → value.
pub fn scrape(admin: SocketAddr) -> BTreeMap<String, f64> {
    let mut c = Client::connect(admin, "127.0.0.1");
    let r = c.get("/metrics");
    r.assert_ok();
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.header("content-type")
    );
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("`name value`");
            (k.to_owned(), v.parse().expect("a number"))
        })
        .collect()
}

/// Copies of every descriptor of process `pid` (sockets and pipes included), through
/// `pidfd_getfd`, which needs the right to ptrace it (a child of this process, or root).
fn hold_descriptors(pid: u32) -> Vec<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system calls; each descriptor they return is owned by the result.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if pidfd < 0 {
            return Vec::new();
        }
        let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd as i32);
        let fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        fds.into_iter()
            .filter_map(|fd| {
                let raw = libc::syscall(
                    libc::SYS_pidfd_getfd,
                    std::os::fd::AsRawFd::as_raw_fd(&pidfd),
                    fd,
                    0,
                );
                (raw >= 0).then(|| std::os::fd::OwnedFd::from_raw_fd(raw as i32))
            })
            .collect()
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stderr(Stdio::null())
        .status();
}

/// Live (not zombie) processes whose process group is `pgid`: `(pid, command line)`.
pub fn group_members(pgid: u32) -> Vec<(u32, String)> {
    proc_list()
        .into_iter()
        .filter(|p| p.pgrp == pgid)
        .map(|p| (p.pid, p.cmdline))
        .collect()
}

/// `VmHWM` (peak resident set) of a process, in KiB.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// How a response body was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Read until the server closed the connection.
    Close,
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
    /// False when the connection ended (or broke) before the body's framing said it was done:
    /// a truncated `Content-Length` body or a chunked body without its last chunk.
    pub complete: bool,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Asserts a complete 200, showing what came instead.
    pub fn assert_ok(&self) {
        assert_eq!(
            self.status,
            200,
            "expected 200, got {} {}: {}",
            self.status,
            self.reason,
            self.text()
        );
        assert!(self.complete, "the response body was cut short");
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the server announced it will close the connection.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

/// A raw HTTP/1.1 client on one TCP connection (reconnects only when asked).
pub struct Client {
    addr: SocketAddr,
    pub host: String,
    stream: TcpStream,
    /// Bytes received and not yet parsed.
    buf: Vec<u8>,
    /// The last response said the server closes the connection after it.
    server_closes: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr, host: &str) -> Client {
        let stream = TcpStream::connect_timeout(&addr, slow(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("connecting to warren at {addr}: {e}"));
        stream.set_read_timeout(Some(slow(READ_TIMEOUT))).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let _ = stream.set_nodelay(true);
        Client {
            addr,
            host: host.to_owned(),
            stream,
            buf: Vec::new(),
            server_closes: false,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Closes both directions at once (the peer sees the connection end).
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Sends a request with `Host`, the given headers and (if not empty, or for POST and PUT) a
    /// `Content-Length` body, and reads the response. Panics on I/O errors. If the previous
    /// response announced that the server closes the connection, a new one is opened first, as
    /// any HTTP client would.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        if self.server_closes {
            self.reconnect();
        }
        let head = self.head_bytes(method, path, headers, Some(body.len()));
        let mut bytes = head;
        bytes.extend_from_slice(body);
        self.send(&bytes)
            .unwrap_or_else(|e| panic!("sending {method} {path}: {e}"));
        self.read_response(method)
            .unwrap_or_else(|e| panic!("reading the response to {method} {path}: {e}"))
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> Response {
        self.request("POST", path, &[("Content-Type", content_type)], body)
    }

    /// The request head: request line, `Host`, `headers`, and `Content-Length` if `body_len`
    /// is given (and is not zero for a method that usually has no body).
    pub fn head_bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_len: Option<usize>,
    ) -> Vec<u8> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(n) = body_len
            && (n > 0 || matches!(method, "POST" | "PUT" | "PATCH"))
        {
            head.push_str(&format!("Content-Length: {n}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Sends a request whose body is chunk-encoded, one chunk per element of `chunks`.
    pub fn request_chunked(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
    ) -> Response {
        if self.server_closes {
            self.reconnect();
        }
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        h.push(("Transfer-Encoding", "chunked"));
        let mut bytes = self.head_bytes(method, path, &h, None);
        for c in chunks {
            bytes.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            bytes.extend_from_slice(c);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        self.send(&bytes)
            .unwrap_or_else(|e| panic!("sending {method} {path}: {e}"));
        self.read_response(method)
            .unwrap_or_else(|e| panic!("reading the response to {method} {path}: {e}"))
    }

    /// Sends raw request bytes and reads one response.
    pub fn roundtrip(&mut self, raw: &[u8], method: &str) -> io::Result<Response> {
        self.send(raw)?;
        self.read_response(method)
    }

    /// Reads one response (skipping `100 Continue`), keeping the body in memory.
    pub fn read_response(&mut self, method: &str) -> io::Result<Response> {
        let mut body = Vec::new();
        let mut resp = self.read_response_with(method, &mut |b| body.extend_from_slice(b))?;
        resp.body = body;
        Ok(resp)
    }

    /// Reads one response, handing the body to `sink` piece by piece instead of keeping it.
    pub fn read_response_with(
        &mut self,
        method: &str,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Response> {
        loop {
            let mut resp = self.read_head()?;
            if (100..200).contains(&resp.status) {
                continue;
            }
            let no_body =
                method.eq_ignore_ascii_case("HEAD") || resp.status == 204 || resp.status == 304;
            let chunked = resp
                .header("transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            let length = resp
                .header("content-length")
                .map(|v| v.trim().parse::<u64>())
                .transpose()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if no_body {
                resp.framing = Framing::None;
                resp.complete = true;
            } else if chunked {
                resp.framing = Framing::Chunked;
                resp.complete = self.read_chunked(sink)?;
            } else if let Some(n) = length {
                resp.framing = Framing::Length(n);
                resp.complete = self.read_exact_body(n, sink)?;
            } else {
                resp.framing = Framing::Close;
                self.read_to_close(sink)?;
                resp.complete = true;
            }
            self.server_closes = resp.closes() || resp.framing == Framing::Close;
            return Ok(resp);
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the connection. A reset counts
    /// as the end (the caller decides whether that was premature).
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(0),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out waiting for the server",
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads until the connection ends: `Ok(bytes)` read meanwhile (for "the server closed
    /// the connection" checks); an error if it does not end before the read timeout.
    pub fn read_until_closed(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if self.fill()? == 0 {
                return Ok(std::mem::take(&mut self.buf));
            }
        }
    }

    fn read_head(&mut self) -> io::Result<Response> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > 1 << 20 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a complete response head (got {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        let head = String::from_utf8_lossy(&head[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            ));
        }
        let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
        let reason = parts.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Ok(Response {
            status,
            reason,
            headers,
            body: Vec::new(),
            framing: Framing::None,
            complete: false,
        })
    }

    fn read_exact_body(&mut self, mut left: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<bool> {
        loop {
            let take = (self.buf.len() as u64).min(left) as usize;
            if take > 0 {
                sink(&self.buf[..take]);
                self.buf.drain(..take);
                left -= take as u64;
            }
            if left == 0 {
                return Ok(true);
            }
            if self.fill()? == 0 {
                return Ok(false);
            }
        }
    }

    fn read_to_close(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        loop {
            if !self.buf.is_empty() {
                sink(&self.buf);
                self.buf.clear();
            }
            if self.fill()? == 0 {
                return Ok(());
            }
        }
    }

    /// A line of the chunked framing, without its CRLF; `None` if the connection ended first.
    fn read_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..i]).into_owned()));
            }
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads a chunked body; `Ok(false)` if the connection ended before the last chunk.
    fn read_chunked(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<bool> {
        loop {
            let Some(line) = self.read_line()? else {
                return Ok(false);
            };
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size line {line:?}"),
                )
            })?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    match self.read_line()? {
                        None => return Ok(false),
                        Some(l) if l.is_empty() => return Ok(true),
                        Some(_) => {}
                    }
                }
            }
            if !self.read_exact_body(size, sink)? {
                return Ok(false);
            }
            match self.read_line()? {
                Some(l) if l.is_empty() => {}
                Some(l) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("chunk not followed by CRLF: {l:?}"),
                    ));
                }
                None => return Ok(false),
            }
        }
    }

    /// Reconnects (a fresh connection to the same address and host).
    pub fn reconnect(&mut self) {
        *self = Client::connect(self.addr, &self.host.clone());
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes lowercase or uppercase hex.
pub fn unhex(s: &str) -> Vec<u8> {
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .filter(|p| p.len() == 2)
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .unwrap_or_else(|| panic!("bad hex {s:?}"))
        })
        .collect()
}

/// Parses `KEY TAB TYPE TAB HEX` lines into `KEY -> (TYPE, bytes)`.
pub fn parse_dump(body: &str) -> BTreeMap<String, (String, Vec<u8>)> {
    body.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let key = f.next().unwrap().to_owned();
            let kind = f
                .next()
                .unwrap_or_else(|| panic!("bad line {l:?}"))
                .to_owned();
            let value = unhex(f.next().unwrap_or_else(|| panic!("bad line {l:?}")));
            (key, (kind, value))
        })
        .collect()
}

/// CRC-32 (IEEE, as `zlib.crc32`), incrementally: start with 0.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut c = !crc;
    for &b in data {
        c = table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Fills `buf` with pseudo-random bytes from `state` (xorshift64), so that a long upload has
/// no period a lost or repeated piece could hide in.
pub fn fill_pseudo_random(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}
