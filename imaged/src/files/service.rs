//! The `Files` gRPC service: tar streams out of and into containers. The
//! filesystem work runs on blocking threads; bytes cross to and from the
//! async side through bounded channels, so a slow client slows the walk
//! rather than filling the daemon's memory, and a client that leaves ends
//! it (the next write fails).

use std::io::{self, Write};
use std::pin::Pin;

use berth_proto::chunks::ChunkReader;
use berth_proto::v1 as pb;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{Error, Files};

type Chunks = Pin<Box<dyn Stream<Item = Result<pb::TarChunk, Status>> + Send>>;

const CHUNK: usize = 256 << 10;

fn status(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::NotFound { .. } => Status::not_found(msg),
        Error::NotDirectory { .. } => Status::failed_precondition(msg),
        Error::Container(e) => crate::grpc::workloads::containers_status(e),
        Error::Unpack { .. } => Status::invalid_argument(msg),
        Error::Io { .. } => Status::internal(msg),
    }
}

/// Bytes written here leave as [`pb::TarChunk`]s.
struct Sender {
    tx: mpsc::Sender<Result<pb::TarChunk, Status>>,
    buf: Vec<u8>,
}

impl Sender {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(pb::TarChunk { data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for Sender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Runs `write` on a blocking thread; what it writes is the stream.
fn streamed(
    write: impl FnOnce(&mut Sender) -> Result<(), Error> + Send + 'static,
) -> Response<Chunks> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = Sender {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = write(&mut out).and_then(|()| {
            out.flush().map_err(|source| Error::Io {
                op: "send",
                path: String::new(),
                source,
            })
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(status(e)));
        }
    });
    Response::new(Box::pin(ReceiverStream::new(rx)))
}

#[tonic::async_trait]
impl pb::files_server::Files for Files {
    type CopyFromStream = Chunks;
    type ExportStream = Chunks;

    async fn stat(
        &self,
        request: Request<pb::StatPathRequest>,
    ) -> Result<Response<pb::PathStat>, Status> {
        let r = request.into_inner();
        let files = self.clone();
        let st = tokio::task::spawn_blocking(move || files.stat(&r.container, &r.path))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(pb::PathStat {
            name: st.name,
            size: st.size,
            mode: st.mode,
            link_target: st.link_target,
        }))
    }

    async fn copy_from(
        &self,
        request: Request<pb::CopyFromRequest>,
    ) -> Result<Response<Self::CopyFromStream>, Status> {
        let r = request.into_inner();
        let files = self.clone();
        // A missing path is an error of the call, not of the stream.
        let probe = files.clone();
        let (container, path) = (r.container.clone(), r.path.clone());
        tokio::task::spawn_blocking(move || probe.stat(&container, &path))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(streamed(move |out| {
            files.tar(&r.container, &r.path, &r.name, r.follow_link, out)
        }))
    }

    async fn copy_to(
        &self,
        request: Request<Streaming<pb::CopyToRequest>>,
    ) -> Result<Response<pb::CopyToResponse>, Status> {
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument(
                "copy: the first message names the container and the directory",
            ));
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
        let files = self.clone();
        let (container, directory) = (first.container, first.directory);
        let unpacking = tokio::task::spawn_blocking(move || {
            let input = ChunkReader::new(rx);
            files.unpack(&container, &directory, input)
        });
        let mut received = Ok(());
        let mut data = first.data;
        loop {
            if !data.is_empty() && tx.send(data).await.is_err() {
                // The unpacker stopped early: its error says why.
                break;
            }
            match stream.message().await {
                Ok(Some(next)) => data = next.data,
                Ok(None) => break,
                Err(e) => {
                    received = Err(e);
                    break;
                }
            }
        }
        drop(tx);
        let unpacked = unpacking
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        received?;
        unpacked.map_err(status)?;
        Ok(Response::new(pb::CopyToResponse {}))
    }

    async fn export(
        &self,
        request: Request<pb::ExportContainerRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let container = request.into_inner().container;
        let files = self.clone();
        let probe = files.clone();
        let name = container.clone();
        tokio::task::spawn_blocking(move || probe.root(&name, false).map(|_| ()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(streamed(move |out| files.export(&container, out)))
    }
}
