//! `linux.seccomp`: compiling the spec's profile to BPF and installing it.
//!
//! Threat: a container calling syscalls its profile forbids (the kernel's
//! attack surface). The profile is compiled by the runtime before the
//! container exists, so a bad profile fails `create` cleanly, and installed
//! by the init (see `init.rs` for when).
//!
//! The whole profile is one filter ([`bpf`]): for each syscall, its rules
//! tested in order, the first that holds giving its action, none the
//! default. Where rules of different actions name one syscall, they are
//! first reduced as libseccomp reduces them (`reduce`: the first
//! unconditional rule decides, an earlier rule covers a narrower later one,
//! a broader later one of another action is refused) and narrowed where
//! libseccomp's tree would test one before the other (`order_overlaps`), so
//! the verdict is libseccomp's (runc's). Rules that still overlap are tested
//! most restrictive action first, which is the verdict the kernel would
//! give a stack of one filter per action.
//!
//! A notifying profile (`SCMP_ACT_NOTIFY`) adds a second filter, installed
//! with `SECCOMP_FILTER_FLAG_NEW_LISTENER`; `notify` hands its listener on.

mod abi;
pub mod bpf;
pub mod cache;
pub mod notify;
mod table_i386;
mod table_x32;
mod table_x86_64;

use abi::Abi;

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

use bpf::{Check, Compare, Decision, Program, Rule, Section};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("invalid linux.seccomp: {0}")]
    Invalid(String),
    #[error("linux.seccomp: {0}")]
    Compile(String),
    #[error("cannot install the seccomp filter: {0}")]
    Install(std::io::Error),
    #[error("seccomp agent at {path}: {source}")]
    Agent {
        path: PathBuf,
        source: std::io::Error,
    },
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
    pub listener_metadata: Option<String>,
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

/// A compiled profile: its filter, the flags to install it with, and the
/// filter of its notifying rules.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    pub filter: Program,
    pub flags: u32,
    /// The filter whose rules ask the agent (`SCMP_ACT_NOTIFY`), installed
    /// last and with `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
    pub notify: Option<Program>,
    /// Where the listener goes (`listenerPath`, `listenerMetadata`).
    pub listener: Option<notify::Listener>,
    /// Whether every `execveat`, `fcntl` and `prctl` passes, whatever its
    /// arguments: the calls the init's sealed launcher makes under the
    /// filters besides those the init itself makes there (with
    /// `noNewPrivileges` the filter comes after the init's last `prctl`;
    /// see `sealed_init`).
    pub launcher_passes: bool,
}

const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
const SECCOMP_FILTER_FLAG_LOG: u32 = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 4;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 8;
/// With TSYNC, NEW_LISTENER is refused unless a failed sync reports ESRCH.
const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: u32 = 16;
/// The longest filter the kernel loads.
const BPF_MAXINSNS: usize = 4096;

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
    Abi::X86_64.number(name)
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
    /// `SCMP_ACT_NOTIFY`: the call waits for the agent's answer.
    Notify,
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
            "SCMP_ACT_NOTIFY" => Action::Notify,
            other => return invalid(format!("unknown action {other:?}")),
        })
    }

    /// The filter's return value.
    fn verdict(self) -> u32 {
        match self {
            Action::Allow => bpf::RET_ALLOW,
            Action::Errno(e) => bpf::RET_ERRNO | (e & 0xffff),
            Action::KillThread => bpf::RET_KILL_THREAD,
            Action::KillProcess => bpf::RET_KILL_PROCESS,
            Action::Trap => bpf::RET_TRAP,
            Action::Trace(e) => bpf::RET_TRACE | (e & 0xffff),
            Action::Log => bpf::RET_LOG,
            Action::Notify => bpf::RET_USER_NOTIF,
        }
    }

    /// The kernel's order when several filters answer one call: the most
    /// restrictive action first (lowest as a signed number); of two equal
    /// actions with different data, the later filter's (one filter per
    /// action, installed in `Action` order, is what berth built before).
    fn precedence(self) -> (i32, std::cmp::Reverse<u32>) {
        let verdict = self.verdict();
        (
            (verdict & 0xffff_0000) as i32,
            std::cmp::Reverse(verdict & 0xffff),
        )
    }
}

fn condition(arg: &ArgRule) -> Result<Check, SeccompError> {
    if arg.index > 5 {
        return invalid(format!(
            "argument index {} is out of range (0-5)",
            arg.index
        ));
    }
    let (compare, value) = match arg.op.as_str() {
        "SCMP_CMP_NE" => (Compare::Ne, arg.value),
        "SCMP_CMP_LT" => (Compare::Lt, arg.value),
        "SCMP_CMP_LE" => (Compare::Le, arg.value),
        "SCMP_CMP_EQ" => (Compare::Eq, arg.value),
        "SCMP_CMP_GE" => (Compare::Ge, arg.value),
        "SCMP_CMP_GT" => (Compare::Gt, arg.value),
        // libseccomp: (arg & value) == (valueTwo & value).
        "SCMP_CMP_MASKED_EQ" => (Compare::MaskedEq(arg.value), arg.value_two & arg.value),
        other => return invalid(format!("unknown operator {other:?}")),
    };
    Ok(Check {
        index: arg.index,
        compare,
        value,
    })
}

/// Parses `linux.seccomp` (kept as JSON in the spec so a bad profile gets
/// this module's precise error).
pub fn parse(value: &serde_json::Value) -> Result<Profile, SeccompError> {
    use serde::Deserialize;
    Profile::deserialize(value).map_err(|e| SeccompError::Invalid(e.to_string()))
}

/// Compiles a profile for x86_64.
pub fn compile(profile: &Profile) -> Result<Compiled, SeccompError> {
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
    check_notify(profile, default)?;
    let mut main = BTreeMap::new();
    let mut notifying = BTreeMap::new();
    for abi in Abi::listed(&profile.architectures) {
        let mut section = Section {
            default: default.verdict(),
            // A syscall newer than every one the profile names fails with
            // ENOSYS, not the default errno, as runc's filters answer it:
            // programs probe new syscalls and fall back on ENOSYS only.
            // Not where the default lets calls through (runc's "allow"
            // actions: allow, log, trace).
            enosys_above: match default {
                Action::Allow | Action::Log | Action::Trace(_) => None,
                _ => largest_named(profile, abi),
            },
            narrow_arguments: abi != Abi::X86_64,
            ..Section::default()
        };
        let mut notify = Section {
            default: bpf::RET_ALLOW,
            narrow_arguments: abi != Abi::X86_64,
            ..Section::default()
        };
        for (number, mut entries) in rules_by_syscall(profile, default, abi)? {
            let number = number as u32;
            entries.sort_by_key(|e| e.action.precedence());
            let asks_agent = |e: &&Entry| e.action == Action::Notify;
            if entries.iter().any(|e| asks_agent(&e)) {
                // The agent's filter says USER_NOTIF for these; the main
                // one lets them through to it.
                let notified = entries.iter().filter(asks_agent).cloned().collect();
                notify.decisions.insert(number, decision(notified)?);
            }
            for entry in &mut entries {
                if entry.action == Action::Notify {
                    entry.action = Action::Allow;
                }
            }
            section.decisions.insert(number, decision(entries)?);
        }
        main.insert(abi, section);
        if !notify.decisions.is_empty() {
            notifying.insert(abi, notify);
        }
    }
    let program = |sections: &BTreeMap<Abi, Section>, elsewhere| {
        bpf::program(
            sections.get(&Abi::X86_64),
            sections.get(&Abi::I386),
            sections.get(&Abi::X32),
            elsewhere,
        )
        .map_err(|e| SeccompError::Compile(e.to_string()))
        .and_then(|program| {
            if program.len() > BPF_MAXINSNS {
                return Err(SeccompError::Compile(format!(
                    "the profile needs {} BPF instructions; the kernel takes {BPF_MAXINSNS}",
                    program.len()
                )));
            }
            Ok(program)
        })
    };
    // A call of an ABI the profile does not list kills the thread
    // (libseccomp's default "bad architecture" action); the agent's filter
    // leaves those to the main one.
    let filter = program(&main, bpf::RET_KILL_THREAD)?;
    let notify = if notifying.is_empty() {
        None
    } else {
        Some(program(&notifying, bpf::RET_ALLOW)?)
    };
    let listener = notify.as_ref().and_then(|_| {
        Some(notify::Listener {
            path: PathBuf::from(profile.listener_path.as_deref()?),
            metadata: profile.listener_metadata.clone().unwrap_or_default(),
        })
    });
    Ok(Compiled {
        filter,
        flags,
        notify,
        listener,
        launcher_passes: ["execveat", "fcntl", "prctl"]
            .iter()
            .all(|name| always_allowed(profile, default, name)),
    })
}

/// Whether the profile lets every call of `name` through, on every ABI:
/// each rule naming it allows, and one does so unconditionally unless the
/// default allows. Anything else (a condition, a log, a notification) is
/// a no: callers use it to choose the plainest path, not to predict a
/// verdict.
fn always_allowed(profile: &Profile, default: Action, name: &str) -> bool {
    let rules: Vec<&SyscallRule> = profile
        .syscalls
        .iter()
        .filter(|r| r.names.iter().any(|n| n == name))
        .collect();
    let allows =
        |r: &SyscallRule| Action::parse(&r.action, r.errno_ret).is_ok_and(|a| a == Action::Allow);
    rules.iter().all(|r| allows(r))
        && (default == Action::Allow || rules.iter().any(|r| r.args.is_empty()))
}

/// A syscall's reduced rules (one unconditional rule, or conditional ones
/// in the order they are tested) as the filter decides them.
fn decision(entries: Vec<Entry>) -> Result<Decision, SeccompError> {
    if let [only] = entries.as_slice() {
        if only.conditions.is_empty() {
            return Ok(Decision::Always(only.action.verdict()));
        }
    }
    let rules = entries
        .into_iter()
        .map(|entry| Rule {
            checks: entry.conditions,
            verdict: entry.action.verdict(),
        })
        .collect();
    Ok(Decision::Rules(rules))
}

/// syscall → its rules for one ABI, reduced as libseccomp keeps them (see
/// `reduce`); rules that repeat the default are dropped.
fn rules_by_syscall(
    profile: &Profile,
    default: Action,
    abi: Abi,
) -> Result<BTreeMap<i64, Vec<Entry>>, SeccompError> {
    // Each syscall's rules in the profile's order, as runc adds them to
    // libseccomp; then reduced to what libseccomp keeps (see `reduce`).
    let mut by_syscall: BTreeMap<i64, (&str, Vec<Entry>)> = BTreeMap::new();
    for rule in &profile.syscalls {
        let action = Action::parse(&rule.action, rule.errno_ret)?;
        // A rule that repeats the default changes nothing (runc drops it too).
        if action == default {
            continue;
        }
        let checks = rule
            .args
            .iter()
            .map(condition)
            .collect::<Result<Vec<_>, _>>()?;
        // Several conditions on one argument cannot all hold; runc reads
        // them as alternatives: one rule per condition.
        let mut indexes: Vec<u8> = checks.iter().map(|c| c.index).collect();
        indexes.sort_unstable();
        let alternatives: Vec<Vec<Check>> = if indexes.windows(2).any(|w| w[0] == w[1]) {
            checks.iter().map(|c| vec![*c]).collect()
        } else {
            vec![checks]
        };
        // Then as libseccomp keeps each for this ABI.
        let alternatives: Vec<Vec<Check>> = alternatives
            .into_iter()
            .map(|checks| abi_checks(abi, checks))
            .collect();
        for name in &rule.names {
            if let Some((number, call)) = abi.multiplexed(name) {
                // The call's number is the multiplexer's first argument; the
                // rule's checks of the others stay, on the multiplexer's
                // own arguments, as libseccomp keeps them.
                let call = Check {
                    index: 0,
                    compare: Compare::Eq,
                    value: call,
                };
                let entries = &mut by_syscall.entry(number).or_insert((name, Vec::new())).1;
                for alternative in &alternatives {
                    let mut conditions = vec![call];
                    conditions.extend(alternative.iter().filter(|c| c.index != 0));
                    entries.push(Entry { action, conditions });
                }
            }
            // Names this ABI lacks are skipped, as libseccomp does.
            let Some(number) = abi.number(name) else {
                continue;
            };
            let entries = &mut by_syscall.entry(number).or_insert((name, Vec::new())).1;
            for alternative in &alternatives {
                entries.push(Entry {
                    action,
                    conditions: alternative.clone(),
                });
            }
        }
    }
    by_syscall
        .into_iter()
        .map(|(number, (name, entries))| Ok((number, reduce(name, entries)?)))
        .collect()
}

/// A rule's checks as libseccomp keeps them for `abi`: on a 32-bit ABI
/// (i386, x32) the values and masks are cut to their low halves, and a
/// masked comparison whose mask is then zero, which always holds, is
/// dropped (a rule left without checks is unconditional).
fn abi_checks(abi: Abi, checks: Vec<Check>) -> Vec<Check> {
    let narrow = abi != Abi::X86_64;
    checks
        .into_iter()
        .map(|mut check| {
            if narrow {
                check.value &= 0xffff_ffff;
                if let Compare::MaskedEq(mask) = &mut check.compare {
                    *mask &= 0xffff_ffff;
                }
            }
            check
        })
        .filter(|check| check.compare != Compare::MaskedEq(0))
        .collect()
}

/// The largest syscall number of `abi` the profile names (any action), as
/// runc finds it for its ENOSYS stub.
fn largest_named(profile: &Profile, abi: Abi) -> Option<u32> {
    profile
        .syscalls
        .iter()
        .flat_map(|rule| &rule.names)
        .filter_map(|name| abi.number(name))
        .max()
        .map(|number| number as u32)
}

/// The check that holds exactly when `check` does not, where one exists.
fn negated(check: &Check) -> Option<Check> {
    let compare = match check.compare {
        Compare::Eq => Compare::Ne,
        Compare::Ne => Compare::Eq,
        Compare::Lt => Compare::Ge,
        Compare::Ge => Compare::Lt,
        Compare::Le => Compare::Gt,
        Compare::Gt => Compare::Le,
        Compare::MaskedEq(_) => return None,
    };
    Some(Check { compare, ..*check })
}

/// One rule of one syscall: an action and the conditions that must all hold.
#[derive(Debug, Clone)]
struct Entry {
    action: Action,
    conditions: Vec<Check>,
}

impl Entry {
    /// Whether every call this entry matches also matches `other`'s
    /// conditions because `other`'s are a part of this one's.
    fn narrower_than(&self, other: &Entry) -> bool {
        other.conditions.iter().all(|c| self.conditions.contains(c))
    }
}

/// The rules of one syscall, in the profile's order, reduced to those
/// libseccomp (2.5, runc's and crun's) keeps when runc adds them one by one:
/// - an unconditional rule makes the first one the syscall's only rule
///   (later unconditional rules of other actions change nothing);
/// - a rule whose conditions include all of an earlier rule's is covered
///   by that earlier rule, whatever its action;
/// - a rule whose conditions are all among an earlier rule's of another
///   action is refused (libseccomp answers EEXIST; runc then fails).
///
/// Rules that remain and overlap otherwise are ordered as libseccomp tests
/// them (`order_overlaps`).
fn reduce(name: &str, entries: Vec<Entry>) -> Result<Vec<Entry>, SeccompError> {
    if let Some(first) = entries.iter().find(|e| e.conditions.is_empty()) {
        return Ok(vec![first.clone()]);
    }
    let mut kept: Vec<Entry> = Vec::new();
    for entry in entries {
        // Checked first: the same conditions with another action are refused.
        if let Some(earlier) = kept
            .iter()
            .find(|k| k.action != entry.action && k.narrower_than(&entry))
        {
            return invalid(format!(
                "syscall {name}: a rule of action {:?} matches calls an earlier rule of action {:?} \
                 already decides (libseccomp refuses it: file exists)",
                entry.action, earlier.action
            ));
        }
        if kept.iter().any(|k| entry.narrower_than(k)) {
            continue;
        }
        kept.push(entry);
    }
    Ok(order_overlaps(kept))
}

/// libseccomp tests a syscall's rules as a tree: each rule's conditions in
/// argument order, and where two rules part on different arguments, the
/// higher argument first; the first rule that holds decides. Of two rules
/// of different actions, the one tested second is therefore narrowed here
/// to the calls where the first does not hold (its missing conditions
/// negated, one alternative each), so that the kernel's precedence across
/// berth's filters never has to choose. Rules that part on the same
/// argument (`a0 > 10` beside `a0 == 12`), or whose first-tested rule has a
/// condition without a negation (`SCMP_CMP_MASKED_EQ`), stay as they are.
fn order_overlaps(kept: Vec<Entry>) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, second) in kept.iter().enumerate() {
        let mut pieces = vec![second.clone()];
        for (j, first) in kept.iter().enumerate() {
            if i == j || first.action == second.action || !tested_before(first, second) {
                continue;
            }
            let negations: Option<Vec<Check>> = first
                .conditions
                .iter()
                .filter(|c| !second.conditions.contains(c))
                .map(negated)
                .collect();
            let Some(negations) = negations else {
                continue;
            };
            pieces = pieces
                .into_iter()
                .flat_map(|piece| {
                    negations.iter().map(move |n| {
                        let mut narrowed = piece.clone();
                        narrowed.conditions.push(*n);
                        narrowed
                    })
                })
                .collect();
        }
        out.extend(pieces);
    }
    out
}

/// Whether libseccomp's tree tests `a` before `b`: at the first condition
/// (in argument order) where they differ, `a` tests a higher argument.
fn tested_before(a: &Entry, b: &Entry) -> bool {
    let sorted = |e: &Entry| {
        let mut conditions = e.conditions.clone();
        conditions.sort_by_key(|c| c.index);
        conditions
    };
    let (a, b) = (sorted(a), sorted(b));
    a.iter()
        .zip(&b)
        .find(|(x, y)| x != y)
        .is_some_and(|(x, y)| x.index > y.index)
}

/// What runc refuses of a profile that asks the agent. The runtime learns
/// the listener only after the filter is on; a notifying `write` (or a
/// notifying default, which covers it) would block the very message that
/// hands the listener over, and the container would hang.
fn check_notify(profile: &Profile, default: Action) -> Result<(), SeccompError> {
    if default == Action::Notify {
        return invalid("SCMP_ACT_NOTIFY cannot be used as default action");
    }
    let notifying = profile
        .syscalls
        .iter()
        .filter(|r| r.action == "SCMP_ACT_NOTIFY");
    let mut any = false;
    for rule in notifying {
        any = true;
        if rule.names.iter().any(|n| n == "write") {
            return invalid("SCMP_ACT_NOTIFY cannot be used for the write syscall");
        }
    }
    if any && profile.listener_path.as_deref().unwrap_or("").is_empty() {
        return invalid("SCMP_ACT_NOTIFY needs listenerPath (the seccomp agent's socket)");
    }
    Ok(())
}

/// Installs the filters on the calling thread; returns the listener when
/// the profile asks an agent (the caller hands it over, see `notify`).
pub fn install(compiled: &Compiled) -> Result<Option<OwnedFd>, SeccompError> {
    load(&compiled.filter, compiled.flags)?;
    let Some(program) = &compiled.notify else {
        return Ok(None);
    };
    let mut flags = compiled.flags | SECCOMP_FILTER_FLAG_NEW_LISTENER;
    if flags & SECCOMP_FILTER_FLAG_TSYNC != 0 {
        flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
    }
    let fd = load(program, flags)?;
    // SAFETY: with NEW_LISTENER the kernel returns a new descriptor
    // (close-on-exec) that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn load(program: &Program, flags: u32) -> Result<i32, SeccompError> {
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points to a BPF program that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1, // SECCOMP_SET_MODE_FILTER
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(SeccompError::Install(std::io::Error::last_os_error()));
    }
    Ok(rc as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile(value: serde_json::Value) -> Result<Compiled, SeccompError> {
        compile(&parse(&value)?)
    }

    #[test]
    fn the_launcher_passes_only_where_execveat_fcntl_and_prctl_always_do() {
        let with = |default: &str, syscalls: serde_json::Value| {
            profile(json!({"defaultAction": default, "syscalls": syscalls}))
                .unwrap()
                .launcher_passes
        };
        let allow = |names: &[&str]| json!({"names": names, "action": "SCMP_ACT_ALLOW"});
        assert!(with("SCMP_ACT_ALLOW", json!([])));
        assert!(with(
            "SCMP_ACT_ERRNO",
            json!([allow(&["execveat", "fcntl", "prctl", "read"])])
        ));
        // Not named where the default denies.
        assert!(!with("SCMP_ACT_ERRNO", json!([allow(&["fcntl"])])));
        assert!(!with(
            "SCMP_ACT_ERRNO",
            json!([allow(&["execveat", "fcntl", "read"])])
        ));
        // Allowed under a condition only.
        let conditional = json!({"names": ["fcntl"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]});
        assert!(!with(
            "SCMP_ACT_ERRNO",
            json!([allow(&["execveat"]), conditional])
        ));
        // Denied, logged or notified by some rule.
        for action in ["SCMP_ACT_ERRNO", "SCMP_ACT_LOG", "SCMP_ACT_KILL"] {
            let rule = json!({"names": ["execveat"], "action": action});
            assert!(!with("SCMP_ACT_ALLOW", json!([rule])), "{action}");
        }
    }

    #[test]
    fn the_table_knows_common_syscalls() {
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("mkdirat"), Some(258));
        assert_eq!(syscall_number("arm_fadvise64_64"), None);
    }

    #[test]
    fn one_filter_decides_every_action_and_the_default() {
        let compiled = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 95,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
                {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_ALLOW"}
            ]
        }))
        .unwrap();
        assert!(compiled.notify.is_none());
        let call =
            |nr: i64, arch, a1| bpf::run(&compiled.filter, nr as u32, arch, [0, a1, 0, 0, 0, 0]);
        let x86_64 = bpf::AUDIT_ARCH_X86_64;
        assert_eq!(call(libc::SYS_read, x86_64, 0), bpf::RET_ALLOW);
        assert_eq!(call(libc::SYS_mkdir, x86_64, 0), bpf::RET_ERRNO | 13);
        assert_eq!(call(libc::SYS_kill, x86_64, 10), bpf::RET_ERRNO | 1);
        assert_eq!(call(libc::SYS_kill, x86_64, 9), bpf::RET_ERRNO | 95);
        assert_eq!(call(libc::SYS_getpid, x86_64, 0), bpf::RET_ERRNO | 95);
        // Newer than every syscall the profile names (mkdir, 83): ENOSYS, as
        // runc answers; older unnamed ones the default.
        let enosys = bpf::RET_ERRNO | libc::ENOSYS as u32;
        assert_eq!(call(libc::SYS_mkdir + 1, x86_64, 0), enosys);
        assert_eq!(call(libc::SYS_mkdir - 1, x86_64, 0), bpf::RET_ERRNO | 95);
        // i386's mkdir is 39.
        assert_eq!(call(40, bpf::AUDIT_ARCH_I386, 0), enosys);
        // i386's read is 3; x32 is not listed.
        assert_eq!(call(3, bpf::AUDIT_ARCH_I386, 0), bpf::RET_ALLOW);
        let x32_read = i64::from(bpf::X32_SYSCALL_BIT);
        assert_eq!(call(x32_read, x86_64, 0), bpf::RET_KILL_THREAD);
    }

    #[test]
    fn the_agents_filter_notifies_and_the_main_one_lets_those_calls_through() {
        let compiled = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/agent.sock",
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"}
            ]
        }))
        .unwrap();
        let notify = compiled.notify.as_ref().unwrap();
        let x86_64 = bpf::AUDIT_ARCH_X86_64;
        let mkdir = libc::SYS_mkdir as u32;
        assert_eq!(
            bpf::run(&compiled.filter, mkdir, x86_64, [0; 6]),
            bpf::RET_ALLOW
        );
        assert_eq!(bpf::run(notify, mkdir, x86_64, [0; 6]), bpf::RET_USER_NOTIF);
        assert_eq!(bpf::run(notify, 0, x86_64, [0; 6]), bpf::RET_ALLOW);
        assert_eq!(
            compiled.listener.unwrap().path,
            PathBuf::from("/run/agent.sock")
        );
    }

    #[test]
    fn a_check_that_always_holds_makes_its_rule_unconditional_as_in_libseccomp() {
        // (a0 & 0) == 0 everywhere; (a0 & 1<<32) == 0 too where arguments
        // are 32 bits (i386). The first rule then decides, as libseccomp's.
        let compiled = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 0, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["getpid"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 0, "value": 4294967296u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["getppid", "getpid"], "action": "SCMP_ACT_LOG"}
            ]
        }))
        .unwrap();
        let call = |nr: u32, arch| bpf::run(&compiled.filter, nr, arch, [7, 0, 0, 0, 0, 0]);
        let (x86_64, i386) = (bpf::AUDIT_ARCH_X86_64, bpf::AUDIT_ARCH_I386);
        assert_eq!(
            call(libc::SYS_getppid as u32, x86_64),
            bpf::RET_KILL_PROCESS
        );
        assert_eq!(call(64, i386), bpf::RET_KILL_PROCESS); // getppid
                                                           // On x86_64 getpid's mask keeps its high bit: a real condition, so
                                                           // the unconditional LOG rule decides (libseccomp's reading).
        assert_eq!(call(libc::SYS_getpid as u32, x86_64), bpf::RET_LOG);
        assert_eq!(call(20, i386), bpf::RET_KILL_PROCESS); // getpid
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
            (
                json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
                "SCMP_ACT_NOTIFY cannot be used as default action",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/a.sock",
                "syscalls": [{"names": ["mkdir", "write"], "action": "SCMP_ACT_NOTIFY"}]}),
                "SCMP_ACT_NOTIFY cannot be used for the write syscall",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
                "needs listenerPath",
            ),
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
