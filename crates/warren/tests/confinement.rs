//! Confinement seen from the host: what `warren doctor` reports, the cgroups warren makes (their
//! place, their limits, their removal, also after a crash), and the refusal to start an app
//! whose sandbox needs a mechanism the machine cannot give (shown by starting warren without
//! root, where cgroups are out of reach). The escape suite (`escape.rs`) proves the mechanisms
//! hold against app code.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{NOBODY, RunAs, Warren, needs_root, repo_root, tempdir};

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
    // Landlock needs no privilege: whatever the kernel gives root, it gives nobody.
    let (root_rows, root_text) = doctor(None);
    let landlock = |rows: &[(String, String, String)]| {
        rows.iter().find(|r| r.0 == "landlock").map(|r| r.1.clone())
    };
    assert_eq!(
        landlock(&rows),
        landlock(&root_rows),
        "Landlock as nobody:\n{text}\nas root:\n{root_text}"
    );
    for (name, status, detail) in &rows {
        match name.as_str() {
            // No root and no delegated v2 subtree: out of reach, and doctor says why.
            "cgroups" => {
                assert_eq!(status, "not available", "{text}");
                let reason = if cgroup_v2() {
                    "is not delegated to uid 65534"
                } else {
                    "needs root: cgroup v1 cannot be delegated"
                };
                assert!(detail.contains(reason), "the reason is named: {text}");
            }
            "landlock" => {}
            _ => {
                assert_eq!(status, "enforced", "{name} without root:\n{text}");
                assert!(!detail.is_empty(), "{name} has no detail:\n{text}");
            }
        }
    }
}

#[test]
fn an_app_that_requires_a_missing_mechanism_is_refused_with_the_reason() {
    if !needs_root() {
        return;
    }
    // warren as nobody: cgroups are not available, and the app does not list them as optional.
    let w = Warren::start_as(tempdir(), &hello_config(""), &[], RunAs::Uid(NOBODY));
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

/// Directories of warren's parent group: one per controller on v1, one on v2.
fn parent_dirs() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if cgroup_v2() {
        vec![root.join("warren")]
    } else {
        ["cpu", "memory", "pids"]
            .iter()
            .map(|c| root.join(c).join("warren"))
            .collect()
    }
}

/// Directories of the group of app `app` of warren `pid` (`warren/<pid>.<app>`), in the order
/// of [`parent_dirs`].
fn app_dirs(pid: u32, app: &str) -> Vec<PathBuf> {
    parent_dirs()
        .into_iter()
        .map(|d| d.join(format!("{pid}.{app}")))
        .collect()
}

/// The app names of warren `pid`'s groups in `parent` (a directory of warren's parent group),
/// sorted.
fn app_groups_in(parent: &Path, pid: u32) -> Vec<String> {
    let prefix = format!("{pid}.");
    let mut names: Vec<String> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            e.file_name()
                .into_string()
                .ok()?
                .strip_prefix(&prefix)
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Every directory of warren `pid`'s groups, in every hierarchy.
fn groups_of(pid: u32) -> Vec<PathBuf> {
    parent_dirs()
        .into_iter()
        .flat_map(|d| {
            app_groups_in(&d, pid)
                .into_iter()
                .map(move |app| d.join(format!("{pid}.{app}")))
        })
        .collect()
}

/// `(controllers, path)` for each line of `/proc/PID/cgroup` (`""` for the v2 line).
fn cgroup_lines(pid: u32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (names, path) = rest.split_once(':')?;
            Some((names.to_owned(), path.to_owned()))
        })
        .collect()
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
    let deadline = Instant::now() + support::slow(timeout);
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
    // The parent group outlives warren: set back to the default weight, it must be weighed again.
    let cpus = warren_sandbox::cgroup::cpus();
    let (weight, file) = warren_sandbox::cgroup::parent_weight(cpus, cgroup_v2());
    let default_weight = if cgroup_v2() { "100" } else { "1024" };
    let cpu_root = Path::new("/sys/fs/cgroup").join(if cgroup_v2() { "" } else { "cpu" });
    let _ = std::fs::write(cpu_root.join("warren").join(file), default_weight);
    let w = Warren::start(&hello_config(""));
    w.wait_workers("hello", 2);
    w.get("hello.localhost", "/").assert_ok();
    let dirs = app_dirs(w.pid(), "hello");
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
    // Where the front's threads are tasks of the root CPU cgroup, warren's parent group
    // outweighs each of them on every CPU; where the front has a cgroup of its own, the two keep
    // the default weight. The app groups keep the default weight among themselves.
    let own_cpu_cgroup = cgroup_lines(w.pid())
        .into_iter()
        .find_map(|(names, path)| {
            let cpu = if cgroup_v2() {
                names.is_empty()
            } else {
                names.split(',').any(|n| n == "cpu")
            };
            cpu.then_some(path)
        })
        .expect("warren's CPU cgroup");
    let expected = if own_cpu_cgroup == "/" {
        weight.to_string()
    } else {
        eprintln!("warren runs in the CPU cgroup {own_cpu_cgroup}: the parent keeps the default");
        default_weight.to_owned()
    };
    assert_eq!(read_trim(&cpu_root.join("warren").join(file)), expected);
    assert_eq!(read_trim(&dirs[0].join(file)), default_weight);
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
    // Only the controllers warren uses: a process in a group costs the kernel work at every
    // context switch in each hierarchy, and v1's `name=systemd` belongs to systemd.
    if cgroup_v2() {
        let enabled = read_trim(&parent_dirs()[0].join("cgroup.subtree_control"));
        let mut enabled: Vec<&str> = enabled.split_whitespace().collect();
        enabled.sort_unstable();
        assert_eq!(enabled, ["cpu", "memory", "pids"]);
    } else {
        let used = ["cpu", "memory", "pids", "freezer"];
        let own = cgroup_lines(w.pid());
        let app_group = format!("/warren/{}.hello", w.pid());
        // The `0::` line of a hybrid layout names no controller: it is not warren's to place.
        for p in &family {
            for (names, path) in cgroup_lines(*p).into_iter().filter(|(n, _)| !n.is_empty()) {
                if names.split(',').any(|n| used.contains(&n)) {
                    assert!(
                        path.ends_with(&app_group),
                        "{p}: {names} is {path}, not the app's group"
                    );
                } else {
                    let mine = own.iter().find(|(n, _)| *n == names).map(|(_, p)| p);
                    assert_eq!(Some(&path), mine, "{p}: {names} left as warren's own");
                }
            }
        }
    }
    let pid = w.pid();
    w.stop();
    let left = groups_of(pid);
    assert!(left.is_empty(), "left behind after warren exited: {left:?}");
}

/// The scheduling policy of `pid` (field 41 of `/proc/PID/stat`): 0 `SCHED_OTHER`, 3
/// `SCHED_BATCH`.
fn sched_policy(pid: u32) -> u32 {
    support::stat_fields(pid)
        .and_then(|f| f.get(41 - 3)?.parse().ok())
        .unwrap_or_else(|| panic!("no policy field in /proc/{pid}/stat"))
}

/// The scheduling policy of every thread of `pid` (`/proc/TID/stat` answers for a thread too).
fn thread_policies(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("warren's threads")
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .map(sched_policy)
        .collect()
}

#[test]
fn app_processes_run_sched_batch_unless_the_app_asks_for_normal() {
    if !needs_root() {
        return;
    }
    let hello = repo_root().join("examples/apps/hello");
    let hello = hello.display();
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.batch]
path = "{hello}"
entry = "app:application"
workers = 2

[apps.open]
path = "{hello}"
entry = "app:application"
workers = 2

[apps.open.sandbox]
enabled = false

[apps.normal]
path = "{hello}"
entry = "app:application"
workers = 2

[apps.normal.limits]
scheduling = "normal"
"#
    ));
    for app in ["batch", "open", "normal"] {
        w.wait_workers(app, 2);
        w.get(&format!("{app}.localhost"), "/").assert_ok();
    }
    let mut seen: Vec<(String, u32, u32)> = Vec::new();
    for (pid, cmd) in support::descendants(w.pid()) {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        let app = args
            .windows(2)
            .find(|a| a[0] == "--name")
            .map(|a| a[1].to_owned())
            .unwrap_or_else(|| panic!("{pid} is not an app's process: {cmd}"));
        seen.push((app, pid, sched_policy(pid)));
    }
    for (app, want) in [("batch", 3), ("open", 3), ("normal", 0)] {
        let procs: Vec<&(String, u32, u32)> = seen.iter().filter(|s| s.0 == app).collect();
        // The zygote (confined: also the namespace's parent) and the two workers.
        assert!(procs.len() >= 3, "{app}: {procs:?}");
        assert!(
            procs.iter().all(|p| p.2 == want),
            "{app}: every process has policy {want}: {procs:?}"
        );
    }
    // The front runs SCHED_BATCH too (`server.scheduling`), every thread of it, and the
    // "normal" app's processes were set back to SCHED_OTHER although a batch thread forked them.
    let front = thread_policies(w.pid());
    assert!(
        !front.is_empty() && front.iter().all(|&p| p == 3),
        "front threads' policies: {front:?}"
    );
    w.stop();
}

/// Needs no root: moving between `SCHED_BATCH` and `SCHED_OTHER` is unprivileged, and the app
/// runs unconfined.
#[test]
fn the_front_runs_sched_other_when_the_server_asks_for_normal() {
    // Started by a batch thread, warren inherits SCHED_BATCH: only its own setting can undo it.
    warren_sandbox::set_own_scheduling(true).unwrap();
    let hello = repo_root().join("examples/apps/hello");
    let hello = hello.display();
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
scheduling = "normal"

[apps.hello]
path = "{hello}"
entry = "app:application"
workers = 2

[apps.hello.sandbox]
enabled = false
"#
    ));
    w.wait_workers("hello", 2);
    w.get("hello.localhost", "/").assert_ok();
    let front = thread_policies(w.pid());
    assert!(
        !front.is_empty() && front.iter().all(|&p| p == 0),
        "front threads' policies: {front:?}"
    );
    // The app keeps its own default, batch.
    let apps: Vec<(u32, u32)> = support::descendants(w.pid())
        .into_iter()
        .map(|(pid, _)| (pid, sched_policy(pid)))
        .collect();
    assert!(apps.len() >= 3, "zygote and two workers: {apps:?}");
    assert!(apps.iter().all(|a| a.1 == 3), "app processes: {apps:?}");
    w.stop();
}

#[test]
fn an_unconfined_app_dies_with_a_killed_warren_too() {
    // No root needed: without the sandbox there is no cgroup and no namespace, and the zygote
    // and its workers must still not outlive warren.
    let mut crashed = Warren::start(&hello_config("[apps.hello.sandbox]\nenabled = false"));
    crashed.wait_workers("hello", 2);
    crashed.get("hello.localhost", "/").assert_ok();
    let family = support::descendants(crashed.pid());
    assert!(family.len() >= 3, "a zygote and two workers: {family:?}");
    let survivors = crashed.crash(support::slow(Duration::from_secs(10)));
    assert!(
        survivors.is_empty(),
        "outlived a SIGKILLed warren: {survivors:?} (of {family:?})"
    );
}

#[test]
fn groups_of_removed_apps_and_replaced_generations_go_while_warren_runs_on() {
    if !needs_root() {
        return;
    }
    let hello = repo_root().join("examples/apps/hello");
    let w = Warren::start(&hello_config(&format!(
        "\n[apps.gone]\npath = \"{}\"\nentry = \"app:application\"\nworkers = 1\n",
        hello.display()
    )));
    w.wait_workers("hello", 2);
    w.wait_workers("gone", 1);
    // This warren's app groups in each controller's hierarchy, by app name.
    let groups = || -> Vec<Vec<String>> {
        parent_dirs()
            .iter()
            .map(|d| app_groups_in(d, w.pid()))
            .collect()
    };
    for names in groups() {
        assert_eq!(names, ["gone", "hello"]);
    }
    // `gone` is removed; SIGHUP redeploys `hello` as a new generation (`hello@N`).
    std::fs::write(&w.config_path, hello_config("")).unwrap();
    w.hangup();
    assert!(
        w.wait_for_log_line(support::slow(Duration::from_secs(30)), &["reload done"]),
        "{}",
        w.logs()
    );
    let only_the_new_generation =
        |names: &Vec<String>| names.len() == 1 && names[0].starts_with("hello@");
    assert!(
        wait_until(support::slow(Duration::from_secs(15)), || groups()
            .iter()
            .all(only_the_new_generation)),
        "groups left after the reload: {:?}; log:\n{}",
        groups(),
        w.logs()
    );
    w.get("hello.localhost", "/").assert_ok();
    w.stop();
}

/// Starts warren with an app that takes a minute to import, kills warren while its zygote is
/// importing (past its confinement when `confined`: under seccomp), and returns the app's
/// processes that outlived it. Busy in the import, the zygote sees nothing of warren's death
/// but its parent-death signal.
fn survivors_of_a_crash_during_import(confined: bool) -> Vec<(u32, String)> {
    let app = tempdir();
    std::fs::write(
        app.path().join("app.py"),
        "import time\ntime.sleep(60)\n\ndef application(environ, start_response):\n    pass\n",
    )
    .unwrap();
    let mut w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.stuck]
path = "{}"
entry = "app:application"
workers = 1

[apps.stuck.sandbox]
enabled = {confined}
"#,
        app.path().display()
    ));
    let importing = || {
        support::descendants(w.pid()).into_iter().any(|(pid, _)| {
            !confined
                || std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .is_ok_and(|s| s.lines().any(|l| l == "Seccomp:\t2"))
        })
    };
    assert!(
        wait_until(support::slow(Duration::from_secs(10)), importing),
        "no zygote got to the import; log:\n{}",
        w.logs()
    );
    w.crash(support::slow(Duration::from_secs(10)))
}

#[test]
fn a_confined_zygote_busy_importing_dies_with_a_killed_warren() {
    if !needs_root() {
        return;
    }
    let left = survivors_of_a_crash_during_import(true);
    assert!(left.is_empty(), "outlived a SIGKILLed warren: {left:?}");
}

#[test]
fn an_unconfined_zygote_busy_importing_dies_with_a_killed_warren() {
    let left = survivors_of_a_crash_during_import(false);
    assert!(left.is_empty(), "outlived a SIGKILLed warren: {left:?}");
}

#[test]
fn groups_left_by_a_killed_warren_are_removed_by_the_next_one() {
    if !needs_root() {
        return;
    }
    let mut crashed = Warren::start(&hello_config(""));
    crashed.wait_workers("hello", 2);
    let left = groups_of(crashed.pid());
    assert!(!left.is_empty(), "the crashed warren had groups");
    let family = support::descendants(crashed.pid());
    assert!(family.len() >= 3, "a zygote and two workers: {family:?}");
    // SIGKILL to warren alone: the app's processes die with it, by their parent-death signals.
    let survivors = crashed.crash(support::slow(Duration::from_secs(10)));
    assert!(
        survivors.is_empty(),
        "outlived a SIGKILLed warren: {survivors:?} (of {family:?})"
    );
    // SIGKILL gives warren no chance to clean up: its groups stay.
    for d in &left {
        assert!(
            d.is_dir(),
            "{} should outlive a SIGKILLed warren",
            d.display()
        );
    }
    drop(crashed); // reaped: from now on its groups are stale

    // A stale group of a warren that no longer exists, with a process still inside.
    let gone = {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let ghost_dirs = app_dirs(gone, "ghost");
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    for d in &ghost_dirs {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    }
    // And one of the older layout, `warren/<pid>/<app>`.
    let old_layout: Vec<PathBuf> = parent_dirs()
        .into_iter()
        .map(|d| d.join(gone.to_string()))
        .collect();
    for d in &old_layout {
        std::fs::create_dir_all(d.join("ghost")).unwrap();
    }

    let next = Warren::start(&hello_config(""));
    next.wait_workers("hello", 2);
    for d in left.iter().chain(&ghost_dirs).chain(&old_layout) {
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
    let ghosts = groups_of(gone);
    assert!(ghosts.is_empty(), "left: {ghosts:?}");
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

// ---------------------------------------------------------------------------------------------
// Without root

/// Attacks of `tests/apps/escape` that every layer but cgroups answers: each must come back
/// `outcome=contained` from a warren that runs as `nobody`.
const UNPRIVILEGED_ATTACKS: &[&str] = &[
    "/self_check",
    "/fork_bomb",
    "/subprocess_run",
    "/os_system",
    "/clone3",
    "/unshare",
    "/mount",
    "/chroot",
    "/ptrace",
    "/bpf",
    "/memfd_exec",
    "/read_shadow",
    "/read_proc1_root",
    "/write_code",
    "/write_site_packages",
    "/raw_socket",
    "/kill_all",
    "/sethostname",
    "/fds",
    // Landlock's alone (the sandbox's own loopback would take the connection).
    "/tcp_in_sandbox",
];

fn escape_config(cgroups_optional: bool) -> String {
    let optional = if cgroups_optional {
        r#"optional = ["cgroups"]"#
    } else {
        ""
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.evil]
path = "{escape}"
entry = "app:application"
venv = "{venv}"
workers = 1

[apps.evil.limits]
memory_mb = 64
pids = 32

[apps.evil.sandbox]
python_guards = false
{optional}

[apps.good]
path = "{hello}"
entry = "app:application"
workers = 1

[apps.good.sandbox]
{optional}
"#,
        escape = support::fixture("escape"),
        venv = repo_root().join(".venv").display(),
        hello = repo_root().join("examples/apps/hello").display(),
    )
}

#[test]
fn metrics_show_each_confined_app_s_cgroup() {
    if !needs_root() {
        return;
    }
    let config = escape_config(false)
        .replacen(
            "listen = \"127.0.0.1:0\"\n",
            "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
            1,
        )
        .replacen("pids = 32\n", "pids = 32\ncpu_percent = 20\n", 1);
    let w = Warren::start(&config);
    w.wait_workers("evil", 1);
    w.wait_workers("good", 1);
    let admin = w.admin_addr();
    let series = |app: &str, name: &str| format!("{name}{{app=\"{app}\"}}");
    // Read when the app starts (before its zygote joined: about nothing), then every 5 s.
    let mut m = support::scrape(admin);
    let read = wait_until(support::slow(Duration::from_secs(10)), || {
        m = support::scrape(admin);
        ["evil", "good"].iter().all(|app| {
            m.get(&series(app, "warren_app_memory_bytes"))
                .is_some_and(|&b| b > 1e6)
        })
    });
    assert!(read, "no memory reading for both apps: {m:#?}");
    assert_eq!(
        m.get(&series("evil", "warren_app_oom_kills_total")),
        Some(&0.0),
        "{m:#?}"
    );
    // A spin past the 20% quota shows as throttling of that app alone.
    let good_throttled = |m: &BTreeMap<String, f64>| {
        m.get(&series("good", "warren_app_cpu_throttled_periods_total"))
            .copied()
    };
    let good_before = good_throttled(&m);
    let r = w.get("evil.localhost", "/cpu_spin?seconds=2");
    assert_eq!(r.status, 200, "{}", r.text());
    let throttled = wait_until(support::slow(Duration::from_secs(15)), || {
        m = support::scrape(admin);
        m.get(&series("evil", "warren_app_cpu_throttled_periods_total"))
            .is_some_and(|&n| n > 0.0)
            && m.get(&series("evil", "warren_app_cpu_throttled_seconds_total"))
                .is_some_and(|&s| s > 0.0)
    });
    assert!(throttled, "no throttling of evil in the metrics: {m:#?}");
    assert_eq!(
        good_throttled(&m),
        good_before,
        "the idle neighbour was throttled: {m:#?}"
    );
    w.stop();
}

#[test]
fn a_library_written_to_a_writable_directory_does_not_load() {
    if !needs_root() {
        return;
    }
    // Not there yet: warren creates it for the app, owned by the app's uid.
    let parent = tempdir();
    let dir = parent.path().join("writable");
    let config = escape_config(false).replacen(
        "python_guards = false\n",
        &format!(
            "python_guards = false\nwritable = [\"{}\"]\n",
            dir.display()
        ),
        1,
    );
    let w = Warren::start(&config);
    w.wait_workers("evil", 1);
    let r = w.get(
        "evil.localhost",
        &format!("/load_so_from_tmp?dir={}", dir.display()),
    );
    let report = r.text();
    assert_eq!(r.status, 200, "{report}");
    // Written there (the directory is writable), then refused by the mount's noexec.
    assert!(
        report.lines().any(|l| l == "outcome=contained")
            && report.lines().any(|l| l == "stage=dlopen"),
        "{report}"
    );
    w.stop();
}

/// Runs every attack of [`UNPRIVILEGED_ATTACKS`] on `evil`, with `good` asked after each.
fn assert_attacks_contained(w: &Warren) {
    for path in UNPRIVILEGED_ATTACKS {
        let r = w.get("evil.localhost", path);
        assert_eq!(
            r.status,
            200,
            "{path}: no report ({} {}); log:\n{}",
            r.status,
            r.text(),
            w.logs()
        );
        let report = r.text();
        assert!(
            report.lines().any(|l| l == "outcome=contained"),
            "{path} ESCAPED from an unprivileged warren:\n{report}"
        );
        w.get("good.localhost", "/").assert_ok();
    }
}

/// The host uid each of warren's descendants runs as (the real uid, from /proc).
fn host_uids(pid: u32) -> Vec<(u32, u32)> {
    support::descendants(pid)
        .into_iter()
        .filter_map(|(p, _)| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let uid = *support::status_ids(&status, "Uid:").first()?;
            Some((p, u32::try_from(uid).ok()?))
        })
        .collect()
}

#[test]
fn an_unprivileged_warren_confines_and_serves_its_apps() {
    if !needs_root() {
        return;
    }
    // No delegated cgroup: the apps run without cgroups (they say so), every other layer holds.
    let w = Warren::start_as(
        tempdir(),
        &escape_config(true),
        &[],
        RunAs::Unprivileged { delegated: None },
    );
    w.wait_workers("evil", 1);
    w.wait_workers("good", 1);
    let logs = w.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("mechanism=cgroups"))
        .unwrap_or_else(|| panic!("no cgroups line in the log:\n{logs}"));
    assert!(line.contains("not available"), "{line}");
    for m in ["namespaces", "seccomp", "rlimits"] {
        assert!(
            logs.lines()
                .any(|l| l.contains(&format!("mechanism={m}")) && l.contains("enforced")),
            "{m} is enforced without root:\n{logs}"
        );
    }
    w.get("good.localhost", "/").assert_ok();
    assert_eq!(w.get("good.localhost", "/").text(), "Hello, World!\n");
    assert_attacks_contained(&w);
    // Every process warren started runs as nobody on the host (root only inside its user
    // namespace).
    let uids = host_uids(w.pid());
    assert!(uids.len() >= 4, "two zygotes and two workers: {uids:?}");
    assert!(
        uids.iter().all(|&(_, uid)| uid == NOBODY),
        "every app process is nobody on the host: {uids:?}"
    );
    w.stop();
}

/// A cgroup v2 directory delegated to `nobody` the way systemd's `Delegate=yes` does it (the
/// directory and its `cgroup.procs`, `cgroup.subtree_control` and `cgroup.threads` owned by the
/// user, cpu, memory and pids enabled by its parent), under warren's own parent group; removed
/// with what is left in it when dropped.
struct DelegatedCgroup {
    dir: PathBuf,
}

impl DelegatedCgroup {
    fn new() -> DelegatedCgroup {
        let root = Path::new("/sys/fs/cgroup");
        let parent = root.join("warren");
        std::fs::write(root.join("cgroup.subtree_control"), "+cpu +memory +pids")
            .expect("enabling cpu, memory, pids at the root");
        std::fs::create_dir_all(&parent).expect("creating /sys/fs/cgroup/warren");
        std::fs::write(parent.join("cgroup.subtree_control"), "+cpu +memory +pids")
            .expect("enabling cpu, memory, pids under warren");
        let dir = parent.join(format!("delegated-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("creating the delegated cgroup");
        for p in [
            dir.clone(),
            dir.join("cgroup.procs"),
            dir.join("cgroup.subtree_control"),
            dir.join("cgroup.threads"),
        ] {
            std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY))
                .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        }
        DelegatedCgroup { dir }
    }

    /// Removes `dir` and everything below it, deepest first, killing what still runs there.
    fn remove(dir: &Path) {
        // cgroup v2 (this test's only host): `cgroup.kill` kills the whole subtree.
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                DelegatedCgroup::remove(&e.path());
            }
        }
        for _ in 0..100 {
            if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DelegatedCgroup {
    fn drop(&mut self) {
        DelegatedCgroup::remove(&self.dir);
    }
}

#[test]
fn an_unprivileged_warren_limits_its_apps_in_a_delegated_cgroup_v2() {
    if !needs_root() {
        return;
    }
    if !cgroup_v2() {
        // cgroup v1 has no delegation. `cgroup_v2_runs_in_a_v2_kernel` runs this test in a VM
        // booted with cgroup v2 only, in the same test run.
        eprintln!("cgroup v1 host: this test runs inside the cgroup v2 VM");
        return;
    }
    let delegated = DelegatedCgroup::new();
    // A delegated cgroup that holds another process (a shell, say) is not rearranged: doctor
    // says why, and nothing is moved.
    let mut other = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(delegated.dir.join("cgroup.procs"), other.id().to_string()).unwrap();
    let scratch = tempdir();
    let out = support::as_nobody(
        scratch.path(),
        Some(&delegated.dir),
        Path::new(env!("CARGO_BIN_EXE_warren")),
    )
    .arg("doctor")
    .output()
    .expect("warren doctor as nobody");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("cgroups"))
        .unwrap_or_else(|| panic!("no cgroups line:\n{text}"));
    assert!(
        line.contains("not available") && line.contains("holds other processes"),
        "{line}"
    );
    assert!(
        procs_in(&delegated.dir).contains(&other.id()),
        "the other process was moved"
    );
    assert!(!delegated.dir.join("supervisor").exists());
    let _ = other.kill();
    let _ = other.wait();

    let w = Warren::start_as(
        tempdir(),
        &escape_config(false),
        &[],
        RunAs::Unprivileged {
            delegated: Some(delegated.dir.clone()),
        },
    );
    w.wait_workers("evil", 1);
    w.wait_workers("good", 1);
    let rel = delegated.dir.strip_prefix("/sys/fs/cgroup").unwrap();
    let logs = w.logs();
    assert!(
        logs.lines().any(|l| l.contains("mechanism=cgroups")
            && l.contains("enforced")
            && l.contains(&format!("in the delegated cgroup /{}", rel.display()))),
        "cgroups are enforced in the delegated cgroup:\n{logs}"
    );
    // warren moved itself into the leaf, and made its groups beside it.
    let leaf = delegated.dir.join("supervisor");
    assert!(procs_in(&leaf).contains(&w.pid()), "warren is in {leaf:?}");
    let app = delegated.dir.join(format!("warren/{}.evil", w.pid()));
    assert_eq!(
        read_trim(&app.join("memory.max")),
        (64u64 << 20).to_string()
    );
    assert_eq!(read_trim(&app.join("memory.swap.max")), "0");
    assert_eq!(read_trim(&app.join("pids.max")), "32");
    let inside = procs_in(&app);
    assert!(inside.len() >= 2, "the zygote and its worker: {inside:?}");
    assert!(host_uids(w.pid()).iter().all(|&(_, uid)| uid == NOBODY));

    assert_attacks_contained(&w);
    // The memory limit holds: the hog is OOM-killed inside its group, and replaced.
    let r = w.get("evil.localhost", "/memory_hog");
    assert_eq!(r.status, 502, "the hog is killed: {}", r.text());
    let oom = read_trim(&app.join("memory.events"));
    assert!(
        oom.lines()
            .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n != "0")),
        "memory.events of {app:?}: {oom}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || w
            .get("evil.localhost", "/ok")
            .status
            == 200),
        "the app answers again after the OOM kill; log:\n{}",
        w.logs()
    );
    w.get("good.localhost", "/").assert_ok();

    let pid = w.pid();
    w.stop();
    let left = app_groups_in(&delegated.dir.join("warren"), pid);
    assert!(left.is_empty(), "left after warren exited: {left:?}");
}

/// On a cgroup v1 host, runs this whole file again inside a VM whose kernel mounts only cgroup
/// v2 (`scripts/vm/run`: Debian's kernel, this machine's file system), so the v2 code (limits
/// in `memory.max`, `cpu.max`, `pids.max`, `cgroup.kill`, `memory.events`, delegation to an
/// unprivileged warren) runs on a real v2 kernel in every test run. On a v2 host every test
/// above already ran on v2.
#[test]
fn cgroup_v2_runs_in_a_v2_kernel() {
    if !needs_root() {
        return;
    }
    if cgroup_v2() {
        eprintln!("cgroup v2 host: the tests of this file ran on v2 directly");
        return;
    }
    let exe = std::env::current_exe().expect("this test binary");
    // CI=1: in the guest (root) a test that would skip fails instead.
    let command = format!(
        "CI=1 WARREN_TEST_SLOWDOWN=6 {} --test-threads 2 --skip cgroup_v2_runs_in_a_v2_kernel 2>&1",
        exe.display()
    );
    let out = Command::new(repo_root().join("scripts/vm/run"))
        .arg(&command)
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/vm/run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the tests failed on cgroup v2 ({}):\n{text}",
        out.status
    );
    assert!(
        text.contains("controllers: ") && text.contains("cgroup cgroup2fs"),
        "the guest runs cgroup v2:\n{text}"
    );
    // Every test of this file ran in the guest, none was skipped there.
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("running ")?
                .strip_suffix(" tests")?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no test count in the guest's output:\n{text}"));
    assert!(
        text.contains(&format!("test result: ok. {total} passed")),
        "{text}"
    );
    // The guest's summary, for the log of this run.
    for line in text.lines().filter(|l| {
        l.starts_with("guest:") || l.starts_with("test ") || l.starts_with("test result")
    }) {
        eprintln!("{line}");
    }
}
