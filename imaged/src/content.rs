//! The content store: blobs by digest, written only after verification.
//!
//! Layout under the store's root (containerd's `content/local` design):
//!
//! ```text
//! blobs/sha256/<hex>        verified, immutable blobs
//! ingest/<sha256(ref)>/     one directory per blob being written
//!     data                  the bytes received so far
//!     ref                   the ingest's reference (for listing)
//!     total                 the size the descriptor promised
//! ```
//!
//! A [`Writer`] hashes while it writes `ingest/…/data`; [`Writer::commit`]
//! checks size and digest, fsyncs, and renames the file into `blobs/`, so a
//! blob that fails verification never appears there and a crash leaves
//! either nothing or a complete blob. An ingest interrupted by a crash or a
//! dropped connection is resumed: [`Store::writer`] rehashes what `data`
//! already holds and continues at its end.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

/// Errors of the content store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid digest {0:?} (only sha256:<64 hex> is supported)")]
    InvalidDigest(String),
    #[error("blob {0} not found in the content store")]
    NotFound(String),
    #[error("ingest {0:?} is being written by another writer")]
    Busy(String),
    #[error("blob {digest} failed verification: expected {expected_size} bytes, got {size} bytes with digest {actual}; nothing was committed")]
    Mismatch {
        digest: String,
        expected_size: u64,
        size: u64,
        actual: String,
    },
    #[error("content store: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, Error>;

io_context!(io_err, Error);

/// A validated `sha256:<hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`; anything else is refused, so a
    /// digest from a registry can be used as a file name safely.
    pub fn parse(s: &str) -> Result<Digest> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::InvalidDigest(s.to_string()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::InvalidDigest(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same digest as the image-spec types carry it.
    pub fn oci(&self) -> berth_oci::image::Digest {
        // `parse` and `of` admit only sha256 and 64 lowercase hex digits,
        // a subset of what the image spec accepts.
        berth_oci::image::Digest::try_from(self.0.as_str())
            .expect("a sha256:<64 hex> digest is an OCI digest")
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`Store::info`] knows about a blob.
#[derive(Debug, Clone)]
pub struct Info {
    pub digest: Digest,
    pub size: u64,
    pub created: std::time::SystemTime,
}

/// An ingest in progress.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub reference: String,
    pub offset: u64,
    pub total: u64,
}

/// The content store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Ingest references with a live [`Writer`]: one writer per ingest.
    active: Arc<Mutex<HashSet<String>>>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for sub in ["blobs/sha256", "ingest"] {
            let dir = root.join(sub);
            crate::private::create_dir(&dir).map_err(io_err("create", &dir))?;
        }
        Ok(Store {
            root,
            active: Arc::default(),
        })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn ingest_dir(&self, reference: &str) -> PathBuf {
        // References carry ':' and '/', which must not become path parts.
        self.root
            .join("ingest")
            .join(hex::encode(Sha256::digest(reference.as_bytes())))
    }

    pub fn exists(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn info(&self, digest: &Digest) -> Result<Info> {
        let path = self.blob_path(digest);
        let meta = fs::metadata(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(digest.to_string()),
            _ => Error::Io {
                op: "stat",
                path: path.clone(),
                source: e,
            },
        })?;
        Ok(Info {
            digest: digest.clone(),
            size: meta.len(),
            created: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        })
    }

    /// Every committed blob.
    pub fn list(&self) -> Result<Vec<Info>> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let entry = entry.map_err(io_err("read", &dir))?;
            let name = entry.file_name();
            if let Ok(digest) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) {
                out.push(self.info(&digest)?);
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(digest.to_string()),
            _ => Error::Io {
                op: "open",
                path,
                source: e,
            },
        })
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let path = self.blob_path(digest);
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        Ok(bytes)
    }

    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        fs::remove_file(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(digest.to_string()),
            _ => Error::Io {
                op: "remove",
                path,
                source: e,
            },
        })
    }

    /// Ingests in progress, with how far each got.
    pub fn ingests(&self) -> Result<Vec<Ingest>> {
        let dir = self.root.join("ingest");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let path = entry.map_err(io_err("read", &dir))?.path();
            let reference = fs::read_to_string(path.join("ref")).unwrap_or_default();
            let total = fs::read_to_string(path.join("total"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            let offset = fs::metadata(path.join("data"))
                .map(|m| m.len())
                .unwrap_or(0);
            out.push(Ingest {
                reference,
                offset,
                total,
            });
        }
        Ok(out)
    }

    /// Removes ingests no one can resume (those under a [`unique_ref`], left
    /// by a crash or a failed pull) that no writer holds; resumable ones stay
    /// for the next pull.
    pub fn cleanup(&self) -> Result<()> {
        let dir = self.root.join("ingest");
        for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))?.flatten() {
            let reference = fs::read_to_string(entry.path().join("ref")).unwrap_or_default();
            let held = self
                .active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&reference);
            if !held && (reference.is_empty() || reference.starts_with("once-")) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// Stores a small blob held in memory (manifests, configs), verified
    /// like any other, under an ingest of its own (nothing to resume).
    pub fn write_bytes(&self, expected: &Digest, bytes: &[u8]) -> Result<()> {
        if self.exists(expected) {
            return Ok(());
        }
        let mut writer = self.writer(&unique_ref(expected), expected, bytes.len() as u64)?;
        writer.truncate()?;
        writer
            .write_all(bytes)
            .map_err(io_err("write", &writer.data))?;
        writer.commit()
    }

    /// A writer for the blob `expected` of `total` bytes, under the ingest
    /// reference `reference`. If an earlier ingest of the same reference was
    /// interrupted, the writer resumes at [`Writer::offset`].
    pub fn writer(&self, reference: &str, expected: &Digest, total: u64) -> Result<Writer> {
        let claim = Claim::new(&self.active, reference)?;
        let dir = self.ingest_dir(reference);
        crate::private::create_dir(&dir).map_err(io_err("create", &dir))?;
        let data = dir.join("data");
        crate::private::write_file(&dir.join("ref"), reference.as_bytes())
            .map_err(io_err("write", &dir))?;
        crate::private::write_file(&dir.join("total"), total.to_string().as_bytes())
            .map_err(io_err("write", &dir))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::private::FILE_MODE)
            .open(&data)
            .map_err(io_err("open", &data))?;
        let mut writer = Writer {
            file: None,
            hasher: Sha256::new(),
            offset: 0,
            total,
            expected: expected.clone(),
            dir,
            data: data.clone(),
            blob: self.blob_path(expected),
            _claim: claim,
        };
        // Resume: what is already there is hashed again (sha256 state cannot
        // be saved portably), which costs a read, not a download.
        let have = file.metadata().map_err(io_err("stat", &data))?.len();
        if have > total {
            file.set_len(0).map_err(io_err("truncate", &data))?;
        } else if have > 0 {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file.read(&mut buf).map_err(io_err("read", &data))?;
                if n == 0 {
                    break;
                }
                writer.hasher.update(&buf[..n]);
                writer.offset += n as u64;
            }
            // Whole but wrong: resuming cannot make it right.
            if writer.offset == total && Digest::from_hasher(writer.hasher.clone()) != *expected {
                file.set_len(0).map_err(io_err("truncate", &data))?;
                use std::io::Seek;
                file.seek(io::SeekFrom::Start(0))
                    .map_err(io_err("seek", &data))?;
                writer.hasher = Sha256::new();
                writer.offset = 0;
            }
        }
        writer.file = Some(file);
        Ok(writer)
    }
}

/// Writes one blob into `ingest/`, hashing as it goes.
#[derive(Debug)]
pub struct Writer {
    file: Option<File>,
    hasher: Sha256,
    offset: u64,
    total: u64,
    expected: Digest,
    dir: PathBuf,
    data: PathBuf,
    blob: PathBuf,
    _claim: Claim,
}

/// A reference for an ingest no other writer shares (nothing to resume).
pub fn unique_ref(digest: &Digest) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("once-{n}-{digest}")
}

/// An ingest reference held by one writer; released when dropped.
#[derive(Debug)]
struct Claim {
    active: Arc<Mutex<HashSet<String>>>,
    reference: String,
}

impl Claim {
    fn new(active: &Arc<Mutex<HashSet<String>>>, reference: &str) -> Result<Claim> {
        let mut set = active.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(reference.to_string()) {
            return Err(Error::Busy(reference.to_string()));
        }
        Ok(Claim {
            active: active.clone(),
            reference: reference.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self.active.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.reference);
    }
}

impl Writer {
    /// Bytes already written (non-zero when an ingest is resumed).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The partial data, for a caller that must replay what a resumed
    /// ingest already had (the unpacker reads it before the network's rest).
    pub fn data_path(&self) -> &Path {
        &self.data
    }

    /// Starts over (the server ignored a range request).
    pub fn truncate(&mut self) -> Result<()> {
        if let Some(file) = &mut self.file {
            file.set_len(0).map_err(io_err("truncate", &self.data))?;
            use std::io::Seek;
            file.seek(io::SeekFrom::Start(0))
                .map_err(io_err("seek", &self.data))?;
        }
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    /// Verifies size and digest, makes the data durable and moves it into
    /// `blobs/`. On a mismatch the ingest is discarded: its bytes cannot
    /// become right by resuming.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take();
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if self.offset != self.total || actual != self.expected {
            drop(file);
            let _ = fs::remove_dir_all(&self.dir);
            return Err(Error::Mismatch {
                digest: self.expected.to_string(),
                expected_size: self.total,
                size: self.offset,
                actual: actual.to_string(),
            });
        }
        if let Some(file) = file {
            file.sync_all().map_err(io_err("fsync", &self.data))?;
        }
        fs::rename(&self.data, &self.blob).map_err(io_err("rename", &self.blob))?;
        // The rename is durable only once the directory is synced.
        if let Some(parent) = self.blob.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync", parent))?;
        }
        let _ = fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-content-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn commit_verifies_and_resume_continues() {
        let dir = temp("resume");
        let store = Store::open(&dir).unwrap();
        let blob = b"hello, content store".repeat(1000);
        let digest = Digest::of(&blob);
        {
            let mut w = store.writer("r1", &digest, blob.len() as u64).unwrap();
            w.write_all(&blob[..5000]).unwrap();
            // Dropped without commit: an interrupted pull.
        }
        assert!(!store.exists(&digest));
        let mut w = store.writer("r1", &digest, blob.len() as u64).unwrap();
        assert_eq!(w.offset(), 5000);
        w.write_all(&blob[5000..]).unwrap();
        w.commit().unwrap();
        assert_eq!(store.read_blob(&digest).unwrap(), blob);
        assert!(store.ingests().unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_whole_but_wrong_ingest_starts_over() {
        let dir = temp("whole-wrong");
        let store = Store::open(&dir).unwrap();
        let digest = Digest::of(b"the right bytes");
        {
            let mut w = store.writer("r", &digest, 15).unwrap();
            w.write_all(b"the wrong bytes").unwrap();
            // Dropped: a pull that stopped before its commit.
        }
        let w = store.writer("r", &digest, 15).unwrap();
        assert_eq!(w.offset(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wrong_digest_is_never_committed() {
        let dir = temp("wrong");
        let store = Store::open(&dir).unwrap();
        let digest = Digest::of(b"the right bytes");
        let mut w = store.writer("r", &digest, 15).unwrap();
        w.write_all(b"the wrong bytes").unwrap();
        let err = w.commit().unwrap_err();
        assert!(matches!(err, Error::Mismatch { .. }), "{err}");
        assert!(!store.exists(&digest));
        assert!(store.ingests().unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn digests_are_validated() {
        assert!(Digest::parse("sha256:../../etc").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
