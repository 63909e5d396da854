//! The pure half of static file serving: which file a request path names, and what to answer
//! once the file's size and modification time are known (conditional requests, `Range`). No
//! I/O and no clock: everything comes in as arguments, so the rules are unit-tested by table.

use std::time::{Duration, UNIX_EPOCH};

/// A request path below a static prefix, decoded and checked: the segments to open one by one
/// beneath the static directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanPath {
    /// Non-empty names without `/`, `\`, NUL, `.` or `..`; empty for the directory itself.
    pub segments: Vec<String>,
    /// The path ended in `/`: a directory is asked for (its `index.html`), never a file.
    pub trailing_slash: bool,
}

/// Decodes the part of a request path after its static prefix (`""`, `/`, `/a/b.css`) as
/// `ServeDir` did: percent-decoding (`%20`; a `%` not followed by two hex digits stays as it
/// is), the result must be UTF-8, an encoded `/` separates segments like a plain one, empty
/// and `.` segments are skipped. `None` (a 404) for a `..` segment, a backslash or a NUL.
pub fn clean_path(rest: &str) -> Option<CleanPath> {
    let decoded = String::from_utf8(percent_decode(rest.as_bytes())).ok()?;
    if decoded.contains('\0') {
        return None;
    }
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if s.contains('\\') => return None,
            s => segments.push(s.to_owned()),
        }
    }
    Some(CleanPath {
        segments,
        trailing_slash: rest.ends_with('/'),
    })
}

fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

/// What identifies a version of a file, from its `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validators {
    pub len: u64,
    /// Whole seconds since the epoch (`Last-Modified` has no finer resolution; 0 before it).
    pub modified: u64,
}

/// The last second `Last-Modified` can say (9999-12-31T23:59:59Z).
const MAX_HTTP_DATE: u64 = 253_402_300_799;

impl Validators {
    /// From `st_size` and `st_mtime` (seconds, negative before the epoch).
    pub fn new(len: u64, mtime: i64) -> Validators {
        let modified = u64::try_from(mtime).unwrap_or(0).min(MAX_HTTP_DATE);
        Validators { len, modified }
    }

    /// `"<mtime>-<size>"` in hex, as nginx derives it: no file is read to compute it, and it
    /// changes with either.
    pub fn etag(&self) -> String {
        format!("\"{:x}-{:x}\"", self.modified, self.len)
    }

    /// The `Last-Modified` value (an IMF-fixdate).
    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(self.modified))
    }
}

/// The request headers that decide the answer, raw (an absent header is `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
}

/// What to send for an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with the whole file.
    Whole,
    /// 206 with bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */LEN`.
    Unsatisfiable,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: an `If-Match` / `If-Unmodified-Since` precondition failed.
    PreconditionFailed,
}

/// The answer to a GET or HEAD of a file with validators `v`, in the order of RFC 9110
/// §13.2.2: `If-Match`, else `If-Unmodified-Since` (412); `If-None-Match`, else
/// `If-Modified-Since` (304); then `Range`, honoured only when `If-Range` (if any) matches.
pub fn answer(c: &Conditions<'_>, v: &Validators) -> Answer {
    let etag = v.etag();
    if let Some(h) = c.if_match {
        if !any_etag(h, |t| t == "*" || t == etag) {
            return Answer::PreconditionFailed;
        }
    } else if let Some(since) = c.if_unmodified_since.and_then(http_date)
        && v.modified > since
    {
        return Answer::PreconditionFailed;
    }
    if let Some(h) = c.if_none_match {
        if any_etag(h, |t| t == "*" || t.trim_start_matches("W/") == etag) {
            return Answer::NotModified;
        }
    } else if let Some(since) = c.if_modified_since.and_then(http_date)
        && v.modified <= since
    {
        return Answer::NotModified;
    }
    let Some(range) = c.range.and_then(|r| std::str::from_utf8(r).ok()) else {
        return Answer::Whole;
    };
    if let Some(h) = c.if_range
        && !if_range_matches(h, v, &etag)
    {
        return Answer::Whole;
    }
    match parse_range(range, v.len) {
        Range::Ignored => Answer::Whole,
        Range::Part { start, end } => Answer::Part { start, end },
        Range::Unsatisfiable => Answer::Unsatisfiable,
    }
}

/// `If-Range`: an entity tag compared strongly (a weak one never matches), or a date that
/// must be exactly `Last-Modified`.
fn if_range_matches(h: &[u8], v: &Validators, etag: &str) -> bool {
    let Ok(h) = std::str::from_utf8(h) else {
        return false;
    };
    let h = h.trim();
    if h.starts_with('"') || h.starts_with("W/") {
        h == etag
    } else {
        http_date(h.as_bytes()) == Some(v.modified)
    }
}

/// Whether one entity tag of a comma-separated list satisfies `pred` (each trimmed).
fn any_etag(header: &[u8], pred: impl Fn(&str) -> bool) -> bool {
    std::str::from_utf8(header).is_ok_and(|h| h.split(',').map(str::trim).any(pred))
}

/// Seconds since the epoch of an HTTP date (any of the three forms RFC 9110 allows).
fn http_date(h: &[u8]) -> Option<u64> {
    let t = httpdate::parse_http_date(std::str::from_utf8(h).ok()?.trim()).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// A `Range` header against a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Not a single byte range warren serves (another unit, bad syntax, several ranges, a
    /// suffix of an empty file): the whole file is sent, as RFC 9110 allows.
    Ignored,
    /// Bytes `start..=end`, `end` clamped to the last byte.
    Part { start: u64, end: u64 },
    /// Well-formed, but starts past the end (or asks for zero bytes): 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` (RFC 9110 §14.1.2).
pub fn parse_range(header: &str, len: u64) -> Range {
    let header = header.trim();
    let Some((unit, spec)) = header.split_once('=') else {
        return Range::Ignored;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Range::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Ignored;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first, last) {
        ("", suffix) => match number(suffix) {
            None => Range::Ignored,
            Some(0) => Range::Unsatisfiable,
            Some(_) if len == 0 => Range::Ignored,
            Some(n) => Range::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        (first, "") => match number(first) {
            None => Range::Ignored,
            Some(start) if start >= len => Range::Unsatisfiable,
            Some(start) => Range::Part {
                start,
                end: len - 1,
            },
        },
        (first, last) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= len {
                    Range::Unsatisfiable
                } else {
                    Range::Part {
                        start,
                        end: end.min(len - 1),
                    }
                }
            }
            _ => Range::Ignored,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_and_checked() {
        #[track_caller]
        fn check(rest: &str, expected: Option<(&[&str], bool)>) {
            let got = clean_path(rest);
            let expected = expected.map(|(segments, trailing_slash)| CleanPath {
                segments: segments.iter().map(|s| s.to_string()).collect(),
                trailing_slash,
            });
            assert_eq!(got, expected, "{rest:?}");
        }
        check("", Some((&[], false)));
        check("/", Some((&[], true)));
        check("/a.txt", Some((&["a.txt"], false)));
        check("/img/", Some((&["img"], true)));
        check("/a%20b.txt", Some((&["a b.txt"], false)));
        check("/caf%C3%A9", Some((&["café"], false)));
        check("/a%2fb", Some((&["a", "b"], false)));
        check("//a/./b", Some((&["a", "b"], false)));
        check("/100%", Some((&["100%"], false)));
        check("/%zz", Some((&["%zz"], false)));
        check("/..", None);
        check("/../x", None);
        check("/%2e%2e/x", None);
        check("/%2E%2E/x", None);
        check("/..%2fx", None);
        check("/a/../b", None);
        check("/..%5cx", None);
        check("/a%00b", None);
        check("/%ff", None);
        check("/...", Some((&["..."], false)));
    }

    #[test]
    fn ranges() {
        use Range::*;
        #[track_caller]
        fn check(header: &str, len: u64, expected: Range) {
            assert_eq!(parse_range(header, len), expected, "{header:?} of {len}");
        }
        check("bytes=0-6", 20, Part { start: 0, end: 6 });
        check("bytes=5-14", 20, Part { start: 5, end: 14 });
        check("bytes=5-", 20, Part { start: 5, end: 19 });
        check("bytes=-4", 20, Part { start: 16, end: 19 });
        check("bytes=-40", 20, Part { start: 0, end: 19 });
        check("bytes=10-100", 20, Part { start: 10, end: 19 });
        check("bytes=19-19", 20, Part { start: 19, end: 19 });
        check("Bytes = 1-2", 20, Part { start: 1, end: 2 });
        check("bytes=20-", 20, Unsatisfiable);
        check("bytes=30-", 20, Unsatisfiable);
        check("bytes=20-25", 20, Unsatisfiable);
        check("bytes=-0", 20, Unsatisfiable);
        check("bytes=0-", 0, Unsatisfiable);
        check("bytes=-5", 0, Ignored);
        check("bytes=0-1,3-4", 20, Ignored);
        check("bytes=6-5", 20, Ignored);
        check("bytes=a-b", 20, Ignored);
        check("bytes=+1-2", 20, Ignored);
        check("bytes=-", 20, Ignored);
        check("bytes=5", 20, Ignored);
        check("items=0-1", 20, Ignored);
        check("bytes=99999999999999999999-", 20, Ignored);
    }

    #[test]
    fn conditional_requests() {
        use Answer::*;
        // Modified Sun, 06 Nov 1994 08:49:37 GMT, 20 bytes.
        let v = Validators {
            len: 20,
            modified: 784_111_777,
        };
        let tag = v.etag();
        let date = v.last_modified();
        assert_eq!(
            (tag.as_str(), date.as_str()),
            ("\"2ebc98a1-14\"", "Sun, 06 Nov 1994 08:49:37 GMT")
        );
        let before = "Sun, 06 Nov 1994 08:49:36 GMT";
        let rfc850 = "Sunday, 06-Nov-94 08:49:37 GMT";
        #[track_caller]
        fn check(headers: &[(&str, &str)], v: &Validators, expected: Answer) {
            let mut c = Conditions::default();
            for (name, value) in headers {
                let value = Some(value.as_bytes());
                match *name {
                    "if-match" => c.if_match = value,
                    "if-none-match" => c.if_none_match = value,
                    "if-modified-since" => c.if_modified_since = value,
                    "if-unmodified-since" => c.if_unmodified_since = value,
                    "range" => c.range = value,
                    "if-range" => c.if_range = value,
                    _ => unreachable!("{name}"),
                }
            }
            assert_eq!(answer(&c, v), expected, "{headers:?}");
        }
        let weak = format!("W/{tag}");
        let listed = format!("\"x\", {tag}");
        check(&[], &v, Whole);
        check(&[("if-none-match", &tag)], &v, NotModified);
        check(&[("if-none-match", &weak)], &v, NotModified);
        check(&[("if-none-match", &listed)], &v, NotModified);
        check(&[("if-none-match", "*")], &v, NotModified);
        check(&[("if-none-match", "\"2ebc98a1-15\"")], &v, Whole);
        check(&[("if-modified-since", &date)], &v, NotModified);
        check(&[("if-modified-since", rfc850)], &v, NotModified);
        check(&[("if-modified-since", before)], &v, Whole);
        check(&[("if-modified-since", "garbage")], &v, Whole);
        // If-None-Match wins over If-Modified-Since.
        check(
            &[("if-none-match", "\"other\""), ("if-modified-since", &date)],
            &v,
            Whole,
        );
        check(&[("if-match", &tag)], &v, Whole);
        check(&[("if-match", "*")], &v, Whole);
        check(&[("if-match", &weak)], &v, PreconditionFailed);
        check(&[("if-match", "\"other\"")], &v, PreconditionFailed);
        check(&[("if-unmodified-since", &date)], &v, Whole);
        check(&[("if-unmodified-since", before)], &v, PreconditionFailed);
        // If-Match wins over If-Unmodified-Since.
        check(
            &[("if-match", &tag), ("if-unmodified-since", before)],
            &v,
            Whole,
        );
        check(&[("range", "bytes=0-6")], &v, Part { start: 0, end: 6 });
        check(&[("range", "bytes=0-1,4-5")], &v, Whole);
        check(&[("range", "bytes=30-")], &v, Unsatisfiable);
        check(
            &[("range", "bytes=0-6"), ("if-none-match", &tag)],
            &v,
            NotModified,
        );
        check(
            &[("range", "bytes=0-6"), ("if-range", &tag)],
            &v,
            Part { start: 0, end: 6 },
        );
        check(
            &[("range", "bytes=0-6"), ("if-range", &date)],
            &v,
            Part { start: 0, end: 6 },
        );
        check(&[("range", "bytes=0-6"), ("if-range", &weak)], &v, Whole);
        check(
            &[("range", "bytes=0-6"), ("if-range", "\"old\"")],
            &v,
            Whole,
        );
        check(&[("range", "bytes=0-6"), ("if-range", before)], &v, Whole);
    }

    #[test]
    fn validators_from_times() {
        #[track_caller]
        fn check(mtime: i64, expected: u64) {
            assert_eq!(Validators::new(1, mtime).modified, expected, "{mtime}");
        }
        check(0, 0);
        check(-10, 0);
        check(1_999, 1_999);
        check(i64::MAX, MAX_HTTP_DATE);
    }
}
