//! Device nodes and the standard symlinks of the container's `/dev`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::spec::Device;
use berth_oci::safe_path::{self, Create};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot create device {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Path(#[from] safe_path::SafePathError),
    #[error(transparent)]
    Mount(#[from] crate::mounts::MountError),
}

/// The devices every container gets (runc's list), as (path, major, minor).
pub const DEFAULT_DEVICES: &[(&str, i64, i64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

pub fn default_devices() -> Vec<Device> {
    DEFAULT_DEVICES
        .iter()
        .map(|(path, major, minor)| Device {
            kind: "c".into(),
            path: PathBuf::from(path),
            major: *major,
            minor: *minor,
            file_mode: Some(0o666),
            uid: Some(0),
            gid: Some(0),
        })
        .collect()
}

/// Creates every device under `root`, opening each parent directory once
/// for the devices that share it (most live in `/dev`).
pub fn create_all(
    root: RawFd,
    devices: &[Device],
    bind_from_host: bool,
) -> Result<(), DeviceError> {
    let mut parent: Option<(PathBuf, std::fs::File)> = None;
    for device in devices {
        create(root, device, bind_from_host, &mut parent)?;
    }
    Ok(())
}

/// Creates `device` under `root`. In a user namespace `mknod` is not
/// allowed, so the host's node is bind-mounted instead (as runc does).
/// `parent` keeps the last parent directory opened.
fn create(
    root: RawFd,
    device: &Device,
    bind_from_host: bool,
    parent_dir: &mut Option<(PathBuf, std::fs::File)>,
) -> Result<(), DeviceError> {
    let path = &device.path;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default();
    let create_err = |source: std::io::Error| DeviceError::Create {
        path: path.clone(),
        source,
    };
    if bind_from_host {
        let target = safe_path::open_or_create(root, path, Create::File)?;
        return Ok(crate::mounts::mount(
            Some(path),
            &safe_path::fd_path(&target),
            None,
            MsFlags::MS_BIND,
            None,
        )?);
    }
    let dir = match parent_dir {
        Some((opened, dir)) if opened.as_path() == parent => dir,
        slot => {
            let dir = safe_path::open_or_create(root, parent, Create::Directory)?;
            let dir = reopen_dir(&dir).map_err(create_err)?;
            &slot.insert((parent.to_path_buf(), dir)).1
        }
    };
    let kind = match device.kind.as_str() {
        "b" => libc::S_IFBLK,
        "p" => libc::S_IFIFO,
        _ => libc::S_IFCHR,
    };
    let mode = device.file_mode.unwrap_or(0o666) & 0o7777;
    let c_name = CString::new(name.as_encoded_bytes())
        .map_err(|_| create_err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    let dev = libc::makedev(device.major as u32, device.minor as u32);
    // SAFETY: valid fd and C string.
    unsafe {
        let make = || libc::mknodat(dir.as_raw_fd(), c_name.as_ptr(), kind | mode, dev) == 0;
        // A node left by the image (or by an earlier mount) is replaced;
        // a fresh /dev has none, so no unlink is tried first.
        let made = make()
            || (std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST)
                && libc::unlinkat(dir.as_raw_fd(), c_name.as_ptr(), 0) == 0
                && make());
        if !made {
            return Err(create_err(std::io::Error::last_os_error()));
        }
        if libc::fchmodat(dir.as_raw_fd(), c_name.as_ptr(), mode, 0) != 0 {
            return Err(create_err(std::io::Error::last_os_error()));
        }
        if libc::fchownat(
            dir.as_raw_fd(),
            c_name.as_ptr(),
            device.uid.unwrap_or(0),
            device.gid.unwrap_or(0),
            libc::AT_SYMLINK_NOFOLLOW,
        ) != 0
        {
            return Err(create_err(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// An `O_PATH` directory fd reopened for use with `*at` calls.
pub fn reopen_dir(fd: &std::os::fd::OwnedFd) -> std::io::Result<std::fs::File> {
    std::fs::File::open(safe_path::fd_path(fd))
}

/// `/dev/fd`, `/dev/std{in,out,err}`, `/dev/ptmx` and `/dev/core`.
pub fn create_symlinks(root: RawFd) -> Result<(), DeviceError> {
    let dev = safe_path::open_or_create(root, Path::new("/dev"), Create::Directory)?;
    let dev = reopen_dir(&dev).map_err(|source| DeviceError::Create {
        path: "/dev".into(),
        source,
    })?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        let t = CString::new(target).unwrap_or_default();
        let n = CString::new(name).unwrap_or_default();
        // SAFETY: valid fd and C strings.
        unsafe {
            if name == "ptmx" {
                // An image's /dev/ptmx node must not shadow the devpts one.
                libc::unlinkat(dev.as_raw_fd(), n.as_ptr(), 0);
            }
            if libc::symlinkat(t.as_ptr(), dev.as_raw_fd(), n.as_ptr()) != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EEXIST) {
                    return Err(DeviceError::Create {
                        path: PathBuf::from("/dev").join(name),
                        source: err,
                    });
                }
            }
        }
    }
    Ok(())
}
