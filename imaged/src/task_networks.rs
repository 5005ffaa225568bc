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

use berth_net::network;
use berth_net::ports::PortMapping;

use crate::containers::ContainerRecord;
use crate::networks::Mode;
use crate::tasks::{Error, Tasks};

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
    /// Puts a container that runs on a network of ours on it: its namespace
    /// pinned, the plugins run, its ports held, its /etc/hosts naming its
    /// address (and, on a user network, its peers' and its peers' its).
    /// Other modes need nothing at start.
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
        let id = record.id.clone();
        let name = network.clone();
        tokio::task::spawn_blocking(move || networks.connect(&id, &name, ports, address))
            .await
            .map_err(|e| Error::Invalid(format!("connecting {}: {e}", record.name)))??;
        if let Err(e) = self.refresh_hosts(&network) {
            self.disconnect_network(&record.id).await;
            return Err(Error::Stdio {
                container: record.name.clone(),
                detail: format!("cannot write its /etc/hosts: {e}"),
            });
        }
        Ok(())
    }

    /// Takes a container off its network (nothing to do is fine); failures
    /// are logged: the task is gone whatever the plugins say.
    pub(crate) async fn disconnect_network(&self, id: &str) {
        let networks = self.containers.networks.clone();
        let network = networks.attachment(id).map(|a| a.attachment.network);
        let owned = id.to_string();
        let done = tokio::task::spawn_blocking(move || networks.disconnect(&owned)).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("berth-imaged: container {id}: {e}"),
            Err(e) => eprintln!("berth-imaged: container {id}: disconnecting: {e}"),
        }
        if let Some(network) = network {
            if let Err(e) = self.refresh_hosts(&network) {
                eprintln!("berth-imaged: /etc/hosts of network {network}: {e}");
            }
        }
    }

    /// Rewrites the /etc/hosts of every container connected to `network`.
    fn refresh_hosts(&self, network: &str) -> std::io::Result<()> {
        let members: Vec<(ContainerRecord, String)> = self
            .containers
            .networks
            .members(network)
            .into_iter()
            .filter_map(|(id, address)| Some((self.containers.resolve(&id).ok()?, address)))
            .collect();
        let peers: Vec<(String, Vec<String>)> = if network == network::DEFAULT {
            Vec::new()
        } else {
            members
                .iter()
                .map(|(record, address)| {
                    let mut names = vec![record.name.clone()];
                    let hostname = hostname_of(record);
                    if hostname != record.name {
                        names.push(hostname);
                    }
                    names.extend(record.settings().network_aliases);
                    (address.clone(), names)
                })
                .collect()
        };
        for (record, address) in &members {
            let others: Vec<(String, Vec<String>)> = peers
                .iter()
                .filter(|(ip, _)| ip != address)
                .cloned()
                .collect();
            crate::bundle::write_hosts(
                &record.bundle,
                &hostname_of(record),
                Some(address.as_str()),
                &record.settings().extra_hosts,
                &others,
            )?;
        }
        Ok(())
    }
}
