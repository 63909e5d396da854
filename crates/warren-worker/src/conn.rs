//! The worker's ends of its two pipes to the master: blocking, buffered frame I/O.
//!
//! A worker serves one request at a time on one thread, so blocking reads and writes are both
//! the simplest and the fastest choice: no event loop sits between a frame and the app.
//! The request body is read lazily through [`Conn::body_peek`] / [`Conn::body_consume`], which
//! is what makes `wsgi.input` stream instead of buffering an upload.

use std::fs::File;
use std::io::{self, Read, Write};

use warren_protocol::{BODY_CHUNK, FRAME_HEADER, Kind, ProtocolError, parse_header, put_header};

const READ_BUF: usize = 64 * 1024;
/// Most bytes read ahead of the app while looking for a `CANCEL`.
const LOOKAHEAD: usize = 1024 * 1024;
/// Pending output past this size is written out before more is added.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Where the current request body stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    /// Bytes left in the current `BODY` frame (0: the next frame header comes next).
    Open { left_in_frame: usize },
    /// `BODY_END` seen.
    Done,
    /// `BODY_ABORT` seen, with the master's reason.
    Aborted(String),
}

pub struct Conn {
    /// Requests and their bodies from the master.
    rx: File,
    /// Responses to the master.
    tx: File,
    /// Read buffer: bytes `rpos..rend` are received and not yet consumed.
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    wbuf: Vec<u8>,
    body: Body,
}

fn protocol(e: ProtocolError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Conn {
    /// A connection over the read end of the request pipe and the write end of the response
    /// pipe, both blocking.
    pub fn new(rx: File, tx: File) -> Conn {
        Conn {
            rx,
            tx,
            rbuf: vec![0; READ_BUF],
            rpos: 0,
            rend: 0,
            wbuf: Vec::with_capacity(WRITE_HIGH_WATER),
            body: Body::Done,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rpos..self.rend]
    }

    /// Makes room for at least `want` more bytes after `rend`: moves what is buffered to the
    /// front, and grows the buffer only for a frame larger than it. The buffer is never
    /// shrunk or zero-filled again, so a read costs no memset.
    fn make_room(&mut self, want: usize) {
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        }
        if self.rbuf.len() - self.rend < want.max(4096) {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
            if self.rbuf.len() - self.rend < want {
                self.rbuf.resize(self.rend + want, 0);
            }
        }
    }

    /// Reads more bytes from the master, waiting for at least one; `Ok(false)` at end of
    /// stream.
    fn fill(&mut self, want: usize) -> io::Result<bool> {
        self.make_room(want);
        loop {
            match self.rx.read(&mut self.rbuf[self.rend..]) {
                Ok(n) => {
                    self.rend += n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next frame header; `Ok(None)` if the stream ends cleanly before it.
    fn next_header(&mut self) -> io::Result<Option<(Kind, usize)>> {
        while self.buffered().len() < FRAME_HEADER {
            if !self.fill(FRAME_HEADER)? {
                return if self.buffered().is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
        let h = *self
            .buffered()
            .first_chunk::<FRAME_HEADER>()
            .expect("checked");
        self.rpos += FRAME_HEADER;
        parse_header(h).map(Some).map_err(protocol)
    }

    /// Waits for the next request: returns its `REQUEST` payload, or `None` when the master
    /// closed the connection. The payload stays valid until the next read.
    pub fn next_request(&mut self) -> io::Result<Option<&[u8]>> {
        let (kind, len) = loop {
            match self.next_header()? {
                None => return Ok(None),
                // A cancel that arrived after its response had ended anyway.
                Some((Kind::Cancel, 0)) => continue,
                Some(h) => break h,
            }
        };
        if kind != Kind::Request {
            return Err(protocol(ProtocolError::Unexpected {
                got: kind,
                wanted: "REQUEST",
            }));
        }
        while self.buffered().len() < len {
            if !self.fill(len - self.buffered().len())? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.body = Body::Open { left_in_frame: 0 };
        let start = self.rpos;
        self.rpos += len;
        Ok(Some(&self.rbuf[start..start + len]))
    }

    /// The request body bytes available now without blocking past the next pipe read:
    /// empty at the end of the body. An aborted body is an error.
    pub fn body_peek(&mut self) -> io::Result<&[u8]> {
        loop {
            match &self.body {
                Body::Done => return Ok(&[]),
                Body::Aborted(why) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("request body aborted: {why}"),
                    ));
                }
                Body::Open { left_in_frame: 0 } => {
                    let Some((kind, len)) = self.next_header()? else {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    };
                    self.body = match kind {
                        Kind::Body => Body::Open { left_in_frame: len },
                        Kind::BodyEnd => Body::Done,
                        Kind::BodyAbort => {
                            while self.buffered().len() < len {
                                if !self.fill(len)? {
                                    return Err(io::ErrorKind::UnexpectedEof.into());
                                }
                            }
                            let why = String::from_utf8_lossy(&self.buffered()[..len]).into_owned();
                            self.rpos += len;
                            Body::Aborted(why)
                        }
                        got => {
                            return Err(protocol(ProtocolError::Unexpected {
                                got,
                                wanted: "BODY",
                            }));
                        }
                    };
                }
                Body::Open { left_in_frame } => {
                    let left = *left_in_frame;
                    if self.buffered().is_empty() && !self.fill(1)? {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let n = left.min(self.buffered().len());
                    return Ok(&self.rbuf[self.rpos..self.rpos + n]);
                }
            }
        }
    }

    /// Marks `n` bytes returned by [`Conn::body_peek`] as read.
    pub fn body_consume(&mut self, n: usize) {
        if let Body::Open { left_in_frame } = &mut self.body {
            debug_assert!(n <= *left_in_frame);
            *left_in_frame -= n;
            self.rpos += n;
        }
    }

    /// Reads and discards what the app left of the body, so the next frame is a `REQUEST`.
    pub fn drain_body(&mut self) -> io::Result<()> {
        loop {
            match self.body_peek() {
                Ok([]) => return Ok(()),
                Ok(b) => {
                    let n = b.len();
                    self.body_consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {
                    self.body = Body::Done;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the master has cancelled the current request (its client is gone). Looks at
    /// what has arrived without blocking and without consuming anything: body frames the app
    /// has not read yet stay readable. The look-ahead is bounded by [`LOOKAHEAD`], and the
    /// master sends `CANCEL` only after the body's end, so it is found once the app has read
    /// most of its body.
    pub fn cancel_requested(&mut self) -> bool {
        if self.buffered().len() < LOOKAHEAD {
            self.fill_nonblocking();
        }
        let mut rest = self.buffered();
        if let Body::Open { left_in_frame } = self.body {
            rest = rest.get(left_in_frame..).unwrap_or(&[]);
        }
        while let Some(h) = rest.first_chunk::<FRAME_HEADER>() {
            match parse_header(*h) {
                Ok((Kind::Cancel, _)) => return true,
                Ok((_, len)) => rest = rest.get(FRAME_HEADER + len..).unwrap_or(&[]),
                Err(_) => return false,
            }
        }
        false
    }

    /// Reads whatever has arrived, without waiting.
    fn fill_nonblocking(&mut self) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.rx.as_fd(), PollFlags::POLLIN)];
        let readable = matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
        if readable {
            self.make_room(READ_BUF);
            // Data is waiting: this read returns at once.
            if let Ok(n) = self.rx.read(&mut self.rbuf[self.rend..]) {
                self.rend += n;
            }
        }
    }

    /// Queues a frame for sending; a longer payload (a body block) as frames of at most
    /// `BODY_CHUNK` bytes, the most the master takes of a body frame: what it holds of a
    /// response between the app and a slow client is bounded in bytes, not in frames.
    pub fn put(&mut self, kind: Kind, payload: &[u8]) -> io::Result<()> {
        for piece in payload
            .chunks(BODY_CHUNK)
            .chain(payload.is_empty().then_some(&[][..]))
        {
            if self.wbuf.len() + piece.len() > WRITE_HIGH_WATER {
                put_header(&mut self.wbuf, kind, piece.len());
                self.flush()?;
                write_all(&mut self.tx, piece)?;
            } else {
                put_header(&mut self.wbuf, kind, piece.len());
                self.wbuf.extend_from_slice(piece);
            }
        }
        Ok(())
    }

    /// Gives direct access to the output buffer, for frames encoded in place.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.wbuf
    }

    /// Writes out everything queued.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            let r = write_all(&mut self.tx, &self.wbuf);
            self.wbuf.clear();
            r?;
        }
        Ok(())
    }
}

fn write_all(out: &mut File, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match out.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use warren_protocol::put_frame;

    /// The master's ends (requests in, responses out) and the worker's connection.
    fn pipes() -> ((File, File), Conn) {
        let (req_r, req_w) = nix::unistd::pipe().unwrap();
        let (resp_r, resp_w) = nix::unistd::pipe().unwrap();
        let master = (File::from(req_w), File::from(resp_r));
        (master, Conn::new(File::from(req_r), File::from(resp_w)))
    }

    /// A request sent while the worker waits wakes it; the master closing its end while the
    /// worker waits ends the loop cleanly.
    #[test]
    fn waits_for_a_request_and_for_the_close() {
        let ((master, _responses), mut conn) = pipes();
        let sender = std::thread::spawn(move || {
            let mut frame = Vec::new();
            put_frame(&mut frame, Kind::Request, b"head");
            std::thread::sleep(Duration::from_millis(50));
            (&master).write_all(&frame).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            drop(master);
        });
        assert_eq!(conn.next_request().unwrap(), Some(&b"head"[..]));
        assert_eq!(conn.next_request().unwrap(), None);
        sender.join().unwrap();
    }

    /// One of the reasons for two pipes: the master reading what the worker wrote frees room
    /// in the response pipe, which does not wake the worker waiting on the request pipe (a
    /// reader asleep on a Unix stream socket is woken by it, and sleeps again).
    #[test]
    fn the_master_reading_does_not_wake_a_waiting_worker() {
        let ((master, responses), mut conn) = pipes();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            conn.put(Kind::Ready, &[]).unwrap();
            conn.flush().unwrap();
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            conn.next_request().unwrap().map(<[u8]>::to_vec)
        });
        let tid = tid_rx.recv().unwrap();
        let status = format!("/proc/self/task/{tid}/status");
        let field = |name: &str| -> String {
            let text = std::fs::read_to_string(&status).unwrap();
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_owned();
            line[name.len()..].trim().to_owned()
        };
        // Asleep, waiting for a request.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !field("State:").starts_with('S') {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker never waits"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        let before = field("voluntary_ctxt_switches:");
        let mut ready = [0u8; FRAME_HEADER];
        (&responses).read_exact(&mut ready).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            field("voluntary_ctxt_switches:"),
            before,
            "the worker was woken by the master's read"
        );
        let mut frame = Vec::new();
        put_frame(&mut frame, Kind::Request, b"head");
        (&master).write_all(&frame).unwrap();
        assert_eq!(waiter.join().unwrap(), Some(b"head".to_vec()));
    }
}
