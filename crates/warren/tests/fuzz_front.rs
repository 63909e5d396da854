//! Property tests of the front's request handling and of the response path, over raw bytes
//! against the real `warren` binary on loopback. The fixture is `tests/apps/fuzz/app.py`: an
//! **echo** role that reads `wsgi.input` as PEP 3333 frameworks do and reports what it saw, and
//! a **respond as told** role (`/respond?...`) that produces the response its query describes.
//!
//! One warren per test function, many cases against it, each on a fresh connection, each
//! followed by a control request on another fresh connection (warren must keep serving), and
//! no `panicked at` in warren's log.
//!
//! **Requests** ([`requests_are_framed_once_and_hosts_validated`]): raw request bytes built
//! from pieces (methods, the four target forms, versions, `Host` headers, `Content-Length`,
//! `Transfer-Encoding`, bodies framed right or wrong, pipelined pairs), then mutated a byte or
//! two. A strict reference reading of RFC 9112 ([`oracle`]) says, for the exact bytes sent,
//! what each request is: one that must reach the app with a known body, one a server may
//! refuse or accept (then with that body), one that must be refused, or one that is
//! incomplete. Checked on every case:
//! - every reply is well-formed HTTP/1.1 (parsed strictly with `httparse`: a final status
//!   200–599 or a 1xx before it, a body framed by one digits-only `Content-Length`, chunked,
//!   or the connection's end);
//! - **the differential check**: whenever the echo app answered, the `CONTENT_LENGTH` it saw
//!   equals the bytes it could read (nothing past them), and both equal the body the request
//!   framed (its valid `Content-Length`, or its decoded chunked body); a request whose framing
//!   is ambiguous or invalid gets a 4xx/5xx and its connection closes: it never reaches the
//!   app with another idea of its body, and nothing after it is read as a request;
//! - the app's `HTTP_HOST` is the validated host of the request (the target's authority in
//!   absolute form; no `@`, a port of digits only), an unroutable or invalid host never
//!   reaches the app, and neither does `CONNECT`.
//!
//! **Responses** ([`responses_are_relayed_well_formed_or_502`]): the app answers with odd
//! statuses, many or large headers, right, wrong and malformed `Content-Length` values, over
//! a list or a generator of blocks. The client always gets a well-formed response whose
//! framing matches its body: the app's bytes, all of them or (PEP 3333) no more than the
//! length it declared; a body shorter than its declared length may only end with the
//! connection, after a prefix of the app's bytes, so that the client sees the truncation. Or a 502
//! (a 500 for a status the worker itself refuses) for what warren cannot relay: a status
//! outside 200–599 (1xx included), a head over `server.max_response_headers` lines or
//! `server.max_response_header_bytes` bytes (these must be 502s), a malformed length (which
//! may instead be dropped, the body framed by warren). Never an empty
//! reply, never a status the app did not give except those, no header lost or changed, no
//! `Content-Length` on a 204.
//!
//! Cases: `WARREN_FUZZ_CASES` (default 300 per property); seeds are proptest's deterministic
//! default, so a run is reproducible. A failure prints the raw bytes of the (shrunk) case.
//! `WARREN_FUZZ_REPORT_ALL=1` goes on after a failure, printing every failing case, and fails
//! at the end with their count (for triage; shrinking is then skipped).

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use support::{Warren, crc32_update, fixture, slow};

/// The app's hosts (the config lower-cases them; requests may not).
const HOSTS: [&str; 3] = ["fuzz.test", "h.test", "127.0.0.1"];

/// `max_body_mb` of the app, in bytes.
const MAX_BODY: u64 = 1 << 20;

/// `server.max_response_headers` and `server.max_response_header_bytes` (their defaults): an
/// app's head past either is a 502.
const MAX_RESPONSE_HEADERS: usize = 100;
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// How long one response may take. Every answer here is small and local: a reply that takes
/// this long is a reply that is not coming (warren is waiting for bytes the case never sends).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection that must end gets to end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

fn start() -> Warren {
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.fuzz]
path = "{}"
entry = "app:application"
hosts = ["fuzz.test", "h.test", "127.0.0.1"]
workers = 2
max_body_mb = 1
"#,
        fixture("fuzz")
    ));
    w.wait_workers("fuzz", 2);
    w
}

fn cases() -> u32 {
    std::env::var("WARREN_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

fn report_all() -> bool {
    std::env::var_os("WARREN_FUZZ_REPORT_ALL").is_some_and(|v| v != "0")
}

/// Runs `check` on `cases()` values of `strategy` against `w`, then the control request and
/// the panic check after each; panics with the shrunk failing case.
fn run<S>(w: &Warren, strategy: S, check: impl Fn(&Warren, &S::Value) -> Result<(), String>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let all = report_all();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        // Each shrinking step is a real exchange, some of them waiting for a timeout.
        max_shrink_iters: if all { 0 } else { 200 },
        failure_persistence: None,
        ..Config::default()
    });
    let failures = std::cell::Cell::new(0u32);
    // Panics seen so far, and the case before this one: a panic's log line may arrive after
    // the case that caused it was checked.
    let panics = std::cell::Cell::new(0usize);
    let previous = std::cell::RefCell::new(String::new());
    let result = runner.run(&strategy, |case| {
        let outcome = check(w, &case)
            .and_then(|()| control(w))
            .and_then(|()| no_panic(w, &panics, &previous.borrow()));
        *previous.borrow_mut() = format!("{case:?}");
        match outcome {
            Ok(()) => Ok(()),
            Err(why) if all => {
                failures.set(failures.get() + 1);
                eprintln!("FAILING CASE {case:?}\n  {why}\n");
                // Whatever the case did, the next one starts from a warren that answers.
                let _ = control(w);
                Ok(())
            }
            Err(why) => Err(TestCaseError::fail(why)),
        }
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, case)) => {
            panic!(
                "failing case (shrunk): {case:?}\n{why}\nwarren's log:\n{}",
                w.logs()
            )
        }
        Err(e) => panic!("{e}"),
    }
    assert_eq!(
        failures.get(),
        0,
        "{} failing cases (printed above)",
        failures.get()
    );
}

/// A request on a fresh connection gets the echo app's 200: warren still serves.
fn control(w: &Warren) -> Result<(), String> {
    let mut c = Conn::open(w.addr)?;
    c.send(b"GET /control HTTP/1.1\r\nHost: fuzz.test\r\nConnection: close\r\n\r\n")?;
    match c.response(false)? {
        Some(r) if r.status == 200 && r.role() == Some("echo") && r.complete => Ok(()),
        Some(r) => Err(format!(
            "control request on a fresh connection got {} {:?}",
            r.status,
            esc(&r.body)
        )),
        None => Err("control request on a fresh connection got no reply".into()),
    }
}

/// No new `panicked at` line in warren's log since the last look (with the line after it,
/// which holds the message).
fn no_panic(w: &Warren, seen: &std::cell::Cell<usize>, previous: &str) -> Result<(), String> {
    // warren writes a panic's lines before its connection ends, but this process reads them
    // on a thread of its own: a moment lets them arrive, so that a panic is blamed on the case
    // that caused it (shrinking relies on that).
    std::thread::sleep(Duration::from_millis(10));
    let logs = w.logs();
    let lines: Vec<&str> = logs.lines().collect();
    let at: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("panicked at"))
        .collect();
    if at.len() <= seen.get() {
        return Ok(());
    }
    let i = at[seen.get()];
    seen.set(at.len());
    Err(format!(
        "warren panicked: {} {} (the case before this one: {previous})",
        lines[i],
        lines.get(i + 1).unwrap_or(&"")
    ))
}

/// Bytes as a Rust byte-string literal.
fn esc(bytes: &[u8]) -> String {
    let mut s = String::from("b\"");
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

/// Long bodies shortened for messages.
fn esc_short(bytes: &[u8]) -> String {
    if bytes.len() <= 600 {
        esc(bytes)
    } else {
        format!(
            "{}...({} bytes)...{}",
            esc(&bytes[..300]),
            bytes.len() - 400,
            esc(&bytes[bytes.len() - 100..])
        )
    }
}

// ---------------------------------------------------------------------------------------------
// A strict client: one connection, responses parsed with httparse.

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Everything received, for messages.
    seen: Vec<u8>,
}

/// A response as received.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// False when the connection ended before the framing said the body was done.
    complete: bool,
    /// The body was delimited by the connection's end.
    close_delimited: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn role(&self) -> Option<&str> {
        self.header("x-fuzz-role")
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn closes(&self) -> bool {
        self.close_delimited
            || self
                .header("connection")
                .is_some_and(|v| v.to_ascii_lowercase().windows(5).any(|w| w == b"close"))
    }
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect_timeout(&addr, slow(Duration::from_secs(10)))
            .map_err(|e| format!("connecting: {e}"))?;
        stream
            .set_read_timeout(Some(slow(REPLY_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(slow(REPLY_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: Vec::new(),
            seen: Vec::new(),
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("sending: {e}"))
    }

    /// Sends what the server takes: a server that refused a request may close before the
    /// rest of the bytes are written, which is its right.
    fn send_lenient(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// More bytes; 0 at the end of the connection (a reset counts as the end).
    fn fill(&mut self) -> Result<usize, String> {
        let mut tmp = [0u8; 64 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                self.seen.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(0),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(format!(
                    "no reply within {REPLY_TIMEOUT:?} (received so far: {})",
                    esc_short(&self.seen)
                ))
            }
            Err(e) => Err(format!("reading: {e}")),
        }
    }

    /// Waits for the connection to end; an error if bytes arrive first or it stays open.
    fn expect_closed(&mut self, why: &str) -> Result<(), String> {
        self.stream
            .set_read_timeout(Some(slow(CLOSE_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        loop {
            if !self.buf.is_empty() {
                return Err(format!(
                    "{why}, but the server sent more: {}",
                    esc_short(&self.buf)
                ));
            }
            match self.fill() {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "{why}, but the connection was still open after {CLOSE_TIMEOUT:?}"
                    ));
                }
            }
        }
    }

    /// One final response (1xx before it skipped, 101 refused); `None` if the connection
    /// ended cleanly before any byte of it.
    fn response(&mut self, head_request: bool) -> Result<Option<Resp>, String> {
        loop {
            let mut headers = vec![httparse::EMPTY_HEADER; 4096];
            let mut parsed = httparse::Response::new(&mut headers);
            let len = match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => {
                    if self.fill()? == 0 {
                        if self.buf.is_empty() {
                            return Ok(None);
                        }
                        return Err(format!(
                            "the connection ended inside a response head: {}",
                            esc_short(&self.buf)
                        ));
                    }
                    continue;
                }
                Err(e) => {
                    return Err(format!(
                        "malformed response head ({e}): {}",
                        esc_short(&self.buf)
                    ));
                }
            };
            let status = parsed.code.unwrap_or(0);
            if !(100..=599).contains(&status) {
                return Err(format!("status {status} outside 100-599"));
            }
            let headers: Vec<(String, Vec<u8>)> = parsed
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect();
            self.buf.drain(..len);
            if status == 101 {
                return Err("101 Switching Protocols sent to a client that asked for none".into());
            }
            if status < 200 {
                if headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                {
                    return Err(format!("a {status} response with a Content-Length"));
                }
                continue;
            }
            let mut resp = Resp {
                status,
                headers,
                body: Vec::new(),
                complete: true,
                close_delimited: false,
            };
            self.body(&mut resp, head_request)?;
            return Ok(Some(resp));
        }
    }

    fn body(&mut self, resp: &mut Resp, head_request: bool) -> Result<(), String> {
        let named = |n: &str| -> Vec<Vec<u8>> {
            resp.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
                .collect()
        };
        let te = named("transfer-encoding");
        let cl = named("content-length");
        if cl.len() > 1 {
            return Err(format!("{} Content-Length headers: {cl:?}", cl.len()));
        }
        let length = match cl.first() {
            None => None,
            Some(v) if !v.is_empty() && v.iter().all(u8::is_ascii_digit) => Some(
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| format!("Content-Length {} overflows", esc(v)))?,
            ),
            Some(v) => return Err(format!("Content-Length {} is not digits only", esc(v))),
        };
        if !te.is_empty() && (te.len() > 1 || !te[0].eq_ignore_ascii_case(b"chunked")) {
            return Err(format!("Transfer-Encoding {te:?} is not exactly `chunked`"));
        }
        if !te.is_empty() && length.is_some() {
            return Err("both Transfer-Encoding and Content-Length".into());
        }
        if resp.status == 204 && (length.is_some() || !te.is_empty()) {
            return Err("a 204 with a Content-Length or Transfer-Encoding".into());
        }
        if head_request || resp.status == 204 || resp.status == 304 {
            return Ok(());
        }
        if !te.is_empty() {
            resp.complete = self.chunked(&mut resp.body)?;
        } else if let Some(n) = length {
            resp.complete = self.exact(n, &mut resp.body)?;
        } else {
            resp.close_delimited = true;
            loop {
                resp.body.append(&mut self.buf);
                if self.fill()? == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    fn exact(&mut self, n: u64, out: &mut Vec<u8>) -> Result<bool, String> {
        let mut left = n as usize;
        loop {
            let take = left.min(self.buf.len());
            out.extend(self.buf.drain(..take));
            left -= take;
            if left == 0 {
                return Ok(true);
            }
            if self.fill()? == 0 {
                return Ok(false);
            }
        }
    }

    fn line(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).take(i).collect();
                return Ok(Some(line));
            }
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
    }

    /// A strict chunked body; false if the connection ended before its last chunk.
    fn chunked(&mut self, out: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            let Some(line) = self.line()? else {
                return Ok(false);
            };
            let size = std::str::from_utf8(&line)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("bad chunk size line {}", esc(&line)))?;
            if size == 0 {
                loop {
                    match self.line()? {
                        None => return Ok(false),
                        Some(l) if l.is_empty() => return Ok(true),
                        Some(_) => {}
                    }
                }
            }
            if !self.exact(size, out)? {
                return Ok(false);
            }
            match self.line()? {
                None => return Ok(false),
                Some(l) if l.is_empty() => {}
                Some(l) => return Err(format!("chunk data not followed by CRLF: {}", esc(&l))),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reference reading of a request stream (RFC 9112, strict).

/// What a request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// It must reach the app with exactly its body.
    Accept,
    /// A server may refuse it (4xx/5xx) or accept it, and then with exactly the body read
    /// here. `must_close`: either way, its connection must end after the response
    /// (RFC 9112 §6.1: Transfer-Encoding with Content-Length; Transfer-Encoding in HTTP/1.0).
    Either { must_close: bool },
    /// It must get a 4xx/5xx and never reach the app. `framing`: its body's length cannot be
    /// known, so the connection must end after the response.
    Refuse { framing: bool },
    /// The head is sound, the chunked body is not: a 4xx/5xx or the connection's end, never
    /// the app's answer; then the connection ends.
    BodyError,
    /// The bytes end before the request does: it must not be answered by the app.
    Incomplete,
    /// Bytes this reading does not pin down (a bare CR or LF where a line ends): whatever the
    /// server makes of them, its answers must be well-formed and the app's self-consistent.
    Lax,
}

/// One request as the reference reads it.
#[derive(Debug, Clone)]
struct Expect {
    verdict: Verdict,
    why: String,
    method: String,
    /// `PATH_INFO` and `QUERY_STRING` the app must see (`None` for `*`).
    path: Option<(String, String)>,
    /// The `HTTP_HOST` the app must see: the validated host.
    host: String,
    body: Vec<u8>,
    /// Framed by `Content-Length` (the app must see it), not chunked.
    length_framed: bool,
    keep_alive: bool,
}

impl Expect {
    fn new(verdict: Verdict, why: impl Into<String>) -> Expect {
        Expect {
            verdict,
            why: why.into(),
            method: String::new(),
            path: None,
            host: String::new(),
            body: Vec::new(),
            length_framed: false,
            keep_alive: false,
        }
    }

    /// Whether reading may go on past this request.
    fn continues(&self) -> bool {
        self.keep_alive
            && matches!(
                self.verdict,
                Verdict::Accept
                    | Verdict::Either { must_close: false }
                    | Verdict::Refuse { framing: false }
            )
    }

    /// A worse verdict wins: Accept < Either < Refuse.
    fn degrade(&mut self, verdict: Verdict, why: &str) {
        let rank = |v: Verdict| match v {
            Verdict::Accept => 0,
            Verdict::Either { must_close: false } => 1,
            Verdict::Either { must_close: true } => 2,
            Verdict::Refuse { framing: false } => 3,
            Verdict::Refuse { framing: true } => 4,
            Verdict::BodyError | Verdict::Incomplete | Verdict::Lax => 5,
        };
        let v = match (self.verdict, verdict) {
            // Refusing a request whose framing is in doubt must also end its connection.
            (Verdict::Either { must_close: true }, Verdict::Refuse { .. })
            | (Verdict::Refuse { .. }, Verdict::Either { must_close: true }) => {
                Verdict::Refuse { framing: true }
            }
            (a, b) if rank(b) > rank(a) => b,
            (a, _) => a,
        };
        if v != self.verdict {
            self.verdict = v;
            self.why = why.to_owned();
        }
    }
}

/// The requests in `raw`, up to the first one after which the connection cannot go on.
fn oracle(raw: &[u8]) -> Vec<Expect> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (e, used) = one_request(rest);
        let go_on = e.continues();
        out.push(e);
        if !go_on {
            break;
        }
        rest = &rest[used..];
    }
    out
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `host[:port]` of the app, validated: `Ok(Some(true))` it routes to the app, `Ok(None)` a
/// port a server may take or refuse (empty, more than five digits); `Err` it must not reach
/// the app (another host, an IPv6 literal the app does not serve, userinfo, a non-digit port).
fn routes(value: &str) -> Result<Option<bool>, String> {
    if value.starts_with('[') {
        return Err(format!("host {value:?} is not one of the app's"));
    }
    let (name, port) = match value.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (value, None),
    };
    if !HOSTS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        return Err(format!("host {value:?} is not one of the app's"));
    }
    match port {
        None => Ok(Some(true)),
        Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("host {value:?} has a port that is not digits"))
        }
        Some(p) if p.is_empty() || p.len() > 5 => Ok(None),
        Some(_) => Ok(Some(true)),
    }
}

/// RFC 3986 `host [":" port]` (reg-name, IPv4 or IP-literal), for a `Host` header that is not
/// the one routed by (absolute form).
fn host_syntax(value: &str) -> bool {
    let (name, port) = if let Some(rest) = value.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, after)) => {
                if !inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return false;
                }
                (
                    "x",
                    after.strip_prefix(':').or(after.is_empty().then_some("")),
                )
            }
            None => return false,
        }
    } else {
        match value.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (value, Some("")),
        }
    };
    // RFC 3986's `port = *DIGIT` allows an empty or endless one; warren takes 1 to 5 digits
    // that fit 16 bits (no such port exists otherwise) and refuses the rest.
    let port_ok = |p: &str| {
        p.is_empty() && !value.ends_with(':')
            || (!p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
                && p.parse::<u32>().is_ok_and(|n| n <= 65535)
    };
    port.is_some_and(port_ok)
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b))
}

/// Reads one request from the start of `buf`: what it must get, and its length in bytes.
fn one_request(buf: &[u8]) -> (Expect, usize) {
    let Some(head_len) = find(buf, b"\r\n\r\n") else {
        return (
            Expect::new(Verdict::Incomplete, "the head never ends"),
            buf.len(),
        );
    };
    let head = &buf[..head_len];
    let after_head = head_len + 4;
    // A CR or LF that is not part of a CRLF: servers differ on where such a line ends.
    let mut lone = false;
    for (i, &b) in head.iter().enumerate() {
        if (b == b'\r' && head.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
        {
            lone = true;
        }
    }
    if lone || buf[..after_head].windows(3).any(|w| w == b"\n\r\n") && buf.starts_with(b"\r\n") {
        return (
            Expect::new(Verdict::Lax, "a lone CR or LF in the head"),
            buf.len(),
        );
    }
    if head.is_empty() || buf.starts_with(b"\r\n") {
        return (
            Expect::new(Verdict::Lax, "an empty line before the request line"),
            buf.len(),
        );
    }
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut e = Expect::new(Verdict::Accept, "a valid request");
    e.keep_alive = true;

    // Request line: method SP target SP version, single spaces.
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        e.degrade(Verdict::Refuse { framing: true }, "malformed request line");
        return (e, after_head);
    }
    let (method, target, version) = (parts[0], parts[1], parts[2]);
    if !method.iter().all(|&b| is_tchar(b)) {
        e.degrade(Verdict::Refuse { framing: true }, "method is not a token");
        return (e, after_head);
    }
    e.method = String::from_utf8_lossy(method).into_owned();
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => {
            e.degrade(
                Verdict::Refuse { framing: true },
                "not HTTP/1.0 or HTTP/1.1",
            );
            return (e, after_head);
        }
    };
    let target_ok = target
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%[]".contains(&b));
    if !target_ok {
        e.degrade(
            Verdict::Refuse { framing: false },
            "request target has characters a URI cannot",
        );
    }

    // Header lines.
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            e.degrade(
                Verdict::Refuse { framing: true },
                "a header line without a colon",
            );
            return (e, after_head);
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            e.degrade(
                Verdict::Refuse { framing: true },
                "a header name is not a token",
            );
            return (e, after_head);
        }
        let ows = |b: &u8| *b == b' ' || *b == b'\t';
        let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
        let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
        let value = &value[start..end.max(start)];
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            e.degrade(
                Verdict::Refuse { framing: true },
                "a header value with a control character",
            );
            return (e, after_head);
        }
        fields.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            value.to_vec(),
        ));
    }
    let all = |n: &str| -> Vec<String> {
        fields
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    };

    let connection = all("connection").join(",").to_ascii_lowercase();
    let tokens: Vec<&str> = connection.split(',').map(str::trim).collect();
    e.keep_alive = if http10 {
        tokens.contains(&"keep-alive")
    } else {
        !tokens.contains(&"close")
    };
    if !all("upgrade").is_empty() {
        e.degrade(Verdict::Either { must_close: false }, "asks for an upgrade");
    }

    // Target forms and the host that routes.
    let hosts = all("host");
    let route = if target == b"*" {
        e.degrade(Verdict::Either { must_close: false }, "asterisk form");
        hosts.first().cloned()
    } else if target.starts_with(b"/") {
        let t = String::from_utf8_lossy(target);
        let (p, q) = t.split_once('?').unwrap_or((&t, ""));
        e.path = Some((p.to_owned(), q.to_owned()));
        if hosts.is_empty() {
            e.degrade(Verdict::Refuse { framing: false }, "no Host");
        }
        hosts.first().cloned()
    } else if let Some(rest) = target.strip_prefix(b"http://") {
        let rest = String::from_utf8_lossy(rest);
        let cut = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(cut);
        if tail.starts_with('/') {
            let (p, q) = tail.split_once('?').unwrap_or((tail, ""));
            e.path = Some((p.to_owned(), q.to_owned()));
        } else {
            e.degrade(
                Verdict::Either { must_close: false },
                "absolute form without a path",
            );
        }
        if authority.contains('@') {
            e.degrade(Verdict::Refuse { framing: false }, "userinfo in the target");
        }
        match hosts.as_slice() {
            [] if !http10 => e.degrade(
                Verdict::Either { must_close: false },
                "absolute form without Host",
            ),
            [h] if !host_syntax(h) => e.degrade(
                Verdict::Either { must_close: false },
                "absolute form with an invalid Host",
            ),
            _ => {}
        }
        Some(authority.to_owned())
    } else if let Some(i) = find(target, b"://").filter(|&i| {
        i > 0
            && target[0].is_ascii_alphabetic()
            && target[..i]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    }) {
        // Another scheme (or `http` in other case): a server may take it as absolute form.
        e.degrade(
            Verdict::Either { must_close: false },
            "absolute form, another scheme",
        );
        let rest = String::from_utf8_lossy(&target[i + 3..]);
        let cut = rest.find(['/', '?']).unwrap_or(rest.len());
        if rest.contains('@') {
            e.degrade(Verdict::Refuse { framing: false }, "userinfo in the target");
        }
        Some(rest[..cut].to_owned())
    } else {
        e.degrade(
            Verdict::Refuse { framing: false },
            "authority form or no form at all, outside CONNECT",
        );
        hosts.first().cloned()
    };
    if hosts.len() > 1 {
        e.degrade(Verdict::Refuse { framing: false }, "two Host headers");
    }
    match route {
        None => e.degrade(Verdict::Refuse { framing: false }, "no host to route by"),
        Some(h) => {
            match routes(&h) {
                Ok(Some(_)) => {}
                Ok(None) => e.degrade(Verdict::Either { must_close: false }, "odd port"),
                Err(why) => e.degrade(Verdict::Refuse { framing: false }, &why),
            }
            e.host = h;
        }
    }
    if method == b"CONNECT" {
        e.degrade(Verdict::Refuse { framing: false }, "CONNECT");
    }

    // Framing.
    let te = all("transfer-encoding");
    let cl = all("content-length");
    let body = &buf[after_head..];
    if !te.is_empty() {
        let codings: Vec<String> = te
            .join(",")
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        if te.len() != 1 || codings != ["chunked"] {
            e.degrade(
                Verdict::Refuse { framing: true },
                "Transfer-Encoding other than exactly chunked",
            );
            return (e, after_head);
        }
        if !cl.is_empty() {
            e.degrade(
                Verdict::Either { must_close: true },
                "Transfer-Encoding with Content-Length",
            );
        }
        if http10 {
            e.degrade(
                Verdict::Either { must_close: true },
                "Transfer-Encoding in HTTP/1.0",
            );
        }
        match dechunk(body) {
            Chunked::Done(decoded, used) => {
                if decoded.len() as u64 > MAX_BODY {
                    e.degrade(Verdict::BodyError, "chunked body over the limit");
                }
                e.body = decoded;
                (e, after_head + used)
            }
            Chunked::Short => {
                e.degrade(Verdict::Incomplete, "the chunked body never ends");
                (e, buf.len())
            }
            Chunked::Bad(why) => {
                e.degrade(Verdict::BodyError, &why);
                (e, buf.len())
            }
            Chunked::Lax(why) => {
                e.degrade(Verdict::Lax, &why);
                (e, buf.len())
            }
        }
    } else if !cl.is_empty() {
        let values: Vec<&str> = cl
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let parsed: Option<Vec<u64>> = values
            .iter()
            .map(|v| {
                (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| v.parse::<u64>().ok())
                    .flatten()
            })
            .collect();
        let Some(parsed) = parsed else {
            e.degrade(Verdict::Refuse { framing: true }, "invalid Content-Length");
            return (e, after_head);
        };
        if parsed.iter().any(|&n| n != parsed[0]) {
            e.degrade(
                Verdict::Refuse { framing: true },
                "Content-Length values that differ",
            );
            return (e, after_head);
        }
        if parsed.len() > 1 {
            e.degrade(
                Verdict::Either { must_close: false },
                "the same Content-Length more than once",
            );
        }
        let n = parsed[0];
        if (body.len() as u64) < n {
            e.degrade(
                Verdict::Incomplete,
                "the body is shorter than its Content-Length",
            );
            return (e, buf.len());
        }
        e.body = body[..n as usize].to_vec();
        e.length_framed = true;
        (e, after_head + n as usize)
    } else {
        e.length_framed = true;
        (e, after_head)
    }
}

enum Chunked {
    /// The decoded body and the bytes it took, trailers included.
    Done(Vec<u8>, usize),
    Short,
    Bad(String),
    Lax(String),
}

/// A strict chunked body (RFC 9112 §7.1).
fn dechunk(buf: &[u8]) -> Chunked {
    let mut at = 0;
    let mut out = Vec::new();
    let line = |at: usize| -> Option<(&[u8], usize)> {
        find(&buf[at..], b"\r\n").map(|i| (&buf[at..at + i], at + i + 2))
    };
    loop {
        let Some((size_line, next)) = line(at) else {
            return Chunked::Short;
        };
        if size_line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Chunked::Lax("a lone CR or LF in a chunk size line".into());
        }
        let digits = size_line
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits == 0 || digits > 16 {
            return Chunked::Bad(format!("chunk size line {}", esc(size_line)));
        }
        let ext = &size_line[digits..];
        let bws = ext.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        match ext.get(bws) {
            None if bws == 0 => {}
            // `5 ` alone: RFC 9112 allows whitespace only before a `;`.
            None => return Chunked::Lax("whitespace after a chunk size".into()),
            Some(b';') => {
                if ext.iter().any(|&b| b < 0x20 && b != b'\t') {
                    return Chunked::Bad("a control character in a chunk extension".into());
                }
            }
            Some(_) => return Chunked::Bad(format!("chunk size line {}", esc(size_line))),
        }
        let size =
            u64::from_str_radix(std::str::from_utf8(&size_line[..digits]).unwrap_or("0"), 16)
                .unwrap_or(u64::MAX);
        at = next;
        if size == 0 {
            loop {
                let Some((trailer, next)) = line(at) else {
                    return Chunked::Short;
                };
                at = next;
                if trailer.is_empty() {
                    return Chunked::Done(out, at);
                }
                let name_end = trailer.iter().position(|&b| b == b':');
                let ok = name_end.is_some_and(|i| {
                    i > 0
                        && trailer[..i].iter().all(|&b| is_tchar(b))
                        && !trailer.iter().any(|&b| b < 0x20 && b != b'\t')
                });
                if !ok {
                    return Chunked::Bad(format!("trailer line {}", esc(trailer)));
                }
            }
        }
        if size > MAX_BODY * 2 {
            return Chunked::Bad(format!("chunk of {size} bytes"));
        }
        let size = size as usize;
        if buf.len() < at + size + 2 {
            if buf.len() >= at + size && buf.len() > at + size && buf[at + size] != b'\r' {
                return Chunked::Bad("chunk data not followed by CRLF".into());
            }
            return Chunked::Short;
        }
        out.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Chunked::Bad("chunk data not followed by CRLF".into());
        }
        at += 2;
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: generation.

/// How a `Content-Length` value relates to the body sent.
#[derive(Debug, Clone, Copy)]
enum Cl {
    Right,
    Over,
    Under,
    Plus,
    List,
    ListDiffer,
    Abc,
    Empty,
    Spaced,
    LeadingZero,
    Huge(&'static str),
}

impl Cl {
    fn render(self, n: usize) -> String {
        match self {
            Cl::Right => n.to_string(),
            Cl::Over => (n + 1).to_string(),
            Cl::Under => n.saturating_sub(1).to_string(),
            Cl::Plus => format!("+{n}"),
            Cl::List => format!("{n}, {n}"),
            Cl::ListDiffer => format!("{n}, {}", n + 1),
            Cl::Abc => "abc".into(),
            Cl::Empty => String::new(),
            Cl::Spaced => format!("  {n} "),
            Cl::LeadingZero => format!("00{n}"),
            Cl::Huge(s) => s.into(),
        }
    }
}

fn cl_value() -> impl Strategy<Value = Cl> {
    prop_oneof![
        6 => Just(Cl::Right),
        1 => Just(Cl::Over),
        1 => Just(Cl::Under),
        1 => Just(Cl::Plus),
        1 => Just(Cl::List),
        1 => Just(Cl::ListDiffer),
        1 => Just(Cl::Abc),
        1 => Just(Cl::Empty),
        1 => Just(Cl::Spaced),
        1 => Just(Cl::LeadingZero),
        1 => select(vec!["99999999999999999999", "1000000000000", "2000000", "-1"]).prop_map(Cl::Huge),
    ]
}

/// How one chunk's size line is written.
#[derive(Debug, Clone, Copy)]
enum Size {
    Exact,
    Upper,
    LeadingZeros,
    Over,
    Under,
    Garbage(&'static str),
}

#[derive(Debug, Clone)]
struct Chunk {
    size: Size,
    ext: &'static str,
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Framing {
    None,
    Length {
        lines: Vec<Cl>,
        body: Vec<u8>,
    },
    Chunked {
        te: Vec<&'static str>,
        cl: Option<Cl>,
        chunks: Vec<Chunk>,
        last: &'static str,
    },
}

#[derive(Debug, Clone)]
struct ReqSpec {
    method: &'static str,
    target: String,
    version: &'static str,
    host_name: &'static str,
    hosts: Vec<&'static str>,
    extra: Vec<(&'static str, &'static str)>,
    framing: Framing,
}

/// Body bytes: small text (`\r\n` only in pairs), a request to smuggle, or a large block.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => vec(select(b"abcXYZ019:; =".to_vec()), 0..24),
        1 => Just(b"GET /smuggled HTTP/1.1\r\nHost: fuzz.test\r\n\r\n".to_vec()),
        1 => Just(b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: fuzz.test\r\n\r\n".to_vec()),
        1 => Just(vec![b'L'; 70_000]),
    ]
}

fn chunk() -> impl Strategy<Value = Chunk> {
    let size = prop_oneof![
        8 => Just(Size::Exact),
        1 => Just(Size::Upper),
        1 => Just(Size::LeadingZeros),
        1 => Just(Size::Over),
        1 => Just(Size::Under),
        1 => select(vec!["5x", "-1", "", "0x5", "ffffffffffffffffff", " 5", "5 "]).prop_map(Size::Garbage),
    ];
    let ext = prop_oneof![
        6 => Just(""),
        1 => select(vec![";a=b", ";a", "; a=\"q\"", " ;x", ";x=\"\\\"\""]),
    ];
    (
        size,
        ext,
        prop_oneof![
            5 => vec(select(b"abcdef0123".to_vec()), 1..20),
            1 => Just(vec![b'C'; 70_000]),
        ],
    )
        .prop_map(|(size, ext, data)| Chunk { size, ext, data })
}

fn framing() -> impl Strategy<Value = Framing> {
    let te = prop_oneof![
        6 => Just(vec!["chunked"]),
        1 => Just(vec!["Chunked"]),
        1 => Just(vec!["gzip, chunked"]),
        1 => Just(vec!["chunked, chunked"]),
        1 => Just(vec!["chunked", "chunked"]),
        1 => Just(vec!["gzip", "chunked"]),
        1 => Just(vec!["identity"]),
        1 => Just(vec!["chunked, identity"]),
        1 => Just(vec!["chunked,"]),
        1 => Just(vec!["chunked;q=1"]),
    ];
    let last = prop_oneof![
        6 => Just("0\r\n\r\n"),
        1 => select(vec![
            "000\r\n\r\n",
            "0;e=1\r\n\r\n",
            "0\r\nX-T: 1\r\n\r\n",
            "0\r\nbad trailer\r\n\r\n",
            "0\r\n",
            "",
            "0\r\n\r",
        ]),
    ];
    prop_oneof![
        2 => Just(Framing::None),
        4 => (vec(cl_value(), 1..=2).prop_filter("mostly one line", |v| v.len() == 1 || v[0].render(1) != "abc"), body())
            .prop_map(|(lines, body)| Framing::Length { lines, body }),
        4 => (te, prop_oneof![5 => Just(None), 1 => cl_value().prop_map(Some)], vec(chunk(), 0..4), last)
            .prop_map(|(te, cl, chunks, last)| Framing::Chunked { te, cl, chunks, last }),
    ]
}

fn target() -> impl Strategy<Value = String> {
    let path = select(vec!["/", "/a", "/a/b", "/x.y", "/echo", "//a"]);
    let query = select(vec!["", "", "?a=1", "?a=1&b=2", "?q=%20x", "?"]);
    let authority = select(vec![
        "fuzz.test",
        "FUZZ.TEST",
        "fuzz.test:8080",
        "h.test",
        "127.0.0.1:1",
        "evil.example",
        "u@fuzz.test",
        "[::1]:80",
        "fuzz.test:@evil.example",
    ]);
    prop_oneof![
        8 => (path.clone(), query.clone()).prop_map(|(p, q)| format!("{p}{q}")),
        2 => (authority, path, query).prop_map(|(a, p, q)| format!("http://{a}{p}{q}")),
        1 => Just("*".to_owned()),
        1 => select(vec!["fuzz.test:443", "fuzz.test:80", "evil.example:443", "fuzz.test"]).prop_map(str::to_owned),
    ]
}

fn host_value() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        8 => Just("fuzz.test"),
        4 => select(vec!["FUZZ.Test", "fuzz.test:8080", "h.test", "127.0.0.1", "127.0.0.1:80"]),
        4 => select(vec![
            "fuzz.test:",
            "h.test:@evil.example",
            "h.test:80@evil.example",
            "user@fuzz.test",
            "user:pw@fuzz.test:80",
            "[::1]",
            "[::1]:8080",
            "evil.example",
            "fuzz.test:99999999",
            "fuzz.test:80:80",
            "fuzz.test.",
            "fuzz.test:8o",
            "fuzz.test, evil.example",
            "fuzz.test/x",
        ]),
    ]
}

fn request() -> impl Strategy<Value = ReqSpec> {
    let method = prop_oneof![
        8 => select(vec!["GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH"]),
        2 => Just("CONNECT"),
        2 => select(vec!["get", "FOO", "M-SEARCH", "PROPFIND", "X", "G\x01T", "GE T"]),
    ];
    let version = prop_oneof![
        10 => Just("HTTP/1.1"),
        2 => Just("HTTP/1.0"),
        1 => select(vec!["HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1", "HTTP/1.1 "]),
    ];
    let hosts = prop_oneof![
        1 => Just(vec![]),
        8 => host_value().prop_map(|h| vec![h]),
        1 => vec(host_value(), 2..=2),
    ];
    let extra = vec(
        select(vec![
            ("X-A", "1"),
            ("Connection", "close"),
            ("Connection", "keep-alive"),
            ("Expect", "100-continue"),
            ("Upgrade", "websocket"),
            ("Content-Type", "text/plain"),
        ]),
        0..2,
    );
    (
        method,
        target(),
        version,
        select(vec!["Host", "host", "HOST"]),
        hosts,
        extra,
        framing(),
    )
        .prop_map(
            |(method, target, version, host_name, hosts, extra, framing)| ReqSpec {
                method,
                target,
                version,
                host_name,
                hosts,
                extra,
                framing,
            },
        )
}

impl ReqSpec {
    fn render(&self) -> Vec<u8> {
        let mut out = format!("{} {} {}\r\n", self.method, self.target, self.version).into_bytes();
        for h in &self.hosts {
            out.extend_from_slice(format!("{}: {h}\r\n", self.host_name).as_bytes());
        }
        for (k, v) in &self.extra {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        let mut body = Vec::new();
        match &self.framing {
            Framing::None => {}
            Framing::Length { lines, body: b } => {
                for cl in lines {
                    out.extend_from_slice(
                        format!("Content-Length: {}\r\n", cl.render(b.len())).as_bytes(),
                    );
                }
                body.extend_from_slice(b);
            }
            Framing::Chunked {
                te,
                cl,
                chunks,
                last,
            } => {
                for t in te {
                    out.extend_from_slice(format!("Transfer-Encoding: {t}\r\n").as_bytes());
                }
                let mut encoded = Vec::new();
                for c in chunks {
                    let n = c.data.len();
                    let size = match c.size {
                        Size::Exact => format!("{n:x}"),
                        Size::Upper => format!("{n:X}"),
                        Size::LeadingZeros => format!("000{n:x}"),
                        Size::Over => format!("{:x}", n + 1),
                        Size::Under => format!("{:x}", n - 1),
                        Size::Garbage(g) => g.to_owned(),
                    };
                    encoded.extend_from_slice(format!("{size}{}\r\n", c.ext).as_bytes());
                    encoded.extend_from_slice(&c.data);
                    encoded.extend_from_slice(b"\r\n");
                }
                encoded.extend_from_slice(last.as_bytes());
                if let Some(cl) = cl {
                    out.extend_from_slice(
                        format!("Content-Length: {}\r\n", cl.render(encoded.len())).as_bytes(),
                    );
                }
                body = encoded;
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        out
    }
}

/// Bytes a mutation may write into a head (never CR or LF: line structure stays as built).
const MUTATIONS: &[u8] = b" \t:,;05aZ@+-/\x00\x7f\x80";

/// One case: a request, maybe a second one pipelined behind it, and byte mutations of the
/// first one's head.
#[derive(Clone)]
struct ReqCase {
    raw: Vec<u8>,
}

impl std::fmt::Debug for ReqCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request bytes {}", esc_short(&self.raw))
    }
}

fn req_case() -> impl Strategy<Value = ReqCase> {
    (
        request(),
        prop_oneof![3 => Just(None), 1 => request().prop_map(Some)],
        prop_oneof![4 => Just(vec![]), 1 => vec((any::<Index>(), select(MUTATIONS.to_vec())), 1..=2)],
    )
        .prop_map(|(first, second, mutations)| {
            let mut raw = first.render();
            let head = find(&raw, b"\r\n\r\n").map_or(raw.len(), |i| i);
            for (at, byte) in mutations {
                let i = at.index(head.max(1));
                if !matches!(raw[i], b'\r' | b'\n') {
                    raw[i] = byte;
                }
            }
            if let Some(second) = second {
                raw.extend_from_slice(&second.render());
            }
            ReqCase { raw }
        })
}

// ---------------------------------------------------------------------------------------------
// Requests: the check.

/// `KEY=HEX` lines of the echo app.
fn echo_facts(body: &[u8]) -> Result<std::collections::BTreeMap<String, String>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "echo body is not ASCII".to_owned())?;
    text.lines()
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| format!("echo line {l:?}"))?;
            let bytes = (0..v.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(v.get(i..i + 2).unwrap_or("zz"), 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| format!("echo line {l:?}"))?;
            // latin-1 back to a string, byte for char.
            Ok((k.to_owned(), bytes.iter().map(|&b| b as char).collect()))
        })
        .collect()
}

/// What holds of every echo answer, whatever the request: the body's length as the app was
/// told it is the body it could read, its host is validated, and it was not a CONNECT.
fn echo_consistent(facts: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    let get = |k: &str| facts.get(k).map(String::as_str).unwrap_or("<missing>");
    let declared = get("content_length");
    if declared != "<absent>" && !declared.is_empty() && declared != get("read") {
        return Err(format!(
            "the app saw CONTENT_LENGTH {declared} but could read {} bytes",
            get("read")
        ));
    }
    if get("extra") != "0" {
        return Err(format!(
            "the app could read {} bytes past its CONTENT_LENGTH {declared}",
            get("extra")
        ));
    }
    let host = get("host");
    if host.contains('@')
        || host.rsplit_once(':').is_some_and(|(n, p)| {
            !n.ends_with(']') && n.contains(':') || !p.bytes().all(|b| b.is_ascii_digit())
        })
    {
        return Err(format!("the app saw HTTP_HOST {host:?}"));
    }
    if get("method") == "CONNECT" {
        return Err("a CONNECT reached the app".into());
    }
    Ok(())
}

/// The echo answer matches the request as the reference read it.
fn echo_matches(
    facts: &std::collections::BTreeMap<String, String>,
    e: &Expect,
) -> Result<(), String> {
    let get = |k: &str| facts.get(k).map(String::as_str).unwrap_or("<missing>");
    let n = e.body.len().to_string();
    let declared = get("content_length");
    let declared_ok = if e.length_framed {
        declared == n || (e.body.is_empty() && matches!(declared, "<absent>" | ""))
    } else {
        declared == n || matches!(declared, "<absent>" | "")
    };
    if !declared_ok || get("read") != n {
        return Err(format!(
            "the request framed a body of {n} bytes; the app saw CONTENT_LENGTH {declared} and read {}",
            get("read")
        ));
    }
    let crc = format!("{:08x}", crc32_update(0, &e.body));
    if get("crc32") != crc {
        return Err(format!(
            "the app read other bytes than the body the request framed ({})",
            esc_short(&e.body)
        ));
    }
    if get("method") != e.method {
        return Err(format!(
            "method {:?} reached the app as {:?}",
            e.method,
            get("method")
        ));
    }
    if let Some((path, query)) = &e.path
        && (get("path") != path || get("query") != query)
    {
        return Err(format!(
            "target {path:?}?{query:?} reached the app as PATH_INFO {:?} QUERY_STRING {:?}",
            get("path"),
            get("query")
        ));
    }
    let host = get("host");
    let same_host = match (host.split_once(':'), e.host.split_once(':')) {
        (Some((a, p)), Some((b, q))) => a.eq_ignore_ascii_case(b) && p == q,
        (None, None) => host.eq_ignore_ascii_case(&e.host),
        _ => false,
    };
    if !same_host {
        return Err(format!(
            "the request's host is {:?}; the app saw HTTP_HOST {host:?}",
            e.host
        ));
    }
    Ok(())
}

fn check_request(w: &Warren, case: &ReqCase) -> Result<(), String> {
    let mut raw = case.raw.clone();
    let mut expects = oracle(&raw);
    // A connection that must still be usable is probed with one more request on it: a
    // response too many or too few shows there.
    if expects.last().is_some_and(|e| e.continues()) {
        raw.extend_from_slice(b"GET /sync HTTP/1.1\r\nHost: fuzz.test\r\n\r\n");
        expects = oracle(&raw);
    }
    let story = |i: usize, e: &Expect| {
        format!(
            "request {} of {} ({:?}: {})",
            i + 1,
            expects.len(),
            e.verdict,
            e.why
        )
    };
    let mut c = Conn::open(w.addr)?;
    c.send_lenient(&raw);
    // The previous response allows the server to end the connection (a refusal, or
    // `Connection: close`).
    let mut may_end = false;
    for (i, e) in expects.iter().enumerate() {
        let head_request = e.method == "HEAD";
        if e.verdict == Verdict::Incomplete {
            c.shutdown_write();
        }
        let lax = e.verdict == Verdict::Lax;
        let resp = match c.response(head_request) {
            Ok(r) => r,
            // A lax request may leave the server waiting for more; nothing to hold it to.
            Err(why) if lax && why.starts_with("no reply") => return Ok(()),
            Err(why) => return Err(format!("{}: {why}", story(i, e))),
        };
        let Some(resp) = resp else {
            let ok = may_end
                || matches!(
                    e.verdict,
                    Verdict::BodyError | Verdict::Incomplete | Verdict::Lax
                );
            if ok {
                return Ok(());
            }
            return Err(format!(
                "{}: the connection ended without a response",
                story(i, e)
            ));
        };
        let echoed = resp.status == 200 && resp.role() == Some("echo");
        if echoed && !head_request {
            let facts = echo_facts(&resp.body)?;
            echo_consistent(&facts).map_err(|why| format!("{}: {why}", story(i, e)))?;
        }
        match e.verdict {
            Verdict::Accept => {
                if !echoed {
                    return Err(format!(
                        "{}: must reach the app; got {} {}",
                        story(i, e),
                        resp.status,
                        esc_short(&resp.body)
                    ));
                }
            }
            Verdict::Either { .. } | Verdict::Refuse { .. } | Verdict::BodyError => {
                if !echoed && !(400..=599).contains(&resp.status) {
                    return Err(format!(
                        "{}: got {} from the front, neither the app's answer nor a 4xx/5xx",
                        story(i, e),
                        resp.status
                    ));
                }
                if echoed && !matches!(e.verdict, Verdict::Either { .. }) {
                    return Err(format!(
                        "{}: must never reach the app, but the app answered: {}",
                        story(i, e),
                        esc_short(&resp.body)
                    ));
                }
            }
            Verdict::Incomplete => {
                if echoed || !(400..=599).contains(&resp.status) {
                    return Err(format!(
                        "{}: an incomplete request got {} {}",
                        story(i, e),
                        resp.status,
                        esc_short(&resp.body)
                    ));
                }
            }
            Verdict::Lax => {}
        }
        if echoed && !head_request && e.verdict != Verdict::Lax {
            echo_matches(&echo_facts(&resp.body)?, e)
                .map_err(|why| format!("{}: {why}", story(i, e)))?;
        }
        if !resp.complete {
            return Err(format!(
                "{}: response {} cut short: {}",
                story(i, e),
                resp.status,
                esc_short(&resp.body)
            ));
        }
        may_end = !echoed || resp.closes();
        if !e.continues() {
            if e.verdict == Verdict::Lax {
                return Ok(());
            }
            let must_close = match e.verdict {
                Verdict::Either { must_close } => must_close,
                Verdict::Refuse { framing } => framing,
                _ => true,
            };
            if must_close || !e.keep_alive {
                let why = format!("{}: answered {}, then must close", story(i, e), resp.status);
                return c.expect_closed(&why);
            }
            return Ok(());
        }
    }
    Ok(())
}

#[test]
fn requests_are_framed_once_and_hosts_validated() {
    let w = start();
    run(&w, req_case(), check_request);
    w.stop();
}

// ---------------------------------------------------------------------------------------------
// Responses.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Right,
    Wrong(i64),
    Abc,
    Plus,
    Dup,
    Missing,
}

#[derive(Clone)]
struct RespCase {
    status: u16,
    nh: usize,
    hsize: usize,
    declared: Declared,
    generator: bool,
    blocks: Vec<usize>,
    head_request: bool,
}

impl RespCase {
    fn query(&self) -> String {
        let (cl, delta) = match self.declared {
            Declared::Right => ("right", 0),
            Declared::Wrong(d) => ("wrong", d),
            Declared::Abc => ("abc", 0),
            Declared::Plus => ("plus", 0),
            Declared::Dup => ("dup", 0),
            Declared::Missing => ("missing", 0),
        };
        let blocks: Vec<String> = self.blocks.iter().map(usize::to_string).collect();
        format!(
            "status={}&nh={}&hsize={}&cl={cl}&delta={delta}&shape={}&blocks={}",
            self.status,
            self.nh,
            self.hsize,
            if self.generator { "gen" } else { "list" },
            blocks.join(",")
        )
    }

    fn raw(&self) -> Vec<u8> {
        format!(
            "{} /respond?{} HTTP/1.1\r\nHost: fuzz.test\r\n\r\n",
            if self.head_request { "HEAD" } else { "GET" },
            self.query()
        )
        .into_bytes()
    }

    /// The body the app produces.
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &n) in self.blocks.iter().enumerate() {
            out.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, n));
        }
        out
    }
}

impl std::fmt::Debug for RespCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request bytes {}", esc(&self.raw()))
    }
}

fn resp_case() -> impl Strategy<Value = RespCase> {
    let status = select(vec![
        200u16, 200, 201, 204, 206, 299, 304, 400, 404, 418, 500, 503, 599, 99, 100, 101, 103, 199,
        600, 999,
    ]);
    let heads = prop_oneof![
        6 => (0usize..6, 1usize..40),
        1 => select(vec![(40, 2000), (99, 10), (101, 10), (200, 10), (1000, 2), (5, 8000), (1, 70_000)]),
    ];
    let declared = prop_oneof![
        3 => Just(Declared::Right),
        2 => select(vec![-3i64, -1, 1, 1000]).prop_map(Declared::Wrong),
        1 => Just(Declared::Abc),
        1 => Just(Declared::Plus),
        1 => Just(Declared::Dup),
        3 => Just(Declared::Missing),
    ];
    let blocks = vec(
        prop_oneof![
            4 => 0usize..10,
            3 => 10usize..2000,
            1 => select(vec![65_536usize, 70_000, 300_000]),
        ],
        0..5,
    );
    (
        status,
        heads,
        declared,
        any::<bool>(),
        blocks,
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(status, (nh, hsize), declared, generator, blocks, head_request)| RespCase {
                status,
                nh,
                hsize,
                declared,
                generator,
                blocks,
                head_request,
            },
        )
}

fn check_response(w: &Warren, case: &RespCase) -> Result<(), String> {
    let mut c = Conn::open(w.addr)?;
    c.send(&case.raw())?;
    let resp = c
        .response(case.head_request)?
        .ok_or("an empty reply: the connection ended without a response")?;
    let relayable = (200..=599).contains(&case.status);
    let total = case.body().len() as u64;
    let declared = match case.declared {
        Declared::Right => Some(total),
        Declared::Wrong(d) => Some((total as i64 + d).max(0) as u64),
        _ => None,
    };
    let malformed = matches!(
        case.declared,
        Declared::Abc | Declared::Plus | Declared::Dup
    );
    // The app's head: its header lines and, roughly, its bytes (`name: value` each).
    let lines = case.nh + 1 + usize::from(case.declared != Declared::Missing);
    let head_bytes = case.nh * (case.hsize + 12) + 64;
    let too_big = lines > MAX_RESPONSE_HEADERS || head_bytes > MAX_RESPONSE_HEAD_BYTES;
    // Within a margin of the byte limit (the estimate is rough), either answer holds.
    let near_limit = head_bytes.abs_diff(MAX_RESPONSE_HEAD_BYTES) < 1024;
    if resp.role() != Some("respond") {
        // warren's own answer instead of the app's.
        let expected = if !relayable {
            // The worker refuses a status that is not three digits (500); warren the rest.
            resp.status == 502 || (case.status < 100 && resp.status == 500)
        } else {
            // A malformed length may be a 502 too, or dropped with the body framed anew.
            resp.status == 502 && (too_big || near_limit || malformed)
        };
        if !expected {
            return Err(format!(
                "warren answered {} {} instead of relaying the app's {}",
                resp.status,
                esc_short(&resp.body),
                case.status
            ));
        }
        return Ok(());
    }
    if !relayable {
        return Err(format!(
            "the app's status {} was relayed (as {})",
            case.status, resp.status
        ));
    }
    if resp.status != case.status {
        return Err(format!(
            "the app said {}, the client got {}",
            case.status, resp.status
        ));
    }
    if too_big && !near_limit {
        return Err(format!(
            "a head of {lines} lines, about {head_bytes} bytes, was relayed instead of a 502 \
             (limits: {MAX_RESPONSE_HEADERS} lines, {MAX_RESPONSE_HEAD_BYTES} bytes)"
        ));
    }
    for i in 0..case.nh {
        let name = format!("x-fuzz-{i}");
        if resp.header(&name).map(<[u8]>::len) != Some(case.hsize) {
            return Err(format!("header {name} was lost or changed"));
        }
    }
    if case.head_request || case.status == 204 || case.status == 304 {
        return Ok(());
    }
    let full = case.body();
    let declared_n = declared.map(|n| n as usize);
    if resp.complete {
        // The framing held: the bytes are the app's, all of them, or (PEP 3333: no more than
        // the header allows) those up to the length it declared.
        let truncated = declared_n.filter(|&n| n < full.len()).map(|n| &full[..n]);
        if resp.body != full && Some(resp.body.as_slice()) != truncated {
            return Err(format!(
                "the body relayed ({} bytes) is neither the app's ({} bytes) nor its first \
                 {declared_n:?} bytes",
                resp.body.len(),
                full.len(),
            ));
        }
    } else {
        // Cut short: only a body shorter than the length the app declared may be (once the
        // head is out, ending the connection is all that is left), and then with the app's
        // bytes as far as they went (hyper does not flush its last buffered chunk when a body
        // ends before its length: the client sees the truncation either way).
        let short = declared_n.is_some_and(|n| n > full.len());
        if !short || !full.starts_with(&resp.body) {
            return Err(format!(
                "the response was cut after {} of the app's {} bytes",
                resp.body.len(),
                full.len()
            ));
        }
    }
    Ok(())
}

#[test]
fn responses_are_relayed_well_formed_or_502() {
    let w = start();
    run(&w, resp_case(), check_response);
    w.stop();
}
