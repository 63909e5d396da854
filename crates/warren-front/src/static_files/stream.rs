//! The body of a static file response: bytes `offset..offset + len` of an open descriptor,
//! read in 64 KiB chunks on tokio's blocking pool (`pread`, so no seek and no shared
//! position), one chunk in flight at a time. The file is never read whole into memory, and a
//! slow client holds one chunk at most.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

/// The most read per chunk.
const CHUNK: u64 = 64 * 1024;

type Read = (File, io::Result<Vec<u8>>);

pub struct StaticBody {
    state: State,
    /// The next byte to read.
    offset: u64,
    /// Bytes still to send: the `Content-Length` promised, minus what was sent.
    remaining: u64,
}

enum State {
    /// Between chunks (or `None` for a body with nothing to read: HEAD, 304, 416).
    Idle(Option<File>),
    /// A read on the blocking pool; the file comes back with its bytes.
    Reading(JoinHandle<Read>),
}

impl StaticBody {
    /// Bytes `offset..offset + len` of `file`.
    pub fn new(file: File, offset: u64, len: u64) -> StaticBody {
        StaticBody {
            state: State::Idle(Some(file)),
            offset,
            remaining: len,
        }
    }

    /// No body (the headers describe the file, as for HEAD).
    pub fn empty() -> StaticBody {
        StaticBody {
            state: State::Idle(None),
            offset: 0,
            remaining: 0,
        }
    }
}

impl Body for StaticBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Idle(file) => {
                    if this.remaining == 0 {
                        // Done: the descriptor is closed now, not when hyper drops the body.
                        *file = None;
                        return Poll::Ready(None);
                    }
                    let Some(file) = file.take() else {
                        return Poll::Ready(None);
                    };
                    let (offset, want) = (this.offset, this.remaining.min(CHUNK) as usize);
                    this.state = State::Reading(tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0; want];
                        let got = file.read_at(&mut buf, offset).map(|n| {
                            buf.truncate(n);
                            buf
                        });
                        (file, got)
                    }));
                }
                State::Reading(task) => {
                    let read = match ready!(Pin::new(task).poll(cx)) {
                        Ok((file, Ok(buf))) if !buf.is_empty() => Ok((file, buf)),
                        // Shorter than when it was opened: the promised length cannot be
                        // sent, so the response is cut (hyper closes the connection).
                        Ok((_, Ok(_))) => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "static file shrank while being sent",
                        )),
                        Ok((_, Err(err))) => Err(err),
                        // The read panicked, or the runtime is shutting down.
                        Err(join) => Err(io::Error::other(join)),
                    };
                    return Poll::Ready(Some(match read {
                        Ok((file, buf)) => {
                            this.offset += buf.len() as u64;
                            this.remaining -= buf.len() as u64;
                            this.state = State::Idle(Some(file));
                            Ok(Frame::data(Bytes::from(buf)))
                        }
                        Err(err) => {
                            (this.state, this.remaining) = (State::Idle(None), 0);
                            Err(err)
                        }
                    }));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn streams_the_asked_bytes_in_chunks() {
        #[track_caller]
        fn check(chunks: Vec<usize>, body: Vec<u8>, expected: (&[usize], &[u8])) {
            assert_eq!((chunks.as_slice(), body.as_slice()), expected);
        }
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &data).unwrap();
        let run = |offset: u64, len: u64| {
            let file = file.try_clone().unwrap();
            async move {
                let mut body = StaticBody::new(file, offset, len);
                let (mut chunks, mut all) = (Vec::new(), Vec::new());
                while let Some(frame) = body.frame().await {
                    let data = frame.unwrap().into_data().unwrap();
                    chunks.push(data.len());
                    all.extend_from_slice(&data);
                }
                assert!(body.is_end_stream());
                (chunks, all)
            }
        };
        let (c, b) = run(0, 200_000).await;
        check(c, b, (&[65_536, 65_536, 65_536, 3_392], &data));
        let (c, b) = run(5, 10).await;
        check(c, b, (&[10], &data[5..15]));
        let (c, b) = run(199_990, 10).await;
        check(c, b, (&[10], &data[199_990..]));
        let (c, b) = run(0, 0).await;
        check(c, b, (&[], &[]));
    }

    #[tokio::test]
    async fn a_file_that_shrank_ends_in_an_error() {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"short").unwrap();
        let mut body = StaticBody::new(file, 0, 10);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"short");
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(body.frame().await.is_none());
    }
}
