//! The runtime binary, out of the container's reach (CVE-2019-5736).
//!
//! Until the user's program replaces it, the container's init (and every
//! `exec` helper) *is* berth: its `/proc/PID/exe` is the binary on the host.
//! Two ways lead from there to rewriting the runtime every later container
//! runs: a container process with `CAP_SYS_PTRACE` opens that file (being
//! non-dumpable stops everyone else), or the user's program is a script
//! whose interpreter is `/proc/self/exe`, so that the kernel runs berth's
//! binary again as an ordinary, dumpable container process. Either way the
//! container then holds a descriptor of the binary and writes through it
//! once no berth process runs it any more.
//!
//! So berth executes itself again from a file nothing in the container can
//! write (`exec` first thing; for `create` and `run`, the process
//! [`crate::sealed_init`] names): the binary through a detached,
//! read-only bind mount of its own (gone with the last process running it),
//! or, where the mount API is missing, a sealed memfd copy. A binary that
//! already sits on a read-only mount is run as it is. The cost is one
//! `execve` of the static binary.
//!
//! Closing the last descriptor of a detached mount unmounts it, and every
//! unmount waits for an RCU grace period (about a millisecond on a small
//! VM). So the re-executed process keeps the mount's descriptor, and a
//! container's init attaches the mount under the host's old root just
//! before it detaches that (see [`park_under_old_root`]): both go in the
//! one unmount `pivot_root` needs anyway.
//!
//! What the bind mount does not stop is a container that holds
//! `CAP_SYS_ADMIN` in the host's user namespace (it could clear the
//! read-only flag of that detached mount): such a container can write the
//! host's block devices anyway.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use crate::mounts::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
use crate::process::c_pointers;

/// Set across the re-execution (to `FD:PATH`, the bind mount's descriptor
/// and the binary's path on the host, or to `-`): a second pass that still
/// finds the binary writable is an error, not a loop.
const REEXECUTED: &str = "_BERTH_SEALED_EXE";

/// The bind mount this process runs from, and where its binary lives on
/// the host (see [`park_under_old_root`]).
static MOUNT: std::sync::Mutex<Option<(OwnedFd, std::path::PathBuf)>> = std::sync::Mutex::new(None);

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "cannot protect the runtime binary from the container (CVE-2019-5736): \
         read-only bind mount: {bind}; memfd copy: {memfd}"
    )]
    NoCopy {
        bind: std::io::Error,
        memfd: std::io::Error,
    },
    #[error("cannot execute the protected runtime binary: {0}")]
    Exec(std::io::Error),
    #[error("the runtime binary is still writable after executing its protected copy")]
    StillExposed,
}

/// Returns when this process runs from a binary nobody can write;
/// otherwise executes such a view of itself with the same arguments and
/// environment (and does not return unless that fails).
pub fn ensure() -> Result<(), SealError> {
    let exposed = !is_protected();
    if let Some(marker) = std::env::var_os(REEXECUTED) {
        std::env::remove_var(REEXECUTED);
        if exposed {
            return Err(SealError::StillExposed);
        }
        keep_mount(&marker.to_string_lossy());
        return Ok(());
    }
    if !exposed {
        return Ok(());
    }
    let (exe, marker) = sealed_copy()?;
    std::env::set_var(REEXECUTED, marker);
    crate::trace::step("sealed: re-exec");
    let args: Vec<OsString> = std::env::args_os().collect();
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let error = execute(&exe, &args, &env);
    std::env::remove_var(REEXECUTED);
    Err(SealError::Exec(error))
}

/// Executes the sealed view of this binary with `args` and `env` (to
/// which the marker [`ensure`] checks in the new image is added); returns
/// only the error. The container's init uses it to become a sealed image
/// itself (see `sealed_init`).
pub fn execute_sealed(args: &[OsString], env: &[(OsString, OsString)]) -> SealError {
    let (exe, marker) = match sealed_copy() {
        Ok(copy) => copy,
        Err(e) => return e,
    };
    let mut env = env.to_vec();
    env.push((REEXECUTED.into(), marker.into()));
    crate::trace::step("sealed: init re-exec");
    SealError::Exec(execute(&exe, args, &env))
}

/// A read-only bind mount of the binary (or a sealed memfd copy) to
/// execute, and the marker that tells the new image about it.
fn sealed_copy() -> Result<(OwnedFd, String), SealError> {
    Ok(match read_only_bind() {
        Ok(tree) => {
            let host_path = std::fs::read_link("/proc/self/exe").unwrap_or_default();
            // Inherited by the new image (see `keep_mount`).
            // SAFETY: clearing FD_CLOEXEC on our own descriptor.
            unsafe { libc::fcntl(tree.as_raw_fd(), libc::F_SETFD, 0) };
            let marker = format!("{}:{}", tree.as_raw_fd(), host_path.display());
            (tree, marker)
        }
        Err(bind) => (
            memfd_copy().map_err(|memfd| SealError::NoCopy { bind, memfd })?,
            "-".to_string(),
        ),
    })
}

/// Takes over the bind mount's descriptor that the previous image left
/// open (close-on-exec from here: no program berth starts inherits it).
fn keep_mount(marker: &str) {
    let Some((fd, path)) = marker.split_once(':') else {
        return;
    };
    let Ok(fd) = fd.parse::<RawFd>() else {
        return;
    };
    // SAFETY: the descriptor is the one the previous image opened and
    // named in the marker; checking it is ours before owning it.
    unsafe {
        if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
            return;
        }
        *lock() = Some((OwnedFd::from_raw_fd(fd), path.into()));
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<(OwnedFd, std::path::PathBuf)>> {
    MOUNT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Closes the bind mount's descriptor now (the mount itself stays while
/// this process runs from it): `exec` calls it once the container's process
/// runs, so that the unmount's grace period passes while it runs rather
/// than when berth exits.
pub fn release() {
    drop(lock().take());
}

/// Called by a container's init between `pivot_root(".", ".")` and the
/// detach of the old root stacked on "/": attaches the binary's bind mount
/// over the binary's own path in that old root, so that the one detach
/// unmounts both (saving the grace period that closing the detached
/// mount's last descriptor would cost). Best effort: when it cannot, the
/// mount goes when the last berth process exits.
pub fn park_under_old_root() {
    let mount = lock();
    let Some((tree, path)) = mount.as_ref() else {
        return;
    };
    // Relative to the working directory, which is the old root here: an
    // absolute path would resolve in the new root (pivot_root moved this
    // process's root there) and miss.
    let relative = path.strip_prefix("/").unwrap_or(path);
    let Ok(target) = CString::new(relative.as_os_str().as_bytes()) else {
        return;
    };
    let _ = berth_oci::mount_api::move_mount_to_path(tree, &target);
}

/// Whether `/proc/self/exe` is a file nobody can write: on a read-only
/// mount, or a memfd sealed against writes. Asked once per image (the
/// answer only changes with an execve).
pub fn is_protected() -> bool {
    static PROTECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROTECTED.get_or_init(check_protected)
}

fn check_protected() -> bool {
    let Ok(exe) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    let fd = exe.as_raw_fd();
    // SAFETY: fcntl and fstatvfs on a descriptor we own, into a zeroed struct.
    unsafe {
        let seals = libc::fcntl(fd, libc::F_GET_SEALS);
        if seals >= 0 && seals & libc::F_SEAL_WRITE != 0 {
            return true;
        }
        let mut vfs: libc::statvfs = std::mem::zeroed();
        libc::fstatvfs(fd, &mut vfs) == 0 && vfs.f_flag & libc::ST_RDONLY != 0
    }
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn owned(fd: libc::c_long) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The binary as the root of a detached bind mount of that one file,
/// read-only, nosuid and nodev: an `O_PATH` descriptor to execute.
fn read_only_bind() -> std::io::Result<OwnedFd> {
    let set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    Ok(mounts::detached_clone(c"/proc/self/exe", false, set, 0)?)
}

/// A copy of the binary in a memfd sealed against every change.
fn memfd_copy() -> std::io::Result<OwnedFd> {
    sealed_memfd(c"berth", |copy| {
        std::io::copy(&mut std::fs::File::open("/proc/self/exe")?, copy).map(drop)
    })
}

/// `MFD_EXEC` (Linux 6.3): executable even where `vm.memfd_noexec` would
/// make new memfds not so.
const MFD_EXEC: libc::c_uint = 0x10;

/// An executable memfd named `name`, filled by `fill`, then sealed against
/// writes, shrinking, growing and further seals: nothing that reaches it
/// (through `/proc/PID/exe`, say) can change it. Close-on-exec (it is
/// executed through `execveat`, not inherited).
pub fn sealed_memfd(
    name: &std::ffi::CStr,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a NUL-terminated name.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && last_error().raw_os_error() == Some(libc::EINVAL) {
        // Before 6.3 the flag is unknown, and every memfd executable.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    let mut file = std::fs::File::from(owned(fd as libc::c_long)?);
    fill(&mut file)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: adding seals to our own memfd.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(last_error());
    }
    Ok(file.into())
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`; returns only the error.
fn execute(exe: &OwnedFd, args: &[OsString], env: &[(OsString, OsString)]) -> std::io::Error {
    let to_c = |s: &OsString| CString::new(s.as_bytes()).unwrap_or_default();
    let args: Vec<CString> = args.iter().map(to_c).collect();
    let env: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut pair = k.clone();
            pair.push("=");
            pair.push(v);
            to_c(&pair)
        })
        .collect();
    let (argv, envp) = (c_pointers(&args), c_pointers(&env));
    // SAFETY: NULL-terminated arrays of strings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    last_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_copies_are_unwritable_and_whole() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let original = std::fs::read("/proc/self/exe").unwrap();
        // The bind mount: read-only (a write would fail with ETXTBSY first
        // here, this test binary being the running file).
        let tree = read_only_bind().unwrap();
        // SAFETY: fstatvfs on our descriptor into a zeroed struct.
        let flags = unsafe {
            let mut vfs: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::fstatvfs(tree.as_raw_fd(), &mut vfs), 0);
            vfs.f_flag
        };
        assert_ne!(flags & libc::ST_RDONLY, 0, "bind mount is writable");
        let path = format!("/proc/self/fd/{}", tree.as_raw_fd());
        assert_eq!(std::fs::read(&path).unwrap(), original, "bind");
        // The memfd: sealed against writes.
        let copy = memfd_copy().unwrap();
        let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
        let written = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"));
        assert_eq!(written.unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert_eq!(std::fs::read(&path).unwrap(), original, "memfd");
    }
}
