//! `berth events`: resource statistics of a container (`--stats`, one
//! record) or a stream of them every `--interval`, with an `oom` event when
//! the kernel OOM-kills in the container's memory cgroup. Records are JSON
//! lines shaped like runc's (`{"type","id","data"}`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::cgroups::{self, Hierarchy};
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

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

fn number(dir: &Path, file: &str) -> u64 {
    read(dir, file).trim().parse().unwrap_or(0)
}

/// `key value` lines (memory.stat, cpu.stat) as a JSON object.
fn flat_keyed(text: &str) -> Value {
    let map: serde_json::Map<String, Value> = text
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), json!(value.trim().parse::<u64>().ok()?)))
        })
        .collect();
    Value::Object(map)
}

fn dir_of<'a>(pairs: &'a [(Hierarchy, PathBuf)], controller: &str) -> Option<&'a PathBuf> {
    pairs
        .iter()
        .find(|(h, _)| h.controllers.iter().any(|c| c == controller))
        .map(|(_, p)| p)
}

/// One stats record of the container's cgroups (v1).
pub fn stats(state: &State) -> Value {
    let pairs: Vec<(Hierarchy, PathBuf)> = cgroups::hierarchies_for(&state.cgroup_paths)
        .into_iter()
        .zip(state.cgroup_paths.iter().cloned())
        .collect();
    let mut data = json!({});
    if let Some(dir) = dir_of(&pairs, "cpuacct") {
        let percpu: Vec<u64> = read(dir, "cpuacct.usage_percpu")
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let ticks = flat_keyed(&read(dir, "cpuacct.stat"));
        // cpuacct.stat counts USER_HZ ticks; runc reports nanoseconds.
        let to_ns = |v: &Value| v.as_u64().unwrap_or(0) * 10_000_000;
        data["cpu"] = json!({"usage": {
            "total": number(dir, "cpuacct.usage"),
            "percpu": percpu,
            "kernel": to_ns(&ticks["system"]),
            "user": to_ns(&ticks["user"]),
        }});
    }
    if let Some(dir) = dir_of(&pairs, "cpu") {
        let throttling = flat_keyed(&read(dir, "cpu.stat"));
        data["cpu"]["throttling"] = json!({
            "periods": throttling["nr_periods"],
            "throttledPeriods": throttling["nr_throttled"],
            "throttledTime": throttling["throttled_time"],
        });
    }
    if let Some(dir) = dir_of(&pairs, "memory") {
        let entry = |prefix: &str| {
            json!({
                "limit": number(dir, &format!("{prefix}limit_in_bytes")),
                "usage": number(dir, &format!("{prefix}usage_in_bytes")),
                "max": number(dir, &format!("{prefix}max_usage_in_bytes")),
                "failcnt": number(dir, &format!("{prefix}failcnt")),
            })
        };
        data["memory"] = json!({
            "usage": entry("memory."),
            "swap": entry("memory.memsw."),
            "raw": flat_keyed(&read(dir, "memory.stat")),
        });
    }
    if let Some(dir) = dir_of(&pairs, "pids") {
        let limit = read(dir, "pids.max");
        data["pids"] = json!({
            "current": number(dir, "pids.current"),
            "limit": limit.trim().parse::<u64>().unwrap_or(0),
        });
    }
    if let Some(dir) = dir_of(&pairs, "blkio") {
        let entries = |file: &str| -> Vec<Value> {
            read(dir, file)
                .lines()
                .filter_map(|line| {
                    let parts: Vec<&str> = line.split_whitespace().collect();
                    let (device, op, value) = (parts.first()?, parts.get(1)?, parts.get(2)?);
                    let (major, minor) = device.split_once(':')?;
                    Some(json!({"major": major.parse::<u64>().ok()?, "minor": minor.parse::<u64>().ok()?,
                                "op": op, "value": value.parse::<u64>().ok()?}))
                })
                .collect()
        };
        data["blkio"] = json!({
            "ioServiceBytesRecursive": entries("blkio.throttle.io_service_bytes_recursive"),
            "ioServicedRecursive": entries("blkio.throttle.io_serviced_recursive"),
        });
    }
    data["hugetlb"] = json!({});
    json!({"type": "stats", "id": state.id, "data": data})
}

fn oom_kills(state: &State) -> u64 {
    state
        .cgroup_paths
        .iter()
        .map(|dir| read(dir, "memory.oom_control"))
        .find(|text| !text.is_empty())
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(0)
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
    let mut ooms = oom_kills(&state);
    let tick = Duration::from_millis(100).min(interval);
    let mut since_stats = interval;
    // Ends when the container does, as runc's stream does.
    while state::process_is(state.pid, state.init_start_time) {
        if since_stats >= interval {
            emit(&stats(&state))?;
            since_stats = Duration::ZERO;
        }
        let now = oom_kills(&state);
        if now > ooms {
            emit(&json!({"type": "oom", "id": state.id}))?;
            ooms = now;
        }
        std::thread::sleep(tick);
        since_stats += tick;
    }
    let now = oom_kills(&state);
    if now > ooms {
        emit(&json!({"type": "oom", "id": state.id}))?;
    }
    Ok(())
}
