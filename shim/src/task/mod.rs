//! The Task service: every container this shim serves, keyed by id.
//!
//! A shim serves one container, or every container of a group: containerd
//! starts one shim per pod when the containers' specs carry the same
//! `io.kubernetes.cri.sandbox-id` (see [`crate::cli`]). The shim then
//! stays until its last container is deleted and Shutdown comes. A
//! `shim start` that finds the group's shim announces its container first
//! ([`Tasks::join`]): a Shutdown that comes before that container's Create
//! then leaves the shim serving, so the container never gets the address
//! of a shim on its way out.
//!
//! Every RPC runs to completion on the server's one thread, except `Wait`,
//! which is parked until its process is reaped. Events are queued in the
//! order things happen here, which is the order containerd needs: create,
//! start, exit (only once reaped, after start returned), delete.
//!
//! containerd's call sequence for `ctr run --rm`: Create → Connect → Start
//! → Wait → State → Delete → Shutdown; for `ctr task exec`: Exec → Start →
//! Wait → CloseIO → Delete, each with the exec id.
//!
//! - [`container`]: one container's state and its whole-container RPCs;
//! - [`process`]: its init and execs, and the RPCs about one process;
//! - [`io`]: the runtime run with a process's stdio or terminal; stdin copies;
//! - [`notify`]: events to the daemon and the answers to parked Waits;
//! - [`error`]: what can fail, and the ttrpc code containerd sees.

mod container;
mod error;
mod io;
mod notify;
mod process;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StateRequest,
    StatsRequest, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::events::task::TaskCreate;
use containerd_shim_protos::protobuf::Message;
use ttrpc::proto::Code;

use self::container::Container;
pub use self::error::TaskError;
use self::notify::Notify;
pub use self::notify::ReplyTo;
use crate::events::Publisher;
use crate::wire::RpcError;

/// What the loop does with a request's outcome.
pub enum Reply {
    Now(Result<Vec<u8>, RpcError>),
    /// Answered later (a Wait on a running process).
    Parked,
}

/// A request about one container, named by its `id`.
trait ForContainer: Message {
    fn container_id(&self) -> &str;
}

macro_rules! for_container {
    ($($request:ty),*) => {
        $(impl ForContainer for $request {
            fn container_id(&self) -> &str {
                &self.id
            }
        })*
    };
}

for_container!(
    StartRequest,
    StateRequest,
    PidsRequest,
    PauseRequest,
    ResumeRequest,
    KillRequest,
    ExecProcessRequest,
    ResizePtyRequest,
    CloseIORequest,
    UpdateTaskRequest,
    StatsRequest
);

type Handler<R, M> = fn(&mut Container, R, &mut Notify) -> Result<M, TaskError>;

/// The environment variable with which berth-imaged asks its shims to
/// start each init at Create ([`Tasks::start_at_create`]).
pub const START_AT_CREATE_ENV: &str = "BERTH_SHIM_START_AT_CREATE";

/// The environment variable with which berth-imaged starts a spare shim
/// ([`Tasks::spare`]).
pub const SPARE_ENV: &str = "BERTH_SHIM_SPARE";

/// How long an announced container may take to come with its Create
/// before the shim stops waiting for it.
pub const JOIN_GRACE: Duration = Duration::from_secs(60);

/// How long a spare shim waits for its daemon's connection before it goes:
/// a daemon that stopped or died between starting it and connecting never
/// comes.
pub const SPARE_GRACE: Duration = Duration::from_secs(60);

/// The containers this shim serves.
pub struct Tasks {
    namespace: String,
    containers: HashMap<String, Container>,
    notify: Notify,
    /// Create runs `runtime run --detach` instead of `runtime create` for
    /// an init without stdin, and the Start that follows only answers: one
    /// runtime process less per container. berth-imaged asks for it (it
    /// always starts right after Create, with nothing in between that the
    /// process could see); containerd does not, and gets the contract's
    /// Create and Start.
    start_at_create: bool,
    /// Containers a `shim start` announced (it handed out this shim's
    /// address for them) that have not come with their Create yet, with
    /// when each announcement lapses.
    joining: HashMap<String, Instant>,
    /// A Shutdown (its container and `now`) found nothing else to serve
    /// but announced containers: the shim goes if their announcements
    /// lapse and that Shutdown would still end it.
    leave_when_idle: Option<(String, bool)>,
    /// Started ahead of need by berth-imaged, which holds one connection to
    /// it until a container's Create comes: until then, that connection's
    /// end (the daemon stopped or died) ends the shim.
    spare: bool,
    /// A spare nobody has connected to yet goes at this instant.
    spare_until: Option<Instant>,
    /// Set by Shutdown: the server stops after answering.
    pub shutdown: bool,
    /// Creates answered whose events (and OOM watch) are still to come
    /// ([`Tasks::announce_created`]): each container's id and event.
    created: Vec<(String, TaskCreate)>,
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

fn find<'a>(
    containers: &'a mut HashMap<String, Container>,
    id: &str,
) -> Result<&'a mut Container, TaskError> {
    containers
        .get_mut(id)
        .ok_or_else(|| TaskError::NoTask(id.to_string()))
}

impl Tasks {
    pub fn new(namespace: &str, events: Publisher) -> Tasks {
        Tasks {
            namespace: namespace.to_string(),
            containers: HashMap::new(),
            notify: Notify::new(events),
            joining: HashMap::new(),
            leave_when_idle: None,
            spare: false,
            spare_until: None,
            shutdown: false,
            created: Vec::new(),
            start_at_create: false,
        }
    }

    /// See [`Tasks::start_at_create`]'s field.
    pub fn start_at_create(mut self, yes: bool) -> Tasks {
        self.start_at_create = yes;
        self
    }

    /// See [`Tasks::spare`]'s field.
    pub fn spare(mut self, yes: bool) -> Tasks {
        self.spare = yes;
        self.spare_until = yes.then(|| Instant::now() + SPARE_GRACE);
        self
    }

    /// A connection came: a spare's daemon is there.
    pub fn connected(&mut self) {
        self.spare_until = None;
    }

    /// Answers one Task RPC.
    pub fn handle(&mut self, method: &str, payload: &[u8], reply_to: ReplyTo) -> Reply {
        match method {
            "Create" => encode(decode(payload).and_then(|r| self.create(r))),
            "Start" => self.on(payload, Container::start),
            "Delete" => encode(decode(payload).and_then(|r| self.delete(r))),
            "State" => self.on(payload, Container::state),
            "Pids" => self.on(payload, Container::pids),
            "Pause" => self.on(payload, Container::pause),
            "Resume" => self.on(payload, Container::resume),
            "Kill" => self.on(payload, Container::kill),
            "Exec" => self.on(payload, Container::exec),
            "ResizePty" => self.on(payload, Container::resize_pty),
            "CloseIO" => self.on(payload, Container::close_io),
            "Update" => self.on(payload, Container::update),
            "Stats" => self.on(payload, Container::stats),
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

    /// Decodes a request about one container and hands it to `handler`.
    fn on<R: ForContainer, M: Message>(&mut self, payload: &[u8], handler: Handler<R, M>) -> Reply {
        encode(decode::<R>(payload).and_then(|req| {
            let container = find(&mut self.containers, req.container_id())?;
            handler(container, req, &mut self.notify)
        }))
    }

    /// A `shim start` found this shim serving the group of container
    /// `id` and hands out its address: the shim stays for that container's
    /// Create (for [`JOIN_GRACE`] at most), whatever Shutdown comes first.
    /// A shim already leaving refuses, and the start runs a new one.
    pub fn join(&mut self, payload: &[u8]) -> Reply {
        encode(decode::<ConnectRequest>(payload).and_then(|req| {
            if self.shutdown {
                return Err(TaskError::Leaving);
            }
            self.joining.insert(req.id, Instant::now() + JOIN_GRACE);
            let mut response = ConnectResponse::new();
            response.shim_pid = std::process::id();
            response.version = crate::VERSION.to_string();
            Ok(response)
        }))
    }

    /// When the next announcement, or a spare's wait for its daemon,
    /// lapses, if any is pending.
    pub fn next_lapse(&self) -> Option<Instant> {
        self.joining
            .values()
            .chain(&self.spare_until)
            .min()
            .copied()
    }

    /// Forgets the announcements that lapsed by `now`; the shim goes if a
    /// Shutdown was only waiting for them, or if it is a spare nobody
    /// connected to in time.
    pub fn lapse(&mut self, now: Instant) {
        if self.spare_until.is_some_and(|until| until <= now) {
            self.shutdown = true;
        }
        self.joining.retain(|_, lapses| *lapses > now);
        let waiting = self.leave_when_idle.as_ref();
        if self.joining.is_empty() && waiting.is_some_and(|(id, now)| self.ends_shim(id, *now)) {
            self.shutdown = true;
        }
    }

    fn create(&mut self, req: CreateTaskRequest) -> Result<CreateTaskResponse, TaskError> {
        // Served or failed, the announced container has come; the next
        // Shutdown decides again.
        self.joining.remove(&req.id);
        self.leave_when_idle = None;
        self.spare = false;
        if self.containers.contains_key(&req.id) {
            return Err(TaskError::Exists(req.id));
        }
        let id = req.id.clone();
        // With stdin, the daemon opens its end after Create: the process
        // must not run before.
        let start = self.start_at_create && req.stdin.is_empty();
        let (container, event) = Container::create(&self.namespace, req, start)?;
        let mut response = CreateTaskResponse::new();
        response.pid = container.init.pid;
        self.containers.insert(id.clone(), container);
        self.created.push((id, event));
        Ok(response)
    }

    /// After a Create's answer is sent: its OOM watch and events (see
    /// `Container::announce_created`), off the caller's wait.
    pub fn announce_created(&mut self) {
        for (id, event) in std::mem::take(&mut self.created) {
            if let Some(container) = self.containers.get_mut(&id) {
                container.announce_created(event, &mut self.notify);
            }
        }
    }

    fn delete(&mut self, req: DeleteRequest) -> Result<DeleteResponse, TaskError> {
        let whole = req.exec_id.is_empty();
        let id = req.id.clone();
        let container = find(&mut self.containers, &id)?;
        let response = container.delete(req, &mut self.notify)?;
        if whole {
            self.containers.remove(&id);
        }
        Ok(response)
    }

    fn wait(
        &mut self,
        req: WaitRequest,
        reply_to: ReplyTo,
    ) -> Result<Option<WaitResponse>, TaskError> {
        find(&mut self.containers, &req.id.clone())?.wait(req, reply_to)
    }

    fn connect(&mut self, req: ConnectRequest) -> Result<ConnectResponse, TaskError> {
        let mut response = ConnectResponse::new();
        response.shim_pid = std::process::id();
        response.task_pid = self.containers.get(&req.id).map_or(0, |c| c.init.pid);
        response.version = crate::VERSION.to_string();
        Ok(response)
    }

    /// containerd sends Shutdown after every task's Delete: the shim goes
    /// once it serves no container (as containerd's runc shim does). `now`
    /// ends it at once, unless it still serves other containers than the
    /// one named. A container announced by a `shim start` keeps it too.
    fn shutdown(&mut self, req: ShutdownRequest) -> Result<Empty, TaskError> {
        if self.ends_shim(&req.id, req.now) {
            self.lapse(Instant::now());
            if self.joining.is_empty() {
                self.shutdown = true;
            } else {
                self.leave_when_idle = Some((req.id, req.now));
            }
        }
        Ok(Empty::new())
    }

    /// Whether a Shutdown for container `id` (`now` or not) leaves this
    /// shim nothing to serve, announced containers aside.
    fn ends_shim(&self, id: &str, now: bool) -> bool {
        self.containers.keys().all(|served| now && served == id)
    }

    /// A child was reaped with `status`. Other children than the
    /// containers' processes (a `binary://` logger) need nothing.
    pub fn reaped(&mut self, pid: u32, status: u32) {
        for container in self.containers.values_mut() {
            if container.reaped(pid, status, &mut self.notify) {
                return;
            }
        }
    }

    /// Answers for parked Waits, to send now.
    pub fn take_answers(&mut self) -> Vec<(ReplyTo, Vec<u8>)> {
        self.notify.take_answers()
    }

    /// The OOM descriptors to poll: (container id, fd).
    pub fn oom_fds(&self) -> Vec<(String, i32)> {
        use std::os::fd::AsRawFd;
        self.containers
            .values()
            .filter_map(|c| Some((c.id.clone(), c.oom.as_ref()?.fd.as_raw_fd())))
            .collect()
    }

    /// Container `id`'s OOM descriptor is ready.
    pub fn oom_fired(&mut self, id: &str) {
        if let Some(container) = self.containers.get_mut(id) {
            container.oom_fired(&mut self.notify);
        }
    }

    /// The stdin copies to poll: (container id, exec id, fd, events).
    pub fn stdin_fds(&self) -> Vec<(String, String, i32, i16)> {
        self.containers
            .values()
            .flat_map(|c| {
                c.stdin_fds()
                    .map(|(exec_id, fd, events)| (c.id.clone(), exec_id.to_string(), fd, events))
            })
            .collect()
    }

    /// A stdin copy's descriptor is ready.
    pub fn stdin_ready(&mut self, id: &str, exec_id: &str) {
        if let Some(container) = self.containers.get_mut(id) {
            container.stdin_ready(exec_id);
        }
    }

    /// Forgets the parked Waits of a connection that went away.
    /// Connection `conn` closed, and `left` remain: a spare shim whose
    /// daemon went before it got a container goes too.
    pub fn disconnected(&mut self, conn: u64, left: usize) {
        for container in self.containers.values_mut() {
            container.disconnected(conn);
        }
        if self.spare && left == 0 {
            self.shutdown = true;
        }
    }

    /// Waits for the queued events to go out (before the shim exits).
    pub fn flush_events(&self) {
        self.notify.flush();
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Tasks {
        let events = Publisher::start(String::new(), "test".into()).unwrap();
        Tasks::new("test", events)
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

    fn request<M: Message>(task: &mut Tasks, method: &str, message: M, reply_to: ReplyTo) -> Reply {
        task.handle(method, &message.write_to_bytes().unwrap(), reply_to)
    }

    #[test]
    fn a_pods_shim_serves_each_container_and_stays_while_one_is_left() {
        let mut task = task();
        task.containers
            .insert("a".into(), Container::running("a", 4_000_001));
        task.containers
            .insert("b".into(), Container::running("b", 4_000_002));
        // Each Wait is parked on its own container's init.
        for (id, stream) in [("a", 1), ("b", 3)] {
            let mut wait = WaitRequest::new();
            wait.id = id.into();
            assert!(matches!(
                request(&mut task, "Wait", wait, (7, stream)),
                Reply::Parked
            ));
        }
        // b's exit answers b's Wait only.
        task.reaped(4_000_002, 137);
        let answers = task.take_answers();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].0, (7, 3));
        assert_eq!(
            WaitResponse::parse_from_bytes(&answers[0].1)
                .unwrap()
                .exit_status,
            137
        );
        // Shutdown, even `now`, leaves a shim that still serves another container.
        task.containers.remove("b");
        let mut shutdown = ShutdownRequest::new();
        shutdown.id = "b".into();
        shutdown.now = true;
        assert!(matches!(
            request(&mut task, "Shutdown", shutdown, (7, 5)),
            Reply::Now(Ok(_))
        ));
        assert!(!task.shutdown);
        let mut state = StateRequest::new();
        state.id = "b".into();
        let err = error(request(&mut task, "State", state, (7, 7)));
        assert_eq!(err.code, Code::NOT_FOUND);
        // `now` for its one container, or no container at all, ends it.
        let mut shutdown = ShutdownRequest::new();
        shutdown.id = "a".into();
        request(&mut task, "Shutdown", shutdown.clone(), (7, 9));
        assert!(!task.shutdown, "a plain Shutdown with a live container");
        shutdown.now = true;
        request(&mut task, "Shutdown", shutdown, (7, 11));
        assert!(task.shutdown);
    }

    fn join(task: &mut Tasks, id: &str) -> Reply {
        let mut req = ConnectRequest::new();
        req.id = id.into();
        task.join(&req.write_to_bytes().unwrap())
    }

    #[test]
    fn an_announced_container_keeps_the_shim_until_its_create_or_its_lapse() {
        let mut task = task();
        task.containers
            .insert("a".into(), Container::running("a", 4_000_001));
        assert!(matches!(join(&mut task, "b"), Reply::Now(Ok(_))));
        // a's teardown: its Shutdown finds b on its way.
        task.containers.remove("a");
        let mut shutdown = ShutdownRequest::new();
        shutdown.id = "a".into();
        shutdown.now = true;
        request(&mut task, "Shutdown", shutdown.clone(), (7, 1));
        assert!(!task.shutdown, "a Shutdown while b is announced");
        assert!(task.next_lapse().is_some());
        // b's Create (here one that fails) ends the wait; the next Shutdown decides.
        let mut create = CreateTaskRequest::new();
        create.id = "b".into();
        create.bundle = "/nonexistent-bundle".into();
        let _ = request(&mut task, "Create", create, (7, 3));
        assert!(task.next_lapse().is_none());
        task.lapse(Instant::now() + JOIN_GRACE * 2);
        assert!(
            !task.shutdown,
            "b came: its Create cleared the pending leave"
        );
        shutdown.id = "b".into();
        request(&mut task, "Shutdown", shutdown.clone(), (7, 5));
        assert!(task.shutdown);

        // An announcement that lapses lets a waiting Shutdown take effect.
        let mut task = self::task();
        assert!(matches!(join(&mut task, "c"), Reply::Now(Ok(_))));
        request(&mut task, "Shutdown", ShutdownRequest::new(), (7, 7));
        assert!(!task.shutdown);
        task.lapse(Instant::now());
        assert!(!task.shutdown, "c's grace has not run out");
        task.lapse(Instant::now() + JOIN_GRACE);
        assert!(task.shutdown);
        // A leaving shim turns announcements away.
        let err = error(join(&mut task, "d"));
        assert_eq!(err.code, Code::FAILED_PRECONDITION);
        assert_eq!(err.message, "this shim is shutting down");
    }

    #[test]
    fn a_shutdown_now_that_waited_for_an_announcement_ends_the_shim_once_it_lapses() {
        // The daemon's teardown of `a` whose Delete failed: Shutdown with
        // `now` while `a` is still served, and `b` announced meanwhile.
        let mut task = task();
        task.containers
            .insert("a".into(), Container::running("a", 4_000_001));
        assert!(matches!(join(&mut task, "b"), Reply::Now(Ok(_))));
        let mut shutdown = ShutdownRequest::new();
        shutdown.id = "a".into();
        shutdown.now = true;
        request(&mut task, "Shutdown", shutdown, (7, 1));
        assert!(!task.shutdown, "b is announced");
        task.lapse(Instant::now() + JOIN_GRACE);
        assert!(task.shutdown, "b never came: `now` holds for a");
    }

    #[test]
    fn a_spare_shim_goes_with_its_daemons_connection_until_a_create_comes() {
        let mut spare = task().spare(true);
        spare.disconnected(1, 1);
        assert!(!spare.shutdown, "another connection is still open");
        spare.disconnected(2, 0);
        assert!(spare.shutdown, "the daemon's connection ended");

        // A spare nobody connects to (its daemon went before it could)
        // goes once its wait lapses; one its daemon connected to stays.
        let mut spare = task().spare(true);
        assert!(spare.next_lapse().is_some());
        spare.lapse(Instant::now());
        assert!(!spare.shutdown, "the daemon may still connect");
        spare.lapse(Instant::now() + SPARE_GRACE);
        assert!(spare.shutdown, "nobody connected to the spare");
        let mut spare = task().spare(true);
        spare.connected();
        assert!(spare.next_lapse().is_none());
        spare.lapse(Instant::now() + SPARE_GRACE);
        assert!(!spare.shutdown, "the daemon's connection is open");

        let mut spare = task().spare(true);
        let mut create = CreateTaskRequest::new();
        create.id = "a".into();
        create.bundle = "/nonexistent-bundle".into();
        let _ = request(&mut spare, "Create", create, (1, 1));
        spare.disconnected(1, 0);
        assert!(!spare.shutdown, "a shim that took a container is no spare");
        // An ordinary shim outlives its connections.
        let mut plain = task();
        plain.disconnected(1, 0);
        assert!(!plain.shutdown);
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
