//! The OCI spec of a CRI container: the daemon's own bundle building
//! ([`crate::bundle::spec`]: image config merged with the command, args,
//! env, working directory and user; capabilities; seccomp; read-only root)
//! fed with what CRI asks, then the parts only CRI has: the pod's
//! namespaces joined by path, supplemental groups, no_new_privs, masked and
//! read-only paths, mount propagation, devices, sysctls, resources, the
//! cgroup parent and kubelet's annotations.

use std::path::{Path, PathBuf};

use berth_proto::v1 as pb;
use k8s_cri::v1 as cri;
use serde_json::{json, Value};

use super::sandbox::PodRecord;
use super::{Error, Result};
use crate::bundle::{self, ResolvedMount, RunDefaults};

/// Everything a CRI container's spec is made from.
pub struct Inputs<'a> {
    pub id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub pod: &'a PodRecord,
    /// The pod's network namespace (`None`: the host's).
    pub netns: Option<PathBuf>,
    pub image: &'a RunDefaults,
    /// The container's mounted root (users and groups are read there).
    pub rootfs: &'a Path,
    pub default_seccomp: Option<&'a std::sync::Arc<Value>>,
    /// The init pid of the container a PID mode TARGET names.
    pub target_pid: Option<u32>,
}

/// The container's security context (an empty one when it gives none).
pub fn security_context(config: &cri::ContainerConfig) -> cri::LinuxContainerSecurityContext {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default()
}

/// `user[:group]` for [`bundle::resolve_user`]: the name or uid asked for,
/// else the image's user.
fn user_of(sc: &cri::LinuxContainerSecurityContext) -> Result<String> {
    let user = if !sc.run_as_username.is_empty() {
        sc.run_as_username.clone()
    } else if let Some(uid) = &sc.run_as_user {
        if uid.value < 0 {
            return Err(Error::Invalid(format!(
                "run_as_user {} is negative",
                uid.value
            )));
        }
        uid.value.to_string()
    } else {
        String::new()
    };
    match &sc.run_as_group {
        Some(_) if user.is_empty() => Err(Error::Invalid(
            "run_as_group needs run_as_user or run_as_username".into(),
        )),
        Some(gid) if gid.value < 0 => Err(Error::Invalid(format!(
            "run_as_group {} is negative",
            gid.value
        ))),
        Some(gid) => Ok(format!("{user}:{}", gid.value)),
        None => Ok(user),
    }
}

/// The seccomp profile as [`bundle::spec`] takes it: "" (the default
/// profile), "unconfined", or a profile's JSON text. An unset profile is
/// unconfined, as Kubernetes defines it.
fn seccomp_of(sc: &cri::LinuxContainerSecurityContext) -> Result<String> {
    use cri::security_profile::ProfileType;
    let localhost = |path: &str| -> Result<String> {
        if !path.starts_with('/') {
            return Err(Error::Invalid(format!(
                "seccomp profile {path:?}: a Localhost profile is an absolute path"
            )));
        }
        std::fs::read_to_string(path)
            .map_err(|e| Error::Invalid(format!("seccomp profile {path}: {e}")))
    };
    match &sc.seccomp {
        Some(profile) => match ProfileType::try_from(profile.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(String::new()),
            Ok(ProfileType::Unconfined) => Ok("unconfined".into()),
            Ok(ProfileType::Localhost) => localhost(&profile.localhost_ref),
            Err(_) => Err(Error::Invalid(format!(
                "unknown seccomp profile type {}",
                profile.profile_type
            ))),
        },
        #[allow(deprecated)]
        None => match sc.seccomp_profile_path.as_str() {
            "" | "unconfined" => Ok("unconfined".into()),
            "runtime/default" | "docker/default" => Ok(String::new()),
            other => match other.strip_prefix("localhost/") {
                Some(path) => localhost(path),
                None => Err(Error::Invalid(format!("unknown seccomp profile {other:?}"))),
            },
        },
    }
}

/// The CRI mounts checked and resolved (a missing host directory is
/// made, as containerd does).
fn mounts_of(config: &cri::ContainerConfig) -> Result<Vec<ResolvedMount>> {
    let mut out = Vec::new();
    for m in &config.mounts {
        if !m.container_path.starts_with('/') || m.container_path.split('/').any(|c| c == "..") {
            return Err(Error::Invalid(format!(
                "mount destination {:?} must be an absolute path without ..",
                m.container_path
            )));
        }
        if !m.host_path.starts_with('/') {
            return Err(Error::Invalid(format!(
                "mount source {:?} must be an absolute path",
                m.host_path
            )));
        }
        // The runtime applies `rro` with mount_setattr (Linux 5.12+), as
        // runc does; CRI allows it on private read-only mounts only.
        if m.recursive_read_only
            && (!m.readonly || m.propagation != cri::MountPropagation::PropagationPrivate as i32)
        {
            return Err(Error::Invalid(format!(
                "mount {}: a recursive read-only mount must be read-only and private",
                m.container_path
            )));
        }
        if m.image.is_some() {
            return Err(Error::Unsupported(format!(
                "mount {}: image mounts are not supported yet",
                m.container_path
            )));
        }
        let source = PathBuf::from(&m.host_path);
        if !source.exists() {
            std::fs::create_dir_all(&source)
                .map_err(|e| Error::Invalid(format!("mount source {}: {e}", source.display())))?;
        }
        out.push(ResolvedMount {
            kind: pb::container_mount::Kind::Bind,
            source,
            destination: m.container_path.clone(),
            read_only: m.readonly,
        });
    }
    Ok(out)
}

/// The spec.
pub fn build(inputs: &Inputs<'_>) -> Result<Value> {
    let config = inputs.config;
    let sc = security_context(config);
    let pod_config = inputs.pod.config();
    let pod_privileged = pod_config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if sc.privileged && !pod_privileged {
        return Err(Error::Invalid(
            "a privileged container needs a privileged pod sandbox".into(),
        ));
    }
    super::userns::check_container(&pod_config, &sc)?;
    let caps = sc.capabilities.clone().unwrap_or_default();
    if !caps.add_ambient_capabilities.is_empty() {
        return Err(Error::Unsupported(
            "ambient capabilities are not supported yet".into(),
        ));
    }
    let settings = pb::ContainerConfig {
        entrypoint: config.command.clone(),
        entrypoint_set: !config.command.is_empty(),
        args: config.args.clone(),
        env: config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect(),
        working_dir: config.working_dir.clone(),
        user: user_of(&sc)?,
        hostname: inputs.pod.hostname(),
        tty: config.tty,
        stdin_open: config.stdin,
        read_only: sc.readonly_rootfs,
        cap_add: caps.add_capabilities.clone(),
        cap_drop: caps.drop_capabilities.clone(),
        privileged: sc.privileged,
        seccomp_profile: seccomp_of(&sc)?,
        network: "none".into(),
        ..Default::default()
    };
    let mounts = mounts_of(config)?;
    let layers = [inputs.rootfs.to_path_buf()];
    let spec = bundle::spec(&bundle::Inputs {
        id: inputs.id,
        settings: &settings,
        image: inputs.image,
        layers: &layers,
        mounts: &mounts,
        default_seccomp: inputs.default_seccomp,
        // The pod's hostname, hosts and resolv.conf are bound in.
        bundle: &inputs.pod.dir,
        netns: inputs.netns.as_deref(),
        host_network: inputs.netns.is_none(),
    })?;
    // Whatever type bundle::spec returns, its JSON is the OCI spec.
    let mut spec = serde_json::to_value(spec)
        .map_err(|e| Error::Failed(format!("spec of {}: {e}", inputs.id)))?;

    let process = &mut spec["process"];
    process["noNewPrivileges"] = json!(sc.no_new_privs);
    let groups = supplemental_groups(&process["user"], &sc);
    process["user"]["additionalGids"] = json!(groups);
    let resources = config.linux.as_ref().and_then(|l| l.resources.clone());
    if let Some(r) = &resources {
        if r.oom_score_adj != 0 {
            process["oomScoreAdj"] = json!(r.oom_score_adj);
        }
    }

    namespaces(&mut spec, inputs, &sc)?;
    propagation(&mut spec, config);
    match super::userns::of_pod(&pod_config)? {
        Some(mappings) => {
            if inputs.target_pid.is_some() {
                return Err(Error::Invalid(
                    "a container in a pod user namespace cannot join another's PID namespace"
                        .into(),
                ));
            }
            super::userns::apply(&mut spec, config, &mappings)
        }
        None => super::userns::mounts(&mut spec, config),
    }
    let linux = &mut spec["linux"];
    let parent = inputs.pod.cgroup_parent();
    let parent = if parent.is_empty() {
        "/k8s.io".to_string()
    } else {
        parent.trim_end_matches('/').to_string()
    };
    linux["cgroupsPath"] = json!(format!("{parent}/{}", inputs.id));
    if let Some(linux_pod) = &pod_config.linux {
        if !linux_pod.sysctls.is_empty() {
            linux["sysctl"] = json!(linux_pod.sysctls);
        }
    }
    if !sc.privileged {
        if !sc.masked_paths.is_empty() {
            linux["maskedPaths"] = json!(sc.masked_paths);
        }
        if !sc.readonly_paths.is_empty() {
            linux["readonlyPaths"] = json!(sc.readonly_paths);
        }
    }
    if let Some(r) = &resources {
        let limits = linux_resources(r)?;
        if let (Some(object), Value::Object(limits)) = (linux["resources"].as_object_mut(), limits)
        {
            object.extend(limits);
        }
    }
    devices(&mut spec, config)?;
    let mut annotations = config.annotations.clone();
    annotations.insert(
        "io.kubernetes.cri.container-type".into(),
        "container".into(),
    );
    annotations.insert("io.kubernetes.cri.sandbox-id".into(), inputs.pod.id.clone());
    if let Some(m) = &config.metadata {
        annotations.insert("io.kubernetes.cri.container-name".into(), m.name.clone());
    }
    annotations.insert("org.berth.container.id".into(), inputs.id.to_string());
    spec["annotations"] = json!(annotations);
    Ok(spec)
}

/// The additional gids: the image's groups of the user and the
/// supplemental groups (Merge), or the supplemental groups alone (Strict).
fn supplemental_groups(user: &Value, sc: &cri::LinuxContainerSecurityContext) -> Vec<u32> {
    let mut groups: Vec<u32> =
        if sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32 {
            Vec::new()
        } else {
            user["additionalGids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g.as_u64())
                        .map(|g| g as u32)
                        .collect()
                })
                .unwrap_or_default()
        };
    groups.extend(
        sc.supplemental_groups
            .iter()
            .filter_map(|g| u32::try_from(*g).ok()),
    );
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// The pod's namespaces joined by path; PID as the container asks.
fn namespaces(
    spec: &mut Value,
    inputs: &Inputs<'_>,
    sc: &cri::LinuxContainerSecurityContext,
) -> Result<()> {
    // No options is the protobuf default, POD, as containerd reads it: the
    // pod's PID namespace when it has one, else the container's own.
    let pid_mode = sc
        .namespace_options
        .as_ref()
        .map_or(cri::NamespaceMode::Pod as i32, |o| o.pid);
    let mut list = vec![json!({"type": "mount"})];
    let pid = if pid_mode == cri::NamespaceMode::Node as i32 {
        None
    } else if pid_mode == cri::NamespaceMode::Target as i32 {
        let pid = inputs.target_pid.ok_or_else(|| {
            Error::Precondition("the target container of PID mode TARGET is not running".into())
        })?;
        Some(json!({"type": "pid", "path": format!("/proc/{pid}/ns/pid")}))
    } else if pid_mode == cri::NamespaceMode::Pod as i32 {
        Some(match inputs.pod.pid_namespace() {
            Some(path) => json!({"type": "pid", "path": path}),
            None => json!({"type": "pid"}),
        })
    } else {
        Some(json!({"type": "pid"}))
    };
    list.extend(pid);
    if let Some(path) = inputs.pod.ipc_pin() {
        list.push(json!({"type": "ipc", "path": path}));
    }
    if let Some(path) = inputs.pod.uts_pin() {
        list.push(json!({"type": "uts", "path": path}));
    }
    if let Some(path) = &inputs.netns {
        list.push(json!({"type": "network", "path": path}));
    }
    spec["linux"]["namespaces"] = json!(list);
    // The UTS namespace is the pod's (named when pinned) or the host's.
    if let Some(object) = spec.as_object_mut() {
        object.remove("hostname");
    }
    Ok(())
}

/// Mount propagation as asked (private, rslave, rshared), and the root's
/// propagation that lets it through.
fn propagation(spec: &mut Value, config: &cri::ContainerConfig) {
    use cri::MountPropagation as P;
    let mut root = None;
    let Some(mounts) = spec["mounts"].as_array_mut() else {
        return;
    };
    for m in &config.mounts {
        let (option, needs) = match P::try_from(m.propagation) {
            Ok(P::PropagationHostToContainer) => ("rslave", Some("rslave")),
            Ok(P::PropagationBidirectional) => ("rshared", Some("rshared")),
            _ => ("rprivate", None),
        };
        if needs == Some("rshared") || (needs.is_some() && root.is_none()) {
            root = needs;
        }
        for entry in mounts.iter_mut() {
            if entry["destination"] == m.container_path.as_str()
                && entry["source"] == m.host_path.as_str()
            {
                let mut options = vec!["rbind", option];
                if m.readonly {
                    options.push("ro");
                }
                if m.recursive_read_only {
                    options.push("rro");
                }
                entry["options"] = json!(options);
            }
        }
    }
    if let Some(root) = root {
        spec["linux"]["rootfsPropagation"] = json!(root);
    }
}

/// `linux.resources` of CRI's limits (also what UpdateContainerResources sends).
pub fn linux_resources(r: &cri::LinuxContainerResources) -> Result<Value> {
    let mut out = json!({});
    if r.memory_limit_in_bytes < 0 || r.cpu_quota < -1 || r.cpu_period < 0 || r.cpu_shares < 0 {
        return Err(Error::Invalid(format!(
            "invalid resources {r:?}: negative limits"
        )));
    }
    let mut memory = serde_json::Map::new();
    if r.memory_limit_in_bytes > 0 {
        memory.insert("limit".into(), json!(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes > 0 {
        memory.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    if !memory.is_empty() {
        out["memory"] = Value::Object(memory);
    }
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    if !r.hugepage_limits.is_empty() {
        out["hugepageLimits"] = json!(r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect::<Vec<_>>());
    }
    if !r.unified.is_empty() {
        out["unified"] = json!(r.unified);
    }
    Ok(out)
}

/// Host devices made in the container and allowed in its cgroup.
fn devices(spec: &mut Value, config: &cri::ContainerConfig) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for d in &config.devices {
        let meta = std::fs::metadata(&d.host_path)
            .map_err(|e| Error::Invalid(format!("device {}: {e}", d.host_path)))?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(Error::Invalid(format!(
                "device {} is not a character or block device",
                d.host_path
            )));
        };
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        let permissions = if d.permissions.is_empty() {
            "rwm".to_string()
        } else if d.permissions.chars().all(|c| "rwm".contains(c)) {
            d.permissions.clone()
        } else {
            return Err(Error::Invalid(format!(
                "device {}: permissions {:?} are not a subset of rwm",
                d.host_path, d.permissions
            )));
        };
        let path = if d.container_path.is_empty() {
            &d.host_path
        } else {
            &d.container_path
        };
        push(
            &mut spec["linux"]["devices"],
            json!({"path": path, "type": kind, "major": major, "minor": minor,
                   "fileMode": meta.mode() & 0o7777, "uid": meta.uid(), "gid": meta.gid()}),
        );
        push(
            &mut spec["linux"]["resources"]["devices"],
            json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": permissions}),
        );
    }
    Ok(())
}

fn push(list: &mut Value, item: Value) {
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(a) = list.as_array_mut() {
        a.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_groups_and_their_errors() {
        let mut sc = cri::LinuxContainerSecurityContext::default();
        assert_eq!(user_of(&sc).unwrap(), "");
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
        assert_eq!(user_of(&sc).unwrap(), "1000");
        sc.run_as_group = Some(cri::Int64Value { value: 2000 });
        assert_eq!(user_of(&sc).unwrap(), "1000:2000");
        sc.run_as_username = "nobody".into();
        assert_eq!(user_of(&sc).unwrap(), "nobody:2000");
        let only_group = cri::LinuxContainerSecurityContext {
            run_as_group: Some(cri::Int64Value { value: 1 }),
            ..Default::default()
        };
        assert!(matches!(user_of(&only_group), Err(Error::Invalid(_))));
    }

    #[test]
    fn supplemental_groups_merge_or_replace() {
        let user = json!({"uid": 1, "gid": 1, "additionalGids": [10, 20]});
        let mut sc = cri::LinuxContainerSecurityContext {
            supplemental_groups: vec![30, 10],
            ..Default::default()
        };
        assert_eq!(supplemental_groups(&user, &sc), vec![10, 20, 30]);
        sc.supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
        assert_eq!(supplemental_groups(&user, &sc), vec![10, 30]);
    }

    #[test]
    fn seccomp_unset_is_unconfined_and_runtime_default_is_the_default() {
        use cri::security_profile::ProfileType;
        let mut sc = cri::LinuxContainerSecurityContext::default();
        assert_eq!(seccomp_of(&sc).unwrap(), "unconfined");
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        assert_eq!(seccomp_of(&sc).unwrap(), "");
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "relative.json".into(),
        });
        assert!(matches!(seccomp_of(&sc), Err(Error::Invalid(_))));
    }

    #[test]
    fn resources_map_to_oci() {
        let r = cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let v = linux_resources(&r).unwrap();
        assert_eq!(v["memory"]["limit"], 64 << 20);
        assert_eq!(v["cpu"]["quota"], 50_000);
        assert_eq!(v["cpu"]["period"], 100_000);
        assert_eq!(v["cpu"]["shares"], 512);
        assert_eq!(v["cpu"]["cpus"], "0");
        let bad = cri::LinuxContainerResources {
            memory_limit_in_bytes: -1,
            ..Default::default()
        };
        assert!(linux_resources(&bad).is_err());
    }
}
