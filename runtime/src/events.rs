//! `berth events`: resource statistics of a container (`--stats`, one
//! record) or a stream of them every `--interval`, with an `oom` event when
//! the kernel OOM-kills in the container's memory cgroup. Records are JSON
//! lines shaped like runc's (`{"type","id","data"}`).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

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

/// One record, its fields in runc's order (`{"type","id","data"}`: tools
/// match the text), `data` left out when there is none.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<cgroups::Stats>,
}

/// One stats record of the container's cgroups.
pub fn stats(state: &State) -> Event<'_> {
    let data = cgroups::driver_for(&state.cgroup_paths).stats();
    Event {
        kind: "stats",
        id: &state.id,
        data: Some(data),
    }
}

fn emit(record: &Event) -> Result<(), EventsError> {
    use std::io::Write;
    let text = serde_json::to_string(record).map_err(|e| EventsError::Output(e.into()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
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
    let record = |data| Event {
        kind: "stats",
        id: &state.id,
        data: Some(data),
    };
    let oom = || Event {
        kind: "oom",
        id: &state.id,
        data: None,
    };
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
            emit(&oom())?;
            ooms = now;
        }
        std::thread::sleep(tick);
        since_stats += tick;
    }
    let now = driver.oom_kills();
    if now > ooms {
        emit(&oom())?;
    }
    Ok(())
}
