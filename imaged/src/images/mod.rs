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

mod layers;
mod pull;

pub use layers::layer_labels;

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
        expected: u64,
        actual: u64,
    },
}

type Result<T> = std::result::Result<T, Error>;

pub use berth_oci::image::{
    host_platform, platform, platform_matches, platform_name, Descriptor, Document, ImageManifest,
    MediaType, Platform,
};

/// The entry of an index that serves `platform`, or the error that lists
/// what the index has.
pub(crate) fn choose<'a>(
    reference: &str,
    entries: &'a [Descriptor],
    platform: &Platform,
) -> Result<&'a Descriptor> {
    entries
        .iter()
        .find(|e| {
            e.platform()
                .as_ref()
                .is_some_and(|p| platform_matches(platform, p))
        })
        .ok_or_else(|| Error::NoPlatform {
            reference: reference.to_string(),
            platform: platform_name(platform),
            available: entries
                .iter()
                .filter_map(|e| e.platform().as_ref().map(platform_name))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A descriptor of no platform and no annotations.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(MediaType::from(media_type), size, digest.oci())
}

/// What the metadata store keeps for one image name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub target: Descriptor,
    pub manifest: Descriptor,
    pub config: Descriptor,
    #[serde(deserialize_with = "berth_oci::image::deserialize_platform")]
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
    pub manifest: ImageManifest,
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
    /// so are ingests that cannot be resumed. Snapshot directories without
    /// records go later ([`Images::remove_unrecorded_snapshots`]).
    pub fn recover(&self) -> Result<()> {
        for (key, record) in self.snapshots.list()? {
            if record.labels.contains_key(STAGING_LABEL) {
                self.snapshots.remove(&key)?;
            }
        }
        self.content.cleanup()?;
        Ok(())
    }

    /// Removes the snapshot directories no record names (a crash between a
    /// directory and its record). At the start-up, once the tasks' recovery
    /// has ended the tasks of containers whose records were lost: such a
    /// task may still have run on one of them.
    pub fn remove_unrecorded_snapshots(&self) -> Result<()> {
        self.snapshots.cleanup()?;
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
            blobs.insert(image.target.digest().to_string());
            blobs.insert(image.manifest.digest().to_string());
            blobs.insert(image.config.digest().to_string());
            blobs.extend(image.layers.iter().map(|l| l.digest().to_string()));
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
        let desc = descriptor("", &Digest::of(b""), 0);
        let mut record = ImageRecord {
            name: "old/tall:1".into(),
            target: desc.clone(),
            manifest: desc.clone(),
            config: desc,
            platform: host_platform(),
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

    /// An image record as the daemon has written it into redb so far (the
    /// bytes of serde's derive over the record's own descriptor and
    /// platform types). Whatever types the record moves to, a store written
    /// before must still read.
    const STORED_RECORD: &str = concat!(
        r#"{"name":"docker.io/library/busybox:1","#,
        r#""target":{"mediaType":"application/vnd.oci.image.index.v1+json","#,
        r#""digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":2000},"#,
        r#""manifest":{"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
        r#""digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":600,"#,
        r#""platform":{"os":"linux","architecture":"arm","variant":"v7"},"#,
        r#""annotations":{"org.opencontainers.image.ref.name":"1"}},"#,
        r#""config":{"mediaType":"application/vnd.oci.image.config.v1+json","#,
        r#""digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":1500},"#,
        r#""platform":{"os":"linux","architecture":"amd64"},"#,
        r#""layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","#,
        r#""digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444","size":2100000}],"#,
        r#""chain_ids":["sha256:5555555555555555555555555555555555555555555555555555555555555555"],"#,
        r#""size":2104100,"created":1764892800}"#
    );

    #[test]
    fn a_store_written_by_an_earlier_daemon_still_reads() {
        let dir = std::env::temp_dir().join(format!("berth-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meta.redb");
        // Written with redb alone, as bytes, not through today's types.
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let def = redb::TableDefinition::<&str, &[u8]>::new("images");
                let mut table = txn.open_table(def).unwrap();
                table
                    .insert("docker.io/library/busybox:1", STORED_RECORD.as_bytes())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let db = crate::metadata::Db::open(&path).unwrap();
        let records: Vec<(String, ImageRecord)> = db.list(Table::Images).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let [(key, record)] = &records[..] else {
            panic!("{records:?}");
        };
        assert_eq!(key, "docker.io/library/busybox:1");
        assert_eq!(record.name, *key);
        assert_eq!(record.target.size(), 2000);
        assert!(record.target.digest().as_ref().ends_with(&"1".repeat(64)));
        assert_eq!(record.manifest.media_type(), &MediaType::ImageManifest);
        let platform = record.manifest.platform().clone().unwrap();
        assert_eq!(platform_name(&platform), "linux/arm/v7");
        let annotations = record.manifest.annotations().clone().unwrap();
        assert_eq!(annotations["org.opencontainers.image.ref.name"], "1");
        assert_eq!(platform_name(&record.platform), "linux/amd64");
        assert_eq!(record.layers[0].size(), 2_100_000);
        assert_eq!(
            record.chain_id(),
            Some(&*format!("sha256:{}", "5".repeat(64)))
        );
        assert_eq!((record.size, record.created), (2_104_100, 1_764_892_800));
    }

    /// What the daemon writes today is what it wrote before: a record
    /// read from the earlier bytes serializes back to the same document,
    /// so an earlier daemon reads a store this one wrote, too.
    #[test]
    fn a_record_serializes_as_before() {
        let record: ImageRecord = serde_json::from_str(STORED_RECORD).unwrap();
        let written = serde_json::to_value(&record).unwrap();
        let before: serde_json::Value = serde_json::from_str(STORED_RECORD).unwrap();
        assert_eq!(written, before);
    }

    /// A record of an `armbe` image (a GOARCH `oci-spec` reads as
    /// `arm64be`) keeps its architecture.
    #[test]
    fn a_stored_armbe_platform_stays_armbe() {
        let text = STORED_RECORD.replace(
            r#""platform":{"os":"linux","architecture":"amd64"}"#,
            r#""platform":{"os":"linux","architecture":"armbe"}"#,
        );
        let record: ImageRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(platform_name(&record.platform), "linux/armbe");
    }
}
