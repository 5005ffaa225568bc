//! What serde cannot check in a spec: required fields and their relations,
//! names the kernel must know, and sysctls a container may set.

use super::{NamespaceKind, Spec, SpecError};

/// IPC sysctls the kernel keeps per IPC namespace.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// A sysctl is written through the container's `/proc/sys`, which for a
/// non-namespaced key is the host's: only keys that live in a namespace the
/// container owns are allowed (as runc does), so a config cannot retune the
/// host kernel.
fn check_sysctl(key: &str, has: &dyn Fn(NamespaceKind) -> bool) -> Result<(), SpecError> {
    let err = |why: &str| Err(SpecError::Invalid(format!("sysctl {key:?} {why}")));
    if key.is_empty()
        || key.contains('/')
        || key.split('.').any(|part| part.is_empty() || part == "..")
    {
        return err("is not a valid sysctl name");
    }
    let needs = if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        NamespaceKind::Ipc
    } else if key.starts_with("net.") {
        NamespaceKind::Network
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        NamespaceKind::Uts
    } else {
        return err("is not namespaced: it would change the host (not allowed)");
    };
    if !has(needs) {
        return err(
            &format!("needs a private {needs:?} namespace (not in the config)").to_lowercase(),
        );
    }
    Ok(())
}

impl Spec {
    /// Checks what serde cannot: required fields and their relations.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |msg: String| Err(SpecError::Invalid(msg));
        let Some(root) = &self.root else {
            return invalid("root must be specified".into());
        };
        if root.path.as_os_str().is_empty() {
            return invalid("root.path is empty".into());
        }
        let Some(process) = &self.process else {
            return invalid("process must be specified".into());
        };
        if process.args.is_empty() {
            return invalid("args must not be empty".into());
        }
        if !process.cwd.starts_with('/') {
            return invalid(format!(
                "cwd {:?} is not an absolute path inside the container",
                process.cwd
            ));
        }
        let namespaces = self.namespaces()?;
        let has = |k| namespaces.iter().any(|(kind, _)| *kind == k);
        let linux = self.linux();
        if has(NamespaceKind::User) {
            let joined = namespaces
                .iter()
                .any(|(k, p)| *k == NamespaceKind::User && p.is_some());
            if !joined && (linux.uid_mappings.is_empty() || linux.gid_mappings.is_empty()) {
                return invalid("user namespaces enabled, but no uid or gid mappings".into());
            }
        } else if !linux.uid_mappings.is_empty() || !linux.gid_mappings.is_empty() {
            return invalid("uid/gid mappings given without a user namespace".into());
        }
        if self.hostname.as_deref().is_some_and(|h| !h.is_empty()) && !has(NamespaceKind::Uts) {
            return invalid("unable to set hostname without a private UTS namespace".into());
        }
        if self.domainname.as_deref().is_some_and(|h| !h.is_empty()) && !has(NamespaceKind::Uts) {
            return invalid("unable to set domainname without a private UTS namespace".into());
        }
        if !linux.time_offsets.is_empty() && !has(NamespaceKind::Time) {
            return invalid("time offsets given without a time namespace".into());
        }
        for mount in &self.mounts {
            if !mount.destination.is_absolute() {
                return invalid(format!(
                    "mount destination {} is not absolute",
                    mount.destination.display()
                ));
            }
        }
        for device in &linux.devices {
            if !matches!(device.kind.as_str(), "c" | "u" | "b" | "p") {
                return invalid(format!(
                    "device {} has invalid type {:?}",
                    device.path.display(),
                    device.kind
                ));
            }
        }
        if let Some(propagation) = &linux.rootfs_propagation {
            if crate::kernel_names::propagation_flag(propagation).is_none() {
                return invalid(format!("unknown rootfsPropagation {propagation:?}"));
            }
        }
        // A namespace "joined" by path may be the host's own: that is not private.
        let private = |k: NamespaceKind| {
            namespaces.iter().any(|(kind, path)| {
                *kind == k
                    && path.as_ref().is_none_or(|p| {
                        use std::os::unix::fs::MetadataExt;
                        let own = std::fs::metadata(format!("/proc/self/ns/{}", k.proc_name()));
                        let joined = std::fs::metadata(p);
                        !matches!((own, joined), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev())
                    })
            })
        };
        for key in linux.sysctl.keys() {
            check_sysctl(key, &private)?;
        }
        for rlimit in &process.rlimits {
            if crate::kernel_names::rlimit(&rlimit.kind).is_none() {
                return invalid(format!("unknown rlimit type {:?}", rlimit.kind));
            }
            if rlimit.soft > rlimit.hard {
                return invalid(format!(
                    "rlimit {}: soft limit {} exceeds hard limit {}",
                    rlimit.kind, rlimit.soft, rlimit.hard
                ));
            }
        }
        if let Some(caps) = &process.capabilities {
            for set in [
                &caps.bounding,
                &caps.effective,
                &caps.inheritable,
                &caps.permitted,
                &caps.ambient,
            ]
            .into_iter()
            .flatten()
            {
                for name in set {
                    if crate::kernel_names::capability(name).is_none() {
                        return invalid(format!("unknown capability {name:?}"));
                    }
                }
            }
        }
        if let Some(label) = &process.selinux_label {
            if !label.is_empty() {
                return invalid("selinuxLabel is set but SELinux is not supported by berth".into());
            }
        }
        if let Some(profile) = &process.apparmor_profile {
            if !profile.is_empty() {
                return invalid(
                    "apparmorProfile is set but AppArmor is not supported by berth".into(),
                );
            }
        }
        if let Some(resources) = &linux.resources {
            if let Some(key) = resources.others.keys().next() {
                return invalid(format!(
                    "linux.resources.{key} is set but berth does not support it"
                ));
            }
        }
        if linux.personality.is_some() || linux.intel_rdt.is_some() {
            return invalid("linux.personality / linux.intelRdt are not supported".into());
        }
        if process.scheduler.is_some() || process.io_priority.is_some() {
            return invalid("process.scheduler / process.ioPriority are not supported".into());
        }
        Ok(())
    }
}
