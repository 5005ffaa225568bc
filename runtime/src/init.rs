//! The container's init: every step from `clone` to `execve`, in order.
//!
//! This runs in the child the runtime cloned (single-threaded, so ordinary
//! Rust is safe here). Any failure is sent to the runtime as text and the
//! child exits; nothing here returns.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use crate::channel::InitEnd;
use crate::namespaces::Plan;
use crate::rootfs::{self, Context};
use crate::spec::Spec;
use crate::{capabilities, console, hooks, namespaces, process};
use berth_oci::safe_path;

/// What the runtime hands to the init.
pub struct InitArgs<'a> {
    pub spec: &'a Spec,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub plan: &'a Plan,
    pub channel: InitEnd,
    /// Listening socket `start` connects to.
    pub start_listener: RawFd,
    /// Connected `--console-socket`.
    pub console_socket: Option<RawFd>,
    pub container_id: String,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// Descriptors 3..3+N passed through to the process.
    pub preserve_fds: u32,
    pub cgroup_paths: Vec<PathBuf>,
    pub hierarchies: Vec<crate::cgroups::Hierarchy>,
    /// The compiled `linux.seccomp`, installed as late as the kernel allows.
    pub seccomp: Option<&'a crate::seccomp::Compiled>,
    pub runtime_hooks: bool,
}

/// Runs the init and never returns.
pub fn run(args: InitArgs) -> ! {
    let result = setup(&args);
    let message = match result {
        Ok(never) => match never {},
        Err(e) => e,
    };
    args.channel.failed(&message);
    // SAFETY: leaving the cloned child without running the runtime's destructors.
    unsafe { libc::_exit(1) }
}

/// Everything up to `execve`; returns only an error's text.
fn setup(args: &InitArgs) -> Result<std::convert::Infallible, String> {
    let spec = args.spec;
    let plan = args.plan;
    let process = spec.process.as_ref().ok_or("process must be specified")?;
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

    // 1. Namespaces given by path that belong to the init (user first).
    for (kind, path) in &plan.init_joins {
        namespaces::join(*kind, path).map_err(|e| e.to_string())?;
    }
    // 2. The runtime maps our ids and moves us into our cgroups.
    let state_json = args.channel.wait_prepared().map_err(|e| e.to_string())?;
    if plan.new_user {
        // SAFETY: plain set*id calls; failure leaves us unmapped, which the
        // following steps report.
        unsafe {
            libc::setresgid(0, 0, 0);
            libc::setresuid(0, 0, 0);
        }
    }
    // 3. Every other new namespace, owned by the container's user namespace.
    namespaces::unshare(plan.unshare_flags).map_err(|e| e.to_string())?;
    if let Some(name) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(name).map_err(|e| format!("sethostname {name:?}: {e}"))?;
    }
    if let Some(name) = spec.domainname.as_deref().filter(|h| !h.is_empty()) {
        set_domainname(name)?;
    }
    if !args.no_new_keyring {
        join_session_keyring(&args.container_id)?;
    }
    if let Some(score) = process.oom_score_adj {
        process::apply_oom_score_adj(score).map_err(|e| e.to_string())?;
    }

    // 4. The filesystem.
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
    };
    rootfs::prepare(&ctx).map_err(|e| e.to_string())?;
    rootfs::mount_all(&ctx).map_err(|e| e.to_string())?;
    // Opened now, inside the rootfs: after pivot_root the process enters it
    // by fd, so no path (or symlink planted in it) is looked up again
    // (CVE-2024-21626).
    let cwd = create_cwd(&args.rootfs, &process.cwd)?;
    if args.runtime_hooks {
        args.channel.runtime_hooks().map_err(|e| e.to_string())?;
        args.channel
            .expect(crate::channel::Message::RuntimeHooksDone)
            .map_err(|e| e.to_string())?;
    }
    if let Some(hooks) = spec
        .hooks
        .as_ref()
        .filter(|h| !h.create_container.is_empty())
    {
        // The hooks run from the container's root, as runc's do (its init
        // works from there while it mounts).
        nix::unistd::chdir(&args.rootfs)
            .map_err(|e| format!("chdir to {}: {e}", args.rootfs.display()))?;
        hooks::run_all(
            "createContainer",
            &hooks.create_container,
            state_json.as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    }
    rootfs::pivot(&args.rootfs, args.no_pivot).map_err(|e| e.to_string())?;
    rootfs::apply_sysctl(spec).map_err(|e| e.to_string())?;
    rootfs::mask_paths(&spec.linux().masked_paths).map_err(|e| e.to_string())?;
    rootfs::readonly_paths(&spec.linux().readonly_paths).map_err(|e| e.to_string())?;
    rootfs::finish_root(spec).map_err(|e| e.to_string())?;

    // 5. The process: terminal, limits, identity, capabilities.
    // Without a socket (`run` in the foreground) the caller's terminal is the
    // process's stdio already.
    if let (true, Some(socket)) = (process.terminal, args.console_socket) {
        console::setup(socket, process.console_size, process.user.uid)
            .map_err(|e| e.to_string())?;
    }
    process::apply_rlimits(&process.rlimits).map_err(|e| e.to_string())?;
    let env = process::environment(process);
    let cwd_as_root = nix::unistd::fchdir(cwd.as_raw_fd());
    if process.no_new_privileges {
        process::set_no_new_privs().map_err(|e| e.to_string())?;
    }
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it
    // now, before the capabilities go (as runc does); the filter then also
    // governs the init's last steps, which a sane profile allows.
    if !process.no_new_privileges {
        if let Some(filters) = args.seccomp {
            crate::seccomp::install(filters).map_err(|e| e.to_string())?;
        }
    }
    capabilities::apply_bounding(&process.capabilities).map_err(|e| e.to_string())?;
    process::switch_user(process, true).map_err(|e| e.to_string())?;
    capabilities::apply_process_sets(&process.capabilities).map_err(|e| e.to_string())?;
    // Changing uid resets the dumpable flag: keep /proc/1/exe (still berth)
    // out of reach until execve (CVE-2019-5736).
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
    if cwd_as_root.is_err() {
        // A directory only the container's user may enter.
        nix::unistd::fchdir(cwd.as_raw_fd()).map_err(|e| {
            format!(
                "chdir to cwd ({:?}) set in config.json failed: {e}",
                process.cwd
            )
        })?;
    }
    drop(cwd);
    // Looked up as the container's user, from its cwd, as execve will.
    let executable = process::find_executable(&process.args[0], &env).map_err(|e| e.to_string())?;
    // SAFETY: plain umask.
    unsafe { libc::umask(process.user.umask.unwrap_or(0o022)) };
    let argv = process::c_strings("argument", &process.args).map_err(|e| e.to_string())?;
    let envp = process::c_strings("environment entry", &env).map_err(|e| e.to_string())?;
    let path = CString::new(executable.as_os_str().as_encoded_bytes())
        .map_err(|_| "executable path contains a NUL byte")?;

    // 6. Nothing of ours may reach the container (CVE-2024-21626): every
    // descriptor above stdio and the preserved ones (which include the
    // caller's socket-activation fds) closes on exec.
    process::mark_cloexec_from(3 + args.preserve_fds)?;
    // SAFETY: plain prctl; the runtime has finished its part of the setup.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };

    // With no_new_privs the filter goes on as late as runc puts it: before
    // the wait for `start`, so that the startContainer hooks run under it
    // too (the spec runs them in the container).
    if process.no_new_privileges {
        if let Some(filters) = args.seccomp {
            crate::seccomp::install(filters).map_err(|e| e.to_string())?;
        }
    }

    // 7. Ready; wait for `start`.
    args.channel.ready().map_err(|e| e.to_string())?;
    let connection = accept_start(args.start_listener)?;
    if let Some(hooks) = &spec.hooks {
        if let Err(e) = hooks::run_all(
            "startContainer",
            &hooks.start_container,
            state_json.as_bytes(),
        ) {
            report_start_failure(&connection, &e.to_string());
        }
    }
    process::reset_signals();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    let error = std::io::Error::last_os_error();
    report_start_failure(&connection, &format!("exec {:?}: {error}", process.args[0]));
}

/// Tells `start` why the process could not start, then exits.
fn report_start_failure(connection: &OwnedFd, message: &str) -> ! {
    // SAFETY: the descriptor is ours; `File` closes it on drop, which we skip by exiting.
    let mut file = unsafe { std::fs::File::from_raw_fd(connection.as_raw_fd()) };
    let _ = file.write_all(message.as_bytes());
    std::mem::forget(file);
    // SAFETY: leaving the child without the runtime's destructors.
    unsafe { libc::_exit(127) }
}

fn accept_start(listener: RawFd) -> Result<OwnedFd, String> {
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
            return Err(format!("waiting for start: {err}"));
        }
    }
}

fn set_domainname(name: &str) -> Result<(), String> {
    // SAFETY: pointer and length of a live string.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if rc != 0 {
        return Err(format!(
            "setdomainname {name:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A session keyring of the container's own, so it cannot read the host's keys.
fn join_session_keyring(id: &str) -> Result<(), String> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = CString::new(id).map_err(|_| "container id contains a NUL byte")?;
    // SAFETY: keyctl with a valid C string.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        // Kernels without keyrings, or a user namespace that may not have one.
        if !matches!(
            err.raw_os_error(),
            Some(libc::ENOSYS) | Some(libc::EACCES) | Some(libc::EPERM)
        ) {
            return Err(format!("cannot create session key: {err}"));
        }
    }
    Ok(())
}

/// Opens the process's cwd inside the rootfs, creating it if it is missing
/// (as runc does).
fn create_cwd(rootfs: &std::path::Path, cwd: &str) -> Result<OwnedFd, String> {
    let root = std::fs::File::open(rootfs).map_err(|e| format!("open rootfs: {e}"))?;
    safe_path::open_or_create(
        root.as_raw_fd(),
        std::path::Path::new(cwd),
        safe_path::Create::Directory,
    )
    .map_err(|e| e.to_string())
}
