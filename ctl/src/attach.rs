//! A process's stdio over `Tasks.Attach`, as `run`, `start -a` and `exec`
//! use it: one call attaches and starts (the first message names the
//! process and asks for the start, so no output is missed), then output is
//! copied to stdout/stderr and stdin to the process until the last message
//! brings the exit status (and, for `run --rm`, says the container is gone).
//!
//! With a terminal: the local terminal goes raw (restored when the session
//! ends, on errors too), the pty gets this window's size at the start and
//! on every SIGWINCH. Without one, SIGINT/SIGTERM/SIGHUP/SIGQUIT sent to
//! berthctl are passed on to the process, as docker's sig-proxy does.
//!
//! `attach` reaches a process that is already running: stdin is scanned
//! for the detach keys (docker's default ctrl-p,ctrl-q), which end the
//! session with "read escape sequence" and exit 1, leaving it running.

use std::io::{Read, Write};

use anyhow::{Context, Result};
use berth_proto::v1 as pb;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{rpc, Daemon};
use crate::containers::start_failed;
use crate::output::short_id;
use crate::terminal;

/// Which process, and how its stdio is wired.
#[derive(Debug, Clone)]
pub struct Target {
    pub container: String,
    pub exec_id: String,
    pub tty: bool,
    pub stdin: bool,
    /// The process runs already (`attach`), rather than being started
    /// right after attaching (`run`, `start -a`, `exec`).
    pub running: bool,
    /// Keys that detach, scanned for in stdin.
    pub detach_keys: Option<Vec<u8>>,
}

/// The exit status `attach` gives after the detach keys: docker's.
pub const DETACHED: u32 = 1;

/// How an attached session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The process exited with `status`; `removed`: the daemon removed its
    /// container at the exit (`run --rm`).
    Exited { status: u32, removed: bool },
    /// The detach keys were typed: the process runs on.
    Detached,
}

impl Ended {
    /// The exit status berthctl gives: the process's, or docker's after a
    /// detach.
    pub fn status(self) -> u32 {
        match self {
            Ended::Exited { status, .. } => status,
            Ended::Detached => DETACHED,
        }
    }
}

/// docker's `--detach-keys` syntax: comma-separated keys, each a single
/// character or `ctrl-X` (X one of a-z @ [ \ ] ^ _).
pub fn parse_detach_keys(text: &str) -> Result<Vec<u8>> {
    let mut keys = Vec::new();
    for key in text.split(',') {
        let key = key.trim();
        let byte = match key.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => match c.as_bytes()[0] {
                b @ b'a'..=b'z' => b - b'a' + 1,
                b'@' => 0,
                b @ (b'[' | b'\\' | b']' | b'^' | b'_') => b - b'[' + 27,
                _ => anyhow::bail!("invalid detach keys {text:?}: unknown key {key:?}"),
            },
            None if key.len() == 1 => key.as_bytes()[0],
            _ => anyhow::bail!("invalid detach keys {text:?}: use keys like ctrl-p,ctrl-q or a,b"),
        };
        keys.push(byte);
    }
    Ok(keys)
}

/// An attached process, not yet streaming.
pub struct Attached {
    target: Target,
    input: mpsc::Sender<pb::AttachInput>,
    output: tonic::Streaming<pb::AttachOutput>,
}

/// Attaches to `target`'s process and, unless it runs already, has the
/// daemon start it: the call answers once it has started, and a start that
/// fails is this call's error (with docker's exit codes, see
/// [`start_failed`]).
pub async fn attach(d: &Daemon, target: Target) -> Result<Attached> {
    let first = pb::AttachInput {
        container_id: target.container.clone(),
        exec_id: target.exec_id.clone(),
        before_start: !target.running,
        start: !target.running,
        ..Default::default()
    };
    let (input, output) = open(d, first).await;
    let output = if target.running {
        output
            .map_err(rpc)
            .with_context(|| format!("cannot attach to {}", target.container))?
    } else {
        output
            .map_err(rpc)
            .with_context(|| format!("cannot start {}", short_id(&target.container)))
            .map_err(start_failed)?
    }
    .into_inner();
    Ok(Attached {
        target,
        input,
        output,
    })
}

/// `run`: the daemon creates the container, attaches `target`'s stdio to
/// its init and starts it, in one call; `target.container` is filled from
/// the reply. A failed create makes nothing; a failed start (docker's exit
/// codes) leaves a `run --rm` container removed by the daemon.
pub async fn run(
    d: &Daemon,
    create: pb::CreateContainerRequest,
    target: Target,
) -> Result<Attached> {
    let first = pb::AttachInput {
        create: Some(create),
        before_start: true,
        start: true,
        ..Default::default()
    };
    let (input, output) = open(d, first).await;
    let named = |metadata: &tonic::metadata::MetadataMap| {
        metadata
            .get(berth_proto::CONTAINER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let output = match output {
        Ok(output) => output,
        Err(status) => {
            return Err(match named(status.metadata()) {
                Some(id) => {
                    start_failed(rpc(status).context(format!("cannot start {}", short_id(&id))))
                }
                None => rpc(status).context("cannot create the container"),
            })
        }
    };
    let container = named(output.metadata()).context(
        "berth-imaged did not say which container it created (is it older than berthctl?)",
    )?;
    Ok(Attached {
        target: Target {
            container,
            ..target
        },
        input,
        output: output.into_inner(),
    })
}

/// Makes the Attach call with `first` queued before it (the daemon reads
/// it before answering); the sender carries stdin and sizes after it.
async fn open(
    d: &Daemon,
    first: pb::AttachInput,
) -> (
    mpsc::Sender<pb::AttachInput>,
    std::result::Result<tonic::Response<tonic::Streaming<pb::AttachOutput>>, tonic::Status>,
) {
    let (input, rx) = mpsc::channel(16);
    let _ = input.send(first).await;
    let output = d.tasks().attach(ReceiverStream::new(rx)).await;
    (input, output)
}

impl Attached {
    /// The container's id.
    pub fn container(&self) -> &str {
        &self.target.container
    }

    /// Streams until the process exits or the detach keys are typed.
    pub async fn stream(mut self, d: &Daemon) -> Result<Ended> {
        let t = self.target.clone();
        let _raw = if t.tty && t.stdin {
            terminal::RawMode::enter().context("cannot put the terminal in raw mode")?
        } else {
            None
        };
        if t.tty {
            resize(d, &t).await;
            let (d2, t2) = (d.channel.clone(), t.clone());
            tokio::spawn(async move {
                let Ok(mut winch) = signal(SignalKind::window_change()) else {
                    return;
                };
                let mut tasks = pb::tasks_client::TasksClient::new(d2);
                while winch.recv().await.is_some() {
                    if let Some((cols, rows)) = terminal::size() {
                        let _ = tasks
                            .resize_pty(pb::ResizePtyRequest {
                                container_id: t2.container.clone(),
                                exec_id: t2.exec_id.clone(),
                                width: cols.into(),
                                height: rows.into(),
                            })
                            .await;
                    }
                }
            });
        } else {
            proxy_signals(d, &t);
        }
        let (detached_tx, mut detached) = mpsc::channel::<()>(1);
        if t.stdin {
            forward_stdin(self.input.clone(), t.detach_keys.clone(), detached_tx);
        }
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        let mut sink_closed = false;
        loop {
            let message = tokio::select! {
                m = self.output.message() => m,
                Some(()) = detached.recv() => {
                    drop(_raw);
                    eprintln!("read escape sequence");
                    return Ok(Ended::Detached);
                }
            };
            match message {
                Ok(Some(m)) if m.exited => {
                    return Ok(Ended::Exited {
                        status: m.exit_status,
                        removed: m.removed,
                    })
                }
                Ok(Some(_)) if sink_closed => {}
                Ok(Some(m)) => {
                    let write = if m.stream == pb::StdioStream::Stderr as i32 {
                        stderr.write_all(&m.data).and_then(|_| stderr.flush())
                    } else {
                        stdout.write_all(&m.data).and_then(|_| stdout.flush())
                    };
                    // A closed pipe (`| head`) ends the copy, not the
                    // process: its status still counts, and comes last on
                    // this stream (output still read, so the process is
                    // never held up writing it).
                    if write.is_err() {
                        sink_closed = true;
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(rpc(e)).context("the attach stream broke"),
            }
        }
        let status = d
            .tasks()
            .wait(pb::WaitTaskRequest {
                container_id: t.container.clone(),
                exec_id: t.exec_id.clone(),
            })
            .await
            .map_err(rpc)
            .context("cannot wait for the exit")?
            .into_inner()
            .exit_status;
        Ok(Ended::Exited {
            status,
            removed: false,
        })
    }
}

async fn resize(d: &Daemon, t: &Target) {
    if let Some((cols, rows)) = terminal::size() {
        let _ = d
            .tasks()
            .resize_pty(pb::ResizePtyRequest {
                container_id: t.container.clone(),
                exec_id: t.exec_id.clone(),
                width: cols.into(),
                height: rows.into(),
            })
            .await;
    }
}

/// Reads stdin on a thread (a blocking read that may outlive the
/// session: the process exits with it) and sends it on; end of input
/// closes the process's stdin. The detach keys, typed in a row, are held
/// back and end the session instead; a partial match is sent on as typed.
fn forward_stdin(
    input: mpsc::Sender<pb::AttachInput>,
    detach_keys: Option<Vec<u8>>,
    detached: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 << 10];
        let keys = detach_keys.unwrap_or_default();
        let mut matched = 0;
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            let mut data = Vec::with_capacity(n);
            for &b in &buf[..n] {
                if !keys.is_empty() && b == keys[matched] {
                    matched += 1;
                    if matched == keys.len() {
                        if !data.is_empty() {
                            let _ = input.blocking_send(pb::AttachInput {
                                stdin: data,
                                ..Default::default()
                            });
                        }
                        let _ = detached.blocking_send(());
                        return;
                    }
                    continue;
                }
                data.extend_from_slice(&keys[..matched]);
                matched = 0;
                data.push(b);
            }
            let message = if n == 0 {
                pb::AttachInput {
                    close_stdin: true,
                    ..Default::default()
                }
            } else if data.is_empty() {
                continue;
            } else {
                pb::AttachInput {
                    stdin: data,
                    ..Default::default()
                }
            };
            if input.blocking_send(message).is_err() || n == 0 {
                return;
            }
        }
    });
}

fn proxy_signals(d: &Daemon, t: &Target) {
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
    ] {
        let Ok(mut incoming) = signal(kind) else {
            continue;
        };
        let mut tasks = d.tasks();
        let t = t.clone();
        tokio::spawn(async move {
            while incoming.recv().await.is_some() {
                let _ = tasks
                    .kill(pb::KillTaskRequest {
                        container_id: t.container.clone(),
                        exec_id: t.exec_id.clone(),
                        signal: kind.as_raw_value() as u32,
                        all: false,
                    })
                    .await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::parse_detach_keys;

    #[test]
    fn detach_keys_as_docker_writes_them() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), [16, 17]);
        assert_eq!(
            parse_detach_keys("a, ctrl-@,ctrl-_").unwrap(),
            [b'a', 0, 31]
        );
        assert_eq!(parse_detach_keys("ctrl-[").unwrap(), [27]);
        for bad in ["ctrl-1", "ctrl-", "ab", ""] {
            assert!(parse_detach_keys(bad).is_err(), "{bad}");
        }
    }
}
