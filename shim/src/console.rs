//! Terminals: the runtime sends the pty master over `--console-socket`
//! (SCM_RIGHTS); the shim copies it to the stdout fifo and the stdin fifo
//! to it on two threads that live as long as the terminal, and applies
//! ResizePty to it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use berth_oci::fd_passing;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen on console socket {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the runtime did not send the terminal within {0:?}")]
    Timeout(Duration),
    #[error("cannot receive the terminal: {0}")]
    Receive(std::io::Error),
    #[error("cannot open {path} for the terminal: {source}")]
    Fifo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the terminal copy: {0}")]
    Thread(std::io::Error),
    #[error("cannot resize the terminal: {0}")]
    Resize(std::io::Error),
}

/// A listening console socket, removed when dropped.
pub struct ConsoleSocket {
    listener: UnixListener,
    pub path: PathBuf,
}

impl ConsoleSocket {
    /// A socket in `dir` (a short path: sun_path holds 108 bytes).
    pub fn new(dir: &Path) -> Result<ConsoleSocket, ConsoleError> {
        let path = dir.join(format!(
            "berth-shim-console-{}-{}.sock",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|source| ConsoleError::Listen {
            path: path.clone(),
            source,
        })?;
        // The terminal is the container's: only root may pick it up.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| ConsoleError::Listen {
                path: path.clone(),
                source,
            },
        )?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ConsoleError::Listen {
                path: path.clone(),
                source,
            })?;
        Ok(ConsoleSocket { listener, path })
    }

    /// Receives the master, giving up when `runtime_done` says the runtime
    /// exited without sending one or after `timeout`.
    pub fn receive(
        &self,
        timeout: Duration,
        mut runtime_done: impl FnMut() -> bool,
    ) -> Result<OwnedFd, ConsoleError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => return receive_fd(&stream),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(ConsoleError::Receive(e)),
            }
            if Instant::now() > deadline || runtime_done() {
                return Err(ConsoleError::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn receive_fd(socket: &impl AsRawFd) -> Result<OwnedFd, ConsoleError> {
    // The accepted socket inherits non-blocking mode: wait for the message.
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one local pollfd.
    unsafe { libc::poll(&mut pfd, 1, 10_000) };
    let mut data = [0u8; 256];
    match fd_passing::receive_fd(socket, &mut data, fd_passing::Wait::Block) {
        Ok((_, Some(fd))) => Ok(fd),
        Ok((_, None)) => Err(ConsoleError::Receive(std::io::Error::other(
            "no descriptor in the console socket message",
        ))),
        Err(e) => Err(ConsoleError::Receive(e)),
    }
}

/// Starts copying between `master` and the fifos. The output copy ends when
/// the terminal's last user closes it (EIO), then closes the stdout fifo so
/// the daemon sees end-of-file.
pub fn start_copies(
    master: &OwnedFd,
    stdin: &str,
    stdout: &str,
    closed: Arc<AtomicBool>,
) -> Result<Option<Drained>, ConsoleError> {
    let clone = |m: &OwnedFd| m.try_clone().map(File::from).map_err(ConsoleError::Thread);
    let mut drained = None;
    if !stdout.is_empty() {
        let mut from = clone(master)?;
        let path = PathBuf::from(stdout);
        let mut to = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| ConsoleError::Fifo { path, source })?;
        let done = Drained::default();
        drained = Some(done.clone());
        spawn("tty-out", move || {
            let mut buf = [0u8; 8192];
            // The master reads what the terminal still holds, then EIO once
            // no process has the terminal open any more.
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            // And what the fifo holds has been read: `ctr run -t` stops
            // reading it at the exit, so output still in the pipe when the
            // exit is told would be lost (seen under load).
            wait_until_read(&to, FIFO_READ_LIMIT);
            done.set();
        })?;
    }
    if !stdin.is_empty() {
        let mut to = clone(master)?;
        let path = PathBuf::from(stdin);
        spawn("tty-in", move || {
            let Ok(mut from) = File::open(&path) else {
                return;
            };
            let mut buf = [0u8; 8192];
            while !closed.load(Ordering::Relaxed) {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;
    }
    Ok(drained)
}

/// How long a terminal's output copy waits for the client to read what it
/// wrote to the stdout fifo (see [`wait_until_read`]): within the limit
/// the exit waits for (`task::process::CONSOLE_DRAIN_LIMIT`).
const FIFO_READ_LIMIT: Duration = Duration::from_millis(200);

/// Waits until nothing written to `fifo` is left unread (`FIONREAD`), at
/// most `limit`, and only while a reader makes progress: a client that
/// went away (or never read, a detached `ctr run -t -d`) leaves it full.
fn wait_until_read(fifo: &File, limit: Duration) {
    const STALL: Duration = Duration::from_millis(20);
    let unread = || {
        let mut count: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, ours.
        let rc = unsafe { libc::ioctl(fifo.as_raw_fd(), libc::FIONREAD, &mut count) };
        if rc == 0 {
            count
        } else {
            0
        }
    };
    let until = Instant::now() + limit;
    let (mut last, mut moved) = (unread(), Instant::now());
    while last > 0 && Instant::now() < until && moved.elapsed() < STALL {
        std::thread::sleep(Duration::from_millis(1));
        let now = unread();
        if now < last {
            moved = Instant::now();
        }
        last = now;
    }
}

/// Set by a terminal's output copy once it has passed on everything the
/// terminal held and the client has read it from the fifo (or stopped
/// reading): a process's last output must reach the client before its exit
/// is told (a client that sees the exit stops reading).
#[derive(Clone, Default)]
pub struct Drained(Arc<(Mutex<bool>, Condvar)>);

impl Drained {
    fn set(&self) {
        let (done, changed) = &*self.0;
        *done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        changed.notify_all();
    }

    /// Waits until the copy is done, at most `limit` (a process left in
    /// the background may keep the terminal open for good).
    pub fn wait(&self, limit: Duration) -> bool {
        let (done, changed) = &*self.0;
        let guard = done.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = changed
            .wait_timeout_while(guard, limit, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), ConsoleError> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(64 << 10)
        .spawn(f)
        .map(|_| ())
        .map_err(ConsoleError::Thread)
}

/// Sets the terminal's window size.
pub fn resize(master: &OwnedFd, width: u32, height: u32) -> Result<(), ConsoleError> {
    let size = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(ConsoleError::Resize(std::io::Error::last_os_error()));
    }
    Ok(())
}
