//! The autoscaler with the real binary: an app at zero answers its first request (with its
//! zygote kept, and without), an idle app returns to zero, a burst raises the worker count
//! (read from `/metrics`) with no failed request, a machine-wide budget caps the workers of all
//! apps while each busy app keeps one, and `/metrics` speaks the Prometheus text format.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Client, Warren, fixture, scrape};

/// Starts warren with an admin address, and returns it with the admin address.
fn start(apps: &str, server: &str) -> (Warren, SocketAddr) {
    let w = Warren::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{server}\n{apps}"
    ));
    let admin = w.admin_addr();
    (w, admin)
}

fn metric(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no {key} in {:#?}", m.keys().collect::<Vec<_>>()))
}

fn workers(m: &BTreeMap<String, f64>, app: &str) -> f64 {
    ["busy", "idle", "starting"]
        .iter()
        .map(|s| {
            metric(
                m,
                &format!("warren_app_workers{{app=\"{app}\",state=\"{s}\"}}"),
            )
        })
        .sum()
}

fn wait_metric(
    admin: SocketAddr,
    w: &Warren,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = scrape(admin);
        if ok(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen; metrics: {m:#?}\nlog:\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scaled_app(name: &str, path: &str, scale: &str) -> String {
    format!(
        "[apps.{name}]\npath = \"{path}\"\nentry = \"app:application\"\n[apps.{name}.scale]\n{scale}\n"
    )
}

#[test]
fn an_app_at_zero_answers_its_first_request() {
    for keep in [true, false] {
        let apps = scaled_app(
            "lazy",
            &fixture("failures"),
            &format!("min = 0\nmax = 2\nkeep_zygote = {keep}"),
        );
        let (w, admin) = start(&apps, "");
        w.wait_for_log_line(Duration::from_secs(30), &["zygote ready", "lazy"]);
        if !keep {
            assert!(
                w.wait_for_log_line(Duration::from_secs(10), &["zygote stopped", "lazy"]),
                "{}",
                w.logs()
            );
        }
        let m = scrape(admin);
        assert_eq!(workers(&m, "lazy"), 0.0, "starts at zero");
        let r = w.get("lazy.localhost", "/hello");
        r.assert_ok();
        assert_eq!(r.text(), "hello");
        let m = scrape(admin);
        assert_eq!(
            metric(&m, "warren_app_start_from_zero_seconds_count{app=\"lazy\"}"),
            1.0,
            "the first request is counted as a start from zero"
        );
        assert!(metric(&m, "warren_app_spawns_total{app=\"lazy\"}") >= 1.0);
        if !keep {
            // The app was imported again for it.
            assert_eq!(
                w.log_lines(&["zygote ready", "lazy"]).len(),
                2,
                "{}",
                w.logs()
            );
        }
        w.stop();
    }
}

#[test]
fn an_idle_app_returns_to_zero() {
    let apps = scaled_app(
        "nap",
        &fixture("failures"),
        "min = 0\nmax = 3\nidle_timeout_s = 0.5\nstable_window_s = 2\npanic_window_s = 1",
    );
    let (w, admin) = start(&apps, "");
    for _ in 0..5 {
        w.get("nap.localhost", "/hello").assert_ok();
    }
    assert!(workers(&scrape(admin), "nap") >= 1.0);
    let m = wait_metric(admin, &w, "scale to zero", Duration::from_secs(20), |m| {
        workers(m, "nap") == 0.0
    });
    assert_eq!(metric(&m, "warren_app_target_workers{app=\"nap\"}"), 0.0);
    assert!(metric(&m, "warren_app_reaps_total{app=\"nap\"}") >= 1.0);
    // And back.
    w.get("nap.localhost", "/hello").assert_ok();
    w.stop();
}

/// Clients that keep requesting `path` of `host` until stopped; every status is kept.
struct Load {
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<Vec<u16>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(w: &Warren, host: &str, path: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, statuses) = (stop.clone(), statuses.clone());
                let mut c = w.client(host);
                let path = path.to_owned();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let r = c.get(&path);
                        statuses.lock().unwrap().push(r.status);
                    }
                })
            })
            .collect();
        Load {
            stop,
            statuses,
            threads,
        }
    }

    fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.statuses)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

#[test]
fn a_burst_raises_the_worker_count_with_no_failed_request() {
    let apps = scaled_app(
        "busy",
        &fixture("failures"),
        "min = 1\nmax = 6\ntarget_queue_wait_ms = 20",
    );
    let (w, admin) = start(&apps, "");
    w.wait_workers("busy", 1);
    let m = scrape(admin);
    assert_eq!(workers(&m, "busy"), 1.0);
    // The policy is exported for charts: min, max, the target wait, and the generation.
    for (series, want) in [
        ("warren_app_min_workers", 1.0),
        ("warren_app_max_workers", 6.0),
        ("warren_app_target_queue_wait_seconds", 0.02),
    ] {
        let got = metric(&m, &format!("{series}{{app=\"busy\"}}"));
        assert!((got - want).abs() < 1e-9, "{series}: {got}");
    }
    assert!(
        m.contains_key("warren_app_generation{app=\"busy\"}"),
        "{m:?}"
    );
    // 12 clients on a 50 ms handler: one worker serves 20 req/s, the clients ask for far more.
    let load = Load::start(&w, "busy.localhost", "/sleep?s=0.05", 12);
    let m = wait_metric(admin, &w, "scale up", Duration::from_secs(10), |m| {
        metric(m, "warren_app_target_workers{app=\"busy\"}") >= 4.0 && workers(m, "busy") >= 4.0
    });
    std::thread::sleep(Duration::from_millis(500));
    let statuses = load.finish();
    assert!(
        statuses.iter().all(|&s| s == 200),
        "failed requests: {:?}",
        statuses.iter().filter(|&&s| s != 200).collect::<Vec<_>>()
    );
    assert!(metric(&m, "warren_app_spawns_total{app=\"busy\"}") >= 4.0);
    assert!(
        w.log_lines(&["burst: scaling up", "busy"]).len() == 1,
        "{}",
        w.logs()
    );
    // Every response was counted by status.
    let m = scrape(admin);
    assert!(
        metric(
            &m,
            "warren_app_responses_total{app=\"busy\",status=\"200\"}"
        ) >= statuses.len() as f64
    );
    w.stop();
}

#[test]
fn a_machine_budget_caps_all_apps_and_each_busy_app_keeps_a_worker() {
    let scale = "min = 0\nmax = 6\ntarget_queue_wait_ms = 20";
    let apps = format!(
        "{}{}",
        scaled_app("a", &fixture("failures"), scale),
        scaled_app("b", &fixture("failures"), scale)
    );
    let (w, admin) = start(&apps, "max_workers = 4");
    let la = Load::start(&w, "a.localhost", "/sleep?s=0.05", 10);
    let lb = Load::start(&w, "b.localhost", "/sleep?s=0.05", 10);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut seen_both = false;
    while Instant::now() < deadline {
        let m = scrape(admin);
        let targets = metric(&m, "warren_app_target_workers{app=\"a\"}")
            + metric(&m, "warren_app_target_workers{app=\"b\"}");
        assert!(targets <= 4.0, "targets {targets} over the budget of 4");
        seen_both |= workers(&m, "a") >= 1.0 && workers(&m, "b") >= 1.0;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen_both, "each busy app had a worker");
    let (sa, sb) = (la.finish(), lb.finish());
    assert!(sa.iter().chain(&sb).all(|&s| s == 200));
    assert!(!sa.is_empty() && !sb.is_empty());
    w.stop();
}

#[test]
fn metrics_speak_the_prometheus_text_format() {
    let apps = format!(
        "[apps.hello]\npath = \"{}\"\nentry = \"app:application\"\nworkers = 2\n",
        fixture("failures")
    );
    let (w, admin) = start(&apps, "");
    w.wait_workers("hello", 2);
    for _ in 0..7 {
        w.get("hello.localhost", "/hello").assert_ok();
    }
    assert_eq!(w.get("hello.localhost", "/nope").status, 404);
    let mut c = Client::connect(admin, "127.0.0.1");
    let text = c.get("/metrics").text();
    // Every sample's metric has HELP and TYPE lines.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            text.contains(&format!("# TYPE {family} "))
                || text.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    let m = scrape(admin);
    assert_eq!(
        metric(
            &m,
            "warren_app_responses_total{app=\"hello\",status=\"200\"}"
        ),
        7.0
    );
    assert_eq!(
        metric(
            &m,
            "warren_app_responses_total{app=\"hello\",status=\"404\"}"
        ),
        1.0
    );
    // Buckets are cumulative and end in +Inf = count.
    let buckets: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with("warren_app_queue_wait_seconds_bucket{app=\"hello\""))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), 16);
    let count = metric(&m, "warren_app_queue_wait_seconds_count{app=\"hello\"}");
    assert_eq!(count, 8.0);
    assert!(buckets.iter().all(|&b| b <= count));
    assert_eq!(
        metric(
            &m,
            "warren_app_queue_wait_seconds_bucket{app=\"hello\",le=\"+Inf\"}"
        ),
        count
    );
    assert_eq!(workers(&m, "hello"), 2.0);
    assert!(metric(&m, "process_open_fds") > 0.0);
    assert!(metric(&m, "process_resident_memory_bytes") > 1e6);
    // Anything else is a 404.
    assert_eq!(c.get("/").status, 404);
    w.stop();
}

#[test]
fn a_warmup_request_runs_once_in_the_zygote_before_any_fork() {
    let apps = format!(
        "[apps.warm]\npath = \"{}\"\nentry = \"app:application\"\nworkers = 2\nwarmup = \"/hello?from=warren\"\n",
        fixture("failures")
    );
    let (w, _) = start(&apps, "");
    w.wait_workers("warm", 2);
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(5),
            &["warm-up GET /hello?from=warren: 200 OK"]
        ),
        "{}",
        w.logs()
    );
    // The worker inherited the zygote's state after the warm-up: its first request is the
    // app's second call.
    let r = w.get("warm.localhost", "/count");
    r.assert_ok();
    assert!(r.text().starts_with("2 "), "{}", r.text());
    w.stop();
}
