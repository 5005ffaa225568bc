//! How data is printed: aligned columns for a person, JSON for scripts
//! (`--format json`, `inspect`), and the small formatters both use (sizes,
//! ages, short ids). The JSON keeps the API's field names in camelCase, so
//! a script can rely on the names `berth.v1` documents.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_proto::v1 as pb;
use serde_json::{json, Map, Value};

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |out: &mut std::io::StdoutLock, cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count()) + 3;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut out, header.to_vec());
    for row in rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
}

pub fn print_json(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A digest's first 12 hex digits (docker's IMAGE ID column).
pub fn short_digest(digest: &str) -> &str {
    short_id(digest.strip_prefix("sha256:").unwrap_or(digest))
}

/// 1000-based, as docker prints sizes: 1.2MB.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[unit]
    }
}

/// 1024-based, for memory: 3.2MiB.
pub fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// "3 minutes", as in docker's "Up 3 minutes" and "3 minutes ago".
pub fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (n, unit) = match secs {
        0 => return "Less than a second".to_string(),
        1..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

pub fn ago(t: Option<&prost_types::Timestamp>) -> String {
    match t {
        Some(t) if t.seconds > 0 => format!("{} ago", duration(now() - t.seconds)),
        _ => String::new(),
    }
}

pub fn since(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| now() - t.seconds)
}

/// RFC 3339 in UTC (berth-oci's date routine: no date crate).
pub fn rfc3339(t: Option<&prost_types::Timestamp>) -> Value {
    let Some(t) = t else {
        return Value::Null;
    };
    Value::String(rfc3339_text(t.seconds, t.nanos))
}

pub fn rfc3339_text(seconds: i64, nanos: i32) -> String {
    let nanos = u32::try_from(nanos).unwrap_or(0);
    berth_oci::time::rfc3339(seconds, nanos, berth_oci::time::Fraction::NanosUnlessWhole)
}

fn labels(l: &std::collections::HashMap<String, String>) -> Value {
    let mut sorted: Vec<_> = l.iter().collect();
    sorted.sort();
    Value::Object(
        sorted
            .into_iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

fn descriptor(d: Option<&pb::Descriptor>) -> Value {
    match d {
        None => Value::Null,
        Some(d) => json!({
            "mediaType": d.media_type,
            "digest": d.digest,
            "size": d.size,
            "annotations": labels(&d.annotations),
        }),
    }
}

pub fn image(i: &pb::Image) -> Value {
    json!({
        "name": i.name,
        "target": descriptor(i.target.as_ref()),
        "manifest": descriptor(i.manifest.as_ref()),
        "config": descriptor(i.config.as_ref()),
        "platform": i.platform.as_ref().map(|p| json!({
            "os": p.os, "architecture": p.architecture, "variant": p.variant,
        })),
        "chainId": i.chain_id,
        "size": i.size,
        "created": rfc3339(i.created.as_ref()),
        "labels": labels(&i.labels),
    })
}

pub fn container_status(status: i32) -> &'static str {
    use pb::container::Status;
    match Status::try_from(status).unwrap_or(Status::Unspecified) {
        Status::Unspecified => "unknown",
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Stopped => "exited",
        Status::Restarting => "restarting",
    }
}

fn config(c: &pb::ContainerConfig) -> Value {
    use pb::container_mount::Kind;
    let resources = c.resources.unwrap_or_default();
    let restart = c.restart.unwrap_or_default();
    json!({
        "image": c.image,
        "entrypoint": if c.entrypoint_set { json!(c.entrypoint) } else { Value::Null },
        "args": c.args,
        "env": c.env,
        "workingDir": c.working_dir,
        "user": c.user,
        "hostname": c.hostname,
        "tty": c.tty,
        "stdinOpen": c.stdin_open,
        "mounts": c.mounts.iter().map(|m| json!({
            "kind": match Kind::try_from(m.kind).unwrap_or(Kind::Unspecified) {
                Kind::Bind => "bind",
                Kind::Volume => "volume",
                Kind::Tmpfs => "tmpfs",
                Kind::Unspecified => "unknown",
            },
            "source": m.source,
            "destination": m.destination,
            "readOnly": m.read_only,
        })).collect::<Vec<_>>(),
        "resources": {
            "memory": resources.memory,
            "nanoCpus": resources.nano_cpus,
            "pidsLimit": resources.pids_limit,
        },
        "readOnly": c.read_only,
        "capAdd": c.cap_add,
        "capDrop": c.cap_drop,
        "privileged": c.privileged,
        "seccompProfile": match c.seccomp_profile.as_str() {
            "" => "default",
            "unconfined" => "unconfined",
            _ => "custom",
        },
        "network": if c.network.is_empty() { "none" } else { c.network.as_str() },
        "restart": {
            "policy": restart_name(restart.kind),
            "maxRetries": restart.max_retries,
        },
        "runtime": c.runtime,
    })
}

pub fn restart_name(kind: i32) -> &'static str {
    use pb::restart_policy::Kind;
    match Kind::try_from(kind).unwrap_or(Kind::No) {
        Kind::No => "no",
        Kind::OnFailure => "on-failure",
        Kind::Always => "always",
        Kind::UnlessStopped => "unless-stopped",
    }
}

pub fn container(c: &pb::Container) -> Value {
    let spec: Value = serde_json::from_slice(&c.spec).unwrap_or(Value::Null);
    json!({
        "id": c.id,
        "name": c.name,
        "status": container_status(c.status),
        "pid": c.pid,
        "exitStatus": c.exit_status,
        "oomKilled": c.oom_killed,
        "restartCount": c.restart_count,
        "created": rfc3339(c.created.as_ref()),
        "startedAt": rfc3339(c.started_at.as_ref()),
        "finishedAt": rfc3339(c.finished_at.as_ref()),
        "imageDigest": c.image_digest,
        "snapshotKey": c.snapshot_key,
        "bundle": c.bundle,
        "labels": labels(&c.labels),
        "config": c.config.as_ref().map(config),
        "networkSettings": c.network_settings.as_ref().map(network_settings),
        "networks": c.networks.iter().map(network_settings).collect::<Vec<_>>(),
        "command": c.command,
        // Only `inspect` carries the spec; a listing leaves it out (null).
        "spec": spec,
    })
}

fn network_settings(n: &pb::NetworkSettings) -> Value {
    json!({
        "network": n.network,
        "ipAddress": n.ip_address,
        "ipPrefixLen": n.ip_prefix_len,
        "gateway": n.gateway,
        "macAddress": n.mac_address,
        "ports": n.ports.iter().map(port_mapping).collect::<Vec<_>>(),
        "sandboxKey": n.sandbox_key,
    })
}

fn port_mapping(p: &pb::PortMapping) -> Value {
    json!({
        "hostIp": p.host_ip,
        "hostPort": p.host_port,
        "containerPort": p.container_port,
        "protocol": p.protocol,
    })
}

/// docker's `port` line: `80/tcp -> 0.0.0.0:18080`.
pub fn port_line(p: &pb::PortMapping) -> String {
    let ip = if p.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        &p.host_ip
    };
    format!(
        "{}/{} -> {ip}:{}",
        p.container_port, p.protocol, p.host_port
    )
}

pub fn network(n: &pb::Network) -> Value {
    json!({
        "name": n.name,
        "id": n.id,
        "driver": n.driver,
        "bridge": n.bridge,
        "subnet": n.subnet,
        "gateway": n.gateway,
        "labels": labels(&n.labels),
        "created": rfc3339(n.created.as_ref()),
        "containers": n.containers,
    })
}

pub fn volume(v: &pb::Volume) -> Value {
    json!({
        "name": v.name,
        "mountpoint": v.mountpoint,
        "labels": labels(&v.labels),
        "created": rfc3339(v.created.as_ref()),
        "usedBy": v.used_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_like_dockers() {
        assert_eq!(size(999), "999B");
        assert_eq!(size(1_234_567), "1.235MB");
        assert_eq!(size(2_000_000), "2MB");
        assert_eq!(binary_size(64 << 20), "64.00MiB");
        assert_eq!(duration(1), "1 second");
        assert_eq!(duration(150), "2 minutes");
        assert_eq!(duration(7200), "2 hours");
        assert_eq!(rfc3339_text(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_text(1_700_000_000, 5),
            "2023-11-14T22:13:20.000000005Z"
        );
        assert_eq!(rfc3339_text(951_782_400, 0), "2000-02-29T00:00:00Z");
    }
}
