//! The CRI runtime's side of the streaming contract
//! ([`crate::streaming::StreamingBackend`]): exec and attach through the
//! CRI's tasks with the session's streams, and port forwarding to the
//! loopback of a pod's network namespace.

use std::sync::Arc;

use async_trait::async_trait;
use berth_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Cri;
use crate::streaming::{BackendError, Duplex, SessionIo, StreamingBackend};
use crate::tasks::Attached;

/// The backend over a CRI runtime.
#[derive(Clone)]
pub struct Backend(pub Arc<Cri>);

fn failed(e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(e.to_string())
}

impl Backend {
    fn known(&self, container_id: &str) -> Result<String, BackendError> {
        match super::container::get(&self.0, container_id) {
            Ok(Some(record)) => Ok(record.id),
            Ok(None) => Err(BackendError::NotFound(format!("container {container_id}"))),
            Err(e) => Err(failed(e)),
        }
    }

    /// Copies the session's stdin to the process (closing it at EOF) and
    /// its resizes to the terminal, in the background.
    fn pump_input(&self, id: &str, exec_id: &str, io: &mut SessionIo) {
        if let Some(mut stdin) = io.stdin.take() {
            let tasks = self.0.tasks.clone();
            let (id, exec_id) = (id.to_string(), exec_id.to_string());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match stdin.read(&mut buf).await {
                        Ok(n) if n > 0 => {
                            if !tasks.write_stdin(&id, &exec_id, &buf[..n]).await {
                                break;
                            }
                        }
                        _ => {
                            let _ = tasks.close_stdin(&id, &exec_id).await;
                            break;
                        }
                    }
                }
            });
        }
        if let Some(mut resize) = io.resize.take() {
            let tasks = self.0.tasks.clone();
            let (id, exec_id) = (id.to_string(), exec_id.to_string());
            tokio::spawn(async move {
                while let Some(size) = resize.recv().await {
                    let _ = tasks
                        .resize(&id, &exec_id, size.width.into(), size.height.into())
                        .await;
                }
            });
        }
    }
}

/// Writes the process's output to the session until every stream has
/// ended; `false` if the client went away first. An exec's output waits
/// for its session ([`crate::logs::copy_fifo`]); an init's does not, and
/// a session that fell so far behind that output was dropped ends with an
/// error rather than a success missing output.
async fn pump_output(
    attached: &mut Attached,
    io: &mut SessionIo,
    tty: bool,
) -> Result<bool, BackendError> {
    let mut ended = 0;
    while ended < attached.streams {
        match attached.output.recv().await {
            Ok(chunk) if chunk.data.is_empty() => ended += 1,
            Ok(chunk) => {
                let sink = match (chunk.stream, tty) {
                    (pb::StdioStream::Stderr, false) => io.stderr.as_mut(),
                    _ => io.stdout.as_mut(),
                };
                if let Some(sink) = sink {
                    if sink.write_all(&chunk.data).await.is_err() {
                        return Ok(false);
                    }
                    let _ = sink.flush().await;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(lost)) => {
                return Err(failed(format!(
                    "the client read too slowly: {lost} chunks of output were dropped"
                )))
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    Ok(true)
}

#[async_trait]
impl StreamingBackend for Backend {
    async fn exec(
        &self,
        container_id: &str,
        command: Vec<String>,
        tty: bool,
        mut io: SessionIo,
    ) -> Result<i32, BackendError> {
        let id = self.known(container_id)?;
        let tasks = &self.0.tasks;
        let exec_id = tasks
            .exec(
                &id,
                &pb::ExecProcessRequest {
                    container_id: id.clone(),
                    args: command,
                    tty,
                    stdin_open: io.stdin.is_some(),
                    ..Default::default()
                },
            )
            .await
            .map_err(failed)?;
        let mut attached = tasks.attach(&id, &exec_id, false).map_err(failed)?;
        tasks.start(&id, &exec_id).await.map_err(failed)?;
        self.pump_input(&id, &exec_id, &mut io);
        pump_output(&mut attached, &mut io, tty).await?;
        Ok(super::container::exit_status(&mut attached.exit).await as i32)
    }

    async fn attach(
        &self,
        container_id: &str,
        tty: bool,
        mut io: SessionIo,
    ) -> Result<Option<i32>, BackendError> {
        let id = self.known(container_id)?;
        let mut attached = self.0.tasks.attach(&id, "", false).map_err(failed)?;
        self.pump_input(&id, "", &mut io);
        if !pump_output(&mut attached, &mut io, tty).await? {
            return Ok(None);
        }
        let code = attached
            .exit
            .wait_for(|s| s.is_some())
            .await
            .map(|s| s.map(|c| c as i32))
            .unwrap_or(None);
        Ok(code)
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        mut stream: Box<dyn Duplex>,
    ) -> Result<(), BackendError> {
        let pod = super::sandbox::get(&self.0, pod_sandbox_id)
            .map_err(failed)?
            .ok_or_else(|| BackendError::NotFound(format!("pod sandbox {pod_sandbox_id}")))?;
        let netns = pod.netns(&self.0);
        let connected = tokio::task::spawn_blocking(move || connect_in(netns, port))
            .await
            .map_err(failed)?
            .map_err(|e| failed(format!("cannot connect to port {port} in the pod: {e}")))?;
        let socket = tokio::net::TcpStream::from_std(connected).map_err(failed)?;
        let (mut client_in, mut client_out) = tokio::io::split(&mut stream);
        let (mut pod_in, mut pod_out) = socket.into_split();
        // The client's end of input only half-closes the connection (the
        // pod sees EOF and still answers); the session ends when the pod's
        // side does, as kubelet's port-forward ends: a client reading until
        // EOF (an HTTP/1.0 fetch) gets it.
        let to_pod = async {
            let copied = tokio::io::copy(&mut client_in, &mut pod_out).await;
            let _ = pod_out.shutdown().await;
            copied
        };
        let to_client = async {
            let copied = tokio::io::copy(&mut pod_in, &mut client_out).await;
            let _ = client_out.shutdown().await;
            copied
        };
        tokio::pin!(to_client);
        tokio::select! {
            done = &mut to_client => done.map(drop).map_err(failed),
            done = to_pod => match done {
                Ok(_) => to_client.await.map(drop).map_err(failed),
                Err(e) => Err(failed(e)),
            },
        }
    }
}

/// A TCP connection to `127.0.0.1:port` in the network namespace at
/// `netns` (the host's with `None`). A thread of its own enters the
/// namespace: a socket keeps the namespace it was made in, and the
/// daemon's other threads never leave the host's.
fn connect_in(
    netns: Option<std::path::PathBuf>,
    port: u16,
) -> std::io::Result<std::net::TcpStream> {
    let connect = move || -> std::io::Result<std::net::TcpStream> {
        if let Some(path) = &netns {
            let ns = std::fs::File::open(path)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        }
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    };
    std::thread::spawn(connect)
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the connecting thread panicked")))
}
