//! What an app's cgroups cost a request's round trip, apart from everything else a worker does.
//!
//! A parent (the front's stand-in) and a child (the worker's) bounce one byte back and forth,
//! both on one CPU (the first this process may use) so that every wake-up is local and the
//! scheduler's placement does not blur the figures. The child runs either in the parent's own
//! cgroups or in an app group that [`Cgroups::create_app`] makes (memory, CPU quota, pids: what
//! a confined worker joins), over either a pair of pipes (warren's transport; the child waits
//! in a blocking `read`, as a worker does) or a Unix socketpair (the child waits as a worker
//! on a socket must, or be woken each time its peer frees room: a non-blocking read, then
//! `poll`). Rounds alternate between the variants;
//! medians are printed, per round trip: the elapsed time and each side's CPU time (from
//! `/proc/PID/schedstat`).
//!
//! Unix socket buffers are charged to the sending task's memory cgroup and freed by the
//! receiver, so messages that cross between two memory cgroups make the per-CPU charge cache
//! switch groups each time; a pipe reuses its page and charges nothing per message. A child in
//! a CPU cgroup of its own makes the scheduler switch group entities at each wake-up and sleep.
//! On cgroup v1, where each controller has its own directory, the child also joins the app's
//! memory group alone and its cpu group alone, which splits the cost between the two.
//! Needs root or a delegated cgroup v2 subtree. Part of `scripts/bench`; run alone with
//! `cargo run --release -p warren-sandbox --example crossing_cost`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, pipe};
use warren_sandbox::cgroup::{Cgroups, Limits};

const TRIPS: u32 = 20_000;
const ROUNDS: usize = 9;

/// One side's two ends: where its messages come from and where it sends its own.
struct Ends {
    from: std::fs::File,
    to: std::fs::File,
}

/// The parent's ends and the child's, over a socketpair or two pipes.
fn channel(pipes: bool) -> (Ends, Ends) {
    if pipes {
        let (req_r, req_w) = pipe().expect("pipe");
        let (resp_r, resp_w) = pipe().expect("pipe");
        let f = |fd: OwnedFd| std::fs::File::from(fd);
        (
            Ends {
                from: f(resp_r),
                to: f(req_w),
            },
            Ends {
                from: f(req_r),
                to: f(resp_w),
            },
        )
    } else {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let f = |s: &UnixStream| std::fs::File::from(OwnedFd::from(s.try_clone().expect("dup")));
        (
            Ends {
                from: f(&a),
                to: f(&a),
            },
            Ends {
                from: f(&b),
                to: f(&b),
            },
        )
    }
}

/// The child: echoes each byte until the parent closes its end. Never returns.
fn echo(mut ends: Ends, pipes: bool, procs: &[PathBuf]) -> ! {
    for p in procs {
        std::fs::write(p, "0").expect("joining the app's group");
    }
    if !pipes {
        nix::fcntl::fcntl(
            ends.from.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .expect("O_NONBLOCK");
    }
    let mut b = [0u8; 64];
    loop {
        let n = match ends.from.read(&mut b) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(ends.from.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::NONE);
                continue;
            }
            Err(_) => 0,
        };
        if n == 0 || ends.to.write_all(&b[..n]).is_err() {
            // SAFETY: _exit ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
    }
}

fn cpu_ns(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// One round: `[elapsed, child CPU, parent CPU]` in µs per round trip.
fn round(pipes: bool, procs: &[PathBuf]) -> [f64; 3] {
    let (mut ours, theirs) = channel(pipes);
    // SAFETY: this example is single-threaded; the child only joins a cgroup and echoes.
    let child = match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(ours);
            echo(theirs, pipes, procs)
        }
        ForkResult::Parent { child } => child,
    };
    drop(theirs);
    let mut b = [1u8];
    let mut trip = |ours: &mut Ends| {
        ours.to.write_all(&b).expect("write");
        ours.from.read_exact(&mut b).expect("read");
    };
    for _ in 0..1000 {
        trip(&mut ours);
    }
    let pid = child.to_string();
    let (c0, p0, t0) = (cpu_ns(&pid), cpu_ns("self"), Instant::now());
    for _ in 0..TRIPS {
        trip(&mut ours);
    }
    let elapsed = t0.elapsed().as_nanos() as f64;
    let (c1, p1) = (cpu_ns(&pid), cpu_ns("self"));
    drop(ours);
    let _ = waitpid(child, None);
    let per = |ns: f64| ns / f64::from(TRIPS) / 1000.0;
    [per(elapsed), per(c1 - c0), per(p1 - p0)]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let allowed = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    let first = (0..CpuSet::count())
        .find(|&c| allowed.is_set(c).unwrap_or(false))
        .expect("a CPU to run on");
    let mut one = CpuSet::new();
    one.set(first).expect("CPU number");
    sched_setaffinity(Pid::from_raw(0), &one).expect("pinning to one CPU");
    let cgroups = match Cgroups::new() {
        Ok(c) => c,
        Err(e) => {
            println!("crossing cost: not measured, no cgroups here ({e})");
            return;
        }
    };
    let limits = Limits {
        memory_bytes: 1 << 30,
        cpu_percent: 100 * warren_sandbox::cgroup::cpus() as u32,
        pids: 64,
        cap_swap: true,
    };
    let app = cgroups
        .create_app("crossing-cost", limits)
        .expect("creating the app group");
    let all = app.procs_files();
    // v1: one directory per controller, `.../<controller>/warren/<pid>/crossing-cost/...`.
    let only = |controller: &str| -> Vec<PathBuf> {
        all.iter()
            .filter(|p| p.components().any(|c| c.as_os_str() == controller))
            .cloned()
            .collect()
    };
    let mut places: Vec<(&str, Vec<PathBuf>)> = vec![
        ("the parent's groups", Vec::new()),
        ("the app's groups", all.clone()),
    ];
    if all.len() > 1 {
        places.push(("the app's memory group only", only("memory")));
        places.push(("the app's cpu group only", only("cpu")));
    }
    let transports = [("pipes", true), ("socketpair", false)];
    // rows[transport][place]: one [elapsed, child, parent] per round.
    let mut rows = vec![vec![Vec::<[f64; 3]>::new(); places.len()]; transports.len()];
    for _ in 0..ROUNDS {
        for (t, &(_, pipes)) in transports.iter().enumerate() {
            for (p, (_, procs)) in places.iter().enumerate() {
                rows[t][p].push(round(pipes, procs));
            }
        }
    }
    app.destroy();
    cgroups.remove_own_groups();
    println!(
        "crossing cost, per round trip on one CPU (median of {ROUNDS} rounds of {TRIPS}): \
         elapsed; child and parent CPU; CPU added over the child in the parent's groups"
    );
    for (t, &(name, _)) in transports.iter().enumerate() {
        let mut base = f64::NAN;
        for (p, (place, _)) in places.iter().enumerate() {
            let m: Vec<f64> = (0..3)
                .map(|k| median(rows[t][p].iter().map(|r| r[k]).collect()))
                .collect();
            let cpu = m[1] + m[2];
            if p == 0 {
                base = cpu;
            }
            println!(
                "  {name:10} child in {place:28} {:6.2} µs   child {:5.2}   parent {:5.2}   \
                 {:+.2} µs",
                m[0],
                m[1],
                m[2],
                cpu - base
            );
        }
    }
}
