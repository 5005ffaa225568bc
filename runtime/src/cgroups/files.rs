//! Cgroup files and directories reached from one descriptor of
//! `/sys/fs/cgroup`, not by their whole path, inside [`from_root`].
//!
//! `/sys/fs/cgroup` is a mount over a sysfs directory, and every lookup of
//! a whole path under it revalidates the sysfs dentries `fs` and `cgroup`,
//! each under sysfs's one lock. A new network namespace adds its loopback
//! device's sysfs files under the same lock, for writing. `run` makes the
//! container's cgroups (dozens of lookups) while its init makes its
//! namespaces, and each side waited for the other's turn: the init in 21
//! of 30 runs, a median 0.072 ms. From a descriptor of the `/sys/fs/cgroup`
//! mount itself, a lookup starts below sysfs and meets only the cgroup
//! filesystems' own locks. Paths outside `/sys/fs/cgroup` (a host that
//! mounts its hierarchies elsewhere), and every call outside the scope, go
//! the usual way.
//!
//! The descriptor is a handle on the host's cgroup tree: a process that
//! inherited it could make it its working directory through
//! `/proc/self/fd` before its exec and walk up to the host's root
//! (CVE-2024-21626, where runc leaked such a directory). So it exists only
//! inside [`from_root`]'s scope, on the calling thread, and the scope must
//! neither fork nor clone: no child ever has it.

use std::cell::Cell;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const ROOT: &str = "/sys/fs/cgroup";

thread_local! {
    /// [`ROOT`]'s descriptor while [`from_root`] runs on this thread.
    static ROOT_FD: Cell<Option<RawFd>> = const { Cell::new(None) };
}

/// Runs `work` with this module's calls under [`ROOT`] made from one
/// descriptor of it (where it can be opened), closed at the end. `work`
/// must not fork or clone (see the module's doc).
pub fn from_root<T>(work: impl FnOnce() -> T) -> T {
    /// Forgets and closes the descriptor however `work` ends.
    struct Scope(Option<OwnedFd>);
    impl Drop for Scope {
        fn drop(&mut self) {
            ROOT_FD.set(None);
        }
    }
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c"/sys/fs/cgroup".as_ptr(), flags) };
    // SAFETY: a new descriptor, owned by the scope alone.
    let scope = Scope((fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }));
    ROOT_FD.set(scope.0.as_ref().map(|fd| fd.as_raw_fd()));
    let result = work();
    drop(scope);
    result
}

/// Where the kernel is to look `path` up: a directory descriptor (or
/// `AT_FDCWD` for an absolute path) and the path from it.
fn place(path: &Path) -> io::Result<(RawFd, CString)> {
    let below_root = path
        .strip_prefix(ROOT)
        .ok()
        .filter(|rest| !rest.as_os_str().is_empty());
    let (dir, rest) = match below_root.zip(ROOT_FD.get()) {
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

/// Writes `value` to an existing file (a cgroup's files all exist: a
/// missing one is `NotFound`, a controller the hierarchy lacks).
pub(super) fn write(path: &Path, value: impl AsRef<[u8]>) -> io::Result<()> {
    open(path, libc::O_WRONLY | libc::O_TRUNC)?.write_all(value.as_ref())
}

/// As `OpenOptions::new().write(true).open`.
pub(super) fn open_for_writing(path: &Path) -> io::Result<File> {
    open(path, libc::O_WRONLY)
}

/// As `std::fs::create_dir_all`.
pub(super) fn create_dir_all(path: &Path) -> io::Result<()> {
    let made = mkdir(path);
    match &made {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && parent != path => {
                create_dir_all(parent)?;
                mkdir(path)
            }
            _ => made,
        },
        _ => made,
    }
}

/// One directory; one that is already there is no error.
fn mkdir(path: &Path) -> io::Result<()> {
    let (dir, rest) = place(path)?;
    // SAFETY: as in `open`.
    if unsafe { libc::mkdirat(dir, rest.as_ptr(), 0o777) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.kind() {
        io::ErrorKind::AlreadyExists if is_dir(path) => Ok(()),
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
    fn only_paths_below_the_root_and_only_in_the_scope_start_from_its_descriptor() {
        let below = Path::new("/sys/fs/cgroup/memory/x");
        assert_eq!(place(below).unwrap().0, libc::AT_FDCWD);
        let (dir, rest) = from_root(|| place(below).unwrap());
        if Path::new(ROOT).is_dir() {
            assert_ne!(dir, libc::AT_FDCWD);
            assert_eq!(rest.as_bytes(), b"memory/x");
        }
        assert_eq!(ROOT_FD.get(), None, "the scope left its descriptor behind");
        from_root(|| {
            for whole in ["/sys/fs/cgroup", "/sys/fs/cgroupx/a", "/tmp/a"] {
                let (dir, rest) = place(Path::new(whole)).unwrap();
                assert_eq!(dir, libc::AT_FDCWD, "{whole}");
                assert_eq!(rest.as_bytes(), whole.as_bytes());
            }
        });
    }

    #[test]
    fn a_cgroup_file_reads_as_it_does_by_its_whole_path() {
        let Some(file) = ["cgroup.procs", "unified/cgroup.procs", "pids/cgroup.procs"]
            .iter()
            .map(|f| Path::new(ROOT).join(f))
            .find(|f| f.exists())
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no cgroup hierarchy under {ROOT}"
            );
            return;
        };
        let whole = std::fs::read_to_string(&file).unwrap();
        let scoped = from_root(|| read_to_string(&file)).unwrap();
        // Both list this process, which stays where it is meanwhile.
        let me = std::process::id().to_string();
        assert_eq!(
            whole.lines().any(|l| l == me),
            scoped.lines().any(|l| l == me),
            "{file:?}"
        );
    }

    #[test]
    fn files_and_directories_behave_as_std_does() {
        let base = std::env::temp_dir().join(format!("berth-cgfiles-{}", std::process::id()));
        let deep = base.join("a/b/c");
        create_dir_all(&deep).unwrap();
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        let file = deep.join("f");
        std::fs::write(&file, "one").unwrap();
        write(&file, "2").unwrap();
        assert_eq!(read_to_string(&file).unwrap(), "2");
        open_for_writing(&file).unwrap().write_all(b"3").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "3");
        assert_eq!(
            write(&deep.join("missing"), "x").unwrap_err().kind(),
            io::ErrorKind::NotFound,
            "a cgroup file is never made"
        );
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
