//! The one place where failures become HTTP responses (linkerd2-proxy's "rescue" idea):
//! overload and unavailability are 503 with `Retry-After`, a failed worker is 502, a request
//! past its time limit is 504, an oversized body is 413.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use warren_master::{AppState, DispatchError};

use crate::body::FrontBody;

/// A short plain-text response made by the front itself.
pub fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<FrontBody> {
    let mut resp = Response::new(FrontBody::Message(Some(text.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The response for a request its app did not answer. The log lines of failures an app can
/// cause at will (its worker dying, a response warren will not relay, a request past its time
/// limit) spend from the app's log budget.
pub fn dispatch_error(id: u64, state: &AppState, err: &DispatchError) -> Response<FrontBody> {
    let rid = format_args!("{id:016x}");
    let app = state.name();
    let (status, text) = match err {
        DispatchError::QueueFull { .. } | DispatchError::QueueTimeout { .. } => {
            tracing::info!(request_id = %rid, app, error = %err, "request shed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the app is overloaded; retry later\n".to_owned(),
            )
        }
        DispatchError::Retired { .. } => {
            tracing::info!(request_id = %rid, app, error = %err, "app removed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the app was removed\n".to_owned(),
            )
        }
        DispatchError::Unavailable { reason, .. } => {
            tracing::info!(request_id = %rid, app, error = %err, "app unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the app is unavailable: {reason}\n"),
            )
        }
        DispatchError::WorkerFailed { .. } | DispatchError::WorkerGone { .. } => {
            if state.may_log() {
                tracing::warn!(request_id = %rid, app, error = %err, "bad gateway");
            }
            (
                StatusCode::BAD_GATEWAY,
                "the app's worker failed while handling the request\n".to_owned(),
            )
        }
        DispatchError::BadResponse { .. } => {
            if state.may_log() {
                tracing::warn!(
                    request_id = %rid,
                    app,
                    error = %err,
                    "bad gateway: the app's response cannot be relayed"
                );
            }
            (
                StatusCode::BAD_GATEWAY,
                "the app's response could not be relayed\n".to_owned(),
            )
        }
        DispatchError::RequestTimeout { .. } => {
            if state.may_log() {
                tracing::warn!(request_id = %rid, app, error = %err, "gateway timeout");
            }
            (StatusCode::GATEWAY_TIMEOUT, format!("{err}\n"))
        }
        DispatchError::BodyTimeout(_) => {
            tracing::info!(request_id = %rid, app, error = %err, "slow request body");
            (StatusCode::REQUEST_TIMEOUT, format!("{err}\n"))
        }
        DispatchError::BodyTooLarge { .. } => {
            tracing::info!(request_id = %rid, app, error = %err, "body too large");
            (StatusCode::PAYLOAD_TOO_LARGE, format!("{err}\n"))
        }
    };
    let mut resp = plain(status, text);
    if let Some(after) = err.retry_after() {
        let secs = after.as_secs_f64().ceil().max(1.0) as u64;
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
