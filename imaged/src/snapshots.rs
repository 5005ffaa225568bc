//! The overlayfs snapshotter: containerd's verbs with its guarantees.
//!
//! A snapshot is a directory `snapshots/<id>/fs` (the overlay upper dir, or
//! the whole tree for a snapshot without parent) and `snapshots/<id>/work`
//! (overlay's workdir), plus a record in the metadata store under its key.
//! Keys are the caller's; image layers are committed under their chain ID,
//! so identical layer stacks are stored once.
//!
//! - [`Snapshotter::prepare`]: a writable (active) snapshot on a committed
//!   parent; [`Snapshotter::view`]: a read-only one.
//! - [`Snapshotter::mounts`]: how to mount it; overlay's `lowerdir` lists the
//!   parents newest first. A long chain whose absolute paths would not fit
//!   in one page of mount data gets paths relative to [`Mount::base`].
//! - [`Snapshotter::commit`]: an active snapshot becomes immutable under a
//!   new name; [`Snapshotter::remove`] refuses a snapshot others build on.
//!
//! Ids come from a counter in the same transaction as the record; a
//! directory whose record never committed (a crash) is removed by
//! [`Snapshotter::cleanup`] at start-up.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::metadata::{self, Db, Table, Txn};

/// Errors of the snapshotter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error("snapshot {0:?} does not exist")]
    NotFound(String),
    #[error("snapshot {key:?} cannot be used as a parent: it is {kind:?}, not committed")]
    ParentNotCommitted { key: String, kind: Kind },
    #[error("snapshot {key:?} is {kind:?}; {op} needs an active snapshot")]
    NotActive {
        key: String,
        kind: Kind,
        op: &'static str,
    },
    #[error("snapshot {key:?} is the parent of {child:?}; remove that first")]
    HasChildren { key: String, child: String },
    #[error("snapshot {key:?}: {op} {path}: {source}")]
    Io {
        key: String,
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
}

type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    View,
    Active,
    Committed,
}

/// A snapshot's record in the metadata store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub kind: Kind,
    pub parent: Option<String>,
    /// Seconds since the epoch.
    pub created: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One mount of a snapshot, as `mount(2)` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
    /// Directory relative `lowerdir` paths are relative to (mount from
    /// there); `None`: the paths are absolute.
    pub base: Option<PathBuf>,
}

/// What a snapshot's own directory holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub size: u64,
    pub inodes: u64,
}

/// Keep overlay mount data below one page (the kernel's limit), with room
/// for the other options.
const MOUNT_DATA_LIMIT: usize = 4096 - 512;

/// The overlay snapshotter rooted at `<root>/snapshots`.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
    db: Arc<Db>,
    index_off: bool,
}

impl Snapshotter {
    pub fn open(root: impl Into<PathBuf>, db: Arc<Db>) -> Result<Snapshotter> {
        let root = root.into();
        crate::private::create_dir(&root).map_err(|source| Error::Io {
            key: String::new(),
            op: "create",
            path: root.clone(),
            source,
        })?;
        // With overlay's inode index on, a layer directory mounted once
        // cannot be mounted again from another path; containerd turns it off.
        let index_off = Path::new("/sys/module/overlay/parameters/index").exists();
        Ok(Snapshotter {
            root,
            db,
            index_off,
        })
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn record(&self, key: &str) -> Result<Record> {
        self.db
            .get(Table::Snapshots, key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    /// The directory an active snapshot's changes go to (the overlay upper
    /// dir): where a layer is unpacked.
    pub fn upper_dir(&self, key: &str) -> Result<PathBuf> {
        let record = self.record(key)?;
        Ok(self.dir(record.id).join("fs"))
    }

    pub fn stat(&self, key: &str) -> Result<Record> {
        self.record(key)
    }

    pub fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.db.get::<Record>(Table::Snapshots, key)?.is_some())
    }

    pub fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active, labels, true)?;
        self.mounts(key)
    }

    /// As [`Snapshotter::prepare`], for a caller whose own commit follows
    /// at once and makes this one durable with it (a container's record):
    /// one sync instead of two. A crash between leaves, as with `prepare`,
    /// either nothing or a snapshot no container names.
    pub fn prepare_unsynced(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active, labels, false)?;
        self.mounts(key)
    }

    pub fn view(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::View, labels, true)?;
        self.mounts(key)
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: BTreeMap<String, String>,
        synced: bool,
    ) -> Result<()> {
        let write = |txn: &mut Txn<'_>| {
            if txn.get::<Record>(Table::Snapshots, key)?.is_some() {
                return Err(Error::AlreadyExists(key.to_string()));
            }
            if let Some(parent) = parent {
                let p: Record = txn
                    .get(Table::Snapshots, parent)?
                    .ok_or_else(|| Error::NotFound(parent.to_string()))?;
                if p.kind != Kind::Committed {
                    return Err(Error::ParentNotCommitted {
                        key: parent.to_string(),
                        kind: p.kind,
                    });
                }
            }
            let id = txn.next_id("snapshots")?;
            let dir = self.dir(id);
            crate::private::create_dir(&dir).map_err(|source| Error::Io {
                key: key.to_string(),
                op: "create",
                path: dir.clone(),
                source,
            })?;
            for sub in ["fs", "work"] {
                let path = dir.join(sub);
                fs::create_dir_all(&path).map_err(|source| Error::Io {
                    key: key.to_string(),
                    op: "create",
                    path,
                    source,
                })?;
            }
            let record = Record {
                id,
                kind,
                parent: parent.map(str::to_string),
                created: crate::clock::now_secs(),
                labels,
            };
            if let Err(e) = txn.put(Table::Snapshots, key, &record) {
                let _ = fs::remove_dir_all(&dir);
                return Err(e.into());
            }
            Ok(())
        };
        self.db.write_synced_if(synced, write)
    }

    /// The ids of `key`'s parents, nearest first.
    fn parent_ids(&self, record: &Record) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        let mut next = record.parent.clone();
        while let Some(key) = next {
            let parent = self.record(&key)?;
            ids.push(parent.id);
            next = parent.parent;
        }
        Ok(ids)
    }

    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let record = self.record(key)?;
        let parents = self.parent_ids(&record)?;
        let fs_of = |id: u64| self.dir(id).join("fs").to_string_lossy().into_owned();
        let bind = |source: String, ro: bool| Mount {
            kind: "bind".into(),
            source,
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
            base: None,
        };
        let ro = record.kind != Kind::Active;
        if parents.is_empty() {
            return Ok(vec![bind(fs_of(record.id), ro)]);
        }
        if ro && parents.len() == 1 {
            return Ok(vec![bind(fs_of(parents[0]), true)]);
        }
        let mut options = Vec::new();
        if self.index_off {
            options.push("index=off".to_string());
        }
        let mut base = None;
        let mut lower: Vec<String> = parents.iter().map(|&id| fs_of(id)).collect();
        if lower.iter().map(|l| l.len() + 1).sum::<usize>() > MOUNT_DATA_LIMIT {
            lower = parents.iter().map(|id| format!("{id}/fs")).collect();
            base = Some(self.root.clone());
        }
        if ro {
            options.push("ro".into());
        } else {
            let dir = self.dir(record.id);
            options.push(format!("workdir={}", dir.join("work").display()));
            options.push(format!("upperdir={}", dir.join("fs").display()));
        }
        options.push(format!("lowerdir={}", lower.join(":")));
        Ok(vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options,
            base,
        }])
    }

    /// Commits the active snapshot `key` as `name`.
    pub fn commit(&self, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<()> {
        self.commit_with_parent(name, key, None, labels)
    }

    /// Commits `key` as `name` on top of `parent` instead of the parent it
    /// was prepared on. An overlay upper dir holds only its own layer's
    /// entries and never depends on its lowers, so layers can be unpacked
    /// side by side into parentless snapshots and stacked in chain order as
    /// each finishes; this is what lets a pull unpack layers in parallel.
    pub fn commit_onto(
        &self,
        name: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        self.commit_with_parent(name, key, Some(parent), labels)
    }

    fn commit_with_parent(
        &self,
        name: &str,
        key: &str,
        parent: Option<Option<&str>>,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        self.db.write(|txn| {
            let mut record: Record = txn
                .get(Table::Snapshots, key)?
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            if record.kind != Kind::Active {
                return Err(Error::NotActive {
                    key: key.to_string(),
                    kind: record.kind,
                    op: "commit",
                });
            }
            if txn.get::<Record>(Table::Snapshots, name)?.is_some() {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            if let Some(parent) = parent {
                if let Some(p) = parent {
                    let pr: Record = txn
                        .get(Table::Snapshots, p)?
                        .ok_or_else(|| Error::NotFound(p.to_string()))?;
                    if pr.kind != Kind::Committed {
                        return Err(Error::ParentNotCommitted {
                            key: p.to_string(),
                            kind: pr.kind,
                        });
                    }
                }
                record.parent = parent.map(str::to_string);
            }
            if parent.is_some() {
                record.labels.clear();
            }
            record.kind = Kind::Committed;
            record.labels.extend(labels);
            txn.delete(Table::Snapshots, key)?;
            txn.put(Table::Snapshots, name, &record)?;
            Ok(())
        })
    }

    /// Removes a snapshot no other snapshot builds on.
    pub fn remove(&self, key: &str) -> Result<()> {
        let record = self.db.write(|txn| self.remove_record(txn, key))?;
        self.remove_dir(key, &record)
    }

    /// Removes `key`'s record in the caller's transaction (refused while a
    /// snapshot has it as parent); its directory goes after the commit,
    /// with [`Snapshots::remove_dir`].
    pub fn remove_record(&self, txn: &mut Txn<'_>, key: &str) -> Result<Record> {
        let record: Record = txn
            .get(Table::Snapshots, key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        // Only a committed snapshot can be a parent: removing a
        // container's (active) one need not read every other record.
        let children = match record.kind {
            Kind::Committed => txn.list::<Record>(Table::Snapshots)?,
            Kind::Active | Kind::View => Vec::new(),
        };
        for (child, r) in children {
            if r.parent.as_deref() == Some(key) {
                return Err(Error::HasChildren {
                    key: key.to_string(),
                    child,
                });
            }
        }
        txn.delete(Table::Snapshots, key)?;
        Ok(record)
    }

    /// The directory of a snapshot whose record is gone. The record goes
    /// first: a crash in between leaves a directory that cleanup()
    /// removes, never a record without its directory.
    pub fn remove_dir(&self, key: &str, record: &Record) -> Result<()> {
        let dir = self.dir(record.id);
        fs::remove_dir_all(&dir).map_err(|source| Error::Io {
            key: key.to_string(),
            op: "remove",
            path: dir,
            source,
        })
    }

    pub fn list(&self) -> Result<Vec<(String, Record)>> {
        Ok(self.db.list(Table::Snapshots)?)
    }

    /// Disk usage of the snapshot's own directory (hardlinks counted once).
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let record = self.record(key)?;
        let dir = self.dir(record.id).join("fs");
        let mut usage = Usage::default();
        let mut seen = HashSet::new();
        du(&dir, &mut usage, &mut seen).map_err(|source| Error::Io {
            key: key.to_string(),
            op: "walk",
            path: dir.clone(),
            source,
        })?;
        Ok(usage)
    }

    /// Removes snapshot directories that have no record (left by a crash
    /// between creating a directory and committing its record, or between
    /// removing a record and its directory).
    pub fn cleanup(&self) -> Result<Vec<PathBuf>> {
        let known: HashSet<u64> = self.list()?.into_iter().map(|(_, r)| r.id).collect();
        let mut removed = Vec::new();
        let entries = fs::read_dir(&self.root).map_err(|source| Error::Io {
            key: String::new(),
            op: "read",
            path: self.root.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if !known.contains(&id) {
                let path = entry.path();
                if fs::remove_dir_all(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
        Ok(removed)
    }
}

fn du(path: &Path, usage: &mut Usage, seen: &mut HashSet<(u64, u64)>) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if seen.insert((meta.dev(), meta.ino())) {
        usage.inodes += 1;
        usage.size += meta.blocks() * 512;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            du(&entry?.path(), usage, seen)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(name: &str) -> (PathBuf, Snapshotter) {
        let dir = std::env::temp_dir().join(format!("berth-snap-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let db = Arc::new(Db::open(&dir.join("meta.redb")).unwrap());
        let s = Snapshotter::open(dir.join("snapshots"), db).unwrap();
        (dir, s)
    }

    #[test]
    fn prepare_commit_mounts_newest_first_and_remove_order() {
        let (dir, s) = setup("chain");
        s.prepare("a-active", None, BTreeMap::new()).unwrap();
        s.commit("a", "a-active", BTreeMap::new()).unwrap();
        s.prepare("b-active", Some("a"), BTreeMap::new()).unwrap();
        s.commit("b", "b-active", BTreeMap::new()).unwrap();
        let mounts = s.prepare("c", Some("b"), BTreeMap::new()).unwrap();
        let a = s.record("a").unwrap().id;
        let b = s.record("b").unwrap().id;
        let lower = mounts[0]
            .options
            .iter()
            .find_map(|o| o.strip_prefix("lowerdir="))
            .unwrap()
            .to_string();
        let root = dir.join("snapshots");
        assert_eq!(
            lower,
            format!("{}/{b}/fs:{}/{a}/fs", root.display(), root.display())
        );
        assert!(matches!(
            s.prepare("x", Some("c"), BTreeMap::new()),
            Err(Error::ParentNotCommitted { .. })
        ));
        assert!(matches!(s.remove("a"), Err(Error::HasChildren { .. })));
        s.remove("c").unwrap();
        s.remove("b").unwrap();
        s.remove("a").unwrap();
        assert!(s.list().unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_chains_use_relative_lowerdirs() {
        let (dir, s) = setup("long");
        let mut parent: Option<String> = None;
        for i in 0..200 {
            let key = format!("layer-{i}");
            s.prepare("tmp", parent.as_deref(), BTreeMap::new())
                .unwrap();
            s.commit(&key, "tmp", BTreeMap::new()).unwrap();
            parent = Some(key);
        }
        let mounts = s
            .prepare("top", parent.as_deref(), BTreeMap::new())
            .unwrap();
        assert_eq!(
            mounts[0].base.as_deref(),
            Some(dir.join("snapshots").as_path())
        );
        assert!(mounts[0].options.join(",").len() < 4096);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cleanup_removes_directories_without_records() {
        let (dir, s) = setup("cleanup");
        s.prepare("kept", None, BTreeMap::new()).unwrap();
        fs::create_dir_all(dir.join("snapshots/999/fs")).unwrap();
        let removed = s.cleanup().unwrap();
        assert_eq!(removed, vec![dir.join("snapshots/999")]);
        assert!(s.upper_dir("kept").unwrap().is_dir());
        fs::remove_dir_all(&dir).unwrap();
    }
}
