//! Kubernetes' port-forward protocol. Over SPDY (`portforward.k8s.io`) the
//! client opens, per forwarded connection, an `error` and a `data` stream
//! carrying the same `port` and `requestID` headers; the server joins each
//! pair to a connection to that port inside the pod, and writes a failure
//! as text on the error stream. Over WebSocket (`v4.channel.k8s.io`) the
//! ports come with the request: port i owns channels 2i (data) and 2i+1
//! (error), and the server first sends the port, two bytes little-endian,
//! on both.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::task::JoinSet;

use super::mux;
use super::spdy::{self, SpdyStream};
use super::{websocket, StreamingBackend};

pub(crate) const SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
pub(crate) const WEBSOCKET_PROTOCOLS: &[&str] =
    &["v4.channel.k8s.io", "v4.base64.channel.k8s.io", ""];

/// An approved port forward.
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    pub pod_sandbox_id: String,
    /// The ports the request allowed; empty allows any (kubelet's SPDY
    /// clients name the port per stream, not in the request).
    pub ports: Vec<u16>,
}

/// One forwarded connection's two SPDY streams, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<SpdyStream>,
    data: Option<SpdyStream>,
}

pub(crate) async fn serve_spdy(
    mut conn: spdy::Connection,
    forward: Forward,
    backend: Arc<dyn StreamingBackend>,
) {
    let mut pairs: HashMap<(u16, String), Pair> = HashMap::new();
    let mut running = JoinSet::new();
    while let Some(stream) = conn.accept().await {
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        let port = stream.header("port").and_then(|p| p.parse::<u16>().ok());
        let (Some(port), "error" | "data") = (port, kind.as_str()) else {
            conn.refuse(stream.id).await;
            continue;
        };
        // Clients before requestID paired streams by id: error, then data.
        let request = match stream.header("requestid") {
            Some(id) => id.to_string(),
            None if kind == "error" => stream.id.to_string(),
            None => stream.id.saturating_sub(2).to_string(),
        };
        let key = (port, request);
        let pair = pairs.entry(key.clone()).or_default();
        let slot = if kind == "error" {
            &mut pair.error
        } else {
            &mut pair.data
        };
        if let Some(old) = slot.replace(stream) {
            conn.refuse(old.id).await;
        }
        if pair.error.is_none() || pair.data.is_none() {
            continue;
        }
        if let Some(Pair {
            error: Some(error),
            data: Some(data),
        }) = pairs.remove(&key)
        {
            let (sink, forward, backend) = (conn.sink(), forward.clone(), backend.clone());
            running.spawn(async move {
                let (out, pump) = mux::outgoing(sink.clone(), data.id);
                let (mut failure, error_pump) = mux::outgoing(sink, error.id);
                let stream = Box::new(tokio::io::join(data.incoming, out));
                if let Err(message) = connect(&forward, port, stream, backend.as_ref()).await {
                    // The client reads it once it looks; it may be gone.
                    let _ = failure.write_all(message.as_bytes()).await;
                }
                drop(failure);
                mux::drain(vec![pump, error_pump]).await;
            });
        }
    }
    // The client is gone: nothing a forward still does can reach it.
    running.shutdown().await;
    conn.close().await;
}

pub(crate) async fn serve_websocket(
    conn: websocket::Connection,
    forward: Forward,
    ports: Vec<u16>,
    backend: Arc<dyn StreamingBackend>,
) {
    let mut feeds = Vec::new();
    let mut incoming: Vec<DuplexStream> = Vec::new();
    for i in 0..ports.len() {
        let (pipe, feed) = mux::incoming();
        incoming.push(pipe);
        feeds.push(((2 * i) as u8, feed));
    }
    let mut conn = conn.start(feeds);
    let mut running = JoinSet::new();
    for (i, (port, data_in)) in ports.iter().copied().zip(incoming).enumerate() {
        let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
        for channel in [data, error] {
            // A client gone this early shows as the forward's EOF.
            let _ = conn.send(channel, &port.to_le_bytes()).await;
        }
        let (out, pump) = conn.outgoing(data);
        let (mut failure, error_pump) = conn.outgoing(error);
        let (forward, backend) = (forward.clone(), backend.clone());
        running.spawn(async move {
            let stream = Box::new(tokio::io::join(data_in, out));
            if let Err(message) = connect(&forward, port, stream, backend.as_ref()).await {
                let _ = failure.write_all(message.as_bytes()).await;
            }
            drop(failure);
            mux::drain(vec![pump, error_pump]).await;
        });
    }
    tokio::select! {
        _ = async { while running.join_next().await.is_some() {} } => {}
        _ = conn.closed() => running.shutdown().await,
    }
    conn.close().await;
}

/// Runs one forwarded connection; the error is the text for the client.
async fn connect(
    forward: &Forward,
    port: u16,
    stream: Box<dyn super::Duplex>,
    backend: &dyn StreamingBackend,
) -> Result<(), String> {
    if !forward.ports.is_empty() && !forward.ports.contains(&port) {
        return Err(format!(
            "port {port} is not among the ports this request forwards ({:?})",
            forward.ports
        ));
    }
    backend
        .port_forward(&forward.pod_sandbox_id, port, stream)
        .await
        .map_err(|e| {
            format!(
                "error forwarding port {port} to pod {}: {e}",
                forward.pod_sandbox_id
            )
        })
}

/// Parses the `ports` query parameter (`ports=80,8080` or repeated).
pub(crate) fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if key != "ports" && key != "port" {
            continue;
        }
        for port in value.split(',').filter(|p| !p.is_empty()) {
            match port.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => {
                    return Err(format!(
                        "invalid port {port:?} in the ports query parameter"
                    ))
                }
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"ports\" is required".into());
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_from_the_query() {
        assert_eq!(query_ports("ports=80,8080").unwrap(), vec![80, 8080]);
        assert_eq!(query_ports("ports=80&ports=81").unwrap(), vec![80, 81]);
        assert!(query_ports("ports=http").is_err());
        assert!(query_ports("").is_err());
    }
}
