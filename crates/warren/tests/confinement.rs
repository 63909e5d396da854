//! Confinement seen from the host: what `warren doctor` reports, the cgroups warren makes (their
//! place, their limits, their removal, also after a crash), and the refusal to start an app
//! whose sandbox needs a mechanism the machine cannot give (shown by starting warren without
//! root, where cgroups are out of reach). The escape suite (`escape.rs`) proves the mechanisms
//! hold against app code.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Warren, needs_root, repo_root, tempdir};

/// The uid of the unprivileged runs (`nobody` on Debian).
const NOBODY: u32 = 65534;

const MECHANISMS: [&str; 5] = ["cgroups", "namespaces", "landlock", "seccomp", "rlimits"];

fn hello_config(extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.hello]
path = "{}"
entry = "app:application"
workers = 2

[apps.hello.limits]
memory_mb = 96
cpu_percent = 50
pids = 40
{extra}
"#,
        repo_root().join("examples/apps/hello").display()
    )
}

/// `warren doctor`'s table: mechanism → (status, detail).
fn doctor(uid: Option<u32>) -> (Vec<(String, String, String)>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
    cmd.arg("doctor").stdin(Stdio::null());
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("running warren doctor");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "warren doctor failed: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = text
        .lines()
        .filter_map(|l| {
            let name = MECHANISMS.iter().find(|m| l.starts_with(*m))?;
            let rest = l[name.len()..].trim_start();
            let status = ["enforced", "partial", "not available"]
                .into_iter()
                .find(|s| rest.starts_with(s))
                .unwrap_or_else(|| panic!("no status in doctor line {l:?}"));
            let detail = rest[status.len()..].trim().to_owned();
            Some(((*name).to_owned(), status.to_owned(), detail))
        })
        .collect();
    (rows, text)
}

/// Landlock exists from Linux 5.13 (whether it is enabled is the kernel's build and boot
/// choice; the kernels this runs on have it).
fn landlock_in_kernel() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    version >= (5, 13)
}

#[test]
fn doctor_as_root_reports_every_mechanism_enforced() {
    if !needs_root() {
        return;
    }
    let (rows, text) = doctor(None);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names, MECHANISMS,
        "one line per mechanism, in order:\n{text}"
    );
    for (name, status, detail) in &rows {
        if name == "landlock" {
            // An older kernel gives an older ABI: partial, and doctor says which.
            let expected: &[&str] = if landlock_in_kernel() {
                &["enforced", "partial"]
            } else {
                &["not available"]
            };
            assert!(expected.contains(&status.as_str()), "{text}");
            continue;
        }
        assert_eq!(status, "enforced", "{name} as root:\n{text}");
        assert!(!detail.is_empty(), "{name} has no detail:\n{text}");
    }
    let cgroups = &rows[0].2;
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    assert!(
        cgroups.contains(if v2 { "v2" } else { "v1" }),
        "the cgroup version is named: {cgroups}"
    );
}

#[test]
fn doctor_without_root_keeps_what_works_unprivileged() {
    if !needs_root() {
        return;
    }
    let (rows, text) = doctor(Some(NOBODY));
    assert_eq!(rows.len(), 5, "{text}");
    for (name, status, detail) in &rows {
        match name.as_str() {
            // No root and (here) no delegated v2 subtree: out of reach, and doctor says why.
            "cgroups" => {
                assert_eq!(status, "not available", "{text}");
                assert!(detail.contains("needs root"), "the reason is named: {text}");
            }
            "landlock" => {}
            _ => assert_eq!(status, "enforced", "{name} without root:\n{text}"),
        }
    }
}

#[test]
fn an_app_that_requires_a_missing_mechanism_is_refused_with_the_reason() {
    if !needs_root() {
        return;
    }
    // warren as nobody: cgroups are not available, and the app does not list them as optional.
    let w = Warren::start_as(tempdir(), &hello_config(""), &[], Some(NOBODY));
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["refusing to start the app", "hello", "cgroups"]
        ),
        "no refusal naming the app and the mechanism; log:\n{}",
        w.logs()
    );
    let r = w.get("hello.localhost", "/");
    assert_eq!(r.status, 503, "a refused app answers 503: {}", r.text());
    assert!(r.header("retry-after").is_some(), "503 carries Retry-After");
    assert!(
        r.text().contains("cgroups"),
        "the page names the missing mechanism: {}",
        r.text()
    );
    // Nothing was started for it.
    assert!(
        support::descendants(w.pid()).is_empty(),
        "a refused app must not run: {:?}",
        support::descendants(w.pid())
    );
    w.stop();
}

// ---------------------------------------------------------------------------------------------
// cgroups

fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Directories of warren instance `pid`'s groups: one per controller on v1, one on v2.
fn instance_dirs(pid: u32) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if cgroup_v2() {
        vec![root.join(format!("warren/{pid}"))]
    } else {
        ["cpu", "memory", "pids"]
            .iter()
            .map(|c| root.join(c).join(format!("warren/{pid}")))
            .collect()
    }
}

fn read_trim(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn procs_in(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn each_app_gets_a_limited_cgroup_under_warren_that_goes_with_it() {
    if !needs_root() {
        return;
    }
    let w = Warren::start(&hello_config(""));
    w.wait_workers("hello", 2);
    w.get("hello.localhost", "/").assert_ok();
    let dirs: Vec<PathBuf> = instance_dirs(w.pid())
        .into_iter()
        .map(|d| d.join("hello"))
        .collect();
    for d in &dirs {
        assert!(d.is_dir(), "{} missing", d.display());
    }
    if cgroup_v2() {
        let d = &dirs[0];
        assert_eq!(read_trim(&d.join("memory.max")), (96u64 << 20).to_string());
        assert_eq!(read_trim(&d.join("memory.swap.max")), "0");
        assert_eq!(read_trim(&d.join("pids.max")), "40");
        assert_eq!(read_trim(&d.join("cpu.max")), "50000 100000");
    } else {
        let [cpu, mem, pids] = [&dirs[0], &dirs[1], &dirs[2]];
        assert_eq!(
            read_trim(&mem.join("memory.limit_in_bytes")),
            (96u64 << 20).to_string()
        );
        // Swap included: memory + swap capped at the same figure.
        assert_eq!(
            read_trim(&mem.join("memory.memsw.limit_in_bytes")),
            (96u64 << 20).to_string()
        );
        assert_eq!(read_trim(&pids.join("pids.max")), "40");
        assert_eq!(read_trim(&cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "50000");
    }
    // Every process warren started for the app is inside, in every hierarchy; warren is not.
    let family: Vec<u32> = support::descendants(w.pid())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(family.len() >= 3, "zygote and two workers: {family:?}");
    for d in &dirs {
        let inside = procs_in(d);
        for p in &family {
            assert!(inside.contains(p), "{p} not in {}: {inside:?}", d.display());
        }
        assert!(!inside.contains(&w.pid()), "warren itself is not confined");
    }
    let instances = instance_dirs(w.pid());
    w.stop();
    for d in instances {
        assert!(
            !d.exists(),
            "{} left behind after warren exited",
            d.display()
        );
    }
}

#[test]
fn groups_left_by_a_killed_warren_are_removed_by_the_next_one() {
    if !needs_root() {
        return;
    }
    let mut crashed = Warren::start(&hello_config(""));
    crashed.wait_workers("hello", 2);
    let left = instance_dirs(crashed.pid());
    crashed.kill();
    // SIGKILL gives warren no chance to clean up: its groups stay (the app's processes die
    // with it, by their parent-death signal).
    for d in &left {
        assert!(
            d.is_dir(),
            "{} should outlive a SIGKILLed warren",
            d.display()
        );
    }

    // A stale group of a warren that no longer exists, with a process still inside.
    let gone = {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let ghost_dirs: Vec<PathBuf> = instance_dirs(gone)
        .into_iter()
        .map(|d| d.join("ghost"))
        .collect();
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    for d in &ghost_dirs {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    }

    let next = Warren::start(&hello_config(""));
    next.wait_workers("hello", 2);
    for d in left.iter().chain(ghost_dirs.iter()) {
        assert!(
            !d.exists(),
            "{} survived the next warren's start; log:\n{}",
            d.display(),
            next.logs()
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || sleeper
            .try_wait()
            .ok()
            .flatten()
            .is_some()),
        "the process left in a stale group was not killed"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    for d in instance_dirs(gone) {
        assert!(!d.exists(), "{} left", d.display());
    }
    next.stop();
}

#[test]
fn an_app_allowed_threads_is_still_held_by_its_pids_limit() {
    if !needs_root() {
        return;
    }
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.threaded]
path = "{}"
entry = "app:application"
workers = 1

[apps.threaded.limits]
threads = true
pids = 24

[apps.hello]
path = "{}"
entry = "app:application"
workers = 1
"#,
        support::fixture("escape"),
        repo_root().join("examples/apps/hello").display()
    ));
    w.wait_workers("threaded", 1);
    w.wait_workers("hello", 1);
    // Threads start (the seccomp filter lets CLONE_THREAD through for this app)...
    let r = w.get("threaded.localhost", "/thread_bomb");
    r.assert_ok();
    let report = r.text();
    let started: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("started="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no started= in {report}"));
    // ...until pids.max: the zygote and the worker hold two of the 24.
    assert!(
        (1..=22).contains(&started),
        "{started} threads started under pids = 24:\n{report}"
    );
    assert!(report.contains("outcome=contained"), "{report}");
    assert!(report.contains("RuntimeError"), "{report}");
    w.get("threaded.localhost", "/ok").assert_ok();
    w.get("hello.localhost", "/").assert_ok();
    w.stop();
}
