//! `create`: a bundle made into a container whose init waits to be
//! released (by `start` through the start socket, or by `run` through the
//! channel).

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::cleaner::{Cleaner, PLANNED_CGROUPS};
use super::{io, oci_state_json, ContainerError};
use crate::cgroups;
use crate::cgroups::Part;
use crate::channel::{self, ChannelError, Message};
use crate::hooks;
use crate::init::{self, InitArgs};
use crate::namespaces::{self, NamespaceError, Plan};
use crate::sealed_init::{self, Handover, Seal};
use crate::spec::Spec;
use crate::state::{self, ContainerDir, State, Status};

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
    /// The bundle's config, when the caller read it already.
    pub loaded: Option<std::sync::Arc<Loaded>>,
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
        cgroups::driver_for(&self.cgroups).remove();
        if let Some(dir) = self.dir.take() {
            let _ = dir.remove();
        }
    }
}

/// `berth create`: builds the container and leaves its init waiting for `start`.
pub fn create(root: &Path, options: &CreateOptions) -> Result<i32, ContainerError> {
    let built = build(root, options, false)?;
    built.cleaner.dismiss_and_leave();
    Ok(built.pid)
}

/// A container `build` made, its init waiting to be released.
pub(super) struct Built {
    pub(super) pid: i32,
    pub(super) state: State,
    /// The state directory.
    pub(super) dir: PathBuf,
    /// With `by_channel`: the channel that releases the init.
    pub(super) channel: Option<channel::RuntimeEnd>,
    /// `Start` went on the channel with `Prepared`: the init did not wait
    /// for it after `Ready` (see `build`).
    pub(super) start_sent: bool,
    /// The process's `args[0]`, for the release's error (see
    /// `channel::Message::start_failure`).
    pub(super) program: String,
    /// The create's cleaner, still waiting: `create` dismisses it, `run`
    /// after the release, or gives it the state directory to remove.
    pub(super) cleaner: Cleaner,
}

/// `create`, and `run`'s first half: with `by_channel` the init waits for
/// `Start` on the channel (see `init::Release`) instead of on a socket.
pub(super) fn build(
    root: &Path,
    options: &CreateOptions,
    by_channel: bool,
) -> Result<Built, ContainerError> {
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
    let Loaded {
        bundle,
        mut spec,
        config: config_bytes,
    } = match &options.loaded {
        Some(loaded) => Loaded::clone(loaded),
        None => Loaded::read(&options.bundle)?,
    };
    crate::trace::step("create: config ready");
    pass_listen_fds(&mut spec, listen_fds);
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
    let seccomp = compile_seccomp(&spec, Some(root))?;
    // `main` sealed this process already where it had to (see `sealed_init`).
    let seal_init = sealed_init::needed(&spec, &plan) == Seal::Init && !plan.new_user;
    let launch = seal_init && sealed_init::launcher_fits(&spec, seccomp.as_ref());
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
    let device_rules = cgroups::device_rules(&device_rules)?;
    crate::trace::step("create: config checked, seccomp compiled");

    // Before the state directory (and its lock) exists: see `Cleaner`.
    let cleaner = Cleaner::spawn(root, &options.id)?;
    crate::trace::step("create: cleaner forked");
    let mut guard = CreateGuard {
        pid: None,
        cgroups: Vec::new(),
        dir: None,
    };
    let hierarchies = cgroups::hierarchies();
    let planned = cgroups::planned(&hierarchies, linux.cgroups_path.as_deref(), &options.id)?;
    let driver = cgroups::driver(&hierarchies, &planned);
    // Where the container has a directory in the unified hierarchy, the
    // init is born in it (see `process::clone_into_cgroup`), so that one
    // is made before the clone. The others (a hybrid host's v1
    // hierarchies), the limits and the device rules are made while the
    // init makes its namespaces and first mounts, berth's own code: they
    // hold before `Prepared`, before anything of the container runs, as
    // they do for an init that joins them then.
    let cgroups_first = driver.unified_dir().is_some();
    // `create` hands the init its start socket, which lives in the state
    // directory; cgroups made before the clone need it too, for their
    // names in `cgroups.planned`. Otherwise `run` releases the init
    // through the channel: there the init is cloned first, and the
    // directory is made while it starts (or re-executes itself, see
    // `sealed_init`).
    let listener = match (by_channel, cgroups_first) {
        (true, false) => None,
        _ => {
            let dir = make_state_dir(&mut guard, root, &options.id, &planned, driver.as_ref())?;
            match by_channel {
                true => {
                    mark_created(&dir)?;
                    None
                }
                false => Some(bind_start_socket(&dir)?),
            }
        }
    };
    crate::trace::step("create: cgroups planned");
    let resources = linux.resources.as_ref();
    let birthplace = match cgroups_first {
        true => {
            make_cgroups(&mut guard, driver.as_ref(), Part::Unified)?;
            cgroups::birthplace(driver.as_ref())?
        }
        false => None,
    };

    // Made before the init exists: only the host's root may id-map them.
    let idmapped = crate::rootfs::idmapped_mounts(&spec, &bundle)?;
    let (runtime_end, init_end) = channel::pair()?;
    let release = listener.as_ref().map_or(init::Release::Channel, |l| {
        init::Release::Socket(l.as_raw_fd())
    });

    let runtime_hooks = has_runtime_hooks(&spec);
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
    let cannot = match &birthplace {
        Some(place) => format!(
            "cannot clone the container init into cgroup {}",
            place.dir().display()
        ),
        None => "cannot clone the container init".to_string(),
    };
    let (pid, born_in_cgroup) =
        crate::process::clone_into_cgroup(plan.clone_flags, birthplace.as_ref())
            .map_err(io(cannot))?;
    if pid == 0 {
        drop(birthplace);
        drop(runtime_end);
        cleaner.leave();
        // The child's copy of the lock descriptor would keep the container
        // locked until its execve.
        drop(guard.dir.take());
        // Made while the runtime readies the cgroups; where the kernel
        // will not, the init re-executes itself instead (nothing of the
        // container exists yet).
        let launcher = match launch {
            true => sealed_init::Launcher::new().ok(),
            false => None,
        };
        if seal_init && launcher.is_none() {
            let handover = Handover {
                bundle: bundle.clone(),
                rootfs: rootfs.clone(),
                container_id: options.id.clone(),
                no_pivot: options.no_pivot,
                no_new_keyring: options.no_new_keyring,
                preserve_fds,
                listen_fds,
                cgroup_paths: planned.clone(),
                born_in_cgroup: born_in_cgroup.clone(),
                hierarchies: hierarchies.clone(),
                channel: init_end.raw(),
                start_listener: listener.as_ref().map(|l| l.as_raw_fd()),
                console_socket: console.as_ref().map(|c| c.as_raw_fd()),
                idmapped: idmapped
                    .iter()
                    .map(|t| t.as_ref().map(|t| t.as_raw_fd()))
                    .collect(),
            };
            let error = sealed_init::reexecute(&handover, &config_bytes);
            init_end.failed(&error);
            // SAFETY: leaving the cloned child without the runtime's destructors.
            unsafe { libc::_exit(1) }
        }
        init::run(InitArgs {
            spec: &spec,
            bundle: bundle.clone(),
            rootfs: rootfs.clone(),
            plan: &plan,
            channel: init_end,
            release,
            console_socket: console.as_ref().map(|c| c.as_raw_fd()),
            container_id: options.id.clone(),
            no_pivot: options.no_pivot,
            no_new_keyring: options.no_new_keyring,
            preserve_fds,
            seccomp: seccomp.as_ref(),
            cgroup_paths: planned.clone(),
            born_in_cgroup: born_in_cgroup.clone(),
            hierarchies: hierarchies.clone(),
            runtime_hooks,
            idmapped: &idmapped,
            launcher,
        });
    }
    guard.pid = Some(pid);
    drop(birthplace);
    crate::trace::step("create: init cloned");
    let dir_path = match &guard.dir {
        // Made before the clone, for the start socket or the cgroups.
        Some(dir) => dir.path.clone(),
        None => {
            let dir = make_state_dir(&mut guard, root, &options.id, &planned, driver.as_ref())?;
            mark_created(&dir)?;
            crate::trace::step("create: state dir");
            dir
        }
    };
    if let Some(saved) = &own_namespaces {
        saved.restore()?;
    }
    drop(init_end);
    drop(idmapped);
    // The directories it was not born in are made once the init is
    // cloned, while it starts (or re-executes itself, see `sealed_init`):
    // it needs them only when `Prepared` says they are ready to join.
    let rest = match cgroups_first {
        true => Part::Others,
        false => Part::All,
    };
    // From a descriptor of /sys/fs/cgroup (see `cgroups::files`): nothing
    // here forks or clones.
    let join_files = cgroups::files::from_root(|| {
        make_cgroups(&mut guard, driver.as_ref(), rest)?;
        limit_cgroups(driver.as_ref(), resources, &device_rules)?;
        // Opened here, while the init makes its namespaces; `Prepared`
        // hands them over (see `cgroups::Driver::open_joins`).
        driver
            .open_joins(born_in_cgroup.as_deref())
            .map_err(ContainerError::from)
    })?;
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
    // The init moves itself into the directories it was not born in once
    // `Prepared` says the limits are in place, through the join files it
    // hands over (see `cgroups::Driver::join_with`).
    crate::log::debug(&format!(
        "{}: init {pid} born in cgroup {:?}, to join {:?}",
        options.id, born_in_cgroup, guard.cgroups
    ));
    let creating = oci_state_json(&state, Status::Creating);
    // `run` releases the init at once where the init has nothing more to
    // hear before its `Ready` (no runtime hooks, no seccomp agent): it
    // executes the process as soon as it is ready, and the round trip of
    // `Ready` and `Start` goes (the container is `created` only while its
    // state is saved).
    let start_sent =
        by_channel && !runtime_hooks && seccomp.as_ref().is_none_or(|s| s.notify.is_none());
    let mut told = runtime_end.prepared(&creating, &join_files);
    drop(join_files);
    if start_sent && told.is_ok() {
        told = runtime_end.send_start();
    }
    if let Err(e) = told {
        // The init makes its namespaces before it waits for `Prepared`
        // (see `init::setup`): a failure there is in its words, already sent.
        return Err(match runtime_end.receive() {
            Ok(Message::Failed(text)) => ContainerError::Init(text),
            _ => e.into(),
        });
    }
    // The process's `args[0]`, for a failed exec's words.
    let program = spec
        .process
        .as_ref()
        .and_then(|p| p.args.first().cloned())
        .unwrap_or_default();
    // The config as validated, for `exec` (the bundle's may change later):
    // written while the init builds the container, off the critical path.
    // Nothing reads it before state.json exists, and the guard removes it
    // with the directory if the create fails.
    state::write_new(&dir_path.join(state::CONFIG_FILE), &config_bytes)?;
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
            // The process could not have been executed (see `init::setup`):
            // the words a failed start has.
            Ok(reply @ Message::ExecFailed(_)) => {
                return Err(ContainerError::StartFailed(reply.start_failure(&program)));
            }
            Ok(other) => {
                return Err(ChannelError::Unexpected(format!("{other:?}").into_bytes()).into())
            }
            Err(e) => return Err(e.into()),
        }
    }
    crate::trace::step("create: init ready");
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
    dir.save(&state)?;
    crate::trace::step("create: state saved");
    crate::log::debug(&format!(
        "{}: created, init {pid} waits for start",
        options.id
    ));
    // Done: disarm the guard (the lock goes with the directory handle).
    guard.dir = None;
    guard.pid = None;
    guard.cgroups.clear();
    Ok(Built {
        pid,
        state,
        dir: dir_path,
        channel: by_channel.then_some(runtime_end),
        start_sent,
        program,
        cleaner,
    })
}

/// Makes the container's cgroup directories `part` names (the guard's to
/// remove, with those made before).
fn make_cgroups(
    guard: &mut CreateGuard,
    driver: &dyn cgroups::Driver,
    part: Part,
) -> Result<(), ContainerError> {
    driver.create(part)?;
    guard.cgroups = match part {
        Part::Unified => driver
            .unified_dir()
            .map(Path::to_path_buf)
            .into_iter()
            .collect(),
        Part::All | Part::Others => driver.paths().to_vec(),
    };
    crate::trace::step(match part {
        Part::Unified => "create: unified cgroup made",
        Part::All | Part::Others => "create: cgroups made",
    });
    Ok(())
}

/// Writes the cgroups' limits and device rules, before the init may run
/// anything of the container's in them (`Prepared`).
fn limit_cgroups(
    driver: &dyn cgroups::Driver,
    resources: Option<&crate::spec::Resources>,
    device_rules: &[cgroups::DeviceAccess],
) -> Result<(), ContainerError> {
    if let Some(resources) = resources {
        driver.apply(resources)?;
    }
    driver.apply_devices(device_rules)?;
    crate::trace::step("create: limits and device rules applied");
    Ok(())
}

/// Makes the container's state directory (locked, the guard's to remove)
/// and writes down the cgroup directories it will get before they exist,
/// so that `delete --force` finds them if this create is killed before
/// state.json. Returns the directory's path.
fn make_state_dir(
    guard: &mut CreateGuard,
    root: &Path,
    id: &str,
    planned: &[PathBuf],
    driver: &dyn cgroups::Driver,
) -> Result<PathBuf, ContainerError> {
    let dir = guard.dir.insert(ContainerDir::create(root, id)?);
    // In place, each line ended: a list torn by a create killed while
    // writing it has a last line without its end, which the cleaner
    // ignores (it could name another container's cgroup, whose processes
    // the cleaner would kill); no cgroup exists before the list is whole.
    let planned_text: String = planned
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    state::write_new(&dir.path.join(PLANNED_CGROUPS), planned_text.as_bytes())?;
    // An init moved into a frozen cgroup would never answer: refuse, and
    // leave the engine's cgroup as it is (runc's words).
    if driver.is_frozen() {
        return Err(ContainerError::Usage(
            "container's cgroup unexpectedly frozen (thaw it, or choose another cgroupsPath)"
                .into(),
        ));
    }
    Ok(dir.path.clone())
}

/// A bundle's config as `create` reads it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The bundle's canonical path.
    pub bundle: PathBuf,
    pub spec: Spec,
    /// `config.json` as read (`exec` gets this copy).
    pub config: Vec<u8>,
}

impl Loaded {
    pub fn read(bundle: &Path) -> Result<Loaded, ContainerError> {
        let canonical = std::fs::canonicalize(bundle).map_err(|source| ContainerError::Bundle {
            path: bundle.to_path_buf(),
            source,
        })?;
        let (spec, config) = Spec::read(&canonical)?;
        Ok(Loaded {
            bundle: canonical,
            spec,
            config,
        })
    }

    /// Whether berth must re-execute itself from a sealed binary before it
    /// creates this container (see `sealed_init`); `main` asks before
    /// anything else happens.
    pub fn runtime_needs_seal(&self) -> bool {
        let Ok(namespaces) = self.spec.namespaces() else {
            return true;
        };
        let plan = Plan::new(&namespaces);
        // The init cannot re-execute itself inside a user namespace that
        // has no id maps yet: the runtime seals itself for it.
        match sealed_init::needed(&self.spec, &plan) {
            Seal::Nothing => false,
            Seal::Init => plan.new_user,
            Seal::Runtime => true,
        }
    }
}

/// `LISTEN_FDS` for the container's process when the caller passed
/// socket-activation descriptors.
pub(crate) fn pass_listen_fds(spec: &mut Spec, listen_fds: u32) {
    if listen_fds > 0 {
        if let Some(process) = spec.process.as_mut() {
            process.env.retain(|e| !e.starts_with("LISTEN_FDS="));
            process.env.push(format!("LISTEN_FDS={listen_fds}"));
        }
    }
}

/// `linux.seccomp` compiled, if the spec has one; with the runtime's
/// `root`, through its cache of compiled filters (see `seccomp::cache`).
pub(crate) fn compile_seccomp(
    spec: &Spec,
    root: Option<&Path>,
) -> Result<Option<crate::seccomp::Compiled>, ContainerError> {
    let Some(value) = &spec.linux().seccomp else {
        return Ok(None);
    };
    crate::seccomp::cache::compile(root, value)
        .map(Some)
        .map_err(|e| ContainerError::Usage(e.to_string()))
}

/// Whether the spec has hooks the runtime runs while the init waits.
pub(crate) fn has_runtime_hooks(spec: &Spec) -> bool {
    spec.hooks
        .as_ref()
        .is_some_and(|h| !h.prestart.is_empty() || !h.create_runtime.is_empty())
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

/// `run`: the init waits for the channel, not for a socket, but the
/// container is `created` until it is released all the same: the status
/// comes from the start socket's name (`state::status_at`), so an empty
/// file stands there. `berth start` cannot connect to it (nobody but
/// `run` may release this init).
fn mark_created(dir: &Path) -> Result<(), ContainerError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(state::START_SOCKET))
        .map(drop)
        .map_err(io(format!(
            "create {}",
            dir.join(state::START_SOCKET).display()
        )))
}
