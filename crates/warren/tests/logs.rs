//! What warren logs and counts for a person to use: the access log line (and
//! `server.access_log = false`), an app's traceback as one event at ERROR, an import failure
//! that repeats logged in full once, app lines in the shape of a logging record at their level,
//! response header values without the spaces around them, and in `/metrics` counters that go
//! on across a SIGHUP redeploy, the request-duration histogram and the state gauge.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{Warren, fixture, scrape, tempdir};

const HOST: &str = "logs.localhost";

fn config(server: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{server}\n\n\
         [apps.logs]\npath = \"{}\"\nentry = \"app:application\"\nworkers = 1\n",
        fixture("logs")
    )
}

fn wait_log(w: &Warren, needles: &[&str]) -> String {
    assert!(
        w.wait_for_log_line(Duration::from_secs(20), needles),
        "no log line with {needles:?}; log:\n{}",
        w.logs()
    );
    w.log_lines(needles).remove(0)
}

#[test]
fn each_request_has_an_access_log_line_with_its_fields() {
    let w = Warren::start(&config(""));
    let r = w.get(HOST, "/hello");
    r.assert_ok();
    let id = r.header("x-request-id").expect("x-request-id").to_owned();
    let line = wait_log(&w, &["access:", &format!("request_id={id}")]);
    for field in [
        " INFO ",
        "app=\"logs\"",
        "host=\"logs.localhost\"",
        "method=GET",
        "path=\"/hello\"",
        "status=200",
        "bytes=5",
        "duration_us=",
        "remote=127.0.0.1:",
    ] {
        assert!(line.contains(field), "{field:?} missing from {line:?}");
    }
    // A streamed body of unknown length: no bytes field (they are not known at the head).
    let r = w.get(HOST, "/stream");
    r.assert_ok();
    let id = r.header("x-request-id").unwrap().to_owned();
    let line = wait_log(&w, &["access:", &format!("request_id={id}")]);
    assert!(
        line.contains("path=\"/stream\"") && !line.contains("bytes="),
        "{line}"
    );
    // A host no app serves is logged too, without an app.
    let r = w.get("nobody.localhost", "/");
    assert_eq!(r.status, 404);
    let id = r.header("x-request-id").unwrap().to_owned();
    let line = wait_log(&w, &["access:", &format!("request_id={id}")]);
    assert!(
        line.contains("status=404") && !line.contains("app="),
        "{line}"
    );
    w.stop();
}

#[test]
fn access_log_false_turns_the_line_off() {
    let w = Warren::start(&config("access_log = false"));
    w.get(HOST, "/hello").assert_ok();
    // The app's own output comes after the request's end: once it is in the log, an access
    // line would be too.
    w.get(HOST, "/levels").assert_ok();
    wait_log(&w, &["marker-info-line"]);
    std::thread::sleep(Duration::from_millis(200));
    let access = w.log_lines(&["access:"]);
    assert!(access.is_empty(), "{access:#?}");
    w.stop();
}

#[test]
fn a_traceback_is_one_event_at_error() {
    let w = Warren::start(&config(""));
    assert_eq!(w.get(HOST, "/raise").status, 500);
    let line = wait_log(&w, &["ZeroDivisionError"]);
    for part in [
        " ERROR app: ZeroDivisionError: integer division or modulo by zero",
        "app=\"logs\"",
        "stream=\"stderr\"",
        "traceback=\"warren-worker: app logs: request ",
        "unhandled exception:\\nTraceback (most recent call last):\\n  File ",
        "in application\\n",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
    // One event: no other line of the log holds a line of the traceback.
    let logs = w.logs();
    for part in ["Traceback", "return 1 // 0", "unhandled exception"] {
        let n = logs.lines().filter(|l| l.contains(part)).count();
        assert_eq!(n, 1, "{part:?} is on {n} lines:\n{logs}");
    }
    w.stop();
}

#[test]
fn app_lines_at_error_and_warning_pass_a_warn_filter() {
    let w = Warren::start_in(tempdir(), &config(""), &[("WARREN_LOG", "warn")]);
    w.get(HOST, "/levels").assert_ok();
    let error = wait_log(&w, &["marker-error-line"]);
    assert!(error.contains(" ERROR app: ERROR:root:"), "{error}");
    let warning = wait_log(&w, &["marker-warning-line"]);
    assert!(warning.contains(" WARN app: WARNING:root:"), "{warning}");
    // Flask's "ERROR in app" heads the traceback it logs: one event.
    let tb = wait_log(&w, &["marker-key"]);
    assert!(
        tb.contains(" ERROR app: KeyError: 'marker-key'")
            && tb.contains("traceback=\"[2024-05-01 12:00:00,123] ERROR in app: Exception on /levels [GET]\\nTraceback"),
        "{tb}"
    );
    // The request's line was after the plain one: had it been logged, it would be there.
    std::thread::sleep(Duration::from_millis(300));
    let logs = w.logs();
    assert!(!logs.contains("marker-info-line"), "{logs}");
    w.stop();
}

#[test]
fn an_import_failure_that_repeats_is_logged_in_full_once() {
    let dir = tempdir();
    let app = dir.path().join("broken");
    std::fs::create_dir(&app).unwrap();
    std::fs::copy(format!("{}/app.py", fixture("broken")), app.join("app.py")).unwrap();
    let w = Warren::start_in(
        dir,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [apps.broken]\npath = \"broken\"\nentry = \"app:application\"\nworkers = 1\n",
        &[],
    );
    // The back-off is 1 s, then 2 s: the third import is about 3 s after the first.
    let line = wait_log(
        &w,
        &["same traceback as before (3 times)", "app=\"broken\""],
    );
    assert!(line.contains(" ERROR app: "), "{line}");
    assert_eq!(
        w.log_lines(&["same traceback as before (2 times)"]).len(),
        1
    );
    let full = w.log_lines(&["broken-at-import-marker"]);
    assert_eq!(full.len(), 1, "{full:#?}");
    assert!(
        full[0].contains(" ERROR app: RuntimeError: broken-at-import-marker")
            && full[0].contains("importing app:application failed:\\nTraceback"),
        "{}",
        full[0]
    );
    w.stop();
}

#[test]
fn response_header_values_lose_the_spaces_around_them() {
    let w = Warren::start(&config(""));
    let mut s = TcpStream::connect(w.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /spaces HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    let head = raw.split("\r\n\r\n").next().unwrap();
    assert!(
        head.contains("\r\nset-cookie: csrftoken=abc\r\n"),
        "{head:?}"
    );
    assert!(head.contains("\r\nx-tabbed: value\r\n"), "{head:?}");
    w.stop();
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no {key} in {:#?}", m.keys().collect::<Vec<_>>()))
}

/// The current state of `app` in `warren_app_state`, checking that exactly one series is 1.
fn state(m: &BTreeMap<String, f64>, app: &str) -> String {
    let prefix = format!("warren_app_state{{app=\"{app}\",state=\"");
    let on: Vec<String> = m
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, v)| **v == 1.0)
        .map(|(k, _)| k[prefix.len()..].trim_end_matches("\"}").to_owned())
        .collect();
    let series = m.keys().filter(|k| k.starts_with(&prefix)).count();
    assert_eq!(series, 6, "one series per state: {m:#?}");
    assert_eq!(on.len(), 1, "{on:?}");
    on[0].clone()
}

fn wait_state(admin: SocketAddr, w: &Warren, app: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(admin);
        let s = state(&m, app);
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{app} is {s}, not {want}; log:\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn counters_go_on_across_a_sighup_redeploy() {
    let w = Warren::start(&config(""));
    let admin = w.admin_addr();
    for _ in 0..5 {
        w.get(HOST, "/hello").assert_ok();
    }
    let keys = [
        "warren_app_served_total{app=\"logs\"}",
        "warren_app_responses_total{app=\"logs\",status=\"200\"}",
        "warren_app_request_duration_seconds_count{app=\"logs\"}",
        "warren_app_request_duration_seconds_bucket{app=\"logs\",le=\"+Inf\"}",
        "warren_app_queue_wait_seconds_count{app=\"logs\"}",
        "warren_app_spawns_total{app=\"logs\"}",
    ];
    let before = scrape(admin);
    for k in &keys[..5] {
        assert!(value(&before, k) >= 5.0, "{k}: {before:#?}");
    }
    assert_eq!(state(&before, "logs"), "serving");
    w.hangup();
    assert!(
        w.wait_for_log_line(Duration::from_secs(30), &["reload done"]),
        "{}",
        w.logs()
    );
    for _ in 0..3 {
        w.get(HOST, "/hello").assert_ok();
    }
    let after = scrape(admin);
    for k in &keys[..5] {
        assert!(
            value(&after, k) >= value(&before, k) + 3.0,
            "{k} went from {} to {} across the redeploy",
            value(&before, k),
            value(&after, k)
        );
    }
    // The new generation forked its own worker, counted on top of the old one's.
    assert!(value(&after, keys[5]) > value(&before, keys[5]));
    assert_eq!(state(&after, "logs"), "serving");
    // The admin port answers only /metrics.
    let mut c = support::Client::connect(admin, "127.0.0.1");
    assert_eq!(c.get("/nope").status, 404);
    w.stop();
}

#[test]
fn the_state_gauge_follows_scale_to_zero_and_a_crash_loop() {
    let dir = tempdir();
    let crashy = dir.path().join("crashy");
    std::fs::create_dir(&crashy).unwrap();
    std::fs::copy(
        format!("{}/app.py", fixture("crashloop")),
        crashy.join("app.py"),
    )
    .unwrap();
    let w = Warren::start_in(
        dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n\
             [apps.nap]\npath = \"{}\"\nentry = \"app:application\"\n\
             [apps.nap.scale]\nmin = 0\nmax = 1\nidle_timeout_s = 0.5\nstable_window_s = 2\n\
             panic_window_s = 1\n\n\
             [apps.crashy]\npath = \"crashy\"\nentry = \"app:application\"\nworkers = 1\n",
            fixture("logs")
        ),
        &[],
    );
    let admin = w.admin_addr();
    w.get("nap.localhost", "/hello").assert_ok();
    assert_eq!(state(&scrape(admin), "nap"), "serving");
    wait_state(admin, &w, "nap", "at_zero");
    w.get("nap.localhost", "/hello").assert_ok();
    assert_eq!(state(&scrape(admin), "nap"), "serving");

    w.wait_workers("crashy", 1);
    for _ in 0..20 {
        if w.get("crashy.localhost", "/").status == 503 {
            break;
        }
    }
    wait_state(admin, &w, "crashy", "crash_loop");
    w.stop();
}
