//! The master↔worker wire format: streams of frames over two pipes per worker (requests and
//! their bodies in one, responses in the other).
//!
//! ```text
//! frame  = kind:u8  len:u32le  payload[len]
//! string = len:u32le bytes[len]
//! ```
//!
//! One request is, master → worker: `REQUEST` (the head), then `BODY`* and exactly one of
//! `BODY_END` / `BODY_ABORT`. Worker → master: `RESP_HEAD`, `RESP_BODY`*, then `RESP_END`
//! (or `RESP_ABORT` once headers went out and the app failed). A `CANCEL` from the master may
//! follow the body's end when the client leaves. Both directions run at once, so
//! a worker can answer before it has read the body; after `RESP_END` it drains the rest of the
//! body up to `BODY_END` and is then idle again. A freshly forked worker first sends `READY`.
//!
//! Why binary and not HTTP or JSON: the worker never re-parses HTTP, bodies need no escaping,
//! and decoding a head is a handful of bounds-checked slice reads. Every length is checked
//! against the bytes present and against [`MAX_FRAME`], so hostile or truncated input gives an
//! error, never a panic or an unbounded allocation.

#![forbid(unsafe_code)]

/// Bytes in a frame header.
pub const FRAME_HEADER: usize = 5;
/// Largest payload a peer may announce. Bodies are chunked well below this.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Body chunks the master sends are at most this large.
pub const BODY_CHUNK: usize = 64 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// master → worker: a request head ([`RequestHead`]).
    Request = 0x01,
    /// master → worker: a piece of the request body.
    Body = 0x02,
    /// master → worker: the request body is complete.
    BodyEnd = 0x03,
    /// master → worker: the request body was cut short (client gone or too large); payload is a reason.
    BodyAbort = 0x04,
    /// master → worker: the client of the current request is gone; stop producing the
    /// response. Sent only after the body's end frame; ignored if the response already ended.
    Cancel = 0x05,
    /// worker → master: a freshly forked worker is ready for requests.
    Ready = 0x10,
    /// worker → master: status and headers ([`ResponseHead`]).
    RespHead = 0x11,
    /// worker → master: a piece of the response body.
    RespBody = 0x12,
    /// worker → master: the response is complete.
    RespEnd = 0x13,
    /// worker → master: the app failed after the headers were sent; payload is a reason.
    RespAbort = 0x14,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Request,
            0x02 => Kind::Body,
            0x03 => Kind::BodyEnd,
            0x04 => Kind::BodyAbort,
            0x05 => Kind::Cancel,
            0x10 => Kind::Ready,
            0x11 => Kind::RespHead,
            0x12 => Kind::RespBody,
            0x13 => Kind::RespEnd,
            0x14 => Kind::RespAbort,
            _ => return None,
        })
    }
}

/// Input that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{0} has {1} trailing bytes")]
    Trailing(&'static str, usize),
    #[error("unexpected {got:?} frame, wanted {wanted}")]
    Unexpected { got: Kind, wanted: &'static str },
}

/// Appends a frame header for a payload of `len` bytes.
pub fn put_header(out: &mut Vec<u8>, kind: Kind, len: usize) {
    debug_assert!(len <= MAX_FRAME);
    out.push(kind as u8);
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

/// Appends a whole frame.
pub fn put_frame(out: &mut Vec<u8>, kind: Kind, payload: &[u8]) {
    put_header(out, kind, payload.len());
    out.extend_from_slice(payload);
}

/// Reads a frame header: the kind and the payload length as announced, with no bound on it
/// (for a reader that has a tighter one per kind and skips what is over it).
pub fn header_fields(h: [u8; FRAME_HEADER]) -> Result<(Kind, usize), ProtocolError> {
    let kind = Kind::from_u8(h[0]).ok_or(ProtocolError::UnknownKind(h[0]))?;
    Ok((kind, u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize))
}

/// Reads a frame header: the kind and the payload length, checked against [`MAX_FRAME`].
pub fn parse_header(h: [u8; FRAME_HEADER]) -> Result<(Kind, usize), ProtocolError> {
    let (kind, len) = header_fields(h)?;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    Ok((kind, len))
}

/// The number a `Content-Length` value gives (RFC 9110 §8.6: `1*DIGIT`, nothing else: no
/// sign, no list), with the whitespace around it ignored. One rule for the front (requests),
/// the master (responses) and the worker (where a response's declared length ends it).
pub fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A complete frame found at the start of a buffer: kind, payload, bytes consumed.
pub type Split<'a> = (Kind, &'a [u8], usize);

/// A header name and value, as raw bytes.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Splits the first complete frame off `buf`: `Ok(None)` when more bytes are needed.
/// Returns the kind, the payload and the total bytes consumed.
pub fn split_frame(buf: &[u8]) -> Result<Option<Split<'_>>, ProtocolError> {
    let Some(h) = buf.first_chunk::<FRAME_HEADER>() else {
        return Ok(None);
    };
    let (kind, len) = parse_header(*h)?;
    let total = FRAME_HEADER + len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((kind, &buf[FRAME_HEADER..total], total)))
}

/// The request as the worker needs it to build a WSGI `environ`. Strings are the raw bytes
/// from the wire (HTTP is latin-1 in WSGI terms), so nothing is decoded twice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead<'a> {
    /// Id for log lines; the front assigns it and returns it as `x-request-id`.
    pub request_id: u64,
    pub method: &'a [u8],
    /// Mount point of the app (`SCRIPT_NAME`), empty at the root.
    pub script_name: &'a [u8],
    /// Request path, still percent-encoded; the worker decodes it into `PATH_INFO`.
    pub path: &'a [u8],
    pub query: &'a [u8],
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub protocol: &'a [u8],
    pub scheme: &'a [u8],
    pub remote_addr: &'a [u8],
    pub remote_port: u16,
    pub server_name: &'a [u8],
    pub server_port: u16,
    /// `Some(n)` for a known length, `None` for a chunked body.
    pub content_length: Option<u64>,
    /// Header names lower-case as the front normalised them, values raw.
    pub headers: Vec<Pair<'a>>,
}

/// Status and headers of a response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseHead<'a> {
    pub status: u16,
    pub reason: &'a [u8],
    pub headers: Vec<Pair<'a>>,
}

const NO_LENGTH: u64 = u64::MAX;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Bounds-checked reader over a payload.
struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(ProtocolError::Truncated(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, ProtocolError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn pairs(&mut self) -> Result<Vec<Pair<'a>>, ProtocolError> {
        let n = self.u32()? as usize;
        // Each pair takes at least 8 bytes, so a lying count cannot make us allocate more
        // than the payload could hold.
        if n > self.buf.len() / 8 {
            return Err(ProtocolError::Truncated(self.what));
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push((self.bytes()?, self.bytes()?));
        }
        Ok(v)
    }
    fn finish(self) -> Result<(), ProtocolError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(ProtocolError::Trailing(self.what, n)),
        }
    }
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[Pair<'_>]) {
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        put_bytes(out, k);
        put_bytes(out, v);
    }
}

impl<'a> RequestHead<'a> {
    /// Appends this head as a complete `REQUEST` frame.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let start = out.len();
        put_header(out, Kind::Request, 0);
        out.extend_from_slice(&self.request_id.to_le_bytes());
        for b in [
            self.method,
            self.script_name,
            self.path,
            self.query,
            self.protocol,
            self.scheme,
            self.remote_addr,
        ] {
            put_bytes(out, b);
        }
        out.extend_from_slice(&self.remote_port.to_le_bytes());
        put_bytes(out, self.server_name);
        out.extend_from_slice(&self.server_port.to_le_bytes());
        out.extend_from_slice(&self.content_length.unwrap_or(NO_LENGTH).to_le_bytes());
        put_pairs(out, &self.headers);
        let len = (out.len() - start - FRAME_HEADER) as u32;
        out[start + 1..start + FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
    }

    /// Decodes a `REQUEST` payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut c = Cursor {
            buf: payload,
            what: "request head",
        };
        let request_id = c.u64()?;
        let method = c.bytes()?;
        let script_name = c.bytes()?;
        let path = c.bytes()?;
        let query = c.bytes()?;
        let protocol = c.bytes()?;
        let scheme = c.bytes()?;
        let remote_addr = c.bytes()?;
        let remote_port = c.u16()?;
        let server_name = c.bytes()?;
        let server_port = c.u16()?;
        let content_length = match c.u64()? {
            NO_LENGTH => None,
            n => Some(n),
        };
        let headers = c.pairs()?;
        c.finish()?;
        Ok(RequestHead {
            request_id,
            method,
            script_name,
            path,
            query,
            protocol,
            scheme,
            remote_addr,
            remote_port,
            server_name,
            server_port,
            content_length,
            headers,
        })
    }
}

impl<'a> ResponseHead<'a> {
    /// Appends this head as a complete `RESP_HEAD` frame.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let start = out.len();
        put_header(out, Kind::RespHead, 0);
        out.extend_from_slice(&self.status.to_le_bytes());
        put_bytes(out, self.reason);
        put_pairs(out, &self.headers);
        let len = (out.len() - start - FRAME_HEADER) as u32;
        out[start + 1..start + FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
    }

    /// Decodes a `RESP_HEAD` payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut c = Cursor {
            buf: payload,
            what: "response head",
        };
        let status = c.u16()?;
        let reason = c.bytes()?;
        let headers = c.pairs()?;
        c.finish()?;
        Ok(ResponseHead {
            status,
            reason,
            headers,
        })
    }
}

pub mod control;

#[cfg(test)]
mod tests;
