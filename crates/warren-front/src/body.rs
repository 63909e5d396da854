//! The one response body type the front hands to hyper: from a worker, from a static file, or
//! a short message of its own. An enum rather than a boxed trait object: no allocation per
//! response on the hot path.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use warren_master::ResponseBody;

use crate::static_files::StaticBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub enum FrontBody {
    Master(ResponseBody),
    Static(StaticBody),
    Message(Option<Bytes>),
}

impl Body for FrontBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            FrontBody::Master(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            FrontBody::Static(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            FrontBody::Message(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FrontBody::Master(b) => b.is_end_stream(),
            FrontBody::Static(b) => b.is_end_stream(),
            FrontBody::Message(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FrontBody::Master(b) => b.size_hint(),
            FrontBody::Static(b) => b.size_hint(),
            FrontBody::Message(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
