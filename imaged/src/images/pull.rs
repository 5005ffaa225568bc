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
        let top_document = self.parse_document(reference, &top_digest, &top)?;
        let target = descriptor(
            top_document.media_type().as_ref(),
            &top_digest,
            top.len() as u64,
        );
        let _ = progress.send(Progress::Resolved {
            digest: target.digest().to_string(),
            media_type: target.media_type().to_string(),
        });

        let (manifest_desc, manifest) = match top_document {
            Document::Index(index) => {
                let chosen = choose(reference, index.manifests(), platform)?.clone();
                let digest = self.parse_digest(reference, chosen.digest().as_ref())?;
                let bytes = if self.content.exists(&digest) {
                    self.read_small(
                        reference,
                        "manifest",
                        &digest,
                        chosen.size(),
                        registry::MAX_MANIFEST,
                    )?
                } else {
                    let (bytes, _) = remote.manifest(Some(&digest)).await?;
                    check_size(
                        reference,
                        "manifest",
                        &digest,
                        chosen.size(),
                        bytes.len() as u64,
                    )?;
                    self.content.write_bytes(&digest, &bytes)?;
                    bytes
                };
                let manifest = self.parse_manifest(reference, &digest, &bytes)?;
                (chosen, manifest)
            }
            Document::Manifest(manifest) => (target.clone(), *manifest),
        };
        let (config_desc, config_digest) = self.config_of(reference, &manifest)?;
        self.config_blob(&remote, &config_digest, config_desc.size())
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
        size: u64,
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
        let (config_desc, config_digest) = self.config_of(reference, &manifest)?;
        let config_bytes = self.read_small(
            reference,
            "config",
            &config_digest,
            config_desc.size(),
            MAX_CONFIG,
        )?;
        let config =
            berth_oci::image::parse_config(&config_bytes).map_err(|e| Error::Manifest {
                reference: reference.to_string(),
                digest: config_desc.digest().to_string(),
                detail: e.to_string(),
            })?;
        let diff_ids = config.rootfs().diff_ids();
        let layers = manifest.layers();
        if diff_ids.len() != layers.len() {
            return Err(Error::Manifest {
                reference: reference.to_string(),
                digest: manifest_desc.digest().to_string(),
                detail: format!(
                    "{} layers but {} diff IDs in the config",
                    layers.len(),
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
        for (i, layer) in layers.iter().enumerate() {
            let digest = self.parse_digest(reference, layer.digest().as_ref())?;
            let diff_id = diff_ids[i].clone();
            let chain = chains[i].clone();
            let size = layer.size();
            let (ctx, limit) = (ctx.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let staged = layer_task(&ctx, &digest, size, &diff_id, &chain, unpack).await;
                (i, staged)
            });
        }
        let mut staged: Vec<Option<Option<Arc<Staging>>>> = vec![None; layers.len()];
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

        let mut manifest_desc = manifest_desc;
        manifest_desc.set_platform(None);
        let record = ImageRecord {
            name: name.clone(),
            target,
            manifest: manifest_desc,
            config: config_desc,
            platform,
            layers: layers.clone(),
            chain_ids: chains,
            size: layers.iter().map(|l| l.size() as i64).sum(),
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
    fn config_of(&self, reference: &str, manifest: &ImageManifest) -> Result<(Descriptor, Digest)> {
        check_layer_count(reference, manifest)?;
        let config = manifest.config().clone();
        let digest = self.parse_digest(reference, config.digest().as_ref())?;
        Ok((config, digest))
    }

    /// A descriptor's digest as the content store takes it (sha256 only).
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
    ) -> Result<ImageManifest> {
        berth_oci::image::parse_manifest(bytes).map_err(|e| manifest_error(reference, digest, e))
    }

    /// What a reference names: an index or one manifest.
    pub(crate) fn parse_document(
        &self,
        reference: &str,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<Document> {
        berth_oci::image::parse_document(bytes).map_err(|e| manifest_error(reference, digest, e))
    }

    /// The image config: fetched unless stored, read through [`MAX_CONFIG`],
    /// verified (size and digest), stored.
    async fn config_blob(&self, remote: &Remote, digest: &Digest, size: u64) -> Result<()> {
        let reference = remote.name();
        if self.content.exists(digest) {
            self.read_small(reference, "config", digest, size, MAX_CONFIG)?;
            return Ok(());
        }
        if size > MAX_CONFIG {
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
            if bytes.len() as u64 > size {
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
    expected: u64,
    actual: u64,
) -> Result<()> {
    if expected != actual {
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
fn check_layer_count(reference: &str, manifest: &ImageManifest) -> Result<()> {
    if manifest.layers().len() > MAX_LAYERS {
        return Err(Error::TooManyLayers {
            reference: reference.to_string(),
            layers: manifest.layers().len(),
            limit: MAX_LAYERS,
        });
    }
    Ok(())
}

/// A manifest or index that is not one, named by its digest.
fn manifest_error(reference: &str, digest: &Digest, e: berth_oci::image::Error) -> Error {
    Error::Manifest {
        reference: reference.to_string(),
        digest: digest.to_string(),
        detail: e.to_string(),
    }
}
