//! Layers a build makes: a tar written once, hashed as it goes (the diff
//! ID), gzip-compressed and hashed again (the blob digest) into a scratch
//! file, then committed to the content store through a verifying writer,
//! and applied to a snapshot on top of the parent's chain with the same
//! unpacker a pull uses.
//!
//! [`diff_upper`] turns a container's overlay upper directory into a layer
//! tar: an overlay whiteout (a 0/0 character device) becomes a `.wh.NAME`
//! entry and an opaque directory (`trusted.overlay.opaque=y`) a
//! `.wh..wh..opq` entry inside it, as the OCI image spec writes deletions.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

use crate::content::{self, Digest, Store};
use crate::images::{self, Descriptor};
use crate::snapshots::{self, Snapshotter};
use crate::unpack;

/// Errors of making, storing and applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the layer: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Content(#[from] content::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshots::Error),
    #[error("cannot apply the layer {digest}: {source}")]
    Unpack {
        digest: String,
        source: unpack::Error,
    },
}

type Result<T> = std::result::Result<T, Error>;

io_context!(io_err, Error);

/// Hashes what passes through on its way to `inner`.
pub struct HashWriter<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub written: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W>(inner: W) -> HashWriter<W> {
    HashWriter {
        inner,
        hasher: Sha256::new(),
        written: 0,
    }
}

type Sink = HashWriter<GzEncoder<HashWriter<BufWriter<File>>>>;

/// A layer being written: a tar builder over (diff ID hash → gzip → blob
/// hash → scratch file).
pub struct LayerWriter {
    pub tar: tar::Builder<Sink>,
    path: PathBuf,
}

/// A finished layer in its scratch file.
pub struct Layer {
    pub path: PathBuf,
    pub diff_id: String,
    pub digest: Digest,
    pub size: u64,
}

impl Drop for Layer {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl LayerWriter {
    pub fn create(path: PathBuf) -> Result<LayerWriter> {
        let file = File::create(&path).map_err(io_err("create", &path))?;
        let gz = GzEncoder::new(
            hashing(BufWriter::with_capacity(1 << 17, file)),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(hashing(gz));
        tar.mode(tar::HeaderMode::Complete);
        tar.follow_symlinks(false);
        Ok(LayerWriter { tar, path })
    }

    pub fn finish(self) -> Result<Layer> {
        let path = self.path;
        let inner = self.tar.into_inner().map_err(io_err("finish", &path))?;
        let diff_id = Digest::from_hasher(inner.hasher).to_string();
        let mut blob = inner.inner.finish().map_err(io_err("compress", &path))?;
        blob.flush().map_err(io_err("write", &path))?;
        blob.inner
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(io_err("write", &path))?;
        Ok(Layer {
            digest: Digest::from_hasher(blob.hasher),
            size: blob.written,
            diff_id,
            path,
        })
    }
}

pub const MEDIA_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

impl Layer {
    /// Commits the blob to the content store, verified against its digest.
    pub fn store(&self, content: &Store) -> Result<Descriptor> {
        if !content.exists(&self.digest) {
            let mut writer =
                content.writer(&content::unique_ref(&self.digest), &self.digest, self.size)?;
            writer.truncate()?;
            let mut file = File::open(&self.path).map_err(io_err("open", &self.path))?;
            io::copy(&mut file, &mut writer).map_err(io_err("read", &self.path))?;
            writer.commit()?;
        }
        Ok(images::descriptor(MEDIA_TYPE, &self.digest, self.size))
    }
}

/// Label a pull puts on its staging snapshots: start-up recovery removes
/// the ones a crash left, ours included.
const STAGING_LABEL: &str = "berth.pull/staging";

/// Applies the stored layer `blob` on top of `parent` and commits it as
/// `chain`. Nothing is left behind on failure; a chain that exists already
/// (the same layer on the same parent) is kept as it is.
pub fn apply(
    content: &Store,
    snapshots: &Snapshotter,
    blob: &Digest,
    parent: Option<&str>,
    chain: &str,
) -> Result<()> {
    if snapshots.exists(chain)? {
        return Ok(());
    }
    let key = format!("build-{}", crate::volumes::random_hex(8));
    let labels = BTreeMap::from([(STAGING_LABEL.to_string(), chain.to_string())]);
    snapshots.prepare(&key, parent, labels)?;
    let result = (|| {
        let upper = snapshots.upper_dir(&key)?;
        let file = content.open_blob(blob)?;
        let fail = |source| Error::Unpack {
            digest: blob.to_string(),
            source,
        };
        let tar = unpack::decompress(io::BufReader::with_capacity(1 << 17, file))
            .map_err(|e| fail(unpack::Error::Read(e)))?;
        unpack::apply(&upper, tar).map_err(fail)?;
        match snapshots.commit_onto(chain, &key, parent, images::layer_labels()) {
            Err(snapshots::Error::AlreadyExists(_)) => {
                Err(snapshots::Error::AlreadyExists(chain.to_string()).into())
            }
            other => other.map_err(Error::from),
        }
    })();
    if result.is_err() {
        let _ = snapshots.remove(&key);
    }
    match result {
        Err(Error::Snapshot(snapshots::Error::AlreadyExists(_))) => Ok(()),
        other => other,
    }
}

/// Paths the runtime creates as mount points for the files it binds in
/// (`/etc/hosts` …): empty files in the upper directory that are no part
/// of what a `RUN` made.
pub(crate) const MOUNT_POINTS: &[&str] = &["etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// Directories the runtime makes to mount the kernel's filesystems on
/// when the image has none: empty, they are no part of the layer either.
pub(crate) const MOUNT_DIRS: &[&str] = &["dev", "proc", "sys"];

/// Writes the overlay upper directory `upper` into `tar` as a layer.
pub fn diff_upper(upper: &Path, tar: &mut tar::Builder<Sink>) -> Result<()> {
    let mut links = HashMap::new();
    walk(upper, Path::new(""), tar, &mut links)
}

fn walk(
    root: &Path,
    rel: &Path,
    tar: &mut tar::Builder<Sink>,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(io_err("read", &dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(io_err("read", &dir))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let entry = rel.join(&name);
        let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            let mut wh = b".wh.".to_vec();
            wh.extend_from_slice(name.as_bytes());
            let whiteout = rel.join(std::ffi::OsStr::from_bytes(&wh));
            let mut h = header(&meta, tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            tar.append_data(&mut h, &whiteout, io::empty())
                .map_err(io_err("write", &path))?;
            continue;
        }
        let rel_str = entry.to_string_lossy();
        if ft.is_file() && meta.len() == 0 && MOUNT_POINTS.contains(&rel_str.as_ref()) {
            continue;
        }
        if ft.is_dir()
            && rel.as_os_str().is_empty()
            && MOUNT_DIRS.contains(&rel_str.as_ref())
            && fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none())
        {
            continue;
        }
        if ft.is_dir() {
            let mut h = header(&meta, tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, &entry, io::empty())
                .map_err(io_err("write", &path))?;
            if is_opaque(&path) {
                let mut h = header(&meta, tar::EntryType::Regular);
                h.set_size(0);
                h.set_mode(0o644);
                tar.append_data(&mut h, entry.join(".wh..wh..opq"), io::empty())
                    .map_err(io_err("write", &path))?;
            }
            walk(root, &entry, tar, links)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err("readlink", &path))?;
            let mut h = header(&meta, tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, &entry, &target)
                .map_err(io_err("write", &path))?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    let mut h = header(&meta, tar::EntryType::Link);
                    h.set_size(0);
                    tar.append_link(&mut h, &entry, first)
                        .map_err(io_err("write", &path))?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), entry.clone());
            }
            let mut h = header(&meta, tar::EntryType::Regular);
            h.set_size(meta.len());
            let file = File::open(&path).map_err(io_err("open", &path))?;
            tar.append_data(&mut h, &entry, file)
                .map_err(io_err("write", &path))?;
        } else {
            // Sockets have no place in an image.
            let Some(kind) = special_entry_type(&ft) else {
                continue;
            };
            let mut h = header(&meta, kind);
            h.set_size(0);
            let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
            h.set_device_major(major).map_err(io_err("write", &path))?;
            h.set_device_minor(minor).map_err(io_err("write", &path))?;
            tar.append_data(&mut h, &entry, io::empty())
                .map_err(io_err("write", &path))?;
        }
    }
    Ok(())
}

/// The tar entry of a fifo or a device node; `None` for anything else (a
/// socket has no place in an image).
pub(super) fn special_entry_type(ft: &fs::FileType) -> Option<tar::EntryType> {
    if ft.is_fifo() {
        Some(tar::EntryType::Fifo)
    } else if ft.is_char_device() {
        Some(tar::EntryType::Char)
    } else if ft.is_block_device() {
        Some(tar::EntryType::Block)
    } else {
        None
    }
}

fn header(meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(meta.mtime().max(0) as u64);
    h
}

/// Whether overlayfs marked the directory opaque (its lower contents
/// hidden): the directory was removed and made again.
fn is_opaque(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let name = c"trusted.overlay.opaque";
    let mut value = [0u8; 4];
    // SAFETY: valid C strings and a buffer of the length given.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}
