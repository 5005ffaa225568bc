//! The three system-call ABIs of an x86_64 kernel and their numbers.
//!
//! Threat: a 64-bit process may enter the kernel through the i386 entry
//! (`int 0x80`: the filter sees `AUDIT_ARCH_I386` and i386 numbers) or with
//! x32 numbers (bit 30 set, `AUDIT_ARCH_X86_64`). A filter that checks only
//! x86_64 numbers would let such calls through under other numbers. As
//! libseccomp does (runc's and crun's filters), each ABI the profile lists
//! in `architectures` (x86_64 always) is filtered by its own numbers (see
//! `bpf` for how the filter tells them apart), and a call of an ABI it does
//! not list kills the thread (libseccomp's default "bad architecture"
//! action).

use super::{table_i386, table_x32, table_x86_64};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

    /// The ABI's names (one string) and its entries: each name's place in
    /// it and its number, sorted by name.
    fn table(self) -> (&'static str, &'static [(u16, u16, u32)]) {
        match self {
            Abi::X86_64 => (table_x86_64::NAMES, table_x86_64::SYSCALLS),
            Abi::I386 => (table_i386::NAMES, table_i386::SYSCALLS),
            Abi::X32 => (table_x32::NAMES, table_x32::SYSCALLS),
        }
    }

    /// The number of `name` in this ABI, if it has one.
    pub fn number(self, name: &str) -> Option<i64> {
        let (names, table) = self.table();
        table
            .binary_search_by(|&(start, end, _)| {
                names[usize::from(start)..usize::from(end)].cmp(name)
            })
            .ok()
            .map(|i| i64::from(table[i].2))
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
    fn every_table_is_sorted_and_finds_each_of_its_names() {
        for abi in [Abi::X86_64, Abi::I386, Abi::X32] {
            let (names, table) = abi.table();
            let name = |&(start, end, _): &(u16, u16, u32)| &names[start as usize..end as usize];
            assert!(
                table.windows(2).all(|w| name(&w[0]) < name(&w[1])),
                "{abi:?}"
            );
            assert_eq!(table.last().map(|e| e.1 as usize), Some(names.len()));
            for entry in table {
                assert_eq!(abi.number(name(entry)), Some(i64::from(entry.2)));
            }
            // Names beyond either end, or none at all.
            assert_eq!(abi.number("zzz"), None);
            assert_eq!(abi.number(""), None);
        }
    }
}
