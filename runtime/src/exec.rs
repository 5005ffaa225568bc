//! `berth exec`: a new process in a running container.
//!
//! ```text
//! berth exec (P) ── clone3 ──▶ C: born in the container's unified cgroup,
//!                                non-dumpable, joins its other cgroups,
//!                                setns user first, then the rest
//!                            C ── clone(CLONE_PARENT) ──▶ G: pid-namespace member,
//!                                                         P's own child
//!                            C exits
//! G: terminal, rlimits, cwd, no_new_privs, capabilities, user, seccomp → execve
//! ```
//! P learns G's pid from C over the channel of `channel.rs`; G's end is
//! close-on-exec, so EOF there means G has exec'd. Before that G may hand
//! over a seccomp listener, or report why it failed.
//!
//! Until execve, G is a copy of berth inside the container's pid namespace.
//! It is non-dumpable from the start, so /proc/G/exe is closed to the
//! container's processes unless one holds CAP_SYS_PTRACE in the host's user
//! namespace (a privileged container); for that case `berth exec`, like
//! `create` and `run`, runs from a sealed copy of the binary
//! ([`crate::sealed_exe`]), so even an open /proc/G/exe cannot be written.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::channel::{self, ChannelError, InitEnd, Message};
use crate::spec::{NamespaceKind, Process, Spec};
use crate::state::{self, State, StateError};
use crate::{cgroups, console, process, seccomp};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
    #[error("cannot exec in a stopped container")]
    Stopped,
    #[error("cannot exec in a paused container (use --ignore-paused to override)")]
    Paused,
    #[error("invalid process file {path}: {message}")]
    ProcessFile { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// What `exec` was asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub id: String,
    pub process_file: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// `UID[:GID]`.
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: u32,
    /// `--ignore-paused`: exec into a frozen container (runc's flag).
    pub ignore_paused: bool,
    /// `--cgroup`: sub-cgroups to run in (see `cgroups::sub_cgroups`).
    pub sub_cgroups: Vec<String>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExecError {
    let what = what.into();
    move |source| ExecError::Io { what, source }
}

/// The process to run: the `--process` file as is, or the container's own
/// process with the command line's arguments and overrides (as runc does).
fn build_process(options: &ExecOptions, spec: &Spec) -> Result<Process, ExecError> {
    if let Some(path) = &options.process_file {
        let bytes = std::fs::read(path).map_err(|e| ExecError::ProcessFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let process: Process =
            crate::spec::go_schema()
                .from_slice(&bytes)
                .map_err(|e| ExecError::ProcessFile {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
        if process.args.is_empty() {
            return Err(ExecError::ProcessFile {
                path: path.clone(),
                message: "args must not be empty".into(),
            });
        }
        return Ok(process);
    }
    if options.args.is_empty() {
        return Err(ExecError::Usage(
            "exec needs a command (or --process FILE)".into(),
        ));
    }
    let mut process = spec.process.clone().unwrap_or_default();
    process.args = options.args.clone();
    process.terminal = options.tty;
    process.env.extend(options.env.iter().cloned());
    if let Some(cwd) = &options.cwd {
        process.cwd = cwd.clone();
    }
    if let Some(user) = &options.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        let number = |text: &str| {
            text.parse::<u32>()
                .map_err(|_| ExecError::Usage(format!("invalid --user {user:?}: use UID[:GID]")))
        };
        process.user.uid = number(uid)?;
        // Without a gid the spec's stays, as with runc.
        if let Some(gid) = gid.map(number).transpose()? {
            process.user.gid = gid;
        }
    }
    process
        .user
        .additional_gids
        .extend(options.additional_gids.iter().copied());
    if options.no_new_privs {
        process.no_new_privileges = true;
    }
    if !options.caps.is_empty() {
        let caps = process.capabilities.get_or_insert_with(Default::default);
        for cap in &options.caps {
            for set in [
                &mut caps.bounding,
                &mut caps.effective,
                &mut caps.permitted,
                &mut caps.ambient,
            ] {
                set.get_or_insert_with(Vec::new).push(cap.clone());
            }
        }
    }
    Ok(process)
}

/// The container's namespaces that differ from berth's own, user first.
fn namespaces_of(pid: i32) -> Result<Vec<(NamespaceKind, OwnedFd)>, ExecError> {
    let mut out = Vec::new();
    for kind in [
        NamespaceKind::User,
        NamespaceKind::Ipc,
        NamespaceKind::Uts,
        NamespaceKind::Network,
        NamespaceKind::Pid,
        NamespaceKind::Cgroup,
        NamespaceKind::Time,
        NamespaceKind::Mount,
    ] {
        let theirs = format!("/proc/{pid}/ns/{}", kind.proc_name());
        let ours = format!("/proc/self/ns/{}", kind.proc_name());
        let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
            continue;
        };
        if a.ino() == b.ino() && a.dev() == b.dev() {
            continue;
        }
        let file = std::fs::File::open(&theirs).map_err(io(format!("open {theirs}")))?;
        out.push((kind, OwnedFd::from(file)));
    }
    Ok(out)
}

/// `berth exec`; returns the exit status to exit with (0 when detached).
pub fn exec(root: &Path, options: &ExecOptions) -> Result<i32, ExecError> {
    let (dir, mut state) = state::read_unlocked(root, &options.id)?;
    if !state::process_is(state.pid, state.init_start_time) {
        return Err(ExecError::Stopped);
    }
    if !options.ignore_paused && cgroups::driver_for(&state.cgroup_paths).is_frozen() {
        return Err(ExecError::Paused);
    }
    // The process joins these (the container's own, or sub-cgroups of them).
    state.cgroup_paths = cgroups::sub_cgroups(&state.cgroup_paths, &options.sub_cgroups)
        .map_err(|e| ExecError::Usage(e.to_string()))?;
    // The config saved at create; containers of older berths only have the bundle's.
    let saved = dir.join(crate::state::CONFIG_FILE);
    let spec = match std::fs::read(&saved) {
        Ok(bytes) => Spec::from_slice(&bytes),
        Err(_) => Spec::load(&state.bundle),
    }
    .map_err(|e| ExecError::Usage(e.to_string()))?;
    let process = build_process(options, &spec)?;
    if process.terminal && options.console_socket.is_none() && options.detach {
        return Err(ExecError::Usage(
            "cannot allocate tty if berth will detach without setting console socket".into(),
        ));
    }
    let filters = match &spec.linux().seccomp {
        Some(value) => Some(
            seccomp::cache::compile(Some(root), value)
                .map_err(|e| ExecError::Usage(e.to_string()))?,
        ),
        None => None,
    };
    let namespaces = namespaces_of(state.pid)?;
    // The fds must still be the container's: the init must not have been
    // replaced by another process under the same pid while we opened them.
    if !state::process_is(state.pid, state.init_start_time) {
        return Err(ExecError::Stopped);
    }
    // In the foreground without a console socket, a terminal process gets a
    // pty whose master comes back here, to be relayed (as `run` does).
    let mut relay_end = None;
    let console =
        match &options.console_socket {
            Some(path) => Some(std::os::unix::net::UnixStream::connect(path).map_err(io(
                format!("cannot connect to console socket {}", path.display()),
            ))?),
            None if process.terminal => {
                let (ours, theirs) =
                    std::os::unix::net::UnixStream::pair().map_err(io("console socket pair"))?;
                relay_end = Some(ours);
                Some(theirs)
            }
            None => None,
        };
    let (ours, theirs) = channel::pair()?;
    let preserve = crate::process::check_preserved_fds(u64::from(options.preserve_fds))? - 3;
    // C is born in the container's unified cgroup where the kernel allows
    // (see `process::clone_into_cgroup`), and G, its child, with it.
    let birthplace = cgroups::birthplace(cgroups::driver_for(&state.cgroup_paths).as_ref())?;
    // berth is single-threaded: the child runs ordinary code.
    let (child, born_in_cgroup) =
        process::clone_into_cgroup(0, birthplace.as_ref()).map_err(io("fork"))?;
    if child == 0 {
        drop(birthplace);
        drop(ours);
        let setup = ChildSetup {
            state: &state,
            born_in_cgroup: born_in_cgroup.as_deref(),
            namespaces,
            process: &process,
            filters: filters.as_ref(),
            console: console.as_ref().map(|c| c.as_raw_fd()),
            channel: &theirs,
            preserve,
        };
        setup.run();
    }
    drop(birthplace);
    drop(theirs);
    drop(console);
    // C sends G's pid, then G's end stays open until execve.
    let first = ours.receive();
    // SAFETY: reaping our own child C.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    let pid = match first {
        Ok(Message::Pid(pid)) => pid,
        Ok(Message::Failed(text)) => return Err(ExecError::Failed(text)),
        Err(ChannelError::Closed) => {
            return Err(ExecError::Failed(
                "the exec helper exited without a word".into(),
            ))
        }
        Ok(other) => return Err(ChannelError::Unexpected(format!("{other:?}").into_bytes()).into()),
        Err(e) => return Err(e.into()),
    };
    if let Err(e) = follow_until_exec(&ours, pid, &state, filters.as_ref()) {
        // SAFETY: G is our child (CLONE_PARENT); it has not exec'd.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(e);
    }
    if let Some(pid_file) = &options.pid_file {
        state::write_atomic(pid_file, pid.to_string().as_bytes(), state::Access::Public)?;
    }
    if options.detach {
        return Ok(0);
    }
    crate::sealed_exe::release();
    if let Some(master) = relay_end.as_ref().and_then(console::receive_master) {
        return Ok(console::relay(master, pid));
    }
    Ok(crate::process::wait_forwarding_signals(pid))
}

/// Serves G until its execve (EOF on the channel): hands its seccomp
/// listener to the agent, or returns the error G reports.
fn follow_until_exec(
    channel: &channel::RuntimeEnd,
    pid: i32,
    state: &State,
    filters: Option<&seccomp::Compiled>,
) -> Result<(), ExecError> {
    loop {
        match channel.receive() {
            Err(ChannelError::Closed) => return Ok(()),
            Ok(Message::SeccompListener(fd)) => {
                let status = seccomp::notify::ProcessContainerState {
                    oci_version: crate::OCI_VERSION,
                    id: &state.id,
                    status: "running",
                    pid: state.pid,
                    bundle: &state.bundle,
                    annotations: &state.annotations,
                };
                let listener = filters.and_then(|f| f.listener.as_ref());
                seccomp::notify::forward(listener, pid, fd, status)?;
                channel.seccomp_done()?;
            }
            Ok(Message::Failed(text)) => return Err(ExecError::Failed(text)),
            Ok(other) => {
                return Err(ChannelError::Unexpected(format!("{other:?}").into_bytes()).into())
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the forked helper C needs.
struct ChildSetup<'a> {
    state: &'a State,
    /// The one of the state's cgroups C was born in: not joined.
    born_in_cgroup: Option<&'a Path>,
    namespaces: Vec<(NamespaceKind, OwnedFd)>,
    process: &'a Process,
    filters: Option<&'a seccomp::Compiled>,
    console: Option<RawFd>,
    channel: &'a InitEnd,
    preserve: u32,
}

impl ChildSetup<'_> {
    fn run(self) -> ! {
        if let Err(e) = self.join() {
            self.channel.failed(&e);
            // SAFETY: leaving the forked helper.
            unsafe { libc::_exit(1) };
        }
        // CLONE_PARENT makes G P's child, so P waits for it.
        let pid = match process::clone_like_fork(libc::CLONE_PARENT) {
            Ok(pid) => pid,
            Err(e) => {
                self.channel.failed(&format!("clone: {e}"));
                // SAFETY: leaving the helper.
                unsafe { libc::_exit(1) };
            }
        };
        if pid == 0 {
            let error = self.prepare_and_exec();
            self.channel.failed(&error);
            // SAFETY: leaving the failed process before execve.
            unsafe { libc::_exit(127) };
        }
        // Nothing to do if P is gone: G then fails on its own channel.
        let _ = self.channel.pid(pid);
        // SAFETY: the helper's work is done.
        unsafe { libc::_exit(0) }
    }

    /// In C: out of sight of the container, into its cgroups and namespaces.
    fn join(&self) -> Result<(), String> {
        // SAFETY: plain prctl; until execve this process image is berth, and
        // the container must not reach it through /proc/PID/exe (CVE-2019-5736,
        // see the module comment for the case this does not cover).
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
        process::forget_caller();
        // C is a forked copy of P: one thread, so it may move itself.
        cgroups::driver_for(&self.state.cgroup_paths)
            .join_self(self.born_in_cgroup)
            .map_err(|e| e.to_string())?;
        // Namespaces owned by the host's user namespace (a pod's network
        // namespace, say) can only be joined before entering the container's
        // user namespace; the others only after it. Try everything but the
        // user namespace first, then the user namespace, then what failed.
        let join = |kind: &NamespaceKind, fd: &OwnedFd| {
            nix::sched::setns(
                fd,
                nix::sched::CloneFlags::from_bits_retain(kind.clone_flag()),
            )
        };
        let mut later = Vec::new();
        for (kind, fd) in self
            .namespaces
            .iter()
            .filter(|(k, _)| *k != NamespaceKind::User)
        {
            if join(kind, fd).is_err() {
                later.push((kind, fd));
            }
        }
        for (kind, fd) in self
            .namespaces
            .iter()
            .filter(|(k, _)| *k == NamespaceKind::User)
        {
            join(kind, fd)
                .map_err(|e| format!("cannot join the container's user namespace: {e}"))?;
        }
        for (kind, fd) in later {
            join(kind, fd)
                .map_err(|e| format!("cannot join the container's {kind:?} namespace: {e}"))?;
        }
        Ok(())
    }

    /// In G: the process's own settings, then execve; returns only an error.
    fn prepare_and_exec(&self) -> String {
        match self.prepare() {
            Ok(execve) => format!("exec {:?}: {}", self.process.args[0], execve.exec()),
            Err(e) => e,
        }
    }

    fn prepare(&self) -> Result<process::Execve, String> {
        let process = self.process;
        if !process.cwd.starts_with('/') {
            return Err(format!("cwd {:?} is not an absolute path", process.cwd));
        }
        if let Some(score) = process.oom_score_adj {
            process::apply_oom_score_adj(score).map_err(|e| e.to_string())?;
        }
        let install = &mut || seccomp::notify::install(self.filters, self.channel);
        let execve = process::become_container_process(
            process::Becoming {
                process,
                console_socket: self.console,
                // The mount namespace's root is the container's: the path
                // resolves inside it.
                cwd: process::Cwd::Path(process.cwd.clone()),
                default_umask: None,
                keep_fds_below: 3 + self.preserve,
            },
            install,
        )?;
        process::reset_signals();
        if process.no_new_privileges {
            install()?;
        }
        Ok(execve)
    }
}

impl From<nix::Error> for ExecError {
    fn from(e: nix::Error) -> Self {
        ExecError::Io {
            what: "exec".into(),
            source: e.into(),
        }
    }
}
