//! `/dev`: the devices every container gets, `linux.devices`, and the
//! standard symlinks.
//!
//! runc makes none of these when the config bind-mounts `/dev` (the host's
//! or the user's `/dev` is used as it is), so neither does the checker.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::config::{Config, Device};
use crate::paths;
use crate::tap::Report;

/// Path, major, minor of the char devices the spec requires (all 0666).
const DEFAULT_DEVICES: [(&str, i64, i64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Link, target of the symlinks the spec requires.
const DEV_LINKS: [(&str, &str); 5] = [
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/ptmx", "pts/ptmx"),
];

pub fn check(config: &Config, report: &mut Report) {
    if dev_is_bind_mounted(config) {
        report.skip("devices in /dev", "/dev is a bind mount in the config");
        return;
    }
    // Inside a user namespace mknod is not allowed, and runtimes bind-mount
    // the host's node instead, so its mode and owner are the host's.
    let nodes_are_bound = config.namespace("user").is_some();
    for (path, major, minor) in DEFAULT_DEVICES {
        // A linux.devices entry for the same path replaces the default.
        if config
            .linux
            .devices
            .iter()
            .any(|d| paths::clean(&d.path) == path)
        {
            continue;
        }
        if let Some(meta) = check_node(path, NodeKind::Char, major, minor, report) {
            report.compare(
                format!("{path} has mode 0666"),
                Mode(meta.mode()),
                Mode(0o666),
            );
        }
    }
    for device in &config.linux.devices {
        check_configured(device, nodes_are_bound, report);
    }
    for (link, target) in DEV_LINKS {
        let got = std::fs::read_link(link)
            .map(|t| t.to_string_lossy().into_owned())
            .map_err(|e| format!("cannot readlink: {e}"));
        report.compare_read(format!("{link} links to {target}"), got, target.to_owned());
    }
}

fn dev_is_bind_mounted(config: &Config) -> bool {
    config.mounts.iter().any(|m| {
        paths::clean(&m.destination) == "/dev"
            && (m.kind.as_deref() == Some("bind")
                || m.options.iter().any(|o| o == "bind" || o == "rbind"))
    })
}

fn check_configured(device: &Device, nodes_are_bound: bool, report: &mut Report) {
    let path = paths::clean(&device.path);
    let Some(kind) = NodeKind::from_config(&device.kind) else {
        report.fail(
            format!("device {path} has a known type"),
            &device.kind,
            "c, u, b or p",
        );
        return;
    };
    let Some(meta) = check_node(&path, kind, device.major, device.minor, report) else {
        return;
    };
    if let Some(mode) = device.file_mode {
        let description = format!("{path} has mode {:04o}", mode & 0o7777);
        if nodes_are_bound {
            report.skip(
                description,
                "user namespace: the node is the host's, bind-mounted",
            );
        } else {
            report.compare(description, Mode(meta.mode()), Mode(mode));
        }
    }
    if device.uid.is_some() || device.gid.is_some() {
        check_owner(&path, &meta, device, nodes_are_bound, report);
    }
}

fn check_owner(path: &str, meta: &Metadata, device: &Device, bound: bool, report: &mut Report) {
    let show = |id: Option<u32>| id.map_or_else(|| "any".to_owned(), |id| id.to_string());
    let want = format!("uid {} gid {}", show(device.uid), show(device.gid));
    let description = format!("{path} is owned by {want}");
    if bound {
        report.skip(
            description,
            "user namespace: the node is the host's, bind-mounted",
        );
        return;
    }
    let uid_ok = device.uid.is_none_or(|uid| uid == meta.uid());
    let gid_ok = device.gid.is_none_or(|gid| gid == meta.gid());
    if uid_ok && gid_ok {
        report.pass(description);
    } else {
        report.fail(
            description,
            format!("uid {} gid {}", meta.uid(), meta.gid()),
            want,
        );
    }
}

/// Checks that `path` is a node of `kind` with the given numbers, and
/// returns its metadata when it is.
fn check_node(
    path: &str,
    kind: NodeKind,
    major: i64,
    minor: i64,
    report: &mut Report,
) -> Option<Metadata> {
    let want = match kind {
        NodeKind::Fifo => kind.name().to_owned(),
        _ => format!("{} {major}:{minor}", kind.name()),
    };
    let description = format!("{path} is a {want} device");
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            report.fail(description, format!("cannot stat: {e}"), want);
            return None;
        }
    };
    let got = describe_node(&meta);
    if got == want {
        report.pass(description);
        Some(meta)
    } else {
        report.fail(description, got, want);
        None
    }
}

/// What a file is, in the terms of [`check_node`]'s expectations.
fn describe_node(meta: &Metadata) -> String {
    let file_type = meta.file_type();
    let rdev = meta.rdev();
    let numbers = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
    if file_type.is_char_device() {
        format!("char {numbers}")
    } else if file_type.is_block_device() {
        format!("block {numbers}")
    } else if file_type.is_fifo() {
        "fifo".to_owned()
    } else if file_type.is_dir() {
        "directory".to_owned()
    } else {
        "regular file or other non-device".to_owned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    Char,
    Block,
    Fifo,
}

impl NodeKind {
    /// `linux.devices[].type`: `u` (unbuffered) is a char device too.
    fn from_config(kind: &str) -> Option<NodeKind> {
        match kind {
            "c" | "u" => Some(NodeKind::Char),
            "b" => Some(NodeKind::Block),
            "p" => Some(NodeKind::Fifo),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            NodeKind::Char => "char",
            NodeKind::Block => "block",
            NodeKind::Fifo => "fifo",
        }
    }
}

/// Permission bits (with set-id and sticky), shown in octal.
#[derive(Debug, Clone, Copy)]
struct Mode(u32);

impl PartialEq for Mode {
    fn eq(&self, other: &Mode) -> bool {
        self.0 & 0o7777 == other.0 & 0o7777
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0 & 0o7777)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mount;

    #[test]
    fn modes_compare_permission_bits_only() {
        assert_eq!(Mode(0o020666), Mode(0o666));
        assert_ne!(Mode(0o644), Mode(0o666));
        assert_eq!(Mode(0o021620).to_string(), "1620");
    }

    #[test]
    fn device_types_follow_the_spec() {
        assert_eq!(NodeKind::from_config("u"), Some(NodeKind::Char));
        assert_eq!(NodeKind::from_config("p"), Some(NodeKind::Fifo));
        assert_eq!(NodeKind::from_config("x"), None);
    }

    #[test]
    fn only_a_bind_mount_of_dev_turns_device_checks_off() {
        let mut config = Config::default();
        config.mounts.push(Mount {
            destination: "/dev".into(),
            kind: Some("tmpfs".into()),
            options: vec!["nosuid".into()],
        });
        assert!(!dev_is_bind_mounted(&config));
        config.mounts.push(Mount {
            destination: "/dev/".into(),
            kind: Some("none".into()),
            options: vec!["rbind".into()],
        });
        assert!(dev_is_bind_mounted(&config));
    }
}
