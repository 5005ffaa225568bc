//! `COPY` and `ADD` sources: the build context (the client's tar, unpacked
//! into a private directory with the pull's safe unpacker) or another
//! stage's filesystem, and the layer tar a copy makes.
//!
//! A source path is checked twice: lexically (a `..` that climbs out of
//! the context is refused: "outside the build context"), then resolved
//! with `openat2(RESOLVE_IN_ROOT)`, so a symlink in the context (or in a
//! stage) that points at `/etc/shadow` resolves inside the context, never
//! on the host. The copy itself never follows symlinks: they are copied as
//! symlinks.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Errors of reading sources.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("forbidden path outside the build context: {0} (COPY and ADD read only files inside the context directory)")]
    Outside(String),
    #[error("{0}: no such file or directory in the {1}")]
    Missing(String, &'static str),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, Error>;

io_context!(io_err, Error);

/// `path` relative to the root it is read in, or `None` if `..` climbs
/// above it.
pub fn lexical(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

/// Where sources are read from.
pub struct Source<'a> {
    pub root: &'a Path,
    /// "build context" or "stage NAME", for messages.
    pub what: &'static str,
    /// Whether `..` out of the root is an error (the context) or stops at
    /// the root (a stage's filesystem, like a path in a container).
    pub strict: bool,
}

impl Source<'_> {
    /// The sources `pattern` names: a path, or a path whose last component
    /// holds `*` or `?`. Each is (path as written, resolved host path).
    pub fn resolve(&self, pattern: &str) -> Result<Vec<(PathBuf, PathBuf)>> {
        let rel = match lexical(pattern) {
            Some(rel) => rel,
            None if self.strict => return Err(Error::Outside(pattern.to_string())),
            None => PathBuf::new(),
        };
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.contains(['*', '?']) {
            return Ok(vec![(rel.clone(), self.in_root(&rel, pattern)?)]);
        }
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let dir = self.in_root(&parent, pattern)?;
        let mut out = Vec::new();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err("read", &dir))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        for n in names {
            if glob(&name, &n) {
                let rel = parent.join(&n);
                out.push((rel.clone(), self.in_root(&rel, pattern)?));
            }
        }
        if out.is_empty() {
            return Err(Error::Missing(pattern.to_string(), self.what));
        }
        Ok(out)
    }

    /// The host path of `rel`, resolved inside the root.
    fn in_root(&self, rel: &Path, pattern: &str) -> Result<PathBuf> {
        let root = File::open(self.root).map_err(io_err("open", self.root))?;
        let fd = berth_oci::safe_path::open_in_root(root.as_raw_fd(), rel, libc::O_PATH).map_err(
            |e| match e.kind() {
                io::ErrorKind::NotFound => Error::Missing(pattern.to_string(), self.what),
                _ => Error::Io {
                    op: "open",
                    path: self.root.join(rel),
                    source: e,
                },
            },
        )?;
        let real = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(io_err("resolve", rel))?;
        let root_real = fs::canonicalize(self.root).map_err(io_err("resolve", self.root))?;
        if !real.starts_with(&root_real) {
            return Err(Error::Outside(pattern.to_string()));
        }
        Ok(real)
    }
}

/// `*` and `?` matching within one path component.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Ownership and mode a copy gives what it writes (`--chown`, `--chmod`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub owner: Option<(u32, u32)>,
    pub mode: Option<u32>,
}

/// Writes copies into a layer tar and sums what it writes (paths, modes,
/// owners, link targets, file contents; not times): the cache key's view
/// of the inputs.
pub struct Copier<'a, W: io::Write> {
    pub tar: &'a mut tar::Builder<W>,
    pub sum: Sha256,
    pub overrides: Overrides,
    links: HashMap<(u64, u64), PathBuf>,
}

impl<'a, W: io::Write> Copier<'a, W> {
    pub fn new(tar: &'a mut tar::Builder<W>, overrides: Overrides) -> Self {
        Copier {
            tar,
            sum: Sha256::new(),
            overrides,
            links: HashMap::new(),
        }
    }

    fn header(&mut self, meta: &fs::Metadata, kind: tar::EntryType, dest: &Path) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        let mode = match (self.overrides.mode, kind) {
            (Some(m), tar::EntryType::Regular | tar::EntryType::Directory) => m,
            _ => meta.mode() & 0o7777,
        };
        let (uid, gid) = self.overrides.owner.unwrap_or((meta.uid(), meta.gid()));
        h.set_mode(mode);
        h.set_uid(u64::from(uid));
        h.set_gid(u64::from(gid));
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        self.sum.update(format!(
            "{}\0{:?}\0{mode:o}\0{uid}:{gid}\0",
            dest.display(),
            kind
        ));
        h
    }

    /// Copies `src` (a host path resolved inside its root) to `dest` (an
    /// image path without the leading `/`): a directory's contents go into
    /// `dest`, anything else becomes `dest`.
    pub fn copy(&mut self, src: &Path, dest: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(src).map_err(io_err("stat", src))?;
        if meta.is_dir() {
            if !dest.as_os_str().is_empty() {
                let mut h = self.header(&meta, tar::EntryType::Directory, dest);
                self.tar
                    .append_data(&mut h, dest, io::empty())
                    .map_err(io_err("write", dest))?;
            }
            let mut names: Vec<_> = fs::read_dir(src)
                .map_err(io_err("read", src))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            for n in names {
                self.copy_entry(&src.join(&n), &dest.join(&n))?;
            }
            return Ok(());
        }
        self.copy_entry(src, dest)
    }

    fn copy_entry(&mut self, src: &Path, dest: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(src).map_err(io_err("stat", src))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            return self.copy(src, dest);
        }
        let fail = io_err("write", dest);
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(io_err("readlink", src))?;
            let mut h = self.header(&meta, tar::EntryType::Symlink, dest);
            self.sum.update(target.as_os_str().as_encoded_bytes());
            return self.tar.append_link(&mut h, dest, &target).map_err(fail);
        }
        if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&(meta.dev(), meta.ino())).cloned() {
                    let mut h = self.header(&meta, tar::EntryType::Link, dest);
                    self.sum.update(first.as_os_str().as_encoded_bytes());
                    return self.tar.append_link(&mut h, dest, &first).map_err(fail);
                }
                self.links
                    .insert((meta.dev(), meta.ino()), dest.to_path_buf());
            }
            let mut h = self.header(&meta, tar::EntryType::Regular, dest);
            h.set_size(meta.len());
            let file = File::open(src).map_err(io_err("open", src))?;
            let mut summing = Summing {
                inner: file.take(meta.len()),
                sum: &mut self.sum,
            };
            return self
                .tar
                .append_data(&mut h, dest, &mut summing)
                .map_err(fail);
        }
        let Some(kind) = super::layer::special_entry_type(&ft) else {
            return Ok(());
        };
        let mut h = self.header(&meta, kind, dest);
        h.set_device_major(libc::major(meta.rdev()))
            .map_err(io_err("write", dest))?;
        h.set_device_minor(libc::minor(meta.rdev()))
            .map_err(io_err("write", dest))?;
        self.tar
            .append_data(&mut h, dest, io::empty())
            .map_err(fail)
    }

    /// `ADD` of a local archive: its entries under `dest`. Returns false
    /// (writing nothing) if `src` is not a tar, plain or compressed.
    pub fn extract(&mut self, src: &Path, dest: &Path) -> Result<bool> {
        let open = || -> Result<Box<dyn Read>> {
            let file = File::open(src).map_err(io_err("open", src))?;
            crate::unpack::decompress(io::BufReader::new(file)).map_err(io_err("read", src))
        };
        // A tar's first header has "ustar" at offset 257.
        let mut head = vec![0u8; 512];
        let n = read_full(&mut *open()?, &mut head);
        if n < 512 || &head[257..262] != b"ustar" {
            return Ok(false);
        }
        let mut archive = tar::Archive::new(open()?);
        let entries = archive.entries().map_err(io_err("read", src))?;
        for entry in entries {
            let mut entry = entry.map_err(io_err("read", src))?;
            let raw = entry.path().map_err(io_err("read", src))?.into_owned();
            let rel = lexical(&raw.to_string_lossy()).ok_or_else(|| {
                Error::Invalid(format!(
                    "ADD {}: entry {} climbs out of the destination",
                    src.display(),
                    raw.display()
                ))
            })?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            let target = dest.join(&rel);
            let mut h = entry.header().clone();
            if let Some((uid, gid)) = self.overrides.owner {
                h.set_uid(u64::from(uid));
                h.set_gid(u64::from(gid));
            }
            self.sum.update(format!("{}\0", target.display()));
            self.sum.update(h.as_bytes());
            let kind = h.entry_type();
            if kind.is_hard_link() {
                let link = entry
                    .link_name()
                    .map_err(io_err("read", src))?
                    .and_then(|l| lexical(&l.to_string_lossy()))
                    .ok_or_else(|| {
                        Error::Invalid(format!("ADD {}: a bad hard link", src.display()))
                    })?;
                self.tar
                    .append_link(&mut h, &target, dest.join(link))
                    .map_err(io_err("write", &target))?;
            } else if kind.is_symlink() {
                let link = entry
                    .link_name()
                    .map_err(io_err("read", src))?
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                self.tar
                    .append_link(&mut h, &target, link)
                    .map_err(io_err("write", &target))?;
            } else if kind.is_file() || kind.is_dir() || kind.is_fifo() {
                let mut summing = Summing {
                    inner: &mut entry,
                    sum: &mut self.sum,
                };
                self.tar
                    .append_data(&mut h, &target, &mut summing)
                    .map_err(io_err("write", &target))?;
            }
        }
        Ok(true)
    }

    pub fn checksum(self) -> String {
        hex::encode(self.sum.finalize())
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

struct Summing<'a, R> {
    inner: R,
    sum: &'a mut Sha256,
}

impl<R: Read> Read for Summing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_paths_stay_inside() {
        assert_eq!(lexical("./a/../b"), Some(PathBuf::from("b")));
        assert_eq!(lexical("/etc/x"), Some(PathBuf::from("etc/x")));
        assert_eq!(lexical("../secret"), None);
        assert_eq!(lexical("a/../../b"), None);
    }

    #[test]
    fn globs_match_one_component() {
        assert!(glob("*.txt", "a.txt"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("*.txt", "a.md"));
        assert!(glob("*", ""));
    }
}
