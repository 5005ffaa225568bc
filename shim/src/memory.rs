//! Giving an idle shim's memory back. A shim idles for days between bursts
//! of RPCs (each spawns the runtime, decodes specs, queues events); glibc
//! would keep the pages a burst freed, and a second allocator arena for the
//! events thread's few allocations. After each burst the server hands the
//! free pages back.

/// Makes the allocator keep one arena for both threads. Call before
/// starting any thread.
pub fn one_arena() {
    // SAFETY: mallopt only changes the allocator's settings.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Returns the heap's free pages to the kernel.
pub fn release_idle() {
    // SAFETY: malloc_trim only returns free memory; it touches no live allocation.
    unsafe { libc::malloc_trim(0) };
}
