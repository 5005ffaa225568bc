//! The `*at` calls over a directory fd and a single path component, so no
//! path the kernel walks can leave the root: what the unpacker, the volume
//! seeder and the build's layer writer use once [`super::open_in_root`] has
//! reached the directory.
//!
//! Threat: a layer that names `../../etc/shadow`, `/etc/shadow`, or writes
//! through a symlink it planted (`a -> /etc`, then `a/shadow`) would have the
//! daemon, running as host root, write host files. Directories are reached
//! with `openat2(RESOLVE_IN_ROOT)` from the root, so `..` and symlinks
//! resolve as if the root were `/`; the final component is always a plain
//! name used with `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW` / `O_EXCL`.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        flags,
        Mode::from_bits_retain(mode),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    Ok(nix::sys::stat::mkdirat(
        Some(dir.as_raw_fd()),
        name,
        Mode::from_bits_retain(mode),
    )?)
}

/// `mknodat`, which never follows the final name; `mode` holds the file
/// type (`S_IFCHR`, …) and the permissions, as `st_mode` does.
pub fn mknod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, dev: u64) -> io::Result<()> {
    let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
    let perm = Mode::from_bits_truncate(mode & !libc::S_IFMT);
    Ok(nix::sys::stat::mknodat(
        Some(dir.as_raw_fd()),
        name,
        kind,
        perm,
        dev,
    )?)
}

/// The target is stored, not resolved.
pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    Ok(nix::unistd::symlinkat(target, Some(dir.as_raw_fd()), name)?)
}

/// `linkat(from_dir, from, to_dir, to, 0)`: flags 0 does not follow a
/// symlink at `from`, so a hardlink to a symlink links the symlink itself.
pub fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
) -> io::Result<()> {
    Ok(nix::unistd::linkat(
        Some(from_dir.as_raw_fd()),
        from,
        Some(to_dir.as_raw_fd()),
        to,
        AtFlags::empty(),
    )?)
}

/// `unlinkat` never follows a symlink.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr, remove_dir: bool) -> io::Result<()> {
    let flags = if remove_dir {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    Ok(nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, flags)?)
}

/// The target of the symlink `name` in `dir`.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    Ok(nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name)?)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `None` when it does not exist.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<libc::stat>> {
    match nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`: the symlink itself
/// is changed, never its target.
pub fn lchown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    Ok(nix::unistd::fchownat(
        Some(dir.as_raw_fd()),
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    Ok(nix::unistd::fchown(
        fd.as_raw_fd(),
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
    )?)
}

pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(nix::sys::stat::fchmod(
        fd.as_raw_fd(),
        Mode::from_bits_retain(mode),
    )?)
}

/// nix has no `fsetxattr`.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid fd, C string and buffer of the length passed.
    let ret = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn timespec(secs: i64, nanos: u32) -> TimeSpec {
    TimeSpec::new(secs as libc::time_t, nanos as _)
}

/// Sets atime and mtime of `name` in `dir` (not following a symlink).
pub fn utimes_at(dir: BorrowedFd<'_>, name: &CStr, secs: i64, nanos: u32) -> io::Result<()> {
    let time = timespec(secs, nanos);
    Ok(nix::sys::stat::utimensat(
        Some(dir.as_raw_fd()),
        name,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    )?)
}

pub fn futimes(fd: BorrowedFd<'_>, secs: i64, nanos: u32) -> io::Result<()> {
    let time = timespec(secs, nanos);
    Ok(nix::sys::stat::futimens(fd.as_raw_fd(), &time, &time)?)
}

/// Names in the directory `fd` (without `.` and `..`).
pub fn list_dir(fd: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    // The stream owns the descriptor it reads: give it a duplicate.
    let dup = open_at(fd, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut dir = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(dup))?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes `name` from `dir`, recursively if it is a directory, never
/// following a symlink.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match unlink_at(dir, name, false) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {}
        Err(e) => return Err(e),
    }
    let sub = open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for child in list_dir(sub.as_fd())? {
        remove_all_at(sub.as_fd(), OsStr::from_bytes(child.to_bytes()))?;
    }
    unlink_at(dir, name, true)
}
