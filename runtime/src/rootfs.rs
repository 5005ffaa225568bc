//! The container's filesystem: the rootfs as a mount of its own, every mount
//! of the spec, `/dev`, `pivot_root`, masked and read-only paths.
//!
//! Every destination is resolved with [`berth_oci::safe_path`] against an fd of
//! the rootfs, and every mount is made on `/proc/self/fd/N` of the resolved
//! directory, so a symlink swapped in between resolution and mount cannot
//! redirect it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::mounts::{self, MountError, MountOptions};
use crate::spec::{Mount, Spec};
use berth_oci::safe_path::{self, Create, SafePathError};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Path(#[from] SafePathError),
    #[error(transparent)]
    Device(#[from] crate::devices::DeviceError),
    #[error("cannot open rootfs {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind mount source {path}: {source}")]
    Source {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{kind} cannot be mounted on {dest}: the destination is a symlink")]
    SymlinkDestination { kind: String, dest: PathBuf },
    #[error("pivot_root to {path}: {errno}")]
    Pivot { path: PathBuf, errno: nix::Error },
    #[error("cannot write sysctl {key}={value}: {source}")]
    Sysctl {
        key: String,
        value: String,
        source: std::io::Error,
    },
}

/// What the mount steps need to know beyond the spec.
pub struct Context<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub in_user_namespace: bool,
    pub cgroup_paths: &'a [PathBuf],
    pub hierarchies: &'a [crate::cgroups::Hierarchy],
    pub new_cgroup_namespace: bool,
    /// The spec's id-mapped mounts, made by the runtime: [`idmapped_mounts`].
    pub idmapped: &'a [Option<OwnedFd>],
}

fn root_fd(path: &Path) -> Result<OwnedFd, RootfsError> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| RootfsError::Root {
            path: path.to_path_buf(),
            source,
        })
}

/// Sets the propagation of the container's copy of the host's mounts
/// (`rootfsPropagation`, else rslave: nothing the container mounts reaches
/// the host) and makes the rootfs a mount point.
///
/// pivot_root(2) refuses a new root whose parent mount is shared, and a
/// bind made under a shared mount would propagate back to the host: the
/// mount holding the rootfs goes private first (as runc does), whatever
/// `rootfsPropagation` asked for `/`; `/` gets that at the end
/// ([`finish_root`]).
pub fn prepare(ctx: &Context) -> Result<(), RootfsError> {
    let propagation = ctx
        .spec
        .linux()
        .rootfs_propagation
        .as_deref()
        .and_then(mounts::propagation_flag)
        // An unbindable `/` now would refuse the bind of a rootfs that lies
        // on it (runc fails so): it becomes unbindable at the end.
        .filter(|f| !f.contains(MsFlags::MS_UNBINDABLE))
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mounts::mount(None, Path::new("/"), None, propagation, None)?;
    // After a recursive slave or private change no mount is shared any
    // more; only otherwise is the rootfs's parent looked up, in mountinfo
    // (a line per mount: a host with a thousand containers' overlays pays
    // milliseconds for each reading).
    let none_shared = propagation.contains(MsFlags::MS_REC)
        && propagation.intersects(MsFlags::MS_SLAVE | MsFlags::MS_PRIVATE);
    if !none_shared {
        if let Some(parent) = mounts::shared_mount_holding(ctx.rootfs) {
            mounts::mount(None, &parent, None, MsFlags::MS_PRIVATE, None)?;
        }
    }
    mounts::mount(
        Some(ctx.rootfs),
        ctx.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    Ok(())
}

/// How many of the spec's mounts, from the first, need nothing of the
/// container's cgroups: those before the first that shows the cgroups the
/// init has joined (a cgroup mount), may name the container's own cgroup
/// directory (a bind from the cgroup tree), or opens a device, which the
/// container's device rules govern (any file system but the kernel's own
/// and tmpfs). The init makes them while the runtime still makes its
/// cgroups (`init::setup`).
pub fn mounts_before_cgroups(spec: &Spec, hierarchies: &[crate::cgroups::Hierarchy]) -> usize {
    let in_cgroup_tree = |source: &Path| {
        source.starts_with("/sys/fs/cgroup")
            || hierarchies
                .iter()
                .any(|h| source.starts_with(&h.mount_point))
    };
    let early = |m: &Mount| {
        let bind = m.kind.as_deref() == Some("bind")
            || m.options.iter().any(|o| o == "bind" || o == "rbind");
        match bind {
            true => !m.source.as_deref().is_some_and(in_cgroup_tree),
            false => matches!(
                m.kind.as_deref(),
                Some("proc" | "sysfs" | "tmpfs" | "devpts" | "mqueue")
            ),
        }
    };
    spec.mounts
        .iter()
        .position(|m| !early(m))
        .unwrap_or(spec.mounts.len())
}

/// Mounts the spec's mounts in `range`, in their order.
pub fn mount_some(ctx: &Context, range: std::ops::Range<usize>) -> Result<(), RootfsError> {
    if range.is_empty() {
        return Ok(());
    }
    let root = root_fd(ctx.rootfs)?;
    for (index, mount) in ctx
        .spec
        .mounts
        .iter()
        .enumerate()
        .take(range.end)
        .skip(range.start)
    {
        match ctx.idmapped.get(index).and_then(Option::as_ref) {
            Some(tree) => attach_idmapped(ctx, &root, mount, tree)?,
            None => mount_one(ctx, &root, mount)?,
        }
    }
    Ok(())
}

/// Fills `/dev` with the default and the spec's devices and the usual
/// symlinks, unless the spec binds a `/dev` of its own.
pub fn fill_dev(ctx: &Context) -> Result<(), RootfsError> {
    let dev_is_bind = ctx.spec.mounts.iter().any(|m| {
        safe_path::clean(&m.destination) == Path::new("dev")
            && (m.kind.as_deref() == Some("bind")
                || m.options.iter().any(|o| o == "bind" || o == "rbind"))
    });
    if !dev_is_bind {
        let root = root_fd(ctx.rootfs)?;
        let mut devices = crate::devices::default_devices();
        devices.retain(|d| !ctx.spec.linux().devices.iter().any(|s| s.path == d.path));
        devices.extend(ctx.spec.linux().devices.iter().cloned());
        crate::devices::create_all(root.as_raw_fd(), &devices, ctx.in_user_namespace)?;
        crate::devices::create_symlinks(root.as_raw_fd())?;
    }
    Ok(())
}

fn mount_one(ctx: &Context, root: &OwnedFd, mount: &Mount) -> Result<(), RootfsError> {
    let options = mounts::parse_options(&mount.options)?;
    let kind = mount.kind.as_deref().unwrap_or("");
    if kind == "cgroup" || kind == "cgroup2" {
        return mount_cgroups(ctx, root, mount, &options);
    }
    let is_bind = options.is_bind() || kind == "bind";
    let dest = &mount.destination;
    let target = if is_bind {
        let source = bind_source(ctx.bundle, mount)?;
        let target = bind_target(root, &source, dest)?;
        // A detached copy of the source gets its flags first, then is moved
        // onto the resolved fd: nothing is looked up by path after the check.
        let recursive = options.flags.contains(MsFlags::MS_REC);
        let extra = options.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        mounts::bind_tree(&source, &target, recursive, extra)?
    } else {
        if matches!(kind, "proc" | "sysfs") && is_symlink(root, dest) {
            return Err(RootfsError::SymlinkDestination {
                kind: kind.to_string(),
                dest: dest.clone(),
            });
        }
        let covered_mode = (kind == "tmpfs")
            .then(|| existing_dir_mode(root, dest))
            .flatten();
        let target = safe_path::open_or_create(root.as_raw_fd(), dest, Create::Directory)?;
        let mut data = options.data_string();
        // A tmpfs over an existing directory keeps that directory's mode
        // unless the spec says otherwise (runc chmods it so): /tmp stays
        // 1777, a 0755 directory does not become world-writable.
        if let Some(mode) = covered_mode.filter(|_| !has_mode_option(&data)) {
            if !data.is_empty() {
                data.push(',');
            }
            data.push_str(&format!("mode={mode:o}"));
        }
        let source = mount.source.clone().unwrap_or_else(|| PathBuf::from(kind));
        let result = mounts::mount(
            Some(&source),
            &safe_path::fd_path(&target),
            Some(kind),
            options.flags,
            (!data.is_empty()).then_some(data.as_str()),
        );
        match result {
            // In a user namespace that does not own the network namespace the
            // kernel refuses a new sysfs; give the host's, read-only (as runc).
            Err(MountError::Mount {
                errno: nix::Error::EPERM,
                ..
            }) if kind == "sysfs" && ctx.in_user_namespace => {
                // A detached copy made read-only, then attached: a remount
                // through `target` would name the directory under the new
                // mount, not the mount (EINVAL).
                mounts::bind_tree(
                    Path::new("/sys"),
                    &target,
                    true,
                    options.flags | MsFlags::MS_RDONLY,
                )?;
            }
            other => other?,
        }
        if !changes_the_new_mount(&options) {
            return Ok(());
        }
        // The new mount's root, which the changes below are made to (the
        // descriptor used to mount names the directory under it).
        safe_path::open_in_root(root.as_raw_fd(), dest, libc::O_PATH).map_err(|source| {
            SafePathError::Open {
                path: dest.clone(),
                source,
            }
        })?
    };
    let path = safe_path::fd_path(&target);
    propagate_and_set(&path, dest, &options)
}

/// Whether [`propagate_and_set`] has anything to do.
fn changes_the_new_mount(options: &MountOptions) -> bool {
    !options.propagation.is_empty() || options.recursive_set != 0 || options.recursive_clear != 0
}

/// A new mount's propagation changes and recursive attributes, at `path`
/// (where [`changes_the_new_mount`] says there are some).
fn propagate_and_set(path: &Path, dest: &Path, options: &MountOptions) -> Result<(), RootfsError> {
    for flag in &options.propagation {
        mounts::mount(None, path, None, *flag, None).map_err(|e| match e {
            // The fd path names nothing a reader knows: the destination does.
            MountError::Mount { errno, .. } => MountError::Mount {
                source_name: String::new(),
                target: dest.display().to_string(),
                fstype: String::new(),
                data: format!("propagation {flag:?}"),
                errno,
            },
            other => other,
        })?;
    }
    if options.recursive_set != 0 || options.recursive_clear != 0 {
        mounts::set_recursive_attrs(path, options.recursive_set, options.recursive_clear)?;
    }
    Ok(())
}

/// Opens (or creates) the destination of a bind of `source` in the rootfs:
/// a directory for a directory, a file for anything else.
fn bind_target(root: &OwnedFd, source: &Path, dest: &Path) -> Result<OwnedFd, RootfsError> {
    let create = match std::fs::metadata(source) {
        Ok(meta) if meta.is_dir() => Create::Directory,
        Ok(_) => Create::File,
        Err(e) => {
            return Err(RootfsError::Source {
                path: source.to_path_buf(),
                source: e,
            })
        }
    };
    Ok(safe_path::open_or_create(root.as_raw_fd(), dest, create)?)
}

/// The spec's id-mapped bind mounts (`uidMappings`/`gidMappings`, or
/// `idmap`/`ridmap` with the container's own mappings), one slot per mount
/// of the spec; `None` for an ordinary mount.
///
/// Made by the runtime before the init exists: the kernel lets only a
/// process privileged over a filesystem's user namespace (the host's, for
/// ext4 or xfs) id-map its mounts, and the init is inside the container's
/// user namespace from its first instruction. The init inherits the
/// detached trees through the clone and attaches them ([`mount_some`]);
/// runc 1.2 and crun hand theirs over a socket instead.
pub fn idmapped_mounts(spec: &Spec, bundle: &Path) -> Result<Vec<Option<OwnedFd>>, RootfsError> {
    let linux = spec.linux();
    let mut trees = Vec::with_capacity(spec.mounts.len());
    for mount in &spec.mounts {
        let options = mounts::parse_options(&mount.options)?;
        let mapped = !mount.uid_mappings.is_empty() || !mount.gid_mappings.is_empty();
        if options.idmap.is_none() && !mapped {
            trees.push(None);
            continue;
        }
        let source = bind_source(bundle, mount)?;
        let refuse = |reason: &str| MountError::Idmap {
            source_name: source.display().to_string(),
            reason: reason.into(),
        };
        let kind = mount.kind.as_deref().unwrap_or("");
        if !(options.is_bind() || kind == "bind") {
            return Err(refuse("only bind mounts can be id-mapped").into());
        }
        let (uid, gid) = if mapped {
            (&mount.uid_mappings, &mount.gid_mappings)
        } else {
            (&linux.uid_mappings, &linux.gid_mappings)
        };
        if uid.is_empty() || gid.is_empty() {
            return Err(refuse(if mapped {
                "uidMappings and gidMappings must be given together"
            } else {
                "idmap without uidMappings/gidMappings takes the container's own, and it has none"
            })
            .into());
        }
        let userns = mounts::mapped_user_namespace(uid, gid).map_err(|e| refuse(&e))?;
        let recursive = options.flags.contains(MsFlags::MS_REC);
        let flags = options.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        let idmap = options.idmap.unwrap_or(mounts::Idmap::Top);
        trees.push(Some(mounts::idmapped_clone(
            &source, recursive, idmap, &userns, flags,
        )?));
    }
    Ok(trees)
}

/// Attaches an id-mapped tree made by [`idmapped_mounts`] at the mount's
/// destination, then applies its propagation and recursive attributes.
fn attach_idmapped(
    ctx: &Context,
    root: &OwnedFd,
    mount: &Mount,
    tree: &OwnedFd,
) -> Result<(), RootfsError> {
    let source = bind_source(ctx.bundle, mount)?;
    let target = bind_target(root, &source, &mount.destination)?;
    mounts::attach(tree, &target).map_err(|errno| MountError::Mount {
        source_name: source.display().to_string(),
        target: mount.destination.display().to_string(),
        fstype: "bind (id-mapped)".into(),
        data: mount.options.join(","),
        errno,
    })?;
    // The descriptor of the tree now names the attached mount.
    let path = safe_path::fd_path(tree);
    let options = mounts::parse_options(&mount.options)?;
    propagate_and_set(&path, &mount.destination, &options)
}

/// The permission bits (with setuid, setgid, sticky) of `dest` in the
/// rootfs, if it is a directory already.
fn existing_dir_mode(root: &OwnedFd, dest: &Path) -> Option<u32> {
    let fd =
        safe_path::open_in_root(root.as_raw_fd(), dest, libc::O_PATH | libc::O_DIRECTORY).ok()?;
    let stat = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
    Some(stat.st_mode & 0o7777)
}

fn has_mode_option(data: &str) -> bool {
    data.split(',').any(|o| o.starts_with("mode="))
}

fn is_symlink(root: &OwnedFd, dest: &Path) -> bool {
    let Ok(fd) = safe_path::open_in_root(root.as_raw_fd(), dest, libc::O_PATH | libc::O_NOFOLLOW)
    else {
        return false;
    };
    nix::sys::stat::fstat(fd.as_raw_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
        .unwrap_or(false)
}

/// A bind source; relative sources are relative to the bundle, as in runc.
fn bind_source(bundle: &Path, mount: &Mount) -> Result<PathBuf, RootfsError> {
    let source = mount.source.clone().unwrap_or_default();
    if source.as_os_str().is_empty() {
        return Err(RootfsError::Source {
            path: source,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "bind mount without a source",
            ),
        });
    }
    Ok(if source.is_absolute() {
        source
    } else {
        bundle.join(source)
    })
}

/// `/sys/fs/cgroup`: with cgroup v2 alone, a cgroup2 mount (or a bind of the
/// container's directory); on v1 and hybrid hosts, a tmpfs holding a bind of
/// the container's directory for each hierarchy, named as on the host.
///
/// Inside the fresh tmpfs names are looked up with plain `openat`: nothing
/// but berth can have put anything there yet.
fn mount_cgroups(
    ctx: &Context,
    root: &OwnedFd,
    mount: &Mount,
    options: &MountOptions,
) -> Result<(), RootfsError> {
    let dest = &mount.destination;
    let target = safe_path::open_or_create(root.as_raw_fd(), dest, Create::Directory)?;
    let hierarchies = ctx.hierarchies;
    let keep = options.flags
        & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    let pure_v2 = hierarchies.len() == 1 && hierarchies[0].is_unified();
    if pure_v2 {
        if ctx.new_cgroup_namespace {
            mounts::mount(
                Some(Path::new("cgroup2")),
                &safe_path::fd_path(&target),
                Some("cgroup2"),
                options.flags,
                None,
            )?;
        } else if let Some(dir) = ctx.cgroup_paths.first() {
            mounts::bind_tree(dir, &target, true, keep)?;
        }
        return Ok(());
    }
    mounts::mount(
        Some(Path::new("tmpfs")),
        &safe_path::fd_path(&target),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )?;
    let open_err = |path: PathBuf| move |source| SafePathError::Open { path, source };
    // The tmpfs itself (`target` still names the directory beneath it).
    let tmpfs = safe_path::open_in_root(root.as_raw_fd(), dest, libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(open_err(dest.clone()))?;
    let tmpfs_dir = &tmpfs;
    for (hierarchy, dir) in hierarchies.iter().zip(ctx.cgroup_paths) {
        let name = hierarchy.dir_name();
        let sub = dest.join(&name);
        nix::sys::stat::mkdirat(
            Some(tmpfs_dir.as_raw_fd()),
            name.as_str(),
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        )
        .map_err(|errno| open_err(sub.clone())(std::io::Error::from(errno)))?;
        let sub_fd = nix::fcntl::openat(
            Some(tmpfs_dir.as_raw_fd()),
            name.as_str(),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|errno| open_err(sub.clone())(std::io::Error::from(errno)))?;
        // SAFETY: openat returned a new descriptor nothing else owns.
        let sub_fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sub_fd) };
        mounts::bind_tree(dir, &sub_fd, true, keep)?;
        // Co-mounted controllers (`cpu,cpuacct`) get a symlink per name.
        if hierarchy.controllers.len() > 1 && name.contains(',') {
            for controller in &hierarchy.controllers {
                let _ = nix::unistd::symlinkat(
                    name.as_str(),
                    Some(tmpfs_dir.as_raw_fd()),
                    controller.as_str(),
                );
            }
        }
    }
    if keep.contains(MsFlags::MS_RDONLY) {
        mounts::mount(
            None,
            &safe_path::fd_path(&tmpfs),
            None,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        )?;
    }
    Ok(())
}

/// Makes the rootfs `/`: `pivot_root`, or with `--no-pivot` a move mount and chroot.
pub fn pivot(rootfs: &Path, no_pivot: bool) -> Result<(), RootfsError> {
    let err = |errno| RootfsError::Pivot {
        path: rootfs.to_path_buf(),
        errno,
    };
    nix::unistd::chdir(rootfs).map_err(err)?;
    if no_pivot {
        nix::mount::mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(err)?;
        nix::unistd::chroot(".").map_err(err)?;
    } else {
        // pivot_root(".", ".") stacks the old root on top of the new one;
        // detaching it leaves the rootfs alone at "/" without a temp dir.
        // The old root is entered by a descriptor taken before: "." after
        // pivot_root may still be the new root, and making that rslave
        // would cut every shared mount of the container off its peers.
        let old_root = std::fs::File::open("/")
            .map_err(|e| err(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
        nix::unistd::pivot_root(".", ".").map_err(err)?;
        nix::unistd::fchdir(old_root.as_raw_fd()).map_err(err)?;
        drop(old_root);
        nix::mount::mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(err)?;
        // Paths resolve in the old root until it is detached.
        crate::sealed_exe::park_under_old_root();
        nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(err)?;
    }
    nix::unistd::chdir("/").map_err(err)
}

/// Writes `linux.sysctl` through the container's own `/proc/sys`.
pub fn apply_sysctl(spec: &Spec) -> Result<(), RootfsError> {
    for (key, value) in &spec.linux().sysctl {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|source| RootfsError::Sysctl {
            key: key.clone(),
            value: value.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Each of `paths` that exists in the container (after pivot), opened
/// inside the root; missing paths are skipped, as runc does.
fn existing(paths: &[PathBuf]) -> Result<Vec<OwnedFd>, RootfsError> {
    let root = root_fd(Path::new("/"))?;
    let mut out = Vec::new();
    for path in paths {
        match safe_path::open_in_root(root.as_raw_fd(), path, libc::O_PATH) {
            Ok(fd) => out.push(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(source) => {
                return Err(SafePathError::Open {
                    path: path.clone(),
                    source,
                }
                .into())
            }
        }
    }
    Ok(out)
}

/// Masks paths: directories get an empty read-only tmpfs, anything else a
/// bind of `/dev/null`.
pub fn mask_paths(paths: &[PathBuf]) -> Result<(), RootfsError> {
    for fd in existing(paths)? {
        let target = safe_path::fd_path(&fd);
        let is_dir = nix::sys::stat::fstat(fd.as_raw_fd())
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .unwrap_or(false);
        if is_dir {
            mounts::mount(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?;
        } else {
            mounts::mount(
                Some(Path::new("/dev/null")),
                &target,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    Ok(())
}

/// Makes paths read-only: a read-only copy of each is moved onto itself.
pub fn readonly_paths(paths: &[PathBuf]) -> Result<(), RootfsError> {
    for fd in existing(paths)? {
        mounts::bind_tree(&safe_path::fd_path(&fd), &fd, true, MsFlags::MS_RDONLY)?;
    }
    Ok(())
}

/// Remounts `/` read-only (after pivot), and applies `rootfsPropagation` to it.
pub fn finish_root(spec: &Spec) -> Result<(), RootfsError> {
    let root = Path::new("/");
    if spec.root.as_ref().is_some_and(|r| r.readonly) {
        mounts::remount_bind(root, MsFlags::MS_RDONLY)?;
    }
    // After pivot_root, so that it applies to the container's root and not
    // to the mount the rootfs came from; private is already so.
    if let Some(flag) = spec
        .linux()
        .rootfs_propagation
        .as_deref()
        .and_then(mounts::propagation_flag)
        .filter(|f| !f.contains(MsFlags::MS_PRIVATE))
    {
        mounts::mount(None, root, None, flag, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(mounts: serde_json::Value) -> Spec {
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["/bin/true"], "cwd": "/"},
            "mounts": mounts,
        });
        Spec::from_slice(config.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn early_mounts_stop_at_the_first_that_needs_the_cgroups_or_a_device() {
        let usual = serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
            {"destination": "/data", "source": "/srv/data", "options": ["rbind"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
        ]);
        assert_eq!(mounts_before_cgroups(&spec_with(usual), &[]), 6);
        let own_cgroup = serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/cg", "type": "bind", "source": "/sys/fs/cgroup/pids/x"},
        ]);
        assert_eq!(mounts_before_cgroups(&spec_with(own_cgroup), &[]), 1);
        let device = serde_json::json!([
            {"destination": "/disk", "type": "ext4", "source": "/dev/vdb"},
            {"destination": "/proc", "type": "proc", "source": "proc"},
        ]);
        assert_eq!(mounts_before_cgroups(&spec_with(device), &[]), 0);
        let none = serde_json::json!([{"destination": "/proc", "type": "proc", "source": "proc"}]);
        assert_eq!(mounts_before_cgroups(&spec_with(none), &[]), 1);
    }
}
