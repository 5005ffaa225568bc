//! `volume create|ls|inspect|rm`: named volumes of the daemon, which
//! outlive containers (`-v NAME:/dst` creates one on first use too).

use anyhow::{Context, Result};
use berth_proto::v1 as pb;

use crate::cli::{Format, VolumeCommand};
use crate::client::{rpc, Daemon};
use crate::{flags, output};

pub async fn run(d: &Daemon, command: &VolumeCommand) -> Result<i32> {
    match command {
        VolumeCommand::Create(a) => {
            let v = d
                .volumes()
                .create(pb::CreateVolumeRequest {
                    name: a.name.clone().unwrap_or_default(),
                    labels: flags::labels(&a.labels)?,
                })
                .await
                .map_err(rpc)
                .context("cannot create the volume")?
                .into_inner();
            println!("{}", v.name);
            Ok(0)
        }
        VolumeCommand::Ls(a) => {
            let volumes = d
                .volumes()
                .list(pb::ListVolumesRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .volumes;
            if a.format.format == Format::Json {
                output::print_json(&serde_json::Value::Array(
                    volumes.iter().map(output::volume).collect(),
                ));
            } else if a.quiet {
                for v in &volumes {
                    println!("{}", v.name);
                }
            } else {
                let rows: Vec<Vec<String>> = volumes
                    .iter()
                    .map(|v| {
                        vec![
                            v.name.clone(),
                            v.used_by
                                .iter()
                                .map(|id| output::short_id(id))
                                .collect::<Vec<_>>()
                                .join(","),
                            v.mountpoint.clone(),
                        ]
                    })
                    .collect();
                output::table(&["VOLUME NAME", "USED BY", "MOUNTPOINT"], &rows);
            }
            Ok(0)
        }
        VolumeCommand::Inspect(a) => {
            let mut docs = Vec::new();
            for name in &a.names {
                let v = d
                    .volumes()
                    .get(pb::GetVolumeRequest { name: name.clone() })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                docs.push(output::volume(&v));
            }
            output::print_json(&serde_json::Value::Array(docs));
            Ok(0)
        }
        VolumeCommand::Rm(a) => {
            let mut failed = false;
            for name in &a.names {
                match d
                    .volumes()
                    .remove(pb::RemoveVolumeRequest { name: name.clone() })
                    .await
                {
                    Ok(_) => println!("{name}"),
                    Err(e) => {
                        eprintln!("berthctl: cannot remove volume {name}: {}", rpc(e));
                        failed = true;
                    }
                }
            }
            Ok(i32::from(failed))
        }
    }
}
