//! Kubernetes' streaming side of CRI: `Exec`, `Attach` and `PortForward`
//! answer with a URL, and the client (kubelet, crictl, a Kubernetes client
//! library) then speaks a remote-command or port-forward protocol to that URL.
//!
//! This module is the contract between the two halves: the streaming server
//! (HTTP, the SPDY/3.1 and WebSocket framings, one-time tokens) and the CRI
//! runtime that owns the containers and pods. The server never sees a
//! container; it hands each session's streams to a [`StreamingBackend`].
//!
//! Start reading at [`server`] ([`StreamingServer`]: URLs, tokens, the HTTP
//! upgrade), then [`remotecommand`] and [`portforward`] (what a session
//! does), then the framings they run over: `spdy` (frames, zlib-compressed
//! header blocks) and `websocket`; `mux` is the pipe-per-stream plumbing
//! both share.

mod mux;
mod portforward;
mod remotecommand;
mod server;
mod spdy;
mod tokens;
mod websocket;

pub use server::{
    AttachRequest, ExecRequest, PortForwardRequest, StreamingConfig, StreamingError,
    StreamingServer,
};
pub use tokens::TokenError;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream the client writes (stdin).
pub type SessionReader = Box<dyn AsyncRead + Send + Unpin>;
/// A byte stream the client reads (stdout, stderr).
pub type SessionWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A duplex byte stream, one per forwarded connection.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// The terminal size the client asked for (the resize stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// The streams a client opened for one exec or attach session. With a tty
/// there is no stderr: the terminal merges it into stdout.
pub struct SessionIo {
    pub stdin: Option<SessionReader>,
    pub stdout: Option<SessionWriter>,
    pub stderr: Option<SessionWriter>,
    pub resize: Option<tokio::sync::mpsc::Receiver<TerminalSize>>,
}

/// Why a session could not run; the server reports it on the error stream.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

/// What the CRI runtime does for the streaming server.
#[async_trait]
pub trait StreamingBackend: Send + Sync + 'static {
    /// Runs `command` in the container; returns its exit code once it has
    /// exited and its output has been written to `io`.
    async fn exec(
        &self,
        container_id: &str,
        command: Vec<String>,
        tty: bool,
        io: SessionIo,
    ) -> Result<i32, BackendError>;

    /// Joins the container's main process streams until it exits (its exit
    /// code) or the client leaves (`None`).
    async fn attach(
        &self,
        container_id: &str,
        tty: bool,
        io: SessionIo,
    ) -> Result<Option<i32>, BackendError>;

    /// Connects `stream` to `port` on the loopback of the pod's network
    /// namespace until either side closes.
    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        stream: Box<dyn Duplex>,
    ) -> Result<(), BackendError>;
}
