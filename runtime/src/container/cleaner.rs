//! The create's cleaner: what a `create` killed half-way leaves is removed
//! all the same.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{io, ContainerError};
use crate::cgroups;

use crate::state;
pub(super) use crate::state::PLANNED_CGROUPS;

/// The first byte of `remove_retired`'s word; any other dismisses.
const REMOVE: u8 = b'r';

/// Cleans up after a `create` that dies without running its own cleanup
/// (SIGKILL: an engine's timeout, the OOM killer). Such a create leaves
/// cgroup directories that nothing removes (runc leaves them too, even
/// after its `delete --force`) and a state directory without state.json.
///
/// A small child of the create waits on a pipe whose other end only the
/// create holds. Dismissed (the create finished, or failed and cleaned up
/// itself), it exits; at end of file, the create died: it kills what is
/// left in the planned cgroups and removes them with the state directory,
/// unless the container was completely made (state.json exists). It runs
/// in a session of its own, so a kill of the caller's process group does
/// not take it along.
pub(super) struct Cleaner {
    /// The create's end; one byte dismisses the cleaner.
    dismiss: Option<OwnedFd>,
    pid: i32,
}

impl Cleaner {
    pub(super) fn spawn(root: &Path, id: &str) -> Result<Cleaner, ContainerError> {
        let (wait_end, dismiss) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("pipe")(e.into()))?;
        // SAFETY: berth is single-threaded here; the child runs ordinary code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io("cannot fork the create's cleaner")(
                std::io::Error::last_os_error(),
            ));
        }
        if pid == 0 {
            drop(dismiss);
            Self::watch(root, id, wait_end);
        }
        Ok(Cleaner {
            dismiss: Some(dismiss),
            pid,
        })
    }

    /// In the cleaner: waits for the verdict; never returns.
    fn watch(root: &Path, id: &str, wait_end: OwnedFd) -> ! {
        // It may outlive `run` for a moment: it holds neither the caller's
        // working directory (which the caller may unmount at once) nor its
        // descriptors (stdio, console socket).
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let root = root.as_path();
        // SAFETY: setsid, chdir, dup2 and close_range on this child's own
        // state and descriptors.
        unsafe {
            libc::setsid();
            libc::chdir(c"/".as_ptr());
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            let keep = wait_end.as_raw_fd();
            libc::syscall(libc::SYS_close_range, 3, keep - 1, 0);
            libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0);
        }
        let mut word = [0u8; 4096];
        let read = loop {
            match nix::unistd::read(wait_end.as_raw_fd(), &mut word) {
                Err(nix::Error::EINTR) => continue,
                other => break other,
            }
        };
        let retired = state::retired_name(id, std::process::id());
        match read {
            Ok(0) => {
                remove_orphaned(root, id);
                // A `run` that died between retiring the directory and
                // saying so.
                state::remove_retired(root, &retired);
            }
            Ok(n) if word[0] == REMOVE && word[1..n] == *retired.as_bytes() => {
                state::remove_retired(root, &retired);
                // Off `run`'s path: what earlier cleaners could not finish.
                state::remove_abandoned(root);
            }
            _ => {}
        }
        // SAFETY: leaving the cleaner without the create's destructors.
        unsafe { libc::_exit(0) }
    }

    /// In the create's init: closes the inherited end without dismissing,
    /// so that only the create's death ends the cleaner's wait.
    pub(super) fn leave(mut self) {
        drop(self.dismiss.take());
        std::mem::forget(self);
    }

    /// The name `run` retires the state directory under for this cleaner
    /// to remove (see [`Cleaner::remove_retired`]).
    pub(super) fn retired_name(&self, id: &str) -> String {
        state::retired_name(id, self.pid as u32)
    }

    /// `run`'s container is deleted but for its state directory, retired
    /// under [`Cleaner::retired_name`]: the cleaner removes it after `run`
    /// has returned, and is left to the system to reap. (On this kind of
    /// disk a directory's removal waits for the disk to discard its
    /// blocks, ~0.3 ms that `run`'s caller need not wait for.)
    pub(super) fn remove_retired(mut self, name: &str) {
        if let Some(fd) = self.dismiss.take() {
            let mut word = vec![REMOVE];
            word.extend_from_slice(name.as_bytes());
            let _ = nix::unistd::write(&fd, &word);
        }
        std::mem::forget(self);
    }

    /// The create is done: tells the cleaner to exit. It is reaped when
    /// the returned value goes (`run` lets that wait come after the
    /// container's release).
    pub(super) fn dismiss(mut self) -> Dismissed {
        if let Some(fd) = self.dismiss.take() {
            let _ = nix::unistd::write(&fd, b"d");
        }
        let pid = self.pid;
        std::mem::forget(self);
        Dismissed { pid }
    }

    /// As [`Cleaner::dismiss`], for a berth that exits next (`create`,
    /// `run --detach`): the cleaner is left to whoever reaps berth's
    /// orphans (the caller as subreaper, as shims are, or init), as `run`
    /// leaves the one that removes its state. Waiting for its exit cost
    /// those commands 0.4 ms here.
    pub(super) fn dismiss_and_leave(self) {
        std::mem::forget(self.dismiss());
    }
}

impl Drop for Cleaner {
    /// A create that failed: dismissed, and reaped at once.
    fn drop(&mut self) {
        if let Some(fd) = self.dismiss.take() {
            let _ = nix::unistd::write(&fd, b"d");
        }
        drop(Dismissed { pid: self.pid });
    }
}

/// A dismissed cleaner, reaped when dropped.
pub(super) struct Dismissed {
    pid: i32,
}

impl Drop for Dismissed {
    fn drop(&mut self) {
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
        crate::trace::step("create: cleaner dismissed");
    }
}

/// What the cleaner does once its create has died half-way.
fn remove_orphaned(root: &Path, id: &str) {
    // Whoever holds the lock now (a `delete --force`) finishes first; the
    // directory it removed may be a new create's by now, which the lock
    // taken tells apart (see `ContainerDir::open_left`).
    let Ok(dir) = state::ContainerDir::open_left(root, id) else {
        return;
    };
    if dir.path.join("state.json").exists() {
        return;
    }
    clear(&dir.path);
}

/// Removes what a create that died half-way left in `path` (its state
/// directory, locked by the caller, without state.json): whatever still
/// runs in its planned cgroups (an init past its parent-death signal,
/// waiting for `start`) is killed, then the cgroups and the directory go.
pub(super) fn clear(path: &Path) {
    let planned = std::fs::read_to_string(path.join(PLANNED_CGROUPS)).unwrap_or_default();
    let dirs = planned_dirs(&planned);
    let cgroup = cgroups::driver_for(&dirs);
    for pid in cgroup.pids() {
        // SAFETY: plain kill of a process of the dead create's own cgroups.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for _ in 0..500 {
        if cgroup.pids().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    cgroup.remove();
    let _ = std::fs::remove_dir_all(path);
}

/// The directories of a `cgroups.planned`: its ended lines (see
/// `create::make_state_dir`).
fn planned_dirs(text: &str) -> Vec<PathBuf> {
    text.split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n'))
        .filter(|line| !line.is_empty())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_plan_names_only_its_whole_lines() {
        let whole = "/sys/fs/cgroup/pids/berth/abc\n/sys/fs/cgroup/memory/berth/abc\n";
        assert_eq!(
            planned_dirs(whole),
            vec![
                PathBuf::from("/sys/fs/cgroup/pids/berth/abc"),
                PathBuf::from("/sys/fs/cgroup/memory/berth/abc")
            ]
        );
        // Cut inside the second line: "…/berth/ab" would be another
        // container's cgroup.
        assert_eq!(
            planned_dirs(&whole[..whole.len() - 2]),
            vec![PathBuf::from("/sys/fs/cgroup/pids/berth/abc")]
        );
        assert!(planned_dirs("").is_empty());
    }
}
