//! A container's cgroups, on whichever hierarchy the host has.
//!
//! Start here: [`hierarchies`] reads the host's mounts once ([`hierarchy`]);
//! [`create`] makes one directory per hierarchy (each v1 controller mount,
//! plus the unified hierarchy of hybrid and pure v2 hosts), [`join`] moves
//! the init in before it unshares its cgroup namespace ([`directories`]),
//! and [`driver`] picks the one implementation of [`Driver`] that writes
//! limits, device rules, the freezer and reads statistics: [`v1`] for v1 and
//! hybrid hosts, [`v2`] for pure cgroup v2 (whose device filter is the eBPF
//! program of [`device_filter`]). Device rules are normalised in [`devices`];
//! values are checked by [`validate_resources`] before anything exists, so a
//! bad spec leaves no cgroup behind.

use std::path::{Path, PathBuf};

use crate::spec::Resources;

pub mod device_filter;
pub mod devices;
pub mod directories;
pub mod hierarchy;
pub mod v1;
pub mod v2;
pub mod validate;

pub use devices::{
    device_rules, validate_rules, DeviceAccess, ACCESS_MKNOD, ACCESS_READ, ACCESS_WRITE,
};
pub use directories::{create, is_frozen, join, pids, remove, sub_cgroups};
pub use hierarchy::{container_dir, hierarchies, hierarchies_for, planned, read_proc, Hierarchy};
pub use validate::validate_resources;

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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
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
