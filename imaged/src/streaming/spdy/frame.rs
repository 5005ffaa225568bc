//! SPDY/3 frames on the wire (draft-mbelshe-httpbis-spdy-00 §2.2): an
//! eight-byte head — control bit, version and type, or a stream id — then
//! flags, a 24-bit length and the payload.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::headers::{Deflater, Headers, Inflater};
use super::SpdyError;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// Largest frame accepted from a client: far above what a remote-command
/// client sends, far below the 16 MiB the length field allows.
const MAX_FRAME: usize = 1024 * 1024;

/// RST_STREAM status: the stream is not one this server expects.
pub(crate) const REFUSED_STREAM: u32 = 3;

/// What the server acts on; other frames are read and dropped.
#[derive(Debug)]
pub(crate) enum Frame {
    SynStream {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    RstStream {
        stream_id: u32,
    },
    Ping(u32),
    GoAway,
    Ignored,
}

/// Reads frames from the client, inflating every header block in order
/// (the zlib stream spans the connection, so none may be skipped).
pub(crate) struct FrameReader<R> {
    io: R,
    inflater: Inflater,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R) -> Self {
        FrameReader {
            io,
            inflater: Inflater::new(),
        }
    }

    /// The next frame, or `None` when the client closed the connection.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(SpdyError::Io(e)),
        }
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(SpdyError::Protocol(format!("frame of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first,
                fin,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Protocol(format!(
                "SPDY version {version}, expected 3"
            )));
        }
        let frame = match (first & 0xffff) as u16 {
            SYN_STREAM => {
                let block = payload
                    .get(10..)
                    .ok_or_else(|| SpdyError::Protocol("short SYN_STREAM".into()))?;
                Frame::SynStream {
                    stream_id: stream_id(&payload)?,
                    fin,
                    headers: self.inflater.block(block)?,
                }
            }
            SYN_REPLY | HEADERS => {
                // Not expected from a client, but its block is part of the
                // zlib stream.
                if let Some(block) = payload.get(4..) {
                    self.inflater.block(block)?;
                }
                Frame::Ignored
            }
            RST_STREAM => Frame::RstStream {
                stream_id: stream_id(&payload)?,
            },
            PING => Frame::Ping(word(&payload)?),
            GOAWAY => Frame::GoAway,
            // SETTINGS, WINDOW_UPDATE: spdystream (kubelet's and client-go's
            // SPDY) keeps no flow-control windows, so neither does this.
            _ => Frame::Ignored,
        };
        Ok(Some(frame))
    }
}

fn word(payload: &[u8]) -> Result<u32, SpdyError> {
    let bytes = payload
        .first_chunk::<4>()
        .ok_or_else(|| SpdyError::Protocol("short control frame".into()))?;
    Ok(u32::from_be_bytes(*bytes))
}

fn stream_id(payload: &[u8]) -> Result<u32, SpdyError> {
    Ok(word(payload)? & 0x7fff_ffff)
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(payload);
    frame
}

pub(crate) fn syn_reply(deflater: &mut Deflater, stream_id: u32) -> Result<Vec<u8>, SpdyError> {
    let mut payload = stream_id.to_be_bytes().to_vec();
    payload.extend(deflater.block(&[])?);
    Ok(control(SYN_REPLY, 0, &payload))
}

pub(crate) fn data(stream_id: u32, data: &[u8], fin: bool) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + data.len());
    frame.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
    frame.push(if fin { FLAG_FIN } else { 0 });
    frame.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(data);
    frame
}

pub(crate) fn rst_stream(stream_id: u32, status: u32) -> Vec<u8> {
    let mut payload = stream_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &payload)
}

pub(crate) fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

pub(crate) fn goaway(last_stream_id: u32) -> Vec<u8> {
    let mut payload = last_stream_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&0u32.to_be_bytes());
    control(GOAWAY, 0, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_read_back_as_written() {
        let mut deflater = Deflater::new().unwrap();
        let mut wire = Vec::new();
        let mut syn = stream_id_bytes(5);
        syn.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        syn.extend(deflater.block(&[("streamtype", "stdin")]).unwrap());
        wire.extend(control(SYN_STREAM, FLAG_FIN, &syn));
        wire.extend(data(5, b"hello", true));
        wire.extend(ping(7));
        let mut reader = FrameReader::new(&wire[..]);
        match reader.next().await.unwrap() {
            Some(Frame::SynStream {
                stream_id: 5,
                fin: true,
                headers,
            }) => assert_eq!(headers, vec![("streamtype".into(), "stdin".into())]),
            other => panic!("{other:?}"),
        }
        match reader.next().await.unwrap() {
            Some(Frame::Data {
                stream_id: 5,
                fin: true,
                data,
            }) => assert_eq!(data, b"hello"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(reader.next().await.unwrap(), Some(Frame::Ping(7))));
        assert!(reader.next().await.unwrap().is_none());
    }

    fn stream_id_bytes(id: u32) -> Vec<u8> {
        id.to_be_bytes().to_vec()
    }

    #[tokio::test]
    async fn another_version_is_refused() {
        let mut frame = control(PING, 0, &1u32.to_be_bytes());
        frame[1] = 2;
        let mut reader = FrameReader::new(&frame[..]);
        assert!(reader.next().await.is_err());
    }
}
