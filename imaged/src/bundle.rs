//! Bundles: the `config.json` a container runs with, generated from its
//! image's config and the client's `docker run` settings, with docker's
//! safe defaults (every namespace but user, the usual mounts, masked and
//! read-only paths, docker's default capabilities, podman's default seccomp
//! profile resolved for those capabilities).
//!
//! The image's `/etc/passwd` and `/etc/group` are read from its layers,
//! topmost first, each opened inside its layer directory
//! (`RESOLVE_IN_ROOT`): a hostile image cannot point them at host files.

use std::path::{Path, PathBuf};

use berth_proto::v1 as pb;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unable to find user {0}: no matching entries in the image's passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in the image's group file")]
    NoGroup(String),
    #[error("the image has no command to run: give one (or an entrypoint)")]
    NoCommand,
    #[error("invalid environment entry {0:?}: use KEY=VALUE")]
    Env(String),
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    // docker's words.
    #[error("range of CPUs is from 0.01 to {available}.00, as there are only {available} CPUs available (asked for {asked})")]
    TooManyCpus { asked: f64, available: usize },
    #[error("seccomp profile: {0}")]
    Seccomp(String),
    #[error("capability {0:?} is not one the kernel knows")]
    Capability(String),
}

type Result<T> = std::result::Result<T, Error>;

/// The parts of an OCI image config (`config` object) a container uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub stop_signal: String,
    /// `ExposedPorts`: (port, "tcp" | "udp").
    pub exposed_ports: Vec<(u16, String)>,
}

impl ImageConfig {
    /// From the image config blob (the whole JSON document).
    pub fn from_blob(blob: &Value) -> ImageConfig {
        let config = &blob["config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        ImageConfig {
            user: text(&config["User"]),
            env: strings(&config["Env"]),
            entrypoint: strings(&config["Entrypoint"]),
            cmd: strings(&config["Cmd"]),
            working_dir: text(&config["WorkingDir"]),
            stop_signal: text(&config["StopSignal"]),
            exposed_ports: config["ExposedPorts"]
                .as_object()
                .map(|ports| {
                    ports
                        .keys()
                        .filter_map(|key| {
                            let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
                            Some((port.parse().ok()?, protocol.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A mount with its host source resolved (volumes to their directories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMount {
    pub kind: pb::container_mount::Kind,
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

pub use berth_runtime::capabilities::DOCKER_DEFAULTS as DOCKER_CAPS;

/// Everything a spec is made from.
pub struct Inputs<'a> {
    pub id: &'a str,
    pub settings: &'a pb::ContainerConfig,
    pub image: &'a ImageConfig,
    /// The image's layer directories, topmost first.
    pub layers: &'a [PathBuf],
    pub mounts: &'a [ResolvedMount],
    /// The engines' default seccomp profile (containers-common's format).
    pub default_seccomp: Option<&'a Value>,
    /// Files the daemon writes for the container (hosts, hostname, resolv.conf).
    pub bundle: &'a Path,
    /// The network namespace to join (a pinned one, or another
    /// container's); `None`: a new one, or the host's with `host_network`.
    pub netns: Option<&'a Path>,
    pub host_network: bool,
}

/// The most of an image's passwd or group file the daemon reads.
const MAX_IMAGE_FILE: u64 = 1 << 20;

/// Reads the regular file `relative` from the first of `roots` that has it
/// (the container's mounted rootfs; or layer directories, topmost first,
/// where a `.wh.` entry hides the lower ones).
pub fn read_image_file(layers: &[PathBuf], relative: &str) -> Option<String> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let path = Path::new(relative);
    let parent = path.parent().unwrap_or(Path::new(""));
    let name = path.file_name()?.to_string_lossy().into_owned();
    for layer in layers {
        let Ok(root) = std::fs::File::open(layer) else {
            continue;
        };
        let whiteout = parent.join(format!(".wh.{name}"));
        if berth_runtime::safe_path::open_in_root(root.as_raw_fd(), &whiteout, libc::O_PATH).is_ok()
        {
            return None;
        }
        // Never blocking (a fifo), never a device (it could be the host's
        // disk or /dev/zero), never more than a passwd file could need.
        let Ok(fd) = berth_runtime::safe_path::open_in_root(
            root.as_raw_fd(),
            path,
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        ) else {
            continue;
        };
        let file = std::fs::File::from(fd);
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = String::new();
        file.take(MAX_IMAGE_FILE).read_to_string(&mut text).ok()?;
        return Some(text);
    }
    None
}

/// uid, gid and supplementary gids of `user` (`name`, `uid`, `name:group`,
/// `uid:gid`) in the image, as docker resolves them.
pub fn resolve_user(user: &str, layers: &[PathBuf]) -> Result<(u32, u32, Vec<u32>)> {
    let passwd = read_image_file(layers, "etc/passwd").unwrap_or_default();
    let groups = read_image_file(layers, "etc/group").unwrap_or_default();
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    // name:x:uid:gid:...
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let by_name = entries.iter().find(|f| f[0] == user_part);
    let numeric = user_part.parse::<u32>().ok();
    let (uid, mut gid, name) = match (by_name, numeric) {
        (Some(f), _) => (
            f[2].parse()
                .map_err(|_| Error::NoUser(user_part.to_string()))?,
            f[3].parse().unwrap_or(0),
            Some(f[0].to_string()),
        ),
        (None, Some(uid)) => {
            let entry = entries
                .iter()
                .find(|f| f[2].parse::<u32>().ok() == Some(uid));
            (
                uid,
                entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
                entry.map(|f| f[0].to_string()),
            )
        }
        (None, None) => return Err(Error::NoUser(user_part.to_string())),
    };
    // name:x:gid:member,member
    let group_entries: Vec<Vec<&str>> = groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    if let Some(group) = group_part {
        gid = match group_entries.iter().find(|f| f[0] == group) {
            Some(f) => f[2]
                .parse()
                .map_err(|_| Error::NoGroup(group.to_string()))?,
            None => group
                .parse()
                .map_err(|_| Error::NoGroup(group.to_string()))?,
        };
    }
    let mut additional: Vec<u32> = match &name {
        Some(name) if group_part.is_none() => group_entries
            .iter()
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|m| m == name)))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        _ => Vec::new(),
    };
    additional.sort_unstable();
    additional.dedup();
    Ok((uid, gid, additional))
}

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
    let known = berth_runtime::capabilities::all_names();
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

/// The OCI spec of a container.
pub fn spec(inputs: &Inputs<'_>) -> Result<Value> {
    let settings = inputs.settings;
    let image = inputs.image;
    let mut spec = berth_runtime::defaults::spec(false);

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
    spec["process"] = json!({
        "terminal": settings.tty,
        "user": {"uid": uid, "gid": gid, "additionalGids": additional_gids},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}],
        // docker leaves no_new_privs off unless asked (setuid binaries work).
        "noNewPrivileges": false,
    });
    if let Some(rlimit) = nofile_limit() {
        spec["process"]["rlimits"] =
            json!([{"type": "RLIMIT_NOFILE", "hard": rlimit, "soft": rlimit}]);
    }
    spec["hostname"] = json!(hostname);
    spec["root"] = json!({"path": "rootfs", "readonly": settings.read_only});

    let linux = &mut spec["linux"];
    // Every namespace but user; no cgroup namespace, as docker on v1 hosts.
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match inputs.netns {
        Some(path) => namespaces.push(json!({"type": "network", "path": path})),
        None if inputs.host_network => {}
        None => namespaces.push(json!({"type": "network"})),
    }
    linux["namespaces"] = json!(namespaces);
    linux["cgroupsPath"] = json!(format!("/berth-imaged/{}", inputs.id));
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if settings.privileged {
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
        linux["maskedPaths"] = json!([]);
        linux["readonlyPaths"] = json!([]);
    }
    if let Some(limits) = &settings.resources {
        let object = resources.as_object_mut();
        if let (Some(object), Value::Object(limits)) = (object, limit_resources(limits)?) {
            object.extend(limits);
        }
    }
    linux["resources"] = resources;
    // Seccomp: podman's default profile for these capabilities, unless
    // unconfined (or privileged). Never silently without.
    let profile: Option<Value> = match (settings.privileged, settings.seccomp_profile.as_str()) {
        (true, _) | (_, "unconfined") => None,
        (false, "") => Some(
            inputs
                .default_seccomp
                .cloned()
                .ok_or_else(|| Error::Seccomp("the daemon has no default profile (install golang-github-containers-common-dev or set seccomp_profile in its config), and the container did not ask for unconfined".into()))?,
        ),
        (false, text) => Some(
            serde_json::from_str(text)
                .map_err(|e| Error::Seccomp(format!("not a JSON profile: {e}")))?,
        ),
    };
    if let Some(profile) = profile {
        let target = berth_runtime::seccomp::engine::Target {
            capabilities: &caps,
            arch: "amd64",
            kernel: berth_runtime::seccomp::engine::kernel_version(),
        };
        let resolved =
            if profile.get("syscalls").is_some() || profile.get("defaultAction").is_some() {
                berth_runtime::seccomp::engine::resolve(&profile, &target)
                    .map_err(|e| Error::Seccomp(e.to_string()))?
            } else {
                profile
            };
        linux["seccomp"] = resolved;
    }
    if settings.privileged {
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            for m in mounts.iter_mut() {
                if m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup" {
                    m["options"] = json!(["nosuid", "noexec", "nodev"]);
                }
            }
        }
    }
    // No cgroup namespace: the cgroup mount is a read-only view.
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for m in inputs.mounts {
            let (kind, options) = match m.kind {
                pb::container_mount::Kind::Tmpfs => ("tmpfs", vec!["nosuid", "nodev", "mode=1777"]),
                _ => ("bind", vec!["rbind", "rprivate"]),
            };
            let mut options: Vec<&str> = options;
            if m.read_only {
                options.push("ro");
            }
            if !m.destination.starts_with('/') {
                return Err(Error::Invalid {
                    what: "mount destination",
                    value: m.destination.clone(),
                    why: "it must be an absolute path",
                });
            }
            mounts.push(json!({
                "destination": m.destination,
                "type": kind,
                "source": if kind == "tmpfs" { "tmpfs".into() } else { m.source.display().to_string() },
                "options": options,
            }));
        }
        for (file, destination) in [
            ("hostname", "/etc/hostname"),
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
        ] {
            let source = inputs.bundle.join(file);
            if source.exists() && !inputs.mounts.iter().any(|m| m.destination == destination) {
                mounts.push(json!({
                    "destination": destination, "type": "bind",
                    "source": source.display().to_string(), "options": ["rbind", "rprivate"],
                }));
            }
        }
    }
    spec["annotations"] = json!({"org.berth.container.id": inputs.id});
    Ok(spec)
}

/// `linux.resources` (memory, cpu, pids) for docker's limits; what a
/// container is created with and what an update sends to the shim.
pub fn limit_resources(limits: &pb::Resources) -> Result<Value> {
    if limits.memory < 0 || limits.nano_cpus < 0 || limits.pids_limit < 0 {
        return Err(Error::Invalid {
            what: "resources",
            value: format!("{limits:?}"),
            why: "limits cannot be negative",
        });
    }
    let mut resources = json!({});
    if limits.memory > 0 {
        if limits.memory < 6 * 1024 * 1024 {
            return Err(Error::Invalid {
                what: "memory limit",
                value: limits.memory.to_string(),
                why: "the minimum is 6 MiB, as docker's",
            });
        }
        resources["memory"] = json!({"limit": limits.memory});
    }
    if limits.nano_cpus > 0 {
        let period: i64 = 100_000;
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
        resources["cpu"] = json!({"quota": quota, "period": period});
    }
    if limits.pids_limit > 0 {
        resources["pids"] = json!({"limit": limits.pids_limit});
    }
    Ok(resources)
}

/// How a container's `/etc/hosts` and `/etc/resolv.conf` are made.
pub enum EtcNetwork<'a> {
    /// The host's files, as they are.
    Host,
    /// Loopback only: no resolver.
    Isolated,
    /// On a network: the name servers asked for, else the host's that are
    /// reachable from a container (not its loopback ones).
    Network { dns: &'a [String] },
}

/// Writes `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` for the
/// container into its bundle. They keep the ordinary 0644: the container's
/// users read them as any `/etc/hosts` (the bundle around them is root's
/// alone). `extra_hosts` are `NAME:IP` lines (docker's --add-host).
pub fn write_etc_files(
    bundle: &Path,
    hostname: &str,
    network: EtcNetwork,
    extra_hosts: &[String],
) -> std::io::Result<()> {
    std::fs::write(bundle.join("hostname"), format!("{hostname}\n"))?;
    let resolv = match network {
        EtcNetwork::Host => {
            if let Ok(text) = std::fs::read("/etc/hosts") {
                std::fs::write(bundle.join("hosts"), text)?;
            }
            std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
        }
        EtcNetwork::Isolated => {
            write_hosts(bundle, hostname, None, extra_hosts, &[])?;
            String::new()
        }
        EtcNetwork::Network { dns } => {
            write_hosts(bundle, hostname, None, extra_hosts, &[])?;
            resolv_conf(dns)
        }
    };
    std::fs::write(bundle.join("resolv.conf"), resolv)
}

/// `/etc/hosts` of a container: loopback, its own name (on its address
/// once it has one), `NAME:IP` extras, and its peers on a user network
/// (address, names). Written in place: the file is bind-mounted by inode
/// into a container that may exist already.
pub fn write_hosts(
    bundle: &Path,
    hostname: &str,
    address: Option<&str>,
    extra_hosts: &[String],
    peers: &[(String, Vec<String>)],
) -> std::io::Result<()> {
    use std::io::Write;
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for extra in extra_hosts {
        if let Some((name, ip)) = extra.rsplit_once(':').filter(|(n, _)| !n.contains(':')) {
            text.push_str(&format!("{ip}\t{name}\n"));
        } else if let Some((name, ip)) = extra.split_once(':') {
            text.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    text.push_str(&format!("{}\t{hostname}\n", address.unwrap_or("127.0.1.1")));
    for (ip, names) in peers {
        text.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(bundle.join("hosts"))?;
    file.write_all(text.as_bytes())
}

/// `nameserver` lines: `dns`, else the host's that a container can reach
/// (a loopback resolver of the host is not the container's).
fn resolv_conf(dns: &[String]) -> String {
    let servers: Vec<String> = if dns.is_empty() {
        std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver"))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.starts_with("127.") && s != "::1")
            .collect()
    } else {
        dns.to_vec()
    };
    servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, &str)]) -> tempdir::TempDir {
        let dir = tempdir::TempDir::new();
        for (path, text) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        dir
    }

    mod tempdir {
        pub struct TempDir(std::path::PathBuf);
        impl TempDir {
            pub fn new() -> TempDir {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let dir = std::env::temp_dir()
                    .join(format!("berth-bundle-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                TempDir(dir)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\napp:x:1000:\naudio:x:29:app\nvideo:x:44:app,www\n";

    #[test]
    fn users_resolve_through_the_image_files() {
        let base = layer(&[("etc/passwd", PASSWD), ("etc/group", GROUP)]);
        let layers = vec![base.path().to_path_buf()];
        assert_eq!(resolve_user("", &layers).unwrap(), (0, 0, vec![]));
        assert_eq!(
            resolve_user("app", &layers).unwrap(),
            (1000, 1000, vec![29, 44])
        );
        assert_eq!(
            resolve_user("www:video", &layers).unwrap(),
            (33, 44, vec![])
        );
        assert_eq!(
            resolve_user("1000", &layers).unwrap(),
            (1000, 1000, vec![29, 44])
        );
        assert_eq!(resolve_user("4242", &layers).unwrap(), (4242, 0, vec![]));
        assert_eq!(resolve_user("4242:7", &layers).unwrap(), (4242, 7, vec![]));
        assert!(matches!(
            resolve_user("nobody", &layers),
            Err(Error::NoUser(_))
        ));
        assert!(matches!(
            resolve_user("app:nogroup", &layers),
            Err(Error::NoGroup(_))
        ));
    }

    #[test]
    fn upper_layers_win_and_whiteouts_hide() {
        let base = layer(&[("etc/passwd", PASSWD)]);
        let top = layer(&[(
            "etc/passwd",
            "root:x:0:0::/:/bin/sh\nnew:x:5:6::/:/bin/sh\n",
        )]);
        let layers = vec![top.path().to_path_buf(), base.path().to_path_buf()];
        assert_eq!(resolve_user("new", &layers).unwrap(), (5, 6, vec![]));
        assert!(resolve_user("app", &layers).is_err());
        let gone = layer(&[("etc/.wh.passwd", "")]);
        let layers = vec![gone.path().to_path_buf(), base.path().to_path_buf()];
        assert!(read_image_file(&layers, "etc/passwd").is_none());
    }

    #[test]
    fn a_symlinked_passwd_cannot_reach_the_host() {
        let evil = layer(&[]);
        std::fs::create_dir_all(evil.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", evil.path().join("etc/passwd")).unwrap();
        // Resolved inside the layer: /etc/shadow of the layer, which is absent.
        assert!(read_image_file(&[evil.path().to_path_buf()], "etc/passwd").is_none());
    }

    fn settings() -> pb::ContainerConfig {
        pb::ContainerConfig {
            image: "busybox".into(),
            seccomp_profile: "unconfined".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_spec_follows_the_image_and_the_overrides() {
        let base = layer(&[("etc/passwd", PASSWD), ("etc/group", GROUP)]);
        let layers = vec![base.path().to_path_buf()];
        let image = ImageConfig {
            user: "app".into(),
            env: vec!["PATH=/image/bin".into(), "A=1".into()],
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            working_dir: "/work".into(),
            stop_signal: String::new(),
            exposed_ports: Vec::new(),
        };
        let mut s = settings();
        s.env = vec!["A=2".into(), "B=3".into()];
        s.resources = Some(pb::Resources {
            memory: 64 << 20,
            nano_cpus: 1_500_000_000,
            pids_limit: 100,
        });
        s.cap_drop = vec!["net_raw".into()];
        s.cap_add = vec!["SYS_PTRACE".into()];
        let inputs = Inputs {
            id: "0123456789abcdef",
            settings: &s,
            image: &image,
            layers: &layers,
            mounts: &[],
            default_seccomp: None,
            bundle: base.path(),
            netns: None,
            host_network: false,
        };
        let generated = spec(&inputs).unwrap();
        let p = &generated["process"];
        assert_eq!(p["args"], json!(["/entry", "default"]));
        assert_eq!(
            p["user"],
            json!({"uid": 1000, "gid": 1000, "additionalGids": [29, 44]})
        );
        assert_eq!(p["cwd"], "/work");
        assert_eq!(
            p["env"],
            json!(["PATH=/image/bin", "HOSTNAME=0123456789ab", "A=2", "B=3"])
        );
        let caps: Vec<&str> = p["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(caps.contains(&"CAP_SYS_PTRACE") && !caps.contains(&"CAP_NET_RAW"));
        assert_eq!(generated["hostname"], "0123456789ab");
        let r = &generated["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["cpu"], json!({"quota": 150000, "period": 100000}));
        assert_eq!(r["pids"]["limit"], 100);
        assert!(generated["linux"].get("seccomp").is_none());

        // Arguments replace cmd; an entrypoint override drops the image's cmd.
        let mut s = settings();
        s.args = vec!["echo".into(), "hi".into()];
        let spec2 = spec(&Inputs {
            settings: &s,
            ..inputs_like(&inputs)
        })
        .unwrap();
        assert_eq!(spec2["process"]["args"], json!(["/entry", "echo", "hi"]));
        let mut s = settings();
        s.entrypoint_set = true;
        s.entrypoint = vec!["/bin/sh".into()];
        let spec3 = spec(&Inputs {
            settings: &s,
            ..inputs_like(&inputs)
        })
        .unwrap();
        assert_eq!(spec3["process"]["args"], json!(["/bin/sh"]));
    }

    fn inputs_like<'a>(i: &Inputs<'a>) -> Inputs<'a> {
        Inputs {
            id: i.id,
            settings: i.settings,
            image: i.image,
            layers: i.layers,
            mounts: i.mounts,
            default_seccomp: i.default_seccomp,
            bundle: i.bundle,
            netns: i.netns,
            host_network: i.host_network,
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let base = layer(&[("etc/passwd", PASSWD)]);
        let layers = vec![base.path().to_path_buf()];
        let image = ImageConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        };
        let check = |s: pb::ContainerConfig| {
            spec(&Inputs {
                id: "x",
                settings: &s,
                image: &image,
                layers: &layers,
                mounts: &[],
                default_seccomp: None,
                bundle: base.path(),
                netns: None,
                host_network: false,
            })
        };
        let mut s = settings();
        s.env = vec!["NOEQUALS".into()];
        assert!(matches!(check(s), Err(Error::Env(_))));
        let mut s = settings();
        s.cap_add = vec!["CAP_MAKE_COFFEE".into()];
        assert!(matches!(check(s), Err(Error::Capability(_))));
        let mut s = settings();
        s.resources = Some(pb::Resources {
            memory: 1024,
            ..Default::default()
        });
        assert!(matches!(check(s), Err(Error::Invalid { .. })));
        // Seccomp by default needs a profile: never silently unconfined.
        let mut s = settings();
        s.seccomp_profile = String::new();
        assert!(matches!(check(s), Err(Error::Seccomp(_))));
        let empty = ImageConfig::default();
        let s = settings();
        assert!(matches!(
            spec(&Inputs {
                id: "x",
                settings: &s,
                image: &empty,
                layers: &layers,
                mounts: &[],
                default_seccomp: None,
                bundle: base.path(),
                netns: None,
                host_network: false,
            }),
            Err(Error::NoCommand)
        ));
    }
}
