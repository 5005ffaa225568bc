//! `network create|ls|inspect|rm` and `port`: the daemon's networks, and
//! where a container's ports are published.

use anyhow::{bail, Context, Result};
use berth_proto::v1 as pb;

use crate::cli::{Format, NetworkCommand, PortArgs};
use crate::client::{rpc, Daemon};
use crate::{containers, flags, output};

pub async fn run(d: &Daemon, command: &NetworkCommand) -> Result<i32> {
    match command {
        NetworkCommand::Create(a) => {
            if a.driver != "bridge" {
                bail!("network driver {:?} is not supported: bridge is", a.driver);
            }
            let n = d
                .networks()
                .create(pb::CreateNetworkRequest {
                    name: a.name.clone(),
                    subnet: a.subnet.clone().unwrap_or_default(),
                    labels: flags::labels(&a.labels)?,
                })
                .await
                .map_err(rpc)
                .context("cannot create the network")?
                .into_inner();
            println!("{}", n.id);
            Ok(0)
        }
        NetworkCommand::Ls(a) => {
            let networks = d
                .networks()
                .list(pb::ListNetworksRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .networks;
            if a.format.format == Format::Json {
                output::print_json(&serde_json::Value::Array(
                    networks.iter().map(output::network).collect(),
                ));
            } else if a.quiet {
                for n in &networks {
                    println!("{}", output::short_id(&n.id));
                }
            } else {
                let rows: Vec<Vec<String>> = networks
                    .iter()
                    .map(|n| {
                        vec![
                            output::short_id(&n.id).to_string(),
                            n.name.clone(),
                            n.driver.clone(),
                            n.subnet.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NETWORK ID", "NAME", "DRIVER", "SUBNET"], &rows);
            }
            Ok(0)
        }
        NetworkCommand::Inspect(a) => {
            let mut docs = Vec::new();
            for name in &a.names {
                let n = d
                    .networks()
                    .get(pb::GetNetworkRequest { name: name.clone() })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                docs.push(output::network(&n));
            }
            output::print_json(&serde_json::Value::Array(docs));
            Ok(0)
        }
        NetworkCommand::Connect(a) => {
            d.networks()
                .connect_container(pb::ConnectNetworkRequest {
                    network: a.network.clone(),
                    container: a.container.clone(),
                    aliases: a.aliases.clone(),
                    ip: a.ip.clone().unwrap_or_default(),
                })
                .await
                .map_err(rpc)
                .with_context(|| format!("cannot connect {} to {}", a.container, a.network))?;
            Ok(0)
        }
        NetworkCommand::Disconnect(a) => {
            d.networks()
                .disconnect_container(pb::DisconnectNetworkRequest {
                    network: a.network.clone(),
                    container: a.container.clone(),
                })
                .await
                .map_err(rpc)
                .with_context(|| format!("cannot disconnect {} from {}", a.container, a.network))?;
            Ok(0)
        }
        NetworkCommand::Rm(a) => {
            let mut failed = false;
            for name in &a.names {
                match d
                    .networks()
                    .remove(pb::RemoveNetworkRequest { name: name.clone() })
                    .await
                {
                    Ok(_) => println!("{name}"),
                    Err(e) => {
                        eprintln!("berthctl: cannot remove network {name}: {}", rpc(e));
                        failed = true;
                    }
                }
            }
            Ok(i32::from(failed))
        }
    }
}

/// `port CONTAINER [PORT[/PROTO]]`, docker's lines.
pub async fn port(d: &Daemon, a: &PortArgs) -> Result<i32> {
    let c = containers::get(d, &a.container).await?;
    let ports = c.network_settings.map(|n| n.ports).unwrap_or_default();
    let wanted = a.port.as_deref().map(|p| match p.split_once('/') {
        Some((port, proto)) => (port.to_string(), proto.to_string()),
        None => (p.to_string(), "tcp".to_string()),
    });
    let mut found = false;
    for p in &ports {
        if let Some((port, proto)) = &wanted {
            if p.container_port.to_string() != *port || p.protocol != *proto {
                continue;
            }
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &p.host_ip
            };
            println!("{ip}:{}", p.host_port);
        } else {
            println!("{}", output::port_line(p));
        }
        found = true;
    }
    if let (Some(port), false) = (&a.port, found) {
        bail!("no public port '{port}' published for {}", a.container);
    }
    Ok(0)
}
