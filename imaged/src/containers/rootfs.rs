//! A container's root: the snapshot's mounts on `<bundle>/rootfs`.

use super::*;

impl Containers {
    /// Makes sure the rootfs is mounted (it is not after a reboot).
    pub fn ensure_rootfs(&self, record: &ContainerRecord) -> Result<()> {
        let rootfs = record.rootfs();
        if is_mount_point(&rootfs) {
            return Ok(());
        }
        let mounts = self.images.snapshots.mounts(&record.snapshot_key)?;
        mount_rootfs(&record.id, &mounts, &rootfs)
    }
}

/// Whether `path` is the root of a mount: one `statx` (its
/// `STATX_ATTR_MOUNT_ROOT`, Linux 5.8) where reading mountinfo costs a line
/// per mount on the host — with a thousand containers, a thousand overlay
/// lines and milliseconds on every start. Older kernels read mountinfo.
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c_path` is NUL-terminated and `buf` is a writable statx the
    // kernel fills on success.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return false;
    }
    // SAFETY: statx succeeded, so it filled `buf` (it was zeroed before).
    let stx = unsafe { buf.assume_init() };
    let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & mount_root != 0 {
        return stx.stx_attributes & mount_root != 0;
    }
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted)
}

/// A container removed when it exits never needs its writes on disk:
/// `volatile` spares the overlay the sync of the whole upper filesystem it
/// otherwise makes at unmount (on a busy disk, the longest step of a
/// `run --rm`), as podman does for its `--rm` containers. After a crash the
/// kernel refuses to mount such an upper directory again; nothing does.
pub(super) fn volatile(mounts: &mut [snapshots::Mount]) {
    for m in mounts.iter_mut().filter(|m| m.kind == "overlay") {
        m.options.push("volatile".to_string());
    }
}

/// Mounts the snapshot's mounts on `target` ([`crate::mounts`]).
pub(crate) fn mount_rootfs(id: &str, mounts: &[snapshots::Mount], target: &Path) -> Result<()> {
    crate::mounts::apply(mounts, target).map_err(|e| Error::Mount {
        id: id.to_string(),
        target: target.to_path_buf(),
        detail: e.to_string(),
    })
}

pub(crate) use crate::mounts::unmount;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_roots_are_told_from_directories() {
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/proc/self")));
        assert!(!is_mount_point(
            &std::env::temp_dir().join("berth-no-such-dir")
        ));
    }
}
