//! Containers: a record in the metadata store, an active snapshot on the
//! image's chain, and a bundle directory (`<root>/bundles/<id>`: the
//! generated `config.json`, `rootfs/` with the snapshot mounted on it, the
//! hosts files, the log and the stdio fifos). Nothing here runs anything;
//! [`crate::tasks`] does, and records what happened in [`RunState`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_proto::v1 as pb;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::bundle::{self, ImageConfig, ResolvedMount};
use crate::content::Digest;
use crate::images::{self, Images};
use crate::metadata::{self, Db, Table};
use crate::networks::{self, Networks};
use crate::snapshots;
use crate::volumes::{self, random_hex, valid_name, Volumes};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("{0:?} matches more than one container: give more of the id")]
    Ambiguous(String),
    #[error(
        "the name {name:?} is already in use by container {id}: remove it or choose another name"
    )]
    NameInUse { name: String, id: String },
    #[error("invalid container name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("image {0} not found: pull it first (berthctl pull {0})")]
    ImageNotFound(String),
    #[error("image {image}: unreadable config: {detail}")]
    ImageConfig { image: String, detail: String },
    #[error("bind mount source {0} does not exist on the host")]
    BindSource(PathBuf),
    #[error("invalid mount: {0}")]
    InvalidMount(String),
    #[error("cannot mount the rootfs of {id} on {target}: {detail}")]
    Mount {
        id: String,
        target: PathBuf,
        detail: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bundle(#[from] bundle::Error),
    #[error(transparent)]
    Volume(#[from] volumes::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshots::Error),
    #[error(transparent)]
    Images(#[from] images::Error),
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    #[error(transparent)]
    Network(#[from] networks::Error),
    #[error("invalid port mapping: {0}")]
    InvalidPort(String),
    #[error("cannot share the network of container {0}: it is not running")]
    NetworkOwnerNotRunning(String),
}

type Result<T> = std::result::Result<T, Error>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What the daemon knows of a container's last (or current) run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// `pb::container::Status` as a number.
    pub status: i32,
    pub pid: u32,
    pub exit_status: u32,
    pub started_at: u64,
    pub finished_at: u64,
    pub restart_count: u32,
    pub oom_killed: bool,
    /// Stopped by Stop/Kill from a client: restart policies leave it alone.
    pub stopped_by_user: bool,
}

/// The part of a [`ContainerRecord`] a lookup by name reads.
#[derive(Deserialize)]
struct Named {
    id: String,
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// `pb::ContainerConfig`, protobuf-encoded.
    pub config: Vec<u8>,
    pub image_digest: String,
    pub snapshot_key: String,
    pub bundle: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub created: u64,
    pub state: RunState,
    /// Named volumes it mounts.
    pub volumes: Vec<String>,
    /// The stop signal of the image (`SIGTERM` when it names none).
    #[serde(default)]
    pub stop_signal: String,
    /// The process's arguments as the spec has them: a listing shows them
    /// without reading every bundle's config.json.
    #[serde(default)]
    pub command: Vec<String>,
}

impl ContainerRecord {
    pub fn settings(&self) -> pb::ContainerConfig {
        pb::ContainerConfig::decode(self.config.as_slice()).unwrap_or_default()
    }

    pub fn status(&self) -> pb::container::Status {
        pb::container::Status::try_from(self.state.status).unwrap_or(pb::container::Status::Created)
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }
}

/// The container service.
#[derive(Debug, Clone)]
pub struct Containers {
    pub db: Arc<Db>,
    pub images: Arc<Images>,
    pub volumes: Volumes,
    pub bundles: PathBuf,
    /// The engines' default seccomp profile, read at start-up.
    pub default_seccomp: Option<Arc<serde_json::Value>>,
    pub networks: Arc<Networks>,
}

impl Containers {
    /// Finds a container by id, name or unique id prefix.
    pub fn resolve(&self, key: &str) -> Result<ContainerRecord> {
        if let Some(record) = self.db.get::<ContainerRecord>(Table::Containers, key)? {
            return Ok(record);
        }
        // A name, else a unique prefix of an id: each read from an index
        // (the names table, the ids' key order), never from every record.
        let found = match self.db.get::<String>(Table::ContainerNames, key)? {
            Some(id) => id,
            None if key.is_empty() => return Err(Error::NotFound(key.to_string())),
            None => {
                let mut prefixed = self
                    .db
                    .keys_with_prefix(Table::Containers, key, 2)?
                    .into_iter();
                match (prefixed.next(), prefixed.next()) {
                    (Some(one), None) => one,
                    (Some(_), Some(_)) => return Err(Error::Ambiguous(key.to_string())),
                    _ => return Err(Error::NotFound(key.to_string())),
                }
            }
        };
        self.db
            .get::<ContainerRecord>(Table::Containers, &found)?
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    /// Brings the store to what the records say, at the daemon's start:
    /// the names index is built again ([`index_names`]) and the bundles of
    /// containers whose records are gone (removed just before a crash,
    /// their directories not yet) are removed.
    pub fn reconcile(&self) -> Result<()> {
        let ids = index_names(&self.db)?;
        let Ok(entries) = std::fs::read_dir(&self.bundles) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let known = entry
                .file_name()
                .to_str()
                .is_some_and(|id| ids.contains(id));
            if !known {
                let path = entry.path();
                // Its rootfs was unmounted before its record went; a mount
                // left by a crash earlier still must not be walked into.
                unmount(&path.join("rootfs"));
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    eprintln!("berth-imaged: cannot remove {}: {e}", path.display());
                }
            }
        }
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<ContainerRecord>> {
        let mut all: Vec<ContainerRecord> = self
            .db
            .list::<ContainerRecord>(Table::Containers)?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        all.sort_by_key(|c| std::cmp::Reverse(c.created));
        Ok(all)
    }

    /// Changes a stored record in one transaction; returns the new record.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord> {
        self.db.write(|txn| {
            let mut record: ContainerRecord = txn
                .get(Table::Containers, id)?
                .ok_or_else(|| Error::NotFound(id.to_string()))?;
            change(&mut record);
            txn.put(Table::Containers, id, &record)?;
            Ok(record)
        })
    }

    /// Gives the container `key` the name `name` (docker rename): checked
    /// and changed in one transaction, so two renames cannot take one name.
    pub fn rename(&self, key: &str, name: &str) -> Result<ContainerRecord> {
        let id = self.resolve(key)?.id;
        let name = name.trim_start_matches('/').to_string();
        if !valid_name(&name) {
            return Err(Error::InvalidName(name));
        }
        self.db.write(|txn| {
            name_free(txn, &name)?;
            let mut record: ContainerRecord = txn
                .get(Table::Containers, &id)?
                .ok_or_else(|| Error::NotFound(id.clone()))?;
            txn.delete(Table::ContainerNames, &record.name)?;
            record.name = name.clone();
            insert(txn, &record)?;
            Ok(record)
        })
    }

    /// `--volumes-from NAME[:ro|:rw]`: the volumes (named or anonymous) and
    /// binds of the container NAME, at its destinations; `ro` makes them
    /// all read-only, `rw` all writable, neither keeps each one's mode.
    /// tmpfs mounts are the container's own and are not shared.
    fn shared_mounts(&self, spec: &str) -> Result<Vec<pb::ContainerMount>> {
        use pb::container_mount::Kind;
        let (name, mode) = match spec.rsplit_once(':') {
            Some((n, m @ ("ro" | "rw"))) => (n, Some(m)),
            _ => (spec, None),
        };
        let other = self.resolve(name)?;
        // `volumes` names every volume mount, in the order of `mounts`.
        let mut volumes = other.volumes.iter();
        let mut out = Vec::new();
        for m in other.settings().mounts {
            let kind = Kind::try_from(m.kind).unwrap_or(Kind::Bind);
            let source = match kind {
                Kind::Volume => match volumes.next() {
                    Some(v) => v.clone(),
                    None => continue,
                },
                Kind::Bind | Kind::Unspecified => m.source.clone(),
                Kind::Tmpfs => continue,
            };
            out.push(pb::ContainerMount {
                kind: if kind == Kind::Volume {
                    kind
                } else {
                    Kind::Bind
                } as i32,
                source,
                destination: m.destination.clone(),
                read_only: mode.map_or(m.read_only, |mode| mode == "ro"),
            });
        }
        Ok(out)
    }

    /// Containers that mount the volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|c| c.volumes.iter().any(|v| v == name))
            .map(|c| c.id)
            .collect())
    }

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
        let image_config = ImageConfig::from_blob(&config_blob);
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
        let bundle = self.bundles.join(&id);
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
        let mut mounts = self.images.snapshots.prepare(
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
            default_seccomp: self.default_seccomp.as_deref(),
            bundle: &bundle,
            netns: pinned.as_deref().or(shared_netns.as_deref()),
            host_network: mode == networks::Mode::Host,
        })?;
        let spec_bytes = serde_json::to_vec_pretty(&spec).unwrap_or_default();
        write_private(&bundle.join("config.json"), &spec_bytes)?;
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
        self.db.write(|txn| {
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

    /// Makes sure the rootfs is mounted (it is not after a reboot).
    pub fn ensure_rootfs(&self, record: &ContainerRecord) -> Result<()> {
        let rootfs = record.rootfs();
        if is_mount_point(&rootfs) {
            return Ok(());
        }
        let mounts = self.images.snapshots.mounts(&record.snapshot_key)?;
        mount_rootfs(&record.id, &mounts, &rootfs)
    }

    /// Removes the record, the rootfs mount, the snapshot and the bundle,
    /// and with `volumes` the container's anonymous volumes. The caller has
    /// made sure no task runs.
    pub fn delete(&self, id: &str, volumes: bool) -> Result<()> {
        let record = self.resolve(id)?;
        let mut steps = crate::steps::Timeline::new("remove", &record.id);
        let rootfs = record.rootfs();
        unmount(&rootfs);
        steps.step("unmount");
        // The snapshot's record and the container's go in one commit; the
        // snapshot's directory after it (a crash between leaves only a
        // directory, which the snapshots' cleanup removes at start).
        let snapshots = &self.images.snapshots;
        let snapshot = self.db.write(|txn| {
            let snapshot = match snapshots.remove_record(txn, &record.snapshot_key) {
                Ok(r) => Some(r),
                Err(snapshots::Error::NotFound(_)) => None,
                Err(e) => return Err(Error::from(e)),
            };
            txn.delete(Table::Containers, &record.id)?;
            // Only its own entry: a name another container took since
            // (impossible while this one holds it) is left alone.
            if txn
                .get::<String>(Table::ContainerNames, &record.name)?
                .as_deref()
                == Some(&*record.id)
            {
                txn.delete(Table::ContainerNames, &record.name)?;
            }
            Ok(snapshot)
        })?;
        steps.step("records");
        // The directories of a container removed at its exit (`run --rm`)
        // go after the reply: no record names them any more, so nothing can
        // find them, and a crash before they are gone leaves directories the
        // start-up removes (the snapshots' cleanup, [`Containers::reconcile`]).
        // Any other removal returns when they are gone.
        let settings = record.settings();
        let deferred = settings.transient || settings.auto_remove;
        let bundle = record.bundle.clone();
        let snapshots = snapshots.clone();
        let key = record.snapshot_key.clone();
        let remove = move || {
            if let Err(e) = std::fs::remove_dir_all(&bundle) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("berth-imaged: cannot remove {}: {e}", bundle.display());
                }
            }
            if let Some(snapshot) = snapshot {
                if let Err(e) = snapshots.remove_dir(&key, &snapshot) {
                    eprintln!("berth-imaged: {e}");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if deferred => drop(runtime.spawn_blocking(remove)),
            _ => remove(),
        }
        steps.step("handed off");
        if volumes {
            for name in &record.volumes {
                if self.volumes.is_anonymous_of(name, &record.id)? {
                    let users = self.volume_users(name)?;
                    self.volumes.remove(name, &users)?;
                }
            }
        }
        Ok(())
    }
}

/// Refuses a name another container has, inside the transaction that
/// takes it.
fn name_free(txn: &crate::metadata::Txn<'_>, name: &str) -> Result<()> {
    match txn.get::<String>(Table::ContainerNames, name)? {
        Some(id) => Err(Error::NameInUse {
            name: name.to_string(),
            id,
        }),
        None => Ok(()),
    }
}

/// Builds the names index again from the records, in one transaction: at
/// the daemon's start, so that a store written before the index existed
/// reads the same. (Records and their entries are written in the same
/// transactions, so a killed daemon cannot leave them apart.) The ids of
/// the containers it indexed.
pub fn index_names(db: &crate::metadata::Db) -> Result<std::collections::HashSet<String>> {
    let all = db.list::<Named>(Table::Containers)?;
    db.write(|txn| {
        txn.clear(Table::ContainerNames)?;
        for (_, named) in &all {
            txn.put(Table::ContainerNames, &named.name, &named.id)?;
        }
        Ok::<_, Error>(())
    })?;
    Ok(all.into_iter().map(|(id, _)| id).collect())
}

/// Stores `record` and its name's index entry, in the caller's transaction.
pub(crate) fn insert(txn: &mut crate::metadata::Txn<'_>, record: &ContainerRecord) -> Result<()> {
    txn.put(Table::Containers, &record.id, record)?;
    txn.put(Table::ContainerNames, &record.name, &record.id)?;
    Ok(())
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
/// rename: a reader (a start, a crash) never sees half of it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
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
        .and_then(|()| file.sync_all())
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

/// The signal that stops the container: the image's, else SIGTERM.
pub(crate) fn stop_signal(image_config: &ImageConfig) -> String {
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

/// A container removed when it exits never needs its writes on disk:
/// `volatile` spares the overlay the sync of the whole upper filesystem it
/// otherwise makes at unmount (on a busy disk, the longest step of a
/// `run --rm`), as podman does for its `--rm` containers. After a crash the
/// kernel refuses to mount such an upper directory again; nothing does.
fn volatile(mounts: &mut [snapshots::Mount]) {
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
    fn mounts_over_procfs_are_refused_but_lxcfs_files_are_not() {
        for refused in ["/proc", "/proc/", "//proc", "/./proc/sys", "/proc/1/root"] {
            assert!(covers_procfs(refused), "{refused}");
        }
        for allowed in ["/host/proc", "/procs", "/proc/meminfo", "/sys", "/"] {
            assert!(!covers_procfs(allowed), "{allowed}");
        }
    }

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.to_string(),
            name: name.to_string(),
            config: pb::ContainerConfig::default().encode_to_vec(),
            image_digest: String::new(),
            snapshot_key: format!("container/{id}"),
            bundle: PathBuf::from("/nonexistent"),
            labels: BTreeMap::new(),
            created: 0,
            state: RunState::default(),
            volumes: Vec::new(),
            stop_signal: String::new(),
            command: Vec::new(),
        }
    }

    #[test]
    fn a_store_written_before_the_names_index_finds_its_names_after_a_start() {
        let dir = std::env::temp_dir().join(format!("berth-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = crate::metadata::Db::open(&dir.join("meta.redb")).unwrap();
        // As an older daemon wrote them: records, and no index.
        db.write(|txn| {
            txn.put(Table::Containers, "aa11", &record("aa11", "web"))?;
            txn.put(Table::Containers, "aa22", &record("aa22", "db"))?;
            txn.put(Table::Containers, "bb33", &record("bb33", "cache"))?;
            // A stale entry the rebuild must drop.
            txn.put(Table::ContainerNames, "gone", &"cc44".to_string())
        })
        .unwrap();
        index_names(&db).unwrap();
        let id_of = |name: &str| db.get::<String>(Table::ContainerNames, name).unwrap();
        assert_eq!(id_of("web").as_deref(), Some("aa11"));
        assert_eq!(id_of("cache").as_deref(), Some("bb33"));
        assert_eq!(id_of("gone"), None);
        db.write(|txn| {
            assert!(
                matches!(name_free(txn, "db"), Err(Error::NameInUse { id, .. }) if id == "aa22")
            );
            assert!(name_free(txn, "fresh").is_ok());
            insert(txn, &record("dd55", "fresh"))?;
            Ok::<_, Error>(())
        })
        .unwrap();
        assert_eq!(id_of("fresh").as_deref(), Some("dd55"));
        // Prefixes come from the ids' key order alone.
        let keys = |p: &str| db.keys_with_prefix(Table::Containers, p, 2).unwrap();
        assert_eq!(keys("aa"), ["aa11", "aa22"]);
        assert_eq!(keys("b"), ["bb33"]);
        assert!(keys("e").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mount_roots_are_told_from_directories() {
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/proc/self")));
        assert!(!is_mount_point(
            &std::env::temp_dir().join("berth-no-such-dir")
        ));
    }

    #[test]
    fn private_files_are_written_whole_and_for_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("berth-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        write_private(&path, b"{}").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(!path.with_extension("tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
