//! `berth events`: resource statistics of a container (`--stats`, one
//! record) or a stream of them every `--interval`, with an `oom` event when
//! the kernel OOM-kills in the container's memory cgroup. Records are JSON
//! lines shaped like runc's (`{"type","id","data"}`).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cgroups;
use crate::state::{self, State, StateError};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("container not running")]
    NotRunning,
    #[error("cannot write events: {0}")]
    Output(std::io::Error),
}

/// One stats record of the container's cgroups.
pub fn stats(state: &State) -> Value {
    let data = cgroups::driver_for(&state.cgroup_paths).stats();
    json!({"type": "stats", "id": state.id, "data": data})
}

fn emit(record: &Value) -> Result<(), EventsError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{record}")
        .and_then(|()| out.flush())
        .map_err(EventsError::Output)
}

/// `berth events [--stats] [--interval D] ID`.
pub fn events(
    root: &Path,
    id: &str,
    stats_once: bool,
    interval: Duration,
) -> Result<(), EventsError> {
    let (_, state) = state::read_unlocked(root, id)?;
    if !state::process_is(state.pid, state.init_start_time) {
        return Err(EventsError::NotRunning);
    }
    if stats_once {
        return emit(&stats(&state));
    }
    let driver = cgroups::driver_for(&state.cgroup_paths);
    let record = |data| json!({"type": "stats", "id": state.id, "data": data});
    let mut ooms = driver.oom_kills();
    let tick = Duration::from_millis(100).min(interval);
    let mut since_stats = interval;
    // Ends when the container does, as runc's stream does.
    while state::process_is(state.pid, state.init_start_time) {
        if since_stats >= interval {
            emit(&record(driver.stats()))?;
            since_stats = Duration::ZERO;
        }
        let now = driver.oom_kills();
        if now > ooms {
            emit(&json!({"type": "oom", "id": state.id}))?;
            ooms = now;
        }
        std::thread::sleep(tick);
        since_stats += tick;
    }
    let now = driver.oom_kills();
    if now > ooms {
        emit(&json!({"type": "oom", "id": state.id}))?;
    }
    Ok(())
}
