//! Creating a container: its snapshot, rootfs mount, volumes, bundle and
//! record, undone as a whole on any failure.

use super::rootfs::volatile;
use super::*;

impl Containers {
    /// Creates the container: snapshot, rootfs mount, volumes, bundle,
    /// record. On any failure everything made so far is undone.
    pub fn create(
        &self,
        name: &str,
        mut settings: pb::ContainerConfig,
        labels: BTreeMap<String, String>,
    ) -> Result<ContainerRecord> {
        let mode = self.networks.mode(&settings.network)?;
        check_ports(&settings.ports)?;
        if !settings.ip.is_empty() {
            let networks::Mode::Network(network) = &mode else {
                return Err(Error::Network(networks::Error::Address(format!(
                    "{}: a chosen address needs a user-defined network",
                    settings.ip
                ))));
            };
            self.networks.check_address(network, &settings.ip)?;
        }
        let publishes = !settings.ports.is_empty() || settings.publish_all;
        if publishes && !matches!(mode, networks::Mode::Network(_)) {
            return Err(Error::InvalidPort(format!(
                "ports can only be published on a network, not with --network {}",
                settings.network
            )));
        }
        // Another container's namespace: its pin, or its init's while it runs.
        let shared_netns = match &mode {
            networks::Mode::Container(other) => {
                let other = self.resolve(other)?;
                if other.status() != pb::container::Status::Running {
                    return Err(Error::NetworkOwnerNotRunning(other.name));
                }
                Some(match self.networks.attachment(&other.id) {
                    Some(a) => a.netns,
                    None => PathBuf::from(format!("/proc/{}/ns/net", other.state.pid)),
                })
            }
            _ => None,
        };
        let id = random_hex(32);
        let mut steps = crate::steps::Timeline::new("create", &id);
        let name = if name.is_empty() {
            format!("berth_{}", &random_hex(4))
        } else {
            name.to_string()
        };
        if !valid_name(&name) {
            return Err(Error::InvalidName(name));
        }
        if let Some(id) = self.db.get::<String>(Table::ContainerNames, &name)? {
            return Err(Error::NameInUse { name, id });
        }
        let image = self.images.get(&settings.image).map_err(|e| match e {
            images::Error::NotFound(_) => Error::ImageNotFound(settings.image.clone()),
            other => Error::Images(other),
        })?;
        // Too many layers for one overlay mount: said before anything is made.
        image.check_mountable()?;
        let config_blob = Digest::parse(image.config.digest().as_ref())
            .map_err(|e| e.to_string())
            .and_then(|d| self.images.content.read_blob(&d).map_err(|e| e.to_string()))
            .and_then(|b| {
                serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
            })
            .map_err(|detail| Error::ImageConfig {
                image: settings.image.clone(),
                detail,
            })?;
        let image_config = RunDefaults::from_blob(&config_blob);
        if settings.publish_all {
            // -P: every port the image exposes, on a host port chosen at start.
            for (port, protocol) in &image_config.exposed_ports {
                let taken = settings
                    .ports
                    .iter()
                    .any(|p| p.container_port == u32::from(*port) && p.protocol == *protocol);
                if !taken {
                    settings.ports.push(pb::PortMapping {
                        host_ip: String::new(),
                        host_port: 0,
                        container_port: u32::from(*port),
                        protocol: protocol.clone(),
                    });
                }
            }
        }
        for from in settings.volumes_from.clone() {
            let shared = self.shared_mounts(&from)?;
            for m in shared {
                if !settings
                    .mounts
                    .iter()
                    .any(|o| o.destination == m.destination)
                {
                    settings.mounts.push(m);
                }
            }
        }
        steps.step("checks");
        let bundles = if settings.auto_remove || settings.transient {
            &self.ending_bundles
        } else {
            &self.bundles
        };
        let bundle = bundles.join(&id);
        let mut undo = Undo {
            containers: self,
            snapshot: None,
            bundle: None,
            mounted: None,
            anonymous: Vec::new(),
        };
        // Bundles hold the spec the container runs with: root's alone.
        crate::private::create_dir(&bundle).map_err(io("create", &bundle))?;
        std::fs::create_dir_all(bundle.join("rootfs")).map_err(io("create", &bundle))?;
        undo.bundle = Some(bundle.clone());
        let snapshot_key = format!("container/{id}");
        let chain = image.chain_id().map(str::to_string);
        // Made durable by the record's commit below (a `run --rm`
        // container's, unsynced too, by the sync during its start).
        let mut mounts = self.images.snapshots.prepare_unsynced(
            &snapshot_key,
            chain.as_deref(),
            BTreeMap::from([("berth.container".to_string(), id.clone())]),
        )?;
        undo.snapshot = Some(snapshot_key.clone());
        steps.step("snapshot");
        if settings.auto_remove || settings.transient {
            volatile(&mut mounts);
        }
        let rootfs = bundle.join("rootfs");
        mount_rootfs(&id, &mounts, &rootfs)?;
        undo.mounted = Some(rootfs.clone());
        steps.step("mount");

        let mut resolved = Vec::new();
        let mut volume_names = Vec::new();
        // Held until the record names the volumes (see `volumes::Claim`).
        let mut claims = Vec::new();
        for m in &settings.mounts {
            use pb::container_mount::Kind;
            let kind = Kind::try_from(m.kind).unwrap_or(Kind::Bind);
            if !m.destination.starts_with('/') || m.destination.split('/').any(|c| c == "..") {
                return Err(Error::InvalidMount(format!(
                    "destination {:?} must be an absolute path without ..",
                    m.destination
                )));
            }
            if covers_procfs(&m.destination) {
                return Err(Error::InvalidMount(format!(
                    "destination {:?} is inside the container's /proc, which is the kernel's: mount it elsewhere (e.g. /host{})",
                    m.destination, m.destination
                )));
            }
            let source = match kind {
                Kind::Volume => {
                    let volume = if m.source.is_empty() {
                        let volume = self.volumes.create_anonymous(&id)?;
                        claims.push(self.volumes.claim(&volume.name));
                        undo.anonymous.push(volume.name.clone());
                        volume
                    } else {
                        claims.push(self.volumes.claim(&m.source));
                        self.volumes.get_or_create(&m.source)?
                    };
                    self.volumes.seed(
                        &volume.name,
                        volumes::open_seed_source(&rootfs, &m.destination),
                    )?;
                    volume_names.push(volume.name.clone());
                    self.volumes.path(&volume.name)
                }
                Kind::Bind | Kind::Unspecified => {
                    let source = PathBuf::from(&m.source);
                    if !source.is_absolute() {
                        return Err(Error::InvalidMount(format!(
                            "bind source {:?} must be an absolute path",
                            m.source
                        )));
                    }
                    if !source.exists() {
                        return Err(Error::BindSource(source));
                    }
                    source
                }
                Kind::Tmpfs => PathBuf::from("tmpfs"),
            };
            resolved.push(ResolvedMount {
                kind,
                source,
                destination: m.destination.clone(),
                read_only: m.read_only,
            });
        }
        steps.step("volumes");
        // Users and groups are read through the mounted rootfs: the overlay
        // has already applied whiteouts, opaque directories and links.
        let layers = vec![rootfs.clone()];
        let hostname = if settings.hostname.is_empty() {
            id.chars().take(12).collect()
        } else {
            settings.hostname.clone()
        };
        let etc = match &mode {
            networks::Mode::Host => bundle::EtcNetwork::Host,
            networks::Mode::None => bundle::EtcNetwork::Isolated,
            networks::Mode::Container(_) | networks::Mode::Network(_) => {
                bundle::EtcNetwork::Network { dns: &settings.dns }
            }
        };
        bundle::write_etc_files(&bundle, &hostname, etc, &settings.extra_hosts)
            .map_err(io("write the hosts files of", &bundle))?;
        let pinned =
            matches!(mode, networks::Mode::Network(_)).then(|| self.networks.netns_path(&id));
        let spec = bundle::spec(&bundle::Inputs {
            id: &id,
            settings: &settings,
            image: &image_config,
            layers: &layers,
            mounts: &resolved,
            default_seccomp: self.default_seccomp.as_ref(),
            bundle: &bundle,
            netns: pinned.as_deref().or(shared_netns.as_deref()),
            host_network: mode == networks::Mode::Host,
        })?;
        let spec_bytes = serde_json::to_vec_pretty(&spec).unwrap_or_default();
        // A `run --rm` container never starts again after a crash
        // (`Tasks::recover` removes it unless it still runs): its spec need
        // not reach the disk first.
        let durable = !settings.transient;
        write_private(&bundle.join("config.json"), &spec_bytes, durable)?;
        steps.step("bundle");
        let record = ContainerRecord {
            id: id.clone(),
            name: name.clone(),
            config: settings.encode_to_vec(),
            image_digest: image.manifest.digest().to_string(),
            snapshot_key,
            bundle,
            labels,
            created: crate::clock::now_secs(),
            state: RunState {
                status: pb::container::Status::Created as i32,
                ..Default::default()
            },
            volumes: volume_names,
            stop_signal: stop_signal(&image_config),
            command: command(&spec),
        };
        // A `run --rm` container's record is committed unsynced: it reaches
        // the disk while the shim creates the task, before the start is
        // answered (`Tasks::start_claimed`), so a container its client saw
        // run is found by the start-up. A crash before leaves a bundle and
        // a snapshot no record names, which the start-up removes (after
        // ending a task the shim may have begun).
        self.db.write_synced_if(!settings.transient, |txn| {
            // The name is checked again inside the transaction: two creates
            // racing for one name cannot both win.
            name_free(txn, &name)?;
            insert(txn, &record)?;
            Ok::<_, Error>(())
        })?;
        steps.step("record");
        undo.disarm();
        Ok(record)
    }
}

/// Ports are 16-bit; a container port is never 0; tcp or udp.
fn check_ports(ports: &[pb::PortMapping]) -> Result<()> {
    for p in ports {
        if p.host_port > 65535 {
            return Err(Error::InvalidPort(format!(
                "invalid hostPort: {}",
                p.host_port
            )));
        }
        if p.container_port == 0 || p.container_port > 65535 {
            return Err(Error::InvalidPort(format!(
                "invalid containerPort: {}",
                p.container_port
            )));
        }
        if !matches!(p.protocol.as_str(), "" | "tcp" | "udp") {
            return Err(Error::InvalidPort(format!("invalid proto: {}", p.protocol)));
        }
        if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(Error::InvalidPort(format!(
                "invalid IP address: {}",
                p.host_ip
            )));
        }
    }
    Ok(())
}

/// Whether a mount on `destination` would cover (part of) the container's
/// procfs, which the runtime refuses once the container is half made. The
/// files lxcfs-style tools replace are allowed, as runc allows them.
fn covers_procfs(destination: &str) -> bool {
    const REPLACEABLE: &[&str] = &[
        "/proc/cpuinfo",
        "/proc/diskstats",
        "/proc/meminfo",
        "/proc/stat",
        "/proc/swaps",
        "/proc/uptime",
        "/proc/loadavg",
        "/proc/slabinfo",
        "/proc/net/dev",
        "/proc/sys/kernel/ns_last_pid",
    ];
    let path = destination.trim_end_matches('/');
    let path = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .fold(String::new(), |acc, c| acc + "/" + c);
    (path == "/proc" || path.starts_with("/proc/")) && !REPLACEABLE.contains(&path.as_str())
}

/// Writes a file only root can read, through a temporary name and a
/// rename: a reader never sees half of it, nor (when `durable`, synced
/// before the rename) does a crash.
pub fn write_private(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    file.write_all(bytes)
        .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
        .map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))
}

/// Undoes a half-made create.
struct Undo<'a> {
    containers: &'a Containers,
    snapshot: Option<String>,
    bundle: Option<PathBuf>,
    mounted: Option<PathBuf>,
    /// Anonymous volumes made for this container.
    anonymous: Vec<String>,
}

impl Undo<'_> {
    fn disarm(&mut self) {
        self.snapshot = None;
        self.bundle = None;
        self.mounted = None;
        self.anonymous.clear();
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if let Some(rootfs) = self.mounted.take() {
            unmount(&rootfs);
        }
        if let Some(key) = self.snapshot.take() {
            let _ = self.containers.images.snapshots.remove(&key);
        }
        if let Some(bundle) = self.bundle.take() {
            let _ = std::fs::remove_dir_all(bundle);
        }
        for name in self.anonymous.drain(..) {
            let _ = self.containers.volumes.remove(&name, &[]);
        }
    }
}

/// The signal that stops the container: the image's, else SIGTERM.
pub(crate) fn stop_signal(image_config: &RunDefaults) -> String {
    if image_config.stop_signal.is_empty() {
        "SIGTERM".into()
    } else {
        image_config.stop_signal.clone()
    }
}

/// The process a spec runs, as the record keeps it (listings read no bundle).
pub(crate) fn command(spec: &serde_json::Value) -> Vec<String> {
    spec["process"]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_over_procfs_are_refused_but_lxcfs_files_are_not() {
        for refused in ["/proc", "/proc/", "//proc", "/./proc/sys", "/proc/1/root"] {
            assert!(covers_procfs(refused), "{refused}");
        }
        for allowed in ["/host/proc", "/procs", "/proc/meminfo", "/sys", "/"] {
            assert!(!covers_procfs(allowed), "{allowed}");
        }
    }

    #[test]
    fn private_files_are_written_whole_and_for_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("berth-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        write_private(&path, b"{}", true).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(!path.with_extension("tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
