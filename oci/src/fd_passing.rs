//! Receiving a descriptor passed over a unix socket (`SCM_RIGHTS`), as the
//! runc CLI contract passes them: the pty master a runtime sends to the
//! caller's `--console-socket`, and the seccomp notify fd a runtime sends
//! to a seccomp agent. The runtime's init, the shim and the tests receive
//! with this one routine.
//!
//! A receiver takes one descriptor; any more the sender attached are closed
//! at once, so a misbehaving sender cannot make it leak descriptors.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// Whether [`receive_fd`] waits for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Block until a message arrives (on a blocking socket).
    Block,
    /// Return `WouldBlock` if none is queued.
    NoWait,
}

/// Receives one message on `socket` into `buffer`: the number of bytes
/// read, and the first descriptor attached to it (`None` if it carried
/// none). Received descriptors are close-on-exec.
pub fn receive_fd(
    socket: &impl AsRawFd,
    buffer: &mut [u8],
    wait: Wait,
) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buffer)];
    let flags = match wait {
        Wait::Block => MsgFlags::MSG_CMSG_CLOEXEC,
        Wait::NoWait => MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    };
    let message = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), flags)?;
    let mut received = Vec::new();
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel has just installed these descriptors in
            // this process for this message; nothing else owns them.
            received.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    // The extras drop (close) here.
    Ok((message.bytes, received.into_iter().next()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage};
    use std::io::{IoSlice, Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_passed_descriptor_arrives_with_its_message() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut pipe_read, mut pipe_write) = std::io::pipe().unwrap();
        let fds = [pipe_write.as_raw_fd()];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"master")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let mut buffer = [0u8; 16];
        let (n, fd) = receive_fd(&b, &mut buffer, Wait::Block).unwrap();
        assert_eq!(&buffer[..n], b"master");
        // The received descriptor is the pipe's write end.
        let mut passed = std::fs::File::from(fd.unwrap());
        passed.write_all(b"x").unwrap();
        drop(passed);
        pipe_write.flush().unwrap();
        drop(pipe_write);
        let mut got = String::new();
        pipe_read.read_to_string(&mut got).unwrap();
        assert_eq!(got, "x");

        // No message queued: no wait; a message without a descriptor: none.
        let err = receive_fd(&b, &mut buffer, Wait::NoWait).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        (&a).write_all(b"plain").unwrap();
        let (n, fd) = receive_fd(&b, &mut buffer, Wait::Block).unwrap();
        assert_eq!((&buffer[..n], fd.is_none()), (&b"plain"[..], true));
    }
}
