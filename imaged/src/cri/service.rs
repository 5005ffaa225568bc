//! The CRI v1 RPCs over [`super::Cri`]: each maps a request onto
//! [`super::sandbox`], [`super::container`] or [`super::images`] and
//! their errors onto the gRPC codes kubelet expects.

use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::{container, images, sandbox, Cri};
use crate::streaming::{self, StreamingError, StreamingServer, TokenError};

/// The API version this runtime speaks (CRI v1).
pub const API_VERSION: &str = "v1";

type Reply<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Reply<T> {
    Ok(Response::new(value))
}

/// Both services over one runtime, and the streaming server that answers
/// the URLs `Exec`, `Attach` and `PortForward` hand out.
#[derive(Clone)]
pub struct Service(pub Arc<Cri>, pub Arc<StreamingServer>);

/// Serves the CRI on `listener` until `shutdown` resolves.
pub async fn serve(
    cri: Arc<Cri>,
    streaming: Arc<StreamingServer>,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = Service(cri, streaming);
    tonic::transport::Server::builder()
        .add_service(cri::runtime_service_server::RuntimeServiceServer::new(
            service.clone(),
        ))
        .add_service(cri::image_service_server::ImageServiceServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// A URL could not be made: kubelet's own checks of the request, or too
/// many sessions waiting for their client.
fn streaming_status(e: StreamingError) -> Status {
    match e {
        StreamingError::Invalid(_) => Status::invalid_argument(e.to_string()),
        StreamingError::Token(TokenError::Exhausted(_)) => {
            Status::resource_exhausted(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

impl Service {
    /// Sessions go only to a running container: anything else would fail
    /// later, on the session's error stream, where a client sees less.
    fn must_run(&self, id: &str) -> Result<(), Status> {
        let status = container::status(&self.0, id)?;
        if status.state != cri::ContainerState::ContainerRunning as i32 {
            return Err(Status::failed_precondition(format!(
                "container {id} is not running"
            )));
        }
        Ok(())
    }
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for Service {
    async fn version(&self, _: Request<cri::VersionRequest>) -> Reply<cri::VersionResponse> {
        ok(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "berth".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: API_VERSION.into(),
        })
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Reply<cri::RunPodSandboxResponse> {
        let r = request.into_inner();
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("no pod sandbox config"))?;
        let id = sandbox::run(&self.0, config, &r.runtime_handler).await?;
        ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Reply<cri::StopPodSandboxResponse> {
        sandbox::stop(&self.0, &request.into_inner().pod_sandbox_id).await?;
        ok(cri::StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Reply<cri::RemovePodSandboxResponse> {
        sandbox::remove(&self.0, &request.into_inner().pod_sandbox_id).await?;
        ok(cri::RemovePodSandboxResponse {})
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Reply<cri::PodSandboxStatusResponse> {
        let id = request.into_inner().pod_sandbox_id;
        let pod = sandbox::get(&self.0, &id)?
            .ok_or_else(|| Status::not_found(format!("pod sandbox {id:?} not found")))?;
        ok(cri::PodSandboxStatusResponse {
            status: Some(sandbox::status(&self.0, &pod)),
            info: Default::default(),
            containers_statuses: Vec::new(),
            timestamp: super::now_nanos(),
        })
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Reply<cri::ListPodSandboxResponse> {
        let filter = request.into_inner().filter;
        ok(cri::ListPodSandboxResponse {
            items: sandbox::filtered(&self.0, filter.as_ref())?,
        })
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Reply<cri::CreateContainerResponse> {
        let r = request.into_inner();
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("no container config"))?;
        let id = container::create(&self.0, &r.pod_sandbox_id, config).await?;
        ok(cri::CreateContainerResponse { container_id: id })
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Reply<cri::StartContainerResponse> {
        container::start(&self.0, &request.into_inner().container_id).await?;
        ok(cri::StartContainerResponse {})
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Reply<cri::StopContainerResponse> {
        let r = request.into_inner();
        container::stop(&self.0, &r.container_id, r.timeout).await?;
        ok(cri::StopContainerResponse {})
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Reply<cri::RemoveContainerResponse> {
        container::remove(&self.0, &request.into_inner().container_id).await?;
        ok(cri::RemoveContainerResponse {})
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Reply<cri::ListContainersResponse> {
        let filter = request.into_inner().filter;
        ok(cri::ListContainersResponse {
            containers: container::list(&self.0, filter.as_ref())?,
        })
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Reply<cri::ContainerStatusResponse> {
        let status = container::status(&self.0, &request.into_inner().container_id)?;
        ok(cri::ContainerStatusResponse {
            status: Some(status),
            info: Default::default(),
        })
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Reply<cri::UpdateContainerResourcesResponse> {
        let r = request.into_inner();
        container::update_resources(&self.0, &r.container_id, r.linux).await?;
        ok(cri::UpdateContainerResourcesResponse {})
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Reply<cri::ReopenContainerLogResponse> {
        container::reopen_log(&self.0, &request.into_inner().container_id).await?;
        ok(cri::ReopenContainerLogResponse {})
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Reply<cri::ExecSyncResponse> {
        let r = request.into_inner();
        ok(container::exec_sync(&self.0, &r.container_id, r.cmd, r.timeout).await?)
    }

    async fn exec(&self, request: Request<cri::ExecRequest>) -> Reply<cri::ExecResponse> {
        let r = request.into_inner();
        self.must_run(&r.container_id)?;
        let url = self
            .1
            .exec_url(streaming::ExecRequest {
                container_id: r.container_id,
                cmd: r.cmd,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            })
            .map_err(streaming_status)?;
        ok(cri::ExecResponse { url })
    }

    async fn attach(&self, request: Request<cri::AttachRequest>) -> Reply<cri::AttachResponse> {
        let r = request.into_inner();
        self.must_run(&r.container_id)?;
        let url = self
            .1
            .attach_url(streaming::AttachRequest {
                container_id: r.container_id,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            })
            .map_err(streaming_status)?;
        ok(cri::AttachResponse { url })
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Reply<cri::PortForwardResponse> {
        let r = request.into_inner();
        match sandbox::get(&self.0, &r.pod_sandbox_id)? {
            Some(pod) if pod.ready => {}
            Some(_) => {
                return Err(Status::failed_precondition(format!(
                    "pod sandbox {} is not ready",
                    r.pod_sandbox_id
                )))
            }
            None => {
                return Err(Status::not_found(format!(
                    "pod sandbox {} not found",
                    r.pod_sandbox_id
                )))
            }
        }
        let ports = r
            .port
            .iter()
            .map(|&p| u16::try_from(p).map_err(|_| Status::invalid_argument(format!("port {p}"))))
            .collect::<Result<Vec<u16>, Status>>()?;
        let url = self
            .1
            .port_forward_url(streaming::PortForwardRequest {
                pod_sandbox_id: r.pod_sandbox_id,
                ports,
            })
            .map_err(streaming_status)?;
        ok(cri::PortForwardResponse { url })
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Reply<cri::ContainerStatsResponse> {
        let id = request.into_inner().container_id;
        let record = container::get(&self.0, &id)?
            .ok_or_else(|| Status::not_found(format!("container {id:?} not found")))?;
        ok(cri::ContainerStatsResponse {
            stats: Some(super::stats::container(&self.0, &record).await?),
        })
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Reply<cri::ListContainerStatsResponse> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let mut stats = Vec::new();
        for record in container::list_records(&self.0)? {
            let config = record.config();
            if (!filter.id.is_empty() && !record.id.starts_with(&filter.id))
                || (!filter.pod_sandbox_id.is_empty()
                    && !record.pod_id.starts_with(&filter.pod_sandbox_id))
                || !super::matches_labels(&config.labels, &filter.label_selector)
            {
                continue;
            }
            stats.push(super::stats::container(&self.0, &record).await?);
        }
        ok(cri::ListContainerStatsResponse { stats })
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Reply<cri::PodSandboxStatsResponse> {
        let id = request.into_inner().pod_sandbox_id;
        let pod = sandbox::get(&self.0, &id)?
            .ok_or_else(|| Status::not_found(format!("pod sandbox {id:?} not found")))?;
        ok(cri::PodSandboxStatsResponse {
            stats: Some(super::stats::pod(&self.0, &pod).await?),
        })
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Reply<cri::ListPodSandboxStatsResponse> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let mut stats = Vec::new();
        for pod in sandbox::list(&self.0)? {
            if (!filter.id.is_empty() && !pod.id.starts_with(&filter.id))
                || !super::matches_labels(&pod.config().labels, &filter.label_selector)
            {
                continue;
            }
            stats.push(super::stats::pod(&self.0, &pod).await?);
        }
        ok(cri::ListPodSandboxStatsResponse { stats })
    }

    async fn update_runtime_config(
        &self,
        _: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Reply<cri::UpdateRuntimeConfigResponse> {
        // kubelet sends the pod CIDR; pods take their addresses from the
        // daemon's bridge network instead.
        ok(cri::UpdateRuntimeConfigResponse {})
    }

    async fn status(&self, _: Request<cri::StatusRequest>) -> Reply<cri::StatusResponse> {
        let condition = |kind: &str, status: bool, reason: &str| cri::RuntimeCondition {
            r#type: kind.into(),
            status,
            reason: reason.into(),
            message: String::new(),
        };
        let network = self.0.networks.get(berth_net::network::DEFAULT).is_ok();
        ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    condition("RuntimeReady", true, ""),
                    condition(
                        "NetworkReady",
                        network,
                        if network { "" } else { "NoBridgeNetwork" },
                    ),
                ],
            }),
            info: Default::default(),
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: true,
                    user_namespaces: true,
                }),
            }],
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        })
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Reply<cri::CheckpointContainerResponse> {
        Err(Status::unimplemented(
            "checkpointing is not supported (criu cannot checkpoint on this kernel)",
        ))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        // Events from now on; a subscriber that falls behind misses some
        // (kubelet then relists, as with containerd).
        let receiver = self.0.events.subscribe();
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(event) => return Some((Ok(event), receiver)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        ok(Box::pin(stream) as EventStream)
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Reply<cri::ListMetricDescriptorsResponse> {
        ok(cri::ListMetricDescriptorsResponse {
            descriptors: Vec::new(),
        })
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Reply<cri::ListPodSandboxMetricsResponse> {
        ok(cri::ListPodSandboxMetricsResponse {
            pod_metrics: Vec::new(),
        })
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Reply<cri::RuntimeConfigResponse> {
        // berth writes cgroupfs paths (`<cgroup parent>/<id>`), not systemd units.
        ok(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        })
    }
}

#[tonic::async_trait]
impl ImageService for Service {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Reply<cri::ListImagesResponse> {
        let wanted = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .unwrap_or_default();
        let mut all = images::list(&self.0)?;
        if !wanted.is_empty() {
            let id = images::find(&self.0, &wanted)
                .map(|r| r.config.digest().to_string())
                .unwrap_or_default();
            all.retain(|i| i.id == id);
        }
        ok(cri::ListImagesResponse { images: all })
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Reply<cri::ImageStatusResponse> {
        let wanted = request
            .into_inner()
            .image
            .map(|i| i.image)
            .unwrap_or_default();
        // An image that is not there is an empty answer, not an error.
        let image = match images::find(&self.0, &wanted) {
            Ok(record) => Some(images::status(&self.0, &record)?),
            Err(super::Error::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        ok(cri::ImageStatusResponse {
            image,
            info: Default::default(),
        })
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Reply<cri::PullImageResponse> {
        let r = request.into_inner();
        let wanted = r.image.map(|i| i.image).unwrap_or_default();
        if wanted.is_empty() {
            return Err(Status::invalid_argument("no image to pull"));
        }
        let auth = images::credentials(r.auth.as_ref())?;
        let id = images::pull(&self.0, &wanted, auth).await?;
        ok(cri::PullImageResponse { image_ref: id })
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Reply<cri::RemoveImageResponse> {
        let wanted = request
            .into_inner()
            .image
            .map(|i| i.image)
            .unwrap_or_default();
        images::remove(&self.0, &wanted).await?;
        ok(cri::RemoveImageResponse {})
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Reply<cri::ImageFsInfoResponse> {
        let dir = self.0.snapshots_dir();
        let usage = |path: std::path::PathBuf| {
            let walked = tokio::task::spawn_blocking(move || disk_usage(&path));
            async move { walked.await.unwrap_or_default() }
        };
        let (bytes, inodes) = usage(dir.clone()).await;
        let now = super::now_nanos();
        let fs = cri::FilesystemUsage {
            timestamp: now,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: dir.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        };
        ok(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        })
    }
}

/// Bytes (allocated) and inodes under `dir`, each inode counted once.
fn disk_usage(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let (mut bytes, mut inodes) = (0u64, 0u64);
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        bytes += meta.blocks() * 512;
        inodes += 1;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    (bytes, inodes)
}
