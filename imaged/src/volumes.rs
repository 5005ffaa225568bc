//! Named volumes: `<root>/volumes/<name>/_data`, with a record in the
//! metadata store. A volume is seeded from the image's files at its mount
//! point the first time a container mounts it, as docker does, and cannot
//! be removed while a container uses it.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_oci::safe_path::at;
use serde::{Deserialize, Serialize};

use crate::metadata::{self, Db, Table};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("volume {0} already exists")]
    Exists(String),
    #[error("invalid volume name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("volume {name} is in use by container {container}: remove the container first")]
    InUse { name: String, container: String },
    #[error("volume {0} is being mounted by a container that is being created: try again")]
    Claimed(String),
    #[error("volume {name}: {op} {path}: {source}")]
    Io {
        name: String,
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
}

type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created: u64,
    /// Filled from the image on first use.
    #[serde(default)]
    pub seeded: bool,
}

#[derive(Debug, Clone)]
pub struct Volumes {
    root: PathBuf,
    db: Arc<Db>,
    /// Volumes that creates in progress mount (not yet containers' users):
    /// the count of claims by name. A remove holds this lock throughout.
    claims: Arc<Mutex<HashMap<String, usize>>>,
}

/// A volume held by a container being created, from before the volume is
/// looked up until the container's record names it: it cannot be removed
/// meanwhile (it would vanish under the seeding or the new container).
#[derive(Debug)]
pub struct Claim {
    claims: Arc<Mutex<HashMap<String, usize>>>,
    name: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claims = lock(&self.claims);
        if let Some(count) = claims.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                claims.remove(&self.name);
            }
        }
    }
}

fn lock(
    claims: &Mutex<HashMap<String, usize>>,
) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    claims
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The label an anonymous volume carries: the id of its container.
pub const ANONYMOUS_LABEL: &str = "berth.anonymous-of";

/// Docker's rule for names of containers and volumes.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128
}

/// 32 random bytes as hex (container ids, random names).
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    hex::encode(buf)
}

impl Volumes {
    pub fn open(root: impl Into<PathBuf>, db: Arc<Db>) -> Result<Volumes> {
        let root = root.into();
        crate::private::create_dir(&root).map_err(|source| Error::Io {
            name: String::new(),
            op: "create",
            path: root.clone(),
            source,
        })?;
        Ok(Volumes {
            root,
            db,
            claims: Arc::default(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    pub fn create(&self, name: &str, labels: BTreeMap<String, String>) -> Result<VolumeRecord> {
        let name = if name.is_empty() {
            random_hex(16)
        } else {
            name.to_string()
        };
        if !valid_name(&name) {
            return Err(Error::InvalidName(name));
        }
        let record = VolumeRecord {
            name: name.clone(),
            labels,
            created: crate::clock::now_secs(),
            seeded: false,
        };
        let path = self.path(&name);
        self.db.write(|txn| {
            if txn.get::<VolumeRecord>(Table::Volumes, &name)?.is_some() {
                return Err(Error::Exists(name.clone()));
            }
            // The volume's own directory is root's; `_data` is the
            // container's and keeps an ordinary directory's mode.
            let own = path.parent().unwrap_or(&path);
            crate::private::create_dir(own)
                .and_then(|()| std::fs::create_dir_all(&path))
                .map_err(|source| Error::Io {
                    name: name.clone(),
                    op: "create",
                    path: path.clone(),
                    source,
                })?;
            txn.put(Table::Volumes, &name, &record)?;
            Ok(())
        })?;
        Ok(record)
    }

    pub fn get(&self, name: &str) -> Result<VolumeRecord> {
        self.db
            .get(Table::Volumes, name)?
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// A fresh volume with a random name for `-v /DST`, labelled with the
    /// container it belongs to (removed with it by `rm -v` and `--rm`).
    pub fn create_anonymous(&self, container: &str) -> Result<VolumeRecord> {
        let labels = BTreeMap::from([(ANONYMOUS_LABEL.to_string(), container.to_string())]);
        self.create("", labels)
    }

    /// Whether `name` is the anonymous volume of `container`.
    pub fn is_anonymous_of(&self, name: &str, container: &str) -> Result<bool> {
        Ok(self
            .get(name)?
            .labels
            .get(ANONYMOUS_LABEL)
            .is_some_and(|owner| owner == container))
    }

    /// The volume, created if it does not exist (`-v NAME:/dst`).
    pub fn get_or_create(&self, name: &str) -> Result<VolumeRecord> {
        match self.get(name) {
            Err(Error::NotFound(_)) => match self.create(name, BTreeMap::new()) {
                Err(Error::Exists(_)) => self.get(name),
                other => other,
            },
            other => other,
        }
    }

    pub fn list(&self) -> Result<Vec<VolumeRecord>> {
        Ok(self
            .db
            .list::<VolumeRecord>(Table::Volumes)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Claims `name` for a create in progress (waits while a remove runs).
    pub fn claim(&self, name: &str) -> Claim {
        *lock(&self.claims).entry(name.to_string()).or_default() += 1;
        Claim {
            claims: self.claims.clone(),
            name: name.to_string(),
        }
    }

    /// Removes the volume unless `users` (the containers mounting it) is
    /// not empty or a create in progress has claimed it.
    pub fn remove(&self, name: &str, users: &[String]) -> Result<()> {
        if let Some(container) = users.first() {
            return Err(Error::InUse {
                name: name.to_string(),
                container: container.clone(),
            });
        }
        let claims = lock(&self.claims);
        if claims.contains_key(name) {
            return Err(Error::Claimed(name.to_string()));
        }
        let existed = self.db.write(|txn| txn.delete(Table::Volumes, name))?;
        if !existed {
            return Err(Error::NotFound(name.to_string()));
        }
        let dir = self.root.join(name);
        std::fs::remove_dir_all(&dir).map_err(|source| Error::Io {
            name: name.to_string(),
            op: "remove",
            path: dir,
            source,
        })
    }

    /// Seeds an empty, never-seeded volume from `source` (the image's
    /// directory at the mount point, opened inside the container's rootfs).
    pub fn seed(&self, name: &str, source: Option<OwnedFd>) -> Result<()> {
        let mut record = self.get(name)?;
        if record.seeded {
            return Ok(());
        }
        let path = self.path(name);
        let empty = std::fs::read_dir(&path)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if let (true, Some(source)) = (empty, source) {
            let target = std::fs::File::open(&path).map_err(|e| Error::Io {
                name: name.to_string(),
                op: "open",
                path: path.clone(),
                source: e,
            })?;
            // The volume's root takes the owner and mode of the image's
            // directory (an image's USER can write its VOLUME, as in docker).
            if let Ok(st) = nix::sys::stat::fstat(source.as_raw_fd()) {
                let _ = at::fchown(target.as_fd(), st.st_uid, st.st_gid);
                let _ = at::fchmod(target.as_fd(), st.st_mode & 0o7777);
            }
            copy_tree(source.as_fd(), target.as_fd(), 0).map_err(|e| Error::Io {
                name: name.to_string(),
                op: "seed",
                path: path.clone(),
                source: e,
            })?;
        }
        record.seeded = true;
        self.db
            .write(|txn| txn.put(Table::Volumes, name, &record))?;
        Ok(())
    }
}

/// How deep a seeded tree may go (each level holds three descriptors).
const MAX_SEED_DEPTH: usize = 128;

/// Copies the directory open at `from` into the one at `to`: files,
/// directories, symlinks (as links, never followed), modes and owners.
/// Every name is opened relative to its parent with `O_NOFOLLOW`
/// ([`at`]), and owner and mode are set through the new descriptor, so
/// neither a symlink in the image nor a name swapped meanwhile can lead the
/// copy out of the volume.
fn copy_tree(from: BorrowedFd<'_>, to: BorrowedFd<'_>, depth: usize) -> std::io::Result<()> {
    if depth > MAX_SEED_DEPTH {
        return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
    }
    for name in at::list_dir(from)? {
        let name = std::ffi::OsStr::from_bytes(name.to_bytes());
        let Some(st) = at::lstat_at(from, name)? else {
            continue;
        };
        let perm = st.st_mode & 0o7777;
        let set_owner_and_mode = |fd: &OwnedFd| -> std::io::Result<()> {
            at::fchown(fd.as_fd(), st.st_uid, st.st_gid)?;
            at::fchmod(fd.as_fd(), perm)
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                at::mkdir_at(to, name, 0o700)?;
                let src = at::open_at(from, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                let dst = at::open_at(to, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                copy_tree(src.as_fd(), dst.as_fd(), depth + 1)?;
                set_owner_and_mode(&dst)?;
            }
            libc::S_IFREG => {
                let src = at::open_at(from, name, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
                let dst = at::open_at(to, name, flags, 0o600)?;
                std::io::copy(
                    &mut std::fs::File::from(src),
                    &mut std::fs::File::from(dst.try_clone()?),
                )?;
                set_owner_and_mode(&dst)?;
            }
            libc::S_IFLNK => {
                let target = at::readlink_at(from, name)?;
                at::symlink_at(&target, to, name)?;
                at::lchown_at(to, name, st.st_uid, st.st_gid)?;
            }
            // Devices, fifos and sockets are not copied into volumes.
            _ => continue,
        }
    }
    Ok(())
}

/// Opens `destination` inside the rootfs at `rootfs` for seeding (None
/// when the image has nothing there).
pub fn open_seed_source(rootfs: &Path, destination: &str) -> Option<OwnedFd> {
    let root = std::fs::File::open(rootfs).ok()?;
    berth_oci::safe_path::open_in_root(
        root.as_raw_fd(),
        Path::new(destination),
        libc::O_RDONLY | libc::O_DIRECTORY,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_volume_cannot_be_removed_until_the_claim_ends() {
        let dir = std::env::temp_dir().join(format!("berth-volumes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Arc::new(Db::open(&dir.join("meta.db")).unwrap());
        let volumes = Volumes::open(dir.join("volumes"), db).unwrap();
        volumes.create("data", BTreeMap::new()).unwrap();
        let first = volumes.claim("data");
        let second = volumes.claim("data");
        assert!(matches!(
            volumes.remove("data", &[]),
            Err(Error::Claimed(_))
        ));
        drop(first);
        assert!(matches!(
            volumes.remove("data", &[]),
            Err(Error::Claimed(_))
        ));
        drop(second);
        volumes.remove("data", &[]).unwrap();
        assert!(!volumes.path("data").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
