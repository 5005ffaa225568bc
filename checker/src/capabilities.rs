//! Capability names, bitmasks, and what `execve` leaves of the sets a
//! runtime configured.
//!
//! The checker is the container's process: the runtime set the five sets
//! of `process.capabilities` and then exec'd it, and execve(2) recomputes
//! permitted and effective (capabilities(7), "Transformation of
//! capabilities during execve()"). A correct runtime therefore cannot
//! show the configured permitted/effective sets to its process; this
//! module computes what it must show instead.

/// Capability names by number, as in `<linux/capability.h>`.
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability named exactly as the spec spells it
/// (`CAP_SYS_ADMIN`). runc looks names up the same way and ignores, with a
/// warning, one it does not know, so `sys_admin` grants nothing under runc.
pub fn number(name: &str) -> Option<u32> {
    NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// The bitmask of `names`, leaving out unknown names and capabilities the
/// running kernel does not have (above `last_cap`): runtimes skip those.
pub fn mask(names: &[String], last_cap: u32) -> u64 {
    names
        .iter()
        .filter_map(|name| number(name))
        .filter(|&n| n <= last_cap)
        .fold(0, |mask, n| mask | (1u64 << n))
}

/// The names in `mask`, numbers for bits without one.
pub fn names(mask: u64) -> Vec<String> {
    (0..64u32)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            usize::try_from(bit)
                .ok()
                .and_then(|i| NAMES.get(i))
                .map_or_else(|| format!("cap_{bit}"), |name| (*name).to_owned())
        })
        .collect()
}

/// A `CapXxx:` value of `/proc/self/status`: 16 hex digits.
pub fn parse_hex(text: &str) -> Result<u64, String> {
    u64::from_str_radix(text.trim(), 16)
        .map_err(|_| format!("{text:?} is not a hex capability mask"))
}

/// Shows a mask that differs from `want` as hex plus what differs.
pub fn describe_difference(got: u64, want: u64) -> String {
    let mut text = format!("{got:#018x}");
    let extra = names(got & !want);
    let missing = names(want & !got);
    if !extra.is_empty() {
        text.push_str(&format!(" extra [{}]", extra.join(",")));
    }
    if !missing.is_empty() {
        text.push_str(&format!(" missing [{}]", missing.join(",")));
    }
    text
}

/// The five capability sets of a process, as bitmasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

/// The sets the process has after the runtime configured `configured` for
/// user `uid` (with `no_new_privs` set or not) and exec'd a program without
/// file capabilities or set-user-ID bit, such as this checker.
///
/// In the kernel's terms (capabilities(7)), with fP = fI = 0:
/// - bounding and inheritable are kept;
/// - ambient is kept, and can only ever hold what is both permitted and
///   inheritable (PR_CAP_AMBIENT_RAISE refuses anything else);
/// - for uid 0 the file sets count as full, so permitted becomes
///   bounding | inheritable (cut down to the old permitted under
///   no_new_privs, which forbids gaining capabilities), plus ambient;
/// - for any other uid permitted becomes ambient;
/// - effective equals the new permitted for uid 0, ambient otherwise.
pub fn after_exec(configured: Sets, uid: u32, no_new_privs: bool) -> Sets {
    let ambient = configured.ambient & configured.permitted & configured.inheritable;
    let (permitted, effective) = if uid == 0 {
        let mut gained = configured.bounding | configured.inheritable;
        if no_new_privs {
            gained &= configured.permitted;
        }
        (gained | ambient, gained | ambient)
    } else {
        (ambient, ambient)
    };
    Sets {
        bounding: configured.bounding,
        effective,
        permitted,
        inheritable: configured.inheritable,
        ambient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn numbers_follow_the_kernel_header() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("CAP_NET_RAW"), Some(13));
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_AUDIT_READ"), Some(37));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("sys_admin"), None);
        assert_eq!(number("CAP_NOPE"), None);
    }

    #[test]
    fn mask_skips_unknown_and_too_new_capabilities() {
        let list = names_of(&["CAP_CHOWN", "CAP_KILL", "CAP_BPF", "CAP_WHATEVER"]);
        assert_eq!(mask(&list, 40), 0b10_0001 | (1 << 39));
        assert_eq!(mask(&list, 38), 0b10_0001);
        assert_eq!(mask(&[], 40), 0);
    }

    #[test]
    fn names_round_trip_a_mask() {
        let list = names_of(&["CAP_KILL", "CAP_SYS_ADMIN"]);
        assert_eq!(names(mask(&list, 40)), list);
        assert_eq!(names(1 << 63), vec!["cap_63"]);
    }

    #[test]
    fn parses_status_masks() {
        assert_eq!(parse_hex("000001ffffffffff"), Ok(0x1ff_ffff_ffff));
        assert_eq!(parse_hex("0000000000000000\n"), Ok(0));
        assert!(parse_hex("xyz").is_err());
    }

    #[test]
    fn a_difference_names_the_capabilities() {
        let got = 1 << 5 | 1 << 13;
        let want = 1 << 5 | 1 << 21;
        assert_eq!(
            describe_difference(got, want),
            "0x0000000000002020 extra [CAP_NET_RAW] missing [CAP_SYS_ADMIN]"
        );
    }

    const CHOWN: u64 = 1 << 0;
    const KILL: u64 = 1 << 5;
    const NET_RAW: u64 = 1 << 13;

    #[test]
    fn root_gets_bounding_and_inheritable_as_permitted_and_effective() {
        let configured = Sets {
            bounding: CHOWN | KILL,
            effective: CHOWN,
            permitted: CHOWN,
            inheritable: NET_RAW,
            ambient: 0,
        };
        let after = after_exec(configured, 0, false);
        assert_eq!(after.permitted, CHOWN | KILL | NET_RAW);
        assert_eq!(after.effective, CHOWN | KILL | NET_RAW);
        assert_eq!(after.bounding, CHOWN | KILL);
        assert_eq!(after.inheritable, NET_RAW);
    }

    #[test]
    fn no_new_privs_keeps_root_within_its_permitted_set() {
        let configured = Sets {
            bounding: CHOWN | KILL,
            effective: CHOWN,
            permitted: CHOWN,
            inheritable: 0,
            ambient: 0,
        };
        let after = after_exec(configured, 0, true);
        assert_eq!(after.permitted, CHOWN);
        assert_eq!(after.effective, CHOWN);
    }

    #[test]
    fn other_users_keep_only_ambient_capabilities() {
        let all = CHOWN | KILL | NET_RAW;
        let configured = Sets {
            bounding: all,
            effective: all,
            permitted: all,
            inheritable: CHOWN | KILL,
            ambient: CHOWN | NET_RAW,
        };
        let after = after_exec(configured, 1000, false);
        assert_eq!(after.ambient, CHOWN);
        assert_eq!(after.permitted, CHOWN);
        assert_eq!(after.effective, CHOWN);
        assert_eq!(after_exec(Sets::default(), 1000, true), Sets::default());
    }

    #[test]
    fn the_default_spec_keeps_its_sets_as_root() {
        // `runc spec`'s capabilities: bounding = effective = permitted = ambient.
        let set = CHOWN | KILL;
        let configured = Sets {
            bounding: set,
            effective: set,
            permitted: set,
            inheritable: 0,
            ambient: set,
        };
        let after = after_exec(configured, 0, true);
        // Ambient needs inheritable, which runc's default spec leaves out.
        assert_eq!(after.ambient, 0);
        assert_eq!(after.effective, set);
        assert_eq!(after.permitted, set);
    }
}
