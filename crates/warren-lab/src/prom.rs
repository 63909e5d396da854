//! A small, tolerant reader of the Prometheus text exposition format, and
//! `histogram_quantile` as Prometheus computes it.
//!
//! Tolerant means: comments (`# HELP`, `# TYPE`, anything after `#`), blank lines and lines that
//! do not parse are skipped, never fatal; an exporter that adds series or labels this lab does
//! not know about does not break it. Timestamps after the value are accepted and ignored.
//!
//! **Invariant:** pure. Text in, samples out; no I/O.

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, e.g. `warren_app_queue_length` or `..._bucket`.
    pub name: String,
    /// Labels in the order written; values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of `text` that parses; other lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

/// One line of the exposition format; `None` for comments, blank lines and lines that do not
/// parse.
pub fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    // An optional timestamp; anything more is not this format.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `label="value", ...}` (the part after `{`), returning the labels and the text after
/// the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let key_end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
        let key = &s[..key_end];
        if key.is_empty() {
            return None;
        }
        s = s[key_end..].trim_start().strip_prefix('=')?.trim_start();
        s = s.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// A sample value or a bucket's `le`: a float, or `+Inf` / `-Inf` / `NaN` in any case.
pub fn parse_value(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// One histogram bucket: the count of observations `<= upper_bound` (cumulative).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The bucket's `le`.
    pub upper_bound: f64,
    /// Observations at or below `upper_bound`.
    pub count: f64,
}

/// The `q`-quantile (0 ≤ q ≤ 1) of a classic histogram, as Prometheus' `histogram_quantile`:
/// buckets are sorted, equal bounds merged, counts forced monotonic; the bucket holding rank
/// `q · total` is found and the value interpolated linearly inside it (the first bucket starts
/// at 0 unless its bound is not positive). If the rank falls in the `+Inf` bucket the highest
/// finite bound is returned.
///
/// `None` where Prometheus gives NaN: `q` outside `[0, 1]` or NaN, no `+Inf` bucket, fewer
/// than two buckets, or no observations.
pub fn histogram_quantile(q: f64, buckets: &[Bucket]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut sorted: Vec<Bucket> = buckets
        .iter()
        .copied()
        .filter(|b| !b.upper_bound.is_nan() && b.count.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
    // Merge equal bounds (the same series exported twice, or summed across apps).
    let mut merged: Vec<Bucket> = Vec::with_capacity(sorted.len());
    for b in sorted {
        match merged.last_mut() {
            Some(last) if last.upper_bound == b.upper_bound => last.count += b.count,
            _ => merged.push(b),
        }
    }
    let last = merged.last()?;
    if last.upper_bound != f64::INFINITY || merged.len() < 2 {
        return None;
    }
    // Scrapes are not atomic: a higher bucket can briefly read lower. Force monotonic.
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        max = max.max(b.count);
        b.count = max;
    }
    let total = merged[merged.len() - 1].count;
    if total <= 0.0 {
        return None;
    }
    let mut rank = q * total;
    let finite = &merged[..merged.len() - 1];
    let Some(i) = finite.iter().position(|b| b.count >= rank) else {
        return Some(finite[finite.len() - 1].upper_bound);
    };
    if i == 0 && merged[0].upper_bound <= 0.0 {
        return Some(merged[0].upper_bound);
    }
    let end = merged[i].upper_bound;
    let mut count = merged[i].count;
    let mut start = 0.0;
    if i > 0 {
        start = merged[i - 1].upper_bound;
        count -= merged[i - 1].count;
        rank -= merged[i - 1].count;
    }
    if count <= 0.0 {
        return Some(start);
    }
    Some(start + (end - start) * (rank / count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    fn check_line(line: &str, want: Option<Sample>) {
        let got = parse_line(line);
        match (&got, &want) {
            (Some(g), Some(w)) if g.value.is_nan() && w.value.is_nan() => {
                assert_eq!((&g.name, &g.labels), (&w.name, &w.labels), "{line:?}")
            }
            _ => assert_eq!(got, want, "{line:?}"),
        }
    }

    #[test]
    fn parses_lines() {
        check_line(
            "warren_app_queue_length{app=\"hello\"} 3",
            Some(sample("warren_app_queue_length", &[("app", "hello")], 3.0)),
        );
        check_line("up 1", Some(sample("up", &[], 1.0)));
        check_line(
            "  a:b_c { app = \"x\" , le=\"+Inf\", } 1.5e3 1700000000000",
            Some(sample("a:b_c", &[("app", "x"), ("le", "+Inf")], 1500.0)),
        );
        check_line(
            r#"m{path="a \"quoted\" \\ back\nslash"} -2"#,
            Some(sample(
                "m",
                &[("path", "a \"quoted\" \\ back\nslash")],
                -2.0,
            )),
        );
        check_line(
            "m{l=\"}{,=\"} +Inf",
            Some(sample("m", &[("l", "}{,=")], f64::INFINITY)),
        );
        check_line("m NaN", Some(sample("m", &[], f64::NAN)));
        check_line("m{} 7", Some(sample("m", &[], 7.0)));
    }

    #[test]
    fn skips_what_it_cannot_read() {
        for line in [
            "",
            "   ",
            "# HELP warren_app_queue_length requests waiting",
            "# TYPE warren_app_queue_length gauge",
            "m",
            "m{app=\"x\" 3",
            "m{app=x} 3",
            "m{app=\"x\"} three",
            "m 1 2 3",
            "m 1 notatimestamp",
            "9lives 1",
            "{app=\"x\"} 1",
            "m{app=\"unterminated} 1",
        ] {
            check_line(line, None);
        }
    }

    #[test]
    fn parse_keeps_good_lines_around_bad_ones() {
        let text = "# TYPE a gauge\na 1\ngarbage here !\n\nb{x=\"y\"} 2\n";
        let got = parse(text);
        assert_eq!(
            got,
            vec![sample("a", &[], 1.0), sample("b", &[("x", "y")], 2.0)]
        );
        assert_eq!(got[1].label("x"), Some("y"));
        assert_eq!(got[1].label("z"), None);
    }

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(upper_bound, count)| Bucket { upper_bound, count })
            .collect()
    }

    fn check_q(q: f64, pairs: &[(f64, f64)], want: Option<f64>) {
        let got = histogram_quantile(q, &buckets(pairs));
        match (got, want) {
            (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "q={q} {pairs:?}: {g} != {w}"),
            _ => assert_eq!(got, want, "q={q} {pairs:?}"),
        }
    }

    #[test]
    fn quantile_interpolates_within_the_bucket() {
        let h = [
            (0.1, 10.0),
            (0.5, 50.0),
            (1.0, 90.0),
            (f64::INFINITY, 100.0),
        ];
        // rank 50 is the top of the (0.1, 0.5] bucket.
        check_q(0.5, &h, Some(0.5));
        // rank 30: 20 of the 40 in (0.1, 0.5] -> halfway.
        check_q(0.3, &h, Some(0.3));
        // rank 5: half of the first bucket, which starts at 0.
        check_q(0.05, &h, Some(0.05));
        // rank 70: 20 of 40 in (0.5, 1.0].
        check_q(0.7, &h, Some(0.75));
        // rank 99 lies in +Inf: the highest finite bound.
        check_q(0.99, &h, Some(1.0));
        check_q(0.9, &h, Some(1.0));
    }

    #[test]
    fn quantile_edge_cases() {
        let inf = f64::INFINITY;
        // No observations, no +Inf, too few buckets, bad q: NaN in Prometheus.
        check_q(0.5, &[(1.0, 0.0), (inf, 0.0)], None);
        check_q(0.5, &[(1.0, 5.0), (2.0, 10.0)], None);
        check_q(0.5, &[(inf, 10.0)], None);
        check_q(1.5, &[(1.0, 5.0), (inf, 10.0)], None);
        check_q(-0.1, &[(1.0, 5.0), (inf, 10.0)], None);
        check_q(f64::NAN, &[(1.0, 5.0), (inf, 10.0)], None);
        // Unsorted input, duplicated bounds (summed), non-monotonic counts (forced up).
        check_q(
            0.5,
            &[(inf, 20.0), (1.0, 10.0), (0.5, 2.0), (0.5, 2.0), (2.0, 8.0)],
            Some(0.5 + 0.5 * (10.0 - 4.0) / (10.0 - 4.0)),
        );
        // A first bucket with a non-positive bound returns that bound.
        check_q(0.1, &[(-1.0, 5.0), (1.0, 10.0), (inf, 10.0)], Some(-1.0));
        // q = 0 in an empty first bucket: the bucket's start.
        check_q(0.0, &[(0.1, 0.0), (1.0, 10.0), (inf, 10.0)], Some(0.0));
        check_q(1.0, &[(0.1, 0.0), (1.0, 10.0), (inf, 10.0)], Some(1.0));
    }
}
