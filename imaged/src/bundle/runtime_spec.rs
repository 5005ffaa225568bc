//! A container's `config.json`, built as a typed value
//! ([`berth_oci::spec::Spec`], the type the runtime reads it with).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_oci::spec as oci;
use berth_proto::v1 as pb;
use serde_json::Value;

use super::{resolve_user, Error, Inputs, Result, DOCKER_CAPS};

/// `KEY=VALUE` lists merged: later keys replace earlier ones, in place.
fn merge_env(layers: &[&[String]]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for list in layers {
        for entry in *list {
            let Some((key, _)) = entry.split_once('=') else {
                return Err(Error::Env(entry.clone()));
            };
            if key.is_empty() {
                return Err(Error::Env(entry.clone()));
            }
            match out
                .iter_mut()
                .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
            {
                Some(existing) => *existing = entry.clone(),
                None => out.push(entry.clone()),
            }
        }
    }
    Ok(out)
}

/// The capability set after `--cap-add`/`--cap-drop` (`ALL` allowed in both).
fn capabilities(settings: &pb::ContainerConfig) -> Result<Vec<String>> {
    let normal = |c: &str| -> String {
        let upper = c.to_ascii_uppercase();
        if upper.starts_with("CAP_") || upper == "ALL" {
            upper
        } else {
            format!("CAP_{upper}")
        }
    };
    let known = berth_oci::kernel_names::all_capability_names();
    let check = |c: &String| -> Result<()> {
        if c == "ALL" || known.iter().any(|k| k == c) {
            Ok(())
        } else {
            Err(Error::Capability(c.clone()))
        }
    };
    let add: Vec<String> = settings.cap_add.iter().map(|c| normal(c)).collect();
    let drop: Vec<String> = settings.cap_drop.iter().map(|c| normal(c)).collect();
    add.iter().chain(&drop).try_for_each(check)?;
    let mut caps: Vec<String> = if settings.privileged || add.iter().any(|c| c == "ALL") {
        // "All" is what the daemon itself may hand on: its bounding set, as
        // docker does. A capability outside it (root here lacks
        // CAP_SYS_RESOURCE) would fail the runtime's capset.
        match caps::read(None, caps::CapSet::Bounding) {
            Ok(bounding) => known
                .iter()
                .filter(|name| {
                    name.parse::<caps::Capability>()
                        .is_ok_and(|c| bounding.contains(&c))
                })
                .cloned()
                .collect(),
            Err(_) => known.clone(),
        }
    } else {
        DOCKER_CAPS.iter().map(|c| c.to_string()).collect()
    };
    if drop.iter().any(|c| c == "ALL") {
        caps.clear();
    }
    for cap in add.iter().filter(|c| *c != "ALL") {
        if !caps.contains(cap) {
            caps.push(cap.clone());
        }
    }
    caps.retain(|c| !drop.contains(c));
    Ok(caps)
}

/// The OCI spec of a container, as the JSON of its bundle's `config.json`.
pub fn spec(inputs: &Inputs<'_>) -> Result<Value> {
    build(inputs).map(|spec| oci::to_json(&spec))
}

/// The OCI spec of a container: the runtime's defaults (`berth spec`), then
/// docker's choices, the image's config and the client's settings on top.
/// Checked as the runtime will check it, so a bad setting fails the create.
pub fn build(inputs: &Inputs<'_>) -> Result<oci::Spec> {
    let settings = inputs.settings;
    let image = inputs.image;
    let mut spec: oci::Spec = serde_json::from_value(berth_oci::defaults::spec(false))
        .map_err(|e| Error::Spec(e.to_string()))?;

    // Process: entrypoint + cmd, as docker combines them.
    let entrypoint = if settings.entrypoint_set {
        settings.entrypoint.clone()
    } else {
        image.entrypoint.clone()
    };
    let cmd = if !settings.args.is_empty() {
        settings.args.clone()
    } else if settings.entrypoint_set {
        Vec::new()
    } else {
        image.cmd.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::NoCommand);
    }
    let user = if settings.user.is_empty() {
        &image.user
    } else {
        &settings.user
    };
    let (uid, gid, additional_gids) = resolve_user(user, inputs.layers)?;
    let hostname = if settings.hostname.is_empty() {
        inputs.id.chars().take(12).collect()
    } else {
        settings.hostname.clone()
    };
    let defaults = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        format!("HOSTNAME={hostname}"),
    ];
    let term = if settings.tty {
        vec!["TERM=xterm".to_string()]
    } else {
        Vec::new()
    };
    let env = merge_env(&[&defaults, &term, &image.env, &settings.env])?;
    let cwd = [&settings.working_dir, &image.working_dir]
        .into_iter()
        .find(|d| !d.is_empty())
        .cloned()
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(Error::Invalid {
            what: "working directory",
            value: cwd,
            why: "it must be an absolute path",
        });
    }
    let caps = capabilities(settings)?;
    let nofile = nofile_limit().unwrap_or(1_048_576);
    spec.process = Some(oci::Process {
        terminal: settings.tty,
        user: oci::User {
            uid,
            gid,
            additional_gids,
            ..Default::default()
        },
        args,
        env,
        cwd,
        capabilities: Some(oci::Capabilities {
            bounding: Some(caps.clone()),
            effective: Some(caps.clone()),
            permitted: Some(caps.clone()),
            ..Default::default()
        }),
        rlimits: vec![oci::Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            hard: nofile,
            soft: nofile,
        }],
        // docker leaves no_new_privs off unless asked (setuid binaries work).
        no_new_privileges: false,
        ..Default::default()
    });
    spec.hostname = Some(hostname);
    spec.root = Some(oci::Root {
        path: "rootfs".into(),
        readonly: settings.read_only,
    });

    let linux = spec.linux.get_or_insert_with(Default::default);
    // Every namespace but user; no cgroup namespace, as docker on v1 hosts.
    let namespace = |kind: &str, path: Option<&Path>| oci::Namespace {
        kind: kind.into(),
        path: path.map(Path::to_path_buf),
    };
    linux.namespaces = vec![
        namespace("pid", None),
        namespace("ipc", None),
        namespace("uts", None),
        namespace("mount", None),
    ];
    match inputs.netns {
        Some(path) => linux.namespaces.push(namespace("network", Some(path))),
        None if inputs.host_network => {}
        None => linux.namespaces.push(namespace("network", None)),
    }
    linux.cgroups_path = Some(format!("/berth-imaged/{}", inputs.id));
    let mut resources = match &settings.resources {
        Some(limits) => resources(limits)?,
        None => oci::Resources::default(),
    };
    resources.devices = vec![oci::DeviceRule {
        allow: settings.privileged,
        access: Some("rwm".into()),
        ..Default::default()
    }];
    linux.resources = Some(resources);
    if settings.privileged {
        linux.masked_paths.clear();
        linux.readonly_paths.clear();
    }
    linux.seccomp = seccomp(inputs, &caps)?;
    if settings.privileged {
        for m in spec.mounts.iter_mut() {
            if m.destination == Path::new("/sys") || m.destination == Path::new("/sys/fs/cgroup") {
                m.options = ["nosuid", "noexec", "nodev"].map(String::from).to_vec();
            }
        }
    }
    // No cgroup namespace: the cgroup mount is a read-only view.
    for m in inputs.mounts {
        if !m.destination.starts_with('/') {
            return Err(Error::Invalid {
                what: "mount destination",
                value: m.destination.clone(),
                why: "it must be an absolute path",
            });
        }
        let (kind, source, mut options) = match m.kind {
            pb::container_mount::Kind::Tmpfs => (
                "tmpfs",
                PathBuf::from("tmpfs"),
                vec!["nosuid", "nodev", "mode=1777"],
            ),
            _ => ("bind", m.source.clone(), vec!["rbind", "rprivate"]),
        };
        if m.read_only {
            options.push("ro");
        }
        spec.mounts
            .push(mount(&m.destination, kind, source, &options));
    }
    for (file, destination) in [
        ("hostname", "/etc/hostname"),
        ("hosts", "/etc/hosts"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        let source = inputs.bundle.join(file);
        if source.exists() && !inputs.mounts.iter().any(|m| m.destination == destination) {
            spec.mounts
                .push(mount(destination, "bind", source, &["rbind", "rprivate"]));
        }
    }
    spec.annotations = [("org.berth.container.id".to_string(), inputs.id.to_string())].into();
    spec.validate().map_err(|e| Error::Spec(e.to_string()))?;
    Ok(spec)
}

fn mount(destination: &str, kind: &str, source: PathBuf, options: &[&str]) -> oci::Mount {
    oci::Mount {
        destination: destination.into(),
        kind: Some(kind.into()),
        source: Some(source),
        options: options.iter().map(|o| o.to_string()).collect(),
        ..Default::default()
    }
}

/// `linux.seccomp`: podman's default profile for these capabilities, unless
/// unconfined (or privileged). Never silently without.
fn seccomp(inputs: &Inputs<'_>, caps: &[String]) -> Result<Option<Value>> {
    let settings = inputs.settings;
    match (settings.privileged, settings.seccomp_profile.as_str()) {
        (true, _) | (_, "unconfined") => Ok(None),
        (false, "") => {
            let profile = inputs.default_seccomp.ok_or_else(|| Error::Seccomp("the daemon has no default profile (install golang-github-containers-common-dev or set seccomp_profile in its config), and the container did not ask for unconfined".into()))?;
            resolved_default(profile, caps).map(Some)
        }
        (false, text) => {
            let profile = serde_json::from_str(text)
                .map_err(|e| Error::Seccomp(format!("not a JSON profile: {e}")))?;
            resolve_profile(profile, caps).map(Some)
        }
    }
}

/// An engine profile (docker's format, with conditions on capabilities,
/// architectures and kernels) as the OCI `linux.seccomp` for a container
/// with `caps` on this host; an OCI section as it is.
fn resolve_profile(profile: Value, caps: &[String]) -> Result<Value> {
    if profile.get("syscalls").is_none() && profile.get("defaultAction").is_none() {
        return Ok(profile);
    }
    let target = berth_oci::seccomp::Target {
        capabilities: caps,
        arch: "amd64",
        kernel: berth_oci::seccomp::kernel_version(),
    };
    berth_oci::seccomp::resolve(&profile, &target).map_err(|e| Error::Seccomp(e.to_string()))
}

/// The daemon's default profile resolved for `caps`, kept for the next
/// container with the same capabilities (nearly every container has the
/// default set): resolving walks the whole profile, each create again.
/// Architecture and kernel are the host's, the same for every container.
fn resolved_default(profile: &Arc<Value>, caps: &[String]) -> Result<Value> {
    type Resolved = Option<(Arc<Value>, Vec<String>, Value)>;
    static LAST: Mutex<Resolved> = Mutex::new(None);
    {
        let last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((of, kept_caps, resolved)) = last.as_ref() {
            if Arc::ptr_eq(of, profile) && kept_caps.as_slice() == caps {
                return Ok(resolved.clone());
            }
        }
    }
    let resolved = resolve_profile(Value::clone(profile), caps)?;
    *LAST.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((profile.clone(), caps.to_vec(), resolved.clone()));
    Ok(resolved)
}

/// `linux.resources` (memory, cpu, pids) for docker's limits, as JSON: what
/// an update sends to the shim.
pub fn limit_resources(limits: &pb::Resources) -> Result<Value> {
    resources(limits).map(|r| oci::to_json(&r))
}

/// `linux.resources` (memory, cpu, pids) for docker's limits; what a
/// container is created with and what an update sends to the shim.
pub fn resources(limits: &pb::Resources) -> Result<oci::Resources> {
    if limits.memory < 0 || limits.nano_cpus < 0 || limits.pids_limit < 0 {
        return Err(Error::Invalid {
            what: "resources",
            value: format!("{limits:?}"),
            why: "limits cannot be negative",
        });
    }
    let mut resources = oci::Resources::default();
    if limits.memory > 0 {
        if limits.memory < 6 * 1024 * 1024 {
            return Err(Error::Invalid {
                what: "memory limit",
                value: limits.memory.to_string(),
                why: "the minimum is 6 MiB, as docker's",
            });
        }
        resources.memory = Some(oci::Memory {
            limit: Some(limits.memory),
            ..Default::default()
        });
    }
    if limits.nano_cpus > 0 {
        let period: u64 = 100_000;
        // nano_cpus * period / 1e9, without overflowing on absurd input.
        let quota = limits.nano_cpus / 10_000;
        if quota < 1000 || limits.nano_cpus > 1_000_000_000_000 {
            return Err(Error::Invalid {
                what: "cpus",
                value: format!("{}", limits.nano_cpus as f64 / 1e9),
                why: "use between 0.01 and 1000 CPUs",
            });
        }
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        if limits.nano_cpus > available as i64 * 1_000_000_000 {
            return Err(Error::TooManyCpus {
                asked: limits.nano_cpus as f64 / 1e9,
                available,
            });
        }
        resources.cpu = Some(oci::Cpu {
            quota: Some(quota),
            period: Some(period),
            ..Default::default()
        });
    }
    if limits.pids_limit > 0 {
        resources.pids = Some(oci::Pids {
            limit: limits.pids_limit,
        });
    }
    Ok(resources)
}

/// The highest nofile limit this daemon may give (its own hard limit):
/// a container asking for more than the caller has fails `setrlimit`.
fn nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(limit.rlim_max.min(1_048_576))
}
