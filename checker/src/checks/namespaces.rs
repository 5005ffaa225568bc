//! `linux.namespaces`, `linux.uidMappings`/`gidMappings` and
//! `linux.timeOffsets`.
//!
//! From inside, a namespace is only an inode number; whether it is new or
//! the host's takes the host's number, which the test passes in the
//! annotations `berth.test/host-ns.<type>` (and, for an entry joined by
//! path, the expected number in `berth.test/ns-inode.<type>`).

use crate::config::{Config, IdMapping, Namespace};
use crate::procfs;
use crate::tap::Report;

/// Config type → name under `/proc/self/ns/`.
const KINDS: [(&str, &str); 8] = [
    ("user", "user"),
    ("mount", "mnt"),
    ("pid", "pid"),
    ("network", "net"),
    ("ipc", "ipc"),
    ("uts", "uts"),
    ("cgroup", "cgroup"),
    ("time", "time"),
];

pub const HOST_NS_ANNOTATION: &str = "berth.test/host-ns.";
pub const NS_INODE_ANNOTATION: &str = "berth.test/ns-inode.";

pub fn check(config: &Config, report: &mut Report) {
    for (kind, proc_name) in KINDS {
        match config.namespace(kind) {
            Some(Namespace { path: Some(_), .. }) => check_joined(config, kind, proc_name, report),
            Some(_) => check_new(config, kind, proc_name, report),
            None => check_shared(config, kind, proc_name, report),
        }
    }
    check_pid_one(config, report);
    check_id_maps(config, report);
    check_time_offsets(config, report);
}

/// The inode an annotation gives for `kind`, looked up by the config's type
/// name (`network`) or, failing that, by the `/proc/self/ns` name (`net`).
fn annotated_inode(
    config: &Config,
    prefix: &str,
    kind: &str,
    proc_name: &str,
) -> Option<Result<u64, String>> {
    [kind, proc_name].iter().find_map(|name| {
        let key = format!("{prefix}{name}");
        let value = config.annotation(&key)?;
        Some(
            value
                .trim()
                .parse()
                .map_err(|_| format!("annotation {key}={value:?} is not an inode number")),
        )
    })
}

fn check_new(config: &Config, kind: &str, proc_name: &str, report: &mut Report) {
    let Some(host) = annotated_inode(config, HOST_NS_ANNOTATION, kind, proc_name) else {
        return;
    };
    let description = format!("{kind} namespace is new (not the host's)");
    match (procfs::namespace_inode(proc_name), host) {
        (Err(e), _) | (_, Err(e)) => report.fail(description, e, "a readable inode"),
        (Ok(got), Ok(host)) if got == host => {
            report.fail(description, got, format!("anything but host inode {host}"))
        }
        (Ok(_), Ok(_)) => report.pass(description),
    }
}

fn check_shared(config: &Config, kind: &str, proc_name: &str, report: &mut Report) {
    let Some(host) = annotated_inode(config, HOST_NS_ANNOTATION, kind, proc_name) else {
        return;
    };
    let description = format!("{kind} namespace is the host's (not in linux.namespaces)");
    compare_inode(description, proc_name, host, report);
}

fn check_joined(config: &Config, kind: &str, proc_name: &str, report: &mut Report) {
    let Some(expected) = annotated_inode(config, NS_INODE_ANNOTATION, kind, proc_name) else {
        return;
    };
    let description = format!("{kind} namespace is the one joined by path");
    compare_inode(description, proc_name, expected, report);
}

fn compare_inode(
    description: String,
    proc_name: &str,
    want: Result<u64, String>,
    report: &mut Report,
) {
    match want {
        Ok(want) => report.compare_read(description, procfs::namespace_inode(proc_name), want),
        Err(e) => report.fail(description, e, "an inode number"),
    }
}

/// The first process of a new pid namespace has pid 1, and with runc-style
/// runtimes the container's process is that first process.
fn check_pid_one(config: &Config, report: &mut Report) {
    if config.creates_namespace("pid") {
        report.compare("pid is 1 in the new pid namespace", std::process::id(), 1);
    }
}

fn check_id_maps(config: &Config, report: &mut Report) {
    if !config.creates_namespace("user") {
        return;
    }
    let maps = [
        ("uid_map", &config.linux.uid_mappings, "linux.uidMappings"),
        ("gid_map", &config.linux.gid_mappings, "linux.gidMappings"),
    ];
    for (file, configured, field) in maps {
        if configured.is_empty() {
            continue;
        }
        let path = format!("/proc/self/{file}");
        let got = procfs::read(&path).and_then(|text| parse_id_map(&text));
        let mut want = configured.clone();
        want.sort();
        report.compare_read(
            format!("{path} matches {field}"),
            got.map(|mut got| {
                got.sort();
                IdMap(got)
            }),
            IdMap(want),
        );
    }
}

/// Mappings in a comparable, printable form.
#[derive(Debug, PartialEq, Eq)]
struct IdMap(Vec<IdMapping>);

impl std::fmt::Display for IdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|m| format!("{} {} {}", m.container_id, m.host_id, m.size))
            .collect();
        write!(f, "[{}]", lines.join("; "))
    }
}

/// `/proc/PID/uid_map`: one `inside outside count` triple per line,
/// padded with spaces.
pub fn parse_id_map(text: &str) -> Result<Vec<IdMapping>, String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let numbers: Vec<u64> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| format!("malformed id map line {line:?}"))?;
            match numbers[..] {
                [container_id, host_id, size] => Ok(IdMapping {
                    container_id,
                    host_id,
                    size,
                }),
                _ => Err(format!("malformed id map line {line:?}")),
            }
        })
        .collect()
}

fn check_time_offsets(config: &Config, report: &mut Report) {
    let offsets = &config.linux.time_offsets;
    if offsets.is_empty() || config.namespace("time").is_none() {
        return;
    }
    let path = "/proc/self/timens_offsets";
    let table = procfs::read(path).and_then(|text| parse_time_offsets(&text));
    for offset in offsets {
        let description = format!("time offset of clock {}", offset.clock);
        let want = format!("{}s {}ns", offset.secs, offset.nanosecs);
        let got = table.clone().and_then(|table| {
            table
                .iter()
                .find(|(clock, _, _)| *clock == offset.clock)
                .map(|(_, secs, nanosecs)| format!("{secs}s {nanosecs}ns"))
                .ok_or_else(|| format!("no {} line in {path}", offset.clock))
        });
        report.compare_read(description, got, want);
    }
}

/// `/proc/PID/timens_offsets`: `clock secs nanosecs` per line, the clock
/// named `monotonic` or `boottime`.
pub fn parse_time_offsets(text: &str) -> Result<Vec<(String, i64, i64)>, String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let malformed = || format!("malformed timens_offsets line {line:?}");
            let mut fields = line.split_whitespace();
            let clock = fields.next().ok_or_else(malformed)?;
            let secs = fields
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(malformed)?;
            let nanosecs = fields
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(malformed)?;
            Ok((clock.to_owned(), secs, nanosecs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_parse_whatever_the_padding() {
        let text = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(
            parse_id_map(text),
            Ok(vec![
                IdMapping {
                    container_id: 0,
                    host_id: 1000,
                    size: 1
                },
                IdMapping {
                    container_id: 1,
                    host_id: 100000,
                    size: 65536
                },
            ])
        );
        assert!(parse_id_map("0 1000\n").is_err());
        assert!(parse_id_map("0 x 1\n").is_err());
    }

    #[test]
    fn id_maps_print_as_triples() {
        let map = IdMap(vec![IdMapping {
            container_id: 0,
            host_id: 1000,
            size: 1,
        }]);
        assert_eq!(map.to_string(), "[0 1000 1]");
    }

    #[test]
    fn time_offsets_parse() {
        let text = "monotonic        100         0\nboottime          -5 500000000\n";
        assert_eq!(
            parse_time_offsets(text),
            Ok(vec![
                ("monotonic".to_owned(), 100, 0),
                ("boottime".to_owned(), -5, 500_000_000),
            ])
        );
        assert!(parse_time_offsets("monotonic 1\n").is_err());
    }
}
