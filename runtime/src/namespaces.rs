//! Creating and joining namespaces.
//!
//! Which process does what, and why:
//! - the runtime joins the namespaces given by path that only affect its
//!   children or are harmless to it (net, ipc, uts, cgroup, pid, time), and
//!   unshares a new time namespace (its offsets must be written before any
//!   process enters it), then clones the init with `CLONE_NEWUSER` and
//!   `CLONE_NEWPID` so the new pid namespace is owned by the new user
//!   namespace (mounting `/proc` needs that);
//! - the init, born in its unified cgroup where there is one, waits for
//!   its id maps and joins its other cgroups (both before
//!   anything changes what it sees of the host or who it is there), joins a
//!   user or mount namespace given by path, then unshares every other new
//!   namespace, so they are owned by the container's user namespace.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

use crate::spec::{IdMapping, NamespaceKind, TimeOffset};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("cannot open namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot join {kind:?} namespace {path}: {errno}")]
    Join {
        kind: NamespaceKind,
        path: PathBuf,
        errno: nix::Error,
    },
    #[error("cannot create namespaces {flags:?}: {errno}")]
    Unshare {
        flags: CloneFlags,
        errno: nix::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The namespaces of a spec split by who creates or joins them.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Joined by the runtime before cloning.
    pub runtime_joins: Vec<(NamespaceKind, PathBuf)>,
    /// Joined by the init, in order (user first).
    pub init_joins: Vec<(NamespaceKind, PathBuf)>,
    /// `CLONE_*` flags of the clone itself.
    pub clone_flags: libc::c_int,
    /// Flags the init unshares after its ids are mapped.
    pub unshare_flags: libc::c_int,
    pub new_user: bool,
    pub new_time: bool,
    pub new_pid: bool,
}

impl Plan {
    pub fn new(namespaces: &[(NamespaceKind, Option<PathBuf>)]) -> Plan {
        let mut plan = Plan::default();
        for (kind, path) in namespaces {
            match (kind, path) {
                (NamespaceKind::User | NamespaceKind::Mount, Some(path)) => {
                    plan.init_joins.push((*kind, path.clone()))
                }
                (_, Some(path)) => plan.runtime_joins.push((*kind, path.clone())),
                (NamespaceKind::User, None) => {
                    plan.new_user = true;
                    plan.clone_flags |= libc::CLONE_NEWUSER;
                }
                // With a user namespace joined by path, the new pid namespace
                // is owned by the runtime's user namespace (a known limit:
                // mounting /proc inside then needs a bind of the host's).
                (NamespaceKind::Pid, None) => {
                    plan.new_pid = true;
                    plan.clone_flags |= libc::CLONE_NEWPID;
                }
                (NamespaceKind::Time, None) => plan.new_time = true,
                (kind, None) => plan.unshare_flags |= kind.clone_flag(),
            }
        }
        // The rootfs is always built in a mount namespace of its own: without
        // one the container's mounts would be made in (and left in) the
        // host's, which runc 1.1 does.
        if !namespaces.iter().any(|(k, _)| *k == NamespaceKind::Mount) {
            plan.unshare_flags |= libc::CLONE_NEWNS;
        }
        plan.init_joins
            .sort_by_key(|(k, _)| *k != NamespaceKind::User);
        plan
    }
}

/// The runtime's own namespaces of some kinds, kept open so that it can
/// return to them after joining a container's: hooks that the spec runs
/// "in the runtime namespace" (prestart, createRuntime) must not run in
/// the container's network or time namespace.
pub struct Saved(Vec<(NamespaceKind, std::fs::File)>);

impl Saved {
    pub fn take(kinds: impl Iterator<Item = NamespaceKind>) -> Result<Saved, NamespaceError> {
        let mut saved = Vec::new();
        for kind in kinds {
            // pid and time: what children get, which joining changes.
            let name = match kind {
                NamespaceKind::Pid => "pid_for_children",
                NamespaceKind::Time => "time_for_children",
                other => other.proc_name(),
            };
            let path = PathBuf::from(format!("/proc/self/ns/{name}"));
            let file = std::fs::File::open(&path)
                .map_err(|source| NamespaceError::Open { path, source })?;
            saved.push((kind, file));
        }
        Ok(Saved(saved))
    }

    /// Returns to the saved namespaces.
    pub fn restore(&self) -> Result<(), NamespaceError> {
        for (kind, file) in &self.0 {
            nix::sched::setns(
                file.as_fd(),
                CloneFlags::from_bits_retain(kind.clone_flag()),
            )
            .map_err(|errno| NamespaceError::Join {
                kind: *kind,
                path: PathBuf::from(format!("/proc/self/ns/{}", kind.proc_name())),
                errno,
            })?;
        }
        Ok(())
    }
}

/// `setns` into the namespace at `path`.
pub fn join(kind: NamespaceKind, path: &Path) -> Result<(), NamespaceError> {
    let file = std::fs::File::open(path).map_err(|source| NamespaceError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    nix::sched::setns(
        file.as_fd(),
        CloneFlags::from_bits_retain(kind.clone_flag()),
    )
    .map_err(|errno| NamespaceError::Join {
        kind,
        path: path.to_path_buf(),
        errno,
    })
}

pub fn unshare(flags: libc::c_int) -> Result<(), NamespaceError> {
    if flags == 0 {
        return Ok(());
    }
    let flags = CloneFlags::from_bits_retain(flags);
    nix::sched::unshare(flags).map_err(|errno| NamespaceError::Unshare { flags, errno })
}

fn write(path: PathBuf, content: &str) -> Result<(), NamespaceError> {
    std::fs::write(&path, content).map_err(|source| NamespaceError::Write { path, source })
}

fn map_text(mappings: &[IdMapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// Writes the uid and gid maps of `pid` (the runtime is root in the parent
/// namespace, so `setgroups` stays allowed inside).
pub fn write_id_maps(
    pid: i32,
    uid_mappings: &[IdMapping],
    gid_mappings: &[IdMapping],
) -> Result<(), NamespaceError> {
    write(
        PathBuf::from(format!("/proc/{pid}/uid_map")),
        &map_text(uid_mappings),
    )?;
    write(
        PathBuf::from(format!("/proc/{pid}/gid_map")),
        &map_text(gid_mappings),
    )
}

/// Creates a time namespace for the runtime's children with the spec's offsets.
pub fn unshare_time(
    offsets: &std::collections::BTreeMap<String, TimeOffset>,
) -> Result<(), NamespaceError> {
    unshare(NamespaceKind::Time.clone_flag())?;
    if offsets.is_empty() {
        return Ok(());
    }
    let text: String = offsets
        .iter()
        .map(|(clock, o)| format!("{clock} {} {}\n", o.secs, o.nanosecs))
        .collect();
    write(PathBuf::from("/proc/self/timens_offsets"), &text)
}
