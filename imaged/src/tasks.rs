//! Tasks: running containers through their shims.
//!
//! A container's first start makes its stdio fifos in the bundle, starts a
//! shim ([`crate::shim`]), and asks it to Create and Start the task; a
//! watcher then waits for the exit (the shim's Wait), records it, tears the
//! task and the shim down, and applies the restart policy. The daemon reads
//! the output fifos itself ([`crate::logs`]): the init's output goes to the
//! log and to attached clients. After a daemon restart, [`Tasks::recover`]
//! finds running containers through their bundles' `address` files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::v1 as pb;
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use tokio::sync::{broadcast, watch};

use crate::containers::{self, ContainerRecord, Containers};
use crate::events::{Hub, Notice};
use crate::logs::{self, Chunk, LogWriter};
use crate::shim::{self, Launcher, Shim};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {0} is already running")]
    Running(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} is paused: unpause it first")]
    Paused(String),
    #[error("container {container} has no exec {exec}")]
    NoExec { container: String, exec: String },
    #[error("exec {exec} already exists in container {container}")]
    ExecExists { container: String, exec: String },
    #[error("shim of container {container}: {rpc}: {detail}")]
    Shim {
        container: String,
        rpc: &'static str,
        code: ttrpc::Code,
        detail: String,
    },
    #[error("stdio of container {container}: {detail}")]
    Stdio { container: String, detail: String },
    #[error("{0}")]
    Invalid(String),
    #[error("container {0} is starting: try again in a moment")]
    Starting(String),
    #[error("container {container} could not be stopped: {detail}")]
    Stuck { container: String, detail: String },
    #[error(transparent)]
    Launch(#[from] shim::Error),
    #[error(transparent)]
    Containers(#[from] containers::Error),
}

impl From<crate::networks::Error> for Error {
    fn from(e: crate::networks::Error) -> Error {
        Error::Containers(containers::Error::Network(e))
    }
}

type Result<T> = std::result::Result<T, Error>;

/// What an attached client follows.
pub struct Attached {
    pub output: broadcast::Receiver<Chunk>,
    pub exit: watch::Receiver<Option<u32>>,
    pub container_id: String,
    /// Output streams to see end before the exit is the last word.
    pub streams: usize,
}

/// (container id, exec id; "" for the init).
type ProcessKey = (String, String);

/// What the daemon keeps of one process it started.
struct Process {
    /// Output, as read from the fifos.
    output: broadcast::Sender<Chunk>,
    /// The exit status once known.
    exit: watch::Sender<Option<u32>>,
    /// Output streams it has (1 with a terminal, else stdout and stderr):
    /// an attached client has seen all output once that many have ended.
    streams: usize,
    /// The write end of the stdin fifo, while open; written outside the
    /// daemon's lock (a process that does not read must block only its writer).
    stdin: Option<Arc<tokio::sync::Mutex<tokio::net::unix::pipe::Sender>>>,
}

#[derive(Default)]
struct Inner {
    shims: HashMap<String, Shim>,
    processes: HashMap<ProcessKey, Process>,
    /// Containers between the start of a Start and its shim being known.
    starting: std::collections::HashSet<String>,
}

/// The task service.
pub struct Tasks {
    pub containers: Containers,
    pub hub: Hub,
    pub launcher: Launcher,
    pub max_log: u64,
    inner: Mutex<Inner>,
}

fn shim_err<'a>(container: &'a str, rpc: &'static str) -> impl FnOnce(ttrpc::Error) -> Error + 'a {
    move |e| {
        let (code, detail) = match e {
            ttrpc::Error::RpcStatus(status) => (status.code(), status.message().to_string()),
            other => (ttrpc::Code::UNAVAILABLE, other.to_string()),
        };
        Error::Shim {
            container: container.to_string(),
            rpc,
            code,
            detail,
        }
    }
}

fn now_secs() -> u64 {
    crate::volumes::now()
}

/// The signal number of a name (`SIGTERM`, `TERM`) or number.
pub fn signal_number(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match bare {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    };
    Some(n as u32)
}

impl Tasks {
    pub fn new(containers: Containers, hub: Hub, launcher: Launcher, max_log: u64) -> Tasks {
        Tasks {
            containers,
            hub,
            launcher,
            max_log,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Every RPC but Wait has a deadline: a wedged shim must not hang a
    /// client (or the daemon's start-up recovery) for ever.
    fn ctx(&self) -> ttrpc::context::Context {
        shim::context(&self.launcher.namespace, Some(Duration::from_secs(30)))
    }

    fn wait_ctx(&self) -> ttrpc::context::Context {
        shim::context(&self.launcher.namespace, None)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shim_of(&self, id: &str) -> Option<Shim> {
        self.lock().shims.get(id).cloned()
    }

    fn running_shim(&self, record: &ContainerRecord) -> Result<Shim> {
        self.shim_of(&record.id)
            .ok_or_else(|| Error::NotRunning(record.name.clone()))
    }

    /// The output channel and exit watch of a process, made on first use
    /// (an Attach before Start subscribes to what Start will send).
    fn process(
        &self,
        key: &ProcessKey,
    ) -> (broadcast::Sender<Chunk>, watch::Receiver<Option<u32>>) {
        let mut inner = self.lock();
        let process = inner
            .processes
            .entry(key.clone())
            .or_insert_with(|| Process {
                output: broadcast::channel(256).0,
                exit: watch::channel(None).0,
                stdin: None,
                streams: 2,
            });
        (process.output.clone(), process.exit.subscribe())
    }

    /// Starts the container's task, or with `exec_id` one of its execs.
    pub async fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32> {
        let record = self.containers.resolve(id)?;
        if !exec_id.is_empty() {
            return self.start_exec(&record, exec_id).await;
        }
        self.start_init(&record, false).await
    }

    /// Claims the container for one start; refused while it runs or
    /// another start is under way.
    fn claim_start(&self, record: &ContainerRecord) -> Result<()> {
        let mut inner = self.lock();
        if inner.shims.contains_key(&record.id) {
            return Err(Error::Running(record.name.clone()));
        }
        if !inner.starting.insert(record.id.clone()) {
            return Err(Error::Starting(record.name.clone()));
        }
        Ok(())
    }

    async fn start_init(
        self: &Arc<Self>,
        record: &ContainerRecord,
        restarting: bool,
    ) -> Result<u32> {
        self.torn_down(&record.id).await;
        self.claim_start(record)?;
        let result = self.start_claimed(record, restarting).await;
        self.lock().starting.remove(&record.id);
        result
    }

    async fn start_claimed(
        self: &Arc<Self>,
        record: &ContainerRecord,
        restarting: bool,
    ) -> Result<u32> {
        let settings = record.settings();
        self.containers.ensure_rootfs(record)?;
        let bundle = record.bundle.clone();
        let (stdout, stderr, stdin) = make_stdio(
            &record.name,
            &bundle,
            "init",
            settings.tty,
            settings.stdin_open,
        )?;
        let key: ProcessKey = (record.id.clone(), String::new());
        let (output, _) = self.process(&key);
        // The earlier run's exit is history. Reset on the same watch, not a
        // new one: a client that attached before this start (`start -a`)
        // holds a receiver of this watch and must see this run's exit.
        {
            let mut inner = self.lock();
            if let Some(p) = inner.processes.get_mut(&key) {
                if p.exit.borrow().is_some() {
                    p.exit.send_replace(None);
                }
            }
        }
        self.connect_network(record).await?;
        let shim = match self.launcher.start(&record.id, &bundle).await {
            Ok(shim) => shim,
            Err(e) => {
                self.disconnect_network(&record.id).await;
                return Err(e.into());
            }
        };
        let teardown = |tasks: Arc<Tasks>, id: String, bundle: PathBuf, shim: Shim| async move {
            let _ = shim
                .client
                .shutdown(
                    tasks.ctx(),
                    &api::ShutdownRequest {
                        id: id.clone(),
                        now: true,
                        ..Default::default()
                    },
                )
                .await;
            tasks.launcher.delete(&id, &bundle).await;
            tasks.disconnect_network(&id).await;
        };
        let mut create = api::CreateTaskRequest::new();
        create.id = record.id.clone();
        create.bundle = bundle.display().to_string();
        create.terminal = settings.tty;
        create.stdout = stdout.display().to_string();
        create.stderr = stderr
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        create.stdin = stdin
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let readers = match OutputReaders::open(&record.name, &stdout, stderr.as_deref()) {
            Ok(readers) => readers,
            Err(e) => {
                teardown(self.clone(), record.id.clone(), bundle.clone(), shim).await;
                return Err(e);
            }
        };
        if let Err(e) = shim.client.create(self.ctx(), &create).await {
            teardown(self.clone(), record.id.clone(), bundle.clone(), shim).await;
            return Err(shim_err(&record.name, "Create")(e));
        }
        self.spawn_copiers(&bundle, readers, output, true);
        if let Some(path) = &stdin {
            self.open_stdin(&key, path);
        }
        let started = shim
            .client
            .start(
                self.ctx(),
                &api::StartRequest {
                    id: record.id.clone(),
                    ..Default::default()
                },
            )
            .await;
        let pid = match started {
            Ok(r) => r.pid,
            Err(e) => {
                let _ = shim
                    .client
                    .delete(
                        self.ctx(),
                        &api::DeleteRequest {
                            id: record.id.clone(),
                            ..Default::default()
                        },
                    )
                    .await;
                teardown(self.clone(), record.id.clone(), bundle.clone(), shim).await;
                return Err(shim_err(&record.name, "Start")(e));
            }
        };
        self.lock().shims.insert(record.id.clone(), shim.clone());
        // From here the watcher owns the task: whatever happens next, the
        // exit is recorded and the shim torn down.
        self.spawn_watcher(record.id.clone(), shim.clone());
        let updated = self.containers.update(&record.id, |r| {
            r.state.status = pb::container::Status::Running as i32;
            r.state.pid = pid;
            r.state.started_at = now_secs();
            r.state.oom_killed = false;
            if !restarting {
                // A client's start begins the policy's count again.
                r.state.stopped_by_user = false;
                r.state.restart_count = 0;
            }
        });
        match updated {
            // Stopped (or deleted) while it was being restarted: stop it again.
            Ok(r) if restarting && r.state.stopped_by_user => {
                let _ = self.kill(&record.id, "", libc::SIGKILL as u32, true).await;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = self.kill(&record.id, "", libc::SIGKILL as u32, true).await;
                return Err(e.into());
            }
        }
        Ok(pid)
    }

    /// Keeps the write end of a process's stdin fifo, for Attach. Read-write,
    /// so the open never waits for the shim's reader.
    fn open_stdin(&self, key: &ProcessKey, path: &Path) {
        let writer = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(path)
            .ok()
            .map(|w| Arc::new(tokio::sync::Mutex::new(w)));
        if let Some(p) = self.lock().processes.get_mut(key) {
            p.stdin = writer;
        }
    }

    /// Reads a process's fifos into its output (and, for the init, the log).
    fn spawn_copiers(
        &self,
        bundle: &Path,
        readers: OutputReaders,
        output: broadcast::Sender<Chunk>,
        to_log: bool,
    ) {
        let log = to_log.then(|| Arc::new(Mutex::new(LogWriter::new(bundle, self.max_log))));
        tokio::spawn(logs::copy_fifo(
            readers.stdout,
            pb::StdioStream::Stdout,
            output.clone(),
            log.clone(),
        ));
        if let Some(stderr) = readers.stderr {
            tokio::spawn(logs::copy_fifo(
                stderr,
                pb::StdioStream::Stderr,
                output,
                log,
            ));
        }
    }

    /// Waits for the init's exit through the shim, then records it.
    fn spawn_watcher(self: &Arc<Self>, id: String, shim: Shim) {
        let tasks = self.clone();
        tokio::spawn(async move {
            let waited = shim
                .client
                .wait(
                    tasks.wait_ctx(),
                    &api::WaitRequest {
                        id: id.clone(),
                        ..Default::default()
                    },
                )
                .await;
            // A shim that died answers nothing: 255, as containerd reports it.
            let status = waited.map(|r| r.exit_status).unwrap_or(255);
            tasks.exited(&id, shim, status).await;
        });
    }

    /// The init exited: record it, tear the task and shim down, restart
    /// if the policy says so.
    async fn exited(self: &Arc<Self>, id: &str, shim: Shim, status: u32) {
        let _ = shim
            .client
            .delete(
                self.ctx(),
                &api::DeleteRequest {
                    id: id.to_string(),
                    ..Default::default()
                },
            )
            .await;
        let _ = shim
            .client
            .shutdown(
                self.ctx(),
                &api::ShutdownRequest {
                    id: id.to_string(),
                    now: true,
                    ..Default::default()
                },
            )
            .await;
        let Ok(record) = self.containers.resolve(id) else {
            // Deleted meanwhile: the shim's clean-up still runs.
            self.lock().shims.remove(id);
            let bundle = self.containers.bundles.join(id);
            self.launcher.delete(id, &bundle).await;
            self.disconnect_network(id).await;
            return;
        };
        self.launcher.delete(id, &record.bundle).await;
        let record = self
            .containers
            .update(id, |r| {
                r.state.status = pb::container::Status::Stopped as i32;
                r.state.exit_status = status;
                r.state.finished_at = now_secs();
                r.state.pid = 0;
            })
            .unwrap_or(record);
        // The exit goes out before the network's teardown: a client waiting
        // for it (`run --rm`, `wait`) need not wait for the plugins' DEL.
        // The shim's entry stays until the teardown is done, so no start
        // can race it for the container's namespace.
        if let Some(p) = self
            .lock()
            .processes
            .get_mut(&(id.to_string(), String::new()))
        {
            p.stdin = None;
            p.exit.send_replace(Some(status));
        }
        self.disconnect_network(id).await;
        self.lock().shims.remove(id);
        if record.settings().auto_remove && restart_delay(&record, status).is_none() {
            // The exit is recorded and sent first: an attached client still
            // gets it. The task is gone, so this is a plain delete.
            let tasks = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                let _ = tasks.delete_container(&id, false, true).await;
            });
            return;
        }
        self.apply_restart_policy(&record, status);
    }

    /// Restarts the container after the policy's back-off if its policy
    /// says so for an exit with `status` (at an exit, and at the daemon's
    /// start for exits it did not see). A restart that fails is logged and
    /// leaves the container stopped.
    fn apply_restart_policy(self: &Arc<Self>, record: &ContainerRecord, status: u32) {
        let Some(delay) = restart_delay(record, status) else {
            return;
        };
        let id = record.id.clone();
        let _ = self.containers.update(&id, |r| {
            r.state.status = pb::container::Status::Restarting as i32;
        });
        let tasks = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Stopped or removed meanwhile: no restart.
            let Ok(record) = tasks.containers.resolve(&id) else {
                return;
            };
            if record.state.stopped_by_user || tasks.shim_of(&id).is_some() {
                return;
            }
            let _ = tasks.containers.update(&id, |r| r.state.restart_count += 1);
            if let Err(e) = tasks.start_init(&record, true).await {
                eprintln!("berth-imaged: cannot restart {}: {e}", record.name);
                let _ = tasks.containers.update(&id, |r| {
                    r.state.status = pb::container::Status::Stopped as i32;
                });
            }
        });
    }

    /// Marks the container as stopped by the user (restart policies then
    /// leave it alone) and signals it.
    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        if exec_id.is_empty() {
            self.containers
                .update(&record.id, |r| r.state.stopped_by_user = true)?;
        }
        shim.client
            .kill(
                self.ctx(),
                &api::KillRequest {
                    id: record.id.clone(),
                    exec_id: exec_id.to_string(),
                    signal,
                    all,
                    ..Default::default()
                },
            )
            .await
            .map_err(shim_err(&record.name, "Kill"))?;
        Ok(())
    }

    /// The stop signal, then SIGKILL after `timeout` seconds; the exit status.
    pub async fn stop(&self, id: &str, timeout: u32) -> Result<u32> {
        let record = self.containers.resolve(id)?;
        if self.shim_of(&record.id).is_none() {
            // Stopping a stopped container is no error (docker's rule), and
            // a pending restart is cancelled.
            self.containers.update(&record.id, |r| {
                r.state.stopped_by_user = true;
                if r.state.status == pb::container::Status::Restarting as i32 {
                    r.state.status = pb::container::Status::Stopped as i32;
                }
            })?;
            return Ok(record.state.exit_status);
        }
        let signal = signal_number(&record.stop_signal).unwrap_or(libc::SIGTERM as u32);
        let (_, mut exit) = self.process(&(record.id.clone(), String::new()));
        if record.status() == pb::container::Status::Paused {
            let _ = self.resume(&record.id).await;
        }
        // The init alone gets the stop signal (it may stop its children in
        // order); an exit that beats the signal is a stop too.
        if let Err(e) = self.kill(&record.id, "", signal, false).await {
            if exit.borrow().is_none() && self.is_running(&record.id) {
                return Err(e);
            }
        }
        let in_time = tokio::time::timeout(
            Duration::from_secs(timeout.into()),
            exit.wait_for(|s| s.is_some()),
        )
        .await
        .is_ok();
        if !in_time {
            let _ = self.kill(&record.id, "", libc::SIGKILL as u32, true).await;
        }
        let status = exit
            .wait_for(|s| s.is_some())
            .await
            .map(|s| s.unwrap_or(137))
            .unwrap_or(137);
        self.torn_down(&record.id).await;
        Ok(status)
    }

    /// Waits (at most 10 s) until an ended task's teardown is done: its
    /// exit is sent before its network is taken down (see `exited`), and a
    /// stop, a removal or a new start must find all of it gone.
    async fn torn_down(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let ended = |tasks: &Tasks| {
            tasks
                .lock()
                .processes
                .get(&(id.to_string(), String::new()))
                .is_some_and(|p| p.exit.borrow().is_some())
        };
        while ended(self) && self.shim_of(id).is_some() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for the init (or an exec) to exit; the status.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<u32> {
        let record = self.containers.resolve(id)?;
        let key = (record.id.clone(), exec_id.to_string());
        // Checked and subscribed under one lock: an exit in between is
        // either seen here or recorded in the watch.
        let mut exit = {
            let inner = self.lock();
            let running =
                inner.shims.contains_key(&record.id) || inner.starting.contains(&record.id);
            match inner.processes.get(&key) {
                Some(p) => p.exit.subscribe(),
                None if !exec_id.is_empty() => {
                    return Err(Error::NoExec {
                        container: record.name.clone(),
                        exec: exec_id.to_string(),
                    })
                }
                None if !running && record.status() != pb::container::Status::Restarting => {
                    return Ok(record.state.exit_status);
                }
                None => {
                    drop(inner);
                    self.process(&key).1
                }
            }
        };
        if exec_id.is_empty() && !self.is_running(&record.id) && exit.borrow().is_none() {
            let record = self.containers.resolve(id)?;
            if record.status() != pb::container::Status::Restarting
                && !self.lock().starting.contains(&record.id)
            {
                return Ok(record.state.exit_status);
            }
        }
        let status = exit
            .wait_for(|s| s.is_some())
            .await
            .map(|s| s.unwrap_or(255))
            .unwrap_or(255);
        Ok(status)
    }

    pub async fn pause(&self, id: &str) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        shim.client
            .pause(
                self.ctx(),
                &api::PauseRequest {
                    id: record.id.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(shim_err(&record.name, "Pause"))?;
        self.containers.update(&record.id, |r| {
            r.state.status = pb::container::Status::Paused as i32
        })?;
        Ok(())
    }

    pub async fn resume(&self, id: &str) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        shim.client
            .resume(
                self.ctx(),
                &api::ResumeRequest {
                    id: record.id.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(shim_err(&record.name, "Resume"))?;
        self.containers.update(&record.id, |r| {
            r.state.status = pb::container::Status::Running as i32
        })?;
        Ok(())
    }

    pub async fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        let response = shim
            .client
            .pids(
                self.ctx(),
                &api::PidsRequest {
                    id: record.id.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(shim_err(&record.name, "Pids"))?;
        Ok(response.processes.iter().map(|p| p.pid).collect())
    }

    pub async fn stats(&self, id: &str) -> Result<pb::StatsResponse> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        let response = shim
            .client
            .stats(
                self.ctx(),
                &api::StatsRequest {
                    id: record.id.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(shim_err(&record.name, "Stats"))?;
        let mut out = pb::StatsResponse {
            read_at: Some(crate::events::now()),
            ..Default::default()
        };
        if let Some(any) = response.stats.into_option() {
            if any.type_url.ends_with("cgroups.v2.Metrics") {
                use containerd_shim_protos::cgroups_v2::metrics::Metrics;
                if let Ok(m) = Metrics::parse_from_bytes(&any.value) {
                    out.cpu_usage_ns = m.cpu.usage_usec * 1000;
                    out.memory_usage = m.memory.usage;
                    out.memory_limit = limit(m.memory.usage_limit);
                    out.pids = m.pids.current;
                    out.pids_limit = limit(m.pids.limit);
                }
            } else {
                use containerd_shim_protos::cgroups::metrics::Metrics;
                if let Ok(m) = Metrics::parse_from_bytes(&any.value) {
                    out.cpu_usage_ns = m.cpu.usage.total;
                    out.memory_usage = m.memory.usage.usage;
                    out.memory_limit = limit(m.memory.usage.limit);
                    out.pids = m.pids.current;
                    out.pids_limit = limit(m.pids.limit);
                }
            }
        }
        Ok(out)
    }

    /// New limits for a running container (the shim runs the runtime's
    /// `update --resources -`), kept in its settings for later runs.
    pub async fn update_resources(&self, id: &str, limits: &pb::Resources) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let resources = crate::bundle::limit_resources(limits)
            .map_err(|e| Error::Containers(containers::Error::Bundle(e)))?;
        if let Some(shim) = self.shim_of(&record.id) {
            let mut any = Any::new();
            any.type_url =
                "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
            any.value = serde_json::to_vec(&resources).unwrap_or_default();
            shim.client
                .update(
                    self.ctx(),
                    &api::UpdateTaskRequest {
                        id: record.id.clone(),
                        resources: MessageField::some(any),
                        ..Default::default()
                    },
                )
                .await
                .map_err(shim_err(&record.name, "Update"))?;
        }
        // The next run's config.json gets them too.
        let spec_path = record.bundle.join("config.json");
        if let Some(mut spec) = std::fs::read(&spec_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            if let (Some(object), serde_json::Value::Object(new)) =
                (spec["linux"]["resources"].as_object_mut(), resources)
            {
                object.extend(new);
            }
            let _ = std::fs::write(
                &spec_path,
                serde_json::to_vec_pretty(&spec).unwrap_or_default(),
            );
        }
        let limits = *limits;
        self.containers.update(&record.id, move |r| {
            let mut settings = r.settings();
            settings.resources = Some(limits);
            r.config = prost::Message::encode_to_vec(&settings);
        })?;
        Ok(())
    }

    pub async fn resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        shim.client
            .resize_pty(
                self.ctx(),
                &api::ResizePtyRequest {
                    id: record.id.clone(),
                    exec_id: exec_id.to_string(),
                    width,
                    height,
                    ..Default::default()
                },
            )
            .await
            .map_err(shim_err(&record.name, "ResizePty"))?;
        Ok(())
    }

    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        if let Some(p) = self
            .lock()
            .processes
            .get_mut(&(record.id.clone(), exec_id.to_string()))
        {
            p.stdin = None;
        }
        shim.client
            .close_io(
                self.ctx(),
                &api::CloseIORequest {
                    id: record.id.clone(),
                    exec_id: exec_id.to_string(),
                    stdin: true,
                    ..Default::default()
                },
            )
            .await
            .map_err(shim_err(&record.name, "CloseIO"))?;
        Ok(())
    }

    /// Writes to a process's stdin (Attach); waits while the process does
    /// not read, without holding anything else up.
    pub async fn write_stdin(&self, id: &str, exec_id: &str, data: &[u8]) -> bool {
        use tokio::io::AsyncWriteExt;
        let writer = self
            .lock()
            .processes
            .get(&(id.to_string(), exec_id.to_string()))
            .and_then(|p| p.stdin.clone());
        match writer {
            Some(writer) => writer.lock().await.write_all(data).await.is_ok(),
            None => false,
        }
    }

    /// Prepares an exec: its process spec from the container's, its fifos.
    pub async fn exec(&self, id: &str, request: &pb::ExecProcessRequest) -> Result<String> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        if record.status() == pb::container::Status::Paused {
            return Err(Error::Paused(record.name.clone()));
        }
        let exec_id = if request.exec_id.is_empty() {
            crate::volumes::random_hex(8)
        } else {
            request.exec_id.clone()
        };
        // It names files in the bundle: containerd's identifier rule.
        if !valid_identifier(&exec_id) {
            return Err(Error::Invalid(format!(
                "invalid exec id {exec_id:?}: use letters, digits and . _ - between them, at most 76"
            )));
        }
        let key = (record.id.clone(), exec_id.clone());
        if self.lock().processes.contains_key(&key) {
            return Err(Error::ExecExists {
                container: record.name.clone(),
                exec: exec_id,
            });
        }
        // The container's own process (user, capabilities, no_new_privs)
        // is the template: an exec never runs with less confinement.
        let spec_path = record.bundle.join("config.json");
        let spec: serde_json::Value = std::fs::read(&spec_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Error::Stdio {
                container: record.name.clone(),
                detail: format!("cannot read the container's spec {}", spec_path.display()),
            })?;
        let mut process = spec["process"].clone();
        if !process.is_object() {
            return Err(Error::Stdio {
                container: record.name.clone(),
                detail: format!("{} has no process", spec_path.display()),
            });
        }
        if request.args.is_empty() {
            return Err(Error::Invalid("exec needs a command".into()));
        }
        if let Some(bad) = request.env.iter().find(|e| !e.contains('=')) {
            return Err(Error::Invalid(format!(
                "invalid environment entry {bad:?}: use KEY=VALUE"
            )));
        }
        process["args"] = serde_json::json!(request.args);
        process["terminal"] = serde_json::json!(request.tty);
        if !request.working_dir.is_empty() {
            process["cwd"] = serde_json::json!(request.working_dir);
        }
        if !request.env.is_empty() {
            let mut env: Vec<String> = process["env"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for entry in &request.env {
                let key = entry.split('=').next().unwrap_or_default();
                env.retain(|e| e.split('=').next() != Some(key));
                env.push(entry.clone());
            }
            process["env"] = serde_json::json!(env);
        }
        if !request.user.is_empty() {
            let (uid, gid, groups) = crate::bundle::resolve_user(&request.user, &[record.rootfs()])
                .map_err(|e| Error::Invalid(e.to_string()))?;
            process["user"] = serde_json::json!({"uid": uid, "gid": gid, "additionalGids": groups});
        }
        let dir = record.bundle.join("exec");
        let _ = std::fs::create_dir_all(&dir);
        let (stdout, stderr, stdin) = make_stdio(
            &record.name,
            &dir,
            &exec_id,
            request.tty,
            request.stdin_open,
        )?;
        let mut any = Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        any.value = serde_json::to_vec(&process).unwrap_or_default();
        let request_ = api::ExecProcessRequest {
            id: record.id.clone(),
            exec_id: exec_id.clone(),
            terminal: request.tty,
            stdin: stdin
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            stdout: stdout.display().to_string(),
            stderr: stderr
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            spec: MessageField::some(any),
            ..Default::default()
        };
        let readers = OutputReaders::open(&record.name, &stdout, stderr.as_deref())?;
        shim.client
            .exec(self.ctx(), &request_)
            .await
            .map_err(shim_err(&record.name, "Exec"))?;
        let (output, _) = self.process(&key);
        if let Some(p) = self.lock().processes.get_mut(&key) {
            p.streams = if request.tty { 1 } else { 2 };
        }
        self.spawn_copiers(&record.bundle, readers, output, false);
        if let Some(path) = &stdin {
            self.open_stdin(&key, path);
        }
        Ok(exec_id)
    }

    async fn start_exec(self: &Arc<Self>, record: &ContainerRecord, exec_id: &str) -> Result<u32> {
        let shim = self.running_shim(record)?;
        let key = (record.id.clone(), exec_id.to_string());
        if !self.lock().processes.contains_key(&key) {
            return Err(Error::NoExec {
                container: record.name.clone(),
                exec: exec_id.to_string(),
            });
        }
        let started = shim
            .client
            .start(
                self.ctx(),
                &api::StartRequest {
                    id: record.id.clone(),
                    exec_id: exec_id.to_string(),
                    ..Default::default()
                },
            )
            .await
            .map_err(shim_err(&record.name, "Start"))?;
        let tasks = self.clone();
        let id = record.id.clone();
        let exec = exec_id.to_string();
        let dir = record.bundle.join("exec");
        tokio::spawn(async move {
            let waited = shim
                .client
                .wait(
                    tasks.wait_ctx(),
                    &api::WaitRequest {
                        id: id.clone(),
                        exec_id: exec.clone(),
                        ..Default::default()
                    },
                )
                .await;
            let status = waited.map(|r| r.exit_status).unwrap_or(255);
            let _ = shim
                .client
                .delete(
                    tasks.ctx(),
                    &api::DeleteRequest {
                        id: id.clone(),
                        exec_id: exec.clone(),
                        ..Default::default()
                    },
                )
                .await;
            // The exec's exit stays known (Wait after it ended), its stdin goes.
            if let Some(p) = tasks.lock().processes.get_mut(&(id, exec.clone())) {
                p.stdin = None;
                p.exit.send_replace(Some(status));
            }
            for suffix in ["stdout", "stderr", "stdin"] {
                let _ = std::fs::remove_file(dir.join(format!("{exec}-{suffix}")));
            }
        });
        Ok(started.pid)
    }

    /// The output and exit of a process, for Attach.
    pub fn attach(&self, id: &str, exec_id: &str, before_start: bool) -> Result<Attached> {
        let record = self.containers.resolve(id)?;
        let key = (record.id.clone(), exec_id.to_string());
        if !exec_id.is_empty() && !self.lock().processes.contains_key(&key) {
            return Err(Error::NoExec {
                container: record.name.clone(),
                exec: exec_id.to_string(),
            });
        }
        // Attaching to a stopped init would wait for an exit that came and
        // went (docker refuses it too); a created one is about to start, and
        // so is one whose client says it starts it next (start -a).
        if exec_id.is_empty()
            && !before_start
            && !self.is_running(&record.id)
            && !self.lock().starting.contains(&record.id)
            && record.status() != pb::container::Status::Created
            && record.status() != pb::container::Status::Restarting
        {
            return Err(Error::NotRunning(record.name.clone()));
        }
        let (output, exit) = self.process(&key);
        let tty = exec_id.is_empty() && record.settings().tty;
        let streams = self
            .lock()
            .processes
            .get(&key)
            .map_or(if tty { 1 } else { 2 }, |p| if tty { 1 } else { p.streams });
        Ok(Attached {
            output: output.subscribe(),
            exit,
            container_id: record.id,
            streams,
        })
    }

    /// The init's live output, for `logs -f`.
    pub fn follow(&self, id: &str) -> (broadcast::Receiver<Chunk>, watch::Receiver<Option<u32>>) {
        let (output, exit) = self.process(&(id.to_string(), String::new()));
        (output.subscribe(), exit)
    }

    pub fn is_running(&self, id: &str) -> bool {
        self.shim_of(id).is_some()
    }

    /// Forgets a deleted container's processes.
    pub fn forget(&self, id: &str) {
        self.lock().processes.retain(|(c, _), _| c != id);
    }

    /// After a daemon restart: reconnects to the shims of containers that
    /// were running (their bundles' `address` files), resumes reading their
    /// output, and marks those whose shims are gone as stopped. Containers
    /// with `always` (or `unless-stopped`, not stopped by the user) whose
    /// shims are gone are started again, and so are `always` containers a
    /// client stopped, as docker does at its start.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        for record in self.containers.list()? {
            use pb::container::Status;
            let was_running = matches!(
                record.status(),
                Status::Running | Status::Paused | Status::Restarting
            );
            if !was_running {
                let ran = record.state.started_at != 0;
                if restarts_always(&record) && ran && record.status() == Status::Stopped {
                    self.start_always(&record).await;
                }
                continue;
            }
            let address =
                std::fs::read_to_string(record.bundle.join("address")).unwrap_or_default();
            let shim = match shim::connect(address.trim()).await {
                Ok(shim) if !address.trim().is_empty() => Some(shim),
                _ => None,
            };
            let state = match &shim {
                Some(shim) => shim
                    .client
                    .state(
                        self.ctx(),
                        &api::StateRequest {
                            id: record.id.clone(),
                            ..Default::default()
                        },
                    )
                    .await
                    .ok(),
                None => None,
            };
            let alive = state.as_ref().is_some_and(|s| {
                use containerd_shim_protos::types::task::Status as S;
                matches!(s.status.enum_value_or_default(), S::RUNNING | S::PAUSED)
            });
            match (shim, alive) {
                (Some(shim), true) => {
                    let settings = record.settings();
                    let (output, _) = self.process(&(record.id.clone(), String::new()));
                    let stderr = (!settings.tty).then(|| record.bundle.join("init-stderr"));
                    // The shim holds the write ends: output written while the
                    // daemon was away waits in the fifos.
                    match OutputReaders::open(
                        &record.name,
                        &record.bundle.join("init-stdout"),
                        stderr.as_deref(),
                    ) {
                        Ok(readers) => self.spawn_copiers(&record.bundle, readers, output, true),
                        Err(e) => eprintln!("berth-imaged: {e}: its output is not read"),
                    }
                    if settings.stdin_open {
                        self.open_stdin(
                            &(record.id.clone(), String::new()),
                            &record.bundle.join("init-stdin"),
                        );
                    }
                    self.lock().shims.insert(record.id.clone(), shim.clone());
                    self.spawn_watcher(record.id.clone(), shim);
                }
                (shim, _) => {
                    // The shim went away with the container: what is known.
                    let status = state.map(|s| s.exit_status).unwrap_or(255);
                    if let Some(shim) = shim {
                        let _ = shim
                            .client
                            .shutdown(
                                self.ctx(),
                                &api::ShutdownRequest {
                                    id: record.id.clone(),
                                    now: true,
                                    ..Default::default()
                                },
                            )
                            .await;
                    }
                    self.launcher.delete(&record.id, &record.bundle).await;
                    self.disconnect_network(&record.id).await;
                    let record = self.containers.update(&record.id, |r| {
                        r.state.status = Status::Stopped as i32;
                        r.state.exit_status = status;
                        r.state.finished_at = now_secs();
                        r.state.pid = 0;
                    })?;
                    if record.settings().auto_remove {
                        // A `run -d --rm` that ended while the daemon was
                        // away: removed as it would have been (no restart
                        // policy can go with auto_remove).
                        if let Err(e) = self.delete_container(&record.id, false, true).await {
                            eprintln!(
                                "berth-imaged: cannot remove {} (--rm) after its end: {e}",
                                record.name
                            );
                        }
                        continue;
                    }
                    if restarts_always(&record) && record.state.stopped_by_user {
                        self.start_always(&record).await;
                    } else {
                        // Its exit, unseen while the daemon was away, is
                        // treated as any other.
                        self.apply_restart_policy(&record, status);
                    }
                }
            }
        }
        // Namespaces, leases and rules of containers that are not running
        // (ended or half started while the daemon was away) go; the running
        // ones get their host ports held again.
        let networks = self.containers.networks.clone();
        let running: std::collections::HashSet<String> =
            self.lock().shims.keys().cloned().collect();
        let _ =
            tokio::task::spawn_blocking(move || networks.recover(|id| running.contains(id))).await;
        Ok(())
    }

    /// Starts an `always` container a client stopped, as docker does when
    /// its daemon starts: as a client's start, so the stop is forgotten.
    async fn start_always(self: &Arc<Self>, record: &ContainerRecord) {
        if let Err(e) = self.start_init(record, false).await {
            eprintln!("berth-imaged: cannot restart {} (always): {e}", record.name);
        }
    }

    /// Deletes a container: its task first (killed when `force`).
    /// `volumes`: its anonymous volumes go too (`rm -v`, `--rm`).
    pub async fn delete_container(
        self: &Arc<Self>,
        id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        let record = self.containers.resolve(id)?;
        // A task that has just ended may still be taking its network down.
        self.torn_down(&record.id).await;
        if self.shim_of(&record.id).is_some() {
            if !force {
                return Err(Error::Running(record.name.clone()));
            }
            self.containers
                .update(&record.id, |r| r.state.stopped_by_user = true)?;
            let (_, mut exit) = self.process(&(record.id.clone(), String::new()));
            if record.status() == pb::container::Status::Paused {
                let _ = self.resume(&record.id).await;
            }
            let _ = self.kill(&record.id, "", libc::SIGKILL as u32, true).await;
            let exited =
                tokio::time::timeout(Duration::from_secs(10), exit.wait_for(|s| s.is_some()))
                    .await
                    .is_ok();
            if exited {
                self.torn_down(&record.id).await;
            }
            if !exited {
                // The shim does not answer: its own clean-up kills what is
                // left and removes the runtime's state; only then may the
                // rootfs and bundle go.
                self.launcher.delete(&record.id, &record.bundle).await;
                let gone = self.lock().shims.remove(&record.id).is_some();
                if gone && self.runtime_still_has(&record.id) {
                    return Err(Error::Stuck {
                        container: record.name.clone(),
                        detail: "its processes did not exit after SIGKILL".into(),
                    });
                }
            }
        } else {
            self.containers
                .update(&record.id, |r| r.state.stopped_by_user = true)?;
        }
        // Unmounting and removing a rootfs that holds many files can take
        // seconds: not on one of the daemon's two async threads.
        let containers = self.containers.clone();
        let id = record.id.clone();
        tokio::task::spawn_blocking(move || containers.delete(&id, volumes))
            .await
            .map_err(|e| Error::Invalid(format!("removing {}: {e}", record.name)))??;
        self.forget(&record.id);
        // Every removal is announced, whoever asked (a client, --rm, the
        // recovery at start-up), with the container's id.
        self.hub.publish(
            "/containers/delete",
            "berth.v1.DeleteContainerRequest",
            prost::Message::encode_to_vec(&pb::DeleteContainerRequest {
                id: record.id.clone(),
                force,
                volumes,
            }),
        );
        Ok(())
    }

    /// Whether the runtime still knows the container (its state directory).
    fn runtime_still_has(&self, id: &str) -> bool {
        self.launcher
            .runtime_root
            .join(&self.launcher.namespace)
            .join(id)
            .exists()
            || self.launcher.runtime_root.join(id).exists()
    }

    /// Watches OOM notices to record them on the container.
    pub fn spawn_oom_watch(self: &Arc<Self>) {
        let tasks = self.clone();
        let mut events = self.hub.subscribe();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if let Some(Notice::Oom { container }) = event.notice {
                            let _ = tasks
                                .containers
                                .update(&container, |r| r.state.oom_killed = true);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
}

/// containerd's rule for identifiers that name files.
fn valid_identifier(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 76
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !bytes
            .windows(2)
            .any(|w| !w[0].is_ascii_alphanumeric() && !w[1].is_ascii_alphanumeric())
}

/// The daemon's read ends of one process's output fifos.
struct OutputReaders {
    stdout: logs::FifoReader,
    stderr: Option<logs::FifoReader>,
}

impl OutputReaders {
    /// Opens them; done before the shim opens the write ends (see
    /// [`logs::open_reader`]), and dropped if it never does.
    fn open(container: &str, stdout: &Path, stderr: Option<&Path>) -> Result<OutputReaders> {
        let open = |path: &Path| {
            logs::open_reader(path).map_err(|e| Error::Stdio {
                container: container.to_string(),
                detail: format!("cannot open {}: {e}", path.display()),
            })
        };
        Ok(OutputReaders {
            stdout: open(stdout)?,
            stderr: stderr.map(open).transpose()?,
        })
    }
}

/// The fifos of one process in `dir` (`PREFIX-stdout`, `-stderr` unless it
/// has a terminal, `-stdin` when it keeps stdin open).
fn make_stdio(
    name: &str,
    dir: &Path,
    prefix: &str,
    tty: bool,
    stdin_open: bool,
) -> Result<(PathBuf, Option<PathBuf>, Option<PathBuf>)> {
    let fifo = |stream: &str| -> Result<PathBuf> {
        let path = dir.join(format!("{prefix}-{stream}"));
        logs::make_fifo(&path).map_err(|e| Error::Stdio {
            container: name.to_string(),
            detail: format!("{}: {e}", path.display()),
        })?;
        Ok(path)
    };
    let stdout = fifo("stdout")?;
    let stderr = if tty { None } else { Some(fifo("stderr")?) };
    let stdin = if stdin_open {
        Some(fifo("stdin")?)
    } else {
        None
    };
    Ok((stdout, stderr, stdin))
}

/// v1/v2 "max" arrives as a huge number: 0 means no limit in our API.
fn limit(value: u64) -> u64 {
    if value >= i64::MAX as u64 / 2 {
        0
    } else {
        value
    }
}

fn restarts_always(record: &ContainerRecord) -> bool {
    record
        .settings()
        .restart
        .is_some_and(|policy| policy.kind == pb::restart_policy::Kind::Always as i32)
}

/// How long to wait before restarting after an exit with `status`, or
/// `None` when the policy says no. Docker's back-off: 100 ms doubling per
/// restart, at most a minute.
pub fn restart_delay(record: &ContainerRecord, status: u32) -> Option<Duration> {
    use pb::restart_policy::Kind;
    if record.state.stopped_by_user {
        return None;
    }
    let policy = record.settings().restart.unwrap_or_default();
    let restart = match Kind::try_from(policy.kind).unwrap_or(Kind::No) {
        Kind::No => false,
        Kind::Always | Kind::UnlessStopped => true,
        Kind::OnFailure => {
            status != 0
                && (policy.max_retries == 0 || record.state.restart_count < policy.max_retries)
        }
    };
    if !restart {
        return None;
    }
    // A run of 10 s or more starts the back-off over (docker's rule).
    let ran = record
        .state
        .finished_at
        .saturating_sub(record.state.started_at);
    if ran >= 10 {
        return Some(Duration::from_millis(100));
    }
    let exponent = record.state.restart_count.min(10);
    Some(Duration::from_millis(100u64 << exponent).min(Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn record(kind: pb::restart_policy::Kind, max: u32, count: u32) -> ContainerRecord {
        let settings = pb::ContainerConfig {
            restart: Some(pb::RestartPolicy {
                kind: kind as i32,
                max_retries: max,
            }),
            ..Default::default()
        };
        ContainerRecord {
            id: "c".into(),
            name: "c".into(),
            config: settings.encode_to_vec(),
            image_digest: String::new(),
            snapshot_key: String::new(),
            bundle: PathBuf::new(),
            labels: Default::default(),
            created: 0,
            state: containers::RunState {
                restart_count: count,
                ..Default::default()
            },
            volumes: vec![],
            stop_signal: String::new(),
            command: vec![],
        }
    }

    #[test]
    fn restart_policies_decide_like_docker() {
        use pb::restart_policy::Kind;
        assert_eq!(restart_delay(&record(Kind::No, 0, 0), 1), None);
        assert_eq!(restart_delay(&record(Kind::OnFailure, 3, 0), 0), None);
        assert_eq!(
            restart_delay(&record(Kind::OnFailure, 3, 0), 1),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            restart_delay(&record(Kind::OnFailure, 3, 2), 1),
            Some(Duration::from_millis(400))
        );
        assert_eq!(restart_delay(&record(Kind::OnFailure, 3, 3), 1), None);
        assert!(restart_delay(&record(Kind::Always, 0, 0), 0).is_some());
        let mut stopped = record(Kind::Always, 0, 0);
        stopped.state.stopped_by_user = true;
        assert_eq!(restart_delay(&stopped, 0), None);
        assert_eq!(
            restart_delay(&record(Kind::Always, 0, 40), 0),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("kill"), Some(9));
        assert_eq!(signal_number("2"), Some(2));
        assert_eq!(signal_number("SIGBOGUS"), None);
    }
}
