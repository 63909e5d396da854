//! The PNG chart: three panels sharing the time axis.
//!
//! 1. requests/s: offered (the schedule), ok (2xx completions), errors, and dropped by the
//!    generator when there were any;
//! 2. latency, ms, log scale: warren's queue wait p50 and p99, and the client's p99, against
//!    the autoscaler's target queue wait (dashed: what the p99 should stay under);
//! 3. workers (busy + idle + starting), the busy ones, and the autoscaler's target, between
//!    the app's `min` and `max` (dashed).
//!
//! Vertical markers cross all three: where the pattern changes abruptly, where the load stops
//! (a cool-down or drain follows) and where warren reloaded the app ([`crate::series::markers`]);
//! the top panel names them.
//!
//! Per-second counts and quantiles are drawn at the middle of their second, gauges at its end
//! (when they were scraped). A missing value (no metrics, no completions) leaves a gap.
//!
//! Text needs a TrueType font, loaded at run time so that nothing depends on fontconfig:
//! `$WARREN_LAB_FONT` if set, else DejaVu Sans from the usual Debian, Fedora and Arch paths
//! (Debian: package `fonts-dejavu-core`). Without one the chart is drawn without any text and
//! [`font`] says why.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use crate::series::{Marker, MarkerKind, Row};

/// The environment variable naming a TTF file to use instead of the default paths.
pub const FONT_ENV: &str = "WARREN_LAB_FONT";

/// Where DejaVu Sans usually is.
pub const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
];

/// Chart size, pixels.
pub const SIZE: (u32, u32) = (1200, 900);

const FAMILY: &str = "sans-serif";

/// Registers the font with plotters once per process. `Ok(path)` of the font in use, or
/// `Err(reason)` naming the paths tried, in which case charts are drawn without text.
pub fn font() -> Result<&'static Path, &'static str> {
    static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FONT.get_or_init(load_font)
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(String::as_str)
}

fn load_font() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os(FONT_ENV) {
        Some(p) => vec![PathBuf::from(p)],
        None => FONT_PATHS.iter().map(PathBuf::from).collect(),
    };
    let mut tried = Vec::new();
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => {
                // plotters keeps fonts for the life of the process; this runs once (OnceLock).
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
                    .map(|()| path.clone())
                    .map_err(|_| format!("{} is not a usable TrueType font", path.display()));
            }
            Err(e) => tried.push(format!("{}: {e}", path.display())),
        }
    }
    Err(format!(
        "no font for the chart's text ({}); the PNG has no text. Install DejaVu Sans \
         (Debian: apt-get install fonts-dejavu-core) or set {FONT_ENV} to a .ttf file",
        tried.join("; ")
    ))
}

/// One line to draw: `(x, y)` points where `y` may be missing (a gap).
struct Line<'a> {
    label: &'a str,
    color: RGBColor,
    /// Dashed lines are references (a target), drawn under the solid ones.
    dashed: bool,
    points: Vec<(f64, Option<f64>)>,
}

impl<'a> Line<'a> {
    fn solid(label: &'a str, color: RGBColor, points: Vec<(f64, Option<f64>)>) -> Self {
        Line {
            label,
            color,
            dashed: false,
            points,
        }
    }

    fn dashed(label: &'a str, color: RGBColor, points: Vec<(f64, Option<f64>)>) -> Self {
        Line {
            dashed: true,
            ..Line::solid(label, color, points)
        }
    }
}

/// One panel: a caption, a y axis, its lines.
struct Panel<'a> {
    caption: &'a str,
    y_desc: &'a str,
    /// Logarithmic y axis (latencies span orders of magnitude).
    log: bool,
    lines: Vec<Line<'a>>,
}

/// Draws `rows` into a PNG at `path`, with `markers` across the panels and `title` on top;
/// `text: false` draws no text at all (no font needed).
pub fn draw(
    rows: &[Row],
    markers: &[Marker],
    title: &str,
    path: &Path,
    text: bool,
) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    draw_on(&root, rows, markers, title, text).map_err(|e| anyhow!("{e}"))?;
    root.present()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot write {}", path.display()))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn draw_on(
    root: &Area<'_>,
    rows: &[Row],
    markers: &[Marker],
    title: &str,
    text: bool,
) -> DrawResult {
    root.fill(&WHITE)?;
    let body = if text {
        root.titled(title, (FAMILY, 22))?
    } else {
        root.clone()
    };
    let areas = body.split_evenly((3, 1));
    let x_max = (rows.len() as f64)
        .max(markers.iter().map(|m| m.t).fold(0.0, f64::max))
        .max(1.0);
    let mid = |r: &Row| r.t_s as f64 + 0.5;
    let end = |r: &Row| r.t_s as f64 + 1.0;
    let count = |f: fn(&Row) -> u64| -> Vec<(f64, Option<f64>)> {
        rows.iter().map(|r| (mid(r), Some(f(r) as f64))).collect()
    };
    let series = |x: &dyn Fn(&Row) -> f64, f: fn(&Row) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        rows.iter().map(|r| (x(r), f(r))).collect()
    };

    let mut rates = vec![
        Line::solid("offered", BLUE_, count(|r| r.offered)),
        Line::solid("ok (2xx)", GREEN_, count(|r| r.ok)),
        Line::solid("errors", RED_, count(|r| r.errors)),
    ];
    if rows.iter().any(|r| r.dropped > 0) {
        rates.push(Line::solid(
            "dropped by generator",
            PURPLE_,
            count(|r| r.dropped),
        ));
    }
    let has_workers = rows
        .iter()
        .any(|r| r.workers.is_some() || r.target_workers.is_some());
    let panels = [
        Panel {
            caption: "requests per second",
            y_desc: "req/s",
            log: false,
            lines: rates,
        },
        Panel {
            caption: "latency (log scale)",
            y_desc: "ms",
            log: true,
            lines: vec![
                Line::solid(
                    "queue wait p50",
                    ORANGE_,
                    series(&mid, |r| r.queue_wait_p50_ms),
                ),
                Line::solid(
                    "queue wait p99",
                    RED_,
                    series(&mid, |r| r.queue_wait_p99_ms),
                ),
                Line::solid(
                    "client latency p99",
                    BLUE_,
                    series(&mid, |r| r.latency_p99_ms),
                ),
                Line::dashed(
                    "target queue wait (autoscaler)",
                    GREY_,
                    series(&end, |r| r.target_queue_wait_ms),
                ),
            ],
        },
        Panel {
            caption: if has_workers {
                "workers"
            } else {
                "workers (no metrics: pass --metrics)"
            },
            y_desc: "workers",
            log: false,
            lines: vec![
                Line::dashed("max workers", RED_, series(&end, |r| r.max_workers)),
                Line::dashed("min workers", BLUE_, series(&end, |r| r.min_workers)),
                Line::dashed("target workers", GREY_, series(&end, |r| r.target_workers)),
                Line::solid(
                    "workers (busy+idle+starting)",
                    GREEN_,
                    series(&end, |r| r.workers),
                ),
                Line::solid("busy workers", ORANGE_, series(&end, |r| r.busy_workers)),
            ],
        },
    ];
    for (i, (area, panel)) in areas.iter().zip(&panels).enumerate() {
        // The top panel names the markers; the others only draw them.
        draw_panel(area, panel, markers, i == 0 && text, x_max, text)?;
    }
    Ok(())
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const RED_: RGBColor = RGBColor(214, 39, 40);
const ORANGE_: RGBColor = RGBColor(255, 127, 14);
const PURPLE_: RGBColor = RGBColor(148, 103, 189);
const GREY_: RGBColor = RGBColor(110, 110, 110);
const BLACK_: RGBColor = RGBColor(30, 30, 30);
const BROWN_: RGBColor = RGBColor(140, 86, 75);

/// A log axis cannot show 0: latencies below this are drawn at it.
const FLOOR_MS: f64 = 0.01;

/// Axis numbers without needless decimals: 140, 2.5, 0.01.
fn tidy(v: &f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// The grid, with axis titles and tidy numbers when `text` (the thumbnail has neither).
fn draw_mesh<X, Y, DB>(
    mut mesh: MeshStyle<'_, '_, X, Y, DB>,
    y_desc: &str,
    text: bool,
) -> DrawResult
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    if text {
        mesh.x_desc("time (s)")
            .y_desc(y_desc)
            .x_label_formatter(&tidy)
            .y_label_formatter(&tidy);
    } else {
        // Grid lines without their numbers (a log axis ignores a label count of 0).
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    Ok(())
}

fn draw_panel(
    area: &Area<'_>,
    panel: &Panel<'_>,
    markers: &[Marker],
    name_markers: bool,
    x_max: f64,
    text: bool,
) -> DrawResult {
    let values: Vec<f64> = panel
        .lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|p| p.1))
        .filter(|y| y.is_finite())
        .collect();
    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if text {
        builder
            .caption(panel.caption, (FAMILY, 18))
            .x_label_area_size(40)
            .y_label_area_size(70);
    } else {
        builder.x_label_area_size(8).y_label_area_size(8);
    }
    if panel.log {
        let lo = values.iter().map(|v| v.max(FLOOR_MS)).reduce(f64::min);
        let hi = values.iter().map(|v| v.max(FLOOR_MS)).reduce(f64::max);
        let (lo, hi) = match (lo, hi) {
            (Some(lo), Some(hi)) => {
                let lo = 10f64.powf(lo.log10().floor());
                let hi = 10f64.powf(hi.log10().ceil());
                (lo, if hi > lo { hi } else { lo * 10.0 })
            }
            _ => (0.1, 1000.0),
        };
        let mut chart = builder.build_cartesian_2d(0.0..x_max, (lo..hi).log_scale())?;
        draw_mesh(chart.configure_mesh(), panel.y_desc, text)?;
        draw_markers(&mut chart, markers, (lo, hi), name_markers)?;
        draw_lines(&mut chart, &panel.lines, |y| y.max(FLOOR_MS), text)
    } else {
        let y_max = values.iter().copied().fold(0.0_f64, f64::max);
        let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
        let mut chart = builder.build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        draw_mesh(chart.configure_mesh(), panel.y_desc, text)?;
        draw_markers(&mut chart, markers, (0.0, y_max), name_markers)?;
        draw_lines(&mut chart, &panel.lines, |y| y, text)
    }
}

/// The colour of a marker's kind.
fn marker_color(kind: MarkerKind) -> RGBColor {
    match kind {
        MarkerKind::Pattern => PURPLE_,
        MarkerKind::LoadStops => BLACK_,
        MarkerKind::Reload => BROWN_,
    }
}

/// Draws each marker as a dotted vertical line over the panel's height `(lo, hi)` (under the
/// data lines), with its label at the top when `named`.
fn draw_markers<'a, CT>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    markers: &[Marker],
    (lo, hi): (f64, f64),
    named: bool,
) -> DrawResult
where
    CT: CoordTranslate<From = (f64, f64)>,
{
    for m in markers {
        let color = marker_color(m.kind);
        chart.draw_series(DashedLineSeries::new(
            [(m.t, lo), (m.t, hi)],
            3,
            4,
            color.stroke_width(1),
        ))?;
        if named {
            let style = TextStyle::from((FAMILY, 13).into_font()).color(&color);
            chart.draw_series(std::iter::once(
                EmptyElement::at((m.t, hi)) + Text::new(m.label.clone(), (4, 4), style),
            ))?;
        }
    }
    Ok(())
}

/// Draws each line as its runs of present points, with one legend entry per line that has
/// any point, and the legend box if there is any entry.
fn draw_lines<'a, CT>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    lines: &[Line<'_>],
    map_y: impl Fn(f64) -> f64,
    text: bool,
) -> DrawResult
where
    CT: CoordTranslate<From = (f64, f64)>,
{
    let mut any = false;
    for line in lines {
        let points: Vec<(f64, Option<f64>)> = line
            .points
            .iter()
            .map(|&(x, y)| (x, y.map(&map_y)))
            .collect();
        let color = line.color;
        for (i, run) in runs(&points).into_iter().enumerate() {
            let anno = if line.dashed {
                chart.draw_series(DashedLineSeries::new(run, 8, 5, color.stroke_width(2)))?
            } else {
                chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?
            };
            if text && i == 0 {
                any = true;
                let dashed = line.dashed;
                anno.label(line.label).legend(move |(x, y)| {
                    // A dashed line's entry is two dashes, as on the chart.
                    let (a, b) = if dashed { (8, 12) } else { (10, 10) };
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (a, 0)], color.stroke_width(2))
                        + PathElement::new(vec![(b, 0), (20, 0)], color.stroke_width(2))
                });
            }
        }
    }
    if any {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()?;
    }
    Ok(())
}

/// The runs of consecutive present points of a line.
fn runs(points: &[(f64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for &(x, y) in points {
        match y {
            Some(y) if y.is_finite() => current.push((x, y)),
            _ => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_at_gaps() {
        let pts = [
            (0.0, Some(1.0)),
            (1.0, Some(2.0)),
            (2.0, None),
            (3.0, Some(f64::NAN)),
            (4.0, Some(5.0)),
        ];
        assert_eq!(
            runs(&pts),
            vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(4.0, 5.0)]]
        );
        assert!(runs(&[(0.0, None)]).is_empty());
    }

    #[test]
    fn tidy_numbers() {
        assert_eq!(tidy(&140.0), "140");
        assert_eq!(tidy(&2.5), "2.5");
        assert_eq!(tidy(&0.01), "0.01");
        assert_eq!(tidy(&-0.0), "0");
        assert_eq!(tidy(&10000.0), "10000");
    }
}
