//! What this machine can enforce: the answers of `warren doctor`, also logged by `warren serve`
//! at start.
//!
//! Each mechanism is tried for real where that is cheap and harmless: a throw-away cgroup is
//! created and removed, namespaces and the seccomp filter are tried in a forked child that then
//! exits. Call [`probe_all`] while the process is single-threaded (before the async runtime
//! starts): a user namespace cannot be created by a threaded process, and forking one is unsafe.

use crate::policy::Mechanism;

/// How far a mechanism works here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Enforced,
    Partial,
    NotAvailable,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Enforced => "enforced",
            Status::Partial => "partial",
            Status::NotAvailable => "not available",
        }
    }
}

/// One line of `warren doctor`.
#[derive(Debug, Clone)]
pub struct Finding {
    pub mechanism: Mechanism,
    pub status: Status,
    pub detail: String,
}

/// Probes every mechanism.
pub fn probe_all() -> Vec<Finding> {
    Mechanism::ALL
        .into_iter()
        .map(|m| {
            let (status, detail) = match m {
                Mechanism::Cgroups => cgroups(),
                Mechanism::Namespaces => in_child(namespaces_child, "user, pid, mount, network, IPC and UTS namespaces; new root with pivot_root"),
                Mechanism::Landlock => landlock(),
                Mechanism::Seccomp => in_child(seccomp_child, "syscall allowlist of config/seccomp.toml, architecture check"),
                Mechanism::Rlimits => (
                    Status::Enforced,
                    "nofile, fsize, core 0; no capabilities, no_new_privs, setsid, parent-death signal".into(),
                ),
            };
            Finding {
                mechanism: m,
                status,
                detail,
            }
        })
        .collect()
}

/// The mechanisms that are not available at all.
pub fn unavailable(findings: &[Finding]) -> Vec<Mechanism> {
    findings
        .iter()
        .filter(|f| f.status == Status::NotAvailable)
        .map(|f| f.mechanism)
        .collect()
}

fn cgroups() -> (Status, String) {
    let cg = match crate::cgroup::Cgroups::new() {
        Ok(c) => c,
        Err(e) => {
            let version = if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
                "v2"
            } else {
                "v1"
            };
            return (Status::NotAvailable, format!("cgroup {version}: {e}"));
        }
    };
    let name = format!("doctor-{}", std::process::id());
    let limits = crate::cgroup::Limits {
        memory_bytes: 64 << 20,
        cpu_percent: 50,
        pids: 16,
        cap_swap: true,
    };
    let result = cg.create_app(&name, limits);
    let version = cg.version();
    match result {
        Ok(group) => {
            group.destroy();
            cg.remove_own_groups();
            let place = match cg.placement() {
                crate::cgroup::Placement::Top => String::new(),
                crate::cgroup::Placement::Delegated(d) => {
                    format!(", in the delegated cgroup /{d}")
                }
            };
            (
                Status::Enforced,
                format!("cgroup {version}: cpu quota, memory (swap included), pids.max{place}"),
            )
        }
        Err(e) => {
            cg.remove_own_groups();
            let why = e.to_string();
            let status = if matches!(e, crate::cgroup::CgroupError::Write { what, .. } if what.contains("swap"))
            {
                Status::Partial
            } else {
                Status::NotAvailable
            };
            (status, format!("cgroup {version}: {why}"))
        }
    }
}

fn landlock() -> (Status, String) {
    let abi = crate::fence::kernel_abi();
    let wanted = crate::fence::ABI_WANTED as i32;
    match abi {
        0 => (
            Status::NotAvailable,
            "the kernel has no Landlock (or it is not in the LSM list)".into(),
        ),
        a if a >= wanted => (
            Status::Enforced,
            format!("ABI {a}: file system, TCP, abstract sockets, signals"),
        ),
        a => (
            Status::Partial,
            format!("ABI {a} (< {wanted}): some rights (TCP, scopes) are not enforced"),
        ),
    }
}

fn namespaces_child() -> i32 {
    use nix::sched::{CloneFlags, unshare};
    if !nix::unistd::geteuid().is_root() && unshare(CloneFlags::CLONE_NEWUSER).is_err() {
        return 2;
    }
    let flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if unshare(flags).is_err() {
        return 3;
    }
    // The new root as the zygote makes it, in this child's own mount namespace.
    new_root_child()
}

/// The zygote's own first and last file-system steps: exit code 0, or 5 when the private
/// mounts or the tmpfs were refused, 6 when `pivot_root` or what follows it was.
fn new_root_child() -> i32 {
    use crate::confine::{pivot_to_stage, private_mounts, stage_root};
    if private_mounts().and_then(|()| stage_root()).is_err() {
        return 5;
    }
    if pivot_to_stage().is_err() { 6 } else { 0 }
}

fn seccomp_child() -> i32 {
    match crate::seccomp::Filters::compile(false)
        .and_then(|f| f.apply_zygote().and_then(|()| f.apply_worker()))
    {
        Ok(()) => 0,
        Err(_) => 4,
    }
}

/// Runs `f` in a forked child and reports whether it exited 0.
fn in_child(f: fn() -> i32, what: &str) -> (Status, String) {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::ForkResult;
    // SAFETY: called while the process is single-threaded (see the module doc); the child only
    // makes system calls and leaves with _exit.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            let code = f();
            // SAFETY: _exit ends the child at once, running no exit handlers of the parent.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => (Status::Enforced, what.to_owned()),
            Ok(WaitStatus::Exited(_, 2)) => (
                Status::NotAvailable,
                "unprivileged user namespaces are disabled".into(),
            ),
            Ok(WaitStatus::Exited(_, 5)) => (
                Status::NotAvailable,
                "the namespaces were made, but private mounts or a tmpfs in them were refused"
                    .into(),
            ),
            Ok(WaitStatus::Exited(_, 6)) => (
                Status::NotAvailable,
                "the namespaces and a tmpfs were made, but pivot_root into it, or making it \
                 read-only, was refused"
                    .into(),
            ),
            Ok(other) => (
                Status::NotAvailable,
                format!("the kernel refused it ({other:?})"),
            ),
            Err(e) => (Status::NotAvailable, format!("waitpid: {e}")),
        },
        Err(e) => (Status::NotAvailable, format!("fork: {e}")),
    }
}
