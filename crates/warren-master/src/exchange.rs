//! One request's conversation with one worker.
//!
//! Hot path (no request body): one write of `REQUEST`+`BODY_END`, reads until the response
//! head, and if the whole response is already buffered the worker goes straight back to the
//! pool and the front gets a body of known length; no task is spawned.
//!
//! Otherwise a task owns the worker. With a request body it runs two things at once: the
//! *pump* copies the client's body into `BODY` frames, and the *reader* forwards response
//! frames into a bounded channel. They must be concurrent: an app may answer before reading its
//! input, and a worker blocked writing a response would never drain a body we insisted on
//! writing first. The pump only ever stops at a frame boundary (it is told to stop, never
//! cancelled), so the request pipe always stays in a state the worker can read.
//!
//! When the client goes away mid-response, the task sends `CANCEL` (after the body's end
//! frame, so frames never interleave), the worker stops iterating and calls `close()`, and the
//! rest of the response is read and dropped: the worker goes back to the pool either way.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use bytes::{Buf, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body::Body;
use tokio::sync::{Notify, mpsc, oneshot};

use warren_protocol::{
    BODY_CHUNK, FRAME_HEADER, Kind, ResponseHead, content_length, header_fields, put_frame,
    put_header, split_frame,
};

use crate::DispatchError;
use crate::app::{AppState, WorkerConn};
use crate::body::{BodyError, ResponseBody};
use crate::pipes::WorkerPipes;

/// Response frames buffered between the worker and a slow client, per request.
const CHANNEL_CHUNKS: usize = 4;

/// Unread request body the front still reads and drops after the app answered without it,
/// so the client's connection can be kept alive; a longer rest closes the connection.
const DISCARD_MAX: u64 = 1024 * 1024;
/// How long that draining may take.
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the pump may take to finish the frame it is writing once the client has gone.
const PUMP_FINISH: std::time::Duration = std::time::Duration::from_secs(5);

/// Bounds on a request body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// The `Content-Length`, if the body has one.
    pub declared: Option<u64>,
    /// The app's `max_body_mb`, in bytes.
    pub max: u64,
    /// Longest pause between two pieces of the body.
    pub idle: std::time::Duration,
}

/// What the pump tells the reader while both run.
#[derive(Default)]
struct PumpState {
    /// The body went past the app's limit: the response becomes a 413.
    too_large: AtomicBool,
    /// The client stopped sending the body: the response becomes a 408.
    timed_out: AtomicBool,
    /// The whole body was read from the client.
    done: AtomicBool,
    /// Body bytes read from the client so far.
    sent: std::sync::atomic::AtomicU64,
}

/// A `CANCEL` frame, ready to write.
const CANCEL: [u8; FRAME_HEADER] = [Kind::Cancel as u8, 0, 0, 0, 0];

/// Bytes asked of the response pipe when no frame is begun: a small response's frames, which arrive
/// together. The read's room is zero-filled first (this crate has no unsafe code to read into
/// spare capacity), on every request, so it is kept small; a larger response's rest is asked
/// for once its header is in.
const READ_MIN: usize = 4096;
/// Most bytes asked of the response pipe by one read: a body frame and the next frame's header.
const READ_MAX: usize = BODY_CHUNK + 2 * FRAME_HEADER;

/// What a response may hold, from `[server]`: the front keeps at most this much of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Most header lines (`server.max_response_headers`).
    pub headers: usize,
    /// Most bytes of the encoded head: status, reason, names and values
    /// (`server.max_response_header_bytes`).
    pub head_bytes: usize,
}

/// A frame longer than its kind may be, left unread (at most its header was buffered): a
/// head over [`ResponseLimits::head_bytes`], a body frame over [`BODY_CHUNK`], an end or abort
/// frame with more than a short reason. Nothing of it is held in memory.
#[derive(Debug, thiserror::Error)]
#[error("a {kind:?} frame of {len} bytes, over the limit of {limit}")]
struct Oversize {
    kind: Kind,
    len: usize,
    limit: usize,
}

/// Longest reason a worker gives in a `RESP_ABORT` frame (its own fixed messages are short).
const MAX_REASON: usize = 4096;

/// The longest payload a worker may send in a frame of `kind`.
fn frame_limit(kind: Kind, limits: &ResponseLimits) -> usize {
    match kind {
        Kind::RespHead => limits.head_bytes,
        Kind::RespBody => BODY_CHUNK,
        _ => MAX_REASON,
    }
}

/// A frame header's kind and length. The length is checked by [`frame_limit`], which every
/// kind's limit keeps below `MAX_FRAME`, so a head announced past even that is skipped too.
fn frame_header(h: &[u8; FRAME_HEADER]) -> io::Result<(Kind, usize)> {
    header_fields(*h).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The [`Oversize`] inside an error from [`read_frame`], if that is what it is.
fn oversize(e: &io::Error) -> Option<&Oversize> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Oversize>())
}

/// Reads one frame from the worker: kind and payload. A frame longer than its kind may be
/// (see [`frame_limit`]) is an error carrying [`Oversize`], with its payload left unread.
async fn read_frame(
    pipes: &WorkerPipes,
    rbuf: &mut BytesMut,
    limits: &ResponseLimits,
) -> io::Result<(Kind, Bytes)> {
    loop {
        // What is missing of the frame begun, and the next header.
        let mut want = READ_MIN;
        if let Some(h) = rbuf.first_chunk::<FRAME_HEADER>() {
            let (kind, len) = frame_header(h)?;
            let limit = frame_limit(kind, limits);
            if len > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Oversize { kind, len, limit },
                ));
            }
            let total = FRAME_HEADER + len;
            if rbuf.len() >= total {
                let mut frame = rbuf.split_to(total);
                frame.advance(FRAME_HEADER);
                return Ok((kind, frame.freeze()));
            }
            want = (total - rbuf.len() + FRAME_HEADER).clamp(READ_MIN, READ_MAX);
        }
        if pipes.read_into(rbuf, want).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Reads and drops the frame at the start of `rbuf` (its header is there), a piece at a time,
/// so that an oversized head costs no more memory than a body frame.
async fn skip_frame(pipes: &WorkerPipes, rbuf: &mut BytesMut) -> io::Result<()> {
    let Some(h) = rbuf.first_chunk::<FRAME_HEADER>() else {
        return Err(io::ErrorKind::InvalidData.into());
    };
    let (_, len) = frame_header(h)?;
    let mut left = FRAME_HEADER + len;
    loop {
        let n = left.min(rbuf.len());
        rbuf.advance(n);
        left -= n;
        if left == 0 {
            return Ok(());
        }
        if pipes.read_into(rbuf, left.min(READ_MAX)).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Hop-by-hop headers are the front's business, not the app's (PEP 3333 forbids them).
fn hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// A header value without the spaces and tabs around it (RFC 9110 §5.5: they are not part of
/// the value). Apps leave them (`("Set-Cookie", " csrftoken=...")`), and hyper sends a value
/// as given. Done here rather than in the worker: this is where every response head becomes
/// `http` types, whoever wrote the frame, and it costs a scan of the value's ends, no copy.
fn trim_ows(value: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &value[start..end]
}

/// The response head the front will send, from the worker's `RESP_HEAD` payload. Refused as
/// [`DispatchError::BadResponse`] (a 502, the worker still usable): a status outside 200–599
/// (warren relays no informational response and no protocol switch), more header lines than
/// `limits.headers`, a name or value HTTP cannot carry. A `Content-Length` that is not one
/// number is dropped (with a log line): the front then frames the body itself, by its
/// length when it has it whole, by chunks otherwise.
fn response_parts(
    app: &AppState,
    limits: &ResponseLimits,
    payload: &[u8],
) -> Result<http::response::Parts, DispatchError> {
    let bad = |reason: String| DispatchError::BadResponse {
        app: app.name().to_owned(),
        reason,
    };
    let head = ResponseHead::decode(payload).map_err(|e| DispatchError::WorkerFailed {
        app: app.name().to_owned(),
        reason: e.to_string(),
    })?;
    if !(200..=599).contains(&head.status) {
        return Err(bad(format!(
            "status {} is not one warren relays (200 to 599: no informational response, no \
             protocol switch)",
            head.status
        )));
    }
    if head.headers.len() > limits.headers {
        return Err(bad(format!(
            "the response has {} header lines, more than server.max_response_headers = {}",
            head.headers.len(),
            limits.headers
        )));
    }
    let status = StatusCode::from_u16(head.status)
        .map_err(|_| bad(format!("status {} is not valid", head.status)))?;
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    if !head.reason.is_empty() && status.canonical_reason().map(str::as_bytes) != Some(head.reason)
    {
        parts
            .extensions
            .insert(crate::Reason(Bytes::copy_from_slice(head.reason)));
    }
    let too_many = |_| bad("too many header lines".into());
    parts
        .headers
        .try_reserve(head.headers.len())
        .map_err(too_many)?;
    // `None`: no Content-Length; `Some(None)`: one that is not a single number.
    let mut length: Option<Option<u64>> = None;
    for (name, value) in head.headers {
        if hop_by_hop(name) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            // None on a 204 (RFC 9110 §8.6) or a 304, whose bodies are empty by definition.
            if matches!(head.status, 204 | 304) {
                continue;
            }
            let n = content_length(value);
            length = Some(match length {
                None => n,
                // The same number twice is one length (RFC 9110 §8.6); two are none.
                Some(prev) if prev == n => n,
                Some(_) => None,
            });
            continue;
        }
        let name = HeaderName::from_bytes(name).map_err(|_| {
            bad(format!(
                "header name {:?} is not valid",
                name.escape_ascii()
            ))
        })?;
        let value = HeaderValue::from_bytes(trim_ows(value))
            .map_err(|_| bad(format!("the value of header {name} is not valid")))?;
        parts.headers.try_append(name, value).map_err(too_many)?;
    }
    match length {
        None => {}
        Some(Some(n)) => {
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
        Some(None) if app.may_log() => {
            tracing::warn!(
                app = app.name(),
                "the app's Content-Length is not one number; the front frames the body itself"
            );
        }
        Some(None) => {}
    }
    Ok(parts)
}

fn worker_failed(app: &AppState, pid: i32, e: &io::Error) -> DispatchError {
    let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
        format!("worker {pid} closed its connection (it died)")
    } else {
        format!("worker {pid}: {e}")
    };
    DispatchError::WorkerFailed {
        app: app.name().to_owned(),
        reason,
    }
}

/// The worker could not even be sent the request: it was dead before this request reached it,
/// so another worker may take the request.
fn worker_gone(app: &AppState, pid: i32, e: &io::Error) -> DispatchError {
    DispatchError::WorkerGone {
        app: app.name().to_owned(),
        reason: format!("worker {pid} was gone before the request reached it: {e}"),
    }
}

/// Whether a response has no body by definition (RFC 9110 §6.4.1): the answer to a HEAD, a
/// 204, a 304. Whatever the app sent as its body is read and dropped.
fn bodiless(head_request: bool, status: StatusCode) -> bool {
    head_request || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// A response the worker sent whole: its `Content-Length` is made to agree with the bytes it
/// actually sent (a mismatch would desynchronise the client's connection). A bodiless one
/// (see [`bodiless`]) goes out with no body and, for a HEAD, the length the app declared.
fn whole_response(
    app: &AppState,
    mut parts: http::response::Parts,
    mut chunks: VecDeque<Bytes>,
    head_request: bool,
) -> Response<ResponseBody> {
    let no_body = bodiless(head_request, parts.status);
    if no_body {
        chunks.clear();
    }
    let body = ResponseBody::whole(chunks);
    let actual = http_body::Body::size_hint(&body).exact().unwrap_or(0);
    if !no_body
        && let Some(declared) = parts.headers.get(CONTENT_LENGTH)
        && declared.to_str().ok().and_then(|s| s.parse::<u64>().ok()) != Some(actual)
    {
        if app.may_log() {
            tracing::warn!(
                app = app.name(),
                declared = ?declared,
                actual,
                "the app's Content-Length does not match its body; sending the body's length"
            );
        }
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(actual));
    }
    Response::from_parts(parts, body)
}

/// A no-body exchange in progress. If the front drops it (the client went away mid-request),
/// `Drop` hands the worker to a task that finishes the write, cancels, reads the response to
/// its end and checks the worker back in: a client leaving never costs a worker.
struct Exchange {
    app: Arc<AppState>,
    limits: ResponseLimits,
    /// `None` once the worker was handed on (pool, forwarding task) or given up as broken.
    w: Option<WorkerConn>,
    frame: Bytes,
    /// How much of `frame` the worker has been sent.
    written: usize,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(w) = self.w.take() {
            let rest = self.frame.slice(self.written..);
            // While the runtime shuts down there is nothing to recover the worker for.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(recover(self.app.clone(), w, rest, self.limits));
            }
        }
    }
}

/// Finishes an abandoned exchange: sends the rest of the request and `CANCEL`, discards the
/// response.
async fn recover(app: Arc<AppState>, mut w: WorkerConn, rest: Bytes, limits: ResponseLimits) {
    if w.pipes.write_all(&rest).await.is_ok() && cancel(&w.pipes, &mut w.rbuf, &limits).await {
        app.checkin(w);
    }
}

/// Sends `CANCEL` and drops the rest of the response; whether the worker is reusable.
async fn cancel(pipes: &WorkerPipes, rbuf: &mut BytesMut, limits: &ResponseLimits) -> bool {
    pipes.write_all(&CANCEL).await.is_ok() && discard(pipes, rbuf, limits).await
}

/// Reads and drops response frames up to the end of the response; whether the worker is
/// reusable. An oversized head is skipped, not kept.
async fn discard(rd: &WorkerPipes, rbuf: &mut BytesMut, limits: &ResponseLimits) -> bool {
    loop {
        match read_frame(rd, rbuf, limits).await {
            Ok((Kind::RespEnd | Kind::RespAbort, _)) => return true,
            Ok((Kind::RespHead | Kind::RespBody, _)) => {}
            Err(e) if oversize(&e).is_some_and(|o| o.kind == Kind::RespHead) => {
                if skip_frame(rd, rbuf).await.is_err() {
                    return false;
                }
            }
            Ok(_) | Err(_) => return false,
        }
    }
}

/// Runs a request with no body on `w`.
pub(crate) async fn without_body(
    app: Arc<AppState>,
    w: WorkerConn,
    frame: Bytes,
    head_request: bool,
) -> Result<Response<ResponseBody>, DispatchError> {
    let mut ex = Exchange {
        limits: app.response_limits,
        app,
        w: Some(w),
        frame,
        written: 0,
    };
    let result = ex.run(head_request).await;
    if result.is_err() {
        // The worker broke the exchange: it is not reusable.
        ex.w = None;
    }
    result
}

impl Exchange {
    /// Reads and drops the rest of a response that will not be relayed; whether the worker
    /// is usable again.
    async fn discard_rest(&mut self) -> bool {
        let w = self.w.as_mut().expect("set until handed on");
        discard(&w.pipes, &mut w.rbuf, &self.limits).await
    }

    /// The 502 for a response that cannot be relayed; the worker goes back to the pool when
    /// `reusable`, and is given up otherwise.
    fn refuse(&mut self, reason: String, reusable: bool) -> DispatchError {
        match self.w.take() {
            Some(w) if reusable => self.app.checkin(w),
            _ => {}
        }
        DispatchError::BadResponse {
            app: self.app.name().to_owned(),
            reason,
        }
    }

    async fn run(&mut self, head_request: bool) -> Result<Response<ResponseBody>, DispatchError> {
        let app = self.app.clone();
        let w = self.w.as_mut().expect("set until handed on");
        while self.written < self.frame.len() {
            let failed = |e: &io::Error, written| match written {
                0 => worker_gone(&app, w.pid, e),
                _ => worker_failed(&app, w.pid, e),
            };
            match w.pipes.write(&self.frame[self.written..]).await {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return Err(failed(&e, self.written));
                }
                Ok(n) => self.written += n,
                Err(e) => return Err(failed(&e, self.written)),
            }
        }
        let head = match read_frame(&w.pipes, &mut w.rbuf, &self.limits).await {
            Ok((Kind::RespHead, payload)) => payload,
            Err(e) if oversize(&e).is_some_and(|o| o.kind == Kind::RespHead) => {
                let o = oversize(&e).expect("checked");
                let reason = format!(
                    "the response head is {} bytes, more than server.max_response_header_bytes \
                     = {}",
                    o.len, o.limit
                );
                let reusable =
                    skip_frame(&w.pipes, &mut w.rbuf).await.is_ok() && self.discard_rest().await;
                return Err(self.refuse(reason, reusable));
            }
            Ok((kind, _)) => {
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{kind:?} before the head"),
                );
                return Err(worker_failed(&app, w.pid, &e));
            }
            // A worker calls the app once it has read the whole `REQUEST` frame; all that
            // follows it here is the empty `BODY_END` frame, which the worker reads later. One
            // that died with more than that still in its pipe never passed the request to the
            // app, so it may run elsewhere.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && w.rbuf.is_empty() => {
                return Err(match w.pipes.unread() {
                    Ok(n) if n > FRAME_HEADER => {
                        let why = format!("it exited with {n} bytes of the request unread");
                        worker_gone(&app, w.pid, &io::Error::other(why))
                    }
                    _ => worker_failed(&app, w.pid, &e),
                });
            }
            Err(e) => return Err(worker_failed(&app, w.pid, &e)),
        };
        let parts = match response_parts(&app, &self.limits, &head) {
            Ok(parts) => parts,
            Err(DispatchError::BadResponse { reason, .. }) => {
                let reusable = self.discard_rest().await;
                return Err(self.refuse(reason, reusable));
            }
            Err(e) => return Err(e),
        };
        if bodiless(head_request, parts.status) {
            // Nothing of the body goes out: read it to its end here, and free the worker.
            if self.discard_rest().await {
                let w = self.w.take().expect("set until handed on");
                app.checkin(w);
            } else {
                self.w = None;
            }
            return Ok(whole_response(&app, parts, VecDeque::new(), head_request));
        }
        // From here on nothing awaits: the exchange cannot be abandoned half-way.
        let mut w = self.w.take().expect("set until handed on");
        // Take what is already buffered; if the end is among it, the response is complete.
        let mut chunks = VecDeque::new();
        loop {
            match split_frame(&w.rbuf) {
                Ok(Some((Kind::RespBody, _, total))) => {
                    let mut f = w.rbuf.split_to(total);
                    f.advance(FRAME_HEADER);
                    chunks.push_back(f.freeze());
                }
                Ok(Some((Kind::RespEnd, _, total))) => {
                    w.rbuf.advance(total);
                    app.checkin(w);
                    return Ok(whole_response(&app, parts, chunks, head_request));
                }
                _ => break,
            }
        }
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let limits = self.limits;
        tokio::spawn(async move {
            let pid = w.pid;
            let mut outcome = Forwarded::Ended;
            for c in chunks {
                if tx.send(Ok(c)).await.is_err() {
                    outcome = Forwarded::ClientGone;
                    break;
                }
            }
            if outcome == Forwarded::Ended {
                outcome = forward(&app, pid, &w.pipes, &mut w.rbuf, None, &tx, None).await;
            }
            let reusable = match outcome {
                Forwarded::Ended => true,
                Forwarded::Broken => false,
                Forwarded::ClientGone => cancel(&w.pipes, &mut w.rbuf, &limits).await,
            };
            if reusable {
                app.checkin(w);
            }
        });
        Ok(Response::from_parts(parts, ResponseBody::Stream(rx)))
    }
}

/// Runs a request with a body on `w`: the head now, the body and the response concurrently.
pub(crate) async fn with_body<B>(
    app: Arc<AppState>,
    w: WorkerConn,
    frame: Bytes,
    body: B,
    limits: BodyLimits,
) -> Result<Response<ResponseBody>, DispatchError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display + Send,
{
    // The head goes first, here: if the worker is already dead, nothing of the body has been
    // consumed and another worker can take the request.
    if let Err(e) = w.pipes.write_all(&frame).await {
        return Err(worker_gone(&app, w.pid, &e));
    }
    let (head_tx, head_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::spawn(drive(app.clone(), w, body, limits, head_tx, tx));
    match head_rx.await {
        Ok(Ok(parts)) => Ok(Response::from_parts(parts, ResponseBody::Stream(rx))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DispatchError::WorkerFailed {
            app: app.name().to_owned(),
            reason: "the exchange ended before a response head".into(),
        }),
    }
}

type HeadSender = oneshot::Sender<Result<http::response::Parts, DispatchError>>;

/// The task behind [`with_body`]: pump and reader at once, then cancel or finish.
async fn drive<B>(
    app: Arc<AppState>,
    mut w: WorkerConn,
    body: B,
    limits: BodyLimits,
    head_tx: HeadSender,
    tx: mpsc::Sender<Result<Bytes, BodyError>>,
) where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display + Send,
{
    let pid = w.pid;
    let stop = Notify::new();
    let state = PumpState::default();
    let WorkerConn { pipes, rbuf, .. } = &mut w;
    // Reader and pump share the pipes: each reads or writes its own.
    let pipes: &WorkerPipes = pipes;
    // `response_ended`: the response's end was read by `finish_pump` (the client gone).
    let (outcome, pumped, response_ended) = {
        let mut pump = std::pin::pin!(pump(pipes, body, limits, &stop, &state));
        let mut pumped = None;
        let outcome = {
            let mut read = std::pin::pin!(forward(
                &app,
                pid,
                pipes,
                rbuf,
                Some(head_tx),
                &tx,
                Some((&state, limits)),
            ));
            loop {
                tokio::select! {
                    o = &mut read => break o,
                    p = &mut pump, if pumped.is_none() => pumped = Some(p),
                }
            }
        };
        let (pumped, response_ended) = match pumped {
            Some(p) => (p, false),
            None => {
                stop.notify_one();
                match outcome {
                    // The worker reads the rest of the body once its response has ended.
                    Forwarded::Ended => (pump.await, false),
                    Forwarded::ClientGone => {
                        finish_pump(pump.as_mut(), pipes, rbuf, &app.response_limits).await
                    }
                    // Not reusable: nothing to wait for.
                    Forwarded::Broken => (Err(io::ErrorKind::BrokenPipe.into()), false),
                }
            }
        };
        (outcome, pumped, response_ended)
    };
    let (pump_ok, rest) = match pumped {
        Ok(rest) => (true, rest),
        Err(_) => (false, None),
    };
    let reusable = pump_ok
        && match outcome {
            Forwarded::Ended => true,
            Forwarded::Broken => false,
            Forwarded::ClientGone => {
                response_ended || cancel(pipes, rbuf, &app.response_limits).await
            }
        };
    if reusable {
        app.checkin(w);
    }
    if let Some(mut rest) = rest {
        // The worker is free already; reading the rest keeps the client's connection usable.
        let mut left = DISCARD_MAX;
        let drain = async {
            while let Some(Ok(frame)) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut rest).poll_frame(cx)).await
            {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                left = left.saturating_sub(n);
                if left == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
    }
}

/// Lets `pump` finish the frame it is writing after the client has gone, reading and dropping
/// the response meanwhile: nobody reads it any more, and the worker may be blocked writing it
/// while the pump waits for room in the request pipe. An app that neither reads its body nor
/// stops answering cannot be waited for: past `PUMP_FINISH` the worker is given up (it exits
/// when its pipes close, and is replaced). Returns the pump's result and whether the
/// response's end was read.
async fn finish_pump<T>(
    mut pump: std::pin::Pin<&mut impl Future<Output = io::Result<T>>>,
    pipes: &WorkerPipes,
    rbuf: &mut BytesMut,
    limits: &ResponseLimits,
) -> (io::Result<T>, bool) {
    let mut ended = false;
    let finish = async {
        loop {
            tokio::select! {
                p = &mut pump => break p,
                r = read_frame(pipes, rbuf, limits), if !ended => match r {
                    Ok((Kind::RespEnd | Kind::RespAbort, _)) => ended = true,
                    Ok((Kind::RespHead | Kind::RespBody, _)) => {}
                    Ok(_) => break Err(io::ErrorKind::InvalidData.into()),
                    Err(e) => break Err(e),
                },
            }
        }
    };
    let pumped = tokio::time::timeout(PUMP_FINISH, finish)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
    (pumped, ended)
}

/// Copies the client's body to the worker. Stops at a frame boundary when `stop` fires, and
/// always leaves the stream ending with `BODY_END` or `BODY_ABORT`.
async fn pump<B>(
    wr: &WorkerPipes,
    mut body: B,
    limits: BodyLimits,
    stop: &Notify,
    state: &PumpState,
) -> io::Result<Option<B>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut sent = 0u64;
    let mut hdr = Vec::with_capacity(FRAME_HEADER);
    let mut rest = None;
    let end = loop {
        if body.is_end_stream() {
            break (Kind::BodyEnd, String::new());
        }
        let frame = tokio::select! {
            biased;
            () = stop.notified() => {
                rest = Some(());
                break (Kind::BodyAbort, "the response ended before the body was read".to_owned())
            }
            f = tokio::time::timeout(
                limits.idle,
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)),
            ) => f,
        };
        let Ok(frame) = frame else {
            state.timed_out.store(true, Relaxed);
            break (
                Kind::BodyAbort,
                format!("the client sent no body data for {:?}", limits.idle),
            );
        };
        let mut data = match frame {
            None => break (Kind::BodyEnd, String::new()),
            Some(Err(e)) => break (Kind::BodyAbort, format!("reading the client's body: {e}")),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers: WSGI has no place for them
            },
        };
        sent += data.len() as u64;
        state.sent.store(sent, Relaxed);
        if sent > limits.max {
            state.too_large.store(true, Relaxed);
            break (
                Kind::BodyAbort,
                format!("the body exceeds the limit of {} bytes", limits.max),
            );
        }
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(BODY_CHUNK));
            hdr.clear();
            put_header(&mut hdr, Kind::Body, piece.len());
            wr.write_all(&hdr).await?;
            wr.write_all(&piece).await?;
        }
    };
    if end.0 == Kind::BodyEnd {
        state.done.store(true, Relaxed);
    }
    let mut last = Vec::with_capacity(FRAME_HEADER + end.1.len());
    put_frame(&mut last, end.0, end.1.as_bytes());
    wr.write_all(&last).await?;
    Ok(rest.map(|()| body))
}

/// How forwarding a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forwarded {
    /// The worker ended the response (`RESP_END` or `RESP_ABORT`): it is idle again.
    Ended,
    /// The client stopped reading; the worker is still producing the response.
    ClientGone,
    /// The worker died or broke the protocol.
    Broken,
}

/// Reads the response from the worker: the head to `head_tx` (if it is still to come), body
/// frames to `tx`. With `too_large` set by the pump, the head becomes a 413.
async fn forward(
    app: &AppState,
    pid: i32,
    rd: &WorkerPipes,
    rbuf: &mut BytesMut,
    mut head_tx: Option<HeadSender>,
    tx: &mpsc::Sender<Result<Bytes, BodyError>>,
    pumping: Option<(&PumpState, BodyLimits)>,
) -> Forwarded {
    loop {
        let (kind, payload) = match read_frame(rd, rbuf, &app.response_limits).await {
            Ok(f) => f,
            Err(e)
                if head_tx.is_some() && oversize(&e).is_some_and(|o| o.kind == Kind::RespHead) =>
            {
                let o = oversize(&e).expect("checked");
                let reason = format!(
                    "the response head is {} bytes, more than server.max_response_header_bytes \
                     = {}",
                    o.len, o.limit
                );
                let _ = head_tx
                    .take()
                    .expect("checked")
                    .send(Err(DispatchError::BadResponse {
                        app: app.name().to_owned(),
                        reason,
                    }));
                // Nobody reads the rest: as when the client leaves, the worker is cancelled.
                return match skip_frame(rd, rbuf).await {
                    Ok(()) => Forwarded::ClientGone,
                    Err(_) => Forwarded::Broken,
                };
            }
            Err(e) => {
                let err = worker_failed(app, pid, &e);
                if app.may_log() {
                    tracing::warn!(app = app.name(), pid, error = %err, "worker failed mid-request");
                }
                match head_tx.take() {
                    Some(h) => {
                        let _ = h.send(Err(err));
                    }
                    None => {
                        let _ = tx
                            .send(Err(BodyError::WorkerFailed {
                                app: app.name().to_owned(),
                                reason: err.to_string(),
                            }))
                            .await;
                    }
                }
                return Forwarded::Broken;
            }
        };
        match kind {
            Kind::RespHead if head_tx.is_some() => {
                let parts = match pumping {
                    Some((state, _)) if state.too_large.load(Relaxed) => {
                        Err(DispatchError::BodyTooLarge {
                            limit: app.config.max_body_bytes,
                        })
                    }
                    Some((state, limits)) if state.timed_out.load(Relaxed) => {
                        Err(DispatchError::BodyTimeout(limits.idle))
                    }
                    Some((state, limits)) => {
                        response_parts(app, &app.response_limits, &payload).map(|mut parts| {
                            // The app answers before the client finished sending its body. A
                            // short rest is read and dropped afterwards; a long or unknown one
                            // would make hyper close the connection after a response that
                            // promised keep-alive, so say so up front.
                            let unread = limits
                                .declared
                                .map(|d| d.saturating_sub(state.sent.load(Relaxed)));
                            if !state.done.load(Relaxed) && unread.is_none_or(|u| u > DISCARD_MAX) {
                                parts.headers.insert(
                                    http::header::CONNECTION,
                                    HeaderValue::from_static("close"),
                                );
                            }
                            parts
                        })
                    }
                    None => response_parts(app, &app.response_limits, &payload),
                };
                // A refused head (413, 408, 502) leaves nobody to read the rest.
                let refused = parts.is_err();
                let client_waits = head_tx.take().expect("checked").send(parts).is_ok();
                if !client_waits || refused {
                    return Forwarded::ClientGone;
                }
            }
            Kind::RespBody if head_tx.is_none() => {
                if tx.send(Ok(payload)).await.is_err() {
                    return Forwarded::ClientGone;
                }
            }
            Kind::RespEnd if head_tx.is_none() => return Forwarded::Ended,
            Kind::RespAbort if head_tx.is_none() => {
                let _ = tx.send(Err(BodyError::AppAborted)).await;
                return Forwarded::Ended;
            }
            other => {
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected {other:?} frame"),
                );
                let err = worker_failed(app, pid, &e);
                if app.may_log() {
                    tracing::warn!(app = app.name(), pid, error = %err, "protocol error from worker");
                }
                if let Some(h) = head_tx.take() {
                    let _ = h.send(Err(err));
                }
                return Forwarded::Broken;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::trim_ows;

    #[test]
    fn header_values_lose_the_spaces_and_tabs_around_them() {
        let check = |value: &[u8], want: &[u8]| {
            assert_eq!(
                trim_ows(value),
                want,
                "{:?}",
                value.escape_ascii().to_string()
            );
        };
        check(b"  csrftoken=abc", b"csrftoken=abc");
        check(b"a b\t", b"a b");
        check(b"\t \t", b"");
        check(b"", b"");
        check(b"x", b"x");
        check(b" x  y ", b"x  y");
    }
}
