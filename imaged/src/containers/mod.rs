//! Containers: a record in the metadata store, an active snapshot on the
//! image's chain, and a bundle directory (`<root>/bundles/<id>`: the
//! generated `config.json`, `rootfs/` with the snapshot mounted on it, the
//! hosts files, the log and the stdio fifos). Nothing here runs anything;
//! [`crate::tasks`] does, and records what happened in [`RunState`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_proto::v1 as pb;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::bundle::{self, ResolvedMount, RunDefaults};
use crate::content::Digest;
use crate::images::{self, Images};
use crate::metadata::{self, Db, Table};
use crate::networks::{self, Networks};
use crate::snapshots;
use crate::volumes::{self, random_hex, valid_name, Volumes};

mod create;
mod removal;
pub use removal::Leftovers;
mod rootfs;

pub use create::write_private;
pub(crate) use create::{command, stop_signal};
pub(crate) use rootfs::{mount_rootfs, unmount};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("{0:?} matches more than one container: give more of the id")]
    Ambiguous(String),
    #[error(
        "the name {name:?} is already in use by container {id}: remove it or choose another name"
    )]
    NameInUse { name: String, id: String },
    #[error("invalid container name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("image {0} not found: pull it first (berthctl pull {0})")]
    ImageNotFound(String),
    #[error("image {image}: unreadable config: {detail}")]
    ImageConfig { image: String, detail: String },
    #[error("bind mount source {0} does not exist on the host")]
    BindSource(PathBuf),
    #[error("invalid mount: {0}")]
    InvalidMount(String),
    #[error("cannot mount the rootfs of {id} on {target}: {detail}")]
    Mount {
        id: String,
        target: PathBuf,
        detail: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bundle(#[from] bundle::Error),
    #[error(transparent)]
    Volume(#[from] volumes::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshots::Error),
    #[error(transparent)]
    Images(#[from] images::Error),
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    #[error(transparent)]
    Network(#[from] networks::Error),
    #[error("invalid port mapping: {0}")]
    InvalidPort(String),
    #[error("cannot share the network of container {0}: it is not running")]
    NetworkOwnerNotRunning(String),
}

type Result<T> = std::result::Result<T, Error>;

io_context!(io, Error);

/// What the daemon knows of a container's last (or current) run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// `pb::container::Status` as a number.
    pub status: i32,
    pub pid: u32,
    pub exit_status: u32,
    pub started_at: u64,
    pub finished_at: u64,
    pub restart_count: u32,
    pub oom_killed: bool,
    /// Stopped by Stop/Kill from a client: restart policies leave it alone.
    pub stopped_by_user: bool,
}

/// The part of a [`ContainerRecord`] a lookup by name reads.
#[derive(Deserialize)]
struct Named {
    id: String,
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// `pb::ContainerConfig`, protobuf-encoded.
    pub config: Vec<u8>,
    pub image_digest: String,
    pub snapshot_key: String,
    pub bundle: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub created: u64,
    pub state: RunState,
    /// Named volumes it mounts.
    pub volumes: Vec<String>,
    /// The stop signal of the image (`SIGTERM` when it names none).
    #[serde(default)]
    pub stop_signal: String,
    /// The process's arguments as the spec has them: a listing shows them
    /// without reading every bundle's config.json.
    #[serde(default)]
    pub command: Vec<String>,
}

impl ContainerRecord {
    pub fn settings(&self) -> pb::ContainerConfig {
        pb::ContainerConfig::decode(self.config.as_slice()).unwrap_or_default()
    }

    pub fn status(&self) -> pb::container::Status {
        pb::container::Status::try_from(self.state.status).unwrap_or(pb::container::Status::Created)
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }
}

/// The container service.
#[derive(Debug, Clone)]
pub struct Containers {
    pub db: Arc<Db>,
    pub images: Arc<Images>,
    pub volumes: Volumes,
    pub bundles: PathBuf,
    /// The bundles of containers removed at their exit (`run --rm`,
    /// `run -d --rm`), in the daemon's state directory: a tmpfs where /run
    /// is one, as containerd keeps its bundles. Each such run makes and
    /// removes a dozen files, which a disk filesystem would allocate and
    /// free (ext4 without a journal even scans past every inode freed in
    /// the last minutes on each allocation); none of them outlives the
    /// machine anyway (the start-up removes such a container whose task is
    /// gone).
    pub ending_bundles: PathBuf,
    /// The engines' default seccomp profile, read at start-up.
    pub default_seccomp: Option<Arc<serde_json::Value>>,
    pub networks: Arc<Networks>,
}

/// The directory of the bundles of containers removed at their exit
/// (`STATE/bundles`, root's alone), its state directory claimed for the
/// daemon whose root is `root`. A daemon's start removes the bundles there
/// that its records do not name, and ends their shims
/// ([`Containers::reconcile`], `Tasks::recover`): a second daemon (another
/// root) given the same state directory, as the default one is, would end
/// the first one's running containers. So the state directory names the
/// root it serves (`STATE/root`, made whole at once by the first daemon
/// that uses it), and any other root is refused.
pub fn claim_ending_bundles(state: &Path, root: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let bundles = state.join("bundles");
    crate::private::create_dir(&bundles)?;
    let root = std::fs::canonicalize(root)?;
    let mut claim = root.as_os_str().as_bytes().to_vec();
    claim.push(b'\n');
    let owner = state.join("root");
    // Written aside, then linked: a daemon starting at the same time reads
    // either no claim or a whole one.
    let draft = state.join(format!(".root-{}", std::process::id()));
    crate::private::write_file(&draft, &claim)?;
    let linked = std::fs::hard_link(&draft, &owner);
    let _ = std::fs::remove_file(&draft);
    match linked {
        Ok(()) => return Ok(bundles),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let claimed = std::fs::read(&owner)?;
    if claimed == claim {
        return Ok(bundles);
    }
    Err(std::io::Error::other(format!(
        "the state directory {} serves the daemon whose root is {}: give this \
         one (root {}) a state directory of its own (--state), or remove {} if \
         that daemon and its containers are gone for good",
        state.display(),
        String::from_utf8_lossy(&claimed).trim_end(),
        root.display(),
        owner.display()
    )))
}

impl Containers {
    /// Finds a container by id, name or unique id prefix.
    pub fn resolve(&self, key: &str) -> Result<ContainerRecord> {
        if let Some(record) = self.db.get::<ContainerRecord>(Table::Containers, key)? {
            return Ok(record);
        }
        // A name, else a unique prefix of an id: each read from an index
        // (the names table, the ids' key order), never from every record.
        let found = match self.db.get::<String>(Table::ContainerNames, key)? {
            Some(id) => id,
            None if key.is_empty() => return Err(Error::NotFound(key.to_string())),
            None => {
                let mut prefixed = self
                    .db
                    .keys_with_prefix(Table::Containers, key, 2)?
                    .into_iter();
                match (prefixed.next(), prefixed.next()) {
                    (Some(one), None) => one,
                    (Some(_), Some(_)) => return Err(Error::Ambiguous(key.to_string())),
                    _ => return Err(Error::NotFound(key.to_string())),
                }
            }
        };
        self.db
            .get::<ContainerRecord>(Table::Containers, &found)?
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    /// Where container `id`'s bundle is (or would be): with the containers
    /// removed at their exit when it is there, else with the others.
    pub fn bundle_of(&self, id: &str) -> PathBuf {
        let ending = self.ending_bundles.join(id);
        if ending.exists() {
            ending
        } else {
            self.bundles.join(id)
        }
    }

    /// Whether a container with this exact id has a record: a read error
    /// counts as one (nothing is taken for removed that may not be).
    pub fn exists(&self, id: &str) -> bool {
        !matches!(
            self.db.get::<ContainerRecord>(Table::Containers, id),
            Ok(None)
        )
    }

    pub fn list(&self) -> Result<Vec<ContainerRecord>> {
        let mut all: Vec<ContainerRecord> = self
            .db
            .list::<ContainerRecord>(Table::Containers)?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        all.sort_by_key(|c| std::cmp::Reverse(c.created));
        Ok(all)
    }

    /// Changes a stored record in one transaction; returns the new record.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord> {
        self.db.write(|txn| change_record(txn, id, change))
    }

    /// As [`Containers::update`], for a container's run state: unsynced for
    /// one its client removes at its exit (`transient`, `run --rm`), which
    /// outlives no crash of the daemon (the start-up ends and removes it,
    /// see `Tasks::recover`), so that `run --rm` waits for no sync.
    pub fn update_run_state(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord> {
        let synced = !self.resolve(id)?.settings().transient;
        self.db
            .write_synced_if(synced, |txn| change_record(txn, id, change))
    }

    /// Gives the container `key` the name `name` (docker rename): checked
    /// and changed in one transaction, so two renames cannot take one name.
    pub fn rename(&self, key: &str, name: &str) -> Result<ContainerRecord> {
        let id = self.resolve(key)?.id;
        let name = name.trim_start_matches('/').to_string();
        if !valid_name(&name) {
            return Err(Error::InvalidName(name));
        }
        self.db.write(|txn| {
            name_free(txn, &name)?;
            let mut record: ContainerRecord = txn
                .get(Table::Containers, &id)?
                .ok_or_else(|| Error::NotFound(id.clone()))?;
            txn.delete(Table::ContainerNames, &record.name)?;
            record.name = name.clone();
            insert(txn, &record)?;
            Ok(record)
        })
    }

    /// `--volumes-from NAME[:ro|:rw]`: the volumes (named or anonymous) and
    /// binds of the container NAME, at its destinations; `ro` makes them
    /// all read-only, `rw` all writable, neither keeps each one's mode.
    /// tmpfs mounts are the container's own and are not shared.
    fn shared_mounts(&self, spec: &str) -> Result<Vec<pb::ContainerMount>> {
        use pb::container_mount::Kind;
        let (name, mode) = match spec.rsplit_once(':') {
            Some((n, m @ ("ro" | "rw"))) => (n, Some(m)),
            _ => (spec, None),
        };
        let other = self.resolve(name)?;
        // `volumes` names every volume mount, in the order of `mounts`.
        let mut volumes = other.volumes.iter();
        let mut out = Vec::new();
        for m in other.settings().mounts {
            let kind = Kind::try_from(m.kind).unwrap_or(Kind::Bind);
            let source = match kind {
                Kind::Volume => match volumes.next() {
                    Some(v) => v.clone(),
                    None => continue,
                },
                Kind::Bind | Kind::Unspecified => m.source.clone(),
                Kind::Tmpfs => continue,
            };
            out.push(pb::ContainerMount {
                kind: if kind == Kind::Volume {
                    kind
                } else {
                    Kind::Bind
                } as i32,
                source,
                destination: m.destination.clone(),
                read_only: mode.map_or(m.read_only, |mode| mode == "ro"),
            });
        }
        Ok(out)
    }

    /// Containers that mount the volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|c| c.volumes.iter().any(|v| v == name))
            .map(|c| c.id)
            .collect())
    }
}

/// Refuses a name another container has, inside the transaction that
/// takes it.
fn name_free(txn: &crate::metadata::Txn<'_>, name: &str) -> Result<()> {
    match txn.get::<String>(Table::ContainerNames, name)? {
        Some(id) => Err(Error::NameInUse {
            name: name.to_string(),
            id,
        }),
        None => Ok(()),
    }
}

/// Builds the names index again from the records, in one transaction: at
/// the daemon's start, so that a store written before the index existed
/// reads the same. (Records and their entries are written in the same
/// transactions, so a killed daemon cannot leave them apart.) The ids of
/// the containers it indexed.
pub fn index_names(db: &crate::metadata::Db) -> Result<std::collections::HashSet<String>> {
    let all = db.list::<Named>(Table::Containers)?;
    db.write(|txn| {
        txn.clear(Table::ContainerNames)?;
        for (_, named) in &all {
            txn.put(Table::ContainerNames, &named.name, &named.id)?;
        }
        Ok::<_, Error>(())
    })?;
    Ok(all.into_iter().map(|(id, _)| id).collect())
}

/// Stores `record` and its name's index entry, in the caller's transaction.
pub(crate) fn insert(txn: &mut crate::metadata::Txn<'_>, record: &ContainerRecord) -> Result<()> {
    txn.put(Table::Containers, &record.id, record)?;
    txn.put(Table::ContainerNames, &record.name, &record.id)?;
    Ok(())
}

fn change_record(
    txn: &mut crate::metadata::Txn<'_>,
    id: &str,
    change: impl FnOnce(&mut ContainerRecord),
) -> Result<ContainerRecord> {
    let mut record: ContainerRecord = txn
        .get(Table::Containers, id)?
        .ok_or_else(|| Error::NotFound(id.to_string()))?;
    change(&mut record);
    txn.put(Table::Containers, id, &record)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.to_string(),
            name: name.to_string(),
            config: pb::ContainerConfig::default().encode_to_vec(),
            image_digest: String::new(),
            snapshot_key: format!("container/{id}"),
            bundle: PathBuf::from("/nonexistent"),
            labels: BTreeMap::new(),
            created: 0,
            state: RunState::default(),
            volumes: Vec::new(),
            stop_signal: String::new(),
            command: Vec::new(),
        }
    }

    #[test]
    fn a_store_written_before_the_names_index_finds_its_names_after_a_start() {
        let dir = std::env::temp_dir().join(format!("berth-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = crate::metadata::Db::open(&dir.join("meta.redb")).unwrap();
        // As an older daemon wrote them: records, and no index.
        db.write(|txn| {
            txn.put(Table::Containers, "aa11", &record("aa11", "web"))?;
            txn.put(Table::Containers, "aa22", &record("aa22", "db"))?;
            txn.put(Table::Containers, "bb33", &record("bb33", "cache"))?;
            // A stale entry the rebuild must drop.
            txn.put(Table::ContainerNames, "gone", &"cc44".to_string())
        })
        .unwrap();
        index_names(&db).unwrap();
        let id_of = |name: &str| db.get::<String>(Table::ContainerNames, name).unwrap();
        assert_eq!(id_of("web").as_deref(), Some("aa11"));
        assert_eq!(id_of("cache").as_deref(), Some("bb33"));
        assert_eq!(id_of("gone"), None);
        db.write(|txn| {
            assert!(
                matches!(name_free(txn, "db"), Err(Error::NameInUse { id, .. }) if id == "aa22")
            );
            assert!(name_free(txn, "fresh").is_ok());
            insert(txn, &record("dd55", "fresh"))?;
            Ok::<_, Error>(())
        })
        .unwrap();
        assert_eq!(id_of("fresh").as_deref(), Some("dd55"));
        // Prefixes come from the ids' key order alone.
        let keys = |p: &str| db.keys_with_prefix(Table::Containers, p, 2).unwrap();
        assert_eq!(keys("aa"), ["aa11", "aa22"]);
        assert_eq!(keys("b"), ["bb33"]);
        assert!(keys("e").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_directory_is_claimed_by_the_first_root_and_kept_by_it_alone() {
        let dir = std::env::temp_dir().join(format!("berth-state-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (state, first, second) = (dir.join("state"), dir.join("one"), dir.join("two"));
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        let bundles = claim_ending_bundles(&state, &first).unwrap();
        assert_eq!(bundles, state.join("bundles"));
        assert!(bundles.is_dir());
        // The same root again (a restart; a path naming it another way).
        claim_ending_bundles(&state, &dir.join("two/../one")).unwrap();
        let refused = claim_ending_bundles(&state, &second)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains(&first.display().to_string()) && refused.contains("--state"),
            "{refused}"
        );
        // Nothing left of the attempts beside the claim.
        let names: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
