//! `RUN`: the command runs in a real container (the daemon's own
//! containers and tasks, network `none`) on a snapshot of the state; its
//! overlay upper directory becomes the layer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_proto::v1 as pb;
use tokio::sync::broadcast;

use super::dockerfile::{Command, Instruction};
use super::state::State;
use super::{internal, layer, Build, Error, Result};
use crate::content::Digest;
use crate::images::{self, ImageRecord};
use crate::metadata::Table;
use crate::tasks::Tasks;

impl Build<'_> {
    /// Runs a `RUN` in a container on the state and commits what it changed.
    pub(super) async fn run_step(
        &mut self,
        i: &Instruction,
        state: &mut State,
        args: &BTreeMap<String, String>,
    ) -> Result<()> {
        let (argv, created_by) = match i.command() {
            Command::Exec(v) => {
                let shown = v.join(" ");
                (v, shown)
            }
            Command::Shell(s) => {
                let mut v = state.shell();
                v.push(s);
                let shown = v.join(" ");
                (v, shown)
            }
        };
        // Build arguments reach the command as variables, under its ENV.
        let env_now = state.env();
        let env: Vec<String> = args
            .iter()
            .filter(|(k, _)| !env_now.contains_key(*k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let container =
            Container::create(self, state, argv.clone(), env).map_err(|e| self.fail(i, e))?;
        let outcome = container.run(self).await;
        let result = match outcome {
            Ok(0) => {
                let path = self.scratch_file("layer");
                let upper = container.upper.clone();
                tokio::task::spawn_blocking(move || -> std::result::Result<layer::Layer, String> {
                    let mut writer = layer::LayerWriter::create(path).map_err(|e| e.to_string())?;
                    layer::diff_upper(&upper, &mut writer.tar).map_err(|e| e.to_string())?;
                    writer.finish().map_err(|e| e.to_string())
                })
                .await
                .map_err(internal)
                .and_then(|r| r.map_err(|e| self.fail(i, e)))
            }
            Ok(code) => Err(Error::RunFailed {
                step: self.step,
                instruction: i.text(),
                command: created_by.clone(),
                code,
            }),
            Err(_) if self.out.is_closed() => Err(Error::Cancelled { step: self.step }),
            Err(e) => Err(self.fail(i, e)),
        };
        // Force: a cancelled step's process is still running; it is killed.
        container.remove(&self.builds.tasks).await;
        self.cancelled()?;
        let layer = result?;
        self.commit_layer(i, state, &layer)?;
        state.history(created_by, false);
        Ok(())
    }
}

/// The container a `RUN` runs in.
pub(super) struct Container {
    id: String,
    upper: PathBuf,
}

impl Container {
    /// A container on the state's layers: its config goes in as a
    /// short-lived image record (the containers service makes containers
    /// of images), removed as soon as the container exists.
    fn create(
        build: &Build<'_>,
        state: &State,
        argv: Vec<String>,
        env: Vec<String>,
    ) -> std::result::Result<Container, String> {
        let images = &build.builds.images;
        let config = serde_json::to_vec(&state.config).map_err(|e| e.to_string())?;
        let digest = Digest::of(&config);
        images
            .content
            .write_bytes(&digest, &config)
            .map_err(|e| e.to_string())?;
        let desc = images::descriptor(
            "application/vnd.docker.container.image.v1+json",
            &digest,
            config.len() as u64,
        );
        let name = format!("berth-build/{}", crate::volumes::random_hex(8));
        let record = ImageRecord {
            name: name.clone(),
            target: desc.clone(),
            manifest: desc.clone(),
            config: desc,
            platform: images::host_platform(),
            layers: state.layers.clone(),
            chain_ids: images::chain_ids(&state.diff_ids()),
            size: 0,
            created: 0,
        };
        images
            .db
            .write(|txn| txn.put(Table::Images, &name, &record))
            .map_err(|e: crate::metadata::Error| e.to_string())?;
        let settings = pb::ContainerConfig {
            image: name.clone(),
            entrypoint_set: true,
            args: argv,
            env,
            network: "none".into(),
            ..Default::default()
        };
        let labels = BTreeMap::from([("berth.build".to_string(), "true".to_string())]);
        let created = build.builds.tasks.containers.create("", settings, labels);
        let _ = images
            .db
            .write(|txn| txn.delete(Table::Images, &name).map(|_| ()));
        let record = created.map_err(|e| e.to_string())?;
        let upper = images
            .snapshots
            .upper_dir(&record.snapshot_key)
            .map_err(|e| e.to_string())?;
        Ok(Container {
            id: record.id,
            upper,
        })
    }

    /// Starts it, forwards its output, and returns its exit status.
    async fn run(&self, build: &Build<'_>) -> std::result::Result<u32, String> {
        let tasks = &build.builds.tasks;
        let attached = tasks
            .attach(&self.id, "", true)
            .map_err(|e| e.to_string())?;
        tasks.start(&self.id, "").await.map_err(|e| e.to_string())?;
        let mut output = attached.output;
        let mut exit = attached.exit;
        let mut ended = 0;
        loop {
            tokio::select! {
                chunk = output.recv() => match chunk {
                    Ok(chunk) if chunk.data.is_empty() => {
                        ended += 1;
                        if ended >= attached.streams && exit.borrow().is_some() {
                            break;
                        }
                    }
                    Ok(chunk) => build.say(String::from_utf8_lossy(&chunk.data).into_owned()),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                changed = exit.changed() => {
                    if changed.is_err() || (exit.borrow().is_some() && ended >= attached.streams) {
                        break;
                    }
                }
                () = build.out.closed() => return Err("the client went away".into()),
            }
        }
        tasks.wait(&self.id, "").await.map_err(|e| e.to_string())
    }

    async fn remove(&self, tasks: &Arc<Tasks>) {
        if let Err(e) = tasks.delete_container(&self.id, true, true).await {
            eprintln!("berth-imaged: removing build container {}: {e}", self.id);
        }
    }
}
