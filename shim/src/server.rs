//! The long-lived shim's loop: one thread polls the listening socket, the
//! ttrpc connections, a signalfd for SIGCHLD, the OOM eventfd and the stdin
//! copies, and hands every request to [`Tasks`]. Reaping comes before requests in each round,
//! so a Wait that arrives with an exit already pending sees the exit.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Instant;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use protobuf::Message;
use ttrpc::proto::{Code, Request};

use crate::task::{Reply, Tasks};
use crate::wire::{self, RpcError};

const SERVICE: &str = "containerd.task.v2.Task";
/// berth's own service, between a `shim start` and the group's running
/// shim: `Join` announces a container ([`Tasks::join`]).
pub const GROUP_SERVICE: &str = "berth.shim.v1.Group";
/// How much one read of a connection takes (a frame may take several).
const READ_CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot set up SIGCHLD handling: {0}")]
    Signals(nix::Error),
    #[error("poll failed: {0}")]
    Poll(std::io::Error),
    #[error("cannot accept on {path}: {source}")]
    Accept {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Blocks SIGCHLD (in this thread and every thread started later) and
/// returns a signalfd that reports it. Call before starting any thread.
pub fn sigchld_fd() -> Result<SignalFd, ServerError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block().map_err(ServerError::Signals)?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(ServerError::Signals)
}

/// The exit status containerd expects: the code, or 128+signal.
pub fn exit_status(status: WaitStatus) -> Option<(u32, u32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw() as u32, code as u32)),
        WaitStatus::Signaled(pid, signal, _) => {
            Some((pid.as_raw() as u32, 128 + signal as i32 as u32))
        }
        _ => None,
    }
}

/// What a descriptor in the loop's poll stands for.
enum Source {
    /// A container's OOM watch.
    Oom(String),
    Signals,
    Listener,
    /// A process's stdin copy: container id, exec id.
    Stdin(String, String),
    Conn(u64),
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    signals: SignalFd,
    conns: HashMap<u64, Conn>,
    next: u64,
    tasks: Tasks,
    /// `-debug`: every RPC and its outcome goes to the log.
    debug: bool,
    /// The socket's path is gone: the shim is leaving.
    unlinked: bool,
}

impl Server {
    pub fn new(
        listener: UnixListener,
        path: PathBuf,
        signals: SignalFd,
        tasks: Tasks,
        debug: bool,
    ) -> Server {
        Server {
            listener,
            path,
            signals,
            conns: HashMap::new(),
            next: 0,
            tasks,
            debug,
            unlinked: false,
        }
    }

    /// Serves until Shutdown; the queued events are sent before returning.
    pub fn run(&mut self) -> Result<(), ServerError> {
        self.listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::Accept {
                path: self.path.clone(),
                source,
            })?;
        while !self.tasks.shutdown {
            // In the order they are handled: an OOM kill is reported before
            // the exit it caused, and reaping comes before requests.
            let mut sources = Vec::new();
            let mut fds = Vec::new();
            for (id, fd) in self.tasks.oom_fds() {
                sources.push(Source::Oom(id));
                fds.push(pollfd(fd, libc::POLLIN));
            }
            sources.push(Source::Signals);
            fds.push(pollfd(self.signals.as_raw_fd(), libc::POLLIN));
            sources.push(Source::Listener);
            fds.push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
            for (id, exec_id, fd, events) in self.tasks.stdin_fds() {
                sources.push(Source::Stdin(id, exec_id));
                fds.push(pollfd(fd, events));
            }
            for (token, conn) in &self.conns {
                sources.push(Source::Conn(*token));
                fds.push(pollfd(conn.stream.as_raw_fd(), libc::POLLIN));
            }
            // Awake when an announced container's wait, or a spare's, lapses.
            let timeout = self.tasks.next_lapse().map_or(-1, |lapse| {
                let left = lapse.saturating_duration_since(Instant::now());
                left.as_millis().clamp(1, i32::MAX as u128) as i32
            });
            // SAFETY: `fds` is a valid array of pollfd for the call's duration.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ServerError::Poll(err));
            }
            if n == 0 {
                self.tasks.lapse(Instant::now());
                continue;
            }
            let mut served = false;
            for (source, fd) in sources.iter().zip(&fds) {
                if fd.revents == 0 {
                    continue;
                }
                match source {
                    Source::Oom(id) => self.tasks.oom_fired(id),
                    Source::Signals => self.reap(),
                    Source::Listener => self.accept(),
                    Source::Stdin(id, exec_id) => self.tasks.stdin_ready(id, exec_id),
                    Source::Conn(token) => {
                        self.serve(*token);
                        served = true;
                    }
                }
            }
            if served {
                crate::memory::release_idle();
            }
        }
        self.unlink();
        self.tasks.flush_events();
        Ok(())
    }

    /// Removes the socket's path, once: from then on a `shim start` for
    /// the group binds a new shim instead of finding this one, which is
    /// leaving. Done before the Shutdown is answered, so whoever sent it
    /// finds the path free.
    fn unlink(&mut self) {
        if !self.unlinked {
            self.unlinked = true;
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Takes every pending connection. A failure (out of descriptors) is
    /// logged, never fatal: the container must keep its shim.
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // Responses are written whole; requests are read when poll says so.
                    let _ = stream.set_nonblocking(false);
                    self.next += 1;
                    self.tasks.connected();
                    self.conns.insert(
                        self.next,
                        Conn {
                            stream,
                            buf: Vec::new(),
                        },
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    crate::log(ServerError::Accept {
                        path: self.path.clone(),
                        source,
                    });
                    // The connection stays pending: do not spin on it.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    return;
                }
            }
        }
    }

    fn reap(&mut self) {
        while let Ok(Some(_)) = self.signals.read_signal() {}
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let Some((pid, code)) = exit_status(status) {
                        self.tasks.reaped(pid, code);
                        self.send_outbox();
                    }
                }
            }
        }
    }

    /// Sends the answers the task has for parked Waits.
    fn send_outbox(&mut self) {
        for ((token, stream_id), payload) in self.tasks.take_answers() {
            self.send(token, wire::response(stream_id, Ok(payload)));
        }
    }

    fn close(&mut self, token: u64) {
        self.conns.remove(&token);
        self.tasks.disconnected(token, self.conns.len());
    }

    fn send(&mut self, token: u64, frame: Vec<u8>) {
        let failed = match self.conns.get_mut(&token) {
            Some(conn) => conn.stream.write_all(&frame).is_err(),
            None => false,
        };
        if failed {
            self.close(token);
        }
    }

    /// Reads what a connection has and answers every complete request.
    fn serve(&mut self, token: u64) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        // Read straight into the connection's buffer: no chunk on the stack,
        // whose pages would stay with the shim for good.
        let start = conn.buf.len();
        conn.buf.resize(start + READ_CHUNK, 0);
        match conn.stream.read(&mut conn.buf[start..]) {
            Ok(0) | Err(_) => return self.close(token),
            Ok(n) => conn.buf.truncate(start + n),
        }
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            let frame = match wire::take_frame(&mut conn.buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    // An idle connection (containerd keeps one per task) holds no buffer.
                    if conn.buf.is_empty() {
                        conn.buf = Vec::new();
                    }
                    return;
                }
                Err(err) => {
                    crate::log(format_args!("dropping a connection: {err}"));
                    return self.close(token);
                }
            };
            if frame.kind != wire::TYPE_REQUEST {
                continue;
            }
            let reply = match Request::parse_from_bytes(&frame.payload) {
                Err(err) => Reply::Now(Err(RpcError::new(
                    Code::INVALID_ARGUMENT,
                    format!("cannot decode ttrpc request: {err}"),
                ))),
                Ok(request) if request.service == GROUP_SERVICE && request.method == "Join" => {
                    self.tasks.join(&request.payload)
                }
                Ok(request) if request.service != SERVICE => Reply::Now(Err(RpcError::new(
                    Code::UNIMPLEMENTED,
                    format!("service {} is not served by this shim", request.service),
                ))),
                Ok(request) => {
                    let reply = self.tasks.handle(
                        &request.method,
                        &request.payload,
                        (token, frame.stream_id),
                    );
                    if self.debug {
                        match &reply {
                            Reply::Now(Ok(_)) => crate::log(format_args!("{}: ok", request.method)),
                            Reply::Now(Err(err)) => {
                                crate::log(format_args!("{}: {err}", request.method))
                            }
                            Reply::Parked => crate::log(format_args!("{}: parked", request.method)),
                        }
                    }
                    reply
                }
            };
            if self.tasks.shutdown {
                self.unlink();
            }
            if let Reply::Now(result) = reply {
                self.send(token, wire::response(frame.stream_id, result));
            }
            self.tasks.announce_created();
            self.send_outbox();
        }
    }
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Pid;

    #[test]
    fn killed_processes_exit_with_128_plus_the_signal() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_status(WaitStatus::Exited(pid, 3)), Some((42, 3)));
        assert_eq!(
            exit_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((42, 137))
        );
        assert_eq!(exit_status(WaitStatus::StillAlive), None);
    }
}
