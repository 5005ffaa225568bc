//! The five capability sets of `process.capabilities`.
//!
//! Order matters and follows runc: the bounding set is reduced while the
//! process still has `CAP_SETPCAP`; the user is switched with keep-caps on;
//! then effective, permitted and inheritable are set in one `capset`, and
//! the ambient set last (it can only hold what is permitted and inheritable).

use std::collections::HashSet;

use caps::{CapSet, Capability, CapsHashSet};

use berth_oci::kernel_names::{self, last_cap, supported_capabilities as supported};

use crate::spec::Capabilities;

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("unknown capability {0:?}")]
    Unknown(String),
    #[error("cannot set capabilities effective={effective:?} permitted={permitted:?} inheritable={inheritable:?}: {source}")]
    Capset {
        effective: Vec<String>,
        permitted: Vec<String>,
        inheritable: Vec<String>,
        source: std::io::Error,
    },
    #[error("cannot set the {set} capability set to {wanted:?}: {source}")]
    Apply {
        set: &'static str,
        wanted: Vec<String>,
        source: caps::errors::CapsError,
    },
}

/// `CAP_SYS_ADMIN` → the capability; names are matched case-insensitively, as runc does.
pub fn parse(name: &str) -> Result<Capability, CapabilityError> {
    kernel_names::capability(name).ok_or_else(|| CapabilityError::Unknown(name.to_string()))
}

fn to_set(names: &Option<Vec<String>>) -> Result<CapsHashSet, CapabilityError> {
    let last = last_cap();
    let mut set = HashSet::new();
    for name in names.iter().flatten() {
        let cap = parse(name)?;
        // Capabilities newer than the running kernel are skipped, as runc does.
        if cap.index() <= last {
            set.insert(cap);
        }
    }
    Ok(set)
}

/// Drops every capability the bounding set of the spec does not list.
pub fn apply_bounding(spec: &Option<Capabilities>) -> Result<(), CapabilityError> {
    let wanted = to_set(&spec.as_ref().and_then(|c| c.bounding.clone()))?;
    for cap in supported() {
        if !wanted.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|source| CapabilityError::Apply {
                set: "bounding",
                wanted: wanted.iter().map(|c| c.to_string()).collect(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Sets effective, permitted, inheritable and ambient (after the user switch).
pub fn apply_process_sets(spec: &Option<Capabilities>) -> Result<(), CapabilityError> {
    let get = |f: fn(&Capabilities) -> &Option<Vec<String>>| {
        to_set(spec.as_ref().map(f).unwrap_or(&None))
    };
    let effective = get(|c| &c.effective)?;
    let permitted = get(|c| &c.permitted)?;
    let inheritable = get(|c| &c.inheritable)?;
    let ambient = get(|c| &c.ambient)?;
    // One capset for the three sets: set one at a time, the kernel's
    // effective ⊆ permitted check fails half-way whichever order is chosen.
    capset(&effective, &permitted, &inheritable)?;
    // The kernel only lets ambient hold what is both permitted and
    // inheritable; like runc, the rest of the ambient list is not raised
    // (granting less than asked never weakens the container).
    // One CLEAR_ALL instead of the caps crate's lower-each-capability loop.
    caps::clear(None, CapSet::Ambient).map_err(|source| CapabilityError::Apply {
        set: "ambient",
        wanted: Vec::new(),
        source,
    })?;
    for cap in ambient
        .into_iter()
        .filter(|c| permitted.contains(c) && inheritable.contains(c))
    {
        caps::raise(None, CapSet::Ambient, cap).map_err(|source| CapabilityError::Apply {
            set: "ambient",
            wanted: vec![cap.to_string()],
            source,
        })?;
    }
    Ok(())
}

fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0u64, |m, c| m | c.bitmask())
}

fn capset(
    effective: &CapsHashSet,
    permitted: &CapsHashSet,
    inheritable: &CapsHashSet,
) -> Result<(), CapabilityError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let (e, p, i) = (mask(effective), mask(permitted), mask(inheritable));
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [
        Data {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        Data {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: a v3 header and the two data words the v3 ABI requires.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if rc != 0 {
        let names = |s: &CapsHashSet| s.iter().map(|c| c.to_string()).collect();
        return Err(CapabilityError::Capset {
            effective: names(effective),
            permitted: names(permitted),
            inheritable: names(inheritable),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_parse_with_or_without_prefix() {
        assert_eq!(
            super::parse("CAP_KILL").unwrap(),
            caps::Capability::CAP_KILL
        );
        assert_eq!(
            super::parse("net_raw").unwrap(),
            caps::Capability::CAP_NET_RAW
        );
        assert!(super::parse("CAP_FLY").is_err());
    }
}
