//! The daemon's metadata: one redb database (`meta.redb`, the counterpart of
//! containerd's bbolt `meta.db`), with JSON records in named tables.
//!
//! Every change that must be atomic (a snapshot's record and its id, an
//! image and the snapshots it keeps) happens in one [`Txn`]: redb commits it
//! durably or not at all, so a SIGKILL leaves the previous state.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metadata database {path}: {source}")]
    Db { path: PathBuf, source: redb::Error },
    #[error("metadata record {table}/{key} is corrupt: {source}")]
    Corrupt {
        table: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("metadata database: the commits could not be synced: {0}")]
    Sync(String),
}

type Result<T> = std::result::Result<T, Error>;

/// The tables, each holding JSON values by string key.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    /// Image name → [`crate::images::ImageRecord`].
    Images,
    /// Snapshot key → [`crate::snapshots::Record`].
    Snapshots,
    /// Container id → [`crate::containers::ContainerRecord`].
    Containers,
    /// Container name → its id: the index a lookup by name and the
    /// name's uniqueness check read, instead of every record.
    ContainerNames,
    /// Volume name → [`crate::volumes::VolumeRecord`].
    Volumes,
    /// Network name → [`berth_net::network::Network`].
    Networks,
    /// Container id → [`crate::networks::AttachmentRecord`].
    Attachments,
    /// CRI pod sandbox id → [`crate::cri::sandbox::PodRecord`] (CRI's own database).
    PodSandboxes,
    /// CRI container id → [`crate::cri::container::CriRecord`] (CRI's own database).
    CriContainers,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Images => "images",
            Table::Snapshots => "snapshots",
            Table::Containers => "containers",
            Table::ContainerNames => "container_names",
            Table::Volumes => "volumes",
            Table::Networks => "networks",
            Table::Attachments => "attachments",
            Table::PodSandboxes => "pod_sandboxes",
            Table::CriContainers => "cri_containers",
        }
    }

    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// The open database.
pub struct Db {
    db: redb::Database,
    path: PathBuf,
    /// Commits so far; the first `durable` of them are on disk
    /// ([`Db::sync_through`]); the difference bounds a run of unsynced
    /// ones ([`MAX_UNSYNCED`]).
    commits: AtomicU64,
    durable: AtomicU64,
    /// One empty synced commit at a time: the callers that wait meanwhile
    /// are covered by it.
    syncing: std::sync::Mutex<()>,
}

/// At most this many unsynced commits in a row: redb reuses the pages a
/// commit frees only once a synced commit follows, so the file would grow
/// without one.
const MAX_UNSYNCED: u64 = 64;

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        let err = |e: redb::Error| Error::Db {
            path: path.to_path_buf(),
            source: e,
        };
        // The metadata is small and read rarely; redb's default cache (up
        // to 1 GiB) would only hold on to pages an idle daemon never needs.
        // The file is root's alone (see `crate::private`); redb would make
        // it with the default 0644.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(crate::private::FILE_MODE)
                .open(path)
                .map_err(|e| err(e.into()))?;
        }
        let db = redb::Builder::new()
            .set_cache_size(1 << 20)
            .create(path)
            .map_err(|e| err(e.into()))?;
        let db = Db {
            db,
            path: path.to_path_buf(),
            commits: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            syncing: std::sync::Mutex::new(()),
        };
        // Tables exist from the start, so readers never meet a missing one.
        db.write(|txn| {
            for table in [
                Table::Images,
                Table::Snapshots,
                Table::Containers,
                Table::ContainerNames,
                Table::Volumes,
                Table::Networks,
                Table::Attachments,
                Table::PodSandboxes,
                Table::CriContainers,
            ] {
                txn.txn.open_table(table.def()).map_err(|e| txn.err(e))?;
            }
            txn.txn.open_table(COUNTERS).map_err(|e| txn.err(e))?;
            Ok(())
        })?;
        Ok(db)
    }

    fn err(&self, e: impl Into<redb::Error>) -> Error {
        Error::Db {
            path: self.path.clone(),
            source: e.into(),
        }
    }

    /// Runs `f` in one write transaction, committed if it returns `Ok`; the
    /// commit is on disk when this returns.
    pub fn write<R, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        self.write_synced_if(true, f)
    }

    /// Makes every commit so far durable (one empty synced commit, unless
    /// a synced one already followed them), at a clean stop: an unsynced
    /// commit is otherwise lost with the process.
    pub fn sync(&self) -> Result<()> {
        self.sync_through(self.commits())
    }

    /// [`Db::write`] when `synced`; otherwise the commit reaches the disk
    /// only with the next synced one (a crash before it, even the process's
    /// own, loses this one, never half of it): for a change a synced commit
    /// always follows, or whose loss the start-up repairs.
    pub fn write_synced_if<R, E: From<Error>>(
        &self,
        synced: bool,
        f: impl FnOnce(&mut Txn<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        // The commits since (and with) the last synced one: this one is
        // synced when it would be the MAX_UNSYNCED-th unsynced in a row.
        let since_synced = self
            .commits()
            .saturating_sub(self.durable.load(Ordering::SeqCst));
        let synced = synced || since_synced >= MAX_UNSYNCED;
        let durability = if synced {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        // Every commit counted by now ended before this one began (redb has
        // one writer at a time): a synced commit takes them to the disk.
        let before = self.commits.load(Ordering::SeqCst);
        txn.set_durability(durability)
            .map_err(|e| self.err(redb::Error::from(e)))?;
        let mut wrapped = Txn {
            txn,
            path: &self.path,
        };
        let out = f(&mut wrapped)?;
        wrapped.txn.commit().map_err(|e| self.err(e))?;
        self.commits.fetch_add(1, Ordering::SeqCst);
        if synced {
            self.durable.fetch_max(before, Ordering::SeqCst);
        }
        Ok(out)
    }

    /// How many commits have been made: a mark for [`Db::sync_through`].
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// Whether the first `mark` commits are known to be on disk.
    pub fn is_durable(&self, mark: u64) -> bool {
        self.durable.load(Ordering::SeqCst) >= mark
    }

    /// Makes the first `mark` commits durable: nothing to do if a synced
    /// commit has followed them, else one empty synced commit, shared by
    /// the callers that wait for it meanwhile.
    pub fn sync_through(&self, mark: u64) -> Result<()> {
        if self.is_durable(mark) {
            return Ok(());
        }
        let _one = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_durable(mark) {
            return Ok(());
        }
        self.write(|_| Ok::<_, Error>(()))
    }

    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = read.open_table(table.def()).map_err(|e| self.err(e))?;
        let value = t.get(key).map_err(|e| self.err(e))?;
        value.map(|v| decode(table, key, v.value())).transpose()
    }

    /// Up to `limit` keys of `table` that start with `prefix`, in order,
    /// read from the key range alone: no value is decoded.
    pub fn keys_with_prefix(
        &self,
        table: Table,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = read.open_table(table.def()).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(|e| self.err(e))? {
            let (k, _) = item.map_err(|e| self.err(e))?;
            let key = k.value();
            if !key.starts_with(prefix) || out.len() == limit {
                break;
            }
            out.push(key.to_string());
        }
        Ok(out)
    }

    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = read.open_table(table.def()).map_err(|e| self.err(e))?;
        decode_all(table, &t, |e| self.err(e))
    }
}

/// Every record of the open table `t`, decoded, in key order.
fn decode_all<T: DeserializeOwned>(
    table: Table,
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    err: impl Fn(redb::StorageError) -> Error,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for item in t.iter().map_err(&err)? {
        let (k, v) = item.map_err(&err)?;
        let key = k.value().to_string();
        let value = decode(table, &key, v.value())?;
        out.push((key, value));
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Corrupt {
        table: table.name(),
        key: key.to_string(),
        source,
    })
}

/// A write transaction.
pub struct Txn<'a> {
    txn: redb::WriteTransaction,
    path: &'a Path,
}

impl Txn<'_> {
    fn err(&self, e: impl Into<redb::Error>) -> Error {
        Error::Db {
            path: self.path.to_path_buf(),
            source: e.into(),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        let t = self.txn.open_table(table.def()).map_err(|e| self.err(e))?;
        let value = t.get(key).map_err(|e| self.err(e))?;
        value.map(|v| decode(table, key, v.value())).transpose()
    }

    pub fn put<T: Serialize>(&mut self, table: Table, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Corrupt {
            table: table.name(),
            key: key.to_string(),
            source,
        })?;
        let mut t = self.txn.open_table(table.def()).map_err(|e| self.err(e))?;
        t.insert(key, bytes.as_slice()).map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn delete(&mut self, table: Table, key: &str) -> Result<bool> {
        let mut t = self.txn.open_table(table.def()).map_err(|e| self.err(e))?;
        let removed = t.remove(key).map_err(|e| self.err(e))?.is_some();
        Ok(removed)
    }

    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>> {
        let t = self.txn.open_table(table.def()).map_err(|e| self.err(e))?;
        decode_all(table, &t, |e| self.err(e))
    }

    /// Removes every record of `table`.
    pub fn clear(&mut self, table: Table) -> Result<()> {
        let mut t = self.txn.open_table(table.def()).map_err(|e| self.err(e))?;
        t.retain(|_, _| false).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The next value of the counter `name` (1, 2, …), never reused.
    pub fn next_id(&mut self, name: &str) -> Result<u64> {
        let mut t = self.txn.open_table(COUNTERS).map_err(|e| self.err(e))?;
        let next = t
            .get(name)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value())
            + 1;
        t.insert(name, next).map_err(|e| self.err(e))?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-meta-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_synced_commit_makes_the_ones_before_it_durable() {
        let dir = scratch("marks");
        let db = Db::open(&dir.join("meta.db")).unwrap();
        db.write_synced_if(false, |txn| txn.put(Table::Volumes, "a", &"a"))
            .unwrap();
        let mark = db.commits();
        assert!(
            !db.is_durable(mark),
            "an unsynced commit counted as durable"
        );
        db.write(|txn| txn.put(Table::Volumes, "b", &"b")).unwrap();
        assert!(
            db.is_durable(mark),
            "a synced commit left the one before it out"
        );
        db.write_synced_if(false, |txn| txn.put(Table::Volumes, "c", &"c"))
            .unwrap();
        let mark = db.commits();
        assert!(!db.is_durable(mark));
        db.sync_through(mark).unwrap();
        assert!(db.is_durable(mark), "sync_through left its mark unsynced");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A process that made an unsynced commit, synced through it, and was
    /// killed (it leaves with `_exit`, closing nothing) left it on disk.
    #[test]
    fn a_commit_synced_through_outlives_a_killed_process() {
        let dir = scratch("kill");
        let path = dir.join("meta.db");
        // SAFETY: the child makes the database calls below and leaves with
        // _exit (no destructor runs); the parent waits for it.
        match unsafe { libc::fork() } {
            0 => {
                let written = Db::open(&path).and_then(|db| {
                    db.write_synced_if(false, |txn| txn.put(Table::Volumes, "kept", &"kept"))?;
                    db.sync_through(db.commits())
                });
                // SAFETY: leaving the forked child at once.
                unsafe { libc::_exit(i32::from(written.is_err())) };
            }
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            child => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(child, &mut status, 0) };
                assert_eq!(status, 0, "the child's writes failed");
            }
        }
        let db = Db::open(&path).expect("reopen");
        let kept = db.get::<String>(Table::Volumes, "kept").unwrap();
        assert_eq!(
            kept.as_deref(),
            Some("kept"),
            "the synced-through commit was lost"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
