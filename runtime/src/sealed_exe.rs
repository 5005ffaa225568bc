//! The runtime binary, out of the container's reach (CVE-2019-5736).
//!
//! Until the user's program replaces it, the container's init (and every
//! `exec` helper) *is* berth: its `/proc/PID/exe` is the binary on the host.
//! Being non-dumpable keeps ordinary container processes away from it, but a
//! process with `CAP_SYS_PTRACE` in the host user namespace (a privileged
//! container, or `exec --cap CAP_SYS_PTRACE`) can open that file, wait until
//! berth has stopped running it, reopen it for writing and replace the
//! runtime every later container runs.
//!
//! So `create`, `run` and `exec` first execute berth again from a file the
//! container cannot write whatever its capabilities: the binary seen through
//! a private, detached overlayfs with no upper layer (a filesystem no remount
//! can make writable, sharing the page cache with the real binary, gone when
//! its last process is), or, where overlayfs is missing, a sealed memfd copy.
//! It costs one `execve` of the static binary.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

const OVERLAYFS_SUPER_MAGIC: libc::c_long = 0x794c_7630;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;

/// Set across the re-execution: a second pass that still finds the binary
/// unprotected is an error, not a loop.
const REEXECUTED: &str = "_BERTH_SEALED_EXE";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "cannot protect the runtime binary from the container (CVE-2019-5736): \
         overlayfs: {overlay}; memfd copy: {memfd}"
    )]
    NoCopy {
        overlay: std::io::Error,
        memfd: std::io::Error,
    },
    #[error("cannot execute the protected runtime binary: {0}")]
    Exec(std::io::Error),
    #[error("the runtime binary is still writable after executing its protected copy")]
    StillExposed,
}

/// Returns when this process runs from a protected binary; otherwise
/// executes one with the same arguments and environment (and does not
/// return unless that fails).
pub fn ensure() -> Result<(), SealError> {
    let exposed = !is_protected();
    if std::env::var_os(REEXECUTED).is_some() {
        std::env::remove_var(REEXECUTED);
        return if exposed {
            Err(SealError::StillExposed)
        } else {
            Ok(())
        };
    }
    if !exposed {
        return Ok(());
    }
    let exe = match overlay_view() {
        Ok(fd) => fd,
        Err(overlay) => memfd_copy().map_err(|memfd| SealError::NoCopy { overlay, memfd })?,
    };
    std::env::set_var(REEXECUTED, "1");
    let error = execute(&exe);
    std::env::remove_var(REEXECUTED);
    Err(SealError::Exec(error))
}

/// Whether `/proc/self/exe` is a file nobody can write: on a read-only
/// overlayfs, or a memfd sealed against writes.
pub fn is_protected() -> bool {
    let Ok(exe) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    let fd = exe.as_raw_fd();
    // SAFETY: fcntl, fstatfs and fstatvfs on a descriptor we own, into a zeroed struct.
    unsafe {
        let seals = libc::fcntl(fd, libc::F_GET_SEALS);
        if seals >= 0 && seals & libc::F_SEAL_WRITE != 0 {
            return true;
        }
        let mut fs: libc::statfs = std::mem::zeroed();
        let mut vfs: libc::statvfs = std::mem::zeroed();
        libc::fstatfs(fd, &mut fs) == 0
            && fs.f_type == OVERLAYFS_SUPER_MAGIC
            && libc::fstatvfs(fd, &mut vfs) == 0
            && vfs.f_flag & libc::ST_RDONLY != 0
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

fn fsopen(fstype: &str) -> std::io::Result<OwnedFd> {
    let name = CString::new(fstype).expect("no NUL");
    // SAFETY: fsopen with a NUL-terminated name.
    owned(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })
}

fn fsconfig(
    fs: &OwnedFd,
    command: libc::c_uint,
    key: Option<&str>,
    value: Option<&[u8]>,
) -> std::io::Result<()> {
    let key = key.map(|k| CString::new(k).expect("no NUL"));
    let value = value.map(|v| CString::new(v).expect("no NUL"));
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: fsconfig with NUL-terminated strings (or NULL) that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            command,
            ptr(&key),
            ptr(&value),
            0,
        )
    };
    if rc < 0 {
        return Err(last_error());
    }
    Ok(())
}

/// A detached mount of the configured filesystem: a directory descriptor.
fn fsmount(fs: &OwnedFd, attributes: libc::c_uint) -> std::io::Result<OwnedFd> {
    fsconfig(fs, FSCONFIG_CMD_CREATE, None, None)?;
    // SAFETY: fsmount of a created filesystem context.
    owned(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attributes,
        )
    })
}

/// The binary seen through a detached overlayfs of its directory over an
/// empty tmpfs (overlayfs wants two lower layers when it has no upper one).
fn overlay_view() -> std::io::Result<OwnedFd> {
    let path = std::fs::read_link("/proc/self/exe")?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other(format!(
            "{} has no directory",
            path.display()
        )));
    };
    let dir = std::fs::File::open(dir)?;
    let tmpfs = fsopen("tmpfs")?;
    let empty = fsmount(
        &tmpfs,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )?;
    // The layers by descriptor: no escaping of ':' or ',' in the path.
    let lower = format!(
        "/proc/self/fd/{}:/proc/self/fd/{}",
        dir.as_raw_fd(),
        empty.as_raw_fd()
    );
    let overlay = fsopen("overlay")?;
    fsconfig(
        &overlay,
        FSCONFIG_SET_STRING,
        Some("lowerdir"),
        Some(lower.as_bytes()),
    )?;
    let view = fsmount(
        &overlay,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )?;
    let name = CString::new(name.as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: openat relative to the detached mount's root.
    let fd = unsafe {
        libc::openat(
            view.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    owned(fd as libc::c_long)
}

/// A copy of the binary in a memfd sealed against every change.
fn memfd_copy() -> std::io::Result<OwnedFd> {
    let name = CString::new("berth").expect("no NUL");
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = owned(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
            as libc::c_long
    })?;
    let mut copy = std::fs::File::from(fd);
    std::io::copy(&mut std::fs::File::open("/proc/self/exe")?, &mut copy)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: adding seals to our own memfd.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(last_error());
    }
    Ok(copy.into())
}

/// `execveat(fd, "", argv, environ, AT_EMPTY_PATH)` with this process's
/// arguments and environment; returns only the error.
fn execute(exe: &OwnedFd) -> std::io::Error {
    let to_c = |s: OsString| CString::new(s.as_bytes()).unwrap_or_default();
    let args: Vec<CString> = std::env::args_os().map(to_c).collect();
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut pair = k;
            pair.push("=");
            pair.push(v);
            to_c(pair)
        })
        .collect();
    let pointers = |list: &[CString]| {
        let mut p: Vec<*const libc::c_char> = list.iter().map(|s| s.as_ptr()).collect();
        p.push(std::ptr::null());
        p
    };
    let (argv, envp) = (pointers(&args), pointers(&env));
    let empty = CString::default();
    // SAFETY: NULL-terminated arrays of strings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe.as_raw_fd(),
            empty.as_ptr(),
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
    fn both_copies_are_read_only_executables() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        for (how, fd) in [("overlay", overlay_view()), ("memfd", memfd_copy())] {
            let fd = fd.unwrap_or_else(|e| panic!("{how}: {e}"));
            let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            let written = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"));
            let error = written.unwrap_err();
            assert!(
                matches!(error.raw_os_error(), Some(libc::EROFS | libc::EPERM)),
                "{how}: {error}"
            );
            let original = std::fs::read("/proc/self/exe").unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), original, "{how}");
        }
    }
}
