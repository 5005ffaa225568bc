//! Cgroup files and directories reached from one descriptor of
//! `/sys/fs/cgroup`, not by their whole path.
//!
//! `/sys/fs/cgroup` is a mount over a sysfs directory, and every lookup of
//! a whole path under it revalidates the sysfs dentries `fs` and `cgroup`,
//! each under sysfs's one lock. A new network namespace adds its loopback
//! device's sysfs files under the same lock, for writing. `run` makes the
//! container's cgroups (dozens of lookups) while its init makes its
//! namespaces, and each side waited for the other's turn: the init ~0.06 ms
//! per run, the runtime as much. From a descriptor of the `/sys/fs/cgroup`
//! mount itself, a lookup starts below sysfs and meets only the cgroup
//! filesystems' own locks. Paths outside `/sys/fs/cgroup` (a host that
//! mounts its hierarchies elsewhere) go the usual way.
//!
//! The descriptor is opened at the first use, close-on-exec: no program
//! berth executes inherits it (`run` on a host without the unified
//! hierarchy first uses it after its init's clone).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

const ROOT: &str = "/sys/fs/cgroup";

/// The descriptor of [`ROOT`], if it could be opened.
fn root() -> Option<RawFd> {
    static ROOT_FD: OnceLock<Option<OwnedFd>> = OnceLock::new();
    ROOT_FD
        .get_or_init(|| {
            let path = CString::new(ROOT).ok()?;
            let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
            // SAFETY: a NUL-terminated path; the result is checked.
            let fd = unsafe { libc::open(path.as_ptr(), flags) };
            // SAFETY: a new descriptor, owned here alone.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .as_ref()
        .map(|fd| fd.as_raw_fd())
}

/// Where the kernel is to look `path` up: a directory descriptor (or
/// `AT_FDCWD` for an absolute path) and the path from it.
fn place(path: &Path) -> io::Result<(RawFd, CString)> {
    let below_root = path
        .strip_prefix(ROOT)
        .ok()
        .filter(|rest| !rest.as_os_str().is_empty());
    let (dir, rest) = match below_root.zip(root()) {
        Some((rest, fd)) => (fd, rest),
        None => (libc::AT_FDCWD, path),
    };
    let rest = CString::new(rest.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    Ok((dir, rest))
}

fn open(path: &Path, flags: libc::c_int) -> io::Result<File> {
    let (dir, rest) = place(path)?;
    // SAFETY: a directory descriptor (or AT_FDCWD) and a NUL-terminated
    // path; the mode only matters with O_CREAT.
    let fd = unsafe { libc::openat(dir, rest.as_ptr(), flags | libc::O_CLOEXEC, 0o666) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, owned by the file alone.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// As `std::fs::read_to_string`.
pub(super) fn read_to_string(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open(path, libc::O_RDONLY)?.read_to_string(&mut text)?;
    Ok(text)
}

/// As `std::fs::write`.
pub(super) fn write(path: &Path, value: impl AsRef<[u8]>) -> io::Result<()> {
    open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?.write_all(value.as_ref())
}

/// As `OpenOptions::new().write(true).open`.
pub(super) fn open_for_writing(path: &Path) -> io::Result<File> {
    open(path, libc::O_WRONLY)
}

/// As `std::fs::create_dir_all`.
pub(super) fn create_dir_all(path: &Path) -> io::Result<()> {
    let (dir, rest) = place(path)?;
    // SAFETY: as in `open`.
    if unsafe { libc::mkdirat(dir, rest.as_ptr(), 0o777) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.kind() {
        io::ErrorKind::AlreadyExists if is_dir(path) => Ok(()),
        io::ErrorKind::NotFound => match path.parent() {
            Some(parent) if parent != path => {
                create_dir_all(parent)?;
                create_dir_all(path)
            }
            _ => Err(error),
        },
        _ => Err(error),
    }
}

fn is_dir(path: &Path) -> bool {
    open(path, libc::O_PATH | libc::O_DIRECTORY).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_the_root_start_from_its_descriptor_and_others_are_whole() {
        let (dir, rest) = place(Path::new("/sys/fs/cgroup/memory/x")).unwrap();
        if root().is_some() {
            assert_ne!(dir, libc::AT_FDCWD);
            assert_eq!(rest.as_bytes(), b"memory/x");
        }
        for whole in ["/sys/fs/cgroup", "/sys/fs/cgroupx/a", "/tmp/a"] {
            let (dir, rest) = place(Path::new(whole)).unwrap();
            assert_eq!(dir, libc::AT_FDCWD, "{whole}");
            assert_eq!(rest.as_bytes(), whole.as_bytes());
        }
    }

    #[test]
    fn files_and_directories_behave_as_std_does() {
        let base = std::env::temp_dir().join(format!("berth-cgfiles-{}", std::process::id()));
        let deep = base.join("a/b/c");
        create_dir_all(&deep).unwrap();
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        let file = deep.join("f");
        write(&file, "one").unwrap();
        write(&file, "2").unwrap();
        assert_eq!(read_to_string(&file).unwrap(), "2");
        open_for_writing(&file).unwrap().write_all(b"3").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "3");
        assert_eq!(
            create_dir_all(&file.join("g")).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
        assert_eq!(
            read_to_string(&deep.join("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
