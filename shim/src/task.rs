//! The Task service: one container (its init) and its exec'd processes.
//!
//! Every RPC runs to completion on the server's one thread, except `Wait`,
//! which is parked until its process is reaped. Events are queued in the
//! order things happen here, which is the order containerd needs: create,
//! start, exit (only once reaped, after start returned), delete.
//!
//! containerd's call sequence for `ctr run --rm`: Create → Connect → Start
//! → Wait → State → Delete → Shutdown; for `ctr task exec`: Exec → Start →
//! Wait → CloseIO → Delete, each with the exec id.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ProcessInfo, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, Status,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::ProcessDetails;
use ttrpc::proto::Code;

use crate::console::{self, ConsoleError, ConsoleSocket};
use crate::events::{Event, Publisher};
use crate::mount::{self, MountError};
use crate::oom::OomWatch;
use crate::options::{Options, OptionsError};
use crate::runtime::{Runtime, RuntimeError};
use crate::stats::{self, StatsError};
use crate::stdio::{self, Paths, StdioError};
use crate::wire::RpcError;

/// How long the runtime may take to send a terminal.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Where console sockets live: a short path (sun_path holds 108 bytes).
const CONSOLE_DIR: &str = "/run/berth-shim";

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {0} is not created in this shim")]
    NoTask(String),
    #[error("task {0} already exists in this shim")]
    Exists(String),
    #[error("bundle {0} has no config.json")]
    NoConfig(PathBuf),
    #[error("exec {exec_id:?} not found in task {id}")]
    NoExec { id: String, exec_id: String },
    #[error("exec {exec_id:?} already exists in task {id}")]
    ExecExists { id: String, exec_id: String },
    #[error("task {0} is not running")]
    NotRunning(String),
    #[error("process {0:?} must be stopped before it is deleted")]
    StillRunning(String),
    #[error("process {0:?} already started")]
    AlreadyStarted(String),
    #[error("process already finished")]
    Finished,
    #[error("process {0:?} has no terminal")]
    NoTerminal(String),
    #[error("cannot read pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        source: protobuf::Error,
    },
    #[error("cannot encode the response: {0}")]
    Encode(protobuf::Error),
    #[error("checkpoint is not supported by berth's shim")]
    Checkpoint,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Stdio(#[from] StdioError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Stats(#[from] StatsError),
}

impl From<TaskError> for RpcError {
    fn from(err: TaskError) -> RpcError {
        let code = match &err {
            TaskError::NoTask(_) | TaskError::NoExec { .. } | TaskError::Finished => {
                Code::NOT_FOUND
            }
            TaskError::Exists(_) | TaskError::ExecExists { .. } => Code::ALREADY_EXISTS,
            TaskError::NoConfig(_)
            | TaskError::NotRunning(_)
            | TaskError::StillRunning(_)
            | TaskError::AlreadyStarted(_)
            | TaskError::NoTerminal(_) => Code::FAILED_PRECONDITION,
            TaskError::Decode { .. } => Code::INVALID_ARGUMENT,
            TaskError::Checkpoint => Code::UNIMPLEMENTED,
            TaskError::Encode(_) => Code::INTERNAL,
            _ => Code::UNKNOWN,
        };
        RpcError::new(code, err.to_string())
    }
}

/// Where a parked reply goes: connection token and ttrpc stream id.
pub type ReplyTo = (u64, u32);

/// What the loop does with a request's outcome.
pub enum Reply {
    Now(Result<Vec<u8>, RpcError>),
    /// Answered later (a Wait on a running process).
    Parked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    Exited { status: u32, at: (i64, i32) },
}

struct Process {
    exec_id: String,
    pid: u32,
    phase: Phase,
    paths: Paths,
    /// The exec's process spec (JSON), until it is started.
    spec: Vec<u8>,
    /// Fifo holders, dropped at exit so the daemon sees end-of-file.
    holders: Vec<OwnedFd>,
    console: Option<OwnedFd>,
    stdin: Option<stdio::StdinCopy>,
    /// Set by CloseIO for a terminal's stdin copy.
    stdin_closed: Arc<AtomicBool>,
    waiters: Vec<ReplyTo>,
}

impl Process {
    fn new(exec_id: &str, paths: Paths) -> Process {
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            phase: Phase::Created,
            paths,
            spec: Vec::new(),
            holders: Vec::new(),
            console: None,
            stdin: None,
            stdin_closed: Arc::new(AtomicBool::new(false)),
            waiters: Vec::new(),
        }
    }

    fn exit(&self) -> (u32, MessageField<Timestamp>) {
        match self.phase {
            Phase::Exited { status, at } => {
                let mut ts = Timestamp::new();
                (ts.seconds, ts.nanos) = at;
                (status, MessageField::some(ts))
            }
            _ => (0, MessageField::none()),
        }
    }
}

/// The shim's one container.
pub struct Task {
    namespace: String,
    id: String,
    bundle: PathBuf,
    options: Options,
    runtime: Option<Runtime>,
    init: Option<Process>,
    execs: HashMap<String, Process>,
    paused: bool,
    /// Answers to parked Waits, for the loop to send.
    outbox: Vec<(ReplyTo, Vec<u8>)>,
    events: Publisher,
    pub oom: Option<OomWatch>,
    /// Set by Shutdown: the server stops after answering.
    pub shutdown: bool,
    counter: u64,
}

fn now() -> (i64, i32) {
    let ts = Timestamp::now();
    (ts.seconds, ts.nanos)
}

fn encode<M: Message>(result: Result<M, TaskError>) -> Reply {
    Reply::Now(
        result
            .and_then(|m| m.write_to_bytes().map_err(TaskError::Encode))
            .map_err(RpcError::from),
    )
}

fn decode<M: Message>(payload: &[u8]) -> Result<M, TaskError> {
    M::parse_from_bytes(payload).map_err(|source| TaskError::Decode {
        what: "request",
        source,
    })
}

/// An encoded WaitResponse with `process`'s exit (0 and no time if none).
fn wait_response(process: Option<&Process>) -> Vec<u8> {
    let mut response = WaitResponse::new();
    if let Some(process) = process {
        (response.exit_status, response.exited_at) = process.exit();
    }
    response.write_to_bytes().unwrap_or_default()
}

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

/// Gives `opened`'s descriptors to the runtime as its (and so the
/// container's) stdin, stdout and stderr.
fn give_stdio(command: &mut Command, opened: &mut stdio::Opened) {
    let mut take = |i: usize| opened.child[i].take().map_or_else(Stdio::null, Stdio::from);
    command.stdin(take(0)).stdout(take(1)).stderr(take(2));
}

impl Task {
    pub fn new(
        namespace: &str,
        id: &str,
        bundle: &Path,
        options: Options,
        events: Publisher,
    ) -> Task {
        Task {
            namespace: namespace.to_string(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            options,
            runtime: None,
            init: None,
            execs: HashMap::new(),
            paused: false,
            outbox: Vec::new(),
            events,
            oom: None,
            shutdown: false,
            counter: 0,
        }
    }

    /// Answers one Task RPC.
    pub fn handle(&mut self, method: &str, payload: &[u8], reply_to: ReplyTo) -> Reply {
        match method {
            "Create" => encode(decode(payload).and_then(|r| self.create(r))),
            "Start" => encode(decode(payload).and_then(|r| self.start(r))),
            "Delete" => encode(decode(payload).and_then(|r| self.delete(r))),
            "State" => encode(decode(payload).and_then(|r| self.state(r))),
            "Pids" => encode(decode(payload).and_then(|r| self.pids(r))),
            "Pause" => encode(decode(payload).and_then(|r| self.pause(r))),
            "Resume" => encode(decode(payload).and_then(|r| self.resume(r))),
            "Kill" => encode(decode(payload).and_then(|r| self.kill(r))),
            "Exec" => encode(decode(payload).and_then(|r| self.exec(r))),
            "ResizePty" => encode(decode(payload).and_then(|r| self.resize_pty(r))),
            "CloseIO" => encode(decode(payload).and_then(|r| self.close_io(r))),
            "Update" => encode(decode(payload).and_then(|r| self.update(r))),
            "Stats" => encode(decode(payload).and_then(|r| self.stats(r))),
            "Connect" => encode(decode(payload).and_then(|r| self.connect(r))),
            "Shutdown" => encode(decode(payload).and_then(|r| self.shutdown(r))),
            "Checkpoint" => encode::<Empty>(Err(TaskError::Checkpoint)),
            "Wait" => match decode(payload).and_then(|r| self.wait(r, reply_to)) {
                Ok(Some(response)) => encode(Ok(response)),
                Ok(None) => Reply::Parked,
                Err(err) => encode::<Empty>(Err(err)),
            },
            _ => Reply::Now(Err(RpcError::new(
                Code::UNIMPLEMENTED,
                format!("method containerd.task.v2.Task/{method} is not implemented"),
            ))),
        }
    }

    fn runtime(&self) -> Result<&Runtime, TaskError> {
        self.runtime
            .as_ref()
            .ok_or_else(|| TaskError::NoTask(self.id.clone()))
    }

    fn check_id(&self, id: &str) -> Result<(), TaskError> {
        if self.init.is_none() || id != self.id {
            return Err(TaskError::NoTask(id.to_string()));
        }
        Ok(())
    }

    fn process(&self, id: &str, exec_id: &str) -> Result<&Process, TaskError> {
        self.check_id(id)?;
        let found = if exec_id.is_empty() {
            self.init.as_ref()
        } else {
            self.execs.get(exec_id)
        };
        found.ok_or_else(|| TaskError::NoExec {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
        })
    }

    fn process_mut(&mut self, id: &str, exec_id: &str) -> Result<&mut Process, TaskError> {
        self.check_id(id)?;
        let found = if exec_id.is_empty() {
            self.init.as_mut()
        } else {
            self.execs.get_mut(exec_id)
        };
        found.ok_or_else(|| TaskError::NoExec {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
        })
    }

    fn next_file(&mut self, what: &str) -> PathBuf {
        self.counter += 1;
        self.bundle
            .join(format!(".berth-shim-{what}-{}", self.counter))
    }

    fn create(&mut self, req: CreateTaskRequest) -> Result<CreateTaskResponse, TaskError> {
        if self.init.is_some() {
            return Err(TaskError::Exists(req.id));
        }
        let bundle = PathBuf::from(&req.bundle);
        if !bundle.join("config.json").is_file() {
            return Err(TaskError::NoConfig(bundle));
        }
        self.id = req.id.clone();
        self.bundle = bundle.clone();
        if let Some(options) = req.options.as_ref() {
            self.options.apply(options)?;
        }
        self.options.save(&bundle)?;
        let runtime = Runtime::new(self.options.clone(), &bundle);
        let rootfs = bundle.join("rootfs");
        mount::mount_all(&req.rootfs, &rootfs)?;
        let paths = Paths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mut process = Process::new("", paths);
        match self.create_init(&runtime, &mut process) {
            Ok(()) => {}
            Err(err) => {
                // Whatever the runtime left of the container goes too.
                let _ = runtime.output(&["delete", "--force", &req.id], None);
                mount::unmount_all(&rootfs);
                return Err(err);
            }
        }
        let pid = process.pid;
        self.runtime = Some(runtime);
        self.init = Some(process);
        // Watched from before Start: a container that outgrows its limit at
        // once is OOM-killed within milliseconds of starting.
        match OomWatch::new(pid) {
            Ok(watch) => self.oom = watch,
            Err(err) => crate::log(&err),
        }
        let mut io = TaskIO::new();
        io.stdin = req.stdin;
        io.stdout = req.stdout;
        io.stderr = req.stderr;
        io.terminal = req.terminal;
        let mut event = TaskCreate::new();
        event.container_id = req.id;
        event.bundle = req.bundle;
        event.rootfs = req.rootfs;
        event.io = MessageField::some(io);
        event.pid = pid;
        self.events.publish(Event::Create(event));
        let mut response = CreateTaskResponse::new();
        response.pid = pid;
        Ok(response)
    }

    fn create_init(&mut self, runtime: &Runtime, process: &mut Process) -> Result<(), TaskError> {
        let pid_file = self.bundle.join("init.pid");
        let bundle = self.bundle.to_string_lossy().into_owned();
        let pid_arg = pid_file.to_string_lossy().into_owned();
        let mut args = vec!["create", "--bundle", &bundle, "--pid-file", &pid_arg];
        if self.options.no_pivot_root {
            args.push("--no-pivot");
        }
        if self.options.no_new_keyring {
            args.push("--no-new-keyring");
        }
        let id = self.id.clone();
        self.run_process(runtime, process, args, &id, &pid_file)
    }

    /// Runs `create` or `exec` for `process` with its stdio or terminal and
    /// records the pid the runtime wrote.
    fn run_process(
        &mut self,
        runtime: &Runtime,
        process: &mut Process,
        args: Vec<&str>,
        id: &str,
        pid_file: &Path,
    ) -> Result<(), TaskError> {
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
        let socket_path = socket
            .as_ref()
            .map(|s| s.path.to_string_lossy().into_owned());
        if let Some(path) = socket_path {
            args.push("--console-socket".into());
            args.push(path);
        }
        args.push(id.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
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
                    console::start_copies(
                        &master,
                        &process.paths.stdin,
                        &process.paths.stdout,
                        process.stdin_closed.clone(),
                    )?;
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
        process.holders = opened.holders;
        process.stdin = opened.stdin;
        // No exit can be missed here: the loop reaps only between
        // requests, so the pid is known before its exit can be collected.
        process.pid = read_pid(pid_file)?;
        Ok(())
    }

    fn start(&mut self, req: StartRequest) -> Result<StartResponse, TaskError> {
        let process = self.process(&req.id, &req.exec_id)?;
        if process.phase != Phase::Created || (!req.exec_id.is_empty() && process.pid != 0) {
            return Err(TaskError::AlreadyStarted(req.exec_id));
        }
        let runtime = self.runtime()?.clone();
        let pid = if req.exec_id.is_empty() {
            runtime.output(&["start", &req.id], None)?;
            let init = self.process_mut(&req.id, "")?;
            if init.phase == Phase::Created {
                init.phase = Phase::Running;
            }
            let pid = init.pid;
            let mut event = TaskStart::new();
            event.container_id = req.id.clone();
            event.pid = pid;
            self.events.publish(Event::Start(event));
            pid
        } else {
            let pid = self.start_exec(&runtime, &req.id, &req.exec_id)?;
            let mut event = TaskExecStarted::new();
            event.container_id = req.id.clone();
            event.exec_id = req.exec_id.clone();
            event.pid = pid;
            self.events.publish(Event::ExecStarted(event));
            pid
        };
        let mut response = StartResponse::new();
        response.pid = pid;
        Ok(response)
    }

    fn start_exec(&mut self, runtime: &Runtime, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        let spec_file = self.next_file("process.json");
        let pid_file = self.next_file("exec.pid");
        let Some(mut process) = self.execs.remove(exec_id) else {
            return Err(TaskError::NoExec {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
            });
        };
        let result = std::fs::write(&spec_file, &process.spec)
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
                self.run_process(runtime, &mut process, args, id, &pid_file)
            });
        let _ = std::fs::remove_file(&spec_file);
        let _ = std::fs::remove_file(&pid_file);
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
                self.wake(&mut process);
            }
        }
        self.execs.insert(exec_id.to_string(), process);
        result?;
        Ok(pid)
    }

    fn delete(&mut self, req: DeleteRequest) -> Result<DeleteResponse, TaskError> {
        let process = self.process(&req.id, &req.exec_id)?;
        if process.phase == Phase::Running {
            return Err(TaskError::StillRunning(req.exec_id));
        }
        let (status, at) = process.exit();
        let pid = process.pid;
        let mut response = DeleteResponse::new();
        response.pid = pid;
        response.exit_status = status;
        response.exited_at = at.clone();
        if !req.exec_id.is_empty() {
            self.execs.remove(&req.exec_id);
            return Ok(response);
        }
        let runtime = self.runtime()?.clone();
        runtime.output(&["delete", "--force", &req.id], None)?;
        mount::unmount_all(&self.bundle.join("rootfs"));
        // Whoever still waits (a task deleted before it ran) is answered.
        let mut gone: Vec<Process> = self.init.take().into_iter().collect();
        gone.extend(self.execs.drain().map(|(_, p)| p));
        for process in &mut gone {
            self.wake(process);
        }
        self.oom = None;
        let mut event = TaskDelete::new();
        event.container_id = req.id.clone();
        event.id = req.id;
        event.pid = pid;
        event.exit_status = status;
        event.exited_at = at;
        self.events.publish(Event::Delete(event));
        Ok(response)
    }

    fn state(&mut self, req: StateRequest) -> Result<StateResponse, TaskError> {
        let paused = self.paused;
        let bundle = self.bundle.to_string_lossy().into_owned();
        let process = self.process(&req.id, &req.exec_id)?;
        let mut r = StateResponse::new();
        r.id = req.id;
        r.exec_id = req.exec_id.clone();
        r.bundle = bundle;
        r.pid = process.pid;
        r.status = match process.phase {
            Phase::Created => Status::CREATED,
            Phase::Running if paused && req.exec_id.is_empty() => Status::PAUSED,
            Phase::Running => Status::RUNNING,
            Phase::Exited { .. } => Status::STOPPED,
        }
        .into();
        r.stdin = process.paths.stdin.clone();
        r.stdout = process.paths.stdout.clone();
        r.stderr = process.paths.stderr.clone();
        r.terminal = process.paths.terminal;
        (r.exit_status, r.exited_at) = process.exit();
        Ok(r)
    }

    fn pids(&mut self, req: PidsRequest) -> Result<PidsResponse, TaskError> {
        self.check_id(&req.id)?;
        let out = self
            .runtime()?
            .output(&["ps", "--format", "json", &req.id], None)?;
        let pids: Vec<u32> = serde_json::from_slice(&out).unwrap_or_default();
        let mut response = PidsResponse::new();
        for pid in pids {
            let mut info = ProcessInfo::new();
            info.pid = pid;
            if let Some(exec) = self.execs.values().find(|p| p.pid == pid) {
                let mut details = ProcessDetails::new();
                details.exec_id = exec.exec_id.clone();
                let mut any = Any::new();
                any.type_url = "containerd.runc.v1.ProcessDetails".into();
                any.value = details.write_to_bytes().unwrap_or_default();
                info.info = MessageField::some(any);
            }
            response.processes.push(info);
        }
        Ok(response)
    }

    fn pause(&mut self, req: PauseRequest) -> Result<Empty, TaskError> {
        self.check_id(&req.id)?;
        self.runtime()?.output(&["pause", &req.id], None)?;
        self.paused = true;
        let mut event = TaskPaused::new();
        event.container_id = req.id;
        self.events.publish(Event::Paused(event));
        Ok(Empty::new())
    }

    fn resume(&mut self, req: ResumeRequest) -> Result<Empty, TaskError> {
        self.check_id(&req.id)?;
        self.runtime()?.output(&["resume", &req.id], None)?;
        self.paused = false;
        let mut event = TaskResumed::new();
        event.container_id = req.id;
        self.events.publish(Event::Resumed(event));
        Ok(Empty::new())
    }

    fn kill(&mut self, req: KillRequest) -> Result<Empty, TaskError> {
        let process = self.process(&req.id, &req.exec_id)?;
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
            match self.runtime()?.output(&args, None) {
                Ok(_) => {}
                Err(RuntimeError::Failed { message, .. })
                    if message.contains("not running") || message.contains("no such process") =>
                {
                    return Err(TaskError::Finished)
                }
                Err(err) => return Err(err.into()),
            }
        } else {
            let pid = nix::unistd::Pid::from_raw(process.pid as i32);
            let signal = nix::sys::signal::Signal::try_from(req.signal as i32).ok();
            if process.pid == 0 {
                return Err(TaskError::NotRunning(req.exec_id));
            }
            nix::sys::signal::kill(pid, signal).map_err(|_| TaskError::Finished)?;
        }
        Ok(Empty::new())
    }

    fn exec(&mut self, req: ExecProcessRequest) -> Result<Empty, TaskError> {
        let init = self.process(&req.id, "")?;
        if init.phase != Phase::Running {
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
        self.events.publish(Event::ExecAdded(event));
        Ok(Empty::new())
    }

    fn resize_pty(&mut self, req: ResizePtyRequest) -> Result<Empty, TaskError> {
        let process = self.process(&req.id, &req.exec_id)?;
        let console = process
            .console
            .as_ref()
            .ok_or_else(|| TaskError::NoTerminal(req.exec_id.clone()))?;
        console::resize(console, req.width, req.height)?;
        Ok(Empty::new())
    }

    fn close_io(&mut self, req: CloseIORequest) -> Result<Empty, TaskError> {
        let process = self.process_mut(&req.id, &req.exec_id)?;
        if req.stdin {
            process.stdin_closed.store(true, Ordering::Relaxed);
            // The container sees end-of-file once its pipe's writer is gone.
            process.stdin = None;
        }
        Ok(Empty::new())
    }

    fn update(&mut self, req: UpdateTaskRequest) -> Result<Empty, TaskError> {
        self.check_id(&req.id)?;
        // containerd encodes the OCI LinuxResources as JSON inside the Any.
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        self.runtime()?
            .output(&["update", "--resources", "-", &req.id], Some(&resources))?;
        Ok(Empty::new())
    }

    fn wait(
        &mut self,
        req: WaitRequest,
        reply_to: ReplyTo,
    ) -> Result<Option<WaitResponse>, TaskError> {
        let process = self.process_mut(&req.id, &req.exec_id)?;
        if let Phase::Exited { .. } = process.phase {
            let mut response = WaitResponse::new();
            (response.exit_status, response.exited_at) = process.exit();
            return Ok(Some(response));
        }
        process.waiters.push(reply_to);
        Ok(None)
    }

    fn stats(&mut self, req: StatsRequest) -> Result<StatsResponse, TaskError> {
        self.check_id(&req.id)?;
        let out = self
            .runtime()?
            .output(&["events", "--stats", &req.id], None)?;
        let line = out.split(|b| *b == b'\n').next().unwrap_or_default();
        let mut response = StatsResponse::new();
        response.stats = MessageField::some(stats::for_host(line)?);
        Ok(response)
    }

    fn connect(&mut self, _req: ConnectRequest) -> Result<ConnectResponse, TaskError> {
        let mut response = ConnectResponse::new();
        response.shim_pid = std::process::id();
        response.task_pid = self.init.as_ref().map_or(0, |p| p.pid);
        response.version = crate::VERSION.to_string();
        Ok(response)
    }

    fn shutdown(&mut self, req: ShutdownRequest) -> Result<Empty, TaskError> {
        // A shim with a live container stays, unless told `now`.
        if self.init.is_none() || req.now {
            self.shutdown = true;
        }
        Ok(Empty::new())
    }

    /// A child was reaped with `status` (128+signal for a signal): marks the
    /// process exited, publishes its exit and answers its parked Waits.
    /// Other children (a `binary://` logger) need nothing.
    pub fn reaped(&mut self, pid: u32, status: u32) {
        let exec_id = if self.init.as_ref().is_some_and(|p| p.pid == pid) {
            Some(String::new())
        } else {
            self.execs
                .values()
                .find(|p| p.pid == pid && p.phase == Phase::Running)
                .map(|p| p.exec_id.clone())
        };
        let Some(exec_id) = exec_id else { return };
        let id = self.id.clone();
        let Ok(process) = self.process_mut(&id, &exec_id) else {
            return;
        };
        if matches!(process.phase, Phase::Exited { .. }) {
            return;
        }
        process.phase = Phase::Exited { status, at: now() };
        // Our fifo holders go: the daemon sees end-of-file once the
        // container's own descriptors are closed too.
        process.holders.clear();
        process.stdin = None;
        self.publish_exit(&exec_id)
    }

    fn publish_exit(&mut self, exec_id: &str) {
        let id = self.id.clone();
        let Ok(process) = self.process_mut(&id, exec_id) else {
            return;
        };
        let pid = process.pid;
        let (status, at) = process.exit();
        let payload = wait_response(Some(process));
        let waiters = std::mem::take(&mut process.waiters);
        self.outbox
            .extend(waiters.into_iter().map(|w| (w, payload.clone())));
        let mut event = TaskExit::new();
        event.container_id = id.clone();
        event.id = if exec_id.is_empty() {
            id
        } else {
            exec_id.to_string()
        };
        event.pid = pid;
        event.exit_status = status;
        event.exited_at = at;
        self.events.publish(Event::Exit(event));
    }

    /// Answers `process`'s parked Waits with its exit as it stands.
    fn wake(&mut self, process: &mut Process) {
        let payload = wait_response(Some(process));
        self.outbox
            .extend(process.waiters.drain(..).map(|w| (w, payload.clone())));
    }

    /// Answers for parked Waits, to send now.
    pub fn take_outbox(&mut self) -> Vec<(ReplyTo, Vec<u8>)> {
        std::mem::take(&mut self.outbox)
    }

    /// The OOM eventfd fired.
    pub fn oom_fired(&mut self) {
        let Some(watch) = self.oom.as_mut() else {
            return;
        };
        match watch.fired() {
            Some(true) => {
                let mut event = TaskOOM::new();
                event.container_id = self.id.clone();
                self.events.publish(Event::Oom(event));
            }
            Some(false) => {}
            None => self.oom = None,
        }
    }

    /// The stdin copies to poll: (exec id, fd, events).
    pub fn stdin_fds(&self) -> Vec<(String, i32, i16)> {
        let processes = self.init.iter().chain(self.execs.values());
        processes
            .filter_map(|p| {
                let (fd, events) = p.stdin.as_ref()?.poll_fd();
                Some((p.exec_id.clone(), fd, events))
            })
            .collect()
    }

    /// A stdin copy's descriptor is ready.
    pub fn stdin_ready(&mut self, exec_id: &str) {
        let process = if exec_id.is_empty() {
            self.init.as_mut()
        } else {
            self.execs.get_mut(exec_id)
        };
        if let Some(process) = process {
            if let Some(copy) = process.stdin.as_mut() {
                if !copy.ready() {
                    process.stdin = None;
                }
            }
        }
    }

    /// Forgets the parked Waits of a connection that went away.
    pub fn disconnected(&mut self, conn: u64) {
        let processes = self.init.iter_mut().chain(self.execs.values_mut());
        for process in processes {
            process.waiters.retain(|(c, _)| *c != conn);
        }
    }

    /// Waits for the queued events to go out (before the shim exits).
    pub fn flush_events(&self) {
        self.events.flush(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        let events = Publisher::start(String::new(), "test".into()).unwrap();
        Task::new(
            "test",
            "c1",
            Path::new("/nonexistent"),
            Options::defaults("test"),
            events,
        )
    }

    fn error(reply: Reply) -> RpcError {
        match reply {
            Reply::Now(Err(err)) => err,
            Reply::Now(Ok(_)) => panic!("expected an error"),
            Reply::Parked => panic!("expected an answer"),
        }
    }

    #[test]
    fn unknown_methods_and_checkpoint_are_unimplemented() {
        let mut task = task();
        let err = error(task.handle("Frobnicate", &[], (1, 1)));
        assert_eq!(err.code, Code::UNIMPLEMENTED);
        assert!(err.message.contains("Task/Frobnicate"), "{}", err.message);
        let err = error(task.handle("Checkpoint", &[], (1, 3)));
        assert_eq!(err.code, Code::UNIMPLEMENTED);
        assert!(err.message.contains("checkpoint"), "{}", err.message);
    }

    #[test]
    fn rpcs_before_create_say_there_is_no_task() {
        let mut task = task();
        let mut state = StateRequest::new();
        state.id = "c1".into();
        let err = error(task.handle("State", &state.write_to_bytes().unwrap(), (1, 1)));
        assert_eq!(err.code, Code::NOT_FOUND);
        assert_eq!(err.message, "task c1 is not created in this shim");
        let err = error(task.handle("Wait", &state.write_to_bytes().unwrap(), (1, 3)));
        assert_eq!(err.code, Code::NOT_FOUND);
    }

    #[test]
    fn garbage_requests_are_invalid_arguments() {
        let mut task = task();
        let err = error(task.handle("Create", &[0xff, 0xff, 0xff], (1, 1)));
        assert_eq!(err.code, Code::INVALID_ARGUMENT);
    }

    #[test]
    fn create_needs_a_config_json() {
        let mut task = task();
        let dir = std::env::temp_dir().join(format!("berth-shim-task-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut create = CreateTaskRequest::new();
        create.id = "c1".into();
        create.bundle = dir.display().to_string();
        let err = error(task.handle("Create", &create.write_to_bytes().unwrap(), (1, 1)));
        assert_eq!(err.code, Code::FAILED_PRECONDITION);
        assert!(
            err.message.ends_with("has no config.json"),
            "{}",
            err.message
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shutdown_without_a_task_stops_the_shim() {
        let mut task = task();
        assert!(!task.shutdown);
        let reply = task.handle(
            "Shutdown",
            &ShutdownRequest::new().write_to_bytes().unwrap(),
            (1, 1),
        );
        assert!(matches!(reply, Reply::Now(Ok(_))));
        assert!(task.shutdown);
    }
}
