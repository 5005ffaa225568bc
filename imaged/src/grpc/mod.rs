//! berth-imaged's gRPC adapters: each module translates one group of
//! `berth-proto`'s services into calls on the daemon's pieces and their
//! errors into the statuses a client can act on; [`serve`] puts them all on
//! the daemon's socket. (The CRI's adapter is `crate::cri::service`; the
//! build and distribution services sit beside what they adapt, in
//! `crate::build::service` and `crate::distribution::service`.)
//!
//! - [`images`]: Version, Images, Content, Snapshots.
//! - [`workloads`]: Containers, Volumes, Events (and [`workloads::Workloads`], the
//!   state the workload services share);
//! - [`tasks`]: Tasks (processes, logs, attach).
//! - [`networks`]: the Networks service.

pub mod images;
pub mod networks;
pub mod tasks;
pub mod workloads;

use berth_proto::v1 as pb;

/// Serves every service on `listener` until `shutdown` resolves.
pub async fn serve(
    service: images::Service,
    workloads: workloads::Workloads,
    builds: crate::build::service::Service,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let distribution = crate::distribution::service::Service(service.images.clone());
    let files = crate::files::Files {
        tasks: workloads.tasks.clone(),
    };
    tonic::transport::Server::builder()
        .add_service(pb::version_server::VersionServer::new(service.clone()))
        .add_service(pb::images_server::ImagesServer::new(service.clone()))
        .add_service(pb::content_server::ContentServer::new(service.clone()))
        .add_service(pb::snapshots_server::SnapshotsServer::new(service))
        .add_service(pb::containers_server::ContainersServer::new(
            workloads.clone(),
        ))
        .add_service(pb::tasks_server::TasksServer::new(workloads.clone()))
        .add_service(pb::volumes_server::VolumesServer::new(workloads.clone()))
        .add_service(pb::networks_server::NetworksServer::new(workloads.clone()))
        .add_service(pb::events_server::EventsServer::new(workloads))
        .add_service(pb::files_server::FilesServer::new(files))
        .add_service(pb::builds_server::BuildsServer::new(builds))
        .add_service(pb::distribution_server::DistributionServer::new(
            distribution,
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
}
