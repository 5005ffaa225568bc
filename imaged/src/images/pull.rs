//! A pull: resolve the reference to one platform's manifest, store
//! manifest and config verified, then every layer ([`super::layers`]) and
//! the image record.

use super::layers::{layer_task, Staging};
use super::*;

impl Images {
    /// Pulls `reference` for `platform`, sending progress as it goes. What
    /// a pull that fails or is dropped stored and no image uses is
    /// collected (at once if nothing else runs, else by the next sweep).
    pub async fn pull(
        &self,
        reference: &str,
        platform: &Platform,
        auth: Option<Credentials>,
        unpack: bool,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> Result<ImageRecord> {
        // Declared before the read lock, so dropped after it.
        let mut collect = CollectUnlessDone(Some(self.clone()));
        let _working = self.gc_lock.read().await;
        let _ = progress.send(Progress::Resolving);
        let remote = Remote::connect(reference, &self.registry, auth).await?;
        let name = remote.canonical_name();
        let (top, top_digest) = remote.manifest(None).await?;
        let top_digest = self.parse_digest(reference, &top_digest)?;
        self.content.write_bytes(&top_digest, &top)?;
        let top_manifest = self.parse_manifest(reference, &top_digest, &top)?;
        let target = Descriptor {
            media_type: top_manifest.media_type.clone(),
            digest: top_digest.to_string(),
            size: top.len() as i64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let _ = progress.send(Progress::Resolved {
            digest: target.digest.clone(),
            media_type: target.media_type.clone(),
        });

        let (manifest_desc, manifest) = match &top_manifest.manifests {
            Some(entries) => {
                let chosen = entries
                    .iter()
                    .find(|e| e.platform.as_ref().is_some_and(|p| platform.matches(p)))
                    .ok_or_else(|| Error::NoPlatform {
                        reference: reference.to_string(),
                        platform: platform.to_string(),
                        available: entries
                            .iter()
                            .filter_map(|e| e.platform.as_ref().map(|p| p.to_string()))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?
                    .clone();
                let digest = self.parse_digest(reference, &chosen.digest)?;
                let bytes = if self.content.exists(&digest) {
                    self.read_small(
                        reference,
                        "manifest",
                        &digest,
                        chosen.size,
                        registry::MAX_MANIFEST,
                    )?
                } else {
                    let (bytes, _) = remote.manifest(Some(&digest)).await?;
                    check_size(
                        reference,
                        "manifest",
                        &digest,
                        chosen.size,
                        bytes.len() as u64,
                    )?;
                    self.content.write_bytes(&digest, &bytes)?;
                    bytes
                };
                let manifest = self.parse_manifest(reference, &digest, &bytes)?;
                (chosen, manifest)
            }
            None => (target.clone(), top_manifest),
        };
        let (config_desc, config_digest) = self.config_of(reference, &manifest_desc, &manifest)?;
        self.config_blob(&remote, &config_digest, config_desc.size)
            .await?;
        let resolved = Resolved {
            reference: reference.to_string(),
            name,
            target,
            manifest_desc,
            manifest,
            platform: platform.clone(),
        };
        let record = self
            .unpack_and_record(resolved, Some(remote), unpack, progress)
            .await?;
        collect.0 = None;
        Ok(record)
    }

    /// A stored manifest or config, read only if its size is the
    /// descriptor's and within `limit`.
    pub(crate) fn read_small(
        &self,
        reference: &str,
        what: &'static str,
        digest: &Digest,
        size: i64,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let stored = self.content.info(digest)?.size;
        check_size(reference, what, digest, size, stored)?;
        if stored > limit {
            return Err(Error::Manifest {
                reference: reference.to_string(),
                digest: digest.to_string(),
                detail: format!("the {what} is {stored} bytes, more than the {limit}-byte limit"),
            });
        }
        Ok(self.content.read_blob(digest)?)
    }

    /// Layers into the content store and snapshots, then the image record:
    /// the part of a pull an import shares. Manifest and config are in the
    /// content store already; with no `remote`, every layer blob must be.
    pub(crate) async fn unpack_and_record(
        &self,
        resolved: Resolved,
        remote: Option<Remote>,
        unpack: bool,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> Result<ImageRecord> {
        let Resolved {
            reference,
            name,
            target,
            manifest_desc,
            manifest,
            platform,
        } = resolved;
        let reference = reference.as_str();
        let (config_desc, config_digest) = self.config_of(reference, &manifest_desc, &manifest)?;
        let config_bytes = self.read_small(
            reference,
            "config",
            &config_digest,
            config_desc.size,
            MAX_CONFIG,
        )?;
        let config =
            berth_oci::image::parse_config(&config_bytes).map_err(|e| Error::Manifest {
                reference: reference.to_string(),
                digest: config_desc.digest.clone(),
                detail: e.to_string(),
            })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::Manifest {
                reference: reference.to_string(),
                digest: manifest_desc.digest.clone(),
                detail: format!(
                    "{} layers but {} diff IDs in the config",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let chains = chain_ids(diff_ids);

        let ctx = Arc::new(PullCtx {
            reference: reference.to_string(),
            registry: remote
                .as_ref()
                .map(|r| r.registry().to_string())
                .unwrap_or_default(),
            remote,
            content: self.content.clone(),
            snapshots: self.snapshots.clone(),
            progress: progress.clone(),
        });
        let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL_LAYERS));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, layer) in manifest.layers.iter().enumerate() {
            let digest = self.parse_digest(reference, &layer.digest)?;
            let diff_id = diff_ids[i].clone();
            let chain = chains[i].clone();
            let size = u64::try_from(layer.size).map_err(|_| Error::Manifest {
                reference: reference.to_string(),
                digest: layer.digest.clone(),
                detail: format!("negative layer size {}", layer.size),
            })?;
            let (ctx, limit) = (ctx.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let staged = layer_task(&ctx, &digest, size, &diff_id, &chain, unpack).await;
                (i, staged)
            });
        }
        let mut staged: Vec<Option<Option<Arc<Staging>>>> = vec![None; manifest.layers.len()];
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, Ok(key))) => staged[i] = Some(key),
                Ok((_, Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(Error::Layer {
                        reference: reference.to_string(),
                        digest: String::new(),
                        detail: format!("layer task failed: {e}"),
                    });
                }
            }
        }
        // On an error the staging snapshots go with `staged`.
        if let Some(e) = first_error {
            return Err(e);
        }
        if unpack {
            let mut parent: Option<&str> = None;
            for (i, staging) in staged.iter().enumerate() {
                if let Some(Some(staging)) = staging {
                    match self.snapshots.commit_onto(
                        &chains[i],
                        &staging.key,
                        parent,
                        layer_labels(),
                    ) {
                        Ok(()) => staging.committed(),
                        // Another pull committed the same layer meanwhile:
                        // this copy goes when `staging` is dropped.
                        Err(snapshots::Error::AlreadyExists(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                parent = Some(&chains[i]);
            }
        }

        let record = ImageRecord {
            name: name.clone(),
            target,
            manifest: Descriptor {
                platform: None,
                ..manifest_desc
            },
            config: config_desc,
            platform,
            layers: manifest.layers.clone(),
            chain_ids: chains,
            size: manifest.layers.iter().map(|l| l.size).sum(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        self.db
            .write(|txn| txn.put(Table::Images, &name, &record))?;
        let _ = progress.send(Progress::Done(Box::new(record.clone())));
        Ok(record)
    }

    /// A manifest's config descriptor and digest, once its layer count is
    /// known to be mountable: what a pull fetches and an unpack reads.
    fn config_of(
        &self,
        reference: &str,
        manifest_desc: &Descriptor,
        manifest: &Manifest,
    ) -> Result<(Descriptor, Digest)> {
        check_layer_count(reference, manifest)?;
        let config = manifest.config.clone().ok_or_else(|| Error::Manifest {
            reference: reference.to_string(),
            digest: manifest_desc.digest.clone(),
            detail: "manifest has no config".into(),
        })?;
        let digest = self.parse_digest(reference, &config.digest)?;
        Ok((config, digest))
    }

    pub(crate) fn parse_digest(&self, reference: &str, digest: &str) -> Result<Digest> {
        Digest::parse(digest).map_err(|e| Error::Manifest {
            reference: reference.to_string(),
            digest: digest.to_string(),
            detail: e.to_string(),
        })
    }

    pub(crate) fn parse_manifest(
        &self,
        reference: &str,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<Manifest> {
        serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
            reference: reference.to_string(),
            digest: digest.to_string(),
            detail: format!("invalid manifest: {e}"),
        })
    }

    /// The image config: fetched unless stored, read through [`MAX_CONFIG`],
    /// verified (size and digest), stored.
    async fn config_blob(&self, remote: &Remote, digest: &Digest, size: i64) -> Result<()> {
        let reference = remote.name();
        if self.content.exists(digest) {
            self.read_small(reference, "config", digest, size, MAX_CONFIG)?;
            return Ok(());
        }
        if !(0..=MAX_CONFIG as i64).contains(&size) {
            return Err(Error::Manifest {
                reference: reference.to_string(),
                digest: digest.to_string(),
                detail: format!(
                    "the config's size {size} is out of bounds (0 to {MAX_CONFIG} bytes)"
                ),
            });
        }
        let (mut stream, _) = remote.blob(digest, 0).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| remote.read_error(&format!("the config {digest}"), &e))?;
            bytes.extend_from_slice(&chunk);
            // More than promised is wrong whatever follows: stop reading.
            if bytes.len() as i64 > size {
                break;
            }
        }
        check_size(reference, "config", digest, size, bytes.len() as u64)?;
        self.content.write_bytes(digest, &bytes)?;
        Ok(())
    }
}

/// Collects garbage when dropped, unless emptied: a pull that fails or is
/// dropped leaves no orphan blobs once the daemon is idle.
pub(super) struct CollectUnlessDone(Option<Images>);

impl Drop for CollectUnlessDone {
    fn drop(&mut self) {
        let (Some(images), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn_blocking(move || {
            if let Err(e) = images.collect_if_idle() {
                eprintln!("berth-imaged: collecting what a failed pull left: {e}");
            }
        });
    }
}

/// A blob's size must be its descriptor's, exactly.
pub(super) fn check_size(
    reference: &str,
    what: &'static str,
    digest: &Digest,
    expected: i64,
    actual: u64,
) -> Result<()> {
    if expected < 0 || expected as u64 != actual {
        return Err(Error::SizeMismatch {
            reference: reference.to_string(),
            what,
            digest: digest.to_string(),
            expected,
            actual,
        });
    }
    Ok(())
}

/// Refuses an image with more layers than a container's root can mount,
/// before any layer is fetched.
fn check_layer_count(reference: &str, manifest: &Manifest) -> Result<()> {
    if manifest.layers.len() > MAX_LAYERS {
        return Err(Error::TooManyLayers {
            reference: reference.to_string(),
            layers: manifest.layers.len(),
            limit: MAX_LAYERS,
        });
    }
    Ok(())
}
