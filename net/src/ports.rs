//! Published ports (docker's `-p`): the mappings the `portmap` plugin turns
//! into DNAT rules, and the host sockets that hold each host port for the
//! container while it runs. The rules alone would let a host program bind
//! the same port and lose its traffic silently; a held socket makes the
//! second claimant fail, as docker's proxy does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;

use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    // docker's words.
    #[error("Bind for {address} failed: port is already allocated")]
    InUse { address: String },
    #[error("cannot reserve {protocol} port {address}: {detail}")]
    Reserve {
        protocol: String,
        address: String,
        detail: String,
    },
    #[error("invalid protocol {0:?}: use tcp or udp")]
    Protocol(String),
    #[error("invalid host address {0:?}: an IPv4 address")]
    HostIp(String),
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// "" for every address.
    #[serde(default)]
    pub host_ip: String,
    /// 0 until a random one is chosen.
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
}

impl PortMapping {
    fn host_address(&self) -> Result<Ipv4Addr, Error> {
        if self.host_ip.is_empty() {
            return Ok(Ipv4Addr::UNSPECIFIED);
        }
        self.host_ip
            .parse()
            .map_err(|_| Error::HostIp(self.host_ip.clone()))
    }
}

/// The host sockets holding a container's ports.
#[derive(Debug, Default)]
pub struct Reservation {
    _sockets: Vec<OwnedFd>,
}

/// Binds a socket to each mapping's host address and port (a random free
/// one where the port is 0, written back into the mapping).
pub fn reserve(mappings: &mut [PortMapping]) -> Result<Reservation, Error> {
    let mut sockets = Vec::new();
    for m in mappings.iter_mut() {
        let kind = match m.protocol.as_str() {
            "tcp" | "" => SockType::Stream,
            "udp" => SockType::Datagram,
            other => return Err(Error::Protocol(other.to_string())),
        };
        let ip = m.host_address()?;
        let address = SocketAddr::new(IpAddr::V4(ip), m.host_port);
        let fail = |e: nix::errno::Errno| {
            if e == nix::errno::Errno::EADDRINUSE {
                Error::InUse {
                    address: address.to_string(),
                }
            } else {
                Error::Reserve {
                    protocol: m.protocol.clone(),
                    address: address.to_string(),
                    detail: e.desc().to_string(),
                }
            }
        };
        let fd = socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None).map_err(fail)?;
        let SocketAddr::V4(v4) = address else {
            unreachable!("built from an IPv4 address")
        };
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4)).map_err(fail)?;
        if m.host_port == 0 {
            let bound: SockaddrIn =
                getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(fail)?;
            m.host_port = bound.port();
        }
        if m.protocol.is_empty() {
            m.protocol = "tcp".into();
        }
        sockets.push(fd);
    }
    Ok(Reservation { _sockets: sockets })
}

/// The `portMappings` runtime config of the CNI convention.
pub fn runtime_config(mappings: &[PortMapping]) -> Value {
    let ports: Vec<Value> = mappings
        .iter()
        .map(|m| {
            let mut p = json!({
                "hostPort": m.host_port,
                "containerPort": m.container_port,
                "protocol": m.protocol,
            });
            if !m.host_ip.is_empty() {
                p["hostIP"] = json!(m.host_ip);
            }
            p
        })
        .collect();
    json!({ "portMappings": ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(host_port: u16, protocol: &str) -> PortMapping {
        PortMapping {
            host_ip: "127.0.0.1".into(),
            host_port,
            container_port: 80,
            protocol: protocol.into(),
        }
    }

    /// A port the kernel never hands out on its own (below the local port
    /// range), so no other program's connection can take it between the
    /// test's release and its second claim; from a place that moves with
    /// the process, away from the round numbers servers like.
    fn reserve_a_quiet_port() -> (Reservation, u16) {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let first_local: u32 = range.split_whitespace().next().unwrap().parse().unwrap();
        let (low, span) = (20_000, first_local.saturating_sub(20_000).max(1));
        let start = std::process::id() * 7919 % span;
        (0..span)
            .map(|i| (low + (start + i) % span) as u16)
            .find_map(|port| {
                let mut m = [mapping(port, "tcp")];
                reserve(&mut m).ok().map(|held| (held, port))
            })
            .expect("a free port below the local port range")
    }

    #[test]
    fn a_random_port_is_chosen_for_each_protocol() {
        let mut ports = [mapping(0, "tcp"), mapping(0, "udp")];
        let _held = reserve(&mut ports).unwrap();
        assert!(ports.iter().all(|m| m.host_port != 0));
        assert_eq!(
            reserve(&mut [mapping(0, "sctp")]).unwrap_err(),
            Error::Protocol("sctp".into())
        );
    }

    #[test]
    fn a_held_port_cannot_be_claimed_twice_until_it_is_released() {
        let (held, port) = reserve_a_quiet_port();
        let mut again = [mapping(port, "tcp")];
        let err = reserve(&mut again).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Bind for 127.0.0.1:{port} failed: port is already allocated")
        );
        drop(held);
        // Released: ours again. (Another program on this host may bind it
        // for a moment; the claim is retried for a while before it fails.)
        let start = std::time::Instant::now();
        while let Err(e) = reserve(&mut again) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(3),
                "{e}: {}",
                std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn runtime_config_is_the_cni_convention() {
        let mut m = mapping(8080, "tcp");
        m.host_ip.clear();
        assert_eq!(
            runtime_config(&[m]),
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
    }
}
