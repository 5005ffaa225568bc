//! The OCI runtime spec (`config.json`): the one definition of its types in
//! the workspace. The runtime reads every bundle with it; the daemon builds
//! every bundle's spec as a value of it.
//!
//! Our own serde types rather than `oci-spec`'s runtime types, because
//! `oci-spec` cannot read what runc accepts: Go matches keys ignoring case,
//! so `"NoNewPrivileges"` is the field, which serde drops as unknown
//! (silently losing a security setting), and it refuses a config without
//! `process.user` (see the test `oci_spec_cannot_read_what_runc_accepts`).
//! Parsing is also on the start-up path of every container, and owning the
//! types lets the error for a wrong-typed field name the field. Unknown
//! fields are ignored, as the spec requires.
//!
//! The text is read as runc (Go) reads it, because engines write it in Go:
//! `null` is absent, keys match fields ignoring case ([`crate::go_json`]),
//! a missing field is its zero value (every struct is `serde(default)`), and
//! the zero values runc takes for "unset" are unset
//! ([`Resources::without_go_zero_values`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::go_json::{GoSchema, Zero};

mod validate;

/// Everything that can be wrong with a bundle's `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid config.json: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub oci_version: String,
    pub process: Option<Process>,
    pub root: Option<Root>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub mounts: Vec<Mount>,
    pub hooks: Option<Hooks>,
    pub annotations: BTreeMap<String, String>,
    pub linux: Option<Linux>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub terminal: bool,
    pub console_size: Option<ConsoleSize>,
    pub user: User,
    pub args: Vec<String>,
    pub command_line: Option<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub capabilities: Option<Capabilities>,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privileges: bool,
    pub apparmor_profile: Option<String>,
    pub oom_score_adj: Option<i32>,
    pub selinux_label: Option<String>,
    pub scheduler: Option<serde_json::Value>,
    pub io_priority: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsoleSize {
    pub height: u16,
    pub width: u16,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub umask: Option<u32>,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub bounding: Option<Vec<String>>,
    pub effective: Option<Vec<String>>,
    pub inheritable: Option<Vec<String>>,
    pub permitted: Option<Vec<String>>,
    pub ambient: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Root {
    pub path: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub destination: PathBuf,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub source: Option<PathBuf>,
    pub options: Vec<String>,
    pub uid_mappings: Vec<IdMapping>,
    pub gid_mappings: Vec<IdMapping>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    pub create_container: Vec<Hook>,
    pub start_container: Vec<Hook>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Hook {
    pub path: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub timeout: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    pub namespaces: Vec<Namespace>,
    pub uid_mappings: Vec<IdMapping>,
    pub gid_mappings: Vec<IdMapping>,
    pub time_offsets: BTreeMap<String, TimeOffset>,
    pub devices: Vec<Device>,
    pub cgroups_path: Option<String>,
    pub resources: Option<Resources>,
    pub rootfs_propagation: Option<String>,
    pub seccomp: Option<serde_json::Value>,
    pub sysctl: BTreeMap<String, String>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub mount_label: Option<String>,
    pub personality: Option<serde_json::Value>,
    pub intel_rdt: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct IdMapping {
    #[serde(rename = "containerID")]
    pub container_id: u32,
    #[serde(rename = "hostID")]
    pub host_id: u32,
    pub size: u32,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeOffset {
    pub secs: i64,
    pub nanosecs: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: PathBuf,
    pub major: i64,
    pub minor: i64,
    pub file_mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// `linux.resources`. Keys berth does not know (`rdma`) are refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub devices: Vec<DeviceRule>,
    pub pids: Option<Pids>,
    pub memory: Option<Memory>,
    pub cpu: Option<Cpu>,
    #[serde(rename = "blockIO")]
    pub block_io: Option<BlockIo>,
    pub hugepage_limits: Vec<HugepageLimit>,
    pub network: Option<Network>,
    /// cgroup v2 files of the container's cgroup, written as they are.
    pub unified: BTreeMap<String, String>,
    #[serde(flatten)]
    pub others: BTreeMap<String, serde_json::Value>,
}

/// `linux.resources.memory` (bytes; -1 means unlimited).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub limit: Option<i64>,
    pub reservation: Option<i64>,
    pub swap: Option<i64>,
    pub swappiness: Option<u64>,
    #[serde(rename = "disableOOMKiller")]
    pub disable_oom_killer: Option<bool>,
}

/// `linux.resources.cpu`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    pub shares: Option<u64>,
    pub quota: Option<i64>,
    pub period: Option<u64>,
    pub realtime_runtime: Option<i64>,
    pub realtime_period: Option<u64>,
    pub cpus: Option<String>,
    pub mems: Option<String>,
    /// cgroup v2's `cpu.idle` (0 or 1).
    pub idle: Option<i64>,
}

/// `linux.resources.network` (the v1 net_cls and net_prio controllers).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(rename = "classID")]
    pub class_id: Option<u32>,
    pub priorities: Vec<InterfacePriority>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InterfacePriority {
    pub name: String,
    pub priority: u32,
}

/// `linux.resources.blockIO`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct BlockIo {
    pub weight: Option<u16>,
    pub leaf_weight: Option<u16>,
    pub weight_device: Vec<WeightDevice>,
    pub throttle_read_bps_device: Vec<ThrottleDevice>,
    pub throttle_write_bps_device: Vec<ThrottleDevice>,
    #[serde(default, rename = "throttleReadIOPSDevice")]
    pub throttle_read_iops_device: Vec<ThrottleDevice>,
    #[serde(default, rename = "throttleWriteIOPSDevice")]
    pub throttle_write_iops_device: Vec<ThrottleDevice>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct WeightDevice {
    pub major: i64,
    pub minor: i64,
    pub weight: Option<u16>,
    pub leaf_weight: Option<u16>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ThrottleDevice {
    pub major: i64,
    pub minor: i64,
    pub rate: u64,
}

/// `linux.resources.hugepageLimits[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[serde(rename_all = "camelCase")]
pub struct HugepageLimit {
    pub page_size: String,
    pub limit: u64,
}

/// `linux.resources.pids`: a limit above 0, below 0 for "max", 0 for untouched (as runc).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Pids {
    pub limit: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceRule {
    pub allow: bool,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: Option<String>,
}

/// Keys of `linux.resources` (it flattens its unknown keys, so serde does
/// not list its fields).
const RESOURCES_KEYS: &[&str] = &[
    "devices",
    "pids",
    "memory",
    "cpu",
    "blockIO",
    "hugepageLimits",
    "network",
    "unified",
    "rdma",
];

/// The keys of `linux.seccomp` (the profile, its syscall rules and their
/// argument rules), which the spec keeps as JSON for the runtime's seccomp
/// compiler; the runtime checks its profile types declare no other.
pub const SECCOMP_KEYS: &[&str] = &[
    "defaultAction",
    "defaultErrnoRet",
    "architectures",
    "flags",
    "listenerPath",
    "listenerMetadata",
    "syscalls",
    "names",
    "action",
    "errnoRet",
    "args",
    "index",
    "value",
    "valueTwo",
    "op",
];

/// Every object key of `config.json` (and of `exec --process`, `update
/// --resources` and `linux.seccomp`, which are parts of it), for Go's
/// case-insensitive matching.
pub fn go_schema() -> &'static GoSchema {
    static SCHEMA: std::sync::OnceLock<GoSchema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        GoSchema::new()
            .with::<Spec>()
            .with::<Process>()
            .with::<ConsoleSize>()
            .with::<User>()
            .with::<Capabilities>()
            .with::<Rlimit>()
            .with::<Root>()
            .with::<Mount>()
            .with::<Hooks>()
            .with::<Hook>()
            .with::<Linux>()
            .with::<Namespace>()
            .with::<IdMapping>()
            .with::<TimeOffset>()
            .with::<Device>()
            .with_keys(RESOURCES_KEYS)
            .with::<Memory>()
            .with::<Cpu>()
            .with::<Network>()
            .with::<InterfacePriority>()
            .with::<BlockIo>()
            .with::<WeightDevice>()
            .with::<ThrottleDevice>()
            .with::<HugepageLimit>()
            .with::<Pids>()
            .with::<DeviceRule>()
            .with_keys(SECCOMP_KEYS)
            .with_map("annotations", Zero::String)
            .with_map("sysctl", Zero::String)
            .with_map("unified", Zero::String)
            .with_map("timeOffsets", Zero::Object)
    })
}

impl Resources {
    /// The zero values Go writes for fields an engine did not set, and that
    /// runc's cgroup code skips (`if r.BlkioWeight != 0`), as `None`: dockerd
    /// writes `"blockIO": {"weight": 0}` for every container. Values that
    /// are pointers in runc's types (swappiness, cpu.idle, a throttle rate)
    /// keep their 0; a pids limit of 0 already means "untouched".
    pub fn without_go_zero_values(mut self) -> Resources {
        fn set<T: PartialEq + Default>(value: &mut Option<T>) {
            if value.as_ref() == Some(&T::default()) {
                *value = None;
            }
        }
        if let Some(memory) = &mut self.memory {
            set(&mut memory.limit);
            set(&mut memory.reservation);
            set(&mut memory.swap);
        }
        if let Some(cpu) = &mut self.cpu {
            set(&mut cpu.shares);
            set(&mut cpu.quota);
            set(&mut cpu.period);
            set(&mut cpu.realtime_runtime);
            set(&mut cpu.realtime_period);
            set(&mut cpu.cpus);
            set(&mut cpu.mems);
        }
        if let Some(block_io) = &mut self.block_io {
            set(&mut block_io.weight);
            set(&mut block_io.leaf_weight);
            for device in &mut block_io.weight_device {
                set(&mut device.weight);
                set(&mut device.leaf_weight);
            }
        }
        if let Some(network) = &mut self.network {
            set(&mut network.class_id);
        }
        self
    }
}

/// A namespace kind as named in `linux.namespaces[].type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NamespaceKind {
    User,
    Mount,
    Pid,
    Network,
    Ipc,
    Uts,
    Cgroup,
    Time,
}

impl NamespaceKind {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "user" => Self::User,
            "mount" => Self::Mount,
            "pid" => Self::Pid,
            "network" => Self::Network,
            "ipc" => Self::Ipc,
            "uts" => Self::Uts,
            "cgroup" => Self::Cgroup,
            "time" => Self::Time,
            _ => return None,
        })
    }

    /// The `CLONE_NEW*` flag of this kind.
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            Self::User => libc::CLONE_NEWUSER,
            Self::Mount => libc::CLONE_NEWNS,
            Self::Pid => libc::CLONE_NEWPID,
            Self::Network => libc::CLONE_NEWNET,
            Self::Ipc => libc::CLONE_NEWIPC,
            Self::Uts => libc::CLONE_NEWUTS,
            Self::Cgroup => libc::CLONE_NEWCGROUP,
            Self::Time => 0x80, // CLONE_NEWTIME
        }
    }

    /// The file name under `/proc/PID/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Mount => "mnt",
            Self::Pid => "pid",
            Self::Network => "net",
            Self::Ipc => "ipc",
            Self::Uts => "uts",
            Self::Cgroup => "cgroup",
            Self::Time => "time",
        }
    }
}

/// `value` (a spec or a part of it) as the JSON a bundle holds: without the
/// `null`s and empty lists serde writes for fields that are not set. Go (and
/// so runc) and [`go_schema`] read `null`, `[]` and a missing key alike, so
/// this changes nothing but the noise; empty objects stay (`"linux": {}` is
/// not an absent `linux`).
pub fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    fn prune(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(object) => {
                object.retain(|_, v| {
                    prune(v);
                    !(v.is_null() || v.as_array().is_some_and(Vec::is_empty))
                });
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(prune),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(value).unwrap_or_default();
    prune(&mut json);
    json
}

impl Spec {
    /// Reads and validates `BUNDLE/config.json`.
    pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
        Self::read(bundle).map(|(spec, _)| spec)
    }

    /// Like [`Spec::load`], also returning the bytes that were validated, so
    /// the runtime can keep exactly them (a later edit of the bundle must not
    /// change what `exec` applies).
    pub fn read(bundle: &Path) -> Result<(Spec, Vec<u8>), SpecError> {
        let path = bundle.join("config.json");
        let bytes = std::fs::read(&path).map_err(|source| SpecError::Read {
            path: path.clone(),
            source,
        })?;
        let spec = Self::from_slice(&bytes).map_err(|e| match e {
            SpecError::Parse { source, .. } => SpecError::Parse { path, source },
            other => other,
        })?;
        Ok((spec, bytes))
    }

    /// Parses and validates a `config.json` held in memory.
    pub fn from_slice(bytes: &[u8]) -> Result<Spec, SpecError> {
        let mut spec: Spec = go_schema()
            .from_slice(bytes)
            .map_err(|source| SpecError::Parse {
                path: PathBuf::from("config.json"),
                source,
            })?;
        if let Some(resources) = spec.linux.as_mut().and_then(|l| l.resources.as_mut()) {
            *resources = std::mem::take(resources).without_go_zero_values();
        }
        spec.validate()?;
        Ok(spec)
    }

    pub fn linux(&self) -> &Linux {
        static EMPTY: std::sync::OnceLock<Linux> = std::sync::OnceLock::new();
        self.linux
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(Linux::default))
    }

    /// The namespaces of the spec, parsed; an unknown or repeated kind is an error.
    pub fn namespaces(&self) -> Result<Vec<(NamespaceKind, Option<PathBuf>)>, SpecError> {
        let mut out: Vec<(NamespaceKind, Option<PathBuf>)> = Vec::new();
        for ns in &self.linux().namespaces {
            let kind = NamespaceKind::parse(&ns.kind).ok_or_else(|| {
                SpecError::Invalid(format!("unknown namespace type {:?}", ns.kind))
            })?;
            if out.iter().any(|(k, _)| *k == kind) {
                return Err(SpecError::Invalid(format!(
                    "malformed spec file: duplicated ns {:?}",
                    ns.kind
                )));
            }
            out.push((kind, ns.path.clone()));
        }
        Ok(out)
    }

    pub fn has_namespace(&self, kind: NamespaceKind) -> bool {
        self.linux()
            .namespaces
            .iter()
            .any(|ns| NamespaceKind::parse(&ns.kind) == Some(kind))
    }
}

#[cfg(test)]
mod tests;
