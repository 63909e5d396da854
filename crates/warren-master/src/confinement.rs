//! The master's side of confinement: what this kernel can enforce, each app's cgroup, and the
//! [`Policy`] its zygote is started with.
//!
//! `warren serve` probes the mechanisms once, before its async runtime starts
//! ([`Confinement::probe`]), and logs each as enforced / partial / not available. An app whose
//! sandbox needs a mechanism that is not fully available (one not listed in
//! `sandbox.optional`) is refused: it answers 503 with the reason, and the log says which
//! mechanism and why. So is an app whose `sandbox.writable` directory belongs to another uid
//! than the app's; a missing one (whose parent exists) is created for the app, mode 0700.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::sync::watch;
use tokio::time::Duration;

use warren_sandbox::cgroup::{AppCgroup, Cgroups, Limits};
use warren_sandbox::probe::{self, Finding, Status};
use warren_sandbox::{Mechanism, Policy};

use crate::app::AppState;

/// How often an app's cgroup is read back for throttling and OOM kills.
pub(crate) const USAGE_EVERY: Duration = Duration::from_secs(5);

/// What this machine enforces, and warren's cgroup hierarchy when it has one.
#[derive(Debug)]
pub struct Confinement {
    pub findings: Vec<Finding>,
    cgroups: Option<Cgroups>,
}

impl Confinement {
    /// Probes every mechanism. Call while the process is single-threaded.
    pub fn probe() -> Confinement {
        let mut findings = probe::probe_all();
        let mut cgroups = None;
        if let Some(f) = findings
            .iter_mut()
            .find(|f| f.mechanism == Mechanism::Cgroups && f.status != Status::NotAvailable)
        {
            // The probe looked; making warren's own groups can still fail. Then cgroups are
            // not available, for the log and for every app that requires them.
            match Cgroups::new() {
                Ok(cg) => cgroups = Some(cg),
                Err(e) => {
                    f.status = Status::NotAvailable;
                    f.detail = format!("making warren's groups: {e}");
                }
            }
        }
        if let Some(cg) = &cgroups {
            cg.weigh_parent();
        }
        Confinement { findings, cgroups }
    }

    /// No confinement at all (tests of the master alone).
    pub fn none() -> Confinement {
        Confinement {
            findings: Vec::new(),
            cgroups: None,
        }
    }

    fn unavailable(&self) -> Vec<Mechanism> {
        probe::unavailable(&self.findings)
    }

    /// Logs one line per mechanism.
    pub fn log(&self) {
        for f in &self.findings {
            match f.status {
                Status::Enforced => {
                    tracing::info!(mechanism = %f.mechanism, status = f.status.label(), "{}", f.detail)
                }
                _ => {
                    tracing::warn!(mechanism = %f.mechanism, status = f.status.label(), "{}", f.detail)
                }
            }
        }
    }

    /// Removes this warren's groups still there at shutdown.
    pub fn finish(&self) {
        if let Some(c) = &self.cgroups {
            c.remove_own_groups();
        }
    }
}

/// An app's confinement as its supervisor holds it.
pub(crate) struct AppSandbox {
    pub policy: Option<Policy>,
    pub cgroup: Option<Arc<AppCgroup>>,
    oom_seen: AtomicU64,
}

impl AppSandbox {
    /// The policy and cgroup of `app`, or why it must not start.
    pub fn prepare(app: &AppState, conf: &Confinement) -> Result<AppSandbox, String> {
        let cfg = &app.config;
        if !cfg.sandbox.enabled {
            tracing::warn!(
                app = app.name(),
                "sandbox.enabled = false: this app runs unconfined"
            );
            return Ok(AppSandbox {
                policy: None,
                cgroup: None,
                oom_seen: AtomicU64::new(0),
            });
        }
        let optional: Vec<Mechanism> = cfg
            .sandbox
            .optional
            .iter()
            .filter_map(|m| Mechanism::parse(m))
            .collect();
        let unavailable = conf.unavailable();
        let missing = missing(&conf.findings, &optional);
        let partial: Vec<Mechanism> = conf
            .findings
            .iter()
            .filter(|f| f.status == Status::Partial)
            .map(|f| f.mechanism)
            .collect();
        // (A partial mechanism the app does not list is in `missing`.)
        for m in partial.iter().filter(|m| optional.contains(m)) {
            tracing::warn!(
                app = app.name(),
                mechanism = m.name(),
                "partial on this machine; the app runs with what there is (sandbox.optional)"
            );
        }
        if !missing.is_empty() {
            return Err(format!(
                "its sandbox requires {}, which this machine does not fully provide; list what \
                 it may run without (or with in part) in sandbox.optional, or run `warren doctor`",
                missing.join(", ")
            ));
        }
        // Root inside the sandbox is the app's uid on the host; an unprivileged warren's user
        // namespace maps it to warren's own uid instead (see `confine::plan`).
        let host_uid = if nix::unistd::geteuid().is_root() {
            cfg.uid
        } else {
            nix::unistd::geteuid().as_raw()
        };
        for dir in &cfg.sandbox.writable {
            own_writable(app.name(), dir, host_uid)?;
        }
        let cgroup = match &conf.cgroups {
            None => None,
            Some(cgroups) => {
                let limits = Limits {
                    memory_bytes: cfg.limits.memory_bytes,
                    cpu_percent: cfg.limits.cpu_percent,
                    pids: cfg.limits.pids,
                    // Partial cgroups are cgroups without swap accounting (see `probe`).
                    cap_swap: !partial.contains(&Mechanism::Cgroups),
                };
                let group = cgroups
                    .create_app(&app.group_name(), limits)
                    .map_err(|e| format!("creating its cgroup: {e}"))?;
                let dir = |c: &str| {
                    group
                        .controller_dir(c)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                };
                tracing::info!(
                    app = app.name(),
                    version = cgroups.version(),
                    cpu_path = %dir("cpu"),
                    memory_path = %dir("memory"),
                    pids_path = %dir("pids"),
                    memory_mb = cfg.limits.memory_bytes >> 20,
                    cpu_percent = cfg.limits.cpu_percent,
                    pids = cfg.limits.pids,
                    "cgroup ready"
                );
                Some(Arc::new(group))
            }
        };
        let mut read_only = vec![cfg.path.clone()];
        if let Some(sp) = &cfg.site_packages {
            // The whole venv (…/lib/python3.X/site-packages → the venv), for .pth targets.
            read_only.push(sp.ancestors().nth(3).unwrap_or(sp).to_path_buf());
        }
        read_only.extend(cfg.sandbox.readable.iter().cloned());
        let policy = Policy {
            app: cfg.name.clone(),
            uid: cfg.uid,
            read_only,
            writable: cfg.sandbox.writable.clone(),
            tmp_bytes: cfg.limits.tmp_bytes,
            nofile: cfg.limits.nofile,
            fsize_bytes: cfg.limits.fsize_bytes,
            threads: cfg.limits.threads,
            python_guards: cfg.sandbox.python_guards,
            optional,
            unavailable,
        };
        Ok(AppSandbox {
            policy: Some(policy),
            cgroup,
            oom_seen: AtomicU64::new(0),
        })
    }

    /// The `cgroup.procs` files a zygote joins.
    pub fn procs_files(&self) -> Vec<std::path::PathBuf> {
        self.cgroup
            .as_ref()
            .map(|c| c.procs_files())
            .unwrap_or_default()
    }

    /// OOM kills since the last call (0 without a cgroup).
    pub fn new_oom_kills(&self) -> u64 {
        let Some(cg) = &self.cgroup else { return 0 };
        let now = cg.usage().oom_kills;
        now.saturating_sub(self.oom_seen.swap(now, Relaxed))
    }

    /// Removes the app's cgroup, killing what is left in it. Called once nothing else holds
    /// the group (its usage report has ended).
    pub fn finish(self) {
        let Some(cg) = self.cgroup else { return };
        match Arc::try_unwrap(cg) {
            Ok(cg) => cg.destroy(),
            Err(cg) => tracing::error!(
                cgroup = %cg.path(),
                "the app's cgroup is still in use: left until warren exits"
            ),
        }
    }
}

/// What to do about a writable directory that `owner` owns (`None`: it does not exist) for an
/// app whose processes run as `uid` on the host: `Ok(false)` use it, `Ok(true)` create it,
/// `Err` refuse the app, saying how to fix it.
fn writable_verdict(dir: &Path, owner: Option<u32>, uid: u32) -> Result<bool, String> {
    match owner {
        None => Ok(true),
        Some(o) if o == uid => Ok(false),
        Some(o) => Err(format!(
            "its writable directory {} belongs to uid {o}, not to the app's uid {uid}; give it \
             to the app with `chown -R {uid}:{uid} {}` (`warren check` shows each app's uid)",
            dir.display(),
            dir.display()
        )),
    }
}

/// Checks (or creates, mode 0700, owned by `uid`) one of the app's writable directories.
fn own_writable(app: &str, dir: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let owner = match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Some(m.uid()),
        Ok(_) => {
            return Err(format!(
                "its writable directory {} is not a directory",
                dir.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("its writable directory {}: {e}", dir.display())),
    };
    if writable_verdict(dir, owner, uid)? {
        // Not recursive: the parent exists (the config said so) and is not ours to create.
        // `lchown`: a name swapped for a symlink meanwhile gives nothing else away.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .and_then(|()| std::os::unix::fs::lchown(dir, Some(uid), Some(uid)))
            .map_err(|e| format!("creating its writable directory {}: {e}", dir.display()))?;
        tracing::info!(app, dir = %dir.display(), uid, "created the writable directory for the app");
    }
    Ok(())
}

/// What an app that may run without `optional` lacks on this machine, each with the probe's
/// reason: every mechanism not fully enforced (not available, or partial, as Landlock on a
/// kernel with an older ABI) that the app does not list.
fn missing(findings: &[Finding], optional: &[Mechanism]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.status != Status::Enforced && !optional.contains(&f.mechanism))
        .map(|f| format!("{} ({}: {})", f.mechanism, f.status.label(), f.detail))
        .collect()
}

/// Reads `cgroup`'s usage every few seconds and logs throttling, OOM kills and memory use
/// above 90% of the limit against the app, until shutdown.
pub(crate) async fn report_usage(
    app: Arc<AppState>,
    cgroup: Arc<AppCgroup>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = cgroup.usage();
    app.stats
        .cgroup
        .record(None, &last, app.successor().is_none());
    loop {
        tokio::select! {
            () = tokio::time::sleep(USAGE_EVERY) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = cgroup.usage();
        app.stats
            .cgroup
            .record(Some(&last), &now, app.successor().is_none());
        if now.nr_throttled > last.nr_throttled {
            tracing::warn!(
                app = app.name(),
                nr_throttled = now.nr_throttled - last.nr_throttled,
                throttled_ms = (now.throttled_us - last.throttled_us) / 1000,
                cpu_percent = app.config.limits.cpu_percent,
                "cpu quota reached: the app's processes were throttled"
            );
        }
        let limit = app.config.limits.memory_bytes;
        let high = |u: &warren_sandbox::cgroup::Usage| u.memory_bytes > limit / 10 * 9;
        if high(&now) && !high(&last) {
            tracing::warn!(
                app = app.name(),
                memory_mb = now.memory_bytes >> 20,
                limit_mb = limit >> 20,
                "memory use is above 90% of the app's limit"
            );
        }
        if now.oom_kills > last.oom_kills {
            tracing::warn!(
                app = app.name(),
                oom_kills = now.oom_kills - last.oom_kills,
                memory_mb = now.memory_bytes >> 20,
                limit_mb = app.config.limits.memory_bytes >> 20,
                "out of memory: the kernel killed processes of the app"
            );
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(mechanism: Mechanism, status: Status) -> Finding {
        Finding {
            mechanism,
            status,
            detail: format!("why {mechanism}"),
        }
    }

    #[test]
    fn a_writable_directory_is_the_app_s_or_created_for_it() {
        let check = |owner: Option<u32>, expected: Result<bool, &[&str]>| {
            let got = writable_verdict(Path::new("/srv/data"), owner, 200_000);
            match (got, expected) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{owner:?}"),
                (Err(msg), Err(needles)) => {
                    for n in needles {
                        assert!(msg.contains(n), "{msg:?} lacks {n:?}");
                    }
                }
                (got, want) => panic!("{owner:?}: got {got:?}, expected {want:?}"),
            }
        };
        check(Some(200_000), Ok(false));
        check(None, Ok(true));
        check(
            Some(0),
            Err(&[
                "/srv/data belongs to uid 0",
                "the app's uid 200000",
                "chown -R 200000:200000 /srv/data",
            ]),
        );
        check(Some(200_001), Err(&["uid 200001"]));
    }

    #[test]
    fn an_app_lacks_what_is_not_fully_enforced_unless_optional() {
        let findings = [
            finding(Mechanism::Cgroups, Status::NotAvailable),
            finding(Mechanism::Namespaces, Status::Enforced),
            finding(Mechanism::Landlock, Status::Partial),
            finding(Mechanism::Seccomp, Status::Enforced),
        ];
        assert_eq!(
            missing(&findings, &[]),
            [
                "cgroups (not available: why cgroups)",
                "landlock (partial: why landlock)"
            ]
        );
        assert_eq!(
            missing(&findings, &[Mechanism::Landlock]),
            ["cgroups (not available: why cgroups)"]
        );
        assert!(missing(&findings, &[Mechanism::Landlock, Mechanism::Cgroups]).is_empty());
        let enforced = [finding(Mechanism::Seccomp, Status::Enforced)];
        assert!(missing(&enforced, &[]).is_empty());
    }
}
