//! Device rules: the spec's `linux.resources.devices` checked and
//! normalised into [`DeviceAccess`] entries, in the order they apply, with
//! runc's default allow-list. The drivers install the list: v1 as
//! `devices.allow`/`devices.deny` lines, v2 as the eBPF program of
//! [`super::device_filter`].

use super::CgroupError;
use crate::spec::DeviceRule;

/// One device rule, checked and normalised: `None` is the `*` wildcard
/// (for `kind`: every type, the spec's `a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAccess {
    pub allow: bool,
    pub kind: Option<char>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `ACCESS_*` bits.
    pub access: u8,
}

pub const ACCESS_MKNOD: u8 = 1;
pub const ACCESS_READ: u8 = 2;
pub const ACCESS_WRITE: u8 = 4;

impl DeviceAccess {
    fn allow(kind: char, major: Option<u32>, minor: Option<u32>, access: u8) -> DeviceAccess {
        DeviceAccess {
            allow: true,
            kind: Some(kind),
            major,
            minor,
            access,
        }
    }

    /// The v1 `devices.allow`/`devices.deny` line.
    pub fn v1_line(&self) -> String {
        let Some(kind) = self.kind else {
            return "a".to_string();
        };
        let number = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        let mut access = String::new();
        for (bit, letter) in [(ACCESS_READ, 'r'), (ACCESS_WRITE, 'w'), (ACCESS_MKNOD, 'm')] {
            if self.access & bit != 0 {
                access.push(letter);
            }
        }
        format!(
            "{kind} {}:{} {access}",
            number(self.major),
            number(self.minor)
        )
    }
}

/// The devices every container may use, as runc allows them by default:
/// mknod of any device, and null, zero, full, random, urandom, tty, ptmx,
/// the pty slaves and /dev/net/tun. Not the host's console (5:1): a
/// container's `/dev/console` is a pty slave bound there.
fn default_allowed() -> [DeviceAccess; 11] {
    let all = ACCESS_READ | ACCESS_WRITE | ACCESS_MKNOD;
    let c = |major, minor| DeviceAccess::allow('c', Some(major), minor, all);
    [
        DeviceAccess::allow('c', None, None, ACCESS_MKNOD),
        DeviceAccess::allow('b', None, None, ACCESS_MKNOD),
        c(1, Some(3)),
        c(1, Some(5)),
        c(1, Some(7)),
        c(1, Some(8)),
        c(1, Some(9)),
        c(5, Some(0)),
        c(5, Some(2)),
        c(136, None),
        c(10, Some(200)),
    ]
}

fn check_rule(rule: &DeviceRule) -> Result<DeviceAccess, CgroupError> {
    let kind = rule.kind.as_deref().unwrap_or("a");
    let kind = match kind {
        "a" => None,
        "c" => Some('c'),
        "b" => Some('b'),
        other => {
            return Err(CgroupError::InvalidRule(format!(
                "type {other:?}: must be a, c or b"
            )))
        }
    };
    let letters = rule.access.as_deref().unwrap_or("rwm");
    let mut access = 0;
    for letter in letters.chars() {
        access |= match letter {
            'r' => ACCESS_READ,
            'w' => ACCESS_WRITE,
            'm' => ACCESS_MKNOD,
            _ => 0xff,
        };
    }
    if letters.is_empty() || access == 0xff || access > 7 {
        return Err(CgroupError::InvalidRule(format!(
            "access {letters:?}: must be made of r, w and m"
        )));
    }
    let number = |n: Option<i64>| match n {
        None | Some(-1) => Ok(None),
        Some(n) if (0..=u32::MAX as i64).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(CgroupError::InvalidRule(format!("device number {n}"))),
    };
    let (major, minor) = match kind {
        // `a` means every device, whatever numbers come with it.
        None => (None, None),
        Some(_) => (number(rule.major)?, number(rule.minor)?),
    };
    Ok(DeviceAccess {
        allow: rule.allow,
        kind,
        major,
        minor,
        access,
    })
}

/// The whole allow-list in the order it applies: deny everything, then the
/// spec's rules, then runc's defaults (a later rule overrides an earlier one
/// for the devices both name). `linux.devices` only creates nodes: as with
/// runc, a node the rules do not allow stays unusable.
pub fn device_rules(rules: &[DeviceRule]) -> Result<Vec<DeviceAccess>, CgroupError> {
    let mut out = vec![DeviceAccess {
        allow: false,
        kind: None,
        major: None,
        minor: None,
        access: ACCESS_READ | ACCESS_WRITE | ACCESS_MKNOD,
    }];
    for rule in rules {
        out.push(check_rule(rule)?);
    }
    out.extend(default_allowed());
    Ok(out)
}

/// Checks the device rules without touching the kernel (for `create`'s validation).
pub fn validate_rules(rules: &[DeviceRule]) -> Result<(), CgroupError> {
    rules.iter().try_for_each(|r| check_rule(r).map(drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: &str, access: &str) -> DeviceRule {
        DeviceRule {
            allow: true,
            kind: Some(kind.into()),
            major: Some(1),
            minor: None,
            access: Some(access.into()),
        }
    }

    #[test]
    fn device_rules_are_checked() {
        assert_eq!(check_rule(&rule("c", "rw")).unwrap().v1_line(), "c 1:* rw");
        assert_eq!(check_rule(&rule("a", "rw")).unwrap().v1_line(), "a");
        assert!(check_rule(&rule("x", "rw")).is_err());
        assert!(check_rule(&rule("c", "rwq")).is_err());
        assert!(check_rule(&rule("c", "")).is_err());
        let mut negative = rule("b", "r");
        negative.major = Some(-7);
        assert!(check_rule(&negative).is_err());
    }

    #[test]
    fn the_allow_list_starts_with_deny_all_and_ends_with_the_defaults() {
        let list = device_rules(&[rule("c", "r")]).unwrap();
        assert_eq!(list[0].v1_line(), "a");
        assert!(!list[0].allow);
        assert_eq!(list[1].v1_line(), "c 1:* r");
        assert_eq!(list.last().unwrap().v1_line(), "c 10:200 rwm");
    }
}
