//! PEP 3333 as an app sees it through warren: `environ`, `start_response` (with and without
//! `exc_info`), `write()`, `close()`, `wsgi.file_wrapper`, `wsgi.errors`, `wsgi.input`, and
//! how the response is framed on the wire. The fixture is `tests/apps/pep3333/app.py`, run with
//! one worker so that its module-level counters see every request.

mod support;

use std::io::Read;
use std::time::Duration;

use support::{Client, Framing, Response, Warren, fixture, parse_dump};

const HOST: &str = "pep.localhost";

fn start() -> Warren {
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.pep]
path = "{}"
entry = "app:application"
hosts = ["{HOST}"]
workers = 1
"#,
        fixture("pep3333")
    ));
    w.wait_workers("pep", 1);
    w
}

fn ok(resp: &Response) {
    resp.assert_ok();
}

/// The app's count of `close()` calls per tag, as `tag=n,...`.
fn closes(w: &Warren) -> String {
    let resp = w.get(HOST, "/closes");
    ok(&resp);
    resp.text()
}

fn str_value(env: &std::collections::BTreeMap<String, (String, Vec<u8>)>, key: &str) -> String {
    let (kind, value) = env
        .get(key)
        .unwrap_or_else(|| panic!("environ has no {key}; environ: {env:?}"));
    assert_eq!(kind, "str", "{key} is a {kind}, not a str");
    String::from_utf8(value.clone()).unwrap_or_else(|_| panic!("{key} is not ASCII: {value:?}"))
}

#[test]
fn environ_keys_values_and_types() {
    let w = start();
    let mut c = w.client(&format!("{HOST}:1234"));
    let resp = c.request(
        "GET",
        "/p/caf%C3%A9?a=1&b=%20x",
        &[
            ("User-Agent", "e2e-test"),
            ("X-Dup", "first"),
            ("X-Dup", "second"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
        ],
        b"",
    );
    ok(&resp);
    let env = parse_dump(&resp.text());

    // Every CGI-style key (no dot) holds a native str.
    for (key, (kind, _)) in &env {
        if !key.contains('.') {
            assert_eq!(kind, "str", "environ[{key:?}] is a {kind}, not a str");
        }
    }
    assert_eq!(str_value(&env, "REQUEST_METHOD"), "GET");
    assert_eq!(str_value(&env, "SCRIPT_NAME"), "");
    // PATH_INFO is percent-decoded and carried as latin-1: the UTF-8 bytes of "é" become two
    // characters whose latin-1 encoding gives those bytes back.
    assert_eq!(env["PATH_INFO"].0, "str");
    assert_eq!(env["PATH_INFO"].1, b"/p/caf\xc3\xa9");
    assert_eq!(str_value(&env, "QUERY_STRING"), "a=1&b=%20x");
    assert_eq!(str_value(&env, "SERVER_NAME"), "pep.localhost");
    assert_eq!(str_value(&env, "SERVER_PORT"), w.addr.port().to_string());
    assert_eq!(str_value(&env, "SERVER_PROTOCOL"), "HTTP/1.1");
    assert_eq!(str_value(&env, "REMOTE_ADDR"), "127.0.0.1");
    assert_eq!(str_value(&env, "HTTP_HOST"), "pep.localhost:1234");
    assert_eq!(str_value(&env, "HTTP_USER_AGENT"), "e2e-test");
    assert_eq!(str_value(&env, "HTTP_X_DUP"), "first,second");
    assert_eq!(str_value(&env, "HTTP_COOKIE"), "a=1; b=2");
    assert!(
        !env.contains_key("CONTENT_TYPE"),
        "a GET without a body has no CONTENT_TYPE"
    );
    if let Some((_, v)) = env.get("CONTENT_LENGTH") {
        assert!(v.is_empty() || v == b"0", "CONTENT_LENGTH of a GET: {v:?}");
    }

    let typed = |key: &str, kind: &str, repr: &str| {
        let (k, v) = env
            .get(key)
            .unwrap_or_else(|| panic!("environ has no {key}"));
        assert_eq!(k, kind, "type of {key}");
        assert_eq!(String::from_utf8_lossy(v), repr, "value of {key}");
    };
    typed("wsgi.version", "tuple", "(1, 0)");
    assert_eq!(str_value(&env, "wsgi.url_scheme"), "http");
    typed("wsgi.multithread", "bool", "False");
    typed("wsgi.multiprocess", "bool", "True");
    typed("wsgi.run_once", "bool", "False");
    // Chunked request bodies reach the app, which reads wsgi.input to its end.
    typed("wsgi.input_terminated", "bool", "True");
    let methods = |key: &str| String::from_utf8_lossy(&env[key].1).into_owned();
    assert!(env.contains_key("wsgi.input"), "no wsgi.input");
    assert!(env.contains_key("wsgi.errors"), "no wsgi.errors");
    for m in ["read", "readline", "readlines"] {
        assert!(methods("wsgi.input").contains(m), "wsgi.input lacks {m}()");
    }
    for m in ["write", "writelines", "flush"] {
        assert!(
            methods("wsgi.errors").contains(m),
            "wsgi.errors lacks {m}()"
        );
    }

    // A request id on every response, different per request.
    let id1 = resp
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned();
    let resp = c.request(
        "POST",
        "/environ",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"k=v",
    );
    ok(&resp);
    let id2 = resp
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned();
    assert_ne!(id1, id2, "two requests got the same x-request-id");
    let env = parse_dump(&resp.text());
    assert_eq!(str_value(&env, "REQUEST_METHOD"), "POST");
    assert_eq!(str_value(&env, "PATH_INFO"), "/environ");
    assert_eq!(str_value(&env, "QUERY_STRING"), "");
    assert_eq!(
        str_value(&env, "CONTENT_TYPE"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(str_value(&env, "CONTENT_LENGTH"), "3");
    assert!(!env.contains_key("HTTP_CONTENT_TYPE"));
    assert!(!env.contains_key("HTTP_CONTENT_LENGTH"));
    // Nothing of the previous request (its headers, the app's changes) carries over.
    for key in [
        "HTTP_X_DUP",
        "HTTP_COOKIE",
        "HTTP_USER_AGENT",
        "fixture.leaked",
    ] {
        assert!(
            !env.contains_key(key),
            "{key} carried over from the previous request"
        );
    }
    assert_eq!(str_value(&env, "SCRIPT_NAME"), "");

    // An HTTP/1.0 request says so in SERVER_PROTOCOL.
    let mut c10 = w.client(HOST);
    c10.send(format!("GET /environ HTTP/1.0\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    let resp = c10.read_response("GET").unwrap();
    ok(&resp);
    let env = parse_dump(&resp.text());
    assert_eq!(str_value(&env, "SERVER_PROTOCOL"), "HTTP/1.0");
    drop((c, c10));
    w.stop();
}

#[test]
fn wsgiref_validator_accepts_get_and_post() {
    let w = start();
    let mut c = w.client(HOST);
    let resp = c.get("/validate?x=1");
    ok(&resp);
    assert_eq!(resp.text(), "hello");
    let resp = c.post("/validate", "text/plain", b"some body");
    ok(&resp);
    assert_eq!(resp.text(), "got some body");
    let resp = c.request_chunked("POST", "/validate", &[("Content-Type", "text/plain")], &[]);
    ok(&resp);
    assert_eq!(resp.text(), "got ");
    drop(c);
    let logs = w.stop();
    for bad in [
        "AssertionError",
        "WSGIWarning",
        "garbage collected",
        "Traceback",
    ] {
        assert!(
            !logs.contains(bad),
            "the validator complained ({bad}); log:\n{logs}"
        );
    }
}

#[test]
fn start_response_with_exc_info_before_headers_replaces_the_status() {
    let w = start();
    let resp = w.get(HOST, "/exc-before");
    assert_eq!(resp.status, 500, "body: {}", resp.text());
    assert_eq!(resp.header("x-error-page"), Some("app"));
    assert_eq!(resp.text(), "app error page");
    assert!(resp.complete);
    w.stop();
}

#[test]
fn start_response_with_exc_info_after_headers_reraises() {
    let w = start();
    let resp = w.get(HOST, "/exc-after");
    ok(&resp);
    assert_eq!(resp.text(), "first;reraised=yes");
    w.stop();
}

#[test]
fn start_response_twice_without_exc_info_is_refused() {
    let w = start();
    let resp = w.get(HOST, "/twice");
    ok(&resp);
    assert_eq!(resp.text(), "second call refused");
    w.stop();
}

#[test]
fn write_callable_and_iterable_both_reach_the_client() {
    let w = start();
    let resp = w.get(HOST, "/write");
    ok(&resp);
    assert_eq!(resp.text(), "one,two,three");
    w.stop();
}

#[test]
fn close_is_called_after_a_normal_response() {
    let w = start();
    let resp = w.get(HOST, "/close/normal");
    ok(&resp);
    assert_eq!(resp.text(), "abc");
    assert_eq!(closes(&w), "normal=1");
    w.stop();
}

#[test]
fn close_that_raises_does_not_cut_a_complete_response() {
    error_after_the_whole_body(
        "/close/close-raises",
        "close-raises-marker",
        "close-raises=1",
    );
}

#[test]
fn an_iterator_that_raises_after_its_whole_body_does_not_cut_the_response() {
    error_after_the_whole_body(
        "/complete-then-raise",
        "raised-after-the-body-marker",
        "complete-then-raise=1",
    );
}

/// `path` answers "whole body" and then raises (in its iterator or its close()): the client
/// gets the whole response, the exception (with `marker`) is logged against the app, close()
/// was called once (`closed`), and the worker and the connection carry on.
fn error_after_the_whole_body(path: &str, marker: &str, closed: &str) {
    let w = start();
    let mut c = w.client(HOST);
    let resp = c.get(path);
    ok(&resp);
    assert_eq!(resp.text(), "whole body");
    assert!(
        w.wait_for_log_line(Duration::from_secs(10), &[marker, "app=\"pep\""]),
        "the exception is not in the log:\n{}",
        w.logs()
    );
    let resp = c.get("/write");
    ok(&resp);
    assert_eq!(resp.text(), "one,two,three");
    drop(c);
    assert_eq!(closes(&w), closed);
    w.stop();
}

#[test]
fn start_response_may_be_called_inside_the_returned_generator() {
    let w = start();
    let resp = w.get(HOST, "/lazy-start");
    ok(&resp);
    assert_eq!(resp.header("x-lazy"), Some("yes"));
    assert_eq!(resp.text(), "started late");
    w.stop();
}

#[test]
fn close_is_called_when_iteration_raises() {
    let w = start();
    let resp = w.get(HOST, "/close/raise");
    assert_eq!(resp.status, 200);
    assert!(
        !resp.complete,
        "a body cut by an exception must not look complete (framing {:?}, body {:?})",
        resp.framing,
        resp.text()
    );
    // What got through before the cut is a prefix of what the app yielded.
    assert!(
        "partial-body;".starts_with(&resp.text()),
        "unexpected body {:?}",
        resp.text()
    );
    assert_eq!(closes(&w), "raise=1");
    w.stop();
}

#[test]
fn close_is_called_when_the_client_disconnects_mid_body() {
    let w = start();
    let mut c = w.client(HOST);
    c.send(format!("GET /close/disconnect HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    // Read the head and a little of the endless body, then hang up.
    let mut got = 0usize;
    let mut buf = [0u8; 16 * 1024];
    while got < 200 * 1024 {
        let mut stream = c.stream();
        let n = stream.read(&mut buf).expect("reading the streamed body");
        assert!(n > 0, "the server ended the endless body");
        got += n;
    }
    c.close();

    // The worker should notice (its next chunk has nowhere to go), stop iterating and call
    // close(). The app's own bound on the body is 30 s; wait for less than that.
    let mut probe = w.client(HOST);
    probe.set_read_timeout(Duration::from_secs(15));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        let resp = probe
            .roundtrip(
                format!("GET /closes HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
                "GET",
            )
            .unwrap_or_else(|e| {
                panic!(
                    "no answer from the app after the client of an endless response left ({e}): \
                     its only worker is still iterating a body nobody reads, and close() was \
                     not called"
                )
            });
        last = resp.text();
        if last.contains("disconnect=1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        last.contains("disconnect=1"),
        "close() was not called after the client disconnected (closes: {last:?})"
    );
    drop(probe);
    w.stop();
}

#[test]
fn a_write_stream_does_not_hold_the_worker_after_the_client_left() {
    // An app that streams with write() must learn that its client is gone (gunicorn, for one,
    // makes write() raise), or be stopped: otherwise the worker writes into the void until the
    // app itself gives up (30 s for this route), and with one worker the app serves nobody.
    let w = start();
    let mut c = w.client(HOST);
    c.send(format!("GET /write-endless HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    let mut got = 0usize;
    let mut buf = [0u8; 16 * 1024];
    while got < 200 * 1024 {
        let n = c
            .stream()
            .read(&mut buf)
            .expect("reading the streamed body");
        assert!(n > 0, "the server ended the endless body");
        got += n;
    }
    c.close();
    let mut probe = w.client(HOST);
    probe.set_read_timeout(Duration::from_secs(15));
    let resp = probe
        .roundtrip(
            format!("GET /closes HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
            "GET",
        )
        .unwrap_or_else(|e| {
            panic!(
                "no answer from the app after the client of a write() stream left ({e}): its \
                 only worker is still writing a body nobody reads"
            )
        });
    assert_eq!(resp.status, 200);
    drop(probe);
    w.stop();
}

#[test]
fn close_is_called_after_a_head_request_on_a_streamed_body() {
    // A HEAD response has no body, so nobody will ever read what the app yields: the server
    // should stop iterating and call close() rather than run the generator to its end.
    let w = start();
    let mut c = w.client(HOST);
    let resp = c.request("HEAD", "/close/disconnect", &[], b"");
    assert_eq!(resp.status, 200);
    drop(c);
    let mut probe = w.client(HOST);
    probe.set_read_timeout(Duration::from_secs(15));
    let resp = probe
        .roundtrip(
            format!("GET /closes HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
            "GET",
        )
        .unwrap_or_else(|e| {
            panic!(
                "no answer from the app after a HEAD request on an endless body ({e}): its only \
                 worker is still producing a body nobody will read"
            )
        });
    assert!(
        resp.text().contains("disconnect=1"),
        "close() was not called after a HEAD request (closes: {:?})",
        resp.text()
    );
    drop(probe);
    w.stop();
}

#[test]
fn file_wrapper_sends_the_file_and_closes_it() {
    let w = start();
    let resp = w.get(HOST, "/close/file");
    ok(&resp);
    let want = std::fs::read(format!("{}/app.py", fixture("pep3333"))).unwrap();
    assert_eq!(resp.body.len(), want.len(), "file_wrapper body length");
    assert!(resp.body == want, "file_wrapper body differs from the file");
    assert_eq!(closes(&w), "file=1");
    w.stop();
}

#[test]
fn wsgi_errors_reaches_the_log() {
    let w = start();
    let resp = w.get(HOST, "/errors?marker=errors-marker-5521");
    ok(&resp);
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["wsgi.errors says errors-marker-5521", "app=\"pep\""]
        ),
        "wsgi.errors output is not in the log with app=pep:\n{}",
        w.logs()
    );
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["second line errors-marker-5521", "app=\"pep\""]
        ),
        "wsgi.errors.writelines output is not in the log:\n{}",
        w.logs()
    );
    w.stop();
}

#[test]
fn exception_before_headers_gives_500_and_a_traceback() {
    let w = start();
    let mut c = w.client(HOST);
    let resp = c.get("/error-before");
    assert_eq!(resp.status, 500, "body: {}", resp.text());
    assert!(resp.complete);
    assert!(
        !resp.text().contains("exception-before-headers-marker"),
        "the 500 page leaks the exception to the client"
    );
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["exception-before-headers-marker", "app=\"pep\""]
        ),
        "the exception is not in the log:\n{}",
        w.logs()
    );
    assert!(
        w.wait_for_log_line(Duration::from_secs(10), &["Traceback", "app=\"pep\""]),
        "no traceback in the log:\n{}",
        w.logs()
    );
    // The worker survives and the connection stays usable.
    let resp = c.get("/write");
    ok(&resp);
    assert_eq!(resp.text(), "one,two,three");
    drop(c);
    w.stop();
}

#[test]
fn exception_after_the_first_chunk_cuts_the_response() {
    let w = start();
    let mut c = w.client(HOST);
    let resp = c.get("/error-after");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.framing, Framing::Chunked);
    assert!(
        !resp.complete,
        "the client got a clean end of a body the app failed to finish ({} bytes)",
        resp.body.len()
    );
    assert!(resp.body.len() <= 1000 && resp.body.iter().all(|&b| b == b'x'));
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["exception-after-first-chunk-marker", "app=\"pep\""]
        ),
        "the exception is not in the log:\n{}",
        w.logs()
    );
    // The worker is still fine.
    let resp = w.get(HOST, "/write");
    ok(&resp);
    drop(c);
    w.stop();
}

#[test]
fn head_gets_headers_but_no_body() {
    let w = start();
    let mut c = w.client(HOST);
    let resp = c.request("HEAD", "/length?size=11", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("11"));
    let resp = c.request("HEAD", "/nolength", &[], b"");
    assert_eq!(resp.status, 200);
    // Had a body been sent after either head, it would be parsed as the next response.
    c.set_read_timeout(Duration::from_secs(10));
    let resp = c.get("/length?size=11");
    ok(&resp);
    assert_eq!(resp.text(), "hello world");
    drop(c);
    w.stop();
}

#[test]
fn no_body_for_204_and_304() {
    let w = start();
    let mut c = w.client(HOST);
    for path in [
        "/status/204",
        "/status/304",
        "/status/204?body=1",
        "/status/304?body=1",
    ] {
        let resp = c.get(path);
        let code: u16 = path[8..11].parse().unwrap();
        assert_eq!(resp.status, code, "{path}");
        assert_eq!(resp.header("x-status"), Some(&path[8..11]));
        assert!(
            resp.header("transfer-encoding").is_none(),
            "{path}: {code} with Transfer-Encoding"
        );
        if code == 204 {
            assert!(
                resp.header("content-length").is_none_or(|v| v == "0"),
                "{path}: 204 with a Content-Length"
            );
        }
        // The next response on the connection parses: no stray body bytes were sent.
        let next = c.get("/length?size=11");
        ok(&next);
        assert_eq!(next.text(), "hello world", "after {path}");
    }
    drop(c);
    w.stop();
}

#[test]
fn content_length_when_the_app_gives_one_chunked_otherwise() {
    let w = start();
    let mut c = w.client(HOST);
    let resp = c.get("/length?size=11");
    ok(&resp);
    assert_eq!(resp.framing, Framing::Length(11));
    assert!(resp.header("transfer-encoding").is_none());

    let resp = c.get("/length?size=1048576");
    ok(&resp);
    assert_eq!(resp.framing, Framing::Length(1_048_576));
    assert_eq!(resp.body.len(), 1_048_576);
    assert!(resp.body.starts_with(b"hello worldhello world"));

    let resp = c.get("/nolength");
    ok(&resp);
    assert_eq!(
        resp.framing,
        Framing::Chunked,
        "a streamed body of unknown length"
    );
    assert_eq!(resp.body.len(), 4 * 256 * 1024);
    for (i, part) in resp.body.chunks(256 * 1024).enumerate() {
        assert!(part.iter().all(|&b| b == b'a' + i as u8), "part {i}");
    }
    // Still one connection: keep-alive after both kinds of framing.
    let resp = c.get("/length?size=11");
    ok(&resp);
    drop(c);
    w.stop();
}

const BODY: &[u8] = b"line1\nline2\nlast";

fn post_input(c: &mut Client, how: &str) -> String {
    let resp = c.post(&format!("/input/{how}"), "text/plain", BODY);
    ok(&resp);
    resp.text()
}

#[test]
fn wsgi_input_read_readline_iteration_readlines() {
    let w = start();
    let mut c = w.client(HOST);
    assert_eq!(post_input(&mut c, "read"), r"16 16 [b'line1\nline2\nlast']");
    assert_eq!(
        post_input(&mut c, "readn?n=5"),
        r"16 16 [b'line1', b'\nline', b'2\nlas', b't']"
    );
    assert_eq!(
        post_input(&mut c, "readline"),
        r"16 16 [b'line1\n', b'line2\n', b'last']"
    );
    assert_eq!(
        post_input(&mut c, "readline?size=4"),
        r"16 16 [b'line', b'1\n', b'line', b'2\n', b'last']"
    );
    assert_eq!(
        post_input(&mut c, "iter"),
        r"16 16 [b'line1\n', b'line2\n', b'last']"
    );
    assert_eq!(
        post_input(&mut c, "readlines"),
        r"16 16 [b'line1\n', b'line2\n', b'last', b'<rest>']"
    );
    assert_eq!(
        post_input(&mut c, "readlines?hint=3"),
        r"16 16 [b'line1\n', b'<rest>line2\nlast']"
    );

    // An empty body reads as empty, and read past the end keeps returning b''.
    let resp = c.post("/input/read", "text/plain", b"");
    ok(&resp);
    assert_eq!(resp.text(), "0 0 [b'']");

    // A body much larger than one frame: lines that straddle frames come out whole.
    let mut big = vec![b'a'; 100_000];
    big.push(b'\n');
    big.extend(std::iter::repeat_n(b'b', 200_000));
    big.push(b'\n');
    big.extend(std::iter::repeat_n(b'c', 10));
    let resp = c.post("/input/readline?summary=1", "text/plain", &big);
    ok(&resp);
    assert_eq!(
        resp.text(),
        "300012 300012 [(100001, b'a'), (200001, b'b'), (10, b'c')]"
    );
    let resp = c.post("/input/readn?n=65536&summary=1", "text/plain", &big);
    ok(&resp);
    assert_eq!(
        resp.text(),
        "300012 300012 [(65536, b'a'), (65536, b'a'), (65536, b'b'), (65536, b'b'), (37868, b'b')]"
    );
    drop(c);
    w.stop();
}

#[test]
fn chunked_request_bodies() {
    let w = start();
    let mut c = w.client(HOST);
    let resp = c.request_chunked(
        "POST",
        "/input/read",
        &[("Content-Type", "text/plain")],
        &[b"hello ", b"chunked ", b"world"],
    );
    ok(&resp);
    assert_eq!(resp.text(), "19 <absent> [b'hello chunked world']");

    let resp = c.request_chunked(
        "POST",
        "/input/readline",
        &[("Content-Type", "text/plain")],
        &[b"ab", b"c\nd", b"e\n", b"f"],
    );
    ok(&resp);
    assert_eq!(resp.text(), r"8 <absent> [b'abc\n', b'de\n', b'f']");

    let resp = c.request_chunked(
        "POST",
        "/input/readn?n=3",
        &[("Content-Type", "text/plain")],
        &[b"12", b"3456", b"7"],
    );
    ok(&resp);
    assert_eq!(resp.text(), "7 <absent> [b'123', b'456', b'7']");

    // A large chunked body in many odd-sized chunks.
    let piece = vec![b'q'; 7777];
    let pieces: Vec<&[u8]> = std::iter::repeat_n(piece.as_slice(), 100).collect();
    let resp = c.request_chunked(
        "POST",
        "/input/read?summary=1",
        &[("Content-Type", "application/octet-stream")],
        &pieces,
    );
    ok(&resp);
    assert_eq!(resp.text(), "777700 <absent> [(777700, b'q')]");

    // The connection is still in step after chunked bodies.
    let resp = c.get("/length?size=11");
    ok(&resp);
    drop(c);
    w.stop();
}

#[test]
fn repeated_response_headers_reach_the_client() {
    let w = start();
    let resp = w.get(HOST, "/cookies");
    ok(&resp);
    assert_eq!(
        resp.headers_named("set-cookie"),
        ["a=1; Path=/", "b=2; Path=/"]
    );
    assert_eq!(resp.header("x-custom-header"), Some("kept"));
    w.stop();
}

#[test]
fn the_apps_status_line_reaches_the_client() {
    // PEP 3333's own example of a status is "999 Message here": the app's code and reason
    // phrase are what the client gets.
    let w = start();
    let mut c = w.client(HOST);
    let resp = c.get("/custom-status");
    assert_eq!(resp.status, 299);
    assert_eq!(
        resp.reason, "Message Here",
        "the app's reason phrase was replaced"
    );
    assert_eq!(resp.text(), "ok");
    drop(c);
    w.stop();
}

/// What `/wrong-length?send=N` returns (see `wrong_length` in the fixture).
fn wrong_length_body(send: usize) -> Vec<u8> {
    let spill: &[u8] = b"HTTP/1.1 299 Spilled\r\nContent-Length: 0\r\n\r\n";
    let mut body = b"abcde".to_vec();
    while body.len() < send {
        body.extend_from_slice(spill);
    }
    body.truncate(send);
    body
}

#[test]
fn wrong_content_length_from_the_app_cannot_desync_the_connection() {
    let w = start();
    // A list is checked whole; an iterator's blocks go out one by one (and the worker ends
    // the response itself once the declared length has gone out).
    for (claim, send, iter) in [(100usize, 5usize, 0), (5, 200, 0), (100, 5, 1), (5, 200, 1)] {
        let mut c = w.client(HOST);
        c.send(
            format!(
                "GET /wrong-length?claim={claim}&send={send}&iter={iter} HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
                 GET /length?size=11 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        c.set_read_timeout(Duration::from_secs(10));
        let first = c.read_response("GET").unwrap_or_else(|e| {
            panic!(
                "Content-Length {claim} with a {send}-byte body: no response at all ({e}); log:\n{}",
                w.logs()
            )
        });
        assert_ne!(first.status, 299, "the app's body was read as a response");
        if first.status == 200 {
            // Whatever arrived is the app's body, not the next response swallowed into it.
            let app_body = wrong_length_body(send);
            assert!(
                app_body.starts_with(&first.body),
                "Content-Length {claim} with a {send}-byte body: the client read {:?} as the body",
                first.text()
            );
        }
        if first.complete && !first.closes() {
            match c.read_response("GET") {
                Ok(second) => {
                    assert_eq!(
                        (second.status, second.text().as_str()),
                        (200, "hello world"),
                        "Content-Length {claim} with a {send}-byte body: the next response on \
                         the connection is not the next request's"
                    );
                }
                Err(e) => assert!(
                    e.kind() != std::io::ErrorKind::TimedOut,
                    "the connection hangs after a wrong Content-Length"
                ),
            }
        }
    }
    let logs = w.stop();
    assert!(
        !logs.contains("panicked"),
        "warren panicked on an app's wrong Content-Length:\n{logs}"
    );
    // The iterator that went past its length was stopped there, and the log says so.
    assert!(
        logs.contains("went past its Content-Length"),
        "no word of the body past its Content-Length:\n{logs}"
    );
}

#[test]
fn a_header_value_with_crlf_is_refused_not_sent() {
    let w = start();
    let mut c = w.client(HOST);
    let resp = c.get("/inject");
    assert!(
        resp.header("x-injected").is_none(),
        "the app injected a header: {:?}",
        resp.headers
    );
    assert_eq!(
        resp.status, 500,
        "an invalid header from the app is an app error"
    );
    // The connection is still in step.
    let resp = c.get("/length?size=11");
    ok(&resp);
    assert_eq!(resp.text(), "hello world");
    drop(c);
    w.stop();
}

#[test]
fn path_info_is_decoded_once() {
    let w = start();
    let resp = w.get(HOST, "/p/%2541%20x/a%2Fb");
    ok(&resp);
    let env = parse_dump(&resp.text());
    // %25 is a literal '%': the "%41" after it must stay as it is.
    assert_eq!(str_value(&env, "PATH_INFO"), "/p/%41 x/a/b");
    w.stop();
}

#[test]
fn an_overlong_app_log_line_is_one_truncated_event() {
    // warren takes at most 8 KiB of a line an app writes; the rest of that line is dropped
    // (as the master documents), not logged as further lines of their own.
    let w = start();
    let resp = w.get(HOST, "/long-log?n=20000&marker=tail-marker-7731");
    ok(&resp);
    let resp = w.get(HOST, "/errors?marker=after-long-line-7731");
    ok(&resp);
    assert!(
        w.wait_for_log_line(
            Duration::from_secs(10),
            &["wsgi.errors says after-long-line-7731"]
        ),
        "later output is missing from the log:\n{}",
        w.logs()
    );
    let events: Vec<String> = w.log_lines(&["LLLLLLLLLL", "app=\"pep\""]);
    assert_eq!(
        events.len(),
        1,
        "one 20 KB line became {} log events",
        events.len()
    );
    assert!(
        w.log_lines(&["tail-marker-7731"]).is_empty(),
        "the part past the limit was logged"
    );
    w.stop();
}

#[test]
fn an_app_flooding_its_log_is_rate_limited() {
    // 20,000 lines at once: warren keeps a burst of them, says how many it dropped, and goes
    // on serving. A hostile app cannot fill the disk through warren's own log.
    let w = start();
    let resp = w.get(HOST, "/log-flood?n=20000");
    ok(&resp);
    // A line once the budget has refilled a little is let through and reports the drop.
    std::thread::sleep(Duration::from_millis(1100));
    let resp = w.get(HOST, "/errors?marker=after-flood-5521");
    ok(&resp);
    assert!(
        w.wait_for_log_line(Duration::from_secs(10), &["suppressed"]),
        "no line says app output was suppressed:\n{}",
        &w.logs()[..w.logs().len().min(2000)]
    );
    let kept = w.log_lines(&["flood-line"]).len();
    assert!(kept >= 100, "only {kept} lines of a burst were kept");
    assert!(
        kept < 10_000,
        "{kept} of 20000 flood lines reached the log: no rate limit"
    );
    let resp = w.get(HOST, "/length?size=11");
    ok(&resp);
    w.stop();
}
