//! A spare shim's scheduling: berth-imaged starts it under `SCHED_IDLE`,
//! so that its start takes only CPU time nobody else wants; it leaves that
//! policy when its container's Create comes, before the container's
//! processes (which inherit the policy of the thread that forks them)
//! exist.

/// Puts every thread of this process back under `SCHED_OTHER` if this
/// one runs under `SCHED_IDLE` (a shim containerd started never does).
pub fn leave_idle() -> std::io::Result<()> {
    // SAFETY: sched_getscheduler only reads the calling thread's policy.
    if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_IDLE {
        return Ok(());
    }
    let param = libc::sched_param { sched_priority: 0 };
    for entry in std::fs::read_dir("/proc/self/task")? {
        let name = entry?.file_name();
        let Some(tid) = name.to_str().and_then(|t| t.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        // SAFETY: a policy change of a thread of this process, with a param
        // on the stack.
        if unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) } != 0 {
            let error = std::io::Error::last_os_error();
            // A thread that has just ended is not an error.
            if error.raw_os_error() != Some(libc::ESRCH) {
                return Err(error);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_of(tid: libc::pid_t) -> i32 {
        // SAFETY: reads a thread's policy.
        unsafe { libc::sched_getscheduler(tid) }
    }

    #[test]
    fn every_thread_leaves_the_idle_policy() {
        // In a thread of its own, with a helper beside it; the harness's
        // other threads run under SCHED_OTHER already, and stay so.
        std::thread::spawn(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: a policy change of this test's own thread.
            let set = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            assert_eq!(set, 0);
            let (tx, rx) = std::sync::mpsc::channel();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let helper = std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() }).unwrap();
                let _ = done_rx.recv();
            });
            let helper_tid = rx.recv().unwrap();
            assert_eq!(policy_of(helper_tid), libc::SCHED_IDLE);
            leave_idle().unwrap();
            assert_eq!(policy_of(0), libc::SCHED_OTHER);
            assert_eq!(policy_of(helper_tid), libc::SCHED_OTHER);
            drop(done_tx);
            helper.join().unwrap();
        })
        .join()
        .unwrap();
    }
}
