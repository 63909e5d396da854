//! PEP 3333 on the worker side: `environ` built in Rust, `start_response`, `write()`,
//! `wsgi.input` reading from the request pipe, the response iterable streamed frame by frame.
//!
//! The request loop is [`Worker::serve`]. Per request it decodes the `REQUEST` frame, builds
//! `environ` (a copy of a prepared base dict plus the request's keys), calls the app, sends
//! what it returns, always calls `close()` on the result, and finally drains whatever the app
//! left unread of the body so the connection is back at a frame boundary.
//!
//! Headers go out with the first non-empty body chunk or at the end of the iterable (PEP 3333
//! "Buffering and Streaming"); a list or tuple result is written in one go, so the common
//! small response costs the master a single read.

use std::cell::RefCell;
use std::ffi::CStr;
use std::io;
use std::rc::Rc;

use pyo3::exceptions::{
    PyAssertionError, PyConnectionAbortedError, PyIOError, PyTypeError, PyValueError,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use warren_protocol::{Kind, RequestHead, ResponseHead};

use crate::conn::Conn;
use crate::python::{latin1, to_latin1};

/// Python-side helpers that are simpler written in Python than bound from Rust.
const PRELUDE: &CStr = c"
class FileWrapper:
    '''wsgi.file_wrapper: iterates a file in large blocks; close() closes the file.'''
    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = max(blksize, 65536)
        if hasattr(filelike, 'close'):
            self.close = filelike.close
    def __iter__(self):
        read = self.filelike.read
        n = self.blksize
        while True:
            data = read(n)
            if not data:
                return
            yield data
";

/// The status line and headers a `start_response` call set, and whether they went out.
#[derive(Default)]
struct Resp {
    status: Option<(u16, Vec<u8>)>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    sent: bool,
    /// `RESP_END` went out with the last of the `Content-Length` bytes (see `send_result`).
    ended: bool,
    /// The master cancelled the request (its client left) while the app was writing.
    cancelled: bool,
    /// The request is a HEAD: the body the app returns is not the one its length describes.
    head_request: bool,
}

type Shared<T> = Rc<RefCell<T>>;

impl Resp {
    /// Queues the head frame if it has not gone out yet.
    fn send_head(&mut self, conn: &mut Conn) -> PyResult<()> {
        if self.sent {
            return Ok(());
        }
        let Some((status, reason)) = &self.status else {
            return Err(PyAssertionError::new_err(
                "the app returned a body before calling start_response()",
            ));
        };
        let head = ResponseHead {
            status: *status,
            reason,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect(),
        };
        head.encode_frame(conn.out());
        self.sent = true;
        Ok(())
    }

    /// Whether the app declared a `Content-Length` at all.
    fn declares_length(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(b"content-length"))
    }

    /// The `Content-Length` the app declared, if any (and valid).
    fn content_length(&self) -> Option<u64> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(b"content-length"))
            .and_then(|(_, v)| warren_protocol::content_length(v))
    }
}

fn io_err(e: io::Error) -> PyErr {
    PyIOError::new_err(e.to_string())
}

/// `start_response(status, headers, exc_info=None)`.
#[pyclass(unsendable)]
struct StartResponse {
    resp: Shared<Resp>,
    conn: Shared<Conn>,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Writer> {
        let mut resp = self.resp.borrow_mut();
        let has_exc = exc_info.is_some_and(|e| !e.is_none());
        if has_exc && resp.sent {
            // PEP 3333: too late to change the status; re-raise the app's exception.
            let exc = exc_info.expect("checked");
            return Err(PyErr::from_value(exc.get_item(1)?));
        }
        if !has_exc && resp.status.is_some() {
            return Err(PyAssertionError::new_err(
                "start_response() called a second time without exc_info",
            ));
        }
        let status = parse_status(status)?;
        let headers = parse_headers(headers)?;
        resp.status = Some(status);
        resp.headers = headers;
        Ok(Writer {
            resp: self.resp.clone(),
            conn: self.conn.clone(),
        })
    }
}

fn parse_status(status: &Bound<'_, PyAny>) -> PyResult<(u16, Vec<u8>)> {
    let s = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("status must be a str such as '200 OK'"))?;
    let s = s.to_str()?;
    let bytes = to_latin1(s, "status")?;
    let code = bytes
        .get(..3)
        .filter(|c| c.iter().all(u8::is_ascii_digit))
        .and_then(|c| std::str::from_utf8(c).ok()?.parse::<u16>().ok())
        .filter(|c| (100..=999).contains(c));
    let reason = match bytes.get(3) {
        None => Some(&[][..]),
        Some(b' ') => Some(&bytes[4..]),
        Some(_) => None,
    };
    match (code, reason) {
        (Some(code), Some(reason)) if !reason.iter().any(|&b| b == b'\r' || b == b'\n') => {
            Ok((code, reason.to_vec()))
        }
        _ => Err(PyValueError::new_err(format!(
            "status {s:?} is not a three-digit code followed by a reason, such as '200 OK'"
        ))),
    }
}

fn parse_headers(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for item in headers.try_iter()? {
        let item = item?;
        let pair = item
            .cast::<PyTuple>()
            .map_err(|_| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "each header must be a (name, value) tuple",
            ));
        }
        let name = pair.get_item(0)?;
        let value = pair.get_item(1)?;
        let (Ok(name), Ok(value)) = (name.cast::<PyString>(), value.cast::<PyString>()) else {
            return Err(PyTypeError::new_err("header names and values must be str"));
        };
        let name = to_latin1(name.to_str()?, "header name")?;
        let value = to_latin1(value.to_str()?, "header value")?;
        let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
        if name.is_empty() || !name.iter().all(token) {
            return Err(PyValueError::new_err(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(PyValueError::new_err(format!(
                "header {:?} has a control character in its value",
                String::from_utf8_lossy(&name)
            )));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// The `write()` callable that `start_response` returns (PEP 3333's legacy imperative API).
#[pyclass(unsendable)]
struct Writer {
    resp: Shared<Resp>,
    conn: Shared<Conn>,
}

#[pymethods]
impl Writer {
    fn __call__(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = as_bytes(data)?;
        let mut conn = self.conn.borrow_mut();
        let mut resp = self.resp.borrow_mut();
        resp.send_head(&mut conn)?;
        if !data.is_empty() {
            conn.put(Kind::RespBody, data).map_err(io_err)?;
        }
        conn.flush().map_err(io_err)?;
        if conn.cancel_requested() {
            // As a closed socket would in any server: the app learns its client is gone.
            resp.cancelled = true;
            return Err(PyConnectionAbortedError::new_err("the client disconnected"));
        }
        Ok(())
    }
}

fn as_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    match obj.cast::<PyBytes>() {
        Ok(b) => Ok(b.as_bytes()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "the app produced a {} where WSGI wants bytes",
            obj.get_type().name()?
        ))),
    }
}

/// `wsgi.input`: reads pull body frames from the master as the app asks for them.
#[pyclass(unsendable)]
struct Input {
    conn: Shared<Conn>,
}

impl Input {
    /// Appends up to `limit` body bytes (all with `None`) to `out`, stopping after a newline
    /// if `line` is set.
    fn read_into(&self, out: &mut Vec<u8>, limit: Option<usize>, line: bool) -> PyResult<()> {
        let mut conn = self.conn.borrow_mut();
        loop {
            let want = match limit {
                Some(l) if out.len() >= l => return Ok(()),
                Some(l) => l - out.len(),
                None => usize::MAX,
            };
            let avail = conn.body_peek().map_err(io_err)?;
            if avail.is_empty() {
                return Ok(());
            }
            let mut n = avail.len().min(want);
            let mut done = false;
            if line && let Some(i) = avail[..n].iter().position(|&b| b == b'\n') {
                n = i + 1;
                done = true;
            }
            out.extend_from_slice(&avail[..n]);
            conn.body_consume(n);
            if done {
                return Ok(());
            }
        }
    }
}

fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::new();
        self.read_into(&mut out, size_arg(size), false)?;
        Ok(PyBytes::new(py, &out))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::new();
        self.read_into(&mut out, size_arg(size), true)?;
        Ok(PyBytes::new(py, &out))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let mut line = Vec::new();
            self.read_into(&mut line, None, true)?;
            if line.is_empty() {
                return Ok(lines);
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                return Ok(lines);
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}

/// Decodes `%XX` escapes (the `percent-encoding` crate); malformed escapes are kept as they
/// are (as gunicorn and uWSGI do).
fn percent_decode(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    percent_encoding::percent_decode(path).into()
}

/// `HTTP_` + the header name upper-cased with `-` as `_`.
fn cgi_name(name: &[u8]) -> String {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    key.extend(name.iter().map(|&b| match b {
        b'-' => '_',
        b => b.to_ascii_uppercase() as char,
    }));
    key
}

/// What every worker of an app shares, prepared once in the zygote before any fork: the app
/// callable and the constant part of `environ`.
pub struct Prepared<'py> {
    name: String,
    app: Bound<'py, PyAny>,
    base_environ: Bound<'py, PyDict>,
}

impl<'py> Prepared<'py> {
    pub fn new(py: Python<'py>, name: String, app: Bound<'py, PyAny>) -> PyResult<Self> {
        let prelude = pyo3::types::PyModule::from_code(py, PRELUDE, c"<warren>", c"_warren")?;
        let base = PyDict::new(py);
        base.set_item("wsgi.version", (1, 0))?;
        base.set_item("wsgi.multithread", false)?;
        base.set_item("wsgi.multiprocess", true)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item("wsgi.errors", py.import("sys")?.getattr("stderr")?)?;
        base.set_item("wsgi.file_wrapper", prelude.getattr("FileWrapper")?)?;
        base.set_item("SCRIPT_NAME", "")?;
        Ok(Prepared {
            name,
            app,
            base_environ: base,
        })
    }
}

/// One app's request loop in a forked worker.
pub struct Worker<'a, 'py> {
    py: Python<'py>,
    name: &'a str,
    app: &'a Bound<'py, PyAny>,
    conn: Shared<Conn>,
    base_environ: &'a Bound<'py, PyDict>,
}

impl<'a, 'py> Worker<'a, 'py> {
    pub fn new(prepared: &'a Prepared<'py>, conn: Conn) -> Self {
        Worker {
            py: prepared.app.py(),
            name: &prepared.name,
            app: &prepared.app,
            conn: Rc::new(RefCell::new(conn)),
            base_environ: &prepared.base_environ,
        }
    }

    /// Serves requests until the master closes the request pipe.
    pub fn serve(&self) -> io::Result<()> {
        {
            let mut conn = self.conn.borrow_mut();
            conn.put(Kind::Ready, b"")?;
            conn.flush()?;
        }
        while self.serve_one()? {}
        Ok(())
    }

    /// Builds `environ` for the next request (with its id, and whether it is a HEAD); `None`
    /// when the master closed the connection.
    fn next_environ(&self) -> io::Result<Option<(u64, Bound<'py, PyDict>, bool)>> {
        let mut conn = self.conn.borrow_mut();
        let Some(payload) = conn.next_request()? else {
            return Ok(None);
        };
        let head = RequestHead::decode(payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let env = self
            .environ(&head)
            .map_err(|e| io::Error::other(format!("building environ: {e}")))?;
        Ok(Some((head.request_id, env, head.method == b"HEAD")))
    }

    fn environ(&self, head: &RequestHead<'_>) -> PyResult<Bound<'py, PyDict>> {
        let py = self.py;
        let env = self.base_environ.copy()?;
        env.set_item(intern!(py, "REQUEST_METHOD"), latin1(py, head.method)?)?;
        if !head.script_name.is_empty() {
            env.set_item(intern!(py, "SCRIPT_NAME"), latin1(py, head.script_name)?)?;
        }
        env.set_item(
            intern!(py, "PATH_INFO"),
            latin1(py, &percent_decode(head.path))?,
        )?;
        env.set_item(intern!(py, "QUERY_STRING"), latin1(py, head.query)?)?;
        env.set_item(intern!(py, "SERVER_PROTOCOL"), latin1(py, head.protocol)?)?;
        env.set_item(intern!(py, "SERVER_NAME"), latin1(py, head.server_name)?)?;
        env.set_item(intern!(py, "SERVER_PORT"), head.server_port.to_string())?;
        env.set_item(intern!(py, "REMOTE_ADDR"), latin1(py, head.remote_addr)?)?;
        env.set_item(intern!(py, "REMOTE_PORT"), head.remote_port.to_string())?;
        env.set_item(intern!(py, "wsgi.url_scheme"), latin1(py, head.scheme)?)?;
        env.set_item(
            intern!(py, "wsgi.input"),
            Input {
                conn: self.conn.clone(),
            },
        )?;
        if let Some(n) = head.content_length {
            env.set_item(intern!(py, "CONTENT_LENGTH"), n.to_string())?;
        }
        for (name, value) in &head.headers {
            match *name {
                b"content-type" => {
                    env.set_item(intern!(py, "CONTENT_TYPE"), latin1(py, value)?)?;
                    continue;
                }
                b"content-length" => continue,
                // `X_Forwarded` and `X-Forwarded` would map to the same key: one of them could
                // be spoofed past a proxy that checks only the other. Drop the underscore form,
                // as nginx and gunicorn do.
                n if n.contains(&b'_') => continue,
                _ => {}
            }
            let key = cgi_name(name);
            let value = latin1(py, value)?;
            match env.get_item(&key)? {
                Some(prev) => {
                    let sep = if *name == b"cookie" { "; " } else { "," };
                    let joined = format!(
                        "{}{sep}{}",
                        prev.cast::<PyString>()?.to_str()?,
                        value.to_str()?
                    );
                    env.set_item(key, joined)?;
                }
                None => env.set_item(key, value)?,
            }
        }
        Ok(env)
    }

    /// Serves one request; `Ok(false)` when there are no more.
    fn serve_one(&self) -> io::Result<bool> {
        let Some((id, env, head_request)) = self.next_environ()? else {
            return Ok(false);
        };
        let resp = Rc::new(RefCell::new(Resp {
            head_request,
            ..Resp::default()
        }));
        let start_response = StartResponse {
            resp: resp.clone(),
            conn: self.conn.clone(),
        };
        let outcome = self.app.call1((env, start_response)).and_then(|result| {
            let sent = self.send_result(&result, &resp);
            // A failing close() is the app's bug to hear about, but the response it produced
            // is complete: log it and keep the response.
            if let Err(e) = close_result(&result) {
                eprintln!(
                    "warren-worker: app {}: request {id:016x}: close() of the response raised:",
                    self.name
                );
                e.display(self.py);
            }
            sent
        });
        let mut conn = self.conn.borrow_mut();
        let ended = resp.borrow().ended;
        match outcome {
            // The response went out whole; an error while finishing the iterator is the
            // app's to hear about, not the client's.
            Err(e) if ended => {
                eprintln!(
                    "warren-worker: app {}: request {id:016x}: the iterator raised after the whole body was sent:",
                    self.name
                );
                e.display(self.py);
            }
            Ok(()) if ended => {}
            Ok(()) => {
                let sent_head = resp.borrow_mut().send_head(&mut conn);
                if let Err(e) = sent_head {
                    drop(conn);
                    self.fail(id, e, &resp)?;
                    conn = self.conn.borrow_mut();
                } else {
                    conn.put(Kind::RespEnd, b"")?;
                }
            }
            Err(e) => {
                drop(conn);
                self.fail(id, e, &resp)?;
                conn = self.conn.borrow_mut();
            }
        }
        conn.flush()?;
        conn.drain_body()?;
        Ok(true)
    }

    /// Logs the app's exception and ends the response: a 500 if nothing went out yet, else an
    /// abort that makes the front cut the client's connection (a truncated body must not
    /// look complete).
    fn fail(&self, id: u64, err: PyErr, resp: &Shared<Resp>) -> io::Result<()> {
        let py = self.py;
        let mut resp = resp.borrow_mut();
        if resp.cancelled {
            // Not the app's bug: its client left. One line, no traceback.
            eprintln!(
                "warren-worker: app {}: request {id:016x}: client left during write()",
                self.name
            );
        } else {
            eprintln!(
                "warren-worker: app {}: request {id:016x}: unhandled exception:",
                self.name
            );
            crate::guards::annotate(py, &err);
            err.display(py);
        }
        let mut conn = self.conn.borrow_mut();
        if resp.sent {
            conn.put(Kind::RespAbort, b"the app raised after sending headers")?;
        } else {
            let body = b"Internal Server Error\n";
            let len = body.len().to_string();
            ResponseHead {
                status: 500,
                reason: b"Internal Server Error",
                headers: vec![
                    (b"Content-Type", b"text/plain; charset=utf-8"),
                    (b"Content-Length", len.as_bytes()),
                ],
            }
            .encode_frame(conn.out());
            resp.sent = true;
            conn.put(Kind::RespBody, body)?;
            conn.put(Kind::RespEnd, b"")?;
        }
        Ok(())
    }

    /// Sends the app's iterable. A list or tuple is checked whole first, then written at once.
    fn send_result(&self, result: &Bound<'py, PyAny>, resp: &Shared<Resp>) -> PyResult<()> {
        if let Ok(list) = result.cast::<PyList>() {
            return self.send_all(list.iter().collect(), resp);
        }
        if let Ok(tuple) = result.cast::<PyTuple>() {
            return self.send_all(tuple.as_slice().to_vec(), resp);
        }
        // Each block goes out as soon as the app yields it (PEP 3333). When the blocks reach
        // the declared Content-Length, the response is complete: `RESP_END` goes in the same
        // write, which saves the front a wake-up per request (a framework's response is an
        // iterator, not a list). The iterator is still run to its end and closed; if it
        // yields past the declared length it is stopped there, as no client reads further.
        let mut left = None;
        for item in result.try_iter()? {
            let item = item?;
            let data = as_bytes(&item)?;
            if data.is_empty() {
                continue;
            }
            let mut resp = resp.borrow_mut();
            if resp.ended {
                // Nobody reads past the declared length, and the master has the worker back:
                // stop iterating (close() follows) rather than run an endless body.
                eprintln!(
                    "warren-worker: app {}: the response went past its Content-Length; the \
                     rest is dropped",
                    self.name
                );
                break;
            }
            let mut conn = self.conn.borrow_mut();
            if !resp.sent {
                resp.send_head(&mut conn)?;
                left = resp.content_length();
            }
            conn.put(Kind::RespBody, data).map_err(io_err)?;
            if let Some(n) = left.as_mut() {
                *n = n.saturating_sub(data.len() as u64);
                if *n == 0 {
                    conn.put(Kind::RespEnd, b"").map_err(io_err)?;
                    resp.ended = true;
                }
            }
            // Once ended, what arrives is the next request's, not a cancel of this one.
            let ended = resp.ended;
            drop(resp);
            conn.flush().map_err(io_err)?;
            if !ended && conn.cancel_requested() {
                // Nobody will read the rest: stop iterating (close() follows as always).
                break;
            }
        }
        Ok(())
    }

    /// Sends a list or tuple: its length is known before the head goes out, so a
    /// `Content-Length` the app got wrong is corrected here, for a body of any size (the
    /// master can only correct one it holds whole).
    fn send_all(&self, items: Vec<Bound<'py, PyAny>>, resp: &Shared<Resp>) -> PyResult<()> {
        let mut total = 0usize;
        for item in &items {
            total += as_bytes(item)?.len();
        }
        let mut conn = self.conn.borrow_mut();
        let mut r = resp.borrow_mut();
        if !r.sent
            && !r.head_request
            && r.declares_length()
            && r.content_length() != Some(total as u64)
        {
            eprintln!(
                "warren-worker: app {}: the response's Content-Length does not match its body of \
                 {total} bytes; sending the body's length",
                self.name
            );
            r.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case(b"content-length"));
            r.headers
                .push((b"Content-Length".to_vec(), total.to_string().into_bytes()));
        }
        r.send_head(&mut conn)?;
        drop(r);
        for item in &items {
            let data = as_bytes(item)?;
            if !data.is_empty() {
                conn.put(Kind::RespBody, data).map_err(io_err)?;
            }
        }
        Ok(())
    }
}

/// Calls `result.close()` if it has one (PEP 3333: in every case, also after an error).
fn close_result(result: &Bound<'_, PyAny>) -> PyResult<()> {
    if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    match result.getattr(intern!(result.py(), "close")) {
        Ok(close) => close.call0().map(|_| ()),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        let check = |input: &[u8], want: &[u8]| assert_eq!(&*percent_decode(input), want);
        check(b"/plain", b"/plain");
        check(b"/a%20b", b"/a b");
        check(b"/%e9t%C3%A9", b"/\xe9t\xc3\xa9");
        check(b"/bad%zz%2", b"/bad%zz%2");
        check(b"/%2F", b"//");
    }

    #[test]
    fn cgi_names() {
        assert_eq!(cgi_name(b"x-forwarded-for"), "HTTP_X_FORWARDED_FOR");
        assert_eq!(cgi_name(b"accept"), "HTTP_ACCEPT");
    }
}
