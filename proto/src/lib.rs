//! berth's own gRPC API: the `.proto` files under `proto/berth/v1/` and the
//! code tonic and prost generate from them at build time.
//!
//! Start reading at `proto/berth/v1/version.proto`, then by capability:
//! images (`images.proto`: a pull is the whole path from a reference to
//! snapshots; `content.proto`, `snapshots.proto`), containers and their
//! tasks (`containers.proto`, `tasks.proto`, `volumes.proto`,
//! `events.proto`), networks (`networks.proto`), builds and distribution
//! (`builds.proto`, `distribution.proto`), a container's files as tar
//! streams for cp and export (`files.proto`). `berthctl` uses nothing else; the
//! CRI service speaks Kubernetes' own protos (the `k8s-cri` crate) instead.
//!
//! Clients reach `berth-imaged` on a unix socket: [`connect`] gives a
//! [`tonic::transport::Channel`] any generated client can use.
//! [`chunks::ChunkReader`] reads a streamed tar on a blocking thread, on
//! either side.

pub mod chunks;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("berth.v1");
}

/// The API revision [`v1::VersionResponse::api_revision`] reports.
pub const API_REVISION: u32 = 1;

/// The response header naming the container a `Tasks.Attach` created
/// (`AttachInput.create`, a `run`), on its reply and on a start's error.
pub const CONTAINER_ID_HEADER: &str = "berth-container-id";

/// The default socket of `berth-imaged`.
pub const DEFAULT_SOCKET: &str = "/run/berth/berth.sock";

#[cfg(feature = "client")]
pub use client::connect;

#[cfg(feature = "client")]
mod client {
    use std::path::{Path, PathBuf};

    use hyper_util::rt::TokioIo;
    use tonic::transport::{Channel, Endpoint};

    /// Connects to the daemon's unix socket at `socket`.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Channel, tonic::transport::Error> {
        let socket: PathBuf = socket.as_ref().to_path_buf();
        // The URI is required by the HTTP/2 layer but never resolved: the
        // connector below ignores it and dials the socket.
        Endpoint::from_static("http://berth-imaged.invalid")
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
    }
}
