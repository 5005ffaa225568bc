//! Networks: the daemon's side of [`berth_net`]. It keeps the networks
//! (`Table::Networks`) and, for each container on one, its attachment
//! (`Table::Attachments`: address, ports, the plugins' result) — written
//! before the plugins run and removed only after they have been undone, so
//! a daemon killed at any point finds every namespace, lease and rule it
//! made and can undo them ([`Networks::recover`]).
//!
//! A container on a network gets a namespace pinned at
//! `<state>/netns/<id>` when its task starts; the runtime joins it by that
//! path. The namespace, its veth, lease and port rules go when the task
//! ends. The host ports it publishes are held by sockets of the daemon
//! while it runs ([`berth_net::ports`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_net::attach::{Attachment, Plugins};
use berth_net::network::{self, Network, Subnet};
use berth_net::ports::{self, PortMapping, Reservation};
use berth_net::{cni, netns};
use serde::{Deserialize, Serialize};

use crate::metadata::{self, Db, Table};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("network {0} not found (berthctl network ls lists them)")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("network {name} has active endpoints ({containers}): remove or stop them first")]
    InUse { name: String, containers: String },
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    #[error("invalid address {0}")]
    Address(String),
    #[error("container {container} is already connected to network {network}")]
    Connected { container: String, network: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("container {0} has no network namespace of berth's: it must run on a network (not none, host or another container's)")]
    NoNamespace(String),
    #[error("network {0} is the container's first network, which holds its published ports: it stays while the container runs")]
    Primary(String),
    #[error(transparent)]
    Network(#[from] network::Error),
    #[error(transparent)]
    Ports(#[from] ports::Error),
    #[error(transparent)]
    Plugin(#[from] cni::Error),
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error(transparent)]
    Rules(#[from] berth_net::rules::Error),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] metadata::Error),
}

type Result<T> = std::result::Result<T, Error>;

/// How a container is networked, from its `--network`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The host's namespace.
    Host,
    /// A namespace of its own with loopback only.
    None,
    /// Another container's namespace (`container:ID`).
    Container(String),
    /// A network of ours, by name.
    Network(String),
}

/// What is kept of a container on a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub attachment: Attachment,
    pub netns: PathBuf,
    /// Whether the plugins' ADD completed (else only its undo is known).
    pub connected: bool,
}

pub struct Networks {
    db: Arc<Db>,
    plugins: Plugins,
    pins: PathBuf,
    /// The network of containers that name none.
    pub default: String,
    held: Mutex<HashMap<String, Reservation>>,
}

impl std::fmt::Debug for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networks")
            .field("pins", &self.pins)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl Networks {
    /// Opens the networks, making `bridge` (on `bridge_subnet`, or one free
    /// of the host's routes) the first time.
    pub fn open(
        db: Arc<Db>,
        state: &Path,
        plugin_dir: &Path,
        default: &str,
        bridge_subnet: Option<Subnet>,
    ) -> Result<Networks> {
        Self::open_with_pins(
            db,
            state.join("netns"),
            state,
            plugin_dir,
            default,
            bridge_subnet,
        )
    }

    /// As [`Networks::open`], with the namespace pins in `pins`: the CRI's
    /// pods share the daemon's networks and address leases (`state/ipam`)
    /// but keep their attachments in a database and their pins in a
    /// directory of their own, so neither side's recovery undoes the
    /// other's.
    pub fn open_with_pins(
        db: Arc<Db>,
        pins: PathBuf,
        state: &Path,
        plugin_dir: &Path,
        default: &str,
        bridge_subnet: Option<Subnet>,
    ) -> Result<Networks> {
        let ipam_dir = state.join("ipam");
        for dir in [&pins, &ipam_dir] {
            crate::private::create_dir(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let networks = Networks {
            db,
            plugins: Plugins {
                dir: plugin_dir.to_path_buf(),
                ipam_dir,
            },
            pins,
            default: default.to_string(),
            held: Mutex::default(),
        };
        if networks
            .db
            .get::<Network>(Table::Networks, network::DEFAULT)?
            .is_none()
        {
            networks.create(network::DEFAULT, bridge_subnet, BTreeMap::new())?;
        }
        // Each network's NAT and forwarding rules (gone with a reboot, or
        // never made by an older daemon).
        for net in networks.list()? {
            berth_net::rules::ensure(&net)?;
        }
        Ok(networks)
    }

    /// What `--network VALUE` means ("" is the default network).
    pub fn mode(&self, value: &str) -> Result<Mode> {
        let value = if value.is_empty() {
            self.default.as_str()
        } else {
            value
        };
        Ok(match value {
            "host" => Mode::Host,
            "none" => Mode::None,
            other => match other.strip_prefix("container:") {
                Some(id) => Mode::Container(id.to_string()),
                None => Mode::Network(self.get(other)?.name),
            },
        })
    }

    pub fn create(
        &self,
        name: &str,
        subnet: Option<Subnet>,
        labels: BTreeMap<String, String>,
    ) -> Result<Network> {
        network::valid_name(name)?;
        if matches!(name, "host" | "none") {
            return Err(Error::Exists(name.to_string()));
        }
        let id = crate::volumes::random_hex(32);
        self.db
            .write(|txn| {
                let existing: Vec<(String, Network)> = txn.list(Table::Networks)?;
                if existing.iter().any(|(n, _)| n == name) {
                    return Err(Error::Exists(name.to_string()));
                }
                let taken: Vec<(String, Subnet)> = existing
                    .into_iter()
                    .map(|(n, net)| (n, net.subnet))
                    .collect();
                let routes = network::host_routes();
                let subnet = match subnet {
                    Some(subnet) => {
                        network::check_free(&subnet, &taken, &routes)?;
                        subnet
                    }
                    None => {
                        let subnets: Vec<Subnet> = taken.iter().map(|(_, s)| *s).collect();
                        network::free_subnet(&subnets, &routes)?
                    }
                };
                let mut network = Network::new(name, &id, subnet);
                network.labels = labels;
                network.created = crate::clock::now_secs();
                txn.put(Table::Networks, name, &network)?;
                Ok(network)
            })
            .and_then(|network: Network| {
                if let Err(e) = berth_net::rules::ensure(&network) {
                    berth_net::rules::remove(&network);
                    let _ = self.db.write(|txn| {
                        txn.delete(Table::Networks, &network.name)?;
                        Ok::<_, Error>(())
                    });
                    return Err(e.into());
                }
                Ok(network)
            })
    }

    /// By name, id, or a unique id prefix.
    pub fn get(&self, name: &str) -> Result<Network> {
        if let Some(network) = self.db.get::<Network>(Table::Networks, name)? {
            return Ok(network);
        }
        let matches: Vec<Network> = self
            .list()?
            .into_iter()
            .filter(|n| !name.is_empty() && n.id.starts_with(name))
            .collect();
        match <[Network; 1]>::try_from(matches) {
            Ok([network]) => Ok(network),
            Err(_) => Err(Error::NotFound(name.to_string())),
        }
    }

    pub fn list(&self) -> Result<Vec<Network>> {
        Ok(self
            .db
            .list::<Network>(Table::Networks)?
            .into_iter()
            .map(|(_, n)| n)
            .collect())
    }

    /// Containers (ids) with an attachment to `network`.
    pub fn users(&self, network: &str) -> Result<Vec<String>> {
        Ok(self
            .all_attachments()
            .into_iter()
            .filter(|(_, a)| a.attachment.network == network)
            .map(|(id, _)| id)
            .collect())
    }

    /// Checks a requested address (docker's `--ip`): on a user network,
    /// inside its subnet, neither its network's nor its gateway's.
    pub fn check_address(&self, network: &str, address: &str) -> Result<std::net::Ipv4Addr> {
        let net = self.get(network)?;
        let bad = |why: &str| Error::Address(format!("{address}: {why}"));
        if net.name == network::DEFAULT {
            return Err(bad(
                "a chosen address is supported on user-defined networks only",
            ));
        }
        let ip: std::net::Ipv4Addr = address.parse().map_err(|_| bad("not an IPv4 address"))?;
        if !net.subnet.contains(ip) || ip == net.subnet.base || ip == net.subnet.gateway() {
            return Err(bad(&format!(
                "not a free host address of network {} ({})",
                net.name, net.subnet
            )));
        }
        Ok(ip)
    }

    /// Removes a network no container is on; `named_by` lists containers
    /// (stopped ones too) whose settings name it.
    pub fn remove(&self, name: &str, named_by: &[String]) -> Result<()> {
        let network = self.get(name)?;
        if network.name == network::DEFAULT {
            return Err(Error::Predefined(network.name));
        }
        // By name where a container's settings say it; an attachment
        // without such a container (only possible by hand) by id.
        let mut users = named_by.to_vec();
        if users.is_empty() {
            users = self.users(&network.name)?;
        }
        if !users.is_empty() {
            users.sort();
            let more = users.len().saturating_sub(5);
            users.truncate(5);
            let mut containers = users.join(", ");
            if more > 0 {
                containers.push_str(&format!(" and {more} more"));
            }
            return Err(Error::InUse {
                name: network.name,
                containers,
            });
        }
        self.db.write(|txn| {
            txn.delete(Table::Networks, &network.name)?;
            Ok::<_, Error>(())
        })?;
        // Its rules and bridge device go with it; its subnet may be reused.
        berth_net::rules::remove(&network);
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &network.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        Ok(())
    }

    pub fn netns_path(&self, container: &str) -> PathBuf {
        self.pins.join(container)
    }

    /// Every attachment, with its container.
    fn all_attachments(&self) -> Vec<(String, AttachmentRecord)> {
        self.db
            .list::<AttachmentRecord>(Table::Attachments)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(key, a)| Some((key.split_once('/')?.0.to_string(), a)))
            .collect()
    }

    /// Every container's attachments, each list its first interface first
    /// (one read of the table, for a listing).
    pub fn attachments_by_container(&self) -> HashMap<String, Vec<AttachmentRecord>> {
        let mut all: HashMap<String, Vec<AttachmentRecord>> = HashMap::new();
        for (container, record) in self.all_attachments() {
            all.entry(container).or_default().push(record);
        }
        for own in all.values_mut() {
            own.sort_by_key(|a| interface_number(&a.attachment.ifname));
        }
        all
    }

    /// The container's attachments, its first interface first.
    pub fn attachments(&self, container: &str) -> Vec<AttachmentRecord> {
        let mut own: Vec<AttachmentRecord> = self
            .all_attachments()
            .into_iter()
            .filter(|(c, _)| c == container)
            .map(|(_, a)| a)
            .collect();
        own.sort_by_key(|a| interface_number(&a.attachment.ifname));
        own
    }

    /// The container's first attachment (`eth0`), made at its start.
    pub fn attachment(&self, container: &str) -> Option<AttachmentRecord> {
        self.attachments(container).into_iter().next()
    }

    fn put(&self, container: &str, record: &AttachmentRecord) -> Result<()> {
        let key = format!("{container}/{}", record.attachment.network);
        self.db.write(|txn| {
            txn.put(Table::Attachments, &key, record)?;
            Ok::<_, Error>(())
        })
    }

    fn forget(&self, container: &str, network: &str) -> Result<()> {
        let key = format!("{container}/{network}");
        self.db.write(|txn| {
            txn.delete(Table::Attachments, &key)?;
            Ok::<_, Error>(())
        })
    }

    /// Makes the container's namespace and connects it to `network` as
    /// `eth0`, publishing `ports` (random host ports chosen). Blocking. On
    /// failure nothing is left: no namespace, lease, rule or held port.
    pub fn connect(
        &self,
        container: &str,
        network: &str,
        mut ports: Vec<PortMapping>,
        address: Option<std::net::Ipv4Addr>,
    ) -> Result<AttachmentRecord> {
        let network = self.get(network)?;
        // A namespace left by a run whose end was not seen goes first.
        self.disconnect(container)?;
        let reservation = ports::reserve(&mut ports)?;
        let netns = self.netns_path(container);
        let made = netns::create(&netns)
            .map_err(Error::from)
            .and_then(|()| self.attach(container, &network, &netns, "eth0", ports, address));
        match made {
            Ok(record) => {
                self.hold(container, reservation);
                Ok(record)
            }
            Err(e) => {
                let _ = netns::remove(&netns);
                Err(e)
            }
        }
    }

    /// Connects a running container's namespace to one more network (the
    /// next free `ethN`), as `network connect` does.
    pub fn connect_more(
        &self,
        container: &str,
        network: &str,
        address: Option<std::net::Ipv4Addr>,
    ) -> Result<AttachmentRecord> {
        let network = self.get(network)?;
        let own = self.attachments(container);
        if own.iter().any(|a| a.attachment.network == network.name) {
            return Err(Error::Connected {
                container: container.to_string(),
                network: network.name,
            });
        }
        let Some(first) = own.first() else {
            return Err(Error::NoNamespace(container.to_string()));
        };
        let taken: Vec<u32> = own
            .iter()
            .map(|a| interface_number(&a.attachment.ifname))
            .collect();
        let next = (0..).find(|n| !taken.contains(n)).unwrap_or(0);
        let netns = first.netns.clone();
        self.attach(
            container,
            &network,
            &netns,
            &format!("eth{next}"),
            Vec::new(),
            address,
        )
    }

    /// One plugin chain run, recorded before it starts (a daemon killed
    /// during ADD still knows what to DEL) and forgotten if it fails.
    fn attach(
        &self,
        container: &str,
        network: &Network,
        netns: &Path,
        ifname: &str,
        ports: Vec<PortMapping>,
        address: Option<std::net::Ipv4Addr>,
    ) -> Result<AttachmentRecord> {
        let mut record = AttachmentRecord {
            attachment: Attachment {
                network: network.name.clone(),
                ifname: ifname.to_string(),
                ports: ports.clone(),
                ..Default::default()
            },
            netns: netns.to_path_buf(),
            connected: false,
        };
        self.put(container, &record)?;
        match self
            .plugins
            .connect(network, container, netns, ifname, &ports, address)
        {
            Ok(attachment) => {
                record.attachment = attachment;
                record.connected = true;
                self.put(container, &record)?;
                Ok(record)
            }
            Err(e) => {
                let _ = self.forget(container, &network.name);
                Err(e.into())
            }
        }
    }

    fn hold(&self, container: &str, reservation: Reservation) {
        if let Ok(mut held) = self.held.lock() {
            held.insert(container.to_string(), reservation);
        }
    }

    /// DEL of one attachment through its network's plugins.
    fn detach(&self, container: &str, record: &AttachmentRecord) -> Result<()> {
        let deleted = match self.get(&record.attachment.network) {
            Ok(network) => self
                .plugins
                .disconnect(&network, container, &record.netns, &record.attachment)
                .map_err(Error::from),
            // Its network is gone (only possible by hand): nothing to run.
            Err(_) => Ok(()),
        };
        deleted?;
        self.forget(container, &record.attachment.network)
    }

    /// Takes a running container off one network (`network disconnect`);
    /// its namespace stays.
    pub fn disconnect_one(&self, container: &str, network: &str) -> Result<()> {
        let network = self.get(network)?;
        let record = self
            .attachments(container)
            .into_iter()
            .find(|a| a.attachment.network == network.name)
            .ok_or_else(|| Error::NotConnected {
                container: container.to_string(),
                network: network.name.clone(),
            })?;
        if record.attachment.ifname == "eth0" {
            // The first network carries the published ports and the pin.
            return Err(Error::Primary(network.name));
        }
        self.detach(container, &record)
    }

    /// Undoes every [`Networks::connect`] of the container: DEL through the
    /// plugins, the namespace unpinned, the ports let go. Nothing to undo
    /// is fine. Blocking.
    pub fn disconnect(&self, container: &str) -> Result<()> {
        if let Ok(mut held) = self.held.lock() {
            held.remove(container);
        }
        let own = self.attachments(container);
        let mut first_error = None;
        for record in own.iter().rev() {
            if let Err(e) = self.detach(container, record) {
                first_error.get_or_insert(e);
            }
        }
        if let Some(record) = own.first() {
            netns::remove(&record.netns)?;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// At start: the attachments of containers still running keep their
    /// namespaces and get their host ports held again; the others (ended
    /// while the daemon was away, or half made when it died) are undone.
    pub fn recover(&self, running: impl Fn(&str) -> bool) {
        let mut containers: Vec<String> =
            self.all_attachments().into_iter().map(|(c, _)| c).collect();
        containers.sort();
        containers.dedup();
        for container in containers {
            let held = self.held.lock().is_ok_and(|h| h.contains_key(&container));
            if held {
                // Connected by a start during this recovery.
                continue;
            }
            let own = self.attachments(&container);
            let whole = own.iter().all(|a| a.connected);
            if whole && running(&container) {
                let mut ports: Vec<PortMapping> = own
                    .iter()
                    .flat_map(|a| a.attachment.ports.clone())
                    .collect();
                match ports::reserve(&mut ports) {
                    Ok(reservation) => self.hold(&container, reservation),
                    Err(e) => eprintln!("berth-imaged: container {container}: {e}"),
                }
            } else if running(&container) {
                // A connect cut short: only its half-made attachments go.
                for record in own.iter().filter(|a| !a.connected) {
                    if let Err(e) = self.detach(&container, record) {
                        eprintln!("berth-imaged: cannot disconnect container {container}: {e}");
                    }
                }
            } else if let Err(e) = self.disconnect(&container) {
                eprintln!("berth-imaged: cannot disconnect container {container}: {e}");
            }
        }
        // Pins no record names (a failed start, or a daemon killed between
        // pin and record).
        if let Ok(entries) = std::fs::read_dir(&self.pins) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if self.attachment(&name).is_none() {
                    let _ = netns::remove(&entry.path());
                }
            }
        }
    }
}

/// `eth3` → 3 (interfaces sort by number, `eth10` after `eth9`).
fn interface_number(ifname: &str) -> u32 {
    ifname
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(u32::MAX)
}
