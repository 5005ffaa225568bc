//! The kernel's mount API calls that `nix` does not wrap (`open_tree(2)`,
//! `mount_setattr(2)`, `move_mount(2)`, Linux 5.12+), as the runtime and
//! the daemon both call them: a mount cloned detached, its attributes set
//! on the clone (id mapping included), then attached to a directory held
//! by descriptor. Only the calls live here, no policy: what to mount, when
//! and in which namespace is each caller's, and nothing here forks,
//! changes directory or unshares.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `AT_RECURSIVE`: `open_tree` clones the submounts too; `mount_setattr`
/// changes every mount of the tree.
pub const AT_RECURSIVE: libc::c_int = 0x8000;

/// `MOUNT_ATTR_*` of `mount_setattr(2)` (`linux/mount.h`).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
/// The atime mode's bits: clear them to set one of the three modes.
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
/// The mount shows its files' owners through the mappings of the user
/// namespace in [`MountAttr::userns_fd`].
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

impl MountAttr {
    /// Bits to set, then bits to clear.
    pub fn flags(attr_set: u64, attr_clr: u64) -> MountAttr {
        MountAttr {
            attr_set,
            attr_clr,
            ..MountAttr::default()
        }
    }

    /// An id mapping through the user namespace `userns`.
    pub fn idmap(userns: &impl AsRawFd) -> MountAttr {
        MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            userns_fd: userns.as_raw_fd() as u64,
            ..MountAttr::default()
        }
    }
}

/// `open_tree(OPEN_TREE_CLONE)`: a detached copy of the mount at `source`
/// (with its submounts when `recursive`), close-on-exec.
pub fn open_tree_clone(source: &CStr, recursive: bool) -> nix::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32;
    if recursive {
        flags |= AT_RECURSIVE as u32;
    }
    // SAFETY: a valid C string; the call returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, source.as_ptr(), flags) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: a descriptor open_tree has just returned, owned here alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `mount_setattr(2)` on the mount at `dirfd` + `path` (`AT_EMPTY_PATH` in
/// `flags`: the mount of `dirfd` itself; `AT_RECURSIVE`: its whole tree).
pub fn mount_setattr(
    dirfd: RawFd,
    path: &CStr,
    flags: libc::c_int,
    attr: &MountAttr,
) -> nix::Result<()> {
    // SAFETY: a descriptor, a C string and a mount_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// `move_mount(2)`: attaches the detached `tree` onto the directory or file
/// held by `target`.
pub fn move_mount(tree: impl AsFd, target: impl AsFd) -> nix::Result<()> {
    let target = target.as_fd().as_raw_fd();
    attach(tree, target, c"", MOVE_MOUNT_T_EMPTY_PATH)
}

/// `move_mount(2)`: attaches the detached `tree` onto `path`, resolved from
/// the working directory when relative.
pub fn move_mount_to_path(tree: impl AsFd, path: &CStr) -> nix::Result<()> {
    attach(tree, libc::AT_FDCWD, path, 0)
}

fn attach(tree: impl AsFd, to_dirfd: RawFd, to_path: &CStr, to_flags: u32) -> nix::Result<()> {
    // SAFETY: valid descriptors and C strings; the source is the tree's
    // descriptor itself (an empty path with MOVE_MOUNT_F_EMPTY_PATH).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            to_dirfd,
            to_path.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | to_flags,
        )
    };
    if rc != 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}
