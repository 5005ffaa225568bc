//! The container's init: every step from `clone` to `execve`, in order.
//!
//! This runs in the child the runtime cloned (single-threaded, so ordinary
//! Rust is safe here). Any failure (an `InitError`) is sent to the runtime as
//! text and the child exits; nothing here returns.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use crate::channel::InitEnd;
use crate::namespaces::Plan;
use crate::rootfs::{self, Context};
use crate::spec::Spec;
use crate::{hooks, namespaces, process};
use berth_oci::safe_path;

/// What the runtime hands to the init.
pub struct InitArgs<'a> {
    pub spec: &'a Spec,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub plan: &'a Plan,
    pub channel: InitEnd,
    /// How `start` releases the init.
    pub release: Release,
    /// Connected `--console-socket`.
    pub console_socket: Option<RawFd>,
    pub container_id: String,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// Descriptors 3..3+N passed through to the process.
    pub preserve_fds: u32,
    pub cgroup_paths: Vec<PathBuf>,
    /// The one of `cgroup_paths` the init was born in (clone3's
    /// `CLONE_INTO_CGROUP`, see `process::clone_into_cgroup`): not joined.
    pub born_in_cgroup: Option<PathBuf>,
    pub hierarchies: Vec<crate::cgroups::Hierarchy>,
    /// The compiled `linux.seccomp`, installed as late as the kernel allows.
    pub seccomp: Option<&'a crate::seccomp::Compiled>,
    pub runtime_hooks: bool,
    /// Id-mapped mounts the runtime made: `rootfs::idmapped_mounts`.
    pub idmapped: &'a [Option<std::os::fd::OwnedFd>],
    /// The sealed launcher that waits for `start` and executes the
    /// process in the init's stead (see `sealed_init`), or none: the init
    /// does it itself.
    pub launcher: Option<crate::sealed_init::Launcher>,
}

/// How the init learns that it may exec the user's process.
#[derive(Debug, Clone, Copy)]
pub enum Release {
    /// `berth start` connects to this listening socket (`DIR/start.sock`)
    /// and reads until the init's execve closes the connection.
    Socket(RawFd),
    /// `berth run`: the runtime that cloned the init sends `Start` on the
    /// channel it already has, and reads until the execve closes it. The
    /// same guarantees as the socket (the user's process runs only when
    /// released, `start` returns only after the execve, failures come back
    /// as text), without a socket to bind, connect and remove: nobody but
    /// the init's parent ever holds the runtime's end.
    Channel,
}

/// The init's side of the start: the accepted connection, or the channel.
enum Released<'a> {
    Socket(OwnedFd),
    Channel(&'a InitEnd),
}

/// Why the init could not become the container's process; the runtime
/// reports its text.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("process must be specified")]
    NoProcess,
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Channel(#[from] crate::channel::ChannelError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error(transparent)]
    Path(#[from] berth_oci::safe_path::SafePathError),
    /// A step of `process::become_container_process` (or of the seccomp
    /// filter's installation), in its own words.
    #[error("{0}")]
    Becoming(String),
    #[error("cannot execute the sealed launcher (CVE-2019-5736): {0}")]
    Launcher(std::io::Error),
    /// An execve the process's own would have failed the same way (see
    /// `setup`): reported as the process's exec failure.
    #[error("{0}")]
    ProcessExec(std::io::Error),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitError {
    let what = what.into();
    move |source| InitError::Sys { what, source }
}

/// Runs the init and never returns.
pub fn run(args: InitArgs) -> ! {
    let result = setup(&args);
    let error = match result {
        Ok(never) => match never {},
        Err(e) => e,
    };
    match &error {
        InitError::ProcessExec(e) => args.channel.exec_failed(e.raw_os_error().unwrap_or(0)),
        other => args.channel.failed(&other.to_string()),
    }
    // SAFETY: leaving the cloned child without running the runtime's destructors.
    unsafe { libc::_exit(1) }
}

/// Everything up to `execve`; returns only an error.
fn setup(args: &InitArgs) -> Result<std::convert::Infallible, InitError> {
    let spec = args.spec;
    let plan = args.plan;
    let process = spec.process.as_ref().ok_or(InitError::NoProcess)?;
    process::forget_caller();
    // SAFETY: plain prctl/umask calls.
    unsafe {
        // Die with the runtime while it still supervises the setup.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Until execve, /proc/1/exe is berth itself: keep it out of reach of
        // anything in the container (CVE-2019-5736).
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
        libc::umask(0);
    }

    // 1. Where nothing of the container's namespaces waits for the
    // runtime (no user namespace to be mapped, none joined by path), they
    // are made at once, with the rootfs and the mounts before the first
    // cgroup one, while the runtime makes and limits the cgroups: on two
    // cores the two halves overlap. The cgroup namespace waits, since it is
    // rooted where the init stands when it is made, and so do the mounts
    // that show the cgroups.
    let early = !plan.new_user && plan.init_joins.is_empty();
    let ctx = Context {
        spec,
        rootfs: &args.rootfs,
        bundle: &args.bundle,
        in_user_namespace: plan.new_user
            || plan
                .init_joins
                .iter()
                .any(|(k, _)| *k == crate::spec::NamespaceKind::User),
        cgroup_paths: &args.cgroup_paths,
        hierarchies: &args.hierarchies,
        new_cgroup_namespace: plan.unshare_flags & libc::CLONE_NEWCGROUP != 0,
        idmapped: args.idmapped,
    };
    let mut mounted_early = 0;
    if early {
        enter_new_namespaces(args, plan.unshare_flags & !libc::CLONE_NEWCGROUP)?;
        // The kernel objects these make (namespaces, mounts) are charged
        // to the caller's cgroups: a few KiB. (crun's namespaces are too.)
        rootfs::prepare(&ctx)?;
        crate::trace::step("init: rootfs bound");
        mounted_early = rootfs::mounts_before_cgroups(spec, &args.hierarchies);
        rootfs::mount_some(&ctx, 0..mounted_early)?;
        crate::trace::step("init: mounts before the cgroups");
    }
    // 2. The runtime maps our ids and readies our cgroups (limits, device
    // rules); we were born in the unified one where the kernel allowed,
    // and move ourselves into the rest through the files the runtime
    // opened for us (see `cgroups::Driver::open_joins`): before
    // `setresuid`, while we are the host's root that owns them (kernels
    // before 5.16 check the writer, not the opener).
    let (state_json, join_files) = args.channel.wait_prepared()?;
    crate::trace::step("init: prepared by the runtime");
    crate::cgroups::driver_for(&args.cgroup_paths)
        .join_with(args.born_in_cgroup.as_deref(), join_files)?;
    crate::trace::step("init: joined its cgroups");
    if early {
        namespaces::unshare(plan.unshare_flags & libc::CLONE_NEWCGROUP)?;
    } else {
        // 3. Namespaces given by path that belong to the init (user
        // first), then every other new one, owned by the container's user
        // namespace.
        for (kind, path) in &plan.init_joins {
            namespaces::join(*kind, path)?;
        }
        if plan.new_user {
            // SAFETY: plain set*id calls; failure leaves us unmapped, which
            // the following steps report.
            unsafe {
                libc::setresgid(0, 0, 0);
                libc::setresuid(0, 0, 0);
            }
        }
        enter_new_namespaces(args, plan.unshare_flags)?;
    }

    // 4. The filesystem.
    if !early {
        rootfs::prepare(&ctx)?;
        crate::trace::step("init: rootfs bound");
    }
    rootfs::mount_some(&ctx, mounted_early..spec.mounts.len())?;
    rootfs::fill_dev(&ctx)?;
    crate::trace::step("init: mounts and /dev");
    // Opened now, inside the rootfs: after pivot_root the process enters it
    // by fd, so no path (or symlink planted in it) is looked up again
    // (CVE-2024-21626).
    let cwd = create_cwd(&args.rootfs, &process.cwd)?;
    if args.runtime_hooks {
        args.channel.runtime_hooks()?;
        args.channel
            .expect(crate::channel::Message::RuntimeHooksDone)?;
    }
    if let Some(hooks) = spec
        .hooks
        .as_ref()
        .filter(|h| !h.create_container.is_empty())
    {
        // The hooks run from the container's root, as runc's do (its init
        // works from there while it mounts).
        nix::unistd::chdir(&args.rootfs)
            .map_err(|e| sys(format!("chdir to {}", args.rootfs.display()))(e.into()))?;
        hooks::run_all(
            "createContainer",
            &hooks.create_container,
            state_json.as_bytes(),
        )?;
    }
    rootfs::pivot(&args.rootfs, args.no_pivot)?;
    crate::trace::step("init: pivot_root");
    rootfs::apply_sysctl(spec)?;
    rootfs::mask_paths(&spec.linux().masked_paths)?;
    rootfs::readonly_paths(&spec.linux().readonly_paths)?;
    rootfs::finish_root(spec)?;
    crate::trace::step("init: sysctl, masked and read-only paths");

    // 5. The process: terminal, limits, identity, capabilities, cwd; then
    // 6. nothing of ours may reach the container (CVE-2024-21626): every
    // descriptor above stdio and the preserved ones (which include the
    // caller's socket-activation fds) closes on exec.
    let execve = process::become_container_process(
        process::Becoming {
            process,
            console_socket: args.console_socket,
            cwd: process::Cwd::Opened(cwd),
            default_umask: Some(0o022),
            keep_fds_below: 3 + args.preserve_fds,
        },
        &mut || install_seccomp(args),
    )
    .map_err(InitError::Becoming)?;
    crate::trace::step("init: became the container process");
    // SAFETY: plain prctl; the runtime has finished its part of the setup.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };

    // With no_new_privs the filter goes on as late as runc puts it: before
    // the wait for `start`, so that the startContainer hooks run under it
    // too (the spec runs them in the container).
    if process.no_new_privileges {
        install_seccomp(args).map_err(InitError::Becoming)?;
    }

    // 7. Ready; wait for `start`. Where the init runs the host's binary,
    // the sealed launcher does this and the execve (see `sealed_init`).
    if let Some(launcher) = &args.launcher {
        crate::trace::step("init: launcher");
        let listener = match args.release {
            Release::Socket(listener) => Some(listener),
            Release::Channel => None,
        };
        let error = launcher.launch(args.channel.raw(), listener, &execve);
        // What the process's own execve would have met as well (its
        // arguments too long; RLIMIT_NPROC over after the switch to its
        // user) reads as its failure, as it did when the init executed it.
        if matches!(error.raw_os_error(), Some(libc::E2BIG | libc::EAGAIN)) {
            return Err(InitError::ProcessExec(error));
        }
        return Err(InitError::Launcher(error));
    }
    args.channel.ready()?;
    let released = match args.release {
        Release::Socket(listener) => Released::Socket(accept_start(listener)?),
        Release::Channel => {
            args.channel.expect(crate::channel::Message::Start)?;
            Released::Channel(&args.channel)
        }
    };
    if let Some(hooks) = &spec.hooks {
        if let Err(e) = hooks::run_all(
            "startContainer",
            &hooks.start_container,
            state_json.as_bytes(),
        ) {
            report_start_failure(&released, &e.to_string());
        }
    }
    crate::trace::step("init: released, execve");
    process::reset_signals();
    let error = execve.exec();
    report_start_failure(
        &released,
        &crate::channel::exec_failure(&process.args[0], error),
    );
}

/// Unshares `flags` and sets what belongs to the new namespaces (host and
/// domain names, the session keyring) and the process's OOM score.
fn enter_new_namespaces(args: &InitArgs, flags: libc::c_int) -> Result<(), InitError> {
    let spec = args.spec;
    namespaces::unshare(flags)?;
    if let Some(name) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(name)
            .map_err(|e| sys(format!("sethostname {name:?}"))(e.into()))?;
    }
    if let Some(name) = spec.domainname.as_deref().filter(|h| !h.is_empty()) {
        set_domainname(name)?;
    }
    if !args.no_new_keyring {
        join_session_keyring(&args.container_id)?;
    }
    if let Some(score) = spec.process.as_ref().and_then(|p| p.oom_score_adj) {
        process::apply_oom_score_adj(score)?;
    }
    crate::trace::step("init: namespaces");
    Ok(())
}

/// Installs the profile's filters (see `seccomp::notify::install`).
fn install_seccomp(args: &InitArgs) -> Result<(), String> {
    crate::seccomp::notify::install(args.seccomp, &args.channel)
}

/// Tells `start` why the process could not start, then exits.
fn report_start_failure(released: &Released, message: &str) -> ! {
    match released {
        Released::Socket(connection) => crate::channel::report_on_connection(connection, message),
        Released::Channel(channel) => channel.failed(message),
    }
    // SAFETY: leaving the child without the runtime's destructors.
    unsafe { libc::_exit(127) }
}

fn accept_start(listener: RawFd) -> Result<OwnedFd, InitError> {
    loop {
        // SAFETY: accept4 on our listening socket; the result is a new fd we own.
        let fd = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: fresh descriptor from accept4.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(sys("waiting for start")(err));
        }
    }
}

fn set_domainname(name: &str) -> Result<(), InitError> {
    // SAFETY: pointer and length of a live string.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if rc != 0 {
        return Err(sys(format!("setdomainname {name:?}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// A session keyring of the container's own, so it cannot read the host's keys.
fn join_session_keyring(id: &str) -> Result<(), InitError> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = CString::new(id).map_err(|_| {
        sys("container id")(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "contains a NUL byte",
        ))
    })?;
    // SAFETY: keyctl with a valid C string.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        // Kernels without keyrings, or a user namespace that may not have one.
        if !matches!(
            err.raw_os_error(),
            Some(libc::ENOSYS) | Some(libc::EACCES) | Some(libc::EPERM)
        ) {
            return Err(sys("cannot create session key")(err));
        }
    }
    Ok(())
}

/// Opens the process's cwd inside the rootfs, creating it if it is missing
/// (as runc does).
fn create_cwd(rootfs: &std::path::Path, cwd: &str) -> Result<OwnedFd, InitError> {
    let root = std::fs::File::open(rootfs).map_err(sys("open rootfs"))?;
    Ok(safe_path::open_or_create(
        root.as_raw_fd(),
        std::path::Path::new(cwd),
        safe_path::Create::Directory,
    )?)
}
