//! Restart policies: docker's back-off, applied at an exit and at the
//! daemon's start.

use super::*;

impl Tasks {
    /// Restarts the container after the policy's back-off if its policy
    /// says so for an exit with `status` (at an exit, and at the daemon's
    /// start for exits it did not see). A restart that fails is logged and
    /// leaves the container stopped.
    pub(super) fn apply_restart_policy(self: &Arc<Self>, record: &ContainerRecord, status: u32) {
        let Some(delay) = restart_delay(record, status) else {
            return;
        };
        let id = record.id.clone();
        let _ = self.containers.update(&id, |r| {
            r.state.status = pb::container::Status::Restarting as i32;
        });
        let tasks = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Stopped or removed meanwhile: no restart.
            let Ok(record) = tasks.containers.resolve(&id) else {
                return;
            };
            if record.state.stopped_by_user || tasks.shim_of(&id).is_some() {
                return;
            }
            let _ = tasks.containers.update(&id, |r| r.state.restart_count += 1);
            if let Err(e) = tasks.start_init(&record, true).await {
                eprintln!("berth-imaged: cannot restart {}: {e}", record.name);
                let _ = tasks.containers.update(&id, |r| {
                    r.state.status = pb::container::Status::Stopped as i32;
                });
            }
        });
    }

    /// Starts an `always` container a client stopped, as docker does when
    /// its daemon starts: as a client's start, so the stop is forgotten.
    pub(super) async fn start_always(self: &Arc<Self>, record: &ContainerRecord) {
        if let Err(e) = self.start_init(record, false).await {
            eprintln!("berth-imaged: cannot restart {} (always): {e}", record.name);
        }
    }
}

/// Whether `settings` name a restart policy other than `no`.
pub fn has_restart_policy(settings: &pb::ContainerConfig) -> bool {
    settings
        .restart
        .is_some_and(|policy| policy.kind != pb::restart_policy::Kind::No as i32)
}

pub(super) fn restarts_always(record: &ContainerRecord) -> bool {
    record
        .settings()
        .restart
        .is_some_and(|policy| policy.kind == pb::restart_policy::Kind::Always as i32)
}

/// How long to wait before restarting after an exit with `status`, or
/// `None` when the policy says no. Docker's back-off: 100 ms doubling per
/// restart, at most a minute.
pub fn restart_delay(record: &ContainerRecord, status: u32) -> Option<Duration> {
    use pb::restart_policy::Kind;
    if record.state.stopped_by_user {
        return None;
    }
    let policy = record.settings().restart.unwrap_or_default();
    let restart = match Kind::try_from(policy.kind).unwrap_or(Kind::No) {
        Kind::No => false,
        Kind::Always | Kind::UnlessStopped => true,
        Kind::OnFailure => {
            status != 0
                && (policy.max_retries == 0 || record.state.restart_count < policy.max_retries)
        }
    };
    if !restart {
        return None;
    }
    // A run of 10 s or more starts the back-off over (docker's rule).
    let ran = record
        .state
        .finished_at
        .saturating_sub(record.state.started_at);
    if ran >= 10 {
        return Some(Duration::from_millis(100));
    }
    let exponent = record.state.restart_count.min(10);
    Some(Duration::from_millis(100u64 << exponent).min(Duration::from_secs(60)))
}
