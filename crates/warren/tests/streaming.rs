//! 100 MiB through warren in each direction, streamed: neither warren nor the worker may hold a
//! body whole. Uploads are produced piece by piece by the client (never a 100 MiB buffer), with
//! `Content-Length` and chunked; the app reads `wsgi.input` 64 KiB at a time and reports the
//! byte count, a CRC-32 and its own peak RSS. Downloads come from a generator, 1 MiB per chunk.

mod support;

use std::io::Write;

use support::{Framing, Warren, crc32_update, fill_pseudo_random, fixture, vm_hwm_kib};

const HOST: &str = "stream.localhost";
const MIB: usize = 1024 * 1024;
const TOTAL: usize = 100 * MIB;
/// "Well below 100 MiB": a process that held the body whole would be far above this.
const PEAK_LIMIT_KIB: u64 = 48 * 1024;

fn start() -> Warren {
    let w = Warren::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[apps.stream]
path = "{}"
entry = "app:application"
hosts = ["{HOST}"]
workers = 1
# Above the default: this app reads its body as a stream and spools nothing to /tmp, the
# case for which a body larger than /tmp is a warning and not a refusal.
max_body_mb = 128
"#,
        fixture("streaming")
    ));
    w.wait_workers("stream", 1);
    assert!(
        w.wait_for_log_line(
            std::time::Duration::from_secs(5),
            &["config warning", "apps.stream.max_body_mb", "limits.tmp_mb"]
        ),
        "a body limit over /tmp is warned about:\n{}",
        w.logs()
    );
    w
}

/// The upload's answer: `(bytes, crc32, worker peak RSS in KiB, pieces read)`.
fn parse_upload_answer(text: &str) -> (usize, u32, u64, usize) {
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 4, "unexpected answer {text:?}");
    (
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
    )
}

fn check_memory(w: &Warren, what: &str) {
    let hwm = vm_hwm_kib(w.pid());
    eprintln!("{what}: warren VmHWM {hwm} KiB");
    assert!(
        hwm < PEAK_LIMIT_KIB,
        "{what}: warren's peak RSS (VmHWM) is {hwm} KiB, not well below the 100 MiB body"
    );
}

fn upload(chunked: bool) {
    let w = start();
    let mut c = w.client(HOST);
    let head = if chunked {
        c.head_bytes(
            "POST",
            "/upload",
            &[
                ("Content-Type", "application/octet-stream"),
                ("Transfer-Encoding", "chunked"),
            ],
            None,
        )
    } else {
        c.head_bytes(
            "POST",
            "/upload",
            &[("Content-Type", "application/octet-stream")],
            Some(TOTAL),
        )
    };
    c.send(&head).unwrap();

    // Pieces of varying sizes, generated as they are sent.
    let sizes = [64 * 1024, 12_345, 250_000, 4096, 100_003];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut crc = 0u32;
    let mut sent = 0usize;
    let mut i = 0;
    let mut stream = c.stream();
    while sent < TOTAL {
        let n = sizes[i % sizes.len()].min(TOTAL - sent);
        i += 1;
        let piece = &mut buf[..n];
        fill_pseudo_random(&mut state, piece);
        crc = crc32_update(crc, piece);
        let result = if chunked {
            stream
                .write_all(format!("{n:x}\r\n").as_bytes())
                .and_then(|()| stream.write_all(piece))
                .and_then(|()| stream.write_all(b"\r\n"))
        } else {
            stream.write_all(piece)
        };
        result.unwrap_or_else(|e| {
            panic!(
                "sending the upload failed after {sent} bytes: {e}; log:\n{}",
                w.logs()
            )
        });
        sent += n;
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").unwrap();
    }

    let resp = c
        .read_response("POST")
        .unwrap_or_else(|e| panic!("no answer to the upload: {e}; log:\n{}", w.logs()));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let (bytes, app_crc, peak_kib, pieces) = parse_upload_answer(&resp.text());
    eprintln!("upload: {bytes} bytes in {pieces} reads, worker peak RSS {peak_kib} KiB");
    assert_eq!(bytes, TOTAL, "bytes the app read");
    assert_eq!(app_crc, crc, "CRC-32 of what the app read");
    assert!(pieces >= TOTAL / (64 * 1024), "{pieces} reads");
    assert!(
        peak_kib < PEAK_LIMIT_KIB,
        "the worker's peak RSS is {peak_kib} KiB: the upload was buffered"
    );
    check_memory(&w, "upload");

    // The worker and the connection are fine afterwards.
    let resp = c.post("/upload", "application/octet-stream", b"tail");
    assert_eq!(resp.status, 200);
    assert!(resp.text().starts_with("4 "), "{}", resp.text());
    drop(c);
    w.stop();
}

#[test]
fn upload_100_mib_with_content_length() {
    upload(false);
}

#[test]
fn upload_100_mib_chunked() {
    upload(true);
}

/// The i-th MiB the app sends (see `block` in the fixture).
fn expected_block(i: usize) -> Vec<u8> {
    let head = format!("<block {i}>").into_bytes();
    let mut b = head.clone();
    b.resize(MIB, ((i * 7 + 1) % 251) as u8);
    b
}

#[test]
fn download_100_mib_from_a_generator() {
    let w = start();
    let mut c = w.client(HOST);
    c.send(format!("GET /download?mib=100 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    let mut received = 0usize;
    let mut block_no = 0usize;
    let mut block = expected_block(0);
    let mut mismatch = None;
    let resp = c
        .read_response_with("GET", &mut |data: &[u8]| {
            let mut data = data;
            while !data.is_empty() {
                let at = received % MIB;
                let n = data.len().min(MIB - at);
                if mismatch.is_none() && data[..n] != block[at..at + n] {
                    mismatch = Some(received);
                }
                received += n;
                data = &data[n..];
                if at + n == MIB {
                    block_no += 1;
                    block = expected_block(block_no);
                }
            }
        })
        .unwrap_or_else(|e| panic!("download failed: {e}; log:\n{}", w.logs()));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.framing, Framing::Chunked);
    assert!(
        resp.complete,
        "the download was cut short at {received} bytes"
    );
    assert_eq!(received, TOTAL, "bytes downloaded");
    assert_eq!(
        mismatch, None,
        "the download differs from the app's output at this offset"
    );
    check_memory(&w, "download");

    let resp = c.get("/rss");
    assert_eq!(resp.status, 200);
    let worker_peak: u64 = resp.text().parse().unwrap();
    assert!(
        worker_peak < PEAK_LIMIT_KIB,
        "the worker's peak RSS is {worker_peak} KiB after the download"
    );
    drop(c);
    w.stop();
}

#[test]
fn slow_reader_of_a_large_download_does_not_grow_warren() {
    // The client reads nothing for a while: warren must push back on the worker instead of
    // buffering what the generator produces.
    let w = start();
    let mut c = w.client(HOST);
    c.send(format!("GET /download?mib=100 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    check_memory(&w, "download with a stalled reader");
    let mut received = 0usize;
    let resp = c
        .read_response_with("GET", &mut |d: &[u8]| received += d.len())
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.complete);
    assert_eq!(received, TOTAL);
    check_memory(&w, "download with a stalled reader, after reading");
    drop(c);
    w.stop();
}

#[test]
fn expect_100_continue_before_an_upload() {
    // curl and other clients ask before sending a large body; the body follows the 100.
    let w = start();
    let mut c = w.client(HOST);
    let body = vec![b'e'; MIB];
    c.send(&c.head_bytes(
        "POST",
        "/upload",
        &[("Expect", "100-continue")],
        Some(body.len()),
    ))
    .unwrap();
    let mut interim = Vec::new();
    let mut buf = [0u8; 1024];
    while !interim.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = std::io::Read::read(&mut c.stream(), &mut buf)
            .expect("no 100 Continue for a request that expects it");
        assert!(n > 0, "connection closed instead of 100 Continue");
        interim.extend_from_slice(&buf[..n]);
    }
    let interim = String::from_utf8_lossy(&interim);
    assert!(
        interim.starts_with("HTTP/1.1 100"),
        "expected 100 Continue, got {interim:?}"
    );
    c.send(&body).unwrap();
    let resp = c.read_response("POST").unwrap();
    assert_eq!(resp.status, 200);
    let (bytes, crc, _, _) = parse_upload_answer(&resp.text());
    assert_eq!(bytes, MIB);
    assert_eq!(crc, crc32_update(0, &body));
    drop(c);
    w.stop();
}

#[test]
fn an_upload_cut_short_frees_the_worker() {
    // The client announces 100 MiB, sends 1 MiB and hangs up. The app, blocked reading
    // wsgi.input, must get an error rather than wait forever, and its only worker must be
    // free for the next request.
    let w = start();
    let mut c = w.client(HOST);
    let head = c.head_bytes("POST", "/upload", &[], Some(TOTAL));
    c.send(&head).unwrap();
    c.send(&vec![b'c'; MIB]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.close();

    let mut probe = w.client(HOST);
    probe.set_read_timeout(std::time::Duration::from_secs(15));
    let resp = probe
        .roundtrip(
            format!("GET /rss HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
            "GET",
        )
        .unwrap_or_else(|e| {
            panic!(
                "no answer after an upload was cut short ({e}): the worker is still waiting \
                 for the rest of the body; log:\n{}",
                w.logs()
            )
        });
    assert_eq!(resp.status, 200);
    drop(probe);
    w.stop();
}
