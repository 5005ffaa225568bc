//! Spare shims start at the idle priority ([`IdlePriority`]): a spare is
//! started right after a container's start, while that container runs and
//! exits, and its start (an exec, glibc's start-up, the shim's own) would
//! take a CPU from them. Under `SCHED_IDLE` it takes only CPU time nobody
//! else wants.
//!
//! The daemon gives the spare its own policy back once the spare answered
//! its Connect, before any container of it exists, so that nothing of the
//! container runs idle and the spare waits for nothing of its own: the
//! spare's `start` takes no lock another shim's start waits for (its id is
//! unique). Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` (in the initial user
//! namespace) or an `RLIMIT_NICE` that allows it, so the daemon tries once
//! at its start whether it can; where it cannot, spares start at its own
//! policy, as every other shim does.

use std::io;

/// The scheduling policy and parameter the daemon runs at, which a spare
/// gets back from `SCHED_IDLE`.
#[derive(Debug, Clone, Copy)]
pub struct IdlePriority {
    policy: i32,
    priority: i32,
}

impl IdlePriority {
    /// The daemon's own policy, if a thread of it can go to `SCHED_IDLE`
    /// and back: tried on a thread of its own, which ends after. `None`
    /// where it cannot, and where the daemon runs at the idle policy or a
    /// real-time one already (a spare then starts at it, as before).
    pub fn probe() -> Option<IdlePriority> {
        // SAFETY: sched_getscheduler and sched_getparam read this thread's
        // policy into a param on the stack.
        let (policy, priority) = unsafe {
            let mut param = libc::sched_param { sched_priority: 0 };
            let policy = libc::sched_getscheduler(0);
            if libc::sched_getparam(0, &mut param) != 0 {
                return None;
            }
            (policy, param.sched_priority)
        };
        if policy != libc::SCHED_OTHER && policy != libc::SCHED_BATCH {
            return None;
        }
        let wanted = IdlePriority { policy, priority };
        let tried = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            set_policy(tid, libc::SCHED_IDLE, 0).is_ok() && wanted.give_back(tid).is_ok()
        })
        .join();
        matches!(tried, Ok(true)).then_some(wanted)
    }

    /// Puts thread `tid` (0: the calling one) under `SCHED_IDLE`.
    pub fn enter(tid: libc::pid_t) -> io::Result<()> {
        set_policy(tid, libc::SCHED_IDLE, 0)
    }

    /// Gives every thread of process `pid` this policy back. Threads a
    /// thread still idle starts meanwhile are idle too, so the threads are
    /// read again until one reading finds none left idle.
    pub fn restore(&self, pid: u32) -> io::Result<()> {
        let tasks = format!("/proc/{pid}/task");
        loop {
            let mut changed = false;
            for entry in std::fs::read_dir(&tasks)? {
                let name = entry?.file_name();
                let Some(tid) = name.to_str().and_then(|t| t.parse::<libc::pid_t>().ok()) else {
                    continue;
                };
                // SAFETY: reads one thread's policy.
                match unsafe { libc::sched_getscheduler(tid) } {
                    libc::SCHED_IDLE => {}
                    -1 if io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => {
                        continue
                    }
                    -1 => return Err(io::Error::last_os_error()),
                    _ => continue,
                }
                match self.give_back(tid) {
                    Ok(()) => changed = true,
                    // A thread that has just ended is not an error.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(e),
                }
            }
            if !changed {
                return Ok(());
            }
        }
    }

    fn give_back(&self, tid: libc::pid_t) -> io::Result<()> {
        set_policy(tid, self.policy, self.priority)
    }
}

fn set_policy(tid: libc::pid_t, policy: i32, priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: a policy change of one thread, with a param on the stack.
    match unsafe { libc::sched_setscheduler(tid, policy, &param) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_of(tid: libc::pid_t) -> i32 {
        // SAFETY: reads a thread's policy.
        unsafe { libc::sched_getscheduler(tid) }
    }

    /// Two idle threads of this process, one started by the other while
    /// idle, get the daemon's policy back; the harness's threads are not
    /// idle and stay as they are.
    #[test]
    fn every_idle_thread_of_a_process_gets_the_policy_back() {
        let Some(priority) = IdlePriority::probe() else {
            // Only a process without CAP_SYS_NICE (bit 23 of its effective
            // set) may find that it cannot; CI runs as root with it.
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let effective = status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:\t"))
                .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
                .unwrap();
            assert_eq!(
                effective & (1 << 23),
                0,
                "with CAP_SYS_NICE the probe must succeed"
            );
            return;
        };
        let (tids_tx, tids_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let first = std::thread::spawn(move || {
            IdlePriority::enter(0).unwrap();
            let tx = tids_tx.clone();
            let second = std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() }).unwrap();
                let _ = done_rx.recv();
            });
            // SAFETY: gettid has no preconditions.
            tids_tx.send(unsafe { libc::gettid() }).unwrap();
            second.join().unwrap();
        });
        let tids: Vec<libc::pid_t> = tids_rx.iter().take(2).collect();
        let before: Vec<i32> = tids.iter().map(|t| policy_of(*t)).collect();
        let restored = priority.restore(std::process::id());
        let after: Vec<i32> = tids.iter().map(|t| policy_of(*t)).collect();
        drop(done_tx);
        first.join().unwrap();
        restored.unwrap();
        assert_eq!(before, [libc::SCHED_IDLE; 2]);
        assert_eq!(after, [priority.policy; 2]);
    }
}
