//! What every driver does alike with a container's directories once their
//! place is known: make them (`create`, each driver readies its own), open
//! the unified one for a child to be born in ([`Birthplace`]), move the
//! calling process into the others (`join_self`, or in two halves:
//! `open_joins` by the runtime, `join_with` by its init), list (`pids`), check for a freeze
//! (`is_frozen`), remove (`remove`); and the paths of `exec --cgroup`
//! ([`sub_cgroups`]).
//! The drivers' [`super::Driver`] methods call these.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{files, hierarchies_for, io, CgroupError};

/// Makes `paths` in order, each then readied by `ready` (given its
/// index); a failure removes what was made.
pub(super) fn create(
    paths: &[PathBuf],
    wanted: impl Fn(usize) -> bool,
    ready: impl Fn(usize, &Path) -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    let mut made: Vec<PathBuf> = Vec::new();
    for (index, dir) in paths.iter().enumerate().filter(|(i, _)| wanted(*i)) {
        // Sharing a cgroup with other processes would let `kill --all` and
        // `delete` signal them: refuse, as runc 1.2 does.
        if !pids(std::slice::from_ref(dir)).is_empty() {
            remove(&made);
            return Err(CgroupError::InUse(dir.clone()));
        }
        if let Err(e) = files::create_dir_all(dir) {
            remove(&made);
            return Err(io(dir)(e));
        }
        made.push(dir.clone());
        if let Err(e) = ready(index, dir) {
            remove(&made);
            return Err(e);
        }
    }
    Ok(())
}

/// Moves the calling process into every directory but `born_in` (the one
/// clone3 placed it in, see [`Birthplace`]); it must have a single thread
/// (a child just forked or cloned, before it starts any).
///
/// A v1 hierarchy gets `0` in `tasks`: that moves the writer's own thread,
/// which here is the whole process. Moving a process through
/// `cgroup.procs` (or any thread but the writer) makes the kernel take
/// `cgroup_threadgroup_rwsem` for writing, and the first such writer after
/// a quiet spell waits for an RCU grace period: 5 to 15 ms measured here,
/// more than the rest of `berth run`. Moving the writer itself skips that
/// lock (the thread cannot exit or exec under the kernel's hands). The
/// unified hierarchy has no `tasks`: a child born elsewhere (the kernel
/// refused clone3) writes `0` to its `cgroup.procs`, and may wait.
pub(super) fn join_self(paths: &[PathBuf], born_in: Option<&Path>) -> Result<(), CgroupError> {
    join_with(paths, born_in, open_joins(paths, born_in)?)
}

/// The files [`join_self`] writes to, opened (close-on-exec), one per
/// directory to join in `paths` order: `tasks`, or `cgroup.procs` where
/// the hierarchy has no `tasks` (the unified one). The runtime opens them
/// for its init, which only writes (`Prepared` carries them, see
/// `channel`): the path walks are off the init's critical path.
pub(super) fn open_joins(
    paths: &[PathBuf],
    born_in: Option<&Path>,
) -> Result<Vec<OwnedFd>, CgroupError> {
    to_join(paths, born_in)
        .map(|dir| {
            let tasks = dir.join("tasks");
            let write = |path: &Path| files::open_for_writing(path);
            match write(&tasks) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let procs = dir.join("cgroup.procs");
                    write(&procs).map_err(io(&procs))
                }
                other => other.map_err(io(&tasks)),
            }
            .map(OwnedFd::from)
        })
        .collect()
}

/// Moves the calling process (one thread, see [`join_self`]) into each
/// directory of `paths` but `born_in` through `files`, [`open_joins`]'
/// answer for the same directories.
pub(super) fn join_with(
    paths: &[PathBuf],
    born_in: Option<&Path>,
    files: Vec<OwnedFd>,
) -> Result<(), CgroupError> {
    let dirs: Vec<&PathBuf> = to_join(paths, born_in).collect();
    if dirs.len() != files.len() {
        return Err(CgroupError::JoinFiles {
            expected: dirs.len(),
            got: files.len(),
        });
    }
    for (dir, file) in dirs.into_iter().zip(files) {
        std::fs::File::from(file)
            .write_all(b"0")
            .map_err(|source| CgroupError::Join {
                dir: dir.clone(),
                source,
            })?;
    }
    Ok(())
}

/// The directories of `paths` a process born in `born_in` has to join.
fn to_join<'a>(
    paths: &'a [PathBuf],
    born_in: Option<&'a Path>,
) -> impl Iterator<Item = &'a PathBuf> + 'a {
    paths
        .iter()
        .filter(move |dir| Some(dir.as_path()) != born_in)
}

/// A container's directory in the unified hierarchy, opened for a child to
/// be born in (`process::clone_into_cgroup`): clone3 takes the directory
/// as a descriptor, and a child born there never has to join it.
pub struct Birthplace {
    dir: PathBuf,
    fd: OwnedFd,
}

impl Birthplace {
    /// Opens `dir` (`O_PATH`: the kernel needs only the directory, and
    /// the descriptor can read or write nothing). Close-on-exec: nothing
    /// the child executes keeps a handle on the host's cgroup tree.
    pub fn open(dir: &Path) -> Result<Birthplace, CgroupError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)
            .map_err(io(dir))?;
        Ok(Birthplace {
            dir: dir.to_path_buf(),
            fd: file.into(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The one of `paths` in a cgroup v2 hierarchy (by `statfs`), looked for
/// from the end: where the unified hierarchy is, it comes last.
pub(super) fn unified_of(paths: &[PathBuf]) -> Option<&Path> {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
    paths
        .iter()
        .rev()
        .find(|dir| statfs(dir.as_path()).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC))
        .map(PathBuf::as_path)
}

/// The container's cgroup directories with `exec --cgroup` applied: each
/// argument is `PATH` (every hierarchy) or `CONTROLLER[,CONTROLLER]:PATH`,
/// naming an existing sub-cgroup of the container's own (as runc's flag).
pub fn sub_cgroups(paths: &[PathBuf], args: &[String]) -> Result<Vec<PathBuf>, CgroupError> {
    let hierarchies = hierarchies_for(paths);
    let mut parsed = Vec::new();
    for arg in args {
        let bad = |why: &str| CgroupError::SubCgroup {
            arg: arg.clone(),
            why: why.to_string(),
        };
        let (controllers, sub) = match arg.split_once(':') {
            Some((list, sub)) => (list.split(',').map(str::to_string).collect(), sub),
            None => (Vec::new(), arg.as_str()),
        };
        let sub = Path::new(sub.trim_start_matches('/'));
        if sub.as_os_str().is_empty()
            || sub
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad("the path must name a cgroup below the container's"));
        }
        for name in &controllers {
            if !hierarchies.iter().any(|h| h.controllers.contains(name)) {
                return Err(bad(&format!("the container has no {name:?} controller")));
            }
        }
        parsed.push((arg, controllers, sub.to_path_buf()));
    }
    let mut out = Vec::new();
    for (dir, hierarchy) in paths.iter().zip(&hierarchies) {
        let chosen = parsed.iter().find(|(_, controllers, _)| {
            controllers.is_empty()
                || controllers
                    .iter()
                    .any(|c| hierarchy.controllers.contains(c))
        });
        let path = match chosen {
            Some((arg, _, sub)) => {
                let path = dir.join(sub);
                if !path.is_dir() {
                    return Err(CgroupError::SubCgroup {
                        arg: (*arg).clone(),
                        why: format!("{} does not exist", path.display()),
                    });
                }
                path
            }
            None => dir.clone(),
        };
        out.push(path);
    }
    Ok(out)
}

/// Removes the directories, retrying while the kernel still counts exiting
/// tasks.
pub(super) fn remove(paths: &[PathBuf]) {
    for dir in paths {
        // Usually there is nothing below: the kernel refuses (EBUSY) a
        // directory with sub-cgroups, and only then are they listed.
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            _ => continue,
        }
        // Sub-cgroups first (`exec --cgroup` ones, or a nested engine's).
        let children: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        remove(&children);
        for attempt in 0..50 {
            match std::fs::remove_dir(dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                _ => break,
            }
        }
    }
}

/// Pids in the container's cgroup and every cgroup below it (from the
/// first hierarchy that lists them).
pub(super) fn pids(paths: &[PathBuf]) -> Vec<i32> {
    fn walk(dir: &Path, out: &mut Vec<i32>) {
        match files::read_to_string(&dir.join("cgroup.procs")) {
            Ok(text) => out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
            // No such directory (a container's, before it is made).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => {}
        }
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), out);
            }
        }
    }
    for dir in paths {
        if dir.join("cgroup.procs").exists() {
            let mut out = Vec::new();
            walk(dir, &mut out);
            return out;
        }
    }
    Vec::new()
}

/// Whether the container's freezer says it is frozen.
/// Freezing in progress counts: nothing may join a cgroup on its way to frozen.
pub(super) fn is_frozen(paths: &[PathBuf]) -> bool {
    let read =
        |dir: &PathBuf, file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    paths.iter().any(|dir| {
        matches!(read(dir, "freezer.state").trim(), "FROZEN" | "FREEZING")
            || read(dir, "cgroup.freeze").trim() == "1"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_needs_one_file_per_directory_not_born_in() {
        let paths = [
            PathBuf::from("/sys/fs/cgroup/pids/berth/x"),
            PathBuf::from("/sys/fs/cgroup/unified/berth/x"),
        ];
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        // Born in the unified one: one file, for pids, is what it takes.
        let born_in = Some(paths[1].as_path());
        assert!(matches!(
            join_with(&paths, born_in, vec![null(), null()]),
            Err(CgroupError::JoinFiles {
                expected: 1,
                got: 2
            })
        ));
        assert!(matches!(
            join_with(&paths, None, vec![null()]),
            Err(CgroupError::JoinFiles {
                expected: 2,
                got: 1
            })
        ));
        // Nothing to join, nothing handed: nothing written.
        assert!(join_with(&paths[1..], born_in, Vec::new()).is_ok());
    }
}
