//! WebSocket (RFC 6455) as Kubernetes' channel protocols use it: every
//! message starts with its channel number (one byte in the binary
//! protocols, an ASCII digit before base64 text in the `base64.` ones);
//! `v5.channel.k8s.io` adds a message on channel 255 that closes the
//! client's side of one channel (stdin's EOF).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::mux::{self, Activity, Feed, FrameSink};

/// RFC 6455 §1.3: the GUID the accept key is derived with.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
/// v5's channel-close signal.
const CLOSE_CHANNEL: u8 = 255;
/// Largest message accepted from a client.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The first subprotocol the client offers that the server speaks (the
/// client's order, as golang.org/x/net/websocket under kubelet picks); a
/// client offering none gets "".
pub(crate) fn choose_protocol<'a>(offered: &[&str], supported: &[&'a str]) -> Option<&'a str> {
    let offered: Vec<&str> = match offered {
        [] => vec![""],
        some => some.to_vec(),
    };
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == *o).copied())
}

/// An accepted connection that is not reading yet.
pub(crate) struct Connection {
    read: Box<dyn AsyncRead + Send + Unpin>,
    writer: Arc<Writer>,
    v5: bool,
}

impl Connection {
    /// Serves `io` with subprotocol `protocol`, closing it once idle for
    /// `idle_timeout`.
    pub(crate) fn new<IO>(io: IO, protocol: &str, idle_timeout: Duration) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        Connection {
            read: Box::new(read),
            writer: Arc::new(Writer {
                io: Mutex::new(Box::new(write)),
                base64: protocol.contains("base64"),
                activity: Activity::new(idle_timeout),
            }),
            v5: protocol.starts_with("v5."),
        }
    }

    /// Starts reading: what the client sends on a channel of `feeds` goes
    /// into that pipe; other channels are dropped.
    pub(crate) fn start(self, feeds: Vec<(u8, Feed)>) -> Running {
        let reader = tokio::spawn(read_messages(
            self.read,
            self.writer.clone(),
            feeds.into_iter().collect(),
            self.v5,
        ));
        Running {
            writer: self.writer,
            reader,
        }
    }
}

/// A connection whose client side is being read.
pub(crate) struct Running {
    writer: Arc<Writer>,
    reader: JoinHandle<()>,
}

impl Running {
    /// An empty message on `channel`: kubelet's "the session is up".
    pub(crate) async fn hello(&self, channel: u8) {
        // A client gone this early shows in the session's first write.
        let _ = self.writer.message(channel, &[]).await;
    }

    pub(crate) async fn send(&self, channel: u8, data: &[u8]) -> io::Result<()> {
        self.writer.message(channel, data).await
    }

    pub(crate) fn outgoing(&self, channel: u8) -> (DuplexStream, JoinHandle<()>) {
        mux::outgoing(self.writer.clone(), u32::from(channel))
    }

    /// Waits until the client closes the connection.
    pub(crate) async fn closed(&mut self) {
        // An aborted or panicked reader means the connection is gone too.
        let _ = (&mut self.reader).await;
    }

    /// Sends a normal close and ends the connection.
    pub(crate) async fn close(self) {
        self.reader.abort();
        let mut io = self.writer.io.lock().await;
        // The client may have left first.
        let _ = io.write_all(&frame(CLOSE, &1000u16.to_be_bytes())).await;
        let _ = io.shutdown().await;
    }
}

struct Writer {
    io: Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    base64: bool,
    activity: Arc<Activity>,
}

impl Writer {
    async fn message(&self, channel: u8, data: &[u8]) -> io::Result<()> {
        self.activity.touch();
        let bytes = if self.base64 {
            let mut text = vec![b'0' + channel];
            text.extend(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .into_bytes(),
            );
            frame(TEXT, &text)
        } else {
            let mut payload = Vec::with_capacity(data.len() + 1);
            payload.push(channel);
            payload.extend_from_slice(data);
            frame(BINARY, &payload)
        };
        let mut io = self.io.lock().await;
        io.write_all(&bytes).await?;
        io.flush().await
    }
}

#[async_trait]
impl FrameSink for Writer {
    async fn send(&self, channel: u32, data: &[u8], fin: bool) -> io::Result<()> {
        // Channels end with the connection: there is no per-channel EOF to
        // send (a client reads until the close).
        if fin && data.is_empty() {
            return Ok(());
        }
        let channel = u8::try_from(channel).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.message(channel, data).await
    }
}

/// A server frame: final, unmasked.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 10);
    bytes.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => bytes.push(len as u8),
        len @ 126..=0xffff => {
            bytes.push(126);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            bytes.push(127);
            bytes.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    bytes.extend_from_slice(payload);
    bytes
}

/// One frame from the client: (fin, opcode, unmasked payload).
async fn read_frame<R: AsyncRead + Unpin>(io: &mut R) -> io::Result<(bool, u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => u64::from(io.read_u16().await?),
        127 => io.read_u64().await?,
        len => u64::from(len),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too large",
        ));
    }
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        io.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    io.read_exact(&mut payload).await?;
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Ok((head[0] & 0x80 != 0, head[0] & 0x0f, payload))
}

async fn read_messages(
    mut io: Box<dyn AsyncRead + Send + Unpin>,
    writer: Arc<Writer>,
    mut feeds: HashMap<u8, Feed>,
    v5: bool,
) {
    let mut message = Vec::new();
    loop {
        let (fin, opcode, payload) = match writer.activity.unless_idle(read_frame(&mut io)).await {
            Some(Ok(frame)) => frame,
            Some(Err(_)) => return,
            None => {
                // Idle: hang up, as kubelet does; the client sees the end.
                let _ = writer.io.lock().await.shutdown().await;
                return;
            }
        };
        match opcode {
            CLOSE => return,
            PING => {
                let mut io = writer.io.lock().await;
                if io.write_all(&frame(0xA, &payload)).await.is_err() {
                    return;
                }
            }
            TEXT | BINARY | CONTINUATION => {
                message.extend_from_slice(&payload);
                if message.len() > MAX_MESSAGE {
                    return;
                }
                if !fin {
                    continue;
                }
                let whole = std::mem::take(&mut message);
                let Some((channel, data)) = decode(&whole, writer.base64) else {
                    continue;
                };
                if v5 && channel == CLOSE_CHANNEL {
                    // Dropping the feed is the pipe's EOF.
                    if let Some(closed) = data.first() {
                        feeds.remove(closed);
                    }
                    continue;
                }
                if let Some(feed) = feeds.get(&channel) {
                    if !feed.push(data).await {
                        feeds.remove(&channel);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A message's channel and bytes. Binary protocols take text frames as
/// bytes too (the Python client sends `str` data as text).
fn decode(message: &[u8], base64: bool) -> Option<(u8, Vec<u8>)> {
    let (&first, rest) = message.split_first()?;
    if !base64 {
        return Some((first, rest.to_vec()));
    }
    let channel = first.checked_sub(b'0')?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    Some((channel, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn protocols_follow_the_clients_order() {
        let supported = ["v5.channel.k8s.io", "v4.channel.k8s.io", ""];
        assert_eq!(
            choose_protocol(&["v4.channel.k8s.io", "v5.channel.k8s.io"], &supported),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(choose_protocol(&[], &supported), Some(""));
        assert_eq!(choose_protocol(&["chat"], &supported), None);
    }

    /// A client frame: masked, as RFC 6455 requires of clients.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut wire = vec![first, 0x80 | payload.len() as u8];
        wire.extend_from_slice(&mask);
        wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        wire
    }

    #[tokio::test]
    async fn masked_fragments_reassemble() {
        let mut wire = masked(BINARY, b"\x00he");
        wire.extend(masked(0x80 | CONTINUATION, b"llo"));
        let mut reader = &wire[..];
        let (fin, opcode, payload) = read_frame(&mut reader).await.unwrap();
        assert!(!fin);
        assert_eq!((opcode, payload.as_slice()), (BINARY, &b"\x00he"[..]));
        let (fin, _, payload) = read_frame(&mut reader).await.unwrap();
        assert!(fin);
        assert_eq!(payload, b"llo");
    }

    #[tokio::test]
    async fn v5_closes_one_channel_of_the_client() {
        let (client, server) = tokio::io::duplex(1024);
        let (mut stdin, feed) = mux::incoming();
        let _running = Connection::new(server, "v5.channel.k8s.io", Duration::from_secs(3600))
            .start(vec![(0, feed)]);
        let (_client_read, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(&masked(0x80 | BINARY, b"\x00hi"))
            .await
            .unwrap();
        client_write
            .write_all(&masked(0x80 | BINARY, &[CLOSE_CHANNEL, 0]))
            .await
            .unwrap();
        let mut got = Vec::new();
        stdin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hi");
    }

    #[test]
    fn base64_messages_decode() {
        assert_eq!(decode(b"0aGk=", true), Some((0, b"hi".to_vec())));
        assert_eq!(decode(b"\x04{}", false), Some((4, b"{}".to_vec())));
        assert_eq!(decode(b"", false), None);
    }

    #[test]
    fn long_frames_use_extended_lengths() {
        assert_eq!(&frame(BINARY, &[0; 200])[..4], &[0x82, 126, 0, 200]);
        assert_eq!(frame(BINARY, &[0; 70000])[1], 127);
    }
}
