//! OOM notifications on cgroup v1: an eventfd registered through the
//! memory cgroup's `cgroup.event_control` for `memory.oom_control`. The
//! kernel signals it on an OOM in the cgroup and when the cgroup goes away;
//! the `oom_kill` counter tells the two apart.
//! (cgroup v2 hosts would watch `memory.events` instead: not done yet.)

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OomError {
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("cannot register for OOM events in {path}: {source}")]
    Register {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One container's OOM eventfd.
pub struct OomWatch {
    pub eventfd: OwnedFd,
    dir: PathBuf,
    kills: u64,
}

/// The v1 memory cgroup directory of `pid`, if the host has one.
pub fn memory_cgroup(pid: u32) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let relative = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    })?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount_point = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        let (fstype, _, options) = (right.next()?, right.next()?, right.next()?);
        (fstype == "cgroup" && options.split(',').any(|o| o == "memory"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })?;
    Some(mount_point.join(relative.trim_start_matches('/')))
}

fn oom_kills(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("memory.oom_control")).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse().ok())
        })
        .or(Some(0))
}

impl OomWatch {
    /// Watches the memory cgroup of `pid`; None on hosts without one.
    pub fn new(pid: u32) -> Result<Option<OomWatch>, OomError> {
        let Some(dir) = memory_cgroup(pid) else {
            return Ok(None);
        };
        let control_path = dir.join("memory.oom_control");
        let register_error = |source| OomError::Register {
            path: dir.clone(),
            source,
        };
        let control = File::open(&control_path).map_err(register_error)?;
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(OomError::EventFd(std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just created and is owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", eventfd.as_raw_fd(), control.as_raw_fd()),
        )
        .map_err(register_error)?;
        let kills = oom_kills(&dir).unwrap_or(0);
        Ok(Some(OomWatch {
            eventfd,
            dir,
            kills,
        }))
    }

    /// Drains the eventfd: Some(true) for a new OOM kill, Some(false) for
    /// nothing new, None when the cgroup is gone (stop watching).
    pub fn fired(&mut self) -> Option<bool> {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(self.eventfd.as_raw_fd(), &mut buf);
        let kills = oom_kills(&self.dir)?;
        let new = kills > self.kills;
        self.kills = kills;
        Some(new)
    }
}
