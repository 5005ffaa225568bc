//! The container's init never exposes the host's binary to the container
//! (CVE-2019-5736, see [`crate::sealed_exe`]).
//!
//! Which berth process must run from a sealed binary ([`needed`]):
//! - the init, always: it becomes the container's process, and until its
//!   last `execve` its `/proc/PID/exe` is the binary (a `#!/proc/self/exe`
//!   program, or an `exec`'d process with `CAP_SYS_PTRACE`, reaches it);
//! - the runtime itself only when the container can see it: when the
//!   container shares a pid namespace (joined by path, or none of its own)
//!   with other processes. With a new pid namespace, the runtime and its
//!   other children stay in the host's: the container has no pid to name
//!   them by (short of a bind of the host's `/proc`, which hands it the
//!   host's root through `/proc/1/root` anyway);
//! - neither, when nothing in the container can write the binary whatever
//!   it holds: the container has a user namespace of its own in which the
//!   binary's owner is not mapped (nor its group, where the group may write)
//!   and the binary is not world-writable. Capabilities in a user namespace
//!   do not override permissions on an inode whose owner it does not map
//!   (`capable_wrt_inode_uidgid`), so a descriptor of the binary opened in
//!   the container is never writable.
//!
//! # The launcher (the usual way)
//!
//! In a new pid namespace the init builds the whole container as the
//! host's berth, and its last step executes a tiny sealed program instead
//! of the user's ([`Launcher`]; `launcher/launcher.rs`, no libc, about
//! 2 KiB, in a memfd sealed against every change). The launcher goes
//! non-dumpable, sends `Ready`, waits for the release, and executes the
//! user's program; a failed execve goes back as an errno that the runtime
//! renders as the init would have (`exec "ARG0": …`).
//!
//! Why that is as safe as re-executing berth from a sealed copy first: the
//! init's pid namespace holds nothing but the init (and the hooks it runs,
//! which are the host's) until `Ready`. No `exec` can join before
//! state.json exists, which the runtime writes only after `Ready`, and
//! only the launcher sends it: from then on `/proc/1/exe` is the sealed
//! memfd, never the host's file. A `#!/proc/self/exe` program runs the
//! launcher again (refusing anything not started by the init, it exits),
//! and a write through the memfd fails: it is sealed.
//!
//! Why executing twice gives the process exactly what one execve gave it
//! (each point is the kernel's rule for an execve of a file with no
//! set-id bit and no file capabilities, which the memfd is):
//! - capabilities: root's new permitted set is its inheritable set with
//!   the bounding set (effective: all of it), a non-root user's is its
//!   ambient set; the inheritable, bounding and ambient sets pass
//!   unchanged. Both rules give the same result applied once more, and the
//!   user's file capabilities meet the same inheritable and bounding sets;
//! - no "secure exec" (no id or capability gain), so no_new_privs, the
//!   personality, rlimits, umask, cwd, the session, the terminal and the
//!   parent-death signal (cleared before) pass as they are; caught signals
//!   reset, ignored ones and the mask the launcher resets as the init did;
//! - seccomp: the filters are on before the launcher runs, as they were
//!   before the init's last calls. The launcher makes the same calls the
//!   init made after them (`prctl`, `write`, `read` or `accept4`,
//!   `rt_sigaction`, `rt_sigprocmask`, `execve`, `exit_group`) plus
//!   `execveat` and `fcntl`; a profile that does not always allow those
//!   two keeps the re-execution ([`launcher_fits`]);
//! - non-dumpable: its first call, as the init was (nothing can open the
//!   dumpable instant's `/proc/1` anyway: the namespace is still empty);
//! - descriptors: the same ones stay open (everything past stdio and the
//!   preserved ones was close-on-exec before; the channel and the start
//!   listener go close-on-exec again before the execve).
//!
//! # The re-execution (where the launcher cannot be exact)
//!
//! The init executes berth again from a read-only view of the binary
//! first thing, before anything of the container exists (its pid namespace
//! is still empty, and the re-execution overlaps the runtime's own work),
//! and the new image continues in [`resume`]:
//! - `startContainer` hooks: berth code has to run after the release;
//! - `createContainer` hooks: they run in the container's namespaces while
//!   the init is still berth, and would find the host's binary at
//!   `/proc/1/exe`;
//! - a seccomp profile that may deny, log or notify `execveat`, `fcntl` or
//!   `prctl` (the launcher's calls under the filter);
//! - a launcher the kernel would not make (no memfd; the init then falls
//!   back on its own, having built nothing yet).
//!
//! With a new user namespace and no pid namespace shared, the runtime
//! seals itself before the clone instead (`Loaded::runtime_needs_seal`):
//! the init could not re-execute before its id maps exist.
//!
//! The new image gets what the init needs through a memfd ([`Handover`]
//! and the config's bytes as the runtime validated them) and the
//! descriptors it already holds; it rebuilds the rest (namespace plan,
//! seccomp filters, cgroup hierarchies) from the config, as the runtime
//! did.

use std::ffi::{CString, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::channel::InitEnd;
use crate::init::{self, InitArgs, Release};
use crate::namespaces::Plan;
use crate::process::{c_pointers, Execve};
use crate::spec::{IdMapping, Spec};

/// The environment variable naming the handover memfd in the new image.
const HANDOVER: &str = "_BERTH_INIT";

/// Which berth process has to run from a sealed binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    /// Already so (the binary is on a read-only mount or a sealed memfd),
    /// or nothing in the container could write the binary anyway.
    Nothing,
    /// The cloned init, before it builds the container.
    Init,
    /// The runtime, before it clones the init (as `exec` always does).
    Runtime,
}

/// See the module documentation.
pub fn needed(spec: &Spec, plan: &Plan) -> Seal {
    if crate::sealed_exe::is_protected() || out_of_reach(spec, plan) {
        Seal::Nothing
    } else if plan.new_pid {
        Seal::Init
    } else {
        Seal::Runtime
    }
}

/// Whether the init may end in the sealed launcher (see the module
/// documentation) rather than re-execute itself.
pub fn launcher_fits(spec: &Spec, seccomp: Option<&crate::seccomp::Compiled>) -> bool {
    // startContainer hooks run after the release, as berth; the
    // createContainer ones run in the container's namespaces and would
    // find the host's binary at /proc/1/exe.
    let hooks = spec
        .hooks
        .as_ref()
        .is_some_and(|h| !h.start_container.is_empty() || !h.create_container.is_empty());
    !hooks && seccomp.is_none_or(|s| s.launcher_passes)
}

/// The launcher's image, built by `build.rs` from `launcher/launcher.rs`.
const LAUNCHER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-launch"));

/// The launcher in a memfd sealed against every change (see
/// `sealed_exe::sealed_memfd`).
pub struct Launcher(OwnedFd);

impl Launcher {
    /// Made by the init while the runtime is busy (before `Prepared`).
    pub fn new() -> std::io::Result<Launcher> {
        crate::sealed_exe::sealed_memfd(c"berth-launch", |file| file.write_all(LAUNCHER))
            .map(Launcher)
    }

    /// Executes the launcher with what it needs to finish the init's work
    /// (the argument layout is in `launcher/launcher.rs`'s header); returns
    /// only the error, with the descriptors close-on-exec again.
    pub fn launch(
        &self,
        channel: RawFd,
        listener: Option<RawFd>,
        execve: &Execve,
    ) -> std::io::Error {
        let numbers = [Some(channel), listener];
        let set_cloexec = |on: bool| {
            for fd in numbers.into_iter().flatten() {
                let flag = if on { libc::FD_CLOEXEC } else { 0 };
                // SAFETY: changing the flags of descriptors the init holds.
                unsafe { libc::fcntl(fd, libc::F_SETFD, flag) };
            }
        };
        // A number has no NUL byte: `new` cannot fail.
        let decimal = |fd: RawFd| CString::new(fd.to_string()).unwrap_or_default();
        let head = [
            c"berth-launch".to_owned(),
            decimal(channel),
            listener.map_or_else(|| c"-".to_owned(), decimal),
            execve.path.clone(),
        ];
        let argv: Vec<&CString> = head.iter().chain(&execve.argv).collect();
        let (argv, envp) = (c_pointers(&argv), c_pointers(&execve.envp));
        set_cloexec(false);
        // SAFETY: NULL-terminated arrays of strings that outlive the call.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                self.0.as_raw_fd(),
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        let error = std::io::Error::last_os_error();
        set_cloexec(true);
        error
    }
}

/// Whether the container's own user namespace leaves the binary's owner
/// (and a group that may write it) unmapped, and it is not world-writable.
fn out_of_reach(spec: &Spec, plan: &Plan) -> bool {
    if !plan.new_user {
        return false;
    }
    let Ok(meta) = std::fs::metadata("/proc/self/exe") else {
        return false;
    };
    let linux = spec.linux();
    let mapped = |maps: &[IdMapping], id: u32| {
        maps.iter().any(|m| {
            let id = u64::from(id);
            let host = u64::from(m.host_id);
            id >= host && id < host + u64::from(m.size)
        })
    };
    let mode = meta.mode();
    mode & 0o002 == 0
        && !mapped(&linux.uid_mappings, meta.uid())
        && (mode & 0o020 == 0 || !mapped(&linux.gid_mappings, meta.gid()))
}

/// What crosses the init's execve besides the config and the descriptors
/// it names (all inherited).
#[derive(Debug, Serialize, Deserialize)]
pub struct Handover {
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub container_id: String,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// Socket-activation descriptors the caller passed (`LISTEN_FDS`).
    pub listen_fds: u32,
    pub cgroup_paths: Vec<PathBuf>,
    /// The one of `cgroup_paths` the init was born in (see `InitArgs`).
    #[serde(default)]
    pub born_in_cgroup: Option<PathBuf>,
    /// The host's hierarchies as the runtime found them (not looked up
    /// again: `/proc/self/cgroup` and a `statfs` each, or mountinfo).
    pub hierarchies: Vec<crate::cgroups::Hierarchy>,
    pub channel: RawFd,
    /// The start socket, or none: released through the channel.
    pub start_listener: Option<RawFd>,
    pub console_socket: Option<RawFd>,
    /// The id-mapped trees the runtime made, one per spec mount (see
    /// `rootfs::idmapped_mounts`).
    #[serde(default)]
    pub idmapped: Vec<Option<RawFd>>,
}

/// In the cloned init: executes the sealed binary, which continues in
/// [`resume`]. Returns only why it could not.
pub fn reexecute(handover: &Handover, config: &[u8]) -> String {
    let memfd = match write_handover(handover, config) {
        Ok(fd) => fd,
        Err(e) => return format!("cannot hand the init over to its sealed image: {e}"),
    };
    let inherited = [
        Some(handover.channel),
        handover.start_listener,
        handover.console_socket,
    ];
    for fd in inherited
        .into_iter()
        .chain(handover.idmapped.iter().copied())
        .flatten()
    {
        // SAFETY: clearing FD_CLOEXEC on descriptors this process holds;
        // the new image sets it again at once (see `resume`).
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    // Nothing of the caller's environment: the new image only needs the
    // handover (and the trace switch).
    let mut env = vec![(
        OsString::from(HANDOVER),
        OsString::from(memfd.as_raw_fd().to_string()),
    )];
    if crate::trace::enabled() {
        env.push(("BERTH_TRACE".into(), "1".into()));
    }
    let args = [OsString::from("berth"), OsString::from("init")];
    crate::sealed_exe::execute_sealed(&args, &env).to_string()
}

fn write_handover(handover: &Handover, config: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor is
    // inherited by the new image on purpose (no MFD_CLOEXEC).
    let fd = unsafe { libc::memfd_create(c"berth-init".as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, owned from here on.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let head = serde_json::to_vec(handover).map_err(std::io::Error::other)?;
    let mut bytes = Vec::with_capacity(4 + head.len() + config.len());
    bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(config);
    file.write_all(&bytes)?;
    Ok(file.into())
}

/// In `main`, first thing: whether this image is a sealed init's, and
/// with which handover.
pub fn handed_over() -> Option<RawFd> {
    let fd = std::env::var_os(HANDOVER)?;
    fd.to_str().and_then(|t| t.parse().ok())
}

/// The sealed init's image: rebuilds the init's arguments and runs it.
pub fn resume(memfd: RawFd) -> ! {
    // SAFETY: the descriptor the previous image named in the environment.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(memfd) });
    let mut bytes = Vec::new();
    let read = file
        .rewind()
        .and_then(|()| file.read_to_end(&mut bytes))
        .map_err(|e| e.to_string());
    drop(file);
    let parsed = read.and_then(|_| {
        let len = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("short handover")?;
        let head = bytes.get(4..4 + len).ok_or("short handover")?;
        let handover: Handover = serde_json::from_slice(head).map_err(|e| e.to_string())?;
        Ok((handover, 4 + len))
    });
    let (handover, config_at) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            // No channel to report on: the runtime reads end of file.
            eprintln!("berth init: cannot read the handover: {e}");
            // SAFETY: leaving without destructors, as every init exit does.
            unsafe { libc::_exit(1) }
        }
    };
    for fd in [
        Some(handover.channel),
        handover.start_listener,
        handover.console_socket,
    ]
    .into_iter()
    .chain(handover.idmapped.iter().copied())
    .flatten()
    {
        // SAFETY: close-on-exec again on the descriptors the previous image
        // passed on: no hook the init runs may inherit them.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: the channel's descriptor, inherited and owned from here on.
    let channel = InitEnd::from_fd(unsafe { OwnedFd::from_raw_fd(handover.channel) });
    let rebuilt = rebuild(&handover, &bytes[config_at..]);
    let (spec, plan, seccomp) = match rebuilt {
        Ok(rebuilt) => rebuilt,
        Err(e) => {
            channel.failed(&e);
            // SAFETY: as above.
            unsafe { libc::_exit(1) }
        }
    };
    // SAFETY: the id-mapped trees the previous image passed on, owned from
    // here on.
    let idmapped: Vec<Option<OwnedFd>> = handover
        .idmapped
        .iter()
        .map(|fd| fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }))
        .collect();
    crate::trace::step("init: sealed image ready");
    let runtime_hooks = crate::container::has_runtime_hooks(&spec);
    init::run(InitArgs {
        spec: &spec,
        bundle: handover.bundle,
        rootfs: handover.rootfs,
        plan: &plan,
        channel,
        release: handover
            .start_listener
            .map_or(Release::Channel, Release::Socket),
        console_socket: handover.console_socket,
        container_id: handover.container_id,
        no_pivot: handover.no_pivot,
        no_new_keyring: handover.no_new_keyring,
        preserve_fds: handover.preserve_fds,
        seccomp: seccomp.as_ref(),
        cgroup_paths: handover.cgroup_paths,
        born_in_cgroup: handover.born_in_cgroup,
        hierarchies: handover.hierarchies,
        runtime_hooks,
        idmapped: &idmapped,
        launcher: None,
    })
}

/// The spec as the runtime used it, its namespace plan and its filters.
#[allow(clippy::type_complexity)]
fn rebuild(
    handover: &Handover,
    config: &[u8],
) -> Result<(Spec, Plan, Option<crate::seccomp::Compiled>), String> {
    // The image must be the sealed one (the marker says which mount).
    crate::sealed_exe::ensure().map_err(|e| e.to_string())?;
    let mut spec = Spec::from_slice(config).map_err(|e| e.to_string())?;
    crate::container::pass_listen_fds(&mut spec, handover.listen_fds);
    let plan = Plan::new(&spec.namespaces().map_err(|e| e.to_string())?);
    let seccomp = crate::container::compile_seccomp(&spec, None).map_err(|e| e.to_string())?;
    Ok((spec, plan, seccomp))
}
