//! Pure cgroup v2 hosts: one directory in the unified hierarchy holds every
//! controller's files. v1-shaped values of the spec are converted the way
//! runc converts them (cpu shares → cpu.weight, blkio weight → io.weight,
//! memory+swap → memory.swap.max), and the device allow-list becomes an
//! eBPF program attached to the directory.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{
    device_filter, directories, flat_keyed, freeze_and_wait, io, number, read, stats, write_file,
    CgroupError, DeviceAccess, Driver, Part, Stats,
};
use crate::spec::{BlockIo, Cpu, HugepageLimit, Memory, Resources};

/// The container's directory in the unified hierarchy.
pub struct V2 {
    pub mount_point: PathBuf,
    pub dir: PathBuf,
}

/// Hands every controller the host offers down to `dir`'s cgroup, from
/// the root: a v2 directory has a controller's files only when its parent
/// enables it in `cgroup.subtree_control`. Best effort: a controller that
/// cannot be enabled surfaces later, as a missing file, if the spec uses it.
pub fn enable_controllers(mount_point: &Path, dir: &Path) {
    let available = read(mount_point, "cgroup.controllers");
    let all: Vec<String> = available
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    let _ = enable_down_to(mount_point, dir, &all.join(" "));
}

/// Writes `controllers` (`+a +b`) to the subtree_control of every ancestor
/// of `dir` from the hierarchy's root down; one by one where a joint write
/// is refused.
pub fn enable_down_to(
    mount_point: &Path,
    dir: &Path,
    controllers: &str,
) -> Result<(), CgroupError> {
    let mut ancestors: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(mount_point))
        .collect();
    ancestors.reverse();
    for ancestor in ancestors {
        let enabled = read(ancestor, "cgroup.subtree_control");
        let wanted: Vec<&str> = controllers
            .split_whitespace()
            .filter(|c| {
                !enabled
                    .split_whitespace()
                    .any(|e| Some(e) == c.strip_prefix('+'))
            })
            .collect();
        if wanted.is_empty() {
            continue;
        }
        if write_file(ancestor, "cgroup.subtree_control", &wanted.join(" ")).is_err() {
            for one in wanted {
                write_file(ancestor, "cgroup.subtree_control", one)?;
            }
        }
    }
    Ok(())
}

/// A limit as v2 writes it: `max` for a negative value.
pub fn max_or(limit: i64) -> String {
    if limit < 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}

/// runc's mapping of cpu.shares [2, 262144] onto cpu.weight [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// runc's mapping of blkio.weight [10, 1000] onto io.weight [1, 10000].
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    1 + (u64::from(weight).saturating_sub(10) * 9999) / 990
}

/// memory.swap.max from the spec's memory+swap total, as runc computes it
/// (`None`: leave the file alone).
pub fn swap_max(swap: Option<i64>, limit: Option<i64>) -> Result<Option<i64>, CgroupError> {
    let limit = limit.unwrap_or(0);
    match swap.unwrap_or(0) {
        // Unlimited memory takes unlimited swap with it, as on v1.
        0 if limit == -1 => Ok(Some(-1)),
        0 => Ok(None),
        -1 => Ok(Some(-1)),
        _ if limit == 0 || limit == -1 => Err(CgroupError::InvalidValue(
            "memory.swap: a swap limit needs a memory limit on cgroup v2".into(),
        )),
        swap => Ok(Some(swap - limit)),
    }
}

/// Writes `hugetlb.SIZE.max`, refusing a page size the host lacks.
pub fn write_hugetlb(dir: &Path, limit: &HugepageLimit) -> Result<(), CgroupError> {
    let file = format!("hugetlb.{}.max", limit.page_size);
    if !dir.join(&file).exists() {
        return Err(CgroupError::InvalidValue(format!(
            "hugepageLimits: page size {:?} is not one this host has",
            limit.page_size
        )));
    }
    write_file(dir, &file, &limit.limit.to_string())
}

pub fn freeze_unified(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let (value, undo, done) = if frozen {
        ("1", "0", "frozen 1")
    } else {
        ("0", "1", "frozen 0")
    };
    freeze_and_wait(
        dir,
        "cgroup.freeze",
        (value, undo),
        ("cgroup.events", done),
        frozen,
    )
}

/// A v2 limit file's value for runc's records: `max` is u64::MAX.
fn limit_value(dir: &Path, file: &str) -> u64 {
    let text = read(dir, file);
    match text.trim() {
        "max" => u64::MAX,
        other => other.parse().unwrap_or(0),
    }
}

pub fn pids_stats(dir: &Path) -> stats::Pids {
    stats::Pids {
        current: number(dir, "pids.current"),
        limit: number(dir, "pids.max"),
    }
}

/// The page sizes of the hugetlb files in `dir` (`2MB`, `1GB`).
pub fn hugepage_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let mut sizes: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            (!size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    sizes
}

pub fn hugetlb_stats(dir: &Path) -> BTreeMap<String, stats::Hugetlb> {
    hugepage_sizes(dir, ".max")
        .into_iter()
        .map(|size| {
            let events = flat_keyed(&read(dir, &format!("hugetlb.{size}.events")));
            let entry = stats::Hugetlb {
                failcnt: events.get("max").copied().unwrap_or(0),
                max: None,
                usage: number(dir, &format!("hugetlb.{size}.current")),
            };
            (size, entry)
        })
        .collect()
}

impl V2 {
    fn apply_memory(&self, memory: &Memory) -> Result<(), CgroupError> {
        let dir = &self.dir;
        if memory.swappiness.is_some() {
            return Err(CgroupError::Unsupported(
                "memory.swappiness",
                "cgroup v2 has no swappiness",
            ));
        }
        if memory.disable_oom_killer == Some(true) {
            return Err(CgroupError::Unsupported(
                "memory.disableOOMKiller",
                "cgroup v2 cannot turn the OOM killer off",
            ));
        }
        let limit = memory.limit.filter(|v| *v != 0);
        if let Some(swap) = swap_max(memory.swap, limit)? {
            if !dir.join("memory.swap.max").exists() {
                if swap != -1 {
                    return Err(CgroupError::NoController(
                        "memory+swap (swap accounting is off)",
                    ));
                }
            } else {
                write_file(dir, "memory.swap.max", &max_or(swap))?;
            }
        }
        if let Some(limit) = limit {
            write_file(dir, "memory.max", &max_or(limit))?;
        }
        if let Some(reservation) = memory.reservation.filter(|v| *v != 0) {
            write_file(dir, "memory.low", &max_or(reservation))?;
        }
        Ok(())
    }

    fn apply_cpu(&self, cpu: &Cpu) -> Result<(), CgroupError> {
        let dir = &self.dir;
        if cpu.realtime_runtime.is_some_and(|v| v != 0)
            || cpu.realtime_period.is_some_and(|v| v != 0)
        {
            return Err(CgroupError::Unsupported(
                "cpu.realtimeRuntime/realtimePeriod",
                "the cgroup v2 cpu controller has no realtime budget",
            ));
        }
        if let Some(shares) = cpu.shares.filter(|v| *v != 0) {
            write_file(dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
        }
        if let Some(idle) = cpu.idle {
            write_file(dir, "cpu.idle", &idle.to_string())?;
        }
        let quota = cpu.quota.filter(|v| *v != 0);
        let period = cpu.period.filter(|v| *v != 0);
        if quota.is_some() || period.is_some() {
            // An update of one half keeps the other as it is.
            let current = read(dir, "cpu.max");
            let mut current = current.split_whitespace();
            let quota = match quota {
                Some(q) => max_or(q),
                None => current.next().unwrap_or("max").to_string(),
            };
            let line = match period {
                Some(p) => format!("{quota} {p}"),
                None => quota,
            };
            write_file(dir, "cpu.max", &line)?;
        }
        if let Some(cpus) = &cpu.cpus {
            write_file(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = &cpu.mems {
            write_file(dir, "cpuset.mems", mems)?;
        }
        Ok(())
    }

    fn apply_io(&self, block_io: &BlockIo) -> Result<(), CgroupError> {
        let dir = &self.dir;
        if block_io.leaf_weight.is_some() {
            return Err(CgroupError::Unsupported(
                "blockIO.leafWeight",
                "cgroup v2 has no leaf weights",
            ));
        }
        // BFQ takes the v1 scale as it is; the io controller's own weight
        // is converted.
        let bfq = dir.join("io.bfq.weight").exists();
        let weight_line = |device: Option<(i64, i64)>, weight: u16| {
            let value = if bfq {
                u64::from(weight)
            } else {
                blkio_weight_to_io_weight(weight)
            };
            match device {
                Some((major, minor)) => format!("{major}:{minor} {value}"),
                None => value.to_string(),
            }
        };
        let weight_file = if bfq { "io.bfq.weight" } else { "io.weight" };
        if let Some(weight) = block_io.weight {
            write_file(dir, weight_file, &weight_line(None, weight))?;
        }
        for device in &block_io.weight_device {
            if let Some(weight) = device.weight {
                let line = weight_line(Some((device.major, device.minor)), weight);
                write_file(dir, weight_file, &line)?;
            }
        }
        for (key, devices) in [
            ("rbps", &block_io.throttle_read_bps_device),
            ("wbps", &block_io.throttle_write_bps_device),
            ("riops", &block_io.throttle_read_iops_device),
            ("wiops", &block_io.throttle_write_iops_device),
        ] {
            for device in devices {
                let line = format!("{}:{} {key}={}", device.major, device.minor, device.rate);
                write_file(dir, "io.max", &line)?;
            }
        }
        Ok(())
    }
}

impl Driver for V2 {
    fn paths(&self) -> &[PathBuf] {
        std::slice::from_ref(&self.dir)
    }

    fn unified_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn create(&self, part: Part) -> Result<(), CgroupError> {
        directories::create(
            self.paths(),
            |_| part.takes(true),
            |_, dir| {
                enable_controllers(&self.mount_point, dir);
                Ok(())
            },
        )
    }

    fn apply(&self, resources: &Resources) -> Result<(), CgroupError> {
        if resources.network.is_some() {
            return Err(CgroupError::Unsupported(
                "network",
                "net_cls and net_prio are cgroup v1 controllers",
            ));
        }
        if let Some(memory) = &resources.memory {
            self.apply_memory(memory)?;
        }
        if let Some(cpu) = &resources.cpu {
            self.apply_cpu(cpu)?;
        }
        if let Some(pids) = resources.pids.filter(|p| p.limit != 0) {
            write_file(&self.dir, "pids.max", &max_or(pids.limit))?;
        }
        if let Some(block_io) = &resources.block_io {
            self.apply_io(block_io)?;
        }
        for limit in &resources.hugepage_limits {
            write_hugetlb(&self.dir, limit)?;
        }
        // Last, so that a key the spec sets explicitly wins over a converted value.
        for (key, value) in &resources.unified {
            write_file(&self.dir, key, value)?;
        }
        Ok(())
    }

    fn apply_devices(&self, rules: &[DeviceAccess]) -> Result<(), CgroupError> {
        let program = device_filter::Program::compile(rules);
        let loaded = program.load()?;
        let dir = std::fs::File::open(&self.dir).map_err(io(&self.dir))?;
        device_filter::attach(&loaded, dir.as_raw_fd())?;
        Ok(())
    }

    fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        freeze_unified(&self.dir, frozen)
    }

    fn stats(&self) -> Stats {
        let dir = &self.dir;
        let cpu = flat_keyed(&read(dir, "cpu.stat"));
        let us = |key: &str| cpu.get(key).copied().unwrap_or(0) * 1000;
        let memory_events = flat_keyed(&read(dir, "memory.events"));
        let mut blkio = stats::Blkio::default();
        for line in read(dir, "io.stat").lines() {
            let mut parts = line.split_whitespace();
            let Some((major, minor)) = parts.next().and_then(|d| d.split_once(':')) else {
                continue;
            };
            let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else {
                continue;
            };
            for pair in parts {
                let Some((key, value)) = pair.split_once('=') else {
                    continue;
                };
                let value: u64 = value.parse().unwrap_or(0);
                let entry = |op: &str| stats::BlkioEntry {
                    major,
                    minor,
                    op: op.to_string(),
                    value,
                };
                match key {
                    "rbytes" => blkio.io_service_bytes_recursive.push(entry("Read")),
                    "wbytes" => blkio.io_service_bytes_recursive.push(entry("Write")),
                    "rios" => blkio.io_serviced_recursive.push(entry("Read")),
                    "wios" => blkio.io_serviced_recursive.push(entry("Write")),
                    _ => {}
                }
            }
        }
        Stats {
            blkio: Some(blkio),
            cpu: Some(stats::Cpu {
                throttling: Some(stats::Throttling {
                    periods: cpu.get("nr_periods").copied(),
                    throttled_periods: cpu.get("nr_throttled").copied(),
                    throttled_time: Some(us("throttled_usec")),
                }),
                usage: Some(stats::CpuUsage {
                    kernel: us("system_usec"),
                    percpu: None,
                    total: us("usage_usec"),
                    user: us("user_usec"),
                }),
            }),
            hugetlb: hugetlb_stats(dir),
            memory: Some(stats::Memory {
                raw: flat_keyed(&read(dir, "memory.stat")),
                swap: stats::MemoryEntry {
                    failcnt: None,
                    limit: limit_value(dir, "memory.swap.max"),
                    max: None,
                    usage: number(dir, "memory.swap.current"),
                },
                usage: stats::MemoryEntry {
                    failcnt: Some(memory_events.get("max").copied().unwrap_or(0)),
                    limit: limit_value(dir, "memory.max"),
                    max: Some(number(dir, "memory.peak")),
                    usage: number(dir, "memory.current"),
                },
            }),
            pids: Some(pids_stats(dir)),
        }
    }

    fn oom_kills(&self) -> u64 {
        flat_keyed(&read(&self.dir, "memory.events"))
            .get("oom_kill")
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(swap_max(Some(200), Some(100)).unwrap(), Some(100));
        assert_eq!(swap_max(None, Some(-1)).unwrap(), Some(-1));
        assert_eq!(swap_max(Some(-1), Some(100)).unwrap(), Some(-1));
        assert_eq!(swap_max(None, Some(100)).unwrap(), None);
        assert!(swap_max(Some(200), None).is_err());
    }
}
