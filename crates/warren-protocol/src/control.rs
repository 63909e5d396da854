//! Messages between the master and an app's zygote, over a `SOCK_SEQPACKET` pair.
//!
//! Each message is one fixed-size packet, so no framing is needed and a short read is an error.
//! `Fork` travels with two file descriptors (`SCM_RIGHTS`): the read end of a fresh request pipe
//! and the write end of a fresh response pipe, which the forked child keeps as its connection
//! to the master.

use crate::ProtocolError;

/// Bytes in every control message.
pub const MSG_LEN: usize = 16;

/// Exit code of a zygote whose app could not be imported (the traceback is on its stderr).
pub const EXIT_IMPORT_FAILED: i32 = 3;
/// Exit code of a zygote that was started wrongly (bad arguments, no control socket).
pub const EXIT_USAGE: i32 = 2;
/// Exit status of a zygote or worker that could not confine itself (the reason is on stderr).
pub const EXIT_SANDBOX_FAILED: i32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// zygote → master: the app is imported; forks may be requested.
    ZygoteReady { pid: i32 },
    /// master → zygote: fork a worker that serves on the attached pipes (requests, responses).
    Fork { token: u32 },
    /// zygote → master: the worker for `token` runs as `pid`.
    Forked { token: u32, pid: i32 },
    /// zygote → master: `fork()` failed with `errno`.
    ForkFailed { token: u32, errno: i32 },
    /// zygote → master: a worker exited; `status` is the raw `waitpid` status.
    Exited { pid: i32, status: i32 },
}

impl Msg {
    pub fn encode(self) -> [u8; MSG_LEN] {
        let (kind, a, b) = match self {
            Msg::ZygoteReady { pid } => (1u32, pid as u32, 0i32),
            Msg::Fork { token } => (2, token, 0),
            Msg::Forked { token, pid } => (3, token, pid),
            Msg::ForkFailed { token, errno } => (4, token, errno),
            Msg::Exited { pid, status } => (5, pid as u32, status),
        };
        let mut out = [0u8; MSG_LEN];
        out[0..4].copy_from_slice(&kind.to_le_bytes());
        out[4..8].copy_from_slice(&a.to_le_bytes());
        out[8..12].copy_from_slice(&b.to_le_bytes());
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Msg, ProtocolError> {
        let Some(b) = buf.first_chunk::<MSG_LEN>() else {
            return Err(ProtocolError::Truncated("control message"));
        };
        if buf.len() != MSG_LEN {
            return Err(ProtocolError::Trailing(
                "control message",
                buf.len() - MSG_LEN,
            ));
        }
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let (a, c) = (word(4), word(8) as i32);
        Ok(match word(0) {
            1 => Msg::ZygoteReady { pid: a as i32 },
            2 => Msg::Fork { token: a },
            3 => Msg::Forked { token: a, pid: c },
            4 => Msg::ForkFailed { token: a, errno: c },
            5 => Msg::Exited {
                pid: a as i32,
                status: c,
            },
            k => return Err(ProtocolError::UnknownKind(k as u8)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            Msg::ZygoteReady { pid: 7 },
            Msg::Fork { token: 9 },
            Msg::Forked {
                token: 9,
                pid: 1234,
            },
            Msg::ForkFailed {
                token: 1,
                errno: 11,
            },
            Msg::Exited {
                pid: 5,
                status: 0x0900,
            },
        ] {
            assert_eq!(Msg::decode(&m.encode()), Ok(m));
        }
        assert!(Msg::decode(&[1, 0, 0]).is_err());
        assert!(Msg::decode(&[9; MSG_LEN]).is_err());
    }
}
