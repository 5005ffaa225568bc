//! Network namespaces pinned by bind mounts, as `ip netns add` makes them:
//! the namespace lives as long as its pin, whatever runs in it, so the
//! plugins can configure it before the container exists, the runtime joins
//! it by path, and a restarted daemon finds it again.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {op} network namespace {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("network namespace {path} already exists")]
    Exists { path: PathBuf },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a new network namespace pinned at `path` (a file, created; its
/// directory must exist), its loopback up (as the CNI `loopback` plugin
/// would, without a process of its own).
pub fn create(path: &Path) -> Result<(), Error> {
    if is_pinned(path) {
        return Err(Error::Exists {
            path: path.to_path_buf(),
        });
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io("create the pin of", path))?;
    // unshare(CLONE_NEWNET) changes only the calling thread's namespace: a
    // thread of its own does it, pins it, and ends; the daemon's threads
    // never leave the daemon's namespace.
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> std::io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        loopback_up()?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the pinning thread panicked")));
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(io("make", path)(e));
    }
    Ok(())
}

/// Sets `lo` up in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `request`, which
    // names an interface and outlives both calls.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Unpins and removes the namespace at `path`; one already gone is fine.
/// The namespace itself ends when nothing else holds it.
pub fn remove(path: &Path) -> Result<(), Error> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(io("unpin", path)(e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove the pin of", path)(e)),
    }
}

/// Whether a namespace is pinned at `path` (a mount of nsfs there).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == libc::NSFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn a_pinned_namespace_is_new_and_goes_with_its_pin() {
        if !root() {
            assert!(std::env::var("CI").is_err(), "needs root under CI");
            eprintln!("skipping: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("berth-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pin = dir.join("ns");
        create(&pin).unwrap();
        assert!(is_pinned(&pin));
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap();
        let theirs = std::fs::metadata(&pin).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(ours.ino(), theirs.ino(), "not a new namespace");
        let lo = std::process::Command::new("nsenter")
            .arg(format!("--net={}", pin.display()))
            .args(["ip", "-o", "link", "show", "lo"])
            .output()
            .unwrap();
        let lo = String::from_utf8_lossy(&lo.stdout);
        assert!(lo.contains(",UP"), "lo is down: {lo}");
        assert!(matches!(create(&pin), Err(Error::Exists { .. })));
        remove(&pin).unwrap();
        assert!(!pin.exists());
        remove(&pin).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }
}
