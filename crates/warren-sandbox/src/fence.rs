//! Landlock: the second fence on the file system, applied by the zygote after its mounts.
//!
//! The mount namespace already decides what exists; Landlock decides what may be done with it,
//! enforced by a different part of the kernel, so that one mistake in either is not an escape.
//! Read (files and directory listings) beneath the bound directories; write beneath `/tmp`,
//! the writable directories and the device nodes; execute nowhere (a shared library is mapped,
//! not executed, so extension modules still load); no TCP bind or connect (ABI 4); no
//! connecting to abstract Unix sockets or signalling processes outside the domain (ABI 6).

use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use crate::policy::{Mechanism, Policy};

/// The ABI warren asks for; older kernels get what they support, reported as "partial".
pub const ABI_WANTED: ABI = ABI::V6;

/// The kernel's Landlock ABI version (0 when Landlock is off).
pub fn kernel_abi() -> i32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute only returns the version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    if v < 0 { 0 } else { v as i32 }
}

/// Restricts the calling process (and every process it forks afterwards).
pub fn restrict(read: &[PathBuf], write: &[PathBuf], policy: &Policy) -> Result<(), String> {
    let abi = ABI_WANTED;
    let level = if policy.allows_missing(Mechanism::Landlock) {
        CompatLevel::BestEffort
    } else {
        CompatLevel::SoftRequirement
    };
    let err = |e: landlock::RulesetError| e.to_string();
    let file_rights = AccessFs::from_file(abi);
    let read_rights = AccessFs::from_read(abi) & !AccessFs::Execute;
    let write_rights = (AccessFs::from_all(abi) & !AccessFs::Execute) | read_rights;
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(err)?
        .scope(Scope::from_all(abi))
        .map_err(err)?
        .create()
        .map_err(err)?;
    for (paths, rights) in [(read, read_rights), (write, write_rights)] {
        for p in paths {
            let fd = match PathFd::new(p) {
                Ok(fd) => fd,
                // A bind that does not exist in this root (a device the host lacks).
                Err(_) if !p.exists() => continue,
                Err(e) => return Err(format!("{}: {e}", p.display())),
            };
            let rights = if p.is_dir() {
                rights
            } else {
                rights & file_rights
            };
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, rights))
                .map_err(err)?;
        }
    }
    let status = ruleset.restrict_self().map_err(err)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(()),
        RulesetStatus::PartiallyEnforced if policy.allows_missing(Mechanism::Landlock) => Ok(()),
        RulesetStatus::NotEnforced if policy.allows_missing(Mechanism::Landlock) => Ok(()),
        other => Err(format!(
            "the kernel enforces Landlock only {other:?} (ABI {} here, {} wanted); \
             add \"landlock\" to sandbox.optional to run anyway",
            kernel_abi(),
            ABI_WANTED as i32
        )),
    }
}
