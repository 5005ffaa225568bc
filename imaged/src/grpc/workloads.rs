//! The gRPC services of the daemon's second half: Containers, Volumes and
//! Events here, Tasks in [`super::tasks`], all on [`Workloads`]: over
//! [`Tasks`] (which holds the containers) and the event [`Hub`]. Each error
//! becomes the gRPC status a client can act on.

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::v1 as pb;
use futures_util::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::containers::{self, ContainerRecord};
use crate::events::Hub;
use crate::networks::{AttachmentRecord, Networks};
use crate::tasks::{self, Tasks};
use crate::volumes::{self, Volumes};
use berth_net::ports::PortMapping;

pub(super) type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Clone)]
pub struct Workloads {
    pub tasks: Arc<Tasks>,
    pub volumes: Volumes,
    pub hub: Hub,
}

impl Workloads {
    /// Containers.Create, and the create of a `run`'s Attach: the
    /// container as a listing shows it, without its spec (as docker's
    /// create answers only the id; Get has the spec).
    pub async fn create_container(
        &self,
        request: pb::CreateContainerRequest,
    ) -> Result<pb::Container, Status> {
        let settings = request
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        if settings.image.is_empty() {
            return Err(Status::invalid_argument("config.image is required"));
        }
        if settings.auto_remove && crate::tasks::has_restart_policy(&settings) {
            return Err(Status::invalid_argument(
                "auto_remove (--rm) and a restart policy conflict: choose one",
            ));
        }
        let containers = self.tasks.containers.clone();
        let labels = request.labels.into_iter().collect();
        let record = blocking(move || containers.create(&request.name, settings, labels))
            .await?
            .map_err(containers_status)?;
        let attachments = self.tasks.containers.networks.attachments(&record.id);
        let created = listed(&record, &attachments);
        self.hub.publish(
            "/containers/create",
            "berth.v1.Container",
            prost::Message::encode_to_vec(&created),
        );
        Ok(created)
    }
}

pub fn timestamp(secs: u64) -> Option<prost_types::Timestamp> {
    (secs > 0).then_some(prost_types::Timestamp {
        seconds: secs as i64,
        nanos: 0,
    })
}

pub fn containers_status(e: containers::Error) -> Status {
    use containers::Error as E;
    let msg = e.to_string();
    match e {
        E::NotFound(_) | E::ImageNotFound(_) => Status::not_found(msg),
        E::NameInUse { .. } => Status::already_exists(msg),
        E::Ambiguous(_) | E::InvalidName(_) | E::InvalidMount(_) | E::BindSource(_) => {
            Status::invalid_argument(msg)
        }
        // The daemon, not the request, lacks a default seccomp profile.
        E::Bundle(crate::bundle::Error::Seccomp(_)) => Status::failed_precondition(msg),
        E::Bundle(_) => Status::invalid_argument(msg),
        E::Volume(v) => volumes_status(v),
        E::Network(n) => networks_status(n),
        E::InvalidPort(_) => Status::invalid_argument(msg),
        E::NetworkOwnerNotRunning(_) => Status::failed_precondition(msg),
        _ => Status::internal(msg),
    }
}

pub fn networks_status(e: crate::networks::Error) -> Status {
    use crate::networks::Error as E;
    let msg = e.to_string();
    match e {
        E::NotFound(_) => Status::not_found(msg),
        E::Exists(_) => Status::already_exists(msg),
        E::InUse { .. } | E::Predefined(_) | E::NoNamespace(_) | E::Primary(_) => {
            Status::failed_precondition(msg)
        }
        E::Connected { .. } => Status::already_exists(msg),
        E::NotConnected { .. } => Status::not_found(msg),
        E::Network(_) | E::Address(_) | E::Ports(berth_net::ports::Error::Protocol(_)) => {
            Status::invalid_argument(msg)
        }
        // A host port someone else holds: the request cannot be met now.
        E::Ports(_) => Status::failed_precondition(msg),
        _ => Status::internal(msg),
    }
}

pub fn volumes_status(e: volumes::Error) -> Status {
    use volumes::Error as E;
    let msg = e.to_string();
    match e {
        E::NotFound(_) => Status::not_found(msg),
        E::Exists(_) => Status::already_exists(msg),
        E::InvalidName(_) => Status::invalid_argument(msg),
        E::InUse { .. } | E::Claimed(_) => Status::failed_precondition(msg),
        _ => Status::internal(msg),
    }
}

/// A task verb's empty answer, or its error as a status.
pub fn reply<T>(done: Result<(), tasks::Error>, response: T) -> Result<Response<T>, Status> {
    done.map_err(tasks_status)?;
    Ok(Response::new(response))
}

pub fn tasks_status(e: tasks::Error) -> Status {
    use tasks::Error as E;
    let msg = e.to_string();
    match e {
        E::Running(_) | E::NotRunning(_) | E::Paused(_) | E::Starting(_) => {
            Status::failed_precondition(msg)
        }
        E::Invalid(_) => Status::invalid_argument(msg),
        E::Stuck { .. } => Status::deadline_exceeded(msg),
        E::NoExec { .. } => Status::not_found(msg),
        E::ExecExists { .. } => Status::already_exists(msg),
        E::Shim { code, .. } => match code {
            ttrpc::Code::NOT_FOUND => Status::not_found(msg),
            ttrpc::Code::FAILED_PRECONDITION => Status::failed_precondition(msg),
            ttrpc::Code::INVALID_ARGUMENT => Status::invalid_argument(msg),
            ttrpc::Code::ALREADY_EXISTS => Status::already_exists(msg),
            ttrpc::Code::UNIMPLEMENTED => Status::unimplemented(msg),
            ttrpc::Code::UNAVAILABLE => Status::unavailable(msg),
            _ => Status::internal(msg),
        },
        E::Launch(crate::shim::Error::Spawn { .. }) => Status::failed_precondition(msg),
        E::Launch(crate::shim::Error::Connect { .. }) => Status::unavailable(msg),
        E::Launch(_) | E::Stdio { .. } => Status::internal(msg),
        E::Containers(c) => containers_status(c),
    }
}

pub fn container(record: &ContainerRecord, networks: &Networks) -> pb::Container {
    pb::Container {
        spec: std::fs::read(record.bundle.join("config.json")).unwrap_or_default(),
        ..listed(record, &networks.attachments(&record.id))
    }
}

/// A container as a listing shows it: no spec (no bundle file read), its
/// command from the record; `attachments` are its own.
fn listed(record: &ContainerRecord, attachments: &[AttachmentRecord]) -> pb::Container {
    let all: Vec<pb::NetworkSettings> = attachments
        .iter()
        .filter(|a| a.connected)
        .map(network_settings)
        .collect();
    let network_settings = all.first().cloned();
    pb::Container {
        id: record.id.clone(),
        name: record.name.clone(),
        config: Some(record.settings()),
        image_digest: record.image_digest.clone(),
        snapshot_key: record.snapshot_key.clone(),
        bundle: record.bundle.display().to_string(),
        spec: Vec::new(),
        labels: record.labels.clone().into_iter().collect(),
        created: timestamp(record.created),
        status: record.state.status,
        pid: record.state.pid,
        exit_status: record.state.exit_status,
        started_at: timestamp(record.state.started_at),
        finished_at: timestamp(record.state.finished_at),
        restart_count: record.state.restart_count,
        oom_killed: record.state.oom_killed,
        network_settings,
        networks: all,
        command: record.command.clone(),
    }
}

fn network_settings(record: &AttachmentRecord) -> pb::NetworkSettings {
    let a = &record.attachment;
    pb::NetworkSettings {
        network: a.network.clone(),
        ip_address: a.address.clone(),
        ip_prefix_len: u32::from(a.prefix),
        gateway: a.gateway.clone(),
        mac_address: a.mac.clone(),
        ports: a.ports.iter().map(port_mapping).collect(),
        sandbox_key: record.netns.display().to_string(),
    }
}

pub fn port_mapping(m: &PortMapping) -> pb::PortMapping {
    pb::PortMapping {
        host_ip: m.host_ip.clone(),
        host_port: u32::from(m.host_port),
        container_port: u32::from(m.container_port),
        protocol: m.protocol.clone(),
    }
}

fn volume(record: &volumes::VolumeRecord, volumes: &Volumes, users: Vec<String>) -> pb::Volume {
    pb::Volume {
        name: record.name.clone(),
        mountpoint: volumes.path(&record.name).display().to_string(),
        labels: record.labels.clone().into_iter().collect(),
        created: timestamp(record.created),
        used_by: users,
    }
}

/// Blocking store work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl pb::containers_server::Containers for Workloads {
    async fn create(
        &self,
        request: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        Ok(Response::new(
            self.create_container(request.into_inner()).await?,
        ))
    }

    async fn get(
        &self,
        request: Request<pb::GetContainerRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let record = self
            .tasks
            .containers
            .resolve(&request.into_inner().id)
            .map_err(containers_status)?;
        Ok(Response::new(container(
            &record,
            &self.tasks.containers.networks,
        )))
    }

    async fn list(
        &self,
        request: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let all = request.into_inner().all;
        let records = self.tasks.containers.list().map_err(containers_status)?;
        let attachments = self.tasks.containers.networks.attachments_by_container();
        let containers = records
            .iter()
            .filter(|r| {
                all || matches!(
                    r.status(),
                    pb::container::Status::Running
                        | pb::container::Status::Paused
                        | pb::container::Status::Restarting
                )
            })
            .map(|r| {
                let own = attachments.get(&r.id).map_or(&[][..], Vec::as_slice);
                if r.command.is_empty() {
                    // A record from before `command`: the spec says it.
                    container(r, &self.tasks.containers.networks)
                } else {
                    listed(r, own)
                }
            })
            .collect();
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateContainerRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let request = request.into_inner();
        let record = self
            .tasks
            .containers
            .resolve(&request.id)
            .map_err(containers_status)?;
        if let Some(limits) = &request.resources {
            self.tasks
                .update_resources(&record.id, limits)
                .await
                .map_err(tasks_status)?;
        }
        let record = self
            .tasks
            .containers
            .update(&record.id, |r| {
                for (k, v) in &request.labels {
                    r.labels.insert(k.clone(), v.clone());
                }
                if let Some(policy) = &request.restart {
                    let mut settings = r.settings();
                    settings.restart = Some(*policy);
                    r.config = prost::Message::encode_to_vec(&settings);
                }
            })
            .map_err(containers_status)?;
        Ok(Response::new(container(
            &record,
            &self.tasks.containers.networks,
        )))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteContainerRequest>,
    ) -> Result<Response<pb::DeleteContainerResponse>, Status> {
        let request = request.into_inner();
        self.tasks
            .delete_container(&request.id, request.force, request.volumes)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::DeleteContainerResponse {}))
    }

    async fn rename(
        &self,
        request: Request<pb::RenameContainerRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let r = request.into_inner();
        let networks = &self.tasks.containers.networks;
        let record = self
            .tasks
            .containers
            .rename(&r.id, &r.name)
            .map_err(containers_status)?;
        Ok(Response::new(container(&record, networks)))
    }
}

#[tonic::async_trait]
impl pb::volumes_server::Volumes for Workloads {
    async fn create(
        &self,
        request: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let r = request.into_inner();
        let record = self
            .volumes
            .create(&r.name, r.labels.into_iter().collect())
            .map_err(volumes_status)?;
        Ok(Response::new(volume(&record, &self.volumes, Vec::new())))
    }

    async fn get(
        &self,
        request: Request<pb::GetVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let name = request.into_inner().name;
        let record = self.volumes.get(&name).map_err(volumes_status)?;
        let users = self
            .tasks
            .containers
            .volume_users(&name)
            .map_err(containers_status)?;
        Ok(Response::new(volume(&record, &self.volumes, users)))
    }

    async fn list(
        &self,
        _: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let mut volumes = Vec::new();
        for record in self.volumes.list().map_err(volumes_status)? {
            let users = self
                .tasks
                .containers
                .volume_users(&record.name)
                .map_err(containers_status)?;
            volumes.push(volume(&record, &self.volumes, users));
        }
        Ok(Response::new(pb::ListVolumesResponse { volumes }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveVolumeRequest>,
    ) -> Result<Response<pb::RemoveVolumeResponse>, Status> {
        let name = request.into_inner().name;
        let users = self
            .tasks
            .containers
            .volume_users(&name)
            .map_err(containers_status)?;
        let volumes = self.volumes.clone();
        blocking(move || volumes.remove(&name, &users))
            .await?
            .map_err(volumes_status)?;
        Ok(Response::new(pb::RemoveVolumeResponse {}))
    }
}

#[tonic::async_trait]
impl pb::events_server::Events for Workloads {
    type SubscribeStream = Stream_<pb::Envelope>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let topics = request.into_inner().topics;
        let mut events = self.hub.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        let topic = &event.envelope.topic;
                        let wanted = topics.is_empty()
                            || topics.iter().any(|t| topic.starts_with(t.as_str()));
                        if wanted && tx.send(Ok(event.envelope)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
