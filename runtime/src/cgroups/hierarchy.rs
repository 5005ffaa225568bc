//! The host's cgroup hierarchies, and where a container's directory is in
//! each: [`hierarchies`] reads `/proc/self/mountinfo` once, [`planned`] names
//! the directories a container gets, [`hierarchies_for`] finds them again
//! from the paths in a container's state.

use std::path::{Path, PathBuf};

use super::CgroupError;

/// One mounted hierarchy: where it is mounted, and its controllers
/// (empty for the unified v2 hierarchy).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    pub controllers: Vec<String>,
    /// This process's own cgroup in the hierarchy (for relative paths).
    pub own_path: PathBuf,
}

impl Hierarchy {
    pub fn is_unified(&self) -> bool {
        self.controllers.is_empty()
    }

    /// The directory name under `/sys/fs/cgroup` (`cpu,cpuacct`, `unified`, …).
    pub fn dir_name(&self) -> String {
        self.mount_point
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Reads a procfs file in one `read`: `read_to_string` grows its buffer
/// from 32 bytes, one syscall per doubling, because procfs reports size 0.
pub fn read_proc(path: &str) -> String {
    use std::io::Read;
    let mut text = String::with_capacity(16 * 1024);
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

/// The hierarchies this host mounts: at their usual places when the
/// filesystems there say so ([`usual_hierarchies`]), else as
/// `/proc/self/mountinfo` lists them. Reading mountinfo costs a line per
/// mount, and a host running a thousand containers has a thousand overlays:
/// milliseconds on every create and delete.
pub fn hierarchies() -> Vec<Hierarchy> {
    let own = read_proc("/proc/self/cgroup");
    if let Some(found) = usual_hierarchies(&own) {
        return found;
    }
    listed_hierarchies(&own, &read_proc("/proc/self/mountinfo"))
}

/// The hierarchies of `own` (this process's `/proc/self/cgroup`) at the
/// places systemd and every distribution mount them: `/sys/fs/cgroup` a
/// cgroup2 mount (a v2 host), or a tmpfs with each v1 hierarchy at
/// `/sys/fs/cgroup/<controllers>` (`name=X` at `X`) and the unified one at
/// `unified`. `None` when any hierarchy is not where it should be: then
/// mountinfo decides.
pub fn usual_hierarchies(own: &str) -> Option<Vec<Hierarchy>> {
    use nix::sys::statfs::statfs;
    usual_hierarchies_by(own, |path| statfs(path).ok().map(|s| s.filesystem_type()))
}

/// [`usual_hierarchies`] with `kind` telling the filesystem type at a path
/// (`statfs`), `None` where there is no such path.
fn usual_hierarchies_by(
    own: &str,
    kind: impl Fn(&Path) -> Option<nix::sys::statfs::FsType>,
) -> Option<Vec<Hierarchy>> {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, TMPFS_MAGIC};
    let root = Path::new("/sys/fs/cgroup");
    let mut lines: Vec<(u32, &str, &str)> = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let id = parts.next()?.parse().ok()?;
        lines.push((id, parts.next()?, parts.next()?));
    }
    match kind(root)? {
        t if t == CGROUP2_SUPER_MAGIC => {
            let (_, _, path) = lines.iter().find(|(_, names, _)| names.is_empty())?;
            return Some(vec![Hierarchy {
                mount_point: root.to_path_buf(),
                controllers: Vec::new(),
                own_path: PathBuf::from(path),
            }]);
        }
        t if t == TMPFS_MAGIC => {}
        _ => return None,
    }
    // mountinfo's order on such hosts: the v1 hierarchies as they were
    // mounted (their ids), then the unified one.
    lines.sort_by_key(|(id, _, _)| if *id == 0 { u32::MAX } else { *id });
    let mut out = Vec::new();
    for (_, names, path) in lines {
        let (dir, magic) = if names.is_empty() {
            ("unified", CGROUP2_SUPER_MAGIC)
        } else {
            (
                names.strip_prefix("name=").unwrap_or(names),
                CGROUP_SUPER_MAGIC,
            )
        };
        let mount_point = root.join(dir);
        match kind(&mount_point) {
            Some(t) if t == magic => {}
            // A hybrid host may mount no unified hierarchy: no directory,
            // or an empty one of the tmpfs (whoever unmounted it there,
            // as bench/startup.sh's wrapper does for crun).
            None if names.is_empty() => continue,
            Some(t) if t == TMPFS_MAGIC && names.is_empty() => continue,
            _ => return None,
        }
        out.push(Hierarchy {
            mount_point,
            controllers: if names.is_empty() {
                Vec::new()
            } else {
                names.split(',').map(str::to_string).collect()
            },
            own_path: PathBuf::from(path),
        });
    }
    Some(out)
}

/// The hierarchies `mountinfo` lists, with this process's paths in them
/// from `own` (`/proc/self/cgroup`).
pub fn listed_hierarchies(own: &str, mountinfo: &str) -> Vec<Hierarchy> {
    let own_path = |key: &str| -> PathBuf {
        own.lines()
            .find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let _ = parts.next();
                let names = parts.next()?;
                let path = parts.next()?;
                let matches = if key.is_empty() {
                    names.is_empty()
                } else {
                    names.split(',').any(|n| n == key)
                };
                matches.then(|| PathBuf::from(path))
            })
            .unwrap_or_else(|| PathBuf::from("/"))
    };
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || right.len() < 3 {
            continue;
        }
        let mount_point = PathBuf::from(fields[4]);
        if out.iter().any(|h| h.mount_point == mount_point) {
            continue;
        }
        match right[0] {
            "cgroup2" => out.push(Hierarchy {
                mount_point,
                controllers: Vec::new(),
                own_path: own_path(""),
            }),
            "cgroup" => {
                let controllers: Vec<String> = right[2]
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro")
                            && !o.starts_with("release_agent")
                            && *o != "clone_children"
                            && *o != "noprefix"
                            && *o != "xattr"
                    })
                    .map(str::to_string)
                    .collect();
                let key = controllers.first().cloned().unwrap_or_default();
                out.push(Hierarchy {
                    mount_point,
                    own_path: own_path(&key),
                    controllers,
                })
            }
            _ => {}
        }
    }
    out
}

/// The directory of the container in `hierarchy` for `cgroups_path`.
/// Absolute paths are taken from the hierarchy's root; relative ones from
/// the runtime's own cgroup, as runc does. Without a path: `/berth/ID`.
pub fn container_dir(
    hierarchy: &Hierarchy,
    cgroups_path: Option<&str>,
    id: &str,
) -> Result<PathBuf, CgroupError> {
    let path = cgroups_path.filter(|p| !p.is_empty());
    if let Some(p) = path {
        if p.split('/').any(|c| c == "..") {
            return Err(CgroupError::InvalidPath(p.to_string()));
        }
    }
    let inner = match path {
        Some(p) if p.starts_with('/') => PathBuf::from(p),
        Some(p) => hierarchy.own_path.join(p),
        None => PathBuf::from("/berth").join(id),
    };
    let relative = inner.strip_prefix("/").unwrap_or(&inner);
    Ok(hierarchy.mount_point.join(relative))
}

/// The hierarchy each of a container's directories lives in, in the same order.
pub fn hierarchies_for(paths: &[PathBuf]) -> Vec<Hierarchy> {
    let all = hierarchies();
    paths
        .iter()
        .filter_map(|p| {
            all.iter()
                .filter(|h| p.starts_with(&h.mount_point))
                .max_by_key(|h| h.mount_point.as_os_str().len())
                .cloned()
        })
        .collect()
}

/// The directories [`super::Driver::create`] will make, in hierarchy order.
pub fn planned(
    hierarchies: &[Hierarchy],
    cgroups_path: Option<&str>,
    id: &str,
) -> Result<Vec<PathBuf>, CgroupError> {
    hierarchies
        .iter()
        .map(|h| container_dir(h, cgroups_path, id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_paths() {
        let h = Hierarchy {
            mount_point: "/sys/fs/cgroup/memory".into(),
            controllers: vec!["memory".into()],
            own_path: "/user".into(),
        };
        assert_eq!(
            container_dir(&h, Some("/a/b"), "x").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/a/b")
        );
        assert_eq!(
            container_dir(&h, Some("a"), "x").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/user/a")
        );
        assert_eq!(
            container_dir(&h, None, "x").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/berth/x")
        );
        assert!(container_dir(&h, Some("/a/../../etc"), "x").is_err());
    }
}

#[cfg(test)]
mod usual_place_tests {
    use super::*;
    use nix::sys::statfs::{FsType, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, TMPFS_MAGIC};

    const HYBRID: &str = "2:memory:/user\n1:name=systemd:/user\n0::/user\n";

    /// A hybrid layout whose `unified` directory is `unified` (`None`: missing).
    fn hybrid(unified: Option<FsType>) -> Option<Vec<Hierarchy>> {
        usual_hierarchies_by(HYBRID, |path| match path.to_str()? {
            "/sys/fs/cgroup" => Some(TMPFS_MAGIC),
            "/sys/fs/cgroup/memory" | "/sys/fs/cgroup/systemd" => Some(CGROUP_SUPER_MAGIC),
            "/sys/fs/cgroup/unified" => unified,
            _ => None,
        })
    }

    fn names(found: Option<Vec<Hierarchy>>) -> Vec<String> {
        found
            .expect("the usual places")
            .iter()
            .map(Hierarchy::dir_name)
            .collect()
    }

    #[test]
    fn a_hybrid_host_without_its_unified_mount_has_the_v1_hierarchies() {
        assert_eq!(
            names(hybrid(Some(CGROUP2_SUPER_MAGIC))),
            ["systemd", "memory", "unified"]
        );
        assert_eq!(names(hybrid(None)), ["systemd", "memory"]);
        // An empty directory of the tmpfs: nothing mounted there.
        assert_eq!(names(hybrid(Some(TMPFS_MAGIC))), ["systemd", "memory"]);
        // Something else there: mountinfo has to say.
        assert!(hybrid(Some(CGROUP_SUPER_MAGIC)).is_none());
    }

    #[test]
    fn the_usual_places_give_what_mountinfo_gives_on_this_host() {
        let own = read_proc("/proc/self/cgroup");
        let listed = listed_hierarchies(&own, &read_proc("/proc/self/mountinfo"));
        assert!(!listed.is_empty(), "no cgroup hierarchy on this host");
        let usual = usual_hierarchies(&own).expect("the hierarchies at their usual places");
        assert_eq!(format!("{usual:?}"), format!("{listed:?}"));
    }
}
