//! The image side of `berth-proto`'s gRPC API, over [`Images`], the content
//! store and the snapshotter: Version, Images (pull, list, get, remove,
//! import, export), Content, Snapshots.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use berth_proto::v1 as pb;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use crate::archive;
use crate::content::{self, Digest};
use crate::images::{self, Images, Progress};
use crate::registry;
use crate::snapshots;

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn timestamp(secs: u64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: secs as i64,
        nanos: 0,
    })
}

fn images_status(e: images::Error) -> Status {
    let msg = e.to_string();
    match e {
        images::Error::NotFound(_) | images::Error::Registry(registry::Error::NotFound { .. }) => {
            Status::not_found(msg)
        }
        images::Error::Registry(registry::Error::Auth { .. }) => Status::unauthenticated(msg),
        images::Error::Registry(registry::Error::Reference { .. }) => Status::invalid_argument(msg),
        images::Error::Content(e) => content_status(e),
        images::Error::Snapshot(e) => snapshot_status(e),
        images::Error::NoPlatform { .. } => Status::not_found(msg),
        images::Error::Registry(registry::Error::Stalled { .. }) => Status::unavailable(msg),
        images::Error::TooManyLayers { .. }
        | images::Error::SizeMismatch { .. }
        | images::Error::Registry(registry::Error::TooLarge { .. }) => {
            Status::failed_precondition(msg)
        }
        _ => Status::internal(msg),
    }
}

fn content_status(e: content::Error) -> Status {
    let msg = e.to_string();
    match e {
        content::Error::NotFound(_) => Status::not_found(msg),
        content::Error::InvalidDigest(_) => Status::invalid_argument(msg),
        content::Error::Mismatch { .. } => Status::data_loss(msg),
        content::Error::Busy(_) => Status::unavailable(msg),
        content::Error::Io { .. } => Status::internal(msg),
    }
}

fn snapshot_status(e: snapshots::Error) -> Status {
    let msg = e.to_string();
    match e {
        snapshots::Error::NotFound(_) => Status::not_found(msg),
        snapshots::Error::AlreadyExists(_) => Status::already_exists(msg),
        snapshots::Error::ParentNotCommitted { .. }
        | snapshots::Error::NotActive { .. }
        | snapshots::Error::HasChildren { .. } => Status::failed_precondition(msg),
        _ => Status::internal(msg),
    }
}

fn descriptor(d: &images::Descriptor) -> pb::Descriptor {
    pb::Descriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        annotations: d
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    }
}

fn image(r: &images::ImageRecord) -> pb::Image {
    pb::Image {
        name: r.name.clone(),
        target: Some(descriptor(&r.target)),
        manifest: Some(descriptor(&r.manifest)),
        config: Some(descriptor(&r.config)),
        platform: Some(pb::Platform {
            os: r.platform.os().to_string(),
            architecture: r.platform.architecture().to_string(),
            variant: r.platform.variant().clone().unwrap_or_default(),
        }),
        chain_id: r.chain_id().unwrap_or_default().to_string(),
        size: r.size,
        created: timestamp(r.created),
        labels: Default::default(),
    }
}

fn progress(p: Progress) -> pb::PullProgress {
    use pb::pull_progress::Phase;
    let mut out = pb::PullProgress::default();
    let (phase, digest) = match p {
        Progress::Resolving => (Phase::Resolving, String::new()),
        Progress::Resolved { digest, media_type } => {
            out.media_type = media_type;
            (Phase::Resolved, digest)
        }
        Progress::Downloading {
            digest,
            offset,
            total,
        } => {
            out.offset = offset as i64;
            out.total = total as i64;
            (Phase::Downloading, digest)
        }
        Progress::Verified { digest } => (Phase::Verified, digest),
        Progress::Unpacked { digest } => (Phase::Unpacked, digest),
        Progress::AlreadyExists { digest } => (Phase::AlreadyExists, digest),
        Progress::Done(record) => {
            out.image = Some(image(&record));
            (Phase::Done, String::new())
        }
    };
    out.phase = phase as i32;
    out.digest = digest;
    out
}

/// Gives the heap's free pages back to the kernel. A pull's buffers
/// (decompressor windows, channels) are freed on tokio's blocking threads,
/// whose glibc arenas otherwise keep them: tens of MB held by a daemon that
/// idles most of its life.
fn release_memory() {
    // SAFETY: malloc_trim only returns free memory; it cannot fail unsafely.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The daemon's services; cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    pub images: Arc<Images>,
    /// Scratch space for archives being imported (emptied at start-up).
    pub tmp: std::path::PathBuf,
}

fn archive_status(e: archive::Error) -> Status {
    match e {
        archive::Error::Images(e) => images_status(e),
        archive::Error::Content(e) => content_status(e),
        e @ archive::Error::Archive(_) => Status::invalid_argument(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

/// Sends what the tar writer produces as export chunks.
struct ChunkWriter {
    tx: mpsc::Sender<Result<pb::ExportChunk, Status>>,
    buf: Vec<u8>,
}

const EXPORT_CHUNK: usize = 256 << 10;

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(Ok(pb::ExportChunk { data }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

#[tonic::async_trait]
impl pb::version_server::Version for Service {
    async fn version(
        &self,
        _: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_revision: berth_proto::API_REVISION,
        }))
    }

    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        Ok(Response::new(pb::HealthResponse { serving: true }))
    }
}

#[tonic::async_trait]
impl pb::images_server::Images for Service {
    type PullStream = Stream_<pb::PullProgress>;

    async fn pull(
        &self,
        request: Request<pb::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let req = request.into_inner();
        let platform = match req.platform {
            Some(p) if !p.os.is_empty() || !p.architecture.is_empty() => {
                let os = if p.os.is_empty() { "linux" } else { &p.os };
                images::platform(os, &p.architecture, &p.variant)
            }
            _ => images::host_platform(),
        };
        let auth = crate::distribution::service::credentials(req.auth);
        let (tx, rx) = mpsc::unbounded_channel::<Result<pb::PullProgress, Status>>();
        let (ptx, mut prx) = mpsc::unbounded_channel::<Progress>();
        let images = self.images.clone();
        let forward = tx.clone();
        tokio::spawn(async move {
            while let Some(p) = prx.recv().await {
                let _ = forward.send(Ok(progress(p)));
            }
        });
        // A pull no client waits for any more (`berthctl pull` killed) is
        // dropped: its downloads stop and their connections close. What it
        // downloaded stays in its ingests, for the next pull to resume.
        tokio::spawn(async move {
            let pull = images.pull(&req.reference, &platform, auth, !req.skip_unpack, ptx);
            let result = tokio::select! {
                result = pull => Some(result),
                _ = tx.closed() => None,
            };
            release_memory();
            if let Some(Err(e)) = result {
                let _ = tx.send(Err(images_status(e)));
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn list(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let prefix = request.into_inner().prefix;
        let images = self.images.list().map_err(images_status)?;
        Ok(Response::new(pb::ListImagesResponse {
            images: images
                .iter()
                .filter(|r| r.name.starts_with(&prefix))
                .map(image)
                .collect(),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::Image>, Status> {
        let record = self
            .images
            .get(&request.into_inner().name)
            .map_err(images_status)?;
        Ok(Response::new(image(&record)))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let name = request.into_inner().name;
        let images = self.images.clone();
        let (blobs, snapshots) = tokio::task::spawn_blocking(move || images.remove(&name))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(images_status)?;
        Ok(Response::new(pb::RemoveImageResponse {
            removed_blobs: blobs,
            removed_snapshots: snapshots,
        }))
    }

    async fn import(
        &self,
        request: Request<tonic::Streaming<pb::ImportChunk>>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        use tokio::io::AsyncWriteExt;
        static IMPORTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = IMPORTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = self.tmp.join(format!("import-{n}.tar"));
        let internal = |e: std::io::Error| Status::internal(format!("{}: {e}", path.display()));
        let mut file = tokio::fs::File::create(&path).await.map_err(internal)?;
        let mut stream = request.into_inner();
        let mut name = None;
        let received = async {
            while let Some(chunk) = stream.message().await? {
                if name.is_none() && !chunk.name.is_empty() {
                    name = Some(chunk.name);
                }
                file.write_all(&chunk.data).await.map_err(internal)?;
            }
            file.flush().await.map_err(internal)?;
            Ok::<_, Status>(())
        }
        .await;
        drop(file);
        let result = match received {
            Ok(()) => {
                let (ptx, _prx) = mpsc::unbounded_channel();
                archive::import(&self.images, &path, name, &images::host_platform(), ptx)
                    .await
                    .map_err(archive_status)
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&path).await;
        release_memory();
        Ok(Response::new(pb::ImportResponse {
            images: result?.iter().map(image).collect(),
        }))
    }

    type ExportStream = Stream_<pb::ExportChunk>;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let names = request.into_inner().names;
        if names.is_empty() {
            return Err(Status::invalid_argument(
                "export needs at least one image name",
            ));
        }
        // Unknown names fail the call, not the middle of the stream.
        for name in &names {
            self.images.get(name).map_err(images_status)?;
        }
        let (tx, rx) = mpsc::channel(4);
        let images = self.images.clone();
        tokio::task::spawn_blocking(move || {
            let writer = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::new(),
            };
            if let Err(e) = archive::export(&images, &names, writer) {
                let _ = tx.blocking_send(Err(archive_status(e)));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn parse_digest(s: &str) -> Result<Digest, Status> {
    Digest::parse(s).map_err(content_status)
}

fn content_info(info: content::Info) -> pb::ContentInfo {
    let secs = info
        .created
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    pb::ContentInfo {
        digest: info.digest.to_string(),
        size: info.size as i64,
        created: timestamp(secs),
        labels: Default::default(),
    }
}

#[tonic::async_trait]
impl pb::content_server::Content for Service {
    async fn info(
        &self,
        request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::ContentInfo>, Status> {
        let digest = parse_digest(&request.into_inner().digest)?;
        let info = self.images.content.info(&digest).map_err(content_status)?;
        Ok(Response::new(content_info(info)))
    }

    async fn list(
        &self,
        _: Request<pb::ListContentRequest>,
    ) -> Result<Response<pb::ListContentResponse>, Status> {
        let blobs = self.images.content.list().map_err(content_status)?;
        Ok(Response::new(pb::ListContentResponse {
            blobs: blobs.into_iter().map(content_info).collect(),
        }))
    }

    type ReadStream = Stream_<pb::ReadContentResponse>;

    async fn read(
        &self,
        request: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use std::io::{Read, Seek};
        let req = request.into_inner();
        let digest = parse_digest(&req.digest)?;
        let mut file = self
            .images
            .content
            .open_blob(&digest)
            .map_err(content_status)?;
        let offset = req.offset.max(0) as u64;
        file.seek(std::io::SeekFrom::Start(offset))
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut left = if req.size > 0 {
            req.size as u64
        } else {
            u64::MAX
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut at = offset;
            let mut buf = vec![0u8; 1 << 16];
            while left > 0 {
                let want = buf.len().min(left.min(usize::MAX as u64) as usize);
                match file.read(&mut buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => {
                        let chunk = pb::ReadContentResponse {
                            offset: at as i64,
                            data: buf[..n].to_vec(),
                        };
                        if tx.blocking_send(Ok(chunk)).is_err() {
                            break;
                        }
                        at += n as u64;
                        left -= n as u64;
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteContentRequest>,
    ) -> Result<Response<pb::DeleteContentResponse>, Status> {
        let digest = parse_digest(&request.into_inner().digest)?;
        self.images
            .content
            .delete(&digest)
            .map_err(content_status)?;
        Ok(Response::new(pb::DeleteContentResponse {}))
    }

    async fn list_ingests(
        &self,
        _: Request<pb::ListIngestsRequest>,
    ) -> Result<Response<pb::ListIngestsResponse>, Status> {
        let ingests = self.images.content.ingests().map_err(content_status)?;
        Ok(Response::new(pb::ListIngestsResponse {
            ingests: ingests
                .into_iter()
                .map(|i| pb::Ingest {
                    expected: i
                        .reference
                        .strip_prefix("layer-")
                        .unwrap_or(&i.reference)
                        .to_string(),
                    r#ref: i.reference,
                    offset: i.offset as i64,
                    total: i.total as i64,
                })
                .collect(),
        }))
    }
}

fn mounts(m: Vec<snapshots::Mount>) -> pb::MountsResponse {
    pb::MountsResponse {
        mounts: m
            .into_iter()
            .map(|m| pb::Mount {
                r#type: m.kind,
                source: m.source,
                options: m.options,
                workdir_base: m
                    .base
                    .as_deref()
                    .map(Path::to_string_lossy)
                    .unwrap_or_default()
                    .into_owned(),
            })
            .collect(),
    }
}

fn parent(p: &str) -> Option<&str> {
    (!p.is_empty()).then_some(p)
}

fn labels(l: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    l.into_iter().collect()
}

fn snapshot_info(key: String, r: snapshots::Record) -> pb::SnapshotInfo {
    use pb::snapshot_info::Kind;
    pb::SnapshotInfo {
        name: key,
        parent: r.parent.unwrap_or_default(),
        kind: match r.kind {
            snapshots::Kind::View => Kind::View,
            snapshots::Kind::Active => Kind::Active,
            snapshots::Kind::Committed => Kind::Committed,
        } as i32,
        created: timestamp(r.created),
        labels: r.labels.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl pb::snapshots_server::Snapshots for Service {
    async fn prepare(
        &self,
        request: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let req = request.into_inner();
        let m = self
            .images
            .snapshots
            .prepare(&req.key, parent(&req.parent), labels(req.labels))
            .map_err(snapshot_status)?;
        Ok(Response::new(mounts(m)))
    }

    async fn view(
        &self,
        request: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let req = request.into_inner();
        let m = self
            .images
            .snapshots
            .view(&req.key, parent(&req.parent), labels(req.labels))
            .map_err(snapshot_status)?;
        Ok(Response::new(mounts(m)))
    }

    async fn mounts(
        &self,
        request: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let m = self
            .images
            .snapshots
            .mounts(&request.into_inner().key)
            .map_err(snapshot_status)?;
        Ok(Response::new(mounts(m)))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<pb::CommitSnapshotResponse>, Status> {
        let req = request.into_inner();
        self.images
            .snapshots
            .commit(&req.name, &req.key, labels(req.labels))
            .map_err(snapshot_status)?;
        Ok(Response::new(pb::CommitSnapshotResponse {}))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<pb::RemoveSnapshotResponse>, Status> {
        let key = request.into_inner().key;
        let snapshots = self.images.snapshots.clone();
        tokio::task::spawn_blocking(move || snapshots.remove(&key))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(snapshot_status)?;
        Ok(Response::new(pb::RemoveSnapshotResponse {}))
    }

    async fn stat(
        &self,
        request: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let key = request.into_inner().key;
        let record = self.images.snapshots.stat(&key).map_err(snapshot_status)?;
        Ok(Response::new(snapshot_info(key, record)))
    }

    async fn list(
        &self,
        _: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let all = self.images.snapshots.list().map_err(snapshot_status)?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: all.into_iter().map(|(k, r)| snapshot_info(k, r)).collect(),
        }))
    }

    async fn usage(
        &self,
        request: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let key = request.into_inner().key;
        let snapshots = self.images.snapshots.clone();
        let usage = tokio::task::spawn_blocking(move || snapshots.usage(&key))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(snapshot_status)?;
        Ok(Response::new(pb::UsageResponse {
            size: usage.size as i64,
            inodes: usage.inodes as i64,
        }))
    }
}
