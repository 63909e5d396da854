//! The response body handed to the front: whole when the worker's answer arrived in one read
//! (the common small response), otherwise a bounded channel fed by the task that owns the
//! worker, so a slow client slows the worker instead of growing a buffer.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// Why a response body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the app failed after sending headers")]
    AppAborted,
    #[error("worker of app {app} died mid-response: {reason}")]
    WorkerFailed { app: String, reason: String },
}

pub enum ResponseBody {
    /// Every chunk is here; the length is known.
    Whole { chunks: VecDeque<Bytes>, left: u64 },
    /// Chunks arrive as the worker sends them.
    Stream(mpsc::Receiver<Result<Bytes, BodyError>>),
}

impl ResponseBody {
    pub fn whole(chunks: VecDeque<Bytes>) -> Self {
        let left = chunks.iter().map(|c| c.len() as u64).sum();
        ResponseBody::Whole { chunks, left }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Whole { chunks, left } => Poll::Ready(chunks.pop_front().map(|c| {
                *left -= c.len() as u64;
                Ok(Frame::data(c))
            })),
            ResponseBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Whole { chunks, .. } if chunks.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Whole { left, .. } => SizeHint::with_exact(*left),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}
