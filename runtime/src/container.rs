//! The runtime's verbs: what each command does to a container.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cleaner;

use crate::cgroups::{self, CgroupError};
use crate::channel::{self, ChannelError, Message};
use crate::hooks::{self, HookError};
use crate::init::{self, InitArgs};
use crate::namespaces::{self, NamespaceError, Plan};
use crate::spec::{Spec, SpecError};
use crate::state::{self, ContainerDir, State, StateError, Status};
use cleaner::{Cleaner, PLANNED_CGROUPS};

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

/// The options of `create` (and of `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// A connected socket standing in for `console_socket` (`run` in the
    /// foreground with a terminal: berth itself receives the pty).
    pub console_fd: Option<std::os::fd::RawFd>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// `run` in the foreground: the caller stays the init's parent.
    pub foreground: bool,
}

/// Undoes a half-made container when `create` fails.
struct CreateGuard {
    pid: Option<i32>,
    cgroups: Vec<PathBuf>,
    dir: Option<ContainerDir>,
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill/waitpid on our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        cgroups::remove(&self.cgroups);
        if let Some(dir) = self.dir.take() {
            let _ = dir.remove();
        }
    }
}

/// The state JSON of the OCI spec, as hooks receive it on stdin.
fn oci_state_json(state: &State, status: Status) -> String {
    serde_json::to_string(&state.oci(status)).unwrap_or_default()
}

/// `berth create`: builds the container and leaves its init waiting for `start`.
pub fn create(root: &Path, options: &CreateOptions) -> Result<i32, ContainerError> {
    // Socket activation: the caller's LISTEN_FDS (meant for us, per
    // LISTEN_PID) pass through after the preserved fds, as runc does. The
    // container's own environment never decides which fds stay open.
    // Checked before berth opens a descriptor of its own.
    let listen_fds = listen_fds();
    let preserve_fds = crate::process::check_preserved_fds(
        u64::from(options.preserve_fds) + u64::from(listen_fds),
    )? - 3;
    // Then at once: whatever fails later closes this connection, so the
    // caller's console receiver hears of the failure instead of waiting
    // for a terminal that never comes (runc connects as early).
    let console = match (&options.console_socket, options.console_fd) {
        (Some(path), _) => Some(UnixStream::connect(path).map_err(io(format!(
            "cannot connect to console socket {}",
            path.display()
        )))?),
        (None, Some(fd)) => {
            // SAFETY: the caller keeps the descriptor open for this call.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            Some(UnixStream::from(
                borrowed
                    .try_clone_to_owned()
                    .map_err(io("console socket"))?,
            ))
        }
        (None, None) => None,
    };
    let bundle =
        std::fs::canonicalize(&options.bundle).map_err(|source| ContainerError::Bundle {
            path: options.bundle.clone(),
            source,
        })?;
    let (mut spec, config_bytes) = Spec::read(&bundle)?;
    if listen_fds > 0 {
        if let Some(process) = spec.process.as_mut() {
            process.env.retain(|e| !e.starts_with("LISTEN_FDS="));
            process.env.push(format!("LISTEN_FDS={listen_fds}"));
        }
    }
    let process = spec
        .process
        .as_ref()
        .ok_or_else(|| ContainerError::Usage("process must be specified".into()))?;
    if process.terminal && options.console_socket.is_none() && !options.foreground {
        return Err(ContainerError::Usage(
            "cannot allocate tty if berth will detach without setting console socket".into(),
        ));
    }
    if !process.terminal && options.console_socket.is_some() {
        return Err(ContainerError::Usage(
            "cannot use console socket if berth will not detach or allocate tty".into(),
        ));
    }
    let rootfs_spec = &spec
        .root
        .as_ref()
        .map(|r| r.path.clone())
        .unwrap_or_default();
    let rootfs = std::fs::canonicalize(bundle.join(rootfs_spec))
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| ContainerError::NoRootfs {
            path: bundle.join(rootfs_spec),
        })?;
    let plan = Plan::new(&spec.namespaces()?);
    let seccomp = match &spec.linux().seccomp {
        Some(value) => Some(
            crate::seccomp::parse(value)
                .and_then(|p| crate::seccomp::compile(&p))
                .map_err(|e| ContainerError::Usage(e.to_string()))?,
        ),
        None => None,
    };
    for (_, path) in plan.runtime_joins.iter().chain(&plan.init_joins) {
        if !path.exists() {
            return Err(NamespaceError::Open {
                path: path.clone(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            }
            .into());
        }
    }
    let linux = spec.linux();
    let device_rules = linux
        .resources
        .as_ref()
        .map(|r| r.devices.clone())
        .unwrap_or_default();
    cgroups::validate_rules(&device_rules)?;
    if let Some(resources) = &linux.resources {
        cgroups::validate_resources(resources)?;
    }

    // Before the state directory (and its lock) exists: see `Cleaner`.
    let cleaner = Cleaner::spawn(root, &options.id)?;
    let dir = ContainerDir::create(root, &options.id)?;
    let mut guard = CreateGuard {
        pid: None,
        cgroups: Vec::new(),
        dir: None,
    };
    let dir_path = dir.path.clone();
    guard.dir = Some(dir);
    let hierarchies = cgroups::hierarchies();
    // Written before the directories exist, so that `delete --force` can
    // find them if this create is killed before state.json.
    let planned = cgroups::planned(&hierarchies, linux.cgroups_path.as_deref(), &options.id)?;
    let planned_text: Vec<String> = planned.iter().map(|p| p.display().to_string()).collect();
    state::write_atomic(
        &dir_path.join(PLANNED_CGROUPS),
        planned_text.join("\n").as_bytes(),
        state::Access::Private,
    )?;
    // An init moved into a frozen cgroup would never answer: refuse, and
    // leave the engine's cgroup as it is (runc's words).
    if cgroups::is_frozen(&planned) {
        return Err(ContainerError::Usage(
            "container's cgroup unexpectedly frozen (thaw it, or choose another cgroupsPath)"
                .into(),
        ));
    }
    guard.cgroups = cgroups::create(&hierarchies, linux.cgroups_path.as_deref(), &options.id)?;

    let idmapped = crate::rootfs::idmapped_mounts(&spec, &bundle)?;
    let (runtime_end, init_end) = channel::pair()?;
    let listener = bind_start_socket(&dir_path)?;

    let runtime_hooks = spec
        .hooks
        .as_ref()
        .is_some_and(|h| !h.prestart.is_empty() || !h.create_runtime.is_empty());
    // Only hooks need the runtime back in its own namespaces after the clone.
    let own_namespaces = if runtime_hooks {
        let joined = plan.runtime_joins.iter().map(|(kind, _)| *kind);
        let time = plan.new_time.then_some(crate::spec::NamespaceKind::Time);
        Some(namespaces::Saved::take(joined.chain(time))?)
    } else {
        None
    };
    for (kind, path) in &plan.runtime_joins {
        namespaces::join(*kind, path)?;
    }
    if plan.new_time {
        namespaces::unshare_time(&linux.time_offsets)?;
    }

    // berth is single-threaded here, so the child may run ordinary code.
    crate::log::debug(&format!(
        "{}: cloning the init (flags {:#x}) for rootfs {}",
        options.id,
        plan.clone_flags,
        rootfs.display()
    ));
    let pid = crate::process::clone_like_fork(plan.clone_flags)
        .map_err(io("cannot clone the container init"))?;
    if pid == 0 {
        drop(runtime_end);
        cleaner.leave();
        // The child's copy of the lock descriptor would keep the container
        // locked until its execve.
        drop(guard.dir.take());
        init::run(InitArgs {
            spec: &spec,
            bundle: bundle.clone(),
            rootfs: rootfs.clone(),
            plan: &plan,
            channel: init_end,
            start_listener: listener.as_raw_fd(),
            console_socket: console.as_ref().map(|c| c.as_raw_fd()),
            container_id: options.id.clone(),
            no_pivot: options.no_pivot,
            no_new_keyring: options.no_new_keyring,
            preserve_fds,
            seccomp: seccomp.as_ref(),
            cgroup_paths: guard.cgroups.clone(),
            hierarchies: hierarchies.clone(),
            runtime_hooks,
            idmapped: &idmapped,
        });
    }
    guard.pid = Some(pid);
    if let Some(saved) = &own_namespaces {
        saved.restore()?;
    }
    drop(init_end);
    drop(idmapped);
    drop(listener);
    drop(console);

    let init_start_time = state::start_time(pid).unwrap_or_default();
    let state = State {
        id: options.id.clone(),
        pid,
        init_start_time,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: crate::time::rfc3339_now(),
        owner: String::new(),
        annotations: spec.annotations.clone(),
        hooks: spec.hooks.clone(),
        cgroup_paths: guard.cgroups.clone(),
        own_pid_namespace: plan.new_pid,
    };
    if plan.new_user {
        namespaces::write_id_maps(pid, &linux.uid_mappings, &linux.gid_mappings)?;
    }
    cgroups::join(&guard.cgroups, pid)?;
    crate::log::debug(&format!(
        "{}: init {pid} joined cgroups {:?}",
        options.id, guard.cgroups
    ));
    let driver = cgroups::driver(&hierarchies, &guard.cgroups);
    if let Some(resources) = &linux.resources {
        driver.apply(resources)?;
    }
    driver.apply_devices(&cgroups::device_rules(&device_rules)?)?;
    let creating = oci_state_json(&state, Status::Creating);
    runtime_end.prepared(&creating)?;
    loop {
        match runtime_end.receive() {
            Ok(Message::RuntimeHooks) => {
                if let Some(h) = &spec.hooks {
                    hooks::run_all("prestart", &h.prestart, creating.as_bytes())?;
                    hooks::run_all("createRuntime", &h.create_runtime, creating.as_bytes())?;
                }
                runtime_end.runtime_hooks_done()?;
            }
            Ok(Message::SeccompListener(fd)) => {
                let listener = seccomp.as_ref().and_then(|s| s.listener.as_ref());
                let status = crate::seccomp::notify::ProcessContainerState {
                    oci_version: crate::OCI_VERSION,
                    id: &state.id,
                    status: Status::Creating.as_str(),
                    pid,
                    bundle: &state.bundle,
                    annotations: &state.annotations,
                };
                crate::seccomp::notify::forward(listener, pid, fd, status)?;
                runtime_end.seccomp_done()?;
            }
            Ok(Message::Ready) => break,
            Ok(Message::Failed(text)) => return Err(ContainerError::Init(text)),
            Ok(other) => {
                return Err(ChannelError::Unexpected(format!("{other:?}").into_bytes()).into())
            }
            Err(e) => return Err(e.into()),
        }
    }
    // The pid file first: if it cannot be written, the guard still undoes
    // everything, and no stopped container is left in the state directory.
    if let Some(pid_file) = &options.pid_file {
        let path = absolute(pid_file);
        state::write_atomic(&path, pid.to_string().as_bytes(), state::Access::Public)?;
    }
    let dir = guard
        .dir
        .as_ref()
        .ok_or_else(|| ContainerError::Usage("state directory lost".into()))?;
    // The config as validated, for `exec` (the bundle's may change later).
    state::write_atomic(
        &dir.path.join("config.json"),
        &config_bytes,
        state::Access::Private,
    )?;
    dir.save(&state)?;
    crate::log::debug(&format!(
        "{}: created, init {pid} waits for start",
        options.id
    ));
    // Done: disarm the guard (the lock goes with the directory handle).
    guard.dir = None;
    guard.pid = None;
    guard.cgroups.clear();
    drop(cleaner);
    Ok(pid)
}

/// The number of socket-activation fds passed to this process.
fn listen_fds() -> u32 {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    if !for_us {
        return 0;
    }
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Binds `DIR/start.sock` through `/proc/self/fd` so that long state paths
/// stay within the 108 bytes of a socket address.
fn bind_start_socket(dir: &Path) -> Result<UnixListener, ContainerError> {
    let dir_fd = std::fs::File::open(dir).map_err(io(format!("open {}", dir.display())))?;
    let short = format!(
        "/proc/self/fd/{}/{}",
        dir_fd.as_raw_fd(),
        state::START_SOCKET
    );
    // Connecting needs write access to the socket: only its owner may start
    // the container, whatever the caller's umask. berth is single-threaded
    // here, so the process-wide umask is ours to change for the bind.
    // SAFETY: umask only changes this process's file-creation mask.
    let previous = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&short);
    // SAFETY: as above, restoring the caller's mask.
    unsafe { libc::umask(previous) };
    bound.map_err(io(format!(
        "bind {}",
        dir.join(state::START_SOCKET).display()
    )))
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
    let mut reply = String::new();
    use std::io::Read;
    // EOF comes when the init's execve closes its end.
    let _ = stream.read_to_string(&mut reply);
    let _ = std::fs::remove_file(dir.start_socket());
    if !reply.is_empty() {
        return Err(ContainerError::StartFailed(reply));
    }
    if let Some(h) = &state.hooks {
        if let Err(e) = hooks::run_all(
            "poststart",
            &h.poststart,
            oci_state_json(&state, Status::Running).as_bytes(),
        ) {
            // As runc: a failed poststart hook takes the container down.
            signal_all(&state, libc::SIGKILL);
            return Err(e.into());
        }
    }
    Ok(())
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
    let mut pids = cgroups::pids(&state.cgroup_paths);
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
    let dir = match ContainerDir::open(root, id) {
        Ok(dir) => dir,
        Err(StateError::NotExist) if force => return remove_unfinished(root, id),
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
    if !state.own_pid_namespace {
        // Without a pid namespace of its own, the init's children survive it.
        signal_all(&state, libc::SIGKILL);
    }
    cgroups::remove(&state.cgroup_paths);
    if let Some(h) = &state.hooks {
        if let Err(e) = hooks::run_all(
            "poststop",
            &h.poststop,
            oci_state_json(&state, Status::Stopped).as_bytes(),
        ) {
            crate::log::warn(&e.to_string());
        }
    }
    dir.remove()?;
    Ok(())
}

/// `delete --force` of an id whose `create` was killed half-way: the
/// directory has no state.json. Waits for a `create` still running (it holds
/// the lock), then removes what is left unless that create finished.
fn remove_unfinished(root: &Path, id: &str) -> Result<(), ContainerError> {
    state::validate_id(id)?;
    let path = root.join(id);
    let Ok(handle) = std::fs::File::open(&path) else {
        return Ok(());
    };
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX) };
    if path.join("state.json").exists() {
        drop(handle);
        return delete(root, id, true);
    }
    cleaner::clear(&path);
    Ok(())
}

fn kill_and_wait(state: &State) {
    signal_all(state, libc::SIGKILL);
    if cgroups::is_frozen(&state.cgroup_paths) {
        // Frozen tasks take the queued SIGKILL only once thawed.
        let _ = cgroups::driver_for(&state.cgroup_paths).freeze(false);
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
    Ok(cgroups::pids(&state.cgroup_paths))
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
    let pid = create(root, &options)?;
    let master = relay.and_then(|(ours, theirs)| {
        drop(theirs);
        crate::console::receive_master(&ours)
    });
    if let Err(e) = start(root, &options.id) {
        let _ = delete(root, &options.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let code = match master {
        Some(master) => crate::console::relay(master, pid),
        None => crate::process::wait_forwarding_signals(pid),
    };
    if !keep {
        delete(root, &options.id, true)?;
    }
    Ok(code)
}
