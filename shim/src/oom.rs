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
/// The kernel shows a task that is exiting (or has exited) at the root of
/// every v1 hierarchy; its v2 line stays its own. An init that `start` at
/// Create ran is often gone before its shim gets here, and a watch on the
/// host's root memory cgroup would count the host's OOM kills as the
/// container's: for such a task, the directory is the one `linux.cgroupsPath`
/// of `bundle`'s config names (absolute, cgroupfs form), if it exists, else
/// `None`.
pub fn memory_cgroup(pid: u32, bundle: &Path) -> Option<MemoryCgroup> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let found = match locate(&cgroups, &usual_mounts()) {
        Some(found) => found,
        None => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            locate(&cgroups, &mountinfo)?
        }
    };
    // Read first, then asked: a task still not exiting after the read was
    // shown where it is (the flag, once set, stays).
    match found {
        MemoryCgroup::V1(root) if v1_memory_at_root(&cgroups) && exiting(pid) => {
            spec_cgroup(bundle, &root).map(MemoryCgroup::V1)
        }
        found => Some(found),
    }
}

/// Whether the v1 memory line of a /proc/PID/cgroup text is `/`.
fn v1_memory_at_root(cgroups: &str) -> bool {
    cgroup_path(cgroups, &is_v1_memory) == Some("/")
}

/// The path of the first /proc/PID/cgroup line whose controller list
/// `want` takes (an empty list is the v2 line).
fn cgroup_path<'a>(cgroups: &'a str, want: &dyn Fn(&str) -> bool) -> Option<&'a str> {
    cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        want(controllers).then_some(path)
    })
}

fn is_v1_memory(controllers: &str) -> bool {
    controllers.split(',').any(|c| c == "memory")
}

/// The kernel's PF_EXITING task flag.
const PF_EXITING: u64 = 0x4;

/// Whether `pid` is exiting, has exited or is gone.
fn exiting(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| exiting_in(&stat))
}

/// Whether a /proc/PID/stat text says its task is exiting: the flags word
/// (the ninth field) holds PF_EXITING.
fn exiting_in(stat: &str) -> bool {
    let Some(mut fields) = berth_runtime::state::stat_fields(stat) else {
        return true;
    };
    // state ppid pgrp session tty_nr tpgid flags
    fields
        .nth(6)
        .and_then(|flags| flags.parse::<u64>().ok())
        .is_none_or(|flags| flags & PF_EXITING != 0)
}

/// The one field of a runtime spec [`spec_cgroup`] reads.
#[derive(serde::Deserialize)]
struct SpecCgroupsPath {
    linux: Option<LinuxCgroupsPath>,
}

#[derive(serde::Deserialize)]
struct LinuxCgroupsPath {
    #[serde(rename = "cgroupsPath")]
    cgroups_path: Option<String>,
}

/// The directory `bundle`'s `linux.cgroupsPath` names under the v1 memory
/// hierarchy mounted at `root`, if it is absolute, in cgroupfs form (no
/// systemd `slice:prefix:name`) and exists.
fn spec_cgroup(bundle: &Path, root: &Path) -> Option<PathBuf> {
    let config = std::fs::read(bundle.join("config.json")).ok()?;
    // Only the one field is built; the rest (a seccomp profile of some
    // hundred names, on the exit path of a container gone at once) is
    // skipped over.
    let spec: SpecCgroupsPath = serde_json::from_slice(&config).ok()?;
    let path = spec.linux?.cgroups_path?;
    let relative = path.strip_prefix('/').filter(|p| !p.contains(':'))?;
    let dir = root.join(relative);
    dir.join("memory.oom_control").is_file().then_some(dir)
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
        cgroup_path(cgroups, want).map(|path| path.trim_start_matches('/'))
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
    let v1 = entry(&is_v1_memory);
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
    /// Watches the memory cgroup of `pid`, whose spec is `bundle`'s (see
    /// [`memory_cgroup`]); None on hosts without one.
    pub fn new(pid: u32, bundle: &Path) -> Result<Option<OomWatch>, OomError> {
        match memory_cgroup(pid, bundle) {
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

    #[test]
    fn the_exiting_flag_is_read_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty_nr tpgid flags …
        let running = "42 (sh) S 1 42 42 0 -1 4194560 120 0 0 0";
        let exiting = "42 (sh) R 1 42 42 0 -1 4194564 120 0 0 0";
        let zombie = "42 (sh) Z 1 42 42 0 -1 4227396 120 0 0 0";
        assert!(!exiting_in(running));
        assert!(exiting_in(exiting));
        assert!(exiting_in(zombie));
        // A command name that looks like the fields that follow it.
        let tricky = "42 (a) Z 1 2 3 4 5 6) S 1 42 42 0 -1 4194560 120 0 0 0";
        assert!(!exiting_in(tricky));
        assert!(exiting_in("garbled"));
    }

    #[test]
    fn only_an_absolute_cgroupfs_path_of_the_spec_is_taken() {
        let scratch = std::env::temp_dir().join(format!("berth-oom-spec-{}", std::process::id()));
        let root = scratch.join("memory");
        let dir = root.join("berth-imaged/c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.oom_control"), "oom_kill 0\n").unwrap();
        let with = |path: serde_json::Value| {
            let spec = serde_json::json!({"linux": {"cgroupsPath": path}});
            std::fs::write(scratch.join("config.json"), spec.to_string()).unwrap();
            spec_cgroup(&scratch, &root)
        };
        let found = with("/berth-imaged/c1".into());
        let relative = with("berth-imaged/c1".into());
        let systemd = with("system.slice:berth:c1".into());
        let missing = with("/berth-imaged/c2".into());
        let absent = with(serde_json::Value::Null);
        std::fs::remove_dir_all(&scratch).unwrap();
        assert_eq!(found, Some(dir));
        assert_eq!(
            (relative, systemd, missing, absent),
            (None, None, None, None)
        );
    }

    /// A v1 memory cgroup and a process in it, gone with the test however
    /// it ends.
    struct Scratch {
        dir: PathBuf,
        child: Option<std::process::Child>,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_dir(&self.dir);
        }
    }

    /// A process of a v1 memory cgroup reads as the root's once it exits:
    /// its cgroup is then the spec's, or none, never the host's root.
    #[test]
    fn an_exited_process_is_found_through_its_spec_or_not_at_all() {
        let under_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let memory = Path::new("/sys/fs/cgroup/memory");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !(root && memory.join("tasks").exists()) {
            assert!(
                !under_ci,
                "CI runs as root on a host with a v1 memory hierarchy"
            );
            eprintln!("skipped: needs root and a v1 memory hierarchy");
            return;
        }
        let name = format!("berth-oom-test-{}", std::process::id());
        let mut scratch = Scratch {
            dir: memory.join(&name),
            child: None,
        };
        std::fs::create_dir(&scratch.dir).unwrap();
        let child = std::process::Command::new("sh")
            .args(["-c", "echo $$ > \"$1\"/tasks && exec sleep 30", "sh"])
            .arg(&scratch.dir)
            .spawn();
        let pid = scratch.child.insert(child.unwrap()).id();
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
        let bundle = std::env::temp_dir().join(format!("{name}-bundle"));
        std::fs::create_dir_all(&bundle).unwrap();
        let spec = serde_json::json!({"linux": {"cgroupsPath": format!("/{name}")}});
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        let none = std::env::temp_dir().join(format!("{name}-none"));
        let alive = memory_cgroup(pid, &none);
        // Killed, not yet reaped: the kernel shows it at the root.
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        until(&|| exiting(pid));
        let by_spec = memory_cgroup(pid, &bundle);
        let without_spec = memory_cgroup(pid, &none);
        let shown = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        drop(scratch);
        std::fs::remove_dir_all(&bundle).unwrap();
        let dir = memory.join(&name);
        assert_eq!(alive, Some(MemoryCgroup::V1(dir.clone())));
        assert!(v1_memory_at_root(&shown), "{shown}");
        assert_eq!(by_spec, Some(MemoryCgroup::V1(dir)));
        assert_eq!(without_spec, None);
    }
}
