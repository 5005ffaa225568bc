//! Opening and creating paths inside a container's root without escaping it.
//!
//! Threat: a rootfs (an image, or a process of an earlier container) plants
//! symlinks such as `rootfs/proc -> /etc` or `rootfs/data -> ../../..` so that
//! the runtime, which runs as host root, mounts or writes outside the rootfs
//! (CVE-2021-30465 and its kin). Every lookup here goes through `openat2` with
//! `RESOLVE_IN_ROOT`, so the kernel resolves each symlink and `..` as if the
//! rootfs were `/`: nothing can name a host path. Missing components are
//! created one at a time with `mkdirat`, which never follows the final name.
//!
//! The one toolkit of the workspace for this: the runtime (rootfs, mounts,
//! devices), and the daemon (unpacking layers, seeding volumes, reading an
//! image's `/etc/passwd`, writing build layers) all resolve through
//! [`open_in_root`] and act on the last component with [`at`].

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

pub mod at;

use nix::errno::Errno;
use nix::fcntl::{openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

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

/// `openat2(root, path, flags|O_CLOEXEC, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)`:
/// `path`, cleaned ([`clean`]), resolved as if `root` were `/`.
pub fn open_in_root(
    root: impl AsRawFd,
    path: impl AsRef<Path>,
    flags: i32,
) -> std::io::Result<OwnedFd> {
    let root = root.as_raw_fd();
    let relative = clean(path.as_ref());
    let name: &Path = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &relative
    };
    let how = OpenHow::new()
        .flags(OFlag::from_bits_retain(flags) | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    loop {
        match openat2(root, name, how) {
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            // openat2 asks for a retry when a rename raced the lookup.
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
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
    // Usually only the last component is missing (a mount point in a
    // directory the image has): when its parent resolves, start there
    // rather than checking each directory from the root (a parent that
    // resolves means every directory above it does).
    let mut opened_parent = relative
        .parent()
        .and_then(|parent| open_in_root(root, parent, libc::O_PATH).ok());
    let first = match opened_parent {
        Some(_) => components.len() - 1,
        None => 0,
    };
    let mut prefix: PathBuf = components[..first].iter().collect();
    for (index, component) in components.iter().enumerate().skip(first) {
        let parent = match opened_parent.take() {
            Some(fd) => fd,
            None => open_in_root(root, &prefix, libc::O_PATH).map_err(|source| {
                SafePathError::Create {
                    path: path.to_path_buf(),
                    source,
                }
            })?,
        };
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
            // O_NOFOLLOW|O_EXCL never follow a planted symlink.
            nix::fcntl::openat(
                Some(parent.as_raw_fd()),
                name.as_c_str(),
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC
                    | OFlag::O_WRONLY,
                Mode::from_bits_truncate(0o644),
            )
            // SAFETY: openat returned a new descriptor that nothing else owns.
            .map(|fd| drop(unsafe { OwnedFd::from_raw_fd(fd) }))
        } else {
            // mkdirat does not follow the final component.
            mkdirat(
                Some(parent.as_raw_fd()),
                name.as_c_str(),
                Mode::from_bits_truncate(0o755),
            )
        };
        if let Err(errno) = result {
            let source = std::io::Error::from(errno);
            if errno == Errno::EEXIST {
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
    Ok(PathBuf::from(readlinkat(
        Some(dir.as_raw_fd()),
        name.as_c_str(),
    )?))
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
        let scratch = Scratch::new("berth-oci-safe-path");
        let dir = &scratch.0;
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
    }

    /// A scratch directory removed when dropped, and before use if a run
    /// that failed left it.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_missing_last_component_is_made_where_its_parent_resolves_in_the_root() {
        let scratch = Scratch::new("berth-oci-safe-last");
        let dir = &scratch.0;
        let (root, outside) = (dir.join("root"), dir.join("outside"));
        let inside_outside = root.join(outside.strip_prefix("/").unwrap());
        for d in [&root.join("dev"), &outside, &inside_outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        // A parent that is a symlink to a directory outside the root (which
        // the root also has); last components that dangle, absolutely out of
        // the root and relatively beside themselves.
        let elsewhere = dir.join("elsewhere");
        symlink(&outside, root.join("escape")).unwrap();
        symlink(elsewhere.join("target"), root.join("dev/dangling")).unwrap();
        symlink("sub/target", root.join("dev/relative")).unwrap();
        symlink("sub/file", root.join("dev/relative-file")).unwrap();
        let root_fd: OwnedFd = std::fs::File::open(&root).unwrap().into();
        let fd = root_fd.as_raw_fd();

        for (path, create) in [
            ("/dev/shm", Create::Directory),
            ("/top", Create::Directory),
            ("/escape/made", Create::Directory),
            ("/escape/file", Create::File),
            ("/dev/dangling", Create::Directory),
            ("/dev/relative", Create::Directory),
            ("/dev/relative-file", Create::File),
            ("/a/b/c", Create::Directory),
        ] {
            open_or_create(fd, Path::new(path), create).unwrap();
        }
        let made = [
            ("dev/shm", true),
            ("top", true),
            ("a/b/c", true),
            ("dev/sub/target", true),
            ("dev/sub/file", false),
        ];
        for (path, is_dir) in made {
            let meta = std::fs::metadata(root.join(path)).unwrap();
            assert_eq!(meta.is_dir(), is_dir, "{path}");
        }
        assert!(inside_outside.join("made").is_dir());
        assert!(inside_outside.join("file").is_file());
        let elsewhere_inside = root.join(elsewhere.strip_prefix("/").unwrap());
        assert!(elsewhere_inside.join("target").is_dir());
        assert!(
            !root.join("sub").exists(),
            "a relative link resolved from the root"
        );
        assert!(!outside.join("made").exists() && !outside.join("file").exists());
        assert!(!elsewhere.exists(), "created outside the root");
        // What exists is opened, not made again.
        let again = open_or_create(fd, Path::new("/dev/shm"), Create::Directory).unwrap();
        assert!(std::fs::metadata(fd_path(&again)).unwrap().is_dir());
    }
}
