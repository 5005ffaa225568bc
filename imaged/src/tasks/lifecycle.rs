//! A task's life: start (stdio, network, shim, Create, Start), the
//! watcher that records its exit and tears it down, kill, stop, wait, and
//! the removal of a container.

use super::*;

impl Tasks {
    /// Starts the container's task, or with `exec_id` one of its execs.
    pub async fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32> {
        let record = self.containers.resolve(id)?;
        if !exec_id.is_empty() {
            return self.start_exec(&record, exec_id).await;
        }
        self.start_init(&record, false).await
    }

    /// Claims the container for one start; refused while it runs or
    /// another start is under way.
    pub(super) fn claim_start(&self, record: &ContainerRecord) -> Result<()> {
        let mut inner = self.lock();
        if inner.shims.contains_key(&record.id) {
            return Err(Error::Running(record.name.clone()));
        }
        if !inner.starting.insert(record.id.clone()) {
            return Err(Error::Starting(record.name.clone()));
        }
        Ok(())
    }

    pub(super) async fn start_init(
        self: &Arc<Self>,
        record: &ContainerRecord,
        restarting: bool,
    ) -> Result<u32> {
        self.torn_down(&record.id).await;
        self.claim_start(record)?;
        let result = self.start_claimed(record, restarting).await;
        self.lock().starting.remove(&record.id);
        self.launcher.refill_spare();
        result
    }

    pub(super) async fn start_claimed(
        self: &Arc<Self>,
        record: &ContainerRecord,
        restarting: bool,
    ) -> Result<u32> {
        let mut steps = crate::steps::Timeline::new("start", &record.id);
        let settings = record.settings();
        self.containers.ensure_rootfs(record)?;
        let bundle = record.bundle.clone();
        let (stdout, stderr, stdin) = make_stdio(
            &record.name,
            &bundle,
            "init",
            settings.tty,
            settings.stdin_open,
        )?;
        let key: ProcessKey = (record.id.clone(), String::new());
        let (output, _) = self.process(&key);
        // The earlier run's exit is history. Reset on the same watch, not a
        // new one: a client that attached before this start (`start -a`)
        // holds a receiver of this watch and must see this run's exit.
        {
            let mut inner = self.lock();
            if let Some(p) = inner.processes.get_mut(&key) {
                if p.exit.borrow().is_some() {
                    p.exit.send_replace(None);
                }
            }
        }
        steps.step("stdio");
        self.connect_network(record).await?;
        steps.step("network");
        let shim = match self.launcher.start(&record.id, &bundle).await {
            Ok(shim) => shim,
            Err(e) => {
                self.disconnect_network(&record.id).await;
                return Err(e.into());
            }
        };
        steps.step("shim");
        let teardown = |tasks: Arc<Tasks>, id: String, bundle: PathBuf, shim: Shim| async move {
            tasks.shut_down(&shim, &id).await;
            tasks.launcher.delete(&id, &bundle).await;
            tasks.disconnect_network(&id).await;
        };
        let mut create = api::CreateTaskRequest::new();
        create.id = record.id.clone();
        create.bundle = bundle.display().to_string();
        create.terminal = settings.tty;
        // A spare shim learns the runtime options here (a shim started for
        // this container had them on its stdin too).
        create.options = protobuf::MessageField::some(self.launcher.options());
        create.stdout = stdout.display().to_string();
        create.stderr = stderr
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        create.stdin = stdin
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let readers = match OutputReaders::open(&record.name, &stdout, stderr.as_deref()) {
            Ok(readers) => readers,
            Err(e) => {
                teardown(self.clone(), record.id.clone(), bundle.clone(), shim).await;
                return Err(e);
            }
        };
        steps.step("readers");
        // A `run --rm` container's record was committed unsynced
        // (`Containers::create`): it goes to the disk while the shim
        // creates the task, and is there before this start is answered.
        let db = self.containers.db.clone();
        let mark = db.commits();
        let durable = (settings.transient && !db.is_durable(mark))
            .then(|| tokio::task::spawn_blocking(move || db.sync_through(mark)));
        let created = match shim.client.create(self.ctx(), &create).await {
            Ok(created) => created,
            Err(e) => {
                teardown(self.clone(), record.id.clone(), bundle.clone(), shim).await;
                return Err(shim_err(&record.name, "Create")(e));
            }
        };
        steps.step("Create");
        let synced = match durable {
            Some(sync) => sync
                .await
                .unwrap_or_else(|e| Err(crate::metadata::Error::Sync(e.to_string()))),
            None => Ok(()),
        };
        steps.step("synced");
        if let Err(e) = synced {
            // Not started, as its client is told, and before a Start
            // could run it: the task goes (killed first when Create
            // started it; the shim's clean-up ends what is left).
            let kill = api::KillRequest {
                id: record.id.clone(),
                signal: libc::SIGKILL as u32,
                all: true,
                ..Default::default()
            };
            let _ = shim.client.kill(self.ctx(), &kill).await;
            teardown(self.clone(), record.id.clone(), bundle.clone(), shim).await;
            return Err(containers::Error::Metadata(e).into());
        }
        self.spawn_copiers(&bundle, readers, output, true);
        if let Some(path) = &stdin {
            self.open_stdin(&key, path);
        }
        // A shim told to start at Create has started the task when it had
        // no stdin to wait for (and published the start): a Start would
        // only repeat the pid. The daemon's shims, spare or not, are all
        // its own launcher's, so all were told.
        let started = if self.launcher.start_at_create && stdin.is_none() {
            Ok(api::StartResponse {
                pid: created.pid,
                ..Default::default()
            })
        } else {
            let start = api::StartRequest {
                id: record.id.clone(),
                ..Default::default()
            };
            let started = shim.client.start(self.ctx(), &start).await;
            steps.step("Start");
            started
        };
        let pid = match started {
            Ok(r) => r.pid,
            Err(e) => {
                let _ = shim
                    .client
                    .delete(
                        self.ctx(),
                        &api::DeleteRequest {
                            id: record.id.clone(),
                            ..Default::default()
                        },
                    )
                    .await;
                teardown(self.clone(), record.id.clone(), bundle.clone(), shim).await;
                return Err(shim_err(&record.name, "Start")(e));
            }
        };
        self.lock().shims.insert(record.id.clone(), shim.clone());
        // Recorded running before the watcher can record the exit (or, for
        // a `run --rm` one, remove the container): a process that ends at
        // once must not have its exit overwritten by this, nor this start
        // fail on a record its exit already took.
        let updated = self.containers.update_run_state(&record.id, |r| {
            r.state.status = pb::container::Status::Running as i32;
            r.state.pid = pid;
            r.state.started_at = now_secs();
            r.state.oom_killed = false;
            if !restarting {
                // A client's start begins the policy's count again.
                r.state.stopped_by_user = false;
                r.state.restart_count = 0;
            }
        });
        // From here the watcher owns the task: whatever happens next, the
        // exit is recorded and the shim torn down.
        self.spawn_watcher(record.id.clone(), shim.clone());
        steps.step("record");
        match updated {
            // Stopped (or deleted) while it was being restarted: stop it again.
            Ok(r) if restarting && r.state.stopped_by_user => {
                let _ = self.kill(&record.id, "", libc::SIGKILL as u32, true).await;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = self.kill(&record.id, "", libc::SIGKILL as u32, true).await;
                return Err(e.into());
            }
        }
        Ok(pid)
    }

    /// Waits for the init's exit through the shim, then records it.
    pub(super) fn spawn_watcher(self: &Arc<Self>, id: String, shim: Shim) {
        let tasks = self.clone();
        tokio::spawn(async move {
            let status = tasks.shim_wait(&shim, &id, "").await;
            tasks.exited(&id, shim, status).await;
        });
    }

    /// The init exited: record it and tell whoever waits, then tear the
    /// task and shim down, then restart if the policy says so.
    pub(super) async fn exited(self: &Arc<Self>, id: &str, shim: Shim, status: u32) {
        let mut steps = crate::steps::Timeline::new("exit", id);
        // The exit is recorded and sent before the teardown: a client waiting
        // for it (`run`, `wait`) need not wait for the runtime's delete or
        // the plugins' DEL. The shim's entry stays until the teardown is
        // done, so no start or removal can race it for the container's
        // rootfs, cgroups or namespace (they wait in `torn_down`).
        // A `run --rm` container is removed instead (see `RemovalAtExit`).
        let resolved = self.containers.resolve(id).ok();
        let removal = resolved
            .as_ref()
            .and_then(|r| RemovalAtExit::of(&r.settings()));
        let mut leftovers = None;
        let removed_now = match (removal, resolved) {
            (Some(RemovalAtExit::Now), Some(record)) => self.remove_at_exit(record).await,
            _ => None,
        };
        let record = match removed_now {
            Some((record, rest)) => {
                leftovers = Some(rest);
                Ok(record)
            }
            None => self.containers.update_run_state(id, |r| {
                r.state.status = pb::container::Status::Stopped as i32;
                r.state.exit_status = status;
                r.state.finished_at = now_secs();
                r.state.pid = 0;
            }),
        };
        steps.step("record");
        if removal != Some(RemovalAtExit::AfterTeardown) {
            self.send_exit(id, status);
        }
        steps.step("exit sent");
        // The shim's Delete runs the runtime's delete and unmounts the rootfs;
        // only when it cannot (a shim that died) does `shim delete` clean up
        // after it, as containerd does for a dead shim.
        let deleted = shim
            .client
            .delete(
                self.ctx(),
                &api::DeleteRequest {
                    id: id.to_string(),
                    ..Default::default()
                },
            )
            .await
            .is_ok();
        steps.step("Delete");
        self.shut_down(&shim, id).await;
        if !deleted {
            let bundle = match &record {
                Ok(r) => r.bundle.clone(),
                Err(_) => self.containers.bundle_of(id),
            };
            self.launcher.delete(id, &bundle).await;
        }
        steps.step("Shutdown");
        self.disconnect_network(id).await;
        // Removed while its shim's entry is still there: once it is gone, a
        // start (the container stopped, its exit not yet told) would begin a
        // new run of what this removal then takes from under it.
        if removal == Some(RemovalAtExit::AfterTeardown) {
            if let Ok(record) = self.containers.resolve(id) {
                leftovers = self.remove_at_exit(record).await.map(|(_, rest)| rest);
            }
        }
        self.lock().shims.remove(id);
        self.teardowns.notify_waiters();
        steps.step("network");
        if removal == Some(RemovalAtExit::AfterTeardown) {
            self.send_exit(id, status);
        }
        if let Some(leftovers) = leftovers {
            // Removed at its exit: its directories go now that no process
            // of it is left, and the removal is announced after the task's
            // own events (as a client's removal would be).
            let _ = tokio::task::spawn_blocking(move || leftovers.remove()).await;
            self.forget(id);
            self.announce_removal(id, true, true);
            return;
        }
        // Deleted meanwhile: nothing more to do.
        let Ok(record) = record else {
            return;
        };
        if record.settings().auto_remove && restart_delay(&record, status).is_none() {
            // The exit is recorded and sent first: an attached client still
            // gets it. The task is gone, so this is a plain delete.
            let tasks = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                let _ = tasks.delete_container(&id, false, true).await;
            });
            return;
        }
        self.apply_restart_policy(&record, status);
    }

    /// Tells whoever waits for the init's exit (attached clients, `wait`);
    /// its stdin is closed.
    fn send_exit(&self, id: &str, status: u32) {
        if let Some(p) = self
            .lock()
            .processes
            .get_mut(&(id.to_string(), String::new()))
        {
            p.stdin = None;
            p.exit.send_replace(Some(status));
        }
    }

    /// Marks the container as stopped by the user (restart policies then
    /// leave it alone) and signals it.
    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        if exec_id.is_empty() {
            self.containers
                .update(&record.id, |r| r.state.stopped_by_user = true)?;
        }
        shim_rpc!(
            self,
            shim,
            record,
            kill,
            "Kill",
            KillRequest {
                exec_id: exec_id.to_string(),
                signal,
                all,
            }
        )?;
        Ok(())
    }

    /// The stop signal, then SIGKILL after `timeout` seconds; the exit status.
    pub async fn stop(&self, id: &str, timeout: u32) -> Result<u32> {
        let record = self.containers.resolve(id)?;
        if self.shim_of(&record.id).is_none() {
            // Stopping a stopped container is no error (docker's rule), and
            // a pending restart is cancelled.
            self.containers.update(&record.id, |r| {
                r.state.stopped_by_user = true;
                if r.state.status == pb::container::Status::Restarting as i32 {
                    r.state.status = pb::container::Status::Stopped as i32;
                }
            })?;
            return Ok(record.state.exit_status);
        }
        let signal = signal_number(&record.stop_signal).unwrap_or(libc::SIGTERM as u32);
        let (_, mut exit) = self.process(&(record.id.clone(), String::new()));
        if record.status() == pb::container::Status::Paused {
            let _ = self.resume(&record.id).await;
        }
        // The init alone gets the stop signal (it may stop its children in
        // order); an exit that beats the signal is a stop too.
        if let Err(e) = self.kill(&record.id, "", signal, false).await {
            if exit.borrow().is_none() && self.is_running(&record.id) {
                return Err(e);
            }
        }
        let in_time = tokio::time::timeout(
            Duration::from_secs(timeout.into()),
            exit.wait_for(|s| s.is_some()),
        )
        .await
        .is_ok();
        if !in_time {
            let _ = self.kill(&record.id, "", libc::SIGKILL as u32, true).await;
        }
        let status = exit
            .wait_for(|s| s.is_some())
            .await
            .map(|s| s.unwrap_or(137))
            .unwrap_or(137);
        self.torn_down(&record.id).await;
        Ok(status)
    }

    /// Waits for the init (or an exec) to exit; the status.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<u32> {
        let record = self.containers.resolve(id)?;
        let key = (record.id.clone(), exec_id.to_string());
        // Checked and subscribed under one lock: an exit in between is
        // either seen here or recorded in the watch.
        let mut exit = {
            let inner = self.lock();
            let running =
                inner.shims.contains_key(&record.id) || inner.starting.contains(&record.id);
            match inner.processes.get(&key) {
                Some(p) => p.exit.subscribe(),
                None if !exec_id.is_empty() => {
                    return Err(Error::NoExec {
                        container: record.name.clone(),
                        exec: exec_id.to_string(),
                    })
                }
                None if !running && record.status() != pb::container::Status::Restarting => {
                    return Ok(record.state.exit_status);
                }
                None => {
                    drop(inner);
                    self.process(&key).1
                }
            }
        };
        if exec_id.is_empty() && !self.is_running(&record.id) && exit.borrow().is_none() {
            let record = self.containers.resolve(id)?;
            if record.status() != pb::container::Status::Restarting
                && !self.lock().starting.contains(&record.id)
            {
                return Ok(record.state.exit_status);
            }
        }
        let status = exit
            .wait_for(|s| s.is_some())
            .await
            .map(|s| s.unwrap_or(255))
            .unwrap_or(255);
        Ok(status)
    }

    /// Deletes a container: its task first (killed when `force`).
    /// `volumes`: its anonymous volumes go too (`rm -v`, `--rm`).
    pub async fn delete_container(
        self: &Arc<Self>,
        id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let settings = record.settings();
        if (settings.transient || settings.auto_remove)
            && !holds_host_resources(&settings)
            && self.ending(&record.id)
        {
            return self.delete_ended(record, force, volumes).await;
        }
        let mut steps = crate::steps::Timeline::new("delete", &record.id);
        // A task that has just ended may still be taking its network down.
        self.torn_down(&record.id).await;
        steps.step("teardown");
        if self.shim_of(&record.id).is_some() {
            if !force {
                return Err(Error::Running(record.name.clone()));
            }
            self.containers
                .update(&record.id, |r| r.state.stopped_by_user = true)?;
            let (_, mut exit) = self.process(&(record.id.clone(), String::new()));
            if record.status() == pb::container::Status::Paused {
                let _ = self.resume(&record.id).await;
            }
            let _ = self.kill(&record.id, "", libc::SIGKILL as u32, true).await;
            let exited =
                tokio::time::timeout(Duration::from_secs(10), exit.wait_for(|s| s.is_some()))
                    .await
                    .is_ok();
            if exited {
                self.torn_down(&record.id).await;
            }
            if !exited {
                // The shim does not answer: its own clean-up kills what is
                // left and removes the runtime's state; only then may the
                // rootfs and bundle go.
                self.launcher.delete(&record.id, &record.bundle).await;
                let gone = self.lock().shims.remove(&record.id).is_some();
                if gone && self.runtime_still_has(&record.id) {
                    return Err(Error::Stuck {
                        container: record.name.clone(),
                        detail: "its processes did not exit after SIGKILL".into(),
                    });
                }
            }
        } else if has_restart_policy(&record.settings()) {
            // A restart may be pending (its back-off): it must not start
            // what is being removed. Without a policy there is none, and
            // no write is needed before the record goes.
            self.containers
                .update(&record.id, |r| r.state.stopped_by_user = true)?;
        }
        // Unmounting and removing a rootfs that holds many files can take
        // seconds: not on one of the daemon's two async threads.
        let containers = self.containers.clone();
        let id = record.id.clone();
        let removed = tokio::task::spawn_blocking(move || containers.delete(&id, volumes))
            .await
            .map_err(|e| Error::Invalid(format!("removing {}: {e}", record.name)))?;
        match removed {
            Ok(()) => {}
            // Its own removal at its exit (`--rm`) took it while this one
            // waited for the task: removed all the same, and announced there.
            Err(containers::Error::NotFound(_)) if settings.auto_remove || settings.transient => {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        }
        steps.step("remove");
        self.forget(&record.id);
        self.announce_removal(&record.id, force, volumes);
        Ok(())
    }

    /// Removes a `run --rm` container's records, and its anonymous volumes
    /// as docker's `--rm` does, at its exit (see [`RemovalAtExit`]); the
    /// rootfs and directories are the caller's to remove after the
    /// teardown. `None` when they could not be removed: the exit is then
    /// recorded as any other's, and the client removes the container.
    async fn remove_at_exit(
        &self,
        record: ContainerRecord,
    ) -> Option<(ContainerRecord, containers::Leftovers)> {
        let leftovers = match self.containers.remove_records(&record) {
            Ok(leftovers) => leftovers,
            Err(e) => {
                eprintln!(
                    "berth-imaged: cannot remove {} at its exit: {e}",
                    record.name
                );
                return None;
            }
        };
        if let Err(e) = self.remove_anonymous_volumes(&record).await {
            eprintln!(
                "berth-imaged: cannot remove the volumes of {}: {e}",
                record.name
            );
        }
        Some((record, leftovers))
    }

    /// Removes a container removed at its end (`run -d --rm`, or a `run
    /// --rm` one whose own removal at its exit could not be made) whose
    /// exit is known while its teardown (the runtime's delete, the shim's
    /// shutdown, the network) is still under way: the records go now, so
    /// the client hears back with the name free, and the rootfs and
    /// directories once the shim is gone; the removal is announced then
    /// too, after the task's own events. Only for a container that holds
    /// nothing another could ask for at once (published ports, a fixed
    /// address: see [`holds_host_resources`]). A daemon that dies in
    /// between finds the bundle without a record at its start and ends
    /// what is left of the task ([`Tasks::recover`]).
    async fn delete_ended(
        self: &Arc<Self>,
        record: ContainerRecord,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        let mut steps = crate::steps::Timeline::new("delete", &record.id);
        let containers = self.containers.clone();
        let removed = record.clone();
        let leftovers = tokio::task::spawn_blocking(move || containers.remove_records(&removed))
            .await
            .map_err(|e| Error::Invalid(format!("removing {}: {e}", record.name)))??;
        steps.step("records");
        self.forget(&record.id);
        let tasks = self.clone();
        let id = record.id.clone();
        tokio::spawn(async move {
            tasks.shim_gone(&id).await;
            let _ = tokio::task::spawn_blocking(move || leftovers.remove()).await;
            tasks.announce_removal(&id, force, volumes);
        });
        if volumes {
            self.remove_anonymous_volumes(&record).await?;
        }
        Ok(())
    }

    /// Removes `record`'s anonymous volumes on a blocking thread; a
    /// container without volumes (most `run --rm` ones) has none to look
    /// up: no trip to a blocking thread.
    async fn remove_anonymous_volumes(&self, record: &ContainerRecord) -> Result<()> {
        if record.volumes.is_empty() {
            return Ok(());
        }
        let containers = self.containers.clone();
        let record = record.clone();
        tokio::task::spawn_blocking(move || containers.remove_anonymous_volumes(&record))
            .await
            .map_err(|e| Error::Invalid(format!("removing volumes: {e}")))??;
        Ok(())
    }

    /// Every removal is announced, whoever asked (a client, --rm, the
    /// recovery at start-up), with the container's id.
    fn announce_removal(&self, id: &str, force: bool, volumes: bool) {
        self.hub.publish(
            "/containers/delete",
            "berth.v1.DeleteContainerRequest",
            prost::Message::encode_to_vec(&pb::DeleteContainerRequest {
                id: id.to_string(),
                force,
                volumes,
            }),
        );
    }

    /// Whether the runtime still knows the container (its state directory).
    pub(super) fn runtime_still_has(&self, id: &str) -> bool {
        self.launcher
            .runtime_root
            .join(&self.launcher.namespace)
            .join(id)
            .exists()
            || self.launcher.runtime_root.join(id).exists()
    }
}

/// When the daemon removes a `run --rm` container (`transient`) at its
/// exit: always, whether its client is still attached or not (docker's
/// auto-remove), and before the exit reaches the client, which then has
/// nothing left to remove and the name is free when it returns. A daemon
/// that dies in between finds a bundle without a record at its start and
/// ends what is left of the task ([`Tasks::recover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RemovalAtExit {
    /// The records go before the exit is sent, the rootfs and directories
    /// after the teardown.
    Now,
    /// Everything goes after the teardown, which frees what the container
    /// holds on the host (see [`holds_host_resources`]), and only then is
    /// the exit sent: another container may ask for it at once.
    AfterTeardown,
}

impl RemovalAtExit {
    fn of(settings: &pb::ContainerConfig) -> Option<RemovalAtExit> {
        if !settings.transient || has_restart_policy(settings) {
            None
        } else if holds_host_resources(settings) {
            Some(RemovalAtExit::AfterTeardown)
        } else {
            Some(RemovalAtExit::Now)
        }
    }
}

/// Whether a container holds what another container could ask for as soon
/// as this one's removal is answered: a published host port, a fixed
/// address. Those are released by its task's teardown, which such a
/// removal waits for.
fn holds_host_resources(settings: &pb::ContainerConfig) -> bool {
    !settings.ports.is_empty()
        || !settings.ip.is_empty()
        || settings.more_networks.iter().any(|n| !n.ip.is_empty())
}
