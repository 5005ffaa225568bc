//! The connection to `berth-imaged` and the error a person sees when it
//! fails: which socket was tried and how to start the daemon. Also turns
//! a gRPC status into its message (the daemon's messages are written for
//! people; the code is for [`crate::exit`]).

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use berth_proto::v1 as pb;
use tonic::transport::Channel;

/// A connected daemon; every client shares the one channel.
pub struct Daemon {
    pub channel: Channel,
    pub address: PathBuf,
}

pub async fn connect(address: &Path) -> anyhow::Result<Daemon> {
    let hint = || {
        format!(
            "is berth-imaged running? Start it as root with `berth-imaged` (or `berth-imaged --socket {}`), or point --address / BERTH_ADDRESS at its socket",
            address.display()
        )
    };
    if !address.exists() {
        return Err(anyhow!(
            "cannot connect to berth-imaged at {}: no such socket ({})",
            address.display(),
            hint()
        ));
    }
    let channel = berth_proto::connect(address).await.map_err(|e| {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        anyhow!(
            "cannot connect to berth-imaged at {}: {detail} ({})",
            address.display(),
            hint()
        )
    })?;
    Ok(Daemon {
        channel,
        address: address.to_path_buf(),
    })
}

impl Daemon {
    pub fn images(&self) -> pb::images_client::ImagesClient<Channel> {
        pb::images_client::ImagesClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    pub fn containers(&self) -> pb::containers_client::ContainersClient<Channel> {
        pb::containers_client::ContainersClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    pub fn tasks(&self) -> pb::tasks_client::TasksClient<Channel> {
        pb::tasks_client::TasksClient::new(self.channel.clone())
    }

    pub fn volumes(&self) -> pb::volumes_client::VolumesClient<Channel> {
        pb::volumes_client::VolumesClient::new(self.channel.clone())
    }

    pub fn networks(&self) -> pb::networks_client::NetworksClient<Channel> {
        pb::networks_client::NetworksClient::new(self.channel.clone())
    }

    pub fn snapshots(&self) -> pb::snapshots_client::SnapshotsClient<Channel> {
        pb::snapshots_client::SnapshotsClient::new(self.channel.clone())
    }

    pub fn events(&self) -> pb::events_client::EventsClient<Channel> {
        pb::events_client::EventsClient::new(self.channel.clone())
    }

    pub fn builds(&self) -> pb::builds_client::BuildsClient<Channel> {
        pb::builds_client::BuildsClient::new(self.channel.clone())
    }

    pub fn distribution(&self) -> pb::distribution_client::DistributionClient<Channel> {
        pb::distribution_client::DistributionClient::new(self.channel.clone())
    }

    pub fn files(&self) -> pb::files_client::FilesClient<Channel> {
        pb::files_client::FilesClient::new(self.channel.clone())
    }

    pub fn version(&self) -> pb::version_client::VersionClient<Channel> {
        pb::version_client::VersionClient::new(self.channel.clone())
    }
}

/// A failed call, as the error the user reads: the daemon's message (it
/// names the object and what to do), or what happened to the connection.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    pub code: tonic::Code,
    pub message: String,
}

pub fn rpc(status: tonic::Status) -> anyhow::Error {
    let message = match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown if status.message().is_empty() => {
            "berth-imaged closed the connection (did it stop?)".to_string()
        }
        tonic::Code::Unavailable => format!(
            "berth-imaged is unavailable: {} (did it stop?)",
            status.message()
        ),
        _ => status.message().to_string(),
    };
    RpcError {
        code: status.code(),
        message,
    }
    .into()
}
