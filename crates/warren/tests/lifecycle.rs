//! Shutting down: SIGTERM lets a request in progress finish, stops taking new connections,
//! and leaves no zygote or worker behind, even when a worker is stuck in app code.

mod support;

use std::net::TcpStream;

use std::time::Duration;

use support::{Client, Warren, descendants, fixture};

const SLOW: &str = "slow.localhost";

fn start() -> Warren {
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.slow]
path = "{}"
entry = "app:application"
workers = 2

[apps.slow.sandbox]
writable = ["work"]   # made by warren for the app: it marks requests started there
"#,
        fixture("queues")
    ));
    w.wait_workers("slow", 2);
    w
}

/// Starts `/block` on a new connection and waits until the app runs it.
fn hold(w: &Warren, name: &str) -> (Client, std::path::PathBuf) {
    let started = w.dir.path().join("work").join(format!("started-{name}"));
    let gate = w.dir.path().join("work").join(format!("gate-{name}"));
    let mut c = w.client(SLOW);
    c.send(
        format!(
            "GET /block?started={}&gate={} HTTP/1.1\r\nHost: {SLOW}\r\n\r\n",
            started.display(),
            gate.display()
        )
        .as_bytes(),
    )
    .unwrap();
    w.wait_for_file(&started);
    (c, gate)
}

#[test]
fn workers_serve_requests_in_parallel() {
    let w = start();
    // Both requests are inside the app at the same time: each waits for its gate.
    let (mut a, gate_a) = hold(&w, "a");
    let (mut b, gate_b) = hold(&w, "b");
    std::fs::write(&gate_b, b"").unwrap();
    std::fs::write(&gate_a, b"").unwrap();
    for c in [&mut a, &mut b] {
        let resp = c.read_response("GET").unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (200, "released"));
    }
    drop((a, b));
    w.stop();
}

#[test]
fn sigterm_lets_the_request_in_progress_finish() {
    let w = start();
    let (mut c, gate) = hold(&w, "a");
    w.terminate();
    assert!(
        w.wait_for_log_line(Duration::from_secs(10), &["shutting down"]),
        "no sign of shutdown in the log:\n{}",
        w.logs()
    );
    std::fs::write(&gate, b"").unwrap();
    let resp = c
        .read_response("GET")
        .expect("the request in progress at SIGTERM got no answer");
    assert_eq!((resp.status, resp.text().as_str()), (200, "released"));
    assert!(resp.complete);
    drop(c);
    w.stop();
}

#[test]
fn sigterm_stops_taking_new_connections() {
    let w = start();
    let (c, gate) = hold(&w, "a");
    w.terminate();
    assert!(
        w.wait_for_log_line(Duration::from_secs(10), &["shutting down"]),
        "no sign of shutdown in the log:\n{}",
        w.logs()
    );
    // While the request in progress drains, a new client is turned away at once (refused, or
    // closed without an answer) rather than left waiting for a server that is going away.
    if TcpStream::connect_timeout(&w.addr, Duration::from_secs(5)).is_ok() {
        let mut late = Client::connect(w.addr, SLOW);
        late.set_read_timeout(Duration::from_secs(5));
        let _ = late.send(format!("GET /fast HTTP/1.1\r\nHost: {SLOW}\r\n\r\n").as_bytes());
        match late.read_until_closed() {
            Ok(bytes) => assert!(
                bytes.is_empty(),
                "a connection made after SIGTERM was served: {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Err(e) => panic!(
                "a connection made after SIGTERM was accepted and left hanging ({e}): the \
                 listener stays open while warren drains"
            ),
        }
    }
    std::fs::write(&gate, b"").unwrap();
    drop(c);
    w.stop();
}

#[test]
fn sigterm_with_a_worker_stuck_in_the_app_leaves_nothing_behind() {
    let w = start();
    // The gate is never opened: the worker stays inside the app.
    let (c, _gate) = hold(&w, "stuck");
    let family = descendants(w.pid());
    assert!(
        family.len() >= 3,
        "expected a zygote and two workers under warren: {family:?}"
    );
    // `stop` fails if warren does not exit within its bound or if any process it started
    // outlives it.
    w.stop();
    drop(c);
}

#[test]
fn requests_made_during_the_first_import_wait_for_it() {
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.late]
path = "{}"
entry = "app:application"
workers = 1
"#,
        fixture("slow_import")
    ));
    // Sent while the zygote is still importing (the import takes two seconds).
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let addr = w.addr;
            std::thread::spawn(move || {
                let resp = Client::connect(addr, "late.localhost").get("/");
                (resp.status, resp.text())
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), (200, "imported".to_owned()));
    }
    let logs = w.logs();
    let ready = logs.find("zygote ready").expect("zygote ready in the log");
    let listening = logs.find("listening").expect("listening in the log");
    assert!(listening < ready, "the test did not race the import");
    w.stop();
}

#[test]
fn a_multi_threaded_front_serves_concurrent_clients() {
    // `threads` defaults to half the cores; force several so that the multi-threaded runtime
    // is exercised whatever the machine.
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
threads = 4

[apps.slow]
path = "{}"
entry = "app:application"
workers = 2

[apps.slow.sandbox]
writable = ["work"]   # made by warren for the app: it marks requests started there
"#,
        fixture("queues")
    ));
    w.wait_workers("slow", 2);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let addr = w.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, SLOW);
                for j in 0..25 {
                    if j % 5 == 0 {
                        let body = vec![b'x'; 70_000 + i];
                        let resp = c.post("/len", "application/octet-stream", &body);
                        assert_eq!(resp.status, 200, "client {i}, request {j}");
                        assert_eq!(resp.text(), body.len().to_string());
                    } else {
                        let resp = c.get("/fast");
                        assert_eq!(resp.status, 200, "client {i}, request {j}: {}", resp.text());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a client thread failed");
    }
    let resp = w.get(SLOW, "/pid");
    assert_eq!(resp.status, 200);
    w.stop();
}

#[test]
fn keep_alive_survives_a_body_the_app_did_not_read() {
    // The app answers without reading the request body. The response either says
    // `Connection: close`, or the connection goes on serving: a response that promises
    // keep-alive followed by a closed connection loses the client's next request. Several
    // clients at once, each sending its next request right behind the body (pipelined) or
    // after the response.
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
threads = 4

[apps.slow]
path = "{}"
entry = "app:application"
workers = 2

[apps.slow.sandbox]
writable = ["work"]   # made by warren for the app: it marks requests started there
"#,
        fixture("queues")
    ));
    w.wait_workers("slow", 2);
    let handles: Vec<_> = (0..4)
        .map(|client| {
            let addr = w.addr;
            std::thread::spawn(move || {
                let body = vec![b'u'; 70_000];
                for round in 0..25 {
                    let pipelined = round % 2 == 0;
                    let mut c = Client::connect(addr, SLOW);
                    let mut raw = c.head_bytes("POST", "/fast", &[], Some(body.len()));
                    raw.extend_from_slice(&body);
                    let next = format!("GET /fast HTTP/1.1\r\nHost: {SLOW}\r\n\r\n");
                    if pipelined {
                        raw.extend_from_slice(next.as_bytes());
                    }
                    c.send(&raw).unwrap();
                    let resp = c.read_response("POST").unwrap();
                    assert_eq!(resp.status, 200);
                    if resp.closes() {
                        continue;
                    }
                    if !pipelined {
                        c.send(next.as_bytes()).unwrap();
                    }
                    let second = c.read_response("GET").unwrap_or_else(|e| {
                        panic!(
                            "client {client}, round {round} (pipelined: {pipelined}): the \
                             response kept the connection alive, but the next request on it got \
                             no answer ({e})"
                        )
                    });
                    assert_eq!(second.status, 200);
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        if let Err(e) = h.join() {
            failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "a client thread panicked".to_owned()),
            );
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    w.stop();
}
