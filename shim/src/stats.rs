//! Stats: the runtime's `events --stats` record (runc's JSON shape, which
//! berth shares) turned into containerd's cgroup v1 `Metrics` type, as
//! `ctr task metrics` decodes it.

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use serde_json::Value;

pub const TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

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
