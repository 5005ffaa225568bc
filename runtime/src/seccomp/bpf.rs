//! The classic BPF of a profile: one program that decides every call of
//! every ABI, found by a binary search on the syscall number.
//!
//! Why not a list of comparisons, one per syscall (what seccompiler and a
//! plain libseccomp filter emit): the kernel runs the filter on every call
//! the container makes, and when a filter is attached it emulates it once
//! for every syscall number of each native ABI to learn which calls it
//! always allows (`seccomp_cache_prepare`). With a few hundred syscalls in a
//! list, that is a few hundred comparisons per number: about a millisecond
//! per filter on a small VM, paid by every container start. A search over
//! the number line costs about ten.
//!
//! The shape, for the calls of one architecture (`Program::new`):
//!
//! ```text
//! ld arch → x86_64? → ld nr → ≥ x32 bit (but not -1)? → x32 section | x86_64 section
//!         → i386?   → ld nr → i386 section
//!         → otherwise the verdict for architectures no section decides
//! section: nr above a bound → ENOSYS (when asked), then the search:
//!          jge pivot → right half | left half … → a verdict, or the
//!          syscall's rules in order (their argument checks; the first
//!          that holds returns its verdict), then the section's default
//! ```
//!
//! Every block is built before the jump over it, so every offset is known
//! when written; a conditional jump reaches at most 255 instructions ahead,
//! so longer ones go through an unconditional `ja`.

use std::collections::BTreeMap;

use libc::sock_filter;

/// A classic BPF program, in the kernel's layout.
pub type Program = Vec<sock_filter>;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
#[cfg(test)]
const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Offsets in `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// The bit x32 numbers carry.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

/// The farthest a conditional jump reaches.
const SHORT: usize = u8::MAX as usize;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn ret(verdict: u32) -> sock_filter {
    stmt(RET_K, verdict)
}

/// How one argument is compared with a value (64 bits, unsigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(argument & mask) == value`.
    MaskedEq(u64),
}

/// One argument check of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// 0 to 5.
    pub index: u8,
    pub compare: Compare,
    pub value: u64,
}

/// A rule of one syscall: when all checks hold, the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub checks: Vec<Check>,
    pub verdict: u32,
}

/// What a syscall gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Always(u32),
    /// The rules in the order they are tested; none holding gives the
    /// section's default.
    Rules(Vec<Rule>),
}

/// The calls of one ABI.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// By syscall number (with the x32 bit for x32); other numbers get
    /// `default`.
    pub decisions: BTreeMap<u32, Decision>,
    pub default: u32,
    /// Numbers above it fail with ENOSYS.
    pub enosys_above: Option<u32>,
    /// An ABI of 32-bit arguments (i386, x32): libseccomp (runc's, crun's)
    /// compares only their low halves with the value's, so berth does too.
    /// On i386 the high half is always zero; on x32 it is whatever the
    /// 64-bit register held.
    pub narrow_arguments: bool,
}

/// A branch of the program that cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("a rule of syscall {0} has too many argument checks for one BPF jump")]
pub struct TooLong(pub u32);

/// One program for the sections given; an ABI without one (and any other
/// architecture) gets `elsewhere`.
pub fn program(
    x86_64: Option<&Section>,
    i386: Option<&Section>,
    x32: Option<&Section>,
    elsewhere: u32,
) -> Result<Program, TooLong> {
    // Each section runs with the number loaded.
    let with_number = |section: Option<&Section>| -> Result<Program, TooLong> {
        Ok(match section {
            Some(section) => section.code()?,
            None => vec![ret(elsewhere)],
        })
    };
    let (x86_64, x32) = (with_number(x86_64)?, with_number(x32)?);
    // As libseccomp tells them apart: x32 from the bit up, except -1
    // (the number a tracer sets to skip a call).
    let mut native = vec![
        stmt(LD_W_ABS, OFFSET_NR),
        jump(JEQ_K, u32::MAX, 2, 0),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(JA, x86_64.len() as u32),
    ];
    native.extend(x86_64);
    native.extend(x32);
    let mut compat = vec![stmt(LD_W_ABS, OFFSET_NR)];
    compat.extend(with_number(i386)?);

    // Jumps count from the next instruction.
    let mut out = vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 0, 1),
        stmt(JA, 3),
        jump(JEQ_K, AUDIT_ARCH_I386, 0, 1),
        stmt(JA, 1 + native.len() as u32),
        ret(elsewhere),
    ];
    out.extend(native);
    out.extend(compat);
    Ok(out)
}

impl Section {
    /// The section's code, which expects the syscall number loaded.
    fn code(&self) -> Result<Program, TooLong> {
        let mut out = Vec::new();
        if let Some(newest) = self.enosys_above {
            out.push(jump(JGT_K, newest, 0, 1));
            out.push(ret(RET_ERRNO | libc::ENOSYS as u32));
        }
        search(&self.leaves()?, &mut out);
        Ok(out)
    }

    /// The number line cut where the decision changes: each piece's first
    /// number and its code (a lone `ret`, or one syscall's rules).
    fn leaves(&self) -> Result<Vec<(u32, Program)>, TooLong> {
        let mut leaves: Vec<(u32, Program)> = Vec::new();
        let mut push = |start: u32, code: Program| {
            // A verdict equal to the piece before it extends that piece.
            let same = code.len() == 1
                && leaves
                    .last()
                    .is_some_and(|(_, last)| last.len() == 1 && last[0].k == code[0].k);
            if !same {
                leaves.push((start, code));
            }
        };
        let mut next = 0u32;
        for (&number, decision) in &self.decisions {
            if number > next {
                push(next, vec![ret(self.default)]);
            }
            push(
                number,
                decision.code(number, self.default, self.narrow_arguments)?,
            );
            next = number.saturating_add(1);
        }
        if self.decisions.last_key_value().map(|(n, _)| *n) != Some(u32::MAX) {
            push(next, vec![ret(self.default)]);
        }
        Ok(leaves)
    }
}

/// The binary search over `leaves` (sorted by first number, the first at
/// the lowest number the section can see), appended to `out`.
fn search(leaves: &[(u32, Program)], out: &mut Program) {
    if let [(_, code)] = leaves {
        out.extend_from_slice(code);
        return;
    }
    let (left, right) = leaves.split_at(leaves.len() / 2);
    let (pivot, skip) = (right[0].0, searched_len(left));
    if skip <= SHORT {
        out.push(jump(JGE_K, pivot, skip as u8, 0));
    } else {
        out.push(jump(JGE_K, pivot, 0, 1));
        out.push(stmt(JA, skip as u32));
    }
    search(left, out);
    search(right, out);
}

/// How long `search` makes the code of `leaves`.
fn searched_len(leaves: &[(u32, Program)]) -> usize {
    if let [(_, code)] = leaves {
        return code.len();
    }
    let (left, right) = leaves.split_at(leaves.len() / 2);
    let left_len = searched_len(left);
    let jump_len = if left_len <= SHORT { 1 } else { 2 };
    jump_len + left_len + searched_len(right)
}

impl Decision {
    fn code(&self, number: u32, default: u32, narrow: bool) -> Result<Program, TooLong> {
        let rules = match self {
            Decision::Always(verdict) => return Ok(vec![ret(*verdict)]),
            Decision::Rules(rules) => rules,
        };
        let mut out = Vec::new();
        for rule in rules {
            out.extend(rule.code(narrow).ok_or(TooLong(number))?);
        }
        out.push(ret(default));
        Ok(out)
    }
}

/// Where a check's jump goes: on to the next instruction's offset, or to
/// the end of its rule (a check that fails).
#[derive(Clone, Copy)]
enum To {
    Skip(u8),
    Fail,
}

impl Rule {
    /// The checks, then the verdict; a failing check jumps past the
    /// verdict (to the next rule). None when a jump would be too long.
    fn code(&self, narrow: bool) -> Option<Program> {
        let mut body: Vec<(sock_filter, Option<To>, Option<To>)> = Vec::new();
        for check in &self.checks {
            body.extend(if narrow {
                check.low_half_code()
            } else {
                check.code()
            });
        }
        let end = body.len() + 1; // past the verdict
        let mut out = Vec::with_capacity(end);
        for (i, (mut insn, jt, jf)) in body.into_iter().enumerate() {
            let resolve = |to: Option<To>| match to {
                None => Some(0),
                Some(To::Skip(n)) => Some(n),
                Some(To::Fail) => u8::try_from(end - (i + 1)).ok(),
            };
            insn.jt = resolve(jt)?;
            insn.jf = resolve(jf)?;
            out.push(insn);
        }
        out.push(ret(self.verdict));
        Some(out)
    }
}

impl Check {
    /// Falls through when the check holds. The argument is compared as
    /// two 32-bit halves, high first.
    fn code(&self) -> Vec<(sock_filter, Option<To>, Option<To>)> {
        let low_offset = OFFSET_ARGS + 8 * u32::from(self.index);
        let (high, low) = ((self.value >> 32) as u32, self.value as u32);
        let load_high = (stmt(LD_W_ABS, low_offset + 4), None, None);
        let load_low = (stmt(LD_W_ABS, low_offset), None, None);
        let test = |code, k, jt, jf| (jump(code, k, 0, 0), jt, jf);
        use To::{Fail, Skip};
        match self.compare {
            Compare::Eq => vec![
                load_high,
                test(JEQ_K, high, None, Some(Fail)),
                load_low,
                test(JEQ_K, low, None, Some(Fail)),
            ],
            Compare::Ne => vec![
                load_high,
                test(JEQ_K, high, None, Some(Skip(2))),
                load_low,
                test(JEQ_K, low, Some(Fail), None),
            ],
            Compare::MaskedEq(mask) => vec![
                load_high,
                (stmt(AND_K, (mask >> 32) as u32), None, None),
                test(JEQ_K, high, None, Some(Fail)),
                load_low,
                (stmt(AND_K, mask as u32), None, None),
                test(JEQ_K, low, None, Some(Fail)),
            ],
            // Above on the high half: holds; equal: the low half decides.
            Compare::Gt | Compare::Ge => vec![
                load_high,
                test(JGT_K, high, Some(Skip(3)), None),
                test(JEQ_K, high, None, Some(Fail)),
                load_low,
                if self.compare == Compare::Gt {
                    test(JGT_K, low, None, Some(Fail))
                } else {
                    test(JGE_K, low, None, Some(Fail))
                },
            ],
            // Above on the high half: fails; below: holds.
            Compare::Lt | Compare::Le => vec![
                load_high,
                test(JGT_K, high, Some(Fail), None),
                test(JEQ_K, high, None, Some(Skip(2))),
                load_low,
                if self.compare == Compare::Lt {
                    test(JGE_K, low, Some(Fail), None)
                } else {
                    test(JGT_K, low, Some(Fail), None)
                },
            ],
        }
    }

    /// The same for a 32-bit ABI: the low halves only.
    fn low_half_code(&self) -> Vec<(sock_filter, Option<To>, Option<To>)> {
        let low_offset = OFFSET_ARGS + 8 * u32::from(self.index);
        let low = self.value as u32;
        let load = (stmt(LD_W_ABS, low_offset), None, None);
        let test = |code, jt, jf| (jump(code, low, 0, 0), jt, jf);
        use To::Fail;
        match self.compare {
            Compare::Eq => vec![load, test(JEQ_K, None, Some(Fail))],
            Compare::Ne => vec![load, test(JEQ_K, Some(Fail), None)],
            Compare::MaskedEq(mask) => vec![
                load,
                (stmt(AND_K, mask as u32), None, None),
                test(JEQ_K, None, Some(Fail)),
            ],
            Compare::Gt => vec![load, test(JGT_K, None, Some(Fail))],
            Compare::Ge => vec![load, test(JGE_K, None, Some(Fail))],
            Compare::Lt => vec![load, test(JGE_K, Some(Fail), None)],
            Compare::Le => vec![load, test(JGT_K, Some(Fail), None)],
        }
    }
}

/// Runs a program on one call, as the kernel's interpreter would (the
/// instructions `program` emits only).
#[cfg(test)]
pub fn run(program: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, arg) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
    }
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        let insn = program[pc];
        pc += 1;
        let skip = |holds: bool| usize::from(if holds { insn.jt } else { insn.jf });
        match insn.code {
            LD_W_ABS => {
                let o = insn.k as usize;
                a = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
            }
            AND_K => a &= insn.k,
            JA => pc += insn.k as usize,
            JEQ_K => pc += skip(a == insn.k),
            JGT_K => pc += skip(a > insn.k),
            JGE_K => pc += skip(a >= insn.k),
            JSET_K => pc += skip(a & insn.k != 0),
            RET_K => return insn.k,
            other => panic!("opcode {other:#x} at {}", pc - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: u32 = RET_ERRNO | 1;

    #[test]
    fn the_search_finds_every_numbers_decision_however_far_it_jumps() {
        // Hundreds of pieces: the halves near the root are longer than a
        // conditional jump reaches.
        let mut section = Section {
            default: DENY,
            enosys_above: Some(1500),
            ..Section::default()
        };
        let verdict_of = |n: u32| match n % 7 {
            0 | 1 => Some(RET_ALLOW),
            3 => Some(RET_TRAP),
            5 => Some(RET_ERRNO | n),
            _ => None,
        };
        for n in 0..1400 {
            if let Some(v) = verdict_of(n) {
                section.decisions.insert(n, Decision::Always(v));
            }
        }
        let program = program(Some(&section), None, None, RET_KILL_THREAD).unwrap();
        assert!(program.len() > 2 * SHORT, "{}", program.len());
        for n in 0..1600 {
            let want = match n {
                1501.. => RET_ERRNO | libc::ENOSYS as u32,
                1400.. => DENY,
                _ => verdict_of(n).unwrap_or(DENY),
            };
            assert_eq!(run(&program, n, AUDIT_ARCH_X86_64, [0; 6]), want, "{n}");
        }
    }

    #[test]
    fn each_abi_reaches_its_own_section_and_the_rest_the_elsewhere_verdict() {
        let only = |n: u32, verdict| Section {
            decisions: BTreeMap::from([(n, Decision::Always(verdict))]),
            default: DENY,
            enosys_above: None,
            narrow_arguments: false,
        };
        let (x86_64, i386, x32) = (
            only(10, RET_ALLOW),
            only(10, RET_TRAP),
            only(X32_SYSCALL_BIT | 10, RET_LOG),
        );
        let all = program(Some(&x86_64), Some(&i386), Some(&x32), RET_KILL_THREAD).unwrap();
        assert_eq!(run(&all, 10, AUDIT_ARCH_X86_64, [0; 6]), RET_ALLOW);
        assert_eq!(run(&all, 11, AUDIT_ARCH_X86_64, [0; 6]), DENY);
        assert_eq!(run(&all, 10, AUDIT_ARCH_I386, [0; 6]), RET_TRAP);
        let x32_call = X32_SYSCALL_BIT | 10;
        assert_eq!(run(&all, x32_call, AUDIT_ARCH_X86_64, [0; 6]), RET_LOG);
        assert_eq!(run(&all, 10, 0xc000_00b7, [0; 6]), RET_KILL_THREAD); // aarch64
        let native = program(Some(&x86_64), None, None, RET_KILL_THREAD).unwrap();
        assert_eq!(run(&native, 10, AUDIT_ARCH_I386, [0; 6]), RET_KILL_THREAD);
        assert_eq!(
            run(&native, x32_call, AUDIT_ARCH_X86_64, [0; 6]),
            RET_KILL_THREAD
        );
    }

    #[test]
    fn each_comparison_holds_exactly_where_its_64_bit_meaning_does() {
        let edges = [
            0u64,
            1,
            7,
            0xffff_ffff,
            1 << 32,
            (1 << 32) + 7,
            u64::MAX - 1,
            u64::MAX,
        ];
        let compares = [
            Compare::Eq,
            Compare::Ne,
            Compare::Lt,
            Compare::Le,
            Compare::Gt,
            Compare::Ge,
            Compare::MaskedEq(0xffff_0000_0000_00f0),
        ];
        for compare in compares {
            for value in edges {
                let rule = Rule {
                    checks: vec![Check {
                        index: 3,
                        compare,
                        value,
                    }],
                    verdict: RET_TRAP,
                };
                let section = Section {
                    decisions: BTreeMap::from([(5, Decision::Rules(vec![rule]))]),
                    default: DENY,
                    enosys_above: None,
                    narrow_arguments: false,
                };
                let program = program(Some(&section), None, None, RET_KILL_THREAD).unwrap();
                for arg in edges
                    .iter()
                    .chain(&[0xabcd_0000_0000_00f7, 0xffff_0000_0000_0070])
                {
                    let holds = match compare {
                        Compare::Eq => *arg == value,
                        Compare::Ne => *arg != value,
                        Compare::Lt => *arg < value,
                        Compare::Le => *arg <= value,
                        Compare::Gt => *arg > value,
                        Compare::Ge => *arg >= value,
                        Compare::MaskedEq(mask) => arg & mask == value,
                    };
                    let got = run(&program, 5, AUDIT_ARCH_X86_64, [0, 0, 0, *arg, 0, 0]);
                    let want = if holds { RET_TRAP } else { DENY };
                    assert_eq!(got, want, "{compare:?} {value:#x} on {arg:#x}");
                }
            }
        }
    }

    #[test]
    fn rules_are_tested_in_order_and_the_first_that_holds_decides() {
        let check = |index, value| Check {
            index,
            compare: Compare::Eq,
            value,
        };
        let rules = vec![
            Rule {
                checks: vec![check(0, 1), check(1, 2)],
                verdict: RET_KILL_PROCESS,
            },
            Rule {
                checks: vec![check(0, 1)],
                verdict: RET_TRAP,
            },
        ];
        let section = Section {
            decisions: BTreeMap::from([(9, Decision::Rules(rules))]),
            default: RET_ALLOW,
            enosys_above: None,
            narrow_arguments: false,
        };
        let program = program(Some(&section), None, None, RET_KILL_THREAD).unwrap();
        let call = |a0, a1| run(&program, 9, AUDIT_ARCH_X86_64, [a0, a1, 0, 0, 0, 0]);
        assert_eq!(call(1, 2), RET_KILL_PROCESS);
        assert_eq!(call(1, 3), RET_TRAP);
        assert_eq!(call(2, 2), RET_ALLOW);
        assert_eq!(
            run(&program, 8, AUDIT_ARCH_X86_64, [1, 2, 0, 0, 0, 0]),
            RET_ALLOW
        );
    }

    /// What a section means, evaluated directly (the reference for the
    /// randomized test below).
    fn meaning(section: &Section, nr: u32, args: [u64; 6]) -> u32 {
        if section.enosys_above.is_some_and(|newest| nr > newest) {
            return RET_ERRNO | libc::ENOSYS as u32;
        }
        let holds = |c: &Check| {
            let (mut arg, mut value) = (args[c.index as usize], c.value);
            let mut mask = match c.compare {
                Compare::MaskedEq(mask) => mask,
                _ => u64::MAX,
            };
            if section.narrow_arguments {
                (arg, value, mask) = (arg as u32 as u64, value as u32 as u64, mask as u32 as u64);
            }
            match c.compare {
                Compare::Eq => arg == value,
                Compare::Ne => arg != value,
                Compare::Lt => arg < value,
                Compare::Le => arg <= value,
                Compare::Gt => arg > value,
                Compare::Ge => arg >= value,
                Compare::MaskedEq(_) => arg & mask == value,
            }
        };
        match section.decisions.get(&nr) {
            None => section.default,
            Some(Decision::Always(v)) => *v,
            Some(Decision::Rules(rules)) => rules
                .iter()
                .find(|r| r.checks.iter().all(holds))
                .map_or(section.default, |r| r.verdict),
        }
    }

    #[test]
    fn random_sections_decide_every_call_as_their_rules_say() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let edges = [
            0u64,
            1,
            2,
            0xffff_ffff,
            1 << 32,
            (1 << 32) | 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        let verdicts = [
            RET_ALLOW,
            RET_TRAP,
            RET_ERRNO | 1,
            RET_ERRNO | 13,
            RET_KILL_PROCESS,
            RET_LOG,
            RET_KILL_THREAD,
        ];
        let (mut skipped, mut longest) = (0, 0);
        for round in 0..400 {
            let value = |next: &mut dyn FnMut() -> u64| {
                let r = next();
                if r % 3 == 0 {
                    next()
                } else {
                    edges[(r >> 8) as usize % edges.len()]
                }
            };
            let section_of = |next: &mut dyn FnMut() -> u64, base: u32, narrow: bool| {
                let mut section = Section {
                    default: verdicts[next() as usize % verdicts.len()],
                    enosys_above: (next() % 2 == 0).then_some(base + 300 + (next() % 200) as u32),
                    narrow_arguments: narrow,
                    ..Section::default()
                };
                // Many syscalls, some with long rule lists, so that jumps
                // outgrow 8 bits at every level of the search.
                for _ in 0..(next() % 300) {
                    let nr = base + (next() % 520) as u32;
                    let decision = if next() % 3 == 0 {
                        Decision::Always(verdicts[next() as usize % verdicts.len()])
                    } else {
                        let rules = (0..1 + next() % 8)
                            .map(|_| Rule {
                                checks: (0..next() % 4)
                                    .map(|_| Check {
                                        index: (next() % 6) as u8,
                                        compare: match next() % 7 {
                                            0 => Compare::Eq,
                                            1 => Compare::Ne,
                                            2 => Compare::Lt,
                                            3 => Compare::Le,
                                            4 => Compare::Gt,
                                            5 => Compare::Ge,
                                            _ => Compare::MaskedEq(value(next)),
                                        },
                                        value: value(next),
                                    })
                                    .collect(),
                                verdict: verdicts[next() as usize % verdicts.len()],
                            })
                            .collect();
                        Decision::Rules(rules)
                    };
                    section.decisions.insert(nr, decision);
                }
                section
            };
            let x86_64 = section_of(&mut next, 0, false);
            let i386 = section_of(&mut next, 0, true);
            let x32 = section_of(&mut next, X32_SYSCALL_BIT, true);
            let pick = next() % 8;
            let (a, b, c) = (pick & 1 != 0, pick & 2 != 0, pick & 4 != 0);
            let Ok(program) = program(
                a.then_some(&x86_64),
                b.then_some(&i386),
                c.then_some(&x32),
                RET_KILL_THREAD,
            ) else {
                skipped += 1;
                continue;
            };
            longest = longest.max(program.len());
            for _ in 0..3000 {
                let r = next();
                let nr = match r % 4 {
                    0 => (next() % 900) as u32,
                    1 => X32_SYSCALL_BIT | (next() % 900) as u32,
                    2 => next() as u32,
                    _ => [u32::MAX, 0x8000_0000, 0x3fff_ffff, 0x4000_0000, 0xbfff_ffff]
                        [next() as usize % 5],
                };
                let arch = [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, 0xc000_00b7][(next() % 3) as usize];
                let args = [
                    value(&mut next),
                    value(&mut next),
                    value(&mut next),
                    value(&mut next),
                    value(&mut next),
                    value(&mut next),
                ];
                let section = match arch {
                    AUDIT_ARCH_X86_64 if nr < X32_SYSCALL_BIT || nr == u32::MAX => {
                        a.then_some(&x86_64)
                    }
                    AUDIT_ARCH_X86_64 => c.then_some(&x32),
                    AUDIT_ARCH_I386 => b.then_some(&i386),
                    _ => None,
                };
                let want = section.map_or(RET_KILL_THREAD, |s| meaning(s, nr, args));
                assert_eq!(
                    run(&program, nr, arch, args),
                    want,
                    "round {round}: arch {arch:#x} nr {nr:#x} {args:#x?}"
                );
            }
        }
        // Most programs are built, and some are long enough to need `ja`.
        assert!(skipped < 40 && longest > 4 * SHORT, "{skipped} {longest}");
    }
}
