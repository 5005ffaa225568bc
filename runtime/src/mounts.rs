//! Mount options of `config.json` and the syscalls that apply them.
//!
//! One option list mixes four things the kernel takes separately: `mount(2)`
//! flags, propagation changes (a second `mount` call each), recursive
//! attributes (`mount_setattr(2)` with `AT_RECURSIVE`) and filesystem data.
//! Id-mapped bind mounts (`uidMappings`/`gidMappings`, `idmap`/`ridmap`,
//! runtime-spec 1.1) are made here too: see [`idmapped_clone`].

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_oci::mount_api::{
    move_mount, open_tree_clone, MountAttr, AT_RECURSIVE, MOUNT_ATTR_NOATIME,
    MOUNT_ATTR_NODIRATIME, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSYMFOLLOW, MOUNT_ATTR_STRICTATIME,
    MOUNT_ATTR__ATIME,
};
pub(crate) use berth_oci::mount_api::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
use nix::mount::MsFlags;

use crate::spec::IdMapping;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {source_name} on {target} (type {fstype}, options {data:?}): {errno}")]
    Mount {
        source_name: String,
        target: String,
        fstype: String,
        data: String,
        errno: nix::Error,
    },
    #[error("unknown or unsupported mount option {0:?}")]
    Option(String),
    #[error("mount_setattr on {target}: {errno}")]
    SetAttr { target: String, errno: nix::Error },
    #[error("id-mapped mount of {source_name}: {reason}")]
    Idmap { source_name: String, reason: String },
}

/// How far `idmap` (the top mount) or `ridmap` (every mount under it too)
/// asked for a bind mount to be id-mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idmap {
    Top,
    Recursive,
}

/// The parsed form of a mount's `options`.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags an option explicitly turns off (`rw`, `suid`, …).
    pub cleared: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub recursive_set: u64,
    pub recursive_clear: u64,
    pub idmap: Option<Idmap>,
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            recursive_set: 0,
            recursive_clear: 0,
            idmap: None,
            data: Vec::new(),
        }
    }
}

impl MountOptions {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    pub fn data_string(&self) -> String {
        self.data.join(",")
    }
}

/// `MS_*` flags named by an option, and whether the option clears them.
fn flag_option(name: &str) -> Option<(bool, MsFlags)> {
    Some(match name {
        "ro" => (false, MsFlags::MS_RDONLY),
        "rw" => (true, MsFlags::MS_RDONLY),
        "nosuid" => (false, MsFlags::MS_NOSUID),
        "suid" => (true, MsFlags::MS_NOSUID),
        "nodev" => (false, MsFlags::MS_NODEV),
        "dev" => (true, MsFlags::MS_NODEV),
        "noexec" => (false, MsFlags::MS_NOEXEC),
        "exec" => (true, MsFlags::MS_NOEXEC),
        "sync" => (false, MsFlags::MS_SYNCHRONOUS),
        "async" => (true, MsFlags::MS_SYNCHRONOUS),
        "dirsync" => (false, MsFlags::MS_DIRSYNC),
        "remount" => (false, MsFlags::MS_REMOUNT),
        "mand" => (false, MsFlags::MS_MANDLOCK),
        "nomand" => (true, MsFlags::MS_MANDLOCK),
        "atime" => (true, MsFlags::MS_NOATIME),
        "noatime" => (false, MsFlags::MS_NOATIME),
        "diratime" => (true, MsFlags::MS_NODIRATIME),
        "nodiratime" => (false, MsFlags::MS_NODIRATIME),
        "relatime" => (false, MsFlags::MS_RELATIME),
        "norelatime" => (true, MsFlags::MS_RELATIME),
        "strictatime" => (false, MsFlags::MS_STRICTATIME),
        "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
        "bind" => (false, MsFlags::MS_BIND),
        "rbind" => (false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
        "silent" => (false, MsFlags::MS_SILENT),
        "loud" => (true, MsFlags::MS_SILENT),
        "nosymfollow" => (false, MsFlags::from_bits_retain(256)),
        "symfollow" => (true, MsFlags::from_bits_retain(256)),
        _ => return None,
    })
}

/// The mount point of the mount that holds `path`, if that mount is
/// shared (a `shared:N` optional field in `/proc/self/mountinfo`).
pub fn shared_mount_holding(path: &Path) -> Option<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let holding = holding_mount(&table, path)?;
    holding.shared.then_some(holding.point)
}

/// The filesystem type (`ext4`, `tmpfs`, …) of the mount that holds `path`.
fn filesystem_holding(path: &Path) -> String {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|table| holding_mount(&table, path))
        .map_or_else(|| "unknown".into(), |holding| holding.fstype)
}

/// A line of mountinfo: where, shared or not, and which filesystem.
#[derive(Debug, PartialEq)]
struct Holding {
    point: PathBuf,
    shared: bool,
    fstype: String,
}

/// The last-mounted, longest mount point of `table` (mountinfo text) at or
/// above `path`.
fn holding_mount(table: &str, path: &Path) -> Option<Holding> {
    let mut best: Option<Holding> = None;
    for line in table.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(end)) = (fields.get(4), fields.iter().position(|f| *f == "-"))
        else {
            continue;
        };
        // The kernel escapes space, tab, newline and backslash as \ooo.
        let point = PathBuf::from(unescape_octal(point));
        if !path.starts_with(&point) {
            continue;
        }
        let shared = fields[6..end].iter().any(|f| f.starts_with("shared:"));
        // Later lines are mounted later: on an equal mount point, on top.
        if best
            .as_ref()
            .is_none_or(|b| point.as_os_str().len() >= b.point.as_os_str().len())
        {
            let fstype = fields.get(end + 1).unwrap_or(&"unknown").to_string();
            best = Some(Holding {
                point,
                shared,
                fstype,
            });
        }
    }
    best
}

fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub use berth_oci::kernel_names::propagation_flag;

/// A recursive option (`rro`, `rnosuid`, …): (clear?, attribute bits).
fn recursive_option(name: &str) -> Option<(bool, u64)> {
    Some(match name {
        "rro" => (false, MOUNT_ATTR_RDONLY),
        "rrw" => (true, MOUNT_ATTR_RDONLY),
        "rnosuid" => (false, MOUNT_ATTR_NOSUID),
        "rsuid" => (true, MOUNT_ATTR_NOSUID),
        "rnodev" => (false, MOUNT_ATTR_NODEV),
        "rdev" => (true, MOUNT_ATTR_NODEV),
        "rnoexec" => (false, MOUNT_ATTR_NOEXEC),
        "rexec" => (true, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (false, MOUNT_ATTR_NODIRATIME),
        "rdiratime" => (true, MOUNT_ATTR_NODIRATIME),
        "rnosymfollow" => (false, MOUNT_ATTR_NOSYMFOLLOW),
        "rsymfollow" => (true, MOUNT_ATTR_NOSYMFOLLOW),
        // The atime modes are one field: setting one clears the others.
        "rrelatime" => (false, 0),
        "rnoatime" => (false, MOUNT_ATTR_NOATIME),
        "rstrictatime" => (false, MOUNT_ATTR_STRICTATIME),
        "rnorelatime" | "ratime" | "rnostrictatime" => (true, 0),
        _ => return None,
    })
}

pub fn parse_options(options: &[String]) -> Result<MountOptions, MountError> {
    let mut parsed = MountOptions::default();
    for option in options {
        if let Some((clear, flag)) = flag_option(option) {
            if clear {
                parsed.flags.remove(flag);
                parsed.cleared.insert(flag);
            } else {
                parsed.flags.insert(flag);
                parsed.cleared.remove(flag);
            }
        } else if let Some(flag) = propagation_flag(option) {
            parsed.propagation.push(flag);
        } else if let Some((clear, bits)) = recursive_option(option) {
            if option.ends_with("atime") {
                parsed.recursive_set = (parsed.recursive_set & !MOUNT_ATTR__ATIME) | bits;
                parsed.recursive_clear |= MOUNT_ATTR__ATIME;
                if clear {
                    parsed.recursive_set &= !MOUNT_ATTR__ATIME;
                }
            } else if clear {
                parsed.recursive_clear |= bits;
                parsed.recursive_set &= !bits;
            } else {
                parsed.recursive_set |= bits;
                parsed.recursive_clear &= !bits;
            }
        } else if option == "defaults" {
            continue;
        } else if option == "idmap" {
            parsed.idmap = Some(Idmap::Top);
        } else if option == "ridmap" {
            parsed.idmap = Some(Idmap::Recursive);
        } else if option.is_empty() {
            continue;
        } else {
            parsed.data.push(option.clone());
        }
    }
    Ok(parsed)
}

fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

/// `mount(2)` with an error that names everything involved.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    nix::mount::mount(source, target, fstype, flags, data).map_err(|errno| MountError::Mount {
        source_name: source.map(|s| s.display().to_string()).unwrap_or_default(),
        target: target.display().to_string(),
        fstype: fstype.unwrap_or("").to_string(),
        data: data.unwrap_or("").to_string(),
        errno,
    })
}

/// Applies recursive attributes to the mount tree at `target` (an `O_PATH` fd path).
pub fn set_recursive_attrs(target: &Path, set: u64, clear: u64) -> Result<(), MountError> {
    let name = cstring(target);
    let dir = std::fs::File::open(target).ok();
    let (dirfd, path, flags) = match &dir {
        Some(file) => (file.as_raw_fd(), c"", libc::AT_EMPTY_PATH | AT_RECURSIVE),
        None => (libc::AT_FDCWD, name.as_c_str(), AT_RECURSIVE),
    };
    mount_setattr(dirfd, path, flags, set, clear).map_err(|errno| MountError::SetAttr {
        target: target.display().to_string(),
        errno,
    })
}

/// A detached copy of the mount at `source` (`open_tree(OPEN_TREE_CLONE)`,
/// with its submounts when `recursive`), `MOUNT_ATTR_*` bits `set` then
/// `clear`ed on it: attach it with `move_mount`, or use it where it is.
pub(crate) fn detached_clone(
    source: &std::ffi::CStr,
    recursive: bool,
    set: u64,
    clear: u64,
) -> Result<std::os::fd::OwnedFd, nix::Error> {
    let tree = open_tree_clone(source, recursive)?;
    if set != 0 || clear != 0 {
        mount_setattr(tree.as_raw_fd(), c"", libc::AT_EMPTY_PATH, set, clear)?;
    }
    Ok(tree)
}

/// `mount_setattr(2)`: sets then clears `MOUNT_ATTR_*` bits on the mount
/// at `dirfd` + `path` (`AT_EMPTY_PATH`: the mount of `dirfd` itself).
pub(crate) fn mount_setattr(
    dirfd: RawFd,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    set: u64,
    clear: u64,
) -> Result<(), nix::Error> {
    berth_oci::mount_api::mount_setattr(dirfd, path, flags, &MountAttr::flags(set, clear))
}

fn ms_to_attr(flags: MsFlags) -> (u64, u64) {
    let mut set = 0;
    let mut clear = 0;
    for (flag, attr) in [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
        (MsFlags::from_bits_retain(256), MOUNT_ATTR_NOSYMFOLLOW),
    ] {
        if flags.contains(flag) {
            set |= attr;
        }
    }
    for (flag, mode) in [
        (MsFlags::MS_NOATIME, MOUNT_ATTR_NOATIME),
        (MsFlags::MS_STRICTATIME, MOUNT_ATTR_STRICTATIME),
        (MsFlags::MS_RELATIME, 0),
    ] {
        if flags.contains(flag) {
            set = (set & !MOUNT_ATTR__ATIME) | mode;
            clear |= MOUNT_ATTR__ATIME;
        }
    }
    (set, clear)
}

/// Bind-mounts `source` onto the directory or file `target` (an fd from
/// [`berth_oci::safe_path`]) with `flags` (ro, nosuid, …) on the top mount:
/// `open_tree` clones the source detached, `mount_setattr` sets the flags
/// there, `move_mount` attaches it to the fd. Returns the new mount's fd.
pub fn bind_tree(
    source: &Path,
    target: &std::os::fd::OwnedFd,
    recursive: bool,
    flags: MsFlags,
) -> Result<std::os::fd::OwnedFd, MountError> {
    let fail = |errno| MountError::Mount {
        source_name: source.display().to_string(),
        target: "(resolved destination)".into(),
        fstype: "bind".into(),
        data: format!("{flags:?}"),
        errno,
    };
    let (set, clear) = ms_to_attr(flags);
    let tree = detached_clone(&cstring(source), recursive, set, clear).map_err(fail)?;
    attach(&tree, target).map_err(fail)?;
    Ok(tree)
}

/// `move_mount(2)`: attaches the detached tree `tree` onto the resolved
/// directory or file `target`.
pub fn attach(
    tree: &std::os::fd::OwnedFd,
    target: &std::os::fd::OwnedFd,
) -> Result<(), nix::Error> {
    move_mount(tree, target)
}

/// A user namespace with the `uid` and `gid` mappings, held by its
/// descriptor alone: what an id-mapped mount sees owners through.
///
/// A throwaway child is cloned straight into a new user namespace, mapped
/// from here (root in the parent namespace, as for the container's own
/// maps) and ends once the namespace is open. The runtime is
/// single-threaded, so the child may run ordinary code until it exits.
pub fn mapped_user_namespace(
    uid: &[IdMapping],
    gid: &[IdMapping],
) -> Result<std::os::fd::OwnedFd, String> {
    let (hold, release) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let pid = crate::process::clone_like_fork(libc::CLONE_NEWUSER)
        .map_err(|e| format!("cannot create a user namespace for the mappings: {e}"))?;
    if pid == 0 {
        drop(release);
        let mut byte = [0u8];
        // SAFETY: a read on our own pipe, then leaving without destructors;
        // end of file (the parent's write end closed) is the signal.
        unsafe {
            libc::read(hold.as_raw_fd(), byte.as_mut_ptr().cast(), 1);
            libc::_exit(0)
        }
    }
    drop(hold);
    let namespace = crate::namespaces::write_id_maps(pid, uid, gid)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            std::fs::File::open(format!("/proc/{pid}/ns/user"))
                .map(std::os::fd::OwnedFd::from)
                .map_err(|e| format!("cannot open the mappings' user namespace: {e}"))
        });
    drop(release);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    namespace
}

/// A detached copy of the bind source `source` (with its submounts when
/// `recursive`) whose files' owners are seen through the mappings of
/// `userns`: on the top mount only, or on every mount of the copy
/// (`ridmap`). `flags` (ro, nosuid, …) are set on the top mount.
///
/// The kernel id-maps only filesystems that declare support for it, and
/// only for a caller privileged over the filesystem's own user namespace;
/// a refusal names the filesystem.
pub fn idmapped_clone(
    source: &Path,
    recursive: bool,
    idmap: Idmap,
    userns: &std::os::fd::OwnedFd,
    flags: MsFlags,
) -> Result<std::os::fd::OwnedFd, MountError> {
    let fail = |reason: String| MountError::Idmap {
        source_name: source.display().to_string(),
        reason,
    };
    let (set, clear) = ms_to_attr(flags);
    let tree = detached_clone(&cstring(source), recursive, set, clear)
        .map_err(|errno| fail(format!("open_tree: {errno}")))?;
    let attr = MountAttr::idmap(userns);
    let scope = match idmap {
        Idmap::Top => 0,
        Idmap::Recursive => AT_RECURSIVE,
    };
    let on_tree = libc::AT_EMPTY_PATH | scope;
    berth_oci::mount_api::mount_setattr(tree.as_raw_fd(), c"", on_tree, &attr).map_err(
        |errno| {
            if errno != nix::Error::EINVAL {
                return fail(format!("mount_setattr(MOUNT_ATTR_IDMAP): {errno}"));
            }
            let under = match idmap {
                Idmap::Top => "",
                Idmap::Recursive => " (or a filesystem mounted under it)",
            };
            let kernel = nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default();
            fail(format!(
                "its filesystem ({}){under} cannot be id-mapped by this kernel ({kernel})",
                filesystem_holding(source)
            ))
        },
    )?;
    Ok(tree)
}

/// The flags a bind-mount remount must keep because the kernel locks them
/// (nosuid/nodev/noexec/atime of a mount inherited from a more privileged namespace).
pub fn locked_flags(target: &Path) -> MsFlags {
    let Ok(stat) = nix::sys::statvfs::statvfs(target) else {
        return MsFlags::empty();
    };
    use nix::sys::statvfs::FsFlags;
    let flags = stat.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if flags.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// Remounts a bind mount with `flags`, keeping locked flags when the kernel insists.
pub fn remount_bind(target: &Path, flags: MsFlags) -> Result<(), MountError> {
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match mount(None, target, None, base | flags, None) {
        Err(MountError::Mount {
            errno: nix::Error::EPERM,
            ..
        }) => mount(
            None,
            target,
            None,
            base | flags | locked_flags(target),
            None,
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_holding_a_path_is_the_longest_and_latest() {
        let table = "\
22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /var/lib rw - tmpfs tmpfs rw
31 22 0:26 / /var/lib rw shared:7 master:2 - tmpfs tmpfs rw
32 22 0:27 / /var/lib\\040x rw - tmpfs tmpfs rw
";
        let at =
            |p: &str| holding_mount(table, Path::new(p)).map(|h| (h.point, h.shared, h.fstype));
        assert_eq!(
            at("/var/lib/c/rootfs"),
            Some(("/var/lib".into(), true, "tmpfs".into()))
        );
        assert_eq!(at("/var/libx"), Some(("/".into(), true, "ext4".into())));
        assert_eq!(
            at("/var/lib x/r"),
            Some(("/var/lib x".into(), false, "tmpfs".into()))
        );
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let opts: Vec<String> = [
            "rbind", "ro", "nosuid", "rslave", "mode=755", "rro", "size=1k",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let parsed = parse_options(&opts).unwrap();
        assert!(parsed
            .flags
            .contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(
            parsed.propagation,
            vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]
        );
        assert_eq!(parsed.recursive_set, MOUNT_ATTR_RDONLY);
        assert_eq!(parsed.data_string(), "mode=755,size=1k");
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let parsed = parse_options(&["ro".into(), "rw".into()]).unwrap();
        assert!(!parsed.flags.contains(MsFlags::MS_RDONLY));
        let idmapped = parse_options(&["rbind".into(), "ridmap".into()]).unwrap();
        assert_eq!(idmapped.idmap, Some(Idmap::Recursive));
        assert!(idmapped.data.is_empty());
    }
}
