//! The fields of `config.json` the checker compares against.
//!
//! Read by hand from a `serde_json::Value`, and leniently: a field of the
//! wrong type counts as absent. The runtime under test has already accepted
//! the config, and the checker must print its plan whatever it was given.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Default)]
pub struct Config {
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub root_readonly: bool,
    pub mounts: Vec<Mount>,
    pub annotations: BTreeMap<String, String>,
    pub process: Process,
    pub linux: Linux,
}

#[derive(Debug, Default)]
pub struct Process {
    pub user: User,
    pub env: Vec<String>,
    pub cwd: String,
    /// An absent set, or an absent `process.capabilities`, is empty.
    pub capabilities: CapabilityNames,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i64>,
}

#[derive(Debug, Default)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub umask: Option<u32>,
    pub additional_gids: Option<Vec<u32>>,
}

/// The five sets of `process.capabilities`; an absent set is empty.
#[derive(Debug, Default)]
pub struct CapabilityNames {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    pub ambient: Vec<String>,
}

#[derive(Debug)]
pub struct Rlimit {
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Default)]
pub struct Mount {
    pub destination: String,
    pub kind: Option<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Linux {
    pub namespaces: Vec<Namespace>,
    pub uid_mappings: Vec<IdMapping>,
    pub gid_mappings: Vec<IdMapping>,
    pub time_offsets: Vec<TimeOffset>,
    pub devices: Vec<Device>,
    pub sysctl: Vec<(String, String)>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
}

#[derive(Debug)]
pub struct Namespace {
    pub kind: String,
    pub path: Option<String>,
}

/// `containerID hostID size`, as in `/proc/PID/uid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdMapping {
    pub container_id: u64,
    pub host_id: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeOffset {
    pub clock: String,
    pub secs: i64,
    pub nanosecs: i64,
}

#[derive(Debug)]
pub struct Device {
    pub kind: String,
    pub path: String,
    pub major: i64,
    pub minor: i64,
    pub file_mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, String> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
        if !value.is_object() {
            return Err("the config is not a JSON object".into());
        }
        Ok(Config::from_value(&value))
    }

    fn from_value(v: &Value) -> Config {
        Config {
            hostname: string(v.get("hostname")),
            domainname: string(v.get("domainname")),
            root_readonly: boolean(v.pointer("/root/readonly")),
            mounts: array(v.get("mounts")).iter().map(mount).collect(),
            annotations: string_map(v.get("annotations")),
            process: process(v.get("process").unwrap_or(&Value::Null)),
            linux: linux(v.get("linux").unwrap_or(&Value::Null)),
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// The `linux.namespaces` entry of a kind (`"mount"`, `"network"`...).
    pub fn namespace(&self, kind: &str) -> Option<&Namespace> {
        self.linux.namespaces.iter().find(|ns| ns.kind == kind)
    }

    /// True when the config asks for a new namespace of `kind` (listed,
    /// without a path to join).
    pub fn creates_namespace(&self, kind: &str) -> bool {
        self.namespace(kind).is_some_and(|ns| ns.path.is_none())
    }
}

fn process(v: &Value) -> Process {
    Process {
        user: User {
            uid: u32_of(v.pointer("/user/uid")).unwrap_or(0),
            gid: u32_of(v.pointer("/user/gid")).unwrap_or(0),
            umask: u32_of(v.pointer("/user/umask")),
            additional_gids: v
                .pointer("/user/additionalGids")
                .and_then(Value::as_array)
                .map(|gids| gids.iter().filter_map(|g| u32_of(Some(g))).collect()),
        },
        env: strings(v.get("env")),
        cwd: string(v.get("cwd")).unwrap_or_default(),
        capabilities: capabilities(v.get("capabilities").unwrap_or(&Value::Null)),
        rlimits: array(v.get("rlimits")).iter().filter_map(rlimit).collect(),
        no_new_privileges: boolean(v.get("noNewPrivileges")),
        oom_score_adj: v.get("oomScoreAdj").and_then(Value::as_i64),
    }
}

fn capabilities(v: &Value) -> CapabilityNames {
    CapabilityNames {
        bounding: strings(v.get("bounding")),
        effective: strings(v.get("effective")),
        permitted: strings(v.get("permitted")),
        inheritable: strings(v.get("inheritable")),
        ambient: strings(v.get("ambient")),
    }
}

fn rlimit(v: &Value) -> Option<Rlimit> {
    Some(Rlimit {
        kind: string(v.get("type"))?,
        soft: v.get("soft")?.as_u64()?,
        hard: v.get("hard")?.as_u64()?,
    })
}

fn mount(v: &Value) -> Mount {
    Mount {
        destination: string(v.get("destination")).unwrap_or_default(),
        kind: string(v.get("type")),
        options: strings(v.get("options")),
    }
}

fn linux(v: &Value) -> Linux {
    Linux {
        namespaces: array(v.get("namespaces"))
            .iter()
            .filter_map(|ns| {
                Some(Namespace {
                    kind: string(ns.get("type"))?,
                    path: string(ns.get("path")).filter(|p| !p.is_empty()),
                })
            })
            .collect(),
        uid_mappings: id_mappings(v.get("uidMappings")),
        gid_mappings: id_mappings(v.get("gidMappings")),
        time_offsets: time_offsets(v.get("timeOffsets")),
        devices: array(v.get("devices")).iter().filter_map(device).collect(),
        sysctl: string_map(v.get("sysctl")).into_iter().collect(),
        masked_paths: strings(v.get("maskedPaths")),
        readonly_paths: strings(v.get("readonlyPaths")),
    }
}

fn id_mappings(v: Option<&Value>) -> Vec<IdMapping> {
    array(v)
        .iter()
        .filter_map(|m| {
            Some(IdMapping {
                container_id: m.get("containerID")?.as_u64()?,
                host_id: m.get("hostID")?.as_u64()?,
                size: m.get("size")?.as_u64()?,
            })
        })
        .collect()
}

fn time_offsets(v: Option<&Value>) -> Vec<TimeOffset> {
    let Some(map) = v.and_then(Value::as_object) else {
        return Vec::new();
    };
    map.iter()
        .map(|(clock, offset)| TimeOffset {
            clock: clock.clone(),
            secs: offset.get("secs").and_then(Value::as_i64).unwrap_or(0),
            nanosecs: offset.get("nanosecs").and_then(Value::as_i64).unwrap_or(0),
        })
        .collect()
}

fn device(v: &Value) -> Option<Device> {
    Some(Device {
        kind: string(v.get("type"))?,
        path: string(v.get("path"))?,
        major: v.get("major").and_then(Value::as_i64).unwrap_or(0),
        minor: v.get("minor").and_then(Value::as_i64).unwrap_or(0),
        file_mode: u32_of(v.get("fileMode")),
        uid: u32_of(v.get("uid")),
        gid: u32_of(v.get("gid")),
    })
}

fn string(v: Option<&Value>) -> Option<String> {
    v?.as_str().map(str::to_owned)
}

fn boolean(v: Option<&Value>) -> bool {
    v.and_then(Value::as_bool).unwrap_or(false)
}

fn u32_of(v: Option<&Value>) -> Option<u32> {
    v?.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn array(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    array(v)
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    let Some(map) = v.and_then(Value::as_object) else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_the_checks_use() {
        let config = Config::parse(
            br#"{
                "hostname": "box",
                "root": {"path": "rootfs", "readonly": true},
                "process": {
                    "user": {"uid": 1000, "gid": 100, "umask": 63, "additionalGids": [5, 6]},
                    "cwd": "/tmp",
                    "capabilities": {"bounding": ["CAP_KILL"]},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}],
                    "noNewPrivileges": true,
                    "oomScoreAdj": -5
                },
                "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
                "annotations": {"berth.test/host-ns.net": "4026531840"},
                "linux": {
                    "namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}],
                    "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                    "timeOffsets": {"monotonic": {"secs": 7, "nanosecs": 3}},
                    "devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229}],
                    "sysctl": {"net.ipv4.ip_forward": "1"},
                    "maskedPaths": ["/proc/kcore"]
                }
            }"#,
        )
        .expect("valid config");
        assert_eq!(config.hostname.as_deref(), Some("box"));
        assert!(config.root_readonly);
        assert_eq!(config.process.user.uid, 1000);
        assert_eq!(config.process.user.umask, Some(0o77));
        assert_eq!(config.process.user.additional_gids, Some(vec![5, 6]));
        assert_eq!(config.process.capabilities.bounding, vec!["CAP_KILL"]);
        assert!(config.process.capabilities.effective.is_empty());
        assert_eq!(config.process.rlimits[0].hard, 20);
        assert_eq!(config.process.oom_score_adj, Some(-5));
        assert_eq!(config.mounts[0].kind.as_deref(), Some("proc"));
        assert_eq!(
            config.annotation("berth.test/host-ns.net"),
            Some("4026531840")
        );
        assert!(config.namespace("pid").is_some_and(|ns| ns.path.is_none()));
        assert_eq!(
            config
                .namespace("network")
                .and_then(|ns| ns.path.as_deref()),
            Some("/run/netns/x")
        );
        assert_eq!(config.linux.uid_mappings[0].host_id, 1000);
        assert_eq!(config.linux.time_offsets[0].secs, 7);
        assert_eq!(config.linux.devices[0].minor, 229);
        assert_eq!(config.linux.sysctl[0].1, "1");
        assert_eq!(config.linux.masked_paths, vec!["/proc/kcore"]);
    }

    #[test]
    fn wrong_types_count_as_absent() {
        let config = Config::parse(br#"{"hostname": 5, "process": {"user": {"uid": "x"}}}"#)
            .expect("valid JSON object");
        assert_eq!(config.hostname, None);
        assert_eq!(config.process.user.uid, 0);
        assert_eq!(config.process.user.additional_gids, None);
    }

    #[test]
    fn rejects_what_is_not_a_json_object() {
        assert!(Config::parse(b"[]").is_err());
        assert!(Config::parse(b"{").is_err());
    }
}
