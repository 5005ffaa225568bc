//! A process's stdio as the daemon names it: fifo paths (what `ctr` gives),
//! `file://PATH` and `binary://PATH?args` URIs, or nothing (/dev/null).
//!
//! stdout and stderr are not copied: the container writes into the daemon's
//! fifo directly. The shim keeps one read-write descriptor of each fifo (a
//! "holder") for as long as the process runs, so the container never gets
//! SIGPIPE while the daemon is away (restarting), and drops it when the
//! process exits so the daemon sees end-of-file. stdin is copied by the
//! server's loop ([`StdinCopy`]), without a thread: the fifo's writer may
//! appear only after the container started (or never), and the container
//! must see end-of-file when that writer closes or at CloseIO.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("cannot open {what} {path}: {source}")]
    Open {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a pipe for {0}: {1}")]
    Pipe(&'static str, nix::Error),
    #[error("cannot start logging binary {path}: {source}")]
    Binary {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("logging binary {0} did not become ready within 10 s")]
    BinaryNotReady(PathBuf),
}

/// The stdio paths of a process, as given in Create or Exec.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Descriptors for the container's fds 0, 1 and 2 (None: /dev/null), and
/// what the shim keeps while the process runs.
#[derive(Default)]
pub struct Opened {
    pub child: [Option<OwnedFd>; 3],
    pub holders: Vec<OwnedFd>,
    pub stdin: Option<StdinCopy>,
}

/// Opens `paths` for a process without a terminal.
pub fn open(paths: &Paths, id: &str, namespace: &str) -> Result<Opened, StdioError> {
    let mut opened = Opened::default();
    if !paths.stdin.is_empty() {
        let (copy, read) = StdinCopy::open(Path::new(&paths.stdin))?;
        opened.child[0] = Some(read);
        opened.stdin = Some(copy);
    }
    if let Some(binary) = paths.stdout.strip_prefix("binary://") {
        let (out, err) = start_binary(binary, id, namespace)?;
        opened.child[1] = Some(out);
        opened.child[2] = Some(err);
        return Ok(opened);
    }
    for (slot, path, what) in [(1, &paths.stdout, "stdout"), (2, &paths.stderr, "stderr")] {
        if path.is_empty() {
            continue;
        }
        if let Some(file) = path.strip_prefix("file://") {
            opened.child[slot] = Some(open_log_file(Path::new(file))?);
            continue;
        }
        let fifo = path.strip_prefix("fifo://").unwrap_or(path);
        let (holder, writer) = open_fifo_writer(Path::new(fifo), what)?;
        opened.holders.push(holder);
        opened.child[slot] = Some(writer);
    }
    Ok(opened)
}

/// A writer for the fifo and the read-write holder that keeps it from ever
/// having no reader. Opening read-write never blocks, so a fifo nobody
/// opened does not hang Create; the container blocks once its buffer fills.
pub fn open_fifo_writer(path: &Path, what: &'static str) -> Result<(OwnedFd, OwnedFd), StdioError> {
    let error = |source| StdioError::Open {
        what,
        path: path.to_path_buf(),
        source,
    };
    let holder = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(error)?;
    let writer = OpenOptions::new().write(true).open(path).map_err(error)?;
    Ok((holder.into(), writer.into()))
}

fn open_log_file(path: &Path) -> Result<OwnedFd, StdioError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| StdioError::Open {
            what: "log file",
            path: path.to_path_buf(),
            source,
        })
}

/// Copies the stdin fifo into the pipe that is the container's stdin, a
/// bufferful at a time, whenever the loop's poll says a side is ready.
pub struct StdinCopy {
    fifo: File,
    pipe: File,
    pending: Vec<u8>,
}

impl StdinCopy {
    /// Opens the fifo without waiting for its writer (a fifo opened
    /// non-blocking reports no hang-up until a writer came and went) and
    /// returns the pipe's read end for the container.
    pub fn open(path: &Path) -> Result<(StdinCopy, OwnedFd), StdioError> {
        let fifo = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| StdioError::Open {
                what: "stdin",
                path: path.to_path_buf(),
                source,
            })?;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| StdioError::Pipe("stdin", e))?;
        // Only our end is non-blocking: the container reads as usual.
        nix::fcntl::fcntl(
            write.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| StdioError::Pipe("stdin", e))?;
        let copy = StdinCopy {
            fifo,
            pipe: File::from(write),
            pending: Vec::new(),
        };
        Ok((copy, read))
    }

    /// The descriptor and events to poll: the fifo for input, or the pipe
    /// for room while a chunk is pending.
    pub fn poll_fd(&self) -> (i32, i16) {
        if self.pending.is_empty() {
            (self.fifo.as_raw_fd(), libc::POLLIN)
        } else {
            (self.pipe.as_raw_fd(), libc::POLLOUT)
        }
    }

    /// Moves what can be moved; false once the copy is over (end-of-file
    /// from the daemon, or the container closed its stdin). Call it only
    /// when poll reports the [`poll_fd`](Self::poll_fd): before the first
    /// writer, a read says end-of-file where poll rightly says nothing.
    pub fn ready(&mut self) -> bool {
        if self.pending.is_empty() {
            let mut buf = [0u8; 16 << 10];
            match self.fifo.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
                Err(_) => return false,
            }
        }
        match self.pipe.write(&self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        }
    }
}

/// Starts a `binary://` logger the way containerd specifies it: the
/// container's stdout and stderr arrive on its fds 3 and 4, it closes fd 5
/// when ready, and it learns the container from CONTAINER_ID and
/// CONTAINER_NAMESPACE.
fn start_binary(uri: &str, id: &str, namespace: &str) -> Result<(OwnedFd, OwnedFd), StdioError> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let path = PathBuf::from(path);
    let (out_r, out_w) = nix::unistd::pipe().map_err(|e| StdioError::Pipe("stdout", e))?;
    let (err_r, err_w) = nix::unistd::pipe().map_err(|e| StdioError::Pipe("stderr", e))?;
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| StdioError::Pipe("ready", e))?;
    let mut command = std::process::Command::new(&path);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) => command.arg(k).arg(v),
            None => command.arg(pair),
        };
    }
    command
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    // SAFETY: only dup2 (async-signal-safe) runs between fork and exec; the
    // targets 3..5 lose close-on-exec, the sources are closed by exec.
    unsafe {
        command.pre_exec(move || {
            for (target, fd) in (3..).zip(fds) {
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn().map_err(|source| StdioError::Binary {
        path: path.clone(),
        source,
    })?;
    drop((out_r, err_r, ready_w));
    wait_closed(ready_r, Duration::from_secs(10))
        .then_some(())
        .ok_or(StdioError::BinaryNotReady(path))?;
    Ok((out_w, err_w))
}

/// Whether the other end of `fd` closed within `timeout`.
fn wait_closed(fd: OwnedFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    n > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_copies_until_the_writer_closes() {
        let path = std::env::temp_dir().join(format!("berth-shim-stdin-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (mut copy, read) = StdinCopy::open(&path).unwrap();
        // No writer yet: poll reports nothing (a read would say end-of-file,
        // which is why the loop reads only when poll says so).
        let (fd, events) = copy.poll_fd();
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 0) }, 0);
        let mut writer = OpenOptions::new().write(true).open(&path).unwrap();
        writer.write_all(b"typed").unwrap();
        drop(writer);
        assert!(copy.ready());
        assert!(!copy.ready());
        drop(copy);
        let mut text = String::new();
        File::from(read).read_to_string(&mut text).unwrap();
        assert_eq!(text, "typed");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_fifo_nobody_reads_opens_without_blocking() {
        let path = std::env::temp_dir().join(format!("berth-shim-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (holder, writer) = open_fifo_writer(&path, "stdout").unwrap();
        let mut writer = File::from(writer);
        writer.write_all(b"hi").unwrap();
        let mut holder = File::from(holder);
        let mut buf = [0u8; 2];
        holder.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        let _ = std::fs::remove_file(&path);
    }
}
