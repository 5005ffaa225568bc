//! Flag values that need more than a type: sizes (`--memory 64m`), CPUs,
//! mounts (`-v SRC:DST[:ro]`), restart policies, environment files,
//! security options, signals. Each parser returns a [`FlagError`] that
//! names the flag, the value and what would have been accepted, so a typo
//! is fixed without reading the manual.

use std::path::Path;

use berth_proto::v1 as pb;

#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("invalid {flag} value {value:?}: {expected}")]
    Invalid {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{flag} {path}: {source}")]
    File {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
}

fn invalid(flag: &'static str, value: &str, expected: &'static str) -> FlagError {
    FlagError::Invalid {
        flag,
        value: value.to_string(),
        expected,
    }
}

/// docker's sizes: a number with an optional unit b, k, m, g (or kb, mb,
/// gb, kib, …), powers of 1024.
pub fn memory(value: &str) -> Result<i64, FlagError> {
    const EXPECTED: &str = "a size in bytes, or with a unit: 64m, 512k, 1.5g";
    let lower = value.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| invalid("--memory", value, EXPECTED))?;
    let scale: f64 = match unit {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(invalid("--memory", value, EXPECTED)),
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > i64::MAX as f64 {
        return Err(invalid("--memory", value, EXPECTED));
    }
    // The kernel needs more than this to start even busybox; docker refuses
    // below 6 MiB for the same reason.
    if bytes < 6.0 * 1024.0 * 1024.0 {
        return Err(invalid(
            "--memory",
            value,
            "at least 6m: a smaller limit kills the container before it starts",
        ));
    }
    Ok(bytes as i64)
}

/// `--cpus 1.5` → billionths of a CPU.
pub fn cpus(value: &str) -> Result<i64, FlagError> {
    const EXPECTED: &str = "a positive number of CPUs, e.g. 0.5 or 2";
    let n: f64 = value
        .trim()
        .parse()
        .map_err(|_| invalid("--cpus", value, EXPECTED))?;
    if !n.is_finite() || n <= 0.0 || n > 1_000_000.0 {
        return Err(invalid("--cpus", value, EXPECTED));
    }
    Ok((n * 1e9).round() as i64)
}

pub fn pids_limit(value: &str) -> Result<i64, FlagError> {
    match value.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        // docker: 0 or -1 is no limit.
        Ok(0) | Ok(-1) => Ok(0),
        _ => Err(invalid(
            "--pids-limit",
            value,
            "a positive number of processes (-1: no limit)",
        )),
    }
}

/// `-v SRC:DST[:ro|rw]`: an absolute SRC is a host path (bind), anything
/// else names a volume. A lone `-v /DST` is an anonymous volume.
pub fn mount(value: &str) -> Result<pb::ContainerMount, FlagError> {
    const EXPECTED: &str =
        "SRC:DST[:ro], SRC a host path (absolute) or a volume name, DST absolute";
    let parts: Vec<&str> = value.split(':').collect();
    let (source, destination, options) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => return Err(invalid("-v", value, EXPECTED)),
    };
    if !destination.starts_with('/') {
        return Err(invalid("-v", value, EXPECTED));
    }
    let mut read_only = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" | "readonly" => read_only = true,
            "rw" => read_only = false,
            // Labels and propagation modes of docker that mean nothing here.
            "z" | "Z" | "rprivate" | "private" => {}
            _ => {
                return Err(invalid(
                    "-v",
                    value,
                    "options ro or rw after the second ':'",
                ))
            }
        }
    }
    let kind = if source.starts_with('/') {
        pb::container_mount::Kind::Bind
    } else {
        if source.starts_with('.') {
            return Err(invalid(
                "-v",
                value,
                "an absolute host path (relative paths are not accepted) or a volume name",
            ));
        }
        pb::container_mount::Kind::Volume
    };
    Ok(pb::ContainerMount {
        kind: kind as i32,
        source: source.to_string(),
        destination: destination.to_string(),
        read_only,
    })
}

pub fn restart(value: &str) -> Result<pb::RestartPolicy, FlagError> {
    use pb::restart_policy::Kind;
    const EXPECTED: &str = "no, on-failure[:N], always or unless-stopped";
    let (name, count) = match value.split_once(':') {
        Some((name, count)) => (name, Some(count)),
        None => (value, None),
    };
    let kind = match name {
        "no" => Kind::No,
        "on-failure" => Kind::OnFailure,
        "always" => Kind::Always,
        "unless-stopped" => Kind::UnlessStopped,
        _ => return Err(invalid("--restart", value, EXPECTED)),
    };
    let max_retries = match count {
        None => 0,
        Some(n) if kind == Kind::OnFailure => n
            .parse()
            .map_err(|_| invalid("--restart", value, "on-failure:N with N a number"))?,
        Some(_) => return Err(invalid("--restart", value, "a count only after on-failure")),
    };
    Ok(pb::RestartPolicy {
        kind: kind as i32,
        max_retries,
    })
}

/// `--network`: "default" is docker's other name for the default network;
/// the daemon knows the rest (a network's name is checked there).
pub fn network(value: &str) -> Result<String, FlagError> {
    match value {
        "" => Err(invalid(
            "--network",
            value,
            "bridge, a network's name, none, host or container:NAME",
        )),
        "default" => Ok(String::new()),
        _ => Ok(value.to_string()),
    }
}

/// docker's `-p [[IP:]HOST:]CTR[/PROTO]`; no HOST (or an empty one) asks
/// for a random host port.
pub fn publish(value: &str) -> Result<pb::PortMapping, FlagError> {
    const EXPECTED: &str = "[[IP:]HOST:]CONTAINER[/tcp|udp], ports 1-65535";
    let (ports, protocol) = match value.rsplit_once('/') {
        Some((ports, protocol @ ("tcp" | "udp"))) => (ports, protocol),
        Some(_) => return Err(invalid("--publish", value, EXPECTED)),
        None => (value, "tcp"),
    };
    let parts: Vec<&str> = ports.rsplitn(3, ':').collect();
    let (container, host, ip) = match parts.as_slice() {
        [c] => (*c, "", ""),
        [c, h] => (*c, *h, ""),
        [c, h, ip] => (*c, *h, *ip),
        _ => return Err(invalid("--publish", value, EXPECTED)),
    };
    let port = |text: &str, what: &'static str| -> Result<u32, FlagError> {
        match text.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) => Ok(p),
            _ => Err(invalid(what, text, EXPECTED)),
        }
    };
    let host_port = if host.is_empty() {
        0
    } else {
        port(host, "--publish host port")?
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if !ip.is_empty() && ip.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(invalid("--publish", value, "an IPv4 host address"));
    }
    Ok(pb::PortMapping {
        host_ip: ip.to_string(),
        host_port,
        container_port: port(container, "--publish container port")?,
        protocol: protocol.to_string(),
    })
}

/// `--add-host NAME:IP`.
pub fn add_host(value: &str) -> Result<String, FlagError> {
    match value.split_once(':') {
        Some((name, ip)) if !name.is_empty() && ip.parse::<std::net::IpAddr>().is_ok() => {
            Ok(value.to_string())
        }
        _ => Err(invalid("--add-host", value, "NAME:IP")),
    }
}

/// `--security-opt`: only seccomp is known; returns the profile for
/// `seccomp_profile` ("unconfined" or the file's JSON text).
pub fn seccomp(options: &[String]) -> Result<String, FlagError> {
    let mut profile = String::new();
    for option in options {
        let Some(value) = option
            .strip_prefix("seccomp=")
            .or_else(|| option.strip_prefix("seccomp:"))
        else {
            return Err(invalid(
                "--security-opt",
                option,
                "seccomp=FILE or seccomp=unconfined",
            ));
        };
        profile = if value == "unconfined" {
            value.to_string()
        } else {
            let text = std::fs::read_to_string(value).map_err(|source| FlagError::File {
                flag: "--security-opt seccomp",
                path: value.to_string(),
                source,
            })?;
            if serde_json::from_str::<serde_json::Value>(&text).is_err() {
                return Err(invalid(
                    "--security-opt",
                    option,
                    "a seccomp profile file in JSON",
                ));
            }
            text
        };
    }
    Ok(profile)
}

/// `-e KEY=VALUE`, or `-e KEY` for this shell's value (skipped when unset,
/// as docker does).
pub fn env(values: &[String]) -> Result<Vec<String>, FlagError> {
    let mut out = Vec::new();
    for value in values {
        if value.is_empty() || value.starts_with('=') {
            return Err(invalid("-e", value, "KEY=VALUE or KEY"));
        }
        if value.contains('=') {
            out.push(value.clone());
        } else if let Ok(v) = std::env::var(value) {
            out.push(format!("{value}={v}"));
        }
    }
    Ok(out)
}

/// docker's env file: KEY=VALUE lines, `#` comments, blank lines; a bare
/// KEY takes this shell's value.
pub fn env_file(path: &Path) -> Result<Vec<String>, FlagError> {
    let text = std::fs::read_to_string(path).map_err(|source| FlagError::File {
        flag: "--env-file",
        path: path.display().to_string(),
        source,
    })?;
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_start())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    env(&lines)
}

/// `--label KEY=VALUE`.
pub fn labels(values: &[String]) -> Result<std::collections::HashMap<String, String>, FlagError> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
            None if !v.is_empty() => Ok((v.clone(), String::new())),
            _ => Err(invalid("--label", v, "KEY=VALUE")),
        })
        .collect()
}

/// A signal by name (KILL, SIGKILL, kill) or number.
pub fn signal(value: &str) -> Result<u32, FlagError> {
    const EXPECTED: &str = "a signal name (KILL, TERM, HUP, …) or number";
    if let Ok(n) = value.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(invalid("--signal", value, EXPECTED));
    }
    let upper = value.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as u32)
        .map_err(|_| invalid("--signal", value, EXPECTED))
}

/// `--tail N` or `all`.
pub fn tail(value: &str) -> Result<u32, FlagError> {
    if value == "all" {
        return Ok(0);
    }
    value
        .parse()
        .map_err(|_| invalid("--tail", value, "a number of lines or \"all\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_take_docker_units_and_refuse_the_rest() {
        assert_eq!(memory("64m").unwrap(), 64 << 20);
        assert_eq!(memory("64M").unwrap(), 64 << 20);
        assert_eq!(memory("1g").unwrap(), 1 << 30);
        assert_eq!(memory("1.5g").unwrap(), 3 << 29);
        assert_eq!(memory("8388608").unwrap(), 8 << 20);
        assert_eq!(memory("10mb").unwrap(), 10 << 20);
        for bad in ["12parsecs", "", "m", "-5m", "1..2m", "4k"] {
            let err = memory(bad).unwrap_err().to_string();
            assert!(err.contains("--memory"), "{bad}: {err}");
        }
        assert!(memory("12parsecs").unwrap_err().to_string().contains("64m"));
    }

    #[test]
    fn published_ports_read_as_docker_reads_them() {
        let p = publish("8080:80").unwrap();
        assert_eq!(
            (
                p.host_ip.as_str(),
                p.host_port,
                p.container_port,
                p.protocol.as_str()
            ),
            ("", 8080, 80, "tcp")
        );
        let p = publish("127.0.0.1:53:5353/udp").unwrap();
        assert_eq!(
            (
                p.host_ip.as_str(),
                p.host_port,
                p.container_port,
                p.protocol.as_str()
            ),
            ("127.0.0.1", 53, 5353, "udp")
        );
        let p = publish("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = publish("127.0.0.1::80").unwrap();
        assert_eq!((p.host_ip.as_str(), p.host_port), ("127.0.0.1", 0));
        for bad in [
            "70000:80",
            "80:0",
            "80/sctp",
            "x:80",
            "1.2.3:80:80",
            "a:b:c:d",
        ] {
            assert!(publish(bad).is_err(), "{bad}");
        }
        assert!(add_host("db:10.0.0.2").is_ok());
        assert!(add_host("db").is_err());
    }

    #[test]
    fn cpus_and_pids() {
        assert_eq!(cpus("1.5").unwrap(), 1_500_000_000);
        assert_eq!(cpus("0.25").unwrap(), 250_000_000);
        assert!(cpus("0").is_err());
        assert!(cpus("many").is_err());
        assert_eq!(pids_limit("100").unwrap(), 100);
        assert_eq!(pids_limit("-1").unwrap(), 0);
        assert!(pids_limit("lots").is_err());
    }

    #[test]
    fn volumes_are_binds_when_absolute_and_named_otherwise() {
        let m = mount("/srv/data:/data:ro").unwrap();
        assert_eq!(m.kind, pb::container_mount::Kind::Bind as i32);
        assert_eq!(
            (m.source.as_str(), m.destination.as_str()),
            ("/srv/data", "/data")
        );
        assert!(m.read_only);
        let m = mount("cache:/var/cache").unwrap();
        assert_eq!(m.kind, pb::container_mount::Kind::Volume as i32);
        assert!(!m.read_only);
        let m = mount("/anon").unwrap();
        assert_eq!(m.kind, pb::container_mount::Kind::Volume as i32);
        assert_eq!(m.source, "");
        for bad in ["a:b", "./rel:/x", "a:/b:rx", "a:/b:ro:extra", "relative"] {
            assert!(mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restart_policies() {
        use pb::restart_policy::Kind;
        let p = restart("on-failure:3").unwrap();
        assert_eq!((p.kind, p.max_retries), (Kind::OnFailure as i32, 3));
        assert_eq!(restart("always").unwrap().kind, Kind::Always as i32);
        assert_eq!(
            restart("unless-stopped").unwrap().kind,
            Kind::UnlessStopped as i32
        );
        assert_eq!(restart("no").unwrap().kind, Kind::No as i32);
        for bad in ["sometimes", "always:3", "on-failure:x"] {
            assert!(restart(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal("KILL").unwrap(), 9);
        assert_eq!(signal("sigterm").unwrap(), 15);
        assert_eq!(signal("HUP").unwrap(), 1);
        assert_eq!(signal("10").unwrap(), 10);
        assert!(signal("NOPE").is_err());
        assert!(signal("0").is_err());
    }

    #[test]
    fn env_files_skip_comments_and_blank_lines() {
        let path = std::env::temp_dir().join(format!("berthctl-env-{}", std::process::id()));
        std::fs::write(&path, "# comment\n\nA=1\n  B=two words\n").unwrap();
        assert_eq!(env_file(&path).unwrap(), ["A=1", "B=two words"]);
        let _ = std::fs::remove_file(&path);
        assert!(env_file(Path::new("/nonexistent/env")).is_err());
        assert!(env(&["=x".into()]).is_err());
    }
}
