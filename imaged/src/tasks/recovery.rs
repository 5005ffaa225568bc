//! After a daemon restart: shims found again through the bundles'
//! `address` files, exits that happened meanwhile applied; OOM notices.

use super::*;

impl Tasks {
    /// After a daemon restart: reconnects to the shims of containers that
    /// were running (their bundles' `address` files), resumes reading their
    /// output, and marks those whose shims are gone as stopped. Containers
    /// with `always` (or `unless-stopped`, not stopped by the user) whose
    /// shims are gone are started again, and so are `always` containers a
    /// client stopped, as docker does at its start. A `run --rm` container
    /// that still runs is adopted as removed at its exit (its client went
    /// with the daemon); one that does not is removed. Tasks left by
    /// removals the daemon answered before their teardown ended
    /// (`delete_ended`) are ended first.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        self.recover_keeping(std::collections::HashSet::new()).await
    }

    /// As [`Tasks::recover`]; the network attachments of `keep` (ids that
    /// are not containers of these tasks: the CRI's pods) stay too.
    pub async fn recover_keeping(
        self: &Arc<Self>,
        keep: std::collections::HashSet<String>,
    ) -> Result<()> {
        if let Err(e) = self.end_orphaned_tasks().await {
            eprintln!("berth-imaged: cannot end the tasks of removed containers: {e}");
        }
        for record in self.containers.list()? {
            use pb::container::Status;
            // A transient container's run state is written unsynced
            // (`update_run_state`): its record may say created while it runs.
            let transient = record.settings().transient;
            let was_running = transient
                || matches!(
                    record.status(),
                    Status::Running | Status::Paused | Status::Restarting
                );
            if !was_running {
                let ran = record.state.started_at != 0;
                if restarts_always(&record) && ran && record.status() == Status::Stopped {
                    self.start_always(&record).await;
                }
                continue;
            }
            let address =
                std::fs::read_to_string(record.bundle.join("address")).unwrap_or_default();
            let shim = match shim::connect(address.trim()).await {
                Ok(shim) if !address.trim().is_empty() => Some(shim),
                _ => None,
            };
            let state = match &shim {
                Some(shim) => shim
                    .client
                    .state(
                        self.ctx(),
                        &api::StateRequest {
                            id: record.id.clone(),
                            ..Default::default()
                        },
                    )
                    .await
                    .ok(),
                None => None,
            };
            let alive = state.as_ref().is_some_and(|s| {
                use containerd_shim_protos::types::task::Status as S;
                matches!(s.status.enum_value_or_default(), S::RUNNING | S::PAUSED)
            });
            match (shim, alive) {
                (Some(shim), true) => {
                    let settings = record.settings();
                    let (output, _) = self.process(&(record.id.clone(), String::new()));
                    let stderr = (!settings.tty).then(|| record.bundle.join("init-stderr"));
                    // The shim holds the write ends: output written while the
                    // daemon was away waits in the fifos.
                    match OutputReaders::open(
                        &record.name,
                        &record.bundle.join("init-stdout"),
                        stderr.as_deref(),
                    ) {
                        Ok(readers) => self.spawn_copiers(&record.bundle, readers, output, true),
                        Err(e) => eprintln!("berth-imaged: {e}: its output is not read"),
                    }
                    if settings.stdin_open {
                        self.open_stdin(
                            &(record.id.clone(), String::new()),
                            &record.bundle.join("init-stdin"),
                        );
                    }
                    if transient {
                        self.adopt_transient(&record, state.as_ref().map_or(0, |s| s.pid));
                    }
                    self.lock().shims.insert(record.id.clone(), shim.clone());
                    self.spawn_watcher(record.id.clone(), shim);
                }
                (shim, _) => {
                    // The shim went away with the container: what is known.
                    let status = state.map(|s| s.exit_status).unwrap_or(255);
                    if let Some(shim) = shim {
                        self.shut_down(&shim, &record.id).await;
                    }
                    self.launcher.delete(&record.id, &record.bundle).await;
                    self.disconnect_network(&record.id).await;
                    let record = self.containers.update(&record.id, |r| {
                        r.state.status = Status::Stopped as i32;
                        r.state.exit_status = status;
                        r.state.finished_at = now_secs();
                        r.state.pid = 0;
                    });
                    // One record that cannot be written stops no other's
                    // recovery.
                    let record = match record {
                        Ok(record) => record,
                        Err(e) => {
                            eprintln!("berth-imaged: cannot record the end of a container: {e}");
                            continue;
                        }
                    };
                    if record.settings().auto_remove || transient {
                        // A `run -d --rm` that ended while the daemon was
                        // away: removed as it would have been (no restart
                        // policy can go with auto_remove); a `run --rm`
                        // too, its client gone.
                        if let Err(e) = self.delete_container(&record.id, false, true).await {
                            eprintln!(
                                "berth-imaged: cannot remove {} (--rm) after its end: {e}",
                                record.name
                            );
                        }
                        continue;
                    }
                    if restarts_always(&record) && record.state.stopped_by_user {
                        self.start_always(&record).await;
                    } else {
                        // Its exit, unseen while the daemon was away, is
                        // treated as any other.
                        self.apply_restart_policy(&record, status);
                    }
                }
            }
        }
        // Namespaces, leases and rules of containers that are not running
        // (ended or half started while the daemon was away) go; the running
        // ones get their host ports held again.
        let networks = self.containers.networks.clone();
        let mut running: std::collections::HashSet<String> =
            self.lock().shims.keys().cloned().collect();
        running.extend(keep);
        let _ =
            tokio::task::spawn_blocking(move || networks.recover(|id| running.contains(id))).await;
        Ok(())
    }

    /// A `run --rm` container found running: its client went with the
    /// daemon, so it is removed at its exit as a `run -d --rm` one is.
    fn adopt_transient(&self, record: &ContainerRecord, pid: u32) {
        let adopted = self.containers.update(&record.id, |r| {
            r.state.status = pb::container::Status::Running as i32;
            r.state.pid = pid;
            let mut settings = r.settings();
            settings.auto_remove = true;
            r.config = prost::Message::encode_to_vec(&settings);
        });
        if let Err(e) = adopted {
            eprintln!("berth-imaged: cannot adopt {} (--rm): {e}", record.name);
        }
    }

    /// Ends the tasks of containers removed while their teardown was under
    /// way (`run --rm`, see `delete_ended`): a bundle with a shim's address
    /// and no record. The shim is shut down, its `delete` ends what the
    /// runtime has left, and the bundle goes.
    async fn end_orphaned_tasks(&self) -> Result<()> {
        for (id, bundle) in self.containers.orphaned_bundles()? {
            if !bundle.join("address").exists() {
                continue;
            }
            self.end_task(&id, &bundle).await;
            let containers = self.containers.clone();
            let _ = tokio::task::spawn_blocking(move || containers.remove_bundle(&bundle)).await;
        }
        Ok(())
    }

    /// Ends whatever is left of a container's task after a daemon restart:
    /// its shim (found through the bundle's `address`) is shut down, then
    /// its `delete` kills what still runs and removes the runtime's state.
    async fn end_task(&self, id: &str, bundle: &Path) {
        let address = std::fs::read_to_string(bundle.join("address")).unwrap_or_default();
        if !address.trim().is_empty() {
            if let Ok(shim) = shim::connect(address.trim()).await {
                self.shut_down(&shim, id).await;
            }
        }
        self.launcher.delete(id, bundle).await;
    }

    /// Watches OOM notices to record them on the container.
    pub fn spawn_oom_watch(self: &Arc<Self>) {
        let tasks = self.clone();
        let mut events = self.hub.subscribe();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if let Some(Notice::Oom { container }) = event.notice {
                            let _ = tasks
                                .containers
                                .update(&container, |r| r.state.oom_killed = true);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
}
