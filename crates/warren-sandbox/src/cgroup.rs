//! Per-app control groups through `cgroups-rs`, on cgroup v1 and v2.
//!
//! Layout: `<parent>/<instance>.<app>` in the hierarchies of the controllers warren uses (v1:
//! cpu, memory, pids and freezer, one directory each; v2: one directory with cpu, memory and
//! pids enabled), where `<instance>` is the pid of the `warren serve` that made it (app names
//! have no dot). Several warrens can run side by side (the test suite does); a warren that starts
//! removes the groups of warrens that are no longer running ([`Cgroups::clean_stale`]), so a
//! crash leaves nothing behind for long.
//!
//! The app groups sit directly under the parent, not in a group per instance: every level
//! between the front's cgroup and a worker's is one more scheduling entity the kernel enqueues,
//! dequeues and reweighs each time a request wakes the worker and its answer wakes the front.
//! Measured with two processes bouncing a byte over pipes on one CPU (cgroup v1, 6.18), against
//! 5.2 µs with both in the root group: a child one level down costs 0.67 µs more per round
//! trip, two levels 0.92, three 1.17.
//!
//! Where `<parent>` is ([`Placement`]):
//! - as root, `warren` at the top of each hierarchy;
//! - without root, on cgroup v2 only, inside the cgroup this process was started in, when that
//!   cgroup is delegated to its user (writable `cgroup.procs` and `cgroup.subtree_control`, as
//!   `systemd-run --user --scope -p Delegate=yes warren serve` gives) and warren is the only
//!   process in it. v2 lets a cgroup with processes enable no controller for its children, so
//!   warren first moves itself into the leaf `D/supervisor`, enables cpu, memory and pids in `D`,
//!   and makes its groups under `D/warren`. A cgroup that holds other processes (a terminal's
//!   scope, whose shell warren must not move) is refused with the reason. cgroup v1 has no delegation: without root it is not
//!   available, and [`Cgroups::new`] says why.
//!
//! Where the front's threads are tasks of the cgroup that holds the parent group, the parent
//! weighs [`PARENT_TASKS_PER_CPU`] tasks per CPU against them ([`parent_weight`] says why); each
//! app group keeps the default weight among its siblings.
//!
//! Limits are written with the controllers' own setters, each checked: cgroups-rs's
//! `apply(&Resources)` ignores a failed write, and a limit that silently did not apply is what
//! this module exists to prevent. A zygote joins its app's group itself, before it runs any app
//! code, by writing `0` to each `cgroup.procs` of [`AppCgroup::procs_files`] (see
//! `zygote_command`); workers forked from it are born inside.

use std::path::{Path, PathBuf};

use cgroups_rs::CgroupPid;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Controller, Hierarchy, MaxValue, hierarchies};

/// The parent group of everything warren creates (under a delegated cgroup, too).
pub const PARENT: &str = "warren";
/// The leaf a delegated cgroup's own processes are moved into (warren among them).
pub const SUPERVISOR: &str = "supervisor";
/// The controllers warren's limits need.
const NEEDED: [&str; 3] = ["cpu", "memory", "pids"];
/// cgroup v1 also has the freezer as a controller: [`kill_all`] stops a group with it.
const V1_FREEZER: &str = "freezer";
/// CFS period used for `cpu_percent` (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The CPU weight of warren's parent group, per CPU of the machine, in tasks of the default
/// weight (see [`parent_weight`]).
const PARENT_TASKS_PER_CPU: u64 = 4;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy is mounted at /sys/fs/cgroup")]
    NotMounted,
    #[error("{0}")]
    NotDelegated(String),
    #[error("cgroup {path}: {what}: {source}")]
    Write {
        path: String,
        what: &'static str,
        source: cgroups_rs::fs::error::Error,
    },
    #[error("cgroup {path}: the {controller} controller is not available")]
    Missing {
        path: String,
        controller: &'static str,
    },
}

/// An app's resource limits as the cgroup applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// Percent of one CPU (100 = one core, 200 = two).
    pub cpu_percent: u32,
    pub pids: u32,
    /// Swap capped too (at nothing beyond the memory limit). False only where the kernel does
    /// not account swap (cgroups "partial") and the app accepts that (`sandbox.optional`).
    pub cap_swap: bool,
}

/// What the master reads back from an app's group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_bytes: u64,
    pub oom_kills: u64,
    pub nr_throttled: u64,
    pub throttled_us: u64,
}

/// Where warren's groups live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `warren` at the top of each hierarchy (root).
    Top,
    /// Inside the delegated v2 cgroup at this path (relative to the v2 mount).
    Delegated(String),
}

/// The hierarchy warren uses on this machine.
pub struct Cgroups {
    placement: Placement,
    /// `warren` or `<delegated>/warren`.
    parent: String,
    /// This process's pid, the first part of its groups' names.
    instance: u32,
}

impl std::fmt::Debug for Cgroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroups")
            .field("placement", &self.placement)
            .field("instance", &self.instance)
            .field("v2", &hierarchies::is_cgroup2_unified_mode())
            .finish()
    }
}

fn hierarchy() -> Box<dyn Hierarchy> {
    hierarchies::auto()
}

impl Cgroups {
    /// Warren's groups for this process (`<parent>/<pid>.*`), after removing stale ones.
    /// Without root this places them in the delegated v2 cgroup warren runs in (see the module
    /// documentation), or fails with the reason there is none.
    pub fn new() -> Result<Cgroups, CgroupError> {
        let h = hierarchy();
        if !h.root().is_dir() {
            return Err(CgroupError::NotMounted);
        }
        let placement = if nix::unistd::geteuid().is_root() {
            Placement::Top
        } else if !h.v2() {
            return Err(CgroupError::NotDelegated(
                "needs root: cgroup v1 cannot be delegated to an unprivileged user (without \
                 root, warren uses a delegated cgroup v2 subtree)"
                    .into(),
            ));
        } else {
            Placement::Delegated(delegate(&h.root())?)
        };
        let parent = match &placement {
            Placement::Top => PARENT.to_owned(),
            Placement::Delegated(d) => format!("{d}/{PARENT}"),
        };
        let me = Cgroups {
            instance: std::process::id(),
            placement,
            parent,
        };
        me.clean_stale();
        Ok(me)
    }

    /// Gives warren's parent group the CPU weight of [`parent_weight`] when the front's threads
    /// are tasks of the cgroup that holds it (see there). `warren serve` calls it once at start;
    /// `warren doctor`, which only looks, does not. A failure costs speed, not confinement, so
    /// it is logged rather than fatal. The weight is shared by every warren on the machine
    /// (they all write the same value) and stays when warren exits.
    pub fn weigh_parent(&self) {
        let v2 = hierarchy().v2();
        let own = cgroups_rs::fs::cgroup::get_cgroups_relative_paths()
            .ok()
            .and_then(|m| m.get(if v2 { "" } else { "cpu" }).cloned())
            .unwrap_or_default();
        if !holds_front(&self.parent, &own) {
            tracing::debug!(
                cgroup = %self.parent,
                own_cpu_cgroup = %own,
                "warren's parent group keeps the default CPU weight: the front runs in a cgroup \
                 of its own, which competes with it group to group"
            );
            return;
        }
        let cpus = cpus();
        let (weight, _) = parent_weight(cpus, v2);
        if weight < parent_weight(1, v2).0 * cpus {
            tracing::info!(
                weight,
                cpus,
                "warren's parent group gets the kernel's highest CPU weight, less than four tasks \
                 per CPU on this many CPUs"
            );
        }
        let set = Cgroup::new_with_specified_controllers(hierarchy(), &self.parent, Some(used()))
            .map_err(|e| e.to_string())
            .and_then(|cg| {
                let cpu: &CpuController = cg
                    .controller_of()
                    .ok_or_else(|| "no cpu controller".to_owned())?;
                cpu.set_shares(weight).map_err(|e| e.to_string())
            });
        match set {
            Ok(()) => {
                tracing::debug!(cgroup = %self.parent, weight, "CPU weight of warren's parent group")
            }
            Err(error) => tracing::warn!(
                cgroup = %self.parent,
                weight,
                %error,
                "could not set the CPU weight of warren's parent group: apps compete with the \
                 front at the default weight"
            ),
        }
    }

    /// Where the groups are.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// `"v1"` or `"v2"`.
    pub fn version(&self) -> &'static str {
        if hierarchy().v2() { "v2" } else { "v1" }
    }

    /// Removes `warren/<pid>.<app>` groups whose warren is gone, killing what still runs in
    /// them; returns their paths.
    pub fn clean_stale(&self) -> Vec<String> {
        self.remove_groups_of(|pid| {
            !(Path::new(&format!("/proc/{pid}")).exists() && pid_is_warren(pid))
        })
    }

    /// Creates (or re-creates) `app`'s group with `limits`.
    pub fn create_app(&self, app: &str, limits: Limits) -> Result<AppCgroup, CgroupError> {
        let path = format!("{}/{}.{app}", self.parent, self.instance);
        destroy(&path);
        let cg = Cgroup::new_with_specified_controllers(hierarchy(), &path, Some(used())).map_err(
            |source| CgroupError::Write {
                path: path.clone(),
                what: "creating",
                source,
            },
        )?;
        let group = AppCgroup { cg, path };
        group.set_limits(limits)?;
        Ok(group)
    }

    /// Removes every group of this warren still there, with what runs in them (warren is
    /// exiting).
    pub fn remove_own_groups(&self) {
        self.remove_groups_of(|pid| pid == self.instance);
    }

    /// Removes the groups under the parent made by a warren whose pid `whose` picks, with what
    /// runs in them (and, for a `<pid>` group of the older layout, the app groups inside);
    /// returns their paths.
    fn remove_groups_of(&self, whose: impl Fn(u32) -> bool) -> Vec<String> {
        let mut removed = Vec::new();
        for name in children(&self.parent) {
            if instance_of(&name).is_some_and(&whose) {
                let group = format!("{}/{name}", self.parent);
                for app in children(&group) {
                    destroy(&format!("{group}/{app}"));
                }
                destroy(&group);
                removed.push(group);
            }
        }
        removed
    }
}

/// The pid of the warren that made the group named `name` (`<pid>.<app>`, or `<pid>` alone in
/// an older layout); `None` for a name of neither form.
fn instance_of(name: &str) -> Option<u32> {
    name.split_once('.')
        .map_or(name, |(pid, _)| pid)
        .parse()
        .ok()
}

/// This process's v2 cgroup (the `0::/path` line of `/proc/self/cgroup`), relative to the mount.
fn own_v2_cgroup() -> Result<String, CgroupError> {
    let paths = cgroups_rs::fs::cgroup::get_cgroups_relative_paths()
        .map_err(|e| CgroupError::NotDelegated(format!("reading /proc/self/cgroup: {e}")))?;
    paths
        .get("")
        .map(|p| p.trim_start_matches('/').to_owned())
        .ok_or_else(|| CgroupError::NotDelegated("/proc/self/cgroup has no cgroup v2 entry".into()))
}

fn writable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// Makes the delegated cgroup this process runs in ready for warren's groups and returns its
/// path (relative to the mount at `root`): its processes moved into `SUPERVISOR`, and cpu,
/// memory and pids enabled for its children. A process already in `<D>/supervisor` (a second
/// warren, or `warren doctor` started from a shell that one moved there) uses `D`.
fn delegate(root: &Path) -> Result<String, CgroupError> {
    let own = own_v2_cgroup()?;
    let uid = nix::unistd::geteuid();
    let d = match own.rsplit_once('/') {
        Some((parent, SUPERVISOR)) => parent.to_owned(),
        _ if own == SUPERVISOR => String::new(),
        _ => own,
    };
    let dir = root.join(&d);
    let shown = format!("/{d}");
    let files = ["cgroup.procs", "cgroup.subtree_control"];
    if d.is_empty() || !writable(&dir) || files.iter().any(|f| !writable(&dir.join(f))) {
        return Err(CgroupError::NotDelegated(format!(
            "not root, and this process's cgroup {shown} is not delegated to uid {uid} (cgroups \
             without root need a delegated cgroup v2 subtree: start warren with `systemd-run \
             --user --scope -p Delegate=yes`, or as root)"
        )));
    }
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let missing: Vec<&str> = NEEDED
        .into_iter()
        .filter(|c| !available.split_whitespace().any(|a| a == *c))
        .collect();
    if !missing.is_empty() {
        return Err(CgroupError::NotDelegated(format!(
            "the delegated cgroup {shown} lacks the {} controller(s) (its parent must enable \
             them, e.g. systemd's Delegate=yes)",
            missing.join(", ")
        )));
    }
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    if NEEDED
        .iter()
        .all(|c| enabled.split_whitespace().any(|e| e == *c))
    {
        return Ok(d);
    }
    // Only warren's own cgroup is rearranged: a writable cgroup that holds other processes is
    // not necessarily delegated (a user's terminal scope is writable by that user), and moving
    // a shell is not warren's business.
    let me = std::process::id().to_string();
    let others: Vec<String> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter(|p| *p != me)
        .map(str::to_owned)
        .collect();
    if !others.is_empty() {
        return Err(CgroupError::NotDelegated(format!(
            "not root, and the cgroup {shown} holds other processes than warren (pids {}): \
             start warren alone in a delegated cgroup (`systemd-run --user --scope -p \
             Delegate=yes warren serve ...`), or as root",
            others.join(", ")
        )));
    }
    // "No internal processes": vacate D into its leaf, then enable the controllers.
    let leaf = dir.join(SUPERVISOR);
    let fail =
        |what: String| CgroupError::NotDelegated(format!("delegated cgroup {shown}: {what}"));
    if let Err(e) = std::fs::create_dir(&leaf)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(fail(format!("creating {SUPERVISOR}: {e}")));
    }
    let control: String = NEEDED.iter().map(|c| format!("+{c} ")).collect();
    // A child warren forked in D while it moved keeps D busy: move again.
    let mut last = None;
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            match std::fs::write(leaf.join("cgroup.procs"), pid) {
                // A process that exited meanwhile.
                Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {}
                Err(e) => return Err(fail(format!("moving pid {pid} into {SUPERVISOR}: {e}"))),
                Ok(()) => {}
            }
        }
        match std::fs::write(dir.join("cgroup.subtree_control"), control.trim_end()) {
            Ok(()) => return Ok(d),
            Err(e) => {
                let busy = e.raw_os_error() == Some(nix::libc::EBUSY);
                last = Some(e);
                if !busy {
                    break;
                }
            }
        }
    }
    let e = last.map(|e| e.to_string()).unwrap_or_default();
    Err(fail(format!(
        "enabling {} for its children: {e}",
        NEEDED.join(", ")
    )))
}

/// Whether the front, in the CPU cgroup `own` (as `/proc/self/cgroup` gives it), is made of
/// tasks of the cgroup that holds `parent` (both relative to the mount).
fn holds_front(parent: &str, own: &str) -> bool {
    let holder = Path::new(parent).parent().unwrap_or(Path::new(""));
    Path::new(own.trim_matches('/')) == holder
}

/// The CPUs the apps' workers may run on: warren's affinity, which they inherit (not
/// `available_parallelism`, which also counts warren's own CPU quota, a limit the apps' groups
/// are outside of).
pub fn cpus() -> u64 {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&i| set.is_set(i).unwrap_or(false))
                .count() as u64
        })
        .unwrap_or(1)
        .max(1)
}

/// `(weight, file)` for warren's parent group on a machine with `cpus` CPUs: the weight of
/// [`PARENT_TASKS_PER_CPU`] default-weight tasks on every CPU (`cpu.shares`, 1024 a task, on
/// v1; `cpu.weight`, 100 a task, on v2; clamped to the kernel's range).
///
/// Where the front's threads are tasks of the cgroup that holds the parent group (as root with
/// warren in the root CPU cgroup, as a v1 host starts it), they compete with it thread by
/// thread, and a group's weight is divided among the CPUs its tasks run on. Whenever the
/// front's share of a CPU, `1 / (1 + parent tasks per CPU)`, is above what it uses, the
/// scheduler finds it owed CPU and gives it that CPU in short turns that cut into the worker's
/// requests. A Flask front uses about 30% of what it and the worker spend together, so the
/// parent must weigh more than two tasks per CPU (share 33%). Measured on Flask at 32
/// connections, the front and both workers on one CPU (tasks per CPU → the workers'
/// involuntary switches per request, throughput against unconfined workers): one → 1.52, 0.76;
/// two → 0.65, 0.89; four → 0.04, 1.07; sixteen → 0.00, 1.08. Four leave the front a fifth of
/// each CPU that busy apps fill, enough to keep them fed; when they are not busy the weight
/// changes nothing. At one connection the weight alone costs (a worker preempted as it sends
/// its response runs again before the client and sleeps once more for nothing); the front's
/// `SCHED_BATCH` (`server.scheduling`) takes that preemption away (see the README).
///
/// Between apps nothing changes: each app group keeps the default weight, and its CPU quota
/// still caps it. Where the front runs in a cgroup of its own (a delegated subtree's
/// `supervisor`, a systemd unit) the two compete group to group, and the default weight is
/// left. `cpu.weight` tops out at 10,000: above 25 CPUs the group weighs less than four tasks
/// per CPU.
pub fn parent_weight(cpus: u64, v2: bool) -> (u64, &'static str) {
    let (task, max, file) = if v2 {
        (100, 10_000, "cpu.weight")
    } else {
        (1024, 262_144, "cpu.shares")
    };
    ((task * PARENT_TASKS_PER_CPU * cpus.max(1)).min(max), file)
}

/// Whether `pid` runs a `warren` binary (so that a reused pid is not mistaken for a live warren).
fn pid_is_warren(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "warren")
}

/// The controllers an app's group is made in: [`NEEDED`], and on v1 the freezer. Not every
/// hierarchy mounted: a process in a group costs the kernel work in each of them at every
/// context switch (cpuacct's charge walks up its tree), and on a v1 host `name=systemd` is
/// systemd's own. Groups are still looked for and removed in every hierarchy.
fn used() -> Vec<String> {
    let mut names: Vec<String> = NEEDED.iter().map(|c| (*c).to_owned()).collect();
    if !hierarchy().v2() {
        names.push(V1_FREEZER.to_owned());
    }
    names
}

fn hierarchy_dirs() -> Vec<PathBuf> {
    let h = hierarchy();
    if h.v2() {
        vec![h.root()]
    } else {
        // Each controller's mount point: its path with the group part (none here) removed.
        h.subsystems()
            .iter()
            .map(|s| s.to_controller().path().to_path_buf())
            .collect()
    }
}

/// The names of the groups in the group at `path`, in any hierarchy (each once).
fn children(path: &str) -> Vec<String> {
    let mut names: Vec<String> = hierarchy_dirs()
        .iter()
        .filter_map(|base| std::fs::read_dir(base.join(path)).ok())
        .flat_map(|it| {
            it.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Kills everything in the group at `path` and removes it (best effort, bounded).
fn destroy(path: &str) {
    let cg = Cgroup::load(hierarchy(), path);
    if !cg.exists() {
        return;
    }
    kill_all(&cg);
    // Killed processes leave the group within milliseconds; give them up to two seconds.
    for _ in 0..200 {
        if cg.delete().is_ok() && !cg.exists() {
            return;
        }
        if !cg.procs().is_empty() {
            kill_all(&cg);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    tracing::warn!(
        cgroup = path,
        "could not remove the cgroup: processes remain in it"
    );
}

/// v2 has `cgroup.kill` (Linux 5.14+); otherwise freeze (where the freezer is), SIGKILL every
/// process, thaw.
fn kill_all(cg: &Cgroup) {
    if cg.v2() && cg.kill().is_ok() {
        return;
    }
    let freezer: Option<&FreezerController> = cg.controller_of();
    if let Some(f) = freezer {
        let _ = f.freeze();
    }
    for pid in cg.procs() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if let Some(f) = freezer {
        let _ = f.thaw();
    }
}

/// One app's group.
pub struct AppCgroup {
    cg: Cgroup,
    path: String,
}

impl std::fmt::Debug for AppCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCgroup")
            .field("path", &self.path)
            .finish()
    }
}

impl AppCgroup {
    fn write_err(
        &self,
        what: &'static str,
    ) -> impl FnOnce(cgroups_rs::fs::error::Error) -> CgroupError {
        let path = self.path.clone();
        move |source| CgroupError::Write { path, what, source }
    }

    fn missing(&self, controller: &'static str) -> CgroupError {
        CgroupError::Missing {
            path: self.path.clone(),
            controller,
        }
    }

    fn set_limits(&self, l: Limits) -> Result<(), CgroupError> {
        let mem: &MemController = self
            .cg
            .controller_of()
            .ok_or_else(|| self.missing("memory"))?;
        let bytes = i64::try_from(l.memory_bytes).unwrap_or(i64::MAX);
        mem.set_limit(bytes)
            .map_err(self.write_err("memory limit"))?;
        // Swap included: memsw on v1 (limit + swap), memory.swap.max on v2 (swap alone) = 0.
        if l.cap_swap {
            let swap = if self.cg.v2() { 0 } else { bytes };
            mem.set_memswap_limit(swap)
                .map_err(self.write_err("memory+swap limit"))?;
        }

        let pids: &PidController = self
            .cg
            .controller_of()
            .ok_or_else(|| self.missing("pids"))?;
        pids.set_pid_max(MaxValue::Value(i64::from(l.pids)))
            .map_err(self.write_err("pids.max"))?;

        let cpu: &CpuController = self.cg.controller_of().ok_or_else(|| self.missing("cpu"))?;
        let quota = i64::from(l.cpu_percent) * CPU_PERIOD_US as i64 / 100;
        cpu.set_cfs_quota_and_period(Some(quota), Some(CPU_PERIOD_US))
            .map_err(self.write_err("cpu quota"))?;
        Ok(())
    }

    /// `warren/<pid>.<app>`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The directory of one controller (`"cpu"`, `"memory"`, `"pids"`), for logs and tests.
    pub fn controller_dir(&self, name: &str) -> Option<PathBuf> {
        self.cg
            .subsystems()
            .iter()
            .find(|s| self.cg.v2() || s.controller_name() == name)
            .map(|s| s.to_controller().path().to_path_buf())
    }

    /// Every `cgroup.procs` file a process must be written into to be inside on all
    /// hierarchies.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .cg
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().join("cgroup.procs"))
            .filter(|p| p.exists())
            .collect();
        files.sort();
        files.dedup();
        files
    }

    /// Memory in use, OOM kills, and CPU throttling so far.
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        if let Some(mem) = self.cg.controller_of::<MemController>() {
            let stat = mem.memory_stat();
            u.memory_bytes = stat.usage_in_bytes;
            u.oom_kills = if self.cg.v2() {
                read_key(&mem.path().join("memory.events"), "oom_kill")
            } else {
                stat.oom_control.oom_kill
            };
        }
        if let Some(cpu) = self.cg.controller_of::<CpuController>() {
            let stat = cpu.cpu().stat;
            let key = |k: &str| {
                stat.lines()
                    .find_map(|l| {
                        l.strip_prefix(k)
                            .map(|v| v.trim().parse::<u64>().unwrap_or(0))
                    })
                    .unwrap_or(0)
            };
            u.nr_throttled = key("nr_throttled ");
            // v1 reports nanoseconds, v2 microseconds.
            u.throttled_us = if self.cg.v2() {
                key("throttled_usec ")
            } else {
                key("throttled_time ") / 1000
            };
        }
        u
    }

    /// Pids currently in the group.
    pub fn procs(&self) -> Vec<u64> {
        self.cg
            .procs()
            .into_iter()
            .map(|p: CgroupPid| p.pid)
            .collect()
    }

    /// Kills whatever runs in the group and removes it.
    pub fn destroy(self) {
        destroy(&self.path);
    }
}

fn read_key(file: &Path, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_weighs_four_tasks_per_cpu_within_the_kernels_range() {
        assert_eq!(parent_weight(1, false), (4096, "cpu.shares"));
        assert_eq!(parent_weight(2, false), (8192, "cpu.shares"));
        assert_eq!(parent_weight(2, true), (800, "cpu.weight"));
        assert_eq!(parent_weight(0, true), (400, "cpu.weight"));
        assert_eq!(parent_weight(512, true), (10_000, "cpu.weight"));
        assert_eq!(parent_weight(512, false), (262_144, "cpu.shares"));
    }

    #[test]
    fn a_group_names_the_warren_that_made_it() {
        assert_eq!(instance_of("123.hello"), Some(123));
        assert_eq!(instance_of("123.hello@2"), Some(123));
        assert_eq!(instance_of("123"), Some(123));
        assert_eq!(instance_of("supervisor"), None);
        assert_eq!(instance_of("x.123"), None);
    }

    #[test]
    fn only_a_front_in_the_holding_cgroup_gets_the_parent_weighed() {
        assert!(holds_front("warren", "/"));
        // Delegated: warren in D/supervisor, its groups in D/warren.
        assert!(!holds_front(
            "user.slice/d/warren",
            "/user.slice/d/supervisor"
        ));
        assert!(holds_front("user.slice/d/warren", "/user.slice/d"));
        // A systemd unit beside warren/ at the top.
        assert!(!holds_front("warren", "/system.slice/warren.service"));
    }
}
