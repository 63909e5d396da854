//! Per-app queues: a full queue sheds with 503 and `Retry-After`, a request that waits too long
//! gets 503, a request whose client left is never run, and one slow app does not slow another.
//! The slow app's single worker is held on a "gate" file the test creates when it is done.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{Client, Response, Warren, fixture};

const SLOW: &str = "slow.localhost";
const FAST: &str = "fast.localhost";

fn start(slow_extra: &str) -> Warren {
    let dir = fixture("queues");
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.slow]
path = "{dir}"
entry = "app:application"
workers = 1
{slow_extra}

[apps.slow.sandbox]
writable = ["work"]   # made by warren for the app: it marks requests started there

[apps.fast]
path = "{dir}"
entry = "app:application"
workers = 2
"#
    ));
    w.wait_workers("slow", 1);
    w.wait_workers("fast", 2);
    w
}

/// A request held in the slow app's only worker until [`Held::release`].
struct Held {
    client: Client,
    gate: PathBuf,
}

impl Held {
    fn new(w: &Warren, name: &str) -> Held {
        let started = w.dir.path().join("work").join(format!("started-{name}"));
        let gate = w.dir.path().join("work").join(format!("gate-{name}"));
        let mut client = w.client(SLOW);
        client
            .send(
                format!(
                    "GET /block?started={}&gate={} HTTP/1.1\r\nHost: {SLOW}\r\n\r\n",
                    started.display(),
                    gate.display()
                )
                .as_bytes(),
            )
            .unwrap();
        w.wait_for_file(&started);
        Held { client, gate }
    }

    fn release(mut self) {
        std::fs::write(&self.gate, b"open").unwrap();
        let resp = self.client.read_response("GET").unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.text(), "released");
    }
}

fn send_run(w: &Warren, tag: &str) -> Client {
    let mut c = w.client(SLOW);
    c.send(format!("GET /run?tag={tag} HTTP/1.1\r\nHost: {SLOW}\r\n\r\n").as_bytes())
        .unwrap();
    c
}

fn assert_shed(resp: &Response, what: &str) {
    assert_eq!(resp.status, 503, "{what}: {}", resp.text());
    let retry = resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: 503 without Retry-After"));
    let secs: u64 = retry
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {retry:?} is not a number of seconds"));
    assert!(secs >= 1, "{what}: Retry-After {secs}");
}

fn runs(w: &Warren) -> String {
    let resp = w.get(SLOW, "/runs");
    assert_eq!(resp.status, 200);
    resp.text()
}

#[test]
fn full_queue_sheds_while_another_app_stays_responsive() {
    let w = start("queue_max = 2\nqueue_timeout_s = 60");
    let held = Held::new(&w, "a");

    // Fill the queue: each request either waits (it is queued) or is shed at once. With one
    // busy worker and two places, the first two wait and the third is shed.
    let mut queued = Vec::new();
    let shed = loop {
        assert!(
            queued.len() <= 2,
            "more than queue_max = 2 requests were queued"
        );
        let tag = format!("q{}", queued.len());
        let mut c = send_run(&w, &tag);
        c.set_read_timeout(Duration::from_secs(2));
        match c.read_response("GET") {
            Ok(resp) => break resp,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => queued.push((tag, c)),
            Err(e) => panic!("{tag}: {e}"),
        }
    };
    assert_shed(&shed, "the request over queue_max");
    assert_eq!(queued.len(), 2, "requests that waited in the queue");

    // More requests while the queue is full are shed too, and the fast app answers them all.
    for i in 0..5 {
        let mut c = send_run(&w, &format!("shed{i}"));
        let resp = c.read_response("GET").unwrap();
        assert_shed(&resp, "a request to the full queue");
    }
    let mut fast = w.client(FAST);
    for _ in 0..20 {
        let resp = fast.get("/fast");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "fast");
    }
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let addr = w.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, FAST);
                (0..10).map(|_| c.get("/fast").status).collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().iter().all(|&s| s == 200));
    }

    // Once the worker is free, the queued requests run in arrival order; shed ones never do.
    held.release();
    for (tag, mut c) in queued {
        c.set_read_timeout(support::READ_TIMEOUT);
        let resp = c.read_response("GET").unwrap();
        assert_eq!(resp.status, 200, "{tag}: {}", resp.text());
        assert_eq!(resp.text(), format!("ran {tag}"));
    }
    assert_eq!(runs(&w), "q0,q1");
    w.stop();
}

#[test]
fn waiting_longer_than_queue_timeout_gives_503() {
    let w = start("queue_max = 10\nqueue_timeout_s = 1");
    let held = Held::new(&w, "a");
    let mut c = send_run(&w, "late");
    let resp = c
        .read_response("GET")
        .expect("no answer to a request that outwaited queue_timeout_s");
    assert_shed(&resp, "a request that outwaited queue_timeout_s");
    held.release();
    assert_eq!(runs(&w), "", "a timed-out request ran anyway");
    drop(c);
    w.stop();
}

#[test]
fn a_request_whose_client_left_while_queued_is_never_run() {
    let w = start("queue_max = 1\nqueue_timeout_s = 60");
    let held = Held::new(&w, "a");

    let gone = send_run(&w, "gone");
    // The queue's one place is taken: a probe is shed.
    std::thread::sleep(Duration::from_millis(300));
    let mut probe = send_run(&w, "probe");
    let resp = probe.read_response("GET").unwrap();
    assert_shed(&resp, "a probe while the queue is full");

    // The client gives up.
    gone.close();
    std::thread::sleep(Duration::from_millis(300));

    // Its place is free again: the next request waits instead of being shed.
    let mut next = send_run(&w, "next");
    next.set_read_timeout(Duration::from_secs(2));
    match next.read_response("GET") {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        Ok(resp) => panic!(
            "the place of a request whose client left was not freed: {} {}",
            resp.status,
            resp.text()
        ),
        Err(e) => panic!("{e}"),
    }

    held.release();
    next.set_read_timeout(support::READ_TIMEOUT);
    let resp = next.read_response("GET").unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "ran next");
    let ran = runs(&w);
    assert!(
        !ran.contains("gone"),
        "the app ran a request whose client had left: runs = {ran:?}"
    );
    assert_eq!(ran, "next");
    drop(probe);
    w.stop();
}

#[test]
fn unknown_or_missing_host() {
    let w = start("");
    let resp = w.get("nobody.localhost", "/fast");
    assert_eq!(resp.status, 404);
    assert!(resp.header("x-request-id").is_some());

    // Routing ignores the port and the case of the host.
    let resp = w.get("FAST.Localhost:9999", "/fast");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "fast");

    // No Host at all (HTTP/1.0 allows that): not routed.
    let mut c = w.client(FAST);
    c.send(b"GET /fast HTTP/1.0\r\n\r\n").unwrap();
    let resp = c.read_response("GET").unwrap();
    assert!(
        resp.status == 400 || resp.status == 404,
        "a request without Host got {}",
        resp.status
    );
    drop(c);
    w.stop();
}

#[test]
fn a_client_leaving_mid_request_does_not_cost_the_worker() {
    let w = start("queue_max = 10\nqueue_timeout_s = 60");
    let pid = |w: &Warren| {
        let resp = w.get(SLOW, "/pid");
        assert_eq!(resp.status, 200);
        resp.text()
    };
    let before = pid(&w);

    // Without a body, then with one: the client hangs up while the app works on it.
    for (i, body) in [None, Some(vec![b'x'; 100_000])].into_iter().enumerate() {
        let started = w.dir.path().join("work").join(format!("started-{i}"));
        let gate = w.dir.path().join("work").join(format!("gate-{i}"));
        let mut c = w.client(SLOW);
        let path = format!(
            "/block?started={}&gate={}",
            started.display(),
            gate.display()
        );
        let mut raw = c.head_bytes(
            if body.is_some() { "POST" } else { "GET" },
            &path,
            &[],
            body.as_ref().map(Vec::len),
        );
        raw.extend_from_slice(body.as_deref().unwrap_or_default());
        c.send(&raw).unwrap();
        w.wait_for_file(&started);
        c.close();
        std::thread::sleep(Duration::from_millis(200));
        std::fs::write(&gate, b"").unwrap();

        // The same worker serves the next request: it was neither lost nor replaced.
        assert_eq!(
            pid(&w),
            before,
            "the worker changed after a client left (round {i})"
        );
    }
    let logs = w.stop();
    assert!(
        !logs.contains("worker exited") && !logs.contains("killed by"),
        "a worker ended:\n{logs}"
    );
}

#[test]
fn two_host_headers_are_refused() {
    // RFC 9112 section 3.2: a request with more than one Host line gets 400. Routing by one of
    // them while the app sees both (joined in HTTP_HOST) lets a request reach one app while
    // claiming to be for another.
    let w = start("");
    for (first, second) in [(FAST, SLOW), (SLOW, FAST)] {
        let mut c = w.client(FAST);
        let resp = c
            .roundtrip(
                format!("GET /fast HTTP/1.1\r\nHost: {first}\r\nHost: {second}\r\n\r\n").as_bytes(),
                "GET",
            )
            .unwrap();
        assert_eq!(
            resp.status,
            400,
            "Host: {first} and Host: {second} got {} {:?}",
            resp.status,
            resp.text()
        );
    }
    w.stop();
}
