//! A container's cgroups, on whichever hierarchy the host has.
//!
//! Start here: [`hierarchies`] reads the host's mounts once; [`create`] makes
//! one directory per hierarchy (each v1 controller mount, plus the unified
//! hierarchy of hybrid and pure v2 hosts), [`join`] moves the init in
//! before it unshares its cgroup namespace, and [`driver`] picks the one
//! implementation of [`Driver`] that writes limits, device rules, the
//! freezer and reads statistics: [`v1`] for v1 and hybrid hosts, [`v2`] for
//! pure cgroup v2 (whose device filter is the eBPF program of
//! [`device_filter`]). Values are checked by [`validate_resources`] before
//! anything exists, so a bad spec leaves no cgroup behind.

use std::path::{Path, PathBuf};

use crate::spec::{DeviceRule, Resources};

pub mod device_filter;
pub mod v1;
pub mod v2;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroupsPath {0:?}: it must not contain \"..\"")]
    InvalidPath(String),
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device rules cannot be enforced on this host: no v1 devices controller")]
    NoDeviceController,
    #[error("cannot load the cgroup v2 device filter: {0}")]
    DeviceFilter(#[from] device_filter::FilterError),
    #[error("{0} does not exist: its controller is not enabled for the container's cgroup")]
    NoFile(PathBuf),
    #[error("linux.resources.{0} is not supported on this host ({1})")]
    Unsupported(&'static str, &'static str),
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
    #[error("exec --cgroup {arg:?}: {why}")]
    SubCgroup { arg: String, why: String },
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

/// The directories [`create`] will make, in hierarchy order.
pub fn planned(
    hierarchies: &[Hierarchy],
    cgroups_path: Option<&str>,
    id: &str,
) -> Result<Vec<PathBuf>, CgroupError> {
    hierarchies
        .iter()
        .map(|h| container_dir(h, cgroups_path, id))
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
        if is_pure_v2(hierarchies) {
            v2::enable_controllers(&hierarchy.mount_point, &dir);
        }
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
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut empty = Vec::new();
        let mut value = None;
        for ancestor in dir.ancestors().take_while(|a| a.starts_with(mount_point)) {
            let path = ancestor.join(file);
            let own = std::fs::read_to_string(&path).map_err(io(&path))?;
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
            std::fs::write(path, &value).map_err(io(path))?;
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

/// The container's cgroup directories with `exec --cgroup` applied: each
/// argument is `PATH` (every hierarchy) or `CONTROLLER[,CONTROLLER]:PATH`,
/// naming an existing sub-cgroup of the container's own (as runc's flag).
pub fn sub_cgroups(paths: &[PathBuf], args: &[String]) -> Result<Vec<PathBuf>, CgroupError> {
    let hierarchies = hierarchies_for(paths);
    let mut parsed = Vec::new();
    for arg in args {
        let bad = |why: &str| CgroupError::SubCgroup {
            arg: arg.clone(),
            why: why.to_string(),
        };
        let (controllers, sub) = match arg.split_once(':') {
            Some((list, sub)) => (list.split(',').map(str::to_string).collect(), sub),
            None => (Vec::new(), arg.as_str()),
        };
        let sub = Path::new(sub.trim_start_matches('/'));
        if sub.as_os_str().is_empty()
            || sub
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad("the path must name a cgroup below the container's"));
        }
        for name in &controllers {
            if !hierarchies.iter().any(|h| h.controllers.contains(name)) {
                return Err(bad(&format!("the container has no {name:?} controller")));
            }
        }
        parsed.push((arg, controllers, sub.to_path_buf()));
    }
    let mut out = Vec::new();
    for (dir, hierarchy) in paths.iter().zip(&hierarchies) {
        let chosen = parsed.iter().find(|(_, controllers, _)| {
            controllers.is_empty()
                || controllers
                    .iter()
                    .any(|c| hierarchy.controllers.contains(c))
        });
        let path = match chosen {
            Some((arg, _, sub)) => {
                let path = dir.join(sub);
                if !path.is_dir() {
                    return Err(CgroupError::SubCgroup {
                        arg: (*arg).clone(),
                        why: format!("{} does not exist", path.display()),
                    });
                }
                path
            }
            None => dir.clone(),
        };
        out.push(path);
    }
    Ok(out)
}

/// Removes the directories, retrying while the kernel still counts exiting
/// tasks.
pub fn remove(paths: &[PathBuf]) {
    for dir in paths {
        // Sub-cgroups first (`exec --cgroup` ones, or a nested engine's).
        let children: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        remove(&children);
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

/// One device rule, checked and normalised: `None` is the `*` wildcard
/// (for `kind`: every type, the spec's `a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAccess {
    pub allow: bool,
    pub kind: Option<char>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `ACCESS_*` bits.
    pub access: u8,
}

pub const ACCESS_MKNOD: u8 = 1;
pub const ACCESS_READ: u8 = 2;
pub const ACCESS_WRITE: u8 = 4;

impl DeviceAccess {
    fn allow(kind: char, major: Option<u32>, minor: Option<u32>, access: u8) -> DeviceAccess {
        DeviceAccess {
            allow: true,
            kind: Some(kind),
            major,
            minor,
            access,
        }
    }

    /// The v1 `devices.allow`/`devices.deny` line.
    pub fn v1_line(&self) -> String {
        let Some(kind) = self.kind else {
            return "a".to_string();
        };
        let number = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        let mut access = String::new();
        for (bit, letter) in [(ACCESS_READ, 'r'), (ACCESS_WRITE, 'w'), (ACCESS_MKNOD, 'm')] {
            if self.access & bit != 0 {
                access.push(letter);
            }
        }
        format!(
            "{kind} {}:{} {access}",
            number(self.major),
            number(self.minor)
        )
    }
}

/// The devices every container may use, as runc allows them by default:
/// mknod of any device, and null, zero, full, random, urandom, tty, ptmx,
/// the pty slaves and /dev/net/tun. Not the host's console (5:1): a
/// container's `/dev/console` is a pty slave bound there.
fn default_allowed() -> [DeviceAccess; 11] {
    let all = ACCESS_READ | ACCESS_WRITE | ACCESS_MKNOD;
    let c = |major, minor| DeviceAccess::allow('c', Some(major), minor, all);
    [
        DeviceAccess::allow('c', None, None, ACCESS_MKNOD),
        DeviceAccess::allow('b', None, None, ACCESS_MKNOD),
        c(1, Some(3)),
        c(1, Some(5)),
        c(1, Some(7)),
        c(1, Some(8)),
        c(1, Some(9)),
        c(5, Some(0)),
        c(5, Some(2)),
        c(136, None),
        c(10, Some(200)),
    ]
}

fn check_rule(rule: &DeviceRule) -> Result<DeviceAccess, CgroupError> {
    let kind = rule.kind.as_deref().unwrap_or("a");
    let kind = match kind {
        "a" => None,
        "c" => Some('c'),
        "b" => Some('b'),
        other => {
            return Err(CgroupError::InvalidRule(format!(
                "type {other:?}: must be a, c or b"
            )))
        }
    };
    let letters = rule.access.as_deref().unwrap_or("rwm");
    let mut access = 0;
    for letter in letters.chars() {
        access |= match letter {
            'r' => ACCESS_READ,
            'w' => ACCESS_WRITE,
            'm' => ACCESS_MKNOD,
            _ => 0xff,
        };
    }
    if letters.is_empty() || access == 0xff || access > 7 {
        return Err(CgroupError::InvalidRule(format!(
            "access {letters:?}: must be made of r, w and m"
        )));
    }
    let number = |n: Option<i64>| match n {
        None | Some(-1) => Ok(None),
        Some(n) if (0..=u32::MAX as i64).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(CgroupError::InvalidRule(format!("device number {n}"))),
    };
    let (major, minor) = match kind {
        // `a` means every device, whatever numbers come with it.
        None => (None, None),
        Some(_) => (number(rule.major)?, number(rule.minor)?),
    };
    Ok(DeviceAccess {
        allow: rule.allow,
        kind,
        major,
        minor,
        access,
    })
}

/// The whole allow-list in the order it applies: deny everything, then the
/// spec's rules, then runc's defaults (a later rule overrides an earlier one
/// for the devices both name). `linux.devices` only creates nodes: as with
/// runc, a node the rules do not allow stays unusable.
pub fn device_rules(rules: &[DeviceRule]) -> Result<Vec<DeviceAccess>, CgroupError> {
    let mut out = vec![DeviceAccess {
        allow: false,
        kind: None,
        major: None,
        minor: None,
        access: ACCESS_READ | ACCESS_WRITE | ACCESS_MKNOD,
    }];
    for rule in rules {
        out.push(check_rule(rule)?);
    }
    out.extend(default_allowed());
    Ok(out)
}

/// Checks the device rules without touching the kernel (for `create`'s validation).
pub fn validate_rules(rules: &[DeviceRule]) -> Result<(), CgroupError> {
    rules.iter().try_for_each(|r| check_rule(r).map(drop))
}

/// Writes one cgroup file; a missing file means the controller is not there.
fn write_file(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            CgroupError::NoFile(path.clone())
        } else {
            CgroupError::Write {
                path: path.clone(),
                value: value.to_string(),
                source,
            }
        }
    })
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

fn number(dir: &Path, file: &str) -> u64 {
    read(dir, file).trim().parse().unwrap_or(0)
}

/// `key value` lines (memory.stat, cpu.stat, memory.events) as a JSON object.
fn flat_keyed(text: &str) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = text
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((
                key.to_string(),
                serde_json::json!(value.trim().parse::<u64>().ok()?),
            ))
        })
        .collect();
    serde_json::Value::Object(map)
}

/// Writes `value` to `file` and waits until `watch` has a line `done`;
/// a freeze that does not finish is undone, never left half-done.
fn freeze_and_wait(
    dir: &Path,
    file: &str,
    (value, undo): (&str, &str),
    (watch, done): (&str, &str),
    freezing: bool,
) -> Result<(), CgroupError> {
    write_file(dir, file, value)?;
    for _ in 0..1000 {
        if read(dir, watch).lines().any(|l| l.trim() == done) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if freezing {
        let _ = write_file(dir, file, undo);
    }
    Err(CgroupError::FreezeTimeout(dir.to_path_buf()))
}

/// What berth does with a container's cgroups once they exist. One
/// implementation per kind of host, chosen once by [`driver`]: cgroup v1
/// (and hybrid hosts, whose unified hierarchy only adds a few controllers)
/// and pure cgroup v2.
pub trait Driver {
    /// Writes the limits of `linux.resources` (create and update).
    fn apply(&self, resources: &Resources) -> Result<(), CgroupError>;
    /// Installs the device allow-list (v1 files, or a v2 eBPF program).
    fn apply_devices(&self, rules: &[DeviceAccess]) -> Result<(), CgroupError>;
    /// Freezes or thaws every task and waits until the kernel says done.
    fn freeze(&self, frozen: bool) -> Result<(), CgroupError>;
    /// `berth events --stats`' `data`, shaped like runc's.
    fn stats(&self) -> serde_json::Value;
    /// How many times the kernel OOM-killed in the container so far.
    fn oom_kills(&self) -> u64;
}

/// The driver for the container's directories `paths`, one per hierarchy
/// in `hierarchies` (a pure v2 host has exactly one, the unified one).
pub fn driver(hierarchies: &[Hierarchy], paths: &[PathBuf]) -> Box<dyn Driver> {
    match (hierarchies, paths) {
        ([only], [dir]) if only.is_unified() => Box::new(v2::V2 {
            mount_point: only.mount_point.clone(),
            dir: dir.clone(),
        }),
        _ => Box::new(v1::V1 {
            hierarchies: hierarchies.to_vec(),
            paths: paths.to_vec(),
        }),
    }
}

/// The driver of an existing container, from the directories in its state.
pub fn driver_for(paths: &[PathBuf]) -> Box<dyn Driver> {
    driver(&hierarchies_for(paths), paths)
}

/// Whether this host has only the unified hierarchy.
pub fn is_pure_v2(hierarchies: &[Hierarchy]) -> bool {
    matches!(hierarchies, [only] if only.is_unified())
}

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

    fn rule(kind: &str, access: &str) -> DeviceRule {
        DeviceRule {
            allow: true,
            kind: Some(kind.into()),
            major: Some(1),
            minor: None,
            access: Some(access.into()),
        }
    }

    #[test]
    fn device_rules_are_checked() {
        assert_eq!(check_rule(&rule("c", "rw")).unwrap().v1_line(), "c 1:* rw");
        assert_eq!(check_rule(&rule("a", "rw")).unwrap().v1_line(), "a");
        assert!(check_rule(&rule("x", "rw")).is_err());
        assert!(check_rule(&rule("c", "rwq")).is_err());
        assert!(check_rule(&rule("c", "")).is_err());
        let mut negative = rule("b", "r");
        negative.major = Some(-7);
        assert!(check_rule(&negative).is_err());
    }

    #[test]
    fn the_allow_list_starts_with_deny_all_and_ends_with_the_defaults() {
        let list = device_rules(&[rule("c", "r")]).unwrap();
        assert_eq!(list[0].v1_line(), "a");
        assert!(!list[0].allow);
        assert_eq!(list[1].v1_line(), "c 1:* r");
        assert_eq!(list.last().unwrap().v1_line(), "c 10:200 rwm");
    }

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
