//! A container's processes: its init (exec id "") and its execs, their
//! phases, and the RPCs that address one process: Exec, Kill, Wait,
//! CloseIO, ResizePty, and the reaping of an exit.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use containerd_shim_protos::api::{
    CloseIORequest, Empty, ExecProcessRequest, KillRequest, ResizePtyRequest, WaitRequest,
    WaitResponse,
};
use containerd_shim_protos::events::task::TaskExecAdded;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;

use super::container::Container;
use super::notify::{Notify, ReplyTo};
use super::TaskError;
use crate::console;
use crate::events::Event;
use crate::runtime::RuntimeError;
use crate::stdio::{self, Paths};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running,
    Exited { status: u32, at: (i64, i32) },
}

pub struct Process {
    pub exec_id: String,
    pub pid: u32,
    pub phase: Phase,
    pub paths: Paths,
    /// The exec's process spec (JSON), until it is started.
    pub spec: Vec<u8>,
    /// Fifo holders, dropped at exit so the daemon sees end-of-file.
    pub holders: Vec<OwnedFd>,
    pub console: Option<OwnedFd>,
    /// The terminal's output copy, waited for at exit (see `mark_exited`).
    pub console_drained: Option<console::Drained>,
    pub stdin: Option<stdio::StdinCopy>,
    /// Set by CloseIO for a terminal's stdin copy (shared with its thread).
    pub stdin_closed: Option<Arc<AtomicBool>>,
    pub waiters: Vec<ReplyTo>,
}

/// How long an exit waits for its terminal's last output to be copied.
const CONSOLE_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_millis(250);

pub fn now() -> (i64, i32) {
    let ts = Timestamp::now();
    (ts.seconds, ts.nanos)
}

impl Process {
    pub fn new(exec_id: &str, paths: Paths) -> Process {
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            phase: Phase::Created,
            paths,
            spec: Vec::new(),
            holders: Vec::new(),
            console: None,
            console_drained: None,
            stdin: None,
            stdin_closed: None,
            waiters: Vec::new(),
        }
    }

    /// The exit status and time, or 0 and none while it has not exited.
    pub fn exit(&self) -> (u32, MessageField<Timestamp>) {
        match self.phase {
            Phase::Exited { status, at } => {
                let mut ts = Timestamp::new();
                (ts.seconds, ts.nanos) = at;
                (status, MessageField::some(ts))
            }
            _ => (0, MessageField::none()),
        }
    }

    /// Marks the process exited; our fifo holders go, so the daemon sees
    /// end-of-file once the container's own descriptors are closed too.
    pub fn mark_exited(&mut self, status: u32) {
        self.phase = Phase::Exited { status, at: now() };
        self.holders.clear();
        self.stdin = None;
        // What the process wrote last to its terminal reaches the stdout
        // fifo before its exit is told: a client stops reading at the exit.
        // Bounded: a process it left behind may hold the terminal open.
        if let Some(drained) = self.console_drained.take() {
            drained.wait(CONSOLE_DRAIN_LIMIT);
        }
    }
}

fn no_exec(id: &str, exec_id: &str) -> TaskError {
    TaskError::NoExec {
        id: id.to_string(),
        exec_id: exec_id.to_string(),
    }
}

impl Container {
    pub(super) fn process(&self, exec_id: &str) -> Result<&Process, TaskError> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| no_exec(&self.id, exec_id))
    }

    pub(super) fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process, TaskError> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| no_exec(&self.id, exec_id))
    }

    pub fn exec(
        &mut self,
        req: ExecProcessRequest,
        notify: &mut Notify,
    ) -> Result<Empty, TaskError> {
        if self.init.phase != Phase::Running {
            return Err(TaskError::NotRunning(req.id));
        }
        if self.execs.contains_key(&req.exec_id) {
            return Err(TaskError::ExecExists {
                id: req.id,
                exec_id: req.exec_id,
            });
        }
        let paths = Paths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let mut process = Process::new(&req.exec_id, paths);
        // containerd encodes the OCI process spec as JSON inside the Any.
        process.spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        self.execs.insert(req.exec_id.clone(), process);
        let mut event = TaskExecAdded::new();
        event.container_id = req.id;
        event.exec_id = req.exec_id;
        notify.publish(Event::ExecAdded(event));
        Ok(Empty::new())
    }

    /// Runs the runtime's `exec` for a created exec; its pid.
    pub(super) fn start_exec(
        &mut self,
        exec_id: &str,
        notify: &mut Notify,
    ) -> Result<u32, TaskError> {
        let spec_file = self.next_file("process.json");
        let pid_file = self.next_file("exec.pid");
        let Some(mut process) = self.execs.remove(exec_id) else {
            return Err(no_exec(&self.id, exec_id));
        };
        let result = crate::write_private(&spec_file, &process.spec)
            .map_err(|source| TaskError::Write {
                path: spec_file.clone(),
                source,
            })
            .and_then(|()| {
                let spec_arg = spec_file.to_string_lossy().into_owned();
                let pid_arg = pid_file.to_string_lossy().into_owned();
                let mut args = vec![
                    "exec",
                    "--detach",
                    "--process",
                    &spec_arg,
                    "--pid-file",
                    &pid_arg,
                ];
                if process.paths.terminal {
                    args.push("--tty");
                }
                self.run_process(&mut process, args, &pid_file)
            });
        let _ = std::fs::remove_file(&spec_file);
        let _ = std::fs::remove_file(&pid_file);
        process.spec = Vec::new();
        let pid = process.pid;
        match result {
            Ok(()) => process.phase = Phase::Running,
            Err(_) => {
                // A failed exec never ran: its parked Waits (containerd waits
                // before it starts) hear 255, and Delete still finds it.
                process.phase = Phase::Exited {
                    status: 255,
                    at: now(),
                };
                notify.answer_waits(&mut process);
            }
        }
        self.execs.insert(exec_id.to_string(), process);
        result?;
        Ok(pid)
    }

    pub fn kill(&mut self, req: KillRequest, _: &mut Notify) -> Result<Empty, TaskError> {
        let process = self.process(&req.exec_id)?;
        if matches!(process.phase, Phase::Exited { .. }) {
            return Err(TaskError::Finished);
        }
        if req.exec_id.is_empty() {
            let signal = req.signal.to_string();
            let mut args = vec!["kill"];
            if req.all {
                args.push("--all");
            }
            args.extend([req.id.as_str(), signal.as_str()]);
            match self.runtime.output(&args, None) {
                Ok(_) => {}
                Err(RuntimeError::Failed { message, .. })
                    if message.contains("not running") || message.contains("no such process") =>
                {
                    return Err(TaskError::Finished)
                }
                Err(err) => return Err(err.into()),
            }
        } else {
            if process.pid == 0 {
                return Err(TaskError::NotRunning(req.exec_id));
            }
            let pid = nix::unistd::Pid::from_raw(process.pid as i32);
            let signal = nix::sys::signal::Signal::try_from(req.signal as i32).ok();
            nix::sys::signal::kill(pid, signal).map_err(|_| TaskError::Finished)?;
        }
        Ok(Empty::new())
    }

    /// The exit, or None when the Wait is parked until the process exits.
    pub fn wait(
        &mut self,
        req: WaitRequest,
        reply_to: ReplyTo,
    ) -> Result<Option<WaitResponse>, TaskError> {
        let process = self.process_mut(&req.exec_id)?;
        if let Phase::Exited { .. } = process.phase {
            let mut response = WaitResponse::new();
            (response.exit_status, response.exited_at) = process.exit();
            return Ok(Some(response));
        }
        process.waiters.push(reply_to);
        Ok(None)
    }

    pub fn resize_pty(
        &mut self,
        req: ResizePtyRequest,
        _: &mut Notify,
    ) -> Result<Empty, TaskError> {
        let process = self.process(&req.exec_id)?;
        let console = process
            .console
            .as_ref()
            .ok_or_else(|| TaskError::NoTerminal(req.exec_id.clone()))?;
        console::resize(console, req.width, req.height)?;
        Ok(Empty::new())
    }

    pub fn close_io(&mut self, req: CloseIORequest, _: &mut Notify) -> Result<Empty, TaskError> {
        let process = self.process_mut(&req.exec_id)?;
        if req.stdin {
            if let Some(closed) = &process.stdin_closed {
                closed.store(true, Ordering::Relaxed);
            }
            // The container sees end-of-file once its pipe's writer is gone.
            process.stdin = None;
        }
        Ok(Empty::new())
    }

    /// A child was reaped with `status` (128+signal for a signal): if it is
    /// one of this container's processes, marks it exited, publishes its
    /// exit and answers its parked Waits. False if it is not ours.
    pub fn reaped(&mut self, pid: u32, status: u32, notify: &mut Notify) -> bool {
        let process = if self.init.pid == pid {
            &mut self.init
        } else {
            match self
                .execs
                .values_mut()
                .find(|p| p.pid == pid && p.phase == Phase::Running)
            {
                Some(process) => process,
                None => return false,
            }
        };
        if !matches!(process.phase, Phase::Exited { .. }) {
            process.mark_exited(status);
            notify.exited(&self.id, process);
        }
        true
    }

    /// Forgets the parked Waits of a connection that went away.
    pub fn disconnected(&mut self, conn: u64) {
        for process in std::iter::once(&mut self.init).chain(self.execs.values_mut()) {
            process.waiters.retain(|(c, _)| *c != conn);
        }
    }
}
