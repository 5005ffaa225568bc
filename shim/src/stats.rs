//! Stats: the runtime's `events --stats` record (runc's JSON shape, which
//! berth shares) turned into containerd's metrics types, as `ctr task
//! metrics` decodes them: cgroup v1 `Metrics` on v1 and hybrid hosts,
//! cgroup v2 `Metrics` on unified hosts (runc reports v2 in the same JSON,
//! with v2's `memory.stat` keys under `raw`).

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use serde_json::Value;

use containerd_shim_protos::cgroups_v2::metrics as v2;

pub const TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
pub const TYPE_URL_V2: &str = "io.containerd.cgroups.v2.Metrics";

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("the runtime's stats are not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode metrics: {0}")]
    Encode(#[from] protobuf::Error),
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn entry(v: &Value) -> MessageField<MemoryEntry> {
    let mut e = MemoryEntry::new();
    e.limit = u(&v["limit"]);
    e.usage = u(&v["usage"]);
    e.max = u(&v["max"]);
    e.failcnt = u(&v["failcnt"]);
    MessageField::some(e)
}

/// `Metrics` from one `events --stats` record (`{"type":"stats","data":{…}}`).
pub fn metrics(record: &[u8]) -> Result<Metrics, StatsError> {
    let record: Value = serde_json::from_slice(record)?;
    let data = &record["data"];
    let mut m = Metrics::new();

    let cpu = &data["cpu"];
    let mut usage = CPUUsage::new();
    usage.total = u(&cpu["usage"]["total"]);
    usage.kernel = u(&cpu["usage"]["kernel"]);
    usage.user = u(&cpu["usage"]["user"]);
    usage.per_cpu = cpu["usage"]["percpu"]
        .as_array()
        .map(|a| a.iter().map(u).collect())
        .unwrap_or_default();
    let mut throttle = Throttle::new();
    throttle.periods = u(&cpu["throttling"]["periods"]);
    throttle.throttled_periods = u(&cpu["throttling"]["throttledPeriods"]);
    throttle.throttled_time = u(&cpu["throttling"]["throttledTime"]);
    let mut cpu_stat = CPUStat::new();
    cpu_stat.usage = MessageField::some(usage);
    cpu_stat.throttling = MessageField::some(throttle);
    m.cpu = MessageField::some(cpu_stat);

    let memory = &data["memory"];
    let raw = &memory["raw"];
    let mut mem = MemoryStat::new();
    mem.cache = u(&raw["cache"]);
    mem.rss = u(&raw["rss"]);
    mem.rss_huge = u(&raw["rss_huge"]);
    mem.mapped_file = u(&raw["mapped_file"]);
    mem.dirty = u(&raw["dirty"]);
    mem.writeback = u(&raw["writeback"]);
    mem.pg_pg_in = u(&raw["pgpgin"]);
    mem.pg_pg_out = u(&raw["pgpgout"]);
    mem.pg_fault = u(&raw["pgfault"]);
    mem.pg_maj_fault = u(&raw["pgmajfault"]);
    mem.inactive_anon = u(&raw["inactive_anon"]);
    mem.active_anon = u(&raw["active_anon"]);
    mem.inactive_file = u(&raw["inactive_file"]);
    mem.active_file = u(&raw["active_file"]);
    mem.unevictable = u(&raw["unevictable"]);
    mem.hierarchical_memory_limit = u(&raw["hierarchical_memory_limit"]);
    mem.hierarchical_swap_limit = u(&raw["hierarchical_memsw_limit"]);
    mem.total_cache = u(&raw["total_cache"]);
    mem.total_rss = u(&raw["total_rss"]);
    mem.total_mapped_file = u(&raw["total_mapped_file"]);
    mem.total_pg_fault = u(&raw["total_pgfault"]);
    mem.total_pg_maj_fault = u(&raw["total_pgmajfault"]);
    mem.usage = entry(&memory["usage"]);
    mem.swap = entry(&memory["swap"]);
    mem.kernel = entry(&memory["kernel"]);
    mem.kernel_tcp = entry(&memory["kernelTCP"]);
    m.memory = MessageField::some(mem);

    let mut pids = PidsStat::new();
    pids.current = u(&data["pids"]["current"]);
    pids.limit = u(&data["pids"]["limit"]);
    m.pids = MessageField::some(pids);
    Ok(m)
}

/// The metrics as the `Any` a StatsResponse carries.
pub fn to_any(metrics: &Metrics) -> Result<Any, StatsError> {
    let mut any = Any::new();
    any.type_url = TYPE_URL.into();
    any.value = metrics.write_to_bytes()?;
    Ok(any)
}

/// cgroup v2 `Metrics` from one `events --stats` record.
pub fn metrics_v2(record: &[u8]) -> Result<v2::Metrics, StatsError> {
    let record: Value = serde_json::from_slice(record)?;
    let data = &record["data"];
    let mut m = v2::Metrics::new();
    let cpu = &data["cpu"];
    let mut c = v2::CPUStat::new();
    // runc reports v2's microseconds as nanoseconds, like v1's.
    c.usage_usec = u(&cpu["usage"]["total"]) / 1000;
    c.user_usec = u(&cpu["usage"]["user"]) / 1000;
    c.system_usec = u(&cpu["usage"]["kernel"]) / 1000;
    c.nr_periods = u(&cpu["throttling"]["periods"]);
    c.nr_throttled = u(&cpu["throttling"]["throttledPeriods"]);
    c.throttled_usec = u(&cpu["throttling"]["throttledTime"]) / 1000;
    m.cpu = MessageField::some(c);
    let memory = &data["memory"];
    let raw = &memory["raw"];
    let mut mem = v2::MemoryStat::new();
    mem.anon = u(&raw["anon"]);
    mem.file = u(&raw["file"]);
    mem.kernel_stack = u(&raw["kernel_stack"]);
    mem.slab = u(&raw["slab"]);
    mem.sock = u(&raw["sock"]);
    mem.shmem = u(&raw["shmem"]);
    mem.file_mapped = u(&raw["file_mapped"]);
    mem.file_dirty = u(&raw["file_dirty"]);
    mem.file_writeback = u(&raw["file_writeback"]);
    mem.inactive_anon = u(&raw["inactive_anon"]);
    mem.active_anon = u(&raw["active_anon"]);
    mem.inactive_file = u(&raw["inactive_file"]);
    mem.active_file = u(&raw["active_file"]);
    mem.unevictable = u(&raw["unevictable"]);
    mem.pgfault = u(&raw["pgfault"]);
    mem.pgmajfault = u(&raw["pgmajfault"]);
    mem.usage = u(&memory["usage"]["usage"]);
    mem.usage_limit = u(&memory["usage"]["limit"]);
    mem.max_usage = u(&memory["usage"]["max"]);
    mem.swap_usage = u(&memory["swap"]["usage"]);
    mem.swap_limit = u(&memory["swap"]["limit"]);
    m.memory = MessageField::some(mem);
    let mut pids = v2::PidsStat::new();
    pids.current = u(&data["pids"]["current"]);
    pids.limit = u(&data["pids"]["limit"]);
    m.pids = MessageField::some(pids);
    Ok(m)
}

/// Whether this host has only the unified (v2) hierarchy, as containerd's
/// `cgroups.Mode() == Unified` decides.
pub fn unified_host() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The `Any` for a StatsResponse, in the type this host's cgroups call for.
pub fn for_host(record: &[u8]) -> Result<Any, StatsError> {
    if !unified_host() {
        return to_any(&metrics(record)?);
    }
    let mut any = Any::new();
    any.type_url = TYPE_URL_V2.into();
    any.value = metrics_v2(record)?.write_to_bytes()?;
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_shaped_records_map_onto_v1_metrics() {
        let record = br#"{"type":"stats","id":"c","data":{
            "cpu":{"usage":{"total":1000,"percpu":[600,400],"kernel":10,"user":20},
                   "throttling":{"periods":3}},
            "memory":{"usage":{"limit":268435456,"usage":4096,"max":8192,"failcnt":1},
                      "raw":{"cache":12,"rss":34,"pgfault":5}},
            "pids":{"current":2,"limit":1024}}}"#;
        let m = metrics(record).unwrap();
        assert_eq!(m.cpu.usage.total, 1000);
        assert_eq!(m.cpu.usage.per_cpu, vec![600, 400]);
        assert_eq!(m.cpu.throttling.periods, 3);
        assert_eq!(m.memory.usage.limit, 268435456);
        assert_eq!(
            (m.memory.cache, m.memory.rss, m.memory.pg_fault),
            (12, 34, 5)
        );
        assert_eq!((m.pids.current, m.pids.limit), (2, 1024));
        assert_eq!(
            to_any(&m).unwrap().type_url,
            "io.containerd.cgroups.v1.Metrics"
        );
    }
}
