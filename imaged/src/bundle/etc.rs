//! The container's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`,
//! written into its bundle and bind-mounted by its spec.

use std::path::Path;

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
