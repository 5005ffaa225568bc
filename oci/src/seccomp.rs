//! Engines' seccomp profiles (docker's and containers-common's
//! `seccomp.json`) resolved into OCI `linux.seccomp`.
//!
//! That format is not OCI's: each rule may carry `includes`/`excludes` by
//! capability, architecture and minimum kernel, and the architectures come
//! from an `archMap`. An engine resolves it for one container's capability
//! set and the host's architecture; berth-imaged reuses this for its bundles.

use serde_json::{json, Value};

/// What is wrong with an engine profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("invalid seccomp profile: {0}")]
    Invalid(String),
}

/// The container's view: its capabilities, the Go name of the architecture
/// (`amd64`, `arm64`, …) and the running kernel's version.
pub struct Target<'a> {
    pub capabilities: &'a [String],
    pub arch: &'a str,
    pub kernel: (u32, u32),
}

impl Target<'_> {
    /// The SCMP name of the architecture.
    fn scmp_arch(&self) -> &'static str {
        match self.arch {
            "amd64" => "SCMP_ARCH_X86_64",
            "386" => "SCMP_ARCH_X86",
            "arm64" => "SCMP_ARCH_AARCH64",
            "arm" => "SCMP_ARCH_ARM",
            "ppc64le" => "SCMP_ARCH_PPC64LE",
            "s390x" => "SCMP_ARCH_S390X",
            "riscv64" => "SCMP_ARCH_RISCV64",
            _ => "SCMP_ARCH_NATIVE",
        }
    }
}

/// The running kernel's (major, minor).
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn parse_kernel(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split('.').map(|p| p.parse().ok());
    Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
}

fn applies(rule: &Value, target: &Target) -> Result<bool, ProfileError> {
    let includes = &rule["includes"];
    let excludes = &rule["excludes"];
    let has = |cap: &str| target.capabilities.iter().any(|c| c == cap);
    // Every included capability is needed; any excluded one rules it out.
    if !strings(&includes["caps"]).iter().all(|c| has(c)) {
        return Ok(false);
    }
    if strings(&excludes["caps"]).iter().any(|c| has(c)) {
        return Ok(false);
    }
    let arches = strings(&includes["arches"]);
    if !arches.is_empty() && !arches.contains(&target.arch) {
        return Ok(false);
    }
    if strings(&excludes["arches"]).contains(&target.arch) {
        return Ok(false);
    }
    if let Some(min) = includes["minKernel"].as_str() {
        let min = parse_kernel(min)
            .ok_or_else(|| ProfileError::Invalid(format!("invalid minKernel {min:?}")))?;
        if target.kernel < min {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Resolves an engine profile into the OCI `linux.seccomp` for `target`.
pub fn resolve(profile: &Value, target: &Target) -> Result<Value, ProfileError> {
    let Some(default_action) = profile["defaultAction"].as_str() else {
        return Err(ProfileError::Invalid(
            "the profile has no defaultAction".into(),
        ));
    };
    let native = target.scmp_arch();
    let mut architectures = vec![native.to_string()];
    for entry in profile["archMap"].as_array().into_iter().flatten() {
        if entry["architecture"].as_str() == Some(native) {
            architectures.extend(
                strings(&entry["subArchitectures"])
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
    }
    let Some(rules) = profile["syscalls"].as_array() else {
        return Err(ProfileError::Invalid(
            "the profile's syscalls is not a list".into(),
        ));
    };
    let mut syscalls = Vec::new();
    for rule in rules {
        if !applies(rule, target)? {
            continue;
        }
        let mut out = json!({
            "names": rule["names"],
            "action": rule["action"],
        });
        if let Some(errno) = rule["errnoRet"].as_u64() {
            out["errnoRet"] = json!(errno);
        }
        if let Some(args) = rule["args"].as_array().filter(|a| !a.is_empty()) {
            out["args"] = json!(args
                .iter()
                .map(|a| json!({
                    "index": a["index"], "value": a["value"],
                    "valueTwo": a["valueTwo"].as_u64().unwrap_or(0), "op": a["op"]
                }))
                .collect::<Vec<_>>());
        }
        syscalls.push(out);
    }
    let mut resolved = json!({
        "defaultAction": default_action,
        "architectures": architectures,
        "syscalls": syscalls,
    });
    if let Some(errno) = profile["defaultErrnoRet"].as_u64() {
        resolved["defaultErrnoRet"] = json!(errno);
    }
    if let Some(flags) = profile["flags"].as_array() {
        resolved["flags"] = json!(flags);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(caps: &[&str]) -> Vec<String> {
        caps.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn rules_follow_capabilities_arches_and_kernel() {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
                {"names": ["breakpoint"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm"]}},
                {"names": ["futex_waitv"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}}
            ]
        });
        let caps = target(&["CAP_KILL"]);
        let t = Target {
            capabilities: &caps,
            arch: "amd64",
            kernel: (6, 1),
        };
        let resolved = resolve(&profile, &t).unwrap();
        let names: Vec<String> = resolved["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}:{}",
                    r["names"][0].as_str().unwrap(),
                    r["action"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                "read:SCMP_ACT_ALLOW",
                "bpf:SCMP_ACT_ERRNO",
                "arch_prctl:SCMP_ACT_ALLOW"
            ]
        );
        assert_eq!(
            resolved["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
        );
        assert_eq!(resolved["defaultErrnoRet"], 38);
        let admin = target(&["CAP_SYS_ADMIN"]);
        let t = Target {
            capabilities: &admin,
            arch: "amd64",
            kernel: (6, 1),
        };
        let resolved = resolve(&profile, &t).unwrap();
        assert_eq!(resolved["syscalls"][1]["action"], "SCMP_ACT_ALLOW");
    }

    #[test]
    fn a_profile_without_a_syscall_list_is_refused() {
        let caps = target(&[]);
        let t = Target {
            capabilities: &caps,
            arch: "amd64",
            kernel: (6, 1),
        };
        let err = resolve(
            &json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}),
            &t,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a list"), "{err}");
    }
}
