//! `berth exec`: a new process in a running container.
//!
//! ```text
//! berth exec (P) ── fork ──▶ C: non-dumpable, joins the container's cgroups,
//!                                setns user first, then the rest
//!                            C ── clone(CLONE_PARENT) ──▶ G: pid-namespace member,
//!                                                         P's own child
//!                            C exits
//! G: terminal, rlimits, cwd, no_new_privs, capabilities, user, seccomp → execve
//! ```
//! P learns G's pid from C over a `SOCK_SEQPACKET` pair; G's end is
//! close-on-exec, so EOF there means G has exec'd, and any text is G's error.
//!
//! Until execve, G is a copy of berth inside the container's pid namespace.
//! It is non-dumpable from the start, so /proc/G/exe is closed to the
//! container's processes unless one holds CAP_SYS_PTRACE in the host's user
//! namespace (a privileged container); for that case `berth exec`, like
//! `create` and `run`, runs from a sealed copy of the binary
//! ([`crate::sealed_exe`]), so even an open /proc/G/exe cannot be written.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::spec::{NamespaceKind, Process, Spec};
use crate::state::{self, State, StateError};
use crate::{capabilities, cgroups, console, process, seccomp};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
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
    if !options.ignore_paused && cgroups::is_frozen(&state.cgroup_paths) {
        return Err(ExecError::Paused);
    }
    // The process joins these (the container's own, or sub-cgroups of them).
    state.cgroup_paths = cgroups::sub_cgroups(&state.cgroup_paths, &options.sub_cgroups)
        .map_err(|e| ExecError::Usage(e.to_string()))?;
    // The config saved at create; containers of older berths only have the bundle's.
    let saved = dir.join("config.json");
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
            seccomp::parse(value)
                .and_then(|p| seccomp::compile(&p))
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
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| io("socketpair")(e.into()))?;
    let preserve = crate::process::check_preserved_fds(u64::from(options.preserve_fds))? - 3;
    // SAFETY: berth is single-threaded; the child runs ordinary code.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io("fork")(std::io::Error::last_os_error()));
    }
    if child == 0 {
        drop(ours);
        let setup = ChildSetup {
            state: &state,
            namespaces,
            process: &process,
            filters: filters.as_ref(),
            console: console.as_ref().map(|c| c.as_raw_fd()),
            channel: theirs.as_raw_fd(),
            preserve,
        };
        setup.run();
    }
    drop(theirs);
    drop(console);
    // C sends G's pid, then G's end stays open until execve.
    let mut buf = vec![0u8; 64 * 1024];
    let read = |buf: &mut [u8]| loop {
        match nix::unistd::read(ours.as_raw_fd(), buf) {
            Err(nix::Error::EINTR) => continue,
            other => return other.unwrap_or(0),
        }
    };
    let n = read(&mut buf);
    // SAFETY: reaping our own child C.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let Some(pid) = text
        .strip_prefix("pid ")
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return Err(ExecError::Failed(if text.is_empty() {
            "the exec helper exited without a word".into()
        } else {
            text
        }));
    };
    let n = read(&mut buf);
    if n > 0 {
        // SAFETY: reaping our own child G, which failed before execve.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return Err(ExecError::Failed(
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ));
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

/// What the forked helper C needs.
struct ChildSetup<'a> {
    state: &'a State,
    namespaces: Vec<(NamespaceKind, OwnedFd)>,
    process: &'a Process,
    filters: Option<&'a seccomp::Compiled>,
    console: Option<RawFd>,
    channel: RawFd,
    preserve: u32,
}

fn send(channel: RawFd, text: &str) {
    // SAFETY: write of a live buffer to our socket.
    unsafe { libc::write(channel, text.as_ptr().cast(), text.len()) };
}

impl ChildSetup<'_> {
    fn run(self) -> ! {
        if let Err(e) = self.join() {
            send(self.channel, &e);
            // SAFETY: leaving the forked helper.
            unsafe { libc::_exit(1) };
        }
        // CLONE_PARENT makes G P's child, so P waits for it.
        let pid = match process::clone_like_fork(libc::CLONE_PARENT) {
            Ok(pid) => pid,
            Err(e) => {
                send(self.channel, &format!("clone: {e}"));
                // SAFETY: leaving the helper.
                unsafe { libc::_exit(1) };
            }
        };
        if pid == 0 {
            let error = self.prepare_and_exec();
            send(self.channel, &error);
            // SAFETY: leaving the failed process before execve.
            unsafe { libc::_exit(127) };
        }
        send(self.channel, &format!("pid {pid}"));
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
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        cgroups::join(&self.state.cgroup_paths, me).map_err(|e| e.to_string())?;
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
            Ok((path, argv, envp)) => {
                let mut argv_ptrs: Vec<*const libc::c_char> =
                    argv.iter().map(|a| a.as_ptr()).collect();
                argv_ptrs.push(std::ptr::null());
                let mut envp_ptrs: Vec<*const libc::c_char> =
                    envp.iter().map(|a| a.as_ptr()).collect();
                envp_ptrs.push(std::ptr::null());
                // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
                unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
                format!(
                    "exec {:?}: {}",
                    self.process.args[0],
                    std::io::Error::last_os_error()
                )
            }
            Err(e) => e,
        }
    }

    #[allow(clippy::type_complexity)]
    fn prepare(&self) -> Result<(CString, Vec<CString>, Vec<CString>), String> {
        let process = self.process;
        if let (true, Some(socket)) = (process.terminal, self.console) {
            console::setup(socket, process.console_size, process.user.uid)
                .map_err(|e| e.to_string())?;
        }
        process::apply_rlimits(&process.rlimits).map_err(|e| e.to_string())?;
        if !process.cwd.starts_with('/') {
            return Err(format!("cwd {:?} is not an absolute path", process.cwd));
        }
        // The mount namespace's root is the container's: the path resolves inside it.
        let cwd_as_root = nix::unistd::chdir(process.cwd.as_str());
        if let Some(score) = process.oom_score_adj {
            process::apply_oom_score_adj(score).map_err(|e| e.to_string())?;
        }
        if process.no_new_privileges {
            process::set_no_new_privs().map_err(|e| e.to_string())?;
        }
        if !process.no_new_privileges {
            if let Some(filters) = self.filters {
                seccomp::install(filters).map_err(|e| e.to_string())?;
            }
        }
        capabilities::apply_bounding(&process.capabilities).map_err(|e| e.to_string())?;
        process::switch_user(process, true).map_err(|e| e.to_string())?;
        capabilities::apply_process_sets(&process.capabilities).map_err(|e| e.to_string())?;
        // SAFETY: plain prctl (setuid reset the flag).
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
        if cwd_as_root.is_err() {
            nix::unistd::chdir(process.cwd.as_str())
                .map_err(|e| format!("chdir to cwd ({:?}) failed: {e}", process.cwd))?;
        }
        let env = process::environment(process);
        let executable =
            process::find_executable(&process.args[0], &env).map_err(|e| e.to_string())?;
        if let Some(umask) = process.user.umask {
            // SAFETY: plain umask.
            unsafe { libc::umask(umask) };
        }
        let argv = process::c_strings("argument", &process.args).map_err(|e| e.to_string())?;
        let envp = process::c_strings("environment entry", &env).map_err(|e| e.to_string())?;
        let path = CString::new(executable.as_os_str().as_encoded_bytes())
            .map_err(|_| "executable path contains a NUL byte".to_string())?;
        process::mark_cloexec_from(3 + self.preserve)?;
        process::reset_signals();
        if process.no_new_privileges {
            if let Some(filters) = self.filters {
                seccomp::install(filters).map_err(|e| e.to_string())?;
            }
        }
        Ok((path, argv, envp))
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
