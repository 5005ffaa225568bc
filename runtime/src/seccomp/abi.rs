//! The three system-call ABIs of an x86_64 kernel, and the BPF that tells
//! them apart.
//!
//! Threat: a 64-bit process may enter the kernel through the i386 entry
//! (`int 0x80`: the filter sees `AUDIT_ARCH_I386` and i386 numbers) or with
//! x32 numbers (bit 30 set, `AUDIT_ARCH_X86_64`). A filter that checks only
//! x86_64 numbers would let such calls through under other numbers. As
//! libseccomp does (runc's and crun's filters), each ABI the profile lists
//! in `architectures` (x86_64 always) is filtered by its own numbers, and a
//! call of an ABI it does not list kills the thread (libseccomp's default
//! "bad architecture" action).

use seccompiler::{sock_filter, BpfProgram};

use super::{table_i386, table_x32, table_x86_64};

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// The bit x32 numbers carry.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const OFFSET_NR: u32 = 0; // seccomp_data.nr
const OFFSET_ARCH: u32 = 4; // seccomp_data.arch
pub const SECCOMP_RET_KILL_THREAD: u32 = 0;
pub const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
pub const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    X86_64,
    I386,
    X32,
}

impl Abi {
    /// x86_64, and the others the profile's `architectures` name.
    pub fn listed(architectures: &[String]) -> Vec<Abi> {
        let mut abis = vec![Abi::X86_64];
        if architectures.iter().any(|a| a == "SCMP_ARCH_X86") {
            abis.push(Abi::I386);
        }
        if architectures.iter().any(|a| a == "SCMP_ARCH_X32") {
            abis.push(Abi::X32);
        }
        abis
    }

    fn table(self) -> &'static [(&'static str, i64)] {
        match self {
            Abi::X86_64 => table_x86_64::SYSCALLS,
            Abi::I386 => table_i386::SYSCALLS,
            Abi::X32 => table_x32::SYSCALLS,
        }
    }

    /// The number of `name` in this ABI, if it has one.
    pub fn number(self, name: &str) -> Option<i64> {
        let table = self.table();
        table
            .binary_search_by(|(n, _)| n.cmp(&name))
            .ok()
            .map(|i| table[i].1)
    }

    /// For i386, where socket and System V IPC calls may also go through
    /// the multiplexers `socketcall(call, args)` and `ipc(call, …)`: the
    /// multiplexer's number and the `call` value that stands for `name`.
    /// A rule on `name` also governs that call (as libseccomp adds it:
    /// with the rule's own argument conditions dropped, since the
    /// arguments are behind a pointer there).
    pub fn multiplexed(self, name: &str) -> Option<(i64, u64)> {
        const SOCKETCALL: &[&str] = &[
            "socket",
            "bind",
            "connect",
            "listen",
            "accept",
            "getsockname",
            "getpeername",
            "socketpair",
            "send",
            "recv",
            "sendto",
            "recvfrom",
            "shutdown",
            "setsockopt",
            "getsockopt",
            "sendmsg",
            "recvmsg",
            "accept4",
            "recvmmsg",
            "sendmmsg",
        ];
        const IPC: &[(&str, u64)] = &[
            ("semop", 1),
            ("semget", 2),
            ("semctl", 3),
            ("semtimedop", 4),
            ("msgsnd", 11),
            ("msgrcv", 12),
            ("msgget", 13),
            ("msgctl", 14),
            ("shmat", 21),
            ("shmdt", 22),
            ("shmget", 23),
            ("shmctl", 24),
        ];
        if self != Abi::I386 {
            return None;
        }
        if let Some(i) = SOCKETCALL.iter().position(|n| *n == name) {
            return Some((self.number("socketcall")?, i as u64 + 1));
        }
        let call = IPC.iter().find(|(n, _)| *n == name)?.1;
        Some((self.number("ipc")?, call))
    }

    /// The highest number this ABI has.
    fn newest(self) -> u32 {
        self.table().iter().map(|(_, n)| *n).max().unwrap_or(0) as u32
    }

    /// Instructions that fall through for a call of this ABI and jump over
    /// the rest of the section (`rest` instructions after them) otherwise.
    fn prefix(self, rest: usize) -> BpfProgram {
        // Jumps count from the next instruction; `ja` reaches any distance.
        if self == Abi::I386 {
            return vec![
                insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
                insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_I386),
                insn(BPF_JA, 0, 0, rest as u32),
            ];
        }
        // x86_64: bit 30 clear falls through; x32: bit 30 set does.
        let (jt, jf) = if self == Abi::X32 { (1, 0) } else { (0, 1) };
        vec![
            insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
            insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
            insn(BPF_JA, 0, 0, 3 + rest as u32),
            insn(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
            insn(BPF_JSET_K, jt, jf, X32_SYSCALL_BIT),
            insn(BPF_JA, 0, 0, rest as u32),
        ]
    }

    /// For the default action's section: a syscall newer than every one of
    /// this ABI berth knows (so no profile can name it) fails with ENOSYS,
    /// not the default errno, as runc's filters answer it: programs probe
    /// new syscalls and fall back on ENOSYS only.
    pub fn unknown_syscall_stub(self) -> BpfProgram {
        vec![
            insn(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
            insn(BPF_JGT_K, 0, 1, self.newest()),
            insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ]
    }

    /// seccompiler builds for x86_64 only; its first check compares the
    /// architecture with x86_64's. For the i386 section that constant
    /// becomes i386's (the prefix has checked the architecture already).
    pub fn retarget(self, program: &mut BpfProgram) {
        if self != Abi::I386 {
            return;
        }
        // The check opens the program (a rule's argument value equal to
        // the constant, further on, stays as it is).
        if let Some(check) = program
            .iter_mut()
            .take(3)
            .find(|i| i.code == BPF_JEQ_K && i.k == AUDIT_ARCH_X86_64)
        {
            check.k = AUDIT_ARCH_I386;
        }
    }
}

/// One program made of one section per ABI: each section decides the calls
/// of its ABI; a call of no section's ABI is allowed (the guard decides it).
pub fn chain(sections: Vec<(Abi, BpfProgram)>) -> BpfProgram {
    let mut out = BpfProgram::new();
    for (abi, body) in sections {
        out.extend(abi.prefix(body.len()));
        out.extend(body);
    }
    out.push(insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW));
    out
}

/// The first filter: kills the thread for a call of an ABI the profile
/// does not list (libseccomp's bad-architecture action), allows the rest.
pub fn guard(listed: &[Abi]) -> BpfProgram {
    let verdict = |abi| {
        if listed.contains(&abi) {
            SECCOMP_RET_ALLOW
        } else {
            SECCOMP_RET_KILL_THREAD
        }
    };
    vec![
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        insn(BPF_JEQ_K, 0, 4, AUDIT_ARCH_X86_64),
        insn(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
        insn(BPF_JSET_K, 0, 1, X32_SYSCALL_BIT),
        insn(BPF_RET_K, 0, 0, verdict(Abi::X32)),
        insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        insn(BPF_JEQ_K, 0, 1, AUDIT_ARCH_I386),
        insn(BPF_RET_K, 0, 0, verdict(Abi::I386)),
        insn(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_THREAD),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_abi_has_its_own_numbers() {
        assert_eq!(Abi::X86_64.number("getppid"), Some(110));
        assert_eq!(Abi::I386.number("getppid"), Some(64));
        assert_eq!(Abi::X32.number("getppid"), Some(0x4000_0000 + 110));
        assert_eq!(Abi::X86_64.number("socketcall"), None);
        assert_eq!(Abi::I386.number("socketcall"), Some(102));
        assert_eq!(Abi::I386.multiplexed("connect"), Some((102, 3)));
        assert_eq!(Abi::I386.multiplexed("semop"), Some((117, 1)));
        assert_eq!(Abi::X86_64.multiplexed("connect"), None);
    }

    #[test]
    fn a_prefix_jumps_to_the_end_of_its_section() {
        for abi in [Abi::X86_64, Abi::I386, Abi::X32] {
            let prefix = abi.prefix(10);
            // Every `ja` lands just past the section (prefix + 10).
            for (i, insn) in prefix.iter().enumerate() {
                if insn.code == BPF_JA {
                    assert_eq!(i + 1 + insn.k as usize, prefix.len() + 10, "{abi:?}");
                }
            }
        }
    }
}
