//! A network: a Linux bridge with an IPv4 subnet, NAT out through the
//! host, and the CNI plugin chain that connects a container to it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cni;

/// The network every container joins unless it asks for another (docker's).
pub const DEFAULT: &str = "bridge";
/// Its bridge device.
pub const DEFAULT_BRIDGE: &str = "berth0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("invalid subnet {0:?}: expected an IPv4 network such as 10.90.0.0/24")]
    Subnet(String),
    #[error("subnet {subnet} overlaps {other}")]
    Overlap { subnet: Subnet, other: String },
    #[error("no free subnet left for a new network: give one with --subnet")]
    Exhausted,
    #[error("invalid network name {0:?}: use letters, digits, '_', '.' and '-' (at most 64)")]
    Name(String),
}

/// An IPv4 network: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let mask = self.mask() & other.mask();
        (u32::from(self.base) & mask) == (u32::from(other.base) & mask)
    }

    /// The first host address: the bridge's, the containers' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) & self.mask()) == u32::from(self.base)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = Error;

    fn from_str(text: &str) -> Result<Subnet, Error> {
        let bad = || Error::Subnet(text.to_string());
        let (ip, prefix) = text.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        // Room for the gateway and at least one container.
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let subnet = Subnet { base: ip, prefix };
        if u32::from(ip) & !subnet.mask() != 0 {
            return Err(bad());
        }
        Ok(subnet)
    }
}

impl TryFrom<String> for Subnet {
    type Error = Error;
    fn try_from(text: String) -> Result<Subnet, Error> {
        text.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// A network as the daemon keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// 64 hex digits, as docker's network ids.
    pub id: String,
    /// The bridge device (at most 15 characters).
    pub bridge: String,
    pub subnet: Subnet,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds since the epoch.
    #[serde(default)]
    pub created: u64,
}

pub fn valid_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::Name(name.to_string()))
    }
}

impl Network {
    /// A network named `name` with id `id`; a user network's bridge is
    /// `br-` and the id's first 12 digits, as docker names them.
    pub fn new(name: &str, id: &str, subnet: Subnet) -> Network {
        let bridge = if name == DEFAULT {
            DEFAULT_BRIDGE.to_string()
        } else {
            format!("br-{}", &id[..12.min(id.len())])
        };
        Network {
            name: name.to_string(),
            id: id.to_string(),
            bridge,
            subnet,
            labels: BTreeMap::new(),
            created: 0,
        }
    }

    /// The plugin chain a container joins this network by: a bridge with
    /// host-local addresses (leases kept in `ipam_dir`) and hairpin, then
    /// published ports (`portmap`, with SNAT so the host's own 127.0.0.1
    /// reaches them; only when it publishes some: each plugin is a process
    /// and a round of iptables). Outbound NAT and forwarding are the
    /// network's own rules ([`crate::rules`]), made once, not per container.
    pub fn plugins(&self, ipam_dir: &Path, publishes: bool) -> Vec<Value> {
        let mut chain = vec![
            json!({
                "type": "bridge",
                // host-local, which the bridge runs, takes a requested address.
                "capabilities": {"ips": true},
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.subnet.to_string(), "gateway": self.subnet.gateway().to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                },
            }),
            json!({
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
            }),
        ];
        if !publishes {
            chain.retain(|p| p["type"] != "portmap");
        }
        chain
    }

    /// Plugin `index`'s stdin for one run: the chain's common fields, its
    /// own, the runtime config it has the capability for, the previous
    /// plugin's result.
    pub fn plugin_config(
        &self,
        plugin: &Value,
        runtime_config: &Value,
        prev_result: Option<&Value>,
    ) -> Value {
        let mut config = plugin.clone();
        config["cniVersion"] = json!(cni::VERSION);
        config["name"] = json!(self.name);
        if let Some(caps) = plugin["capabilities"].as_object() {
            let mut granted = serde_json::Map::new();
            for (capability, on) in caps {
                if on.as_bool() == Some(true) {
                    if let Some(value) = runtime_config.get(capability) {
                        granted.insert(capability.clone(), value.clone());
                    }
                }
            }
            if !granted.is_empty() {
                config["runtimeConfig"] = Value::Object(granted);
            }
        }
        if let Some(prev) = prev_result {
            config["prevResult"] = prev.clone();
        }
        config
    }
}

/// The host's IPv4 routes' destinations (`/proc/net/route`): a new network
/// must not shadow any of them.
pub fn host_routes() -> Vec<Subnet> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    // The kernel prints each address as the native-endian number of its
    // network-order bytes.
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dest = hex(fields.get(1)?)?;
            let mask = hex(fields.get(7)?)?;
            // The default route overlaps everything and chooses nothing.
            (mask != 0).then(|| Subnet {
                base: Ipv4Addr::from(dest.to_ne_bytes()),
                prefix: mask.count_ones() as u8,
            })
        })
        .collect()
}

/// The first of docker's default pools (172.17–31.0.0/16, then
/// 192.168.N.0/20) that overlaps neither a route nor a taken subnet.
pub fn free_subnet(taken: &[Subnet], routes: &[Subnet]) -> Result<Subnet, Error> {
    let candidates = (17..=31)
        .map(|b| Subnet {
            base: Ipv4Addr::new(172, b, 0, 0),
            prefix: 16,
        })
        .chain((0..=240).step_by(16).map(|c| Subnet {
            base: Ipv4Addr::new(192, 168, c, 0),
            prefix: 20,
        }));
    for candidate in candidates {
        if !taken
            .iter()
            .chain(routes)
            .any(|other| other.overlaps(&candidate))
        {
            return Ok(candidate);
        }
    }
    Err(Error::Exhausted)
}

/// Refuses `subnet` if it overlaps a route of the host or another network.
pub fn check_free(
    subnet: &Subnet,
    taken: &[(String, Subnet)],
    routes: &[Subnet],
) -> Result<(), Error> {
    if let Some((name, _)) = taken.iter().find(|(_, s)| s.overlaps(subnet)) {
        return Err(Error::Overlap {
            subnet: *subnet,
            other: format!("network {name}"),
        });
    }
    if let Some(route) = routes.iter().find(|r| r.overlaps(subnet)) {
        return Err(Error::Overlap {
            subnet: *subnet,
            other: format!("the host's route to {route}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_overlap_as_networks_do() {
        let a: Subnet = "10.90.0.0/24".parse().unwrap();
        assert_eq!(a.gateway(), Ipv4Addr::new(10, 90, 0, 1));
        assert!(a.contains(Ipv4Addr::new(10, 90, 0, 200)));
        assert!(!a.contains(Ipv4Addr::new(10, 90, 1, 1)));
        let b: Subnet = "10.90.0.0/16".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&"10.91.0.0/24".parse().unwrap()));
        for bad in [
            "10.90.0.1/24",
            "10.90.0.0",
            "10.90.0.0/31",
            "nope/8",
            "::1/64",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_hosts_routes_are_read() {
        // Whatever this machine has: each a valid network, none the default.
        for route in host_routes() {
            assert!(route.prefix > 0);
            assert_eq!(u32::from(route.base) & !route.mask(), 0, "{route}");
        }
    }

    #[test]
    fn a_free_subnet_avoids_routes_and_other_networks() {
        let routes = vec!["172.17.0.0/16".parse().unwrap()];
        let taken = vec!["172.18.0.0/16".parse().unwrap()];
        assert_eq!(
            free_subnet(&taken, &routes).unwrap().to_string(),
            "172.19.0.0/16"
        );
        let named = vec![("web".to_string(), "172.19.0.0/16".parse().unwrap())];
        let err = check_free(&"172.19.4.0/24".parse().unwrap(), &named, &routes).unwrap_err();
        assert_eq!(err.to_string(), "subnet 172.19.4.0/24 overlaps network web");
    }

    #[test]
    fn only_granted_capabilities_reach_a_plugin() {
        let net = Network::new("web", &"ab".repeat(32), "10.90.0.0/24".parse().unwrap());
        assert_eq!(net.bridge, "br-abababababab");
        let plugins = net.plugins(Path::new("/run/berth/ipam"), true);
        let types = |chain: &[Value]| -> Vec<String> {
            chain
                .iter()
                .map(|p| p["type"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(types(&plugins), ["bridge", "portmap"]);
        assert_eq!(
            types(&net.plugins(Path::new("/run/berth/ipam"), false)),
            ["bridge"]
        );
        let ports = json!({"portMappings": [{"hostPort": 80}], "other": 1});
        let bridge = net.plugin_config(&plugins[0], &ports, None);
        assert!(bridge.get("runtimeConfig").is_none());
        assert_eq!(bridge["cniVersion"], cni::VERSION);
        let portmap = net.plugin_config(&plugins[1], &ports, Some(&json!({"ips": []})));
        assert_eq!(
            portmap["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 80}]})
        );
        assert_eq!(portmap["prevResult"], json!({"ips": []}));
    }
}
