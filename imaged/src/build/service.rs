//! The `Builds` gRPC service: receives the options and the context tar,
//! runs [`Builds::build`], streams its output back.

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::v1 as pb;
use futures_util::Stream;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use super::{Builds, Error, Options};

/// The service; cheap to clone.
#[derive(Clone)]
pub struct Service(pub Arc<Builds>);

fn status(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::Syntax { .. } | Error::Invalid(_) => Status::invalid_argument(msg),
        Error::Step { .. } | Error::RunFailed { .. } => Status::failed_precondition(msg),
        Error::Cancelled { .. } => Status::cancelled(msg),
        Error::Internal(_) => Status::internal(msg),
    }
}

/// Receives a stream whose first message carries options and every
/// message bytes of a file, into a scratch file of the build service.
/// Returns the file's path (the caller removes it) and the options.
async fn receive<M, O>(
    builds: &Builds,
    what: &str,
    mut stream: tonic::Streaming<M>,
    split: impl Fn(M) -> (Option<O>, Vec<u8>),
) -> Result<(std::path::PathBuf, O), Status> {
    let dir = builds.dir.join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("{what}-{}.tar", crate::volumes::random_hex(8)));
    let internal = |e: std::io::Error| Status::internal(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::File::create(&path).await.map_err(internal)?;
    let mut options = None;
    let received = async {
        while let Some(message) = stream.message().await? {
            let (o, data) = split(message);
            if options.is_none() {
                options = o;
            }
            file.write_all(&data).await.map_err(internal)?;
        }
        file.flush().await.map_err(internal)?;
        Ok::<_, Status>(())
    }
    .await;
    drop(file);
    match (received, options) {
        (Ok(()), Some(o)) => Ok((path, o)),
        (Err(e), _) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
        (Ok(()), None) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(Status::invalid_argument(format!(
                "{what}: the first message carries the options"
            )))
        }
    }
}

type Progress = Pin<Box<dyn Stream<Item = Result<pb::BuildProgress, Status>> + Send>>;

#[tonic::async_trait]
impl pb::builds_server::Builds for Service {
    type BuildStream = Progress;

    async fn build(
        &self,
        request: Request<tonic::Streaming<pb::BuildRequest>>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let (path, o) = receive(&self.0, "context", request.into_inner(), |m| {
            (m.options, m.context)
        })
        .await?;
        let options = Options {
            dockerfile: o.dockerfile,
            dockerfile_name: if o.dockerfile_name.is_empty() {
                "Dockerfile".into()
            } else {
                o.dockerfile_name
            },
            tags: o.tags,
            build_args: o.build_args.into_iter().collect(),
            target: o.target,
            no_cache: o.no_cache,
            labels: o.labels.into_iter().collect(),
        };
        let (tx, rx) = mpsc::unbounded_channel::<Result<pb::BuildProgress, Status>>();
        let builds = self.0.clone();
        tokio::spawn(async move {
            let (otx, mut orx) = mpsc::unbounded_channel::<String>();
            let forward = tx.clone();
            // When the client goes (tonic drops the response stream), the
            // forwarder drops `orx`: the build sees its output channel
            // closed and cancels, killing a running step.
            let forwarder = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        output = orx.recv() => {
                            let Some(output) = output else { break };
                            let progress = pb::BuildProgress {
                                output,
                                image_id: String::new(),
                            };
                            if forward.send(Ok(progress)).is_err() {
                                break;
                            }
                        }
                        () = forward.closed() => break,
                    }
                }
            });
            let result = builds.build(&options, &path, otx).await;
            let _ = forwarder.await;
            let _ = tokio::fs::remove_file(&path).await;
            let _ = tx.send(match result {
                Ok(image_id) => Ok(pb::BuildProgress {
                    output: String::new(),
                    image_id,
                }),
                Err(e) => Err(status(e)),
            });
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn import(
        &self,
        request: Request<tonic::Streaming<pb::ImportRootfsRequest>>,
    ) -> Result<Response<pb::ImportRootfsResponse>, Status> {
        let (path, o) = receive(&self.0, "import", request.into_inner(), |m| {
            (m.options, m.data)
        })
        .await?;
        let imported = super::import::import(&self.0, &path, &o.name, &o.changes, &o.message).await;
        let _ = tokio::fs::remove_file(&path).await;
        Ok(Response::new(pb::ImportRootfsResponse {
            image_id: imported.map_err(status)?,
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let r = request.into_inner();
        let image_id =
            super::changes::commit(&self.0, &r.container, &r.name, &r.message, &r.author)
                .await
                .map_err(status)?;
        Ok(Response::new(pb::CommitResponse { image_id }))
    }

    async fn diff(
        &self,
        request: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let builds = self.0.clone();
        let container = request.into_inner().container;
        let changes =
            tokio::task::spawn_blocking(move || super::changes::diff(&builds, &container))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(status)?;
        Ok(Response::new(pb::DiffResponse {
            changes: changes
                .into_iter()
                .map(|c| pb::Change {
                    kind: c.kind.to_string(),
                    path: c.path,
                })
                .collect(),
        }))
    }
}
