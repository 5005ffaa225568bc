//! Applying a layer tar to an overlay upper directory, safely and fully.
//!
//! The `tar` crate parses (ustar, GNU long names, PAX records); every file is
//! written here, through [`at`], with each path resolved inside the snapshot
//! root: an entry can never create, change or link anything outside it. What
//! a layer's entries mean follows the OCI image spec's layer rules, applied
//! as containerd applies them to an overlay snapshot:
//!
//! - modes (setuid, setgid, sticky), owners, mtimes, PAX `SCHILY.xattr.*`
//!   (so `security.capability` survives: it is set after `chown`, which
//!   would clear it), devices, fifos, hardlinks (within the layer),
//!   symlinks stored as they are;
//! - `.wh.NAME` becomes an overlay whiteout (a 0/0 character device);
//!   `.wh..wh..opq` marks its directory `trusted.overlay.opaque=y`; other
//!   names under the reserved `.wh..wh.` prefix, and `.wh..`/`.wh...`, are
//!   refused;
//! - `trusted.overlay.*` xattrs from a layer are refused: they are
//!   overlayfs's own control data (redirects, opacity), not file content;
//! - `..` components are refused; absolute names are taken relative to the
//!   root (as containerd does);
//! - a directory a layer writes into that an *earlier* layer made a symlink
//!   (Debian's `var/run -> /run`) is a real directory in this layer's upper
//!   dir, hiding the symlink, as with containerd: each layer is applied to
//!   its own upper directory, which never holds its parents' entries.
//!
//! - sparse files stay sparse: GNU sparse 1.0 in PAX records (what GNU tar
//!   writes with `--sparse --format=pax`: the map at the start of the data,
//!   the real name in `GNU.sparse.name`) is written region by region with
//!   holes between; old GNU sparse entries (type `S`, expanded by the `tar`
//!   crate) get holes where whole blocks read as zeros. The PAX formats 0.0
//!   and 0.1 are refused by name.
//!
//! The layer stream itself may be plain tar, gzip or zstd: [`decompress`]
//! tells them apart by their magic bytes, whatever the media type says.

use berth_oci::safe_path::{at, open_in_root};

mod sparse;

use sparse::{pax_sparse, read_full, read_sparse_map, SparseMapError};

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Errors of applying a layer; each names the entry involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "layer entry {path:?} has a '..' component: refusing a path that could leave the snapshot"
    )]
    Traversal { path: String },
    #[error("layer entry {path:?} uses the reserved whiteout prefix '.wh..wh.' or names '.'/'..' as a whiteout")]
    ReservedWhiteout { path: String },
    #[error("layer entry {path:?} carries xattr {name:?}: overlayfs's own trusted.overlay.* data is not accepted from layers")]
    OverlayXattr { path: String, name: String },
    #[error(
        "layer entry {path:?} is a hardlink to {target:?}, which is not in this layer: {source}"
    )]
    HardlinkTarget {
        path: String,
        target: String,
        source: io::Error,
    },
    #[error("layer entry {path:?}: unsupported tar entry type {kind}")]
    Unsupported { path: String, kind: u8 },
    #[error("layer entry {path:?}: sparse file: {detail}")]
    Sparse { path: String, detail: String },
    #[error("layer entry {path:?}: {op}: {source}")]
    Entry {
        path: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("cannot read the layer (corrupt or truncated tar or compression stream): {0}")]
    Read(#[source] io::Error),
    #[error("cannot open the snapshot directory {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
}

type Result<T> = std::result::Result<T, Error>;

/// What one applied layer held.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub entries: u64,
    /// File content bytes written.
    pub bytes: u64,
}

/// Compression of a layer blob, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The uncompressed stream of a layer blob.
pub fn decompress<'a, R: BufRead + 'a>(mut blob: R) -> io::Result<Box<dyn Read + 'a>> {
    let head = blob.fill_buf()?;
    Ok(match Compression::detect(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(blob)?),
        Compression::None => Box::new(blob),
    })
}

/// Applies the tar stream `layer` to the directory `root`, which must be
/// this layer's own (overlay upper) directory. Returns when the tar's end
/// is reached; the caller drains the stream if it needs every byte hashed.
pub fn apply<R: Read>(root: &Path, layer: R) -> Result<Stats> {
    let root_fd = File::open(root)
        .map(OwnedFd::from)
        .map_err(|source| Error::Root {
            path: root.to_path_buf(),
            source,
        })?;
    let mut applier = Applier {
        root: root_fd,
        dirs: Vec::new(),
        stats: Stats::default(),
        buf: vec![0u8; 1 << 17],
    };
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries().map_err(Error::Read)? {
        let entry = entry.map_err(Error::Read)?;
        applier.entry(entry)?;
    }
    applier.finish();
    Ok(applier.stats)
}

struct Applier {
    root: OwnedFd,
    /// Directory mtimes, set last: writing children changes them.
    dirs: Vec<(OsString, i64, u32)>,
    stats: Stats,
    buf: Vec<u8>,
}

/// An entry's metadata, with PAX records applied over the header.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The `/`-separated components of an entry name, without empty and `.`
/// parts (so `/etc//x` and `./etc/x` are `etc/x`); `..` is refused.
fn components(raw: &[u8]) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(Error::Traversal {
                    path: String::from_utf8_lossy(raw).into_owned(),
                })
            }
            name => out.push(OsString::from_vec(name.to_vec())),
        }
    }
    Ok(out)
}

fn join(parts: &[OsString]) -> OsString {
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(part.as_bytes());
    }
    OsString::from_vec(out)
}

fn meta<R: Read>(entry: &mut tar::Entry<'_, R>, path: &str) -> Result<Meta> {
    let header = entry.header();
    let bad = |source| Error::Entry {
        path: path.to_string(),
        op: "read header",
        source,
    };
    let mut meta = Meta {
        mode: header.mode().map_err(bad)? & 0o7777,
        uid: header.uid().map_err(bad)? as u32,
        gid: header.gid().map_err(bad)? as u32,
        mtime: (header.mtime().map_err(bad)? as i64, 0),
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions().map_err(Error::Read)? {
        for ext in pax {
            let ext = ext.map_err(Error::Read)?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let number = || std::str::from_utf8(value).ok();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                meta.xattrs.push((name.to_vec(), value.to_vec()));
            } else if key == b"uid" {
                if let Some(v) = number().and_then(|v| v.parse().ok()) {
                    meta.uid = v;
                }
            } else if key == b"gid" {
                if let Some(v) = number().and_then(|v| v.parse().ok()) {
                    meta.gid = v;
                }
            } else if key == b"mtime" {
                if let Some(v) = number() {
                    meta.mtime = parse_mtime(v).unwrap_or(meta.mtime);
                }
            }
        }
    }
    for (name, _) in &meta.xattrs {
        if name.starts_with(b"trusted.overlay.") {
            return Err(Error::OverlayXattr {
                path: path.to_string(),
                name: String::from_utf8_lossy(name).into_owned(),
            });
        }
    }
    Ok(meta)
}

/// PAX `mtime`: decimal seconds with an optional fraction.
fn parse_mtime(v: &str) -> Option<(i64, u32)> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    Some((secs, digits.parse().ok()?))
}

impl Applier {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let sparse = pax_sparse(&mut entry)?;
        let raw = match &sparse {
            Some(sparse) => sparse.name.clone(),
            None => entry.path_bytes().into_owned(),
        };
        let path = String::from_utf8_lossy(&raw).into_owned();
        let mut parts = components(&raw)?;
        let Some(name) = parts.pop() else {
            // The root itself ("./"): its metadata belongs to the snapshot.
            return Ok(());
        };
        self.stats.entries += 1;
        let io_err = |op: &'static str| {
            let path = path.clone();
            move |source| Error::Entry { path, op, source }
        };

        if let Some(hidden) = name.as_bytes().strip_prefix(b".wh.") {
            return self.whiteout(&parts, hidden, &path, entry.header());
        }

        let meta = meta(&mut entry, &path)?;
        let parent = self.dir(&parts).map_err(io_err("open parent directory"))?;
        let kind = entry.header().entry_type();

        // Whatever this layer put at the name before is replaced, except a
        // directory by a directory, which tar semantics merge.
        if let Some(st) = at::lstat_at(parent.as_fd(), &name).map_err(io_err("stat"))? {
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if !(is_dir && kind.is_dir()) {
                at::remove_all_at(parent.as_fd(), &name).map_err(io_err("replace"))?;
            }
        }

        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                let fd = at::open_at(
                    parent.as_fd(),
                    &name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                )
                .map_err(io_err("create file"))?;
                let mut file = File::from(fd);
                if let Some(sparse) = &sparse {
                    self.write_regions(&mut entry, &mut file, sparse.real_size, &path)?;
                } else if kind == T::GNUSparse {
                    self.write_with_holes(&mut entry, &mut file, &path)?;
                } else {
                    loop {
                        let n = entry.read(&mut self.buf).map_err(Error::Read)?;
                        if n == 0 {
                            break;
                        }
                        file.write_all(&self.buf[..n]).map_err(io_err("write"))?;
                        self.stats.bytes += n as u64;
                    }
                }
                self.set_fd_meta(file.as_fd(), &meta, true)
                    .map_err(io_err("set metadata"))?;
            }
            T::Directory => {
                match at::mkdir_at(parent.as_fd(), &name, 0o700) {
                    Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                        return Err(io_err("mkdir")(e))
                    }
                    _ => {}
                }
                let fd = at::open_at(parent.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(io_err("open directory"))?;
                self.set_fd_meta(fd.as_fd(), &meta, false)
                    .map_err(io_err("set metadata"))?;
                parts.push(name);
                self.dirs.push((join(&parts), meta.mtime.0, meta.mtime.1));
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                at::symlink_at(OsStr::from_bytes(&target), parent.as_fd(), &name)
                    .map_err(io_err("symlink"))?;
                at::lchown_at(parent.as_fd(), &name, meta.uid, meta.gid)
                    .map_err(io_err("chown"))?;
                self.set_name_mtime(parent.as_fd(), &name, meta.mtime)
                    .map_err(io_err("set mtime"))?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.hardlink(&target, parent.as_fd(), &name, &path)?;
            }
            T::Char | T::Block | T::Fifo => {
                let (fmt, dev) = match kind {
                    T::Fifo => (libc::S_IFIFO, 0),
                    _ => {
                        let header = entry.header();
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let fmt = if kind == T::Char {
                            libc::S_IFCHR
                        } else {
                            libc::S_IFBLK
                        };
                        (fmt, libc::makedev(major, minor))
                    }
                };
                at::mknod_at(parent.as_fd(), &name, fmt | (meta.mode & 0o777), dev)
                    .map_err(io_err("mknod"))?;
                // A device or fifo cannot be opened for fchown/fchmod without
                // side effects, so it is changed through an O_PATH fd.
                let fd = at::open_at(parent.as_fd(), &name, libc::O_PATH, 0)
                    .map_err(io_err("open node"))?;
                at::lchown_at(parent.as_fd(), &name, meta.uid, meta.gid)
                    .map_err(io_err("chown"))?;
                chmod_o_path(fd.as_fd(), meta.mode).map_err(io_err("chmod"))?;
                self.set_name_mtime(parent.as_fd(), &name, meta.mtime)
                    .map_err(io_err("set mtime"))?;
            }
            // PAX and GNU long-name records are consumed by the tar crate.
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            other => {
                return Err(Error::Unsupported {
                    path,
                    kind: other.as_byte(),
                })
            }
        }
        Ok(())
    }

    /// A GNU sparse 1.0 file: the map, then each region at its offset, and
    /// the holes between left unwritten.
    fn write_regions<R: Read>(
        &mut self,
        entry: &mut R,
        file: &mut File,
        real_size: u64,
        path: &str,
    ) -> Result<()> {
        let regions = read_sparse_map(entry, real_size).map_err(|e| match e {
            SparseMapError::Read(e) => Error::Read(e),
            SparseMapError::Invalid(detail) => Error::Sparse {
                path: path.to_string(),
                detail,
            },
        })?;
        let io_err = |op: &'static str| {
            let path = path.to_string();
            move |source| Error::Entry { path, op, source }
        };
        for (offset, len) in regions {
            file.seek(io::SeekFrom::Start(offset))
                .map_err(io_err("seek"))?;
            let copied = io::copy(&mut entry.take(len), file).map_err(Error::Read)?;
            if copied != len {
                return Err(Error::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{path}: sparse region at {offset} ends after {copied} of {len} bytes"),
                )));
            }
            self.stats.bytes += len;
        }
        file.set_len(real_size).map_err(io_err("set size"))
    }

    /// An old GNU sparse entry, which the `tar` crate reads back with its
    /// holes as zeros: whole zero blocks are skipped, so they stay holes.
    fn write_with_holes<R: Read>(
        &mut self,
        entry: &mut R,
        file: &mut File,
        path: &str,
    ) -> Result<()> {
        const BLOCK: usize = 4096;
        let io_err = |op: &'static str| {
            let path = path.to_string();
            move |source| Error::Entry { path, op, source }
        };
        let mut size = 0u64;
        loop {
            let n = read_full(entry, &mut self.buf).map_err(Error::Read)?;
            if n == 0 {
                break;
            }
            for block in self.buf[..n].chunks(BLOCK) {
                if block.iter().all(|&b| b == 0) {
                    file.seek(io::SeekFrom::Current(block.len() as i64))
                        .map_err(io_err("seek"))?;
                } else {
                    file.write_all(block).map_err(io_err("write"))?;
                    self.stats.bytes += block.len() as u64;
                }
            }
            size += n as u64;
        }
        file.set_len(size).map_err(io_err("set size"))
    }

    /// Opens (creating as 0755 what is missing) the directory `parts`,
    /// resolved inside the root.
    fn dir(&self, parts: &[OsString]) -> io::Result<OwnedFd> {
        self.dir_following(parts, 0)
    }

    fn dir_following(&self, parts: &[OsString], depth: u32) -> io::Result<OwnedFd> {
        // The kernel's own limit on symlinks in one lookup.
        if depth > 40 {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let path = join(parts);
        let opened = open_in_root(self.root.as_fd(), &path, libc::O_PATH | libc::O_DIRECTORY);
        let (Err(e), Some((last, init))) = (&opened, parts.split_last()) else {
            return opened;
        };
        if e.raw_os_error() != Some(libc::ENOENT) {
            return opened;
        }
        let parent = self.dir_following(init, depth)?;
        match at::mkdir_at(parent.as_fd(), last, 0o755) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // Something is there but did not resolve: a symlink (made
                // by this layer) to a directory that does not exist yet.
                // As containerd, create its target, inside the root.
                let target = at::readlink_at(parent.as_fd(), last)?;
                let mut next: Vec<OsString> = if target.as_bytes().starts_with(b"/") {
                    Vec::new()
                } else {
                    init.to_vec()
                };
                for part in target.as_bytes().split(|&b| b == b'/') {
                    match part {
                        b"" | b"." => {}
                        // `..` at the root stays at the root, as with RESOLVE_IN_ROOT.
                        b".." => {
                            next.pop();
                        }
                        name => next.push(OsString::from_vec(name.to_vec())),
                    }
                }
                self.dir_following(&next, depth + 1)?;
                open_in_root(self.root.as_fd(), &path, libc::O_PATH | libc::O_DIRECTORY)
            }
            Err(e) => Err(e),
            Ok(()) => open_in_root(self.root.as_fd(), &path, libc::O_PATH | libc::O_DIRECTORY),
        }
    }

    fn whiteout(
        &mut self,
        parts: &[OsString],
        hidden: &[u8],
        path: &str,
        header: &tar::Header,
    ) -> Result<()> {
        let io_err = |op: &'static str| {
            let path = path.to_string();
            move |source| Error::Entry { path, op, source }
        };
        if hidden == b".wh..opq" {
            // The directory itself may not be in this layer yet.
            self.dir(parts).map_err(io_err("open directory"))?;
            let dir = open_in_root(
                self.root.as_fd(),
                join(parts),
                libc::O_RDONLY | libc::O_DIRECTORY,
            )
            .map_err(io_err("open directory"))?;
            return at::fsetxattr(dir.as_fd(), b"trusted.overlay.opaque", b"y")
                .map_err(io_err("mark opaque"));
        }
        if hidden.starts_with(b".wh.") || hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(Error::ReservedWhiteout {
                path: path.to_string(),
            });
        }
        let name = OsStr::from_bytes(hidden);
        let parent = self.dir(parts).map_err(io_err("open parent directory"))?;
        at::remove_all_at(parent.as_fd(), name).map_err(io_err("replace"))?;
        at::mknod_at(parent.as_fd(), name, libc::S_IFCHR, 0).map_err(io_err("whiteout"))?;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        at::lchown_at(parent.as_fd(), name, uid, gid).map_err(io_err("chown"))
    }

    fn hardlink(
        &mut self,
        target: &[u8],
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: &str,
    ) -> Result<()> {
        let mut parts = components(target)?;
        let fail = |source| Error::HardlinkTarget {
            path: path.to_string(),
            target: String::from_utf8_lossy(target).into_owned(),
            source,
        };
        let Some(target_name) = parts.pop() else {
            return Err(fail(io::Error::from_raw_os_error(libc::EISDIR)));
        };
        let target_dir = open_in_root(
            self.root.as_fd(),
            join(&parts),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(fail)?;
        at::link_at(target_dir.as_fd(), &target_name, parent, name).map_err(fail)
    }

    /// chown, then chmod (chown clears setuid/setgid), then xattrs (chown
    /// clears security.capability), then mtime for files.
    fn set_fd_meta(&self, fd: BorrowedFd<'_>, meta: &Meta, times: bool) -> io::Result<()> {
        at::fchown(fd, meta.uid, meta.gid)?;
        at::fchmod(fd, meta.mode)?;
        for (name, value) in &meta.xattrs {
            at::fsetxattr(fd, name, value)?;
        }
        if times {
            at::futimes(fd, meta.mtime.0, meta.mtime.1)?;
        }
        Ok(())
    }

    fn set_name_mtime(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        mtime: (i64, u32),
    ) -> io::Result<()> {
        let name = std::ffi::CString::new(name.as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        at::utimes_at(dir, &name, mtime.0, mtime.1)
    }

    /// Directory mtimes, deepest last-created first. A directory replaced
    /// since (by a later entry) is skipped, not followed.
    fn finish(&mut self) {
        for (path, secs, nanos) in self.dirs.iter().rev() {
            if let Ok(fd) = open_in_root(
                self.root.as_fd(),
                path,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            ) {
                let _ = at::futimes(fd.as_fd(), *secs, *nanos);
            }
        }
    }
}

/// chmod through an `O_PATH` fd: `/proc/self/fd/N` names the inode itself.
fn chmod_o_path(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid C string; the magic link resolves to the node just made.
    if unsafe { libc::chmod(path.as_ptr(), mode) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_refuse_dot_dot_and_strip_roots() {
        assert!(components(b"../etc/passwd").is_err());
        assert!(components(b"a/../../b").is_err());
        assert_eq!(
            components(b"/etc//./passwd").unwrap(),
            vec![OsString::from("etc"), OsString::from("passwd")]
        );
    }

    #[test]
    fn compression_is_sniffed() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"etc/\0"), Compression::None);
    }

    #[test]
    fn sparse_maps_are_read_and_checked() {
        let mut data: &[u8] = b"2\n0\n3\n100\n5\n";
        assert_eq!(
            read_sparse_map(&mut data, 200).unwrap(),
            vec![(0, 3), (100, 5)]
        );
        for (bad, size) in [
            (&b"1\n10\n5\n"[..], 12),         // past the end
            (&b"2\n10\n5\n12\n1\n"[..], 100), // overlapping
            (&b"1\n-1\n5\n"[..], 100),        // not a number
            (&b"99999999\n"[..], 100),        // too many regions
        ] {
            let mut data = bad;
            assert!(read_sparse_map(&mut data, size).is_err(), "{bad:?}");
        }
    }

    /// A layer holding one GNU sparse 1.0 file, as GNU tar writes it.
    fn pax_sparse_layer(regions: &[(u64, &[u8])], real_size: u64) -> Vec<u8> {
        sparse_layer_of_version("1", "0", regions, real_size)
    }

    fn sparse_layer_of_version(
        major: &str,
        minor: &str,
        regions: &[(u64, &[u8])],
        real_size: u64,
    ) -> Vec<u8> {
        let mut map = format!("{}\n", regions.len());
        for (offset, bytes) in regions {
            map.push_str(&format!("{offset}\n{}\n", bytes.len()));
        }
        let mut data = map.into_bytes();
        data.resize(data.len().div_ceil(512) * 512, 0);
        for (_, bytes) in regions {
            data.extend_from_slice(bytes);
        }
        let mut builder = tar::Builder::new(Vec::new());
        let size = real_size.to_string();
        builder
            .append_pax_extensions([
                ("GNU.sparse.major", major.as_bytes()),
                ("GNU.sparse.minor", minor.as_bytes()),
                ("GNU.sparse.name", b"data/sparse"),
                ("GNU.sparse.realsize", size.as_bytes()),
            ])
            .unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("data/GNUSparseFile.1/sparse").unwrap();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        header.set_uid(uid.into());
        header.set_gid(gid.into());
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, &data[..]).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn gnu_sparse_1_0_files_stay_sparse() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("berth-unpack-sparse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let real_size = 256 << 20;
        let layer = pax_sparse_layer(&[(4096, b"hello"), (real_size - 4, b"tail")], real_size);
        apply(&dir, &layer[..]).unwrap();

        let path = dir.join("data/sparse");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), real_size);
        // Two regions, a few blocks; written whole it would be 256 MiB.
        assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[4096..4101], b"hello");
        assert_eq!(&bytes[bytes.len() - 4..], b"tail");
        assert!(bytes[..4096].iter().all(|&b| b == 0));
        assert!(!dir.join("data/GNUSparseFile.1").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn older_pax_sparse_formats_are_refused_by_name() {
        let dir =
            std::env::temp_dir().join(format!("berth-unpack-sparse01-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let layer = sparse_layer_of_version("0", "1", &[(0, b"x")], 4096);
        let err = apply(&dir, &layer[..]).unwrap_err().to_string();
        assert!(err.contains("\"data/sparse\""), "{err}");
        assert!(err.contains("GNU sparse format 0.1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pax_mtime_fractions() {
        assert_eq!(parse_mtime("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_mtime("7"), Some((7, 0)));
    }
}
