//! The master's end of a worker's socket, registered with the reactor for reading only.
//!
//! A Unix stream socket wakes everyone waiting on it with "writable" each time its peer frees
//! receive space, whether or not the writer was short of room: here, each time a worker reads
//! its request. A socket registered for both directions (as `tokio::net::UnixStream` is) would
//! so wake the front's thread once more per request, for nothing; on a machine of two or
//! three busy tasks per core that wake-up is a cross-CPU interrupt and a context switch.
//! This socket's registration asks for readability only. A write that finds the socket full
//! (a large request body) registers a duplicate of the descriptor for writability for as long
//! as it waits.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How long a write that found the socket full and could not get a descriptor to wait with
/// sleeps before it tries again.
const NO_DESCRIPTOR_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

/// A non-blocking Unix stream socket to a worker.
#[derive(Debug)]
pub(crate) struct WorkerSocket {
    fd: AsyncFd<UnixStream>,
}

impl WorkerSocket {
    /// Takes `sock` (made non-blocking here) into the current runtime's reactor.
    pub(crate) fn new(sock: UnixStream) -> io::Result<WorkerSocket> {
        sock.set_nonblocking(true)?;
        Ok(WorkerSocket {
            fd: register(sock, Interest::READABLE)?,
        })
    }

    /// Appends what has arrived, at most `max` bytes, to `buf`, waiting for at least one
    /// byte; 0 at end of stream. Cancel-safe: `buf` is only grown between the wait and the
    /// read, never across an await.
    pub(crate) async fn read_into(&self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            let start = buf.len();
            buf.resize(start + max, 0);
            let r = ready.try_io(|s| s.get_ref().read(&mut buf[start..]));
            buf.truncate(start + r.as_ref().map_or(0, |r| *r.as_ref().unwrap_or(&0)));
            match r {
                Ok(Ok(n)) => {
                    // A short read (almost always) emptied the socket: the next read waits
                    // for new data instead of finding out with a failed call. Readiness
                    // cleared too early (a read cut short by ancillary data or MSG_OOB, which
                    // only a broken worker sends) stalls that worker's own request, until its
                    // next write, its hang-up or the request's time limit.
                    if n > 0 && n < max {
                        ready.clear_ready();
                    }
                    return Ok(n);
                }
                Ok(Err(e)) => return Err(e),
                // Nothing to read: `try_io` cleared the readiness, the next wait sleeps.
                Err(_would_block) => continue,
            }
        }
    }

    /// Fills `buf` whole.
    pub(crate) async fn read_exact(&self, buf: &mut [u8]) -> io::Result<()> {
        let mut got = BytesMut::with_capacity(buf.len());
        while got.len() < buf.len() {
            let left = buf.len() - got.len();
            if self.read_into(&mut got, left).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        buf.copy_from_slice(&got);
        Ok(())
    }

    /// Writes some of `data`, waiting for room if there is none.
    pub(crate) async fn write(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            // Non-blocking: neither this nor the read above can be interrupted by a signal.
            match self.fd.get_ref().write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                r => return r,
            }
        }
    }

    /// Writes all of `data`.
    pub(crate) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.write(data).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => data = &data[n..],
            }
        }
        Ok(())
    }

    /// Waits until the socket has room (or is closed: the next write then fails). The
    /// duplicate's registration reports the current state when it is made, so room freed since
    /// the failed write is not missed. Without a descriptor to spare (the master at its open
    /// file limit), it looks again a little later instead of failing the worker.
    async fn writable(&self) -> io::Result<()> {
        match self
            .fd
            .get_ref()
            .try_clone()
            .and_then(|dup| register(dup, Interest::WRITABLE))
        {
            Ok(dup) => drop(dup.writable().await?),
            Err(_) => tokio::time::sleep(NO_DESCRIPTOR_RETRY).await,
        }
        Ok(())
    }
}

/// Registers `sock` with the reactor for `interest`.
///
/// tokio's safe constructor is deprecated because an arbitrary `AsRawFd` might hand out a
/// different or closed descriptor later; a std `UnixStream` owns its descriptor and always
/// returns that one, which is exactly the condition the unsafe `register_with_interest` asks
/// for (and this crate has no unsafe code).
#[allow(deprecated)]
fn register(sock: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    AsyncFd::with_interest(sock, interest)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    /// Every test's waits are bounded: a lost wake-up fails instead of hanging.
    const LIMIT: Duration = Duration::from_secs(10);

    /// The point of this type: the reactor's epoll set holds the socket for input only, so the
    /// peer reading (and freeing room) wakes nobody.
    #[tokio::test]
    async fn the_registration_asks_for_input_only() {
        const EPOLLIN: u32 = 0x1;
        const EPOLLOUT: u32 = 0x4;
        let (_a, b) = UnixStream::pair().unwrap();
        let b = WorkerSocket::new(b).unwrap();
        let fd = b.fd.as_raw_fd();
        let mut masks = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
            let path = entry.unwrap().path();
            let is_epoll = std::fs::read_link(&path)
                .is_ok_and(|t| t.to_string_lossy() == "anon_inode:[eventpoll]");
            let info = path.to_string_lossy().replace("/fd/", "/fdinfo/");
            let Ok(info) = std::fs::read_to_string(info) else {
                continue;
            };
            if !is_epoll {
                continue;
            }
            // "tfd:        7 events:     2019 data: ..."
            for line in info.lines().filter(|l| l.starts_with("tfd:")) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f[1] == fd.to_string() {
                    masks.push(u32::from_str_radix(f[3], 16).unwrap());
                }
            }
        }
        assert!(
            !masks.is_empty(),
            "the socket is in the reactor's epoll set"
        );
        for m in masks {
            assert!(m & EPOLLIN != 0, "registered for input: {m:#x}");
            assert!(m & EPOLLOUT == 0, "not registered for output: {m:#x}");
        }
    }

    /// A write larger than the socket's buffer waits for the peer to read, then completes.
    #[tokio::test]
    async fn a_write_past_the_buffer_waits_for_room() {
        let (a, b) = UnixStream::pair().unwrap();
        let a = WorkerSocket::new(a).unwrap();
        let b = WorkerSocket::new(b).unwrap();
        let data: Vec<u8> = (0..4 * 1024 * 1024).map(|i| i as u8).collect();
        let writer = async {
            a.write_all(&data).await.unwrap();
            drop(a);
        };
        let reader = async {
            let mut got = BytesMut::new();
            while b.read_into(&mut got, 64 * 1024).await.unwrap() > 0 {}
            got
        };
        let ((), got) = tokio::time::timeout(LIMIT, async { tokio::join!(writer, reader) })
            .await
            .expect("the writer is woken when room is freed");
        assert_eq!(got.len(), data.len());
        assert!(got[..] == data[..], "the bytes arrive in order, none lost");
    }

    /// A write waiting for room ends with an error when the peer goes away (a worker that
    /// dies while the master sends it a body).
    #[tokio::test]
    async fn a_waiting_write_fails_when_the_peer_closes() {
        let (a, b) = UnixStream::pair().unwrap();
        let a = WorkerSocket::new(a).unwrap();
        let data = vec![7u8; 4 * 1024 * 1024];
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(b);
        });
        let r = tokio::time::timeout(LIMIT, a.write_all(&data))
            .await
            .expect("the waiting writer is woken by the hang-up");
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }

    /// A read waits for data sent later; exact reads report a stream that ends short.
    #[tokio::test]
    async fn read_exact_waits_and_reports_a_short_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        let b = WorkerSocket::new(b).unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            (&a).write_all(b"abc").unwrap();
        });
        let mut two = [0u8; 2];
        tokio::time::timeout(LIMIT, b.read_exact(&mut two))
            .await
            .expect("woken by the data")
            .unwrap();
        assert_eq!(&two, b"ab");
        let err = tokio::time::timeout(LIMIT, b.read_exact(&mut two))
            .await
            .expect("woken by the hang-up")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A read given up while it waits leaves the buffer as it was: an exchange the client
    /// abandons is finished later from the same buffer.
    #[tokio::test]
    async fn a_cancelled_read_leaves_the_buffer_alone() {
        let (a, b) = UnixStream::pair().unwrap();
        let b = WorkerSocket::new(b).unwrap();
        let mut buf = BytesMut::from(&b"kept"[..]);
        let wait = tokio::time::timeout(Duration::from_millis(20), b.read_into(&mut buf, 4096));
        assert!(wait.await.is_err(), "nothing was sent: the read waits");
        assert_eq!(&buf[..], b"kept");
        (&a).write_all(b"!").unwrap();
        assert_eq!(b.read_into(&mut buf, 4096).await.unwrap(), 1);
        assert_eq!(&buf[..], b"kept!");
    }
}
