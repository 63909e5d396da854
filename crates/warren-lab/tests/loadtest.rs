//! End-to-end runs of the generator against a tiny HTTP server started inside the test on
//! 127.0.0.1:0, which also serves a fake warren `/metrics` page.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use warren_lab::series::CSV_COLUMNS;
use warren_lab::{LoadtestArgs, Summary};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: LoadtestArgs,
}

/// What the fake server saw.
#[derive(Default)]
struct Seen {
    /// Requests to anything but /metrics.
    requests: AtomicU64,
    /// Host headers of those requests.
    hosts: Mutex<Vec<String>>,
    /// Connections accepted (keep-alive means far fewer than requests).
    connections: AtomicU64,
}

/// A fake warren `/metrics` page whose counters follow the requests served so far; the app is
/// "reloaded" (a new generation) once 75 requests were served.
fn metrics_page(served: u64) -> String {
    let fast = served * 9 / 10;
    format!(
        "# TYPE warren_app_queue_length gauge\n\
         warren_app_queue_length{{app=\"hello\"}} {q}\n\
         warren_app_queue_length{{app=\"other\"}} 1000\n\
         # TYPE warren_app_queue_wait_seconds histogram\n\
         warren_app_queue_wait_seconds_bucket{{app=\"hello\",le=\"0.001\"}} {fast}\n\
         warren_app_queue_wait_seconds_bucket{{app=\"hello\",le=\"0.01\"}} {served}\n\
         warren_app_queue_wait_seconds_bucket{{app=\"hello\",le=\"+Inf\"}} {served}\n\
         warren_app_queue_wait_seconds_sum{{app=\"hello\"}} 0.1\n\
         warren_app_queue_wait_seconds_count{{app=\"hello\"}} {served}\n\
         warren_app_workers{{app=\"hello\",state=\"busy\"}} 1\n\
         warren_app_workers{{app=\"hello\",state=\"idle\"}} 2\n\
         warren_app_workers{{app=\"hello\",state=\"starting\"}} 0\n\
         warren_app_target_workers{{app=\"hello\"}} 4\n\
         warren_app_spawns_total{{app=\"hello\"}} {spawns}\n\
         warren_app_reaps_total{{app=\"hello\"}} 0\n\
         warren_app_responses_total{{app=\"hello\",status=\"200\"}} {served}\n\
         warren_app_min_workers{{app=\"hello\"}} 1\n\
         warren_app_max_workers{{app=\"hello\"}} 6\n\
         warren_app_target_queue_wait_seconds{{app=\"hello\"}} 0.005\n\
         warren_app_generation{{app=\"hello\"}} {generation}\n\
         this line is garbage and must be skipped\n",
        q = served % 3,
        spawns = 3 + served / 50,
        generation = if served >= 75 { 2 } else { 1 },
    )
}

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Seen>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/metrics" {
        let served = seen.requests.load(Ordering::Relaxed);
        return Ok(Response::new(Full::new(Bytes::from(metrics_page(served)))));
    }
    seen.requests.fetch_add(1, Ordering::Relaxed);
    if let (Some(h), Ok(mut hosts)) = (req.headers().get(hyper::header::HOST), seen.hosts.lock()) {
        hosts.push(String::from_utf8_lossy(h.as_bytes()).into_owned());
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"hello\n")));
    match path.as_str() {
        "/slow" => tokio::time::sleep(Duration::from_secs(2)).await,
        "/unavailable" => *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE,
        _ => {}
    }
    Ok(response)
}

/// Starts the server; it runs until the test's runtime ends.
async fn server() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            state.connections.fetch_add(1, Ordering::Relaxed);
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, state.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn args(argv: &[&str]) -> LoadtestArgs {
    let words = std::iter::once("loadtest").chain(argv.iter().copied());
    match Cli::try_parse_from(words) {
        Ok(cli) => cli.args,
        Err(e) => panic!("{argv:?}: {e}"),
    }
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).expect("CSV written");
    let mut lines = text.lines();
    let header = lines
        .next()
        .expect("a header")
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    (header, rows)
}

fn column_sum(header: &[String], rows: &[Vec<String>], name: &str) -> u64 {
    let i = header.iter().position(|h| h == name).expect(name);
    rows.iter()
        .map(|r| {
            r[i].parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}: {:?}", r[i]))
        })
        .sum()
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).expect("PNG written");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert!(
        bytes.len() > 1000,
        "PNG suspiciously small: {} bytes",
        bytes.len()
    );
}

fn assert_accounting(s: &Summary) {
    assert_eq!(s.scheduled, s.sent + s.dropped, "{s:#?}");
    assert_eq!(s.sent, s.ok + s.errors(), "{s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_load_with_metrics_writes_csv_and_png() {
    let (addr, seen) = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("run.csv");
    let png = dir.path().join("run.png");
    let url = format!("http://{addr}/");
    let metrics = format!("http://{addr}/metrics");
    let summary = warren_lab::run(args(&[
        "--url",
        &url,
        "--host",
        "hello.localhost",
        "--from",
        "50",
        "--duration",
        "2",
        "--metrics",
        &metrics,
        "--app",
        "hello",
        "--csv",
        csv.to_str().expect("utf-8 path"),
        "--png",
        png.to_str().expect("utf-8 path"),
    ]))
    .await
    .expect("the run succeeds");

    assert_eq!(summary.scheduled, 100);
    assert_eq!(summary.sent, 100);
    assert_eq!(summary.dropped, 0);
    assert_eq!(summary.ok, 100, "{summary:#?}");
    assert_accounting(&summary);
    assert!(!summary.interrupted);
    assert!(summary.latency_p50_ms.is_some() && summary.latency_p99_ms.is_some());
    assert_eq!(seen.requests.load(Ordering::Relaxed), 100);
    // Keep-alive: connections are reused (generous bound: at 50 req/s with fast answers a
    // handful suffices).
    let connections = seen.connections.load(Ordering::Relaxed);
    assert!(
        connections < 100,
        "{connections} connections for 100 requests"
    );
    let hosts = seen.hosts.lock().expect("hosts").clone();
    assert!(hosts.iter().all(|h| h == "hello.localhost"), "{hosts:?}");

    let warren = summary.warren.as_ref().expect("metrics were sampled");
    assert!(warren.scrapes >= 2, "{warren:#?}");
    assert_eq!(warren.max_workers, Some(3.0));
    assert_eq!(warren.max_target_workers, Some(4.0));
    assert!(
        warren
            .queue_wait_p99_ms
            .is_some_and(|v| v > 0.0 && v <= 10.0),
        "{warren:#?}"
    );

    let (header, rows) = read_csv(&csv);
    assert_eq!(header, CSV_COLUMNS);
    assert!((2..=5).contains(&rows.len()), "{} rows", rows.len());
    assert_eq!(rows.len(), summary.rows);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), CSV_COLUMNS.len(), "row {i}: {row:?}");
        assert_eq!(row[0], i.to_string());
    }
    assert_eq!(column_sum(&header, &rows, "offered_rps"), 100);
    assert_eq!(column_sum(&header, &rows, "sent_rps"), summary.sent);
    assert_eq!(column_sum(&header, &rows, "ok_rps"), summary.ok);
    assert_eq!(column_sum(&header, &rows, "error_rps"), summary.errors());
    assert_eq!(column_sum(&header, &rows, "dropped_rps"), 0);
    // The first second: 50 offered; its metric cells are filled from the scrapes.
    assert_eq!(rows[0][1], "50");
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    assert_eq!(rows[0][col("workers")], "3");
    assert_eq!(rows[0][col("target_workers")], "4");
    assert!(!rows[0][col("latency_p99_ms")].is_empty());
    assert!(
        !rows[0][col("queue_wait_p99_ms")].is_empty(),
        "{:?}",
        rows[0]
    );

    assert_png(&png);
    assert_eq!(summary.png.as_deref(), Some(png.as_path()));
}

/// A step, then `--cooldown`: the rows go on past the schedule with no load and with the
/// metrics still sampled; the policy columns are filled and the reload is in `generation`.
/// `WARREN_LAB_KEEP_PNG=FILE` keeps the chart, to look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_keeps_sampling_after_the_load() {
    let (addr, _seen) = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("run.csv");
    let png = dir.path().join("run.png");
    let url = format!("http://{addr}/");
    let metrics = format!("http://{addr}/metrics");
    let summary = warren_lab::run(args(&[
        "--url",
        &url,
        "--pattern",
        "step",
        "--from",
        "20",
        "--to",
        "60",
        "--at",
        "1",
        "--duration",
        "3",
        "--cooldown",
        "3",
        "--metrics",
        &metrics,
        "--app",
        "hello",
        "--csv",
        csv.to_str().expect("utf-8 path"),
        "--png",
        png.to_str().expect("utf-8 path"),
    ]))
    .await
    .expect("the run succeeds");
    assert_eq!(summary.scheduled, 140, "{summary:#?}");
    assert_accounting(&summary);

    let (header, rows) = read_csv(&csv);
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    assert!(
        rows.len() >= 6,
        "{} rows: the cool-down is missing",
        rows.len()
    );
    // Nothing offered after the schedule, and the metrics still sampled.
    for row in &rows[3..] {
        assert_eq!(row[col("offered_rps")], "0", "{row:?}");
    }
    let sampled_after = rows[3..]
        .iter()
        .filter(|r| !r[col("workers")].is_empty())
        .count();
    assert!(sampled_after >= 2, "{rows:?}");
    assert_eq!(rows[0][col("min_workers")], "1");
    assert_eq!(rows[0][col("max_workers")], "6");
    assert_eq!(rows[0][col("busy_workers")], "1");
    assert_eq!(rows[0][col("target_queue_wait_ms")], "5.000");
    let generations: Vec<&str> = rows
        .iter()
        .map(|r| r[col("generation")].as_str())
        .filter(|g| !g.is_empty())
        .collect();
    assert_eq!(generations.first(), Some(&"1"), "{generations:?}");
    assert_eq!(generations.last(), Some(&"2"), "{generations:?}");
    assert_png(&png);
    if let Some(keep) = std::env::var_os("WARREN_LAB_KEEP_PNG") {
        std::fs::copy(&png, keep).expect("copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_gives_timeouts_and_drops_past_max_in_flight() {
    let (addr, _seen) = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("slow.csv");
    let png = dir.path().join("slow.png");
    let url = format!("http://{addr}/slow");
    // 20 req/s for 1 s, each held 0.3 s by the timeout (the server takes 2 s): about six would
    // be outstanding at once, but only three may be.
    let summary = warren_lab::run(args(&[
        "--url",
        &url,
        "--from",
        "20",
        "--duration",
        "1",
        "--timeout",
        "0.3",
        "--max-in-flight",
        "3",
        "--csv",
        csv.to_str().expect("utf-8 path"),
        "--png",
        png.to_str().expect("utf-8 path"),
    ]))
    .await
    .expect("the run succeeds");

    assert_eq!(summary.scheduled, 20);
    assert_accounting(&summary);
    assert!(summary.dropped > 0, "{summary:#?}");
    assert_eq!(summary.ok, 0);
    assert_eq!(summary.timeouts, summary.sent, "{summary:#?}");
    assert!(summary.warren.is_none());
    assert!(
        summary.warnings.iter().any(|w| w.contains("dropped")),
        "{:?}",
        summary.warnings
    );

    let (header, rows) = read_csv(&csv);
    assert_eq!(column_sum(&header, &rows, "dropped_rps"), summary.dropped);
    assert_eq!(column_sum(&header, &rows, "timeout_rps"), summary.timeouts);
    assert_eq!(
        column_sum(&header, &rows, "sent_rps") + column_sum(&header, &rows, "dropped_rps"),
        20
    );
    // No metrics: the metric columns are empty.
    let workers = header.iter().position(|h| h == "workers").expect("workers");
    assert!(rows.iter().all(|r| r[workers].is_empty()));
    assert_png(&png);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_2xx_and_refused_connections_are_errors() {
    let (addr, _seen) = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("e.csv");
    let png = dir.path().join("e.png");
    let url = format!("http://{addr}/unavailable");
    let summary = warren_lab::run(args(&[
        "--url",
        &url,
        "--pattern",
        "step",
        "--from",
        "10",
        "--to",
        "30",
        "--at",
        "0.5",
        "--duration",
        "1",
        "--csv",
        csv.to_str().expect("utf-8 path"),
        "--png",
        png.to_str().expect("utf-8 path"),
    ]))
    .await
    .expect("the run succeeds");
    assert_eq!(summary.scheduled, 20);
    assert_eq!(
        summary.errors_by_status.get(&503),
        Some(&20),
        "{summary:#?}"
    );
    assert_accounting(&summary);

    // A port nobody listens on: every request is a transport error, with its reason.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let url = format!("http://{closed}/");
    let summary = warren_lab::run(args(&[
        "--url",
        &url,
        "--from",
        "10",
        "--duration",
        "0.5",
        "--csv",
        csv.to_str().expect("utf-8 path"),
        "--png",
        png.to_str().expect("utf-8 path"),
    ]))
    .await
    .expect("the run succeeds");
    assert_eq!(summary.transport_errors, 5, "{summary:#?}");
    assert_eq!(summary.transport_error_kinds.values().sum::<u64>(), 5);
    assert_accounting(&summary);
}

#[tokio::test]
async fn refusals_happen_before_any_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("x.csv");
    let csv = csv.to_str().expect("utf-8 path");
    let err = warren_lab::run(args(&[
        "--url",
        "http://10.0.0.1:8080/",
        "--from",
        "1",
        "--csv",
        csv,
    ]))
    .await
    .expect_err("not loopback");
    assert!(err.to_string().contains("not loopback"), "{err}");
    assert!(
        !Path::new(csv).exists(),
        "nothing is written for a refused run"
    );

    let err = warren_lab::run(args(&[
        "--url",
        "http://127.0.0.1:1/",
        "--from",
        "1",
        "--duration",
        "7200",
        "--csv",
        csv,
    ]))
    .await
    .expect_err("too long");
    assert!(err.to_string().contains("--duration"), "{err}");

    // A metrics endpoint that cannot be read stops the run before the load starts.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let metrics = format!("http://{closed}/metrics");
    let err = warren_lab::run(args(&[
        "--url",
        "http://127.0.0.1:1/",
        "--from",
        "1",
        "--metrics",
        &metrics,
        "--csv",
        csv,
    ]))
    .await
    .expect_err("metrics unreachable");
    assert!(err.to_string().contains("cannot read --metrics"), "{err}");

    let missing_dir = dir.path().join("nope").join("x.png");
    let err = warren_lab::run(args(&[
        "--url",
        "http://127.0.0.1:1/",
        "--from",
        "1",
        "--csv",
        csv,
        "--png",
        missing_dir.to_str().expect("utf-8 path"),
    ]))
    .await
    .expect_err("png directory missing");
    assert!(err.to_string().contains("does not exist"), "{err}");
}
