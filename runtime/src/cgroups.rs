//! Placing a container in its cgroups.
//!
//! This is the part every container needs from the start: one directory per
//! hierarchy (each v1 controller mount, and the unified hierarchy of a hybrid
//! or pure v2 host), the init moved into it before it unshares its cgroup
//! namespace, the device allow-list of the spec, and removal on delete.
//! Resource limits, stats, freezing and events build on these paths.

use std::path::{Path, PathBuf};

use crate::spec::{Device, DeviceRule};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroupsPath {0:?}: it must not contain \"..\"")]
    InvalidPath(String),
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device rules cannot be enforced on this host: no v1 devices controller (cgroup v2 device programs are not implemented yet)")]
    NoDeviceController,
    #[error("cgroup {0} already has processes in it: choose a cgroupsPath of the container's own")]
    InUse(PathBuf),
    #[error("the spec sets a {0} limit but this host has no {0} controller for berth to use")]
    NoController(&'static str),
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("invalid linux.resources.{0}")]
    InvalidValue(String),
    #[error("cgroup {0} did not finish freezing or thawing")]
    FreezeTimeout(PathBuf),
    #[error("invalid device rule {0}")]
    InvalidRule(String),
}

/// One mounted hierarchy: where it is mounted, and its controllers
/// (empty for the unified v2 hierarchy).
#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    pub controllers: Vec<String>,
    /// This process's own cgroup in the hierarchy (for relative paths).
    pub own_path: PathBuf,
}

impl Hierarchy {
    pub fn is_unified(&self) -> bool {
        self.controllers.is_empty()
    }

    /// The directory name under `/sys/fs/cgroup` (`cpu,cpuacct`, `unified`, …).
    pub fn dir_name(&self) -> String {
        self.mount_point
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The hierarchies this host mounts, read from `/proc/self/mountinfo`.
/// Reads a procfs file in one `read`: `read_to_string` grows its buffer
/// from 32 bytes, one syscall per doubling, because procfs reports size 0.
pub fn read_proc(path: &str) -> String {
    use std::io::Read;
    let mut text = String::with_capacity(16 * 1024);
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

pub fn hierarchies() -> Vec<Hierarchy> {
    let own = read_proc("/proc/self/cgroup");
    let own_path = |key: &str| -> PathBuf {
        own.lines()
            .find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let _ = parts.next();
                let names = parts.next()?;
                let path = parts.next()?;
                let matches = if key.is_empty() {
                    names.is_empty()
                } else {
                    names.split(',').any(|n| n == key)
                };
                matches.then(|| PathBuf::from(path))
            })
            .unwrap_or_else(|| PathBuf::from("/"))
    };
    let mountinfo = read_proc("/proc/self/mountinfo");
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || right.len() < 3 {
            continue;
        }
        let mount_point = PathBuf::from(fields[4]);
        if out.iter().any(|h| h.mount_point == mount_point) {
            continue;
        }
        match right[0] {
            "cgroup2" => out.push(Hierarchy {
                mount_point,
                controllers: Vec::new(),
                own_path: own_path(""),
            }),
            "cgroup" => {
                let controllers: Vec<String> = right[2]
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro")
                            && !o.starts_with("release_agent")
                            && *o != "clone_children"
                            && *o != "noprefix"
                            && *o != "xattr"
                    })
                    .map(str::to_string)
                    .collect();
                let key = controllers.first().cloned().unwrap_or_default();
                out.push(Hierarchy {
                    mount_point,
                    own_path: own_path(&key),
                    controllers,
                })
            }
            _ => {}
        }
    }
    out
}

/// The directory of the container in `hierarchy` for `cgroups_path`.
/// Absolute paths are taken from the hierarchy's root; relative ones from
/// the runtime's own cgroup, as runc does. Without a path: `/berth/ID`.
pub fn container_dir(
    hierarchy: &Hierarchy,
    cgroups_path: Option<&str>,
    id: &str,
) -> Result<PathBuf, CgroupError> {
    let path = cgroups_path.filter(|p| !p.is_empty());
    if let Some(p) = path {
        if p.split('/').any(|c| c == "..") {
            return Err(CgroupError::InvalidPath(p.to_string()));
        }
    }
    let inner = match path {
        Some(p) if p.starts_with('/') => PathBuf::from(p),
        Some(p) => hierarchy.own_path.join(p),
        None => PathBuf::from("/berth").join(id),
    };
    let relative = inner.strip_prefix("/").unwrap_or(&inner);
    Ok(hierarchy.mount_point.join(relative))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The hierarchy each of a container's directories lives in, in the same order.
pub fn hierarchies_for(paths: &[PathBuf]) -> Vec<Hierarchy> {
    let all = hierarchies();
    paths
        .iter()
        .filter_map(|p| {
            all.iter()
                .filter(|h| p.starts_with(&h.mount_point))
                .max_by_key(|h| h.mount_point.as_os_str().len())
                .cloned()
        })
        .collect()
}

/// Creates the container's directories; returns them in hierarchy order.
pub fn create(
    hierarchies: &[Hierarchy],
    cgroups_path: Option<&str>,
    id: &str,
) -> Result<Vec<PathBuf>, CgroupError> {
    let mut made = Vec::new();
    for hierarchy in hierarchies {
        let dir = container_dir(hierarchy, cgroups_path, id)?;
        // Sharing a cgroup with other processes would let `kill --all` and
        // `delete` signal them: refuse, as runc 1.2 does.
        if !pids(std::slice::from_ref(&dir)).is_empty() {
            remove(&made);
            return Err(CgroupError::InUse(dir));
        }
        if let Err(e) = std::fs::create_dir_all(&dir) {
            remove(&made);
            return Err(io(&dir)(e));
        }
        made.push(dir.clone());
        if hierarchy.controllers.iter().any(|c| c == "cpuset") {
            if let Err(e) = inherit_cpuset(&hierarchy.mount_point, &dir) {
                remove(&made);
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// A new v1 cpuset starts with no cpus and no mems, and refuses tasks until
/// they are set: copy them down from the nearest ancestor that has them.
fn inherit_cpuset(mount_point: &Path, dir: &Path) -> Result<(), CgroupError> {
    let mut chain = Vec::new();
    let mut current = dir.to_path_buf();
    while current.starts_with(mount_point) && current != mount_point {
        chain.push(current.clone());
        if !current.pop() {
            break;
        }
    }
    chain.reverse();
    for file in ["cpuset.cpus", "cpuset.mems"] {
        for child in &chain {
            let Some(parent) = child.parent() else {
                continue;
            };
            let own = std::fs::read_to_string(child.join(file)).unwrap_or_default();
            if !own.trim().is_empty() {
                continue;
            }
            let inherited =
                std::fs::read_to_string(parent.join(file)).map_err(io(&parent.join(file)))?;
            let path = child.join(file);
            std::fs::write(&path, inherited.trim()).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Moves `pid` into every directory.
pub fn join(paths: &[PathBuf], pid: i32) -> Result<(), CgroupError> {
    for dir in paths {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(io(&procs))?;
    }
    Ok(())
}

/// Removes the directories, retrying while the kernel still counts exiting
/// tasks.
pub fn remove(paths: &[PathBuf]) {
    for dir in paths {
        for attempt in 0..50 {
            match std::fs::remove_dir(dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                _ => break,
            }
        }
    }
}

/// Pids in the container's cgroup and every cgroup below it (from the
/// first hierarchy that lists them).
pub fn pids(paths: &[PathBuf]) -> Vec<i32> {
    fn walk(dir: &Path, out: &mut Vec<i32>) {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), out);
            }
        }
    }
    for dir in paths {
        if dir.join("cgroup.procs").exists() {
            let mut out = Vec::new();
            walk(dir, &mut out);
            return out;
        }
    }
    Vec::new()
}

/// Whether the container's freezer says it is frozen.
/// Freezing in progress counts: nothing may join a cgroup on its way to frozen.
pub fn is_frozen(paths: &[PathBuf]) -> bool {
    let read =
        |dir: &PathBuf, file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    paths.iter().any(|dir| {
        matches!(read(dir, "freezer.state").trim(), "FROZEN" | "FREEZING")
            || read(dir, "cgroup.freeze").trim() == "1"
    })
}

/// The devices every container may use, as runc allows them by default.
const DEFAULT_ALLOWED: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

fn rule_line(rule: &DeviceRule) -> Result<String, CgroupError> {
    let kind = rule.kind.as_deref().unwrap_or("a");
    if !matches!(kind, "a" | "c" | "b") {
        return Err(CgroupError::InvalidRule(format!(
            "type {kind:?}: must be a, c or b"
        )));
    }
    let access = rule.access.as_deref().unwrap_or("rwm");
    if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(CgroupError::InvalidRule(format!(
            "access {access:?}: must be made of r, w and m"
        )));
    }
    let number = |n: Option<i64>| match n {
        None | Some(-1) => Ok("*".to_string()),
        Some(n) if n >= 0 => Ok(n.to_string()),
        Some(n) => Err(CgroupError::InvalidRule(format!("device number {n}"))),
    };
    if kind == "a" {
        return Ok("a".to_string());
    }
    Ok(format!(
        "{kind} {}:{} {access}",
        number(rule.major)?,
        number(rule.minor)?
    ))
}

/// Applies the device allow-list: deny everything, then the spec's rules in
/// order, the spec's devices, and runc's defaults.
pub fn apply_devices(
    hierarchies: &[Hierarchy],
    paths: &[PathBuf],
    rules: &[DeviceRule],
    devices: &[Device],
) -> Result<(), CgroupError> {
    let Ok(dir) = dir_for(hierarchies, paths, "devices") else {
        // Without a device filter the container could mknod and open any
        // host device: refuse rather than run unfiltered.
        return Err(CgroupError::NoDeviceController);
    };
    use std::io::Write;
    let open = |file: &str| {
        let path = dir.join(file);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map(|f| (f, path.clone()))
            .map_err(io(&path))
    };
    // Each write(2) is one rule; keeping the files open saves an open and a
    // close per rule.
    let (mut allow, allow_path) = open("devices.allow")?;
    let (mut deny, deny_path) = open("devices.deny")?;
    let mut write = |allowing: bool, line: &str| {
        let (file, path) = if allowing {
            (&mut allow, &allow_path)
        } else {
            (&mut deny, &deny_path)
        };
        file.write_all(line.as_bytes()).map_err(io(path))
    };
    write(false, "a")?;
    for rule in rules {
        write(rule.allow, &rule_line(rule)?)?;
    }
    for device in devices {
        let kind = if device.kind == "u" {
            "c"
        } else {
            device.kind.as_str()
        };
        if kind == "p" {
            continue;
        }
        write(
            true,
            &format!("{kind} {}:{} rwm", device.major, device.minor),
        )?;
    }
    for line in DEFAULT_ALLOWED {
        write(true, line)?;
    }
    Ok(())
}

/// The container's directory in the hierarchy that has `controller`.
fn dir_for<'a>(
    hierarchies: &[Hierarchy],
    paths: &'a [PathBuf],
    controller: &'static str,
) -> Result<&'a PathBuf, CgroupError> {
    hierarchies
        .iter()
        .zip(paths)
        .find(|(h, _)| h.controllers.iter().any(|c| c == controller))
        .map(|(_, p)| p)
        .ok_or(CgroupError::NoController(controller))
}

/// The container's directory in the unified hierarchy, if it has `file`.
fn unified_dir_with<'a>(
    hierarchies: &[Hierarchy],
    paths: &'a [PathBuf],
    file: &str,
) -> Option<&'a PathBuf> {
    hierarchies
        .iter()
        .zip(paths)
        .find(|(h, p)| h.is_unified() && p.join(file).exists())
        .map(|(_, p)| p)
}

fn write_file(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| CgroupError::Write {
        path,
        value: value.to_string(),
        source,
    })
}

/// Checks resource values before anything is created.
pub fn validate_resources(resources: &crate::spec::Resources) -> Result<(), CgroupError> {
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
    Ok(())
}

/// Writes the memory and cpu limits (v1 files; issue 3 brings v2).
pub fn apply_resources(
    hierarchies: &[Hierarchy],
    paths: &[PathBuf],
    resources: &crate::spec::Resources,
) -> Result<(), CgroupError> {
    if let Some(memory) = &resources.memory {
        let dir = dir_for(hierarchies, paths, "memory")?;
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
    }
    if let Some(cpu) = &resources.cpu {
        if cpu.shares.is_some()
            || cpu.quota.is_some()
            || cpu.period.is_some()
            || cpu.realtime_runtime.is_some()
            || cpu.realtime_period.is_some()
        {
            let dir = dir_for(hierarchies, paths, "cpu")?;
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
            let dir = dir_for(hierarchies, paths, "cpuset")?;
            if let Some(cpus) = &cpu.cpus {
                write_file(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = &cpu.mems {
                write_file(dir, "cpuset.mems", mems)?;
            }
        }
    }
    if let Some(pids) = &resources.pids {
        apply_pids(hierarchies, paths, pids.limit)?;
    }
    if let Some(block_io) = &resources.block_io {
        apply_block_io(hierarchies, paths, block_io)?;
    }
    for limit in &resources.hugepage_limits {
        apply_hugetlb(hierarchies, paths, limit)?;
    }
    Ok(())
}

fn apply_block_io(
    hierarchies: &[Hierarchy],
    paths: &[PathBuf],
    block_io: &crate::spec::BlockIo,
) -> Result<(), CgroupError> {
    let dir = dir_for(hierarchies, paths, "blkio")?;
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
        (
            "blkio.throttle.read_bps_device",
            &block_io.throttle_read_bps_device,
        ),
        (
            "blkio.throttle.write_bps_device",
            &block_io.throttle_write_bps_device,
        ),
        (
            "blkio.throttle.read_iops_device",
            &block_io.throttle_read_iops_device,
        ),
        (
            "blkio.throttle.write_iops_device",
            &block_io.throttle_write_iops_device,
        ),
    ] {
        for device in devices {
            write_file(
                dir,
                file,
                &format!("{}:{} {}", device.major, device.minor, device.rate),
            )?;
        }
    }
    Ok(())
}

/// Hugepage limits: the v1 hugetlb controller, or (on hybrid hosts, where
/// hugetlb sits on cgroup2) the unified hierarchy with the controller
/// enabled down to the container's directory.
fn apply_hugetlb(
    hierarchies: &[Hierarchy],
    paths: &[PathBuf],
    limit: &crate::spec::HugepageLimit,
) -> Result<(), CgroupError> {
    let size = &limit.page_size;
    if let Ok(dir) = dir_for(hierarchies, paths, "hugetlb") {
        return write_file(
            dir,
            &format!("hugetlb.{size}.limit_in_bytes"),
            &limit.limit.to_string(),
        );
    }
    let (hierarchy, dir) = hierarchies
        .iter()
        .zip(paths)
        .find(|(h, _)| h.is_unified())
        .ok_or(CgroupError::NoController("hugetlb"))?;
    let available = std::fs::read_to_string(hierarchy.mount_point.join("cgroup.controllers"))
        .unwrap_or_default();
    if !available.split_whitespace().any(|c| c == "hugetlb") {
        return Err(CgroupError::NoController("hugetlb"));
    }
    // Each ancestor below the root must hand the controller down.
    let mut ancestors: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(&hierarchy.mount_point))
        .collect();
    ancestors.reverse();
    for ancestor in ancestors {
        write_file(ancestor, "cgroup.subtree_control", "+hugetlb")?;
    }
    let file = format!("hugetlb.{size}.max");
    if !dir.join(&file).exists() {
        return Err(CgroupError::InvalidValue(format!(
            "hugepageLimits: page size {size:?} is not one this host has"
        )));
    }
    write_file(dir, &file, &limit.limit.to_string())
}

/// Freezes or thaws every task of the container (v1 freezer, or v2's
/// cgroup.freeze) and waits until the kernel reports it done.
pub fn freeze(
    hierarchies: &[Hierarchy],
    paths: &[PathBuf],
    frozen: bool,
) -> Result<(), CgroupError> {
    let v1 = dir_for(hierarchies, paths, "freezer").ok();
    let v2 = || unified_dir_with(hierarchies, paths, "cgroup.freeze");
    // (directory, file to write, value, file to watch, text that means done)
    let (dir, file, value, watch, done) = match (v1, frozen) {
        (Some(dir), true) => (dir, "freezer.state", "FROZEN", "freezer.state", "FROZEN"),
        (Some(dir), false) => (dir, "freezer.state", "THAWED", "freezer.state", "THAWED"),
        (None, _) => {
            let dir = v2().ok_or(CgroupError::NoController("freezer"))?;
            let (value, done) = if frozen {
                ("1", "frozen 1")
            } else {
                ("0", "frozen 0")
            };
            (dir, "cgroup.freeze", value, "cgroup.events", done)
        }
    };
    write_file(dir, file, value)?;
    for _ in 0..1000 {
        let state = std::fs::read_to_string(dir.join(watch)).unwrap_or_default();
        if state.lines().any(|l| l.trim() == done) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if frozen {
        // Never leave a container half-frozen: undo, then report.
        let undo = if file == "freezer.state" {
            "THAWED"
        } else {
            "0"
        };
        let _ = write_file(dir, file, undo);
    }
    Err(CgroupError::FreezeTimeout(dir.clone()))
}

/// Writes `pids.max` (a limit of 0 leaves the cgroup as it is, as runc does).
pub fn apply_pids(
    hierarchies: &[Hierarchy],
    paths: &[PathBuf],
    limit: i64,
) -> Result<(), CgroupError> {
    if limit == 0 {
        return Ok(());
    }
    let value = if limit < 0 {
        "max".to_string()
    } else {
        limit.to_string()
    };
    let dir = dir_for(hierarchies, paths, "pids")
        .ok()
        .or_else(|| unified_dir_with(hierarchies, paths, "pids.max"))
        .ok_or(CgroupError::NoController("pids"))?;
    write_file(dir, "pids.max", &value)
}

/// Checks the device rules without touching the kernel (for `create`'s validation).
pub fn validate_rules(rules: &[DeviceRule]) -> Result<(), CgroupError> {
    rules.iter().try_for_each(|r| rule_line(r).map(drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_paths() {
        let h = Hierarchy {
            mount_point: "/sys/fs/cgroup/memory".into(),
            controllers: vec!["memory".into()],
            own_path: "/user".into(),
        };
        assert_eq!(
            container_dir(&h, Some("/a/b"), "x").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/a/b")
        );
        assert_eq!(
            container_dir(&h, Some("a"), "x").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/user/a")
        );
        assert_eq!(
            container_dir(&h, None, "x").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/berth/x")
        );
        assert!(container_dir(&h, Some("/a/../../etc"), "x").is_err());
    }

    #[test]
    fn device_rules_are_checked() {
        let rule = |kind: &str, access: &str| DeviceRule {
            allow: true,
            kind: Some(kind.into()),
            major: Some(1),
            minor: None,
            access: Some(access.into()),
        };
        assert_eq!(rule_line(&rule("c", "rw")).unwrap(), "c 1:* rw");
        assert!(rule_line(&rule("x", "rw")).is_err());
        assert!(rule_line(&rule("c", "rwq")).is_err());
    }
}
