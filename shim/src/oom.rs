//! OOM notifications, one descriptor in the server's poll:
//! - cgroup v1: an eventfd registered through the memory cgroup's
//!   `cgroup.event_control` for `memory.oom_control`;
//! - cgroup v2: an inotify watch on the cgroup's `memory.events`.
//!
//! On v1 the kernel signals the eventfd when the cgroup hits OOM (before the
//! killer has picked its victim, so no counter has moved yet) and when the
//! cgroup goes away: a signal while the cgroup still exists is an OOM, as
//! containerd's runc shim counts it. On v2 `memory.events` changes for many
//! reasons; its `oom_kill` counter going up is an OOM.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OomError {
    #[error("cannot create an {0}: {1}")]
    Descriptor(&'static str, std::io::Error),
    #[error("cannot register for OOM events in {path}: {source}")]
    Register {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One container's OOM watch.
pub struct OomWatch {
    pub fd: OwnedFd,
    /// `memory.oom_control` (v1) or `memory.events` (v2).
    counter: PathBuf,
    kills: u64,
    v2: bool,
}

/// Where `pid`'s memory cgroup is: a v1 memory hierarchy's directory, or
/// the unified hierarchy's on a cgroup v2 host.
#[derive(Debug, PartialEq, Eq)]
pub enum MemoryCgroup {
    V1(PathBuf),
    V2(PathBuf),
}

/// `pid`'s memory cgroup, from /proc/PID/cgroup and where the hierarchies
/// are mounted: at their usual places when the filesystems there say so,
/// else as this mount namespace's mountinfo lists them. (mountinfo costs a
/// line per mount: with a thousand containers' overlays on the host, some
/// milliseconds on every container's start.)
///
/// `None` as well for a process that has exited: a zombie reads as the
/// root of every v1 hierarchy, and a watch there would report the host's
/// OOM kills as the container's. (An init that `start` at Create ran is
/// often gone before its shim gets here; its v2 line still names its own
/// cgroup.)
pub fn memory_cgroup(pid: u32) -> Option<MemoryCgroup> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let found = match locate(&cgroups, &usual_mounts()) {
        Some(found) => found,
        None => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            locate(&cgroups, &mountinfo)?
        }
    };
    // Still running after the read: what it read was the process's own.
    match found {
        MemoryCgroup::V1(_) if !running(pid) => None,
        found => Some(found),
    }
}

/// Whether `pid` exists and has not exited (`/proc/PID/stat`'s state is
/// neither Z nor X).
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which may itself hold ") ".
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// The hierarchies at `/sys/fs/cgroup` (v2) or `/sys/fs/cgroup/memory` and
/// `/sys/fs/cgroup/unified` (v1, hybrid), written as mountinfo lines for
/// [`locate`], each only when `statfs` finds that filesystem there.
fn usual_mounts() -> String {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, TMPFS_MAGIC};
    let kind = |path: &str| statfs(path).ok().map(|s| s.filesystem_type());
    let root = "/sys/fs/cgroup";
    match kind(root) {
        Some(t) if t == CGROUP2_SUPER_MAGIC => {
            format!("0 0 0:0 / {root} rw - cgroup2 cgroup2 rw\n")
        }
        // A v1 layout: a tmpfs holding one mount per hierarchy.
        Some(t) if t == TMPFS_MAGIC => {
            let mut lines = String::new();
            let memory = format!("{root}/memory");
            if kind(&memory) == Some(CGROUP_SUPER_MAGIC) {
                lines.push_str(&format!(
                    "0 0 0:0 / {memory} rw - cgroup cgroup rw,memory\n"
                ));
            }
            let unified = format!("{root}/unified");
            if kind(&unified) == Some(CGROUP2_SUPER_MAGIC) {
                lines.push_str(&format!("0 0 0:0 / {unified} rw - cgroup2 cgroup2 rw\n"));
            }
            lines
        }
        _ => String::new(),
    }
}

fn locate(cgroups: &str, mountinfo: &str) -> Option<MemoryCgroup> {
    let entry = |want: &dyn Fn(&str) -> bool| {
        cgroups.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            want(controllers).then(|| path.trim_start_matches('/').to_string())
        })
    };
    let mount = |want: &dyn Fn(&str, &str) -> bool| {
        mountinfo.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split_whitespace();
            let (fstype, _, options) = (right.next()?, right.next()?, right.next()?);
            want(fstype, options)
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
    };
    let v1 = entry(&|c| c.split(',').any(|c| c == "memory"));
    if let Some(relative) = v1 {
        let root = mount(&|fstype, options| {
            fstype == "cgroup" && options.split(',').any(|o| o == "memory")
        })?;
        return Some(MemoryCgroup::V1(root.join(relative)));
    }
    let relative = entry(&|c| c.is_empty())?;
    let root = mount(&|fstype, _| fstype == "cgroup2")?;
    let dir = root.join(relative);
    // A hybrid host's cgroup2 mount has no memory controller.
    dir.join("memory.events")
        .exists()
        .then_some(MemoryCgroup::V2(dir))
}

/// The `oom_kill` count in a `memory.oom_control` or `memory.events` text.
pub fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn read_kills(counter: &Path) -> Option<u64> {
    std::fs::read_to_string(counter).ok().map(|t| oom_kills(&t))
}

fn owned(fd: i32, what: &'static str) -> Result<OwnedFd, OomError> {
    if fd < 0 {
        return Err(OomError::Descriptor(what, std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl OomWatch {
    /// Watches the memory cgroup of `pid`; None on hosts without one.
    pub fn new(pid: u32) -> Result<Option<OomWatch>, OomError> {
        match memory_cgroup(pid) {
            Some(MemoryCgroup::V1(dir)) => Self::v1(&dir).map(Some),
            Some(MemoryCgroup::V2(dir)) => Self::v2(&dir).map(Some),
            None => Ok(None),
        }
    }

    fn v1(dir: &Path) -> Result<OomWatch, OomError> {
        let counter = dir.join("memory.oom_control");
        let register_error = |source| OomError::Register {
            path: dir.to_path_buf(),
            source,
        };
        let control = File::open(&counter).map_err(register_error)?;
        // SAFETY: eventfd takes no pointers; the result is checked by `owned`.
        let fd = owned(
            unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) },
            "eventfd",
        )?;
        std::fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", fd.as_raw_fd(), control.as_raw_fd()),
        )
        .map_err(register_error)?;
        let kills = read_kills(&counter).unwrap_or(0);
        Ok(OomWatch {
            fd,
            counter,
            kills,
            v2: false,
        })
    }

    fn v2(dir: &Path) -> Result<OomWatch, OomError> {
        let counter = dir.join("memory.events");
        // SAFETY: inotify_init1 takes no pointers; the result is checked by `owned`.
        let fd = owned(
            unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) },
            "inotify instance",
        )?;
        let path =
            std::ffi::CString::new(counter.as_os_str().as_encoded_bytes()).map_err(|_| {
                OomError::Register {
                    path: counter.clone(),
                    source: std::io::ErrorKind::InvalidInput.into(),
                }
            })?;
        // SAFETY: a valid inotify fd and a NUL-terminated path that outlives the call.
        let watch =
            unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) };
        if watch < 0 {
            return Err(OomError::Register {
                path: counter,
                source: std::io::Error::last_os_error(),
            });
        }
        let kills = read_kills(&counter).unwrap_or(0);
        Ok(OomWatch {
            fd,
            counter,
            kills,
            v2: true,
        })
    }

    /// Whether the cgroup had OOM-killed a process when the watch began
    /// (v1: `memory.oom_control`'s `oom_kill`; v2: `memory.events`').
    pub fn has_killed(&self) -> bool {
        self.kills > 0
    }

    /// Drains the descriptor: Some(true) for a new OOM kill, Some(false)
    /// for nothing new, None when the cgroup is gone (stop watching).
    pub fn fired(&mut self) -> Option<bool> {
        let mut buf = [0u8; 4096];
        while matches!(nix::unistd::read(self.fd.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
        let kills = read_kills(&self.counter)?;
        let new = !self.v2 || kills > self.kills;
        self.kills = kills;
        Some(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
35 24 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
36 24 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:15 - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_memory_cgroups_are_found_through_the_mount() {
        let cgroups = "12:pids:/c1\n7:memory:/berth/c1\n0::/berth/c1\n";
        assert_eq!(
            locate(cgroups, MOUNTINFO),
            Some(MemoryCgroup::V1(PathBuf::from(
                "/sys/fs/cgroup/memory/berth/c1"
            )))
        );
    }

    #[test]
    fn a_hybrid_hosts_cgroup2_without_memory_is_not_a_v2_cgroup() {
        let cgroups = "0::/nonexistent-berth-test\n";
        assert_eq!(locate(cgroups, MOUNTINFO), None);
    }

    #[test]
    fn the_usual_places_agree_with_mountinfo_on_this_host() {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let listed = locate(&cgroups, &mountinfo);
        assert!(listed.is_some(), "no memory cgroup on this host");
        assert_eq!(locate(&cgroups, &usual_mounts()), listed);
    }

    #[test]
    fn kill_counters_read_from_either_file() {
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            3
        );
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n"), 1);
        assert_eq!(oom_kills(""), 0);
    }

    /// A process of a v1 memory cgroup that has exited reads as the root's:
    /// no watch is set where the host's OOM kills would look like its.
    #[test]
    fn an_exited_process_has_no_v1_memory_cgroup() {
        let memory = Path::new("/sys/fs/cgroup/memory");
        if !memory.join("tasks").exists() {
            // A pure cgroup v2 host: nothing of v1 to test.
            assert!(
                std::env::var("CI").is_err(),
                "CI runs on a v1 (hybrid) host"
            );
            return;
        }
        /// The cgroup and the process in it, gone with the test however it ends.
        struct Scratch {
            dir: PathBuf,
            child: std::process::Child,
            go: Option<std::io::PipeWriter>,
        }
        impl Drop for Scratch {
            fn drop(&mut self) {
                drop(self.go.take());
                let _ = self.child.wait();
                let _ = std::fs::remove_dir(&self.dir);
            }
        }
        let name = format!("berth-oom-test-{}", std::process::id());
        let dir = memory.join(&name);
        std::fs::create_dir(&dir).unwrap();
        let (wait, go) = std::io::pipe().unwrap();
        let child = std::process::Command::new("sh")
            .args(["-c", "echo $$ > \"$1\"/tasks && read _", "sh"])
            .arg(&dir)
            .stdin(wait)
            .spawn();
        let mut scratch = Scratch {
            dir: dir.clone(),
            child: child.unwrap(),
            go: Some(go),
        };
        let pid = scratch.child.id();
        let until = |done: &dyn Fn() -> bool| {
            for _ in 0..500 {
                if done() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        until(&|| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|t| t.contains(&format!(":memory:/{name}\n")))
        });
        assert_eq!(memory_cgroup(pid), Some(MemoryCgroup::V1(dir)));
        // Exited, not yet reaped.
        drop(scratch.go.take());
        until(&|| !running(pid));
        assert!(!running(pid));
        assert_eq!(memory_cgroup(pid), None);
    }
}
