//! Starting an app's zygote: the one place where warren creates a process that will run app code.
//!
//! The master calls [`zygote_command`] and spawns the command it returns. The child inherits
//! exactly four descriptors: stdin (`/dev/null`), stdout and stderr (pipes to the master's log)
//! and the control socket, moved to descriptor 3; everything else is closed before `exec`.
//! Confinement (cgroups, namespaces, Landlock, seccomp) wraps this same step.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

/// Descriptor number of the control socket in the zygote.
pub const CONTROL_FD: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("creating the zygote control socket: {0}")]
    ControlSocket(#[source] nix::Error),
    #[error("worker binary {} not found (build it with `cargo build --workspace`)", .0.display())]
    WorkerBinary(PathBuf),
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
}

/// A command ready to spawn, and the master's end of the control socket.
#[derive(Debug)]
pub struct ZygoteLaunch {
    pub command: Command,
    /// The master's end (`SOCK_SEQPACKET`, close-on-exec).
    pub control: OwnedFd,
    /// The child's end; drop it once the command is spawned.
    pub child_end: OwnedFd,
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
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .env("PYTHONUNBUFFERED", "1");
    let raw = child_end.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (dup2, fcntl, close_range); it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(move || {
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
    Ok(ZygoteLaunch {
        command,
        control,
        child_end,
    })
}
