//! The rootfs mounts of a Create request (the snapshotter's overlay or
//! bind mounts), mounted onto `BUNDLE/rootfs` and taken down again at
//! Delete, at `delete` cleanup, or when Create fails.

use std::path::{Path, PathBuf};

use containerd_shim_protos::types::mount::Mount;
use nix::mount::{MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create mount point {path}: {source}")]
    MountPoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot mount {kind} {source_path} on {target}: {errno}")]
    Mount {
        kind: String,
        source_path: String,
        target: PathBuf,
        errno: nix::Error,
    },
}

/// Splits mount(8)-style options into flags and the data string.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "suid" | "dev" | "exec" | "async" | "defaults" => (MsFlags::empty(), MsFlags::empty()),
            _ => {
                data.push(option.as_str());
                (MsFlags::empty(), MsFlags::empty())
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, data.join(","))
}

/// Mounts each of `mounts` on `target`, in order; on failure, whatever was
/// mounted is taken down again.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    if mounts.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(|source| MountError::MountPoint {
        path: target.to_path_buf(),
        source,
    })?;
    for m in mounts {
        let (flags, data) = parse_options(&m.options);
        let kind = if m.type_.is_empty() {
            "bind"
        } else {
            m.type_.as_str()
        };
        let fstype = (kind != "bind").then_some(kind);
        let result = nix::mount::mount(
            Some(m.source.as_str()),
            target,
            fstype,
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .and_then(|()| {
            // A read-only bind only takes effect on a remount.
            if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
                nix::mount::mount(
                    None::<&str>,
                    target,
                    None::<&str>,
                    flags | MsFlags::MS_REMOUNT,
                    None::<&str>,
                )
            } else {
                Ok(())
            }
        });
        if let Err(errno) = result {
            unmount_all(target);
            return Err(MountError::Mount {
                kind: kind.to_string(),
                source_path: m.source.clone(),
                target: target.to_path_buf(),
                errno,
            });
        }
    }
    Ok(())
}

/// Unmounts everything stacked on `target` (nothing mounted is fine).
pub fn unmount_all(target: &Path) {
    for _ in 0..64 {
        if nix::mount::umount2(target, MntFlags::MNT_DETACH).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_data_are_split() {
        let options: Vec<String> = ["ro", "nosuid", "lowerdir=/a:/b", "index=off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = parse_options(&options);
        assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(data, "lowerdir=/a:/b,index=off");
        let (flags, _) = parse_options(&["ro".into(), "rw".into(), "rbind".into()]);
        assert_eq!(flags, MsFlags::MS_BIND | MsFlags::MS_REC);
    }
}
