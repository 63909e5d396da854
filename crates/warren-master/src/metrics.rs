//! `/metrics`: every app's queue, workers and counters, and warren's own process, in the
//! Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::time::Instant;

use crate::app::AppState;
use crate::stats::{BUCKETS, CgroupReading, HistSnapshot};

/// A counter family: name, help, and how to read it from an app.
type Counter = (&'static str, &'static str, fn(&AppState) -> u64);
/// A family read from an app's cgroup: name, type, help, and how to read it.
type Reading = (
    &'static str,
    &'static str,
    String,
    fn(&CgroupReading) -> f64,
);
/// A gauge of the app's policy: name, help, and its value (`None`: no sample for that app).
type PolicyGauge = (&'static str, &'static str, fn(&AppState) -> Option<f64>);
/// A histogram family: name, help, and how to read it from an app.
type Hist = (&'static str, &'static str, fn(&AppState) -> HistSnapshot);

/// Renders the metrics of `apps` (the generations serving) and of this process, and the state
/// of the apps `removed` (still draining) and `refused` (by the config).
pub fn render(apps: &[Arc<AppState>], removed: &[Arc<AppState>], refused: &[String]) -> String {
    let mut out = String::with_capacity(4096 + apps.len() * 4096);
    let now = Instant::now();
    let censuses: Vec<_> = apps.iter().map(|a| a.census(now)).collect();

    header(
        &mut out,
        "warren_app_state",
        "gauge",
        "The app's state: 1 for the current one, 0 for the others (starting: importing; \
         serving; at_zero: no worker, scaled to zero; crash_loop: failing, 503 until its \
         back-off ends; draining: removed, finishing its requests; refused: it cannot run as \
         configured).",
    );
    let states = apps
        .iter()
        .map(|a| (a.name(), a.state()))
        .chain(removed.iter().map(|a| (a.name(), "draining")))
        .chain(refused.iter().map(|n| (n.as_str(), "refused")));
    for (app, current) in states {
        for state in crate::app::STATES {
            let _ = writeln!(
                out,
                "warren_app_state{{app=\"{app}\",state=\"{state}\"}} {}",
                u8::from(state == current)
            );
        }
    }

    header(
        &mut out,
        "warren_app_queue_length",
        "gauge",
        "Requests waiting in the app's queue.",
    );
    for app in apps {
        let _ = writeln!(
            out,
            "warren_app_queue_length{{app=\"{}\"}} {}",
            app.name(),
            app.queue_len()
        );
    }
    header(
        &mut out,
        "warren_app_workers",
        "gauge",
        "Workers of the app by state (busy: running a request; starting: forked, not ready).",
    );
    for (app, (live, idle, starting, _)) in apps.iter().zip(&censuses) {
        let busy = live.saturating_sub(idle + starting);
        for (state, n) in [("busy", busy), ("idle", *idle), ("starting", *starting)] {
            let _ = writeln!(
                out,
                "warren_app_workers{{app=\"{}\",state=\"{state}\"}} {n}",
                app.name()
            );
        }
    }
    header(
        &mut out,
        "warren_app_target_workers",
        "gauge",
        "Workers the autoscaler asks the app to have.",
    );
    for app in apps {
        let _ = writeln!(
            out,
            "warren_app_target_workers{{app=\"{}\"}} {}",
            app.name(),
            app.target()
        );
    }
    // The policy the autoscaler works to, and the generation serving, so that a chart of the
    // above (the lab's) can draw what the app is aiming at and mark redeploys.
    let policy: [PolicyGauge; 4] = [
        (
            "warren_app_min_workers",
            "Fewest workers of the app (scale.min, or its fixed workers).",
            |a| Some(a.config.scale.min as f64),
        ),
        (
            "warren_app_max_workers",
            "Most workers of the app (scale.max, or its fixed workers).",
            |a| Some(a.config.scale.max as f64),
        ),
        (
            "warren_app_target_queue_wait_seconds",
            "The queue wait the autoscaler aims to stay under (autoscaled apps only).",
            |a| {
                let s = &a.config.scale;
                (!s.is_fixed()).then_some(s.target_queue_wait.as_secs_f64())
            },
        ),
        (
            "warren_app_generation",
            "The generation serving the app: it changes at each redeploy (reload).",
            |a| Some(f64::from(a.generation)),
        ),
    ];
    for (name, help, get) in policy {
        header(&mut out, name, "gauge", help);
        for app in apps {
            if let Some(v) = get(app) {
                let _ = writeln!(out, "{name}{{app=\"{}\"}} {v}", app.name());
            }
        }
    }
    let counters: [Counter; 6] = [
        ("warren_app_spawns_total", "Workers forked.", |a| {
            a.stats.spawned.load(Relaxed)
        }),
        (
            "warren_app_reaps_total",
            "Idle workers retired by the autoscaler.",
            |a| a.stats.reaped.load(Relaxed),
        ),
        (
            "warren_app_recycled_total",
            "Workers retired after max_requests or max_worker_rss_mb.",
            |a| a.stats.recycled.load(Relaxed),
        ),
        (
            "warren_app_timeouts_total",
            "Workers killed for running a request past request_timeout_s.",
            |a| a.stats.timed_out.load(Relaxed),
        ),
        (
            "warren_app_worker_exits_total",
            "Worker processes that exited.",
            |a| a.stats.exited.load(Relaxed),
        ),
        (
            "warren_app_served_total",
            "Requests a worker answered.",
            |a| a.stats.served.load(Relaxed),
        ),
    ];
    for (name, help, get) in counters {
        header(&mut out, name, "counter", help);
        for app in apps {
            let _ = writeln!(out, "{name}{{app=\"{}\"}} {}", app.name(), get(app));
        }
    }
    header(
        &mut out,
        "warren_app_responses_total",
        "counter",
        "Responses sent for the app, by status code (the app's own and warren's 5xx).",
    );
    for app in apps {
        for (status, n) in app.stats.responses() {
            let _ = writeln!(
                out,
                "warren_app_responses_total{{app=\"{}\",status=\"{status}\"}} {n}",
                app.name()
            );
        }
    }
    let histograms: [Hist; 4] = [
        (
            "warren_app_request_duration_seconds",
            "Dispatch to a worker to the response head (or the failure), per request.",
            |a| a.stats.request_duration.snapshot(),
        ),
        (
            "warren_app_queue_wait_seconds",
            "Time dispatched requests waited in the queue (0 when a worker was idle).",
            |a| a.stats.queue_wait.snapshot(),
        ),
        (
            "warren_app_cold_start_seconds",
            "Arrival to dispatch of requests that found no idle worker.",
            |a| a.stats.cold_start.snapshot(),
        ),
        (
            "warren_app_start_from_zero_seconds",
            "Arrival to dispatch of requests that found the app with no worker at all.",
            |a| a.stats.from_zero.snapshot(),
        ),
    ];
    for (name, help, get) in histograms {
        header(&mut out, name, "histogram", help);
        for app in apps {
            histogram(&mut out, name, app.name(), &get(app));
        }
    }
    cgroups(&mut out, apps);
    process(&mut out);
    out
}

/// The last reading of each app's cgroup (apps without one are left out).
fn cgroups(out: &mut String, apps: &[Arc<AppState>]) {
    let read: Vec<&Arc<AppState>> = apps
        .iter()
        .filter(|a| a.stats.cgroup.has_reading.load(Relaxed))
        .collect();
    if read.is_empty() {
        return;
    }
    let every = crate::confinement::USAGE_EVERY.as_secs();
    let period_ms = warren_sandbox::cgroup::CPU_PERIOD_US / 1000;
    let families: [Reading; 4] = [
        (
            "warren_app_memory_bytes",
            "gauge",
            format!(
                "Memory charged to the app's cgroup (its processes, page cache included), read \
                 every {every} s."
            ),
            |c| c.memory_bytes.load(Relaxed) as f64,
        ),
        (
            "warren_app_oom_kills_total",
            "counter",
            "Processes of the app the kernel killed for going over its memory limit.".into(),
            |c| c.oom_kills.load(Relaxed) as f64,
        ),
        (
            "warren_app_cpu_throttled_periods_total",
            "counter",
            format!("CPU quota periods ({period_ms} ms) in which the app used up its cpu_percent."),
            |c| c.nr_throttled.load(Relaxed) as f64,
        ),
        (
            "warren_app_cpu_throttled_seconds_total",
            "counter",
            "Time the app's processes waited for the next period, quota used up.".into(),
            |c| c.throttled_us.load(Relaxed) as f64 / 1e6,
        ),
    ];
    for (name, kind, help, get) in families {
        header(out, name, kind, &help);
        for app in &read {
            let _ = writeln!(
                out,
                "{name}{{app=\"{}\"}} {}",
                app.name(),
                get(&app.stats.cgroup)
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, app: &str, h: &HistSnapshot) {
    let mut cumulative = 0;
    for (i, c) in h.counts.iter().enumerate() {
        cumulative += c;
        let le = BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(
            out,
            "{name}_bucket{{app=\"{app}\",le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_sum{{app=\"{app}\"}} {}\n{name}_count{{app=\"{app}\"}} {cumulative}",
        h.sum_us as f64 / 1e6
    );
}

/// The standard process metrics, from `/proc/self`.
fn process(out: &mut String) {
    let cpu = crate::procfs::cpu_seconds("self").unwrap_or(0.0);
    let rss = crate::procfs::resident_bytes("self").unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    header(
        out,
        "process_cpu_seconds_total",
        "counter",
        "CPU time of warren itself.",
    );
    let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
    header(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of warren itself.",
    );
    let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    header(
        out,
        "process_open_fds",
        "gauge",
        "Open file descriptors of warren itself.",
    );
    let _ = writeln!(out, "process_open_fds {fds}");
}
