//! A process's stdio: the runtime is run with the process's fifos (or a
//! terminal, whose master arrives on a console socket and is copied to the
//! fifos), and the stdin copies the server's loop polls.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::container::Container;
use super::process::Process;
use super::TaskError;
use crate::console::{self, ConsoleSocket};
use crate::stdio;

/// How long the runtime may take to send a terminal.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Where console sockets live: a short path (sun_path holds 108 bytes).
const CONSOLE_DIR: &str = "/run/berth-shim";

fn read_pid(path: &Path) -> Result<u32, TaskError> {
    let error = |source| TaskError::PidFile {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(error)?;
    text.trim().parse().map_err(|_| {
        error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{text:?} is not a pid"),
        ))
    })
}

/// The runtime made `process`: it keeps what holds its stdio open, and
/// its pid from `pid_file`. No exit can be missed here: the loop reaps only
/// between requests, so the pid is known before its exit can be collected.
fn adopt(process: &mut Process, opened: stdio::Opened, pid_file: &Path) -> Result<(), TaskError> {
    process.holders = opened.holders;
    process.stdin = opened.stdin;
    process.pid = read_pid(pid_file)?;
    Ok(())
}

/// Gives `opened`'s descriptors to the runtime as its (and so the
/// container's) stdin, stdout and stderr.
fn give_stdio(command: &mut Command, opened: &mut stdio::Opened) {
    let mut take = |i: usize| opened.child[i].take().map_or_else(Stdio::null, Stdio::from);
    command.stdin(take(0)).stdout(take(1)).stderr(take(2));
}

impl Container {
    /// A fresh name in the bundle for a file handed to the runtime.
    pub(super) fn next_file(&mut self, what: &str) -> PathBuf {
        self.counter += 1;
        self.bundle
            .join(format!(".berth-shim-{what}-{}", self.counter))
    }

    /// Runs `create` or `exec` (`args`, the container id appended) for
    /// `process` with its stdio or terminal and records the pid the runtime
    /// wrote to `pid_file`.
    pub(super) fn run_process(
        &self,
        process: &mut Process,
        args: Vec<&str>,
        pid_file: &Path,
    ) -> Result<(), TaskError> {
        let runtime = &self.runtime;
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        let socket = if process.paths.terminal {
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(CONSOLE_DIR);
            Some(ConsoleSocket::new(Path::new(CONSOLE_DIR))?)
        } else {
            None
        };
        if let Some(socket) = &socket {
            args.push("--console-socket".into());
            args.push(socket.path.to_string_lossy().into_owned());
        }
        args.push(self.id.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let (None, Some(forkable)) = (&socket, runtime.forkable(&args)) {
            let mut opened = stdio::open(&process.paths, &self.id, &self.namespace)?;
            runtime.run_forked(forkable, &args, std::mem::take(&mut opened.child))?;
            return adopt(process, opened, pid_file);
        }
        let mark = runtime.log_len();
        let mut command = runtime.command(&args);
        // The runtime's stdio becomes the container's; its own messages go to --log.
        let mut opened = stdio::Opened::default();
        if socket.is_none() {
            opened = stdio::open(&process.paths, &self.id, &self.namespace)?;
            give_stdio(&mut command, &mut opened);
        } else {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command.spawn().map_err(|e| runtime.spawn_error(e));
        // Our copies of the container's ends close here, spawned or not.
        drop(command);
        let mut child = child?;
        if let Some(socket) = &socket {
            let master =
                socket.receive(CONSOLE_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_))));
            match master {
                Ok(master) => {
                    let closed = Arc::new(AtomicBool::new(false));
                    process.console_drained = console::start_copies(
                        &master,
                        &process.paths.stdin,
                        &process.paths.stdout,
                        closed.clone(),
                    )?;
                    process.stdin_closed = Some(closed);
                    process.console = Some(master);
                }
                Err(err) => {
                    // The runtime's own failure explains more than the timeout.
                    runtime.finish(&args, mark, child)?;
                    return Err(err.into());
                }
            }
        }
        runtime.finish(&args, mark, child)?;
        adopt(process, opened, pid_file)
    }

    fn processes(&self) -> impl Iterator<Item = &Process> {
        std::iter::once(&self.init).chain(self.execs.values())
    }

    /// This container's stdin copies to poll: (exec id, fd, events).
    pub fn stdin_fds(&self) -> impl Iterator<Item = (&str, i32, i16)> {
        self.processes().filter_map(|p| {
            let (fd, events) = p.stdin.as_ref()?.poll_fd();
            Some((p.exec_id.as_str(), fd, events))
        })
    }

    /// A stdin copy's descriptor is ready.
    pub fn stdin_ready(&mut self, exec_id: &str) {
        if let Ok(process) = self.process_mut(exec_id) {
            if let Some(copy) = process.stdin.as_mut() {
                if !copy.ready() {
                    process.stdin = None;
                }
            }
        }
    }
}
