//! An app's bad days: requests that run too long (504, worker killed and replaced), workers
//! retired between requests (`max_requests`, `max_worker_rss_mb`), a worker that segfaults in
//! the middle of other work, and a crash loop that backs off with 503 and ends when the code is
//! fixed.

mod support;

use std::time::Duration;

use support::{Warren, fixture, tempdir};

const GOOD: &str = "good.localhost";

fn start(workers: usize, limits: &str) -> Warren {
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.good]
path = "{}"
entry = "app:application"
workers = {workers}

[apps.good.limits]
{limits}
"#,
        fixture("failures")
    ));
    w.wait_workers("good", workers);
    w
}

/// `/count`: (requests this worker served, its pid).
fn count(w: &Warren) -> (u64, String) {
    let r = w.get(GOOD, "/count");
    r.assert_ok();
    let text = r.text();
    let (n, pid) = text.split_once(' ').expect("`N PID`");
    (n.parse().expect("a count"), pid.to_owned())
}

#[test]
fn a_request_past_request_timeout_gets_504_and_its_worker_is_replaced() {
    let w = start(1, "request_timeout_s = 0.5");
    let (_, before) = count(&w);
    // Several in a row: each is the request's fault, not a crash loop, so the app stays up.
    for i in 0..4 {
        // 120 s of sleep: without the watchdog the client's read would time out first.
        let r = w.get(GOOD, "/sleep?s=120");
        assert_eq!(r.status, 504, "request {i}: {}", r.text());
        assert!(
            r.text().contains("request_timeout_s"),
            "the page names the limit: {}",
            r.text()
        );
        assert!(r.header("x-request-id").is_some());
    }
    let (n, after) = count(&w);
    assert_ne!(before, after, "the worker that overran was replaced");
    assert_eq!(n, 1, "by a fresh worker");
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(5),
            &["request ran past request_timeout_s", "killing its worker"]
        ),
        "{}",
        w.logs()
    );
    assert!(
        w.log_lines(&["dying young"]).is_empty(),
        "timeouts are not a crash loop:\n{}",
        w.logs()
    );
    // A request within the limit is untouched.
    let r = w.get(GOOD, "/sleep?s=0.1");
    r.assert_ok();
    w.stop();
}

#[test]
fn a_streamed_response_past_request_timeout_is_cut_and_the_worker_replaced() {
    let w = start(1, "request_timeout_s = 0.5");
    let mut c = w.client(GOOD);
    c.send(format!("GET /drip HTTP/1.1\r\nHost: {GOOD}\r\n\r\n").as_bytes())
        .unwrap();
    // The response starts (200, chunked) and is then cut: the connection ends before the
    // last chunk, well before the read timeout.
    let raw = c
        .read_until_closed()
        .expect("the connection is closed, not left hanging");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("drop"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a cut response has no last chunk"
    );
    let (n, _) = count(&w);
    assert_eq!(n, 1, "a fresh worker answers");
    w.stop();
}

#[test]
fn max_requests_recycles_workers_between_requests_without_a_failure() {
    let w = start(1, "max_requests = 3");
    let seen: Vec<(u64, String)> = (0..7).map(|_| count(&w)).collect();
    let counts: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1], "{seen:?}");
    assert_eq!(seen[0].1, seen[2].1);
    assert_ne!(seen[2].1, seen[3].1, "a new worker after three requests");
    assert_ne!(seen[5].1, seen[6].1);
    assert!(
        !w.log_lines(&["retiring worker", "max_requests = 3"])
            .is_empty()
    );
    w.stop();
}

#[test]
fn a_worker_over_its_memory_ceiling_is_retired_after_its_request() {
    let w = start(1, "memory_mb = 512\nmax_worker_rss_mb = 96");
    let (_, first) = count(&w);
    // Within the ceiling: kept.
    let r = w.get(GOOD, "/leak?mb=8");
    r.assert_ok();
    assert_eq!(r.text(), first);
    let (n, same) = count(&w);
    assert_eq!((n, &same), (3, &first));
    // Over it: the request is answered, then the worker goes.
    let r = w.get(GOOD, "/leak?mb=120");
    r.assert_ok();
    assert_eq!(
        r.text(),
        first,
        "the request that crossed the ceiling is served"
    );
    let (n, next) = count(&w);
    assert_ne!(next, first);
    assert_eq!(n, 1);
    assert!(
        !w.log_lines(&["retiring worker", "max_worker_rss_mb = 96"])
            .is_empty(),
        "{}",
        w.logs()
    );
    w.stop();
}

#[test]
fn a_segfault_costs_only_its_own_request() {
    let w = start(2, "");
    let addr_w = &w;
    std::thread::scope(|s| {
        let slow = s.spawn(|| addr_w.get(GOOD, "/sleep?s=1"));
        // Let the slow request take its worker first.
        std::thread::sleep(Duration::from_millis(200));
        let crash = addr_w.get(GOOD, "/segv");
        assert_eq!(crash.status, 502, "{}", crash.text());
        let slow = slow.join().unwrap();
        slow.assert_ok();
        assert_eq!(slow.text(), "slept");
    });
    assert!(
        w.wait_for_log_line(Duration::from_secs(5), &["worker", "killed by SIGSEGV"]),
        "the log names the cause:\n{}",
        w.logs()
    );
    w.wait_workers("good", 3);
    w.get(GOOD, "/hello").assert_ok();
    w.stop();
}

#[test]
fn a_crash_loop_backs_off_with_503_and_recovers_when_the_code_is_fixed() {
    let dir = tempdir();
    let app_dir = dir.path().join("crashy");
    std::fs::create_dir(&app_dir).unwrap();
    std::fs::copy(
        format!("{}/app.py", fixture("crashloop")),
        app_dir.join("app.py"),
    )
    .unwrap();
    let w = Warren::start_in(
        dir,
        r#"
[server]
listen = "127.0.0.1:0"

[apps.crashy]
path = "crashy"
entry = "app:application"
workers = 1
"#,
        &[],
    );
    w.wait_workers("crashy", 1);
    let host = "crashy.localhost";
    // Each request kills its worker (502) until the loop is recognised: then 503 at once.
    let mut statuses = Vec::new();
    let unavailable = loop {
        let r = w.get(host, "/");
        statuses.push(r.status);
        if r.status == 503 {
            break r;
        }
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(statuses.len() < 20, "no 503 after {statuses:?}");
    };
    assert!(unavailable.header("retry-after").is_some());
    assert!(
        unavailable.text().contains("keep dying"),
        "{}",
        unavailable.text()
    );
    // While it backs off, requests do not respawn workers.
    let started = w.log_lines(&["worker started", "crashy"]).len();
    for _ in 0..10 {
        let r = w.get(host, "/");
        assert!(matches!(r.status, 502 | 503), "{}", r.status);
    }
    let respawned = w.log_lines(&["worker started", "crashy"]).len() - started;
    assert!(
        respawned <= 2,
        "{respawned} workers started during the back-off"
    );
    // The fix lands: the next zygote imports it and the app answers again.
    std::fs::write(app_dir.join("fixed"), b"").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let r = w.get(host, "/");
        if r.status == 200 {
            assert_eq!(r.text(), "fixed");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fixed app never answered; log:\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    w.stop();
}

#[test]
fn a_client_that_stops_reading_holds_its_worker_no_longer_than_request_timeout() {
    let w = start(1, "request_timeout_s = 1");
    // A response the client never reads: the worker blocks on a full pipe...
    let mut stalled = w.client(GOOD);
    stalled
        .send(format!("GET /flood HTTP/1.1\r\nHost: {GOOD}\r\n\r\n").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // ...until the request's time is up: then it is killed and replaced, and the request that
    // queued behind it (one worker) is served.
    let r = w.get(GOOD, "/hello");
    r.assert_ok();
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(5),
            &["request ran past request_timeout_s"]
        ),
        "{}",
        w.logs()
    );
    drop(stalled);
    w.stop();
}

#[test]
fn a_client_that_leaves_mid_upload_and_mid_response_frees_its_worker() {
    // An app that streams its answer without reading its body, both larger than the pipes
    // hold: the worker waits for the master to read the response, and the master's pump for
    // the worker to read the body. When the client leaves, the master drops the response while
    // the pump finishes its frame (or gives the worker up after a few seconds): either way the
    // worker is free long before `request_timeout_s`, and the next request is served.
    let w = start(1, "request_timeout_s = 300");
    let mut c = w.client(GOOD);
    let body_len: usize = 64 << 20;
    c.send(
        format!("POST /flood HTTP/1.1\r\nHost: {GOOD}\r\nContent-Length: {body_len}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    c.stream()
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let chunk = vec![b'b'; 64 * 1024];
    let mut sent = 0;
    while sent < body_len {
        match std::io::Write::write(&mut c.stream(), &chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < body_len, "the upload stalls: nobody reads it");
    // Unread response bytes in the client's socket: the front sees a reset.
    c.close();
    // With one worker, this is served only once that worker is free again (before the fix
    // it waited out the queue's timeout and got a 503).
    let r = w.get(GOOD, "/hello");
    r.assert_ok();
    w.stop();
}

#[test]
fn malformed_requests_get_400() {
    let w = start(1, "");
    for raw in [
        "GARBAGE\r\n\r\n".to_owned(),
        format!("GET / HTTP/1.1\r\nHost: {GOOD}\r\nContent-Length: nope\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {GOOD}\r\nBad Header\r\n\r\n"),
    ] {
        let mut c = w.client(GOOD);
        c.send(raw.as_bytes()).unwrap();
        let r = c.read_response("GET").expect("an answer, not a hang");
        assert_eq!(r.status, 400, "{raw:?}: {}", r.text());
    }
    // The worker never saw them and still serves.
    w.get(GOOD, "/hello").assert_ok();
    w.stop();
}

#[test]
fn crashes_between_answered_requests_are_not_a_crash_loop() {
    let w = start(1, "");
    // Six deaths, each followed by a good answer: an app that mostly works stays up.
    for i in 0..6 {
        let r = w.get(GOOD, "/exit");
        assert_eq!(r.status, 502, "crash {i}: {}", r.text());
        let r = w.get(GOOD, "/hello");
        assert_eq!(r.status, 200, "after crash {i}: {}", r.text());
    }
    assert!(w.log_lines(&["keep dying"]).is_empty(), "{}", w.logs());
    w.stop();
}

#[test]
fn a_child_the_app_forks_at_import_is_not_counted_as_a_worker() {
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.forker]
path = "{}"
entry = "app:application"
workers = 2

[apps.forker.sandbox]
enabled = false   # confined, the fork at import is refused (escape.rs); unconfined it happens
"#,
        fixture("forker")
    ));
    w.wait_workers("forker", 2);
    w.get("forker.localhost", "/").assert_ok();
    std::thread::sleep(Duration::from_millis(500));
    // Had the child's exit been taken for a worker's, a third worker would have been forked.
    assert_eq!(
        w.log_lines(&["worker started", "forker"]).len(),
        2,
        "{}",
        w.logs()
    );
    w.stop();
}
