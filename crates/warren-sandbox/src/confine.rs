//! Confining a zygote from the inside: the ordered steps, and the kernel calls behind them.
//!
//! [`plan`] turns a [`Policy`] into the list of [`Step`]s, in the order nsjail, bubblewrap,
//! runc and youki agree on; [`execute`] runs them through a [`Kernel`], stopping at the first
//! that fails with a [`ConfineError`] that names the step. The plan is pure (unit-tested on its
//! order); [`RealKernel`] makes the system calls (proved by the end-to-end escape suite).
//!
//! The order, and why:
//! 1. (master, before `exec`) descriptors 0–3 only, `setsid`, parent-death signal, and the
//!    process writes itself into its app's cgroups: it is inside before any app code runs.
//! 2. Without root only: a user namespace mapping root to our own uid, which gives the
//!    capabilities the next steps need.
//! 3. `unshare(CLONE_NEWPID)` and fork: the child is pid 1 of a new pid namespace and becomes
//!    the zygote; the parent, with no capability left but `CAP_KILL` (its death sends the
//!    zygote's parent-death signal) and `no_new_privs`, only waits for it and passes its exit
//!    status on. A process cannot enter a pid namespace itself, and `/proc` can only show the
//!    new one after the fork.
//! 4. `unshare` of the mount, network, IPC and UTS namespaces. As root these are owned by the
//!    initial user namespace, so nothing inside can ever reconfigure them (the app's root has no
//!    capability over them).
//! 5. File system: mounts made private; the bind sources opened (`O_PATH`) before anything is
//!    mounted over them; a tmpfs as the new root; read-only binds of `/usr`, the Python prefix,
//!    the app and its venv at their own paths; the writable directories, `nodev` and
//!    `noexec`; a few device nodes; a size-limited `noexec` `/tmp`; a fresh `/proc` of the new
//!    pid namespace; a minimal `/etc`; `pivot_root` and the old root detached; the new root
//!    remounted read-only. Each bind keeps the flags of the mount it comes from (a user
//!    namespace may not drop them).
//! 6. Host name = the app's name; loopback up (the network namespace has nothing else).
//! 7. Identity (as root): supplementary groups dropped, uid/gid set to the app's unprivileged
//!    id, then a user namespace in which that id is root. Done after the mounts because root's
//!    home (where pyenv puts Python) is not searchable by the unprivileged id. The change of
//!    uid clears the parent-death signal, which is then set again (and the zygote gives up if
//!    warren already closed the control socket).
//! 8. Every capability dropped (bounding set too), `no_new_privs`.
//! 9. rlimits: open files, file size, no core dumps.
//! 10. Every descriptor above the control socket closed.
//! 11. Landlock: read beneath the bound directories, write only in `/tmp` and the writable
//!     directories, execute nowhere, no TCP, no abstract sockets or signals out of the domain.
//! 12. (worker, after each fork) seccomp, last: see [`crate::seccomp`].

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;

use crate::policy::{Mechanism, Policy};

/// Where the new root is assembled (inside the private mount namespace, so nothing shows
/// outside; the bind sources were opened before it was covered).
const STAGE: &str = "/tmp";
/// Size of the tmpfs that holds the new root's directories and `/etc` files.
const ROOT_TMPFS_BYTES: u64 = 1 << 20;
/// What a bind is for, which decides its mount flags (see [`RealKernel`]'s `bind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindKind {
    /// Code and libraries: read-only, no device nodes.
    ReadOnly,
    /// A directory the app writes: no device nodes, nothing executable (as `/tmp`).
    Writable,
    /// One of [`DEVICES`]: read-write, and a device node.
    Device,
}

/// Device nodes bound into the sandbox.
pub const DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// One confinement step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Unprivileged start: a user namespace mapping root to our own uid and gid.
    SelfUserNamespace,
    /// `unshare(CLONE_NEWPID)`, then fork; only the child returns.
    PidNamespace,
    /// `unshare` of the mount, network, IPC and UTS namespaces.
    Namespaces,
    /// Mount propagation made private, recursively.
    PrivateMounts,
    /// `O_PATH` descriptors for every bind source, taken before anything is mounted over them.
    OpenSources(Vec<PathBuf>),
    /// The tmpfs that becomes the new root.
    StageRoot,
    /// A bind mount of `path` at the same path inside the new root.
    Bind {
        path: PathBuf,
        kind: BindKind,
    },
    /// A symbolic link in the new root (`/lib -> usr/lib`).
    Symlink {
        link: PathBuf,
        target: PathBuf,
    },
    /// A small file written into the new root (`/etc/passwd`).
    File {
        path: PathBuf,
        contents: String,
    },
    /// The private `/tmp`: tmpfs, `noexec`, `size` bytes.
    Tmp {
        bytes: u64,
    },
    /// A fresh `/proc` for the new pid namespace.
    Proc,
    /// `pivot_root`, old root detached, new root read-only.
    PivotRoot,
    Hostname(String),
    LoopbackUp,
    Chdir(PathBuf),
    /// As root: groups dropped, uid/gid set to `uid`, then a user namespace mapping root to it.
    Identity {
        uid: u32,
    },
    DropCapabilities,
    NoNewPrivs,
    Rlimits {
        nofile: u64,
        fsize: u64,
    },
    CloseFds,
    Landlock {
        read: Vec<PathBuf>,
        write: Vec<PathBuf>,
    },
}

impl Step {
    /// The mechanism this step belongs to (what `sandbox.optional` can waive).
    pub fn mechanism(&self) -> Mechanism {
        match self {
            Step::Rlimits { .. } | Step::CloseFds | Step::DropCapabilities | Step::NoNewPrivs => {
                Mechanism::Rlimits
            }
            Step::Landlock { .. } => Mechanism::Landlock,
            _ => Mechanism::Namespaces,
        }
    }
}

/// A step that failed.
#[derive(Debug, thiserror::Error)]
#[error("confinement step {step}: {reason}")]
pub struct ConfineError {
    pub step: String,
    pub reason: String,
}

/// What the plan depends on besides the policy.
#[derive(Debug, Clone)]
pub struct Host {
    /// Running as root (else an unprivileged user namespace is the first step).
    pub root: bool,
    /// Top-level entries of `/` that are symlinks into `/usr` (merged-`/usr` systems):
    /// `("lib", "usr/lib")`.
    pub usr_links: Vec<(String, PathBuf)>,
    /// Top-level directories with libraries that are not links (`/lib64` on some systems).
    pub lib_dirs: Vec<PathBuf>,
    /// The app's directory: the working directory inside.
    pub app_dir: PathBuf,
}

impl Host {
    /// Reads what the plan needs from this machine.
    pub fn detect(app_dir: &Path) -> Host {
        let mut usr_links = Vec::new();
        let mut lib_dirs = Vec::new();
        for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let p = Path::new("/").join(name);
            match std::fs::read_link(&p) {
                Ok(target) => usr_links.push((name.to_owned(), target)),
                Err(_) if p.is_dir() && name.starts_with("lib") => lib_dirs.push(p),
                Err(_) => {}
            }
        }
        Host {
            root: nix::unistd::geteuid().is_root(),
            usr_links,
            lib_dirs,
            app_dir: app_dir.to_owned(),
        }
    }
}

/// The confinement steps for `policy`, in order. Mechanisms the app waived are left out only
/// when the policy says the kernel lacks them.
pub fn plan(policy: &Policy, host: &Host) -> Vec<Step> {
    let skip = |m: Mechanism| policy.skips(m);
    let mut steps = Vec::new();
    let mut reads: Vec<PathBuf> = Vec::new();
    if !skip(Mechanism::Namespaces) {
        if !host.root {
            steps.push(Step::SelfUserNamespace);
        }
        steps.push(Step::PidNamespace);
        steps.push(Step::Namespaces);
        steps.push(Step::PrivateMounts);
        // Read-only binds: /usr and library dirs, then the policy's (Python prefix, app, venv),
        // shortest path first so that a nested bind lands on top of its parent's.
        let read_only = std::iter::once(Path::new("/usr"))
            .chain(host.lib_dirs.iter().map(PathBuf::as_path))
            .chain(policy.read_only.iter().map(PathBuf::as_path));
        let mut binds: Vec<(PathBuf, BindKind)> = read_only
            .map(|d| (d, BindKind::ReadOnly))
            .chain(
                policy
                    .writable
                    .iter()
                    .map(|d| (d.as_path(), BindKind::Writable)),
            )
            .chain(DEVICES.iter().map(|d| (Path::new(d), BindKind::Device)))
            .map(|(d, kind)| (d.to_path_buf(), kind))
            .collect();
        binds.sort_by_key(|(p, _)| p.components().count());
        binds.dedup_by(|a, b| a.0 == b.0);
        steps.push(Step::OpenSources(
            binds.iter().map(|(p, _)| p.clone()).collect(),
        ));
        steps.push(Step::StageRoot);
        // /tmp before the binds: a bound directory may live under /tmp.
        steps.push(Step::Tmp {
            bytes: policy.tmp_bytes,
        });
        for (path, kind) in &binds {
            reads.push(path.clone());
            steps.push(Step::Bind {
                path: path.clone(),
                kind: *kind,
            });
        }
        for (link, target) in &host.usr_links {
            steps.push(Step::Symlink {
                link: Path::new("/").join(link),
                target: target.clone(),
            });
        }
        let etc = [
            (
                "/etc/passwd",
                "root:x:0:0:app:/tmp:/nonexistent\n".to_owned(),
            ),
            ("/etc/group", "root:x:0:\n".to_owned()),
            (
                "/etc/hosts",
                format!("127.0.0.1 localhost {}\n::1 localhost\n", policy.app),
            ),
            ("/etc/hostname", format!("{}\n", policy.app)),
        ];
        for (path, contents) in etc {
            steps.push(Step::File {
                path: path.into(),
                contents,
            });
        }
        steps.push(Step::Proc);
        steps.push(Step::PivotRoot);
        steps.push(Step::Hostname(policy.app.clone()));
        steps.push(Step::LoopbackUp);
        reads.extend(["/etc", "/proc"].map(PathBuf::from));
    }
    steps.push(Step::Chdir(host.app_dir.clone()));
    if host.root {
        steps.push(Step::Identity { uid: policy.uid });
    }
    steps.push(Step::DropCapabilities);
    steps.push(Step::NoNewPrivs);
    steps.push(Step::Rlimits {
        nofile: policy.nofile,
        fsize: policy.fsize_bytes,
    });
    steps.push(Step::CloseFds);
    if !skip(Mechanism::Landlock) {
        let mut write: Vec<PathBuf> = vec![PathBuf::from("/tmp")];
        write.extend(policy.writable.iter().cloned());
        write.extend(DEVICES.iter().map(PathBuf::from));
        if reads.is_empty() {
            // No new root: the policy's own directories.
            reads.push(PathBuf::from("/usr"));
            reads.extend(host.lib_dirs.iter().cloned());
            reads.extend(policy.read_only.iter().cloned());
            reads.extend(["/etc", "/proc", "/dev"].map(PathBuf::from));
        }
        reads.retain(|r| !write.contains(r));
        steps.push(Step::Landlock { read: reads, write });
    }
    steps
}

/// The kernel, as the steps see it.
pub trait Kernel {
    fn apply(&mut self, step: &Step, policy: &Policy) -> Result<(), String>;
}

/// Runs `steps` in order; the first failure stops the run.
pub fn execute(
    kernel: &mut dyn Kernel,
    steps: &[Step],
    policy: &Policy,
) -> Result<(), ConfineError> {
    for step in steps {
        kernel.apply(step, policy).map_err(|reason| ConfineError {
            step: describe(step),
            reason,
        })?;
    }
    Ok(())
}

/// A short name for a step, for error messages.
pub fn describe(step: &Step) -> String {
    match step {
        Step::SelfUserNamespace => "user namespace (unprivileged)".into(),
        Step::PidNamespace => "pid namespace".into(),
        Step::Namespaces => "mount/network/IPC/UTS namespaces".into(),
        Step::PrivateMounts => "private mount propagation".into(),
        Step::OpenSources(_) => "opening bind sources".into(),
        Step::StageRoot => "new root tmpfs".into(),
        Step::Bind { path, kind } => format!(
            "bind {} {}",
            path.display(),
            match kind {
                BindKind::ReadOnly => "read-only",
                BindKind::Writable => "read-write",
                BindKind::Device => "device",
            }
        ),
        Step::Symlink { link, .. } => format!("symlink {}", link.display()),
        Step::File { path, .. } => format!("file {}", path.display()),
        Step::Tmp { .. } => "tmpfs /tmp".into(),
        Step::Proc => "mount /proc".into(),
        Step::PivotRoot => "pivot_root".into(),
        Step::Hostname(_) => "host name".into(),
        Step::LoopbackUp => "loopback up".into(),
        Step::Chdir(p) => format!("chdir {}", p.display()),
        Step::Identity { uid } => format!("identity (uid {uid}, user namespace)"),
        Step::DropCapabilities => "dropping capabilities".into(),
        Step::NoNewPrivs => "no_new_privs".into(),
        Step::Rlimits { .. } => "rlimits".into(),
        Step::CloseFds => "closing descriptors".into(),
        Step::Landlock { .. } => "landlock".into(),
    }
}

/// The real kernel. Holds the bind sources between [`Step::OpenSources`] and the binds.
#[derive(Debug)]
pub struct RealKernel {
    sources: Vec<(PathBuf, OwnedFd)>,
    /// The control socket, the one descriptor besides stdio that survives [`Step::CloseFds`].
    keep_fd: RawFd,
}

fn errno(what: &str) -> impl Fn(Errno) -> String + '_ {
    move |e| format!("{what}: {}", e.desc())
}

fn staged(path: &Path) -> PathBuf {
    Path::new(STAGE).join(path.strip_prefix("/").unwrap_or(path))
}

fn write_file(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {path}: {e}"))
}

impl RealKernel {
    /// A kernel that keeps `keep_fd` (the control socket) open through [`Step::CloseFds`].
    pub fn new(keep_fd: RawFd) -> RealKernel {
        RealKernel {
            sources: Vec::new(),
            keep_fd,
        }
    }

    fn bind(&mut self, path: &Path, kind: BindKind) -> Result<(), String> {
        let owned = self
            .sources
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, fd)| fd)
            .ok_or_else(|| format!("{} was not opened", path.display()))?;
        let fd = owned.as_raw_fd();
        let target = staged(path);
        let is_dir = nix::sys::stat::fstat(owned)
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(errno("fstat"))?;
        if is_dir {
            std::fs::create_dir_all(&target).map_err(|e| format!("mkdir: {e}"))?;
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("mkdir: {e}"))?;
            }
            std::fs::write(&target, b"").map_err(|e| format!("mount point: {e}"))?;
        }
        let source = format!("/proc/self/fd/{fd}");
        mount(
            Some(source.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(errno("bind"))?;
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_NOSUID
            | locked_flags(&target)?
            | match kind {
                BindKind::ReadOnly => MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
                // As /tmp: nothing the app writes is ever mapped executable (no library loads).
                BindKind::Writable => MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                BindKind::Device => MsFlags::empty(),
            };
        mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
            .map_err(errno("remount"))?;
        Ok(())
    }
}

impl Kernel for RealKernel {
    fn apply(&mut self, step: &Step, policy: &Policy) -> Result<(), String> {
        match step {
            Step::SelfUserNamespace => {
                let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
                unshare(CloneFlags::CLONE_NEWUSER).map_err(errno("unshare"))?;
                write_file("/proc/self/setgroups", "deny")?;
                write_file("/proc/self/uid_map", &format!("0 {uid} 1"))?;
                write_file("/proc/self/gid_map", &format!("0 {gid} 1"))
            }
            Step::PidNamespace => {
                unshare(CloneFlags::CLONE_NEWPID).map_err(errno("unshare"))?;
                fork_and_wait(self.keep_fd)
            }
            Step::Namespaces => unshare(
                CloneFlags::CLONE_NEWNS
                    | CloneFlags::CLONE_NEWNET
                    | CloneFlags::CLONE_NEWIPC
                    | CloneFlags::CLONE_NEWUTS,
            )
            .map_err(errno("unshare")),
            Step::PrivateMounts => private_mounts(),
            Step::OpenSources(paths) => {
                for p in paths {
                    let fd = open(p.as_path(), OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                        .map_err(|e| format!("{}: {}", p.display(), e.desc()))?;
                    self.sources.push((p.clone(), fd));
                }
                Ok(())
            }
            Step::StageRoot => stage_root(),
            Step::Bind { path, kind } => self.bind(path, *kind),
            Step::Symlink { link, target } => {
                std::os::unix::fs::symlink(target, staged(link)).map_err(|e| e.to_string())
            }
            Step::File { path, contents } => {
                let target = staged(path);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::write(&target, contents).map_err(|e| e.to_string())
            }
            Step::Tmp { bytes } => {
                let target = staged(Path::new("/tmp"));
                std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
                mount(
                    Some("warren-tmp"),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    Some(format!("size={bytes},mode=1777").as_str()),
                )
                .map_err(errno("tmpfs"))
            }
            Step::Proc => {
                let target = staged(Path::new("/proc"));
                std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
                mount(
                    Some("proc"),
                    &target,
                    Some("proc"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    None::<&str>,
                )
                .map_err(errno("proc"))
            }
            Step::PivotRoot => {
                self.sources.clear();
                pivot_to_stage()
            }
            Step::Hostname(name) => nix::unistd::sethostname(name).map_err(errno("sethostname")),
            Step::LoopbackUp => loopback_up(),
            Step::Chdir(dir) => nix::unistd::chdir(dir.as_path()).map_err(errno("chdir")),
            Step::Identity { uid } => {
                become_unprivileged(*uid)?;
                // A change of uid clears the parent-death signal: armed again, or a zygote
                // that is busy when warren dies (and so does not see its control socket close)
                // would outlive it, and its workers with it.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(errno("pdeathsig"))?;
                warren_is_alive(self.keep_fd)
            }
            Step::DropCapabilities => drop_capabilities_except(&[]),
            Step::NoNewPrivs => nix::sys::prctl::set_no_new_privs().map_err(errno("prctl")),
            Step::Rlimits { nofile, fsize } => {
                use nix::sys::resource::{Resource, setrlimit};
                setrlimit(Resource::RLIMIT_NOFILE, *nofile, *nofile).map_err(errno("nofile"))?;
                setrlimit(Resource::RLIMIT_FSIZE, *fsize, *fsize).map_err(errno("fsize"))?;
                setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(errno("core"))
            }
            Step::CloseFds => close_fds_except(self.keep_fd),
            Step::Landlock { read, write } => crate::fence::restrict(read, write, policy),
        }
    }
}

/// [`Step::PrivateMounts`]: nothing mounted from here on propagates out of the namespace.
pub(crate) fn private_mounts() -> Result<(), String> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(errno("mount --make-rprivate /"))
}

/// [`Step::StageRoot`]: the tmpfs at [`STAGE`] that becomes the new root.
pub(crate) fn stage_root() -> Result<(), String> {
    mount(
        Some("warren-root"),
        STAGE,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={ROOT_TMPFS_BYTES},mode=0755").as_str()),
    )
    .map_err(errno("tmpfs"))
}

/// [`Step::PivotRoot`]: into [`STAGE`], the old root detached, the new one read-only.
pub(crate) fn pivot_to_stage() -> Result<(), String> {
    nix::unistd::chdir(STAGE).map_err(errno("chdir"))?;
    nix::unistd::pivot_root(".", ".").map_err(errno("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(errno("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(errno("chdir /"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(errno("read-only root"))
}

/// Forks; the parent waits for the child and leaves with its status; the child returns.
fn fork_and_wait(keep_fd: RawFd) -> Result<(), String> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::ForkResult;
    // SAFETY: the process is single-threaded here (it was just exec'ed and started no thread),
    // so the child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() }.map_err(errno("fork"))? {
        ForkResult::Child => {
            // (The parent cannot die before this: it is blocked in waitpid below, and if warren
            // kills it, that happens through its own parent-death signal, after this call.)
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(errno("pdeathsig"))?;
            Ok(())
        }
        ForkResult::Parent { child } => {
            // Only the zygote keeps the control socket: the master sees it close when it dies.
            let _ = nix::unistd::close(keep_fd);
            // The waiter runs no app code, but it stays outside the sandbox (as root, when
            // warren is): it keeps nothing it does not need but CAP_KILL, because the kernel
            // sends the zygote its parent-death signal with the dying waiter's credentials, and
            // the zygote runs as another uid in a user namespace of its own.
            if let Err(e) = drop_capabilities_except(&[caps::Capability::CAP_KILL])
                .and_then(|()| nix::sys::prctl::set_no_new_privs().map_err(errno("prctl")))
            {
                eprintln!("warren-worker: the pid namespace's waiter keeps its privileges: {e}");
            }
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => {
                        // SAFETY: resetting a disposition to the default before re-raising.
                        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
                        let _ = nix::sys::signal::raise(sig);
                        std::process::exit(128 + sig as i32);
                    }
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(e) => {
                        eprintln!("warren-worker: waiting for the zygote: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
    }
}

fn loopback_up() -> Result<(), String> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(errno("socket"))?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value; the name fits (3 bytes + NUL).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS read and write an ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(format!("SIOCGIFFLAGS: {}", std::io::Error::last_os_error()));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(format!("SIOCSIFFLAGS: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The flags of the mount at `target` that a remount must keep: inside a user namespace the
/// kernel refuses a remount that would drop one the mount it came from has (`nodev` of a
/// `/run`, `noatime` of a `/home`), as bubblewrap also finds.
fn locked_flags(target: &Path) -> Result<MsFlags, String> {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let have = statvfs(target).map_err(errno("statvfs"))?.flags();
    let map = [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    Ok(map
        .iter()
        .filter(|(st, _)| have.contains(*st))
        .fold(MsFlags::empty(), |acc, (_, ms)| acc | *ms))
}

/// Fails when warren closed its end of the control socket `fd`: it died before the
/// parent-death signal was armed again, and nothing would end this process. (The signal's
/// parent is the pid namespace's waiter, which itself dies with warren; warren closes its
/// descriptors before the kernel signals anyone.)
fn warren_is_alive(fd: RawFd) -> Result<(), String> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // SAFETY: the control socket stays open for the life of the process.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).map_err(errno("poll"))?;
    match fds[0].revents() {
        Some(r) if r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) => {
            Err("warren is gone (its control socket is closed)".to_owned())
        }
        _ => Ok(()),
    }
}

fn become_unprivileged(uid: u32) -> Result<(), String> {
    use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(uid));
    setgroups(&[]).map_err(errno("setgroups"))?;
    setresgid(g, g, g).map_err(errno("setresgid"))?;
    setresuid(u, u, u).map_err(errno("setresuid"))?;
    // A change of uid makes the process non-dumpable, and then /proc/self belongs to root:
    // dumpable again, so that it can write its own uid_map.
    nix::sys::prctl::set_dumpable(true).map_err(errno("PR_SET_DUMPABLE"))?;
    unshare(CloneFlags::CLONE_NEWUSER).map_err(errno("unshare(CLONE_NEWUSER)"))?;
    write_file("/proc/self/setgroups", "deny")?;
    write_file("/proc/self/uid_map", &format!("0 {uid} 1"))?;
    write_file("/proc/self/gid_map", &format!("0 {uid} 1"))?;
    nix::sys::prctl::set_dumpable(false).map_err(errno("PR_SET_DUMPABLE"))
}

/// Every capability dropped (the bounding set too) but `keep`, which stays effective.
fn drop_capabilities_except(keep: &[caps::Capability]) -> Result<(), String> {
    use caps::CapSet;
    let err = |e: caps::errors::CapsError| e.to_string();
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
        }
    }
    let keep: caps::CapsHashSet = keep.iter().copied().collect();
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    caps::set(None, CapSet::Effective, &keep).map_err(err)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err)
}

fn close_fds_except(keep: RawFd) -> Result<(), String> {
    let close = |from: u32, to: u32| {
        // SAFETY: close_range only closes descriptors; nothing in this process uses the ones
        // closed here (they are leftovers inherited or opened before confinement).
        if from <= to && unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) } < 0 {
            return Err(format!("close_range: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    };
    let keep = u32::try_from(keep).map_err(|_| "bad descriptor".to_owned())?;
    close(3, keep.saturating_sub(1))?;
    close(keep + 1, u32::MAX)
}

/// `name` as a C string, for the few raw calls.
pub fn cstring(name: &str) -> CString {
    CString::new(name.replace('\0', "")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            app: "hello".into(),
            uid: 200_000,
            read_only: vec![
                "/opt/python".into(),
                "/srv/apps/hello".into(),
                "/srv/venv".into(),
            ],
            writable: vec!["/srv/data".into()],
            tmp_bytes: 1 << 24,
            nofile: 256,
            fsize_bytes: 1 << 24,
            threads: false,
            python_guards: true,
            optional: vec![],
            unavailable: vec![],
        }
    }

    fn host(root: bool) -> Host {
        Host {
            root,
            usr_links: vec![("lib".into(), "usr/lib".into())],
            lib_dirs: vec![],
            app_dir: "/srv/apps/hello".into(),
        }
    }

    fn position(steps: &[Step], pred: impl Fn(&Step) -> bool) -> usize {
        steps.iter().position(pred).expect("step missing")
    }

    #[test]
    fn steps_follow_the_documented_order() {
        let steps = plan(&policy(), &host(true));
        let pid = position(&steps, |s| *s == Step::PidNamespace);
        let ns = position(&steps, |s| *s == Step::Namespaces);
        let open = position(&steps, |s| matches!(s, Step::OpenSources(_)));
        let stage = position(&steps, |s| *s == Step::StageRoot);
        let proc_ = position(&steps, |s| *s == Step::Proc);
        let pivot = position(&steps, |s| *s == Step::PivotRoot);
        let ident = position(&steps, |s| matches!(s, Step::Identity { .. }));
        let caps = position(&steps, |s| *s == Step::DropCapabilities);
        let nnp = position(&steps, |s| *s == Step::NoNewPrivs);
        let close = position(&steps, |s| *s == Step::CloseFds);
        let landlock = position(&steps, |s| matches!(s, Step::Landlock { .. }));
        assert!(pid < ns && ns < open && open < stage && stage < proc_ && proc_ < pivot);
        assert!(pivot < ident && ident < caps && caps < nnp && nnp < close && close < landlock);
        assert_eq!(
            landlock,
            steps.len() - 1,
            "landlock is the zygote's last step"
        );
        assert!(
            !steps.contains(&Step::SelfUserNamespace),
            "root maps to the app's uid instead"
        );
    }

    #[test]
    fn unprivileged_start_begins_with_a_user_namespace_and_keeps_its_uid() {
        let steps = plan(&policy(), &host(false));
        assert_eq!(steps[0], Step::SelfUserNamespace);
        assert!(!steps.iter().any(|s| matches!(s, Step::Identity { .. })));
    }

    #[test]
    fn binds_go_parent_first_and_each_has_its_kind() {
        let mut p = policy();
        p.read_only.push("/srv/apps/hello/vendor".into());
        let steps = plan(&p, &host(true));
        let binds: Vec<(&Path, BindKind)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Bind { path, kind } => Some((path.as_path(), *kind)),
                _ => None,
            })
            .collect();
        let at = |p: &str| binds.iter().position(|(b, _)| *b == Path::new(p)).unwrap();
        assert!(at("/srv/apps/hello") < at("/srv/apps/hello/vendor"));
        for (path, kind) in &binds {
            let expect = if *path == Path::new("/srv/data") {
                BindKind::Writable
            } else if path.starts_with("/dev") {
                BindKind::Device
            } else {
                BindKind::ReadOnly
            };
            assert_eq!(*kind, expect, "{}", path.display());
        }
        let Step::Landlock { read, write } = steps.last().unwrap() else {
            panic!("landlock last")
        };
        assert!(write.contains(&PathBuf::from("/tmp")) && write.contains(&"/srv/data".into()));
        assert!(read.contains(&PathBuf::from("/srv/apps/hello")));
        assert!(!read.contains(&PathBuf::from("/srv/data")));
    }

    #[test]
    fn a_waived_mechanism_is_skipped_only_when_unavailable() {
        let mut p = policy();
        p.optional = vec![Mechanism::Landlock];
        let has_landlock = |s: &[Step]| s.iter().any(|s| matches!(s, Step::Landlock { .. }));
        assert!(has_landlock(&plan(&p, &host(true))));
        p.unavailable = vec![Mechanism::Landlock];
        assert!(!has_landlock(&plan(&p, &host(true))));
        // Not waived: still planned, and so it fails loudly when it runs.
        let mut q = policy();
        q.unavailable = vec![Mechanism::Landlock];
        assert!(has_landlock(&plan(&q, &host(true))));
    }

    struct Recorder {
        ran: Vec<Step>,
        fail_at: Option<usize>,
    }

    impl Kernel for Recorder {
        fn apply(&mut self, step: &Step, _: &Policy) -> Result<(), String> {
            if Some(self.ran.len()) == self.fail_at {
                return Err("Operation not permitted".into());
            }
            self.ran.push(step.clone());
            Ok(())
        }
    }

    #[test]
    fn execution_stops_at_the_first_failure_and_names_the_step() {
        let p = policy();
        let steps = plan(&p, &host(true));
        let mut k = Recorder {
            ran: vec![],
            fail_at: Some(2),
        };
        let err = execute(&mut k, &steps, &p).unwrap_err();
        assert_eq!(k.ran.len(), 2);
        assert_eq!(err.step, describe(&steps[2]));
        assert!(err.to_string().contains("Operation not permitted"));
        let mut k = Recorder {
            ran: vec![],
            fail_at: None,
        };
        execute(&mut k, &steps, &p).unwrap();
        assert_eq!(k.ran, steps);
    }
}
