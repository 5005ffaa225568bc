//! How berth's processes use glibc's heap: they live for milliseconds.

/// glibc's heap grows by 1 MiB at a time and gives memory back only when
/// 64 MiB lie free at its top, where by default it grows by 128 KiB and
/// each free that leaves 128 KiB at its top gives that back: `berth run`
/// (its three processes) called `brk` ten times, now seven
/// (`bench/syscalls.sh`). Pages never touched cost nothing, and the few
/// berth processes that stay (`run` in the foreground, `events`) allocate
/// little. (Setting either also fixes glibc's mmap threshold at 128 KiB,
/// where it would otherwise rise after the first large free.)
///
/// Called first thing by `berth`'s `main` and by the shim's fork that runs
/// berth's `create`. A caller's own tuning of the heap (`MALLOC_TOP_PAD_`,
/// `MALLOC_TRIM_THRESHOLD_`, or a `glibc.malloc` tunable) stands.
pub fn keep() {
    let var = |name: &str| std::env::var_os(name);
    let tuned = var("MALLOC_TOP_PAD_").is_some()
        || var("MALLOC_TRIM_THRESHOLD_").is_some()
        || var("GLIBC_TUNABLES").is_some_and(|tunables| {
            let bytes = tunables.as_encoded_bytes();
            bytes.windows(12).any(|w| w == b"glibc.malloc")
        });
    if tuned {
        return;
    }
    // SAFETY: mallopt only tunes this process's allocator.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
