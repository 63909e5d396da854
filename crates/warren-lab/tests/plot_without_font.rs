//! The chart is drawn without any text when no font is available. This runs in its own test
//! binary, where no font was ever registered with plotters, so any text drawn would fail.

use warren_lab::plot;
use warren_lab::series::{Marker, MarkerKind, Row};

#[test]
fn draws_a_png_without_a_font() {
    let rows: Vec<Row> = (0..10)
        .map(|i| Row {
            t_s: i,
            offered: 50,
            sent: 50,
            ok: 40 + i,
            errors: 10 - i,
            latency_p99_ms: Some(5.0 * (i + 1) as f64),
            queue_wait_p50_ms: (i % 3 != 0).then_some(0.5),
            queue_wait_p99_ms: Some(2.0),
            workers: Some(i as f64),
            target_workers: Some(4.0),
            ..Row::default()
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plain.png");
    // Markers are drawn too, their labels left out.
    let markers = [Marker {
        t: 4.0,
        kind: MarkerKind::Reload,
        label: "a label that must not be drawn".into(),
    }];
    plot::draw(
        &rows,
        &markers,
        "title that must not be drawn",
        &path,
        false,
    )
    .expect("drawn without text");
    let bytes = std::fs::read(&path).expect("PNG written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    if let Some(keep) = std::env::var_os("WARREN_LAB_KEEP_PNG") {
        std::fs::copy(&path, keep).expect("copy");
    }
}

#[test]
fn draws_empty_series() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("empty.png");
    plot::draw(&[], &[], "", &path, false).expect("drawn");
    assert!(
        std::fs::read(&path)
            .expect("written")
            .starts_with(b"\x89PNG")
    );
}
