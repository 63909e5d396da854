//! What warren's syscall filter costs per system call: the time of a cheap syscall (`getppid`)
//! without a filter, then under the zygote's and the worker's programs stacked as in a worker.
//! Multiply by a worker's syscalls per request (`strace -c -f -p WORKER`) for the cost per
//! request. Part of `scripts/bench`; run alone with
//! `cargo run --release -p warren-sandbox --example seccomp_cost`.

use std::time::Instant;

use warren_sandbox::seccomp::Filters;

const CALLS: u32 = 2_000_000;
const ROUNDS: usize = 5;

/// The fastest of `ROUNDS` rounds, in ns per call.
fn ns_per_call() -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..CALLS {
                // SAFETY: getppid has no arguments and no side effects.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            start.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let filters = Filters::compile(false).expect("compiling the filters");
    let open = ns_per_call();
    filters
        .apply_zygote()
        .expect("installing the zygote's programs");
    filters
        .apply_worker()
        .expect("installing the worker's programs");
    let confined = ns_per_call();
    println!(
        "seccomp: getppid {open:.1} ns without a filter, {confined:.1} ns under the worker's \
         four programs: +{:.1} ns per system call",
        confined - open
    );
}
