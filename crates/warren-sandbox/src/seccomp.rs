//! The workers' syscall filter, compiled from `config/seccomp.toml` with `seccompiler`.
//!
//! The data file is built into the binary (`include_str!`), so an app's config cannot change it
//! and a worker needs no file to read when it applies it. [`Filters::compile`] runs in the
//! zygote before it imports the app; the zygote installs its own programs
//! ([`Filters::apply_zygote`]: the allowlist plus its own keyed fork, so the app's import-time
//! code is filtered too and cannot fork), and each worker installs the prepared worker programs after its fork
//! ([`Filters::apply_worker`]), which costs a few microseconds.
//!
//! Programs come in pairs, because seccompiler gives one filter a single match action and a
//! single mismatch action: the allowlist (match: allow, mismatch: EPERM) first, then the ENOSYS
//! list (match: ENOSYS, mismatch: allow). For a syscall on the ENOSYS list both answer
//! `SECCOMP_RET_ERRNO`, and the kernel then takes the data of the filter installed last, so
//! `clone3` gets ENOSYS. Every program starts with seccompiler's architecture check, which
//! kills the process on a foreign ABI (i386 `int 0x80`).

use std::collections::BTreeMap;
use std::str::FromStr;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;

/// The policy's text, as shipped in `config/seccomp.toml`.
pub const POLICY_TOML: &str = include_str!("../../../config/seccomp.toml");

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("config/seccomp.toml: {0}")]
    Policy(String),
    #[error("compiling the seccomp filter: {0}")]
    Compile(#[from] seccompiler::BackendError),
    #[error("installing the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
    #[error("seccomp filters are only built for x86_64 and aarch64")]
    Arch,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub allow: Vec<Entry>,
    #[serde(default)]
    pub enosys: Vec<Entry>,
    #[serde(default)]
    pub deny: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub syscalls: Vec<String>,
    pub why: String,
    /// `"threads"`: only for apps that allow threads; `"zygote"`: only in the zygote.
    pub when: Option<String>,
    #[serde(default)]
    pub args: Vec<Arg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arg {
    pub index: u8,
    pub op: String,
    pub value: ArgValue,
    pub mask: Option<u64>,
    #[serde(default = "qword")]
    pub len: String,
}

/// An argument's value: a number, or `"fork_key"`, the zygote's secret (see [`Filters`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ArgValue {
    Number(u64),
    Named(String),
}

fn qword() -> String {
    "qword".into()
}

/// Parses the shipped policy.
pub fn policy() -> Result<PolicyFile, SeccompError> {
    toml::from_str(POLICY_TOML).map_err(|e| SeccompError::Policy(e.to_string()))
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SeccompError::Arch)
    }
}

/// The syscall number of `name` on this architecture; `None` for a syscall this architecture
/// does not have (x86_64's `open` on aarch64, say).
pub fn number(name: &str) -> Option<i64> {
    syscalls::Sysno::from_str(name)
        .ok()
        .map(|s| i64::from(s.id()))
}

/// `None` for a `fork_key` condition when there is no key (an app with threads).
fn condition(a: &Arg, fork_key: Option<u64>) -> Result<Option<SeccompCondition>, SeccompError> {
    let value = match &a.value {
        ArgValue::Number(n) => *n,
        ArgValue::Named(name) if name == "fork_key" => match fork_key {
            Some(key) => key,
            None => return Ok(None),
        },
        ArgValue::Named(other) => {
            return Err(SeccompError::Policy(format!("unknown value `{other}`")));
        }
    };
    let len = match a.len.as_str() {
        "dword" => SeccompCmpArgLen::Dword,
        "qword" => SeccompCmpArgLen::Qword,
        other => return Err(SeccompError::Policy(format!("unknown len `{other}`"))),
    };
    let op = match (a.op.as_str(), a.mask) {
        ("eq", None) => SeccompCmpOp::Eq,
        ("ne", None) => SeccompCmpOp::Ne,
        ("ge", None) => SeccompCmpOp::Ge,
        ("gt", None) => SeccompCmpOp::Gt,
        ("le", None) => SeccompCmpOp::Le,
        ("lt", None) => SeccompCmpOp::Lt,
        ("masked_eq", Some(m)) => SeccompCmpOp::MaskedEq(m),
        (op, mask) => {
            return Err(SeccompError::Policy(format!(
                "op `{op}` with mask {mask:?} (masked_eq needs a mask, the others none)"
            )));
        }
    };
    SeccompCondition::new(a.index, len, op, value)
        .map(Some)
        .map_err(|e| SeccompError::Policy(format!("argument {}: {e}", a.index)))
}

fn rules(
    entries: &[Entry],
    threads: bool,
    zygote: bool,
    fork_key: Option<u64>,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    // `None`: matched unconditionally; `Some(rules)`: matched when any rule holds.
    let mut map: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for e in entries {
        match e.when.as_deref() {
            None => {}
            Some("threads") if threads => {}
            Some("threads") => continue,
            Some("zygote") if zygote => {}
            Some("zygote") => continue,
            Some(other) => return Err(SeccompError::Policy(format!("unknown when `{other}`"))),
        }
        let conds = e
            .args
            .iter()
            .map(|a| condition(a, fork_key))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        for name in &e.syscalls {
            let Some(nr) = number(name) else { continue };
            let slot = map.entry(nr).or_insert_with(|| Some(Vec::new()));
            if conds.is_empty() {
                *slot = None;
            } else if let Some(list) = slot {
                list.push(
                    SeccompRule::new(conds.clone())
                        .map_err(|e| SeccompError::Policy(format!("{name}: {e}")))?,
                );
            }
        }
    }
    // seccompiler takes an empty rule list to mean "match unconditionally".
    Ok(map
        .into_iter()
        .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
        .collect())
}

/// The compiled programs of an app's zygote and workers.
///
/// The zygote must fork its workers, but the app's import-time code runs in the zygote too and
/// must not make processes. So the zygote's `clone` is allowed only with `fork_key`, a random
/// 64-bit value drawn at start-up, in its parent-tid argument, which the kernel ignores when
/// `CLONE_PARENT_SETTID` is not set; the zygote forks through [`keyed_fork`]. `os.fork`,
/// `subprocess` and every C library fork pass something else there and get EPERM. (Code that
/// reads the zygote's memory through ctypes could find the key: this stops forking, not a
/// determined memory scan; the child would still be confined, unable to exec, and counted by
/// `pids.max`.)
///
/// An app allowed threads (`limits.threads`) has no key: its import may start thread pools whose
/// libraries reset them in `pthread_atfork` handlers, which only the C library's `fork` runs, so
/// its zygote forks through the C library and the filter cannot tell that fork from the app's.
#[derive(Debug, Clone)]
pub struct Filters {
    zygote: BpfProgram,
    worker: BpfProgram,
    enosys: BpfProgram,
    fork_key: Option<u64>,
}

fn allowlist(
    file: &PolicyFile,
    threads: bool,
    zygote: bool,
    fork_key: Option<u64>,
) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        rules(&file.allow, threads, zygote, fork_key)?,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        target_arch()?,
    )?;
    Ok(filter.try_into()?)
}

/// `fork()` as the raw `clone` syscall (flags `SIGCHLD` only, as fork's) with `key` in the
/// parent-tid argument, which the kernel ignores without `CLONE_PARENT_SETTID`: the only fork
/// the zygote's filter lets through ([`Filters`]). Returns the child's pid in the parent, 0 in
/// the child.
///
/// # Safety
/// As `fork()`: the caller must be single-threaded, and the child must only do what is safe
/// after a fork. The C library's fork bookkeeping is skipped (`pthread_atfork` handlers, and
/// the child's cached thread id keeps the parent's value), so the caller runs what it needs
/// itself (CPython's `PyOS_BeforeFork` and `PyOS_AfterFork_*`).
pub unsafe fn keyed_fork(key: u64) -> std::io::Result<libc::pid_t> {
    let flags = libc::SIGCHLD as libc::c_ulong;
    // SAFETY: clone without CLONE_VM and with a null stack duplicates the process like fork;
    // the pointer arguments are ignored for these flags (the caller upholds fork's rules).
    let r = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, key as usize, 0usize, 0usize) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as libc::pid_t)
    }
}

impl Filters {
    /// Compiles the shipped policy for an app that does (or does not) allow threads.
    pub fn compile(threads: bool) -> Result<Filters, SeccompError> {
        let file = policy()?;
        let fork_key = if threads {
            None
        } else {
            let key = getrandom::u64()
                .map_err(|e| SeccompError::Policy(format!("getrandom for the fork key: {e}")))?;
            // Never 0: glibc's fork passes a NULL parent-tid.
            Some(key | 1)
        };
        let enosys = SeccompFilter::new(
            rules(&file.enosys, threads, false, fork_key)?,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            target_arch()?,
        )?;
        Ok(Filters {
            zygote: allowlist(&file, threads, true, fork_key)?,
            worker: allowlist(&file, threads, false, fork_key)?,
            enosys: enosys.try_into()?,
            fork_key,
        })
    }

    /// The value the zygote's `clone` must carry (see [`keyed_fork`]); `None` for an app with
    /// threads, whose zygote forks through the C library.
    pub fn fork_key(&self) -> Option<u64> {
        self.fork_key
    }

    /// Installs the zygote's programs on the calling thread (which sets `no_new_privs` first).
    pub fn apply_zygote(&self) -> Result<(), SeccompError> {
        seccompiler::apply_filter(&self.zygote)?;
        seccompiler::apply_filter(&self.enosys)?;
        Ok(())
    }

    /// Installs the worker's programs, on top of the zygote's it inherited.
    pub fn apply_worker(&self) -> Result<(), SeccompError> {
        seccompiler::apply_filter(&self.worker)?;
        seccompiler::apply_filter(&self.enosys)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[Entry]) -> Vec<&str> {
        entries
            .iter()
            .flat_map(|e| e.syscalls.iter().map(String::as_str))
            .collect()
    }

    #[test]
    fn every_entry_names_a_real_syscall_and_says_why() {
        let file = policy().unwrap();
        for e in file.allow.iter().chain(&file.enosys).chain(&file.deny) {
            assert!(!e.why.trim().is_empty(), "{:?} has no reason", e.syscalls);
            for name in &e.syscalls {
                if cfg!(target_arch = "x86_64") {
                    assert!(number(name).is_some(), "`{name}` is not an x86_64 syscall");
                }
            }
        }
    }

    #[test]
    fn refused_syscalls_are_not_allowed() {
        let file = policy().unwrap();
        let allowed = names(&file.allow);
        for name in names(&file.deny).into_iter().chain(names(&file.enosys)) {
            assert!(
                !allowed.contains(&name),
                "`{name}` is both refused and allowed"
            );
        }
        // The list, each refused or ENOSYS.
        let refused: Vec<&str> = names(&file.deny)
            .into_iter()
            .chain(names(&file.enosys))
            .collect();
        for must in [
            "clone3",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "execve",
            "execveat",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "unshare",
            "setns",
            "bpf",
            "perf_event_open",
            "keyctl",
            "userfaultfd",
            "memfd_create",
            "fork",
            "vfork",
        ] {
            assert!(refused.contains(&must), "`{must}` must be refused");
        }
    }

    #[test]
    fn clone_is_allowed_only_for_threads() {
        let file = policy().unwrap();
        let clone = number("clone").unwrap();
        assert!(
            !rules(&file.allow, false, false, Some(7))
                .unwrap()
                .contains_key(&clone)
        );
        let with = rules(&file.allow, true, false, None).unwrap();
        assert_eq!(
            with[&clone].len(),
            1,
            "clone must carry its CLONE_THREAD condition"
        );
        // The zygote forks: clone is allowed there, with its no-namespace condition.
        let zygote = rules(&file.allow, false, true, Some(7)).unwrap();
        assert_eq!(
            zygote[&clone].len(),
            1,
            "the zygote's clone carries a condition"
        );
    }

    #[test]
    fn both_variants_compile() {
        Filters::compile(false).unwrap();
        Filters::compile(true).unwrap();
    }

    /// In a child process under the real kernel: after the zygote's filter, the C library's
    /// fork is refused and the keyed fork goes through. The exit code says which step failed.
    #[test]
    fn under_the_zygote_filter_only_the_keyed_fork_makes_a_process() {
        let filters = Filters::compile(false).unwrap();
        let key = filters
            .fork_key()
            .expect("an app without threads has a fork key");
        assert!(Filters::compile(true).unwrap().fork_key().is_none());
        // SAFETY: the child only makes system calls (the programs were compiled before the
        // fork, so nothing allocates) and leaves through `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = (|| {
                if filters.apply_zygote().is_err() {
                    return 10;
                }
                // SAFETY: as above.
                let plain = unsafe { libc::fork() };
                if plain == 0 {
                    // SAFETY: leaving the grandchild at once.
                    unsafe { libc::_exit(0) };
                }
                if plain != -1
                    || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM)
                {
                    return 11;
                }
                // A wrong key is refused like the C library's fork.
                // SAFETY: as above; refused, so no process is made.
                match unsafe { keyed_fork(key ^ 2) } {
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                    _ => return 14,
                }
                // SAFETY: as above.
                match unsafe { keyed_fork(key) } {
                    Ok(0) => {
                        // SAFETY: the grandchild leaves at once.
                        unsafe { libc::_exit(0) }
                    }
                    Ok(child) => {
                        let mut status = 0;
                        // SAFETY: waiting for our own child.
                        unsafe { libc::waitpid(child, &mut status, 0) };
                        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                            0
                        } else {
                            12
                        }
                    }
                    Err(_) => 13,
                }
            })();
            // SAFETY: leaving the child without running the test harness's exit code.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "the child died: {status:#x}");
        let code = libc::WEXITSTATUS(status);
        assert_eq!(
            code, 0,
            "10: filter not applied, 11: libc fork not refused with EPERM, 12/13: keyed fork failed, \
             14: a wrong key was not refused"
        );
    }
}
