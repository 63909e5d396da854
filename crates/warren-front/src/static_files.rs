//! Static files, served by the front itself as SAE's nginx did, with no symlink followed.
//!
//! The front runs as root on the host and a tenant may write into a static directory (its
//! `sandbox.writable`, or its own deploy), so a file is served only if it is reached beneath its
//! static directory with no symlink at any component (the directory's own path included), is
//! a regular file, and has one link (`open.rs`). What is left is the HTTP side:
//!
//! - `decide.rs` (pure): the request path decoded and checked (`..`, NUL, backslash refused),
//!   conditional requests (`If-Match`, `If-Unmodified-Since`, `If-None-Match`,
//!   `If-Modified-Since`, `If-Range`) and single byte ranges (several ranges get the whole
//!   file). The `ETag` is derived like nginx's from modification time and size, so no file is
//!   read to compute it.
//! - `stream.rs`: the body, read from the open descriptor in 64 KiB chunks.
//!
//! This module ties them: GET and HEAD only (405 with `Allow: GET,HEAD` otherwise, as
//! `ServeDir` answered), the opens on the blocking pool, 404 for anything refused (with a
//! debug line saying why; a tenant can cause them at will, so never louder), a 307 to `path/`
//! for a directory asked without its slash, then the headers `ServeDir` sent: `Content-Type`
//! from the extension, `Content-Length`, `Accept-Ranges`, `Last-Modified`, `ETag`.

mod decide;
mod open;
mod stream;

use http::header::{
    ACCEPT_RANGES, ALLOW, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, LOCATION,
    RANGE,
};
use http::{HeaderValue, Method, Response, StatusCode};

pub use stream::StaticBody;

use crate::body::FrontBody;
use crate::rescue;
use crate::routes::StaticRoute;
use decide::{Answer, Conditions, Validators};
use open::Found;

pub async fn serve(route: &StaticRoute, parts: &http::request::Parts) -> Response<FrontBody> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut resp = status(StatusCode::METHOD_NOT_ALLOWED);
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET,HEAD"));
        return resp;
    }
    let full = parts.uri.path();
    let Some(path) = decide::clean_path(&full[route.prefix.len()..]) else {
        tracing::debug!(path = full, "static path refused");
        return not_found();
    };
    // The type follows the name asked for (a directory's is its index's).
    let name = if path.trailing_slash {
        "index.html"
    } else {
        path.segments.last().map_or("", String::as_str)
    };
    let content_type = mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let dir = route.dir.clone();
    let found =
        tokio::task::spawn_blocking(move || open::find(open::How::detect(), &dir, &path)).await;
    match found {
        Ok(Ok(Found::File { file, validators })) => respond(parts, file, &validators, content_type),
        Ok(Ok(Found::Directory)) => redirect(parts),
        Ok(Ok(Found::Refused(why))) => {
            tracing::debug!(path = full, ?why, "static file refused");
            not_found()
        }
        Ok(Err(errno)) => {
            tracing::warn!(path = full, dir = %route.dir.display(), error = %errno, "static file failed");
            rescue::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the static file could not be opened\n",
            )
        }
        Err(join) => {
            tracing::warn!(path = full, error = %join, "static file lookup failed");
            rescue::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the static file could not be opened\n",
            )
        }
    }
}

fn respond(
    parts: &http::request::Parts,
    file: std::fs::File,
    v: &Validators,
    content_type: &'static str,
) -> Response<FrontBody> {
    let header = |name| parts.headers.get(name).map(HeaderValue::as_bytes);
    let conditions = Conditions {
        if_match: header(IF_MATCH),
        if_none_match: header(IF_NONE_MATCH),
        if_modified_since: header(IF_MODIFIED_SINCE),
        if_unmodified_since: header(IF_UNMODIFIED_SINCE),
        range: header(RANGE),
        if_range: header(IF_RANGE),
    };
    let etag = ascii(v.etag());
    let last_modified = ascii(v.last_modified());
    let (mut resp, range) = match decide::answer(&conditions, v) {
        Answer::NotModified => {
            let mut resp = status(StatusCode::NOT_MODIFIED);
            resp.headers_mut().insert(ETAG, etag);
            resp.headers_mut().insert(LAST_MODIFIED, last_modified);
            return resp;
        }
        Answer::PreconditionFailed => return status(StatusCode::PRECONDITION_FAILED),
        Answer::Unsatisfiable => {
            let mut resp = status(StatusCode::RANGE_NOT_SATISFIABLE);
            let h = resp.headers_mut();
            h.insert(CONTENT_RANGE, ascii(format!("bytes */{}", v.len)));
            h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            h.insert(ETAG, etag);
            h.insert(LAST_MODIFIED, last_modified);
            return resp;
        }
        Answer::Whole => (Response::new(()), (0, v.len)),
        Answer::Part { start, end } => {
            let mut resp = Response::new(());
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            resp.headers_mut().insert(
                CONTENT_RANGE,
                ascii(format!("bytes {start}-{end}/{}", v.len)),
            );
            (resp, (start, end - start + 1))
        }
    };
    let (offset, len) = range;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(LAST_MODIFIED, last_modified);
    h.insert(ETAG, etag);
    let body = if parts.method == Method::HEAD {
        StaticBody::empty()
    } else {
        StaticBody::new(file, offset, len)
    };
    resp.map(|()| FrontBody::Static(body))
}

/// 307 to the same path with a `/` added (and the query kept), as `ServeDir` redirected.
fn redirect(parts: &http::request::Parts) -> Response<FrontBody> {
    let location = match parts.uri.query() {
        Some(q) => format!("{}/?{q}", parts.uri.path()),
        None => format!("{}/", parts.uri.path()),
    };
    // A request path is visible ASCII, so this only fails for a URI hyper would not parse.
    let Ok(location) = HeaderValue::from_str(&location) else {
        return not_found();
    };
    let mut resp = status(StatusCode::TEMPORARY_REDIRECT);
    resp.headers_mut().insert(LOCATION, location);
    resp
}

fn not_found() -> Response<FrontBody> {
    rescue::plain(StatusCode::NOT_FOUND, "not found\n")
}

fn status(status: StatusCode) -> Response<FrontBody> {
    let mut resp = Response::new(FrontBody::Message(None));
    *resp.status_mut() = status;
    resp
}

/// A header value made of digits, hex, quotes and an HTTP date: always valid.
fn ascii(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("an ASCII header value")
}
