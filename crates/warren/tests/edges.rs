//! The front at HTTP's edges, each attack as it was found against the release binary and the
//! safe outcome: response heads an app makes too large (count and bytes), what slow clients
//! of large responses cost the front's memory, response lengths that are not numbers, request
//! framings that are not exactly one, hosts that are not hosts, absolute-form targets, CONNECT,
//! upgrades and statuses HTTP does not relay. The app is `tests/apps/edges`, under two
//! callables so that routing shows.

mod support;

use std::io::Read;
use std::time::Duration;

use support::{Client, Warren, fixture, slow, tempdir};

const H2: &str = "h2.test";
const NEIGHBOUR: &str = "neighbour.test";

fn start(workers: usize) -> Warren {
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.h2]
path = "{app}"
entry = "app:h2"
hosts = ["{H2}"]
workers = {workers}
limits = {{ memory_mb = 512 }}

[apps.neighbour]
path = "{app}"
entry = "app:neighbour"
hosts = ["{NEIGHBOUR}"]
workers = 1
"#,
        app = fixture("edges"),
    );
    let w = Warren::start_in(tempdir(), &config, &[]);
    w.wait_workers("h2", workers);
    w.wait_workers("neighbour", 1);
    w
}

/// Nothing on the request path panicked, and warren still answers.
fn assert_healthy(w: &Warren) {
    let logs = w.logs();
    assert!(!logs.contains("panicked"), "a panic in the log:\n{logs}");
    let resp = w.get(H2, "/who");
    resp.assert_ok();
}

/// Sends `raw` on a new connection and reads one response.
fn raw(w: &Warren, raw: &str) -> support::Response {
    let mut c = w.client(H2);
    c.roundtrip(raw.as_bytes(), raw.split(' ').next().unwrap_or("GET"))
        .unwrap_or_else(|e| panic!("no response to {raw:?}: {e}\nlog:\n{}", w.logs()))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn response_heads_over_the_limits_are_502_without_a_panic_and_the_worker_is_kept() {
    let w = start(1);
    let pid_before = w.get(H2, "/who");
    pid_before.assert_ok();
    // At the limit (100 lines, the default) it goes through.
    let resp = w.get(H2, "/headers?n=100");
    resp.assert_ok();
    assert_eq!(resp.headers_named("x-h99").len(), 1);
    // One line more than the limit.
    let resp = w.get(H2, "/headers?n=200");
    assert_eq!(resp.status, 502, "{}", resp.text());
    // 30,000 lines made the front panic in `HeaderMap::reserve`: an empty reply per request,
    // and a backtrace each time past the log's rate limit.
    for _ in 0..3 {
        let resp = w.get(H2, "/headers?n=30000");
        assert_eq!(resp.status, 502, "{}", resp.text());
        assert!(resp.complete);
    }
    // A 15 MB header block was accepted whole.
    let resp = w.get(H2, "/bighead?bytes=15000000");
    assert_eq!(resp.status, 502, "{}", resp.text());
    // Just under the byte limit still passes.
    w.get(H2, "/bighead?bytes=60000").assert_ok();
    assert_healthy(&w);
    for needle in [
        "more than server.max_response_headers = 100",
        "more than server.max_response_header_bytes = 65536",
    ] {
        assert!(
            w.wait_for_log_line(slow(Duration::from_secs(10)), &[needle]),
            "{}",
            w.logs()
        );
    }
    let logs = w.logs();
    // The worker was never given up: the app's only worker answered every request, and none
    // was forked again.
    assert_eq!(
        w.log_lines(&["worker started", "app=\"h2\""]).len(),
        1,
        "the worker was replaced:\n{logs}"
    );
    w.stop();
}

#[test]
fn slow_clients_of_large_responses_cost_the_front_a_bounded_amount() {
    const CLIENTS: usize = 8;
    let w = start(CLIENTS);
    // Warm up what every response allocates once (the runtime, the buffers' first growth).
    for mode in ["stream", "whole"] {
        let resp = w.get(H2, &format!("/big?mb=15&mode={mode}"));
        resp.assert_ok();
        assert_eq!(resp.body.len(), 15 << 20);
    }
    for path in [
        "/big?mb=15&mode=stream",
        "/big?mb=15&mode=whole",
        "/bighead?bytes=15000000",
    ] {
        let before = rss_kib(w.pid());
        // Each client asks and reads (almost) nothing.
        let mut slow_clients: Vec<Client> = (0..CLIENTS)
            .map(|_| {
                let mut c = w.client(H2);
                c.send(format!("GET {path} HTTP/1.1\r\nHost: {H2}\r\n\r\n").as_bytes())
                    .unwrap();
                c
            })
            .collect();
        // Let the responses fill every buffer between the apps and the clients.
        std::thread::sleep(slow(Duration::from_secs(2)));
        let after = rss_kib(w.pid());
        let grown = after.saturating_sub(before);
        eprintln!("{CLIENTS} slow clients of {path}: warren's RSS {before} -> {after} KiB");
        // The README's bound: what one response holds is its head (64 KiB at most), a read
        // buffer and four body frames of 64 KiB each, and hyper's write buffer: under 1 MiB.
        // Before the bound, these 8 clients took the front from 7 to 266 MB.
        assert!(
            grown < (CLIENTS as u64) * 1024 + 16 * 1024,
            "{CLIENTS} slow clients of {path} grew warren by {grown} KiB ({before} -> {after})"
        );
        // The clients still get whole responses when they read at last.
        for c in &mut slow_clients {
            let mut buf = [0u8; 4096];
            c.stream().read_exact(&mut buf[..12]).unwrap();
            assert!(buf.starts_with(b"HTTP/1.1 "), "{:?}", &buf[..12]);
        }
        drop(slow_clients);
    }
    assert_healthy(&w);
    w.stop();
}

#[test]
fn response_lengths_are_digits_only() {
    let w = start(1);
    let mut c = w.client(H2);
    for value in ["abc", "+5", "5, 5", "-5", " 5x"] {
        for mode in ["stream", "whole"] {
            let path = format!(
                "/length?value={}&mode={mode}",
                value.replace(' ', "%20").replace('+', "%2B")
            );
            let resp = c.get(&path);
            assert_eq!(resp.status, 200, "{path}: {}", resp.text());
            assert!(resp.complete, "{path}");
            assert_eq!(resp.text(), "hello", "{path}");
            // On the wire: digits only, or chunked framing.
            match resp.header("content-length") {
                Some(v) => assert_eq!(v, "5", "{path}"),
                None => assert_eq!(
                    resp.header("transfer-encoding"),
                    Some("chunked"),
                    "{path}: {:?}",
                    resp.headers
                ),
            }
        }
    }
    // A right length is kept as it is.
    let resp = c.get("/length?value=5&mode=stream");
    assert_eq!(resp.header("content-length"), Some("5"));
    drop(c);
    assert_healthy(&w);
    // Waited for: the log is read from warren's stderr by a thread of its own, behind the
    // requests' access lines.
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["the app's Content-Length is not one number"]
        ),
        "{}",
        w.logs()
    );
    w.stop();
}

#[test]
fn request_framing_other_than_exactly_one_is_refused_before_the_app() {
    let w = start(1);
    let cases: &[(&str, u16)] = &[
        ("Transfer-Encoding: gzip, chunked\r\n", 501),
        ("Transfer-Encoding: chunked, chunked\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        ("Content-Length: +5\r\n", 400),
        ("Content-Length: 5, 5\r\n", 400),
    ];
    // hyper refuses some itself, with a 400.
    let cases = cases
        .iter()
        .copied()
        .chain([("Transfer-Encoding: identity\r\n", 400)]);
    for (headers, want) in cases {
        let req =
            format!("POST /echo HTTP/1.1\r\nHost: {H2}\r\n{headers}\r\n5\r\nhello\r\n0\r\n\r\n");
        let resp = raw(&w, &req);
        assert!(
            resp.status == want || (headers.contains("identity") && resp.status == 501),
            "{headers:?}: {} {}",
            resp.status,
            resp.text()
        );
        assert!(
            resp.closes(),
            "{headers:?}: the connection must not be reused"
        );
    }
    // Refused, or read as the app is told: chunked wins over a Content-Length beside it (hyper
    // drops the length, RFC 9112 §6.3); the same length twice is one (RFC 9110 §8.6).
    let consistent: &[(&str, &str)] = &[
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "- chunked 5",
        ),
        ("Content-Length: 5\r\nContent-Length: 5\r\n", "5 - 5"),
    ];
    for (headers, seen) in consistent {
        let req =
            format!("POST /echo HTTP/1.1\r\nHost: {H2}\r\n{headers}\r\n5\r\nhello\r\n0\r\n\r\n");
        let resp = raw(&w, &req);
        assert!(
            resp.status == 400 || resp.text() == *seen,
            "{headers:?}: {} {}",
            resp.status,
            resp.text()
        );
    }
    // Exactly chunked, once: the app reads the body it is told of.
    let resp = raw(
        &w,
        &format!(
            "POST /echo HTTP/1.1\r\nHost: {H2}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ),
    );
    resp.assert_ok();
    assert_eq!(resp.text(), "- chunked 5");
    let resp = raw(
        &w,
        &format!("POST /echo HTTP/1.1\r\nHost: {H2}\r\nContent-Length: 5\r\n\r\nhello"),
    );
    assert_eq!(resp.text(), "5 - 5");
    assert_healthy(&w);
    w.stop();
}

#[test]
fn hosts_targets_connect_upgrades_and_statuses() {
    let w = start(1);
    // A port that is not digits was routed to h2 and passed on as HTTP_HOST.
    for host in [
        "h2.test:@evil.example",
        "h2.test:80x",
        "user@h2.test",
        "h2.test:",
    ] {
        let resp = raw(&w, &format!("GET /who HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        assert_eq!(resp.status, 400, "{host}: {}", resp.text());
    }
    let resp = raw(&w, &format!("GET /who HTTP/1.1\r\nHost: {H2}:8080\r\n\r\n"));
    assert_eq!(resp.text(), format!("h2 {H2}:8080 {H2}"));
    // An absolute-form target routes by its authority (RFC 9112 §3.2.2), and the app sees it.
    let resp = raw(
        &w,
        &format!("GET http://{NEIGHBOUR}/who HTTP/1.1\r\nHost: {H2}\r\n\r\n"),
    );
    resp.assert_ok();
    assert_eq!(resp.text(), format!("neighbour {NEIGHBOUR} {NEIGHBOUR}"));
    let resp = raw(
        &w,
        &format!("GET http://x@{NEIGHBOUR}/who HTTP/1.1\r\nHost: {H2}\r\n\r\n"),
    );
    assert_eq!(resp.status, 400);
    // CONNECT and upgrades never reach an app.
    let resp = raw(
        &w,
        &format!("CONNECT {H2}:443 HTTP/1.1\r\nHost: {H2}:443\r\n\r\n"),
    );
    assert_eq!(resp.status, 501, "{}", resp.text());
    let resp = raw(
        &w,
        &format!(
            "GET /who HTTP/1.1\r\nHost: {H2}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ),
    );
    assert_eq!(resp.status, 501, "{}", resp.text());
    // Statuses outside 200-599, a 101 among them, are not relayed (a 101 was an open tunnel).
    let mut c = w.client(H2);
    for code in [999, 101, 100, 600] {
        let resp = c.get(&format!("/status?code={code}"));
        assert_eq!(resp.status, 502, "status {code}: {}", resp.text());
    }
    for code in [200, 404, 599] {
        let resp = c.get(&format!("/status?code={code}"));
        assert_eq!(resp.status, code, "status {code}");
    }
    drop(c);
    assert_healthy(&w);
    w.stop();
}
