//! Connecting a container's namespace to a network and disconnecting it.
//!
//! ADD runs the chain in order, each plugin given the previous one's
//! result; a plugin that fails makes the ones before it DEL again, so a
//! failed connect leaves no veth, lease or rule behind. DEL runs the chain
//! backwards and goes on past failures (the namespace may be gone, a rule
//! may have been removed by hand): every plugin gets its chance to clean up.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cni::{self, Target, Verb};
use crate::network::Network;
use crate::ports::{self, PortMapping};

/// Where the plugins are and where host-local keeps its leases.
#[derive(Debug, Clone)]
pub struct Plugins {
    pub dir: PathBuf,
    pub ipam_dir: PathBuf,
}

/// A container's place on a network, as recorded for inspect and for DEL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub ifname: String,
    pub address: String,
    pub prefix: u8,
    pub gateway: String,
    pub mac: String,
    pub ports: Vec<PortMapping>,
    /// The chain's final result, handed to DEL as `prevResult`.
    pub result: Value,
}

impl Plugins {
    /// Connects the namespace to `network` as `ifname`, publishing `ports`
    /// (their host ports already chosen), at `address` if one is asked for.
    pub fn connect(
        &self,
        network: &Network,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        ports: &[PortMapping],
        address: Option<Ipv4Addr>,
    ) -> Result<Attachment, cni::Error> {
        let target = Target {
            container_id,
            netns,
            ifname,
        };
        let mut runtime = ports::runtime_config(ports);
        if let Some(address) = address {
            runtime["ips"] = json!([address.to_string()]);
        }
        let chain = network.plugins(&self.ipam_dir, !ports.is_empty());
        let mut prev: Option<Value> = None;
        let mut outcome = cni::Outcome::default();
        for (done, plugin) in chain.iter().enumerate() {
            let config = network.plugin_config(plugin, &runtime, prev.as_ref());
            match cni::run(&self.dir, Verb::Add, &target, &config) {
                Ok(result) => {
                    prev = Some(result.raw.clone());
                    outcome = result;
                }
                Err(e) => {
                    for undo in chain[..done].iter().rev() {
                        let config = network.plugin_config(undo, &runtime, prev.as_ref());
                        let _ = cni::run(&self.dir, Verb::Del, &target, &config);
                    }
                    return Err(e);
                }
            }
        }
        let (address, gateway) = outcome.address_of(ifname).unwrap_or_default();
        let prefix = outcome
            .ips
            .first()
            .and_then(|ip| ip.address.split_once('/'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(network.subnet.prefix);
        let mac = outcome
            .interfaces
            .iter()
            .find(|i| i.name == ifname && !i.sandbox.is_empty())
            .map(|i| i.mac.clone())
            .unwrap_or_default();
        Ok(Attachment {
            network: network.name.clone(),
            ifname: ifname.to_string(),
            address,
            prefix,
            gateway,
            mac,
            ports: ports.to_vec(),
            result: outcome.raw,
        })
    }

    /// Disconnects an attachment: DEL through the chain, backwards. The
    /// first failure is returned after every plugin has run.
    pub fn disconnect(
        &self,
        network: &Network,
        container_id: &str,
        netns: &Path,
        attachment: &Attachment,
    ) -> Result<(), cni::Error> {
        let target = Target {
            container_id,
            netns,
            ifname: &attachment.ifname,
        };
        let runtime = ports::runtime_config(&attachment.ports);
        let prev = (!attachment.result.is_null()).then_some(&attachment.result);
        let mut first = None;
        let chain = network.plugins(&self.ipam_dir, !attachment.ports.is_empty());
        for plugin in chain.iter().rev() {
            let config = network.plugin_config(plugin, &runtime, prev);
            if let Err(e) = cni::run(&self.dir, Verb::Del, &target, &config) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
