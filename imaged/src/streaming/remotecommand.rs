//! Kubernetes' remote-command protocol (exec and attach), as kubelet serves
//! it: the channels stdin, stdout, stderr, error and resize over either
//! framing, then the outcome on the error channel — a `metav1.Status` JSON
//! from `v4.channel.k8s.io` on (client-go reads the exit code from its
//! `NonZeroExitCode` cause), plain text before that.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::mux;
use super::{spdy, websocket};
use super::{
    BackendError, SessionIo, SessionReader, SessionWriter, StreamingBackend, TerminalSize,
};

/// Versions a SPDY client may ask for in `X-Stream-Protocol-Version`,
/// preferred first (kubelet's list).
pub(crate) const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// WebSocket subprotocols (`Sec-WebSocket-Protocol`); "" is a client that
/// names none, which kubelet serves as binary `channel.k8s.io`.
pub(crate) const WEBSOCKET_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "",
];

// The channel numbers of the WebSocket framing.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// An approved exec or attach.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub container_id: String,
    /// `None` for attach.
    pub command: Option<Vec<String>>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The channels a client opened, as pipes.
#[derive(Default)]
struct Channels {
    stdin: Option<SessionReader>,
    stdout: Option<SessionWriter>,
    stderr: Option<SessionWriter>,
    resize: Option<SessionReader>,
    error: Option<SessionWriter>,
    pumps: Vec<JoinHandle<()>>,
}

/// Serves a session over SPDY: waits (at most `creation_timeout`) for the
/// streams the request asked for, runs it, closes the connection.
pub(crate) async fn serve_spdy(
    mut conn: spdy::Connection,
    protocol: &str,
    session: Session,
    backend: &dyn StreamingBackend,
    creation_timeout: Duration,
) {
    // Resizing came with v3; a v1/v2 client opens no resize stream.
    let resizable = session.tty && matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
    let mut wanted = vec!["error"];
    for (name, wanted_too) in [
        ("stdin", session.stdin),
        ("stdout", session.stdout),
        ("stderr", session.stderr && !session.tty),
        ("resize", resizable),
    ] {
        if wanted_too {
            wanted.push(name);
        }
    }
    let mut channels = Channels::default();
    let arrived = tokio::time::timeout(creation_timeout, async {
        while !wanted.is_empty() {
            let Some(stream) = conn.accept().await else {
                return false;
            };
            let kind = stream.header("streamtype").unwrap_or("").to_string();
            let Some(at) = wanted.iter().position(|w| *w == kind) else {
                conn.refuse(stream.id).await;
                continue;
            };
            wanted.swap_remove(at);
            match kind.as_str() {
                "stdin" => channels.stdin = Some(Box::new(stream.incoming)),
                "resize" => channels.resize = Some(Box::new(stream.incoming)),
                output => {
                    let (pipe, pump) = conn.outgoing(stream.id);
                    channels.pumps.push(pump);
                    let pipe: SessionWriter = Box::new(pipe);
                    match output {
                        "stdout" => channels.stdout = Some(pipe),
                        "stderr" => channels.stderr = Some(pipe),
                        _ => channels.error = Some(pipe),
                    }
                }
            }
        }
        true
    })
    .await;
    if arrived == Ok(true) {
        let json = protocol == "v4.channel.k8s.io";
        run(backend, &session, &mut channels, json).await;
    }
    drop(channels.stdin.take());
    mux::drain(std::mem::take(&mut channels.pumps)).await;
    conn.close().await;
}

/// Serves a session over an accepted WebSocket with subprotocol `protocol`.
pub(crate) async fn serve_websocket(
    conn: websocket::Connection,
    protocol: &str,
    session: Session,
    backend: &dyn StreamingBackend,
) {
    let mut channels = Channels::default();
    let mut feeds = Vec::new();
    if session.stdin {
        let (pipe, feed) = mux::incoming();
        channels.stdin = Some(Box::new(pipe));
        feeds.push((STDIN, feed));
    }
    if session.tty {
        let (pipe, feed) = mux::incoming();
        channels.resize = Some(Box::new(pipe));
        feeds.push((RESIZE, feed));
    }
    let conn = conn.start(feeds);
    // kubelet's hello: an empty message on the lowest channel it writes.
    let first = if session.stdout {
        STDOUT
    } else if session.stderr {
        STDERR
    } else {
        ERROR
    };
    conn.hello(first).await;
    for (channel, wanted) in [
        (STDOUT, session.stdout),
        (STDERR, session.stderr && !session.tty),
        (ERROR, true),
    ] {
        if !wanted {
            continue;
        }
        let (pipe, pump) = conn.outgoing(channel);
        channels.pumps.push(pump);
        let pipe: SessionWriter = Box::new(pipe);
        match channel {
            STDOUT => channels.stdout = Some(pipe),
            STDERR => channels.stderr = Some(pipe),
            _ => channels.error = Some(pipe),
        }
    }
    let json = protocol.starts_with("v4.") || protocol.starts_with("v5.");
    run(backend, &session, &mut channels, json).await;
    mux::drain(std::mem::take(&mut channels.pumps)).await;
    conn.close().await;
}

/// Runs the session on the backend and reports the outcome on the error
/// channel once the process's output is out.
async fn run(
    backend: &dyn StreamingBackend,
    session: &Session,
    channels: &mut Channels,
    json: bool,
) {
    let io = SessionIo {
        stdin: channels.stdin.take(),
        stdout: channels.stdout.take(),
        stderr: channels.stderr.take(),
        resize: channels.resize.take().map(resize_events),
    };
    let outcome = match &session.command {
        Some(command) => backend
            .exec(&session.container_id, command.clone(), session.tty, io)
            .await
            .map(Some),
        None => backend.attach(&session.container_id, session.tty, io).await,
    };
    let status = match json {
        true => status_json(session, &outcome),
        false => status_text(session, &outcome),
    };
    if let Some(mut error) = channels.error.take() {
        // The client may have left already; then nobody is told.
        let _ = error.write_all(status.as_bytes()).await;
        let _ = error.shutdown().await;
    }
}

fn failure_message(session: &Session, code: i32) -> String {
    match &session.command {
        Some(command) => format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
        ),
        None => format!("container {} exited with code {code}", session.container_id),
    }
}

/// kubelet's v4 status: Success, the exit code as a `NonZeroExitCode`
/// failure, or an internal error.
fn status_json(session: &Session, outcome: &Result<Option<i32>, BackendError>) -> String {
    let status = match outcome {
        Ok(None) | Ok(Some(0)) => json!({"metadata": {}, "status": "Success"}),
        Ok(Some(code)) => json!({
            "metadata": {},
            "status": "Failure",
            "message": failure_message(session, *code),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(e) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {e}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": e.to_string()}]},
            "code": 500,
        }),
    };
    status.to_string()
}

/// Before v4 the error channel carries a message, and nothing on success.
fn status_text(session: &Session, outcome: &Result<Option<i32>, BackendError>) -> String {
    match outcome {
        Ok(None) | Ok(Some(0)) => String::new(),
        Ok(Some(code)) => failure_message(session, *code),
        Err(e) => e.to_string(),
    }
}

/// client-go writes `{"Width":W,"Height":H}` objects back to back.
#[derive(Deserialize)]
struct WireSize {
    #[serde(rename = "Width", alias = "width")]
    width: u16,
    #[serde(rename = "Height", alias = "height")]
    height: u16,
}

/// Most bytes of one undecoded resize message kept before giving up.
const MAX_RESIZE_MESSAGE: usize = 4096;

fn resize_events(mut reader: SessionReader) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..n]);
            let (sizes, used) = match decode_sizes(&pending) {
                Some(decoded) => decoded,
                // Not JSON: kubelet stops listening to resizes too.
                None => return,
            };
            pending.drain(..used);
            for size in sizes {
                if tx.send(size).await.is_err() {
                    return;
                }
            }
            if pending.len() > MAX_RESIZE_MESSAGE {
                return;
            }
        }
    });
    rx
}

/// The complete sizes in `bytes` and how many bytes they took; `None` when
/// the bytes are not JSON.
fn decode_sizes(bytes: &[u8]) -> Option<(Vec<TerminalSize>, usize)> {
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<WireSize>();
    let mut sizes = Vec::new();
    let mut used = 0;
    loop {
        match stream.next() {
            Some(Ok(size)) => {
                used = stream.byte_offset();
                sizes.push(TerminalSize {
                    width: size.width,
                    height: size.height,
                });
            }
            Some(Err(e)) if e.is_eof() => return Some((sizes, used)),
            Some(Err(_)) => return None,
            None => return Some((sizes, stream.byte_offset())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(command: &[&str]) -> Session {
        Session {
            container_id: "c1".into(),
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        }
    }

    #[test]
    fn success_is_kubelets_status() {
        let status = status_json(&exec(&["true"]), &Ok(Some(0)));
        assert_eq!(status, r#"{"metadata":{},"status":"Success"}"#);
    }

    #[test]
    fn an_exit_code_is_a_cause() {
        let status = status_json(&exec(&["false"]), &Ok(Some(3)));
        let value: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(value["status"], "Failure");
        assert_eq!(value["reason"], "NonZeroExitCode");
        assert_eq!(value["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(value["details"]["causes"][0]["message"], "3");
    }

    #[test]
    fn text_status_is_empty_on_success() {
        assert_eq!(status_text(&exec(&["true"]), &Ok(Some(0))), "");
        assert!(
            status_text(&exec(&["x"]), &Err(BackendError::NotFound("c1".into())))
                .contains("not found")
        );
    }

    #[test]
    fn sizes_decode_across_chunks() {
        let (sizes, used) = decode_sizes(br#"{"Width":80,"Height":24}{"width":1"#).unwrap();
        assert_eq!(
            sizes,
            vec![TerminalSize {
                width: 80,
                height: 24
            }]
        );
        assert_eq!(used, 24);
        assert!(decode_sizes(b"nonsense").is_none());
    }
}
