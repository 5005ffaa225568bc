//! A container's cgroup directories once their place is known: made
//! ([`create`]), joined by a process ([`join`]), listed ([`pids`]),
//! checked for a freeze ([`is_frozen`]) and removed ([`remove`]), on every
//! hierarchy alike.

use std::path::{Path, PathBuf};

use super::{container_dir, hierarchies_for, io, is_pure_v2, v2, CgroupError, Hierarchy};

/// Creates the container's directories; returns them in hierarchy order.
pub fn create(
    hierarchies: &[Hierarchy],
    cgroups_path: Option<&str>,
    id: &str,
) -> Result<Vec<PathBuf>, CgroupError> {
    let mut made = Vec::new();
    for hierarchy in hierarchies {
        let dir = container_dir(hierarchy, cgroups_path, id)?;
        // Sharing a cgroup with other processes would let `kill --all` and
        // `delete` signal them: refuse, as runc 1.2 does.
        if !pids(std::slice::from_ref(&dir)).is_empty() {
            remove(&made);
            return Err(CgroupError::InUse(dir));
        }
        if let Err(e) = std::fs::create_dir_all(&dir) {
            remove(&made);
            return Err(io(&dir)(e));
        }
        made.push(dir.clone());
        if is_pure_v2(hierarchies) {
            v2::enable_controllers(&hierarchy.mount_point, &dir);
        }
        if hierarchy.controllers.iter().any(|c| c == "cpuset") {
            if let Err(e) = inherit_cpuset(&hierarchy.mount_point, &dir) {
                remove(&made);
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// A new v1 cpuset starts with no cpus and no mems, and refuses tasks until
/// they are set: copy them down from the nearest ancestor that has them.
fn inherit_cpuset(mount_point: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut empty = Vec::new();
        let mut value = None;
        for ancestor in dir.ancestors().take_while(|a| a.starts_with(mount_point)) {
            let path = ancestor.join(file);
            let own = std::fs::read_to_string(&path).map_err(io(&path))?;
            if !own.trim().is_empty() {
                value = Some(own.trim().to_string());
                break;
            }
            empty.push(path);
        }
        let Some(value) = value else {
            return Err(CgroupError::NoController(
                "cpuset (the hierarchy has no cpus)",
            ));
        };
        for path in empty.iter().rev() {
            std::fs::write(path, &value).map_err(io(path))?;
        }
    }
    Ok(())
}

/// Moves `pid` into every directory.
pub fn join(paths: &[PathBuf], pid: i32) -> Result<(), CgroupError> {
    for dir in paths {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(io(&procs))?;
    }
    Ok(())
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
pub fn remove(paths: &[PathBuf]) {
    for dir in paths {
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
pub fn pids(paths: &[PathBuf]) -> Vec<i32> {
    fn walk(dir: &Path, out: &mut Vec<i32>) {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
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
pub fn is_frozen(paths: &[PathBuf]) -> bool {
    let read =
        |dir: &PathBuf, file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    paths.iter().any(|dir| {
        matches!(read(dir, "freezer.state").trim(), "FROZEN" | "FREEZING")
            || read(dir, "cgroup.freeze").trim() == "1"
    })
}
