//! The gRPC services of the daemon's second half: Containers, Tasks,
//! Volumes and Events, over [`Tasks`] (which holds the containers) and the
//! event [`Hub`]. Each error becomes the gRPC status a client can act on.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;
use futures_util::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::containers::{self, ContainerRecord};
use crate::events::Hub;
use crate::networks::{AttachmentRecord, Networks};
use crate::tasks::{self, Tasks};
use crate::volumes::{self, Volumes};
use berth_net::ports::PortMapping;

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Clone)]
pub struct Workloads {
    pub tasks: Arc<Tasks>,
    pub volumes: Volumes,
    pub hub: Hub,
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
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
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
        let request = request.into_inner();
        let settings = request
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        if settings.image.is_empty() {
            return Err(Status::invalid_argument("config.image is required"));
        }
        let restarts = settings
            .restart
            .is_some_and(|r| r.kind != pb::restart_policy::Kind::No as i32);
        if settings.auto_remove && restarts {
            return Err(Status::invalid_argument(
                "auto_remove (--rm) and a restart policy conflict: choose one",
            ));
        }
        let containers = self.tasks.containers.clone();
        let labels = request.labels.into_iter().collect();
        let record = blocking(move || containers.create(&request.name, settings, labels))
            .await?
            .map_err(containers_status)?;
        self.hub.publish(
            "/containers/create",
            "berth.v1.Container",
            prost::Message::encode_to_vec(&container(&record, &self.tasks.containers.networks)),
        );
        Ok(Response::new(container(
            &record,
            &self.tasks.containers.networks,
        )))
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

fn state(record: &ContainerRecord, running: bool) -> pb::TaskState {
    use pb::container::Status as C;
    use pb::task_state::Status as T;
    let status = match (record.status(), running) {
        (C::Paused, true) => T::Paused,
        (_, true) => T::Running,
        (C::Created, false) => T::Created,
        _ => T::Stopped,
    };
    pb::TaskState {
        container_id: record.id.clone(),
        exec_id: String::new(),
        pid: if running { record.state.pid } else { 0 },
        status: status as i32,
        exit_status: record.state.exit_status,
        exited_at: timestamp(record.state.finished_at),
    }
}

#[tonic::async_trait]
impl pb::tasks_server::Tasks for Workloads {
    type LogsStream = Stream_<pb::LogEntry>;
    type AttachStream = Stream_<pb::AttachOutput>;

    async fn start(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        let request = request.into_inner();
        let pid = self
            .tasks
            .start(&request.container_id, &request.exec_id)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::StartTaskResponse { pid }))
    }

    async fn stop(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        let request = request.into_inner();
        let exit_status = self
            .tasks
            .stop(&request.container_id, request.timeout)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::StopTaskResponse { exit_status }))
    }

    async fn kill(
        &self,
        request: Request<pb::KillTaskRequest>,
    ) -> Result<Response<pb::KillTaskResponse>, Status> {
        let r = request.into_inner();
        let signal = if r.signal == 0 {
            libc::SIGKILL as u32
        } else {
            r.signal
        };
        self.tasks
            .kill(&r.container_id, &r.exec_id, signal, r.all)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::KillTaskResponse {}))
    }

    async fn wait(
        &self,
        request: Request<pb::WaitTaskRequest>,
    ) -> Result<Response<pb::WaitTaskResponse>, Status> {
        let r = request.into_inner();
        let exit_status = self
            .tasks
            .wait(&r.container_id, &r.exec_id)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::WaitTaskResponse {
            exit_status,
            exited_at: Some(crate::clock::now_timestamp()),
        }))
    }

    async fn state(
        &self,
        request: Request<pb::TaskStateRequest>,
    ) -> Result<Response<pb::TaskState>, Status> {
        let r = request.into_inner();
        let record = self
            .tasks
            .containers
            .resolve(&r.container_id)
            .map_err(containers_status)?;
        Ok(Response::new(state(
            &record,
            self.tasks.is_running(&record.id),
        )))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        // Tasks are torn down by the daemon when they exit; deleting one
        // that still runs is refused, one that has exited reports its status.
        let r = request.into_inner();
        let record = self
            .tasks
            .containers
            .resolve(&r.container_id)
            .map_err(containers_status)?;
        if self.tasks.is_running(&record.id) && r.exec_id.is_empty() {
            return Err(tasks_status(tasks::Error::Running(record.name)));
        }
        Ok(Response::new(pb::DeleteTaskResponse {
            exit_status: record.state.exit_status,
            exited_at: timestamp(record.state.finished_at),
        }))
    }

    async fn exec(
        &self,
        request: Request<pb::ExecProcessRequest>,
    ) -> Result<Response<pb::ExecProcessResponse>, Status> {
        let r = request.into_inner();
        let exec_id = self
            .tasks
            .exec(&r.container_id, &r)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::ExecProcessResponse { exec_id }))
    }

    async fn resize_pty(
        &self,
        request: Request<pb::ResizePtyRequest>,
    ) -> Result<Response<pb::ResizePtyResponse>, Status> {
        let r = request.into_inner();
        self.tasks
            .resize(&r.container_id, &r.exec_id, r.width, r.height)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::ResizePtyResponse {}))
    }

    async fn close_stdin(
        &self,
        request: Request<pb::CloseStdinRequest>,
    ) -> Result<Response<pb::CloseStdinResponse>, Status> {
        let r = request.into_inner();
        self.tasks
            .close_stdin(&r.container_id, &r.exec_id)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::CloseStdinResponse {}))
    }

    async fn pause(
        &self,
        request: Request<pb::PauseTaskRequest>,
    ) -> Result<Response<pb::PauseTaskResponse>, Status> {
        self.tasks
            .pause(&request.into_inner().container_id)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::PauseTaskResponse {}))
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeTaskRequest>,
    ) -> Result<Response<pb::ResumeTaskResponse>, Status> {
        self.tasks
            .resume(&request.into_inner().container_id)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::ResumeTaskResponse {}))
    }

    async fn pids(
        &self,
        request: Request<pb::PidsRequest>,
    ) -> Result<Response<pb::PidsResponse>, Status> {
        let pids = self
            .tasks
            .pids(&request.into_inner().container_id)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::PidsResponse { pids }))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let stats = self
            .tasks
            .stats(&request.into_inner().container_id)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(stats))
    }

    async fn list(
        &self,
        _: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let records = self.tasks.containers.list().map_err(containers_status)?;
        let tasks = records
            .iter()
            .filter(|r| self.tasks.is_running(&r.id))
            .map(|r| state(r, true))
            .collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = request.into_inner();
        let record = self
            .tasks
            .containers
            .resolve(&r.container_id)
            .map_err(containers_status)?;
        // Subscribed before the file is read: nothing falls in between.
        let (mut live, mut exit) = self.tasks.follow(&record.id);
        let bundle = record.bundle.clone();
        let tail = r.tail as usize;
        let past = blocking(move || crate::logs::read(&bundle, tail)).await?;
        let last = past
            .last()
            .and_then(|e| e.time.as_ref())
            .map(|t| t.seconds as u128 * 1_000_000_000 + t.nanos as u128)
            .unwrap_or(0);
        let (tx, rx) = mpsc::channel(64);
        let follow = r.follow && self.tasks.is_running(&record.id);
        let tasks = self.tasks.clone();
        let id = record.id.clone();
        tokio::spawn(async move {
            for entry in past {
                if tx.send(Ok(entry)).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            let mut ended = 0;
            let streams = if tasks
                .containers
                .resolve(&id)
                .map(|r| r.settings().tty)
                .unwrap_or(false)
            {
                1
            } else {
                2
            };
            loop {
                tokio::select! {
                    chunk = live.recv() => match chunk {
                        Ok(chunk) if chunk.data.is_empty() => {
                            ended += 1;
                            if ended >= streams && exit.borrow().is_some() {
                                return;
                            }
                        }
                        Ok(chunk) if chunk.time > last => {
                            if tx.send(Ok(crate::logs::entry(&chunk))).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    changed = exit.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if exit.borrow().is_some() && ended >= streams {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn attach(
        &self,
        request: Request<Streaming<pb::AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut input = request.into_inner();
        let first = input.message().await?.ok_or_else(|| {
            Status::invalid_argument("attach: the first message names the process")
        })?;
        let tasks::Attached {
            mut output,
            mut exit,
            container_id: id,
            streams,
        } = self
            .tasks
            .attach(&first.container_id, &first.exec_id, first.before_start)
            .map_err(tasks_status)?;
        let exec_id = first.exec_id.clone();
        let waits_for_start = exec_id.is_empty() && !self.tasks.init_alive(&id);
        let tasks = self.tasks.clone();
        let (input_id, input_exec) = (id.clone(), exec_id.clone());
        tokio::spawn(async move {
            let mut next = Some(first);
            loop {
                let Some(message) = next.take() else {
                    match input.message().await {
                        Ok(Some(m)) => {
                            next = Some(m);
                            continue;
                        }
                        _ => break,
                    }
                };
                if !message.stdin.is_empty() {
                    tasks
                        .write_stdin(&input_id, &input_exec, &message.stdin)
                        .await;
                }
                if message.width > 0 && message.height > 0 {
                    let _ = tasks
                        .resize(&input_id, &input_exec, message.width, message.height)
                        .await;
                }
                if message.close_stdin {
                    let _ = tasks.close_stdin(&input_id, &input_exec).await;
                }
            }
        });
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut ended = 0;
            // Attached to the init of a container that is not running: the
            // watch still holds the last run's exit; this client waits for
            // the run it is about to start.
            let mut status: Option<u32> = if waits_for_start {
                None
            } else {
                *exit.borrow()
            };
            let mut drain_until =
                status.map(|_| tokio::time::Instant::now() + Duration::from_secs(2));
            loop {
                tokio::select! {
                    chunk = output.recv() => match chunk {
                        Ok(chunk) if chunk.data.is_empty() => ended += 1,
                        Ok(chunk) => {
                            let message = pb::AttachOutput {
                                stream: chunk.stream as i32,
                                data: chunk.data,
                                exited: false,
                                exit_status: 0,
                            };
                            if tx.send(Ok(message)).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => {
                            // Every writer is gone; the exit may still be
                            // on its way (or already set on a closed watch).
                            if status.is_none() {
                                status = exit.wait_for(|s| s.is_some()).await.ok().and_then(|v| *v);
                            }
                            break;
                        }
                    },
                    changed = exit.changed(), if status.is_none() => {
                        if changed.is_err() {
                            break;
                        }
                        status = *exit.borrow();
                        // The reset at a start is a change too: the drain
                        // clock starts with the exit only.
                        if status.is_some() {
                            drain_until = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                        }
                    }
                    // An end of stream this client subscribed too late to see
                    // must not keep it waiting once the exit is known.
                    _ = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() => {
                        ended = streams;
                    }
                }
                if let Some(code) = status {
                    // Every output stream has ended: the exit is the last message.
                    if ended >= streams {
                        let _ = tx
                            .send(Ok(pb::AttachOutput {
                                stream: 0,
                                data: Vec::new(),
                                exited: true,
                                exit_status: code,
                            }))
                            .await;
                        return;
                    }
                }
            }
            if let Some(code) = status {
                let _ = tx
                    .send(Ok(pb::AttachOutput {
                        exited: true,
                        exit_status: code,
                        ..Default::default()
                    }))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
