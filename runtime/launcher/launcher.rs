//! `berth-launch`: the last program a container's init runs before the
//! user's, so that nothing in the container ever sees a process whose
//! `/proc/PID/exe` is the runtime binary on the host (CVE-2019-5736; see
//! `runtime/src/sealed_init.rs` for why this is as safe as re-executing
//! berth from a sealed copy).
//!
//! The init builds the whole container as berth, then executes this
//! program from a sealed memfd. It does what the init did from `Ready` on,
//! with the same system calls:
//! 1. non-dumpable (the execve made it dumpable again; failing that, it
//!    reports and exits);
//! 2. `Ready` ("R") on the init channel;
//! 3. waits for the release: "S" on the channel (`run`), or a connection
//!    accepted on the start socket (`start`);
//! 4. both descriptors close-on-exec, signals at their defaults with an
//!    empty mask;
//! 5. `execve` of the user's program; when that fails, tells the runtime
//!    the errno ("E<errno>", on the start connection or the channel), which
//!    berth renders as `exec "ARG0": <error>`, and exits 127.
//!
//! A channel that fails or closes before the release (the runtime is
//! gone) ends it with status 1 and no word, as it ended the init.
//!
//! Its arguments (`sealed_init::Launcher::launch` writes them):
//!
//! ```text
//! argv[0]  berth-launch            (checked: anything else is a misuse)
//! argv[1]  CHANNEL                 the init channel's descriptor, decimal
//! argv[2]  - | LISTENER            `-`: released on the channel; else the
//!                                  start socket's listening descriptor
//! argv[3]  PATH                    the executable, as the init resolved it
//! argv[4…] ARGS                    the process's argv, passed on as is
//! envp     the process's environment, passed on as is
//! ```
//!
//! Run any other way (a `#!/proc/self/exe` script executed by the container
//! makes the kernel run this file again) it writes one line to stderr and
//! exits 127, touching no descriptor.
//!
//! No libc, no allocation, no standard library: raw system calls, x86_64
//! and aarch64. berth's build script compiles it (`runtime/build.rs`).

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const RT_SIGACTION: usize = 13;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const EXECVE: usize = 59;
    pub const FCNTL: usize = 72;
    pub const PRCTL: usize = 157;
    pub const EXIT_GROUP: usize = 231;
    pub const ACCEPT4: usize = 288;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const FCNTL: usize = 25;
    pub const READ: usize = 63;
    pub const WRITE: usize = 64;
    pub const EXIT_GROUP: usize = 94;
    pub const RT_SIGACTION: usize = 134;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const PRCTL: usize = 167;
    pub const EXECVE: usize = 221;
    pub const ACCEPT4: usize = 242;
}

// The kernel starts us with the stack pointer on argc; hand it to `start`.
#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "xor rbp, rbp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym start,
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, xzr",
    "mov x30, xzr",
    "mov x0, sp",
    "bl {start}",
    "brk #0",
    start = sym start,
);

/// A system call with up to five arguments; the kernel's return value
/// (a negative errno on failure).
#[cfg(target_arch = "x86_64")]
unsafe fn syscall(n: usize, a: [usize; 5]) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for system call `n`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall(n: usize, a: [usize; 5]) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for system call `n`.
    unsafe {
        asm!(
            "svc #0",
            in("x8") n,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4],
            options(nostack),
        );
    }
    ret
}

const EINTR: isize = 4;
const PR_SET_DUMPABLE: usize = 4;
const F_SETFD: usize = 2;
const FD_CLOEXEC: usize = 1;
const SOCK_CLOEXEC: usize = 0o2_000_000;
const SIG_SETMASK: usize = 2;
const SIGKILL: usize = 9;
const SIGSTOP: usize = 19;

/// A system call retried while a signal interrupts it.
unsafe fn restarted(n: usize, a: [usize; 5]) -> isize {
    loop {
        // SAFETY: as the caller's.
        let ret = unsafe { syscall(n, a) };
        if ret != -EINTR {
            return ret;
        }
    }
}

fn exit(code: usize) -> ! {
    loop {
        // SAFETY: exit_group takes a plain number and does not return.
        unsafe { syscall(nr::EXIT_GROUP, [code, 0, 0, 0, 0]) };
    }
}

fn write(fd: usize, bytes: &[u8]) -> isize {
    // SAFETY: pointer and length of a live slice.
    unsafe { restarted(nr::WRITE, [fd, bytes.as_ptr() as usize, bytes.len(), 0, 0]) }
}

/// Whether the NUL-terminated string at `p` is `text`.
unsafe fn equals(p: *const u8, text: &[u8]) -> bool {
    let mut i = 0;
    for &b in text {
        // SAFETY: the kernel put NUL-terminated strings on our stack; a
        // mismatch (NUL included) stops the walk at the terminator.
        if unsafe { *p.add(i) } != b {
            return false;
        }
        i += 1;
    }
    // SAFETY: as above, `i` is at most the string's length.
    unsafe { *p.add(i) == 0 }
}

/// The descriptor number written in decimal at `p` (NUL-terminated).
unsafe fn number(p: *const u8) -> Option<usize> {
    let mut value = 0usize;
    let mut i = 0;
    loop {
        // SAFETY: as in `equals`, the walk stops at the terminator.
        let b = unsafe { *p.add(i) };
        if b == 0 {
            return (i > 0).then_some(value);
        }
        if !b.is_ascii_digit() || i == 9 {
            return None;
        }
        value = value * 10 + usize::from(b - b'0');
        i += 1;
    }
}

fn misuse() -> ! {
    write(2, b"berth-launch: not started by berth's init\n");
    exit(127)
}

const CLOEXEC_FAILED: &[u8] = b"Fthe sealed launcher cannot keep the init's descriptors from the process";

/// Tells the runtime why nothing starts (a `Failed` message: `F` and the
/// text), then exits with `code`.
fn failed(fd: usize, message: &[u8], code: usize) -> ! {
    write(fd, message);
    exit(code)
}

/// What the launcher writes to the runtime when the execve failed: `E`
/// and the errno in decimal (`channel::Message::ExecFailed`).
fn exec_failed(fd: usize, errno: usize) -> ! {
    // "E" and at most five digits, written from the end.
    let mut message = [b'E'; 6];
    let mut at = message.len();
    let mut n = errno.min(99_999);
    for slot in message.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        at -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = message.get(at..).unwrap_or(&[]);
    // SAFETY: the byte before the digits is in the array (at >= 1).
    let with_e = unsafe { core::slice::from_raw_parts(digits.as_ptr().sub(1), digits.len() + 1) };
    write(fd, with_e);
    exit(127)
}

/// The entry point; `sp` points at argc, then argv, NULL, envp, NULL.
unsafe extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: the System V start-up layout the kernel builds.
    let (argc, argv) = unsafe { (*sp, sp.add(1) as *const *const u8) };
    if argc < 5 {
        misuse();
    }
    // SAFETY: argv has argc entries, then NULL, then the environment.
    let (arg, envp) = unsafe { (|i: usize| *argv.add(i), argv.add(argc + 1) as usize) };
    // SAFETY: each argument is a NUL-terminated string.
    let (ours, channel, listener) = unsafe {
        (
            equals(arg(0), b"berth-launch"),
            number(arg(1)),
            match equals(arg(2), b"-") {
                true => Some(None),
                false => number(arg(2)).map(Some),
            },
        )
    };
    let (true, Some(channel), Some(listener)) = (ours, channel, listener) else {
        misuse()
    };
    // SAFETY: plain system calls on our own process and descriptors.
    unsafe {
        // The init was not dumpable; neither may this be while it waits
        // (berth uses the launcher only where the seccomp profile lets
        // prctl, fcntl and execveat through; a kernel that refuses is an
        // error, not a dumpable init).
        if syscall(nr::PRCTL, [PR_SET_DUMPABLE, 0, 0, 0, 0]) < 0 {
            failed(channel, b"Fthe sealed launcher cannot make itself non-dumpable", 1);
        }
        if write(channel, b"R") < 0 {
            exit(1);
        }
        // Where a failed execve is reported: the start connection, or the
        // channel.
        let report = match listener {
            None => {
                let mut reply = [0u8; 16];
                let n = restarted(nr::READ, [channel, reply.as_mut_ptr() as usize, 16, 0, 0]);
                if n != 1 || reply[0] != b'S' {
                    // The runtime went away (or spoke out of turn): as
                    // the init, leave without starting anything.
                    exit(1);
                }
                channel
            }
            Some(listener) => {
                let connection = restarted(nr::ACCEPT4, [listener, 0, 0, SOCK_CLOEXEC, 0]);
                if connection < 0 {
                    exit(1);
                }
                if syscall(nr::FCNTL, [listener, F_SETFD, FD_CLOEXEC, 0, 0]) < 0 {
                    failed(connection as usize, CLOEXEC_FAILED, 127);
                }
                connection as usize
            }
        };
        // Nothing of the runtime's may reach the process.
        if syscall(nr::FCNTL, [channel, F_SETFD, FD_CLOEXEC, 0, 0]) < 0 {
            failed(report, CLOEXEC_FAILED, 127);
        }
        // Ignored signals and the mask survive execve; the process starts
        // with neither (as `process::reset_signals` leaves the init).
        let default = [0usize; 4];
        for signal in 1..=64 {
            if signal != SIGKILL && signal != SIGSTOP {
                syscall(
                    nr::RT_SIGACTION,
                    [signal, default.as_ptr() as usize, 0, 8, 0],
                );
            }
        }
        let empty = 0usize;
        syscall(
            nr::RT_SIGPROCMASK,
            [SIG_SETMASK, &empty as *const usize as usize, 0, 8, 0],
        );
        let error = syscall(
            nr::EXECVE,
            [arg(3) as usize, argv.add(4) as usize, envp, 0, 0],
        );
        exec_failed(report, error.unsigned_abs())
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(127)
}
