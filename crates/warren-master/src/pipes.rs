//! The master's ends of a worker's two pipes: requests go out on one, responses come in on
//! the other, both registered with the reactor.
//!
//! Pipes rather than a Unix socket pair (see ARCHITECTURE.md, "Why two pipes and not a Unix
//! socket pair"): a pipe's write reuses its buffer page, where every message sent on a Unix
//! socket allocates a buffer that is charged to the sender's memory cgroup and released by the
//! receiver's, so each request crossed between warren's group and the app's twice; and a pipe
//! wakes a writer only when it was full, where a socket wakes every waiter each time its peer
//! frees room. Each end is registered for the one direction it is used in.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use bytes::BytesMut;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The capacity asked for each pipe: about what a Unix socket buffers, and room for a whole
/// body or response frame (64 KiB and its header), so that neither side sleeps inside one.
const PIPE_BYTES: i32 = 256 * 1024;

/// A worker's request pipe (write end) and response pipe (read end), non-blocking.
#[derive(Debug)]
pub(crate) struct WorkerPipes {
    rx: AsyncFd<File>,
    tx: AsyncFd<File>,
}

impl WorkerPipes {
    /// A new worker's two pipes: the master's ends, non-blocking and registered with the
    /// current runtime's reactor, and the worker's, blocking (it does blocking I/O): the read
    /// end of the request pipe and the write end of the response pipe, in that order.
    pub(crate) fn create() -> io::Result<(WorkerPipes, [OwnedFd; 2])> {
        let (req_r, req_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (resp_r, resp_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        for pipe in [&req_w, &resp_w] {
            // Best effort: past the per-user pipe allowance (`/proc/sys/fs/pipe-user-pages-soft`,
            // which root is exempt from) a pipe keeps the default 64 KiB, and is merely slower
            // for large bodies.
            let _ = fcntl(pipe, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
        }
        // Each end is an open file of its own: the flag does not reach the worker's ends.
        for ours in [&resp_r, &req_w] {
            let flags = OFlag::from_bits_retain(fcntl(ours, FcntlArg::F_GETFL)?);
            fcntl(ours, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        }
        let pipes = WorkerPipes {
            rx: register(File::from(resp_r), Interest::READABLE)?,
            tx: register(File::from(req_w), Interest::WRITABLE)?,
        };
        Ok((pipes, [req_r, resp_w]))
    }

    /// Appends what has arrived, at most `max` bytes, to `buf`, waiting for at least one
    /// byte; 0 at end of stream. Cancel-safe: `buf` is only grown between the wait and the
    /// read, never across an await.
    pub(crate) async fn read_into(&self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        loop {
            let mut ready = self.rx.readable().await?;
            let start = buf.len();
            buf.resize(start + max, 0);
            let r = ready.try_io(|f| f.get_ref().read(&mut buf[start..]));
            let got = match &r {
                Ok(Ok(n)) => *n,
                _ => 0,
            };
            buf.truncate(start + got);
            match r {
                Ok(Ok(n)) => {
                    // A short read emptied the pipe: the next read waits for new data
                    // instead of finding out with a failed call.
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
        // Almost always there is room: write before looking at the readiness, which a fresh
        // registration only learns on the reactor's next turn.
        match self.tx.get_ref().write(data) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r,
        }
        loop {
            let mut ready = self.tx.writable().await?;
            match ready.try_io(|f| f.get_ref().write(data)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
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

    /// Bytes written to the worker that it has not read. The pipe and its contents outlive
    /// the worker as long as the master holds its write end, so after the worker is gone this
    /// still tells whether it had read its request.
    pub(crate) fn unread(&self) -> io::Result<usize> {
        Ok(rustix::io::ioctl_fionread(self.tx.get_ref())? as usize)
    }
}

/// Registers `file` with the reactor for `interest`.
///
/// tokio's safe constructor is deprecated because an arbitrary `AsRawFd` might hand out a
/// different or closed descriptor later; a `File` owns its descriptor and always returns that
/// one, which is exactly the condition the unsafe `register_with_interest` asks for (and this
/// crate has no unsafe code).
#[allow(deprecated)]
fn register(file: File, interest: Interest) -> io::Result<AsyncFd<File>> {
    AsyncFd::with_interest(file, interest)
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd};
    use std::time::Duration;

    use super::*;

    /// Every test's waits are bounded: a lost wake-up fails instead of hanging.
    const LIMIT: Duration = Duration::from_secs(10);

    /// The master's pipes, and the worker's ends: requests out of `.1`, responses into `.2`.
    fn pipes() -> (WorkerPipes, File, File) {
        let (ours, [requests, responses]) = WorkerPipes::create().unwrap();
        (ours, File::from(requests), File::from(responses))
    }

    /// The epoll events `fd` is registered for, in every epoll set of this process.
    fn registrations(fd: i32) -> Vec<u32> {
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
        masks
    }

    /// Both pipes hold a whole body or response frame, so neither side sleeps inside one (as
    /// root, or as a user within the kernel's pipe allowance, as tests are); the worker's ends
    /// block, the master's do not.
    #[tokio::test]
    async fn pipes_hold_a_whole_frame_and_only_the_masters_ends_are_non_blocking() {
        use warren_protocol::{BODY_CHUNK, FRAME_HEADER};
        let (ours, theirs) = WorkerPipes::create().unwrap();
        for end in &theirs {
            let size = fcntl(end, FcntlArg::F_GETPIPE_SZ).unwrap() as usize;
            assert!(size >= FRAME_HEADER + BODY_CHUNK, "{size} bytes");
        }
        let non_blocking = |fd: std::os::fd::BorrowedFd<'_>| {
            OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).unwrap())
                .contains(OFlag::O_NONBLOCK)
        };
        assert!(
            theirs.iter().all(|fd| !non_blocking(fd.as_fd())),
            "the worker's ends block"
        );
        assert!(
            non_blocking(ours.rx.get_ref().as_fd()),
            "the master's read end does not block"
        );
        assert!(
            non_blocking(ours.tx.get_ref().as_fd()),
            "the master's write end does not block"
        );
    }

    /// Each end is in the reactor's epoll set for the one direction it is used in.
    #[tokio::test]
    async fn each_end_is_registered_for_its_direction_only() {
        const EPOLLIN: u32 = 0x1;
        const EPOLLOUT: u32 = 0x4;
        let (ours, _requests, _responses) = pipes();
        let rx = registrations(ours.rx.as_raw_fd());
        let tx = registrations(ours.tx.as_raw_fd());
        assert!(!rx.is_empty() && !tx.is_empty(), "both ends are registered");
        for m in rx {
            assert!(
                m & EPOLLIN != 0 && m & EPOLLOUT == 0,
                "responses: input only: {m:#x}"
            );
        }
        for m in tx {
            assert!(
                m & EPOLLOUT != 0 && m & EPOLLIN == 0,
                "requests: output only: {m:#x}"
            );
        }
    }

    /// A write larger than the pipe's buffer waits for the worker to read, then completes.
    #[tokio::test]
    async fn a_write_past_the_buffer_waits_for_room() {
        let (ours, requests, _responses) = pipes();
        let data: Vec<u8> = (0..4 * 1024 * 1024).map(|i| i as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            (&requests).read_to_end(&mut got).unwrap();
            got
        });
        tokio::time::timeout(LIMIT, ours.write_all(&data))
            .await
            .expect("the writer is woken when room is freed")
            .unwrap();
        drop(ours);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got[..] == data[..], "the bytes arrive in order, none lost");
    }

    /// A write waiting for room ends with an error when the worker goes away (a worker that
    /// dies while the master sends it a body).
    #[tokio::test]
    async fn a_waiting_write_fails_when_the_worker_closes() {
        let (ours, requests, responses) = pipes();
        let data = vec![7u8; 4 * 1024 * 1024];
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop((requests, responses));
        });
        let r = tokio::time::timeout(LIMIT, ours.write_all(&data))
            .await
            .expect("the waiting writer is woken by the hang-up");
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }

    /// A read waits for data sent later; exact reads report a stream that ends short.
    #[tokio::test]
    async fn read_exact_waits_and_reports_a_short_stream() {
        let (ours, _requests, responses) = pipes();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            (&responses).write_all(b"abc").unwrap();
        });
        let mut two = [0u8; 2];
        tokio::time::timeout(LIMIT, ours.read_exact(&mut two))
            .await
            .expect("woken by the data")
            .unwrap();
        assert_eq!(&two, b"ab");
        let err = tokio::time::timeout(LIMIT, ours.read_exact(&mut two))
            .await
            .expect("woken by the hang-up")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A read given up while it waits leaves the buffer as it was: an exchange the client
    /// abandons is finished later from the same buffer.
    #[tokio::test]
    async fn a_cancelled_read_leaves_the_buffer_alone() {
        let (ours, _requests, responses) = pipes();
        let mut buf = BytesMut::from(&b"kept"[..]);
        let wait = tokio::time::timeout(Duration::from_millis(20), ours.read_into(&mut buf, 4096));
        assert!(wait.await.is_err(), "nothing was sent: the read waits");
        assert_eq!(&buf[..], b"kept");
        (&responses).write_all(b"!").unwrap();
        assert_eq!(ours.read_into(&mut buf, 4096).await.unwrap(), 1);
        assert_eq!(&buf[..], b"kept!");
    }

    /// What the worker left unread is known after it is gone: the retry of a request that
    /// never reached the app depends on it.
    #[tokio::test]
    async fn unread_counts_what_the_worker_left_also_after_it_exits() {
        let (ours, requests, responses) = pipes();
        ours.write_all(b"0123456789").await.unwrap();
        assert_eq!(ours.unread().unwrap(), 10);
        let mut three = [0u8; 3];
        (&requests).read_exact(&mut three).unwrap();
        assert_eq!(ours.unread().unwrap(), 7);
        drop((requests, responses));
        let mut buf = BytesMut::new();
        assert_eq!(
            ours.read_into(&mut buf, 16).await.unwrap(),
            0,
            "end of stream"
        );
        assert_eq!(
            ours.unread().unwrap(),
            7,
            "still known once the worker has gone"
        );
    }
}
