//! The Tasks service: a container's process (start, stop, kill, wait,
//! exec, pause, stats), its logs, and attach (the client's stdin in, the
//! container's output out), over [`crate::tasks::Tasks`].

use std::time::Duration;

use berth_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::workloads::{
    blocking, containers_status, reply, tasks_status, timestamp, Stream_, Workloads,
};
use crate::containers::ContainerRecord;
use crate::tasks;

fn state(record: &ContainerRecord, running: bool) -> pb::TaskState {
    use pb::container::Status as C;
    use pb::task_state::Status as T;
    let status = match (record.status(), running) {
        (C::Paused, true) => T::Paused,
        (_, true) => T::Running,
        (C::Created, false) => T::Created,
        _ => T::Stopped,
    };
    pb::TaskState {
        container_id: record.id.clone(),
        exec_id: String::new(),
        pid: if running { record.state.pid } else { 0 },
        status: status as i32,
        exit_status: record.state.exit_status,
        exited_at: timestamp(record.state.finished_at),
    }
}

fn name_container(metadata: &mut tonic::metadata::MetadataMap, id: &str) {
    // An id is hex: always a valid header value.
    if let Ok(value) = id.parse() {
        metadata.insert(berth_proto::CONTAINER_ID_HEADER, value);
    }
}

impl Workloads {
    /// An Attach's error after it created its container: the error names
    /// the container, and a `run --rm` one (which only this call's client
    /// could name) is removed first.
    async fn failed_after(&self, mut status: Status, created: Option<&pb::Container>) -> Status {
        if let Some(created) = created {
            name_container(status.metadata_mut(), &created.id);
            if created.config.as_ref().is_some_and(|c| c.transient) {
                let _ = self.tasks.delete_container(&created.id, true, true).await;
            }
        }
        status
    }
}

#[tonic::async_trait]
impl pb::tasks_server::Tasks for Workloads {
    type LogsStream = Stream_<pb::LogEntry>;
    type AttachStream = Stream_<pb::AttachOutput>;

    async fn start(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        let request = request.into_inner();
        let pid = self
            .tasks
            .start(&request.container_id, &request.exec_id)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::StartTaskResponse { pid }))
    }

    async fn stop(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        let request = request.into_inner();
        let exit_status = self
            .tasks
            .stop(&request.container_id, request.timeout)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::StopTaskResponse { exit_status }))
    }

    async fn kill(
        &self,
        request: Request<pb::KillTaskRequest>,
    ) -> Result<Response<pb::KillTaskResponse>, Status> {
        let r = request.into_inner();
        let signal = if r.signal == 0 {
            libc::SIGKILL as u32
        } else {
            r.signal
        };
        reply(
            self.tasks
                .kill(&r.container_id, &r.exec_id, signal, r.all)
                .await,
            pb::KillTaskResponse {},
        )
    }

    async fn wait(
        &self,
        request: Request<pb::WaitTaskRequest>,
    ) -> Result<Response<pb::WaitTaskResponse>, Status> {
        let r = request.into_inner();
        let exit_status = self
            .tasks
            .wait(&r.container_id, &r.exec_id)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::WaitTaskResponse {
            exit_status,
            exited_at: Some(crate::clock::now_timestamp()),
        }))
    }

    async fn state(
        &self,
        request: Request<pb::TaskStateRequest>,
    ) -> Result<Response<pb::TaskState>, Status> {
        let r = request.into_inner();
        let record = self
            .tasks
            .containers
            .resolve(&r.container_id)
            .map_err(containers_status)?;
        Ok(Response::new(state(
            &record,
            self.tasks.is_running(&record.id),
        )))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        // Tasks are torn down by the daemon when they exit; deleting one
        // that still runs is refused, one that has exited reports its status.
        let r = request.into_inner();
        let record = self
            .tasks
            .containers
            .resolve(&r.container_id)
            .map_err(containers_status)?;
        if self.tasks.is_running(&record.id) && r.exec_id.is_empty() {
            return Err(tasks_status(tasks::Error::Running(record.name)));
        }
        Ok(Response::new(pb::DeleteTaskResponse {
            exit_status: record.state.exit_status,
            exited_at: timestamp(record.state.finished_at),
        }))
    }

    async fn exec(
        &self,
        request: Request<pb::ExecProcessRequest>,
    ) -> Result<Response<pb::ExecProcessResponse>, Status> {
        let r = request.into_inner();
        let exec_id = self
            .tasks
            .exec(&r.container_id, &r)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::ExecProcessResponse { exec_id }))
    }

    async fn resize_pty(
        &self,
        request: Request<pb::ResizePtyRequest>,
    ) -> Result<Response<pb::ResizePtyResponse>, Status> {
        let r = request.into_inner();
        reply(
            self.tasks
                .resize(&r.container_id, &r.exec_id, r.width, r.height)
                .await,
            pb::ResizePtyResponse {},
        )
    }

    async fn close_stdin(
        &self,
        request: Request<pb::CloseStdinRequest>,
    ) -> Result<Response<pb::CloseStdinResponse>, Status> {
        let r = request.into_inner();
        reply(
            self.tasks.close_stdin(&r.container_id, &r.exec_id).await,
            pb::CloseStdinResponse {},
        )
    }

    async fn pause(
        &self,
        request: Request<pb::PauseTaskRequest>,
    ) -> Result<Response<pb::PauseTaskResponse>, Status> {
        reply(
            self.tasks.pause(&request.into_inner().container_id).await,
            pb::PauseTaskResponse {},
        )
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeTaskRequest>,
    ) -> Result<Response<pb::ResumeTaskResponse>, Status> {
        reply(
            self.tasks.resume(&request.into_inner().container_id).await,
            pb::ResumeTaskResponse {},
        )
    }

    async fn pids(
        &self,
        request: Request<pb::PidsRequest>,
    ) -> Result<Response<pb::PidsResponse>, Status> {
        let pids = self
            .tasks
            .pids(&request.into_inner().container_id)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::PidsResponse { pids }))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let stats = self
            .tasks
            .stats(&request.into_inner().container_id)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(stats))
    }

    async fn list(
        &self,
        _: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let records = self.tasks.containers.list().map_err(containers_status)?;
        let tasks = records
            .iter()
            .filter(|r| self.tasks.is_running(&r.id))
            .map(|r| state(r, true))
            .collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = request.into_inner();
        let record = self
            .tasks
            .containers
            .resolve(&r.container_id)
            .map_err(containers_status)?;
        // Subscribed before the file is read: nothing falls in between.
        let (mut live, mut exit) = self.tasks.follow(&record.id);
        let bundle = record.bundle.clone();
        let tail = r.tail as usize;
        let past = blocking(move || crate::logs::read(&bundle, tail)).await?;
        let last = past
            .last()
            .and_then(|e| e.time.as_ref())
            .map(|t| t.seconds as u128 * 1_000_000_000 + t.nanos as u128)
            .unwrap_or(0);
        let (tx, rx) = mpsc::channel(64);
        let follow = r.follow && self.tasks.is_running(&record.id);
        let tasks = self.tasks.clone();
        let id = record.id.clone();
        tokio::spawn(async move {
            for entry in past {
                if tx.send(Ok(entry)).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            let mut ended = 0;
            let streams = if tasks
                .containers
                .resolve(&id)
                .map(|r| r.settings().tty)
                .unwrap_or(false)
            {
                1
            } else {
                2
            };
            loop {
                tokio::select! {
                    chunk = live.recv() => match chunk {
                        Ok(chunk) if chunk.data.is_empty() => {
                            ended += 1;
                            if ended >= streams && exit.borrow().is_some() {
                                return;
                            }
                        }
                        Ok(chunk) if chunk.time > last => {
                            if tx.send(Ok(crate::logs::entry(&chunk))).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    changed = exit.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if exit.borrow().is_some() && ended >= streams {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn attach(
        &self,
        request: Request<Streaming<pb::AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut input = request.into_inner();
        let mut first = input.message().await?.ok_or_else(|| {
            Status::invalid_argument("attach: the first message names the process")
        })?;
        // `run`: the container is made here first (see AttachInput.create).
        let created = match first.create.take() {
            Some(create) if first.exec_id.is_empty() => {
                let created = self.create_container(create).await?;
                first.container_id = created.id.clone();
                Some(created)
            }
            Some(_) => {
                return Err(Status::invalid_argument(
                    "attach: an exec cannot be created with its container",
                ))
            }
            None => None,
        };
        let tasks::Attached {
            mut output,
            mut exit,
            container_id: id,
            streams,
        } = match self
            .tasks
            .attach(&first.container_id, &first.exec_id, first.before_start)
        {
            Ok(attached) => attached,
            Err(e) => return Err(self.failed_after(tasks_status(e), created.as_ref()).await),
        };
        let exec_id = first.exec_id.clone();
        let start = first.start;
        let waits_for_start = exec_id.is_empty() && !self.tasks.init_alive(&id);
        let tasks = self.tasks.clone();
        let (input_id, input_exec) = (id.clone(), exec_id.clone());
        let (start_id, start_exec) = (id.clone(), exec_id.clone());
        tokio::spawn(async move {
            let mut next = Some(first);
            loop {
                let Some(message) = next.take() else {
                    match input.message().await {
                        Ok(Some(m)) => {
                            next = Some(m);
                            continue;
                        }
                        _ => break,
                    }
                };
                if !message.stdin.is_empty() {
                    tasks
                        .write_stdin(&input_id, &input_exec, &message.stdin)
                        .await;
                }
                if message.width > 0 && message.height > 0 {
                    let _ = tasks
                        .resize(&input_id, &input_exec, message.width, message.height)
                        .await;
                }
                if message.close_stdin {
                    let _ = tasks.close_stdin(&input_id, &input_exec).await;
                }
            }
        });
        let (tx, rx) = mpsc::channel(64);
        let tasks = self.tasks.clone();
        tokio::spawn(async move {
            let mut ended = 0;
            // Attached to the init of a container that is not running: the
            // watch still holds the last run's exit; this client waits for
            // the run it is about to start.
            let mut status: Option<u32> = if waits_for_start {
                None
            } else {
                *exit.borrow()
            };
            let mut drain_until =
                status.map(|_| tokio::time::Instant::now() + Duration::from_secs(2));
            loop {
                tokio::select! {
                    chunk = output.recv() => match chunk {
                        Ok(chunk) if chunk.data.is_empty() => ended += 1,
                        Ok(chunk) => {
                            let message = pb::AttachOutput {
                                stream: chunk.stream as i32,
                                data: chunk.data,
                                exited: false,
                                exit_status: 0,
                                removed: false,
                            };
                            if tx.send(Ok(message)).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => {
                            // Every writer is gone; the exit may still be
                            // on its way (or already set on a closed watch).
                            if status.is_none() {
                                status = exit.wait_for(|s| s.is_some()).await.ok().and_then(|v| *v);
                            }
                            break;
                        }
                    },
                    changed = exit.changed(), if status.is_none() => {
                        if changed.is_err() {
                            break;
                        }
                        status = *exit.borrow();
                        // The reset at a start is a change too: the drain
                        // clock starts with the exit only.
                        if status.is_some() {
                            drain_until = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                        }
                    }
                    // An end of stream this client subscribed too late to see
                    // must not keep it waiting once the exit is known.
                    _ = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() => {
                        ended = streams;
                    }
                }
                // Every output stream has ended: the exit is the last message.
                if status.is_some() && ended >= streams {
                    break;
                }
            }
            if let Some(code) = status {
                let removed = exec_id.is_empty() && tasks.is_removed(&id);
                let _ = tx
                    .send(Ok(pb::AttachOutput {
                        exited: true,
                        exit_status: code,
                        removed,
                        ..Default::default()
                    }))
                    .await;
            }
        });
        // Started here when asked: the output above is already subscribed
        // to, and the reply waits for the start, so a failed start is this
        // call's error, as a Start's would be.
        if start {
            if let Err(e) = self.tasks.start(&start_id, &start_exec).await {
                return Err(self.failed_after(tasks_status(e), created.as_ref()).await);
            }
        }
        let mut response = Response::new(Box::pin(ReceiverStream::new(rx)) as Self::AttachStream);
        if let Some(created) = &created {
            name_container(response.metadata_mut(), &created.id);
        }
        Ok(response)
    }
}
