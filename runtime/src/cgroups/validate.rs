//! Resource values checked before anything exists, so a bad spec leaves
//! no cgroup behind.

use super::CgroupError;
use crate::spec::Resources;

/// Checks resource values before anything is created: what is wrong
/// whatever the host (the drivers refuse what their host cannot do).
pub fn validate_resources(resources: &Resources) -> Result<(), CgroupError> {
    let bad = |what: &str, why: String| Err(CgroupError::InvalidValue(format!("{what}: {why}")));
    if let Some(memory) = &resources.memory {
        for (name, value) in [
            ("memory.limit", memory.limit),
            ("memory.reservation", memory.reservation),
            ("memory.swap", memory.swap),
        ] {
            if let Some(v) = value {
                if v < -1 {
                    return bad(name, format!("{v} (use a byte count, or -1 for unlimited)"));
                }
            }
        }
        if let (Some(limit), Some(swap)) = (memory.limit, memory.swap) {
            if limit > 0 && swap > 0 && swap < limit {
                return bad(
                    "memory.swap",
                    format!("{swap} is below memory.limit {limit} (swap is memory plus swap)"),
                );
            }
        }
        if let Some(s) = memory.swappiness {
            if s > 100 {
                return bad("memory.swappiness", format!("{s} (0-100)"));
            }
        }
    }
    if let Some(cpu) = &resources.cpu {
        if let Some(shares) = cpu.shares.filter(|v| *v != 0) {
            if !(2..=262_144).contains(&shares) {
                return bad("cpu.shares", format!("{shares} (2-262144)"));
            }
        }
        if let Some(quota) = cpu.quota.filter(|v| *v != 0) {
            if quota < -1 || (0..1000).contains(&quota) {
                return bad(
                    "cpu.quota",
                    format!("{quota} (at least 1000 µs, or -1 for none)"),
                );
            }
        }
        if let Some(period) = cpu.period.filter(|v| *v != 0) {
            if !(1000..=1_000_000).contains(&period) {
                return bad("cpu.period", format!("{period} (1000-1000000 µs)"));
            }
        }
        if let Some(idle) = cpu.idle {
            if !(0..=1).contains(&idle) {
                return bad("cpu.idle", format!("{idle} (0 or 1)"));
            }
        }
        for (name, list) in [("cpu.cpus", &cpu.cpus), ("cpu.mems", &cpu.mems)] {
            if let Some(list) = list {
                let ok = list
                    .split(',')
                    .all(|part| part.split('-').all(|n| n.trim().parse::<u32>().is_ok()));
                if !ok {
                    return bad(name, format!("{list:?} (a list like 0-2,4)"));
                }
            }
        }
    }
    if let Some(block_io) = &resources.block_io {
        let weights = std::iter::once(block_io.weight)
            .chain(std::iter::once(block_io.leaf_weight))
            .chain(block_io.weight_device.iter().map(|d| d.weight))
            .flatten();
        for weight in weights {
            if !(10..=1000).contains(&weight) {
                return bad("blockIO.weight", format!("{weight} (10-1000)"));
            }
        }
        let devices = block_io
            .weight_device
            .iter()
            .map(|d| (d.major, d.minor))
            .chain(
                [
                    &block_io.throttle_read_bps_device,
                    &block_io.throttle_write_bps_device,
                    &block_io.throttle_read_iops_device,
                    &block_io.throttle_write_iops_device,
                ]
                .into_iter()
                .flatten()
                .map(|d| (d.major, d.minor)),
            );
        for (major, minor) in devices {
            if major < 0 || minor < 0 {
                return bad("blockIO", format!("device {major}:{minor}"));
            }
        }
    }
    for key in resources.unified.keys() {
        // A key names one file of the container's own cgroup directory.
        if key.is_empty() || key.contains('/') || key.starts_with('.') || !key.contains('.') {
            return bad("unified", format!("key {key:?} is not a cgroup file name"));
        }
        if matches!(
            key.as_str(),
            "cgroup.procs" | "cgroup.threads" | "cgroup.subtree_control" | "cgroup.type"
        ) {
            return bad(
                "unified",
                format!("{key:?} is managed by the runtime, not the spec"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_keys_must_name_a_file_of_the_cgroup() {
        let mut resources = Resources::default();
        for key in ["../memory.max", "memory", "cgroup.procs", ".hidden"] {
            resources.unified = [(key.to_string(), "1".to_string())].into();
            assert!(validate_resources(&resources).is_err(), "{key}");
        }
        resources.unified = [("memory.high".to_string(), "1".to_string())].into();
        assert!(validate_resources(&resources).is_ok());
    }
}
