//! The HTTP side: a listener, one-time URLs, and the upgrade of a request
//! on `/exec/{token}`, `/attach/{token}` or `/portforward/{token}` to SPDY/3.1
//! or WebSocket, chosen by the request's headers as kubelet chooses.
//!
//! The default address is a random loopback port, as kubelet's and
//! containerd's CRI streaming servers use: the only client meant to reach it
//! is the kubelet on the same node (which proxies the user's stream from the
//! API server), the tokens are its only authentication, and port 0 lets the
//! kernel pick a port no other runtime or second daemon holds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::portforward::{self, Forward};
use super::remotecommand::{self, Session};
use super::tokens::{TokenCache, TokenError};
use super::{spdy, websocket, StreamingBackend};

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_PROTOCOLS_HEADER: &str = "x-accepted-stream-protocol-versions";

/// An exec the CRI service approved (CRI `ExecRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// An attach the CRI service approved (CRI `AttachRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A port forward the CRI service approved (CRI `PortForwardRequest`; its
/// `int32` ports converted). No ports allows any port the client names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub pod_sandbox_id: String,
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct StreamingConfig {
    /// Where to listen (default `127.0.0.1:0`).
    pub address: SocketAddr,
    /// The URL prefix handed out (default `http://` + the bound address).
    pub base_url: Option<String>,
    /// How long an unused URL stays valid (kubelet: one minute).
    pub token_ttl: Duration,
    /// How long a client may take to open a session's streams (kubelet: 30 s).
    pub stream_creation_timeout: Duration,
    /// A connection that carries nothing either way for this long is
    /// closed (kubelet and containerd: 4 h).
    pub stream_idle_timeout: Duration,
    /// Most URLs outstanding at once (kubelet: 1000).
    pub max_in_flight: usize,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            base_url: None,
            token_ttl: Duration::from_secs(60),
            stream_creation_timeout: Duration::from_secs(30),
            stream_idle_timeout: Duration::from_secs(4 * 3600),
            max_in_flight: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("invalid streaming request: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot listen for CRI streaming on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What a token redeems.
#[derive(Debug, Clone)]
enum Approved {
    Exec(Session),
    Attach(Session),
    PortForward(Forward),
}

struct Shared {
    tokens: TokenCache<Approved>,
    backend: Arc<dyn StreamingBackend>,
    creation_timeout: Duration,
    idle_timeout: Duration,
}

/// The streaming server; dropping it stops accepting connections.
pub struct StreamingServer {
    shared: Arc<Shared>,
    base_url: String,
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl StreamingServer {
    /// Binds `config.address` and serves until dropped.
    pub async fn start(
        config: StreamingConfig,
        backend: Arc<dyn StreamingBackend>,
    ) -> Result<Self, StreamingError> {
        let bind_error = |source| StreamingError::Bind {
            address: config.address,
            source,
        };
        let listener = TcpListener::bind(config.address)
            .await
            .map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let shared = Arc::new(Shared {
            tokens: TokenCache::new(config.token_ttl, config.max_in_flight),
            backend,
            creation_timeout: config.stream_creation_timeout,
            idle_timeout: config.stream_idle_timeout,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        let base_url = config
            .base_url
            .unwrap_or_else(|| format!("http://{local_addr}"));
        Ok(StreamingServer {
            shared,
            base_url: base_url.trim_end_matches('/').to_string(),
            local_addr,
            accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL for CRI `ExecResponse.url`.
    pub fn exec_url(&self, request: ExecRequest) -> Result<String, StreamingError> {
        if request.cmd.is_empty() {
            return Err(StreamingError::Invalid("cmd must not be empty"));
        }
        let session = session(
            request.container_id,
            Some(request.cmd),
            [request.stdin, request.stdout, request.stderr, request.tty],
        )?;
        self.url("exec", Approved::Exec(session))
    }

    /// The URL for CRI `AttachResponse.url`.
    pub fn attach_url(&self, request: AttachRequest) -> Result<String, StreamingError> {
        let session = session(
            request.container_id,
            None,
            [request.stdin, request.stdout, request.stderr, request.tty],
        )?;
        self.url("attach", Approved::Attach(session))
    }

    /// The URL for CRI `PortForwardResponse.url`.
    pub fn port_forward_url(&self, request: PortForwardRequest) -> Result<String, StreamingError> {
        if request.pod_sandbox_id.is_empty() {
            return Err(StreamingError::Invalid("missing required pod_sandbox_id"));
        }
        if request.ports.contains(&0) {
            return Err(StreamingError::Invalid("port 0 cannot be forwarded"));
        }
        let forward = Forward {
            pod_sandbox_id: request.pod_sandbox_id,
            ports: request.ports,
        };
        self.url("portforward", Approved::PortForward(forward))
    }

    fn url(&self, kind: &str, approved: Approved) -> Result<String, StreamingError> {
        let token = self.shared.tokens.insert(approved)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }
}

impl Drop for StreamingServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// kubelet's checks on exec and attach requests.
fn session(
    container_id: String,
    command: Option<Vec<String>>,
    [stdin, stdout, stderr, tty]: [bool; 4],
) -> Result<Session, StreamingError> {
    if container_id.is_empty() {
        return Err(StreamingError::Invalid("missing required container_id"));
    }
    if tty && stderr {
        return Err(StreamingError::Invalid(
            "tty and stderr cannot both be true",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(StreamingError::Invalid(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    Ok(Session {
        container_id,
        command,
        stdin,
        stdout,
        stderr,
        tty,
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors and the like: wait for some to free up.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(request, shared)) }
            });
            // A client that drops the connection mid-request is no error
            // of ours.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn plain(status: StatusCode, text: impl Into<String>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(text.into() + "\n")));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

fn route(request: Request<hyper::body::Incoming>, shared: Arc<Shared>) -> Reply {
    if request.method() != Method::GET && request.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed");
    }
    let path = request.uri().path().trim_start_matches('/');
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    };
    // The token is spent whatever happens next, as in kubelet.
    let approved = match (kind, shared.tokens.consume(token)) {
        (kind, Some(approved)) if kind == approved.kind() => approved,
        _ => return plain(StatusCode::NOT_FOUND, "404 page not found"),
    };
    if is_websocket(request.headers()) {
        upgrade_websocket(request, approved, shared)
    } else {
        upgrade_spdy(request, approved, shared)
    }
}

impl Approved {
    fn kind(&self) -> &'static str {
        match self {
            Approved::Exec(_) => "exec",
            Approved::Attach(_) => "attach",
            Approved::PortForward(_) => "portforward",
        }
    }
}

/// The comma-separated values of every `name` header, trimmed.
fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

fn wants_upgrade_to(headers: &HeaderMap, protocol: &str) -> bool {
    header_values(headers, "connection")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("upgrade"))
        && header_values(headers, "upgrade")
            .iter()
            .any(|v| v.eq_ignore_ascii_case(protocol))
}

fn is_websocket(headers: &HeaderMap) -> bool {
    wants_upgrade_to(headers, "websocket")
}

fn switching(headers: &[(&'static str, String)]) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            reply.headers_mut().append(*name, value);
        }
    }
    reply
}

fn upgrade_spdy(
    mut request: Request<hyper::body::Incoming>,
    approved: Approved,
    shared: Arc<Shared>,
) -> Reply {
    let supported = match approved {
        Approved::PortForward(_) => portforward::SPDY_PROTOCOLS,
        _ => remotecommand::SPDY_PROTOCOLS,
    };
    let offered = header_values(request.headers(), PROTOCOL_HEADER);
    if offered.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        );
    }
    // The client's preference wins, as in apimachinery's negotiation.
    let Some(protocol) = offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == *o).copied())
    else {
        let mut reply = plain(
            StatusCode::FORBIDDEN,
            format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"),
        );
        for accepted in supported {
            reply.headers_mut().append(
                ACCEPTED_PROTOCOLS_HEADER,
                HeaderValue::from_static(accepted),
            );
        }
        return reply;
    };
    if !wants_upgrade_to(request.headers(), "SPDY/3.1") {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (Connection: Upgrade, Upgrade: SPDY/3.1)",
        );
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let Ok(conn) = spdy::Connection::start(TokioIo::new(upgraded), shared.idle_timeout) else {
            return;
        };
        match approved {
            Approved::Exec(session) | Approved::Attach(session) => {
                remotecommand::serve_spdy(
                    conn,
                    protocol,
                    session,
                    shared.backend.as_ref(),
                    shared.creation_timeout,
                )
                .await
            }
            Approved::PortForward(forward) => {
                portforward::serve_spdy(conn, forward, shared.backend.clone()).await
            }
        }
    });
    switching(&[
        ("connection", "Upgrade".into()),
        ("upgrade", "SPDY/3.1".into()),
        (PROTOCOL_HEADER, protocol.into()),
    ])
}

fn upgrade_websocket(
    mut request: Request<hyper::body::Incoming>,
    approved: Approved,
    shared: Arc<Shared>,
) -> Reply {
    let headers = request.headers();
    if header_values(headers, "sec-websocket-version") != ["13"] {
        return plain(
            StatusCode::BAD_REQUEST,
            "unsupported Sec-WebSocket-Version (13 is)",
        );
    }
    let Some(key) = headers
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
    else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let supported = match approved {
        Approved::PortForward(_) => portforward::WEBSOCKET_PROTOCOLS,
        _ => remotecommand::WEBSOCKET_PROTOCOLS,
    };
    let offered = header_values(headers, "sec-websocket-protocol");
    let Some(protocol) = websocket::choose_protocol(&offered, supported) else {
        return plain(
            StatusCode::FORBIDDEN,
            format!("requested protocol(s) are not supported: {offered:?}; supports {supported:?}"),
        );
    };
    let ports = match &approved {
        Approved::PortForward(forward) if !forward.ports.is_empty() => forward.ports.clone(),
        Approved::PortForward(_) => {
            match portforward::query_ports(request.uri().query().unwrap_or("")) {
                Ok(ports) => ports,
                Err(e) => return plain(StatusCode::BAD_REQUEST, e),
            }
        }
        _ => Vec::new(),
    };
    let mut reply = vec![
        ("connection", "Upgrade".to_string()),
        ("upgrade", "websocket".to_string()),
        ("sec-websocket-accept", websocket::accept_key(key)),
    ];
    if !protocol.is_empty() {
        reply.push(("sec-websocket-protocol", protocol.to_string()));
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let conn =
            websocket::Connection::new(TokioIo::new(upgraded), protocol, shared.idle_timeout);
        match approved {
            Approved::Exec(session) | Approved::Attach(session) => {
                remotecommand::serve_websocket(conn, protocol, session, shared.backend.as_ref())
                    .await
            }
            Approved::PortForward(forward) => {
                portforward::serve_websocket(conn, forward, ports, shared.backend.clone()).await
            }
        }
    });
    switching(&reply)
}
