//! What changes or reads a running task: pause, resume, pids, stats,
//! and live resource updates.

use super::*;

impl Tasks {
    pub async fn pause(&self, id: &str) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        shim_rpc!(self, shim, record, pause, "Pause", PauseRequest {})?;
        self.containers.update(&record.id, |r| {
            r.state.status = pb::container::Status::Paused as i32
        })?;
        Ok(())
    }

    pub async fn resume(&self, id: &str) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        shim_rpc!(self, shim, record, resume, "Resume", ResumeRequest {})?;
        self.containers.update(&record.id, |r| {
            r.state.status = pb::container::Status::Running as i32
        })?;
        Ok(())
    }

    pub async fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        let response = shim_rpc!(self, shim, record, pids, "Pids", PidsRequest {})?;
        Ok(response.processes.iter().map(|p| p.pid).collect())
    }

    pub async fn stats(&self, id: &str) -> Result<pb::StatsResponse> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        let response = shim_rpc!(self, shim, record, stats, "Stats", StatsRequest {})?;
        let mut out = pb::StatsResponse {
            read_at: Some(crate::clock::now_timestamp()),
            ..Default::default()
        };
        if let Some(any) = response.stats.into_option() {
            if any.type_url.ends_with("cgroups.v2.Metrics") {
                use containerd_shim_protos::cgroups_v2::metrics::Metrics;
                if let Ok(m) = Metrics::parse_from_bytes(&any.value) {
                    out.cpu_usage_ns = m.cpu.usage_usec * 1000;
                    out.memory_usage = m.memory.usage;
                    out.memory_limit = limit(m.memory.usage_limit);
                    out.pids = m.pids.current;
                    out.pids_limit = limit(m.pids.limit);
                }
            } else {
                use containerd_shim_protos::cgroups::metrics::Metrics;
                if let Ok(m) = Metrics::parse_from_bytes(&any.value) {
                    out.cpu_usage_ns = m.cpu.usage.total;
                    out.memory_usage = m.memory.usage.usage;
                    out.memory_limit = limit(m.memory.usage.limit);
                    out.pids = m.pids.current;
                    out.pids_limit = limit(m.pids.limit);
                }
            }
        }
        Ok(out)
    }

    /// New limits for a running container (the shim runs the runtime's
    /// `update --resources -`), kept in its settings for later runs.
    pub async fn update_resources(&self, id: &str, limits: &pb::Resources) -> Result<()> {
        let resources = crate::bundle::limit_resources(limits)
            .map_err(|e| Error::Containers(containers::Error::Bundle(e)))?;
        let record = self.update_linux_resources(id, resources).await?;
        let limits = *limits;
        self.containers.update(&record.id, move |r| {
            let mut settings = r.settings();
            settings.resources = Some(limits);
            r.config = prost::Message::encode_to_vec(&settings);
        })?;
        Ok(())
    }

    /// Sends `resources` (an OCI `linux.resources` object) to a running
    /// container and merges them into its `config.json` for later runs.
    pub async fn update_linux_resources(
        &self,
        id: &str,
        resources: serde_json::Value,
    ) -> Result<ContainerRecord> {
        let record = self.containers.resolve(id)?;
        if let Some(shim) = self.shim_of(&record.id) {
            let mut any = Any::new();
            any.type_url =
                "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
            any.value = serde_json::to_vec(&resources).unwrap_or_default();
            let resources = MessageField::some(any);
            shim_rpc!(
                self,
                shim,
                record,
                update,
                "Update",
                UpdateTaskRequest { resources }
            )?;
        }
        // The next run's config.json gets them too.
        let spec_path = record.bundle.join("config.json");
        if let Some(mut spec) = std::fs::read(&spec_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            if let (Some(object), serde_json::Value::Object(new)) =
                (spec["linux"]["resources"].as_object_mut(), resources)
            {
                object.extend(new);
            }
            let _ = std::fs::write(
                &spec_path,
                serde_json::to_vec_pretty(&spec).unwrap_or_default(),
            );
        }
        Ok(record)
    }
}

/// v1/v2 "max" arrives as a huge number: 0 means no limit in our API.
pub(super) fn limit(value: u64) -> u64 {
    if value >= i64::MAX as u64 / 2 {
        0
    } else {
        value
    }
}
