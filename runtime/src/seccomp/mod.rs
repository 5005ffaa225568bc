//! `linux.seccomp`: compiling the spec's profile to BPF and installing it.
//!
//! Threat: a container calling syscalls its profile forbids (the kernel's
//! attack surface). The profile is compiled by the runtime before the
//! container exists, so a bad profile fails `create` cleanly, and installed
//! by the init (see `init.rs` for when).
//!
//! `seccompiler` builds one filter per action, so a profile with several
//! actions becomes a small stack of filters. The kernel runs every filter
//! of the stack and takes the most restrictive verdict, which gives the
//! profile's meaning exactly:
//! - one filter per non-default action: its rules → that action, else allow;
//! - one filter for the default action: every rule of the profile → allow,
//!   else the default action.
//!
//! A syscall named by a rule of one action and not by others gets that
//! action; one named by no rule gets the default. Where rules of different
//! actions match the same call, the most restrictive wins (libseccomp would
//! take the first unconditional rule instead).

mod table_x86_64;

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("invalid linux.seccomp: {0}")]
    Invalid(String),
    #[error("linux.seccomp: {0}")]
    Compile(String),
    #[error("cannot install the seccomp filter: {0}")]
    Install(std::io::Error),
}

fn invalid<T>(message: impl Into<String>) -> Result<T, SeccompError> {
    Err(SeccompError::Invalid(message.into()))
}

/// The OCI form of a profile (`linux.seccomp`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    pub default_errno_ret: Option<u32>,
    pub architectures: Vec<String>,
    pub flags: Vec<String>,
    pub listener_path: Option<String>,
    pub syscalls: Vec<SyscallRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SyscallRule {
    pub names: Vec<String>,
    pub action: String,
    pub errno_ret: Option<u32>,
    pub args: Vec<ArgRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ArgRule {
    pub index: u8,
    pub value: u64,
    pub value_two: u64,
    pub op: String,
}

/// A compiled profile: the filters in installation order and the flags.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    pub filters: Vec<BpfProgram>,
    pub flags: u32,
}

const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
const SECCOMP_FILTER_FLAG_LOG: u32 = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 4;

const KNOWN_ARCHES: &[&str] = &[
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// The number of `name` on x86_64, if it has one.
pub fn syscall_number(name: &str) -> Option<i64> {
    let table = table_x86_64::SYSCALLS;
    table
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| table[i].1)
}

/// An action with its data, ordered so that it can key a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Trap,
    Trace(u32),
    Log,
}

impl Action {
    fn parse(name: &str, errno: Option<u32>) -> Result<Action, SeccompError> {
        Ok(match name {
            "SCMP_ACT_ALLOW" => Action::Allow,
            "SCMP_ACT_ERRNO" => Action::Errno(errno.unwrap_or(libc::EPERM as u32)),
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
            "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
            "SCMP_ACT_TRAP" => Action::Trap,
            "SCMP_ACT_TRACE" => Action::Trace(errno.unwrap_or(libc::EPERM as u32)),
            "SCMP_ACT_LOG" => Action::Log,
            "SCMP_ACT_NOTIFY" => {
                return invalid(
                    "SCMP_ACT_NOTIFY (seccomp user notification) is not supported by berth yet",
                )
            }
            other => return invalid(format!("unknown action {other:?}")),
        })
    }

    fn to_seccompiler(self) -> SeccompAction {
        match self {
            Action::Allow => SeccompAction::Allow,
            Action::Errno(e) => SeccompAction::Errno(e),
            Action::KillThread => SeccompAction::KillThread,
            Action::KillProcess => SeccompAction::KillProcess,
            Action::Trap => SeccompAction::Trap,
            Action::Trace(e) => SeccompAction::Trace(e),
            Action::Log => SeccompAction::Log,
        }
    }
}

fn condition(arg: &ArgRule) -> Result<SeccompCondition, SeccompError> {
    if arg.index > 5 {
        return invalid(format!(
            "argument index {} is out of range (0-5)",
            arg.index
        ));
    }
    let op = match arg.op.as_str() {
        "SCMP_CMP_NE" => SeccompCmpOp::Ne,
        "SCMP_CMP_LT" => SeccompCmpOp::Lt,
        "SCMP_CMP_LE" => SeccompCmpOp::Le,
        "SCMP_CMP_EQ" => SeccompCmpOp::Eq,
        "SCMP_CMP_GE" => SeccompCmpOp::Ge,
        "SCMP_CMP_GT" => SeccompCmpOp::Gt,
        // libseccomp: (arg & value) == valueTwo.
        "SCMP_CMP_MASKED_EQ" => SeccompCmpOp::MaskedEq(arg.value),
        other => return invalid(format!("unknown operator {other:?}")),
    };
    let value = if arg.op == "SCMP_CMP_MASKED_EQ" {
        arg.value_two
    } else {
        arg.value
    };
    SeccompCondition::new(arg.index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| SeccompError::Compile(e.to_string()))
}

/// Parses `linux.seccomp` (kept as JSON in the spec so a bad profile gets
/// this module's precise error).
pub fn parse(value: &serde_json::Value) -> Result<Profile, SeccompError> {
    serde_json::from_value(value.clone()).map_err(|e| SeccompError::Invalid(e.to_string()))
}

/// Compiles a profile for x86_64.
pub fn compile(profile: &Profile) -> Result<Compiled, SeccompError> {
    if profile
        .listener_path
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        return invalid("listenerPath (seccomp user notification) is not supported by berth yet");
    }
    for arch in &profile.architectures {
        if !KNOWN_ARCHES.contains(&arch.as_str()) {
            return invalid(format!("unknown architecture {arch:?}"));
        }
    }
    let mut flags = 0;
    for flag in &profile.flags {
        flags |= match flag.as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => SECCOMP_FILTER_FLAG_TSYNC,
            "SECCOMP_FILTER_FLAG_LOG" => SECCOMP_FILTER_FLAG_LOG,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            other => return invalid(format!("unknown flag {other:?}")),
        };
    }
    let default = Action::parse(&profile.default_action, profile.default_errno_ret)?;
    // action → syscall → rules (an empty list matches unconditionally).
    let mut by_action: BTreeMap<Action, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    let mut unconditional: BTreeMap<Action, std::collections::BTreeSet<i64>> = BTreeMap::new();
    for rule in &profile.syscalls {
        let action = Action::parse(&rule.action, rule.errno_ret)?;
        // A rule that repeats the default changes nothing (runc drops it too).
        if action == default {
            continue;
        }
        let conditions = rule
            .args
            .iter()
            .map(condition)
            .collect::<Result<Vec<_>, _>>()?;
        // Several conditions on one argument cannot all hold; libseccomp and
        // runc read them as alternatives: one rule per condition.
        let mut indexes: Vec<u8> = rule.args.iter().map(|a| a.index).collect();
        indexes.sort_unstable();
        let alternatives: Vec<Vec<SeccompCondition>> = if indexes.windows(2).any(|w| w[0] == w[1]) {
            conditions.iter().map(|c| vec![c.clone()]).collect()
        } else {
            vec![conditions.clone()]
        };
        for name in &rule.names {
            // Names this architecture lacks are skipped, as libseccomp does.
            let Some(number) = syscall_number(name) else {
                continue;
            };
            let entry = by_action
                .entry(action)
                .or_default()
                .entry(number)
                .or_default();
            if conditions.is_empty() {
                unconditional.entry(action).or_default().insert(number);
            } else {
                for alternative in &alternatives {
                    entry.push(
                        SeccompRule::new(alternative.clone())
                            .map_err(|e| SeccompError::Compile(e.to_string()))?,
                    );
                }
            }
        }
    }
    for (action, numbers) in &unconditional {
        if let Some(rules) = by_action.get_mut(action) {
            for number in numbers {
                rules.insert(*number, Vec::new());
            }
        }
    }
    let arch = TargetArch::x86_64;
    let build = |rules: BTreeMap<i64, Vec<SeccompRule>>, mismatch: Action, matched: Action| {
        let filter = SeccompFilter::new(
            rules,
            mismatch.to_seccompiler(),
            matched.to_seccompiler(),
            arch,
        )
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
        BpfProgram::try_from(filter).map_err(|e| SeccompError::Compile(e.to_string()))
    };
    // seccompiler checks the architecture but not the x32 bit: x32 syscall
    // numbers (bit 30 set) match no rule. This guard answers them ENOSYS
    // first, so a deny-list cannot be bypassed through the x32 ABI.
    let mut filters = vec![x32_guard()];
    if default != Action::Allow {
        // Every syscall a rule names passes this one; the rest get the default.
        let mut all: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for rules in by_action.values() {
            for (number, conditions) in rules {
                match all.get_mut(number) {
                    None => {
                        all.insert(*number, conditions.clone());
                    }
                    // Unconditional already, or now: matches every call.
                    Some(slot) if slot.is_empty() => {}
                    Some(slot) if conditions.is_empty() => slot.clear(),
                    Some(slot) => slot.extend(conditions.iter().cloned()),
                }
            }
        }
        let mut program = unknown_syscall_stub();
        program.extend(build(all, default, Action::Allow)?);
        filters.push(program);
    }
    for (action, rules) in by_action {
        if action == Action::Allow || action == default || rules.is_empty() {
            continue;
        }
        filters.push(build(rules, Action::Allow, action)?);
    }
    Ok(Compiled { filters, flags })
}

/// Instructions put before the default action's filter: a syscall newer
/// than every one berth knows (so no profile can name it) fails with ENOSYS,
/// not the default errno, as runc's filters answer it: programs probe new
/// syscalls and fall back on ENOSYS only. The rest goes on to the filter.
fn unknown_syscall_stub() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const BPF_JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
    const BPF_RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let newest = table_x86_64::SYSCALLS
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0) as u32;
    let insn = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    // Jumps count from the next instruction; index 5 is the filter proper.
    vec![
        insn(BPF_LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        insn(BPF_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        insn(BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        insn(BPF_JGT_K, 0, 1, newest),
        insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]
}

/// A filter returning ENOSYS for x32 syscall numbers and allowing the rest.
fn x32_guard() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let insn = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    vec![
        insn(BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        insn(BPF_JSET_K, 0, 1, 0x4000_0000),
        insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
}

/// Installs the filters on the calling thread.
pub fn install(compiled: &Compiled) -> Result<(), SeccompError> {
    for program in &compiled.filters {
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `fprog` points to a BPF program that outlives the call;
        // seccompiler's sock_filter has the kernel's layout.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                1, // SECCOMP_SET_MODE_FILTER
                compiled.flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(SeccompError::Install(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_default_filter_starts_with_the_unknown_syscall_stub() {
        let profile: Profile = serde_json::from_value(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]
        }))
        .unwrap();
        let compiled = compile(&profile).unwrap();
        let stub = unknown_syscall_stub();
        let default = &compiled.filters[1];
        assert_eq!(default[..stub.len()], stub[..]);
        // The filter proper loads what it tests first (the stub leaves
        // the syscall number in the accumulator).
        assert_eq!(default[stub.len()].code, 0x20);
    }

    fn profile(value: serde_json::Value) -> Result<Compiled, SeccompError> {
        compile(&parse(&value)?)
    }

    #[test]
    fn the_table_knows_common_syscalls() {
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("mkdirat"), Some(258));
        assert_eq!(syscall_number("arm_fadvise64_64"), None);
    }

    #[test]
    fn one_filter_per_action_plus_the_default() {
        let compiled = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
                {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_ALLOW"}
            ]
        }))
        .unwrap();
        // x32 guard, default filter, EACCES filter, EPERM filter.
        assert_eq!(compiled.filters.len(), 4);
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        let cases = [
            (json!({"defaultAction": "SCMP_ACT_FLY"}), "unknown action"),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}),
                "unknown architecture",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]}),
                "unknown operator",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {"names": ["read"]}}),
                "invalid type",
            ),
            (json!({"defaultAction": "SCMP_ACT_NOTIFY"}), "not supported"),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]}),
                "unknown flag",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
                "out of range",
            ),
        ];
        for (value, words) in cases {
            let err = profile(value.clone())
                .expect_err(&value.to_string())
                .to_string();
            assert!(err.contains(words), "{value}: {err}");
        }
    }
}
