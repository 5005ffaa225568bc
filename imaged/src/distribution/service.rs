//! The `Distribution` gRPC service over [`super`].

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::v1 as pb;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use crate::images::{self, Images};
use crate::registry::Credentials;

/// The service; cheap to clone.
#[derive(Clone)]
pub struct Service(pub Arc<Images>);

/// The credentials a request carries (a token, or a username and
/// password), if any.
pub(crate) fn credentials(auth: Option<pb::RegistryAuth>) -> Option<Credentials> {
    let a = auth?;
    if !a.token.is_empty() {
        Some(Credentials::Token(a.token))
    } else if !a.username.is_empty() {
        Some(Credentials::Basic {
            username: a.username,
            password: a.password,
        })
    } else {
        None
    }
}

fn not_found_or(e: images::Error) -> Status {
    match e {
        images::Error::NotFound(_) => Status::not_found(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

type PushStream = Pin<Box<dyn Stream<Item = Result<pb::PushProgress, Status>> + Send>>;

#[tonic::async_trait]
impl pb::distribution_server::Distribution for Service {
    async fn tag(
        &self,
        request: Request<pb::TagRequest>,
    ) -> Result<Response<pb::TagResponse>, Status> {
        let r = request.into_inner();
        let name = super::tag(&self.0, &r.source, &r.target).map_err(Status::invalid_argument)?;
        Ok(Response::new(pb::TagResponse { name }))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let (id, entries) =
            super::history(&self.0, &request.into_inner().name).map_err(not_found_or)?;
        let entries = entries
            .into_iter()
            .enumerate()
            .map(|(n, e)| pb::HistoryEntry {
                id: if n == 0 { id.clone() } else { String::new() },
                created: e.created,
                created_by: e.created_by,
                size: e.size,
                empty_layer: e.empty_layer,
                comment: e.comment,
            })
            .collect();
        Ok(Response::new(pb::HistoryResponse { entries }))
    }

    type PushStream = PushStream;

    async fn push(
        &self,
        request: Request<pb::PushRequest>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let r = request.into_inner();
        // Said before anything streams: an unknown image is a plain error.
        self.0.get(&r.name).map_err(not_found_or)?;
        let (tx, rx) = mpsc::unbounded_channel::<Result<pb::PushProgress, Status>>();
        let images = self.0.clone();
        tokio::spawn(async move {
            let (stx, mut srx) = mpsc::unbounded_channel::<super::push::Step>();
            let forward = tx.clone();
            let forwarder = tokio::spawn(async move {
                while let Some(s) = srx.recv().await {
                    let _ = forward.send(Ok(pb::PushProgress {
                        digest: s.digest,
                        status: s.status.to_string(),
                        from: s.from,
                        size: s.size,
                        manifest_digest: s.manifest_digest,
                    }));
                }
            });
            let result = super::push::push(&images, &r.name, credentials(r.auth), stx).await;
            let _ = forwarder.await;
            if let Err(e) = result {
                let msg = e.to_string();
                let _ = tx.send(Err(match e {
                    super::push::Error::Unauthorized { .. } => Status::unauthenticated(msg),
                    super::push::Error::Images(images::Error::NotFound(_)) => {
                        Status::not_found(msg)
                    }
                    _ => Status::failed_precondition(msg),
                }));
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let r = request.into_inner();
        let credentials = credentials(r.auth)
            .ok_or_else(|| Status::invalid_argument("login needs a username and password"))?;
        super::login(&self.0.registry, &r.registry, credentials)
            .await
            .map_err(Status::unauthenticated)?;
        Ok(Response::new(pb::LoginResponse {}))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let r = request.into_inner();
        if r.registry.is_empty() {
            return Err(Status::invalid_argument(
                "search needs a registry: berthctl search REGISTRY/TERM (Docker Hub's search is not offered)",
            ));
        }
        let limit = if r.limit == 0 { 25 } else { r.limit as usize };
        let names = super::search(
            &self.0.registry,
            &r.registry,
            &r.term,
            credentials(r.auth),
            limit,
        )
        .await
        .map_err(Status::unavailable)?;
        Ok(Response::new(pb::SearchResponse { names }))
    }
}
