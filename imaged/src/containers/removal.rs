//! Removing containers: one on request ([`Containers::delete`]), and at the
//! daemon's start the bundles whose records are gone
//! ([`Containers::reconcile`]).

use super::*;

impl Containers {
    /// Brings the store to what the records say, at the daemon's start:
    /// the names index is built again ([`index_names`]) and the bundles of
    /// containers whose records are gone (removed just before a crash,
    /// their directories not yet) are removed.
    pub fn reconcile(&self) -> Result<()> {
        let ids = index_names(&self.db)?;
        let Ok(entries) = std::fs::read_dir(&self.bundles) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let known = entry
                .file_name()
                .to_str()
                .is_some_and(|id| ids.contains(id));
            if !known {
                let path = entry.path();
                // Its rootfs was unmounted before its record went; a mount
                // left by a crash earlier still must not be walked into.
                unmount(&path.join("rootfs"));
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    eprintln!("berth-imaged: cannot remove {}: {e}", path.display());
                }
            }
        }
        Ok(())
    }

    /// Removes the record, the rootfs mount, the snapshot and the bundle,
    /// and with `volumes` the container's anonymous volumes. The caller has
    /// made sure no task runs.
    pub fn delete(&self, id: &str, volumes: bool) -> Result<()> {
        let record = self.resolve(id)?;
        let mut steps = crate::steps::Timeline::new("remove", &record.id);
        let rootfs = record.rootfs();
        unmount(&rootfs);
        steps.step("unmount");
        // The snapshot's record and the container's go in one commit; the
        // snapshot's directory after it (a crash between leaves only a
        // directory, which the snapshots' cleanup removes at start).
        let snapshots = &self.images.snapshots;
        let snapshot = self.db.write(|txn| {
            let snapshot = match snapshots.remove_record(txn, &record.snapshot_key) {
                Ok(r) => Some(r),
                Err(snapshots::Error::NotFound(_)) => None,
                Err(e) => return Err(Error::from(e)),
            };
            txn.delete(Table::Containers, &record.id)?;
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
        steps.step("records");
        // The directories of a container removed at its exit (`run --rm`)
        // go after the reply: no record names them any more, so nothing can
        // find them, and a crash before they are gone leaves directories the
        // start-up removes (the snapshots' cleanup, [`Containers::reconcile`]).
        // Any other removal returns when they are gone.
        let settings = record.settings();
        let deferred = settings.transient || settings.auto_remove;
        let bundle = record.bundle.clone();
        let snapshots = snapshots.clone();
        let key = record.snapshot_key.clone();
        let remove = move || {
            if let Err(e) = std::fs::remove_dir_all(&bundle) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("berth-imaged: cannot remove {}: {e}", bundle.display());
                }
            }
            if let Some(snapshot) = snapshot {
                if let Err(e) = snapshots.remove_dir(&key, &snapshot) {
                    eprintln!("berth-imaged: {e}");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if deferred => drop(runtime.spawn_blocking(remove)),
            _ => remove(),
        }
        steps.step("handed off");
        if volumes {
            for name in &record.volumes {
                if self.volumes.is_anonymous_of(name, &record.id)? {
                    let users = self.volume_users(name)?;
                    self.volumes.remove(name, &users)?;
                }
            }
        }
        Ok(())
    }
}
