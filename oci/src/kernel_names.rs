//! The kernel's names for what a config names by string: capabilities,
//! rlimits and mount propagations. A leaf module: the runtime validates a spec with it and applies
//! what it resolves; the daemon names capability sets with it when it writes
//! one.

use caps::Capability;
use nix::mount::MsFlags;

/// `CAP_SYS_ADMIN` (or `sys_admin`) → the capability; names are matched
/// case-insensitively and the `CAP_` prefix is optional, as runc does.
pub fn capability(name: &str) -> Option<Capability> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse::<Capability>().ok()
}

/// The highest capability the running kernel knows, read once (the `caps`
/// crate's own probe costs one prctl per capability each time).
pub fn last_cap() -> u8 {
    static LAST: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40)
    })
}

/// Every capability the running kernel knows.
pub fn supported_capabilities() -> impl Iterator<Item = Capability> {
    let last = last_cap();
    caps::all().into_iter().filter(move |c| c.index() <= last)
}

/// The names (`CAP_CHOWN`, …) of every capability the running kernel knows,
/// in the kernel's order (for engines granting "ALL").
pub fn all_capability_names() -> Vec<String> {
    let mut caps: Vec<Capability> = supported_capabilities().collect();
    caps.sort_by_key(|c| c.index());
    caps.iter().map(|c| c.to_string()).collect()
}

/// docker's (and containerd's CRI) default capability set: what engines
/// give a container unless told otherwise.
pub const DOCKER_DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A propagation option (`rprivate`, `shared`, …) as the flags of its own
/// `mount` call.
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// The `RLIMIT_*` resource of that name.
pub fn rlimit(kind: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match kind {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn capability_names_parse_with_or_without_prefix_in_any_case() {
        assert_eq!(
            super::capability("CAP_KILL"),
            Some(caps::Capability::CAP_KILL)
        );
        assert_eq!(
            super::capability("net_raw"),
            Some(caps::Capability::CAP_NET_RAW)
        );
        assert_eq!(super::capability("CAP_FLY"), None);
        assert!(super::all_capability_names().contains(&"CAP_SYS_ADMIN".to_string()));
        for name in super::DOCKER_DEFAULT_CAPABILITIES {
            assert!(super::capability(name).is_some(), "{name}");
        }
    }

    #[test]
    fn rlimit_names_are_the_kernels() {
        assert_eq!(super::rlimit("RLIMIT_NOFILE"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(super::rlimit("RLIMIT_NOPE"), None);
    }
}
