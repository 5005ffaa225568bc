//! Tasks: running containers through their shims.
//!
//! A container's first start makes its stdio fifos in the bundle, starts a
//! shim ([`crate::shim`]), and asks it to Create and Start the task; a
//! watcher then waits for the exit (the shim's Wait), records it, tears the
//! task and the shim down, and applies the restart policy. The daemon reads
//! the output fifos itself ([`crate::logs`]): the init's output goes to the
//! log and to attached clients. After a daemon restart, [`Tasks::recover`]
//! finds running containers through their bundles' `address` files.
//!
//! One file per concern: `lifecycle` (start, the exit watcher, kill, stop,
//! wait, removal), `network` (what a start and an end do to the
//! container's networks), `io` (fifos, stdin, attach), `exec`, `control`
//! (pause, resume, stats, live limits), `restart` (policies and back-off),
//! `recovery` (after a daemon restart; OOM notices). This file holds the
//! state they share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::v1 as pb;
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use tokio::sync::{broadcast, watch};

use crate::clock::now_secs;
use crate::containers::{self, ContainerRecord, Containers};
use crate::events::{Hub, Notice};
use crate::logs::{self, Chunk, LogWriter};
use crate::shim::{self, Launcher, Shim};

/// One Task RPC on `$shim` about the container `$record`: the request with
/// its `id` filled in (and the other fields given), the daemon's context, and
/// an error that names the container and the RPC ([`shim_err`]).
macro_rules! shim_rpc {
    ($tasks:expr, $shim:expr, $record:expr, $method:ident, $rpc:literal,
     $request:ident { $($field:ident $(: $value:expr)?),* $(,)? }) => {
        $shim
            .client
            .$method(
                $tasks.ctx(),
                &api::$request {
                    id: $record.id.clone(),
                    $($field $(: $value)?,)*
                    ..Default::default()
                },
            )
            .await
            .map_err(shim_err(&$record.name, $rpc))
    };
}

mod control;
mod exec;
mod io;
mod lifecycle;
mod network;
mod recovery;
mod restart;

use io::{make_stdio, OutputReaders};
use restart::restarts_always;
pub use restart::{has_restart_policy, restart_delay};

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
    /// Whether an init's output waits for its slowest reader (as an
    /// exec's always does) instead of dropping what it has not taken: the
    /// CRI's, whose log kubelet reads, must be whole.
    pub init_output_waits: bool,
    inner: Mutex<Inner>,
    /// Woken when an ended task's teardown is done (its shim entry gone).
    teardowns: tokio::sync::Notify,
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
            init_output_waits: false,
            inner: Mutex::new(Inner::default()),
            teardowns: tokio::sync::Notify::new(),
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

    /// Waits through `shim` for the exit of the container's init (an empty
    /// `exec_id`) or of one exec. A shim that died answers nothing: 255, as
    /// containerd reports it.
    async fn shim_wait(&self, shim: &Shim, id: &str, exec_id: &str) -> u32 {
        let request = api::WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let waited = shim.client.wait(self.wait_ctx(), &request).await;
        waited.map(|r| r.exit_status).unwrap_or(255)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shim_of(&self, id: &str) -> Option<Shim> {
        self.lock().shims.get(id).cloned()
    }

    /// The shim of a container whose init runs; one whose exit is known
    /// (its teardown under way) is not running.
    fn running_shim(&self, record: &ContainerRecord) -> Result<Shim> {
        match self.shim_of(&record.id) {
            Some(shim) if self.init_alive(&record.id) => Ok(shim),
            _ => Err(Error::NotRunning(record.name.clone())),
        }
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
                output: broadcast::channel(crate::logs::OUTPUT_CAPACITY).0,
                exit: watch::channel(None).0,
                stdin: None,
                streams: 2,
            });
        (process.output.clone(), process.exit.subscribe())
    }

    /// Waits (at most 10 s) until an ended task's teardown is done: its
    /// exit is sent before its network is taken down (see `exited`), and a
    /// stop, a removal or a new start must find all of it gone.
    async fn torn_down(&self, id: &str) {
        let done = self.teardown_wait(|| !self.ending(id));
        let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
    }

    /// Whether the container `id` (an exact id) is removed: told with its
    /// exit to an attached client, which then has nothing to remove.
    pub fn is_removed(&self, id: &str) -> bool {
        !self.containers.exists(id)
    }

    /// Whether the container's task has ended and is being torn down: its
    /// exit is known and its shim not yet gone.
    fn ending(&self, id: &str) -> bool {
        let inner = self.lock();
        inner.shims.contains_key(id)
            && inner
                .processes
                .get(&(id.to_string(), String::new()))
                .is_some_and(|p| p.exit.borrow().is_some())
    }

    /// Waits until the container has no shim (its teardown is done). No
    /// deadline: a teardown ends, its RPCs have theirs.
    async fn shim_gone(&self, id: &str) {
        self.teardown_wait(|| self.shim_of(id).is_none()).await
    }

    /// Waits until `done` holds, checking again after each teardown.
    async fn teardown_wait(&self, done: impl Fn() -> bool) {
        loop {
            // Registered before the check: a teardown finishing in
            // between still wakes it.
            let woken = self.teardowns.notified();
            if done() {
                return;
            }
            woken.await;
        }
    }

    /// Asks a shim to stop serving `id` and exit at once (containerd's
    /// Shutdown after a task's Delete); a shim that does not answer is
    /// left to its caller's clean-up.
    async fn shut_down(&self, shim: &Shim, id: &str) {
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
    }

    pub fn is_running(&self, id: &str) -> bool {
        self.shim_of(id).is_some()
    }

    /// Whether the container's init still runs: its shim is there and its
    /// exit is not known yet. (The exit is sent before the teardown, so for
    /// a moment a shim outlives its init: an attach then waits for the
    /// next run, not for the one that has ended.)
    pub fn init_alive(&self, id: &str) -> bool {
        let inner = self.lock();
        inner.shims.contains_key(id)
            && inner
                .processes
                .get(&(id.to_string(), String::new()))
                .is_none_or(|p| p.exit.borrow().is_none())
    }

    /// Forgets a deleted container's processes.
    pub fn forget(&self, id: &str) {
        self.lock().processes.retain(|(c, _), _| c != id);
    }
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
