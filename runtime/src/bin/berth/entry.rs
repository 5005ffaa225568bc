//! berth's entry point, in place of Rust's own start-up (`#![no_main]`).
//!
//! Before `main`, std reads `/proc/self/maps` through glibc (the main
//! thread's stack bounds, for its stack-overflow message), asks for the
//! CPU affinity, and maps an alternate signal stack with handlers for
//! SIGSEGV and SIGBUS: about 50 µs of every `berth` call on a small VM,
//! multiplied by every container started, for a message on a crash. What
//! of it berth needs is done here: descriptors 0-2 are open (onto
//! /dev/null if the caller closed them, so no file berth opens takes
//! their place), and SIGPIPE is ignored, so that a reader gone away is
//! an error berth reports (see `die_of_sigpipe`). Arguments and
//! environment need nothing: std reads them from glibc's start-up.
//!
//! What differs, and is meant to: a stack overflow ends as a plain
//! SIGSEGV (status 139), not with std's message and SIGABRT; and a panic
//! (debug builds) names its thread `<unnamed>`, not `main`.

use std::io::Write;

/// What the C runtime calls; the exit status is `berth_main`'s.
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    open_stdio();
    // SAFETY: a disposition of this single-threaded process, set before
    // anything else runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // Where panics unwind (debug builds), a panic ends as it did under
    // std's start-up: its message, then status 101.
    let status = std::panic::catch_unwind(super::berth_main).unwrap_or(101);
    // std flushes stdout after `main`; without std's start-up, berth does.
    let _ = std::io::stdout().flush();
    libc::c_int::from(status)
}

/// Opens /dev/null on each of descriptors 0-2 the caller left closed.
fn open_stdio() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads this descriptor's flags.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
        if !closed {
            continue;
        }
        // SAFETY: open(2) takes the lowest free descriptor, which is this
        // closed one, since lower ones are open or opened here first.
        let opened = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if opened != fd {
            // Not even /dev/null: nothing safe to run on.
            // SAFETY: ending the process at once.
            unsafe { libc::abort() };
        }
    }
}
