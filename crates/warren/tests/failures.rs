//! Failure handling: an app that does not import, a worker that dies, and the limits the
//! front applies before an app sees a request (head size, head time, body size).

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use support::{Warren, fixture, tempdir};

const GOOD: &str = "good.localhost";
const BROKEN: &str = "broken.localhost";

fn start_good(extra_server: &str, extra_app: &str) -> Warren {
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra_server}

[apps.good]
path = "{}"
entry = "app:application"
workers = 1
{extra_app}
"#,
        fixture("failures")
    ));
    w.wait_workers("good", 1);
    w
}

fn body_text(w: &Warren, path: &str) -> (u16, String) {
    let resp = w.get(GOOD, path);
    (resp.status, resp.text())
}

#[test]
fn app_that_fails_to_import_gets_503_and_the_others_keep_serving() {
    // A copy of the broken app, so that the test can fix it.
    let dir = tempdir();
    let app_dir = dir.path().join("broken");
    std::fs::create_dir(&app_dir).unwrap();
    std::fs::copy(
        format!("{}/app.py", fixture("broken")),
        app_dir.join("app.py"),
    )
    .unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.broken]
path = "broken"
entry = "app:application"
workers = 1

[apps.good]
path = "{}"
entry = "app:application"
workers = 1
"#,
        fixture("failures")
    );
    let w = Warren::start_in(dir, &config, &[]);

    let resp = w.get(BROKEN, "/");
    assert_eq!(resp.status, 503, "{}", resp.text());
    let retry: u64 = resp
        .header("retry-after")
        .expect("503 without Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry >= 1);

    // The traceback is in the log, attributed to the app.
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["broken-at-import-marker", "app=\"broken\""]
        ),
        "the import error is not in the log:\n{}",
        w.logs()
    );
    assert!(
        w.wait_for_log_line(Duration::from_secs(10), &["Traceback", "app=\"broken\""]),
        "no traceback in the log:\n{}",
        w.logs()
    );

    // The other app is not affected.
    for _ in 0..10 {
        assert_eq!(body_text(&w, "/hello"), (200, "hello".to_owned()));
    }

    // Import attempts back off: 1 s, then 2 s.
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(20),
            &["app unavailable", "broken", "retry_in_s=2"]
        ),
        "no second, longer back-off in the log:\n{}",
        w.logs()
    );
    let backoffs: Vec<f64> = w
        .log_lines(&["app unavailable", "broken"])
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("retry_in_s="))
                .and_then(|v| v.parse().ok())
        })
        .collect();
    assert!(
        backoffs.len() >= 2 && backoffs[0] == 1.0 && backoffs[1] == 2.0,
        "back-off sequence {backoffs:?}"
    );

    // Every request meanwhile is a 503 with Retry-After, never a hang or a 502.
    let resp = w.get(BROKEN, "/");
    assert_eq!(resp.status, 503);
    assert!(resp.header("retry-after").is_some());

    // Fixed on disk: a later import attempt succeeds and the app serves.
    std::fs::write(w.dir.path().join("broken/FIXED"), b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = w.get(BROKEN, "/");
        if resp.status == 200 {
            assert_eq!(resp.text(), "fixed");
            break;
        }
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert!(
            Instant::now() < deadline,
            "the fixed app never started; log:\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    w.stop();
}

#[test]
fn worker_that_dies_mid_request_gives_502_and_is_replaced() {
    let w = start_good("", "");
    let (status, pid1) = body_text(&w, "/pid");
    assert_eq!(status, 200);
    // The log names the worker by its pid outside its namespace.
    let host1 = support::host_pid(w.pid(), &pid1);

    let resp = w.get(GOOD, "/exit");
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["worker", &format!("pid={host1}"), "exited with status 1"]
        ),
        "the worker's death is not in the log:\n{}",
        w.logs()
    );

    // The next request is served, by a new worker.
    let (status, pid2) = body_text(&w, "/pid");
    assert_eq!(status, 200);
    assert_ne!(pid1, pid2, "the dead worker still answers?");

    // Dying while reading a body is the same.
    let mut c = w.client(GOOD);
    let resp = c.post("/exit", "application/octet-stream", &[b'z'; 100_000]);
    assert_eq!(resp.status, 502, "{}", resp.text());
    let (status, pid3) = body_text(&w, "/pid");
    assert_eq!(status, 200);
    assert_ne!(pid2, pid3);
    drop(c);
    w.stop();
}

#[test]
fn worker_that_dies_after_the_headers_cuts_the_response() {
    let w = start_good("", "");
    let resp = w.get(GOOD, "/exit-after-headers");
    assert_eq!(resp.status, 200);
    assert!(
        !resp.complete,
        "a response cut by the worker's death looks complete ({} bytes)",
        resp.body.len()
    );
    assert_eq!(body_text(&w, "/hello"), (200, "hello".to_owned()));
    w.stop();
}

#[test]
fn oversized_request_head_gets_431() {
    let w = start_good("max_header_bytes = 8192", "");
    let mut c = w.client(GOOD);
    let small = "s".repeat(4000);
    let resp = c.request("GET", "/hello", &[("X-Small", &small)], b"");
    assert_eq!(resp.status, 200, "a 4000-byte header is within the limit");

    // The limit is exact: a head of max_header_bytes passes, one byte more does not.
    for (size, want) in [(8192usize, 200u16), (8193, 431)] {
        let start = format!("GET /hello HTTP/1.1\r\nHost: {GOOD}\r\nX-Pad: ");
        let pad = "p".repeat(size - start.len() - 4);
        let head = format!("{start}{pad}\r\n\r\n");
        assert_eq!(head.len(), size);
        let mut c = w.client(GOOD);
        let resp = c.roundtrip(head.as_bytes(), "GET").unwrap();
        assert_eq!(resp.status, want, "a head of {size} bytes");
    }

    let big = "b".repeat(20_000);
    let mut c = w.client(GOOD);
    c.send(format!("GET /hello HTTP/1.1\r\nHost: {GOOD}\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .unwrap();
    let resp = c
        .read_response("GET")
        .expect("an answer to an oversized head");
    assert_eq!(resp.status, 431);

    // Many headers that add up past the limit.
    let mut c = w.client(GOOD);
    let mut head = format!("GET /hello HTTP/1.1\r\nHost: {GOOD}\r\n");
    for i in 0..100 {
        head.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(150)));
    }
    head.push_str("\r\n");
    c.send(head.as_bytes()).unwrap();
    let resp = c
        .read_response("GET")
        .expect("an answer to an oversized head");
    assert_eq!(resp.status, 431);
    w.stop();
}

/// A request head of exactly `size` bytes: many short `Xn:v` lines (no space after the colon,
/// as HTTP allows) and one padding line, each header value padded with `pad` spaces on both
/// sides (whitespace the parser strips, but bytes the client sent all the same).
fn head_of(size: usize, pad: usize) -> String {
    let spaces = " ".repeat(pad);
    let mut head = format!("GET /hello HTTP/1.1\r\nHost: {GOOD}\r\n");
    let mut i = 0;
    loop {
        // Under hyper's 100-header bound (a separate limit): about 40 lines fill 8 KiB.
        let line = format!("X{i}:{spaces}{}{spaces}\r\n", "v".repeat(160));
        if head.len() + line.len() + 64 > size {
            break;
        }
        head.push_str(&line);
        i += 1;
    }
    let fill = size - head.len() - "Y:\r\n\r\n".len();
    head.push_str(&format!("Y:{}\r\n\r\n", "y".repeat(fill)));
    assert_eq!(head.len(), size);
    head
}

#[test]
fn the_head_limit_counts_the_bytes_sent() {
    // max_header_bytes bounds the head as it arrives, whatever its layout: compact header
    // lines count for what they are, and so does whitespace around values.
    let w = start_good("max_header_bytes = 8192", "");
    for (size, pad, want) in [
        (8192usize, 0usize, 200u16),
        (8193, 0, 431),
        (8192, 20, 200),
        (8193, 20, 431),
        (12_000, 200, 431),
    ] {
        let mut c = w.client(GOOD);
        let resp = c.roundtrip(head_of(size, pad).as_bytes(), "GET").unwrap();
        assert_eq!(
            resp.status, want,
            "a head of {size} bytes ({pad} spaces around each value)"
        );
    }
    w.stop();
}

#[test]
fn oversized_content_length_gets_413_before_the_body_is_sent() {
    let w = start_good("", "max_body_mb = 1");
    let mut c = w.client(GOOD);
    let resp = c.post(
        "/read",
        "application/octet-stream",
        &vec![b'k'; 1024 * 1024],
    );
    assert_eq!(resp.status, 200, "exactly the limit is allowed");
    assert_eq!(resp.text(), "1048576");

    // Only the head is sent: the answer must not wait for a body it will refuse.
    let mut c = w.client(GOOD);
    c.send(
        format!(
            "POST /read HTTP/1.1\r\nHost: {GOOD}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            2 * 1024 * 1024
        )
        .as_bytes(),
    )
    .unwrap();
    let resp = c
        .read_response("POST")
        .expect("an answer to an oversized body");
    assert_eq!(resp.status, 413, "{}", resp.text());

    // With Expect: 100-continue, the refusal comes instead of the 100.
    let mut c = w.client(GOOD);
    c.send(
        format!(
            "POST /read HTTP/1.1\r\nHost: {GOOD}\r\nExpect: 100-continue\r\n\
             Content-Length: {}\r\n\r\n",
            5 * 1024 * 1024
        )
        .as_bytes(),
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.stream().read(&mut buf).expect("an answer to Expect");
        assert!(n > 0, "connection closed without an answer");
        raw.extend_from_slice(&buf[..n]);
    }
    let first = String::from_utf8_lossy(&raw);
    assert!(
        first.starts_with("HTTP/1.1 413"),
        "expected 413 first, got {first:?}"
    );
    assert_eq!(body_text(&w, "/hello"), (200, "hello".to_owned()));
    w.stop();
}

#[test]
fn oversized_chunked_body_gets_413() {
    let w = start_good("", "max_body_mb = 1");
    let mut c = w.client(GOOD);
    let chunk = vec![b'c'; 64 * 1024];
    let pieces: Vec<&[u8]> = std::iter::repeat_n(chunk.as_slice(), 8).collect();
    let resp = c.request_chunked("POST", "/read", &[], &pieces);
    assert_eq!(resp.status, 200, "half the limit, chunked");
    assert_eq!(resp.text(), "524288");

    // Twice the limit, chunked: the size is only known by counting.
    let mut c = w.client(GOOD);
    let head = c.head_bytes("POST", "/read", &[("Transfer-Encoding", "chunked")], None);
    let mut stream = c.stream().try_clone().unwrap();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        stream.write_all(&head)?;
        for _ in 0..32 {
            stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
            stream.write_all(&chunk)?;
            stream.write_all(b"\r\n")?;
        }
        stream.write_all(b"0\r\n\r\n")
    });
    let resp = c
        .read_response("POST")
        .expect("an answer to an oversized body");
    assert_eq!(resp.status, 413, "{}", resp.text());
    // The writer may have been cut off by the server closing the connection; that is fine.
    let _ = writer.join().unwrap();

    // The worker is still there for the next request.
    assert_eq!(body_text(&w, "/hello"), (200, "hello".to_owned()));
    w.stop();
}

#[test]
fn stalled_request_head_is_closed_after_header_timeout() {
    let w = start_good("header_timeout_s = 1", "");
    // Half a head, then nothing.
    let mut c = w.client(GOOD);
    c.send(format!("GET /hello HTTP/1.1\r\nHost: {GOOD}\r\nX-Half").as_bytes())
        .unwrap();
    c.set_read_timeout(Duration::from_secs(20));
    match c.read_until_closed() {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                bytes.is_empty() || text.starts_with("HTTP/1.1 408"),
                "unexpected answer to a stalled head: {text:?}"
            );
        }
        Err(e) => panic!("the connection with a stalled head was not closed: {e}"),
    }

    // A head sent a byte at a time, forever (slowloris), is cut off as well.
    let mut c = w.client(GOOD);
    c.send(format!("GET /hello HTTP/1.1\r\nHost: {GOOD}\r\nX-Drip: ").as_bytes())
        .unwrap();
    c.set_read_timeout(Duration::from_millis(200));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut closed = false;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        if c.stream().write_all(b"a").is_err() {
            closed = true;
            break;
        }
        match c.stream().read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a head dripped a byte at a time was never cut off");

    // Prompt clients are unaffected.
    assert_eq!(body_text(&w, "/hello"), (200, "hello".to_owned()));
    w.stop();
}

#[test]
fn errors_made_by_the_front_carry_a_request_id() {
    // Every response has an x-request-id, also those the front makes before any app is
    // involved, so that a client's report can be matched with the log.
    let w = start_good("max_header_bytes = 8192", "max_body_mb = 1");
    let mut c = w.client(GOOD);
    let resp = c
        .roundtrip(
            format!("POST /read HTTP/1.1\r\nHost: {GOOD}\r\nContent-Length: 5000000\r\n\r\n")
                .as_bytes(),
            "POST",
        )
        .unwrap();
    assert_eq!(resp.status, 413);
    assert!(
        resp.header("x-request-id").is_some(),
        "413 without x-request-id"
    );
    let resp = w.get("nobody.localhost", "/");
    assert_eq!(resp.status, 404);
    assert!(
        resp.header("x-request-id").is_some(),
        "404 without x-request-id"
    );

    for size in [20_000, 200_000] {
        let mut c = w.client(GOOD);
        let _ = c.send(
            format!(
                "GET /hello HTTP/1.1\r\nHost: {GOOD}\r\nX-Big: {}\r\n\r\n",
                "b".repeat(size)
            )
            .as_bytes(),
        );
        let resp = c.read_response("GET").unwrap();
        assert_eq!(resp.status, 431);
    }
    // A head over the limit is refused while it is parsed, before it is a request with an id;
    // the refusal is still logged, with the client's address.
    assert!(
        w.wait_for_log_line(
            std::time::Duration::from_secs(5),
            &["request head too large"]
        ),
        "no log line for the 431:\n{}",
        w.logs()
    );
    w.stop();
}

fn kill(pid: &str) {
    signal(pid, "KILL");
}

fn signal(pid: &str, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Waits until `pid` is in one of `states` (the state letter of `/proc/PID/stat`), a process
/// that is gone counting as `X`. `kill` returns before its target has acted on the signal, which
/// happens only once the target runs: on a busy machine a worker could otherwise still be
/// blocked in `read` when the next request arrives, and the kernel lets a read that is woken
/// by data and a signal at once take the data before the signal stops or kills it (the worker
/// then consumed a request it never gave the app, which the master cannot tell from one it
/// did).
fn wait_for_state(pid: &str, states: &[char]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = support::stat_fields(pid.parse().unwrap())
            .and_then(|f| f.first()?.chars().next())
            .unwrap_or('X');
        if states.contains(&state) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} stayed in state {state}, not one of {states:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `GET /pid` on a thread of its own: its status and body once answered.
fn pid_in_background(w: &Warren) -> std::thread::JoinHandle<(u16, String)> {
    let addr = w.addr;
    std::thread::spawn(move || {
        let mut c = support::Client::connect(addr, GOOD);
        let resp = c.get("/pid");
        (resp.status, resp.text())
    })
}

fn zygote_pid(w: &Warren, app: &str) -> String {
    let line = w
        .log_lines(&["zygote ready", &format!("app=\"{app}\"")])
        .pop()
        .expect("zygote ready in the log");
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("pid="))
        .expect("the zygote's pid")
        .to_owned()
}

#[test]
fn a_request_is_not_failed_by_a_worker_that_died_while_idle() {
    // An idle worker dies (the OOM killer, say) and the master has not heard of it yet: the
    // zygote, which reports worker exits, is held stopped to make that window last. The next
    // request never reached any app code, so it must not get a 502: it should wait for a
    // replacement worker like any queued request.
    let w = start_good("", "");
    let (status, pid1) = body_text(&w, "/pid");
    assert_eq!(status, 200);
    let zygote = zygote_pid(&w, "good");
    signal(&zygote, "STOP");
    wait_for_state(&zygote, &['T']);
    let worker = support::host_pid(w.pid(), &pid1);
    kill(&worker);
    // Dead, its pipes closed; unreaped while the zygote is stopped.
    wait_for_state(&worker, &['Z', 'X']);
    let request = pid_in_background(&w);
    std::thread::sleep(Duration::from_millis(500));
    signal(&zygote, "CONT");
    let (status, text) = request.join().unwrap();
    assert_eq!(
        status,
        200,
        "a request sent to a worker that was already dead got {status}: {text}\n{}",
        w.logs()
    );
    assert_ne!(text, pid1);
    w.stop();
}

#[test]
fn a_request_left_unread_by_a_worker_that_died_runs_on_another() {
    // The worker is stopped, so the request the master writes into its pipe stays there; then
    // it is killed. The request never reached the app: it must run on the replacement, not
    // fail with a 502.
    let w = start_good("", "");
    let (status, pid1) = body_text(&w, "/pid");
    assert_eq!(status, 200);
    let host = support::host_pid(w.pid(), &pid1);
    signal(&host, "STOP");
    wait_for_state(&host, &['T']);
    let request = pid_in_background(&w);
    // Long enough for the master to have written the request into the stopped worker's pipe
    // (it does so as soon as the request arrives).
    std::thread::sleep(Duration::from_millis(1000));
    kill(&host);
    let (status, text) = request.join().unwrap();
    assert_eq!(
        status,
        200,
        "a request its worker never read got {status}: {text}\n{}",
        w.logs()
    );
    assert_ne!(text, pid1);
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["retrying on another worker", "bytes of the request unread"]
        ),
        "the retry names the unread request"
    );
    w.stop();
}

#[test]
fn a_request_whose_app_ran_is_not_retried_even_if_its_pipe_still_holds_bytes() {
    // A request head larger than a pipe's buffer is read by the worker in several reads, and
    // the frame that ends a request without a body stays in the pipe while the app runs. An
    // app that then kills its worker has run: the request must fail (502), not run again.
    let w = start_good("max_header_bytes = 262144", "");
    let pad = "p".repeat(100 * 1024);
    let mut c = w.client(GOOD);
    let resp = c.request("GET", "/exit", &[("X-Pad", &pad)], b"");
    assert_eq!(resp.status, 502, "{}", resp.text());
    w.wait_workers("good", 1);
    w.get(GOOD, "/hello").assert_ok();
    let logs = w.logs();
    assert_eq!(
        logs.matches("exits mid-request").count(),
        1,
        "the app ran once:\n{logs}"
    );
    assert!(!logs.contains("retrying on another worker"), "{logs}");
    w.stop();
}

#[test]
fn an_idle_worker_killed_from_outside_is_replaced() {
    let w = start_good("", "");
    let (status, pid1) = body_text(&w, "/pid");
    assert_eq!(status, 200);
    // The app reports its pid inside its namespace; the log and `kill` use the host's.
    let host = support::host_pid(w.pid(), &pid1);
    kill(&host);
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["worker", &format!("pid={host}"), "SIGKILL"]
        ),
        "the worker's death is not in the log:\n{}",
        w.logs()
    );
    let (status, pid2) = body_text(&w, "/pid");
    assert_eq!(status, 200, "after an idle worker was killed: {pid2}");
    assert_ne!(pid1, pid2);
    w.stop();
}

#[test]
fn a_killed_zygote_is_restarted_and_the_app_recovers() {
    let w = start_good("", "");
    assert_eq!(body_text(&w, "/hello"), (200, "hello".to_owned()));
    let zygote = zygote_pid(&w, "good");
    kill(&zygote);
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["app unavailable", "app=\"good\""]
        ),
        "the zygote's death is not in the log:\n{}",
        w.logs()
    );

    // Meanwhile every answer is a 503 with Retry-After (or already the recovered app).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = w.get(GOOD, "/hello");
        if resp.status == 200 {
            break;
        }
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert!(resp.header("retry-after").is_some());
        assert!(
            Instant::now() < deadline,
            "the app did not come back after its zygote was killed; log:\n{}",
            w.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        w.log_lines(&["zygote ready", "app=\"good\""]).len(),
        2,
        "expected a second zygote"
    );
    w.stop();
}

#[test]
fn a_client_stalling_mid_body_gets_408_and_frees_the_worker() {
    let w = start_good("body_timeout_s = 1", "");
    let mut c = w.client(GOOD);
    // Half of a promised body, then nothing.
    c.send(
        format!(
            "POST /read HTTP/1.1\r\nHost: {GOOD}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: 1000\r\n\r\n{}",
            "h".repeat(500)
        )
        .as_bytes(),
    )
    .unwrap();
    c.set_read_timeout(std::time::Duration::from_secs(20));
    let resp = c
        .read_response("POST")
        .expect("no answer to a stalled body");
    assert_eq!(resp.status, 408, "{}", resp.text());
    // The only worker is free again.
    let resp = w.get(GOOD, "/hello");
    assert_eq!(resp.status, 200);
    w.stop();
}
