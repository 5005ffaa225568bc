//! Events: the ttrpc endpoint shims publish to (`TTRPC_ADDRESS`, containerd's
//! `containerd.services.events.ttrpc.v1.Events/Forward`), and the hub that
//! fans every event out to gRPC subscribers and to the daemon's own
//! watchers (task exits, OOM kills).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use berth_proto::v1 as pb;
use containerd_shim_protos::events::task::{TaskExit, TaskOOM};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim::events_ttrpc_async::{create_events, Events};
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serve shim events on {path}: {detail}")]
    Serve { path: String, detail: String },
}

/// What the daemon's own watchers learn from an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Exit {
        container: String,
        exec_id: String,
        status: u32,
    },
    Oom {
        container: String,
    },
}

/// One envelope, and what it means to the daemon (if anything).
#[derive(Debug, Clone)]
pub struct Event {
    pub envelope: pb::Envelope,
    pub notice: Option<Notice>,
}

/// The broadcast every event goes through.
#[derive(Debug, Clone)]
pub struct Hub {
    sender: broadcast::Sender<Event>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        let (sender, _) = broadcast::channel(1024);
        Hub { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Publishes an event of the daemon's own (`/containers/create`, …).
    pub fn publish(&self, topic: &str, type_url: &str, value: Vec<u8>) {
        let envelope = pb::Envelope {
            timestamp: Some(crate::clock::now_timestamp()),
            topic: topic.to_string(),
            event: Some(prost_types::Any {
                type_url: type_url.to_string(),
                value,
            }),
        };
        let _ = self.sender.send(Event {
            envelope,
            notice: None,
        });
    }

    fn forward(&self, request: ForwardRequest) {
        let Some(envelope) = request.envelope.into_option() else {
            return;
        };
        let event = envelope.event.clone().into_option();
        let notice = event.as_ref().and_then(|any| {
            // containerd's type URLs carry no `type.googleapis.com/` prefix.
            let kind = any.type_url.rsplit('/').next().unwrap_or_default();
            match kind {
                "containerd.events.TaskExit" => {
                    let exit = TaskExit::parse_from_bytes(&any.value).ok()?;
                    Some(Notice::Exit {
                        container: exit.container_id.clone(),
                        exec_id: if exit.id == exit.container_id {
                            String::new()
                        } else {
                            exit.id.clone()
                        },
                        status: exit.exit_status,
                    })
                }
                "containerd.events.TaskOOM" => {
                    let oom = TaskOOM::parse_from_bytes(&any.value).ok()?;
                    Some(Notice::Oom {
                        container: oom.container_id,
                    })
                }
                _ => None,
            }
        });
        let timestamp = envelope
            .timestamp
            .clone()
            .into_option()
            .map(|t| prost_types::Timestamp {
                seconds: t.seconds,
                nanos: t.nanos,
            });
        let _ = self.sender.send(Event {
            envelope: pb::Envelope {
                timestamp: timestamp.or_else(|| Some(crate::clock::now_timestamp())),
                topic: envelope.topic.clone(),
                event: event.map(|any| prost_types::Any {
                    type_url: any.type_url,
                    value: any.value,
                }),
            },
            notice,
        });
    }
}

struct Endpoint(Hub);

#[async_trait]
impl Events for Endpoint {
    async fn forward(
        &self,
        _ctx: &ttrpc::r#async::TtrpcContext,
        request: ForwardRequest,
    ) -> ttrpc::Result<containerd_shim_protos::types::empty::Empty> {
        self.0.forward(request);
        Ok(Default::default())
    }
}

/// Serves the shims' events endpoint on the unix socket `path` until the
/// returned server is dropped.
pub async fn serve(path: &Path, hub: Hub) -> Result<ttrpc::r#async::Server, Error> {
    let fail = |detail: String| Error::Serve {
        path: path.display().to_string(),
        detail,
    };
    let _ = std::fs::remove_file(path);
    let service = create_events(Arc::new(Endpoint(hub)));
    let mut server = ttrpc::r#async::Server::new()
        .bind(&format!("unix://{}", path.display()))
        .map_err(|e| fail(e.to_string()))?
        .register_service(service);
    server.start().await.map_err(|e| fail(e.to_string()))?;
    Ok(server)
}
