//! The server end of a SPDY/3.1 connection as Kubernetes uses it (moby's
//! spdystream on both sides): the client opens one stream per channel,
//! naming it in a `streamtype` header; the server answers each with a
//! SYN_REPLY and both ends then send DATA frames, FIN closing a direction.
//! No flow-control windows: spdystream keeps none either.

mod frame;
mod headers;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use super::mux::{self, Activity, Feed, FrameSink};
use frame::{Frame, FrameReader};
use headers::{Deflater, Headers};

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY connection: {0}")]
    Io(#[from] io::Error),
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    #[error("SPDY header compression: {0}")]
    Zlib(String),
}

/// A stream the client opened.
pub(crate) struct SpdyStream {
    pub id: u32,
    headers: Headers,
    /// What the client sends on this stream; EOF at its FIN.
    pub incoming: DuplexStream,
}

impl SpdyStream {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The writing half, shared by the pumps of every stream.
struct Writer {
    state: Mutex<WriterState>,
    activity: Arc<Activity>,
}

struct WriterState {
    io: Box<dyn AsyncWrite + Send + Unpin>,
    deflater: Deflater,
}

impl Writer {
    async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.activity.touch();
        let mut state = self.state.lock().await;
        state.io.write_all(bytes).await?;
        state.io.flush().await
    }

    async fn reply(&self, stream_id: u32) -> Result<(), SpdyError> {
        let mut state = self.state.lock().await;
        let frame = frame::syn_reply(&mut state.deflater, stream_id)?;
        state.io.write_all(&frame).await?;
        Ok(state.io.flush().await?)
    }
}

#[async_trait]
impl FrameSink for Writer {
    async fn send(&self, channel: u32, data: &[u8], fin: bool) -> io::Result<()> {
        self.write(&frame::data(channel, data, fin)).await
    }
}

/// One upgraded connection: streams arrive through [`Connection::accept`].
pub(crate) struct Connection {
    writer: Arc<Writer>,
    streams: mpsc::Receiver<SpdyStream>,
    reader: JoinHandle<()>,
    /// The last stream the client opened (for GOAWAY).
    last: Arc<AtomicU32>,
}

impl Connection {
    /// Serves `io`, closing it once idle for `idle_timeout`.
    pub(crate) fn start<IO>(io: IO, idle_timeout: Duration) -> Result<Self, SpdyError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let writer = Arc::new(Writer {
            state: Mutex::new(WriterState {
                io: Box::new(write),
                deflater: Deflater::new()?,
            }),
            activity: Activity::new(idle_timeout),
        });
        let (tx, streams) = mpsc::channel(16);
        let last = Arc::new(AtomicU32::new(0));
        let reader = tokio::spawn(read_frames(
            FrameReader::new(read),
            writer.clone(),
            tx,
            last.clone(),
        ));
        Ok(Connection {
            writer,
            streams,
            reader,
            last,
        })
    }

    /// The next stream the client opened; `None` once it is gone.
    pub(crate) async fn accept(&mut self) -> Option<SpdyStream> {
        self.streams.recv().await
    }

    /// A pipe the session writes stream `id` into (FIN when it is closed).
    pub(crate) fn outgoing(&self, id: u32) -> (DuplexStream, JoinHandle<()>) {
        mux::outgoing(self.writer.clone(), id)
    }

    /// Where outgoing pipes of tasks that outlive a borrow write to.
    pub(crate) fn sink(&self) -> Arc<dyn FrameSink> {
        self.writer.clone()
    }

    /// Refuses a stream the session has no use for.
    pub(crate) async fn refuse(&self, id: u32) {
        // The client may already be gone; nothing to undo then.
        let _ = self
            .writer
            .write(&frame::rst_stream(id, frame::REFUSED_STREAM))
            .await;
    }

    /// Says goodbye (GOAWAY) and closes the connection.
    pub(crate) async fn close(self) {
        self.reader.abort();
        let last = self.last.load(Ordering::Relaxed);
        let mut state = self.writer.state.lock().await;
        // A client that left first cannot hear the goodbye; that is fine.
        let _ = state.io.write_all(&frame::goaway(last)).await;
        let _ = state.io.shutdown().await;
    }
}

/// Dispatches the client's frames until it leaves.
async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    writer: Arc<Writer>,
    streams: mpsc::Sender<SpdyStream>,
    last: Arc<AtomicU32>,
) {
    let mut open: HashMap<u32, Feed> = HashMap::new();
    loop {
        let frame = match writer.activity.unless_idle(reader.next()).await {
            Some(Ok(Some(frame))) => frame,
            Some(_) => break,
            None => {
                // Idle: hang up, as kubelet does; the client sees the end.
                let _ = writer.state.lock().await.io.shutdown().await;
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                headers,
            } => {
                last.store(stream_id, Ordering::Relaxed);
                let (incoming, feed) = mux::incoming();
                if !fin {
                    open.insert(stream_id, feed);
                }
                let stream = SpdyStream {
                    id: stream_id,
                    headers,
                    incoming,
                };
                if writer.reply(stream_id).await.is_err() || streams.send(stream).await.is_err() {
                    break;
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if let Some(feed) = open.get_mut(&stream_id) {
                    // A session that stopped reading a stream (the process
                    // exited) just loses what still arrives on it.
                    if !feed.push(data).await {
                        open.remove(&stream_id);
                    }
                }
                if fin {
                    open.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id } => {
                open.remove(&stream_id);
            }
            Frame::Ping(id) => {
                if writer.write(&frame::ping(id)).await.is_err() {
                    break;
                }
            }
            Frame::GoAway => break,
            Frame::Ignored => {}
        }
    }
}
