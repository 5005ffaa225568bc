//! The container's terminal: a pty from the container's own devpts whose
//! master goes to the caller's `--console-socket` over `SCM_RIGHTS`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use berth_oci::fd_passing::{receive_fd, Wait};

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
///
/// The terminal belongs to the process's user (`uid`), its group stays the
/// one devpts gave it (tty), as runc leaves it: a non-root process can use
/// its own console.
pub fn setup(socket: RawFd, size: Option<ConsoleSize>, uid: u32) -> Result<(), ConsoleError> {
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
        // gid -1: unchanged.
        if libc::fchown(slave, uid, u32::MAX) != 0 {
            return Err(last("chown the console to the process's user"));
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

/// The pty master the init sent over `socket`, if it sent one (it does only
/// for a terminal process, before reporting ready, so this never waits).
pub fn receive_master(socket: &std::os::unix::net::UnixStream) -> Option<OwnedFd> {
    let mut data = [0u8; 256];
    receive_fd(socket, &mut data, Wait::NoWait).ok()?.1
}

/// Copies the window size of the caller's terminal to the pty.
fn copy_window_size(master: RawFd) {
    // SAFETY: ioctls with a local winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Restores the caller's terminal mode when dropped.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        // SAFETY: termios calls on stdin with local storage.
        unsafe {
            if libc::isatty(0) != 1 {
                return RawMode(None);
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return RawMode(None);
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(0, libc::TCSANOW, &raw);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restoring the mode saved from the same terminal.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}

fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: write of a live buffer.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Input typed ahead of a container that is not reading it: the relay holds
/// this much before it stops reading the caller's terminal.
const MAX_PENDING_INPUT: usize = 64 * 1024;

/// `run` in the foreground with a terminal: relays between the caller's
/// stdio and the container's pty, forwards signals (and window size), and
/// returns the exit status of `pid` (128+signal when killed).
///
/// The pty master is non-blocking and input waits in a bounded buffer: a
/// container that does not read its stdin never stops its output from
/// reaching the caller.
pub fn relay(master: OwnedFd, pid: i32) -> i32 {
    let master = master.as_raw_fd();
    let _raw = RawMode::enter();
    copy_window_size(master);
    // SAFETY: signal mask and signalfd for this single thread; poll and
    // read/write on descriptors we own; waitpid on our own child.
    unsafe {
        let set = crate::process::block_forwarded_signals();
        let signals = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        let flags = libc::fcntl(master, libc::F_GETFL);
        libc::fcntl(master, libc::F_SETFL, flags | libc::O_NONBLOCK);
        let would_block = || std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
        let mut stdin_open = true;
        let mut master_open = true;
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let mut status = 0;
        loop {
            let read_stdin = stdin_open && pending.len() < MAX_PENDING_INPUT;
            let mut master_events = libc::POLLIN;
            if !pending.is_empty() {
                master_events |= libc::POLLOUT;
            }
            let mut fds = [
                libc::pollfd {
                    fd: if read_stdin { 0 } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if master_open { master } else { -1 },
                    events: master_events,
                    revents: 0,
                },
                libc::pollfd {
                    fd: signals,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if libc::poll(fds.as_mut_ptr(), 3, -1) < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            if fds[0].revents != 0 {
                let n = libc::read(0, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    stdin_open = false;
                } else {
                    pending.extend_from_slice(&buf[..n as usize]);
                }
            }
            if fds[1].revents & libc::POLLOUT != 0 && !pending.is_empty() {
                let n = libc::write(master, pending.as_ptr().cast(), pending.len());
                if n > 0 {
                    pending.drain(..n as usize);
                } else if !would_block() {
                    pending.clear();
                }
            }
            if fds[1].revents & !libc::POLLOUT != 0 {
                let n = libc::read(master, buf.as_mut_ptr().cast(), buf.len());
                if n > 0 {
                    write_all(1, &buf[..n as usize]);
                } else if n == 0 || !would_block() {
                    // EIO: every slave is closed.
                    master_open = false;
                    pending.clear();
                }
            }
            if fds[2].revents != 0 {
                let mut info: libc::signalfd_siginfo = std::mem::zeroed();
                libc::read(
                    signals,
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    std::mem::size_of::<libc::signalfd_siginfo>(),
                );
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGWINCH {
                    copy_window_size(master);
                } else if sig != libc::SIGCHLD {
                    libc::kill(pid, sig);
                }
            }
            if libc::waitpid(pid, &mut status, libc::WNOHANG) == pid {
                // Whatever the process wrote last is still in the pty (the
                // master is non-blocking: a process left behind holding the
                // slave cannot hold us).
                loop {
                    let n = libc::read(master, buf.as_mut_ptr().cast(), buf.len());
                    if n <= 0 {
                        break;
                    }
                    write_all(1, &buf[..n as usize]);
                }
                break;
            }
        }
        libc::close(signals);
        if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            libc::WEXITSTATUS(status)
        }
    }
}
