//! The few `/proc` reads the master makes: a process's parent, CPU time and resident memory.
//! `pid` is `"self"` or a number; every read is `None` when the process is gone.

use std::sync::OnceLock;

/// The fields of `/proc/PID/stat` after the command name (which may hold anything, so the line
/// is split after its last `)`): `state ppid pgrp ... utime stime ...`.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Index 0 is the state, a letter (read as 0); the ppid is 1, utime 11, stime 12.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// The parent of `pid`.
pub fn parent(pid: i32) -> Option<i32> {
    let ppid = *stat_fields(&pid.to_string())?.get(1)?;
    i32::try_from(ppid).ok()
}

/// User plus system CPU time of `pid`, in seconds.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let f = stat_fields(pid)?;
    Some((f.get(11)? + f.get(12)?) as f64 / clock_ticks() as f64)
}

/// Resident memory of `pid`, in bytes (`statm`'s second field, in pages).
pub fn resident_bytes(pid: &str) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| sysconf(nix::unistd::SysconfVar::PAGE_SIZE, 4096))
}

fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| sysconf(nix::unistd::SysconfVar::CLK_TCK, 100))
}

fn sysconf(var: nix::unistd::SysconfVar, default: u64) -> u64 {
    nix::unistd::sysconf(var)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert_eq!(
            parent(std::process::id() as i32),
            Some(nix::unistd::getppid().as_raw())
        );
        assert!(resident_bytes("self").is_some_and(|b| b > 1 << 20));
        assert!(cpu_seconds("self").is_some_and(|s| s >= 0.0));
        assert_eq!(parent(i32::MAX), None);
    }
}
