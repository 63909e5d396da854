//! The zygote: one process per app that has imported the app and forks workers on request.
//!
//! It runs single-threaded (a requirement for `fork()` and, later, for user namespaces) and
//! waits on two things with `poll`: the control socket from the master (fd 3, a
//! `SOCK_SEQPACKET` socket) and a signalfd for `SIGCHLD`. A `Fork` message carries the worker's
//! two pipe ends; the zygote forks with CPython's `PyOS_BeforeFork` / `PyOS_AfterFork_*` around
//! `fork()`, so the child starts with the app already imported and its pages shared
//! copy-on-write. Exits of workers are reaped here and reported to the master with their raw
//! wait status. When the master goes away the control socket reads end-of-file and the zygote
//! exits; its workers follow through their parent-death signal.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, getpid, getppid};
use pyo3::ffi;
use pyo3::prelude::*;

use warren_protocol::control::{EXIT_IMPORT_FAILED, EXIT_SANDBOX_FAILED, MSG_LEN, Msg};
use warren_sandbox::confine;
use warren_sandbox::seccomp::Filters;
use warren_sandbox::{Mechanism, Policy};

use crate::conn::Conn;
use crate::guards;
use crate::python::{self, AppSpec};
use crate::wsgi::{Prepared, Worker};

/// The control socket's descriptor number in the zygote, set up by the master's launcher.
pub const CONTROL_FD: RawFd = 3;

fn send(ctl: RawFd, msg: Msg) {
    let buf = msg.encode();
    if let Err(e) = sendmsg::<()>(ctl, &[IoSlice::new(&buf)], &[], MsgFlags::empty(), None) {
        eprintln!("warren-worker: zygote: cannot reach the master ({e}); exiting");
        std::process::exit(1);
    }
}

/// Reads one control message and the descriptors sent with it, and whether the kernel had to
/// drop some of them (this process at its descriptor limit). `None` means the master is gone.
fn receive(ctl: RawFd) -> Option<(Msg, Vec<OwnedFd>, bool)> {
    let mut buf = [0u8; MSG_LEN];
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(ctl, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
    let n = msg.bytes;
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let mut fds = Vec::new();
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these descriptors for us; nobody else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if n == 0 {
        return None;
    }
    Msg::decode(&buf[..n]).ok().map(|m| (m, fds, truncated))
}

/// Confines this process as `policy` says (every step but seccomp, which each worker applies
/// after its fork) and compiles the workers' syscall filter.
fn confine(spec: &AppSpec, policy: &Policy) -> Result<Option<Filters>, String> {
    let host = confine::Host::detect(std::path::Path::new(&spec.dir));
    // The interpreter this binary embeds: its prefix (stdlib, extension modules) is read-only.
    let mut policy = policy.clone();
    policy.read_only.push(python::PYTHON_HOME.into());
    let steps = confine::plan(&policy, &host);
    let mut kernel = confine::RealKernel::new(CONTROL_FD);
    confine::execute(&mut kernel, &steps, &policy).map_err(|e| e.to_string())?;
    // Writes past RLIMIT_FSIZE fail with EFBIG instead of killing the process.
    // SAFETY: setting a signal to "ignore" installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    if policy.skips(Mechanism::Seccomp) {
        return Ok(None);
    }
    // Seccomp last, and before any app code: the zygote imports the app under the allowlist
    // (plus forking); each worker narrows it to the worker list after its fork.
    let filters = Filters::compile(policy.threads).map_err(|e| e.to_string())?;
    filters.apply_zygote().map_err(|e| e.to_string())?;
    Ok(Some(filters))
}

/// Imports the app, then forks workers until the master closes the control socket.
pub fn run(spec: AppSpec) -> ! {
    if !std::path::Path::new(&spec.dir).is_dir() {
        eprintln!(
            "warren-worker: app {}: directory {} does not exist",
            spec.name, spec.dir
        );
        std::process::exit(EXIT_IMPORT_FAILED);
    }
    let filters = match &spec.sandbox {
        None => None,
        Some(policy) => match confine(&spec, policy) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("warren-worker: app {}: sandbox: {e}", spec.name);
                std::process::exit(EXIT_SANDBOX_FAILED);
            }
        },
    };
    if let Err(e) = python::initialize(&spec.name) {
        eprintln!("warren-worker: app {}: {e}", spec.name);
        std::process::exit(EXIT_IMPORT_FAILED);
    }
    Python::attach(|py| {
        if let Some(policy) = spec.sandbox.as_ref().filter(|p| p.python_guards)
            && let Err(e) = guards::install(py, policy)
        {
            e.display(py);
            std::process::exit(EXIT_SANDBOX_FAILED);
        }
        let app = match python::load_app(py, &spec) {
            Ok(app) => app,
            Err(e) => {
                eprintln!(
                    "warren-worker: app {}: importing {}:{} failed:",
                    spec.name, spec.module, spec.callable
                );
                e.display(py);
                std::process::exit(EXIT_IMPORT_FAILED);
            }
        };
        if let Some(target) = &spec.warmup {
            // A failed warm-up is the app's business: logged, and the zygote goes on.
            match python::warm_up(py, &app, target) {
                Ok(status) => eprintln!("warren-worker: warm-up GET {target}: {status}"),
                Err(e) => {
                    eprintln!("warren-worker: warm-up GET {target} failed:");
                    e.display(py);
                }
            }
        }
        let prepared = match Prepared::new(py, spec.name.clone(), app) {
            Ok(p) => p,
            Err(e) => {
                e.display(py);
                std::process::exit(EXIT_IMPORT_FAILED);
            }
        };
        // Objects that exist now are never collected in workers: the collector does not touch
        // (and so does not un-share) their pages after fork.
        if let Err(e) = py.import("gc").and_then(|gc| gc.call_method0("freeze")) {
            e.display(py);
        }
        serve_forks(py, &spec, &prepared, filters.as_ref())
    })
}

fn serve_forks(
    py: Python<'_>,
    spec: &AppSpec,
    prepared: &Prepared<'_>,
    filters: Option<&Filters>,
) -> ! {
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), Some(&mut old_mask)).expect("blocking SIGCHLD");
    let sfd = SignalFd::with_flags(&chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .expect("creating a signalfd");
    let ctl = CONTROL_FD;
    send(
        ctl,
        Msg::ZygoteReady {
            pid: getpid().as_raw(),
        },
    );

    loop {
        // SAFETY: CONTROL_FD stays open for the life of the zygote.
        let ctl_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(ctl) };
        let mut fds = [
            PollFd::new(ctl_fd, PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
        let ctl_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let chld_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        if chld_ready {
            while let Ok(Some(_)) = sfd.read_signal() {}
            reap(ctl);
        }
        if !ctl_ready {
            continue;
        }
        match receive(ctl) {
            None => std::process::exit(0),
            Some((Msg::Fork { token }, fds, truncated)) => match <[OwnedFd; 2]>::try_from(fds) {
                Ok(pipes) => fork_worker(
                    py, spec, prepared, filters, ctl, token, pipes, &sfd, &old_mask,
                ),
                // Without its two pipes a worker could not serve: the master learns that this
                // fork failed, and why, instead of waiting for a worker that never comes.
                Err(fds) => {
                    let errno = if truncated {
                        libc::EMFILE
                    } else {
                        libc::EBADMSG
                    };
                    eprintln!(
                        "warren-worker: zygote: Fork with {} descriptors instead of 2{}",
                        fds.len(),
                        if truncated {
                            " (the others did not fit under this process's limit)"
                        } else {
                            ""
                        }
                    );
                    send(ctl, Msg::ForkFailed { token, errno });
                }
            },
            Some((other, _, _)) => {
                eprintln!("warren-worker: zygote: unexpected control message {other:?}");
            }
        }
    }
}

fn reap(ctl: RawFd) {
    loop {
        let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(s) => s,
        };
        let (pid, raw) = match status {
            WaitStatus::Exited(pid, code) => (pid, (code & 0xff) << 8),
            WaitStatus::Signaled(pid, sig, core) => (pid, sig as i32 | if core { 0x80 } else { 0 }),
            _ => continue,
        };
        send(
            ctl,
            Msg::Exited {
                pid: pid.as_raw(),
                status: raw,
            },
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn fork_worker(
    // Not used directly: holding it proves the GIL is held, which PyOS_BeforeFork requires.
    _attached: Python<'_>,
    spec: &AppSpec,
    prepared: &Prepared<'_>,
    filters: Option<&Filters>,
    ctl: RawFd,
    token: u32,
    pipes: [OwnedFd; 2],
    sfd: &SignalFd,
    old_mask: &SigSet,
) {
    let zygote = getpid();
    // Confined (and without threads), the filter lets only the keyed fork through (see
    // `Filters`); otherwise the C library's fork, which also runs `pthread_atfork` handlers.
    let key = filters.and_then(Filters::fork_key);
    // SAFETY: the zygote is single-threaded (no lock is held across the fork; what
    // `keyed_fork` skips of the C library's fork is listed on it) and holds the GIL, which
    // PyOS_BeforeFork requires; exactly one of the AfterFork calls follows in each process, as
    // CPython documents.
    let forked = unsafe {
        ffi::PyOS_BeforeFork();
        let r = match key {
            Some(key) => warren_sandbox::seccomp::keyed_fork(key)
                .map(|pid| match pid {
                    0 => ForkResult::Child,
                    child => ForkResult::Parent {
                        child: nix::unistd::Pid::from_raw(child),
                    },
                })
                .map_err(|e| e.raw_os_error().unwrap_or(0)),
            None => nix::unistd::fork().map_err(|e| e as i32),
        };
        match r {
            Ok(ForkResult::Child) => ffi::PyOS_AfterFork_Child(),
            _ => ffi::PyOS_AfterFork_Parent(),
        }
        r
    };
    match forked {
        Ok(ForkResult::Parent { child }) => {
            drop(pipes);
            send(
                ctl,
                Msg::Forked {
                    token,
                    pid: child.as_raw(),
                },
            );
        }
        Err(e) => {
            drop(pipes);
            send(ctl, Msg::ForkFailed { token, errno: e });
        }
        Ok(ForkResult::Child) => {
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            if getppid() != zygote {
                // The zygote died between fork and prctl: nobody would reap us.
                exit_now(1);
            }
            // SAFETY: the child owns its copies of the control socket and the signalfd, uses
            // neither again and never drops `sfd` (it leaves through `_exit`).
            unsafe {
                libc::close(ctl);
                libc::close(sfd.as_raw_fd());
            }
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None);
            // Seccomp last: from here on the worker can only serve.
            if let Some(Err(e)) = filters.map(Filters::apply_worker) {
                eprintln!("warren-worker: app {}: {e}", spec.name);
                exit_now(EXIT_SANDBOX_FAILED);
            }
            let code = run_worker(spec, prepared, pipes);
            exit_now(code);
        }
    }
}

/// Serves requests on `[rx, tx]`: the read end of the request pipe, the write end of the
/// response pipe.
fn run_worker(spec: &AppSpec, prepared: &Prepared<'_>, [rx, tx]: [OwnedFd; 2]) -> i32 {
    let worker = Worker::new(prepared, Conn::new(File::from(rx), File::from(tx)));
    match worker.serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "warren-worker: app {}: connection to the master failed: {e}",
                spec.name
            );
            1
        }
    }
}

/// Leaves a forked worker without running the zygote's exit handlers (they belong to it).
fn exit_now(code: i32) -> ! {
    Python::attach(|py| {
        for stream in ["stdout", "stderr"] {
            if let Ok(s) = py.import("sys").and_then(|sys| sys.getattr(stream)) {
                let _ = s.call_method0("flush");
            }
        }
    });
    // SAFETY: _exit ends the process at once; nothing after it runs.
    unsafe { libc::_exit(code) }
}
