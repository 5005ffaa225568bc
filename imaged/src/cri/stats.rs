//! ContainerStats and PodSandboxStats: CPU (and its rate since the last
//! call), memory and process counts from the containers' shims (their
//! cgroups), the writable layer from the snapshot, and the pod's network
//! from its own network namespace.

use k8s_cri::v1 as cri;

use super::container::{of_pod, CriRecord};
use super::sandbox::PodRecord;
use super::{Cri, Result};

fn value(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

/// A container's stats, and its process count (the pids of its cgroup).
async fn measure(cri: &Cri, record: &CriRecord) -> Result<(cri::ContainerStats, u64)> {
    let config = record.config();
    let now = super::now_nanos();
    let run = cri.tasks.containers.resolve(&record.id)?;
    let measured = if cri.tasks.is_running(&record.id) {
        cri.tasks.stats(&record.id).await.ok()
    } else {
        None
    };
    let usage = cri
        .images
        .snapshots
        .usage(&run.snapshot_key)
        .unwrap_or_default();
    let stats = cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: record.id.clone(),
            metadata: config.metadata.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        }),
        cpu: Some(cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: value(measured.as_ref().map_or(0, |m| m.cpu_usage_ns)),
            usage_nano_cores: measured
                .as_ref()
                .and_then(|m| nano_cores(cri, &record.id, now, m.cpu_usage_ns))
                .and_then(value),
        }),
        memory: Some(cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: value(measured.as_ref().map_or(0, |m| m.memory_usage)),
            usage_bytes: value(measured.as_ref().map_or(0, |m| m.memory_usage)),
            ..Default::default()
        }),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: now,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: cri.snapshots_dir().display().to_string(),
            }),
            used_bytes: value(usage.size),
            inodes_used: value(usage.inodes),
        }),
        swap: None,
    };
    Ok((stats, measured.map_or(0, |m| m.pids)))
}

/// The CPU rate (nanoseconds of CPU per second, 10^9 = one core) since
/// the container's previous sample, as kubelet reads `usage_nano_cores`;
/// `None` on a first sample. The sample is kept for the next call.
fn nano_cores(cri: &Cri, id: &str, now: i64, usage: u64) -> Option<u64> {
    let mut samples = cri.cpu_samples.lock().unwrap_or_else(|e| e.into_inner());
    let previous = samples.insert(id.to_string(), (now, usage));
    let (then, before) = previous?;
    let elapsed = u64::try_from(now - then).ok().filter(|e| *e > 0)?;
    let used = usage.checked_sub(before)?;
    Some((u128::from(used) * 1_000_000_000 / u128::from(elapsed)) as u64)
}

/// Drops a removed container's CPU sample.
pub fn forget(cri: &Cri, id: &str) {
    let mut samples = cri.cpu_samples.lock().unwrap_or_else(|e| e.into_inner());
    samples.remove(id);
}

/// ContainerStats: CPU and memory from the shim (zeros when it does not
/// run), the writable layer from the snapshot.
pub async fn container(cri: &Cri, record: &CriRecord) -> Result<cri::ContainerStats> {
    Ok(measure(cri, record).await?.0)
}

/// PodSandboxStats: each container's stats, their sums, the number of
/// processes in the pod's containers, and the traffic of the pod's
/// network namespace (its `eth0` the default interface, as CNI names it).
pub async fn pod(cri: &Cri, pod: &PodRecord) -> Result<cri::PodSandboxStats> {
    let mut containers = Vec::new();
    let mut processes = 0;
    for record in of_pod(cri, &pod.id)? {
        let (stats, pids) = measure(cri, &record).await?;
        containers.push(stats);
        processes += pids;
    }
    let sum = |f: &dyn Fn(&cri::ContainerStats) -> Option<u64>| -> u64 {
        containers.iter().filter_map(f).sum()
    };
    let now = super::now_nanos();
    let cpu = sum(&|c| c.cpu.as_ref()?.usage_core_nano_seconds.map(|v| v.value));
    let rates: Vec<u64> = containers
        .iter()
        .filter_map(|c| c.cpu.as_ref()?.usage_nano_cores.map(|v| v.value))
        .collect();
    let rate = (!rates.is_empty()).then(|| rates.iter().sum());
    let memory = sum(&|c| c.memory.as_ref()?.working_set_bytes.map(|v| v.value));
    let network = match pod.netns(cri) {
        Some(netns) => tokio::task::spawn_blocking(move || interfaces_in(&netns))
            .await
            .ok()
            .and_then(std::result::Result::ok)
            .map(|interfaces| network_usage(now, interfaces)),
        // The host's network is the node's to report, not the pod's.
        None => None,
    };
    let config = pod.config();
    Ok(cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: config.metadata,
            labels: config.labels,
            annotations: config.annotations,
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: value(cpu),
                usage_nano_cores: rate.and_then(value),
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: value(memory),
                usage_bytes: value(memory),
                ..Default::default()
            }),
            network,
            process: Some(cri::ProcessUsage {
                timestamp: now,
                process_count: value(processes),
            }),
            containers,
        }),
        windows: None,
    })
}

fn network_usage(now: i64, interfaces: Vec<cri::NetworkInterfaceUsage>) -> cri::NetworkUsage {
    let default_interface = interfaces.iter().find(|i| i.name == "eth0").cloned();
    cri::NetworkUsage {
        timestamp: now,
        default_interface,
        interfaces: interfaces.into_iter().filter(|i| i.name != "lo").collect(),
    }
}

/// The interfaces of the network namespace at `netns`, read from
/// `/proc/thread-self/net/dev` by a thread that entered it (the daemon's
/// other threads stay in the host's).
fn interfaces_in(netns: &std::path::Path) -> std::io::Result<Vec<cri::NetworkInterfaceUsage>> {
    let netns = netns.to_path_buf();
    let read = move || -> std::io::Result<String> {
        let ns = std::fs::File::open(&netns)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        std::fs::read_to_string("/proc/thread-self/net/dev")
    };
    let text = std::thread::spawn(read)
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the reading thread panicked")))?;
    Ok(parse_net_dev(&text))
}

/// `/proc/net/dev`: two header lines, then `name: rx_bytes rx_packets
/// rx_errs … (8 receive fields) tx_bytes tx_packets tx_errs …`.
fn parse_net_dev(text: &str) -> Vec<cri::NetworkInterfaceUsage> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, fields) = line.split_once(':')?;
            let fields: Vec<u64> = fields
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            (fields.len() >= 11).then(|| cri::NetworkInterfaceUsage {
                name: name.trim().to_string(),
                rx_bytes: value(fields[0]),
                rx_errors: value(fields[2]),
                tx_bytes: value(fields[8]),
                tx_errors: value(fields[10]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_gives_each_interfaces_bytes_and_errors() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    9120      60    1    0    0     0          0         0     4206      33    2    0    0     0       0          0
";
        let parsed = parse_net_dev(text);
        assert_eq!(parsed.len(), 2);
        let eth0 = &parsed[1];
        assert_eq!(eth0.name, "eth0");
        assert_eq!(eth0.rx_bytes, value(9120));
        assert_eq!(eth0.rx_errors, value(1));
        assert_eq!(eth0.tx_bytes, value(4206));
        assert_eq!(eth0.tx_errors, value(2));
        let usage = network_usage(1, parsed);
        assert_eq!(usage.default_interface.map(|i| i.name), Some("eth0".into()));
        assert_eq!(usage.interfaces.len(), 1);
    }
}
