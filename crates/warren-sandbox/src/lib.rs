//! Confinement of app code: everything between "start this app's zygote" and a worker running
//! with its last privilege gone.
//!
//! - [`zygote_command`] (master side) builds the command that starts a zygote: descriptors 0–3
//!   only, `setsid`, parent-death signal, and the child writes itself into its app's cgroups
//!   before `exec`. The [`Policy`] travels as one argument. The environment starts empty:
//!   [`MINIMUM_ENV`] plus what the app's config declares ([`AppEnv`]).
//! - [`cgroup`] (master side): per-app groups through `cgroups-rs`, v1 and v2, limits, usage,
//!   OOM kills, stale-group clean-up.
//! - [`confine`] (zygote side): the ordered steps (namespaces, new root, identity, capabilities,
//!   rlimits, descriptors, Landlock) behind a small [`confine::Kernel`] interface.
//! - [`fence`]: Landlock. [`seccomp`]: the workers' syscall filter, applied after each fork.
//! - [`probe`]: what this kernel can enforce (`warren doctor`).
//!
//! The documented order of the steps is in [`confine`]'s module doc.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

pub mod cgroup;
pub mod confine;
pub mod fence;
pub mod policy;
pub mod probe;
pub mod seccomp;

pub use policy::{Mechanism, Policy};

/// The `warren-worker` flag that carries the encoded [`Policy`].
pub const SANDBOX_FLAG: &str = "--sandbox";

/// The `argv[0]` of a zygote: the name under which the `warren` binary runs as the worker.
pub const WORKER_ARGV0: &str = "warren-worker";

/// Descriptor number of the control socket in the zygote.
pub const CONTROL_FD: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("creating the zygote control socket: {0}")]
    ControlSocket(#[source] nix::Error),
    #[error("the worker binary {} is not there (it is the `warren` binary itself unless WARREN_WORKER names another)", .0.display())]
    WorkerBinary(PathBuf),
    #[error("opening {}: {source}", path.display())]
    CgroupProcs {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a zygote imports.
#[derive(Debug, Clone)]
pub struct ZygoteSpec<'a> {
    pub worker_bin: &'a Path,
    pub name: &'a str,
    pub dir: &'a Path,
    pub module: &'a str,
    pub callable: &'a str,
    pub site_packages: Option<&'a Path>,
    /// A path requested once in the zygote after the import (`[apps.NAME] warmup`).
    pub warmup: Option<&'a str>,
    /// Confinement; `None` runs the app unconfined (`sandbox.enabled = false`).
    pub sandbox: Option<&'a Policy>,
    /// `cgroup.procs` files the zygote writes itself into before `exec`.
    pub cgroup_procs: &'a [PathBuf],
    /// `SCHED_BATCH` for the zygote, inherited by its workers (`limits.scheduling`).
    pub batch: bool,
    /// The app's own variables (`env`, `env_files`), set over [`MINIMUM_ENV`].
    pub env: AppEnv<'a>,
}

/// The environment every app starts from (nothing of warren's own is inherited): a `PATH` of
/// the system's directories, a UTF-8 locale, unbuffered Python output. `HOME` and `TMPDIR` are
/// added by [`zygote_command`]: `/tmp` when confined (the sandbox's private `/tmp`); unconfined,
/// `HOME` is the app's directory (not warren's home, whose files are the operator's) and
/// `TMPDIR` is `/tmp`. An app's config may override any of them.
pub const MINIMUM_ENV: [(&str, &str); 3] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("LANG", "C.UTF-8"),
    ("PYTHONUNBUFFERED", "1"),
];

/// An app's variables. Its `Debug` shows the keys only: the values are often secrets.
#[derive(Clone, Default)]
pub struct AppEnv<'a>(pub Vec<(&'a str, &'a str)>);

impl std::fmt::Debug for AppEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

/// The whole environment of `spec`'s zygote, in the order it is set (later entries win).
pub fn zygote_env<'a>(spec: &ZygoteSpec<'a>) -> Vec<(&'a str, std::borrow::Cow<'a, str>)> {
    use std::borrow::Cow;
    let mut env: Vec<(&str, Cow<'a, str>)> = MINIMUM_ENV
        .iter()
        .map(|&(k, v)| (k, Cow::Borrowed(v)))
        .collect();
    if spec.sandbox.is_some() {
        // The sandbox has no home directory but its private /tmp.
        env.push(("HOME", Cow::Borrowed("/tmp")));
    } else {
        env.push(("HOME", spec.dir.to_string_lossy()));
    }
    env.push(("TMPDIR", Cow::Borrowed("/tmp")));
    env.extend(spec.env.0.iter().map(|&(k, v)| (k, Cow::Borrowed(v))));
    env
}

/// A command ready to spawn, and the master's end of the control socket.
pub struct ZygoteLaunch {
    pub command: Command,
    /// The master's end (`SOCK_SEQPACKET`, close-on-exec).
    pub control: OwnedFd,
    /// The child's end; drop it once the command is spawned.
    pub child_end: OwnedFd,
    /// The `cgroup.procs` files the child writes to; drop them once the command is spawned.
    pub procs: Vec<OwnedFd>,
}

impl std::fmt::Debug for ZygoteLaunch {
    // Not derived: `Command`'s `Debug` prints the environment, the app's secrets with it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZygoteLaunch")
            .field("program", &self.command.get_program())
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

/// Builds the command that starts `spec`'s zygote.
pub fn zygote_command(spec: &ZygoteSpec<'_>) -> Result<ZygoteLaunch, SandboxError> {
    if !spec.worker_bin.is_file() {
        return Err(SandboxError::WorkerBinary(spec.worker_bin.to_owned()));
    }
    let (control, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(SandboxError::ControlSocket)?;

    let mut command = Command::new(spec.worker_bin);
    // The `warren` binary is the worker when started under this name (and `ps` shows it).
    command.arg0(WORKER_ARGV0);
    command.arg("zygote");
    let mut arg = |flag: &str, value: OsString| {
        command.arg(flag).arg(value);
    };
    arg("--name", spec.name.into());
    arg("--dir", spec.dir.into());
    arg("--module", spec.module.into());
    arg("--callable", spec.callable.into());
    if let Some(sp) = spec.site_packages {
        arg("--site-packages", sp.into());
    }
    if let Some(w) = spec.warmup {
        arg("--warmup", w.into());
    }
    if let Some(policy) = spec.sandbox {
        arg(SANDBOX_FLAG, policy.encode().into());
    }
    // Opened here (they may allocate and fail with a message); written in the child.
    let procs: Vec<OwnedFd> = spec
        .cgroup_procs
        .iter()
        .map(|path| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map(OwnedFd::from)
                .map_err(|source| SandboxError::CgroupProcs {
                    path: path.clone(),
                    source,
                })
        })
        .collect::<Result<_, _>>()?;
    let procs_raw: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    let confined = spec.sandbox.is_some();
    let batch = spec.batch;
    let warren = std::process::id() as libc::pid_t;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Nothing of warren's environment (the operator's secrets among it) reaches app code.
        .env_clear();
    for (k, v) in zygote_env(spec) {
        command.env(k, v.as_ref());
    }
    let raw = child_end.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (write, sched_setscheduler, setsid, prctl, getppid, dup2, fcntl,
    // close_range); it allocates nothing and takes no locks (`procs_raw` was built before the
    // fork and is only read).
    unsafe {
        command.pre_exec(move || {
            // Into the app's cgroups first: "0" means the writing process itself.
            for &fd in &procs_raw {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Kept across exec and fork: every worker is born with it. Set either way, as the
            // front's thread that forked may run the other policy (`server.scheduling`).
            // Moving between the two needs no privilege, so this works without root too.
            set_own_scheduling(batch)?;
            if confined && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The zygote dies with warren, confined or not, even when it is too busy (or
            // stopped) to see its control socket close; its workers are bound to it the same
            // way. (The thread that spawns it, a runtime thread, lives as long as warren.)
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // warren died between the fork and the prctl: no signal will come.
            if libc::getppid() != warren {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if raw == CONTROL_FD {
                let flags = libc::fcntl(raw, libc::F_GETFD);
                if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, CONTROL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Close everything past the control socket: no listener, no other app's socket
            // leaks into app code.
            if libc::syscall(libc::SYS_close_range, CONTROL_FD + 1, u32::MAX, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The descriptors are close-on-exec: the child's copies go at exec, ours here.
    Ok(ZygoteLaunch {
        procs,
        command,
        control,
        child_end,
    })
}

/// Gives the calling thread `SCHED_BATCH` (`batch`) or `SCHED_OTHER`; threads it creates
/// afterwards inherit the policy. `warren serve` calls it for the front (`server.scheduling`)
/// before its runtime starts any thread, and a zygote for itself (`limits.scheduling`). No
/// privilege is needed to move between the two.
pub fn set_own_scheduling(batch: bool) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    let policy = if batch {
        libc::SCHED_BATCH
    } else {
        libc::SCHED_OTHER
    };
    // SAFETY: `param` outlives the call; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The pid, as this process sees it, of `parent`'s child whose pid is `ns_pid` inside its own
/// pid namespace (the zygote reports its workers' pids as it sees them). `None` if there is no
/// such child (it already exited).
pub fn host_pid_of_child(parent: i32, ns_pid: i32) -> Option<i32> {
    children(parent).into_iter().find(|&child| {
        std::fs::read_to_string(format!("/proc/{child}/status")).is_ok_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last().map(str::to_owned))
                .is_some_and(|last| last == ns_pid.to_string())
        })
    })
}

/// The children of process `pid` (from `/proc/PID/task/PID/children`).
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment of a zygote of `dir`, confined or not, with the app's `env`.
    fn check(confined: bool, env: &[(&str, &str)], expected: &[(&str, &str)]) {
        let policy = Policy::decode("app=a\nuid=200000\ntmp_bytes=1\nnofile=64\n").unwrap();
        let spec = ZygoteSpec {
            worker_bin: Path::new("/nonexistent"),
            name: "a",
            dir: Path::new("/srv/a"),
            module: "app",
            callable: "application",
            site_packages: None,
            warmup: None,
            sandbox: confined.then_some(&policy),
            cgroup_procs: &[],
            batch: true,
            env: AppEnv(env.to_vec()),
        };
        // Later entries win, as `Command::env` applies them.
        let mut got = std::collections::BTreeMap::new();
        for (k, v) in zygote_env(&spec) {
            got.insert(k.to_owned(), v.into_owned());
        }
        let want: std::collections::BTreeMap<String, String> = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(got, want);
    }

    const BASE: [(&str, &str); 3] = MINIMUM_ENV;

    #[test]
    fn the_environment_is_the_minimum_plus_the_app_s() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, &str)> = BASE.to_vec();
            v.extend_from_slice(extra);
            v
        };
        check(true, &[], &with(&[("HOME", "/tmp"), ("TMPDIR", "/tmp")]));
        check(false, &[], &with(&[("HOME", "/srv/a"), ("TMPDIR", "/tmp")]));
        check(
            true,
            &[("DB", "x"), ("LANG", "de_DE.UTF-8")],
            &[
                ("PATH", "/usr/local/bin:/usr/bin:/bin"),
                ("LANG", "de_DE.UTF-8"),
                ("PYTHONUNBUFFERED", "1"),
                ("HOME", "/tmp"),
                ("TMPDIR", "/tmp"),
                ("DB", "x"),
            ],
        );
    }

    #[test]
    fn debug_shows_the_keys_only() {
        let env = AppEnv(vec![("DB_PASSWORD", "s3cr3t")]);
        let shown = format!("{env:?}");
        assert!(
            shown.contains("DB_PASSWORD") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }
}
