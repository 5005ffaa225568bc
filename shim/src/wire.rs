//! ttrpc's wire format: a 10-byte header (payload length and stream id, big
//! endian; message type; flags) and a protobuf `ttrpc.Request` or
//! `ttrpc.Response` as payload. The server side is driven by the loop in
//! [`crate::server`]: it feeds bytes in and takes complete frames out; the
//! client side is the one blocking call the events publisher needs.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use protobuf::Message;
use ttrpc::proto::{Code, KeyValue, Request, Response, Status};

pub const HEADER_LEN: usize = 10;
/// ttrpc's limit: larger messages are refused by both ends.
pub const MAX_MESSAGE: usize = 4 << 20;
pub const TYPE_REQUEST: u8 = 1;
pub const TYPE_RESPONSE: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("ttrpc socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("ttrpc message of {0} bytes exceeds the 4 MiB limit")]
    TooLarge(usize),
    #[error("cannot decode ttrpc message: {0}")]
    Decode(#[from] protobuf::Error),
    #[error("unexpected ttrpc message type {0}")]
    UnexpectedType(u8),
    #[error("{method} answered {code:?}: {message}")]
    Status {
        method: String,
        code: Code,
        message: String,
    },
}

/// An RPC's failure as the caller will see it: a status code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// One message off the wire.
#[derive(Debug)]
pub struct Frame {
    pub stream_id: u32,
    pub kind: u8,
    pub payload: Vec<u8>,
}

pub fn encode(stream_id: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.push(kind);
    out.push(0);
    out.extend_from_slice(payload);
    out
}

/// Takes the first complete frame off the front of `buf`, if there is one.
pub fn take_frame(buf: &mut Vec<u8>) -> Result<Option<Frame>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_MESSAGE {
        return Err(WireError::TooLarge(len));
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let stream_id = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let kind = buf[8];
    let payload = buf[HEADER_LEN..HEADER_LEN + len].to_vec();
    buf.drain(..HEADER_LEN + len);
    Ok(Some(Frame {
        stream_id,
        kind,
        payload,
    }))
}

/// The response frame for `stream_id`: the payload, or the error's status.
pub fn response(stream_id: u32, result: Result<Vec<u8>, RpcError>) -> Vec<u8> {
    let mut response = Response::new();
    let mut status = Status::new();
    match result {
        Ok(payload) => {
            status.code = Code::OK.into();
            response.payload = payload;
        }
        Err(err) => {
            status.code = err.code.into();
            status.message = err.message;
        }
    }
    response.status = protobuf::MessageField::some(status);
    // Encoding a message into a Vec only fails on messages over 2 GiB.
    let payload = response.write_to_bytes().unwrap_or_default();
    encode(stream_id, TYPE_RESPONSE, &payload)
}

/// A unix socket path from a containerd address: `TTRPC_ADDRESS` is a bare
/// path, the shim's own addresses are `unix://PATH`.
pub fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// A blocking ttrpc client over one connection, one call at a time.
pub struct Client {
    stream: UnixStream,
    next_stream: u32,
}

impl Client {
    pub fn connect(address: &str, timeout: Duration) -> Result<Client, WireError> {
        let stream = UnixStream::connect(socket_path(address))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client {
            stream,
            next_stream: 1,
        })
    }

    /// Calls `service/method` with an encoded request; returns the encoded response.
    pub fn call(
        &mut self,
        service: &str,
        method: &str,
        payload: Vec<u8>,
        metadata: &[(&str, &str)],
    ) -> Result<Vec<u8>, WireError> {
        let mut request = Request::new();
        request.service = service.to_string();
        request.method = method.to_string();
        request.payload = payload;
        for (key, value) in metadata {
            let mut kv = KeyValue::new();
            kv.key = key.to_string();
            kv.value = value.to_string();
            request.metadata.push(kv);
        }
        let stream_id = self.next_stream;
        // Client streams are odd, as in ttrpc-go.
        self.next_stream = self.next_stream.wrapping_add(2);
        self.stream
            .write_all(&encode(stream_id, TYPE_REQUEST, &request.write_to_bytes()?))?;
        loop {
            let mut header = [0u8; HEADER_LEN];
            self.stream.read_exact(&mut header)?;
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if len > MAX_MESSAGE {
                return Err(WireError::TooLarge(len));
            }
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body)?;
            let id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            if header[8] != TYPE_RESPONSE {
                return Err(WireError::UnexpectedType(header[8]));
            }
            if id != stream_id {
                continue;
            }
            let response = Response::parse_from_bytes(&body)?;
            let code = response
                .status
                .as_ref()
                .map(|s| s.code.enum_value_or(Code::UNKNOWN))
                .unwrap_or(Code::OK);
            if code != Code::OK {
                return Err(WireError::Status {
                    method: format!("{service}/{method}"),
                    code,
                    message: response.status.message.clone(),
                });
            }
            return Ok(response.payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_their_whole_payload() {
        let mut buf = encode(7, TYPE_REQUEST, b"hello");
        buf.extend_from_slice(&encode(9, TYPE_REQUEST, b"")[..4]);
        let frame = take_frame(&mut buf).unwrap().unwrap();
        assert_eq!((frame.stream_id, frame.kind), (7, TYPE_REQUEST));
        assert_eq!(frame.payload, b"hello");
        assert!(take_frame(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut buf = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 0];
        assert!(matches!(take_frame(&mut buf), Err(WireError::TooLarge(_))));
    }

    #[test]
    fn errors_travel_as_status() {
        let bytes = response(3, Err(RpcError::new(Code::NOT_FOUND, "no such exec")));
        let mut buf = bytes;
        let frame = take_frame(&mut buf).unwrap().unwrap();
        let response = Response::parse_from_bytes(&frame.payload).unwrap();
        assert_eq!(response.status.code.enum_value(), Ok(Code::NOT_FOUND));
        assert_eq!(response.status.message, "no such exec");
    }
}
