//! Removing containers: one on request ([`Containers::delete`], or in two
//! halves, [`Containers::remove_records`] then [`Leftovers::remove`]), and at
//! the daemon's start the bundles whose records are gone
//! ([`Containers::reconcile`]).

use super::*;

impl Containers {
    /// Brings the store to what the records say, at the daemon's start:
    /// the names index is built again ([`index_names`]) and the bundles of
    /// containers whose records are gone (removed just before a crash,
    /// their directories not yet) are removed.
    pub fn reconcile(&self) -> Result<()> {
        for (_, path) in self.orphaned_bundles()? {
            // A bundle with a shim's address may still have its shim: its
            // container was removed while its task was being torn down
            // (`run --rm`, [`Containers::remove_records`]). The tasks'
            // recovery ends what is left of the task first.
            if path.join("address").exists() {
                continue;
            }
            self.remove_bundle(&path);
        }
        Ok(())
    }

    /// Removes a bundle no record names, its rootfs unmounted first: a
    /// mount left by a crash must not be walked into.
    pub fn remove_bundle(&self, path: &Path) {
        unmount(&path.join("rootfs"));
        if let Err(e) = std::fs::remove_dir_all(path) {
            eprintln!("berth-imaged: cannot remove {}: {e}", path.display());
        }
    }

    /// The bundles no record names (in either place): (id, path).
    pub fn orphaned_bundles(&self) -> Result<Vec<(String, PathBuf)>> {
        let ids = index_names(&self.db)?;
        let mut dirs = vec![&self.bundles];
        if self.ending_bundles != self.bundles {
            dirs.push(&self.ending_bundles);
        }
        Ok(dirs
            .into_iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten())
            .filter_map(|entry| {
                let id = entry.file_name().to_str()?.to_string();
                (!ids.contains(&id)).then(|| (id, entry.path()))
            })
            .collect())
    }

    /// Removes the record, the rootfs mount, the snapshot and the bundle,
    /// and with `volumes` the container's anonymous volumes. The caller has
    /// made sure no task runs.
    pub fn delete(&self, id: &str, volumes: bool) -> Result<()> {
        let record = self.resolve(id)?;
        let mut steps = crate::steps::Timeline::new("remove", &record.id);
        unmount(&record.rootfs());
        steps.step("unmount");
        let leftovers = self.remove_records(&record)?;
        steps.step("records");
        // The directories of a container removed at its exit (`run --rm`)
        // go after the reply: no record names them any more, so nothing can
        // find them, and a crash before they are gone leaves directories the
        // start-up removes (the snapshots' cleanup, [`Containers::reconcile`]).
        // Any other removal returns when they are gone.
        let settings = record.settings();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if settings.transient || settings.auto_remove => {
                drop(runtime.spawn_blocking(move || leftovers.remove()))
            }
            _ => leftovers.remove(),
        }
        steps.step("handed off");
        if volumes {
            self.remove_anonymous_volumes(&record)?;
        }
        Ok(())
    }

    /// The records half of a removal: the container's record, its name and
    /// its snapshot's record in one commit. From here no client can find the
    /// container, and its name is free; the rootfs and directories are the
    /// caller's to remove ([`Leftovers::remove`]) once no process uses them.
    /// A container another removal took first is [`Error::NotFound`].
    pub fn remove_records(&self, record: &ContainerRecord) -> Result<Leftovers> {
        // The snapshot's record and the container's go in one commit; the
        // snapshot's directory after it (a crash between leaves only a
        // directory, which the snapshots' cleanup removes at start).
        // Unsynced for a `run --rm` container: were the commit lost, the
        // start-up would remove the container anyway (`Tasks::recover`).
        let snapshots = &self.images.snapshots;
        let synced = !record.settings().transient;
        let snapshot = self.db.write_synced_if(synced, |txn| {
            if !txn.delete(Table::Containers, &record.id)? {
                return Err(Error::NotFound(record.name.clone()));
            }
            let snapshot = match snapshots.remove_record(txn, &record.snapshot_key) {
                Ok(r) => Some(r),
                Err(snapshots::Error::NotFound(_)) => None,
                Err(e) => return Err(Error::from(e)),
            };
            // Only its own entry: a name another container took since
            // (impossible while this one holds it) is left alone.
            if txn
                .get::<String>(Table::ContainerNames, &record.name)?
                .as_deref()
                == Some(&*record.id)
            {
                txn.delete(Table::ContainerNames, &record.name)?;
            }
            Ok(snapshot)
        })?;
        Ok(Leftovers {
            rootfs: record.rootfs(),
            bundle: record.bundle.clone(),
            snapshot: snapshot.map(|s| (record.snapshot_key.clone(), s)),
            snapshots: snapshots.clone(),
        })
    }

    /// Removes the anonymous volumes of a removed container (`rm -v`,
    /// `--rm`) that no other container uses.
    pub fn remove_anonymous_volumes(&self, record: &ContainerRecord) -> Result<()> {
        for name in &record.volumes {
            if self.volumes.is_anonymous_of(name, &record.id)? {
                let users = self.volume_users(name)?;
                self.volumes.remove(name, &users)?;
            }
        }
        Ok(())
    }
}

/// What a removed container leaves on disk: its rootfs mount, its bundle
/// and its snapshot's directory.
#[must_use = "the directories stay until `remove` is called"]
pub struct Leftovers {
    rootfs: PathBuf,
    bundle: PathBuf,
    snapshot: Option<(String, snapshots::Record)>,
    snapshots: snapshots::Snapshotter,
}

impl Leftovers {
    /// Unmounts the rootfs and removes the directories; what cannot go is
    /// said on stderr (the start-up's sweep tries again).
    pub fn remove(self) {
        unmount(&self.rootfs);
        if let Err(e) = std::fs::remove_dir_all(&self.bundle) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("berth-imaged: cannot remove {}: {e}", self.bundle.display());
            }
        }
        if let Some((key, snapshot)) = self.snapshot {
            if let Err(e) = self.snapshots.remove_dir(&key, &snapshot) {
                eprintln!("berth-imaged: {e}");
            }
        }
    }
}
