//! The container's terminal: a pty from the container's own devpts whose
//! master goes to the caller's `--console-socket` over `SCM_RIGHTS`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::spec::ConsoleSize;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot allocate a pty in the container: {what}: {source}")]
    Pty {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot send the pty master to the console socket: {0}")]
    Send(nix::Error),
}

fn last(what: &'static str) -> ConsoleError {
    ConsoleError::Pty {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// Allocates the pty (after `pivot_root`), sends its master to `socket`, and
/// makes the slave the controlling terminal and stdio of this process.
pub fn setup(socket: RawFd, size: Option<ConsoleSize>) -> Result<(), ConsoleError> {
    // SAFETY: plain syscalls on descriptors we own; the C strings are literals
    // or come from ptsname_r into a buffer of the length passed.
    unsafe {
        let master = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if master < 0 {
            return Err(last("open /dev/ptmx"));
        }
        let master = OwnedFd::from_raw_fd(master);
        if libc::unlockpt(master.as_raw_fd()) != 0 {
            return Err(last("unlockpt"));
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0 {
            return Err(last("ptsname"));
        }
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if slave < 0 {
            return Err(last("open pts"));
        }
        if let Some(size) = size {
            let ws = libc::winsize {
                ws_row: size.height,
                ws_col: size.width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            libc::ioctl(slave, libc::TIOCSWINSZ, &ws);
        }
        let pts_name = std::ffi::CStr::from_ptr(name.as_ptr()).to_bytes().to_vec();
        let fds = [master.as_raw_fd()];
        sendmsg::<()>(
            socket,
            &[IoSlice::new(&pts_name)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(ConsoleError::Send)?;
        drop(master);
        if libc::setsid() < 0 {
            return Err(last("setsid"));
        }
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
            return Err(last("TIOCSCTTY"));
        }
        for target in 0..3 {
            if libc::dup2(slave, target) < 0 {
                return Err(last("dup2"));
            }
        }
        if slave > 2 {
            libc::close(slave);
        }
    }
    Ok(())
}
