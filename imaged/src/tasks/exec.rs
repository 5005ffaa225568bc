//! Exec: a process spec made from the container's, its fifos, its start
//! and its exit.

use super::*;

impl Tasks {
    /// Prepares an exec: its process spec from the container's, its fifos.
    pub async fn exec(&self, id: &str, request: &pb::ExecProcessRequest) -> Result<String> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        if record.status() == pb::container::Status::Paused {
            return Err(Error::Paused(record.name.clone()));
        }
        let exec_id = if request.exec_id.is_empty() {
            crate::volumes::random_hex(8)
        } else {
            request.exec_id.clone()
        };
        // It names files in the bundle: containerd's identifier rule.
        if !valid_identifier(&exec_id) {
            return Err(Error::Invalid(format!(
                "invalid exec id {exec_id:?}: use letters, digits and . _ - between them, at most 76"
            )));
        }
        let key = (record.id.clone(), exec_id.clone());
        if self.lock().processes.contains_key(&key) {
            return Err(Error::ExecExists {
                container: record.name.clone(),
                exec: exec_id,
            });
        }
        // The container's own process (user, capabilities, no_new_privs)
        // is the template: an exec never runs with less confinement.
        let spec_path = record.bundle.join("config.json");
        let spec: serde_json::Value = std::fs::read(&spec_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Error::Stdio {
                container: record.name.clone(),
                detail: format!("cannot read the container's spec {}", spec_path.display()),
            })?;
        let mut process = spec["process"].clone();
        if !process.is_object() {
            return Err(Error::Stdio {
                container: record.name.clone(),
                detail: format!("{} has no process", spec_path.display()),
            });
        }
        if request.args.is_empty() {
            return Err(Error::Invalid("exec needs a command".into()));
        }
        if let Some(bad) = request.env.iter().find(|e| !e.contains('=')) {
            return Err(Error::Invalid(format!(
                "invalid environment entry {bad:?}: use KEY=VALUE"
            )));
        }
        process["args"] = serde_json::json!(request.args);
        process["terminal"] = serde_json::json!(request.tty);
        if !request.working_dir.is_empty() {
            process["cwd"] = serde_json::json!(request.working_dir);
        }
        if !request.env.is_empty() {
            let mut env: Vec<String> = process["env"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for entry in &request.env {
                let key = entry.split('=').next().unwrap_or_default();
                env.retain(|e| e.split('=').next() != Some(key));
                env.push(entry.clone());
            }
            process["env"] = serde_json::json!(env);
        }
        if !request.user.is_empty() {
            let (uid, gid, groups) = crate::bundle::resolve_user(&request.user, &[record.rootfs()])
                .map_err(|e| Error::Invalid(e.to_string()))?;
            process["user"] = serde_json::json!({"uid": uid, "gid": gid, "additionalGids": groups});
        }
        let dir = record.bundle.join("exec");
        let _ = std::fs::create_dir_all(&dir);
        let (stdout, stderr, stdin) = make_stdio(
            &record.name,
            &dir,
            &exec_id,
            request.tty,
            request.stdin_open,
        )?;
        let mut any = Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        any.value = serde_json::to_vec(&process).unwrap_or_default();
        let request_ = api::ExecProcessRequest {
            id: record.id.clone(),
            exec_id: exec_id.clone(),
            terminal: request.tty,
            stdin: stdin
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            stdout: stdout.display().to_string(),
            stderr: stderr
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            spec: MessageField::some(any),
            ..Default::default()
        };
        let readers = OutputReaders::open(&record.name, &stdout, stderr.as_deref())?;
        shim.client
            .exec(self.ctx(), &request_)
            .await
            .map_err(shim_err(&record.name, "Exec"))?;
        let (output, _) = self.process(&key);
        if let Some(p) = self.lock().processes.get_mut(&key) {
            p.streams = if request.tty { 1 } else { 2 };
        }
        self.spawn_copiers(&record.bundle, readers, output, false);
        if let Some(path) = &stdin {
            self.open_stdin(&key, path);
        }
        Ok(exec_id)
    }

    pub(super) async fn start_exec(
        self: &Arc<Self>,
        record: &ContainerRecord,
        exec_id: &str,
    ) -> Result<u32> {
        let shim = self.running_shim(record)?;
        let key = (record.id.clone(), exec_id.to_string());
        if !self.lock().processes.contains_key(&key) {
            return Err(Error::NoExec {
                container: record.name.clone(),
                exec: exec_id.to_string(),
            });
        }
        let started = shim_rpc!(
            self,
            shim,
            record,
            start,
            "Start",
            StartRequest {
                exec_id: exec_id.to_string()
            }
        )?;
        let tasks = self.clone();
        let id = record.id.clone();
        let exec = exec_id.to_string();
        let dir = record.bundle.join("exec");
        tokio::spawn(async move {
            let status = tasks.shim_wait(&shim, &id, &exec).await;
            let _ = shim
                .client
                .delete(
                    tasks.ctx(),
                    &api::DeleteRequest {
                        id: id.clone(),
                        exec_id: exec.clone(),
                        ..Default::default()
                    },
                )
                .await;
            // The exec's exit stays known (Wait after it ended), its stdin goes.
            if let Some(p) = tasks.lock().processes.get_mut(&(id, exec.clone())) {
                p.stdin = None;
                p.exit.send_replace(Some(status));
            }
            for suffix in ["stdout", "stderr", "stdin"] {
                let _ = std::fs::remove_file(dir.join(format!("{exec}-{suffix}")));
            }
        });
        Ok(started.pid)
    }
}

/// containerd's rule for identifiers that name files.
pub(super) fn valid_identifier(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 76
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !bytes
            .windows(2)
            .any(|w| !w[0].is_ascii_alphanumeric() && !w[1].is_ascii_alphanumeric())
}
