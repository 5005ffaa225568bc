//! Opening and creating paths inside a container's root without escaping it.
//!
//! Threat: a rootfs (an image, or a process of an earlier container) plants
//! symlinks such as `rootfs/proc -> /etc` or `rootfs/data -> ../../..` so that
//! the runtime, which runs as host root, mounts or writes outside the rootfs
//! (CVE-2021-30465 and its kin). Every lookup here goes through `openat2` with
//! `RESOLVE_IN_ROOT`, so the kernel resolves each symlink and `..` as if the
//! rootfs were `/`: nothing can name a host path. Missing components are
//! created one at a time with `mkdirat`, which never follows the final name.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SafePathError {
    #[error("cannot open {path} inside the container root: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create {path} inside the container root: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to create at the end of a path that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Nothing,
    Directory,
    File,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `path` with `.` removed and `..` applied lexically, relative, never above the root.
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// `openat2(root, path, O_PATH|O_CLOEXEC, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)`.
pub fn open_in_root(root: RawFd, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let relative = clean(path);
    let name = if relative.as_os_str().is_empty() {
        CString::new(".")
    } else {
        CString::new(relative.as_os_str().as_bytes())
    }
    .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: `name` is a valid C string and `how` a valid open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root,
                name.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel returned a new descriptor that we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EAGAIN) && err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Opens `path` (as `O_PATH`) inside `root`, creating what is missing as `create` says.
/// Intermediate components are created as directories (mode 0755).
pub fn open_or_create(root: RawFd, path: &Path, create: Create) -> Result<OwnedFd, SafePathError> {
    open_or_create_following(root, path, create, 0)
}

/// Symlinks followed while creating, as the kernel's own limit (`ELOOP`).
const MAX_SYMLINKS: u32 = 40;

fn open_or_create_following(
    root: RawFd,
    path: &Path,
    create: Create,
    depth: u32,
) -> Result<OwnedFd, SafePathError> {
    if depth > MAX_SYMLINKS {
        return Err(SafePathError::Create {
            path: path.to_path_buf(),
            source: std::io::Error::from_raw_os_error(libc::ELOOP),
        });
    }
    match open_in_root(root, path, libc::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create != Create::Nothing => {}
        Err(source) => {
            return Err(SafePathError::Open {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let relative = clean(path);
    let components: Vec<_> = relative.components().collect();
    let mut prefix = PathBuf::new();
    for (index, component) in components.iter().enumerate() {
        let parent =
            open_in_root(root, &prefix, libc::O_PATH).map_err(|source| SafePathError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        prefix.push(component);
        match open_in_root(root, &prefix, libc::O_PATH) {
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(source) => {
                return Err(SafePathError::Create {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        let last = index + 1 == components.len();
        let name =
            CString::new(component.as_os_str().as_bytes()).map_err(|_| SafePathError::Create {
                path: path.to_path_buf(),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        let result = if last && create == Create::File {
            // SAFETY: valid fd and C string; O_NOFOLLOW|O_EXCL never follow a planted symlink.
            let fd = unsafe {
                libc::openat(
                    parent.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC
                        | libc::O_WRONLY,
                    0o644,
                )
            };
            if fd >= 0 {
                // SAFETY: fd is ours and valid.
                unsafe { libc::close(fd) };
                0
            } else {
                -1
            }
        } else {
            // SAFETY: valid fd and C string; mkdirat does not follow the final component.
            unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) }
        };
        if result != 0 {
            let source = std::io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EEXIST) {
                // A dangling symlink: create its target, resolved inside the root.
                if let Ok(target) = read_link_at(&parent, &name) {
                    let base = prefix.parent().map(Path::to_path_buf).unwrap_or_default();
                    let mut next = if target.is_absolute() {
                        target
                    } else {
                        base.join(target)
                    };
                    for rest in &components[index + 1..] {
                        next.push(rest);
                    }
                    return open_or_create_following(root, &next, create, depth + 1);
                }
            }
            return Err(SafePathError::Create {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    open_in_root(root, path, libc::O_PATH).map_err(|source| SafePathError::Open {
        path: path.to_path_buf(),
        source,
    })
}

fn read_link_at(dir: &OwnedFd, name: &CString) -> std::io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid fd, C string and buffer of the length passed.
    let len = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if len < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(PathBuf::from(
        <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(buf),
    ))
}

/// The `/proc/self/fd/N` name of a descriptor, usable as a mount target.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn clean_never_climbs_above_root() {
        assert_eq!(clean(Path::new("/a/../../b/./c")), PathBuf::from("b/c"));
        assert_eq!(clean(Path::new("/")), PathBuf::new());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("berth-safe-path-{}", std::process::id()));
        let root = dir.join("root");
        let outside = dir.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        symlink(&outside, root.join("escape")).unwrap();
        symlink("../../../..", root.join("up")).unwrap();
        let root_fd: OwnedFd = std::fs::File::open(&root).unwrap().into();

        open_or_create(
            root_fd.as_raw_fd(),
            Path::new("/escape/x/y"),
            Create::Directory,
        )
        .unwrap();
        open_or_create(root_fd.as_raw_fd(), Path::new("/up/z"), Create::File).unwrap();
        assert!(!outside.join("x").exists(), "created outside the root");
        assert!(root
            .join(outside.strip_prefix("/").unwrap())
            .join("x/y")
            .is_dir());
        assert!(root.join("z").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
