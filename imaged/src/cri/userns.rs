//! Pods in a user namespace of their own (CRI `userns_options`, mode POD):
//! the mappings checked, each container's spec given a user namespace with
//! them, and the container's root filesystem id-mapped so the image's
//! files, owned by the host's root, are root's inside.
//!
//! The root filesystem (decision): an overlay over *id-mapped lower
//! layers*, not a chowned copy. Each lower layer is cloned detached
//! (`open_tree`), id-mapped through a user namespace with the pod's
//! mappings (`mount_setattr(MOUNT_ATTR_IDMAP)`), attached for as long as
//! the overlay mount takes, and the overlay is mounted over them (Linux
//! 5.19+). The image's layers stay shared with every other container and
//! keep the image's owners on disk. The container's own upper directory,
//! empty when made, is not id-mapped but given to the mapped root (see
//! [`mount_rootfs`]): what the container writes is stored with host ids
//! (root inside = the mapped uid on disk), as containerd 2's and podman's
//! writable layers are. A chowned copy of the image would cost a copy of
//! every layer per mapping and a rewrite of every inode, which is what
//! id-mapped mounts exist to avoid. The overlay keeps private clones of
//! its layers, so the attached layer mounts are taken down at once: the
//! root filesystem is one mount, unmounted as any other.
//!
//! Containers of a pod each get a user namespace of their own with the
//! pod's mappings (the runtime makes it, as for any spec with
//! `uidMappings`): the same ids, not one shared namespace as containerd's
//! pause process gives. The pod's network, IPC and UTS namespaces stay the
//! host's user namespace's, so a container cannot reconfigure them.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use berth_oci::mount_api;
use k8s_cri::v1 as cri;
use serde_json::{json, Value};

use super::sandbox::PodRecord;
use super::{Cri, Error, Result};
use crate::snapshots;

/// The pod's mappings (uids, gids) when it asks for a user namespace of
/// its own; `None` for the host's (NODE, or no options).
pub fn of_pod(config: &cri::PodSandboxConfig) -> Result<Option<(Vec<Value>, Vec<Value>)>> {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|o| o.userns_options.as_ref());
    let Some(userns) = options else {
        return Ok(None);
    };
    match cri::NamespaceMode::try_from(userns.mode) {
        Ok(cri::NamespaceMode::Node) => {
            if !userns.uids.is_empty() || !userns.gids.is_empty() {
                return Err(Error::Invalid(
                    "user namespace mode NODE takes no uid or gid mappings".into(),
                ));
            }
            Ok(None)
        }
        Ok(cri::NamespaceMode::Pod) => {
            let (uids, gids) = (
                mappings("uid", &userns.uids)?,
                mappings("gid", &userns.gids)?,
            );
            host_root(&uids)?;
            host_root(&gids)?;
            Ok(Some((uids, gids)))
        }
        _ => Err(Error::Invalid(format!(
            "user namespace mode {} is not one CRI allows (POD or NODE)",
            userns.mode
        ))),
    }
}

/// CRI's mappings as the OCI spec writes them, checked as the kernel
/// would check them when the runtime writes them: 1 to 5 ranges, none
/// empty or past 2^32.
fn mappings(what: &str, list: &[cri::IdMapping]) -> Result<Vec<Value>> {
    if list.is_empty() || list.len() > 5 {
        return Err(Error::Invalid(format!(
            "a pod user namespace needs 1 to 5 {what} mappings, not {}",
            list.len()
        )));
    }
    list.iter()
        .map(|m| {
            let fits = |start: u32| u64::from(start) + u64::from(m.length) <= 1 << 32;
            if m.length == 0 || !fits(m.host_id) || !fits(m.container_id) {
                return Err(Error::Invalid(format!(
                    "{what} mapping {} -> {} (length {}) is empty or past 2^32",
                    m.container_id, m.host_id, m.length
                )));
            }
            Ok(json!({"containerID": m.container_id, "hostID": m.host_id, "size": m.length}))
        })
        .collect()
}

/// A container's user namespace options must be its pod's: kubelet sends
/// the same in both, and a container cannot leave its pod's.
pub fn check_container(
    pod: &cri::PodSandboxConfig,
    sc: &cri::LinuxContainerSecurityContext,
) -> Result<()> {
    let pod_options = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|o| o.userns_options.clone())
        .unwrap_or_default();
    let own = sc
        .namespace_options
        .as_ref()
        .and_then(|o| o.userns_options.clone());
    match own {
        Some(own) if own != pod_options => Err(Error::Invalid(
            "a container's user namespace options must be its pod's".into(),
        )),
        _ => Ok(()),
    }
}

/// Puts the container in a user namespace of its own with the pod's
/// mappings, and id-maps the CRI mounts that carry mappings.
pub fn apply(
    spec: &mut Value,
    config: &cri::ContainerConfig,
    (uids, gids): &(Vec<Value>, Vec<Value>),
) {
    if let Some(list) = spec["linux"]["namespaces"].as_array_mut() {
        list.push(json!({"type": "user"}));
    }
    spec["linux"]["uidMappings"] = json!(uids);
    spec["linux"]["gidMappings"] = json!(gids);
    // The pod's IPC namespace belongs to the host's user namespace, where
    // the container's root may not mount its mqueue filesystem (berth's
    // rootless spec drops it too); mq_open needs no mount.
    if let Some(list) = spec["mounts"].as_array_mut() {
        list.retain(|m| m["type"] != "mqueue");
    }
    mounts(spec, config);
}

/// CRI mounts with `uid_mappings`/`gid_mappings` become id-mapped binds
/// (runtime-spec 1.1 `uidMappings`, `idmap`), with or without a pod user
/// namespace: a host directory's owners are shown through the mappings.
pub fn mounts(spec: &mut Value, config: &cri::ContainerConfig) {
    let Some(entries) = spec["mounts"].as_array_mut() else {
        return;
    };
    let oci = |list: &[cri::IdMapping]| -> Vec<Value> {
        list.iter()
            .map(|m| json!({"containerID": m.container_id, "hostID": m.host_id, "size": m.length}))
            .collect()
    };
    for m in config
        .mounts
        .iter()
        .filter(|m| !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty())
    {
        for entry in entries.iter_mut().filter(|e| {
            e["destination"] == m.container_path.as_str() && e["source"] == m.host_path.as_str()
        }) {
            entry["uidMappings"] = json!(oci(&m.uid_mappings));
            entry["gidMappings"] = json!(oci(&m.gid_mappings));
            if let Some(options) = entry["options"].as_array_mut() {
                options.push(json!("idmap"));
            }
        }
    }
}

/// Lets the container's root (an unprivileged uid on the host) reach its
/// root filesystem and the pod's files: the runtime's init resolves those
/// paths inside the container's user namespace, and the daemon's
/// directories are 0700. Each directory from the daemon's root down gets
/// search permission only (0711), as containerd's and docker's are for
/// user namespaces: nothing can be listed, and what the files themselves
/// allow is unchanged.
fn make_traversable(dirs: &[&Path]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for dir in dirs {
        let fail = |e: std::io::Error| Error::Failed(format!("{}: {e}", dir.display()));
        let mode = std::fs::metadata(dir).map_err(fail)?.permissions().mode() & 0o7777;
        let wanted = mode | 0o111;
        if wanted != mode {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(wanted)).map_err(fail)?;
        }
    }
    Ok(())
}

/// Mounts the snapshot's overlay on the container's `<bundle>/rootfs`
/// over id-mapped copies of its lower layers (module doc), staged under
/// `<bundle>/idmap` (made and removed here), and lets the container's root
/// reach it and its pod's files.
pub fn mount_rootfs(
    cri: &Cri,
    pod: &PodRecord,
    bundle: &Path,
    mounts: &[snapshots::Mount],
    (uids, gids): &(Vec<Value>, Vec<Value>),
) -> Result<()> {
    let root = cri.dir.parent().unwrap_or(&cri.dir);
    let (pods, containers) = (cri.dir.join("pods"), cri.dir.join("containers"));
    make_traversable(&[root, &cri.dir, &pods, &pod.dir, &containers, bundle])?;
    let (staging, target) = (bundle.join("idmap"), bundle.join("rootfs"));
    let (staging, target) = (staging.as_path(), target.as_path());
    let [overlay] = mounts else {
        return Err(Error::Unsupported(format!(
            "a pod user namespace needs an overlay root filesystem, not {} mounts",
            mounts.len()
        )));
    };
    if overlay.kind != "overlay" {
        return Err(Error::Unsupported(format!(
            "a pod user namespace needs an overlay root filesystem, not {}",
            overlay.kind
        )));
    }
    let userns = user_namespace(uids, gids)?;
    crate::private::create_dir(staging)
        .map_err(|e| Error::Failed(format!("cannot create {}: {e}", staging.display())))?;
    let mut attached = Vec::new();
    let owner = (host_root(uids)?, host_root(gids)?);
    let result = stage_and_mount(overlay, &userns, owner, staging, target, &mut attached);
    for dir in attached.iter().rev() {
        crate::mounts::unmount(dir);
    }
    let _ = std::fs::remove_dir_all(staging);
    result
}

fn stage_and_mount(
    overlay: &snapshots::Mount,
    userns: &OwnedFd,
    owner: (u32, u32),
    staging: &Path,
    target: &Path,
    attached: &mut Vec<PathBuf>,
) -> Result<()> {
    let absolute = |p: &str| match &overlay.base {
        Some(base) => base.join(p),
        None => PathBuf::from(p),
    };
    let mut options = Vec::new();
    let mut upper = None;
    let mut work = None;
    for option in &overlay.options {
        if let Some(list) = option.strip_prefix("lowerdir=") {
            let mut names = Vec::new();
            for (i, layer) in list.split(':').enumerate() {
                let name = i.to_string();
                stage(&absolute(layer), userns, &staging.join(&name), attached)?;
                names.push(name);
            }
            options.push(format!("lowerdir={}", names.join(":")));
        } else if let Some(dir) = option.strip_prefix("upperdir=") {
            upper = Some(absolute(dir));
        } else if let Some(dir) = option.strip_prefix("workdir=") {
            work = Some(absolute(dir));
        } else {
            options.push(option.clone());
        }
    }
    // The upper directory is not id-mapped: the overlay's own work (its
    // work directory, copy-up) runs with the mounter's credentials, the
    // host's root, which no container mapping covers (EOVERFLOW). The
    // container's writable layer is its own and starts empty: its top
    // directory becomes the mapped root's, and what the container writes
    // is stored with host ids, as containerd's and podman's are.
    if let Some(upper) = &upper {
        std::os::unix::fs::chown(upper, Some(owner.0), Some(owner.1))
            .map_err(|e| Error::Failed(format!("chown {}: {e}", upper.display())))?;
    }
    for (option, dir) in [("upperdir", upper), ("workdir", work)] {
        if let Some(dir) = dir {
            options.push(format!("{option}={}", dir.display()));
        }
    }
    let mapped = snapshots::Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options,
        base: Some(staging.to_path_buf()),
    };
    crate::mounts::apply(std::slice::from_ref(&mapped), target)
        .map_err(|e| Error::Failed(format!("id-mapped root filesystem: {e}")))
}

/// The host id the container's 0 maps to.
fn host_root(mappings: &[Value]) -> Result<u32> {
    mappings
        .iter()
        .find(|m| m["containerID"] == 0)
        .and_then(|m| m["hostID"].as_u64())
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| {
            Error::Invalid("a pod user namespace must map the container's root (id 0)".into())
        })
}

/// Attaches an id-mapped clone of `source` at the new directory `at`.
fn stage(source: &Path, userns: &OwnedFd, at: &Path, attached: &mut Vec<PathBuf>) -> Result<()> {
    std::fs::create_dir(at).map_err(|e| Error::Failed(format!("{}: {e}", at.display())))?;
    let tree = idmapped_clone(source, userns)?;
    let dir =
        std::fs::File::open(at).map_err(|e| Error::Failed(format!("{}: {e}", at.display())))?;
    mount_api::move_mount(&tree, &dir).map_err(|errno| {
        Error::Failed(format!(
            "move_mount of {} to {}: {errno}",
            source.display(),
            at.display(),
        ))
    })?;
    attached.push(at.to_path_buf());
    Ok(())
}

/// A detached clone of the directory `source`'s mount, seen through the
/// mappings of `userns`. Only filesystems that support it can be id-mapped
/// (ext4, xfs, btrfs, tmpfs since 6.3, …): the error names the one that
/// cannot.
fn idmapped_clone(source: &Path, userns: &OwnedFd) -> Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(source.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("{} has a NUL byte", source.display())))?;
    let tree = mount_api::open_tree_clone(&path, false)
        .map_err(|errno| Error::Failed(format!("open_tree of {}: {errno}", source.display())))?;
    let attr = mount_api::MountAttr::idmap(userns);
    if let Err(errno) = mount_api::mount_setattr(tree.as_raw_fd(), c"", libc::AT_EMPTY_PATH, &attr)
    {
        let fs = nix::sys::statfs::statfs(source)
            .map(|s| format!("{:?}", s.filesystem_type()))
            .unwrap_or_default();
        return Err(Error::Unsupported(format!(
            "cannot id-map {} (filesystem {fs}) for a pod user namespace: {errno}",
            source.display()
        )));
    }
    Ok(tree)
}

/// A user namespace with the mappings, held by its descriptor: a child
/// made in a new user namespace (before its exec, single-threaded), mapped
/// from here, and ended once the namespace is open.
fn user_namespace(uids: &[Value], gids: &[Value]) -> Result<OwnedFd> {
    let mut command = std::process::Command::new("sleep");
    command
        .arg("infinity")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: unshare is a plain system call, safe between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map_err(Into::into)
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| Error::Failed(format!("cannot make a user namespace: {e}")))?;
    let pid = child.id();
    let text = |list: &[Value]| -> String {
        list.iter()
            .map(|m| format!("{} {} {}\n", m["containerID"], m["hostID"], m["size"]))
            .collect()
    };
    let namespace = std::fs::write(format!("/proc/{pid}/uid_map"), text(uids))
        .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), text(gids)))
        .and_then(|()| std::fs::File::open(format!("/proc/{pid}/ns/user")))
        .map(OwnedFd::from)
        .map_err(|e| Error::Failed(format!("cannot map a user namespace: {e}")));
    let _ = child.kill();
    let _ = child.wait();
    namespace
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(mode: cri::NamespaceMode, uids: Vec<cri::IdMapping>) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        userns_options: Some(cri::UserNamespace {
                            mode: mode as i32,
                            gids: uids.clone(),
                            uids,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn range(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
        cri::IdMapping {
            host_id,
            container_id,
            length,
        }
    }

    #[test]
    fn pod_mappings_are_checked_as_the_kernel_would() {
        use cri::NamespaceMode::{Container, Node, Pod};
        let (uids, gids) = of_pod(&pod(Pod, vec![range(0, 100000, 65536)]))
            .unwrap()
            .expect("mappings");
        assert_eq!(uids, gids);
        assert_eq!(
            uids,
            vec![json!({"containerID": 0, "hostID": 100000, "size": 65536})]
        );
        assert!(of_pod(&pod(Node, vec![])).unwrap().is_none());
        assert!(of_pod(&cri::PodSandboxConfig::default()).unwrap().is_none());
        for bad in [
            pod(Pod, vec![]),
            pod(Pod, vec![range(0, 100000, 0)]),
            pod(Pod, vec![range(0, u32::MAX, 2)]),
            pod(Pod, vec![range(0, 1, 1); 6]),
            pod(Node, vec![range(0, 100000, 65536)]),
            pod(Container, vec![range(0, 100000, 65536)]),
            pod(Pod, vec![range(1, 100000, 65536)]),
        ] {
            assert!(matches!(of_pod(&bad), Err(Error::Invalid(_))), "{bad:?}");
        }
        assert_eq!(host_root(&uids).unwrap(), 100000);
        let shifted = vec![json!({"containerID": 1, "hostID": 5, "size": 1})];
        assert!(host_root(&shifted).is_err());
    }
}
