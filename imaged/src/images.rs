//! Images: pulling a reference into the content store and snapshots, and
//! the records that name what was pulled.
//!
//! A pull, in order ([`Images::pull`]):
//! 1. resolve the reference to a manifest or index ([`crate::registry`]);
//!    from an index choose the platform (os, architecture *and* variant —
//!    `oci-client`'s resolver ignores the variant);
//! 2. store manifest and config, verified, in [`crate::content`];
//! 3. for every layer at once (a few in parallel): stream the blob through
//!    an ingest writer (hashing, resuming an interrupted ingest), decompress
//!    it, hash the tar (its diff ID) and apply it to a parentless staging
//!    snapshot — one pass over the bytes, none held in memory;
//! 4. verify blob digest and diff ID; commit each staging snapshot under its
//!    chain ID on top of the previous layer's ([`Snapshotter::commit_onto`]);
//! 5. record the image.
//!
//! A failure removes the staging snapshots and keeps partial ingests, so the
//! next pull resumes the download; the verified blobs it leaves that no
//! image uses are collected at once when no other pull or import runs, else
//! by the next sweep ([`Images::collect_if_idle`], every `gc_interval`). A
//! pull whose client went away is dropped: its download tasks are aborted
//! (closing their connections) and its staging snapshots removed. A crash
//! leaves staging snapshots behind; [`Images::recover`] removes them at
//! start-up.
//!
//! Nothing a registry sends is trusted for its size: manifests and indexes
//! are read through [`registry::MAX_MANIFEST`], configs through
//! [`MAX_CONFIG`], every blob must have exactly its descriptor's size (also
//! one already stored), and an image of more than [`MAX_LAYERS`] layers is
//! refused before anything is fetched or mounted.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::content::{self, Digest, Store};
use crate::metadata::{self, Db, Table};
use crate::registry::{self, Credentials, Remote};
use crate::snapshots::{self, Snapshotter};
use crate::unpack;

/// Errors of image operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error(transparent)]
    Content(#[from] content::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshots::Error),
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    #[error("cannot pull {reference}: {digest}: {detail}")]
    Manifest {
        reference: String,
        digest: String,
        detail: String,
    },
    #[error("cannot pull {reference}: no manifest for platform {platform} in the index (it has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("cannot pull {reference}: layer {digest}: {detail}")]
    Layer {
        reference: String,
        digest: String,
        detail: String,
    },
    #[error("cannot pull {reference}: layer {digest} is truncated: got {got} of {expected} bytes; nothing was committed")]
    Truncated {
        reference: String,
        digest: String,
        got: u64,
        expected: u64,
    },
    #[error("cannot pull {reference}: layer {digest} unpacks to {actual}, but the config says {expected}")]
    DiffId {
        reference: String,
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("cannot pull {reference}: layer {digest}: {source}")]
    Unpack {
        reference: String,
        digest: String,
        source: unpack::Error,
    },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("cannot use {reference}: too many layers: the image has {layers}, berth mounts at most {limit} (overlayfs takes the whole stack in one page of mount options)")]
    TooManyLayers {
        reference: String,
        layers: usize,
        limit: usize,
    },
    #[error("cannot pull {reference}: {what} {digest}: the descriptor says {expected} bytes but the blob has {actual}")]
    SizeMismatch {
        reference: String,
        what: &'static str,
        digest: String,
        expected: i64,
        actual: u64,
    },
}

type Result<T> = std::result::Result<T, Error>;

/// An OCI descriptor as manifests carry it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// The platform this daemon runs containers for.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", "v8"),
            "arm" => ("arm", "v7"),
            "x86" => ("386", ""),
            "powerpc64" => ("ppc64le", ""),
            "s390x" => ("s390x", ""),
            "riscv64" => ("riscv64", ""),
            other => (other, ""),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.into(),
        }
    }

    /// Whether an index entry's platform serves `self`. An empty wanted
    /// variant accepts any; arm64's variant defaults to v8.
    pub(crate) fn matches(&self, entry: &Platform) -> bool {
        let norm = |p: &Platform| {
            if p.architecture == "arm64" && p.variant.is_empty() {
                "v8".to_string()
            } else {
                p.variant.clone()
            }
        };
        entry.os == self.os
            && entry.architecture == self.architecture
            && (self.variant.is_empty() || norm(entry) == norm(self))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// A manifest or an index (manifest list): which one, `manifests` says.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// What the metadata store keeps for one image name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub target: Descriptor,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub platform: Platform,
    pub layers: Vec<Descriptor>,
    pub chain_ids: Vec<String>,
    pub size: i64,
    /// Seconds since the epoch.
    pub created: u64,
}

impl ImageRecord {
    pub fn chain_id(&self) -> Option<&str> {
        self.chain_ids.last().map(String::as_str)
    }

    /// Whether a container's root can be mounted from this image: pulls
    /// refuse more than [`MAX_LAYERS`] layers, but a store may hold an
    /// image recorded before they did. For container creation and image
    /// mounts, before anything is mounted.
    pub fn check_mountable(&self) -> Result<()> {
        if self.chain_ids.len() > MAX_LAYERS {
            return Err(Error::TooManyLayers {
                reference: self.name.clone(),
                layers: self.chain_ids.len(),
                limit: MAX_LAYERS,
            });
        }
        Ok(())
    }
}

/// A step of a pull, streamed to the client.
#[derive(Debug, Clone)]
pub enum Progress {
    Resolving,
    Resolved {
        digest: String,
        media_type: String,
    },
    Downloading {
        digest: String,
        offset: u64,
        total: u64,
    },
    Verified {
        digest: String,
    },
    Unpacked {
        digest: String,
    },
    AlreadyExists {
        digest: String,
    },
    Done(Box<ImageRecord>),
}

/// A name as berth records it (`busybox:1` → `docker.io/library/busybox:1`).
pub fn canonical_name(name: &str) -> Option<String> {
    crate::registry::parse_reference(name)
        .ok()
        .map(|r| r.whole())
}

/// Chain IDs of a stack of diff IDs (OCI image spec: ChainID(L0) = DiffID(L0),
/// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(prev) => Digest::of(format!("{prev} {diff}").as_bytes()).to_string(),
        };
        out.push(next);
    }
    out
}

/// Label on staging snapshots a pull unpacks into.
const STAGING_LABEL: &str = "berth.pull/staging";
/// Label on committed layer snapshots.
const LAYER_LABEL: &str = "berth.image/layer";

/// Largest image config accepted (it is read into memory). Configs are a
/// few KiB; a long history makes some 100 KiB. containerd caps manifests
/// and indexes at 4 MiB and berth takes the same for configs.
pub const MAX_CONFIG: u64 = 4 << 20;

/// Most layers an image may have. A container's root is one overlay mount
/// whose `lowerdir` names every layer, and mount(2) takes its options in
/// one page (4096 bytes, with the NUL). berth's snapshotter switches long
/// stacks to relative lowerdirs (`ID/fs`, 4 bytes + the id's digits + ':'),
/// next to absolute `upperdir=`/`workdir=` paths under the store's root.
/// With a root path of up to 256 bytes and ids of up to 8 digits,
/// (4095 - 2 * (256 + 30) - 20) / 12 = 291 layers fit; overlayfs itself
/// stacks at most 500 (`OVL_MAX_STACK`). 128 is docker's overlay2 limit as
/// well, comfortably inside both: no image a real builder makes exceeds it.
pub const MAX_LAYERS: usize = 128;

/// Layers fetched and unpacked at once.
const PARALLEL_LAYERS: usize = 3;

/// The image service over the stores.
#[derive(Debug, Clone)]
pub struct Images {
    pub db: Arc<Db>,
    pub content: Store,
    pub snapshots: Snapshotter,
    pub registry: Arc<registry::Options>,
    /// Pulls and imports hold it shared, garbage collection exclusively:
    /// blobs and snapshots a pull has made but not yet recorded in an image
    /// belong to no image, and must not be collected meanwhile.
    pub gc_lock: Arc<tokio::sync::RwLock<()>>,
}

/// An image resolved to one platform's manifest, whose manifest and config
/// are in the content store.
pub(crate) struct Resolved {
    pub reference: String,
    pub name: String,
    pub target: Descriptor,
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    pub platform: Platform,
}

/// What one pull needs to know, shared by its layer tasks.
struct PullCtx {
    reference: String,
    /// The registry's host (empty for an import): downloads are shared per
    /// registry and blob.
    registry: String,
    remote: Option<Remote>,
    content: Store,
    snapshots: Snapshotter,
    progress: mpsc::UnboundedSender<Progress>,
}

impl Images {
    /// Start-up recovery: staging snapshots of pulls a crash interrupted are
    /// removed (their layers are unpacked again; their ingests resume), and
    /// so are snapshot directories without records and ingests that cannot
    /// be resumed.
    pub fn recover(&self) -> Result<()> {
        for (key, record) in self.snapshots.list()? {
            if record.labels.contains_key(STAGING_LABEL) {
                self.snapshots.remove(&key)?;
            }
        }
        self.snapshots.cleanup()?;
        self.content.cleanup()?;
        Ok(())
    }

    /// By the name as recorded, or as a user writes it (`busybox:1` for
    /// `docker.io/library/busybox:1`).
    pub fn get(&self, name: &str) -> Result<ImageRecord> {
        if let Some(record) = self.db.get(Table::Images, name)? {
            return Ok(record);
        }
        let canonical = canonical_name(name);
        match canonical {
            Some(c) if c != name => self
                .db
                .get(Table::Images, &c)?
                .ok_or_else(|| Error::NotFound(name.to_string())),
            _ => Err(Error::NotFound(name.to_string())),
        }
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self
            .db
            .list::<ImageRecord>(Table::Images)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Removes the name, then every blob and layer snapshot no remaining
    /// image uses.
    pub fn remove(&self, name: &str) -> Result<(Vec<String>, Vec<String>)> {
        let removed = self.db.write(|txn| txn.delete(Table::Images, name))?;
        if !removed {
            return Err(Error::NotFound(name.to_string()));
        }
        self.gc()
    }

    /// Garbage collection: blobs and layer snapshots no image refers to.
    /// Waits for a moment when no pull or import runs; call it from a
    /// blocking thread.
    pub fn gc(&self) -> Result<(Vec<String>, Vec<String>)> {
        // Polled, not queued: a writer waiting in tokio's fair RwLock would
        // hold back every new pull behind the slowest one in progress.
        let _exclusive = loop {
            match self.gc_lock.try_write() {
                Ok(guard) => break guard,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        };
        self.collect()
    }

    /// Garbage collection now if no pull or import runs, else nothing
    /// (`None`): what a failed pull left is then collected by the next one
    /// that finds the daemon idle, or by the periodic sweep.
    pub fn collect_if_idle(&self) -> Result<Option<(Vec<String>, Vec<String>)>> {
        match self.gc_lock.try_write() {
            Ok(_exclusive) => self.collect().map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Sweeps every `interval` (see [`Images::collect_if_idle`]).
    pub fn spawn_sweeper(self: &Arc<Self>, interval: std::time::Duration) {
        let images = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let images = images.clone();
                let swept = tokio::task::spawn_blocking(move || images.collect_if_idle()).await;
                if let Ok(Err(e)) = swept {
                    eprintln!("berth-imaged: sweeping unused blobs: {e}");
                }
            }
        });
    }

    /// The collection itself; the caller holds `gc_lock` exclusively.
    /// Ingests nothing can resume go too (a pull that found a blob's
    /// ingest busy wrote one of its own).
    fn collect(&self) -> Result<(Vec<String>, Vec<String>)> {
        self.content.cleanup()?;
        let images = self.list()?;
        let mut blobs = HashSet::new();
        let mut chains = HashSet::new();
        for image in &images {
            blobs.insert(image.target.digest.clone());
            blobs.insert(image.manifest.digest.clone());
            blobs.insert(image.config.digest.clone());
            blobs.extend(image.layers.iter().map(|l| l.digest.clone()));
            chains.extend(image.chain_ids.iter().cloned());
        }
        let mut removed_blobs = Vec::new();
        for info in self.content.list()? {
            if !blobs.contains(info.digest.as_str()) {
                self.content.delete(&info.digest)?;
                removed_blobs.push(info.digest.to_string());
            }
        }
        // Leaves first: a snapshot with children cannot go until they have.
        let mut removed_snaps = Vec::new();
        loop {
            let all = self.snapshots.list()?;
            let parents: HashSet<String> =
                all.iter().filter_map(|(_, r)| r.parent.clone()).collect();
            let doomed: Vec<String> = all
                .iter()
                .filter(|(k, r)| {
                    r.labels.contains_key(LAYER_LABEL)
                        && !chains.contains(k)
                        && !parents.contains(k)
                })
                .map(|(k, _)| k.clone())
                .collect();
            if doomed.is_empty() {
                break;
            }
            for key in doomed {
                self.snapshots.remove(&key)?;
                removed_snaps.push(key);
            }
        }
        Ok((removed_blobs, removed_snaps))
    }

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
        check_layer_count(reference, &manifest)?;
        let config_desc = manifest.config.clone().ok_or_else(|| Error::Manifest {
            reference: reference.to_string(),
            digest: manifest_desc.digest.clone(),
            detail: "manifest has no config".into(),
        })?;
        let config_digest = self.parse_digest(reference, &config_desc.digest)?;
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
        let config_desc = manifest.config.clone().ok_or_else(|| Error::Manifest {
            reference: reference.to_string(),
            digest: manifest_desc.digest.clone(),
            detail: "manifest has no config".into(),
        })?;
        check_layer_count(reference, &manifest)?;
        let config_digest = self.parse_digest(reference, &config_desc.digest)?;
        let config_bytes = self.read_small(
            reference,
            "config",
            &config_digest,
            config_desc.size,
            MAX_CONFIG,
        )?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::Manifest {
                reference: reference.to_string(),
                digest: config_desc.digest.clone(),
                detail: format!("invalid image config: {e}"),
            })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::Manifest {
                reference: reference.to_string(),
                digest: manifest_desc.digest.clone(),
                detail: format!(
                    "{} layers but {} diff IDs in the config",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        let chains = chain_ids(&config.rootfs.diff_ids);

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
            let diff_id = config.rootfs.diff_ids[i].clone();
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
struct CollectUnlessDone(Option<Images>);

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
fn check_size(
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
pub(crate) fn check_layer_count(reference: &str, manifest: &Manifest) -> Result<()> {
    if manifest.layers.len() > MAX_LAYERS {
        return Err(Error::TooManyLayers {
            reference: reference.to_string(),
            layers: manifest.layers.len(),
            limit: MAX_LAYERS,
        });
    }
    Ok(())
}

/// Fetches and unpacks one layer. Returns the staging snapshot it was
/// unpacked into, or `None` when its chain is already a snapshot (or
/// unpacking was not asked for).
async fn layer_task(
    ctx: &Arc<PullCtx>,
    digest: &Digest,
    size: u64,
    diff_id: &str,
    chain: &str,
    unpack: bool,
) -> Result<Option<Arc<Staging>>> {
    // Two pulls of one layer from one registry share its download: the
    // second waits, then finds the blob stored (or the layer's snapshot
    // committed), or resumes the ingest if the first was cancelled. A pull
    // from another registry does not wait: one stalled registry must not
    // hold up pulls from a good one.
    let guard = layer_lock(&ctx.registry, digest).lock_owned().await;
    let unpack = unpack && !ctx.snapshots.exists(chain)?;
    let have_blob = ctx.content.exists(digest);
    if have_blob {
        let stored = ctx.content.info(digest)?.size;
        check_size(&ctx.reference, "layer", digest, size as i64, stored)?;
    }
    if have_blob && !unpack {
        let _ = ctx.progress.send(Progress::AlreadyExists {
            digest: digest.to_string(),
        });
        return Ok(None);
    }
    let staging = if unpack {
        Some(Arc::new(Staging::prepare(&ctx.snapshots, chain)?))
    } else {
        None
    };
    fetch_and_unpack(
        ctx,
        digest,
        size,
        diff_id,
        staging.clone(),
        have_blob,
        guard,
    )
    .await?;
    if staging.is_some() {
        let _ = ctx.progress.send(Progress::Unpacked {
            digest: digest.to_string(),
        });
    }
    Ok(staging)
}

/// A parentless snapshot one layer is unpacked into, removed when its last
/// holder lets go unless it was committed: a pull that fails, or is dropped
/// because its client went away, leaves none behind, even while its unpack
/// thread is still finishing.
#[derive(Debug)]
struct Staging {
    key: String,
    snapshots: Snapshotter,
    committed: std::sync::atomic::AtomicBool,
}

impl Staging {
    fn prepare(snapshots: &Snapshotter, chain: &str) -> Result<Staging> {
        // Staging keys are the pull's own: a concurrent pull of the same
        // layer unpacks into its own snapshot, and the first to commit wins.
        static PULLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PULLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let key = format!("staging-{n}-{}", Digest::of(chain.as_bytes()).hex());
        let labels = BTreeMap::from([(STAGING_LABEL.to_string(), chain.to_string())]);
        snapshots.prepare(&key, None, labels)?;
        Ok(Staging {
            key,
            snapshots: snapshots.clone(),
            committed: Default::default(),
        })
    }

    fn committed(&self) {
        self.committed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.snapshots.remove(&self.key);
        }
    }
}

/// A task aborted when this is dropped: a download's forwarding task dies
/// with the pull that started it, and with it the registry connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The lock of one layer blob from one registry, shared by every pull in
/// this process.
fn layer_lock(registry: &str, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Entries no pull holds any more are dropped as new ones come.
    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    locks
        .entry(format!("{registry} {digest}"))
        .or_default()
        .clone()
}

/// The bytes of one layer as the unpacker reads them: the part a resumed
/// ingest already has, then the network's rest.
struct Source {
    prefix: Option<io::Take<File>>,
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    pending: Bytes,
    progress: mpsc::UnboundedSender<Progress>,
    digest: String,
    received: u64,
    total: u64,
    reported: u64,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(prefix) = &mut self.prefix {
            let n = prefix.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.prefix = None;
        }
        while self.pending.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.received += chunk.len() as u64;
                    if self.received - self.reported >= 1 << 20 || self.received == self.total {
                        self.reported = self.received;
                        let _ = self.progress.send(Progress::Downloading {
                            digest: self.digest.clone(),
                            offset: self.received,
                            total: self.total,
                        });
                    }
                    self.pending = chunk;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        let _ = self.pending.split_to(n);
        Ok(n)
    }
}

/// Hashes what passes through: the uncompressed tar, whose digest is the
/// layer's diff ID.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// One layer's bytes through two threads at once: the ingest thread writes
/// and hashes the blob into the content store while the unpack thread
/// decompresses, hashes the tar and applies it. On two cores neither waits
/// for the other; the network chunks are shared, not copied.
async fn fetch_and_unpack(
    ctx: &Arc<PullCtx>,
    digest: &Digest,
    size: u64,
    diff_id: &str,
    staging: Option<Arc<Staging>>,
    have_blob: bool,
    guard: tokio::sync::OwnedMutexGuard<()>,
) -> Result<()> {
    let reference = ctx.reference.clone();
    let layer_err = |detail: String| Error::Layer {
        reference: reference.clone(),
        digest: digest.to_string(),
        detail,
    };
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let mut source = Source {
        prefix: None,
        chunks: rx,
        pending: Bytes::new(),
        progress: ctx.progress.clone(),
        digest: digest.to_string(),
        received: 0,
        total: size,
        reported: 0,
    };
    let mut ingest = None;
    let mut _forwarder = None;
    let failure = Arc::new(std::sync::Mutex::new(None::<registry::Error>));
    if have_blob {
        source.prefix = Some(ctx.content.open_blob(digest)?.take(size));
        drop(tx);
    } else {
        // The ingest is the blob's, whichever registry it comes from, so a
        // pull from anywhere resumes it. A pull from another registry that
        // finds it busy downloads into an ingest of its own.
        let mut writer = match ctx.content.writer(&format!("layer-{digest}"), digest, size) {
            Err(content::Error::Busy(_)) => {
                ctx.content
                    .writer(&content::unique_ref(digest), digest, size)?
            }
            other => other?,
        };
        let remote = ctx.remote.as_ref().ok_or_else(|| {
            layer_err(
                "the blob is not in the content store and there is no registry to fetch it from"
                    .into(),
            )
        })?;
        // An ingest already whole (and right: the store starts a wrong one
        // over) needs no request, only its commit.
        let (stream, resumed) = if writer.offset() == size {
            (futures_util::stream::empty().boxed(), true)
        } else {
            remote.blob(digest, writer.offset()).await?
        };
        if resumed {
            let file = File::open(writer.data_path()).map_err(|e| layer_err(e.to_string()))?;
            source.prefix = Some(file.take(writer.offset()));
            source.received = writer.offset();
        } else {
            writer.truncate()?;
        }
        let (ingest_tx, mut ingest_rx) = mpsc::channel::<Bytes>(16);
        // The layer's lock goes with the writer: a pull that was dropped
        // keeps the ingest claimed until its thread has let go of it, so
        // the next pull resumes the ingest instead of finding it busy.
        ingest = Some(tokio::task::spawn_blocking(move || {
            while let Some(chunk) = ingest_rx.blocking_recv() {
                if let Err(e) = writer.write_all(&chunk) {
                    return (Err(e), guard);
                }
            }
            (Ok(writer), guard)
        }));
        let (ctx, failure, digest) = (ctx.clone(), failure.clone(), digest.to_string());
        _forwarder = Some(AbortOnDrop(tokio::spawn(async move {
            let mut stream = stream;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        // A failed ingest ends the download; the unpack
                        // side then sees the stream end.
                        if ingest_tx.send(bytes.clone()).await.is_err() {
                            break;
                        }
                        let _ = tx.send(Ok(bytes)).await;
                    }
                    Err(e) => {
                        if let Some(remote) = &ctx.remote {
                            let what = format!("layer {digest}");
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(remote.read_error(&what, &e));
                        }
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
            }
        })));
    }

    let upper = staging
        .as_ref()
        .map(|s| ctx.snapshots.upper_dir(&s.key))
        .transpose()?;
    // The unpack thread holds the staging snapshot until it is done with
    // it, also when this pull is dropped meanwhile.
    let unpacking = tokio::task::spawn_blocking(move || {
        let result = unpack_stream(source, upper.as_deref());
        drop(staging);
        result
    });
    let (unpacked, drained) = unpacking
        .await
        .map_err(|e| layer_err(format!("unpack task failed: {e}")))?;

    // The blob's own verdict first: a truncated or corrupt download
    // explains whatever the unpacker made of it; and why the download
    // stopped (a stalled registry) explains a truncated blob.
    let stopped = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(ingest) = ingest {
        let (writer, _guard) = ingest
            .await
            .map_err(|e| layer_err(format!("ingest task failed: {e}")))?;
        let writer = writer.map_err(|e| layer_err(format!("writing the blob: {e}")))?;
        let got = writer.offset();
        if got < size {
            if let Some(e) = stopped {
                return Err(e.into());
            }
            return Err(Error::Truncated {
                reference: reference.clone(),
                digest: digest.to_string(),
                got,
                expected: size,
            });
        }
        writer.commit()?;
        let _ = ctx.progress.send(Progress::Verified {
            digest: digest.to_string(),
        });
    }
    if let Err(e) = drained {
        return Err(layer_err(format!("download failed: {e}")));
    }
    match unpacked {
        Err(source) => Err(Error::Unpack {
            reference,
            digest: digest.to_string(),
            source,
        }),
        Ok(Some(actual)) if actual != diff_id => Err(Error::DiffId {
            reference,
            digest: digest.to_string(),
            expected: diff_id.to_string(),
            actual,
        }),
        Ok(_) => Ok(()),
    }
}

/// Unpacks the layer stream into `upper` (if given) and reads it to its
/// end. Returns the tar's digest (the diff ID) or why unpacking failed, and
/// whether the stream itself could be read to the end.
fn unpack_stream(
    source: Source,
    upper: Option<&std::path::Path>,
) -> (
    std::result::Result<Option<String>, unpack::Error>,
    io::Result<u64>,
) {
    let mut reader = BufReader::with_capacity(1 << 17, source);
    let unpacked = match upper {
        None => Ok(None),
        Some(upper) => match unpack::decompress(&mut reader) {
            Ok(tar) => {
                let mut hashing = Hashing {
                    inner: tar,
                    hasher: Sha256::new(),
                };
                unpack::apply(upper, &mut hashing)
                    .and_then(|_| {
                        io::copy(&mut hashing, &mut io::sink()).map_err(unpack::Error::Read)
                    })
                    .map(|_| Some(Digest::from_hasher(hashing.hasher).to_string()))
            }
            Err(e) => Err(unpack::Error::Read(e)),
        },
    };
    // Every byte is read, whatever the unpacker made of them, so the
    // ingest sees the whole blob and its digest judges it.
    let drained = io::copy(&mut reader, &mut io::sink());
    (unpacked, drained)
}

/// Labels a committed layer snapshot carries: they mark it for garbage
/// collection once no image needs it.
pub fn layer_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(LAYER_LABEL.to_string(), "true".to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(
            chains[1],
            Digest::of(format!("{a} {b}").as_bytes()).to_string()
        );
    }

    #[test]
    fn a_record_of_too_many_layers_is_not_mountable() {
        let desc = Descriptor {
            media_type: String::new(),
            digest: String::new(),
            size: 0,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let mut record = ImageRecord {
            name: "old/tall:1".into(),
            target: desc.clone(),
            manifest: desc.clone(),
            config: desc,
            platform: Platform::host(),
            layers: Vec::new(),
            chain_ids: vec![String::new(); MAX_LAYERS],
            size: 0,
            created: 0,
        };
        assert!(record.check_mountable().is_ok());
        record.chain_ids.push(String::new());
        let err = record.check_mountable().unwrap_err().to_string();
        assert!(err.contains("too many layers: the image has 129"), "{err}");
    }

    #[test]
    fn variants_are_part_of_the_platform() {
        let want = Platform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: "v7".into(),
        };
        let v6 = Platform {
            variant: "v6".into(),
            ..want.clone()
        };
        assert!(!want.matches(&v6));
        assert!(want.matches(&want.clone()));
        let arm64 = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: String::new(),
        };
        let arm64_v8 = Platform {
            variant: "v8".into(),
            ..arm64.clone()
        };
        assert!(arm64_v8.matches(&arm64));
    }
}
