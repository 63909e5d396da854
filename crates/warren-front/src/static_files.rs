//! Static files, served by the front as SAE's nginx did: `tower-http`'s `ServeDir` does the
//! path checks (no `..`, no escaping the directory), content types, `Last-Modified`,
//! `If-Modified-Since` and `Range`; this module adds the `ETag` / `If-None-Match` pair it lacks,
//! derived like nginx's from modification time and size, so no file is read to compute it.

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_NONE_MATCH, LAST_MODIFIED};
use http::{HeaderValue, Request, Response, StatusCode};
use tower::ServiceExt;

use crate::body::FrontBody;
use crate::rescue;
use crate::routes::StaticRoute;

pub async fn serve(route: &StaticRoute, parts: &http::request::Parts) -> Response<FrontBody> {
    let path = parts.uri.path();
    let rest = &path[route.prefix.len()..];
    let rest = if rest.is_empty() { "/" } else { rest };
    let mut inner = Request::new(());
    *inner.method_mut() = parts.method.clone();
    *inner.uri_mut() = match rest.parse() {
        Ok(u) => u,
        Err(_) => return rescue::plain(StatusCode::BAD_REQUEST, "bad path\n"),
    };
    *inner.headers_mut() = parts.headers.clone();
    let resp = match route.serve.clone().oneshot(inner).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let etag = etag(&resp);
    if let Some(tag) = &etag
        && let Some(inm) = parts.headers.get(IF_NONE_MATCH)
        && matches_etag(inm.as_bytes(), tag.as_bytes())
    {
        let mut not_modified = Response::new(FrontBody::Message(None));
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        not_modified.headers_mut().insert(ETAG, tag.clone());
        if let Some(lm) = resp.headers().get(LAST_MODIFIED) {
            not_modified.headers_mut().insert(LAST_MODIFIED, lm.clone());
        }
        return not_modified;
    }
    let mut resp = resp.map(FrontBody::Static);
    if let Some(tag) = etag {
        resp.headers_mut().insert(ETAG, tag);
    }
    resp
}

/// `"<mtime>-<size>"` from the response's own headers, for 200, 206 and 304 responses.
fn etag<B>(resp: &Response<B>) -> Option<HeaderValue> {
    let h = resp.headers();
    let modified = httpdate_secs(h.get(LAST_MODIFIED)?.to_str().ok()?)?;
    let size: u64 = match resp.status() {
        StatusCode::OK => h.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()?,
        StatusCode::PARTIAL_CONTENT => h
            .get(CONTENT_RANGE)?
            .to_str()
            .ok()?
            .rsplit('/')
            .next()?
            .parse()
            .ok()?,
        _ => return None,
    };
    HeaderValue::from_str(&format!("\"{modified:x}-{size:x}\"")).ok()
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only
/// form `ServeDir` writes.
fn httpdate_secs(s: &str) -> Option<u64> {
    let mut it = s.split([' ', ':']);
    let _weekday = it.next()?;
    let day: u64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let (h, m, sec): (u64, u64, u64) = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    // Days from civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + m * 60 + sec)
}

/// Whether an `If-None-Match` value matches `tag` (weak comparison, `*` matches anything).
fn matches_etag(header: &[u8], tag: &[u8]) -> bool {
    let Ok(header) = std::str::from_utf8(header) else {
        return false;
    };
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/").as_bytes() == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse() {
        assert_eq!(
            httpdate_secs("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(httpdate_secs("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(httpdate_secs("garbage"), None);
    }

    #[test]
    fn etag_matching() {
        let check =
            |h: &str, want: bool| assert_eq!(matches_etag(h.as_bytes(), b"\"a-1\""), want, "{h}");
        check("\"a-1\"", true);
        check("W/\"a-1\"", true);
        check("\"x\", \"a-1\"", true);
        check("*", true);
        check("\"a-2\"", false);
    }
}
