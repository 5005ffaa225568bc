//! What a task's start and end do to its container's network: the
//! namespace made and connected before the runtime creates the container,
//! undone after the task is gone, and every container's `/etc/hosts` on a
//! user network kept naming the others.
//!
//! Names: on a network created by a user, each container's `/etc/hosts`
//! lists every other container on it by name, host name and aliases. The
//! files are rewritten in place (each is bound by inode into its
//! container) whenever a container joins or leaves. This answers what
//! docker's embedded DNS answers for the resolver's `files` source (every
//! libc and busybox lookup), with no server in the data path and nothing
//! listening in the containers; a program that speaks DNS itself (`dig`)
//! does not see the names. The default `bridge` network, as docker's,
//! resolves no names.

use std::collections::HashMap;

use berth_net::network;
use berth_net::ports::PortMapping;

use super::{Error, Tasks};
use crate::containers::ContainerRecord;
use crate::networks::{AttachmentRecord, Mode};

type Result<T> = std::result::Result<T, Error>;

/// The container's host name: asked for, or its id's first 12 digits.
fn hostname_of(record: &ContainerRecord) -> String {
    let settings = record.settings();
    if settings.hostname.is_empty() {
        record.id.chars().take(12).collect()
    } else {
        settings.hostname
    }
}

impl Tasks {
    /// Puts a container that runs on a network of ours on it (its
    /// namespace pinned, the plugins run, its ports held), then on each
    /// network added by `network connect`, and rewrites the /etc/hosts of
    /// everyone concerned. Other modes need nothing at start.
    pub(crate) async fn connect_network(&self, record: &ContainerRecord) -> Result<()> {
        let settings = record.settings();
        let networks = self.containers.networks.clone();
        let Mode::Network(network) = networks.mode(&settings.network)? else {
            return Ok(());
        };
        let ports = settings
            .ports
            .iter()
            .map(|p| PortMapping {
                host_ip: p.host_ip.clone(),
                host_port: p.host_port as u16,
                container_port: p.container_port as u16,
                protocol: if p.protocol.is_empty() {
                    "tcp".into()
                } else {
                    p.protocol.clone()
                },
            })
            .collect();
        let address = if settings.ip.is_empty() {
            None
        } else {
            Some(networks.check_address(&network, &settings.ip)?)
        };
        let mut wanted = vec![network.clone()];
        let id = record.id.clone();
        let more = settings.more_networks.clone();
        let connected = tokio::task::spawn_blocking(move || {
            networks.connect(&id, &network, ports, address)?;
            for endpoint in &more {
                let address = if endpoint.ip.is_empty() {
                    None
                } else {
                    Some(networks.check_address(&endpoint.network, &endpoint.ip)?)
                };
                networks.connect_more(&id, &endpoint.network, address)?;
            }
            Ok::<_, crate::networks::Error>(())
        })
        .await
        .map_err(|e| Error::Invalid(format!("connecting {}: {e}", record.name)))?;
        if let Err(e) = connected {
            self.disconnect_network(&record.id).await;
            return Err(e.into());
        }
        wanted.extend(settings.more_networks.iter().map(|e| e.network.clone()));
        if let Err(e) = self.refresh_networks(&wanted, &record.id) {
            self.disconnect_network(&record.id).await;
            return Err(Error::Stdio {
                container: record.name.clone(),
                detail: format!("cannot write its /etc/hosts: {e}"),
            });
        }
        Ok(())
    }

    /// Takes a container off all its networks (nothing to do is fine);
    /// failures are logged: the task is gone whatever the plugins say.
    pub(crate) async fn disconnect_network(&self, id: &str) {
        let networks = self.containers.networks.clone();
        let left: Vec<String> = networks
            .attachments(id)
            .into_iter()
            .map(|a| a.attachment.network)
            .collect();
        let owned = id.to_string();
        let done = tokio::task::spawn_blocking(move || networks.disconnect(&owned)).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("berth-imaged: container {id}: {e}"),
            Err(e) => eprintln!("berth-imaged: container {id}: disconnecting: {e}"),
        }
        if let Err(e) = self.refresh_networks(&left, id) {
            eprintln!("berth-imaged: /etc/hosts on the networks of {id}: {e}");
        }
    }

    /// Rewrites the /etc/hosts of `container` and of every container on
    /// one of `networks`.
    pub(crate) fn refresh_networks(
        &self,
        networks: &[String],
        container: &str,
    ) -> std::io::Result<()> {
        // One read of the attachments and of each record concerned, for
        // every file written.
        let all = self.containers.networks.attachments_by_container();
        let mut records: HashMap<String, Option<ContainerRecord>> = HashMap::new();
        let mut affected = vec![container.to_string()];
        for network in networks {
            affected.extend(members(&all, network).map(|(id, _)| id.clone()));
        }
        affected.sort();
        affected.dedup();
        for id in affected {
            self.write_hosts_of(&id, &all, &mut records)?;
        }
        Ok(())
    }

    /// One container's /etc/hosts: its first address, and on each user
    /// network it is on, every other member there.
    fn write_hosts_of(
        &self,
        id: &str,
        all: &HashMap<String, Vec<AttachmentRecord>>,
        records: &mut HashMap<String, Option<ContainerRecord>>,
    ) -> std::io::Result<()> {
        let mut record_of = |id: &str| {
            records
                .entry(id.to_string())
                .or_insert_with(|| self.containers.resolve(id).ok())
                .clone()
        };
        let Some(record) = record_of(id) else {
            return Ok(());
        };
        let own = all.get(id).map_or(&[][..], Vec::as_slice);
        let Some(first) = own.first().filter(|a| a.connected) else {
            return Ok(());
        };
        let mut peers: Vec<(String, Vec<String>)> = Vec::new();
        for attachment in own
            .iter()
            .filter(|a| a.attachment.network != network::DEFAULT)
        {
            for (peer, address) in members(all, &attachment.attachment.network) {
                if peer == id || peers.iter().any(|(ip, _)| ip == address) {
                    continue;
                }
                let Some(peer) = record_of(peer) else {
                    continue;
                };
                let mut names = vec![peer.name.clone()];
                let hostname = hostname_of(&peer);
                if hostname != peer.name {
                    names.push(hostname);
                }
                let settings = peer.settings();
                if settings.network == attachment.attachment.network {
                    names.extend(settings.network_aliases);
                }
                if let Some(endpoint) = settings
                    .more_networks
                    .iter()
                    .find(|e| e.network == attachment.attachment.network)
                {
                    names.extend(endpoint.aliases.iter().cloned());
                }
                peers.push((address.to_string(), names));
            }
        }
        crate::bundle::write_hosts(
            &record.bundle,
            &hostname_of(&record),
            Some(first.attachment.address.as_str()),
            &record.settings().extra_hosts,
            &peers,
        )
    }
}

/// The containers connected to `network` and their addresses there.
fn members<'a>(
    all: &'a HashMap<String, Vec<AttachmentRecord>>,
    network: &'a str,
) -> impl Iterator<Item = (&'a String, &'a str)> + 'a {
    all.iter().flat_map(move |(id, own)| {
        own.iter()
            .filter(move |a| a.connected && a.attachment.network == network)
            .map(move |a| (id, a.attachment.address.as_str()))
    })
}

impl Tasks {
    /// `network connect`: the network is added to the container's settings
    /// (joined at each start) and, if it runs, joined now.
    pub async fn connect_container(
        &self,
        container: &str,
        endpoint: berth_proto::v1::NetworkEndpoint,
    ) -> Result<()> {
        use prost::Message as _;
        let record = self.containers.resolve(container)?;
        let networks = self.containers.networks.clone();
        let network = networks.get(&endpoint.network)?;
        let settings = record.settings();
        let on_it = settings.network == network.name
            || settings
                .more_networks
                .iter()
                .any(|e| e.network == network.name);
        if on_it {
            return Err(crate::networks::Error::Connected {
                container: record.name.clone(),
                network: network.name,
            }
            .into());
        }
        let address = if endpoint.ip.is_empty() {
            None
        } else {
            Some(networks.check_address(&network.name, &endpoint.ip)?)
        };
        let endpoint = berth_proto::v1::NetworkEndpoint {
            network: network.name.clone(),
            ..endpoint
        };
        if self.is_running(&record.id) {
            let id = record.id.clone();
            let name = network.name.clone();
            tokio::task::spawn_blocking(move || networks.connect_more(&id, &name, address))
                .await
                .map_err(|e| Error::Invalid(format!("connecting {}: {e}", record.name)))??;
        }
        self.containers.update(&record.id, |r| {
            let mut settings = r.settings();
            settings.more_networks.push(endpoint);
            r.config = settings.encode_to_vec();
        })?;
        if let Err(e) = self.refresh_networks(std::slice::from_ref(&network.name), &record.id) {
            eprintln!("berth-imaged: /etc/hosts on network {}: {e}", network.name);
        }
        Ok(())
    }

    /// `network disconnect`: the reverse of [`Tasks::connect_container`].
    pub async fn disconnect_container(&self, container: &str, network: &str) -> Result<()> {
        use prost::Message as _;
        let record = self.containers.resolve(container)?;
        let networks = self.containers.networks.clone();
        let network = networks.get(network)?;
        let settings = record.settings();
        if settings.network == network.name {
            return Err(crate::networks::Error::Primary(network.name).into());
        }
        if !settings
            .more_networks
            .iter()
            .any(|e| e.network == network.name)
        {
            return Err(crate::networks::Error::NotConnected {
                container: record.name.clone(),
                network: network.name,
            }
            .into());
        }
        if self.is_running(&record.id) {
            let id = record.id.clone();
            let name = network.name.clone();
            let nets = networks.clone();
            tokio::task::spawn_blocking(move || nets.disconnect_one(&id, &name))
                .await
                .map_err(|e| Error::Invalid(format!("disconnecting {}: {e}", record.name)))??;
        }
        self.containers.update(&record.id, |r| {
            let mut settings = r.settings();
            settings.more_networks.retain(|e| e.network != network.name);
            r.config = settings.encode_to_vec();
        })?;
        if let Err(e) = self.refresh_networks(std::slice::from_ref(&network.name), &record.id) {
            eprintln!("berth-imaged: /etc/hosts on network {}: {e}", network.name);
        }
        Ok(())
    }
}
