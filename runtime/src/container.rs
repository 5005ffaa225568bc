//! The runtime's verbs: what each command does to a container.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cleaner;
mod create;

use create::{build, Built};
pub(crate) use create::{compile_seccomp, has_runtime_hooks, pass_listen_fds};
pub use create::{create, CreateOptions, Loaded};

use crate::cgroups::{self, CgroupError};
use crate::channel::ChannelError;
use crate::hooks::{self, HookError};
use crate::namespaces::NamespaceError;
use crate::spec::SpecError;
use crate::state::{self, ContainerDir, State, StateError, Status};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error("bundle {path}: {source}")]
    Bundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rootfs ({path}) does not exist")]
    NoRootfs { path: PathBuf },
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("container init failed: {0}")]
    Init(String),
    #[error("cannot start a container that has stopped")]
    StartStopped,
    #[error("cannot start an already running container")]
    StartRunning,
    #[error("cannot start a container in the {0} state")]
    StartState(&'static str),
    #[error("container not running")]
    NotRunning,
    #[error("cannot delete container {id} that is not stopped: {status}")]
    DeleteRunning { id: String, status: &'static str },
    #[error("container not paused")]
    NotPaused,
    #[error("no such process")]
    NoSuchProcess,
    #[error("starting container process caused: {0}")]
    StartFailed(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Io { what, source }
}

/// The state JSON of the OCI spec, as hooks receive it on stdin.
fn oci_state_json(state: &State, status: Status) -> String {
    serde_json::to_string(&state.oci(status)).unwrap_or_default()
}

fn connect_start_socket(dir: &Path) -> std::io::Result<UnixStream> {
    let dir_fd = std::fs::File::open(dir)?;
    UnixStream::connect(format!(
        "/proc/self/fd/{}/{}",
        dir_fd.as_raw_fd(),
        state::START_SOCKET
    ))
}

/// `berth start`: lets the init exec the user's process, and returns once it has.
pub fn start(root: &Path, id: &str) -> Result<(), ContainerError> {
    let dir = ContainerDir::open(root, id)?;
    let state = dir.load()?;
    match dir.status(&state) {
        Status::Created => {}
        Status::Stopped => return Err(ContainerError::StartStopped),
        Status::Running => return Err(ContainerError::StartRunning),
        other => return Err(ContainerError::StartState(other.as_str())),
    }
    let mut stream =
        connect_start_socket(&dir.path).map_err(io("cannot reach the container init"))?;
    let mut reply = Vec::new();
    use std::io::Read;
    // EOF comes when the init's execve closes its end.
    let _ = stream.read_to_end(&mut reply);
    let _ = std::fs::remove_file(dir.start_socket());
    crate::trace::step("start: init exec'd");
    if let Some(answer) = crate::channel::start_reply(&reply)? {
        let program = match answer {
            // Only the launcher's errno needs the process's args[0].
            crate::channel::Message::ExecFailed(_) => saved_program(&dir, &state),
            _ => String::new(),
        };
        return Err(ContainerError::StartFailed(answer.start_failure(&program)));
    }
    poststart(&state)
}

/// The process's `args[0]` in the config `create` saved (or the bundle's,
/// for a container of an older berth).
fn saved_program(dir: &ContainerDir, state: &State) -> String {
    let spec = match std::fs::read(dir.path.join(state::CONFIG_FILE)) {
        Ok(bytes) => crate::spec::Spec::from_slice(&bytes),
        Err(_) => crate::spec::Spec::load(&state.bundle),
    };
    spec.ok()
        .and_then(|spec| spec.process?.args.into_iter().next())
        .unwrap_or_default()
}

/// The poststart hooks, once the user's process runs.
fn poststart(state: &State) -> Result<(), ContainerError> {
    if let Some(h) = &state.hooks {
        if let Err(e) = hooks::run_all(
            "poststart",
            &h.poststart,
            oci_state_json(state, Status::Running).as_bytes(),
        ) {
            // As runc: a failed poststart hook takes the container down.
            signal_all(state, libc::SIGKILL);
            return Err(e.into());
        }
    }
    Ok(())
}

/// `run`'s `start`: the init was built with `by_channel`.
fn release(built: &Built) -> Result<(), ContainerError> {
    let channel = built
        .channel
        .as_ref()
        .ok_or_else(|| ContainerError::Usage("the init has no start channel".into()))?;
    let started = match built.start_sent {
        true => channel.started(&built.program)?,
        false => channel.start(&built.program)?,
    };
    let _ = std::fs::remove_file(built.dir.join(state::START_SOCKET));
    crate::trace::step("start: init exec'd");
    started.map_err(ContainerError::StartFailed)?;
    poststart(&built.state)
}

/// `berth state`.
pub fn state_json(root: &Path, id: &str) -> Result<String, ContainerError> {
    let (dir, state) = state::read_unlocked(root, id)?;
    let oci = state.oci(state::status_at(&dir, &state));
    Ok(serde_json::to_string_pretty(&oci).unwrap_or_default())
}

/// A signal by name (`TERM`, `SIGTERM`) or number.
/// A signal by number or name; 0 sends nothing and only checks that the
/// process exists (kill(2)), as `runc kill ID 0` does.
pub fn parse_signal(text: &str) -> Result<i32, ContainerError> {
    if let Ok(n) = text.parse::<i32>() {
        if (0..=64).contains(&n) {
            return Ok(n);
        }
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let full = format!("SIG{name}");
    full.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| ContainerError::Usage(format!("unknown signal {text:?}")))
}

fn signal_all(state: &State, signal: i32) {
    let mut pids = cgroups::driver_for(&state.cgroup_paths).pids();
    if pids.is_empty() {
        pids.push(state.pid);
    }
    for pid in pids {
        // SAFETY: plain kill.
        unsafe { libc::kill(pid, signal) };
    }
}

/// `berth kill [--all] ID SIGNAL`.
pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<(), ContainerError> {
    let (dir, state) = state::read_unlocked(root, id)?;
    if state::status_at(&dir, &state) == Status::Stopped {
        return Err(ContainerError::NotRunning);
    }
    if all {
        signal_all(&state, signal);
        return Ok(());
    }
    // SAFETY: plain kill of the verified init pid.
    if unsafe { libc::kill(state.pid, signal) } != 0 {
        return Err(ContainerError::NoSuchProcess);
    }
    Ok(())
}

/// Waits until `pid` (not our child) is gone.
fn wait_gone(pid: i32, start: u64) {
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 && state::process_is(pid, start) {
        // SAFETY: the fd is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 10_000) };
        return;
    }
    for _ in 0..5000 {
        if !state::process_is(pid, start) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `berth delete [--force] ID`.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), ContainerError> {
    if let Some(dir) = stop_and_clear(root, id, force)? {
        dir.remove()?;
        crate::trace::step("delete: state removed");
    }
    Ok(())
}

/// `delete` but for the removal of the state directory, which it returns
/// (none: there was no complete container, and what a killed create left
/// is gone).
fn stop_and_clear(
    root: &Path,
    id: &str,
    force: bool,
) -> Result<Option<ContainerDir>, ContainerError> {
    let dir = match ContainerDir::open(root, id) {
        Ok(dir) => dir,
        Err(StateError::NotExist) if force => return remove_unfinished(root, id).map(|()| None),
        Err(e) => return Err(e.into()),
    };
    let state = dir.load()?;
    let status = dir.status(&state);
    match status {
        Status::Stopped => {}
        Status::Created => kill_and_wait(&state),
        _ if force => kill_and_wait(&state),
        _ => {
            return Err(ContainerError::DeleteRunning {
                id: id.to_string(),
                status: status.as_str(),
            })
        }
    }
    crate::trace::step("delete: state loaded, init gone");
    if !state.own_pid_namespace {
        // Without a pid namespace of its own, the init's children survive it.
        signal_all(&state, libc::SIGKILL);
    }
    cgroups::driver_for(&state.cgroup_paths).remove();
    crate::trace::step("delete: cgroups removed");
    if let Some(h) = &state.hooks {
        if let Err(e) = hooks::run_all(
            "poststop",
            &h.poststop,
            oci_state_json(&state, Status::Stopped).as_bytes(),
        ) {
            crate::log::warn(&e.to_string());
        }
    }
    Ok(Some(dir))
}

/// `delete --force` of an id whose `create` was killed half-way: the
/// directory has no state.json. Waits for a `create` still running (it holds
/// the lock), then removes what is left unless that create finished.
fn remove_unfinished(root: &Path, id: &str) -> Result<(), ContainerError> {
    // Once locked, still the directory the path names: one its holder
    // removed may be a new create's by now (see `ContainerDir::open_left`).
    state::validate_id(id)?;
    let Ok(dir) = ContainerDir::open_left(root, id) else {
        return Ok(());
    };
    if dir.path.join("state.json").exists() {
        drop(dir);
        return delete(root, id, true);
    }
    cleaner::clear(&dir.path);
    Ok(())
}

fn kill_and_wait(state: &State) {
    signal_all(state, libc::SIGKILL);
    let cgroup = cgroups::driver_for(&state.cgroup_paths);
    if cgroup.is_frozen() {
        // Frozen tasks take the queued SIGKILL only once thawed.
        let _ = cgroup.freeze(false);
    }
    wait_gone(state.pid, state.init_start_time);
}

/// `berth pause`: freezes every process of the container.
pub fn pause(root: &Path, id: &str) -> Result<(), ContainerError> {
    let dir = ContainerDir::open(root, id)?;
    let state = dir.load()?;
    // A created container is not paused: its init is berth waiting for
    // `start`, which would then wait on a frozen process.
    if dir.status(&state) != Status::Running {
        return Err(ContainerError::NotRunning);
    }
    cgroups::driver_for(&state.cgroup_paths).freeze(true)?;
    Ok(())
}

/// `berth resume`: thaws a paused container.
pub fn resume(root: &Path, id: &str) -> Result<(), ContainerError> {
    let dir = ContainerDir::open(root, id)?;
    let state = dir.load()?;
    if dir.status(&state) != Status::Paused {
        return Err(ContainerError::NotPaused);
    }
    cgroups::driver_for(&state.cgroup_paths).freeze(false)?;
    Ok(())
}

/// The pids of every process in the container.
/// A stopped container has none, which is an answer, not an error (runc).
pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>, ContainerError> {
    let (_, state) = state::read_unlocked(root, id)?;
    Ok(cgroups::driver_for(&state.cgroup_paths).pids())
}

/// `berth update`: new limits for a live container.
pub fn update(
    root: &Path,
    id: &str,
    resources: &crate::spec::Resources,
) -> Result<(), ContainerError> {
    let dir = ContainerDir::open(root, id)?;
    let state = dir.load()?;
    if dir.status(&state) == Status::Stopped {
        return Err(ContainerError::NotRunning);
    }
    if let Some(key) = resources.others.keys().next() {
        return Err(ContainerError::Usage(format!(
            "linux.resources.{key} cannot be updated by berth yet"
        )));
    }
    if !resources.devices.is_empty() {
        // Rewriting a live allow-list would pass through deny-all: not yet.
        return Err(ContainerError::Usage(
            "linux.resources.devices cannot be updated by berth yet".into(),
        ));
    }
    cgroups::validate_resources(resources)?;
    cgroups::driver_for(&state.cgroup_paths).apply(resources)?;
    Ok(())
}

/// One row of `berth list`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListEntry {
    pub oci_version: &'static str,
    pub id: String,
    pub pid: i32,
    pub status: &'static str,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    pub annotations: std::collections::BTreeMap<String, String>,
}

pub fn list(root: &Path) -> Vec<ListEntry> {
    state::list_ids(root)
        .into_iter()
        .filter_map(|id| state::read_unlocked(root, &id).ok())
        .map(|(dir, state)| {
            let status = state::status_at(&dir, &state);
            ListEntry {
                oci_version: crate::OCI_VERSION,
                id: state.id,
                pid: if status == Status::Stopped {
                    0
                } else {
                    state.pid
                },
                status: status.as_str(),
                bundle: state.bundle,
                rootfs: state.rootfs,
                created: state.created,
                owner: state.owner,
                annotations: state.annotations,
            }
        })
        .collect()
}

/// `berth run` in the foreground: create, start, wait, delete; returns the
/// exit status to exit with (128+signal when killed).
pub fn run(
    root: &Path,
    options: &CreateOptions,
    detach: bool,
    keep: bool,
) -> Result<i32, ContainerError> {
    // In the foreground without a console socket, a terminal process gets a
    // pty whose master comes back to berth, which relays it to the caller's
    // terminal (as runc does).
    let relay = if !detach && options.console_socket.is_none() {
        Some(UnixStream::pair().map_err(io("console socket pair"))?)
    } else {
        None
    };
    let mut options = options.clone();
    options.console_fd = relay.as_ref().map(|(_, theirs)| theirs.as_raw_fd());
    // berth is the init's parent here: it releases the init through the
    // channel, with no start socket (see `init::Release::Channel`).
    let built = build(root, &options, true)?;
    let pid = built.pid;
    let master = relay.and_then(|(ours, theirs)| {
        drop(theirs);
        crate::console::receive_master(&ours)
    });
    if let Err(e) = release(&built) {
        let _ = delete(root, &options.id, true);
        return Err(e);
    }
    // Only a removed container's cleaner stays, for its state directory;
    // any other is reaped once the process runs (it exits as soon as it
    // reads that the create is done), or, when berth exits now, by whoever
    // reaps its orphans.
    if detach {
        built.cleaner.dismiss_and_leave();
        return Ok(0);
    }
    let cleaner = match keep {
        true => {
            drop(built.cleaner.dismiss());
            None
        }
        false => Some(built.cleaner),
    };
    let code = match master {
        Some(master) => crate::console::relay(master, pid),
        None => crate::process::wait_forwarding_signals(pid),
    };
    crate::trace::step("run: container exited");
    let Some(cleaner) = cleaner else {
        return Ok(code);
    };
    let Some(dir) = stop_and_clear(root, &options.id, true)? else {
        return Ok(code);
    };
    // The id is free when `run` returns; the directory itself goes after.
    let name = cleaner.retired_name(&options.id);
    if dir.retire(&name)? {
        cleaner.remove_retired(&name);
    }
    crate::trace::step("delete: state removed");
    Ok(code)
}
