//! CRI containers: a [`CriRecord`] (what kubelet asked: metadata, labels,
//! annotations, log path, image) beside the [`ContainerRecord`] the CRI's
//! own [`crate::tasks::Tasks`] runs (bundle, snapshot, run state), both in
//! the CRI's database. Create mounts the image's snapshot and writes the
//! bundle ([`super::spec`]); start subscribes the CRI log writer
//! ([`super::logs`]) to the task's output before the task starts, so no
//! line is missed; status reports kubelet's reasons (Completed, Error,
//! OOMKilled) from the run state the tasks record.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1 as pb;
use k8s_cri::v1 as cri;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::sandbox::{self, PodRecord};
use super::{Cri, Error, Result};
use crate::bundle::RunDefaults;
use crate::containers::{ContainerRecord, RunState};
use crate::metadata::Table;

/// What the CRI keeps of a container besides its [`ContainerRecord`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CriRecord {
    pub id: String,
    pub pod_id: String,
    /// `ContainerConfig`, protobuf-encoded (resources as last updated).
    pub config: Vec<u8>,
    /// The image id (its config's digest).
    pub image_id: String,
    /// `repository@manifest-digest`.
    pub image_ref: String,
    /// Nanoseconds since the epoch; 0: not yet.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    /// The CRI log (`log_directory` of the pod joined with `log_path`).
    pub log_path: Option<PathBuf>,
}

impl CriRecord {
    pub fn config(&self) -> cri::ContainerConfig {
        cri::ContainerConfig::decode(self.config.as_slice()).unwrap_or_default()
    }
}

/// Most output ExecSync returns per stream (kubelet's own cap).
const MAX_EXEC_OUTPUT: usize = 16 << 20;

/// The container `id` names (in full or by a unique prefix), if any.
pub fn get(cri: &Cri, id: &str) -> Result<Option<CriRecord>> {
    if let Some(record) = cri.db.get::<CriRecord>(Table::CriContainers, id)? {
        return Ok(Some(record));
    }
    let all = list_records(cri)?;
    Ok(super::resolve_prefix(id, all.iter().map(|c| &c.id))
        .and_then(|full| all.into_iter().find(|c| c.id == full)))
}

fn must_get(cri: &Cri, id: &str) -> Result<CriRecord> {
    get(cri, id)?.ok_or_else(|| Error::NotFound(format!("container {id:?}")))
}

pub fn list_records(cri: &Cri) -> Result<Vec<CriRecord>> {
    let mut all: Vec<CriRecord> = cri
        .db
        .list::<CriRecord>(Table::CriContainers)?
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    all.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    Ok(all)
}

/// The containers of one pod.
pub fn of_pod(cri: &Cri, pod: &str) -> Result<Vec<CriRecord>> {
    Ok(list_records(cri)?
        .into_iter()
        .filter(|c| c.pod_id == pod)
        .collect())
}

/// CreateContainer. On any failure nothing is left.
pub async fn create(cri: &Cri, pod_id: &str, config: cri::ContainerConfig) -> Result<String> {
    let pod = sandbox::get(cri, pod_id)?
        .ok_or_else(|| Error::NotFound(format!("pod sandbox {pod_id:?}")))?;
    let lock = cri.pod_lock(&pod.id);
    let _held = lock.lock().await;
    if !pod.ready {
        return Err(Error::Precondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let metadata = config
        .metadata
        .clone()
        .filter(|m| !m.name.is_empty())
        .ok_or_else(|| Error::Invalid("the container config needs metadata with a name".into()))?;
    for other in of_pod(cri, &pod.id)? {
        let m = other.config().metadata.unwrap_or_default();
        if m.name == metadata.name && m.attempt == metadata.attempt {
            return Err(Error::Exists(format!(
                "the container name {}_{} is reserved for {} in pod {}",
                m.name, m.attempt, other.id, pod.id
            )));
        }
    }
    let wanted = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    let image = super::images::find(cri, &wanted)?;
    image
        .check_mountable()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let image_config = crate::content::Digest::parse(image.config.digest().as_ref())
        .map_err(|e| e.to_string())
        .and_then(|d| cri.images.content.read_blob(&d).map_err(|e| e.to_string()))
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string()))
        .map(|blob| RunDefaults::from_blob(&blob))
        .map_err(|e| Error::Failed(format!("image {wanted}: unreadable config: {e}")))?;
    let target_pid = target_pid(cri, &config)?;

    let id = crate::volumes::random_hex(32);
    let bundle = cri.dir.join("containers").join(&id);
    let snapshot_key = format!("cri/{id}");
    let mut undo = Undo {
        cri,
        bundle: None,
        snapshot: None,
        mounted: None,
    };
    crate::private::create_dir(&bundle)
        .and_then(|()| std::fs::create_dir_all(bundle.join("rootfs")))
        .map_err(|e| Error::Failed(format!("cannot create {}: {e}", bundle.display())))?;
    undo.bundle = Some(bundle.clone());
    let mounts = cri.images.snapshots.prepare(
        &snapshot_key,
        image.chain_id(),
        BTreeMap::from([("berth.cri.container".to_string(), id.clone())]),
    )?;
    undo.snapshot = Some(snapshot_key.clone());
    let rootfs = bundle.join("rootfs");
    match super::userns::of_pod(&pod.config())? {
        Some(mappings) => super::userns::mount_rootfs(cri, &pod, &bundle, &mounts, &mappings)?,
        None => crate::containers::mount_rootfs(&id, &mounts, &rootfs)?,
    }
    undo.mounted = Some(rootfs.clone());

    let spec = super::spec::build(&super::spec::Inputs {
        id: &id,
        config: &config,
        pod: &pod,
        netns: pod.netns(cri),
        image: &image_config,
        rootfs: &rootfs,
        default_seccomp: cri.tasks.containers.default_seccomp.as_ref(),
        target_pid,
    })?;
    let bytes = serde_json::to_vec_pretty(&spec).unwrap_or_default();
    crate::containers::write_private(&bundle.join("config.json"), &bytes, true)?;

    let log_path = (!config.log_path.is_empty())
        .then(|| PathBuf::from(&pod.config().log_directory).join(&config.log_path));
    let settings = pb::ContainerConfig {
        image: image.name.clone(),
        tty: config.tty,
        stdin_open: config.stdin,
        network: "none".into(),
        ..Default::default()
    };
    let now = super::now_nanos();
    let record = ContainerRecord {
        id: id.clone(),
        name: id.clone(),
        config: settings.encode_to_vec(),
        image_digest: image.manifest.digest().to_string(),
        snapshot_key,
        bundle,
        labels: config.labels.clone().into_iter().collect(),
        created: (now / 1_000_000_000) as u64,
        state: RunState {
            status: pb::container::Status::Created as i32,
            ..Default::default()
        },
        volumes: Vec::new(),
        stop_signal: crate::containers::stop_signal(&image_config),
        command: crate::containers::command(&spec),
    };
    let repository = image.name.split('@').next().unwrap_or_default();
    let repository = match repository.rfind(':') {
        Some(i) if !repository[i..].contains('/') => &repository[..i],
        _ => repository,
    };
    let cri_record = CriRecord {
        id: id.clone(),
        pod_id: pod.id.clone(),
        config: config.encode_to_vec(),
        image_id: image.config.digest().to_string(),
        image_ref: format!("{repository}@{}", image.target.digest()),
        created_at: now,
        started_at: 0,
        finished_at: 0,
        log_path,
    };
    cri.db.write(|txn| {
        crate::containers::insert(txn, &record)?;
        txn.put(Table::CriContainers, &id, &cri_record)?;
        Ok::<_, Error>(())
    })?;
    undo.disarm();
    emit(cri, &id, cri::ContainerEventType::ContainerCreatedEvent);
    Ok(id)
}

/// The init pid of the container PID mode TARGET names.
fn target_pid(cri: &Cri, config: &cri::ContainerConfig) -> Result<Option<u32>> {
    let options = super::spec::security_context(config).namespace_options;
    let Some(options) = options.filter(|o| o.pid == cri::NamespaceMode::Target as i32) else {
        return Ok(None);
    };
    let target = must_get(cri, &options.target_id)?;
    let record = cri.tasks.containers.resolve(&target.id)?;
    Ok((record.state.pid != 0 && cri.tasks.is_running(&record.id)).then_some(record.state.pid))
}

/// Undoes a half-made create.
struct Undo<'a> {
    cri: &'a Cri,
    bundle: Option<PathBuf>,
    snapshot: Option<String>,
    mounted: Option<PathBuf>,
}

impl Undo<'_> {
    fn disarm(&mut self) {
        self.bundle = None;
        self.snapshot = None;
        self.mounted = None;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if let Some(rootfs) = self.mounted.take() {
            crate::containers::unmount(&rootfs);
        }
        if let Some(key) = self.snapshot.take() {
            let _ = self.cri.images.snapshots.remove(&key);
        }
        if let Some(bundle) = self.bundle.take() {
            let _ = std::fs::remove_dir_all(bundle);
        }
    }
}

/// StartContainer: the log writer subscribed, the task started, its end
/// watched for the finish time.
pub async fn start(cri: &Arc<Cri>, id: &str) -> Result<()> {
    let record = must_get(cri, id)?;
    if record.started_at != 0 {
        return Err(Error::Precondition(format!(
            "container {} was started before: a CRI container runs once",
            record.id
        )));
    }
    let pod = sandbox::get(cri, &record.pod_id)?
        .ok_or_else(|| Error::NotFound(format!("pod sandbox {:?}", record.pod_id)))?;
    if !pod.ready {
        return Err(Error::Precondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let attached = cri.tasks.attach(&record.id, "", true)?;
    write_log(cri, &record, attached)?;
    cri.tasks.start(&record.id, "").await?;
    let started = super::now_nanos();
    set_times(cri, &record.id, Some(started), None)?;
    emit(
        cri,
        &record.id,
        cri::ContainerEventType::ContainerStartedEvent,
    );
    watch_exit(cri, &record.id);
    Ok(())
}

/// The CRI log writer of a container, subscribed to its output.
fn write_log(cri: &Cri, record: &CriRecord, attached: crate::tasks::Attached) -> Result<()> {
    let Some(path) = &record.log_path else {
        return Ok(());
    };
    let reopen = super::logs::spawn_writer(path.clone(), attached.output, attached.streams)
        .map_err(|e| Error::Failed(format!("cannot open the log {}: {e}", path.display())))?;
    cri.log_writers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(record.id.clone(), reopen);
    Ok(())
}

/// Records the finish time and sends the stopped event when the task ends.
fn watch_exit(cri: &Arc<Cri>, id: &str) {
    let cri = cri.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        if cri.tasks.wait(&id, "").await.is_ok() {
            let _ = set_times(&cri, &id, None, Some(super::now_nanos()));
            emit(&cri, &id, cri::ContainerEventType::ContainerStoppedEvent);
        }
    });
}

/// After a daemon restart: a running container's log and exit followed
/// again (its shim kept the output meanwhile).
pub fn follow(cri: &Arc<Cri>, record: &CriRecord) -> Result<()> {
    let attached = cri.tasks.attach(&record.id, "", false)?;
    write_log(cri, record, attached)?;
    watch_exit(cri, &record.id);
    Ok(())
}

/// Sends a container event (GetContainerEvents) with the container's and
/// its pod's status as they are now.
pub fn emit(cri: &Cri, id: &str, kind: cri::ContainerEventType) {
    if cri.events.receiver_count() == 0 {
        return;
    }
    let container = status(cri, id).ok();
    let pod = get(cri, id)
        .ok()
        .flatten()
        .and_then(|r| sandbox::get(cri, &r.pod_id).ok().flatten());
    emit_with(cri, id, kind, container, pod.as_ref());
}

fn emit_with(
    cri: &Cri,
    id: &str,
    kind: cri::ContainerEventType,
    container: Option<cri::ContainerStatus>,
    pod: Option<&PodRecord>,
) {
    let _ = cri.events.send(cri::ContainerEventResponse {
        container_id: id.to_string(),
        container_event_type: kind as i32,
        created_at: super::now_nanos(),
        pod_sandbox_status: pod.map(|p| sandbox::status(cri, p)),
        containers_statuses: container.into_iter().collect(),
    });
}

fn set_times(cri: &Cri, id: &str, started: Option<i64>, finished: Option<i64>) -> Result<()> {
    cri.db.write(|txn| {
        if let Some(mut r) = txn.get::<CriRecord>(Table::CriContainers, id)? {
            if let Some(t) = started {
                r.started_at = t;
            }
            if let Some(t) = finished.filter(|_| r.finished_at == 0) {
                r.finished_at = t;
            }
            txn.put(Table::CriContainers, id, &r)?;
        }
        Ok::<_, Error>(())
    })
}

/// StopContainer: the stop signal, SIGKILL after `timeout` seconds; an
/// unknown or stopped container is no error.
pub async fn stop(cri: &Cri, id: &str, timeout: i64) -> Result<()> {
    let Some(record) = get(cri, id)? else {
        return Ok(());
    };
    if !cri.tasks.is_running(&record.id) {
        return Ok(());
    }
    let timeout = u32::try_from(timeout.max(0)).unwrap_or(u32::MAX);
    cri.tasks.stop(&record.id, timeout).await?;
    set_times(cri, &record.id, None, Some(super::now_nanos()))
}

/// RemoveContainer: killed if it runs, then its bundle, snapshot and
/// records; an unknown container is no error.
pub async fn remove(cri: &Cri, id: &str) -> Result<()> {
    let Some(record) = get(cri, id)? else {
        return Ok(());
    };
    match cri.tasks.delete_container(&record.id, true, false).await {
        Ok(()) => {}
        Err(crate::tasks::Error::Containers(crate::containers::Error::NotFound(_))) => {}
        Err(e) => return Err(e.into()),
    }
    cri.log_writers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&record.id);
    super::stats::forget(cri, &record.id);
    cri.db.write(|txn| {
        txn.delete(Table::CriContainers, &record.id)?;
        Ok::<_, Error>(())
    })?;
    let pod = sandbox::get(cri, &record.pod_id)?;
    emit_with(
        cri,
        &record.id,
        cri::ContainerEventType::ContainerDeletedEvent,
        None,
        pod.as_ref(),
    );
    Ok(())
}

/// The CRI state, exit code and reason of a run state.
pub fn state_of(state: &RunState) -> (cri::ContainerState, i32, &'static str) {
    use pb::container::Status;
    match Status::try_from(state.status).unwrap_or(Status::Created) {
        Status::Created | Status::Unspecified => (cri::ContainerState::ContainerCreated, 0, ""),
        Status::Running | Status::Paused | Status::Restarting => {
            (cri::ContainerState::ContainerRunning, 0, "")
        }
        Status::Stopped => {
            let code = state.exit_status as i32;
            let reason = if state.oom_killed {
                "OOMKilled"
            } else if code == 0 {
                "Completed"
            } else {
                "Error"
            };
            (cri::ContainerState::ContainerExited, code, reason)
        }
    }
}

/// ContainerStatus.
pub fn status(cri: &Cri, id: &str) -> Result<cri::ContainerStatus> {
    let record = must_get(cri, id)?;
    let run = cri.tasks.containers.resolve(&record.id)?;
    let config = record.config();
    let (state, exit_code, reason) = state_of(&run.state);
    // The nanosecond times are recorded just after the task's start and
    // end; a status read in between falls back on the tasks' seconds, never
    // before the start.
    let started_at = match (state, record.started_at) {
        (cri::ContainerState::ContainerCreated, _) => 0,
        (_, 0) => (run.state.started_at as i64 * 1_000_000_000).max(record.created_at),
        (_, t) => t,
    };
    let finished_at = match (state, record.finished_at) {
        (cri::ContainerState::ContainerExited, 0) => {
            (run.state.finished_at as i64 * 1_000_000_000).max(started_at)
        }
        (_, t) => t,
    };
    let spec: serde_json::Value = std::fs::read(run.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let user = &spec["process"]["user"];
    Ok(cri::ContainerStatus {
        id: record.id.clone(),
        metadata: config.metadata.clone(),
        state: state as i32,
        created_at: record.created_at,
        started_at,
        finished_at,
        exit_code,
        image: config.image.clone(),
        image_ref: record.image_ref.clone(),
        reason: reason.to_string(),
        message: String::new(),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        mounts: config.mounts.clone(),
        log_path: record
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        resources: config.linux.as_ref().map(|l| cri::ContainerResources {
            linux: l.resources.clone(),
            windows: None,
        }),
        image_id: record.image_id.clone(),
        user: Some(cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: user["uid"].as_i64().unwrap_or_default(),
                gid: user["gid"].as_i64().unwrap_or_default(),
                supplemental_groups: user["additionalGids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|g| g.as_i64()).collect())
                    .unwrap_or_default(),
            }),
        }),
    })
}

/// ListContainers with its filter (id or prefix, state, pod, labels).
pub fn list(cri: &Cri, filter: Option<&cri::ContainerFilter>) -> Result<Vec<cri::Container>> {
    let mut out = Vec::new();
    for record in list_records(cri)? {
        let Ok(run) = cri.tasks.containers.resolve(&record.id) else {
            continue;
        };
        let config = record.config();
        let (state, _, _) = state_of(&run.state);
        if let Some(f) = filter {
            if !f.id.is_empty() && !record.id.starts_with(&f.id) {
                continue;
            }
            if !f.pod_sandbox_id.is_empty() && !record.pod_id.starts_with(&f.pod_sandbox_id) {
                continue;
            }
            if f.state.as_ref().is_some_and(|s| s.state != state as i32) {
                continue;
            }
            if !super::matches_labels(&config.labels, &f.label_selector) {
                continue;
            }
        }
        out.push(cri::Container {
            id: record.id.clone(),
            pod_sandbox_id: record.pod_id.clone(),
            metadata: config.metadata.clone(),
            image: config.image.clone(),
            image_ref: record.image_ref.clone(),
            state: state as i32,
            created_at: record.created_at,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            image_id: record.image_id.clone(),
        });
    }
    Ok(out)
}

/// ExecSync: runs `cmd` in the container, collecting its output; killed
/// and an error after `timeout` seconds (0: no limit).
pub async fn exec_sync(
    cri: &Cri,
    id: &str,
    cmd: Vec<String>,
    timeout: i64,
) -> Result<cri::ExecSyncResponse> {
    let record = must_get(cri, id)?;
    if cmd.is_empty() {
        return Err(Error::Invalid("exec needs a command".into()));
    }
    let exec_id = cri
        .tasks
        .exec(
            &record.id,
            &pb::ExecProcessRequest {
                container_id: record.id.clone(),
                args: cmd.clone(),
                ..Default::default()
            },
        )
        .await?;
    let mut attached = cri.tasks.attach(&record.id, &exec_id, false)?;
    cri.tasks.start(&record.id, &exec_id).await?;
    let collect = async {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut ended = 0;
        while ended < attached.streams {
            match attached.output.recv().await {
                Ok(chunk) if chunk.data.is_empty() => ended += 1,
                Ok(chunk) => {
                    let sink = match chunk.stream {
                        pb::StdioStream::Stdout => &mut stdout,
                        pb::StdioStream::Stderr => &mut stderr,
                    };
                    let room = MAX_EXEC_OUTPUT.saturating_sub(sink.len());
                    sink.extend_from_slice(&chunk.data[..chunk.data.len().min(room)]);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
        let code = exit_status(&mut attached.exit).await;
        (stdout, stderr, code)
    };
    let outcome = if timeout > 0 {
        tokio::time::timeout(Duration::from_secs(timeout as u64), collect).await
    } else {
        Ok(collect.await)
    };
    match outcome {
        Ok((stdout, stderr, code)) => Ok(cri::ExecSyncResponse {
            stdout,
            stderr,
            exit_code: code as i32,
        }),
        Err(_) => {
            let _ = cri
                .tasks
                .kill(&record.id, &exec_id, libc::SIGKILL as u32, false)
                .await;
            Err(Error::Timeout(format!(
                "command {cmd:?} timed out after {timeout}s"
            )))
        }
    }
}

/// A process's exit status once it has exited (255 if it is never known,
/// as containerd reports a lost one).
pub async fn exit_status(exit: &mut tokio::sync::watch::Receiver<Option<u32>>) -> u32 {
    exit.wait_for(|s| s.is_some())
        .await
        .map(|s| s.unwrap_or(255))
        .unwrap_or(255)
}

/// ReopenContainerLog: the writer of a running container reopens its file.
pub async fn reopen_log(cri: &Cri, id: &str) -> Result<()> {
    let record = must_get(cri, id)?;
    if !cri.tasks.is_running(&record.id) {
        return Err(Error::Precondition(format!(
            "container {} is not running",
            record.id
        )));
    }
    let writer = cri
        .log_writers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&record.id)
        .cloned()
        .ok_or_else(|| Error::Precondition(format!("container {} has no log", record.id)))?;
    let (ack, done) = tokio::sync::oneshot::channel();
    writer
        .send(ack)
        .map_err(|_| Error::Precondition(format!("the log of {} is closed", record.id)))?;
    done.await
        .map_err(|_| Error::Precondition(format!("the log of {} is closed", record.id)))?
        .map_err(|e| Error::Failed(format!("cannot reopen the log of {}: {e}", record.id)))
}

/// UpdateContainerResources: the new limits to the running task and the
/// bundle, and recorded for ContainerStatus.
pub async fn update_resources(
    cri: &Cri,
    id: &str,
    linux: Option<cri::LinuxContainerResources>,
) -> Result<()> {
    let record = must_get(cri, id)?;
    let Some(linux) = linux else {
        return Ok(());
    };
    let resources = super::spec::linux_resources(&linux)?;
    cri.tasks
        .update_linux_resources(&record.id, resources)
        .await?;
    cri.db.write(|txn| {
        if let Some(mut r) = txn.get::<CriRecord>(Table::CriContainers, &record.id)? {
            let mut config = r.config();
            config.linux.get_or_insert_with(Default::default).resources = Some(linux);
            r.config = config.encode_to_vec();
            txn.put(Table::CriContainers, &record.id, &r)?;
        }
        Ok::<_, Error>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_kubelet() {
        let mut state = RunState {
            status: pb::container::Status::Stopped as i32,
            ..Default::default()
        };
        assert_eq!(
            state_of(&state),
            (cri::ContainerState::ContainerExited, 0, "Completed")
        );
        state.exit_status = 3;
        assert_eq!(state_of(&state).2, "Error");
        assert_eq!(state_of(&state).1, 3);
        state.oom_killed = true;
        state.exit_status = 137;
        assert_eq!(state_of(&state).2, "OOMKilled");
        state.status = pb::container::Status::Running as i32;
        assert_eq!(state_of(&state).0, cri::ContainerState::ContainerRunning);
    }
}
