//! Receiving descriptors passed over a unix socket (`SCM_RIGHTS`), as the
//! runc CLI contract passes them: the pty master a runtime sends to the
//! caller's `--console-socket`, and the seccomp notify fd a runtime sends
//! to a seccomp agent; and the runtime's own channel to its init, whose
//! `Prepared` hands over the init's cgroup files. The runtime, its init,
//! the shim and the tests receive with this one routine.
//!
//! A message may carry at most [`MAX_FDS`] descriptors: one with more is an
//! error, and what did arrive of it is closed, so a misbehaving sender
//! cannot make a receiver leak descriptors. [`receive_fd`] takes one and
//! closes any others at once.

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The most descriptors one message may carry.
pub const MAX_FDS: usize = 64;

/// The control buffer's size in u64s (aligned as the kernel's control
/// headers want): `CMSG_SPACE` of [`MAX_FDS`] descriptors.
const CONTROL_WORDS: usize =
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<libc::c_int>()) as u32) } as usize / 8;

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
    // SAFETY: initialised bytes are valid MaybeUninit bytes, and the
    // kernel writes only bytes into them.
    let room = unsafe { &mut *(buffer as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let (n, fds) = receive_fds(socket, room, wait)?;
    // The extras drop (close) here.
    Ok((n, fds.into_iter().next()))
}

/// Receives one message on `socket` into `buffer`, which need not be
/// initialised (a large one costs nothing until written): the number of
/// bytes read (its first bytes are then initialised) and every descriptor
/// attached, close-on-exec. Interrupted calls are retried.
pub fn receive_fds(
    socket: &impl AsRawFd,
    buffer: &mut [MaybeUninit<u8>],
    wait: Wait,
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = [0u64; CONTROL_WORDS];
    let flags = match wait {
        Wait::Block => libc::MSG_CMSG_CLOEXEC,
        Wait::NoWait => libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
    };
    loop {
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: a zeroed msghdr is valid (no name, no control) until set.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = size_of_val(&control);
        // SAFETY: recvmsg(2) writes at most the buffers' sizes into them.
        let read = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, flags) };
        if read < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        // Owned first, so that they close with an error below.
        // SAFETY: the header is the one recvmsg filled in, over `control`.
        let fds = unsafe { attached(&header) };
        if header.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(std::io::Error::other(format!(
                "a message carried more than {MAX_FDS} descriptors"
            )));
        }
        return Ok((read as usize, fds));
    }
}

/// The descriptors of the `SCM_RIGHTS` messages in `header`.
///
/// # Safety
/// `header` is what a successful recvmsg(2) filled in, its control buffer
/// still alive; the descriptors in it belong to nobody yet.
unsafe fn attached(header: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    let mut cmsg = libc::CMSG_FIRSTHDR(header);
    while !cmsg.is_null() {
        if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
            let data = libc::CMSG_DATA(cmsg);
            let len = ((*cmsg).cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
            for i in 0..len / size_of::<libc::c_int>() {
                let fd = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                fds.push(OwnedFd::from_raw_fd(fd));
            }
        }
        cmsg = libc::CMSG_NXTHDR(header, cmsg);
    }
    fds
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::io::{IoSlice, Read, Write};
    use std::os::unix::net::UnixStream;

    /// Sends `bytes` on `socket` with `fds` attached.
    fn send(socket: &UnixStream, bytes: &[u8], fds: &[std::os::fd::RawFd]) {
        sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(bytes)],
            &[ControlMessage::ScmRights(fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    #[test]
    fn a_passed_descriptor_arrives_with_its_message() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut pipe_read, mut pipe_write) = std::io::pipe().unwrap();
        send(&a, b"master", &[pipe_write.as_raw_fd()]);
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

    #[test]
    fn a_message_with_more_descriptors_than_taken_is_refused_and_leaks_none() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut pipe_read, pipe_write) = std::io::pipe().unwrap();
        send(&a, b"many", &vec![pipe_write.as_raw_fd(); MAX_FDS + 1]);
        drop(pipe_write);
        let mut buffer = [0u8; 16];
        assert!(receive_fd(&b, &mut buffer, Wait::Block).is_err());
        // Every copy of the write end that arrived is closed again: the
        // pipe reads its end (a copy left open would read as "would block").
        nix::fcntl::fcntl(
            pipe_read.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        assert_eq!(pipe_read.read(&mut buffer).unwrap(), 0);
    }
}
