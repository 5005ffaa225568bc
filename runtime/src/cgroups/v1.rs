//! cgroup v1 hosts, and hybrid ones: one hierarchy per controller mount.
//! On a hybrid host the unified hierarchy is joined too and serves the
//! controllers that only it has there (hugetlb, and pids or the freezer
//! where v1 lacks them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    directories, flat_keyed, freeze_and_wait, io, number, read, stats, write_file, CgroupError,
    DeviceAccess, Driver, Hierarchy, Part, Stats,
};
use crate::spec::{BlockIo, Cpu, HugepageLimit, Memory, Network, Resources};

/// The container's directories, one per hierarchy, in the same order.
pub struct V1 {
    pub hierarchies: Vec<Hierarchy>,
    pub paths: Vec<PathBuf>,
}

impl V1 {
    /// The container's directory in the hierarchy that has `controller`.
    fn dir_for(&self, controller: &'static str) -> Result<&PathBuf, CgroupError> {
        self.hierarchies
            .iter()
            .zip(&self.paths)
            .find(|(h, _)| h.controllers.iter().any(|c| c == controller))
            .map(|(_, p)| p)
            .ok_or(CgroupError::NoController(controller))
    }

    /// The container's directory in the unified hierarchy, if it has `file`.
    fn unified_dir_with(&self, file: &str) -> Option<&PathBuf> {
        self.hierarchies
            .iter()
            .zip(&self.paths)
            .find(|(h, p)| h.is_unified() && p.join(file).exists())
            .map(|(_, p)| p)
    }

    fn apply_memory(&self, memory: &Memory) -> Result<(), CgroupError> {
        let dir = self.dir_for("memory")?;
        let memsw = "memory.memsw.limit_in_bytes";
        let swap = memory.swap.filter(|v| *v != 0);
        if swap.is_some() && !dir.join(memsw).exists() {
            return Err(CgroupError::NoController(
                "memory+swap (swap accounting is off)",
            ));
        }
        // 0 leaves a value as it is, as runc does.
        if let Some(limit) = memory.limit.filter(|v| *v != 0) {
            // The kernel keeps memory ≤ memory+swap at every step: an
            // unlimited memory needs an unlimited memsw first, and a growing
            // memsw goes first too.
            if let Some(value) = swap.or((limit == -1).then_some(-1)) {
                if dir.join(memsw).exists() {
                    let _ = write_file(dir, memsw, &value.to_string());
                }
            }
            write_file(dir, "memory.limit_in_bytes", &limit.to_string())?;
        }
        if let Some(swap) = swap {
            write_file(dir, memsw, &swap.to_string())?;
        }
        if let Some(reservation) = memory.reservation.filter(|v| *v != 0) {
            write_file(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
        }
        if let Some(swappiness) = memory.swappiness {
            write_file(dir, "memory.swappiness", &swappiness.to_string())?;
        }
        if memory.disable_oom_killer == Some(true) {
            write_file(dir, "memory.oom_control", "1")?;
        }
        Ok(())
    }

    fn apply_cpu(&self, cpu: &Cpu) -> Result<(), CgroupError> {
        if cpu.idle.is_some_and(|idle| idle != 0) {
            return Err(CgroupError::Unsupported("cpu.idle", "cgroup v2 only"));
        }
        if cpu.shares.is_some()
            || cpu.quota.is_some()
            || cpu.period.is_some()
            || cpu.realtime_runtime.is_some()
            || cpu.realtime_period.is_some()
        {
            let dir = self.dir_for("cpu")?;
            if let Some(shares) = cpu.shares.filter(|v| *v != 0) {
                write_file(dir, "cpu.shares", &shares.to_string())?;
            }
            // Period then quota; if the kernel refuses the period against the
            // current quota, write it again after the quota (as runc does).
            let period = cpu.period.filter(|v| *v != 0);
            let period_refused = match period {
                Some(p) => write_file(dir, "cpu.cfs_period_us", &p.to_string()).is_err(),
                None => false,
            };
            if let Some(quota) = cpu.quota.filter(|v| *v != 0) {
                write_file(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
            if let (true, Some(p)) = (period_refused, period) {
                write_file(dir, "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(period) = cpu.realtime_period {
                write_file(dir, "cpu.rt_period_us", &period.to_string())?;
            }
            if let Some(runtime) = cpu.realtime_runtime {
                write_file(dir, "cpu.rt_runtime_us", &runtime.to_string())?;
            }
        }
        if cpu.cpus.is_some() || cpu.mems.is_some() {
            let dir = self.dir_for("cpuset")?;
            if let Some(cpus) = &cpu.cpus {
                write_file(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = &cpu.mems {
                write_file(dir, "cpuset.mems", mems)?;
            }
        }
        Ok(())
    }

    /// Writes `pids.max` (a limit of 0 leaves the cgroup as it is, as runc does).
    fn apply_pids(&self, limit: i64) -> Result<(), CgroupError> {
        if limit == 0 {
            return Ok(());
        }
        let dir = self
            .dir_for("pids")
            .ok()
            .or_else(|| self.unified_dir_with("pids.max"))
            .ok_or(CgroupError::NoController("pids"))?;
        write_file(dir, "pids.max", &super::v2::max_or(limit))
    }

    fn apply_block_io(&self, block_io: &BlockIo) -> Result<(), CgroupError> {
        let dir = self.dir_for("blkio")?;
        // CFQ's files, or BFQ's where CFQ is gone; neither means no weights here.
        let weight_file = |name: &str| -> Result<String, CgroupError> {
            [format!("blkio.{name}"), format!("blkio.bfq.{name}")]
                .into_iter()
                .find(|f| dir.join(f).exists())
                .ok_or(CgroupError::NoController(
                    "blkio weight (no CFQ or BFQ scheduler)",
                ))
        };
        if let Some(weight) = block_io.weight {
            write_file(dir, &weight_file("weight")?, &weight.to_string())?;
        }
        if block_io.leaf_weight.is_some() {
            return Err(CgroupError::NoController("blkio leaf weight"));
        }
        for device in &block_io.weight_device {
            if let Some(weight) = device.weight {
                let line = format!("{}:{} {weight}", device.major, device.minor);
                write_file(dir, &weight_file("weight_device")?, &line)?;
            }
        }
        for (file, devices) in [
            ("read_bps_device", &block_io.throttle_read_bps_device),
            ("write_bps_device", &block_io.throttle_write_bps_device),
            ("read_iops_device", &block_io.throttle_read_iops_device),
            ("write_iops_device", &block_io.throttle_write_iops_device),
        ] {
            for device in devices {
                write_file(
                    dir,
                    &format!("blkio.throttle.{file}"),
                    &format!("{}:{} {}", device.major, device.minor, device.rate),
                )?;
            }
        }
        Ok(())
    }

    /// Hugepage limits: the v1 hugetlb controller, or (on hybrid hosts, where
    /// hugetlb sits on cgroup2) the unified hierarchy with the controller
    /// enabled down to the container's directory.
    fn apply_hugetlb(&self, limit: &HugepageLimit) -> Result<(), CgroupError> {
        let size = &limit.page_size;
        if let Ok(dir) = self.dir_for("hugetlb") {
            return write_file(
                dir,
                &format!("hugetlb.{size}.limit_in_bytes"),
                &limit.limit.to_string(),
            );
        }
        let (hierarchy, dir) = self
            .hierarchies
            .iter()
            .zip(&self.paths)
            .find(|(h, _)| h.is_unified())
            .ok_or(CgroupError::NoController("hugetlb"))?;
        let available = read(&hierarchy.mount_point, "cgroup.controllers");
        if !available.split_whitespace().any(|c| c == "hugetlb") {
            return Err(CgroupError::NoController("hugetlb"));
        }
        super::v2::enable_down_to(&hierarchy.mount_point, dir, "+hugetlb")?;
        super::v2::write_hugetlb(dir, limit)
    }

    fn apply_network(&self, network: &Network) -> Result<(), CgroupError> {
        if let Some(class_id) = network.class_id {
            let dir = self.dir_for("net_cls")?;
            write_file(dir, "net_cls.classid", &class_id.to_string())?;
        }
        if !network.priorities.is_empty() {
            let dir = self.dir_for("net_prio")?;
            for priority in &network.priorities {
                let line = format!("{} {}", priority.name, priority.priority);
                write_file(dir, "net_prio.ifpriomap", &line)?;
            }
        }
        Ok(())
    }
}

impl Driver for V1 {
    fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn unified_dir(&self) -> Option<&Path> {
        self.hierarchies
            .iter()
            .zip(&self.paths)
            .find(|(h, _)| h.is_unified())
            .map(|(_, p)| p.as_path())
    }

    /// Only the freezer hierarchy and the unified one can say so (the
    /// others have neither file: a dozen failing opens saved per create).
    fn is_frozen(&self) -> bool {
        let can_freeze: Vec<PathBuf> = self
            .hierarchies
            .iter()
            .zip(&self.paths)
            .filter(|(h, _)| h.is_unified() || h.controllers.iter().any(|c| c == "freezer"))
            .map(|(_, p)| p.clone())
            .collect();
        directories::is_frozen(&can_freeze)
    }

    fn create(&self, part: Part) -> Result<(), CgroupError> {
        let takes = |index: usize| {
            let unified = self.hierarchies.get(index).is_some_and(|h| h.is_unified());
            part.takes(unified)
        };
        directories::create(&self.paths, takes, |index, dir| {
            match self.hierarchies.get(index) {
                Some(h) if h.controllers.iter().any(|c| c == "cpuset") => {
                    inherit_cpuset(&h.mount_point, dir)
                }
                _ => Ok(()),
            }
        })
    }

    fn apply(&self, resources: &Resources) -> Result<(), CgroupError> {
        if !resources.unified.is_empty() {
            return Err(CgroupError::Unsupported(
                "unified",
                "cgroup v2 only; this host is v1",
            ));
        }
        if let Some(memory) = &resources.memory {
            self.apply_memory(memory)?;
        }
        if let Some(cpu) = &resources.cpu {
            self.apply_cpu(cpu)?;
        }
        if let Some(pids) = &resources.pids {
            self.apply_pids(pids.limit)?;
        }
        if let Some(block_io) = &resources.block_io {
            self.apply_block_io(block_io)?;
        }
        for limit in &resources.hugepage_limits {
            self.apply_hugetlb(limit)?;
        }
        if let Some(network) = &resources.network {
            self.apply_network(network)?;
        }
        Ok(())
    }

    fn apply_devices(&self, rules: &[DeviceAccess]) -> Result<(), CgroupError> {
        let Ok(dir) = self.dir_for("devices") else {
            // Without a device filter the container could mknod and open any
            // host device: refuse rather than run unfiltered.
            return Err(CgroupError::NoDeviceController);
        };
        use std::io::Write;
        let open = |file: &str| {
            let path = dir.join(file);
            super::files::open_for_writing(&path)
                .map(|f| (f, path.clone()))
                .map_err(io(&path))
        };
        // Each write(2) is one rule; keeping the files open saves an open and
        // a close per rule.
        let (mut allow, allow_path) = open("devices.allow")?;
        let (mut deny, deny_path) = open("devices.deny")?;
        for rule in rules {
            let (file, path) = if rule.allow {
                (&mut allow, &allow_path)
            } else {
                (&mut deny, &deny_path)
            };
            file.write_all(rule.v1_line().as_bytes())
                .map_err(io(path))?;
        }
        Ok(())
    }

    fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        if let Ok(dir) = self.dir_for("freezer") {
            let (value, undo) = if frozen {
                ("FROZEN", "THAWED")
            } else {
                ("THAWED", "FROZEN")
            };
            return freeze_and_wait(
                dir,
                "freezer.state",
                (value, undo),
                ("freezer.state", value),
                frozen,
            );
        }
        let dir = self
            .unified_dir_with("cgroup.freeze")
            .ok_or(CgroupError::NoController("freezer"))?;
        super::v2::freeze_unified(dir, frozen)
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        let mut cpu = stats::Cpu::default();
        if let Ok(dir) = self.dir_for("cpuacct") {
            let percpu: Vec<u64> = read(dir, "cpuacct.usage_percpu")
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            let ticks = flat_keyed(&read(dir, "cpuacct.stat"));
            // cpuacct.stat counts USER_HZ ticks; runc reports nanoseconds.
            let to_ns = |key: &str| ticks.get(key).copied().unwrap_or(0) * 10_000_000;
            cpu.usage = Some(stats::CpuUsage {
                kernel: to_ns("system"),
                percpu: Some(percpu),
                total: number(dir, "cpuacct.usage"),
                user: to_ns("user"),
            });
        }
        if let Ok(dir) = self.dir_for("cpu") {
            let throttling = flat_keyed(&read(dir, "cpu.stat"));
            cpu.throttling = Some(stats::Throttling {
                periods: throttling.get("nr_periods").copied(),
                throttled_periods: throttling.get("nr_throttled").copied(),
                throttled_time: throttling.get("throttled_time").copied(),
            });
        }
        if cpu != stats::Cpu::default() {
            stats.cpu = Some(cpu);
        }
        if let Ok(dir) = self.dir_for("memory") {
            let entry = |prefix: &str| stats::MemoryEntry {
                failcnt: Some(number(dir, &format!("{prefix}failcnt"))),
                limit: number(dir, &format!("{prefix}limit_in_bytes")),
                max: Some(number(dir, &format!("{prefix}max_usage_in_bytes"))),
                usage: number(dir, &format!("{prefix}usage_in_bytes")),
            };
            stats.memory = Some(stats::Memory {
                raw: flat_keyed(&read(dir, "memory.stat")),
                swap: entry("memory.memsw."),
                usage: entry("memory."),
            });
        }
        if let Some(dir) = self
            .dir_for("pids")
            .ok()
            .or_else(|| self.unified_dir_with("pids.current"))
        {
            stats.pids = Some(super::v2::pids_stats(dir));
        }
        if let Ok(dir) = self.dir_for("blkio") {
            stats.blkio = Some(stats::Blkio {
                io_service_bytes_recursive: blkio_entries(
                    dir,
                    "blkio.throttle.io_service_bytes_recursive",
                ),
                io_serviced_recursive: blkio_entries(dir, "blkio.throttle.io_serviced_recursive"),
            });
        }
        stats.hugetlb = match self.dir_for("hugetlb") {
            Ok(dir) => hugetlb_stats(dir),
            Err(_) => self
                .unified_dir_with("cgroup.controllers")
                .map(|dir| super::v2::hugetlb_stats(dir))
                .unwrap_or_default(),
        };
        stats
    }

    fn oom_kills(&self) -> u64 {
        let Ok(dir) = self.dir_for("memory") else {
            return 0;
        };
        flat_keyed(&read(dir, "memory.oom_control"))
            .get("oom_kill")
            .copied()
            .unwrap_or(0)
    }
}

/// `MAJ:MIN Op value` lines of a blkio file as runc's entries.
fn blkio_entries(dir: &Path, file: &str) -> Vec<stats::BlkioEntry> {
    read(dir, file)
        .lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (device, op, value) = (parts.first()?, parts.get(1)?, parts.get(2)?);
            let (major, minor) = device.split_once(':')?;
            Some(stats::BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// Per page size: usage, max usage and failures (v1 hugetlb files).
fn hugetlb_stats(dir: &Path) -> BTreeMap<String, stats::Hugetlb> {
    super::v2::hugepage_sizes(dir, ".limit_in_bytes")
        .into_iter()
        .map(|size| {
            let entry = stats::Hugetlb {
                failcnt: number(dir, &format!("hugetlb.{size}.failcnt")),
                max: Some(number(dir, &format!("hugetlb.{size}.max_usage_in_bytes"))),
                usage: number(dir, &format!("hugetlb.{size}.usage_in_bytes")),
            };
            (size, entry)
        })
        .collect()
}

/// A new v1 cpuset starts with no cpus and no mems, and refuses tasks until
/// they are set: copy them down from the nearest ancestor that has them.
fn inherit_cpuset(mount_point: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut empty = Vec::new();
        let mut value = None;
        for ancestor in dir.ancestors().take_while(|a| a.starts_with(mount_point)) {
            let path = ancestor.join(file);
            let own = super::files::read_to_string(&path).map_err(io(&path))?;
            if !own.trim().is_empty() {
                value = Some(own.trim().to_string());
                break;
            }
            empty.push(path);
        }
        let Some(value) = value else {
            return Err(CgroupError::NoController(
                "cpuset (the hierarchy has no cpus)",
            ));
        };
        for path in empty.iter().rev() {
            super::files::write(path, &value).map_err(io(path))?;
        }
    }
    Ok(())
}
