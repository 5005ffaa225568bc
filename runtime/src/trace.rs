//! `BERTH_TRACE=1`: a timeline of the runtime's own steps, for finding
//! where start-up time goes (`bench/runtime-steps.sh` reads it).
//!
//! With the variable set to anything but empty or `0`, every [`step`]
//! writes one line to stderr:
//!
//! ```text
//! berth-trace 12345.678901 4242 init: pivot_root
//! ```
//!
//! the `CLOCK_MONOTONIC` time in seconds (microseconds), the pid, and the
//! step. Lines of the runtime, of its re-executed image and of the
//! container's init (which writes them before its `execve`, to the
//! container's stderr) share one clock, so they sort into one timeline.
//!
//! Unset, it costs one `getenv` when berth starts and a relaxed atomic
//! load per step. The init wipes its environment before it builds the
//! container (`process::forget_caller`); it inherits the switch from the
//! runtime's memory, not from the environment.

use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

/// Reads `BERTH_TRACE` once; call first thing in `main`.
pub fn init() {
    let on = std::env::var_os("BERTH_TRACE").is_some_and(|v| !v.is_empty() && v != "0");
    ON.store(on, Ordering::Relaxed);
}

/// Whether steps are being traced.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Records that `what` has just been done.
#[inline]
pub fn step(what: &str) {
    if enabled() {
        emit(what);
    }
}

#[cold]
fn emit(what: &str) {
    let line = format!(
        "berth-trace {} {} {what}\n",
        berth_oci::time::monotonic_stamp(),
        std::process::id()
    );
    // One write, so lines of the runtime and the init do not interleave;
    // a closed stderr loses the line, nothing else.
    // SAFETY: writing our own buffer to descriptor 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}
