//! A container's files as tar streams, both ways: `docker cp` and
//! `docker export`, for running and stopped containers alike. A running
//! container is reached through its init's `/proc/PID/root` (its volumes
//! and other mounts included); a stopped one through its rootfs, which
//! stays mounted at `BUNDLE/rootfs` for the container's life (its volumes
//! are not reached then).
//!
//! Threat: the container's root filesystem belongs to the container, which
//! may plant `etc -> /` or `../../` anywhere, and may swap a directory for a
//! symlink while a copy runs. The daemon, as host root, must then neither
//! read nor write a host file. So every path a client names is resolved by
//! the kernel with the container root as `/` (`openat2(RESOLVE_IN_ROOT)`,
//! [`berth_oci::safe_path`]'s primitives), every step of a walk below it is one
//! name opened with `O_NOFOLLOW` relative to its directory's descriptor,
//! and what is unpacked into a container goes through the layer unpacker,
//! rooted at the destination directory's descriptor.
//!
//! Where to start reading: [`Files::tar`] (a path to a tar), then
//! [`Files::unpack`] (a tar into a directory). The gRPC service is
//! [`service`] below.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::tasks::Tasks;
use berth_oci::safe_path::{at, open_in_root};

/// Errors of a copy; the message is what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("No such container:path: {container}:{path}")]
    NotFound { container: String, path: String },
    #[error("{container}:{path} is not a directory: copy a tar only into a directory")]
    NotDirectory { container: String, path: String },
    #[error(transparent)]
    Container(#[from] crate::containers::Error),
    #[error("cannot unpack into {container}:{path}: {source}")]
    Unpack {
        container: String,
        path: String,
        source: crate::unpack::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, Error>;

/// What a path is, without following a final symlink.
#[derive(Debug, Clone, Default)]
pub struct Stat {
    pub name: String,
    pub size: i64,
    pub mode: u32,
    pub link_target: String,
}

/// The containers' files.
#[derive(Clone)]
pub struct Files {
    pub tasks: Arc<Tasks>,
}

/// A path as the client wrote it, split into the directory part (resolved
/// in the root, following symlinks) and the last name (not followed).
struct Split {
    parent: OsString,
    name: Option<OsString>,
}

fn split(path: &str) -> Split {
    let trimmed = path.trim_end_matches('/');
    // "dir/." and "dir/" name the directory itself, followed.
    if trimmed.is_empty() || path.ends_with('/') || trimmed.ends_with("/.") || trimmed == "." {
        return Split {
            parent: OsString::from(path),
            name: None,
        };
    }
    let (parent, name) = match trimmed.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", trimmed),
    };
    if name == ".." {
        return Split {
            parent: OsString::from(trimmed),
            name: None,
        };
    }
    Split {
        parent: OsString::from(parent),
        name: Some(OsString::from(name)),
    }
}

fn stat_of(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a stat buffer of the right type.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn is(st: &libc::stat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

/// The root as `/proc/self/fd/N`, a path that names the very directory the
/// descriptor holds, so an unpacker that opens a path opens that one.
fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl Files {
    /// The container's mounted root, opened.
    fn root(&self, container: &str, with_mounts: bool) -> Result<(String, OwnedFd)> {
        let containers = &self.tasks.containers;
        let record = containers.resolve(container)?;
        // A running container's root as its own processes see it, through
        // its init's /proc/PID/root: lookups from there cross the mounts of
        // its mount namespace, so volumes, binds and tmpfs are where the
        // container has them. A stopped one has only its rootfs.
        let pid = record.state.pid;
        if with_mounts && pid > 0 && self.tasks.is_running(&record.id) {
            let path = format!("/proc/{pid}/root");
            if let Ok(fd) = File::open(&path).map(OwnedFd::from) {
                // The pid is still the container's init (not a reused
                // number): its record says so after the open.
                let now = containers.resolve(&record.id)?;
                if now.state.pid == pid && self.tasks.is_running(&record.id) {
                    return Ok((record.name, fd));
                }
            }
        }
        containers.ensure_rootfs(&record)?;
        let rootfs = record.rootfs();
        let fd = File::open(&rootfs)
            .map(OwnedFd::from)
            .map_err(|source| Error::Io {
                op: "open",
                path: rootfs.display().to_string(),
                source,
            })?;
        Ok((record.name, fd))
    }

    /// The directory holding the path's last name (or the path itself when
    /// it names a directory to follow), and that name.
    fn locate(
        &self,
        container: &str,
        path: &str,
    ) -> Result<(OwnedFd, Option<OsString>, libc::stat)> {
        let (name, root) = self.root(container, true)?;
        let missing = || Error::NotFound {
            container: name.clone(),
            path: path.to_string(),
        };
        let split = split(path);
        let dir = open_in_root(root.as_fd(), &split.parent, libc::O_PATH).map_err(|_| missing())?;
        let st = match &split.name {
            None => stat_of(dir.as_fd()).map_err(|_| missing())?,
            Some(last) => at::lstat_at(dir.as_fd(), last)
                .ok()
                .flatten()
                .ok_or_else(missing)?,
        };
        if split.name.is_some() && !is(&stat_of(dir.as_fd()).map_err(|_| missing())?, libc::S_IFDIR)
        {
            return Err(missing());
        }
        Ok((dir, split.name, st))
    }

    /// What `path` is in the container.
    pub fn stat(&self, container: &str, path: &str) -> Result<Stat> {
        let (dir, last, st) = self.locate(container, path)?;
        let link_target = match &last {
            Some(name) if is(&st, libc::S_IFLNK) => at::readlink_at(dir.as_fd(), name)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let name = match &last {
            Some(n) => n.to_string_lossy().into_owned(),
            None => Path::new(path.trim_end_matches("/."))
                .file_name()
                .map_or("/".into(), |n| n.to_string_lossy().into_owned()),
        };
        Ok(Stat {
            name,
            size: st.st_size,
            mode: st.st_mode,
            link_target,
        })
    }

    /// Writes the file or tree at `path` to `out` as a tar whose top entry
    /// is `top` ("": the path's own last name). With `follow`, a symlink at
    /// `path` is copied as what it points to (resolved in the root).
    pub fn tar(
        &self,
        container: &str,
        path: &str,
        top: &str,
        follow: bool,
        out: impl Write,
    ) -> Result<()> {
        let (dir, last, st) = self.locate(container, path)?;
        let (dir, last, st) =
            match last {
                Some(_) if follow && is(&st, libc::S_IFLNK) => {
                    let (container_name, root) = self.root(container, true)?;
                    let target = open_in_root(root.as_fd(), OsStr::new(path), libc::O_PATH)
                        .map_err(|_| Error::NotFound {
                            container: container_name,
                            path: path.to_string(),
                        })?;
                    let st = stat_of(target.as_fd()).map_err(io_err("stat", path))?;
                    (target, None, st)
                }
                other => (dir, other, st),
            };
        let top = if !top.is_empty() {
            PathBuf::from(top)
        } else {
            match &last {
                Some(name) => PathBuf::from(name),
                None => Path::new(path.trim_end_matches("/."))
                    .file_name()
                    .map_or(PathBuf::from("."), PathBuf::from),
            }
        };
        let mut walk = Walk {
            tar: tar::Builder::new(out),
            links: HashMap::new(),
        };
        match &last {
            Some(name) => walk.entry(dir.as_fd(), name, st, &top),
            // What the path (followed) is, reopened readable from its
            // O_PATH descriptor through its /proc/self/fd link: the same
            // inode, whatever the container renamed since.
            None if is(&st, libc::S_IFDIR) => {
                File::open(fd_path(dir.as_fd())).and_then(|f| walk.dir(OwnedFd::from(f), &st, &top))
            }
            None if is(&st, libc::S_IFREG) => {
                File::open(fd_path(dir.as_fd())).and_then(|f| walk.regular(f, &top))
            }
            None => Ok(()),
        }
        .map_err(io_err("read", path))?;
        walk.tar
            .into_inner()
            .and_then(|mut w| w.flush())
            .map_err(io_err("write", path))
    }

    /// The container's whole filesystem, entries named from its root
    /// (`bin/sh`, not `./bin/sh`), as docker export writes them.
    pub fn export(&self, container: &str, out: impl Write) -> Result<()> {
        // The container's own filesystem: no volume, no /proc.
        let (_, root) = self.root(container, false)?;
        let mut walk = Walk {
            tar: tar::Builder::new(out),
            links: HashMap::new(),
        };
        walk.children(root.as_fd(), Path::new(""))
            .map_err(io_err("read", "/"))?;
        walk.tar
            .into_inner()
            .and_then(|mut w| w.flush())
            .map_err(io_err("write", "/"))
    }

    /// Unpacks the tar `input` into the container's existing directory
    /// `path`. Entries are written as a layer's are: nothing can leave it.
    pub fn unpack(&self, container: &str, path: &str, input: impl Read) -> Result<()> {
        let (name, root) = self.root(container, true)?;
        let dir = open_in_root(root.as_fd(), OsStr::new(path), libc::O_PATH).map_err(|_| {
            Error::NotFound {
                container: name.clone(),
                path: path.to_string(),
            }
        })?;
        let st = stat_of(dir.as_fd()).map_err(io_err("stat", path))?;
        if !is(&st, libc::S_IFDIR) {
            return Err(Error::NotDirectory {
                container: name,
                path: path.to_string(),
            });
        }
        crate::unpack::apply(&fd_path(dir.as_fd()), input).map_err(|source| Error::Unpack {
            container: name,
            path: path.to_string(),
            source,
        })?;
        Ok(())
    }
}

fn io_err(op: &'static str, path: &str) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_string();
    move |source| Error::Io { op, path, source }
}

/// A walk below one directory descriptor, written into a tar.
struct Walk<W: Write> {
    tar: tar::Builder<W>,
    /// Files with more than one link already written, by (dev, inode).
    links: HashMap<(u64, u64), PathBuf>,
}

fn header(st: &libc::stat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

impl<W: Write> Walk<W> {
    /// The entry `name` of `parent`, whose lstat is `st`, as `entry`.
    fn entry(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        st: libc::stat,
        entry: &Path,
    ) -> io::Result<()> {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let fd = at::open_at(parent, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                let st = stat_of(fd.as_fd())?;
                self.dir(fd, &st, entry)
            }
            libc::S_IFREG => {
                // Opened as a path first: a device or fifo swapped in since
                // the listing is never opened for reading.
                let fd = at::open_at(parent, name, libc::O_PATH, 0)?;
                if !is(&stat_of(fd.as_fd())?, libc::S_IFREG) {
                    return Ok(());
                }
                self.regular(File::open(fd_path(fd.as_fd()))?, entry)
            }
            libc::S_IFLNK => {
                let target = at::readlink_at(parent, name)?;
                let mut h = header(&st, tar::EntryType::Symlink);
                self.tar.append_link(&mut h, entry, Path::new(&target))
            }
            kind @ (libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO) => {
                let kind = match kind {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = header(&st, kind);
                h.set_device_major(libc::major(st.st_rdev))?;
                h.set_device_minor(libc::minor(st.st_rdev))?;
                self.tar.append_data(&mut h, entry, io::empty())
            }
            // Sockets cannot be archived.
            _ => Ok(()),
        }
    }

    fn regular(&mut self, file: File, entry: &Path) -> io::Result<()> {
        let st = stat_of(file.as_fd())?;
        if !is(&st, libc::S_IFREG) {
            // Swapped since it was listed: not what was asked for.
            return Ok(());
        }
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                let mut h = header(&st, tar::EntryType::Link);
                return self.tar.append_link(&mut h, entry, first.clone());
            }
            self.links.insert(key, entry.to_path_buf());
        }
        let mut h = header(&st, tar::EntryType::Regular);
        let size = st.st_size.max(0) as u64;
        h.set_size(size);
        self.tar
            .append_data(&mut h, entry, Exactly { file, left: size })
    }

    fn dir(&mut self, fd: OwnedFd, st: &libc::stat, entry: &Path) -> io::Result<()> {
        let mut h = header(st, tar::EntryType::Directory);
        self.tar.append_data(&mut h, entry, io::empty())?;
        self.children(fd.as_fd(), entry)
    }

    fn children(&mut self, fd: BorrowedFd<'_>, entry: &Path) -> io::Result<()> {
        let mut names = at::list_dir(fd)?;
        names.sort();
        for name in names {
            let name = OsStr::from_bytes(name.as_bytes());
            // Gone since the listing: skipped, as tar does.
            let Some(st) = at::lstat_at(fd, name)? else {
                continue;
            };
            self.entry(fd, name, st, &entry.join(name))?;
        }
        Ok(())
    }
}

/// A file's bytes cut or padded to the size its header announced: a file
/// the container writes to while it is copied cannot corrupt the tar.
struct Exactly {
    file: File,
    left: u64,
}

impl Read for Exactly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = match self.file.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

pub mod service;

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn a_path_is_its_directory_and_last_name() {
        let parts = |p: &str| {
            let s = split(p);
            (
                s.parent.to_string_lossy().into_owned(),
                s.name.map(|n| n.to_string_lossy().into_owned()),
            )
        };
        assert_eq!(parts("/etc/passwd"), ("/etc".into(), Some("passwd".into())));
        assert_eq!(parts("file"), ("".into(), Some("file".into())));
        // A trailing `/` or `/.`, the root and `..`: the directory, followed.
        assert_eq!(parts("/data/"), ("/data/".into(), None));
        assert_eq!(parts("/data/."), ("/data/.".into(), None));
        assert_eq!(parts("/"), ("/".into(), None));
        assert_eq!(parts("/a/.."), ("/a/..".into(), None));
    }
}
