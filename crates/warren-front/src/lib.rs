//! warren's front: accepts HTTP/1.1 connections, routes each request by `Host`, serves an
//! app's static directories itself, and hands every dynamic request to the master.
//!
//! **API Boundary:** [`run`] takes a bound listener, the routing table and the master, and a
//! shutdown future (as mini-redis's `run(listener, shutdown)` does). Everything that turns an
//! error into a status code lives in [`rescue`]; nothing else here invents status codes.
//!
//! Limits applied before any app sees a request: the request head's size (431, counted by
//! hyper's `max_header_size`), the time to send the head (hyper's header timer: the connection is
//! closed), and the body size (413, from `Content-Length` up front or counted while streaming).

#![forbid(unsafe_code)]

mod body;
mod request;
mod rescue;
mod routes;
mod static_files;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use warren_config::Config;
use warren_master::{AppState, Master, ReloadReport};
use warren_protocol::RequestHead;

pub use body::FrontBody;
pub use routes::Routes;

/// How long in-flight connections get to finish after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The routing table and the apps it routes to (index `i` of the routes is `apps[i]`),
/// swapped whole by a reload.
struct Table {
    routes: Routes,
    apps: Vec<Arc<AppState>>,
}

/// Everything a request needs, shared by all connections.
pub struct Front {
    /// Read (an `Arc` clone) once per request; replaced by [`Front::reload`].
    table: std::sync::RwLock<Arc<Table>>,
    master: Master,
    max_header_bytes: usize,
    header_timeout: Duration,
    /// Source of request ids (shown in logs and returned as `x-request-id`).
    next_id: AtomicU64,
    /// `server.access_log`: one INFO event per request, target `access`.
    access_log: bool,
}

impl Front {
    pub fn new(config: &Config, master: Master) -> Front {
        let table = Table {
            routes: Routes::new(config),
            apps: master.apps(),
        };
        Front {
            table: std::sync::RwLock::new(Arc::new(table)),
            master,
            max_header_bytes: config.server.max_header_bytes,
            header_timeout: config.server.header_timeout,
            next_id: AtomicU64::new(1),
            access_log: config.server.access_log,
        }
    }

    /// Applies a new config (SIGHUP, a touched reload file): apps added, removed, and
    /// redeployed (those named in `redeploy`, every app when `None`, and those whose config
    /// changed), each new generation up before requests move to it. `server` settings are
    /// not re-applied (they need a restart).
    pub async fn reload(&self, config: &Config, redeploy: Option<&[String]>) -> ReloadReport {
        let (apps, report) = self.master.reload(config, redeploy).await;
        let table = Arc::new(Table {
            routes: Routes::new(config),
            apps,
        });
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        report
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Gives back the master, for its shutdown.
    pub fn into_master(self) -> Master {
        self.master
    }
}

/// Per-connection facts the WSGI environ needs.
#[derive(Clone, Copy)]
struct ConnInfo {
    remote: SocketAddr,
    local: SocketAddr,
}

/// Serves `listener` until `shutdown` resolves, then lets open connections finish (bounded).
pub async fn run(listener: TcpListener, front: Arc<Front>, shutdown: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(front.header_timeout)
        // hyper counts the head's bytes as they arrived and answers 431 itself when there are
        // more than the limit: before there is a request, and so a request id. Its read
        // buffer must hold one byte more than the limit for that count to be exact.
        .max_header_size(front.max_header_bytes)
        .max_buf_size((front.max_header_bytes + 1).max(64 * 1024))
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let info = ConnInfo { remote, local };
        let front = front.clone();
        let service = service_fn(move |req| {
            let front = front.clone();
            async move { Ok::<_, Infallible>(handle(&front, info, req).await) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if e.is_parse_too_large() {
                    tracing::info!(%remote, "request head too large: answered 431");
                } else {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
            }
        });
    }
    // Closed now, so that new clients are refused at once instead of waiting in the backlog
    // of a server that is going away.
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
        }
    }
}

/// Serves `GET /metrics` (Prometheus text format) on the admin listener until `shutdown`.
pub async fn serve_admin(
    listener: TcpListener,
    front: Arc<Front>,
    shutdown: impl Future<Output = ()>,
) {
    let http = hyper::server::conn::http1::Builder::new();
    // Connections hold the front weakly: a scraper's kept-alive connection must not keep the
    // front (and so the master's shutdown) waiting.
    let front = Arc::downgrade(&front);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let front = front.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let front = front.clone();
            async move {
                let resp = if req.uri().path() != "/metrics" || req.method() != http::Method::GET {
                    rescue::plain(
                        http::StatusCode::NOT_FOUND,
                        "only GET /metrics is served here\n",
                    )
                } else if let Some(front) = front.upgrade() {
                    let mut r =
                        Response::new(FrontBody::Message(Some(front.master.metrics().into())));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    r
                } else {
                    rescue::plain(http::StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                };
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// What the access log line needs of the request, taken before the request is handed on. Its
/// parts are reference-counted (`Method`, `Uri` and `HeaderValue` share their bytes), so
/// taking it copies no string.
struct Access {
    arrived: tokio::time::Instant,
    method: http::Method,
    uri: http::Uri,
    host: Option<HeaderValue>,
}

impl Access {
    /// The access log line: one event, at the response head. `bytes` is the body's length as
    /// known then (a whole body, a static file, a `Content-Length`), absent for a streamed body
    /// of unknown length; `duration_us` runs from the request's arrival to its response head.
    fn log(self, id: u64, info: ConnInfo, app: Option<&AppState>, resp: &Response<FrontBody>) {
        let status = resp.status().as_u16();
        let bytes = if self.method == http::Method::HEAD || matches!(status, 204 | 304) {
            Some(0)
        } else {
            http_body::Body::size_hint(resp.body()).exact().or_else(|| {
                resp.headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
            })
        };
        let host = match self.uri.authority() {
            Some(a) => Some(a.as_str()),
            None => self.host.as_ref().and_then(|h| h.to_str().ok()),
        };
        tracing::info!(
            target: "access",
            app = app.map(AppState::name),
            host,
            method = %self.method,
            path = self.uri.path(),
            status,
            bytes,
            duration_us = self.arrived.elapsed().as_micros() as u64,
            request_id = %format_args!("{id:016x}"),
            remote = %info.remote,
            "request"
        );
    }
}

async fn handle(front: &Front, info: ConnInfo, req: Request<Incoming>) -> Response<FrontBody> {
    let id = front.next_id.fetch_add(1, Relaxed);
    // Off or filtered out, the access log costs this test: nothing is timed, copied or
    // formatted for it.
    let access = (front.access_log && tracing::enabled!(target: "access", tracing::Level::INFO))
        .then(|| Access {
            arrived: tokio::time::Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            host: req.headers().get(HOST).cloned(),
        });
    let mut app = None;
    let mut resp = route(front, info, id, req, access.is_some().then_some(&mut app)).await;
    if let Some(access) = access {
        access.log(id, info, app.as_deref(), &resp);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{id:016x}")) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Routes and serves one request; `app`, when given, is told which app it went to (for the
/// access log).
async fn route(
    front: &Front,
    info: ConnInfo,
    id: u64,
    req: Request<Incoming>,
    app_of: Option<&mut Option<Arc<AppState>>>,
) -> Response<FrontBody> {
    // Split once: the host borrows the head, which then goes on to whoever serves it.
    let (parts, body) = req.into_parts();
    let checked = request::method_and_upgrade(&parts.method, &parts.headers).and_then(|()| {
        let host = request::host(parts.version, &parts.uri, &parts.headers)?;
        Ok((host, request::framing(parts.version, &parts.headers)?))
    });
    let (host, framing) = match checked {
        Ok(c) => c,
        Err(refusal) => {
            tracing::debug!(
                request_id = %format_args!("{id:016x}"),
                remote = %info.remote,
                reason = refusal.reason.trim_end(),
                "request refused"
            );
            let mut resp = rescue::plain(refusal.status, refusal.reason);
            // What follows a head whose framing is in doubt cannot be read as a next request.
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    let table = front.table();
    let Some(index) = table.routes.app_for(&host.name) else {
        if let Some(app) = table.routes.refused_app(&host.name) {
            return rescue::plain(
                http::StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "app {app} is not running: its configuration was refused (warren's log says why)\n"
                ),
            );
        }
        tracing::debug!(request_id = %format_args!("{id:016x}"), host = %host.name, "no app for host");
        return rescue::plain(
            http::StatusCode::NOT_FOUND,
            "no app is served at this host\n",
        );
    };
    let app = &table.apps[index];
    if let Some(out) = app_of {
        *out = Some(app.clone());
    }
    let resp = match table.routes.static_dir(index, parts.uri.path()) {
        Some(dir) => static_files::serve(dir, &parts).await,
        None => dispatch(front, info, id, app, &host, framing, &parts, body).await,
    };
    app.stats.record_status(resp.status().as_u16());
    resp
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    front: &Front,
    info: ConnInfo,
    id: u64,
    app: &Arc<AppState>,
    host: &request::Host<'_>,
    framing: request::Framing,
    parts: &http::request::Parts,
    body: Incoming,
) -> Response<FrontBody> {
    let content_length = match framing {
        request::Framing::Length(n) => Some(n),
        request::Framing::Chunked => None,
    };
    let body = (!http_body::Body::is_end_stream(&body)).then_some(body);
    // `Host` is the one the request was routed by: an absolute-form target's authority.
    let mut headers: Vec<(&[u8], &[u8])> = Vec::with_capacity(parts.headers.len() + 1);
    let mut has_host = false;
    for (k, v) in &parts.headers {
        if k == HOST {
            has_host = true;
            headers.push((b"host", host.value.as_bytes()));
        } else {
            headers.push((k.as_str().as_bytes(), v.as_bytes()));
        }
    }
    if !has_host {
        headers.push((b"host", host.value.as_bytes()));
    }
    let remote_ip = info.remote.ip().to_string();
    let head = RequestHead {
        request_id: id,
        method: parts.method.as_str().as_bytes(),
        script_name: b"",
        path: parts.uri.path().as_bytes(),
        query: parts.uri.query().unwrap_or("").as_bytes(),
        protocol: match parts.version {
            Version::HTTP_10 => b"HTTP/1.0",
            _ => b"HTTP/1.1",
        },
        scheme: b"http",
        remote_addr: remote_ip.as_bytes(),
        remote_port: info.remote.port(),
        server_name: host.name.as_bytes(),
        server_port: info.local.port(),
        content_length,
        headers,
    };
    match front.master.dispatch(app, &head, body).await {
        Ok(mut resp) => {
            // The app's own reason phrase ("200 Hello"), when it is not the standard one.
            if let Some(reason) = resp.extensions_mut().remove::<warren_master::Reason>()
                && let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.0)
            {
                resp.extensions_mut().insert(phrase);
            }
            resp.map(FrontBody::Master)
        }
        Err(e) => rescue::dispatch_error(id, app, &e),
    }
}
