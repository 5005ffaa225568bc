//! A container's resource statistics, as [`super::Driver::stats`] reads
//! them: the `data` of a `berth events --stats` record, shaped like runc's
//! (the shim turns it into containerd's metrics).
//!
//! The fields of each struct are in alphabetical order on purpose: berth
//! has always printed these records with sorted keys, and a record is
//! compared as text by some tools. A part the host has no controller for
//! is left out (v1), a counter the kernel does not report is `null`.

use std::collections::BTreeMap;

use serde::Serialize;

/// The whole record.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkio: Option<Blkio>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Per page size (`2MB`, `1GB`).
    pub hugetlb: BTreeMap<String, Hugetlb>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<Pids>,
}

/// Bytes and operations per device, recursively.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blkio {
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// One device's count for one operation (`Read`, `Write`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Cpu {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttling: Option<Throttling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<CpuUsage>,
}

/// CPU time in nanoseconds.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct CpuUsage {
    pub kernel: u64,
    /// Per CPU (cgroup v1 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percpu: Option<Vec<u64>>,
    pub total: u64,
    pub user: u64,
}

/// CFS bandwidth throttling; time in nanoseconds.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_time: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// `memory.stat`, key by key.
    pub raw: BTreeMap<String, u64>,
    pub swap: MemoryEntry,
    pub usage: MemoryEntry,
}

/// Bytes: the limit (`u64::MAX` for none), usage, peak and how often the
/// limit was hit (v2's swap has no peak or count).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failcnt: Option<u64>,
    pub limit: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    pub usage: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Pids {
    pub current: u64,
    /// 0 for no limit.
    pub limit: u64,
}

/// One page size's usage; v1 also keeps the peak.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Hugetlb {
    pub failcnt: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    pub usage: u64,
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::{v1::V1, v2::V2, Driver, Hierarchy};

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-stats-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn json(driver: &dyn Driver) -> String {
        serde_json::to_string(&driver.stats()).unwrap()
    }

    #[test]
    fn v2_stats_are_runc_shaped() {
        let root = scratch("v2");
        let dir = root.join("c");
        write(
            &dir,
            &[
                ("cpu.stat", "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 5\nnr_throttled 2\nthrottled_usec 7\n"),
                ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
                ("io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n"),
                ("memory.max", "max\n"),
                ("memory.current", "1000\n"),
                ("memory.peak", "2000\n"),
                ("memory.swap.max", "0\n"),
                ("memory.swap.current", "0\n"),
                ("memory.stat", "anon 5\nfile 6\n"),
                ("pids.current", "3\n"),
                ("pids.max", "max\n"),
                ("hugetlb.2MB.max", "max\n"),
                ("hugetlb.2MB.current", "0\n"),
                ("hugetlb.2MB.events", "max 4\n"),
            ],
        );
        let full = V2 {
            mount_point: root.clone(),
            dir: dir.clone(),
        };
        let empty = V2 {
            mount_point: root.clone(),
            dir: root.join("empty"),
        };
        let (full, empty) = (json(&full), json(&empty));
        let _ = std::fs::remove_dir_all(&root);
        // What berth printed before the statistics were typed.
        assert_eq!(
            full,
            r#"{"blkio":{"ioServiceBytesRecursive":[{"major":8,"minor":0,"op":"Read","value":10},{"major":8,"minor":0,"op":"Write","value":20}],"ioServicedRecursive":[{"major":8,"minor":0,"op":"Read","value":1},{"major":8,"minor":0,"op":"Write","value":2}]},"cpu":{"throttling":{"periods":5,"throttledPeriods":2,"throttledTime":7000},"usage":{"kernel":40000,"total":100000,"user":60000}},"hugetlb":{"2MB":{"failcnt":4,"usage":0}},"memory":{"raw":{"anon":5,"file":6},"swap":{"limit":0,"usage":0},"usage":{"failcnt":3,"limit":18446744073709551615,"max":2000,"usage":1000}},"pids":{"current":3,"limit":0}}"#
        );
        assert_eq!(
            empty,
            r#"{"blkio":{"ioServiceBytesRecursive":[],"ioServicedRecursive":[]},"cpu":{"throttling":{"periods":null,"throttledPeriods":null,"throttledTime":0},"usage":{"kernel":0,"total":0,"user":0}},"hugetlb":{},"memory":{"raw":{},"swap":{"limit":0,"usage":0},"usage":{"failcnt":0,"limit":0,"max":0,"usage":0}},"pids":{"current":0,"limit":0}}"#
        );
    }

    #[test]
    fn v1_stats_are_runc_shaped() {
        let root = scratch("v1");
        let hierarchy = |name: &str, controllers: &[&str]| Hierarchy {
            mount_point: root.join(name),
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            own_path: "/".into(),
        };
        let hierarchies = vec![
            hierarchy("cpu,cpuacct", &["cpu", "cpuacct"]),
            hierarchy("memory", &["memory"]),
            hierarchy("pids", &["pids"]),
            hierarchy("blkio", &["blkio"]),
            hierarchy("hugetlb", &["hugetlb"]),
        ];
        let paths: Vec<PathBuf> = hierarchies
            .iter()
            .map(|h| h.mount_point.join("c"))
            .collect();
        write(
            &paths[0],
            &[
                ("cpuacct.usage_percpu", "10 20\n"),
                ("cpuacct.stat", "user 3\nsystem 4\n"),
                ("cpuacct.usage", "30\n"),
                (
                    "cpu.stat",
                    "nr_periods 1\nnr_throttled 0\nthrottled_time 9\n",
                ),
            ],
        );
        write(
            &paths[1],
            &[
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.usage_in_bytes", "100\n"),
                ("memory.max_usage_in_bytes", "200\n"),
                ("memory.failcnt", "0\n"),
                ("memory.memsw.limit_in_bytes", "300\n"),
                ("memory.memsw.usage_in_bytes", "101\n"),
                ("memory.stat", "cache 1\nrss 2\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        write(&paths[2], &[("pids.current", "2\n"), ("pids.max", "10\n")]);
        write(
            &paths[3],
            &[
                (
                    "blkio.throttle.io_service_bytes_recursive",
                    "8:0 Read 10\n8:0 Write 20\nTotal 30\n",
                ),
                (
                    "blkio.throttle.io_serviced_recursive",
                    "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
                ),
            ],
        );
        write(
            &paths[4],
            &[
                ("hugetlb.2MB.limit_in_bytes", "0\n"),
                ("hugetlb.2MB.usage_in_bytes", "5\n"),
                ("hugetlb.2MB.max_usage_in_bytes", "6\n"),
                ("hugetlb.2MB.failcnt", "7\n"),
            ],
        );
        let full = V1 {
            hierarchies: hierarchies.clone(),
            paths: paths.clone(),
        };
        // Only the cpu controller: no usage, no memory, no pids.
        let cpu_only = V1 {
            hierarchies: vec![hierarchy("cpu", &["cpu"])],
            paths: vec![root.join("cpu/c")],
        };
        write(&root.join("cpu/c"), &[("cpu.stat", "nr_periods 1\n")]);
        let (full_json, cpu_only_json) = (json(&full), json(&cpu_only));
        let ooms = full.oom_kills();
        let _ = std::fs::remove_dir_all(&root);
        // What berth printed before the statistics were typed.
        assert_eq!(
            full_json,
            r#"{"blkio":{"ioServiceBytesRecursive":[{"major":8,"minor":0,"op":"Read","value":10},{"major":8,"minor":0,"op":"Write","value":20}],"ioServicedRecursive":[{"major":8,"minor":0,"op":"Read","value":1},{"major":8,"minor":0,"op":"Write","value":2}]},"cpu":{"throttling":{"periods":1,"throttledPeriods":0,"throttledTime":9},"usage":{"kernel":40000000,"percpu":[10,20],"total":30,"user":30000000}},"hugetlb":{"2MB":{"failcnt":7,"max":6,"usage":5}},"memory":{"raw":{"cache":1,"rss":2},"swap":{"failcnt":0,"limit":300,"max":0,"usage":101},"usage":{"failcnt":0,"limit":9223372036854771712,"max":200,"usage":100}},"pids":{"current":2,"limit":10}}"#
        );
        assert_eq!(
            cpu_only_json,
            r#"{"cpu":{"throttling":{"periods":1,"throttledPeriods":null,"throttledTime":null}},"hugetlb":{}}"#
        );
        assert_eq!(ooms, 2);
    }
}
