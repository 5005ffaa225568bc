//! One container the shim serves: its bundle, runtime, init and execs, and
//! the RPCs about the container as a whole: Create, Start, Delete, State,
//! Pids, Pause, Resume, Update, Stats.

use std::collections::HashMap;
use std::path::PathBuf;

use containerd_shim_protos::api::{
    CreateTaskRequest, DeleteRequest, DeleteResponse, Empty, PauseRequest, PidsRequest,
    PidsResponse, ProcessInfo, ResumeRequest, StartRequest, StartResponse, StateRequest,
    StateResponse, StatsRequest, StatsResponse, Status, UpdateTaskRequest,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecStarted, TaskIO, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::ProcessDetails;

use super::notify::Notify;
use super::process::{Phase, Process};
use super::TaskError;
use crate::events::Event;
use crate::mount;
use crate::oom::OomWatch;
use crate::options::Options;
use crate::runtime::Runtime;
use crate::stats;
use crate::stdio::Paths;

pub struct Container {
    pub(super) id: String,
    pub(super) namespace: String,
    pub(super) bundle: PathBuf,
    pub(super) runtime: Runtime,
    pub(super) init: Process,
    pub(super) execs: HashMap<String, Process>,
    paused: bool,
    /// The init was started by Create ([`super::Tasks`]'s
    /// `start_at_create`); the first Start only answers with its pid.
    started_at_create: bool,
    pub(super) oom: Option<OomWatch>,
    /// Numbers the files handed to the runtime ([`Container::next_file`]).
    pub(super) counter: u64,
}

impl Container {
    /// Creates the container (`runtime create`, its init stopped before
    /// the user's program) on the rootfs containerd's mounts make; with
    /// `start`, starts it too (`runtime run --detach`). Also returns the
    /// create's event, for [`Container::announce_created`].
    pub fn create(
        namespace: &str,
        req: CreateTaskRequest,
        start: bool,
    ) -> Result<(Container, TaskCreate), TaskError> {
        let bundle = PathBuf::from(&req.bundle);
        if !bundle.join("config.json").is_file() {
            return Err(TaskError::NoConfig(bundle));
        }
        // What `start` was given for this container, then what Create adds.
        let mut options = Options::load(&bundle, namespace);
        if let Some(given) = req.options.as_ref() {
            options.apply(given)?;
        }
        options.save(&bundle)?;
        let rootfs = bundle.join("rootfs");
        mount::mount_all(&req.rootfs, &rootfs)?;
        let paths = Paths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mut container = Container {
            id: req.id.clone(),
            namespace: namespace.to_string(),
            runtime: Runtime::new(options, &bundle),
            bundle,
            init: Process::new("", Paths::default()),
            execs: HashMap::new(),
            paused: false,
            started_at_create: false,
            oom: None,
            counter: 0,
        };
        let mut init = Process::new("", paths);
        if let Err(err) = container.create_init(&mut init, start) {
            // Whatever the runtime left of the container goes too.
            let _ = container.runtime.delete(&req.id);
            mount::unmount_all(&rootfs);
            return Err(err);
        }
        container.init = init;
        // As containerd's own shims do: tools (and tests) find the shim
        // serving a container by it, whichever container started it. Before
        // the answer: the daemon sends no Start after, and a `run -d` that
        // returned must find it.
        let shim_pid = container.bundle.join("shim.pid");
        let _ = crate::write_private(&shim_pid, std::process::id().to_string());
        if start {
            container.init.phase = Phase::Running;
            container.started_at_create = true;
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
        event.pid = container.init.pid;
        Ok((container, event))
    }

    /// What follows a Create once it is answered (the caller's answer
    /// waits for none of it): the OOM watch and the events of the create
    /// (`event`, from [`Container::create`]) and of the start, when
    /// Create started the process. No
    /// exit is reaped before this: the server reaps between requests.
    pub fn announce_created(&mut self, event: TaskCreate, notify: &mut Notify) {
        let pid = self.init.pid;
        // Watched from before Start: a container that outgrows its limit at
        // once is OOM-killed within milliseconds of starting. Started
        // already, it may have been: the kill the cgroup counts is its.
        let mut killed_before_watch = false;
        match OomWatch::new(pid, &self.bundle) {
            Ok(watch) => {
                killed_before_watch =
                    self.started_at_create && watch.as_ref().is_some_and(OomWatch::has_killed);
                self.oom = watch;
            }
            Err(err) => crate::log(&err),
        }
        notify.publish(Event::Create(event));
        if self.started_at_create {
            self.publish_start(notify);
            if killed_before_watch {
                self.publish_oom(notify);
            }
        }
    }

    fn publish_start(&self, notify: &mut Notify) {
        let mut event = TaskStart::new();
        event.container_id = self.id.clone();
        event.pid = self.init.pid;
        notify.publish(Event::Start(event));
    }

    fn publish_oom(&self, notify: &mut Notify) {
        let mut event = containerd_shim_protos::events::task::TaskOOM::new();
        event.container_id = self.id.clone();
        notify.publish(Event::Oom(event));
    }

    /// A container whose init runs as `pid`, as Create leaves it after
    /// Start, without a runtime behind it: for the service's own tests.
    #[cfg(test)]
    pub(super) fn running(id: &str, pid: u32) -> Container {
        let bundle = PathBuf::from("/nonexistent");
        let mut init = Process::new("", Paths::default());
        init.pid = pid;
        init.phase = Phase::Running;
        Container {
            id: id.to_string(),
            namespace: "test".into(),
            runtime: Runtime::new(Options::defaults("test"), &bundle),
            bundle,
            init,
            execs: HashMap::new(),
            paused: false,
            started_at_create: false,
            oom: None,
            counter: 0,
        }
    }

    fn create_init(&mut self, init: &mut Process, start: bool) -> Result<(), TaskError> {
        let pid_file = self.bundle.join("init.pid");
        let bundle = self.bundle.to_string_lossy().into_owned();
        let pid_arg = pid_file.to_string_lossy().into_owned();
        let verb: &[&str] = if start {
            &["run", "--detach"]
        } else {
            &["create"]
        };
        let mut args = verb.to_vec();
        args.extend(["--bundle", &bundle, "--pid-file", &pid_arg]);
        if self.runtime.options.no_pivot_root {
            args.push("--no-pivot");
        }
        if self.runtime.options.no_new_keyring {
            args.push("--no-new-keyring");
        }
        self.run_process(init, args, &pid_file)
    }

    pub fn start(
        &mut self,
        req: StartRequest,
        notify: &mut Notify,
    ) -> Result<StartResponse, TaskError> {
        if req.exec_id.is_empty() && self.started_at_create {
            // Started by Create, and said so: the Start asked for is done
            // (the process may even have ended since).
            self.started_at_create = false;
            let mut response = StartResponse::new();
            response.pid = self.init.pid;
            return Ok(response);
        }
        let process = self.process(&req.exec_id)?;
        if process.phase != Phase::Created || (!req.exec_id.is_empty() && process.pid != 0) {
            return Err(TaskError::AlreadyStarted(req.exec_id));
        }
        let pid = if req.exec_id.is_empty() {
            self.runtime.output(&["start", &req.id], None)?;
            if self.init.phase == Phase::Created {
                self.init.phase = Phase::Running;
            }
            self.publish_start(notify);
            self.init.pid
        } else {
            let pid = self.start_exec(&req.exec_id, notify)?;
            let mut event = TaskExecStarted::new();
            event.container_id = req.id.clone();
            event.exec_id = req.exec_id.clone();
            event.pid = pid;
            notify.publish(Event::ExecStarted(event));
            pid
        };
        let mut response = StartResponse::new();
        response.pid = pid;
        Ok(response)
    }

    /// Deletes a stopped exec, or with the init the whole container (the
    /// caller then forgets it).
    pub fn delete(
        &mut self,
        req: DeleteRequest,
        notify: &mut Notify,
    ) -> Result<DeleteResponse, TaskError> {
        let process = self.process(&req.exec_id)?;
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
        self.runtime.delete(&req.id)?;
        mount::unmount_all(&self.bundle.join("rootfs"));
        // Whoever still waits (a task deleted before it ran) is answered.
        notify.answer_waits(&mut self.init);
        for process in self.execs.values_mut() {
            notify.answer_waits(process);
        }
        self.execs.clear();
        self.oom = None;
        let mut event = TaskDelete::new();
        event.container_id = req.id.clone();
        event.id = req.id;
        event.pid = pid;
        event.exit_status = status;
        event.exited_at = at;
        notify.publish(Event::Delete(event));
        Ok(response)
    }

    pub fn state(&mut self, req: StateRequest, _: &mut Notify) -> Result<StateResponse, TaskError> {
        let paused = self.paused;
        let bundle = self.bundle.to_string_lossy().into_owned();
        let process = self.process(&req.exec_id)?;
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

    pub fn pids(&mut self, req: PidsRequest, _: &mut Notify) -> Result<PidsResponse, TaskError> {
        let out = self
            .runtime
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

    pub fn pause(&mut self, req: PauseRequest, notify: &mut Notify) -> Result<Empty, TaskError> {
        self.runtime.output(&["pause", &req.id], None)?;
        self.paused = true;
        let mut event = TaskPaused::new();
        event.container_id = req.id;
        notify.publish(Event::Paused(event));
        Ok(Empty::new())
    }

    pub fn resume(&mut self, req: ResumeRequest, notify: &mut Notify) -> Result<Empty, TaskError> {
        self.runtime.output(&["resume", &req.id], None)?;
        self.paused = false;
        let mut event = TaskResumed::new();
        event.container_id = req.id;
        notify.publish(Event::Resumed(event));
        Ok(Empty::new())
    }

    pub fn update(&mut self, req: UpdateTaskRequest, _: &mut Notify) -> Result<Empty, TaskError> {
        // containerd encodes the OCI LinuxResources as JSON inside the Any.
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        self.runtime
            .output(&["update", "--resources", "-", &req.id], Some(resources))?;
        Ok(Empty::new())
    }

    pub fn stats(&mut self, req: StatsRequest, _: &mut Notify) -> Result<StatsResponse, TaskError> {
        let out = self.runtime.output(&["events", "--stats", &req.id], None)?;
        let line = out.split(|b| *b == b'\n').next().unwrap_or_default();
        let mut response = StatsResponse::new();
        response.stats = MessageField::some(stats::for_host(line)?);
        Ok(response)
    }

    /// The OOM eventfd fired: a `/tasks/oom` if it was an OOM.
    pub fn oom_fired(&mut self, notify: &mut Notify) {
        let Some(watch) = self.oom.as_mut() else {
            return;
        };
        match watch.fired() {
            Some(true) => self.publish_oom(notify),
            Some(false) => {}
            None => self.oom = None,
        }
    }
}
