//! A container's cgroups, on whichever hierarchy the host has.
//!
//! Start here: [`hierarchies`] reads the host's mounts once ([`hierarchy`])
//! and [`planned`] names the container's directory in each (each v1
//! controller mount, plus the unified hierarchy of hybrid and pure v2
//! hosts); [`driver`] picks the one implementation of [`Driver`] for them,
//! which does everything else: [`Driver::create`] makes the directories,
//! [`birthplace`] opens the unified one for the init to be born in (clone3),
//! [`Driver::open_joins`] opens the others' join files, which the init
//! writes to ([`Driver::join_with`]) before it unshares its cgroup
//! namespace (exec's helper does both, [`Driver::join_self`]); the driver
//! writes limits, device rules, the freezer, reads
//! [`Stats`], lists pids and removes the directories at the end. [`v1`]
//! serves v1 and hybrid hosts, [`v2`] pure cgroup v2 (whose device filter
//! is the eBPF program of [`device_filter`]); what is the same on both
//! (the directories' verbs) is in [`directories`]; [`files`] opens the
//! files, from one descriptor of `/sys/fs/cgroup` while `create` makes
//! and limits the container's (it says why). Device rules are
//! normalised in [`devices`]; values are checked by [`validate_resources`]
//! before anything exists, so a bad spec leaves no cgroup behind.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::spec::Resources;

pub mod device_filter;
pub mod devices;
pub mod directories;
pub mod files;
pub mod hierarchy;
pub mod stats;
pub mod v1;
pub mod v2;
pub mod validate;

pub use devices::{
    device_rules, validate_rules, DeviceAccess, ACCESS_MKNOD, ACCESS_READ, ACCESS_WRITE,
};
pub use directories::{sub_cgroups, Birthplace};
pub use hierarchy::{container_dir, hierarchies, hierarchies_for, planned, read_proc, Hierarchy};
pub use stats::Stats;
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
    #[error("the runtime handed over {got} cgroup files to join, not {expected}")]
    JoinFiles { expected: usize, got: usize },
    #[error("cannot join cgroup {dir}: {source}")]
    Join {
        dir: PathBuf,
        source: std::io::Error,
    },
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
    files::write(&path, value).map_err(|source| {
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
    files::read_to_string(&dir.join(file)).unwrap_or_default()
}

fn number(dir: &Path, file: &str) -> u64 {
    read(dir, file).trim().parse().unwrap_or(0)
}

/// `key value` lines (memory.stat, cpu.stat, memory.events) as a map; a
/// value that is not a number is left out.
fn flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), value.trim().parse::<u64>().ok()?))
        })
        .collect()
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

/// Which of a container's directories [`Driver::create`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    All,
    /// The unified hierarchy's alone: the init is born in it (see
    /// [`birthplace`]), so it exists before the clone.
    Unified,
    /// Every one but the unified hierarchy's: made while the init starts.
    Others,
}

impl Part {
    /// Whether a directory of the unified hierarchy (or another's) is part.
    pub fn takes(self, unified: bool) -> bool {
        match self {
            Part::All => true,
            Part::Unified => unified,
            Part::Others => !unified,
        }
    }
}

/// Everything berth does with a container's cgroups, from making them to
/// removing them. One implementation per kind of host, chosen once by
/// [`driver`]: cgroup v1 (and hybrid hosts, whose unified hierarchy only
/// adds a few controllers) and pure cgroup v2; [`driver_for`] gives the
/// driver of an existing container from the paths in its state.
pub trait Driver {
    /// The container's directories, one per hierarchy, in hierarchy order
    /// (what its state keeps).
    fn paths(&self) -> &[PathBuf];
    /// Makes the directories `part` names, ready for limits and tasks;
    /// refuses one that other processes are already in. A failure removes
    /// what this call made.
    fn create(&self, part: Part) -> Result<(), CgroupError>;
    /// The directory in the unified hierarchy (cgroup v2), if the
    /// container has one: the only one on a pure v2 host, one more on a
    /// hybrid host that mounts the unified hierarchy. Its processes can be
    /// born in it ([`birthplace`]).
    fn unified_dir(&self) -> Option<&Path>;
    /// Moves the calling process, which must have a single thread, into
    /// every directory but `born_in`, the one it was born in (see
    /// [`directories::join_self`] for why the caller moves itself).
    fn join_self(&self, born_in: Option<&Path>) -> Result<(), CgroupError> {
        directories::join_self(self.paths(), born_in)
    }
    /// [`Driver::join_self`] in two halves, for a runtime that opens the
    /// files its init then writes to (see [`directories::open_joins`]).
    fn open_joins(&self, born_in: Option<&Path>) -> Result<Vec<OwnedFd>, CgroupError> {
        directories::open_joins(self.paths(), born_in)
    }
    /// The init's half: `files` are [`Driver::open_joins`]' for the same
    /// directories.
    fn join_with(&self, born_in: Option<&Path>, files: Vec<OwnedFd>) -> Result<(), CgroupError> {
        directories::join_with(self.paths(), born_in, files)
    }
    /// Removes the directories and the sub-cgroups below them.
    fn remove(&self) {
        directories::remove(self.paths())
    }
    /// The pids in the container's cgroup and every cgroup below it.
    fn pids(&self) -> Vec<i32> {
        directories::pids(self.paths())
    }
    /// Whether the freezer says frozen (or freezing).
    fn is_frozen(&self) -> bool {
        directories::is_frozen(self.paths())
    }
    /// Writes the limits of `linux.resources` (create and update).
    fn apply(&self, resources: &Resources) -> Result<(), CgroupError>;
    /// Installs the device allow-list (v1 files, or a v2 eBPF program).
    fn apply_devices(&self, rules: &[DeviceAccess]) -> Result<(), CgroupError>;
    /// Freezes or thaws every task and waits until the kernel says done.
    fn freeze(&self, frozen: bool) -> Result<(), CgroupError>;
    /// `berth events --stats`' `data`, shaped like runc's.
    fn stats(&self) -> Stats;
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

/// The container's directory in the unified hierarchy opened for a child
/// to be born in (`process::clone_into_cgroup`), if it has one.
pub fn birthplace(driver: &dyn Driver) -> Result<Option<Birthplace>, CgroupError> {
    driver.unified_dir().map(Birthplace::open).transpose()
}

/// The driver of an existing container, from the directories in its state.
/// Joining, listing, removing and the freeze check need only the paths: the
/// host's hierarchies are read the first time a limit, the freezer or the
/// statistics need them (`exec` and `delete` never do).
pub fn driver_for(paths: &[PathBuf]) -> Box<dyn Driver> {
    Box::new(Existing {
        paths: paths.to_vec(),
        host: OnceCell::new(),
    })
}

/// [`driver_for`]'s driver: the paths, and the host's driver once needed.
struct Existing {
    paths: Vec<PathBuf>,
    host: OnceCell<Box<dyn Driver>>,
}

impl Existing {
    fn host(&self) -> &dyn Driver {
        self.host
            .get_or_init(|| driver(&hierarchies_for(&self.paths), &self.paths))
            .as_ref()
    }
}

impl Driver for Existing {
    fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
    /// Found by the directories' file system: no need for the host's
    /// hierarchies (`exec` clones its helper into this one).
    fn unified_dir(&self) -> Option<&Path> {
        directories::unified_of(&self.paths)
    }
    fn create(&self, part: Part) -> Result<(), CgroupError> {
        self.host().create(part)
    }
    fn apply(&self, resources: &Resources) -> Result<(), CgroupError> {
        self.host().apply(resources)
    }
    fn apply_devices(&self, rules: &[DeviceAccess]) -> Result<(), CgroupError> {
        self.host().apply_devices(rules)
    }
    fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        self.host().freeze(frozen)
    }
    fn stats(&self) -> Stats {
        self.host().stats()
    }
    fn oom_kills(&self) -> u64 {
        self.host().oom_kills()
    }
}
